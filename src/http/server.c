/* server — libmicrohttpd glue: one request context per request, dispatch, body delivery,
 * reply construction and the access log.
 *
 * libmicrohttpd only lets a response be queued at two moments: right after the headers
 * (before any body) and once the whole body has been received. Replies made in between (a
 * streaming sink that fails half-way) are therefore kept in the request and queued at the
 * final call, while the rest of the body is read and discarded.
 *
 * Timeouts: libmicrohttpd's own timeout (config.io_timeout) measures inactivity, which is right
 * for a body (a slow upload that keeps moving must go on) but lets a client that sends a
 * header byte every few seconds hold its connection for ever, and, for a reply, only sees the
 * moments the kernel takes more data. So every connection also carries a header deadline, set
 * when it opens and again when a reply completes, cleared when the headers are in; and a large
 * reply swaps libmicrohttpd's timeout for a check, every io_timeout, that the client has
 * acknowledged more bytes (TCP_INFO). A watchdog thread sleeps until the earliest deadline and
 * shuts down the sockets that missed theirs; libmicrohttpd then closes them on its own thread.
 * A socket is only shut down while its entry is listed, and libmicrohttpd removes the entry
 * (CLOSED notification, under the same lock) before it closes the descriptor, so the watchdog
 * never touches a descriptor that has been reused.
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <errno.h>
#include <microhttpd.h>
#include <linux/tcp.h>   /* struct tcp_info with tcpi_bytes_acked (glibc's lacks it) */
#include <netinet/in.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct job {
    http_request *req;
    struct job *next;
} job;

/* A connection as the header watchdog sees it, from its opening to its closing. */
typedef struct watched {
    MHD_socket fd;
    /* CLOCK_MONOTONIC ns by which a whole request header must be in; 0 while a request is
     * being received or answered (or once the watchdog has shut the socket down). */
    _Atomic int64_t header_deadline_ns;
    /* During a large reply: when to check next that the client acknowledged more than `acked`
     * bytes; 0 otherwise. */
    _Atomic int64_t reply_check_ns;
    _Atomic uint64_t acked;
    bool inactivity_timeout_off;   /* libmicrohttpd's timeout is off (event-loop thread only) */
    struct watched *prev, *next;
} watched;

/* Replies larger than this are watched for acknowledged bytes (see watch_reply_started). */
#define WATCHED_REPLY_MIN ((int64_t)1 << 20)

struct http_server {
    struct MHD_Daemon *daemon;
    http_config config;
    int port;
    /* workers for offloaded handlers */
    pthread_t *workers;
    unsigned nworkers;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    job *head, *tail;
    bool stopping;
    /* the header watchdog; watch_lock guards the list and watch_stopping */
    int64_t header_timeout_ns;
    int64_t io_timeout_ns;
    unsigned io_timeout;
    char keep_alive[32];   /* "timeout=N": tells clients when an idle connection will close */
    pthread_t watchdog;
    bool watchdog_started;
    pthread_mutex_t watch_lock;
    pthread_cond_t watch_wake;
    watched *watched;
    bool watch_stopping;
};

typedef struct query_param {
    char *name;
    char *value;
} query_param;

struct http_request {
    http_server *server;
    struct MHD_Connection *connection;
    char method[16];
    char *path;
    query_param *params;
    size_t nparams;
    const http_handler *handler;
    buf body;
    struct MHD_Response *response;
    int status;
    int64_t response_bytes;
    bool replied;
    bool queued;
    bool offloaded;
    bool body_error;   /* a reply was made mid-body: discard the rest */
    buf headers;       /* "name\0value\0" pairs added by http_add_header */
    char request_id[33];
    char base_url[256];
    int64_t start_ns;
    void *app_data;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Request ids only need to be unique, not secret: a per-thread xorshift generator seeded
 * from the system's randomness, instead of a syscall per request. */
static void make_request_id(char out[33])
{
    static _Thread_local uint64_t state[2];
    if (!state[0] && !state[1])
        hash_random(state, sizeof state);
    uint64_t words[2];
    for (int i = 0; i < 2; i++) {
        uint64_t x = state[0], y = state[1];
        state[0] = y;
        x ^= x << 23;
        state[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
        words[i] = state[1] + y;
    }
    hex_encode((const uint8_t *)words, sizeof words, out);
}

/* Keep paths and parameters exactly as received; we decode them ourselves. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
    return strlen(s);
}

static enum MHD_Result collect_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    http_request *req = cls;
    buf name = BUF_INIT, val = BUF_INIT;
    if (text_percent_decode(key, strlen(key), true, &name) != 0 ||
        (value && text_percent_decode(value, strlen(value), true, &val) != 0)) {
        buf_free(&name);
        buf_free(&val);
        return MHD_YES; /* an undecodable parameter is dropped, like an unknown one */
    }
    req->params = realloc(req->params, (req->nparams + 1) * sizeof *req->params);
    if (!req->params)
        abort();
    req->params[req->nparams].name = buf_detach(&name);
    req->params[req->nparams].value = buf_detach(&val);
    req->nparams++;
    return MHD_YES;
}

/* ---- framing (RFC 9112 section 6.3) ------------------------------------------------------ */

typedef struct framing {
    unsigned content_lengths;
    unsigned transfer_encodings;
    const char *encoding;
} framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    framing *f = cls;
    if (!strcasecmp(key, "Content-Length")) {
        f->content_lengths++;
    } else if (!strcasecmp(key, "Transfer-Encoding")) {
        f->transfer_encodings++;
        f->encoding = value;
    }
    return MHD_YES;
}

/* Whether the last coding of a Transfer-Encoding list is chunked, and whether it is alone. */
static bool ends_chunked(const char *encoding, bool *alone)
{
    const char *last = strrchr(encoding, ',');
    last = last ? last + 1 : encoding;
    while (*last == ' ' || *last == '\t')
        last++;
    size_t n = strlen(last);
    while (n && (last[n - 1] == ' ' || last[n - 1] == '\t'))
        n--;
    *alone = !strchr(encoding, ',');
    return n == 7 && !strncasecmp(last, "chunked", 7);
}

/* libmicrohttpd 0.9.75 frames a body by the first Content-Length it finds and ignores any
 * other, and reads a body with an unknown transfer coding until the connection closes. A
 * client (or a proxy in front) that framed the body by another value then waits for an answer
 * that never comes, or has the rest of its body read as the next request. Such requests are
 * refused before dispatch. Returns NULL when the framing is sound, else the reason, with
 * *status 400, or 501 for a transfer coding we do not implement. */
static const char *framing_problem(struct MHD_Connection *connection, int *status)
{
    framing f = {0};
    MHD_get_connection_values(connection, MHD_HEADER_KIND, count_framing, &f);
    *status = 400;
    if (f.content_lengths > 1)
        return "the request has more than one Content-Length header";
    if (f.transfer_encodings && f.content_lengths)
        return "the request has both Transfer-Encoding and Content-Length headers";
    if (f.transfer_encodings > 1)
        return "the request has more than one Transfer-Encoding header";
    bool alone = true;
    if (f.transfer_encodings && !ends_chunked(f.encoding, &alone))
        return "the request's Transfer-Encoding does not end with chunked";
    if (!alone) {
        *status = 501;
        return "only the chunked transfer coding is supported";
    }
    return NULL;
}

static void request_free(http_request *req)
{
    for (size_t i = 0; i < req->nparams; i++) {
        free(req->params[i].name);
        free(req->params[i].value);
    }
    free(req->params);
    free(req->path);
    buf_free(&req->body);
    buf_free(&req->headers);
    if (req->response && !req->queued)
        MHD_destroy_response(req->response);
    free(req);
}

/* ---- the watchdog: header deadlines, stalled replies ------------------------------------- */

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    http_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        watched *w = calloc(1, sizeof *w);
        if (!w)
            abort();
        w->fd = info ? info->connect_fd : MHD_INVALID_SOCKET;
        atomic_init(&w->header_deadline_ns, now_ns() + s->header_timeout_ns);
        atomic_init(&w->reply_check_ns, 0);
        atomic_init(&w->acked, 0);
        pthread_mutex_lock(&s->watch_lock);
        w->next = s->watched;
        if (s->watched)
            s->watched->prev = w;
        s->watched = w;
        pthread_mutex_unlock(&s->watch_lock);
        *socket_context = w;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        watched *w = *socket_context;
        pthread_mutex_lock(&s->watch_lock);
        if (w->prev)
            w->prev->next = w->next;
        else
            s->watched = w->next;
        if (w->next)
            w->next->prev = w->prev;
        pthread_mutex_unlock(&s->watch_lock);
        free(w);
        *socket_context = NULL;
    }
}

static watched *watched_of(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

/* Bytes of the reply the client has acknowledged so far, and whether any are still on their
 * way (sent but not acknowledged, or queued in the socket). -1 when the kernel cannot say. */
static int64_t bytes_acked(MHD_socket fd, bool *outstanding)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (fd == MHD_INVALID_SOCKET || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_notsent_bytes) + sizeof ti.tcpi_notsent_bytes)
        return -1;
    *outstanding = ti.tcpi_unacked > 0 || ti.tcpi_notsent_bytes > 0;
    return (int64_t)ti.tcpi_bytes_acked;
}

/* A large reply is checked every io_timeout: if the client acknowledged nothing since the last
 * check while bytes wait for it, it is cut. Anything else (progress, or nothing outstanding:
 * then the server itself is slow) moves the next check on. */
static void check_reply(http_server *s, watched *w, int64_t check, int64_t now)
{
    bool outstanding = false;
    int64_t acked = bytes_acked(w->fd, &outstanding);
    bool stalled = acked >= 0 && outstanding && (uint64_t)acked == atomic_load(&w->acked);
    if (stalled) {
        if (atomic_compare_exchange_strong(&w->reply_check_ns, &check, 0))
            shutdown(w->fd, SHUT_RDWR);
    } else if (atomic_compare_exchange_strong(&w->reply_check_ns, &check,
                                              now + s->io_timeout_ns)) {
        atomic_store(&w->acked, acked >= 0 ? (uint64_t)acked : 0);
    }
}

/* Deadlines are always "now + header_timeout" or "now + io_timeout" and the watchdog never
 * sleeps longer than the smaller of the two, so one set while it sleeps is never earlier
 * than its wake-up: nothing needs to wake it but stopping. */
static void *watchdog_main(void *arg)
{
    http_server *s = arg;
    int64_t nap = s->header_timeout_ns < s->io_timeout_ns ? s->header_timeout_ns
                                                          : s->io_timeout_ns;
    pthread_mutex_lock(&s->watch_lock);
    while (!s->watch_stopping) {
        int64_t now = now_ns(), next = now + nap;
        for (watched *w = s->watched; w; w = w->next) {
            int64_t deadline = atomic_load(&w->header_deadline_ns);
            if (deadline && deadline <= now) {
                /* Lost only to headers that arrived this very moment: then they were late. */
                if (atomic_compare_exchange_strong(&w->header_deadline_ns, &deadline, 0) &&
                    w->fd != MHD_INVALID_SOCKET)
                    shutdown(w->fd, SHUT_RDWR);
                continue;
            }
            if (deadline && deadline < next)
                next = deadline;
            int64_t check = atomic_load(&w->reply_check_ns);
            if (check && check <= now)
                check_reply(s, w, check, now);
            check = atomic_load(&w->reply_check_ns);
            if (check && check < next)
                next = check;
        }
        struct timespec until = {.tv_sec = (time_t)(next / 1000000000),
                                 .tv_nsec = (long)(next % 1000000000)};
        pthread_cond_timedwait(&s->watch_wake, &s->watch_lock, &until);
    }
    pthread_mutex_unlock(&s->watch_lock);
    return NULL;
}

static void stop_watchdog(http_server *s)
{
    if (s->watchdog_started) {
        pthread_mutex_lock(&s->watch_lock);
        s->watch_stopping = true;
        pthread_cond_signal(&s->watch_wake);
        pthread_mutex_unlock(&s->watch_lock);
        pthread_join(s->watchdog, NULL);
        s->watchdog_started = false;
    }
    /* libmicrohttpd reported every connection closed when it stopped; nothing is left. */
    while (s->watched) {
        watched *w = s->watched;
        s->watched = w->next;
        free(w);
    }
    pthread_mutex_destroy(&s->watch_lock);
    pthread_cond_destroy(&s->watch_wake);
}

/* Headers are in: the header clock stops (event-loop thread). */
static void watch_request_started(struct MHD_Connection *connection)
{
    watched *w = watched_of(connection);
    if (w)
        atomic_store(&w->header_deadline_ns, 0);
}

/* A reply larger than socket buffers comfortably hold is watched for acknowledged bytes
 * instead of libmicrohttpd's inactivity timeout, which only sees the moments the kernel takes
 * more data: with megabytes of socket buffer, a client reading slowly but steadily would look
 * idle for minutes. */
static void watch_reply_started(http_request *req)
{
    watched *w = watched_of(req->connection);
    if (!w || (req->response_bytes >= 0 && req->response_bytes <= WATCHED_REPLY_MIN))
        return;
    bool outstanding;
    int64_t acked = bytes_acked(w->fd, &outstanding);
    if (acked < 0)
        return; /* libmicrohttpd's timeout stays */
    atomic_store(&w->acked, (uint64_t)acked);
    atomic_store(&w->reply_check_ns, now_ns() + req->server->io_timeout_ns);
    MHD_set_connection_option(req->connection, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    w->inactivity_timeout_off = true;
}

/* A request ended and the connection stays: the next header is due within header_timeout,
 * and libmicrohttpd's inactivity timeout is back for the next body (event-loop thread). */
static void watch_request_completed(http_server *s, struct MHD_Connection *connection)
{
    watched *w = watched_of(connection);
    if (!w)
        return;
    atomic_store(&w->reply_check_ns, 0);
    if (w->inactivity_timeout_off) {
        MHD_set_connection_option(connection, MHD_CONNECTION_OPTION_TIMEOUT, s->io_timeout);
        w->inactivity_timeout_off = false;
    }
    atomic_store(&w->header_deadline_ns, now_ns() + s->header_timeout_ns);
}

static void queue_pending(http_request *req)
{
    if (!req->response || req->queued)
        return;
    req->queued = true;
    if (MHD_queue_response(req->connection, (unsigned)req->status, req->response) != MHD_YES)
        log_warn("could not queue response %d for %s %s", req->status, req->method, req->path);
    else
        watch_reply_started(req);
    MHD_destroy_response(req->response);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    http_server *server = cls;
    http_request *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        *con_cls = req;
        req->server = server;
        req->connection = connection;
        req->start_ns = now_ns();
        watch_request_started(connection);
        snprintf(req->method, sizeof req->method, "%s", method);
        req->path = strdup(url);
        make_request_id(req->request_id);
        int status;
        const char *framing_error = framing_problem(connection, &status);
        if (framing_error) {
            /* Replying now, before the body, makes libmicrohttpd close the connection after
             * the reply; the header says so to the client. */
            http_add_header(req, "Connection", "close");
            http_reply_errorf(req, status, status == 400 ? "BadRequest" : "NotImplemented", "%s",
                              framing_error);
            queue_pending(req);
            return MHD_YES;
        }
        MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, collect_param, req);
        req->handler = server->config.dispatch(req, server->config.app);
        if (!req->handler && !req->replied)
            http_reply_errorf(req, 500, "", "no handler for %s %s", method, url);
        if (req->replied)
            queue_pending(req);
        return MHD_YES;
    }

    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->replied || !req->handler)
            return MHD_YES; /* discarding the rest of a rejected body */
        if (req->handler->body_chunk) {
            if (req->handler->body_chunk(req, upload_data, n, req->handler->ctx) != 0 &&
                !req->replied)
                http_reply_errorf(req, 400, "", "upload rejected");
        } else if (req->body.len + n > req->handler->max_body) {
            http_reply_errorf(req, 413, "", "request body larger than %zu bytes",
                              req->handler->max_body);
        } else {
            buf_append(&req->body, upload_data, n);
        }
        return MHD_YES;
    }

    if (!req->replied && req->handler && req->handler->offload && !req->offloaded) {
        /* A worker runs the handler; libmicrohttpd calls us again once it resumes us. */
        req->offloaded = true;
        MHD_suspend_connection(connection);
        job *j = malloc(sizeof *j);
        if (!j)
            abort();
        j->req = req;
        j->next = NULL;
        pthread_mutex_lock(&server->lock);
        if (server->tail)
            server->tail->next = j;
        else
            server->head = j;
        server->tail = j;
        pthread_cond_signal(&server->wake);
        pthread_mutex_unlock(&server->lock);
        return MHD_YES;
    }
    if (!req->replied && req->handler && !req->offloaded)
        req->handler->handle(req, req->handler->ctx);
    if (!req->replied)
        http_reply_errorf(req, 500, "", "the handler did not reply");
    queue_pending(req);
    return MHD_YES;
}

static void *worker_main(void *arg)
{
    http_server *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stopping)
            pthread_cond_wait(&s->wake, &s->lock);
        job *j = s->head;
        if (!j)
            break; /* stopping, nothing left */
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        pthread_mutex_unlock(&s->lock);
        http_request *req = j->req;
        free(j);
        req->handler->handle(req, req->handler->ctx);
        MHD_resume_connection(req->connection);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_request *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    bool ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (ok)
        watch_request_completed(req->server, connection);
    if (req->handler && req->handler->cleanup)
        req->handler->cleanup(req, req->handler->ctx, ok);
    double ms = (double)(now_ns() - req->start_ns) / 1e6;
    log_info("%s %s %d %lld %.1fms%s", req->method, req->path, req->status,
             (long long)req->response_bytes, ms, ok ? "" : " (client went away)");
    request_free(req);
}

static void stop_workers(http_server *s)
{
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i], NULL);
    free(s->workers);
    s->workers = NULL;
    s->nworkers = 0;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
}

http_server *http_server_start(const http_config *config, err *e)
{
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->config = *config;
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)config->port);
    if (inet_pton(AF_INET, config->host, &addr.sin_addr) != 1) {
        free(s);
        err_set(e, 400, "", "invalid listen address '%s' (expected an IPv4 address)",
                config->host);
        return NULL;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_TURBO |
                     MHD_ALLOW_SUSPEND_RESUME;
    unsigned header_timeout = config->header_timeout ? config->header_timeout : 10u;
    unsigned io_timeout = config->io_timeout ? config->io_timeout : 120u;
    int per_address = config->max_connections_per_address;
    unsigned per_address_limit = per_address < 0 ? 0u : per_address ? (unsigned)per_address : 64u;
    s->header_timeout_ns = (int64_t)header_timeout * 1000000000;
    snprintf(s->keep_alive, sizeof s->keep_alive, "timeout=%u", header_timeout);
    s->io_timeout = io_timeout;
    s->io_timeout_ns = (int64_t)io_timeout * 1000000000;
    pthread_mutex_init(&s->watch_lock, NULL);
    pthread_condattr_t clock;
    pthread_condattr_init(&clock);
    pthread_condattr_setclock(&clock, CLOCK_MONOTONIC);
    pthread_cond_init(&s->watch_wake, &clock);
    pthread_condattr_destroy(&clock);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    s->nworkers = config->workers ? config->workers : 8;
    s->workers = calloc(s->nworkers, sizeof *s->workers);
    if (!s->workers)
        abort();
    for (unsigned i = 0; i < s->nworkers; i++)
        pthread_create(&s->workers[i], NULL, worker_main, s);
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)config->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        s, MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_CONNECTION_LIMIT,
        config->max_connections ? config->max_connections : 1024u,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_address_limit,
        /* inactivity: a body or a reply that stalls; headers have their own deadline */
        MHD_OPTION_CONNECTION_TIMEOUT, io_timeout, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        /* MHD_OPTION_CONNECTION_MEMORY_LIMIT stays at its 32 KiB: libmicrohttpd 0.9.75 zeroes
         * the whole connection pool before every request on a kept-alive connection, so a
         * larger pool (fewer reads per upload) costs more on small requests than it saves. */
        MHD_OPTION_THREAD_POOL_SIZE, config->threads ? config->threads : 4u,
        MHD_OPTION_END);
    if (!s->daemon) {
        err_set(e, 500, "", "cannot listen on %s:%d: %s", config->host, config->port,
                strerror(errno));
        stop_workers(s);
        stop_watchdog(s);
        free(s);
        return NULL;
    }
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0)
        abort();
    s->watchdog_started = true;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : config->port;
    return s;
}

int http_server_port(const http_server *s) { return s->port; }

void http_server_stop(http_server *s)
{
    if (!s)
        return;
    /* Stop taking connections, let the workers finish (they resume their connections), then
     * close the rest. */
    MHD_socket listener = MHD_quiesce_daemon(s->daemon);
    stop_workers(s);
    MHD_stop_daemon(s->daemon);
    stop_watchdog(s);
    if (listener != MHD_INVALID_SOCKET)
        close(listener);
    free(s);
}

/* ---- request accessors ---------------------------------------------------------------- */

const char *http_method(const http_request *req) { return req->method; }
bool http_is_head(const http_request *req) { return !strcmp(req->method, "HEAD"); }
const char *http_path(const http_request *req) { return req->path; }

void http_client_address(const http_request *req, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (!info || !info->client_addr)
        return;
    const struct sockaddr *sa = info->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
}

const char *http_header(const http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *http_query(const http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nparams; i++)
        if (!strcmp(req->params[i].name, name))
            return req->params[i].value;
    return NULL;
}

size_t http_query_all(const http_request *req, const char *name, const char **out, size_t max)
{
    size_t n = 0, len = strlen(name);
    for (size_t i = 0; i < req->nparams && n < max; i++) {
        const char *k = req->params[i].name;
        if (!strcmp(k, name) || (!strncmp(k, name, len) && !strcmp(k + len, "[]")))
            out[n++] = req->params[i].value;
    }
    return n;
}

void http_query_without(const http_request *req, const char *skip, buf *out)
{
    for (size_t i = 0; i < req->nparams; i++) {
        if (!strcmp(req->params[i].name, skip))
            continue;
        if (out->len)
            buf_putc(out, '&');
        text_percent_encode(out, req->params[i].name, false);
        buf_putc(out, '=');
        text_percent_encode(out, req->params[i].value, false);
    }
}

const buf *http_body(const http_request *req) { return &req->body; }

const char *http_base_url(const http_request *req)
{
    http_request *r = (http_request *)req;
    if (r->base_url[0])
        return r->base_url;
    const char *configured = r->server->config.public_url;
    if (configured && *configured) {
        snprintf(r->base_url, sizeof r->base_url, "%s", configured);
    } else {
        const char *host = http_header(req, "Host");
        bool sane = host && *host && strlen(host) < 200 && !strpbrk(host, " /\\\"<>\r\n");
        if (sane)
            snprintf(r->base_url, sizeof r->base_url, "http://%s", host);
        else
            snprintf(r->base_url, sizeof r->base_url, "http://%s:%d", r->server->config.host,
                     r->server->port);
    }
    size_t n = strlen(r->base_url);
    while (n && r->base_url[n - 1] == '/')
        r->base_url[--n] = '\0';
    return r->base_url;
}

const char *http_request_id(const http_request *req) { return req->request_id; }
void http_set_app_data(http_request *req, void *data) { req->app_data = data; }
void *http_app_data(const http_request *req) { return req->app_data; }
bool http_replied(const http_request *req) { return req->replied; }

/* ---- replies --------------------------------------------------------------------------- */

void http_add_header(http_request *req, const char *name, const char *value)
{
    buf_append(&req->headers, name, strlen(name) + 1);
    buf_append(&req->headers, value, strlen(value) + 1);
}

/* Attaches the collected headers and records the response for queueing. */
static void finish_reply(http_request *req, int status, struct MHD_Response *response,
                         const char *content_type, int64_t bytes)
{
    if (!response) {
        log_error("could not create a response for %s %s", req->method, req->path);
        return;
    }
    if (content_type)
        MHD_add_response_header(response, "Content-Type", content_type);
    MHD_add_response_header(response, "X-Request-Id", req->request_id);
    /* Clients that read it (undici, browsers) drop an idle connection before we close it,
     * instead of racing our close with their next request. */
    MHD_add_response_header(response, "Keep-Alive", req->server->keep_alive);
    for (size_t off = 0; off < req->headers.len;) {
        const char *name = req->headers.data + off;
        const char *value = name + strlen(name) + 1;
        MHD_add_response_header(response, name, value);
        off = (size_t)(value + strlen(value) + 1 - req->headers.data);
    }
    if (req->response && !req->queued)
        MHD_destroy_response(req->response);
    req->response = response;
    req->status = status;
    req->response_bytes = http_is_head(req) ? 0 : bytes;
    req->replied = true;
}

void http_reply_bytes(http_request *req, int status, const char *content_type, const void *data,
                      size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    finish_reply(req, status, r, content_type, (int64_t)len);
}

void http_reply_json(http_request *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (!text) {
        http_reply_errorf(req, 500, "", "could not encode the reply");
        return;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    finish_reply(req, status, r, "application/json", (int64_t)strlen(text));
}

void http_reply_error(http_request *req, const err *e)
{
    int status = e && e->status ? e->status : 500;
    const char *message = e && e->message[0] ? e->message : "internal error";
    if (e && e->code[0])
        http_add_header(req, "X-Error-Code", e->code);
    /* Header values cannot carry newlines. */
    char flat[512];
    snprintf(flat, sizeof flat, "%s", message);
    for (char *p = flat; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    http_add_header(req, "X-Error-Message", flat);
    if (status >= 500)
        log_error("%s %s -> %d: %s", req->method, req->path, status, message);
    http_reply_json(req, status, json_pack("{s:s}", "error", message));
}

void http_reply_errorf(http_request *req, int status, const char *code, const char *fmt, ...)
{
    err e = ERR_INIT;
    e.status = status;
    snprintf(e.code, sizeof e.code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    http_reply_error(req, &e);
}

void http_reply_fd(http_request *req, int status, const char *content_type, int fd,
                   int64_t offset, int64_t length)
{
    struct MHD_Response *r =
        MHD_create_response_from_fd_at_offset64((uint64_t)length, fd, (uint64_t)offset);
    if (!r)
        close(fd);
    finish_reply(req, status, r, content_type, length);
}

typedef struct reader_ctx {
    http_reader_fn read;
    void *ctx;
    void (*free_ctx)(void *);
} reader_ctx;

static ssize_t reader_cb(void *cls, uint64_t pos, char *out, size_t max)
{
    reader_ctx *rc = cls;
    ssize_t n = rc->read(rc->ctx, pos, out, max);
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    return n;
}

static void reader_free(void *cls)
{
    reader_ctx *rc = cls;
    if (rc->free_ctx)
        rc->free_ctx(rc->ctx);
    free(rc);
}

void http_reply_reader(http_request *req, int status, const char *content_type, int64_t length,
                       http_reader_fn read, void *ctx, void (*free_ctx)(void *))
{
    reader_ctx *rc = malloc(sizeof *rc);
    if (!rc)
        abort();
    rc->read = read;
    rc->ctx = ctx;
    rc->free_ctx = free_ctx;
    struct MHD_Response *r = MHD_create_response_from_callback(
        length < 0 ? MHD_SIZE_UNKNOWN : (uint64_t)length, 1024 * 1024, reader_cb, rc, reader_free);
    if (!r)
        reader_free(rc);
    finish_reply(req, status, r, content_type, length);
}

/* ---- ranges ---------------------------------------------------------------------------- */

http_range_result http_parse_range(const char *header, int64_t total, int64_t *first,
                                   int64_t *last)
{
    if (!header)
        return HTTP_RANGE_NONE;
    while (*header == ' ')
        header++;
    if (strncmp(header, "bytes=", 6) != 0)
        return HTTP_RANGE_NONE;
    const char *spec = header + 6;
    if (strchr(spec, ','))
        return HTTP_RANGE_NONE;
    const char *dash = strchr(spec, '-');
    if (!dash)
        return HTTP_RANGE_NONE;
    char a[24] = "", b[24] = "";
    size_t alen = (size_t)(dash - spec), blen = strlen(dash + 1);
    while (blen && dash[blen] == ' ')
        blen--;
    if (alen >= sizeof a || blen >= sizeof b)
        return HTTP_RANGE_NONE;
    memcpy(a, spec, alen);
    memcpy(b, dash + 1, blen);
    int64_t start, end;
    if (!alen) { /* suffix: the last n bytes */
        int64_t n = text_parse_i64(b);
        if (n < 0)
            return HTTP_RANGE_NONE;
        if (n == 0 || total == 0)
            return HTTP_RANGE_UNSATISFIABLE;
        start = n >= total ? 0 : total - n;
        end = total - 1;
    } else {
        start = text_parse_i64(a);
        if (start < 0)
            return HTTP_RANGE_NONE;
        if (blen) {
            end = text_parse_i64(b);
            if (end < 0 || end < start)
                return HTTP_RANGE_NONE;
        } else {
            end = total - 1;
        }
        if (start >= total)
            return HTTP_RANGE_UNSATISFIABLE;
        if (end >= total)
            end = total - 1;
    }
    *first = start;
    *last = end;
    return HTTP_RANGE_OK;
}
