/* infer/internal.h — what the files of the inference module share with each other.
 *
 * Not part of the public interface (that is infer.h). The module is laid out llama2.c-style:
 *   cpu.c          what the CPU lets the kernels use (AVX2, AVX-512, VNNI, AMX), asked once
 *   tensor.c       dtypes, fp16/bf16 conversion, block dequantisation, dot products, the float
 *                  matrix products (decode, and prompts the two below do not take)
 *   qgemm.c        prompt products of quantised weights in int8 (activations quantised per call)
 *   bgemm.c        prompt products of F16 / BF16 weights on AMX-BF16 tiles
 *   matmul.c       y = W·x: picks qgemm.c, bgemm.c or tensor.c's float kernels for a product
 *   pool.c         a fixed thread pool that splits row ranges between cores
 *   safetensors.c  safetensors headers (single file and sharded index), memory-mapped
 *   gguf.c         GGUF v2/v3 metadata and tensor directory, memory-mapped
 *   model.c        config.json / GGUF metadata → infer_config, tensors bound to layer weights
 *   forward.c      the transformer forward pass for one token (llama family and gpt2)
 *   bert.c         the BERT encoder over a whole text, pooled into one embedding
 *   tokenizer.c    tokenizer.json / GGUF vocab: BPE (byte-level and byte-fallback), WordPiece, decode
 *   sampler.c      greedy, temperature, top-k, top-p, min-p, penalties, seeded RNG
 *   generate.c     a conversation's turns on a session: prefix reuse, sampling, stop rules
 * The commands in front of it (`hearth run`, `hearth embed`) are src/cli/; nothing here prints.
 */
#ifndef HEARTH_INFER_INTERNAL_H
#define HEARTH_INFER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "infer/infer.h"

/* ---- dtypes and kernels (tensor.c) ------------------------------------------------------- */

typedef enum {
    INFER_F32,
    INFER_F16,
    INFER_BF16,
    INFER_Q8_0,
    INFER_Q4_0,
    INFER_Q4_K,
    INFER_Q6_K,
    INFER_DTYPE_COUNT
} infer_dtype;

const char *infer_dtype_name(infer_dtype t);
/* Elements per block (1 for plain floats, 32 or 256 for quantised types) and bytes per block. */
int infer_dtype_block(infer_dtype t);
size_t infer_dtype_block_bytes(infer_dtype t);
/* Bytes taken by n elements, or SIZE_MAX when n is not a whole number of blocks. */
size_t infer_dtype_row_bytes(infer_dtype t, int64_t n);

float infer_f16_to_f32(uint16_t h);
uint16_t infer_f32_to_f16(float f);
float infer_bf16_to_f32(uint16_t h);

/* A matrix as the forward pass sees it: rows of `cols` elements, row-major, `type` blocks. */
typedef struct infer_matrix {
    infer_dtype type;
    const uint8_t *data;
    int64_t rows, cols;
    size_t row_bytes;
} infer_matrix;

/* Quantises n floats (a whole number of 32-blocks) to Q8_0 or Q4_0 exactly as llama.cpp's
 * reference quantisers do. */
void infer_quantize_row(infer_dtype t, const float *x, uint8_t *out, int64_t n);

/* Q4_K's packed 6-bit scale and min of sub-block j (0..7) from its 12 scale bytes s
 * (llama.cpp's get_scale_min_k4); tensor.c and qgemm.c both unpack Q4_K. */
static inline void infer_q4k_scale_min(int j, const uint8_t *s, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Dequantises n elements (a whole number of blocks) of row into out. */
void infer_dequant_row(infer_dtype t, const void *row, float *out, int64_t n);
/* dot(row, x) over n elements; the portable reference every SIMD kernel must agree with. */
float infer_dot_row(infer_dtype t, const void *row, const float *x, int64_t n);

typedef struct infer_pool infer_pool;
infer_pool *infer_pool_new(int threads);
void infer_pool_free(infer_pool *p);
int infer_pool_threads(const infer_pool *p);
/* Calls fn(ctx, begin, end) over [0, n) split into one contiguous range per thread and waits. */
void infer_pool_run(infer_pool *p, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end),
                    void *ctx);

/* Small vector helpers for attention (SIMD when the CPU has it). */
float infer_vec_dot(const float *a, const float *b, int n);
void infer_vec_axpy(float *y, float a, const float *x, int n);
/* The same against an F16 vector (the F16 KV cache), and F32 → F16 rows. */
float infer_vec_dot_f16(const float *a, const uint16_t *b, int n);
void infer_vec_axpy_f16(float *y, float a, const uint16_t *x, int n);
void infer_f32_to_f16_row(const float *x, uint16_t *out, int n);

/* y[rows] = W · x for each of n_tok inputs (x is n_tok × cols, y is n_tok × rows), by the best
 * kernels for the weights' type, the CPU and n_tok (matmul.c). */
void infer_matmul(infer_pool *p, float *y, const float *x, const infer_matrix *w, int n_tok);
/* The same in float arithmetic on the weights as stored, any type (tensor.c): every decode
 * product, and the prompt products that qgemm.c and bgemm.c do not take. */
void infer_matmul_float(infer_pool *p, float *y, const float *x, const infer_matrix *w, int n_tok);

/* ---- what the CPU can run (cpu.c) --------------------------------------------------------- */

/* AVX2 + FMA (+ F16C), and AVX-512 F/BW/VL/DQ. Cheap after the first call, but a call: a hot
 * loop keeps its own copy. */
bool infer_cpu_has_avx2(void);
bool infer_cpu_has_avx512(void);

/* Kernel levels, in the order of what they need from the CPU. */
typedef enum {
    INFER_QGEMM_PORTABLE,
    INFER_QGEMM_AVX2,          /* AVX2 + FMA */
    INFER_QGEMM_AVX512,        /* AVX-512 F/BW/VL/DQ */
    INFER_QGEMM_AVX512_VNNI,   /* and vpdpbusd */
    INFER_QGEMM_AMX,           /* and AMX-INT8 tiles, which the kernel lets this process use */
} infer_qgemm_level;

/* The best level this CPU runs. The first call that reaches AMX asks Linux for the tile state. */
infer_qgemm_level infer_cpu_level(void);
/* AMX-BF16 tiles that this process may use. */
bool infer_have_amx_bf16(void);
/* Loads this thread's tile configuration (palette 1): tile i has rows[i] rows of colsb[i] bytes,
 * for i < n; the other tiles are unused. */
void infer_amx_configure(int n, const uint8_t *rows, const uint16_t *colsb);

/* ---- prompt products (qgemm.c, bgemm.c) ----------------------------------------------------- */

/* Prompt products for Q8_0 / Q4_0 / Q4_K / Q6_K weights in int8 arithmetic (qgemm.c): the
 * activations are quantised once per call, as llama.cpp does (32-blocks for Q8_0 and Q4_0,
 * 256-blocks for the K-quants), then meet the weights in integer dot products. level caps the
 * kernel (tests use it to run every one); false when the type is not one of these or memory ran
 * out, and nothing was written. */
bool infer_qgemm_supports(infer_dtype t);
bool infer_qgemm(infer_pool *p, float *y, const float *x, const infer_matrix *w, int n_tok,
                 infer_qgemm_level level);

/* Prompt products for F16 / BF16 weights on AMX-BF16 tiles (bgemm.c), every number split into
 * two bfloat16 parts so that the result keeps float32-class accuracy; false (nothing written)
 * when the CPU lacks AMX-BF16 or Linux refuses it, the type is another, the row length is not a
 * multiple of 32, n_tok < 2, or memory ran out. */
bool infer_bgemm(infer_pool *p, float *y, const float *x, const infer_matrix *w, int n_tok);

/* ---- tensor directory shared by the file readers (safetensors.c, gguf.c) ------------------- */

typedef struct infer_tensor_entry {
    char *name;
    infer_dtype type;
    int ndim;
    int64_t shape[4];     /* row-major: outermost first, shape[ndim-1] is the row length */
    const uint8_t *data;  /* points into a mapping owned by the tensor set */
    size_t nbytes;
} infer_tensor_entry;

typedef struct infer_tensor_set {
    infer_tensor_entry *items;
    size_t count, cap;
    struct infer_mapping { void *addr; size_t len; } *maps;
    size_t nmaps;
} infer_tensor_set;

void infer_tensor_set_free(infer_tensor_set *ts);
const infer_tensor_entry *infer_tensor_find(const infer_tensor_set *ts, const char *name);
/* Maps a whole file read-only; the mapping is owned by ts. */
int infer_map_file(infer_tensor_set *ts, const char *path, const uint8_t **data, size_t *size,
                   err *e);
void infer_tensor_add(infer_tensor_set *ts, const infer_tensor_entry *entry);

/* Parses a safetensors file image (header + data) into ts. */
int infer_safetensors_parse(infer_tensor_set *ts, const uint8_t *data, size_t size,
                            const char *what, err *e);
/* Loads model.safetensors, or every shard named by model.safetensors.index.json, from dir. */
int infer_safetensors_load_dir(infer_tensor_set *ts, const char *dir, err *e);

/* ---- GGUF (gguf.c) -------------------------------------------------------------------------- */

typedef enum {
    GGUF_U8 = 0, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL,
    GGUF_STRING, GGUF_ARRAY, GGUF_U64, GGUF_I64, GGUF_F64, GGUF_TYPE_COUNT
} gguf_type;

typedef struct gguf_kv {
    char *key;
    gguf_type type;
    gguf_type elem_type;   /* for arrays */
    uint64_t count;        /* for arrays */
    const uint8_t *value;  /* raw little-endian bytes in the mapping */
} gguf_kv;

typedef struct gguf_file {
    uint32_t version;
    gguf_kv *kv;
    size_t nkv;
} gguf_file;

/* Parses a GGUF image: metadata into g, tensors into ts (pointing into data). */
int infer_gguf_parse(gguf_file *g, infer_tensor_set *ts, const uint8_t *data, size_t size,
                     err *e);
void infer_gguf_free(gguf_file *g);
const gguf_kv *infer_gguf_find(const gguf_file *g, const char *key);
/* Numeric value of a scalar key of any integer/float/bool type; false when absent, not scalar or
 * not finite. */
bool infer_gguf_number(const gguf_file *g, const char *key, double *out);
/* The same, clamped to +-1e9 so that a cast to int is always defined (a value that large is
 * refused later by the model's own checks). */
bool infer_gguf_count(const gguf_file *g, const char *key, double *out);
/* A string key as a new NUL-terminated copy (caller frees), NULL when absent. */
char *infer_gguf_string(const gguf_file *g, const char *key);
/* Walks an array of strings: returns pointers into the mapping with lengths (caller frees the
 * arrays), or -1 when the key is absent or not an array of strings. */
int infer_gguf_string_array(const gguf_file *g, const char *key, const char ***strs,
                            size_t **lens, size_t *count);
/* A numeric array as doubles (caller frees *out); -1 when absent or not numeric. */
int infer_gguf_number_array(const gguf_file *g, const char *key, double **out, size_t *count);

/* ---- tokenizer (tokenizer.c) ----------------------------------------------------------------- */

int infer_tokenizer_from_gguf(infer_tokenizer **out, const gguf_file *g, err *e);
/* Appends s lowercased code point by code point (Unicode, as the library's Lowercase). */
void infer_text_lowercase(const char *s, size_t n, buf *out);

/* ---- small ops of the forward passes (forward.c) ---------------------------------------------- */

void infer_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps);
/* x[t][i] += b[i] for rows t of `stride` floats; nothing when b is NULL. */
void infer_add_bias(float *x, const float *b, int n, int rows, int stride);
float infer_gelu_tanh(float x);

/* ---- model (model.c) --------------------------------------------------------------------- */

typedef enum { ARCH_LLAMA, ARCH_GPT2, ARCH_BERT } infer_arch;
typedef enum { ACT_GELU, ACT_GELU_TANH, ACT_RELU } infer_activation;

/* How an encoder's token vectors become one embedding: sentence-transformers' Pooling module
 * (modes concatenate in this order when several are on) and Normalize module. */
typedef struct infer_pooling {
    bool cls, max, mean, mean_sqrt_len, weighted_mean, last_token;
    bool normalize;              /* unit L2 length */
    bool lowercase;              /* sentence_bert_config.json do_lower_case: lowercase the text first */
    int max_tokens;              /* max_seq_length; 0 = the model's positions */
} infer_pooling;

typedef struct infer_config {
    char model_type[32];
    infer_arch arch;
    int dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab_size, max_seq;
    float norm_eps;
    float rope_theta;
    bool rope_interleaved;       /* GGUF llama: pairs (2i, 2i+1); otherwise NEOX pairs (i, i+d/2) */
    int rope_scaling;            /* 0 none, 1 linear, 2 llama3, 3 yarn */
    float rope_factor, rope_low_freq, rope_high_freq;   /* yarn: beta_fast, beta_slow */
    float rope_mscale;           /* yarn attention factor on cos/sin; 0 = 1 */
    int rope_orig_ctx;
    int sliding_window;          /* 0 = none */
    bool qk_norm;
    bool tied_embeddings;
    /* Gemma: (1+w) norms, GeGLU, embeddings × √hidden, own attention scale, soft-capping,
     * norms after attention and around the MLP, sliding layers with their own RoPE base. */
    bool gemma, gelu_mlp, post_norms;
    float embed_scale;           /* 0 = 1 */
    float attn_scale;            /* 0 = 1/√head_dim */
    float attn_softcap, final_softcap;   /* 0 = none */
    float rope_local_theta;      /* RoPE base of sliding layers (Gemma 3); 0 = rope_theta */
    int sliding_pattern;         /* Gemma 3: every n-th layer is global; 0 = see sliding_all/alt */
    bool sliding_alternate;      /* Gemma 2: even layers slide */
    uint8_t *layer_sliding;      /* per layer, from config `layer_types` (owned by the model) */
    /* BERT: token type embeddings, the MLP's activation. */
    int type_vocab_size;
    infer_activation activation;
} infer_config;

/* BERT (post-norm) reuses these: attn_norm = attention.output.LayerNorm, ffn_norm =
 * output.LayerNorm, w_up/b_up = intermediate, w_down/b_down = output. */
typedef struct infer_layer {
    float *attn_norm, *attn_norm_bias, *ffn_norm, *ffn_norm_bias;
    float *q_norm, *k_norm;
    float *post_attn_norm, *pre_ffn_norm, *post_ffn_norm;   /* Gemma 2/3 */
    bool sliding;                /* this layer attends within cfg.sliding_window */
    const float *rope_inv_freq;  /* this layer's RoPE frequencies */
    float *bq, *bk, *bv, *bo, *bqkv, *b_up, *b_down;
    infer_matrix wq, wk, wv, wo, wqkv, w_gate, w_up, w_down;
} infer_layer;

struct infer_model {
    infer_config cfg;
    infer_tensor_set tensors;
    gguf_file gguf;
    bool is_gguf;
    infer_matrix embed, output, pos_embed;
    infer_matrix type_embed;     /* BERT token types; the embeddings' LayerNorm is final_norm */
    infer_pooling pooling;       /* BERT: sentence-transformers pooling */
    float *final_norm, *final_norm_bias;
    infer_layer *layers;
    float *rope_inv_freq;        /* head_dim/2 frequencies after scaling */
    float *rope_local_inv_freq;  /* sliding layers' frequencies (Gemma 3), or NULL */
    void **owned;                /* converted copies (norms, biases, transposed gpt2 weights) */
    size_t nowned;
    infer_tokenizer *tokenizer;
    int32_t *eos_ids;
    size_t n_eos;
    int32_t bos_id;
    char *chat_template;
    char *bos_token, *eos_token;
    size_t weight_bytes;
    infer_dtype quantize;        /* INFER_F32 = keep as stored */
};

#endif
