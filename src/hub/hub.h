/* hub — the Hugging Face Hub API: the routes that huggingface_hub, @huggingface/hub and
 * git-lfs call, on top of the db (metadata), repo (git) and store (LFS bytes) modules.
 *
 * A hub serves one data directory, laid out as base/layout.c describes (hearth.db, lfs/,
 * repos/<uid>.git, uploads/, hooks/, snapshots/, secret); the admin CLI and the git hook open
 * the same paths through the same functions.
 *
 * The HTTP layer calls hub_dispatch for every request; see spec/hub-api.md for the routes.
 */
#ifndef HEARTH_HUB_H
#define HEARTH_HUB_H

#include "auth/auth.h"
#include "base/base.h"
#include "db/db.h"
#include "http/http.h"
#include "repo/repo.h"

typedef struct hub hub;

typedef struct hub_config {
    const char *data_dir;
    int64_t lfs_threshold;        /* files at or above this size are LFS (default 10 MB) */
    int64_t multipart_threshold;  /* LFS uploads at or above this size use multipart */
    int64_t multipart_part_size;
    /* git smart HTTP request bodies (see githttp.c): git-upload-pack (wants and haves),
     * inflated, default 10 MiB, anonymous callers a tenth of it; git-receive-pack (a pack),
     * raw and inflated, default 8 GiB. Larger ones are answered 413. */
    int64_t git_fetch_max;
    int64_t git_push_max;
    bool maintenance;             /* opened by `hearth admin` beside a running server: recover
                                     nothing, install nothing */
} hub_config;

hub *hub_open(const hub_config *config, err *e);
void hub_close(hub *h);
/* The http_dispatch_fn for a server whose app is a hub. */
const http_handler *hub_dispatch(http_request *req, void *app);

/* Shared with the admin CLI: the metadata database of an open hub. */
struct db *hub_db(hub *h);

/* ---- the domain: what every front end calls -----------------------------------------------
 *
 * The Hub API handlers, the web UI, git pushes, the gateway and `hearth admin` all change
 * repositories through these functions, so that each rule (names, permissions, the object-link
 * rule, PR numbering, derived metadata) holds whichever way a change comes in. They take typed
 * arguments, know nothing of HTTP, and return 0 or -1 with an error (status, X-Error-Code,
 * message) that a handler can reply with as it is. Permissions are asked of auth; `who` is the
 * caller on whose behalf the change is made. */

typedef struct hub_repo_spec {
    const char *type;           /* model | dataset | space */
    const char *ns;
    const char *name;
    bool is_private;
    const char *sdk;            /* spaces: gradio | streamlit | docker | static (default) */
    const char *license;        /* written into a README's front matter when none is given */
    const repo_file *files;     /* initial files (a .gitattributes is added when missing) */
    size_t nfiles;
} hub_repo_spec;

/* Creates a repo: its row, its git repository with the first commit, its derived metadata; all
 * or nothing. 400 invalid name / type / sdk, 403 when who may not create in ns, 409 when it
 * exists, 422 for initial files that name LFS objects. out receives the new row. */
int hub_repo_new(hub *h, const auth_caller *who, const hub_repo_spec *spec, db_repo *out,
                 err *e);
/* Deletes a repo: the row first (after which nothing reaches it), then its directory. 403
 * unless who may manage it. */
int hub_repo_remove(hub *h, const auth_caller *who, const db_repo *row, err *e);
/* Renames / moves a repo to ns/name, leaving a redirect. 400 invalid, 403 when who may not
 * manage the repo or create in ns, 409 when the target exists. */
int hub_repo_rename(hub *h, const auth_caller *who, const db_repo *row, const char *ns,
                    const char *name, err *e);
/* Visibility and gating ("" | "auto" | "manual"). 403 unless who may manage the repo. */
int hub_repo_configure(hub *h, const auth_caller *who, const db_repo *row, bool is_private,
                       const char *gated, err *e);

typedef struct hub_change {
    const db_repo *repo;
    const auth_caller *who;
    const char *branch;         /* the branch committed to ("main") or, with create_pr, the
                                   revision the pull request starts from */
    const char *parent;         /* expected head (412 when it moved), or NULL */
    bool create_pr;             /* commit to a new refs/pr/N instead */
    const repo_op *ops;         /* PUT data holding LFS pointer text must name objects linked
                                   to the repo (422 otherwise) */
    size_t nops;
    const char *summary;        /* "" = "Upload files" */
    const char *description;
} hub_change;

typedef struct hub_change_result {
    char commit[41];
    int64_t pr_number;          /* with create_pr */
} hub_change_result;

/* Writes one commit, all or nothing, then refreshes what is derived from main. */
int hub_commit_apply(hub *h, const hub_change *c, hub_change_result *out, err *e);

/* ---- maintenance (hearth admin, /api/admin/stats) ------------------------------------------ */

/* Forgets stored files no repo references any more (older than grace_ms), deletes packs no
 * file uses and rewrites packs at least min_dead (0..1) dead. *result: what was reclaimed. */
int hub_admin_gc(hub *h, int64_t grace_ms, double min_dead, json_t **result, err *e);
/* Re-hashes every chunk and file, and checks every repo's LFS pointers against the store.
 * report(ctx, line) is called per problem; returns the number of problems, or -1. */
typedef void (*hub_report_fn)(void *ctx, const char *line);
int64_t hub_admin_fsck(hub *h, hub_report_fn report, void *ctx, err *e);
/* The files of a repo revision as a directory (DATA/snapshots/...), LFS files with their
 * content; made once per commit. type is model/dataset/space; out_dir receives the path. */
int hub_snapshot(hub *h, const char *type, const char *repo_id, const char *revision,
                 buf *out_dir, err *e);
/* Logical bytes, stored bytes and the dedup ratio, overall and (per_repo) for each repo. */
int hub_admin_stats(hub *h, bool per_repo, json_t **result, err *e);

#endif
