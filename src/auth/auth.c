/* auth — tokens and permissions. */
#include "auth/auth.h"

#include <stdio.h>
#include <string.h>

int auth_token_create(db *d, const char *user_name, const char *role, const char *label,
                      char out[40], err *e)
{
    if (strcmp(role, "read") != 0 && strcmp(role, "write") != 0)
        return err_set(e, 400, "", "token role must be read or write, not '%s'", role);
    db_user user;
    int rc = db_user_by_name(d, user_name, &user, e);
    if (rc < 0)
        return -1;
    if (rc > 0)
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
    return db_token_create(d, user.id, label && *label ? label : "token", role, hash, e);
}

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
    char hash[65];
    hash_sha256_hex(secret, strlen(secret), hash);
    int rc = db_token_by_hash(d, hash, &out->token, e);
    if (rc < 0)
        return -1;
    if (rc > 0 || db_user_by_id(d, out->token.user_id, &out->user, e) != 0)
        return err_set(e, 401, "", "Invalid credentials in Authorization header");
    out->authenticated = true;
    return 0;
}

bool auth_name_is_reserved(const char *name)
{
    static const char *reserved[] = {"api",    "datasets", "spaces", "models", "cas",
                                     "health", "v1",       "v2",     "xorb",   "admin",
                                     "static", "avatars",  "settings", "login", "docs"};
    for (size_t i = 0; i < ARRAY_LEN(reserved); i++)
        if (!strcasecmp(name, reserved[i]))
            return true;
    return false;
}

bool auth_can_read(const auth_caller *c, const db_repo *r)
{
    if (!r->is_private)
        return true;
    return c->authenticated && c->user.id == r->owner_id;
}

bool auth_can_read_files(const auth_caller *c, const db_repo *r)
{
    if (!auth_can_read(c, r))
        return false;
    /* Gated: the card and file list are public, the files only for those given access.
     * Access requests come with organisations; today that is the owner alone. */
    if (r->gated[0])
        return c->authenticated && c->user.id == r->owner_id;
    return true;
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
    out->authenticated = true;
    return 0;
}

bool auth_can_write_namespace(const auth_caller *c, const char *ns)
{
    return c->authenticated && !strcmp(c->token.role, "write") && !strcmp(c->user.name, ns);
}

bool auth_can_write(const auth_caller *c, const db_repo *r)
{
    return auth_can_write_namespace(c, r->ns);
}
