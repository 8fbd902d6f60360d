/* Shards: what a client uploads to register files and xorbs, and what the CAS answers a global
 * dedup query with. All integers little-endian; every record is 48 bytes.
 *
 *   header   tag[32] "HFRepoMetaData\0" + 17 magic bytes, version u64 = 2, footer_size u64
 *   files    per file: {file_hash[32], flags u32, n_entries u32, unused u64}
 *              n_entries x {xorb_hash[32], xorb_flags u32, unpacked_bytes u32,
 *                           chunk_start u32, chunk_end u32}
 *              if flags bit 31: n_entries x {range_hash[32], unused[16]}
 *              if flags bit 30: {sha256[32], unused[16]}
 *            then a bookend: 32 x 0xFF, 16 x 0
 *   xorbs    per xorb: {xorb_hash[32], flags u32, n_chunks u32, raw_bytes u32, stored_bytes u32}
 *              n_chunks x {chunk_hash[32], byte_offset u32, unpacked_len u32, flags u32, unused u32}
 *            then a bookend
 *   footer   (footer_size = 200; absent in uploads) offsets, lookup tables, HMAC key, times
 *
 * The sha256 field is stored as xet-core's DataHash::from_be_bytes makes it: each 8-byte
 * group of the digest byte-reversed (so that its Xet string form is the usual hex digest).
 * Parsing is two passes: the first walks and bounds-checks everything and counts, the second
 * fills exactly-sized arrays, so malformed input never allocates more than its own size.
 */
#include <stdlib.h>
#include <string.h>

#include "xet/xet.h"

const uint8_t xet_shard_header_tag[32] = {'H', 'F', 'R', 'e', 'p', 'o', 'M', 'e', 't', 'a', 'D',
                                          'a', 't', 'a', 0,   85,  105, 103, 69,  106, 123, 129,
                                          87,  131, 165, 189, 217, 92,  205, 209, 74,  169};

#define SHARD_VERSION 2
#define FOOTER_VERSION 1

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

static bool is_bookend(const uint8_t *rec)
{
    for (int i = 0; i < 32; i++)
        if (rec[i] != 0xFF)
            return false;
    return true;
}

/* Byte-reverses each 8-byte group: digest order <-> stored order of the sha256 field. */
static void swap_groups(const uint8_t in[32], uint8_t out[32])
{
    for (int g = 0; g < 4; g++)
        for (int k = 0; k < 8; k++)
            out[8 * g + k] = in[8 * g + 7 - k];
}

/* ---- parse -------------------------------------------------------------------------------- */

typedef struct shard_counts {
    size_t files, terms, verifications, xorbs, chunks;
} shard_counts;

/* Walks the shard; fills s when it is non-NULL (second pass), else only counts. */
static int shard_walk(const uint8_t *data, size_t len, shard_counts *n, xet_shard *s, err *e)
{
    memset(n, 0, sizeof *n);
    if (len < XET_SHARD_HEADER_LEN)
        return err_set(e, 400, "BadShard", "shard shorter than its header");
    if (memcmp(data, xet_shard_header_tag, 32) != 0)
        return err_set(e, 400, "BadShard", "not a shard (wrong header tag)");
    uint64_t version = rd64(data + 32), footer_size = rd64(data + 40);
    if (version != SHARD_VERSION)
        return err_set(e, 400, "BadShard", "shard version %llu, expected 2",
                       (unsigned long long)version);
    if (footer_size != 0 && footer_size != XET_SHARD_FOOTER_LEN)
        return err_set(e, 400, "BadShard", "footer size %llu", (unsigned long long)footer_size);

    size_t pos = XET_SHARD_HEADER_LEN;
    /* Without a footer the sections run to the end; with one, they end before it (lookup
     * tables, written by xet-core between the sections and the footer, are skipped). */
    size_t end = len;
    if (footer_size) {
        if (len < pos + XET_SHARD_FOOTER_LEN)
            return err_set(e, 400, "BadShard", "shard shorter than its footer");
        end = len - XET_SHARD_FOOTER_LEN;
    }
#define NEED(k)                                                                                    \
    do {                                                                                           \
        if ((end - pos) / XET_SHARD_ENTRY_LEN < (size_t)(k))                                       \
            return err_set(e, 400, "BadShard", "shard truncated at offset %zu", pos);              \
    } while (0)

    /* File-info section. */
    for (;;) {
        NEED(1);
        const uint8_t *rec = data + pos;
        pos += XET_SHARD_ENTRY_LEN;
        if (is_bookend(rec))
            break;
        uint32_t flags = rd32(rec + 32), n_entries = rd32(rec + 36);
        bool verif = flags & XET_SHARD_FILE_WITH_VERIFICATION;
        bool ext = flags & XET_SHARD_FILE_WITH_METADATA_EXT;
        uint64_t following = (uint64_t)n_entries * (verif ? 2 : 1) + (ext ? 1 : 0);
        NEED(following);
        if (s) {
            xet_shard_file *f = &s->files[n->files];
            memcpy(f->file_hash.bytes, rec, 32);
            f->flags = flags;
            f->n_terms = n_entries;
            f->terms = s->term_store + n->terms;
            f->verification = verif ? s->verification_store + n->verifications : NULL;
        }
        for (uint32_t i = 0; i < n_entries; i++) {
            const uint8_t *t = data + pos + (size_t)i * XET_SHARD_ENTRY_LEN;
            uint32_t start = rd32(t + 40), stop = rd32(t + 44);
            if (start >= stop)
                return err_set(e, 400, "BadShard", "file %zu term %u: empty chunk range %u..%u",
                               n->files, i, start, stop);
            if (s) {
                xet_shard_term *term = &s->term_store[n->terms + i];
                memcpy(term->xorb_hash.bytes, t, 32);
                term->xorb_flags = rd32(t + 32);
                term->unpacked_bytes = rd32(t + 36);
                term->chunk_start = start;
                term->chunk_end = stop;
            }
        }
        pos += (size_t)n_entries * XET_SHARD_ENTRY_LEN;
        if (verif) {
            if (s)
                for (uint32_t i = 0; i < n_entries; i++)
                    memcpy(s->verification_store[n->verifications + i].bytes,
                           data + pos + (size_t)i * XET_SHARD_ENTRY_LEN, 32);
            pos += (size_t)n_entries * XET_SHARD_ENTRY_LEN;
            n->verifications += n_entries;
        }
        if (ext) {
            if (s) {
                s->files[n->files].has_sha256 = true;
                swap_groups(data + pos, s->files[n->files].sha256);
            }
            pos += XET_SHARD_ENTRY_LEN;
        }
        n->terms += n_entries;
        n->files++;
    }

    /* CAS-info section. */
    for (;;) {
        NEED(1);
        const uint8_t *rec = data + pos;
        pos += XET_SHARD_ENTRY_LEN;
        if (is_bookend(rec))
            break;
        uint32_t n_chunks = rd32(rec + 36);
        NEED(n_chunks);
        if (s) {
            xet_shard_xorb *x = &s->xorbs[n->xorbs];
            memcpy(x->xorb_hash.bytes, rec, 32);
            x->flags = rd32(rec + 32);
            x->n_chunks = n_chunks;
            x->raw_bytes = rd32(rec + 40);
            x->serialized_bytes = rd32(rec + 44);
            x->chunks = s->chunk_store + n->chunks;
            for (uint32_t i = 0; i < n_chunks; i++) {
                const uint8_t *c = data + pos + (size_t)i * XET_SHARD_ENTRY_LEN;
                xet_shard_chunk *ch = &x->chunks[i];
                memcpy(ch->hash.bytes, c, 32);
                ch->byte_offset = rd32(c + 32);
                ch->unpacked_len = rd32(c + 36);
                ch->flags = rd32(c + 40);
            }
        }
        pos += (size_t)n_chunks * XET_SHARD_ENTRY_LEN;
        n->chunks += n_chunks;
        n->xorbs++;
    }
#undef NEED

    if (!footer_size) {
        if (pos != len)
            return err_set(e, 400, "BadShard", "%zu bytes after the CAS-info section", len - pos);
        return 0;
    }
    const uint8_t *f = data + end;
    if (rd64(f) != FOOTER_VERSION)
        return err_set(e, 400, "BadShard", "footer version %llu", (unsigned long long)rd64(f));
    /* Offsets recorded in the footer must agree with what we walked. */
    uint64_t footer_offset = rd64(f + 192);
    if (footer_offset != end || rd64(f + 8) != XET_SHARD_HEADER_LEN)
        return err_set(e, 400, "BadShard", "footer offsets disagree with the shard");
    if (s) {
        s->has_footer = true;
        memcpy(s->footer.chunk_hash_hmac_key, f + 72, 32);
        s->footer.creation_timestamp = rd64(f + 104);
        s->footer.key_expiry = rd64(f + 112);
        s->footer.stored_bytes_on_disk = rd64(f + 168);
        s->footer.materialized_bytes = rd64(f + 176);
        s->footer.stored_bytes = rd64(f + 184);
    }
    return 0;
}

int xet_shard_parse(const uint8_t *data, size_t len, xet_shard *out, err *e)
{
    memset(out, 0, sizeof *out);
    shard_counts n;
    if (shard_walk(data, len, &n, NULL, e) < 0)
        return -1;
    /* Counts are bounded by len / 48, so these allocations are bounded by the input. */
    out->files = calloc(n.files + 1, sizeof *out->files);
    out->term_store = calloc(n.terms + 1, sizeof *out->term_store);
    out->verification_store = calloc(n.verifications + 1, sizeof *out->verification_store);
    out->xorbs = calloc(n.xorbs + 1, sizeof *out->xorbs);
    out->chunk_store = calloc(n.chunks + 1, sizeof *out->chunk_store);
    if (!out->files || !out->term_store || !out->verification_store || !out->xorbs ||
        !out->chunk_store) {
        xet_shard_free(out);
        return err_set(e, 500, "", "out of memory");
    }
    shard_counts n2;
    if (shard_walk(data, len, &n2, out, e) < 0) {
        xet_shard_free(out);
        return -1;
    }
    out->n_files = n2.files;
    out->n_xorbs = n2.xorbs;
    return 0;
}

void xet_shard_free(xet_shard *s)
{
    free(s->files);
    free(s->term_store);
    free(s->verification_store);
    free(s->xorbs);
    free(s->chunk_store);
    memset(s, 0, sizeof *s);
}

/* ---- serialize ---------------------------------------------------------------------------- */

static void put_record(buf *out, const uint8_t hash[32], uint32_t a, uint32_t b, uint32_t c,
                       uint32_t d)
{
    uint8_t rec[XET_SHARD_ENTRY_LEN];
    memcpy(rec, hash, 32);
    wr32(rec + 32, a);
    wr32(rec + 36, b);
    wr32(rec + 40, c);
    wr32(rec + 44, d);
    buf_append(out, rec, sizeof rec);
}

static void put_bookend(buf *out)
{
    uint8_t ff[32];
    memset(ff, 0xFF, sizeof ff);
    put_record(out, ff, 0, 0, 0, 0);
}

int xet_shard_serialize(const xet_shard *s, const xet_shard_footer *footer, buf *out, err *e)
{
    size_t start = out->len;
    uint8_t header[XET_SHARD_HEADER_LEN];
    memcpy(header, xet_shard_header_tag, 32);
    wr64(header + 32, SHARD_VERSION);
    wr64(header + 40, footer ? XET_SHARD_FOOTER_LEN : 0);
    buf_append(out, header, sizeof header);

    for (size_t i = 0; i < s->n_files; i++) {
        const xet_shard_file *f = &s->files[i];
        if (f->n_terms > UINT32_MAX)
            return err_set(e, 400, "BadShard", "too many terms");
        /* The flags say what follows; derive them from what the struct holds. */
        uint32_t flags = f->flags & ~(XET_SHARD_FILE_WITH_VERIFICATION | XET_SHARD_FILE_WITH_METADATA_EXT);
        if (f->verification)
            flags |= XET_SHARD_FILE_WITH_VERIFICATION;
        if (f->has_sha256)
            flags |= XET_SHARD_FILE_WITH_METADATA_EXT;
        put_record(out, f->file_hash.bytes, flags, (uint32_t)f->n_terms, 0, 0);
        for (size_t t = 0; t < f->n_terms; t++) {
            const xet_shard_term *term = &f->terms[t];
            put_record(out, term->xorb_hash.bytes, term->xorb_flags, term->unpacked_bytes,
                       term->chunk_start, term->chunk_end);
        }
        if (f->verification)
            for (size_t t = 0; t < f->n_terms; t++)
                put_record(out, f->verification[t].bytes, 0, 0, 0, 0);
        if (f->has_sha256) {
            uint8_t stored[32];
            swap_groups(f->sha256, stored);
            put_record(out, stored, 0, 0, 0, 0);
        }
    }
    put_bookend(out);

    size_t xorb_offset = out->len - start;
    uint64_t stored_on_disk = 0, stored = 0, materialized = 0;
    for (size_t i = 0; i < s->n_files; i++)
        for (size_t t = 0; t < s->files[i].n_terms; t++)
            materialized += s->files[i].terms[t].unpacked_bytes;
    for (size_t i = 0; i < s->n_xorbs; i++) {
        const xet_shard_xorb *x = &s->xorbs[i];
        if (x->n_chunks > UINT32_MAX)
            return err_set(e, 400, "BadShard", "too many chunks");
        put_record(out, x->xorb_hash.bytes, x->flags, (uint32_t)x->n_chunks, x->raw_bytes,
                   x->serialized_bytes);
        for (size_t c = 0; c < x->n_chunks; c++) {
            const xet_shard_chunk *ch = &x->chunks[c];
            put_record(out, ch->hash.bytes, ch->byte_offset, ch->unpacked_len, ch->flags, 0);
        }
        stored_on_disk += x->serialized_bytes;
        stored += x->raw_bytes;
    }
    put_bookend(out);

    if (footer) {
        uint64_t footer_start = out->len - start;
        uint8_t f[XET_SHARD_FOOTER_LEN];
        memset(f, 0, sizeof f);
        wr64(f + 0, FOOTER_VERSION);
        wr64(f + 8, XET_SHARD_HEADER_LEN); /* file info offset */
        wr64(f + 16, xorb_offset);
        /* Lookup tables: none (offsets at the footer, zero entries), as in dedup replies. */
        wr64(f + 24, footer_start);
        wr64(f + 40, footer_start);
        wr64(f + 56, footer_start);
        memcpy(f + 72, footer->chunk_hash_hmac_key, 32);
        wr64(f + 104, footer->creation_timestamp);
        wr64(f + 112, footer->key_expiry);
        /* f + 120: six reserved u64 */
        wr64(f + 168, footer->stored_bytes_on_disk ? footer->stored_bytes_on_disk : stored_on_disk);
        wr64(f + 176, footer->materialized_bytes ? footer->materialized_bytes : materialized);
        wr64(f + 184, footer->stored_bytes ? footer->stored_bytes : stored);
        wr64(f + 192, footer_start);
        buf_append(out, f, sizeof f);
    }
    return 0;
}

/* ---- verification ------------------------------------------------------------------------- */

const xet_shard_xorb *xet_shard_find_xorb(const xet_shard *s, const xet_hash *xorb_hash)
{
    for (size_t i = 0; i < s->n_xorbs; i++)
        if (xet_hash_equal(&s->xorbs[i].xorb_hash, xorb_hash))
            return &s->xorbs[i];
    return NULL;
}

int xet_shard_verify_file(const xet_shard_file *f, xet_xorb_chunks_fn chunks_of, void *ctx,
                          bool require_verification, uint64_t *size, err *e)
{
    char name[XET_HASH_STRING_LEN + 1];
    xet_hash_to_string(&f->file_hash, name);
    if (require_verification && f->n_terms > 0 && !f->verification)
        return err_set(e, 400, "BadShard", "file %s has no verification entries", name);

    /* All chunks of the file, in order, for the file hash. */
    size_t total = 0, cap = 0;
    xet_chunk *all = NULL;
    xet_hash *range = NULL;
    size_t range_cap = 0;
    uint64_t file_len = 0;
    int rc = -1;
    for (size_t t = 0; t < f->n_terms; t++) {
        const xet_shard_term *term = &f->terms[t];
        const xet_chunk *chunks;
        size_t n;
        char xorb[XET_HASH_STRING_LEN + 1];
        xet_hash_to_string(&term->xorb_hash, xorb);
        if (chunks_of(ctx, &term->xorb_hash, &chunks, &n) < 0) {
            err_set(e, 400, "BadShard", "file %s term %zu: unknown xorb %s", name, t, xorb);
            goto done;
        }
        if (term->chunk_start >= term->chunk_end || term->chunk_end > n) {
            err_set(e, 400, "BadShard", "file %s term %zu: chunks %u..%u outside xorb %s of %zu",
                    name, t, term->chunk_start, term->chunk_end, xorb, n);
            goto done;
        }
        size_t k = term->chunk_end - term->chunk_start;
        uint64_t bytes = 0;
        if (total + k > cap) {
            size_t ncap = cap ? 2 * cap : 64;
            while (ncap < total + k)
                ncap *= 2;
            xet_chunk *p = realloc(all, ncap * sizeof *p);
            if (!p) {
                err_set(e, 500, "", "out of memory");
                goto done;
            }
            all = p;
            cap = ncap;
        }
        if (k > range_cap) {
            xet_hash *p = realloc(range, k * sizeof *p);
            if (!p) {
                err_set(e, 500, "", "out of memory");
                goto done;
            }
            range = p;
            range_cap = k;
        }
        for (size_t i = 0; i < k; i++) {
            all[total + i] = chunks[term->chunk_start + i];
            range[i] = chunks[term->chunk_start + i].hash;
            bytes += chunks[term->chunk_start + i].length;
        }
        total += k;
        if (bytes != term->unpacked_bytes) {
            err_set(e, 400, "BadShard", "file %s term %zu: %u bytes claimed, chunks hold %llu",
                    name, t, term->unpacked_bytes, (unsigned long long)bytes);
            goto done;
        }
        if (f->verification) {
            xet_hash v;
            xet_verification_hash(range, k, &v);
            if (!xet_hash_equal(&v, &f->verification[t])) {
                err_set(e, 400, "BadShard", "file %s term %zu: verification hash mismatch", name, t);
                goto done;
            }
        }
        file_len += bytes;
    }
    xet_hash computed;
    if (xet_file_hash(all, total, &computed) < 0) {
        err_set(e, 500, "", "out of memory");
        goto done;
    }
    if (!xet_hash_equal(&computed, &f->file_hash)) {
        err_set(e, 400, "BadShard", "file %s: its terms' chunks hash to a different file hash", name);
        goto done;
    }
    if (size)
        *size = file_len;
    rc = 0;
done:
    free(all);
    free(range);
    return rc;
}
