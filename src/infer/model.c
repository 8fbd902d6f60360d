/* model.c — from files to a ready model: hyper-parameters and bound weights.
 *
 * Two sources give the same infer_model: a Hugging Face directory (config.json, safetensors,
 * tokenizer.json, tokenizer_config.json, generation_config.json) and a GGUF file (metadata keys
 * and the vocabulary inside it). Matrices are used where they lie in the mapping; only small
 * vectors (norms, biases) are converted to F32 copies, and GPT-2's Conv1D weights, which
 * safetensors stores transposed ([in, out]), are transposed once. Every tensor's shape is
 * checked against the config, so a config that does not match the weights fails at load
 * with the tensor's name, never in the middle of a forward pass.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "infer/internal.h"

static void *own(infer_model *m, void *p)
{
    m->owned = realloc(m->owned, (m->nowned + 1) * sizeof *m->owned);
    m->owned[m->nowned++] = p;
    return p;
}

/* ---- tensor binding ------------------------------------------------------------------------- */

typedef struct binder {
    infer_model *m;
    err *e;
    bool failed;
} binder;

static const infer_tensor_entry *find(binder *b, const char *name, bool required)
{
    if (b->failed)
        return NULL;
    const infer_tensor_entry *t = infer_tensor_find(&b->m->tensors, name);
    if (!t && required) {
        err_set(b->e, 400, "BadModel", "missing tensor '%s'", name);
        b->failed = true;
    }
    return t;
}

static int64_t elems_of(const infer_tensor_entry *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* A vector of n floats (norm weight, bias) as an owned F32 copy; NULL when optional and absent. */
static float *bind_vec(binder *b, const char *name, int64_t n, bool required)
{
    const infer_tensor_entry *t = find(b, name, required);
    if (!t)
        return NULL;
    if (t->type == INFER_DTYPE_COUNT || elems_of(t) != n || t->shape[t->ndim - 1] != n) {
        err_set(b->e, 400, "BadModel", "tensor '%s' should be %lld floats", name, (long long)n);
        b->failed = true;
        return NULL;
    }
    float *v = own(b->m, malloc((size_t)n * sizeof *v));
    infer_dequant_row(t->type, t->data, v, n);
    return v;
}

/* Gemma's RMSNorm multiplies by (1 + w): fold the 1 in once. */
static float *bind_norm(binder *b, const char *name, int64_t n, bool required)
{
    float *v = bind_vec(b, name, n, required);
    if (v && b->m->cfg.gemma && !b->m->is_gguf)
        for (int64_t i = 0; i < n; i++)
            v[i] += 1.0f;
    return v;
}

static bool bind_mat(binder *b, const char *name, int64_t rows, int64_t cols, bool required,
                     infer_matrix *out)
{
    const infer_tensor_entry *t = find(b, name, required);
    if (!t)
        return false;
    if (t->type == INFER_DTYPE_COUNT || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        err_set(b->e, 400, "BadModel", "tensor '%s' has shape [%lld, %lld], config says [%lld, %lld]",
                name, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                (long long)rows, (long long)cols);
        b->failed = true;
        return false;
    }
    *out = (infer_matrix){t->type, t->data, rows, cols, infer_dtype_row_bytes(t->type, cols)};
    infer_dtype q = b->m->quantize;
    if (q != INFER_F32 && infer_dtype_block(t->type) == 1 && cols % 32 == 0) {
        /* --quantize: a quantised copy replaces the mapped float matrix */
        size_t rb = infer_dtype_row_bytes(q, cols);
        uint8_t *dst = own(b->m, malloc(rb * (size_t)rows));
        float *row = malloc((size_t)cols * sizeof *row);
        for (int64_t r = 0; r < rows; r++) {
            infer_dequant_row(t->type, t->data + out->row_bytes * (size_t)r, row, cols);
            infer_quantize_row(q, row, dst + rb * (size_t)r, cols);
        }
        free(row);
        *out = (infer_matrix){q, dst, rows, cols, rb};
        b->m->weight_bytes += rb * (size_t)rows;
        return true;
    }
    b->m->weight_bytes += t->nbytes;
    return true;
}

/* GPT-2 Conv1D weight stored [in, out]: transpose into an owned F32 [out, in] matrix. */
static bool bind_conv1d(binder *b, const char *name, int64_t in, int64_t out_dim, infer_matrix *out)
{
    const infer_tensor_entry *t = find(b, name, true);
    if (!t)
        return false;
    if (t->type == INFER_DTYPE_COUNT || t->ndim != 2 || t->shape[0] != in || t->shape[1] != out_dim ||
        infer_dtype_block(t->type) != 1) {
        err_set(b->e, 400, "BadModel", "tensor '%s' should be [%lld, %lld]", name, (long long)in,
                (long long)out_dim);
        b->failed = true;
        return false;
    }
    float *row = malloc((size_t)out_dim * sizeof *row);
    float *w = own(b->m, malloc((size_t)(in * out_dim) * sizeof *w));
    size_t rb = infer_dtype_row_bytes(t->type, out_dim);
    for (int64_t i = 0; i < in; i++) {
        infer_dequant_row(t->type, t->data + rb * (size_t)i, row, out_dim);
        for (int64_t o = 0; o < out_dim; o++)
            w[o * in + i] = row[o];
    }
    free(row);
    *out = (infer_matrix){INFER_F32, (const uint8_t *)w, out_dim, in, (size_t)in * 4};
    b->m->weight_bytes += (size_t)(in * out_dim) * 4;
    return true;
}

static const char *nm(char *dst, size_t cap, const char *fmt, int layer, const char *suffix)
{
    snprintf(dst, cap, fmt, layer, suffix);
    return dst;
}

static int bind_llama(infer_model *m, err *e)
{
    const infer_config *c = &m->cfg;
    binder b = {m, e, false};
    bool g = m->is_gguf;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    bind_mat(&b, g ? "token_embd.weight" : "model.embed_tokens.weight", c->vocab_size, c->dim, true,
             &m->embed);
    m->layers = own(m, calloc((size_t)c->n_layers, sizeof *m->layers));
    char n[160];
    const char *f = g ? "blk.%d.%s" : "model.layers.%d.%s";
    for (int i = 0; i < c->n_layers && !b.failed; i++) {
        infer_layer *L = &m->layers[i];
#define N(hf, gg) nm(n, sizeof n, f, i, g ? gg : hf)
        L->attn_norm = bind_norm(&b, N("input_layernorm.weight", "attn_norm.weight"), c->dim, true);
        bind_mat(&b, N("self_attn.q_proj.weight", "attn_q.weight"), qd, c->dim, true, &L->wq);
        bind_mat(&b, N("self_attn.k_proj.weight", "attn_k.weight"), kvd, c->dim, true, &L->wk);
        bind_mat(&b, N("self_attn.v_proj.weight", "attn_v.weight"), kvd, c->dim, true, &L->wv);
        bind_mat(&b, N("self_attn.o_proj.weight", "attn_output.weight"), c->dim, qd, true, &L->wo);
        L->bq = bind_vec(&b, N("self_attn.q_proj.bias", "attn_q.bias"), qd, false);
        L->bk = bind_vec(&b, N("self_attn.k_proj.bias", "attn_k.bias"), kvd, false);
        L->bv = bind_vec(&b, N("self_attn.v_proj.bias", "attn_v.bias"), kvd, false);
        L->bo = bind_vec(&b, N("self_attn.o_proj.bias", "attn_output.bias"), c->dim, false);
        if (c->qk_norm) {
            L->q_norm = bind_norm(&b, N("self_attn.q_norm.weight", "attn_q_norm.weight"), c->head_dim, true);
            L->k_norm = bind_norm(&b, N("self_attn.k_norm.weight", "attn_k_norm.weight"), c->head_dim, true);
        }
        if (c->post_norms) {
            L->post_attn_norm = bind_norm(&b, N("post_attention_layernorm.weight", "post_attention_norm.weight"),
                                          c->dim, true);
            L->ffn_norm = bind_norm(&b, N("pre_feedforward_layernorm.weight", "ffn_norm.weight"), c->dim, true);
            L->post_ffn_norm = bind_norm(&b, N("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
                                         c->dim, true);
        } else {
            L->ffn_norm = bind_norm(&b, N("post_attention_layernorm.weight", "ffn_norm.weight"), c->dim, true);
        }
        L->sliding = c->sliding_window > 0 &&
                     (c->layer_sliding ? c->layer_sliding[i]
                      : c->sliding_pattern ? (i + 1) % c->sliding_pattern != 0
                      : c->sliding_alternate ? i % 2 == 0 : true);
        bind_mat(&b, N("mlp.gate_proj.weight", "ffn_gate.weight"), c->ffn_dim, c->dim, true, &L->w_gate);
        bind_mat(&b, N("mlp.up_proj.weight", "ffn_up.weight"), c->ffn_dim, c->dim, true, &L->w_up);
        bind_mat(&b, N("mlp.down_proj.weight", "ffn_down.weight"), c->dim, c->ffn_dim, true, &L->w_down);
#undef N
    }
    m->final_norm = bind_norm(&b, g ? "output_norm.weight" : "model.norm.weight", c->dim, true);
    if (!bind_mat(&b, g ? "output.weight" : "lm_head.weight", c->vocab_size, c->dim,
                  false, &m->output) && !b.failed) {
        m->output = m->embed;
        m->cfg.tied_embeddings = true;
    }
    return b.failed ? -1 : 0;
}

static int bind_gpt2(infer_model *m, err *e)
{
    const infer_config *c = &m->cfg;
    binder b = {m, e, false};
    bool g = m->is_gguf;
    const char *pre = "";
    if (!g && infer_tensor_find(&m->tensors, "transformer.wte.weight"))
        pre = "transformer.";
    char n[160], f[64];
    snprintf(n, sizeof n, "%swte.weight", pre);
    bind_mat(&b, g ? "token_embd.weight" : n, c->vocab_size, c->dim, true, &m->embed);
    snprintf(n, sizeof n, "%swpe.weight", pre);
    bind_mat(&b, g ? "position_embd.weight" : n, c->max_seq, c->dim, true, &m->pos_embed);
    snprintf(f, sizeof f, g ? "blk.%%d.%%s" : "%sh.%%d.%%s", pre);
    m->layers = own(m, calloc((size_t)c->n_layers, sizeof *m->layers));
    int64_t d = c->dim, ff = c->ffn_dim;
    for (int i = 0; i < c->n_layers && !b.failed; i++) {
        infer_layer *L = &m->layers[i];
#define N(hf, gg) nm(n, sizeof n, f, i, g ? gg : hf)
        L->attn_norm = bind_vec(&b, N("ln_1.weight", "attn_norm.weight"), d, true);
        L->attn_norm_bias = bind_vec(&b, N("ln_1.bias", "attn_norm.bias"), d, true);
        L->bqkv = bind_vec(&b, N("attn.c_attn.bias", "attn_qkv.bias"), 3 * d, true);
        L->bo = bind_vec(&b, N("attn.c_proj.bias", "attn_output.bias"), d, true);
        L->ffn_norm = bind_vec(&b, N("ln_2.weight", "ffn_norm.weight"), d, true);
        L->ffn_norm_bias = bind_vec(&b, N("ln_2.bias", "ffn_norm.bias"), d, true);
        L->b_up = bind_vec(&b, N("mlp.c_fc.bias", "ffn_up.bias"), ff, true);
        L->b_down = bind_vec(&b, N("mlp.c_proj.bias", "ffn_down.bias"), d, true);
        if (g) {
            bind_mat(&b, N("", "attn_qkv.weight"), 3 * d, d, true, &L->wqkv);
            bind_mat(&b, N("", "attn_output.weight"), d, d, true, &L->wo);
            bind_mat(&b, N("", "ffn_up.weight"), ff, d, true, &L->w_up);
            bind_mat(&b, N("", "ffn_down.weight"), d, ff, true, &L->w_down);
        } else {
            bind_conv1d(&b, N("attn.c_attn.weight", ""), d, 3 * d, &L->wqkv);
            bind_conv1d(&b, N("attn.c_proj.weight", ""), d, d, &L->wo);
            bind_conv1d(&b, N("mlp.c_fc.weight", ""), d, ff, &L->w_up);
            bind_conv1d(&b, N("mlp.c_proj.weight", ""), ff, d, &L->w_down);
        }
#undef N
    }
    snprintf(n, sizeof n, "%sln_f.weight", pre);
    m->final_norm = bind_vec(&b, g ? "output_norm.weight" : n, d, true);
    snprintf(n, sizeof n, "%sln_f.bias", pre);
    m->final_norm_bias = bind_vec(&b, g ? "output_norm.bias" : n, d, true);
    if (!(g && bind_mat(&b, "output.weight", c->vocab_size, d, false, &m->output)))
        m->output = m->embed;
    m->cfg.tied_embeddings = true;
    return b.failed ? -1 : 0;
}

/* BERT (BertModel, or the `bert.` encoder inside BertFor*): word + position + token type
 * embeddings and their LayerNorm, then per layer self-attention and an MLP, each followed by
 * a residual LayerNorm. The pooler is not used (sentence-transformers pools the last layer). */
static int bind_bert(infer_model *m, err *e)
{
    const infer_config *c = &m->cfg;
    binder b = {m, e, false};
    const char *pre = infer_tensor_find(&m->tensors, "bert.embeddings.word_embeddings.weight") ? "bert." : "";
    int64_t d = c->dim, ff = c->ffn_dim;
    char n[160], f[64];
#define T(name) (snprintf(n, sizeof n, "%s%s", pre, name), n)
    bind_mat(&b, T("embeddings.word_embeddings.weight"), c->vocab_size, d, true, &m->embed);
    bind_mat(&b, T("embeddings.position_embeddings.weight"), c->max_seq, d, true, &m->pos_embed);
    bind_mat(&b, T("embeddings.token_type_embeddings.weight"), c->type_vocab_size, d, true, &m->type_embed);
    m->final_norm = bind_vec(&b, T("embeddings.LayerNorm.weight"), d, true);
    m->final_norm_bias = bind_vec(&b, T("embeddings.LayerNorm.bias"), d, true);
#undef T
    snprintf(f, sizeof f, "%sencoder.layer.%%d.%%s", pre);
    m->layers = own(m, calloc((size_t)c->n_layers, sizeof *m->layers));
    for (int i = 0; i < c->n_layers && !b.failed; i++) {
        infer_layer *L = &m->layers[i];
#define N(suffix) nm(n, sizeof n, f, i, suffix)
        bind_mat(&b, N("attention.self.query.weight"), d, d, true, &L->wq);
        bind_mat(&b, N("attention.self.key.weight"), d, d, true, &L->wk);
        bind_mat(&b, N("attention.self.value.weight"), d, d, true, &L->wv);
        bind_mat(&b, N("attention.output.dense.weight"), d, d, true, &L->wo);
        L->bq = bind_vec(&b, N("attention.self.query.bias"), d, true);
        L->bk = bind_vec(&b, N("attention.self.key.bias"), d, true);
        L->bv = bind_vec(&b, N("attention.self.value.bias"), d, true);
        L->bo = bind_vec(&b, N("attention.output.dense.bias"), d, true);
        L->attn_norm = bind_vec(&b, N("attention.output.LayerNorm.weight"), d, true);
        L->attn_norm_bias = bind_vec(&b, N("attention.output.LayerNorm.bias"), d, true);
        bind_mat(&b, N("intermediate.dense.weight"), ff, d, true, &L->w_up);
        L->b_up = bind_vec(&b, N("intermediate.dense.bias"), ff, true);
        bind_mat(&b, N("output.dense.weight"), d, ff, true, &L->w_down);
        L->b_down = bind_vec(&b, N("output.dense.bias"), d, true);
        L->ffn_norm = bind_vec(&b, N("output.LayerNorm.weight"), d, true);
        L->ffn_norm_bias = bind_vec(&b, N("output.LayerNorm.bias"), d, true);
#undef N
    }
    return b.failed ? -1 : 0;
}

/* ---- config ---------------------------------------------------------------------------------- */

static int jint(json_t *o, const char *key, int dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : dflt;
}

static double jnum(json_t *o, const char *key, double dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

static void add_eos(infer_model *m, int64_t id)
{
    if (id < 0 || id > INT32_MAX)
        return;
    for (size_t i = 0; i < m->n_eos; i++)
        if (m->eos_ids[i] == id)
            return;
    m->eos_ids = realloc(m->eos_ids, (m->n_eos + 1) * sizeof *m->eos_ids);
    m->eos_ids[m->n_eos++] = (int32_t)id;
}

static void add_eos_json(infer_model *m, json_t *v)
{
    if (json_is_integer(v))
        add_eos(m, json_integer_value(v));
    size_t i;
    json_t *x;
    if (json_is_array(v))
        json_array_foreach(v, i, x) if (json_is_integer(x)) add_eos(m, json_integer_value(x));
}

static json_t *read_json(const char *dir, const char *file, bool required, err *e)
{
    buf path = BUF_INIT, text = BUF_INIT;
    buf_printf(&path, "%s/%s", dir, file);
    json_t *root = NULL;
    if (path_read_file(path.data, &text) != 0) {
        if (required)
            err_set(e, 404, "EntryNotFound", "%s: cannot read", path.data);
    } else {
        json_error_t je;
        root = json_loadb(text.data ? text.data : "", text.len, 0, &je);
        if (!json_is_object(root)) {
            json_decref(root);
            root = NULL;
            err_set(e, 400, "BadModel", "%s: bad JSON: %s", path.data, je.text);
        }
    }
    buf_free(&path);
    buf_free(&text);
    return root;
}

/* BERT's config.json: hidden sizes, learned absolute positions, token types, post-LayerNorm. */
static int bert_config(infer_config *c, json_t *root, err *e)
{
    c->arch = ARCH_BERT;
    c->dim = jint(root, "hidden_size", 0);
    c->n_layers = jint(root, "num_hidden_layers", 0);
    c->n_heads = c->n_kv_heads = jint(root, "num_attention_heads", 0);
    c->head_dim = c->n_heads > 0 && c->dim % c->n_heads == 0 ? c->dim / c->n_heads : 0;
    c->ffn_dim = jint(root, "intermediate_size", 0);
    c->max_seq = jint(root, "max_position_embeddings", 512);
    c->norm_eps = (float)jnum(root, "layer_norm_eps", 1e-12);
    c->vocab_size = jint(root, "vocab_size", 0);
    c->type_vocab_size = jint(root, "type_vocab_size", 2);
    const char *act = json_string_value(json_object_get(root, "hidden_act"));
    if (!act || !strcmp(act, "gelu"))
        c->activation = ACT_GELU;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh"))
        c->activation = ACT_GELU_TANH;
    else if (!strcmp(act, "relu"))
        c->activation = ACT_RELU;
    else
        return err_set(e, 400, "BadModel", "bert hidden_act '%s' is not supported (gelu, gelu_new, relu)", act);
    const char *pos = json_string_value(json_object_get(root, "position_embedding_type"));
    if (pos && strcmp(pos, "absolute"))
        return err_set(e, 400, "BadModel", "bert position_embedding_type '%s' is not supported (absolute)", pos);
    if (c->type_vocab_size <= 0 || c->type_vocab_size > 1024)
        return err_set(e, 400, "BadModel", "bert type_vocab_size %d is out of range", c->type_vocab_size);
    return 0;
}

static int check_config(infer_config *c, err *e)
{
    if (c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->ffn_dim <= 0 || c->vocab_size <= 0 || c->n_heads % c->n_kv_heads ||
        (c->head_dim % 2 && c->arch != ARCH_BERT) || c->dim > 65536 || c->n_layers > 1024 || c->head_dim > 1024 ||
        c->n_heads > 1024 || c->ffn_dim > 1 << 20 || c->vocab_size > 1 << 24)
        return err_set(e, 400, "BadModel",
                       "inconsistent model config: hidden %d, layers %d, heads %d/%d, head_dim %d, "
                       "ffn %d, vocab %d", c->dim, c->n_layers, c->n_heads, c->n_kv_heads,
                       c->head_dim, c->ffn_dim, c->vocab_size);
    if (c->max_seq <= 0)
        c->max_seq = 2048;
    if (c->norm_eps <= 0)
        c->norm_eps = 1e-5f;
    if (c->rope_theta <= 0)
        c->rope_theta = 10000;
    return 0;
}

static int config_from_json(infer_model *m, json_t *root, err *e)
{
    infer_config *c = &m->cfg;
    const char *type = json_string_value(json_object_get(root, "model_type"));
    if (!type)
        return err_set(e, 400, "BadModel", "config.json has no model_type");
    snprintf(c->model_type, sizeof c->model_type, "%s", type);
    if (!strcmp(type, "gpt2")) {
        c->arch = ARCH_GPT2;
        c->dim = jint(root, "n_embd", 0);
        c->n_layers = jint(root, "n_layer", 0);
        c->n_heads = c->n_kv_heads = jint(root, "n_head", 0);
        c->head_dim = c->n_heads ? c->dim / c->n_heads : 0;
        c->ffn_dim = jint(root, "n_inner", 4 * c->dim);
        c->max_seq = jint(root, "n_positions", jint(root, "n_ctx", 1024));
        c->norm_eps = (float)jnum(root, "layer_norm_epsilon", 1e-5);
        c->vocab_size = jint(root, "vocab_size", 50257);
        c->tied_embeddings = true;
    } else if (!strcmp(type, "bert")) {
        if (bert_config(c, root, e))
            return -1;
    } else if (!strcmp(type, "llama") || !strcmp(type, "mistral") || !strcmp(type, "qwen2") ||
               !strcmp(type, "qwen3") || !strcmp(type, "gemma") || !strcmp(type, "gemma2") ||
               !strcmp(type, "gemma3_text")) {
        c->arch = ARCH_LLAMA;
        c->dim = jint(root, "hidden_size", 0);
        c->n_layers = jint(root, "num_hidden_layers", 0);
        c->n_heads = jint(root, "num_attention_heads", 0);
        c->n_kv_heads = jint(root, "num_key_value_heads", c->n_heads);
        c->head_dim = jint(root, "head_dim", c->n_heads ? c->dim / c->n_heads : 0);
        c->ffn_dim = jint(root, "intermediate_size", 0);
        c->vocab_size = jint(root, "vocab_size", 0);
        c->max_seq = jint(root, "max_position_embeddings", 2048);
        c->norm_eps = (float)jnum(root, "rms_norm_eps", 1e-6);
        c->rope_theta = (float)jnum(root, "rope_theta", 10000);
        c->qk_norm = !strcmp(type, "qwen3") || !strcmp(type, "gemma3_text");
        c->tied_embeddings = json_is_true(json_object_get(root, "tie_word_embeddings"));
        c->gemma = !strncmp(type, "gemma", 5);
        json_t *act = json_object_get(root, c->gemma ? "hidden_activation" : "hidden_act");
        if (c->gemma && !json_is_string(act))
            act = json_object_get(root, "hidden_act");
        const char *actname = json_string_value(act);
        if (actname && (!strcmp(actname, "gelu_pytorch_tanh") || !strcmp(actname, "gelu_tanh") ||
                        (c->gemma && !strcmp(actname, "gelu"))))
            c->gelu_mlp = true;   /* Gemma 1 configs say "gelu" but run the tanh approximation */
        else if (act && !(actname && !strcmp(actname, "silu")))
            return err_set(e, 400, "BadModel", "activation %s is not supported (silu, gelu_pytorch_tanh)",
                           actname ? actname : "?");
        if (c->gemma) {
            c->embed_scale = sqrtf((float)c->dim);
            c->post_norms = strcmp(type, "gemma") != 0;
            double qs = jnum(root, "query_pre_attn_scalar", 0);
            if (qs > 0)
                c->attn_scale = (float)(1.0 / sqrt(qs));
            c->attn_softcap = (float)jnum(root, "attn_logit_softcapping", 0);
            c->final_softcap = (float)jnum(root, "final_logit_softcapping", 0);
            if (!strcmp(type, "gemma2"))
                c->sliding_alternate = true;
            if (!strcmp(type, "gemma3_text")) {
                c->rope_local_theta = (float)jnum(root, "rope_local_base_freq", 10000);
                c->sliding_pattern = jint(root, "sliding_window_pattern", 6);
                json_t *lt = json_object_get(root, "layer_types");
                if (json_is_array(lt) && (int)json_array_size(lt) == c->n_layers) {
                    c->layer_sliding = own(m, calloc((size_t)c->n_layers, 1));
                    for (int i = 0; i < c->n_layers; i++)
                        c->layer_sliding[i] = json_is_string(json_array_get(lt, (size_t)i)) &&
                                              !strcmp(json_string_value(json_array_get(lt, (size_t)i)),
                                                      "sliding_attention");
                }
            }
            if (!json_object_get(root, "tie_word_embeddings"))
                c->tied_embeddings = true;
        }
        json_t *sw = json_object_get(root, "sliding_window");
        bool use_sw = !strcmp(type, "mistral") || !strcmp(type, "gemma2") || !strcmp(type, "gemma3_text") ||
                      json_is_true(json_object_get(root, "use_sliding_window"));
        if (json_is_integer(sw) && use_sw)
            c->sliding_window = (int)json_integer_value(sw);
        json_t *rs = json_object_get(root, "rope_scaling");
        if (json_is_object(rs)) {
            const char *rt = json_string_value(json_object_get(rs, "rope_type"));
            if (!rt)
                rt = json_string_value(json_object_get(rs, "type"));
            c->rope_factor = (float)jnum(rs, "factor", 1);
            if (rt && !strcmp(rt, "llama3")) {
                c->rope_scaling = 2;
                c->rope_low_freq = (float)jnum(rs, "low_freq_factor", 1);
                c->rope_high_freq = (float)jnum(rs, "high_freq_factor", 4);
                c->rope_orig_ctx = jint(rs, "original_max_position_embeddings", 8192);
            } else if (rt && !strcmp(rt, "linear")) {
                c->rope_scaling = 1;
            } else if (rt && !strcmp(rt, "yarn")) {
                c->rope_scaling = 3;
                c->rope_low_freq = (float)jnum(rs, "beta_fast", 32);
                c->rope_high_freq = (float)jnum(rs, "beta_slow", 1);
                c->rope_orig_ctx = jint(rs, "original_max_position_embeddings", c->max_seq);
                double f = c->rope_factor, af = jnum(rs, "attention_factor", 0);
                double ms = jnum(rs, "mscale", 0), msa = jnum(rs, "mscale_all_dim", 0);
#define YARN_MSCALE(scale, m) ((scale) <= 1 ? 1.0 : 0.1 * (m) * log(scale) + 1.0)
                if (af <= 0)
                    af = ms && msa ? YARN_MSCALE(f, ms) / YARN_MSCALE(f, msa) : YARN_MSCALE(f, 1);
#undef YARN_MSCALE
                c->rope_mscale = (float)af;
                if (json_is_false(json_object_get(rs, "truncate")))
                    return err_set(e, 400, "BadModel", "yarn rope_scaling with truncate=false is not supported");
            } else if (rt && strcmp(rt, "default")) {
                return err_set(e, 400, "BadModel", "rope_scaling type '%s' is not supported", rt);
            }
        }
    } else {
        return err_set(e, 400, "BadModel", "model_type '%s' is not supported (llama, mistral, "
                       "qwen2, qwen3, gemma, gemma2, gemma3_text, gpt2, bert)", type);
    }
    m->bos_id = jint(root, "bos_token_id", -1);
    add_eos_json(m, json_object_get(root, "eos_token_id"));
    return check_config(c, e);
}

static int config_from_gguf(infer_model *m, err *e)
{
    infer_config *c = &m->cfg;
    char *arch = infer_gguf_string(&m->gguf, "general.architecture");
    if (!arch)
        return err_set(e, 400, "BadModel", "GGUF has no general.architecture");
    snprintf(c->model_type, sizeof c->model_type, "%s", arch);
    int rc = 0;
    if (!strcmp(arch, "gpt2"))
        c->arch = ARCH_GPT2;
    else if (!strcmp(arch, "llama") || !strcmp(arch, "qwen2") || !strcmp(arch, "qwen3") ||
             !strcmp(arch, "gemma") || !strcmp(arch, "gemma2") || !strcmp(arch, "gemma3"))
        c->arch = ARCH_LLAMA;
    else
        rc = err_set(e, 400, "BadModel", "GGUF architecture '%s' is not supported (llama, qwen2, "
                     "qwen3, gemma, gemma2, gemma3, gpt2)", arch);
    if (rc) {
        free(arch);
        return rc;
    }
    char key[128];
    double v;
#define K(name, dflt) (snprintf(key, sizeof key, "%s." name, arch), \
                       infer_gguf_count(&m->gguf, key, &v) ? v : (dflt))
    c->dim = (int)K("embedding_length", 0);
    c->n_layers = (int)K("block_count", 0);
    c->n_heads = (int)K("attention.head_count", 0);
    c->n_kv_heads = (int)K("attention.head_count_kv", c->n_heads);
    c->head_dim = (int)K("attention.key_length", c->n_heads ? c->dim / c->n_heads : 0);
    c->ffn_dim = (int)K("feed_forward_length", 0);
    c->max_seq = (int)K("context_length", 2048);
    c->norm_eps = (float)(c->arch == ARCH_GPT2 ? K("attention.layer_norm_epsilon", 1e-5)
                                               : K("attention.layer_norm_rms_epsilon", 1e-6));
    c->rope_theta = (float)K("rope.freq_base", 10000);
    c->sliding_window = (int)K("attention.sliding_window", 0);
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    char *st = infer_gguf_string(&m->gguf, key);
    if (st && !strcmp(st, "linear")) {
        c->rope_scaling = 1;
        c->rope_factor = (float)K("rope.scaling.factor", 1);
    }
    free(st);
    c->vocab_size = (int)K("vocab_size", 0);
    if (!strncmp(arch, "gemma", 5)) {
        /* llama.cpp's conventions: norms stored as (1+w) already, GeGLU, √hidden embedding
         * scale, 1/√head_dim attention scale; Gemma 2 soft-caps and alternates sliding layers;
         * Gemma 3 slides on 5 of every 6 layers with a 10000 RoPE base there. */
        c->gemma = c->gelu_mlp = true;
        c->embed_scale = sqrtf((float)c->dim);
        c->post_norms = strcmp(arch, "gemma") != 0;
        c->attn_softcap = (float)K("attn_logit_softcapping", 0);
        c->final_softcap = (float)K("final_logit_softcapping", 0);
        c->sliding_alternate = !strcmp(arch, "gemma2");
        if (!strcmp(arch, "gemma3")) {
            c->sliding_pattern = 6;
            c->rope_local_theta = 10000;
        }
    }
#undef K
    c->qk_norm = !strcmp(arch, "qwen3") || !strcmp(arch, "gemma3");
    /* llama.cpp's converter permutes q/k rows for `llama` only (see spec 6.4). */
    c->rope_interleaved = !strcmp(arch, "llama");
    free(arch);
    if (c->vocab_size == 0) {
        const infer_tensor_entry *t = infer_tensor_find(&m->tensors, "token_embd.weight");
        if (t && t->ndim == 2)
            c->vocab_size = (int)t->shape[0];
    }
    if (infer_gguf_count(&m->gguf, "tokenizer.ggml.bos_token_id", &v))
        m->bos_id = (int32_t)v;
    if (infer_gguf_count(&m->gguf, "tokenizer.ggml.eos_token_id", &v))
        add_eos(m, (int64_t)v);
    if (infer_gguf_count(&m->gguf, "tokenizer.ggml.eot_token_id", &v))
        add_eos(m, (int64_t)v);
    m->chat_template = infer_gguf_string(&m->gguf, "tokenizer.chat_template");
    return check_config(c, e);
}

/* GGUF: the bos/eos strings templates use come from the vocabulary. */
static void gguf_token_strings(infer_model *m)
{
    double v;
    const char **toks;
    size_t *lens, n;
    if (infer_gguf_string_array(&m->gguf, "tokenizer.ggml.tokens", &toks, &lens, &n) != 0)
        return;
    if (infer_gguf_number(&m->gguf, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && v < (double)n)
        m->bos_token = strndup(toks[(size_t)v], lens[(size_t)v]);
    if (infer_gguf_number(&m->gguf, "tokenizer.ggml.eos_token_id", &v) && v >= 0 && v < (double)n)
        m->eos_token = strndup(toks[(size_t)v], lens[(size_t)v]);
    free(toks);
    free(lens);
}

static void rope_frequencies(infer_model *m)
{
    const infer_config *c = &m->cfg;
    int half = c->head_dim / 2;
    if (c->rope_local_theta > 0) {   /* Gemma 3 sliding layers: their own base, no scaling */
        m->rope_local_inv_freq = own(m, malloc((size_t)half * sizeof(float)));
        for (int j = 0; j < half; j++)
            m->rope_local_inv_freq[j] = (float)pow((double)c->rope_local_theta, -2.0 * j / c->head_dim);
    }
    m->rope_inv_freq = own(m, malloc((size_t)half * sizeof(float)));
    const infer_tensor_entry *rf = m->is_gguf ? infer_tensor_find(&m->tensors, "rope_freqs.weight") : NULL;
    float *factors = NULL;
    if (rf && elems_of(rf) == half && rf->type != INFER_DTYPE_COUNT && infer_dtype_block(rf->type) == 1) {
        factors = malloc((size_t)half * sizeof *factors);
        infer_dequant_row(rf->type, rf->data, factors, half);
    }
    /* YaRN: blend interpolated and extrapolated frequencies over a ramp between the dimensions
     * that rotate beta_fast and beta_slow times within the original context. */
    double yarn_low = 0, yarn_high = 0;
    if (c->rope_scaling == 3) {
        double d = c->head_dim, base = c->rope_theta, ctx = c->rope_orig_ctx;
#define CORR_DIM(rot) (d * log(ctx / ((rot) * 2 * M_PI)) / (2 * log(base)))
        yarn_low = floor(CORR_DIM(c->rope_low_freq));
        yarn_high = ceil(CORR_DIM(c->rope_high_freq));
#undef CORR_DIM
        if (yarn_low < 0)
            yarn_low = 0;
        if (yarn_high > d - 1)
            yarn_high = d - 1;
        if (yarn_low == yarn_high)
            yarn_high += 0.001;
    }
    for (int j = 0; j < half; j++) {
        double inv = pow((double)c->rope_theta, -2.0 * j / c->head_dim);
        if (c->rope_scaling == 3 && !factors) {
            double ramp = (j - yarn_low) / (yarn_high - yarn_low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extrapolation = 1 - ramp;
            inv = inv / c->rope_factor * (1 - extrapolation) + inv * extrapolation;
        } else if (factors) {
            inv /= factors[j];
        } else if (c->rope_scaling == 1) {
            inv /= c->rope_factor;
        } else if (c->rope_scaling == 2) {
            double low_wl = c->rope_orig_ctx / c->rope_low_freq,
                   high_wl = c->rope_orig_ctx / c->rope_high_freq, wl = 2 * M_PI / inv;
            if (wl > low_wl) {
                inv /= c->rope_factor;
            } else if (wl >= high_wl) {
                double smooth = (c->rope_orig_ctx / wl - c->rope_low_freq) /
                                (c->rope_high_freq - c->rope_low_freq);
                inv = (1 - smooth) * inv / c->rope_factor + smooth * inv;
            }
        }
        m->rope_inv_freq[j] = (float)inv;
    }
    free(factors);
}

/* ---- tokenizer_config.json ---------------------------------------------------------------------- */

static char *token_string(json_t *v)
{
    if (json_is_object(v))
        v = json_object_get(v, "content");
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static void read_tokenizer_config(infer_model *m, const char *dir)
{
    json_t *tc = read_json(dir, "tokenizer_config.json", false, NULL);
    if (tc) {
        m->bos_token = token_string(json_object_get(tc, "bos_token"));
        m->eos_token = token_string(json_object_get(tc, "eos_token"));
        json_t *ct = json_object_get(tc, "chat_template");
        if (json_is_string(ct)) {
            m->chat_template = strdup(json_string_value(ct));
        } else if (json_is_array(ct)) {   /* named templates: take "default" */
            size_t i;
            json_t *x;
            json_array_foreach(ct, i, x) {
                const char *name = json_string_value(json_object_get(x, "name"));
                const char *t = json_string_value(json_object_get(x, "template"));
                if (name && t && !strcmp(name, "default") && !m->chat_template)
                    m->chat_template = strdup(t);
            }
        }
        json_decref(tc);
    }
    buf path = BUF_INIT, text = BUF_INIT;
    buf_printf(&path, "%s/chat_template.jinja", dir);
    if (path_read_file(path.data, &text) == 0) {
        free(m->chat_template);
        m->chat_template = buf_detach(&text);
    }
    buf_free(&path);
    buf_free(&text);
    if (m->eos_token && m->tokenizer)
        add_eos(m, infer_token_id(m->tokenizer, m->eos_token));
}

/* ---- sentence-transformers (modules.json, 1_Pooling/config.json, sentence_bert_config.json) ----- */

static bool jtrue(json_t *o, const char *key) { return json_is_true(json_object_get(o, key)); }

/* A Pooling module's config.json: which modes, and the width it expects. */
static int read_pooling(infer_model *m, const char *dir, const char *path, err *e)
{
    buf sub = BUF_INIT;
    buf_printf(&sub, "%s/%s", dir, path);
    json_t *pc = read_json(sub.data, "config.json", true, e);
    buf_free(&sub);
    if (!pc)
        return -1;
    infer_pooling *p = &m->pooling;
    p->cls = jtrue(pc, "pooling_mode_cls_token");
    p->max = jtrue(pc, "pooling_mode_max_tokens");
    p->mean = jtrue(pc, "pooling_mode_mean_tokens");
    p->mean_sqrt_len = jtrue(pc, "pooling_mode_mean_sqrt_len_tokens");
    p->weighted_mean = jtrue(pc, "pooling_mode_weightedmean_tokens");
    p->last_token = jtrue(pc, "pooling_mode_lasttoken");
    const char *mode = json_string_value(json_object_get(pc, "pooling_mode"));
    int rc = 0;
    if (mode) {   /* newer configs may name one mode instead */
        p->cls |= !strcmp(mode, "cls");
        p->max |= !strcmp(mode, "max");
        p->mean |= !strcmp(mode, "mean");
        p->mean_sqrt_len |= !strcmp(mode, "mean_sqrt_len_tokens");
        p->weighted_mean |= !strcmp(mode, "weightedmean");
        p->last_token |= !strcmp(mode, "lasttoken");
    }
    json_t *width = json_object_get(pc, "word_embedding_dimension");
    if (!(p->cls || p->max || p->mean || p->mean_sqrt_len || p->weighted_mean || p->last_token))
        rc = err_set(e, 400, "BadModel", "%s/%s/config.json: no pooling mode is on (cls, mean, max, "
                     "mean_sqrt_len_tokens, weightedmean, lasttoken)", dir, path);
    else if (json_is_integer(width) && json_integer_value(width) != m->cfg.dim)
        rc = err_set(e, 400, "BadModel", "%s/%s/config.json: word_embedding_dimension %lld, but the "
                     "model's hidden size is %d", dir, path, (long long)json_integer_value(width), m->cfg.dim);
    json_decref(pc);
    return rc;
}

/* How sentence-transformers turns the encoder's output into an embedding: the modules it lists
 * (Transformer, Pooling, Normalize; anything else is refused by name), and the length limit.
 * Without modules.json: mean pooling, as sentence-transformers does for a plain encoder. */
static int read_sentence_transformers(infer_model *m, const char *dir, err *e)
{
    err ignore = ERR_INIT;
    json_t *st = read_json(dir, "sentence_bert_config.json", false, &ignore);
    if (st) {
        int max = jint(st, "max_seq_length", 0);
        m->pooling.max_tokens = max > 0 && max < m->cfg.max_seq ? max : 0;
        m->pooling.lowercase = jtrue(st, "do_lower_case");
        json_decref(st);
    }
    buf path = BUF_INIT;
    buf_printf(&path, "%s/modules.json", dir);
    struct stat sb;
    json_error_t je;
    json_t *mods = stat(path.data, &sb) == 0 ? json_load_file(path.data, 0, &je) : json_array();
    buf_free(&path);
    if (!json_is_array(mods)) {
        json_decref(mods);
        return err_set(e, 400, "BadModel", "%s/modules.json: not a JSON list of modules", dir);
    }
    int rc = 0;
    bool pooled = false;
    size_t i;
    json_t *mod;
    json_array_foreach(mods, i, mod) {
        const char *type = json_string_value(json_object_get(mod, "type"));
        const char *sub = json_string_value(json_object_get(mod, "path"));
        const char *kind = type ? strrchr(type, '.') : NULL;
        kind = kind ? kind + 1 : type ? type : "";
        if (!strcmp(kind, "Transformer")) {
            continue;
        } else if (!strcmp(kind, "Pooling") && sub && !strstr(sub, "..")) {
            rc = read_pooling(m, dir, sub, e);
            pooled = true;
        } else if (!strcmp(kind, "Normalize")) {
            m->pooling.normalize = true;
        } else {
            rc = err_set(e, 400, "BadModel", "%s/modules.json: module '%s' is not supported "
                         "(Transformer, Pooling, Normalize)", dir, type ? type : "(no type)");
        }
        if (rc)
            break;
    }
    json_decref(mods);
    if (rc == 0 && !pooled)
        m->pooling.mean = true;
    return rc;
}

/* ---- load ------------------------------------------------------------------------------------ */

static int load_dir(infer_model *m, const char *dir, err *e)
{
    json_t *cfg = read_json(dir, "config.json", true, e);
    if (!cfg)
        return -1;
    int rc = config_from_json(m, cfg, e);
    json_decref(cfg);
    if (rc)
        return rc;
    json_t *gen = read_json(dir, "generation_config.json", false, NULL);
    if (gen) {
        add_eos_json(m, json_object_get(gen, "eos_token_id"));
        json_decref(gen);
    }
    if (infer_safetensors_load_dir(&m->tensors, dir, e) != 0)
        return -1;
    buf tj = BUF_INIT;
    buf_printf(&tj, "%s/tokenizer.json", dir);
    struct stat st;
    if (stat(tj.data, &st) == 0 && infer_tokenizer_load_dir(&m->tokenizer, dir, e) != 0) {
        buf_free(&tj);
        return -1;
    }
    buf_free(&tj);
    read_tokenizer_config(m, dir);
    return 0;
}

static int load_gguf(infer_model *m, const char *path, err *e)
{
    const uint8_t *data;
    size_t size;
    if (infer_map_file(&m->tensors, path, &data, &size, e) != 0)
        return -1;
    if (infer_gguf_parse(&m->gguf, &m->tensors, data, size, e) != 0)
        return -1;
    m->is_gguf = true;
    m->quantize = INFER_F32;   /* a GGUF file is used as stored */
    if (config_from_gguf(m, e) != 0)
        return -1;
    if (infer_gguf_find(&m->gguf, "tokenizer.ggml.tokens") &&
        infer_tokenizer_from_gguf(&m->tokenizer, &m->gguf, e) != 0)
        return -1;
    gguf_token_strings(m);
    return 0;
}

int infer_model_load(infer_model **out, const char *path, const infer_load_options *opt, err *e)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return err_set(e, 404, "RepoNotFound", "%s: no such model directory or GGUF file", path);
    infer_model *m = calloc(1, sizeof *m);
    m->bos_id = -1;
    m->quantize = INFER_F32;
    if (opt && opt->quantize) {
        if (!strcmp(opt->quantize, "q8_0"))
            m->quantize = INFER_Q8_0;
        else if (!strcmp(opt->quantize, "q4_0"))
            m->quantize = INFER_Q4_0;
        else {
            free(m);
            return err_set(e, 400, "BadRequest", "--quantize %s: use q8_0 or q4_0", opt->quantize);
        }
    }
    int rc = S_ISDIR(st.st_mode) ? load_dir(m, path, e) : load_gguf(m, path, e);
    if (rc == 0) {
        if (m->tokenizer && infer_tokenizer_vocab_size(m->tokenizer) > m->cfg.vocab_size)
            rc = err_set(e, 400, "BadModel", "tokenizer has %d tokens but the model only %d",
                         infer_tokenizer_vocab_size(m->tokenizer), m->cfg.vocab_size);
    }
    if (rc == 0)
        rc = m->cfg.arch == ARCH_GPT2 ? bind_gpt2(m, e) : m->cfg.arch == ARCH_BERT ? bind_bert(m, e)
                                                                              : bind_llama(m, e);
    if (rc == 0 && m->cfg.arch == ARCH_BERT)   /* after the weights, which name a mismatch best */
        rc = read_sentence_transformers(m, path, e);
    if (rc != 0) {
        infer_model_free(m);
        return -1;
    }
    if (m->cfg.arch == ARCH_LLAMA) {
        rope_frequencies(m);
        for (int i = 0; i < m->cfg.n_layers; i++)
            m->layers[i].rope_inv_freq = m->layers[i].sliding && m->rope_local_inv_freq ? m->rope_local_inv_freq
                                                                                        : m->rope_inv_freq;
    }
    if (opt && opt->max_seq > 0 && opt->max_seq < m->cfg.max_seq)
        m->cfg.max_seq = opt->max_seq;
    *out = m;
    return 0;
}

void infer_model_free(infer_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nowned; i++)
        free(m->owned[i]);
    free(m->owned);
    infer_tensor_set_free(&m->tensors);
    infer_gguf_free(&m->gguf);
    infer_tokenizer_free(m->tokenizer);
    free(m->eos_ids);
    free(m->chat_template);
    free(m->bos_token);
    free(m->eos_token);
    free(m);
}

infer_tokenizer *infer_model_tokenizer(const infer_model *m) { return m->tokenizer; }
int infer_model_vocab_size(const infer_model *m) { return m->cfg.vocab_size; }
int infer_model_max_seq(const infer_model *m) { return m->cfg.max_seq; }
int32_t infer_model_bos(const infer_model *m) { return m->bos_id; }
const char *infer_model_chat_template(const infer_model *m) { return m->chat_template; }
const char *infer_model_bos_token(const infer_model *m) { return m->bos_token ? m->bos_token : ""; }
const char *infer_model_eos_token(const infer_model *m) { return m->eos_token ? m->eos_token : ""; }

bool infer_model_is_eos(const infer_model *m, int32_t id)
{
    for (size_t i = 0; i < m->n_eos; i++)
        if (m->eos_ids[i] == id)
            return true;
    return false;
}

void infer_model_describe(const infer_model *m, buf *out)
{
    const infer_config *c = &m->cfg;
    buf_printf(out, "%s%s: %d layers, hidden %d, heads %d/%d (dim %d), ffn %d, vocab %d, ctx %d, "
               "weights %s, %.1f MiB", c->model_type, m->is_gguf ? " (gguf)" : "", c->n_layers,
               c->dim, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim, c->vocab_size, c->max_seq,
               c->n_layers ? infer_dtype_name(m->layers[0].w_up.type) : "?",
               (double)m->weight_bytes / (1024.0 * 1024.0));
}
