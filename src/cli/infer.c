/* infer — what `hearth run` and `hearth embed` share in front of the inference engine: MODEL
 * as a path or as a repo id on a hub (`hearth run alice/tiny-llama --data DIR [--revision REV]`
 * exports that commit to a snapshot directory once and runs from there), and the clock and
 * memory figures of their closing statistics line. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "base/base.h"
#include "hub/hub.h"

int cli_model_path(const char *command, const char *model, const char *data, const char *revision,
                   buf *dir, const char **path)
{
    *path = model;
    struct stat st;
    bool repo_id = model && data && stat(model, &st) != 0 && strchr(model, '/');
    if (!repo_id) {
        if (!data && !revision)
            return 0;
        fprintf(stderr, "hearth %s: --data/--revision go with a MODEL that is a repo id "
                        "(namespace/name) on that hub\n", command);
        return 2;
    }
    err e = ERR_INIT;
    hub_config hc = {.data_dir = data, .maintenance = true};
    hub *h = hub_open(&hc, &e);
    if (!h || hub_snapshot(h, "model", model, revision, dir, &e) != 0) {
        fprintf(stderr, "hearth %s: %s\n", command, e.message);
        hub_close(h);
        return 1;
    }
    hub_close(h);
    fprintf(stderr, "hearth %s: %s%s%s is %s\n", command, model, revision ? "@" : "",
            revision ? revision : "", dir->data);
    *path = dir->data;
    return 0;
}

double cli_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double cli_peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}
