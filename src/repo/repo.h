/* repo — versioned repositories as bare git repositories, through libgit2.
 *
 * Every Hearth repo (model, dataset, space) is one bare git repository. This module resolves
 * revisions, lists trees, reads blobs, recognises git-lfs pointer files, writes commits and
 * manages branches and tags. It knows nothing of HTTP or of the metadata database.
 *
 * Commits are all or nothing: the new tree and commit objects are written first, then the
 * branch is moved with a compare-and-swap on its old value (libgit2's lock file + expected
 * id), so two writers racing on one branch can never lose a commit: the loser gets 412 and
 * (when it did not pin a parent) is retried on the new head.
 *
 * A `repo` handle is used by one thread at a time. Strings in returned structs are
 * malloc'd and released by the matching *_free function.
 */
#ifndef HEARTH_REPO_H
#define HEARTH_REPO_H

#include <stdbool.h>
#include <stdint.h>

#include "base/base.h"

typedef struct repo repo;

#define REPO_LFS_POINTER_MAX 1024   /* larger blobs are never LFS pointers */

/* Initialises libgit2 once per process. */
void repo_global_init(void);

/* Creates a bare repository at path whose main branch holds one commit with the given files
 * (e.g. .gitattributes). 500 on failure, nothing left behind. */
typedef struct repo_file {
    const char *path;
    const void *data;
    size_t len;
} repo_file;
int repo_create(const char *path, const repo_file *files, size_t nfiles, const char *author,
                const char *message, char sha_out[41], err *e);
repo *repo_open(const char *path, err *e);
void repo_close(repo *r);

/* Resolves a revision (branch, tag, full or short commit id, refs/..., HEAD) to a commit id.
 * 404 RevisionNotFound when it does not name a commit. */
int repo_resolve(repo *r, const char *rev, char sha_out[41], err *e);
/* Revision lookups are cached per handle while no ref changes in this process. Call this
 * after refs were changed by anything other than this module (a git push). */
void repo_note_refs_changed(void);

/* ---- trees ----------------------------------------------------------------------------- */

typedef struct repo_lfs {
    char oid[65];          /* sha256 hex */
    int64_t size;
    int64_t pointer_size;
} repo_lfs;

typedef struct repo_entry {
    char *path;            /* relative to the repo root */
    bool is_dir;
    char oid[41];          /* git blob / tree id */
    int64_t size;          /* real size (LFS: the object's size); 0 for directories */
    bool is_lfs;
    repo_lfs lfs;
} repo_entry;

typedef struct repo_entries {
    repo_entry *items;
    size_t n;
} repo_entries;

void repo_entries_free(repo_entries *list);
/* Lists dir ("" = root) at commit: immediate children, or everything below when recursive
 * (directories first, then files, per level). 404 EntryNotFound when dir is missing or a file. */
int repo_list(repo *r, const char *commit, const char *dir, bool recursive, repo_entries *out,
              err *e);
/* One path (file or directory) at commit; 1 when missing. */
int repo_stat(repo *r, const char *commit, const char *path, repo_entry *out, err *e);
void repo_entry_free(repo_entry *ent);
/* Reads a file's git blob (for LFS files: the pointer text) into out; 404 EntryNotFound. */
int repo_read(repo *r, const char *commit, const char *path, buf *out, err *e);
/* Parses a git-lfs pointer; true when data is one. */
bool repo_parse_lfs_pointer(const void *data, size_t len, repo_lfs *out);
/* Formats a pointer file for oid/size into out. */
void repo_format_lfs_pointer(buf *out, const char *oid, int64_t size);

/* ---- commits --------------------------------------------------------------------------- */

typedef enum {
    REPO_OP_PUT,            /* write data at path */
    REPO_OP_DELETE_FILE,    /* path must be a file (404 EntryNotFound otherwise) */
    REPO_OP_DELETE_FOLDER,  /* path must be a directory */
    REPO_OP_COPY,           /* copy src_path at src_rev (or the parent) to path */
} repo_op_kind;

typedef struct repo_op {
    repo_op_kind kind;
    const char *path;
    const void *data;
    size_t len;
    const char *src_path;
    const char *src_rev;
} repo_op;

typedef struct repo_commit_request {
    const char *branch;          /* short name: "main", "dev", "refs/pr/1" is passed verbatim */
    const char *parent;          /* expected head, or NULL = whatever the head is now */
    const repo_op *ops;
    size_t nops;
    const char *author_name;
    const char *author_email;
    const char *message;
    bool create_branch;          /* allow a branch that does not exist yet */
    const char *start;           /* a new branch starts at this commit (NULL = orphan) */
} repo_commit_request;

/* Applies the operations to the branch head and moves the branch. 412 when parent is given and
 * the head differs; 404 RevisionNotFound when the branch is missing. */
int repo_commit(repo *r, const repo_commit_request *c, char sha_out[41], err *e);

typedef struct repo_commit_info {
    char id[41];
    char *title;
    char *message;         /* the body after the title line */
    char *author;
    int64_t time_ms;
} repo_commit_info;

typedef struct repo_log {
    repo_commit_info *items;
    size_t n;
    int64_t total;         /* commits reachable from the start, for X-Total-Count */
} repo_log;

void repo_log_free(repo_log *log);
int repo_history(repo *r, const char *commit, int64_t skip, int64_t limit, repo_log *out, err *e);
/* The newest commit (from `commit` back) that changed path. */
int repo_last_commit_for(repo *r, const char *commit, const char *path, repo_commit_info *out,
                         err *e);
void repo_commit_info_free(repo_commit_info *c);

/* Replaces the branch's history with one parentless commit of its current tree. */
int repo_squash(repo *r, const char *branch, const char *message, const char *author,
                char sha_out[41], err *e);

/* Calls fn for every git-lfs pointer in every commit reachable from any ref (each distinct
 * tree is visited once). Stops early and returns -1 when fn returns non-zero. */
typedef int (*repo_lfs_fn)(void *ctx, const repo_lfs *pointer);
int repo_each_lfs_pointer(repo *r, repo_lfs_fn fn, void *ctx, err *e);

/* ---- refs ------------------------------------------------------------------------------ */

typedef struct repo_ref {
    char *name;            /* short name ("main", "v1") or full for refs/pr/N, refs/convert/x */
    char *ref;             /* full ref name */
    char target[41];
} repo_ref;

typedef struct repo_refs {
    repo_ref *branches, *tags, *converts, *pulls;
    size_t nbranches, ntags, nconverts, npulls;
} repo_refs;

int repo_list_refs(repo *r, repo_refs *out, err *e);
void repo_refs_free(repo_refs *refs);
/* 409 when it exists (unless overwrite); 400 for invalid names. empty → orphan, no files. */
int repo_branch_create(repo *r, const char *name, const char *start_sha, bool overwrite,
                       bool empty, const char *author, err *e);
int repo_branch_delete(repo *r, const char *name, err *e);
int repo_tag_create(repo *r, const char *name, const char *target_sha, const char *message,
                    const char *author, err *e);
int repo_tag_delete(repo *r, const char *name, err *e);

#endif
