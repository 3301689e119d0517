/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct RunWorkspace {
        int fd;            /* the tar.zst, in memory; -EBADF when the digest came from the cache */
        uint64_t size;
        uint64_t files;
        char digest[7 + 64 + 1]; /* sha256:… */
        bool git;          /* packed from a git checkout's view */
} RunWorkspace;

/* Packs dir (the current directory: git and .kilnignore are read relative to
 * it) as docs/cli.md describes. Logs its errors. With use_cache, a tree whose
 * stamp (archive_pack_dir_stamp()) was packed before is not packed again:
 * the digest is taken from STATE/workspaces/ and fd is -EBADF. */
int run_workspace_pack(const char *dir, bool use_cache, RunWorkspace *ret);
