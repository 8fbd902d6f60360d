/* BLAKE3, eight 1 KiB chunks at once (one chunk per 32-bit lane of a 256-bit vector).
 *
 * Compiled for every x86-64 CPU through __attribute__((target(...))) and only called after
 * __builtin_cpu_supports said the CPU has the instructions (blake3.c). The state is
 * transposed: vector i holds word i of all eight lanes, so the G function is the portable one
 * on vectors. Message words are loaded per lane and transposed 8x8. The kernel is written once
 * (blake3_lanes.inc) and instantiated for AVX2 and for AVX-512VL.
 */
#include "xet/xet_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define ADD _mm256_add_epi32
#define XOR _mm256_xor_si256
#define GV(a, b, c, d, x, y)                                                                       \
    do {                                                                                           \
        v[a] = ADD(ADD(v[a], v[b]), (x));                                                          \
        v[d] = LANES(rot16)(XOR(v[d], v[a]));                                                      \
        v[c] = ADD(v[c], v[d]);                                                                    \
        v[b] = LANES(rot12)(XOR(v[b], v[c]));                                                      \
        v[a] = ADD(ADD(v[a], v[b]), (y));                                                          \
        v[d] = LANES(rot8)(XOR(v[d], v[a]));                                                       \
        v[c] = ADD(v[c], v[d]);                                                                    \
        v[b] = LANES(rot7)(XOR(v[b], v[c]));                                                       \
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

/* AVX2: rotates by 12 and 7 are two shifts and an or. */
#define LANES(name) name##_avx2
#define LANES_FN __attribute__((target("avx2")))
#define ROTR(x, n) _mm256_or_si256(_mm256_srli_epi32((x), (n)), _mm256_slli_epi32((x), 32 - (n)))
#include "xet/blake3_lanes.inc"
#undef LANES
#undef LANES_FN
#undef ROTR

/* AVX-512VL on 256-bit vectors: one-instruction rotates, twice the registers. */
#define LANES(name) name##_avx512
#define LANES_FN __attribute__((target("avx2,avx512f,avx512vl")))
#define ROTR(x, n) _mm256_ror_epi32((x), (n))
#include "xet/blake3_lanes.inc"
#undef LANES
#undef LANES_FN
#undef ROTR

size_t xet_blake3_hash_chunks_avx2(const uint8_t *input, size_t count, const uint32_t key[8],
                                   uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    const size_t stride = flags & XET_BLAKE3_PARENT ? 64 : XET_BLAKE3_CHUNK_LEN;
    const uint64_t step = flags & XET_BLAKE3_PARENT ? 0 : 1;
    size_t done = 0;
    while (count - done >= 8) {
        hash8_avx2(input + done * stride, key, counter + step * done, flags, cvs_out + 8 * done);
        done += 8;
    }
    return done;
}

size_t xet_blake3_hash_chunks_avx512(const uint8_t *input, size_t count, const uint32_t key[8],
                                     uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    const size_t stride = flags & XET_BLAKE3_PARENT ? 64 : XET_BLAKE3_CHUNK_LEN;
    const uint64_t step = flags & XET_BLAKE3_PARENT ? 0 : 1;
    size_t done = 0;
    while (count - done >= 8) {
        hash8_avx512(input + done * stride, key, counter + step * done, flags, cvs_out + 8 * done);
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

size_t xet_blake3_hash_chunks_avx512(const uint8_t *input, size_t count, const uint32_t key[8],
                                     uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    return 0;
}
#endif
