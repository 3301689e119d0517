/* SPDX-License-Identifier: MIT */
#pragma once

#include <linux/filter.h>
#include <stddef.h>

/* kiln's default seccomp filter, compiled once to classic BPF so that applying
 * it between fork and execve allocates nothing. */
int seccomp_default_build(struct sock_fprog *ret);
void seccomp_program_free(struct sock_fprog *p);
/* The default filter as compiled when kiln was built (seccomp-gen.c), so
 * that starting a sandbox neither loads libseccomp nor compiles anything. */
const struct sock_fprog *seccomp_default_program(void);

/* Loads a compiled filter into the calling thread. The caller must have set
 * PR_SET_NO_NEW_PRIVS. Async-signal-safe. */
int seccomp_apply(const struct sock_fprog *p);

/* The deny table, for documentation and tests: entry i's system call name, the
 * errno it returns and the attack it stops. Returns -ERANGE past the end.
 * (personality() is filtered on its argument in addition to these.) */
size_t seccomp_default_n_rules(void);
int seccomp_default_rule(size_t i, const char **ret_name, int *ret_error, const char **ret_why);
