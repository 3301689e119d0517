/* SPDX-License-Identifier: MIT */
/* kiln's default seccomp filter.
 *
 * Policy: allow by default, deny a fixed list of system calls with EPERM
 * (ENOSYS for clone3) — the shape of Docker's default profile, not a kill
 * list, so that a CI job probing for a feature sees an ordinary error.
 *
 * The filter is compiled once with libseccomp and exported to classic BPF;
 * applying it in a freshly forked sandbox init is then a single prctl() that
 * allocates nothing. On x86_64 the same rules are installed for the i386
 * (int 0x80, sysenter) and x32 ABIs: a deny list that only covers the native
 * ABI is bypassed by issuing the same call through the 32-bit entry point. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <libseccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd-util.h"
#include "macro.h"
#include "seccomp.h"

/* The size of a compiled program is bounded by the table below; anything
 * larger means libseccomp produced something we did not expect. */
#define SECCOMP_PROGRAM_MAX 4096

typedef enum DenyKind {
        DENY_ALWAYS,     /* every call */
        DENY_CLONE_NS,   /* clone() with any CLONE_NEW* flag */
        DENY_IOCTL_TTY,  /* ioctl() with TIOCSTI or TIOCLINUX */
} DenyKind;

typedef struct DenyRule {
        const char *name;
        DenyKind kind;
        int error;
        const char *why; /* the attack it stops; also printed by the docs */
} DenyRule;

/* One entry per system call, each with the attack it stops. Names that do not
 * exist on an architecture (vm86 on x86_64, kexec_file_load on i386) are
 * resolved by libseccomp to pseudo numbers that match nothing there. */
static const DenyRule deny_table[] = {
        /* Mount table: remounting, unmounting masks, escaping the pivot_root. */
        { "mount",            DENY_ALWAYS,    EPERM,  "remounting / or /proc rw, unmasking hidden paths" },
        { "umount",           DENY_ALWAYS,    EPERM,  "i386 oldumount: unmounting masks over /proc" },
        { "umount2",          DENY_ALWAYS,    EPERM,  "unmounting masks over /proc and /sys" },
        { "pivot_root",       DENY_ALWAYS,    EPERM,  "swapping the sandbox root for another tree" },
        { "fsopen",           DENY_ALWAYS,    EPERM,  "new mount API: building a superblock" },
        { "fsconfig",         DENY_ALWAYS,    EPERM,  "new mount API: configuring a superblock" },
        { "fsmount",          DENY_ALWAYS,    EPERM,  "new mount API: creating a mount" },
        { "fspick",           DENY_ALWAYS,    EPERM,  "new mount API: reconfiguring an existing mount" },
        { "move_mount",       DENY_ALWAYS,    EPERM,  "new mount API: attaching a mount" },
        { "open_tree",        DENY_ALWAYS,    EPERM,  "new mount API: cloning a mount tree" },
        { "mount_setattr",    DENY_ALWAYS,    EPERM,  "clearing read-only/nosuid on a mount" },
        /* Namespaces: a fresh user namespace gives back every capability and
         * exposes the kernel's whole namespaced attack surface. */
        { "unshare",          DENY_ALWAYS,    EPERM,  "new namespaces (CLONE_NEWUSER kernel attack surface)" },
        { "setns",            DENY_ALWAYS,    EPERM,  "joining another namespace through an inherited fd" },
        { "clone",            DENY_CLONE_NS,  EPERM,  "clone() with CLONE_NEW* flags: same as unshare" },
        /* clone3 takes its flags in a struct that BPF cannot read; ENOSYS makes
         * glibc fall back to clone(), whose flags we can check. */
        { "clone3",           DENY_ALWAYS,    ENOSYS, "clone3 namespace flags hidden from the filter" },
        /* Kernel code and kernel state. */
        { "init_module",      DENY_ALWAYS,    EPERM,  "loading kernel modules" },
        { "finit_module",     DENY_ALWAYS,    EPERM,  "loading kernel modules from an fd" },
        { "delete_module",    DENY_ALWAYS,    EPERM,  "unloading kernel modules" },
        { "kexec_load",       DENY_ALWAYS,    EPERM,  "booting another kernel" },
        { "kexec_file_load",  DENY_ALWAYS,    EPERM,  "booting another kernel from a file" },
        { "bpf",              DENY_ALWAYS,    EPERM,  "eBPF verifier/JIT bugs, reading kernel memory" },
        { "perf_event_open",  DENY_ALWAYS,    EPERM,  "perf: kernel address leaks and a long CVE history" },
        { "lookup_dcookie",   DENY_ALWAYS,    EPERM,  "oprofile dcookies: kernel path disclosure" },
        { "syslog",           DENY_ALWAYS,    EPERM,  "reading/clearing the kernel log (address leaks)" },
        { "io_uring_setup",   DENY_ALWAYS,    EPERM,  "io_uring: bypasses per-syscall filtering, many CVEs" },
        { "io_uring_enter",   DENY_ALWAYS,    EPERM,  "io_uring: bypasses per-syscall filtering, many CVEs" },
        { "io_uring_register", DENY_ALWAYS,   EPERM,  "io_uring: bypasses per-syscall filtering, many CVEs" },
        { "userfaultfd",      DENY_ALWAYS,    EPERM,  "stalling kernel page faults to win kernel races" },
        /* Keyrings are not namespaced: keys would be shared with the host. */
        { "keyctl",           DENY_ALWAYS,    EPERM,  "reading/joining host keyrings" },
        { "add_key",          DENY_ALWAYS,    EPERM,  "planting keys in host keyrings" },
        { "request_key",      DENY_ALWAYS,    EPERM,  "triggering host key upcalls" },
        /* The terminal of whoever started kiln. */
        { "ioctl",            DENY_IOCTL_TTY, EPERM,  "TIOCSTI/TIOCLINUX: typing into the host's terminal" },
        /* File handles resolve inodes outside the sandbox root (shocker). */
        { "open_by_handle_at", DENY_ALWAYS,   EPERM,  "opening host files by handle (Docker 'shocker')" },
        { "name_to_handle_at", DENY_ALWAYS,   EPERM,  "forging file handles for open_by_handle_at" },
        /* Machine-wide state. */
        { "swapon",           DENY_ALWAYS,    EPERM,  "adding swap devices" },
        { "swapoff",          DENY_ALWAYS,    EPERM,  "removing swap devices" },
        { "reboot",           DENY_ALWAYS,    EPERM,  "rebooting the host" },
        { "acct",             DENY_ALWAYS,    EPERM,  "process accounting to a file" },
        { "quotactl",         DENY_ALWAYS,    EPERM,  "changing disk quotas" },
        { "quotactl_fd",      DENY_ALWAYS,    EPERM,  "changing disk quotas" },
        { "nfsservctl",       DENY_ALWAYS,    EPERM,  "kernel NFS server control" },
        { "_sysctl",          DENY_ALWAYS,    EPERM,  "binary sysctl writes" },
        /* Clocks are not namespaced (time namespaces only offset monotonic). */
        { "settimeofday",     DENY_ALWAYS,    EPERM,  "setting the host clock" },
        { "stime",            DENY_ALWAYS,    EPERM,  "setting the host clock (i386)" },
        { "clock_settime",    DENY_ALWAYS,    EPERM,  "setting the host clock" },
        { "clock_settime64",  DENY_ALWAYS,    EPERM,  "setting the host clock (i386 time64)" },
        { "clock_adjtime",    DENY_ALWAYS,    EPERM,  "slewing the host clock" },
        { "clock_adjtime64",  DENY_ALWAYS,    EPERM,  "slewing the host clock (i386 time64)" },
        { "adjtimex",         DENY_ALWAYS,    EPERM,  "slewing the host clock" },
        /* Legacy hardware access and ABI oddities. */
        { "iopl",             DENY_ALWAYS,    EPERM,  "raw I/O port access" },
        { "ioperm",           DENY_ALWAYS,    EPERM,  "raw I/O port access" },
        { "vm86",             DENY_ALWAYS,    EPERM,  "virtual 8086 mode (i386)" },
        { "vm86old",          DENY_ALWAYS,    EPERM,  "virtual 8086 mode (i386)" },
        { "uselib",           DENY_ALWAYS,    EPERM,  "a.out loader, historic exploit target" },
        /* personality is handled by personality_prefix() below: libseccomp
         * cannot express "not one of these five values". */
};

/* Namespace flags of clone(). CLONE_NEWTIME (0x80) is absent on purpose: in
 * clone() that bit is part of CSIGNAL (the exit signal), and the kernel only
 * accepts CLONE_NEWTIME through clone3 and unshare, both denied whole. */
static const uint64_t clone_ns_flags[] = {
        CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
        CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
};

/* The personality() values Docker's default profile allows: PER_LINUX,
 * PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and the 0xffffffff query. Every
 * other flag (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, …)
 * weakens the exploit mitigations of the process. */
static const uint32_t personality_allowed[] = { 0x0, 0x8, 0x20000, 0x20008, 0xffffffffu };

static int rule_add(scmp_filter_ctx ctx, const DenyRule *r) {
        int nr, k;

        nr = seccomp_syscall_resolve_name(r->name);
        if (nr == __NR_SCMP_ERROR)
                return -ENOENT; /* a typo in the table must not silently drop a rule */

        switch (r->kind) {
        case DENY_ALWAYS:
                return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(r->error), nr, 0);

        case DENY_CLONE_NS:
                /* Rules on one syscall are OR'ed: one per flag. clone's flags are
                 * argument 0 on x86_64, i386 and x32 (and everywhere but s390). */
                for (size_t i = 0; i < ELEMENTSOF(clone_ns_flags); i++) {
#if defined(__s390__) || defined(__s390x__)
                        k = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(r->error), nr, 1,
                                             SCMP_A1_64(SCMP_CMP_MASKED_EQ, clone_ns_flags[i],
                                                        clone_ns_flags[i]));
#else
                        k = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(r->error), nr, 1,
                                             SCMP_A0_64(SCMP_CMP_MASKED_EQ, clone_ns_flags[i],
                                                        clone_ns_flags[i]));
#endif
                        if (k < 0)
                                return k;
                }
                return 0;

        case DENY_IOCTL_TTY: {
                /* The kernel reads ioctl's request as an unsigned int: compare only
                 * the low 32 bits, or TIOCSTI | 1 << 32 walks past an equality test. */
                static const uint64_t reqs[] = { TIOCSTI, TIOCLINUX };
                for (size_t i = 0; i < ELEMENTSOF(reqs); i++) {
                        k = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(r->error), nr, 1,
                                             SCMP_A1_64(SCMP_CMP_MASKED_EQ, 0xffffffffu, reqs[i]));
                        if (k < 0)
                                return k;
                }
                return 0;
        }
        }
        return -EINVAL;
}

#define BPF_STMT_(code, k) ((struct sock_filter) { (uint16_t) (code), 0, 0, (uint32_t) (k) })
#define BPF_JUMP_(code, k, jt, jf) \
        ((struct sock_filter) { (uint16_t) (code), (uint8_t) (jt), (uint8_t) (jf), (uint32_t) (k) })

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG0_LO offsetof(struct seccomp_data, args[0])
#else
#define ARG0_LO (offsetof(struct seccomp_data, args[0]) + 4)
#endif

typedef struct ArchNr {
        uint32_t arch; /* AUDIT_ARCH_* */
        uint32_t nr;
} ArchNr;

/* Hand-written BPF that runs before libseccomp's program and only ever
 * returns EPERM or falls through to it:
 *
 *   for each (arch, nr) of personality: if arch and nr match goto check
 *   goto end
 *   check: if low32(arg0) is one of personality_allowed goto end
 *          return ERRNO(EPERM)
 *   end:   (libseccomp's program)
 *
 * The low 32 bits are exactly what the kernel sees (personality takes an
 * unsigned int). Writes at most ELEMENTSOF(out) instructions. */
static int personality_prefix(const ArchNr *an, size_t n_an, struct sock_filter *out,
                              size_t n_out, size_t *ret_len) {
        size_t n_allowed = ELEMENTSOF(personality_allowed);
        size_t len = 4 * n_an + 1 + 1 + n_allowed + 1, i = 0;

        if (len > n_out || len > 255)
                return -E2BIG;

        for (size_t a = 0; a < n_an; a++) {
                /* Distance from the instruction after the jeq on nr to "check". */
                size_t to_check = 4 * (n_an - a - 1) + 1;

                out[i++] = BPF_STMT_(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
                out[i++] = BPF_JUMP_(BPF_JMP | BPF_JEQ | BPF_K, an[a].arch, 0, 2);
                out[i++] = BPF_STMT_(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
                out[i++] = BPF_JUMP_(BPF_JMP | BPF_JEQ | BPF_K, an[a].nr, to_check, 0);
        }
        out[i++] = BPF_JUMP_(BPF_JMP | BPF_JA | BPF_K, 1 + n_allowed + 1, 0, 0);

        /* check: */
        out[i++] = BPF_STMT_(BPF_LD | BPF_W | BPF_ABS, ARG0_LO);
        for (size_t v = 0; v < n_allowed; v++)
                out[i++] = BPF_JUMP_(BPF_JMP | BPF_JEQ | BPF_K, personality_allowed[v],
                                     n_allowed - v, 0);
        out[i++] = BPF_STMT_(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA));
        /* end: */

        *ret_len = i;
        return 0;
}

/* The (arch, syscall number) pairs under which personality() is reachable
 * from a process that runs with this filter. */
static int personality_targets(ArchNr *out, size_t n_out, size_t *ret_n) {
        static const uint32_t arches[] = {
                SCMP_ARCH_NATIVE,
#if defined(__x86_64__)
                SCMP_ARCH_X86,
                SCMP_ARCH_X32,
#endif
        };
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(arches) && n < n_out; i++) {
                uint32_t arch = arches[i] == SCMP_ARCH_NATIVE ? seccomp_arch_native() : arches[i];
                int nr = seccomp_syscall_resolve_name_arch(arch, "personality");

                if (nr < 0)
                        return -ENOENT;
                /* x32 runs under AUDIT_ARCH_X86_64 (libseccomp's x32 token is not
                 * an audit arch) and marks its numbers with bit 30, which the
                 * resolved number already carries. */
#if defined(__x86_64__)
                if (arch == SCMP_ARCH_X32)
                        arch = AUDIT_ARCH_X86_64;
#endif
                out[n++] = (ArchNr) { .arch = arch, .nr = (uint32_t) nr };
        }
        *ret_n = n;
        return 0;
}

static void seccomp_releasep(scmp_filter_ctx *ctx) {
        if (*ctx)
                seccomp_release(*ctx);
}

static int filter_build_ctx(scmp_filter_ctx *ret) {
        _cleanup_(seccomp_releasep) scmp_filter_ctx ctx = NULL;
        int r;

        ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx)
                return -ENOMEM;
#if defined(__x86_64__)
        r = seccomp_arch_add(ctx, SCMP_ARCH_X86);
        if (r < 0 && r != -EEXIST)
                return r;
        r = seccomp_arch_add(ctx, SCMP_ARCH_X32);
        if (r < 0 && r != -EEXIST)
                return r;
#endif
        /* A syscall from an architecture the filter does not know (none exist
         * on x86_64 hardware today) must not slip through unfiltered. */
        r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
        if (r < 0)
                return r;
        /* The loader sets no_new_privs itself; the exported program never does. */
        r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
        if (r < 0)
                return r;

        for (size_t i = 0; i < ELEMENTSOF(deny_table); i++) {
                r = rule_add(ctx, &deny_table[i]);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(ctx);
        return 0;
}

/* libseccomp 2.5 exports only to an fd: go through a memfd. */
static int filter_export(scmp_filter_ctx ctx, struct sock_filter **ret, size_t *ret_n) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ struct sock_filter *insns = NULL;
        struct stat st;
        ssize_t n;
        int r;

        fd = memfd_create("kiln-seccomp", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        r = seccomp_export_bpf(ctx, fd);
        if (r < 0)
                return r;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) != 0 ||
            (size_t) st.st_size / sizeof(struct sock_filter) > SECCOMP_PROGRAM_MAX)
                return -EBADMSG;

        insns = malloc(st.st_size);
        if (!insns)
                return -ENOMEM;
        n = pread(fd, insns, st.st_size, 0);
        if (n < 0)
                return -errno;
        if (n != st.st_size)
                return -EIO;

        *ret_n = (size_t) st.st_size / sizeof(struct sock_filter);
        *ret = TAKE_PTR(insns);
        return 0;
}

int seccomp_default_build(struct sock_fprog *ret) {
        _cleanup_(seccomp_releasep) scmp_filter_ctx ctx = NULL;
        _cleanup_free_ struct sock_filter *body = NULL, *prog = NULL;
        struct sock_filter prefix[64];
        ArchNr targets[4];
        size_t n_body = 0, n_prefix = 0, n_targets = 0;
        int r;

        r = filter_build_ctx(&ctx);
        if (r < 0)
                return r;
        r = filter_export(ctx, &body, &n_body);
        if (r < 0)
                return r;

        r = personality_targets(targets, ELEMENTSOF(targets), &n_targets);
        if (r < 0)
                return r;
        r = personality_prefix(targets, n_targets, prefix, ELEMENTSOF(prefix), &n_prefix);
        if (r < 0)
                return r;

        if (n_prefix + n_body > BPF_MAXINSNS)
                return -E2BIG;
        prog = malloc((n_prefix + n_body) * sizeof(struct sock_filter));
        if (!prog)
                return -ENOMEM;
        memcpy(prog, prefix, n_prefix * sizeof(struct sock_filter));
        memcpy(prog + n_prefix, body, n_body * sizeof(struct sock_filter));

        ret->len = (unsigned short) (n_prefix + n_body);
        ret->filter = TAKE_PTR(prog);
        return 0;
}

void seccomp_program_free(struct sock_fprog *p) {
        free(p->filter);
        p->filter = NULL;
        p->len = 0;
}

size_t seccomp_default_n_rules(void) {
        return ELEMENTSOF(deny_table);
}

int seccomp_default_rule(size_t i, const char **ret_name, int *ret_error, const char **ret_why) {
        if (i >= ELEMENTSOF(deny_table))
                return -ERANGE;
        if (ret_name)
                *ret_name = deny_table[i].name;
        if (ret_error)
                *ret_error = deny_table[i].error;
        if (ret_why)
                *ret_why = deny_table[i].why;
        return 0;
}
