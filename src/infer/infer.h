/* infer — model loading, tokenizer, chat templates, forward pass, sampling (issue 6).
 * Placeholder until the engine lands. */
#ifndef HEARTH_INFER_H
#define HEARTH_INFER_H

/* `hearth run ...`: argv[0] is "run". Returns the process exit status. */
int infer_main(int argc, char **argv);

#endif
