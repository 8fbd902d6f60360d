#include <stdio.h>
#include "cli/cli.h"
int cli_admin_main(int argc, char **argv) { (void)argc; (void)argv; fputs("todo\n", stderr); return 2; }
