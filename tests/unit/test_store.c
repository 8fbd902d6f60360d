/* Unit tests for src/store, the chunk-level dedup store: what is acknowledged is readable byte
 * for byte; what does not match its announced hash or size leaves nothing behind; near-copies
 * share their chunks; gc reclaims what no file uses; damage is detected, never served. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
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

/* The same in a tmpfs, where packs cannot be written with O_DIRECT (the page cache path). */
static int setup_tmpfs(void **state)
{
    if (access("/dev/shm", W_OK) != 0)
        return setup(state);
    strcpy(dir, "/dev/shm/hearth-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    path_remove_tree(dir);
    return 0;
}

static size_t files_in(const char *sub)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    DIR *d = opendir(path);
    size_t n = 0;
    for (struct dirent *ent; d && (ent = readdir(d));)
        n += ent->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
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

static void put(store *s, const uint8_t *data, size_t n, char oid[65])
{
    err e = ERR_INIT;
    store_writer *w = store_writer_new(s, &e);
    assert_non_null(w);
    store_writer_expect(w, (int64_t)n); /* as uploads do: the last 16 MiB in smaller batches */
    for (size_t off = 0; off < n; off += 100000) /* odd-sized writes */
        assert_int_equal(store_writer_write(w, data + off, n - off < 100000 ? n - off : 100000, &e), 0);
    assert_int_equal(store_writer_finish(w, NULL, (int64_t)n, oid, &e), 0);
}

static void assert_reads_back(store *s, const char *oid, const uint8_t *data, size_t n)
{
    err e = ERR_INIT;
    store_reader *r = store_reader_open(s, oid, &e);
    assert_non_null(r);
    assert_int_equal(store_reader_size(r), n);
    uint8_t *back = malloc(n + 1);
    size_t pos = 0;
    while (pos < n) {
        ssize_t got = store_reader_pread(r, back + pos, 77777, (int64_t)pos);
        assert_true(got > 0);
        pos += (size_t)got;
    }
    assert_memory_equal(back, data, n);
    /* a range that starts inside a chunk */
    if (n > 300000) {
        assert_int_equal(store_reader_pread(r, back, 1000, 200001), 1000);
        assert_memory_equal(back, data + 200001, 1000);
    }
    free(back);
    store_reader_close(r);
}

static void test_put_and_read(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    assert_non_null(s);
    size_t n = 3 << 20;
    uint8_t *data = malloc(n);
    fill(data, n, 1);
    memset(data + 1000000, 0, 300000); /* a compressible stretch */
    char oid[65], want[65];
    hash_sha256_hex(data, n, want);
    put(s, data, n, oid);
    assert_string_equal(oid, want);
    int64_t size = 0;
    assert_int_equal(store_stat(s, want, &size, &e), 0);
    assert_int_equal(size, n);
    assert_reads_back(s, oid, data, n);
    store_stats st;
    assert_int_equal(store_get_stats(s, &st, &e), 0);
    assert_true(st.stored_bytes < (int64_t)n); /* the zeros compressed */
    /* the same content again adds nothing */
    put(s, data, n, oid);
    store_stats st2;
    store_get_stats(s, &st2, &e);
    assert_int_equal(st2.stored_bytes, st.stored_bytes);
    assert_int_equal(files_in("tmp"), 0);
    /* an empty file */
    put(s, data, 0, oid);
    assert_string_equal(oid, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_reads_back(s, oid, data, 0);
    free(data);
    store_close(s);
}

/* A file over several packs and many pack-writer buffers, with a tail that is no whole number
 * of disk blocks: every byte reads back, and the packs are exactly as long as their records. */
static void test_large_file_across_packs(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    assert_non_null(s);
    size_t n = (70u << 20) + 12345;
    uint8_t *data = malloc(n);
    fill(data, n, 7);
    char oid[65], want[65];
    hash_sha256_hex(data, n, want);
    put(s, data, n, oid);
    assert_string_equal(oid, want);
    assert_reads_back(s, oid, data, n);
    store_stats st;
    assert_int_equal(store_get_stats(s, &st, &e), 0);
    assert_int_equal(st.packs, 2);
    assert_true(st.stored_bytes > (int64_t)n && st.stored_bytes < (int64_t)n + (1 << 20));
    assert_int_equal(files_in("tmp"), 0);
    assert_int_equal(store_fsck(s, NULL, NULL, &e), 0);
    free(data);
    store_close(s);
}

/* Long sequential reads (a download) are checked ahead by a second thread: the bytes read back
 * are the same, and a record damaged ahead of the reader is still refused, with every byte
 * served before it intact. */
static void test_download_checked_ahead(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    assert_non_null(s);
    size_t n = 48u << 20, step = 1u << 20;
    uint8_t *data = malloc(n), *back = malloc(n);
    fill(data, n, 11);
    char oid[65];
    put(s, data, n, oid);
    for (int pass = 0; pass < 2; pass++) {
        store_reader *r = store_reader_open(s, oid, &e);
        assert_non_null(r);
        size_t pos = 0;
        ssize_t got = 0;
        while (pos < n && (got = store_reader_pread(r, back + pos, step, (int64_t)pos)) > 0)
            pos += (size_t)got;
        store_reader_close(r);
        assert_memory_equal(back, data, pos); /* never a wrong byte */
        if (pass == 0) {
            assert_int_equal(pos, n);
            /* damage a byte 40 MiB into the (single) pack, then read it all again */
            char packs[128], victim[400];
            snprintf(packs, sizeof packs, "%s/packs", dir);
            DIR *d = opendir(packs);
            struct dirent *ent;
            while ((ent = readdir(d)) && ent->d_name[0] == '.')
                ;
            snprintf(victim, sizeof victim, "%s/%s", packs, ent->d_name);
            closedir(d);
            int fd = open(victim, O_RDWR);
            uint8_t byte;
            assert_int_equal(pread(fd, &byte, 1, 40 << 20), 1);
            byte ^= 0x01;
            assert_int_equal(pwrite(fd, &byte, 1, 40 << 20), 1);
            close(fd);
        } else {
            assert_true(got < 0);
            assert_true(pos < (40u << 20) && pos > (38u << 20));
        }
    }
    free(data);
    free(back);
    store_close(s);
}

static bool only_b(void *ctx, const char *oid) { return !strcmp(oid, (const char *)ctx); }

static void test_gc_and_fsck(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    size_t n = 6 << 20;
    uint8_t *a = malloc(n), *b = malloc(n);
    fill(a, n, 3);
    memcpy(b, a, n);
    fill(b + 2000000, 600000, 5);
    char oa[65], ob[65];
    put(s, a, n, oa);
    put(s, b, n, ob);
    store_stats before, after;
    store_get_stats(s, &before, &e);
    store_gc_result gc;
    assert_int_equal(store_gc(s, only_b, ob, 0, 0.05, &gc, &e), 0);
    assert_int_equal(gc.files_removed, 1);
    assert_true(gc.bytes_reclaimed > 500000);
    store_get_stats(s, &after, &e);
    assert_true(after.stored_bytes < before.stored_bytes);
    assert_int_equal(store_stat(s, oa, NULL, &e), 1);
    assert_reads_back(s, ob, b, n);
    assert_int_equal(store_fsck(s, NULL, NULL, &e), 0);

    /* damage one byte of a pack: fsck reports it, a read fails instead of lying */
    char packs[128];
    snprintf(packs, sizeof packs, "%s/packs", dir);
    DIR *d = opendir(packs);
    struct dirent *ent;
    while ((ent = readdir(d)) && ent->d_name[0] == '.')
        ;
    char victim[400];
    snprintf(victim, sizeof victim, "%s/%s", packs, ent->d_name);
    closedir(d);
    int fd = open(victim, O_RDWR);
    uint8_t byte;
    assert_int_equal(pread(fd, &byte, 1, 5000), 1);
    byte ^= 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, 5000), 1);
    close(fd);
    assert_true(store_fsck(s, NULL, NULL, &e) > 0);
    store_reader *r = store_reader_open(s, ob, &e);
    uint8_t *back = malloc(n);
    ssize_t got = 0, total = 0;
    while (total < (ssize_t)n && (got = store_reader_pread(r, back + total, n - total, total)) > 0)
        total += got;
    assert_true(got < 0); /* the damaged chunk is refused, not served */
    store_reader_close(r);
    free(back);
    free(a);
    free(b);
    store_close(s);
}

static void test_mismatch_leaves_nothing(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    uint8_t data[200000];
    fill(data, sizeof data, 11);
    store_writer *w = store_writer_new(s, &e);
    store_writer_write(w, data, sizeof data, &e);
    assert_int_equal(store_writer_finish(w, wrong, sizeof data, NULL, &e), -1);
    assert_int_equal(e.status, 400);
    assert_int_equal(store_stat(s, wrong, NULL, &e), 1);
    w = store_writer_new(s, &e);
    store_writer_write(w, data, sizeof data, &e);
    err_clear(&e);
    assert_int_equal(store_writer_finish(w, NULL, 6, NULL, &e), -1);
    assert_non_null(strstr(e.message, "size"));
    w = store_writer_new(s, &e);
    store_writer_write(w, data, sizeof data, &e);
    store_writer_abort(w);
    assert_int_equal(files_in("tmp"), 0);
    assert_int_equal(files_in("packs"), 0);
    assert_null(store_reader_open(s, wrong, &e));
    assert_int_equal(e.status, 404);
    assert_int_equal(store_stat(s, "../../etc/passwd", NULL, &e), -1);
    store_close(s);
}

/* An upload that fails after filling a pack (wrong hash, or the client gone) leaves nothing
 * behind; one that fails while another upload of the same bytes finishes leaves that one
 * whole. */
static void test_failed_large_upload_leaves_nothing(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    assert_non_null(s);
    size_t n = (66u << 20) + 4321; /* one full pack and a second one begun */
    uint8_t *data = malloc(n);
    fill(data, n, 21);
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    store_writer *w = store_writer_new(s, &e);
    assert_int_equal(store_writer_write(w, data, n, &e), 0);
    assert_int_equal(store_writer_finish(w, wrong, (int64_t)n, NULL, &e), -1);
    assert_int_equal(e.status, 400);
    store_stats st;
    assert_int_equal(store_get_stats(s, &st, &e), 0);
    assert_int_equal(st.packs, 0);
    assert_int_equal(st.stored_bytes, 0);
    assert_int_equal(files_in("packs"), 0);
    assert_int_equal(files_in("tmp"), 0);
    w = store_writer_new(s, &e);
    assert_int_equal(store_writer_write(w, data, n, &e), 0);
    store_writer_abort(w);
    assert_int_equal(store_get_stats(s, &st, &e), 0);
    assert_int_equal(st.packs, 0);
    assert_int_equal(files_in("packs"), 0);

    /* while one upload is under way past its first pack, a second one of the same bytes
     * finishes; the first then fails */
    store_writer *first = store_writer_new(s, &e);
    assert_int_equal(store_writer_write(first, data, n, &e), 0);
    char oid[65];
    put(s, data, n, oid);
    assert_int_equal(store_writer_finish(first, wrong, (int64_t)n, NULL, &e), -1);
    assert_reads_back(s, oid, data, n);
    assert_int_equal(store_fsck(s, NULL, NULL, &e), 0);
    free(data);
    store_close(s);
}

static void test_xorb_roundtrip(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    /* a client's xorb of three chunks, one of them already held by an LFS upload */
    uint8_t c[3][50000];
    for (int i = 0; i < 3; i++)
        fill(c[i], sizeof c[i], 100 + (uint64_t)i);
    char oid[65];
    put(s, c[1], sizeof c[1], oid);
    buf x = BUF_INIT;
    xet_chunk chunks[3];
    for (int i = 0; i < 3; i++) {
        assert_true(xet_xorb_append_chunk(&x, c[i], sizeof c[i], XET_COMPRESSION_NONE, NULL, &e) > 0);
        xet_chunk_hash(c[i], sizeof c[i], &chunks[i].hash);
        chunks[i].length = sizeof c[i];
    }
    xet_hash xh, fh;
    xet_xorb_hash(chunks, 3, &xh);
    xet_file_hash(chunks, 3, &fh);
    bool inserted = false;
    xet_hash bad = xh;
    bad.bytes[0] ^= 1;
    assert_int_equal(store_xorb_put(s, &bad, (uint8_t *)x.data, x.len, &inserted, &e), -1);
    assert_string_equal(e.code, "BadXorb");
    assert_int_equal(store_xorb_put(s, &xh, (uint8_t *)x.data, x.len, &inserted, &e), 0);
    assert_true(inserted);
    assert_int_equal(store_xorb_stat(s, &xh, NULL, &e), 0);
    xet_chunk *got = NULL;
    size_t ngot = 0;
    assert_int_equal(store_xorb_chunks(s, &xh, &got, &ngot, &e), 0);
    assert_int_equal(ngot, 3);
    free(got);
    uint8_t whole[150000];
    for (int i = 0; i < 3; i++)
        memcpy(whole + i * 50000, c[i], 50000);
    char sha[65];
    hash_sha256_hex(whole, sizeof whole, sha);
    xet_shard_term term = {.xorb_hash = xh, .unpacked_bytes = sizeof whole, .chunk_start = 0,
                           .chunk_end = 3};
    xet_hash hashes[3] = {chunks[0].hash, chunks[1].hash, chunks[2].hash};
    xet_hash verification;
    xet_verification_hash(hashes, 3, &verification);
    xet_shard_file file = {.file_hash = fh, .flags = XET_SHARD_FILE_WITH_VERIFICATION,
                           .n_terms = 1, .terms = &term, .verification = &verification,
                           .has_sha256 = true};
    hex_decode(sha, file.sha256, 32);
    xet_shard upload = {.files = &file, .n_files = 1};
    uint64_t size = 0;
    /* The checks the store makes itself: a claimed SHA-256 that is not the content's, a
     * verification entry that is not over the real chunk hashes, a term outside its xorb. */
    file.sha256[0] ^= 1;
    assert_int_equal(store_shard_register(s, &upload, &size, &e), -1);
    assert_string_equal(e.code, "BadShard");
    assert_int_equal(store_stat(s, sha, NULL, &e), 1);
    file.sha256[0] ^= 1;
    verification.bytes[0] ^= 1;
    assert_int_equal(store_shard_register(s, &upload, &size, &e), -1);
    assert_string_equal(e.code, "BadShard");
    verification.bytes[0] ^= 1;
    term.chunk_end = 4;
    assert_int_equal(store_shard_register(s, &upload, &size, &e), -1);
    assert_string_equal(e.code, "BadShard");
    term.chunk_end = 3;
    assert_int_equal(store_stat(s, sha, NULL, &e), 1);
    assert_int_equal(store_shard_register(s, &upload, &size, &e), 0);
    assert_int_equal(size, sizeof whole);
    /* Again: the oid is stored under the same Xet hash and size, nothing to read. */
    assert_int_equal(store_shard_register(s, &upload, &size, &e), 0);
    assert_reads_back(s, sha, whole, sizeof whole);
    xet_hash back;
    assert_int_equal(store_file_xet_hash(s, sha, &back, &e), 0);
    assert_true(xet_hash_equal(&back, &fh));
    store_reconstruction rec;
    assert_int_equal(store_reconstruct(s, &fh, 60000, 70000, &rec, &e), 0);
    assert_int_equal(rec.n, 1);
    assert_int_equal(rec.offset_into_first, 10000);
    assert_int_equal(rec.terms[0].unpacked_len, 50000);
    int fd;
    int64_t off;
    assert_int_equal(store_xorb_region(s, &rec.terms[0].xorb, rec.terms[0].byte_start,
                                       rec.terms[0].byte_end, &fd, &off, &e), 0);
    close(fd);
    store_reconstruction_free(&rec);
    assert_int_equal(store_reconstruct(s, &fh, 150000, 150001, &rec, &e), -1);
    assert_int_equal(e.status, 416);

    /* Global dedup: the pack that holds chunk 0 (the client xorb's new chunks, 0 and 2), its
     * chunk hashes keyed with the caller's key, none in clear, no file section. */
    uint8_t key[32];
    memset(key, 7, sizeof key);
    buf shard = BUF_INIT;
    assert_int_equal(store_chunk_shard(s, &chunks[0].hash, key, 1234, &shard, &e), 0);
    xet_shard parsed;
    assert_int_equal(xet_shard_parse((uint8_t *)shard.data, shard.len, &parsed, &e), 0);
    assert_int_equal(parsed.n_files, 0);
    assert_int_equal(parsed.n_xorbs, 1);
    assert_true(parsed.has_footer);
    assert_memory_equal(parsed.footer.chunk_hash_hmac_key, key, sizeof key);
    assert_int_equal(parsed.footer.key_expiry, 1234);
    const xet_shard_xorb *px = &parsed.xorbs[0];
    assert_int_equal(px->n_chunks, 2);
    for (int i = 0; i < 2; i++) {
        xet_hash keyed;
        xet_hash_hmac(&chunks[2 * i].hash, key, &keyed);
        assert_true(xet_hash_equal(&px->chunks[i].hash, &keyed));
        assert_int_equal(px->chunks[i].unpacked_len, 50000);
        assert_int_equal(px->chunks[i].flags, 0);
    }
    for (int i = 0; i < 3; i++)
        assert_null(memmem(shard.data, shard.len, chunks[i].hash.bytes, XET_HASH_LEN));
    xet_shard_free(&parsed);
    static const uint8_t zero_key[32];
    buf_reset(&shard);
    assert_int_equal(store_chunk_shard(s, &chunks[0].hash, zero_key, 1234, &shard, &e), -1);
    xet_hash unknown = chunks[0].hash;
    unknown.bytes[0] ^= 1;
    assert_int_equal(store_chunk_shard(s, &unknown, key, 1234, &shard, &e), 1);
    buf_free(&shard);

    buf_free(&x);
    store_close(s);
}

/* A file written in pieces, each possibly sent twice (multipart parts): a piece cut off and
 * rewound leaves no trace in the file, whether it stopped inside a chunk or many batches in. */
static void test_writer_rewind(void **state)
{
    err e = ERR_INIT;
    store *s = store_open(dir, true, &e);
    size_t n = 24u << 20, piece = 8u << 20;
    uint8_t *data = malloc(n), *junk = malloc(piece);
    fill(data, n, 7);
    fill(junk, piece, 8);
    char want[65], oid[65];
    hash_sha256_hex(data, n, want);
    store_writer *w = store_writer_new(s, &e);
    store_writer_expect(w, (int64_t)n);
    for (size_t at = 0; at < n; at += piece) {
        assert_int_equal(store_writer_mark(w, &e), 0);
        /* first a failed attempt: other bytes, cut off at an odd length */
        size_t cut = at == 0 ? 1000 : piece - 12345;
        assert_int_equal(store_writer_write(w, junk, cut, &e), 0);
        assert_int_equal(store_writer_rewind(w, &e), 0);
        /* then the piece itself, in two writes */
        assert_int_equal(store_writer_write(w, data + at, 77777, &e), 0);
        assert_int_equal(store_writer_write(w, data + at + 77777, piece - 77777, &e), 0);
    }
    assert_int_equal(store_writer_size(w), (int64_t)n);
    assert_int_equal(store_writer_finish(w, want, (int64_t)n, oid, &e), 0);
    assert_reads_back(s, want, data, n);
    /* the same bytes in one go give the same Xet hash: chunking continued across the pieces */
    xet_hash pieces, whole;
    assert_int_equal(store_file_xet_hash(s, want, &pieces, &e), 0);
    xet_chunker ck;
    xet_chunker_init(&ck, XET_CHUNKER_HF_XET);
    xet_chunk *cs = malloc((n / 8192 + 2) * sizeof *cs);
    size_t ncs = 0, start = 0;
    for (size_t at = 0; at < n;) {
        bool ends = false;
        at += xet_chunker_next(&ck, data + at, n - at, &ends);
        if (ends || at == n) {
            xet_chunk_hash(data + start, at - start, &cs[ncs].hash);
            cs[ncs++].length = at - start;
            start = at;
        }
    }
    assert_int_equal(xet_file_hash(cs, ncs, &whole), 0);
    assert_true(xet_hash_equal(&pieces, &whole));
    free(cs);
    assert_int_equal(store_fsck(s, NULL, NULL, &e), 0);
    free(data);
    free(junk);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_and_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_file_across_packs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_file_across_packs, setup_tmpfs, teardown),
        cmocka_unit_test_setup_teardown(test_download_checked_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_and_fsck, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatch_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_large_upload_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xorb_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_rewind, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
