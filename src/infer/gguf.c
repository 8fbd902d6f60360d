/* gguf.c — GGUF v2/v3 files (llama.cpp's format), memory-mapped and validated.
 *
 * Layout: magic, version, tensor count, metadata count, metadata key/values, tensor infos,
 * padding to the alignment, tensor data. The reader walks the image with a bounds-checked
 * cursor; metadata values are not copied, only located (gguf_kv.value points into the
 * mapping), and decoded on demand by the accessors. Tensors land in the shared tensor set in
 * row-major order (GGUF lists dims fastest-first, so they are reversed here).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "infer/internal.h"

typedef struct cursor {
    const uint8_t *p, *end;
    bool bad;
} cursor;

static bool need(cursor *c, uint64_t n)
{
    if (c->bad || (uint64_t)(c->end - c->p) < n) {
        c->bad = true;
        return false;
    }
    return true;
}

static uint64_t rd_le(cursor *c, int bytes)
{
    if (!need(c, (uint64_t)bytes))
        return 0;
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | c->p[i];
    c->p += bytes;
    return v;
}

static const int scalar_size[GGUF_TYPE_COUNT] = {
    [GGUF_U8] = 1, [GGUF_I8] = 1, [GGUF_U16] = 2, [GGUF_I16] = 2, [GGUF_U32] = 4, [GGUF_I32] = 4,
    [GGUF_F32] = 4, [GGUF_BOOL] = 1, [GGUF_U64] = 8, [GGUF_I64] = 8, [GGUF_F64] = 8,
};

/* Skips one value of type t; nested arrays are allowed to depth 2. */
static void skip_value(cursor *c, gguf_type t, int depth)
{
    if (t == GGUF_STRING) {
        uint64_t len = rd_le(c, 8);
        if (need(c, len))
            c->p += len;
    } else if (t == GGUF_ARRAY) {
        uint32_t et = (uint32_t)rd_le(c, 4);
        uint64_t n = rd_le(c, 8);
        if (et >= GGUF_TYPE_COUNT || depth > 2) {
            c->bad = true;
            return;
        }
        if (et != GGUF_STRING && et != GGUF_ARRAY) {
            if (n > (uint64_t)(c->end - c->p) / (uint64_t)scalar_size[et]) {
                c->bad = true;
                return;
            }
            c->p += n * (uint64_t)scalar_size[et];
            return;
        }
        for (uint64_t i = 0; i < n && !c->bad; i++)
            skip_value(c, (gguf_type)et, depth + 1);
    } else if ((unsigned)t < GGUF_TYPE_COUNT) {
        if (need(c, (uint64_t)scalar_size[t]))
            c->p += scalar_size[t];
    } else {
        c->bad = true;
    }
}

static int ggml_to_dtype(uint32_t t, infer_dtype *out)
{
    switch (t) {
    case 0: *out = INFER_F32; return 0;
    case 1: *out = INFER_F16; return 0;
    case 2: *out = INFER_Q4_0; return 0;
    case 8: *out = INFER_Q8_0; return 0;
    case 12: *out = INFER_Q4_K; return 0;
    case 14: *out = INFER_Q6_K; return 0;
    case 30: *out = INFER_BF16; return 0;
    default: return -1;
    }
}

typedef struct span { uint64_t begin, end; } span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

int infer_gguf_parse(gguf_file *g, infer_tensor_set *ts, const uint8_t *data, size_t size,
                     err *e)
{
    memset(g, 0, sizeof *g);
    cursor c = {data, data + size, false};
    if (size < 24 || memcmp(data, "GGUF", 4) != 0)
        return err_set(e, 400, "BadModel", "not a GGUF file (bad magic)");
    c.p += 4;
    g->version = (uint32_t)rd_le(&c, 4);
    if (g->version != 2 && g->version != 3)
        return err_set(e, 400, "BadModel", "GGUF version %u is not supported (need 2 or 3)",
                       g->version);
    uint64_t n_tensors = rd_le(&c, 8), n_kv = rd_le(&c, 8);
    /* Each entry takes at least 12 bytes: cheap bound before allocating. */
    if (n_kv > size / 12 || n_tensors > size / 12)
        return err_set(e, 400, "BadModel", "GGUF counts (%llu tensors, %llu keys) exceed the file",
                       (unsigned long long)n_tensors, (unsigned long long)n_kv);
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    uint64_t alignment = 32;
    for (uint64_t i = 0; i < n_kv; i++) {
        uint64_t klen = rd_le(&c, 8);
        if (!need(&c, klen) || klen == 0 || klen > 65535)
            goto bad;
        gguf_kv *kv = &g->kv[g->nkv];
        kv->key = strndup((const char *)c.p, (size_t)klen);
        g->nkv++;
        c.p += klen;
        uint32_t t = (uint32_t)rd_le(&c, 4);
        if (t >= GGUF_TYPE_COUNT)
            goto bad;
        kv->type = (gguf_type)t;
        kv->value = c.p;
        if (t == GGUF_ARRAY) {
            cursor peek = c;
            kv->elem_type = (gguf_type)rd_le(&peek, 4);
            kv->count = rd_le(&peek, 8);
        }
        skip_value(&c, kv->type, 0);
        if (c.bad)
            goto bad;
        if (!strcmp(kv->key, "general.alignment")) {
            double a;
            if (!infer_gguf_number(g, "general.alignment", &a) || !(a >= 1 && a <= 65536) ||
                ((uint64_t)a & ((uint64_t)a - 1))) {
                infer_gguf_free(g);
                return err_set(e, 400, "BadModel", "GGUF general.alignment is not a power of two");
            }
            alignment = (uint64_t)a;
        }
    }
    span *spans = calloc(n_tensors ? n_tensors : 1, sizeof *spans);
    size_t first_new = ts->count;
    infer_tensor_entry *infos = calloc(n_tensors ? n_tensors : 1, sizeof *infos);
    uint64_t *offsets = calloc(n_tensors ? n_tensors : 1, sizeof *offsets);
    int rc = 0;
    for (uint64_t i = 0; i < n_tensors && rc == 0; i++) {
        uint64_t nlen = rd_le(&c, 8);
        if (!need(&c, nlen) || nlen == 0 || nlen > 256) {
            rc = err_set(e, 400, "BadModel", "GGUF tensor %llu has a bad name", (unsigned long long)i);
            break;
        }
        infos[i].name = strndup((const char *)c.p, (size_t)nlen);
        c.p += nlen;
        uint32_t nd = (uint32_t)rd_le(&c, 4);
        if (c.bad || nd < 1 || nd > 4) {
            rc = err_set(e, 400, "BadModel", "GGUF tensor '%s' has %u dims", infos[i].name, nd);
            break;
        }
        infos[i].ndim = (int)nd;
        uint64_t elems = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne = rd_le(&c, 8);
            if (ne > (1ULL << 40) || (ne && elems > (1ULL << 50) / ne)) {
                rc = err_set(e, 400, "BadModel", "GGUF tensor '%s' is too large", infos[i].name);
                break;
            }
            elems *= ne;
            infos[i].shape[nd - 1 - d] = (int64_t)ne;   /* reverse: row-major, outermost first */
        }
        if (rc)
            break;
        uint32_t type = (uint32_t)rd_le(&c, 4);
        offsets[i] = rd_le(&c, 8);
        if (c.bad) {
            rc = err_set(e, 400, "BadModel", "GGUF tensor directory is truncated");
            break;
        }
        if (ggml_to_dtype(type, &infos[i].type) != 0) {
            rc = err_set(e, 400, "BadModel", "GGUF tensor '%s' has ggml type %u, which is not "
                         "supported (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)", infos[i].name, type);
            break;
        }
        int64_t row = infos[i].shape[nd - 1];
        size_t rb = infer_dtype_row_bytes(infos[i].type, row);
        if (rb == SIZE_MAX) {
            rc = err_set(e, 400, "BadModel", "GGUF tensor '%s': row of %lld is not a whole number "
                         "of %s blocks", infos[i].name, (long long)row, infer_dtype_name(infos[i].type));
            break;
        }
        infos[i].nbytes = row ? rb * (size_t)(elems / (uint64_t)row) : 0;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(infos[j].name, infos[i].name)) {
                rc = err_set(e, 400, "BadModel", "GGUF tensor '%s' appears twice", infos[i].name);
                break;
            }
    }
    if (rc == 0 && c.bad)
        rc = err_set(e, 400, "BadModel", "GGUF header is truncated");
    if (rc == 0) {
        uint64_t header_end = (uint64_t)(c.p - data);
        uint64_t data_start = (header_end + alignment - 1) / alignment * alignment;
        if (data_start > size)
            rc = err_set(e, 400, "BadModel", "GGUF data section starts past the end of the file");
        for (uint64_t i = 0; i < n_tensors && rc == 0; i++) {
            if (offsets[i] % alignment)
                rc = err_set(e, 400, "BadModel", "GGUF tensor '%s' is not aligned", infos[i].name);
            else if (offsets[i] > size - data_start || infos[i].nbytes > size - data_start - offsets[i])
                rc = err_set(e, 400, "BadModel", "GGUF tensor '%s' ends past the end of the file",
                             infos[i].name);
            if (rc != 0)
                break; /* offsets[i] is not trusted: no pointer is formed from it */
            spans[i].begin = offsets[i];
            spans[i].end = offsets[i] + infos[i].nbytes;
            infos[i].data = data + data_start + offsets[i];
        }
        if (rc == 0) {
            qsort(spans, (size_t)n_tensors, sizeof *spans, cmp_span);
            for (uint64_t i = 1; i < n_tensors && rc == 0; i++)
                if (spans[i].begin < spans[i - 1].end)
                    rc = err_set(e, 400, "BadModel", "GGUF tensors overlap");
        }
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (rc == 0)
            infer_tensor_add(ts, &infos[i]);
        free(infos[i].name);
    }
    if (rc != 0) {
        for (size_t i = first_new; i < ts->count; i++)
            free(ts->items[i].name);
        ts->count = first_new;
        infer_gguf_free(g);
    }
    free(infos);
    free(offsets);
    free(spans);
    return rc;
bad:
    infer_gguf_free(g);
    return err_set(e, 400, "BadModel", "GGUF metadata is truncated or malformed");
}

void infer_gguf_free(gguf_file *g)
{
    for (size_t i = 0; i < g->nkv; i++)
        free(g->kv[i].key);
    free(g->kv);
    memset(g, 0, sizeof *g);
}

const gguf_kv *infer_gguf_find(const gguf_file *g, const char *key)
{
    for (size_t i = 0; i < g->nkv; i++)
        if (!strcmp(g->kv[i].key, key))
            return &g->kv[i];
    return NULL;
}

static double scalar_at(gguf_type t, const uint8_t *p)
{
    cursor c = {p, p + 8, false};
    switch (t) {
    case GGUF_U8: case GGUF_BOOL: return (double)rd_le(&c, 1);
    case GGUF_I8: return (double)(int8_t)rd_le(&c, 1);
    case GGUF_U16: return (double)rd_le(&c, 2);
    case GGUF_I16: return (double)(int16_t)rd_le(&c, 2);
    case GGUF_U32: return (double)rd_le(&c, 4);
    case GGUF_I32: return (double)(int32_t)rd_le(&c, 4);
    case GGUF_U64: return (double)rd_le(&c, 8);
    case GGUF_I64: return (double)(int64_t)rd_le(&c, 8);
    case GGUF_F32: {
        uint32_t b = (uint32_t)rd_le(&c, 4);
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    case GGUF_F64: {
        uint64_t b = rd_le(&c, 8);
        double d;
        memcpy(&d, &b, 8);
        return d;
    }
    default: return 0;
    }
}

bool infer_gguf_number(const gguf_file *g, const char *key, double *out)
{
    const gguf_kv *kv = infer_gguf_find(g, key);
    if (!kv || kv->type == GGUF_STRING || kv->type == GGUF_ARRAY)
        return false;
    double v = scalar_at(kv->type, kv->value);
    if (!isfinite(v))   /* a NaN or infinite setting is no setting (and no cast may see it) */
        return false;
    *out = v;
    return true;
}

bool infer_gguf_count(const gguf_file *g, const char *key, double *out)
{
    if (!infer_gguf_number(g, key, out))
        return false;
    *out = fmax(-1e9, fmin(1e9, *out));
    return true;
}

char *infer_gguf_string(const gguf_file *g, const char *key)
{
    const gguf_kv *kv = infer_gguf_find(g, key);
    if (!kv || kv->type != GGUF_STRING)
        return NULL;
    cursor c = {kv->value, kv->value + 8, false};
    uint64_t len = rd_le(&c, 8);
    return strndup((const char *)kv->value + 8, (size_t)len);
}

int infer_gguf_string_array(const gguf_file *g, const char *key, const char ***strs,
                            size_t **lens, size_t *count)
{
    const gguf_kv *kv = infer_gguf_find(g, key);
    if (!kv || kv->type != GGUF_ARRAY || kv->elem_type != GGUF_STRING)
        return -1;
    /* Already bounds-checked by the parser. */
    const uint8_t *p = kv->value + 12;
    *strs = calloc(kv->count ? kv->count : 1, sizeof **strs);
    *lens = calloc(kv->count ? kv->count : 1, sizeof **lens);
    for (uint64_t i = 0; i < kv->count; i++) {
        cursor c = {p, p + 8, false};
        uint64_t len = rd_le(&c, 8);
        (*strs)[i] = (const char *)p + 8;
        (*lens)[i] = (size_t)len;
        p += 8 + len;
    }
    *count = (size_t)kv->count;
    return 0;
}

int infer_gguf_number_array(const gguf_file *g, const char *key, double **out, size_t *count)
{
    const gguf_kv *kv = infer_gguf_find(g, key);
    if (!kv || kv->type != GGUF_ARRAY || kv->elem_type == GGUF_STRING || kv->elem_type == GGUF_ARRAY)
        return -1;
    *out = calloc(kv->count ? kv->count : 1, sizeof **out);
    int sz = scalar_size[kv->elem_type];
    for (uint64_t i = 0; i < kv->count; i++)
        (*out)[i] = scalar_at(kv->elem_type, kv->value + 12 + (size_t)i * (size_t)sz);
    *count = (size_t)kv->count;
    return 0;
}
