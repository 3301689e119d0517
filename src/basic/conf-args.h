/* SPDX-License-Identifier: MIT */
#pragma once

#include <getopt.h>

/* `--config FILE` for daemons (kiln worker, kiln server): FILE holds
 * "key = value" lines ('#' starts a comment), each key one of opts' long
 * options that take a value, and may repeat. The result is argv with
 * --config FILE taken out and the file's options laid in before the command
 * line's, so that the command line wins for single-valued options and adds
 * to repeatable ones (--image, --pool, --rebuild …). *ret is a NULL-ended
 * vector to free with strv_free() once nothing points into it. Errors name
 * the file and line. */
int conf_args_merge(int argc, char **argv, const struct option *opts, char ***ret);
