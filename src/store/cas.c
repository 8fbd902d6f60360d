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

/* Where a chunk lies now in the dedup index: (pack, idx). Caller holds the lock. */
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

/* ---- registering an upload shard's files -----------------------------------------------------
 *
 * A shard describes files as terms over xorbs, and claims each file's SHA-256 (the LFS oid its
 * commit line will use). Everything in it is the caller's word, so before anything is
 * registered: every xorb it introduces must be known; every file needs verification entries,
 * each a range hash over the *real* chunk hashes of its term (which only someone who had the
 * bytes knows; a dedup shard never gives them out in clear), and its terms must hash to its
 * file hash (xet_shard_verify_file over the chunk lists the store keeps); and the SHA-256 must
 * be the content's. Nothing in the Xet hashes ties that field to the bytes: trusting it would
 * let one client register someone else's oid with its own content, or link a stored oid it
 * does not know the bytes of. So a new oid, or a stored one under another Xet file hash or
 * size, is read back from the packs that hold the chunks and hashed; a stored oid under the
 * same Xet file hash and size (the same chunks, so the same bytes) needs no reading. Both ways
 * answer alike, and errors name only hashes the caller sent. */

/* Chunk lists of the xorbs a shard names, fetched from the metadata once each. */
typedef struct xorb_cache {
    store *store;
    struct {
        xet_hash hash;
        xet_chunk *chunks;
        size_t n;
    } *items;
    size_t n, cap;
    err e; /* the first error that was not "unknown xorb" */
} xorb_cache;

static int cached_chunks(void *ctx, const xet_hash *xorb, const xet_chunk **chunks, size_t *n)
{
    xorb_cache *c = ctx;
    for (size_t i = 0; i < c->n; i++)
        if (xet_hash_equal(&c->items[i].hash, xorb)) {
            *chunks = c->items[i].chunks;
            *n = c->items[i].n;
            return 0;
        }
    xet_chunk *list = NULL;
    size_t count = 0;
    err e = ERR_INIT;
    if (store_xorb_chunks(c->store, xorb, &list, &count, &e) != 0) {
        if (e.status != 404 && !err_is_set(&c->e))
            c->e = e;
        return -1;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->items = realloc(c->items, c->cap * sizeof *c->items);
        if (!c->items)
            abort();
    }
    c->items[c->n].hash = *xorb;
    c->items[c->n].chunks = list;
    c->items[c->n].n = count;
    c->n++;
    *chunks = list;
    *n = count;
    return 0;
}

static void xorb_cache_free(xorb_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->items[i].chunks);
    free(c->items);
}

/* One pack open for reading chunks back, with its chunk list. */
typedef struct pack_view {
    pack_chunk *chunks;
    size_t n;
    int fd;
    uint32_t at; /* index of the chunk read last */
} pack_view;

static void pack_view_close(pack_view *pv)
{
    if (pv->fd >= 0)
        close(pv->fd);
    free(pv->chunks);
    *pv = (pack_view){.fd = -1};
}

/* Opens the pack that holds the dedup index's copy of `chunk` and points pv->at at it. */
static int pack_view_find(store *s, const xet_hash *chunk, pack_view *pv, err *e)
{
    pack_view_close(pv);
    xet_hash pack;
    uint64_t bytes, raw;
    int rc = chunk_pack(s, chunk, &pack, &bytes, &raw, &pv->chunks, &pv->n, &pv->at, e);
    if (rc > 0)
        rc = err_set(e, 400, "BadShard", "a chunk of the file is not stored");
    int64_t base = 0;
    if (rc == 0 && store_xorb_region(s, &pack, 0, bytes, &pv->fd, &base, e) != 0) {
        pv->fd = -1;
        rc = -1;
    }
    if (rc != 0)
        pack_view_close(pv);
    return rc;
}

/* Hashes one chunk's bytes into sha. (No BLAKE3 check: the store checked every chunk when it
 * took it in, and bytes that hash to the claimed SHA-256 are the right bytes anyway.) */
static int hash_chunk(const pack_view *pv, hash_ctx *sha, uint8_t *record, uint8_t *plain,
                      err *e)
{
    const pack_chunk *c = &pv->chunks[pv->at];
    xet_chunk_header ch;
    if (c->length < XET_CHUNK_HEADER_LEN || c->length > XET_CHUNK_HEADER_LEN + XET_CHUNK_MAX_COMPRESSED ||
        pread(pv->fd, record, c->length, (off_t)c->offset) != (ssize_t)c->length ||
        xet_chunk_header_decode(record, &ch, e) != 0 ||
        XET_CHUNK_HEADER_LEN + ch.compressed_len != c->length ||
        (ch.compression != XET_COMPRESSION_NONE &&
         xet_chunk_decode(&ch, record + XET_CHUNK_HEADER_LEN, plain, e) != 0))
        return err_set(e, 500, "", "a pack of the store is damaged; run hearth admin fsck");
    hash_update(sha, ch.compression == XET_COMPRESSION_NONE ? record + XET_CHUNK_HEADER_LEN : plain,
                ch.uncompressed_len);
    return 0;
}

/* Does the content of a verified shard file hash to its claimed SHA-256 `oid`? Reads the
 * chunks back, one pack walk per run of consecutive chunks. 0, or -1 + e (400 when not). */
static int check_sha256(store *s, const xet_shard_file *f, xorb_cache *cache, const char *oid,
                        err *e)
{
    hash_ctx *sha = hash_sha256_new();
    uint8_t *record = malloc(XET_CHUNK_HEADER_LEN + XET_CHUNK_MAX_COMPRESSED);
    uint8_t *plain = malloc(XET_CHUNK_MAX);
    if (!record || !plain)
        abort();
    pack_view pv = {.fd = -1};
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < f->n_terms; t++) {
        const xet_chunk *chunks;
        size_t n;
        if (cached_chunks(cache, &f->terms[t].xorb_hash, &chunks, &n) != 0) {
            rc = err_set(e, 400, "BadShard", "a term names an unknown xorb");
            break;
        }
        for (uint32_t i = f->terms[t].chunk_start; rc == 0 && i < f->terms[t].chunk_end; i++) {
            const xet_hash *want = &chunks[i].hash;
            if (pv.fd >= 0 && pv.at + 1 < pv.n && xet_hash_equal(&pv.chunks[pv.at + 1].hash, want))
                pv.at++;
            else if (!(pv.fd >= 0 && pv.at < pv.n && xet_hash_equal(&pv.chunks[pv.at].hash, want)))
                rc = pack_view_find(s, want, &pv, e);
            if (rc == 0)
                rc = hash_chunk(&pv, sha, record, plain, e);
        }
    }
    char got[65];
    hash_final_hex(sha, got);
    /* Name only the hash the caller sent: the content's real SHA-256 is what a caller who
     * knows some chunk ranges but not the bytes is after (it would let them claim the file). */
    if (rc == 0 && !hash_equal_ct(got, oid))
        rc = err_set(e, 400, "BadShard", "the file's content does not hash to the SHA-256 the "
                                         "shard names (%s)", oid);
    pack_view_close(&pv);
    free(record);
    free(plain);
    return rc;
}

/* The checks of one file, up to (not including) its SHA-256; *size receives its length. */
static int verify_file(const xet_shard_file *f, xorb_cache *cache, uint64_t *size, err *e)
{
    char hs[XET_HASH_STRING_LEN + 1];
    xet_hash_to_string(&f->file_hash, hs);
    if (!(f->flags & XET_SHARD_FILE_WITH_VERIFICATION) || !f->verification)
        return err_set(e, 400, "BadShard", "file %s has no verification entries", hs);
    if (!f->has_sha256)
        return err_set(e, 400, "BadShard", "file %s has no SHA-256 (metadata extension); it "
                                           "could not be committed", hs);
    if (xet_shard_verify_file(f, cached_chunks, cache, true, size, e) != 0) {
        if (err_is_set(&cache->e))
            *e = cache->e;
        return -1;
    }
    return 0;
}

/* Is the claimed oid this content's? Stored under the same Xet hash and size: the same chunks,
 * nothing to read (the verification entries just proved the caller knows them); anything else
 * (new, another size, another Xet hash such as the npm client's chunking) is read back. */
static int verify_sha256(store *s, const xet_shard_file *f, uint64_t size, xorb_cache *cache,
                         err *e)
{
    char oid[65];
    hex_encode(f->sha256, 32, oid);
    int64_t have = -1;
    int st = store_stat(s, oid, &have, e);
    if (st < 0)
        return -1;
    if (st == 0 && (uint64_t)have == size) {
        xet_hash stored;
        int xr = store_file_xet_hash(s, oid, &stored, e);
        if (xr < 0)
            return -1;
        if (xr == 0 && xet_hash_equal(&stored, &f->file_hash))
            return 0;
    }
    return check_sha256(s, f, cache, oid, e);
}

/* A file's terms as runs of the packs that hold its chunks now. */
typedef struct file_term {
    int64_t pack;
    uint32_t start, end;
    uint64_t raw_start, raw_len;
} file_term;

typedef struct file_plan {
    file_term *terms;
    size_t n, cap;
} file_plan;

static void plan_push(file_plan *p, int64_t pack, uint32_t idx, uint64_t raw)
{
    file_term *last = p->n ? &p->terms[p->n - 1] : NULL;
    if (last && last->pack == pack && last->end == idx) {
        last->end++;
        last->raw_len += raw;
        return;
    }
    /* Read before the array may move. */
    uint64_t start = last ? last->raw_start + last->raw_len : 0;
    ARRAY_GROW(p->terms, p->n, p->cap);
    p->terms[p->n++] = (file_term){pack, idx, idx + 1, start, raw};
}

/* Maps a verified file's chunks to where they lie. */
static int plan_file(store *s, const xet_shard_file *f, xorb_cache *cache, file_plan *p, err *e)
{
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < f->n_terms; t++) {
        const xet_chunk *cs;
        size_t ncs;
        if (cached_chunks(cache, &f->terms[t].xorb_hash, &cs, &ncs) != 0)
            return err_set(e, 400, "BadShard", "a term names an unknown xorb");
        pthread_mutex_lock(&s->lock);
        for (uint32_t i = f->terms[t].chunk_start; rc == 0 && i < f->terms[t].chunk_end; i++) {
            int64_t pack;
            uint32_t idx;
            int found = locate_chunk(s, &cs[i].hash, &pack, &idx, e);
            if (found != 0)
                rc = found < 0 ? -1 : err_set(e, 500, "", "a chunk of a stored xorb is missing");
            else
                plan_push(p, pack, idx, cs[i].length);
        }
        pthread_mutex_unlock(&s->lock);
    }
    return rc;
}

/* Inserts one file and its terms (inside the caller's transaction). A file stored meanwhile is
 * left as it is. */
static int insert_file(store *s, const char *oid, const xet_hash *file_hash, uint64_t size,
                       const file_plan *p, err *e)
{
    sqlite3_stmt *f = store_sql_prepare(s, "INSERT OR IGNORE INTO files (oid, size, xet,"
                                           " created_ms) VALUES (?, ?, ?, ?)", e);
    if (!f)
        return -1;
    sqlite3_bind_text(f, 1, oid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(f, 2, (int64_t)size);
    sqlite3_bind_blob(f, 3, file_hash->bytes, XET_HASH_LEN, SQLITE_TRANSIENT);
    sqlite3_bind_int64(f, 4, text_now_ms());
    int rc = sqlite3_step(f) == SQLITE_DONE ? 0 : store_sql_fail(s, e, "file");
    sqlite3_finalize(f);
    if (rc != 0 || sqlite3_changes(s->sql) == 0)
        return rc;
    sqlite3_stmt *st = store_sql_prepare(s, "INSERT INTO file_terms (oid, seq, pack, chunk_start,"
                                            " chunk_end, raw_start, raw_len)"
                                            " VALUES (?, ?, ?, ?, ?, ?, ?)", e);
    if (!st)
        return -1;
    for (size_t i = 0; rc == 0 && i < p->n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, oid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, (int64_t)i);
        sqlite3_bind_int64(st, 3, p->terms[i].pack);
        sqlite3_bind_int64(st, 4, p->terms[i].start);
        sqlite3_bind_int64(st, 5, p->terms[i].end);
        sqlite3_bind_int64(st, 6, (int64_t)p->terms[i].raw_start);
        sqlite3_bind_int64(st, 7, (int64_t)p->terms[i].raw_len);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = store_sql_fail(s, e, "file terms");
    }
    sqlite3_finalize(st);
    return rc;
}

int store_shard_register(store *s, const xet_shard *shard, uint64_t *sizes, err *e)
{
    xorb_cache cache = {.store = s};
    int rc = 0;
    for (size_t i = 0; i < shard->n_xorbs && rc == 0; i++) {
        int st = store_xorb_stat(s, &shard->xorbs[i].xorb_hash, NULL, e);
        if (st > 0) {
            char hs[XET_HASH_STRING_LEN + 1];
            xet_hash_to_string(&shard->xorbs[i].xorb_hash, hs);
            err_set(e, 400, "BadShard", "the shard names xorb %s, which was not uploaded", hs);
        }
        rc = st == 0 ? 0 : -1;
    }
    /* Every file is checked whole before any is read back or registered. */
    for (size_t i = 0; i < shard->n_files && rc == 0; i++)
        rc = verify_file(&shard->files[i], &cache, &sizes[i], e);
    for (size_t i = 0; i < shard->n_files && rc == 0; i++)
        rc = verify_sha256(s, &shard->files[i], sizes[i], &cache, e);
    file_plan *plans = calloc(shard->n_files + 1, sizeof *plans);
    if (!plans)
        abort();
    for (size_t i = 0; i < shard->n_files && rc == 0; i++)
        rc = plan_file(s, &shard->files[i], &cache, &plans[i], e);
    /* One transaction for all the files: a shard registers whole or not at all. */
    if (rc == 0 && shard->n_files) {
        pthread_mutex_lock(&s->lock);
        rc = store_sql_exec(s, "BEGIN IMMEDIATE", e);
        for (size_t i = 0; i < shard->n_files && rc == 0; i++) {
            char oid[65];
            hex_encode(shard->files[i].sha256, 32, oid);
            rc = insert_file(s, oid, &shard->files[i].file_hash, sizes[i], &plans[i], e);
        }
        if (rc == 0)
            rc = store_sql_exec(s, "COMMIT", e);
        else
            sqlite3_exec(s->sql, "ROLLBACK", NULL, NULL, NULL);
        pthread_mutex_unlock(&s->lock);
    }
    for (size_t i = 0; i < shard->n_files; i++)
        free(plans[i].terms);
    free(plans);
    xorb_cache_free(&cache);
    return rc;
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
