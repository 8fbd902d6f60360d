/* repos — identity and repository lifecycle: whoami, create, delete, move, settings,
 * README metadata validation. */
#include "hub/internal.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hub_whoami(http_request *req, hub_call *call)
{
    if (!call->caller.authenticated) {
        http_reply_errorf(req, 401, "", "You must be authenticated: pass a token in the "
                                        "Authorization header (hearth admin create-token)");
        return;
    }
    const db_user *u = &call->caller.user;
    const db_token *t = &call->caller.token;
    char created[32], uid[25];
    text_iso8601(t->created_ms, created);
    snprintf(uid, sizeof uid, "%024llx", (unsigned long long)u->id);
    json_t *body = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:n, s:s, s:[], s:{s:s, s:{s:s, s:s, s:s}}}",
        "type", "user", "id", uid, "name", u->name, "fullname",
        u->fullname[0] ? u->fullname : u->name, "email", u->email, "emailVerified", 1, "canPay", 0,
        "isPro", 0, "periodEnd", "avatarUrl", "/avatars/default.svg", "orgs", "auth", "type",
        "access_token", "accessToken", "displayName", t->name, "role", t->role, "createdAt",
        created);
    http_reply_json(req, 200, body);
}

void hub_validate_yaml(http_request *req, hub_call *call)
{
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    const char *content = json_string_value(json_object_get(body, "content"));
    err e = ERR_INIT;
    json_t *card = content ? hub_card_parse(content, strlen(content), &e) : json_object();
    if (!card) {
        http_add_header(req, "X-Error-Message", e.message);
        http_reply_json(req, 400,
                        json_pack("{s:[{s:s}], s:[], s:s}", "errors", "message", e.message,
                                  "warnings", "error", e.message));
    } else {
        http_reply_json(req, 200, json_pack("{s:[], s:[]}", "errors", "warnings"));
    }
    json_decref(card);
    json_decref(body);
}

static bool valid_type(const char *t)
{
    return !strcmp(t, "model") || !strcmp(t, "dataset") || !strcmp(t, "space");
}

/* Reads type, organization/name (or "ns/name" in name) from a create/delete body. */
static int body_repo_id(http_request *req, hub_call *call, json_t *body)
{
    const char *type = json_string_value(json_object_get(body, "type"));
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *org = json_string_value(json_object_get(body, "organization"));
    snprintf(call->type, sizeof call->type, "%s", type ? type : "model");
    if (!valid_type(call->type)) {
        http_reply_errorf(req, 400, "", "Invalid repo type '%s': use model, dataset or space",
                          type);
        return -1;
    }
    if (!name || !*name) {
        http_reply_errorf(req, 400, "", "Missing repo name");
        return -1;
    }
    const char *slash = strchr(name, '/');
    if (slash && !org) {
        snprintf(call->ns, sizeof call->ns, "%.*s", (int)(slash - name), name);
        snprintf(call->name, sizeof call->name, "%s", slash + 1);
    } else {
        snprintf(call->ns, sizeof call->ns, "%s",
                 org && *org ? org : call->caller.authenticated ? call->caller.user.name : "");
        snprintf(call->name, sizeof call->name, "%s", name);
    }
    if (!path_is_valid_repo_name(call->name) || strlen(name) > 96 ||
        (call->ns[0] && !path_is_valid_repo_name(call->ns))) {
        http_reply_errorf(req, 400, "",
                          "Invalid repo name '%s': use letters, digits, '-', '_' and '.', "
                          "at most 96 characters, not starting or ending with '-' or '.', "
                          "no '--' or '..', not ending with '.git'",
                          name);
        return -1;
    }
    return 0;
}

static bool require_writer(http_request *req, hub_call *call)
{
    if (!call->caller.authenticated) {
        http_reply_errorf(req, 401, "", "You must be authenticated with a write token to do "
                                        "this");
        return false;
    }
    if (strcmp(call->caller.token.role, "write") != 0) {
        http_reply_errorf(req, 403, "", "This needs a write token; yours is read-only");
        return false;
    }
    return true;
}

/* Decodes the base64 `files` of a JS createRepo call into ops-ready buffers. */
static int decode_initial_files(http_request *req, json_t *files, repo_file **out, size_t *n,
                                buf **storage)
{
    *n = json_array_size(files);
    *out = calloc(*n + 2, sizeof **out);
    *storage = calloc(*n + 2, sizeof **storage);
    if (!*out || !*storage)
        abort();
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *path = json_string_value(json_object_get(f, "path"));
        const char *content = json_string_value(json_object_get(f, "content"));
        if (!path || !content || !path_is_valid_repo_path(path, strlen(path))) {
            http_reply_errorf(req, 422, "", "invalid initial file %s", path ? path : "(no path)");
            return -1;
        }
        size_t clen = strlen(content);
        buf_reserve(&(*storage)[i], clen);
        int len = EVP_DecodeBlock((unsigned char *)(*storage)[i].data,
                                  (const unsigned char *)content, (int)clen);
        if (len < 0) {
            http_reply_errorf(req, 400, "", "initial file %s is not valid base64", path);
            return -1;
        }
        while (len > 0 && clen > 0 && content[clen - 1] == '=') {
            len--;
            clen--;
        }
        (*out)[i].path = path;
        (*out)[i].data = (*storage)[i].data;
        (*out)[i].len = (size_t)len;
    }
    return 0;
}

void hub_repo_create(http_request *req, hub_call *call)
{
    hub *h = call->hub;
    if (!require_writer(req, call))
        return;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    repo_file *files = NULL;
    buf *storage = NULL;
    size_t nfiles = 0;
    buf dir = BUF_INIT, url = BUF_INIT;
    if (body_repo_id(req, call, body) != 0)
        goto out;
    hub_repo_url(req, call->type, call->ns, call->name, &url);
    if (!auth_can_write_namespace(&call->caller, call->ns)) {
        http_reply_errorf(req, 403, "", "You don't have the rights to create a repo under '%s'",
                          call->ns);
        goto out;
    }
    err e = ERR_INIT;
    db_repo existing;
    if (db_repo_get(h->db, call->type, call->ns, call->name, &existing, &e) == 0) {
        db_repo_free(&existing);
        http_reply_json(req, 409,
                        json_pack("{s:s, s:s}", "error", "You already created this repo", "url",
                                  url.data));
        goto out;
    }
    json_t *private_flag = json_object_get(body, "private");
    const char *visibility = json_string_value(json_object_get(body, "visibility"));
    bool is_private = json_is_true(private_flag) ||
                      (visibility && (!strcmp(visibility, "private") ||
                                      !strcmp(visibility, "protected")));
    const char *sdk = json_string_value(json_object_get(body, "sdk"));
    const char *license = json_string_value(json_object_get(body, "license"));
    if (!strcmp(call->type, "space") && sdk &&
        strcmp(sdk, "gradio") && strcmp(sdk, "streamlit") && strcmp(sdk, "docker") &&
        strcmp(sdk, "static")) {
        http_reply_errorf(req, 400, "", "Invalid space sdk '%s': use gradio, streamlit, docker "
                                        "or static", sdk);
        goto out;
    }

    if (decode_initial_files(req, json_object_get(body, "files"), &files, &nfiles, &storage) != 0)
        goto out;
    buf readme = BUF_INIT;
    bool has_attrs = false, has_readme = false;
    for (size_t i = 0; i < nfiles; i++) {
        has_attrs |= !strcmp(files[i].path, ".gitattributes");
        has_readme |= !strcmp(files[i].path, "README.md");
    }
    if (!has_attrs)
        files[nfiles++] = (repo_file){".gitattributes", hub_default_gitattributes,
                                      strlen(hub_default_gitattributes)};
    if (!has_readme && (license || !strcmp(call->type, "space"))) {
        buf_puts(&readme, "---\n");
        if (license)
            buf_printf(&readme, "license: %s\n", license);
        if (!strcmp(call->type, "space"))
            buf_printf(&readme, "sdk: %s\n", sdk ? sdk : "static");
        buf_printf(&readme, "---\n\n# %s\n", call->name);
        files[nfiles++] = (repo_file){"README.md", readme.data, readme.len};
    }

    db_repo row = {0};
    uint8_t rnd[12];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, row.uid);
    snprintf(row.type, sizeof row.type, "%s", call->type);
    snprintf(row.ns, sizeof row.ns, "%s", call->ns);
    snprintf(row.name, sizeof row.name, "%s", call->name);
    snprintf(row.sdk, sizeof row.sdk, "%s", !strcmp(call->type, "space") ? (sdk ? sdk : "static") : "");
    row.is_private = is_private;
    row.owner_id = call->caller.user.id;
    hub_git_dir(h, row.uid, &dir);
    char sha[41];
    if (repo_create(dir.data, files, nfiles, hub_author(call), "initial commit\n", sha, &e) != 0) {
        path_remove_tree(dir.data);
        http_reply_error(req, &e);
        buf_free(&readme);
        goto out;
    }
    buf_free(&readme);
    snprintf(row.head_sha, sizeof row.head_sha, "%s", sha);
    if (db_repo_create(h->db, &row, &e) != 0) {
        path_remove_tree(dir.data);
        if (e.status == 409)
            http_reply_json(req, 409, json_pack("{s:s, s:s}", "error",
                                                "You already created this repo", "url", url.data));
        else
            http_reply_error(req, &e);
        goto out;
    }
    repo *r = repo_open(dir.data, &e);
    if (r) {
        hub_refresh_meta(h, &row, r);
        repo_close(r);
    }
    char id[200];
    snprintf(id, sizeof id, "%s/%s", call->ns, call->name);
    log_info("created %s %s", call->type, id);
    http_reply_json(req, 200, json_pack("{s:s, s:s, s:s}", "url", url.data, "name", id, "id",
                                        row.uid));
out:
    if (storage)
        for (size_t i = 0; i < nfiles; i++)
            buf_free(&storage[i]);
    free(storage);
    free(files);
    buf_free(&dir);
    buf_free(&url);
    json_decref(body);
}

void hub_repo_delete(http_request *req, hub_call *call)
{
    hub *h = call->hub;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    if (body_repo_id(req, call, body) != 0 || hub_load_repo(req, call, true) != 0) {
        json_decref(body);
        return;
    }
    json_decref(body);
    err e = ERR_INIT;
    if (db_repo_delete(h->db, call->repo.id, &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    /* The row is gone, so nothing can reach the directory any more: remove it. */
    buf dir = BUF_INIT;
    hub_git_dir(h, call->repo.uid, &dir);
    if (path_remove_tree(dir.data) != 0)
        log_warn("cannot remove %s: %s", dir.data, strerror(errno));
    buf_free(&dir);
    log_info("deleted %s %s/%s", call->type, call->ns, call->name);
    http_reply_json(req, 200, json_object());
}

static int split_id(const char *id, char ns[97], char name[97])
{
    const char *slash = id ? strchr(id, '/') : NULL;
    if (!slash || strchr(slash + 1, '/') || slash - id > 96 || strlen(slash + 1) > 96)
        return -1;
    snprintf(ns, 97, "%.*s", (int)(slash - id), id);
    snprintf(name, 97, "%s", slash + 1);
    return path_is_valid_repo_name(ns) && path_is_valid_repo_name(name) ? 0 : -1;
}

void hub_repo_move(http_request *req, hub_call *call)
{
    hub *h = call->hub;
    if (!require_writer(req, call))
        return;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    const char *from = json_string_value(json_object_get(body, "fromRepo"));
    const char *to = json_string_value(json_object_get(body, "toRepo"));
    const char *type = json_string_value(json_object_get(body, "type"));
    snprintf(call->type, sizeof call->type, "%s", type ? type : "model");
    char to_ns[97], to_name[97];
    if (!valid_type(call->type) || split_id(from, call->ns, call->name) != 0 ||
        split_id(to, to_ns, to_name) != 0) {
        http_reply_errorf(req, 400, "", "Invalid repo id: fromRepo and toRepo must be "
                                        "'namespace/name'");
        json_decref(body);
        return;
    }
    json_decref(body);
    if (hub_load_repo(req, call, true) != 0)
        return;
    if (!auth_can_write_namespace(&call->caller, to_ns)) {
        http_reply_errorf(req, 403, "", "You don't have the rights to create a repo under '%s'",
                          to_ns);
        return;
    }
    err e = ERR_INIT;
    if (db_repo_move(h->db, &call->repo, to_ns, to_name, &e) != 0) {
        if (e.status == 409)
            http_reply_errorf(req, 409, "", "A %s repository called %s/%s already exists",
                              call->type, to_ns, to_name);
        else
            http_reply_error(req, &e);
        return;
    }
    log_info("moved %s %s/%s to %s/%s", call->type, call->ns, call->name, to_ns, to_name);
    http_reply_json(req, 200, json_object());
}

void hub_repo_settings(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, true) != 0)
        return;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    bool is_private = call->repo.is_private;
    char gated[8];
    snprintf(gated, sizeof gated, "%s", call->repo.gated);
    json_t *v;
    if ((v = json_object_get(body, "private"))) {
        if (!json_is_boolean(v)) {
            http_reply_errorf(req, 400, "", "\"private\" must be true or false");
            json_decref(body);
            return;
        }
        is_private = json_is_true(v);
    }
    if ((v = json_object_get(body, "visibility"))) {
        const char *visibility = json_string_value(v);
        if (!visibility || (strcmp(visibility, "public") && strcmp(visibility, "private") &&
                            strcmp(visibility, "protected"))) {
            http_reply_errorf(req, 400, "", "\"visibility\" must be public, private or protected");
            json_decref(body);
            return;
        }
        is_private = strcmp(visibility, "public") != 0;
    }
    if ((v = json_object_get(body, "gated"))) {
        if (json_is_false(v))
            gated[0] = '\0';
        else if (json_is_string(v) && (!strcmp(json_string_value(v), "auto") ||
                                       !strcmp(json_string_value(v), "manual")))
            snprintf(gated, sizeof gated, "%s", json_string_value(v));
        else {
            http_reply_errorf(req, 400, "", "gated must be \"auto\", \"manual\" or false");
            json_decref(body);
            return;
        }
    }
    json_decref(body);
    err e = ERR_INIT;
    if (db_repo_set_visibility(call->hub->db, call->repo.id, is_private, gated, &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    http_reply_json(req, 200, json_object());
}
