/* forward.c — the transformer forward pass, llama2.c-style.
 *
 * A session is one sequence: its KV cache (F16 by default, F32 on request; [layer][position][kv_dim])
 * and scratch buffers
 * sized for a chunk of up to CHUNK tokens. infer_session_forward takes a run of tokens (a whole
 * prompt, or the one token just sampled), pushes them through the layers CHUNK at a time and
 * returns the logits of the last one. Within a chunk every matrix is read once for all tokens
 * (infer_matmul keeps a weight row hot across them), which is what makes the prompt faster
 * per token than decoding. Attention is causal over the cache: a decode step goes head by head
 * (parallel over heads); a prompt chunk goes as blocked matrix products per KV head and query
 * tile (Q·Kᵀ, softmax, P·V; parallel over those tiles), so that every query head of a GQA group
 * shares each K/V tile.
 *
 * llama family (llama, mistral, qwen2, qwen3), per layer:
 *     h   = x + Wo · attention(rope(Wq·n + bq), rope(Wk·n + bk), Wv·n + bv),  n = rmsnorm(x)
 *     out = h + Wdown · (silu(Wgate·n2) ⊙ Wup·n2),                             n2 = rmsnorm(h)
 * qwen3 additionally RMS-normalises each head of q and k before RoPE.
 * gpt2: learned positions, LayerNorm with bias, fused qkv, GELU (tanh) MLP, all with biases.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/internal.h"

#define CHUNK 128

struct infer_session {
    const infer_model *m;
    infer_pool *pool;
    int pos, max_seq;
    void *key_cache, *value_cache;        /* [layer][max_seq][kv_dim], F16 or F32 */
    bool kv_f32;
    float *x, *xb, *q, *k, *v, *att_out, *hb, *hb2;   /* CHUNK rows each */
    float *scores;                        /* [n_heads][max_seq] */
    float *attn_scratch;                  /* per pool thread, for blocked prompt attention; or NULL */
    float *logits;
};

static size_t attn_scratch_floats(const infer_config *c, int max_seq);
static bool attn_blocked_available(void);

static void *try_calloc(size_t n, size_t size, bool *ok)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        *ok = false;
    return p;
}

infer_session *infer_session_new(const infer_model *m, const infer_session_options *opt, err *e)
{
    const infer_config *c = &m->cfg;
    if (c->arch == ARCH_BERT) {
        err_set(e, 400, "NotAGenerator", "%s is an embeddings model (an encoder): use `hearth embed`",
                c->model_type);
        return NULL;
    }
    int threads = opt ? opt->threads : 0, max_seq = opt ? opt->max_seq : 0;
    if (max_seq <= 0)
        max_seq = c->max_seq < 4096 ? c->max_seq : 4096;
    if (max_seq > c->max_seq)
        max_seq = c->max_seq;
    infer_session *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(e, 500, "OutOfMemory", "out of memory");
        return NULL;
    }
    s->m = m;
    s->max_seq = max_seq;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, qd = (size_t)c->n_heads * c->head_dim;
    size_t wide = qd > (size_t)c->dim ? qd : (size_t)c->dim;
    if (c->arch == ARCH_GPT2)
        wide = 3 * (size_t)c->dim;
    bool ok = true;
    s->kv_f32 = opt && opt->kv_f32;
    size_t kv_elem = s->kv_f32 ? sizeof(float) : sizeof(uint16_t);
    s->key_cache = try_calloc((size_t)c->n_layers * (size_t)max_seq * kvd, kv_elem, &ok);
    s->value_cache = try_calloc((size_t)c->n_layers * (size_t)max_seq * kvd, kv_elem, &ok);
    s->x = try_calloc(CHUNK * (size_t)c->dim, sizeof(float), &ok);
    s->xb = try_calloc(CHUNK * wide, sizeof(float), &ok);
    s->q = try_calloc(CHUNK * wide, sizeof(float), &ok);
    s->k = try_calloc(CHUNK * kvd, sizeof(float), &ok);
    s->v = try_calloc(CHUNK * kvd, sizeof(float), &ok);
    s->att_out = try_calloc(CHUNK * wide, sizeof(float), &ok);
    s->hb = try_calloc(CHUNK * (size_t)c->ffn_dim, sizeof(float), &ok);
    s->hb2 = try_calloc(CHUNK * (size_t)c->ffn_dim, sizeof(float), &ok);
    s->scores = try_calloc((size_t)c->n_heads * (size_t)max_seq, sizeof(float), &ok);
    s->logits = try_calloc((size_t)c->vocab_size, sizeof(float), &ok);
    s->pool = infer_pool_new(threads);
    if (s->pool && attn_blocked_available())
        s->attn_scratch = try_calloc((size_t)infer_pool_threads(s->pool) * attn_scratch_floats(c, max_seq),
                                  sizeof(float), &ok);
    if (!ok || !s->pool) {
        infer_session_free(s);
        err_set(e, 500, "OutOfMemory", "out of memory for a %d-token context", max_seq);
        return NULL;
    }
    return s;
}

void infer_session_free(infer_session *s)
{
    if (!s)
        return;
    infer_pool_free(s->pool);
    free(s->key_cache);
    free(s->value_cache);
    free(s->x);
    free(s->xb);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att_out);
    free(s->hb);
    free(s->hb2);
    free(s->scores);
    free(s->attn_scratch);
    free(s->logits);
    free(s);
}

void infer_session_rewind(infer_session *s, int pos)
{
    if (pos >= 0 && pos < s->pos)
        s->pos = pos;   /* cache entries past pos are simply overwritten later */
}

/* ---- small ops ------------------------------------------------------------------------------- */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

void infer_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps)
{
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++)
        mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    float scale = (float)(1.0 / sqrt(var / n + eps));
    for (int i = 0; i < n; i++)
        out[i] = (float)(x[i] - mean) * scale * w[i] + b[i];
}

void infer_add_bias(float *x, const float *b, int n, int rows, int stride)
{
    if (!b)
        return;
    for (int t = 0; t < rows; t++)
        for (int i = 0; i < n; i++)
            x[(size_t)t * stride + i] += b[i];
}

/* Rotates one head in place. NEOX pairs (i, i+d/2) as HF does; interleaved (2i, 2i+1) for GGUF
 * llama, whose q/k rows the converter permuted. */
static void rope(float *h, int head_dim, int pos, const float *inv_freq, bool interleaved, float mscale)
{
    int half = head_dim / 2;
    for (int j = 0; j < half; j++) {
        float angle = (float)pos * inv_freq[j];
        float co = cosf(angle) * mscale, si = sinf(angle) * mscale;
        int a = interleaved ? 2 * j : j, b = interleaved ? 2 * j + 1 : j + half;
        float x0 = h[a], x1 = h[b];
        h[a] = x0 * co - x1 * si;
        h[b] = x0 * si + x1 * co;
    }
}

/* ---- attention ------------------------------------------------------------------------------- */

typedef struct attn_job {
    infer_session *s;
    int layer, pos;
    const float *q;   /* this token's query, all heads */
    float *out;       /* this token's attention output, all heads */
} attn_job;

static void attend_heads(void *ctx, int64_t begin, int64_t end)
{
    const attn_job *j = ctx;
    infer_session *s = j->s;
    const infer_config *c = &s->m->cfg;
    int hd = c->head_dim, kvd = c->n_kv_heads * hd, group = c->n_heads / c->n_kv_heads;
    float scale = c->attn_scale > 0 ? c->attn_scale : 1.0f / sqrtf((float)hd);
    int start = 0;
    bool sliding = c->arch == ARCH_GPT2 ? false : s->m->layers[j->layer].sliding;
    if (sliding && j->pos >= c->sliding_window)
        start = j->pos - c->sliding_window + 1;
    size_t layer_off = (size_t)j->layer * (size_t)s->max_seq * (size_t)kvd;
    for (int64_t h = begin; h < end; h++) {
        const float *q = j->q + h * hd;
        float *att = s->scores + h * s->max_seq;
        int kvh = (int)h / group;
        float maxv = -INFINITY;
        for (int t = start; t <= j->pos; t++) {
            size_t at = layer_off + (size_t)t * kvd + (size_t)kvh * hd;
            att[t] = (s->kv_f32 ? infer_vec_dot(q, (const float *)s->key_cache + at, hd)
                                : infer_vec_dot_f16(q, (const uint16_t *)s->key_cache + at, hd)) * scale;
            if (c->attn_softcap > 0)
                att[t] = tanhf(att[t] / c->attn_softcap) * c->attn_softcap;
            if (att[t] > maxv)
                maxv = att[t];
        }
        float sum = 0;
        for (int t = start; t <= j->pos; t++) {
            att[t] = expf(att[t] - maxv);
            sum += att[t];
        }
        float *out = j->out + h * hd;
        memset(out, 0, (size_t)hd * sizeof *out);
        for (int t = start; t <= j->pos; t++) {
            size_t at = layer_off + (size_t)t * kvd + (size_t)kvh * hd;
            if (s->kv_f32)
                infer_vec_axpy(out, att[t] / sum, (const float *)s->value_cache + at, hd);
            else
                infer_vec_axpy_f16(out, att[t] / sum, (const uint16_t *)s->value_cache + at, hd);
        }
    }
}

/* ---- prompt attention: blocked products -------------------------------------------------------
 *
 * A chunk of query tokens attends as matrix products rather than one token at a time. A work item
 * is one KV head and up to ATT_TQ query tokens: its group × tokens query rows share every K and V
 * row, so each tile of ATT_TK cached positions is converted from F16 once (K transposed, so one
 * register holds a score per position) and then multiplied against all the rows. Scores go to a
 * per-thread buffer, are masked (causal, sliding window) and soft-maxed per row, then P·V runs
 * over the same tiles. Needs AVX-512; elsewhere, and for one-token decode steps, attend_heads. */

#define ATT_TQ 32   /* query tokens per work item */
#define ATT_TK 16   /* cached positions per tile: one AVX-512 register of scores */

typedef struct attn_chunk_job {
    infer_session *s;
    int layer, n;            /* n query tokens at positions s->pos .. s->pos + n - 1 */
    const float *q;
    int q_stride;
    float *out;              /* n rows of n_heads × head_dim */
    int64_t items, workers;
} attn_chunk_job;

/* Floats of one worker's scratch: query rows, scores, a K tile and a V tile. */
static size_t attn_scratch_floats(const infer_config *c, int max_seq)
{
    size_t rows = (size_t)(c->n_heads / c->n_kv_heads) * ATT_TQ;
    size_t padded = ((size_t)max_seq + ATT_TK - 1) / ATT_TK * ATT_TK;
    return rows * ((size_t)c->head_dim + padded) + 2 * (size_t)ATT_TK * (size_t)c->head_dim;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define ATT_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")))

/* Cached row of hd elements (F16 or F32) as floats. */
ATT_AVX512 static void attn_load_row(const void *cache, bool f32, size_t at, float *out, int hd)
{
    if (f32) {
        memcpy(out, (const float *)cache + at, (size_t)hd * sizeof *out);
        return;
    }
    const uint16_t *h = (const uint16_t *)cache + at;
    int d = 0;
    for (; d + 16 <= hd; d += 16)
        _mm512_storeu_ps(out + d, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + d))));
    for (; d < hd; d++)
        out[d] = infer_f16_to_f32(h[d]);
}

/* scores[r][0..16) = (Q[r] · Kt[:, 0..16)) × scale for rows [0, rows); Kt is hd × ATT_TK. Eight
 * rows at a time, so that eight independent FMA chains hide the FMA latency. */
ATT_AVX512 static void attn_scores_tile(const float *Q, int rows, const float *kt, int hd, float scale,
                                        float *scores, size_t score_stride)
{
    __m512 sc = _mm512_set1_ps(scale);
    for (int r = 0; r < rows; r += 8) {
        /* written out by hand: as arrays, the compiler keeps the accumulators in memory */
#define ROW(i) (Q + (size_t)(r + (i) < rows ? r + (i) : rows - 1) * hd)   /* past the end: repeat */
        const float *q0 = ROW(0), *q1 = ROW(1), *q2 = ROW(2), *q3 = ROW(3);
        const float *q4 = ROW(4), *q5 = ROW(5), *q6 = ROW(6), *q7 = ROW(7);
#undef ROW
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int d = 0; d < hd; d++) {
            __m512 k = _mm512_loadu_ps(kt + (size_t)d * ATT_TK);
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(q0[d]), k, a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(q1[d]), k, a1);
            a2 = _mm512_fmadd_ps(_mm512_set1_ps(q2[d]), k, a2);
            a3 = _mm512_fmadd_ps(_mm512_set1_ps(q3[d]), k, a3);
            a4 = _mm512_fmadd_ps(_mm512_set1_ps(q4[d]), k, a4);
            a5 = _mm512_fmadd_ps(_mm512_set1_ps(q5[d]), k, a5);
            a6 = _mm512_fmadd_ps(_mm512_set1_ps(q6[d]), k, a6);
            a7 = _mm512_fmadd_ps(_mm512_set1_ps(q7[d]), k, a7);
        }
        __m512 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
        for (int i = 0; i < 8 && r + i < rows; i++)
            _mm512_storeu_ps(scores + (size_t)(r + i) * score_stride, _mm512_mul_ps(acc[i], sc));
    }
}

/* out0/out1[0..hd) += Σ_k p0/p1[k] · V[k][0..hd) over the tile's np positions; V is np × hd.
 * Two rows × 64 columns at a time: eight accumulators, each V load used twice. */
ATT_AVX512 static void attn_pv_tile(float *out0, float *out1, const float *p0, const float *p1,
                                    const float *v, int np, int hd)
{
    for (int d = 0; d < hd; d += 64) {
#define MASK(i) (hd - d - 16 * (i) >= 16 ? (__mmask16)0xFFFF \
                 : hd - d - 16 * (i) > 0 ? (__mmask16)((1u << (hd - d - 16 * (i))) - 1) : (__mmask16)0)
        __mmask16 m0 = MASK(0), m1 = MASK(1), m2 = MASK(2), m3 = MASK(3);
#undef MASK
        float *o0 = out0 + d, *o1 = out1 + d;
        __m512 a0 = _mm512_maskz_loadu_ps(m0, o0), a1 = _mm512_maskz_loadu_ps(m1, o0 + 16);
        __m512 a2 = _mm512_maskz_loadu_ps(m2, o0 + 32), a3 = _mm512_maskz_loadu_ps(m3, o0 + 48);
        __m512 b0 = _mm512_maskz_loadu_ps(m0, o1), b1 = _mm512_maskz_loadu_ps(m1, o1 + 16);
        __m512 b2 = _mm512_maskz_loadu_ps(m2, o1 + 32), b3 = _mm512_maskz_loadu_ps(m3, o1 + 48);
        for (int k = 0; k < np; k++) {
            __m512 w0 = _mm512_set1_ps(p0[k]), w1 = _mm512_set1_ps(p1[k]);
            const float *x = v + (size_t)k * hd + d;
            __m512 x0 = _mm512_maskz_loadu_ps(m0, x), x1 = _mm512_maskz_loadu_ps(m1, x + 16);
            __m512 x2 = _mm512_maskz_loadu_ps(m2, x + 32), x3 = _mm512_maskz_loadu_ps(m3, x + 48);
            a0 = _mm512_fmadd_ps(w0, x0, a0);
            a1 = _mm512_fmadd_ps(w0, x1, a1);
            a2 = _mm512_fmadd_ps(w0, x2, a2);
            a3 = _mm512_fmadd_ps(w0, x3, a3);
            b0 = _mm512_fmadd_ps(w1, x0, b0);
            b1 = _mm512_fmadd_ps(w1, x1, b1);
            b2 = _mm512_fmadd_ps(w1, x2, b2);
            b3 = _mm512_fmadd_ps(w1, x3, b3);
        }
        /* out1 last: it may be out0 itself, with the same sums */
        _mm512_mask_storeu_ps(o0, m0, a0);
        _mm512_mask_storeu_ps(o0 + 16, m1, a1);
        _mm512_mask_storeu_ps(o0 + 32, m2, a2);
        _mm512_mask_storeu_ps(o0 + 48, m3, a3);
        _mm512_mask_storeu_ps(o1, m0, b0);
        _mm512_mask_storeu_ps(o1 + 16, m1, b1);
        _mm512_mask_storeu_ps(o1 + 32, m2, b2);
        _mm512_mask_storeu_ps(o1 + 48, m3, b3);
    }
}

/* e^x for x <= 0 (scores less their maximum): 2^n · e^r with |r| <= ln2/2, e^r by its Taylor
 * series to r^7 (relative error under 1e-8, below float rounding), 2^n applied by scalef, which
 * goes smoothly to 0 for very negative x. */
ATT_AVX512 static __m512 attn_exp(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-200.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);    /* ln2, high bits */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);    /* ln2, the rest */
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* Soft-caps and soft-maxes row[a..b] in place and zeroes the rest of row[0..len), so that P·V can
 * run over whole tiles. */
ATT_AVX512 static void attn_softmax_row(float *row, int a, int b, int len, float softcap)
{
    if (softcap > 0)
        for (int i = a; i <= b; i++)
            row[i] = tanhf(row[i] / softcap) * softcap;
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int i = a; i <= b; i += 16) {
        __mmask16 m = b - i >= 15 ? (__mmask16)0xFFFF : (__mmask16)((1u << (b - i + 1)) - 1);
        vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, row + i));
    }
    __m512 maxv = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), vsum = _mm512_setzero_ps();
    for (int i = a; i <= b; i += 16) {
        __mmask16 m = b - i >= 15 ? (__mmask16)0xFFFF : (__mmask16)((1u << (b - i + 1)) - 1);
        __m512 e = _mm512_maskz_mov_ps(m, attn_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + i), maxv)));
        vsum = _mm512_add_ps(vsum, e);
        _mm512_mask_storeu_ps(row + i, m, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
    for (int i = a; i <= b; i += 16) {
        __mmask16 m = b - i >= 15 ? (__mmask16)0xFFFF : (__mmask16)((1u << (b - i + 1)) - 1);
        _mm512_mask_storeu_ps(row + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + i), inv));
    }
    memset(row, 0, (size_t)a * sizeof *row);
    memset(row + b + 1, 0, (size_t)(len - b - 1) * sizeof *row);
}

/* Whether the query at position pos sees any of positions [p0, p0 + np). */
static bool attn_tile_visible(const infer_session *s, bool sliding, int pos, int p0, int np)
{
    int window = s->m->cfg.sliding_window;
    if (pos < p0)
        return false;
    return !(sliding && pos >= window && pos - window + 1 >= p0 + np);
}

/* Where row r of work item (kvh, tokens from t0) goes in the attention output: row r is query
 * head kvh × group + r % group of token t0 + r / group. */
static float *attn_out_row(const attn_chunk_job *j, int kvh, int t0, int r)
{
    const infer_config *c = &j->s->m->cfg;
    int group = c->n_heads / c->n_kv_heads;
    return j->out + (size_t)(t0 + r / group) * (size_t)c->n_heads * c->head_dim +
           (size_t)(kvh * group + r % group) * c->head_dim;
}

/* One work item: KV head kvh and query tokens [t0, t1) of the chunk. */
ATT_AVX512 static void attend_item(const attn_chunk_job *j, int kvh, int t0, int t1, float *scratch)
{
    infer_session *s = j->s;
    const infer_config *c = &s->m->cfg;
    int hd = c->head_dim, kvd = c->n_kv_heads * hd;
    int group = c->n_heads / c->n_kv_heads, rows = (t1 - t0) * group;
    float scale = c->attn_scale > 0 ? c->attn_scale : 1.0f / sqrtf((float)hd);
    bool sliding = c->arch == ARCH_GPT2 ? false : s->m->layers[j->layer].sliding;
    size_t layer_off = (size_t)j->layer * (size_t)s->max_seq * (size_t)kvd + (size_t)kvh * hd;
    int last = s->pos + t1 - 1;                              /* the last position any row sees */
    int first = sliding ? s->pos + t0 - c->sliding_window + 1 : 0;
    if (first < 0)
        first = 0;
    int span = last - first + 1;
    size_t stride = ((size_t)span + ATT_TK - 1) / ATT_TK * ATT_TK;

    float *Q = scratch, *scores = Q + (size_t)rows * hd;
    float *kt = scores + (size_t)rows * stride, *vt = kt + (size_t)ATT_TK * hd;
    /* row r = (token t - t0) × group + g is query head kvh × group + g of token t */
    for (int t = t0; t < t1; t++)
        memcpy(Q + (size_t)(t - t0) * group * hd, j->q + (size_t)t * j->q_stride + (size_t)kvh * group * hd,
               (size_t)group * hd * sizeof(float));

    for (int p0 = first; p0 <= last; p0 += ATT_TK) {
        int np = last - p0 + 1 < ATT_TK ? last - p0 + 1 : ATT_TK;
        for (int k = 0; k < ATT_TK; k++) {
            if (k < np)
                attn_load_row(s->key_cache, s->kv_f32, layer_off + (size_t)(p0 + k) * kvd, vt, hd);
            for (int d = 0; d < hd; d++)
                kt[(size_t)d * ATT_TK + k] = k < np ? vt[d] : 0.0f;
        }
        attn_scores_tile(Q, rows, kt, hd, scale, scores + (p0 - first), stride);
    }

    for (int r = 0; r < rows; r++) {
        int pos = s->pos + t0 + r / group;
        int lo = sliding && pos >= c->sliding_window ? pos - c->sliding_window + 1 : 0;
        attn_softmax_row(scores + (size_t)r * stride, lo - first, pos - first, (int)stride, c->attn_softcap);
        memset(attn_out_row(j, kvh, t0, r), 0, (size_t)hd * sizeof(float));
    }

    for (int p0 = first; p0 <= last; p0 += ATT_TK) {
        int np = last - p0 + 1 < ATT_TK ? last - p0 + 1 : ATT_TK;
        for (int k = 0; k < np; k++)
            attn_load_row(s->value_cache, s->kv_f32, layer_off + (size_t)(p0 + k) * kvd, vt + (size_t)k * hd, hd);
        for (int r = 0; r < rows; r += 2) {
            int r1 = r + 1 < rows ? r + 1 : r;
            if (!attn_tile_visible(s, sliding, s->pos + t0 + r / group, p0, np) &&
                !attn_tile_visible(s, sliding, s->pos + t0 + r1 / group, p0, np))
                continue;   /* a row's scores outside its span are 0, so a pair runs together */
            attn_pv_tile(attn_out_row(j, kvh, t0, r), attn_out_row(j, kvh, t0, r1),
                         scores + (size_t)r * stride + (p0 - first), scores + (size_t)r1 * stride + (p0 - first),
                         vt, np, hd);
        }
    }
}

static bool attn_blocked_available(void)
{
    return infer_cpu_level() >= INFER_QGEMM_AVX512;
}
#else
static void attend_item(const attn_chunk_job *j, int kvh, int t0, int t1, float *scratch)
{
    (void)j, (void)kvh, (void)t0, (void)t1, (void)scratch;
}

static bool attn_blocked_available(void)
{
    return false;
}
#endif

/* Worker w takes items w, w + workers, ...: later query tiles see more positions, so striding
 * spreads the causal triangle evenly. */
static void attend_chunk_worker(void *ctx, int64_t begin, int64_t end)
{
    const attn_chunk_job *j = ctx;
    const infer_config *c = &j->s->m->cfg;
    size_t floats = attn_scratch_floats(c, j->s->max_seq);
    for (int64_t w = begin; w < end; w++)
        for (int64_t i = w; i < j->items; i += j->workers) {
            int kvh = (int)(i % c->n_kv_heads), tile = (int)(i / c->n_kv_heads);
            int t0 = tile * ATT_TQ, t1 = t0 + ATT_TQ < j->n ? t0 + ATT_TQ : j->n;
            attend_item(j, kvh, t0, t1, j->s->attn_scratch + (size_t)w * floats);
        }
}

/* Writes k/v rows of n tokens into the cache and attends each token over its prefix. */
static void attention(infer_session *s, int layer, int n, const float *q, int q_stride,
                      const float *k, const float *v, int kv_stride)
{
    const infer_config *c = &s->m->cfg;
    int kvd = c->n_kv_heads * c->head_dim, qd = c->n_heads * c->head_dim;
    size_t layer_off = (size_t)layer * (size_t)s->max_seq * (size_t)kvd;
    for (int t = 0; t < n; t++) {
        size_t at = layer_off + (size_t)(s->pos + t) * kvd;
        if (s->kv_f32) {
            memcpy((float *)s->key_cache + at, k + (size_t)t * kv_stride, (size_t)kvd * sizeof(float));
            memcpy((float *)s->value_cache + at, v + (size_t)t * kv_stride, (size_t)kvd * sizeof(float));
        } else {
            infer_f32_to_f16_row(k + (size_t)t * kv_stride, (uint16_t *)s->key_cache + at, kvd);
            infer_f32_to_f16_row(v + (size_t)t * kv_stride, (uint16_t *)s->value_cache + at, kvd);
        }
    }
    if (n > 1 && s->attn_scratch) {
        int64_t workers = infer_pool_threads(s->pool);
        attn_chunk_job job = {s, layer, n, q, q_stride, s->att_out,
                              (int64_t)c->n_kv_heads * ((n + ATT_TQ - 1) / ATT_TQ), workers};
        infer_pool_run(s->pool, workers, attend_chunk_worker, &job);
        return;
    }
    for (int t = 0; t < n; t++) {
        attn_job job = {s, layer, s->pos + t, q + (size_t)t * q_stride, s->att_out + (size_t)t * qd};
        infer_pool_run(s->pool, c->n_heads, attend_heads, &job);
    }
}

float infer_gelu_tanh(float x)
{
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

/* ---- llama family ---------------------------------------------------------------------------- */

static void llama_chunk(infer_session *s, const int32_t *tokens, int n)
{
    const infer_model *m = s->m;
    const infer_config *c = &m->cfg;
    int dim = c->dim, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    float mscale = c->rope_mscale > 0 ? c->rope_mscale : 1.0f;
    for (int t = 0; t < n; t++)
        infer_dequant_row(m->embed.type, m->embed.data + m->embed.row_bytes * (size_t)tokens[t],
                          s->x + (size_t)t * dim, dim);
    if (c->embed_scale > 0)
        for (size_t i = 0; i < (size_t)n * dim; i++)
            s->x[i] *= c->embed_scale;
    for (int l = 0; l < c->n_layers; l++) {
        const infer_layer *L = &m->layers[l];
        for (int t = 0; t < n; t++)
            rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, L->attn_norm, dim, c->norm_eps);
        infer_matmul(s->pool, s->q, s->xb, &L->wq, n);
        infer_matmul(s->pool, s->k, s->xb, &L->wk, n);
        infer_matmul(s->pool, s->v, s->xb, &L->wv, n);
        infer_add_bias(s->q, L->bq, qd, n, qd);
        infer_add_bias(s->k, L->bk, kvd, n, kvd);
        infer_add_bias(s->v, L->bv, kvd, n, kvd);
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < c->n_heads; h++) {
                float *qh = s->q + (size_t)t * qd + (size_t)h * hd;
                if (L->q_norm)
                    rmsnorm(qh, qh, L->q_norm, hd, c->norm_eps);
                rope(qh, hd, s->pos + t, L->rope_inv_freq, c->rope_interleaved, mscale);
            }
            for (int h = 0; h < c->n_kv_heads; h++) {
                float *kh = s->k + (size_t)t * kvd + (size_t)h * hd;
                if (L->k_norm)
                    rmsnorm(kh, kh, L->k_norm, hd, c->norm_eps);
                rope(kh, hd, s->pos + t, L->rope_inv_freq, c->rope_interleaved, mscale);
            }
        }
        attention(s, l, n, s->q, qd, s->k, s->v, kvd);
        infer_matmul(s->pool, s->xb, s->att_out, &L->wo, n);
        infer_add_bias(s->xb, L->bo, dim, n, dim);
        if (L->post_attn_norm)
            for (int t = 0; t < n; t++)
                rmsnorm(s->xb + (size_t)t * dim, s->xb + (size_t)t * dim, L->post_attn_norm, dim, c->norm_eps);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            s->x[i] += s->xb[i];

        for (int t = 0; t < n; t++)
            rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, L->ffn_norm, dim, c->norm_eps);
        infer_matmul(s->pool, s->hb, s->xb, &L->w_gate, n);
        infer_matmul(s->pool, s->hb2, s->xb, &L->w_up, n);
        for (size_t i = 0; i < (size_t)n * c->ffn_dim; i++) {
            float g = s->hb[i];
            s->hb[i] = (c->gelu_mlp ? infer_gelu_tanh(g) : g / (1.0f + expf(-g))) * s->hb2[i];
        }
        infer_matmul(s->pool, s->xb, s->hb, &L->w_down, n);
        if (L->post_ffn_norm)
            for (int t = 0; t < n; t++)
                rmsnorm(s->xb + (size_t)t * dim, s->xb + (size_t)t * dim, L->post_ffn_norm, dim, c->norm_eps);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            s->x[i] += s->xb[i];
    }
    float *last = s->x + (size_t)(n - 1) * dim;
    rmsnorm(s->xb, last, m->final_norm, dim, c->norm_eps);
    infer_matmul(s->pool, s->logits, s->xb, &m->output, 1);
    if (c->final_softcap > 0)
        for (int i = 0; i < c->vocab_size; i++)
            s->logits[i] = tanhf(s->logits[i] / c->final_softcap) * c->final_softcap;
}

/* ---- gpt2 ------------------------------------------------------------------------------------ */

static void gpt2_chunk(infer_session *s, const int32_t *tokens, int n)
{
    const infer_model *m = s->m;
    const infer_config *c = &m->cfg;
    int dim = c->dim;
    float *pe = s->xb;
    for (int t = 0; t < n; t++) {
        float *x = s->x + (size_t)t * dim;
        infer_dequant_row(m->embed.type, m->embed.data + m->embed.row_bytes * (size_t)tokens[t], x, dim);
        infer_dequant_row(m->pos_embed.type,
                          m->pos_embed.data + m->pos_embed.row_bytes * (size_t)(s->pos + t), pe, dim);
        for (int i = 0; i < dim; i++)
            x[i] += pe[i];
    }
    for (int l = 0; l < c->n_layers; l++) {
        const infer_layer *L = &m->layers[l];
        for (int t = 0; t < n; t++)
            infer_layernorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, L->attn_norm,
                      L->attn_norm_bias, dim, c->norm_eps);
        infer_matmul(s->pool, s->q, s->xb, &L->wqkv, n);   /* q | k | v per token */
        infer_add_bias(s->q, L->bqkv, 3 * dim, n, 3 * dim);
        attention(s, l, n, s->q, 3 * dim, s->q + dim, s->q + 2 * dim, 3 * dim);
        infer_matmul(s->pool, s->xb, s->att_out, &L->wo, n);
        infer_add_bias(s->xb, L->bo, dim, n, dim);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            s->x[i] += s->xb[i];
        for (int t = 0; t < n; t++)
            infer_layernorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, L->ffn_norm,
                      L->ffn_norm_bias, dim, c->norm_eps);
        infer_matmul(s->pool, s->hb, s->xb, &L->w_up, n);
        infer_add_bias(s->hb, L->b_up, c->ffn_dim, n, c->ffn_dim);
        for (size_t i = 0; i < (size_t)n * c->ffn_dim; i++)
            s->hb[i] = infer_gelu_tanh(s->hb[i]);
        infer_matmul(s->pool, s->xb, s->hb, &L->w_down, n);
        infer_add_bias(s->xb, L->b_down, dim, n, dim);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            s->x[i] += s->xb[i];
    }
    float *last = s->x + (size_t)(n - 1) * dim;
    infer_layernorm(s->xb, last, m->final_norm, m->final_norm_bias, dim, c->norm_eps);
    infer_matmul(s->pool, s->logits, s->xb, &m->output, 1);
}

const float *infer_session_forward(infer_session *s, const int32_t *tokens, int n, err *e)
{
    const infer_config *c = &s->m->cfg;
    if (n <= 0) {
        err_set(e, 400, "BadRequest", "no tokens to run");
        return NULL;
    }
    if (n > s->max_seq - s->pos) {
        err_set(e, 400, "ContextFull", "%d tokens do not fit: %d of %d context positions used", n,
                s->pos, s->max_seq);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
            err_set(e, 400, "BadRequest", "token id %d is outside the vocabulary (%d)", tokens[i],
                    c->vocab_size);
            return NULL;
        }
    for (int done = 0; done < n;) {
        int chunk = n - done < CHUNK ? n - done : CHUNK;
        if (c->arch == ARCH_GPT2)
            gpt2_chunk(s, tokens + done, chunk);
        else
            llama_chunk(s, tokens + done, chunk);
        s->pos += chunk;
        done += chunk;
    }
    return s->logits;
}
