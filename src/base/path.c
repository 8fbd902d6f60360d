/* path — what may reach the filesystem. Repository paths are validated here once, so that no
 * request path can escape its root: no "..", no absolute paths, no backslashes, no NUL. */
#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool path_is_valid_repo_path(const char *p, size_t len)
{
    if (len == 0 || len > 4096 || strlen(p) != len)
        return false;
    if (p[0] == '/' || p[len - 1] == '/')
        return false;
    const char *seg = p;
    for (size_t i = 0; i <= len; i++) {
        char c = p[i];
        if (c == '/' || c == '\0') {
            size_t n = (size_t)(p + i - seg);
            if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
                return false;
            if (seg == p && n == 4 && memcmp(seg, ".git", 4) == 0)
                return false;
            seg = p + i + 1;
            continue;
        }
        if (c == '\\' || (unsigned char)c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

bool path_is_valid_repo_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 96)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    if (name[0] == '.' || name[0] == '-' || name[n - 1] == '.' || name[n - 1] == '-')
        return false;
    /* "x.git" could not be told from x's git URL (/ns/x.git/info/refs): refused, as the Hub
     * and huggingface_hub's validate_repo_id refuse it. */
    return !strstr(name, "..") && !strstr(name, "--") && !text_ends_with(name, ".git");
}

void path_join(buf *out, const char *root, const char *rel)
{
    buf_puts(out, root);
    if (out->len && out->data[out->len - 1] != '/')
        buf_putc(out, '/');
    buf_puts(out, rel);
}

int path_mkdirs(const char *dir, int mode)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int path_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int path_fsync_parent(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int path_write_atomic(const char *path, const void *data, size_t len, err *e)
{
    buf tmp = BUF_INIT;
    uint8_t rnd[6];
    char hex[13];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, hex);
    buf_printf(&tmp, "%s.tmp-%s", path, hex);
    int fd = open(tmp.data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        err_set(e, 500, "", "cannot create %s: %s", tmp.data, strerror(errno));
        buf_free(&tmp);
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0)
        goto fail;
    close(fd);
    fd = -1;
    if (rename(tmp.data, path) != 0)
        goto fail;
    path_fsync_parent(path);
    buf_free(&tmp);
    return 0;
fail:
    err_set(e, errno == ENOSPC ? 507 : 500, "", "cannot write %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp.data);
    buf_free(&tmp);
    return -1;
}

int path_read_file(const char *path, buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        buf_append(out, chunk, (size_t)n);
    }
    close(fd);
    buf_reserve(out, 0);
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

int path_remove_tree(const char *dir)
{
    return nftw(dir, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
}
