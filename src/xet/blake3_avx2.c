/* BLAKE3, eight 1 KiB chunks at once with AVX2 (one chunk per 32-bit lane).
 *
 * Compiled for every x86-64 CPU through __attribute__((target("avx2"))) and only called after
 * __builtin_cpu_supports("avx2") said yes (blake3.c). The state is transposed: vector i holds
 * word i of all eight lanes, so the G function is the portable one on vectors. Message words
 * are loaded per lane and transposed 8x8.
 */
#include "xet/xet_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2")))

AVX2 static inline __m256i rot16(__m256i x)
{
    const __m256i m = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3,
                                       0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    return _mm256_shuffle_epi8(x, m);
}

AVX2 static inline __m256i rot8(__m256i x)
{
    const __m256i m = _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2,
                                       3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12);
    return _mm256_shuffle_epi8(x, m);
}

AVX2 static inline __m256i rot12(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20));
}

AVX2 static inline __m256i rot7(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25));
}

#define ADD _mm256_add_epi32
#define XOR _mm256_xor_si256
#define GV(a, b, c, d, x, y)                                                                       \
    do {                                                                                           \
        v[a] = ADD(ADD(v[a], v[b]), (x));                                                          \
        v[d] = rot16(XOR(v[d], v[a]));                                                             \
        v[c] = ADD(v[c], v[d]);                                                                    \
        v[b] = rot12(XOR(v[b], v[c]));                                                             \
        v[a] = ADD(ADD(v[a], v[b]), (y));                                                          \
        v[d] = rot8(XOR(v[d], v[a]));                                                              \
        v[c] = ADD(v[c], v[d]);                                                                    \
        v[b] = rot7(XOR(v[b], v[c]));                                                              \
    } while (0)

static const uint8_t schedule[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

/* Transposes an 8x8 matrix of 32-bit words held in r[0..8) (row i = lane i's 8 words). */
AVX2 static void transpose8(__m256i r[8])
{
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/* Loads block b of the eight chunks as 16 vectors: m[w] = word w of each lane. */
AVX2 static void load_message(const uint8_t *input, size_t b, __m256i m[16])
{
    for (int half = 0; half < 2; half++) {
        __m256i *r = m + 8 * half;
        for (int lane = 0; lane < 8; lane++)
            r[lane] = _mm256_loadu_si256(
                (const __m256i *)(input + (size_t)lane * XET_BLAKE3_CHUNK_LEN + 64 * b + 32 * half));
        transpose8(r);
    }
}

AVX2 static void hash8(const uint8_t *input, const uint32_t key[8], uint64_t counter,
                       uint8_t flags, uint32_t *cvs_out)
{
    __m256i cv[8];
    for (int i = 0; i < 8; i++)
        cv[i] = _mm256_set1_epi32((int)key[i]);
    __m256i counter_lo = _mm256_setr_epi32(
        (int)(uint32_t)(counter + 0), (int)(uint32_t)(counter + 1), (int)(uint32_t)(counter + 2),
        (int)(uint32_t)(counter + 3), (int)(uint32_t)(counter + 4), (int)(uint32_t)(counter + 5),
        (int)(uint32_t)(counter + 6), (int)(uint32_t)(counter + 7));
    __m256i counter_hi = _mm256_setr_epi32(
        (int)(uint32_t)((counter + 0) >> 32), (int)(uint32_t)((counter + 1) >> 32),
        (int)(uint32_t)((counter + 2) >> 32), (int)(uint32_t)((counter + 3) >> 32),
        (int)(uint32_t)((counter + 4) >> 32), (int)(uint32_t)((counter + 5) >> 32),
        (int)(uint32_t)((counter + 6) >> 32), (int)(uint32_t)((counter + 7) >> 32));
    for (size_t b = 0; b < 16; b++) {
        __m256i m[16];
        load_message(input, b, m);
        uint8_t f = flags | (b == 0 ? XET_BLAKE3_CHUNK_START : 0) |
                    (b == 15 ? XET_BLAKE3_CHUNK_END : 0);
        __m256i v[16];
        for (int i = 0; i < 8; i++)
            v[i] = cv[i];
        v[8] = _mm256_set1_epi32((int)xet_blake3_iv[0]);
        v[9] = _mm256_set1_epi32((int)xet_blake3_iv[1]);
        v[10] = _mm256_set1_epi32((int)xet_blake3_iv[2]);
        v[11] = _mm256_set1_epi32((int)xet_blake3_iv[3]);
        v[12] = counter_lo;
        v[13] = counter_hi;
        v[14] = _mm256_set1_epi32(64);
        v[15] = _mm256_set1_epi32(f);
        for (int r = 0; r < 7; r++) {
            const uint8_t *k = schedule[r];
            GV(0, 4, 8, 12, m[k[0]], m[k[1]]);
            GV(1, 5, 9, 13, m[k[2]], m[k[3]]);
            GV(2, 6, 10, 14, m[k[4]], m[k[5]]);
            GV(3, 7, 11, 15, m[k[6]], m[k[7]]);
            GV(0, 5, 10, 15, m[k[8]], m[k[9]]);
            GV(1, 6, 11, 12, m[k[10]], m[k[11]]);
            GV(2, 7, 8, 13, m[k[12]], m[k[13]]);
            GV(3, 4, 9, 14, m[k[14]], m[k[15]]);
        }
        for (int i = 0; i < 8; i++)
            cv[i] = XOR(v[i], v[i + 8]);
    }
    /* Back to one row per lane. */
    transpose8(cv);
    for (int lane = 0; lane < 8; lane++)
        _mm256_storeu_si256((__m256i *)(cvs_out + 8 * lane), cv[lane]);
}

size_t xet_blake3_hash_chunks_avx2(const uint8_t *input, size_t count, const uint32_t key[8],
                                   uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    size_t done = 0;
    while (count - done >= 8) {
        hash8(input + done * XET_BLAKE3_CHUNK_LEN, key, counter + done, flags, cvs_out + 8 * done);
        done += 8;
    }
    return done;
}

#else
size_t xet_blake3_hash_chunks_avx2(const uint8_t *input, size_t count, const uint32_t key[8],
                                   uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    return 0;
}
#endif
