/* SPDX-License-Identifier: MIT */
/* escape-probe: the sandbox escape battery. It runs inside a kiln sandbox,
 * tries one escape after another and asserts the exact way each one fails:
 *
 *   PASS name: attack
 *   FAIL name: attack: what happened
 *
 * then a summary; it exits 0 iff every case passed. A static executable with
 * no dependencies, so it also runs inside a minimal root file system.
 *
 * The expected errno of each case follows from how a kiln sandbox is built
 * (src/sandbox/sandbox-init.c, sandbox-rootfs.c, seccomp.c):
 *  - PID 1 sets up mounts, hostname and network with the host's privileges
 *    and only then enters the user namespace. The user namespace therefore
 *    owns none of the other namespaces: capabilities held inside it count
 *    for nothing against the mount, pid, net, uts, ipc or cgroup namespace,
 *    and the kernel answers EPERM.
 *  - Sandbox root is uid 0 of that user namespace, a high unprivileged uid
 *    on the host. Host-root-owned files that are not idmapped (/proc, /sys,
 *    plain binds) have an owner the namespace cannot map, so
 *    CAP_DAC_OVERRIDE does not apply to them: EACCES.
 *  - The seccomp filter answers EPERM (ENOSYS for clone3) before the kernel
 *    looks at the arguments at all.
 *  - Commands run with no_new_privs, in a new session, with only fds 0-2.
 * Where more than one errno is legitimate a case accepts a small set and
 * says why; no case accepts "any failure".
 *
 * Modes besides the battery:
 *   --print-euid   prints "euid=N" (the helper the setuid cases exec)
 *   --kill-all     kill(-1, SIGKILL) from inside; the caller checks that a
 *                  process outside the sandbox survived
 *   --list         prints the names of the cases the given options select */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/kexec.h>
#include <linux/keyctl.h>
#include <linux/magic.h>
#include <linux/perf_event.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define CONNECT_TIMEOUT_MS 2000
#define MAX_ADDRS 8
#define MAX_FDS 64
#define DROP_UID 1000

typedef enum NetMode { NET_NONE, NET_NAT } NetMode;

typedef struct Options {
        NetMode network;
        int host_port;                    /* 0: not given */
        char *host_addrs[MAX_ADDRS];      /* "IP:PORT" */
        size_t n_host_addrs;
        pid_t host_pid;                   /* 0: not given */
        char *host_files[MAX_ADDRS];
        size_t n_host_files;
        const char *setuid_bin;
        bool list;
} Options;

static Options opt = { .network = NET_NONE };

/* The fds open when the probe started, before it opened anything. */
static int start_fds[MAX_FDS];
static size_t n_start_fds;
static bool start_fds_overflow;

static unsigned n_pass, n_fail;

/* ---------------------------------------------------------------------- */
/* Reporting                                                              */

static void pass(const char *name, const char *attack) {
        printf("PASS %s: %s\n", name, attack);
        n_pass++;
}

__attribute__((format(printf, 3, 4))) static void fail(const char *name, const char *attack,
                                                       const char *fmt, ...) {
        va_list ap;

        printf("FAIL %s: %s: ", name, attack);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        n_fail++;
}

static const char *errname(int e) {
        static char buf[32];
#define E(x) case x: return #x
        switch (e) {
                E(EPERM); E(ENOENT); E(ESRCH); E(EINTR); E(EIO); E(ENXIO); E(E2BIG); E(EBADF);
                E(EAGAIN); E(ENOMEM); E(EACCES); E(EFAULT); E(EBUSY); E(EEXIST); E(ENODEV);
                E(ENOTDIR); E(EISDIR); E(EINVAL); E(ENOTTY); E(ETXTBSY); E(ENOSPC); E(EROFS);
                E(ENOSYS); E(EOPNOTSUPP); E(EAFNOSUPPORT); E(EADDRNOTAVAIL); E(ENETUNREACH);
                E(ECONNREFUSED); E(EHOSTUNREACH); E(ETIMEDOUT); E(EPROTONOSUPPORT);
        case 0:
                return "success";
        }
#undef E
        snprintf(buf, sizeof buf, "errno %d", e);
        return buf;
}

/* Checks the outcome of a call that must fail: r < 0 with errno in allowed. */
static bool errno_in(int e, const int *allowed, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (allowed[i] == e)
                        return true;
        return false;
}

#define EXPECT_FAIL(name, attack, r, e, ...)                                               \
        do {                                                                               \
                static const int _allowed[] = { __VA_ARGS__ };                             \
                expect_fail_impl(name, attack, (long) (r), e, _allowed, ELEMENTSOF(_allowed), \
                                 #__VA_ARGS__);                                            \
        } while (0)

static bool expect_fail_impl(const char *name, const char *attack, long r, int e, const int *allowed,
                             size_t n, const char *allowed_s) {
        if (r >= 0) {
                fail(name, attack, "succeeded (returned %ld), expected %s", r, allowed_s);
                return false;
        }
        if (!errno_in(e, allowed, n)) {
                fail(name, attack, "failed with %s, expected %s", errname(e), allowed_s);
                return false;
        }
        pass(name, attack);
        return true;
}

/* Runs f in a forked child, so that a case that unexpectedly succeeds (a new
 * namespace, a chroot) cannot disturb the cases after it. The child reports
 * through its exit status: 0 pass; anything else is described by f itself on
 * a pipe. */
typedef int (*ChildFn)(char *msg, size_t size);

static int run_in_child(ChildFn f, char *msg, size_t size) {
        int p[2], status;
        pid_t pid;

        msg[0] = 0;
        if (pipe2(p, O_CLOEXEC) < 0) {
                snprintf(msg, size, "pipe: %s", strerror(errno));
                return -1;
        }
        fflush(stdout);
        pid = fork();
        if (pid < 0) {
                snprintf(msg, size, "fork: %s", strerror(errno));
                close(p[0]);
                close(p[1]);
                return -1;
        }
        if (pid == 0) {
                char buf[256] = "";
                close(p[0]);
                int r = f(buf, sizeof buf);
                (void) !write(p[1], buf, strlen(buf));
                _exit(r);
        }
        close(p[1]);
        ssize_t n = read(p[0], msg, size - 1);
        msg[n > 0 ? n : 0] = 0;
        close(p[0]);
        if (waitpid(pid, &status, 0) != pid) {
                snprintf(msg, size, "waitpid: %s", strerror(errno));
                return -1;
        }
        if (WIFSIGNALED(status)) {
                snprintf(msg, size, "child killed by signal %d", WTERMSIG(status));
                return -1;
        }
        return WEXITSTATUS(status);
}

/* ---------------------------------------------------------------------- */
/* Small helpers                                                          */

static int read_file(const char *path, char *buf, size_t size) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        size_t got = 0;

        if (fd < 0)
                return -errno;
        while (got < size - 1) {
                ssize_t n = read(fd, buf + got, size - 1 - got);
                if (n < 0) {
                        int e = errno;
                        close(fd);
                        return -e;
                }
                if (n == 0)
                        break;
                got += (size_t) n;
        }
        buf[got] = 0;
        close(fd);
        return 0;
}

/* The value of "Key:" in /proc/self/status, without the tab. */
static int status_field(const char *key, char *ret, size_t size) {
        static char buf[8192];
        size_t k = strlen(key);

        int r = read_file("/proc/self/status", buf, sizeof buf);
        if (r < 0)
                return r;
        for (char *line = buf; line && *line;) {
                char *nl = strchr(line, '\n');
                if (nl)
                        *nl = 0;
                if (strncmp(line, key, k) == 0 && line[k] == ':') {
                        const char *v = line + k + 1;
                        while (*v == '\t' || *v == ' ')
                                v++;
                        snprintf(ret, size, "%s", v);
                        return 0;
                }
                line = nl ? nl + 1 : NULL;
        }
        return -ENOENT;
}

static bool is_dev_null(int fd) {
        struct stat st;
        return fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3);
}

static int parse_addr(const char *s, struct sockaddr_in *ret) {
        char host[64];
        const char *colon = strrchr(s, ':');
        char *end;
        long port;

        if (!colon || (size_t) (colon - s) >= sizeof host)
                return -EINVAL;
        memcpy(host, s, (size_t) (colon - s));
        host[colon - s] = 0;
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        if (errno || *end || port <= 0 || port > 65535)
                return -EINVAL;
        memset(ret, 0, sizeof *ret);
        ret->sin_family = AF_INET;
        ret->sin_port = htons((uint16_t) port);
        if (inet_pton(AF_INET, host, &ret->sin_addr) != 1)
                return -EINVAL;
        return 0;
}

/* connect() with a deadline; returns 0 when connected, else -errno
 * (-ETIMEDOUT when the deadline passed: a firewall that drops). */
static int connect_timeout(const struct sockaddr_in *sa) {
        struct pollfd p;
        socklen_t len = sizeof(int);
        int fd, e = 0, r;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (const struct sockaddr *) sa, sizeof *sa) == 0) {
                close(fd);
                return 0;
        }
        if (errno != EINPROGRESS) {
                e = errno;
                close(fd);
                return -e;
        }
        p = (struct pollfd) { .fd = fd, .events = POLLOUT };
        do
                r = poll(&p, 1, CONNECT_TIMEOUT_MS);
        while (r < 0 && errno == EINTR);
        if (r == 0) {
                close(fd);
                return -ETIMEDOUT;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
                e = errno;
        close(fd);
        return e == 0 ? 0 : -e;
}

/* The ways a connection to a host address can legitimately fail from inside:
 * ECONNREFUSED (our own loopback, nothing listens; or a reject with a TCP
 * reset), ENETUNREACH/EHOSTUNREACH (no route, or a reject with ICMP),
 * ETIMEDOUT (our deadline: a firewall rule that drops, which is what kiln's
 * nftables table does), EPERM/EACCES (a local netfilter or LSM verdict).
 * A host listener is up on each of these addresses, so "connected" is the
 * only outcome that means the host was reached. */
static const int unreachable[] = {
        ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, ETIMEDOUT, EPERM, EACCES,
};

static void expect_unreachable(const char *name, const char *attack, const struct sockaddr_in *sa) {
        char a[INET_ADDRSTRLEN];
        int r = connect_timeout(sa);

        inet_ntop(AF_INET, &sa->sin_addr, a, sizeof a);
        if (r == 0)
                fail(name, attack, "connected to %s:%u", a, ntohs(sa->sin_port));
        else if (!errno_in(-r, unreachable, ELEMENTSOF(unreachable)))
                fail(name, attack, "connect to %s:%u failed with %s, not a network refusal", a,
                     ntohs(sa->sin_port), errname(-r));
        else
                pass(name, attack);
}

/* The default gateway from /proc/net/route, network byte order; 0 if none. */
static uint32_t default_gateway(void) {
        static char buf[16384];
        uint32_t gw = 0;

        if (read_file("/proc/net/route", buf, sizeof buf) < 0)
                return 0;
        for (char *line = strchr(buf, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
                char ifname[32];
                unsigned dest, g, flags;
                if (sscanf(line + 1, "%31s %x %x %x", ifname, &dest, &g, &flags) == 4 && dest == 0 &&
                    (flags & 0x2 /* RTF_GATEWAY */))
                        gw = g;
        }
        return gw;
}

/* A writable scratch directory inside the sandbox. */
static const char *scratch_dir(void) {
        static char dir[64];
        static const char *const candidates[] = { "/tmp", "/var/tmp", "/dev/shm" };

        if (dir[0])
                return dir;
        for (size_t i = 0; i < ELEMENTSOF(candidates); i++) {
                snprintf(dir, sizeof dir, "%s/kiln-probe-XXXXXX", candidates[i]);
                /* Traversable: the setuid cases exec from here as an ordinary uid. */
                if (mkdtemp(dir) && chmod(dir, 0755) == 0)
                        return dir;
        }
        dir[0] = 0;
        return NULL;
}

/* ---------------------------------------------------------------------- */
/* Cases: process state                                                   */

static void case_fds(void) {
        const char *name = "fds-closed", *attack = "inherited fds leaking host files and sockets";
        char list[256] = "";

        if (start_fds_overflow) {
                fail(name, attack, "more than %d fds open at start", MAX_FDS);
                return;
        }
        bool ok = n_start_fds == 3;
        for (size_t i = 0; i < n_start_fds; i++) {
                size_t l = strlen(list);
                snprintf(list + l, sizeof list - l, "%s%d", i ? "," : "", start_fds[i]);
                if (start_fds[i] > 2)
                        ok = false;
        }
        if (ok)
                pass(name, attack);
        else
                fail(name, attack, "open at exec: %s, expected exactly 0,1,2", list);
}

static void case_status(void) {
        char v[64];
        int r;

        r = status_field("NoNewPrivs", v, sizeof v);
        if (r < 0)
                fail("no-new-privs", "setuid and file-capability binaries regaining privileges",
                     "no NoNewPrivs in /proc/self/status: %s", errname(-r));
        else if (strcmp(v, "1") != 0)
                fail("no-new-privs", "setuid and file-capability binaries regaining privileges",
                     "NoNewPrivs is %s", v);
        else
                pass("no-new-privs", "setuid and file-capability binaries regaining privileges");

        r = status_field("Seccomp", v, sizeof v);
        if (r < 0)
                fail("seccomp-mode", "running without the system call filter", "no Seccomp field: %s",
                     errname(-r));
        else if (strcmp(v, "2") != 0)
                fail("seccomp-mode", "running without the system call filter", "Seccomp is %s, expected 2", v);
        else
                pass("seccomp-mode", "running without the system call filter");
}

static void case_uid_map(void) {
        const char *name = "uid-map", *attack = "root inside being root on the host";
        char buf[1024];
        int r = read_file("/proc/self/uid_map", buf, sizeof buf);
        bool root_mapped = false, host_root_visible = false;

        if (r < 0) {
                fail(name, attack, "reading /proc/self/uid_map: %s", errname(-r));
                return;
        }
        for (char *line = buf; line && *line;) {
                unsigned long inside, outside, count;
                if (sscanf(line, "%lu %lu %lu", &inside, &outside, &count) == 3) {
                        if (inside == 0)
                                root_mapped = true;
                        if (outside == 0)
                                host_root_visible = true;
                        if (inside == 0 && outside == 0) {
                                fail(name, attack, "uid 0 inside is uid 0 outside");
                                return;
                        }
                }
                line = strchr(line, '\n');
                if (line)
                        line++;
        }
        if (!root_mapped)
                fail(name, attack, "uid 0 is not mapped at all: %s", buf);
        else if (host_root_visible)
                fail(name, attack, "host uid 0 is mapped into the sandbox: %s", buf);
        else if (getuid() != 0)
                fail(name, attack, "the probe is not running as root inside (uid %d)", (int) getuid());
        else
                pass(name, attack);
}

/* The capabilities a job must not hold even inside its user namespace: the
 * ones that would matter the day a namespace check is missing in the kernel
 * (or that reach the kernel directly). Docker's default set has none. */
static void case_caps(void) {
        static const struct {
                int cap;
                const char *name;
        } banned[] = {
                { 2, "CAP_DAC_READ_SEARCH" }, { 12, "CAP_NET_ADMIN" }, { 13, "CAP_NET_RAW" },
                { 16, "CAP_SYS_MODULE" },     { 17, "CAP_SYS_RAWIO" }, { 19, "CAP_SYS_PTRACE" },
                { 21, "CAP_SYS_ADMIN" },      { 22, "CAP_SYS_BOOT" },  { 24, "CAP_SYS_RESOURCE" },
                { 25, "CAP_SYS_TIME" },       { 32, "CAP_MAC_OVERRIDE" }, { 33, "CAP_MAC_ADMIN" },
                { 34, "CAP_SYSLOG" },         { 38, "CAP_PERFMON" },   { 39, "CAP_BPF" },
        };
        static const char *const sets[] = { "CapEff", "CapPrm", "CapBnd", "CapAmb" };
        const char *name = "caps-reduced", *attack = "holding CAP_SYS_ADMIN and friends, even namespaced";

        for (size_t i = 0; i < ELEMENTSOF(sets); i++) {
                char v[64], *end;
                int r = status_field(sets[i], v, sizeof v);
                if (r < 0) {
                        fail(name, attack, "no %s in /proc/self/status: %s", sets[i], errname(-r));
                        return;
                }
                unsigned long long mask = strtoull(v, &end, 16);
                if (*end) {
                        fail(name, attack, "cannot parse %s '%s'", sets[i], v);
                        return;
                }
                for (size_t k = 0; k < ELEMENTSOF(banned); k++)
                        if (mask & (1ULL << banned[k].cap)) {
                                fail(name, attack, "%s holds %s (%s)", sets[i], banned[k].name, v);
                                return;
                        }
        }
        pass(name, attack);
}

/* ---------------------------------------------------------------------- */
/* Cases: mounts and namespaces                                           */

static void case_mounts(void) {
        int r;

        /* EPERM: seccomp, and without it the lack of CAP_SYS_ADMIN over a
         * mount namespace owned by the host's user namespace. */
        r = mount("kiln-probe", "/", "tmpfs", 0, NULL);
        if (r == 0)
                (void) umount2("/", MNT_DETACH);
        EXPECT_FAIL("mount", "mounting a file system over the sandbox root", r, errno, EPERM);

        r = mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL);
        EXPECT_FAIL("remount-rw", "making the read-only /proc/sys writable again", r, errno, EPERM);

        r = umount2("/proc/kcore", MNT_DETACH);
        EXPECT_FAIL("umount-mask", "unmounting the mask over /proc/kcore", r, errno, EPERM);

        r = (int) syscall(SYS_pivot_root, ".", ".");
        EXPECT_FAIL("pivot-root", "swapping the sandbox root for another tree", r, errno, EPERM);

        r = (int) syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */);
        if (r >= 0)
                close(r);
        EXPECT_FAIL("open-tree", "cloning a mount tree with the new mount API", r, errno, EPERM);

        r = (int) syscall(SYS_fsopen, "tmpfs", 0);
        if (r >= 0)
                close(r);
        EXPECT_FAIL("fsopen", "creating a superblock with the new mount API", r, errno, EPERM);
}

static int child_unshare_user(char *msg, size_t size) {
        if (unshare(CLONE_NEWUSER) == 0) {
                snprintf(msg, size, "unshare(CLONE_NEWUSER) succeeded");
                return 1;
        }
        if (errno != EPERM) {
                snprintf(msg, size, "unshare(CLONE_NEWUSER) failed with %s, expected EPERM", errname(errno));
                return 1;
        }
        return 0;
}

static int child_unshare_mnt(char *msg, size_t size) {
        if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID) == 0) {
                snprintf(msg, size, "unshare(CLONE_NEWNS|NEWNET|NEWPID) succeeded");
                return 1;
        }
        if (errno != EPERM) {
                snprintf(msg, size, "unshare failed with %s, expected EPERM", errname(errno));
                return 1;
        }
        return 0;
}

static int child_clone_newuser(char *msg, size_t size) {
        long r = syscall(SYS_clone, (unsigned long) (CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD), 0UL, NULL,
                         NULL, 0UL);
        if (r == 0)
                _exit(0);
        if (r > 0) {
                (void) waitpid((pid_t) r, NULL, 0);
                snprintf(msg, size, "clone(CLONE_NEWUSER|CLONE_NEWNS) created pid %ld", r);
                return 1;
        }
        if (errno != EPERM) {
                snprintf(msg, size, "clone failed with %s, expected EPERM", errname(errno));
                return 1;
        }
        return 0;
}

/* clone3 hides its flags from seccomp in a struct: the filter answers
 * ENOSYS so that libc falls back to clone(), whose flags it can see. */
static int child_clone3(char *msg, size_t size) {
        struct clone_args args = { .flags = CLONE_NEWUSER, .exit_signal = SIGCHLD };
        long r = syscall(SYS_clone3, &args, sizeof args);
        if (r == 0)
                _exit(0);
        if (r > 0) {
                (void) waitpid((pid_t) r, NULL, 0);
                snprintf(msg, size, "clone3(CLONE_NEWUSER) created pid %ld", r);
                return 1;
        }
        if (errno != ENOSYS) {
                snprintf(msg, size, "clone3 failed with %s, expected ENOSYS", errname(errno));
                return 1;
        }
        return 0;
}

static void child_case(const char *name, const char *attack, ChildFn f) {
        char msg[256];
        int r = run_in_child(f, msg, sizeof msg);
        if (r == 0)
                pass(name, attack);
        else
                fail(name, attack, "%s", msg[0] ? msg : "child failed");
}

static void case_namespaces(void) {
        static const char *const ns[] = { "user", "mnt", "pid", "net", "uts", "ipc", "cgroup" };

        child_case("unshare-user", "a new user namespace regaining every capability",
                   child_unshare_user);
        child_case("unshare-ns", "new mount/net/pid namespaces", child_unshare_mnt);
        child_case("clone-newuser", "clone() with CLONE_NEWUSER instead of unshare", child_clone_newuser);
        child_case("clone3", "clone3() hiding namespace flags from the filter", child_clone3);

        /* setns into the sandbox's own namespaces: seccomp says EPERM before
         * the kernel even compares them. */
        for (size_t i = 0; i < ELEMENTSOF(ns); i++) {
                char path[64], name[32];
                snprintf(path, sizeof path, "/proc/self/ns/%s", ns[i]);
                snprintf(name, sizeof name, "setns-%s", ns[i]);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        fail(name, "joining a namespace through an fd", "open %s: %s", path, errname(errno));
                        continue;
                }
                int r = setns(fd, 0);
                EXPECT_FAIL(name, "joining a namespace through an fd", r, errno, EPERM);
                close(fd);
        }

        /* PID 1 is kiln's init: it is not dumpable and its mm belongs to the
         * host's user namespace, so even its namespace links are closed to
         * us (EACCES from the ptrace access check). If a future init were
         * dumpable, setns must still fail: EPERM. */
        for (size_t i = 0; i < ELEMENTSOF(ns); i++) {
                char path[64], name[32];
                snprintf(path, sizeof path, "/proc/1/ns/%s", ns[i]);
                snprintf(name, sizeof name, "setns-init-%s", ns[i]);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        EXPECT_FAIL(name, "joining init's namespaces", fd, errno, EACCES);
                        continue;
                }
                int r = setns(fd, 0);
                EXPECT_FAIL(name, "joining init's namespaces", r, errno, EPERM);
                close(fd);
        }
}

static void case_ptrace_init(void) {
        /* init is not dumpable and was created in the host's user namespace:
         * attaching needs CAP_SYS_PTRACE there. Attaching to it would hand us
         * its control socket to the host. */
        long r = ptrace(PTRACE_ATTACH, 1, NULL, NULL);
        int e = errno;
        if (r == 0) {
                (void) waitpid(1, NULL, __WALL);
                (void) ptrace(PTRACE_DETACH, 1, NULL, NULL);
        }
        EXPECT_FAIL("ptrace-init", "attaching to the sandbox's init (it talks to the host)", r, e, EPERM);
}

/* ---------------------------------------------------------------------- */
/* Cases: the kernel                                                      */

static void case_kernel(void) {
        long r;
        int fd;

        r = syscall(SYS_init_module, NULL, 0UL, "");
        EXPECT_FAIL("init-module", "loading a kernel module", r, errno, EPERM);
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        r = syscall(SYS_finit_module, fd, "", 0);
        EXPECT_FAIL("finit-module", "loading a kernel module from a file", r, errno, EPERM);
        if (fd >= 0)
                close(fd);
        r = syscall(SYS_delete_module, "kiln_probe_nonexistent", O_NONBLOCK);
        EXPECT_FAIL("delete-module", "unloading kernel modules", r, errno, EPERM);

        r = syscall(SYS_kexec_load, 0UL, 0UL, NULL, (unsigned long) KEXEC_ARCH_DEFAULT);
        EXPECT_FAIL("kexec-load", "booting another kernel", r, errno, EPERM);
        r = syscall(SYS_kexec_file_load, -1, -1, 0UL, NULL, (unsigned long) KEXEC_FILE_UNLOAD);
        EXPECT_FAIL("kexec-file-load", "booting another kernel from a file", r, errno, EPERM);

        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        r = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
        if (r >= 0)
                close((int) r);
        EXPECT_FAIL("bpf", "eBPF: verifier bugs and kernel memory reads", r, errno, EPERM);

        struct perf_event_attr pe;
        memset(&pe, 0, sizeof pe);
        pe.type = PERF_TYPE_SOFTWARE;
        pe.size = sizeof pe;
        pe.config = PERF_COUNT_SW_CPU_CLOCK;
        pe.disabled = 1;
        r = syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0UL);
        if (r >= 0)
                close((int) r);
        EXPECT_FAIL("perf-event-open", "perf events: kernel pointer leaks and exploits", r, errno, EPERM);

        r = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "kiln-probe", 0, 0, 0);
        EXPECT_FAIL("keyctl", "reaching keyrings, which are not namespaced", r, errno, EPERM);
        r = syscall(SYS_add_key, "user", "kiln-probe", "x", 1UL, KEY_SPEC_PROCESS_KEYRING);
        EXPECT_FAIL("add-key", "planting keys in kernel keyrings", r, errno, EPERM);

        struct { uint64_t a, b, c; } iou_params[15];
        memset(iou_params, 0, sizeof iou_params);
        r = syscall(SYS_io_uring_setup, 1, iou_params);
        if (r >= 0)
                close((int) r);
        EXPECT_FAIL("io-uring", "io_uring: a syscall side door with a long CVE history", r, errno, EPERM);

        struct { unsigned int bytes; int type; unsigned char h[128]; } fh;
        memset(&fh, 0, sizeof fh);
        fh.bytes = 8;
        fh.type = 1;
        r = syscall(SYS_open_by_handle_at, AT_FDCWD, &fh, O_RDONLY);
        if (r >= 0)
                close((int) r);
        EXPECT_FAIL("open-by-handle", "opening host inodes by file handle ('shocker')", r, errno, EPERM);

        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = clock_settime(CLOCK_REALTIME, &ts);
        EXPECT_FAIL("clock-settime", "setting the host's clock", r, errno, EPERM);

        /* CAD_OFF is harmless even if it went through. */
        r = reboot(RB_DISABLE_CAD);
        EXPECT_FAIL("reboot", "rebooting the host", r, errno, EPERM);

        r = syscall(SYS_syslog, 3 /* SYSLOG_ACTION_READ_ALL */, NULL, 0);
        EXPECT_FAIL("syslog", "reading the kernel log (kernel addresses)", r, errno, EPERM);

        r = personality(ADDR_NO_RANDOMIZE);
        EXPECT_FAIL("personality", "switching off ASLR or other mitigations", r, errno, EPERM);

        /* mknod of a character device needs CAP_MKNOD in the host's user
         * namespace: EPERM, in a directory we may write to. */
        const char *dir = scratch_dir();
        if (!dir)
                fail("mknod", "creating a /dev/mem device node", "no writable scratch directory");
        else {
                char path[128];
                snprintf(path, sizeof path, "%s/mem", dir);
                r = mknod(path, S_IFCHR | 0600, makedev(1, 1));
                if (r == 0)
                        (void) unlink(path);
                EXPECT_FAIL("mknod", "creating a /dev/mem device node", r, errno, EPERM);
        }
}

#if defined(__x86_64__)
static long int80(long nr, long a, long b, long c) {
        long r;
        __asm__ volatile("int $0x80"
                         : "=a"(r)
                         : "a"(nr), "b"(a), "c"(b), "d"(c)
                         : "memory", "r8", "r9", "r10", "r11", "cc");
        return r;
}

static void case_compat_abi(void) {
        const char *attack = "the same calls through the 32-bit int 0x80 entry";

        /* i386: getpid 20, mount 21, unshare 310. The kernel returns -errno.
         * Tried first in a child: a kernel without ia32 emulation answers
         * int 0x80 with a general protection fault (SIGSEGV). */
        pid_t pid = fork();
        if (pid == 0)
                _exit(int80(20, 0, 0, 0) == getpid() ? 0 : 1);
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid) {
                fail("int80-mount", attack, "could not try int 0x80 in a child: %s", strerror(errno));
                fail("int80-unshare", attack, "could not try int 0x80 in a child");
                return;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                /* ia32 emulation switched off: the bypass does not exist. */
                pass("int80-mount", attack);
                pass("int80-unshare", attack);
                return;
        }
        long r = int80(21, 0, 0, 0);
        if (r == -EPERM)
                pass("int80-mount", attack);
        else
                fail("int80-mount", attack, "i386 mount returned %ld, expected -EPERM", r);
        r = int80(310, CLONE_NEWUSER, 0, 0);
        if (r == -EPERM)
                pass("int80-unshare", attack);
        else
                fail("int80-unshare", attack, "i386 unshare(CLONE_NEWUSER) returned %ld, expected -EPERM", r);
}
#endif

/* ---------------------------------------------------------------------- */
/* Cases: /proc, /sys, /dev                                               */

/* A write to a host-root-owned /proc file: EACCES (owner unmapped in our user
 * namespace, so CAP_DAC_OVERRIDE does not apply) or EROFS (a read-only
 * superblock). kiln also bind-mounts these read-only, which the kernel only
 * checks after the permission check, so EACCES is what it answers today.
 * ENOENT: the kernel has no such file (CONFIG_MAGIC_SYSRQ, CONFIG_MODULES
 * off); nothing can be written to a file that does not exist. */
static void expect_no_write(const char *name, const char *attack, const char *path) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
                bool masked = is_dev_null(fd);
                close(fd);
                if (masked)
                        pass(name, attack); /* masked by /dev/null: writes go nowhere */
                else
                        fail(name, attack, "%s opened for writing", path);
                return;
        }
        EXPECT_FAIL(name, attack, fd, errno, EACCES, EROFS, ENOENT);
}

static void case_proc(void) {
        expect_no_write("sysrq-trigger", "crashing or rebooting the host via /proc/sysrq-trigger",
                        "/proc/sysrq-trigger");
        expect_no_write("core-pattern", "running a host program via /proc/sys/kernel/core_pattern",
                        "/proc/sys/kernel/core_pattern");
        expect_no_write("modprobe-path", "running a host program via /proc/sys/kernel/modprobe",
                        "/proc/sys/kernel/modprobe");

        /* /proc/kcore is the host's memory. Masked by a /dev/null bind, or
         * unreadable (EACCES, owner unmapped), or absent (ENOENT: a kernel
         * without CONFIG_PROC_KCORE). */
        int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                bool masked = is_dev_null(fd);
                close(fd);
                if (masked)
                        pass("proc-kcore", "reading host memory through /proc/kcore");
                else
                        fail("proc-kcore", "reading host memory through /proc/kcore", "opened, not masked");
        } else
                EXPECT_FAIL("proc-kcore", "reading host memory through /proc/kcore", fd, errno, EACCES, ENOENT);

        /* The host's kiln binary through init's exe link (runc CVE-2019-5736).
         * init is not dumpable: EACCES from the ptrace access check. ETXTBSY
         * would not do: it only holds while init runs. */
        fd = open("/proc/1/exe", O_WRONLY | O_CLOEXEC);
        if (fd >= 0)
                close(fd);
        EXPECT_FAIL("proc1-exe", "overwriting the host's kiln binary via /proc/1/exe", fd, errno, EACCES);

        /* Our own binary: on a plain read-only bind it is host-root-owned
         * (EACCES) or read-only (EROFS); from an image it is the image's file
         * behind the overlay: ETXTBSY while it runs. Should it open, only an
         * overlay is acceptable: the write would be copied up into this
         * sandbox's own layer, never into the shared image. */
        fd = open("/proc/self/exe", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
                struct statfs sf;
                bool overlay = fstatfs(fd, &sf) == 0 && sf.f_type == OVERLAYFS_SUPER_MAGIC;
                close(fd);
                if (overlay)
                        pass("proc-self-exe", "overwriting the probe's own binary for whoever runs it next");
                else
                        fail("proc-self-exe", "overwriting the probe's own binary for whoever runs it next",
                             "opened for writing outside an overlay");
        } else
                EXPECT_FAIL("proc-self-exe", "overwriting the probe's own binary for whoever runs it next", fd,
                            errno, EACCES, EROFS, ETXTBSY);
}

static void case_sys(void) {
        static const char *const knobs[] = {
                "/sys/kernel/uevent_helper", "/sys/kernel/profiling", "/sys/kernel/rcu_expedited",
                "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/power/state",
        };
        const char *attack = "changing host kernel settings through /sys";
        struct statfs sf;
        struct statvfs sv;

        /* The design mounts /sys read-only. */
        if (statfs("/sys", &sf) < 0 || sf.f_type != SYSFS_MAGIC)
                fail("sys-readonly", "remounting or writing /sys", "/sys is not a sysfs mount");
        else if (statvfs("/sys", &sv) < 0)
                fail("sys-readonly", "remounting or writing /sys", "statvfs: %s", errname(errno));
        else if (!(sv.f_flag & ST_RDONLY))
                fail("sys-readonly", "remounting or writing /sys", "/sys is mounted read-write");
        else
                pass("sys-readonly", "remounting or writing /sys");

        bool tried = false;
        for (size_t i = 0; i < ELEMENTSOF(knobs) && !tried; i++) {
                if (access(knobs[i], F_OK) < 0)
                        continue;
                tried = true;
                /* EROFS from the read-only sysfs superblock, or EACCES (the knob
                 * is owned by host root, unmapped here) if the superblock is
                 * shared and only the mount is read-only. */
                int fd = open(knobs[i], O_WRONLY | O_CLOEXEC);
                if (fd >= 0)
                        close(fd);
                EXPECT_FAIL("sys-write", attack, fd, errno, EROFS, EACCES);
        }
        if (!tried)
                fail("sys-write", attack, "none of the known /sys knobs is visible: cannot test");

        /* cgroup v1 release_agent (CVE-2022-0492): runs a program as host root. */
        glob_t g;
        memset(&g, 0, sizeof g);
        (void) glob("/sys/fs/cgroup/*/release_agent", 0, NULL, &g);
        (void) glob("/sys/fs/cgroup/release_agent", GLOB_APPEND, NULL, &g);
        bool ok = true;
        for (size_t i = 0; i < g.gl_pathc; i++) {
                int fd = open(g.gl_pathv[i], O_WRONLY | O_CLOEXEC);
                if (fd >= 0) {
                        close(fd);
                        fail("release-agent", "cgroup v1 release_agent running a host program",
                             "%s opened for writing", g.gl_pathv[i]);
                        ok = false;
                        break;
                }
                if (errno != EROFS && errno != EACCES) {
                        fail("release-agent", "cgroup v1 release_agent running a host program",
                             "%s: %s, expected EROFS or EACCES", g.gl_pathv[i], errname(errno));
                        ok = false;
                        break;
                }
        }
        globfree(&g);
        if (ok)
                pass("release-agent", "cgroup v1 release_agent running a host program");
}

static void case_dev(void) {
        static const char *const devs[] = { "/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg" };

        /* A minimal /dev: none of these exist. */
        for (size_t i = 0; i < ELEMENTSOF(devs); i++) {
                char name[32];
                snprintf(name, sizeof name, "dev-%s", devs[i] + 5);
                int fd = open(devs[i], O_RDONLY | O_CLOEXEC);
                if (fd >= 0)
                        close(fd);
                EXPECT_FAIL(name, "host devices in the sandbox's /dev", fd, errno, ENOENT);
        }
}

static void case_tty(void) {
        const char *attack = "TIOCSTI: typing commands into the host's terminal";
        long r;

        /* A NULL character pointer: were the ioctl let through, the kernel
         * would fail to read it (EFAULT) and inject nothing. The filter
         * answers EPERM whatever the fd is. */
        for (int fd = 0; fd <= 2; fd++) {
                char name[32];
                snprintf(name, sizeof name, "tiocsti-fd%d", fd);
                r = ioctl(fd, TIOCSTI, NULL);
                EXPECT_FAIL(name, attack, r, errno, EPERM);
        }
        /* The kernel reads the request as 32 bits: the upper half is noise. */
        r = syscall(SYS_ioctl, 0, (1UL << 32) | TIOCSTI, NULL);
        EXPECT_FAIL("tiocsti-highbits", "TIOCSTI disguised with the upper 32 bits set", r, errno, EPERM);
        r = ioctl(0, TIOCLINUX, NULL);
        EXPECT_FAIL("tioclinux", "TIOCLINUX: pasting into a host virtual console", r, errno, EPERM);

        /* Commands lead a new session with no controlling terminal: ENXIO. */
        int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                EXPECT_FAIL("tiocsti-dev-tty", attack, fd, errno, ENXIO);
        else {
                r = ioctl(fd, TIOCSTI, NULL);
                EXPECT_FAIL("tiocsti-dev-tty", attack, r, errno, EPERM);
                close(fd);
        }
}

/* ---------------------------------------------------------------------- */
/* Cases: network                                                         */

static void case_network(void) {
        int fd;

        /* CAP_NET_RAW over a network namespace owned by the host's user
         * namespace: EPERM (AF_PACKET checks before the protocol). */
        fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
        if (fd >= 0)
                close(fd);
        EXPECT_FAIL("raw-packet", "sniffing or spoofing frames with AF_PACKET", fd, errno, EPERM);
        fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd >= 0)
                close(fd);
        EXPECT_FAIL("raw-inet", "spoofing IP packets with a raw socket", fd, errno, EPERM);

        if (opt.host_port > 0) {
                struct sockaddr_in sa = {
                        .sin_family = AF_INET,
                        .sin_port = htons((uint16_t) opt.host_port),
                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                };
                /* Our own loopback: ECONNREFUSED, since nothing listens there. */
                int r = connect_timeout(&sa);
                EXPECT_FAIL("host-loopback", "reaching a service on the host's loopback", r, -r, ECONNREFUSED);
        }

        for (size_t i = 0; i < opt.n_host_addrs; i++) {
                struct sockaddr_in sa;
                if (parse_addr(opt.host_addrs[i], &sa) < 0) {
                        fail("host-addr", "reaching the host through its own addresses", "bad address '%s'",
                             opt.host_addrs[i]);
                        continue;
                }
                expect_unreachable("host-addr", "reaching the host through its own addresses", &sa);
        }

        uint32_t gw = default_gateway();
        if (opt.network == NET_NONE) {
                if (gw != 0)
                        fail("no-route", "reaching any network with --network none",
                             "a default route exists");
                else {
                        struct sockaddr_in sa = {
                                .sin_family = AF_INET, .sin_port = htons(80),
                                .sin_addr.s_addr = htonl(0x01010101),
                        };
                        int r = connect_timeout(&sa);
                        EXPECT_FAIL("no-route", "reaching any network with --network none", r, -r, ENETUNREACH);
                }
        } else if (opt.host_port > 0) {
                /* The host end of the veth pair is a host address too. */
                if (gw == 0)
                        fail("host-gateway", "reaching host services through the NAT gateway address",
                             "no default route with --network nat");
                else {
                        struct sockaddr_in sa = {
                                .sin_family = AF_INET,
                                .sin_port = htons((uint16_t) opt.host_port),
                                .sin_addr.s_addr = gw,
                        };
                        expect_unreachable("host-gateway",
                                           "reaching host services through the NAT gateway address", &sa);
                }
        }

        struct sockaddr_in md = {
                .sin_family = AF_INET, .sin_port = htons(80), .sin_addr.s_addr = htonl(0xa9fea9fe),
        };
        expect_unreachable("metadata", "reaching the cloud metadata service (169.254.169.254)", &md);
}

/* ---------------------------------------------------------------------- */
/* Cases: processes and files of the host                                 */

static void case_pids(void) {
        const char *name = "pid-namespace", *attack = "seeing and signalling host processes";
        DIR *d = opendir("/proc");
        unsigned n = 0;
        struct dirent *de;

        if (!d) {
                fail(name, attack, "opendir /proc: %s", errname(errno));
        } else {
                while ((de = readdir(d)))
                        if (de->d_name[0] >= '1' && de->d_name[0] <= '9')
                                n++;
                closedir(d);
                /* init, the probe, perhaps a child of an earlier case being
                 * reaped: a handful, never the host's hundreds. */
                if (n == 0 || n > 8)
                        fail(name, attack, "%u processes visible in /proc", n);
                else
                        pass(name, attack);
        }

        if (opt.host_pid > 0) {
                char path[64];
                struct stat st;
                snprintf(path, sizeof path, "/proc/%d", (int) opt.host_pid);
                int r = stat(path, &st);
                EXPECT_FAIL("host-pid-proc", "finding a host process in /proc", r, errno, ENOENT);
                r = kill(opt.host_pid, 0);
                EXPECT_FAIL("host-pid-kill", "signalling a host process", r, errno, ESRCH);
        }
}

static void case_host_files(void) {
        for (size_t i = 0; i < opt.n_host_files; i++) {
                int fd = open(opt.host_files[i], O_RDONLY | O_CLOEXEC);
                if (fd >= 0)
                        close(fd);
                EXPECT_FAIL("host-file", "reading host files outside the image", fd, errno, ENOENT);
        }
}

/* The classic double-chroot breakout: chroot into a subdirectory while
 * keeping a cwd outside it, walk up, chroot("."). It may only ever reach the
 * root of our own mount namespace, which pivot_root made the sandbox root. */
static int child_chroot_breakout(char *msg, size_t size) {
        struct stat before, after;
        const char *dir = scratch_dir();
        char sub[128];

        if (!dir) {
                snprintf(msg, size, "no writable scratch directory");
                return 1;
        }
        if (stat("/", &before) < 0) {
                snprintf(msg, size, "stat /: %s", errname(errno));
                return 1;
        }
        snprintf(sub, sizeof sub, "%s/jail", dir);
        if (mkdir(sub, 0700) < 0 && errno != EEXIST) {
                snprintf(msg, size, "mkdir %s: %s", sub, errname(errno));
                return 1;
        }
        if (chdir("/") < 0 || chroot(sub) < 0) {
                if (errno == EPERM)
                        return 0; /* chroot denied outright: nothing to break out of */
                snprintf(msg, size, "chroot: %s", errname(errno));
                return 1;
        }
        for (int i = 0; i < 256; i++)
                if (chdir("..") < 0)
                        break;
        if (chroot(".") < 0 || stat("/", &after) < 0) {
                snprintf(msg, size, "second chroot: %s", errname(errno));
                return 1;
        }
        if (before.st_dev != after.st_dev || before.st_ino != after.st_ino) {
                snprintf(msg, size, "reached a different root (dev %lu ino %lu)", (unsigned long) after.st_dev,
                         (unsigned long) after.st_ino);
                return 1;
        }
        return 0;
}

/* ---------------------------------------------------------------------- */
/* Cases: setuid binaries                                                 */

/* Drops to DROP_UID, execs path --print-euid and returns the euid it
 * printed, or -errno with msg set. */
static int run_setuid(const char *path, char *msg, size_t size) {
        int p[2], status;
        char buf[64] = "";
        pid_t pid;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        fflush(stdout);
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                (void) dup2(p[1], 1);
                if (setgroups(0, NULL) < 0 || setresgid(DROP_UID, DROP_UID, DROP_UID) < 0 ||
                    setresuid(DROP_UID, DROP_UID, DROP_UID) < 0) {
                        printf("drop-failed %d\n", errno);
                        fflush(stdout);
                        _exit(2);
                }
                execl(path, path, "--print-euid", (char *) NULL);
                printf("exec-failed %d\n", errno);
                fflush(stdout);
                _exit(3);
        }
        close(p[1]);
        ssize_t n = read(p[0], buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        close(p[0]);
        (void) waitpid(pid, &status, 0);

        int v;
        if (sscanf(buf, "euid=%d", &v) == 1)
                return v;
        if (sscanf(buf, "drop-failed %d", &v) == 1) {
                snprintf(msg, size, "could not become uid %d: %s (is it mapped?)", DROP_UID, errname(v));
                return -v;
        }
        if (sscanf(buf, "exec-failed %d", &v) == 1) {
                snprintf(msg, size, "exec %s: %s", path, errname(v));
                return -v;
        }
        snprintf(msg, size, "helper printed '%s'", buf);
        return -EBADMSG;
}

static void expect_setuid_ignored(const char *name, const char *attack, const char *path) {
        char msg[256] = "";
        struct stat st;

        if (stat(path, &st) < 0) {
                fail(name, attack, "stat %s: %s", path, errname(errno));
                return;
        }
        /* The case only proves something if the binary is setuid root as seen
         * from inside. */
        if (!(st.st_mode & S_ISUID) || st.st_uid != 0) {
                fail(name, attack, "%s is not setuid root inside (owner %u, mode %o): test set-up", path,
                     (unsigned) st.st_uid, (unsigned) st.st_mode & 07777);
                return;
        }
        int euid = run_setuid(path, msg, sizeof msg);
        if (euid < 0)
                fail(name, attack, "%s", msg);
        else if (euid != DROP_UID)
                fail(name, attack, "the setuid binary ran with euid %d", euid);
        else
                pass(name, attack);
}

/* A setuid-root copy of ourselves, made by root inside in the writable layer:
 * owned by a uid the user namespace maps, so only no_new_privs and nosuid
 * stand between it and euid 0. */
static void case_setuid_self(void) {
        const char *name = "setuid-self", *attack = "a setuid-root binary made inside raising a user to root";
        const char *dir = scratch_dir();
        char path[128], buf[65536];
        int in, out;
        ssize_t n;

        if (!dir) {
                fail(name, attack, "no writable scratch directory");
                return;
        }
        snprintf(path, sizeof path, "%s/suid-probe", dir);
        in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
        if (in < 0 || out < 0) {
                fail(name, attack, "copying the probe to %s: %s", path, errname(errno));
                if (in >= 0)
                        close(in);
                if (out >= 0)
                        close(out);
                return;
        }
        while ((n = read(in, buf, sizeof buf)) > 0)
                if (write(out, buf, (size_t) n) != n) {
                        n = -1;
                        break;
                }
        close(in);
        if (n < 0 || fchown(out, 0, 0) < 0 || fchmod(out, 04755) < 0) {
                fail(name, attack, "preparing %s: %s", path, errname(errno));
                close(out);
                return;
        }
        close(out);
        expect_setuid_ignored(name, attack, path);
        (void) unlink(path);
}

/* ---------------------------------------------------------------------- */
/* Modes                                                                  */

static int mode_kill_all(void) {
        const char *name = "kill-all", *attack = "kill -9 -1 reaching processes outside the sandbox";
        int status;
        pid_t victim;

        fflush(stdout);
        victim = fork();
        if (victim < 0) {
                fail(name, attack, "fork: %s", errname(errno));
                return 1;
        }
        if (victim == 0) {
                for (;;)
                        pause();
        }
        /* kill(-1) signals everything we may signal but ourselves and the pid
         * namespace's init; the caller checks that its host process lived. */
        if (kill(-1, SIGKILL) < 0) {
                fail(name, attack, "kill(-1, SIGKILL): %s", errname(errno));
                return 1;
        }
        if (waitpid(victim, &status, 0) != victim || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
                fail(name, attack, "our own child was not killed: kill(-1) did nothing at all");
                return 1;
        }
        pass(name, attack);
        printf("escape-probe: %u passed, %u failed\n", n_pass, n_fail);
        return n_fail ? 1 : 0;
}

static int mode_print_euid(void) {
        printf("euid=%d\n", (int) geteuid());
        return 0;
}

/* ---------------------------------------------------------------------- */

static void scan_start_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;

        if (!d) {
                start_fds_overflow = true;
                return;
        }
        while ((de = readdir(d))) {
                char *end;
                long fd = strtol(de->d_name, &end, 10);
                if (de->d_name[0] == '.' || *end)
                        continue;
                if (fd == dirfd(d))
                        continue;
                if (n_start_fds >= MAX_FDS) {
                        start_fds_overflow = true;
                        break;
                }
                start_fds[n_start_fds++] = (int) fd;
        }
        closedir(d);
        /* readdir order is not numeric. */
        for (size_t i = 1; i < n_start_fds; i++)
                for (size_t j = i; j > 0 && start_fds[j - 1] > start_fds[j]; j--) {
                        int t = start_fds[j];
                        start_fds[j] = start_fds[j - 1];
                        start_fds[j - 1] = t;
                }
}

static void usage(void) {
        fprintf(stderr,
                "Usage: escape-probe [--network none|nat] [--host-port N] [--host-addr IP:PORT]…\n"
                "                    [--host-pid PID] [--host-file PATH]… [--setuid-bin PATH] [--list]\n"
                "       escape-probe --kill-all | --print-euid\n");
}

static int parse_args(int argc, char **argv) {
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                char *end;

                if (strcmp(a, "--list") == 0) {
                        opt.list = true;
                        continue;
                }
                if (!v)
                        return -EINVAL;
                i++;
                if (strcmp(a, "--network") == 0) {
                        if (strcmp(v, "none") == 0)
                                opt.network = NET_NONE;
                        else if (strcmp(v, "nat") == 0)
                                opt.network = NET_NAT;
                        else
                                return -EINVAL;
                } else if (strcmp(a, "--host-port") == 0) {
                        long p = strtol(v, &end, 10);
                        if (*end || p <= 0 || p > 65535)
                                return -EINVAL;
                        opt.host_port = (int) p;
                } else if (strcmp(a, "--host-addr") == 0) {
                        if (opt.n_host_addrs >= MAX_ADDRS)
                                return -E2BIG;
                        opt.host_addrs[opt.n_host_addrs++] = (char *) v;
                } else if (strcmp(a, "--host-pid") == 0) {
                        long p = strtol(v, &end, 10);
                        if (*end || p <= 0 || p > 4194304)
                                return -EINVAL;
                        opt.host_pid = (pid_t) p;
                } else if (strcmp(a, "--host-file") == 0) {
                        if (opt.n_host_files >= MAX_ADDRS)
                                return -E2BIG;
                        opt.host_files[opt.n_host_files++] = (char *) v;
                } else if (strcmp(a, "--setuid-bin") == 0)
                        opt.setuid_bin = v;
                else
                        return -EINVAL;
        }
        return 0;
}

/* Case names in the order the battery reports them, for --list: one entry
 * per PASS/FAIL line. Keep in step with the cases above. */
static void list_cases(void) {
        static const char *const fixed[] = {
                "fds-closed", "no-new-privs", "seccomp-mode", "uid-map", "caps-reduced",
                "mount", "remount-rw", "umount-mask", "pivot-root", "open-tree", "fsopen",
                "unshare-user", "unshare-ns", "clone-newuser", "clone3",
                "setns-user", "setns-mnt", "setns-pid", "setns-net", "setns-uts", "setns-ipc", "setns-cgroup",
                "setns-init-user", "setns-init-mnt", "setns-init-pid", "setns-init-net", "setns-init-uts",
                "setns-init-ipc", "setns-init-cgroup", "ptrace-init",
                "init-module", "finit-module", "delete-module", "kexec-load", "kexec-file-load", "bpf",
                "perf-event-open", "keyctl", "add-key", "io-uring", "open-by-handle", "clock-settime",
                "reboot", "syslog", "personality", "mknod",
#if defined(__x86_64__)
                "int80-mount", "int80-unshare",
#endif
                "sysrq-trigger", "core-pattern", "modprobe-path", "proc-kcore", "proc1-exe", "proc-self-exe",
                "sys-readonly", "sys-write", "release-agent",
                "dev-mem", "dev-kmem", "dev-port", "dev-kmsg",
                "tiocsti-fd0", "tiocsti-fd1", "tiocsti-fd2", "tiocsti-highbits", "tioclinux", "tiocsti-dev-tty",
                "raw-packet", "raw-inet",
        };
        for (size_t i = 0; i < ELEMENTSOF(fixed); i++)
                printf("%s\n", fixed[i]);
        if (opt.host_port > 0)
                printf("host-loopback\n");
        for (size_t i = 0; i < opt.n_host_addrs; i++)
                printf("host-addr\n");
        if (opt.network == NET_NONE)
                printf("no-route\n");
        else if (opt.host_port > 0)
                printf("host-gateway\n");
        printf("metadata\npid-namespace\n");
        if (opt.host_pid > 0)
                printf("host-pid-proc\nhost-pid-kill\n");
        for (size_t i = 0; i < opt.n_host_files; i++)
                printf("host-file\n");
        printf("chroot-breakout\n");
        if (opt.setuid_bin)
                printf("setuid-bin\n");
        printf("setuid-self\n");
}

int main(int argc, char **argv) {
        /* Before anything else opens an fd. */
        scan_start_fds();

        if (argc == 2 && strcmp(argv[1], "--print-euid") == 0)
                return mode_print_euid();
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (argc == 2 && strcmp(argv[1], "--kill-all") == 0)
                return mode_kill_all();
        if (parse_args(argc, argv) < 0) {
                usage();
                return 2;
        }
        if (opt.list) {
                list_cases();
                return 0;
        }

        case_fds();
        case_status();
        case_uid_map();
        case_caps();
        case_mounts();
        case_namespaces();
        case_ptrace_init();
        case_kernel();
#if defined(__x86_64__)
        case_compat_abi();
#endif
        case_proc();
        case_sys();
        case_dev();
        case_tty();
        case_network();
        case_pids();
        case_host_files();
        child_case("chroot-breakout", "the double-chroot breakout to the host's root", child_chroot_breakout);
        if (opt.setuid_bin)
                expect_setuid_ignored("setuid-bin", "a setuid-root binary in the image raising a user to root",
                                      opt.setuid_bin);
        case_setuid_self();

        const char *dir = scratch_dir();
        if (dir) {
                char path[128];
                snprintf(path, sizeof path, "%s/jail", dir);
                (void) rmdir(path);
                (void) rmdir(dir);
        }
        printf("escape-probe: %u passed, %u failed\n", n_pass, n_fail);
        return n_fail ? 1 : 0;
}
