/* cas — the store seen through Xet: file hashes, xorbs uploaded by clients, files registered
 * from shard terms, reconstructions and pack byte ranges for downloads.
 *
 * Our packs are xorbs (their hash is the merkle root of their chunks), so reconstructions
 * name packs and clients fetch pack byte ranges straight from disk. A client's xorb is kept
 * whole as a pack when none of its chunks is held yet; otherwise only its new chunks are
 * stored, and the xorb is remembered by its chunk list so that shards can still name it.
 */
#include "store/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int one_row(store *s, sqlite3_stmt *st, err *e)
{
    int rc = sqlite3_step(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : store_sql_fail(s, e, "lookup");
}

int store_file_xet_hash(store *s, const char *oid, xet_hash *out, err *e)
{
    pthread_mutex_lock(&s->lock);
    int rc = -1;
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT xet FROM files WHERE oid = ?", e);
    if (st) {
        sqlite3_bind_text(st, 1, oid, -1, SQLITE_TRANSIENT);
        rc = one_row(s, st, e);
        if (rc == 0 && sqlite3_column_bytes(st, 0) == XET_HASH_LEN)
            memcpy(out->bytes, sqlite3_column_blob(st, 0), XET_HASH_LEN);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int store_file_by_xet_hash(store *s, const xet_hash *file, char oid_out[65], int64_t *size,
                           err *e)
{
    pthread_mutex_lock(&s->lock);
    int rc = -1;
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT oid, size FROM files WHERE xet = ? LIMIT 1", e);
    if (st) {
        sqlite3_bind_blob(st, 1, file->bytes, XET_HASH_LEN, SQLITE_TRANSIENT);
        rc = one_row(s, st, e);
        if (rc == 0) {
            snprintf(oid_out, 65, "%s", (const char *)sqlite3_column_text(st, 0));
            if (size)
                *size = sqlite3_column_int64(st, 1);
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* A pack by xorb hash: id, name, bytes. Caller holds the lock. 0 / 1 / -1. */
static int pack_by_hash(store *s, const xet_hash *h, int64_t *id, char name[33], uint64_t *bytes,
                        err *e)
{
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT id, name, bytes FROM packs WHERE hash = ?"
                                            " LIMIT 1", e);
    if (!st)
        return -1;
    sqlite3_bind_blob(st, 1, h->bytes, XET_HASH_LEN, SQLITE_TRANSIENT);
    int rc = one_row(s, st, e);
    if (rc == 0) {
        if (id)
            *id = sqlite3_column_int64(st, 0);
        if (name)
            snprintf(name, 33, "%s", (const char *)sqlite3_column_text(st, 1));
        if (bytes)
            *bytes = (uint64_t)sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    return rc;
}

int store_xorb_stat(store *s, const xet_hash *xorb, uint64_t *serialized_len, err *e)
{
    pthread_mutex_lock(&s->lock);
    uint64_t bytes = 0;
    int rc = pack_by_hash(s, xorb, NULL, NULL, &bytes, e);
    if (rc == 1) {
        sqlite3_stmt *st = store_sql_prepare(s, "SELECT 1 FROM xorbs WHERE hash = ?", e);
        rc = -1;
        if (st) {
            sqlite3_bind_blob(st, 1, xorb->bytes, XET_HASH_LEN, SQLITE_TRANSIENT);
            rc = one_row(s, st, e);
            sqlite3_finalize(st);
        }
        bytes = 0;
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == 0 && serialized_len)
        *serialized_len = bytes;
    return rc;
}

int store_xorb_chunks(store *s, const xet_hash *xorb, xet_chunk **chunks, size_t *n, err *e)
{
    *chunks = NULL;
    *n = 0;
    pthread_mutex_lock(&s->lock);
    int64_t pack = 0;
    int rc = pack_by_hash(s, xorb, &pack, NULL, NULL, e);
    sqlite3_stmt *st = NULL;
    if (rc == 0)
        st = store_sql_prepare(s, "SELECT hash, raw FROM pack_chunks WHERE pack = ? ORDER BY idx", e);
    else if (rc == 1)
        st = store_sql_prepare(s, "SELECT chunk, raw FROM xorb_chunks WHERE xorb = ? ORDER BY idx", e);
    if (st) {
        if (rc == 0)
            sqlite3_bind_int64(st, 1, pack);
        else
            sqlite3_bind_blob(st, 1, xorb->bytes, XET_HASH_LEN, SQLITE_TRANSIENT);
        size_t cap = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 256;
                *chunks = realloc(*chunks, cap * sizeof **chunks);
                if (!*chunks)
                    abort();
            }
            xet_chunk *c = &(*chunks)[(*n)++];
            memcpy(c->hash.bytes, sqlite3_column_blob(st, 0), XET_HASH_LEN);
            c->length = (uint64_t)sqlite3_column_int64(st, 1);
        }
        sqlite3_finalize(st);
        rc = *n ? 0 : 1;
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == 1)
        err_set(e, 404, "", "unknown xorb");
    return rc;
}

int store_xorb_put(store *s, const xet_hash *xorb, const uint8_t *data, size_t len,
                   bool *inserted, err *e)
{
    *inserted = false;
    uint64_t have;
    int known = store_xorb_stat(s, xorb, &have, e);
    if (known < 0)
        return -1;
    if (known == 0)
        return 0;
    xet_xorb x;
    if (xet_xorb_parse(data, len, &x, e) != 0)
        return -1;
    if (!xet_hash_equal(&x.hash, xorb)) {
        char want[65], got[65];
        xet_hash_to_string(xorb, want);
        xet_hash_to_string(&x.hash, got);
        xet_xorb_free(&x);
        return err_set(e, 400, "BadXorb", "xorb content hashes to %s, not %s", got, want);
    }
    /* Which chunks are new? */
    bool *fresh = calloc(x.n_chunks ? x.n_chunks : 1, sizeof *fresh);
    if (!fresh)
        abort();
    size_t nfresh = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *q = store_sql_prepare(s, "SELECT 1 FROM chunks WHERE hash = ?", e);
    for (size_t i = 0; q && i < x.n_chunks; i++) {
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++) /* repeated within this xorb */
            dup = fresh[k] && xet_hash_equal(&x.chunks[k].hash, &x.chunks[i].hash);
        sqlite3_reset(q);
        sqlite3_bind_blob(q, 1, x.chunks[i].hash.bytes, XET_HASH_LEN, SQLITE_STATIC);
        fresh[i] = !dup && sqlite3_step(q) == SQLITE_DONE;
        nfresh += fresh[i];
    }
    sqlite3_finalize(q);
    pthread_mutex_unlock(&s->lock);
    if (!q) {
        free(fresh);
        xet_xorb_free(&x);
        return -1;
    }

    /* Write the new chunk records, verbatim, as one pack. */
    char name[33], tmp[4200], final[4200];
    uint8_t rnd[16];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, name);
    snprintf(tmp, sizeof tmp, "%s/tmp/%s.xorb", s->dir, name);
    store_pack_path(s, name, final, sizeof final);
    pack_chunk *pc = calloc(nfresh ? nfresh : 1, sizeof *pc);
    if (!pc)
        abort();
    size_t np = 0;
    uint64_t bytes = 0, raw = 0;
    int fd = nfresh ? open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
    int rc = 0;
    if (nfresh && fd < 0)
        rc = err_set(e, 500, "", "cannot create a pack: %s", strerror(errno));
    for (size_t i = 0; rc == 0 && i < x.n_chunks; i++) {
        if (!fresh[i])
            continue;
        const xet_xorb_chunk *c = &x.chunks[i];
        if (path_write_all(fd, data + c->offset, c->serialized_len) != 0) {
            rc = err_set(e, errno == ENOSPC ? 507 : 500, "", "cannot write a pack: %s",
                         strerror(errno));
            break;
        }
        pc[np++] = (pack_chunk){c->hash, bytes, c->serialized_len, c->uncompressed_len,
                                store_record_check(data + c->offset, c->serialized_len)};
        bytes += c->serialized_len;
        raw += c->uncompressed_len;
    }
    if (fd >= 0) {
        if (rc == 0 && (fsync(fd) != 0 || rename(tmp, final) != 0))
            rc = err_set(e, 500, "", "cannot place a pack: %s", strerror(errno));
        close(fd);
        if (rc == 0)
            path_fsync_parent(final);
    }
    xet_hash pack_hash = *xorb;
    if (rc == 0 && np != x.n_chunks) {
        xet_chunk *cs = malloc((np ? np : 1) * sizeof *cs);
        if (!cs)
            abort();
        for (size_t i = 0; i < np; i++)
            cs[i] = (xet_chunk){pc[i].hash, pc[i].raw};
        xet_xorb_hash(cs, np, &pack_hash);
        free(cs);
    }

    pthread_mutex_lock(&s->lock);
    if (rc == 0 && store_sql_exec(s, "BEGIN IMMEDIATE", e) != 0)
        rc = -1;
    if (rc == 0 && np) {
        int64_t pack;
        rc = store_insert_pack(s, name, pc, np, &pack_hash, true, &pack, e);
    }
    if (rc == 0 && np != x.n_chunks) {
        /* Not kept whole: remember the xorb by its chunk list. */
        sqlite3_stmt *st = store_sql_prepare(s, "INSERT OR IGNORE INTO xorbs (hash, chunks, raw,"
                                                " created_ms) VALUES (?, ?, ?, ?)", e);
        sqlite3_stmt *c = store_sql_prepare(s, "INSERT OR IGNORE INTO xorb_chunks (xorb, idx,"
                                               " chunk, raw) VALUES (?, ?, ?, ?)", e);
        if (st && c) {
            sqlite3_bind_blob(st, 1, xorb->bytes, XET_HASH_LEN, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, (int64_t)x.n_chunks);
            sqlite3_bind_int64(st, 3, (int64_t)x.unpacked_len);
            sqlite3_bind_int64(st, 4, text_now_ms());
            if (sqlite3_step(st) != SQLITE_DONE)
                rc = store_sql_fail(s, e, "xorb");
            for (size_t i = 0; rc == 0 && i < x.n_chunks; i++) {
                sqlite3_reset(c);
                sqlite3_bind_blob(c, 1, xorb->bytes, XET_HASH_LEN, SQLITE_STATIC);
                sqlite3_bind_int64(c, 2, (int64_t)i);
                sqlite3_bind_blob(c, 3, x.chunks[i].hash.bytes, XET_HASH_LEN, SQLITE_STATIC);
                sqlite3_bind_int64(c, 4, x.chunks[i].uncompressed_len);
                if (sqlite3_step(c) != SQLITE_DONE)
                    rc = store_sql_fail(s, e, "xorb chunks");
            }
        } else {
            rc = -1;
        }
        sqlite3_finalize(st);
        sqlite3_finalize(c);
    }
    if (rc == 0 && store_sql_exec(s, "COMMIT", e) != 0)
        rc = -1;
    if (rc != 0) {
        sqlite3_exec(s->sql, "ROLLBACK", NULL, NULL, NULL);
        unlink(tmp);
        unlink(final);
    }
    pthread_mutex_unlock(&s->lock);
    free(pc);
    free(fresh);
    xet_xorb_free(&x);
    if (rc == 0)
        *inserted = true;
    return rc;
}

/* Where a chunk of a known xorb lies now: (pack, idx). Caller holds the lock. */
static int locate_chunk(store *s, const xet_hash *chunk, int64_t *pack, uint32_t *idx, err *e)
{
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT pack, idx FROM chunks WHERE hash = ?", e);
    if (!st)
        return -1;
    sqlite3_bind_blob(st, 1, chunk->bytes, XET_HASH_LEN, SQLITE_TRANSIENT);
    int rc = one_row(s, st, e);
    if (rc == 0) {
        *pack = sqlite3_column_int64(st, 0);
        *idx = (uint32_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc;
}

typedef struct file_term {
    int64_t pack;
    uint32_t start, end;
    uint64_t raw_start, raw_len;
} file_term;

static void push_term(file_term **terms, size_t *n, size_t *cap, int64_t pack, uint32_t idx,
                      uint64_t raw)
{
    file_term *last = *n ? &(*terms)[*n - 1] : NULL;
    if (last && last->pack == pack && last->end == idx) {
        last->end++;
        last->raw_len += raw;
        return;
    }
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *terms = realloc(*terms, *cap * sizeof **terms);
        if (!*terms)
            abort();
    }
    uint64_t start = last ? last->raw_start + last->raw_len : 0;
    (*terms)[(*n)++] = (file_term){pack, idx, idx + 1, start, raw};
}

int store_file_register(store *s, const char *oid, const xet_hash *file_hash, uint64_t size,
                        const xet_shard_term *terms, size_t n, err *e)
{
    if (!text_is_hex(oid, 64))
        return err_set(e, 400, "", "invalid sha256");
    int64_t have;
    int rc = store_stat(s, oid, &have, e);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return 0;
    file_term *ft = NULL;
    size_t nft = 0, cap = 0;
    rc = 0;
    for (size_t t = 0; rc == 0 && t < n; t++) {
        xet_chunk *cs = NULL;
        size_t ncs = 0;
        if (store_xorb_chunks(s, &terms[t].xorb_hash, &cs, &ncs, e) != 0) {
            rc = err_set(e, 400, "BadShard", "a term names an unknown xorb");
            break;
        }
        if (terms[t].chunk_end > ncs || terms[t].chunk_start >= terms[t].chunk_end) {
            free(cs);
            rc = err_set(e, 400, "BadShard", "a term's chunk range lies outside its xorb");
            break;
        }
        pthread_mutex_lock(&s->lock);
        for (uint32_t i = terms[t].chunk_start; rc == 0 && i < terms[t].chunk_end; i++) {
            int64_t pack;
            uint32_t idx;
            int found = locate_chunk(s, &cs[i].hash, &pack, &idx, e);
            if (found != 0)
                rc = found < 0 ? -1 : err_set(e, 500, "", "a chunk of a stored xorb is missing");
            else
                push_term(&ft, &nft, &cap, pack, idx, cs[i].length);
        }
        pthread_mutex_unlock(&s->lock);
        free(cs);
    }
    uint64_t total = nft ? ft[nft - 1].raw_start + ft[nft - 1].raw_len : 0;
    if (rc == 0 && total != size)
        rc = err_set(e, 400, "BadShard", "the terms add up to %llu bytes, not %llu",
                     (unsigned long long)total, (unsigned long long)size);
    if (rc != 0) {
        free(ft);
        return -1;
    }
    pthread_mutex_lock(&s->lock);
    rc = store_sql_exec(s, "BEGIN IMMEDIATE", e);
    sqlite3_stmt *f = rc ? NULL : store_sql_prepare(s, "INSERT OR IGNORE INTO files (oid, size, xet,"
                                                       " created_ms) VALUES (?, ?, ?, ?)", e);
    if (f) {
        sqlite3_bind_text(f, 1, oid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(f, 2, (int64_t)size);
        sqlite3_bind_blob(f, 3, file_hash->bytes, XET_HASH_LEN, SQLITE_TRANSIENT);
        sqlite3_bind_int64(f, 4, text_now_ms());
        if (sqlite3_step(f) != SQLITE_DONE)
            rc = store_sql_fail(s, e, "file");
        else if (sqlite3_changes(s->sql) == 0)
            rc = 1; /* registered meanwhile */
        sqlite3_finalize(f);
    } else {
        rc = -1;
    }
    sqlite3_stmt *st = rc ? NULL : store_sql_prepare(s, "INSERT INTO file_terms (oid, seq, pack,"
                                                        " chunk_start, chunk_end, raw_start, raw_len)"
                                                        " VALUES (?, ?, ?, ?, ?, ?, ?)", e);
    for (size_t i = 0; st && rc == 0 && i < nft; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, oid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, (int64_t)i);
        sqlite3_bind_int64(st, 3, ft[i].pack);
        sqlite3_bind_int64(st, 4, ft[i].start);
        sqlite3_bind_int64(st, 5, ft[i].end);
        sqlite3_bind_int64(st, 6, (int64_t)ft[i].raw_start);
        sqlite3_bind_int64(st, 7, (int64_t)ft[i].raw_len);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = store_sql_fail(s, e, "file terms");
    }
    sqlite3_finalize(st);
    if (rc == 0)
        rc = store_sql_exec(s, "COMMIT", e);
    else
        sqlite3_exec(s->sql, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->lock);
    free(ft);
    return rc == 1 ? 0 : rc;
}

void store_reconstruction_free(store_reconstruction *r)
{
    free(r->terms);
    r->terms = NULL;
    r->n = 0;
}

int store_reconstruct(store *s, const xet_hash *file, uint64_t first, uint64_t last,
                      store_reconstruction *out, err *e)
{
    memset(out, 0, sizeof *out);
    char oid[65];
    int64_t size;
    int rc = store_file_by_xet_hash(s, file, oid, &size, e);
    if (rc != 0)
        return rc < 0 ? -1 : err_set(e, 404, "", "unknown file");
    out->file_size = (uint64_t)size;
    if (first > last || first >= (uint64_t)size)
        return err_set(e, 416, "", "range not satisfiable (file size %lld)", (long long)size);
    if (last >= (uint64_t)size)
        last = (uint64_t)size - 1;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT t.pack, t.chunk_start, t.chunk_end, t.raw_start,"
                                            " t.raw_len, p.hash FROM file_terms t JOIN packs p"
                                            " ON p.id = t.pack WHERE t.oid = ? ORDER BY t.seq", e);
    rc = st ? 0 : -1;
    if (st)
        sqlite3_bind_text(st, 1, oid, -1, SQLITE_STATIC);
    size_t cap = 0;
    bool first_term = true;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        int64_t pack = sqlite3_column_int64(st, 0);
        uint32_t cstart = (uint32_t)sqlite3_column_int64(st, 1);
        uint32_t cend = (uint32_t)sqlite3_column_int64(st, 2);
        uint64_t raw_start = (uint64_t)sqlite3_column_int64(st, 3);
        uint64_t raw_len = (uint64_t)sqlite3_column_int64(st, 4);
        if (raw_start + raw_len <= first || raw_start > last)
            continue;
        pack_chunk *pc = NULL;
        size_t npc = 0;
        if (store_load_pack_chunks(s, pack, cstart, cend, &pc, &npc, e) != 0 ||
            npc != cend - cstart) {
            free(pc);
            rc = err_set(e, 500, "", "pack metadata is inconsistent");
            break;
        }
        /* Keep only the chunks that overlap [first, last]. */
        uint64_t pos = raw_start;
        size_t a = 0, b = npc;
        while (a < npc && pos + pc[a].raw <= first)
            pos += pc[a++].raw;
        uint64_t start_pos = pos;
        uint64_t end_pos = pos;
        for (b = a; b < npc && end_pos <= last; b++)
            end_pos += pc[b].raw;
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            out->terms = realloc(out->terms, cap * sizeof *out->terms);
            if (!out->terms)
                abort();
        }
        store_term *t = &out->terms[out->n++];
        memcpy(t->xorb.bytes, sqlite3_column_blob(st, 5), XET_HASH_LEN);
        t->chunk_start = cstart + (uint32_t)a;
        t->chunk_end = cstart + (uint32_t)b;
        t->unpacked_len = end_pos - start_pos;
        t->byte_start = pc[a].offset;
        t->byte_end = pc[b - 1].offset + pc[b - 1].length;
        if (first_term) {
            out->offset_into_first = first - start_pos;
            first_term = false;
        }
        free(pc);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    if (rc != 0)
        store_reconstruction_free(out);
    return rc;
}

int store_xorb_region(store *s, const xet_hash *xorb, uint64_t start, uint64_t end, int *fd,
                      int64_t *file_offset, err *e)
{
    char name[33];
    uint64_t bytes;
    pthread_mutex_lock(&s->lock);
    int rc = pack_by_hash(s, xorb, NULL, name, &bytes, e);
    pthread_mutex_unlock(&s->lock);
    if (rc != 0)
        return rc < 0 ? -1 : err_set(e, 404, "", "unknown xorb");
    if (start >= end || end > bytes)
        return err_set(e, 416, "", "range outside the xorb (%llu bytes)", (unsigned long long)bytes);
    char path[4200];
    store_pack_path(s, name, path, sizeof path);
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return err_set(e, 500, "", "cannot open pack %s: %s", name, strerror(errno));
    *file_offset = (int64_t)start;
    return 0;
}

/* The pack that holds the dedup index's copy of `chunk`: its hash and serialized length, and
 * all its chunks in order. 0, 1 when the chunk is unknown, -1 + e. Caller frees *pc. */
static int chunk_pack(store *s, const xet_hash *chunk, xet_hash *pack_hash, uint64_t *bytes,
                      uint64_t *raw, pack_chunk **pc, size_t *npc, uint32_t *idx, err *e)
{
    *pc = NULL;
    *npc = 0;
    pthread_mutex_lock(&s->lock);
    int64_t pack;
    int rc = locate_chunk(s, chunk, &pack, idx, e);
    if (rc == 0) {
        sqlite3_stmt *st = store_sql_prepare(s, "SELECT hash, bytes, raw FROM packs WHERE id = ?", e);
        rc = -1;
        if (st) {
            sqlite3_bind_int64(st, 1, pack);
            rc = one_row(s, st, e);
            if (rc == 0) {
                memcpy(pack_hash->bytes, sqlite3_column_blob(st, 0), XET_HASH_LEN);
                *bytes = (uint64_t)sqlite3_column_int64(st, 1);
                *raw = (uint64_t)sqlite3_column_int64(st, 2);
            } else if (rc == 1) {
                rc = err_set(e, 500, "", "the chunk index names a pack that does not exist");
            }
            sqlite3_finalize(st);
        }
    }
    if (rc == 0)
        rc = store_load_pack_chunks(s, pack, 0, 0, pc, npc, e);
    pthread_mutex_unlock(&s->lock);
    if (rc == 0 && *idx >= *npc)
        rc = err_set(e, 500, "", "pack metadata is inconsistent");
    if (rc != 0) {
        free(*pc);
        *pc = NULL;
        *npc = 0;
    }
    return rc;
}

int store_chunk_pack(store *s, const xet_hash *chunk, xet_hash *pack, uint64_t *pack_bytes,
                     store_pack_chunk **chunks, size_t *n, size_t *index, err *e)
{
    *chunks = NULL;
    *n = 0;
    pack_chunk *pc;
    size_t npc;
    uint32_t idx;
    uint64_t raw;
    int rc = chunk_pack(s, chunk, pack, pack_bytes, &raw, &pc, &npc, &idx, e);
    if (rc != 0)
        return rc;
    store_pack_chunk *out = calloc(npc, sizeof *out);
    if (!out)
        abort();
    for (size_t i = 0; i < npc; i++)
        out[i] = (store_pack_chunk){pc[i].hash, pc[i].offset, pc[i].length, pc[i].raw};
    free(pc);
    *chunks = out;
    *n = npc;
    *index = idx;
    return 0;
}

int store_chunk_shard(store *s, const xet_hash *chunk, const uint8_t key[32], uint64_t key_expiry,
                      buf *out, err *e)
{
    /* A zero key means "hashes in clear" to the client: refuse rather than disclose. */
    static const uint8_t zero_key[32];
    if (memcmp(key, zero_key, sizeof zero_key) == 0)
        return err_set(e, 500, "", "a dedup shard needs a non-zero key");
    xet_hash pack_hash;
    uint64_t bytes, raw;
    pack_chunk *pc;
    size_t npc;
    uint32_t idx;
    int rc = chunk_pack(s, chunk, &pack_hash, &bytes, &raw, &pc, &npc, &idx, e);
    if (rc != 0)
        return rc;
    xet_shard_chunk *chunks = calloc(npc, sizeof *chunks);
    if (!chunks)
        abort();
    /* Keyed hashes and lengths only: no flags (the global-dedup flag is a bit of the clear
     * hash), and no file-info section (nothing that would let a caller claim a file). */
    uint32_t unpacked = 0;
    for (size_t i = 0; i < npc; i++) {
        xet_hash_hmac(&pc[i].hash, key, &chunks[i].hash);
        chunks[i].byte_offset = unpacked;
        chunks[i].unpacked_len = pc[i].raw;
        unpacked += pc[i].raw;
    }
    xet_shard_xorb x = {.xorb_hash = pack_hash, .raw_bytes = (uint32_t)raw,
                        .serialized_bytes = (uint32_t)bytes, .n_chunks = npc, .chunks = chunks};
    xet_shard shard = {.xorbs = &x, .n_xorbs = 1};
    xet_shard_footer footer = {.creation_timestamp = (uint64_t)(text_now_ms() / 1000),
                               .key_expiry = key_expiry};
    memcpy(footer.chunk_hash_hmac_key, key, sizeof footer.chunk_hash_hmac_key);
    rc = xet_shard_serialize(&shard, &footer, out, e);
    free(chunks);
    free(pc);
    return rc;
}
