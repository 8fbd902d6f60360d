/* xet — the Xet storage format, pure and I/O-free.
 *
 * Hugging Face's Xet storage cuts files into content-defined chunks, names everything by keyed
 * BLAKE3 hashes, packs chunks into "xorbs" and describes files and xorbs in "shards". This
 * module is the byte-exact format, shared by the dedup store and the Xet CAS protocol:
 *   blake3    BLAKE3 hash and keyed hash (our own; AVX2 / AVX-512 lanes when the CPU has them)
 *   chunker   gearhash content-defined chunking (8 / 64 / 128 KiB), streaming
 *   hashes    chunk, merkle (xorb), file and term-verification hashes; the hash string form
 *   xorb      chunk headers, LZ4-frame / byte-grouped LZ4 compression, xorb parse and build
 *   shard     the shard format (file-info and CAS-info sections, optional footer), and the
 *             check of a shard's files against their xorbs
 * The dev commands over it, `hearth xet chunks|xorb|shard`, are src/cli/xet.c.
 * Reference: ../shared/spec/hub-api.md section 9, checked against xet-core; docs/xet-format.md
 * lists where the two differ.
 *
 * Nothing here touches files or sockets, nothing prints, and there is no global state beyond a
 * once-chosen BLAKE3 implementation. Ownership: structs filled by *_parse own their arrays and
 * are released by the matching *_free; appenders write to a caller's buf.
 */
#ifndef HEARTH_XET_H
#define HEARTH_XET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

/* ---- hashes and their string form ------------------------------------------------------ */

#define XET_HASH_LEN 32
#define XET_HASH_STRING_LEN 64 /* plus a NUL */

typedef struct xet_hash {
    uint8_t bytes[XET_HASH_LEN];
} xet_hash;

extern const uint8_t xet_data_key[32];          /* chunk hashes */
extern const uint8_t xet_internal_node_key[32]; /* merkle tree nodes */
extern const uint8_t xet_verification_key[32];  /* shard term verification */

/* The Xet string form: four little-endian u64 groups, each as 16 lowercase hex digits.
 * out holds XET_HASH_STRING_LEN + 1 bytes. */
void xet_hash_to_string(const xet_hash *h, char out[XET_HASH_STRING_LEN + 1]);
/* Parses exactly 64 hex digits (either case). Returns 0, or -1 when s is not a hash string. */
int xet_hash_from_string(const char *s, size_t len, xet_hash *out);
bool xet_hash_equal(const xet_hash *a, const xet_hash *b);
/* u64_le(hash[24..32]): the value Xet takes remainders of (merkle cuts, global dedup). */
uint64_t xet_hash_last_u64(const xet_hash *h);
/* True when a chunk hash is one the CAS indexes for global dedup (last u64 % 1024 == 0). */
bool xet_hash_is_global_dedup_eligible(const xet_hash *h);

/* ---- BLAKE3 ------------------------------------------------------------------------------ */

/* A streaming hasher; plain struct, no heap. Copy it to fork a hash state. */
typedef struct xet_blake3_hasher {
    uint32_t key[8];
    uint32_t chunk_cv[8];
    uint64_t chunk_counter;
    uint8_t block[64];
    uint8_t block_len;
    uint8_t blocks_compressed;
    uint8_t flags;
    uint8_t stack_len;
    uint32_t stack[54][8];
} xet_blake3_hasher;

void xet_blake3_init(xet_blake3_hasher *h);
void xet_blake3_init_keyed(xet_blake3_hasher *h, const uint8_t key[32]);
void xet_blake3_update(xet_blake3_hasher *h, const void *data, size_t len);
/* Writes out_len bytes of output (any length: BLAKE3 is an XOF); h is left unchanged. */
void xet_blake3_final(const xet_blake3_hasher *h, uint8_t *out, size_t out_len);
void xet_blake3(const void *data, size_t len, uint8_t out[32]);
void xet_blake3_keyed(const uint8_t key[32], const void *data, size_t len, uint8_t out[32]);
/* Tests and benchmarks: forces the kernel that hashes whole 1 KiB chunks side by side:
 * "portable", "avx2" (8 lanes), "avx512vl" (8 lanes) or "avx512" (16 lanes); NULL goes back to
 * the widest the CPU has. Returns -1 (and changes nothing) when the CPU lacks it. Not for use
 * while other threads hash. */
int xet_blake3_use_kernel(const char *kernel);
const char *xet_blake3_kernel(void);

/* ---- chunker ------------------------------------------------------------------------------ */

#define XET_CHUNK_TARGET (64 * 1024)
#define XET_CHUNK_MIN (8 * 1024)
#define XET_CHUNK_MAX (128 * 1024)

/* Which boundary rule. Both start the rolling hash 8 KiB - 65 bytes into a chunk.
 *   XET_CHUNKER_HF_XET  a hash match only ends a chunk once it is >= 8 KiB long (xet-core since
 *                       Sept 2025, i.e. hf_xet >= 1.1.10: what Python clients upload with).
 *   XET_CHUNKER_LEGACY  a match in the first 64 hashed bytes ends a chunk of 8128..8191 bytes
 *                       (older hf_xet, and @huggingface/xetchunk-wasm 0.2.0 / the npm client).
 * They differ wherever such an early match occurs: ~8% of legacy chunks on random data; the
 * next ordinary boundary brings them back in step. */
typedef enum { XET_CHUNKER_HF_XET = 0, XET_CHUNKER_LEGACY = 1 } xet_chunker_rule;

/* Boundary finder over a byte stream. It holds no data: the caller keeps the chunk's bytes
 * (or hashes them as they pass). */
typedef struct xet_chunker {
    uint64_t hash;
    size_t chunk_len; /* bytes of the current chunk seen so far */
    xet_chunker_rule rule;
} xet_chunker;

extern const uint64_t xet_gear_table[256];

void xet_chunker_init(xet_chunker *c, xet_chunker_rule rule);
/* Scans data[0..len). Returns how many bytes belong to the current chunk; *chunk_ends says
 * whether the chunk ends after them (then the chunker is ready for the next chunk). When
 * *chunk_ends is false the return value is len. Call again with the rest of the data. At the
 * end of the stream the bytes not yet in a finished chunk (c->chunk_len) form the last chunk. */
size_t xet_chunker_next(xet_chunker *c, const uint8_t *data, size_t len, bool *chunk_ends);

/* A chunk as the hashes see it: its hash and length. */
typedef struct xet_chunk {
    xet_hash hash;
    uint64_t length;
} xet_chunk;

/* Chunks and hashes a whole stream: feed buffers of any size, then finish. chunks[] holds
 * every chunk (hash, length) in order; offsets are their running sum. The stream owns chunks[]
 * (xet_chunk_stream_free). */
typedef struct xet_chunk_stream {
    xet_chunker chunker;
    xet_blake3_hasher hasher;
    uint64_t total_len;
    xet_chunk *chunks;
    size_t n_chunks, cap_chunks;
} xet_chunk_stream;

void xet_chunk_stream_init(xet_chunk_stream *s, xet_chunker_rule rule);
/* Returns 0, or -1 when out of memory. */
int xet_chunk_stream_update(xet_chunk_stream *s, const void *data, size_t len);
int xet_chunk_stream_finish(xet_chunk_stream *s);
void xet_chunk_stream_free(xet_chunk_stream *s);

/* ---- Xet hashes ----------------------------------------------------------------------------- */

/* blake3_keyed(DATA_KEY, data). */
void xet_chunk_hash(const void *data, size_t len, xet_hash *out);
/* Xorb hash = the aggregated (merkle) root over the xorb's chunks, as xet-core's
 * aggregated_hashes: all zero when n == 0, the chunk's own hash when n == 1. Returns 0, or -1
 * when out of memory. */
int xet_xorb_hash(const xet_chunk *chunks, size_t n, xet_hash *out);
/* File hash = blake3_keyed(zero key, merkle root); all zero for an empty file. */
int xet_file_hash(const xet_chunk *chunks, size_t n, xet_hash *out);
/* Term verification hash = blake3_keyed(VERIFICATION_KEY, raw chunk hashes concatenated). */
void xet_verification_hash(const xet_hash *chunk_hashes, size_t n, xet_hash *out);
/* blake3_keyed(key, hash): xet-core's DataHash::hmac. A shard footer's non-zero
 * chunk_hash_hmac_key means its chunk hashes are stored this way; the file hash is this with
 * the zero key. */
void xet_hash_hmac(const xet_hash *h, const uint8_t key[32], xet_hash *out);

/* ---- xorbs ---------------------------------------------------------------------------------- */

#define XET_CHUNK_HEADER_LEN 8
#define XET_XORB_MAX_BYTES (64u * 1024 * 1024) /* chunk data per xorb (headers come on top) */
#define XET_XORB_MAX_CHUNKS 8192u
/* xet-core rejects a chunk header whose compressed length exceeds twice the max chunk. */
#define XET_CHUNK_MAX_COMPRESSED (2 * XET_CHUNK_MAX)

typedef enum {
    XET_COMPRESSION_NONE = 0,
    XET_COMPRESSION_LZ4 = 1,     /* LZ4 frame format */
    XET_COMPRESSION_BG4_LZ4 = 2, /* bytes grouped by position mod 4, then LZ4 frame */
    XET_COMPRESSION_AUTO = 99,   /* encoder only: predict LZ4 or BG4-LZ4 from the data */
} xet_compression;

typedef struct xet_chunk_header {
    uint8_t version;           /* 0 */
    uint32_t compressed_len;   /* payload bytes after the header */
    uint8_t compression;       /* xet_compression */
    uint32_t uncompressed_len; /* chunk bytes */
} xet_chunk_header;

void xet_chunk_header_encode(const xet_chunk_header *h, uint8_t out[XET_CHUNK_HEADER_LEN]);
/* Decodes and validates (version, scheme, lengths within xet-core's limits). 0 or -1 + e (400). */
int xet_chunk_header_decode(const uint8_t in[XET_CHUNK_HEADER_LEN], xet_chunk_header *out, err *e);

/* Appends one serialized chunk (header + payload) to out. scheme NONE stores raw; LZ4,
 * BG4_LZ4 or AUTO compress, and the compressed form is kept only when it saves at least 5%
 * (otherwise the chunk goes raw). *used (may be NULL) receives the scheme written.
 * Returns the bytes appended, or -1 + e (chunk too large, out of memory). */
long xet_xorb_append_chunk(buf *out, const void *data, size_t len, xet_compression scheme,
                           xet_compression *used, err *e);

/* Decodes the payload of one chunk whose header is already decoded. out must hold
 * h->uncompressed_len bytes. Returns 0, or -1 + e (400) when the payload is corrupt. */
int xet_chunk_decode(const xet_chunk_header *h, const uint8_t *payload, uint8_t *out, err *e);

typedef struct xet_xorb_chunk {
    xet_hash hash;
    uint32_t offset;           /* of its header in the serialized xorb */
    uint32_t serialized_len;   /* header + payload */
    uint32_t unpacked_offset;  /* of its first byte in the concatenated chunk data */
    uint32_t uncompressed_len;
    uint8_t compression;
} xet_xorb_chunk;

typedef struct xet_xorb {
    xet_xorb_chunk *chunks;
    size_t n_chunks;
    uint32_t chunks_len;   /* bytes of chunk data; a footer, when present, starts here */
    bool has_footer;       /* trailing "XETBLOB" object footer (clients upload without one) */
    uint64_t unpacked_len; /* sum of uncompressed_len */
    xet_hash hash;         /* recomputed xorb hash */
} xet_xorb;

/* Parses a serialized xorb: every chunk header, every payload decompressed and hashed, the
 * xorb hash recomputed. Rejects empty, truncated, oversized (more than XET_XORB_MAX_BYTES of
 * chunk data, more than XET_XORB_MAX_CHUNKS chunks, or 1 MiB more than that serialized) and
 * corrupt input with -1 + e (400, code "BadXorb"). Compare x->hash with the name it came with. */
int xet_xorb_parse(const uint8_t *data, size_t len, xet_xorb *out, err *e);
void xet_xorb_free(xet_xorb *x);

/* ---- shards ----------------------------------------------------------------------------------- */

#define XET_SHARD_HEADER_LEN 48
#define XET_SHARD_FOOTER_LEN 200
#define XET_SHARD_ENTRY_LEN 48
#define XET_SHARD_FILE_WITH_VERIFICATION (1u << 31)
#define XET_SHARD_FILE_WITH_METADATA_EXT (1u << 30)
#define XET_SHARD_CHUNK_GLOBAL_DEDUP (1u << 31)

extern const uint8_t xet_shard_header_tag[32];

/* One file term: chunks [chunk_start, chunk_end) of a xorb. */
typedef struct xet_shard_term {
    xet_hash xorb_hash;
    uint32_t xorb_flags;
    uint32_t unpacked_bytes;
    uint32_t chunk_start;
    uint32_t chunk_end; /* exclusive */
} xet_shard_term;

typedef struct xet_shard_file {
    xet_hash file_hash;
    uint32_t flags;          /* XET_SHARD_FILE_WITH_* */
    size_t n_terms;
    xet_shard_term *terms;   /* into the shard's storage */
    xet_hash *verification;  /* n_terms range hashes, or NULL without the flag */
    bool has_sha256;
    uint8_t sha256[32];      /* the SHA-256 digest in its usual byte order */
} xet_shard_file;

typedef struct xet_shard_chunk {
    xet_hash hash;
    uint32_t byte_offset;   /* start within the xorb's unpacked data */
    uint32_t unpacked_len;
    uint32_t flags;         /* XET_SHARD_CHUNK_GLOBAL_DEDUP */
} xet_shard_chunk;

typedef struct xet_shard_xorb {
    xet_hash xorb_hash;
    uint32_t flags;
    uint32_t raw_bytes;        /* unpacked bytes of the xorb */
    uint32_t serialized_bytes; /* bytes of the serialized xorb (0 when unknown) */
    size_t n_chunks;
    xet_shard_chunk *chunks;   /* into the shard's storage */
} xet_shard_xorb;

typedef struct xet_shard_footer {
    uint64_t creation_timestamp; /* unix seconds */
    uint64_t key_expiry;         /* unix seconds; UINT64_MAX = never */
    uint8_t chunk_hash_hmac_key[32];
    uint64_t stored_bytes_on_disk, materialized_bytes, stored_bytes;
} xet_shard_footer;

typedef struct xet_shard {
    xet_shard_file *files;
    size_t n_files;
    xet_shard_xorb *xorbs;
    size_t n_xorbs;
    bool has_footer;
    xet_shard_footer footer; /* when has_footer */
    /* storage the pointers above point into */
    xet_shard_term *term_store;
    xet_hash *verification_store;
    xet_shard_chunk *chunk_store;
} xet_shard;

/* Parses a shard: header (tag, version 2), file-info section, CAS-info section, each up to its
 * bookend, then either nothing (footer_size 0: an upload) or a 200-byte footer. Checks that
 * every count fits the input, that terms have chunk_start < chunk_end, and that nothing
 * trails. Does not check hashes against data (the caller knows the xorbs). 0 or -1 + e (400,
 * "BadShard"). */
int xet_shard_parse(const uint8_t *data, size_t len, xet_shard *out, err *e);
void xet_shard_free(xet_shard *s);
/* Serializes s (files, then xorbs). With footer != NULL a footer is written (lookup tables
 * left empty, as xet-core's dedup replies do; its timestamps are taken from footer). */
int xet_shard_serialize(const xet_shard *s, const xet_shard_footer *footer, buf *out, err *e);

/* Finds a xorb in the shard's CAS-info section; NULL when it has none by that hash. */
const xet_shard_xorb *xet_shard_find_xorb(const xet_shard *s, const xet_hash *xorb_hash);

/* Gives xet_shard_verify_file the chunks of a xorb: sets *chunks and *n (an array the callee
 * keeps alive until the next call) and returns 0, or returns -1 when the xorb is unknown. */
typedef int (*xet_xorb_chunks_fn)(void *ctx, const xet_hash *xorb_hash, const xet_chunk **chunks,
                                  size_t *n);

/* Checks one file of a shard against the xorbs its terms name (what a CAS does before it
 * registers an upload): each term's chunk range lies inside its xorb, its unpacked_bytes is the
 * range's length, its verification hash matches (a missing one is an error when
 * require_verification, as for uploads), and the merkle hash over all the terms' chunks gives
 * the file hash. *size (may be NULL) receives the file's length. 0, or -1 + e (400 "BadShard";
 * 500 when out of memory). */
int xet_shard_verify_file(const xet_shard_file *f, xet_xorb_chunks_fn chunks_of, void *ctx,
                          bool require_verification, uint64_t *size, err *e);

#endif
