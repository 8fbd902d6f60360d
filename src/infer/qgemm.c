/* qgemm.c — prompt matrix products for quantised weights, in int8 arithmetic.
 *
 * Converting Q8_0 / Q4_0 / Q4_K / Q6_K weights to floats for every prompt chunk costs more than
 * the multiplications themselves. Instead, as llama.cpp does, the activations are quantised once
 * per call (blocks of 32 with their own scale for Q8_0 / Q4_0, blocks of 256 for the K-quants) and
 * each weight block meets each activation block in an integer dot product; scales are applied in
 * float once per block.
 *
 * The trick that keeps the integer units busy is the lane layout. A "lane" is one weight block's
 * worth of elements that share a scale (32, or 16 for Q6_K whose scales cover 16). Sixteen lanes
 * form a superblock, stored transposed: 4 bytes of lane 0, 4 bytes of lane 1, ... 4 bytes of lane
 * 15, then the next 4 bytes of each. One 64-byte vector thus holds 4 bytes of 16 different blocks,
 * and a vpdpbusd (u8 × s8 → s32, 4 products per 32-bit lane) accumulates each block in its own
 * 32-bit lane: a whole superblock of 512 products per lane pair needs no scaling until its end.
 * Weights are unsigned in the layout (Q8_0 stored +128, nibbles as is, Q6_K without its -32), and
 * what that offset adds is removed in float: a block contributes
 *
 *     scale_w · scale_x · Σ u·q  −  offset_w · (scale_x · Σ q)
 *
 * where u are the unsigned weight bytes and q the activation bytes; offset_w is 128·d for Q8_0,
 * 8·d for Q4_0, dmin·m for Q4_K and 32·d·sc for Q6_K. Both sides use the same superblock shape
 * (quants, then 16 float scales, then 16 float offsets — for activations, scale_x·Σq), so the
 * kernels are one loop for every type.
 *
 * Each thread repacks a few weight rows into that layout (a panel that stays in L1/L2) and runs
 * them against every token of the chunk in register tiles. Kernels: AVX-512 VNNI (4 rows × 3
 * tokens), AVX2 (pmaddubsw, 2 × 2) and portable C, chosen at run time like tensor.c's.
 *
 * Where the CPU has AMX-INT8 (and Linux lets the process use it), the same lanes feed tile
 * multiplies instead: 16 weight rows × 16 tokens, one lane deep, the vector unit applying the
 * same two float terms to each 16 × 16 result while the tile unit computes the next one (see
 * "AMX" below). The numbers are the same in every kernel: integer sums are exact, only the
 * order of the float additions differs.
 *
 * Weights are repacked on every call rather than once at load (llama.cpp keeps a repacked copy,
 * twice the memory): a 128-token chunk amortises the repacking over 128 uses of each row.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/internal.h"

enum { LANES = 16, MAX_TILE = 16 };

/* The superblock shape of one weight type. */
typedef struct qgemm_layout {
    int lane;          /* elements per lane: 32, or 16 for Q6_K */
    int group;         /* activation elements sharing one scale: 32 (Q8_0 style) or 256 (Q8_K) */
    int64_t nsb;       /* superblocks per row, the last one padded with zero lanes */
    size_t sb_bytes;   /* LANES·lane quants, LANES scales, LANES offsets */
} qgemm_layout;

bool infer_qgemm_supports(infer_dtype t)
{
    return t == INFER_Q8_0 || t == INFER_Q4_0 || t == INFER_Q4_K || t == INFER_Q6_K;
}

static qgemm_layout layout_of(infer_dtype t, int64_t cols)
{
    qgemm_layout l;
    l.lane = t == INFER_Q6_K ? 16 : 32;
    l.group = t == INFER_Q4_K || t == INFER_Q6_K ? 256 : 32;
    l.nsb = (cols + LANES * l.lane - 1) / (LANES * l.lane);
    l.sb_bytes = (size_t)LANES * (size_t)l.lane + 2 * LANES * sizeof(float);
    return l;
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* 16 lanes of `lane` bytes, one after another, into lane/4 steps of 4 bytes from each lane. */
static void transpose_steps(const qgemm_layout *l, const uint8_t *lanes, uint8_t *steps)
{
    for (int k = 0; k < LANES; k++)
        for (int s = 0; s < l->lane / 4; s++)
            memcpy(steps + 64 * s + 4 * k, lanes + k * l->lane + 4 * s, 4);
}

static float *sb_scales(const qgemm_layout *l, uint8_t *sb)
{
    return (float *)(sb + (size_t)LANES * (size_t)l->lane);
}

/* ---- weights → lanes ---------------------------------------------------------------------------- */

/* Unpacks one storage block into unsigned lane bytes u (block elements, in order), and the scale
 * and offset of each of its lanes. */
static void unpack_block(infer_dtype t, const uint8_t *b, uint8_t *u, float *scale, float *offset)
{
    switch (t) {
    case INFER_Q8_0: {
        float d = infer_f16_to_f32(rd16(b));
        for (int j = 0; j < 32; j++)
            u[j] = b[2 + j] ^ 0x80;   /* w + 128 */
        scale[0] = d;
        offset[0] = 128 * d;
        return;
    }
    case INFER_Q4_0: {
        float d = infer_f16_to_f32(rd16(b));
        for (int j = 0; j < 16; j++) {
            u[j] = b[2 + j] & 0xF;
            u[j + 16] = b[2 + j] >> 4;
        }
        scale[0] = d;
        offset[0] = 8 * d;
        return;
    }
    case INFER_Q4_K: {
        float d = infer_f16_to_f32(rd16(b)), dmin = infer_f16_to_f32(rd16(b + 2));
        const uint8_t *q = b + 16;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            infer_q4k_scale_min(j, b + 4, &sc, &m);
            scale[j] = d * (float)sc;
            offset[j] = dmin * (float)m;
        }
        for (int c = 0; c < 4; c++)
            for (int k = 0; k < 32; k++) {
                u[64 * c + k] = q[32 * c + k] & 0xF;
                u[64 * c + 32 + k] = q[32 * c + k] >> 4;
            }
        return;
    }
    case INFER_Q6_K: {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = infer_f16_to_f32(rd16(b + 208));
        for (int j = 0; j < 16; j++) {
            scale[j] = d * (float)sc[j];
            offset[j] = 32 * d * (float)sc[j];
        }
        for (int n = 0; n < 2; n++, ql += 64, qh += 32, u += 128)
            for (int k = 0; k < 32; k++) {
                u[k] = (uint8_t)((ql[k] & 0xF) | ((qh[k] & 3) << 4));
                u[k + 32] = (uint8_t)((ql[k + 32] & 0xF) | (((qh[k] >> 2) & 3) << 4));
                u[k + 64] = (uint8_t)((ql[k] >> 4) | (((qh[k] >> 4) & 3) << 4));
                u[k + 96] = (uint8_t)((ql[k + 32] >> 4) | (((qh[k] >> 6) & 3) << 4));
            }
        return;
    }
    default:
        return;
    }
}

/* The 16 lanes of superblock g of a weight row, one after another (u: 16·lane bytes), with their
 * scales and offsets; lanes past the row's end are zero (scalar; any type, any tail). */
static void weight_lanes(infer_dtype t, const qgemm_layout *l, const uint8_t *row, int64_t cols, int64_t g,
                         uint8_t *u, float *scale, float *offset)
{
    int block = infer_dtype_block(t), per = block / l->lane;
    size_t bytes = infer_dtype_block_bytes(t);
    int64_t first = g * LANES, last = first + LANES < cols / l->lane ? first + LANES : cols / l->lane;
    if (last - first < LANES) {
        memset(u, 0, (size_t)LANES * (size_t)l->lane);
        memset(scale, 0, LANES * sizeof *scale);
        memset(offset, 0, LANES * sizeof *offset);
    }
    for (int64_t b = first / per; b < last / per; b++) {
        int64_t k = b * per - first;
        unpack_block(t, row + bytes * (size_t)b, u + k * l->lane, scale + k, offset + k);
    }
}

/* ---- activations → lanes ------------------------------------------------------------------------ */

/* Quantises one group of activations to int8, as llama.cpp's quantize_row_q8_0 (32: scale
 * amax/127 rounded to f16) or quantize_row_q8_K (256: scale max/-127 of the signed extreme, f32)
 * do, rounding to nearest even; returns the scale. */
static float quantize_group(const float *x, int n, int8_t *q)
{
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    if (amax == 0) {
        memset(q, 0, (size_t)n);
        return 0;
    }
    if (n == 32) {
        float d = amax / 127, id = 1.0f / d;
        for (int j = 0; j < n; j++)
            q[j] = (int8_t)nearbyintf(x[j] * id);
        return infer_f16_to_f32(infer_f32_to_f16(d));
    }
    float iscale = -127.0f / max;
    for (int j = 0; j < n; j++) {
        float v = nearbyintf(iscale * x[j]);
        q[j] = (int8_t)(v > 127 ? 127 : v);
    }
    return 1 / iscale;
}

/* Quantises superblock g of an activation row into 16 lanes one after another, with each lane's
 * scale and scale·Σq; lanes past the row's end are zero (scalar; the reference for SIMD). */
static void activation_lanes(const qgemm_layout *l, const float *x, int64_t cols, int64_t g, int8_t *q,
                             float *scale, float *offset)
{
    int64_t begin = g * LANES * l->lane, end = begin + LANES * l->lane < cols ? begin + LANES * l->lane : cols;
    if (end - begin < LANES * l->lane) {
        memset(q, 0, (size_t)LANES * (size_t)l->lane);
        memset(scale, 0, LANES * sizeof *scale);
        memset(offset, 0, LANES * sizeof *offset);
    }
    for (int64_t e = begin; e < end; e += l->group) {
        float d = quantize_group(x + e, l->group, q + (e - begin));
        for (int64_t k = (e - begin) / l->lane; k < (e - begin + l->group) / l->lane; k++) {
            int sum = 0;
            for (int j = 0; j < l->lane; j++)
                sum += q[k * l->lane + j];
            scale[k] = d;
            offset[k] = d * (float)sum;
        }
    }
}

/* ---- tile kernels: out[r·tokens + t] = Σ over the row of weight panel r · activation t ----------- */

typedef void (*tile_fn)(const uint8_t *const *w, const uint8_t *const *x, const qgemm_layout *l,
                        bool q8_0, float *out);

static void tile_portable(const uint8_t *const *w, const uint8_t *const *x, const qgemm_layout *l,
                          bool q8_0, float *out)
{
    size_t quants = (size_t)LANES * (size_t)l->lane;
    float acc = 0;
    for (int64_t g = 0; g < l->nsb; g++) {
        const uint8_t *ws = w[0] + (size_t)g * l->sb_bytes, *xs = x[0] + (size_t)g * l->sb_bytes;
        const float *wf = (const float *)(ws + quants), *xf = (const float *)(xs + quants);
        for (int k = 0; k < LANES; k++) {
            int32_t dot = 0;
            for (int s = 0; s < l->lane / 4; s++)
                for (int b = 0; b < 4; b++)
                    dot += ws[64 * s + 4 * k + b] * (int8_t)xs[64 * s + 4 * k + b];
            acc += wf[k] * xf[k] * (float)dot - wf[LANES + k] * xf[LANES + k];
        }
    }
    out[0] = acc;
}

#if defined(__x86_64__)
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define AVX2 __attribute__((target("avx2,fma")))

/* The SIMD packers below produce exactly what pack_superblock / quantize_superblock do, for
 * whole superblocks: lanes are first laid out one after another in a 64-byte aligned buffer,
 * then transposed into 4-byte steps with two-source permutes (gathers would do it in one
 * instruction, but cost several times more on CPUs with the GDS microcode mitigation). */

/* 16 lanes of 32 bytes (a 16 × 8 matrix of 4-byte words) → 8 steps: three rounds of permutes,
 * 4 × 4 blocks, then 8 × 2, then 16 × 1. */
AVX512 static void transpose_lanes32(const uint8_t *lanes, uint8_t *sb)
{
    static const int32_t ix1[2][16] = {{0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27},
                                       {4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31}};
    static const int32_t ix2[2][16] = {{0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23},
                                       {8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31}};
    static const int32_t ix3[2][16] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                                       {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}};
    __m512i z[8], y[4][2];
    for (int k = 0; k < 8; k++)
        z[k] = _mm512_load_si512(lanes + 64 * k);
    for (int p = 0; p < 4; p++)   /* y[p][q]: rows 4p.., words 4q.. */
        for (int q = 0; q < 2; q++)
            y[p][q] = _mm512_permutex2var_epi32(z[2 * p], _mm512_loadu_si512(ix1[q]), z[2 * p + 1]);
    for (int q = 0; q < 2; q++)
        for (int h = 0; h < 2; h++) {   /* v[pp]: rows 8pp.., words 4q + 2h.. */
            __m512i v0 = _mm512_permutex2var_epi32(y[0][q], _mm512_loadu_si512(ix2[h]), y[1][q]);
            __m512i v1 = _mm512_permutex2var_epi32(y[2][q], _mm512_loadu_si512(ix2[h]), y[3][q]);
            for (int s = 0; s < 2; s++)
                _mm512_store_si512(sb + 64 * (4 * q + 2 * h + s),
                                   _mm512_permutex2var_epi32(v0, _mm512_loadu_si512(ix3[s]), v1));
        }
}

/* 16 lanes of 16 bytes (16 × 4 words) → 4 steps: 8 × 2 blocks, then 16 × 1. */
AVX512 static void transpose_lanes16(const uint8_t *lanes, uint8_t *sb)
{
    static const int32_t ixa[2][16] = {{0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29},
                                       {2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31}};
    static const int32_t ix3[2][16] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                                       {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}};
    __m512i z[4];
    for (int k = 0; k < 4; k++)
        z[k] = _mm512_load_si512(lanes + 64 * k);
    for (int h = 0; h < 2; h++) {
        __m512i u0 = _mm512_permutex2var_epi32(z[0], _mm512_loadu_si512(ixa[h]), z[1]);
        __m512i u1 = _mm512_permutex2var_epi32(z[2], _mm512_loadu_si512(ixa[h]), z[3]);
        for (int s = 0; s < 2; s++)
            _mm512_store_si512(sb + 64 * (2 * h + s), _mm512_permutex2var_epi32(u0, _mm512_loadu_si512(ix3[s]), u1));
    }
}

AVX512 static void transpose_lanes(const qgemm_layout *l, const uint8_t *lanes, uint8_t *sb)
{
    if (l->lane == 32)
        transpose_lanes32(lanes, sb);
    else
        transpose_lanes16(lanes, sb);
}

/* weight_lanes for a whole superblock; u 64-byte aligned. */
AVX512 static void weight_lanes_avx512(infer_dtype t, const qgemm_layout *l, const uint8_t *row, int64_t g,
                                       uint8_t *u, float *scale, float *offset)
{
    const __m256i nib = _mm256_set1_epi8(0xF);
    switch (t) {
    case INFER_Q8_0:
    case INFER_Q4_0: {
        size_t bb = infer_dtype_block_bytes(t);
        const uint8_t *base = row + (size_t)g * LANES * bb;
        for (int k = 0; k < LANES; k++) {
            const uint8_t *b = base + bb * (size_t)k;
            if (t == INFER_Q8_0) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(b + 2));
                _mm256_store_si256((__m256i *)(u + 32 * k), _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)));
            } else {
                __m128i q = _mm_loadu_si128((const __m128i *)(b + 2));
                __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
                _mm256_store_si256((__m256i *)(u + 32 * k), _mm256_and_si256(both, nib));
            }
            scale[k] = _cvtsh_ss(rd16(b));
            offset[k] = (t == INFER_Q8_0 ? 128 : 8) * scale[k];
        }
        break;
    }
    case INFER_Q4_K:   /* two blocks; lanes 2c and 2c+1 are the low and high nibbles of 32 bytes */
        for (int b = 0; b < 2; b++) {
            const uint8_t *blk = row + (size_t)(2 * g + b) * 144;
            float d = _cvtsh_ss(rd16(blk)), dmin = _cvtsh_ss(rd16(blk + 2));
            for (int c = 0; c < 4; c++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c));
                _mm256_store_si256((__m256i *)(u + 256 * b + 64 * c), _mm256_and_si256(q, nib));
                _mm256_store_si256((__m256i *)(u + 256 * b + 64 * c + 32),
                                   _mm256_and_si256(_mm256_srli_epi16(q, 4), nib));
            }
            for (int j = 0; j < 8; j++) {
                int sc, m;
                infer_q4k_scale_min(j, blk + 4, &sc, &m);
                scale[8 * b + j] = d * (float)sc;
                offset[8 * b + j] = dmin * (float)m;
            }
        }
        break;
    case INFER_Q6_K: {   /* one block, in dequantisation order */
        const uint8_t *blk = row + (size_t)g * 210;
        const __m256i three = _mm256_set1_epi8(3);
        for (int n = 0; n < 2; n++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(blk + 64 * n));
            __m256i b = _mm256_loadu_si256((const __m256i *)(blk + 64 * n + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * n));
            __m256i v[4] = {
                _mm256_or_si256(_mm256_and_si256(a, nib), _mm256_slli_epi16(_mm256_and_si256(h, three), 4)),
                _mm256_or_si256(_mm256_and_si256(b, nib),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), three), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), nib),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), three), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), nib),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), three), 4)),
            };
            for (int k = 0; k < 4; k++)
                _mm256_store_si256((__m256i *)(u + 128 * n + 32 * k), v[k]);
        }
        __m128i sc8 = _mm_loadu_si128((const __m128i *)(blk + 192));
        __m512 sc = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(rd16(blk + 208))),
                                  _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8)));
        _mm512_storeu_ps(scale, sc);
        _mm512_storeu_ps(offset, _mm512_mul_ps(sc, _mm512_set1_ps(32)));
        break;
    }
    default:
        return;
    }
}

/* 16 floats to int8 with rounding to nearest even, and their sum. */
AVX512 static inline __m128i quantize16(__m512 v, __m512 scale, __m512i *sum)
{
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v, scale));
    q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
    *sum = _mm512_add_epi32(*sum, q);
    return _mm512_cvtepi32_epi8(q);
}

/* activation_lanes for a whole superblock; q 16-byte aligned. */
AVX512 static void activation_lanes_avx512(const qgemm_layout *l, const float *x, int64_t g, int8_t *q,
                                           float *scale, float *offset)
{
    int n = LANES * l->lane;
    x += g * n;
    if (l->group == 32) {
        for (int k = 0; k < LANES; k++) {
            __m512 a = _mm512_loadu_ps(x + 32 * k), b = _mm512_loadu_ps(x + 32 * k + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
            float d = amax / 127, id = amax ? 1.0f / d : 0;
            __m512i sum = _mm512_setzero_si512();
            _mm_store_si128((__m128i *)(q + 32 * k), quantize16(a, _mm512_set1_ps(id), &sum));
            _mm_store_si128((__m128i *)(q + 32 * k + 16), quantize16(b, _mm512_set1_ps(id), &sum));
            /* rounded to f16 to nearest even, as infer_f32_to_f16 does */
            scale[k] = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            offset[k] = scale[k] * (float)_mm512_reduce_add_epi32(sum);
        }
    } else {
        for (int e = 0; e < n; e += 256) {   /* one group of 256: 8 lanes of 32 or 16 of 16 */
            __m512 amax = _mm512_setzero_ps();
            for (int i = 0; i < 256; i += 16)
                amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(x + e + i)));
            float m = _mm512_reduce_max_ps(amax), max = 0;
            for (int i = 0; i < 256 && m; i += 16) {   /* the first element of that magnitude, with its sign */
                __m512 v = _mm512_abs_ps(_mm512_loadu_ps(x + e + i));
                __mmask16 at = _mm512_cmp_ps_mask(v, _mm512_set1_ps(m), _CMP_EQ_OQ);
                if (at) {
                    max = x[e + i + __builtin_ctz(at)];
                    break;
                }
            }
            float iscale = m ? -127.0f / max : 0, d = m ? 1 / iscale : 0;
            int lanes = 256 / l->lane, k0 = e / l->lane;
            for (int k = 0; k < lanes; k++) {
                __m512i sum = _mm512_setzero_si512();
                for (int i = 0; i < l->lane; i += 16) {
                    __m512 v = _mm512_loadu_ps(x + e + k * l->lane + i);
                    _mm_store_si128((__m128i *)(q + e + k * l->lane + i), quantize16(v, _mm512_set1_ps(iscale), &sum));
                }
                scale[k0 + k] = d;
                offset[k0 + k] = d * (float)_mm512_reduce_add_epi32(sum);
            }
        }
    }
}

enum { VNNI_ROWS = 4, VNNI_TOKENS = 3 };

/* One superblock-long pass of the VNNI tile with the step count known at compile time. */
VNNI static inline __attribute__((always_inline)) void
tile_vnni_steps(const uint8_t *const *w, const uint8_t *const *x, int64_t nsb, size_t sbb, int steps,
                float *out)
{
    __m512 acc[VNNI_ROWS][VNNI_TOKENS] = {0};
    for (int64_t g = 0; g < nsb; g++) {
        size_t o = (size_t)g * sbb;
        __m512i sum[VNNI_ROWS][VNNI_TOKENS] = {0};
#pragma GCC unroll 8
        for (int s = 0; s < steps; s++) {
            __m512i wv[VNNI_ROWS];
#pragma GCC unroll 4
            for (int r = 0; r < VNNI_ROWS; r++)
                wv[r] = _mm512_load_si512(w[r] + o + 64 * s);
#pragma GCC unroll 3
            for (int t = 0; t < VNNI_TOKENS; t++) {
                __m512i xv = _mm512_load_si512(x[t] + o + 64 * s);
#pragma GCC unroll 4
                for (int r = 0; r < VNNI_ROWS; r++)
                    sum[r][t] = _mm512_dpbusd_epi32(sum[r][t], wv[r], xv);
            }
        }
        size_t so = o + 64 * (size_t)steps;
#pragma GCC unroll 4
        for (int r = 0; r < VNNI_ROWS; r++) {
            __m512 dw = _mm512_load_ps(w[r] + so), mw = _mm512_load_ps(w[r] + so + 64);
#pragma GCC unroll 3
            for (int t = 0; t < VNNI_TOKENS; t++) {
                __m512 dx = _mm512_load_ps(x[t] + so), sx = _mm512_load_ps(x[t] + so + 64);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r][t]), _mm512_mul_ps(dw, dx), acc[r][t]);
                acc[r][t] = _mm512_fnmadd_ps(mw, sx, acc[r][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < VNNI_ROWS; r++)
#pragma GCC unroll 3
        for (int t = 0; t < VNNI_TOKENS; t++)
            out[r * VNNI_TOKENS + t] = _mm512_reduce_add_ps(acc[r][t]);
}

VNNI static void tile_vnni(const uint8_t *const *w, const uint8_t *const *x, const qgemm_layout *l,
                           bool q8_0, float *out)
{
    if (l->lane == 32)
        tile_vnni_steps(w, x, l->nsb, l->sb_bytes, 8, out);
    else
        tile_vnni_steps(w, x, l->nsb, l->sb_bytes, 4, out);
}

enum { AVX2_ROWS = 2, AVX2_TOKENS = 2 };

/* The AVX2 tile works on half a superblock (8 lanes) at a time. pmaddubsw saturates at 16 bits,
 * which Q8_0's 255·127·2 would exceed, so Q8_0 weights are turned back into signed bytes and
 * multiplied through the abs/sign identity; that sum is the true dot, without the +128 offset. */
AVX2 static inline __attribute__((always_inline)) void
tile_avx2_kind(const uint8_t *const *w, const uint8_t *const *x, const qgemm_layout *l, bool q8_0,
               float *out)
{
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
    int steps = l->lane / 4;
    __m256 acc[AVX2_ROWS][AVX2_TOKENS] = {0};
    for (int64_t g = 0; g < l->nsb; g++) {
        for (int h = 0; h < 2; h++) {
            size_t o = (size_t)g * l->sb_bytes + 32 * (size_t)h;
            __m256i sum[AVX2_ROWS][AVX2_TOKENS] = {0};
            for (int s = 0; s < steps; s++) {
                __m256i wv[AVX2_ROWS], ws[AVX2_ROWS];
                for (int r = 0; r < AVX2_ROWS; r++) {
                    wv[r] = _mm256_load_si256((const __m256i *)(w[r] + o + 64 * s));
                    if (q8_0) {
                        ws[r] = _mm256_xor_si256(wv[r], flip);
                        wv[r] = _mm256_abs_epi8(ws[r]);
                    }
                }
                for (int t = 0; t < AVX2_TOKENS; t++) {
                    __m256i xv = _mm256_load_si256((const __m256i *)(x[t] + o + 64 * s));
                    for (int r = 0; r < AVX2_ROWS; r++) {
                        __m256i p = _mm256_maddubs_epi16(wv[r], q8_0 ? _mm256_sign_epi8(xv, ws[r]) : xv);
                        sum[r][t] = _mm256_add_epi32(sum[r][t], _mm256_madd_epi16(p, ones));
                    }
                }
            }
            size_t so = (size_t)g * l->sb_bytes + 64 * (size_t)steps + 32 * (size_t)h;
            for (int r = 0; r < AVX2_ROWS; r++) {
                __m256 dw = _mm256_load_ps((const float *)(w[r] + so));
                __m256 mw = _mm256_load_ps((const float *)(w[r] + so + 64));
                for (int t = 0; t < AVX2_TOKENS; t++) {
                    __m256 dx = _mm256_load_ps((const float *)(x[t] + so));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r][t]), _mm256_mul_ps(dw, dx), acc[r][t]);
                    if (!q8_0)
                        acc[r][t] = _mm256_fnmadd_ps(mw, _mm256_load_ps((const float *)(x[t] + so + 64)), acc[r][t]);
                }
            }
        }
    }
    for (int r = 0; r < AVX2_ROWS; r++)
        for (int t = 0; t < AVX2_TOKENS; t++) {
            __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc[r][t]), _mm256_extractf128_ps(acc[r][t], 1));
            v = _mm_add_ps(v, _mm_movehl_ps(v, v));
            v = _mm_add_ss(v, _mm_movehdup_ps(v));
            out[r * AVX2_TOKENS + t] = _mm_cvtss_f32(v);
        }
}

AVX2 static void tile_avx2(const uint8_t *const *w, const uint8_t *const *x, const qgemm_layout *l,
                           bool q8_0, float *out)
{
    if (q8_0)
        tile_avx2_kind(w, x, l, true, out);
    else
        tile_avx2_kind(w, x, l, false, out);
}

/* AMX: a tile multiply C (16 weight rows × 16 tokens, int32) += A (16 rows × one lane of bytes) ·
 * B (that lane of 16 tokens, 4-byte interleaved) does 16·16·32 products in one instruction. It
 * goes one lane (one block) deep at a time, because scales change from block to block; the vector
 * unit then scales C into 16 float accumulators, as the VNNI tile does per superblock. Weights sit
 * in the panel lane by lane (16 rows of each lane one after another: A needs no transposing);
 * activations are interleaved per lane across 16 tokens (transpose_lanes, with tokens as lanes). */
#define AMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

/* Tiles 0, 1: C; 2, 4: A; 3, 5: B. The configuration is per thread. */
AMX static void amx_configure(int lane)
{
    uint8_t rows[6];
    uint16_t colsb[6];
    for (int i = 0; i < 6; i++) {
        bool is_a = i == 2 || i == 4, is_b = i == 3 || i == 5;
        rows[i] = (uint8_t)(is_b ? lane / 4 : 16);
        colsb[i] = (uint16_t)(is_a ? lane : 64);
    }
    infer_amx_configure(6, rows, colsb);
}

AMX static void amx_release(void) { _tile_release(); }

AMX static inline __attribute__((always_inline)) void
amx_scale(const int32_t *c, const float *ws, const float *wo, const float *xs, const float *xo, bool offsets,
          __m512 *acc)
{
    __m512 dx = _mm512_load_ps(xs), sx = _mm512_load_ps(xo);
#pragma GCC unroll 16
    for (int r = 0; r < 16; r++) {
        __m512 f = _mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * r));
        acc[r] = _mm512_fmadd_ps(f, _mm512_mul_ps(dx, _mm512_set1_ps(ws[r])), acc[r]);
        if (offsets)
            acc[r] = _mm512_fnmadd_ps(_mm512_set1_ps(wo[r]), sx, acc[r]);
    }
}

/* acc[r] holds 16 tokens of row r; stores y[t·stride + r] for r < nr, t < nt: a 16 × 16
 * transpose (unpacks, then 128-bit lane shuffles) so that each token's rows go out in one store. */
AMX static inline __attribute__((always_inline)) void
amx_store(__m512 *acc, float *y, int64_t stride, int nr, int nt)
{
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(acc[i], acc[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(acc[i], acc[i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 16; i += 4) {
        acc[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        acc[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        acc[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        acc[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(acc[i], acc[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(acc[i], acc[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(acc[i + 8], acc[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(acc[i + 8], acc[i + 12], 0xdd);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        acc[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        acc[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
    __mmask16 rows = (__mmask16)((1u << nr) - 1);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)   /* constant indices keep acc in registers */
        if (i < nt)
            _mm512_mask_storeu_ps(y + i * stride, rows, acc[i]);
}

/* y[t·stride + r] for r < nr, t < nt over nl lanes. Lane i of row r of A is at a + i·a_step +
 * r·a_stride, its scale and offset at ws, wo[16i + r]; lane i of B (lane/4 × 64 bytes) at
 * b + i·16·lane, its scales at xs, xo[16i..]. `raw`: A is Q8_0's own signed bytes, read where
 * they lie (no offsets, signed × signed products). */
AMX static inline __attribute__((always_inline)) void
amx_tile_kind(const uint8_t *a, size_t a_stride, size_t a_step, const float *ws, const float *wo,
              const uint8_t *b, const float *xs, const float *xo, int64_t nl, int lane, bool raw, float *y,
              int64_t stride, int nr, int nt)
{
    _Alignas(64) int32_t c[2][256];
    __m512 acc[16];
#pragma GCC unroll 16
    for (int r = 0; r < 16; r++)
        acc[r] = _mm512_setzero_ps();
    size_t lb = 16 * (size_t)lane;   /* bytes of one lane of A, and of B */
    /* Two C tiles in a pipeline: the tile unit multiplies lane i while the vector unit scales
     * lane i - 1, and C is stored only after that (a tile store waits for its multiply and holds
     * up the loads behind it). Tile numbers must be constants, hence the unrolled pairs. */
#define AMX_MUL(C, A, B, i)                                        \
    do {                                                           \
        _tile_zero(C);                                             \
        _tile_loadd(A, a + (size_t)(i) * a_step, a_stride);        \
        _tile_loadd(B, b + (size_t)(i) * lb, 64);                  \
        if (raw)                                                   \
            _tile_dpbssd(C, A, B);                                 \
        else                                                       \
            _tile_dpbusd(C, A, B);                                 \
    } while (0)
#define AMX_SCALE(i, buf) amx_scale(buf, ws + 16 * (i), wo + 16 * (i), xs + 16 * (i), xo + 16 * (i), !raw, acc)
    AMX_MUL(0, 2, 3, 0);
    _tile_stored(0, c[0], 64);
    int64_t i = 1;
    for (; i + 2 <= nl; i += 2) {
        AMX_MUL(1, 4, 5, i);
        AMX_SCALE(i - 1, c[0]);
        _tile_stored(1, c[1], 64);
        AMX_MUL(0, 2, 3, i + 1);
        AMX_SCALE(i, c[1]);
        _tile_stored(0, c[0], 64);
    }
    if (i < nl) {
        AMX_MUL(1, 4, 5, i);
        AMX_SCALE(i - 1, c[0]);
        _tile_stored(1, c[1], 64);
        AMX_SCALE(i, c[1]);
    } else {
        AMX_SCALE(i - 1, c[0]);
    }
#undef AMX_MUL
#undef AMX_SCALE
    amx_store(acc, y, stride, nr, nt);
}

/* The f16 scales of nl blocks of 16 Q8_0 rows (row 0 at q, rows row_bytes apart) into ws[16b + r]. */
AMX static void amx_q8_0_scales(const uint8_t *q, size_t row_bytes, size_t nl, float *ws)
{
    for (size_t b = 0; b < nl; b++) {
        _Alignas(32) uint16_t h[16];
        for (int r = 0; r < 16; r++)
            h[r] = rd16(q + row_bytes * (size_t)r + 34 * b);
        _mm512_storeu_ps(ws + 16 * b, _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)h)));
    }
}

AMX static void amx_tile(const uint8_t *a, size_t a_stride, size_t a_step, const float *ws, const float *wo,
                         const uint8_t *b, const float *xs, const float *xo, int64_t nl, int lane, bool raw, float *y,
                         int64_t stride, int nr, int nt)
{
    if (raw)
        amx_tile_kind(a, a_stride, a_step, ws, wo, b, xs, xo, nl, lane, true, y, stride, nr, nt);
    else
        amx_tile_kind(a, a_stride, a_step, ws, wo, b, xs, xo, nl, lane, false, y, stride, nr, nt);
}
#else
static void weight_lanes_avx512(infer_dtype t, const qgemm_layout *l, const uint8_t *row, int64_t g,
                                uint8_t *u, float *scale, float *offset)
{
}
static void activation_lanes_avx512(const qgemm_layout *l, const float *x, int64_t g, int8_t *q,
                                    float *scale, float *offset)
{
}
static void transpose_lanes(const qgemm_layout *l, const uint8_t *lanes, uint8_t *sb) {}
static void amx_configure(int lane) {}
static void amx_release(void) {}
static void amx_tile(const uint8_t *a, size_t a_stride, size_t a_step, const float *ws, const float *wo,
                     const uint8_t *b, const float *xs, const float *xo, int64_t nl, int lane, bool raw, float *y,
                     int64_t stride, int nr, int nt)
{
}
static void amx_q8_0_scales(const uint8_t *q, size_t row_bytes, size_t nl, float *ws) {}
#endif

/* ---- driver ---------------------------------------------------------------------------------- */

typedef struct qgemm_job {
    const infer_matrix *w;
    qgemm_layout l;
    const float *x;
    uint8_t *xq;            /* n_tok packed activation rows */
    float *y;
    int n_tok;
    int rows, tokens;       /* the tile */
    tile_fn tile;
    bool simd_pack;         /* AVX-512 packing of whole superblocks */
    /* AMX: activations as lanes one after another per token (with each lane's scale and
     * offset), then interleaved per lane for each group of 16 tokens. */
    int64_t lanes;          /* weight lanes in a row: cols / lane */
    int8_t *xl;
    float *xl_scale, *xl_offset;
    uint8_t *xb;
    float *xb_scale, *xb_offset;
} qgemm_job;

static size_t packed_row_bytes(const qgemm_layout *l) { return (size_t)l->nsb * l->sb_bytes; }

/* Superblock g as lanes one after another, through SIMD where the CPU and the row allow. */
static void job_weight_lanes(const qgemm_job *j, const uint8_t *row, int64_t g, uint8_t *u, float *scale,
                             float *offset)
{
    if (j->simd_pack && (g + 1) * LANES * j->l.lane <= j->w->cols)
        weight_lanes_avx512(j->w->type, &j->l, row, g, u, scale, offset);
    else
        weight_lanes(j->w->type, &j->l, row, j->w->cols, g, u, scale, offset);
}

static void job_activation_lanes(const qgemm_job *j, const float *x, int64_t g, int8_t *q, float *scale,
                                 float *offset)
{
    if (j->simd_pack && (g + 1) * LANES * j->l.lane <= j->w->cols)
        activation_lanes_avx512(&j->l, x, g, q, scale, offset);
    else
        activation_lanes(&j->l, x, j->w->cols, g, q, scale, offset);
}

static void job_transpose(const qgemm_job *j, const uint8_t *lanes, uint8_t *steps)
{
    if (j->simd_pack)
        transpose_lanes(&j->l, lanes, steps);
    else
        transpose_steps(&j->l, lanes, steps);
}

static void quantize_tokens(void *ctx, int64_t begin, int64_t end)
{
    qgemm_job *j = ctx;
    _Alignas(64) int8_t q[LANES * 32];
    for (int64_t t = begin; t < end; t++)
        for (int64_t g = 0; g < j->l.nsb; g++) {
            uint8_t *sb = j->xq + (size_t)t * packed_row_bytes(&j->l) + (size_t)g * j->l.sb_bytes;
            float *scales = sb_scales(&j->l, sb);
            job_activation_lanes(j, j->x + t * j->w->cols, g, q, scales, scales + LANES);
            job_transpose(j, (const uint8_t *)q, sb);
        }
}

static void pack_weight_row(const qgemm_job *j, const uint8_t *row, uint8_t *out)
{
    _Alignas(64) uint8_t u[LANES * 32];
    for (int64_t g = 0; g < j->l.nsb; g++) {
        uint8_t *sb = out + (size_t)g * j->l.sb_bytes;
        job_weight_lanes(j, row, g, u, sb_scales(&j->l, sb), sb_scales(&j->l, sb) + LANES);
        job_transpose(j, u, sb);
    }
}

static void *alloc64(size_t n) { return aligned_alloc(64, (n + 63) & ~(size_t)63); }

/* Rows [begin, end) in float, with the portable dot product: what a thread does when it cannot
 * get memory for a panel (slower, but it needs nothing). */
static void multiply_float(const qgemm_job *j, int64_t begin, int64_t end)
{
    const infer_matrix *w = j->w;
    for (int64_t r = begin; r < end && r < w->rows; r++)
        for (int t = 0; t < j->n_tok; t++)
            j->y[(int64_t)t * w->rows + r] =
                infer_dot_row(w->type, w->data + w->row_bytes * (size_t)r, j->x + t * w->cols, w->cols);
}

/* Row tiles [begin, end): each packed once into this call's panel, then run against every token. */
static void multiply_tiles(void *ctx, int64_t begin, int64_t end)
{
    qgemm_job *j = ctx;
    const infer_matrix *w = j->w;
    size_t rb = packed_row_bytes(&j->l);
    uint8_t *panel = alloc64((size_t)j->rows * rb);
    if (!panel) {
        multiply_float(j, begin * j->rows, end * j->rows);
        return;
    }
    for (int64_t tile = begin; tile < end; tile++) {
        int64_t r0 = tile * j->rows;
        int nr = w->rows - r0 < j->rows ? (int)(w->rows - r0) : j->rows;
        const uint8_t *wp[MAX_TILE], *xp[MAX_TILE];
        for (int k = 0; k < j->rows; k++) {   /* missing rows repeat the last: computed, not stored */
            if (k < nr)
                pack_weight_row(j, w->data + w->row_bytes * (size_t)(r0 + k), panel + (size_t)k * rb);
            wp[k] = panel + (size_t)(k < nr ? k : nr - 1) * rb;
        }
        for (int t = 0; t < j->n_tok; t += j->tokens) {
            int nt = j->n_tok - t < j->tokens ? j->n_tok - t : j->tokens;
            for (int k = 0; k < j->tokens; k++)
                xp[k] = j->xq + (size_t)(t + (k < nt ? k : nt - 1)) * rb;
            float out[MAX_TILE * MAX_TILE];
            j->tile(wp, xp, &j->l, w->type == INFER_Q8_0, out);
            for (int k = 0; k < nr; k++)
                for (int m = 0; m < nt; m++)
                    j->y[(int64_t)(t + m) * w->rows + r0 + k] = out[k * j->tokens + m];
        }
    }
    free(panel);
}

/* ---- the AMX driver ------------------------------------------------------------------------- */

enum { AMX_TILE = 16 };

static size_t lane_bytes(const qgemm_job *j) { return (size_t)j->l.nsb * LANES * (size_t)j->l.lane; }

/* Group [begin, end) of 16 tokens: each token quantised into lanes one after another, then each
 * lane of the 16 transposed into a B tile (one pass over the pool, not two). */
static void prepare_groups_amx(void *ctx, int64_t begin, int64_t end)
{
    qgemm_job *j = ctx;
    size_t lane = (size_t)j->l.lane, per_token = (size_t)j->l.nsb * LANES;
    _Alignas(64) uint8_t tmp[AMX_TILE * 32];
    for (int64_t group = begin; group < end; group++) {
        int64_t last = (group + 1) * AMX_TILE < j->n_tok ? (group + 1) * AMX_TILE : j->n_tok;
        for (int64_t t = group * AMX_TILE; t < last; t++)
            for (int64_t g = 0; g < j->l.nsb; g++) {
                size_t at = (size_t)t * per_token + (size_t)g * LANES;
                int8_t *q = j->xl + (size_t)t * lane_bytes(j) + (size_t)g * LANES * lane;
                job_activation_lanes(j, j->x + t * j->w->cols, g, q, j->xl_scale + at, j->xl_offset + at);
            }
        for (int64_t b = 0; b < j->lanes; b++) {
            size_t at = (size_t)(group * j->lanes + b);
            for (int i = 0; i < AMX_TILE; i++) {
                size_t t = (size_t)group * AMX_TILE + (size_t)i;
                memcpy(tmp + (size_t)i * lane, j->xl + t * lane_bytes(j) + (size_t)b * lane, lane);
                j->xb_scale[at * AMX_TILE + (size_t)i] = j->xl_scale[t * per_token + (size_t)b];
                j->xb_offset[at * AMX_TILE + (size_t)i] = j->xl_offset[t * per_token + (size_t)b];
            }
            job_transpose(j, tmp, j->xb + at * AMX_TILE * lane);
        }
    }
}

/* Packs rows [r0, r0 + nr) into the panel lane by lane: 16 rows of lane b at a + b·16·lane.
 * bias > 0: the bytes become signed (u - bias: Q4_0's n - 8, Q6_K's q - 32), so that the tile
 * multiply gives the true sums and the offsets are not needed. */
static void pack_panel_amx(const qgemm_job *j, int64_t r0, int nr, int bias, uint8_t *a, float *ws, float *wo)
{
    const infer_matrix *w = j->w;
    size_t lane = (size_t)j->l.lane;
    _Alignas(64) uint8_t u[LANES * 32];
    float scale[LANES], offset[LANES];
    if (nr < AMX_TILE) {   /* missing rows are zero: computed, not stored */
        memset(a, 0, (size_t)j->lanes * AMX_TILE * lane);
        memset(ws, 0, (size_t)j->lanes * AMX_TILE * sizeof *ws);
        memset(wo, 0, (size_t)j->lanes * AMX_TILE * sizeof *wo);
    }
    for (int r = 0; r < nr; r++)
        for (int64_t g = 0; g < j->l.nsb; g++) {
            job_weight_lanes(j, w->data + w->row_bytes * (size_t)(r0 + r), g, u, scale, offset);
            for (int k = 0; k < LANES && g * LANES + k < j->lanes; k++) {
                size_t b = (size_t)(g * LANES + k);
                uint8_t *to = a + (b * AMX_TILE + (size_t)r) * lane;
                const uint8_t *from = u + (size_t)k * lane;
                if (lane == 32)   /* constant counts: vector moves, not a call or a byte loop */
                    for (int i = 0; i < 32; i++)
                        to[i] = (uint8_t)(from[i] - bias);
                else
                    for (int i = 0; i < 16; i++)
                        to[i] = (uint8_t)(from[i] - bias);
                ws[b * AMX_TILE + (size_t)r] = scale[k];
                wo[b * AMX_TILE + (size_t)r] = offset[k];
            }
        }
}

static void multiply_tiles_amx(void *ctx, int64_t begin, int64_t end)
{
    qgemm_job *j = ctx;
    const infer_matrix *w = j->w;
    size_t lane = (size_t)j->l.lane, lb = AMX_TILE * lane, nl = (size_t)j->lanes;
    uint8_t *a = alloc64(nl * lb + 2 * nl * AMX_TILE * sizeof(float));
    if (!a) {
        multiply_float(j, begin * AMX_TILE, end * AMX_TILE);
        return;
    }
    float *ws = (float *)(a + nl * lb), *wo = ws + nl * AMX_TILE;
    amx_configure(j->l.lane);
    int64_t groups = (j->n_tok + AMX_TILE - 1) / AMX_TILE;
    for (int64_t tile = begin; tile < end; tile++) {
        int64_t r0 = tile * AMX_TILE;
        int nr = w->rows - r0 < AMX_TILE ? (int)(w->rows - r0) : AMX_TILE;
        /* A whole tile of Q8_0 rows needs no packing: A reads the blocks' bytes in place, 34
         * bytes apart, and only the scales are gathered. Q4_0 and Q6_K are packed as signed
         * bytes; all three then multiply signed × signed, without the offset term. */
        bool raw = w->type == INFER_Q8_0 && nr == AMX_TILE;
        int bias = w->type == INFER_Q4_0 ? 8 : w->type == INFER_Q6_K ? 32 : 0;
        const uint8_t *a_at = a;
        size_t a_stride = lane, a_step = lb;
        if (raw) {
            a_at = w->data + w->row_bytes * (size_t)r0 + 2;
            a_stride = w->row_bytes;
            a_step = 34;
            amx_q8_0_scales(a_at - 2, a_stride, nl, ws);
        } else {
            pack_panel_amx(j, r0, nr, bias, a, ws, wo);
        }
        bool signed_weights = raw || bias;
        /* The next tile's weights come from memory while this one computes: a share of them is
         * prefetched into L2 before each group of tokens. */
        const uint8_t *next = w->data + w->row_bytes * (size_t)(r0 + AMX_TILE);
        int64_t next_rows = w->rows - r0 - AMX_TILE < AMX_TILE ? w->rows - r0 - AMX_TILE : AMX_TILE;
        size_t ahead = tile + 1 < end ? w->row_bytes * (size_t)next_rows : 0;
        size_t share = (ahead / (size_t)groups + 63) & ~(size_t)63;
        for (int t = 0; t < j->n_tok; t += AMX_TILE) {
            size_t from = share * (size_t)(t / AMX_TILE);
            for (size_t o = from; o < from + share && o < ahead; o += 64)
                __builtin_prefetch(next + o, 0, 2);
            size_t at = (size_t)(t / AMX_TILE) * nl;
            int nt = j->n_tok - t < AMX_TILE ? j->n_tok - t : AMX_TILE;
            amx_tile(a_at, a_stride, a_step, ws, wo, j->xb + at * lb, j->xb_scale + at * AMX_TILE,
                     j->xb_offset + at * AMX_TILE, j->lanes, j->l.lane, signed_weights,
                     j->y + (int64_t)t * w->rows + r0, w->rows, nr, nt);
        }
    }
    amx_release();
    free(a);
}

/* The AMX path: false when memory ran out before anything was written. */
static bool run_amx(infer_pool *p, qgemm_job *j)
{
    int64_t groups = (j->n_tok + AMX_TILE - 1) / AMX_TILE, padded = groups * AMX_TILE;
    size_t per_token = (size_t)j->l.nsb * LANES, nl = (size_t)j->lanes, lane = (size_t)j->l.lane;
    size_t xl_bytes = (size_t)padded * lane_bytes(j), xl_floats = (size_t)padded * per_token;
    size_t xb_bytes = (size_t)groups * nl * AMX_TILE * lane, xb_floats = (size_t)groups * nl * AMX_TILE;
    uint8_t *scratch = alloc64(xl_bytes + xb_bytes + 2 * (xl_floats + xb_floats) * sizeof(float));
    if (!scratch)
        return false;
    j->xl = (int8_t *)scratch;
    j->xb = scratch + xl_bytes;
    j->xl_scale = (float *)(j->xb + xb_bytes);
    j->xl_offset = j->xl_scale + xl_floats;
    j->xb_scale = j->xl_offset + xl_floats;
    j->xb_offset = j->xb_scale + xb_floats;
    size_t pad = (size_t)(padded - j->n_tok);   /* padding tokens are zero: computed, not stored */
    memset(j->xl + (size_t)j->n_tok * lane_bytes(j), 0, pad * lane_bytes(j));
    memset(j->xl_scale + (size_t)j->n_tok * per_token, 0, pad * per_token * sizeof(float));
    memset(j->xl_offset + (size_t)j->n_tok * per_token, 0, pad * per_token * sizeof(float));
    infer_pool_run(p, groups, prepare_groups_amx, j);
    infer_pool_run(p, (j->w->rows + AMX_TILE - 1) / AMX_TILE, multiply_tiles_amx, j);
    free(scratch);
    return true;
}

bool infer_qgemm(infer_pool *p, float *y, const float *x, const infer_matrix *w, int n_tok,
                 infer_qgemm_level level)
{
    if (!infer_qgemm_supports(w->type) || w->cols % infer_dtype_block(w->type))
        return false;
    infer_qgemm_level cpu = infer_cpu_level();
    if (level > cpu)
        level = cpu;
    qgemm_job j = {.w = w, .l = layout_of(w->type, w->cols), .x = x, .y = y, .n_tok = n_tok,
                   .rows = 1, .tokens = 1, .tile = tile_portable};
    j.lanes = w->cols / j.l.lane;
#if defined(__x86_64__)
    j.simd_pack = level >= INFER_QGEMM_AVX512;
    if (level >= INFER_QGEMM_AMX)
        return run_amx(p, &j);
    if (level >= INFER_QGEMM_AVX512_VNNI) {
        j.rows = VNNI_ROWS;
        j.tokens = VNNI_TOKENS;
        j.tile = tile_vnni;
    } else if (level >= INFER_QGEMM_AVX2) {
        j.rows = AVX2_ROWS;
        j.tokens = AVX2_TOKENS;
        j.tile = tile_avx2;
    }
#endif
    j.xq = alloc64((size_t)n_tok * packed_row_bytes(&j.l));
    if (!j.xq)
        return false;
    infer_pool_run(p, n_tok, quantize_tokens, &j);
    infer_pool_run(p, (w->rows + j.rows - 1) / j.rows, multiply_tiles, &j);
    free(j.xq);
    return true;
}
