/* cli — the subcommands: argument parsing, wiring of the modules, and all that the tool prints
 * (the libraries print nothing). A file per command. Each returns a process exit status;
 * argv[0] is the subcommand's name. */
#ifndef HEARTH_CLI_H
#define HEARTH_CLI_H

int cli_serve_main(int argc, char **argv);
int cli_admin_main(int argc, char **argv);
/* `hearth run`: MODEL may be a repo id on the hub in --data DIR (with --revision REV); it is
 * turned into a snapshot directory before the inference engine sees it. */
int cli_run_main(int argc, char **argv);
/* `hearth embed`: the same MODEL resolution, then the embeddings engine. */
int cli_embed_main(int argc, char **argv);
/* `hearth xet chunks|xorb|shard`: Xet chunking and hashes of a file, a xorb or a shard. */
int cli_xet_main(int argc, char **argv);

#endif
