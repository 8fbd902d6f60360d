/* maintenance — statistics, garbage collection and the consistency check of the chunk store.
 *
 * gc may run (as `hearth admin gc`, another process) while the server uploads and serves:
 *  - files and packs younger than the grace period are never touched: an upload may have
 *    stored them and not yet committed the repo change that references them;
 *  - packs an upload in flight dedups against are leased (leases table) and left alone;
 *  - a pack is rewritten into a new file and the metadata switched in one transaction before
 *    the old file is unlinked; a reader that looked up the old layout retries once.
 */
#include "store/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int64_t count_query(store *s, const char *sql, err *e)
{
    sqlite3_stmt *st = store_sql_prepare(s, sql, e);
    if (!st)
        return -1;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return v;
}

int store_get_stats(store *s, store_stats *out, err *e)
{
    pthread_mutex_lock(&s->lock);
    out->files = count_query(s, "SELECT COUNT(*) FROM files", e);
    out->logical_bytes = count_query(s, "SELECT COALESCE(SUM(size), 0) FROM files", e);
    out->packs = count_query(s, "SELECT COUNT(*) FROM packs", e);
    out->stored_bytes = count_query(s, "SELECT COALESCE(SUM(bytes), 0) FROM packs", e);
    out->chunks = count_query(s, "SELECT COUNT(*) FROM chunks", e);
    pthread_mutex_unlock(&s->lock);
    return out->files < 0 || out->packs < 0 ? -1 : 0;
}

int store_files_stats(store *s, const char *const *oids, size_t n, int64_t *logical,
                      int64_t *unique_stored, err *e)
{
    *logical = 0;
    *unique_stored = 0;
    pthread_mutex_lock(&s->lock);
    int rc = store_sql_exec(s, "CREATE TEMP TABLE IF NOT EXISTS stat_oids (oid TEXT PRIMARY KEY);"
                               "DELETE FROM stat_oids;", e);
    sqlite3_stmt *ins = rc ? NULL : store_sql_prepare(s, "INSERT OR IGNORE INTO stat_oids VALUES (?)", e);
    for (size_t i = 0; ins && i < n; i++) {
        sqlite3_reset(ins);
        sqlite3_bind_text(ins, 1, oids[i], -1, SQLITE_STATIC);
        sqlite3_step(ins);
    }
    sqlite3_finalize(ins);
    if (rc == 0) {
        *logical = count_query(s, "SELECT COALESCE(SUM(f.size), 0) FROM files f"
                                  " JOIN stat_oids o ON o.oid = f.oid", e);
        /* the record bytes of chunks only these files use */
        *unique_stored = count_query(
            s,
            "WITH mine AS (SELECT DISTINCT c.pack, c.idx, c.length FROM file_terms t"
            "   JOIN stat_oids o ON o.oid = t.oid JOIN pack_chunks c ON c.pack = t.pack"
            "   AND c.idx >= t.chunk_start AND c.idx < t.chunk_end),"
            " theirs AS (SELECT DISTINCT c.pack, c.idx FROM file_terms t"
            "   JOIN pack_chunks c ON c.pack = t.pack AND c.idx >= t.chunk_start"
            "   AND c.idx < t.chunk_end WHERE t.oid NOT IN (SELECT oid FROM stat_oids))"
            " SELECT COALESCE(SUM(m.length), 0) FROM mine m WHERE NOT EXISTS"
            "   (SELECT 1 FROM theirs x WHERE x.pack = m.pack AND x.idx = m.idx)",
            e);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ---- gc ------------------------------------------------------------------------------------ */

typedef struct oid_list {
    char (*items)[65];
    size_t n, cap;
} oid_list;

static void oid_push(oid_list *l, const char *oid)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->items = realloc(l->items, l->cap * sizeof *l->items);
        if (!l->items)
            abort();
    }
    snprintf(l->items[l->n++], 65, "%s", oid);
}

static int forget_files(store *s, store_live_fn live, void *ctx, int64_t cutoff,
                        store_gc_result *out, err *e)
{
    oid_list all = {0}, dead = {0};
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT oid FROM files WHERE created_ms < ?", e);
    if (st) {
        sqlite3_bind_int64(st, 1, cutoff);
        while (sqlite3_step(st) == SQLITE_ROW)
            oid_push(&all, (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    if (!st)
        return -1;
    for (size_t i = 0; i < all.n; i++)
        if (!live(ctx, all.items[i]))
            oid_push(&dead, all.items[i]);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    if (dead.n && (rc = store_sql_exec(s, "BEGIN IMMEDIATE", e)) == 0) {
        sqlite3_stmt *f = store_sql_prepare(s, "DELETE FROM files WHERE oid = ?", e);
        sqlite3_stmt *t = store_sql_prepare(s, "DELETE FROM file_terms WHERE oid = ?", e);
        for (size_t i = 0; f && t && i < dead.n; i++) {
            sqlite3_reset(f);
            sqlite3_reset(t);
            sqlite3_bind_text(f, 1, dead.items[i], -1, SQLITE_STATIC);
            sqlite3_bind_text(t, 1, dead.items[i], -1, SQLITE_STATIC);
            sqlite3_step(f);
            sqlite3_step(t);
        }
        rc = f && t ? 0 : -1;
        sqlite3_finalize(f);
        sqlite3_finalize(t);
        if (rc == 0)
            rc = store_sql_exec(s, "COMMIT", e);
        else
            sqlite3_exec(s->sql, "ROLLBACK", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == 0)
        out->files_removed += (int64_t)dead.n;
    free(all.items);
    free(dead.items);
    return rc;
}

typedef struct pack_info {
    int64_t id;
    char name[33];
    uint64_t bytes;
    uint64_t live_bytes;
} pack_info;

/* Packs old enough and not leased, with the bytes of their chunks that files still use. */
static int list_packs(store *s, int64_t cutoff, pack_info **out, size_t *n, err *e)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = store_sql_prepare(
        s,
        "SELECT p.id, p.name, p.bytes, COALESCE((SELECT SUM(c.length) FROM pack_chunks c"
        "   WHERE c.pack = p.id AND EXISTS (SELECT 1 FROM file_terms t WHERE t.pack = p.id"
        "   AND c.idx >= t.chunk_start AND c.idx < t.chunk_end)), 0)"
        " FROM packs p WHERE p.created_ms < ? AND NOT EXISTS"
        "   (SELECT 1 FROM leases l WHERE l.pack = p.id AND l.until_ms > ?)",
        e);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, cutoff);
    sqlite3_bind_int64(st, 2, text_now_ms());
    size_t cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            *out = realloc(*out, cap * sizeof **out);
            if (!*out)
                abort();
        }
        pack_info *p = &(*out)[(*n)++];
        p->id = sqlite3_column_int64(st, 0);
        snprintf(p->name, sizeof p->name, "%s", (const char *)sqlite3_column_text(st, 1));
        p->bytes = (uint64_t)sqlite3_column_int64(st, 2);
        p->live_bytes = (uint64_t)sqlite3_column_int64(st, 3);
    }
    sqlite3_finalize(st);
    return 0;
}

static bool still_unleased(store *s, int64_t pack)
{
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(s->sql, "SELECT 1 FROM leases WHERE pack = ? AND until_ms > ?", -1, &st, NULL);
    sqlite3_bind_int64(st, 1, pack);
    sqlite3_bind_int64(st, 2, text_now_ms());
    bool free_of_leases = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return free_of_leases;
}

static int drop_pack_rows(store *s, int64_t pack, err *e)
{
    const char *sqls[] = {"DELETE FROM chunks WHERE pack = ?", "DELETE FROM pack_chunks WHERE pack = ?",
                          "DELETE FROM packs WHERE id = ?"};
    for (size_t i = 0; i < ARRAY_LEN(sqls); i++) {
        sqlite3_stmt *st = store_sql_prepare(s, sqls[i], e);
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, pack);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return store_sql_fail(s, e, "drop pack");
    }
    return 0;
}

/* Deletes a pack no file uses. */
static int delete_pack(store *s, const pack_info *p, store_gc_result *out, err *e)
{
    pthread_mutex_lock(&s->lock);
    int rc = store_sql_exec(s, "BEGIN IMMEDIATE", e);
    bool unused = false;
    if (rc == 0) {
        sqlite3_stmt *st = store_sql_prepare(s, "SELECT 1 FROM file_terms WHERE pack = ? LIMIT 1", e);
        if (st) {
            sqlite3_bind_int64(st, 1, p->id);
            unused = sqlite3_step(st) == SQLITE_DONE;
            sqlite3_finalize(st);
        }
        if (unused && still_unleased(s, p->id) && drop_pack_rows(s, p->id, e) == 0)
            rc = store_sql_exec(s, "COMMIT", e);
        else {
            unused = false;
            sqlite3_exec(s->sql, "ROLLBACK", NULL, NULL, NULL);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == 0 && unused) {
        char path[4200];
        store_pack_path(s, p->name, path, sizeof path);
        unlink(path);
        out->packs_removed++;
        out->bytes_reclaimed += (int64_t)p->bytes;
    }
    return rc;
}

/* Copies the live chunks of a pack into a new one and switches the metadata over. */
static int rewrite_pack(store *s, const pack_info *p, store_gc_result *out, err *e)
{
    pack_chunk *pc = NULL;
    size_t npc = 0;
    bool *live = NULL;
    pthread_mutex_lock(&s->lock);
    int rc = store_load_pack_chunks(s, p->id, 0, 0, &pc, &npc, e);
    if (rc == 0) {
        live = calloc(npc ? npc : 1, sizeof *live);
        if (!live)
            abort();
        sqlite3_stmt *st = store_sql_prepare(s, "SELECT chunk_start, chunk_end FROM file_terms"
                                                " WHERE pack = ?", e);
        if (!st)
            rc = -1;
        else {
            sqlite3_bind_int64(st, 1, p->id);
            while (sqlite3_step(st) == SQLITE_ROW)
                for (int64_t i = sqlite3_column_int64(st, 0); i < sqlite3_column_int64(st, 1) &&
                                                              i < (int64_t)npc; i++)
                    live[i] = true;
            sqlite3_finalize(st);
        }
    }
    pthread_mutex_unlock(&s->lock);
    char old_path[4200], tmp[4200], new_path[4200], name[33];
    store_pack_path(s, p->name, old_path, sizeof old_path);
    uint8_t rnd[16];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, name);
    snprintf(tmp, sizeof tmp, "%s/tmp/%s.xorb", s->dir, name);
    store_pack_path(s, name, new_path, sizeof new_path);
    int in = rc == 0 ? open(old_path, O_RDONLY | O_CLOEXEC) : -1;
    int outfd = in >= 0 ? open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
    if (rc == 0 && (in < 0 || outfd < 0))
        rc = err_set(e, 500, "", "cannot rewrite pack %s: %s", p->name, strerror(errno));
    uint32_t *map = calloc(npc ? npc : 1, sizeof *map);
    pack_chunk *kept = calloc(npc ? npc : 1, sizeof *kept);
    if (!map || !kept)
        abort();
    size_t nkept = 0;
    uint64_t offset = 0;
    uint8_t *rec = malloc(XET_CHUNK_HEADER_LEN + XET_CHUNK_MAX_COMPRESSED);
    if (!rec)
        abort();
    for (size_t i = 0; rc == 0 && i < npc; i++) {
        if (!live[i])
            continue;
        ssize_t got = pread(in, rec, pc[i].length, (off_t)pc[i].offset);
        if (got != (ssize_t)pc[i].length || write(outfd, rec, pc[i].length) != (ssize_t)pc[i].length) {
            rc = err_set(e, 500, "", "cannot copy a chunk of pack %s", p->name);
            break;
        }
        map[i] = (uint32_t)nkept;
        kept[nkept++] = (pack_chunk){pc[i].hash, offset, pc[i].length, pc[i].raw, pc[i].check};
        offset += pc[i].length;
    }
    free(rec);
    if (in >= 0)
        close(in);
    if (outfd >= 0) {
        if (rc == 0 && (fsync(outfd) != 0 || rename(tmp, new_path) != 0))
            rc = err_set(e, 500, "", "cannot place the rewritten pack: %s", strerror(errno));
        close(outfd);
    }
    xet_hash h;
    if (rc == 0) {
        xet_chunk *cs = malloc((nkept ? nkept : 1) * sizeof *cs);
        if (!cs)
            abort();
        for (size_t i = 0; i < nkept; i++)
            cs[i] = (xet_chunk){kept[i].hash, kept[i].raw};
        xet_xorb_hash(cs, nkept, &h);
        free(cs);
        path_fsync_parent(new_path);
    }
    bool switched = false;
    pthread_mutex_lock(&s->lock);
    if (rc == 0 && (rc = store_sql_exec(s, "BEGIN IMMEDIATE", e)) == 0) {
        if (!still_unleased(s, p->id)) {
            rc = 1; /* an upload started relying on it: try another time */
        } else {
            int64_t id = 0;
            rc = store_insert_pack(s, name, kept, nkept, &h, false, &id, e);
            /* The kept chunks' index entries move with them. */
            sqlite3_stmt *b = rc == 0 ? store_sql_prepare(s, "UPDATE chunks SET pack = ?, idx = ?"
                                                             " WHERE hash = ? AND pack = ?", e)
                                      : NULL;
            for (size_t i = 0; rc == 0 && b && i < nkept; i++) {
                sqlite3_reset(b);
                sqlite3_bind_int64(b, 1, id);
                sqlite3_bind_int64(b, 2, (int64_t)i);
                sqlite3_bind_blob(b, 3, kept[i].hash.bytes, XET_HASH_LEN, SQLITE_STATIC);
                sqlite3_bind_int64(b, 4, p->id);
                if (sqlite3_step(b) != SQLITE_DONE)
                    rc = store_sql_fail(s, e, "rewrite");
            }
            if (rc == 0 && !b)
                rc = -1;
            sqlite3_finalize(b);
            /* Terms keep their runs: every chunk inside a term is live, so it stays contiguous. */
            sqlite3_stmt *terms = store_sql_prepare(s, "SELECT oid, seq, chunk_start, chunk_end FROM"
                                                       " file_terms WHERE pack = ?", e);
            sqlite3_stmt *upd = store_sql_prepare(s, "UPDATE file_terms SET pack = ?, chunk_start = ?,"
                                                     " chunk_end = ? WHERE oid = ? AND seq = ?", e);
            if (terms && upd && rc == 0) {
                sqlite3_bind_int64(terms, 1, p->id);
                typedef struct { char oid[65]; int64_t seq, start, end; } row;
                row *rows = NULL;
                size_t nrows = 0, cap = 0;
                while (sqlite3_step(terms) == SQLITE_ROW) {
                    if (nrows == cap) {
                        cap = cap ? cap * 2 : 16;
                        rows = realloc(rows, cap * sizeof *rows);
                        if (!rows)
                            abort();
                    }
                    row *r = &rows[nrows++];
                    snprintf(r->oid, sizeof r->oid, "%s", (const char *)sqlite3_column_text(terms, 0));
                    r->seq = sqlite3_column_int64(terms, 1);
                    r->start = sqlite3_column_int64(terms, 2);
                    r->end = sqlite3_column_int64(terms, 3);
                }
                for (size_t i = 0; rc == 0 && i < nrows; i++) {
                    sqlite3_reset(upd);
                    sqlite3_bind_int64(upd, 1, id);
                    sqlite3_bind_int64(upd, 2, map[rows[i].start]);
                    sqlite3_bind_int64(upd, 3, (int64_t)map[rows[i].end - 1] + 1);
                    sqlite3_bind_text(upd, 4, rows[i].oid, -1, SQLITE_STATIC);
                    sqlite3_bind_int64(upd, 5, rows[i].seq);
                    if (sqlite3_step(upd) != SQLITE_DONE)
                        rc = store_sql_fail(s, e, "rewrite terms");
                }
                free(rows);
            } else if (rc == 0) {
                rc = -1;
            }
            sqlite3_finalize(terms);
            sqlite3_finalize(upd);
            if (rc == 0)
                rc = drop_pack_rows(s, p->id, e);
        }
        if (rc == 0 && store_sql_exec(s, "COMMIT", e) == 0)
            switched = true;
        else
            sqlite3_exec(s->sql, "ROLLBACK", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&s->lock);
    if (switched) {
        unlink(old_path);
        out->packs_rewritten++;
        out->bytes_reclaimed += (int64_t)(p->bytes - offset);
    } else {
        unlink(tmp);
        unlink(new_path);
    }
    free(map);
    free(kept);
    free(live);
    free(pc);
    return rc < 0 ? -1 : 0;
}

int store_gc(store *s, store_live_fn live, void *ctx, int64_t grace_ms, double min_dead,
             store_gc_result *out, err *e)
{
    memset(out, 0, sizeof *out);
    int64_t cutoff = text_now_ms() - grace_ms;
    if (forget_files(s, live, ctx, cutoff, out, e) != 0)
        return -1;
    pack_info *packs = NULL;
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    int rc = list_packs(s, cutoff, &packs, &n, e);
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const pack_info *p = &packs[i];
        if (p->live_bytes == 0)
            rc = delete_pack(s, p, out, e);
        else if (p->bytes && (double)(p->bytes - p->live_bytes) / (double)p->bytes >= min_dead &&
                 p->live_bytes < p->bytes)
            rc = rewrite_pack(s, p, out, e);
    }
    free(packs);
    if (rc == 0) {
        /* xorbs known only by their chunk lists go once any of their chunks is gone */
        pthread_mutex_lock(&s->lock);
        rc = store_sql_exec(s, "DELETE FROM xorbs WHERE hash IN (SELECT DISTINCT xorb FROM"
                               " xorb_chunks x WHERE NOT EXISTS (SELECT 1 FROM chunks c"
                               " WHERE c.hash = x.chunk));"
                               "DELETE FROM xorb_chunks WHERE xorb NOT IN (SELECT hash FROM xorbs);"
                               "DELETE FROM leases WHERE until_ms < strftime('%s','now') * 1000;", e);
        pthread_mutex_unlock(&s->lock);
    }
    return rc;
}

/* ---- fsck ------------------------------------------------------------------------------------ */

static void reportf(store_report_fn report, void *ctx, int64_t *problems, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reportf(store_report_fn report, void *ctx, int64_t *problems, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    (*problems)++;
    if (report)
        report(ctx, line);
}

int64_t store_fsck(store *s, store_report_fn report, void *ctx, err *e)
{
    int64_t problems = 0;
    pack_info *packs = NULL;
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    int rc = list_packs(s, INT64_MAX, &packs, &n, e);
    pthread_mutex_unlock(&s->lock);
    if (rc != 0)
        return -1;
    uint8_t *scratch = malloc(XET_CHUNK_HEADER_LEN + XET_CHUNK_MAX_COMPRESSED);
    uint8_t *chunk = malloc(XET_CHUNK_MAX);
    if (!scratch || !chunk)
        abort();
    for (size_t i = 0; i < n; i++) {
        pack_chunk *pc = NULL;
        size_t npc = 0;
        pthread_mutex_lock(&s->lock);
        rc = store_load_pack_chunks(s, packs[i].id, 0, 0, &pc, &npc, e);
        pthread_mutex_unlock(&s->lock);
        char path[4200];
        store_pack_path(s, packs[i].name, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0) {
            reportf(report, ctx, &problems, "pack %s: missing (%s)", packs[i].name, strerror(errno));
        } else if (fstat(fd, &st) == 0 && (uint64_t)st.st_size != packs[i].bytes) {
            reportf(report, ctx, &problems, "pack %s: %lld bytes on disk, %llu expected",
                    packs[i].name, (long long)st.st_size, (unsigned long long)packs[i].bytes);
        } else {
            for (size_t k = 0; k < npc; k++) {
                err ce = ERR_INIT;
                if (store_read_chunk(fd, &pc[k], chunk, scratch, &ce) != 0) {
                    reportf(report, ctx, &problems, "pack %s chunk %zu: %s", packs[i].name, k,
                            ce.message);
                }
            }
        }
        if (fd >= 0)
            close(fd);
        free(pc);
    }
    free(packs);
    free(scratch);
    free(chunk);
    /* every file must rebuild to its SHA-256 */
    oid_list files = {0};
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT oid FROM files", e);
    while (st && sqlite3_step(st) == SQLITE_ROW)
        oid_push(&files, (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    uint8_t *block = malloc(1 << 20);
    if (!block)
        abort();
    for (size_t i = 0; i < files.n; i++) {
        err fe = ERR_INIT;
        store_reader *r = store_reader_open(s, files.items[i], &fe);
        if (!r) {
            reportf(report, ctx, &problems, "file %s: %s", files.items[i], fe.message);
            continue;
        }
        hash_ctx *h = hash_sha256_new();
        int64_t pos = 0, size = store_reader_size(r);
        while (pos < size) {
            ssize_t got = store_reader_pread(r, block, 1 << 20, pos);
            if (got <= 0)
                break;
            hash_update(h, block, (size_t)got);
            pos += got;
        }
        char hex[65];
        hash_final_hex(h, hex);
        if (pos != size)
            reportf(report, ctx, &problems, "file %s: unreadable at byte %lld", files.items[i],
                    (long long)pos);
        else if (strcmp(hex, files.items[i]) != 0)
            reportf(report, ctx, &problems, "file %s: its bytes hash to %s", files.items[i], hex);
        store_reader_close(r);
    }
    free(block);
    free(files.items);
    return problems;
}
