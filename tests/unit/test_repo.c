/* Unit tests for src/repo: commits are all or nothing, revisions resolve the ways clients
 * name them, LFS pointers are recognised, and racing writers never lose a commit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo/repo.h"

static char dir[64];
static char gitdir[96];

static int setup(void **state)
{
    strcpy(dir, "/tmp/hearth-repo-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(gitdir, sizeof gitdir, "%s/r.git", dir);
    repo_file files[] = {{".gitattributes", "*.bin filter=lfs\n", 17}};
    char sha[41];
    err e = ERR_INIT;
    assert_int_equal(repo_create(gitdir, files, 1, "alice", "initial\n", sha, &e), 0);
    return 0;
}

static int teardown(void **state)
{
    path_remove_tree(dir);
    return 0;
}

static void put(repo *r, const char *path, const char *data, const char *parent, int want_rc)
{
    repo_op op = {.kind = REPO_OP_PUT, .path = path, .data = data, .len = strlen(data)};
    repo_commit_request c = {.branch = "main", .parent = parent, .ops = &op, .nops = 1,
                             .author_name = "alice", .author_email = "a@x", .message = "put\n"};
    char sha[41];
    err e = ERR_INIT;
    assert_int_equal(repo_commit(r, &c, sha, &e), want_rc);
}

static void test_commit_and_read(void **state)
{
    err e = ERR_INIT;
    repo *r = repo_open(gitdir, &e);
    assert_non_null(r);
    put(r, "dir/a.txt", "hello", NULL, 0);
    char head[41];
    assert_int_equal(repo_resolve(r, "main", head, &e), 0);
    buf b = BUF_INIT;
    assert_int_equal(repo_read(r, head, "dir/a.txt", &b, &e), 0);
    assert_string_equal(buf_str(&b), "hello");
    buf_free(&b);
    /* short ids, HEAD, and unknown revisions */
    char short_id[8], full[41];
    memcpy(short_id, head, 7);
    short_id[7] = '\0';
    assert_int_equal(repo_resolve(r, short_id, full, &e), 0);
    assert_string_equal(full, head);
    assert_int_equal(repo_resolve(r, "HEAD", full, &e), 0);
    assert_int_equal(repo_resolve(r, "nope", full, &e), -1);
    assert_string_equal(e.code, "RevisionNotFound");
    /* a stale parent is refused and changes nothing */
    put(r, "b.txt", "x", "0000000000000000000000000000000000000000", -1);
    char after[41];
    repo_resolve(r, "main", after, &e);
    assert_string_equal(after, head);
    /* deleting a missing file is EntryNotFound, and the whole commit is refused */
    repo_op ops[2] = {{.kind = REPO_OP_PUT, .path = "c.txt", .data = "c", .len = 1},
                      {.kind = REPO_OP_DELETE_FILE, .path = "missing.txt"}};
    repo_commit_request c = {.branch = "main", .ops = ops, .nops = 2, .author_name = "a",
                             .author_email = "a@x", .message = "m\n"};
    err_clear(&e);
    assert_int_equal(repo_commit(r, &c, full, &e), -1);
    assert_string_equal(e.code, "EntryNotFound");
    repo_entry ent;
    assert_int_equal(repo_stat(r, after, "c.txt", &ent, &e), 1);
    repo_close(r);
}

static void test_lfs_pointer(void **state)
{
    buf p = BUF_INIT;
    const char *oid = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";
    repo_format_lfs_pointer(&p, oid, 12345);
    repo_lfs lfs;
    assert_true(repo_parse_lfs_pointer(p.data, p.len, &lfs));
    assert_string_equal(lfs.oid, oid);
    assert_int_equal(lfs.size, 12345);
    assert_int_equal(lfs.pointer_size, p.len);
    assert_false(repo_parse_lfs_pointer("version https://git-lfs.github.com/spec/v1\noid sha256:zz\n",
                                        57, &lfs));
    assert_false(repo_parse_lfs_pointer("hello", 5, &lfs));
    buf_free(&p);
}

static void *writer(void *arg)
{
    err e = ERR_INIT;
    repo *r = repo_open(gitdir, &e);
    char path[32];
    for (int i = 0; i < 10; i++) {
        snprintf(path, sizeof path, "w%ld-%d.txt", (long)(intptr_t)arg, i);
        repo_op op = {.kind = REPO_OP_PUT, .path = path, .data = path, .len = strlen(path)};
        repo_commit_request c = {.branch = "main", .ops = &op, .nops = 1, .author_name = "a",
                                 .author_email = "a@x", .message = "race\n"};
        char sha[41];
        if (repo_commit(r, &c, sha, &e) != 0)
            fprintf(stderr, "commit failed: %s\n", e.message);
    }
    repo_close(r);
    return NULL;
}

static void test_racing_writers_lose_nothing(void **state)
{
    pthread_t t[4];
    for (intptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, writer, (void *)i);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    err e = ERR_INIT;
    repo *r = repo_open(gitdir, &e);
    char head[41];
    repo_resolve(r, "main", head, &e);
    repo_entries list;
    assert_int_equal(repo_list(r, head, "", false, &list, &e), 0);
    assert_int_equal(list.n, 1 + 4 * 10); /* .gitattributes + every file */
    repo_entries_free(&list);
    repo_log log;
    assert_int_equal(repo_history(r, head, 0, 100, &log, &e), 0);
    assert_int_equal(log.total, 1 + 4 * 10);
    repo_log_free(&log);
    repo_close(r);
}

static void test_refs(void **state)
{
    err e = ERR_INIT;
    repo *r = repo_open(gitdir, &e);
    char head[41];
    repo_resolve(r, "main", head, &e);
    assert_int_equal(repo_branch_create(r, "feature/x", head, false, false, "a", &e), 0);
    assert_int_equal(repo_branch_create(r, "feature/x", head, false, false, "a", &e), -1);
    assert_int_equal(e.status, 409);
    assert_int_equal(repo_branch_create(r, "refs/pr/5", head, false, false, "a", &e), -1);
    assert_int_equal(e.status, 400);
    assert_int_equal(repo_tag_create(r, "v1.0", head, "release", "a", &e), 0);
    char sha[41];
    assert_int_equal(repo_resolve(r, "v1.0", sha, &e), 0);
    assert_string_equal(sha, head);
    assert_int_equal(repo_resolve(r, "refs/heads/feature/x", sha, &e), 0);
    assert_int_equal(repo_branch_delete(r, "main", &e), -1);
    repo_refs refs;
    assert_int_equal(repo_list_refs(r, &refs, &e), 0);
    assert_int_equal(refs.nbranches, 2);
    assert_int_equal(refs.ntags, 1);
    repo_refs_free(&refs);
    repo_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_and_read, setup, teardown),
        cmocka_unit_test(test_lfs_pointer),
        cmocka_unit_test_setup_teardown(test_racing_writers_lose_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
