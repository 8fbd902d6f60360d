/* serve — `hearth serve`: opens the hub on a data directory and serves it over HTTP until
 * SIGINT or SIGTERM. */
#include "cli/cli.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "http/http.h"
#include "hub/hub.h"

static void usage(FILE *out)
{
    fputs("usage: hearth serve [--data DIR] [--listen HOST:PORT] [--public-url URL]\n"
          "\n"
          "  --data DIR         where everything is kept (default ./hearth-data)\n"
          "  --listen HOST:PORT address to listen on (default 127.0.0.1:8080; port 0 = any)\n"
          "  --public-url URL   base URL clients use, for links in replies\n"
          "                     (default: http://<Host header of each request>)\n"
          "  --lfs-threshold N  files of N bytes or more are stored as LFS (default 10000000)\n"
          "  --threads N        request threads (default 4)\n"
          "  --header-timeout S a connection must send a whole request header within S\n"
          "                     seconds of opening or of its previous reply; also how long\n"
          "                     an idle keep-alive connection is kept (default 10)\n"
          "  --io-timeout S     a request body or reply that makes no progress for S seconds\n"
          "                     is cut; slow transfers that keep moving never are (default 120)\n"
          "  --max-connections-per-ip N\n"
          "                     connections one address may hold open (default 64; 0 = no\n"
          "                     limit); more are closed as soon as they are accepted\n"
          "  --git-fetch-max N  largest git-upload-pack (clone / fetch) request, inflated\n"
          "                     (default 10M, git http-backend's own limit; anonymous\n"
          "                     callers get a tenth)\n"
          "  --git-push-max N   largest git push, sent and inflated (default 8G)\n"
          "  --quiet            log warnings and errors only\n"
          "\n"
          "Sizes are bytes, or a number with K, M, G or T (powers of 1024).\n",
          out);
}

/* "123", "64K", "10M", "8G", "1T" (powers of 1024) -> bytes; -1 when invalid or over 2^62. */
static int64_t parse_size(const char *text)
{
    static const char units[] = "KMGT";
    size_t n = strlen(text);
    int shift = 0;
    char digits[24];
    char last = n ? (char)(text[n - 1] & ~0x20) : '\0'; /* upper case */
    const char *unit = last ? strchr(units, last) : NULL;
    if (unit) {
        shift = 10 * (int)(unit - units + 1);
        n--;
    }
    if (n == 0 || n >= sizeof digits)
        return -1;
    memcpy(digits, text, n);
    digits[n] = '\0';
    int64_t v = text_parse_i64(digits);
    if (v < 0 || v > ((int64_t)1 << (62 - shift)))
        return -1;
    return v << shift;
}

int cli_serve_main(int argc, char **argv)
{
    const char *data = "./hearth-data", *listen = "127.0.0.1:8080", *public_url = NULL;
    int64_t lfs_threshold = 0, threads = 0, header_timeout = 0, io_timeout = 0;
    int64_t per_address = 0, git_fetch_max = 0, git_push_max = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--data") && next) {
            data = argv[++i];
        } else if (!strcmp(a, "--listen") && next) {
            listen = argv[++i];
        } else if (!strcmp(a, "--public-url") && next) {
            public_url = argv[++i];
        } else if (!strcmp(a, "--lfs-threshold") && next) {
            lfs_threshold = text_parse_i64(argv[++i]);
        } else if (!strcmp(a, "--threads") && next) {
            threads = text_parse_i64(argv[++i]);
            if (threads < 1 || threads > 256) {
                fprintf(stderr, "hearth serve: --threads wants a number from 1 to 256\n");
                return 2;
            }
        } else if ((!strcmp(a, "--header-timeout") || !strcmp(a, "--io-timeout")) && next) {
            int64_t seconds = text_parse_i64(argv[++i]);
            if (seconds < 1 || seconds > 86400) {
                fprintf(stderr, "hearth serve: %s wants a number of seconds from 1 to 86400\n", a);
                return 2;
            }
            *(!strcmp(a, "--header-timeout") ? &header_timeout : &io_timeout) = seconds;
        } else if (!strcmp(a, "--max-connections-per-ip") && next) {
            per_address = text_parse_i64(argv[++i]);
            if (per_address < 0 || per_address > 1000000) {
                fprintf(stderr, "hearth serve: --max-connections-per-ip wants a number from 0 "
                                "(no limit) to 1000000\n");
                return 2;
            }
            if (per_address == 0)
                per_address = -1; /* http_config: -1 = no limit */
        } else if ((!strcmp(a, "--git-fetch-max") || !strcmp(a, "--git-push-max")) && next) {
            int64_t size = parse_size(argv[++i]);
            if (size < 4096) {
                fprintf(stderr, "hearth serve: %s wants a size of at least 4096 bytes, e.g. "
                                "10M or 8G\n", a);
                return 2;
            }
            *(!strcmp(a, "--git-fetch-max") ? &git_fetch_max : &git_push_max) = size;
        } else if (!strcmp(a, "--quiet")) {
            log_set_level(LOG_WARN);
        } else {
            fprintf(stderr, "hearth serve: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    char host[256];
    const char *colon = strrchr(listen, ':');
    int port = colon ? atoi(colon + 1) : -1;
    if (!colon || port < 0 || port > 65535 || (size_t)(colon - listen) >= sizeof host) {
        fprintf(stderr, "hearth serve: --listen wants HOST:PORT, e.g. 127.0.0.1:8080\n");
        return 2;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);

    /* Signals are taken synchronously by this thread; every server thread inherits the mask. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    err e = ERR_INIT;
    if (path_mkdirs(data, 0755) != 0) {
        fprintf(stderr, "hearth serve: cannot create data directory %s\n", data);
        return 1;
    }
    hub_config hc = {.data_dir = data, .lfs_threshold = lfs_threshold,
                     .git_fetch_max = git_fetch_max, .git_push_max = git_push_max};
    hub *h = hub_open(&hc, &e);
    if (!h) {
        fprintf(stderr, "hearth serve: %s\n", e.message);
        return 1;
    }
    http_config config = {.host = host, .port = port, .public_url = public_url,
                          .dispatch = hub_dispatch, .app = h, .threads = (unsigned)threads,
                          .header_timeout = (unsigned)header_timeout,
                          .io_timeout = (unsigned)io_timeout,
                          .max_connections_per_address = (int)per_address};
    http_server *server = http_server_start(&config, &e);
    if (!server) {
        fprintf(stderr, "hearth serve: %s\n", e.message);
        hub_close(h);
        return 1;
    }
    int bound = http_server_port(server);
    log_info("Hearth is serving %s on http://%s:%d", data, host, bound);
    char self[4096] = "hearth";
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0)
        self[n] = '\0';
    printf("Hearth is serving http://%s:%d (data in %s)\n"
           "Make a user and a token:\n"
           "  %s admin --data %s create-user NAME\n"
           "  %s admin --data %s create-token NAME --write\n"
           "then: HF_ENDPOINT=http://%s:%d HF_TOKEN=<token> python -c 'import huggingface_hub "
           "as h; print(h.whoami())'\n",
           host, bound, data, self, data, self, data, host, bound);
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    log_info("shutting down (signal %d)", sig);
    http_server_stop(server);
    hub_close(h);
    return 0;
}
