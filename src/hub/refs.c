/* refs — branches, tags and history: refs listing, commit log with pagination, branch and
 * tag creation and deletion, super-squash (spec §4.5–4.8). */
#include "hub/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *refs_json(const repo_ref *list, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "name", list[i].name, "ref",
                                             list[i].ref, "targetCommit", list[i].target));
    return arr;
}

void hub_refs(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, false) != 0)
        return;
    repo *r = hub_open_git(req, call);
    if (!r)
        return;
    repo_refs refs;
    err e = ERR_INIT;
    if (repo_list_refs(r, &refs, &e) != 0) {
        hub_close_git(r);
        http_reply_error(req, &e);
        return;
    }
    hub_close_git(r);
    json_t *body = json_pack("{s:o, s:o, s:o}", "branches",
                             refs_json(refs.branches, refs.nbranches), "tags",
                             refs_json(refs.tags, refs.ntags), "converts",
                             refs_json(refs.converts, refs.nconverts));
    if (text_truthy(http_query(req, "include_prs")))
        json_object_set_new(body, "pullRequests", refs_json(refs.pulls, refs.npulls));
    repo_refs_free(&refs);
    http_reply_json(req, 200, body);
}

/* Minimal HTML escaping for the `formatted` fields. */
static void html_escape(buf *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': buf_puts(out, "&lt;"); break;
        case '>': buf_puts(out, "&gt;"); break;
        case '&': buf_puts(out, "&amp;"); break;
        case '"': buf_puts(out, "&quot;"); break;
        default: buf_putc(out, *s);
        }
    }
}

void hub_commits(http_request *req, hub_call *call)
{
    char sha[41];
    repo *r = hub_open_at_rev(req, call, false, sha);
    if (!r)
        return;
    int64_t limit = text_parse_i64(http_query(req, "limit"));
    if (limit <= 0)
        limit = 50;
    if (limit > 1000)
        limit = 1000;
    int64_t offset = text_parse_i64(http_query(req, "cursor"));
    int64_t page = text_parse_i64(http_query(req, "p"));
    if (offset < 0)
        offset = page > 0 ? page * limit : 0;
    const char *expand[8];
    size_t nexpand = http_query_all(req, "expand", expand, ARRAY_LEN(expand));
    bool formatted = false;
    for (size_t i = 0; i < nexpand; i++)
        formatted |= !strcmp(expand[i], "formatted");
    repo_log log;
    err e = ERR_INIT;
    if (repo_history(r, sha, offset, limit, &log, &e) != 0) {
        hub_close_git(r);
        http_reply_error(req, &e);
        return;
    }
    hub_close_git(r);
    json_t *out = json_array();
    for (size_t i = 0; i < log.n; i++) {
        const repo_commit_info *c = &log.items[i];
        char date[32];
        text_iso8601(c->time_ms, date);
        json_t *j = json_pack("{s:s, s:s, s:s, s:[{s:s, s:s}], s:s}", "id", c->id, "title",
                              c->title, "message", c->message, "authors", "user", c->author,
                              "avatar", "/avatars/default.svg", "date", date);
        if (formatted) {
            buf t = BUF_INIT, m = BUF_INIT;
            html_escape(&t, c->title);
            html_escape(&m, c->message);
            json_object_set_new(j, "formatted", json_pack("{s:s, s:s}", "title", buf_str(&t),
                                                          "message", buf_str(&m)));
            buf_free(&t);
            buf_free(&m);
        }
        json_array_append_new(out, j);
    }
    char total[32];
    snprintf(total, sizeof total, "%lld", (long long)log.total);
    http_add_header(req, "X-Total-Count", total);
    if (offset + (int64_t)log.n < log.total) {
        char cursor[32];
        snprintf(cursor, sizeof cursor, "%lld", (long long)(offset + (int64_t)log.n));
        hub_link_next(req, cursor);
    }
    repo_log_free(&log);
    http_reply_json(req, 200, out);
}

/* Reads an optional JSON body (empty is fine). */
static json_t *optional_body(http_request *req)
{
    if (http_body(req)->len == 0)
        return json_object();
    return hub_json_body(req);
}

void hub_branch_create(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, true) != 0)
        return;
    json_t *body = optional_body(req);
    if (!body)
        return;
    repo *r = hub_open_git(req, call);
    if (!r) {
        json_decref(body);
        return;
    }
    const char *start = json_string_value(json_object_get(body, "startingPoint"));
    bool empty = json_is_true(json_object_get(body, "emptyBranch"));
    bool overwrite = json_is_true(json_object_get(body, "overwrite"));
    char sha[41] = "";
    err e = ERR_INIT;
    if (!empty && repo_resolve(r, start ? start : "main", sha, &e) != 0) {
        http_reply_error(req, &e);
    } else if (repo_branch_create(r, call->rev, sha, overwrite, empty, hub_author(call), &e) != 0) {
        http_reply_error(req, &e);
    } else {
        db_repo_touch(call->hub->db, call->repo.id, text_now_ms(), &e);
        http_reply_json(req, 200, json_object());
    }
    hub_close_git(r);
    json_decref(body);
}

/* DELETE of a branch or tag named by call->rev. */
static void delete_ref(http_request *req, hub_call *call,
                       int (*remove)(repo *r, const char *name, err *e))
{
    if (hub_load_repo(req, call, true) != 0)
        return;
    repo *r = hub_open_git(req, call);
    if (!r)
        return;
    err e = ERR_INIT;
    if (remove(r, call->rev, &e) != 0)
        http_reply_error(req, &e);
    else
        http_reply_json(req, 200, json_object());
    hub_close_git(r);
}

void hub_branch_delete(http_request *req, hub_call *call)
{
    delete_ref(req, call, repo_branch_delete);
}

void hub_tag_create(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, true) != 0)
        return;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    const char *tag = json_string_value(json_object_get(body, "tag"));
    const char *message = json_string_value(json_object_get(body, "message"));
    repo *r = tag ? hub_open_git(req, call) : NULL;
    if (!tag)
        http_reply_errorf(req, 400, "", "missing \"tag\" in the request body");
    char sha[41];
    err e = ERR_INIT;
    if (r) {
        if (hub_resolve_rev(req, call, r, sha) == 0) {
            if (repo_tag_create(r, tag, sha, message, hub_author(call), &e) != 0)
                http_reply_error(req, &e);
            else
                http_reply_json(req, 200, json_object());
        }
        hub_close_git(r);
    }
    json_decref(body);
}

void hub_tag_delete(http_request *req, hub_call *call) { delete_ref(req, call, repo_tag_delete); }

void hub_super_squash(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, true) != 0)
        return;
    json_t *body = optional_body(req);
    if (!body)
        return;
    const char *message = json_string_value(json_object_get(body, "message"));
    repo *r = hub_open_git(req, call);
    if (r) {
        char sha[41];
        err e = ERR_INIT;
        if (repo_squash(r, call->rev, message && *message ? message : "Super-squash branch",
                        hub_author(call), sha, &e) != 0) {
            http_reply_error(req, &e);
        } else {
            if (!strcmp(call->rev, "main"))
                hub_refresh_meta(call->hub, &call->repo, r);
            http_reply_json(req, 200, json_pack("{s:s}", "commitId", sha));
        }
        hub_close_git(r);
    }
    json_decref(body);
}
