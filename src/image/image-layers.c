/* SPDX-License-Identifier: MIT */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <jansson.h>

#include "fd-util.h"
#include "fs-util.h"
#include "image-layers.h"
#include "image-store.h"
#include "log.h"
#include "macro.h"
#include "strv.h"

#define LAYER_DEPTH_MAX 256
#define LAYERS_MAX 256
#define LAYOUT_JSON_MAX (4U << 20)
#define OVERFLOW_ID 65534U

const ArchiveLimits image_rootfs_limits = {
        .max_entries = 2000000,
        .max_total_bytes = UINT64_C(64) << 30,
        .max_file_bytes = UINT64_C(16) << 30,
        .max_path_len = 4096,
        .max_depth = 128,
};

_printf_(3, 4) static int fail(ArchiveError *e, int r, const char *fmt, ...) {
        if (e) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(e->message, sizeof e->message, fmt, ap);
                va_end(ap);
                for (char *c = e->message; *c; c++)
                        if ((unsigned char) *c < 0x20 || *c == 0x7f)
                                *c = '?';
        }
        return r;
}

static void logf_fd(int fd, const char *fmt, ...) _printf_(2, 3);
static void logf_fd(int fd, const char *fmt, ...) {
        if (fd < 0)
                return;
        va_list ap;
        va_start(ap, fmt);
        (void) vdprintf(fd, fmt, ap);
        va_end(ap);
}

/* ---- removal and names ---- */

static int rm_at(int dfd, const char *name, unsigned depth);

static int clear_dir(int fd, unsigned depth) {
        int r = 0;

        if (depth > LAYER_DEPTH_MAX)
                return -ELOOP;
        int dup_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dup_fd < 0)
                return -errno;
        DIR *d = fdopendir(dup_fd);
        if (!d) {
                safe_close(dup_fd);
                return -errno;
        }
        for (struct dirent *de; (de = readdir(d));) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                int k = rm_at(dirfd(d), de->d_name, depth + 1);
                if (k < 0 && r == 0)
                        r = k;
        }
        closedir(d);
        return r;
}

static int rm_at(int dfd, const char *name, unsigned depth) {
        if (unlinkat(dfd, name, 0) >= 0 || errno == ENOENT)
                return 0;
        if (errno != EISDIR && errno != EPERM)
                return -errno;
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        int r = clear_dir(fd, depth);
        if (r < 0)
                return r;
        return unlinkat(dfd, name, AT_REMOVEDIR) < 0 ? -errno : 0;
}

static int list_names(int fd, char ***ret) {
        _cleanup_strv_free_ char **names = NULL;
        int dup_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dup_fd < 0)
                return -errno;
        DIR *d = fdopendir(dup_fd);
        if (!d) {
                safe_close(dup_fd);
                return -errno;
        }
        for (struct dirent *de; (de = readdir(d));) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (strv_extend(&names, de->d_name) < 0) {
                        closedir(d);
                        return -ENOMEM;
                }
        }
        closedir(d);
        *ret = TAKE_PTR(names);
        return 0;
}

/* ---- merging ---- */

typedef struct Merge {
        LayerKind kind;
        uid_t shift;
        ArchiveError *error;
} Merge;

static uid_t shifted(const Merge *m, uid_t id) {
        if (m->shift == 0)
                return id;
        if (id < m->shift || id - m->shift > 65535)
                return OVERFLOW_ID;
        return id - m->shift;
}

static int copy_file(int sfd, const char *name, int dfd, const struct stat *st) {
        _cleanup_close_ int in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (in < 0)
                return -errno;
        _cleanup_close_ int out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (out < 0)
                return -errno;
        for (;;) {
                ssize_t k = copy_file_range(in, NULL, out, NULL, 1U << 30, 0);
                if (k == 0)
                        break;
                if (k > 0)
                        continue;
                if (errno == EINTR)
                        continue;
                if (errno != EXDEV && errno != ENOSYS && errno != EOPNOTSUPP && errno != EINVAL)
                        return -errno;
                char buf[64 * 1024];
                for (;;) {
                        ssize_t n = loop_read(in, buf, sizeof buf);
                        if (n < 0)
                                return (int) n;
                        if (n == 0)
                                return 0;
                        int r = loop_write(out, buf, (size_t) n);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int move_entry(int sfd, const char *name, int dfd, const struct stat *st) {
        if (renameat(sfd, name, dfd, name) >= 0)
                return 0;
        if (errno != EXDEV)
                return -errno;
        if (S_ISLNK(st->st_mode)) {
                char target[4097];
                ssize_t k = readlinkat(sfd, name, target, sizeof target - 1);
                if (k < 0)
                        return -errno;
                target[k] = 0;
                return symlinkat(target, dfd, name) < 0 ? -errno : 0;
        }
        return copy_file(sfd, name, dfd, st);
}

/* overlayfs bookkeeping (origin, impure, nlink, …) that a file renamed
 * out of a writable layer carries: meaningless, or worse, in an image.
 * Through /proc/self/fd of an O_PATH fd, so that it works on symlinks too. */
static void strip_overlay_xattrs(int dfd, const char *name) {
        _cleanup_close_ int fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        char proc[64], list[4096];

        if (fd < 0)
                return;
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        ssize_t n = listxattr(proc, list, sizeof list);
        for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t) strlen(list + i) + 1)
                if (strneq(list + i, "trusted.overlay.", 16))
                        (void) removexattr(proc, list + i);
}

/* Owners, then modes (chown clears setuid), then times. */
static int set_attrs(const Merge *m, int dfd, const char *name, const struct stat *st) {
        struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, st->st_mtim };

        if (fchownat(dfd, name, shifted(m, st->st_uid), shifted(m, st->st_gid), AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISLNK(st->st_mode)) {
                _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
                if (fd < 0 || fchmod(fd, st->st_mode & 07777) < 0)
                        return -errno;
        }
        (void) utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW);
        return 0;
}

static bool is_opaque(const Merge *m, int sfd, char **names) {
        if (m->kind == LAYER_OCI) {
                for (char **n = names; n && *n; n++)
                        if (streq(*n, ".wh..wh..opq"))
                                return true;
                return false;
        }
        char v[2];
        ssize_t k = fgetxattr(sfd, "trusted.overlay.opaque", v, sizeof v);
        return k == 1 && v[0] == 'y';
}

static int merge_dir(const Merge *m, int sfd, int dfd, const char *path, unsigned depth);

static int merge_one(const Merge *m, int sfd, int dfd, const char *path, const char *name, unsigned depth) {
        _cleanup_free_ char *sub = NULL;
        struct stat st, dst;
        int r;

        if (asprintf(&sub, "%s%s%s", path, *path ? "/" : "", name) < 0)
                return -ENOMEM;
        if (m->kind == LAYER_OCI && strneq(name, ".wh.", 4)) {
                const char *victim = name + 4;
                if (streq(name, ".wh..wh..opq"))
                        return 0;
                if (!*victim || streq(victim, ".") || streq(victim, ".."))
                        return fail(m->error, -EINVAL, "Whiteout '%s' names no entry", sub);
                r = rm_at(dfd, victim, depth);
                if (r < 0)
                        return fail(m->error, r, "Whiteout '%s': %s", sub, strerror(-r));
                return 0;
        }
        if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return fail(m->error, -errno, "Cannot stat '%s': %m", sub);
        if (m->kind == LAYER_OVERLAY && S_ISCHR(st.st_mode) && st.st_rdev == 0) {
                r = rm_at(dfd, name, depth);
                return r < 0 ? fail(m->error, r, "Whiteout '%s': %s", sub, strerror(-r)) : 0;
        }
        if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
                return 0; /* devices, FIFOs, sockets: the backend makes its own /dev */
        bool have = fstatat(dfd, name, &dst, AT_SYMLINK_NOFOLLOW) >= 0;

        if (S_ISDIR(st.st_mode)) {
                if (have && !S_ISDIR(dst.st_mode)) {
                        r = rm_at(dfd, name, depth);
                        if (r < 0)
                                return fail(m->error, r, "Cannot replace '%s': %s", sub, strerror(-r));
                        have = false;
                }
                if (!have && mkdirat(dfd, name, 0700) < 0)
                        return fail(m->error, -errno, "Cannot create '%s': %m", sub);
                _cleanup_close_ int s2 = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                _cleanup_close_ int d2 = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (s2 < 0 || d2 < 0)
                        return fail(m->error, -errno, "Cannot open '%s': %m", sub);
                r = merge_dir(m, s2, d2, sub, depth + 1);
                if (r < 0)
                        return r;
        } else {
                if (have) {
                        r = rm_at(dfd, name, depth);
                        if (r < 0)
                                return fail(m->error, r, "Cannot replace '%s': %s", sub, strerror(-r));
                }
                r = move_entry(sfd, name, dfd, &st);
                if (r < 0)
                        return fail(m->error, r, "Cannot move '%s' into place: %s", sub, strerror(-r));
                if (m->kind == LAYER_OVERLAY)
                        strip_overlay_xattrs(dfd, name);
        }
        r = set_attrs(m, dfd, name, &st);
        if (r < 0)
                return fail(m->error, r, "Cannot set the attributes of '%s': %s", sub, strerror(-r));
        return 0;
}

static int merge_dir(const Merge *m, int sfd, int dfd, const char *path, unsigned depth) {
        _cleanup_strv_free_ char **names = NULL;
        int r;

        if (depth > LAYER_DEPTH_MAX)
                return fail(m->error, -ELOOP, "'%s' is nested too deeply", path);
        r = list_names(sfd, &names);
        if (r < 0)
                return fail(m->error, r, "Cannot read '%s': %s", *path ? path : ".", strerror(-r));
        if (is_opaque(m, sfd, names)) {
                r = clear_dir(dfd, depth);
                if (r < 0)
                        return fail(m->error, r, "Opaque directory '%s': %s", *path ? path : ".", strerror(-r));
        }
        for (char **n = names; n && *n; n++) {
                r = merge_one(m, sfd, dfd, path, *n, depth);
                if (r < 0)
                        return r;
        }
        return 0;
}

int layer_merge(int src_fd, int dst_fd, LayerKind kind, uid_t uid_shift, ArchiveError *ret_error) {
        Merge m = { .kind = kind, .shift = uid_shift, .error = ret_error };
        if (ret_error)
                ret_error->message[0] = 0;
        return merge_dir(&m, src_fd, dst_fd, "", 0);
}

/* ---- layouts ---- */

/* Opens path below dir_fd, never through a symlink or "..". */
static int open_beneath(int dir_fd, const char *path, int flags) {
        struct open_how how = {
                .flags = (uint64_t) (flags | O_CLOEXEC),
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, dir_fd, path, &how, sizeof how);
        return fd < 0 ? -errno : (int) fd;
}

static int read_json_beneath(int dir_fd, const char *path, json_t **ret) {
        _cleanup_close_ int fd = open_beneath(dir_fd, path, O_RDONLY);
        _cleanup_free_ char *buf = NULL;
        struct stat st;

        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size > LAYOUT_JSON_MAX)
                return -EFBIG;
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        ssize_t n = loop_read(fd, buf, (size_t) st.st_size);
        if (n < 0)
                return (int) n;
        json_t *j = json_loadb(buf, (size_t) n, 0, NULL);
        if (!j)
                return -EBADMSG;
        *ret = j;
        return 0;
}

/* "sha256:<64 lowercase hex>" → "blobs/sha256/<hex>". */
static int blob_path(const char *digest, char ret[static 128]) {
        if (!digest || !strneq(digest, "sha256:", 7) || strlen(digest) != 71 ||
            strspn(digest + 7, "0123456789abcdef") != 64)
                return -EINVAL;
        snprintf(ret, 128, "blobs/sha256/%s", digest + 7);
        return 0;
}

static int apply_layer(int layer_fd, int rootfs_fd, const char *scratch, unsigned index, ArchiveError *err) {
        _cleanup_free_ char *dir = NULL;
        ArchiveStats st;
        int r;

        if (asprintf(&dir, "%s/layer-%u", scratch, index) < 0)
                return -ENOMEM;
        (void) rm_rf(dir);
        if (mkdir(dir, 0700) < 0)
                return fail(err, -errno, "Cannot create '%s': %m", dir);
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return fail(err, -errno, "Cannot open '%s': %m", dir);
        r = archive_extract_rootfs(layer_fd, dfd, &image_rootfs_limits, 0, &st, err);
        if (r >= 0)
                r = layer_merge(dfd, rootfs_fd, LAYER_OCI, 0, err);
        (void) rm_rf(dir);
        return r;
}

static int open_blob(int lfd, const char *digest, bool verify, ArchiveError *err) {
        char path[128], got[72];
        int r;

        if (blob_path(digest, path) < 0)
                return fail(err, -EINVAL, "Bad layer digest '%s'", digest ?: "(none)");
        _cleanup_close_ int fd = open_beneath(lfd, path, O_RDONLY | O_NOCTTY);
        if (fd < 0)
                return fail(err, fd, "Blob '%s': %s", path, strerror(-fd));
        if (verify) {
                r = image_file_digest(fd, got, NULL);
                if (r < 0)
                        return fail(err, r, "Cannot read blob '%s': %s", path, strerror(-r));
                if (!streq(got, digest))
                        return fail(err, -EBADMSG, "Blob '%s' has digest %s: refused", digest, got);
                if (lseek(fd, 0, SEEK_SET) < 0)
                        return -errno;
        }
        return TAKE_FD(fd);
}

static bool platform_ok(json_t *desc) {
        json_t *p = json_object_get(desc, "platform");
        if (!p)
                return true;
        const char *os = json_string_value(json_object_get(p, "os"));
        const char *arch = json_string_value(json_object_get(p, "architecture"));
        return (!os || streq(os, "linux")) && (!arch || streq(arch, "amd64"));
}

/* The manifest of an OCI layout: index.json, through at most one nested index. */
static int oci_manifest(int lfd, json_t **ret, ArchiveError *err) {
        json_t *idx = NULL;
        int r = read_json_beneath(lfd, "index.json", &idx);
        if (r < 0)
                return fail(err, r, "index.json: %s", strerror(-r));
        for (unsigned level = 0; level < 3; level++) {
                json_t *ms = json_object_get(idx, "manifests"), *pick = NULL, *m;
                size_t i;
                if (!json_is_array(ms)) {
                        /* Not an index: the manifest itself. */
                        if (json_is_array(json_object_get(idx, "layers"))) {
                                *ret = idx;
                                return 0;
                        }
                        json_decref(idx);
                        return fail(err, -EBADMSG, "The OCI index lists no manifests");
                }
                json_array_foreach(ms, i, m)
                        if (platform_ok(m)) {
                                pick = m;
                                break;
                        }
                char path[128];
                if (!pick || blob_path(json_string_value(json_object_get(pick, "digest")), path) < 0) {
                        json_decref(idx);
                        return fail(err, -EBADMSG, "The OCI index has no linux/amd64 manifest");
                }
                json_t *next = NULL;
                r = read_json_beneath(lfd, path, &next);
                json_decref(idx);
                if (r < 0)
                        return fail(err, r, "Manifest '%s': %s", path, strerror(-r));
                idx = next;
        }
        json_decref(idx);
        return fail(err, -ELOOP, "OCI indexes nested too deeply");
}

static int import_oci(int lfd, int rootfs_fd, const char *scratch, int log_fd, ArchiveError *err) {
        json_t *manifest = NULL, *layer;
        size_t i;
        int r = oci_manifest(lfd, &manifest, err);
        if (r < 0)
                return r;
        json_t *layers = json_object_get(manifest, "layers");
        if (!json_is_array(layers) || json_array_size(layers) > LAYERS_MAX) {
                json_decref(manifest);
                return fail(err, -EBADMSG, "The manifest's layers are missing or more than %d", LAYERS_MAX);
        }
        json_array_foreach(layers, i, layer) {
                const char *digest = json_string_value(json_object_get(layer, "digest"));
                _cleanup_close_ int fd = open_blob(lfd, digest, true, err);
                if (fd < 0) {
                        r = fd;
                        break;
                }
                logf_fd(log_fd, "layer %zu: %s\n", i + 1, digest);
                r = apply_layer(fd, rootfs_fd, scratch, (unsigned) i, err);
                if (r < 0)
                        break;
        }
        json_decref(manifest);
        return r;
}

static int import_docker(int lfd, int rootfs_fd, const char *scratch, int log_fd, ArchiveError *err) {
        json_t *manifest = NULL, *layer;
        size_t i;
        int r = read_json_beneath(lfd, "manifest.json", &manifest);
        if (r < 0)
                return fail(err, r, "manifest.json: %s", strerror(-r));
        json_t *layers = json_object_get(json_array_get(manifest, 0), "Layers");
        if (!json_is_array(layers) || json_array_size(layers) > LAYERS_MAX) {
                json_decref(manifest);
                return fail(err, -EBADMSG, "manifest.json: Layers missing or more than %d", LAYERS_MAX);
        }
        json_array_foreach(layers, i, layer) {
                const char *path = json_string_value(layer);
                if (!path) {
                        r = fail(err, -EBADMSG, "manifest.json: layer %zu is not a path", i + 1);
                        break;
                }
                _cleanup_close_ int fd = open_beneath(lfd, path, O_RDONLY | O_NOCTTY);
                if (fd < 0) {
                        r = fail(err, fd, "Layer '%s': %s", path, strerror(-fd));
                        break;
                }
                logf_fd(log_fd, "layer %zu: %s\n", i + 1, path);
                r = apply_layer(fd, rootfs_fd, scratch, (unsigned) i, err);
                if (r < 0)
                        break;
        }
        json_decref(manifest);
        return r;
}

static int import_layout(int lfd, int rootfs_fd, const char *scratch, int log_fd, const char **ret_format,
                         ArchiveError *err) {
        if (faccessat(lfd, "oci-layout", F_OK, AT_SYMLINK_NOFOLLOW) >= 0) {
                *ret_format = "oci";
                return import_oci(lfd, rootfs_fd, scratch, log_fd, err);
        }
        if (faccessat(lfd, "manifest.json", F_OK, AT_SYMLINK_NOFOLLOW) >= 0) {
                *ret_format = "docker";
                return import_docker(lfd, rootfs_fd, scratch, log_fd, err);
        }
        return fail(err, -EINVAL, "Neither an OCI image layout (oci-layout, index.json) nor a docker save "
                                  "archive (manifest.json)");
}

static inline void archive_read_freep(struct archive **a) {
        if (*a)
                archive_read_free(*a);
}

/* Whether a tar holds an image layout (a top-level oci-layout or
 * manifest.json) rather than a root file system. Reads headers only. */
static int tar_is_layout(int fd, ArchiveError *err) {
        _cleanup_(archive_read_freep) struct archive *a = archive_read_new();
        uint64_t n = 0;
        int found = 0;

        if (!a)
                return -ENOMEM;
        if (archive_read_support_filter_gzip(a) != ARCHIVE_OK || archive_read_support_filter_xz(a) != ARCHIVE_OK ||
            archive_read_support_filter_zstd(a) != ARCHIVE_OK || archive_read_support_format_tar(a) != ARCHIVE_OK)
                return fail(err, -EOPNOTSUPP, "libarchive lacks gzip, xz or zstd");
        if (archive_read_open_fd(a, fd, 64 * 1024) != ARCHIVE_OK)
                return fail(err, -EINVAL, "Not a tar archive: %s", archive_error_string(a));
        for (;;) {
                struct archive_entry *e;
                int k = archive_read_next_header(a, &e);
                if (k == ARCHIVE_EOF)
                        break;
                if (k != ARCHIVE_OK && k != ARCHIVE_WARN)
                        return fail(err, -EINVAL, "Malformed archive: %s", archive_error_string(a));
                const char *p = archive_entry_pathname(e);
                if (p && strneq(p, "./", 2))
                        p += 2;
                if (p && (streq(p, "oci-layout") || streq(p, "manifest.json"))) {
                        found = 1;
                        break;
                }
                if (++n > image_rootfs_limits.max_entries)
                        return fail(err, -E2BIG, "Archive has too many entries");
        }
        if (lseek(fd, 0, SEEK_SET) < 0)
                return -errno;
        return found;
}

int image_import_source(const char *source, int rootfs_fd, const char *scratch_dir, int log_fd,
                        const char **ret_format, ArchiveError *ret_error) {
        struct stat st;
        int r;

        if (ret_error)
                ret_error->message[0] = 0;
        _cleanup_close_ int fd = open(source, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, &st) < 0)
                return fail(ret_error, -errno, "Cannot open '%s': %m", source);
        r = mkdir_p(scratch_dir, 0700);
        if (r < 0)
                return fail(ret_error, r, "Cannot create '%s': %s", scratch_dir, strerror(-r));
        if (S_ISDIR(st.st_mode)) {
                r = import_layout(fd, rootfs_fd, scratch_dir, log_fd, ret_format, ret_error);
                (void) rm_rf(scratch_dir);
                return r;
        }
        if (!S_ISREG(st.st_mode))
                return fail(ret_error, -EINVAL, "'%s' is neither a file nor a directory", source);
        r = tar_is_layout(fd, ret_error);
        if (r < 0)
                return r;
        if (r == 0) {
                *ret_format = "rootfs";
                ArchiveStats stats = {};
                logf_fd(log_fd, "root file system tarball: %s\n", source);
                r = archive_extract_rootfs(fd, rootfs_fd, &image_rootfs_limits, ARCHIVE_ROOTFS_SKIP_DEV_NODES, &stats,
                                           ret_error);
                if (r >= 0 && stats.n_skipped > 0)
                        logf_fd(log_fd, "skipped %" PRIu64 " device nodes in /dev\n", stats.n_skipped);
                return r;
        }
        /* A tar of a layout: unpacked under the workspace rules first. */
        _cleanup_free_ char *layout = NULL;
        if (asprintf(&layout, "%s/layout", scratch_dir) < 0)
                return -ENOMEM;
        if (mkdir(layout, 0700) < 0)
                return fail(ret_error, -errno, "Cannot create '%s': %m", layout);
        _cleanup_close_ int lfd = open(layout, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (lfd < 0)
                return fail(ret_error, -errno, "Cannot open '%s': %m", layout);
        ArchiveLimits l = image_rootfs_limits;
        l.max_entries = 100000;
        r = archive_extract_safe(fd, lfd, &l, NULL, ret_error);
        if (r >= 0)
                r = import_layout(lfd, rootfs_fd, scratch_dir, log_fd, ret_format, ret_error);
        (void) rm_rf(scratch_dir);
        return r;
}
