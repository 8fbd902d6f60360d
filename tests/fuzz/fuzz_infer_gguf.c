/* Fuzz target: the inference engine's gguf parser (tests/infer/fuzz/fuzz_infer.c,
 * target 2). */
// fuzz-modules: base infer
#define FUZZ_TARGET 2
#include "../infer/fuzz/fuzz_infer.c"
