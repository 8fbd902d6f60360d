/* Unit tests for src/db and src/auth: users, tokens by hash and by id, repos by name and by id,
 * object links scoped to their repo (and gone with it), and the permission rules: private,
 * gated, write tokens, callers rebuilt for signed URLs, Basic credentials. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/auth.h"
#include "db/db.h"

static char dir[64];
static db *d;

static int setup(void **state)
{
    strcpy(dir, "/tmp/hearth-db-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/hearth.db", dir);
    err e = ERR_INIT;
    d = db_open(path, &e);
    assert_non_null(d);
    return 0;
}

static int teardown(void **state)
{
    db_close(d);
    path_remove_tree(dir);
    return 0;
}

static db_repo make_repo(const char *ns, const char *name, int64_t owner, bool is_private,
                         const char *gated)
{
    db_repo r = {0};
    static int n;
    snprintf(r.uid, sizeof r.uid, "%024d", ++n);
    strcpy(r.type, "model");
    snprintf(r.ns, sizeof r.ns, "%s", ns);
    snprintf(r.name, sizeof r.name, "%s", name);
    r.owner_id = owner;
    r.is_private = is_private;
    snprintf(r.gated, sizeof r.gated, "%s", gated);
    err e = ERR_INIT;
    assert_int_equal(db_repo_create(d, &r, &e), 0);
    return r;
}

static void identify(const char *token, auth_caller *who)
{
    char header[128];
    snprintf(header, sizeof header, "Bearer %s", token);
    err e = ERR_INIT;
    assert_int_equal(auth_identify(d, header, who, &e), 0);
    assert_true(who->authenticated);
}

static void test_users_tokens_and_lookups(void **state)
{
    err e = ERR_INIT;
    db_user u;
    assert_int_equal(db_user_create(d, "ann", "Ann", "", false, &u, &e), 0);
    assert_int_equal(db_user_create(d, "ann", "", "", false, &u, &e), -1);
    assert_int_equal(e.status, 409);
    char token[40];
    assert_int_equal(auth_token_create(d, "ann", "write", "t", token, NULL, &e), 0);
    assert_true(!strncmp(token, "hf_", 3) && strlen(token) == 37);
    auth_caller who;
    identify(token, &who);
    assert_string_equal(who.user.name, "ann");
    db_token t;
    assert_int_equal(db_token_by_id(d, who.token.id, &t, &e), 0);
    assert_string_equal(t.role, "write");
    assert_int_equal(db_token_by_id(d, who.token.id + 1000, &t, &e), 1);
    assert_int_equal(auth_token_create(d, "nobody", "write", "t", token, NULL, &e), -1);
    assert_int_equal(e.status, 404);
    /* An unknown token is 401, never anonymous. */
    assert_int_equal(auth_identify(d, "Bearer hf_nope", &who, &e), -1);
    assert_int_equal(e.status, 401);
}

static void test_repo_by_id_and_object_links(void **state)
{
    err e = ERR_INIT;
    db_repo a = make_repo("ann", "one", 1, true, ""), b = make_repo("ann", "two", 1, false, "");
    db_repo got;
    assert_int_equal(db_repo_by_id(d, a.id, &got, &e), 0);
    assert_string_equal(got.uid, a.uid);
    assert_true(got.is_private);
    const char *oid = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_int_equal(db_repo_object_add(d, a.id, oid, 5, &e), 0);
    assert_int_equal(db_repo_object_add(d, a.id, oid, 5, &e), 0); /* idempotent */
    assert_int_equal(db_repo_object_has(d, a.id, oid, &e), 0);
    assert_int_equal(db_repo_object_has(d, b.id, oid, &e), 1);   /* scoped to its repo */
    assert_int_equal(db_repo_delete(d, a.id, &e), 0);
    assert_int_equal(db_repo_by_id(d, a.id, &got, &e), 1);
    /* A repo created afterwards may get the freed row id: it must not inherit the links. */
    db_repo c = make_repo("ann", "three", 1, false, "");
    assert_int_equal(db_repo_object_has(d, c.id, oid, &e), 1);
}

static void test_permissions(void **state)
{
    err e = ERR_INIT;
    db_user owner, other;
    assert_int_equal(db_user_create(d, "olga", "", "", false, &owner, &e), 0);
    assert_int_equal(db_user_create(d, "otto", "", "", false, &other, &e), 0);
    char wt[40], rt[40], ot[40];
    assert_int_equal(auth_token_create(d, "olga", "write", "w", wt, NULL, &e), 0);
    assert_int_equal(auth_token_create(d, "olga", "read", "r", rt, NULL, &e), 0);
    assert_int_equal(auth_token_create(d, "otto", "write", "w", ot, NULL, &e), 0);
    auth_caller w, r, o, anon = {0};
    identify(wt, &w);
    identify(rt, &r);
    identify(ot, &o);
    db_repo pub = make_repo("olga", "pub", owner.id, false, "");
    db_repo priv = make_repo("olga", "priv", owner.id, true, "");
    db_repo gated = make_repo("olga", "gated", owner.id, false, "auto");

    assert_true(auth_can_read(&anon, &pub) && auth_can_read_files(&anon, &pub));
    assert_false(auth_can_read(&anon, &priv) || auth_can_read(&o, &priv));
    assert_true(auth_can_read(&r, &priv) && auth_can_read_files(&r, &priv));
    /* gated: the repo is visible to all, its files only to those with access */
    assert_true(auth_can_read(&anon, &gated) && auth_can_read(&o, &gated));
    assert_false(auth_can_read_files(&anon, &gated) || auth_can_read_files(&o, &gated));
    assert_true(auth_can_read_files(&w, &gated));
    /* writes need a write token of the namespace */
    assert_true(auth_can_write(&w, &pub));
    assert_false(auth_can_write(&r, &pub) || auth_can_write(&o, &pub) || auth_can_write(&anon, &pub));

    /* A caller rebuilt from ids is the same caller while the token exists; 401 once it is gone
     * or belongs to someone else. */
    auth_caller again;
    assert_int_equal(auth_caller_load(d, owner.id, w.token.id, &again, &e), 0);
    assert_true(again.authenticated && auth_can_write(&again, &pub));
    assert_int_equal(auth_caller_load(d, other.id, w.token.id, &again, &e), -1);
    assert_int_equal(e.status, 401);
    assert_false(again.authenticated);
    assert_int_equal(auth_caller_load(d, owner.id, w.token.id + 999, &again, &e), -1);
    assert_int_equal(auth_caller_load(d, 0, 0, &again, &e), 0);
    assert_false(again.authenticated);
}

static void test_basic_credentials(void **state)
{
    err e = ERR_INIT;
    char token[40];
    assert_int_equal(auth_token_create(d, "ann", "read", "b", token, NULL, &e), 0);
    auth_caller who;
    /* "ann:<token>" and "ann:<token>\0junk", base64 */
    char plain[96], header[256];
    int n = snprintf(plain, sizeof plain, "ann:%s", token);
    buf b64 = BUF_INIT;
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int with_junk = 0; with_junk < 2; with_junk++) {
        size_t len = (size_t)n;
        if (with_junk) {
            memcpy(plain + n, "\0junk", 5);
            len += 5;
        }
        buf_reset(&b64);
        for (size_t i = 0; i < len; i += 3) {
            uint32_t v = (uint32_t)(unsigned char)plain[i] << 16;
            if (i + 1 < len)
                v |= (uint32_t)(unsigned char)plain[i + 1] << 8;
            if (i + 2 < len)
                v |= (unsigned char)plain[i + 2];
            buf_putc(&b64, alphabet[v >> 18 & 63]);
            buf_putc(&b64, alphabet[v >> 12 & 63]);
            buf_putc(&b64, i + 1 < len ? alphabet[v >> 6 & 63] : '=');
            buf_putc(&b64, i + 2 < len ? alphabet[v & 63] : '=');
        }
        snprintf(header, sizeof header, "Basic %s", b64.data);
        int rc = auth_identify(d, header, &who, &e);
        assert_int_equal(rc, with_junk ? -1 : 0);
    }
    buf_free(&b64);
    assert_int_equal(auth_identify(d, "Basic ====", &who, &e), -1);
    assert_int_equal(auth_identify(d, "Digest x", &who, &e), -1);
}

static void test_base64(void **state)
{
    const char *good[][2] = {{"", ""}, {"YQ==", "a"}, {"YWI=", "ab"}, {"YWJj", "abc"},
                             {"aGVsbG8gd29ybGQ=", "hello world"}};
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        buf out = BUF_INIT;
        assert_int_equal(text_base64_decode(good[i][0], strlen(good[i][0]), &out), 0);
        assert_int_equal(out.len, strlen(good[i][1]));
        assert_memory_equal(buf_str(&out), good[i][1], out.len);
        buf_free(&out);
    }
    const char *bad[] = {"====", "a===", "ab=c", "YQ==YQ==", "Y Q=", "YQ=\n", "YQ", "Y!==", "=YQ="};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        buf out = BUF_INIT;
        assert_int_equal(text_base64_decode(bad[i], strlen(bad[i]), &out), -1);
        assert_int_equal(out.len, 0);
        buf_free(&out);
    }
}

static double identify_ns(const char *header, int rounds)
{
    struct timespec a, b;
    auth_caller who;
    err e = ERR_INIT;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < rounds; i++)
        auth_identify(d, header, &who, &e);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / rounds;
}

/* A wrong token that shares all but its last character with a right one is refused in the same
 * time as one that shares nothing: tokens are looked up by their SHA-256, so no comparison ever
 * runs over the secret's own bytes. (A loose bound: this guards the design, it measures no
 * speed.) */
static void test_wrong_token_costs_as_much_as_any(void **state)
{
    err e = ERR_INIT;
    char token[40];
    assert_int_equal(auth_token_create(d, "ann", "read", "timing", token, NULL, &e), 0);
    char near[64], far[64];
    snprintf(near, sizeof near, "Bearer %s", token);
    near[strlen(near) - 1] = near[strlen(near) - 1] == 'A' ? 'B' : 'A';
    snprintf(far, sizeof far, "Bearer hf_%034d", 0);
    double t_near = 0, t_far = 0;
    for (int round = 0; round < 3; round++) { /* interleaved, best of three */
        double n = identify_ns(near, 2000), f = identify_ns(far, 2000);
        t_near = round ? (n < t_near ? n : t_near) : n;
        t_far = round ? (f < t_far ? f : t_far) : f;
    }
    assert_true(t_near < 3 * t_far && t_far < 3 * t_near);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_users_tokens_and_lookups),
        cmocka_unit_test(test_repo_by_id_and_object_links),
        cmocka_unit_test(test_permissions),
        cmocka_unit_test(test_basic_credentials),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_wrong_token_costs_as_much_as_any),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
