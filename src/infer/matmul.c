/* matmul.c — y = W·x for every weight matrix of a forward pass: which kernels do a product.
 *
 * A prompt (several tokens) of quantised weights goes to the int8 kernels (qgemm.c), of F16 /
 * BF16 weights to the AMX-BF16 tiles where the CPU has them (bgemm.c); everything else, and
 * every single-token (decode) product, to the float kernels of tensor.c, which read each
 * weight row in its stored type. Each of those falls back on the next when it cannot do a
 * product (CPU, shape, memory), so the answer is always computed. This file only chooses: it
 * sits above the kernel files so that none of them needs another.
 */
#include "infer/internal.h"

void infer_matmul(infer_pool *p, float *y, const float *x, const infer_matrix *w, int n_tok)
{
    /* Quantised weights in a prompt: int8 products on quantised activations (qgemm.c). */
    if (n_tok > 1 && infer_qgemm_supports(w->type) && infer_qgemm(p, y, x, w, n_tok, infer_cpu_level()))
        return;
    /* F16 / BF16 weights in a prompt: split-bfloat16 tile products where the CPU has AMX-BF16. */
    if (n_tok > 1 && infer_bgemm(p, y, x, w, n_tok))
        return;
    infer_matmul_float(p, y, x, w, n_tok);
}
