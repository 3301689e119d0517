/* SPDX-License-Identifier: MIT */
#pragma once

/* File work inside a sandbox's own view of the file system: a short-lived
 * child joins the sandbox's mount namespace and then its user namespace, and
 * becomes its root. So the workspace is written as the sandbox's root, within
 * its disk quota, and a path can only resolve inside the sandbox. The
 * children are forked by a small single-threaded helper process (kiln
 * __workspace), started once. */

#include <stdint.h>
#include <sys/types.h>

#include "archive-safe.h"

#define WORKSPACE_DIR "/workspace"

/* Creates /workspace (mode 0755) in the sandbox whose init is init_pid. */
int workspace_create(pid_t init_pid);
/* Extracts the archive read from archive_fd into /workspace. On failure
 * errbuf says why, for the task's log. */
int workspace_extract(pid_t init_pid, int archive_fd, const ArchiveLimits *l, char *errbuf, size_t errsize);
/* Packs the files under /workspace matching globs as tar.zst into out_fd;
 * *ret_entries is how many entries were packed. */
int workspace_pack(pid_t init_pid, char *const *globs, int out_fd, const ArchiveLimits *l,
                   uint64_t *ret_entries, char *errbuf, size_t errsize);

/* Starts the helper (from the thread that lives as long as the worker: the
 * helper dies with it); tmp_dir is for its warm-up. Stops it. */
int workspace_helper_start(const char *tmp_dir);
void workspace_helper_stop(void);

/* Runs the archive code once in-process on an empty tree below tmp_dir, so
 * that every library function it needs is loaded and bound — from the host's
 * file system — before the first child joins a sandbox. */
int workspace_warm_up(const char *tmp_dir);

/* kiln __workspace TMP_DIR: the helper (also declared in verbs.h). */
int verb_workspace_helper(int argc, char **argv);
