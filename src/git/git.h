/* git — git's own smart-HTTP services for Hearth repositories.
 *
 * Clones, fetches and pushes are served by git itself: `git upload-pack` and
 * `git receive-pack` in stateless-RPC mode, started directly (never through a shell) on a
 * repository directory the caller has already resolved and authorised. This module owns
 * those processes: starting them with a clean environment, feeding them the request body
 * from a file, handing their output to the caller, and reaping them.
 *
 * Pushes pass through a pre-receive hook that is this same binary (a symlink named
 * `pre-receive` in DATA/hooks): it refuses refs Hearth manages itself (refs/pr/N,
 * refs/convert/NAME), deleting main, and git-lfs pointers whose objects the store does not hold,
 * so a push can never commit a file that cannot be downloaded.
 */
#ifndef HEARTH_GIT_H
#define HEARTH_GIT_H

#include <stdbool.h>
#include <sys/types.h>

#include "base/base.h"

typedef enum { GIT_UPLOAD_PACK, GIT_RECEIVE_PACK } git_service;

/* "git-upload-pack" / "git-receive-pack" → service; -1 for anything else. */
int git_service_from_name(const char *name);
const char *git_service_name(git_service s);

typedef struct git_process {
    pid_t pid;
    int out;          /* read end of the service's stdout */
} git_process;

typedef struct git_run {
    git_service service;
    const char *repo_dir;      /* bare repository */
    bool advertise;            /* info/refs: advertise refs and exit */
    bool protocol_v2;          /* the client sent Git-Protocol: version=2 */
    int input_fd;              /* request body (read from its start), or -1 for none */
    const char *hooks_dir;     /* receive-pack: core.hooksPath */
    const char *data_dir;      /* receive-pack: passed to the hook as HEARTH_DATA */
    long long repo_id;         /* receive-pack: the metadata id, HEARTH_REPO_ID for the hook */
} git_run;

/* Starts the service; its output is read from p->out. 500 on failure. */
int git_start(const git_run *run, git_process *p, err *e);
/* Closes the output and waits for the process (killing it first when `kill_first`).
 * Returns its exit status (0 = success), or -1 when it died of a signal. */
int git_finish(git_process *p, bool kill_first);

/* The pkt-line header of an info/refs reply ("# service=...\n" + flush) into out. */
void git_advertisement_header(git_service s, buf *out);

/* Makes DATA/hooks/pre-receive point at this executable. */
int git_install_hooks(const char *data_dir, err *e);

/* The pre-receive hook: runs when this binary is invoked as `pre-receive` by receive-pack,
 * with the ref updates on stdin. Returns the exit status (non-zero rejects the push). */
int git_pre_receive_main(int argc, char **argv);

#endif
