/* `hearth xet ...`: developer commands over the Xet format library.
 *
 *   hearth xet chunks [--legacy] FILE|-   chunk and hash a file the way Xet clients do;
 *                                         prints JSON lines (see usage)
 * The end-to-end test compares this output with Hugging Face's own chunker.
 */
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
          "  {\"file_hash\":\"...\",\"xorb_hash\":\"...\",\"size\":N,\"chunks\":N}\n"
          "where xorb_hash is the merkle root over all the chunks.\n"
          "\n"
          "  --legacy   boundary rule of xetchunk-wasm 0.2.0 / hf_xet < 1.1.10 (default: hf_xet)\n",
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
    xet_hash file_hash, xorb_hash;
    if (xet_file_hash(s.chunks, s.n_chunks, &file_hash) < 0 ||
        xet_xorb_hash(s.chunks, s.n_chunks, &xorb_hash) < 0)
        goto oom;
    char xorb_hex[XET_HASH_STRING_LEN + 1];
    xet_hash_to_string(&file_hash, hex);
    xet_hash_to_string(&xorb_hash, xorb_hex);
    printf("{\"file_hash\":\"%s\",\"xorb_hash\":\"%s\",\"size\":%llu,\"chunks\":%zu}\n", hex,
           xorb_hex, (unsigned long long)s.total_len, s.n_chunks);
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

int xet_cli_main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "chunks"))
        return chunks_main(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
