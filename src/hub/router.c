/* router — turns a request line into a route and a hub_call, and owns the hub's lifetime.
 *
 * Paths arrive raw. A path is split on '/', each segment percent-decoded on its own, so that a
 * revision sent as "refs%2Fpr%2F1" and one sent as "refs/pr/1" read the same: a revision whose
 * first segment is "refs" takes the next two segments as well (refs/pr/N, refs/convert/x,
 * refs/heads/x, refs/tags/x), as the spec requires.
 */
#include "hub/internal.h"

#include "git/git.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SEGMENTS 256
#define JSON_BODY_MAX (16u << 20)
#define COMMIT_BODY_MAX (512u << 20)
/* A xorb holds at most 64 MiB of chunk data plus 8 bytes a chunk (8192 chunks at most). */
#define XET_XORB_BODY_MAX (XET_XORB_MAX_BYTES + (1u << 20))
#define XET_SHARD_BODY_MAX (256u << 20)

typedef struct segments {
    char *items[MAX_SEGMENTS];  /* decoded */
    size_t raw_start[MAX_SEGMENTS];
    size_t raw_end[MAX_SEGMENTS];
    size_t n;
} segments;

static void segments_free(segments *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->items[i]);
    s->n = 0;
}

/* Splits and decodes; -1 on a bad escape, NUL or too many segments. */
static int split_path(const char *path, segments *out)
{
    out->n = 0;
    size_t len = strlen(path), i = 0;
    if (len > 16384)
        return -1;
    while (i < len) {
        while (i < len && path[i] == '/')
            i++;
        if (i >= len)
            break;
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        if (out->n == MAX_SEGMENTS)
            return -1;
        buf seg = BUF_INIT;
        if (text_percent_decode(path + start, i - start, false, &seg) != 0) {
            buf_free(&seg);
            return -1;
        }
        out->raw_start[out->n] = start;
        out->raw_end[out->n] = i;
        out->items[out->n++] = buf_detach(&seg);
    }
    return 0;
}

/* Joins segments [from, n) with '/'. */
static char *join_from(const segments *s, size_t from)
{
    buf b = BUF_INIT;
    for (size_t i = from; i < s->n; i++) {
        if (i > from)
            buf_putc(&b, '/');
        buf_puts(&b, s->items[i]);
    }
    return buf_detach(&b);
}

/* Takes a revision starting at *i; advances *i past it. */
static char *take_rev(const segments *s, size_t *i)
{
    if (*i >= s->n)
        return NULL;
    const char *first = s->items[*i];
    if (!strcmp(first, "refs") && *i + 2 < s->n) {
        const char *kind = s->items[*i + 1];
        if (!strcmp(kind, "pr") || !strcmp(kind, "convert") || !strcmp(kind, "heads") ||
            !strcmp(kind, "tags")) {
            buf b = BUF_INIT;
            buf_printf(&b, "refs/%s/%s", kind, s->items[*i + 2]);
            *i += 3;
            return buf_detach(&b);
        }
    }
    (*i)++;
    return strdup(first);
}

static bool type_from_plural(const char *plural, char type[8])
{
    static const char *names[][2] = {{"models", "model"}, {"datasets", "dataset"},
                                     {"spaces", "space"}};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        if (!strcmp(plural, names[i][0])) {
            strcpy(type, names[i][1]);
            return true;
        }
    return false;
}

static void call_free(hub_call *call)
{
    if (call->free_state)
        call->free_state(call->state);
    free(call->rev);
    free(call->path);
    free(call->extra);
    db_repo_free(&call->repo);
    free(call);
}

static void run_route(http_request *req, void *ctx)
{
    hub_call *call = ctx;
    call->route(req, call);
}

static void end_call(http_request *req, void *ctx, bool completed)
{
    hub_call *call = ctx;
    call_free(call);
}

static void health(http_request *req, hub_call *call)
{
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void not_found(http_request *req, hub_call *call)
{
    http_reply_errorf(req, 404, "", "Not found: %s %s", http_method(req), http_path(req));
}

/* Sets the route; body_max 0 = no body expected (a small one is still accepted). */
static void use(hub_call *call, hub_route_fn fn, size_t body_max)
{
    call->route = fn;
    call->handler.max_body = body_max ? body_max : 65536;
}

/* A route that may block (git writes, fsync, processes, long checks): runs on a worker. */
static void use_slow(hub_call *call, hub_route_fn fn, size_t body_max)
{
    use(call, fn, body_max);
    call->handler.offload = true;
}

static bool is(const char *a, const char *b) { return a && !strcmp(a, b); }

/* Copies a repo id from the path. A part too long for a valid name is left empty (and so
 * answers 404), never cut short: /bob/<97 characters> must not name /bob/<the first 96>. */
static void set_repo_id(hub_call *call, const char *ns, const char *name)
{
    call->ns[0] = call->name[0] = '\0';
    if (strlen(ns) < sizeof call->ns && strlen(name) < sizeof call->name) {
        memcpy(call->ns, ns, strlen(ns) + 1);
        memcpy(call->name, name, strlen(name) + 1);
    }
}

/* /api/{type}s/{ns}/{name}/... */
static void route_repo_api(http_request *req, hub_call *call, const segments *s, const char *m)
{
    size_t i = 4;
    const char *what = i < s->n ? s->items[i++] : NULL;
    if (!what) {
        if (is(m, "GET"))
            use(call, hub_repo_info, 0);
        return;
    }
    if (is(what, "revision") && is(m, "GET")) {
        call->rev = take_rev(s, &i);
        if (call->rev && i == s->n)
            use(call, hub_repo_info, 0);
    } else if (is(what, "tree") && is(m, "GET")) {
        call->rev = take_rev(s, &i);
        call->path = join_from(s, i);
        if (call->rev)
            use(call, hub_tree, 0);
    } else if (is(what, "paths-info") && is(m, "POST")) {
        call->rev = take_rev(s, &i);
        if (call->rev)
            use(call, hub_paths_info, JSON_BODY_MAX);
    } else if (is(what, "refs") && is(m, "GET")) {
        use(call, hub_refs, 0);
    } else if (is(what, "commits") && is(m, "GET")) {
        call->rev = take_rev(s, &i);
        if (!call->rev)
            call->rev = strdup("main");
        use(call, hub_commits, 0);
    } else if (is(what, "branch") && i < s->n) {
        call->rev = join_from(s, i);
        if (is(m, "POST"))
            use(call, hub_branch_create, JSON_BODY_MAX);
        else if (is(m, "DELETE"))
            use(call, hub_branch_delete, 0);
    } else if (is(what, "tag") && i < s->n) {
        call->rev = join_from(s, i);
        if (is(m, "POST"))
            use(call, hub_tag_create, JSON_BODY_MAX);
        else if (is(m, "DELETE"))
            use(call, hub_tag_delete, 0);
    } else if (is(what, "super-squash") && is(m, "POST")) {
        call->rev = i < s->n ? join_from(s, i) : strdup("main");
        use_slow(call, hub_super_squash, JSON_BODY_MAX);
    } else if (is(what, "preupload") && is(m, "POST")) {
        call->rev = take_rev(s, &i);
        if (call->rev)
            use(call, hub_preupload, JSON_BODY_MAX);
    } else if (is(what, "commit") && is(m, "POST")) {
        call->rev = take_rev(s, &i);
        if (call->rev && i == s->n)
            use_slow(call, hub_commit, COMMIT_BODY_MAX);
    } else if (is(what, "user-access-request") && i + 1 == s->n) {
        call->extra = strdup(s->items[i]);
        if (is(m, "GET"))
            use(call, hub_access_list, 0);
        else if (is(m, "POST") && is(call->extra, "handle"))
            use(call, hub_access_handle, JSON_BODY_MAX);
        else if (is(m, "POST") && is(call->extra, "grant"))
            use(call, hub_access_grant, JSON_BODY_MAX);
    } else if (is(what, "ask-access") && i == s->n && is(m, "POST")) {
        use(call, hub_access_ask, JSON_BODY_MAX);
    } else if (is(what, "auth-check") && is(m, "GET") && (i == s->n || i + 1 == s->n)) {
        if (i < s->n)
            call->extra = strdup(s->items[i]);
        if (!call->extra || !strcmp(call->extra, "write"))
            use(call, hub_auth_check, 0);
    } else if (is(what, "settings") && is(m, "PUT")) {
        use(call, hub_repo_settings, JSON_BODY_MAX);
    } else if ((is(what, "xet-read-token") || is(what, "xet-write-token")) && is(m, "GET")) {
        call->rev = take_rev(s, &i);
        call->extra = strdup(what);
        use(call, hub_xet_token, 0);
    }
}

/* The Xet CAS under /cas (spec §9.2). Its calls carry a CAS token, not a Hub token: the
 * handlers check it, so the router skips Hub authentication (signed_url). */
static void route_cas(http_request *req, hub_call *call, const segments *s, const char *m)
{
    const char *version = s->items[1], *what = s->n > 2 ? s->items[2] : NULL;
    bool get = is(m, "GET") || is(m, "HEAD");
    call->signed_url = true;
    if (is(version, "xorb") && s->n == 3 && get) {
        call->extra = strdup(s->items[2]);
        use(call, hub_cas_xorb_get, 0);
        return;
    }
    call->rev = strdup(version);
    if (is(what, "reconstructions") && s->n == 4 && is(m, "GET")) {
        call->extra = strdup(s->items[3]);
        use(call, hub_cas_reconstruction, 0);
    } else if (is(what, "reconstructions") && s->n == 3 && is(version, "v1") &&
               (is(m, "GET") || is(m, "POST"))) {
        use(call, hub_cas_batch_reconstruction, JSON_BODY_MAX);
    } else if (is(what, "shards") && s->n == 3 && is(m, "POST")) {
        use_slow(call, hub_cas_shard_upload, XET_SHARD_BODY_MAX);
    } else if (is(version, "v1") && is(what, "xorbs") && s->n == 5) {
        call->extra = strdup(s->items[4]);
        if (is(m, "POST"))
            use_slow(call, hub_cas_xorb_upload, XET_XORB_BODY_MAX);
        else if (get)
            use(call, hub_cas_xorb_head, 0);
    } else if (is(version, "v1") && is(what, "chunks") && s->n == 5 && get) {
        call->extra = strdup(s->items[4]);
        use(call, hub_cas_chunk, 0);
    } else if (is(version, "v1") && is(what, "files") && s->n == 4 && get) {
        call->extra = strdup(s->items[3]);
        use(call, hub_cas_file_head, 0);
    }
}

/* /{prefix}{ns}/{name}/resolve/..., /raw/..., {name}.git/info/lfs/... */
static int route_web(http_request *req, hub_call *call, const segments *s, const char *m)
{
    size_t i = 0;
    strcpy(call->type, "model");
    if (s->n >= 3 && (is(s->items[0], "datasets") || is(s->items[0], "spaces"))) {
        strcpy(call->type, is(s->items[0], "datasets") ? "dataset" : "space");
        i = 1;
    }
    if (i + 2 > s->n)
        return 0;
    set_repo_id(call, s->items[i], s->items[i + 1]);
    call->id_start = s->raw_start[i];
    call->id_end = s->raw_end[i + 1];
    bool dot_git = text_ends_with(call->name, ".git");
    if (dot_git) {
        call->name[strlen(call->name) - 4] = '\0';
        call->id_end -= 4;
    }
    i += 2;
    const char *what = i < s->n ? s->items[i++] : NULL;
    bool get = is(m, "GET") || is(m, "HEAD");
    if ((is(what, "resolve") || is(what, "raw")) && get) {
        call->rev = take_rev(s, &i);
        call->path = join_from(s, i);
        if (call->rev && *call->path)
            use(call, is(what, "resolve") ? hub_resolve : hub_raw, 0);
        return 0;
    }
    if (is(what, "ask-access") && i == s->n && is(m, "POST")) {
        use(call, hub_access_ask, JSON_BODY_MAX);
        return 0;
    }
    if (is(what, "info") && i + 1 == s->n && is(s->items[i], "refs") && get) {
        use_slow(call, hub_git_info_refs, 0);
        return 0;
    }
    if ((is(what, "git-upload-pack") || is(what, "git-receive-pack")) && i == s->n &&
        is(m, "POST")) {
        call->signed_url = true; /* authenticated inside, with a Basic challenge */
        return hub_git_rpc_begin(req, call, what);
    }
    if (is(what, "info") && i + 1 < s->n && is(s->items[i], "lfs")) {
        const char *area = s->items[i + 1];
        i += 2;
        const char *op = i < s->n ? s->items[i++] : NULL;
        if (is(area, "objects")) {
            if (is(op, "batch") && is(m, "POST") && i == s->n) {
                use(call, hub_lfs_batch, JSON_BODY_MAX);
            } else if (is(op, "verify") && is(m, "POST")) {
                use(call, hub_lfs_verify, JSON_BODY_MAX);
            } else if (is(op, "download") && get && i + 1 == s->n) {
                call->signed_url = true;
                call->extra = strdup(s->items[i]);
                use(call, hub_lfs_download, 0);
            } else if (is(op, "complete") && is(m, "POST") && i + 1 == s->n) {
                call->signed_url = true;
                call->extra = strdup(s->items[i]);
                use_slow(call, hub_lfs_multipart_complete, JSON_BODY_MAX);
            } else if (is(op, "upload") && is(m, "PUT") && i < s->n) {
                call->extra = strdup(s->items[i]);
                bool part = i + 3 == s->n && is(s->items[i + 1], "part");
                if (part)
                    call->rev = strdup(s->items[i + 2]); /* the part number */
                call->signed_url = true;
                if (part || i + 1 == s->n)
                    return hub_lfs_upload_begin(req, call, part);
            }
        } else if (is(area, "locks")) {
            use(call, hub_lfs_locks, JSON_BODY_MAX);
        }
    }
    return 0;
}

static int route(http_request *req, hub_call *call, const segments *s)
{
    const char *m = http_method(req);
    const char *a = s->n > 0 ? s->items[0] : "";
    const char *b = s->n > 1 ? s->items[1] : NULL;
    if (is(a, "health") && s->n == 1)
        use(call, health, 0);
    else if (is(a, "cas") && (is(b, "v1") || is(b, "v2") || is(b, "xorb")))
        route_cas(req, call, s, m);
    else if (is(a, "v1") && is(b, "telemetry") && s->n == 2 && is(m, "POST")) {
        call->signed_url = true; /* hf_xet's statistics, sent with the CAS token */
        use(call, hub_cas_telemetry, JSON_BODY_MAX);
    }
    else if (!is(a, "api"))
        return route_web(req, call, s, m);
    else if (is(b, "admin") && s->n == 3 && is(s->items[2], "stats") && is(m, "GET"))
        use(call, hub_admin_stats_route, 0);
    else if (is(b, "admin") && s->n == 3 && is(s->items[2], "audit") && is(m, "GET"))
        use(call, hub_admin_audit_route, 0);
    else if (is(b, "whoami-v2") && s->n == 2)
        use(call, hub_whoami, 0);
    else if (is(b, "users") && s->n == 4 && is(s->items[3], "overview") && is(m, "GET")) {
        set_repo_id(call, s->items[2], "-");
        use(call, hub_user_overview, 0);
    } else if (is(b, "organizations") && s->n == 3 && is(s->items[2], "new") && is(m, "POST"))
        use(call, hub_org_create, JSON_BODY_MAX);
    else if (is(b, "organizations") && s->n == 4 && is(m, "GET") &&
             (is(s->items[3], "overview") || is(s->items[3], "members"))) {
        set_repo_id(call, s->items[2], "-");
        use(call, is(s->items[3], "overview") ? hub_org_overview : hub_org_members, 0);
    } else if (is(b, "organizations") && s->n == 5 && is(s->items[3], "members") &&
               (is(m, "PUT") || is(m, "POST") || is(m, "DELETE"))) {
        set_repo_id(call, s->items[2], "-");
        call->extra = strdup(s->items[4]);
        use(call, hub_org_member, JSON_BODY_MAX);
    } else if (is(b, "settings") && s->n >= 3 && is(s->items[2], "tokens") &&
               ((s->n == 3 && (is(m, "GET") || is(m, "POST"))) || (s->n == 4 && is(m, "DELETE")))) {
        if (s->n == 4)
            call->extra = strdup(s->items[3]);
        use(call, hub_tokens, JSON_BODY_MAX);
    }
    else if (is(b, "validate-yaml") && is(m, "POST"))
        use(call, hub_validate_yaml, JSON_BODY_MAX);
    else if (is(b, "repos") && s->n == 3 && is(s->items[2], "create") && is(m, "POST"))
        use_slow(call, hub_repo_create, JSON_BODY_MAX);
    else if (is(b, "repos") && s->n == 3 && is(s->items[2], "delete") && is(m, "DELETE"))
        use_slow(call, hub_repo_delete, JSON_BODY_MAX);
    else if (is(b, "repos") && s->n == 3 && is(s->items[2], "move") && is(m, "POST"))
        use(call, hub_repo_move, JSON_BODY_MAX);
    else if (b && type_from_plural(b, call->type)) {
        if (s->n == 2) {
            if (is(m, "GET"))
                use(call, hub_repo_list, 0);
        } else if (s->n >= 4) {
            set_repo_id(call, s->items[2], s->items[3]);
            call->id_start = s->raw_start[2];
            call->id_end = s->raw_end[3];
            route_repo_api(req, call, s, m);
        }
    }
    return 0;
}

const http_handler *hub_dispatch(http_request *req, void *app)
{
    hub *h = app;
    hub_call *call = calloc(1, sizeof *call);
    if (!call)
        abort();
    call->hub = h;
    call->handler.handle = run_route;
    call->handler.cleanup = end_call;
    call->handler.ctx = call;
    segments s;
    if (split_path(http_path(req), &s) != 0) {
        segments_free(&s);
        call_free(call);
        http_reply_errorf(req, 400, "", "malformed request path");
        return NULL;
    }
    int rc = route(req, call, &s);
    segments_free(&s);
    if (rc != 0 || http_replied(req)) {
        call_free(call);
        return NULL;
    }
    if (!call->route && !call->handler.body_chunk)
        use(call, not_found, 0);
    /* URLs that carry their own signature need no Authorization: Python's LFS client sends
     * none with them. */
    if (!call->signed_url) {
        err e = ERR_INIT;
        if (auth_identify(h->db, http_header(req, "Authorization"), &call->caller, &e) != 0) {
            call_free(call);
            http_reply_error(req, &e);
            return NULL;
        }
    }
    http_client_address(req, call->caller.address, sizeof call->caller.address);
    return &call->handler;
}

/* ---- lifetime ---------------------------------------------------------------------------- */

static int load_secret(hub *h, err *e)
{
    buf path = BUF_INIT;
    data_path(&path, h->data_dir, DATA_SECRET);
    buf data = BUF_INIT;
    int rc = 0;
    if (path_read_file(path.data, &data) == 0 && data.len == sizeof h->secret) {
        memcpy(h->secret, data.data, sizeof h->secret);
    } else {
        hash_random(h->secret, sizeof h->secret);
        rc = path_write_atomic(path.data, h->secret, sizeof h->secret, e);
    }
    buf_free(&data);
    buf_free(&path);
    return rc;
}

hub *hub_open(const hub_config *config, err *e)
{
    hub *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    h->data_dir = strdup(config->data_dir);
    h->lfs_threshold = config->lfs_threshold > 0 ? config->lfs_threshold : 10 * 1000 * 1000;
    h->multipart_threshold =
        config->multipart_threshold > 0 ? config->multipart_threshold : (int64_t)1 << 30;
    h->multipart_part_size =
        config->multipart_part_size > 0 ? config->multipart_part_size : (int64_t)256 << 20;
    /* Tests lower these to exercise multipart without gigabytes. */
    const char *env = getenv("HEARTH_MULTIPART_THRESHOLD");
    if (env && text_parse_i64(env) > 0)
        h->multipart_threshold = text_parse_i64(env);
    env = getenv("HEARTH_MULTIPART_PART_SIZE");
    if (env && text_parse_i64(env) > 0)
        h->multipart_part_size = text_parse_i64(env);
    h->git_fetch_max = config->git_fetch_max > 0 ? config->git_fetch_max : (int64_t)10 << 20;
    h->git_push_max = config->git_push_max > 0 ? config->git_push_max : (int64_t)8 << 30;
    repo_global_init();
    buf dir = BUF_INIT;
    if (data_dir_prepare(h->data_dir, e) != 0 || load_secret(h, e) != 0 ||
        (!config->maintenance && git_install_hooks(h->data_dir, e) != 0))
        goto fail;
    data_path(&dir, h->data_dir, DATA_DB);
    h->db = db_open(dir.data, e);
    if (!h->db)
        goto fail;
    buf_reset(&dir);
    data_path(&dir, h->data_dir, DATA_STORE);
    h->store = store_open(dir.data, !config->maintenance, e);
    if (!h->store)
        goto fail;
    h->multipart = hub_multipart_open(h, !config->maintenance);
    buf_free(&dir);
    return h;
fail:
    buf_free(&dir);
    hub_close(h);
    return NULL;
}

void hub_close(hub *h)
{
    if (!h)
        return;
    hub_multipart_close(h);
    store_close(h->store);
    db_close(h->db);
    free(h->data_dir);
    free(h);
}

db *hub_db(hub *h) { return h->db; }
