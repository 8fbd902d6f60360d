/* hash — digests and randomness through OpenSSL's libcrypto. */
#include "base/base.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hash_ctx {
    EVP_MD_CTX *md;
};

static hash_ctx *hash_new(const EVP_MD *type)
{
    hash_ctx *h = malloc(sizeof *h);
    if (!h)
        abort();
    h->md = EVP_MD_CTX_new();
    if (!h->md || EVP_DigestInit_ex(h->md, type, NULL) != 1)
        abort();
    return h;
}

hash_ctx *hash_sha256_new(void) { return hash_new(EVP_sha256()); }
hash_ctx *hash_sha1_new(void) { return hash_new(EVP_sha1()); }

hash_ctx *hash_copy(const hash_ctx *h)
{
    hash_ctx *c = malloc(sizeof *c);
    if (!c)
        abort();
    c->md = EVP_MD_CTX_new();
    if (!c->md || EVP_MD_CTX_copy_ex(c->md, h->md) != 1)
        abort();
    return c;
}

void hash_update(hash_ctx *h, const void *data, size_t len) { EVP_DigestUpdate(h->md, data, len); }

void hash_final_hex(hash_ctx *h, char *hex_out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->md, md, &n);
    hex_encode(md, n, hex_out);
    hash_free(h);
}

void hash_free(hash_ctx *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->md);
    free(h);
}

void hash_sha256_hex(const void *data, size_t len, char out[65])
{
    hash_ctx *h = hash_sha256_new();
    hash_update(h, data, len);
    hash_final_hex(h, out);
}

void hash_git_blob_hex(const void *data, size_t len, char out[41])
{
    char header[64];
    int n = snprintf(header, sizeof header, "blob %zu", len);
    hash_ctx *h = hash_sha1_new();
    hash_update(h, header, (size_t)n + 1);
    hash_update(h, data, len);
    hash_final_hex(h, out);
}

void hash_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                      uint8_t out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, out, &n);
}

bool hash_equal_ct(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n && i < m; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

void hash_random(void *out, size_t n)
{
    if (RAND_bytes(out, (int)n) != 1) {
        fputs("hearth: no system randomness\n", stderr);
        abort();
    }
}
