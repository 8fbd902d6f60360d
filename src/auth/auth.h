/* auth — who is calling, and what they may do.
 *
 * Access tokens are "hf_" + 34 random alphanumerics (the npm client refuses tokens without the
 * hf_ prefix). Only the SHA-256 of a token is stored. A caller is identified from
 * `Authorization: Bearer <token>` (API clients) or HTTP Basic with the token as password (git).
 *
 * Permissions today: a repo in namespace N is writable by N's write tokens; a private repo is
 * readable only by its owner. Organisations and per-repo tokens extend auth_can_* later.
 */
#ifndef HEARTH_AUTH_H
#define HEARTH_AUTH_H

#include <stdbool.h>

#include "base/base.h"
#include "db/db.h"

typedef struct auth_caller {
    bool authenticated;
    db_user user;
    db_token token;
} auth_caller;

/* Makes a new token for user name with role "read" | "write"; writes it (NUL-terminated) to
 * out[40]. */
int auth_token_create(db *d, const char *user_name, const char *role, const char *label,
                      char out[40], err *e);
/* Identifies the caller from an Authorization header value (NULL = anonymous).
 * A present but unknown token is 401 "Invalid credentials in Authorization header". */
int auth_identify(db *d, const char *authorization, auth_caller *out, err *e);
bool auth_can_read(const auth_caller *c, const db_repo *r);
bool auth_can_write(const auth_caller *c, const db_repo *r);
/* May the caller read the repo's files (downloads, clones, Xet reads)? Gated repos show their
 * metadata to every reader of the repo but their files only to those given access. */
bool auth_can_read_files(const auth_caller *c, const db_repo *r);
/* Rebuilds the caller that obtained a signed URL or a Xet token (user_id 0 = anonymous), so
 * that permissions are checked again when it is used. 401 when that token no longer exists. */
int auth_caller_load(db *d, int64_t user_id, int64_t token_id, auth_caller *out, err *e);
/* Names that cannot be users (or namespaces), because URLs use them: api, datasets, spaces,
 * cas, ... */
bool auth_name_is_reserved(const char *name);
/* May the caller create or own repos in namespace ns? */
bool auth_can_write_namespace(const auth_caller *c, const char *ns);

#endif
