/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fd-util.h"

int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                /* close() must never be retried on EINTR on Linux: the fd is gone either way. */
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}

void close_pair(int p[2]) {
        p[0] = safe_close(p[0]);
        p[1] = safe_close(p[1]);
}

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static int cmp_int(const void *a, const void *b) {
        return *(const int *) a - *(const int *) b;
}

int close_all_fds(const int *except, size_t n_except) {
        int sorted[64];
        unsigned lo = 3;

        if (n_except > ELEMENTSOF(sorted))
                return -E2BIG;
        for (size_t i = 0; i < n_except; i++)
                sorted[i] = except[i];
        /* qsort is not formally async-signal-safe but touches no global state; the
         * arrays here are tiny. */
        qsort(sorted, n_except, sizeof(int), cmp_int);

        for (size_t i = 0; i < n_except; i++) {
                if (sorted[i] < (int) lo)
                        continue;
                if ((unsigned) sorted[i] > lo &&
                    syscall(SYS_close_range, lo, (unsigned) sorted[i] - 1, 0) < 0)
                        return -errno;
                lo = (unsigned) sorted[i] + 1;
        }
        if (syscall(SYS_close_range, lo, UINT_MAX, 0) < 0)
                return -errno;
        return 0;
}

int fd_set_cloexec(int fd, bool cloexec) {
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0)
                return -errno;
        flags = cloexec ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
        if (fcntl(fd, F_SETFD, flags) < 0)
                return -errno;
        return 0;
}

int fd_set_nonblock(int fd, bool nonblock) {
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return -errno;
        flags = nonblock ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
        if (fcntl(fd, F_SETFL, flags) < 0)
                return -errno;
        return 0;
}

int fd_move_to(int fd, int target) {
        if (fd == target)
                return fd_set_cloexec(fd, false);
        if (dup2(fd, target) < 0)
                return -errno;
        return 0;
}

ssize_t loop_read(int fd, void *buf, size_t n) {
        size_t done = 0;
        while (done < n) {
                ssize_t k = read(fd, (char *) buf + done, n - done);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                done += (size_t) k;
        }
        return (ssize_t) done;
}

int loop_write(int fd, const void *buf, size_t n) {
        const char *p = buf;
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}
