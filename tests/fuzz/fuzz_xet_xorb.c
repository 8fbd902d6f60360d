/* Fuzz target: the xorb parser (what POST /cas/v1/xorbs feeds every upload through) must
 * accept or refuse anything without crashing, and what it accepts must be self-consistent:
 * chunks laid end to end inside the input, lengths within xet-core's limits, and a hash that
 * a second parse of the same bytes reproduces. Also decodes each accepted chunk on its own. */
// fuzz-modules: base xet
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xet/xet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    xet_xorb x;
    err e = ERR_INIT;
    if (xet_xorb_parse(data, size, &x, &e) != 0) {
        if (e.status != 400)
            abort();
        return 0;
    }
    uint64_t unpacked = 0;
    uint32_t at = 0;
    for (size_t i = 0; i < x.n_chunks; i++) {
        const xet_xorb_chunk *c = &x.chunks[i];
        if (c->offset != at || c->serialized_len < XET_CHUNK_HEADER_LEN ||
            (uint64_t)c->offset + c->serialized_len > size || c->unpacked_offset != unpacked ||
            c->uncompressed_len == 0 || c->uncompressed_len > XET_CHUNK_MAX)
            abort();
        xet_chunk_header h;
        err he = ERR_INIT;
        if (xet_chunk_header_decode(data + c->offset, &h, &he) != 0)
            abort();
        uint8_t *out = malloc(h.uncompressed_len);
        if (!out || xet_chunk_decode(&h, data + c->offset + XET_CHUNK_HEADER_LEN, out, &he) != 0)
            abort();
        xet_hash hh;
        xet_chunk_hash(out, h.uncompressed_len, &hh);
        if (!xet_hash_equal(&hh, &c->hash))
            abort();
        free(out);
        at += c->serialized_len;
        unpacked += c->uncompressed_len;
    }
    if (at != x.chunks_len || unpacked != x.unpacked_len || x.n_chunks == 0)
        abort();
    xet_xorb again;
    if (xet_xorb_parse(data, size, &again, &e) != 0 || !xet_hash_equal(&again.hash, &x.hash))
        abort();
    xet_xorb_free(&again);
    xet_xorb_free(&x);
    return 0;
}
