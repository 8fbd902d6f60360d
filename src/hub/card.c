/* card — metadata derived from a repo's files, as the Hub shows it: the README's YAML front
 * matter (cardData) and what follows from it and from config.json (tags, pipeline_tag,
 * library_name, config), plus the .gitattributes / .gitignore pattern matching that decides
 * which files are LFS and which are ignored. */
#include "hub/internal.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* The LFS patterns a new repo starts with, as on the Hugging Face Hub. */
const char hub_default_gitattributes[] =
    "*.7z filter=lfs diff=lfs merge=lfs -text\n"
    "*.arrow filter=lfs diff=lfs merge=lfs -text\n"
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    "*.bz2 filter=lfs diff=lfs merge=lfs -text\n"
    "*.ckpt filter=lfs diff=lfs merge=lfs -text\n"
    "*.ftz filter=lfs diff=lfs merge=lfs -text\n"
    "*.gguf filter=lfs diff=lfs merge=lfs -text\n"
    "*.gz filter=lfs diff=lfs merge=lfs -text\n"
    "*.h5 filter=lfs diff=lfs merge=lfs -text\n"
    "*.joblib filter=lfs diff=lfs merge=lfs -text\n"
    "*.lfs.* filter=lfs diff=lfs merge=lfs -text\n"
    "*.mlmodel filter=lfs diff=lfs merge=lfs -text\n"
    "*.model filter=lfs diff=lfs merge=lfs -text\n"
    "*.msgpack filter=lfs diff=lfs merge=lfs -text\n"
    "*.npy filter=lfs diff=lfs merge=lfs -text\n"
    "*.npz filter=lfs diff=lfs merge=lfs -text\n"
    "*.onnx filter=lfs diff=lfs merge=lfs -text\n"
    "*.ot filter=lfs diff=lfs merge=lfs -text\n"
    "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    "*.pb filter=lfs diff=lfs merge=lfs -text\n"
    "*.pickle filter=lfs diff=lfs merge=lfs -text\n"
    "*.pkl filter=lfs diff=lfs merge=lfs -text\n"
    "*.pt filter=lfs diff=lfs merge=lfs -text\n"
    "*.pth filter=lfs diff=lfs merge=lfs -text\n"
    "*.rar filter=lfs diff=lfs merge=lfs -text\n"
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "saved_model/**/* filter=lfs diff=lfs merge=lfs -text\n"
    "*.tar.* filter=lfs diff=lfs merge=lfs -text\n"
    "*.tar filter=lfs diff=lfs merge=lfs -text\n"
    "*.tflite filter=lfs diff=lfs merge=lfs -text\n"
    "*.tgz filter=lfs diff=lfs merge=lfs -text\n"
    "*.wasm filter=lfs diff=lfs merge=lfs -text\n"
    "*.xz filter=lfs diff=lfs merge=lfs -text\n"
    "*.zip filter=lfs diff=lfs merge=lfs -text\n"
    "*.zst filter=lfs diff=lfs merge=lfs -text\n"
    "*tfevents* filter=lfs diff=lfs merge=lfs -text\n";

/* ---- pattern files ------------------------------------------------------------------------ */

/* git's rule, simplified: a pattern without '/' matches the file name at any depth; one with
 * '/' matches the whole path ('*' may then cross directories, which covers "**"). */
static bool pattern_matches(const char *pattern, const char *path)
{
    const char *p = pattern;
    if (*p == '/')
        p++;
    if (!strchr(p, '/')) {
        const char *base = strrchr(path, '/');
        return fnmatch(p, base ? base + 1 : path, 0) == 0;
    }
    return fnmatch(p, path, 0) == 0;
}

/* Calls fn for each non-comment line's first word and the rest of the line. */
static bool scan_patterns(const char *text, const char *path,
                          bool (*decide)(const char *pattern, const char *rest, const char *path,
                                         bool *result))
{
    bool result = false;
    const char *line = text;
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char copy[1024];
        if (len < sizeof copy) {
            memcpy(copy, line, len);
            copy[len] = '\0';
            if (len && copy[len - 1] == '\r')
                copy[len - 1] = '\0';
            char *s = copy;
            while (*s == ' ' || *s == '\t')
                s++;
            if (*s && *s != '#') {
                char *rest = s;
                while (*rest && *rest != ' ' && *rest != '\t')
                    rest++;
                if (*rest)
                    *rest++ = '\0';
                decide(s, rest, path, &result);
            }
        }
        line = end ? end + 1 : NULL;
    }
    return result;
}

static bool decide_lfs(const char *pattern, const char *rest, const char *path, bool *result)
{
    if (!pattern_matches(pattern, path))
        return false;
    /* Later lines win, as in git. */
    if (strstr(rest, "filter=lfs"))
        *result = true;
    else if (strstr(rest, "-filter") || strstr(rest, "!filter"))
        *result = false;
    return true;
}

bool hub_gitattributes_lfs(const char *attributes, const char *path)
{
    return attributes && scan_patterns(attributes, path, decide_lfs);
}

static bool decide_ignore(const char *pattern, const char *rest, const char *path, bool *result)
{
    bool negate = pattern[0] == '!';
    const char *p = negate ? pattern + 1 : pattern;
    char trimmed[1024];
    snprintf(trimmed, sizeof trimmed, "%s", p);
    size_t n = strlen(trimmed);
    bool dir_only = n && trimmed[n - 1] == '/';
    if (dir_only)
        trimmed[n - 1] = '\0';
    bool hit = pattern_matches(trimmed, path);
    if (!hit) { /* a pattern naming a directory ignores everything below it */
        buf prefix = BUF_INIT;
        for (const char *slash = strchr(path, '/'); slash && !hit; slash = strchr(slash + 1, '/')) {
            buf_reset(&prefix);
            buf_append(&prefix, path, (size_t)(slash - path));
            hit = pattern_matches(trimmed, prefix.data);
        }
        buf_free(&prefix);
    } else if (dir_only) {
        hit = false;
    }
    if (hit)
        *result = !negate;
    return hit;
}

bool hub_gitignore_match(const char *ignore, const char *path)
{
    return ignore && scan_patterns(ignore, path, decide_ignore);
}

/* ---- YAML front matter -------------------------------------------------------------------- */

static json_t *scalar_to_json(const yaml_node_t *node)
{
    const char *v = (const char *)node->data.scalar.value;
    size_t len = node->data.scalar.length;
    bool plain = node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (plain) {
        if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE"))
            return json_true();
        if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE"))
            return json_false();
        if (!strcmp(v, "null") || !strcmp(v, "~") || !strcmp(v, "Null") || len == 0)
            return json_null();
        char *end = NULL;
        long long i = strtoll(v, &end, 10);
        if (end && *end == '\0' && end != v)
            return json_integer(i);
        double d = strtod(v, &end);
        if (end && *end == '\0' && end != v && strspn(v, "0123456789.eE+-") == len)
            return json_real(d);
    }
    return json_stringn(v, len);
}

static json_t *node_to_json(yaml_document_t *doc, yaml_node_t *node, int depth)
{
    if (!node || depth > 64)
        return json_null();
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return scalar_to_json(node);
    case YAML_SEQUENCE_NODE: {
        json_t *arr = json_array();
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             it < node->data.sequence.items.top; it++)
            json_array_append_new(arr, node_to_json(doc, yaml_document_get_node(doc, *it),
                                                    depth + 1));
        return arr;
    }
    case YAML_MAPPING_NODE: {
        json_t *obj = json_object();
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            if (!k || k->type != YAML_SCALAR_NODE)
                continue;
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)k->data.scalar.length,
                     (const char *)k->data.scalar.value);
            json_object_set_new(obj, key,
                                node_to_json(doc, yaml_document_get_node(doc, p->value), depth + 1));
        }
        return obj;
    }
    default:
        return json_null();
    }
}

json_t *hub_card_parse(const char *readme, size_t len, err *e)
{
    /* Front matter: "---" on the first line up to the next line that is "---". */
    if (len < 4 || strncmp(readme, "---", 3) != 0 || (readme[3] != '\n' && readme[3] != '\r'))
        return json_object();
    const char *start = readme + (readme[3] == '\r' ? 5 : 4);
    const char *end = NULL;
    for (const char *p = start; p < readme + len; p++) {
        if ((p == start || p[-1] == '\n') && (size_t)(readme + len - p) >= 3 &&
            !strncmp(p, "---", 3) && (p + 3 == readme + len || p[3] == '\n' || p[3] == '\r')) {
            end = p;
            break;
        }
    }
    if (!end)
        return json_object();
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)start, (size_t)(end - start));
    if (!yaml_parser_load(&parser, &doc)) {
        err_set(e, 400, "", "Invalid YAML in README.md metadata: %s (line %zu)",
                parser.problem ? parser.problem : "syntax error", parser.problem_mark.line + 2);
        yaml_parser_delete(&parser);
        return NULL;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    json_t *out = NULL;
    if (!root) {
        out = json_object();
    } else if (root->type != YAML_MAPPING_NODE) {
        err_set(e, 400, "", "README.md metadata must be a YAML mapping (key: value lines)");
    } else {
        out = node_to_json(&doc, root, 0);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return out;
}

/* ---- derived metadata --------------------------------------------------------------------- */

static void add_tag(json_t *tags, const char *tag)
{
    if (!tag || !*tag)
        return;
    size_t i;
    json_t *v;
    json_array_foreach(tags, i, v) if (!strcmp(json_string_value(v), tag)) return;
    json_array_append_new(tags, json_string(tag));
}

/* Adds each string of value (a string or an array of strings) with a prefix. */
static void add_tags_from(json_t *tags, json_t *value, const char *prefix)
{
    char tag[512];
    if (json_is_string(value)) {
        snprintf(tag, sizeof tag, "%s%s", prefix, json_string_value(value));
        add_tag(tags, tag);
    } else if (json_is_array(value)) {
        size_t i;
        json_t *v;
        json_array_foreach(value, i, v) if (json_is_string(v))
        {
            snprintf(tag, sizeof tag, "%s%s", prefix, json_string_value(v));
            add_tag(tags, tag);
        }
    }
}

static const char *pipeline_from_architecture(const char *arch)
{
    static const char *map[][2] = {
        {"ForCausalLM", "text-generation"},
        {"LMHeadModel", "text-generation"},
        {"ForMaskedLM", "fill-mask"},
        {"ForSequenceClassification", "text-classification"},
        {"ForTokenClassification", "token-classification"},
        {"ForQuestionAnswering", "question-answering"},
        {"ForConditionalGeneration", "text2text-generation"},
        {"ForImageClassification", "image-classification"},
        {"Model", "feature-extraction"},
    };
    for (size_t i = 0; i < ARRAY_LEN(map); i++)
        if (text_ends_with(arch, map[i][0]))
            return map[i][1];
    return NULL;
}

static json_t *read_json_file(repo *r, const char *commit, const char *path)
{
    buf data = BUF_INIT;
    err e = ERR_INIT;
    json_t *j = NULL;
    if (repo_read(r, commit, path, &data, &e) == 0 && data.len < (4u << 20))
        j = json_loadb(buf_str(&data), data.len, 0, NULL);
    buf_free(&data);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

json_t *hub_card_meta(hub *h, repo *r, const char *commit, const char *type)
{
    json_t *meta = json_object();
    json_t *tags = json_array();
    buf readme = BUF_INIT;
    err e = ERR_INIT;
    json_t *card = NULL;
    if (repo_read(r, commit, "README.md", &readme, &e) == 0)
        card = hub_card_parse(buf_str(&readme), readme.len, &e);
    buf_free(&readme);
    if (!card)
        card = json_object();
    json_object_set(meta, "cardData", card);

    json_t *config = !strcmp(type, "model") ? read_json_file(r, commit, "config.json") : NULL;
    const char *library = json_string_value(json_object_get(card, "library_name"));
    if (!library && config)
        library = "transformers";
    if (library) {
        json_object_set_new(meta, "library_name", json_string(library));
        add_tag(tags, library);
    }

    repo_entries files = {0};
    if (repo_list(r, commit, "", true, &files, &e) == 0) {
        for (size_t i = 0; i < files.n; i++) {
            if (text_ends_with(files.items[i].path, ".safetensors"))
                add_tag(tags, "safetensors");
            else if (text_ends_with(files.items[i].path, ".gguf"))
                add_tag(tags, "gguf");
        }
    }
    repo_entries_free(&files);

    const char *pipeline = json_string_value(json_object_get(card, "pipeline_tag"));
    if (config) {
        json_t *cfg = json_object();
        json_t *arch = json_object_get(config, "architectures");
        json_t *model_type = json_object_get(config, "model_type");
        if (json_is_array(arch))
            json_object_set(cfg, "architectures", arch);
        if (json_is_string(model_type)) {
            json_object_set(cfg, "model_type", model_type);
            add_tag(tags, json_string_value(model_type));
        }
        json_t *tok = read_json_file(r, commit, "tokenizer_config.json");
        if (tok) {
            json_t *sub = json_object();
            const char *keys[] = {"bos_token", "eos_token", "pad_token", "unk_token",
                                  "chat_template"};
            for (size_t i = 0; i < ARRAY_LEN(keys); i++)
                if (json_object_get(tok, keys[i]))
                    json_object_set(sub, keys[i], json_object_get(tok, keys[i]));
            json_object_set_new(cfg, "tokenizer_config", sub);
            json_decref(tok);
        }
        json_object_set_new(meta, "config", cfg);
        if (!pipeline && json_is_array(arch) && json_array_size(arch))
            pipeline = pipeline_from_architecture(json_string_value(json_array_get(arch, 0)));
        if (json_is_array(arch) && json_array_size(arch) && json_is_string(json_array_get(arch, 0)))
            json_object_set_new(meta, "transformersInfo",
                                json_pack("{s:s}", "auto_model",
                                          json_string_value(json_array_get(arch, 0))));
    }
    if (pipeline) {
        json_object_set_new(meta, "pipeline_tag", json_string(pipeline));
        add_tag(tags, pipeline);
    }
    add_tags_from(tags, json_object_get(card, "tags"), "");
    add_tags_from(tags, json_object_get(card, "datasets"), "dataset:");
    add_tags_from(tags, json_object_get(card, "language"), "");
    add_tags_from(tags, json_object_get(card, "base_model"), "base_model:");
    add_tags_from(tags, json_object_get(card, "license"), "license:");
    if (!strcmp(type, "dataset"))
        add_tags_from(tags, json_object_get(card, "task_categories"), "task_categories:");
    json_object_set_new(meta, "tags", tags);
    json_decref(config);
    json_decref(card);
    return meta;
}
