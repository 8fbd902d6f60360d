/* info — read-only views of repositories: repo info, listings and search, file trees and
 * paths-info. Field names and shapes follow spec/hub-api.md §4. */
#include "hub/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TREE_PAGE 1000
#define TREE_PAGE_EXPANDED 100
#define LIST_PAGE_MAX 1000

static const char *model_fields[] = {
    "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt",
    "disabled", "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference",
    "inferenceProviderMapping", "lastModified", "library_name", "likes", "mask_token",
    "model-index", "pipeline_tag", "private", "resourceGroup", "safetensors", "sha", "siblings",
    "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage", "widgetData",
    "gitalyUid", "xetEnabled"};
static const char *dataset_fields[] = {
    "author", "cardData", "citation", "createdAt", "description", "disabled", "downloads",
    "downloadsAllTime", "gated", "lastModified", "likes", "mainSize", "paperswithcode_id",
    "private", "resourceGroup", "sha", "siblings", "tags", "trendingScore", "usedStorage",
    "xetEnabled"};
static const char *space_fields[] = {
    "author", "cardData", "createdAt", "datasets", "disabled", "lastModified", "likes",
    "models", "private", "region", "resourceGroup", "runtime", "sdk", "sha", "siblings",
    "subdomain", "tags", "trendingScore", "usedStorage", "xetEnabled"};

static bool known_field(const char *type, const char *f)
{
    const char **list = model_fields;
    size_t n = ARRAY_LEN(model_fields);
    if (!strcmp(type, "dataset")) {
        list = dataset_fields;
        n = ARRAY_LEN(dataset_fields);
    } else if (!strcmp(type, "space")) {
        list = space_fields;
        n = ARRAY_LEN(space_fields);
    }
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], f))
            return true;
    return false;
}

/* The entry shape of tree and paths-info. */
static json_t *entry_json(const repo_entry *ent)
{
    if (ent->is_dir)
        return json_pack("{s:s, s:s, s:i, s:s}", "type", "directory", "oid", ent->oid, "size", 0,
                         "path", ent->path);
    json_t *j = json_pack("{s:s, s:s, s:I, s:s}", "type", "file", "oid", ent->oid, "size",
                          (json_int_t)ent->size, "path", ent->path);
    if (ent->is_lfs)
        json_object_set_new(j, "lfs",
                            json_pack("{s:s, s:I, s:I}", "oid", ent->lfs.oid, "size",
                                      (json_int_t)ent->lfs.size, "pointerSize",
                                      (json_int_t)ent->lfs.pointer_size));
    return j;
}

static void add_last_commit(repo *r, const char *commit, json_t *entry, const char *path)
{
    repo_commit_info info = {0};
    err e = ERR_INIT;
    if (repo_last_commit_for(r, commit, path, &info, &e) != 0)
        return;
    char date[32];
    text_iso8601(info.time_ms, date);
    json_object_set_new(entry, "lastCommit", json_pack("{s:s, s:s, s:s}", "id", info.id, "title",
                                                       info.title, "date", date));
    repo_commit_info_free(&info);
}

/* The full repo object (everything we know); expand filtering happens afterwards. */
static json_t *repo_json(http_request *req, hub_call *call, const db_repo *row, repo *r,
                         const char *sha, json_t *meta, bool blobs, bool with_siblings)
{
    char created[32], modified[32], id[200];
    text_iso8601(row->created_ms, created);
    text_iso8601(row->modified_ms, modified);
    snprintf(id, sizeof id, "%s/%s", row->ns, row->name);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:i, s:i, s:i}", "_id", row->uid,
                          "id", id, "author", row->ns, "lastModified", modified, "createdAt",
                          created, "private", row->is_private, "disabled", 0, "downloads", 0,
                          "downloadsAllTime", 0, "likes", 0);
    json_object_set_new(j, "gated", row->gated[0] ? json_string(row->gated) : json_false());
    if (sha)
        json_object_set_new(j, "sha", json_string(sha));
    json_object_set_new(j, "trendingScore", json_integer(0));
    const char *copy[] = {"tags", "pipeline_tag", "library_name", "cardData", "config",
                          "transformersInfo"};
    for (size_t i = 0; i < ARRAY_LEN(copy); i++) {
        json_t *v = json_object_get(meta, copy[i]);
        if (v && (!strcmp(copy[i], "config") ? !strcmp(row->type, "model") : 1))
            json_object_set(j, copy[i], v);
    }
    if (!json_object_get(j, "tags"))
        json_object_set_new(j, "tags", json_array());
    if (!strcmp(row->type, "space")) {
        json_object_set_new(j, "sdk", json_string(row->sdk[0] ? row->sdk : "static"));
        json_object_set_new(j, "subdomain", json_string(row->name));
        json_object_set_new(j, "models", json_array());
        json_object_set_new(j, "datasets", json_array());
    }
    if (!strcmp(row->type, "dataset")) {
        json_t *card = json_object_get(meta, "cardData");
        json_object_set_new(j, "description",
                            json_string(json_string_value(json_object_get(card, "pretty_name"))
                                            ? json_string_value(json_object_get(card, "pretty_name"))
                                            : ""));
        json_object_set_new(j, "citation", json_string(""));
    }
    if (with_siblings && r && sha) {
        repo_entries files = {0};
        err e = ERR_INIT;
        json_t *siblings = json_array();
        int64_t used = 0;
        if (hub_entries_list(call->hub, row, r, sha, "", true, &files, &e) == 0) {
            for (size_t i = 0; i < files.n; i++) {
                const repo_entry *f = &files.items[i];
                if (f->is_dir)
                    continue;
                used += f->size;
                json_t *s = json_pack("{s:s}", "rfilename", f->path);
                if (blobs) {
                    json_object_set_new(s, "size", json_integer(f->size));
                    json_object_set_new(s, "blobId", json_string(f->oid));
                    if (f->is_lfs)
                        json_object_set_new(s, "lfs",
                                            json_pack("{s:s, s:I, s:I}", "sha256", f->lfs.oid,
                                                      "size", (json_int_t)f->lfs.size,
                                                      "pointerSize",
                                                      (json_int_t)f->lfs.pointer_size));
                    hub_xet_annotate_entry(call->hub, s, f);
                }
                json_array_append_new(siblings, s);
            }
        }
        repo_entries_free(&files);
        json_object_set_new(j, "siblings", siblings);
        json_object_set_new(j, "usedStorage", json_integer(used));
    }
    return j;
}

/* Keeps _id, id and the requested fields. Returns -1 after replying 400 on an unknown one. */
static int apply_expand(http_request *req, const char *type, json_t *j, const char **fields,
                        size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!known_field(type, fields[i])) {
            http_reply_errorf(req, 400, "", "\"expand\" has an unknown value: %s", fields[i]);
            return -1;
        }
    const char *key;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(j, tmp, key, v)
    {
        if (!strcmp(key, "_id") || !strcmp(key, "id"))
            continue;
        bool keep = false;
        for (size_t i = 0; i < n && !keep; i++)
            keep = !strcmp(fields[i], key);
        if (!keep)
            json_object_del(j, key);
    }
    return 0;
}

void hub_repo_info(http_request *req, hub_call *call)
{
    char sha[41];
    repo *r = hub_open_at_rev(req, call, false, sha);
    if (!r)
        return;
    const char *expand[64];
    size_t nexpand = http_query_all(req, "expand", expand, ARRAY_LEN(expand));
    bool blobs = text_truthy(http_query(req, "blobs"));
    json_t *meta = hub_card_meta(call->hub, r, sha, call->repo.type);
    json_t *j = repo_json(req, call, &call->repo, r, sha, meta, blobs, true);
    json_decref(meta);
    hub_close_git(r);
    if (nexpand && apply_expand(req, call->type, j, expand, nexpand) != 0) {
        json_decref(j);
        return;
    }
    http_reply_json(req, 200, j);
}

void hub_repo_list(http_request *req, hub_call *call)
{
    hub *h = call->hub;
    const char *tags[16];
    size_t ntags = http_query_all(req, "filter", tags, ARRAY_LEN(tags));
    const char *expand[64];
    size_t nexpand = http_query_all(req, "expand", expand, ARRAY_LEN(expand));
    const char *searches[4];
    size_t nsearch = http_query_all(req, "search", searches, ARRAY_LEN(searches));
    int64_t limit = text_parse_i64(http_query(req, "limit"));
    int64_t page = limit > 0 && limit < LIST_PAGE_MAX ? limit : LIST_PAGE_MAX;
    int64_t offset = text_parse_i64(http_query(req, "cursor"));
    const char *direction = http_query(req, "direction");
    bool full = text_truthy(http_query(req, "full"));
    bool want_config = text_truthy(http_query(req, "config"));
    bool want_card = text_truthy(http_query(req, "cardData"));
    /* Extra filters that are tags on the Hub. */
    const char *tag_params[] = {"pipeline_tag", "library", "language", "dataset"};
    char tag_storage[4][256];
    for (size_t i = 0; i < ARRAY_LEN(tag_params) && ntags < ARRAY_LEN(tags); i++) {
        const char *v = http_query(req, tag_params[i]);
        if (!v)
            continue;
        snprintf(tag_storage[i], sizeof tag_storage[i], "%s%s",
                 !strcmp(tag_params[i], "dataset") ? "dataset:" : "", v);
        tags[ntags++] = tag_storage[i];
    }
    db_repo_query q = {.type = call->type,
                       .search = nsearch ? searches[0] : NULL,
                       .author = http_query(req, "author"),
                       .tags = tags,
                       .ntags = ntags,
                       .sort = http_query(req, "sort"),
                       .ascending = direction && !strcmp(direction, "1"),
                       .viewer_id = call->caller.authenticated ? call->caller.user.id : 0,
                       .everything = call->caller.authenticated && call->caller.user.is_admin,
                       .offset = offset > 0 ? offset : 0,
                       .limit = page + 1};
    db_repo *rows = NULL;
    size_t n = 0;
    err e = ERR_INIT;
    if (db_repo_list(h->db, &q, &rows, &n, &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n && (int64_t)i < page; i++) {
        db_repo *row = &rows[i];
        /* The query knows namespaces; a fine-grained token may see less of them. */
        if (!auth_can_read(&call->caller, row))
            continue;
        json_t *meta = json_loads(row->meta_json ? row->meta_json : "{}", 0, NULL);
        if (!meta)
            meta = json_object();
        repo *r = NULL;
        bool siblings = full;
        for (size_t k = 0; k < nexpand; k++)
            siblings |= !strcmp(expand[k], "siblings") || !strcmp(expand[k], "usedStorage");
        if (siblings) {
            buf dir = BUF_INIT;
            hub_git_dir(h, row->uid, &dir);
            r = repo_open(dir.data, &e);
            buf_free(&dir);
        }
        json_t *j = repo_json(req, call, row, r, row->head_sha[0] ? row->head_sha : NULL, meta,
                              false, siblings);
        repo_close(r);
        json_decref(meta);
        if (nexpand) {
            if (apply_expand(req, call->type, j, expand, nexpand) != 0) {
                json_decref(j);
                json_decref(list);
                goto out;
            }
        } else {
            if (!full && !want_card)
                json_object_del(j, "cardData");
            if (!want_config && !full)
                json_object_del(j, "config");
            if (!full) {
                json_object_del(j, "sha");
                json_object_del(j, "transformersInfo");
            }
        }
        json_array_append_new(list, j);
    }
    if ((int64_t)n > page && (limit <= 0 || limit > page)) {
        char cursor[32];
        snprintf(cursor, sizeof cursor, "%lld", (long long)(q.offset + page));
        hub_link_next(req, cursor);
    }
    http_reply_json(req, 200, list);
out:
    for (size_t i = 0; i < n; i++)
        db_repo_free(&rows[i]);
    free(rows);
}

void hub_tree(http_request *req, hub_call *call)
{
    char sha[41];
    repo *r = hub_open_at_rev(req, call, false, sha);
    if (!r)
        return;
    if (call->path[0] && !path_is_valid_repo_path(call->path, strlen(call->path))) {
        http_reply_errorf(req, 404, "EntryNotFound", "Invalid path: %s", call->path);
        return;
    }
    bool recursive = text_truthy(http_query(req, "recursive"));
    bool expand = text_truthy(http_query(req, "expand"));
    repo_entries list = {0};
    err e = ERR_INIT;
    if (hub_entries_list(call->hub, &call->repo, r, sha, call->path, recursive, &list, &e) != 0) {
        hub_close_git(r);
        http_reply_error(req, &e);
        return;
    }
    int64_t offset = text_parse_i64(http_query(req, "cursor"));
    if (offset < 0)
        offset = 0;
    int64_t limit = text_parse_i64(http_query(req, "limit"));
    int64_t page = expand ? TREE_PAGE_EXPANDED : TREE_PAGE;
    if (limit > 0 && limit < page)
        page = limit;
    json_t *out = json_array();
    for (size_t i = (size_t)offset; i < list.n && (int64_t)(i - (size_t)offset) < page; i++) {
        json_t *j = entry_json(&list.items[i]);
        hub_xet_annotate_entry(call->hub, j, &list.items[i]);
        if (expand)
            add_last_commit(r, sha, j, list.items[i].path);
        json_array_append_new(out, j);
    }
    if ((int64_t)list.n > offset + page) {
        char cursor[32];
        snprintf(cursor, sizeof cursor, "%lld", (long long)(offset + page));
        hub_link_next(req, cursor);
    }
    repo_entries_free(&list);
    hub_close_git(r);
    http_reply_json(req, 200, out);
}

void hub_paths_info(http_request *req, hub_call *call)
{
    if (hub_load_repo(req, call, false) != 0)
        return;
    /* JSON (JS) or form-encoded (Python) bodies. */
    const buf *body = http_body(req);
    json_t *paths = json_array();
    bool expand = false;
    json_t *j = body->len && body->data[0] == '{' ? json_loadb(body->data, body->len, 0, NULL)
                                                  : NULL;
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    const char *ctype = http_header(req, "Content-Type");
    bool json_body = (ctype && strstr(ctype, "json")) || (body->len && body->data[0] == '{');
    if (json_body && !j) {
        json_decref(paths);
        http_reply_errorf(req, 400, "", "the request body is not valid JSON: expected "
                                        "{\"paths\": [...], \"expand\": bool}");
        return;
    }
    if (j) {
        json_t *p = json_object_get(j, "paths");
        if (json_is_array(p))
            json_array_extend(paths, p);
        else if (json_is_string(p))
            json_array_append(paths, p);
        expand = json_is_true(json_object_get(j, "expand"));
        json_decref(j);
    } else {
        const char *p = buf_str(body);
        while (*p) {
            const char *amp = strchr(p, '&');
            size_t len = amp ? (size_t)(amp - p) : strlen(p);
            const char *eq = memchr(p, '=', len);
            if (eq) {
                buf key = BUF_INIT, val = BUF_INIT;
                if (text_percent_decode(p, (size_t)(eq - p), true, &key) == 0 &&
                    text_percent_decode(eq + 1, len - (size_t)(eq - p) - 1, true, &val) == 0) {
                    if (!strcmp(buf_str(&key), "paths"))
                        json_array_append_new(paths, json_string(buf_str(&val)));
                    else if (!strcmp(buf_str(&key), "expand"))
                        expand = text_truthy(buf_str(&val));
                }
                buf_free(&key);
                buf_free(&val);
            }
            p += len + (amp ? 1 : 0);
        }
    }
    repo *r = hub_open_git(req, call);
    if (!r) {
        json_decref(paths);
        return;
    }
    char sha[41];
    if (hub_resolve_rev(req, call, r, sha) != 0) {
        hub_close_git(r);
        json_decref(paths);
        return;
    }
    json_t *out = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(paths, i, p)
    {
        const char *path = json_string_value(p);
        if (!path)
            continue;
        while (*path == '/')
            path++;
        size_t len = strlen(path);
        while (len && path[len - 1] == '/')
            len--;
        char clean[4097];
        if (len == 0 || len >= sizeof clean)
            continue;
        memcpy(clean, path, len);
        clean[len] = '\0';
        if (!path_is_valid_repo_path(clean, len))
            continue;
        repo_entry ent;
        err e = ERR_INIT;
        if (hub_entry_stat(call->hub, &call->repo, r, sha, clean, &ent, &e) != 0)
            continue;
        json_t *entry = entry_json(&ent);
        hub_xet_annotate_entry(call->hub, entry, &ent);
        if (expand)
            add_last_commit(r, sha, entry, clean);
        json_array_append_new(out, entry);
        repo_entry_free(&ent);
    }
    hub_close_git(r);
    json_decref(paths);
    http_reply_json(req, 200, out);
}
