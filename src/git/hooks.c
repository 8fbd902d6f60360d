/* hooks — installs DATA/hooks/pre-receive as a link to the running executable, refreshed at
 * every start so that a rebuilt or moved binary is always the one that runs. */
#include "git/git.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int git_install_hooks(const char *data_dir, err *e)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return err_set(e, 500, "", "cannot find this executable: %s", strerror(errno));
    self[n] = '\0';
    buf dir = BUF_INIT, link = BUF_INIT, tmp = BUF_INIT;
    data_path(&dir, data_dir, DATA_HOOKS);
    buf_printf(&link, "%s/pre-receive", dir.data);
    buf_printf(&tmp, "%s/.pre-receive.%d", dir.data, (int)getpid());
    int rc = 0;
    unlink(tmp.data);
    if (path_mkdirs(dir.data, 0755) != 0 || symlink(self, tmp.data) != 0 ||
        rename(tmp.data, link.data) != 0)
        rc = err_set(e, 500, "", "cannot install the pre-receive hook in %s: %s", dir.data,
                     strerror(errno));
    buf_free(&dir);
    buf_free(&link);
    buf_free(&tmp);
    return rc;
}
