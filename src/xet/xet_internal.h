/* Internals shared between the files of src/xet/ (not part of the module's interface). */
#ifndef HEARTH_XET_INTERNAL_H
#define HEARTH_XET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XET_BLAKE3_CHUNK_LEN 1024
enum {
    XET_BLAKE3_CHUNK_START = 1,
    XET_BLAKE3_CHUNK_END = 2,
    XET_BLAKE3_PARENT = 4,
    XET_BLAKE3_ROOT = 8,
    XET_BLAKE3_KEYED_HASH = 16,
};

extern const uint32_t xet_blake3_iv[8];

void xet_blake3_compress_in_place(uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                                  uint64_t counter, uint8_t flags);
/* Hashes whole 1 KiB chunks, 8 at a time, into chaining values (8 words each). Returns how
 * many it did (a multiple of 8); the caller does the rest. x86-64 only. With
 * XET_BLAKE3_PARENT in flags the inputs are instead parent nodes: 64-byte blocks (left and
 * right child chaining values), all with counter 0. */
size_t xet_blake3_hash_chunks_avx2(const uint8_t *input, size_t count, const uint32_t key[8],
                                   uint64_t counter, uint8_t flags, uint32_t *cvs_out);
/* The same with AVX-512VL (rotates in one instruction, 32 registers). */
size_t xet_blake3_hash_chunks_avx512(const uint8_t *input, size_t count, const uint32_t key[8],
                                     uint64_t counter, uint8_t flags, uint32_t *cvs_out);
/* Sixteen lanes in zmm registers (AVX-512F), the rest eight at a time (needs AVX-512VL too). */
size_t xet_blake3_hash_chunks_avx512f(const uint8_t *input, size_t count, const uint32_t key[8],
                                      uint64_t counter, uint8_t flags, uint32_t *cvs_out);

#endif
