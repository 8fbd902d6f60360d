/* auth — who is calling, and what they may do: the one place permissions are decided.
 *
 * A caller's rights on a repo are the meet of two things:
 *   - their role in the repo's namespace: admin of their own user namespace, their membership
 *     role in an organisation (read < contributor < write < admin), nothing elsewhere; site
 *     administrators are admin everywhere;
 *   - what the token they call with allows: "read" tokens read, "write" tokens do anything the
 *     role allows, "fineGrained" tokens only what their scopes name for that repo or namespace.
 * Public repos are readable by anyone, whatever the token. Every handler asks the questions
 * below (auth_can_*); none decides on its own.
 */
#include "auth/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { ROLE_NONE, ROLE_READ, ROLE_CONTRIBUTOR, ROLE_WRITE, ROLE_ADMIN };

static int role_rank(const char *role)
{
    static const char *names[] = {"", "read", "contributor", "write", "admin"};
    for (int i = 1; i < (int)ARRAY_LEN(names); i++)
        if (!strcmp(role, names[i]))
            return i;
    return ROLE_NONE;
}

bool auth_role_is_valid(const char *role) { return role_rank(role) != ROLE_NONE; }

/* ---- scopes of fine-grained tokens ------------------------------------------------------- */

static const char *const scope_perms[] = {AUTH_REPO_READ, AUTH_REPO_WRITE, AUTH_REPO_SETTINGS,
                                          AUTH_DISCUSSION_WRITE, AUTH_INFERENCE};

/* "perm:ns/name", or "perm:ns/" followed by a star for the whole namespace */
static bool parse_scope(const char *word, size_t len, auth_scope *out)
{
    const char *colon = memchr(word, ':', len);
    if (!colon)
        return false;
    size_t plen = (size_t)(colon - word), tlen = len - plen - 1;
    if (plen >= sizeof out->perm || tlen >= sizeof out->target || tlen == 0)
        return false;
    memcpy(out->perm, word, plen);
    out->perm[plen] = '\0';
    memcpy(out->target, colon + 1, tlen);
    out->target[tlen] = '\0';
    bool known = false;
    for (size_t i = 0; i < ARRAY_LEN(scope_perms); i++)
        known |= !strcmp(out->perm, scope_perms[i]);
    const char *slash = strchr(out->target, '/');
    if (!known || !slash || strchr(slash + 1, '/'))
        return false;
    char ns[97];
    size_t nlen = (size_t)(slash - out->target);
    if (nlen >= sizeof ns)
        return false;
    memcpy(ns, out->target, nlen);
    ns[nlen] = '\0';
    return path_is_valid_repo_name(ns) &&
           (!strcmp(slash + 1, "*") || path_is_valid_repo_name(slash + 1));
}

int auth_scopes_parse(const char *text, auth_scope *out, size_t max, size_t *n, err *e)
{
    *n = 0;
    for (const char *p = text; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t len = strcspn(p, " ,");
        if (!len)
            break;
        if (*n == max)
            return err_set(e, 400, "", "a token holds at most %zu scopes", max);
        if (!parse_scope(p, len, &out[*n]))
            return err_set(e, 400, "", "invalid scope '%.*s': use PERMISSION:NAMESPACE/NAME or "
                                       "PERMISSION:NAMESPACE/* with a permission among "
                                       AUTH_REPO_READ ", " AUTH_REPO_WRITE ", " AUTH_REPO_SETTINGS
                                       ", " AUTH_DISCUSSION_WRITE ", " AUTH_INFERENCE,
                           (int)len, p);
        (*n)++;
        p += len;
    }
    return 0;
}

/* Does the token allow perm on ns/name? repo.write implies repo.content.read. */
static bool token_allows(const auth_caller *c, const char *ns, const char *name, const char *perm)
{
    if (!strcmp(c->token.role, "write"))
        return true;
    if (!strcmp(c->token.role, "read"))
        return !strcmp(perm, AUTH_REPO_READ);
    for (size_t i = 0; i < c->nscopes; i++) {
        const auth_scope *s = &c->scopes[i];
        bool perm_ok = !strcmp(s->perm, perm) ||
                       (!strcmp(perm, AUTH_REPO_READ) && !strcmp(s->perm, AUTH_REPO_WRITE));
        if (!perm_ok)
            continue;
        size_t nlen = strlen(ns);
        if (strncmp(s->target, ns, nlen) != 0 || s->target[nlen] != '/')
            continue;
        const char *rest = s->target + nlen + 1;
        if (!strcmp(rest, "*") || (name && !strcmp(rest, name)))
            return true;
    }
    return false;
}

/* ---- tokens ------------------------------------------------------------------------------- */

static int make_token(db *d, const char *user_name, const char *role, const char *scopes,
                      const char *label, char out[40], int64_t *id, err *e)
{
    db_user user;
    int rc = db_user_by_name(d, user_name, &user, e);
    if (rc < 0)
        return -1;
    if (rc > 0 || user.is_org)
        return err_set(e, 404, "", "no user named '%s' (create it with: hearth admin "
                                   "create-user %s)", user_name, user_name);
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint8_t rnd[34];
    hash_random(rnd, sizeof rnd);
    memcpy(out, "hf_", 3);
    /* 62 symbols; the tiny modulo bias does not matter at 200 bits of entropy. */
    for (size_t i = 0; i < sizeof rnd; i++)
        out[3 + i] = alphabet[rnd[i] % 62];
    out[3 + sizeof rnd] = '\0';
    char hash[65];
    hash_sha256_hex(out, strlen(out), hash);
    return db_token_create(d, user.id, label && *label ? label : "token", role, scopes, hash, id,
                           e);
}

int auth_token_create(db *d, const char *user_name, const char *role, const char *label,
                      char out[40], int64_t *id, err *e)
{
    if (strcmp(role, "read") != 0 && strcmp(role, "write") != 0)
        return err_set(e, 400, "", "token role must be read or write, not '%s'", role);
    return make_token(d, user_name, role, "", label, out, id, e);
}

int auth_token_create_scoped(db *d, const char *user_name, const char *scopes,
                             const char *label, char out[40], int64_t *id, err *e)
{
    auth_scope parsed[AUTH_MAX_SCOPES];
    size_t n;
    if (auth_scopes_parse(scopes, parsed, AUTH_MAX_SCOPES, &n, e) != 0)
        return -1;
    if (n == 0)
        return err_set(e, 400, "", "a fine-grained token needs at least one scope");
    /* Stored normalised: one space between scopes. */
    buf text = BUF_INIT;
    for (size_t i = 0; i < n; i++)
        buf_printf(&text, "%s%s:%s", i ? " " : "", parsed[i].perm, parsed[i].target);
    int rc = text.len >= sizeof ((db_token *)0)->scopes
                 ? err_set(e, 400, "", "the scopes are too long")
                 : make_token(d, user_name, "fineGrained", text.data, label, out, id, e);
    buf_free(&text);
    return rc;
}

/* ---- identifying the caller --------------------------------------------------------------- */

/* Decodes the password of an HTTP Basic header into out. */
static int basic_password(const char *b64, char *out, size_t cap)
{
    size_t n = strlen(b64);
    buf decoded = BUF_INIT;
    int rc = n == 0 || n > 4096 || text_base64_decode(b64, n, &decoded) != 0 ? -1 : 0;
    /* A NUL inside would end the password early: "token\0junk" must not pass as "token". */
    const char *colon = rc == 0 ? memchr(decoded.data, ':', decoded.len) : NULL;
    if (!colon || memchr(decoded.data, '\0', decoded.len))
        rc = -1;
    else
        snprintf(out, cap, "%s", colon + 1);
    buf_free(&decoded);
    return rc;
}

#define TOKEN_TOUCH_MS 60000   /* last use is recorded at most once a minute per token */

/* Fills memberships and scopes once the user and token are known. */
static int complete_caller(db *d, auth_caller *out, err *e)
{
    db_member *orgs = NULL;
    size_t n = 0;
    if (db_user_orgs(d, out->user.id, &orgs, &n, e) != 0)
        return -1;
    for (size_t i = 0; i < n && out->norgs < AUTH_MAX_ORGS; i++) {
        snprintf(out->orgs[out->norgs].name, sizeof out->orgs[0].name, "%s", orgs[i].org);
        snprintf(out->orgs[out->norgs].role, sizeof out->orgs[0].role, "%s", orgs[i].role);
        out->norgs++;
    }
    free(orgs);
    if (!strcmp(out->token.role, "fineGrained") &&
        auth_scopes_parse(out->token.scopes, out->scopes, AUTH_MAX_SCOPES, &out->nscopes, e) != 0)
        out->nscopes = 0; /* a stored token always parses; refuse nothing more than it grants */
    out->authenticated = true;
    out->db = d;
    return 0;
}

int auth_identify(db *d, const char *authorization, auth_caller *out, err *e)
{
    memset(out, 0, sizeof *out);
    if (!authorization || !*authorization)
        return 0;
    char secret[256] = "";
    if (!strncasecmp(authorization, "Bearer ", 7)) {
        snprintf(secret, sizeof secret, "%s", authorization + 7);
    } else if (!strncasecmp(authorization, "Basic ", 6)) {
        if (basic_password(authorization + 6, secret, sizeof secret) != 0)
            return err_set(e, 401, "", "Invalid credentials in Authorization header");
    } else {
        return err_set(e, 401, "", "Invalid credentials in Authorization header");
    }
    /* Looked up by its SHA-256: the comparison never runs over the secret's own bytes, so a
     * wrong token takes as long to refuse as a right one to accept. */
    char hash[65];
    hash_sha256_hex(secret, strlen(secret), hash);
    int rc = db_token_by_hash(d, hash, &out->token, e);
    if (rc < 0)
        return -1;
    if (rc > 0 || db_user_by_id(d, out->token.user_id, &out->user, e) != 0) {
        memset(out, 0, sizeof *out);
        return err_set(e, 401, "", "Invalid credentials in Authorization header");
    }
    int64_t now = text_now_ms();
    if (now - out->token.last_used_ms > TOKEN_TOUCH_MS) {
        err ignored = ERR_INIT;
        db_token_touch(d, out->token.id, now, &ignored);
    }
    return complete_caller(d, out, e);
}

int auth_caller_load(db *d, int64_t user_id, int64_t token_id, auth_caller *out, err *e)
{
    memset(out, 0, sizeof *out);
    if (user_id == 0 && token_id == 0)
        return 0;
    int rc = db_token_by_id(d, token_id, &out->token, e);
    if (rc < 0)
        return -1;
    if (rc > 0 || out->token.user_id != user_id ||
        db_user_by_id(d, user_id, &out->user, e) != 0) {
        memset(out, 0, sizeof *out);
        return err_set(e, 401, "", "the access token that obtained this link was revoked; "
                                   "ask again with a valid token");
    }
    return complete_caller(d, out, e);
}

/* ---- permissions ----------------------------------------------------------------------------- */

bool auth_name_is_reserved(const char *name)
{
    static const char *reserved[] = {"api",    "datasets", "spaces",   "models", "cas",
                                     "health", "v1",       "v2",       "xorb",   "admin",
                                     "static", "avatars",  "settings", "login",  "docs",
                                     "join",   "logout",   "organizations", "new", "search"};
    for (size_t i = 0; i < ARRAY_LEN(reserved); i++)
        if (!strcasecmp(name, reserved[i]))
            return true;
    return false;
}

const char *auth_role_in(const auth_caller *c, const char *ns)
{
    if (!c->authenticated)
        return "";
    if (c->user.is_admin || !strcmp(c->user.name, ns))
        return "admin";
    for (size_t i = 0; i < c->norgs; i++)
        if (!strcmp(c->orgs[i].name, ns))
            return c->orgs[i].role;
    return "";
}

static int rank_in(const auth_caller *c, const char *ns) { return role_rank(auth_role_in(c, ns)); }

/* A member (of any rank) reading through a token that allows reading this repo. */
static bool member_reads(const auth_caller *c, const db_repo *r)
{
    return rank_in(c, r->ns) >= ROLE_READ && token_allows(c, r->ns, r->name, AUTH_REPO_READ);
}

bool auth_can_read(const auth_caller *c, const db_repo *r)
{
    return !r->is_private || member_reads(c, r);
}

bool auth_can_read_files(const auth_caller *c, const db_repo *r)
{
    if (!auth_can_read(c, r))
        return false;
    /* Gated: the card and file list are public, the files only for those given access: the
     * namespace's members, and users whose request was accepted (with a token that may read
     * the repo). */
    if (!r->gated[0] || member_reads(c, r))
        return true;
    if (!c->authenticated || !c->db || !token_allows(c, r->ns, r->name, AUTH_REPO_READ))
        return false;
    char status[16];
    err e = ERR_INIT;
    return db_access_status(c->db, r->id, c->user.id, status, &e) == 0 &&
           !strcmp(status, "accepted");
}

bool auth_can_handle_access(const auth_caller *c, const db_repo *r)
{
    return rank_in(c, r->ns) >= ROLE_WRITE &&
           (!strcmp(c->token.role, "write") || token_allows(c, r->ns, r->name, AUTH_REPO_SETTINGS));
}

bool auth_can_write(const auth_caller *c, const db_repo *r)
{
    int rank = rank_in(c, r->ns);
    /* A contributor writes the repos they created; write and admin, all of the namespace's. */
    bool role_ok = rank >= ROLE_WRITE || (rank == ROLE_CONTRIBUTOR && r->owner_id == c->user.id);
    return role_ok && token_allows(c, r->ns, r->name, AUTH_REPO_WRITE);
}

bool auth_can_manage(const auth_caller *c, const db_repo *r)
{
    int rank = rank_in(c, r->ns);
    bool role_ok = rank >= ROLE_ADMIN || (rank >= ROLE_CONTRIBUTOR && r->owner_id == c->user.id);
    return role_ok && (!strcmp(c->token.role, "write") ||
                       token_allows(c, r->ns, r->name, AUTH_REPO_SETTINGS));
}

bool auth_can_write_namespace(const auth_caller *c, const char *ns)
{
    return rank_in(c, ns) >= ROLE_CONTRIBUTOR && token_allows(c, ns, NULL, AUTH_REPO_WRITE);
}

bool auth_can_admin_org(const auth_caller *c, const char *org)
{
    return rank_in(c, org) >= ROLE_ADMIN && !strcmp(c->token.role, "write");
}

bool auth_can_manage_tokens(const auth_caller *c)
{
    /* Tokens are made with a write token (or, later, a web session), never with a narrower
     * one: a fine-grained token cannot mint itself a wider one. */
    return c->authenticated && !strcmp(c->token.role, "write");
}

/* ---- organisations -------------------------------------------------------------------------- */

int auth_org_create(db *d, const auth_caller *who, const char *name, const char *fullname,
                    db_user *out, err *e)
{
    if (!auth_can_manage_tokens(who))
        return err_set(e, who->authenticated ? 403 : 401, "",
                       "Creating an organization needs a write token");
    if (!path_is_valid_repo_name(name) || auth_name_is_reserved(name))
        return err_set(e, 400, "", "Invalid organization name '%s'", name);
    db_user existing;
    int rc = db_user_by_name(d, name, &existing, e);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return err_set(e, 409, "", "The name '%s' is already taken", name);
    db_user org;
    if (db_org_create(d, name, fullname, &org, e) != 0 ||
        db_member_set(d, org.id, who->user.id, "admin", e) != 0)
        return -1;
    if (out)
        *out = org;
    return 0;
}

/* The organisation and the user named, for membership changes. */
static int org_and_user(db *d, const char *org_name, const char *user_name, db_user *org,
                        db_user *user, err *e)
{
    int rc = db_user_by_name(d, org_name, org, e);
    if (rc < 0)
        return -1;
    if (rc > 0 || !org->is_org)
        return err_set(e, 404, "", "no organization named '%s'", org_name);
    rc = db_user_by_name(d, user_name, user, e);
    if (rc < 0)
        return -1;
    if (rc > 0 || user->is_org)
        return err_set(e, 404, "", "no user named '%s'", user_name);
    return 0;
}

int auth_member_set(db *d, const auth_caller *who, const char *org_name, const char *user_name,
                    const char *role, err *e)
{
    if (who && !auth_can_admin_org(who, org_name))
        return err_set(e, 403, "", "Only an admin of %s may change its members", org_name);
    if (!auth_role_is_valid(role))
        return err_set(e, 400, "", "role must be read, contributor, write or admin, not '%s'",
                       role);
    db_user org, user;
    if (org_and_user(d, org_name, user_name, &org, &user, e) != 0)
        return -1;
    return db_member_set(d, org.id, user.id, role, e);
}

int auth_member_remove(db *d, const auth_caller *who, const char *org_name,
                       const char *user_name, err *e)
{
    if (who && !auth_can_admin_org(who, org_name))
        return err_set(e, 403, "", "Only an admin of %s may change its members", org_name);
    db_user org, user;
    if (org_and_user(d, org_name, user_name, &org, &user, e) != 0)
        return -1;
    db_member *members = NULL;
    size_t n = 0, admins = 0;
    bool was_admin = false;
    if (db_org_members(d, org.id, &members, &n, e) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        admins += !strcmp(members[i].role, "admin");
        was_admin |= members[i].user_id == user.id && !strcmp(members[i].role, "admin");
    }
    free(members);
    if (was_admin && admins == 1)
        return err_set(e, 409, "", "%s is the last admin of %s; make someone else admin first",
                       user_name, org_name);
    int rc = db_member_remove(d, org.id, user.id, e);
    if (rc > 0)
        return err_set(e, 404, "", "%s is not a member of %s", user_name, org_name);
    return rc;
}
