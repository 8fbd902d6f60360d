/* worker — one background thread that does queued jobs in order, for the store's writers.
 *
 * Ingest (chunks.c: batches of chunks to compress, hash and append) and pack writing
 * (packfile.c: full buffers to write to disk) both overlap their slow half with the caller's
 * work the same way: the caller fills a slot, hands it over and fills the next; the thread does
 * the jobs in the order handed over; the first error sticks and is what every later wait
 * returns. Which slot a job is, is the owner's business: the thread only counts them.
 */
#include "store/internal.h"

static void *worker_main(void *arg)
{
    store_worker *w = arg;
    pthread_setname_np(pthread_self(), w->name);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->queued && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->queued)
            break;
        bool failed = w->rc != 0;
        pthread_mutex_unlock(&w->mu);
        err e = ERR_INIT;
        int rc = w->run(w->ctx, failed, &e);
        pthread_mutex_lock(&w->mu);
        if (rc != 0 && w->rc == 0) {
            w->rc = rc;
            w->error = e;
        }
        w->queued--;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void store_worker_init(store_worker *w, const char *name, store_job_fn run, void *ctx)
{
    *w = (store_worker){.name = name, .run = run, .ctx = ctx};
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

int store_worker_wait(store_worker *w, unsigned most, err *e)
{
    pthread_mutex_lock(&w->mu);
    while (w->queued > most)
        pthread_cond_wait(&w->cv, &w->mu);
    int rc = w->rc;
    if (rc && e)
        *e = w->error;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int store_worker_submit(store_worker *w, unsigned most, err *e)
{
    if (!w->started) {
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            /* no thread: do the job here */
            err je = ERR_INIT;
            int rc = w->run(w->ctx, w->rc != 0, &je);
            if (rc != 0 && w->rc == 0) {
                w->rc = rc;
                w->error = je;
            }
            return store_worker_wait(w, 0, e);
        }
        w->started = true;
    }
    if (store_worker_wait(w, most, e) != 0)
        return -1;
    pthread_mutex_lock(&w->mu);
    w->queued++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

void store_worker_destroy(store_worker *w)
{
    if (w->started) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
        w->started = false;
    }
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}
