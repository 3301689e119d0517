/* SPDX-License-Identifier: MIT */
#pragma once

#include <getopt.h>
#include <stddef.h>

/* Config files of "key = value" lines: '#' starts a comment, blank lines and
 * the spaces around key and value do not count. fn gets each pair (path and
 * line for its messages) and may stop the parse with a negative errno. A
 * missing file is -ENOENT, not logged; every other error is logged, naming
 * the file and line. */
typedef int (*ConfLineFn)(const char *path, unsigned line, const char *key, const char *value, void *userdata);
int conf_parse_file(const char *path, size_t max, ConfLineFn fn, void *userdata);

/* `--config FILE` for daemons (kiln worker, kiln server): FILE holds
 * "key = value" lines ('#' starts a comment), each key one of opts' long
 * options that take a value, and may repeat. The result is argv with
 * --config FILE taken out and the file's options laid in before the command
 * line's, so that the command line wins for single-valued options and adds
 * to repeatable ones (--image, --pool, --rebuild …). *ret is a NULL-ended
 * vector to free with strv_free() once nothing points into it. Errors name
 * the file and line. */
int conf_args_merge(int argc, char **argv, const struct option *opts, char ***ret);
