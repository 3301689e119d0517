/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>

#include "macro.h"
#include "seccomp.h"
#include "seccomp-filter.h"

const struct sock_fprog *seccomp_default_program(void) {
        static const struct sock_fprog prog = {
                .len = ELEMENTSOF(seccomp_default_filter),
                .filter = (struct sock_filter *) seccomp_default_filter,
        };
        return &prog;
}

int seccomp_apply(const struct sock_fprog *p) {
        if (!p || !p->filter || p->len == 0)
                return -EINVAL;
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, p, 0, 0) < 0)
                return -errno;
        return 0;
}
