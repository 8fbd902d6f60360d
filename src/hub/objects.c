/* objects — the object-link rule, enforced here for every reader.
 *
 * The content store is global: each byte is stored once, whichever repo brought it. What a repo
 * may serve is not: a repo serves a stored object only if the object is linked to that repo
 * (db_repo_object_add: uploaded to it through LFS or Xet, or pushed to it with its bytes).
 * A git blob that merely *looks* like an LFS pointer proves nothing: anyone can write pointer
 * text naming any SHA-256. So every listing, stat and store read of a repo goes through the
 * functions below, which treat a pointer whose object is not linked to the repo as the small
 * text file it is: no `lfs` block, no xetHash, no bytes from the store. The answer does not
 * depend on whether the object exists in the store at all, so nothing leaks through it.
 *
 * resolve, tree, paths-info, model info (siblings), snapshots for `hearth run`, and every
 * future reader (web UI, inference, gateway) use these instead of repo_list / repo_stat /
 * store_reader_open directly.
 */
#include "hub/internal.h"

#include <string.h>

bool hub_object_linked(hub *h, const db_repo *row, const char *oid)
{
    err e = ERR_INIT;
    int rc = db_repo_object_has(h->db, row->id, oid, &e);
    if (rc < 0)
        log_warn("cannot check object %s of %s/%s: %s", oid, row->ns, row->name, e.message);
    return rc == 0;
}

/* A pointer to an object this repo does not hold is an ordinary small file. */
static void scope_entry(hub *h, const db_repo *row, repo_entry *ent)
{
    if (ent->is_dir || !ent->is_lfs || hub_object_linked(h, row, ent->lfs.oid))
        return;
    ent->is_lfs = false;
    ent->size = ent->lfs.pointer_size;
    memset(&ent->lfs, 0, sizeof ent->lfs);
}

int hub_entries_list(hub *h, const db_repo *row, repo *r, const char *commit, const char *dir,
                     bool recursive, repo_entries *out, err *e)
{
    if (repo_list(r, commit, dir, recursive, out, e) != 0)
        return -1;
    for (size_t i = 0; i < out->n; i++)
        scope_entry(h, row, &out->items[i]);
    return 0;
}

int hub_entry_stat(hub *h, const db_repo *row, repo *r, const char *commit, const char *path,
                   repo_entry *out, err *e)
{
    int rc = repo_stat(r, commit, path, out, e);
    if (rc == 0)
        scope_entry(h, row, out);
    return rc;
}

store_reader *hub_object_open(hub *h, const db_repo *row, const char *oid, err *e)
{
    if (!hub_object_linked(h, row, oid)) {
        err_set(e, 404, "EntryNotFound", "Entry not found");
        return NULL;
    }
    return store_reader_open(h->store, oid, e);
}

int hub_object_claim(hub *h, int64_t repo_id, const char *oid, const char *path, int64_t *size,
                     err *e)
{
    int64_t have = -1;
    int st = db_repo_object_has(h->db, repo_id, oid, e);
    if (st == 0)
        st = store_stat(h->store, oid, &have, e);
    if (st < 0)
        return -1;
    /* The same answer whether or not some other repo holds the object. */
    if (st > 0)
        return err_set(e, 422, "", "LFS object %s not found in this repo: upload it before "
                                   "committing %s", oid, path);
    *size = have;
    return 0;
}
