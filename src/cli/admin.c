/* admin — `hearth admin`: user and token management on a data directory. Talks to the
 * metadata database directly, so it works while a server runs on the same directory. */
#include "cli/cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    const char *name = NULL, *fullname = NULL, *email = NULL, *role = NULL, *label = NULL;
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
        else {
            fprintf(stderr, "hearth admin %s: unexpected argument '%s'\n", command, a);
            return 2;
        }
    }
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
        int rc = db_user_create(d, name, fullname, email, admin, NULL, &e);
        db_close(d);
        if (rc != 0) {
            fprintf(stderr, "hearth admin create-user: %s\n",
                    e.status == 409 ? "a user with that name already exists" : e.message);
            return 1;
        }
        fprintf(stderr, "created user %s\n", name);
        return 0;
    }
    if (!strcmp(command, "create-token")) {
        if (!name || !role) {
            fprintf(stderr, "hearth admin create-token: usage: create-token NAME --write|--read\n");
            return 2;
        }
        db *d = open_db(data);
        if (!d)
            return 1;
        char token[40];
        int rc = auth_token_create(d, name, role, label, token, &e);
        db_close(d);
        if (rc != 0) {
            fprintf(stderr, "hearth admin create-token: %s\n", e.message);
            return 1;
        }
        printf("%s\n", token);
        return 0;
    }
    if (!strcmp(command, "stats") || !strcmp(command, "gc") || !strcmp(command, "fsck"))
        return storage_command(command, data, as_json, grace_s, min_dead);
    fprintf(stderr, "hearth admin: unknown command '%s'\n\n", command);
    usage(stderr);
    return 2;
}
