/* base — dependency-free helpers every other module uses.
 *
 * Owns nothing global except the log sink. Provides:
 *   buf   a growable byte buffer, always NUL-terminated (git's strbuf in spirit)
 *   err   an error value carrying an HTTP status, a machine code (X-Error-Code) and a message,
 *         so that any layer can fail and the HTTP layer can turn the failure into a reply
 *   log   one-line structured logging to stderr
 *   path  validation of repository-relative paths and safe joins under a root
 *   text  hex, percent-decoding, base64, ISO-8601 dates, small string helpers
 *   data  the layout of a data directory (which file lives where)
 *   hash  streaming SHA-256 / SHA-1 (git blob ids), HMAC-SHA256, random bytes (OpenSSL)
 *
 * Ownership: a buf owns its bytes (buf_free). An err owns nothing (fixed-size message).
 */
#ifndef HEARTH_BASE_H
#define HEARTH_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- memory ---------------------------------------------------------------------------
 * The out-of-memory rule, once for the whole program: a failed allocation of ordinary size ends
 * the process (abort), so callers never check. Allocations whose size a client controls (a
 * whole model, a request body) are bounded before they are made, and may use malloc and
 * report 507 / 413 instead. */

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Makes room for element `len` of the array `items` (capacity `cap`), growing it geometrically
 * (git's ALLOC_GROW): ARRAY_GROW(list->items, list->n, list->cap); list->items[list->n++] = x; */
#define ARRAY_GROW(items, len, cap)                                                          \
    do {                                                                                     \
        if ((len) >= (cap)) {                                                                \
            (cap) = (cap) ? (cap) * 2 : 16;                                                  \
            (items) = xrealloc((items), (cap) * sizeof *(items));                            \
        }                                                                                    \
    } while (0)

/* ---- buf ----------------------------------------------------------------------------- */

typedef struct buf {
    char *data;   /* NUL-terminated when len > 0 or after any append; may be NULL when empty */
    size_t len;
    size_t cap;
} buf;

#define BUF_INIT {NULL, 0, 0}

void buf_reserve(buf *b, size_t extra);
void buf_append(buf *b, const void *data, size_t len);
void buf_puts(buf *b, const char *s);
void buf_putc(buf *b, char c);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(buf *b, const char *fmt, va_list ap);
void buf_reset(buf *b);
/* Hands the bytes to the caller (who frees them) and leaves b empty. Never NULL. */
char *buf_detach(buf *b);
void buf_free(buf *b);
/* Returns b's text, "" when empty. */
const char *buf_str(const buf *b);

/* ---- err ----------------------------------------------------------------------------- */

typedef struct err {
    int status;        /* HTTP status; 0 = no error */
    char code[40];     /* X-Error-Code, "" when none */
    char message[512];
} err;

#define ERR_INIT {0, "", ""}

/* Sets e (when e != NULL) and returns -1, so that `return err_set(...)` reads naturally. */
int err_set(err *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void err_clear(err *e);
bool err_is_set(const err *e);

/* ---- log ----------------------------------------------------------------------------- */

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;
void log_set_level(log_level level);
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* ---- path ---------------------------------------------------------------------------- */

/* True when p is a valid path inside a repository: relative, '/'-separated, no empty, "." or
 * ".." segment, no backslash, no NUL (len-checked), no control characters, not under ".git/",
 * at most 4096 bytes. */
bool path_is_valid_repo_path(const char *p, size_t len);
/* True when name is usable as one component of a repo id (namespace or repo name):
 * [A-Za-z0-9._-], 1..96 chars, not starting or ending with '.' or '-', no "..", no "--". */
bool path_is_valid_repo_name(const char *name);
/* Joins root and rel (rel already validated) into out. */
void path_join(buf *out, const char *root, const char *rel);
/* mkdir -p; returns 0 or -1 with errno. */
int path_mkdirs(const char *dir, int mode);
/* Writes data to path atomically: temp file in the same directory, fsync, rename, fsync dir. */
int path_write_atomic(const char *path, const void *data, size_t len, err *e);
/* write() until all of data is written (retrying EINTR). 0, or -1 with errno. */
int path_write_all(int fd, const void *data, size_t len);
/* fsyncs the directory that holds path. */
int path_fsync_parent(const char *path);
/* Removes a directory tree (rm -rf). Returns 0, or -1 with errno. */
int path_remove_tree(const char *dir);
/* Reads a whole small file into out. Returns 0 or -1 (errno set). */
int path_read_file(const char *path, buf *out);

/* ---- text ---------------------------------------------------------------------------- */

void hex_encode(const uint8_t *bytes, size_t n, char *out /* 2n+1 */);
/* Returns 0 on success; out must hold n bytes; hex must be exactly 2n hex digits. */
int hex_decode(const char *hex, uint8_t *out, size_t n);
bool text_is_hex(const char *s, size_t len);
/* Percent-decodes s[0..len) into out. '+' stays '+' unless plus_is_space. Returns -1 on a bad
 * escape or an embedded NUL. */
int text_percent_decode(const char *s, size_t len, bool plus_is_space, buf *out);
/* Percent-encodes for a URL path segment (keeps unreserved chars; keeps '/' when keep_slash). */
void text_percent_encode(buf *out, const char *s, bool keep_slash);
/* Formats unix ms as 2024-05-01T12:00:00.000Z into out[25]. */
void text_iso8601(int64_t unix_ms, char out[32]);
int64_t text_now_ms(void);
bool text_starts_with(const char *s, const char *prefix);
bool text_ends_with(const char *s, const char *suffix);
/* True for "1", "true", "True", "yes". */
bool text_truthy(const char *s);
/* Parses a non-negative decimal int64; returns -1 when invalid. */
int64_t text_parse_i64(const char *s);
/* Decodes standard base64 (RFC 4648 alphabet, no whitespace, '=' only as the last one or two
 * characters) and appends the bytes to out. -1 when in is not exactly that ("====" is not). */
int text_base64_decode(const char *in, size_t len, buf *out);

/* ---- data directory layout (layout.c) -------------------------------------------------- */

typedef enum {
    DATA_DB,          /* hearth.db */
    DATA_STORE,       /* lfs/ */
    DATA_REPOS,       /* repos/ */
    DATA_UPLOADS,     /* uploads/ */
    DATA_HOOKS,       /* hooks/ */
    DATA_SNAPSHOTS,   /* snapshots/ */
    DATA_SECRET,      /* secret */
} data_part;

/* DIR/<part>, appended to out. */
void data_path(buf *out, const char *data_dir, data_part part);
/* DIR/repos/<uid>.git, appended to out. */
void data_repo_path(buf *out, const char *data_dir, const char *uid);
/* Creates the directories a hub needs (repos, lfs, uploads). 500 on failure. */
int data_dir_prepare(const char *data_dir, err *e);

/* ---- hash ---------------------------------------------------------------------------- */

typedef struct hash_ctx hash_ctx;   /* opaque OpenSSL digest context */
hash_ctx *hash_sha256_new(void);
hash_ctx *hash_sha1_new(void);
/* A copy of h's state, to be finished or freed on its own. */
hash_ctx *hash_copy(const hash_ctx *h);
void hash_update(hash_ctx *h, const void *data, size_t len);
/* Finishes, writes lowercase hex (65 bytes for SHA-256, 41 for SHA-1) and frees h. */
void hash_final_hex(hash_ctx *h, char *hex_out);
void hash_free(hash_ctx *h);
void hash_sha256_hex(const void *data, size_t len, char out[65]);
/* git blob id of content: sha1("blob <len>\0" + content). */
void hash_git_blob_hex(const void *data, size_t len, char out[41]);
void hash_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                      uint8_t out[32]);
/* Constant-time comparison of two NUL-terminated strings. */
bool hash_equal_ct(const char *a, const char *b);
/* Cryptographically random bytes; aborts the process if the system has none. */
void hash_random(void *out, size_t n);

#endif
