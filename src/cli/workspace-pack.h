/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct RunWorkspace {
        int fd;            /* the tar.zst, in memory */
        uint64_t size;
        uint64_t files;
        char digest[7 + 64 + 1]; /* sha256:… */
        bool git;          /* packed from a git checkout's view */
} RunWorkspace;

/* Packs dir (the current directory: git and .kilnignore are read relative to
 * it) as docs/cli.md describes. Logs its errors. */
int run_workspace_pack(const char *dir, RunWorkspace *ret);
