/* Internal to the hub module: the shared state, the parsed route of a request, and the
 * helpers every handler uses. Not included from outside src/hub/. */
#ifndef HEARTH_HUB_INTERNAL_H
#define HEARTH_HUB_INTERNAL_H

#include <jansson.h>

#include "auth/auth.h"
#include "db/db.h"
#include "hub/hub.h"
#include "repo/repo.h"
#include "store/store.h"

typedef struct hub_multipart hub_multipart;

struct hub {
    char *data_dir;
    db *db;
    store *store;
    uint8_t secret[32];
    int64_t lfs_threshold;
    int64_t multipart_threshold;
    int64_t multipart_part_size;
    hub_multipart *multipart;  /* multipart LFS uploads in flight (lfs.c) */
    int64_t git_fetch_max;
    int64_t git_push_max;
};

/* Multipart LFS uploads in flight, in memory (lfs.c). With `recover` (the server at start)
 * the spooled parts of uploads a restart ended are removed. */
hub_multipart *hub_multipart_open(hub *h, bool recover);
void hub_multipart_close(hub *h);

/* What the router understood of a request. Strings are decoded and owned by the call. */
typedef struct hub_call hub_call;
typedef void (*hub_route_fn)(http_request *req, hub_call *call);

struct hub_call {
    hub *hub;
    hub_route_fn route;
    http_handler handler;
    auth_caller caller;
    char type[8];          /* model | dataset | space */
    char ns[97];
    char name[97];
    char *rev;             /* decoded revision, NULL when the route has none */
    char *path;            /* decoded path inside the repo ("" = root), NULL when none */
    char *extra;           /* route-specific (e.g. an LFS oid, a part number) */
    size_t id_start, id_end;   /* where "ns/name" sits in the raw request path (redirects) */
    db_repo repo;
    bool have_repo;
    bool signed_url;       /* authorised by a signature in the URL, not by a token */
    void *state;           /* handler-owned; freed by the handler's cleanup */
    void (*free_state)(void *);
};

/* ---- helpers (hub/common.c) -------------------------------------------------------------- */

/* Looks up call->type/ns/name, follows moves (replies 307), checks visibility (404 for the
 * invisible) and, when want_write, write permission (401 anonymous, 403 otherwise). Returns 0
 * with call->repo filled, or -1 after replying. */
int hub_load_repo(http_request *req, hub_call *call, bool want_write);
/* The same for settings, visibility, rename and delete (auth_can_manage). */
int hub_load_repo_manage(http_request *req, hub_call *call);
/* The repo's git repository (call->repo must be loaded), from this thread's cache; replies
 * 500 and returns NULL on failure. Give it back with hub_close_git, never repo_close. */
repo *hub_open_git(http_request *req, hub_call *call);
void hub_close_git(repo *r);
void hub_git_dir(const hub *h, const char *uid, buf *out);
/* hub_load_repo + hub_open_git + hub_resolve_rev: the git handle with call->rev resolved into
 * sha, or NULL after replying. */
repo *hub_open_at_rev(http_request *req, hub_call *call, bool want_write, char sha[41]);
/* Resolves call->rev (default "main"); replies 404 RevisionNotFound on failure. */
int hub_resolve_rev(http_request *req, hub_call *call, repo *r, char sha[41]);
/* "<base>/<prefix>ns/name", with prefix "datasets/" / "spaces/" / "" for models. */
void hub_repo_url(http_request *req, const char *type, const char *ns, const char *name, buf *out);
const char *hub_type_prefix(const char *type);
/* Parses a JSON request body; replies 400 and returns NULL when it is not a JSON object. */
json_t *hub_json_body(http_request *req);
/* Signs and checks upload/download URLs: mac over purpose, repo uid, oid, size, expiry. */
void hub_sign(const hub *h, const char *purpose, const char *uid, const char *oid, int64_t size,
              int64_t exp, char out[65]);
bool hub_check_signature(const hub *h, http_request *req, const char *purpose, const char *uid,
                         const char *oid, int64_t size);
/* Appends "?size=..&exp=..&sig=.." for a signed URL valid for ttl seconds. */
void hub_signed_query(const hub *h, const char *purpose, const char *uid, const char *oid,
                      int64_t size, int64_t ttl, buf *out);
/* hub_load_repo for reading files (resolve, raw, LFS and Xet downloads, clones): a gated
 * repo's files answer 401 / 403 GatedRepo to those without access. */
int hub_load_repo_files(http_request *req, hub_call *call);

/* What a signed URL or a Xet token was issued for: one repo (row id and immutable uid) and the
 * caller that obtained it (0 / 0 = anonymous). Permissions are checked again whenever it is
 * used, so deleting the repo, making it private or revoking the token revokes it too. */
typedef struct hub_grant {
    int64_t repo_id;
    char uid[25];
    int64_t user_id;
    int64_t token_id;
} hub_grant;

void hub_grant_of(const hub_call *call, hub_grant *out);
/* The repo still exists with that uid and the caller may still read its files (or write).
 * Fills repo_out / caller_out (either may be NULL). 0, or -1 + e: 404 RepoNotFound, 401 for
 * a revoked token, 403 (GatedRepo for reads). */
int hub_grant_recheck(hub *h, const hub_grant *g, bool want_write, db_repo *repo_out,
                      auth_caller *caller_out, err *e);
/* A signed query string ("?size=..&exp=..&u=..&t=..&sig=..") bound to the grant. */
void hub_grant_query(const hub *h, const char *purpose, const hub_grant *g, const char *oid,
                     int64_t size, int64_t ttl, buf *out);
/* Checks such a URL for call->repo (already looked up by name), then hub_grant_recheck; sets
 * call->repo / call->caller from it. 0, or -1 after replying. */
int hub_grant_check_url(http_request *req, hub_call *call, const char *purpose, const char *oid,
                        int64_t size, bool want_write);
/* Appends to the audit log: who (NULL = `hearth admin`), from where, what, on what. Never
 * fails the caller's request (a failure to record is logged). */
void hub_audit(hub *h, const auth_caller *who, const char *action, const char *target,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The same with target "type:ns/name" (and "@rev" when rev is given). */
void hub_audit_repo(hub *h, const auth_caller *who, const char *action, const db_repo *row,
                    const char *rev, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Git author name for commits made by the caller. */
const char *hub_author(const hub_call *call);
/* Recomputes the metadata of main after a change and stores it (best effort: logs failures). */
void hub_refresh_meta(hub *h, const db_repo *repo_row, repo *r);
/* Adds the Link: <...>; rel="next" header for paginated listings. */
void hub_link_next(http_request *req, const char *cursor);

/* ---- the object-link rule (hub/objects.c) -------------------------------------------------
 * A repo serves a stored object only if the object is linked to it. Every reader lists, stats
 * and opens through these, never through repo_list / repo_stat / store_reader_open. */

/* Is oid linked to the repo (uploaded or pushed to it with its bytes)? */
bool hub_object_linked(hub *h, const db_repo *row, const char *oid);
/* repo_list / repo_stat, with pointers to objects the repo does not hold shown as the plain
 * small files they are (is_lfs false, size of the pointer text). */
int hub_entries_list(hub *h, const db_repo *row, repo *r, const char *commit, const char *dir,
                     bool recursive, repo_entries *out, err *e);
int hub_entry_stat(hub *h, const db_repo *row, repo *r, const char *commit, const char *path,
                   repo_entry *out, err *e);
/* May a commit to repo_id name oid (an lfsFile line, or pointer text in a file line)? Only when
 * it is linked to the repo and stored; *size is its size. 422 otherwise, naming only oid. */
int hub_object_claim(hub *h, int64_t repo_id, const char *oid, const char *path, int64_t *size,
                     err *e);
/* A reader of a linked object; 404 EntryNotFound when it is not linked to the repo. */
store_reader *hub_object_open(hub *h, const db_repo *row, const char *oid, err *e);

/* ---- metadata derived from a tree (hub/card.c) ------------------------------------------- */

/* Builds {cardData, tags, pipeline_tag, library_name, config, ...} from the files at commit. */
json_t *hub_card_meta(hub *h, repo *r, const char *commit, const char *type);
/* Parses a README's YAML front matter into a JSON object (an empty object when there is none).
 * Returns NULL and fills e when the front matter is not valid YAML. */
json_t *hub_card_parse(const char *readme, size_t len, err *e);
/* Does path match a `filter=lfs` pattern of this .gitattributes text? */
bool hub_gitattributes_lfs(const char *attributes, const char *path);
/* Does path match a pattern of this .gitignore text? */
bool hub_gitignore_match(const char *ignore, const char *path);
extern const char hub_default_gitattributes[];

/* ---- commits (hub/upload.c) ------------------------------------------------------------- */

/* A parsed NDJSON commit body: the operations, their decoded contents and the header. */
typedef struct hub_commit_plan {
    repo_op *ops;
    size_t nops, cap;
    buf *blobs;            /* decoded contents, one per op */
    char *summary;
    char *description;
    char *parent;
} hub_commit_plan;

/* Parses an NDJSON commit body (lfsFile lines must name objects repo_id holds). 400 / 422 on
 * bad input, with the line number. The plan is filled even on failure: free it either way. */
int hub_commit_parse(hub *h, int64_t repo_id, const char *body, size_t len,
                     hub_commit_plan *plan, err *e);
void hub_commit_plan_free(hub_commit_plan *plan);

/* ---- route handlers ---------------------------------------------------------------------- */

void hub_whoami(http_request *req, hub_call *call);
void hub_user_overview(http_request *req, hub_call *call);
void hub_org_overview(http_request *req, hub_call *call);
void hub_org_members(http_request *req, hub_call *call);
void hub_org_create(http_request *req, hub_call *call);
void hub_org_member(http_request *req, hub_call *call);
void hub_tokens(http_request *req, hub_call *call);
void hub_auth_check(http_request *req, hub_call *call);
void hub_access_list(http_request *req, hub_call *call);
void hub_access_handle(http_request *req, hub_call *call);
void hub_access_grant(http_request *req, hub_call *call);
void hub_access_ask(http_request *req, hub_call *call);
void hub_admin_stats_route(http_request *req, hub_call *call);
void hub_admin_audit_route(http_request *req, hub_call *call);
void hub_validate_yaml(http_request *req, hub_call *call);
void hub_repo_create(http_request *req, hub_call *call);
void hub_repo_delete(http_request *req, hub_call *call);
void hub_repo_move(http_request *req, hub_call *call);
void hub_repo_settings(http_request *req, hub_call *call);
void hub_repo_info(http_request *req, hub_call *call);
void hub_repo_list(http_request *req, hub_call *call);
void hub_tree(http_request *req, hub_call *call);
void hub_paths_info(http_request *req, hub_call *call);
void hub_resolve(http_request *req, hub_call *call);
void hub_raw(http_request *req, hub_call *call);
void hub_refs(http_request *req, hub_call *call);
void hub_commits(http_request *req, hub_call *call);
void hub_branch_create(http_request *req, hub_call *call);
void hub_branch_delete(http_request *req, hub_call *call);
void hub_tag_create(http_request *req, hub_call *call);
void hub_tag_delete(http_request *req, hub_call *call);
void hub_super_squash(http_request *req, hub_call *call);
void hub_preupload(http_request *req, hub_call *call);
void hub_commit(http_request *req, hub_call *call);
void hub_lfs_batch(http_request *req, hub_call *call);
void hub_lfs_verify(http_request *req, hub_call *call);
void hub_lfs_download(http_request *req, hub_call *call);
void hub_lfs_multipart_complete(http_request *req, hub_call *call);
void hub_lfs_locks(http_request *req, hub_call *call);
void hub_git_info_refs(http_request *req, hub_call *call);
/* git-upload-pack / git-receive-pack: authenticates and sets up the streamed request body. */
int hub_git_rpc_begin(http_request *req, hub_call *call, const char *service_name);
/* Streaming uploads: set call->handler up for a PUT of an LFS object or of a multipart part. */
int hub_lfs_upload_begin(http_request *req, hub_call *call, bool part);

/* ---- Xet (hub/xet.c) ------------------------------------------------------------------------ */

/* What a CAS access token grants: one repo and the caller that asked for it (a hub_grant,
 * checked again at every CAS call), a scope, until exp (unix seconds). */
enum {
    HUB_XET_READ = 'r',  /* reads */
    HUB_XET_WRITE = 'w', /* reads and writes; the caller may write the repo */
    HUB_XET_PR = 'p',    /* reads and writes for a pull request; the caller may read the repo */
};

typedef struct hub_xet_grant {
    char scope; /* HUB_XET_* */
    hub_grant grant;
    int64_t exp;
} hub_xet_grant;

/* Whether the store serves Xet (probed once per store; HEARTH_DISABLE_XET=1 turns it off).
 * Nothing advertises Xet otherwise. */
bool hub_xet_enabled(hub *h);
/* "xet2_<scope>_<repo id>_<uid>_<user id>_<token id>_<exp>_<hmac>", appended to out. */
void hub_xet_token_make(const hub *h, char scope, const hub_grant *g, int64_t exp, buf *out);
/* 0 with *out filled, or -1 when the token is malformed, forged or expired at `now`. */
int hub_xet_token_check(const hub *h, const char *token, int64_t now, hub_xet_grant *out);
/* Checks an upload shard (xorbs uploaded, verification entries, SHA-256, every file hash) and
 * registers its files in the store, linked to the grant's repo; nothing is registered unless
 * every file checks out. 0 or -1 + e (400 BadShard for bad input). */
int hub_xet_shard_apply(hub *h, const hub_xet_grant *grant, const uint8_t *data, size_t len,
                        size_t *registered, size_t *n_files, err *e);
/* resolve: X-Xet-Hash and Link rel="xet-auth" / "xet-reconstruction-info" for a Xet-backed
 * LFS object (nothing otherwise). */
void hub_xet_resolve_headers(http_request *req, hub_call *call, const char *oid,
                             const char *commit);
/* tree / paths-info: adds "xetHash" to an LFS entry whose object is Xet-backed. */
void hub_xet_annotate_entry(hub *h, json_t *entry, const repo_entry *ent);
/* LFS batch with transfer "xet": the upload action (write-token URL + X-Xet-* headers). */
json_t *hub_xet_upload_actions(http_request *req, hub_call *call);
void hub_xet_token(http_request *req, hub_call *call);
void hub_cas_reconstruction(http_request *req, hub_call *call);
void hub_cas_batch_reconstruction(http_request *req, hub_call *call);
void hub_cas_file_head(http_request *req, hub_call *call);
void hub_cas_xorb_upload(http_request *req, hub_call *call);
void hub_cas_xorb_head(http_request *req, hub_call *call);
void hub_cas_xorb_get(http_request *req, hub_call *call);
void hub_cas_chunk(http_request *req, hub_call *call);
void hub_cas_shard_upload(http_request *req, hub_call *call);
void hub_cas_telemetry(http_request *req, hub_call *call);

#endif
