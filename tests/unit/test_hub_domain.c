/* Unit tests for the hub's domain layer (src/hub/domain_*.c, objects.c, common.c grants): what
 * every front end relies on whichever way a change comes in — repo names and permissions on
 * create, all-or-nothing commits, pull requests for readers, the object-link rule on the write
 * and the read side, and grants that are checked again at use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/internal.h"

static char dir[64];
static hub *h;
static auth_caller alice, bob, anon;

static void caller(const char *name, auth_caller *out)
{
    err e = ERR_INIT;
    db_user u;
    assert_int_equal(db_user_create(h->db, name, "", "", false, &u, &e), 0);
    char token[40], header[64];
    assert_int_equal(auth_token_create(h->db, name, "write", "t", token, NULL, &e), 0);
    snprintf(header, sizeof header, "Bearer %s", token);
    assert_int_equal(auth_identify(h->db, header, out, &e), 0);
}

static int setup(void **state)
{
    strcpy(dir, "/tmp/hearth-domain-XXXXXX");
    assert_non_null(mkdtemp(dir));
    err e = ERR_INIT;
    hub_config config = {.data_dir = dir, .maintenance = true};
    h = hub_open(&config, &e);
    assert_non_null(h);
    caller("alice", &alice);
    caller("bob", &bob);
    memset(&anon, 0, sizeof anon);
    return 0;
}

static int teardown(void **state)
{
    hub_close(h);
    path_remove_tree(dir);
    return 0;
}

static db_repo new_repo(const auth_caller *who, const char *name, bool is_private)
{
    hub_repo_spec spec = {.type = "model", .ns = who->user.name, .name = name,
                          .is_private = is_private};
    db_repo row;
    err e = ERR_INIT;
    assert_int_equal(hub_repo_new(h, who, &spec, &row, &e), 0);
    return row;
}

/* Stores bytes in the content store and returns their oid (not linked to any repo). */
static void store_bytes(const char *data, char oid[65])
{
    err e = ERR_INIT;
    store_writer *w = store_writer_new(h->store, &e);
    assert_non_null(w);
    assert_int_equal(store_writer_write(w, data, strlen(data), &e), 0);
    assert_int_equal(store_writer_finish(w, NULL, -1, oid, &e), 0);
}

static int put(const db_repo *row, const auth_caller *who, const char *path, const char *data,
               bool create_pr, hub_change_result *out, err *e)
{
    repo_op op = {.kind = REPO_OP_PUT, .path = path, .data = data, .len = strlen(data)};
    hub_change c = {.repo = row, .who = who, .branch = "main", .create_pr = create_pr,
                    .ops = &op, .nops = 1, .summary = "put"};
    return hub_commit_apply(h, &c, out, e);
}

static void test_repo_new_checks_names_and_rights(void **state)
{
    err e = ERR_INIT;
    db_repo row = new_repo(&alice, "first", false);
    assert_int_equal(strlen(row.uid), 24);
    hub_repo_spec spec = {.type = "model", .ns = "alice", .name = "first"};
    assert_int_equal(hub_repo_new(h, &alice, &spec, &row, &e), -1);
    assert_int_equal(e.status, 409);
    const char *bad[] = {"x.git", "-x", "a..b", "a--b", ""};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        spec.name = bad[i];
        assert_int_equal(hub_repo_new(h, &alice, &spec, &row, &e), -1);
        assert_int_equal(e.status, 400);
    }
    char long_name[98];
    memset(long_name, 'n', 97);
    long_name[97] = '\0';
    spec.name = long_name;
    assert_int_equal(hub_repo_new(h, &alice, &spec, &row, &e), -1);
    spec.name = "theirs";
    assert_int_equal(hub_repo_new(h, &bob, &spec, &row, &e), -1); /* bob in alice's namespace */
    assert_int_equal(e.status, 403);
    spec.type = "widget";
    assert_int_equal(hub_repo_new(h, &alice, &spec, &row, &e), -1);
    assert_int_equal(e.status, 400);
    /* pointer text among the first files names an object the new repo cannot hold */
    char oid[65], text[256];
    store_bytes("alice's weights", oid);
    snprintf(text, sizeof text, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize 15\n", oid);
    repo_file files[] = {{"w.bin", text, strlen(text)}};
    hub_repo_spec with_files = {.type = "model", .ns = "alice", .name = "planted", .files = files,
                                .nfiles = 1};
    assert_int_equal(hub_repo_new(h, &alice, &with_files, &row, &e), -1);
    assert_int_equal(e.status, 422);
    assert_int_equal(db_repo_get(h->db, "model", "alice", "planted", &row, &e), 1);
}

static void test_commit_link_rule_and_pull_requests(void **state)
{
    err e = ERR_INIT;
    db_repo mine = new_repo(&alice, "weights", false);
    hub_change_result done;
    char oid[65], text[256];
    store_bytes("some weights!", oid);
    snprintf(text, sizeof text, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize 13\n", oid);
    /* stored, but not linked to this repo: refused, nothing committed */
    assert_int_equal(put(&mine, &alice, "w.bin", text, false, &done, &e), -1);
    assert_int_equal(e.status, 422);
    assert_non_null(strstr(e.message, oid));
    /* linked: accepted, and listed as LFS */
    assert_int_equal(db_repo_object_add(h->db, mine.id, oid, 13, &e), 0);
    assert_int_equal(put(&mine, &alice, "w.bin", text, false, &done, &e), 0);
    /* with another size: refused */
    snprintf(text, sizeof text, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize 14\n", oid);
    assert_int_equal(put(&mine, &alice, "v.bin", text, false, &done, &e), -1);
    assert_int_equal(e.status, 422);
    /* bob may not write, but may open pull requests, numbered in turn */
    assert_int_equal(put(&mine, &bob, "b.txt", "hi", false, &done, &e), -1);
    assert_int_equal(e.status, 403);
    assert_int_equal(put(&mine, &anon, "b.txt", "hi", true, &done, &e), -1);
    assert_int_equal(e.status, 401);
    assert_int_equal(put(&mine, &bob, "b.txt", "hi", true, &done, &e), 0);
    assert_int_equal(done.pr_number, 1);
    assert_int_equal(put(&mine, &bob, "c.txt", "hi", true, &done, &e), 0);
    assert_int_equal(done.pr_number, 2);
    /* a stale parent is 412 */
    repo_op op = {.kind = REPO_OP_PUT, .path = "d.txt", .data = "d", .len = 1};
    hub_change c = {.repo = &mine, .who = &alice, .branch = "main", .ops = &op, .nops = 1,
                    .parent = "0000000000000000000000000000000000000001"};
    assert_int_equal(hub_commit_apply(h, &c, &done, &e), -1);
    assert_int_equal(e.status, 412);
}

static void test_read_side_demotes_unlinked_pointers(void **state)
{
    err e = ERR_INIT;
    db_repo theirs = new_repo(&alice, "secret", true);
    db_repo mine = new_repo(&bob, "mine", false);
    char oid[65], text[256];
    store_bytes("alice's private bytes", oid);
    assert_int_equal(db_repo_object_add(h->db, theirs.id, oid, 21, &e), 0);
    snprintf(text, sizeof text, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize 21\n", oid);
    /* written past the domain (as data from before the rule, or a path that forgot it) */
    buf git_dir = BUF_INIT;
    hub_git_dir(h, mine.uid, &git_dir);
    repo *r = repo_open(git_dir.data, &e);
    buf_free(&git_dir);
    assert_non_null(r);
    repo_op op = {.kind = REPO_OP_PUT, .path = "x.bin", .data = text, .len = strlen(text)};
    repo_commit_request c = {.branch = "main", .ops = &op, .nops = 1, .author_name = "bob",
                             .author_email = "b@x", .message = "planted\n"};
    char sha[41];
    assert_int_equal(repo_commit(r, &c, sha, &e), 0);
    repo_entry ent;
    assert_int_equal(repo_stat(r, sha, "x.bin", &ent, &e), 0);
    assert_true(ent.is_lfs); /* git alone sees a pointer... */
    repo_entry_free(&ent);
    assert_int_equal(hub_entry_stat(h, &mine, r, sha, "x.bin", &ent, &e), 0);
    assert_false(ent.is_lfs); /* ...the hub, a small text file */
    assert_int_equal(ent.size, (int64_t)strlen(text));
    repo_entry_free(&ent);
    repo_entries list;
    assert_int_equal(hub_entries_list(h, &mine, r, sha, "", true, &list, &e), 0);
    for (size_t i = 0; i < list.n; i++)
        assert_false(list.items[i].is_lfs);
    repo_entries_free(&list);
    assert_null(hub_object_open(h, &mine, oid, &e));
    assert_int_equal(e.status, 404);
    store_reader *rd = hub_object_open(h, &theirs, oid, &e);
    assert_non_null(rd);
    store_reader_close(rd);
    repo_close(r);
}

static void test_grants_are_checked_again_at_use(void **state)
{
    err e = ERR_INIT;
    db_repo row = new_repo(&alice, "granted", false);
    hub_grant by_bob = {.repo_id = row.id, .user_id = bob.user.id, .token_id = bob.token.id};
    snprintf(by_bob.uid, sizeof by_bob.uid, "%s", row.uid);
    hub_grant anonymous = by_bob;
    anonymous.user_id = anonymous.token_id = 0;
    assert_int_equal(hub_grant_recheck(h, &by_bob, false, NULL, NULL, &e), 0);
    assert_int_equal(hub_grant_recheck(h, &anonymous, false, NULL, NULL, &e), 0);
    assert_int_equal(hub_grant_recheck(h, &by_bob, true, NULL, NULL, &e), -1); /* not bob's */
    assert_int_equal(hub_repo_configure(h, &alice, &row, false, "auto", &e), 0);
    assert_int_equal(hub_grant_recheck(h, &by_bob, false, NULL, NULL, &e), -1);
    assert_int_equal(e.status, 403);
    assert_string_equal(e.code, "GatedRepo");
    assert_int_equal(hub_repo_configure(h, &alice, &row, true, "", &e), 0);
    assert_int_equal(hub_grant_recheck(h, &by_bob, false, NULL, NULL, &e), -1);
    assert_int_equal(e.status, 404);
    hub_grant by_alice = by_bob;
    by_alice.user_id = alice.user.id;
    by_alice.token_id = alice.token.id;
    assert_int_equal(hub_grant_recheck(h, &by_alice, true, NULL, NULL, &e), 0);
    by_alice.token_id = bob.token.id; /* someone else's token id */
    assert_int_equal(hub_grant_recheck(h, &by_alice, false, NULL, NULL, &e), -1);
    assert_int_equal(e.status, 401);
    by_alice.token_id = alice.token.id;
    assert_int_equal(hub_repo_remove(h, &alice, &row, &e), 0);
    assert_int_equal(hub_grant_recheck(h, &by_alice, false, NULL, NULL, &e), -1);
    assert_int_equal(e.status, 404);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repo_new_checks_names_and_rights),
        cmocka_unit_test(test_commit_link_rule_and_pull_requests),
        cmocka_unit_test(test_read_side_demotes_unlinked_pointers),
        cmocka_unit_test(test_grants_are_checked_again_at_use),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
