/* BLAKE3, sixteen 1 KiB chunks at once with AVX-512 (one chunk per 32-bit lane of a zmm).
 *
 * Same transposed layout as blake3_avx2.c, twice as wide: vector i holds word i of all sixteen
 * chunks, rotates are single vprord instructions, and the 32 zmm registers hold the state and
 * the message without spilling. Compiled through __attribute__((target)) and used only when
 * __builtin_cpu_supports("avx512f") says so (blake3.c).
 */
#include "xet/xet_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

#define GZ(a, b, c, d, x, y)                                                                       \
    do {                                                                                           \
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), (x));                                \
        v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 16);                                 \
        v[c] = _mm512_add_epi32(v[c], v[d]);                                                       \
        v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 12);                                 \
        v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), (y));                                \
        v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 8);                                  \
        v[c] = _mm512_add_epi32(v[c], v[d]);                                                       \
        v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 7);                                  \
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

/* Transposes a 16x16 matrix of 32-bit words: r[i] = row i in, column i out. */
AVX512 static void transpose16(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* u[4g + j], 128-bit lane k = rows 4g..4g+3 of column 4k + j */
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int j = 0; j < 4; j++) {
        __m512i x_lo = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44);
        __m512i x_hi = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xEE);
        __m512i y_lo = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44);
        __m512i y_hi = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xEE);
        r[0 + j] = _mm512_shuffle_i32x4(x_lo, y_lo, 0x88);
        r[4 + j] = _mm512_shuffle_i32x4(x_lo, y_lo, 0xDD);
        r[8 + j] = _mm512_shuffle_i32x4(x_hi, y_hi, 0x88);
        r[12 + j] = _mm512_shuffle_i32x4(x_hi, y_hi, 0xDD);
    }
}

AVX512 static void hash16(const uint8_t *input, const uint32_t key[8], uint64_t counter,
                          uint8_t flags, uint32_t *cvs_out)
{
    const bool parent = flags & XET_BLAKE3_PARENT; /* one block per input, as hash8 */
    const size_t stride = parent ? 64 : XET_BLAKE3_CHUNK_LEN, blocks = parent ? 1 : 16;
    const uint64_t step = parent ? 0 : 1;
    __m512i cv[8];
    for (int i = 0; i < 8; i++)
        cv[i] = _mm512_set1_epi32((int)key[i]);
    uint32_t lo[16], hi[16];
    for (int lane = 0; lane < 16; lane++) {
        lo[lane] = (uint32_t)(counter + step * (uint64_t)lane);
        hi[lane] = (uint32_t)((counter + step * (uint64_t)lane) >> 32);
    }
    const __m512i counter_lo = _mm512_loadu_si512(lo), counter_hi = _mm512_loadu_si512(hi);

    for (size_t b = 0; b < blocks; b++) {
        __m512i m[16];
        for (int lane = 0; lane < 16; lane++)
            m[lane] = _mm512_loadu_si512(input + (size_t)lane * stride + 64 * b);
        transpose16(m);
        uint8_t f = parent ? flags
                           : (uint8_t)(flags | (b == 0 ? XET_BLAKE3_CHUNK_START : 0) |
                                       (b == 15 ? XET_BLAKE3_CHUNK_END : 0));
        __m512i v[16];
        for (int i = 0; i < 8; i++)
            v[i] = cv[i];
        v[8] = _mm512_set1_epi32((int)xet_blake3_iv[0]);
        v[9] = _mm512_set1_epi32((int)xet_blake3_iv[1]);
        v[10] = _mm512_set1_epi32((int)xet_blake3_iv[2]);
        v[11] = _mm512_set1_epi32((int)xet_blake3_iv[3]);
        v[12] = counter_lo;
        v[13] = counter_hi;
        v[14] = _mm512_set1_epi32(64);
        v[15] = _mm512_set1_epi32(f);
#pragma GCC unroll 7
        for (int r = 0; r < 7; r++) {
            const uint8_t *k = schedule[r];
            GZ(0, 4, 8, 12, m[k[0]], m[k[1]]);
            GZ(1, 5, 9, 13, m[k[2]], m[k[3]]);
            GZ(2, 6, 10, 14, m[k[4]], m[k[5]]);
            GZ(3, 7, 11, 15, m[k[6]], m[k[7]]);
            GZ(0, 5, 10, 15, m[k[8]], m[k[9]]);
            GZ(1, 6, 11, 12, m[k[10]], m[k[11]]);
            GZ(2, 7, 8, 13, m[k[12]], m[k[13]]);
            GZ(3, 4, 9, 14, m[k[14]], m[k[15]]);
        }
        for (int i = 0; i < 8; i++)
            cv[i] = _mm512_xor_si512(v[i], v[i + 8]);
    }
    /* Back to one chaining value per chunk. */
    uint32_t words[8][16];
    for (int i = 0; i < 8; i++)
        _mm512_storeu_si512(words[i], cv[i]);
    for (int lane = 0; lane < 16; lane++)
        for (int i = 0; i < 8; i++)
            cvs_out[8 * lane + i] = words[i][lane];
}

size_t xet_blake3_hash_chunks_avx512f(const uint8_t *input, size_t count, const uint32_t key[8],
                                      uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    const size_t stride = flags & XET_BLAKE3_PARENT ? 64 : XET_BLAKE3_CHUNK_LEN;
    const uint64_t step = flags & XET_BLAKE3_PARENT ? 0 : 1;
    size_t done = 0;
    while (count - done >= 16) {
        hash16(input + done * stride, key, counter + step * done, flags, cvs_out + 8 * done);
        done += 16;
    }
    /* A remainder of 8..15 still gets eight lanes. */
    done += xet_blake3_hash_chunks_avx512(input + done * stride, count - done, key,
                                          counter + step * done, flags, cvs_out + 8 * done);
    return done;
}

#else
size_t xet_blake3_hash_chunks_avx512f(const uint8_t *input, size_t count, const uint32_t key[8],
                                      uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    return 0;
}
#endif
