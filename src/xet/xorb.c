/* Xorbs: a sequence of chunks, each an 8-byte header and a payload.
 *
 * Header: version u8 (0), compressed_len u24 LE, compression u8, uncompressed_len u24 LE.
 * Payload: the chunk raw (0), an LZ4 frame (1), or an LZ4 frame of the chunk with its bytes
 * grouped by position mod 4 (2, "BG4": all bytes 0,4,8.. then 1,5,9.. and so on; when the
 * length is not a multiple of 4 the first groups are one longer). BG4 helps 16/32-bit weights
 * whose high bytes repeat. A client may append the xorb object footer ("XETBLOB" ident; today
 * they upload without it): parsing stops at that ident.
 *
 * The encoder keeps compression only when it saves at least 5%, so random-looking data is
 * stored raw and can be served straight from disk.
 */
#include <lz4frame.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xet/xet.h"

static const char footer_ident[7] = {'X', 'E', 'T', 'B', 'L', 'O', 'B'};
#define XORB_MAX_SERIALIZED (XET_XORB_MAX_BYTES + 1024u * 1024) /* + headers and footer */

/* ---- chunk headers ------------------------------------------------------------------------ */

void xet_chunk_header_encode(const xet_chunk_header *h, uint8_t out[XET_CHUNK_HEADER_LEN])
{
    out[0] = h->version;
    out[1] = (uint8_t)h->compressed_len;
    out[2] = (uint8_t)(h->compressed_len >> 8);
    out[3] = (uint8_t)(h->compressed_len >> 16);
    out[4] = h->compression;
    out[5] = (uint8_t)h->uncompressed_len;
    out[6] = (uint8_t)(h->uncompressed_len >> 8);
    out[7] = (uint8_t)(h->uncompressed_len >> 16);
}

int xet_chunk_header_decode(const uint8_t in[XET_CHUNK_HEADER_LEN], xet_chunk_header *out, err *e)
{
    xet_chunk_header h = {
        .version = in[0],
        .compressed_len = (uint32_t)in[1] | (uint32_t)in[2] << 8 | (uint32_t)in[3] << 16,
        .compression = in[4],
        .uncompressed_len = (uint32_t)in[5] | (uint32_t)in[6] << 8 | (uint32_t)in[7] << 16,
    };
    if (h.version != 0)
        return err_set(e, 400, "BadXorb", "chunk header version %u is not 0", h.version);
    if (h.compression > XET_COMPRESSION_BG4_LZ4)
        return err_set(e, 400, "BadXorb", "unknown chunk compression %u", h.compression);
    if (h.uncompressed_len == 0 || h.uncompressed_len > XET_CHUNK_MAX)
        return err_set(e, 400, "BadXorb", "chunk length %u outside 1..%u", h.uncompressed_len,
                       XET_CHUNK_MAX);
    if (h.compressed_len == 0 || h.compressed_len > XET_CHUNK_MAX_COMPRESSED)
        return err_set(e, 400, "BadXorb", "chunk payload length %u outside 1..%u",
                       h.compressed_len, XET_CHUNK_MAX_COMPRESSED);
    if (h.compression == XET_COMPRESSION_NONE && h.compressed_len != h.uncompressed_len)
        return err_set(e, 400, "BadXorb", "uncompressed chunk with payload %u != length %u",
                       h.compressed_len, h.uncompressed_len);
    *out = h;
    return 0;
}

/* ---- byte grouping ---------------------------------------------------------------------- */

/* Group g holds bytes g, g+4, g+8, ...; it has len/4 bytes plus one when g < len % 4. */
static void bg4_split(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t q = len / 4, r = len % 4;
    uint8_t *g[4];
    g[0] = out;
    g[1] = g[0] + q + (r > 0);
    g[2] = g[1] + q + (r > 1);
    g[3] = g[2] + q + (r > 2);
    for (size_t i = 0; i < q; i++) {
        g[0][i] = in[4 * i];
        g[1][i] = in[4 * i + 1];
        g[2][i] = in[4 * i + 2];
        g[3][i] = in[4 * i + 3];
    }
    for (size_t k = 0; k < r; k++)
        g[k][q] = in[4 * q + k];
}

static void bg4_join(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t q = len / 4, r = len % 4;
    const uint8_t *g[4];
    g[0] = in;
    g[1] = g[0] + q + (r > 0);
    g[2] = g[1] + q + (r > 1);
    g[3] = g[2] + q + (r > 2);
    for (size_t i = 0; i < q; i++) {
        out[4 * i] = g[0][i];
        out[4 * i + 1] = g[1][i];
        out[4 * i + 2] = g[2][i];
        out[4 * i + 3] = g[3][i];
    }
    for (size_t k = 0; k < r; k++)
        out[4 * q + k] = g[k][q];
}

/* Predicts whether byte grouping pays: it does when the four byte lanes look different (for
 * bf16 weights the sign/exponent bytes are far more regular than the mantissa bytes). Measures
 * each lane's distribution of per-byte popcounts and its KL divergence from the pooled one;
 * xet-core's predictor uses the same statistic and threshold (0.02). */
static bool bg4_recommended(const uint8_t *data, size_t len)
{
    uint32_t hist[4][9] = {{0}};
    for (size_t i = 0; i < len; i++)
        hist[i & 3][__builtin_popcount(data[i])]++;
    double pooled[9], total = 0;
    for (int j = 0; j < 9; j++) {
        pooled[j] = 1; /* never zero */
        for (int l = 0; l < 4; l++)
            pooled[j] += hist[l][j];
        total += pooled[j];
    }
    double max_kl = 0;
    for (int l = 0; l < 4; l++) {
        double lane_total = 0, kl = 0;
        for (int j = 0; j < 9; j++)
            lane_total += hist[l][j];
        if (lane_total == 0)
            continue;
        for (int j = 0; j < 9; j++) {
            if (hist[l][j] == 0)
                continue;
            double p = hist[l][j] / lane_total, q = pooled[j] / total;
            kl += p * log(p / q);
        }
        if (kl > max_kl)
            max_kl = kl;
    }
    return max_kl > 0.02;
}

/* ---- encode ------------------------------------------------------------------------------- */

static size_t lz4_frame(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.blockSizeID = LZ4F_max64KB;
    prefs.frameInfo.blockMode = LZ4F_blockIndependent;
    size_t n = LZ4F_compressFrame(out, cap, in, len, &prefs);
    return LZ4F_isError(n) ? 0 : n;
}

long xet_xorb_append_chunk(buf *out, const void *data, size_t len, xet_compression scheme,
                           xet_compression *used, err *e)
{
    if (len == 0 || len > XET_CHUNK_MAX)
        return err_set(e, 400, "BadXorb", "chunk length %zu outside 1..%u", len, XET_CHUNK_MAX);
    if (scheme == XET_COMPRESSION_AUTO)
        scheme = bg4_recommended(data, len) ? XET_COMPRESSION_BG4_LZ4 : XET_COMPRESSION_LZ4;

    size_t payload = len;
    uint8_t *grouped = NULL;
    if (scheme == XET_COMPRESSION_LZ4 || scheme == XET_COMPRESSION_BG4_LZ4) {
        LZ4F_preferences_t prefs;
        memset(&prefs, 0, sizeof prefs);
        prefs.frameInfo.blockSizeID = LZ4F_max64KB;
        size_t bound = LZ4F_compressFrameBound(len, &prefs);
        buf_reserve(out, XET_CHUNK_HEADER_LEN + (bound > len ? bound : len));
        const uint8_t *src = data;
        if (scheme == XET_COMPRESSION_BG4_LZ4) {
            grouped = malloc(len);
            if (!grouped)
                return err_set(e, 500, "", "out of memory");
            bg4_split(data, len, grouped);
            src = grouped;
        }
        size_t n = lz4_frame(src, len, (uint8_t *)out->data + out->len + XET_CHUNK_HEADER_LEN, bound);
        free(grouped);
        /* Keep compression only when it saves at least 5%. */
        if (n > 0 && (uint64_t)n * 20 <= (uint64_t)len * 19)
            payload = n;
        else
            scheme = XET_COMPRESSION_NONE;
    } else {
        scheme = XET_COMPRESSION_NONE;
        buf_reserve(out, XET_CHUNK_HEADER_LEN + len);
    }
    uint8_t *dst = (uint8_t *)out->data + out->len;
    if (scheme == XET_COMPRESSION_NONE)
        memcpy(dst + XET_CHUNK_HEADER_LEN, data, len);
    xet_chunk_header h = {0, (uint32_t)payload, (uint8_t)scheme, (uint32_t)len};
    xet_chunk_header_encode(&h, dst);
    out->len += XET_CHUNK_HEADER_LEN + payload;
    out->data[out->len] = '\0';
    if (used)
        *used = scheme;
    return (long)(XET_CHUNK_HEADER_LEN + payload);
}

/* ---- decode ------------------------------------------------------------------------------- */

/* Decodes a whole LZ4 frame (or several back to back) of exactly `len` input bytes into
 * exactly `out_len` bytes. */
static int lz4_unframe(LZ4F_dctx *dctx, const uint8_t *in, size_t len, uint8_t *out,
                       size_t out_len, err *e)
{
    size_t in_pos = 0, out_pos = 0;
    size_t hint = 1;
    LZ4F_resetDecompressionContext(dctx);
    while (in_pos < len) {
        size_t src_size = len - in_pos, dst_size = out_len - out_pos;
        hint = LZ4F_decompress(dctx, out + out_pos, &dst_size, in + in_pos, &src_size, NULL);
        if (LZ4F_isError(hint))
            return err_set(e, 400, "BadXorb", "corrupt LZ4 payload: %s", LZ4F_getErrorName(hint));
        in_pos += src_size;
        out_pos += dst_size;
        if (src_size == 0 && dst_size == 0 && hint != 0)
            /* No progress: the output is full but the frame wants to go on. */
            return err_set(e, 400, "BadXorb", "LZ4 payload longer than the chunk");
    }
    if (hint != 0)
        return err_set(e, 400, "BadXorb", "truncated LZ4 payload");
    if (out_pos != out_len)
        return err_set(e, 400, "BadXorb", "LZ4 payload gives %zu bytes, header says %zu",
                       out_pos, out_len);
    return 0;
}

static int chunk_decode(LZ4F_dctx *dctx, const xet_chunk_header *h, const uint8_t *payload,
                        uint8_t *out, uint8_t *scratch, err *e)
{
    switch (h->compression) {
    case XET_COMPRESSION_NONE:
        memcpy(out, payload, h->uncompressed_len);
        return 0;
    case XET_COMPRESSION_LZ4:
        return lz4_unframe(dctx, payload, h->compressed_len, out, h->uncompressed_len, e);
    case XET_COMPRESSION_BG4_LZ4:
        if (lz4_unframe(dctx, payload, h->compressed_len, scratch, h->uncompressed_len, e) < 0)
            return -1;
        bg4_join(scratch, h->uncompressed_len, out);
        return 0;
    default:
        return err_set(e, 400, "BadXorb", "unknown chunk compression %u", h->compression);
    }
}

int xet_chunk_decode(const xet_chunk_header *h, const uint8_t *payload, uint8_t *out, err *e)
{
    if (h->compression == XET_COMPRESSION_NONE)
        return chunk_decode(NULL, h, payload, out, NULL, e);
    LZ4F_dctx *dctx = NULL;
    uint8_t *scratch = NULL;
    int rc = -1;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)) ||
        (h->compression == XET_COMPRESSION_BG4_LZ4 && !(scratch = malloc(h->uncompressed_len)))) {
        err_set(e, 500, "", "out of memory");
        goto done;
    }
    rc = chunk_decode(dctx, h, payload, out, scratch, e);
done:
    free(scratch);
    LZ4F_freeDecompressionContext(dctx);
    return rc;
}

/* ---- parse -------------------------------------------------------------------------------- */

int xet_xorb_parse(const uint8_t *data, size_t len, xet_xorb *out, err *e)
{
    memset(out, 0, sizeof *out);
    if (len == 0)
        return err_set(e, 400, "BadXorb", "empty xorb");
    if (len > XORB_MAX_SERIALIZED)
        return err_set(e, 400, "BadXorb", "xorb of %zu bytes exceeds the limit", len);

    LZ4F_dctx *dctx = NULL;
    uint8_t *chunk = malloc(XET_CHUNK_MAX), *scratch = malloc(XET_CHUNK_MAX);
    xet_chunk *refs = NULL;
    size_t cap = 0;
    if (!chunk || !scratch || LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
        err_set(e, 500, "", "out of memory");
        goto fail;
    }

    size_t pos = 0;
    while (pos < len) {
        if (len - pos >= sizeof footer_ident && memcmp(data + pos, footer_ident, sizeof footer_ident) == 0) {
            out->has_footer = true;
            break;
        }
        if (out->n_chunks == XET_XORB_MAX_CHUNKS) {
            err_set(e, 400, "BadXorb", "more than %u chunks", XET_XORB_MAX_CHUNKS);
            goto fail;
        }
        if (len - pos < XET_CHUNK_HEADER_LEN) {
            err_set(e, 400, "BadXorb", "truncated chunk header at offset %zu", pos);
            goto fail;
        }
        xet_chunk_header h;
        if (xet_chunk_header_decode(data + pos, &h, e) < 0) {
            char msg[sizeof e->message];
            snprintf(msg, sizeof msg, "%s", e ? e->message : "");
            err_set(e, 400, "BadXorb", "chunk %zu at offset %zu: %s", out->n_chunks, pos, msg);
            goto fail;
        }
        if (len - pos - XET_CHUNK_HEADER_LEN < h.compressed_len) {
            err_set(e, 400, "BadXorb", "chunk %zu truncated", out->n_chunks);
            goto fail;
        }
        if (out->unpacked_len + h.uncompressed_len > XET_XORB_MAX_BYTES) {
            err_set(e, 400, "BadXorb", "xorb holds more than %u bytes", XET_XORB_MAX_BYTES);
            goto fail;
        }
        if (chunk_decode(dctx, &h, data + pos + XET_CHUNK_HEADER_LEN, chunk, scratch, e) < 0) {
            char msg[sizeof e->message];
            snprintf(msg, sizeof msg, "%s", e ? e->message : "");
            err_set(e, 400, "BadXorb", "chunk %zu: %s", out->n_chunks, msg);
            goto fail;
        }
        if (out->n_chunks == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            xet_xorb_chunk *c = realloc(out->chunks, ncap * sizeof *c);
            xet_chunk *r = realloc(refs, ncap * sizeof *r);
            if (c)
                out->chunks = c;
            if (r)
                refs = r;
            if (!c || !r) {
                err_set(e, 500, "", "out of memory");
                goto fail;
            }
            cap = ncap;
        }
        xet_xorb_chunk *xc = &out->chunks[out->n_chunks];
        xet_chunk_hash(chunk, h.uncompressed_len, &xc->hash);
        xc->offset = (uint32_t)pos;
        xc->serialized_len = XET_CHUNK_HEADER_LEN + h.compressed_len;
        xc->unpacked_offset = (uint32_t)out->unpacked_len;
        xc->uncompressed_len = h.uncompressed_len;
        xc->compression = h.compression;
        refs[out->n_chunks].hash = xc->hash;
        refs[out->n_chunks].length = h.uncompressed_len;
        out->n_chunks++;
        out->unpacked_len += h.uncompressed_len;
        pos += XET_CHUNK_HEADER_LEN + h.compressed_len;
    }
    if (out->n_chunks == 0) {
        err_set(e, 400, "BadXorb", "xorb has no chunks");
        goto fail;
    }
    out->chunks_len = (uint32_t)pos;
    if (xet_xorb_hash(refs, out->n_chunks, &out->hash) < 0) {
        err_set(e, 500, "", "out of memory");
        goto fail;
    }
    free(refs);
    free(chunk);
    free(scratch);
    LZ4F_freeDecompressionContext(dctx);
    return 0;

fail:
    free(refs);
    free(chunk);
    free(scratch);
    LZ4F_freeDecompressionContext(dctx);
    xet_xorb_free(out);
    return -1;
}

void xet_xorb_free(xet_xorb *x)
{
    free(x->chunks);
    memset(x, 0, sizeof *x);
}
