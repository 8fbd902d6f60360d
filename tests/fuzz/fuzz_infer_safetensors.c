/* Fuzz target: the inference engine's safetensors parser (tests/infer/fuzz/fuzz_infer.c,
 * target 1). */
// fuzz-modules: base infer
#define FUZZ_TARGET 1
#include "../infer/fuzz/fuzz_infer.c"
