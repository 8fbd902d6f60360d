/* accounts — who is calling and the accounts around them: whoami, user and organisation
 * overviews, members, access tokens, and auth-check. Decisions are auth's; this file parses
 * and replies (spec: hub-api.md; shapes as huggingface_hub and @huggingface/hub read them). */
#include "hub/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void id_of(int64_t id, char out[25]) { snprintf(out, 25, "%024llx", (unsigned long long)id); }

static const char *avatar(void) { return "/avatars/default.svg"; }

/* {"scoped": [{"entity": {...}, "permissions": [...]}], "global": []}, grouped by target. */
static json_t *fine_grained_json(const auth_caller *c)
{
    json_t *scoped = json_array();
    for (size_t i = 0; i < c->nscopes; i++) {
        const auth_scope *s = &c->scopes[i];
        json_t *found = NULL;
        size_t k;
        json_t *item;
        json_array_foreach(scoped, k, item)
        {
            if (!strcmp(json_string_value(json_object_get(json_object_get(item, "entity"),
                                                          "name")),
                        s->target))
                found = item;
        }
        if (!found) {
            bool whole = text_ends_with(s->target, "/*");
            char name[sizeof s->target];
            memcpy(name, s->target, sizeof name);
            if (whole)
                name[strlen(name) - 2] = '\0';
            found = json_pack("{s:{s:s, s:s}, s:[]}", "entity", "type", whole ? "org" : "model",
                              "name", whole ? name : s->target, "permissions");
            json_array_append_new(scoped, found);
        }
        json_array_append_new(json_object_get(found, "permissions"), json_string(s->perm));
    }
    return json_pack("{s:o, s:[], s:b}", "scoped", scoped, "global", "canReadGatedRepos", 0);
}

void hub_whoami(http_request *req, hub_call *call)
{
    if (!call->caller.authenticated) {
        http_reply_errorf(req, 401, "", "You must be authenticated: pass a token in the "
                                        "Authorization header (hearth admin create-token)");
        return;
    }
    const auth_caller *c = &call->caller;
    const db_user *u = &c->user;
    const db_token *t = &c->token;
    char created[32], uid[25];
    text_iso8601(t->created_ms, created);
    id_of(u->id, uid);
    json_t *orgs = json_array();
    db_member *members = NULL;
    size_t n = 0;
    err e = ERR_INIT;
    if (db_user_orgs(call->hub->db, u->id, &members, &n, &e) == 0)
        for (size_t i = 0; i < n; i++) {
            char oid[25];
            id_of(members[i].org_id, oid);
            json_array_append_new(
                orgs, json_pack("{s:s, s:s, s:s, s:s, s:n, s:b, s:s, s:n, s:s, s:b}", "type", "org",
                                "id", oid, "name", members[i].org, "fullname",
                                members[i].org_fullname, "email", "canPay", 0, "avatarUrl",
                                avatar(), "periodEnd", "roleInOrg", members[i].role,
                                "isEnterprise", 0));
        }
    free(members);
    json_t *token = json_pack("{s:s, s:s, s:s}", "displayName", t->name, "role", t->role,
                              "createdAt", created);
    if (!strcmp(t->role, "fineGrained"))
        json_object_set_new(token, "fineGrained", fine_grained_json(c));
    json_t *body = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:n, s:s, s:o, s:b, s:{s:s, s:o}}", "type",
        "user", "id", uid, "name", u->name, "fullname", u->fullname[0] ? u->fullname : u->name,
        "email", u->email, "emailVerified", 1, "canPay", 0, "isPro", 0, "periodEnd", "avatarUrl",
        avatar(), "orgs", orgs, "isAdmin", u->is_admin, "auth", "type", "access_token",
        "accessToken", token);
    http_reply_json(req, 200, body);
}

/* Public repo counts of a namespace, as overviews carry them. */
static void add_counts(hub *h, json_t *j, const char *ns)
{
    static const char *types[][2] = {{"model", "numModels"}, {"dataset", "numDatasets"},
                                     {"space", "numSpaces"}};
    for (size_t i = 0; i < ARRAY_LEN(types); i++) {
        int64_t n = 0;
        err e = ERR_INIT;
        db_repo_count(h->db, types[i][0], ns, &n, &e);
        json_object_set_new(j, types[i][1], json_integer(n));
    }
}

/* call->ns names a user (want_org false) or an organisation; 404 otherwise. */
static int load_account(http_request *req, hub_call *call, bool want_org, db_user *out)
{
    err e = ERR_INIT;
    int rc = path_is_valid_repo_name(call->ns) ? db_user_by_name(call->hub->db, call->ns, out, &e)
                                                : 1;
    if (rc < 0) {
        http_reply_error(req, &e);
        return -1;
    }
    if (rc > 0 || out->is_org != want_org) {
        http_reply_errorf(req, 404, "", "%s not found", want_org ? "Organization" : "User");
        return -1;
    }
    return 0;
}

void hub_user_overview(http_request *req, hub_call *call)
{
    db_user u;
    if (load_account(req, call, false, &u) != 0)
        return;
    char created[32], uid[25];
    text_iso8601(u.created_ms, created);
    id_of(u.id, uid);
    json_t *orgs = json_array();
    db_member *members = NULL;
    size_t n = 0;
    err e = ERR_INIT;
    if (db_user_orgs(call->hub->db, u.id, &members, &n, &e) == 0)
        for (size_t i = 0; i < n; i++)
            json_array_append_new(orgs, json_pack("{s:s, s:s, s:s}", "name", members[i].org,
                                                  "fullname", members[i].org_fullname,
                                                  "avatarUrl", avatar()));
    free(members);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:s, s:o}", "_id", uid, "user", u.name,
                          "fullname", u.fullname, "avatarUrl", avatar(), "type", "user", "isPro",
                          0, "createdAt", created, "orgs", orgs);
    add_counts(call->hub, j, u.name);
    http_reply_json(req, 200, j);
}

void hub_org_overview(http_request *req, hub_call *call)
{
    db_user org;
    if (load_account(req, call, true, &org) != 0)
        return;
    db_member *members = NULL;
    size_t n = 0;
    err e = ERR_INIT;
    db_org_members(call->hub->db, org.id, &members, &n, &e);
    free(members);
    char oid[25];
    id_of(org.id, oid);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:b}", "_id", oid, "name", org.name,
                          "fullname", org.fullname, "avatarUrl", avatar(), "type", "org",
                          "isVerified", 0, "numUsers", (json_int_t)n, "isFollowing", 0);
    add_counts(call->hub, j, org.name);
    http_reply_json(req, 200, j);
}

void hub_org_members(http_request *req, hub_call *call)
{
    db_user org;
    if (load_account(req, call, true, &org) != 0)
        return;
    db_member *members = NULL;
    size_t n = 0;
    err e = ERR_INIT;
    if (db_org_members(call->hub->db, org.id, &members, &n, &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    /* Roles are the organisation's own business: shown to its members only. */
    bool member = auth_role_in(&call->caller, org.name)[0] != '\0';
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_pack("{s:s, s:s, s:s, s:s, s:b}", "user", members[i].user, "fullname",
                              members[i].user_fullname, "avatarUrl", avatar(), "type", "user",
                              "isPro", 0);
        if (member)
            json_object_set_new(m, "role", json_string(members[i].role));
        json_array_append_new(list, m);
    }
    free(members);
    http_reply_json(req, 200, list);
}

/* POST /api/organizations/new {"name", "fullname"} */
void hub_org_create(http_request *req, hub_call *call)
{
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *fullname = json_string_value(json_object_get(body, "fullname"));
    err e = ERR_INIT;
    db_user org;
    if (!name)
        http_reply_errorf(req, 400, "", "\"name\" is required");
    else if (auth_org_create(call->hub->db, &call->caller, name, fullname, &org, &e) != 0)
        http_reply_error(req, &e);
    else {
        log_info("organization %s created by %s", org.name, call->caller.user.name);
        char target[128];
        snprintf(target, sizeof target, "org:%s", org.name);
        hub_audit(call->hub, &call->caller, "org.create", target, NULL);
        http_reply_json(req, 200, json_pack("{s:s, s:s}", "name", org.name, "url",
                                            org.name));
    }
    json_decref(body);
}

/* PUT /api/organizations/{org}/members/{user} {"role"}; DELETE the same. */
void hub_org_member(http_request *req, hub_call *call)
{
    err e = ERR_INIT;
    int rc;
    if (!strcmp(http_method(req), "DELETE")) {
        rc = auth_member_remove(call->hub->db, &call->caller, call->ns, call->extra, &e);
    } else {
        json_t *body = hub_json_body(req);
        if (!body)
            return;
        const char *role = json_string_value(json_object_get(body, "role"));
        rc = auth_member_set(call->hub->db, &call->caller, call->ns, call->extra,
                             role ? role : "read", &e);
        json_decref(body);
    }
    if (rc != 0 && e.status == 403 && !call->caller.authenticated)
        e.status = 401;
    if (rc != 0) {
        http_reply_error(req, &e);
        return;
    }
    char target[128];
    snprintf(target, sizeof target, "org:%s", call->ns);
    hub_audit(call->hub, &call->caller, strcmp(http_method(req), "DELETE") ? "member.set"
                                                                           : "member.remove",
              target, "{\"user\":\"%s\"}", call->extra);
    http_reply_json(req, 200, json_object());
}

/* ---- tokens: GET / POST /api/settings/tokens, DELETE /api/settings/tokens/{id} ---------- */

static json_t *token_json(const db_token *t)
{
    char created[32], used[32] = "";
    text_iso8601(t->created_ms, created);
    if (t->last_used_ms)
        text_iso8601(t->last_used_ms, used);
    json_t *j = json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)t->id, "displayName", t->name,
                          "role", t->role, "createdAt", created);
    json_object_set_new(j, "lastUsedAt", used[0] ? json_string(used) : json_null());
    if (t->scopes[0])
        json_object_set_new(j, "scopes", json_string(t->scopes));
    return j;
}

void hub_tokens(http_request *req, hub_call *call)
{
    const auth_caller *c = &call->caller;
    if (!auth_can_manage_tokens(c)) {
        http_reply_errorf(req, c->authenticated ? 403 : 401, "",
                          "Managing access tokens needs a write token");
        return;
    }
    hub *h = call->hub;
    err e = ERR_INIT;
    const char *method = http_method(req);
    if (!strcmp(method, "GET")) {
        db_token *list = NULL;
        size_t n = 0;
        if (db_token_list(h->db, c->user.id, &list, &n, &e) != 0) {
            http_reply_error(req, &e);
            return;
        }
        json_t *out = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(out, token_json(&list[i]));
        free(list);
        http_reply_json(req, 200, out);
        return;
    }
    if (!strcmp(method, "DELETE")) {
        int64_t id = text_parse_i64(call->extra);
        db_token t;
        int rc = id > 0 ? db_token_by_id(h->db, id, &t, &e) : 1;
        if (rc == 0 && t.user_id != c->user.id)
            rc = 1; /* someone else's token: as if there were none */
        if (rc == 0)
            rc = db_token_delete(h->db, id, &e);
        if (rc < 0)
            http_reply_error(req, &e);
        else if (rc > 0)
            http_reply_errorf(req, 404, "", "No access token %s", call->extra);
        else {
            log_info("token %lld of %s revoked", (long long)id, c->user.name);
            char target[64];
            snprintf(target, sizeof target, "token:%lld", (long long)id);
            hub_audit(h, c, "token.revoke", target, NULL);
            http_reply_json(req, 200, json_object());
        }
        return;
    }
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    const char *name = json_string_value(json_object_get(body, "displayName"));
    if (!name)
        name = json_string_value(json_object_get(body, "name"));
    const char *role = json_string_value(json_object_get(body, "role"));
    const char *scopes = json_string_value(json_object_get(body, "scopes"));
    char secret[40];
    int64_t id = 0;
    int rc;
    if (scopes || (role && !strcmp(role, "fineGrained")))
        rc = auth_token_create_scoped(h->db, c->user.name, scopes ? scopes : "", name, secret, &id,
                                      &e);
    else
        rc = auth_token_create(h->db, c->user.name, role ? role : "read", name, secret, &id, &e);
    json_decref(body);
    if (rc != 0) {
        http_reply_error(req, &e);
        return;
    }
    char target[64];
    snprintf(target, sizeof target, "token:%lld", (long long)id);
    hub_audit(h, c, "token.create", target, NULL);
    /* The secret is shown once, here; only its hash is kept. */
    http_reply_json(req, 200, json_pack("{s:s, s:I}", "token", secret, "id", (json_int_t)id));
}

/* GET /api/{type}s/{id}/auth-check[/write]: 200 when the caller may read the repo's files (or
 * write it), the usual 401 / 403 GatedRepo / 404 otherwise. */
void hub_auth_check(http_request *req, hub_call *call)
{
    bool write = call->extra && !strcmp(call->extra, "write");
    if ((write ? hub_load_repo(req, call, true) : hub_load_repo_files(req, call)) != 0)
        return;
    http_reply_json(req, 200, json_object());
}

/* ---- access requests to gated repos (as HfApi's *_access_request and grant_access call) --- */

static void access_row(void *ctx, const db_access *a)
{
    char at[32];
    text_iso8601(a->at_ms, at);
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)a->id);
    json_t *fields = json_loads(a->fields, 0, NULL);
    json_array_append_new(ctx, json_pack("{s:{s:s, s:s, s:s, s:s}, s:s, s:s, s:s, s:o}", "user",
                                         "user", a->user, "fullname", a->fullname, "email",
                                         a->email, "avatarUrl", avatar(), "requestId", id,
                                         "status", a->status, "timestamp", at, "fields",
                                         fields ? fields : json_object()));
}

/* The repo, for someone who may handle its access requests; 400 when it is not gated. */
static int load_gated_for_handling(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, false) != 0)
        return -1;
    if (!auth_can_handle_access(&call->caller, &call->repo)) {
        http_reply_errorf(req, call->caller.authenticated ? 403 : 401, "",
                          "Handling access requests to %s/%s needs write access to it",
                          call->ns, call->name);
        return -1;
    }
    if (!call->repo.gated[0]) {
        http_reply_errorf(req, 400, "", "%s/%s is not gated", call->ns, call->name);
        return -1;
    }
    return 0;
}

/* GET .../user-access-request/{pending|accepted|rejected} */
void hub_access_list(http_request *req, hub_call *call)
{
    const char *status = call->extra;
    if (strcmp(status, "pending") && strcmp(status, "accepted") && strcmp(status, "rejected")) {
        http_reply_errorf(req, 400, "", "status must be pending, accepted or rejected");
        return;
    }
    if (load_gated_for_handling(req, call) != 0)
        return;
    json_t *out = json_array();
    err e = ERR_INIT;
    if (db_access_list(call->hub->db, call->repo.id, status, access_row, out, &e) != 0) {
        json_decref(out);
        http_reply_error(req, &e);
        return;
    }
    http_reply_json(req, 200, out);
}

/* The user a handle / grant body names, by "user" or "requestId". */
static int named_user(http_request *req, hub_call *call, json_t *body, db_user *out)
{
    const char *name = json_string_value(json_object_get(body, "user"));
    const char *request = json_string_value(json_object_get(body, "requestId"));
    err e = ERR_INIT;
    int rc = 1;
    if (name) {
        rc = db_user_by_name(call->hub->db, name, out, &e);
    } else if (request) {
        int64_t user_id;
        rc = db_access_user_of(call->hub->db, call->repo.id, text_parse_i64(request), &user_id, &e);
        if (rc == 0)
            rc = db_user_by_id(call->hub->db, user_id, out, &e);
    }
    if (rc < 0)
        http_reply_error(req, &e);
    else if (rc > 0 || out->is_org)
        http_reply_errorf(req, 404, "", "no such user or request");
    return rc == 0 && !out->is_org ? 0 : -1;
}

static void record_access(hub_call *call, const char *action, const char *user, const char *status)
{
    hub_audit_repo(call->hub, &call->caller, action, &call->repo, NULL,
                   "{\"user\":\"%s\",\"status\":\"%s\"}", user, status);
}

/* POST .../user-access-request/handle {"user" | "requestId", "status", "rejectionReason"?} */
void hub_access_handle(http_request *req, hub_call *call)
{
    if (load_gated_for_handling(req, call) != 0)
        return;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    const char *status = json_string_value(json_object_get(body, "status"));
    const char *reason = json_string_value(json_object_get(body, "rejectionReason"));
    db_user u;
    char had[16];
    err e = ERR_INIT;
    if (!status || (strcmp(status, "pending") && strcmp(status, "accepted") &&
                    strcmp(status, "rejected")))
        http_reply_errorf(req, 400, "", "status must be pending, accepted or rejected");
    else if (named_user(req, call, body, &u) != 0)
        ;
    else if (db_access_status(call->hub->db, call->repo.id, u.id, had, &e) != 0)
        http_reply_errorf(req, 404, "", "%s has not asked for access to %s/%s", u.name, call->ns,
                          call->name);
    else if (db_access_set(call->hub->db, call->repo.id, u.id, status, NULL, reason, &e) != 0)
        http_reply_error(req, &e);
    else {
        record_access(call, "access.handle", u.name, status);
        http_reply_json(req, 200, json_object());
    }
    json_decref(body);
}

/* POST .../user-access-request/grant {"user"} */
void hub_access_grant(http_request *req, hub_call *call)
{
    if (load_gated_for_handling(req, call) != 0)
        return;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    db_user u;
    char had[16];
    err e = ERR_INIT;
    if (named_user(req, call, body, &u) != 0)
        ;
    else if (db_access_status(call->hub->db, call->repo.id, u.id, had, &e) == 0 &&
             !strcmp(had, "accepted"))
        http_reply_errorf(req, 400, "", "%s already has access to %s/%s", u.name, call->ns,
                          call->name);
    else if (db_access_set(call->hub->db, call->repo.id, u.id, "accepted", NULL, NULL, &e) != 0)
        http_reply_error(req, &e);
    else {
        record_access(call, "access.grant", u.name, "accepted");
        http_reply_json(req, 200, json_object());
    }
    json_decref(body);
}

/* An application/x-www-form-urlencoded body as a JSON object of strings (bad pairs skipped). */
static json_t *form_fields(const char *body, size_t len)
{
    json_t *out = json_object();
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        buf name = BUF_INIT, value = BUF_INIT;
        if (eq && text_percent_decode(p, (size_t)(eq - p), true, &name) == 0 &&
            text_percent_decode(eq + 1, (size_t)(stop - eq - 1), true, &value) == 0 && name.len &&
            json_object_size(out) < 64)
            json_object_set_new(out, name.data, json_stringn(buf_str(&value), value.len));
        buf_free(&name);
        buf_free(&value);
        p = stop + 1;
    }
    return out;
}

/* POST /{repo}/ask-access and /api/{type}s/{repo}/ask-access: the gate form. Fields come as a
 * JSON object (or a form, from a browser); "auto" gating accepts at once. */
void hub_access_ask(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, false) != 0)
        return;
    if (!call->caller.authenticated) {
        http_reply_errorf(req, 401, "", "Sign in (or pass a token) to ask for access");
        return;
    }
    if (!call->repo.gated[0]) {
        http_reply_errorf(req, 400, "", "%s/%s is not gated", call->ns, call->name);
        return;
    }
    const buf *raw = http_body(req);
    json_t *fields = raw->len ? json_loadb(raw->data, raw->len, 0, NULL) : NULL;
    if (fields && json_is_object(json_object_get(fields, "fields"))) {
        json_t *inner = json_incref(json_object_get(fields, "fields"));
        json_decref(fields);
        fields = inner;
    }
    if (!json_is_object(fields)) {
        json_decref(fields);
        fields = form_fields(buf_str(raw), raw->len);
    }
    char *text = json_dumps(fields, JSON_COMPACT);
    json_decref(fields);
    const char *status = !strcmp(call->repo.gated, "auto") ? "accepted" : "pending";
    char had[16];
    err e = ERR_INIT;
    int rc = 0;
    if (db_access_status(call->hub->db, call->repo.id, call->caller.user.id, had, &e) == 0 &&
        strcmp(had, "pending") != 0 && !strcmp(status, "pending"))
        status = had; /* asking again changes nothing once decided */
    rc = db_access_set(call->hub->db, call->repo.id, call->caller.user.id, status, text, NULL, &e);
    free(text);
    if (rc != 0) {
        http_reply_error(req, &e);
        return;
    }
    record_access(call, "access.request", call->caller.user.name, status);
    http_reply_json(req, 200, json_pack("{s:s}", "status", status));
}
