/* sampler.c — from logits to the next token.
 *
 * Order of operations follows transformers / TGI: penalties on the raw logits (repetition,
 * CTRL-style over prompt + output; frequency and presence over the output only), then
 * temperature, then top-k, top-p and min-p on the softmax, then one draw. Temperature 0 is
 * greedy argmax (ties go to the lowest id, as in torch.argmax). The RNG is xoshiro256** seeded
 * through splitmix64, so a seed reproduces a run on any machine.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/internal.h"

struct infer_sampler {
    infer_sampler_params p;
    int vocab;
    uint64_t rng[4];
    uint8_t *seen_prompt;   /* per id: appeared in prompt or output */
    uint32_t *count_out;    /* per id: occurrences in the output */
    bool in_output;
    struct cand { float p; int32_t id; } *cand;
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t *s)
{
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double next_unit(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }

void infer_sampler_defaults(infer_sampler_params *p)
{
    *p = (infer_sampler_params){.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0,
                                .repetition_penalty = 1, .seed = 0};
}

infer_sampler *infer_sampler_new(const infer_sampler_params *p, int vocab_size)
{
    infer_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = *p;
    s->vocab = vocab_size;
    uint64_t seed = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&seed);
    s->seen_prompt = calloc((size_t)vocab_size, 1);
    s->count_out = calloc((size_t)vocab_size, sizeof *s->count_out);
    s->cand = calloc((size_t)vocab_size, sizeof *s->cand);
    if (!s->seen_prompt || !s->count_out || !s->cand) {
        infer_sampler_free(s);
        return NULL;
    }
    return s;
}

void infer_sampler_free(infer_sampler *s)
{
    if (!s)
        return;
    free(s->seen_prompt);
    free(s->count_out);
    free(s->cand);
    free(s);
}

void infer_sampler_accept(infer_sampler *s, int32_t id)
{
    if (id < 0 || id >= s->vocab)
        return;
    s->seen_prompt[id] = 1;
    if (s->in_output)
        s->count_out[id]++;
}

static int cmp_cand(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int32_t infer_sampler_sample(infer_sampler *s, float *logits)
{
    const infer_sampler_params *p = &s->p;
    int n = s->vocab;
    s->in_output = true;   /* everything accepted from now on is output */
    for (int i = 0; i < n; i++) {
        if (s->seen_prompt[i] && p->repetition_penalty != 1 && p->repetition_penalty > 0)
            logits[i] = logits[i] > 0 ? logits[i] / p->repetition_penalty
                                      : logits[i] * p->repetition_penalty;
        if (s->count_out[i]) {
            logits[i] -= p->frequency_penalty * (float)s->count_out[i];
            logits[i] -= p->presence_penalty;
        }
    }
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    if (p->temperature <= 0)
        return best;

    /* Softmax at temperature, then the filters over candidates sorted by probability. */
    for (int i = 0; i < n; i++) {   /* unnormalised: the filters only compare and re-sum */
        s->cand[i].id = i;
        s->cand[i].p = expf((logits[i] - logits[best]) / p->temperature);
    }
    int k = n;
    if (p->top_k > 0 && p->top_k < n)
        k = p->top_k;
    /* Partial work would be faster; a full sort keeps the order exact and is fine per token. */
    qsort(s->cand, (size_t)n, sizeof *s->cand, cmp_cand);
    double kept = 0;
    for (int i = 0; i < k; i++)
        kept += s->cand[i].p;
    if (p->top_p > 0 && p->top_p < 1) {
        double acc = 0;
        for (int i = 0; i < k; i++) {
            acc += s->cand[i].p;
            if (acc >= p->top_p * kept) {
                k = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0) {
        float floor_p = p->min_p * s->cand[0].p;
        int j = 1;
        while (j < k && s->cand[j].p >= floor_p)
            j++;
        k = j;
    }
    double total = 0;
    for (int i = 0; i < k; i++)
        total += s->cand[i].p;
    double r = next_unit(s->rng) * total, acc = 0;
    for (int i = 0; i < k; i++) {
        acc += s->cand[i].p;
        if (r < acc)
            return s->cand[i].id;
    }
    return s->cand[k - 1].id;
}
