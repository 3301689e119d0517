/* SPDX-License-Identifier: MIT */
#pragma once

#include <linux/filter.h>

/* kiln's default seccomp filter, compiled once to classic BPF so that applying
 * it between fork and execve allocates nothing. */
int seccomp_default_build(struct sock_fprog *ret);
void seccomp_program_free(struct sock_fprog *p);
/* Loads a compiled filter into the calling thread. The caller must have set
 * PR_SET_NO_NEW_PRIVS. Async-signal-safe. */
int seccomp_apply(const struct sock_fprog *p);
