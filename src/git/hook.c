/* hook — the pre-receive hook: checks a push before git moves any ref.
 *
 * git receive-pack runs it with the pushed objects in a quarantine directory (described by
 * GIT_OBJECT_DIRECTORY / GIT_ALTERNATE_OBJECT_DIRECTORIES), the ref updates on stdin
 * ("<old> <new> <ref>" per line), and whatever it prints on stderr shown to the pusher as
 * "remote: ..." lines. Exiting non-zero rejects the whole push, so nothing is half-applied.
 */
#include "git/git.h"

#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "repo/repo.h"
#include "store/store.h"

#define MAX_COMMITS_CHECKED 100000
#define MAX_MISSING_LISTED 20

typedef struct check {
    const char *data_dir;
    db *db;
    store *store;
    int64_t repo_id;
    git_repository *git;
    size_t missing;
    bool failed;
} check;

/* In the store, and uploaded to this repo (objects are shared only by content, never by
 * naming another repo's hash). */
static bool lfs_object_present(const check *c, const char *oid)
{
    err e = ERR_INIT;
    return store_stat(c->store, oid, NULL, &e) == 0 &&
           db_repo_object_has(c->db, c->repo_id, oid, &e) == 0;
}

static int check_delta(const git_diff_delta *delta, float progress, void *payload)
{
    check *c = payload;
    if (delta->status != GIT_DELTA_ADDED && delta->status != GIT_DELTA_MODIFIED &&
        delta->status != GIT_DELTA_RENAMED && delta->status != GIT_DELTA_COPIED)
        return 0;
    /* Every blob, whatever its mode: pointer text in a symlink (120000) names an object just
     * as well, and is refused the same way when this repo does not hold it. */
    if (delta->new_file.mode == GIT_FILEMODE_TREE || delta->new_file.mode == GIT_FILEMODE_COMMIT)
        return 0;
    git_blob *blob = NULL;
    if (git_blob_lookup(&blob, c->git, &delta->new_file.id) != 0)
        return 0;
    repo_lfs lfs;
    git_object_size_t size = git_blob_rawsize(blob);
    if (size < REPO_LFS_POINTER_MAX &&
        repo_parse_lfs_pointer(git_blob_rawcontent(blob), (size_t)size, &lfs) &&
        !lfs_object_present(c, lfs.oid)) {
        if (c->missing < MAX_MISSING_LISTED)
            fprintf(stderr, "hearth: %s: LFS object %s (%lld bytes) is not on the server\n",
                    delta->new_file.path, lfs.oid, (long long)lfs.size);
        c->missing++;
    }
    git_blob_free(blob);
    return 0;
}

/* Checks every commit reachable from `new` and from no existing ref. */
static void check_commits(check *c, const git_oid *new_id)
{
    git_object *obj = NULL;
    if (git_object_lookup(&obj, c->git, new_id, GIT_OBJECT_ANY) != 0) {
        fprintf(stderr, "hearth: the pushed object %s is missing\n", git_oid_tostr_s(new_id));
        c->failed = true;
        return;
    }
    git_object *peeled = NULL;
    int is_commit = git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT) == 0;
    git_object_free(obj);
    if (!is_commit)
        return; /* a tag of a tree or blob: nothing to check */
    git_revwalk *walk = NULL;
    git_revwalk_new(&walk, c->git);
    git_revwalk_push(walk, git_object_id(peeled));
    git_revwalk_hide_glob(walk, "refs/*");
    git_object_free(peeled);
    git_oid oid;
    size_t n = 0;
    while (!c->failed && git_revwalk_next(&oid, walk) == 0 && n++ < MAX_COMMITS_CHECKED) {
        git_commit *commit = NULL, *parent = NULL;
        git_tree *tree = NULL, *parent_tree = NULL;
        git_diff *diff = NULL;
        if (git_commit_lookup(&commit, c->git, &oid) == 0 && git_commit_tree(&tree, commit) == 0) {
            if (git_commit_parentcount(commit) > 0 && git_commit_parent(&parent, commit, 0) == 0)
                git_commit_tree(&parent_tree, parent);
            if (git_diff_tree_to_tree(&diff, c->git, parent_tree, tree, NULL) == 0)
                git_diff_foreach(diff, check_delta, NULL, NULL, NULL, c);
        }
        git_diff_free(diff);
        git_tree_free(parent_tree);
        git_tree_free(tree);
        git_commit_free(parent);
        git_commit_free(commit);
    }
    git_revwalk_free(walk);
}

int git_pre_receive_main(int argc, char **argv)
{
    const char *data_dir = getenv("HEARTH_DATA");
    if (!data_dir || !*data_dir) {
        fprintf(stderr, "hearth: pre-receive hook started without HEARTH_DATA\n");
        return 1;
    }
    const char *repo_id = getenv("HEARTH_REPO_ID");
    git_libgit2_init();
    check c = {.data_dir = data_dir, .repo_id = repo_id ? atoll(repo_id) : 0};
    buf db_path = BUF_INIT;
    data_path(&db_path, data_dir, DATA_DB);
    err e = ERR_INIT;
    c.db = db_open(db_path.data, &e);
    buf_reset(&db_path);
    data_path(&db_path, data_dir, DATA_STORE);
    c.store = c.db ? store_open(db_path.data, false, &e) : NULL;
    buf_free(&db_path);
    if (!c.db || !c.store) {
        fprintf(stderr, "hearth: cannot open the server's metadata: %s\n", e.message);
        db_close(c.db);
        return 1;
    }
    if (git_repository_open_ext(&c.git, ".", GIT_REPOSITORY_OPEN_FROM_ENV, NULL) != 0) {
        const git_error *ge = git_error_last();
        fprintf(stderr, "hearth: cannot open the repository: %s\n", ge ? ge->message : "?");
        db_close(c.db);
        store_close(c.store);
        return 1;
    }
    char line[1024];
    size_t updates = 0;
    while (fgets(line, sizeof line, stdin)) {
        char old_hex[64], new_hex[64], ref[900];
        if (sscanf(line, "%63s %63s %899s", old_hex, new_hex, ref) != 3)
            continue;
        if (++updates > 10000) {
            fprintf(stderr, "hearth: too many refs in one push\n");
            c.failed = true;
            break;
        }
        bool deleting = strspn(new_hex, "0") == strlen(new_hex);
        if (!text_starts_with(ref, "refs/heads/") && !text_starts_with(ref, "refs/tags/")) {
            fprintf(stderr, "hearth: %s: only branches and tags can be pushed (refs/pr/N and "
                            "refs/convert/NAME are managed by the server)\n", ref);
            c.failed = true;
            continue;
        }
        if (deleting) {
            if (!strcmp(ref, "refs/heads/main")) {
                fprintf(stderr, "hearth: refs/heads/main cannot be deleted\n");
                c.failed = true;
            }
            continue;
        }
        git_oid new_id;
        if (git_oid_fromstr(&new_id, new_hex) != 0) {
            fprintf(stderr, "hearth: %s: invalid object id %s\n", ref, new_hex);
            c.failed = true;
            continue;
        }
        check_commits(&c, &new_id);
    }
    if (c.missing) {
        fprintf(stderr, "hearth: push rejected: %zu LFS object(s) named by the pushed commits "
                        "were never uploaded. Install git-lfs (git lfs install) and push again, "
                        "or upload them with `git lfs push --all origin`.\n", c.missing);
        c.failed = true;
    }
    git_repository_free(c.git);
    git_libgit2_shutdown();
    db_close(c.db);
    store_close(c.store);
    return c.failed ? 1 : 0;
}
