/* Fuzz target: README front matter (YAML through libyaml into JSON), .gitattributes and
 * .gitignore matching, git-lfs pointer parsing. */
// fuzz-modules: base http db auth repo store git hub xet
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hub/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size);
    err e = ERR_INIT;
    json_t *card = hub_card_parse(text, strlen(text), &e);
    json_decref(card);
    hub_gitattributes_lfs(text, "dir/model.safetensors");
    hub_gitignore_match(text, "a/b/c.txt");
    repo_lfs lfs;
    if (repo_parse_lfs_pointer(data, size, &lfs) && (lfs.size < 0 || strlen(lfs.oid) != 64))
        abort();
    free(text);
    return 0;
}
