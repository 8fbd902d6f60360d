/* Fuzz target: the NDJSON commit body parser (header, file, lfsFile, deletedFile,
 * deletedFolder, copyFile lines), against a real hub on a scratch data directory. Whatever it
 * accepts must name only valid repository paths. */
// fuzz-modules: base http db auth repo store git hub xet
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hub/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hub *h;
    if (!h) {
        char dir[] = "/tmp/hearth-fuzz-commit-XXXXXX";
        if (!mkdtemp(dir))
            abort();
        err e = ERR_INIT;
        hub_config config = {.data_dir = dir, .maintenance = true};
        h = hub_open(&config, &e);
        if (!h)
            abort();
    }
    hub_commit_plan plan = {0};
    err e = ERR_INIT;
    if (hub_commit_parse(h, 1, (const char *)data, size, &plan, &e) == 0)
        for (size_t i = 0; i < plan.nops; i++)
            if (!path_is_valid_repo_path(plan.ops[i].path, strlen(plan.ops[i].path)))
                abort();
    hub_commit_plan_free(&plan);
    return 0;
}
