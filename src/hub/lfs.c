/* lfs — the git-lfs API (spec §6.2): the batch API with basic and multipart transfers, the
 * streaming object uploads it hands out, verify, and locks.
 *
 * Upload URLs are signed (bound to the repo, the object, its size and the caller that asked
 * for them) because Python's LFS client sends no Authorization with them. Bytes stream
 * straight into the store while being hashed; the object becomes visible only once its
 * SHA-256 and size match, and is then linked to the repo.
 */
#include "hub/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UPLOAD_TTL_SECONDS (24 * 3600)
#define LFS_CONTENT_TYPE "application/vnd.git-lfs+json"

static void reply_lfs(http_request *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    http_reply_bytes(req, status, LFS_CONTENT_TYPE, text, strlen(text));
    free(text);
}

static void objects_url(http_request *req, hub_call *call, buf *out)
{
    hub_repo_url(req, call->type, call->ns, call->name, out);
    buf_puts(out, ".git/info/lfs/objects");
}

/* git asks for credentials only when a 401 says how. */
static void add_basic_challenge(http_request *req)
{
    http_add_header(req, "WWW-Authenticate", "Basic realm=\"Hearth\"");
}


/* ---- LFS batch --------------------------------------------------------------------------- */

static bool offers(json_t *transfers, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(transfers, i, t) if (json_is_string(t) && !strcmp(json_string_value(t), name))
        return true;
    return false;
}

static json_t *upload_actions(http_request *req, hub_call *call, const char *oid, int64_t size,
                              bool multipart)
{
    hub *h = call->hub;
    hub_grant grant;
    hub_grant_of(call, &grant);
    buf base = BUF_INIT, href = BUF_INIT, verify = BUF_INIT;
    objects_url(req, call, &base);
    json_t *header = json_object();
    if (multipart) {
        /* HF's multipart extension: part URLs under zero-padded keys, chunk_size, and the
         * completion URL as the upload href. */
        int64_t part_size = h->multipart_part_size;
        int64_t parts = (size + part_size - 1) / part_size;
        char chunk[32];
        snprintf(chunk, sizeof chunk, "%lld", (long long)part_size);
        json_object_set_new(header, "chunk_size", json_string(chunk));
        for (int64_t p = 1; p <= parts; p++) {
            buf part = BUF_INIT;
            char key[24], sign_oid[96];
            snprintf(key, sizeof key, "%05lld", (long long)p);
            snprintf(sign_oid, sizeof sign_oid, "%s:%lld", oid, (long long)p);
            buf_printf(&part, "%s/upload/%s/part/%lld", base.data, oid, (long long)p);
            hub_grant_query(h, "part", &grant, sign_oid, size, UPLOAD_TTL_SECONDS, &part);
            json_object_set_new(header, key, json_string(part.data));
            buf_free(&part);
        }
        buf_printf(&href, "%s/complete/%s", base.data, oid);
        hub_grant_query(h, "complete", &grant, oid, size, UPLOAD_TTL_SECONDS, &href);
    } else {
        buf_printf(&href, "%s/upload/%s", base.data, oid);
        hub_grant_query(h, "upload", &grant, oid, size, UPLOAD_TTL_SECONDS, &href);
    }
    buf_printf(&verify, "%s/verify", base.data);
    hub_grant_query(h, "verify", &grant, oid, size, UPLOAD_TTL_SECONDS, &verify);
    json_t *actions = json_pack("{s:{s:s, s:o, s:i}, s:{s:s, s:{}}}", "upload", "href", href.data,
                                "header", header, "expires_in", UPLOAD_TTL_SECONDS, "verify",
                                "href", verify.data, "header");
    buf_free(&base);
    buf_free(&href);
    buf_free(&verify);
    return actions;
}

void hub_lfs_batch(http_request *req, hub_call *call)
{
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    const char *operation = json_string_value(json_object_get(body, "operation"));
    bool upload = operation && !strcmp(operation, "upload");
    if (!operation || (!upload && strcmp(operation, "download") != 0)) {
        json_decref(body);
        http_reply_errorf(req, 422, "", "operation must be \"upload\" or \"download\"");
        return;
    }
    if (upload && !call->caller.authenticated)
        add_basic_challenge(req);
    if ((upload ? hub_load_repo(req, call, true) : hub_load_repo_files(req, call)) != 0) {
        json_decref(body);
        return;
    }
    json_t *objects = json_object_get(body, "objects");
    json_t *transfers = json_object_get(body, "transfers");
    bool can_multipart = offers(transfers, "multipart");
    /* Xet only for clients that list it (npm client, Py 0.30-1.19 with hf_xet). */
    bool xet = upload && offers(transfers, "xet") && hub_xet_enabled(call->hub);
    json_t *out = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(objects, i, o)
    {
        const char *oid = json_string_value(json_object_get(o, "oid"));
        json_t *size_v = json_object_get(o, "size");
        int64_t size = json_is_integer(size_v) ? json_integer_value(size_v) : -1;
        json_t *item = json_pack("{s:s, s:I}", "oid", oid ? oid : "", "size", (json_int_t)size);
        if (!oid || !text_is_hex(oid, 64) || size < 0) {
            json_object_set_new(item, "error", json_pack("{s:i, s:s}", "code", 422, "message",
                                                         "invalid oid or size"));
            json_array_append_new(out, item);
            continue;
        }
        int64_t have_size = -1;
        err e = ERR_INIT;
        bool have = store_stat(call->hub->store, oid, &have_size, &e) == 0 &&
                    db_repo_object_has(call->hub->db, call->repo.id, oid, &e) == 0;
        if (upload) {
            if (!have || have_size != size) {
                bool multipart = can_multipart && size >= call->hub->multipart_threshold;
                json_object_set_new(item, "authenticated", json_true());
                json_object_set_new(item, "actions",
                                    xet ? hub_xet_upload_actions(req, call)
                                        : upload_actions(req, call, oid, size, multipart));
            }
        } else if (!have) {
            json_object_set_new(item, "error", json_pack("{s:i, s:s}", "code", 404, "message",
                                                         "Object does not exist"));
        } else {
            buf href = BUF_INIT;
            objects_url(req, call, &href);
            buf_printf(&href, "/download/%s", oid);
            hub_grant grant;
            hub_grant_of(call, &grant);
            hub_grant_query(call->hub, "download", &grant, oid, have_size, UPLOAD_TTL_SECONDS,
                            &href);
            json_object_set_new(item, "authenticated", json_true());
            json_object_set_new(item, "actions",
                                json_pack("{s:{s:s, s:{}, s:i}}", "download", "href", href.data,
                                          "header", "expires_in", UPLOAD_TTL_SECONDS));
            buf_free(&href);
        }
        json_array_append_new(out, item);
    }
    json_decref(body);
    reply_lfs(req, 200, json_pack("{s:s, s:o, s:s}", "transfer", xet ? "xet" : "basic", "objects", out,
                                  "hash_algo", "sha256"));
}

void hub_lfs_verify(http_request *req, hub_call *call)
{
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    const char *oid = json_string_value(json_object_get(body, "oid"));
    int64_t size = json_integer_value(json_object_get(body, "size"));
    char oid_copy[65] = "";
    if (oid && text_is_hex(oid, 64))
        memcpy(oid_copy, oid, 65);
    json_decref(body);
    /* Signed verify URLs need no token; otherwise the caller must be able to read. */
    err e = ERR_INIT;
    bool is_signed = http_query(req, "sig") != NULL;
    if (is_signed) {
        if (!path_is_valid_repo_name(call->ns) || !path_is_valid_repo_name(call->name) ||
            db_repo_get(call->hub->db, call->type, call->ns, call->name, &call->repo, &e) != 0) {
            http_reply_errorf(req, 404, "RepoNotFound", "Repository not found");
            return;
        }
        call->have_repo = true;
        if (hub_grant_check_url(req, call, "verify", oid_copy, size, false) != 0)
            return;
    } else if (hub_load_repo(req, call, false) != 0) {
        return;
    }
    int64_t have_size;
    if (!oid_copy[0] || store_stat(call->hub->store, oid_copy, &have_size, &e) != 0 ||
        have_size != size || db_repo_object_has(call->hub->db, call->repo.id, oid_copy, &e) != 0) {
        http_reply_errorf(req, 404, "", "Object %s was not uploaded (or has another size)",
                          oid_copy);
        return;
    }
    reply_lfs(req, 200, json_pack("{s:s, s:I}", "oid", oid_copy, "size", (json_int_t)size));
}

void hub_lfs_locks(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, false) != 0)
        return;
    const char *path = http_path(req);
    if (text_ends_with(path, "/locks/verify"))
        reply_lfs(req, 200, json_pack("{s:[], s:[]}", "ours", "theirs"));
    else if (!strcmp(http_method(req), "GET"))
        reply_lfs(req, 200, json_pack("{s:[]}", "locks"));
    else
        http_reply_errorf(req, 501, "", "file locking is not supported by this server");
}

/* ---- streaming object uploads ------------------------------------------------------------
 *
 * A whole object (PUT .../upload/<oid>) streams into a store writer and is finished when the
 * body ends.
 *
 * Multipart (HF's extension: PUT .../upload/<oid>/part/<n>, then POST .../complete/<oid>):
 * each object being uploaded has one store writer, kept in memory between the parts' requests
 * (hub_multipart, keyed by repo uid and oid). The part the writer waits for streams straight
 * into it, so the chunker and SHA-256 run on as the bytes arrive and completion only finishes
 * the writer: huggingface_hub sends the parts one after the other in order, and then nothing
 * is written twice. A part that arrives early (the npm client sends five at a time) is spooled
 * to DATA/uploads/<uid>-<oid>/part-NNNNN and fed to the writer, then deleted, when its turn
 * comes. Before a part streams in the writer is marked (store_writer_mark), and a part that
 * fails (the client goes away, too many or too few bytes) is rewound out of it: a retried part
 * then goes in as if the first try had never happened. A part that arrives again after it was
 * taken in is read and dropped (the object's SHA-256 at completion decides anyway). Nothing is
 * visible before completion checks SHA-256 and size.
 *
 * At most MULTIPART_OPEN uploads are open at a time (each holds a writer's buffers, ~48 MiB);
 * one idle for MULTIPART_IDLE_MS is dropped when room is needed, and a server restart drops
 * them all (and their spooled parts, at start): the client's completion then fails with 400,
 * and it must upload the object again. */

#define MULTIPART_OPEN 16
#define MULTIPART_IDLE_MS (3600 * 1000)

typedef struct mp_upload mp_upload;
struct mp_upload {
    mp_upload *next_upload;
    char uid[25];
    char oid[65];
    int64_t size;
    int64_t nparts;
    store_writer *writer;
    int64_t next_part;   /* the part the writer waits for; nparts + 1 once all are in */
    bool feeding;        /* a thread is writing into the writer */
    bool *spooled;       /* [nparts + 1]: part n waits in the spool directory */
    int64_t used_ms;     /* last activity */
    int refs;            /* requests holding it */
    bool dropped;        /* out of the list; freed by the last request */
};

struct hub_multipart {
    pthread_mutex_t mu;
    mp_upload *uploads;
    size_t open;
};

static void mp_spool_dir(const hub *h, const char *uid, const char *oid, buf *out)
{
    data_path(out, h->data_dir, DATA_UPLOADS);
    buf_printf(out, "/%s-%s", uid, oid);
}

static void mp_spool_path(const hub *h, const mp_upload *u, int64_t part, buf *out)
{
    mp_spool_dir(h, u->uid, u->oid, out);
    buf_printf(out, "/part-%05lld", (long long)part);
}

/* Spooled parts of uploads that a restart ended: "<24 hex>-<64 hex>" directories. */
static void mp_remove_stale(const hub *h)
{
    buf dir = BUF_INIT;
    data_path(&dir, h->data_dir, DATA_UPLOADS);
    DIR *d = opendir(dir.data);
    struct dirent *ent;
    while (d && (ent = readdir(d))) {
        const char *n = ent->d_name;
        if (strlen(n) != 24 + 1 + 64 || n[24] != '-' || !text_is_hex(n, 24) ||
            !text_is_hex(n + 25, 64))
            continue;
        buf p = BUF_INIT;
        buf_printf(&p, "%s/%s", dir.data, n);
        path_remove_tree(p.data);
        buf_free(&p);
    }
    if (d)
        closedir(d);
    buf_free(&dir);
}

hub_multipart *hub_multipart_open(hub *h, bool recover)
{
    hub_multipart *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    pthread_mutex_init(&m->mu, NULL);
    if (recover)
        mp_remove_stale(h);
    return m;
}

static void mp_free(hub *h, mp_upload *u)
{
    store_writer_abort(u->writer);
    buf dir = BUF_INIT;
    mp_spool_dir(h, u->uid, u->oid, &dir);
    path_remove_tree(dir.data);
    buf_free(&dir);
    free(u->spooled);
    free(u);
}

/* Takes u out of the list (lock held); freed now or by its last request. */
static void mp_drop_locked(hub *h, mp_upload *u)
{
    hub_multipart *m = h->multipart;
    for (mp_upload **p = &m->uploads; *p; p = &(*p)->next_upload)
        if (*p == u) {
            *p = u->next_upload;
            m->open--;
            break;
        }
    u->dropped = true;
    if (!u->refs)
        mp_free(h, u);
}

void hub_multipart_close(hub *h)
{
    hub_multipart *m = h->multipart;
    if (!m)
        return;
    while (m->uploads)
        mp_drop_locked(h, m->uploads);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* The open upload of (uid, oid), or a new one; NULL + e when none can be opened. The caller
 * holds a reference (mp_release). */
static mp_upload *mp_acquire(hub *h, const char *uid, const char *oid, int64_t size, err *e)
{
    hub_multipart *m = h->multipart;
    int64_t now = text_now_ms();
    pthread_mutex_lock(&m->mu);
    mp_upload *u = m->uploads;
    while (u && (strcmp(u->uid, uid) || strcmp(u->oid, oid)))
        u = u->next_upload;
    if (u && u->size != size) {
        pthread_mutex_unlock(&m->mu);
        err_set(e, 409, "", "another upload of this object, of another size, is in progress");
        return NULL;
    }
    for (mp_upload *v = m->uploads, *next; v; v = next) {
        next = v->next_upload;
        if (v != u && !v->refs && now - v->used_ms > MULTIPART_IDLE_MS)
            mp_drop_locked(h, v); /* expired: its client went away */
    }
    if (!u) {
        store_writer *w = m->open < MULTIPART_OPEN ? store_writer_new(h->store, e) : NULL;
        if (!w) {
            pthread_mutex_unlock(&m->mu);
            if (!err_is_set(e))
                err_set(e, 503, "", "too many multipart uploads in progress; try again later");
            return NULL;
        }
        u = calloc(1, sizeof *u);
        if (!u)
            abort();
        snprintf(u->uid, sizeof u->uid, "%s", uid);
        snprintf(u->oid, sizeof u->oid, "%s", oid);
        u->size = size;
        u->nparts = (size + h->multipart_part_size - 1) / h->multipart_part_size;
        u->writer = w;
        store_writer_expect(w, size);
        u->next_part = 1;
        u->spooled = calloc((size_t)u->nparts + 2, sizeof *u->spooled);
        if (!u->spooled)
            abort();
        buf dir = BUF_INIT;
        mp_spool_dir(h, uid, oid, &dir);
        path_remove_tree(dir.data); /* left by an upload dropped while a part was spooling */
        buf_free(&dir);
        u->next_upload = m->uploads;
        m->uploads = u;
        m->open++;
    }
    u->refs++;
    u->used_ms = now;
    pthread_mutex_unlock(&m->mu);
    return u;
}

static void mp_release(hub *h, mp_upload *u)
{
    pthread_mutex_lock(&h->multipart->mu);
    u->used_ms = text_now_ms();
    bool free_it = --u->refs == 0 && u->dropped;
    pthread_mutex_unlock(&h->multipart->mu);
    if (free_it)
        mp_free(h, u);
}

/* Feeds one spooled part into the writer. */
static int mp_feed_spooled(hub *h, mp_upload *u, int64_t part, err *e)
{
    buf path = BUF_INIT;
    mp_spool_path(h, u, part, &path);
    int fd = open(path.data, O_RDONLY | O_CLOEXEC);
    int rc = fd < 0 ? err_set(e, 500, "", "cannot read part %lld: %s", (long long)part,
                              strerror(errno))
                    : 0;
    uint8_t *chunk = rc ? NULL : malloc(1 << 20);
    ssize_t n = 0;
    while (rc == 0 && (n = read(fd, chunk, 1 << 20)) > 0)
        rc = store_writer_write(u->writer, chunk, (size_t)n, e);
    if (rc == 0 && n < 0)
        rc = err_set(e, 500, "", "cannot read part %lld: %s", (long long)part, strerror(errno));
    free(chunk);
    if (fd >= 0)
        close(fd);
    unlink(path.data);
    buf_free(&path);
    return rc;
}

/* The thread that feeds the writer (u->feeding) is done with its part (took_part: the part
 * went in): the parts that wait spooled go in after it, then the writer is free again. A
 * spooled part that cannot be fed drops the upload (the client was told it arrived). */
static void mp_fed(hub *h, mp_upload *u, bool took_part)
{
    hub_multipart *m = h->multipart;
    pthread_mutex_lock(&m->mu);
    if (took_part)
        u->next_part++;
    while (!u->dropped && u->spooled[u->next_part]) {
        int64_t part = u->next_part;
        u->spooled[part] = false;
        pthread_mutex_unlock(&m->mu);
        err e = ERR_INIT;
        int rc = mp_feed_spooled(h, u, part, &e);
        pthread_mutex_lock(&m->mu);
        if (rc != 0) {
            log_warn("multipart upload of %s: %s; the upload is dropped", u->oid, e.message);
            mp_drop_locked(h, u);
            break;
        }
        u->next_part++;
    }
    u->feeding = false;
    pthread_mutex_unlock(&m->mu);
}

typedef enum { PART_STREAM = 1, PART_SPOOL, PART_AGAIN } part_mode;

typedef struct upload_state {
    hub *hub;
    store_writer *writer;     /* whole objects */
    int64_t expected_size;    /* of the object, or of the part */
    int64_t received;
    bool done;
    /* multipart parts */
    mp_upload *mp;
    int64_t part;
    part_mode mode;
    int part_fd;              /* PART_SPOOL */
    char part_tmp[4096];
} upload_state;

static void upload_state_free(void *p)
{
    upload_state *u = p;
    if (!u)
        return;
    if (!u->mp) {
        if (!u->done)
            store_writer_abort(u->writer);
        free(u);
        return;
    }
    hub *h = u->hub;
    if (u->part_fd >= 0) {
        close(u->part_fd);
        if (!u->done)
            unlink(u->part_tmp);
    }
    if (u->mode == PART_STREAM && !u->done) {
        /* The part failed: out of the writer with it. */
        err e = ERR_INIT;
        if (store_writer_rewind(u->mp->writer, &e) != 0) {
            log_warn("multipart upload of %s: %s; the upload is dropped", u->mp->oid, e.message);
            pthread_mutex_lock(&h->multipart->mu);
            if (!u->mp->dropped)
                mp_drop_locked(h, u->mp);
            pthread_mutex_unlock(&h->multipart->mu);
        }
        /* A copy of this part may have been spooled meanwhile (a retry while this one hung). */
        mp_fed(h, u->mp, false);
    }
    mp_release(h, u->mp);
    free(u);
}

static int upload_chunk(http_request *req, const char *data, size_t len, void *ctx)
{
    hub_call *call = ctx;
    upload_state *u = call->state;
    err e = ERR_INIT;
    if (u->received + (int64_t)len > u->expected_size) {
        http_reply_errorf(req, 400, "", "%s is larger than the announced %lld bytes",
                          u->mp ? "the part" : "the upload", (long long)u->expected_size);
        return -1;
    }
    u->received += (int64_t)len;
    store_writer *w = u->mp ? (u->mode == PART_STREAM ? u->mp->writer : NULL) : u->writer;
    if (w) {
        if (store_writer_write(w, data, len, &e) != 0) {
            http_reply_error(req, &e);
            return -1;
        }
        return 0;
    }
    while (u->mode == PART_SPOOL && len) {
        ssize_t n = write(u->part_fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            http_reply_errorf(req, errno == ENOSPC ? 507 : 500, "", "cannot store part: %s",
                              strerror(errno));
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static void part_finish(http_request *req, hub_call *call)
{
    upload_state *u = call->state;
    hub *h = call->hub;
    mp_upload *mp = u->mp;
    if (u->received != u->expected_size) {
        http_reply_errorf(req, 400, "", "part %lld has %lld bytes, expected %lld",
                          (long long)u->part, (long long)u->received, (long long)u->expected_size);
        return; /* upload_state_free rewinds or removes it */
    }
    if (u->mode == PART_SPOOL) {
        buf final = BUF_INIT;
        mp_spool_path(h, mp, u->part, &final);
        int rc = rename(u->part_tmp, final.data);
        buf_free(&final);
        if (rc != 0) {
            http_reply_errorf(req, 500, "", "cannot store part: %s", strerror(errno));
            return;
        }
        u->done = true;
        pthread_mutex_lock(&h->multipart->mu);
        mp->spooled[u->part] = true;
        /* The writer reached this part while it was arriving: feed it (and what follows). */
        bool feed = !mp->feeding && !mp->dropped && mp->next_part == u->part;
        if (feed)
            mp->feeding = true;
        pthread_mutex_unlock(&h->multipart->mu);
        if (feed)
            mp_fed(h, mp, false);
    } else {
        u->done = true;
        if (u->mode == PART_STREAM)
            mp_fed(h, mp, true);
    }
    char etag[96];
    snprintf(etag, sizeof etag, "\"%.16s-%lld\"", mp->oid, (long long)u->part);
    http_add_header(req, "ETag", etag);
    http_reply_json(req, 200, json_object());
}

static void upload_finish(http_request *req, hub_call *call)
{
    upload_state *u = call->state;
    err e = ERR_INIT;
    store_writer *w = u->writer;
    u->writer = NULL;
    if (store_writer_finish(w, call->extra, u->expected_size, NULL, &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    u->done = true;
    if (db_repo_object_add(call->hub->db, call->repo.id, call->extra, u->expected_size, &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    log_info("stored LFS object %s (%lld bytes)", call->extra, (long long)u->expected_size);
    http_reply_json(req, 200, json_object());
}

/* A part's request: where its bytes go. 0, or -1 with the reply sent. */
static int part_begin(http_request *req, hub_call *call, upload_state *u, int64_t size)
{
    hub *h = call->hub;
    err e = ERR_INIT;
    int64_t nparts = (size + h->multipart_part_size - 1) / h->multipart_part_size;
    if (u->part > nparts) {
        http_reply_errorf(req, 400, "", "part %lld of an object of %lld parts", (long long)u->part,
                          (long long)nparts);
        return -1;
    }
    u->expected_size = u->part < nparts ? h->multipart_part_size
                                        : size - (nparts - 1) * h->multipart_part_size;
    u->mp = mp_acquire(h, call->repo.uid, call->extra, size, &e);
    if (!u->mp) {
        http_reply_error(req, &e);
        return -1;
    }
    mp_upload *mp = u->mp;
    pthread_mutex_lock(&h->multipart->mu);
    if (u->part < mp->next_part) {
        u->mode = PART_AGAIN;
    } else if (u->part == mp->next_part && !mp->feeding) {
        u->mode = PART_STREAM;
        mp->feeding = true;
    } else {
        u->mode = PART_SPOOL;
    }
    pthread_mutex_unlock(&h->multipart->mu);
    if (u->mode == PART_STREAM && store_writer_mark(mp->writer, &e) != 0) {
        /* The writer failed earlier (storage): this upload cannot go on. */
        pthread_mutex_lock(&h->multipart->mu);
        mp->feeding = false;
        if (!mp->dropped)
            mp_drop_locked(h, mp);
        pthread_mutex_unlock(&h->multipart->mu);
        u->mode = PART_AGAIN;
        http_reply_error(req, &e);
        return -1;
    }
    if (u->mode == PART_SPOOL) {
        buf dir = BUF_INIT;
        mp_spool_dir(h, mp->uid, mp->oid, &dir);
        path_mkdirs(dir.data, 0755);
        uint8_t rnd[6];
        char tag[13];
        hash_random(rnd, sizeof rnd);
        hex_encode(rnd, sizeof rnd, tag);
        snprintf(u->part_tmp, sizeof u->part_tmp, "%.4000s/part-%05lld.tmp-%s", dir.data,
                 (long long)u->part, tag);
        buf_free(&dir);
        u->part_fd = open(u->part_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (u->part_fd < 0) {
            http_reply_errorf(req, 500, "", "cannot store part: %s", strerror(errno));
            return -1;
        }
    }
    call->route = part_finish;
    return 0;
}

int hub_lfs_upload_begin(http_request *req, hub_call *call, bool part)
{
    hub *h = call->hub;
    err e = ERR_INIT;
    if (!path_is_valid_repo_name(call->ns) || !path_is_valid_repo_name(call->name) ||
        db_repo_get(h->db, call->type, call->ns, call->name, &call->repo, &e) != 0) {
        http_reply_errorf(req, 404, "RepoNotFound", "Repository not found");
        return 0;
    }
    call->have_repo = true;
    int64_t size = text_parse_i64(http_query(req, "size"));
    int64_t part_no = part ? text_parse_i64(call->rev) : 0;
    char sign_oid[96];
    if (part)
        snprintf(sign_oid, sizeof sign_oid, "%s:%lld", call->extra, (long long)part_no);
    else
        snprintf(sign_oid, sizeof sign_oid, "%s", call->extra);
    if (!text_is_hex(call->extra, 64) || size < 0 || (part && part_no < 1)) {
        http_reply_errorf(req, 403, "", "invalid upload link; ask the LFS batch API for a new one");
        return 0;
    }
    if (hub_grant_check_url(req, call, part ? "part" : "upload", sign_oid, size, true) != 0)
        return 0;
    upload_state *u = calloc(1, sizeof *u);
    if (!u)
        abort();
    u->hub = h;
    u->part_fd = -1;
    u->expected_size = size;
    u->part = part_no;
    call->state = u;
    call->free_state = upload_state_free;
    if (part) {
        if (part_begin(req, call, u, size) != 0)
            return 0;
    } else {
        u->writer = store_writer_new(h->store, &e);
        if (!u->writer) {
            http_reply_error(req, &e);
            return 0;
        }
        store_writer_expect(u->writer, u->expected_size);
        call->route = upload_finish;
    }
    call->handler.offload = true; /* fsync and the metadata transaction; feeding spooled parts */
    call->handler.body_chunk = upload_chunk;
    return 0;
}

void hub_lfs_multipart_complete(http_request *req, hub_call *call)
{
    hub *h = call->hub;
    err e = ERR_INIT;
    if (!path_is_valid_repo_name(call->ns) || !path_is_valid_repo_name(call->name) ||
        db_repo_get(h->db, call->type, call->ns, call->name, &call->repo, &e) != 0) {
        http_reply_errorf(req, 404, "RepoNotFound", "Repository not found");
        return;
    }
    call->have_repo = true;
    int64_t size = text_parse_i64(http_query(req, "size"));
    if (!text_is_hex(call->extra, 64)) {
        http_reply_errorf(req, 403, "", "invalid completion link");
        return;
    }
    if (hub_grant_check_url(req, call, "complete", call->extra, size, true) != 0)
        return;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    size_t nparts = json_array_size(json_object_get(body, "parts"));
    json_decref(body);
    int64_t expected_parts = (size + h->multipart_part_size - 1) / h->multipart_part_size;
    if ((int64_t)nparts != expected_parts) {
        http_reply_errorf(req, 400, "", "expected %lld parts, got %zu", (long long)expected_parts,
                          nparts);
        return;
    }
    hub_multipart *m = h->multipart;
    pthread_mutex_lock(&m->mu);
    mp_upload *u = m->uploads;
    while (u && (strcmp(u->uid, call->repo.uid) || strcmp(u->oid, call->extra)))
        u = u->next_upload;
    /* A part still going in (a request whose client went away and that the server has not
     * noticed yet, its retry spooled) is not waited for here, on a thread that may be the
     * one to notice it: the client is told which part is missing and may complete again. */
    store_writer *w = NULL;
    if (!u) {
        err_set(&e, 400, "", "no upload of this object is in progress (the server restarted, or it "
                             "was idle too long); upload it again");
    } else if (u->size != size) {
        err_set(&e, 409, "", "another upload of this object, of another size, is in progress");
    } else if (u->feeding || u->next_part <= u->nparts) {
        err_set(&e, 400, "", "part %lld was never uploaded", (long long)u->next_part);
    } else {
        w = u->writer;
        u->writer = NULL;
        mp_drop_locked(h, u);
    }
    pthread_mutex_unlock(&m->mu);
    if (w && store_writer_finish(w, call->extra, size, NULL, &e) == 0 &&
        db_repo_object_add(h->db, call->repo.id, call->extra, size, &e) == 0) {
        log_info("stored LFS object %s from %zu parts", call->extra, nparts);
        http_reply_json(req, 200, json_object());
    } else {
        http_reply_error(req, &e);
    }
}
