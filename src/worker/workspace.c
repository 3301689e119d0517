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
#include <pthread.h>
#include <sys/socket.h>
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

/* Extracting and packing call into libarchive, which allocates. The children
 * that do it inside a sandbox are forked by a helper of their own (kiln
 * __workspace), started once per worker process: it is single-threaded (a
 * fork of the multi-threaded worker would inherit any lock another thread
 * held at that instant — an allocator's, libarchive's — held forever) and
 * small (a fork copies the page tables of the process forked, and the
 * worker's are large), and it loaded libarchive on the host before any
 * child joins a sandbox's mount namespace, so nothing is ever loaded from a
 * sandbox's image. */

#define HELPER_FD 3
#define HELPER_GLOBS_MAX 4096

typedef struct Request {
        uint32_t op;
        uint32_t globs_size; /* NUL-separated globs that follow */
        uint64_t max_entries, max_total_bytes, max_file_bytes, max_path_len;
        uint32_t max_depth;
} Request;

static pthread_mutex_t helper_lock = PTHREAD_MUTEX_INITIALIZER;
static int helper_sock = -EBADF;
static pid_t helper_pid;

/* The worker's end. Called locked. */
static int helper_start_locked(const char *tmp_dir) {
        int sv[2];

        if (helper_sock >= 0)
                return 0;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        char *argv[] = { (char *) "kiln", (char *) "__workspace", (char *) tmp_dir, NULL };
        pid_t pid = worker_fork();
        if (pid < 0) {
                int r = -errno;
                safe_close(sv[0]);
                safe_close(sv[1]);
                return r;
        }
        if (pid == 0) {
                /* Only async-signal-safe calls until execve(). */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = fcntl(sv[1], F_DUPFD_CLOEXEC, 16);
                if (fd < 0 || dup2(fd, HELPER_FD) < 0)
                        _exit(126);
                execve("/proc/self/exe", argv, environ);
                _exit(127);
        }
        safe_close(sv[1]);
        helper_sock = sv[0];
        helper_pid = pid;
        return 0;
}

static char helper_tmp_dir[4096];

int workspace_helper_start(const char *tmp_dir) {
        snprintf(helper_tmp_dir, sizeof helper_tmp_dir, "%s", tmp_dir);
        pthread_mutex_lock(&helper_lock);
        int r = helper_start_locked(helper_tmp_dir);
        pthread_mutex_unlock(&helper_lock);
        return r;
}

void workspace_helper_stop(void) {
        pthread_mutex_lock(&helper_lock);
        helper_sock = safe_close(helper_sock);
        if (helper_pid > 0) {
                (void) kill(helper_pid, SIGKILL);
                while (waitpid(helper_pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                helper_pid = 0;
        }
        pthread_mutex_unlock(&helper_lock);
}

static int send_request(const Job *j, const int *fds, size_t n_fds) {
        const ArchiveLimits *l = j->limits ? j->limits : &archive_limits_default;
        char buf[sizeof(Request) + HELPER_GLOBS_MAX];
        Request *q = (Request *) buf;
        size_t at = sizeof(Request);

        *q = (Request) { .op = j->op, .max_entries = l->max_entries, .max_total_bytes = l->max_total_bytes,
                         .max_file_bytes = l->max_file_bytes, .max_path_len = l->max_path_len,
                         .max_depth = l->max_depth };
        for (char *const *g = j->globs; g && *g; g++) {
                size_t n = strlen(*g) + 1;
                if (at + n > sizeof buf)
                        return -E2BIG;
                memcpy(buf + at, *g, n);
                at += n;
        }
        q->globs_size = (uint32_t) (at - sizeof(Request));

        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * 4)];
        } control = {};
        struct iovec iov = { .iov_base = buf, .iov_len = at };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
                             .msg_controllen = CMSG_SPACE(sizeof(int) * n_fds) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);

        pthread_mutex_lock(&helper_lock);
        int r = 0;
        for (int attempt = 0; attempt < 2; attempt++) {
                r = helper_start_locked(helper_tmp_dir[0] ? helper_tmp_dir : "/tmp");
                if (r < 0)
                        break;
                if (sendmsg(helper_sock, &mh, MSG_NOSIGNAL) >= 0) {
                        r = 0;
                        break;
                }
                r = -errno;
                /* The helper is gone: start another and try once more. */
                helper_sock = safe_close(helper_sock);
                if (helper_pid > 0)
                        while (waitpid(helper_pid, NULL, 0) < 0 && errno == EINTR)
                                ;
                helper_pid = 0;
        }
        pthread_mutex_unlock(&helper_lock);
        return r;
}

/* Reads exactly n bytes before the deadline: 1 done, 0 timed out, -errno
 * (-EPIPE at an early end). */
static int read_until(int fd, void *p, size_t n, uint64_t deadline) {
        size_t got = 0;
        while (got < n) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                if (now >= deadline)
                        return 0;
                struct pollfd pf = { .fd = fd, .events = POLLIN };
                int k = poll(&pf, 1, (int) MIN((deadline - now) / 1000 + 1, (uint64_t) INT32_MAX));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        continue;
                ssize_t m = read(fd, (uint8_t *) p + got, n - got);
                if (m < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (m < 0)
                        return -errno;
                if (m == 0)
                        return -EPIPE;
                got += (size_t) m;
        }
        return 1;
}

static int run_in_sandbox(pid_t init_pid, const Job *j, uint64_t timeout_usec, Report *ret) {
        _cleanup_close_ int mnt = -EBADF, user = -EBADF;
        _cleanup_close_pair_ int p[2] = { -EBADF, -EBADF };
        char path[64];
        int32_t pid = 0;
        int r;

        *ret = (Report) {};
        snprintf(path, sizeof path, "/proc/%d/ns/mnt", (int) init_pid);
        mnt = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int) init_pid);
        user = open(path, O_RDONLY | O_CLOEXEC);
        if (mnt < 0 || user < 0)
                return -errno;
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        int fds[4] = { mnt, user, p[1], j->fd };
        r = send_request(j, fds, j->fd >= 0 ? 4 : 3);
        if (r < 0) {
                snprintf(ret->message, sizeof ret->message, "the workspace helper is not running: %s", strerror(-r));
                return r;
        }
        p[1] = safe_close(p[1]);
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + timeout_usec;
        /* The child says who it is, then how it went. */
        r = read_until(p[0], &pid, sizeof pid, deadline);
        if (r > 0)
                r = read_until(p[0], ret, sizeof *ret, deadline);
        if (r == 0) {
                /* Never let a stuck child hold up the pool or a task. */
                if (pid > 0)
                        (void) kill(pid, SIGKILL);
                snprintf(ret->message, sizeof ret->message, "the helper process took too long and was killed");
                return -ETIMEDOUT;
        }
        if (r < 0) {
                snprintf(ret->message, sizeof ret->message, "the helper process died");
                return -EPROTO;
        }
        return ret->error ? -ret->error : 0;
}

/* ---- the helper (kiln __workspace TMP_DIR, socket on fd 3) ---- */

static void helper_child(const Request *q, const char *globs, int mnt, int user, int reply, int archive) {
        ArchiveLimits l = { .max_entries = q->max_entries, .max_total_bytes = q->max_total_bytes,
                            .max_file_bytes = q->max_file_bytes, .max_path_len = (size_t) q->max_path_len,
                            .max_depth = q->max_depth };
        char *argv[HELPER_GLOBS_MAX / 2 + 1];
        size_t n = 0;
        for (size_t at = 0; at < q->globs_size && n + 1 < ELEMENTSOF(argv); at += strlen(globs + at) + 1)
                argv[n++] = (char *) globs + at;
        argv[n] = NULL;
        Job j = { .op = (Op) q->op, .fd = archive, .limits = &l, .globs = argv };
        Report rep = {};
        int32_t me = getpid();

        (void) loop_write(reply, &me, sizeof me);
        int r = enter(mnt, user);
        if (r < 0)
                snprintf(rep.message, sizeof rep.message, "cannot enter the sandbox (errno %d)", -r);
        else
                r = child_run(&j, &rep);
        rep.error = r < 0 ? -r : 0;
        (void) loop_write(reply, &rep, sizeof rep);
        _exit(r < 0 ? 1 : 0);
}

int verb_workspace_helper(int argc, char **argv) {
        static char buf[sizeof(Request) + HELPER_GLOBS_MAX + 1];
        int keep[] = { STDERR_FILENO, HELPER_FD };

        if (argc != 2 || fcntl(HELPER_FD, F_GETFD) < 0) {
                log_error("kiln __workspace is the worker's own helper, not a command.");
                return 2;
        }
        (void) close_all_fds(keep, ELEMENTSOF(keep));
        log_set_prefix("kiln-workspace");
        /* Children are reaped by the kernel; each reports over its own pipe. */
        (void) signal(SIGCHLD, SIG_IGN);
        /* Every library function the children use is loaded and bound here,
         * on the host's file system. */
        int r = workspace_warm_up(argv[1]);
        /* A full data disk is no reason to stop working: the warm-up's few
         * files fit in memory, and if not even there, the worker's own tasks
         * will say what is wrong. */
        if (errno_is_disk_full(r))
                r = workspace_warm_up("/dev/shm");
        if (errno_is_disk_full(r) || r == -ENOENT) {
                log_warning_errno(r, "Cannot try the archive code out, neither in %s nor in /dev/shm: %m", argv[1]);
                r = 0;
        }
        if (r < 0)
                return log_error_errno(r, "The archive code does not work here: %m"), 1;

        for (;;) {
                int fds[4] = { -EBADF, -EBADF, -EBADF, -EBADF };
                union {
                        struct cmsghdr h;
                        char buf[CMSG_SPACE(sizeof(int) * 4)];
                } control;
                struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf - 1 };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
                                     .msg_controllen = sizeof control };
                ssize_t n = recvmsg(HELPER_FD, &mh, MSG_CMSG_CLOEXEC);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return 0; /* the worker is gone */
                size_t n_fds = 0;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                                int got[8];
                                memcpy(got, CMSG_DATA(c), MIN(k, ELEMENTSOF(got)) * sizeof(int));
                                for (size_t i = 0; i < MIN(k, ELEMENTSOF(got)); i++) {
                                        if (n_fds < ELEMENTSOF(fds))
                                                fds[n_fds++] = got[i];
                                        else
                                                safe_close(got[i]);
                                }
                        }
                const Request *q = (const Request *) buf;
                bool ok = (size_t) n >= sizeof(Request) && q->globs_size == (size_t) n - sizeof(Request) &&
                          q->op <= OP_PACK && n_fds >= 3 && (q->op == OP_CREATE || n_fds == 4);
                if (ok) {
                        buf[n] = 0;
                        pid_t pid = fork();
                        if (pid == 0) {
                                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                                safe_close(HELPER_FD);
                                helper_child(q, buf + sizeof(Request), fds[0], fds[1], fds[2], fds[3]);
                        }
                        if (pid < 0)
                                log_warning_errno(errno, "Cannot fork: %m");
                }
                for (size_t i = 0; i < n_fds; i++)
                        safe_close(fds[i]);
        }
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
