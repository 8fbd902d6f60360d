/* snapshot — a repo revision as a plain directory, for programs that want files (the
 * inference engine's loader memory-maps them).
 *
 * DATA/snapshots/<type>s--<ns>--<name>/<commit>/ holds the files of that commit, LFS files with
 * their real content. A snapshot is written into a temp directory and renamed into place when
 * complete, so a reader never sees half of one; commits are immutable, so it is reused as is.
 */
#include "hub/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writes one file of the commit below dir. */
static int export_file(hub *h, repo *r, const char *commit, const repo_entry *ent,
                       const char *dir, err *e)
{
    buf path = BUF_INIT;
    path_join(&path, dir, ent->path);
    char parent[4200];
    snprintf(parent, sizeof parent, "%s", path.data);
    char *slash = strrchr(parent, '/');
    if (slash) {
        *slash = '\0';
        path_mkdirs(parent, 0755);
    }
    int fd = open(path.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    if (fd < 0) {
        rc = err_set(e, 500, "", "cannot write %s: %s", path.data, strerror(errno));
    } else if (ent->is_lfs) {
        store_reader *rd = store_reader_open(h->store, ent->lfs.oid, e);
        if (!rd) {
            rc = -1;
        } else {
            enum { BLOCK = 1 << 20 };
            char *block = malloc(BLOCK);
            if (!block)
                abort();
            for (int64_t pos = 0, size = store_reader_size(rd); rc == 0 && pos < size;) {
                ssize_t n = store_reader_pread(rd, block, BLOCK, pos);
                if (n <= 0 || path_write_all(fd, block, (size_t)n) != 0)
                    rc = err_set(e, 500, "", "cannot copy %s out of the store", ent->path);
                else
                    pos += n;
            }
            free(block);
            store_reader_close(rd);
        }
    } else {
        buf data = BUF_INIT;
        if (repo_read(r, commit, ent->path, &data, e) != 0 ||
            path_write_all(fd, buf_str(&data), data.len) != 0)
            rc = err_is_set(e) ? -1 : err_set(e, 500, "", "cannot write %s", path.data);
        buf_free(&data);
    }
    if (fd >= 0)
        close(fd);
    buf_free(&path);
    return rc;
}

int hub_snapshot(hub *h, const char *type, const char *repo_id, const char *revision,
                 buf *out_dir, err *e)
{
    const char *slash = strchr(repo_id, '/');
    char ns[97], name[97];
    if (!slash || slash - repo_id > 96 || strlen(slash + 1) > 96)
        return err_set(e, 400, "", "'%s' is not a repo id (namespace/name)", repo_id);
    snprintf(ns, sizeof ns, "%.*s", (int)(slash - repo_id), repo_id);
    snprintf(name, sizeof name, "%s", slash + 1);
    db_repo row;
    int rc = path_is_valid_repo_name(ns) && path_is_valid_repo_name(name)
                 ? db_repo_get(h->db, type, ns, name, &row, e)
                 : 1;
    if (rc != 0)
        return rc < 0 ? -1 : err_set(e, 404, "RepoNotFound", "no %s repo %s in %s", type,
                                     repo_id, h->data_dir);
    buf git_dir = BUF_INIT;
    hub_git_dir(h, row.uid, &git_dir);
    repo *r = repo_open(git_dir.data, e);
    buf_free(&git_dir);
    if (!r) {
        db_repo_free(&row);
        return -1;
    }
    char sha[41];
    rc = repo_resolve(r, revision && *revision ? revision : "main", sha, e);
    data_path(out_dir, h->data_dir, DATA_SNAPSHOTS);
    buf_printf(out_dir, "/%ss--%s--%s/%s", type, ns, name, sha);
    struct stat st;
    if (rc == 0 && stat(out_dir->data, &st) == 0) {
        repo_close(r);
        db_repo_free(&row);
        return 0; /* commits never change: an existing snapshot is complete */
    }
    buf tmp = BUF_INIT;
    uint8_t rnd[6];
    char tag[13];
    hash_random(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, tag);
    buf_printf(&tmp, "%s.tmp-%s", out_dir->data, tag);
    repo_entries files = {0};
    if (rc == 0 && (path_mkdirs(tmp.data, 0755) != 0 ||
                    hub_entries_list(h, &row, r, sha, "", true, &files, e) != 0))
        rc = err_is_set(e) ? -1 : err_set(e, 500, "", "cannot create %s", tmp.data);
    for (size_t i = 0; rc == 0 && i < files.n; i++)
        if (!files.items[i].is_dir)
            rc = export_file(h, r, sha, &files.items[i], tmp.data, e);
    if (rc == 0 && rename(tmp.data, out_dir->data) != 0 && errno != ENOTEMPTY && errno != EEXIST)
        rc = err_set(e, 500, "", "cannot place %s: %s", out_dir->data, strerror(errno));
    path_remove_tree(tmp.data); /* gone already when renamed, or lost a race */
    repo_entries_free(&files);
    buf_free(&tmp);
    repo_close(r);
    db_repo_free(&row);
    return rc;
}
