/* hearth — one binary, many subcommands. This file only dispatches. */
#include <stdio.h>
#include <string.h>

#include "git/git.h"

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"serve", cli_serve_main, "run the hub server (HTTP API, downloads, uploads)"},
    {"admin", cli_admin_main, "manage users, tokens and storage (create-user, create-token, ...)"},
    {"run", cli_run_main, "generate text with a model (local dir, GGUF file, or hub repo id)"},
    {"embed", cli_embed_main, "embed texts with a sentence-embeddings model (BERT)"},
    {"xet", cli_xet_main, "inspect Xet chunking and hashes of a file, xorb or shard"},
};

static void usage(FILE *out)
{
    fputs("usage: hearth <command> [options]\n\ncommands:\n", out);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fputs("\nRun `hearth <command> --help` for a command's options.\n", out);
}

int main(int argc, char **argv)
{
    /* git receive-pack runs us as its pre-receive hook (DATA/hooks/pre-receive links here). */
    const char *self = strrchr(argv[0], '/');
    if (!strcmp(self ? self + 1 : argv[0], "pre-receive"))
        return git_pre_receive_main(argc, argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "hearth: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
