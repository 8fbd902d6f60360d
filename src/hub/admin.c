/* admin — maintenance over a whole data directory: which stored files the repos still
 * reference (every LFS pointer reachable from any ref of any repo), garbage collection,
 * consistency checks and storage statistics. Used by `hearth admin` and /api/admin/stats. */
#include "hub/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A set of SHA-256 hex strings (open addressing). */
typedef struct oid_set {
    char (*slots)[65];
    size_t cap, used;
} oid_set;

static uint64_t oid_slot(const char *oid, size_t cap)
{
    uint64_t h = 0;
    for (int i = 0; i < 16; i++)
        h = h * 16 + (uint64_t)(oid[i] <= '9' ? oid[i] - '0' : oid[i] - 'a' + 10);
    return h & (cap - 1);
}

static bool oid_set_has(const oid_set *s, const char *oid)
{
    if (!s->cap)
        return false;
    for (size_t i = oid_slot(oid, s->cap);; i = (i + 1) & (s->cap - 1)) {
        if (!s->slots[i][0])
            return false;
        if (!strcmp(s->slots[i], oid))
            return true;
    }
}

static void oid_set_add(oid_set *s, const char *oid)
{
    if (oid_set_has(s, oid))
        return;
    if ((s->used + 1) * 2 > s->cap) {
        oid_set bigger = {calloc(s->cap ? s->cap * 2 : 256, 65), s->cap ? s->cap * 2 : 256, 0};
        if (!bigger.slots)
            abort();
        for (size_t i = 0; i < s->cap; i++)
            if (s->slots[i][0])
                oid_set_add(&bigger, s->slots[i]);
        free(s->slots);
        *s = bigger;
    }
    size_t i = oid_slot(oid, s->cap);
    while (s->slots[i][0])
        i = (i + 1) & (s->cap - 1);
    memcpy(s->slots[i], oid, 65);
    s->used++;
}

static int add_pointer(void *ctx, const repo_lfs *p)
{
    oid_set_add(ctx, p->oid);
    return 0;
}

typedef int (*repo_visit_fn)(void *ctx, const db_repo *row, repo *r, err *e);

/* Calls fn for every repo of every type, private ones included. */
static int each_repo(hub *h, repo_visit_fn fn, void *ctx, err *e)
{
    const char *types[] = {"model", "dataset", "space"};
    for (size_t t = 0; t < ARRAY_LEN(types); t++) {
        for (int64_t offset = 0;; offset += 500) {
            db_repo_query q = {.type = types[t], .everything = true, .sort = "id",
                               .ascending = true, .offset = offset, .limit = 500};
            db_repo *rows = NULL;
            size_t n = 0;
            if (db_repo_list(h->db, &q, &rows, &n, e) != 0)
                return -1;
            int rc = 0;
            for (size_t i = 0; i < n; i++) {
                if (rc == 0) {
                    buf dir = BUF_INIT;
                    hub_git_dir(h, rows[i].uid, &dir);
                    repo *r = repo_open(dir.data, e);
                    buf_free(&dir);
                    rc = r ? fn(ctx, &rows[i], r, e) : -1;
                    repo_close(r);
                }
                db_repo_free(&rows[i]);
            }
            free(rows);
            if (rc != 0)
                return -1;
            if (n < 500)
                break;
        }
    }
    return 0;
}

static int collect_live(void *ctx, const db_repo *row, repo *r, err *e)
{
    return repo_each_lfs_pointer(r, add_pointer, ctx, e);
}

static bool is_live(void *ctx, const char *oid) { return oid_set_has(ctx, oid); }

int hub_admin_gc(hub *h, int64_t grace_ms, double min_dead, json_t **result, err *e)
{
    oid_set live = {0};
    store_gc_result gc;
    int rc = each_repo(h, collect_live, &live, e);
    if (rc == 0)
        rc = store_gc(h->store, is_live, &live, grace_ms, min_dead, &gc, e);
    free(live.slots);
    if (rc == 0)
        *result = json_pack("{s:I, s:I, s:I, s:I}", "filesRemoved", (json_int_t)gc.files_removed,
                            "packsRemoved", (json_int_t)gc.packs_removed, "packsRewritten",
                            (json_int_t)gc.packs_rewritten, "bytesReclaimed",
                            (json_int_t)gc.bytes_reclaimed);
    return rc;
}

typedef struct fsck_ctx {
    hub *h;
    hub_report_fn report;
    void *report_ctx;
    int64_t problems;
    const db_repo *row;
} fsck_ctx;

static int check_pointer(void *ctx, const repo_lfs *p)
{
    fsck_ctx *f = ctx;
    int64_t size;
    err e = ERR_INIT;
    int rc = store_stat(f->h->store, p->oid, &size, &e);
    if (rc != 0 || size != p->size) {
        char line[512];
        snprintf(line, sizeof line, "repo %s/%s (%s): LFS file %s is %s", f->row->ns,
                 f->row->name, f->row->type, p->oid,
                 rc == 0 ? "stored with another size" : "missing from the store");
        f->problems++;
        if (f->report)
            f->report(f->report_ctx, line);
    }
    return 0;
}

static int fsck_repo(void *ctx, const db_repo *row, repo *r, err *e)
{
    fsck_ctx *f = ctx;
    f->row = row;
    return repo_each_lfs_pointer(r, check_pointer, f, e);
}

int64_t hub_admin_fsck(hub *h, hub_report_fn report, void *ctx, err *e)
{
    int64_t problems = store_fsck(h->store, report, ctx, e);
    if (problems < 0)
        return -1;
    fsck_ctx f = {.h = h, .report = report, .report_ctx = ctx};
    if (each_repo(h, fsck_repo, &f, e) != 0)
        return -1;
    return problems + f.problems;
}

typedef struct stats_ctx {
    hub *h;
    json_t *repos;
} stats_ctx;

static int repo_stats(void *ctx, const db_repo *row, repo *r, err *e)
{
    stats_ctx *st = ctx;
    oid_set oids = {0};
    if (repo_each_lfs_pointer(r, add_pointer, &oids, e) != 0) {
        free(oids.slots);
        return -1;
    }
    const char **list = calloc(oids.used ? oids.used : 1, sizeof *list);
    if (!list)
        abort();
    size_t n = 0;
    for (size_t i = 0; i < oids.cap; i++)
        if (oids.slots[i][0])
            list[n++] = oids.slots[i];
    int64_t logical = 0, unique = 0;
    int rc = store_files_stats(st->h->store, list, n, &logical, &unique, e);
    if (rc == 0) {
        char id[200];
        snprintf(id, sizeof id, "%s/%s", row->ns, row->name);
        json_array_append_new(st->repos, json_pack("{s:s, s:s, s:I, s:I, s:I}", "id", id, "type",
                                                   row->type, "files", (json_int_t)n,
                                                   "logicalBytes", (json_int_t)logical,
                                                   "uniqueStoredBytes", (json_int_t)unique));
    }
    free(list);
    free(oids.slots);
    return rc;
}

int hub_admin_stats(hub *h, bool per_repo, json_t **result, err *e)
{
    store_stats s;
    if (store_get_stats(h->store, &s, e) != 0)
        return -1;
    double ratio = s.stored_bytes ? (double)s.logical_bytes / (double)s.stored_bytes : 1.0;
    json_t *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:f}", "files", (json_int_t)s.files,
                            "logicalBytes", (json_int_t)s.logical_bytes, "storedBytes",
                            (json_int_t)s.stored_bytes, "packs", (json_int_t)s.packs, "chunks",
                            (json_int_t)s.chunks, "dedupRatio", ratio);
    if (per_repo) {
        stats_ctx st = {h, json_array()};
        if (each_repo(h, repo_stats, &st, e) != 0) {
            json_decref(st.repos);
            json_decref(out);
            return -1;
        }
        json_object_set_new(out, "repos", st.repos);
    }
    *result = out;
    return 0;
}

/* GET /api/admin/stats (administrators only). */
static bool require_admin(http_request *req, hub_call *call)
{
    if (!call->caller.authenticated) {
        http_reply_errorf(req, 401, "", "administrators only: authenticate with an admin's token");
        return false;
    }
    /* Reading stats or the audit log: any token of an administrator but a fine-grained one. */
    if (!call->caller.user.is_admin || !strcmp(call->caller.token.role, "fineGrained")) {
        http_reply_errorf(req, 403, "", "administrators only (hearth admin create-user NAME "
                                        "--admin)");
        return false;
    }
    return true;
}

static void audit_row(void *ctx, const db_audit *a)
{
    char at[32];
    text_iso8601(a->at_ms, at);
    json_t *detail = a->detail[0] ? json_loads(a->detail, 0, NULL) : NULL;
    json_array_append_new(ctx, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:o}", "id",
                                         (json_int_t)a->id, "at", at, "actor", a->actor,
                                         "address", a->address, "action", a->action, "target",
                                         a->target, "detail", detail ? detail : json_object()));
}

/* GET /api/admin/audit?since=<unix ms>&target=<type:ns/name>&user=<name>&limit=N */
void hub_admin_audit_route(http_request *req, hub_call *call)
{
    if (!require_admin(req, call))
        return;
    int64_t since = text_parse_i64(http_query(req, "since"));
    int64_t limit = text_parse_i64(http_query(req, "limit"));
    db_audit_query q = {.since_ms = since > 0 ? since : 0,
                        .target = http_query(req, "target"),
                        .actor = http_query(req, "user"),
                        .limit = limit > 0 && limit < 10000 ? limit : 1000};
    json_t *out = json_array();
    err e = ERR_INIT;
    if (db_audit_list(call->hub->db, &q, audit_row, out, &e) != 0) {
        json_decref(out);
        http_reply_error(req, &e);
        return;
    }
    http_reply_json(req, 200, out);
}

void hub_admin_stats_route(http_request *req, hub_call *call)
{
    if (!require_admin(req, call))
        return;
    json_t *out = NULL;
    err e = ERR_INIT;
    if (hub_admin_stats(call->hub, !text_truthy(http_query(req, "summary")), &out, &e) != 0)
        http_reply_error(req, &e);
    else
        http_reply_json(req, 200, out);
}
