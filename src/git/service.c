/* service — starting and reaping git's upload-pack / receive-pack. */
#include "git/git.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int git_service_from_name(const char *name)
{
    if (name && !strcmp(name, "git-upload-pack"))
        return GIT_UPLOAD_PACK;
    if (name && !strcmp(name, "git-receive-pack"))
        return GIT_RECEIVE_PACK;
    return -1;
}

const char *git_service_name(git_service s)
{
    return s == GIT_UPLOAD_PACK ? "git-upload-pack" : "git-receive-pack";
}

void git_advertisement_header(git_service s, buf *out)
{
    char line[64];
    int n = snprintf(line, sizeof line, "# service=%s\n", git_service_name(s));
    buf_printf(out, "%04x%s0000", n + 4, line);
}

int git_start(const git_run *run, git_process *p, err *e)
{
    p->pid = -1;
    p->out = -1;
    char hooks[4200];
    const char *argv[12];
    int argc = 0;
    argv[argc++] = "git";
    if (run->service == GIT_RECEIVE_PACK && run->hooks_dir) {
        snprintf(hooks, sizeof hooks, "core.hooksPath=%s", run->hooks_dir);
        argv[argc++] = "-c";
        argv[argc++] = hooks;
    }
    argv[argc++] = run->service == GIT_UPLOAD_PACK ? "upload-pack" : "receive-pack";
    argv[argc++] = "--stateless-rpc";
    if (run->advertise)
        argv[argc++] = "--advertise-refs";
    argv[argc++] = run->repo_dir;
    argv[argc] = NULL;

    /* A clean environment: no user or system git config, no terminal prompts. */
    buf data_env = BUF_INIT, path_env = BUF_INIT;
    const char *path = getenv("PATH");
    buf_printf(&path_env, "PATH=%s", path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
    buf_printf(&data_env, "HEARTH_DATA=%s", run->data_dir ? run->data_dir : "");
    char repo_env[64];
    snprintf(repo_env, sizeof repo_env, "HEARTH_REPO_ID=%lld", run->repo_id);
    const char *envp[] = {path_env.data, "HOME=/nonexistent", "GIT_CONFIG_NOSYSTEM=1",
                          "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0", "LC_ALL=C",
                          data_env.data, repo_env,
                          run->protocol_v2 ? "GIT_PROTOCOL=version=2" : NULL, NULL};

    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        buf_free(&data_env);
        buf_free(&path_env);
        return err_set(e, 500, "", "cannot create a pipe: %s", strerror(errno));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (run->input_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, run->input_fd, 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    posix_spawnattr_setsigmask(&attr, &none);       /* the server blocks SIGTERM/SIGINT */
    posix_spawnattr_setsigdefault(&attr, &defaults); /* and ignores SIGPIPE */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawnp(&p->pid, "git", &fa, &attr, (char *const *)argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(pipefd[1]);
    buf_free(&data_env);
    buf_free(&path_env);
    if (rc != 0) {
        close(pipefd[0]);
        p->pid = -1;
        return err_set(e, 500, "", "cannot start git %s: %s", argv[argc - 3], strerror(rc));
    }
    p->out = pipefd[0];
    return 0;
}

int git_finish(git_process *p, bool kill_first)
{
    if (p->out >= 0) {
        close(p->out);
        p->out = -1;
    }
    if (p->pid <= 0)
        return -1;
    if (kill_first)
        kill(p->pid, SIGTERM);
    int status = 0;
    while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
        ;
    p->pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
