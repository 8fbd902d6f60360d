#include <stdio.h>

#include "infer/infer.h"

int infer_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("hearth run: the inference engine is not built yet\n", stderr);
    return 2;
}
