/* sqlite — the embedded metadata backend.
 *
 * Connections are per thread (SQLite connections must not be used by two threads at once),
 * created lazily and closed by a thread-exit destructor. Each connection caches its prepared
 * statements by SQL text pointer: every query below is a string literal, so the pointer is a
 * stable key and a hot lookup is a reset + bind + step.
 */
#include "db/db.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE 48
#define REPO_CACHE 16

/* Every request looks its repo up by id. Each connection remembers its last few answers,
 * valid while the process-wide generation is unchanged; any write to the repos table in this
 * process bumps it. (Only the server writes repos; `hearth admin` never does.) */
static _Atomic uint64_t repos_generation = 1;

typedef struct conn {
    sqlite3 *sql;
    struct {
        db_repo row;     /* meta_json / tags_json NULL */
        uint64_t generation;
    } repos[REPO_CACHE];
    unsigned next_repo;
    struct {
        const char *text;
        sqlite3_stmt *stmt;
    } cache[STMT_CACHE];
    db *owner;
    struct conn *next; /* all connections of a db, for db_close */
} conn;

struct db {
    char *path;
    pthread_key_t key;
    pthread_mutex_t lock;
    conn *all;
};

static const char *migrations[] = {
    /* 1: users, tokens, repositories */
    "CREATE TABLE users ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, fullname TEXT NOT NULL DEFAULT '',"
    "  email TEXT NOT NULL DEFAULT '', is_org INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE tokens ("
    "  id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL, role TEXT NOT NULL, secret_hash TEXT NOT NULL UNIQUE,"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE repos ("
    "  id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, type TEXT NOT NULL,"
    "  ns TEXT NOT NULL, name TEXT NOT NULL, private INTEGER NOT NULL DEFAULT 0,"
    "  gated TEXT NOT NULL DEFAULT '', sdk TEXT NOT NULL DEFAULT '',"
    "  owner_id INTEGER NOT NULL, created_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL,"
    "  head_sha TEXT NOT NULL DEFAULT '', meta_json TEXT NOT NULL DEFAULT '{}',"
    "  tags_json TEXT NOT NULL DEFAULT '[]', UNIQUE(type, ns, name));"
    "CREATE TABLE repo_redirects ("
    "  type TEXT NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL,"
    "  repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
    "  PRIMARY KEY(type, ns, name));",
    /* 2: which LFS objects each repo may reference (the store itself is global) */
    "CREATE TABLE repo_objects ("
    "  repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
    "  oid TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY(repo_id, oid)) WITHOUT ROWID;",
    /* 3: as on the Hub, ids differing only in case name the same repo */
    "CREATE UNIQUE INDEX repos_id_nocase ON repos(type, ns COLLATE NOCASE, name COLLATE NOCASE);",
    /* 4: administrators */
    "ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;",
    /* 5: organisations' members, fine-grained tokens, when a token was last used */
    "CREATE TABLE org_members ("
    "  org_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  role TEXT NOT NULL, PRIMARY KEY(org_id, user_id)) WITHOUT ROWID;"
    "CREATE INDEX org_members_user ON org_members(user_id);"
    "ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE tokens ADD COLUMN last_used_ms INTEGER NOT NULL DEFAULT 0;",
    /* 6: the audit log, append-only: rows can be added, never changed or removed */
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, address TEXT NOT NULL,"
    "  action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL);"
    "CREATE INDEX audit_at ON audit(at_ms);"
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
    "  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
    "  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    /* 7: requests for access to gated repos */
    "CREATE TABLE access_requests ("
    "  id INTEGER PRIMARY KEY,"
    "  repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  status TEXT NOT NULL, fields TEXT NOT NULL DEFAULT '{}', reason TEXT NOT NULL DEFAULT '',"
    "  at_ms INTEGER NOT NULL, UNIQUE(repo_id, user_id));",
};

static int db_fail(err *e, sqlite3 *sql, const char *what)
{
    int code = sqlite3_extended_errcode(sql);
    if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY)
        return err_set(e, 409, "", "%s: already exists", what);
    return err_set(e, 500, "", "database error in %s: %s", what, sqlite3_errmsg(sql));
}

static void conn_close(conn *c)
{
    for (int i = 0; i < STMT_CACHE; i++)
        if (c->cache[i].stmt)
            sqlite3_finalize(c->cache[i].stmt);
    sqlite3_close(c->sql);
    free(c);
}

static void conn_release(void *p)
{
    conn *c = p;
    db *d = c->owner;
    pthread_mutex_lock(&d->lock);
    for (conn **pp = &d->all; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    pthread_mutex_unlock(&d->lock);
    conn_close(c);
}

static conn *conn_open(db *d, err *e)
{
    conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->owner = d;
    if (sqlite3_open_v2(d->path, &c->sql,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        err_set(e, 500, "", "cannot open database %s: %s", d->path,
                c->sql ? sqlite3_errmsg(c->sql) : "out of memory");
        sqlite3_close(c->sql);
        free(c);
        return NULL;
    }
    sqlite3_busy_timeout(c->sql, 10000);
    sqlite3_exec(c->sql,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
                 NULL, NULL, NULL);
    return c;
}

/* The calling thread's connection. */
static conn *conn_get(db *d, err *e)
{
    conn *c = pthread_getspecific(d->key);
    if (c)
        return c;
    c = conn_open(d, e);
    if (!c)
        return NULL;
    pthread_mutex_lock(&d->lock);
    c->next = d->all;
    d->all = c;
    pthread_mutex_unlock(&d->lock);
    pthread_setspecific(d->key, c);
    return c;
}

/* A reset statement for sql (a string literal), prepared once per connection. */
static sqlite3_stmt *stmt(conn *c, const char *sql, err *e)
{
    int slot = -1;
    for (int i = 0; i < STMT_CACHE; i++) {
        if (c->cache[i].text == sql) {
            sqlite3_reset(c->cache[i].stmt);
            sqlite3_clear_bindings(c->cache[i].stmt);
            return c->cache[i].stmt;
        }
        if (!c->cache[i].text && slot < 0)
            slot = i;
    }
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(c->sql, sql, -1, &s, NULL) != SQLITE_OK) {
        db_fail(e, c->sql, "prepare");
        return NULL;
    }
    if (slot >= 0) {
        c->cache[slot].text = sql;
        c->cache[slot].stmt = s;
    }
    return s;
}

/* This thread's connection and the statement for sql: the opening of every query. NULL (e set)
 * when either cannot be had. */
static sqlite3_stmt *query(db *d, const char *sql, conn **c, err *e)
{
    *c = conn_get(d, e);
    return *c ? stmt(*c, sql, e) : NULL;
}

/* Statements not in the cache (cache full) are finalized after use. */
static void stmt_done(conn *c, sqlite3_stmt *s)
{
    for (int i = 0; i < STMT_CACHE; i++)
        if (c->cache[i].stmt == s) {
            sqlite3_reset(s);
            return;
        }
    sqlite3_finalize(s);
}

static int migrate(conn *c, err *e)
{
    sqlite3_exec(c->sql, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
                 NULL, NULL, NULL);
    for (size_t i = 0; i < ARRAY_LEN(migrations); i++) {
        if (sqlite3_exec(c->sql, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            return db_fail(e, c->sql, "migration");
        sqlite3_stmt *s = NULL;
        sqlite3_prepare_v2(c->sql, "SELECT COALESCE(MAX(version), 0) FROM schema_version", -1, &s,
                           NULL);
        int64_t have = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_finalize(s);
        if ((size_t)have > i) {
            sqlite3_exec(c->sql, "COMMIT", NULL, NULL, NULL);
            continue;
        }
        char bump[80];
        snprintf(bump, sizeof bump, "INSERT INTO schema_version VALUES (%zu)", i + 1);
        if (sqlite3_exec(c->sql, migrations[i], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(c->sql, bump, NULL, NULL, NULL) != SQLITE_OK) {
            db_fail(e, c->sql, "migration");
            sqlite3_exec(c->sql, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        if (sqlite3_exec(c->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            return db_fail(e, c->sql, "migration");
    }
    return 0;
}

db *db_open(const char *path, err *e)
{
    db *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    d->path = strdup(path);
    pthread_key_create(&d->key, conn_release);
    pthread_mutex_init(&d->lock, NULL);
    conn *c = conn_get(d, e);
    if (!c || migrate(c, e) != 0) {
        db_close(d);
        return NULL;
    }
    return d;
}

void db_close(db *d)
{
    if (!d)
        return;
    pthread_setspecific(d->key, NULL);
    pthread_mutex_lock(&d->lock);
    conn *c = d->all;
    d->all = NULL;
    pthread_mutex_unlock(&d->lock);
    while (c) {
        conn *next = c->next;
        conn_close(c);
        c = next;
    }
    pthread_key_delete(d->key);
    pthread_mutex_destroy(&d->lock);
    free(d->path);
    free(d);
}

static void copy_text(char *dst, size_t cap, sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

static char *dup_text(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? strdup((const char *)t) : NULL;
}

/* Runs a statement that returns no rows. */
static int exec_done(conn *c, sqlite3_stmt *s, const char *what, err *e)
{
    int rc = sqlite3_step(s);
    /* A write that may have changed a repo row: forget cached rows (after the change is made,
     * so that nothing read before it survives). */
    if (strstr(sqlite3_sql(s), "repo"))
        atomic_fetch_add(&repos_generation, 1);
    int out = rc == SQLITE_DONE ? 0 : db_fail(e, c->sql, what);
    stmt_done(c, s);
    return out;
}

/* ---- users ------------------------------------------------------------------------------ */

#define USER_COLS "id, name, fullname, email, is_org, created_ms, is_admin"

static void read_user(sqlite3_stmt *s, db_user *u)
{
    u->id = sqlite3_column_int64(s, 0);
    copy_text(u->name, sizeof u->name, s, 1);
    copy_text(u->fullname, sizeof u->fullname, s, 2);
    copy_text(u->email, sizeof u->email, s, 3);
    u->is_org = sqlite3_column_int(s, 4) != 0;
    u->created_ms = sqlite3_column_int64(s, 5);
    u->is_admin = sqlite3_column_int(s, 6) != 0;
}

int db_user_create(db *d, const char *name, const char *fullname, const char *email,
                   bool is_admin, db_user *out, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "INSERT INTO users (name, fullname, email, created_ms, is_admin) "
                               "VALUES (?, ?, ?, ?, ?)", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, fullname ? fullname : name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, email ? email : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, text_now_ms());
    sqlite3_bind_int(s, 5, is_admin);
    if (exec_done(c, s, "create user", e) != 0)
        return -1;
    return out ? db_user_by_name(d, name, out, e) : 0;
}

static int user_query(db *d, const char *sql, const char *name, int64_t id, db_user *out,
                      err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, sql, &c, e);
    if (!s)
        return -1;
    if (name)
        sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s), out_rc = 1;
    if (rc == SQLITE_ROW) {
        read_user(s, out);
        out_rc = 0;
    } else if (rc != SQLITE_DONE) {
        out_rc = db_fail(e, c->sql, "user lookup");
    }
    stmt_done(c, s);
    return out_rc;
}

int db_user_by_name(db *d, const char *name, db_user *out, err *e)
{
    return user_query(d, "SELECT " USER_COLS " FROM users WHERE name = ?", name, 0, out, e);
}

int db_user_by_id(db *d, int64_t id, db_user *out, err *e)
{
    return user_query(d, "SELECT " USER_COLS " FROM users WHERE id = ?", NULL, id, out, e);
}

/* ---- tokens ----------------------------------------------------------------------------- */

int db_token_create(db *d, int64_t user_id, const char *name, const char *role,
                    const char *scopes, const char *secret_hash, int64_t *id_out, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "INSERT INTO tokens (user_id, name, role, scopes, secret_hash,"
                               " created_ms) VALUES (?, ?, ?, ?, ?, ?)", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, user_id);
    sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, role, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, scopes ? scopes : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 5, secret_hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 6, text_now_ms());
    if (exec_done(c, s, "create token", e) != 0)
        return -1;
    if (id_out)
        *id_out = sqlite3_last_insert_rowid(c->sql);
    return 0;
}

#define TOKEN_COLS "id, user_id, name, role, created_ms, scopes, last_used_ms"

static void read_token(sqlite3_stmt *s, db_token *out)
{
    out->id = sqlite3_column_int64(s, 0);
    out->user_id = sqlite3_column_int64(s, 1);
    copy_text(out->name, sizeof out->name, s, 2);
    copy_text(out->role, sizeof out->role, s, 3);
    out->created_ms = sqlite3_column_int64(s, 4);
    copy_text(out->scopes, sizeof out->scopes, s, 5);
    out->last_used_ms = sqlite3_column_int64(s, 6);
}

static int token_query(db *d, const char *sql, const char *secret_hash, int64_t id,
                       db_token *out, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, sql, &c, e);
    if (!s)
        return -1;
    if (secret_hash)
        sqlite3_bind_text(s, 1, secret_hash, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s), out_rc = 1;
    if (rc == SQLITE_ROW) {
        read_token(s, out);
        out_rc = 0;
    } else if (rc != SQLITE_DONE) {
        out_rc = db_fail(e, c->sql, "token lookup");
    }
    stmt_done(c, s);
    return out_rc;
}

int db_token_by_hash(db *d, const char *secret_hash, db_token *out, err *e)
{
    return token_query(d, "SELECT " TOKEN_COLS " FROM tokens WHERE secret_hash = ?",
                       secret_hash, 0, out, e);
}

int db_token_by_id(db *d, int64_t id, db_token *out, err *e)
{
    return token_query(d, "SELECT " TOKEN_COLS " FROM tokens WHERE id = ?", NULL, id, out, e);
}

int db_token_list(db *d, int64_t user_id, db_token **out, size_t *n, err *e)
{
    *out = NULL;
    *n = 0;
    conn *c;
    sqlite3_stmt *s = query(d, "SELECT " TOKEN_COLS " FROM tokens WHERE user_id = ? ORDER BY id",
                            &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, user_id);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        ARRAY_GROW(*out, *n, cap);
        read_token(s, &(*out)[(*n)++]);
    }
    int result = rc == SQLITE_DONE ? 0 : db_fail(e, c->sql, "list tokens");
    stmt_done(c, s);
    return result;
}

int db_token_delete(db *d, int64_t id, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "DELETE FROM tokens WHERE id = ?", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    if (exec_done(c, s, "revoke token", e) != 0)
        return -1;
    return sqlite3_changes(c->sql) ? 0 : 1;
}

int db_token_touch(db *d, int64_t id, int64_t now_ms, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "UPDATE tokens SET last_used_ms = ? WHERE id = ?", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, now_ms);
    sqlite3_bind_int64(s, 2, id);
    return exec_done(c, s, "token use", e);
}

/* ---- organisations ---------------------------------------------------------------------- */

int db_org_create(db *d, const char *name, const char *fullname, db_user *out, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "INSERT INTO users (name, fullname, email, created_ms, is_org)"
                               " VALUES (?, ?, '', ?, 1)", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, fullname && *fullname ? fullname : name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, text_now_ms());
    if (exec_done(c, s, "create organization", e) != 0)
        return -1;
    return out ? db_user_by_name(d, name, out, e) : 0;
}

int db_member_set(db *d, int64_t org_id, int64_t user_id, const char *role, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, ?)"
                               " ON CONFLICT(org_id, user_id) DO UPDATE SET role = excluded.role",
                            &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, org_id);
    sqlite3_bind_int64(s, 2, user_id);
    sqlite3_bind_text(s, 3, role, -1, SQLITE_TRANSIENT);
    return exec_done(c, s, "set member", e);
}

int db_member_remove(db *d, int64_t org_id, int64_t user_id, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "DELETE FROM org_members WHERE org_id = ? AND user_id = ?", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, org_id);
    sqlite3_bind_int64(s, 2, user_id);
    if (exec_done(c, s, "remove member", e) != 0)
        return -1;
    return sqlite3_changes(c->sql) ? 0 : 1;
}

static int member_list(db *d, const char *sql, int64_t id, db_member **out, size_t *n, err *e)
{
    *out = NULL;
    *n = 0;
    conn *c;
    sqlite3_stmt *s = query(d, sql, &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        ARRAY_GROW(*out, *n, cap);
        db_member *m = &(*out)[(*n)++];
        memset(m, 0, sizeof *m);
        m->org_id = sqlite3_column_int64(s, 0);
        copy_text(m->org, sizeof m->org, s, 1);
        copy_text(m->org_fullname, sizeof m->org_fullname, s, 2);
        m->user_id = sqlite3_column_int64(s, 3);
        copy_text(m->user, sizeof m->user, s, 4);
        copy_text(m->user_fullname, sizeof m->user_fullname, s, 5);
        copy_text(m->role, sizeof m->role, s, 6);
    }
    int result = rc == SQLITE_DONE ? 0 : db_fail(e, c->sql, "list members");
    stmt_done(c, s);
    return result;
}

#define MEMBER_SELECT                                                                         \
    "SELECT o.id, o.name, o.fullname, u.id, u.name, u.fullname, m.role FROM org_members m"    \
    " JOIN users o ON o.id = m.org_id JOIN users u ON u.id = m.user_id"

int db_org_members(db *d, int64_t org_id, db_member **out, size_t *n, err *e)
{
    return member_list(d, MEMBER_SELECT " WHERE m.org_id = ? ORDER BY u.name", org_id, out, n, e);
}

int db_user_orgs(db *d, int64_t user_id, db_member **out, size_t *n, err *e)
{
    return member_list(d, MEMBER_SELECT " WHERE m.user_id = ? ORDER BY o.name", user_id, out, n, e);
}

int db_repo_count(db *d, const char *type, const char *ns, int64_t *out, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "SELECT count(*) FROM repos WHERE type = ? AND ns = ? AND private = 0",
                            &c, e);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, ns, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    int result = rc == SQLITE_ROW ? 0 : db_fail(e, c->sql, "count repos");
    stmt_done(c, s);
    return result;
}

/* ---- access requests to gated repos ------------------------------------------------------ */

int db_access_set(db *d, int64_t repo_id, int64_t user_id, const char *status,
                  const char *fields, const char *reason, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "INSERT INTO access_requests (repo_id, user_id, status, fields,"
                               " reason, at_ms) VALUES (?1, ?2, ?3, coalesce(?4, '{}'), ?5, ?6)"
                               " ON CONFLICT(repo_id, user_id) DO UPDATE SET status = ?3,"
                               " fields = coalesce(?4, fields), reason = ?5, at_ms = ?6", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, repo_id);
    sqlite3_bind_int64(s, 2, user_id);
    sqlite3_bind_text(s, 3, status, -1, SQLITE_TRANSIENT);
    if (fields)
        sqlite3_bind_text(s, 4, fields, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 5, reason ? reason : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 6, text_now_ms());
    return exec_done(c, s, "access request", e);
}

int db_access_status(db *d, int64_t repo_id, int64_t user_id, char status[16], err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "SELECT status FROM access_requests WHERE repo_id = ? AND user_id = ?",
                            &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, repo_id);
    sqlite3_bind_int64(s, 2, user_id);
    int rc = sqlite3_step(s), out = 1;
    if (rc == SQLITE_ROW) {
        copy_text(status, 16, s, 0);
        out = 0;
    } else if (rc != SQLITE_DONE) {
        out = db_fail(e, c->sql, "access lookup");
    }
    stmt_done(c, s);
    return out;
}

int db_access_list(db *d, int64_t repo_id, const char *status, db_access_fn fn, void *ctx, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "SELECT a.id, u.id, u.name, u.fullname, u.email, a.status, a.fields,"
                               " a.reason, a.at_ms FROM access_requests a JOIN users u"
                               " ON u.id = a.user_id WHERE a.repo_id = ? AND a.status = ?"
                               " ORDER BY a.at_ms, a.id", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, repo_id);
    sqlite3_bind_text(s, 2, status, -1, SQLITE_TRANSIENT);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        db_access a = {.id = sqlite3_column_int64(s, 0), .user_id = sqlite3_column_int64(s, 1),
                       .at_ms = sqlite3_column_int64(s, 8)};
        a.user = (const char *)sqlite3_column_text(s, 2);
        a.fullname = (const char *)sqlite3_column_text(s, 3);
        a.email = (const char *)sqlite3_column_text(s, 4);
        a.status = (const char *)sqlite3_column_text(s, 5);
        a.fields = (const char *)sqlite3_column_text(s, 6);
        a.reason = (const char *)sqlite3_column_text(s, 7);
        fn(ctx, &a);
    }
    int out = rc == SQLITE_DONE ? 0 : db_fail(e, c->sql, "list access requests");
    stmt_done(c, s);
    return out;
}

int db_access_user_of(db *d, int64_t repo_id, int64_t request_id, int64_t *user_id, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "SELECT user_id FROM access_requests WHERE repo_id = ? AND id = ?",
                            &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, repo_id);
    sqlite3_bind_int64(s, 2, request_id);
    int rc = sqlite3_step(s), out = 1;
    if (rc == SQLITE_ROW) {
        *user_id = sqlite3_column_int64(s, 0);
        out = 0;
    } else if (rc != SQLITE_DONE) {
        out = db_fail(e, c->sql, "access lookup");
    }
    stmt_done(c, s);
    return out;
}

/* ---- audit log ------------------------------------------------------------------------- */

int db_audit_add(db *d, const db_audit *a, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "INSERT INTO audit (at_ms, actor, address, action, target, detail)"
                               " VALUES (?, ?, ?, ?, ?, ?)", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, a->at_ms ? a->at_ms : text_now_ms());
    sqlite3_bind_text(s, 2, a->actor, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, a->address, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, a->action, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 5, a->target, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 6, a->detail, -1, SQLITE_TRANSIENT);
    return exec_done(c, s, "audit", e);
}

int db_audit_list(db *d, const db_audit_query *q, db_audit_fn fn, void *ctx, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "SELECT id, at_ms, actor, address, action, target, detail FROM audit"
                               " WHERE at_ms >= ?1 AND (?2 = '' OR target = ?2 OR target LIKE ?2 || '@%')"
                               " AND (?3 = '' OR actor = ?3) ORDER BY id LIMIT ?4", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, q->since_ms);
    sqlite3_bind_text(s, 2, q->target ? q->target : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, q->actor ? q->actor : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, q->limit > 0 ? q->limit : INT64_MAX);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        db_audit a = {.id = sqlite3_column_int64(s, 0), .at_ms = sqlite3_column_int64(s, 1)};
        a.actor = (const char *)sqlite3_column_text(s, 2);
        a.address = (const char *)sqlite3_column_text(s, 3);
        a.action = (const char *)sqlite3_column_text(s, 4);
        a.target = (const char *)sqlite3_column_text(s, 5);
        a.detail = (const char *)sqlite3_column_text(s, 6);
        fn(ctx, &a);
    }
    int result = rc == SQLITE_DONE ? 0 : db_fail(e, c->sql, "read the audit log");
    stmt_done(c, s);
    return result;
}

/* ---- repositories ----------------------------------------------------------------------- */

#define REPO_COLS                                                                             \
    "id, uid, type, ns, name, private, gated, sdk, owner_id, created_ms, modified_ms, "       \
    "head_sha, meta_json, tags_json"

void db_repo_free(db_repo *r)
{
    if (!r)
        return;
    free(r->meta_json);
    free(r->tags_json);
    r->meta_json = r->tags_json = NULL;
}

static void read_repo(sqlite3_stmt *s, db_repo *r)
{
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(s, 0);
    copy_text(r->uid, sizeof r->uid, s, 1);
    copy_text(r->type, sizeof r->type, s, 2);
    copy_text(r->ns, sizeof r->ns, s, 3);
    copy_text(r->name, sizeof r->name, s, 4);
    r->is_private = sqlite3_column_int(s, 5) != 0;
    copy_text(r->gated, sizeof r->gated, s, 6);
    copy_text(r->sdk, sizeof r->sdk, s, 7);
    r->owner_id = sqlite3_column_int64(s, 8);
    r->created_ms = sqlite3_column_int64(s, 9);
    r->modified_ms = sqlite3_column_int64(s, 10);
    copy_text(r->head_sha, sizeof r->head_sha, s, 11);
    r->meta_json = dup_text(s, 12);
    r->tags_json = dup_text(s, 13);
}

int db_repo_create(db *d, db_repo *r, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "INSERT INTO repos (uid, type, ns, name, private, gated, sdk,"
                               " owner_id,"
                               " created_ms, modified_ms, head_sha, meta_json, tags_json)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", &c, e);
    if (!s)
        return -1;
    if (!r->created_ms)
        r->created_ms = text_now_ms();
    if (!r->modified_ms)
        r->modified_ms = r->created_ms;
    sqlite3_bind_text(s, 1, r->uid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, r->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, r->ns, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, r->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 5, r->is_private);
    sqlite3_bind_text(s, 6, r->gated, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 7, r->sdk, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 8, r->owner_id);
    sqlite3_bind_int64(s, 9, r->created_ms);
    sqlite3_bind_int64(s, 10, r->modified_ms);
    sqlite3_bind_text(s, 11, r->head_sha, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 12, r->meta_json ? r->meta_json : "{}", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 13, r->tags_json ? r->tags_json : "[]", -1, SQLITE_TRANSIENT);
    if (exec_done(c, s, "create repo", e) != 0)
        return -1;
    r->id = sqlite3_last_insert_rowid(c->sql);
    return 0;
}

int db_repo_get(db *d, const char *type, const char *ns, const char *name, db_repo *out, err *e)
{
    conn *c = conn_get(d, e);
    if (!c)
        return -1;
    /* The hot lookup of every request: the derived metadata is not read (NULL in out). */
    uint64_t gen = atomic_load(&repos_generation);
    for (int i = 0; i < REPO_CACHE; i++) {
        db_repo *r = &c->repos[i].row;
        if (c->repos[i].generation == gen && r->id && !strcmp(r->name, name) &&
            !strcmp(r->ns, ns) && !strcmp(r->type, type)) {
            *out = *r;
            return 0;
        }
    }
    sqlite3_stmt *s = stmt(c,
                           "SELECT id, uid, type, ns, name, private, gated, sdk, owner_id,"
                           " created_ms, modified_ms, head_sha, NULL, NULL"
                           " FROM repos WHERE type = ? AND ns = ? AND name = ?",
                           e);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, ns, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s), out_rc = 1;
    if (rc == SQLITE_ROW) {
        read_repo(s, out);
        out_rc = 0;
        unsigned k = c->next_repo++ % REPO_CACHE;
        c->repos[k].row = *out;
        c->repos[k].generation = gen;
    } else if (rc != SQLITE_DONE) {
        out_rc = db_fail(e, c->sql, "repo lookup");
    }
    stmt_done(c, s);
    return out_rc;
}

int db_repo_by_id(db *d, int64_t id, db_repo *out, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "SELECT id, uid, type, ns, name, private, gated, sdk, owner_id,"
                               " created_ms, modified_ms, head_sha, NULL, NULL"
                               " FROM repos WHERE id = ?", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s), out_rc = 1;
    if (rc == SQLITE_ROW) {
        read_repo(s, out);
        out_rc = 0;
    } else if (rc != SQLITE_DONE) {
        out_rc = db_fail(e, c->sql, "repo lookup");
    }
    stmt_done(c, s);
    return out_rc;
}

int db_repo_redirect(db *d, const char *type, const char *ns, const char *name,
                     char new_ns[97], char new_name[97], err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "SELECT r.ns, r.name FROM repo_redirects x JOIN repos r"
                               " ON r.id = x.repo_id WHERE x.type = ? AND x.ns = ? AND x.name = ?",
                            &c, e);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, ns, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s), out_rc = 1;
    if (rc == SQLITE_ROW) {
        copy_text(new_ns, 97, s, 0);
        copy_text(new_name, 97, s, 1);
        out_rc = 0;
    } else if (rc != SQLITE_DONE) {
        out_rc = db_fail(e, c->sql, "redirect lookup");
    }
    stmt_done(c, s);
    return out_rc;
}

int db_repo_delete(db *d, int64_t id, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "DELETE FROM repos WHERE id = ?", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    return exec_done(c, s, "delete repo", e);
}

int db_repo_move(db *d, const db_repo *r, const char *new_ns, const char *new_name, err *e)
{
    conn *c = conn_get(d, e);
    if (!c)
        return -1;
    if (sqlite3_exec(c->sql, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(e, c->sql, "move repo");
    sqlite3_stmt *s = stmt(c, "UPDATE repos SET ns = ?, name = ? WHERE id = ?", e);
    if (!s)
        goto fail;
    sqlite3_bind_text(s, 1, new_ns, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, new_name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, r->id);
    if (exec_done(c, s, "move repo", e) != 0)
        goto fail;
    /* The new name may itself have been a redirect; the old name becomes one. */
    s = stmt(c, "DELETE FROM repo_redirects WHERE type = ? AND ns = ? AND name = ?", e);
    if (!s)
        goto fail;
    sqlite3_bind_text(s, 1, r->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, new_ns, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, new_name, -1, SQLITE_TRANSIENT);
    if (exec_done(c, s, "move repo", e) != 0)
        goto fail;
    s = stmt(c, "INSERT OR REPLACE INTO repo_redirects (type, ns, name, repo_id) VALUES (?,?,?,?)",
             e);
    if (!s)
        goto fail;
    sqlite3_bind_text(s, 1, r->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, r->ns, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, r->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, r->id);
    if (exec_done(c, s, "move repo", e) != 0)
        goto fail;
    if (sqlite3_exec(c->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        db_fail(e, c->sql, "move repo");
        goto fail;
    }
    atomic_fetch_add(&repos_generation, 1);
    return 0;
fail:
    sqlite3_exec(c->sql, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int db_repo_set_visibility(db *d, int64_t id, bool is_private, const char *gated, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "UPDATE repos SET private = ?, gated = ? WHERE id = ?", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int(s, 1, is_private);
    sqlite3_bind_text(s, 2, gated ? gated : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, id);
    return exec_done(c, s, "repo settings", e);
}

int db_repo_set_meta(db *d, int64_t id, const char *head_sha, int64_t modified_ms,
                     const char *meta_json, const char *tags_json, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "UPDATE repos SET head_sha = ?, modified_ms = MAX(modified_ms, ?),"
                               " meta_json = ?, tags_json = ? WHERE id = ?", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_text(s, 1, head_sha, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, modified_ms);
    sqlite3_bind_text(s, 3, meta_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, tags_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 5, id);
    return exec_done(c, s, "repo metadata", e);
}

int db_repo_touch(db *d, int64_t id, int64_t modified_ms, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "UPDATE repos SET modified_ms = MAX(modified_ms, ?) WHERE id = ?",
                            &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, modified_ms);
    sqlite3_bind_int64(s, 2, id);
    return exec_done(c, s, "repo touch", e);
}

int db_repo_list(db *d, const db_repo_query *q, db_repo **out, size_t *n, err *e)
{
    *out = NULL;
    *n = 0;
    conn *c = conn_get(d, e);
    if (!c)
        return -1;
    /* Built per call (filters vary), so not cached; the column and order names come from a
     * fixed list, never from the request. */
    buf sql = BUF_INIT;
    buf_puts(&sql, q->everything ? "SELECT " REPO_COLS " FROM repos WHERE type = ?1 AND ?2 = ?2"
                                 : "SELECT " REPO_COLS " FROM repos WHERE type = ?1 AND"
                                   " (private = 0 OR ns = (SELECT name FROM users WHERE id = ?2)"
                                   " OR ns IN (SELECT o.name FROM org_members m JOIN users o"
                                   " ON o.id = m.org_id WHERE m.user_id = ?2))");
    if (q->search && *q->search)
        buf_puts(&sql, " AND instr(lower(ns || '/' || name), lower(?3)) > 0");
    if (q->author && *q->author)
        buf_puts(&sql, " AND ns = ?4");
    for (size_t i = 0; i < q->ntags; i++)
        buf_printf(&sql, " AND EXISTS (SELECT 1 FROM json_each(repos.tags_json) WHERE value = ?%zu)",
                   10 + i);
    const char *order = "modified_ms";
    if (q->sort && !strcmp(q->sort, "createdAt"))
        order = "created_ms";
    else if (q->sort && (!strcmp(q->sort, "id") || !strcmp(q->sort, "name")))
        order = "ns || '/' || name";
    buf_printf(&sql, " ORDER BY %s %s, id %s LIMIT ?5 OFFSET ?6", order,
               q->ascending ? "ASC" : "DESC", q->ascending ? "ASC" : "DESC");
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(c->sql, sql.data, -1, &s, NULL) != SQLITE_OK) {
        buf_free(&sql);
        return db_fail(e, c->sql, "list repos");
    }
    buf_free(&sql);
    sqlite3_bind_text(s, 1, q->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, q->viewer_id ? q->viewer_id : -1);
    if (q->search && *q->search)
        sqlite3_bind_text(s, 3, q->search, -1, SQLITE_TRANSIENT);
    if (q->author && *q->author)
        sqlite3_bind_text(s, 4, q->author, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 5, q->limit);
    sqlite3_bind_int64(s, 6, q->offset);
    for (size_t i = 0; i < q->ntags; i++)
        sqlite3_bind_text(s, (int)(10 + i), q->tags[i], -1, SQLITE_TRANSIENT);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = realloc(*out, cap * sizeof **out);
            if (!*out)
                abort();
        }
        read_repo(s, &(*out)[(*n)++]);
    }
    int result = rc == SQLITE_DONE ? 0 : db_fail(e, c->sql, "list repos");
    sqlite3_finalize(s);
    return result;
}

/* ---- repo objects ------------------------------------------------------------------------ */

int db_repo_object_add(db *d, int64_t repo_id, const char *oid, int64_t size, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "INSERT OR IGNORE INTO repo_objects (repo_id, oid, size)"
                               " VALUES (?, ?, ?)", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, repo_id);
    sqlite3_bind_text(s, 2, oid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, size);
    return exec_done(c, s, "link object", e);
}

int db_repo_object_has(db *d, int64_t repo_id, const char *oid, err *e)
{
    conn *c;
    sqlite3_stmt *s = query(d, "SELECT 1 FROM repo_objects WHERE repo_id = ? AND oid = ?", &c, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, repo_id);
    sqlite3_bind_text(s, 2, oid, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    int out = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : db_fail(e, c->sql, "object lookup");
    stmt_done(c, s);
    return out;
}
