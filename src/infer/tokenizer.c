/* tokenizer.c — text ↔ token ids, compatible with Hugging Face `tokenizers` (tokenizer.json)
 * and with the vocabularies GGUF files carry.
 *
 * The pipeline is the library's (spec section 4): added tokens are cut out of the raw text
 * first; every other segment is normalised, pre-tokenised into words, and each word is
 * BPE-merged; the post-processor adds BOS/EOS. Decoding runs the decoder chain over the token
 * strings. Each stage is a small list of configured steps read from the JSON, so the same code
 * serves byte-level tokenizers (GPT-2, Llama 3, Qwen: regex split + byte→char mapping) and
 * SentencePiece-style ones (Llama 2, Mistral: ▁ for spaces, <0xNN> byte fallback).
 *
 * BPE: a word starts as one symbol per character; the adjacent pair with the lowest merge rank
 * (the leftmost among equals) is merged until no pair has a rank — what the library's
 * priority queue computes. Ranks come from the merges list, or, for GGUF `llama` vocabularies
 * that have none, from the merged piece's score (higher score merges first, as llama.cpp does).
 *
 * WordPiece (BERT): BertNormalizer, BertPreTokenizer, then greedy longest-match pieces per word
 * ("##" inside a word), BertProcessing / TemplateProcessing for [CLS] ... [SEP].
 *
 * Unicode data (NFC/NFD/NFKC/NFKD, categories, lowercase) comes from utf8proc, so nothing
 * here carries tables of its own. Not supported, with a clear error at load: Unigram and
 * WordLevel models.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "infer/internal.h"

/* ---- a string → id hash map ------------------------------------------------------------------ */

typedef struct str_map {
    uint32_t *slots;   /* id + 1, 0 = empty */
    size_t cap;        /* power of two */
} str_map;

typedef struct pair_entry {
    uint64_t key;      /* (left id << 32) | right id; 0 = empty (id pair (0,0) stored as key+1) */
    int32_t result;
    float rank;
} pair_entry;

typedef struct pair_map {
    pair_entry *slots;
    size_t cap;
} pair_map;

typedef enum {
    NORM_PREPEND, NORM_REPLACE, NORM_UNICODE, NORM_LOWERCASE, NORM_STRIP, NORM_STRIP_ACCENTS, NORM_BERT
} norm_kind;
typedef struct norm_step {
    norm_kind kind;
    char *a, *b;           /* prepend text / replace from, to */
    bool left, right;      /* Strip */
    int unicode_form;      /* NORM_UNICODE: utf8proc options of NFC, NFD, NFKC or NFKD */
    bool clean_text, chinese_chars, strip_accents, lowercase;   /* BertNormalizer */
} norm_step;

typedef enum { PRE_BYTELEVEL, PRE_SPLIT, PRE_METASPACE } pre_kind;
typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_PREV, SPLIT_NEXT, SPLIT_CONTIGUOUS } split_behavior;
/* Splits on a character class rather than a pattern: each such character is one match, as the
 * library's char-predicate splits (Whitespace*, Punctuation, BertPreTokenizer) do. */
typedef enum { CLASS_NONE, CLASS_WHITESPACE, CLASS_PUNCTUATION } char_class;
typedef struct pre_step {
    pre_kind kind;
    pcre2_code *re;        /* PRE_SPLIT regex, or NULL with literal or char_class */
    char *literal;
    char_class chars;
    split_behavior behavior;
    bool invert;
    bool add_prefix_space, use_regex;   /* ByteLevel */
    char *replacement;                  /* Metaspace */
    int prepend;                        /* 0 never, 1 first, 2 always */
    bool split;
} pre_step;

typedef enum {
    DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE, DEC_WORDPIECE
} dec_kind;
typedef struct dec_step {
    dec_kind kind;
    char *a, *b;           /* replace from, to / strip content / metaspace and wordpiece prefix */
    int start, stop;
    int prepend;
    bool cleanup;          /* WordPiece: English spacing cleanup (" ." -> ".", " n't" -> "n't", ...) */
} dec_step;

typedef struct added_token {
    char *content;
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip;
} added_token;

struct infer_tokenizer {
    bool wordpiece;           /* WordPiece model (BERT) instead of BPE */
    char *subword_prefix;     /* WordPiece continuing_subword_prefix ("##") */
    int max_word_chars;       /* WordPiece: longer words become unk */
    int vocab_size;
    char **pieces;
    uint32_t *piece_len;
    uint8_t *special;
    str_map vocab;
    pair_map merges;
    float *scores;            /* score-ranked merges (GGUF llama) when no merges list */
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;
    int32_t byte_ids[256];    /* <0xNN> ids, -1 when absent */
    added_token *added;
    size_t n_added;
    norm_step *norm;
    size_t n_norm;
    pre_step *pre;
    size_t n_pre;
    dec_step *dec;
    size_t n_dec;
    int32_t *prefix, *suffix;  /* post-processor ids */
    size_t n_prefix, n_suffix;
    bool byte_level;           /* token strings are byte-level chars */
    uint32_t byte_to_cp[256];
    int16_t cp_to_byte[512];
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h;
}

static int32_t vocab_get(const infer_tokenizer *t, const char *s, size_t n)
{
    if (!t->vocab.cap)
        return -1;
    size_t mask = t->vocab.cap - 1;
    for (size_t i = fnv1a(s, n) & mask;; i = (i + 1) & mask) {
        uint32_t v = t->vocab.slots[i];
        if (!v)
            return -1;
        int32_t id = (int32_t)v - 1;
        if (t->piece_len[id] == n && !memcmp(t->pieces[id], s, n))
            return id;
    }
}

/* Index every piece; on duplicates the lowest id wins (as a JSON object cannot repeat keys). */
static void vocab_index(infer_tokenizer *t)
{
    size_t cap = 16;
    while (cap < (size_t)t->vocab_size * 2)
        cap *= 2;
    t->vocab.cap = cap;
    t->vocab.slots = calloc(cap, sizeof *t->vocab.slots);
    for (int32_t id = 0; id < t->vocab_size; id++) {
        if (!t->pieces[id] || vocab_get(t, t->pieces[id], t->piece_len[id]) >= 0)
            continue;
        size_t i = fnv1a(t->pieces[id], t->piece_len[id]) & (cap - 1);
        while (t->vocab.slots[i])
            i = (i + 1) & (cap - 1);
        t->vocab.slots[i] = (uint32_t)id + 1;
    }
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static void pair_put(pair_map *m, int32_t a, int32_t b, int32_t result, float rank)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->slots[i].key == key)
            return;   /* first (lowest-rank) merge of a pair wins */
        if (!m->slots[i].key) {
            m->slots[i] = (pair_entry){key, result, rank};
            return;
        }
    }
}

static const pair_entry *pair_get(const pair_map *m, int32_t a, int32_t b)
{
    if (!m->cap)
        return NULL;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->slots[i].key == key)
            return &m->slots[i];
        if (!m->slots[i].key)
            return NULL;
    }
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

/* Length of the UTF-8 sequence starting at s (1 for a stray byte). */
static size_t utf8_len(const char *s, size_t avail)
{
    uint8_t c = (uint8_t)s[0];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (n > avail)
        return 1;
    for (size_t i = 1; i < n; i++)
        if (((uint8_t)s[i] & 0xC0) != 0x80)
            return 1;
    return n;
}

static void utf8_put(buf *b, uint32_t cp)
{
    char o[4];
    int n;
    if (cp < 0x80) { o[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    buf_append(b, o, (size_t)n);
}

static uint32_t utf8_decode(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    switch (n) {
    case 1: return u[0];
    case 2: return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    case 3: return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    default:
        return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
               ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    }
}

/* Appends bytes as valid UTF-8, each invalid sequence replaced by U+FFFD (Rust's
 * from_utf8_lossy: a maximal invalid prefix becomes one replacement character). */
static void utf8_lossy(buf *out, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = (uint8_t)s[i];
        if (c < 0x80) {
            buf_putc(out, (char)c);
            i++;
            continue;
        }
        size_t need = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        size_t j = 1;
        if (need) {
            for (; j < need && i + j < n; j++) {
                uint8_t d = (uint8_t)s[i + j];
                uint8_t lo = 0x80, hi = 0xBF;
                if (j == 1) {
                    if (c == 0xE0) lo = 0xA0;
                    if (c == 0xED) hi = 0x9F;
                    if (c == 0xF0) lo = 0x90;
                    if (c == 0xF4) hi = 0x8F;
                }
                if (d < lo || d > hi)
                    break;
            }
        }
        if (need && j == need) {
            buf_append(out, s + i, need);
            i += need;
        } else {
            buf_puts(out, "\xEF\xBF\xBD");
            i += j;
        }
    }
}

static bool is_space_cp(uint32_t c)
{
    return c == ' ' || (c >= 9 && c <= 13) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* ---- Unicode (utf8proc) ------------------------------------------------------------------------ */

/* The library's char predicates, on utf8proc's Unicode data. The library takes categories from
 * the unicode_categories crate (Unicode 8.0), so a character assigned since then as a format
 * character, nonspacing mark or punctuation (a few hundred, none in common use) is classed by
 * its current category here and by none there. */

static bool in_category(uint32_t cp, const utf8proc_category_t *cats, size_t n)
{
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    for (size_t i = 0; i < n; i++)
        if (c == cats[i])
            return true;
    return false;
}

/* BertNormalizer's control characters: Cc, Cf, Co, Cs, except tab, newline and return. */
static bool is_control_cp(uint32_t cp)
{
    static const utf8proc_category_t other[] = {UTF8PROC_CATEGORY_CC, UTF8PROC_CATEGORY_CF,
                                                UTF8PROC_CATEGORY_CO, UTF8PROC_CATEGORY_CS};
    return cp != '\t' && cp != '\n' && cp != '\r' && in_category(cp, other, ARRAY_LEN(other));
}

/* BertPreTokenizer's punctuation: ASCII punctuation (which holds symbols such as $ + < = > ^ ` | ~)
 * and every Unicode P* category. */
static bool is_punctuation_cp(uint32_t cp)
{
    static const utf8proc_category_t punct[] = {
        UTF8PROC_CATEGORY_PC, UTF8PROC_CATEGORY_PD, UTF8PROC_CATEGORY_PS, UTF8PROC_CATEGORY_PE,
        UTF8PROC_CATEGORY_PI, UTF8PROC_CATEGORY_PF, UTF8PROC_CATEGORY_PO};
    if (cp < 0x80)
        return (cp >= '!' && cp <= '/') || (cp >= ':' && cp <= '@') || (cp >= '[' && cp <= '`') ||
               (cp >= '{' && cp <= '~');
    return in_category(cp, punct, ARRAY_LEN(punct));
}

/* The CJK blocks BERT puts spaces around (its _is_chinese_char). */
static bool is_chinese_cp(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B81F) ||
           (cp >= 0x2B920 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
           (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* The code point at *at, moving *at past it. */
static uint32_t next_cp(const char *s, size_t n, size_t *at)
{
    size_t cl = utf8_len(s + *at, n - *at);
    uint32_t cp = utf8_decode(s + *at, cl);
    *at += cl;
    return cp;
}

/* One code point lowercased as Rust's char::to_lowercase does: the simple mapping, except
 * U+0130 (İ), whose full mapping is two characters. */
static void put_lower(buf *out, uint32_t cp)
{
    if (cp == 0x130) {
        buf_puts(out, "i\xCC\x87");
        return;
    }
    utf8_put(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
}

void infer_text_lowercase(const char *s, size_t n, buf *out)
{
    for (size_t i = 0; i < n;)
        put_lower(out, next_cp(s, n, &i));
}

/* Drops nonspacing marks (Mn): what StripAccents does, after an NFD normalizer. */
static void strip_marks(const char *s, size_t n, buf *out)
{
    for (size_t i = 0; i < n;) {
        size_t at = i;
        if (utf8proc_category((utf8proc_int32_t)next_cp(s, n, &i)) != UTF8PROC_CATEGORY_MN)
            buf_append(out, s + at, i - at);
    }
}

/* NFC / NFD / NFKC / NFKD (options as utf8proc names them) of valid UTF-8 text. */
static void unicode_normalize(const char *s, size_t n, int options, buf *out)
{
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                        (utf8proc_option_t)(options | UTF8PROC_STABLE));
    if (len >= 0)
        buf_append(out, (const char *)dst, (size_t)len);
    else   /* cannot happen on valid UTF-8; keep the text rather than lose it */
        buf_append(out, s, n);
    free(dst);
}

/* BertNormalizer: drop controls and map whitespace to ' ' (clean_text), space out CJK ideographs
 * (handle_chinese_chars), NFD then drop nonspacing marks (strip_accents), lowercase. */
static void bert_normalize(const norm_step *st, const char *s, size_t n, buf *out)
{
    buf a = BUF_INIT, b = BUF_INIT;
    for (size_t i = 0; i < n;) {
        uint32_t cp = next_cp(s, n, &i);
        if (st->clean_text) {
            if (cp == 0 || cp == 0xFFFD || is_control_cp(cp))
                continue;
            if (is_space_cp(cp))
                cp = ' ';
        }
        bool spaced = st->chinese_chars && is_chinese_cp(cp);
        if (spaced)
            buf_putc(&a, ' ');
        utf8_put(&a, cp);
        if (spaced)
            buf_putc(&a, ' ');
    }
    if (st->strip_accents) {
        unicode_normalize(a.data ? a.data : "", a.len, UTF8PROC_DECOMPOSE, &b);
        buf_reset(&a);
        strip_marks(b.data ? b.data : "", b.len, &a);
    }
    if (st->lowercase)
        infer_text_lowercase(a.data ? a.data : "", a.len, out);
    else
        buf_append(out, a.data ? a.data : "", a.len);
    buf_free(&a);
    buf_free(&b);
}

/* ---- loading: tokenizer.json -------------------------------------------------------------------- */

static void byte_tables(infer_tokenizer *t)
{
    int n = 0;
    for (int i = 0; i < 512; i++)
        t->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        t->byte_to_cp[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
        t->cp_to_byte[t->byte_to_cp[b]] = (int16_t)b;
    }
}

/* strndup that keeps embedded NUL bytes. */
static char *memdup0(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        abort();
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static void set_piece(infer_tokenizer *t, int32_t id, const char *s, size_t n)
{
    free(t->pieces[id]);
    t->pieces[id] = memdup0(s, n);
    t->piece_len[id] = (uint32_t)n;
}

static int alloc_vocab(infer_tokenizer *t, int size)
{
    t->vocab_size = size;
    t->pieces = calloc((size_t)size, sizeof *t->pieces);
    t->piece_len = calloc((size_t)size, sizeof *t->piece_len);
    t->special = calloc((size_t)size, 1);
    return t->pieces && t->piece_len && t->special ? 0 : -1;
}

static void finish_byte_ids(infer_tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_ids[b] = vocab_get(t, name, 6);
    }
}

static int merges_from_strings(infer_tokenizer *t, const char **a, const size_t *alen,
                               const char **b, const size_t *blen, size_t n, err *e)
{
    t->merges.cap = 16;
    while (t->merges.cap < n * 2 + 16)
        t->merges.cap *= 2;
    t->merges.slots = calloc(t->merges.cap, sizeof *t->merges.slots);
    buf cat = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        int32_t ia = vocab_get(t, a[i], alen[i]), ib = vocab_get(t, b[i], blen[i]);
        buf_reset(&cat);
        buf_append(&cat, a[i], alen[i]);
        buf_append(&cat, b[i], blen[i]);
        int32_t ir = vocab_get(t, cat.data, cat.len);
        if (ia < 0 || ib < 0 || ir < 0) {
            buf_free(&cat);
            return err_set(e, 400, "BadTokenizer", "merge %zu ('%.*s' '%.*s') uses a token not in "
                           "the vocabulary", i, (int)alen[i], a[i], (int)blen[i], b[i]);
        }
        pair_put(&t->merges, ia, ib, ir, (float)i);
    }
    buf_free(&cat);
    return 0;
}

static pcre2_code *compile_regex(const char *pattern, err *e)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        err_set(e, 400, "BadTokenizer", "tokenizer regex does not compile at %zu: %s", (size_t)off,
                (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static char *pattern_of(json_t *pat, bool *is_regex)
{
    const char *s = jstr(pat, "Regex");
    *is_regex = s != NULL;
    if (!s)
        s = jstr(pat, "String");
    return s ? strdup(s) : NULL;
}

static split_behavior split_behavior_of(const char *name, split_behavior dflt)
{
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    for (int i = 0; name && i < 5; i++)
        if (!strcmp(name, names[i]))
            return (split_behavior)i;
    return dflt;
}

static int add_pre(infer_tokenizer *t, json_t *p, err *e)
{
    const char *type = jstr(p, "type");
    if (!type)
        return err_set(e, 400, "BadTokenizer", "pre_tokenizer without a type");
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(p, "pretokenizers"), i, x) if (add_pre(t, x, e)) return -1;
        return 0;
    }
    if (!strcmp(type, "BertPreTokenizer")) {   /* whitespace, then each punctuation character alone */
        json_t *ws = json_pack("{s:s}", "type", "WhitespaceSplit"),
               *punct = json_pack("{s:s, s:s}", "type", "Punctuation", "behavior", "Isolated");
        int rc = add_pre(t, ws, e) || add_pre(t, punct, e) ? -1 : 0;
        json_decref(ws);
        json_decref(punct);
        return rc;
    }
    t->pre = realloc(t->pre, (t->n_pre + 1) * sizeof *t->pre);
    pre_step *s = &t->pre[t->n_pre];
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "ByteLevel")) {
        s->kind = PRE_BYTELEVEL;
        s->add_prefix_space = json_is_true(json_object_get(p, "add_prefix_space"));
        json_t *ur = json_object_get(p, "use_regex");
        s->use_regex = !ur || json_is_true(ur);
        if (s->use_regex && !(s->re = compile_regex(GPT2_REGEX, e)))
            return -1;
        t->byte_level = true;
    } else if (!strcmp(type, "WhitespaceSplit") || !strcmp(type, "Punctuation")) {
        s->kind = PRE_SPLIT;
        bool punct = !strcmp(type, "Punctuation");
        s->chars = punct ? CLASS_PUNCTUATION : CLASS_WHITESPACE;
        s->behavior = punct ? split_behavior_of(jstr(p, "behavior"), SPLIT_ISOLATED) : SPLIT_REMOVED;
    } else if (!strcmp(type, "Split") || !strcmp(type, "Digits") || !strcmp(type, "Whitespace")) {
        s->kind = PRE_SPLIT;
        bool is_regex = true;
        char *pat = NULL;
        const char *behavior = jstr(p, "behavior");
        if (!strcmp(type, "Split")) {
            pat = pattern_of(json_object_get(p, "pattern"), &is_regex);
            s->invert = json_is_true(json_object_get(p, "invert"));
        } else if (!strcmp(type, "Digits")) {
            bool each = json_is_true(json_object_get(p, "individual_digits"));
            pat = strdup(each ? "\\p{N}" : "\\p{N}+");
            behavior = "Isolated";
        } else if (!strcmp(type, "Whitespace")) {
            pat = strdup("\\w+|[^\\w\\s]+");
            behavior = "Removed";
            s->invert = true;
        }
        if (!pat)
            return err_set(e, 400, "BadTokenizer", "Split pre_tokenizer without a pattern");
        if (is_regex) {
            s->re = compile_regex(pat, e);
            free(pat);
            if (!s->re)
                return -1;
        } else {
            s->literal = pat;
        }
        s->behavior = split_behavior_of(behavior, SPLIT_ISOLATED);
    } else if (!strcmp(type, "Metaspace")) {
        s->kind = PRE_METASPACE;
        const char *r = jstr(p, "replacement");
        s->replacement = strdup(r ? r : "\xE2\x96\x81");
        const char *scheme = jstr(p, "prepend_scheme");
        if (scheme)
            s->prepend = !strcmp(scheme, "never") ? 0 : !strcmp(scheme, "first") ? 1 : 2;
        else
            s->prepend = json_is_false(json_object_get(p, "add_prefix_space")) ? 0 : 2;
        json_t *sp = json_object_get(p, "split");
        s->split = !sp || json_is_true(sp);
    } else {
        return err_set(e, 400, "BadTokenizer", "pre_tokenizer '%s' is not supported", type);
    }
    t->n_pre++;
    return 0;
}

static int add_norm(infer_tokenizer *t, json_t *n, err *e)
{
    const char *type = jstr(n, "type");
    if (!type)
        return err_set(e, 400, "BadTokenizer", "normalizer without a type");
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(n, "normalizers"), i, x) if (add_norm(t, x, e)) return -1;
        return 0;
    }
    t->norm = realloc(t->norm, (t->n_norm + 1) * sizeof *t->norm);
    norm_step *s = &t->norm[t->n_norm];
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "Prepend")) {
        s->kind = NORM_PREPEND;
        s->a = strdup(jstr(n, "prepend") ? jstr(n, "prepend") : "");
    } else if (!strcmp(type, "Replace")) {
        bool is_regex;
        s->kind = NORM_REPLACE;
        s->a = pattern_of(json_object_get(n, "pattern"), &is_regex);
        s->b = strdup(jstr(n, "content") ? jstr(n, "content") : "");
        if (!s->a || is_regex || !*s->a) {
            free(s->a);
            free(s->b);
            return err_set(e, 400, "BadTokenizer", "Replace normalizer: only string patterns are supported");
        }
    } else if (!strcmp(type, "NFC") || !strcmp(type, "NFD") || !strcmp(type, "NFKC") ||
               !strcmp(type, "NFKD")) {
        s->kind = NORM_UNICODE;
        s->unicode_form = (type[2] == 'C' || type[3] == 'C' ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
                          (type[2] == 'K' ? UTF8PROC_COMPAT : 0);
    } else if (!strcmp(type, "StripAccents")) {
        s->kind = NORM_STRIP_ACCENTS;
    } else if (!strcmp(type, "BertNormalizer")) {
        s->kind = NORM_BERT;
        json_t *sa = json_object_get(n, "strip_accents");
        s->clean_text = !json_is_false(json_object_get(n, "clean_text"));
        s->chinese_chars = !json_is_false(json_object_get(n, "handle_chinese_chars"));
        s->lowercase = !json_is_false(json_object_get(n, "lowercase"));
        s->strip_accents = json_is_boolean(sa) ? json_is_true(sa) : s->lowercase;   /* null: follows lowercase */
    } else if (!strcmp(type, "Lowercase")) {
        s->kind = NORM_LOWERCASE;
    } else if (!strcmp(type, "Strip")) {
        s->kind = NORM_STRIP;
        s->left = json_is_true(json_object_get(n, "strip_left"));
        s->right = json_is_true(json_object_get(n, "strip_right"));
    } else {
        return err_set(e, 400, "BadTokenizer", "normalizer '%s' is not supported", type);
    }
    t->n_norm++;
    return 0;
}

static int add_dec(infer_tokenizer *t, json_t *d, err *e)
{
    const char *type = jstr(d, "type");
    if (!type)
        return err_set(e, 400, "BadTokenizer", "decoder without a type");
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(d, "decoders"), i, x) if (add_dec(t, x, e)) return -1;
        return 0;
    }
    t->dec = realloc(t->dec, (t->n_dec + 1) * sizeof *t->dec);
    dec_step *s = &t->dec[t->n_dec];
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "ByteLevel")) {
        s->kind = DEC_BYTELEVEL;
    } else if (!strcmp(type, "Replace")) {
        bool is_regex;
        s->kind = DEC_REPLACE;
        s->a = pattern_of(json_object_get(d, "pattern"), &is_regex);
        s->b = strdup(jstr(d, "content") ? jstr(d, "content") : "");
        if (!s->a || is_regex || !*s->a) {
            free(s->a);
            free(s->b);
            return err_set(e, 400, "BadTokenizer", "Replace decoder: only string patterns are supported");
        }
    } else if (!strcmp(type, "WordPiece")) {
        s->kind = DEC_WORDPIECE;
        s->a = strdup(jstr(d, "prefix") ? jstr(d, "prefix") : "##");
        s->cleanup = !json_is_false(json_object_get(d, "cleanup"));
    } else if (!strcmp(type, "ByteFallback")) {
        s->kind = DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        s->kind = DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        s->kind = DEC_STRIP;
        s->a = strdup(jstr(d, "content") ? jstr(d, "content") : " ");
        s->start = (int)json_integer_value(json_object_get(d, "start"));
        s->stop = (int)json_integer_value(json_object_get(d, "stop"));
    } else if (!strcmp(type, "Metaspace")) {
        s->kind = DEC_METASPACE;
        const char *r = jstr(d, "replacement");
        s->a = strdup(r ? r : "\xE2\x96\x81");
        const char *scheme = jstr(d, "prepend_scheme");
        if (scheme)
            s->prepend = !strcmp(scheme, "never") ? 0 : !strcmp(scheme, "first") ? 1 : 2;
        else
            s->prepend = json_is_false(json_object_get(d, "add_prefix_space")) ? 0 : 2;
    } else {
        return err_set(e, 400, "BadTokenizer", "decoder '%s' is not supported", type);
    }
    t->n_dec++;
    return 0;
}

static void push_id(int32_t **v, size_t *n, int32_t id)
{
    *v = realloc(*v, (*n + 1) * sizeof **v);
    (*v)[(*n)++] = id;
}

static int add_post(infer_tokenizer *t, json_t *p, err *e)
{
    const char *type = jstr(p, "type");
    if (!type)
        return 0;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(p, "processors"), i, x) if (add_post(t, x, e)) return -1;
        return 0;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens");
        size_t i;
        json_t *x;
        bool after = false;
        json_array_foreach(single, i, x) {
            json_t *st = json_object_get(x, "SpecialToken");
            if (!st) {
                after = true;
                continue;
            }
            json_t *ids = json_object_get(json_object_get(specials, jstr(st, "id") ? jstr(st, "id") : ""), "ids");
            size_t j;
            json_t *y;
            if (!json_is_array(ids))
                return err_set(e, 400, "BadTokenizer", "TemplateProcessing names an unknown special token");
            json_array_foreach(ids, j, y) {
                if (after)
                    push_id(&t->suffix, &t->n_suffix, (int32_t)json_integer_value(y));
                else
                    push_id(&t->prefix, &t->n_prefix, (int32_t)json_integer_value(y));
            }
        }
        return 0;
    }
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        /* {"cls": ["[CLS]", 101], "sep": ["[SEP]", 102]}: cls A sep */
        json_t *cls = json_array_get(json_object_get(p, "cls"), 1),
               *sep = json_array_get(json_object_get(p, "sep"), 1);
        if (!json_is_integer(cls) || !json_is_integer(sep))
            return err_set(e, 400, "BadTokenizer", "%s needs cls and sep as [token, id]", type);
        push_id(&t->prefix, &t->n_prefix, (int32_t)json_integer_value(cls));
        push_id(&t->suffix, &t->n_suffix, (int32_t)json_integer_value(sep));
        return 0;
    }
    if (!strcmp(type, "ByteLevel"))
        return 0;   /* offsets only */
    return err_set(e, 400, "BadTokenizer", "post_processor '%s' is not supported", type);
}

/* The model's vocab object and the added tokens: pieces, ids, the string → id index. */
static int load_vocab(infer_tokenizer *t, json_t *vocab, json_t *added, err *e)
{
    int max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= 1 << 24)
            return err_set(e, 400, "BadTokenizer", "vocab entry '%s' has a bad id", key);
        if (json_integer_value(val) > max_id)
            max_id = (int)json_integer_value(val);
    }
    size_t i;
    json_t *x;
    json_array_foreach(added, i, x) {
        json_t *id = json_object_get(x, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= 1 << 24 ||
            !json_is_string(json_object_get(x, "content")))
            return err_set(e, 400, "BadTokenizer", "added token %zu needs an id and content", i);
        if (json_integer_value(id) > max_id)
            max_id = (int)json_integer_value(id);
    }
    if (alloc_vocab(t, max_id + 1))
        return err_set(e, 500, "OutOfMemory", "out of memory");
    json_object_foreach(vocab, key, val)
        set_piece(t, (int32_t)json_integer_value(val), key, strlen(key));
    json_array_foreach(added, i, x) {
        int32_t id = (int32_t)json_integer_value(json_object_get(x, "id"));
        const char *content = jstr(x, "content");
        set_piece(t, id, content, strlen(content));
        t->added = realloc(t->added, (t->n_added + 1) * sizeof *t->added);
        t->added[t->n_added++] = (added_token){
            strdup(content), strlen(content), id, json_is_true(json_object_get(x, "special")),
            json_is_true(json_object_get(x, "lstrip")), json_is_true(json_object_get(x, "rstrip"))};
        t->special[id] = json_is_true(json_object_get(x, "special"));
    }
    vocab_index(t);
    return 0;
}

static int load_model_bpe(infer_tokenizer *t, json_t *model, json_t *added, err *e)
{
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges))
        return err_set(e, 400, "BadTokenizer", "BPE model needs a vocab object and a merges list");
    if (load_vocab(t, vocab, added, e))
        return -1;
    size_t i;
    json_t *x;
    size_t n = json_array_size(merges);
    const char **a = calloc(n + 1, sizeof *a), **b = calloc(n + 1, sizeof *b);
    size_t *al = calloc(n + 1, sizeof *al), *bl = calloc(n + 1, sizeof *bl);
    int rc = 0;
    json_array_foreach(merges, i, x) {
        if (json_is_string(x)) {   /* "a b" */
            const char *s = json_string_value(x), *sp = strchr(s, ' ');
            if (!sp || sp == s) {
                rc = err_set(e, 400, "BadTokenizer", "merge %zu is not 'a b'", i);
                break;
            }
            a[i] = s;
            al[i] = (size_t)(sp - s);
            b[i] = sp + 1;
            bl[i] = strlen(sp + 1);
        } else if (json_is_array(x) && json_array_size(x) == 2 && json_is_string(json_array_get(x, 0)) &&
                   json_is_string(json_array_get(x, 1))) {
            a[i] = json_string_value(json_array_get(x, 0));
            al[i] = json_string_length(json_array_get(x, 0));
            b[i] = json_string_value(json_array_get(x, 1));
            bl[i] = json_string_length(json_array_get(x, 1));
        } else {
            rc = err_set(e, 400, "BadTokenizer", "merge %zu is neither 'a b' nor [a, b]", i);
            break;
        }
    }
    if (rc == 0)
        rc = merges_from_strings(t, a, al, b, bl, n, e);
    free(a);
    free(b);
    free(al);
    free(bl);
    if (rc)
        return rc;
    t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    const char *unk = jstr(model, "unk_token");
    t->unk_id = unk ? vocab_get(t, unk, strlen(unk)) : -1;
    finish_byte_ids(t);
    return 0;
}

/* WordPiece (BERT): a vocab, "##" for pieces inside a word, words past a length limit → unk. */
static int load_model_wordpiece(infer_tokenizer *t, json_t *model, json_t *added, err *e)
{
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab))
        return err_set(e, 400, "BadTokenizer", "WordPiece model needs a vocab object");
    if (load_vocab(t, vocab, added, e))
        return -1;
    const char *unk = jstr(model, "unk_token") ? jstr(model, "unk_token") : "[UNK]";
    const char *prefix = jstr(model, "continuing_subword_prefix");
    json_t *max = json_object_get(model, "max_input_chars_per_word");
    t->wordpiece = true;
    t->subword_prefix = strdup(prefix ? prefix : "##");
    t->max_word_chars = json_is_integer(max) ? (int)json_integer_value(max) : 100;
    if (json_is_integer(max) && (json_integer_value(max) < 0 || json_integer_value(max) > INT32_MAX))
        return err_set(e, 400, "BadTokenizer", "WordPiece max_input_chars_per_word is out of range");
    /* The library fails at encode time when a word needs unk and there is none; every word
     * may, so say it at load. */
    if ((t->unk_id = vocab_get(t, unk, strlen(unk))) < 0)
        return err_set(e, 400, "BadTokenizer", "WordPiece unk_token '%s' is not in the vocabulary", unk);
    finish_byte_ids(t);
    return 0;
}

static int load_model(infer_tokenizer *t, json_t *model, json_t *added, err *e)
{
    const char *type = jstr(model, "type");
    if (type && !strcmp(type, "WordPiece"))
        return load_model_wordpiece(t, model, added, e);
    if (type && strcmp(type, "BPE"))
        return err_set(e, 400, "BadTokenizer", "tokenizer model '%s' is not supported (BPE, WordPiece)",
                       type);
    return load_model_bpe(t, model, added, e);
}

int infer_tokenizer_load_json(infer_tokenizer **out, const char *json, size_t len, err *e)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(e, 400, "BadTokenizer", "tokenizer.json: bad JSON: %s (line %d)", je.text, je.line);
    }
    infer_tokenizer *t = calloc(1, sizeof *t);
    byte_tables(t);
    json_t *added = json_object_get(root, "added_tokens");
    int rc = load_model(t, json_object_get(root, "model"), json_is_array(added) ? added : NULL, e);
    json_t *n = json_object_get(root, "normalizer"), *p = json_object_get(root, "pre_tokenizer"),
           *d = json_object_get(root, "decoder"), *pp = json_object_get(root, "post_processor");
    if (rc == 0 && json_is_object(n))
        rc = add_norm(t, n, e);
    if (rc == 0 && json_is_object(p))
        rc = add_pre(t, p, e);
    if (rc == 0 && json_is_object(d))
        rc = add_dec(t, d, e);
    if (rc == 0 && json_is_object(pp))
        rc = add_post(t, pp, e);
    for (size_t i = 0; rc == 0 && i < t->n_dec; i++)
        if (t->dec[i].kind == DEC_BYTELEVEL)
            t->byte_level = true;
    for (size_t i = 0; rc == 0 && i < t->n_prefix + t->n_suffix; i++) {
        int32_t id = i < t->n_prefix ? t->prefix[i] : t->suffix[i - t->n_prefix];
        if (id < 0 || id >= t->vocab_size)
            rc = err_set(e, 400, "BadTokenizer", "post_processor id %d is outside the vocabulary", id);
    }
    json_decref(root);
    if (rc) {
        infer_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int infer_tokenizer_load_dir(infer_tokenizer **out, const char *dir, err *e)
{
    buf path = BUF_INIT, text = BUF_INIT;
    buf_printf(&path, "%s/tokenizer.json", dir);
    int rc;
    if (path_read_file(path.data, &text) != 0)
        rc = err_set(e, 404, "EntryNotFound", "%s: cannot read", path.data);
    else
        rc = infer_tokenizer_load_json(out, text.data ? text.data : "", text.len, e);
    buf_free(&path);
    buf_free(&text);
    return rc;
}

/* ---- loading: GGUF vocabulary ------------------------------------------------------------------ */

int infer_tokenizer_from_gguf(infer_tokenizer **out, const gguf_file *g, err *e)
{
    *out = NULL;
    const char **toks, **merges = NULL;
    size_t *tlen, *mlen = NULL, ntok, nmerge = 0;
    if (infer_gguf_string_array(g, "tokenizer.ggml.tokens", &toks, &tlen, &ntok) != 0 || ntok == 0 ||
        ntok >= 1 << 24)
        return err_set(e, 400, "BadTokenizer", "GGUF tokenizer.ggml.tokens is missing or empty");
    char *model = infer_gguf_string(g, "tokenizer.ggml.model");
    char *pre = infer_gguf_string(g, "tokenizer.ggml.pre");
    infer_tokenizer *t = calloc(1, sizeof *t);
    byte_tables(t);
    alloc_vocab(t, (int)ntok);
    for (size_t i = 0; i < ntok; i++)
        set_piece(t, (int32_t)i, toks[i], tlen[i]);
    vocab_index(t);
    double *types = NULL, *scores = NULL;
    size_t ntypes = 0, nscores = 0;
    infer_gguf_number_array(g, "tokenizer.ggml.token_type", &types, &ntypes);
    int rc = 0;
    for (size_t i = 0; i < ntypes && i < ntok; i++) {
        int ty = types[i] >= 0 && types[i] <= 16 ? (int)types[i] : 0;   /* NaN too: a normal token */
        if (ty == 3 || ty == 4) {   /* control / user-defined: matched in raw text */
            t->special[i] = ty == 3;
            t->added = realloc(t->added, (t->n_added + 1) * sizeof *t->added);
            t->added[t->n_added++] = (added_token){memdup0(toks[i], tlen[i]), tlen[i], (int32_t)i,
                                                   ty == 3, false, false};
        }
    }
    bool spm = model && !strcmp(model, "llama");
    if (model && !strcmp(model, "gpt2")) {
        t->byte_level = true;
        if (infer_gguf_string_array(g, "tokenizer.ggml.merges", &merges, &mlen, &nmerge) != 0)
            rc = err_set(e, 400, "BadTokenizer", "GGUF gpt2 tokenizer without tokenizer.ggml.merges");
        const char **a = calloc(nmerge + 1, sizeof *a), **b = calloc(nmerge + 1, sizeof *b);
        size_t *al = calloc(nmerge + 1, sizeof *al), *bl = calloc(nmerge + 1, sizeof *bl);
        for (size_t i = 0; rc == 0 && i < nmerge; i++) {
            const char *sp = memchr(merges[i], ' ', mlen[i]);
            if (!sp || sp == merges[i]) {
                rc = err_set(e, 400, "BadTokenizer", "GGUF merge %zu is not 'a b'", i);
                break;
            }
            a[i] = merges[i];
            al[i] = (size_t)(sp - merges[i]);
            b[i] = sp + 1;
            bl[i] = mlen[i] - al[i] - 1;
        }
        if (rc == 0)
            rc = merges_from_strings(t, a, al, b, bl, nmerge, e);
        free(a);
        free(b);
        free(al);
        free(bl);
        const char *regex = GPT2_REGEX;
        if (pre && (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "smollm")))
            regex = LLAMA3_REGEX;
        else if (pre && (!strcmp(pre, "qwen2") || !strcmp(pre, "deepseek-r1-qwen")))
            regex = QWEN2_REGEX;
        if (rc == 0) {
            t->pre = calloc(2, sizeof *t->pre);
            t->pre[0] = (pre_step){.kind = PRE_SPLIT, .behavior = SPLIT_ISOLATED};
            t->pre[1] = (pre_step){.kind = PRE_BYTELEVEL, .use_regex = false};
            t->n_pre = 2;
            if (!(t->pre[0].re = compile_regex(regex, e)))
                rc = -1;
            t->dec = calloc(1, sizeof *t->dec);
            t->dec[0].kind = DEC_BYTELEVEL;
            t->n_dec = 1;
            t->ignore_merges = regex == LLAMA3_REGEX;
        }
    } else if (spm) {
        /* SentencePiece-style: merges ranked by the merged piece's score, byte fallback. */
        if (infer_gguf_number_array(g, "tokenizer.ggml.scores", &scores, &nscores) != 0 || nscores != ntok)
            rc = err_set(e, 400, "BadTokenizer", "GGUF llama tokenizer needs one score per token");
        else {
            t->scores = malloc(ntok * sizeof *t->scores);
            for (size_t i = 0; i < ntok; i++)
                t->scores[i] = (float)scores[i];
        }
        t->byte_fallback = true;
        double v;
        bool space_prefix = !infer_gguf_number(g, "tokenizer.ggml.add_space_prefix", &v) || v != 0;
        t->norm = calloc(2, sizeof *t->norm);
        if (space_prefix)
            t->norm[t->n_norm++] = (norm_step){.kind = NORM_PREPEND, .a = strdup("\xE2\x96\x81")};
        t->norm[t->n_norm++] = (norm_step){.kind = NORM_REPLACE, .a = strdup(" "), .b = strdup("\xE2\x96\x81")};
        t->dec = calloc(4, sizeof *t->dec);
        t->dec[t->n_dec++] = (dec_step){.kind = DEC_REPLACE, .a = strdup("\xE2\x96\x81"), .b = strdup(" ")};
        t->dec[t->n_dec++] = (dec_step){.kind = DEC_BYTEFALLBACK};
        t->dec[t->n_dec++] = (dec_step){.kind = DEC_FUSE};
        if (space_prefix)
            t->dec[t->n_dec++] = (dec_step){.kind = DEC_STRIP, .a = strdup(" "), .start = 1};
    } else {
        rc = err_set(e, 400, "BadTokenizer", "GGUF tokenizer model '%s' is not supported (gpt2, llama)",
                     model ? model : "(none)");
    }
    double v;
    t->unk_id = infer_gguf_number(g, "tokenizer.ggml.unknown_token_id", &v) && v >= 0 && v < (double)ntok
                   ? (int32_t)v : -1;
    if (infer_gguf_number(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && v < (double)ntok) {
        double add;
        bool add_bos = infer_gguf_number(g, "tokenizer.ggml.add_bos_token", &add) ? add != 0 : spm;
        if (add_bos)
            push_id(&t->prefix, &t->n_prefix, (int32_t)v);
    }
    finish_byte_ids(t);
    free(toks);
    free(tlen);
    free(merges);
    free(mlen);
    free(types);
    free(scores);
    free(model);
    free(pre);
    if (rc) {
        infer_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void infer_tokenizer_free(infer_tokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->vocab_size; i++)
        free(t->pieces[i]);
    free(t->pieces);
    free(t->piece_len);
    free(t->special);
    free(t->vocab.slots);
    free(t->merges.slots);
    free(t->scores);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    for (size_t i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (size_t i = 0; i < t->n_pre; i++) {
        pcre2_code_free(t->pre[i].re);
        free(t->pre[i].literal);
        free(t->pre[i].replacement);
    }
    free(t->pre);
    for (size_t i = 0; i < t->n_dec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
    }
    free(t->dec);
    free(t->prefix);
    free(t->suffix);
    free(t->subword_prefix);
    free(t);
}

int infer_tokenizer_vocab_size(const infer_tokenizer *t) { return t->vocab_size; }

int32_t infer_token_id(const infer_tokenizer *t, const char *piece)
{
    return vocab_get(t, piece, strlen(piece));
}

/* ---- encoding ------------------------------------------------------------------------------------ */

/* A piece of text on its way through the pipeline; `first` = it starts at offset 0 of the input. */
typedef struct piece {
    char *s;
    size_t n;
    bool first;
} piece;

typedef struct piece_list {
    piece *v;
    size_t n, cap;
} piece_list;

static void pl_push(piece_list *l, const char *s, size_t n, bool first)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (piece){memdup0(s, n), n, first};
}

static void pl_free(piece_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].s);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void replace_all(buf *out, const char *s, size_t n, const char *from, const char *to)
{
    size_t fl = strlen(from);
    for (size_t i = 0; i < n;) {
        if (i + fl <= n && !memcmp(s + i, from, fl)) {
            buf_puts(out, to);
            i += fl;
        } else {
            buf_putc(out, s[i++]);
        }
    }
}

static void normalize(const infer_tokenizer *t, buf *text)
{
    for (size_t k = 0; k < t->n_norm; k++) {
        const norm_step *st = &t->norm[k];
        buf out = BUF_INIT;
        switch (st->kind) {
        case NORM_PREPEND:
            if (text->len) {
                buf_puts(&out, st->a);
                buf_append(&out, text->data, text->len);
            }
            break;
        case NORM_REPLACE:
            replace_all(&out, text->data ? text->data : "", text->len, st->a, st->b);
            break;
        case NORM_LOWERCASE:
            infer_text_lowercase(text->data ? text->data : "", text->len, &out);
            break;
        case NORM_UNICODE:
            unicode_normalize(text->data ? text->data : "", text->len, st->unicode_form, &out);
            break;
        case NORM_STRIP_ACCENTS:
            strip_marks(text->data ? text->data : "", text->len, &out);
            break;
        case NORM_BERT:
            bert_normalize(st, text->data ? text->data : "", text->len, &out);
            break;
        case NORM_STRIP: {
            size_t a = 0, b = text->len;
            while (st->left && a < b && is_space_cp((uint8_t)text->data[a]))
                a++;
            while (st->right && b > a && is_space_cp((uint8_t)text->data[b - 1]))
                b--;
            buf_append(&out, text->data + a, b - a);
            break;
        }
        }
        buf_free(text);
        *text = out;
    }
}

/* Match spans of a split step over s: (start, end) pairs. */
static void span_push(size_t **spans, size_t *count, size_t *cap, size_t start, size_t end)
{
    if (*count == *cap)
        *spans = realloc(*spans, (*cap *= 2) * 2 * sizeof **spans);
    (*spans)[2 * *count] = start;
    (*spans)[2 * *count + 1] = end;
    (*count)++;
}

static size_t find_matches(const pre_step *st, const char *s, size_t n, size_t **spans)
{
    size_t count = 0, cap = 16;
    *spans = malloc(cap * 2 * sizeof **spans);
    if (st->chars != CLASS_NONE) {
        for (size_t i = 0; i < n;) {
            size_t at = i;
            uint32_t cp = next_cp(s, n, &i);
            if (st->chars == CLASS_WHITESPACE ? is_space_cp(cp) : is_punctuation_cp(cp))
                span_push(spans, &count, &cap, at, i);
        }
        return count;
    }
    if (st->literal) {
        size_t ll = strlen(st->literal);
        for (size_t i = 0; ll && i + ll <= n;) {
            if (!memcmp(s + i, st->literal, ll)) {
                span_push(spans, &count, &cap, i, i + ll);
                i += ll;
            } else {
                i++;
            }
        }
        return count;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(st->re, NULL);
    size_t at = 0;
    while (at <= n) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) {   /* empty match: step one character */
            if (ov[0] >= n)
                break;
            at = ov[0] + utf8_len(s + ov[0], n - ov[0]);
            continue;
        }
        span_push(spans, &count, &cap, ov[0], ov[1]);
        at = ov[1];
    }
    pcre2_match_data_free(md);
    return count;
}

static void split_piece(const pre_step *st, const piece *p, piece_list *out)
{
    size_t *m, nm = find_matches(st, p->s, p->n, &m);
    /* Segments covering the piece, each flagged as a match (delimiter) or not. */
    size_t nseg = 0;
    size_t(*seg)[3] = malloc((2 * nm + 1) * sizeof *seg);
    size_t at = 0;
    for (size_t i = 0; i < nm; i++) {
        if (m[2 * i] > at)
            seg[nseg][0] = at, seg[nseg][1] = m[2 * i], seg[nseg++][2] = 0;
        seg[nseg][0] = m[2 * i], seg[nseg][1] = m[2 * i + 1], seg[nseg++][2] = 1;
        at = m[2 * i + 1];
    }
    if (at < p->n)
        seg[nseg][0] = at, seg[nseg][1] = p->n, seg[nseg++][2] = 0;
    if (st->invert)
        for (size_t i = 0; i < nseg; i++)
            seg[i][2] = !seg[i][2];
    size_t start = 0;   /* pending start for merges */
    bool pending = false;
    for (size_t i = 0; i < nseg; i++) {
        size_t a = seg[i][0], b = seg[i][1];
        bool delim = seg[i][2];
        switch (st->behavior) {
        case SPLIT_REMOVED:
            if (!delim)
                pl_push(out, p->s + a, b - a, p->first && a == 0);
            break;
        case SPLIT_ISOLATED:
            pl_push(out, p->s + a, b - a, p->first && a == 0);
            break;
        case SPLIT_PREV:   /* delimiter joins the piece before it */
            if (!pending) {
                start = a;
                pending = true;
            }
            if (delim || i + 1 == nseg || seg[i + 1][2] == 0) {
                if (delim || i + 1 == nseg) {
                    pl_push(out, p->s + start, b - start, p->first && start == 0);
                    pending = false;
                }
            }
            break;
        case SPLIT_NEXT:   /* delimiter starts the next piece */
            if (delim && pending) {
                pl_push(out, p->s + start, a - start, p->first && start == 0);
                pending = false;
            }
            if (!pending) {
                start = a;
                pending = true;
            }
            if (i + 1 == nseg) {
                pl_push(out, p->s + start, b - start, p->first && start == 0);
                pending = false;
            }
            break;
        case SPLIT_CONTIGUOUS:
            if (delim && i + 1 < nseg && seg[i + 1][2] && seg[i + 1][0] == b) {
                if (!pending) {
                    start = a;
                    pending = true;
                }
                break;
            }
            if (pending) {
                pl_push(out, p->s + start, b - start, p->first && start == 0);
                pending = false;
            } else {
                pl_push(out, p->s + a, b - a, p->first && a == 0);
            }
            break;
        }
    }
    free(seg);
    free(m);
}

static void pre_tokenize(const infer_tokenizer *t, piece_list *words)
{
    for (size_t k = 0; k < t->n_pre; k++) {
        const pre_step *st = &t->pre[k];
        piece_list out = {0};
        for (size_t i = 0; i < words->n; i++) {
            piece *p = &words->v[i];
            if (st->kind == PRE_SPLIT) {
                split_piece(st, p, &out);
            } else if (st->kind == PRE_BYTELEVEL) {
                buf src = BUF_INIT;
                if (st->add_prefix_space && (p->n == 0 || p->s[0] != ' '))
                    buf_putc(&src, ' ');
                buf_append(&src, p->s, p->n);
                piece whole = {src.data ? src.data : "", src.len, p->first};
                piece_list parts = {0};
                if (st->use_regex)
                    split_piece(&(pre_step){.re = st->re, .behavior = SPLIT_ISOLATED}, &whole, &parts);
                else if (src.len)
                    pl_push(&parts, whole.s, whole.n, whole.first);
                for (size_t j = 0; j < parts.n; j++) {
                    buf mapped = BUF_INIT;
                    for (size_t c = 0; c < parts.v[j].n; c++)
                        utf8_put(&mapped, t->byte_to_cp[(uint8_t)parts.v[j].s[c]]);
                    pl_push(&out, mapped.data ? mapped.data : "", mapped.len, parts.v[j].first);
                    buf_free(&mapped);
                }
                pl_free(&parts);
                buf_free(&src);
            } else {   /* Metaspace */
                buf r = BUF_INIT;
                replace_all(&r, p->s, p->n, " ", st->replacement);
                size_t rl = strlen(st->replacement);
                bool starts = r.len >= rl && !memcmp(r.data, st->replacement, rl);
                if (!starts && (st->prepend == 2 || (st->prepend == 1 && p->first))) {
                    buf pre = BUF_INIT;
                    buf_puts(&pre, st->replacement);
                    buf_append(&pre, r.data ? r.data : "", r.len);
                    buf_free(&r);
                    r = pre;
                }
                piece whole = {r.data ? r.data : "", r.len, p->first};
                if (st->split)
                    split_piece(&(pre_step){.literal = st->replacement, .behavior = SPLIT_NEXT}, &whole, &out);
                else if (r.len)
                    pl_push(&out, whole.s, whole.n, whole.first);
                buf_free(&r);
            }
        }
        pl_free(words);
        *words = out;
    }
}

typedef struct sym {
    int32_t id;
} sym;

/* Rank of merging a with b (lower merges first) and the merged id; false when they never merge. */
static bool pair_rank(const infer_tokenizer *t, int32_t a, int32_t b, float *rank, int32_t *result)
{
    if (!t->scores) {
        const pair_entry *pe = pair_get(&t->merges, a, b);
        if (!pe)
            return false;
        *result = pe->result;
        *rank = pe->rank;
        return true;
    }
    /* Score-ranked (SentencePiece): the merged piece must exist; higher score merges first. */
    char tmp[512];
    size_t la = t->piece_len[a], lb = t->piece_len[b];
    if (la + lb > sizeof tmp)
        return false;
    memcpy(tmp, t->pieces[a], la);
    memcpy(tmp + la, t->pieces[b], lb);
    int32_t id = vocab_get(t, tmp, la + lb);
    if (id < 0)
        return false;
    *result = id;
    *rank = -t->scores[id];
    return true;
}

static void bpe_word(const infer_tokenizer *t, const char *w, size_t n, int32_t **ids, size_t *nids)
{
    if (!n)
        return;
    if (t->ignore_merges) {
        int32_t id = vocab_get(t, w, n);
        if (id >= 0) {
            push_id(ids, nids, id);
            return;
        }
    }
    int32_t *s = malloc((n * 4 + 1) * sizeof *s);   /* ≤ 4 byte symbols per input byte, plenty */
    size_t ns = 0;
    bool last_unk = false;
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_len(w + i, n - i);
        int32_t id = vocab_get(t, w + i, cl);
        if (id >= 0) {
            s[ns++] = id;
            last_unk = false;
        } else {
            bool all = t->byte_fallback;
            for (size_t j = 0; all && j < cl; j++)
                all = t->byte_ids[(uint8_t)w[i + j]] >= 0;
            if (all) {
                for (size_t j = 0; j < cl; j++)
                    s[ns++] = t->byte_ids[(uint8_t)w[i + j]];
                last_unk = false;
            } else if (t->unk_id >= 0) {
                if (!(t->fuse_unk && last_unk))
                    s[ns++] = t->unk_id;
                last_unk = true;
            }
        }
        i += cl;
    }
    for (;;) {
        float best = 0;
        size_t at = 0;
        int32_t merged = -1;
        for (size_t i = 0; i + 1 < ns; i++) {
            int32_t r;
            float rank;
            if (pair_rank(t, s[i], s[i + 1], &rank, &r) && (merged < 0 || rank < best)) {
                best = rank;
                at = i;
                merged = r;
            }
        }
        if (merged < 0)
            break;
        s[at] = merged;
        memmove(s + at + 1, s + at + 2, (ns - at - 2) * sizeof *s);
        ns--;
    }
    for (size_t i = 0; i < ns; i++)
        push_id(ids, nids, s[i]);
    free(s);
}

/* WordPiece: the longest vocabulary piece at the start of the word, then the longest
 * prefix-marked ("##") piece at each following position; a word with any position that has
 * none, or longer than max_word_chars characters, is one unk. */
static void wordpiece_word(const infer_tokenizer *t, const char *w, size_t n, int32_t **ids, size_t *nids)
{
    if (!n)
        return;
    size_t chars = 0;
    for (size_t i = 0; i < n; i++)
        chars += ((uint8_t)w[i] & 0xC0) != 0x80;
    if (chars > (size_t)t->max_word_chars) {
        push_id(ids, nids, t->unk_id);
        return;
    }
    size_t mark = *nids;
    buf cand = BUF_INIT;
    for (size_t start = 0; start < n;) {
        int32_t id = -1;
        size_t end = n;
        while (end > start) {
            buf_reset(&cand);
            if (start > 0)
                buf_puts(&cand, t->subword_prefix);
            buf_append(&cand, w + start, end - start);
            if ((id = vocab_get(t, cand.data, cand.len)) >= 0)
                break;
            do   /* back one character */
                end--;
            while (end > start && ((uint8_t)w[end] & 0xC0) == 0x80);
        }
        if (id < 0) {
            *nids = mark;
            push_id(ids, nids, t->unk_id);
            break;
        }
        push_id(ids, nids, id);
        start = end;
    }
    buf_free(&cand);
}

static void encode_segment(const infer_tokenizer *t, const char *text, size_t len, bool first,
                           int32_t **ids, size_t *nids)
{
    buf norm = BUF_INIT;
    buf_append(&norm, text, len);
    normalize(t, &norm);
    piece_list words = {0};
    if (norm.len)
        pl_push(&words, norm.data, norm.len, first);
    pre_tokenize(t, &words);
    for (size_t i = 0; i < words.n; i++)
        (t->wordpiece ? wordpiece_word : bpe_word)(t, words.v[i].s, words.v[i].n, ids, nids);
    pl_free(&words);
    buf_free(&norm);
}

/* Leftmost-longest added token at or after `from`; returns its index or -1. */
static long find_added(const infer_tokenizer *t, const char *s, size_t n, size_t from, size_t *at)
{
    for (size_t i = from; i < n; i++) {
        long best = -1;
        for (size_t k = 0; k < t->n_added; k++) {
            const added_token *a = &t->added[k];
            if (a->len && a->len <= n - i && a->content[0] == s[i] && !memcmp(s + i, a->content, a->len) &&
                (best < 0 || a->len > t->added[best].len))
                best = (long)k;
        }
        if (best >= 0) {
            *at = i;
            return best;
        }
    }
    return -1;
}

static bool space_before(const char *s, size_t i, size_t *start)
{
    size_t j = i;
    while (j > 0) {
        size_t k = j - 1;
        while (k > 0 && ((uint8_t)s[k] & 0xC0) == 0x80)
            k--;
        if (!is_space_cp(utf8_decode(s + k, j - k)))
            break;
        j = k;
    }
    *start = j;
    return j < i;
}

int infer_tokenize(const infer_tokenizer *t, const char *text, size_t len, bool add_special,
                   int32_t **ids, size_t *n_ids, err *e)
{
    *ids = NULL;
    *n_ids = 0;
    if (add_special)
        for (size_t i = 0; i < t->n_prefix; i++)
            push_id(ids, n_ids, t->prefix[i]);
    size_t at = 0;
    while (at <= len) {
        size_t m;
        long k = find_added(t, text, len, at, &m);
        size_t seg_end = k < 0 ? len : m, next = 0;
        if (k >= 0) {
            const added_token *a = &t->added[k];
            size_t ws;
            if (a->lstrip && space_before(text + at, seg_end - at, &ws))
                seg_end = at + ws;
            next = m + a->len;
            if (a->rstrip)
                while (next < len) {
                    size_t cl = utf8_len(text + next, len - next);
                    if (!is_space_cp(utf8_decode(text + next, cl)))
                        break;
                    next += cl;
                }
        }
        if (seg_end > at)
            encode_segment(t, text + at, seg_end - at, at == 0, ids, n_ids);
        if (k < 0)
            break;
        push_id(ids, n_ids, t->added[k].id);
        at = next;
        if (at == len)
            break;
    }
    if (add_special)
        for (size_t i = 0; i < t->n_suffix; i++)
            push_id(ids, n_ids, t->suffix[i]);
    (void)e;   /* every input has an encoding today; e is for limits to come */
    return 0;
}

void infer_tokenizer_truncate(const infer_tokenizer *t, int32_t *ids, size_t *n, size_t max)
{
    if (*n <= max)
        return;
    size_t tail = t->n_suffix <= max ? t->n_suffix : 0;
    memmove(ids + max - tail, ids + *n - tail, tail * sizeof *ids);
    *n = max;
}

/* ---- decoding ------------------------------------------------------------------------------------ */

static int byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Appends the bytes a byte-level token string stands for. */
static void unmap_bytes(const infer_tokenizer *t, const char *s, size_t n, buf *out)
{
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_len(s + i, n - i);
        uint32_t cp = utf8_decode(s + i, cl);
        if (cp < 512 && t->cp_to_byte[cp] >= 0)
            buf_putc(out, (char)t->cp_to_byte[cp]);
        else
            buf_append(out, s + i, cl);
        i += cl;
    }
}

/* The WordPiece decoder's cleanup of English tokenization spaces, replacement by replacement
 * in the library's order. */
static void wordpiece_cleanup(buf *text)
{
    static const char *const pairs[][2] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
        {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (size_t k = 0; k < ARRAY_LEN(pairs); k++) {
        if (!text->len || !memmem(text->data, text->len, pairs[k][0], strlen(pairs[k][0])))
            continue;
        buf r = BUF_INIT;
        replace_all(&r, text->data, text->len, pairs[k][0], pairs[k][1]);
        buf_free(text);
        *text = r;
    }
}

void infer_detokenize(const infer_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                      buf *out)
{
    piece_list toks = {0};
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size || !t->pieces[ids[i]])
            continue;
        if (skip_special && t->special[ids[i]])
            continue;
        pl_push(&toks, t->pieces[ids[i]], t->piece_len[ids[i]], false);
    }
    for (size_t k = 0; k < t->n_dec; k++) {
        const dec_step *st = &t->dec[k];
        piece_list next = {0};
        switch (st->kind) {
        case DEC_BYTELEVEL: {
            buf raw = BUF_INIT, text = BUF_INIT;
            for (size_t i = 0; i < toks.n; i++)
                unmap_bytes(t, toks.v[i].s, toks.v[i].n, &raw);
            utf8_lossy(&text, raw.data ? raw.data : "", raw.len);
            pl_push(&next, text.data ? text.data : "", text.len, false);
            buf_free(&raw);
            buf_free(&text);
            break;
        }
        case DEC_REPLACE:
            for (size_t i = 0; i < toks.n; i++) {
                buf r = BUF_INIT;
                replace_all(&r, toks.v[i].s, toks.v[i].n, st->a, st->b);
                pl_push(&next, r.data ? r.data : "", r.len, false);
                buf_free(&r);
            }
            break;
        case DEC_BYTEFALLBACK:
            for (size_t i = 0; i < toks.n;) {
                if (byte_token(toks.v[i].s, toks.v[i].n) < 0) {
                    pl_push(&next, toks.v[i].s, toks.v[i].n, false);
                    i++;
                    continue;
                }
                buf raw = BUF_INIT;
                size_t j = i;
                for (; j < toks.n && byte_token(toks.v[j].s, toks.v[j].n) >= 0; j++)
                    buf_putc(&raw, (char)byte_token(toks.v[j].s, toks.v[j].n));
                buf check = BUF_INIT;
                utf8_lossy(&check, raw.data, raw.len);
                if (check.len == raw.len && !memcmp(check.data, raw.data, raw.len))
                    pl_push(&next, raw.data, raw.len, false);
                else
                    for (size_t q = i; q < j; q++)
                        pl_push(&next, "\xEF\xBF\xBD", 3, false);
                buf_free(&check);
                buf_free(&raw);
                i = j;
            }
            break;
        case DEC_FUSE: {
            buf all = BUF_INIT;
            for (size_t i = 0; i < toks.n; i++)
                buf_append(&all, toks.v[i].s, toks.v[i].n);
            pl_push(&next, all.data ? all.data : "", all.len, false);
            buf_free(&all);
            break;
        }
        case DEC_STRIP: {
            size_t cl = strlen(st->a);
            for (size_t i = 0; i < toks.n; i++) {
                const char *s = toks.v[i].s;
                size_t a = 0, b = toks.v[i].n;
                for (int c = 0; c < st->start && b - a >= cl && !memcmp(s + a, st->a, cl); c++)
                    a += cl;
                for (int c = 0; c < st->stop && b - a >= cl && !memcmp(s + b - cl, st->a, cl); c++)
                    b -= cl;
                pl_push(&next, s + a, b - a, false);
            }
            break;
        }
        case DEC_WORDPIECE:
            for (size_t i = 0; i < toks.n; i++) {
                buf r = BUF_INIT;
                const char *tok = toks.v[i].s;
                size_t len = toks.v[i].n, pl = strlen(st->a);
                if (i > 0 && len >= pl && !memcmp(tok, st->a, pl)) {
                    tok += pl;
                    len -= pl;
                } else if (i > 0) {
                    buf_putc(&r, ' ');
                }
                buf_append(&r, tok, len);
                if (st->cleanup)
                    wordpiece_cleanup(&r);
                pl_push(&next, r.data ? r.data : "", r.len, false);
                buf_free(&r);
            }
            break;
        case DEC_METASPACE: {
            size_t rl = strlen(st->a);
            for (size_t i = 0; i < toks.n; i++) {
                buf r = BUF_INIT;
                const char *s = toks.v[i].s;
                for (size_t c = 0; c < toks.v[i].n;) {
                    if (c + rl <= toks.v[i].n && !memcmp(s + c, st->a, rl)) {
                        if (!(i == 0 && st->prepend != 0))
                            buf_putc(&r, ' ');
                        c += rl;
                    } else {
                        buf_putc(&r, s[c++]);
                    }
                }
                pl_push(&next, r.data ? r.data : "", r.len, false);
                buf_free(&r);
            }
            break;
        }
        }
        pl_free(&toks);
        toks = next;
    }
    for (size_t i = 0; i < toks.n; i++) {
        if (i > 0 && !t->n_dec)
            buf_putc(out, ' ');   /* no decoder: the library joins tokens with spaces */
        buf_append(out, toks.v[i].s, toks.v[i].n);
    }
    if (!out->data)
        buf_puts(out, "");
    pl_free(&toks);
}

/* Raw bytes one token stands for (byte-level chars mapped back, ▁ → space, <0xNN> → byte),
 * appended to out. */
static void token_bytes(const infer_tokenizer *t, int32_t id, buf *out)
{
    if (id < 0 || id >= t->vocab_size || !t->pieces[id])
        return;
    const char *s = t->pieces[id];
    size_t n = t->piece_len[id];
    if (t->special[id]) {
        buf_append(out, s, n);
        return;
    }
    if (t->byte_level) {
        unmap_bytes(t, s, n, out);
        return;
    }
    int b = byte_token(s, n);
    if (b >= 0) {
        buf_putc(out, (char)b);
        return;
    }
    replace_all(out, s, n, "\xE2\x96\x81", " ");
}

/* ---- streaming ------------------------------------------------------------------------------- */

void infer_stream_init(infer_stream *s)
{
    s->pending = (buf)BUF_INIT;
    s->first = true;
}

void infer_stream_push(infer_stream *s, const infer_tokenizer *t, int32_t id, buf *out)
{
    token_bytes(t, id, &s->pending);
    /* Emit the longest prefix that ends on a character boundary; keep an unfinished tail. */
    size_t n = s->pending.len, keep = 0;
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        uint8_t c = (uint8_t)s->pending.data[n - back];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (need > back)
            keep = back;
        break;
    }
    size_t emit = n - keep;
    if (emit) {
        utf8_lossy(out, s->pending.data, emit);
        s->first = false;
        memmove(s->pending.data, s->pending.data + emit, keep);
        s->pending.len = keep;
        s->pending.data[keep] = 0;
    }
}

void infer_stream_finish(infer_stream *s, buf *out)
{
    if (s->pending.len)
        utf8_lossy(out, s->pending.data, s->pending.len);
    buf_reset(&s->pending);
}

void infer_stream_free(infer_stream *s) { buf_free(&s->pending); }
