/* admin — `hearth admin`: user and token management on a data directory. Talks to the
 * metadata database directly, so it works while a server runs on the same directory. */
#include "cli/cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/auth.h"
#include "base/base.h"
#include "db/db.h"
#include "hub/hub.h"

static void usage(FILE *out)
{
    fputs("usage: hearth admin [--data DIR] <command>\n"
          "\n"
          "commands:\n"
          "  create-user NAME [--fullname TEXT] [--email ADDR] [--admin]\n"
          "  create-token NAME --write|--read [--name LABEL]   prints the token on stdout\n"
          "  create-token NAME --scope SCOPE [--scope SCOPE...] [--name LABEL]\n"
          "                          a fine-grained token; SCOPE is PERMISSION:NS/NAME or\n"
          "                          PERMISSION:NS/* with PERMISSION repo.content.read,\n"
          "                          repo.write, repo.settings, discussion.write, inference.call\n"
          "  list-tokens NAME        a user's tokens (never their secrets), one JSON line each\n"
          "  revoke-token ID         revokes at once, with every link and Xet token it obtained\n"
          "  create-org ORG --owner USER [--fullname TEXT]\n"
          "  add-member ORG USER --role read|contributor|write|admin   (also changes a role)\n"
          "  remove-member ORG USER\n"
          "  audit [--since ISO-DATE|UNIX-MS] [--repo TYPE:NS/NAME] [--user NAME]\n"
          "                          the audit log of every write, one JSON line each\n"
          "  stats [--json]          logical bytes, stored bytes and dedup ratio, per repo\n"
          "  gc [--grace SECONDS] [--min-dead FRACTION]\n"
          "                          reclaim storage no repo references (safe while serving;\n"
          "                          default grace 3600 s, rewrite packs >= 0.05 dead)\n"
          "  fsck                    re-hash every chunk and file; exit 1 on damage\n"
          "\n"
          "  --data DIR   the server's data directory (default ./hearth-data)\n",
          out);
}

static db *open_db(const char *data)
{
    if (path_mkdirs(data, 0755) != 0) {
        fprintf(stderr, "hearth admin: cannot create %s\n", data);
        return NULL;
    }
    buf path = BUF_INIT;
    data_path(&path, data, DATA_DB);
    err e = ERR_INIT;
    db *d = db_open(path.data, &e);
    if (!d)
        fprintf(stderr, "hearth admin: %s\n", e.message);
    buf_free(&path);
    return d;
}

static void print_problem(void *ctx, const char *line)
{
    int64_t *count = ctx;
    (*count)++;
    printf("damage: %s\n", line);
}

static void print_size(const char *label, int64_t bytes)
{
    printf("  %-16s %14lld bytes  (%.1f MiB)\n", label, (long long)bytes, (double)bytes / 1048576.0);
}

static int fail(const char *command, const err *e)
{
    fprintf(stderr, "hearth admin %s: %s\n", command, e->message);
    return 1;
}

/* Tokens and organisations; -1 when command is none of them. */
static int accounts_command(const char *command, const char *data, const char *name,
                            const char *second, const char *fullname, const char *owner,
                            const char *member_role, const char *role, const char *scopes,
                            const char *label)
{
    static const char *const mine[] = {"create-token", "list-tokens", "revoke-token",
                                       "create-org",   "add-member",  "remove-member"};
    bool known = false;
    for (size_t i = 0; i < ARRAY_LEN(mine); i++)
        known |= !strcmp(command, mine[i]);
    if (!known)
        return -1;
    bool two = !strcmp(command, "add-member") || !strcmp(command, "remove-member");
    if (!name || (two && !second) || (!strcmp(command, "create-token") && !role == !scopes) ||
        (!strcmp(command, "create-org") && !owner) ||
        (!strcmp(command, "add-member") && !member_role)) {
        fprintf(stderr, "hearth admin %s: missing or conflicting arguments (see hearth admin "
                        "--help)\n", command);
        return 2;
    }
    db *d = open_db(data);
    if (!d)
        return 1;
    err e = ERR_INIT;
    int rc = 0;
    if (!strcmp(command, "create-token")) {
        char token[40];
        int64_t id;
        rc = scopes ? auth_token_create_scoped(d, name, scopes, label, token, &id, &e)
                    : auth_token_create(d, name, role, label, token, &id, &e);
        if (rc == 0)
            printf("%s\n", token);
    } else if (!strcmp(command, "list-tokens")) {
        db_user u;
        db_token *list = NULL;
        size_t n = 0;
        rc = db_user_by_name(d, name, &u, &e);
        if (rc > 0)
            rc = err_set(&e, 404, "", "no user named '%s'", name);
        if (rc == 0)
            rc = db_token_list(d, u.id, &list, &n, &e);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            char created[32], used[32] = "never";
            text_iso8601(list[i].created_ms, created);
            if (list[i].last_used_ms)
                text_iso8601(list[i].last_used_ms, used);
            json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "id", (json_int_t)list[i].id,
                                  "name", list[i].name, "role", list[i].role, "scopes",
                                  list[i].scopes, "created", created, "lastUsed", used);
            char *text = json_dumps(j, JSON_COMPACT);
            printf("%s\n", text);
            free(text);
            json_decref(j);
        }
        free(list);
    } else if (!strcmp(command, "revoke-token")) {
        int64_t id = text_parse_i64(name);
        rc = id > 0 ? db_token_delete(d, id, &e) : 1;
        if (rc > 0)
            rc = err_set(&e, 404, "", "no token with id %s (hearth admin list-tokens NAME)", name);
        if (rc == 0)
            fprintf(stderr, "revoked token %lld\n", (long long)id);
    } else if (!strcmp(command, "create-org")) {
        /* As if the owner had made it: they become its first admin. */
        auth_caller who = {.authenticated = true};
        rc = db_user_by_name(d, owner, &who.user, &e);
        if (rc > 0)
            rc = err_set(&e, 404, "", "no user named '%s'", owner);
        snprintf(who.token.role, sizeof who.token.role, "write");
        if (rc == 0)
            rc = auth_org_create(d, &who, name, fullname, NULL, &e);
        if (rc == 0)
            fprintf(stderr, "created organization %s with admin %s\n", name, owner);
    } else if (!strcmp(command, "add-member")) {
        rc = auth_member_set(d, NULL, name, second, member_role, &e);
        if (rc == 0)
            fprintf(stderr, "%s is now %s of %s\n", second, member_role, name);
    } else {
        rc = auth_member_remove(d, NULL, name, second, &e);
        if (rc == 0)
            fprintf(stderr, "removed %s from %s\n", second, name);
    }
    if (rc == 0) {
        /* The CLI's own changes go into the audit log too, as "hearth-admin". */
        buf target = BUF_INIT;
        buf_printf(&target, "%s:%s", !strcmp(command, "create-token")   ? "user"
                                     : !strcmp(command, "revoke-token") ? "token"
                                                                        : "org",
                   name);
        if (strcmp(command, "list-tokens") != 0) {
            db_audit a = {.actor = "hearth-admin", .address = "", .action = command,
                          .target = target.data, .detail = ""};
            err ignored = ERR_INIT;
            db_audit_add(d, &a, &ignored);
        }
        buf_free(&target);
    }
    db_close(d);
    return rc == 0 ? 0 : fail(command, &e);
}

static void print_audit(void *ctx, const db_audit *a)
{
    char at[32];
    text_iso8601(a->at_ms, at);
    json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "id", (json_int_t)a->id, "at", at,
                          "actor", a->actor, "address", a->address, "action", a->action,
                          "target", a->target, "detail", a->detail);
    char *text = json_dumps(j, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
    json_decref(j);
}

/* `hearth admin audit`: since is an ISO date (2026-12-04 or 2026-12-04T10:00:00Z) or unix ms. */
static int audit_command(const char *data, const char *since, const char *target,
                         const char *user)
{
    int64_t since_ms = 0;
    if (since) {
        struct tm tm = {0};
        const char *end = strptime(since, "%Y-%m-%d", &tm);
        if (end && (*end == '\0' || *end == 'T')) {
            if (*end == 'T')
                strptime(end + 1, "%H:%M:%S", &tm);
            since_ms = (int64_t)timegm(&tm) * 1000;
        } else if ((since_ms = text_parse_i64(since)) < 0) {
            fprintf(stderr, "hearth admin audit: --since takes a date (2026-12-04) or unix ms\n");
            return 2;
        }
    }
    db *d = open_db(data);
    if (!d)
        return 1;
    err e = ERR_INIT;
    db_audit_query q = {.since_ms = since_ms, .target = target, .actor = user};
    int rc = db_audit_list(d, &q, print_audit, NULL, &e);
    db_close(d);
    return rc == 0 ? 0 : fail("audit", &e);
}

/* stats, gc and fsck open the whole hub in maintenance mode (beside a running server). */
static int storage_command(const char *command, const char *data, bool as_json, double grace_s,
                           double min_dead)
{
    err e = ERR_INIT;
    hub_config hc = {.data_dir = data, .maintenance = true};
    hub *h = hub_open(&hc, &e);
    if (!h) {
        fprintf(stderr, "hearth admin %s: %s\n", command, e.message);
        return 1;
    }
    int status = 0;
    json_t *out = NULL;
    if (!strcmp(command, "fsck")) {
        int64_t seen = 0;
        int64_t problems = hub_admin_fsck(h, print_problem, &seen, &e);
        if (problems < 0) {
            fprintf(stderr, "hearth admin fsck: %s\n", e.message);
            status = 2;
        } else {
            printf("%s: %lld problem(s)\n", problems ? "damaged" : "clean", (long long)problems);
            status = problems ? 1 : 0;
        }
    } else if (!strcmp(command, "gc")) {
        if (hub_admin_gc(h, (int64_t)(grace_s * 1000), min_dead, &out, &e) != 0) {
            fprintf(stderr, "hearth admin gc: %s\n", e.message);
            status = 1;
        } else if (as_json) {
            json_dumpf(out, stdout, JSON_INDENT(2));
            putchar('\n');
        } else {
            printf("gc: forgot %lld file(s), deleted %lld pack(s), rewrote %lld pack(s), "
                   "reclaimed %lld bytes\n",
                   (long long)json_integer_value(json_object_get(out, "filesRemoved")),
                   (long long)json_integer_value(json_object_get(out, "packsRemoved")),
                   (long long)json_integer_value(json_object_get(out, "packsRewritten")),
                   (long long)json_integer_value(json_object_get(out, "bytesReclaimed")));
        }
    } else if (hub_admin_stats(h, true, &out, &e) != 0) {
        fprintf(stderr, "hearth admin stats: %s\n", e.message);
        status = 1;
    } else if (as_json) {
        json_dumpf(out, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        printf("storage\n");
        print_size("logical", json_integer_value(json_object_get(out, "logicalBytes")));
        print_size("stored", json_integer_value(json_object_get(out, "storedBytes")));
        printf("  %-16s %14.2fx\n  %-16s %14lld\n  %-16s %14lld\n", "dedup ratio",
               json_real_value(json_object_get(out, "dedupRatio")), "files",
               (long long)json_integer_value(json_object_get(out, "files")), "chunks",
               (long long)json_integer_value(json_object_get(out, "chunks")));
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(out, "repos"), i, r)
        {
            if (i == 0)
                printf("\n%-40s %8s %16s %16s\n", "repo", "files", "logical", "unique stored");
            printf("%-40s %8lld %16lld %16lld\n", json_string_value(json_object_get(r, "id")),
                   (long long)json_integer_value(json_object_get(r, "files")),
                   (long long)json_integer_value(json_object_get(r, "logicalBytes")),
                   (long long)json_integer_value(json_object_get(r, "uniqueStoredBytes")));
        }
    }
    json_decref(out);
    hub_close(h);
    return status;
}

int cli_admin_main(int argc, char **argv)
{
    const char *data = "./hearth-data";
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            data = argv[++i];
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "hearth admin: unknown option '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *command = argv[i++];
    const char *name = NULL, *second = NULL, *fullname = NULL, *email = NULL, *role = NULL,
               *label = NULL, *owner = NULL, *member_role = NULL, *since = NULL,
               *target = NULL, *user = NULL;
    buf scopes = BUF_INIT;
    bool admin = false, as_json = false;
    double grace_s = 3600, min_dead = 0.05;
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--write"))
            role = "write";
        else if (!strcmp(a, "--read"))
            role = "read";
        else if (!strcmp(a, "--fullname") && next)
            fullname = argv[++i];
        else if (!strcmp(a, "--email") && next)
            email = argv[++i];
        else if (!strcmp(a, "--name") && next)
            label = argv[++i];
        else if (!strcmp(a, "--scope") && next)
            buf_printf(&scopes, "%s%s", scopes.len ? " " : "", argv[++i]);
        else if (!strcmp(a, "--owner") && next)
            owner = argv[++i];
        else if (!strcmp(a, "--since") && next)
            since = argv[++i];
        else if (!strcmp(a, "--repo") && next)
            target = argv[++i];
        else if (!strcmp(a, "--user") && next)
            user = argv[++i];
        else if (!strcmp(a, "--role") && next)
            member_role = argv[++i];
        else if (!strcmp(a, "--data") && next)
            data = argv[++i];
        else if (!strcmp(a, "--admin"))
            admin = true;
        else if (!strcmp(a, "--json"))
            as_json = true;
        else if (!strcmp(a, "--grace") && next)
            grace_s = atof(argv[++i]);
        else if (!strcmp(a, "--min-dead") && next)
            min_dead = atof(argv[++i]);
        else if (a[0] != '-' && !name)
            name = a;
        else if (a[0] != '-' && !second)
            second = a;
        else {
            fprintf(stderr, "hearth admin %s: unexpected argument '%s'\n", command, a);
            buf_free(&scopes);
            return 2;
        }
    }
    if (!strcmp(command, "audit")) {
        buf_free(&scopes);
        return audit_command(data, since, target, user);
    }
    int rc = accounts_command(command, data, name, second, fullname, owner, member_role,
                              role, scopes.len ? scopes.data : NULL, label);
    buf_free(&scopes);
    if (rc >= 0)
        return rc;
    err e = ERR_INIT;
    if (!strcmp(command, "create-user")) {
        if (!name || !path_is_valid_repo_name(name)) {
            fprintf(stderr, "hearth admin create-user: give a NAME of letters, digits, '-', "
                            "'_' or '.'\n");
            return 2;
        }
        if (auth_name_is_reserved(name)) {
            fprintf(stderr, "hearth admin create-user: '%s' is reserved (URLs use it); pick "
                            "another name\n", name);
            return 2;
        }
        db *d = open_db(data);
        if (!d)
            return 1;
        rc = db_user_create(d, name, fullname, email, admin, NULL, &e);
        db_close(d);
        if (rc != 0) {
            fprintf(stderr, "hearth admin create-user: %s\n",
                    e.status == 409 ? "a user with that name already exists" : e.message);
            return 1;
        }
        fprintf(stderr, "created user %s\n", name);
        return 0;
    }
    if (!strcmp(command, "stats") || !strcmp(command, "gc") || !strcmp(command, "fsck"))
        return storage_command(command, data, as_json, grace_s, min_dead);
    fprintf(stderr, "hearth admin: unknown command '%s'\n\n", command);
    usage(stderr);
    return 2;
}
