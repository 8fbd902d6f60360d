/* Unit tests for src/base: paths that must never reach the filesystem, percent-decoding,
 * hashes with known answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/base.h"

static void test_repo_paths(void **state)
{
    (void)state;
    const char *good[] = {"a", "a/b.txt", "dir/sub/file.bin", ".gitattributes", "a..b", "x/.hidden"};
    const char *bad[] = {"", "/abs", "a/../b", "..", ".", "a//b", "a/", "a\\b", ".git/config",
                         ".git", "a/./b", "tab\there"};
    for (size_t i = 0; i < ARRAY_LEN(good); i++)
        assert_true(path_is_valid_repo_path(good[i], strlen(good[i])));
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_false(path_is_valid_repo_path(bad[i], strlen(bad[i])));
    assert_false(path_is_valid_repo_path("a\0b", 3));
}

static void test_repo_names(void **state)
{
    (void)state;
    assert_true(path_is_valid_repo_name("gpt2"));
    assert_true(path_is_valid_repo_name("Llama-3.1_8B"));
    assert_false(path_is_valid_repo_name(".."));
    assert_false(path_is_valid_repo_name("a/b"));
    assert_false(path_is_valid_repo_name("-x"));
    assert_false(path_is_valid_repo_name("a--b"));
    assert_false(path_is_valid_repo_name(""));
}

static void test_percent_decode(void **state)
{
    (void)state;
    buf b = BUF_INIT;
    assert_int_equal(text_percent_decode("refs%2Fpr%2F1", 13, false, &b), 0);
    assert_string_equal(buf_str(&b), "refs/pr/1");
    buf_reset(&b);
    assert_int_equal(text_percent_decode("a+b", 3, true, &b), 0);
    assert_string_equal(buf_str(&b), "a b");
    buf_reset(&b);
    assert_int_equal(text_percent_decode("bad%2", 5, false, &b), -1);
    buf_reset(&b);
    assert_int_equal(text_percent_decode("nul%00", 6, false, &b), -1);
    buf_free(&b);
}

static void test_hashes(void **state)
{
    (void)state;
    char sha[65], blob[41];
    hash_sha256_hex("abc", 3, sha);
    assert_string_equal(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* `echo -n hello | git hash-object --stdin` */
    hash_git_blob_hex("hello", 5, blob);
    assert_string_equal(blob, "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0");
}

static void test_iso8601(void **state)
{
    (void)state;
    char out[32];
    text_iso8601(1714564800123LL, out);
    assert_string_equal(out, "2024-05-01T12:00:00.123Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repo_paths),   cmocka_unit_test(test_repo_names),
        cmocka_unit_test(test_percent_decode), cmocka_unit_test(test_hashes),
        cmocka_unit_test(test_iso8601),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
