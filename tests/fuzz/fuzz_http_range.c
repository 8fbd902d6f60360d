/* Fuzz target: the Range header parser must accept or ignore anything without crashing, and
 * whatever it accepts must lie inside the file. */
// fuzz-modules: base http
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    int64_t total;
    memcpy(&total, data, 8);
    total &= 0xFFFFFFFFFFFFLL;
    char *header = strndup((const char *)data + 8, size - 8);
    int64_t first = -1, last = -1;
    if (http_parse_range(header, total, &first, &last) == HTTP_RANGE_OK &&
        (first < 0 || last < first || last >= total))
        abort();
    free(header);
    return 0;
}
