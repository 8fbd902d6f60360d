/* pool.c — a fixed thread pool for the forward pass.
 *
 * The forward pass is a sequence of data-parallel steps (each matmul splits its rows), so the
 * pool has exactly one job at a time: the caller publishes (fn, ctx, n), bumps a generation
 * counter, does its own share, then waits until every worker has finished its range. Workers
 * spin briefly on the generation counter before sleeping on the condition variable, because a
 * decode step issues hundreds of jobs a second and a futex wake-up per job would dominate on
 * small models.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "infer/internal.h"

struct infer_pool {
    int threads;                 /* including the caller */
    pthread_t *workers;
    pthread_mutex_t lock;
    pthread_cond_t wake, done_cv;
    atomic_uint generation;
    atomic_int remaining;        /* workers still running the current job */
    bool stop;
    void (*fn)(void *ctx, int64_t begin, int64_t end);
    void *ctx;
    int64_t n;
};

typedef struct worker_arg {
    infer_pool *pool;
    int index;
} worker_arg;

static void run_share(infer_pool *p, int index)
{
    int64_t chunk = (p->n + p->threads - 1) / p->threads;
    int64_t begin = chunk * index, end = begin + chunk;
    if (end > p->n)
        end = p->n;
    if (begin < end)
        p->fn(p->ctx, begin, end);
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    infer_pool *p = wa->pool;
    int index = wa->index;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        /* Spin a little, then sleep until the generation moves. */
        int spins = 0;
        while (atomic_load(&p->generation) == seen && spins < 20000) {
            spins++;
            if (spins > 2000)
                sched_yield();
        }
        pthread_mutex_lock(&p->lock);
        while (atomic_load(&p->generation) == seen && !p->stop)
            pthread_cond_wait(&p->wake, &p->lock);
        bool stop = p->stop;
        pthread_mutex_unlock(&p->lock);
        if (stop)
            return NULL;
        seen = atomic_load(&p->generation);
        run_share(p, index);
        if (atomic_fetch_sub(&p->remaining, 1) == 1) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

infer_pool *infer_pool_new(int threads)
{
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    if (threads > 256)
        threads = 256;
    infer_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->threads = threads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->workers = calloc((size_t)threads, sizeof *p->workers);
    for (int i = 1; i < threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        wa->pool = p;
        wa->index = i;
        if (pthread_create(&p->workers[i], NULL, worker_main, wa) != 0) {
            free(wa);
            p->threads = i;   /* run with the workers that did start */
            break;
        }
    }
    return p;
}

void infer_pool_free(infer_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->threads; i++)
        pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    free(p->workers);
    free(p);
}

int infer_pool_threads(const infer_pool *p) { return p ? p->threads : 1; }

void infer_pool_run(infer_pool *p, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end),
                    void *ctx)
{
    if (n <= 0)
        return;
    /* Small jobs are not worth waking anyone for. */
    if (!p || p->threads == 1 || n < 2 * p->threads) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store(&p->remaining, p->threads - 1);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    run_share(p, 0);
    /* Spin first: the workers usually finish within microseconds of the caller. */
    for (int spins = 0; atomic_load(&p->remaining) > 0 && spins < 100000; spins++)
        ;
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->remaining) > 0)
        pthread_cond_wait(&p->done_cv, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
