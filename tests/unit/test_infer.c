/* Unit tests for src/infer: number formats with known answers, header validation of hostile
 * safetensors / GGUF images, a tiny tokenizer end to end, the sampler's contracts. The heavy
 * correctness checks (logits vs a float64 reference, tokenizer parity with `tokenizers`) are
 * end-to-end tests in tests/e2e/test_infer.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infer/internal.h"

static void test_half_floats(void **state)
{
    (void)state;
    assert_true(infer_f16_to_f32(0x3C00) == 1.0f);
    assert_true(infer_f16_to_f32(0xC000) == -2.0f);
    assert_true(infer_f16_to_f32(0x0001) == 5.9604644775390625e-08f);   /* smallest subnormal */
    assert_true(isinf(infer_f16_to_f32(0x7C00)));
    assert_true(isnan(infer_f16_to_f32(0x7E00)));
    assert_true(infer_bf16_to_f32(0x3F80) == 1.0f);
    /* Round trip of every finite half. */
    for (uint32_t h = 0; h < 0x7C00; h++)
        assert_int_equal(infer_f32_to_f16(infer_f16_to_f32((uint16_t)h)), h);
    assert_int_equal(infer_f32_to_f16(1.0f + 1.0f / 4096), 0x3C00);   /* ties to even */
}

static void test_q8_0_and_q4_0_blocks(void **state)
{
    (void)state;
    uint8_t q8[34];
    uint16_t d = infer_f32_to_f16(0.5f);
    memcpy(q8, &d, 2);
    for (int i = 0; i < 32; i++)
        q8[2 + i] = (uint8_t)(int8_t)(i - 16);
    float out[32], x[32];
    infer_dequant_row(INFER_Q8_0, q8, out, 32);
    for (int i = 0; i < 32; i++) {
        assert_true(out[i] == 0.5f * (i - 16));
        x[i] = 1.0f;
    }
    assert_true(fabsf(infer_dot_row(INFER_Q8_0, q8, x, 32) - 0.5f * -16) < 1e-6f);

    uint8_t q4[18];
    memcpy(q4, &d, 2);
    for (int j = 0; j < 16; j++)
        q4[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    infer_dequant_row(INFER_Q4_0, q4, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == 0.5f * (j - 8));
        assert_true(out[j + 16] == 0.5f * (15 - j - 8));
    }
    assert_true(infer_dtype_row_bytes(INFER_Q4_K, 512) == 288);
    assert_true(infer_dtype_row_bytes(INFER_Q8_0, 33) == SIZE_MAX);
}

/* How far quantising x to int8 can move dot(row, x): each element moves by at most half a step
 * of its group's scale (amax/127), plus the f16 rounding of that scale (llama.cpp's Q8_0). */
static float int8_error_bound(infer_dtype t, const uint8_t *row, const float *x, int64_t cols)
{
    if (!infer_qgemm_supports(t))
        return 0;
    int group = t == INFER_Q4_K || t == INFER_Q6_K ? 256 : 32;
    float *w = malloc((size_t)cols * sizeof *w), bound = 0;
    infer_dequant_row(t, row, w, cols);
    for (int64_t g = 0; g < cols; g += group) {
        float amax = 0, wsum = 0;
        for (int j = 0; j < group; j++) {
            amax = fmaxf(amax, fabsf(x[g + j]));
            wsum += fabsf(w[g + j]);
        }
        bound += 0.6f * amax / 127 * wsum;
    }
    free(w);
    return bound;
}

/* Random blocks with sane scales: every float field gets a small finite value. */
static void fill_weights(infer_dtype t, uint8_t *w, size_t bytes)
{
    size_t bb = infer_dtype_block_bytes(t);
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rand();
    for (size_t i = 0; i < bytes; i += bb) {
        float f = (float)rand() / RAND_MAX - 0.5f;
        uint16_t h = infer_f32_to_f16(f), small = infer_f32_to_f16(0.01f + 0.02f * (float)rand() / RAND_MAX);
        switch (t) {
        case INFER_F32: memcpy(w + i, &f, 4); break;
        case INFER_F16: memcpy(w + i, &h, 2); break;
        case INFER_BF16: { uint32_t u; memcpy(&u, &f, 4); uint16_t b = (uint16_t)(u >> 16); memcpy(w + i, &b, 2); break; }
        case INFER_Q8_0: case INFER_Q4_0: memcpy(w + i, &small, 2); break;
        case INFER_Q4_K: memcpy(w + i, &small, 2); memcpy(w + i + 2, &small, 2); break;
        case INFER_Q6_K: memcpy(w + i + 208, &small, 2); break;
        default: break;
        }
    }
}

/* The AMX-BF16 prompt product (F16 and BF16 weights, each number split in two bfloat16 parts)
 * agrees with a double-precision product to float32-class accuracy: tile edges in rows and
 * tokens, one and several column steps, two token groups at once and one left over. Skipped
 * where the CPU has no AMX-BF16. */
static void test_bgemm_matches_double(void **state)
{
    (void)state;
    static const int shapes[][3] = {{1, 32, 2}, {16, 64, 16}, {37, 96, 19}, {40, 1024, 33}, {17, 4096, 48}};
    infer_pool *pool = infer_pool_new(2);
    srand(11);
    int ran = 0;
    for (int bf = 0; bf < 2; bf++)
        for (size_t s = 0; s < ARRAY_LEN(shapes); s++) {
            int rows = shapes[s][0], cols = shapes[s][1], n_tok = shapes[s][2];
            infer_dtype t = bf ? INFER_BF16 : INFER_F16;
            uint16_t *w = malloc(sizeof *w * (size_t)rows * (size_t)cols);
            float *wf = malloc(sizeof *wf * (size_t)rows * (size_t)cols);
            float *x = malloc(sizeof *x * (size_t)n_tok * (size_t)cols);
            float *y = malloc(sizeof *y * (size_t)n_tok * (size_t)rows);
            for (int i = 0; i < rows * cols; i++) {
                float v = ((float)rand() / RAND_MAX - 0.5f) * (i % 7 ? 1.0f : 1e-3f);
                w[i] = bf ? (uint16_t)(((union { float f; uint32_t u; }){v}).u >> 16) : infer_f32_to_f16(v);
                wf[i] = bf ? infer_bf16_to_f32(w[i]) : infer_f16_to_f32(w[i]);
            }
            for (int i = 0; i < n_tok * cols; i++)
                x[i] = ((float)rand() / RAND_MAX - 0.5f) * 8;
            infer_matrix m = {t, (const uint8_t *)w, rows, cols, (size_t)cols * 2};
            if (infer_bgemm(pool, y, x, &m, n_tok)) {
                ran++;
                for (int tok = 0; tok < n_tok; tok++)
                    for (int r = 0; r < rows; r++) {
                        double ref = 0, mag = 0;
                        for (int k = 0; k < cols; k++) {
                            ref += (double)wf[r * cols + k] * x[tok * cols + k];
                            mag += fabs((double)wf[r * cols + k] * x[tok * cols + k]);
                        }
                        double got = y[tok * rows + r];
                        if (fabs(got - ref) > 2e-5 * mag + 1e-6)
                            fail_msg("%s %dx%d, %d tokens: row %d token %d: %.9g vs %.9g", bf ? "bf16" : "f16",
                                     rows, cols, n_tok, r, tok, got, ref);
                    }
            }
            free(w);
            free(wf);
            free(x);
            free(y);
        }
    infer_pool_free(pool);
    if (!ran)
        skip();   /* no AMX-BF16 here: the float GEMM, tested through the forward pass, runs instead */
}

/* The int8 prompt kernels (every level this CPU has, each tile edge, superblock tails) agree with
 * the float dot product on the dequantised weights within what activation rounding allows, and
 * with the portable kernel up to float summation order. */
static void test_qgemm_matches_reference(void **state)
{
    (void)state;
    static const struct { infer_dtype type; int cols[3]; } cases[] = {
        {INFER_Q8_0, {96, 512, 1120}}, {INFER_Q4_0, {64, 512, 544}},
        {INFER_Q4_K, {256, 768, 1024}}, {INFER_Q6_K, {256, 512, 1280}},
    };
    static const int shapes[][2] = {{1, 2}, {5, 3}, {13, 7}, {8, 6}, {37, 19}};   /* rows, tokens */
    infer_pool *pool = infer_pool_new(2);
    srand(7);
    for (size_t c = 0; c < ARRAY_LEN(cases); c++)
        for (int k = 0; k < 3; k++)
            for (size_t s = 0; s < ARRAY_LEN(shapes); s++) {
                infer_dtype t = cases[c].type;
                int cols = cases[c].cols[k], rows = shapes[s][0], n_tok = shapes[s][1];
                infer_matrix m = {t, NULL, rows, cols, infer_dtype_row_bytes(t, cols)};
                uint8_t *w = malloc(m.row_bytes * (size_t)rows);
                float *x = malloc(sizeof(float) * (size_t)(cols * n_tok));
                float *y = malloc(sizeof(float) * (size_t)(rows * n_tok)), *y0 = malloc(sizeof(float) * (size_t)(rows * n_tok));
                fill_weights(t, w, m.row_bytes * (size_t)rows);
                m.data = w;
                for (int i = 0; i < cols * n_tok; i++)
                    x[i] = (float)rand() / RAND_MAX - 0.5f;
                for (int i = 0; i < 32; i++)   /* an all-zero group: scale 0 */
                    x[i] = 0;
                for (int level = INFER_QGEMM_PORTABLE; level <= (int)infer_cpu_level(); level++) {
                    assert_true(infer_qgemm(pool, level ? y : y0, x, &m, n_tok, (infer_qgemm_level)level));
                    for (int tok = 0; tok < n_tok; tok++)
                        for (int r = 0; r < rows; r++) {
                            const uint8_t *row = w + m.row_bytes * (size_t)r;
                            const float *xt = x + (size_t)tok * (size_t)cols;
                            float ref = infer_dot_row(t, row, xt, cols), bound = int8_error_bound(t, row, xt, cols);
                            float got = (level ? y : y0)[tok * rows + r];
                            assert_true(fabsf(got - ref) <= bound + 1e-5f);
                            assert_true(fabsf(got - y0[tok * rows + r]) <= 1e-4f * bound + 1e-5f);
                        }
                }
                free(w);
                free(x);
                free(y);
                free(y0);
            }
    infer_pool_free(pool);
}

/* A matmul through the pool agrees with the portable dot product for every dtype (quantised
 * weights within what the int8 rounding of the activations allows). */
static void test_matmul_matches_reference(void **state)
{
    (void)state;
    enum { ROWS = 37, COLS = 256 };
    infer_dtype types[] = {INFER_F32, INFER_F16, INFER_BF16, INFER_Q8_0, INFER_Q4_0, INFER_Q4_K, INFER_Q6_K};
    uint8_t *w = malloc(ROWS * COLS * 4);
    float x[2 * COLS], y[2 * ROWS];
    srand(1);
    for (size_t i = 0; i < ROWS * COLS * 4; i++)
        w[i] = (uint8_t)rand();
    for (int i = 0; i < 2 * COLS; i++)
        x[i] = (float)rand() / RAND_MAX - 0.5f;
    infer_pool *pool = infer_pool_new(3);
    for (size_t k = 0; k < ARRAY_LEN(types); k++) {
        infer_matrix m = {types[k], w, ROWS, COLS, infer_dtype_row_bytes(types[k], COLS)};
        fill_weights(types[k], w, ROWS * m.row_bytes);
        infer_matmul(pool, y, x, &m, 2);
        for (int t = 0; t < 2; t++)
            for (int r = 0; r < ROWS; r++) {
                const uint8_t *row = w + m.row_bytes * (size_t)r;
                float ref = infer_dot_row(types[k], row, x + t * COLS, COLS);
                assert_true(fabsf(y[t * ROWS + r] - ref) <=
                            1e-3f * fmaxf(1.0f, fabsf(ref)) + int8_error_bound(types[k], row, x + t * COLS, COLS));
            }
    }
    infer_pool_free(pool);
    free(w);
}

static int parse_st(const char *header, size_t data_len, err *e)
{
    size_t n = strlen(header);
    uint8_t *img = calloc(1, 8 + n + data_len);
    for (int i = 0; i < 8; i++)
        img[i] = (uint8_t)(n >> (8 * i));
    memcpy(img + 8, header, n);
    infer_tensor_set ts = {0};
    int rc = infer_safetensors_parse(&ts, img, 8 + n + data_len, "test", e);
    if (rc == 0) {
        const infer_tensor_entry *t = infer_tensor_find(&ts, "a");
        assert_non_null(t);
        assert_int_equal(t->type, INFER_F32);
    }
    infer_tensor_set_free(&ts);
    free(img);
    return rc;
}

static void test_safetensors_validation(void **state)
{
    (void)state;
    err e = ERR_INIT;
    assert_int_equal(parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, &e), 0);
    assert_int_equal(parse_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                              "\"__metadata__\":{\"format\":\"pt\"}}", 16, &e), 0);
    const char *bad[] = {
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}",          /* size */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}x",         /* trailing */
        "{\"a\":{\"dtype\":\"Q9\",\"shape\":[4],\"data_offsets\":[0,16]}}",             /* dtype */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}",            /* order */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}",           /* negative */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",             /* overlap */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",             /* duplicate */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",             /* gap at end */
        "[1,2]",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err_clear(&e);
        assert_int_equal(parse_st(bad[i], 16, &e), -1);
        assert_int_equal(e.status, 400);
    }
    /* Header length past the end of the file. */
    uint8_t img[16] = {0xFF, 0xFF, 0, 0, 0, 0, 0, 0, '{', '}'};
    infer_tensor_set ts = {0};
    assert_int_equal(infer_safetensors_parse(&ts, img, sizeof img, "t", &e), -1);
    infer_tensor_set_free(&ts);
}

/* A minimal GGUF v3 image: one F32 tensor "w" of 4 elements and one string key. */
static size_t make_gguf(uint8_t *out)
{
    uint8_t *p = out;
#define PUT(v, n) do { uint64_t _v = (v); for (int _i = 0; _i < (n); _i++) *p++ = (uint8_t)(_v >> (8 * _i)); } while (0)
    memcpy(p, "GGUF", 4);
    p += 4;
    PUT(3, 4);
    PUT(1, 8);   /* tensors */
    PUT(1, 8);   /* kv */
    PUT(20, 8);
    memcpy(p, "general.architecture", 20);
    p += 20;
    PUT(GGUF_STRING, 4);
    PUT(5, 8);
    memcpy(p, "llama", 5);
    p += 5;
    PUT(1, 8);
    *p++ = 'w';
    PUT(1, 4);
    PUT(4, 8);
    PUT(0, 4);   /* F32 */
    PUT(0, 8);
    while ((p - out) % 32)
        *p++ = 0;
    for (int i = 0; i < 4; i++) {
        float f = (float)i;
        memcpy(p, &f, 4);
        p += 4;
    }
#undef PUT
    return (size_t)(p - out);
}

static void test_gguf_reader(void **state)
{
    (void)state;
    uint8_t img[256];
    size_t n = make_gguf(img);
    gguf_file g;
    infer_tensor_set ts = {0};
    err e = ERR_INIT;
    assert_int_equal(infer_gguf_parse(&g, &ts, img, n, &e), 0);
    char *arch = infer_gguf_string(&g, "general.architecture");
    assert_string_equal(arch, "llama");
    free(arch);
    const infer_tensor_entry *t = infer_tensor_find(&ts, "w");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 4);
    assert_true(((const float *)t->data)[3] == 3.0f);
    infer_gguf_free(&g);
    infer_tensor_set_free(&ts);
    /* Every truncation fails cleanly. */
    for (size_t cut = 0; cut < n; cut++) {
        infer_tensor_set ts2 = {0};
        err_clear(&e);
        assert_int_equal(infer_gguf_parse(&g, &ts2, img, cut, &e), -1);
        assert_int_equal(e.status, 400);
        infer_tensor_set_free(&ts2);
    }
}

static const char TOKENIZER_JSON[] =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<eos>\",\"special\":true}],"
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
    "\"use_regex\":true},\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"<eos>\":0,\"h\":1,\"i\":2,\"hi\":3,\"\\u0120\":4,"
    "\"\\u0120hi\":5},\"merges\":[\"h i\",[\"\\u0120\",\"hi\"]]}}";

static void test_tokenizer_roundtrip(void **state)
{
    (void)state;
    infer_tokenizer *t;
    err e = ERR_INIT;
    assert_int_equal(infer_tokenizer_load_json(&t, TOKENIZER_JSON, strlen(TOKENIZER_JSON), &e), 0);
    int32_t *ids;
    size_t n;
    assert_int_equal(infer_tokenize(t, "hi hi<eos>", 10, true, &ids, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 3);
    assert_int_equal(ids[1], 5);
    assert_int_equal(ids[2], 0);
    buf out = BUF_INIT;
    infer_detokenize(t, ids, n, true, &out);
    assert_string_equal(out.data, "hi hi");
    buf_reset(&out);
    infer_detokenize(t, ids, n, false, &out);
    assert_string_equal(out.data, "hi hi<eos>");
    free(ids);
    buf_free(&out);
    infer_tokenizer_free(t);

    const char *bad[] = {"{", "{\"model\":{\"type\":\"Unigram\"}}",
                         "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err_clear(&e);
        assert_int_equal(infer_tokenizer_load_json(&t, bad[i], strlen(bad[i]), &e), -1);
        assert_int_equal(e.status, 400);
    }
}

/* WordPiece as BERT ships it: accents stripped, lowercased, punctuation split off, "##" pieces,
 * [CLS] ... [SEP] around, truncation that keeps [SEP], and the decoder's spacing. */
static void test_wordpiece(void **state)
{
    (void)state;
    const char *json =
        "{\"added_tokens\":[{\"id\":0,\"content\":\"[UNK]\",\"special\":true},"
        "{\"id\":1,\"content\":\"[CLS]\",\"special\":true},{\"id\":2,\"content\":\"[SEP]\",\"special\":true}],"
        "\"normalizer\":{\"type\":\"BertNormalizer\",\"strip_accents\":null,\"lowercase\":true},"
        "\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},"
        "\"post_processor\":{\"type\":\"BertProcessing\",\"sep\":[\"[SEP]\",2],\"cls\":[\"[CLS]\",1]},"
        "\"decoder\":{\"type\":\"WordPiece\",\"prefix\":\"##\",\"cleanup\":true},"
        "\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"continuing_subword_prefix\":\"##\","
        "\"max_input_chars_per_word\":100,\"vocab\":{\"[UNK]\":0,\"[CLS]\":1,\"[SEP]\":2,\"cafe\":3,"
        "\"un\":4,\"##aff\":5,\"##able\":6,\"!\":7,\"\u4e2d\":8}}}";
    infer_tokenizer *t;
    err e = ERR_INIT;
    assert_int_equal(infer_tokenizer_load_json(&t, json, strlen(json), &e), 0);
    const char *text = "Caf\xC3\xA9 UNAFFABLE!\x01\xE4\xB8\xADxyz";   /* "Café UNAFFABLE!<SOH>中xyz" */
    int32_t *ids;
    size_t n;
    assert_int_equal(infer_tokenize(t, text, strlen(text), true, &ids, &n, &e), 0);
    int32_t want[] = {1, 3, 4, 5, 6, 7, 8, 0, 2};
    assert_int_equal(n, ARRAY_LEN(want));
    assert_memory_equal(ids, want, sizeof want);
    buf out = BUF_INIT;
    infer_detokenize(t, ids, n, true, &out);
    assert_string_equal(out.data, "cafe unaffable! \xE4\xB8\xAD");   /* [UNK] is special: skipped */
    infer_tokenizer_truncate(t, ids, &n, 4);
    int32_t cut[] = {1, 3, 4, 2};
    assert_int_equal(n, 4);
    assert_memory_equal(ids, cut, sizeof cut);
    free(ids);
    buf_free(&out);
    infer_tokenizer_free(t);

    const char *no_unk = "{\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"vocab\":{\"a\":0}}}";
    assert_int_equal(infer_tokenizer_load_json(&t, no_unk, strlen(no_unk), &e), -1);
    assert_non_null(strstr(e.message, "[UNK]"));
}

static void test_stream_keeps_utf8_whole(void **state)
{
    (void)state;
    /* Byte-level vocabulary where "é" (C3 A9) is two tokens. */
    const char *json =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\u00c3\":0,\"\\u00a9\":1,\"a\":2},\"merges\":[]},"
        "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"use_regex\":false},\"decoder\":{\"type\":\"ByteLevel\"}}";
    infer_tokenizer *t;
    err e = ERR_INIT;
    assert_int_equal(infer_tokenizer_load_json(&t, json, strlen(json), &e), 0);
    infer_stream s;
    infer_stream_init(&s);
    buf out = BUF_INIT;
    infer_stream_push(&s, t, 2, &out);
    assert_string_equal(out.data, "a");
    infer_stream_push(&s, t, 0, &out);
    assert_int_equal(out.len, 1);   /* half a character held back */
    infer_stream_push(&s, t, 1, &out);
    assert_string_equal(out.data, "a\xC3\xA9");
    infer_stream_finish(&s, &out);
    infer_stream_free(&s);
    buf_free(&out);
    infer_tokenizer_free(t);
}

static void test_sampler(void **state)
{
    (void)state;
    float logits[5] = {0.1f, 2.0f, 2.0f, -1.0f, 0.5f};
    infer_sampler_params p;
    infer_sampler_defaults(&p);
    infer_sampler *s = infer_sampler_new(&p, 5);
    float l[5];
    memcpy(l, logits, sizeof l);
    assert_int_equal(infer_sampler_sample(s, l), 1);   /* greedy: first of the tied maxima */
    infer_sampler_free(s);

    p.temperature = 1.0f;
    p.top_k = 1;
    s = infer_sampler_new(&p, 5);
    for (int i = 0; i < 20; i++) {
        memcpy(l, logits, sizeof l);
        assert_int_equal(infer_sampler_sample(s, l), 1);   /* top-k 1 is greedy */
    }
    infer_sampler_free(s);

    /* Same seed, same draws; penalties push a seen token down. */
    p.top_k = 0;
    p.seed = 42;
    infer_sampler *a = infer_sampler_new(&p, 5), *b = infer_sampler_new(&p, 5);
    for (int i = 0; i < 50; i++) {
        float la[5], lb[5];
        memcpy(la, logits, sizeof la);
        memcpy(lb, logits, sizeof lb);
        assert_int_equal(infer_sampler_sample(a, la), infer_sampler_sample(b, lb));
    }
    infer_sampler_free(a);
    infer_sampler_free(b);
    infer_sampler_defaults(&p);
    p.repetition_penalty = 100.0f;
    s = infer_sampler_new(&p, 5);
    infer_sampler_accept(s, 1);
    memcpy(l, logits, sizeof l);
    assert_int_equal(infer_sampler_sample(s, l), 2);
    infer_sampler_free(s);
}

static void test_template_basics(void **state)
{
    (void)state;
    static const struct { const char *tmpl, *vars, *want; } cases[] = {
        {"{{ 'a' + b }}|{{ 7 // 2 }}|{{ 7 / 2 }}|{{ -7 % 3 }}", "{\"b\":\"c\"}", "ac|3|3.5|2"},
        {"{% for m in ms %}{{ loop.index }}{{ m.r }}{% if not loop.last %},{% endif %}{% endfor %}",
         "{\"ms\":[{\"r\":\"x\"},{\"r\":\"y\"}]}", "1x,2y"},
        {"{%- set ns = namespace(n=0) -%}\n  {% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
         "{}", "3"},
        {"{{ x | tojson }} {{ [1, 'a', none, true] }}", "{\"x\":{\"k\":[1,2.5,\"\\u00e9\"]}}",
         "{\"k\": [1, 2.5, \"\xC3\xA9\"]} [1, 'a', None, True]"},
        {"{{ 'Hi There'.lower().split(' ')[::-1] | join('-') }}{{ y is defined }}", "{}", "there-hiFalse"},
        {"  {% if true %}\nA\n  {% endif %}\nB", "{}", "A\nB"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        buf out = BUF_INIT;
        err e = ERR_INIT;
        int rc = infer_template_render(cases[i].tmpl, strlen(cases[i].tmpl), cases[i].vars, &out, &e);
        if (rc != 0)
            fail_msg("case %zu: %s", i, e.message);
        assert_string_equal(out.data ? out.data : "", cases[i].want);
        buf_free(&out);
    }
    buf out = BUF_INIT;
    err e = ERR_INIT;
    const char *t = "{{ raise_exception('roles must alternate') }}";
    assert_int_equal(infer_template_render(t, strlen(t), "{}", &out, &e), -1);
    assert_non_null(strstr(e.message, "roles must alternate"));
    buf_free(&out);
}

/* A template is input: nesting that would run the stack out is an error, not a crash. */
static void test_template_nesting_bounded(void **state)
{
    (void)state;
    buf deep = BUF_INIT;
    buf_append(&deep, "{{ ", 3);
    for (int i = 0; i < 100000; i++)
        buf_append(&deep, "(", 1);
    buf_append(&deep, "1", 1);
    for (int i = 0; i < 100000; i++)
        buf_append(&deep, ")", 1);
    buf_append(&deep, " }}", 3);
    buf blocks = BUF_INIT, chain = BUF_INIT, nots = BUF_INIT;
    for (int i = 0; i < 50000; i++)
        buf_append(&blocks, "{% if 1 %}", 10);
    buf_append(&chain, "{{ 1", 4);
    for (int i = 0; i < 50000; i++)
        buf_append(&chain, " + 1", 4);   /* parsed in a loop, evaluated recursively */
    buf_append(&chain, " }}", 3);
    buf_append(&nots, "{{ ", 3);
    for (int i = 0; i < 50000; i++)
        buf_append(&nots, "not -", 5);
    buf_append(&nots, "1 }}", 4);
    const buf *cases[] = {&deep, &blocks, &chain, &nots};
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        buf out = BUF_INIT;
        err e = ERR_INIT;
        assert_int_equal(infer_template_render(cases[i]->data, cases[i]->len, "{}", &out, &e), -1);
        assert_non_null(strstr(e.message, "deep"));
        buf_free(&out);
    }
    /* within the bounds, nesting works */
    const char *ok = "{{ ((((((((((1)))))))))) + - - 2 }}{% if 1 %}{% if 1 %}x{% endif %}{% endif %}";
    buf out = BUF_INIT;
    err e = ERR_INIT;
    assert_int_equal(infer_template_render(ok, strlen(ok), "{}", &out, &e), 0);
    assert_string_equal(out.data, "3x");
    buf_free(&out);
    buf_free(&deep);
    buf_free(&blocks);
    buf_free(&chain);
    buf_free(&nots);
}

/* ---- a prompt in one call gives the logits of the same tokens one at a time -------------------- */

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Appends a safetensors header entry for an F32 tensor of rows × cols (cols 0: a vector) at *off. */
static void st_entry(buf *header, size_t *off, const char *name, int rows, int cols)
{
    char shape[32], entry[256];
    if (cols)
        snprintf(shape, sizeof shape, "%d,%d", rows, cols);
    else
        snprintf(shape, sizeof shape, "%d", rows);
    size_t bytes = 4u * (size_t)rows * (size_t)(cols ? cols : 1);
    int len = snprintf(entry, sizeof entry, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}",
                       *off ? "," : "", name, shape, *off, *off + bytes);
    buf_append(header, entry, (size_t)len);
    *off += bytes;
}

/* A random-weight llama-family model (F32 safetensors, tied embeddings) of `layers` layers with 8
 * query heads over 2 KV heads of 16, written under dir with the given config.json extras. */
static void write_tiny_model(const char *dir, const char *model_type, int layers, bool post_norms,
                             const char *config_extra)
{
    enum { DIM = 64, HEADS = 8, KV = 2, HD = 16, FFN = 96, VOCAB = 64 };
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"model_type\":\"%s\",\"hidden_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
             "\"num_key_value_heads\":%d,\"head_dim\":%d,\"intermediate_size\":%d,\"vocab_size\":%d,"
             "\"max_position_embeddings\":512,\"tie_word_embeddings\":true%s}",
             model_type, DIM, layers, HEADS, KV, HD, FFN, VOCAB, config_extra);
    write_text(dir, "config.json", cfg);
    write_text(dir, "tokenizer.json", TOKENIZER_JSON);

    buf header = BUF_INIT;
    size_t off = 0;
    buf_append(&header, "{", 1);
    st_entry(&header, &off, "model.embed_tokens.weight", VOCAB, DIM);
    st_entry(&header, &off, "model.norm.weight", DIM, 0);
    for (int l = 0; l < layers; l++) {
        static const struct { const char *name; int rows, cols; } per_layer[] = {
            {"input_layernorm.weight", DIM, 0}, {"post_attention_layernorm.weight", DIM, 0},
            {"self_attn.q_proj.weight", HEADS * HD, DIM}, {"self_attn.k_proj.weight", KV * HD, DIM},
            {"self_attn.v_proj.weight", KV * HD, DIM}, {"self_attn.o_proj.weight", DIM, HEADS * HD},
            {"mlp.gate_proj.weight", FFN, DIM}, {"mlp.up_proj.weight", FFN, DIM},
            {"mlp.down_proj.weight", DIM, FFN}, {"pre_feedforward_layernorm.weight", DIM, 0},
            {"post_feedforward_layernorm.weight", DIM, 0},
        };
        for (size_t i = 0; i < ARRAY_LEN(per_layer) - (post_norms ? 0 : 2); i++) {
            char name[96];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, per_layer[i].name);
            st_entry(&header, &off, name, per_layer[i].rows, per_layer[i].cols);
        }
    }
    buf_append(&header, "}", 1);
    while (header.len % 8)
        buf_append(&header, " ", 1);

    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)header.len >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header.data, 1, header.len, f);
    srand(7);
    for (size_t i = 0; i < off / 4; i++) {
        float x = ((float)rand() / RAND_MAX - 0.5f) * 0.5f;
        fwrite(&x, 4, 1, f);
    }
    fclose(f);
    buf_free(&header);
}

/* max |a - b| over n floats, relative to max |a|. */
static double relative_gap(const float *a, const float *b, int n)
{
    double gap = 0, scale = 1e-30;
    for (int i = 0; i < n; i++) {
        gap = fmax(gap, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)a[i]));
    }
    return gap / scale;
}

/* Prompt attention runs as blocked products over query tiles and 128-token chunks; decoding runs
 * one token at a time. Both must give the same logits (causal mask, GQA, sliding window, soft-cap,
 * a prompt that continues a cached prefix), for the F32 and the F16 KV cache. Today's gaps are
 * about 1e-6; a window off by one position gives 4e-2. */
static void test_prompt_matches_token_by_token(void **state)
{
    (void)state;
    static const struct { const char *type, *extra; bool post_norms; } models[] = {
        {"mistral", ",\"sliding_window\":40", false},
        {"gemma2", ",\"sliding_window\":24,\"attn_logit_softcapping\":5.0,\"query_pre_attn_scalar\":16,"
                   "\"hidden_activation\":\"gelu_pytorch_tanh\"", true},
        {"llama", "", false},
    };
    enum { N = 300, FIRST = 170 };
    int32_t tokens[N];
    for (int i = 0; i < N; i++)
        tokens[i] = (int32_t)((i * 37 + 11) % 64);
    for (size_t mi = 0; mi < ARRAY_LEN(models); mi++) {
        char dir[] = "/tmp/hearth-infer-XXXXXX";
        assert_non_null(mkdtemp(dir));
        write_tiny_model(dir, models[mi].type, 2, models[mi].post_norms, models[mi].extra);
        infer_model *m;
        err e = ERR_INIT;
        assert_int_equal(infer_model_load(&m, dir, NULL, &e), 0);
        int vocab = infer_model_vocab_size(m);
        for (int kv_f32 = 0; kv_f32 <= 1; kv_f32++) {
            infer_session_options opt = {.threads = 2, .max_seq = 512, .kv_f32 = kv_f32};
            infer_session *whole = infer_session_new(m, &opt, &e), *single = infer_session_new(m, &opt, &e);
            assert_non_null(whole);
            assert_non_null(single);
            assert_non_null(infer_session_forward(whole, tokens, FIRST, &e));
            const float *a = infer_session_forward(whole, tokens + FIRST, N - FIRST, &e);
            const float *b = NULL;
            for (int i = 0; i < N; i++)
                b = infer_session_forward(single, tokens + i, 1, &e);
            assert_non_null(a);
            assert_non_null(b);
            double gap = relative_gap(a, b, vocab);
            if (gap > 1e-4)
                fail_msg("%s, %s KV cache: logits differ by %g", models[mi].type, kv_f32 ? "F32" : "F16", gap);
            infer_session_free(whole);
            infer_session_free(single);
        }
        infer_model_free(m);
        const char *files[] = {"config.json", "tokenizer.json", "model.safetensors"};
        for (size_t i = 0; i < ARRAY_LEN(files); i++) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            unlink(path);
        }
        rmdir(dir);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_floats),
        cmocka_unit_test(test_q8_0_and_q4_0_blocks),
        cmocka_unit_test(test_matmul_matches_reference),
        cmocka_unit_test(test_qgemm_matches_reference),
        cmocka_unit_test(test_bgemm_matches_double),
        cmocka_unit_test(test_safetensors_validation),
        cmocka_unit_test(test_gguf_reader),
        cmocka_unit_test(test_tokenizer_roundtrip),
        cmocka_unit_test(test_wordpiece),
        cmocka_unit_test(test_stream_keeps_utf8_whole),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_template_basics),
        cmocka_unit_test(test_template_nesting_bounded),
        cmocka_unit_test(test_prompt_matches_token_by_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
