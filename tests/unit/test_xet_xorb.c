/* Unit tests for src/xet xorbs: chunk headers, the three compression schemes, the 5% rule,
 * round trips through xet_xorb_parse, and rejection of malformed xorbs (truncation, bad
 * headers, corrupt LZ4, wrong lengths, random garbage) without crashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "xet/xet.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint8_t next_byte(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint8_t)rng;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = next_byte();
}

/* bf16-like: high bytes drawn from a handful of values, low bytes random. */
static void fill_bf16(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (i & 1) ? (uint8_t)(0x3c + (next_byte() & 3)) : next_byte();
}

static void fill_text(uint8_t *p, size_t n)
{
    static const char words[] = "the quick brown fox jumps over the lazy dog 0123456789\n";
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)words[(i * 7 + i / 55) % (sizeof words - 1)];
}

static void test_header_codec(void **state)
{
    (void)state;
    xet_chunk_header h = {0, 0x012345, XET_COMPRESSION_LZ4, 0x020001}, back;
    uint8_t raw[8];
    xet_chunk_header_encode(&h, raw);
    const uint8_t want[8] = {0, 0x45, 0x23, 0x01, 1, 0x01, 0x00, 0x02};
    assert_memory_equal(raw, want, 8);
    err e = ERR_INIT;
    assert_int_equal(xet_chunk_header_decode(raw, &back, &e), -1); /* 131073 > 128 KiB */
    h.uncompressed_len = XET_CHUNK_MAX;
    xet_chunk_header_encode(&h, raw);
    assert_int_equal(xet_chunk_header_decode(raw, &back, &e), 0);
    assert_int_equal(back.compressed_len, 0x012345);
    assert_int_equal(back.uncompressed_len, XET_CHUNK_MAX);

    raw[0] = 1; /* version */
    assert_int_equal(xet_chunk_header_decode(raw, &back, &e), -1);
    assert_int_equal(e.status, 400);
    raw[0] = 0;
    raw[4] = 3; /* scheme */
    assert_int_equal(xet_chunk_header_decode(raw, &back, &e), -1);
    raw[4] = 0; /* raw chunk whose payload length differs from its length */
    assert_int_equal(xet_chunk_header_decode(raw, &back, &e), -1);
}

/* Builds a xorb from chunks of the given kinds and parses it back. */
static void round_trip(xet_compression scheme, void (*fill)(uint8_t *, size_t), size_t n_chunks,
                       xet_compression expect)
{
    buf x = BUF_INIT;
    uint8_t *data = malloc(n_chunks * XET_CHUNK_MAX);
    xet_chunk *refs = malloc(n_chunks * sizeof *refs);
    size_t *lens = malloc(n_chunks * sizeof *lens);
    assert_non_null(data);
    size_t off = 0;
    err e = ERR_INIT;
    for (size_t i = 0; i < n_chunks; i++) {
        lens[i] = 1 + (size_t)(next_byte() | next_byte() << 8 | (next_byte() & 1) << 16) % XET_CHUNK_MAX;
        if (i == 0)
            lens[i] = XET_CHUNK_MAX;
        fill(data + off, lens[i]);
        xet_compression used;
        assert_true(xet_xorb_append_chunk(&x, data + off, lens[i], scheme, &used, &e) > 0);
        if (lens[i] > 4096)
            assert_int_equal(used, expect);
        xet_chunk_hash(data + off, lens[i], &refs[i].hash);
        refs[i].length = lens[i];
        off += lens[i];
    }
    xet_xorb parsed;
    assert_int_equal(xet_xorb_parse((const uint8_t *)x.data, x.len, &parsed, &e), 0);
    assert_int_equal(parsed.n_chunks, n_chunks);
    assert_int_equal(parsed.unpacked_len, off);
    assert_int_equal(parsed.chunks_len, x.len);
    assert_false(parsed.has_footer);
    xet_hash want;
    assert_int_equal(xet_xorb_hash(refs, n_chunks, &want), 0);
    assert_true(xet_hash_equal(&parsed.hash, &want));

    /* Each chunk decodes back to its bytes. */
    uint8_t *out = malloc(XET_CHUNK_MAX);
    for (size_t i = 0; i < n_chunks; i++) {
        const xet_xorb_chunk *c = &parsed.chunks[i];
        assert_true(xet_hash_equal(&c->hash, &refs[i].hash));
        xet_chunk_header h;
        assert_int_equal(xet_chunk_header_decode((const uint8_t *)x.data + c->offset, &h, &e), 0);
        assert_int_equal(xet_chunk_decode(&h, (const uint8_t *)x.data + c->offset + 8, out, &e), 0);
        assert_memory_equal(out, data + c->unpacked_offset, c->uncompressed_len);
    }
    free(out);
    xet_xorb_free(&parsed);
    buf_free(&x);
    free(data);
    free(refs);
    free(lens);
}

static void test_round_trips(void **state)
{
    (void)state;
    round_trip(XET_COMPRESSION_NONE, fill_text, 5, XET_COMPRESSION_NONE);
    round_trip(XET_COMPRESSION_LZ4, fill_text, 6, XET_COMPRESSION_LZ4);
    round_trip(XET_COMPRESSION_BG4_LZ4, fill_bf16, 6, XET_COMPRESSION_BG4_LZ4);
    round_trip(XET_COMPRESSION_AUTO, fill_bf16, 6, XET_COMPRESSION_BG4_LZ4);
    round_trip(XET_COMPRESSION_AUTO, fill_text, 6, XET_COMPRESSION_LZ4);
    /* random bytes do not compress by 5%: stored raw whatever was asked */
    round_trip(XET_COMPRESSION_AUTO, fill_random, 4, XET_COMPRESSION_NONE);
    round_trip(XET_COMPRESSION_LZ4, fill_random, 3, XET_COMPRESSION_NONE);
}

/* BG4 with lengths that are not multiples of 4 (leftover bytes go to the first groups). */
static void test_bg4_odd_lengths(void **state)
{
    (void)state;
    for (size_t len = 1; len < 40; len++) {
        uint8_t in[40];
        fill_bf16(in, len);
        buf x = BUF_INIT;
        err e = ERR_INIT;
        xet_compression used;
        assert_true(xet_xorb_append_chunk(&x, in, len, XET_COMPRESSION_BG4_LZ4, &used, &e) > 0);
        assert_int_equal(used, XET_COMPRESSION_NONE); /* too small to save 5% */
        buf_free(&x);
    }
    /* Force BG4 on a long chunk with a ragged tail and check it decodes. */
    size_t len = 70001;
    uint8_t *in = malloc(len), *out = malloc(len);
    for (size_t i = 0; i < len; i++)
        in[i] = (uint8_t)(i % 4 == 0 ? 7 : i % 4 == 1 ? next_byte() & 1 : i % 4 == 2 ? 0 : i);
    buf x = BUF_INIT;
    err e = ERR_INIT;
    xet_compression used;
    assert_true(xet_xorb_append_chunk(&x, in, len, XET_COMPRESSION_BG4_LZ4, &used, &e) > 0);
    assert_int_equal(used, XET_COMPRESSION_BG4_LZ4);
    xet_chunk_header h;
    assert_int_equal(xet_chunk_header_decode((const uint8_t *)x.data, &h, &e), 0);
    assert_int_equal(xet_chunk_decode(&h, (const uint8_t *)x.data + 8, out, &e), 0);
    assert_memory_equal(in, out, len);
    buf_free(&x);
    free(in);
    free(out);
}

static int parse_fails(const uint8_t *p, size_t n)
{
    xet_xorb x;
    err e = ERR_INIT;
    int rc = xet_xorb_parse(p, n, &x, &e);
    if (rc == 0) {
        xet_xorb_free(&x);
        return 0;
    }
    assert_int_equal(e.status, 400);
    assert_string_equal(e.code, "BadXorb");
    assert_null(x.chunks);
    return 1;
}

static void test_malformed(void **state)
{
    (void)state;
    buf x = BUF_INIT;
    err e = ERR_INIT;
    uint8_t chunk[20000];
    fill_text(chunk, sizeof chunk);
    assert_true(xet_xorb_append_chunk(&x, chunk, sizeof chunk, XET_COMPRESSION_LZ4, NULL, &e) > 0);
    size_t first = x.len;
    assert_true(xet_xorb_append_chunk(&x, chunk, 5000, XET_COMPRESSION_NONE, NULL, &e) > 0);
    uint8_t *good = (uint8_t *)x.data;
    assert_int_equal(parse_fails(good, x.len), 0);

    assert_true(parse_fails(good, 0));
    /* every truncation fails */
    for (size_t n = 1; n < x.len; n += (n < 64 ? 1 : 97))
        assert_true(parse_fails(good, n));
    assert_true(parse_fails(good, first + 3));

    uint8_t *bad = malloc(x.len);
    /* corrupt LZ4 payload bytes, one at a time: never a crash; a wrong length is caught */
    for (size_t i = 8; i < first; i += 13) {
        memcpy(bad, good, x.len);
        bad[i] ^= 0x5a;
        (void)parse_fails(bad, x.len);
    }
    /* header says more bytes than the LZ4 frame yields */
    memcpy(bad, good, x.len);
    bad[5] = (uint8_t)(sizeof chunk + 1), bad[6] = (uint8_t)((sizeof chunk + 1) >> 8);
    assert_true(parse_fails(bad, x.len));
    /* header says fewer */
    memcpy(bad, good, x.len);
    bad[5] = (uint8_t)(sizeof chunk - 1), bad[6] = (uint8_t)((sizeof chunk - 1) >> 8);
    assert_true(parse_fails(bad, x.len));
    /* an LZ4 frame declared as raw, or as BG4 */
    memcpy(bad, good, x.len);
    bad[4] = 0;
    assert_true(parse_fails(bad, x.len));
    /* trailing garbage after the last chunk */
    buf longer = BUF_INIT;
    buf_append(&longer, good, x.len);
    buf_append(&longer, "\x00\x01\x02", 3);
    assert_true(parse_fails((const uint8_t *)longer.data, longer.len));
    /* a footer ident stops the chunk list */
    buf_reset(&longer);
    buf_append(&longer, good, x.len);
    buf_append(&longer, "XETBLOB\x01 whatever", 16);
    xet_xorb parsed;
    assert_int_equal(xet_xorb_parse((const uint8_t *)longer.data, longer.len, &parsed, &e), 0);
    assert_true(parsed.has_footer);
    assert_int_equal(parsed.chunks_len, x.len);
    xet_xorb_free(&parsed);
    /* random garbage */
    for (int round = 0; round < 200; round++) {
        size_t n = 1 + next_byte() * 4;
        fill_random(bad, n < x.len ? n : x.len);
        if (round % 2)
            bad[0] = 0, bad[4] = (uint8_t)(round % 3);
        (void)parse_fails(bad, n < x.len ? n : x.len);
    }
    buf_free(&longer);
    free(bad);
    buf_free(&x);

    /* a chunk too large to encode */
    buf y = BUF_INIT;
    assert_int_equal(xet_xorb_append_chunk(&y, chunk, 0, XET_COMPRESSION_NONE, NULL, &e), -1);
    buf_free(&y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_codec),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_bg4_odd_lengths),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
