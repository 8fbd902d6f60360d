/* Xet hashes: keys, the string form, chunk / merkle / file / verification hashes.
 *
 * The merkle tree is xet-core's "aggregated hashes": a list of (hash, length) nodes is cut
 * into groups left to right; a group ends at the first node at index >= 2 within it whose hash
 * has u64_le(hash[24..32]) % 4 == 0, at 9 nodes, or at the end of the list (a list of <= 2
 * nodes is one group). Each group becomes one parent hashed over the text
 * "<child hash string> : <child length>\n" per child, with the internal-node key. Repeat until
 * one node remains. Groups are content-defined, so an edit only disturbs nearby parents.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xet/xet.h"

const uint8_t xet_data_key[32] = {102, 151, 245, 119, 91,  149, 80,  222, 49,  53,  203,
                                  172, 165, 151, 24,  28,  157, 228, 33,  16,  155, 235,
                                  43,  88,  180, 208, 176, 75,  147, 173, 242, 41};
const uint8_t xet_internal_node_key[32] = {1,   126, 197, 199, 165, 71,  41,  150, 253, 148, 102,
                                           102, 180, 138, 2,   230, 93,  221, 83,  111, 55,  199,
                                           109, 210, 248, 99,  82,  230, 74,  83,  113, 63};
const uint8_t xet_verification_key[32] = {127, 24,  87,  214, 206, 86,  237, 102, 18,  127, 249,
                                          19,  231, 165, 195, 243, 164, 205, 38,  213, 181, 219,
                                          73,  230, 65,  36,  152, 127, 40,  251, 148, 195};

static const uint8_t zero_key[32];

#define MERKLE_MAX_GROUP 9
#define MERKLE_MIN_CUT_INDEX 2
#define MERKLE_BRANCHING 4
#define GLOBAL_DEDUP_MODULUS 1024

/* ---- string form ------------------------------------------------------------------------ */

void xet_hash_to_string(const xet_hash *h, char out[XET_HASH_STRING_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    /* Each 8-byte group is a little-endian u64 printed most significant digit first, i.e.
     * the group's bytes in reverse order. */
    for (int g = 0; g < 4; g++)
        for (int k = 0; k < 8; k++) {
            uint8_t b = h->bytes[8 * g + 7 - k];
            out[16 * g + 2 * k] = digits[b >> 4];
            out[16 * g + 2 * k + 1] = digits[b & 15];
        }
    out[XET_HASH_STRING_LEN] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int xet_hash_from_string(const char *s, size_t len, xet_hash *out)
{
    if (!s || len != XET_HASH_STRING_LEN)
        return -1;
    xet_hash h;
    for (int g = 0; g < 4; g++)
        for (int k = 0; k < 8; k++) {
            int hi = hex_value(s[16 * g + 2 * k]), lo = hex_value(s[16 * g + 2 * k + 1]);
            if (hi < 0 || lo < 0)
                return -1;
            h.bytes[8 * g + 7 - k] = (uint8_t)(hi << 4 | lo);
        }
    *out = h;
    return 0;
}

bool xet_hash_equal(const xet_hash *a, const xet_hash *b)
{
    return memcmp(a->bytes, b->bytes, XET_HASH_LEN) == 0;
}

uint64_t xet_hash_last_u64(const xet_hash *h)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | h->bytes[24 + k];
    return v;
}

bool xet_hash_is_global_dedup_eligible(const xet_hash *h)
{
    return xet_hash_last_u64(h) % GLOBAL_DEDUP_MODULUS == 0;
}

/* ---- hashes ------------------------------------------------------------------------------ */

void xet_chunk_hash(const void *data, size_t len, xet_hash *out)
{
    xet_blake3_keyed(xet_data_key, data, len, out->bytes);
}

/* Length of the group starting at nodes[0] of n remaining nodes. */
static size_t merkle_group_len(const xet_chunk *nodes, size_t n)
{
    if (n <= 2)
        return n;
    size_t end = n < MERKLE_MAX_GROUP ? n : MERKLE_MAX_GROUP;
    for (size_t i = MERKLE_MIN_CUT_INDEX; i < end; i++)
        if (xet_hash_last_u64(&nodes[i].hash) % MERKLE_BRANCHING == 0)
            return i + 1;
    return end;
}

static void merkle_parent(const xet_chunk *children, size_t n, xet_chunk *out)
{
    /* "<64 hex> : <up to 20 digits>\n" per child. */
    char text[MERKLE_MAX_GROUP * 88];
    size_t pos = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        xet_hash_to_string(&children[i].hash, text + pos);
        pos += XET_HASH_STRING_LEN;
        pos += (size_t)snprintf(text + pos, sizeof text - pos, " : %llu\n",
                                (unsigned long long)children[i].length);
        total += children[i].length;
    }
    xet_blake3_keyed(xet_internal_node_key, text, pos, out->hash.bytes);
    out->length = total;
}

/* The aggregated (merkle) root over chunks: the xorb hash, and what the file hash is keyed over. */
static int merkle_root(const xet_chunk *chunks, size_t n, xet_hash *out)
{
    if (n == 0) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    if (n == 1) {
        *out = chunks[0].hash;
        return 0;
    }
    /* Each level has at most half the nodes of the one below (groups have >= 2 nodes). */
    xet_chunk *level = malloc(((n + 1) / 2) * sizeof *level);
    if (!level)
        return -1;
    const xet_chunk *src = chunks;
    size_t count = n;
    while (count > 1) {
        size_t parents = 0;
        for (size_t i = 0; i < count;) {
            size_t g = merkle_group_len(src + i, count - i);
            xet_chunk parent;
            merkle_parent(src + i, g, &parent);
            level[parents++] = parent; /* parents <= i: never overwrites unread nodes */
            i += g;
        }
        src = level;
        count = parents;
    }
    *out = level[0].hash;
    free(level);
    return 0;
}

int xet_xorb_hash(const xet_chunk *chunks, size_t n, xet_hash *out)
{
    return merkle_root(chunks, n, out);
}

int xet_file_hash(const xet_chunk *chunks, size_t n, xet_hash *out)
{
    if (n == 0) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    xet_hash root;
    if (merkle_root(chunks, n, &root) < 0)
        return -1;
    xet_blake3_keyed(zero_key, root.bytes, XET_HASH_LEN, out->bytes);
    return 0;
}

void xet_verification_hash(const xet_hash *chunk_hashes, size_t n, xet_hash *out)
{
    xet_blake3_hasher h;
    xet_blake3_init_keyed(&h, xet_verification_key);
    xet_blake3_update(&h, chunk_hashes, n * sizeof *chunk_hashes);
    xet_blake3_final(&h, out->bytes, XET_HASH_LEN);
}

void xet_hash_hmac(const xet_hash *h, const uint8_t key[32], xet_hash *out)
{
    xet_hash in = *h; /* out may be h */
    xet_blake3_keyed(key, in.bytes, XET_HASH_LEN, out->bytes);
}
