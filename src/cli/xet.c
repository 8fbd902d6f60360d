/* xet — `hearth xet ...`: developer commands over the Xet format library (src/xet), which
 * reads and prints nothing itself: the files are read and the JSON lines printed here.
 *
 *   hearth xet chunks [--legacy] FILE|-   chunk and hash a file the way Xet clients do;
 *                                         prints JSON lines (see usage)
 *   hearth xet xorb FILE                  parse a serialized xorb: chunks, hashes, compression
 *   hearth xet shard FILE [XORB...]       parse a shard: files, terms, xorbs; with the xorbs its
 *                                         files use, verify each file as a CAS would
 *   hearth xet hmac KEY HASH...           keyed hashes as a global dedup shard holds them (tests
 *                                         look their chunks up in the CAS's reply with it)
 * The end-to-end test compares this output with Hugging Face's own chunker.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xet/xet.h"

static void usage(FILE *out)
{
    fputs("usage: hearth xet chunks [--legacy] FILE|-\n"
          "\n"
          "Cuts FILE into Xet chunks and prints one JSON line per chunk,\n"
          "  {\"offset\":N,\"length\":N,\"hash\":\"<xet hash>\"}\n"
          "then one summary line,\n"
          "  {\"file_hash\":\"...\",\"xorb_hash\":\"...\",\"verification_hash\":\"...\",\"size\":N,\"chunks\":N}\n"
          "where xorb_hash is the merkle root over all the chunks and verification_hash\n"
          "the term verification hash of a term covering all of them.\n"
          "\n"
          "  --legacy   boundary rule of xetchunk-wasm 0.2.0 / hf_xet < 1.1.10 (default: hf_xet)\n"
          "\n"
          "usage: hearth xet xorb FILE     checks a serialized xorb and lists its chunks\n"
          "       hearth xet shard FILE [XORB...]\n"
          "                                checks a shard and lists its files and xorbs; given\n"
          "                                the xorbs its files use, verifies every file (term\n"
          "                                ranges, lengths, verification and file hashes)\n"
          "       hearth xet hmac KEY HASH...\n"
          "                                prints each HASH keyed with KEY, one per line, as a\n"
          "                                dedup shard whose footer holds KEY stores it (xet-core\n"
          "                                DataHash::hmac; both in the Xet string form)\n",
          out);
}

static int chunks_main(int argc, char **argv)
{
    xet_chunker_rule rule = XET_CHUNKER_HF_XET;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--legacy"))
            rule = XET_CHUNKER_LEGACY;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!path)
            path = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    int fd = strcmp(path, "-") ? open(path, O_RDONLY) : 0;
    if (fd < 0) {
        fprintf(stderr, "hearth xet: %s: %s\n", path, strerror(errno));
        return 1;
    }
    enum { BUF_LEN = 8 << 20 };
    uint8_t *data = malloc(BUF_LEN);
    xet_chunk_stream s;
    xet_chunk_stream_init(&s, rule);
    int rc = 1;
    if (!data)
        goto done;
    for (;;) {
        ssize_t n = read(fd, data, BUF_LEN);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "hearth xet: %s: %s\n", path, strerror(errno));
            goto done;
        }
        if (n == 0)
            break;
        if (xet_chunk_stream_update(&s, data, (size_t)n) < 0)
            goto oom;
    }
    if (xet_chunk_stream_finish(&s) < 0)
        goto oom;

    uint64_t offset = 0;
    char hex[XET_HASH_STRING_LEN + 1];
    for (size_t i = 0; i < s.n_chunks; i++) {
        xet_hash_to_string(&s.chunks[i].hash, hex);
        printf("{\"offset\":%llu,\"length\":%llu,\"hash\":\"%s\"}\n", (unsigned long long)offset,
               (unsigned long long)s.chunks[i].length, hex);
        offset += s.chunks[i].length;
    }
    xet_hash file_hash, xorb_hash, verification;
    if (xet_file_hash(s.chunks, s.n_chunks, &file_hash) < 0 ||
        xet_xorb_hash(s.chunks, s.n_chunks, &xorb_hash) < 0)
        goto oom;
    xet_hash *hashes = malloc((s.n_chunks + 1) * sizeof *hashes);
    if (!hashes)
        goto oom;
    for (size_t i = 0; i < s.n_chunks; i++)
        hashes[i] = s.chunks[i].hash;
    xet_verification_hash(hashes, s.n_chunks, &verification);
    free(hashes);
    char xorb_hex[XET_HASH_STRING_LEN + 1], verification_hex[XET_HASH_STRING_LEN + 1];
    xet_hash_to_string(&file_hash, hex);
    xet_hash_to_string(&xorb_hash, xorb_hex);
    xet_hash_to_string(&verification, verification_hex);
    printf("{\"file_hash\":\"%s\",\"xorb_hash\":\"%s\",\"verification_hash\":\"%s\","
           "\"size\":%llu,\"chunks\":%zu}\n",
           hex, xorb_hex, verification_hex, (unsigned long long)s.total_len, s.n_chunks);
    rc = fflush(stdout) == 0 ? 0 : 1;
    goto done;
oom:
    fputs("hearth xet: out of memory\n", stderr);
done:
    if (fd > 0)
        close(fd);
    free(data);
    xet_chunk_stream_free(&s);
    return rc;
}

static int read_whole(const char *path, buf *out)
{
    if (path_read_file(path, out) < 0) {
        fprintf(stderr, "hearth xet: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int xorb_main(int argc, char **argv)
{
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    buf data = BUF_INIT;
    if (read_whole(argv[1], &data) < 0)
        return 1;
    xet_xorb x;
    err e = ERR_INIT;
    int rc = 1;
    if (xet_xorb_parse((const uint8_t *)data.data, data.len, &x, &e) < 0) {
        fprintf(stderr, "hearth xet: %s: %s\n", argv[1], e.message);
        goto done;
    }
    char hex[XET_HASH_STRING_LEN + 1];
    for (size_t i = 0; i < x.n_chunks; i++) {
        xet_hash_to_string(&x.chunks[i].hash, hex);
        printf("{\"offset\":%u,\"serialized_length\":%u,\"length\":%u,\"compression\":%u,"
               "\"hash\":\"%s\"}\n",
               x.chunks[i].offset, x.chunks[i].serialized_len, x.chunks[i].uncompressed_len,
               x.chunks[i].compression, hex);
    }
    xet_hash_to_string(&x.hash, hex);
    printf("{\"xorb_hash\":\"%s\",\"chunks\":%zu,\"unpacked\":%llu,\"chunks_len\":%u,"
           "\"footer\":%s}\n",
           hex, x.n_chunks, (unsigned long long)x.unpacked_len, x.chunks_len,
           x.has_footer ? "true" : "false");
    xet_xorb_free(&x);
    rc = 0;
done:
    buf_free(&data);
    return rc;
}

/* The xorbs named on the command line, for xet_shard_verify_file. */
typedef struct cli_xorbs {
    size_t n;
    xet_hash *hashes;
    xet_chunk **chunks;
    size_t *counts;
} cli_xorbs;

static int cli_chunks_of(void *ctx, const xet_hash *xorb_hash, const xet_chunk **chunks, size_t *n)
{
    const cli_xorbs *x = ctx;
    for (size_t i = 0; i < x->n; i++)
        if (xet_hash_equal(&x->hashes[i], xorb_hash)) {
            *chunks = x->chunks[i];
            *n = x->counts[i];
            return 0;
        }
    return -1;
}

static int load_xorbs(int n, char **paths, cli_xorbs *out)
{
    out->n = 0;
    out->hashes = calloc((size_t)n + 1, sizeof *out->hashes);
    out->chunks = calloc((size_t)n + 1, sizeof *out->chunks);
    out->counts = calloc((size_t)n + 1, sizeof *out->counts);
    if (!out->hashes || !out->chunks || !out->counts)
        return -1;
    for (int i = 0; i < n; i++) {
        buf data = BUF_INIT;
        if (read_whole(paths[i], &data) < 0)
            return -1;
        xet_xorb x;
        err e = ERR_INIT;
        if (xet_xorb_parse((const uint8_t *)data.data, data.len, &x, &e) < 0) {
            fprintf(stderr, "hearth xet: %s: %s\n", paths[i], e.message);
            buf_free(&data);
            return -1;
        }
        buf_free(&data);
        xet_chunk *c = malloc((x.n_chunks + 1) * sizeof *c);
        if (!c) {
            xet_xorb_free(&x);
            return -1;
        }
        for (size_t k = 0; k < x.n_chunks; k++) {
            c[k].hash = x.chunks[k].hash;
            c[k].length = x.chunks[k].uncompressed_len;
        }
        out->hashes[out->n] = x.hash;
        out->chunks[out->n] = c;
        out->counts[out->n] = x.n_chunks;
        out->n++;
        xet_xorb_free(&x);
    }
    return 0;
}

static void free_xorbs(cli_xorbs *x)
{
    for (size_t i = 0; i < x->n; i++)
        free(x->chunks[i]);
    free(x->hashes);
    free(x->chunks);
    free(x->counts);
}

static int shard_main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    buf data = BUF_INIT;
    if (read_whole(argv[1], &data) < 0)
        return 1;
    xet_shard s;
    err e = ERR_INIT;
    if (xet_shard_parse((const uint8_t *)data.data, data.len, &s, &e) < 0) {
        fprintf(stderr, "hearth xet: %s: %s\n", argv[1], e.message);
        buf_free(&data);
        return 1;
    }
    buf_free(&data);
    bool verify = argc > 2;
    cli_xorbs xorbs = {0};
    int rc = 0;
    if (verify && load_xorbs(argc - 2, argv + 2, &xorbs) < 0) {
        rc = 1;
        goto done;
    }
    char hex[XET_HASH_STRING_LEN + 1], sha[65];
    for (size_t i = 0; i < s.n_files; i++) {
        const xet_shard_file *f = &s.files[i];
        xet_hash_to_string(&f->file_hash, hex);
        printf("{\"file_hash\":\"%s\",\"flags\":%u,\"terms\":[", hex, f->flags);
        for (size_t t = 0; t < f->n_terms; t++) {
            xet_hash_to_string(&f->terms[t].xorb_hash, hex);
            printf("%s{\"xorb\":\"%s\",\"unpacked_bytes\":%u,\"chunks\":[%u,%u]", t ? "," : "", hex,
                   f->terms[t].unpacked_bytes, f->terms[t].chunk_start, f->terms[t].chunk_end);
            if (f->verification) {
                xet_hash_to_string(&f->verification[t], hex);
                printf(",\"verification\":\"%s\"", hex);
            }
            putchar('}');
        }
        putchar(']');
        if (f->has_sha256) {
            hex_encode(f->sha256, 32, sha);
            printf(",\"sha256\":\"%s\"", sha);
        }
        if (verify) {
            uint64_t size;
            if (xet_shard_verify_file(f, cli_chunks_of, &xorbs, true, &size, &e) == 0)
                printf(",\"verified\":true,\"size\":%llu", (unsigned long long)size);
            else {
                printf(",\"verified\":false,\"error\":\"%s\"", e.message);
                rc = 1;
            }
        }
        puts("}");
    }
    for (size_t i = 0; i < s.n_xorbs; i++) {
        const xet_shard_xorb *x = &s.xorbs[i];
        xet_hash_to_string(&x->xorb_hash, hex);
        printf("{\"xorb_hash\":\"%s\",\"flags\":%u,\"raw_bytes\":%u,\"serialized_bytes\":%u,"
               "\"chunks\":[",
               hex, x->flags, x->raw_bytes, x->serialized_bytes);
        for (size_t c = 0; c < x->n_chunks; c++) {
            xet_hash_to_string(&x->chunks[c].hash, hex);
            printf("%s{\"hash\":\"%s\",\"offset\":%u,\"length\":%u,\"flags\":%u}", c ? "," : "", hex,
                   x->chunks[c].byte_offset, x->chunks[c].unpacked_len, x->chunks[c].flags);
        }
        puts("]}");
    }
    printf("{\"files\":%zu,\"xorbs\":%zu,\"footer\":%s}\n", s.n_files, s.n_xorbs,
           s.has_footer ? "true" : "false");
done:
    free_xorbs(&xorbs);
    xet_shard_free(&s);
    return rc;
}

static int hmac_main(int argc, char **argv)
{
    xet_hash key;
    if (argc < 3 || xet_hash_from_string(argv[1], strlen(argv[1]), &key) != 0) {
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        xet_hash h;
        char hex[XET_HASH_STRING_LEN + 1];
        if (xet_hash_from_string(argv[i], strlen(argv[i]), &h) != 0) {
            fprintf(stderr, "hearth xet: not a Xet hash: %s\n", argv[i]);
            return 2;
        }
        xet_hash_hmac(&h, key.bytes, &h);
        xet_hash_to_string(&h, hex);
        puts(hex);
    }
    return 0;
}

int cli_xet_main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "chunks"))
        return chunks_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "xorb"))
        return xorb_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "shard"))
        return shard_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "hmac"))
        return hmac_main(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
