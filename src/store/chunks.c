/* chunks — the chunk store: opening, the metadata schema, writing files and reading them.
 *
 * Layout under DIR:
 *   store.db            metadata (SQLite, WAL, synchronous=FULL)
 *   packs/<name>.xorb   immutable pack files in Xet xorb format
 *   tmp/                packs being written (and nothing else)
 *
 * Metadata:
 *   packs(id, name, hash, bytes, raw, chunks)          one row per pack file
 *   pack_chunks(pack, idx, hash, offset, length, raw, check_)
 *                                                      where each chunk of a pack lies, and the
 *                                                      XXH3 of its record for fast read checks
 *   chunks(hash → pack, idx)                           the dedup index: one copy of each chunk
 *   files(oid → size, xet, created_ms)                 stored files by SHA-256
 *   file_terms(oid, seq → pack, chunk_start, chunk_end, raw_start, raw_len)
 *   xorbs / xorb_chunks                                xorbs clients uploaded, by their chunks
 *   leases(owner, pack, until_ms)                      packs an upload in flight dedups against
 */
#include "store/internal.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h> /* the library picks SSE2 / AVX2 / AVX-512 at run time */
#define record_xxh3 XXH3_64bits_dispatch
#define record_xxh3_update XXH3_64bits_update_dispatch
#else
#define record_xxh3 XXH3_64bits
#define record_xxh3_update XXH3_64bits_update
#endif

#define BATCH_CHUNKS 64   /* chunks looked up per metadata query while writing */
#define NBATCH 4          /* batches per upload: one filling, the rest queued or being stored */
#define TAIL_CHUNKS 8     /* chunks per batch over an upload's last TAIL_BYTES */
#define TAIL_BYTES (16 << 20)

static const char *schema =
    "CREATE TABLE IF NOT EXISTS packs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  hash BLOB NOT NULL, bytes INTEGER NOT NULL, raw INTEGER NOT NULL,"
    "  chunks INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS packs_hash ON packs(hash);"
    "CREATE TABLE IF NOT EXISTS pack_chunks (pack INTEGER NOT NULL, idx INTEGER NOT NULL,"
    "  hash BLOB NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,"
    "  raw INTEGER NOT NULL, check_ INTEGER NOT NULL, PRIMARY KEY(pack, idx)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS chunks (hash BLOB PRIMARY KEY, pack INTEGER NOT NULL,"
    "  idx INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS files (oid TEXT PRIMARY KEY, size INTEGER NOT NULL,"
    "  xet BLOB NOT NULL, created_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS files_xet ON files(xet);"
    "CREATE TABLE IF NOT EXISTS file_terms (oid TEXT NOT NULL, seq INTEGER NOT NULL,"
    "  pack INTEGER NOT NULL, chunk_start INTEGER NOT NULL, chunk_end INTEGER NOT NULL,"
    "  raw_start INTEGER NOT NULL, raw_len INTEGER NOT NULL, PRIMARY KEY(oid, seq)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS file_terms_pack ON file_terms(pack);"
    "CREATE TABLE IF NOT EXISTS xorbs (hash BLOB PRIMARY KEY, chunks INTEGER NOT NULL,"
    "  raw INTEGER NOT NULL, created_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS xorb_chunks (xorb BLOB NOT NULL, idx INTEGER NOT NULL,"
    "  chunk BLOB NOT NULL, raw INTEGER NOT NULL, PRIMARY KEY(xorb, idx)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS leases (owner TEXT NOT NULL, pack INTEGER NOT NULL,"
    "  until_ms INTEGER NOT NULL, PRIMARY KEY(owner, pack)) WITHOUT ROWID;";

/* ---- metadata helpers --------------------------------------------------------------------- */

int store_sql_fail(store *s, err *e, const char *what)
{
    int code = sqlite3_errcode(s->sql);
    return err_set(e, code == SQLITE_FULL ? 507 : 500, "", "store metadata (%s): %s", what,
                   sqlite3_errmsg(s->sql));
}

sqlite3_stmt *store_sql_prepare(store *s, const char *sql, err *e)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->sql, sql, -1, &st, NULL) != SQLITE_OK) {
        store_sql_fail(s, e, "prepare");
        return NULL;
    }
    return st;
}

int store_sql_exec(store *s, const char *sql, err *e)
{
    if (sqlite3_exec(s->sql, sql, NULL, NULL, NULL) != SQLITE_OK)
        return store_sql_fail(s, e, sql);
    return 0;
}

void store_pack_path(const store *s, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/packs/%s.xorb", s->dir, name);
}

static void remove_dir_files(const char *dir, bool (*keep)(store *, const char *), store *s)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (ent->d_name[0] == '.' || (keep && keep(s, ent->d_name)))
            continue;
        if (unlinkat(dirfd(d), ent->d_name, 0) == 0 && keep)
            log_warn("store: removed %s/%s, left by an upload that never finished", dir,
                     ent->d_name);
    }
    closedir(d);
}

/* Is packs/<file> known to the metadata? */
static bool pack_is_known(store *s, const char *file)
{
    char name[128];
    snprintf(name, sizeof name, "%s", file);
    char *dot = strstr(name, ".xorb");
    if (!dot)
        return true; /* not ours: leave it */
    *dot = '\0';
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(s->sql, "SELECT 1 FROM packs WHERE name = ?", -1, &st, NULL);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc != SQLITE_DONE; /* on an error, keep the file */
}

store *store_open(const char *dir, bool recover, err *e)
{
    char path[4200];
    const char *subdirs[] = {"packs", "tmp"};
    for (size_t i = 0; i < ARRAY_LEN(subdirs); i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subdirs[i]);
        if (path_mkdirs(path, 0755) != 0) {
            err_set(e, 500, "", "cannot create %s: %s", path, strerror(errno));
            return NULL;
        }
    }
    store *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->dir = strdup(dir);
    pthread_mutex_init(&s->lock, NULL);
    snprintf(path, sizeof path, "%s/store.db", dir);
    if (sqlite3_open_v2(path, &s->sql, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                           SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        err_set(e, 500, "", "cannot open %s: %s", path, s->sql ? sqlite3_errmsg(s->sql) : "?");
        store_close(s);
        return NULL;
    }
    sqlite3_busy_timeout(s->sql, 30000);
    /* synchronous=FULL: a committed upload survives power loss, not just a crash. */
    if (store_sql_exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", e) != 0 ||
        store_sql_exec(s, schema, e) != 0) {
        store_close(s);
        return NULL;
    }
    if (recover) {
        snprintf(path, sizeof path, "%s/tmp", dir);
        remove_dir_files(path, NULL, s);
        snprintf(path, sizeof path, "%s/packs", dir);
        remove_dir_files(path, pack_is_known, s);
        store_sql_exec(s, "DELETE FROM leases", e); /* no upload survives a restart */
        err_clear(e);
    }
    return s;
}

void store_close(store *s)
{
    if (!s)
        return;
    sqlite3_close(s->sql);
    pthread_mutex_destroy(&s->lock);
    free(s->dir);
    free(s);
}

int store_stat(store *s, const char *oid, int64_t *size, err *e)
{
    if (!text_is_hex(oid, 64))
        return err_set(e, 400, "", "invalid object id '%.80s' (expected 64 hex digits)", oid);
    pthread_mutex_lock(&s->lock);
    int rc = -1;
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT size FROM files WHERE oid = ?", e);
    if (st) {
        sqlite3_bind_text(st, 1, oid, -1, SQLITE_TRANSIENT);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            if (size)
                *size = sqlite3_column_int64(st, 0);
            rc = 0;
        } else {
            rc = step == SQLITE_DONE ? 1 : store_sql_fail(s, e, "stat");
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int store_load_pack_chunks(store *s, int64_t pack, uint32_t start, uint32_t end,
                           pack_chunk **out, size_t *n, err *e)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = store_sql_prepare(
        s, "SELECT hash, offset, length, raw, check_ FROM pack_chunks WHERE pack = ? AND idx >= ?"
           " AND idx < ? ORDER BY idx", e);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, pack);
    sqlite3_bind_int64(st, 2, start);
    sqlite3_bind_int64(st, 3, end ? end : UINT32_MAX);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            *out = realloc(*out, cap * sizeof **out);
            if (!*out)
                abort();
        }
        pack_chunk *c = &(*out)[(*n)++];
        if (sqlite3_column_bytes(st, 0) == XET_HASH_LEN)
            memcpy(c->hash.bytes, sqlite3_column_blob(st, 0), XET_HASH_LEN);
        c->offset = (uint64_t)sqlite3_column_int64(st, 1);
        c->length = (uint32_t)sqlite3_column_int64(st, 2);
        c->raw = (uint32_t)sqlite3_column_int64(st, 3);
        c->check = (uint64_t)sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free(*out);
        *out = NULL;
        return store_sql_fail(s, e, "pack chunks");
    }
    return 0;
}

static int pread_all(int fd, void *out, size_t n, uint64_t offset)
{
    uint8_t *p = out;
    while (n) {
        ssize_t got = pread(fd, p, n, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        p += got;
        n -= (size_t)got;
        offset += (uint64_t)got;
    }
    return 0;
}

int store_read_chunk(int fd, const pack_chunk *c, uint8_t *out, uint8_t *scratch, err *e)
{
    if (c->length < XET_CHUNK_HEADER_LEN || c->length > XET_CHUNK_HEADER_LEN + XET_CHUNK_MAX_COMPRESSED)
        return err_set(e, 500, "", "corrupt chunk record (length %u)", c->length);
    if (pread_all(fd, scratch, c->length, c->offset) != 0)
        return err_set(e, 500, "", "cannot read a chunk at %llu: %s",
                       (unsigned long long)c->offset, strerror(errno ? errno : EIO));
    xet_chunk_header h;
    if (xet_chunk_header_decode(scratch, &h, e) != 0 || h.uncompressed_len != c->raw ||
        h.compressed_len + XET_CHUNK_HEADER_LEN != c->length)
        return err_set(e, 500, "", "corrupt chunk header at %llu", (unsigned long long)c->offset);
    if (xet_chunk_decode(&h, scratch + XET_CHUNK_HEADER_LEN, out, e) != 0)
        return err_set(e, 500, "", "corrupt chunk data at %llu", (unsigned long long)c->offset);
    xet_hash got;
    xet_chunk_hash(out, c->raw, &got);
    if (!xet_hash_equal(&got, &c->hash))
        return err_set(e, 500, "", "chunk at %llu does not match its hash",
                       (unsigned long long)c->offset);
    return 0;
}

/* store_record_check of a record in two pieces (header, payload). */
static uint64_t record_check2(const void *a, size_t alen, const void *b, size_t blen)
{
    XXH3_state_t state;
    XXH3_64bits_reset(&state);
    record_xxh3_update(&state, a, alen);
    record_xxh3_update(&state, b, blen);
    return XXH3_64bits_digest(&state);
}

/* ---- writing ------------------------------------------------------------------------------ */

/* A pack this writer is filling. */
typedef struct own_pack {
    char name[33];
    char tmp[4200];
    packfile *file;          /* while being written */
    uint64_t bytes;
    uint64_t raw;
    pack_chunk *chunks;
    size_t n, cap;
    int64_t id;              /* once registered */
    bool renamed;
} own_pack;

/* A run of chunks of one pack. pack > 0: an existing pack id; pack < 0: own pack -pack-1. */
typedef struct term {
    int64_t pack;
    uint32_t start, end;
    uint64_t raw_start, raw_len;
} term;

typedef struct pending {
    xet_hash hash;
    uint32_t len;
    uint32_t data_off;       /* into the batch buffer */
    bool raw;                /* not worth compressing: stored as it is, with this check */
    uint64_t check;
} pending;

/* Open-addressing map from chunk hash to its place in an own pack (dedup within an upload). */
typedef struct own_slot {
    xet_hash hash;
    int32_t pack;            /* own pack index + 1; 0 = empty */
    uint32_t idx;
} own_slot;

/* Chunks handed from the receiving thread to the storing thread, with their bytes. */
typedef struct batch {
    pending items[BATCH_CHUNKS];
    size_t n;
    size_t used;
    uint8_t *data;           /* BATCH_CHUNKS * XET_CHUNK_MAX, a store buffer */
} batch;

/* Ingest runs on two threads (and a pack writer's I/O thread, which mostly waits on the disk):
 * the request's thread receives the bytes, finds chunk boundaries and fills a batch; a storing
 * thread hashes each chunk (BLAKE3) and the file (SHA-256), looks the chunks up and writes the
 * new ones, while the next batches fill. Small files never start the thread. The split keeps
 * the two about equally busy beside the client that sends the bytes: receiving costs the
 * request's thread as much CPU again in the kernel. */
struct store_writer {
    store *s;
    hash_ctx *sha;
    int64_t size;
    int64_t expected;        /* announced size, or 0 */
    char owner[25];          /* lease owner id */
    xet_chunker chunker;
    size_t chunk_len;        /* bytes of the current chunk, at filling->data + filling->used */
    batch batches[NBATCH];   /* a ring: filled in turn, stored in the same order */
    batch *filling;
    /* the storing thread stores batches[store_next], then the next, as they are handed over */
    store_worker storing;
    unsigned fill, store_next; /* ring positions */
    /* below: owned by whichever thread stores (the storing thread while it runs) */
    own_pack *packs;
    size_t npacks;
    term *terms;
    size_t nterms, cap_terms;
    xet_chunk *all;          /* every chunk of the file, for its Xet hash */
    size_t nall, cap_all;
    own_slot *map;
    size_t map_cap, map_used;
    int64_t *leased;
    size_t nleased;
    buf record;
    /* store_writer_mark's position: what to restore on store_writer_rewind */
    struct {
        bool set;
        int64_t size;
        xet_chunker chunker;
        uint8_t *partial;    /* the unfinished chunk's bytes (XET_CHUNK_MAX) */
        size_t partial_len;
        hash_ctx *sha;       /* of the complete chunks before the mark */
        size_t nall, nterms;
        term last;           /* terms[nterms - 1] as it was */
    } mark;
};

static int store_next_batch(void *ctx, bool failed, err *e);

store_writer *store_writer_new(store *s, err *e)
{
    store_writer *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->s = s;
    w->sha = hash_sha256_new();
    xet_chunker_init(&w->chunker, XET_CHUNKER_HF_XET);
    static_assert(BATCH_CHUNKS * XET_CHUNK_MAX <= STORE_BUFFER_SIZE, "a batch fits a buffer");
    for (int i = 0; i < NBATCH; i++)
        w->batches[i].data = store_buffer_get();
    w->filling = &w->batches[0];
    store_worker_init(&w->storing, "hearth-ingest", store_next_batch, w);
    uint8_t rnd[12];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, w->owner);
    return w;
}

int64_t store_writer_size(const store_writer *w) { return w->size; }

void store_writer_expect(store_writer *w, int64_t size) { w->expected = size; }

static uint64_t slot_of(const xet_hash *h, size_t cap)
{
    uint64_t v;
    memcpy(&v, h->bytes, 8);
    return v & (cap - 1);
}

static own_slot *map_find(store_writer *w, const xet_hash *h)
{
    if (!w->map_cap)
        return NULL;
    for (uint64_t i = slot_of(h, w->map_cap);; i = (i + 1) & (w->map_cap - 1)) {
        own_slot *sl = &w->map[i];
        if (!sl->pack)
            return NULL;
        if (xet_hash_equal(&sl->hash, h))
            return sl;
    }
}

static void map_put(store_writer *w, const xet_hash *h, int32_t pack, uint32_t idx)
{
    if ((w->map_used + 1) * 2 > w->map_cap) {
        size_t old_cap = w->map_cap;
        own_slot *old = w->map;
        w->map_cap = old_cap ? old_cap * 2 : 1024;
        w->map = calloc(w->map_cap, sizeof *w->map);
        if (!w->map)
            abort();
        w->map_used = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].pack)
                map_put(w, &old[i].hash, old[i].pack, old[i].idx);
        free(old);
    }
    uint64_t i = slot_of(h, w->map_cap);
    while (w->map[i].pack)
        i = (i + 1) & (w->map_cap - 1);
    w->map[i] = (own_slot){*h, pack, idx};
    w->map_used++;
}

static void add_term(store_writer *w, int64_t pack, uint32_t idx, uint32_t raw)
{
    term *last = w->nterms ? &w->terms[w->nterms - 1] : NULL;
    if (last && last->pack == pack && last->end == idx) {
        last->end++;
        last->raw_len += raw;
        return;
    }
    if (w->nterms == w->cap_terms) {
        w->cap_terms = w->cap_terms ? w->cap_terms * 2 : 16;
        w->terms = realloc(w->terms, w->cap_terms * sizeof *w->terms);
        if (!w->terms)
            abort();
    }
    uint64_t raw_start = last ? last->raw_start + last->raw_len : 0;
    w->terms[w->nterms++] = (term){pack, idx, idx + 1, raw_start, raw};
}

static int seal_pack(own_pack *p, err *e)
{
    if (!p->file)
        return 0;
    packfile *f = p->file;
    p->file = NULL;
    return packfile_seal(f, e);
}

static own_pack *open_pack(store_writer *w, err *e)
{
    own_pack *cur = w->npacks ? &w->packs[w->npacks - 1] : NULL;
    if (cur && cur->file)
        return cur;
    w->packs = realloc(w->packs, (w->npacks + 1) * sizeof *w->packs);
    if (!w->packs)
        abort();
    own_pack *p = &w->packs[w->npacks];
    memset(p, 0, sizeof *p);
    uint8_t rnd[16];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, p->name);
    snprintf(p->tmp, sizeof p->tmp, "%s/tmp/%s.xorb", w->s->dir, p->name);
    if (!(p->file = packfile_create(p->tmp, e)))
        return NULL;
    w->npacks++;
    return p;
}

static void raw_header(uint32_t len, uint8_t header[XET_CHUNK_HEADER_LEN])
{
    xet_chunk_header h = {0, len, XET_COMPRESSION_NONE, len};
    xet_chunk_header_encode(&h, header);
}

/* A cheap look at the first 4 KiB: if neither LZ4 nor byte-grouped LZ4 saves 5% there, the
 * chunk is stored raw without trying the whole of it (random-looking data: most weights). */
static bool worth_compressing(const uint8_t *data, size_t len)
{
    enum { SAMPLE = 4096 };
    if (len < 2 * SAMPLE)
        return true;
    char out[LZ4_COMPRESSBOUND(SAMPLE)];
    int n = LZ4_compress_default((const char *)data, out, SAMPLE, (int)sizeof out);
    if (n > 0 && n * 20 <= SAMPLE * 19)
        return true;
    uint8_t grouped[SAMPLE];
    for (size_t lane = 0, k = 0; lane < 4; lane++)
        for (size_t i = lane; i < SAMPLE; i += 4)
            grouped[k++] = data[i];
    n = LZ4_compress_default((const char *)grouped, out, SAMPLE, (int)sizeof out);
    return n > 0 && n * 20 <= SAMPLE * 19;
}

static int append_chunk(store_writer *w, const pending *c, const uint8_t *data, err *e)
{
    own_pack *p = open_pack(w, e);
    if (!p)
        return -1;
    /* A raw record (most weights) goes straight into the pack's buffer, header then payload;
     * only a compressed one is built aside first. */
    bool raw = c->raw;
    uint8_t header[XET_CHUNK_HEADER_LEN];
    uint32_t record_len;
    uint64_t check = c->check;
    if (raw) {
        raw_header(c->len, header);
        record_len = XET_CHUNK_HEADER_LEN + c->len;
    } else {
        buf_reset(&w->record);
        if (xet_xorb_append_chunk(&w->record, data, c->len, XET_COMPRESSION_AUTO, NULL, e) < 0)
            return -1;
        record_len = (uint32_t)w->record.len;
        check = store_record_check(w->record.data, w->record.len);
    }
    if (p->n && (p->raw + c->len > PACK_MAX_BYTES || p->n >= PACK_MAX_CHUNKS)) {
        if (seal_pack(p, e) != 0)
            return -1;
        if (!(p = open_pack(w, e)))
            return -1;
    }
    int rc = raw ? packfile_append(p->file, header, sizeof header, e) ||
                       packfile_append(p->file, data, c->len, e)
                 : packfile_append(p->file, w->record.data, w->record.len, e);
    if (rc != 0)
        return -1;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->chunks = realloc(p->chunks, p->cap * sizeof *p->chunks);
        if (!p->chunks)
            abort();
    }
    uint32_t idx = (uint32_t)p->n;
    p->chunks[p->n++] = (pack_chunk){c->hash, p->bytes, record_len, c->len, check};
    p->bytes += record_len;
    p->raw += c->len;
    int32_t own = (int32_t)(p - w->packs);
    map_put(w, &c->hash, own + 1, idx);
    add_term(w, -(int64_t)own - 1, idx, c->len);
    return 0;
}

static bool already_leased(store_writer *w, int64_t pack)
{
    for (size_t i = 0; i < w->nleased; i++)
        if (w->leased[i] == pack)
            return true;
    return false;
}

/* Hashes the batch's chunks and adds them to the file's SHA-256, looks them up in one query,
 * leases the packs it dedups against and writes the new chunks. */
static int store_batch(store_writer *w, batch *b, err *e)
{
    if (!b->n)
        return 0;
    /* A batch is whole chunks of the file, in order. Each chunk's BLAKE3 and the file's SHA-256
     * are computed here, off the request's thread (which receives, chunks and picks a record
     * form), one chunk after the other so that SHA-256 reads it from this core's cache. */
    for (size_t i = 0; i < b->n; i++) {
        pending *c = &b->items[i];
        const uint8_t *data = b->data + c->data_off;
        xet_chunk_hash(data, c->len, &c->hash);
        hash_update(w->sha, data, c->len);
        if (w->nall == w->cap_all) {
            w->cap_all = w->cap_all ? w->cap_all * 2 : 256;
            w->all = realloc(w->all, w->cap_all * sizeof *w->all);
            if (!w->all)
                abort();
        }
        w->all[w->nall++] = (xet_chunk){c->hash, c->len};
    }
    store *s = w->s;
    int64_t found_pack[BATCH_CHUNKS] = {0};
    uint32_t found_idx[BATCH_CHUNKS] = {0};
    buf sql = BUF_INIT;
    buf_puts(&sql, "SELECT hash, pack, idx FROM chunks WHERE hash IN (");
    for (size_t i = 0; i < b->n; i++)
        buf_puts(&sql, i ? ",?" : "?");
    buf_puts(&sql, ")");
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = store_sql_prepare(s, sql.data, e);
    buf_free(&sql);
    int rc = 0;
    if (!st) {
        rc = -1;
    } else {
        for (size_t i = 0; i < b->n; i++)
            sqlite3_bind_blob(st, (int)i + 1, b->items[i].hash.bytes, XET_HASH_LEN, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW) {
            const void *h = sqlite3_column_blob(st, 0);
            for (size_t i = 0; i < b->n; i++)
                if (!memcmp(h, b->items[i].hash.bytes, XET_HASH_LEN)) {
                    found_pack[i] = sqlite3_column_int64(st, 1);
                    found_idx[i] = (uint32_t)sqlite3_column_int64(st, 2);
                }
        }
        sqlite3_finalize(st);
        /* Lease the packs before relying on them, so gc leaves them alone until we finish. */
        sqlite3_stmt *lease = NULL;
        for (size_t i = 0; i < b->n && rc == 0; i++) {
            if (!found_pack[i] || already_leased(w, found_pack[i]))
                continue;
            if (!lease)
                lease = store_sql_prepare(s, "INSERT OR REPLACE INTO leases (owner, pack, until_ms)"
                                             " VALUES (?, ?, ?)", e);
            if (!lease) {
                rc = -1;
                break;
            }
            sqlite3_reset(lease);
            sqlite3_bind_text(lease, 1, w->owner, -1, SQLITE_STATIC);
            sqlite3_bind_int64(lease, 2, found_pack[i]);
            sqlite3_bind_int64(lease, 3, text_now_ms() + LEASE_MS);
            if (sqlite3_step(lease) != SQLITE_DONE)
                rc = store_sql_fail(s, e, "lease");
            w->leased = realloc(w->leased, (w->nleased + 1) * sizeof *w->leased);
            if (!w->leased)
                abort();
            w->leased[w->nleased++] = found_pack[i];
        }
        sqlite3_finalize(lease);
        /* A lease taken after gc deleted the pack would be useless: re-check it exists. */
        for (size_t i = 0; i < b->n && rc == 0; i++) {
            if (!found_pack[i])
                continue;
            sqlite3_stmt *chk = store_sql_prepare(s, "SELECT 1 FROM packs WHERE id = ?", e);
            if (!chk) {
                rc = -1;
                break;
            }
            sqlite3_bind_int64(chk, 1, found_pack[i]);
            if (sqlite3_step(chk) != SQLITE_ROW)
                found_pack[i] = 0; /* gone: store the chunk again */
            sqlite3_finalize(chk);
        }
    }
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        const pending *c = &b->items[i];
        own_slot *mine = map_find(w, &c->hash);
        if (mine)
            add_term(w, -(int64_t)mine->pack, mine->idx, c->len);
        else if (found_pack[i])
            add_term(w, found_pack[i], found_idx[i], c->len);
        else
            rc = append_chunk(w, c, b->data + c->data_off, e);
    }
    b->n = 0;
    b->used = 0;
    return rc;
}

/* The storing thread's job: the next batch handed over. */
static int store_next_batch(void *ctx, bool failed, err *e)
{
    store_writer *w = ctx;
    batch *b = &w->batches[w->store_next];
    int rc = failed ? 0 : store_batch(w, b, e);
    b->n = b->used = 0;
    w->store_next = (w->store_next + 1) % NBATCH;
    return rc;
}

static int wait_idle(store_writer *w, err *e) { return store_worker_wait(&w->storing, 0, e); }

/* Hands the filling batch to the storing thread and fills the next, once that one is free. */
static int submit_batch(store_writer *w, err *e)
{
    if (store_worker_submit(&w->storing, NBATCH - 2, e) != 0)
        return -1;
    w->fill = (w->fill + 1) % NBATCH;
    w->filling = &w->batches[w->fill];
    return 0;
}

/* The current chunk is complete: it joins the filling batch. */
static int end_chunk(store_writer *w, err *e)
{
    if (!w->chunk_len)
        return 0;
    batch *b = w->filling;
    pending *c = &b->items[b->n++];
    *c = (pending){.len = (uint32_t)w->chunk_len, .data_off = (uint32_t)b->used};
    /* The choice between storing it raw or compressed, and a raw record's check, are made here
     * while the chunk is still in cache from being copied in. */
    const uint8_t *data = b->data + c->data_off;
    c->raw = !worth_compressing(data, c->len);
    if (c->raw) {
        uint8_t header[XET_CHUNK_HEADER_LEN];
        raw_header(c->len, header);
        c->check = record_check2(header, sizeof header, data, c->len);
    }
    b->used += w->chunk_len;
    w->chunk_len = 0;
    /* Near the end of an upload of known size, smaller batches: the storing thread then has
     * ~1 MiB rather than ~12 MiB queued when the last byte arrives. */
    bool tail = w->expected && w->expected - w->size < TAIL_BYTES;
    return b->n >= (tail ? TAIL_CHUNKS : BATCH_CHUNKS) ? submit_batch(w, e) : 0;
}

int store_writer_write(store_writer *w, const void *data, size_t len, err *e)
{
    w->size += (int64_t)len;
    const uint8_t *p = data;
    while (len) {
        bool ends = false;
        size_t take = xet_chunker_next(&w->chunker, p, len, &ends);
        batch *b = w->filling;
        memcpy(b->data + b->used + w->chunk_len, p, take);
        w->chunk_len += take;
        p += take;
        len -= take;
        if (ends && end_chunk(w, e) != 0)
            return -1;
    }
    return 0;
}

/* The mark is taken between whole chunks as far as the storing thread is concerned: the
 * filling batch's complete chunks are handed over and stored, and the unfinished chunk's bytes
 * (under XET_CHUNK_MAX, the chunker's state with them) are copied aside. Rewinding then only
 * restores small state: nothing stored after the mark is undone on disk, it is merely no
 * longer part of the file. */
int store_writer_mark(store_writer *w, err *e)
{
    batch *b = w->filling;
    if (!w->mark.partial) {
        w->mark.partial = malloc(XET_CHUNK_MAX);
        if (!w->mark.partial)
            abort();
    }
    memcpy(w->mark.partial, b->data + b->used, w->chunk_len);
    w->mark.partial_len = w->chunk_len;
    if (b->n) {
        if (submit_batch(w, e) != 0)
            return -1;
        memcpy(w->filling->data, w->mark.partial, w->chunk_len);
    }
    if (wait_idle(w, e) != 0)
        return -1;
    w->mark.set = true;
    w->mark.size = w->size;
    w->mark.chunker = w->chunker;
    hash_free(w->mark.sha);
    w->mark.sha = hash_copy(w->sha);
    w->mark.nall = w->nall;
    w->mark.nterms = w->nterms;
    if (w->nterms)
        w->mark.last = w->terms[w->nterms - 1];
    return 0;
}

int store_writer_rewind(store_writer *w, err *e)
{
    if (!w->mark.set)
        return err_set(e, 500, "", "store_writer_rewind without a mark");
    if (wait_idle(w, e) != 0)
        return -1;
    batch *b = w->filling;
    b->n = b->used = 0;
    memcpy(b->data, w->mark.partial, w->mark.partial_len);
    w->chunk_len = w->mark.partial_len;
    w->chunker = w->mark.chunker;
    w->size = w->mark.size;
    hash_free(w->sha);
    w->sha = hash_copy(w->mark.sha);
    w->nall = w->mark.nall;
    w->nterms = w->mark.nterms;
    if (w->nterms)
        w->terms[w->nterms - 1] = w->mark.last;
    return 0;
}

static void release_leases(store_writer *w)
{
    if (!w->nleased)
        return;
    pthread_mutex_lock(&w->s->lock);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(w->s->sql, "DELETE FROM leases WHERE owner = ?", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, w->owner, -1, SQLITE_STATIC);
        sqlite3_step(st);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&w->s->lock);
}

static void writer_free(store_writer *w, bool remove_packs)
{
    store_worker_destroy(&w->storing);
    for (size_t i = 0; i < w->npacks; i++) {
        own_pack *p = &w->packs[i];
        packfile_abort(p->file);
        p->file = NULL;
        if (remove_packs) {
            unlink(p->tmp);
            if (p->renamed) {
                char path[4200];
                store_pack_path(w->s, p->name, path, sizeof path);
                unlink(path);
            }
        }
        free(p->chunks);
    }
    release_leases(w);
    hash_free(w->sha);
    hash_free(w->mark.sha);
    free(w->mark.partial);
    free(w->packs);
    free(w->terms);
    free(w->all);
    free(w->map);
    free(w->leased);
    for (int i = 0; i < NBATCH; i++)
        store_buffer_put(w->batches[i].data);
    buf_free(&w->record);
    free(w);
}

void store_writer_abort(store_writer *w)
{
    if (w)
        writer_free(w, true);
}

#define INSERT_ROWS 64

/* `head` VALUES `row`, `row`, ... (`rows` times), prepared. */
static sqlite3_stmt *prepare_rows(store *s, const char *head, const char *row, size_t rows,
                                  err *e)
{
    buf sql = BUF_INIT;
    buf_puts(&sql, head);
    for (size_t i = 0; i < rows; i++) {
        buf_puts(&sql, i ? ", " : " VALUES ");
        buf_puts(&sql, row);
    }
    sqlite3_stmt *st = store_sql_prepare(s, sql.data, e);
    buf_free(&sql);
    return st;
}

int store_insert_pack(store *s, const char *name, const pack_chunk *chunks, size_t n,
                      const xet_hash *hash, bool index_chunks, int64_t *id, err *e)
{
    uint64_t bytes = 0, raw = 0;
    xet_chunk *cs = malloc((n ? n : 1) * sizeof *cs);
    if (!cs)
        abort();
    for (size_t k = 0; k < n; k++) {
        cs[k] = (xet_chunk){chunks[k].hash, chunks[k].raw};
        bytes += chunks[k].length;
        raw += chunks[k].raw;
    }
    xet_hash h;
    if (hash)
        h = *hash;
    else
        xet_xorb_hash(cs, n, &h);
    free(cs);
    sqlite3_stmt *st = store_sql_prepare(s, "INSERT INTO packs (name, hash, bytes, raw, chunks,"
                                            " created_ms) VALUES (?, ?, ?, ?, ?, ?)", e);
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, h.bytes, XET_HASH_LEN, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (int64_t)bytes);
    sqlite3_bind_int64(st, 4, (int64_t)raw);
    sqlite3_bind_int64(st, 5, (int64_t)n);
    sqlite3_bind_int64(st, 6, text_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return store_sql_fail(s, e, "pack");
    *id = sqlite3_last_insert_rowid(s->sql);
    /* Rows go in INSERT_ROWS at a time, one statement execution each rather than one per
     * row: the metadata transaction is what an upload's client waits for after its last byte. */
    sqlite3_stmt *pc = NULL, *ix = NULL;
    size_t prepared = 0;
    bool ok = true;
    for (size_t k = 0; ok && k < n; k += INSERT_ROWS) {
        size_t m = n - k < INSERT_ROWS ? n - k : INSERT_ROWS;
        if (m != prepared) {
            sqlite3_finalize(pc);
            sqlite3_finalize(ix);
            pc = prepare_rows(s, "INSERT INTO pack_chunks (pack, idx, hash, offset, length, raw,"
                                 " check_)", "(?, ?, ?, ?, ?, ?, ?)", m, e);
            ix = index_chunks ? prepare_rows(s, "INSERT OR IGNORE INTO chunks (hash, pack, idx)",
                                             "(?, ?, ?)", m, e)
                              : NULL;
            prepared = m;
            if (!pc || (index_chunks && !ix)) {
                ok = false;
                break;
            }
        }
        sqlite3_reset(pc);
        for (size_t j = 0; j < m; j++) {
            const pack_chunk *c = &chunks[k + j];
            int p = (int)(7 * j);
            sqlite3_bind_int64(pc, p + 1, *id);
            sqlite3_bind_int64(pc, p + 2, (int64_t)(k + j));
            sqlite3_bind_blob(pc, p + 3, c->hash.bytes, XET_HASH_LEN, SQLITE_STATIC);
            sqlite3_bind_int64(pc, p + 4, (int64_t)c->offset);
            sqlite3_bind_int64(pc, p + 5, c->length);
            sqlite3_bind_int64(pc, p + 6, c->raw);
            sqlite3_bind_int64(pc, p + 7, (int64_t)c->check);
        }
        ok = sqlite3_step(pc) == SQLITE_DONE;
        if (ok && ix) {
            sqlite3_reset(ix);
            for (size_t j = 0; j < m; j++) {
                int p = (int)(3 * j);
                sqlite3_bind_blob(ix, p + 1, chunks[k + j].hash.bytes, XET_HASH_LEN, SQLITE_STATIC);
                sqlite3_bind_int64(ix, p + 2, *id);
                sqlite3_bind_int64(ix, p + 3, (int64_t)(k + j));
            }
            ok = sqlite3_step(ix) == SQLITE_DONE;
        }
        if (!ok)
            store_sql_fail(s, e, "pack chunks");
    }
    sqlite3_finalize(pc);
    sqlite3_finalize(ix);
    return ok ? 0 : -1;
}

/* Registers packs, chunks, the file and its terms in one transaction. Caller holds the lock. */
static int register_file(store_writer *w, const char *oid, const xet_hash *xet, err *e)
{
    store *s = w->s;
    if (store_sql_exec(s, "BEGIN IMMEDIATE", e) != 0)
        return -1;
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT 1 FROM files WHERE oid = ?", e);
    if (!st)
        goto fail;
    sqlite3_bind_text(st, 1, oid, -1, SQLITE_TRANSIENT);
    int exists = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (exists) { /* the same file finished first elsewhere: keep that one */
        store_sql_exec(s, "ROLLBACK", e);
        return 1;
    }
    for (size_t i = 0; i < w->npacks; i++) {
        own_pack *p = &w->packs[i];
        if (store_insert_pack(s, p->name, p->chunks, p->n, NULL, true, &p->id, e) != 0)
            goto fail;
    }
    st = store_sql_prepare(s, "INSERT INTO files (oid, size, xet, created_ms) VALUES (?, ?, ?, ?)", e);
    if (!st)
        goto fail;
    sqlite3_bind_text(st, 1, oid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, w->size);
    sqlite3_bind_blob(st, 3, xet->bytes, XET_HASH_LEN, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, text_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        store_sql_fail(s, e, "file");
        goto fail;
    }
    st = store_sql_prepare(s, "INSERT INTO file_terms (oid, seq, pack, chunk_start, chunk_end,"
                              " raw_start, raw_len) VALUES (?, ?, ?, ?, ?, ?, ?)", e);
    if (!st)
        goto fail;
    for (size_t i = 0; i < w->nterms; i++) {
        const term *t = &w->terms[i];
        int64_t pack = t->pack > 0 ? t->pack : w->packs[-t->pack - 1].id;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, oid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, (int64_t)i);
        sqlite3_bind_int64(st, 3, pack);
        sqlite3_bind_int64(st, 4, t->start);
        sqlite3_bind_int64(st, 5, t->end);
        sqlite3_bind_int64(st, 6, (int64_t)t->raw_start);
        sqlite3_bind_int64(st, 7, (int64_t)t->raw_len);
        if (sqlite3_step(st) != SQLITE_DONE) {
            sqlite3_finalize(st);
            store_sql_fail(s, e, "file terms");
            goto fail;
        }
    }
    sqlite3_finalize(st);
    if (store_sql_exec(s, "COMMIT", e) != 0)
        goto fail;
    return 0;
fail:
    sqlite3_exec(s->sql, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int store_writer_finish(store_writer *w, const char *expected_oid, int64_t expected_size,
                        char oid_out[65], err *e)
{
    xet_hash xet;
    if (end_chunk(w, e) != 0 || wait_idle(w, e) != 0 || store_batch(w, w->filling, e) != 0 ||
        xet_file_hash(w->all, w->nall, &xet) != 0) {
        if (!err_is_set(e))
            err_set(e, 500, "", "out of memory");
        writer_free(w, true);
        return -1;
    }
    char oid[65];
    hash_final_hex(w->sha, oid);
    w->sha = NULL;
    if (expected_size >= 0 && w->size != expected_size) {
        err_set(e, 400, "", "size mismatch: received %lld bytes, expected %lld",
                (long long)w->size, (long long)expected_size);
        writer_free(w, true);
        return -1;
    }
    if (expected_oid && strcmp(oid, expected_oid) != 0) {
        err_set(e, 400, "", "sha256 mismatch: received content hashes to %s, expected %s", oid,
                expected_oid);
        writer_free(w, true);
        return -1;
    }
    /* Packs become durable files first; only then does the metadata point at them. */
    for (size_t i = 0; i < w->npacks; i++) {
        own_pack *p = &w->packs[i];
        char path[4200];
        store_pack_path(w->s, p->name, path, sizeof path);
        if (seal_pack(p, e) != 0 || rename(p->tmp, path) != 0) {
            if (!err_is_set(e))
                err_set(e, 500, "", "cannot place a pack: %s", strerror(errno));
            writer_free(w, true);
            return -1;
        }
        p->renamed = true;
    }
    if (w->npacks) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/packs/x", w->s->dir);
        path_fsync_parent(dir);
    }
    pthread_mutex_lock(&w->s->lock);
    int rc = register_file(w, oid, &xet, e);
    pthread_mutex_unlock(&w->s->lock);
    if (rc < 0) {
        writer_free(w, true);
        return -1;
    }
    if (oid_out)
        memcpy(oid_out, oid, 65);
    writer_free(w, rc == 1); /* rc 1: another upload stored it first; ours is not needed */
    return 0;
}

/* ---- reading ------------------------------------------------------------------------------ */

typedef struct reader_term {
    int64_t pack;
    char name[33];
    uint32_t start, end;
    uint64_t raw_start, raw_len;
    size_t seq;              /* the file's chunks before this term's first */
    pack_chunk *chunks;      /* loaded on first use */
    size_t nchunks;
    const uint8_t *map;      /* the whole pack, read-only, mapped on first use */
    size_t map_len;
} reader_term;

typedef struct checker checker;

struct store_reader {
    store *s;
    checker *check;          /* checking ahead of a long sequential read; NULL if none */
    char oid[65];
    int64_t size;
    reader_term *terms;
    size_t n;
    uint8_t *decoded;        /* one chunk */
    int64_t decoded_pack;
    uint64_t decoded_offset; /* record offset of the chunk in `decoded` */
    bool retried;
};

static void checker_stop(checker *k);

static void reader_drop_terms(store_reader *r)
{
    checker_stop(r->check);
    r->check = NULL;
    for (size_t i = 0; i < r->n; i++) {
        if (r->terms[i].map)
            munmap((void *)r->terms[i].map, r->terms[i].map_len);
        free(r->terms[i].chunks);
    }
    free(r->terms);
    r->terms = NULL;
    r->n = 0;
    r->decoded_pack = 0;
}

static int reader_load(store_reader *r, err *e)
{
    store *s = r->s;
    pthread_mutex_lock(&s->lock);
    int rc = -1;
    sqlite3_stmt *st = store_sql_prepare(s, "SELECT size FROM files WHERE oid = ?", e);
    if (st) {
        sqlite3_bind_text(st, 1, r->oid, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            r->size = sqlite3_column_int64(st, 0);
            rc = 0;
        } else if (step == SQLITE_DONE) {
            err_set(e, 404, "EntryNotFound", "object %s is not in the store", r->oid);
        } else {
            store_sql_fail(s, e, "file");
        }
        sqlite3_finalize(st);
    }
    if (rc == 0) {
        st = store_sql_prepare(s, "SELECT t.pack, p.name, t.chunk_start, t.chunk_end, t.raw_start,"
                                  " t.raw_len FROM file_terms t JOIN packs p ON p.id = t.pack"
                                  " WHERE t.oid = ? ORDER BY t.seq", e);
        if (!st)
            rc = -1;
        else
            sqlite3_bind_text(st, 1, r->oid, -1, SQLITE_STATIC);
        size_t cap = 0, seq = 0;
        while (st && sqlite3_step(st) == SQLITE_ROW) {
            if (r->n == cap) {
                cap = cap ? cap * 2 : 8;
                r->terms = realloc(r->terms, cap * sizeof *r->terms);
                if (!r->terms)
                    abort();
            }
            reader_term *t = &r->terms[r->n++];
            memset(t, 0, sizeof *t);
            t->pack = sqlite3_column_int64(st, 0);
            snprintf(t->name, sizeof t->name, "%s", (const char *)sqlite3_column_text(st, 1));
            t->start = (uint32_t)sqlite3_column_int64(st, 2);
            t->end = (uint32_t)sqlite3_column_int64(st, 3);
            t->raw_start = (uint64_t)sqlite3_column_int64(st, 4);
            t->raw_len = (uint64_t)sqlite3_column_int64(st, 5);
            t->seq = seq;
            seq += t->end - t->start;
        }
        sqlite3_finalize(st);
        uint64_t total = r->n ? r->terms[r->n - 1].raw_start + r->terms[r->n - 1].raw_len : 0;
        if (rc == 0 && total != (uint64_t)r->size)
            rc = err_set(e, 500, "", "object %s: its chunks add up to %llu bytes, not %lld",
                         r->oid, (unsigned long long)total, (long long)r->size);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

store_reader *store_reader_open(store *s, const char *oid, err *e)
{
    if (!text_is_hex(oid, 64)) {
        err_set(e, 400, "", "invalid object id");
        return NULL;
    }
    store_reader *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->s = s;
    memcpy(r->oid, oid, 65);
    r->decoded = malloc(XET_CHUNK_MAX);
    if (!r->decoded)
        abort();
    if (reader_load(r, e) != 0) {
        store_reader_close(r);
        return NULL;
    }
    return r;
}

int64_t store_reader_size(const store_reader *r) { return r->size; }

int store_reader_region(store_reader *r, int64_t offset, int64_t len, int *fd,
                        int64_t *file_offset)
{
    return 1; /* chunk records interleave headers with data: always copied out */
}

/* A pack is mapped whole and read in place: a chunk's record is checked where it lies and its
 * payload copied (or decoded) once, into the caller's buffer. Packs are immutable and gc
 * unlinks rather than truncates them, so a mapping stays valid for as long as the reader. */
static int term_ready(store *s, reader_term *t, err *e)
{
    if (!t->map) {
        char path[4200];
        store_pack_path(s, t->name, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return err_set(e, errno == ENOENT ? 410 : 500, "", "cannot open pack %s: %s",
                           t->name, strerror(errno));
        struct stat st = {0};
        void *map = MAP_FAILED;
        int saved = 0;
        if (fstat(fd, &st) != 0)
            saved = errno;
        else if (st.st_size > 0 && (map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED,
                                               fd, 0)) == MAP_FAILED)
            saved = errno;
        close(fd);
        if (map == MAP_FAILED)
            return err_set(e, 500, "", "cannot map pack %s: %s", t->name,
                           saved ? strerror(saved) : "empty file");
        t->map = map;
        t->map_len = (size_t)st.st_size;
    }
    if (!t->chunks) {
        pthread_mutex_lock(&s->lock);
        int rc = store_load_pack_chunks(s, t->pack, t->start, t->end, &t->chunks, &t->nchunks, e);
        pthread_mutex_unlock(&s->lock);
        if (rc != 0)
            return -1;
        if (t->nchunks != t->end - t->start)
            return err_set(e, 410, "", "pack %s changed under the reader", t->name);
    }
    return 0;
}

uint64_t store_record_check(const void *record, size_t len) { return record_xxh3(record, len); }

/* Whether a record lies inside its pack's mapping. */
static bool record_in_map(const reader_term *t, const pack_chunk *c)
{
    return c->length >= XET_CHUNK_HEADER_LEN &&
           c->length <= XET_CHUNK_HEADER_LEN + XET_CHUNK_MAX_COMPRESSED &&
           c->offset <= t->map_len && c->length <= t->map_len - c->offset;
}

/* Downloads check each record against its XXH3 (tens of GB/s) rather than re-hashing it with
 * BLAKE3: corruption is still caught before a byte is sent, at a fraction of the cost; fsck
 * checks the BLAKE3 hashes themselves. The record is checked in the mapping (unless a checker
 * did already: `checked`), then its payload copied (raw) or decoded into out while it is still
 * in cache. */
static int read_chunk(const reader_term *t, const pack_chunk *c, bool checked, uint8_t *out,
                      err *e)
{
    xet_chunk_header h;
    if (!record_in_map(t, c))
        return err_set(e, 500, "", "damaged pack %s: chunk record at %llu (length %u) is outside"
                       " the file", t->name, (unsigned long long)c->offset, c->length);
    const uint8_t *record = t->map + c->offset;
    if ((!checked && store_record_check(record, c->length) != c->check) ||
        xet_chunk_header_decode(record, &h, e) != 0 || h.uncompressed_len != c->raw)
        return err_set(e, 500, "", "damaged chunk record at %llu of pack %s",
                       (unsigned long long)c->offset, t->name);
    if (h.compression == XET_COMPRESSION_NONE && c->length == c->raw + XET_CHUNK_HEADER_LEN) {
        memcpy(out, record + XET_CHUNK_HEADER_LEN, c->raw);
        return 0;
    }
    if (xet_chunk_decode(&h, record + XET_CHUNK_HEADER_LEN, out, e) != 0)
        return err_set(e, 500, "", "damaged chunk record at %llu of pack %s",
                       (unsigned long long)c->offset, t->name);
    return 0;
}

/* Maps the page tables for the records about to be read in one call rather than a fault per
 * few pages (a no-op where the kernel lacks MADV_POPULATE_READ). */
static void prefault(const reader_term *t, uint64_t from, uint64_t to)
{
#ifdef MADV_POPULATE_READ
    uint64_t page = 4096, lo = from & ~(page - 1);
    if (to > t->map_len)
        to = t->map_len;
    if (to > lo)
        (void)madvise((void *)(t->map + lo), to - lo, MADV_POPULATE_READ);
#else
    (void)t, (void)from, (void)to;
#endif
}

/* ---- checking ahead ------------------------------------------------------------------------ */

/* A download runs on its connection's thread, which checks every record before copying it
 * out: a fifth of that thread's time when the file is large, while the machine's other cores
 * may idle. For a long sequential read a checker thread goes ahead of the reader, checks the
 * records it will copy next (with its own mappings and chunk lists: nothing is shared but the
 * marks) and marks each one found intact; the reader then only copies. A record the checker has
 * not reached, or found damaged, the reader checks itself as before, so it never waits for the
 * checker and damage is reported the same way. A mark names the record it vouches for (pack
 * offset, length and expected XXH3), so it can only ever vouch for that record. */
#define CHECK_MIN_BYTES (32 << 20)   /* files read without a checker below this */
#define CHECK_MIN_READ (256 << 10)   /* reads this long look like a download, not random access */
#define CHECK_AHEAD 32u              /* chunks the checker may be ahead of the reader (~2 MiB) */

struct checker {
    store *s;
    pthread_t thread;
    reader_term *terms;      /* copies of the reader's, with their own chunk lists and maps */
    size_t n;
    size_t nchunks;
    _Atomic uint64_t *marks; /* per chunk of the file: its record's tag once found intact */
    atomic_size_t reader_at; /* the chunk after the last one the reader copied */
    atomic_size_t reader_span; /* chunks the reader's last read took */
    atomic_bool stop;
    pthread_mutex_t mu;      /* with cv: the checker waits here when far enough ahead */
    pthread_cond_t cv;
};

static uint64_t record_tag(const pack_chunk *c)
{
    return (c->check ^ (c->offset * 0x9E3779B97F4A7C15u) ^ c->length) | 1;
}

static void checker_drop_term(reader_term *t)
{
    if (t->map)
        munmap((void *)t->map, t->map_len);
    free(t->chunks);
    t->map = NULL;
    t->chunks = NULL;
}

static void *checker_main(void *arg)
{
    checker *k = arg;
    pthread_setname_np(pthread_self(), "hearth-check");
    size_t at = 0, ti = 0;
    uint64_t populated = 0; /* of terms[ti]'s mapping */
    while (!atomic_load_explicit(&k->stop, memory_order_relaxed)) {
        size_t reader = atomic_load_explicit(&k->reader_at, memory_order_relaxed);
        if (at < reader) /* behind: skip what the reader is copying now */
            at = reader + atomic_load_explicit(&k->reader_span, memory_order_relaxed);
        if (at >= k->nchunks)
            break;
        if (at >= reader + CHECK_AHEAD) {
            pthread_mutex_lock(&k->mu);
            while (!atomic_load(&k->stop) && at >= atomic_load(&k->reader_at) + CHECK_AHEAD)
                pthread_cond_wait(&k->cv, &k->mu);
            pthread_mutex_unlock(&k->mu);
            continue;
        }
        while (ti + 1 < k->n && k->terms[ti + 1].seq <= at) {
            checker_drop_term(&k->terms[ti++]);
            populated = 0;
        }
        reader_term *t = &k->terms[ti];
        err e = ERR_INIT;
        if (term_ready(k->s, t, &e) != 0)
            break; /* the reader meets the same trouble and reports it */
        const pack_chunk *c = &t->chunks[at - t->seq];
        if (record_in_map(t, c)) {
            if (c->offset + c->length > populated) {
                populated = c->offset + (4u << 20);
                prefault(t, c->offset, populated);
            }
            if (store_record_check(t->map + c->offset, c->length) == c->check)
                atomic_store_explicit(&k->marks[at], record_tag(c), memory_order_release);
        }
        at++;
    }
    for (size_t i = 0; i < k->n; i++)
        checker_drop_term(&k->terms[i]);
    return NULL;
}

static void checker_free(checker *k)
{
    atomic_fetch_sub(&k->s->checkers, 1);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k->marks);
    free(k->terms);
    free(k);
}

/* Starts a checker for r, if the machine has a core to give it. */
static checker *checker_start(store_reader *r)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 2)
        return NULL;
    if (atomic_fetch_add(&r->s->checkers, 1) >= cores) {
        atomic_fetch_sub(&r->s->checkers, 1);
        return NULL;
    }
    checker *k = calloc(1, sizeof *k);
    if (!k)
        abort();
    k->s = r->s;
    k->n = r->n;
    k->terms = malloc(r->n * sizeof *k->terms);
    if (!k->terms)
        abort();
    for (size_t i = 0; i < r->n; i++) {
        k->terms[i] = r->terms[i];
        k->terms[i].chunks = NULL;
        k->terms[i].map = NULL;
    }
    const reader_term *last = r->n ? &r->terms[r->n - 1] : NULL;
    k->nchunks = last ? last->seq + (last->end - last->start) : 0;
    k->marks = calloc(k->nchunks ? k->nchunks : 1, sizeof *k->marks);
    if (!k->marks)
        abort();
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    if (pthread_create(&k->thread, NULL, checker_main, k) != 0) {
        checker_free(k);
        return NULL;
    }
    return k;
}

/* The reader has copied everything before chunk `at`, `span` chunks in its last read. */
static void checker_advance(checker *k, size_t at, size_t span)
{
    pthread_mutex_lock(&k->mu);
    atomic_store(&k->reader_span, span);
    atomic_store(&k->reader_at, at);
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

static bool checker_vouches(const checker *k, size_t seq, const pack_chunk *c)
{
    return k && seq < k->nchunks &&
           atomic_load_explicit(&k->marks[seq], memory_order_acquire) == record_tag(c);
}

static void checker_stop(checker *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&k->mu);
    atomic_store(&k->stop, true);
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
    checker_free(k);
}

static ssize_t pread_once(store_reader *r, uint8_t *out, size_t n, int64_t offset, err *e)
{
    if (offset >= r->size || n == 0)
        return 0;
    /* the term holding offset */
    size_t lo = 0, hi = r->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (r->terms[mid].raw_start <= (uint64_t)offset)
            lo = mid;
        else
            hi = mid;
    }
    /* Downloads move forward: packs behind the offset are unmapped (and mapped again should a
     * later range go back), so a reader of a file spread over hundreds of packs holds a few
     * mappings, not hundreds. */
    for (size_t ti = 0; ti < lo; ti++)
        if (r->terms[ti].map) {
            munmap((void *)r->terms[ti].map, r->terms[ti].map_len);
            r->terms[ti].map = NULL;
        }
    if (!r->check && !r->retried && r->size >= CHECK_MIN_BYTES && n >= CHECK_MIN_READ &&
        (uint64_t)r->size - (uint64_t)offset >= CHECK_MIN_BYTES)
        r->check = checker_start(r);
    size_t done = 0, first_seq = SIZE_MAX, next_seq = 0;
    for (size_t ti = lo; ti < r->n && done < n; ti++) {
        reader_term *t = &r->terms[ti];
        if (term_ready(r->s, t, e) != 0)
            return -1;
        uint64_t pos = t->raw_start;
        bool faulted = false;
        for (size_t ci = 0; ci < t->nchunks && done < n; ci++) {
            const pack_chunk *c = &t->chunks[ci];
            uint64_t want = (uint64_t)offset + done;
            if (pos + c->raw <= want) {
                pos += c->raw;
                continue;
            }
            if (!faulted) {
                /* records are contiguous in a term: about as many stored bytes as n */
                prefault(t, c->offset, c->offset + (n - done) + (n - done) / 64 + 4096);
                faulted = true;
            }
            uint64_t skip = want - pos;
            size_t take = c->raw - skip;
            if (take > n - done)
                take = n - done;
            bool checked = checker_vouches(r->check, t->seq + ci, c);
            if (skip == 0 && take == c->raw) {
                if (read_chunk(t, c, checked, out + done, e) != 0)
                    return -1;
            } else {
                if (r->decoded_pack != t->pack || r->decoded_offset != c->offset) {
                    if (read_chunk(t, c, checked, r->decoded, e) != 0)
                        return -1;
                    r->decoded_pack = t->pack;
                    r->decoded_offset = c->offset;
                }
                memcpy(out + done, r->decoded + skip, take);
            }
            done += take;
            pos += c->raw;
            if (first_seq == SIZE_MAX)
                first_seq = t->seq + ci;
            next_seq = t->seq + ci + 1;
        }
    }
    if (r->check && done)
        checker_advance(r->check, next_seq, next_seq - first_seq);
    return (ssize_t)done;
}

ssize_t store_reader_pread(store_reader *r, void *out, size_t n, int64_t offset)
{
    err e = ERR_INIT;
    ssize_t got = pread_once(r, out, n, offset, &e);
    if (got < 0 && e.status == 410 && !r->retried) {
        /* gc rewrote a pack after we looked the file up: look it up again, once */
        r->retried = true;
        reader_drop_terms(r);
        err_clear(&e);
        if (reader_load(r, &e) == 0)
            got = pread_once(r, out, n, offset, &e);
    }
    if (got < 0)
        log_error("store: reading %s at %lld: %s", r->oid, (long long)offset, e.message);
    return got;
}

void store_reader_close(store_reader *r)
{
    if (!r)
        return;
    reader_drop_terms(r);
    free(r->decoded);
    free(r);
}
