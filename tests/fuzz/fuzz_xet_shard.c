/* Fuzz target: the shard parser (what POST /cas/v1|v2/shards feeds every upload through) must
 * accept or refuse anything without crashing; what it accepts must serialize and parse back to
 * the same files and xorbs, and checking its files against the shard's own CAS-info section
 * must never crash either. */
// fuzz-modules: base xet
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xet/xet.h"

typedef struct own_xorbs {
    const xet_shard *shard;
    xet_chunk *chunks;
} own_xorbs;

/* The chunks of a xorb as the shard's own CAS-info section lists them. */
static int chunks_of(void *ctx, const xet_hash *xorb, const xet_chunk **chunks, size_t *n)
{
    own_xorbs *o = ctx;
    const xet_shard_xorb *x = xet_shard_find_xorb(o->shard, xorb);
    if (!x)
        return -1;
    free(o->chunks);
    o->chunks = calloc(x->n_chunks ? x->n_chunks : 1, sizeof *o->chunks);
    if (!o->chunks)
        abort();
    for (size_t i = 0; i < x->n_chunks; i++) {
        o->chunks[i].hash = x->chunks[i].hash;
        o->chunks[i].length = x->chunks[i].unpacked_len;
    }
    *chunks = o->chunks;
    *n = x->n_chunks;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    xet_shard s;
    err e = ERR_INIT;
    if (xet_shard_parse(data, size, &s, &e) != 0) {
        if (e.status != 400)
            abort();
        return 0;
    }
    own_xorbs own = {&s, NULL};
    for (size_t i = 0; i < s.n_files; i++) {
        for (size_t t = 0; t < s.files[i].n_terms; t++)
            if (s.files[i].terms[t].chunk_start >= s.files[i].terms[t].chunk_end)
                abort();
        uint64_t fsize;
        err ve = ERR_INIT;
        if (xet_shard_verify_file(&s.files[i], chunks_of, &own, true, &fsize, &ve) != 0 &&
            ve.status != 400 && ve.status != 500)
            abort();
    }
    free(own.chunks);
    buf out = BUF_INIT;
    if (xet_shard_serialize(&s, s.has_footer ? &s.footer : NULL, &out, &e) != 0)
        abort();
    xet_shard back;
    if (xet_shard_parse((const uint8_t *)out.data, out.len, &back, &e) != 0 ||
        back.n_files != s.n_files || back.n_xorbs != s.n_xorbs)
        abort();
    for (size_t i = 0; i < s.n_files; i++)
        if (!xet_hash_equal(&back.files[i].file_hash, &s.files[i].file_hash) ||
            back.files[i].n_terms != s.files[i].n_terms)
            abort();
    xet_shard_free(&back);
    buf_free(&out);
    xet_shard_free(&s);
    return 0;
}
