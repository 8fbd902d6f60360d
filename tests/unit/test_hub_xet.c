/* Unit tests for src/hub/xet.c below the HTTP layer: CAS access tokens (forged, expired,
 * foreign ones refused) and the shard check that decides what an upload registers (nothing
 * unless every file checks out: xorbs uploaded, verification entries, the file hash, and the
 * SHA-256 the shard claims). */
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
static db_repo repo_row;

static int setup(void **state)
{
    strcpy(dir, "/tmp/hearth-hubxet-XXXXXX");
    assert_non_null(mkdtemp(dir));
    hub_config config = {.data_dir = dir};
    err e = ERR_INIT;
    h = hub_open(&config, &e);
    assert_non_null(h);
    db_user u;
    assert_int_equal(db_user_create(h->db, "alice", "", "", false, &u, &e), 0);
    memset(&repo_row, 0, sizeof repo_row);
    strcpy(repo_row.type, "model");
    strcpy(repo_row.ns, "alice");
    strcpy(repo_row.name, "x");
    strcpy(repo_row.uid, "0123456789abcdef01234567");
    repo_row.owner_id = u.id;
    assert_int_equal(db_repo_create(h->db, &repo_row, &e), 0);
    return 0;
}

static int teardown(void **state)
{
    hub_close(h);
    db_repo_free(&repo_row);
    path_remove_tree(dir);
    return 0;
}

static void test_tokens(void **state)
{
    buf t = BUF_INIT;
    hub_xet_grant g;
    hub_grant issued = {.repo_id = 42, .uid = "0123456789abcdef01234567", .user_id = 7,
                        .token_id = 9};
    hub_xet_token_make(h, HUB_XET_WRITE, &issued, 2000, &t);
    assert_true(text_starts_with(t.data, "xet2_w_42_0123456789abcdef01234567_7_9_2000_"));
    assert_int_equal(hub_xet_token_check(h, t.data, 1999, &g), 0);
    assert_int_equal(g.scope, HUB_XET_WRITE);
    assert_int_equal(g.grant.repo_id, 42);
    assert_string_equal(g.grant.uid, "0123456789abcdef01234567");
    assert_int_equal(g.grant.user_id, 7);
    assert_int_equal(g.grant.token_id, 9);
    assert_int_equal(hub_xet_token_check(h, t.data, 2001, &g), -1); /* expired */
    char *forged = strdup(t.data);
    forged[5] = 'r'; /* a write token turned into a read token: the mac no longer matches */
    assert_int_equal(hub_xet_token_check(h, forged, 1000, &g), -1);
    forged[5] = 'p';
    assert_int_equal(hub_xet_token_check(h, forged, 1000, &g), -1);
    strcpy(forged, t.data);
    forged[7] = '3'; /* another repo */
    assert_int_equal(hub_xet_token_check(h, forged, 1000, &g), -1);
    strcpy(forged, t.data);
    forged[35] = '8'; /* another caller: user 8 */
    assert_int_equal(hub_xet_token_check(h, forged, 1000, &g), -1);
    strcpy(forged, t.data);
    forged[37] = '1'; /* another Hub token */
    assert_int_equal(hub_xet_token_check(h, forged, 1000, &g), -1);
    strcpy(forged, t.data);
    forged[strlen(forged) - 1] ^= 1;
    assert_int_equal(hub_xet_token_check(h, forged, 1000, &g), -1);
    const char *bad[] = {"", "xet2_", "hf_abcdef", "xet2_w_42_0123456789abcdef01234567_7_9_2000_",
                         "xet2_x_42_0123456789abcdef01234567_7_9_2000_00",
                         /* the format before callers were bound: refused, clients ask again */
                         "xet1_w_42_0123456789abcdef01234567_2000_"
                         "0000000000000000000000000000000000000000000000000000000000000000"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_int_equal(hub_xet_token_check(h, bad[i], 1000, &g), -1);
    free(forged);
    buf_free(&t);
    /* a token from another server (another secret) */
    hub_grant anonymous = {.repo_id = 42, .uid = "0123456789abcdef01234567"};
    hub_xet_token_make(h, HUB_XET_READ, &anonymous, 2000, &t);
    h->secret[0] ^= 1;
    assert_int_equal(hub_xet_token_check(h, t.data, 1000, &g), -1);
    h->secret[0] ^= 1;
    assert_int_equal(hub_xet_token_check(h, t.data, 1000, &g), 0);
    assert_int_equal(g.scope, HUB_XET_READ);
    assert_int_equal(g.grant.user_id, 0);
    buf_free(&t);
}

/* Deterministic pseudo-random bytes (xorshift). */
static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

enum { CHUNKS = 3, CHUNK = 40000 };

/* A client's upload: one xorb of three chunks and the shard describing the file. */
typedef struct upload {
    uint8_t data[CHUNKS * CHUNK];
    xet_chunk chunks[CHUNKS];
    xet_hash xorb, file, verification;
    buf xorb_bytes;
    char sha[65];
} upload;

static void make_upload(upload *u, uint64_t seed)
{
    err e = ERR_INIT;
    fill(u->data, sizeof u->data, seed);
    u->xorb_bytes = (buf)BUF_INIT;
    xet_hash hashes[CHUNKS];
    for (int i = 0; i < CHUNKS; i++) {
        assert_true(xet_xorb_append_chunk(&u->xorb_bytes, u->data + i * CHUNK, CHUNK,
                                          XET_COMPRESSION_AUTO, NULL, &e) > 0);
        xet_chunk_hash(u->data + i * CHUNK, CHUNK, &u->chunks[i].hash);
        u->chunks[i].length = CHUNK;
        hashes[i] = u->chunks[i].hash;
    }
    xet_xorb_hash(u->chunks, CHUNKS, &u->xorb);
    xet_file_hash(u->chunks, CHUNKS, &u->file);
    xet_verification_hash(hashes, CHUNKS, &u->verification);
    hash_sha256_hex(u->data, sizeof u->data, u->sha);
}

/* Serializes the upload's shard; the caller may damage fields first through the hooks. */
static void make_shard(const upload *u, const xet_hash *file_hash, const xet_hash *verification,
                       const char *sha_hex, bool with_sha, buf *out)
{
    err e = ERR_INIT;
    xet_shard_term term = {.xorb_hash = u->xorb, .unpacked_bytes = CHUNKS * CHUNK,
                           .chunk_start = 0, .chunk_end = CHUNKS};
    xet_hash ver = *verification;
    xet_shard_file f = {.file_hash = *file_hash,
                        .flags = XET_SHARD_FILE_WITH_VERIFICATION |
                                 (with_sha ? XET_SHARD_FILE_WITH_METADATA_EXT : 0),
                        .n_terms = 1, .terms = &term, .verification = &ver,
                        .has_sha256 = with_sha};
    if (with_sha)
        assert_int_equal(hex_decode(sha_hex, f.sha256, 32), 0);
    xet_shard_chunk chunks[CHUNKS];
    for (int i = 0; i < CHUNKS; i++)
        chunks[i] = (xet_shard_chunk){.hash = u->chunks[i].hash, .byte_offset = (uint32_t)(i * CHUNK),
                                      .unpacked_len = CHUNK};
    xet_shard_xorb x = {.xorb_hash = u->xorb, .raw_bytes = CHUNKS * CHUNK,
                        .serialized_bytes = (uint32_t)u->xorb_bytes.len, .n_chunks = CHUNKS,
                        .chunks = chunks};
    xet_shard s = {.files = &f, .n_files = 1, .xorbs = &x, .n_xorbs = 1};
    assert_int_equal(xet_shard_serialize(&s, NULL, out, &e), 0);
}

static int apply(const buf *shard, hub_xet_grant *g, size_t *registered, err *e)
{
    size_t n_files = 0;
    err_clear(e);
    return hub_xet_shard_apply(h, g, (const uint8_t *)shard->data, shard->len, registered,
                               &n_files, e);
}

static bool linked(const char *oid)
{
    err e = ERR_INIT;
    return db_repo_object_has(h->db, repo_row.id, oid, &e) == 0;
}

static void test_shard_apply(void **state)
{
    upload *u = calloc(1, sizeof *u), *other = calloc(1, sizeof *other);
    assert_non_null(u);
    assert_non_null(other);
    make_upload(u, 1);
    make_upload(other, 2);
    hub_xet_grant g = {.scope = HUB_XET_WRITE, .grant.repo_id = repo_row.id, .exp = 1};
    strcpy(g.grant.uid, repo_row.uid);
    err e = ERR_INIT;
    size_t registered = 0;
    buf shard = BUF_INIT;

    /* the xorb is not uploaded yet */
    make_shard(u, &u->file, &u->verification, u->sha, true, &shard);
    assert_int_equal(apply(&shard, &g, &registered, &e), -1);
    assert_int_equal(e.status, 400);
    assert_false(linked(u->sha));

    bool inserted;
    assert_int_equal(store_xorb_put(h->store, &u->xorb, (uint8_t *)u->xorb_bytes.data,
                                    u->xorb_bytes.len, &inserted, &e), 0);

    struct {
        const char *what;
        xet_hash file, verification;
        const char *sha;
        bool with_sha;
    } bad[] = {
        {"wrong file hash", other->file, u->verification, u->sha, true},
        {"wrong verification hash", u->file, other->verification, u->sha, true},
        {"no sha256", u->file, u->verification, u->sha, false},
        {"sha256 of other bytes", u->file, u->verification, other->sha, true},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        buf_reset(&shard);
        make_shard(u, &bad[i].file, &bad[i].verification, bad[i].sha, bad[i].with_sha, &shard);
        assert_int_equal(apply(&shard, &g, &registered, &e), -1);
        assert_int_equal(e.status, 400);
        assert_string_equal(e.code, "BadShard");
        int64_t size;
        assert_int_equal(store_stat(h->store, bad[i].sha, &size, &e), 1);
        assert_false(linked(bad[i].sha));
    }

    /* the real shard: registered, linked, readable as an ordinary stored file */
    buf_reset(&shard);
    make_shard(u, &u->file, &u->verification, u->sha, true, &shard);
    assert_int_equal(apply(&shard, &g, &registered, &e), 0);
    assert_int_equal(registered, 1);
    assert_true(linked(u->sha));
    store_reader *r = store_reader_open(h->store, u->sha, &e);
    assert_non_null(r);
    uint8_t *back = malloc(sizeof u->data);
    assert_int_equal(store_reader_pread(r, back, sizeof u->data, 0), (ssize_t)sizeof u->data);
    assert_memory_equal(back, u->data, sizeof u->data);
    free(back);
    store_reader_close(r);
    xet_hash fh;
    assert_int_equal(store_file_xet_hash(h->store, u->sha, &fh, &e), 0);
    assert_true(xet_hash_equal(&fh, &u->file));
    /* again: nothing new */
    assert_int_equal(apply(&shard, &g, &registered, &e), 0);
    assert_int_equal(registered, 0);

    /* an oid already stored may only be claimed by its own content */
    char oid[65];
    store_writer *w = store_writer_new(h->store, &e);
    assert_non_null(w);
    assert_int_equal(store_writer_write(w, other->data, sizeof other->data, &e), 0);
    assert_int_equal(store_writer_finish(w, NULL, -1, oid, &e), 0);
    buf_reset(&shard);
    make_shard(u, &u->file, &u->verification, other->sha, true, &shard);
    assert_int_equal(apply(&shard, &g, &registered, &e), -1);
    assert_int_equal(e.status, 400);
    assert_false(linked(other->sha));

    buf_reset(&shard);
    assert_int_equal(apply(&shard, &g, &registered, &e), -1); /* empty body */
    buf_free(&shard);
    buf_free(&u->xorb_bytes);
    buf_free(&other->xorb_bytes);
    free(u);
    free(other);
}

static bool linked_to(int64_t repo_id, const char *oid)
{
    err e = ERR_INIT;
    return db_repo_object_has(h->db, repo_id, oid, &e) == 0;
}

/* A shard of one file made of the given terms, with the given verification entries. */
static void make_claim(const xet_hash *file_hash, const xet_shard_term *terms,
                       const xet_hash *verification, size_t n, const char *sha_hex, buf *out)
{
    err e = ERR_INIT;
    xet_shard_file f = {.file_hash = *file_hash,
                        .flags = (verification ? XET_SHARD_FILE_WITH_VERIFICATION : 0) |
                                 XET_SHARD_FILE_WITH_METADATA_EXT,
                        .n_terms = n, .terms = (xet_shard_term *)terms,
                        .verification = (xet_hash *)verification, .has_sha256 = true};
    assert_int_equal(hex_decode(sha_hex, f.sha256, 32), 0);
    xet_shard s = {.files = &f, .n_files = 1};
    assert_int_equal(xet_shard_serialize(&s, NULL, out, &e), 0);
}

/* Someone who knows a victim's SHA-256, Xet file hash, xorb hash and one chunk hash (all a
 * dedup reply or a listing could have shown) but not the other chunk hashes cannot link the
 * file to their own repo, and no error tells them more than they sent. */
static void test_shard_claims_need_possession(void **state)
{
    upload *victim = calloc(1, sizeof *victim), *mine = calloc(1, sizeof *mine);
    assert_non_null(victim);
    assert_non_null(mine);
    make_upload(victim, 3);
    make_upload(mine, 4);
    err e = ERR_INIT;
    size_t registered = 0;
    bool inserted;
    buf shard = BUF_INIT;

    /* the victim's file, registered through Xet in the victim's repo */
    db_repo other_row = repo_row;
    strcpy(other_row.name, "victim");
    strcpy(other_row.uid, "fedcba9876543210fedcba98");
    assert_int_equal(db_repo_create(h->db, &other_row, &e), 0);
    hub_xet_grant victim_grant = {.scope = HUB_XET_WRITE, .grant.repo_id = other_row.id, .exp = 1};
    strcpy(victim_grant.grant.uid, other_row.uid);
    hub_xet_grant g = {.scope = HUB_XET_WRITE, .grant.repo_id = repo_row.id, .exp = 1};
    strcpy(g.grant.uid, repo_row.uid);
    assert_int_equal(store_xorb_put(h->store, &victim->xorb, (uint8_t *)victim->xorb_bytes.data,
                                    victim->xorb_bytes.len, &inserted, &e), 0);
    make_shard(victim, &victim->file, &victim->verification, victim->sha, true, &shard);
    assert_int_equal(apply(&shard, &victim_grant, &registered, &e), 0);
    assert_int_equal(registered, 1);

    /* the whole file by its hashes, with guessed or missing verification entries */
    xet_shard_term whole = {.xorb_hash = victim->xorb, .unpacked_bytes = CHUNKS * CHUNK,
                            .chunk_start = 0, .chunk_end = CHUNKS};
    xet_hash guessed = victim->file;
    buf_reset(&shard);
    make_claim(&victim->file, &whole, &guessed, 1, victim->sha, &shard);
    assert_int_equal(apply(&shard, &g, &registered, &e), -1);
    assert_int_equal(e.status, 400);
    buf_reset(&shard);
    make_claim(&victim->file, &whole, NULL, 1, victim->sha, &shard);
    assert_int_equal(apply(&shard, &g, &registered, &e), -1);
    assert_false(linked(victim->sha));

    /* a one-chunk file of the chunk they know: it verifies, but the SHA-256 they must name
     * is that chunk's, which they do not have, and the error does not tell it */
    xet_shard_term one = {.xorb_hash = victim->xorb, .unpacked_bytes = CHUNK, .chunk_start = 0,
                          .chunk_end = 1};
    xet_hash one_file, one_verification;
    xet_file_hash(victim->chunks, 1, &one_file);
    xet_verification_hash(&victim->chunks[0].hash, 1, &one_verification);
    char chunk_sha[65];
    hash_sha256_hex(victim->data, CHUNK, chunk_sha);
    buf_reset(&shard);
    make_claim(&one_file, &one, &one_verification, 1, victim->sha, &shard);
    assert_int_equal(apply(&shard, &g, &registered, &e), -1);
    assert_string_equal(e.code, "BadShard");
    assert_null(strstr(e.message, chunk_sha));
    char vfile[XET_HASH_STRING_LEN + 1], vxorb[XET_HASH_STRING_LEN + 1];
    xet_hash_to_string(&victim->file, vfile);
    xet_hash_to_string(&victim->xorb, vxorb);
    assert_null(strstr(e.message, vfile));
    assert_false(linked(victim->sha));

    /* their own bytes under the victim's oid, or under an oid nobody stored: the same answer,
     * so it does not tell whether the victim's file exists (nor its size) */
    assert_int_equal(store_xorb_put(h->store, &mine->xorb, (uint8_t *)mine->xorb_bytes.data,
                                    mine->xorb_bytes.len, &inserted, &e), 0);
    char never[65], want[400];
    hash_sha256_hex("nobody stored this", 18, never);
    const char *claims[] = {victim->sha, never};
    for (size_t i = 0; i < ARRAY_LEN(claims); i++) {
        buf_reset(&shard);
        make_shard(mine, &mine->file, &mine->verification, claims[i], true, &shard);
        assert_int_equal(apply(&shard, &g, &registered, &e), -1);
        snprintf(want, sizeof want, "the file's content does not hash to the SHA-256 the shard "
                                    "names (%s)", claims[i]);
        assert_string_equal(e.message, want);
        assert_null(strstr(e.message, mine->sha));
        assert_false(linked(claims[i]));
    }
    /* a stored oid of another size answers the same too */
    char small_oid[65];
    store_writer *w = store_writer_new(h->store, &e);
    assert_non_null(w);
    assert_int_equal(store_writer_write(w, "a small file", 12, &e), 0);
    assert_int_equal(store_writer_finish(w, NULL, -1, small_oid, &e), 0);
    buf_reset(&shard);
    make_shard(mine, &mine->file, &mine->verification, small_oid, true, &shard);
    assert_int_equal(apply(&shard, &g, &registered, &e), -1);
    snprintf(want, sizeof want, "the file's content does not hash to the SHA-256 the shard "
                                "names (%s)", small_oid);
    assert_string_equal(e.message, want);

    /* someone who has the victim's bytes (all chunk hashes) may link it; the count says new to
     * this repo, not new to the store */
    buf_reset(&shard);
    make_shard(victim, &victim->file, &victim->verification, victim->sha, true, &shard);
    assert_int_equal(apply(&shard, &g, &registered, &e), 0);
    assert_int_equal(registered, 1);
    assert_true(linked(victim->sha));
    assert_true(linked_to(other_row.id, victim->sha));

    buf_free(&shard);
    buf_free(&victim->xorb_bytes);
    buf_free(&mine->xorb_bytes);
    db_repo_free(&other_row);
    free(victim);
    free(mine);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shard_apply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shard_claims_need_possession, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
