/* auth — who is calling, and what they may do.
 *
 * Access tokens are "hf_" + 34 random alphanumerics (the npm client refuses tokens without the
 * hf_ prefix). Only the SHA-256 of a token is stored. A caller is identified from
 * `Authorization: Bearer <token>` (API clients) or HTTP Basic with the token as password (git).
 *
 * Permissions: a caller's role in the repo's namespace (their own, or an organisation's
 * membership role) met with what their token allows (read, write, or fine-grained scopes).
 * auth.c's opening comment states the rules; every route asks the auth_can_* questions.
 */
#ifndef HEARTH_AUTH_H
#define HEARTH_AUTH_H

#include <stdbool.h>

#include "base/base.h"
#include "db/db.h"

/* The permissions a fine-grained token's scopes may name, as on the Hub. */
#define AUTH_REPO_READ "repo.content.read"
#define AUTH_REPO_WRITE "repo.write"            /* implies repo.content.read */
#define AUTH_REPO_SETTINGS "repo.settings"
#define AUTH_DISCUSSION_WRITE "discussion.write"
#define AUTH_INFERENCE "inference.call"

#define AUTH_MAX_SCOPES 32
#define AUTH_MAX_ORGS 64

/* One scope of a fine-grained token: a permission on one repo ("ns/name") or on a whole
 * namespace (target "ns/" and a star). */
typedef struct auth_scope {
    char perm[24];
    char target[200];
} auth_scope;

typedef struct auth_caller {
    bool authenticated;
    db_user user;
    db_token token;
    struct {
        char name[97];
        char role[16];
    } orgs[AUTH_MAX_ORGS];   /* the user's organisations and role in each */
    size_t norgs;
    auth_scope scopes[AUTH_MAX_SCOPES];   /* fine-grained tokens */
    size_t nscopes;
    char address[64];        /* where the request came from (the audit log), "" when none */
    db *db;                  /* for per-repo grants (gated access), set by identify / load */
} auth_caller;

/* Makes a new token for user name with role "read" | "write"; writes it (NUL-terminated) to
 * out[40]; *id (may be NULL) receives its row id. */
int auth_token_create(db *d, const char *user_name, const char *role, const char *label,
                      char out[40], int64_t *id, err *e);
/* A fine-grained token limited to scopes, space- or comma-separated words PERM:TARGET (see
 * auth_scope); 400 for a scope that does not parse. *id receives its row id. */
int auth_token_create_scoped(db *d, const char *user_name, const char *scopes,
                             const char *label, char out[40], int64_t *id, err *e);
/* Parses scope text into out (at most max). 400 on the first that does not parse. */
int auth_scopes_parse(const char *text, auth_scope *out, size_t max, size_t *n, err *e);
/* Identifies the caller from an Authorization header value (NULL = anonymous): the user, the
 * token, its scopes and the user's organisations. A present but unknown token is 401
 * "Invalid credentials in Authorization header". Records the token's last use. */
int auth_identify(db *d, const char *authorization, auth_caller *out, err *e);
/* Rebuilds the caller that obtained a signed URL or a Xet token (user_id 0 = anonymous), so
 * that permissions are checked again when it is used. 401 when that token no longer exists. */
int auth_caller_load(db *d, int64_t user_id, int64_t token_id, auth_caller *out, err *e);

/* The caller's role in namespace ns: "admin" for their own and for site admins, their
 * membership role in an organisation, "" otherwise. */
const char *auth_role_in(const auth_caller *c, const char *ns);
bool auth_role_is_valid(const char *role);   /* read | contributor | write | admin */
/* May the caller see the repo at all (info, tree, listings)? */
bool auth_can_read(const auth_caller *c, const db_repo *r);
/* May the caller read the repo's files (downloads, clones, Xet reads)? Gated repos show their
 * metadata to every reader of the repo but their files only to their namespace's members and
 * to users whose access request was accepted (or who were granted access). */
bool auth_can_read_files(const auth_caller *c, const db_repo *r);
/* Handling access requests to a gated repo (list, accept, reject, grant). */
bool auth_can_handle_access(const auth_caller *c, const db_repo *r);
/* Content: commits, uploads, pushes, branches and tags. */
bool auth_can_write(const auth_caller *c, const db_repo *r);
/* Settings, visibility, rename and delete. */
bool auth_can_manage(const auth_caller *c, const db_repo *r);
/* May the caller create or own repos in namespace ns? */
bool auth_can_write_namespace(const auth_caller *c, const char *ns);
/* Members and settings of an organisation. */
bool auth_can_admin_org(const auth_caller *c, const char *org);
/* Creating, listing and revoking one's own tokens. */
bool auth_can_manage_tokens(const auth_caller *c);
/* Names that cannot be users (or namespaces), because URLs use them: api, datasets, spaces,
 * cas, ... */
bool auth_name_is_reserved(const char *name);

/* ---- organisations (who = the caller, or NULL for `hearth admin`) -------------------------- */

/* Creates an organisation with who as its admin. 400 invalid / reserved name, 409 taken. */
int auth_org_create(db *d, const auth_caller *who, const char *name, const char *fullname,
                    db_user *out, err *e);
int auth_member_set(db *d, const auth_caller *who, const char *org, const char *user,
                    const char *role, err *e);
/* Refuses to remove an organisation's last admin (409). */
int auth_member_remove(db *d, const auth_caller *who, const char *org, const char *user,
                       err *e);

#endif
