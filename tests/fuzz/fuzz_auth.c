/* Fuzz target: what a client controls of authentication — the Authorization header (Bearer,
 * Basic with base64, junk), a fine-grained token's scope text, and base64 itself — against a
 * real metadata database holding one user with one token. Nothing may crash, and nothing but
 * the one real token may authenticate. */
// fuzz-modules: base db auth
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static db *d;
    static char token[40];
    if (!d) {
        char dir[] = "/tmp/hearth-fuzz-auth-XXXXXX";
        if (!mkdtemp(dir))
            abort();
        char path[64];
        snprintf(path, sizeof path, "%s/hearth.db", dir);
        err e = ERR_INIT;
        d = db_open(path, &e);
        if (!d || db_user_create(d, "fuzz", "", "", false, NULL, &e) != 0 ||
            auth_token_create(d, "fuzz", "write", "t", token, NULL, &e) != 0)
            abort();
    }
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    err e = ERR_INIT;
    auth_caller who;
    if (auth_identify(d, text, &who, &e) == 0 && who.authenticated) {
        /* Only the real token, as Bearer or as a Basic password, gets in. */
        if (!strstr(text, token) && strncasecmp(text, "Basic ", 6) != 0)
            abort();
    }
    auth_scope scopes[AUTH_MAX_SCOPES];
    size_t n;
    if (auth_scopes_parse(text, scopes, AUTH_MAX_SCOPES, &n, &e) == 0)
        for (size_t i = 0; i < n; i++)
            if (!strchr(scopes[i].target, '/'))
                abort();
    buf out = BUF_INIT;
    if (text_base64_decode(text, size, &out) == 0 && out.len > size)
        abort();
    buf_free(&out);
    free(text);
    return 0;
}
