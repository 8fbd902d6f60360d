/* domain_commits — writing a commit to a repo: the checks every writer shares (the object-link
 * rule for LFS pointers), pull-request numbering, the all-or-nothing commit itself, and the
 * metadata derived from main afterwards. The NDJSON endpoint (commit.c), the web UI's editor
 * and the gateway all come through hub_commit_apply. */
#include "hub/internal.h"

#include <stdio.h>
#include <string.h>

/* The next free pull-request number. */
static int64_t next_pr(repo *r)
{
    repo_refs refs;
    err e = ERR_INIT;
    int64_t max = 0;
    if (repo_list_refs(r, &refs, &e) == 0) {
        for (size_t i = 0; i < refs.npulls; i++) {
            int64_t n = text_parse_i64(refs.pulls[i].ref + strlen("refs/pr/"));
            if (n > max)
                max = n;
        }
        repo_refs_free(&refs);
    }
    return max + 1;
}

/* Pointer text is an LFS reference whatever line or editor wrote it: it may only name an object
 * this repo holds, with that object's size. */
static int check_pointers(hub *h, const hub_change *c, err *e)
{
    for (size_t i = 0; i < c->nops; i++) {
        const repo_op *op = &c->ops[i];
        repo_lfs pointer;
        int64_t have;
        if (op->kind != REPO_OP_PUT || op->len >= REPO_LFS_POINTER_MAX ||
            !repo_parse_lfs_pointer(op->data, op->len, &pointer))
            continue;
        if (hub_object_claim(h, c->repo->id, pointer.oid, op->path, &have, e) != 0)
            return -1;
        if (have != pointer.size)
            return err_set(e, 422, "", "LFS object %s has %lld bytes, not %lld", pointer.oid,
                           (long long)have, (long long)pointer.size);
    }
    return 0;
}

int hub_commit_apply(hub *h, const hub_change *c, hub_change_result *out, err *e)
{
    memset(out, 0, sizeof *out);
    if (c->create_pr ? !c->who->authenticated || !auth_can_read(c->who, c->repo)
                     : !auth_can_write(c->who, c->repo))
        return err_set(e, c->who->authenticated ? 403 : 401, "",
                       c->create_pr ? "You must be authenticated to open a pull request"
                                    : "You don't have the rights to write to %s/%s",
                       c->repo->ns, c->repo->name);
    if (check_pointers(h, c, e) != 0)
        return -1;
    buf dir = BUF_INIT;
    hub_git_dir(h, c->repo->uid, &dir);
    repo *r = repo_open(dir.data, e);
    buf_free(&dir);
    if (!r)
        return -1;
    buf message = BUF_INIT, branch = BUF_INIT;
    buf_puts(&message, c->summary && c->summary[0] ? c->summary : "Upload files");
    if (c->description && c->description[0])
        buf_printf(&message, "\n\n%s", c->description);
    buf_putc(&message, '\n');
    const char *parent = c->parent;
    char pr_base[41] = "";
    int rc = 0;
    if (c->create_pr) {
        /* A pull request is a branch refs/pr/N starting at parentCommit or the head of rev. */
        rc = repo_resolve(r, c->parent ? c->parent : c->branch, pr_base, e);
        out->pr_number = next_pr(r);
        buf_printf(&branch, "refs/pr/%lld", (long long)out->pr_number);
        parent = NULL;
    } else {
        buf_puts(&branch, c->branch);
    }
    repo_commit_request req = {.branch = branch.data,
                               .parent = parent,
                               .ops = c->ops,
                               .nops = c->nops,
                               .author_name = c->who->authenticated ? c->who->user.name : "hearth",
                               .author_email = "hearth@localhost",
                               .message = message.data,
                               .create_branch = c->create_pr,
                               .start = c->create_pr ? pr_base : NULL};
    if (rc == 0)
        rc = repo_commit(r, &req, out->commit, e);
    if (rc == 0) {
        if (!strcmp(branch.data, "main") || !strcmp(branch.data, "refs/heads/main"))
            hub_refresh_meta(h, c->repo, r);
        else
            db_repo_touch(h->db, c->repo->id, text_now_ms(), e);
        err_clear(e);
        log_info("commit %s on %s/%s@%s (%zu operations)", out->commit, c->repo->ns,
                 c->repo->name, branch.data, c->nops);
        hub_audit_repo(h, c->who, c->create_pr ? "pr.commit" : "commit", c->repo, branch.data,
                       "{\"commit\":\"%s\",\"operations\":%zu}", out->commit, c->nops);
    }
    buf_free(&message);
    buf_free(&branch);
    repo_close(r);
    return rc;
}
