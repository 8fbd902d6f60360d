/* embed — `hearth embed`: texts in, one embedding vector a line out, with a sentence encoder.
 *
 *   hearth embed MODEL [TEXT...] [--threads N] [-q] [--data DIR [--revision REV]]
 *
 * MODEL is a sentence-transformers directory, or with --data a repo id on that hub
 * (cli/infer.c). Without TEXT, each line of stdin is one JSON string. On stderr: the model line
 * and, at the end, tokens/s and peak memory (-q: none).
 */
#include "cli/cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "infer/infer.h"

static void usage(FILE *out)
{
    fputs("usage: hearth embed MODEL [TEXT...] [options]\n"
          "\n"
          "Prints one JSON array of floats a line for each TEXT (without TEXT: for each line of\n"
          "stdin, a JSON string). MODEL is a sentence-embeddings model directory (BERT:\n"
          "config.json, model.safetensors, tokenizer.json, modules.json, 1_Pooling/).\n"
          "\n"
          "options:\n"
          "  -t, --threads N        worker threads (default: one per core)\n"
          "  -q, --quiet            no model line, no statistics\n"
          "  --data DIR             hub data directory, for MODEL given as a repo id\n"
          "  --revision REV         branch, tag or commit of that repo (default main)\n", out);
}

/* Embeds one text and prints its vector as a JSON array line. */
static int embed_one(infer_embedder *x, const char *text, size_t len, float *vec, int dim, size_t *tokens)
{
    err e = ERR_INIT;
    size_t n = 0;
    if (infer_embed_text(x, text, len, vec, &n, &e) != 0) {
        fprintf(stderr, "hearth embed: %s\n", e.message);
        return 1;
    }
    *tokens += n;
    putchar('[');
    for (int i = 0; i < dim; i++)
        printf("%s%.9g", i ? "," : "", (double)vec[i]);
    puts("]");
    return 0;
}

/* Texts from stdin: one JSON string a line (so that any text, newlines included, fits). */
static int embed_stdin(infer_embedder *x, float *vec, int dim, size_t *texts, size_t *tokens)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, stdin)) > 0) {
        json_error_t je;
        json_t *s = json_loadb(line, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!json_is_string(s)) {
            fputs("hearth embed: each line of stdin must be a JSON string\n", stderr);
            rc = 2;
        } else {
            rc = embed_one(x, json_string_value(s), json_string_length(s), vec, dim, tokens);
            (*texts)++;
        }
        json_decref(s);
    }
    free(line);
    return rc;
}

typedef struct embed_options {
    const char *model, *data_dir, *revision;
    const char **texts;     /* argv's TEXTs; none: stdin */
    int n_texts, threads;
    bool quiet;
} embed_options;

/* 0 to go on, 1 when --help was printed, -1 after a message on a bad argument. */
static int parse_args(int argc, char **argv, embed_options *o)
{
    bool options = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            usage(stdout);
            return 1;
        } else if (options && (!strcmp(a, "-t") || !strcmp(a, "--threads"))) {
            if (i + 1 == argc || (o->threads = atoi(argv[++i])) < 0) {
                fputs("hearth embed: --threads needs a number\n", stderr);
                return -1;
            }
        } else if (options && (!strcmp(a, "-q") || !strcmp(a, "--quiet"))) {
            o->quiet = true;
        } else if (options && (!strcmp(a, "--data") || !strcmp(a, "--revision"))) {
            if (i + 1 == argc) {
                fprintf(stderr, "hearth embed: %s needs a value\n", a);
                return -1;
            }
            if (!strcmp(a, "--data"))
                o->data_dir = argv[++i];
            else
                o->revision = argv[++i];
        } else if (options && !strcmp(a, "--")) {
            options = false;   /* texts that start with '-' follow */
        } else if (options && a[0] == '-' && a[1]) {
            fprintf(stderr, "hearth embed: unknown option '%s' (put texts that start with '-' after --)\n", a);
            return -1;
        } else if (!o->model) {
            o->model = a;
        } else {
            o->texts[o->n_texts++] = a;
        }
    }
    if (!o->model) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int embed(const embed_options *o)
{
    err e = ERR_INIT;
    infer_model *m = NULL;
    infer_embedder *x = NULL;
    double t0 = cli_seconds();
    if (infer_model_load(&m, o->model, NULL, &e) != 0 || !(x = infer_embedder_new(m, o->threads, &e))) {
        fprintf(stderr, "hearth embed: %s\n", e.message);
        infer_model_free(m);
        return 1;
    }
    if (!o->quiet) {
        buf d = BUF_INIT;
        infer_model_describe(m, &d);
        fprintf(stderr, "%s, embedding %d floats, at most %d tokens (loaded in %.2f s)\n", d.data,
                infer_model_embedding_dim(m), infer_embedder_max_tokens(x), cli_seconds() - t0);
        buf_free(&d);
    }
    int dim = infer_model_embedding_dim(m);
    float *vec = malloc((size_t)dim * sizeof *vec);
    size_t done = 0, tokens = 0;
    int rc = 0;
    double t1 = cli_seconds();
    if (o->n_texts) {
        for (; (int)done < o->n_texts && rc == 0; done++)
            rc = embed_one(x, o->texts[done], strlen(o->texts[done]), vec, dim, &tokens);
    } else {
        rc = embed_stdin(x, vec, dim, &done, &tokens);
    }
    fflush(stdout);
    double dt = cli_seconds() - t1;
    if (!o->quiet)
        fprintf(stderr, "%zu texts, %zu tokens, %.1f tokens/s | threads %d | peak memory %.0f MiB\n",
                done, tokens, dt > 0 ? (double)tokens / dt : 0.0,
                o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN), cli_peak_rss_mib());
    free(vec);
    infer_embedder_free(x);
    infer_model_free(m);
    return rc;
}

int cli_embed_main(int argc, char **argv)
{
    embed_options o = {.texts = calloc((size_t)argc + 1, sizeof *o.texts)};
    if (!o.texts)
        abort();
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        free(o.texts);
        return rc > 0 ? 0 : 2;
    }
    buf dir = BUF_INIT;
    rc = cli_model_path("embed", o.model, o.data_dir, o.revision, &dir, &o.model);
    if (rc == 0)
        rc = embed(&o);
    buf_free(&dir);
    free(o.texts);
    return rc;
}
