/* SPDX-License-Identifier: MIT */
/* Loads kiln's default seccomp filter into a forked child and checks, call by
 * call, that the deny list answers with its errno and that ordinary work
 * (fork, threads, exec, files, terminals, sockets, ptrace) still runs.
 *
 * Every denied call is made with arguments for which the unfiltered kernel
 * answers something else (EFAULT, EBADF, EINVAL, ENOENT…), so a rule that is
 * missing shows up as a wrong errno and not as a silent pass. No root needed:
 * no_new_privs makes loading a filter unprivileged. Run as root, every row is
 * discriminating (checked by running them unfiltered); run unprivileged, the
 * kernel's own capability checks answer EPERM first for a few (pivot_root,
 * the new mount API, swapon, reboot, acct, syslog, settimeofday), so those
 * rows only have teeth under root, which is how CI runs the suite. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "macro.h"
#include "seccomp.h"
#include "test.h"

#define CHECK_ERRNO(expected, call)                                                         \
        do {                                                                                \
                errno = 0;                                                                  \
                long _r = (long) (call);                                                    \
                int _e = errno;                                                             \
                if (_r != -1 || _e != (expected)) {                                         \
                        fprintf(stderr, "%s:%d: %s returned %ld errno %d (%s), expected %s\n", \
                                __FILE__, __LINE__, #call, _r, _e, strerror(_e), #expected); \
                        exit(1);                                                            \
                }                                                                           \
        } while (0)

#define CHECK_OK(call)                                                                      \
        do {                                                                                \
                errno = 0;                                                                  \
                long _r = (long) (call);                                                    \
                if (_r < 0) {                                                               \
                        fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, \
                                strerror(errno));                                           \
                        exit(1);                                                            \
                }                                                                           \
        } while (0)

static int wait_exit_code(pid_t pid) {
        int status;

        CHECK(waitpid(pid, &status, 0) == pid);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return WEXITSTATUS(status);
}

/* clone() the raw way: without a new stack, like fork(). Returns in both. */
static long raw_clone(unsigned long flags) {
        return syscall(SYS_clone, flags, 0UL, NULL, NULL, 0UL);
}

static void check_denied_native(void) {
        int p[2];

        CHECK_OK(pipe2(p, O_CLOEXEC));

        /* Mount table. */
        CHECK_ERRNO(EPERM, syscall(SYS_mount, "none", "/kiln-nonexistent", "tmpfs", 0UL, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_umount2, "/kiln-nonexistent", 0));
        CHECK_ERRNO(EPERM, syscall(SYS_pivot_root, "/kiln-nonexistent", "/kiln-nonexistent"));
        CHECK_ERRNO(EPERM, syscall(SYS_fsopen, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_fsconfig, -1, 0, NULL, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_fsmount, -1, 0, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_fspick, -1, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_move_mount, -1, NULL, -1, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_open_tree, -1, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_mount_setattr, -1, NULL, 0, NULL, 0));

        /* Kernel code and state. */
        CHECK_ERRNO(EPERM, syscall(SYS_init_module, NULL, 0UL, ""));
        CHECK_ERRNO(EPERM, syscall(SYS_finit_module, -1, "", 0));
        CHECK_ERRNO(EPERM, syscall(SYS_delete_module, "kiln_nonexistent", O_NONBLOCK));
        CHECK_ERRNO(EPERM, syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0xdead0000UL));
        CHECK_ERRNO(EPERM, syscall(SYS_kexec_file_load, -1, -1, 0UL, NULL, 0xdead0000UL));
        CHECK_ERRNO(EPERM, syscall(SYS_bpf, -1, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0UL));
        CHECK_ERRNO(EPERM, syscall(SYS_lookup_dcookie, 0ULL, NULL, 0UL));
        CHECK_ERRNO(EPERM, syscall(SYS_syslog, -1, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_io_uring_setup, 0, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_io_uring_register, -1, 0, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_userfaultfd, ~0));
        CHECK_ERRNO(EPERM, syscall(SYS_keyctl, -1, 0, 0, 0, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_add_key, NULL, NULL, NULL, 0, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_request_key, NULL, NULL, NULL, 0));

        /* Terminal injection, including the upper-32-bit disguise; the pipe
         * is not a tty, so the unfiltered kernel would say ENOTTY. */
        CHECK_ERRNO(EPERM, ioctl(p[0], TIOCSTI, NULL));
        CHECK_ERRNO(EPERM, ioctl(p[0], TIOCLINUX, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_ioctl, p[0], (1UL << 32) | TIOCSTI, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_ioctl, p[0], (0xffffffffUL << 32) | TIOCLINUX, NULL));

        /* File handles. */
        CHECK_ERRNO(EPERM, syscall(SYS_open_by_handle_at, -1, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_name_to_handle_at, -1, NULL, NULL, NULL, 0));

        /* Machine-wide state. */
        CHECK_ERRNO(EPERM, syscall(SYS_swapon, NULL, 0));
        CHECK_ERRNO(EPERM, syscall(SYS_swapoff, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_reboot, 0, 0, 0, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_acct, "/kiln-nonexistent"));
        CHECK_ERRNO(EPERM, syscall(SYS_quotactl, 0, NULL, 0, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_quotactl_fd, -1, 0, 0, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_nfsservctl, 0, NULL, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS__sysctl, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_settimeofday, NULL, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_clock_settime, -1, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_clock_adjtime, -1, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_adjtimex, NULL));
        CHECK_ERRNO(EPERM, syscall(SYS_iopl, 99));
        CHECK_ERRNO(EPERM, syscall(SYS_ioperm, 0x10000UL, 1UL, 1));
        CHECK_ERRNO(EPERM, syscall(SYS_uselib, NULL));

        /* personality: only Docker's five values pass. */
        CHECK_ERRNO(EPERM, personality(ADDR_NO_RANDOMIZE));
        CHECK_ERRNO(EPERM, personality(READ_IMPLIES_EXEC));
        CHECK_ERRNO(EPERM, personality(PER_LINUX32 | ADDR_NO_RANDOMIZE));
        CHECK_ERRNO(EPERM, syscall(SYS_personality, (1UL << 32) | ADDR_NO_RANDOMIZE));

        close(p[0]);
        close(p[1]);
}

/* Last: without the filter (a missing rule, as root) these would leave the
 * process in new namespaces and change what every later check sees. */
static void check_denied_namespaces(void) {
        /* Namespaces. unshare is denied whole, even with harmless flags. */
        CHECK_ERRNO(EPERM, unshare(CLONE_NEWUSER));
        CHECK_ERRNO(EPERM, unshare(CLONE_NEWNS));
        CHECK_ERRNO(EPERM, unshare(CLONE_FILES));
        CHECK_ERRNO(EPERM, setns(-1, 0));
        static const unsigned long ns_flags[] = {
                CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
                CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
        };
        for (size_t i = 0; i < ELEMENTSOF(ns_flags); i++) {
                long r = raw_clone(ns_flags[i] | SIGCHLD);
                if (r == 0)
                        _exit(0);
                if (r > 0)
                        (void) wait_exit_code((pid_t) r);
                CHECK_EQ_INT(r, -1);
                CHECK_EQ_INT(errno, EPERM);
        }
        /* Other flags next to a namespace flag do not hide it. */
        CHECK_ERRNO(EPERM, raw_clone(CLONE_NEWUSER | CLONE_FILES | CLONE_FS | SIGCHLD));
        CHECK_ERRNO(ENOSYS, syscall(SYS_clone3, NULL, 0));
}

#if defined(__x86_64__)
/* The i386 entry point, reachable from any 64-bit process through int 0x80. */
static long int80(long nr, long a, long b, long c, long d, long e) {
        long r;
        /* i386 arguments: ebx, ecx, edx, esi, edi. The 64-bit kernel clears
         * r8-r11 on this path. */
        __asm__ volatile("int $0x80"
                         : "=a"(r)
                         : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                         : "memory", "r8", "r9", "r10", "r11", "cc");
        return r;
}

/* A kernel without ia32 emulation answers int 0x80 with a general protection
 * fault (SIGSEGV), or, on older ones, with -ENOSYS: tried in a child. */
static bool ia32_available(void) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
                _exit(int80(20, 0, 0, 0, 0, 0) == getpid() ? 0 : 1);
        return wait_exit_code(pid) == 0;
}

static void check_denied_i386(void) {
        /* i386 numbers: getpid 20, mount 21, umount 22, personality 136,
         * unshare 310, setns 346, kexec_load 283, bpf 357, clone 120,
         * init_module 128, clock_settime64 404, vm86 166. The kernel returns
         * -errno in eax. */
        CHECK_EQ_INT(int80(21, 0, 0, 0, 0, 0), -EPERM);
        CHECK_EQ_INT(int80(22, 0, 0, 0, 0, 0), -EPERM);
        CHECK_EQ_INT(int80(310, CLONE_NEWUSER, 0, 0, 0, 0), -EPERM);
        CHECK_EQ_INT(int80(346, -1, 0, 0, 0, 0), -EPERM);
        CHECK_EQ_INT(int80(283, 0, 0, 0, 0xdead0000L, 0), -EPERM);
        CHECK_EQ_INT(int80(357, -1, 0, 0, 0, 0), -EPERM);
        CHECK_EQ_INT(int80(120, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0), -EPERM);
        CHECK_EQ_INT(int80(128, 0, 0, 0, 0, 0), -EPERM);
        CHECK_EQ_INT(int80(404, -1, 0, 0, 0, 0), -EPERM);
        CHECK_EQ_INT(int80(166, 0, 0, 0, 0, 0), -EPERM);
        CHECK_EQ_INT(int80(136, ADDR_NO_RANDOMIZE, 0, 0, 0, 0), -EPERM);
        CHECK(int80(136, 0xffffffffL, 0, 0, 0, 0) >= 0);
}

static void check_denied_compat(void) {
        if (!ia32_available())
                printf("i386 ABI not available (ia32_emulation off): skipping its checks\n");
        else
                check_denied_i386();

        /* x32 numbers are the x86_64 ones with bit 30 set and share its audit
         * arch: the filter must catch them whether or not the kernel has
         * CONFIG_X86_X32_ABI (ENOSYS only comes after the filter). */
        CHECK_ERRNO(EPERM, syscall(0x40000000L | SYS_mount, 0L, 0L, 0L, 0L, 0L));
        CHECK_ERRNO(EPERM, syscall(0x40000000L | SYS_unshare, (long) CLONE_NEWUSER));
        CHECK_ERRNO(EPERM, syscall(0x40000000L | SYS_personality, (long) ADDR_NO_RANDOMIZE));
}

#endif

static void *thread_main(void *arg) {
        return arg;
}

static void check_allowed(void) {
        pid_t pid;
        long r;
        int fd, p[2];
        char buf[8];

        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
                _exit(3);
        CHECK_EQ_INT(wait_exit_code(pid), 3);

        r = raw_clone(SIGCHLD);
        CHECK(r >= 0);
        if (r == 0)
                _exit(7);
        CHECK_EQ_INT(wait_exit_code((pid_t) r), 7);

        /* glibc's pthread_create tries clone3 first and must fall back to clone. */
        pthread_t t;
        void *ret = NULL;
        CHECK_EQ_INT(pthread_create(&t, NULL, thread_main, (void *) 0x42), 0);
        CHECK_EQ_INT(pthread_join(t, &ret), 0);
        CHECK(ret == (void *) 0x42);

        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                execl("/bin/true", "true", (char *) NULL);
                _exit(127);
        }
        CHECK_EQ_INT(wait_exit_code(pid), 0);

        char path[] = "/tmp/kiln-test-seccomp-XXXXXX";
        fd = mkstemp(path);
        CHECK(fd >= 0);
        CHECK_OK(unlink(path));
        CHECK_EQ_INT(write(fd, "kiln", 4), 4);
        CHECK_EQ_INT(pread(fd, buf, 4, 0), 4);
        CHECK(memcmp(buf, "kiln", 4) == 0);
        close(fd);

        /* Ordinary ioctls: TCGETS on a pty works, on a pipe it is ENOTTY. */
        fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (fd >= 0) {
                struct termios tio;
                CHECK_OK(ioctl(fd, TCGETS, &tio));
                CHECK_OK(syscall(SYS_ioctl, fd, (1UL << 32) | TCGETS, &tio));
                close(fd);
        }
        CHECK_OK(pipe2(p, O_CLOEXEC));
        CHECK_ERRNO(ENOTTY, ioctl(p[0], TCGETS, buf));
        close(p[0]);
        close(p[1]);

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0);
        close(fd);

        /* Allowed on purpose: chroot (no capability over the mount namespace
         * inside a sandbox), kcmp, ptrace (confined by the pid namespace). */
        CHECK_ERRNO(ENOENT, chroot("/kiln-nonexistent"));
        CHECK_OK(syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, 1, 1));
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
                _exit(ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0 ? 0 : 1);
        CHECK_EQ_INT(wait_exit_code(pid), 0);

        /* personality: the allowed values, and the query. */
        r = personality(0xffffffff);
        CHECK(r >= 0);
        CHECK_OK(personality(PER_LINUX32));
        CHECK_OK(personality(PER_LINUX32 | UNAME26));
        CHECK_OK(personality(UNAME26));
        CHECK_OK(personality(PER_LINUX));
        CHECK_EQ_INT(personality(0xffffffff), PER_LINUX);
}

static void check_table(void) {
        const char *name, *why;
        int error;
        size_t n = seccomp_default_n_rules();

        CHECK(n > 40);
        for (size_t i = 0; i < n; i++) {
                CHECK_EQ_INT(seccomp_default_rule(i, &name, &error, &why), 0);
                CHECK(!isempty(name) && !isempty(why));
                CHECK(error == EPERM || error == ENOSYS);
        }
        CHECK_EQ_INT(seccomp_default_rule(n, &name, &error, &why), -ERANGE);
}

int main(void) {
        struct sock_fprog prog = {};
        pid_t pid;
        int r;

        if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0 && errno == EINVAL)
                SKIP("kernel without seccomp");
        /* Filters stack. Under kiln's own filter (kiln's CI running in kiln)
         * every answer below is the same, so the test runs; a stricter outer
         * filter (a container runtime's) may change some and fail them, with
         * the call named. */
        if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 2)
                fprintf(stderr, "note: already under a seccomp filter; its answers win where it is stricter\n");

        check_table();

        r = seccomp_default_build(&prog);
        CHECK_EQ_INT(r, 0);
        CHECK(prog.len > 0 && prog.filter);

        /* Without no_new_privs and CAP_SYS_ADMIN the kernel refuses a filter. */
        CHECK_EQ_INT(seccomp_apply(&(struct sock_fprog) {}), -EINVAL);

        fflush(stdout);
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                CHECK_OK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
                CHECK_EQ_INT(seccomp_apply(&prog), 0);
                CHECK_EQ_INT(prctl(PR_GET_SECCOMP, 0, 0, 0, 0), 2);
                check_denied_native();
#if defined(__x86_64__)
                check_denied_compat();
#endif
                check_denied_namespaces();
                check_allowed();
                fflush(stdout);
                _exit(0);
        }
        CHECK_EQ_INT(wait_exit_code(pid), 0);

        seccomp_program_free(&prog);
        CHECK(!prog.filter && prog.len == 0);
        printf("ok\n");
        return 0;
}
