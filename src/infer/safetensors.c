/* safetensors.c — safetensors files, memory-mapped and validated.
 *
 * A file is an 8-byte header length, a JSON header naming each tensor's dtype, shape and byte
 * range, then the data. The file is untrusted, so every header is checked against the file
 * before a pointer into it is handed out: sizes agree with shapes, ranges tile the data buffer
 * exactly (no gaps, no overlaps). The tensors are never copied; the mapping lives as long as
 * the tensor set. Also: the tensor-set helpers shared with gguf.c, and the sharded layout
 * (model.safetensors.index.json).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "infer/internal.h"

/* ---- tensor set ---------------------------------------------------------------------------- */

void infer_tensor_set_free(infer_tensor_set *ts)
{
    for (size_t i = 0; i < ts->count; i++)
        free(ts->items[i].name);
    free(ts->items);
    for (size_t i = 0; i < ts->nmaps; i++)
        if (ts->maps[i].len)
            munmap(ts->maps[i].addr, ts->maps[i].len);
    free(ts->maps);
    memset(ts, 0, sizeof *ts);
}

const infer_tensor_entry *infer_tensor_find(const infer_tensor_set *ts, const char *name)
{
    for (size_t i = 0; i < ts->count; i++)
        if (!strcmp(ts->items[i].name, name))
            return &ts->items[i];
    return NULL;
}

void infer_tensor_add(infer_tensor_set *ts, const infer_tensor_entry *entry)
{
    if (ts->count == ts->cap) {
        ts->cap = ts->cap ? 2 * ts->cap : 64;
        ts->items = realloc(ts->items, ts->cap * sizeof *ts->items);
        if (!ts->items)
            abort();
    }
    ts->items[ts->count] = *entry;
    ts->items[ts->count].name = strdup(entry->name);
    ts->count++;
}

int infer_map_file(infer_tensor_set *ts, const char *path, const uint8_t **data, size_t *size,
                   err *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, errno == ENOENT ? 404 : 400, "EntryNotFound", "%s: %s", path,
                       strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, 400, "BadModel", "%s: not a regular file", path);
    }
    void *addr = NULL;
    if (st.st_size > 0) {
        addr = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (addr == MAP_FAILED) {
            close(fd);
            return err_set(e, 500, "InternalError", "%s: mmap: %s", path, strerror(errno));
        }
    }
    close(fd);
    ts->maps = realloc(ts->maps, (ts->nmaps + 1) * sizeof *ts->maps);
    ts->maps[ts->nmaps].addr = addr;
    ts->maps[ts->nmaps].len = (size_t)st.st_size;
    ts->nmaps++;
    *data = addr;
    *size = (size_t)st.st_size;
    return 0;
}

/* ---- header parsing ------------------------------------------------------------------------ */

static int dtype_from_name(const char *s, infer_dtype *t, int *elem_size)
{
    static const struct { const char *name; int size; int type; } names[] = {
        {"F32", 4, INFER_F32}, {"F16", 2, INFER_F16}, {"BF16", 2, INFER_BF16},
        /* known but not usable as weights: accepted by the parser so a file with, say, an
         * I64 position buffer still loads; binding such a tensor fails clearly. */
        {"BOOL", 1, -1}, {"U8", 1, -1}, {"I8", 1, -1}, {"I16", 2, -1}, {"U16", 2, -1},
        {"I32", 4, -1}, {"U32", 4, -1}, {"I64", 8, -1}, {"U64", 8, -1}, {"F64", 8, -1},
        {"C64", 8, -1}, {"F8_E4M3", 1, -1}, {"F8_E5M2", 1, -1}, {"F8_E8M0", 1, -1},
        {"F8_E4M3FNUZ", 1, -1}, {"F8_E5M2FNUZ", 1, -1},
    };
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        if (!strcmp(s, names[i].name)) {
            *t = names[i].type < 0 ? INFER_DTYPE_COUNT : (infer_dtype)names[i].type;
            *elem_size = names[i].size;
            return 0;
        }
    return -1;
}

typedef struct range { uint64_t begin, end; } range;

static int cmp_range(const void *a, const void *b)
{
    const range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

int infer_safetensors_parse(infer_tensor_set *ts, const uint8_t *data, size_t size,
                            const char *what, err *e)
{
    if (size < 8)
        return err_set(e, 400, "BadModel", "%s: too small for a safetensors header (%zu bytes)",
                       what, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | data[i];
    if (n > 100000000 || n > size - 8)
        return err_set(e, 400, "BadModel",
                       "%s: header length %llu does not fit in the file (%zu bytes)", what,
                       (unsigned long long)n, size);
    if (n < 2 || data[8] != '{')
        return err_set(e, 400, "BadModel", "%s: header is not a JSON object", what);
    json_error_t je;
    json_t *root = json_loadb((const char *)data + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return err_set(e, 400, "BadModel", "%s: bad header JSON: %s", what, je.text);
    }
    const uint8_t *buffer = data + 8 + n;
    uint64_t buffer_len = size - 8 - n;
    size_t count = json_object_size(root);
    range *ranges = calloc(count ? count : 1, sizeof *ranges);
    size_t nranges = 0, first_new = ts->count;
    const char *key;
    json_t *val;
    int rc = 0;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) {
                rc = err_set(e, 400, "BadModel", "%s: __metadata__ is not an object", what);
                break;
            }
            continue;
        }
        json_t *dt = json_object_get(val, "dtype"), *shape = json_object_get(val, "shape"),
               *offs = json_object_get(val, "data_offsets");
        infer_dtype type;
        int esize;
        if (!json_is_string(dt) || dtype_from_name(json_string_value(dt), &type, &esize) != 0) {
            rc = err_set(e, 400, "BadModel", "%s: tensor '%s' has an unknown dtype %s", what, key,
                         json_is_string(dt) ? json_string_value(dt) : "(missing)");
            break;
        }
        if (!json_is_array(shape) || json_array_size(shape) > 4 || !json_is_array(offs) ||
            json_array_size(offs) != 2) {
            rc = err_set(e, 400, "BadModel", "%s: tensor '%s' needs a shape (at most 4 dims) and "
                         "two data_offsets", what, key);
            break;
        }
        infer_tensor_entry t = {.name = (char *)key, .type = type, .ndim = (int)json_array_size(shape)};
        uint64_t elems = 1;
        bool ok = true;
        for (int d = 0; d < t.ndim; d++) {
            json_t *dim = json_array_get(shape, (size_t)d);
            if (!json_is_integer(dim) || json_integer_value(dim) < 0 ||
                json_integer_value(dim) > (1LL << 40)) {
                ok = false;
                break;
            }
            t.shape[d] = json_integer_value(dim);
            if (t.shape[d] && elems > UINT64_MAX / (uint64_t)t.shape[d] / 8) {
                ok = false;
                break;
            }
            elems *= (uint64_t)t.shape[d];
        }
        json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
        if (!ok || !json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
            json_integer_value(en) < json_integer_value(b)) {
            rc = err_set(e, 400, "BadModel", "%s: tensor '%s' has a bad shape or data_offsets", what,
                         key);
            break;
        }
        uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(en);
        if (end - begin != elems * (uint64_t)esize) {
            rc = err_set(e, 400, "BadModel",
                         "%s: tensor '%s' holds %llu bytes but its shape needs %llu", what, key,
                         (unsigned long long)(end - begin),
                         (unsigned long long)(elems * (uint64_t)esize));
            break;
        }
        if (end > buffer_len) {
            rc = err_set(e, 400, "BadModel", "%s: tensor '%s' ends past the end of the file", what,
                         key);
            break;
        }
        ranges[nranges].begin = begin;
        ranges[nranges].end = end;
        nranges++;
        t.data = buffer + begin;
        t.nbytes = (size_t)(end - begin);
        if (t.ndim == 0) {   /* a scalar is one row of one element */
            t.ndim = 1;
            t.shape[0] = 1;
        }
        infer_tensor_add(ts, &t);
    }
    if (rc == 0) {
        /* Ranges must tile [0, buffer_len) exactly. Empty tensors take no room. */
        qsort(ranges, nranges, sizeof *ranges, cmp_range);
        uint64_t at = 0;
        for (size_t i = 0; i < nranges && rc == 0; i++) {
            if (ranges[i].begin == ranges[i].end && ranges[i].begin <= at)
                continue;
            if (ranges[i].begin != at)
                rc = err_set(e, 400, "BadModel", "%s: tensor data %s at byte %llu", what,
                             ranges[i].begin < at ? "overlaps" : "has a gap",
                             (unsigned long long)at);
            at = ranges[i].end;
        }
        if (rc == 0 && at != buffer_len)
            rc = err_set(e, 400, "BadModel", "%s: %llu bytes after the last tensor", what,
                         (unsigned long long)(buffer_len - at));
    }
    if (rc != 0) {   /* leave the set as it was */
        for (size_t i = first_new; i < ts->count; i++)
            free(ts->items[i].name);
        ts->count = first_new;
    }
    free(ranges);
    json_decref(root);
    return rc;
}

static int load_one(infer_tensor_set *ts, const char *path, err *e)
{
    const uint8_t *data;
    size_t size;
    if (infer_map_file(ts, path, &data, &size, e) != 0)
        return -1;
    return infer_safetensors_parse(ts, data, size, path, e);
}

int infer_safetensors_load_dir(infer_tensor_set *ts, const char *dir, err *e)
{
    buf path = BUF_INIT, index = BUF_INIT;
    int rc = 0;
    buf_printf(&path, "%s/model.safetensors.index.json", dir);
    if (path_read_file(path.data, &index) == 0) {
        json_error_t je;
        json_t *root = json_loadb(index.data ? index.data : "", index.len, 0, &je);
        json_t *map = json_object_get(root, "weight_map");
        if (!json_is_object(map)) {
            rc = err_set(e, 400, "BadModel", "%s: no weight_map object", path.data);
        } else {
            /* Each shard once, in the order first named. */
            const char **done = calloc(json_object_size(map) + 1, sizeof *done);
            size_t ndone = 0;
            const char *key;
            json_t *val;
            json_object_foreach(map, key, val) {
                const char *file = json_string_value(val);
                if (!file || !path_is_valid_repo_path(file, strlen(file)) || strchr(file, '/')) {
                    rc = err_set(e, 400, "BadModel", "%s: bad shard name for '%s'", path.data, key);
                    break;
                }
                bool seen = false;
                for (size_t i = 0; i < ndone && !seen; i++)
                    seen = !strcmp(done[i], file);
                if (seen)
                    continue;
                done[ndone++] = file;
                buf shard = BUF_INIT;
                buf_printf(&shard, "%s/%s", dir, file);
                rc = load_one(ts, shard.data, e);
                buf_free(&shard);
                if (rc)
                    break;
            }
            free(done);
            /* Every tensor the index names must be in its shard. */
            json_object_foreach(map, key, val) {
                if (rc)
                    break;
                if (!infer_tensor_find(ts, key))
                    rc = err_set(e, 400, "BadModel", "%s names '%s' but its shard lacks it",
                                 path.data, key);
            }
        }
        json_decref(root);
    } else {
        buf_reset(&path);
        buf_printf(&path, "%s/model.safetensors", dir);
        rc = load_one(ts, path.data, e);
    }
    buf_free(&path);
    buf_free(&index);
    return rc;
}
