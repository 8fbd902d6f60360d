/* BLAKE3 (hash and keyed hash), written from the BLAKE3 specification.
 *
 * Xet names every chunk, xorb and file by a keyed BLAKE3 hash, and a chunk is 8-128 KiB, so the
 * common call hashes 8..128 BLAKE3 chunks of 1 KiB in one go. The work is laid out for that:
 *   - a chunk state that absorbs 64-byte blocks (the spec's compression function, portable C);
 *   - whole 1 KiB chunks are hashed side by side (8 lanes with AVX2, 16 with AVX-512, when
 *     the CPU has them: blake3_avx2.c, blake3_avx512.c), the last one of the input included, and their chaining
 *     values pushed on the subtree stack;
 *   - merges of completed subtrees are deferred until more input shows they are not the root
 *     (the root is compressed with the ROOT flag), so the stack may hold one unmerged pair,
 *     which xet_blake3_final takes as the root's children.
 * Output longer than 32 bytes (XOF) is supported for the test vectors.
 */
#include <string.h>

#include "xet/xet.h"
#include "xet/xet_internal.h"

const uint32_t xet_blake3_iv[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                                   0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

static const uint8_t msg_schedule[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static inline uint32_t rotr32(uint32_t w, unsigned c) { return (w >> c) | (w << (32 - c)); }

static inline uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void store32(uint8_t *p, uint32_t w)
{
    p[0] = (uint8_t)w;
    p[1] = (uint8_t)(w >> 8);
    p[2] = (uint8_t)(w >> 16);
    p[3] = (uint8_t)(w >> 24);
}

#define G(a, b, c, d, x, y)                                                                        \
    do {                                                                                           \
        s[a] = s[a] + s[b] + (x);                                                                  \
        s[d] = rotr32(s[d] ^ s[a], 16);                                                            \
        s[c] = s[c] + s[d];                                                                        \
        s[b] = rotr32(s[b] ^ s[c], 12);                                                            \
        s[a] = s[a] + s[b] + (y);                                                                  \
        s[d] = rotr32(s[d] ^ s[a], 8);                                                             \
        s[c] = s[c] + s[d];                                                                        \
        s[b] = rotr32(s[b] ^ s[c], 7);                                                             \
    } while (0)

/* The compression function: 7 rounds over a 16-word state; leaves all 16 words in s. */
static void compress_state(uint32_t s[16], const uint32_t cv[8], const uint8_t block[64],
                           uint8_t block_len, uint64_t counter, uint8_t flags)
{
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = load32(block + 4 * i);
    for (int i = 0; i < 8; i++)
        s[i] = cv[i];
    s[8] = xet_blake3_iv[0];
    s[9] = xet_blake3_iv[1];
    s[10] = xet_blake3_iv[2];
    s[11] = xet_blake3_iv[3];
    s[12] = (uint32_t)counter;
    s[13] = (uint32_t)(counter >> 32);
    s[14] = block_len;
    s[15] = flags;
    for (int r = 0; r < 7; r++) {
        const uint8_t *k = msg_schedule[r];
        G(0, 4, 8, 12, m[k[0]], m[k[1]]);
        G(1, 5, 9, 13, m[k[2]], m[k[3]]);
        G(2, 6, 10, 14, m[k[4]], m[k[5]]);
        G(3, 7, 11, 15, m[k[6]], m[k[7]]);
        G(0, 5, 10, 15, m[k[8]], m[k[9]]);
        G(1, 6, 11, 12, m[k[10]], m[k[11]]);
        G(2, 7, 8, 13, m[k[12]], m[k[13]]);
        G(3, 4, 9, 14, m[k[14]], m[k[15]]);
    }
}

void xet_blake3_compress_in_place(uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                                  uint64_t counter, uint8_t flags)
{
    uint32_t s[16];
    compress_state(s, cv, block, block_len, counter, flags);
    for (int i = 0; i < 8; i++)
        cv[i] = s[i] ^ s[i + 8];
}

/* Hashes `count` whole 1 KiB chunks starting at counter, one chaining value (8 words) each;
 * with XET_BLAKE3_PARENT in flags, `count` parent blocks of 64 bytes. */
static void hash_chunks_portable(const uint8_t *input, size_t count, const uint32_t key[8],
                                 uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    if (flags & XET_BLAKE3_PARENT) {
        for (size_t c = 0; c < count; c++) {
            memcpy(cvs_out + 8 * c, key, 32);
            xet_blake3_compress_in_place(cvs_out + 8 * c, input + 64 * c, 64, 0, flags);
        }
        return;
    }
    for (size_t c = 0; c < count; c++) {
        uint32_t cv[8];
        memcpy(cv, key, sizeof cv);
        const uint8_t *chunk = input + c * XET_BLAKE3_CHUNK_LEN;
        for (int b = 0; b < 16; b++) {
            uint8_t f = flags | (b == 0 ? XET_BLAKE3_CHUNK_START : 0) |
                        (b == 15 ? XET_BLAKE3_CHUNK_END : 0);
            xet_blake3_compress_in_place(cv, chunk + 64 * b, 64, counter + c, f);
        }
        memcpy(cvs_out + 8 * c, cv, sizeof cv);
    }
}

/* The kernels, widest last; the first call picks the widest the CPU supports. */
typedef size_t (*hash_chunks_fn)(const uint8_t *, size_t, const uint32_t *, uint64_t, uint8_t,
                                 uint32_t *);

static size_t hash_chunks_portable_n(const uint8_t *input, size_t count, const uint32_t key[8],
                                     uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    hash_chunks_portable(input, count, key, counter, flags, cvs_out);
    return count;
}

static bool cpu_has(const char *kernel)
{
    if (!strcmp(kernel, "portable"))
        return true;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!strcmp(kernel, "avx2"))
        return __builtin_cpu_supports("avx2");
    if (!strcmp(kernel, "avx512vl") || !strcmp(kernel, "avx512"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512vl");
#endif
    return false;
}

static const struct {
    const char *name;
    hash_chunks_fn fn;
} kernels[] = {
    {"portable", hash_chunks_portable_n},
    {"avx2", xet_blake3_hash_chunks_avx2},
    {"avx512vl", xet_blake3_hash_chunks_avx512},
    {"avx512", xet_blake3_hash_chunks_avx512f},
};

static int kernel_index = -1; /* into kernels[]; -1 until chosen */

static int choose_kernel(void)
{
    int k = __atomic_load_n(&kernel_index, __ATOMIC_RELAXED);
    if (k >= 0)
        return k;
    for (int i = (int)(sizeof kernels / sizeof kernels[0]) - 1; i >= 0; i--)
        if (cpu_has(kernels[i].name)) {
            k = i;
            break;
        }
    __atomic_store_n(&kernel_index, k, __ATOMIC_RELAXED);
    return k;
}

static void hash_chunks(const uint8_t *input, size_t count, const uint32_t key[8],
                        uint64_t counter, uint8_t flags, uint32_t *cvs_out)
{
    int k = choose_kernel();
    size_t done = kernels[k].fn(input, count, key, counter, flags, cvs_out);
    bool parent = flags & XET_BLAKE3_PARENT;
    size_t stride = parent ? 64 : XET_BLAKE3_CHUNK_LEN, left = count - done;
    uint64_t next = parent ? 0 : counter + done;
    if (left > 0 && k > 0) {
        /* Fewer than eight left: eight lanes over a padded copy still cost about what one
         * input costs one block at a time. */
        uint8_t padded[8 * XET_BLAKE3_CHUNK_LEN];
        uint32_t cvs[8 * 8];
        memcpy(padded, input + done * stride, left * stride);
        memset(padded + left * stride, 0, (8 - left) * stride);
        if (kernels[k].fn(padded, 8, key, next, flags, cvs) == 8) {
            memcpy(cvs_out + 8 * done, cvs, left * 32);
            return;
        }
    }
    if (left > 0)
        hash_chunks_portable(input + done * stride, left, key, next, flags, cvs_out + 8 * done);
}

int xet_blake3_use_kernel(const char *kernel)
{
    if (!kernel) {
        __atomic_store_n(&kernel_index, -1, __ATOMIC_RELAXED);
        return 0;
    }
    for (int i = 0; i < (int)(sizeof kernels / sizeof kernels[0]); i++)
        if (!strcmp(kernels[i].name, kernel)) {
            if (!cpu_has(kernel))
                return -1;
            __atomic_store_n(&kernel_index, i, __ATOMIC_RELAXED);
            return 0;
        }
    return -1;
}

const char *xet_blake3_kernel(void)
{
    return kernels[choose_kernel()].name;
}

/* ---- hasher --------------------------------------------------------------------------- */

static void chunk_reset(xet_blake3_hasher *h, uint64_t counter)
{
    memcpy(h->chunk_cv, h->key, sizeof h->chunk_cv);
    h->chunk_counter = counter;
    h->block_len = 0;
    h->blocks_compressed = 0;
}

static size_t chunk_len(const xet_blake3_hasher *h)
{
    return (size_t)h->blocks_compressed * 64 + h->block_len;
}

static uint8_t chunk_start_flag(const xet_blake3_hasher *h)
{
    return h->blocks_compressed == 0 ? XET_BLAKE3_CHUNK_START : 0;
}

static void chunk_update(xet_blake3_hasher *h, const uint8_t *in, size_t len)
{
    while (len > 0) {
        if (h->block_len == 64) {
            xet_blake3_compress_in_place(h->chunk_cv, h->block, 64, h->chunk_counter,
                                         h->flags | chunk_start_flag(h));
            h->blocks_compressed++;
            h->block_len = 0;
        }
        size_t take = 64 - h->block_len;
        if (take > len)
            take = len;
        memcpy(h->block + h->block_len, in, take);
        h->block_len += (uint8_t)take;
        in += take;
        len -= take;
    }
}

void xet_blake3_init_keyed(xet_blake3_hasher *h, const uint8_t key[32])
{
    for (int i = 0; i < 8; i++)
        h->key[i] = load32(key + 4 * i);
    h->flags = XET_BLAKE3_KEYED_HASH;
    h->stack_len = 0;
    chunk_reset(h, 0);
}

void xet_blake3_init(xet_blake3_hasher *h)
{
    memcpy(h->key, xet_blake3_iv, sizeof h->key);
    h->flags = 0;
    h->stack_len = 0;
    chunk_reset(h, 0);
}

static void parent_cv(const xet_blake3_hasher *h, const uint32_t left[8], const uint32_t right[8],
                      uint32_t out[8])
{
    uint8_t block[64];
    for (int i = 0; i < 8; i++) {
        store32(block + 4 * i, left[i]);
        store32(block + 32 + 4 * i, right[i]);
    }
    memcpy(out, h->key, 32);
    xet_blake3_compress_in_place(out, block, 64, 0, h->flags | XET_BLAKE3_PARENT);
}

/* Merges completed subtrees until the stack holds one entry per set bit of total_chunks. Merges
 * are deferred until more input proves they are not the root (the root is compressed with the
 * ROOT flag, so it must be known to be the root). */
static void merge_stack(xet_blake3_hasher *h, uint64_t total_chunks)
{
    size_t keep = (size_t)__builtin_popcountll(total_chunks);
    while (h->stack_len > keep) {
        h->stack_len--;
        parent_cv(h, h->stack[h->stack_len - 1], h->stack[h->stack_len], h->stack[h->stack_len - 1]);
    }
}

/* Pushes the chaining value of chunk number `counter`, after merging what the chunks before it
 * completed. */
static void push_cv(xet_blake3_hasher *h, const uint32_t cv[8], uint64_t counter)
{
    merge_stack(h, counter);
    memcpy(h->stack[h->stack_len], cv, 32);
    h->stack_len++;
}

void xet_blake3_update(xet_blake3_hasher *h, const void *data, size_t len)
{
    const uint8_t *in = data;
    if (chunk_len(h) > 0) {
        size_t take = XET_BLAKE3_CHUNK_LEN - chunk_len(h);
        if (take > len)
            take = len;
        chunk_update(h, in, take);
        in += take;
        len -= take;
        if (len == 0)
            return; /* a full chunk stays open: it may be the root */
        xet_blake3_compress_in_place(h->chunk_cv, h->block, 64, h->chunk_counter,
                                     h->flags | chunk_start_flag(h) | XET_BLAKE3_CHUNK_END);
        uint32_t cv[8];
        memcpy(cv, h->chunk_cv, sizeof cv);
        push_cv(h, cv, h->chunk_counter);
        chunk_reset(h, h->chunk_counter + 1);
    }
    /* Whole chunks, hashed side by side. A lone first chunk is left to the chunk state, since
     * it may turn out to be the root; otherwise even a final whole chunk can go to the stack
     * and xet_blake3_final starts from there. */
    while (len > XET_BLAKE3_CHUNK_LEN || (len == XET_BLAKE3_CHUNK_LEN && h->chunk_counter > 0)) {
        enum { BATCH = 32 };
        uint32_t cvs[BATCH * 8];
        size_t n = len / XET_BLAKE3_CHUNK_LEN;
        if (n > BATCH)
            n = BATCH;
        hash_chunks(in, n, h->key, h->chunk_counter, h->flags, cvs);
        for (size_t i = 0; i < n; i++)
            push_cv(h, cvs + 8 * i, h->chunk_counter + i);
        chunk_reset(h, h->chunk_counter + n);
        in += n * XET_BLAKE3_CHUNK_LEN;
        len -= n * XET_BLAKE3_CHUNK_LEN;
    }
    if (len > 0) {
        chunk_update(h, in, len);
        merge_stack(h, h->chunk_counter);
    }
}

void xet_blake3_final(const xet_blake3_hasher *h, uint8_t *out, size_t out_len)
{
    /* The node that becomes the root: the current chunk's last block, or a parent. */
    uint32_t cv[8];
    uint8_t block[64];
    uint8_t block_len, flags;
    uint64_t counter;
    size_t below; /* stack entries still to fold in as left children */

    if (chunk_len(h) > 0 || h->stack_len == 0) {
        memcpy(cv, h->chunk_cv, sizeof cv);
        memset(block, 0, sizeof block);
        memcpy(block, h->block, h->block_len);
        block_len = h->block_len;
        flags = h->flags | chunk_start_flag(h) | XET_BLAKE3_CHUNK_END;
        counter = h->chunk_counter;
        below = h->stack_len;
    } else {
        /* The input ended on a chunk boundary: the top two stack entries are the last node. */
        for (int w = 0; w < 8; w++) {
            store32(block + 4 * w, h->stack[h->stack_len - 2][w]);
            store32(block + 32 + 4 * w, h->stack[h->stack_len - 1][w]);
        }
        memcpy(cv, h->key, sizeof cv);
        block_len = 64;
        flags = h->flags | XET_BLAKE3_PARENT;
        counter = 0;
        below = h->stack_len - 2;
    }

    for (size_t i = below; i > 0; i--) {
        /* Close the pending node into a chaining value and make it the right child. */
        uint32_t right[8];
        memcpy(right, cv, sizeof right);
        xet_blake3_compress_in_place(right, block, block_len, counter, flags);
        for (int w = 0; w < 8; w++) {
            store32(block + 4 * w, h->stack[i - 1][w]);
            store32(block + 32 + 4 * w, right[w]);
        }
        memcpy(cv, h->key, sizeof cv);
        block_len = 64;
        counter = 0;
        flags = h->flags | XET_BLAKE3_PARENT;
    }

    /* Root output: counter counts 64-byte output blocks. */
    uint64_t out_block = 0;
    while (out_len > 0) {
        uint32_t s[16];
        compress_state(s, cv, block, block_len, out_block, flags | XET_BLAKE3_ROOT);
        uint8_t word_bytes[64];
        for (int i = 0; i < 8; i++) {
            store32(word_bytes + 4 * i, s[i] ^ s[i + 8]);
            store32(word_bytes + 32 + 4 * i, s[i + 8] ^ cv[i]);
        }
        size_t take = out_len < 64 ? out_len : 64;
        memcpy(out, word_bytes, take);
        out += take;
        out_len -= take;
        out_block++;
    }
}

/* One-shot hashing of 2..ONESHOT_MAX chunks (every Xet chunk): the leaves side by side, then
 * the tree a level at a time with the parents of a level side by side too. BLAKE3's tree
 * (left subtrees complete) is exactly this: pair neighbours, carry an odd last node up. */
enum { ONESHOT_MAX = 256 };

static bool hash_oneshot(const uint32_t key[8], uint8_t flags, const uint8_t *in, size_t len,
                         uint8_t out[32])
{
    size_t n = (len + XET_BLAKE3_CHUNK_LEN - 1) / XET_BLAKE3_CHUNK_LEN;
    if (n < 2 || n > ONESHOT_MAX)
        return false;
    uint32_t cvs[ONESHOT_MAX * 8];
    size_t full = len / XET_BLAKE3_CHUNK_LEN;
    hash_chunks(in, full, key, 0, flags, cvs);
    if (full < n) {
        /* the last, partial chunk through the chunk state */
        xet_blake3_hasher h;
        memcpy(h.key, key, sizeof h.key);
        h.flags = flags;
        chunk_reset(&h, full);
        chunk_update(&h, in + full * XET_BLAKE3_CHUNK_LEN, len - full * XET_BLAKE3_CHUNK_LEN);
        uint8_t block[64] = {0};
        memcpy(block, h.block, h.block_len);
        xet_blake3_compress_in_place(h.chunk_cv, block, h.block_len, full,
                                     flags | chunk_start_flag(&h) | XET_BLAKE3_CHUNK_END);
        memcpy(cvs + 8 * full, h.chunk_cv, 32);
    }
    uint8_t blocks[ONESHOT_MAX / 2 * 64];
    while (n > 2) {
        size_t pairs = n / 2;
        for (size_t i = 0; i < pairs; i++)
            for (int w = 0; w < 16; w++)
                store32(blocks + 64 * i + 4 * w, cvs[16 * i + w]);
        hash_chunks(blocks, pairs, key, 0, flags | XET_BLAKE3_PARENT, cvs);
        if (n & 1)
            memmove(cvs + 8 * pairs, cvs + 8 * (n - 1), 32);
        n = pairs + (n & 1);
    }
    uint8_t block[64];
    for (int w = 0; w < 16; w++)
        store32(block + 4 * w, cvs[w]);
    uint32_t s[16];
    compress_state(s, key, block, 64, 0, flags | XET_BLAKE3_PARENT | XET_BLAKE3_ROOT);
    for (int i = 0; i < 8; i++)
        store32(out + 4 * i, s[i] ^ s[i + 8]);
    return true;
}

void xet_blake3(const void *data, size_t len, uint8_t out[32])
{
    if (hash_oneshot(xet_blake3_iv, 0, data, len, out))
        return;
    xet_blake3_hasher h;
    xet_blake3_init(&h);
    xet_blake3_update(&h, data, len);
    xet_blake3_final(&h, out, 32);
}

void xet_blake3_keyed(const uint8_t key[32], const void *data, size_t len, uint8_t out[32])
{
    uint32_t words[8];
    for (int i = 0; i < 8; i++)
        words[i] = load32(key + 4 * i);
    if (hash_oneshot(words, XET_BLAKE3_KEYED_HASH, data, len, out))
        return;
    xet_blake3_hasher h;
    xet_blake3_init_keyed(&h, key);
    xet_blake3_update(&h, data, len);
    xet_blake3_final(&h, out, 32);
}
