/* hub — the Hugging Face Hub API: the routes that huggingface_hub, @huggingface/hub and
 * git-lfs call, on top of the db (metadata), repo (git) and store (LFS bytes) modules.
 *
 * A hub owns its data directory layout:
 *   DIR/hearth.db         metadata (SQLite)
 *   DIR/repos/<uid>.git   one bare git repository per Hub repo, named by its opaque id so that
 *                         renames never touch the filesystem
 *   DIR/lfs/              the content store for LFS objects
 *   DIR/uploads/          multipart upload parts in flight
 *   DIR/secret            the HMAC key that signs upload URLs (created on first start, 0600)
 *
 * The HTTP layer calls hub_dispatch for every request; see spec/hub-api.md for the routes.
 */
#ifndef HEARTH_HUB_H
#define HEARTH_HUB_H

#include "base/base.h"
#include "http/http.h"

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
