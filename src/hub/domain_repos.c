/* domain_repos — a repository's lifecycle: create, delete, rename, visibility. Called by the
 * API handlers (repos.c) and by every other front end; see "the domain" in hub.h. */
#include "hub/internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static bool valid_type(const char *t)
{
    return t && (!strcmp(t, "model") || !strcmp(t, "dataset") || !strcmp(t, "space"));
}

static bool valid_sdk(const char *sdk)
{
    return !strcmp(sdk, "gradio") || !strcmp(sdk, "streamlit") || !strcmp(sdk, "docker") ||
           !strcmp(sdk, "static");
}

static int invalid_name(const char *ns, const char *name, err *e)
{
    return err_set(e, 400, "", "Invalid repo name '%s/%s': use letters, digits, '-', '_' and "
                               "'.', at most 96 characters, not starting or ending with '-' or "
                               "'.', no '--' or '..', not ending with '.git'", ns, name);
}

/* A new repo holds no LFS object yet, so pointer text among its first files can name only
 * someone else's: refused like a commit naming an object never uploaded here. */
static int check_initial_files(const hub_repo_spec *spec, err *e)
{
    for (size_t i = 0; i < spec->nfiles; i++) {
        repo_lfs pointer;
        if (!path_is_valid_repo_path(spec->files[i].path, strlen(spec->files[i].path)))
            return err_set(e, 422, "", "invalid initial file %s", spec->files[i].path);
        if (repo_parse_lfs_pointer(spec->files[i].data, spec->files[i].len, &pointer))
            return err_set(e, 422, "", "LFS object %s not found in this repo: upload it before "
                                       "committing %s", pointer.oid, spec->files[i].path);
    }
    return 0;
}

int hub_repo_new(hub *h, const auth_caller *who, const hub_repo_spec *spec, db_repo *out,
                 err *e)
{
    if (!valid_type(spec->type))
        return err_set(e, 400, "", "Invalid repo type '%s': use model, dataset or space",
                       spec->type ? spec->type : "");
    bool space = !strcmp(spec->type, "space");
    if (!path_is_valid_repo_name(spec->ns) || !path_is_valid_repo_name(spec->name))
        return invalid_name(spec->ns, spec->name, e);
    if (space && spec->sdk && !valid_sdk(spec->sdk))
        return err_set(e, 400, "", "Invalid space sdk '%s': use gradio, streamlit, docker or "
                                   "static", spec->sdk);
    if (!auth_can_write_namespace(who, spec->ns))
        return err_set(e, 403, "", "You don't have the rights to create a repo under '%s'",
                       spec->ns);
    db_repo existing;
    int rc = db_repo_get(h->db, spec->type, spec->ns, spec->name, &existing, e);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        db_repo_free(&existing);
        return err_set(e, 409, "", "You already created this repo");
    }
    if (check_initial_files(spec, e) != 0)
        return -1;

    /* The first commit: the given files, a default .gitattributes, and a README carrying the
     * license / sdk front matter when none was given. */
    repo_file *files = xcalloc(spec->nfiles + 2, sizeof *files);
    size_t n = 0;
    bool has_attrs = false, has_readme = false;
    for (size_t i = 0; i < spec->nfiles; i++) {
        files[n++] = spec->files[i];
        has_attrs |= !strcmp(spec->files[i].path, ".gitattributes");
        has_readme |= !strcmp(spec->files[i].path, "README.md");
    }
    if (!has_attrs)
        files[n++] = (repo_file){".gitattributes", hub_default_gitattributes,
                                 strlen(hub_default_gitattributes)};
    buf readme = BUF_INIT;
    if (!has_readme && (spec->license || space)) {
        buf_puts(&readme, "---\n");
        if (spec->license)
            buf_printf(&readme, "license: %s\n", spec->license);
        if (space)
            buf_printf(&readme, "sdk: %s\n", spec->sdk ? spec->sdk : "static");
        buf_printf(&readme, "---\n\n# %s\n", spec->name);
        files[n++] = (repo_file){"README.md", readme.data, readme.len};
    }

    db_repo row = {0};
    uint8_t rnd[12];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, row.uid);
    snprintf(row.type, sizeof row.type, "%s", spec->type);
    snprintf(row.ns, sizeof row.ns, "%s", spec->ns);
    snprintf(row.name, sizeof row.name, "%s", spec->name);
    snprintf(row.sdk, sizeof row.sdk, "%s", space ? (spec->sdk ? spec->sdk : "static") : "");
    row.is_private = spec->is_private;
    row.owner_id = who->user.id;
    buf dir = BUF_INIT;
    hub_git_dir(h, row.uid, &dir);
    const char *author = who->authenticated ? who->user.name : "hearth";
    char sha[41];
    rc = repo_create(dir.data, files, n, author, "initial commit\n", sha, e);
    free(files);
    buf_free(&readme);
    if (rc == 0) {
        snprintf(row.head_sha, sizeof row.head_sha, "%s", sha);
        rc = db_repo_create(h->db, &row, e); /* 409 when another request won the race */
    }
    if (rc != 0) {
        path_remove_tree(dir.data);
        buf_free(&dir);
        return -1;
    }
    repo *r = repo_open(dir.data, e);
    buf_free(&dir);
    if (r) {
        hub_refresh_meta(h, &row, r);
        repo_close(r);
    }
    err_clear(e);
    log_info("created %s %s/%s", row.type, row.ns, row.name);
    hub_audit_repo(h, who, "repo.create", &row, NULL, "{\"private\":%s}",
                   row.is_private ? "true" : "false");
    if (out)
        *out = row;
    return 0;
}

static int not_manager(const db_repo *row, err *e)
{
    return err_set(e, 403, "", "You don't have the rights to manage %s/%s", row->ns, row->name);
}

int hub_repo_remove(hub *h, const auth_caller *who, const db_repo *row, err *e)
{
    if (!auth_can_manage(who, row))
        return not_manager(row, e);
    if (db_repo_delete(h->db, row->id, e) != 0)
        return -1;
    /* The row is gone, so nothing can reach the directory any more: remove it. */
    buf dir = BUF_INIT;
    hub_git_dir(h, row->uid, &dir);
    if (path_remove_tree(dir.data) != 0)
        log_warn("cannot remove %s: %s", dir.data, strerror(errno));
    buf_free(&dir);
    log_info("deleted %s %s/%s", row->type, row->ns, row->name);
    hub_audit_repo(h, who, "repo.delete", row, NULL, NULL);
    return 0;
}

int hub_repo_rename(hub *h, const auth_caller *who, const db_repo *row, const char *ns,
                    const char *name, err *e)
{
    if (!auth_can_manage(who, row))
        return not_manager(row, e);
    if (!path_is_valid_repo_name(ns) || !path_is_valid_repo_name(name))
        return invalid_name(ns, name, e);
    if (!auth_can_write_namespace(who, ns))
        return err_set(e, 403, "", "You don't have the rights to create a repo under '%s'", ns);
    if (db_repo_move(h->db, row, ns, name, e) != 0) {
        if (e->status == 409)
            err_set(e, 409, "", "A %s repository called %s/%s already exists", row->type, ns,
                    name);
        return -1;
    }
    log_info("moved %s %s/%s to %s/%s", row->type, row->ns, row->name, ns, name);
    hub_audit_repo(h, who, "repo.move", row, NULL, "{\"to\":\"%s/%s\"}", ns, name);
    return 0;
}

int hub_repo_configure(hub *h, const auth_caller *who, const db_repo *row, bool is_private,
                       const char *gated, err *e)
{
    if (!auth_can_manage(who, row))
        return not_manager(row, e);
    if (strcmp(gated, "") && strcmp(gated, "auto") && strcmp(gated, "manual"))
        return err_set(e, 400, "", "gated must be \"auto\", \"manual\" or false");
    if (db_repo_set_visibility(h->db, row->id, is_private, gated, e) != 0)
        return -1;
    hub_audit_repo(h, who, "repo.settings", row, NULL, "{\"private\":%s,\"gated\":\"%s\"}",
                   is_private ? "true" : "false", gated);
    return 0;
}
