/* git — the repo module on libgit2. See repo.h for the contract. */
#include "repo/repo.h"

#include <git2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <time.h>

/* Revision → commit lookups read ref files on every call. Within this process every ref
 * change goes through this module (or is announced with repo_note_refs_changed after a git
 * push), so each handle remembers its last few answers, valid while the process-wide ref
 * generation is unchanged. */
#define RESOLVE_CACHE 8

static _Atomic uint64_t ref_generation = 1;

struct repo {
    git_repository *git;
    struct {
        char rev[128];
        char sha[41];
        uint64_t generation;
    } resolved[RESOLVE_CACHE];
    unsigned next_slot;
};

void repo_note_refs_changed(void) { atomic_fetch_add(&ref_generation, 1); }

static const char LFS_SPEC[] = "version https://git-lfs.github.com/spec/v1\n";

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_libgit2(void)
{
    git_libgit2_init();
    /* Object creation checks (parse each object back) cost time and we write only objects we
     * built ourselves. */
    git_libgit2_opts(GIT_OPT_ENABLE_STRICT_OBJECT_CREATION, 0);
}

void repo_global_init(void) { pthread_once(&init_once, init_libgit2); }

static int git_fail(err *e, const char *what)
{
    const git_error *ge = git_error_last();
    return err_set(e, 500, "", "%s: %s", what, ge && ge->message ? ge->message : "git error");
}

repo *repo_open(const char *path, err *e)
{
    repo_global_init();
    git_repository *g = NULL;
    if (git_repository_open_bare(&g, path) != 0) {
        git_fail(e, "cannot open repository");
        return NULL;
    }
    repo *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->git = g;
    return r;
}

void repo_close(repo *r)
{
    if (!r)
        return;
    git_repository_free(r->git);
    free(r);
}

/* ---- revisions --------------------------------------------------------------------------- */

static int lookup_commit(repo *r, const char *sha, git_commit **out, err *e)
{
    git_oid oid;
    if (git_oid_fromstr(&oid, sha) != 0 || git_commit_lookup(out, r->git, &oid) != 0)
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", sha);
    return 0;
}

static bool peel_to_commit_id(repo *r, const char *refname, char sha_out[41])
{
    git_reference *ref = NULL;
    if (git_reference_lookup(&ref, r->git, refname) != 0)
        return false;
    git_object *obj = NULL;
    bool ok = git_reference_peel(&obj, ref, GIT_OBJECT_COMMIT) == 0;
    if (ok)
        git_oid_tostr(sha_out, 41, git_object_id(obj));
    git_object_free(obj);
    git_reference_free(ref);
    return ok;
}

static int resolve_uncached(repo *r, const char *rev, char sha_out[41], err *e);

int repo_resolve(repo *r, const char *rev, char sha_out[41], err *e)
{
    uint64_t gen = atomic_load(&ref_generation);
    size_t n = rev ? strlen(rev) : 0;
    bool cacheable = n > 0 && n < sizeof r->resolved[0].rev;
    for (int i = 0; cacheable && i < RESOLVE_CACHE; i++)
        if (r->resolved[i].generation == gen && !strcmp(r->resolved[i].rev, rev)) {
            memcpy(sha_out, r->resolved[i].sha, 41);
            return 0;
        }
    if (resolve_uncached(r, rev, sha_out, e) != 0)
        return -1;
    if (cacheable) {
        unsigned k = r->next_slot++ % RESOLVE_CACHE;
        memcpy(r->resolved[k].rev, rev, n + 1);
        memcpy(r->resolved[k].sha, sha_out, 41);
        r->resolved[k].generation = gen;
    }
    return 0;
}

static int resolve_uncached(repo *r, const char *rev, char sha_out[41], err *e)
{
    if (!rev || !*rev || strlen(rev) > 255)
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", rev ? rev : "");
    char name[512];
    if (!strcmp(rev, "HEAD")) {
        if (peel_to_commit_id(r, "HEAD", sha_out))
            return 0;
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: HEAD");
    }
    if (text_starts_with(rev, "refs/")) {
        if (git_reference_name_is_valid(&(int){0}, rev) == 0 && peel_to_commit_id(r, rev, sha_out))
            return 0;
    } else {
        snprintf(name, sizeof name, "refs/heads/%s", rev);
        if (peel_to_commit_id(r, name, sha_out))
            return 0;
        snprintf(name, sizeof name, "refs/tags/%s", rev);
        if (peel_to_commit_id(r, name, sha_out))
            return 0;
    }
    size_t n = strlen(rev);
    if (n >= 4 && n <= 40 && text_is_hex(rev, n)) {
        git_oid oid;
        git_commit *c = NULL;
        if (git_oid_fromstrn(&oid, rev, n) == 0 &&
            git_commit_lookup_prefix(&c, r->git, &oid, n) == 0) {
            git_oid_tostr(sha_out, 41, git_commit_id(c));
            git_commit_free(c);
            return 0;
        }
    }
    return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", rev);
}

/* ---- LFS pointers ------------------------------------------------------------------------ */

bool repo_parse_lfs_pointer(const void *data, size_t len, repo_lfs *out)
{
    if (len >= REPO_LFS_POINTER_MAX || len < sizeof LFS_SPEC - 1 ||
        memcmp(data, LFS_SPEC, sizeof LFS_SPEC - 1) != 0)
        return false;
    char text[REPO_LFS_POINTER_MAX];
    memcpy(text, data, len);
    text[len] = '\0';
    const char *oid = strstr(text, "\noid sha256:");
    const char *size = strstr(text, "\nsize ");
    if (!oid || !size)
        return false;
    oid += strlen("\noid sha256:");
    if (strlen(oid) < 64)
        return false;
    char hex[65];
    memcpy(hex, oid, 64);
    hex[64] = '\0';
    if (!text_is_hex(hex, 64) || (oid[64] != '\n' && oid[64] != '\0'))
        return false;
    char digits[24] = "";
    size += strlen("\nsize ");
    size_t k = 0;
    while (size[k] >= '0' && size[k] <= '9' && k < sizeof digits - 1) {
        digits[k] = size[k];
        k++;
    }
    int64_t v = text_parse_i64(digits);
    if (v < 0)
        return false;
    memcpy(out->oid, hex, 65);
    out->size = v;
    out->pointer_size = (int64_t)len;
    return true;
}

void repo_format_lfs_pointer(buf *out, const char *oid, int64_t size)
{
    buf_printf(out, "%soid sha256:%s\nsize %lld\n", LFS_SPEC, oid, (long long)size);
}

/* ---- trees ------------------------------------------------------------------------------- */

void repo_entry_free(repo_entry *ent)
{
    free(ent->path);
    ent->path = NULL;
}

void repo_entries_free(repo_entries *list)
{
    for (size_t i = 0; i < list->n; i++)
        repo_entry_free(&list->items[i]);
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

static int commit_tree(repo *r, const char *commit, git_tree **out, err *e)
{
    git_commit *c = NULL;
    if (lookup_commit(r, commit, &c, e) != 0)
        return -1;
    int rc = git_commit_tree(out, c);
    git_commit_free(c);
    return rc == 0 ? 0 : git_fail(e, "cannot read commit tree");
}

/* Fills ent for a tree entry at full path `path`. */
static void describe_entry(repo *r, const git_tree_entry *te, const char *path, repo_entry *ent)
{
    memset(ent, 0, sizeof *ent);
    ent->path = strdup(path);
    git_oid_tostr(ent->oid, sizeof ent->oid, git_tree_entry_id(te));
    if (git_tree_entry_type(te) == GIT_OBJECT_TREE) {
        ent->is_dir = true;
        return;
    }
    git_blob *blob = NULL;
    if (git_blob_lookup(&blob, r->git, git_tree_entry_id(te)) != 0)
        return;
    git_object_size_t size = git_blob_rawsize(blob);
    ent->size = (int64_t)size;
    /* Only regular files are LFS files, as git-lfs sees them: a symlink's target text is never
     * followed into the store. */
    git_filemode_t mode = git_tree_entry_filemode(te);
    bool regular = mode == GIT_FILEMODE_BLOB || mode == GIT_FILEMODE_BLOB_EXECUTABLE;
    if (regular && size < REPO_LFS_POINTER_MAX &&
        repo_parse_lfs_pointer(git_blob_rawcontent(blob), (size_t)size, &ent->lfs)) {
        ent->is_lfs = true;
        ent->size = ent->lfs.size;
    }
    git_blob_free(blob);
}

static void push_entry(repo_entries *list, size_t *cap, repo_entry *ent)
{
    if (list->n == *cap) {
        *cap = *cap ? *cap * 2 : 32;
        list->items = realloc(list->items, *cap * sizeof *list->items);
        if (!list->items)
            abort();
    }
    list->items[list->n++] = *ent;
}

static int list_tree(repo *r, git_tree *tree, const char *prefix, bool recursive,
                     repo_entries *out, size_t *cap, int depth, err *e)
{
    if (depth > 64)
        return err_set(e, 500, "", "tree nesting too deep");
    size_t count = git_tree_entrycount(tree);
    buf path = BUF_INIT;
    for (int pass = 0; pass < 2; pass++) { /* directories first, then files */
        for (size_t i = 0; i < count; i++) {
            const git_tree_entry *te = git_tree_entry_byindex(tree, i);
            bool is_dir = git_tree_entry_type(te) == GIT_OBJECT_TREE;
            if (is_dir != (pass == 0))
                continue;
            if (git_tree_entry_type(te) == GIT_OBJECT_COMMIT)
                continue; /* submodules are not files */
            buf_reset(&path);
            if (*prefix) {
                buf_puts(&path, prefix);
                buf_putc(&path, '/');
            }
            buf_puts(&path, git_tree_entry_name(te));
            repo_entry ent;
            describe_entry(r, te, path.data, &ent);
            push_entry(out, cap, &ent);
            if (is_dir && recursive) {
                git_tree *sub = NULL;
                if (git_tree_lookup(&sub, r->git, git_tree_entry_id(te)) != 0) {
                    buf_free(&path);
                    return git_fail(e, "cannot read tree");
                }
                int rc = list_tree(r, sub, path.data, recursive, out, cap, depth + 1, e);
                git_tree_free(sub);
                if (rc != 0) {
                    buf_free(&path);
                    return rc;
                }
            }
        }
    }
    buf_free(&path);
    return 0;
}

int repo_list(repo *r, const char *commit, const char *dir, bool recursive, repo_entries *out,
              err *e)
{
    memset(out, 0, sizeof *out);
    git_tree *root = NULL;
    if (commit_tree(r, commit, &root, e) != 0)
        return -1;
    git_tree *tree = root;
    if (dir && *dir) {
        git_tree_entry *te = NULL;
        if (git_tree_entry_bypath(&te, root, dir) != 0 ||
            git_tree_entry_type(te) != GIT_OBJECT_TREE) {
            git_tree_entry_free(te);
            git_tree_free(root);
            return err_set(e, 404, "EntryNotFound", "Entry not found: %s", dir);
        }
        int rc = git_tree_lookup(&tree, r->git, git_tree_entry_id(te));
        git_tree_entry_free(te);
        if (rc != 0) {
            git_tree_free(root);
            return git_fail(e, "cannot read tree");
        }
    }
    size_t cap = 0;
    int rc = list_tree(r, tree, dir ? dir : "", recursive, out, &cap, 0, e);
    if (tree != root)
        git_tree_free(tree);
    git_tree_free(root);
    if (rc != 0)
        repo_entries_free(out);
    return rc;
}

int repo_stat(repo *r, const char *commit, const char *path, repo_entry *out, err *e)
{
    git_tree *root = NULL;
    if (commit_tree(r, commit, &root, e) != 0)
        return -1;
    git_tree_entry *te = NULL;
    int rc = git_tree_entry_bypath(&te, root, path);
    git_tree_free(root);
    if (rc != 0 || git_tree_entry_type(te) == GIT_OBJECT_COMMIT) {
        git_tree_entry_free(te);
        return 1;
    }
    describe_entry(r, te, path, out);
    git_tree_entry_free(te);
    return 0;
}

int repo_read(repo *r, const char *commit, const char *path, buf *out, err *e)
{
    git_tree *root = NULL;
    if (commit_tree(r, commit, &root, e) != 0)
        return -1;
    git_tree_entry *te = NULL;
    int rc = git_tree_entry_bypath(&te, root, path);
    git_tree_free(root);
    if (rc != 0 || git_tree_entry_type(te) != GIT_OBJECT_BLOB) {
        git_tree_entry_free(te);
        return err_set(e, 404, "EntryNotFound", "Entry not found: %s", path);
    }
    git_blob *blob = NULL;
    rc = git_blob_lookup(&blob, r->git, git_tree_entry_id(te));
    git_tree_entry_free(te);
    if (rc != 0)
        return git_fail(e, "cannot read blob");
    buf_append(out, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
    git_blob_free(blob);
    return 0;
}

/* ---- commits ----------------------------------------------------------------------------- */

/* A file written at `path` replaces what stood in its way, as on the Hub: a directory of that
 * name (and everything in it), and any file named like one of its parent directories. */
static void replace_conflicts(git_index *idx, const char *path)
{
    buf prefix = BUF_INIT;
    buf_printf(&prefix, "%s/", path);
    size_t pos;
    if (git_index_find_prefix(&pos, idx, prefix.data) == 0)
        git_index_remove_directory(idx, path, 0);
    for (const char *slash = strchr(path, '/'); slash; slash = strchr(slash + 1, '/')) {
        buf_reset(&prefix);
        buf_append(&prefix, path, (size_t)(slash - path));
        if (git_index_get_bypath(idx, prefix.data, 0))
            git_index_remove(idx, prefix.data, 0);
    }
    buf_free(&prefix);
}

static int apply_op(repo *r, git_index *idx, git_tree *parent_tree, const repo_op *op, err *e)
{
    switch (op->kind) {
    case REPO_OP_PUT: {
        git_oid blob;
        if (git_blob_create_from_buffer(&blob, r->git, op->data, op->len) != 0)
            return git_fail(e, "cannot write blob");
        replace_conflicts(idx, op->path);
        git_index_entry ent = {0};
        ent.mode = GIT_FILEMODE_BLOB;
        ent.id = blob;
        ent.path = op->path;
        ent.file_size = (uint32_t)op->len;
        if (git_index_add(idx, &ent) != 0)
            return err_set(e, 422, "", "cannot add %s: %s", op->path,
                           git_error_last() ? git_error_last()->message : "invalid path");
        return 0;
    }
    case REPO_OP_DELETE_FILE:
        if (!git_index_get_bypath(idx, op->path, 0))
            return err_set(e, 404, "EntryNotFound",
                           "A file with this name doesn't exist: %s", op->path);
        git_index_remove(idx, op->path, 0);
        return 0;
    case REPO_OP_DELETE_FOLDER: {
        buf dir = BUF_INIT;
        buf_printf(&dir, "%s/", op->path);
        size_t pos;
        int found = git_index_find_prefix(&pos, idx, dir.data);
        if (found == 0)
            git_index_remove_directory(idx, op->path, 0);
        buf_free(&dir);
        if (found != 0)
            return err_set(e, 404, "EntryNotFound",
                           "A folder with this name doesn't exist: %s", op->path);
        return 0;
    }
    case REPO_OP_COPY: {
        replace_conflicts(idx, op->path);
        git_tree *src = parent_tree;
        git_tree *owned = NULL;
        if (op->src_rev && *op->src_rev) {
            char sha[41];
            if (repo_resolve(r, op->src_rev, sha, e) != 0 || commit_tree(r, sha, &owned, e) != 0)
                return -1;
            src = owned;
        }
        git_tree_entry *te = NULL;
        if (!src || git_tree_entry_bypath(&te, src, op->src_path) != 0 ||
            git_tree_entry_type(te) != GIT_OBJECT_BLOB) {
            git_tree_entry_free(te);
            git_tree_free(owned);
            return err_set(e, 404, "EntryNotFound", "copy source not found: %s", op->src_path);
        }
        git_index_entry ent = {0};
        ent.mode = GIT_FILEMODE_BLOB;
        ent.id = *git_tree_entry_id(te);
        ent.path = op->path;
        int rc = git_index_add(idx, &ent);
        git_tree_entry_free(te);
        git_tree_free(owned);
        return rc == 0 ? 0 : err_set(e, 422, "", "cannot copy to %s", op->path);
    }
    }
    return err_set(e, 400, "", "unknown operation");
}

/* One attempt: build the tree from the branch's current head and CAS the ref.
 * Returns 0, -1 (error in e), or 1 when the branch moved under us. */
static int commit_once(repo *r, const repo_commit_request *c, const char *refname,
                       char sha_out[41], err *e)
{
    git_oid head_oid = {{0}};
    bool have_head = git_reference_name_to_id(&head_oid, r->git, refname) == 0;
    if (!have_head && !c->create_branch)
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", c->branch);
    if (c->parent && *c->parent) {
        char head_hex[41] = "";
        if (have_head)
            git_oid_tostr(head_hex, sizeof head_hex, &head_oid);
        /* A short parent id is accepted as a prefix of the head, as the Hub does. */
        size_t n = strlen(c->parent);
        if (!have_head || n < 7 || strncmp(head_hex, c->parent, n) != 0)
            return err_set(e, 412, "",
                           "The branch was updated since you opened this page. Please refresh "
                           "and try again.");
    }
    git_oid base_oid = head_oid;
    bool have_base = have_head;
    if (!have_head && c->start && *c->start) {
        if (git_oid_fromstr(&base_oid, c->start) != 0)
            return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", c->start);
        have_base = true;
    }
    git_commit *parent = NULL;
    git_tree *parent_tree = NULL;
    git_index *idx = NULL;
    git_signature *sig = NULL;
    int rc = -1;
    if (have_base && (git_commit_lookup(&parent, r->git, &base_oid) != 0 ||
                      git_commit_tree(&parent_tree, parent) != 0)) {
        git_fail(e, "cannot read branch head");
        goto out;
    }
    if (git_index_new(&idx) != 0 || (parent_tree && git_index_read_tree(idx, parent_tree) != 0)) {
        git_fail(e, "cannot prepare commit");
        goto out;
    }
    for (size_t i = 0; i < c->nops; i++)
        if (apply_op(r, idx, parent_tree, &c->ops[i], e) != 0)
            goto out;
    git_oid tree_oid, commit_oid;
    if (git_index_write_tree_to(&tree_oid, idx, r->git) != 0) {
        err_set(e, 422, "", "cannot build the new tree: %s",
                git_error_last() ? git_error_last()->message : "conflicting paths");
        goto out;
    }
    git_tree *tree = NULL;
    if (git_tree_lookup(&tree, r->git, &tree_oid) != 0) {
        git_fail(e, "cannot read new tree");
        goto out;
    }
    if (git_signature_now(&sig, c->author_name, c->author_email) != 0) {
        git_tree_free(tree);
        git_fail(e, "invalid author");
        goto out;
    }
    const git_commit *parents[1] = {parent};
    int made = git_commit_create(&commit_oid, r->git, NULL, sig, sig, "UTF-8", c->message, tree,
                                 parent ? 1 : 0, parents);
    git_tree_free(tree);
    if (made != 0) {
        git_fail(e, "cannot write commit");
        goto out;
    }
    git_reference *ref = NULL;
    char log_msg[128];
    snprintf(log_msg, sizeof log_msg, "commit: hearth api");
    int moved = have_head ? git_reference_create_matching(&ref, r->git, refname, &commit_oid, 1,
                                                          &head_oid, log_msg)
                          : git_reference_create(&ref, r->git, refname, &commit_oid, 0, log_msg);
    git_reference_free(ref);
    if (moved == GIT_EMODIFIED || moved == GIT_ELOCKED || moved == GIT_EEXISTS) {
        rc = 1;
        goto out;
    }
    repo_note_refs_changed();
    if (moved != 0) {
        git_fail(e, "cannot move branch");
        goto out;
    }
    git_oid_tostr(sha_out, 41, &commit_oid);
    rc = 0;
out:
    git_signature_free(sig);
    git_index_free(idx);
    git_tree_free(parent_tree);
    git_commit_free(parent);
    return rc;
}

int repo_commit(repo *r, const repo_commit_request *c, char sha_out[41], err *e)
{
    char refname[512];
    snprintf(refname, sizeof refname,
             text_starts_with(c->branch, "refs/") ? "%s" : "refs/heads/%s", c->branch);
    for (int attempt = 0; attempt < 20; attempt++) {
        int rc = commit_once(r, c, refname, sha_out, e);
        if (rc <= 0)
            return rc;
        if (c->parent && *c->parent)
            return err_set(e, 412, "",
                           "The branch was updated since you opened this page. Please refresh "
                           "and try again.");
        struct timespec pause = {0, (long)(1 + attempt) * 2000000L};
        nanosleep(&pause, NULL);
    }
    return err_set(e, 409, "", "the branch %s is too busy; try again", c->branch);
}

int repo_create(const char *path, const repo_file *files, size_t nfiles, const char *author,
                const char *message, char sha_out[41], err *e)
{
    repo_global_init();
    git_repository_init_options opts;
    git_repository_init_options_init(&opts, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
    opts.flags = GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_MKPATH |
                 GIT_REPOSITORY_INIT_NO_REINIT;
    opts.initial_head = "main";
    git_repository *g = NULL;
    if (git_repository_init_ext(&g, path, &opts) != 0)
        return git_fail(e, "cannot create repository");
    repo r = {.git = g};
    repo_op *ops = calloc(nfiles ? nfiles : 1, sizeof *ops);
    if (!ops)
        abort();
    for (size_t i = 0; i < nfiles; i++) {
        ops[i].kind = REPO_OP_PUT;
        ops[i].path = files[i].path;
        ops[i].data = files[i].data;
        ops[i].len = files[i].len;
    }
    repo_commit_request req = {.branch = "main", .ops = ops, .nops = nfiles,
                               .author_name = author, .author_email = "hearth@localhost",
                               .message = message, .create_branch = true};
    int rc = repo_commit(&r, &req, sha_out, e);
    free(ops);
    git_repository_free(g);
    return rc;
}

/* ---- history ----------------------------------------------------------------------------- */

void repo_commit_info_free(repo_commit_info *c)
{
    free(c->title);
    free(c->message);
    free(c->author);
    c->title = c->message = c->author = NULL;
}

void repo_log_free(repo_log *log)
{
    for (size_t i = 0; i < log->n; i++)
        repo_commit_info_free(&log->items[i]);
    free(log->items);
    log->items = NULL;
    log->n = 0;
}

static void describe_commit(const git_commit *c, repo_commit_info *out)
{
    git_oid_tostr(out->id, sizeof out->id, git_commit_id(c));
    const char *msg = git_commit_message(c);
    const char *nl = strchr(msg, '\n');
    size_t title_len = nl ? (size_t)(nl - msg) : strlen(msg);
    out->title = strndup(msg, title_len);
    const char *body = nl ? nl + 1 : "";
    while (*body == '\n')
        body++;
    out->message = strdup(body);
    size_t bl = strlen(out->message);
    while (bl && out->message[bl - 1] == '\n')
        out->message[--bl] = '\0';
    const git_signature *a = git_commit_author(c);
    out->author = strdup(a && a->name ? a->name : "");
    out->time_ms = (int64_t)git_commit_time(c) * 1000;
}

static int start_walk(repo *r, const char *commit, git_revwalk **walk, err *e)
{
    git_oid oid;
    if (git_oid_fromstr(&oid, commit) != 0)
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", commit);
    if (git_revwalk_new(walk, r->git) != 0)
        return git_fail(e, "cannot walk history");
    git_revwalk_sorting(*walk, GIT_SORT_TOPOLOGICAL | GIT_SORT_TIME);
    if (git_revwalk_push(*walk, &oid) != 0) {
        git_revwalk_free(*walk);
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", commit);
    }
    return 0;
}

int repo_history(repo *r, const char *commit, int64_t skip, int64_t limit, repo_log *out, err *e)
{
    memset(out, 0, sizeof *out);
    git_revwalk *walk = NULL;
    if (start_walk(r, commit, &walk, e) != 0)
        return -1;
    git_oid oid;
    size_t cap = 0;
    int64_t index = 0;
    while (git_revwalk_next(&oid, walk) == 0) {
        if (index >= skip && (int64_t)out->n < limit) {
            git_commit *c = NULL;
            if (git_commit_lookup(&c, r->git, &oid) == 0) {
                if (out->n == cap) {
                    cap = cap ? cap * 2 : 16;
                    out->items = realloc(out->items, cap * sizeof *out->items);
                    if (!out->items)
                        abort();
                }
                describe_commit(c, &out->items[out->n++]);
                git_commit_free(c);
            }
        }
        index++;
    }
    out->total = index;
    git_revwalk_free(walk);
    return 0;
}

/* The id of path's entry in commit c, or zero when absent. */
static bool entry_id_at(const git_commit *c, const char *path, git_oid *out)
{
    git_tree *tree = NULL;
    if (git_commit_tree(&tree, c) != 0)
        return false;
    git_tree_entry *te = NULL;
    bool found = git_tree_entry_bypath(&te, tree, path) == 0;
    if (found)
        *out = *git_tree_entry_id(te);
    git_tree_entry_free(te);
    git_tree_free(tree);
    return found;
}

int repo_last_commit_for(repo *r, const char *commit, const char *path, repo_commit_info *out,
                         err *e)
{
    git_commit *c = NULL;
    if (lookup_commit(r, commit, &c, e) != 0)
        return -1;
    git_oid target;
    if (!entry_id_at(c, path, &target)) {
        git_commit_free(c);
        return err_set(e, 404, "EntryNotFound", "Entry not found: %s", path);
    }
    /* Follow first parents while the entry is unchanged; bounded for huge histories. */
    for (int steps = 0; steps < 10000; steps++) {
        git_commit *parent = NULL;
        git_oid there;
        bool same = git_commit_parentcount(c) > 0 && git_commit_parent(&parent, c, 0) == 0 &&
                    entry_id_at(parent, path, &there) && git_oid_equal(&there, &target);
        if (!same) {
            git_commit_free(parent);
            break;
        }
        git_commit_free(c);
        c = parent;
    }
    describe_commit(c, out);
    git_commit_free(c);
    return 0;
}

int repo_squash(repo *r, const char *branch, const char *message, const char *author,
                char sha_out[41], err *e)
{
    char refname[512];
    snprintf(refname, sizeof refname, "refs/heads/%s", branch);
    git_oid head;
    if (git_reference_name_to_id(&head, r->git, refname) != 0)
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", branch);
    git_commit *c = NULL;
    git_tree *tree = NULL;
    git_signature *sig = NULL;
    git_reference *ref = NULL;
    git_oid oid;
    int rc = -1;
    if (git_commit_lookup(&c, r->git, &head) != 0 || git_commit_tree(&tree, c) != 0 ||
        git_signature_now(&sig, author, "hearth@localhost") != 0 ||
        git_commit_create(&oid, r->git, NULL, sig, sig, "UTF-8", message, tree, 0, NULL) != 0) {
        git_fail(e, "cannot squash");
        goto out;
    }
    int moved = git_reference_create_matching(&ref, r->git, refname, &oid, 1, &head, "squash");
    repo_note_refs_changed();
    if (moved != 0) {
        err_set(e, moved == GIT_EMODIFIED ? 412 : 500, "", "the branch moved during the squash");
        goto out;
    }
    git_oid_tostr(sha_out, 41, &oid);
    rc = 0;
out:
    git_reference_free(ref);
    git_signature_free(sig);
    git_tree_free(tree);
    git_commit_free(c);
    return rc;
}

/* ---- refs -------------------------------------------------------------------------------- */

static void push_ref(repo_ref **list, size_t *n, const char *name, const char *full,
                     const char *target)
{
    *list = realloc(*list, (*n + 1) * sizeof **list);
    if (!*list)
        abort();
    repo_ref *ref = &(*list)[(*n)++];
    ref->name = strdup(name);
    ref->ref = strdup(full);
    snprintf(ref->target, sizeof ref->target, "%s", target);
}

int repo_list_refs(repo *r, repo_refs *out, err *e)
{
    memset(out, 0, sizeof *out);
    git_reference_iterator *it = NULL;
    if (git_reference_iterator_new(&it, r->git) != 0)
        return git_fail(e, "cannot list refs");
    git_reference *ref;
    while (git_reference_next(&ref, it) == 0) {
        const char *full = git_reference_name(ref);
        char target[41];
        if (!peel_to_commit_id(r, full, target)) {
            git_reference_free(ref);
            continue;
        }
        if (text_starts_with(full, "refs/heads/"))
            push_ref(&out->branches, &out->nbranches, full + 11, full, target);
        else if (text_starts_with(full, "refs/tags/"))
            push_ref(&out->tags, &out->ntags, full + 10, full, target);
        else if (text_starts_with(full, "refs/convert/"))
            push_ref(&out->converts, &out->nconverts, full + 13, full, target);
        else if (text_starts_with(full, "refs/pr/"))
            push_ref(&out->pulls, &out->npulls, full, full, target);
        git_reference_free(ref);
    }
    git_reference_iterator_free(it);
    return 0;
}

static void free_ref_list(repo_ref *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].ref);
    }
    free(list);
}

void repo_refs_free(repo_refs *refs)
{
    free_ref_list(refs->branches, refs->nbranches);
    free_ref_list(refs->tags, refs->ntags);
    free_ref_list(refs->converts, refs->nconverts);
    free_ref_list(refs->pulls, refs->npulls);
    memset(refs, 0, sizeof *refs);
}

static bool valid_short_ref(const char *prefix, const char *name, char *full, size_t cap)
{
    if (!*name || text_starts_with(name, "refs/") || strlen(name) > 200)
        return false;
    snprintf(full, cap, "%s%s", prefix, name);
    int valid = 0;
    return git_reference_name_is_valid(&valid, full) == 0 && valid;
}

int repo_branch_create(repo *r, const char *name, const char *start_sha, bool overwrite,
                       bool empty, const char *author, err *e)
{
    char full[512];
    if (!valid_short_ref("refs/heads/", name, full, sizeof full))
        return err_set(e, 400, "", "Invalid reference for a branch: %s", name);
    git_oid oid;
    if (empty) {
        git_treebuilder *tb = NULL;
        git_oid tree_oid;
        git_tree *tree = NULL;
        git_signature *sig = NULL;
        int ok = git_treebuilder_new(&tb, r->git, NULL) == 0 &&
                 git_treebuilder_write(&tree_oid, tb) == 0 &&
                 git_tree_lookup(&tree, r->git, &tree_oid) == 0 &&
                 git_signature_now(&sig, author, "hearth@localhost") == 0 &&
                 git_commit_create(&oid, r->git, NULL, sig, sig, "UTF-8", "Empty branch\n", tree,
                                   0, NULL) == 0;
        git_signature_free(sig);
        git_tree_free(tree);
        git_treebuilder_free(tb);
        if (!ok)
            return git_fail(e, "cannot create empty branch");
    } else if (git_oid_fromstr(&oid, start_sha) != 0) {
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", start_sha);
    }
    git_reference *ref = NULL;
    int rc = git_reference_create(&ref, r->git, full, &oid, overwrite, "branch: create");
    git_reference_free(ref);
    repo_note_refs_changed();
    if (rc == GIT_EEXISTS)
        return err_set(e, 409, "", "Reference %s already exists", full);
    return rc == 0 ? 0 : git_fail(e, "cannot create branch");
}

/* Deletes refs/<kind>/name (kind "heads" or "tags"); what means "refs/heads/main" is refused
 * by the caller. */
static int ref_delete(repo *r, const char *prefix, const char *name, const char *what, err *e)
{
    char full[512];
    if (!valid_short_ref(prefix, name, full, sizeof full))
        return err_set(e, 400, "", "Invalid %s: %s", what, name);
    git_reference *ref = NULL;
    if (git_reference_lookup(&ref, r->git, full) != 0)
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", name);
    int rc = git_reference_delete(ref);
    git_reference_free(ref);
    repo_note_refs_changed();
    return rc == 0 ? 0 : git_fail(e, "cannot delete reference");
}

int repo_branch_delete(repo *r, const char *name, err *e)
{
    if (!strcmp(name, "main"))
        return err_set(e, 403, "", "Cannot delete refs/heads/main");
    return ref_delete(r, "refs/heads/", name, "reference for a branch", e);
}

int repo_tag_create(repo *r, const char *name, const char *target_sha, const char *message,
                    const char *author, err *e)
{
    char full[512];
    if (!valid_short_ref("refs/tags/", name, full, sizeof full))
        return err_set(e, 400, "", "Invalid tag name: %s", name);
    git_oid oid, tag_oid;
    git_object *target = NULL;
    if (git_oid_fromstr(&oid, target_sha) != 0 ||
        git_object_lookup(&target, r->git, &oid, GIT_OBJECT_COMMIT) != 0)
        return err_set(e, 404, "RevisionNotFound", "Invalid rev id: %s", target_sha);
    int rc;
    if (message && *message) {
        git_signature *sig = NULL;
        git_signature_now(&sig, author, "hearth@localhost");
        rc = git_tag_create(&tag_oid, r->git, name, target, sig, message, 0);
        git_signature_free(sig);
    } else {
        rc = git_tag_create_lightweight(&tag_oid, r->git, name, target, 0);
    }
    git_object_free(target);
    repo_note_refs_changed();
    if (rc == GIT_EEXISTS)
        return err_set(e, 409, "", "Tag %s already exists", name);
    return rc == 0 ? 0 : git_fail(e, "cannot create tag");
}

int repo_tag_delete(repo *r, const char *name, err *e)
{
    return ref_delete(r, "refs/tags/", name, "tag name", e);
}

/* ---- reachable LFS pointers ---------------------------------------------------------------- */

/* A grow-only open-addressing set of object ids (trees and blobs already visited). */
typedef struct oid_set {
    git_oid *slots;
    size_t cap, used;
} oid_set;

static bool oid_set_add(oid_set *set, const git_oid *id)
{
    if ((set->used + 1) * 2 > set->cap) {
        oid_set bigger = {calloc(set->cap ? set->cap * 2 : 4096, sizeof(git_oid)),
                          set->cap ? set->cap * 2 : 4096, 0};
        if (!bigger.slots)
            abort();
        for (size_t i = 0; i < set->cap; i++)
            if (!git_oid_is_zero(&set->slots[i]))
                oid_set_add(&bigger, &set->slots[i]);
        free(set->slots);
        *set = bigger;
    }
    uint64_t h;
    memcpy(&h, id->id, sizeof h);
    for (size_t i = h & (set->cap - 1);; i = (i + 1) & (set->cap - 1)) {
        if (git_oid_is_zero(&set->slots[i])) {
            set->slots[i] = *id;
            set->used++;
            return true;
        }
        if (git_oid_equal(&set->slots[i], id))
            return false;
    }
}

typedef struct lfs_walk {
    repo *r;
    oid_set seen;
    repo_lfs_fn fn;
    void *ctx;
    bool stopped;
} lfs_walk;

static int visit_entry(const char *root, const git_tree_entry *te, void *payload)
{
    lfs_walk *w = payload;
    if (w->stopped)
        return -1;
    if (!oid_set_add(&w->seen, git_tree_entry_id(te)))
        return 1; /* a tree or blob seen before: skip it (and, for a tree, what is below) */
    if (git_tree_entry_type(te) != GIT_OBJECT_BLOB)
        return 0;
    git_blob *blob = NULL;
    if (git_blob_lookup(&blob, w->r->git, git_tree_entry_id(te)) != 0)
        return 0;
    repo_lfs lfs;
    git_object_size_t size = git_blob_rawsize(blob);
    if (size < REPO_LFS_POINTER_MAX &&
        repo_parse_lfs_pointer(git_blob_rawcontent(blob), (size_t)size, &lfs) &&
        w->fn(w->ctx, &lfs) != 0)
        w->stopped = true;
    git_blob_free(blob);
    return w->stopped ? -1 : 0;
}

int repo_each_lfs_pointer(repo *r, repo_lfs_fn fn, void *ctx, err *e)
{
    git_revwalk *walk = NULL;
    if (git_revwalk_new(&walk, r->git) != 0)
        return git_fail(e, "cannot walk history");
    git_revwalk_push_glob(walk, "refs/*");
    lfs_walk w = {.r = r, .fn = fn, .ctx = ctx};
    git_oid id;
    int rc = 0;
    while (!w.stopped && git_revwalk_next(&id, walk) == 0) {
        git_commit *c = NULL;
        git_tree *tree = NULL;
        if (git_commit_lookup(&c, r->git, &id) == 0 && git_commit_tree(&tree, c) == 0 &&
            oid_set_add(&w.seen, git_tree_id(tree)))
            git_tree_walk(tree, GIT_TREEWALK_PRE, visit_entry, &w);
        git_tree_free(tree);
        git_commit_free(c);
    }
    if (w.stopped)
        rc = err_set(e, 500, "", "stopped");
    free(w.seen.slots);
    git_revwalk_free(walk);
    return rc;
}
