/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "parse-util.h"

static const char *const controller_names[_CG_MAX] = {
        [CG_MEMORY] = "memory",
        [CG_PIDS] = "pids",
        [CG_CPU] = "cpu",
};

/* Does the comma-separated list contain word? */
static bool list_has(const char *list, const char *word) {
        size_t l = strlen(word);
        for (const char *p = list; p && *p;) {
                const char *e = strchrnul(p, ',');
                if ((size_t) (e - p) == l && strneq(p, word, l))
                        return true;
                p = *e ? e + 1 : e;
        }
        return false;
}

/* The path of our own cgroup in the hierarchy that holds controller (NULL:
 * the unified one), from /proc/self/cgroup. */
static int own_cgroup_path(const char *text, const char *controller, char **ret) {
        _cleanup_free_ char *buf = strdup(text);
        if (!buf)
                return -ENOMEM;
        for (char *line = buf, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                char *c1 = strchr(line, ':');
                char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2)
                        continue;
                *c2 = 0;
                const char *ctrls = c1 + 1;
                if (controller ? list_has(ctrls, controller) : (streq(line, "0") && !*ctrls)) {
                        char *p = strdup(c2 + 1);
                        if (!p)
                                return -ENOMEM;
                        *ret = p;
                        return 0;
                }
        }
        return -ENOENT;
}

/* The mount point of the v1 hierarchy carrying controller, from mountinfo. */
static int v1_mount_point(const char *text, const char *controller, char **ret) {
        _cleanup_free_ char *buf = strdup(text);
        if (!buf)
                return -ENOMEM;
        for (char *line = buf, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                /* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER" */
                char *sep = strstr(line, " - ");
                if (!sep)
                        continue;
                char fstype[32], source[64], super[512];
                if (sscanf(sep + 3, "%31s %63s %511s", fstype, source, super) != 3)
                        continue;
                if (!streq(fstype, "cgroup") || !list_has(super, controller))
                        continue;
                char root[4096], mnt[4096];
                if (sscanf(line, "%*s %*s %*s %4095s %4095s", root, mnt) != 2)
                        continue;
                /* Only a mount of the hierarchy's root lets us map our own path. */
                if (!streq(root, "/"))
                        continue;
                char *p = strdup(mnt);
                if (!p)
                        return -ENOMEM;
                *ret = p;
                return 0;
        }
        return -ENOENT;
}

static bool v2_usable(const char *mnt) {
        _cleanup_free_ char *path = NULL, *ctrls = NULL;
        if (asprintf(&path, "%s/cgroup.controllers", mnt) < 0)
                return false;
        if (read_full_file(path, 4096, &ctrls, NULL) < 0)
                return false;
        for (char *nl = strchr(ctrls, '\n'); nl; nl = NULL)
                *nl = 0;
        /* cgroup.controllers is space-separated. */
        for (char *p = ctrls; *p; p++)
                if (*p == ' ')
                        *p = ',';
        return list_has(ctrls, "memory") && list_has(ctrls, "pids") && list_has(ctrls, "cpu");
}

/* v2 refuses controllers in a cgroup's subtree_control while the cgroup itself
 * holds processes. When the only process there is us (a service of its own),
 * move ourselves into a leaf so that our cgroup becomes an inner node. */
static int v2_enable_controllers(const char *own) {
        _cleanup_free_ char *sc = NULL;
        int r;

        if (asprintf(&sc, "%s/cgroup.subtree_control", own) < 0)
                return -ENOMEM;
        r = write_string_file(sc, "+memory +pids +cpu");
        if (r != -EBUSY)
                return r;

        _cleanup_free_ char *procs_path = NULL, *procs = NULL, *leaf = NULL, *leaf_procs = NULL;
        if (asprintf(&procs_path, "%s/cgroup.procs", own) < 0)
                return -ENOMEM;
        r = read_full_file(procs_path, 1 << 16, &procs, NULL);
        if (r < 0)
                return r;
        char me[32];
        snprintf(me, sizeof me, "%d\n", (int) getpid());
        if (!streq(procs, me))
                return log_debug_errno(EBUSY, "cgroup '%s' holds other processes", own);
        if (asprintf(&leaf, "%s/kiln-main", own) < 0 ||
            asprintf(&leaf_procs, "%s/cgroup.procs", leaf) < 0)
                return -ENOMEM;
        if (mkdir(leaf, 0755) < 0 && errno != EEXIST)
                return -errno;
        r = write_string_file(leaf_procs, "0");
        if (r < 0)
                return r;
        return write_string_file(sc, "+memory +pids +cpu");
}

/* A file only a non-root cgroup of controller's v1 hierarchy has. */
static const char *const v1_probe_files[_CG_MAX] = {
        [CG_MEMORY] = "memory.limit_in_bytes",
        [CG_PIDS] = "pids.max",
        [CG_CPU] = "cpu.cfs_quota_us",
};

/* Where every v1 hierarchy sits on most systems: /sys/fs/cgroup/CONTROLLER,
 * which is the right place if the "kiln" directory a previous run made below
 * our own cgroup there has the controller's files. One access() each spares
 * reading /proc/self/mountinfo. */
static int v1_parent_conventional(const char *self_cgroup, int k, char **ret) {
        _cleanup_free_ char *own = NULL, *probe = NULL;
        int r = own_cgroup_path(self_cgroup, controller_names[k], &own);
        if (r < 0)
                return r;
        if (asprintf(&probe, "/sys/fs/cgroup/%s%s/kiln/%s", controller_names[k], streq(own, "/") ? "" : own,
                     v1_probe_files[k]) < 0)
                return -ENOMEM;
        if (access(probe, F_OK) < 0)
                return -errno;
        *strrchr(probe, '/') = 0;
        *ret = TAKE_PTR(probe);
        return 0;
}

static int sandbox_parent_compute(bool *ret_v2, char *ret_paths[_CG_MAX]) {
        static const char *const v2_mounts[] = { "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };
        _cleanup_free_ char *self_cgroup = NULL, *mountinfo = NULL;
        char *paths[_CG_MAX] = {};
        int r;

        r = read_full_file("/proc/self/cgroup", 1 << 16, &self_cgroup, NULL);
        if (r < 0)
                return r;

        /* A controller belongs to one hierarchy: where /proc/self/cgroup lists
         * all three in v1 hierarchies, v2 cannot have them. */
        bool all_v1 = true;
        for (int k = 0; all_v1 && k < _CG_MAX; k++) {
                _cleanup_free_ char *own = NULL;
                all_v1 = own_cgroup_path(self_cgroup, controller_names[k], &own) >= 0;
        }
        if (all_v1) {
                int k = 0;
                while (k < _CG_MAX && v1_parent_conventional(self_cgroup, k, &paths[k]) >= 0)
                        k++;
                if (k == _CG_MAX) {
                        *ret_v2 = false;
                        for (k = 0; k < _CG_MAX; k++)
                                ret_paths[k] = paths[k];
                        return 0;
                }
                for (int j = 0; j < k; j++)
                        paths[j] = mfree(paths[j]);
        }

        for (size_t i = 0; !all_v1 && i < ELEMENTSOF(v2_mounts); i++) {
                _cleanup_free_ char *own = NULL, *own_abs = NULL, *parent = NULL, *sc = NULL;
                if (!v2_usable(v2_mounts[i]))
                        continue;
                r = own_cgroup_path(self_cgroup, NULL, &own);
                if (r < 0)
                        return r;
                if (asprintf(&own_abs, "%s%s", v2_mounts[i], streq(own, "/") ? "" : own) < 0 ||
                    asprintf(&parent, "%s/kiln", own_abs) < 0 ||
                    asprintf(&sc, "%s/cgroup.subtree_control", parent) < 0)
                        return -ENOMEM;
                r = v2_enable_controllers(own_abs);
                if (r < 0)
                        return log_error_errno(r,
                                               "Cannot enable the memory, pids and cpu controllers below "
                                               "cgroup '%s': %m. Run kiln in a cgroup delegated to it "
                                               "(e.g. systemd-run --scope -p Delegate=yes kiln …).",
                                               own_abs);
                if (mkdir(parent, 0755) < 0 && errno != EEXIST)
                        return -errno;
                r = write_string_file(sc, "+memory +pids +cpu");
                if (r < 0)
                        return r;
                *ret_v2 = true;
                ret_paths[0] = TAKE_PTR(parent);
                for (int k = 1; k < _CG_MAX; k++)
                        ret_paths[k] = NULL;
                return 0;
        }

        r = read_full_file("/proc/self/mountinfo", 1 << 20, &mountinfo, NULL);
        if (r < 0)
                return r;
        for (int k = 0; k < _CG_MAX; k++) {
                _cleanup_free_ char *mnt = NULL, *own = NULL;
                r = v1_mount_point(mountinfo, controller_names[k], &mnt);
                if (r >= 0)
                        r = own_cgroup_path(self_cgroup, controller_names[k], &own);
                if (r < 0) {
                        for (int j = 0; j < k; j++)
                                free(paths[j]);
                        return log_debug_errno(r, "No usable cgroup hierarchy for '%s'",
                                               controller_names[k]);
                }
                if (asprintf(&paths[k], "%s%s/kiln", mnt, streq(own, "/") ? "" : own) < 0)
                        paths[k] = NULL;
                if (!paths[k] || (mkdir(paths[k], 0755) < 0 && errno != EEXIST)) {
                        r = paths[k] ? -errno : -ENOMEM;
                        for (int j = 0; j <= k; j++)
                                free(paths[j]);
                        return r;
                }
        }
        *ret_v2 = false;
        for (int k = 0; k < _CG_MAX; k++)
                ret_paths[k] = paths[k];
        return 0;
}

/* Where we are in the hierarchies does not change: find out once per process
 * (it reads /proc/self/mountinfo and /proc/self/cgroup). */
int cgroup_sandbox_parent(bool *ret_v2, char *ret_paths[_CG_MAX]) {
        static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        static char *cached[_CG_MAX];
        static bool have, v2;
        int r = 0;

        pthread_mutex_lock(&lock);
        if (!have) {
                r = sandbox_parent_compute(&v2, cached);
                have = r >= 0;
        }
        for (int k = 0; r >= 0 && k < _CG_MAX; k++) {
                ret_paths[k] = NULL;
                if (cached[k] && !(ret_paths[k] = strdup(cached[k]))) {
                        for (int j = 0; j < k; j++)
                                ret_paths[j] = mfree(ret_paths[j]);
                        r = -ENOMEM;
                }
        }
        pthread_mutex_unlock(&lock);
        if (r >= 0)
                *ret_v2 = v2;
        return r;
}

_printf_(3, 4) static int cg_write(const char *dir, const char *knob, const char *fmt, ...) {
        char path[4096], val[64];
        va_list ap;
        snprintf(path, sizeof path, "%s/%s", dir, knob);
        va_start(ap, fmt);
        vsnprintf(val, sizeof val, fmt, ap);
        va_end(ap);
        return write_string_file(path, val);
}

static int apply_limits_v2(const char *dir, const CgroupLimits *l) {
        int r = 0;
        if (l->memory_max > 0) {
                r = cg_write(dir, "memory.max", "%" PRIu64, l->memory_max);
                if (r >= 0)
                        (void) cg_write(dir, "memory.swap.max", "0");
        }
        if (r >= 0 && l->pids_max > 0)
                r = cg_write(dir, "pids.max", "%" PRIu64, l->pids_max);
        if (r >= 0 && l->cpu_millis > 0)
                r = cg_write(dir, "cpu.max", "%" PRIu64 " 100000", l->cpu_millis * 100);
        return r;
}

static int apply_limits_v1(char *const paths[_CG_MAX], const CgroupLimits *l) {
        int r = 0;
        if (l->memory_max > 0) {
                r = cg_write(paths[CG_MEMORY], "memory.limit_in_bytes", "%" PRIu64, l->memory_max);
                /* Without swap accounting this knob is absent; then swap is not limited. */
                if (r >= 0)
                        (void) cg_write(paths[CG_MEMORY], "memory.memsw.limit_in_bytes", "%" PRIu64,
                                        l->memory_max);
        }
        if (r >= 0 && l->pids_max > 0)
                r = cg_write(paths[CG_PIDS], "pids.max", "%" PRIu64, l->pids_max);
        if (r >= 0 && l->cpu_millis > 0) {
                r = cg_write(paths[CG_CPU], "cpu.cfs_period_us", "100000");
                if (r >= 0)
                        r = cg_write(paths[CG_CPU], "cpu.cfs_quota_us", "%" PRIu64, l->cpu_millis * 100);
        }
        return r;
}

void cgroup_done(Cgroup *c) {
        for (int k = 0; k < _CG_MAX; k++)
                c->paths[k] = mfree(c->paths[k]);
}

static int cgroup_paths_for(const char *name, Cgroup *ret) {
        char *parents[_CG_MAX] = {};
        bool v2;
        int r = cgroup_sandbox_parent(&v2, parents);
        if (r < 0)
                return r;
        *ret = (Cgroup) { .v2 = v2 };
        for (int k = 0; k < _CG_MAX; k++) {
                if (!parents[k])
                        continue;
                if (asprintf(&ret->paths[k], "%s/%s", parents[k], name) < 0)
                        ret->paths[k] = NULL;
                free(parents[k]);
                if (!ret->paths[k]) {
                        for (int j = k + 1; j < _CG_MAX; j++)
                                free(parents[j]);
                        cgroup_done(ret);
                        return -ENOMEM;
                }
        }
        return 0;
}

int cgroup_create(const char *name, const CgroupLimits *l, Cgroup *ret) {
        Cgroup c;
        int r = cgroup_paths_for(name, &c);
        if (r < 0)
                return r;
        /* On v1 every hierarchy joined costs a task migration (~0.3 ms): join
         * only those in which a limit is set. */
        if (!c.v2) {
                const bool wanted[_CG_MAX] = {
                        [CG_MEMORY] = l->memory_max > 0,
                        [CG_PIDS] = l->pids_max > 0,
                        [CG_CPU] = l->cpu_millis > 0,
                };
                for (int k = 0; k < _CG_MAX; k++)
                        if (!wanted[k])
                                c.paths[k] = mfree(c.paths[k]);
        }
        for (int k = 0; k < _CG_MAX; k++)
                if (c.paths[k] && mkdir(c.paths[k], 0755) < 0) {
                        r = -errno;
                        goto fail;
                }
        r = c.v2 ? apply_limits_v2(c.paths[0], l) : apply_limits_v1(c.paths, l);
        if (r < 0)
                goto fail;
        *ret = c;
        return 0;
fail:
        for (int k = 0; k < _CG_MAX; k++)
                if (c.paths[k])
                        (void) rmdir(c.paths[k]);
        cgroup_done(&c);
        return r;
}

int cgroup_attach(const Cgroup *c, pid_t pid) {
        char val[32];
        snprintf(val, sizeof val, "%d", (int) pid);
        for (int k = 0; k < _CG_MAX; k++) {
                char path[4096];
                if (!c->paths[k])
                        continue;
                snprintf(path, sizeof path, "%s/cgroup.procs", c->paths[k]);
                int r = write_string_file(path, val);
                if (r < 0)
                        return r;
        }
        return 0;
}

int cgroup_attach_self(const Cgroup *c) {
        for (int k = 0; k < _CG_MAX; k++) {
                char path[4096];
                if (!c->paths[k])
                        continue;
                snprintf(path, sizeof path, "%s/%s", c->paths[k], c->v2 ? "cgroup.procs" : "tasks");
                int r = write_string_file(path, "0");
                if (r < 0)
                        return r;
        }
        return 0;
}

int cgroup_oom_kills(const Cgroup *c, uint64_t *ret) {
        _cleanup_free_ char *path = NULL, *buf = NULL;
        const char *dir = c->v2 ? c->paths[0] : c->paths[CG_MEMORY];
        if (!dir)
                return -ENOENT;
        if (asprintf(&path, "%s/%s", dir, c->v2 ? "memory.events" : "memory.oom_control") < 0)
                return -ENOMEM;
        int r = read_full_file(path, 1 << 16, &buf, NULL);
        if (r < 0)
                return r;
        const char *p = strstr(buf, "oom_kill ");
        if (!p)
                return -ENODATA;
        *ret = strtoull(p + strlen("oom_kill "), NULL, 10);
        return 0;
}

/* Kills what is left in one cgroup directory, then removes it. A missing
 * directory is fine. */
static int cgroup_dir_destroy(const char *dir) {
        char path[4096];
        int r = 0;

        snprintf(path, sizeof path, "%s/cgroup.kill", dir);
        (void) write_string_file(path, "1");
        snprintf(path, sizeof path, "%s/cgroup.procs", dir);
        for (int attempt = 0; attempt < 2000; attempt++) {
                if (rmdir(dir) >= 0 || errno == ENOENT)
                        return 0;
                r = -errno;
                if (errno != EBUSY)
                        return r;
                _cleanup_free_ char *procs = NULL;
                if (read_full_file(path, 1 << 20, &procs, NULL) >= 0)
                        for (char *p = procs; *p;) {
                                int pid;
                                char *nl = strchrnul(p, '\n');
                                char c = *nl;
                                *nl = 0;
                                if (safe_atoi(p, &pid) >= 0 && pid > 0)
                                        (void) kill(pid, SIGKILL);
                                p = c ? nl + 1 : nl;
                        }
                /* Dying tasks keep the cgroup busy for a moment. */
                struct timespec ts = { 0, 500000 };
                nanosleep(&ts, NULL);
        }
        return r;
}

int cgroup_destroy(Cgroup *c) {
        int r = 0;
        for (int k = 0; k < _CG_MAX; k++)
                if (c->paths[k]) {
                        int q = cgroup_dir_destroy(c->paths[k]);
                        if (q < 0 && r == 0)
                                r = q;
                }
        cgroup_done(c);
        return r;
}

int cgroup_remove_by_name(const char *name) {
        Cgroup c;
        int r = cgroup_paths_for(name, &c);
        if (r < 0)
                return r;
        return cgroup_destroy(&c);
}
