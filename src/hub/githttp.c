/* githttp — git smart HTTP for every repo: info/refs, git-upload-pack (clone, fetch) and
 * git-receive-pack (push), served by git itself through the git module.
 *
 * Authentication is HTTP Basic with a token as password (any user name). Anonymous callers
 * may read public repos; a push, or any request for a repo they cannot see, is answered 401
 * with a Basic challenge so that git asks for credentials. Request bodies (gzip or not) are
 * streamed to an unlinked temp file, which becomes the service's stdin; the service runs on a
 * worker thread and its output is sent once complete. After a push, the repo's metadata is
 * refreshed, as for an API commit.
 *
 * Those temp files are bounded, since anyone may fetch a public repo and a 200 KB gzip body
 * can inflate to gigabytes:
 * - git-upload-pack (clone, fetch) takes wants and haves, ~50 bytes a line, sent in rounds
 *   that grow by a tenth once past 16384 haves; even a clone of 100k refs is 5 MB. The limit
 *   (hub.git_fetch_max, 10 MiB) is git-http-backend's own (GIT_HTTP_MAX_REQUEST_BUFFER,
 *   which it applies to the body as sent); here it counts inflated bytes, and anonymous
 *   callers get a tenth of it.
 * - git-receive-pack (push) takes a pack: hub.git_push_max (8 GiB), raw and inflated.
 * - past 1 MiB, a gzip body may expand at most 100-fold: git never gzips a pack, and wants
 *   and haves are hex, which gzip shrinks about twofold.
 * A larger body is refused with 413 ContentTooLarge: at once when Content-Length says so,
 * else as soon as it crosses the limit, when its temp file is closed (it is unlinked from
 * the start, so closing frees its space); the rest of the body is read and thrown away.
 */
#include "hub/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "git/git.h"

/* Gzip bodies: beyond RATIO_FLOOR inflated bytes, at most RATIO_MAX times the bytes sent. */
#define RATIO_FLOOR ((int64_t)1 << 20)
#define RATIO_MAX 100

static void challenge(http_request *req, const char *why)
{
    http_add_header(req, "WWW-Authenticate", "Basic realm=\"Hearth\", charset=\"UTF-8\"");
    http_reply_errorf(req, 401, "", "%s", why);
}

/* Loads the repo for git: 401 with a challenge wherever credentials could change the answer. */
static int git_load_repo(http_request *req, hub_call *call, bool want_write)
{
    if (!call->caller.authenticated) {
        err e = ERR_INIT;
        db_repo row;
        int rc = path_is_valid_repo_name(call->ns) && path_is_valid_repo_name(call->name)
                     ? db_repo_get(call->hub->db, call->type, call->ns, call->name, &row, &e)
                     : 1;
        /* A gated repo's files need credentials too: git asks for them on a 401. */
        bool hidden = rc != 0 || row.is_private || (rc == 0 && row.gated[0]);
        if (rc == 0)
            db_repo_free(&row);
        char moved_ns[97], moved_name[97];
        bool moved = rc == 1 && db_repo_redirect(call->hub->db, call->type, call->ns, call->name,
                                                 moved_ns, moved_name, &e) == 0;
        if (want_write || (hidden && !moved)) {
            challenge(req, want_write ? "Pushing needs a write token: use it as the password"
                                      : "Repository not found, or credentials are needed");
            return -1;
        }
    }
    return want_write ? hub_load_repo(req, call, true) : hub_load_repo_files(req, call);
}

static bool wants_v2(http_request *req)
{
    const char *proto = http_header(req, "Git-Protocol");
    return proto && strstr(proto, "version=2");
}

void hub_git_info_refs(http_request *req, hub_call *call)
{
    int service = git_service_from_name(http_query(req, "service"));
    if (service < 0) {
        http_reply_errorf(req, 403, "", "only git's smart HTTP protocol is supported: use git "
                                        "version 1.6.6 or later");
        return;
    }
    if (git_load_repo(req, call, service == GIT_RECEIVE_PACK) != 0)
        return;
    buf dir = BUF_INIT, out = BUF_INIT;
    hub_git_dir(call->hub, call->repo.uid, &dir);
    bool v2 = wants_v2(req) && service == GIT_UPLOAD_PACK;
    git_run run = {.service = service, .repo_dir = dir.data, .advertise = true,
                   .protocol_v2 = v2, .input_fd = -1};
    git_process p;
    err e = ERR_INIT;
    if (git_start(&run, &p, &e) != 0) {
        http_reply_error(req, &e);
        buf_free(&dir);
        return;
    }
    if (!v2)
        git_advertisement_header(service, &out);
    char chunk[65536];
    ssize_t n;
    while ((n = read(p.out, chunk, sizeof chunk)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        buf_append(&out, chunk, (size_t)n);
    }
    int status = git_finish(&p, false);
    if (status != 0) {
        http_reply_errorf(req, 500, "", "git %s failed to advertise refs",
                          git_service_name(service));
    } else {
        char ctype[80];
        snprintf(ctype, sizeof ctype, "application/x-%s-advertisement",
                 git_service_name(service));
        http_add_header(req, "Cache-Control", "no-cache, max-age=0, must-revalidate");
        http_reply_bytes(req, 200, ctype, buf_str(&out), out.len);
    }
    buf_free(&dir);
    buf_free(&out);
}

/* ---- RPC: body to a temp file, then the service ------------------------------------------ */

typedef struct rpc_state {
    git_service service;
    int body_fd;
    int64_t body_size;     /* bytes written to body_fd (inflated) */
    int64_t sent_size;     /* bytes received (compressed, for gzip bodies) */
    int64_t limit;         /* for both */
    bool anonymous;
    bool gzip;
    z_stream zs;
    bool zs_ready;
} rpc_state;

static void rpc_state_free(void *p)
{
    rpc_state *s = p;
    if (!s)
        return;
    if (s->body_fd >= 0)
        close(s->body_fd);
    if (s->zs_ready)
        inflateEnd(&s->zs);
    free(s);
}

/* 413 for a body over s->limit, in words a git user or an operator can act on. */
static void reply_too_large(http_request *req, hub_call *call, const rpc_state *s)
{
    log_info("%s to %s/%s: request body over %lld bytes, refused", git_service_name(s->service),
             call->ns, call->name, (long long)s->limit);
    if (s->service == GIT_RECEIVE_PACK)
        http_reply_errorf(req, 413, "ContentTooLarge",
                          "this push is larger than %lld bytes, the most this server takes in "
                          "one push: push fewer commits at a time, or store large files with "
                          "git-lfs", (long long)s->limit);
    else if (s->anonymous)
        http_reply_errorf(req, 413, "ContentTooLarge",
                          "this fetch negotiation is larger than %lld bytes, the most this server "
                          "takes from anonymous callers: fetch with a token", (long long)s->limit);
    else
        http_reply_errorf(req, 413, "ContentTooLarge",
                          "this fetch negotiation is larger than %lld bytes, the most this server "
                          "takes", (long long)s->limit);
}

/* Refuses the rest of the body: the temp file goes at once (it is already unlinked). */
static int rpc_refuse(rpc_state *s)
{
    if (s->body_fd >= 0)
        close(s->body_fd);
    s->body_fd = -1;
    return -1;
}

static int rpc_write(http_request *req, hub_call *call, rpc_state *s, const void *data,
                     size_t len)
{
    if (s->body_size + (int64_t)len > s->limit) {
        reply_too_large(req, call, s);
        return rpc_refuse(s);
    }
    if (path_write_all(s->body_fd, data, len) != 0) {
        http_reply_errorf(req, 507, "", "cannot store the request body: %s", strerror(errno));
        return rpc_refuse(s);
    }
    s->body_size += (int64_t)len;
    return 0;
}

static int rpc_chunk(http_request *req, const char *data, size_t len, void *ctx)
{
    hub_call *call = ctx;
    rpc_state *s = call->state;
    if (s->sent_size + (int64_t)len > s->limit) {
        reply_too_large(req, call, s);
        return rpc_refuse(s);
    }
    if (!s->gzip) {
        s->sent_size += (int64_t)len;
        return rpc_write(req, call, s, data, len);
    }
    s->zs.next_in = (Bytef *)data;
    s->zs.avail_in = (uInt)len;
    unsigned char out[65536];
    while (s->zs.avail_in) {
        s->zs.next_out = out;
        s->zs.avail_out = sizeof out;
        int rc = inflate(&s->zs, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            http_reply_errorf(req, 400, "", "the gzip request body is corrupt");
            return rpc_refuse(s);
        }
        size_t got = sizeof out - s->zs.avail_out;
        if (rpc_write(req, call, s, out, got) != 0)
            return -1;
        int64_t sent = s->sent_size + (int64_t)(len - s->zs.avail_in);
        if (s->body_size > RATIO_FLOOR && s->body_size > RATIO_MAX * sent) {
            log_info("%s to %s/%s: gzip body expands more than %d-fold, refused",
                     git_service_name(s->service), call->ns, call->name, RATIO_MAX);
            http_reply_errorf(req, 413, "ContentTooLarge",
                              "the gzip request body expands more than %d-fold: no git request "
                              "does that", RATIO_MAX);
            return rpc_refuse(s);
        }
        if (rc == Z_STREAM_END || (rc == Z_BUF_ERROR && got == 0))
            break;
    }
    s->sent_size += (int64_t)len;
    return 0;
}

/* Runs on a worker thread (the route is offloaded): the service's whole output goes to an
 * unlinked temp file, then out with sendfile. Store-and-forward keeps every event loop free
 * while git works, at the cost of disk the size of one reply. */
static void rpc_run(http_request *req, hub_call *call)
{
    rpc_state *s = call->state;
    if (lseek(s->body_fd, 0, SEEK_SET) != 0) {
        http_reply_errorf(req, 500, "", "cannot rewind the request body");
        return;
    }
    buf dir = BUF_INIT, hooks = BUF_INIT;
    hub_git_dir(call->hub, call->repo.uid, &dir);
    buf_printf(&hooks, "%s/hooks", call->hub->data_dir);
    git_run run = {.service = s->service, .repo_dir = dir.data,
                   .protocol_v2 = wants_v2(req) && s->service == GIT_UPLOAD_PACK,
                   .input_fd = s->body_fd, .hooks_dir = hooks.data,
                   .data_dir = call->hub->data_dir, .repo_id = call->repo.id};
    char tmpl[4200];
    snprintf(tmpl, sizeof tmpl, "%s/uploads/git-reply-XXXXXX", call->hub->data_dir);
    int out = mkostemp(tmpl, O_CLOEXEC);
    if (out >= 0)
        unlink(tmpl);
    git_process p;
    err e = ERR_INIT;
    if (out < 0) {
        http_reply_errorf(req, 500, "", "cannot buffer the reply: %s", strerror(errno));
    } else if (git_start(&run, &p, &e) != 0) {
        close(out);
        http_reply_error(req, &e);
    } else {
        close(s->body_fd); /* the service has its own copy */
        s->body_fd = -1;
        char chunk[65536];
        int64_t size = 0;
        bool ok = true;
        for (;;) {
            ssize_t n = read(p.out, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                ok = n == 0;
                break;
            }
            if (path_write_all(out, chunk, (size_t)n) != 0) {
                ok = false;
                break;
            }
            size += n;
        }
        int status = git_finish(&p, !ok);
        if (s->service == GIT_RECEIVE_PACK) {
            /* Refs may have moved: bring the metadata up to date, as an API commit does. */
            repo_note_refs_changed();
            err me = ERR_INIT;
            repo *r = repo_open(dir.data, &me);
            if (r) {
                hub_refresh_meta(call->hub, &call->repo, r);
                repo_close(r);
            }
            log_info("push to %s/%s finished (git exit %d)", call->ns, call->name, status);
            if (status == 0)
                hub_audit_repo(call->hub, &call->caller, "push", &call->repo, NULL, NULL);
        }
        if (!ok) {
            close(out);
            http_reply_errorf(req, 500, "", "git %s failed", git_service_name(s->service));
        } else {
            char ctype[80];
            snprintf(ctype, sizeof ctype, "application/x-%s-result",
                     git_service_name(s->service));
            http_add_header(req, "Cache-Control", "no-cache, max-age=0, must-revalidate");
            http_reply_fd(req, 200, ctype, out, 0, size);
        }
    }
    buf_free(&dir);
    buf_free(&hooks);
}

int hub_git_rpc_begin(http_request *req, hub_call *call, const char *service_name)
{
    int service = git_service_from_name(service_name);
    err e = ERR_INIT;
    if (auth_identify(call->hub->db, http_header(req, "Authorization"), &call->caller, &e) != 0) {
        challenge(req, e.message);
        return 0;
    }
    if (git_load_repo(req, call, service == GIT_RECEIVE_PACK) != 0)
        return 0;
    rpc_state *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->service = service;
    s->body_fd = -1;
    s->anonymous = !call->caller.authenticated;
    if (service == GIT_RECEIVE_PACK)
        s->limit = call->hub->git_push_max;
    else
        s->limit = s->anonymous ? call->hub->git_fetch_max / 10 : call->hub->git_fetch_max;
    call->state = s;
    call->free_state = rpc_state_free;
    const char *length = http_header(req, "Content-Length");
    if (length && text_parse_i64(length) > s->limit) {
        reply_too_large(req, call, s); /* before the body: nothing is read */
        return 0;
    }
    char tmpl[4200];
    snprintf(tmpl, sizeof tmpl, "%s/uploads/git-body-XXXXXX", call->hub->data_dir);
    s->body_fd = mkostemp(tmpl, O_CLOEXEC);
    if (s->body_fd < 0) {
        http_reply_errorf(req, 500, "", "cannot buffer the request: %s", strerror(errno));
        return 0;
    }
    unlink(tmpl); /* anonymous: gone when closed, whatever happens */
    const char *encoding = http_header(req, "Content-Encoding");
    if (encoding && (!strcmp(encoding, "gzip") || !strcmp(encoding, "x-gzip"))) {
        s->gzip = true;
        if (inflateInit2(&s->zs, 16 + MAX_WBITS) != Z_OK) {
            http_reply_errorf(req, 500, "", "cannot decompress the request");
            return 0;
        }
        s->zs_ready = true;
    } else if (encoding && *encoding && strcmp(encoding, "identity") != 0) {
        http_reply_errorf(req, 415, "", "unsupported Content-Encoding %s", encoding);
        return 0;
    }
    call->route = rpc_run;
    call->handler.body_chunk = rpc_chunk;
    call->handler.offload = true;
    return 0;
}
