/* run — `hearth run` and `hearth embed` in front of the inference engine: a MODEL that names a
 * repo on the hub (`hearth run alice/tiny-llama --data DIR [--revision REV]`) is exported to a
 * snapshot directory of that commit, and the engine is given that directory. Everything else
 * passes through to infer_main / infer_embed_main unchanged. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "hub/hub.h"
#include "infer/infer.h"

/* Options of `hearth run` that take a value, so that their values are not taken for MODEL. */
static const char *const run_value_options[] = {
    "-n", "--n-predict", "--temperature", "--temp", "--top-k", "--top-p", "--min-p",
    "--repeat-penalty", "--repetition-penalty", "--frequency-penalty", "--presence-penalty",
    "--seed", "-t", "--threads", "--ctx", "--stop", "--quantize", "--ids", "--dump-logits", "--kv"};
static const char *const embed_value_options[] = {"-t", "--threads"};

static bool takes_value(const char *opt, const char *const *with_value, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(opt, with_value[i]))
            return true;
    return false;
}

/* Resolves MODEL (the first argument that is no option) to a snapshot directory when it names a
 * repo on the hub in --data, then hands the arguments, --data/--revision taken out, to engine. */
static int with_model(int argc, char **argv, const char *const *with_value, size_t n_with_value,
                      int (*engine)(int, char **))
{
    const char *data = NULL, *revision = NULL;
    int model_at = -1;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args)
        abort();
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && !strcmp(argv[i], "--data") && i + 1 < argc) {
            data = argv[++i];
            continue;
        }
        if (i > 0 && !strcmp(argv[i], "--revision") && i + 1 < argc) {
            revision = argv[++i];
            continue;
        }
        if (i > 0 && argv[i][0] == '-' && takes_value(argv[i], with_value, n_with_value) && i + 1 < argc) {
            args[n++] = argv[i++];
        } else if (i > 0 && argv[i][0] != '-' && model_at < 0) {
            model_at = n;
        }
        args[n++] = argv[i];
    }
    struct stat st;
    bool repo_id = model_at >= 0 && data && stat(args[model_at], &st) != 0 &&
                   strchr(args[model_at], '/');
    buf dir = BUF_INIT;
    if (repo_id) {
        err e = ERR_INIT;
        hub_config hc = {.data_dir = data, .maintenance = true};
        hub *h = hub_open(&hc, &e);
        if (!h || hub_snapshot(h, "model", args[model_at], revision, &dir, &e) != 0) {
            fprintf(stderr, "hearth %s: %s\n", argv[0], e.message);
            hub_close(h);
            free(args);
            return 1;
        }
        hub_close(h);
        fprintf(stderr, "hearth %s: %s%s%s is %s\n", argv[0], args[model_at], revision ? "@" : "",
                revision ? revision : "", dir.data);
        args[model_at] = dir.data;
    } else if (data || revision) {
        fprintf(stderr, "hearth %s: --data/--revision go with a MODEL that is a repo id "
                        "(namespace/name) on that hub\n", argv[0]);
        free(args);
        return 2;
    }
    int rc = engine(n, args);
    buf_free(&dir);
    free(args);
    return rc;
}

int cli_run_main(int argc, char **argv)
{
    return with_model(argc, argv, run_value_options, ARRAY_LEN(run_value_options), infer_main);
}

int cli_embed_main(int argc, char **argv)
{
    return with_model(argc, argv, embed_value_options, ARRAY_LEN(embed_value_options), infer_embed_main);
}
