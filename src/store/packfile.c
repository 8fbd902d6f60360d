/* packfile — appending a new pack file with direct I/O, its disk writes overlapped with ingest.
 *
 * Bytes appended go into one of two aligned 8 MiB buffers; a full buffer is handed to the
 * pack's I/O thread, which writes it with O_DIRECT (the disk DMAs it from our buffer: no page
 * cache copy, which on buffered writes costs more CPU than hashing the bytes) while ingest
 * fills the other. Sealing writes the tail (padded to the block size, then truncated to the
 * exact length) and fsyncs. Where the file system refuses O_DIRECT (tmpfs, some overlays), the
 * same code writes through the page cache instead.
 *
 * A pack being written is read by nobody (it lives in tmp/ until renamed), so the page cache
 * holding none of it is harmless; readers map the pack later and read it from disk once.
 */
#include "store/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

enum { PF_ALIGN = 4096, PF_HUGE = 2 << 20 };

struct packfile {
    int fd;
    bool direct;
    uint8_t *bufs[2];
    uint8_t *cur;            /* the buffer being filled */
    size_t used;             /* bytes in cur */
    uint64_t size;           /* bytes appended */
    uint64_t flushed;        /* file offset of cur's first byte */
    /* the I/O thread: writes `pending` (pending_len bytes at pending_off) */
    store_worker io;
    const uint8_t *pending;
    size_t pending_len;
    uint64_t pending_off;
};

/* Buffers are 2 MiB-aligned and asked for in huge pages (where the kernel gives them only on
 * request, the usual setting). A direct write's memory goes to the disk as a list of physically
 * contiguous segments, at most ~254 per request on a virtio disk: from 4 KiB pages that is
 * ~1 MiB per request, from huge pages a whole 8 MiB buffer in two. With 4 KiB pages the block
 * layer's dispatching (run by a kernel worker, on one of the same two cores) cost 0.12 s of CPU
 * per GiB ingested; with huge pages 2 ms, and hashing and copying the batches miss the TLB less.
 *
 * Spare buffers are kept between packs and uploads: a fresh 8 MiB allocation is fresh pages the
 * kernel must fault in and zero, every 64 MiB of ingest. An upload holds six (two here, four
 * batches in chunks.c): the next upload finds its buffers ready, at 48 MiB kept while idle. */
enum { SPARE_MAX = 6 };
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *spare[SPARE_MAX];
static int nspare;

uint8_t *store_buffer_get(void)
{
    uint8_t *b = NULL;
    pthread_mutex_lock(&spare_lock);
    if (nspare)
        b = spare[--nspare];
    pthread_mutex_unlock(&spare_lock);
    if (!b) {
        if (posix_memalign((void **)&b, PF_HUGE, STORE_BUFFER_SIZE) != 0)
            abort();
        madvise(b, STORE_BUFFER_SIZE, MADV_HUGEPAGE); /* a hint: without it, 4 KiB pages */
    }
    return b;
}

void store_buffer_put(uint8_t *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&spare_lock);
    if (nspare < SPARE_MAX) {
        spare[nspare++] = b;
        b = NULL;
    }
    pthread_mutex_unlock(&spare_lock);
    free(b);
}

static int write_at(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* A write O_DIRECT refuses (EINVAL: the file system cannot) is done through the page cache. */
static int write_block(packfile *f, const uint8_t *p, size_t len, uint64_t off)
{
    int rc = write_at(f->fd, p, len, off);
    if (rc == EINVAL && f->direct) {
        int flags = fcntl(f->fd, F_GETFL);
        if (flags >= 0 && fcntl(f->fd, F_SETFL, flags & ~O_DIRECT) == 0) {
            f->direct = false;
            rc = write_at(f->fd, p, len, off);
        }
    }
    return rc;
}

static int io_error(int code, err *e)
{
    return err_set(e, code == ENOSPC || code == EDQUOT ? 507 : 500, "",
                   "cannot write a pack: %s", strerror(code));
}

/* The I/O thread's job: writes the pending buffer. */
static int write_pending(void *ctx, bool failed, err *e)
{
    packfile *f = ctx;
    int rc = failed ? 0 : write_block(f, f->pending, f->pending_len, f->pending_off);
    return rc ? io_error(rc, e) : 0;
}

packfile *packfile_create(const char *path, err *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0644);
    bool direct = fd >= 0;
    if (fd < 0 && errno == EINVAL)
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        err_set(e, errno == ENOSPC ? 507 : 500, "", "cannot create a pack: %s", strerror(errno));
        return NULL;
    }
    packfile *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    f->fd = fd;
    f->direct = direct;
    f->bufs[0] = store_buffer_get();
    f->bufs[1] = store_buffer_get();
    f->cur = f->bufs[0];
    store_worker_init(&f->io, "hearth-packio", write_pending, f);
    return f;
}


/* Hands the full buffer to the I/O thread and switches to the other one. */
static int submit(packfile *f, err *e)
{
#if defined(__x86_64__)
    _mm_sfence(); /* the streamed stores are in memory before the I/O thread takes the buffer */
#endif
    if (store_worker_wait(&f->io, 0, e) != 0) /* the other buffer is free again */
        return -1;
    f->pending = f->cur;
    f->pending_len = f->used;
    f->pending_off = f->flushed;
    if (store_worker_submit(&f->io, 0, e) != 0)
        return -1;
    f->flushed += f->used;
    f->cur = f->cur == f->bufs[0] ? f->bufs[1] : f->bufs[0];
    f->used = 0;
    return 0;
}

/* Copies into a write buffer with non-temporal stores: the buffer goes to the disk by DMA and is
 * never read by the CPU again, so its lines need not be read in first or kept in cache. */
static void copy_out(uint8_t *dst, const uint8_t *src, size_t n)
{
#if defined(__x86_64__)
    while (n && ((uintptr_t)dst & 15)) {
        *dst++ = *src++;
        n--;
    }
    for (; n >= 64; n -= 64, dst += 64, src += 64)
        for (int i = 0; i < 64; i += 16)
            _mm_stream_si128((__m128i *)(dst + i), _mm_loadu_si128((const __m128i *)(src + i)));
#endif
    memcpy(dst, src, n);
}

int packfile_append(packfile *f, const void *data, size_t len, err *e)
{
    const uint8_t *p = data;
    while (len) {
        size_t take = STORE_BUFFER_SIZE - f->used;
        if (take > len)
            take = len;
        copy_out(f->cur + f->used, p, take);
        f->used += take;
        f->size += take;
        p += take;
        len -= take;
        if (f->used == STORE_BUFFER_SIZE && submit(f, e) != 0)
            return -1;
    }
    return 0;
}

static void packfile_free(packfile *f)
{
    store_worker_destroy(&f->io);
    if (f->fd >= 0)
        close(f->fd);
    store_buffer_put(f->bufs[0]);
    store_buffer_put(f->bufs[1]);
    free(f);
}

int packfile_seal(packfile *f, err *e)
{
    if (store_worker_wait(&f->io, 0, e) != 0) {
        packfile_free(f);
        return -1;
    }
    int rc = 0;
    if (f->used) {
        /* direct I/O writes whole blocks: pad the tail, then cut the file to its length */
        size_t len = f->used;
        if (f->direct) {
            len = (f->used + PF_ALIGN - 1) / PF_ALIGN * PF_ALIGN;
            memset(f->cur + f->used, 0, len - f->used);
        }
#if defined(__x86_64__)
        _mm_sfence(); /* the streamed stores reach memory before the disk reads it */
#endif
        rc = write_block(f, f->cur, len, f->flushed);
        if (rc == 0 && len != f->used && ftruncate(f->fd, (off_t)f->size) != 0)
            rc = errno;
    }
    if (rc == 0 && fsync(f->fd) != 0)
        rc = errno;
    packfile_free(f);
    return rc ? io_error(rc, e) : 0;
}

void packfile_abort(packfile *f)
{
    if (f)
        packfile_free(f);
}
