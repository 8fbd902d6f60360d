/* Fuzz target: percent-decoding and repository path validation. A path that validates must
 * never contain a "..", "." or empty segment, a backslash or a leading '/'. */
// fuzz-modules: base
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    buf out = BUF_INIT;
    if (text_percent_decode((const char *)data, size, size % 2, &out) == 0 &&
        path_is_valid_repo_path(buf_str(&out), out.len)) {
        const char *p = buf_str(&out);
        if (p[0] == '/' || strstr(p, "//") || strchr(p, '\\') || !strcmp(p, "..") ||
            !strncmp(p, "../", 3) || strstr(p, "/../") || text_ends_with(p, "/..") ||
            !strncmp(p, ".git/", 5))
            abort();
    }
    buf_free(&out);
    char *name = strndup((const char *)data, size);
    if (path_is_valid_repo_name(name) && (strchr(name, '/') || strstr(name, "..")))
        abort();
    free(name);
    return 0;
}
