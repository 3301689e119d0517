/* SPDX-License-Identifier: MIT */
/* PID 1 of a sandbox. It finishes the sandbox's set-up while it still holds
 * the host's privileges (cgroup namespace, hostname, loopback, the root file
 * system), then enters the sandbox's user namespace for good and becomes a
 * tiny init: it starts the commands the host asks for, reports how they
 * ended, reaps every orphan, and exits when the host goes away — which kills
 * everything left in the sandbox's PID namespace. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd-util.h"
#include "log.h"
#include "net.h"
#include "sandbox-internal.h"
#include "seccomp.h"

/* Capabilities a command keeps inside its user namespace: Docker's default
 * set, which covers package managers and build tools. They mean nothing
 * outside: the user namespace owns no other namespace. */
static const int kept_caps[] = {
        CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID,
        CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_SETFCAP, CAP_AUDIT_WRITE,
};

#define MAX_CHILDREN 256

typedef struct Child {
        uint64_t id;
        pid_t pid;
} Child;

static Child children[MAX_CHILDREN];

int msg_send(int fd, const MsgHeader *h, const void *payload, const int *fds, size_t n_fds) {
        struct iovec iov[2] = {
                { .iov_base = (void *) h, .iov_len = sizeof *h },
                { .iov_base = (void *) payload, .iov_len = payload ? h->payload : 0 },
        };
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * 3)];
        } control = {};
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };

        if (n_fds > 3)
                return -EINVAL;
        if (n_fds > 0) {
                mh.msg_control = &control;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        for (;;) {
                if (sendmsg(fd, &mh, MSG_NOSIGNAL) >= 0)
                        return 0;
                if (errno != EINTR)
                        return -errno;
        }
}

ssize_t msg_recv(int fd, void *buf, size_t size, int *fds, size_t *n_fds) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * 3)];
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        struct msghdr mh = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control,
        };
        ssize_t n;

        if (n_fds)
                *n_fds = 0;
        do
                n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        if (n == 0)
                return 0; /* the peer is gone */
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                int got[8];
                memcpy(got, CMSG_DATA(c), MIN(k, ELEMENTSOF(got)) * sizeof(int));
                for (size_t i = 0; i < k && i < ELEMENTSOF(got); i++) {
                        if (fds && n_fds && *n_fds < 3)
                                fds[(*n_fds)++] = got[i];
                        else
                                safe_close(got[i]);
                }
        }
        if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
                return -EMSGSIZE;
        if ((size_t) n < sizeof(MsgHeader))
                return -EBADMSG;
        return n;
}

/* The raw system calls, not glibc's wrappers: in a process cloned from a
 * multi-threaded one, glibc still believes in the parent's threads and its
 * setxid broadcast takes locks that another thread may have held at the
 * moment of the clone (thread creation holds them: kiln up's server starts a
 * thread per connection), which deadlocks PID 1 for good. Only this thread
 * exists here, so nothing needs broadcasting. */
static int raw_set_ids(uid_t uid, gid_t gid) {
        if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, gid, gid, gid) < 0 ||
            syscall(SYS_setresuid, uid, uid, uid) < 0)
                return -1;
        return 0;
}

/* PID 1 is cloned from a process whose other threads may hold malloc's locks
 * at that moment (kiln up runs a server in the same process): it must never
 * allocate, so its buffers are static. */
#define SPAWN_VEC_MAX (65536 + 3)
static char *spawn_vec[SPAWN_VEC_MAX];
static char init_buf[SANDBOX_MSG_MAX];

/* Splits the payload into cwd, argv and env; pointers into buf. */
static int parse_spawn(char *buf, size_t n, const MsgHeader *h, char **ret_cwd, char ***ret_argv,
                       char ***ret_env) {
        size_t want = (size_t) h->n_argv + h->n_env + 1;
        char *p = buf + sizeof *h, *end = buf + n;
        char **v;

        if (h->payload != n - sizeof *h || h->n_argv == 0 || want > 65536)
                return -EBADMSG;
        v = spawn_vec;
        memset(v, 0, (want + 2) * sizeof(char *));
        for (size_t i = 0; i < want; i++) {
                char *z = memchr(p, 0, (size_t) (end - p));
                if (!z)
                        return -EBADMSG;
                /* cwd first, then argv (NULL-terminated), then env. */
                v[i < 1 ? i : (i <= h->n_argv ? i : i + 1)] = p;
                p = z + 1;
        }
        *ret_cwd = v[0];
        v[h->n_argv + 1] = NULL;
        *ret_argv = v + 1;
        *ret_env = v + h->n_argv + 2;
        return 0;
}

/* Applied once to PID 1 itself, so that every command inherits it and the
 * path from a spawn request to execve() stays short: the reduced capability
 * sets, no_new_privs and the seccomp filter. */
static int init_lockdown(const InitArgs *a) {
        struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct data[2] = {};
        uint64_t mask = 0;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(kept_caps); i++)
                mask |= 1ULL << kept_caps[i];
        for (int cap = 0; cap <= 63; cap++) {
                if (mask & (1ULL << cap))
                        continue;
                if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
                        if (errno == EINVAL)
                                break; /* past the kernel's last capability */
                        return -errno;
                }
        }
        (void) prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        data[0].effective = data[0].permitted = data[0].inheritable = (uint32_t) mask;
        data[1].effective = data[1].permitted = data[1].inheritable = (uint32_t) (mask >> 32);
        if (syscall(SYS_capset, &hdr, data) < 0)
                return -errno;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return -errno;
        if (a->seccomp) {
                r = seccomp_apply(a->seccomp);
                if (r < 0)
                        return r;
        }
        return 0;
}

typedef struct SpawnArgs {
        const MsgHeader *h;
        int *fds;
        const char *cwd;
        char **argv;
        char **env;
        volatile int error; /* written by the child when it fails before execve */
} SpawnArgs;

static const char *env_get(char **env, const char *key) {
        size_t l = strlen(key);
        for (char **e = env; e && *e; e++)
                if (strneq(*e, key, l) && (*e)[l] == '=')
                        return *e + l + 1;
        return NULL;
}

/* execvpe() with the search PATH taken from the command's own environment. */
static int exec_search(char **argv, char **env) {
        const char *path = env_get(env, "PATH");
        int saved = ENOENT;

        if (strchr(argv[0], '/')) {
                execve(argv[0], argv, env);
                return -errno;
        }
        if (!path)
                path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        for (const char *p = path; *p;) {
                const char *e = strchrnul(p, ':');
                char buf[4096];
                size_t dl = (size_t) (e - p);
                if (dl + 1 + strlen(argv[0]) + 1 <= sizeof buf) {
                        memcpy(buf, dl ? p : ".", dl ? dl : 1);
                        dl = dl ? dl : 1;
                        buf[dl] = '/';
                        memcpy(buf + dl + 1, argv[0], strlen(argv[0]) + 1);
                        execve(buf, argv, env);
                        if (errno == EACCES)
                                saved = EACCES;
                        else if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP &&
                                 errno != ENAMETOOLONG)
                                return -errno;
                }
                p = *e ? e + 1 : e;
        }
        return -saved;
}

/* Runs in a CLONE_VM|CLONE_VFORK child sharing PID 1's memory until execve():
 * only syscalls and writes to its own SpawnArgs. */
static int spawn_child(void *arg) {
        SpawnArgs *s = arg;
        const MsgHeader *h = s->h;
        sigset_t none;
        int tmp[3], r;

        if (setsid() < 0)
                goto fail;
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                goto fail;
        /* The fds may sit on 0..2 already: move them out of the way first. */
        for (int i = 0; i < 3; i++)
                if ((tmp[i] = fcntl(s->fds[i], F_DUPFD_CLOEXEC, 3)) < 0)
                        goto fail;
        for (int i = 0; i < 3; i++)
                if (dup2(tmp[i], i) < 0)
                        goto fail;
        if (syscall(SYS_close_range, 3U, ~0U, 0) < 0)
                goto fail;
        if (chdir(s->cwd[0] ? s->cwd : "/") < 0)
                goto fail;
        if ((h->uid != 0 || h->gid != 0) && raw_set_ids(h->uid, h->gid) < 0)
                goto fail;
        r = exec_search(s->argv, s->env);
        s->error = -r;
        _exit(127);
fail:
        s->error = errno ? errno : EIO;
        _exit(127);
}

static char spawn_stack[64 * 1024] __attribute__((aligned(16)));

static void handle_spawn(const InitArgs *a, char *buf, size_t n, int *fds, size_t n_fds) {
        static char *default_env[] = {
                (char *) "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                (char *) "HOME=/root", NULL,
        };
        const MsgHeader *h = (const MsgHeader *) buf;
        MsgHeader reply = { .type = MSG_SPAWNED, .id = h->id };
        char *cwd = NULL, **argv = NULL, **env = NULL;
        int slot = -1, r;

        r = n_fds == 3 ? parse_spawn(buf, n, h, &cwd, &argv, &env) : -EBADMSG;
        for (int i = 0; r >= 0 && i < MAX_CHILDREN; i++)
                if (children[i].pid == 0) {
                        slot = i;
                        break;
                }
        if (r >= 0 && slot < 0)
                r = -EMFILE;
        if (r >= 0) {
                SpawnArgs sa = { .h = h, .fds = fds, .cwd = cwd, .argv = argv,
                                 .env = env[0] ? env : default_env };
                /* Like posix_spawn(): the parent sleeps until the child has exec'd or
                 * failed, and nothing is copied. */
                pid_t pid = clone(spawn_child, spawn_stack + sizeof spawn_stack, CLONE_VM | CLONE_VFORK | SIGCHLD,
                                  &sa);
                if (pid < 0)
                        r = -errno;
                else {
                        children[slot] = (Child) { .id = h->id, .pid = pid };
                        reply.a = pid;
                        reply.b = sa.error;
                }
        }
        if (r < 0)
                reply.b = -r;
        for (size_t i = 0; i < n_fds; i++)
                safe_close(fds[i]);
        (void) msg_send(a->control_fd, &reply, NULL, NULL, 0);
}

static void handle_signal(const MsgHeader *h) {
        for (int i = 0; i < MAX_CHILDREN; i++)
                if (children[i].pid > 0 && children[i].id == h->id) {
                        /* The command leads its own session and process group. */
                        if (kill(-children[i].pid, h->a) < 0)
                                (void) kill(children[i].pid, h->a);
                        return;
                }
}

static void reap(const InitArgs *a) {
        for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);
                if (pid <= 0)
                        return;
                for (int i = 0; i < MAX_CHILDREN; i++)
                        if (children[i].pid == pid) {
                                MsgHeader m = { .type = MSG_EXITED, .id = children[i].id, .a = status };
                                children[i] = (Child) {};
                                (void) msg_send(a->control_fd, &m, NULL, NULL, 0);
                                break;
                        }
        }
}

_noreturn_ static void init_loop(const InitArgs *a) {
        char *buf = init_buf;
        sigset_t mask;
        int sfd;

        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sfd < 0)
                _exit(1);

        for (;;) {
                struct pollfd p[3] = {
                        { .fd = a->control_fd, .events = POLLIN },
                        { .fd = sfd, .events = POLLIN },
                        { .fd = a->life_fd, .events = POLLIN },
                };
                if (poll(p, 3, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        _exit(1);
                }
                if (p[1].revents) {
                        struct signalfd_siginfo si;
                        while (read(sfd, &si, sizeof si) == (ssize_t) sizeof si)
                                ;
                        reap(a);
                }
                /* The host is gone: dying takes everything in the sandbox along. */
                if (p[2].revents || (p[0].revents & (POLLHUP | POLLERR)))
                        _exit(0);
                if (p[0].revents & POLLIN) {
                        int fds[3];
                        size_t n_fds;
                        ssize_t n = msg_recv(a->control_fd, buf, SANDBOX_MSG_MAX, fds, &n_fds);
                        if (n == 0)
                                _exit(0);
                        if (n < 0) {
                                if (n == -EAGAIN)
                                        continue;
                                _exit(1);
                        }
                        MsgHeader *h = (MsgHeader *) buf;
                        if (h->type == MSG_SPAWN)
                                handle_spawn(a, buf, (size_t) n, fds, n_fds);
                        else {
                                for (size_t i = 0; i < n_fds; i++)
                                        safe_close(fds[i]);
                                if (h->type == MSG_SIGNAL)
                                        handle_signal(h);
                                else if (h->type == MSG_SIGNAL_ALL)
                                        (void) kill(-1, h->a);
                        }
                }
        }
}

static int enter_userns(const InitArgs *a) {
        if (setns(a->userns_fd, CLONE_NEWUSER) < 0)
                return log_error_errno(errno, "Failed to enter the sandbox's user namespace: %m");
        if (raw_set_ids(0, 0) < 0)
                return log_error_errno(errno, "Failed to become root in the sandbox: %m");
        return 0;
}

static int init_setup(const InitArgs *a) {
        int r;

        /* Joining the cgroup ourselves, as a single thread, spares the global
         * cgroup lock (and its RCU grace period) that moving a process costs. */
        if (!a->in_cgroup) {
                r = cgroup_attach_self(a->cgroup);
                if (r < 0)
                        return log_error_errno(r, "Failed to join the sandbox's cgroup: %m");
        }
        sandbox_phase(" cg attach");
        if (unshare(CLONE_NEWCGROUP) < 0)
                return log_error_errno(errno, "Failed to create the cgroup namespace: %m");
        sandbox_phase(" cgns");
        if (sethostname(a->config->hostname, strlen(a->config->hostname)) < 0)
                return log_error_errno(errno, "sethostname: %m");
        if (a->config->network != NETWORK_HOST) {
                r = net_loopback_up();
                if (r < 0)
                        return log_error_errno(r, "Failed to bring up loopback: %m");
        }
        sandbox_phase(" cg+host+lo");
        r = sandbox_rootfs_setup(a);
        if (r < 0)
                return r;
        r = enter_userns(a);
        if (r < 0)
                return r;
        /* Credential changes cleared these. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                return -errno;
        sandbox_phase(" userns");
        r = init_lockdown(a);
        if (r < 0)
                return log_error_errno(r, "Failed to drop privileges: %m");
        sandbox_phase(" lockdown");
        struct pollfd p = { .fd = a->life_fd, .events = POLLIN };
        if (poll(&p, 1, 0) > 0)
                return -ESRCH; /* the host died while we were setting up */
        return 0;
}

_noreturn_ void sandbox_init_main(const InitArgs *a) {
        int keep[] = { a->control_fd, a->life_fd, a->userns_fd };
        int r;

        log_set_prefix("kiln-init");
        (void) prctl(PR_SET_NAME, "kiln-init", 0, 0, 0);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
                _exit(1);
        /* Nothing of the host's may leak in; stderr stays for set-up errors only. */
        r = close_all_fds(keep, ELEMENTSOF(keep));
        if (r >= 0)
                r = init_setup(a);
        safe_close(a->userns_fd);
        MsgHeader m = { .type = MSG_READY, .a = r < 0 ? r : 0 };
        (void) msg_send(a->control_fd, &m, NULL, NULL, 0);
        if (r < 0)
                _exit(1);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
                for (int i = 0; i < 3; i++)
                        (void) dup2(null, i);
                safe_close(null);
        }
        init_loop(a);
}
