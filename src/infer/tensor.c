/* tensor.c — weight dtypes and the kernels that read them.
 *
 * Weights stay in the dtype they were stored in (F32, F16, BF16, or GGUF blocks); the forward
 * pass never dequantises a whole matrix. Everything funnels through one operation: the dot
 * product of a weight row with an activation vector, done block by block. The portable C
 * versions here are the reference; AVX2/FMA and AVX-512 versions are picked at run time by what
 * cpu.c says the CPU has, so that one binary runs on any x86-64 (and on anything else through
 * the portable path). Activations are always F32. The float matrix products at the end
 * (infer_matmul_float) take every decode product and the prompts that qgemm.c and bgemm.c do
 * not; matmul.c chooses.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/internal.h"

static const struct {
    const char *name;
    int block;
    size_t bytes;
} dtype_info[INFER_DTYPE_COUNT] = {
    [INFER_F32] = {"F32", 1, 4},      [INFER_F16] = {"F16", 1, 2},
    [INFER_BF16] = {"BF16", 1, 2},    [INFER_Q8_0] = {"Q8_0", 32, 34},
    [INFER_Q4_0] = {"Q4_0", 32, 18},  [INFER_Q4_K] = {"Q4_K", 256, 144},
    [INFER_Q6_K] = {"Q6_K", 256, 210},
};

const char *infer_dtype_name(infer_dtype t) { return dtype_info[t].name; }
int infer_dtype_block(infer_dtype t) { return dtype_info[t].block; }
size_t infer_dtype_block_bytes(infer_dtype t) { return dtype_info[t].bytes; }

size_t infer_dtype_row_bytes(infer_dtype t, int64_t n)
{
    if (n < 0 || n % dtype_info[t].block)
        return SIZE_MAX;
    return (size_t)(n / dtype_info[t].block) * dtype_info[t].bytes;
}

/* ---- scalar conversions ------------------------------------------------------------------- */

static inline __attribute__((always_inline)) float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        float f = (float)man * (1.0f / 16777216.0f);   /* zero and subnormals: man · 2^-24 */
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (man << 13);
    else
        bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float infer_f16_to_f32(uint16_t h) { return half_to_float(h); }

uint16_t infer_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff)   /* inf / NaN */
        return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {                   /* subnormal or zero: round to nearest even */
        if (exp < -10)
            return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - exp;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;   /* may carry into the exponent, which is the right answer */
    return (uint16_t)h;
}

float infer_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* ---- block dequantisation (llama.cpp's layouts, see spec 6.2) -------------------------------- */

static inline __attribute__((always_inline)) void dequant_q8_0(const uint8_t *b, float *y)
{
    float d = half_to_float(rd16(b));
    const int8_t *q = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++)
        y[j] = d * q[j];
}

static inline __attribute__((always_inline)) void dequant_q4_0(const uint8_t *b, float *y)
{
    float d = half_to_float(rd16(b));
    const uint8_t *q = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * ((q[j] & 0xF) - 8);
        y[j + 16] = d * ((q[j] >> 4) - 8);
    }
}

static inline __attribute__((always_inline)) void dequant_q4_k(const uint8_t *b, float *y)
{
    float d = half_to_float(rd16(b)), dmin = half_to_float(rd16(b + 2));
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int c = 0; c < 4; c++) {
        int sc1, m1, sc2, m2;
        infer_q4k_scale_min(2 * c, scales, &sc1, &m1);
        infer_q4k_scale_min(2 * c + 1, scales, &sc2, &m2);
        float d1 = d * sc1, o1 = dmin * m1, d2 = d * sc2, o2 = dmin * m2;
        for (int l = 0; l < 32; l++) {
            y[64 * c + l] = d1 * (q[l] & 0xF) - o1;
            y[64 * c + 32 + l] = d2 * (q[l] >> 4) - o2;
        }
        q += 32;
    }
}

static inline __attribute__((always_inline)) void dequant_q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = half_to_float(rd16(b + 208));
    for (int n = 0; n < 2; n++) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is + 0] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

void infer_dequant_row(infer_dtype t, const void *row, float *out, int64_t n)
{
    const uint8_t *p = row;
    switch (t) {
    case INFER_F32:
        memcpy(out, row, (size_t)n * 4);
        return;
    case INFER_F16:
        for (int64_t i = 0; i < n; i++)
            out[i] = infer_f16_to_f32(rd16(p + 2 * i));
        return;
    case INFER_BF16:
        for (int64_t i = 0; i < n; i++)
            out[i] = infer_bf16_to_f32(rd16(p + 2 * i));
        return;
    case INFER_Q8_0:
        for (int64_t i = 0; i < n / 32; i++)
            dequant_q8_0(p + 34 * i, out + 32 * i);
        return;
    case INFER_Q4_0:
        for (int64_t i = 0; i < n / 32; i++)
            dequant_q4_0(p + 18 * i, out + 32 * i);
        return;
    case INFER_Q4_K:
        for (int64_t i = 0; i < n / 256; i++)
            dequant_q4_k(p + 144 * i, out + 256 * i);
        return;
    case INFER_Q6_K:
        for (int64_t i = 0; i < n / 256; i++)
            dequant_q6_k(p + 210 * i, out + 256 * i);
        return;
    default:
        return;
    }
}

void infer_quantize_row(infer_dtype t, const float *x, uint8_t *out, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++) {
        const float *v = x + 32 * b;
        if (t == INFER_Q8_0) {
            uint8_t *blk = out + 34 * b;
            float amax = 0;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(v[j]));
            float d = amax / 127, id = d ? 1.0f / d : 0;
            uint16_t h = infer_f32_to_f16(d);
            memcpy(blk, &h, 2);
            for (int j = 0; j < 32; j++)
                blk[2 + j] = (uint8_t)(int8_t)roundf(v[j] * id);
        } else {   /* Q4_0: scale from the largest-magnitude value, keeping its sign */
            uint8_t *blk = out + 18 * b;
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
                if (fabsf(v[j]) > amax) {
                    amax = fabsf(v[j]);
                    max = v[j];
                }
            float d = max / -8, id = d ? 1.0f / d : 0;
            uint16_t h = infer_f32_to_f16(d);
            memcpy(blk, &h, 2);
            for (int j = 0; j < 16; j++) {
                int q0 = (int)(v[j] * id + 8.5f), q1 = (int)(v[j + 16] * id + 8.5f);
                q0 = q0 < 0 ? 0 : q0 > 15 ? 15 : q0;
                q1 = q1 < 0 ? 0 : q1 > 15 ? 15 : q1;
                blk[2 + j] = (uint8_t)(q0 | (q1 << 4));
            }
        }
    }
}

/* ---- portable dot products -------------------------------------------------------------------- */

float infer_dot_row(infer_dtype t, const void *row, const float *x, int64_t n)
{
    const uint8_t *p = row;
    float sum = 0;
    switch (t) {
    case INFER_F32: {
        const float *w = row;
        for (int64_t i = 0; i < n; i++)
            sum += w[i] * x[i];
        return sum;
    }
    case INFER_F16:
        for (int64_t i = 0; i < n; i++)
            sum += infer_f16_to_f32(rd16(p + 2 * i)) * x[i];
        return sum;
    case INFER_BF16:
        for (int64_t i = 0; i < n; i++)
            sum += infer_bf16_to_f32(rd16(p + 2 * i)) * x[i];
        return sum;
    default: {
        int block = dtype_info[t].block;
        size_t bytes = dtype_info[t].bytes;
        float tmp[256];
        for (int64_t i = 0; i < n / block; i++) {
            infer_dequant_row(t, p + bytes * (size_t)i, tmp, block);
            const float *xb = x + (int64_t)block * i;
            for (int j = 0; j < block; j++)
                sum += tmp[j] * xb[j];
        }
        return sum;
    }
    }
}

/* ---- AVX2 / FMA kernels ------------------------------------------------------------------------ */

/* What the CPU has (cpu.c), kept here once asked: the vector helpers below check it on every
 * call, attention calls them for every position, and a call into another file costs more than
 * the check. */
static bool have_avx2(void)
{
    static int cached = -1;
    if (cached < 0)
        cached = infer_cpu_has_avx2();
    return cached;
}

static bool have_avx512(void)
{
    static int cached = -1;
    if (cached < 0)
        cached = infer_cpu_has_avx512();
    return cached;
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float half_f16c(uint16_t h) { return _cvtsh_ss(h); }

/* Decoding streams every weight row from memory once, and the hardware prefetcher alone leaves a
 * core waiting on it: one thread read Q8_0 rows at 5.4 GB/s, and at 9.0 GB/s when the kernel asks
 * for the bytes 2 KiB ahead of where it reads (about 17 GB/s is its speed from cache). The decode
 * kernels call this once per 64 bytes or less of weights; a prefetch never faults, past the end of
 * the matrix either. */
static inline __attribute__((always_inline)) void fetch_ahead(const void *p)
{
    _mm_prefetch((const char *)p + 2048, _MM_HINT_T0);
}

AVX2 static inline float hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

AVX2 static float dot_f32_avx2(const float *w, const float *x, int64_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        fetch_ahead(w + i);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++)
        s += w[i] * x[i];
    return s;
}

AVX2 static float dot_f16_avx2(const uint8_t *w, const float *x, int64_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        fetch_ahead(w + 2 * i);
        __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * i)));
        __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * i + 16)));
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
    }
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++)
        s += half_f16c(rd16(w + 2 * i)) * x[i];
    return s;
}

AVX2 static float dot_bf16_avx2(const uint8_t *w, const float *x, int64_t n)
{
    __m256 a0 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        fetch_ahead(w + 2 * i);
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + 2 * i)));
        __m256 wf = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        a0 = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + i), a0);
    }
    float s = hsum256(a0);
    for (; i < n; i++)
        s += (float)0 + x[i] * (float)((union { uint32_t u; float f; }){(uint32_t)rd16(w + 2 * i) << 16}).f;
    return s;
}

/* Q8_0: 32 signed bytes and one f16 scale a block; widen to floats 8 at a time. */
AVX2 static float dot_q8_0_avx2(const uint8_t *w, const float *x, int64_t n)
{
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += 34, x += 32) {
        fetch_ahead(w);
        __m256 d = _mm256_set1_ps(half_f16c(rd16(w)));
        const int8_t *q = (const int8_t *)(w + 2);
        __m256 s = _mm256_setzero_ps();
        for (int k = 0; k < 32; k += 8) {
            __m256 qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + k))));
            s = _mm256_fmadd_ps(qf, _mm256_loadu_ps(x + k), s);
        }
        acc = _mm256_fmadd_ps(d, s, acc);
    }
    return hsum256(acc);
}

AVX2 static float dot_q4_0_avx2(const uint8_t *w, const float *x, int64_t n)
{
    __m256 acc = _mm256_setzero_ps();
    const __m128i mask = _mm_set1_epi8(0xF), eight = _mm_set1_epi8(8);
    for (int64_t b = 0; b < n / 32; b++, w += 18, x += 32) {
        fetch_ahead(w);
        __m256 d = _mm256_set1_ps(half_f16c(rd16(w)));
        __m128i raw = _mm_loadu_si128((const __m128i *)(w + 2));
        __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, mask), eight);
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), eight);
        __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))),
                            _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))),
                            _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(d, s, acc);
    }
    return hsum256(acc);
}

/* Q4_K: per 32-element sub-block, d·sc·Σq·x − dmin·m·Σx, nibbles widened to floats 8 at a time. */
AVX2 static float dot_q4_k_avx2(const uint8_t *w, const float *x, int64_t n)
{
    const __m128i m4 = _mm_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++, w += 144, x += 256) {
        float d = half_f16c(rd16(w)), dmin = half_f16c(rd16(w + 2));
        const uint8_t *scales = w + 4, *q = w + 16;
        for (int c = 0; c < 4; c++) {
            fetch_ahead(q + 36 * c);
            int s1, m1, s2, m2;
            infer_q4k_scale_min(2 * c, scales, &s1, &m1);
            infer_q4k_scale_min(2 * c + 1, scales, &s2, &m2);
            __m128i r0 = _mm_loadu_si128((const __m128i *)(q + 32 * c));
            __m128i r1 = _mm_loadu_si128((const __m128i *)(q + 32 * c + 16));
            __m128i lo[2] = {_mm_and_si128(r0, m4), _mm_and_si128(r1, m4)};
            __m128i hi[2] = {_mm_and_si128(_mm_srli_epi16(r0, 4), m4), _mm_and_si128(_mm_srli_epi16(r1, 4), m4)};
            const float *xs = x + 64 * c;
            __m256 dl = _mm256_setzero_ps(), dh = _mm256_setzero_ps(), sl = _mm256_setzero_ps(),
                   sh = _mm256_setzero_ps();
            for (int k = 0; k < 4; k++) {
                __m128i ql = k & 1 ? _mm_srli_si128(lo[k >> 1], 8) : lo[k >> 1];
                __m128i qh = k & 1 ? _mm_srli_si128(hi[k >> 1], 8) : hi[k >> 1];
                __m256 xl = _mm256_loadu_ps(xs + 8 * k), xh = _mm256_loadu_ps(xs + 32 + 8 * k);
                dl = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(ql)), xl, dl);
                dh = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(qh)), xh, dh);
                sl = _mm256_add_ps(sl, xl);
                sh = _mm256_add_ps(sh, xh);
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)s1), dl, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)s2), dh, acc);
            acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * (float)m1), sl, acc);
            acc = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * (float)m2), sh, acc);
        }
    }
    return hsum256(acc);
}

/* Q6_K: 6-bit values rebuilt 16 at a time from ql/qh with byte shifts, then widened to floats. */
AVX2 static float dot_q6_k_avx2(const uint8_t *w, const float *x, int64_t n)
{
    const __m128i m4 = _mm_set1_epi8(0xF), m3 = _mm_set1_epi8(3), off = _mm_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++, w += 210, x += 256) {
        const uint8_t *ql = w, *qh = w + 128;
        const int8_t *sc = (const int8_t *)(w + 192);
        float d = half_f16c(rd16(w + 208));
        const float *xs = x;
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, xs += 128) {
            for (int g = 0; g < 2; g++) {   /* l in [16g, 16g+16): one scale per quarter */
                fetch_ahead(ql + 32 * g);
                int l = 16 * g;
                __m128i a = _mm_loadu_si128((const __m128i *)(ql + l));
                __m128i bq = _mm_loadu_si128((const __m128i *)(ql + l + 32));
                __m128i h = _mm_loadu_si128((const __m128i *)(qh + l));
                __m128i q[4];
                q[0] = _mm_or_si128(_mm_and_si128(a, m4), _mm_slli_epi16(_mm_and_si128(h, m3), 4));
                q[1] = _mm_or_si128(_mm_and_si128(bq, m4),
                                    _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 2), m3), 4));
                q[2] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), m4),
                                    _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 4), m3), 4));
                q[3] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(bq, 4), m4),
                                    _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 6), m3), 4));
                for (int k = 0; k < 4; k++) {
                    __m128i v = _mm_sub_epi8(q[k], off);
                    const float *xk = xs + 32 * k + l;
                    __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), _mm256_loadu_ps(xk));
                    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))),
                                        _mm256_loadu_ps(xk + 8), s);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[g + 2 * k]), s, acc);
                }
            }
        }
    }
    return hsum256(acc);
}

/* Row dequantisation for the prompt kernels: F16 through F16C, blocks through the inlined
 * scalar dequantisers compiled here with VEX encoding. */
AVX2 static void dequant_row_avx2(infer_dtype t, const uint8_t *p, float *out, int64_t n)
{
    int64_t i = 0;
    switch (t) {
    case INFER_F16:
        for (; i + 8 <= n; i += 8) {
            if ((i & 31) == 0)
                fetch_ahead(p + 2 * i);
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
        }
        for (; i < n; i++)
            out[i] = half_f16c(rd16(p + 2 * i));
        return;
    case INFER_BF16:
        for (; i + 8 <= n; i += 8) {
            __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 2 * i)));
            _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
        }
        for (; i < n; i++)
            out[i] = infer_bf16_to_f32(rd16(p + 2 * i));
        return;
    case INFER_Q8_0:
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *blk = p + 34 * b;
            __m256 d = _mm256_set1_ps(half_f16c(rd16(blk)));
            for (int k = 0; k < 32; k += 8)
                _mm256_storeu_ps(out + 32 * b + k, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                                                       _mm_loadl_epi64((const __m128i *)(blk + 2 + k))))));
        }
        return;
    case INFER_Q4_0:
        for (int64_t b = 0; b < n / 32; b++)
            dequant_q4_0(p + 18 * b, out + 32 * b);
        return;
    case INFER_Q4_K:
        for (int64_t b = 0; b < n / 256; b++)
            dequant_q4_k(p + 144 * b, out + 256 * b);
        return;
    case INFER_Q6_K:
        for (int64_t b = 0; b < n / 256; b++)
            dequant_q6_k(p + 210 * b, out + 256 * b);
        return;
    default:
        memcpy(out, p, (size_t)n * sizeof *out);
    }
}

/* Prompt kernel: 4 dequantised rows against every token, so each activation load feeds 4 FMAs
 * and each weight row is converted once per chunk rather than once per token. */
AVX2 static void rows4_avx2(const float *w0, int nr, int64_t cols, const float *x, int n_tok,
                            float *y, int64_t rows, int64_t r)
{
    const float *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (int64_t)t * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= cols; i += 8) {
            __m256 xv = _mm256_loadu_ps(xt + i);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
        }
        float s[4] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
        for (; i < cols; i++) {
            s[0] += w0[i] * xt[i];
            s[1] += w1[i] * xt[i];
            s[2] += w2[i] * xt[i];
            s[3] += w3[i] * xt[i];
        }
        for (int k = 0; k < nr; k++)
            y[(int64_t)t * rows + r + k] = s[k];
    }
}

/* The same with AVX-512: 4 rows × 2 tokens a step, so 6 loads feed 8 FMAs of 16 lanes. */
#define AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")))

AVX512 static void rows4_avx512(const float *w0, int nr, int64_t cols, const float *x, int n_tok,
                                float *y, int64_t rows, int64_t r)
{
    const float *w[4] = {w0, w0 + cols, w0 + 2 * cols, w0 + 3 * cols};
    int t = 0;
    for (; t + 2 <= n_tok; t += 2) {
        const float *x0 = x + (int64_t)t * cols, *x1 = x0 + cols;
        __m512 a[4][2];
        for (int k = 0; k < 4; k++)
            a[k][0] = a[k][1] = _mm512_setzero_ps();
        int64_t i = 0;
        for (; i + 16 <= cols; i += 16) {
            __m512 xv0 = _mm512_loadu_ps(x0 + i), xv1 = _mm512_loadu_ps(x1 + i);
            for (int k = 0; k < 4; k++) {
                __m512 wv = _mm512_loadu_ps(w[k] + i);
                a[k][0] = _mm512_fmadd_ps(wv, xv0, a[k][0]);
                a[k][1] = _mm512_fmadd_ps(wv, xv1, a[k][1]);
            }
        }
        for (int k = 0; k < nr; k++) {
            float s0 = _mm512_reduce_add_ps(a[k][0]), s1 = _mm512_reduce_add_ps(a[k][1]);
            for (int64_t j = i; j < cols; j++) {
                s0 += w[k][j] * x0[j];
                s1 += w[k][j] * x1[j];
            }
            y[(int64_t)t * rows + r + k] = s0;
            y[(int64_t)(t + 1) * rows + r + k] = s1;
        }
    }
    if (t < n_tok)
        rows4_avx2(w0, nr, cols, x + (int64_t)t * cols, n_tok - t, y + (int64_t)t * rows, rows, r);
}

/* Prompt GEMM with AVX-512: an 8-row × 3-token register tile (24 accumulators), blocked over
 * 512 columns so the 8 dequantised rows stay in L1 while each activation load feeds 8 FMAs.
 * Partial sums stay vectors in `part` (n_tok × 8 × 16 floats) until the end, so horizontal
 * reductions happen once per output, not once per block. */
AVX512 static void gemm8_avx512(const float *w, int nr, int64_t cols, const float *x, int n_tok,
                                float *y, int64_t rows, int64_t r, float *part)
{
    enum { KC = 1024 };  /* 8 weight rows of 4 KiB and 3 token rows stay in L1 */
    int64_t c16 = cols & ~(int64_t)15;
    if (c16 == 0)
        memset(part, 0, (size_t)n_tok * 8 * 16 * sizeof *part);
    for (int64_t k0 = 0; k0 < c16; k0 += KC) {
        int64_t k1 = k0 + KC < c16 ? k0 + KC : c16;
        for (int t = 0; t < n_tok; t += 3) {
            int nt = n_tok - t < 3 ? n_tok - t : 3;
            const float *x0 = x + (int64_t)t * cols;
            const float *x1 = nt > 1 ? x0 + cols : x0, *x2 = nt > 2 ? x0 + 2 * cols : x0;
            __m512 a[8][3];
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++)
                a[q][0] = a[q][1] = a[q][2] = _mm512_setzero_ps();
            for (int64_t i = k0; i < k1; i += 16) {
                __m512 xv0 = _mm512_loadu_ps(x0 + i), xv1 = _mm512_loadu_ps(x1 + i),
                       xv2 = _mm512_loadu_ps(x2 + i);
#pragma GCC unroll 8
                for (int q = 0; q < 8; q++) {
                    __m512 wv = _mm512_loadu_ps(w + q * cols + i);
                    __asm__("" : "+v"(wv));   /* keep wv in a register: one load, three FMAs */
                    a[q][0] = _mm512_fmadd_ps(wv, xv0, a[q][0]);
                    a[q][1] = _mm512_fmadd_ps(wv, xv1, a[q][1]);
                    a[q][2] = _mm512_fmadd_ps(wv, xv2, a[q][2]);
                }
            }
            for (int j = 0; j < nt; j++)
#pragma GCC unroll 8
                for (int q = 0; q < 8; q++) {   /* the first pass stores, later ones add */
                    float *p = part + ((size_t)(t + j) * 8 + (size_t)q) * 16;
                    _mm512_storeu_ps(p, k0 ? _mm512_add_ps(_mm512_loadu_ps(p), a[q][j]) : a[q][j]);
                }
        }
    }
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (int64_t)t * cols;
        for (int q = 0; q < nr; q++) {
            float s = _mm512_reduce_add_ps(_mm512_loadu_ps(part + ((size_t)t * 8 + (size_t)q) * 16));
            for (int64_t i = c16; i < cols; i++)
                s += w[q * cols + i] * xt[i];
            y[(int64_t)t * rows + r + q] = s;
        }
    }
}

/* Decode kernels with AVX-512: the same float arithmetic as the AVX2 ones, twice as wide. */
AVX512 static float dot_f16_avx512(const uint8_t *w, const float *x, int64_t n)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        fetch_ahead(w + 2 * i);
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 2 * i))),
                             _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 2 * i + 32))),
                             _mm512_loadu_ps(x + i + 16), a1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < n; i++)
        s += half_f16c(rd16(w + 2 * i)) * x[i];
    return s;
}

AVX512 static float dot_q8_0_avx512(const uint8_t *w, const float *x, int64_t n)
{
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += 34, x += 32) {
        fetch_ahead(w);
        __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + 2))));
        __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + 18))));
        __m512 s = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(x)));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(half_f16c(rd16(w))), s, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

AVX512 static float dot_q4_0_avx512(const uint8_t *w, const float *x, int64_t n)
{
    const __m128i mask = _mm_set1_epi8(0xF), eight = _mm_set1_epi8(8);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += 18, x += 32) {
        fetch_ahead(w);
        __m128i raw = _mm_loadu_si128((const __m128i *)(w + 2));
        __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, mask), eight);
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), eight);
        __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), _mm512_loadu_ps(x));
        s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), _mm512_loadu_ps(x + 16), s);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(half_f16c(rd16(w))), s, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

AVX512 static float dot_q4_k_avx512(const uint8_t *w, const float *x, int64_t n)
{
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++, w += 144, x += 256) {
        float d = half_f16c(rd16(w)), dmin = half_f16c(rd16(w + 2));
        const uint8_t *scales = w + 4, *q = w + 16;
        for (int c = 0; c < 4; c++) {
            fetch_ahead(q + 36 * c);
            int s1, m1, s2, m2;
            infer_q4k_scale_min(2 * c, scales, &s1, &m1);
            infer_q4k_scale_min(2 * c + 1, scales, &s2, &m2);
            __m256i raw = _mm256_loadu_si256((const __m256i *)(q + 32 * c));
            __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            const float *xs = x + 64 * c;
            __m512 xl0 = _mm512_loadu_ps(xs), xl1 = _mm512_loadu_ps(xs + 16);
            __m512 xh0 = _mm512_loadu_ps(xs + 32), xh1 = _mm512_loadu_ps(xs + 48);
            __m512 dl = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(lo))), xl0);
            dl = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(lo, 1))), xl1, dl);
            __m512 dh = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(hi))), xh0);
            dh = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(hi, 1))), xh1, dh);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)s1), dl, acc);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)s2), dh, acc);
            acc = _mm512_fnmadd_ps(_mm512_set1_ps(dmin * (float)m1), _mm512_add_ps(xl0, xl1), acc);
            acc = _mm512_fnmadd_ps(_mm512_set1_ps(dmin * (float)m2), _mm512_add_ps(xh0, xh1), acc);
        }
    }
    return _mm512_reduce_add_ps(acc);
}

/* y += a·x against an F16 row (attention over the F16 value cache), 16 lanes at a time. */
AVX512 static void vec_axpy_f16_avx512(float *y, float a, const uint16_t *x, int n)
{
    __m512 av = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))),
                                                _mm512_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * half_f16c(x[i]);
}

AVX2 static float vec_dot_avx2(const float *a, const float *b, int n) { return dot_f32_avx2(a, b, n); }

AVX2 static void vec_axpy_f16_avx2(float *y, float a, const uint16_t *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * half_f16c(x[i]);
}

AVX2 static void f32_to_f16_row_avx2(const float *x, uint16_t *out, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++)
        out[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

AVX2 static void vec_axpy_avx2(float *y, float a, const float *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

static float dot_row_avx2(infer_dtype t, const uint8_t *row, const float *x, int64_t n)
{
    if (have_avx512()) {
        switch (t) {
        case INFER_F16: return dot_f16_avx512(row, x, n);
        case INFER_Q8_0: return dot_q8_0_avx512(row, x, n);
        case INFER_Q4_0: return dot_q4_0_avx512(row, x, n);
        case INFER_Q4_K: return dot_q4_k_avx512(row, x, n);
        default: break;
        }
    }
    switch (t) {
    case INFER_F32: return dot_f32_avx2((const float *)row, x, n);
    case INFER_F16: return dot_f16_avx2(row, x, n);
    case INFER_BF16: return dot_bf16_avx2(row, x, n);
    case INFER_Q8_0: return dot_q8_0_avx2(row, x, n);
    case INFER_Q4_0: return dot_q4_0_avx2(row, x, n);
    case INFER_Q4_K: return dot_q4_k_avx2(row, x, n);
    case INFER_Q6_K: return dot_q6_k_avx2(row, x, n);
    default: return infer_dot_row(t, row, x, n);
    }
}

#else
static float dot_row_avx2(infer_dtype t, const uint8_t *row, const float *x, int64_t n)
{
    return infer_dot_row(t, row, x, n);
}
static void rows4_avx2(const float *w0, int nr, int64_t cols, const float *x, int n_tok, float *y,
                       int64_t rows, int64_t r)
{
}
static float vec_dot_avx2(const float *a, const float *b, int n) { return 0; }
static void vec_axpy_f16_avx2(float *y, float a, const uint16_t *x, int n) {}
static void vec_axpy_f16_avx512(float *y, float a, const uint16_t *x, int n) {}
static float dot_f16_avx512(const uint8_t *w, const float *x, int64_t n) { return 0; }
static void f32_to_f16_row_avx2(const float *x, uint16_t *out, int n) {}
static float dot_f16_avx2(const uint8_t *w, const float *x, int64_t n) { return 0; }
static void vec_axpy_avx2(float *y, float a, const float *x, int n) {}
static void rows4_avx512(const float *w0, int nr, int64_t cols, const float *x, int n_tok, float *y,
                         int64_t rows, int64_t r)
{
}
static void dequant_row_avx2(infer_dtype t, const uint8_t *p, float *out, int64_t n)
{
    infer_dequant_row(t, p, out, n);
}
static void gemm8_avx512(const float *w, int nr, int64_t cols, const float *x, int n_tok, float *y,
                         int64_t rows, int64_t r, float *part)
{
}
#endif

float infer_vec_dot(const float *a, const float *b, int n)
{
    if (have_avx2())
        return vec_dot_avx2(a, b, n);
    float s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

float infer_vec_dot_f16(const float *a, const uint16_t *b, int n)
{
    if (have_avx2() && have_avx512())
        return dot_f16_avx512((const uint8_t *)b, a, n);
    if (have_avx2())
        return dot_f16_avx2((const uint8_t *)b, a, n);
    float s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * infer_f16_to_f32(b[i]);
    return s;
}

void infer_vec_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    if (have_avx2() && have_avx512()) {
        vec_axpy_f16_avx512(y, a, x, n);
        return;
    }
    if (have_avx2()) {
        vec_axpy_f16_avx2(y, a, x, n);
        return;
    }
    for (int i = 0; i < n; i++)
        y[i] += a * infer_f16_to_f32(x[i]);
}

void infer_f32_to_f16_row(const float *x, uint16_t *out, int n)
{
    if (have_avx2()) {
        f32_to_f16_row_avx2(x, out, n);
        return;
    }
    for (int i = 0; i < n; i++)
        out[i] = infer_f32_to_f16(x[i]);
}

void infer_vec_axpy(float *y, float a, const float *x, int n)
{
    if (have_avx2()) {
        vec_axpy_avx2(y, a, x, n);
        return;
    }
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* ---- matmul over the pool --------------------------------------------------------------------- */

typedef struct matmul_job {
    float *y;
    const float *x;
    const infer_matrix *w;
    int n_tok;
    bool simd, avx512;
} matmul_job;

static void matmul_rows(void *ctx, int64_t begin, int64_t end)
{
    const matmul_job *j = ctx;
    const infer_matrix *w = j->w;
    if (j->avx512 && j->n_tok > 1) {
        float *tmp = malloc(8 * (size_t)w->cols * sizeof *tmp);
        float *part = malloc((size_t)j->n_tok * 8 * 16 * sizeof *part);
        if (tmp && part) {
            for (int64_t r = begin; r < end; r += 8) {
                int nr = end - r < 8 ? (int)(end - r) : 8;
                for (int k = 0; k < 8; k++)   /* missing rows repeat the last: computed, not stored */
                    dequant_row_avx2(w->type, w->data + w->row_bytes * (size_t)(r + (k < nr ? k : nr - 1)),
                                      tmp + (size_t)k * w->cols, w->cols);
                gemm8_avx512(tmp, nr, w->cols, j->x, j->n_tok, j->y, w->rows, r, part);
            }
            free(tmp);
            free(part);
            return;
        }
        free(tmp);
        free(part);
    }
    if (j->simd && j->n_tok > 1) {
        float *tmp = malloc(4 * (size_t)w->cols * sizeof *tmp);
        if (tmp) {
            for (int64_t r = begin; r < end; r += 4) {
                int nr = end - r < 4 ? (int)(end - r) : 4;
                for (int k = 0; k < 4; k++)   /* missing rows repeat the last: computed, not stored */
                    dequant_row_avx2(w->type, w->data + w->row_bytes * (size_t)(r + (k < nr ? k : nr - 1)),
                                      tmp + (size_t)k * w->cols, w->cols);
                if (j->avx512)
                    rows4_avx512(tmp, nr, w->cols, j->x, j->n_tok, j->y, w->rows, r);
                else
                    rows4_avx2(tmp, nr, w->cols, j->x, j->n_tok, j->y, w->rows, r);
            }
            free(tmp);
            return;
        }
    }
    for (int64_t r = begin; r < end; r++) {
        const uint8_t *row = w->data + w->row_bytes * (size_t)r;
        /* One weight row against every token: the row stays in cache across the prompt. */
        for (int t = 0; t < j->n_tok; t++) {
            const float *x = j->x + (int64_t)t * w->cols;
            j->y[(int64_t)t * w->rows + r] =
                j->simd ? dot_row_avx2(w->type, row, x, w->cols) : infer_dot_row(w->type, row, x, w->cols);
        }
    }
}

void infer_matmul_float(infer_pool *p, float *y, const float *x, const infer_matrix *w, int n_tok)
{
    matmul_job job = {y, x, w, n_tok, have_avx2(), have_avx2() && have_avx512()};
    infer_pool_run(p, w->rows, matmul_rows, &job);
}
