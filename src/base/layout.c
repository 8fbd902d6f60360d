/* layout — the one description of a data directory, used by `hearth serve`, `hearth admin`
 * and the pre-receive hook alike, so that they never disagree about where things live:
 *
 *   DIR/hearth.db          metadata (SQLite, WAL)
 *   DIR/lfs/               the content store (its own layout inside: store.db, packs/, tmp/)
 *   DIR/repos/<uid>.git    one bare git repository per repo, named by its immutable id
 *   DIR/uploads/           multipart parts and git request bodies in flight
 *   DIR/hooks/             the pre-receive hook (a link to the hearth binary)
 *   DIR/snapshots/         repo revisions as plain directories, for `hearth run`
 *   DIR/secret             the HMAC key of signed URLs and Xet tokens (0600)
 */
#include "base/base.h"

#include <errno.h>
#include <string.h>

static const char *const part_names[] = {
    [DATA_DB] = "hearth.db",     [DATA_STORE] = "lfs",       [DATA_REPOS] = "repos",
    [DATA_UPLOADS] = "uploads",  [DATA_HOOKS] = "hooks",     [DATA_SNAPSHOTS] = "snapshots",
    [DATA_SECRET] = "secret",
};

void data_path(buf *out, const char *data_dir, data_part part)
{
    buf_printf(out, "%s/%s", data_dir, part_names[part]);
}

void data_repo_path(buf *out, const char *data_dir, const char *uid)
{
    buf_printf(out, "%s/%s/%s.git", data_dir, part_names[DATA_REPOS], uid);
}

int data_dir_prepare(const char *data_dir, err *e)
{
    const data_part dirs[] = {DATA_REPOS, DATA_STORE, DATA_UPLOADS};
    buf dir = BUF_INIT;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < ARRAY_LEN(dirs); i++) {
        buf_reset(&dir);
        data_path(&dir, data_dir, dirs[i]);
        if (path_mkdirs(dir.data, 0755) != 0)
            rc = err_set(e, 500, "", "cannot create %s: %s", dir.data, strerror(errno));
    }
    buf_free(&dir);
    return rc;
}
