/* Unit tests for src/http: Range headers as downloaders send them (huggingface_hub resumes
 * with bytes=N-, hf_xet asks for exact ranges, browsers probe with bytes=0-), and the ones RFC
 * 9110 says to ignore or refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/http.h"

static void check(const char *header, int64_t total, http_range_result want, int64_t first,
                  int64_t last)
{
    int64_t f = -7, l = -7;
    http_range_result got = http_parse_range(header, total, &f, &l);
    if (got != want)
        fail_msg("Range %s of %lld: result %d, want %d", header ? header : "(none)",
                 (long long)total, got, want);
    if (want == HTTP_RANGE_OK) {
        assert_int_equal(f, first);
        assert_int_equal(l, last);
    }
}

static void test_ranges(void **state)
{
    check(NULL, 100, HTTP_RANGE_NONE, 0, 0);
    check("bytes=0-9", 100, HTTP_RANGE_OK, 0, 9);
    check("bytes=90-", 100, HTTP_RANGE_OK, 90, 99);       /* resume */
    check("bytes=-10", 100, HTTP_RANGE_OK, 90, 99);       /* suffix */
    check("bytes=-1000", 100, HTTP_RANGE_OK, 0, 99);      /* suffix longer than the file */
    check("bytes=50-1000", 100, HTTP_RANGE_OK, 50, 99);   /* end clamped */
    check("bytes=0-0", 1, HTTP_RANGE_OK, 0, 0);
    check("bytes=100-", 100, HTTP_RANGE_UNSATISFIABLE, 0, 0);
    check("bytes=200-300", 100, HTTP_RANGE_UNSATISFIABLE, 0, 0);
    check("bytes=0-0", 0, HTTP_RANGE_UNSATISFIABLE, 0, 0);
    /* malformed or multi-range: ignored, the whole body is sent */
    check("bytes=9-1", 100, HTTP_RANGE_NONE, 0, 0);
    check("items=0-9", 100, HTTP_RANGE_NONE, 0, 0);
    check("bytes=a-b", 100, HTTP_RANGE_NONE, 0, 0);
    check("bytes=0-1,5-6", 100, HTTP_RANGE_NONE, 0, 0);
    check("bytes=", 100, HTTP_RANGE_NONE, 0, 0);
    check("bytes=-", 100, HTTP_RANGE_NONE, 0, 0);
    check("bytes=99999999999999999999-", 100, HTTP_RANGE_NONE, 0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ranges)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
