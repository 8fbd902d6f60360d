/* files — the whole-file backend of the content store: objects/ab/cd/<sha256>.
 *
 * Uploads stream into tmp/ under a random name; finish fsyncs, checks the hash and size,
 * then renames into place and fsyncs the directory. A crash before the rename leaves only a
 * temp file, which store_open sweeps.
 */
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct store {
    char *dir;
};

struct store_writer {
    store *s;
    int fd;
    char tmp[4096];
    hash_ctx *sha;
    int64_t size;
};

struct store_reader {
    int fd;
    int64_t size;
};

static void object_path(const store *s, const char *oid, char *out, size_t cap)
{
    snprintf(out, cap, "%s/objects/%.2s/%.2s/%s", s->dir, oid, oid + 2, oid);
}

store *store_open(const char *dir, bool recover, err *e)
{
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/tmp", dir);
    if (path_mkdirs(sub, 0755) != 0) {
        err_set(e, 500, "", "cannot create %s: %s", sub, strerror(errno));
        return NULL;
    }
    /* Temp files are uploads that never finished: nothing refers to them. */
    DIR *d = recover ? opendir(sub) : NULL;
    if (d) {
        struct dirent *ent;
        while ((ent = readdir(d)))
            if (ent->d_name[0] != '.')
                unlinkat(dirfd(d), ent->d_name, 0);
        closedir(d);
    }
    snprintf(sub, sizeof sub, "%s/objects", dir);
    path_mkdirs(sub, 0755);
    store *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->dir = strdup(dir);
    return s;
}

void store_close(store *s)
{
    if (!s)
        return;
    free(s->dir);
    free(s);
}

int store_stat(store *s, const char *oid, int64_t *size, err *e)
{
    if (!text_is_hex(oid, 64))
        return err_set(e, 400, "", "invalid object id '%.80s' (expected 64 hex digits)", oid);
    char path[4096];
    object_path(s, oid, path, sizeof path);
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? 1 : err_set(e, 500, "", "cannot stat %s: %s", path, strerror(errno));
    if (size)
        *size = st.st_size;
    return 0;
}

store_writer *store_writer_new(store *s, err *e)
{
    store_writer *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    uint8_t rnd[12];
    char hex[25];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, hex);
    snprintf(w->tmp, sizeof w->tmp, "%s/tmp/upload-%s", s->dir, hex);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        err_set(e, 500, "", "cannot create %s: %s", w->tmp, strerror(errno));
        free(w);
        return NULL;
    }
    w->s = s;
    w->sha = hash_sha256_new();
    return w;
}

int store_writer_write(store_writer *w, const void *data, size_t len, err *e)
{
    hash_update(w->sha, data, len);
    const char *p = data;
    while (len) {
        ssize_t n = write(w->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return err_set(e, errno == ENOSPC ? 507 : 500, "",
                           "cannot write upload: %s", strerror(errno));
        }
        p += n;
        len -= (size_t)n;
        w->size += n;
    }
    return 0;
}

int64_t store_writer_size(const store_writer *w) { return w->size; }

void store_writer_abort(store_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    unlink(w->tmp);
    hash_free(w->sha);
    free(w);
}

int store_writer_finish(store_writer *w, const char *expected_oid, int64_t expected_size,
                        char oid_out[65], err *e)
{
    char oid[65];
    hash_final_hex(w->sha, oid);
    w->sha = NULL;
    if (expected_size >= 0 && w->size != expected_size) {
        err_set(e, 400, "", "size mismatch: received %lld bytes, expected %lld",
                (long long)w->size, (long long)expected_size);
        store_writer_abort(w);
        return -1;
    }
    if (expected_oid && strcmp(oid, expected_oid) != 0) {
        err_set(e, 400, "", "sha256 mismatch: received content hashes to %s, expected %s", oid,
                expected_oid);
        store_writer_abort(w);
        return -1;
    }
    if (fsync(w->fd) != 0) {
        err_set(e, errno == ENOSPC ? 507 : 500, "", "cannot sync upload: %s", strerror(errno));
        store_writer_abort(w);
        return -1;
    }
    close(w->fd);
    w->fd = -1;
    char final[4096];
    object_path(w->s, oid, final, sizeof final);
    struct stat st;
    if (stat(final, &st) == 0) {
        unlink(w->tmp); /* already stored: keep one copy */
    } else {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/objects/%.2s/%.2s", w->s->dir, oid, oid + 2);
        if (path_mkdirs(dir, 0755) != 0 || rename(w->tmp, final) != 0) {
            err_set(e, 500, "", "cannot store object %s: %s", oid, strerror(errno));
            store_writer_abort(w);
            return -1;
        }
        path_fsync_parent(final);
    }
    if (oid_out)
        memcpy(oid_out, oid, 65);
    free(w);
    return 0;
}

store_reader *store_reader_open(store *s, const char *oid, err *e)
{
    if (!text_is_hex(oid, 64)) {
        err_set(e, 400, "", "invalid object id");
        return NULL;
    }
    char path[4096];
    object_path(s, oid, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            err_set(e, 404, "EntryNotFound", "object %s is not in the store", oid);
        else
            err_set(e, 500, "", "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    fstat(fd, &st);
    store_reader *r = malloc(sizeof *r);
    if (!r)
        abort();
    r->fd = fd;
    r->size = st.st_size;
    return r;
}

int64_t store_reader_size(const store_reader *r) { return r->size; }

int store_reader_region(store_reader *r, int64_t offset, int64_t len, int *fd,
                        int64_t *file_offset)
{
    if (offset < 0 || len < 0 || offset + len > r->size)
        return 1;
    *fd = dup(r->fd);
    if (*fd < 0)
        return 1;
    *file_offset = offset;
    return 0;
}

ssize_t store_reader_pread(store_reader *r, void *out, size_t n, int64_t offset)
{
    return pread(r->fd, out, n, offset);
}

void store_reader_close(store_reader *r)
{
    if (!r)
        return;
    close(r->fd);
    free(r);
}

/* ---- not yet implemented by this backend (the chunk store replaces it) --------------------- */

static int unsupported(err *e)
{
    return err_set(e, 501, "", "this store backend does not support Xet");
}

int store_file_xet_hash(store *s, const char *oid, xet_hash *out, err *e) { return 1; }
int store_file_by_xet_hash(store *s, const xet_hash *file, char oid_out[65], int64_t *size,
                           err *e)
{
    return 1;
}
int store_xorb_stat(store *s, const xet_hash *xorb, uint64_t *serialized_len, err *e) { return 1; }
int store_xorb_put(store *s, const xet_hash *xorb, const uint8_t *data, size_t len,
                   bool *inserted, err *e)
{
    return unsupported(e);
}
int store_xorb_chunks(store *s, const xet_hash *xorb, xet_chunk **chunks, size_t *n, err *e)
{
    return unsupported(e);
}
int store_file_register(store *s, const char *oid, const xet_hash *file_hash, uint64_t size,
                        const xet_shard_term *terms, size_t n, err *e)
{
    return unsupported(e);
}
int store_reconstruct(store *s, const xet_hash *file, uint64_t first, uint64_t last,
                      store_reconstruction *out, err *e)
{
    return unsupported(e);
}
void store_reconstruction_free(store_reconstruction *r) {}
int store_xorb_region(store *s, const xet_hash *xorb, uint64_t start, uint64_t end, int *fd,
                      int64_t *file_offset, err *e)
{
    return unsupported(e);
}
int store_chunk_shard(store *s, const xet_hash *chunk, buf *out, err *e) { return 1; }
int store_get_stats(store *s, store_stats *out, err *e) { return unsupported(e); }
int store_files_stats(store *s, const char *const *oids, size_t n, int64_t *logical,
                      int64_t *unique_stored, err *e)
{
    return unsupported(e);
}
int store_gc(store *s, store_live_fn live, void *ctx, int64_t grace_ms, double min_dead,
             store_gc_result *out, err *e)
{
    return unsupported(e);
}
int64_t store_fsck(store *s, store_report_fn report, void *ctx, err *e) { return unsupported(e); }
