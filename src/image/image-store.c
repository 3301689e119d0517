/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "archive-safe.h"
#include "fd-util.h"
#include "fs-util.h"
#include "image-store.h"
#include "log.h"
#include "macro.h"
#include "parse-util.h"
#include "strv.h"

#define IMAGE_META_MAX (4U << 20)

/* A root file system holds many more entries than a workspace. */
static const ArchiveLimits rootfs_limits = {
        .max_entries = 2000000,
        .max_total_bytes = UINT64_C(64) << 30,
        .max_file_bytes = UINT64_C(16) << 30,
        .max_path_len = 4096,
        .max_depth = 128,
};

struct ImageStore {
        char *root;
};

int image_store_open(const char *data_dir, ImageStore **ret) {
        _cleanup_free_ char *root = NULL;
        int r;

        if (asprintf(&root, "%s/images", data_dir) < 0)
                return -ENOMEM;
        r = mkdir_p(root, 0755);
        if (r < 0)
                return r;
        /* Sandboxes need absolute image paths, and logs are named to the user. */
        char *abs = realpath(root, NULL);
        if (!abs)
                return -errno;
        ImageStore *s = calloc(1, sizeof *s);
        if (!s) {
                free(abs);
                return -ENOMEM;
        }
        s->root = abs;
        *ret = s;
        return 0;
}

ImageStore *image_store_free(ImageStore *s) {
        if (s) {
                free(s->root);
                free(s);
        }
        return NULL;
}

const char *image_store_root(const ImageStore *s) {
        return s->root;
}

bool image_name_valid(const char *name) {
        size_t n = strlen(name);

        if (n == 0 || n > IMAGE_NAME_MAX || streq(name, "host"))
                return false;
        if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789", name[0]))
                return false;
        return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static int rev_parse(const char *s, unsigned *ret) {
        unsigned v;
        if (!s[0] || strspn(s, "0123456789") != strlen(s) || safe_atou(s, &v) < 0 || v == 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int image_ref_parse(const char *ref, char **ret_name, unsigned *ret_rev) {
        const char *at = strchr(ref, '@');
        _cleanup_free_ char *name = at ? strndup(ref, (size_t) (at - ref)) : strdup(ref);
        unsigned rev = 0;

        if (!name)
                return -ENOMEM;
        if (!image_name_valid(name))
                return -EINVAL;
        if (at && rev_parse(at + 1, &rev) < 0)
                return -EINVAL;
        *ret_name = TAKE_PTR(name);
        *ret_rev = rev;
        return 0;
}

static char *image_path(const ImageStore *s, const char *name, const char *sub) {
        char *p;
        if (asprintf(&p, "%s/%s%s%s", s->root, name, sub ? "/" : "", sub ?: "") < 0)
                return NULL;
        return p;
}

char *image_rev_dir(const ImageStore *s, const char *name, unsigned rev, bool staging) {
        char *p;
        if (asprintf(&p, "%s/%s/revs/%u%s", s->root, name, rev, staging ? ".new" : "") < 0)
                return NULL;
        return p;
}

char *image_log_path(const ImageStore *s, const char *name, unsigned rev) {
        char *p;
        if (asprintf(&p, "%s/%s/logs/%u.log", s->root, name, rev) < 0)
                return NULL;
        return p;
}

int image_lock(ImageStore *s, const char *name) {
        _cleanup_free_ char *revs = image_path(s, name, "revs"), *logs = image_path(s, name, "logs"),
                            *lock = image_path(s, name, ".lock");
        int r;

        if (!revs || !logs || !lock)
                return -ENOMEM;
        if ((r = mkdir_p(revs, 0755)) < 0 || (r = mkdir_p(logs, 0755)) < 0)
                return r;
        _cleanup_close_ int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX) < 0)
                return -errno;
        return TAKE_FD(fd);
}

/* Highest revision number ever allocated: logs/<N>.log exist for every one. */
static int highest_rev(const ImageStore *s, const char *name, unsigned *ret) {
        _cleanup_free_ char *logs = image_path(s, name, "logs");
        unsigned max = 0;

        if (!logs)
                return -ENOMEM;
        DIR *d = opendir(logs);
        if (!d)
                return -errno;
        for (struct dirent *de; (de = readdir(d));) {
                char buf[32];
                const char *dot = strstr(de->d_name, ".log");
                unsigned v;
                if (!dot || dot[4] || (size_t) (dot - de->d_name) >= sizeof buf)
                        continue;
                memcpy(buf, de->d_name, (size_t) (dot - de->d_name));
                buf[dot - de->d_name] = 0;
                if (rev_parse(buf, &v) >= 0 && v > max)
                        max = v;
        }
        closedir(d);
        *ret = max;
        return 0;
}

int image_rev_begin(ImageStore *s, const char *name, unsigned *ret_rev, int *ret_log_fd) {
        _cleanup_close_ int lock = image_lock(s, name);
        _cleanup_free_ char *dir = NULL, *rootfs = NULL, *log = NULL;
        unsigned rev = 0;
        int r;

        if (lock < 0)
                return lock;
        r = highest_rev(s, name, &rev);
        if (r < 0)
                return r;
        if (rev >= UINT32_MAX - 1)
                return -ERANGE;
        rev++;
        dir = image_rev_dir(s, name, rev, true);
        log = image_log_path(s, name, rev);
        if (!dir || !log || asprintf(&rootfs, "%s/rootfs", dir) < 0)
                return -ENOMEM;
        (void) rm_rf(dir);
        if (mkdir(dir, 0755) < 0 || mkdir(rootfs, 0755) < 0)
                return -errno;
        int fd = open(log, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        *ret_rev = rev;
        *ret_log_fd = fd;
        return 0;
}

int image_file_digest(int fd, char ret[static 72], uint64_t *ret_size) {
        crypto_hash_sha256_state h;
        uint8_t buf[128 * 1024], d[crypto_hash_sha256_BYTES];
        uint64_t size = 0;

        if (lseek(fd, 0, SEEK_SET) < 0)
                return -errno;
        crypto_hash_sha256_init(&h);
        for (;;) {
                ssize_t k = read(fd, buf, sizeof buf);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                crypto_hash_sha256_update(&h, buf, (size_t) k);
                size += (uint64_t) k;
        }
        crypto_hash_sha256_final(&h, d);
        memcpy(ret, "sha256:", 7);
        for (size_t i = 0; i < sizeof d; i++)
                snprintf(ret + 7 + 2 * i, 3, "%02x", d[i]);
        if (ret_size)
                *ret_size = size;
        return 0;
}

static int json_write_atomic(const char *path, json_t *j) {
        _cleanup_free_ char *tmp = NULL;
        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        if (json_dumpfd(j, fd, JSON_INDENT(2) | JSON_SORT_KEYS) < 0 || loop_write(fd, "\n", 1) < 0)
                return -EIO;
        if (fsync(fd) < 0)
                return -errno;
        if (rename(tmp, path) < 0)
                return -errno;
        return 0;
}

static int json_read(const char *path, json_t **ret) {
        _cleanup_free_ char *data = NULL;
        size_t n;
        int r = read_full_file(path, IMAGE_META_MAX, &data, &n);
        if (r < 0)
                return r;
        json_t *j = json_loadb(data, n, 0, NULL);
        if (!j || !json_is_object(j)) {
                json_decref(j);
                return -EBADMSG;
        }
        *ret = j;
        return 0;
}

static int cmp_unsigned(const void *a, const void *b) {
        unsigned x = *(const unsigned *) a, y = *(const unsigned *) b;
        return x < y ? -1 : x > y;
}

int image_revs(ImageStore *s, const char *name, unsigned **ret, size_t *ret_n) {
        _cleanup_free_ char *revs = image_path(s, name, "revs");
        _cleanup_free_ unsigned *v = NULL;
        size_t n = 0;

        if (!revs)
                return -ENOMEM;
        DIR *d = opendir(revs);
        if (!d)
                return -errno;
        v = calloc(IMAGE_REVS_MAX, sizeof(unsigned));
        if (!v) {
                closedir(d);
                return -ENOMEM;
        }
        for (struct dirent *de; (de = readdir(d)) && n < IMAGE_REVS_MAX;) {
                unsigned rev;
                if (rev_parse(de->d_name, &rev) >= 0)
                        v[n++] = rev;
        }
        closedir(d);
        qsort(v, n, sizeof(unsigned), cmp_unsigned);
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int image_names(ImageStore *s, char ***ret) {
        _cleanup_strv_free_ char **names = NULL;
        DIR *d = opendir(s->root);
        if (!d)
                return -errno;
        for (struct dirent *de; (de = readdir(d));) {
                if (!image_name_valid(de->d_name))
                        continue;
                if (strv_extend(&names, de->d_name) < 0) {
                        closedir(d);
                        return -ENOMEM;
                }
        }
        closedir(d);
        size_t n = strv_length(names);
        if (n > 1)
                qsort(names, n, sizeof(char *), cmp_str);
        *ret = TAKE_PTR(names);
        return 0;
}

int image_current(ImageStore *s, const char *name, unsigned *ret_rev) {
        _cleanup_free_ char *cur = image_path(s, name, "current");
        char buf[64];

        if (!cur)
                return -ENOMEM;
        ssize_t k = readlink(cur, buf, sizeof buf - 1);
        if (k < 0)
                return -errno;
        buf[k] = 0;
        if (!strneq(buf, "revs/", 5))
                return -EBADMSG;
        return rev_parse(buf + 5, ret_rev) < 0 ? -EBADMSG : 0;
}

static int switch_locked(ImageStore *s, const char *name, unsigned rev) {
        _cleanup_free_ char *dir = image_rev_dir(s, name, rev, false), *tmp = image_path(s, name, ".current.new"),
                            *cur = image_path(s, name, "current");
        char target[32];
        struct stat st;

        if (!dir || !tmp || !cur)
                return -ENOMEM;
        if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
                return -ENOENT;
        snprintf(target, sizeof target, "revs/%u", rev);
        if (unlink(tmp) < 0 && errno != ENOENT)
                return -errno;
        if (symlink(target, tmp) < 0)
                return -errno;
        /* rename(2) replaces the old link in one step: a reader sees the old
         * revision or the new one, never neither. */
        if (rename(tmp, cur) < 0)
                return -errno;
        _cleanup_free_ char *parent = image_path(s, name, NULL);
        _cleanup_close_ int pfd = parent ? open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -EBADF;
        if (pfd >= 0)
                (void) fsync(pfd);
        return 0;
}

int image_switch(ImageStore *s, const char *name, unsigned rev) {
        _cleanup_close_ int lock = image_lock(s, name);
        if (lock < 0)
                return lock;
        return switch_locked(s, name, rev);
}

int image_hold(const char *rootfs_path, char **ret_rootfs) {
        _cleanup_free_ char *rootfs = realpath(rootfs_path, NULL);
        if (!rootfs)
                return -errno;
        _cleanup_close_ int fd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        _cleanup_close_ int rev = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (rev < 0)
                return -errno;
        if (flock(rev, LOCK_SH) < 0)
                return -errno;
        if (ret_rootfs)
                *ret_rootfs = TAKE_PTR(rootfs);
        return TAKE_FD(rev);
}

/* Whether a sandbox holds the revision (image_hold()). */
static bool rev_held(const char *dir) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return false;
        return flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

static int prune_locked(ImageStore *s, const char *name, unsigned keep) {
        _cleanup_free_ unsigned *revs = NULL;
        unsigned cur = 0;
        size_t n;
        int r;

        r = image_revs(s, name, &revs, &n);
        if (r < 0)
                return r;
        (void) image_current(s, name, &cur);
        for (size_t i = 0; i < n && n - i > keep; i++) {
                if (revs[i] == cur)
                        continue;
                _cleanup_free_ char *dir = image_rev_dir(s, name, revs[i], false);
                if (!dir)
                        return -ENOMEM;
                if (rev_held(dir))
                        continue; /* a later prune removes it */
                r = rm_rf(dir);
                if (r < 0)
                        log_warning_errno(r, "Failed to remove '%s': %m", dir);
        }
        return 0;
}

int image_rev_commit(ImageStore *s, const char *name, unsigned rev, json_t *meta, unsigned keep) {
        _cleanup_free_ char *staging = image_rev_dir(s, name, rev, true), *final = image_rev_dir(s, name, rev, false),
                            *rootfs = NULL, *tar = NULL, *metapath = NULL;
        ArchiveStats st = {};
        ArchiveError err = {};
        char digest[72];
        uint64_t size;
        int r;

        if (!staging || !final || asprintf(&rootfs, "%s/rootfs", staging) < 0 ||
            asprintf(&tar, "%s/rootfs.tar.zst", staging) < 0 || asprintf(&metapath, "%s/meta.json", staging) < 0)
                return -ENOMEM;
        _cleanup_close_ int dfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dfd < 0)
                return log_error_errno(errno, "Failed to open '%s': %m", rootfs);
        _cleanup_close_ int out = open(tar, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (out < 0)
                return log_error_errno(errno, "Failed to create '%s': %m", tar);
        r = archive_pack_rootfs(dfd, out, &rootfs_limits, &st, &err);
        if (r < 0)
                return log_error_errno(r, "Failed to pack the root file system: %s", err.message);
        if (fsync(out) < 0)
                return log_error_errno(errno, "Failed to write '%s': %m", tar);
        r = image_file_digest(out, digest, &size);
        if (r < 0)
                return log_error_errno(r, "Failed to hash '%s': %m", tar);

        if (json_object_set_new(meta, "name", json_string(name)) < 0 ||
            json_object_set_new(meta, "revision", json_integer(rev)) < 0 ||
            json_object_set_new(meta, "digest", json_string(digest)) < 0 ||
            json_object_set_new(meta, "archive_bytes", json_integer((json_int_t) size)) < 0 ||
            json_object_set_new(meta, "rootfs_bytes", json_integer((json_int_t) st.bytes)) < 0 ||
            json_object_set_new(meta, "entries", json_integer((json_int_t) st.n_entries)) < 0 ||
            json_object_set_new(meta, "created", json_integer((json_int_t) time(NULL))) < 0)
                return -ENOMEM;
        r = json_write_atomic(metapath, meta);
        if (r < 0)
                return log_error_errno(r, "Failed to write '%s': %m", metapath);

        _cleanup_close_ int lock = image_lock(s, name);
        if (lock < 0)
                return log_error_errno(lock, "Failed to lock image '%s': %m", name);
        if (rename(staging, final) < 0)
                return log_error_errno(errno, "Failed to rename '%s': %m", staging);
        r = switch_locked(s, name, rev);
        if (r < 0)
                return log_error_errno(r, "Failed to switch image '%s' to revision %u: %m", name, rev);
        (void) prune_locked(s, name, MAX(keep, 1U));
        return 0;
}

int image_info(ImageStore *s, const char *name, json_t **ret) {
        _cleanup_free_ char *p = image_path(s, name, "image.json");
        if (!p)
                return -ENOMEM;
        int r = json_read(p, ret);
        if (r == -ENOENT) {
                *ret = json_object();
                return *ret ? 0 : -ENOMEM;
        }
        return r;
}

int image_info_update(ImageStore *s, const char *name, const char *key, json_t *value) {
        _cleanup_close_ int lock = image_lock(s, name);
        _cleanup_free_ char *p = image_path(s, name, "image.json");
        json_t *info = NULL;
        int r;

        if (lock < 0)
                return lock;
        if (!p)
                return -ENOMEM;
        r = image_info(s, name, &info);
        if (r < 0)
                return r;
        json_object_set(info, key, value);
        r = json_write_atomic(p, info);
        json_decref(info);
        return r;
}

int image_rev_abort(ImageStore *s, const char *name, unsigned rev, json_t *failure) {
        _cleanup_free_ char *staging = image_rev_dir(s, name, rev, true);
        if (!staging)
                return -ENOMEM;
        (void) rm_rf(staging);
        return image_info_update(s, name, "last_build", failure);
}

int image_rev_meta(ImageStore *s, const char *name, unsigned rev, json_t **ret) {
        _cleanup_free_ char *dir = image_rev_dir(s, name, rev, false), *p = NULL;
        if (!dir || asprintf(&p, "%s/meta.json", dir) < 0)
                return -ENOMEM;
        return json_read(p, ret);
}

int image_remove(ImageStore *s, const char *name, unsigned rev) {
        _cleanup_close_ int lock = -EBADF;
        _cleanup_free_ char *top = image_path(s, name, NULL);
        struct stat st;
        unsigned cur = 0;

        if (!top)
                return -ENOMEM;
        if (stat(top, &st) < 0)
                return -errno;
        lock = image_lock(s, name);
        if (lock < 0)
                return lock;
        if (rev == 0)
                return rm_rf(top);
        _cleanup_free_ char *dir = image_rev_dir(s, name, rev, false);
        if (!dir)
                return -ENOMEM;
        if (stat(dir, &st) < 0)
                return -errno;
        if ((image_current(s, name, &cur) >= 0 && cur == rev) || rev_held(dir))
                return -EBUSY;
        return rm_rf(dir);
}
