/* resolve — file downloads: /resolve (LFS files resolved to their content), /raw (git blobs
 * as stored), and the signed git-lfs download URL. Every header the clients read is set here
 * (spec §5.2): X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size, Accept-Ranges, plus Range
 * with 206 / 416. Stored objects go out with sendfile; nothing is read whole into memory
 * except small git blobs. */
#include "hub/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *content_type_for(const char *path)
{
    static const char *types[][2] = {
        {".json", "application/json"}, {".md", "text/markdown; charset=utf-8"},
        {".txt", "text/plain; charset=utf-8"}, {".py", "text/x-python; charset=utf-8"},
        {".yaml", "text/yaml; charset=utf-8"}, {".yml", "text/yaml; charset=utf-8"},
        {".csv", "text/csv; charset=utf-8"}, {".html", "text/html; charset=utf-8"},
        {".png", "image/png"}, {".jpg", "image/jpeg"}, {".svg", "image/svg+xml"},
    };
    for (size_t i = 0; i < ARRAY_LEN(types); i++)
        if (text_ends_with(path, types[i][0]))
            return types[i][1];
    return "application/octet-stream";
}

static void add_disposition(http_request *req, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    buf v = BUF_INIT, enc = BUF_INIT;
    text_percent_encode(&enc, base, false);
    bool plain = strspn(base, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
                 strlen(base);
    buf_printf(&v, "inline; filename*=UTF-8''%s", enc.data);
    if (plain)
        buf_printf(&v, "; filename=\"%s\"", base);
    http_add_header(req, "Content-Disposition", v.data);
    buf_free(&v);
    buf_free(&enc);
}

/* Applies Range to total. Returns 0 with [first, last] to send and the status, or -1 after
 * replying 416. */
static int pick_range(http_request *req, int64_t total, int64_t *first, int64_t *last,
                      int *status)
{
    *first = 0;
    *last = total - 1;
    *status = 200;
    http_add_header(req, "Accept-Ranges", "bytes");
    const char *range = http_header(req, "Range");
    switch (http_parse_range(range, total, first, last)) {
    case HTTP_RANGE_NONE:
        return 0;
    case HTTP_RANGE_OK: {
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %lld-%lld/%lld", (long long)*first, (long long)*last,
                 (long long)total);
        http_add_header(req, "Content-Range", cr);
        *status = 206;
        return 0;
    }
    case HTTP_RANGE_UNSATISFIABLE: {
        char cr[64];
        snprintf(cr, sizeof cr, "bytes */%lld", (long long)total);
        http_add_header(req, "Content-Range", cr);
        if (total == 0) {
            /* An empty file cannot satisfy bytes=0-0; the npm client reads the size from
             * Content-Range, so answer 200 with an empty body. */
            *first = 0;
            *last = -1;
            return 0;
        }
        http_reply_errorf(req, 416, "", "Requested range not satisfiable (file size %lld)",
                          (long long)total);
        return -1;
    }
    }
    return 0;
}

typedef struct pread_ctx {
    store_reader *reader;
    int64_t first;
} pread_ctx;

static ssize_t read_store(void *ctx, uint64_t pos, char *out, size_t max)
{
    pread_ctx *p = ctx;
    return store_reader_pread(p->reader, out, max, p->first + (int64_t)pos);
}

static void free_pread(void *ctx)
{
    pread_ctx *p = ctx;
    store_reader_close(p->reader);
    free(p);
}

/* Sends a stored object (Range-aware), zero-copy where the store allows it. */
static void send_stored(http_request *req, hub_call *call, const char *oid,
                        const char *content_type)
{
    err e = ERR_INIT;
    if (!hub_object_linked(call->hub, &call->repo, oid)) {
        http_reply_errorf(req, 404, "EntryNotFound", "Entry not found");
        return;
    }
    store_reader *reader = store_reader_open(call->hub->store, oid, &e);
    if (!reader) {
        if (e.status == 404)
            err_set(&e, 500, "", "the content of LFS object %s is missing from the store; run "
                                 "hearth admin fsck", oid);
        http_reply_error(req, &e);
        return;
    }
    int64_t total = store_reader_size(reader), first, last;
    int status;
    if (pick_range(req, total, &first, &last, &status) != 0) {
        store_reader_close(reader);
        return;
    }
    int64_t len = last - first + 1;
    int fd;
    int64_t file_offset;
    if (store_reader_region(reader, first, len, &fd, &file_offset) == 0) {
        store_reader_close(reader);
        http_reply_fd(req, status, content_type, fd, file_offset, len);
        return;
    }
    pread_ctx *ctx = malloc(sizeof *ctx);
    if (!ctx)
        abort();
    ctx->reader = reader;
    ctx->first = first;
    http_reply_reader(req, status, content_type, len, read_store, ctx, free_pread);
}

/* Shared by resolve and raw: resolve_lfs chooses whether LFS pointers are followed. */
static void serve_file(http_request *req, hub_call *call, bool resolve_lfs)
{
    char sha[41];
    if (hub_load_repo_files(req, call) != 0)
        return;
    repo *r = hub_open_git(req, call);
    if (!r || hub_resolve_rev(req, call, r, sha) != 0)
        return;
    http_add_header(req, "X-Repo-Commit", sha);
    repo_entry ent = {0};
    err e = ERR_INIT;
    if (!path_is_valid_repo_path(call->path, strlen(call->path)) ||
        hub_entry_stat(call->hub, &call->repo, r, sha, call->path, &ent, &e) != 0 || ent.is_dir) {
        repo_entry_free(&ent);
        hub_close_git(r);
        http_reply_errorf(req, 404, "EntryNotFound", "Entry not found: %s", call->path);
        return;
    }
    const char *ctype = content_type_for(call->path);
    add_disposition(req, call->path);
    char etag[80];
    if (ent.is_lfs && resolve_lfs) {
        char size[32];
        snprintf(etag, sizeof etag, "\"%s\"", ent.lfs.oid);
        snprintf(size, sizeof size, "%lld", (long long)ent.lfs.size);
        http_add_header(req, "ETag", etag);
        http_add_header(req, "X-Linked-Etag", etag);
        http_add_header(req, "X-Linked-Size", size);
        hub_xet_resolve_headers(req, call, ent.lfs.oid, sha);
        hub_close_git(r);
        send_stored(req, call, ent.lfs.oid, ctype);
        repo_entry_free(&ent);
        return;
    }
    snprintf(etag, sizeof etag, "\"%s\"", ent.oid);
    http_add_header(req, "ETag", etag);
    buf data = BUF_INIT;
    if (repo_read(r, sha, call->path, &data, &e) != 0) {
        repo_entry_free(&ent);
        hub_close_git(r);
        http_reply_error(req, &e);
        return;
    }
    repo_entry_free(&ent);
    hub_close_git(r);
    int64_t first, last;
    int status;
    if (pick_range(req, (int64_t)data.len, &first, &last, &status) == 0)
        http_reply_bytes(req, status, ctype, buf_str(&data) + first, (size_t)(last - first + 1));
    buf_free(&data);
}

void hub_resolve(http_request *req, hub_call *call) { serve_file(req, call, true); }

void hub_raw(http_request *req, hub_call *call) { serve_file(req, call, false); }

void hub_lfs_download(http_request *req, hub_call *call)
{
    /* The signature binds repo, caller, oid and size: no token needed, nothing else reachable. */
    err e = ERR_INIT;
    if (!path_is_valid_repo_name(call->ns) || !path_is_valid_repo_name(call->name) ||
        db_repo_get(call->hub->db, call->type, call->ns, call->name, &call->repo, &e) != 0) {
        http_reply_errorf(req, 404, "RepoNotFound", "Repository not found");
        return;
    }
    call->have_repo = true;
    int64_t size = text_parse_i64(http_query(req, "size"));
    if (!text_is_hex(call->extra, 64)) {
        http_reply_errorf(req, 403, "", "invalid download link; ask the batch API for a new one");
        return;
    }
    /* Checked again now: a repo made private or deleted, or a revoked token, ends the link. */
    if (hub_grant_check_url(req, call, "download", call->extra, size, false) != 0)
        return;
    send_stored(req, call, call->extra, "application/octet-stream");
}
