/* preupload — does a file go to LFS or into git? (spec §6.1) The client asks before it
 * uploads; the answer follows the size threshold, .gitattributes `filter=lfs` patterns, and a
 * look at a sample of the bytes (binary goes to LFS). */
#include "hub/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool looks_binary(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c == 0)
            return true;
        size_t extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 9;
        if (extra == 9)
            return true;
        if (i + extra >= n && extra) /* a sample may end inside a character */
            return false;
        for (size_t k = 1; k <= extra; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return true;
        i += extra + 1;
    }
    return false;
}


/* ---- preupload --------------------------------------------------------------------------- */

void hub_preupload(http_request *req, hub_call *call)
{
    bool create_pr = text_truthy(http_query(req, "create_pr"));
    if (hub_load_repo(req, call, !create_pr) != 0)
        return;
    json_t *body = hub_json_body(req);
    if (!body)
        return;
    json_t *files = json_object_get(body, "files");
    if (!json_is_array(files)) {
        json_decref(body);
        http_reply_errorf(req, 400, "", "\"files\" must be an array");
        return;
    }
    repo *r = hub_open_git(req, call);
    if (!r) {
        json_decref(body);
        return;
    }
    char sha[41];
    if (hub_resolve_rev(req, call, r, sha) != 0) {
        hub_close_git(r);
        json_decref(body);
        return;
    }
    err e = ERR_INIT;
    buf attributes = BUF_INIT, ignore = BUF_INIT;
    const char *given_attrs = json_string_value(json_object_get(body, "gitAttributes"));
    const char *given_ignore = json_string_value(json_object_get(body, "gitIgnore"));
    if (given_attrs)
        buf_puts(&attributes, given_attrs);
    else
        repo_read(r, sha, ".gitattributes", &attributes, &e);
    if (given_ignore)
        buf_puts(&ignore, given_ignore);
    else
        repo_read(r, sha, ".gitignore", &ignore, &e);
    json_t *out = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *path = json_string_value(json_object_get(f, "path"));
        json_int_t size = json_integer_value(json_object_get(f, "size"));
        const char *sample = json_string_value(json_object_get(f, "sample"));
        if (!path || !path_is_valid_repo_path(path, strlen(path))) {
            http_reply_errorf(req, 422, "", "Invalid path: %s", path ? path : "(missing)");
            json_decref(out);
            goto done;
        }
        bool lfs = size >= call->hub->lfs_threshold || hub_gitattributes_lfs(attributes.data, path);
        if (!lfs && sample && size > 0) {
            buf bytes = BUF_INIT;
            if (text_base64_decode(sample, strlen(sample), &bytes) == 0)
                lfs = looks_binary((const unsigned char *)buf_str(&bytes), bytes.len);
            buf_free(&bytes);
        }
        if (size == 0)
            lfs = false;
        json_t *entry = json_pack("{s:s, s:s, s:b}", "path", path, "uploadMode",
                                  lfs ? "lfs" : "regular", "shouldIgnore",
                                  hub_gitignore_match(ignore.data, path));
        repo_entry ent = {0};
        if (repo_stat(r, sha, path, &ent, &e) == 0 && !ent.is_dir)
            json_object_set_new(entry, "oid", json_string(ent.is_lfs ? ent.lfs.oid : ent.oid));
        else
            json_object_set_new(entry, "oid", json_null());
        repo_entry_free(&ent);
        json_array_append_new(out, entry);
    }
    http_reply_json(req, 200, json_pack("{s:o, s:s}", "files", out, "commitOid", sha));
done:
    buf_free(&attributes);
    buf_free(&ignore);
    hub_close_git(r);
    json_decref(body);
}

