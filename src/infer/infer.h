/* infer — the inference engine: loads a model (a Hugging Face directory with safetensors +
 * config.json + tokenizer.json, or a GGUF file), tokenizes, renders chat templates, runs the
 * transformer forward pass on the CPU over runs of tokens (a prompt, then one token per step),
 * samples, and detokenizes as a stream; or, for an encoder (BERT), turns a text into one
 * embedding vector. docs/inference.md lists what it supports.
 *
 * Owns: the memory-mapped weights (a model keeps its files mapped until infer_model_free), the
 * tokenizer, the per-sequence run state (KV cache) of a session. Nothing global: two models or
 * two sessions of one model can live side by side. A loaded model and its tokenizer are
 * read-only and may be shared by threads; a session or a sampler is used by one thread at a
 * time (a session runs its own thread pool inside the forward pass).
 *
 * Ownership: every *_new / *_load has one *_free. Results written into caller buffers (buf)
 * belong to the caller. Errors travel in an err (base.h): 400 for bad input files, 404 for a
 * missing model or file, 500 for out-of-memory.
 */
#ifndef HEARTH_INFER_H
#define HEARTH_INFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* ---- tokenizer -------------------------------------------------------------------------- */

typedef struct infer_tokenizer infer_tokenizer;

/* Loads tokenizer.json from a model directory (infer_model_load also reads
 * tokenizer_config.json for the bos/eos strings and the chat template). */
int infer_tokenizer_load_dir(infer_tokenizer **out, const char *dir, err *e);
/* Loads a tokenizer.json image held in memory. */
int infer_tokenizer_load_json(infer_tokenizer **out, const char *json, size_t len, err *e);
void infer_tokenizer_free(infer_tokenizer *t);
int infer_tokenizer_vocab_size(const infer_tokenizer *t);
/* Encodes text (added/special tokens recognised); add_special applies the post-processor (BOS).
 * *ids is allocated (caller frees). */
int infer_tokenize(const infer_tokenizer *t, const char *text, size_t len, bool add_special,
                   int32_t **ids, size_t *n_ids, err *e);
/* Cuts an encoding made with add_special to at most max ids as the library truncates one
 * sequence: content from the end, the post-processor's closing ids ([SEP], EOS) kept. */
void infer_tokenizer_truncate(const infer_tokenizer *t, int32_t *ids, size_t *n, size_t max);
/* Decodes a whole id list the way the tokenizers library does (decoder chain). */
void infer_detokenize(const infer_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                      buf *out);
/* The id of a token string, -1 when absent. */
int32_t infer_token_id(const infer_tokenizer *t, const char *piece);

/* Streaming detokenizer: feed ids, get back only complete UTF-8 characters. */
typedef struct infer_stream {
    buf pending;   /* bytes of an unfinished UTF-8 character */
    bool first;    /* nothing emitted yet (for the leading-space rule of ▁ tokenizers) */
} infer_stream;
void infer_stream_init(infer_stream *s);
/* Appends to out the text that token id completes. */
void infer_stream_push(infer_stream *s, const infer_tokenizer *t, int32_t id, buf *out);
/* Flushes leftover bytes (as U+FFFD when they never completed a character). */
void infer_stream_finish(infer_stream *s, buf *out);
void infer_stream_free(infer_stream *s);

/* ---- chat templates ------------------------------------------------------------------------ */

/* Renders a Jinja chat template (the subset real templates use, with transformers' settings:
 * trim_blocks, lstrip_blocks, its tojson / raise_exception / strftime_now) against variables given
 * as a JSON object text: messages, add_generation_prompt, bos_token, eos_token, tools, ...
 * Appends to out. Fails with 422 TemplateError on raise_exception or an unsupported construct
 * (named in the message). */
int infer_template_render(const char *tmpl, size_t len, const char *vars_json, buf *out, err *e);

/* ---- model ---------------------------------------------------------------------------------- */

typedef struct infer_model infer_model;

typedef struct infer_load_options {
    int max_seq;          /* context length to allocate; 0 = min(model's, 4096) */
    const char *quantize; /* NULL, "q8_0" or "q4_0": quantise float matrices on load (as llama.cpp
                           * does: same blocks, same rounding); GGUF files are used as stored */
} infer_load_options;

/* path: a directory in the Hugging Face layout or a .gguf file. */
int infer_model_load(infer_model **out, const char *path, const infer_load_options *opt, err *e);
void infer_model_free(infer_model *m);
infer_tokenizer *infer_model_tokenizer(const infer_model *m);
int infer_model_vocab_size(const infer_model *m);
int infer_model_max_seq(const infer_model *m);
/* One-line description: architecture, sizes, weight dtype. */
void infer_model_describe(const infer_model *m, buf *out);
/* True when id ends generation (any EOS / end-of-turn id the model declares). */
bool infer_model_is_eos(const infer_model *m, int32_t id);
/* BOS id, or -1. */
int32_t infer_model_bos(const infer_model *m);
/* The chat template (chat_template.jinja, tokenizer_config.json or GGUF), or NULL; and the
 * bos/eos token strings templates refer to ("" when unknown). */
const char *infer_model_chat_template(const infer_model *m);
const char *infer_model_bos_token(const infer_model *m);
const char *infer_model_eos_token(const infer_model *m);

/* ---- session: one sequence's run state ----------------------------------------------------------- */

typedef struct infer_session infer_session;

typedef struct infer_session_options {
    int threads;      /* <= 0: one per online core */
    int max_seq;      /* <= 0: the model's limit, capped at 4096 */
    bool kv_f32;      /* keep the KV cache in F32 (exact; tests) instead of F16 (half the memory) */
} infer_session_options;

infer_session *infer_session_new(const infer_model *m, const infer_session_options *opt, err *e);
void infer_session_free(infer_session *s);
/* Forgets every position from pos on (to reuse a shared prefix of the next prompt). */
void infer_session_rewind(infer_session *s, int pos);
/* Runs tokens[0..n) at the next positions; returns the logits (vocab floats) after the last
 * one, valid until the next call. NULL with e set when the context is full. */
const float *infer_session_forward(infer_session *s, const int32_t *tokens, int n, err *e);

/* ---- embeddings: encoder models (BERT) -------------------------------------------------------- */

/* Floats in one embedding: the hidden size times the pooling modes the model combines. */
int infer_model_embedding_dim(const infer_model *m);

/* Embeds one text at a time (its own thread pool and scratch; used by one thread at a time). */
typedef struct infer_embedder infer_embedder;
infer_embedder *infer_embedder_new(const infer_model *m, int threads, err *e);
void infer_embedder_free(infer_embedder *x);
/* Tokens one text may take: sentence-transformers' max_seq_length, else the model's positions. */
int infer_embedder_max_tokens(const infer_embedder *x);
/* Tokenizes text ([CLS] ... [SEP]), cuts it to the max tokens, runs the encoder and pools as
 * the model's sentence-transformers modules say (then normalises when they list Normalize).
 * out receives infer_model_embedding_dim floats; *n_tokens (when not NULL) the tokens used. */
int infer_embed_text(infer_embedder *x, const char *text, size_t len, float *out, size_t *n_tokens,
                     err *e);

/* ---- sampler -------------------------------------------------------------------------------- */

typedef struct infer_sampler_params {
    float temperature;          /* 0 = greedy */
    int top_k;                  /* 0 = off */
    float top_p;                /* 1 = off */
    float min_p;                /* 0 = off */
    float repetition_penalty;   /* 1 = off (CTRL-style, over prompt + output) */
    float frequency_penalty;    /* 0 = off */
    float presence_penalty;     /* 0 = off */
    uint64_t seed;
} infer_sampler_params;

typedef struct infer_sampler infer_sampler;
void infer_sampler_defaults(infer_sampler_params *p);
infer_sampler *infer_sampler_new(const infer_sampler_params *p, int vocab_size);
void infer_sampler_free(infer_sampler *s);
/* Records a token seen (prompt or output) for the penalties. */
void infer_sampler_accept(infer_sampler *s, int32_t id);
/* Picks the next id; logits are modified in place. */
int32_t infer_sampler_sample(infer_sampler *s, float *logits);

/* ---- generation: a conversation's turns on one session ------------------------------------------ */

/* A session, a sampler and the tokens the session holds; used by one thread at a time. */
typedef struct infer_generator infer_generator;

typedef struct infer_generate_options {
    int n_predict;              /* tokens to sample at most */
    bool ignore_eos;            /* keep going past end-of-sequence ids (benchmarks) */
    const char *const *stop;    /* stop once the turn's text ends with one of these (kept) */
    int n_stop;
    bool logits_only;           /* oracle tests: pick the largest logit, ignore EOS and stop
                                 * strings, make no text; on_logits sees every step */
} infer_generate_options;

typedef struct infer_generate_callbacks {
    /* Text the last token completed (whole UTF-8 characters), as it is generated; at the end of
     * a turn, the bytes of a character that never completed (as U+FFFD). */
    void (*on_text)(void *ctx, const char *text, size_t len);
    /* With logits_only: the step's chosen id and its logits (vocab floats, valid during the call). */
    void (*on_logits)(void *ctx, int step, int32_t chosen, const float *logits, int vocab);
    void *ctx;
} infer_generate_callbacks;

/* Totals over every turn so far. */
typedef struct infer_generate_stats {
    size_t prompt_tokens;       /* tokens run as prompts (a prefix reused from the last turn not counted) */
    double prompt_seconds;
    int generated;              /* tokens sampled, an end-of-sequence one included */
    double generate_seconds;    /* from the end of the prompt to the end of the turn */
} infer_generate_stats;

/* A session of m with so, sampling with sp. NULL with e set when the model is an encoder, the
 * context does not fit, or memory ran out. */
infer_generator *infer_generator_new(const infer_model *m, const infer_session_options *so,
                                     const infer_sampler_params *sp, err *e);
void infer_generator_free(infer_generator *g);
/* Runs prompt[0..n) after what the session holds, reusing their common prefix (a chat gives the
 * whole conversation each turn), then samples up to o->n_predict tokens, handing their text to
 * cb->on_text as it completes. Stops early at an end-of-sequence id (unless o->ignore_eos) or a
 * stop string. 0, or -1 with e set when the context filled up (the text until then was given). */
int infer_generator_turn(infer_generator *g, const int32_t *prompt, size_t n,
                         const infer_generate_options *o, const infer_generate_callbacks *cb, err *e);
const infer_generate_stats *infer_generator_stats(const infer_generator *g);

#endif
