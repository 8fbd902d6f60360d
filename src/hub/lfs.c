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

/* ---- streaming object uploads ------------------------------------------------------------ */

typedef struct upload_state {
    store_writer *writer;     /* whole objects */
    int part_fd;              /* multipart parts */
    char part_tmp[4096];
    char part_final[4096];
    hash_ctx *part_hash;
    int64_t part_size;
    int64_t expected_size;
    bool done;
} upload_state;

static void upload_state_free(void *p)
{
    upload_state *u = p;
    if (!u)
        return;
    if (!u->done) {
        store_writer_abort(u->writer);
        if (u->part_fd >= 0) {
            close(u->part_fd);
            unlink(u->part_tmp);
        }
    } else if (u->part_fd >= 0) {
        close(u->part_fd);
    }
    hash_free(u->part_hash);
    free(u);
}

static void parts_dir(const hub_call *call, buf *out)
{
    data_path(out, call->hub->data_dir, DATA_UPLOADS);
    buf_printf(out, "/%s-%s", call->repo.uid, call->extra);
}

static int upload_chunk(http_request *req, const char *data, size_t len, void *ctx)
{
    hub_call *call = ctx;
    upload_state *u = call->state;
    err e = ERR_INIT;
    if (u->writer) {
        if (store_writer_size(u->writer) + (int64_t)len > u->expected_size) {
            http_reply_errorf(req, 400, "", "upload is larger than the announced %lld bytes",
                              (long long)u->expected_size);
            return -1;
        }
        if (store_writer_write(u->writer, data, len, &e) != 0) {
            http_reply_error(req, &e);
            return -1;
        }
        return 0;
    }
    hash_update(u->part_hash, data, len);
    while (len) {
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
        u->part_size += n;
    }
    return 0;
}

static void upload_finish(http_request *req, hub_call *call)
{
    upload_state *u = call->state;
    err e = ERR_INIT;
    if (u->writer) {
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
        return;
    }
    char hex[65];
    hash_final_hex(u->part_hash, hex);
    u->part_hash = NULL;
    if (fsync(u->part_fd) != 0 || rename(u->part_tmp, u->part_final) != 0) {
        http_reply_errorf(req, 500, "", "cannot store part: %s", strerror(errno));
        return;
    }
    u->done = true;
    char etag[80];
    snprintf(etag, sizeof etag, "\"%s\"", hex);
    http_add_header(req, "ETag", etag);
    http_reply_json(req, 200, json_object());
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
    u->part_fd = -1;
    u->expected_size = size;
    call->state = u;
    call->free_state = upload_state_free;
    if (part) {
        buf dir = BUF_INIT;
        parts_dir(call, &dir);
        path_mkdirs(dir.data, 0755);
        uint8_t rnd[6];
        char tag[13];
        hash_random(rnd, sizeof rnd);
        hex_encode(rnd, sizeof rnd, tag);
        snprintf(u->part_final, sizeof u->part_final, "%s/part-%05lld", dir.data,
                 (long long)part_no);
        snprintf(u->part_tmp, sizeof u->part_tmp, "%.4000s.tmp-%s", u->part_final, tag);
        buf_free(&dir);
        u->part_fd = open(u->part_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (u->part_fd < 0) {
            http_reply_errorf(req, 500, "", "cannot store part: %s", strerror(errno));
            return 0;
        }
        u->part_hash = hash_sha256_new();
    } else {
        u->writer = store_writer_new(h->store, &e);
        if (!u->writer) {
            http_reply_error(req, &e);
            return 0;
        }
        store_writer_expect(u->writer, u->expected_size);
    }
    call->route = upload_finish;
    call->handler.offload = true; /* fsync and the metadata transaction */
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
    buf dir = BUF_INIT, path = BUF_INIT;
    parts_dir(call, &dir);
    store_writer *w = store_writer_new(h->store, &e);
    char chunk[1 << 16];
    for (size_t p = 1; w && p <= nparts; p++) {
        buf_reset(&path);
        buf_printf(&path, "%s/part-%05zu", dir.data, p);
        int fd = open(path.data, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            err_set(&e, 400, "", "part %zu was never uploaded", p);
            store_writer_abort(w);
            w = NULL;
            break;
        }
        ssize_t n;
        while ((n = read(fd, chunk, sizeof chunk)) > 0)
            if (store_writer_write(w, chunk, (size_t)n, &e) != 0)
                break;
        close(fd);
        if (n != 0) {
            if (!err_is_set(&e))
                err_set(&e, 500, "", "cannot read part %zu", p);
            store_writer_abort(w);
            w = NULL;
        }
    }
    if (w && store_writer_finish(w, call->extra, size, NULL, &e) == 0 &&
        db_repo_object_add(h->db, call->repo.id, call->extra, size, &e) == 0) {
        path_remove_tree(dir.data);
        log_info("stored LFS object %s from %zu parts", call->extra, nparts);
        http_reply_json(req, 200, json_object());
    } else {
        http_reply_error(req, &e);
    }
    buf_free(&dir);
    buf_free(&path);
}

