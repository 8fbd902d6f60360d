/* common — what every hub handler needs: finding the repo a request names (with visibility,
 * permissions and redirects after moves), revisions, URLs, JSON bodies and signed URLs. */
#include "hub/internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *hub_type_prefix(const char *type)
{
    if (!strcmp(type, "dataset"))
        return "datasets/";
    if (!strcmp(type, "space"))
        return "spaces/";
    return "";
}

void hub_repo_url(http_request *req, const char *type, const char *ns, const char *name, buf *out)
{
    buf_printf(out, "%s/%s%s/%s", http_base_url(req), hub_type_prefix(type), ns, name);
}

void hub_git_dir(const hub *h, const char *uid, buf *out)
{
    data_repo_path(out, h->data_dir, uid);
}

static void reply_repo_not_found(http_request *req)
{
    http_reply_errorf(req, 404, "RepoNotFound",
                      "Repository not found. If the repo is private, make sure you are "
                      "authenticated and have access to it.");
}

/* 307 to the same URL with the moved repo's new id (relative Location, as Py requires). */
static void reply_moved(http_request *req, hub_call *call, const char *ns, const char *name)
{
    const char *raw = http_path(req);
    buf loc = BUF_INIT;
    buf_append(&loc, raw, call->id_start);
    text_percent_encode(&loc, ns, false);
    buf_putc(&loc, '/');
    text_percent_encode(&loc, name, false);
    buf_puts(&loc, raw + call->id_end);
    buf query = BUF_INIT;
    http_query_without(req, "", &query);
    if (query.len) {
        buf_putc(&loc, '?');
        buf_append(&loc, query.data, query.len);
    }
    http_add_header(req, "Location", loc.data);
    http_reply_errorf(req, 307, "", "Repository moved to %s/%s", ns, name);
    buf_free(&query);
    buf_free(&loc);
}

static int load_repo(http_request *req, hub_call *call, bool want_write, bool want_manage);

int hub_load_repo(http_request *req, hub_call *call, bool want_write)
{
    return load_repo(req, call, want_write, false);
}

int hub_load_repo_manage(http_request *req, hub_call *call)
{
    return load_repo(req, call, false, true);
}

static int load_repo(http_request *req, hub_call *call, bool want_write, bool want_manage)
{
    hub *h = call->hub;
    if (!path_is_valid_repo_name(call->ns) || !path_is_valid_repo_name(call->name)) {
        reply_repo_not_found(req);
        return -1;
    }
    err e = ERR_INIT;
    int rc = db_repo_get(h->db, call->type, call->ns, call->name, &call->repo, &e);
    if (rc < 0) {
        http_reply_error(req, &e);
        return -1;
    }
    if (rc > 0) {
        char ns[97], name[97];
        if (db_repo_redirect(h->db, call->type, call->ns, call->name, ns, name, &e) == 0) {
            reply_moved(req, call, ns, name);
            return -1;
        }
        reply_repo_not_found(req);
        return -1;
    }
    call->have_repo = true;
    if (!auth_can_read(&call->caller, &call->repo)) {
        reply_repo_not_found(req);
        return -1;
    }
    bool allowed = want_manage ? auth_can_manage(&call->caller, &call->repo)
                               : !want_write || auth_can_write(&call->caller, &call->repo);
    if (!allowed) {
        if (!call->caller.authenticated)
            http_reply_errorf(req, 401, "", "You must be authenticated (with a write token) to "
                                            "%s %s/%s", want_manage ? "manage" : "write to",
                              call->ns, call->name);
        else
            http_reply_errorf(req, 403, "", "You don't have the rights to %s %s/%s (this needs "
                                            "a token with %s access to it)",
                              want_manage ? "manage" : "write to", call->ns, call->name,
                              want_manage ? "admin" : "write");
        return -1;
    }
    return 0;
}

/* Each server thread keeps its last few opened repositories: opening one costs config reads
 * and stats, and a connection usually asks about the same repo again. A handle is only ever
 * used by its own thread; refs are re-read from disk on every lookup and objects written by
 * others are found (libgit2 refreshes the object database on a miss), so a cached handle never
 * serves stale data. Repos are keyed by their immutable uid. */
#define GIT_CACHE_SLOTS 8

typedef struct git_cache {
    struct {
        char uid[25];
        repo *r;
    } slot[GIT_CACHE_SLOTS];
    unsigned next;
} git_cache;

static pthread_key_t git_cache_key;
static pthread_once_t git_cache_once = PTHREAD_ONCE_INIT;

static void git_cache_free(void *p)
{
    git_cache *c = p;
    for (int i = 0; i < GIT_CACHE_SLOTS; i++)
        repo_close(c->slot[i].r);
    free(c);
}

static void git_cache_init(void) { pthread_key_create(&git_cache_key, git_cache_free); }

repo *hub_open_git(http_request *req, hub_call *call)
{
    pthread_once(&git_cache_once, git_cache_init);
    git_cache *c = pthread_getspecific(git_cache_key);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            abort();
        pthread_setspecific(git_cache_key, c);
    }
    for (int i = 0; i < GIT_CACHE_SLOTS; i++)
        if (c->slot[i].r && !strcmp(c->slot[i].uid, call->repo.uid))
            return c->slot[i].r;
    buf dir = BUF_INIT;
    hub_git_dir(call->hub, call->repo.uid, &dir);
    err e = ERR_INIT;
    repo *r = repo_open(dir.data, &e);
    buf_free(&dir);
    if (!r) {
        http_reply_error(req, &e);
        return NULL;
    }
    unsigned k = c->next++ % GIT_CACHE_SLOTS;
    repo_close(c->slot[k].r);
    c->slot[k].r = r;
    snprintf(c->slot[k].uid, sizeof c->slot[k].uid, "%s", call->repo.uid);
    return r;
}

void hub_close_git(repo *r)
{
    (void)r; /* stays in the thread's cache */
}

int hub_resolve_rev(http_request *req, hub_call *call, repo *r, char sha[41])
{
    err e = ERR_INIT;
    const char *rev = call->rev && *call->rev ? call->rev : "main";
    if (repo_resolve(r, rev, sha, &e) != 0) {
        http_reply_error(req, &e);
        return -1;
    }
    return 0;
}

repo *hub_open_at_rev(http_request *req, hub_call *call, bool want_write, char sha[41])
{
    if (hub_load_repo(req, call, want_write) != 0)
        return NULL;
    repo *r = hub_open_git(req, call);
    if (r && hub_resolve_rev(req, call, r, sha) != 0)
        return NULL; /* the handle stays in the thread's cache */
    return r;
}

json_t *hub_json_body(http_request *req)
{
    const buf *body = http_body(req);
    json_error_t je;
    json_t *j = body->len ? json_loadb(body->data, body->len, 0, &je) : NULL;
    if (!j || !json_is_object(j)) {
        json_decref(j);
        http_reply_errorf(req, 400, "", "the request body must be a JSON object%s%s",
                          body->len ? ": " : "", body->len ? je.text : "");
        return NULL;
    }
    return j;
}

void hub_sign(const hub *h, const char *purpose, const char *uid, const char *oid, int64_t size,
              int64_t exp, char out[65])
{
    buf msg = BUF_INIT;
    buf_printf(&msg, "%s\n%s\n%s\n%lld\n%lld", purpose, uid, oid, (long long)size,
               (long long)exp);
    uint8_t mac[32];
    hash_hmac_sha256(h->secret, sizeof h->secret, msg.data, msg.len, mac);
    hex_encode(mac, sizeof mac, out);
    buf_free(&msg);
}

void hub_signed_query(const hub *h, const char *purpose, const char *uid, const char *oid,
                      int64_t size, int64_t ttl, buf *out)
{
    int64_t exp = (int64_t)time(NULL) + ttl;
    char sig[65];
    hub_sign(h, purpose, uid, oid, size, exp, sig);
    buf_printf(out, "?size=%lld&exp=%lld&sig=%s", (long long)size, (long long)exp, sig);
}

bool hub_check_signature(const hub *h, http_request *req, const char *purpose, const char *uid,
                         const char *oid, int64_t size)
{
    int64_t exp = text_parse_i64(http_query(req, "exp"));
    const char *sig = http_query(req, "sig");
    if (exp < 0 || !sig || exp < (int64_t)time(NULL))
        return false;
    char want[65];
    hub_sign(h, purpose, uid, oid, size, exp, want);
    return hash_equal_ct(want, sig);
}

void hub_grant_of(const hub_call *call, hub_grant *out)
{
    memset(out, 0, sizeof *out);
    out->repo_id = call->repo.id;
    snprintf(out->uid, sizeof out->uid, "%s", call->repo.uid);
    if (call->caller.authenticated) {
        out->user_id = call->caller.user.id;
        out->token_id = call->caller.token.id;
    }
}

static bool grant_allows(const auth_caller *caller, const db_repo *row, bool want_write)
{
    return want_write ? auth_can_write(caller, row) : auth_can_read_files(caller, row);
}

int hub_grant_recheck(hub *h, const hub_grant *g, bool want_write, db_repo *repo_out,
                      auth_caller *caller_out, err *e)
{
    db_repo row;
    auth_caller caller;
    int rc = db_repo_by_id(h->db, g->repo_id, &row, e);
    if (rc < 0)
        return -1;
    /* A deleted repo, or another one that reuses its row id: the uid tells them apart. */
    if (rc > 0 || strcmp(row.uid, g->uid) != 0)
        return err_set(e, 404, "RepoNotFound", "Repository not found");
    if (auth_caller_load(h->db, g->user_id, g->token_id, &caller, e) != 0)
        return -1;
    if (!auth_can_read(&caller, &row))
        return err_set(e, 404, "RepoNotFound", "Repository not found");
    if (!grant_allows(&caller, &row, want_write))
        return err_set(e, 403, want_write ? "" : "GatedRepo",
                       want_write ? "this link no longer grants write access to the repository"
                                  : "Access to this repository's files is restricted (gated)");
    if (repo_out)
        *repo_out = row;
    if (caller_out)
        *caller_out = caller;
    return 0;
}

/* The oid field of a bound signature: the object and the caller that obtained the URL. */
static void grant_subject(const hub_grant *g, const char *oid, buf *out)
{
    buf_printf(out, "%s\n%lld\n%lld", oid, (long long)g->user_id, (long long)g->token_id);
}

void hub_grant_query(const hub *h, const char *purpose, const hub_grant *g, const char *oid,
                     int64_t size, int64_t ttl, buf *out)
{
    int64_t exp = (int64_t)time(NULL) + ttl;
    char sig[65];
    buf subject = BUF_INIT;
    grant_subject(g, oid, &subject);
    hub_sign(h, purpose, g->uid, subject.data, size, exp, sig);
    buf_free(&subject);
    buf_printf(out, "?size=%lld&exp=%lld&u=%lld&t=%lld&sig=%s", (long long)size, (long long)exp,
               (long long)g->user_id, (long long)g->token_id, sig);
}

int hub_grant_check_url(http_request *req, hub_call *call, const char *purpose, const char *oid,
                        int64_t size, bool want_write)
{
    hub_grant g = {.repo_id = call->repo.id};
    snprintf(g.uid, sizeof g.uid, "%s", call->repo.uid);
    g.user_id = text_parse_i64(http_query(req, "u"));
    g.token_id = text_parse_i64(http_query(req, "t"));
    buf subject = BUF_INIT;
    grant_subject(&g, oid, &subject);
    bool valid = g.user_id >= 0 && g.token_id >= 0 &&
                 hub_check_signature(call->hub, req, purpose, g.uid, subject.data, size);
    buf_free(&subject);
    if (!valid) {
        http_reply_errorf(req, 403, "", "invalid or expired %s link; ask the LFS batch API for "
                                        "a new one", purpose);
        return -1;
    }
    err e = ERR_INIT;
    char address[sizeof call->caller.address];
    memcpy(address, call->caller.address, sizeof address);
    int rc = hub_grant_recheck(call->hub, &g, want_write, &call->repo, &call->caller, &e);
    memcpy(call->caller.address, address, sizeof address);
    if (rc != 0) {
        http_reply_error(req, &e);
        return -1;
    }
    return 0;
}

int hub_load_repo_files(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, false) != 0)
        return -1;
    if (auth_can_read_files(&call->caller, &call->repo))
        return 0;
    /* As the Hub answers for gated repos: huggingface_hub raises GatedRepoError on the code. */
    const char *what = !strcmp(call->repo.type, "model") ? "model" : call->repo.type;
    if (!call->caller.authenticated)
        http_reply_errorf(req, 401, "GatedRepo", "Access to %s %s/%s is restricted. You must "
                                                 "have access to it and be authenticated to "
                                                 "access it. Please log in.",
                          what, call->repo.ns, call->repo.name);
    else
        http_reply_errorf(req, 403, "GatedRepo", "Access to %s %s/%s is restricted and you are "
                                                 "not in the authorized list. Ask its owner for "
                                                 "access.",
                          what, call->repo.ns, call->repo.name);
    return -1;
}

const char *hub_author(const hub_call *call)
{
    return call->caller.authenticated ? call->caller.user.name : "hearth";
}

void hub_refresh_meta(hub *h, const db_repo *row, repo *r)
{
    char sha[41];
    err e = ERR_INIT;
    if (repo_resolve(r, "main", sha, &e) != 0)
        return;
    json_t *meta = hub_card_meta(h, r, sha, row->type);
    char *meta_text = json_dumps(meta, JSON_COMPACT);
    char *tags_text = json_dumps(json_object_get(meta, "tags"), JSON_COMPACT | JSON_ENCODE_ANY);
    if (db_repo_set_meta(h->db, row->id, sha, text_now_ms(), meta_text,
                         tags_text ? tags_text : "[]", &e) != 0)
        log_warn("cannot store metadata of %s/%s: %s", row->ns, row->name, e.message);
    free(meta_text);
    free(tags_text);
    json_decref(meta);
}

void hub_link_next(http_request *req, const char *cursor)
{
    buf link = BUF_INIT, query = BUF_INIT;
    http_query_without(req, "cursor", &query);
    buf_printf(&link, "<%s%s?", http_base_url(req), http_path(req));
    if (query.len)
        buf_printf(&link, "%s&", query.data);
    buf_puts(&link, "cursor=");
    text_percent_encode(&link, cursor, false);
    buf_puts(&link, ">; rel=\"next\"");
    http_add_header(req, "Link", link.data);
    buf_free(&query);
    buf_free(&link);
}

void hub_audit(hub *h, const auth_caller *who, const char *action, const char *target,
               const char *fmt, ...)
{
    buf detail = BUF_INIT;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        buf_vprintf(&detail, fmt, ap);
        va_end(ap);
    }
    db_audit a = {.actor = who && who->authenticated ? who->user.name : who ? "" : "hearth-admin",
                  .address = who ? who->address : "",
                  .action = action,
                  .target = target,
                  .detail = buf_str(&detail)};
    err e = ERR_INIT;
    /* The write it records has happened: a failure to record it is logged loudly, not undone. */
    if (db_audit_add(h->db, &a, &e) != 0)
        log_error("audit: cannot record %s on %s by %s: %s", action, target, a.actor, e.message);
    buf_free(&detail);
}

void hub_audit_repo(hub *h, const auth_caller *who, const char *action, const db_repo *row,
                    const char *rev, const char *fmt, ...)
{
    buf target = BUF_INIT, detail = BUF_INIT;
    buf_printf(&target, "%s:%s/%s", row->type, row->ns, row->name);
    if (rev)
        buf_printf(&target, "@%s", rev);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        buf_vprintf(&detail, fmt, ap);
        va_end(ap);
    }
    hub_audit(h, who, action, target.data, detail.len ? "%s" : NULL, detail.data);
    buf_free(&target);
    buf_free(&detail);
}
