/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "macro.h"

int safe_close(int fd);
static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* Closes both ends of a pipe; for arrays of two fds. */
void close_pair(int p[2]);
static inline void close_pairp(int (*p)[2]) {
        close_pair(*p);
}
#define _cleanup_close_pair_ _cleanup_(close_pairp)

/* Closes every fd >= 3 that is not in except[]. Async-signal-safe. */
int close_all_fds(const int *except, size_t n_except);

int fd_set_cloexec(int fd, bool cloexec);
int fd_set_nonblock(int fd, bool nonblock);
/* Moves fd onto target (dup2) unless it is already there; clears CLOEXEC. */
int fd_move_to(int fd, int target);

/* Full read/write loops that retry on EINTR and short transfers. */
ssize_t loop_read(int fd, void *buf, size_t n);
int loop_write(int fd, const void *buf, size_t n);
