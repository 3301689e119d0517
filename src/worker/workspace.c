/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd-util.h"
#include "parse-util.h"
#include "fs-util.h"
#include "log.h"
#include "macro.h"
#include "threads.h"
#include "workspace.h"

#define HELPER_TIMEOUT_USEC (30 * 60 * 1000000ULL)

/* The descriptors an exec'd helper (kiln __workspace) finds open. */
#define HELPER_FD_MNT 3
#define HELPER_FD_USER 4
#define HELPER_FD_ARCHIVE 5
#define HELPER_FD_REPORT 6
#define HELPER_ARGS_MAX 512

typedef enum Op {
        OP_CREATE,
        OP_EXTRACT,
        OP_PACK,
} Op;

typedef struct Job {
        Op op;
        int fd; /* archive to read (extract) or write (pack) */
        const ArchiveLimits *limits;
        char *const *globs;
} Job;

/* What the child reports back over its pipe. */
typedef struct Report {
        int error;
        uint64_t entries;
        char message[512];
} Report;

static int enter(int mnt_fd, int user_fd) {
        if (setns(mnt_fd, CLONE_NEWNS) < 0)
                return -errno;
        if (setns(user_fd, CLONE_NEWUSER) < 0)
                return -errno;
        /* Raw system calls: glibc's wrappers would run their all-threads
         * protocol (SIGSETXID), whose bookkeeping a child forked from a
         * multi-threaded process may inherit mid-update and wait on forever.
         * This process has a single thread, which is all the kernel changes. */
        (void) syscall(SYS_setgroups, 0, NULL);
        if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
                return -errno;
        if (chdir("/") < 0)
                return -errno;
        return 0;
}

static int child_run(const Job *j, Report *rep) {
        ArchiveStats st = {};
        ArchiveError err = {};
        int r;

        if (j->op == OP_CREATE) {
                if (mkdir(WORKSPACE_DIR, 0755) < 0 && errno != EEXIST)
                        return -errno;
                return 0;
        }
        _cleanup_close_ int dir = open(WORKSPACE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dir < 0) {
                int e = errno;
                snprintf(rep->message, sizeof rep->message, "cannot open %s (errno %d)", WORKSPACE_DIR, e);
                return -e;
        }
        if (j->op == OP_EXTRACT)
                r = archive_extract_safe(j->fd, dir, j->limits, &st, &err);
        else
                r = archive_pack(dir, j->globs, j->fd, j->limits, &st, &err);
        rep->entries = st.n_entries;
        if (r < 0 && err.message[0])
                snprintf(rep->message, sizeof rep->message, "%s", err.message);
        else if (r < 0)
                snprintf(rep->message, sizeof rep->message, "errno %d", -r);
        return r;
}

/* Extracting and packing call into libarchive, which allocates: that runs in
 * a fresh process image (kiln __workspace), never in a bare fork of the
 * multi-threaded worker, where any lock another thread held at the fork (an
 * allocator's — glibc's are reset at fork, a sanitizer's are not — or
 * libarchive's own) would stay held forever. The argument vector is built
 * before the fork: the child only moves descriptors and execs. */
typedef struct HelperArgs {
        char *argv[HELPER_ARGS_MAX + 1];
        char nums[5][24];
} HelperArgs;

static int helper_args(const Job *j, HelperArgs *h) {
        const ArchiveLimits *l = j->limits ? j->limits : &archive_limits_default;
        size_t n = 0;

        h->argv[n++] = (char *) "kiln";
        h->argv[n++] = (char *) "__workspace";
        h->argv[n++] = (char *) (j->op == OP_EXTRACT ? "extract" : "pack");
        snprintf(h->nums[0], sizeof h->nums[0], "%" PRIu64, l->max_entries);
        snprintf(h->nums[1], sizeof h->nums[1], "%" PRIu64, l->max_total_bytes);
        snprintf(h->nums[2], sizeof h->nums[2], "%" PRIu64, l->max_file_bytes);
        snprintf(h->nums[3], sizeof h->nums[3], "%zu", l->max_path_len);
        snprintf(h->nums[4], sizeof h->nums[4], "%u", l->max_depth);
        for (size_t i = 0; i < ELEMENTSOF(h->nums); i++)
                h->argv[n++] = h->nums[i];
        for (char *const *g = j->globs; g && *g; g++) {
                if (n >= HELPER_ARGS_MAX)
                        return -E2BIG;
                h->argv[n++] = *g;
        }
        h->argv[n] = NULL;
        return 0;
}

/* In the forked child: async-signal-safe calls only. */
_noreturn_ static void helper_exec(const HelperArgs *h, int mnt, int user, int archive, int report) {
        int src[] = { mnt, user, archive, report };
        int dst[] = { HELPER_FD_MNT, HELPER_FD_USER, HELPER_FD_ARCHIVE, HELPER_FD_REPORT };
        int tmp[ELEMENTSOF(src)];

        /* Out of the way first, so that no move overwrites a source. */
        for (size_t i = 0; i < ELEMENTSOF(src); i++) {
                tmp[i] = src[i] < 0 ? -1 : fcntl(src[i], F_DUPFD_CLOEXEC, 16);
                if (src[i] >= 0 && tmp[i] < 0)
                        _exit(126);
        }
        for (size_t i = 0; i < ELEMENTSOF(src); i++)
                if (tmp[i] >= 0 && dup2(tmp[i], dst[i]) < 0)
                        _exit(126);
        execve("/proc/self/exe", h->argv, environ);
        _exit(127);
}

static int run_in_sandbox(pid_t init_pid, const Job *j, uint64_t timeout_usec, Report *ret) {
        _cleanup_close_ int mnt = -EBADF, user = -EBADF;
        _cleanup_close_pair_ int p[2] = { -EBADF, -EBADF };
        HelperArgs h;
        char path[64];
        int r;

        if (j->op != OP_CREATE && (r = helper_args(j, &h)) < 0)
                return r;

        *ret = (Report) {};
        snprintf(path, sizeof path, "/proc/%d/ns/mnt", (int) init_pid);
        mnt = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int) init_pid);
        user = open(path, O_RDONLY | O_CLOEXEC);
        if (mnt < 0 || user < 0)
                return -errno;
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t parent = getpid();
        pid_t pid = worker_fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                Report rep = {};
                /* Dies with the thread that forked it, like the sandbox's init. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(1);
                if (j->op != OP_CREATE)
                        helper_exec(&h, mnt, user, j->fd, p[1]);
                p[0] = safe_close(p[0]);
                r = enter(mnt, user);
                if (r < 0)
                        snprintf(rep.message, sizeof rep.message, "cannot enter the sandbox (errno %d)", -r);
                else
                        r = child_run(j, &rep);
                rep.error = r < 0 ? -r : 0;
                (void) loop_write(p[1], &rep, sizeof rep);
                _exit(r < 0 ? 1 : 0);
        }
        p[1] = safe_close(p[1]);
        Report rep = {};
        struct pollfd pf = { .fd = p[0], .events = POLLIN };
        int k;
        while ((k = poll(&pf, 1, (int) MIN(timeout_usec / 1000, (uint64_t) INT32_MAX))) < 0 && errno == EINTR)
                ;
        ssize_t n = -1;
        if (k > 0)
                n = loop_read(p[0], &rep, sizeof rep);
        else
                /* Never let a stuck helper hold up the pool or a task. */
                (void) kill(pid, SIGKILL);
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (k == 0) {
                snprintf(ret->message, sizeof ret->message, "the helper process took too long and was killed");
                return -ETIMEDOUT;
        }
        if (n != (ssize_t) sizeof rep) {
                snprintf(ret->message, sizeof ret->message, "the helper process died (status %d)", status);
                return -EPROTO;
        }
        *ret = rep;
        return rep.error ? -rep.error : 0;
}

int workspace_create(pid_t init_pid) {
        Job j = { .op = OP_CREATE, .fd = -EBADF };
        Report rep;
        return run_in_sandbox(init_pid, &j, 30 * 1000000ULL, &rep);
}

int workspace_extract(pid_t init_pid, int archive_fd, const ArchiveLimits *l, char *errbuf, size_t errsize) {
        Job j = { .op = OP_EXTRACT, .fd = archive_fd, .limits = l };
        Report rep;
        if (lseek(archive_fd, 0, SEEK_SET) < 0)
                return -errno;
        int r = run_in_sandbox(init_pid, &j, HELPER_TIMEOUT_USEC, &rep);
        if (r < 0)
                snprintf(errbuf, errsize, "%s", rep.message[0] ? rep.message : strerror(-r));
        return r;
}

int workspace_pack(pid_t init_pid, char *const *globs, int out_fd, const ArchiveLimits *l,
                   uint64_t *ret_entries, char *errbuf, size_t errsize) {
        Job j = { .op = OP_PACK, .fd = out_fd, .limits = l, .globs = globs };
        Report rep;
        int r = run_in_sandbox(init_pid, &j, HELPER_TIMEOUT_USEC, &rep);
        if (r < 0) {
                snprintf(errbuf, errsize, "%s", rep.message[0] ? rep.message : strerror(-r));
                return r;
        }
        *ret_entries = rep.entries;
        return 0;
}

int workspace_warm_up(const char *tmp_dir) {
        char a[4096];
        char *globs[] = { (char *) "*", NULL };
        ArchiveStats st;
        ArchiveError err = {};
        int r;

        snprintf(a, sizeof a, "%s/warm-up-XXXXXX", tmp_dir);
        if (!mkdtemp(a))
                return -errno;
        _cleanup_close_ int dir = open(a, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_close_ int tar = open(tmp_dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
        _cleanup_close_ int src = -EBADF, dst = -EBADF;
        if (dir < 0 || tar < 0 || mkdirat(dir, "src", 0700) < 0 || mkdirat(dir, "dst", 0700) < 0 ||
            (src = openat(dir, "src", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
            (dst = openat(dir, "dst", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
                r = -errno;
                goto finish;
        }
        r = write_string_fileat(src, "f", "kiln");
        if (r == -ENOENT) {
                _cleanup_close_ int f = openat(src, "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                r = f < 0 ? -errno : loop_write(f, "kiln", 4);
        }
        if (r >= 0)
                r = archive_pack_dir(src, NULL, tar, NULL, &st, &err);
        if (r >= 0 && (ftruncate(tar, 0) < 0 || lseek(tar, 0, SEEK_SET) < 0))
                r = -errno;
        if (r >= 0)
                r = archive_pack(src, globs, tar, NULL, &st, &err);
        if (r >= 0 && lseek(tar, 0, SEEK_SET) < 0)
                r = -errno;
        if (r >= 0)
                r = archive_extract_safe(tar, dst, NULL, &st, &err);
        if (r < 0 && err.message[0])
                log_debug("Archive warm-up: %s", err.message);
finish:
        (void) rm_rf(a);
        return r;
}

/* kiln __workspace extract|pack MAX_ENTRIES MAX_TOTAL MAX_FILE MAX_PATH MAX_DEPTH [GLOB…]:
 * the other end of helper_exec(), with descriptors 3-6 open. Not for users. */
int verb_workspace_helper(int argc, char **argv) {
        int keep[] = { STDERR_FILENO, HELPER_FD_MNT, HELPER_FD_USER, HELPER_FD_ARCHIVE, HELPER_FD_REPORT };
        ArchiveLimits l = {};
        uint64_t path_len = 0;
        Report rep = {};
        Job j = { .fd = HELPER_FD_ARCHIVE, .limits = &l };
        int r;

        if (argc < 7 || (!streq(argv[1], "extract") && !streq(argv[1], "pack")) || safe_atou64(argv[2], &l.max_entries) < 0 ||
            safe_atou64(argv[3], &l.max_total_bytes) < 0 || safe_atou64(argv[4], &l.max_file_bytes) < 0 ||
            safe_atou64(argv[5], &path_len) < 0 || safe_atou(argv[6], &l.max_depth) < 0) {
                log_error("kiln __workspace is the worker's own helper, not a command.");
                return 2;
        }
        l.max_path_len = (size_t) path_len;
        j.op = streq(argv[1], "extract") ? OP_EXTRACT : OP_PACK;
        j.globs = argv + 7;
        (void) close_all_fds(keep, ELEMENTSOF(keep));
        r = enter(HELPER_FD_MNT, HELPER_FD_USER);
        (void) close(HELPER_FD_MNT);
        (void) close(HELPER_FD_USER);
        if (r < 0)
                snprintf(rep.message, sizeof rep.message, "cannot enter the sandbox (errno %d)", -r);
        else
                r = child_run(&j, &rep);
        rep.error = r < 0 ? -r : 0;
        (void) loop_write(HELPER_FD_REPORT, &rep, sizeof rep);
        return r < 0 ? 1 : 0;
}
