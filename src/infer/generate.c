/* generate.c — a conversation's turns on one session: prompt in, tokens out as text.
 *
 * A generator holds a session (the KV cache), a sampler and the history of every token the
 * session holds. A turn runs its prompt after that history, reusing the longest common prefix
 * (a chat re-renders the whole conversation each turn, and only the new tail needs the forward
 * pass), then samples until an end-of-sequence id, a stop string or the token budget. Text goes
 * to the caller's callback as it is completed, whole UTF-8 characters only; nothing is printed
 * here. The caller reads the timings from the stats.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer/internal.h"

struct infer_generator {
    const infer_model *m;
    infer_tokenizer *tok;     /* NULL: a model without a vocabulary streams no text */
    infer_session *s;
    infer_sampler *smp;
    float *logits;            /* a copy the sampler may change */
    int32_t *hist;            /* every token the session holds, in order */
    size_t nhist;
    infer_generate_stats stats;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

infer_generator *infer_generator_new(const infer_model *m, const infer_session_options *so,
                                     const infer_sampler_params *sp, err *e)
{
    infer_generator *g = calloc(1, sizeof *g);
    if (!g) {
        err_set(e, 500, "OutOfMemory", "out of memory");
        return NULL;
    }
    g->m = m;
    g->tok = infer_model_tokenizer(m);
    g->s = infer_session_new(m, so, e);
    if (!g->s) {
        free(g);
        return NULL;
    }
    g->smp = infer_sampler_new(sp, infer_model_vocab_size(m));
    g->logits = malloc((size_t)infer_model_vocab_size(m) * sizeof *g->logits);
    if (!g->smp || !g->logits) {
        err_set(e, 500, "OutOfMemory", "out of memory");
        infer_generator_free(g);
        return NULL;
    }
    return g;
}

void infer_generator_free(infer_generator *g)
{
    if (!g)
        return;
    free(g->logits);
    free(g->hist);
    infer_sampler_free(g->smp);
    infer_session_free(g->s);
    free(g);
}

const infer_generate_stats *infer_generator_stats(const infer_generator *g) { return &g->stats; }

static void hist_push(infer_generator *g, int32_t id)
{
    int32_t *h = realloc(g->hist, (g->nhist + 1) * sizeof *g->hist);
    if (!h)
        abort();
    g->hist = h;
    g->hist[g->nhist++] = id;
}

static void emit(const infer_generate_callbacks *cb, const buf *piece)
{
    if (piece->len && cb && cb->on_text)
        cb->on_text(cb->ctx, piece->data, piece->len);
}

static int32_t argmax(const float *logits, int vocab)
{
    int32_t best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

int infer_generator_turn(infer_generator *g, const int32_t *prompt, size_t n,
                         const infer_generate_options *o, const infer_generate_callbacks *cb, err *e)
{
    size_t common = 0;
    while (common < g->nhist && common < n && g->hist[common] == prompt[common])
        common++;
    if (common == n && n > 0)
        common--;   /* the last prompt token must run to give fresh logits */
    infer_session_rewind(g->s, (int)common);
    g->nhist = common;
    for (size_t i = common; i < n; i++) {
        hist_push(g, prompt[i]);
        infer_sampler_accept(g->smp, prompt[i]);
    }
    int vocab = infer_model_vocab_size(g->m);
    bool text_out = !o->logits_only && g->tok;
    infer_stream stream;
    infer_stream_init(&stream);
    buf piece = BUF_INIT, text = BUF_INIT;
    double t0 = now_s();
    const float *l = infer_session_forward(g->s, prompt + common, (int)(n - common), e);
    g->stats.prompt_seconds += now_s() - t0;
    g->stats.prompt_tokens += n - common;
    double t1 = now_s();
    for (int step = 0; l && step < o->n_predict; step++) {
        memcpy(g->logits, l, (size_t)vocab * sizeof *g->logits);
        int32_t next;
        if (o->logits_only) {
            next = argmax(g->logits, vocab);
            if (cb && cb->on_logits)
                cb->on_logits(cb->ctx, step, next, g->logits, vocab);
        } else {
            next = infer_sampler_sample(g->smp, g->logits);
        }
        g->stats.generated++;
        if (!o->logits_only && !o->ignore_eos && infer_model_is_eos(g->m, next))
            break;
        infer_sampler_accept(g->smp, next);
        hist_push(g, next);
        if (text_out) {
            buf_reset(&piece);
            infer_stream_push(&stream, g->tok, next, &piece);
            emit(cb, &piece);
            if (piece.len)
                buf_append(&text, piece.data, piece.len);
            bool stop = false;
            for (int k = 0; k < o->n_stop && !stop; k++)
                stop = text.len && text_ends_with(text.data, o->stop[k]);
            if (stop)
                break;
        }
        if (step + 1 < o->n_predict)
            l = infer_session_forward(g->s, &next, 1, e);
    }
    if (text_out) {
        buf_reset(&piece);
        infer_stream_finish(&stream, &piece);
        emit(cb, &piece);
    }
    g->stats.generate_seconds += now_s() - t1;
    buf_free(&piece);
    buf_free(&text);
    infer_stream_free(&stream);
    return l ? 0 : -1;
}
