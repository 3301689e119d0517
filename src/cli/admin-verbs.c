/* SPDX-License-Identifier: MIT */
/* `kiln token …` and `kiln secret …`: through the API with --server/--token
 * (or KILN_SERVER/KILN_TOKEN), or offline on a data directory with --data
 * (the way to create the first admin token). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "fs-util.h"
#include "cli.h"
#include "http-client.h"
#include "log.h"
#include "macro.h"
#include "parse-util.h"
#include "secrets.h"
#include "store.h"
#include "token.h"
#include "verbs.h"

typedef struct AdminArgs {
        const char *server, *token, *data;
        const char *kind, *name;
        bool json;
        char **rest;
        int n_rest;
} AdminArgs;

static int admin_parse(int argc, char **argv, AdminArgs *a, const char *usage) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "server", required_argument, NULL, 's' },
                { "token", required_argument, NULL, 't' },
                { "data", required_argument, NULL, 'd' },
                { "kind", required_argument, NULL, 'k' },
                { "name", required_argument, NULL, 'n' },
                { "json", no_argument, NULL, 'j' },
                {}
        };
        int c;

        *a = (AdminArgs) { .server = getenv("KILN_SERVER"), .token = getenv("KILN_TOKEN"),
                           .data = getenv("KILN_DATA") };
        optind = 0;
        while ((c = getopt_long(argc, argv, "hs:t:d:k:n:j", opts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        fputs(usage, stdout);
                        return 1;
                case 's': a->server = optarg; break;
                case 't': a->token = optarg; break;
                case 'd': a->data = optarg; break;
                case 'k': a->kind = optarg; break;
                case 'n': a->name = optarg; break;
                case 'j': a->json = true; break;
                default:
                        return -EINVAL;
                }
        }
        a->rest = argv + optind;
        a->n_rest = argc - optind;
        if (a->n_rest < 1)
                return log_error_errno(EINVAL, "Missing subcommand. See '%s --help'.", argv[0]);
        /* An explicit --data wins over an inherited KILN_SERVER. */
        if (a->data && a->server && getenv("KILN_SERVER") == a->server)
                a->server = NULL;
        if (!a->server && !a->data) {
                /* A running `kiln up` on this machine (docs/cli.md). */
                static char *up_url, *up_token;
                if (!up_url && up_find(false, &up_url, &up_token) < 0)
                        return log_error_errno(EINVAL, "No server: pass --server URL --token TOKEN (or KILN_SERVER, "
                                                       "KILN_TOKEN), start 'kiln up', or pass --data DIR to work on "
                                                       "a data directory.");
                a->server = up_url;
                if (!a->token)
                        a->token = up_token;
        }
        return 0;
}

static int admin_store(const AdminArgs *a, Store **ret) {
        char path[4096];
        StoreOptions so = { .offline = true };
        int r = mkdir_p(a->data, 0750);
        if (r < 0)
                return log_error_errno(r, "Failed to create data directory '%s': %m", a->data);
        snprintf(path, sizeof path, "%s/kiln.db", a->data);
        r = store_open(path, &so, ret);
        if (r < 0)
                return log_error_errno(r, "Failed to open the store in '%s': %m", a->data);
        return 0;
}

/* Calls the API; prints the server's message and returns -EIO on non-2xx. */
static int admin_call(const AdminArgs *a, const char *method, const char *path, json_t *body, json_t **ret) {
        HttpResult res = {};
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        char msg[512];
        int r;

        r = http_client_request(a->server, a->token, method, path, text, text ? strlen(text) : 0, NULL, &res);
        free(text);
        if (r < 0)
                return r; /* logged */
        if (res.status < 200 || res.status >= 300) {
                log_error("%s %s: %s", method, path, http_result_message(&res, msg, sizeof msg));
                http_result_done(&res);
                return -EIO;
        }
        *ret = res.body ? json_loads(res.body, 0, NULL) : NULL;
        http_result_done(&res);
        if (!*ret)
                *ret = json_object();
        return 0;
}

static void print_json(json_t *j) {
        char *t = json_dumps(j, JSON_INDENT(2));
        if (t)
                puts(t);
        free(t);
}

/* ---- tokens ---- */

static const char token_usage[] =
        "Usage: kiln token create --kind admin|user|worker [--name NAME]\n"
        "       kiln token list\n"
        "       kiln token revoke ID\n\n"
        "  --server URL --token TOKEN   the API (KILN_SERVER, KILN_TOKEN)\n"
        "  --data DIR                   work on a data directory directly (first admin token)\n"
        "  --json                       machine-readable output\n";

static int token_create_offline(const AdminArgs *a, TokenKind k, json_t **ret) {
        uint8_t hash[TOKEN_HASH_SIZE];
        _cleanup_free_ char *token = NULL;
        Store *s;
        int64_t id;
        int r;

        r = admin_store(a, &s);
        if (r < 0)
                return r;
        r = token_generate(k, &token);
        if (r >= 0)
                r = token_hash(token, hash);
        if (r >= 0)
                r = store_token_create(s, token_kind_to_string(k), a->name, hash, 0, &id);
        store_close(s);
        if (r < 0)
                return log_error_errno(r, "Failed to create the token: %m");
        *ret = json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t) id, "kind", token_kind_to_string(k),
                         "name", a->name ? a->name : "", "token", token);
        return 0;
}

static int token_create(const AdminArgs *a) {
        TokenKind k = token_kind_from_string(a->kind);
        json_t *res = NULL;
        int r;

        if (k < 0 || k == TOKEN_SESSION)
                return log_error_errno(EINVAL, "--kind must be admin, user or worker.");
        if (a->name && strlen(a->name) > 128)
                return log_error_errno(EINVAL, "--name is at most 128 characters.");
        if (a->server)
                r = admin_call(a, "POST", "/api/v1/tokens",
                               json_pack("{s:s, s:s}", "kind", a->kind, "name", a->name ? a->name : ""), &res);
        else
                r = token_create_offline(a, k, &res);
        if (r < 0)
                return r;
        if (a->json)
                print_json(res);
        else {
                puts(json_string_value(json_object_get(res, "token")));
                fprintf(stderr, "Created %s token %" JSON_INTEGER_FORMAT ". It is shown only this once.\n",
                        a->kind, json_integer_value(json_object_get(res, "id")));
        }
        json_decref(res);
        return 0;
}

static int token_list(const AdminArgs *a) {
        json_t *res = NULL, *list, *t;
        size_t i;
        int r;

        if (a->server) {
                r = admin_call(a, "GET", "/api/v1/tokens", NULL, &res);
                list = json_object_get(res, "tokens");
        } else {
                Store *s;
                r = admin_store(a, &s);
                if (r >= 0) {
                        r = store_token_list(s, &list);
                        store_close(s);
                        res = r >= 0 ? json_pack("{s:o}", "tokens", list) : NULL;
                }
        }
        if (r < 0)
                return r;
        if (a->json)
                print_json(res);
        else {
                printf("%-6s %-8s %s\n", "ID", "KIND", "NAME");
                json_array_foreach(json_object_get(res, "tokens"), i, t)
                        printf("%-6" JSON_INTEGER_FORMAT " %-8s %s\n", json_integer_value(json_object_get(t, "id")),
                               json_string_value(json_object_get(t, "kind")),
                               json_string_value(json_object_get(t, "name")));
        }
        json_decref(res);
        return 0;
}

static int token_revoke(const AdminArgs *a) {
        uint64_t id;
        char path[64];
        json_t *res = NULL;
        int r;

        if (a->n_rest != 2 || safe_atou64(a->rest[1], &id) < 0 || id == 0)
                return log_error_errno(EINVAL, "Usage: kiln token revoke ID");
        if (a->server) {
                snprintf(path, sizeof path, "/api/v1/tokens/%" PRIu64, id);
                r = admin_call(a, "DELETE", path, NULL, &res);
                json_decref(res);
        } else {
                Store *s;
                r = admin_store(a, &s);
                if (r < 0)
                        return r;
                r = store_token_revoke(s, (int64_t) id);
                store_close(s);
                if (r < 0)
                        return log_error_errno(r, "Failed to revoke token %" PRIu64 ": %m", id);
        }
        if (r < 0)
                return r;
        fprintf(stderr, "Revoked token %" PRIu64 ".\n", id);
        return 0;
}

int verb_token(int argc, char **argv) {
        AdminArgs a;
        int r = admin_parse(argc, argv, &a, token_usage);
        if (r != 0)
                return r > 0 ? 0 : 2;
        const char *cmd = a.rest[0];
        if (streq(cmd, "create"))
                r = token_create(&a);
        else if (streq(cmd, "list") || streq(cmd, "ls"))
                r = token_list(&a);
        else if (streq(cmd, "revoke"))
                r = token_revoke(&a);
        else {
                log_error("Unknown subcommand 'token %s'. See 'kiln token --help'.", cmd);
                return 2;
        }
        return r < 0 ? 1 : 0;
}

/* ---- secrets ---- */

static const char secret_usage[] =
        "Usage: kiln secret set NAME      (the value is read from standard input)\n"
        "       kiln secret ls | list\n"
        "       kiln secret rm | delete NAME\n\n"
        "  --server URL --token TOKEN   the API (KILN_SERVER, KILN_TOKEN; an admin token)\n"
        "  --data DIR                   work on a data directory directly\n";

static int read_stdin_value(char **ret, size_t *ret_len) {
        size_t n = 0, cap = 0;
        char *buf = NULL;

        for (;;) {
                if (n + 4096 > cap) {
                        if (cap > SECRET_MAX_LEN + 2) {
                                free(buf);
                                return -EFBIG;
                        }
                        cap = cap ? cap * 2 : 4096;
                        char *p = realloc(buf, cap + 1);
                        if (!p) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = p;
                }
                size_t k = fread(buf + n, 1, cap - n, stdin);
                n += k;
                if (k == 0)
                        break;
        }
        /* `echo value | kiln secret set X` must not store the newline. */
        if (n > 0 && buf[n - 1] == '\n')
                n--;
        if (n > 0 && buf[n - 1] == '\r')
                n--;
        buf[n] = 0;
        *ret = buf;
        *ret_len = n;
        return 0;
}

static int secret_set_offline(const AdminArgs *a, const char *name, const char *value, size_t len) {
        uint8_t key[SECRET_KEY_SIZE], *sealed = NULL;
        size_t sealed_len;
        Store *s;
        int r;

        r = mkdir_p(a->data, 0750);
        if (r < 0)
                return log_error_errno(r, "Failed to create data directory '%s': %m", a->data);
        r = secrets_key_load(a->data, key);
        if (r < 0)
                return log_error_errno(r, "Failed to load the secrets key in '%s': %m", a->data);
        r = secret_seal(key, value, len, &sealed, &sealed_len);
        sodium_memzero(key, sizeof key);
        if (r >= 0)
                r = admin_store(a, &s);
        if (r >= 0) {
                r = store_secret_put(s, name, sealed, sealed_len);
                store_close(s);
        }
        free(sealed);
        return r < 0 ? log_error_errno(r, "Failed to store secret '%s': %m", name) : 0;
}

static int secret_set(const AdminArgs *a) {
        _cleanup_free_ char *value = NULL;
        const char *why;
        char path[128];
        size_t len;
        json_t *res = NULL;
        int r;

        if (a->n_rest != 2)
                return log_error_errno(EINVAL, "Usage: kiln secret set NAME < value");
        const char *name = a->rest[1];
        if ((why = secret_name_invalid(name)))
                return log_error_errno(EINVAL, "Invalid secret name '%s': %s.", name, why);
        r = read_stdin_value(&value, &len);
        if (r < 0)
                return log_error_errno(r, "Failed to read the secret value from standard input: %m");
        if ((why = secret_value_invalid(value, len)))
                return log_error_errno(EINVAL, "Refused: %s.", why);
        if (a->server) {
                snprintf(path, sizeof path, "/api/v1/secrets/%s", name);
                r = admin_call(a, "PUT", path, json_pack("{s:s%}", "value", value, len), &res);
                json_decref(res);
        } else
                r = secret_set_offline(a, name, value, len);
        sodium_memzero(value, len);
        if (r < 0)
                return r;
        fprintf(stderr, "Secret '%s' stored.\n", name);
        return 0;
}

static int secret_list(const AdminArgs *a) {
        json_t *res = NULL, *v;
        size_t i;
        int r;

        if (a->server)
                r = admin_call(a, "GET", "/api/v1/secrets", NULL, &res);
        else {
                Store *s;
                json_t *list;
                r = admin_store(a, &s);
                if (r < 0)
                        return r;
                r = store_secret_list(s, &list);
                store_close(s);
                if (r >= 0)
                        res = json_pack("{s:o}", "secrets", list);
        }
        if (r < 0)
                return r;
        json_array_foreach(json_object_get(res, "secrets"), i, v)
                puts(json_string_value(v));
        json_decref(res);
        return 0;
}

static int secret_delete(const AdminArgs *a) {
        char path[128];
        json_t *res = NULL;
        int r;

        if (a->n_rest != 2 || secret_name_invalid(a->rest[1]))
                return log_error_errno(EINVAL, "Usage: kiln secret delete NAME");
        if (a->server) {
                snprintf(path, sizeof path, "/api/v1/secrets/%s", a->rest[1]);
                r = admin_call(a, "DELETE", path, NULL, &res);
                json_decref(res);
        } else {
                Store *s;
                r = admin_store(a, &s);
                if (r < 0)
                        return r;
                r = store_secret_delete(s, a->rest[1]);
                store_close(s);
                if (r < 0)
                        return log_error_errno(r, "Failed to delete secret '%s': %m", a->rest[1]);
        }
        return r;
}

int verb_secret(int argc, char **argv) {
        AdminArgs a;
        int r = admin_parse(argc, argv, &a, secret_usage);
        if (r != 0)
                return r > 0 ? 0 : 2;
        const char *cmd = a.rest[0];
        if (streq(cmd, "set"))
                r = secret_set(&a);
        else if (streq(cmd, "list") || streq(cmd, "ls"))
                r = secret_list(&a);
        else if (streq(cmd, "delete") || streq(cmd, "rm"))
                r = secret_delete(&a);
        else {
                log_error("Unknown subcommand 'secret %s'. See 'kiln secret --help'.", cmd);
                return 2;
        }
        return r < 0 ? 1 : 0;
}
