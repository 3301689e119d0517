/* SPDX-License-Identifier: MIT */
#include <archive.h>
#include <archive_entry.h>
#include <sodium.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive-safe.h"
#include "fd-util.h"
#include "macro.h"

const ArchiveLimits archive_limits_default = {
        .max_entries = 100000,
        .max_total_bytes = UINT64_C(8) << 30,
        .max_file_bytes = UINT64_C(4) << 30,
        .max_path_len = 1024,
        .max_depth = 64,
};

/* A walk of a tree to pack visits at most this many entries, whatever the
 * globs select. */
#define PACK_VISIT_MAX 2000000
#define GLOB_DOUBLESTAR_MAX 4

static inline void archive_read_freep(struct archive **a) {
        if (*a)
                archive_read_free(*a);
}
static inline void archive_write_freep(struct archive **a) {
        if (*a)
                archive_write_free(*a);
}
static inline void archive_entry_freep(struct archive_entry **e) {
        if (*e)
                archive_entry_free(*e);
}
static inline void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

/* Copies s for a message: at most 160 bytes, control characters as '?'. */
static const char *printable(const char *s, char *buf, size_t size) {
        size_t i = 0;

        for (; s && s[i] && i + 4 < size && i < 160; i++)
                buf[i] = ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
        if (s && s[i] && i + 4 < size)
                memcpy(buf + i, "...", 3), i += 3;
        buf[i] = 0;
        return buf;
}
#define P(s) printable((s), (char[192]) {}, 192)

_printf_(3, 4) static int fail(ArchiveError *e, int r, const char *fmt, ...) {
        va_list ap;

        if (e) {
                va_start(ap, fmt);
                (void) vsnprintf(e->message, sizeof(e->message), fmt, ap);
                va_end(ap);
        }
        return r;
}

/* A failed write of an archive: libarchive's message with the system's
 * reason, when it has one ("Write error" alone does not say the disk is
 * full), and that reason as the return value. */
static int fail_write(ArchiveError *e, struct archive *a, const char *what, const char *path) {
        int err = archive_errno(a);
        const char *msg = archive_error_string(a);
        char where[200] = "";

        if (path)
                snprintf(where, sizeof where, " '%s'", P(path));
        if (err <= 0)
                return fail(e, -EIO, "%s%s: %s", what, where, msg ? msg : "unknown error");
        return fail(e, -err, "%s%s: %s: %s", what, where, msg ? msg : "error", strerror(err));
}

/* ---- paths ---- */

/* Normalises an archive path: drops "." and empty components, refuses an
 * absolute path or a ".." component. ret gets "a/b/c" ("" for the root). */
static int path_normalize(const char *p, const ArchiveLimits *l, char **ret, unsigned *ret_depth) {
        _cleanup_free_ char *out = NULL;
        size_t n = strlen(p), o = 0;
        unsigned depth = 0;

        if (n > l->max_path_len)
                return -ENAMETOOLONG;
        if (p[0] == '/')
                return -EINVAL;
        out = malloc(n + 1);
        if (!out)
                return -ENOMEM;
        for (const char *c = p; *c;) {
                size_t len = strcspn(c, "/");

                if (len == 2 && c[0] == '.' && c[1] == '.')
                        return -EINVAL;
                if (len > 0 && !(len == 1 && c[0] == '.')) {
                        if (len > NAME_MAX || ++depth > l->max_depth)
                                return -ENAMETOOLONG;
                        if (o > 0)
                                out[o++] = '/';
                        memcpy(out + o, c, len);
                        o += len;
                }
                c += len;
                if (*c == '/')
                        c++;
        }
        out[o] = 0;
        *ret = TAKE_PTR(out);
        *ret_depth = depth;
        return 0;
}

/* A symlink target is accepted when it is relative and made of a run of
 * ".." no longer than the depth of the directory holding the link, then
 * names only. Since every directory the extractor creates is a real
 * directory, such a link resolves inside the tree even when its names are
 * themselves such links (by induction on the resolution). */
static int symlink_target_check(const char *target, unsigned parent_depth) {
        unsigned up = 0;
        bool named = false;

        if (target[0] == '/')
                return -ELOOP;
        for (const char *c = target; *c;) {
                size_t len = strcspn(c, "/");

                if (len == 2 && c[0] == '.' && c[1] == '.') {
                        if (named || ++up > parent_depth)
                                return -ELOOP;
                } else if (len > 0 && !(len == 1 && c[0] == '.'))
                        named = true;
                c += len;
                if (*c == '/')
                        c++;
        }
        return 0;
}

/* Splits "a/b/c" in place into "a/b" and "c" (dir "" for a top-level name). */
static void path_split(char *path, const char **ret_dir, const char **ret_name) {
        char *slash = strrchr(path, '/');

        if (!slash) {
                *ret_dir = "";
                *ret_name = path;
                return;
        }
        *slash = 0;
        *ret_dir = path;
        *ret_name = slash + 1;
}

/* Opens directory `dir` (normalised, may be "") below root_fd one component
 * at a time without following symlinks, creating missing components when
 * asked. On -ELOOP/-ENOTDIR *ret_bad (if set) names the component. */
static int open_dir_beneath(int root_fd, const char *dir, bool create, int *ret_fd,
                            char **ret_bad) {
        _cleanup_close_ int fd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        for (const char *c = dir; *c;) {
                size_t len = strcspn(c, "/");
                char name[NAME_MAX + 1];
                int nfd;

                if (len > NAME_MAX)
                        return -ENAMETOOLONG;
                memcpy(name, c, len);
                name[len] = 0;
                if (create && mkdirat(fd, name, 0755) < 0 && errno != EEXIST)
                        return -errno;
                nfd = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0) {
                        int r = -errno;
                        struct stat st;

                        if (r == -ELOOP || r == -ENOTDIR) {
                                if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) >= 0 &&
                                    S_ISLNK(st.st_mode))
                                        r = -ELOOP;
                                if (ret_bad)
                                        *ret_bad = strndup(dir, (size_t) (c - dir) + len);
                        }
                        return r;
                }
                safe_close(fd);
                fd = nfd;
                c += len;
                if (*c == '/')
                        c++;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* ---- extraction ---- */

typedef struct Extractor {
        struct archive *a;
        int root_fd;
        const ArchiveLimits *limits;
        ArchiveStats stats;
        ArchiveError *error;
        bool rootfs; /* archive_extract_rootfs(): owners, all mode bits, any symlink target */
        bool skip_dev_nodes;
        /* The last parent directory: archives list siblings together. */
        char *cached_dir;
        int cached_fd;
} Extractor;

static int extractor_parent(Extractor *x, const char *entry, const char *dir, int *ret_fd) {
        _cleanup_free_ char *bad = NULL;
        int r, fd;

        if (x->cached_dir && streq(x->cached_dir, dir)) {
                *ret_fd = x->cached_fd;
                return 0;
        }
        r = open_dir_beneath(x->root_fd, dir, true, &fd, &bad);
        if (r == -ELOOP)
                return fail(x->error, r, "Entry '%s' goes through the symlink '%s'", P(entry), P(bad));
        if (r == -ENOTDIR)
                return fail(x->error, r, "Entry '%s': '%s' is not a directory", P(entry), P(bad));
        if (r < 0)
                return fail(x->error, r, "Entry '%s': cannot create its directory: %s", P(entry),
                            strerror(-r));
        free(x->cached_dir);
        x->cached_dir = strdup(dir);
        safe_close(x->cached_fd);
        x->cached_fd = x->cached_dir ? fd : safe_close(fd);
        if (!x->cached_dir)
                return -ENOMEM;
        *ret_fd = fd;
        return 0;
}

static int exists_error(Extractor *x, int r, const char *path) {
        if (r == -EEXIST)
                return fail(x->error, r, "Entry '%s' appears twice in the archive", P(path));
        return fail(x->error, r, "Cannot create '%s': %s", P(path), strerror(-r));
}

static int account_bytes(Extractor *x, const char *path, uint64_t add, uint64_t file_total) {
        const ArchiveLimits *l = x->limits;

        if (file_total > l->max_file_bytes)
                return fail(x->error, -EFBIG, "File '%s' is larger than %" PRIu64 " bytes",
                            P(path), l->max_file_bytes);
        if (add > l->max_total_bytes - x->stats.bytes)
                return fail(x->error, -EFBIG,
                            "Archive expands to more than %" PRIu64 " bytes (at '%s')",
                            l->max_total_bytes, P(path));
        x->stats.bytes += add;
        return 0;
}

static int pwrite_all(int fd, const void *p, size_t n, off_t off) {
        const uint8_t *b = p;

        while (n > 0) {
                ssize_t k = pwrite(fd, b, n, off);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                b += k;
                n -= (size_t) k;
                off += k;
        }
        return 0;
}

static int extract_file(Extractor *x, struct archive_entry *e, const char *path, int pfd,
                        const char *name, mode_t mode) {
        _cleanup_close_ int fd = -EBADF;
        int64_t declared = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
        uint64_t accounted;
        struct timespec ts[2];
        int r;

        if (declared < 0)
                return fail(x->error, -EINVAL, "Entry '%s' has a negative size", P(path));
        accounted = (uint64_t) declared;
        r = account_bytes(x, path, accounted, accounted);
        if (r < 0)
                return r;

        fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return exists_error(x, -errno, path);

        for (;;) {
                const void *buf;
                size_t len;
                la_int64_t off;

                r = archive_read_data_block(x->a, &buf, &len, &off);
                if (r == ARCHIVE_EOF)
                        break;
                if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
                        return fail(x->error, -EINVAL, "Cannot read '%s' from the archive: %s",
                                    P(path), archive_error_string(x->a));
                if (off < 0 || len > UINT64_MAX - (uint64_t) off)
                        return fail(x->error, -EINVAL, "Entry '%s' has a bad data offset", P(path));
                if ((uint64_t) off + len > accounted) {
                        uint64_t end = (uint64_t) off + len;
                        r = account_bytes(x, path, end - accounted, end);
                        if (r < 0)
                                return r;
                        accounted = end;
                }
                r = pwrite_all(fd, buf, len, (off_t) off);
                if (r < 0)
                        return fail(x->error, r, "Cannot write '%s': %s", P(path), strerror(-r));
        }
        /* Holes at the end of a sparse file are only in the size. Owners
         * first: chown clears setuid and setgid. */
        if (ftruncate(fd, (off_t) accounted) < 0 ||
            (x->rootfs && fchown(fd, (uid_t) archive_entry_uid(e), (gid_t) archive_entry_gid(e)) < 0) ||
            fchmod(fd, mode) < 0)
                return fail(x->error, -errno, "Cannot finish '%s': %m", P(path));
        ts[0] = (struct timespec) { .tv_nsec = UTIME_OMIT };
        ts[1] = (struct timespec) { archive_entry_mtime(e), archive_entry_mtime_nsec(e) };
        if (archive_entry_mtime_is_set(e))
                (void) futimens(fd, ts);
        x->stats.n_files++;
        return 0;
}

static int extract_dir(Extractor *x, struct archive_entry *e, const char *path, int pfd,
                       const char *name, mode_t mode) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        if (mkdirat(pfd, name, 0700) < 0) {
                if (errno != EEXIST)
                        return exists_error(x, -errno, path);
                if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return fail(x->error, -errno, "Cannot stat '%s': %m", P(path));
                if (S_ISLNK(st.st_mode))
                        return fail(x->error, -ELOOP, "Directory entry '%s' is already a symlink",
                                    P(path));
                if (!S_ISDIR(st.st_mode))
                        return exists_error(x, -EEXIST, path);
        }
        fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 && x->rootfs &&
            fchown(fd, (uid_t) archive_entry_uid(e), (gid_t) archive_entry_gid(e)) < 0)
                return fail(x->error, -errno, "Cannot set the owner of '%s': %m", P(path));
        if (fd < 0 || fchmod(fd, mode | 0700) < 0)
                return fail(x->error, -errno, "Cannot open directory '%s': %m", P(path));
        x->stats.n_dirs++;
        return 0;
}

static int extract_symlink(Extractor *x, struct archive_entry *e, const char *path,
                           unsigned depth, int pfd, const char *name) {
        const char *target = archive_entry_symlink(e);
        struct timespec ts[2];

        if (isempty(target))
                return fail(x->error, -EINVAL, "Symlink '%s' has no target", P(path));
        if (strlen(target) > x->limits->max_path_len)
                return fail(x->error, -ENAMETOOLONG, "Symlink '%s' has a target that is too long",
                            P(path));
        /* In a root file system absolute links are normal: they resolve inside
         * the sandbox's root. The extractor itself never follows a link. */
        if (!x->rootfs && symlink_target_check(target, depth - 1) < 0)
                return fail(x->error, -ELOOP, "Symlink '%s' -> '%s' points outside the target",
                            P(path), P(target));
        if (symlinkat(target, pfd, name) < 0)
                return exists_error(x, -errno, path);
        if (x->rootfs && fchownat(pfd, name, (uid_t) archive_entry_uid(e), (gid_t) archive_entry_gid(e),
                                  AT_SYMLINK_NOFOLLOW) < 0)
                return fail(x->error, -errno, "Cannot set the owner of '%s': %m", P(path));
        ts[0] = (struct timespec) { .tv_nsec = UTIME_OMIT };
        ts[1] = (struct timespec) { archive_entry_mtime(e), archive_entry_mtime_nsec(e) };
        if (archive_entry_mtime_is_set(e))
                (void) utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW);
        x->stats.n_symlinks++;
        return 0;
}

static int extract_hardlink(Extractor *x, const char *path, const char *raw_target, int pfd,
                            const char *name) {
        _cleanup_free_ char *target = NULL;
        _cleanup_close_ int tfd = -EBADF;
        const char *tdir, *tname;
        unsigned tdepth;
        struct stat st;
        int r;

        r = path_normalize(raw_target, x->limits, &target, &tdepth);
        if (r < 0 || tdepth == 0)
                return fail(x->error, r == -ENAMETOOLONG ? r : -EPERM,
                            "Hardlink '%s' -> '%s' points outside the target", P(path),
                            P(raw_target));
        path_split(target, &tdir, &tname);
        r = open_dir_beneath(x->root_fd, tdir, false, &tfd, NULL);
        if (r >= 0 && fstatat(tfd, tname, &st, AT_SYMLINK_NOFOLLOW) < 0)
                r = -errno;
        if (r >= 0 && !S_ISREG(st.st_mode))
                r = -EPERM;
        if (r < 0)
                return fail(x->error, -EPERM,
                            "Hardlink '%s' -> '%s' does not point to a regular file extracted "
                            "before it", P(path), P(raw_target));
        if (linkat(tfd, tname, pfd, name, 0) < 0)
                return exists_error(x, -errno, path);
        x->stats.n_hardlinks++;
        return 0;
}

static const char *special_type_name(mode_t type) {
        switch (type) {
        case AE_IFCHR:
                return "character device";
        case AE_IFBLK:
                return "block device";
        case AE_IFIFO:
                return "FIFO";
        case AE_IFSOCK:
                return "socket";
        default:
                return "file of unknown type";
        }
}

static int extract_entry(Extractor *x, struct archive_entry *e) {
        const char *raw = archive_entry_pathname(e), *hardlink = archive_entry_hardlink(e);
        _cleanup_free_ char *path = NULL, *split = NULL;
        mode_t type = archive_entry_filetype(e), mode = archive_entry_perm(e);
        const char *dir, *name;
        unsigned depth;
        int pfd = -EBADF, r;

        if (isempty(raw))
                return fail(x->error, -EINVAL, "Archive entry without a path");
        if (++x->stats.n_entries > x->limits->max_entries)
                return fail(x->error, -E2BIG, "Archive has more than %" PRIu64 " entries",
                            x->limits->max_entries);
        r = path_normalize(raw, x->limits, &path, &depth);
        if (r == -EINVAL)
                return fail(x->error, r, "Entry '%s' has an absolute path or a '..' component",
                            P(raw));
        if (r == -ENAMETOOLONG)
                return fail(x->error, r, "Entry '%s' has a path that is too long or too deep",
                            P(raw));
        if (r < 0)
                return r;
        if (depth == 0) {
                if (type == AE_IFDIR && !hardlink)
                        return 0; /* "./" itself */
                return fail(x->error, -EINVAL, "Entry '%s' names the target directory", P(raw));
        }
        if (!hardlink && (type == AE_IFCHR || type == AE_IFBLK) && x->skip_dev_nodes && depth == 2 &&
            strneq(path, "dev/", 4)) {
                x->stats.n_skipped++;
                return 0;
        }
        if (!hardlink && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
                return fail(x->error, -EPERM, "Entry '%s' is a %s: refused", P(raw),
                            special_type_name(type));
        if ((mode & 07000) && !x->rootfs) {
                x->stats.n_stripped++;
                mode &= 0777;
        }

        split = strdup(path);
        if (!split)
                return -ENOMEM;
        path_split(split, &dir, &name);
        r = extractor_parent(x, path, dir, &pfd);
        if (r < 0)
                return r;

        if (hardlink)
                return extract_hardlink(x, path, hardlink, pfd, name);
        if (type == AE_IFDIR)
                return extract_dir(x, e, path, pfd, name, mode);
        if (type == AE_IFLNK)
                return extract_symlink(x, e, path, depth, pfd, name);
        return extract_file(x, e, path, pfd, name, mode);
}

static int extract(int archive_fd, int target_dir_fd, bool rootfs, bool skip_dev_nodes, const ArchiveLimits *l,
                   ArchiveStats *ret_stats, ArchiveError *ret_error) {
        _cleanup_(archive_read_freep) struct archive *a = archive_read_new();
        Extractor x = {
                .a = a,
                .root_fd = target_dir_fd,
                .limits = l ?: &archive_limits_default,
                .error = ret_error,
                .rootfs = rootfs,
                .skip_dev_nodes = skip_dev_nodes,
                .cached_fd = -EBADF,
        };
        int r = 0;

        if (ret_error)
                ret_error->message[0] = 0;
        if (!a)
                return -ENOMEM;
        if (archive_read_support_filter_gzip(a) != ARCHIVE_OK ||
            archive_read_support_filter_xz(a) != ARCHIVE_OK ||
            archive_read_support_filter_zstd(a) != ARCHIVE_OK ||
            archive_read_support_format_tar(a) != ARCHIVE_OK ||
            archive_read_support_format_empty(a) != ARCHIVE_OK)
                return fail(ret_error, -EOPNOTSUPP, "libarchive lacks gzip, xz or zstd: %s",
                            archive_error_string(a));
        if (archive_read_open_fd(a, archive_fd, 64 * 1024) != ARCHIVE_OK)
                return fail(ret_error, -EINVAL, "Not a supported archive: %s",
                            archive_error_string(a));

        for (;;) {
                struct archive_entry *e;
                int k = archive_read_next_header(a, &e);

                if (k == ARCHIVE_EOF)
                        break;
                if (k != ARCHIVE_OK && k != ARCHIVE_WARN) {
                        r = fail(ret_error, -EINVAL, "Malformed archive: %s",
                                 archive_error_string(a));
                        break;
                }
                r = extract_entry(&x, e);
                if (r < 0)
                        break;
        }
        free(x.cached_dir);
        safe_close(x.cached_fd);
        if (r < 0)
                return r;
        if (ret_stats)
                *ret_stats = x.stats;
        return 0;
}

int archive_extract_safe(int archive_fd, int target_dir_fd, const ArchiveLimits *l,
                         ArchiveStats *ret_stats, ArchiveError *ret_error) {
        return extract(archive_fd, target_dir_fd, false, false, l, ret_stats, ret_error);
}

int archive_extract_rootfs(int archive_fd, int target_dir_fd, const ArchiveLimits *l, ArchiveRootfsFlags flags,
                           ArchiveStats *ret_stats, ArchiveError *ret_error) {
        return extract(archive_fd, target_dir_fd, true, flags & ARCHIVE_ROOTFS_SKIP_DEV_NODES, l, ret_stats,
                       ret_error);
}

/* ---- globs ---- */

static bool segment_match(const char *g, size_t glen, const char *p, size_t plen) {
        char gs[NAME_MAX + 1], ps[NAME_MAX + 1];

        if (glen > NAME_MAX || plen > NAME_MAX)
                return false;
        memcpy(gs, g, glen);
        gs[glen] = 0;
        memcpy(ps, p, plen);
        ps[plen] = 0;
        return fnmatch(gs, ps, 0) == 0;
}

static bool glob_match_from(const char *g, const char *p) {
        size_t glen, plen;

        if (!*g)
                return !*p;
        glen = strcspn(g, "/");
        if (glen == 2 && g[0] == '*' && g[1] == '*') {
                const char *gnext = g[2] ? g + 3 : g + 2;
                for (;;) {
                        if (glob_match_from(gnext, p))
                                return true;
                        if (!*p)
                                return false;
                        p += strcspn(p, "/");
                        if (*p)
                                p++;
                }
        }
        if (!*p)
                return false;
        plen = strcspn(p, "/");
        if (!segment_match(g, glen, p, plen))
                return false;
        g += glen;
        p += plen;
        if (*g)
                g++;
        if (*p) {
                p++;
                if (!*p)
                        return false;
        }
        return glob_match_from(g, p);
}

bool archive_glob_match(const char *glob, const char *path) {
        while (glob[0] == '.' && glob[1] == '/')
                glob += 2;
        return glob_match_from(glob, path);
}

static int glob_check(const char *g, const ArchiveLimits *l) {
        unsigned stars = 0;

        if (isempty(g) || g[0] == '/' || strlen(g) > l->max_path_len)
                return -EINVAL;
        for (const char *c = g; *c;) {
                size_t len = strcspn(c, "/");
                if (len == 2 && c[0] == '.' && c[1] == '.')
                        return -EINVAL;
                if (len == 2 && c[0] == '*' && c[1] == '*' && ++stars > GLOB_DOUBLESTAR_MAX)
                        return -EINVAL;
                c += len;
                if (*c == '/')
                        c++;
        }
        return 0;
}

static bool globs_match(char *const *globs, const char *path) {
        for (char *const *g = globs; g && *g; g++) {
                _cleanup_free_ char *trimmed = strdup(*g);
                size_t n;

                if (!trimmed)
                        return false;
                n = strlen(trimmed);
                while (n > 1 && trimmed[n - 1] == '/')
                        trimmed[--n] = 0;
                if (archive_glob_match(trimmed, path))
                        return true;
        }
        return false;
}

/* ---- packing ---- */

typedef struct PackEntry {
        char *path;
        mode_t mode;
        uid_t uid;
        gid_t gid;
        uint64_t size;
        int64_t mtime;
        char *link;
        /* For archive_pack_dir_stamp() only. */
        uint64_t ino, dev;
        int64_t mtime_ns, ctime_ns;
} PackEntry;

typedef struct Frame {
        const struct Frame *up;
        PackEntry dir;
        bool *added;
} Frame;

typedef struct Packer {
        int root_fd;
        char *const *globs; /* include (archive_pack) or exclude (archive_pack_dir) */
        bool exclude;
        bool rootfs; /* archive_pack_rootfs(): owners, all mode bits, any symlink target */
        const ArchiveLimits *limits;
        ArchiveStats stats;
        ArchiveError *error;
        PackEntry *items;
        size_t n_items, cap;
        uint64_t visited;
} Packer;

static void pack_entry_done(PackEntry *e) {
        e->path = mfree(e->path);
        e->link = mfree(e->link);
}

static void packer_done(Packer *p) {
        for (size_t i = 0; i < p->n_items; i++)
                pack_entry_done(&p->items[i]);
        p->items = mfree(p->items);
}

static int packer_push(Packer *p, const PackEntry *e) {
        PackEntry copy = { .mode = e->mode, .uid = e->uid, .gid = e->gid, .size = e->size,
                           .mtime = e->mtime, .ino = e->ino, .dev = e->dev, .mtime_ns = e->mtime_ns,
                           .ctime_ns = e->ctime_ns };

        if (p->n_items >= p->limits->max_entries)
                return fail(p->error, -E2BIG, "More than %" PRIu64 " entries to pack",
                            p->limits->max_entries);
        if (S_ISREG(e->mode)) {
                if (e->size > p->limits->max_file_bytes)
                        return fail(p->error, -EFBIG, "File '%s' is larger than %" PRIu64 " bytes",
                                    P(e->path), p->limits->max_file_bytes);
                if (e->size > p->limits->max_total_bytes - p->stats.bytes)
                        return fail(p->error, -EFBIG, "More than %" PRIu64 " bytes to pack (at '%s')",
                                    p->limits->max_total_bytes, P(e->path));
                p->stats.bytes += e->size;
        }
        if (p->n_items == p->cap) {
                size_t cap = MAX(p->cap * 2, (size_t) 64);
                PackEntry *items = reallocarray(p->items, cap, sizeof(PackEntry));
                if (!items)
                        return -ENOMEM;
                p->items = items;
                p->cap = cap;
        }
        copy.path = strdup(e->path);
        copy.link = e->link ? strdup(e->link) : NULL;
        if (!copy.path || (e->link && !copy.link)) {
                pack_entry_done(&copy);
                return -ENOMEM;
        }
        p->items[p->n_items++] = copy;
        return 0;
}

/* Adds e after the directories above it that are not in the list yet. */
static int packer_add(Packer *p, const Frame *f, const PackEntry *e) {
        int r;

        if (f && !*f->added) {
                r = packer_add(p, f->up, &f->dir);
                if (r < 0)
                        return r;
                *f->added = true;
        }
        return packer_push(p, e);
}

static int pack_walk(Packer *p, int dfd, const Frame *f, const char *prefix, unsigned depth,
                     bool selected);

static int pack_visit(Packer *p, int dfd, const Frame *f, const char *prefix, unsigned depth,
                      bool selected, const char *name) {
        _cleanup_free_ char *path = NULL, *link = NULL;
        PackEntry e = {};
        struct stat st;
        bool match;
        int r;

        if (++p->visited > PACK_VISIT_MAX)
                return fail(p->error, -E2BIG, "More than %d entries under the directory",
                            PACK_VISIT_MAX);
        if (asprintf(&path, "%s%s%s", prefix, *prefix ? "/" : "", name) < 0)
                return -ENOMEM;
        match = globs_match(p->globs, path);
        if (p->exclude && match)
                return 0;
        selected = p->exclude || selected || match;
        if (strlen(path) > p->limits->max_path_len || depth + 1 > p->limits->max_depth) {
                /* Nothing this deep can be packed; only say so when it was asked for. */
                if (!selected)
                        return 0;
                return fail(p->error, -ENAMETOOLONG, "Path '%s' is too long or too deep", P(path));
        }
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return fail(p->error, -errno, "Cannot stat '%s': %m", P(path));

        e = (PackEntry) { .path = path, .mode = st.st_mode, .mtime = st.st_mtim.tv_sec, .ino = st.st_ino,
                          .dev = st.st_dev,
                          .mtime_ns = (int64_t) st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec,
                          .ctime_ns = (int64_t) st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec };
        if (p->rootfs) {
                e.uid = st.st_uid;
                e.gid = st.st_gid;
        }
        if (S_ISDIR(st.st_mode)) {
                _cleanup_close_ int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                bool added = false;
                Frame child = { .up = f, .dir = e, .added = &added };

                child.dir.mtime = 0;
                if (sub < 0)
                        return fail(p->error, -errno, "Cannot open '%s': %m", P(path));
                if (selected) {
                        r = packer_add(p, f, &child.dir);
                        if (r < 0)
                                return r;
                        added = true;
                }
                return pack_walk(p, sub, &child, path, depth + 1, selected);
        }
        if (!selected)
                return 0;
        if (S_ISLNK(st.st_mode)) {
                size_t max = p->limits->max_path_len + 1;
                ssize_t k;

                link = malloc(max + 1);
                if (!link)
                        return -ENOMEM;
                k = readlinkat(dfd, name, link, max);
                if (k < 0)
                        return fail(p->error, -errno, "Cannot read symlink '%s': %m", P(path));
                link[k] = 0;
                if ((size_t) k >= max || k == 0 || (!p->rootfs && symlink_target_check(link, depth) < 0)) {
                        p->stats.n_skipped++;
                        return 0;
                }
                e.link = link;
        } else if (S_ISREG(st.st_mode))
                e.size = (uint64_t) st.st_size;
        else {
                p->stats.n_skipped++;
                return 0;
        }
        return packer_add(p, f, &e);
}

static int name_cmp(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int pack_walk(Packer *p, int dfd, const Frame *f, const char *prefix, unsigned depth,
                     bool selected) {
        _cleanup_(closedirp) DIR *d = NULL;
        char **names = NULL;
        size_t n = 0, cap = 0;
        int fd, r = 0;

        fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return fail(p->error, -errno, "Cannot open '%s': %m", P(*prefix ? prefix : "."));
        d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return -errno;
        }
        /* Names are sorted here so that limits trip on the same entry every time. */
        for (struct dirent *de; (errno = 0, de = readdir(d));) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (n == cap) {
                        char **nn = reallocarray(names, cap = MAX(cap * 2, (size_t) 16), sizeof(char *));
                        if (!nn) {
                                r = -ENOMEM;
                                break;
                        }
                        names = nn;
                }
                names[n] = strdup(de->d_name);
                if (!names[n]) {
                        r = -ENOMEM;
                        break;
                }
                n++;
        }
        if (r == 0 && errno != 0)
                r = fail(p->error, -errno, "Cannot read directory '%s': %m", P(prefix));
        if (r == 0 && n > 0)
                qsort(names, n, sizeof(char *), name_cmp);
        for (size_t i = 0; i < n && r >= 0; i++)
                r = pack_visit(p, dirfd(d), f, prefix, depth, selected, names[i]);
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return r;
}

static int entry_cmp(const void *a, const void *b) {
        return strcmp(((const PackEntry *) a)->path, ((const PackEntry *) b)->path);
}

static int pack_copy_file(Packer *p, struct archive *a, struct archive_entry *ae,
                          const PackEntry *e) {
        _cleanup_free_ char *split = strdup(e->path);
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        const char *dir, *name;
        uint64_t left = e->size;
        uint8_t buf[64 * 1024];
        struct stat st;
        int r;

        if (!split)
                return -ENOMEM;
        path_split(split, &dir, &name);
        r = open_dir_beneath(p->root_fd, dir, false, &dfd, NULL);
        if (r >= 0) {
                /* O_NONBLOCK: a FIFO swapped in since the walk must not block the open. */
                fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
                r = fd < 0 || fstat(fd, &st) < 0 ? -errno : 0;
        }
        if (r < 0)
                return fail(p->error, r, "Cannot open '%s': %s", P(e->path), strerror(-r));
        if (!S_ISREG(st.st_mode) || (uint64_t) st.st_size != e->size)
                return fail(p->error, -EIO, "File '%s' changed while being packed", P(e->path));

        archive_entry_set_size(ae, (la_int64_t) e->size);
        if (archive_write_header(a, ae) != ARCHIVE_OK)
                return fail_write(p->error, a, "Cannot pack", e->path);
        while (left > 0) {
                ssize_t k = read(fd, buf, MIN(sizeof(buf), left));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return fail(p->error, -errno, "Cannot read '%s': %m", P(e->path));
                if (k == 0)
                        return fail(p->error, -EIO, "File '%s' shrank while being packed", P(e->path));
                if (archive_write_data(a, buf, (size_t) k) != k)
                        return fail_write(p->error, a, "Cannot pack", e->path);
                left -= (uint64_t) k;
        }
        return 0;
}

static int pack_write_entry(Packer *p, struct archive *a, const PackEntry *e) {
        _cleanup_(archive_entry_freep) struct archive_entry *ae = archive_entry_new();

        if (!ae)
                return -ENOMEM;
        archive_entry_set_pathname(ae, e->path);
        archive_entry_set_perm(ae, e->mode & (p->rootfs ? 07777 : 0777));
        archive_entry_set_uid(ae, e->uid);
        archive_entry_set_gid(ae, e->gid);
        archive_entry_set_mtime(ae, (time_t) e->mtime, 0);
        if (S_ISDIR(e->mode)) {
                archive_entry_set_filetype(ae, AE_IFDIR);
                p->stats.n_dirs++;
        } else if (S_ISLNK(e->mode)) {
                archive_entry_set_filetype(ae, AE_IFLNK);
                archive_entry_set_symlink(ae, e->link);
                p->stats.n_symlinks++;
        } else {
                archive_entry_set_filetype(ae, AE_IFREG);
                p->stats.n_files++;
                return pack_copy_file(p, a, ae, e);
        }
        if (archive_write_header(a, ae) != ARCHIVE_OK)
                return fail_write(p->error, a, "Cannot pack", e->path);
        return 0;
}

static int pack_write(Packer *p, int out_fd) {
        _cleanup_(archive_write_freep) struct archive *a = archive_write_new();
        int r;

        if (!a)
                return -ENOMEM;
        if (archive_write_add_filter_zstd(a) != ARCHIVE_OK ||
            archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
            archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
            archive_write_open_fd(a, out_fd) != ARCHIVE_OK)
                return fail(p->error, -EIO, "Cannot start the archive: %s", archive_error_string(a));
        for (size_t i = 0; i < p->n_items; i++) {
                r = pack_write_entry(p, a, &p->items[i]);
                if (r < 0)
                        return r;
        }
        if (archive_write_close(a) != ARCHIVE_OK)
                return fail_write(p->error, a, "Cannot finish the archive", NULL);
        p->stats.n_entries = p->n_items;
        return 0;
}

/* The walk of pack(), without the writing: the sorted entries. */
static int pack_collect(Packer *p) {
        for (char *const *g = p->globs; g && *g; g++)
                if (glob_check(*g, p->limits) < 0)
                        return fail(p->error, -EINVAL, "Bad pattern '%s'", P(*g));
        int r = pack_walk(p, p->root_fd, NULL, "", 0, false);
        if (r < 0)
                return r;
        /* The walk sorted names per directory; a full sort puts "a/b" and
         * "a.b" in plain byte order too. */
        if (p->n_items > 0)
                qsort(p->items, p->n_items, sizeof(PackEntry), entry_cmp);
        return 0;
}

int archive_pack_dir_stamp(int dir_fd, char *const *exclude_globs, const ArchiveLimits *l, uint8_t ret[32],
                           int64_t *ret_newest, ArchiveError *ret_error) {
        _cleanup_(packer_done) Packer p = {
                .root_fd = dir_fd,
                .globs = exclude_globs,
                .exclude = true,
                .limits = l ?: &archive_limits_default,
                .error = ret_error,
        };
        crypto_hash_sha256_state h;
        int64_t newest = 0;

        if (ret_error)
                ret_error->message[0] = 0;
        int r = pack_collect(&p);
        if (r < 0)
                return r;
        if (sodium_init() < 0)
                return -EIO;
        crypto_hash_sha256_init(&h);
        /* What the packer is, and what it was asked to leave out. */
        static const char format[] = "kiln pack_dir stamp 1, pax_restricted+zstd";
        crypto_hash_sha256_update(&h, (const uint8_t *) format, sizeof format);
        for (char *const *g = exclude_globs; g && *g; g++)
                crypto_hash_sha256_update(&h, (const uint8_t *) *g, strlen(*g) + 1);
        crypto_hash_sha256_update(&h, (const uint8_t *) "", 1);
        for (size_t i = 0; i < p.n_items; i++) {
                const PackEntry *e = &p.items[i];
                uint64_t fixed[] = { e->mode, e->uid, e->gid, e->size, e->ino, e->dev, (uint64_t) e->mtime_ns,
                                     (uint64_t) e->ctime_ns };
                crypto_hash_sha256_update(&h, (const uint8_t *) e->path, strlen(e->path) + 1);
                crypto_hash_sha256_update(&h, (const uint8_t *) fixed, sizeof fixed);
                if (e->link)
                        crypto_hash_sha256_update(&h, (const uint8_t *) e->link, strlen(e->link) + 1);
                crypto_hash_sha256_update(&h, (const uint8_t *) "\n", 1);
                newest = MAX(newest, MAX(e->mtime_ns, e->ctime_ns));
        }
        crypto_hash_sha256_final(&h, ret);
        *ret_newest = newest;
        return 0;
}

static int pack(int dir_fd, char *const *globs, bool exclude, bool rootfs, int out_fd,
                const ArchiveLimits *l, ArchiveStats *ret_stats, ArchiveError *ret_error) {
        _cleanup_(packer_done) Packer p = {
                .root_fd = dir_fd,
                .globs = globs,
                .exclude = exclude,
                .rootfs = rootfs,
                .limits = l ?: &archive_limits_default,
                .error = ret_error,
        };
        int r;

        if (ret_error)
                ret_error->message[0] = 0;
        r = pack_collect(&p);
        if (r < 0)
                return r;
        r = pack_write(&p, out_fd);
        if (r < 0)
                return r;
        if (ret_stats)
                *ret_stats = p.stats;
        return 0;
}

int archive_pack(int dir_fd, char *const *globs, int out_fd, const ArchiveLimits *l,
                 ArchiveStats *ret_stats, ArchiveError *ret_error) {
        return pack(dir_fd, globs, false, false, out_fd, l, ret_stats, ret_error);
}

int archive_pack_dir(int dir_fd, char *const *exclude_globs, int out_fd, const ArchiveLimits *l,
                     ArchiveStats *ret_stats, ArchiveError *ret_error) {
        return pack(dir_fd, exclude_globs, true, false, out_fd, l, ret_stats, ret_error);
}

int archive_pack_rootfs(int dir_fd, int out_fd, const ArchiveLimits *l, ArchiveStats *ret_stats,
                        ArchiveError *ret_error) {
        return pack(dir_fd, NULL, true, true, out_fd, l, ret_stats, ret_error);
}
