/* db — Hearth's metadata: users, tokens, repositories and their derived metadata.
 *
 * One interface for every backend; SQLite (WAL mode) is the embedded one. A `db` handle is
 * shared by all threads: each thread gets its own SQLite connection on first use, with its
 * prepared statements cached, so hot lookups (token, repo by id) cost one step. Writers are
 * serialised by SQLite itself (busy timeout), so the `admin` CLI can write while a server runs.
 *
 * Schema changes are numbered migrations applied at open, each in its own transaction.
 *
 * Return convention: 0 = done / found, 1 = not found, -1 = error (in e, status 500, or 409 on
 * a uniqueness conflict). Structs are caller-owned; strings inside them are fixed arrays except
 * where noted (`*_free` releases those).
 */
#ifndef HEARTH_DB_H
#define HEARTH_DB_H

#include <stdbool.h>
#include <stdint.h>

#include "base/base.h"

typedef struct db db;

db *db_open(const char *path, err *e);
void db_close(db *d);

/* ---- users and tokens ------------------------------------------------------------------ */

typedef struct db_user {
    int64_t id;
    char name[97];
    char fullname[128];
    char email[128];
    bool is_org;
    bool is_admin;           /* may use /api/admin/... */
    int64_t created_ms;
} db_user;

int db_user_create(db *d, const char *name, const char *fullname, const char *email,
                   bool is_admin, db_user *out, err *e);
int db_user_by_name(db *d, const char *name, db_user *out, err *e);
int db_user_by_id(db *d, int64_t id, db_user *out, err *e);

typedef struct db_token {
    int64_t id;
    int64_t user_id;
    char name[64];
    char role[16];        /* "read" | "write" | "fineGrained" */
    char scopes[1024];    /* fine-grained: "perm:target" words, space-separated (auth parses) */
    int64_t created_ms;
    int64_t last_used_ms;
} db_token;

/* Stores a token by the SHA-256 of its secret (hex); the secret itself is never stored. */
int db_token_create(db *d, int64_t user_id, const char *name, const char *role,
                    const char *scopes, const char *secret_hash, int64_t *id_out, err *e);
int db_token_by_hash(db *d, const char *secret_hash, db_token *out, err *e);
/* A user's tokens, oldest first (caller frees *out). */
int db_token_list(db *d, int64_t user_id, db_token **out, size_t *n, err *e);
/* Revokes: 0 done, 1 no such token. */
int db_token_delete(db *d, int64_t id, err *e);
int db_token_touch(db *d, int64_t id, int64_t now_ms, err *e);
/* A token by its row id (signed URLs and Xet tokens name the token that obtained them, so
 * that revoking it revokes them). */
int db_token_by_id(db *d, int64_t id, db_token *out, err *e);

/* ---- organisations ------------------------------------------------------------------------
 * An organisation is a users row with is_org set (names are shared with users); its members
 * have a role: "read" | "contributor" | "write" | "admin". */

typedef struct db_member {
    int64_t org_id;
    char org[97];
    char org_fullname[128];
    int64_t user_id;
    char user[97];
    char user_fullname[128];
    char role[16];
} db_member;

int db_org_create(db *d, const char *name, const char *fullname, db_user *out, err *e);
/* Adds a member or changes their role. */
int db_member_set(db *d, int64_t org_id, int64_t user_id, const char *role, err *e);
/* 0 removed, 1 not a member. */
int db_member_remove(db *d, int64_t org_id, int64_t user_id, err *e);
/* An organisation's members / a user's organisations (caller frees *out). */
int db_org_members(db *d, int64_t org_id, db_member **out, size_t *n, err *e);
int db_user_orgs(db *d, int64_t user_id, db_member **out, size_t *n, err *e);
/* Public repos of a type in a namespace (overview counts). */
int db_repo_count(db *d, const char *type, const char *ns, int64_t *out, err *e);

/* ---- access requests to gated repos ----------------------------------------------------
 * One per (repo, user): "pending" | "accepted" | "rejected". */

typedef struct db_access {
    int64_t id;              /* the requestId clients see */
    int64_t user_id;
    const char *user, *fullname, *email;
    const char *status;
    const char *fields;      /* the gate form's answers, JSON object */
    const char *reason;      /* why it was rejected */
    int64_t at_ms;
} db_access;

/* Creates or updates; fields NULL keeps those already given. */
int db_access_set(db *d, int64_t repo_id, int64_t user_id, const char *status,
                  const char *fields, const char *reason, err *e);
/* 0 with status filled, 1 when the user never asked. */
int db_access_status(db *d, int64_t repo_id, int64_t user_id, char status[16], err *e);
typedef void (*db_access_fn)(void *ctx, const db_access *a);
int db_access_list(db *d, int64_t repo_id, const char *status, db_access_fn fn, void *ctx,
                   err *e);
/* The user a request id belongs to (within the repo). 0 / 1 unknown. */
int db_access_user_of(db *d, int64_t repo_id, int64_t request_id, int64_t *user_id, err *e);

/* ---- audit log ---------------------------------------------------------------------------
 * Every write, who made it, from where: append-only (the database itself refuses to change or
 * delete a row). target is "type:ns/name" for repos ("...@rev" for commits), "user:NAME",
 * "org:NAME" or "token:ID". */

typedef struct db_audit {
    int64_t id;
    int64_t at_ms;           /* 0 = now, when adding */
    const char *actor;       /* user name, "" anonymous, "hearth-admin" for the CLI */
    const char *address;     /* client address, "" when none (CLI) */
    const char *action;      /* "repo.create", "commit", "push", "token.revoke", ... */
    const char *target;
    const char *detail;      /* free text (JSON) */
} db_audit;

typedef struct db_audit_query {
    int64_t since_ms;
    const char *target;      /* exact, or its commits ("target@rev"); NULL = any */
    const char *actor;       /* NULL = any */
    int64_t limit;           /* 0 = all */
} db_audit_query;

int db_audit_add(db *d, const db_audit *a, err *e);
/* Calls fn for each matching row, oldest first (strings valid during the call only). */
typedef void (*db_audit_fn)(void *ctx, const db_audit *a);
int db_audit_list(db *d, const db_audit_query *q, db_audit_fn fn, void *ctx, err *e);

/* ---- repositories ------------------------------------------------------------------------ */

typedef struct db_repo {
    int64_t id;
    char uid[25];         /* opaque 24-hex object id (`_id`), also names the git directory */
    char type[8];         /* "model" | "dataset" | "space" */
    char ns[97];
    char name[97];
    bool is_private;
    char gated[8];        /* "" | "auto" | "manual" */
    char sdk[16];         /* spaces only */
    int64_t owner_id;
    int64_t created_ms;
    int64_t modified_ms;
    char head_sha[41];    /* main's head at the last metadata refresh */
    char *meta_json;      /* derived metadata of main (card data, tags, ...), JSON, malloc'd */
    char *tags_json;      /* JSON array of tags, malloc'd */
} db_repo;

void db_repo_free(db_repo *r);
/* Inserts r (id, created_ms filled in). 409 when (type, ns, name) exists. */
int db_repo_create(db *d, db_repo *r, err *e);
/* Looks a repo up by id; meta_json / tags_json are left NULL (db_repo_list fills them). */
int db_repo_get(db *d, const char *type, const char *ns, const char *name, db_repo *out, err *e);
/* The same by row id (meta_json / tags_json NULL). */
int db_repo_by_id(db *d, int64_t id, db_repo *out, err *e);
/* Follows the redirect left by a move: 0 and the new ns/name, or 1. */
int db_repo_redirect(db *d, const char *type, const char *ns, const char *name,
                     char new_ns[97], char new_name[97], err *e);
int db_repo_delete(db *d, int64_t id, err *e);
/* Renames; leaves a redirect from the old id. 409 when the target exists. */
int db_repo_move(db *d, const db_repo *r, const char *new_ns, const char *new_name, err *e);
int db_repo_set_visibility(db *d, int64_t id, bool is_private, const char *gated, err *e);
/* Records a new head of main and the metadata derived from it. */
int db_repo_set_meta(db *d, int64_t id, const char *head_sha, int64_t modified_ms,
                     const char *meta_json, const char *tags_json, err *e);
int db_repo_touch(db *d, int64_t id, int64_t modified_ms, err *e);

typedef struct db_repo_query {
    const char *type;
    const char *search;          /* substring of "ns/name", case-insensitive; NULL = any */
    const char *author;          /* exact namespace; NULL = any */
    const char **tags;           /* every tag must be present */
    size_t ntags;
    const char *sort;            /* "lastModified" | "createdAt" | "id" | others → lastModified */
    bool ascending;
    int64_t viewer_id;           /* private repos visible only to members of their namespace
                                    (the user of that name, or the org's members); 0 = anonymous */
    bool everything;             /* every repo, private or not (maintenance) */
    int64_t offset;
    int64_t limit;
} db_repo_query;

/* Fills *out with up to q->limit repos (caller frees each with db_repo_free, then free(*out)). */
int db_repo_list(db *d, const db_repo_query *q, db_repo **out, size_t *n, err *e);

/* ---- LFS objects a repo may reference ----------------------------------------------------- */

/* Records that repo_id holds oid (uploaded to it, or committed in it). Idempotent. */
int db_repo_object_add(db *d, int64_t repo_id, const char *oid, int64_t size, err *e);
/* 0 when repo_id holds oid, 1 when not. The store is global (each byte stored once); this is
 * what keeps one repo from naming another's private objects by their hash. */
int db_repo_object_has(db *d, int64_t repo_id, const char *oid, err *e);

#endif
