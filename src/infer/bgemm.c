/* bgemm.c — prompt matrix products for F16 and BF16 weights on AMX-BF16 tiles.
 *
 * A tile multiply (TDPBF16PS) does 16 rows × 16 tokens × 32 products of bfloat16 pairs, summed
 * in float32, in one instruction: about sixteen times what the AVX-512 float kernel (tensor.c's
 * gemm8) does in the same time. bfloat16 keeps only 8 significant bits, too few on its own (the
 * float64 oracle wants 1e-3 on the logits, and an F16 weight has 11 bits), so every number is
 * split in two bfloat16 parts, hi = bf16(v) and lo = bf16(v − hi):
 *
 *   - an F16 weight is exactly hi + lo (11 significant bits fit in 8 + 8);
 *   - an F32 activation keeps 16 significant bits (a relative error below 2^-16);
 *
 * and a product takes three tile multiplies, w·x ≈ hi_w·hi_x + hi_w·lo_x + lo_w·hi_x: what is
 * dropped, lo_w·lo_x and the activation's third part, is below 2^-15 of the product. BF16
 * weights have no lo part: two multiplies. The sums are float32 all the way.
 *
 * Layout. Activations are packed once per call, per group of 16 tokens and per step of 32
 * columns, as B tiles: 16 rows of column pairs × 16 tokens × 2 (the pair side by side), hi and lo
 * tiles one after the other. Each thread converts 16 weight rows at a time into hi and lo rows
 * (A tiles read them 64 bytes a row, a row length apart) and runs them against two token groups
 * at a time: six tile loads feed six multiplies into two C tiles.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "infer/internal.h"

enum { TILE = 16, STEP = 32 };   /* rows or tokens per tile; columns per tile step */

#if defined(__x86_64__)

#define BAMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

/* 16 floats → their bfloat16 hi parts (rounded to nearest even) and the bfloat16 of what is left. */
BAMX static inline __attribute__((always_inline)) void split16(__m512 v, __m256i *hi, __m256i *lo)
{
    const __m512i bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
    __m512i u = _mm512_castps_si512(v);
    __m512i h = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(
                                                                              _mm512_srli_epi32(u, 16), one))), 16);
    __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
    __m512i r = _mm512_castps_si512(_mm512_sub_ps(v, back));
    __m512i l = _mm512_srli_epi32(_mm512_add_epi32(r, _mm512_add_epi32(bias, _mm512_and_si512(
                                                                             _mm512_srli_epi32(r, 16), one))), 16);
    *hi = _mm512_cvtepi32_epi16(h);
    *lo = _mm512_cvtepi32_epi16(l);
}

typedef struct bgemm_job {
    float *y;
    const float *x;
    const infer_matrix *w;
    int n_tok;
    int64_t groups, steps;   /* token groups of 16; column steps of 32 */
    uint16_t *xb;            /* groups × steps × (hi tile, lo tile) of 16 × 32 bf16 */
} bgemm_job;

static size_t tile_elems(void) { return (size_t)TILE * STEP; }

/* Token groups [begin, end): B tiles, element (pair p, token t, half i) at 32p + 2t + i. */
BAMX static void pack_tokens(void *ctx, int64_t begin, int64_t end)
{
    const bgemm_job *j = ctx;
    int64_t cols = j->w->cols;
    for (int64_t g = begin; g < end; g++)
        for (int64_t s = 0; s < j->steps; s++) {
            uint16_t *hi = j->xb + ((size_t)g * (size_t)j->steps + (size_t)s) * 2 * tile_elems(), *lo = hi + tile_elems();
            for (int t = 0; t < TILE; t++) {
                int64_t tok = g * TILE + t;
                _Alignas(64) uint16_t h[STEP], l[STEP];
                if (tok < j->n_tok) {
                    const float *xs = j->x + tok * cols + s * STEP;
                    __m256i h0, l0, h1, l1;
                    split16(_mm512_loadu_ps(xs), &h0, &l0);
                    split16(_mm512_loadu_ps(xs + 16), &h1, &l1);
                    _mm256_store_si256((__m256i *)h, h0);
                    _mm256_store_si256((__m256i *)(h + 16), h1);
                    _mm256_store_si256((__m256i *)l, l0);
                    _mm256_store_si256((__m256i *)(l + 16), l1);
                } else {
                    memset(h, 0, sizeof h);
                    memset(l, 0, sizeof l);
                }
                for (int p = 0; p < STEP / 2; p++) {
                    memcpy(hi + 32 * p + 2 * t, h + 2 * p, 4);
                    memcpy(lo + 32 * p + 2 * t, l + 2 * p, 4);
                }
            }
        }
}

/* 16 weight rows from r0 (nr of them; the rest zero) → hi and lo rows of cols bf16 each. */
BAMX static void pack_rows(const infer_matrix *w, int64_t r0, int nr, uint16_t *hi, uint16_t *lo)
{
    int64_t cols = w->cols;
    for (int r = 0; r < TILE; r++) {
        uint16_t *h = hi + (size_t)r * (size_t)cols, *l = lo + (size_t)r * (size_t)cols;
        if (r >= nr) {
            memset(h, 0, (size_t)cols * 2);
            memset(l, 0, (size_t)cols * 2);
            continue;
        }
        const uint8_t *row = w->data + w->row_bytes * (size_t)(r0 + r);
        if (w->type == INFER_BF16) {
            memcpy(h, row, (size_t)cols * 2);   /* exact as it is; lo stays unused */
            continue;
        }
        for (int64_t c = 0; c < cols; c += 16) {
            _mm_prefetch((const char *)row + 2 * c + 2048, _MM_HINT_T0);
            __m256i hv, lv;
            split16(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 2 * c))), &hv, &lv);
            _mm256_storeu_si256((__m256i *)(h + c), hv);
            _mm256_storeu_si256((__m256i *)(l + c), lv);
        }
    }
}

/* Tiles 0, 1: C (two token groups); 2, 3: A hi, lo; 4, 5: B hi, lo of the first group; 6, 7: of
 * the second. All 16 rows × 64 bytes. The configuration is per thread. */
static void configure_tiles(void)
{
    const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 16, 16};
    const uint16_t colsb[8] = {64, 64, 64, 64, 64, 64, 64, 64};
    infer_amx_configure(8, rows, colsb);
}

/* y[t·rows + r] from a C tile c[r][t], for the rows and tokens that exist. */
static void store_tile(const float *c, float *y, int64_t rows, int64_t r0, int nr, int64_t t0, int nt)
{
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++)
            y[(t0 + t) * rows + r0 + r] = c[16 * r + t];
}

BAMX static void multiply_rows(void *ctx, int64_t begin, int64_t end)
{
    const bgemm_job *j = ctx;
    const infer_matrix *w = j->w;
    size_t stride = (size_t)w->cols * 2, half = TILE * stride;
    uint16_t *a = aligned_alloc(64, 2 * half);
    if (!a) {   /* out of memory: the same rows one product at a time, slowly but right */
        for (int64_t r = begin * TILE; r < end * TILE && r < w->rows; r++)
            for (int t = 0; t < j->n_tok; t++)
                j->y[(int64_t)t * w->rows + r] =
                    infer_dot_row(w->type, w->data + w->row_bytes * (size_t)r, j->x + (int64_t)t * w->cols, w->cols);
        return;
    }
    uint16_t *ahi = a, *alo = a + half / 2;
    bool lo_w = w->type != INFER_BF16;
    _Alignas(64) float c[2][256];
    configure_tiles();
    for (int64_t tile = begin; tile < end; tile++) {
        int64_t r0 = tile * TILE;
        int nr = w->rows - r0 < TILE ? (int)(w->rows - r0) : TILE;
        pack_rows(w, r0, nr, ahi, alo);
        for (int64_t g = 0; g < j->groups; g += 2) {
            bool two = g + 1 < j->groups;   /* else the last group is alone: tile 1 idles */
            const uint16_t *b0 = j->xb + (size_t)g * (size_t)j->steps * 2 * tile_elems();
            const uint16_t *b1 = b0 + (size_t)j->steps * 2 * tile_elems();
            _tile_zero(0);
            _tile_zero(1);
            for (int64_t s = 0; s < j->steps; s++) {
                const uint16_t *bs0 = b0 + (size_t)s * 2 * tile_elems(), *bs1 = b1 + (size_t)s * 2 * tile_elems();
                _tile_loadd(2, ahi + s * STEP, (long)stride);
                _tile_loadd(4, bs0, 64);
                _tile_loadd(5, bs0 + tile_elems(), 64);
                _tile_dpbf16ps(0, 2, 4);
                _tile_dpbf16ps(0, 2, 5);
                if (two) {
                    _tile_loadd(6, bs1, 64);
                    _tile_loadd(7, bs1 + tile_elems(), 64);
                    _tile_dpbf16ps(1, 2, 6);
                    _tile_dpbf16ps(1, 2, 7);
                }
                if (lo_w) {
                    _tile_loadd(3, alo + s * STEP, (long)stride);
                    _tile_dpbf16ps(0, 3, 4);
                    if (two)
                        _tile_dpbf16ps(1, 3, 6);
                }
            }
            _tile_stored(0, c[0], 64);
            if (two)
                _tile_stored(1, c[1], 64);
            int64_t t0 = g * TILE;
            store_tile(c[0], j->y, w->rows, r0, nr, t0, j->n_tok - t0 < TILE ? (int)(j->n_tok - t0) : TILE);
            if (two)
                store_tile(c[1], j->y, w->rows, r0, nr, t0 + TILE,
                           j->n_tok - t0 - TILE < TILE ? (int)(j->n_tok - t0 - TILE) : TILE);
        }
    }
    _tile_release();
    free(a);
}

bool infer_bgemm(infer_pool *p, float *y, const float *x, const infer_matrix *w, int n_tok)
{
    if ((w->type != INFER_F16 && w->type != INFER_BF16) || w->cols % STEP || n_tok < 2 || !infer_have_amx_bf16())
        return false;
    bgemm_job j = {y, x, w, n_tok, (n_tok + TILE - 1) / TILE, w->cols / STEP, NULL};
    size_t xb_bytes = (size_t)j.groups * (size_t)j.steps * 2 * tile_elems() * sizeof(uint16_t);
    if (!(j.xb = aligned_alloc(64, xb_bytes)))
        return false;
    infer_pool_run(p, j.groups, pack_tokens, &j);
    infer_pool_run(p, (w->rows + TILE - 1) / TILE, multiply_rows, &j);
    free(j.xb);
    return true;
}

#else

bool infer_bgemm(infer_pool *p, float *y, const float *x, const infer_matrix *w, int n_tok)
{
    (void)p, (void)y, (void)x, (void)w, (void)n_tok;
    return false;
}

#endif
