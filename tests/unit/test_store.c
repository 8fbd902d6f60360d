/* Unit tests for src/store: what is acknowledged is readable byte for byte; what does not
 * match its announced hash or size leaves nothing behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"

static char dir[64];

static int setup(void **state)
{
    strcpy(dir, "/tmp/hearth-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    path_remove_tree(dir);
    return 0;
}

static size_t tmp_files(void)
{
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s/tmp", dir);
    DIR *d = opendir(tmp);
    size_t n = 0;
    for (struct dirent *ent; d && (ent = readdir(d));)
        n += ent->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static void test_put_and_read(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    assert_non_null(s);
    char data[100000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 31);
    char want[65], got[65];
    hash_sha256_hex(data, sizeof data, want);
    store_writer *w = store_writer_new(s, &e);
    assert_int_equal(store_writer_write(w, data, 1234, &e), 0);
    assert_int_equal(store_writer_write(w, data + 1234, sizeof data - 1234, &e), 0);
    assert_int_equal(store_writer_finish(w, want, sizeof data, got, &e), 0);
    assert_string_equal(want, got);
    int64_t size = 0;
    assert_int_equal(store_stat(s, want, &size, &e), 0);
    assert_int_equal(size, sizeof data);
    store_reader *r = store_reader_open(s, want, &e);
    assert_non_null(r);
    char back[500];
    assert_int_equal(store_reader_pread(r, back, sizeof back, 5000), sizeof back);
    assert_memory_equal(back, data + 5000, sizeof back);
    int fd;
    int64_t off;
    assert_int_equal(store_reader_region(r, 10, 20, &fd, &off), 0);
    close(fd);
    store_reader_close(r);
    /* The same content again is accepted and stored once. */
    w = store_writer_new(s, &e);
    store_writer_write(w, data, sizeof data, &e);
    assert_int_equal(store_writer_finish(w, want, sizeof data, NULL, &e), 0);
    assert_int_equal(tmp_files(), 0);
    store_close(s);
}

static void test_mismatch_leaves_nothing(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    store_writer *w = store_writer_new(s, &e);
    store_writer_write(w, "hello", 5, &e);
    assert_int_equal(store_writer_finish(w, wrong, 5, NULL, &e), -1);
    assert_int_equal(e.status, 400);
    assert_int_equal(store_stat(s, wrong, NULL, &e), 1);
    w = store_writer_new(s, &e);
    store_writer_write(w, "hello", 5, &e);
    err_clear(&e);
    assert_int_equal(store_writer_finish(w, NULL, 6, NULL, &e), -1);
    assert_non_null(strstr(e.message, "size"));
    w = store_writer_new(s, &e);
    store_writer_write(w, "abandoned", 9, &e);
    store_writer_abort(w);
    assert_int_equal(tmp_files(), 0);
    assert_null(store_reader_open(s, wrong, &e));
    assert_int_equal(e.status, 404);
    assert_int_equal(store_stat(s, "../../etc/passwd", NULL, &e), -1);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_and_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatch_leaves_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
