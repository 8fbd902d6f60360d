/* Fuzz target: the inference engine's tokenizer parser (tests/infer/fuzz/fuzz_infer.c,
 * target 3). */
// fuzz-modules: base infer
#define FUZZ_TARGET 3
#include "../infer/fuzz/fuzz_infer.c"
