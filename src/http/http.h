/* http — the HTTP server on libmicrohttpd: request context, dispatch, and replies.
 *
 * The server owns one libmicrohttpd daemon: a small pool of threads, each running an epoll
 * loop over many connections (a thread per connection spends most of its time switching
 * threads). Handlers run on those loops and may block only briefly (a lookup, a small read).
 * Handlers marked `offload` (commits, fsyncs, git processes, large verifications) run on a
 * separate pool of worker threads while their connection is suspended, so that a slow
 * operation never stalls the other connections of its loop. For each request the server calls
 * the application's dispatch function once the headers are in; dispatch either replies at once
 * (errors, small GETs) or returns a handler that receives the body — buffered up to a limit, or
 * streamed chunk by chunk for uploads — and replies when the body is complete.
 *
 * Requests whose body length is ambiguous (two Content-Length headers, Content-Length beside
 * Transfer-Encoding, a transfer coding other than chunked) are answered 400 (501 for an unknown
 * coding) before dispatch, and their connection is closed (RFC 9112 section 6.3).
 *
 * Slow or idle clients are bounded: a request header must arrive within config.header_timeout
 * of the connection becoming ready for it (a watchdog thread closes connections that miss it),
 * a body or a reply may pause at most config.io_timeout (libmicrohttpd's inactivity timeout for
 * bodies, acknowledged bytes for large replies),
 * and one address may hold at most config.max_connections_per_address connections.
 *
 * Paths are kept raw (not percent-decoded) so that routes can tell "%2F" from "/"; query
 * parameters are decoded. Every reply gets an X-Request-Id; errors become JSON
 * {"error": ...} with X-Error-Code and X-Error-Message, as the Hub's clients expect.
 *
 * Ownership: the request and its body belong to the server; handlers borrow them for the
 * duration of the request. Reply functions take ownership of what they are given (json_t
 * references, fds) as documented below.
 */
#ifndef HEARTH_HTTP_H
#define HEARTH_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/base.h"

typedef struct http_server http_server;
typedef struct http_request http_request;

typedef struct http_handler {
    /* Called once the whole body has arrived (or at once for requests without a body).
     * Must reply (any http_reply_* call). */
    void (*handle)(http_request *req, void *ctx);
    /* Optional streaming sink: called for each piece of the body instead of buffering it.
     * Returns 0, or -1 after replying with an error (the rest of the body is discarded). */
    int (*body_chunk)(http_request *req, const char *data, size_t len, void *ctx);
    /* Optional: called exactly once when the request ends, whether it completed or the client
     * went away (`completed` false): the place to remove temp files and free ctx. */
    void (*cleanup)(http_request *req, void *ctx, bool completed);
    /* Largest body accepted when buffering (body_chunk NULL); larger ones get 413. */
    size_t max_body;
    /* Run handle() on a worker thread: it may block (fsync, git, long CPU work). */
    bool offload;
    void *ctx;
} http_handler;

/* Called once per request when its headers are in. Either replies (and returns NULL) or
 * returns the handler that will receive the body. The returned pointer must stay valid for
 * the whole request (usually it points to a static table entry or into ctx). */
typedef const http_handler *(*http_dispatch_fn)(http_request *req, void *app);

typedef struct http_config {
    const char *host;         /* "127.0.0.1" */
    int port;                 /* 0 = pick a free port */
    const char *public_url;   /* base URL clients use; NULL = derived from the Host header */
    http_dispatch_fn dispatch;
    void *app;
    unsigned max_connections;
    /* Connections open at once from one address; 0 = 64, -1 = no limit. Beyond it a new
     * connection is closed as soon as it is accepted, without a reply. */
    int max_connections_per_address;
    /* Seconds a connection has to send a whole request header, counted from its opening or
     * from the end of its previous reply: it is also how long an idle keep-alive connection
     * stays open. Counted from the start, so a client trickling bytes is closed too. 0 = 10. */
    unsigned header_timeout;
    /* Seconds without progress after which a request body or a reply is cut: a body that
     * delivers nothing, or a reply (over 1 MiB) of which the client acknowledges nothing,
     * checked every io_timeout so cut within twice it. A slow transfer that keeps moving is
     * never cut. 0 = 120. */
    unsigned io_timeout;
    unsigned threads;         /* event-loop threads; 0 = 4 */
    unsigned workers;         /* threads for offloaded handlers; 0 = 8 */
} http_config;

http_server *http_server_start(const http_config *config, err *e);
int http_server_port(const http_server *s);
void http_server_stop(http_server *s);

/* ---- request ------------------------------------------------------------------------- */

const char *http_method(const http_request *req);   /* "GET", "HEAD", ... */
bool http_is_head(const http_request *req);
const char *http_path(const http_request *req);     /* raw, percent-encoded as received */
const char *http_header(const http_request *req, const char *name);   /* NULL when absent */
/* The client's IP address as text ("" when unknown), into out. */
void http_client_address(const http_request *req, char *out, size_t cap);
/* First value of a query parameter (decoded), NULL when absent. */
const char *http_query(const http_request *req, const char *name);
/* All values of a repeated parameter, including the `name[]` spelling. Returns the count. */
size_t http_query_all(const http_request *req, const char *name, const char **out, size_t max);
/* Appends the original query string without `cursor` to out ("a=1&b=2", re-encoded). */
void http_query_without(const http_request *req, const char *skip, buf *out);
const buf *http_body(const http_request *req);
/* The public base URL for links in replies: config.public_url or http://<Host>. */
const char *http_base_url(const http_request *req);
const char *http_request_id(const http_request *req);
/* Per-request slot for the application (e.g. the authenticated user). */
void http_set_app_data(http_request *req, void *data);
void *http_app_data(const http_request *req);
bool http_replied(const http_request *req);

/* ---- reply --------------------------------------------------------------------------- */

/* Adds a header to the reply that will be sent (call before http_reply_*). */
void http_add_header(http_request *req, const char *name, const char *value);
/* Takes the reference to body. */
void http_reply_json(http_request *req, int status, json_t *body);
void http_reply_bytes(http_request *req, int status, const char *content_type,
                      const void *data, size_t len);
/* {"error": message} with X-Error-Code / X-Error-Message from e; status 500 when e is unset. */
void http_reply_error(http_request *req, const err *e);
/* Shorthand for http_reply_error with a fresh error. */
void http_reply_errorf(http_request *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sends length bytes of fd from offset with sendfile; takes ownership of fd. */
void http_reply_fd(http_request *req, int status, const char *content_type, int fd,
                   int64_t offset, int64_t length);
/* Sends length bytes produced by read(ctx, pos, out, max) -> bytes or -1; free_ctx at end. */
typedef ssize_t (*http_reader_fn)(void *ctx, uint64_t pos, char *out, size_t max);
void http_reply_reader(http_request *req, int status, const char *content_type, int64_t length,
                       http_reader_fn read, void *ctx, void (*free_ctx)(void *));

/* ---- ranges -------------------------------------------------------------------------- */

typedef enum { HTTP_RANGE_NONE, HTTP_RANGE_OK, HTTP_RANGE_UNSATISFIABLE } http_range_result;
/* Parses a single "bytes=a-b" / "bytes=a-" / "bytes=-n" Range header against total.
 * Multi-range or malformed headers are ignored (NONE: serve the whole body), as RFC 9110
 * allows. On OK, *first and *last are inclusive byte positions. */
http_range_result http_parse_range(const char *header, int64_t total, int64_t *first,
                                   int64_t *last);

#endif
