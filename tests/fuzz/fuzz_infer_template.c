/* Fuzz target: the inference engine's template parser (tests/infer/fuzz/fuzz_infer.c,
 * target 4). */
// fuzz-modules: base infer
#define FUZZ_TARGET 4
#include "../infer/fuzz/fuzz_infer.c"
