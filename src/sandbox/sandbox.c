/* SPDX-License-Identifier: MIT */
/* The host side of a sandbox: its state directory, slot, cgroup, user
 * namespace and network, the creation of its PID 1, the control protocol,
 * and the removal of everything — including what crashed owners left. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "net.h"
#include "parse-util.h"
#include "sandbox-internal.h"
#include "seccomp.h"
#include "strv.h"

#define MAX_DONE 64

/* KILN_SANDBOX_TIMING=1 prints how long each phase of a sandbox's life took. */
void sandbox_phase(const char *what) {
        static int enabled = -1;
        static uint64_t last;
        if (enabled < 0)
                enabled = !isempty(getenv("KILN_SANDBOX_TIMING"));
        if (!enabled)
                return;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (what)
                fprintf(stderr, "kiln: sandbox timing: %-14s %6.3f ms\n", what, (double) (now - last) / 1000.0);
        last = now;
}

static void (*clone_guard_begin)(void);
static void (*clone_guard_end)(void);

void sandbox_set_clone_guard(void (*begin)(void), void (*end)(void)) {
        clone_guard_begin = begin;
        clone_guard_end = end;
}

static void clone_guard(bool begin) {
        if (begin && clone_guard_begin)
                clone_guard_begin();
        else if (!begin && clone_guard_end)
                clone_guard_end();
}

typedef struct Done {
        uint64_t id;
        int status;
        int exec_errno;
} Done;

typedef struct Pending {
        uint64_t id;
        uint64_t oom_before;
        int exec_errno;
} Pending;

struct Sandbox {
        char *id;
        char *dir;
        unsigned slot;
        int slot_fd;
        int lock_fd;
        Cgroup cgroup;
        bool have_cgroup;
        NetworkMode network;
        pid_t init_pid;
        int control_fd;
        int life_fd;
        uint64_t next_id;
        Pending pending[MAX_DONE];
        Done done[MAX_DONE];
        size_t n_done;
        char *buf;
        bool remote; /* held by the spawner (sandbox-spawner.c) */
        unsigned generation; /* of that spawner */
};

static const char *const network_names[_NETWORK_MAX] = {
        [NETWORK_NONE] = "none",
        [NETWORK_NAT] = "nat",
        [NETWORK_HOST] = "host",
};

const char *network_mode_to_string(NetworkMode m) {
        return m < _NETWORK_MAX ? network_names[m] : NULL;
}

int network_mode_from_string(const char *s) {
        for (int i = 0; i < _NETWORK_MAX; i++)
                if (streq(s, network_names[i]))
                        return i;
        return -EINVAL;
}

void sandbox_config_done(SandboxConfig *c) {
        free(c->image);
        for (size_t i = 0; i < c->n_binds; i++) {
                free(c->binds[i].source);
                free(c->binds[i].target);
        }
        free(c->binds);
        strv_free(c->mask_paths);
        free(c->hostname);
        *c = (SandboxConfig) {};
}

int bind_mount_parse(const char *s, BindMount *ret) {
        _cleanup_free_ char *copy = strdup(s);
        bool ro = false;
        char *colon, *target, *mode;

        if (!copy)
                return -ENOMEM;
        colon = strchr(copy, ':');
        if (!colon)
                return -EINVAL;
        *colon = 0;
        target = colon + 1;
        mode = strchr(target, ':');
        if (mode) {
                *mode++ = 0;
                if (streq(mode, "ro"))
                        ro = true;
                else if (!streq(mode, "rw"))
                        return -EINVAL;
        }
        if (!path_is_absolute(copy) || !path_is_absolute(target) || strstr(target, "/..") ||
            streq(target, "/"))
                return -EINVAL;
        char *src = realpath(copy, NULL);
        if (!src)
                return -errno;
        *ret = (BindMount) { .source = src, .target = strdup(target), .read_only = ro };
        if (!ret->target) {
                free(src);
                return -ENOMEM;
        }
        return 0;
}

int sandbox_exit_status_to_code(const SandboxExitStatus *st) {
        if (st->signal)
                return 128 + st->signal;
        return st->code;
}

/* State directories live on the data disk when they hold a writable layer or
 * a disk image, and in /run (memory, like the slot locks) when they hold
 * nothing but their lock: creating and removing one there costs microseconds,
 * on ext4 half a millisecond and more. KILN_SANDBOX_DIR puts both in one. */
#define ROOT_DISK "/var/lib/kiln/sandboxes"
#define ROOT_MEMORY "/run/kiln/sandboxes"

const char *sandbox_root_dir(void) {
        const char *e = getenv("KILN_SANDBOX_DIR");
        return isempty(e) ? ROOT_DISK : e;
}

static const char *state_root(const SandboxConfig *c) {
        const char *e = getenv("KILN_SANDBOX_DIR");
        if (!isempty(e))
                return e;
        return c->layer_in_memory && c->disk_max == 0 ? ROOT_MEMORY : ROOT_DISK;
}

const char *sandbox_id(const Sandbox *s) {
        return s->id;
}

pid_t sandbox_init_pid(const Sandbox *s) {
        return s->init_pid;
}

int sandbox_control_fd(const Sandbox *s) {
        return s->control_fd;
}

const char *sandbox_state_dir(const Sandbox *s) {
        return s->dir;
}

/* Slots are the host's, not a sandbox directory's: a slot gives the sandbox its
 * uid range, its veth name and its addresses, which every kiln on this host
 * (a worker, `kiln sandbox run` with another KILN_SANDBOX_DIR…) shares. */
#define SLOT_DIR "/run/kiln/slots"

static int slot_open(unsigned slot, int *ret_fd) {
        char path[64];
        snprintf(path, sizeof path, SLOT_DIR "/%u", slot);
        int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int e = errno;
                safe_close(fd);
                return e == EWOULDBLOCK ? -EBUSY : -e;
        }
        *ret_fd = fd;
        return 0;
}

/* Takes a free slot. The lock is held for the sandbox's life; a crashed owner
 * releases it with its last fd. */
static int slot_acquire(unsigned *ret_slot, int *ret_fd) {
        unsigned start;
        int r;

        r = mkdir_p(SLOT_DIR, 0700);
        if (r < 0)
                return r;
        if (getrandom(&start, sizeof start, 0) != sizeof start)
                start = (unsigned) getpid();
        /* Start at a random slot so that concurrent creators rarely collide. */
        start %= 256;
        for (unsigned i = 0; i < SANDBOX_SLOTS; i++) {
                unsigned slot = (start + i) % SANDBOX_SLOTS;
                r = slot_open(slot, ret_fd);
                if (r >= 0) {
                        *ret_slot = slot;
                        return 0;
                }
                if (r != -EBUSY)
                        return r;
        }
        return -EUSERS;
}

static int userns_child(void *arg) {
        int *p = arg;
        char c;
        /* Our copy of the fd table holds the write end too. */
        safe_close(p[1]);
        (void) !read(p[0], &c, 1);
        return 0;
}

/* A user namespace mapping 0..65535 inside to base..base+65535 outside, kept
 * by its fd after the throwaway child that created it is gone. The child
 * shares our memory (CLONE_VM): nothing to copy, nothing to tear down. */
static int userns_create(uint32_t base, int *ret_fd) {
        _cleanup_close_pair_ int p[2] = { -EBADF, -EBADF };
        _cleanup_free_ char *stack = NULL;
        char path[64], map[64];
        int r = 0, fd = -EBADF;
        const size_t stack_size = 16384;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        stack = malloc(stack_size);
        if (!stack)
                return -ENOMEM;
        /* The child reads these from our memory at any time: a copy we leave alone. */
        int child_fds[2] = { p[0], p[1] };
        clone_guard(true);
        pid_t pid = clone(userns_child, stack + stack_size, CLONE_NEWUSER | CLONE_VM | SIGCHLD, child_fds);
        clone_guard(false);
        if (pid < 0)
                return -errno;
        snprintf(map, sizeof map, "0 %u %u\n", base, SANDBOX_UID_COUNT);
        snprintf(path, sizeof path, "/proc/%d/uid_map", (int) pid);
        r = write_string_file(path, map);
        if (r >= 0) {
                snprintf(path, sizeof path, "/proc/%d/gid_map", (int) pid);
                r = write_string_file(path, map);
        }
        if (r >= 0) {
                snprintf(path, sizeof path, "/proc/%d/ns/user", (int) pid);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        r = -errno;
        }
        p[1] = safe_close(p[1]);
        /* The stack must outlive the child. */
        while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
                ;
        if (r < 0)
                return r;
        *ret_fd = fd;
        return 0;
}


static int disk_image_create(const char *dir, uint64_t size, uint32_t base, char **ret) {
        _cleanup_free_ char *img = NULL;
        char owner[64], sz[32];
        int status;

        if (asprintf(&img, "%s/disk.img", dir) < 0)
                return -ENOMEM;
        if (size < (16ULL << 20))
                return log_error_errno(EINVAL, "--disk must be at least 16M");
        _cleanup_close_ int fd = open(img, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t) size) < 0)
                return log_error_errno(errno, "Failed to create the disk image: %m");
        snprintf(owner, sizeof owner, "root_owner=%u:%u,nodiscard,lazy_itable_init=1", base, base);
        snprintf(sz, sizeof sz, "%" PRIu64 "k", size / 1024);
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY);
                if (null >= 0)
                        dup2(null, STDOUT_FILENO);
                execlp("mkfs.ext4", "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", owner, img,
                       sz, (char *) NULL);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return log_error_errno(EIO, "mkfs.ext4 failed (status %d); is e2fsprogs installed?", status);
        *ret = TAKE_PTR(img);
        return 0;
}

/* The size of the writable layer's tmpfs, or 0 to keep the layer on disk. */
static int layer_tmpfs_size(const SandboxConfig *c, uint64_t *ret) {
        if (!c->layer_in_memory || c->disk_max > 0) {
                *ret = 0;
                return 0;
        }
        if (c->memory_max > 0) {
                *ret = c->memory_max;
                return 0;
        }
        /* tmpfs's own default: the cgroup sets no bound, the host's RAM does. */
        long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
        if (pages <= 0 || page_size <= 0)
                return -EINVAL;
        *ret = (uint64_t) pages / 2 * (uint64_t) page_size;
        return 0;
}

/* The state directory is named "ID.SLOT.NETWORK", which tells gc all it needs
 * about a dead sandbox without a file to write. Its owner holds an flock on
 * the directory itself, taken before the directory appears under its final
 * name, so that a concurrent gc never mistakes a sandbox being born for a
 * dead one. */
static int state_dir_create(const char *root, Sandbox *s) {
        uint8_t rnd[6];
        char id[16], tmp[4096], path[4096];

        if (strpbrk(root, ",:\\\n"))
                return log_error_errno(EINVAL, "Sandbox directory '%s' may not contain ',', ':' or '\\'",
                                       root);
        if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
                return -EIO;
        snprintf(id, sizeof id, "%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
        snprintf(path, sizeof path, "%s/%s.%u.%s", root, id, s->slot, network_mode_to_string(s->network));
        snprintf(tmp, sizeof tmp, "%s/.new-%s", root, id);
        if (mkdir(tmp, 0700) < 0)
                return -errno;
        int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || flock(fd, LOCK_EX) < 0 || rename(tmp, path) < 0) {
                int e = errno;
                safe_close(fd);
                (void) rm_rf(tmp);
                return -e;
        }
        s->lock_fd = fd;
        s->id = strdup(id);
        s->dir = strdup(path);
        if (!s->id || !s->dir)
                return -ENOMEM;
        return 0;
}

/* PID 1 mounts its tmpfs (mount points, the generated layer) over this one
 * shared, empty directory, in its own mount namespace. */
static int mount_dir(const char *root, char **ret) {
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/.mnt", root) < 0)
                return -ENOMEM;
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
                return -errno;
        *ret = TAKE_PTR(p);
        return 0;
}

/* Without a layer on disk the state directory is empty: one rmdir(), no walk. */
static int state_dir_remove(const char *dir) {
        if (rmdir(dir) >= 0 || errno == ENOENT)
                return 0;
        if (!IN_SET(errno, ENOTEMPTY, EEXIST))
                return -errno;
        return rm_rf(dir);
}

static int read_msg(Sandbox *s, int timeout_ms, MsgHeader *ret) {
        struct pollfd p = { .fd = s->control_fd, .events = POLLIN };
        int k = poll(&p, 1, timeout_ms);
        if (k < 0)
                return -errno;
        if (k == 0)
                return -ETIME;
        ssize_t n = msg_recv(s->control_fd, s->buf, SANDBOX_MSG_MAX, NULL, NULL);
        if (n == 0 || n == -ECONNRESET)
                return -ECONNRESET; /* init is gone */
        if (n < 0)
                return (int) n;
        memcpy(ret, s->buf, sizeof *ret);
        return 0;
}

static int wait_ready(Sandbox *s) {
        MsgHeader h;
        for (;;) {
                int r = read_msg(s, 60000, &h);
                if (r == -EINTR)
                        continue;
                if (r < 0)
                        return r == -ECONNRESET ? -EPROTO : r;
                if (h.type == MSG_READY)
                        return h.a;
        }
}

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

struct clone_args_v2 {
        uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
                set_tid_size, cgroup;
};

/* Creates PID 1: straight into the cgroup with clone3() on cgroup v2; on v1
 * PID 1 joins it itself. */
static pid_t clone_init(const Sandbox *s, unsigned long flags, InitArgs *a) {
        if (s->cgroup.v2) {
                _cleanup_close_ int cg = open(s->cgroup.paths[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (cg >= 0) {
                        struct clone_args_v2 args = {
                                .flags = flags | CLONE_INTO_CGROUP,
                                .exit_signal = SIGCHLD,
                                .cgroup = (uint64_t) cg,
                        };
                        pid_t pid = (pid_t) syscall(SYS_clone3, &args, sizeof args);
                        if (pid >= 0) {
                                a->in_cgroup = true;
                                return pid;
                        }
                        if (errno != ENOSYS && errno != E2BIG && errno != EINVAL)
                                return -errno;
                }
        }
        a->in_cgroup = false;
        pid_t pid = (pid_t) syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
        return pid < 0 ? -errno : pid;
}

static int start_init(Sandbox *s, const SandboxConfig *c, InitArgs *a) {
        _cleanup_close_pair_ int ctl[2] = { -EBADF, -EBADF }, life[2] = { -EBADF, -EBADF };
        unsigned long flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC;
        int r;

        if (c->network != NETWORK_HOST)
                flags |= CLONE_NEWNET;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0 || pipe2(life, O_CLOEXEC) < 0)
                return -errno;
        int sz = SANDBOX_MSG_MAX + 4096;
        (void) setsockopt(ctl[0], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz);
        (void) setsockopt(ctl[1], SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz);

        a->cgroup = &s->cgroup;
        clone_guard(true);
        pid_t pid = clone_init(s, flags, a);
        if (pid != 0)
                clone_guard(false);
        if (pid < 0)
                return log_error_errno(pid, "Failed to create the sandbox's namespaces: %m");
        if (pid == 0) {
                a->control_fd = ctl[1];
                a->life_fd = life[0];
                sandbox_init_main(a);
        }
        s->init_pid = pid;
        s->control_fd = TAKE_FD(ctl[0]);
        s->life_fd = TAKE_FD(life[1]);
        sandbox_phase("clone");

        /* PID 1 sets itself up meanwhile; it reports ready only after this, and
         * no command runs before that. */
        if (c->network == NETWORK_NAT) {
                char path[64];
                snprintf(path, sizeof path, "/proc/%d/ns/net", (int) pid);
                _cleanup_close_ int netns = open(path, O_RDONLY | O_CLOEXEC);
                if (netns < 0)
                        return -errno;
                (void) net_nat_teardown(s->slot);
                r = net_nat_setup(netns, s->slot);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up NAT networking: %m");
                sandbox_phase("nat");
        }
        r = wait_ready(s);
        if (r < 0)
                return log_error_errno(r, "The sandbox failed to start: %m");
        return 0;
}

int sandbox_prepare(const SandboxConfig *c, Sandbox **ret) {
        _cleanup_sandbox_ Sandbox *s = NULL;
        _cleanup_free_ char *disk = NULL, *resolv = NULL, *hostname = NULL, *masks = NULL, *mnt = NULL;
        _cleanup_close_ int userns = -EBADF;
        const char *root = state_root(c);
        int r;

        if (!c->image || (!streq(c->image, "host") && !path_is_absolute(c->image)))
                return log_error_errno(EINVAL, "The image must be 'host' or an absolute directory path");
        if (sandbox_spawner_active())
                return sandbox_spawner_prepare(c, ret);
        bool host = streq(c->image, "host");
        if (!host && c->mask_paths)
                return log_error_errno(EINVAL, "Masks apply to the host image only");
        r = mkdir_p(root, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create '%s': %m", root);

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        *s = (Sandbox) { .slot_fd = -EBADF, .lock_fd = -EBADF, .control_fd = -EBADF, .life_fd = -EBADF,
                         .network = c->network, .next_id = 1 };
        s->buf = malloc(SANDBOX_MSG_MAX);
        if (!s->buf)
                return -ENOMEM;
        sandbox_phase(NULL);
        r = slot_acquire(&s->slot, &s->slot_fd);
        if (r < 0)
                return log_error_errno(r, "No free sandbox slot: %m");
        r = state_dir_create(root, s);
        if (r < 0)
                return log_error_errno(r, "Failed to create the sandbox directory in '%s': %m", root);
        r = mount_dir(root, &mnt);
        if (r < 0)
                return log_error_errno(r, "Failed to create '%s/.mnt': %m", root);

        sandbox_phase("state");
        uint32_t base = SANDBOX_UID_BASE + s->slot * SANDBOX_UID_COUNT;
        if (c->disk_max > 0) {
                r = disk_image_create(s->dir, c->disk_max, base, &disk);
                if (r < 0)
                        return r;
        }
        uint64_t layer_size;
        r = layer_tmpfs_size(c, &layer_size);
        if (r < 0)
                return log_error_errno(r, "Failed to size the in-memory writable layer: %m");
        CgroupLimits limits = { .memory_max = c->memory_max, .pids_max = c->pids_max,
                                .cpu_millis = c->cpu_millis };
        r = cgroup_create(s->id, &limits, &s->cgroup);
        if (r < 0)
                return log_error_errno(r, "Failed to create the sandbox's cgroup: %m");
        s->have_cgroup = true;
        sandbox_phase("cgroup");
        r = userns_create(base, &userns);
        if (r < 0)
                return log_error_errno(r, "Failed to create the sandbox's user namespace: %m");
        sandbox_phase("userns");
        if (host) {
                r = sandbox_mask_manifest(c->mask_paths, &masks);
                if (r < 0)
                        return log_error_errno(r, "Failed to find the host paths to mask: %m");
                sandbox_phase("masks");
        }
        if (c->network == NETWORK_NAT) {
                r = net_resolv_conf(&resolv);
                if (r < 0)
                        return log_error_errno(r, "Failed to build resolv.conf: %m");
        }
        SandboxConfig cfg = *c;
        if (!cfg.hostname) {
                if (asprintf(&hostname, "kiln-%.8s", s->id) < 0)
                        return -ENOMEM;
                cfg.hostname = hostname;
        }
        InitArgs a = {
                .config = &cfg,
                .dir = s->dir,
                .mnt = mnt,
                .id = s->id,
                .uid_base = base,
                .userns_fd = userns,
                .disk_image = disk,
                .layer_tmpfs_size = layer_size,
                .resolv_conf = resolv,
                .masks = masks,
                .seccomp = seccomp_default_program(),
        };
        r = start_init(s, &cfg, &a);
        if (r < 0)
                return r;
        sandbox_phase("init ready");
        *ret = TAKE_PTR(s);
        return 0;
}

static uint64_t oom_count(const Sandbox *s) {
        uint64_t n = 0;
        if (s->have_cgroup)
                (void) cgroup_oom_kills(&s->cgroup, &n);
        return n;
}

static int payload_build(const SandboxExec *e, char **ret, size_t *ret_size) {
        const char *cwd = e->cwd ? e->cwd : "/";
        size_t size = strlen(cwd) + 1;
        char *buf, *p;

        for (char **v = e->argv; *v; v++)
                size += strlen(*v) + 1;
        for (char **v = e->env; v && *v; v++)
                size += strlen(*v) + 1;
        if (size + sizeof(MsgHeader) > SANDBOX_MSG_MAX)
                return -E2BIG;
        buf = p = malloc(size);
        if (!buf)
                return -ENOMEM;
        p = stpcpy(p, cwd) + 1;
        for (char **v = e->argv; *v; v++)
                p = stpcpy(p, *v) + 1;
        for (char **v = e->env; v && *v; v++)
                p = stpcpy(p, *v) + 1;
        *ret = buf;
        *ret_size = size;
        return 0;
}

static int queue_done(Sandbox *s, const MsgHeader *h) {
        if (s->n_done >= MAX_DONE)
                return -ENOBUFS;
        s->done[s->n_done++] = (Done) { .id = h->id, .status = h->a };
        return 0;
}

static Pending *pending_find(Sandbox *s, uint64_t id) {
        for (size_t i = 0; i < MAX_DONE; i++)
                if (s->pending[i].id == id)
                        return &s->pending[i];
        return NULL;
}

int sandbox_spawn(Sandbox *s, const SandboxExec *e, uint64_t *ret_id) {
        _cleanup_free_ char *payload = NULL;
        _cleanup_close_ int null = -EBADF;
        size_t size;
        int r;

        if (!e->argv || !e->argv[0])
                return -EINVAL;
        Pending *slot = pending_find(s, 0);
        if (!slot)
                return -EMFILE;
        r = payload_build(e, &payload, &size);
        if (r < 0)
                return r;
        int fds[3] = { e->stdin_fd, e->stdout_fd, e->stderr_fd };
        for (int i = 0; i < 3; i++)
                if (fds[i] < 0) {
                        if (null < 0 && (null = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
                                return -errno;
                        fds[i] = null;
                }
        MsgHeader h = {
                .type = MSG_SPAWN, .id = s->next_id++, .uid = e->uid, .gid = e->gid,
                .n_argv = (uint32_t) strv_length(e->argv), .n_env = (uint32_t) strv_length(e->env),
                .payload = (uint32_t) size,
        };
        uint64_t oom = oom_count(s);
        r = msg_send(s->control_fd, &h, payload, fds, 3);
        if (r < 0)
                return r;
        for (;;) {
                MsgHeader m;
                r = read_msg(s, -1, &m);
                if (r == -EINTR)
                        continue;
                if (r < 0)
                        return r;
                if (m.type == MSG_EXITED)
                        (void) queue_done(s, &m);
                else if (m.type == MSG_SPAWNED && m.id == h.id) {
                        if (m.a <= 0)
                                return -m.b;
                        *slot = (Pending) { .id = h.id, .oom_before = oom, .exec_errno = m.b };
                        *ret_id = h.id;
                        return 0;
                }
        }
}

static void status_from(Sandbox *s, uint64_t id, int wstatus, SandboxExitStatus *ret) {
        Pending *p = pending_find(s, id);
        *ret = (SandboxExitStatus) {};
        if (WIFEXITED(wstatus))
                ret->code = WEXITSTATUS(wstatus);
        else if (WIFSIGNALED(wstatus))
                ret->signal = WTERMSIG(wstatus);
        if (p) {
                if (p->exec_errno) {
                        ret->exec_failed = true;
                        ret->exec_errno = p->exec_errno;
                }
                if (ret->signal == SIGKILL && oom_count(s) > p->oom_before)
                        ret->oom_killed = true;
                *p = (Pending) {};
        }
}

/* Whether init is gone because the OOM killer chose it while command id
 * ran: memory that no process holds (files in a tmpfs, the in-memory writable
 * layer) stays charged after its writer is killed, so the next victims can
 * be any process of the sandbox, init too. Init takes the whole sandbox with
 * it, and so the command ended out of memory. */
static bool init_oom_killed(Sandbox *s, uint64_t id) {
        Pending *p = pending_find(s, id);
        return p && oom_count(s) > p->oom_before;
}

int sandbox_wait(Sandbox *s, uint64_t id, uint64_t timeout_usec, SandboxExitStatus *ret) {
        uint64_t deadline = timeout_usec == UINT64_MAX ? UINT64_MAX : now_usec(CLOCK_MONOTONIC) + timeout_usec;

        for (;;) {
                for (size_t i = 0; i < s->n_done; i++)
                        if (s->done[i].id == id) {
                                status_from(s, id, s->done[i].status, ret);
                                s->done[i] = s->done[--s->n_done];
                                return 0;
                        }
                int ms = -1;
                if (deadline != UINT64_MAX) {
                        /* Past the deadline, still take what is already there. */
                        uint64_t now = now_usec(CLOCK_MONOTONIC);
                        ms = now >= deadline ? 0 : (int) MIN((deadline - now + 999) / 1000, (uint64_t) INT32_MAX);
                }
                MsgHeader m;
                int r = read_msg(s, ms, &m);
                if (r == -ECONNRESET && init_oom_killed(s, id)) {
                        status_from(s, id, SIGKILL, ret);
                        return 0;
                }
                if (r < 0)
                        return r;
                if (m.type == MSG_EXITED) {
                        r = queue_done(s, &m);
                        if (r < 0)
                                return r;
                }
        }
}

int sandbox_signal(Sandbox *s, uint64_t id, int sig) {
        MsgHeader h = { .type = MSG_SIGNAL, .id = id, .a = sig };
        return msg_send(s->control_fd, &h, NULL, NULL, 0);
}

int sandbox_signal_all(Sandbox *s, int sig) {
        MsgHeader h = { .type = MSG_SIGNAL_ALL, .a = sig };
        return msg_send(s->control_fd, &h, NULL, NULL, 0);
}

int sandbox_exec(Sandbox *s, const SandboxExec *e, uint64_t timeout_usec, SandboxExitStatus *ret) {
        uint64_t id;
        int r = sandbox_spawn(s, e, &id);
        if (r < 0)
                return r;
        r = sandbox_wait(s, id, timeout_usec, ret);
        while (r == -EINTR)
                r = sandbox_wait(s, id, timeout_usec, ret);
        return r;
}

/* What every sandbox owns in the calling process, once the rest is gone. */
static void sandbox_free(Sandbox *s) {
        safe_close(s->control_fd);
        safe_close(s->life_fd);
        safe_close(s->lock_fd);
        safe_close(s->slot_fd);
        free(s->id);
        free(s->dir);
        free(s->buf);
        free(s);
}

int sandbox_new_remote(const char *id, const char *dir, pid_t init_pid, int control_fd, const Cgroup *cg,
                       Sandbox **ret) {
        Sandbox *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        *s = (Sandbox) { .slot_fd = -EBADF, .lock_fd = -EBADF, .control_fd = -EBADF, .life_fd = -EBADF,
                         .next_id = 1, .remote = true, .init_pid = init_pid,
                         .generation = sandbox_spawner_generation() };
        if (!id || !dir || init_pid <= 0 || control_fd < 0) {
                sandbox_free(s);
                return -EBADMSG;
        }
        s->id = strdup(id);
        s->dir = strdup(dir);
        s->buf = malloc(SANDBOX_MSG_MAX);
        if (!s->id || !s->dir || !s->buf) {
                sandbox_free(s);
                return -ENOMEM;
        }
        s->control_fd = control_fd;
        if (cg) {
                s->cgroup = *cg; /* the paths are the sandbox's now */
                s->have_cgroup = true;
        }
        *ret = s;
        return 0;
}

bool sandbox_alive(const Sandbox *s) {
        struct pollfd p = { .fd = s->control_fd, .events = POLLRDHUP };
        if (s->remote && !sandbox_spawner_holds(s->generation))
                return false;
        return s->control_fd >= 0 && poll(&p, 1, 0) == 0;
}

int sandbox_take_control_fd(Sandbox *s) {
        return TAKE_FD(s->control_fd);
}

const Cgroup *sandbox_cgroup(const Sandbox *s) {
        return s->have_cgroup ? &s->cgroup : NULL;
}

typedef struct Reaper {
        int fds[3]; /* PID 1's pidfd; the slot and the state directory's lock, held until the end */
        char dir[PATH_MAX];
        char cgroups[_CG_MAX][PATH_MAX];
        char *stack;
} Reaper;

static Reaper *reaper_kept;

/* Runs in a child that shares our memory and outlives us: on its own stack,
 * with its own copy of what it needs, through system calls and nothing that
 * allocates (errno, in memory it shares with us, is never looked at). */
static int reaper_main(void *arg) {
        const Reaper *r = arg;
        struct pollfd p = { .fd = r->fds[0], .events = POLLIN };

        /* Nothing else of ours stays open in it: not stdout, not a pipe a
         * caller waits on. (close_all_fds() is what PID 1 uses right after
         * its clone too: close_range(), and a qsort of three ints.) */
        (void) close_all_fds(r->fds, ELEMENTSOF(r->fds));
        (void) syscall(SYS_prctl, PR_SET_NAME, "kiln-reaper", 0L, 0L, 0L);
        /* PID 1 was sent SIGKILL: it is gone within milliseconds, and with it
         * every other process of the sandbox. */
        (void) syscall(SYS_poll, &p, 1L, 10000L);
        for (int k = 0; k < _CG_MAX; k++) {
                if (!r->cgroups[k][0])
                        continue;
                for (int attempt = 0; attempt < 2000; attempt++) {
                        if (syscall(SYS_rmdir, r->cgroups[k]) == 0 || syscall(SYS_access, r->cgroups[k], F_OK) != 0)
                                break;
                        struct timespec ts = { 0, 500000 }; /* tasks still leaving it */
                        (void) syscall(SYS_nanosleep, &ts, NULL);
                }
        }
        /* Last, so that whatever is left when this fails is a state directory
         * whose lock is free: a leftover that gc removes. */
        (void) syscall(SYS_rmdir, r->dir);
        (void) syscall(SYS_exit, 0L);
        return 0;
}

/* Starts the reaper; on success it owns s's cgroup, state directory and slot. */
static int reaper_start(Sandbox *s) {
        const size_t stack_size = 65536;
        sigset_t all, old;
        int e = ENAMETOOLONG;

        /* Both stay allocated for good (and reachable, for leak checkers):
         * the reaper may outlive this process, never its memory. */
        Reaper *r = calloc(1, sizeof *r);
        char *stack = malloc(stack_size);
        if (!r || !stack) {
                free(r);
                free(stack);
                return -ENOMEM;
        }
        r->fds[0] = -EBADF;
        r->fds[1] = s->slot_fd;
        r->fds[2] = s->lock_fd;
        if (!s->dir || (size_t) snprintf(r->dir, sizeof r->dir, "%s", s->dir) >= sizeof r->dir)
                goto fail;
        for (int k = 0; k < _CG_MAX; k++)
                if (s->cgroup.paths[k] && (size_t) snprintf(r->cgroups[k], sizeof r->cgroups[k], "%s",
                                                            s->cgroup.paths[k]) >= sizeof r->cgroups[k])
                        goto fail;
        r->fds[0] = (int) syscall(SYS_pidfd_open, s->init_pid, 0);
        if (r->fds[0] < 0) {
                e = errno;
                goto fail;
        }
        /* No handler of ours may ever run in it. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pid_t pid = clone(reaper_main, stack + stack_size, CLONE_VM, r);
        e = errno;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (pid < 0)
                goto fail;
        safe_close(r->fds[0]); /* the reaper has its own copy */
        r->stack = stack;
        reaper_kept = r;
        cgroup_done(&s->cgroup);
        s->have_cgroup = false;
        return 0;
fail:
        safe_close(r->fds[0]);
        free(r);
        free(stack);
        return -e;
}

int sandbox_destroy_before_exit(Sandbox *s) {
        /* Remote sandboxes, and NAT rules that need our netlink code, go the
         * ordinary way. The reaper removes the state directory with rmdir():
         * the disk image goes now (unlinked while mounted, its blocks are
         * freed with the mount); a directory that still holds something is
         * left, lock free, to gc. */
        if (!s || s->remote || s->init_pid <= 0 || !s->have_cgroup || s->network == NETWORK_NAT || !s->dir ||
            s->slot_fd < 0 || s->lock_fd < 0)
                return sandbox_destroy(s);
        _cleanup_close_ int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || (unlinkat(dfd, "disk.img", 0) < 0 && errno != ENOENT) || reaper_start(s) < 0)
                return sandbox_destroy(s);
        (void) kill(s->init_pid, SIGKILL);
        /* PID 1, reaped by whoever inherits it, takes the rest along. */
        sandbox_free(s);
        return 0;
}

int sandbox_destroy(Sandbox *s) {
        int r = 0;

        if (!s)
                return 0;
        if (s->remote) {
                s->control_fd = safe_close(s->control_fd);
                r = sandbox_spawner_destroy(s->id);
                if (s->have_cgroup)
                        cgroup_done(&s->cgroup);
                sandbox_free(s);
                return r;
        }
        sandbox_phase(NULL);
        s->control_fd = safe_close(s->control_fd);
        /* PID 1 takes the whole PID namespace with it. While the kernel tears
         * the namespaces down, remove the files: nothing writes them any more. */
        if (s->init_pid > 0)
                (void) kill(s->init_pid, SIGKILL);
        if (s->dir) {
                r = state_dir_remove(s->dir);
                /* Once the directory is gone, no gc takes the sandbox for a
                 * leftover (gc_one() checks it still exists once it holds
                 * the lock): the lock guards nothing any more. Dropping it
                 * now, the last reference to the directory, lets the file
                 * system free its inode while the kernel tears the
                 * namespaces down, rather than after (~0.3 ms on ext4). */
                if (r >= 0)
                        s->lock_fd = safe_close(s->lock_fd);
                sandbox_phase("rm dir");
        }
        if (s->init_pid > 0) {
                /* Once PID 1 is reaped, nothing of the sandbox runs any more. */
                while (waitpid(s->init_pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                sandbox_phase("reap init");
        }
        s->life_fd = safe_close(s->life_fd);
        if (s->have_cgroup) {
                int q = cgroup_destroy(&s->cgroup);
                if (q < 0 && r == 0)
                        r = q;
                sandbox_phase("rm cgroup");
        }
        if (s->network == NETWORK_NAT)
                (void) net_nat_teardown(s->slot);
        sandbox_free(s);
        return r;
}

/* Parses "ID.SLOT.NETWORK". */
static int state_name_parse(const char *name, char id[static 16], unsigned *ret_slot, bool *ret_nat) {
        const char *d1 = strchr(name, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
        char num[16];

        if (!d1 || !d2 || d1 - name >= 16 || d2 - d1 - 1 >= (ptrdiff_t) sizeof num)
                return -EINVAL;
        memcpy(id, name, (size_t) (d1 - name));
        id[d1 - name] = 0;
        memcpy(num, d1 + 1, (size_t) (d2 - d1 - 1));
        num[d2 - d1 - 1] = 0;
        if (safe_atou(num, ret_slot) < 0 || network_mode_from_string(d2 + 1) < 0)
                return -EINVAL;
        *ret_nat = streq(d2 + 1, "nat");
        return 0;
}

static int gc_one(const char *root, const char *name, bool verbose, bool *ret_nat_alive) {
        char path[4096], id[16] = "";
        unsigned slot = UINT32_MAX;
        bool nat = false;
        struct stat st;

        snprintf(path, sizeof path, "%s/%s", root, name);
        if (strneq(name, ".new-", 5)) {
                /* A sandbox being born: only old ones are leftovers of a creator that died. */
                if (stat(path, &st) < 0 || (time(NULL) - st.st_mtime) < 60)
                        return 0;
        } else if (state_name_parse(name, id, &slot, &nat) < 0)
                return 0; /* not ours */

        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK)
                        return -errno;
                if (nat)
                        *ret_nat_alive = true;
                return 0; /* its owner is alive */
        }
        /* Its owner removes the directory before it lets go of the lock, and
         * removes the rest of the sandbox after: one already gone is no
         * leftover, but a sandbox being destroyed. */
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_nlink == 0)
                return 0;

        if (id[0]) {
                int r = cgroup_remove_by_name(id);
                if (r < 0 && r != -ENOENT)
                        log_warning_errno(r, "Failed to remove the cgroup of sandbox %s: %m", id);
        }
        /* The veth is the slot's: only while nobody else holds the slot is it a
         * leftover of this sandbox. */
        _cleanup_close_ int slot_fd = -EBADF;
        if (nat && slot < SANDBOX_SLOTS && slot_open(slot, &slot_fd) >= 0)
                (void) net_nat_teardown(slot);
        int r = rm_rf(path);
        if (r < 0)
                return log_warning_errno(r, "Failed to remove '%s': %m", path);
        if (verbose)
                log_info("Removed leftover sandbox %s", id[0] ? id : name);
        return nat ? 2 : 1;
}

int sandbox_gc(SandboxGcFlags flags) {
        const char *roots[] = { sandbox_root_dir(), isempty(getenv("KILN_SANDBOX_DIR")) ? ROOT_MEMORY : NULL };
        bool nat_alive = false, nat_removed = false, verbose = flags & SANDBOX_GC_VERBOSE;
        int n = 0;

        for (size_t i = 0; i < ELEMENTSOF(roots) && roots[i]; i++) {
                DIR *d = opendir(roots[i]);
                if (!d) {
                        if (errno == ENOENT)
                                continue;
                        return -errno;
                }
                for (struct dirent *de; (de = readdir(d));) {
                        if ((de->d_name[0] == '.' && !strneq(de->d_name, ".new-", 5)) || de->d_type != DT_DIR)
                                continue;
                        int r = gc_one(roots[i], de->d_name, verbose, &nat_alive);
                        if (r > 0)
                                n++;
                        if (r == 2)
                                nat_removed = true;
                }
                closedir(d);
        }
        /* Looking at the nftables ruleset costs milliseconds: only when asked to, or
         * when a NAT sandbox was among the dead. */
        if (nat_removed || (flags & SANDBOX_GC_NETWORK))
                (void) net_gc(nat_alive);
        return n;
}
