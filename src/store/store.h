/* store — the content store: every byte of every large file stored once, Xet-style.
 *
 * Files are cut into content-defined chunks (Xet's gearhash chunker, 64 KiB target) and each
 * chunk is stored once, whichever repo, revision or protocol (LFS, git push, Xet) brought it.
 * Chunks are appended to pack files in Xet's xorb format (an 8-byte header per chunk, LZ4 or
 * byte-grouped LZ4 where that saves at least 5%), so a pack *is* a xorb: the Xet CAS serves
 * pack byte ranges straight from disk. A file is a list of terms, each a run of consecutive
 * chunks of one pack; the chunks of one upload are appended contiguously, so a fresh file is
 * usually one term per pack.
 *
 * Files are addressed by the SHA-256 of their bytes (the LFS oid the clients see) and also
 * carry their Xet file hash.
 *
 * Writing is streaming: bytes are hashed (SHA-256), chunked, looked up in batches (no database
 * round trip per chunk) and new chunks appended to the writer's own pack. Nothing is visible
 * until finish: packs are fsynced and renamed into place, then one metadata transaction
 * registers packs, chunks and the file, so a crash at any point leaves either the whole file
 * or nothing (orphan packs are swept at start and by gc).
 *
 * Metadata lives in its own SQLite database (DIR/store.db, WAL, synchronous=FULL); the chunk
 * index is a B-tree on disk and scales far beyond RAM.
 *
 * Thread-safe: a store handle may be shared by threads; each writer / reader belongs to one
 * thread at a time.
 */
#ifndef HEARTH_STORE_H
#define HEARTH_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/base.h"
#include "xet/xet.h"

typedef struct store store;
typedef struct store_writer store_writer;
typedef struct store_reader store_reader;

/* Opens (creating) the store under dir. With `recover` (the server at start) temp files and
 * packs no metadata refers to are removed: they are what a crash left of unfinished uploads. */
store *store_open(const char *dir, bool recover, err *e);
void store_close(store *s);

/* 0 present (size in *size), 1 missing, -1 error. oid must be 64 lowercase hex. */
int store_stat(store *s, const char *oid, int64_t *size, err *e);

/* ---- writing ----------------------------------------------------------------------------- */

store_writer *store_writer_new(store *s, err *e);
int store_writer_write(store_writer *w, const void *data, size_t len, err *e);
int64_t store_writer_size(const store_writer *w);
/* The size the file is announced to have (an LFS upload's), if known: the last stretch is then
 * handed to the storing thread in smaller pieces, so that less is left to do after the last
 * byte arrives. Only a hint; store_writer_finish checks the size. */
void store_writer_expect(store_writer *w, int64_t size);
/* Makes the file durable. expected_oid / expected_size (NULL / -1 = unchecked) must match
 * the bytes written, else 400 and nothing is stored. Frees w in every case. */
int store_writer_finish(store_writer *w, const char *expected_oid, int64_t expected_size,
                        char oid_out[65], err *e);
/* For files that arrive in pieces, each of which may fail and be sent again (multipart
 * uploads): store_writer_mark remembers the position (the bytes written so far), waiting for
 * what is queued to be stored; store_writer_rewind returns to the last mark, as if nothing had
 * been written since. Chunks stored after the mark stay in the writer's packs, unreferenced
 * unless the same bytes come again (gc reclaims them). Rewinding fails only when the writer
 * failed meanwhile (a storage error); it can then only be aborted. One mark at a time. */
int store_writer_mark(store_writer *w, err *e);
int store_writer_rewind(store_writer *w, err *e);
/* Discards everything written; frees w. */
void store_writer_abort(store_writer *w);

/* ---- reading ----------------------------------------------------------------------------- */

/* 404 (code EntryNotFound) when the file is missing. */
store_reader *store_reader_open(store *s, const char *oid, err *e);
int64_t store_reader_size(const store_reader *r);
/* For [offset, offset+len): a new fd (caller closes) and the position in it, when the range
 * is one plain region of a file; returns 1 when it is not (use store_reader_pread). */
int store_reader_region(store_reader *r, int64_t offset, int64_t len, int *fd,
                        int64_t *file_offset);
/* Reads up to n bytes at offset (decompressing as needed). Returns bytes read, 0 at the end,
 * -1 on damage (a chunk that does not decode or does not match its hash: never wrong bytes). */
ssize_t store_reader_pread(store_reader *r, void *out, size_t n, int64_t offset);
void store_reader_close(store_reader *r);

/* ---- Xet ----------------------------------------------------------------------------------- */

/* The Xet file hash of a stored file (tree `xetHash`, resolve `X-Xet-Hash`). 0 / 1 missing. */
int store_file_xet_hash(store *s, const char *oid, xet_hash *out, err *e);
/* The file a Xet file hash names: its oid and size. 0 / 1 missing. */
int store_file_by_xet_hash(store *s, const xet_hash *file, char oid_out[65], int64_t *size,
                           err *e);

/* Is a xorb known (uploaded by a client, or one of our packs)? 0 with its serialized length
 * (0 when only its chunk list is kept), 1 missing. */
int store_xorb_stat(store *s, const xet_hash *xorb, uint64_t *serialized_len, err *e);
/* Stores a client's serialized xorb: parses it, checks every chunk and that its hash is
 * `xorb` (400 BadXorb otherwise, nothing stored). Chunks already held are not stored again;
 * the xorb's chunk list is kept so that shards can name its chunk ranges. *inserted tells
 * whether it was new. */
int store_xorb_put(store *s, const xet_hash *xorb, const uint8_t *data, size_t len,
                   bool *inserted, err *e);
/* The chunks (hash, unpacked length) of a known xorb, in order; caller frees *chunks. */
int store_xorb_chunks(store *s, const xet_hash *xorb, xet_chunk **chunks, size_t *n, err *e);
/* Checks an upload shard (as xet_shard_parse gives it) and registers its files, all of them or
 * none. Proof of possession first: every xorb it introduces must be known; every file needs
 * verification entries, each a range hash over the real chunk hashes of its term's chunk range
 * of a known xorb, and its terms must hash to its file hash (xet_shard_verify_file); the
 * SHA-256 it claims must be the content's, which is read back from the packs and hashed unless
 * the oid is stored already under the same Xet hash and size. 400 BadShard otherwise, with a
 * message that names only hashes the shard holds, and reads the same whether or not the oid is
 * stored. sizes (n_files entries) receives each file's length. Afterwards each file is an
 * ordinary store file under its SHA-256 (store_stat, readers); a file stored already is kept
 * as it is. */
int store_shard_register(store *s, const xet_shard *shard, uint64_t *sizes, err *e);

/* How to rebuild bytes [first, last] of a file from xorbs (Xet reconstruction). */
typedef struct store_term {
    xet_hash xorb;           /* one of our packs */
    uint32_t chunk_start;    /* chunks [start, end) of it */
    uint32_t chunk_end;
    uint64_t unpacked_len;   /* bytes those chunks decode to */
    uint64_t byte_start;     /* their serialized bytes [byte_start, byte_end) in the xorb */
    uint64_t byte_end;
} store_term;

typedef struct store_reconstruction {
    store_term *terms;
    size_t n;
    uint64_t offset_into_first;  /* bytes of the first term to skip */
    uint64_t file_size;
} store_reconstruction;

/* 404 when the file is unknown, 416 when first > last or first >= size. last may be
 * beyond the end (clamped). */
int store_reconstruct(store *s, const xet_hash *file, uint64_t first, uint64_t last,
                      store_reconstruction *out, err *e);
void store_reconstruction_free(store_reconstruction *r);
/* Serialized bytes [start, end) of one of our packs, as an fd region for sendfile (the caller
 * closes fd). 404 when the xorb is not a pack of ours, 416 when the range is outside it. */
int store_xorb_region(store *s, const xet_hash *xorb, uint64_t start, uint64_t end, int *fd,
                      int64_t *file_offset, err *e);
/* Global dedup: a shard (xet format, with footer) describing the pack that holds `chunk`,
 * appended to out, for any CAS client. It names the pack (its xorb hash) and its chunks'
 * lengths, and each chunk hash only keyed: xet_hash_hmac(hash, key), with key (non-zero) and
 * key_expiry (unix seconds) in the footer, as xet-core's chunk_hash_key. A client keys its own
 * chunk hashes to look them up, so it finds the chunks it has and learns no chunk hash it did
 * not know; chunk hashes are what proves possession of a file (the shard upload's
 * verification entries), so they never leave the store in clear. No file-info section. 1 when
 * the chunk is unknown. */
int store_chunk_shard(store *s, const xet_hash *chunk, const uint8_t key[32], uint64_t key_expiry,
                      buf *out, err *e);

/* ---- maintenance --------------------------------------------------------------------------- */

typedef struct store_stats {
    int64_t files;
    int64_t logical_bytes;   /* sum of file sizes */
    int64_t stored_bytes;    /* bytes of pack files */
    int64_t packs;
    int64_t chunks;
} store_stats;

int store_get_stats(store *s, store_stats *out, err *e);
/* Logical bytes of these files, and the pack bytes only they reference (for per-repo stats). */
int store_files_stats(store *s, const char *const *oids, size_t n, int64_t *logical,
                      int64_t *unique_stored, err *e);

/* Garbage collection. live(oid) says whether a file is still referenced; files that are not,
 * and are older than grace_ms, are forgotten; packs no file uses are deleted, and packs whose
 * dead share is at least min_dead (0..1) are rewritten without their dead chunks. Safe while
 * uploads and downloads run. */
typedef struct store_gc_result {
    int64_t files_removed;
    int64_t packs_removed;
    int64_t packs_rewritten;
    int64_t bytes_reclaimed;
} store_gc_result;

typedef bool (*store_live_fn)(void *ctx, const char *oid);
int store_gc(store *s, store_live_fn live, void *ctx, int64_t grace_ms, double min_dead,
             store_gc_result *out, err *e);

/* Re-hashes every chunk of every pack and every file. report(ctx, line) is called for each
 * problem found; returns the number of problems (0 = clean), or -1 on error. */
typedef void (*store_report_fn)(void *ctx, const char *line);
int64_t store_fsck(store *s, store_report_fn report, void *ctx, err *e);

#endif
