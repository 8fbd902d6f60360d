/* Unit tests for src/xet shards: the byte layout (header, records, bookends, the sha256
 * field's byte order), round trips with and without a footer, and rejection of malformed
 * shards (truncation, wrong tag or version, counts larger than the input, empty term ranges,
 * trailing bytes, garbage) without crashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "xet/xet.h"

static xet_hash hash_n(int n)
{
    xet_hash h;
    xet_chunk_hash(&n, sizeof n, &h);
    return h;
}

/* Two files (one with verification + sha256, one bare) over one xorb of three chunks. */
static void build(xet_shard *s, xet_shard_file files[2], xet_shard_term terms[3],
                  xet_hash verification[2], xet_shard_xorb *xorb, xet_shard_chunk chunks[3])
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 3; i++) {
        chunks[i] = (xet_shard_chunk){hash_n(10 + i), (uint32_t)(1000 * i), 1000, 0};
    }
    chunks[0].flags = XET_SHARD_CHUNK_GLOBAL_DEDUP;
    *xorb = (xet_shard_xorb){hash_n(1), 0, 3000, 2900, 3, chunks};
    terms[0] = (xet_shard_term){hash_n(1), 0, 2000, 0, 2};
    terms[1] = (xet_shard_term){hash_n(1), 0, 1000, 2, 3};
    terms[2] = (xet_shard_term){hash_n(1), 0, 3000, 0, 3};
    xet_hash hs[3] = {chunks[0].hash, chunks[1].hash, chunks[2].hash};
    xet_verification_hash(hs, 2, &verification[0]);
    xet_verification_hash(hs + 2, 1, &verification[1]);
    memset(files, 0, 2 * sizeof *files);
    files[0].file_hash = hash_n(100);
    files[0].n_terms = 2;
    files[0].terms = terms;
    files[0].verification = verification;
    files[0].has_sha256 = true;
    for (int i = 0; i < 32; i++)
        files[0].sha256[i] = (uint8_t)i;
    files[1].file_hash = hash_n(101);
    files[1].n_terms = 1;
    files[1].terms = terms + 2;
    s->files = files;
    s->n_files = 2;
    s->xorbs = xorb;
    s->n_xorbs = 1;
}

static void assert_same(const xet_shard *a, const xet_shard *b)
{
    assert_int_equal(a->n_files, b->n_files);
    assert_int_equal(a->n_xorbs, b->n_xorbs);
    for (size_t i = 0; i < a->n_files; i++) {
        const xet_shard_file *x = &a->files[i], *y = &b->files[i];
        assert_true(xet_hash_equal(&x->file_hash, &y->file_hash));
        assert_int_equal(x->n_terms, y->n_terms);
        assert_memory_equal(x->terms, y->terms, x->n_terms * sizeof *x->terms);
        assert_int_equal(x->verification == NULL, y->verification == NULL);
        if (x->verification)
            assert_memory_equal(x->verification, y->verification, x->n_terms * sizeof(xet_hash));
        assert_int_equal(x->has_sha256, y->has_sha256);
        if (x->has_sha256)
            assert_memory_equal(x->sha256, y->sha256, 32);
    }
    for (size_t i = 0; i < a->n_xorbs; i++) {
        const xet_shard_xorb *x = &a->xorbs[i], *y = &b->xorbs[i];
        assert_true(xet_hash_equal(&x->xorb_hash, &y->xorb_hash));
        assert_int_equal(x->raw_bytes, y->raw_bytes);
        assert_int_equal(x->serialized_bytes, y->serialized_bytes);
        assert_int_equal(x->n_chunks, y->n_chunks);
        assert_memory_equal(x->chunks, y->chunks, x->n_chunks * sizeof *x->chunks);
    }
}

static void test_layout_and_round_trip(void **state)
{
    (void)state;
    xet_shard s, parsed;
    xet_shard_file files[2];
    xet_shard_term terms[3];
    xet_hash verification[2];
    xet_shard_xorb xorb;
    xet_shard_chunk chunks[3];
    build(&s, files, terms, verification, &xorb, chunks);

    buf out = BUF_INIT;
    err e = ERR_INIT;
    assert_int_equal(xet_shard_serialize(&s, NULL, &out, &e), 0);
    /* header + file 0 (1 + 2 terms + 2 verif + 1 ext) + file 1 (1 + 1) + bookend
     * + xorb (1 + 3) + bookend, 48 bytes each */
    assert_int_equal(out.len, 48 * (1 + 6 + 2 + 1 + 4 + 1));
    const uint8_t *p = (const uint8_t *)out.data;
    assert_memory_equal(p, "HFRepoMetaData\0", 15);
    assert_int_equal(p[32], 2);          /* version */
    assert_int_equal(p[40], 0);          /* footer size: none in an upload */
    assert_int_equal(p[48 + 35], 0xC0);  /* file 0 flags: verification | metadata ext */
    assert_int_equal(p[48 + 36], 2);     /* two entries */
    /* the sha256 record holds each 8-byte group of the digest reversed */
    const uint8_t *ext = p + 48 * 6;
    assert_int_equal(ext[0], 7);
    assert_int_equal(ext[7], 0);
    assert_int_equal(ext[8], 15);
    const uint8_t *bookend = p + 48 * 9;
    for (int i = 0; i < 32; i++)
        assert_int_equal(bookend[i], 0xFF);
    for (int i = 32; i < 48; i++)
        assert_int_equal(bookend[i], 0);
    assert_int_equal(p[48 * 11 + 43], 0x80); /* first chunk's global dedup flag */

    assert_int_equal(xet_shard_parse(p, out.len, &parsed, &e), 0);
    assert_false(parsed.has_footer);
    assert_same(&s, &parsed);
    assert_int_equal(parsed.files[0].flags,
                     XET_SHARD_FILE_WITH_VERIFICATION | XET_SHARD_FILE_WITH_METADATA_EXT);
    assert_null(parsed.files[1].verification);
    xet_shard_free(&parsed);

    /* With a footer, as in a global dedup reply. */
    xet_shard_footer f = {.creation_timestamp = 1700000000, .key_expiry = UINT64_MAX};
    buf with = BUF_INIT;
    assert_int_equal(xet_shard_serialize(&s, &f, &with, &e), 0);
    assert_int_equal(with.len, out.len + XET_SHARD_FOOTER_LEN);
    assert_int_equal(((const uint8_t *)with.data)[40], 200);
    assert_int_equal(xet_shard_parse((const uint8_t *)with.data, with.len, &parsed, &e), 0);
    assert_true(parsed.has_footer);
    assert_int_equal(parsed.footer.creation_timestamp, 1700000000);
    assert_int_equal(parsed.footer.key_expiry, UINT64_MAX);
    assert_int_equal(parsed.footer.stored_bytes, 3000);
    assert_int_equal(parsed.footer.materialized_bytes, 6000);
    assert_same(&s, &parsed);
    /* serialize(parse(x)) == x */
    buf again = BUF_INIT;
    assert_int_equal(xet_shard_serialize(&parsed, &f, &again, &e), 0);
    assert_int_equal(again.len, with.len);
    assert_memory_equal(again.data, with.data, with.len);
    xet_shard_free(&parsed);

    /* An empty shard: header and two bookends. */
    xet_shard empty = {0};
    buf_reset(&again);
    assert_int_equal(xet_shard_serialize(&empty, NULL, &again, &e), 0);
    assert_int_equal(again.len, 48 * 3);
    assert_int_equal(xet_shard_parse((const uint8_t *)again.data, again.len, &parsed, &e), 0);
    assert_int_equal(parsed.n_files + parsed.n_xorbs, 0);
    xet_shard_free(&parsed);

    buf_free(&out);
    buf_free(&with);
    buf_free(&again);
}

static int parse_fails(const uint8_t *p, size_t n)
{
    xet_shard s;
    err e = ERR_INIT;
    int rc = xet_shard_parse(p, n, &s, &e);
    if (rc == 0) {
        xet_shard_free(&s);
        return 0;
    }
    assert_int_equal(e.status, 400);
    assert_string_equal(e.code, "BadShard");
    assert_null(s.files);
    return 1;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void test_malformed(void **state)
{
    (void)state;
    xet_shard s;
    xet_shard_file files[2];
    xet_shard_term terms[3];
    xet_hash verification[2];
    xet_shard_xorb xorb;
    xet_shard_chunk chunks[3];
    build(&s, files, terms, verification, &xorb, chunks);
    buf good = BUF_INIT, footed = BUF_INIT;
    err e = ERR_INIT;
    xet_shard_footer f = {.key_expiry = UINT64_MAX};
    assert_int_equal(xet_shard_serialize(&s, NULL, &good, &e), 0);
    assert_int_equal(xet_shard_serialize(&s, &f, &footed, &e), 0);
    const uint8_t *g = (const uint8_t *)good.data;
    uint8_t *bad = malloc(footed.len + 100);

    for (size_t n = 0; n < good.len; n++)
        assert_true(parse_fails(g, n));
    for (size_t n = 0; n < footed.len; n++)
        assert_true(parse_fails((const uint8_t *)footed.data, n));

    memcpy(bad, g, good.len);
    bad[3] ^= 1; /* tag */
    assert_true(parse_fails(bad, good.len));
    memcpy(bad, g, good.len);
    bad[32] = 3; /* version */
    assert_true(parse_fails(bad, good.len));
    memcpy(bad, g, good.len);
    bad[40] = 17; /* footer size */
    assert_true(parse_fails(bad, good.len));
    memcpy(bad, g, good.len);
    put32(bad + 48 + 36, 0xFFFFFFFFu); /* a file claiming 4 billion terms */
    assert_true(parse_fails(bad, good.len));
    memcpy(bad, g, good.len);
    put32(bad + 48 * 10 + 36, 0x7FFFFFFFu); /* a xorb claiming 2 billion chunks */
    assert_true(parse_fails(bad, good.len));
    memcpy(bad, g, good.len);
    put32(bad + 48 * 2 + 40, 5); /* term chunk_start 5 >= chunk_end 2 */
    assert_true(parse_fails(bad, good.len));
    memcpy(bad, g, good.len);
    memset(bad + good.len, 0, 48); /* trailing bytes after the last bookend */
    assert_true(parse_fails(bad, good.len + 48));
    memcpy(bad, footed.data, footed.len);
    bad[footed.len - 8] ^= 1; /* footer offset */
    assert_true(parse_fails(bad, footed.len));

    uint64_t x = 12345;
    for (int round = 0; round < 500; round++) {
        memcpy(bad, footed.data, footed.len);
        for (int k = 0; k < 4; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            bad[48 + x % (footed.len - 48)] = (uint8_t)(x >> 32);
        }
        (void)parse_fails(bad, footed.len - (round % 2) * 48);
    }
    free(bad);
    buf_free(&good);
    buf_free(&footed);
}

/* xet_shard_verify_file against a xorb of three 1000-byte chunks. */
static xet_chunk verify_chunks[3];
static xet_hash verify_xorb;

static int chunks_of(void *ctx, const xet_hash *xorb_hash, const xet_chunk **chunks, size_t *n)
{
    (void)ctx;
    if (!xet_hash_equal(xorb_hash, &verify_xorb))
        return -1;
    *chunks = verify_chunks;
    *n = 3;
    return 0;
}

static void test_verify_file(void **state)
{
    (void)state;
    xet_shard s;
    xet_shard_file files[2];
    xet_shard_term terms[3];
    xet_hash verification[2];
    xet_shard_xorb xorb;
    xet_shard_chunk chunks[3];
    build(&s, files, terms, verification, &xorb, chunks);
    for (int i = 0; i < 3; i++)
        verify_chunks[i] = (xet_chunk){chunks[i].hash, chunks[i].unpacked_len};
    verify_xorb = xorb.xorb_hash;
    assert_ptr_equal(xet_shard_find_xorb(&s, &verify_xorb), s.xorbs);
    xet_hash other = hash_n(999);
    assert_null(xet_shard_find_xorb(&s, &other));

    /* build() gives made-up file hashes: put in the real ones. */
    assert_int_equal(xet_file_hash(verify_chunks, 3, &files[0].file_hash), 0);
    files[1].file_hash = files[0].file_hash; /* the same bytes in one term */
    err e = ERR_INIT;
    uint64_t size = 0;
    assert_int_equal(xet_shard_verify_file(&files[0], chunks_of, NULL, true, &size, &e), 0);
    assert_int_equal(size, 3000);
    size = 0;
    assert_int_equal(xet_shard_verify_file(&files[1], chunks_of, NULL, false, &size, &e), 0);
    assert_int_equal(size, 3000);
    /* uploads must carry verification entries */
    assert_int_equal(xet_shard_verify_file(&files[1], chunks_of, NULL, true, &size, &e), -1);

    /* each kind of lie is caught */
    xet_shard_file bad = files[0];
    xet_shard_term bad_terms[2];
    xet_hash bad_verification[2];
    bad.terms = bad_terms;
    bad.verification = bad_verification;
#define RESET()                                                                                    \
    do {                                                                                           \
        memcpy(bad_terms, terms, sizeof bad_terms);                                                \
        memcpy(bad_verification, verification, sizeof bad_verification);                           \
        bad.file_hash = files[0].file_hash;                                                        \
    } while (0)
    RESET();
    assert_int_equal(xet_shard_verify_file(&bad, chunks_of, NULL, true, NULL, &e), 0);
    RESET();
    bad_terms[0].unpacked_bytes++;
    assert_int_equal(xet_shard_verify_file(&bad, chunks_of, NULL, true, NULL, &e), -1);
    assert_string_equal(e.code, "BadShard");
    RESET();
    bad_terms[1].chunk_end = 4; /* past the xorb's end */
    assert_int_equal(xet_shard_verify_file(&bad, chunks_of, NULL, true, NULL, &e), -1);
    RESET();
    bad_verification[1].bytes[0] ^= 1;
    assert_int_equal(xet_shard_verify_file(&bad, chunks_of, NULL, true, NULL, &e), -1);
    RESET();
    bad_terms[0].xorb_hash = other; /* unknown xorb */
    assert_int_equal(xet_shard_verify_file(&bad, chunks_of, NULL, true, NULL, &e), -1);
    assert_int_equal(e.status, 400);
    RESET();
    assert_int_equal(xet_file_hash(verify_chunks + 2, 1, &bad.file_hash), 0); /* another file */
    assert_int_equal(xet_shard_verify_file(&bad, chunks_of, NULL, true, NULL, &e), -1);
#undef RESET

    /* an empty file: no terms, the all-zero hash */
    xet_shard_file empty = {0};
    assert_int_equal(xet_shard_verify_file(&empty, chunks_of, NULL, true, &size, &e), 0);
    assert_int_equal(size, 0);
    empty.file_hash = other;
    assert_int_equal(xet_shard_verify_file(&empty, chunks_of, NULL, true, &size, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_round_trip),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_verify_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
