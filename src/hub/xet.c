/* xet — the Xet protocol (spec/hub-api.md §9): CAS access tokens on the hub, and the CAS API
 * itself, served by Hearth under <base>/cas in front of the dedup store.
 *
 * Tokens. `xet-read-token` / `xet-write-token` hand out a short-lived CAS token bound to one
 * repo (its row id and immutable uid) and to the caller that asked (user and Hub token id, 0
 * for anonymous), a scope and an expiry, HMAC-signed with the hub secret:
 * "xet2_<r|w|p>_<repo id>_<repo uid>_<user id>_<token id>_<exp>_<hmac>". Nothing is kept
 * server-side, so tokens survive restarts and need no cleanup; instead every CAS call checks
 * the string and then the access it stands for, again (hub_grant_recheck), so a repo made
 * private or deleted, or a revoked Hub token, ends it at once. A write token also reads.
 *
 * CAS. Xorbs are global (content-addressed, checked chunk by chunk by the store); files are
 * not: a file registered from a shard is linked to the token's repo (db_repo_object_add), and a
 * reconstruction is only given for a file linked to the token's repo, exactly as LFS objects
 * are scoped. Registering needs proof of possession: verification entries over the real chunk
 * hashes of every term, so chunk hashes are secrets, and the global dedup reply gives them out
 * only keyed (hub_cas_chunk). Reconstructions point at signed URLs served by Hearth itself
 * (<casUrl>/xorb/<hash>?r=<ranges>&g=<repo>&u=<user>&t=<token>&exp=..&sig=..), each granting
 * exactly the byte ranges of one pack that the reconstruction needs, to the token's caller:
 * packs are shared between repos, so a URL must not open a whole pack, and it is rechecked at
 * use like a token. Those URLs take one Range (sendfile) or several (multipart/byteranges).
 *
 * Xet is advertised (X-Xet-Hash on resolve, xetHash in trees, "xet" in the LFS batch) only
 * when the store supports it (hub_xet_enabled); otherwise every client uses plain HTTP.
 */
#include "hub/internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define XET_TOKEN_TTL 3600         /* seconds a CAS access token lives */
#define XET_URL_TTL 3600           /* seconds a signed xorb range URL lives */
/* How long a client may keep using a global dedup shard (its footer's key_expiry; xet-core
 * skips expired shards of its cache). Short, so that a cached shard rarely outlives a pack
 * that gc removed: an upload naming such a pack would be refused. */
#define XET_DEDUP_SHARD_TTL 3600
#define XET_MAX_RANGES 256         /* ranges accepted in one xorb GET */
#define XET_BATCH_MAX_FILES 256    /* files in one batch reconstruction */

/* ---- is Xet available? ------------------------------------------------------------------ */

static pthread_mutex_t enabled_lock = PTHREAD_MUTEX_INITIALIZER;
static const store *enabled_store;
static bool enabled_value;

bool hub_xet_enabled(hub *h)
{
    const char *off = getenv("HEARTH_DISABLE_XET");
    if (off && text_truthy(off))
        return false;
    pthread_mutex_lock(&enabled_lock);
    if (enabled_store != h->store) {
        /* A store without Xet answers 501 to Xet calls; one with it says "unknown xorb". */
        xet_hash zero = {{0}};
        xet_chunk *chunks = NULL;
        size_t n = 0;
        err e = ERR_INIT;
        int rc = store_xorb_chunks(h->store, &zero, &chunks, &n, &e);
        free(chunks);
        enabled_value = !(rc < 0 && e.status == 501);
        enabled_store = h->store;
    }
    bool v = enabled_value;
    pthread_mutex_unlock(&enabled_lock);
    return v;
}

/* ---- tokens -------------------------------------------------------------------------------- */

/* The MAC covers everything the token names: scope, repo (id and uid), caller, expiry. */
static void token_sign(const hub *h, char scope, const hub_grant *g, int64_t exp, char sig[65])
{
    char purpose[16], subject[96];
    snprintf(purpose, sizeof purpose, "xet2-%c", scope);
    snprintf(subject, sizeof subject, "%lld\n%lld\n%lld", (long long)g->repo_id,
             (long long)g->user_id, (long long)g->token_id);
    hub_sign(h, purpose, g->uid, subject, 0, exp, sig);
}

static bool scope_is_valid(char scope)
{
    return scope == HUB_XET_READ || scope == HUB_XET_WRITE || scope == HUB_XET_PR;
}

void hub_xet_token_make(const hub *h, char scope, const hub_grant *g, int64_t exp, buf *out)
{
    char sig[65];
    token_sign(h, scope, g, exp, sig);
    buf_printf(out, "xet2_%c_%lld_%s_%lld_%lld_%lld_%s", scope, (long long)g->repo_id, g->uid,
               (long long)g->user_id, (long long)g->token_id, (long long)exp, sig);
}

/* Parses and checks a token string. 0, or -1 when it is malformed, forged or expired. (Only
 * the string: whether its caller may still use the repo is cas_auth's recheck.) */
int hub_xet_token_check(const hub *h, const char *token, int64_t now, hub_xet_grant *out)
{
    memset(out, 0, sizeof *out);
    char scope = 0, uid[64] = "", sig[80] = "";
    long long id = -1, user = -1, tok = -1, exp = -1;
    int used = 0;
    if (!token || strlen(token) > 256 ||
        sscanf(token, "xet2_%c_%lld_%24[0-9a-f]_%lld_%lld_%lld_%64[0-9a-f]%n", &scope, &id, uid,
               &user, &tok, &exp, sig, &used) != 7 ||
        token[used] != '\0' || !scope_is_valid(scope) || id < 0 || user < 0 || tok < 0 ||
        exp < 0 || strlen(uid) != 24 || strlen(sig) != 64)
        return -1;
    hub_grant g = {.repo_id = id, .user_id = user, .token_id = tok};
    memcpy(g.uid, uid, 25); /* 24 hex digits, checked above, and the NUL */
    char want[65];
    token_sign(h, scope, &g, exp, want);
    if (!hash_equal_ct(want, sig) || exp < now)
        return -1;
    out->scope = scope;
    out->grant = g;
    out->exp = exp;
    return 0;
}

static void cas_url(http_request *req, buf *out) { buf_printf(out, "%s/cas", http_base_url(req)); }

/* The refresh route clients call for a token: /api/{type}s/{id}/xet-{read,write}-token/{rev}. */
static void token_route(http_request *req, const char *type, const char *ns, const char *name,
                        bool write, const char *rev, buf *out)
{
    buf_printf(out, "%s/api/%ss/", http_base_url(req), type);
    text_percent_encode(out, ns, false);
    buf_putc(out, '/');
    text_percent_encode(out, name, false);
    buf_printf(out, "/xet-%s-token/", write ? "write" : "read");
    text_percent_encode(out, rev, false);
}

/* GET /api/{type}s/{id}/xet-{read,write}-token/{rev}[?create_pr=1] (call->extra = which). */
void hub_xet_token(http_request *req, hub_call *call)
{
    hub *h = call->hub;
    bool write = call->extra && !strcmp(call->extra, "xet-write-token");
    bool create_pr = text_truthy(http_query(req, "create_pr"));
    /* Reads (and pull-request writes by readers) need the files, not only the listing, of a
     * gated repo: the same rule cas_auth checks again at every call. */
    if ((write && !create_pr ? hub_load_repo(req, call, true) : hub_load_repo_files(req, call)) != 0)
        return;
    if (write && create_pr && !call->caller.authenticated) {
        http_reply_errorf(req, 401, "", "You must be authenticated to open a pull request");
        return;
    }
    if (!hub_xet_enabled(h)) {
        http_reply_errorf(req, 501, "", "this Hearth server has no Xet storage; upload with "
                                        "HF_HUB_DISABLE_XET=1");
        return;
    }
    /* Py >= 1.20 asks for ".../xet-write-token/None?create_pr=1": no revision to check. Reads
     * name the commit a resolve answered with; writes may target a branch not yet created. */
    if (!write && call->rev && *call->rev && strcmp(call->rev, "None") != 0) {
        repo *r = hub_open_git(req, call);
        if (!r)
            return;
        char sha[41];
        int rc = hub_resolve_rev(req, call, r, sha);
        hub_close_git(r);
        if (rc != 0)
            return;
    }
    int64_t exp = (int64_t)time(NULL) + XET_TOKEN_TTL;
    buf token = BUF_INIT, url = BUF_INIT;
    char exp_text[32];
    hub_grant g;
    hub_grant_of(call, &g);
    char scope = !write ? HUB_XET_READ
                 : auth_can_write(&call->caller, &call->repo) ? HUB_XET_WRITE : HUB_XET_PR;
    hub_xet_token_make(h, scope, &g, exp, &token);
    cas_url(req, &url);
    snprintf(exp_text, sizeof exp_text, "%lld", (long long)exp);
    /* huggingface_hub reads the headers, hf_xet and the npm client the JSON body. */
    http_add_header(req, "X-Xet-Cas-Url", url.data);
    http_add_header(req, "X-Xet-Access-Token", token.data);
    http_add_header(req, "X-Xet-Token-Expiration", exp_text);
    http_reply_json(req, 200, json_pack("{s:s, s:I, s:s}", "accessToken", token.data, "exp",
                                        (json_int_t)exp, "casUrl", url.data));
    buf_free(&token);
    buf_free(&url);
}

json_t *hub_xet_upload_actions(http_request *req, hub_call *call)
{
    int64_t exp = (int64_t)time(NULL) + XET_TOKEN_TTL;
    buf token = BUF_INIT, url = BUF_INIT, href = BUF_INIT;
    char exp_text[32], session[33];
    uint8_t rnd[16];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, session);
    hub_grant g;
    hub_grant_of(call, &g);
    hub_xet_token_make(call->hub,
                       auth_can_write(&call->caller, &call->repo) ? HUB_XET_WRITE : HUB_XET_PR,
                       &g, exp, &token);
    cas_url(req, &url);
    snprintf(exp_text, sizeof exp_text, "%lld", (long long)exp);
    token_route(req, call->type, call->ns, call->name, true, "main", &href);
    json_t *actions = json_pack(
        "{s:{s:s, s:{s:s, s:s, s:s, s:s}, s:i}}", "upload", "href", href.data, "header",
        "X-Xet-Cas-Url", url.data, "X-Xet-Access-Token", token.data, "X-Xet-Token-Expiration",
        exp_text, "X-Xet-Session-Id", session, "expires_in", XET_TOKEN_TTL);
    buf_free(&token);
    buf_free(&url);
    buf_free(&href);
    return actions;
}

/* ---- advertising Xet-backed files ---------------------------------------------------------- */

static int xet_hash_of(hub *h, const char *oid, char out[XET_HASH_STRING_LEN + 1])
{
    if (!hub_xet_enabled(h))
        return 1;
    xet_hash fh;
    err e = ERR_INIT;
    if (store_file_xet_hash(h->store, oid, &fh, &e) != 0)
        return 1;
    xet_hash_to_string(&fh, out);
    return 0;
}

void hub_xet_resolve_headers(http_request *req, hub_call *call, const char *oid,
                             const char *commit)
{
    char hash[XET_HASH_STRING_LEN + 1];
    if (xet_hash_of(call->hub, oid, hash) != 0)
        return;
    buf link = BUF_INIT, route = BUF_INIT;
    token_route(req, call->type, call->ns, call->name, false, commit, &route);
    buf_printf(&link, "<%s>; rel=\"xet-auth\", <%s/cas/v1/reconstructions/%s>; "
                      "rel=\"xet-reconstruction-info\"",
               route.data, http_base_url(req), hash);
    http_add_header(req, "X-Xet-Hash", hash);
    http_add_header(req, "Link", link.data);
    buf_free(&link);
    buf_free(&route);
}

void hub_xet_annotate_entry(hub *h, json_t *entry, const repo_entry *ent)
{
    if (!ent->is_lfs || ent->is_dir)
        return;
    char hash[XET_HASH_STRING_LEN + 1];
    if (xet_hash_of(h, ent->lfs.oid, hash) == 0)
        json_object_set_new(entry, "xetHash", json_string(hash));
}

/* ---- CAS: common ----------------------------------------------------------------------------- */

/* Checks the Bearer CAS token: 401 when missing, malformed, forged or expired; 403 when a
 * write needs a write token. Then checks again what the token was issued for: the repo still
 * exists under the same uid and the caller (the Hub token that asked for it, or anonymous)
 * may still read its files, or write it for a write token (a pull-request token: still read),
 * so that deleting the repo, making it private or revoking the Hub token ends the token too
 * (hub_grant_recheck: 404 RepoNotFound, 401, 403). Fills call->repo and call->caller.
 * Returns 0 or -1 after replying. */
static int cas_auth(http_request *req, hub_call *call, bool want_write, hub_xet_grant *tok)
{
    const char *auth = http_header(req, "Authorization");
    const char *token = auth && !strncasecmp(auth, "Bearer ", 7) ? auth + 7 : NULL;
    if (!token || hub_xet_token_check(call->hub, token, (int64_t)time(NULL), tok) != 0) {
        http_reply_errorf(req, 401, "", "missing, invalid or expired Xet access token; ask the "
                                        "hub's xet-read-token / xet-write-token route for one");
        return -1;
    }
    if (want_write && tok->scope == HUB_XET_READ) {
        http_reply_errorf(req, 403, "", "this Xet access token is read-only");
        return -1;
    }
    if (!hub_xet_enabled(call->hub)) {
        http_reply_errorf(req, 501, "", "this Hearth server has no Xet storage");
        return -1;
    }
    err e = ERR_INIT;
    if (hub_grant_recheck(call->hub, &tok->grant, tok->scope == HUB_XET_WRITE, &call->repo,
                          &call->caller, &e) != 0) {
        http_reply_error(req, &e);
        return -1;
    }
    call->have_repo = true;
    if (tok->scope == HUB_XET_PR && !call->caller.authenticated) {
        http_reply_errorf(req, 401, "", "a pull-request Xet token needs an authenticated caller");
        return -1;
    }
    return 0;
}

static int parse_hash(http_request *req, const char *s, xet_hash *out)
{
    if (!s || xet_hash_from_string(s, strlen(s), out) != 0) {
        http_reply_errorf(req, 400, "", "not a Xet hash: %s", s ? s : "(missing)");
        return -1;
    }
    return 0;
}

/* The file a hash names, if the token's repo may read it: 0, or -1 after replying 404. */
static int cas_file(http_request *req, hub_call *call, const hub_xet_grant *tok, const xet_hash *fh,
                    char oid[65], int64_t *size)
{
    err e = ERR_INIT;
    int rc = store_file_by_xet_hash(call->hub->store, fh, oid, size, &e);
    if (rc < 0) {
        http_reply_error(req, &e);
        return -1;
    }
    if (rc > 0 || db_repo_object_has(call->hub->db, tok->grant.repo_id, oid, &e) != 0) {
        http_reply_errorf(req, 404, "", "file not found in this repository's Xet storage");
        return -1;
    }
    return 0;
}

/* ---- CAS: reconstructions ----------------------------------------------------------------- */

typedef struct merged_range {
    xet_hash xorb;
    uint32_t chunk_start, chunk_end;
    uint64_t byte_start, byte_end; /* [start, end) */
} merged_range;

static int cmp_range(const void *a, const void *b)
{
    const merged_range *x = a, *y = b;
    int c = memcmp(x->xorb.bytes, y->xorb.bytes, XET_HASH_LEN);
    if (c)
        return c;
    return x->chunk_start < y->chunk_start ? -1 : x->chunk_start > y->chunk_start;
}

/* Sorts the terms' ranges by xorb and chunk and merges overlapping or touching ones (as
 * xet-core's server does), so each term lies inside one fetch range. Returns the count. */
static size_t merge_ranges(const store_reconstruction *rec, merged_range *out)
{
    for (size_t i = 0; i < rec->n; i++) {
        const store_term *t = &rec->terms[i];
        out[i] = (merged_range){t->xorb, t->chunk_start, t->chunk_end, t->byte_start, t->byte_end};
    }
    qsort(out, rec->n, sizeof *out, cmp_range);
    size_t n = 0;
    for (size_t i = 0; i < rec->n; i++) {
        if (n && xet_hash_equal(&out[n - 1].xorb, &out[i].xorb) &&
            out[i].chunk_start <= out[n - 1].chunk_end) {
            if (out[i].chunk_end > out[n - 1].chunk_end)
                out[n - 1].chunk_end = out[i].chunk_end;
            if (out[i].byte_end > out[n - 1].byte_end)
                out[n - 1].byte_end = out[i].byte_end;
        } else {
            out[n++] = out[i];
        }
    }
    return n;
}

/* What a xorb URL's signature covers besides the repo uid: the pack, its ranges, and the grant
 * (repo id and caller) that hub_cas_xorb_get checks again when the URL is used. */
static void xorb_subject(const char *hash, const char *ranges, const hub_grant *g, buf *out)
{
    buf_printf(out, "%s\n%s\n%lld\n%lld\n%lld", hash, ranges, (long long)g->repo_id,
               (long long)g->user_id, (long long)g->token_id);
}

/* <casUrl>/xorb/<hash>?r=a-b,c-d&g=<repo id>&u=<user id>&t=<token id>&exp=..&sig=..
 * (inclusive ranges), signed over the pack, the ranges and the grant of the token that asked
 * for the reconstruction. */
static void xorb_url(http_request *req, const hub *h, const hub_grant *g, const char *hash,
                     const merged_range *r, size_t n, buf *out)
{
    buf ranges = BUF_INIT, subject = BUF_INIT;
    for (size_t i = 0; i < n; i++)
        buf_printf(&ranges, "%s%" PRIu64 "-%" PRIu64, i ? "," : "", r[i].byte_start,
                   r[i].byte_end - 1);
    int64_t exp = (int64_t)time(NULL) + XET_URL_TTL;
    char sig[65];
    xorb_subject(hash, ranges.data, g, &subject);
    hub_sign(h, "xorb", g->uid, subject.data, 0, exp, sig);
    buf_printf(out, "%s/cas/xorb/%s?r=%s&g=%lld&u=%lld&t=%lld&exp=%lld&sig=%s", http_base_url(req),
               hash, ranges.data, (long long)g->repo_id, (long long)g->user_id,
               (long long)g->token_id, (long long)exp, sig);
    buf_free(&ranges);
    buf_free(&subject);
}

static json_t *terms_json(const store_reconstruction *rec)
{
    json_t *terms = json_array();
    for (size_t i = 0; i < rec->n; i++) {
        const store_term *t = &rec->terms[i];
        char hash[XET_HASH_STRING_LEN + 1];
        xet_hash_to_string(&t->xorb, hash);
        json_array_append_new(terms, json_pack("{s:s, s:I, s:{s:I, s:I}}", "hash", hash,
                                               "unpacked_length", (json_int_t)t->unpacked_len,
                                               "range", "start", (json_int_t)t->chunk_start,
                                               "end", (json_int_t)t->chunk_end));
    }
    return terms;
}

/* v2: {xorb: [{url, ranges: [{chunks, bytes}]}]}; v1: {xorb: [{range, url, url_range}]}.
 * Adds into `into` (so a batch can share one fetch_info). */
static void fetch_json(http_request *req, const hub *h, const hub_grant *g,
                       const store_reconstruction *rec, bool v2, json_t *into)
{
    if (!rec->n)
        return;
    merged_range *m = malloc(rec->n * sizeof *m);
    if (!m)
        abort();
    size_t n = merge_ranges(rec, m);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && xet_hash_equal(&m[j].xorb, &m[i].xorb))
            j++;
        char hash[XET_HASH_STRING_LEN + 1];
        xet_hash_to_string(&m[i].xorb, hash);
        json_t *list = json_object_get(into, hash);
        if (!list) {
            list = json_array();
            json_object_set_new(into, hash, list);
        }
        if (v2) {
            buf url = BUF_INIT;
            xorb_url(req, h, g, hash, m + i, j - i, &url);
            json_t *ranges = json_array();
            for (size_t k = i; k < j; k++)
                json_array_append_new(
                    ranges, json_pack("{s:{s:I, s:I}, s:{s:I, s:I}}", "chunks", "start",
                                      (json_int_t)m[k].chunk_start, "end",
                                      (json_int_t)m[k].chunk_end, "bytes", "start",
                                      (json_int_t)m[k].byte_start, "end",
                                      (json_int_t)(m[k].byte_end - 1)));
            json_array_append_new(list, json_pack("{s:s, s:o}", "url", url.data, "ranges", ranges));
            buf_free(&url);
        } else {
            for (size_t k = i; k < j; k++) {
                buf url = BUF_INIT;
                xorb_url(req, h, g, hash, m + k, 1, &url);
                json_array_append_new(
                    list, json_pack("{s:{s:I, s:I}, s:s, s:{s:I, s:I}}", "range", "start",
                                    (json_int_t)m[k].chunk_start, "end",
                                    (json_int_t)m[k].chunk_end, "url", url.data, "url_range",
                                    "start", (json_int_t)m[k].byte_start, "end",
                                    (json_int_t)(m[k].byte_end - 1)));
                buf_free(&url);
            }
        }
        i = j;
    }
    free(m);
}

/* GET /cas/v1|v2/reconstructions/{file_hash} (call->rev = "v1" | "v2", call->extra = hash). */
void hub_cas_reconstruction(http_request *req, hub_call *call)
{
    hub_xet_grant tok;
    xet_hash fh;
    char oid[65];
    int64_t size;
    if (cas_auth(req, call, false, &tok) != 0 || parse_hash(req, call->extra, &fh) != 0 ||
        cas_file(req, call, &tok, &fh, oid, &size) != 0)
        return;
    bool v2 = call->rev && !strcmp(call->rev, "v2");
    int64_t first = 0, last = size - 1;
    const char *range = http_header(req, "Range");
    if (range) {
        switch (http_parse_range(range, size, &first, &last)) {
        case HTTP_RANGE_OK:
            break;
        case HTTP_RANGE_UNSATISFIABLE:
            if (size == 0 && text_starts_with(range, "bytes=0-")) {
                first = 0;
                last = -1;
                break;
            }
            http_reply_errorf(req, 416, "", "range not satisfiable (file size %lld)",
                              (long long)size);
            return;
        case HTTP_RANGE_NONE:
            http_reply_errorf(req, 400, "", "malformed Range header: %s", range);
            return;
        }
    }
    store_reconstruction rec = {0};
    if (size > 0) {
        err e = ERR_INIT;
        if (store_reconstruct(call->hub->store, &fh, (uint64_t)first, (uint64_t)last, &rec, &e) != 0) {
            http_reply_error(req, &e);
            return;
        }
    }
    json_t *fetch = json_object();
    fetch_json(req, call->hub, &tok.grant, &rec, v2, fetch);
    json_t *reply = json_pack("{s:I, s:o}", "offset_into_first_range",
                              (json_int_t)rec.offset_into_first, "terms", terms_json(&rec));
    json_object_set_new(reply, v2 ? "xorbs" : "fetch_info", fetch);
    store_reconstruction_free(&rec);
    http_reply_json(req, 200, reply);
}

/* GET /cas/v1/reconstructions?file_id=h&file_id=h2 (xet-core), or POST with
 * [{"prefix": "default", "hash": h}, ...] (the spec). */
void hub_cas_batch_reconstruction(http_request *req, hub_call *call)
{
    hub_xet_grant tok;
    if (cas_auth(req, call, false, &tok) != 0)
        return;
    const char *ids[XET_BATCH_MAX_FILES];
    size_t n = 0;
    json_t *body = NULL;
    if (!strcmp(http_method(req), "POST")) {
        const buf *b = http_body(req);
        body = b->len ? json_loadb(b->data, b->len, 0, NULL) : NULL;
        if (!json_is_array(body) || json_array_size(body) > XET_BATCH_MAX_FILES) {
            json_decref(body);
            http_reply_errorf(req, 400, "", "expected a JSON array of at most %d {hash} objects",
                              XET_BATCH_MAX_FILES);
            return;
        }
        size_t i;
        json_t *item;
        json_array_foreach(body, i, item)
        {
            const char *hh = json_string_value(json_object_get(item, "hash"));
            if (hh)
                ids[n++] = hh;
        }
    } else {
        n = http_query_all(req, "file_id", ids, XET_BATCH_MAX_FILES);
    }
    json_t *files = json_object(), *fetch = json_object();
    for (size_t i = 0; i < n; i++) {
        xet_hash fh;
        char oid[65];
        int64_t size;
        err e = ERR_INIT;
        if (xet_hash_from_string(ids[i], strlen(ids[i]), &fh) != 0 ||
            store_file_by_xet_hash(call->hub->store, &fh, oid, &size, &e) != 0 ||
            db_repo_object_has(call->hub->db, tok.grant.repo_id, oid, &e) != 0)
            continue; /* unknown files are left out, as xet-core does */
        store_reconstruction rec = {0};
        if (size > 0 &&
            store_reconstruct(call->hub->store, &fh, 0, (uint64_t)size - 1, &rec, &e) != 0)
            continue;
        char key[XET_HASH_STRING_LEN + 1];
        xet_hash_to_string(&fh, key);
        json_object_set_new(files, key, terms_json(&rec));
        fetch_json(req, call->hub, &tok.grant, &rec, false, fetch);
        store_reconstruction_free(&rec);
    }
    json_decref(body);
    http_reply_json(req, 200, json_pack("{s:o, s:o}", "files", files, "fetch_info", fetch));
}

/* HEAD /cas/v1/files/{file_hash}: 200 with the file's size as Content-Length, or 404. */
static ssize_t read_nothing(void *ctx, uint64_t pos, char *out, size_t max) { return -1; }

void hub_cas_file_head(http_request *req, hub_call *call)
{
    hub_xet_grant tok;
    xet_hash fh;
    char oid[65];
    int64_t size;
    if (cas_auth(req, call, false, &tok) != 0 || parse_hash(req, call->extra, &fh) != 0 ||
        cas_file(req, call, &tok, &fh, oid, &size) != 0)
        return;
    char size_text[32];
    snprintf(size_text, sizeof size_text, "%lld", (long long)size);
    http_add_header(req, "X-Xet-File-Size", size_text);
    if (http_is_head(req))
        http_reply_reader(req, 200, "application/octet-stream", size, read_nothing, NULL, NULL);
    else
        http_reply_json(req, 200, json_pack("{s:I}", "size", (json_int_t)size));
}

/* ---- CAS: xorbs ------------------------------------------------------------------------------ */

/* POST /cas/v1/xorbs/{prefix}/{xorb_hash}: the store parses every chunk and checks the hash. */
void hub_cas_xorb_upload(http_request *req, hub_call *call)
{
    hub_xet_grant tok;
    xet_hash xh;
    if (cas_auth(req, call, true, &tok) != 0 || parse_hash(req, call->extra, &xh) != 0)
        return;
    const buf *body = http_body(req);
    bool inserted = false;
    err e = ERR_INIT;
    if (store_xorb_put(call->hub->store, &xh, (const uint8_t *)buf_str(body), body->len, &inserted,
                       &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    log_info("xet: xorb %s (%zu bytes) %s", call->extra, body->len,
             inserted ? "stored" : "already known");
    http_reply_json(req, 200, json_pack("{s:b}", "was_inserted", inserted));
}

/* HEAD (or GET) /cas/v1/xorbs/{prefix}/{xorb_hash}: 200 or 404. */
void hub_cas_xorb_head(http_request *req, hub_call *call)
{
    hub_xet_grant tok;
    xet_hash xh;
    if (cas_auth(req, call, false, &tok) != 0 || parse_hash(req, call->extra, &xh) != 0)
        return;
    uint64_t len = 0;
    err e = ERR_INIT;
    int rc = store_xorb_stat(call->hub->store, &xh, &len, &e);
    if (rc < 0) {
        http_reply_error(req, &e);
        return;
    }
    if (rc > 0) {
        http_reply_errorf(req, 404, "", "xorb not found");
        return;
    }
    if (http_is_head(req))
        http_reply_reader(req, 200, "application/octet-stream", (int64_t)len, read_nothing, NULL,
                          NULL);
    else
        http_reply_json(req, 200, json_pack("{s:I}", "length", (json_int_t)len));
}

/* GET /cas/v1/chunks/{prefix}/{chunk_hash}: global dedup, for any repo's token. A shard naming
 * the pack that holds the chunk, its chunk hashes keyed with a fresh random key per reply
 * (the footer's chunk_hash_key, as the Hugging Face CAS does): the client keys its own chunk
 * hashes to find the ones it has, and learns none it lacks. A new key each time means two
 * replies cannot be compared to tell which packs share chunks. */
void hub_cas_chunk(http_request *req, hub_call *call)
{
    hub_xet_grant tok;
    xet_hash ch;
    if (cas_auth(req, call, false, &tok) != 0 || parse_hash(req, call->extra, &ch) != 0)
        return;
    static const uint8_t zero[32];
    uint8_t key[32];
    do
        hash_random(key, sizeof key);
    while (memcmp(key, zero, sizeof key) == 0); /* zero would mean "in clear" to the client */
    buf shard = BUF_INIT;
    err e = ERR_INIT;
    uint64_t expiry = (uint64_t)time(NULL) + XET_DEDUP_SHARD_TTL;
    int rc = store_chunk_shard(call->hub->store, &ch, key, expiry, &shard, &e);
    if (rc < 0)
        http_reply_error(req, &e);
    else if (rc > 0)
        http_reply_errorf(req, 404, "", "chunk not found");
    else
        http_reply_bytes(req, 200, "application/octet-stream", buf_str(&shard), shard.len);
    buf_free(&shard);
}

/* ---- CAS: signed xorb range URLs ---------------------------------------------------------- */

typedef struct byte_range {
    uint64_t first, last; /* inclusive */
} byte_range;

/* Parses "a-b,c-d" (inclusive, a <= b) into out; returns the count, or -1 when malformed. */
static int parse_ranges(const char *s, byte_range *out, int max)
{
    int n = 0;
    while (s && *s) {
        unsigned long long a, b;
        int used = 0;
        while (*s == ' ')
            s++;
        if (n == max || sscanf(s, "%llu-%llu%n", &a, &b, &used) != 2 || a > b ||
            s[0] == '-' || s[0] == '+')
            return -1;
        for (int i = 0; i < used; i++)
            if (!(s[i] >= '0' && s[i] <= '9') && s[i] != '-')
                return -1;
        out[n++] = (byte_range){a, b};
        s += used;
        while (*s == ' ')
            s++;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

typedef struct segment {
    const char *mem; /* header text, or NULL for a file region */
    int fd;
    int64_t offset;
    uint64_t len;
} segment;

typedef struct multipart {
    segment *segs;
    size_t n;
    buf text; /* all header text; segments point into it */
} multipart;

static void multipart_free(void *p)
{
    multipart *m = p;
    for (size_t i = 0; i < m->n; i++)
        if (!m->segs[i].mem && m->segs[i].fd >= 0)
            close(m->segs[i].fd);
    free(m->segs);
    buf_free(&m->text);
    free(m);
}

static ssize_t multipart_read(void *ctx, uint64_t pos, char *out, size_t max)
{
    multipart *m = ctx;
    uint64_t at = 0;
    for (size_t i = 0; i < m->n; i++) {
        segment *s = &m->segs[i];
        if (pos < at + s->len) {
            uint64_t off = pos - at;
            size_t want = (size_t)(s->len - off < max ? s->len - off : max);
            if (s->mem) {
                memcpy(out, s->mem + off, want);
                return (ssize_t)want;
            }
            ssize_t got = pread(s->fd, out, want, s->offset + (int64_t)off);
            return got > 0 ? got : -1;
        }
        at += s->len;
    }
    return -1;
}

/* GET /cas/xorb/{hash}?r=..&exp=..&sig=..: bytes of a pack, only inside the signed ranges. */
void hub_cas_xorb_get(http_request *req, hub_call *call)
{
    hub *h = call->hub;
    xet_hash xh;
    const char *signed_ranges = http_query(req, "r");
    if (parse_hash(req, call->extra, &xh) != 0)
        return;
    /* The URL names its grant's repo by row id; the uid it was signed with comes from the
     * repo's row, so a deleted repo (or a new one under a reused id) fails the signature. */
    hub_grant g = {.repo_id = text_parse_i64(http_query(req, "g")),
                   .user_id = text_parse_i64(http_query(req, "u")),
                   .token_id = text_parse_i64(http_query(req, "t"))};
    db_repo row;
    err e = ERR_INIT;
    bool valid = signed_ranges && g.repo_id >= 0 && g.user_id >= 0 && g.token_id >= 0 &&
                 db_repo_by_id(h->db, g.repo_id, &row, &e) == 0;
    if (valid) {
        snprintf(g.uid, sizeof g.uid, "%s", row.uid);
        db_repo_free(&row);
        buf subject = BUF_INIT;
        xorb_subject(call->extra, signed_ranges, &g, &subject);
        valid = hub_check_signature(h, req, "xorb", g.uid, subject.data, 0);
        buf_free(&subject);
    }
    if (!valid) {
        http_reply_errorf(req, 403, "", "invalid or expired xorb URL; ask for a new "
                                        "reconstruction");
        return;
    }
    /* Signed, so issued to that caller for that repo: may they still read it? */
    if (hub_grant_recheck(h, &g, false, &call->repo, &call->caller, &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    byte_range allowed[XET_MAX_RANGES], want[XET_MAX_RANGES];
    int n_allowed = parse_ranges(signed_ranges, allowed, XET_MAX_RANGES);
    const char *range = http_header(req, "Range");
    int n_want;
    if (!range) {
        /* No Range: the whole signed range, when there is exactly one. */
        n_want = n_allowed == 1 ? 1 : -1;
        if (n_want == 1)
            want[0] = allowed[0];
    } else {
        n_want = text_starts_with(range, "bytes=")
                     ? parse_ranges(range + 6, want, XET_MAX_RANGES) : -1;
    }
    if (n_allowed <= 0 || n_want <= 0) {
        http_reply_errorf(req, 416, "", "expected Range: bytes=a-b[,c-d...] within the signed "
                                        "ranges");
        return;
    }
    for (int i = 0; i < n_want; i++) {
        bool inside = false;
        for (int k = 0; k < n_allowed && !inside; k++)
            inside = want[i].first >= allowed[k].first && want[i].last <= allowed[k].last;
        if (!inside) {
            http_reply_errorf(req, 416, "", "range %llu-%llu is outside this URL's ranges",
                              (unsigned long long)want[i].first, (unsigned long long)want[i].last);
            return;
        }
    }
    uint64_t total = 0;
    if (store_xorb_stat(h->store, &xh, &total, &e) != 0) {
        http_reply_errorf(req, 404, "", "xorb not found");
        return;
    }
    if (n_want == 1) {
        int fd;
        int64_t off;
        if (store_xorb_region(h->store, &xh, want[0].first, want[0].last + 1, &fd, &off, &e) != 0) {
            http_reply_error(req, &e);
            return;
        }
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)want[0].first,
                 (unsigned long long)want[0].last, (unsigned long long)total);
        if (range)
            http_add_header(req, "Content-Range", cr);
        http_reply_fd(req, range ? 206 : 200, "application/octet-stream", fd, off,
                      (int64_t)(want[0].last - want[0].first + 1));
        return;
    }
    /* multipart/byteranges (RFC 9110 §14.6): a part header, the bytes, CRLF; a closing line. */
    static const char boundary[] = "hearth_xorb_ranges";
    multipart *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    m->segs = calloc((size_t)n_want * 2 + 1, sizeof *m->segs);
    if (!m->segs)
        abort();
    size_t *text_at = calloc((size_t)n_want * 2 + 1, sizeof *text_at);
    if (!text_at)
        abort();
    uint64_t length = 0;
    for (int i = 0; i < n_want; i++) {
        size_t start = m->text.len;
        buf_printf(&m->text, "%s--%s\r\nContent-Type: application/octet-stream\r\n"
                             "Content-Range: bytes %llu-%llu/%llu\r\n\r\n",
                   i ? "\r\n" : "", boundary, (unsigned long long)want[i].first,
                   (unsigned long long)want[i].last, (unsigned long long)total);
        text_at[m->n] = start;
        m->segs[m->n++] = (segment){"", -1, 0, m->text.len - start};
        segment *s = &m->segs[m->n];
        s->mem = NULL;
        s->len = want[i].last - want[i].first + 1;
        if (store_xorb_region(h->store, &xh, want[i].first, want[i].last + 1, &s->fd, &s->offset,
                              &e) != 0) {
            s->fd = -1;
            m->n++;
            free(text_at);
            multipart_free(m);
            http_reply_error(req, &e);
            return;
        }
        m->n++;
    }
    size_t start = m->text.len;
    buf_printf(&m->text, "\r\n--%s--\r\n", boundary);
    text_at[m->n] = start;
    m->segs[m->n++] = (segment){"", -1, 0, m->text.len - start};
    /* The text buffer is final now: point the header segments into it. */
    for (size_t i = 0; i < m->n; i++) {
        if (m->segs[i].mem)
            m->segs[i].mem = m->text.data + text_at[i];
        length += m->segs[i].len;
    }
    free(text_at);
    char ctype[96];
    snprintf(ctype, sizeof ctype, "multipart/byteranges; boundary=%s", boundary);
    http_reply_reader(req, 206, ctype, (int64_t)length, multipart_read, m, multipart_free);
}

/* ---- CAS: shards ------------------------------------------------------------------------------ */

/* Registers an upload shard's files for the token's repo: the store checks the shard whole
 * (proof of possession, the claimed SHA-256s; see store_shard_register) and registers all its
 * files or none; each is then linked to the repo. *registered counts files new to this repo. */
int hub_xet_shard_apply(hub *h, const hub_xet_grant *tok, const uint8_t *data, size_t len,
                        size_t *registered, size_t *n_files, err *e)
{
    xet_shard shard;
    *registered = 0;
    if (xet_shard_parse(data, len, &shard, e) != 0)
        return -1;
    *n_files = shard.n_files;
    uint64_t *sizes = calloc(shard.n_files + 1, sizeof *sizes);
    if (!sizes)
        abort();
    int rc = store_shard_register(h->store, &shard, sizes, e);
    /* Count files new to this repo, not to the store (which would tell the caller that
     * someone else holds the file). */
    for (size_t i = 0; i < shard.n_files && rc == 0; i++) {
        char oid[65];
        hex_encode(shard.files[i].sha256, 32, oid);
        int had = db_repo_object_has(h->db, tok->grant.repo_id, oid, e);
        if (had < 0 || db_repo_object_add(h->db, tok->grant.repo_id, oid, (int64_t)sizes[i], e) != 0) {
            rc = -1;
            break;
        }
        if (had == 0)
            continue;
        (*registered)++;
        log_info("xet: file %s (%llu bytes) linked to repo %s", oid, (unsigned long long)sizes[i],
                 tok->grant.uid);
    }
    free(sizes);
    xet_shard_free(&shard);
    return rc;
}

/* POST /cas/v1/shards and /cas/v2/shards (call->rev = "v1" | "v2"). */
void hub_cas_shard_upload(http_request *req, hub_call *call)
{
    hub_xet_grant tok;
    if (cas_auth(req, call, true, &tok) != 0)
        return;
    const buf *body = http_body(req);
    size_t registered = 0, n_files = 0;
    err e = ERR_INIT;
    if (hub_xet_shard_apply(call->hub, &tok, (const uint8_t *)buf_str(body), body->len,
                            &registered, &n_files, &e) != 0) {
        http_reply_error(req, &e);
        return;
    }
    int result = registered || n_files == 0 ? 1 : 0;
    if (call->rev && !strcmp(call->rev, "v2")) {
        buf out = BUF_INIT;
        buf_printf(&out, "{\"type\":\"validating\",\"verified\":%zu,\"total\":%zu}\n", n_files,
                   n_files);
        buf_puts(&out, "{\"type\":\"committing\",\"stage\":\"uploading\"}\n");
        buf_puts(&out, "{\"type\":\"committing\",\"stage\":\"syncing\"}\n");
        buf_puts(&out, "{\"type\":\"result\"}\n");
        http_reply_bytes(req, 200, "application/x-ndjson", out.data, out.len);
        buf_free(&out);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:i}", "result", result));
}

/* POST /v1/telemetry: hf_xet reports transfer statistics to the CAS host's root; accepted and
 * dropped. */
void hub_cas_telemetry(http_request *req, hub_call *call) { http_reply_bytes(req, 204, NULL, "", 0); }
