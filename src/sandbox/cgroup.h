/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Sandbox cgroups, created beneath the cgroup kiln itself runs in, on cgroup
 * v2 (memory, pids, cpu in the unified hierarchy) or, where those controllers
 * are only mounted as v1 hierarchies, in each v1 hierarchy. kiln only ever
 * creates, writes and removes the directories it made itself. */

typedef struct CgroupLimits {
        uint64_t memory_max; /* 0 = none */
        uint64_t pids_max;
        uint64_t cpu_millis;
} CgroupLimits;

typedef enum CgroupController {
        CG_MEMORY,
        CG_PIDS,
        CG_CPU,
        _CG_MAX,
} CgroupController;

typedef struct Cgroup {
        bool v2;
        /* v2: paths[0] is the one directory; v1: one per controller. */
        char *paths[_CG_MAX];
} Cgroup;

/* The parent directories below which sandbox cgroups live ("…/kiln"),
 * created if needed. */
int cgroup_sandbox_parent(bool *ret_v2, char *ret_paths[_CG_MAX]);
int cgroup_create(const char *name, const CgroupLimits *l, Cgroup *ret);
int cgroup_attach(const Cgroup *c, pid_t pid);
/* Moves the calling, single-threaded process in. On v1 this moves the thread
 * ("0" into tasks), which does not take the global threadgroup lock. */
int cgroup_attach_self(const Cgroup *c);
/* The oom_kill counter (memory.events / memory.oom_control). */
int cgroup_oom_kills(const Cgroup *c, uint64_t *ret);
/* Kills every process left in it, then removes the directories. */
int cgroup_destroy(Cgroup *c);
void cgroup_done(Cgroup *c);
/* Removes the cgroup of a sandbox named name, whatever is left of it. */
int cgroup_remove_by_name(const char *name);
