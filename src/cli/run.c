/* run — `hearth run`: generate text from a model on the command line.
 *
 *   hearth run MODEL [PROMPT] [-n N] [--temperature T] [--top-k K] [--top-p P] [--min-p P]
 *              [--repeat-penalty R] [--seed S] [--threads N] [--ctx N] [--chat]
 *              [--data DIR [--revision REV]]
 *
 * MODEL is a Hugging Face-layout directory, a .gguf file, or with --data a repo id on that hub
 * (cli/infer.c). Tokens print as the engine's generator hands them over; prompt and generation
 * speed and peak memory go to stderr at the end. Four switches exist for tests and tools rather
 * than people:
 *   --tokenize         read one JSON string a line on stdin, print {"ids": [...], "text": decode}
 *   --dump-logits K    greedy; print one JSON line a step with the chosen id and the top-K logits
 *   --ids 1,2,3        use these prompt ids instead of tokenizing PROMPT
 *   --render-template  read {"template": ..., "vars": {...}} JSON lines, print the rendering
 * --chat applies the model's chat template to PROMPT; without PROMPT it is an interactive chat
 * that keeps the conversation's KV cache between turns.
 */
#include "cli/cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "infer/infer.h"

typedef struct run_options {
    const char *model, *prompt, *ids, *data_dir, *revision, *quantize;
    const char *stop[4];
    int n_stop;
    int n_predict, threads, ctx, dump_logits;
    bool chat, tokenize, quiet, render, ignore_eos, kv_f32;
    infer_sampler_params sp;
} run_options;

static void usage(FILE *out)
{
    fputs("usage: hearth run MODEL [PROMPT] [options]\n"
          "\n"
          "MODEL is a model directory in the Hugging Face layout (config.json, *.safetensors,\n"
          "tokenizer.json) or a .gguf file.\n"
          "\n"
          "options:\n"
          "  -n, --n-predict N      tokens to generate (default 128)\n"
          "  --temperature T        0 = greedy (default 0)\n"
          "  --top-k K              keep the K most likely tokens (0 = off)\n"
          "  --top-p P              nucleus sampling (1 = off)\n"
          "  --min-p P              drop tokens below P x the top probability (0 = off)\n"
          "  --repeat-penalty R     CTRL-style repetition penalty (1 = off)\n"
          "  --frequency-penalty F  subtract F x count for tokens already generated\n"
          "  --presence-penalty F   subtract F for tokens already generated\n"
          "  --seed S               random seed (default 0: every run the same)\n"
          "  -t, --threads N        worker threads (default: one per core)\n"
          "  --ctx N                context length to allocate (default: model's, at most 4096)\n"
          "  --kv f16|f32           KV cache type (default f16; f32 is exact)\n"
          "  --chat                 apply the model's chat template\n"
          "  --quantize q8_0|q4_0   quantise a safetensors model's matrices on load\n"
          "  -q, --quiet            no model line, no statistics\n"
          "  --ignore-eos           keep generating past end-of-sequence tokens (benchmarks)\n"
          "  --stop STR             stop once the output ends with STR (up to 4; STR is kept)\n"
          "  --data DIR             hub data directory, for MODEL given as a repo id\n"
          "  --revision REV         branch, tag or commit of that repo (default main)\n"
          "  --tokenize             tokenize JSON strings from stdin (one per line)\n"
          "  --render-template      render {\"template\", \"vars\"} JSON lines from stdin\n"
          "  --dump-logits K        greedy; print the top-K logits of each step as JSON\n"
          "  --ids I,J,...          prompt as token ids\n", out);
}

static int parse_args(int argc, char **argv, run_options *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    infer_sampler_defaults(&o->sp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE(...) (v ? (i++, true) : (fprintf(stderr, "hearth run: %s needs a value\n", a), false))
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (!TAKE()) return -1;
            o->n_predict = atoi(v);
        } else if (!strcmp(a, "--temperature") || !strcmp(a, "--temp")) {
            if (!TAKE()) return -1;
            o->sp.temperature = strtof(v, NULL);
        } else if (!strcmp(a, "--top-k")) {
            if (!TAKE()) return -1;
            o->sp.top_k = atoi(v);
        } else if (!strcmp(a, "--top-p")) {
            if (!TAKE()) return -1;
            o->sp.top_p = strtof(v, NULL);
        } else if (!strcmp(a, "--min-p")) {
            if (!TAKE()) return -1;
            o->sp.min_p = strtof(v, NULL);
        } else if (!strcmp(a, "--repeat-penalty") || !strcmp(a, "--repetition-penalty")) {
            if (!TAKE()) return -1;
            o->sp.repetition_penalty = strtof(v, NULL);
        } else if (!strcmp(a, "--frequency-penalty")) {
            if (!TAKE()) return -1;
            o->sp.frequency_penalty = strtof(v, NULL);
        } else if (!strcmp(a, "--presence-penalty")) {
            if (!TAKE()) return -1;
            o->sp.presence_penalty = strtof(v, NULL);
        } else if (!strcmp(a, "--seed")) {
            if (!TAKE()) return -1;
            o->sp.seed = strtoull(v, NULL, 10);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!TAKE()) return -1;
            o->threads = atoi(v);
        } else if (!strcmp(a, "--ctx")) {
            if (!TAKE()) return -1;
            o->ctx = atoi(v);
        } else if (!strcmp(a, "--data")) {
            if (!TAKE()) return -1;
            o->data_dir = v;
        } else if (!strcmp(a, "--revision")) {
            if (!TAKE()) return -1;
            o->revision = v;
        } else if (!strcmp(a, "--dump-logits")) {
            if (!TAKE()) return -1;
            o->dump_logits = atoi(v);
        } else if (!strcmp(a, "--ids")) {
            if (!TAKE()) return -1;
            o->ids = v;
        } else if (!strcmp(a, "--chat")) {
            o->chat = true;
        } else if (!strcmp(a, "--stop")) {
            if (!TAKE()) return -1;
            if (o->n_stop == 4) {
                fputs("hearth run: at most 4 --stop strings\n", stderr);
                return -1;
            }
            o->stop[o->n_stop++] = v;
        } else if (!strcmp(a, "--quantize")) {
            if (!TAKE()) return -1;
            o->quantize = v;
        } else if (!strcmp(a, "--kv")) {
            if (!TAKE()) return -1;
            if (strcmp(v, "f16") && strcmp(v, "f32")) {
                fputs("hearth run: --kv f16|f32\n", stderr);
                return -1;
            }
            o->kv_f32 = !strcmp(v, "f32");
        } else if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
        } else if (!strcmp(a, "--render-template")) {
            o->render = true;
        } else if (!strcmp(a, "--tokenize")) {
            o->tokenize = true;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "hearth run: unknown option '%s'\n", a);
            return -1;
        } else if (!o->model) {
            o->model = a;
        } else if (!o->prompt) {
            o->prompt = a;
        } else {
            fprintf(stderr, "hearth run: unexpected argument '%s' (quote the prompt)\n", a);
            return -1;
        }
#undef TAKE
    }
    if (!o->model && !o->render) {
        usage(stderr);
        return -1;
    }
    if (o->sp.temperature < 0 || o->sp.top_p <= 0 || o->sp.top_p > 1 || o->sp.top_k < 0 ||
        o->sp.min_p < 0 || o->sp.min_p > 1 || o->sp.repetition_penalty <= 0 || o->n_predict < 0) {
        fputs("hearth run: sampling options out of range (temperature >= 0, 0 < top-p <= 1, "
              "top-k >= 0, 0 <= min-p <= 1, repeat-penalty > 0, -n >= 0)\n", stderr);
        return -1;
    }
    return 0;
}

/* --tokenize: one JSON string a line in, one JSON object a line out. */
static int run_tokenize(const infer_tokenizer *t)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        json_error_t je;
        json_t *s = json_loadb(line, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!json_is_string(s)) {
            fprintf(stderr, "hearth run --tokenize: each line must be a JSON string\n");
            json_decref(s);
            rc = 1;
            break;
        }
        int32_t *ids;
        size_t nids;
        err e = ERR_INIT;
        infer_tokenize(t, json_string_value(s), json_string_length(s), true, &ids, &nids, &e);
        buf text = BUF_INIT;
        infer_detokenize(t, ids, nids, true, &text);
        json_t *arr = json_array();
        for (size_t i = 0; i < nids; i++)
            json_array_append_new(arr, json_integer(ids[i]));
        json_t *o = json_object();
        json_object_set_new(o, "ids", arr);
        json_object_set_new(o, "text", json_stringn(text.data, text.len));
        char *dump = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        puts(dump);
        free(dump);
        json_decref(o);
        json_decref(s);
        buf_free(&text);
        free(ids);
    }
    free(line);
    return rc;
}

static int parse_ids(const char *s, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX)
            return -1;
        *ids = realloc(*ids, (*n + 1) * sizeof **ids);
        (*ids)[(*n)++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return *n ? 0 : -1;
}

typedef struct top_entry { float logit; int32_t id; } top_entry;

static void print_top(int step, int32_t chosen, const float *logits, int vocab, int k)
{
    top_entry *top = calloc((size_t)k, sizeof *top);
    int have = 0;
    for (int i = 0; i < vocab; i++) {
        if (have == k && logits[i] <= top[k - 1].logit)
            continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && top[j - 1].logit < logits[i]) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = (top_entry){logits[i], i};
    }
    printf("{\"step\":%d,\"token\":%d,\"top\":[", step, chosen);
    for (int i = 0; i < have; i++)
        printf("%s[%d,%.9g]", i ? "," : "", top[i].id, (double)top[i].logit);
    puts("]}");
    free(top);
}

typedef struct run_state {
    const run_options *o;
    infer_model *m;
    infer_tokenizer *tok;
    infer_generator *g;
} run_state;

/* Where a turn's output goes: stdout as it comes, and the reply (for the chat's history). */
typedef struct turn_sink {
    buf *reply;
    int top_k;
} turn_sink;

static void print_text(void *ctx, const char *text, size_t len)
{
    turn_sink *sink = ctx;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    if (sink->reply)
        buf_append(sink->reply, text, len);
}

static void print_logits(void *ctx, int step, int32_t chosen, const float *logits, int vocab)
{
    const turn_sink *sink = ctx;
    if (sink->top_k > 0)
        print_top(step, chosen, logits, vocab, sink->top_k);
}

/* Runs prompt[0..n) after whatever the session already holds (reusing a common prefix), then
 * generates up to -n tokens, streaming them to stdout and collecting the text in reply. */
static int run_turn(run_state *st, const int32_t *prompt, size_t n, buf *reply)
{
    const run_options *o = st->o;
    infer_generate_options go = {.n_predict = o->n_predict, .ignore_eos = o->ignore_eos,
                                 .stop = o->stop, .n_stop = o->n_stop,
                                 .logits_only = o->dump_logits != 0};
    turn_sink sink = {reply, o->dump_logits};
    infer_generate_callbacks cb = {print_text, print_logits, &sink};
    err e = ERR_INIT;
    int rc = 0;
    if (infer_generator_turn(st->g, prompt, n, &go, &cb, &e) != 0) {
        fprintf(stderr, "\nhearth run: %s\n", e.message);
        rc = 1;
    }
    if (!o->dump_logits && st->tok) {
        putchar('\n');
        fflush(stdout);
    }
    return rc;
}

/* Renders the conversation with the model's template, ready for generation. */
static int render_chat(run_state *st, json_t *messages, buf *out)
{
    const char *tmpl = infer_model_chat_template(st->m);
    if (!tmpl) {
        fputs("hearth run: --chat: the model has no chat template\n", stderr);
        return -1;
    }
    json_t *vars = json_pack("{s:O, s:b, s:s, s:s}", "messages", messages, "add_generation_prompt", 1,
                             "bos_token", infer_model_bos_token(st->m), "eos_token",
                             infer_model_eos_token(st->m));
    char *text = json_dumps(vars, JSON_COMPACT);
    json_decref(vars);
    err e = ERR_INIT;
    int rc = infer_template_render(tmpl, strlen(tmpl), text, out, &e);
    free(text);
    if (rc)
        fprintf(stderr, "hearth run: %s\n", e.message);
    return rc;
}

static int chat(run_state *st)
{
    json_t *messages = json_array();
    int rc = 0;
    bool interactive = !st->o->prompt;
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        const char *user = st->o->prompt;
        if (interactive) {
            fputs("> ", stderr);
            ssize_t n = getline(&line, &cap, stdin);
            if (n <= 0)
                break;
            if (line[n - 1] == '\n')
                line[n - 1] = 0;
            if (!*line)
                continue;
            user = line;
        }
        json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "user", "content", user));
        buf text = BUF_INIT, reply = BUF_INIT;
        int32_t *ids = NULL;
        size_t n_ids = 0;
        err e = ERR_INIT;
        if (render_chat(st, messages, &text) != 0) {
            rc = 1;
        } else {
            /* Like apply_chat_template(tokenize=True): the template already holds BOS. */
            infer_tokenize(st->tok, text.data ? text.data : "", text.len, false, &ids, &n_ids, &e);
            rc = run_turn(st, ids, n_ids, &reply);
            json_array_append_new(messages, json_pack("{s:s, s:s%}", "role", "assistant", "content",
                                                      reply.data ? reply.data : "", reply.len));
        }
        free(ids);
        buf_free(&text);
        buf_free(&reply);
        if (rc || !interactive)
            break;
    }
    free(line);
    json_decref(messages);
    return rc;
}

static int generate(const run_options *o, infer_model *m)
{
    run_state st = {.o = o, .m = m, .tok = infer_model_tokenizer(m)};
    err e = ERR_INIT;
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    if (o->ids) {
        if (parse_ids(o->ids, &prompt, &n_prompt) != 0) {
            fputs("hearth run: --ids wants comma-separated token ids\n", stderr);
            return 2;
        }
    } else {
        if (!st.tok) {
            fputs("hearth run: the model has no tokenizer (tokenizer.json); use --ids\n", stderr);
            return 1;
        }
        if (!o->chat) {
            const char *text = o->prompt ? o->prompt : "";
            infer_tokenize(st.tok, text, strlen(text), true, &prompt, &n_prompt, &e);
            if (n_prompt == 0) {
                int32_t bos = infer_model_bos(m);
                if (bos < 0) {
                    fputs("hearth run: empty prompt and the model has no BOS token to start from\n", stderr);
                    return 2;
                }
                prompt = malloc(sizeof *prompt);
                prompt[0] = bos;
                n_prompt = 1;
            }
        }
    }
    int ctx = o->ctx;
    if (ctx <= 0 && !o->chat && (size_t)infer_model_max_seq(m) > n_prompt + (size_t)o->n_predict)
        ctx = (int)n_prompt + o->n_predict;   /* allocate only what this run needs */
    infer_session_options so = {.threads = o->threads, .max_seq = ctx, .kv_f32 = o->kv_f32};
    st.g = infer_generator_new(m, &so, &o->sp, &e);
    int rc;
    if (!st.g) {
        fprintf(stderr, "hearth run: %s\n", e.message);
        rc = 1;
    } else {
        rc = o->chat ? chat(&st) : run_turn(&st, prompt, n_prompt, NULL);
    }
    if (!o->quiet && st.g) {
        const infer_generate_stats *gs = infer_generator_stats(st.g);
        fprintf(stderr, "prompt: %zu tokens, %.1f tokens/s | generation: %d tokens, %.1f tokens/s | "
                "threads %d | peak memory %.0f MiB\n", gs->prompt_tokens,
                gs->prompt_seconds > 0 ? (double)gs->prompt_tokens / gs->prompt_seconds : 0.0,
                gs->generated,
                gs->generate_seconds > 0 && gs->generated > 1
                    ? (double)(gs->generated - 1) / gs->generate_seconds : 0.0,
                o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN), cli_peak_rss_mib());
    }
    free(prompt);
    infer_generator_free(st.g);
    return rc;
}

/* --render-template: one JSON object a line, {"template": ..., "vars": {...}}; prints
 * {"text": ...} or {"error": ...} a line. */
static int run_render(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        json_error_t je;
        json_t *in = json_loadb(line, (size_t)n, 0, &je), *out = json_object();
        const char *tmpl = json_string_value(json_object_get(in, "template"));
        if (!tmpl) {
            json_object_set_new(out, "error", json_string("need {\"template\": ..., \"vars\": {...}}"));
        } else {
            char *vars = json_dumps(json_object_get(in, "vars") ? json_object_get(in, "vars") : json_object(),
                                    JSON_COMPACT | JSON_PRESERVE_ORDER);
            buf text = BUF_INIT;
            err e = ERR_INIT;
            if (infer_template_render(tmpl, json_string_length(json_object_get(in, "template")), vars, &text, &e) == 0)
                json_object_set_new(out, "text", json_stringn(text.data ? text.data : "", text.len));
            else
                json_object_set_new(out, "error", json_string(e.message));
            free(vars);
            buf_free(&text);
        }
        char *dump = json_dumps(out, JSON_COMPACT | JSON_ENSURE_ASCII);
        puts(dump);
        free(dump);
        json_decref(in);
        json_decref(out);
    }
    free(line);
    return 0;
}

/* Everything after the arguments: the tools, or a model loaded and run. */
static int run(const run_options *o)
{
    if (o->render)
        return run_render();
    err e = ERR_INIT;
    if (o->tokenize) {
        infer_tokenizer *t = NULL;
        infer_model *m = NULL;
        /* A directory needs only its tokenizer.json; a GGUF file carries its vocabulary. */
        if (infer_tokenizer_load_dir(&t, o->model, &e) != 0) {
            err_clear(&e);
            if (infer_model_load(&m, o->model, NULL, &e) != 0 || !infer_model_tokenizer(m)) {
                fprintf(stderr, "hearth run: %s\n", e.message[0] ? e.message : "no tokenizer");
                infer_model_free(m);
                return 1;
            }
        }
        int rc = run_tokenize(t ? t : infer_model_tokenizer(m));
        infer_tokenizer_free(t);
        infer_model_free(m);
        return rc;
    }
    infer_model *m;
    infer_load_options lo = {.max_seq = o->ctx, .quantize = o->quantize};
    double t0 = cli_seconds();
    if (infer_model_load(&m, o->model, &lo, &e) != 0) {
        fprintf(stderr, "hearth run: %s\n", e.message);
        return 1;
    }
    if (!o->quiet) {
        buf d = BUF_INIT;
        infer_model_describe(m, &d);
        fprintf(stderr, "%s (loaded in %.2f s)\n", d.data, cli_seconds() - t0);
        buf_free(&d);
    }
    int rc = generate(o, m);
    infer_model_free(m);
    return rc;
}

int cli_run_main(int argc, char **argv)
{
    run_options o;
    int prc = parse_args(argc, argv, &o);
    if (prc)
        return prc > 0 ? 0 : 2;
    buf dir = BUF_INIT;
    int rc = cli_model_path("run", o.model, o.data_dir, o.revision, &dir, &o.model);
    if (rc == 0)
        rc = run(&o);
    buf_free(&dir);
    return rc;
}
