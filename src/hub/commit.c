/* commit — the NDJSON commit endpoint (spec §6.3): parses the body into operations, then
 * hands them to hub_commit_apply, which every other writer (web UI, gateway) calls too. */
#include "hub/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- commit ------------------------------------------------------------------------------- */

void hub_commit_plan_free(hub_commit_plan *p)
{
    for (size_t i = 0; i < p->nops; i++) {
        free((char *)p->ops[i].path);
        free((char *)p->ops[i].src_path);
        free((char *)p->ops[i].src_rev);
        buf_free(&p->blobs[i]);
    }
    free(p->ops);
    free(p->blobs);
    free(p->summary);
    free(p->description);
    free(p->parent);
}

static repo_op *plan_add(hub_commit_plan *p, repo_op_kind kind, const char *path)
{
    if (p->nops == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->ops = realloc(p->ops, p->cap * sizeof *p->ops);
        p->blobs = realloc(p->blobs, p->cap * sizeof *p->blobs);
        if (!p->ops || !p->blobs)
            abort();
    }
    repo_op *op = &p->ops[p->nops];
    memset(op, 0, sizeof *op);
    p->blobs[p->nops] = (buf)BUF_INIT;
    op->kind = kind;
    op->path = strdup(path);
    p->nops++;
    return op;
}

/* Parses one NDJSON line into the plan; -1 with e set on bad input. */
static int plan_line(hub *h, int64_t repo_id, hub_commit_plan *p, json_t *line, size_t lineno,
                     err *e)
{
    const char *key = json_string_value(json_object_get(line, "key"));
    json_t *value = json_object_get(line, "value");
    if (!key || !json_is_object(value))
        return err_set(e, 400, "", "line %zu: expected {\"key\": ..., \"value\": {...}}", lineno);
    if (!strcmp(key, "header")) {
        const char *summary = json_string_value(json_object_get(value, "summary"));
        const char *description = json_string_value(json_object_get(value, "description"));
        const char *parent = json_string_value(json_object_get(value, "parentCommit"));
        free(p->summary);
        free(p->description);
        free(p->parent);
        p->summary = strdup(summary ? summary : "");
        p->description = strdup(description ? description : "");
        p->parent = parent ? strdup(parent) : NULL;
        return 0;
    }
    const char *path = json_string_value(json_object_get(value, "path"));
    if (!path)
        return err_set(e, 400, "", "line %zu: missing \"path\"", lineno);
    size_t plen = strlen(path);
    bool folder = !strcmp(key, "deletedFolder");
    while (folder && plen > 1 && path[plen - 1] == '/')
        plen--;
    char *clean = strndup(path, plen);
    bool valid = path_is_valid_repo_path(clean, plen);
    if (!valid) {
        err_set(e, 422, "", "Invalid path '%s': paths must be relative, without '..', "
                            "backslashes or a .git component", path);
        free(clean);
        return -1;
    }
    int rc = 0;
    if (!strcmp(key, "file")) {
        const char *content = json_string_value(json_object_get(value, "content"));
        const char *encoding = json_string_value(json_object_get(value, "encoding"));
        repo_op *op = plan_add(p, REPO_OP_PUT, clean);
        buf *blob = &p->blobs[p->nops - 1];
        if (!content)
            rc = err_set(e, 400, "", "line %zu: missing \"content\"", lineno);
        else if (encoding && !strcmp(encoding, "base64")) {
            if (text_base64_decode(content, strlen(content), blob) != 0)
                rc = err_set(e, 400, "", "line %zu: content is not valid base64", lineno);
        } else {
            buf_puts(blob, content);
        }
        op->data = buf_str(blob);
        op->len = blob->len;
    } else if (!strcmp(key, "lfsFile")) {
        const char *oid = json_string_value(json_object_get(value, "oid"));
        const char *algo = json_string_value(json_object_get(value, "algo"));
        json_t *size_v = json_object_get(value, "size");
        int64_t have = -1;
        if (!oid || !text_is_hex(oid, 64) || (algo && strcmp(algo, "sha256") != 0)) {
            rc = err_set(e, 400, "", "line %zu: lfsFile needs a sha256 \"oid\"", lineno);
        } else if (hub_object_claim(h, repo_id, oid, clean, &have, e) != 0) {
            rc = -1;
        } else if (json_is_integer(size_v) && json_integer_value(size_v) != have) {
            rc = err_set(e, 422, "", "LFS object %s has %lld bytes, not %lld", oid,
                         (long long)have, (long long)json_integer_value(size_v));
        } else {
            repo_op *op = plan_add(p, REPO_OP_PUT, clean);
            buf *blob = &p->blobs[p->nops - 1];
            repo_format_lfs_pointer(blob, oid, have);
            op->data = blob->data;
            op->len = blob->len;
        }
    } else if (!strcmp(key, "deletedFile")) {
        plan_add(p, REPO_OP_DELETE_FILE, clean);
    } else if (folder) {
        plan_add(p, REPO_OP_DELETE_FOLDER, clean);
    } else if (!strcmp(key, "copyFile")) {
        const char *src = json_string_value(json_object_get(value, "srcPath"));
        if (!src || !path_is_valid_repo_path(src, strlen(src))) {
            rc = err_set(e, 422, "", "line %zu: invalid srcPath", lineno);
        } else {
            repo_op *op = plan_add(p, REPO_OP_COPY, clean);
            op->src_path = strdup(src);
            /* Copied: the JSON line is freed before the commit reads the plan. */
            const char *src_rev = json_string_value(json_object_get(value, "srcRevision"));
            op->src_rev = src_rev ? strdup(src_rev) : NULL;
        }
    } else {
        rc = err_set(e, 400, "", "line %zu: unknown key \"%s\"", lineno, key);
    }
    free(clean);
    return rc;
}

int hub_commit_parse(hub *h, int64_t repo_id, const char *body, size_t len,
                     hub_commit_plan *plan, err *e)
{
    const char *p = body, *end = body + len;
    size_t lineno = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        lineno++;
        if (n > 0 && !(n == 1 && p[0] == '\r')) {
            json_error_t je;
            json_t *line = memchr(p, '\0', n) ? NULL : json_loadb(p, n, 0, &je);
            int rc = line ? plan_line(h, repo_id, plan, line, lineno, e)
                          : err_set(e, 400, "", "line %zu is not valid JSON%s%s", lineno,
                                    memchr(p, '\0', n) ? " (it holds a NUL byte)" : ": ",
                                    memchr(p, '\0', n) ? "" : je.text);
            json_decref(line);
            if (rc != 0)
                return -1;
        }
        p += n + (nl ? 1 : 0);
    }
    if (!plan->summary)
        return err_set(e, 400, "", "the commit needs a header line with a \"summary\"");
    return 0;
}

void hub_commit(http_request *req, hub_call *call)
{
    bool create_pr = text_truthy(http_query(req, "create_pr"));
    if (hub_load_repo(req, call, !create_pr) != 0)
        return;
    const buf *body = http_body(req);
    hub_commit_plan plan = {0};
    err e = ERR_INIT;
    hub_change_result done;
    int rc = hub_commit_parse(call->hub, call->repo.id, buf_str(body), body->len, &plan, &e);
    if (rc == 0) {
        hub_change change = {.repo = &call->repo,
                             .who = &call->caller,
                             .branch = call->rev,
                             .parent = plan.parent,
                             .create_pr = create_pr,
                             .ops = plan.ops,
                             .nops = plan.nops,
                             .summary = plan.summary,
                             .description = plan.description};
        rc = hub_commit_apply(call->hub, &change, &done, &e);
    }
    hub_commit_plan_free(&plan);
    if (rc != 0) {
        http_reply_error(req, &e);
        return;
    }
    buf url = BUF_INIT, pr_url = BUF_INIT;
    hub_repo_url(req, call->type, call->ns, call->name, &url);
    buf_printf(&url, "/commit/%s", done.commit);
    json_t *reply = json_pack("{s:b, s:s, s:s, s:s, s:n}", "success", 1, "commitOid", done.commit,
                              "commitUrl", url.data, "hookOutput", "", "pullRequestUrl");
    if (create_pr) {
        hub_repo_url(req, call->type, call->ns, call->name, &pr_url);
        buf_printf(&pr_url, "/discussions/%lld", (long long)done.pr_number);
        json_object_set_new(reply, "pullRequestUrl", json_string(pr_url.data));
    }
    http_reply_json(req, 200, reply);
    buf_free(&url);
    buf_free(&pr_url);
}
