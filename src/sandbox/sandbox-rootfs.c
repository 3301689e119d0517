/* SPDX-License-Identifier: MIT */
/* The sandbox's root file system, built by its PID 1 in its private mount
 * namespace while it still holds the host's privileges:
 *
 *   lower   the image, through an idmapped, read-only, nodev mount, so that
 *           files keep their owners inside the sandbox's user namespace;
 *   gen     a small tmpfs with, for the host image, what hides its secrets
 *           (sandbox-masks.c), the generated /etc files and the mount points
 *           the image lacks;
 *   upper   a per-sandbox writable layer: on a size-limited ext4 image when a
 *           disk quota is set, in a tmpfs when the caller asked for it in
 *           memory, or else in the sandbox's state directory;
 *   root    the overlay of them all, with fresh /proc, /sys, a minimal /dev and
 *           the caller's bind mounts, and then pivot_root()ed into.
 *
 * Everything here is mounted only in the sandbox's mount namespace, so it all
 * disappears with the sandbox's last process. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/loop.h>
#include <linux/mount.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "sandbox-internal.h"

typedef struct Rootfs {
        const InitArgs *a;
        const char *image; /* host path of the image's root */
        char layer[4096];  /* where upper/ and work/ live */
        char upper[4096];
        char tmp[4096];    /* the sandbox's own tmpfs */
        char lower[4096];
        char masks[4096];
        char root[4096];
        uint32_t base;
} Rootfs;

static int join(char *buf, size_t size, const char *a, const char *b) {
        int n = snprintf(buf, size, "%s%s%s", a, (b[0] == '/' || !a[0]) ? "" : "/", b);
        return (n < 0 || (size_t) n >= size) ? -ENAMETOOLONG : 0;
}

static int sys_open_tree(int dfd, const char *path, unsigned flags) {
        return (int) syscall(SYS_open_tree, dfd, path, flags);
}

static int sys_mount_setattr(int dfd, const char *path, unsigned flags, struct mount_attr *attr) {
        return (int) syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof(*attr));
}

static int sys_move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned flags) {
        return (int) syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}

/* Creates upper/rel's missing parent directories with the mode and (shifted)
 * owner of the same directories in the image, so that the merged directory
 * looks exactly like the image's. */
static int layer_mkdir_parents(const Rootfs *f, const char *rel) {
        char path[4096];
        int r = join(path, sizeof path, "", rel);
        if (r < 0)
                return r;
        for (char *s = path + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = 0;
                char up[4096], low[4096];
                struct stat st;
                if (join(up, sizeof up, f->masks, path) < 0 || join(low, sizeof low, f->image, path) < 0)
                        return -ENAMETOOLONG;
                if (lstat(up, &st) < 0) {
                        if (lstat(low, &st) < 0 || !S_ISDIR(st.st_mode)) {
                                st.st_mode = 0755;
                                st.st_uid = st.st_gid = 0;
                        }
                        if (mkdir(up, st.st_mode & 07777) < 0 && errno != EEXIST)
                                return -errno;
                        if (chown(up, st.st_uid + f->base, st.st_gid + f->base) < 0 ||
                            chmod(up, st.st_mode & 07777) < 0)
                                return -errno;
                }
                *s = '/';
        }
        return 0;
}

static int layer_write_file(const Rootfs *f, const char *rel, const char *contents) {
        char up[4096];
        int r = layer_mkdir_parents(f, rel);
        if (r < 0)
                return r;
        if (join(up, sizeof up, f->masks, rel) < 0)
                return -ENAMETOOLONG;
        (void) unlink(up);
        _cleanup_close_ int fd = open(up, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        r = loop_write(fd, contents, strlen(contents));
        if (r < 0)
                return r;
        if (fchown(fd, f->base, f->base) < 0)
                return -errno;
        return 0;
}

/* A mount point that must exist in the merged tree (for /proc, /dev, binds). */
static int layer_mountpoint(const Rootfs *f, const char *rel, bool dir) {
        char up[4096], low[4096];
        struct stat st;
        if (join(low, sizeof low, f->image, rel) < 0 || join(up, sizeof up, f->masks, rel) < 0)
                return -ENAMETOOLONG;
        if (stat(low, &st) >= 0 && (S_ISDIR(st.st_mode) == dir))
                return 0;
        int r = layer_mkdir_parents(f, rel);
        if (r < 0)
                return r;
        if (dir) {
                if (mkdir(up, 0755) < 0 && errno != EEXIST)
                        return -errno;
        } else {
                _cleanup_close_ int fd = open(up, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (fd < 0)
                        return -errno;
        }
        if (lchown(up, f->base, f->base) < 0)
                return -errno;
        return 0;
}

/* Returns the open loop device: with LO_FLAGS_AUTOCLEAR, closing the last fd
 * before the mount holds it would detach it again. */
static int attach_loop(const char *image, char *ret_dev, size_t size, int *ret_fd) {
        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        _cleanup_close_ int backing = open(image, O_RDWR | O_CLOEXEC);
        if (ctl < 0 || backing < 0)
                return -errno;
        for (int attempt = 0; attempt < 64; attempt++) {
                int n = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (n < 0)
                        return -errno;
                snprintf(ret_dev, size, "/dev/loop%d", n);
                _cleanup_close_ int dev = open(ret_dev, O_RDWR | O_CLOEXEC);
                if (dev < 0)
                        return -errno;
                struct loop_config cfg = {
                        .fd = (uint32_t) backing,
                        /* Detaches itself when the sandbox's mount namespace goes away. */
                        .info.lo_flags = LO_FLAGS_AUTOCLEAR,
                };
                if (ioctl(dev, LOOP_CONFIGURE, &cfg) >= 0) {
                        *ret_fd = TAKE_FD(dev);
                        return 0;
                }
                if (errno != EBUSY)
                        return -errno;
        }
        return -EBUSY;
}

/* Attaches a read-only, nodev, nosuid, idmapped copy of src at dst. */
static int attach_idmapped(const char *src, const char *dst, int userns_fd) {
        _cleanup_close_ int tree = sys_open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tree < 0)
                return -errno;
        struct mount_attr attr = {
                .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID,
                .userns_fd = (uint64_t) userns_fd,
        };
        if (sys_mount_setattr(tree, "", AT_EMPTY_PATH, &attr) < 0)
                return -errno;
        if (sys_move_mount(tree, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                return -errno;
        return 0;
}

/* Puts f->layer, where upper/ and work/ go, in place: a loop-mounted ext4
 * image with a disk quota, a tmpfs when the caller keeps the layer in memory,
 * or else the state directory on disk. The first two are mounted here, in the
 * sandbox's own mount namespace, so they vanish with it. */
static int mount_layer(Rootfs *f) {
        const InitArgs *a = f->a;
        int r;

        if (!a->disk_image && a->layer_tmpfs_size == 0) {
                if ((size_t) snprintf(f->layer, sizeof f->layer, "%s", a->dir) >= sizeof f->layer)
                        return -ENAMETOOLONG;
                return 0;
        }
        r = join(f->layer, sizeof f->layer, f->tmp, "disk");
        if (r < 0)
                return r;
        if (a->disk_image) {
                _cleanup_close_ int loop_fd = -EBADF;
                char dev[64];
                r = attach_loop(a->disk_image, dev, sizeof dev, &loop_fd);
                if (r < 0)
                        return log_error_errno(r, "Failed to attach the disk image: %m");
                if (mount(dev, f->layer, "ext4", MS_NOSUID | MS_NODEV, NULL) < 0)
                        return log_error_errno(errno, "Failed to mount the disk image: %m");
                return 0;
        }

        /* Its pages are charged to whichever process writes them, i.e. to the
         * sandbox's memory cgroup. One inode per KiB is more than the size could
         * hold anyway, and inodes are charged to the cgroup too. */
        char opts[128];
        snprintf(opts, sizeof opts, "mode=700,size=%" PRIu64 ",nr_inodes=%" PRIu64, a->layer_tmpfs_size,
                 MAX(a->layer_tmpfs_size / 1024, (uint64_t) 16384));
        if (mount("tmpfs", f->layer, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
                return log_error_errno(errno, "Failed to mount the writable layer's tmpfs: %m");
        return 0;
}

static int setup_layers(Rootfs *f) {
        const InitArgs *a = f->a;
        struct stat st;
        int r;

        r = mount_layer(f);
        if (r < 0)
                return r;

        char work[4096];
        if (join(f->upper, sizeof f->upper, f->layer, "upper") < 0 ||
            join(work, sizeof work, f->layer, "work") < 0)
                return -ENAMETOOLONG;
        if (stat(f->image, &st) < 0)
                return log_error_errno(errno, "Image root '%s': %m", f->image);
        if ((mkdir(f->upper, st.st_mode & 07777) < 0 && errno != EEXIST) ||
            (mkdir(work, 0700) < 0 && errno != EEXIST))
                return log_error_errno(errno, "Failed to create the writable layer: %m");
        if (chown(f->upper, st.st_uid + f->base, st.st_gid + f->base) < 0)
                return -errno;

        /* The image, idmapped: a file owned by uid N in the image is owned by
         * base+N on the host, which is N inside the sandbox. */
        r = attach_idmapped(f->image, f->lower, a->userns_fd);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the image '%s': %m%s", f->image,
                                       IN_SET(r, -EINVAL, -ENOSYS, -EOPNOTSUPP)
                                               ? " (the ns sandbox needs idmapped mounts: Linux >= 5.19 "
                                                 "and an image on a file system that supports them)"
                                               : "");
        return 0;
}

/* The generated layer: a directory of the sandbox's tmpfs that holds the masks, the generated /etc files and missing mount points, so that
 * the writable layer starts empty and nothing is written to disk for them. */
static int prepare_layer(const Rootfs *f) {
        const SandboxConfig *c = f->a->config;
        char hosts[512];
        int r;

        if (f->a->masks) {
                _cleanup_close_ int fd = open(f->masks, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                        return -errno;
                r = sandbox_mask_apply(fd, f->a->masks, f->base);
                if (r < 0)
                        return log_error_errno(r, "Failed to mask host paths: %m");
        }

        snprintf(hosts, sizeof hosts, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t%s\n",
                 c->hostname);
        r = layer_write_file(f, "/etc/hosts", hosts);
        if (r >= 0) {
                char hn[300];
                snprintf(hn, sizeof hn, "%s\n", c->hostname);
                r = layer_write_file(f, "/etc/hostname", hn);
        }
        if (r >= 0 && f->a->resolv_conf)
                r = layer_write_file(f, "/etc/resolv.conf", f->a->resolv_conf);
        if (r < 0)
                return log_error_errno(r, "Failed to write /etc files: %m");

        static const char *const mps[] = { "/proc", "/sys", "/dev", "/tmp" };
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(mps); i++)
                r = layer_mountpoint(f, mps[i], true);
        for (size_t i = 0; r >= 0 && i < c->n_binds; i++) {
                struct stat st;
                if (stat(c->binds[i].source, &st) < 0)
                        return log_error_errno(errno, "Bind source '%s': %m", c->binds[i].source);
                r = layer_mountpoint(f, c->binds[i].target, S_ISDIR(st.st_mode));
        }
        if (r < 0)
                return log_error_errno(r, "Failed to create mount points: %m");
        return 0;
}

static int mount_at(const Rootfs *f, const char *src, const char *rel, const char *type, unsigned long flags,
                    const char *data) {
        char path[4096];
        if (join(path, sizeof path, f->root, rel) < 0)
                return -ENAMETOOLONG;
        if (mount(src, path, type, flags, data) < 0)
                return log_error_errno(errno, "Failed to mount %s on '%s': %m", type ? type : src, rel);
        return 0;
}

static int bind_at(const Rootfs *f, const char *src, const char *rel, bool ro) {
        int r = mount_at(f, src, rel, NULL, MS_BIND | MS_REC, NULL);
        if (r >= 0 && ro)
                r = mount_at(f, NULL, rel, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
        return r;
}

static int setup_proc(const Rootfs *f) {
        static const char *const masked_files[] = {
                "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                "/proc/latency_stats", "/proc/kallsyms", "/proc/kpagecount", "/proc/kpageflags",
        };
        static const char *const masked_dirs[] = { "/proc/acpi", "/proc/scsi" };
        static const char *const read_only[] = {
                "/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger",
        };
        char path[4096];
        int r = mount_at(f, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(masked_files); i++)
                if (join(path, sizeof path, f->root, masked_files[i]) >= 0 && access(path, F_OK) >= 0) {
                        r = bind_at(f, "/dev/null", masked_files[i], true);
                        if (r < 0)
                                return r;
                }
        for (size_t i = 0; i < ELEMENTSOF(masked_dirs); i++)
                if (join(path, sizeof path, f->root, masked_dirs[i]) >= 0 && access(path, F_OK) >= 0) {
                        r = mount_at(f, "tmpfs", masked_dirs[i], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV,
                                     "size=0,mode=555");
                        if (r < 0)
                                return r;
                }
        for (size_t i = 0; i < ELEMENTSOF(read_only); i++)
                if (join(path, sizeof path, f->root, read_only[i]) >= 0 && access(path, F_OK) >= 0) {
                        r = bind_at(f, path, read_only[i], true);
                        if (r < 0)
                                return r;
                }
        return 0;
}

static int setup_dev(const Rootfs *f) {
        /* The classic character devices, created rather than bind-mounted: one
         * mknod() each instead of a file and a mount, here and at teardown. */
        static const struct {
                const char *name;
                unsigned major, minor;
        } devices[] = {
                { "null", 1, 3 }, { "zero", 1, 5 },    { "full", 1, 7 },
                { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
        };
        static const struct {
                const char *target, *link;
        } links[] = {
                { "/proc/self/fd", "/dev/fd" },     { "/proc/self/fd/0", "/dev/stdin" },
                { "/proc/self/fd/1", "/dev/stdout" }, { "/proc/self/fd/2", "/dev/stderr" },
                { "pts/ptmx", "/dev/ptmx" },
        };
        const SandboxConfig *c = f->a->config;
        char opts[256], path[4096], src[64];
        int r;

        snprintf(opts, sizeof opts, "mode=755,size=1m,nr_inodes=256,uid=%u,gid=%u", f->base, f->base);
        r = mount_at(f, "tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, opts);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(devices); i++) {
                snprintf(src, sizeof src, "/dev/%s", devices[i].name);
                if (join(path, sizeof path, f->root, src) < 0)
                        return -ENAMETOOLONG;
                if (mknod(path, S_IFCHR | 0666, makedev(devices[i].major, devices[i].minor)) < 0 ||
                    chmod(path, 0666) < 0) /* past the umask */
                        return log_error_errno(errno, "Failed to create %s: %m", src);
        }
        for (size_t i = 0; i < ELEMENTSOF(links); i++) {
                if (join(path, sizeof path, f->root, links[i].link) < 0)
                        return -ENAMETOOLONG;
                if (symlink(links[i].target, path) < 0 || lchown(path, f->base, f->base) < 0)
                        return -errno;
        }
        static const char *const dirs[] = { "/dev/pts", "/dev/shm", "/dev/mqueue" };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                if (join(path, sizeof path, f->root, dirs[i]) < 0)
                        return -ENAMETOOLONG;
                if (mkdir(path, 0755) < 0 || chown(path, f->base, f->base) < 0)
                        return -errno;
        }
        snprintf(opts, sizeof opts, "newinstance,ptmxmode=0666,mode=620,gid=%u", f->base + 5);
        r = mount_at(f, "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, opts);
        if (r < 0)
                return r;
        /* /dev/shm is memory: its pages are charged to the sandbox's memory limit. */
        snprintf(opts, sizeof opts, "mode=1777,size=%llu,uid=%u,gid=%u",
                 (unsigned long long) (c->memory_max ? c->memory_max : 64ULL << 20), f->base, f->base);
        r = mount_at(f, "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts);
        if (r < 0)
                return r;
        return mount_at(f, "mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

static int setup_sys(const Rootfs *f) {
        int r = mount_at(f, "sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
        if (r < 0)
                return r;
        char path[4096];
        if (join(path, sizeof path, f->root, "/sys/firmware") >= 0 && access(path, F_OK) >= 0)
                r = mount_at(f, "tmpfs", "/sys/firmware", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV,
                             "size=0,mode=555");
        return r;
}

int sandbox_rootfs_setup(const InitArgs *a) {
        Rootfs f = {
                .a = a,
                .image = streq(a->config->image, "host") ? "/" : a->config->image,
                .base = a->uid_base,
        };
        char opts[16384];
        int r;

        if ((size_t) snprintf(f.tmp, sizeof f.tmp, "%s", a->mnt) >= sizeof f.tmp ||
            join(f.lower, sizeof f.lower, f.tmp, "lower") < 0 ||
            join(f.masks, sizeof f.masks, f.tmp, "gen") < 0 || join(f.root, sizeof f.root, f.tmp, "root") < 0)
                return -ENAMETOOLONG;
        /* Nothing mounted from here on may propagate back to the host. */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return log_error_errno(errno, "Failed to make mounts private: %m");
        /* Mount points and the generated layer: memory, gone with the namespace. */
        if (mount("tmpfs", f.tmp, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700,size=4m,nr_inodes=16384") < 0)
                return log_error_errno(errno, "Failed to mount the sandbox's tmpfs: %m");
        static const char *const sub[] = { "lower", "gen", "root", "disk" };
        for (size_t i = 0; i < ELEMENTSOF(sub); i++) {
                char p[4200];
                snprintf(p, sizeof p, "%s/%s", f.tmp, sub[i]);
                if (mkdir(p, 0755) < 0)
                        return -errno;
        }

        sandbox_phase(" tmpfs");
        r = setup_layers(&f);
        if (r < 0)
                return r;
        sandbox_phase(" layers");
        r = prepare_layer(&f);
        if (r < 0)
                return r;
        sandbox_phase(" gen layer");

        char work[4096];
        if (join(work, sizeof work, f.layer, "work") < 0)
                return -ENAMETOOLONG;
        /* The generated layer sits above the image. */
        if ((size_t) snprintf(opts, sizeof opts, "lowerdir=%s:%s,upperdir=%s,workdir=%s,volatile", f.masks, f.lower,
                              f.upper, work) >= sizeof opts)
                return -ENAMETOOLONG;
        if (mount("overlay", f.root, "overlay", MS_NOSUID | MS_NODEV, opts) < 0)
                return log_error_errno(errno, "Failed to mount the overlay root: %m");

        sandbox_phase(" overlay");
        r = setup_proc(&f);
        sandbox_phase(" proc");
        if (r >= 0)
                r = setup_sys(&f);
        sandbox_phase(" sys");
        if (r >= 0)
                r = setup_dev(&f);
        sandbox_phase(" dev");
        for (size_t i = 0; r >= 0 && i < a->config->n_binds; i++)
                r = bind_at(&f, a->config->binds[i].source, a->config->binds[i].target,
                            a->config->binds[i].read_only);
        if (r < 0)
                return r;

        if (chdir(f.root) < 0)
                return -errno;
        sandbox_phase(" binds");
        if (syscall(SYS_pivot_root, ".", ".") < 0)
                return log_error_errno(errno, "pivot_root: %m");
        /* The old root is now stacked under the new one: detach it. */
        if (umount2(".", MNT_DETACH) < 0)
                return log_error_errno(errno, "Failed to detach the old root: %m");
        if (chdir("/") < 0)
                return -errno;
        sandbox_phase(" pivot");
        return 0;
}
