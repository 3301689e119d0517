/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf-args.h"
#include "fs-util.h"
#include "log.h"
#include "macro.h"
#include "strv.h"

#define CONF_FILE_MAX (1U << 20)

static const struct option *option_find(const struct option *opts, const char *name) {
        for (const struct option *o = opts; o->name; o++)
                if (streq(o->name, name))
                        return o;
        return NULL;
}

int conf_parse_file(const char *path, size_t max, ConfLineFn fn, void *userdata) {
        _cleanup_free_ char *text = NULL;
        unsigned lineno = 0;
        int r = read_full_file(path, max, &text, NULL);
        if (r == -ENOENT)
                return r;
        if (r < 0)
                return log_error_errno(r, "Failed to read the config file '%s': %m", path);

        for (char *line = text, *next; line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                lineno++;
                line += strspn(line, " \t");
                if (!*line || *line == '#')
                        continue;
                char *eq = strchr(line, '=');
                if (!eq)
                        return log_error_errno(EINVAL, "%s:%u: expected 'key = value'.", path, lineno);
                char *k = line, *v = eq + 1;
                *eq = 0;
                for (size_t n = strlen(k); n > 0 && isspace((unsigned char) k[n - 1]); n--)
                        k[n - 1] = 0;
                v += strspn(v, " \t");
                for (size_t n = strlen(v); n > 0 && isspace((unsigned char) v[n - 1]); n--)
                        v[n - 1] = 0;
                r = fn(path, lineno, k, v, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

typedef struct ArgsFromConf {
        const struct option *opts;
        char ***args;
} ArgsFromConf;

/* One line of a --config file, as "--key" "value" appended to the args. */
static int conf_line_to_args(const char *path, unsigned lineno, const char *k, const char *v, void *userdata) {
        ArgsFromConf *a = userdata;
        const struct option *o = option_find(a->opts, k);
        if (!o || o->has_arg != required_argument || streq(k, "config"))
                return log_error_errno(EINVAL, "%s:%u: unknown option '%s' (the keys are the long options of "
                                       "--help, without the dashes).", path, lineno, k);
        _cleanup_free_ char *flag = NULL;
        if (asprintf(&flag, "--%s", k) < 0 || strv_extend(a->args, flag) < 0 || strv_extend(a->args, v) < 0)
                return -ENOMEM;
        return 0;
}

int conf_args_merge(int argc, char **argv, const struct option *opts, char ***ret) {
        _cleanup_strv_free_ char **args = NULL, **rest = NULL;
        const char *path = NULL;

        if (argc < 1 || strv_extend(&args, argv[0]) < 0)
                return -ENOMEM;
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--")) {
                        for (; i < argc; i++)
                                if (strv_extend(&rest, argv[i]) < 0)
                                        return -ENOMEM;
                        break;
                }
                if (streq(argv[i], "--config")) {
                        if (i + 1 >= argc)
                                return log_error_errno(EINVAL, "--config: expected a file.");
                        path = argv[++i];
                        continue;
                }
                if (strneq(argv[i], "--config=", 9)) {
                        path = argv[i] + 9;
                        continue;
                }
                if (strv_extend(&rest, argv[i]) < 0)
                        return -ENOMEM;
        }
        if (path) {
                int r = conf_parse_file(path, CONF_FILE_MAX, conf_line_to_args,
                                        &(ArgsFromConf) { .opts = opts, .args = &args });
                if (r == -ENOENT)
                        return log_error_errno(r, "Failed to read the config file '%s': %m", path);
                if (r < 0)
                        return r;
        }
        for (char **s = rest; s && *s; s++)
                if (strv_extend(&args, *s) < 0)
                        return -ENOMEM;
        *ret = TAKE_PTR(args);
        return 0;
}
