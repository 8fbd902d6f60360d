/* store — the content store for large (LFS) files, addressed by the SHA-256 of their bytes.
 *
 * Writing is streaming: bytes go to a temporary file while they are hashed, and only a
 * finished object whose hash and size match what the client announced becomes visible, by an
 * fsync + rename (nothing acknowledged is lost; nothing half-written is ever served). The same
 * content written twice is stored once.
 *
 * Reading goes through a reader that can hand out a plain file region for sendfile when the
 * requested range is stored contiguously, or copy bytes out with pread otherwise. The current
 * backend keeps whole files; the chunk-level dedup backend keeps the same interface.
 *
 * Thread-safe: a store handle may be shared; each writer / reader belongs to one thread.
 */
#ifndef HEARTH_STORE_H
#define HEARTH_STORE_H

#include <stdint.h>
#include <sys/types.h>

#include "base/base.h"

typedef struct store store;
typedef struct store_writer store_writer;
typedef struct store_reader store_reader;

store *store_open(const char *dir, err *e);
void store_close(store *s);

/* 0 present (size in *size), 1 missing, -1 error. oid must be 64 lowercase hex. */
int store_stat(store *s, const char *oid, int64_t *size, err *e);

store_writer *store_writer_new(store *s, err *e);
int store_writer_write(store_writer *w, const void *data, size_t len, err *e);
int64_t store_writer_size(const store_writer *w);
/* Makes the object durable. expected_oid / expected_size (NULL / -1 = unchecked) must match
 * the bytes written, else 400 and nothing is stored. Frees w in every case. */
int store_writer_finish(store_writer *w, const char *expected_oid, int64_t expected_size,
                        char oid_out[65], err *e);
/* Discards everything written; frees w. */
void store_writer_abort(store_writer *w);

/* 404 EntryNotFound-style error (status 404) when the object is missing. */
store_reader *store_reader_open(store *s, const char *oid, err *e);
int64_t store_reader_size(const store_reader *r);
/* For [offset, offset+len): a new fd (caller closes) and the position in it, when the range is
 * one plain region of a file; returns 1 when it is not (use store_reader_pread). */
int store_reader_region(store_reader *r, int64_t offset, int64_t len, int *fd,
                        int64_t *file_offset);
ssize_t store_reader_pread(store_reader *r, void *out, size_t n, int64_t offset);
void store_reader_close(store_reader *r);

#endif
