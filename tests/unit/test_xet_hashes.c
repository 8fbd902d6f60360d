/* Unit tests for src/xet hashes and chunker: the hash string form, xet-core's reference merkle
 * and file hashes (aggregated_hashes.rs test_correctness), and chunker boundary rules. The
 * large cross-check against Hugging Face's own chunker is tests/e2e/xet_chunks.test.mjs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "xet/xet.h"

static xet_hash hash_of(const char *s)
{
    xet_hash h;
    assert_int_equal(xet_hash_from_string(s, strlen(s), &h), 0);
    return h;
}

static void assert_hash(const xet_hash *h, const char *want)
{
    char got[XET_HASH_STRING_LEN + 1];
    xet_hash_to_string(h, got);
    assert_string_equal(got, want);
}

static void test_string_form(void **state)
{
    (void)state;
    xet_hash h;
    for (int i = 0; i < 32; i++)
        h.bytes[i] = (uint8_t)i;
    /* each 8-byte group is a little-endian u64 */
    assert_hash(&h, "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918");
    xet_hash back;
    const char *s = "07060504030201000F0E0D0C0B0A090817161514131211101F1E1D1C1B1A1918";
    assert_int_equal(xet_hash_from_string(s, 64, &back), 0);
    assert_true(xet_hash_equal(&h, &back));
    assert_int_equal(xet_hash_last_u64(&h), 0x1f1e1d1c1b1a1918ull);

    assert_int_equal(xet_hash_from_string(s, 63, &back), -1);
    assert_int_equal(xet_hash_from_string("", 0, &back), -1);
    char bad[65];
    memcpy(bad, s, 65);
    bad[10] = 'g';
    assert_int_equal(xet_hash_from_string(bad, 64, &back), -1);
    bad[10] = '\0';
    assert_int_equal(xet_hash_from_string(bad, 64, &back), -1);
}

#define Z "0000000000000000000000000000000000000000000000000000000000000000"
#define A "cfc5d07f6f03c29bbf424132963fe08d19a37d5757aaf520bf08119f05cd56d6"
#define B "c3e67584b5c4fc2a89837ec39e40f2c8a6bb0b2987ac94cd4b31e5fbdd210a72"
#define C "0d2beb91b9196929a5ddec9f6e306924ddf4a24268e3e59fd8464738d525af37"
#define D "adf8773496a9b7319b2e50dc98093f344053b17d8ad37100b9c07d9805988784"

/* xet-core merklehash/aggregated_hashes.rs, test_correctness: (chunks, xorb hash, file hash). */
static const struct {
    const char *hashes[6];
    uint64_t lengths[6];
    size_t n;
    const char *xorb, *file;
} merkle_refs[] = {
    {{0}, {0}, 0, Z, Z},
    {{Z}, {0}, 1, Z, "638a6bc391964a85939d48f008e8bdbae6a7975e7ca2d87a3ce2492f4e4d8a4c"},
    {{A}, {100}, 1, A, "8e16257caa3fe079d484d872a8975264b2ff683b0d6db9028cc7c0f968a45661"},
    {{A, B, C}, {100, 200, 300}, 3,
     "71ec1275fca074724e2dd666921b3277c7cee603e4d025bcab2d4050015be2bc",
     "54e55dccc6653c612bdb5576c5d3cb34bb31bc4e100248abccf4c908b3ef7715"},
    {{A, A, A, A}, {100, 100, 100, 100}, 4,
     "89f2ada89ff8c96763c6b25010e6dd76a4c05b1466207633ea559acf2093211b",
     "2cdba690d0e09563596e0cda626d43eb4c96ef1e994fe72d9b2f5a83cfcd36dd"},
    {{A, B, A, B}, {100, 200, 100, 200}, 4,
     "90f8313ef12df385d237a067aded02562c35ded12116e32eba401dbc86c38031",
     "284ea045e5a579e99c21ec597c20de1fc0c09e7168162aac00db8f61b3d82dbb"},
    {{A, B, A, B, C, D}, {100, 200, 100, 200, 300, 400}, 6,
     "52c826f99507aa05d0b45e9837fa1709e0485425cfbcb1e80db3905cf98b3ee9",
     "91d21684db364c8883ab8209fa5eb2e781cf07f37e1fa43e731c30839afe422f"},
    {{Z, A, Z, A}, {0, 100, 0, 100}, 4,
     "e1755c85be07fd6b7a8d7becc85e6d8c5f507f2a3d38b316bcb6f97855e72188",
     "207caf24fce045ac6d873b4c6186a5a435d600d103e1ae345e55ddf1f4b7f7ef"},
    {{Z, A, Z, A, Z}, {0, 100, 0, 100, 0}, 5,
     "f36c6a6374a567efd36ed087aeb680b57e3af4e0b5b8e7be2593df4cb647a2de",
     "ab2f46d31855e1133b3b5b70e78f841394a648710a208923b221c1a8a0572a1f"},
};

static void test_merkle_reference(void **state)
{
    (void)state;
    for (size_t r = 0; r < ARRAY_LEN(merkle_refs); r++) {
        xet_chunk chunks[6];
        for (size_t i = 0; i < merkle_refs[r].n; i++) {
            chunks[i].hash = hash_of(merkle_refs[r].hashes[i]);
            chunks[i].length = merkle_refs[r].lengths[i];
        }
        xet_hash xorb, file;
        assert_int_equal(xet_xorb_hash(chunks, merkle_refs[r].n, &xorb), 0);
        assert_int_equal(xet_file_hash(chunks, merkle_refs[r].n, &file), 0);
        assert_hash(&xorb, merkle_refs[r].xorb);
        assert_hash(&file, merkle_refs[r].file);
    }
}

/* Many nodes: groups of 2..9 and several levels; the root must not depend on scratch reuse. */
static void test_merkle_many(void **state)
{
    (void)state;
    enum { N = 5000 };
    xet_chunk *chunks = malloc(N * sizeof *chunks);
    assert_non_null(chunks);
    for (size_t i = 0; i < N; i++) {
        uint64_t v = i * 0x9E3779B97F4A7C15ull;
        xet_chunk_hash(&v, sizeof v, &chunks[i].hash);
        chunks[i].length = 1000 + i;
    }
    xet_hash a, b;
    assert_int_equal(xet_xorb_hash(chunks, N, &a), 0);
    assert_int_equal(xet_xorb_hash(chunks, N, &b), 0);
    assert_true(xet_hash_equal(&a, &b));
    /* a change in the last chunk changes the root */
    chunks[N - 1].length++;
    assert_int_equal(xet_xorb_hash(chunks, N, &b), 0);
    assert_false(xet_hash_equal(&a, &b));
    free(chunks);
}

static void test_chunk_and_verification_hash(void **state)
{
    (void)state;
    xet_hash h;
    xet_chunk_hash("", 0, &h);
    uint8_t direct[32];
    xet_blake3_keyed(xet_data_key, "", 0, direct);
    assert_memory_equal(h.bytes, direct, 32);

    xet_hash parts[3];
    for (int i = 0; i < 3; i++)
        xet_chunk_hash(&i, sizeof i, &parts[i]);
    xet_hash v;
    xet_verification_hash(parts, 3, &v);
    xet_blake3_keyed(xet_verification_key, parts, sizeof parts, direct);
    assert_memory_equal(v.bytes, direct, 32);
    /* the file hash of one chunk is the chunk hash under the zero-key HMAC */
    static const uint8_t zero_key[32];
    xet_chunk one = {parts[1], 123};
    xet_hash file, mac;
    assert_int_equal(xet_file_hash(&one, 1, &file), 0);
    xet_hash_hmac(&parts[1], zero_key, &mac);
    assert_true(xet_hash_equal(&file, &mac));
    xet_hash_hmac(&mac, xet_data_key, &mac); /* in place */
    assert_false(xet_hash_equal(&file, &mac));

    assert_false(xet_hash_is_global_dedup_eligible(&parts[0]) &&
                 xet_hash_is_global_dedup_eligible(&parts[1]) &&
                 xet_hash_is_global_dedup_eligible(&parts[2]));
}

/* Chunks `data` feeding `step` bytes at a time; returns the number of chunks. */
static size_t chunk_lengths(const uint8_t *data, size_t len, size_t step, xet_chunker_rule rule,
                            size_t *out, size_t cap)
{
    xet_chunker c;
    xet_chunker_init(&c, rule);
    size_t n = 0, pos = 0, cur = 0;
    while (pos < len) {
        size_t avail = len - pos < step ? len - pos : step;
        size_t off = 0;
        while (off < avail) {
            bool ends;
            size_t k = xet_chunker_next(&c, data + pos + off, avail - off, &ends);
            cur += k;
            off += k;
            if (ends) {
                assert_true(n < cap);
                out[n++] = cur;
                cur = 0;
            }
        }
        pos += avail;
    }
    assert_int_equal(cur, c.chunk_len);
    if (cur) {
        assert_true(n < cap);
        out[n++] = cur;
    }
    return n;
}

static void test_chunker_bounds_and_streaming(void **state)
{
    (void)state;
    const size_t len = 6 << 20;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    uint64_t x = 0x243F6A8885A308D3ull;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        data[i] = (uint8_t)x;
    }
    enum { CAP = 2000 };
    size_t *whole = malloc(CAP * sizeof *whole), *pieces = malloc(CAP * sizeof *pieces);
    assert_non_null(whole);
    assert_non_null(pieces);
    for (int rule = 0; rule < 2; rule++) {
        size_t n = chunk_lengths(data, len, len, (xet_chunker_rule)rule, whole, CAP);
        assert_true(n > 40 && n < 200);
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
            total += whole[i];
            assert_true(whole[i] <= XET_CHUNK_MAX);
            if (i + 1 < n)
                assert_true(whole[i] >= (rule == XET_CHUNKER_HF_XET ? XET_CHUNK_MIN : XET_CHUNK_MIN - 64));
        }
        assert_int_equal(total, len);
        const size_t steps[] = {1000, 4096, 8127, 65536, 100001};
        for (size_t s = 0; s < ARRAY_LEN(steps); s++) {
            size_t m = chunk_lengths(data, len, steps[s], (xet_chunker_rule)rule, pieces, CAP);
            assert_int_equal(m, n);
            assert_memory_equal(pieces, whole, n * sizeof *whole);
        }
    }
    free(whole);
    free(pieces);
    free(data);
}

/* Zeros never match: every chunk is the maximum. A gear-table entry with its top 16 bits clear
 * as the first hashed byte (offset 8127) is where the two boundary rules part. */
static void test_chunker_rules(void **state)
{
    (void)state;
    size_t len = 3 * XET_CHUNK_MAX + 5;
    uint8_t *data = calloc(len, 1);
    assert_non_null(data);
    size_t out[8];
    size_t n = chunk_lengths(data, len, len, XET_CHUNKER_HF_XET, out, 8);
    assert_int_equal(n, 4);
    assert_int_equal(out[0], XET_CHUNK_MAX);
    assert_int_equal(out[3], 5);

    int early = -1;
    for (int b = 0; b < 256 && early < 0; b++)
        if ((xet_gear_table[b] >> 48) == 0)
            early = b;
    assert_true(early >= 0);
    data[XET_CHUNK_MIN - 65] = (uint8_t)early;
    n = chunk_lengths(data, len, len, XET_CHUNKER_LEGACY, out, 8);
    assert_int_equal(out[0], XET_CHUNK_MIN - 64);
    n = chunk_lengths(data, len, len, XET_CHUNKER_HF_XET, out, 8);
    assert_true(out[0] >= XET_CHUNK_MIN);
    free(data);

    /* A file below the minimum is one chunk; an empty one has none. */
    uint8_t small[100] = {1, 2, 3};
    n = chunk_lengths(small, sizeof small, sizeof small, XET_CHUNKER_HF_XET, out, 8);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], sizeof small);
    n = chunk_lengths(small, 0, 1, XET_CHUNKER_HF_XET, out, 8);
    assert_int_equal(n, 0);
}

static void test_chunk_stream(void **state)
{
    (void)state;
    const size_t len = 1 << 20;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)((i * 2654435761u) >> 13);
    xet_chunk_stream a, b;
    xet_chunk_stream_init(&a, XET_CHUNKER_HF_XET);
    xet_chunk_stream_init(&b, XET_CHUNKER_HF_XET);
    assert_int_equal(xet_chunk_stream_update(&a, data, len), 0);
    for (size_t pos = 0; pos < len; pos += 777)
        assert_int_equal(xet_chunk_stream_update(&b, data + pos, len - pos < 777 ? len - pos : 777), 0);
    assert_int_equal(xet_chunk_stream_finish(&a), 0);
    assert_int_equal(xet_chunk_stream_finish(&b), 0);
    assert_int_equal(a.n_chunks, b.n_chunks);
    assert_memory_equal(a.chunks, b.chunks, a.n_chunks * sizeof *a.chunks);
    uint64_t off = 0;
    for (size_t i = 0; i < a.n_chunks; i++) {
        xet_hash h;
        xet_chunk_hash(data + off, a.chunks[i].length, &h);
        assert_true(xet_hash_equal(&h, &a.chunks[i].hash));
        off += a.chunks[i].length;
    }
    assert_int_equal(off, len);
    assert_int_equal(a.total_len, len);
    xet_chunk_stream_free(&a);
    xet_chunk_stream_free(&b);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_string_form),
        cmocka_unit_test(test_merkle_reference),
        cmocka_unit_test(test_merkle_many),
        cmocka_unit_test(test_chunk_and_verification_hash),
        cmocka_unit_test(test_chunker_bounds_and_streaming),
        cmocka_unit_test(test_chunker_rules),
        cmocka_unit_test(test_chunk_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
