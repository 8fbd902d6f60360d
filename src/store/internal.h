/* Internal to the store module: the handle, the metadata connection and the pack layout.
 * Not included from outside src/store/. */
#ifndef HEARTH_STORE_INTERNAL_H
#define HEARTH_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>

#include "store/store.h"

#define PACK_MAX_BYTES (64u << 20)        /* chunk data per pack, as Xet's xorbs */
#define PACK_MAX_CHUNKS 8192u
#define LEASE_MS (3600 * 1000)             /* how long an upload may hold packs it dedups against */

struct store {
    char *dir;
    sqlite3 *sql;              /* one connection, serialised by lock */
    pthread_mutex_t lock;
    atomic_int checkers;       /* download checker threads running (chunks.c) */
};

/* Statement helpers on the store's connection; the caller holds s->lock. */
sqlite3_stmt *store_sql_prepare(store *s, const char *sql, err *e);
int store_sql_fail(store *s, err *e, const char *what);
int store_sql_exec(store *s, const char *sql, err *e);

void store_pack_path(const store *s, const char *name, char *out, size_t cap);

/* One chunk of a pack, as the metadata records it. */
typedef struct pack_chunk {
    xet_hash hash;
    uint64_t offset;     /* of its header in the pack file */
    uint32_t length;     /* header + payload */
    uint32_t raw;        /* decoded bytes */
    uint64_t check;      /* XXH3-64 of the record as stored (header + payload) */
} pack_chunk;

/* The fast integrity check of a stored record; downloads verify it, fsck the BLAKE3 hash. */
uint64_t store_record_check(const void *record, size_t len);

/* Loads chunks [start, end) of pack `pack` (end 0 = to the last). Caller holds the lock and
 * frees *out. */
int store_load_pack_chunks(store *s, int64_t pack, uint32_t start, uint32_t end,
                           pack_chunk **out, size_t *n, err *e);

/* Registers a pack file and its chunks (inside the caller's transaction, lock held). hash
 * NULL = the merkle root of the chunks. With index_chunks, its chunks become the dedup index's
 * copy of any chunk not indexed yet. *id receives the pack's id. */
int store_insert_pack(store *s, const char *name, const pack_chunk *chunks, size_t n,
                      const xet_hash *hash, bool index_chunks, int64_t *id, err *e);

/* 8 MiB buffers, 2 MiB-aligned and in huge pages where the kernel gives them, kept for reuse
 * when put back (packfile.c): pack write buffers and ingest batches. */
#define STORE_BUFFER_SIZE (8u << 20)
uint8_t *store_buffer_get(void);
void store_buffer_put(uint8_t *b);

/* One background thread doing queued jobs in submission order (worker.c): the ingest batches of
 * chunks.c and the pack writes of packfile.c. run(ctx, failed, e) does the next job; with failed
 * (an earlier job failed) it only releases the job's slot. The first error sticks. */
typedef int (*store_job_fn)(void *ctx, bool failed, err *e);
typedef struct store_worker {
    const char *name;        /* the thread's name */
    store_job_fn run;
    void *ctx;
    pthread_t thread;
    bool started, stop;
    unsigned queued;         /* jobs handed over, not yet done */
    int rc;                  /* the first job error, and its err */
    err error;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} store_worker;
void store_worker_init(store_worker *w, const char *name, store_job_fn run, void *ctx);
/* Hands over one job once at most `most` are queued (starting the thread on first use; where no
 * thread can start, the job is done here). -1 with the first error when one failed. */
int store_worker_submit(store_worker *w, unsigned most, err *e);
/* Waits until at most `most` jobs are queued (0: idle); returns the first error, if any. */
int store_worker_wait(store_worker *w, unsigned most, err *e);
/* Stops the thread after the jobs queued, and frees what init made. */
void store_worker_destroy(store_worker *w);

/* A new pack file being appended to (packfile.c): direct I/O where the file system allows,
 * disk writes overlapped with the caller's work. Errors: 507 when the disk is full. */
typedef struct packfile packfile;
packfile *packfile_create(const char *path, err *e);
int packfile_append(packfile *f, const void *data, size_t len, err *e);
/* Writes what is left and fsyncs; frees f in every case. */
int packfile_seal(packfile *f, err *e);
/* Closes without syncing (the caller removes the file); frees f. NULL is allowed. */
void packfile_abort(packfile *f);

/* Reads and decodes one chunk record from fd into out (raw bytes), checking its BLAKE3 hash
 * (fsck: the full check). */
int store_read_chunk(int fd, const pack_chunk *c, uint8_t *out, uint8_t *scratch, err *e);

#endif
