/* libFuzzer targets for the inference module's parsers: every byte string must give a result or
 * a clear error, never a crash, a leak or undefined behaviour.
 *
 *   clang -fsanitize=fuzzer,address,undefined -DFUZZ_TARGET=<n> -Isrc tests/infer/fuzz/fuzz_infer.c \
 *         src/base/[a-z]*.c src/infer/[a-z]*.c $(pkg-config --cflags --libs jansson libpcre2-8 libcrypto) -lm -pthread
 *
 * FUZZ_TARGET 1: safetensors header   2: GGUF file   3: tokenizer.json (then encode/decode a fixed
 * text)   4: chat template (rendered with a fixed conversation). Seeds: any test model files
 * (tests/infer/make_test_model.py), tests/infer/templates/ and tests/fuzz/corpus/ (WordPiece
 * tokenizers, so that the BERT normalizer and pre-tokenizer are reached). The tests in
 * tests/e2e/test_infer.py run a light mutation fuzzer over the same parsers in every CI run. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "infer/internal.h"

#ifndef FUZZ_TARGET
#define FUZZ_TARGET 1
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    err e = ERR_INIT;
#if FUZZ_TARGET == 1
    infer_tensor_set ts = {0};
    infer_safetensors_parse(&ts, data, size, "fuzz", &e);
    infer_tensor_set_free(&ts);
#elif FUZZ_TARGET == 2
    infer_tensor_set ts = {0};
    gguf_file g;
    if (infer_gguf_parse(&g, &ts, data, size, &e) == 0) {
        infer_tokenizer *t = NULL;
        if (infer_gguf_find(&g, "tokenizer.ggml.tokens") && infer_tokenizer_from_gguf(&t, &g, &e) == 0) {
            int32_t *ids;
            size_t n;
            infer_tokenize(t, "Hello <s> world 日本 😀", 27, true, &ids, &n, &e);
            free(ids);
        }
        infer_tokenizer_free(t);
        infer_gguf_free(&g);
    }
    infer_tensor_set_free(&ts);
#elif FUZZ_TARGET == 3
    infer_tokenizer *t;
    if (infer_tokenizer_load_json(&t, (const char *)data, size, &e) == 0) {
        int32_t *ids;
        size_t n;
        /* accents (composed and not), a control character, CJK, fullwidth, emoji, a special token */
        const char *text = "H\xC3\xA9llo <s> [CLS] wore\xCC\x81ld\x01\n\n  12345 日本 Ｆ 😀 don't";
        infer_tokenize(t, text, strlen(text), true, &ids, &n, &e);
        buf out = BUF_INIT;
        infer_detokenize(t, ids, n, false, &out);
        buf_free(&out);
        free(ids);
        infer_tokenizer_free(t);
    }
#elif FUZZ_TARGET == 4
    buf out = BUF_INIT;
    infer_template_render((const char *)data, size,
                          "{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", "
                          "\"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}], "
                          "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"tools\": "
                          "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]}",
                          &out, &e);
    buf_free(&out);
#endif
    return 0;
}
