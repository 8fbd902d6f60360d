/* admin — `hearth admin`: user and token management on a data directory. Talks to the
 * metadata database directly, so it works while a server runs on the same directory. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#include "auth/auth.h"
#include "base/base.h"
#include "db/db.h"

static void usage(FILE *out)
{
    fputs("usage: hearth admin [--data DIR] <command>\n"
          "\n"
          "commands:\n"
          "  create-user NAME [--fullname TEXT] [--email ADDR]\n"
          "  create-token NAME --write|--read [--name LABEL]   prints the token on stdout\n"
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
    buf_printf(&path, "%s/hearth.db", data);
    err e = ERR_INIT;
    db *d = db_open(path.data, &e);
    if (!d)
        fprintf(stderr, "hearth admin: %s\n", e.message);
    buf_free(&path);
    return d;
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
        db *d = open_db(data);
        if (!d)
            return 1;
        int rc = db_user_create(d, name, fullname, email, NULL, &e);
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
    fprintf(stderr, "hearth admin: unknown command '%s'\n\n", command);
    usage(stderr);
    return 2;
}
