/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <errno.h>
#include <time.h>

/* Writes s (no newline added) to an existing file such as a cgroup or /proc knob. */
int write_string_file(const char *path, const char *s);
int write_string_fileat(int dirfd, const char *path, const char *s);
/* Reads a whole file, NUL-terminated, refusing files over max bytes. */
int read_full_file(const char *path, size_t max, char **ret, size_t *ret_size);
int mkdir_p(const char *path, mode_t mode);
/* Removes a tree without following symlinks and without crossing into other
 * file systems. A missing path is not an error. */
int rm_rf(const char *path);
bool path_is_absolute(const char *p);
uint64_t now_usec(int clock);
/* The time on clock usec from now, as the absolute timespec that
 * pthread_cond_timedwait() and sem_timedwait() take. */
struct timespec timespec_after(int clock, uint64_t usec);

/* A -errno that says the file system is full (or the quota reached). */
static inline bool errno_is_disk_full(int r) {
        return r == -ENOSPC || r == -EDQUOT;
}
