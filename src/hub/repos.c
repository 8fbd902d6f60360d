/* repos — repository lifecycle routes: create, delete, move, settings, README metadata
 * validation. The work is the domain's (domain_repos.c). */
#include "hub/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        if (text_base64_decode(content, strlen(content), &(*storage)[i]) != 0) {
            http_reply_errorf(req, 400, "", "initial file %s is not valid base64", path);
            return -1;
        }
        (*out)[i].path = path;
        (*out)[i].data = (*storage)[i].data;
        (*out)[i].len = (*storage)[i].len;
    }
    return 0;
}

void hub_repo_create(http_request *req, hub_call *call)
{
    if (!require_writer(req, call))
        return;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    repo_file *files = NULL;
    buf *storage = NULL;
    size_t nfiles = 0;
    buf url = BUF_INIT;
    if (body_repo_id(req, call, body) != 0 ||
        decode_initial_files(req, json_object_get(body, "files"), &files, &nfiles, &storage) != 0)
        goto out;
    const char *visibility = json_string_value(json_object_get(body, "visibility"));
    hub_repo_spec spec = {
        .type = call->type,
        .ns = call->ns,
        .name = call->name,
        .is_private = json_is_true(json_object_get(body, "private")) ||
                      (visibility && (!strcmp(visibility, "private") ||
                                      !strcmp(visibility, "protected"))),
        .sdk = json_string_value(json_object_get(body, "sdk")),
        .license = json_string_value(json_object_get(body, "license")),
        .files = files,
        .nfiles = nfiles,
    };
    db_repo row;
    err e = ERR_INIT;
    hub_repo_url(req, call->type, call->ns, call->name, &url);
    if (hub_repo_new(call->hub, &call->caller, &spec, &row, &e) != 0) {
        if (e.status == 409) /* huggingface_hub's exist_ok reads the url */
            http_reply_json(req, 409, json_pack("{s:s, s:s}", "error", e.message, "url", url.data));
        else
            http_reply_error(req, &e);
        goto out;
    }
    char id[200];
    snprintf(id, sizeof id, "%s/%s", row.ns, row.name);
    http_reply_json(req, 200, json_pack("{s:s, s:s, s:s}", "url", url.data, "name", id, "id",
                                        row.uid));
out:
    if (storage)
        for (size_t i = 0; i < nfiles; i++)
            buf_free(&storage[i]);
    free(storage);
    free(files);
    buf_free(&url);
    json_decref(body);
}

void hub_repo_delete(http_request *req, hub_call *call)
{
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    if (body_repo_id(req, call, body) != 0 || hub_load_repo_manage(req, call) != 0) {
        json_decref(body);
        return;
    }
    json_decref(body);
    err e = ERR_INIT;
    if (hub_repo_remove(call->hub, &call->caller, &call->repo, &e) != 0)
        http_reply_error(req, &e);
    else
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
    if (hub_load_repo_manage(req, call) != 0)
        return;
    err e = ERR_INIT;
    if (hub_repo_rename(call->hub, &call->caller, &call->repo, to_ns, to_name, &e) != 0)
        http_reply_error(req, &e);
    else
        http_reply_json(req, 200, json_object());
}

void hub_repo_settings(http_request *req, hub_call *call)
{
    if (hub_load_repo_manage(req, call) != 0)
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
    if (hub_repo_configure(call->hub, &call->caller, &call->repo, is_private, gated, &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    http_reply_json(req, 200, json_object());
}
