/* cli — the subcommands: argument parsing, wiring of the modules, and all that the tool prints
 * (the libraries print nothing). A file per command. Each returns a process exit status;
 * argv[0] is the subcommand's name. */
#ifndef HEARTH_CLI_H
#define HEARTH_CLI_H

#include "base/base.h"

int cli_serve_main(int argc, char **argv);
int cli_admin_main(int argc, char **argv);
/* `hearth run`: text generation; MODEL may be a repo id on the hub in --data DIR (with
 * --revision REV), turned into a snapshot directory before the inference engine sees it. */
int cli_run_main(int argc, char **argv);
/* `hearth embed`: the same MODEL resolution, then the embeddings engine. */
int cli_embed_main(int argc, char **argv);
/* `hearth xet chunks|xorb|shard`: Xet chunking and hashes of a file, a xorb or a shard. */
int cli_xet_main(int argc, char **argv);

/* ---- shared by run.c and embed.c (infer.c) ------------------------------------------------ */

/* MODEL as the engine should load it: model itself (which may be NULL), or, when data is given
 * and model is no path here but a repo id (namespace/name), the snapshot directory of that repo
 * at revision (default main) on the hub in data, exported there on first use and named in dir.
 * Returns 0 with *path set (to model or dir's text), or an exit status after a message on
 * stderr: 1 when the hub could not give the snapshot, 2 for --data or --revision without a
 * repo id. command names the subcommand in messages. */
int cli_model_path(const char *command, const char *model, const char *data, const char *revision,
                   buf *dir, const char **path);
/* Monotonic clock in seconds, and this process's peak resident memory, for statistics lines. */
double cli_seconds(void);
double cli_peak_rss_mib(void);

#endif
