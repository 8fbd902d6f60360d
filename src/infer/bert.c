/* bert.c — a BERT encoder turned into a sentence embedding, as sentence-transformers computes it.
 *
 * Unlike the generators in forward.c there is no cache and no step: a text's tokens go through
 * every layer at once, each attending to all the others (bidirectional), and the last layer's
 * token vectors are pooled into one vector. Per layer, post-LayerNorm (the original BERT):
 *     h   = LayerNorm(x + Wo · attention(Wq·x + bq, Wk·x + bk, Wv·x + bv) + bo)
 *     out = LayerNorm(h + Wdown · act(Wup·h + bup) + bdown)
 * after x = LayerNorm(word[id] + position[t] + token_type[0]). Pooling follows the model's
 * sentence-transformers modules (model.c reads them): CLS, max, mean, mean / √n, position-
 * weighted mean, last token — concatenated in that order when several are on — then an
 * optional L2 normalisation. A text longer than the model takes is cut as the library cuts it
 * (its [SEP] kept), like sentence-transformers' truncation.
 *
 * An embedder owns the thread pool and the scratch rows for one text of up to max_tokens
 * tokens; the model is shared read-only, so one model may serve several embedders.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/internal.h"

#define MATMUL_CHUNK 128   /* tokens per matrix product, as the generators' prompt chunks */

struct infer_embedder {
    const infer_model *m;
    infer_pool *pool;
    int max_tokens;
    float *x, *q, *k, *v, *ctx, *tmp, *hidden;   /* max_tokens rows (hidden: ffn_dim wide) */
    float *scores;                               /* [n_heads][max_tokens] */
};

int infer_model_embedding_dim(const infer_model *m)
{
    const infer_pooling *p = &m->pooling;
    int modes = p->cls + p->max + p->mean + p->mean_sqrt_len + p->weighted_mean + p->last_token;
    return m->cfg.arch == ARCH_BERT ? modes * m->cfg.dim : 0;
}

infer_embedder *infer_embedder_new(const infer_model *m, int threads, err *e)
{
    const infer_config *c = &m->cfg;
    if (c->arch != ARCH_BERT) {
        err_set(e, 400, "NotAnEncoder", "%s generates text: `hearth embed` takes an embeddings model "
                "(bert)", c->model_type);
        return NULL;
    }
    if (!m->tokenizer) {
        err_set(e, 400, "BadModel", "the model has no tokenizer (tokenizer.json)");
        return NULL;
    }
    infer_embedder *x = calloc(1, sizeof *x);
    if (!x) {
        err_set(e, 500, "OutOfMemory", "out of memory");
        return NULL;
    }
    x->m = m;
    x->max_tokens = m->pooling.max_tokens > 0 ? m->pooling.max_tokens : c->max_seq;
    size_t rows = (size_t)x->max_tokens, d = (size_t)c->dim;
    x->x = malloc(rows * d * sizeof(float));
    x->q = malloc(rows * d * sizeof(float));
    x->k = malloc(rows * d * sizeof(float));
    x->v = malloc(rows * d * sizeof(float));
    x->ctx = malloc(rows * d * sizeof(float));
    x->tmp = malloc(rows * d * sizeof(float));
    x->hidden = malloc(rows * (size_t)c->ffn_dim * sizeof(float));
    x->scores = malloc((size_t)c->n_heads * rows * sizeof(float));
    x->pool = infer_pool_new(threads);
    if (!x->x || !x->q || !x->k || !x->v || !x->ctx || !x->tmp || !x->hidden || !x->scores || !x->pool) {
        infer_embedder_free(x);
        err_set(e, 500, "OutOfMemory", "out of memory for %d-token inputs", (int)rows);
        return NULL;
    }
    return x;
}

void infer_embedder_free(infer_embedder *x)
{
    if (!x)
        return;
    infer_pool_free(x->pool);
    free(x->x);
    free(x->q);
    free(x->k);
    free(x->v);
    free(x->ctx);
    free(x->tmp);
    free(x->hidden);
    free(x->scores);
    free(x);
}

int infer_embedder_max_tokens(const infer_embedder *x) { return x->max_tokens; }

/* y = W·x + b for n tokens, in chunks. */
static void linear(infer_embedder *x, float *y, const float *in, const infer_matrix *w, const float *b, int n)
{
    for (int done = 0; done < n; done += MATMUL_CHUNK) {
        int chunk = n - done < MATMUL_CHUNK ? n - done : MATMUL_CHUNK;
        infer_matmul(x->pool, y + (size_t)done * w->rows, in + (size_t)done * w->cols, w, chunk);
    }
    infer_add_bias(y, b, (int)w->rows, n, (int)w->rows);
}

/* x[t] = LayerNorm(x[t] + add[t]) over n tokens. */
static void residual_norm(const infer_config *c, float *xs, const float *add, const float *w, const float *b, int n)
{
    for (int t = 0; t < n; t++) {
        float *row = xs + (size_t)t * c->dim;
        for (int i = 0; i < c->dim; i++)
            row[i] += add[(size_t)t * c->dim + i];
        infer_layernorm(row, row, w, b, c->dim, c->norm_eps);
    }
}

typedef struct attn_job {
    infer_embedder *x;
    int n;
} attn_job;

/* Heads [begin, end): every token attends to every token of the text. */
static void attend_heads(void *ctx, int64_t begin, int64_t end)
{
    const attn_job *j = ctx;
    infer_embedder *x = j->x;
    const infer_config *c = &x->m->cfg;
    int hd = c->head_dim, d = c->dim, n = j->n;
    float scale = 1.0f / sqrtf((float)hd);
    for (int64_t h = begin; h < end; h++) {
        float *att = x->scores + h * x->max_tokens;
        for (int i = 0; i < n; i++) {
            const float *q = x->q + (size_t)i * d + h * hd;
            float maxv = -INFINITY, sum = 0;
            for (int t = 0; t < n; t++) {
                att[t] = infer_vec_dot(q, x->k + (size_t)t * d + h * hd, hd) * scale;
                maxv = att[t] > maxv ? att[t] : maxv;
            }
            for (int t = 0; t < n; t++)
                sum += att[t] = expf(att[t] - maxv);
            float *out = x->ctx + (size_t)i * d + h * hd;
            memset(out, 0, (size_t)hd * sizeof *out);
            for (int t = 0; t < n; t++)
                infer_vec_axpy(out, att[t] / sum, x->v + (size_t)t * d + h * hd, hd);
        }
    }
}

static float activate(infer_activation a, float v)
{
    switch (a) {
    case ACT_GELU_TANH:
        return infer_gelu_tanh(v);
    case ACT_RELU:
        return v > 0 ? v : 0;
    default:   /* BERT's gelu: the exact erf form */
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

/* Runs the encoder over ids[0..n): x holds the last layer's token vectors. */
static void encode(infer_embedder *x, const int32_t *ids, int n)
{
    const infer_model *m = x->m;
    const infer_config *c = &m->cfg;
    int d = c->dim;
    for (int t = 0; t < n; t++) {
        float *row = x->x + (size_t)t * d, *pos = x->q, *type = x->k;   /* q, k: free until layer 0 */
        infer_dequant_row(m->embed.type, m->embed.data + m->embed.row_bytes * (size_t)ids[t], row, d);
        infer_dequant_row(m->pos_embed.type, m->pos_embed.data + m->pos_embed.row_bytes * (size_t)t, pos, d);
        infer_dequant_row(m->type_embed.type, m->type_embed.data, type, d);   /* one text: type 0 */
        for (int i = 0; i < d; i++)
            row[i] += pos[i] + type[i];
        infer_layernorm(row, row, m->final_norm, m->final_norm_bias, d, c->norm_eps);
    }
    for (int l = 0; l < c->n_layers; l++) {
        const infer_layer *L = &m->layers[l];
        linear(x, x->q, x->x, &L->wq, L->bq, n);
        linear(x, x->k, x->x, &L->wk, L->bk, n);
        linear(x, x->v, x->x, &L->wv, L->bv, n);
        attn_job job = {x, n};
        infer_pool_run(x->pool, c->n_heads, attend_heads, &job);
        linear(x, x->tmp, x->ctx, &L->wo, L->bo, n);
        residual_norm(c, x->x, x->tmp, L->attn_norm, L->attn_norm_bias, n);
        linear(x, x->hidden, x->x, &L->w_up, L->b_up, n);
        for (size_t i = 0; i < (size_t)n * c->ffn_dim; i++)
            x->hidden[i] = activate(c->activation, x->hidden[i]);
        linear(x, x->tmp, x->hidden, &L->w_down, L->b_down, n);
        residual_norm(c, x->x, x->tmp, L->ffn_norm, L->ffn_norm_bias, n);
    }
}

/* Pools n token vectors into out (modes concatenated in sentence-transformers' order), then
 * normalises to unit length when the model lists a Normalize module. */
static void pool_tokens(const infer_embedder *x, int n, float *out)
{
    const infer_pooling *p = &x->m->pooling;
    int d = x->m->cfg.dim;
    const float *tok = x->x;
    float *o = out;
    if (p->cls) {
        memcpy(o, tok, (size_t)d * sizeof *o);
        o += d;
    }
    if (p->max) {
        for (int i = 0; i < d; i++) {
            float best = tok[i];
            for (int t = 1; t < n; t++)
                best = fmaxf(best, tok[(size_t)t * d + i]);
            o[i] = best;
        }
        o += d;
    }
    if (p->mean || p->mean_sqrt_len) {
        for (int i = 0; i < d; i++) {
            double sum = 0;
            for (int t = 0; t < n; t++)
                sum += tok[(size_t)t * d + i];
            if (p->mean)
                o[i] = (float)(sum / n);
            if (p->mean_sqrt_len)
                o[i + (p->mean ? d : 0)] = (float)(sum / sqrt((double)n));
        }
        o += d * (p->mean + p->mean_sqrt_len);
    }
    if (p->weighted_mean) {   /* token t weighs t + 1 */
        double wsum = (double)n * (n + 1) / 2;
        for (int i = 0; i < d; i++) {
            double sum = 0;
            for (int t = 0; t < n; t++)
                sum += (double)(t + 1) * tok[(size_t)t * d + i];
            o[i] = (float)(sum / wsum);
        }
        o += d;
    }
    if (p->last_token) {
        memcpy(o, tok + (size_t)(n - 1) * d, (size_t)d * sizeof *o);
        o += d;
    }
    if (p->normalize) {
        size_t len = (size_t)(o - out);
        double ss = 0;
        for (size_t i = 0; i < len; i++)
            ss += (double)out[i] * out[i];
        double norm = fmax(sqrt(ss), 1e-12);
        for (size_t i = 0; i < len; i++)
            out[i] = (float)(out[i] / norm);
    }
}

/* Embeds token ids that already hold the special tokens. */
static int embed_ids(infer_embedder *x, const int32_t *ids, size_t n, float *out, err *e)
{
    const infer_config *c = &x->m->cfg;
    if (n == 0)
        return err_set(e, 400, "BadRequest", "no tokens to embed");
    if (n > (size_t)x->max_tokens)
        return err_set(e, 400, "BadRequest", "%zu tokens, but the model takes at most %d", n, x->max_tokens);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return err_set(e, 400, "BadRequest", "token id %d is outside the vocabulary (%d)", ids[i],
                           c->vocab_size);
    encode(x, ids, (int)n);
    pool_tokens(x, (int)n, out);
    return 0;
}

int infer_embed_text(infer_embedder *x, const char *text, size_t len, float *out, size_t *n_tokens, err *e)
{
    const infer_tokenizer *t = x->m->tokenizer;
    buf lower = BUF_INIT;
    if (x->m->pooling.lowercase) {   /* sentence-transformers' do_lower_case, before the tokenizer */
        infer_text_lowercase(text, len, &lower);
        text = lower.data ? lower.data : "";
        len = lower.len;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = infer_tokenize(t, text, len, true, &ids, &n, e);
    if (rc == 0) {
        infer_tokenizer_truncate(t, ids, &n, (size_t)x->max_tokens);
        rc = embed_ids(x, ids, n, out, e);
    }
    if (n_tokens)
        *n_tokens = n;
    free(ids);
    buf_free(&lower);
    return rc;
}
