/* SPDX-License-Identifier: MIT */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive-safe.h"
#include "fd-util.h"
#include "fs-util.h"
#include "test.h"

/* One entry of a crafted archive. */
typedef struct Spec {
        const char *path;
        mode_t type; /* AE_IF*; 0 for a hardlink */
        mode_t perm;
        const char *link; /* symlink or hardlink target */
        const char *data;
        int64_t sparse_size; /* > 0: a sparse file of this size with data at 0 */
} Spec;

static char base[64];
static int target_fd = -EBADF;

static int memfd(void) {
        int fd = memfd_create("archive", MFD_CLOEXEC);
        CHECK(fd >= 0);
        return fd;
}

static int craft(const Spec *specs, size_t n, int filter) {
        struct archive *a = archive_write_new();
        int fd = memfd();

        CHECK(a);
        if (filter == 'z')
                CHECK(archive_write_add_filter_zstd(a) == ARCHIVE_OK);
        if (filter == 'g')
                CHECK(archive_write_add_filter_gzip(a) == ARCHIVE_OK);
        CHECK(archive_write_set_format_pax(a) == ARCHIVE_OK);
        CHECK(archive_write_open_fd(a, fd) == ARCHIVE_OK);
        for (size_t i = 0; i < n; i++) {
                const Spec *s = &specs[i];
                struct archive_entry *e = archive_entry_new();
                size_t len = s->data ? strlen(s->data) : 0;

                archive_entry_set_pathname(e, s->path);
                archive_entry_set_perm(e, s->perm ? s->perm : 0644);
                if (s->type == 0) {
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_hardlink(e, s->link);
                } else
                        archive_entry_set_filetype(e, s->type);
                if (s->type == AE_IFLNK)
                        archive_entry_set_symlink(e, s->link);
                if (s->type == AE_IFREG) {
                        archive_entry_set_size(e, s->sparse_size > 0 ? s->sparse_size : (int64_t) len);
                        if (s->sparse_size > 0)
                                archive_entry_sparse_add_entry(e, 0, (int64_t) len);
                }
                if (s->type == AE_IFCHR)
                        archive_entry_set_rdev(e, makedev(1, 3));
                CHECK(archive_write_header(a, e) == ARCHIVE_OK);
                if (s->type == AE_IFREG && len > 0)
                        CHECK(archive_write_data(a, s->data, len) == (la_ssize_t) len);
                archive_entry_free(e);
        }
        CHECK(archive_write_close(a) == ARCHIVE_OK);
        archive_write_free(a);
        CHECK(lseek(fd, 0, SEEK_SET) == 0);
        return fd;
}

static size_t dir_count(const char *path) {
        DIR *d = opendir(path);
        size_t n = 0;

        CHECK(d);
        for (struct dirent *de; (de = readdir(d));)
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

static void fresh_target(void) {
        char p[128];

        snprintf(p, sizeof(p), "%s/target", base);
        safe_close(target_fd);
        CHECK(rm_rf(p) >= 0);
        CHECK(mkdir(p, 0755) == 0);
        target_fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(target_fd >= 0);
}

/* The sibling "outside" holds only "keep", with one link. */
static void check_outside_untouched(void) {
        char p[128];
        struct stat st;

        snprintf(p, sizeof(p), "%s/outside", base);
        CHECK_EQ_INT(dir_count(p), 1);
        snprintf(p, sizeof(p), "%s/outside/keep", base);
        CHECK(lstat(p, &st) == 0);
        CHECK(S_ISREG(st.st_mode) && st.st_nlink == 1 && st.st_size == 4);
}

static void expect_refused(const Spec *specs, size_t n, const ArchiveLimits *l, int error,
                           const char *needle) {
        ArchiveError err = {};
        int fd = craft(specs, n, 'z'), r;

        fresh_target();
        r = archive_extract_safe(fd, target_fd, l, NULL, &err);
        if (r != error || !strstr(err.message, needle)) {
                fprintf(stderr, "%s: got %d '%s', expected %d '%s'\n", specs[n - 1].path, r,
                        err.message, error, needle);
                exit(1);
        }
        check_outside_untouched();
        safe_close(fd);
}

#define REFUSED(l, e, needle, ...)                                                     \
        do {                                                                           \
                const Spec _s[] = { __VA_ARGS__ };                                     \
                expect_refused(_s, ELEMENTSOF(_s), l, e, needle);                      \
        } while (0)

static void test_hostile(void) {
        char abs_out[128], abs_dir[128];

        snprintf(abs_out, sizeof(abs_out), "%s/outside/pwned", base);
        snprintf(abs_dir, sizeof(abs_dir), "%s/outside", base);

        REFUSED(NULL, -EINVAL, "'/", { abs_out, AE_IFREG, 0, NULL, "evil" });
        REFUSED(NULL, -EINVAL, "'../outside/pwned'", { "../outside/pwned", AE_IFREG, 0, NULL, "x" });
        REFUSED(NULL, -EINVAL, "'a/../../outside/pwned'",
                { "a/../../outside/pwned", AE_IFREG, 0, NULL, "x" });
        REFUSED(NULL, -ELOOP, "'link' -> '/etc' points outside",
                { "link", AE_IFLNK, 0, "/etc" }, { "link/passwd", AE_IFREG, 0, NULL, "x" });
        REFUSED(NULL, -ELOOP, "points outside", { "link", AE_IFLNK, 0, abs_dir },
                { "link/pwned", AE_IFREG, 0, NULL, "x" });
        REFUSED(NULL, -ELOOP, "'up' -> '../../outside' points outside",
                { "up", AE_IFLNK, 0, "../../outside" });
        REFUSED(NULL, -ELOOP, "'a/up' -> '../../outside' points outside",
                { "a/up", AE_IFLNK, 0, "../../outside" });
        REFUSED(NULL, -ELOOP, "points outside", { "a/x", AE_IFLNK, 0, "b/../../.." });
        /* A link that stays inside is fine, but nothing is written through it. */
        REFUSED(NULL, -ELOOP, "'l/file' goes through the symlink 'l'", { "l", AE_IFLNK, 0, "." },
                { "l/file", AE_IFREG, 0, NULL, "x" });
        REFUSED(NULL, -ELOOP, "goes through the symlink 'd/l'", { "d/l", AE_IFLNK, 0, ".." },
                { "d/l/x/file", AE_IFREG, 0, NULL, "x" });
        REFUSED(NULL, -EPERM, "'h' -> '/etc/passwd'", { "h", 0, 0, "/etc/passwd" });
        REFUSED(NULL, -EPERM, "'h' -> '../outside/keep'", { "h", 0, 0, "../outside/keep" });
        REFUSED(NULL, -EPERM, "regular file", { "l", AE_IFLNK, 0, "." }, { "h", 0, 0, "l/keep" });
        REFUSED(NULL, -EPERM, "regular file", { "d", AE_IFDIR, 0755 }, { "h", 0, 0, "d" });
        REFUSED(NULL, -EPERM, "regular file", { "h", 0, 0, "not-yet" });
        REFUSED(NULL, -EPERM, "'null' is a character device", { "null", AE_IFCHR, 0666 });
        REFUSED(NULL, -EPERM, "'fifo' is a FIFO", { "fifo", AE_IFIFO, 0644 });
        REFUSED(NULL, -EEXIST, "'f' appears twice", { "f", AE_IFREG, 0, NULL, "a" },
                { "f", AE_IFREG, 0, NULL, "b" });
        REFUSED(NULL, -EEXIST, "'d' appears twice", { "d", AE_IFREG, 0, NULL, "a" },
                { "d", AE_IFDIR, 0755 });

        ArchiveLimits shallow = archive_limits_default;
        shallow.max_depth = 4;
        REFUSED(&shallow, -ENAMETOOLONG, "too deep", { "a/b/c/d/e", AE_IFREG, 0, NULL, "x" });
        shallow.max_path_len = 8;
        REFUSED(&shallow, -ENAMETOOLONG, "too long", { "abcdefghi", AE_IFREG, 0, NULL, "x" });
        REFUSED(&shallow, -ENAMETOOLONG, "too long", { "l", AE_IFLNK, 0, "abcdefghi" });
}

static void test_many_files(void) {
        size_t n = 10000;
        Spec *specs = calloc(n, sizeof(Spec));
        char (*names)[16] = calloc(n, 16);
        ArchiveLimits l = archive_limits_default;
        ArchiveError err = {};
        char p[128];
        int fd;

        CHECK(specs && names);
        for (size_t i = 0; i < n; i++) {
                snprintf(names[i], 16, "f%05zu", i);
                specs[i] = (Spec) { names[i], AE_IFREG, 0, NULL, "x" };
        }
        fd = craft(specs, n, 'z');
        l.max_entries = 1000;
        fresh_target();
        CHECK_EQ_INT(archive_extract_safe(fd, target_fd, &l, NULL, &err), -E2BIG);
        CHECK(strstr(err.message, "more than 1000 entries"));
        snprintf(p, sizeof(p), "%s/target", base);
        CHECK_EQ_INT(dir_count(p), 1000);
        check_outside_untouched();

        /* Under the default limits the same archive extracts whole. */
        ArchiveStats st = {};
        CHECK(lseek(fd, 0, SEEK_SET) == 0);
        fresh_target();
        CHECK_EQ_INT(archive_extract_safe(fd, target_fd, NULL, &st, &err), 0);
        CHECK_EQ_INT(st.n_files, n);
        CHECK_EQ_INT(dir_count(p), n);
        safe_close(fd);
        free(specs);
        free(names);
}

static void test_sparse(void) {
        const Spec sparse[] = { { "big", AE_IFREG, 0, NULL, "head", INT64_C(1) << 30 } };
        ArchiveLimits l = archive_limits_default;
        ArchiveError err = {};
        ArchiveStats st = {};
        struct stat sb;
        int fd = craft(sparse, 1, 'z');

        l.max_total_bytes = 100 << 20;
        fresh_target();
        CHECK_EQ_INT(archive_extract_safe(fd, target_fd, &l, NULL, &err), -EFBIG);
        CHECK(strstr(err.message, "more than 104857600 bytes (at 'big')"));
        check_outside_untouched();

        l.max_total_bytes = UINT64_C(2) << 30;
        l.max_file_bytes = 100 << 20;
        CHECK(lseek(fd, 0, SEEK_SET) == 0);
        fresh_target();
        CHECK_EQ_INT(archive_extract_safe(fd, target_fd, &l, NULL, &err), -EFBIG);
        CHECK(strstr(err.message, "File 'big' is larger than"));

        /* Within the limits it stays sparse. */
        CHECK(lseek(fd, 0, SEEK_SET) == 0);
        fresh_target();
        CHECK_EQ_INT(archive_extract_safe(fd, target_fd, NULL, &st, &err), 0);
        CHECK_EQ_INT(st.bytes, INT64_C(1) << 30);
        CHECK(fstatat(target_fd, "big", &sb, 0) == 0);
        CHECK_EQ_INT(sb.st_size, INT64_C(1) << 30);
        CHECK(sb.st_blocks < 1024);
        safe_close(fd);
}

static void test_modes_and_filters(void) {
        const Spec specs[] = {
                { "./bin/", AE_IFDIR, 0755 },
                { "bin/suid", AE_IFREG, 04755, NULL, "#!/bin/sh\n" },
                { "ro", AE_IFDIR, 0555 },
                { "ro/file", AE_IFREG, 0444, NULL, "data" },
                { "ro/hard", 0, 0, "ro/file" },
                { "ro/link", AE_IFLNK, 0, "../bin/suid" },
        };
        for (const char *f = "nzg"; *f; f++) {
                ArchiveError err = {};
                ArchiveStats st = {};
                struct stat sb;
                int fd = craft(specs, ELEMENTSOF(specs), *f);

                fresh_target();
                CHECK_EQ_INT(archive_extract_safe(fd, target_fd, NULL, &st, &err), 0);
                CHECK_EQ_INT(st.n_stripped, 1);
                CHECK_EQ_INT(st.n_hardlinks, 1);
                CHECK(fstatat(target_fd, "bin/suid", &sb, AT_SYMLINK_NOFOLLOW) == 0);
                CHECK_EQ_INT(sb.st_mode & 07777, 0755);
                CHECK(fstatat(target_fd, "ro/hard", &sb, AT_SYMLINK_NOFOLLOW) == 0);
                CHECK(S_ISREG(sb.st_mode) && sb.st_nlink == 2);
                CHECK(fstatat(target_fd, "ro", &sb, AT_SYMLINK_NOFOLLOW) == 0);
                CHECK_EQ_INT(sb.st_mode & 0777, 0755);
                check_outside_untouched();
                safe_close(fd);
        }
}

static void test_garbage(void) {
        ArchiveError err = {};
        int fd = memfd();

        CHECK(write(fd, "this is not a tar archive, not at all, not even close......", 60) == 60);
        CHECK(lseek(fd, 0, SEEK_SET) == 0);
        fresh_target();
        CHECK(archive_extract_safe(fd, target_fd, NULL, NULL, &err) == -EINVAL);
        CHECK(err.message[0]);
        safe_close(fd);
}

static void test_globs(void) {
        CHECK(archive_glob_match("*.c", "a.c"));
        CHECK(!archive_glob_match("*.c", "src/a.c"));
        CHECK(archive_glob_match("src/*.c", "src/a.c"));
        CHECK(!archive_glob_match("src/*.c", "src/sub/b.c"));
        CHECK(archive_glob_match("**/*.c", "a.c"));
        CHECK(archive_glob_match("**/*.c", "src/sub/b.c"));
        CHECK(archive_glob_match("src/**", "src/sub/b.c"));
        CHECK(archive_glob_match("src/**/b.c", "src/b.c"));
        CHECK(archive_glob_match("src/**/b.c", "src/x/y/b.c"));
        CHECK(!archive_glob_match("src/**/b.c", "lib/x/b.c"));
        CHECK(archive_glob_match("./build", "build"));
        CHECK(!archive_glob_match("build", "build/x"));
        CHECK(archive_glob_match("**", ".hidden/x"));
}

/* ---- packing ---- */

static void write_file(int dfd, const char *path, const void *data, size_t n, mode_t mode) {
        int fd = openat(dfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        CHECK(fd >= 0);
        CHECK(loop_write(fd, data, n) == 0);
        CHECK(fchmod(fd, mode) == 0);
        safe_close(fd);
}

static int make_tree(void) {
        char p[128];
        int fd;
        uint8_t bin[5000];

        snprintf(p, sizeof(p), "%s/src", base);
        CHECK(mkdir(p, 0755) == 0);
        fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(fd >= 0);
        for (size_t i = 0; i < sizeof(bin); i++)
                bin[i] = (uint8_t) (i * 7);
        CHECK(mkdirat(fd, "a", 0755) == 0);
        CHECK(mkdirat(fd, "a/b", 0750) == 0);
        CHECK(mkdirat(fd, "empty", 0700) == 0);
        CHECK(mkdirat(fd, "build", 0755) == 0);
        write_file(fd, "top.txt", "hello\n", 6, 0644);
        write_file(fd, "run.sh", "#!/bin/sh\n", 10, 0755);
        write_file(fd, "a/b/file", bin, sizeof(bin), 0600);
        write_file(fd, "a.b", "", 0, 0644);
        write_file(fd, "a/x.o", "obj", 3, 0644);
        write_file(fd, "build/out", "out", 3, 0644);
        CHECK(symlinkat("a/b/file", fd, "l1") == 0);
        CHECK(symlinkat("../../top.txt", fd, "a/b/up") == 0);
        CHECK(symlinkat("/etc/passwd", fd, "bad") == 0);
        CHECK(symlinkat("../../../x", fd, "a/bad2") == 0);
        CHECK(mkfifoat(fd, "fifo", 0644) == 0);
        return fd;
}

static void tree_compare(int a, int b, const char *path, char **skip) {
        DIR *d;
        int fd = openat(a, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        CHECK(fd >= 0);
        d = fdopendir(fd);
        CHECK(d);
        for (struct dirent *de; (de = readdir(d));) {
                char sub[512];
                struct stat sa, sb;
                bool skipped = false;

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
                for (char **s = skip; *s; s++)
                        skipped = skipped || streq(sub, *s);
                if (skipped) {
                        CHECK(fstatat(b, sub, &sb, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT);
                        continue;
                }
                CHECK(fstatat(a, sub, &sa, AT_SYMLINK_NOFOLLOW) == 0);
                if (fstatat(b, sub, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
                        fprintf(stderr, "missing: %s\n", sub);
                        exit(1);
                }
                CHECK_EQ_INT(sa.st_mode, sb.st_mode);
                if (S_ISDIR(sa.st_mode))
                        tree_compare(a, b, sub, skip);
                else if (S_ISLNK(sa.st_mode)) {
                        char la[256] = {}, lb[256] = {};
                        CHECK(readlinkat(a, sub, la, sizeof(la) - 1) > 0);
                        CHECK(readlinkat(b, sub, lb, sizeof(lb) - 1) > 0);
                        CHECK_STREQ(la, lb);
                } else {
                        _cleanup_free_ char *ca = NULL, *cb = NULL;
                        size_t na, nb;
                        char pa[600], pb[600];
                        snprintf(pa, sizeof(pa), "%s/src/%s", base, sub);
                        snprintf(pb, sizeof(pb), "%s/target/%s", base, sub);
                        CHECK(read_full_file(pa, 1 << 20, &ca, &na) >= 0);
                        CHECK(read_full_file(pb, 1 << 20, &cb, &nb) >= 0);
                        CHECK(na == nb && memcmp(ca, cb, na) == 0);
                        CHECK_EQ_INT(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
                }
        }
        closedir(d);
}

static bool same_bytes(int a, int b) {
        struct stat sa, sb;
        void *ma, *mb;
        bool same;

        CHECK(fstat(a, &sa) == 0 && fstat(b, &sb) == 0);
        if (sa.st_size != sb.st_size)
                return false;
        ma = mmap(NULL, (size_t) sa.st_size, PROT_READ, MAP_SHARED, a, 0);
        mb = mmap(NULL, (size_t) sb.st_size, PROT_READ, MAP_SHARED, b, 0);
        CHECK(ma != MAP_FAILED && mb != MAP_FAILED);
        same = memcmp(ma, mb, (size_t) sa.st_size) == 0;
        munmap(ma, (size_t) sa.st_size);
        munmap(mb, (size_t) sb.st_size);
        return same;
}

/* The entry names of an archive, "|"-separated, directories with a '/'. */
static void list_entries(int fd, char *out, size_t size) {
        struct archive *a = archive_read_new();
        struct archive_entry *e;
        size_t o = 0;

        CHECK(lseek(fd, 0, SEEK_SET) == 0);
        archive_read_support_filter_zstd(a);
        archive_read_support_format_tar(a);
        CHECK(archive_read_open_fd(a, fd, 4096) == ARCHIVE_OK);
        out[0] = 0;
        while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
                const char *p = archive_entry_pathname(e);
                int k = snprintf(out + o, size - o, "%s%s%s", o ? "|" : "", p,
                                 archive_entry_filetype(e) == AE_IFDIR && p[strlen(p) - 1] != '/' ? "/" : "");
                CHECK(k > 0 && (size_t) k < size - o);
                o += (size_t) k;
                CHECK(archive_entry_uid(e) == 0 && archive_entry_gid(e) == 0);
                CHECK(isempty(archive_entry_uname(e)) && isempty(archive_entry_gname(e)));
        }
        archive_read_free(a);
}

static void test_pack_roundtrip(void) {
        char *exclude[] = { "**/*.o", "build", NULL };
        char *skip[] = { "./a/x.o", "./build", "./bad", "./a/bad2", "./fifo", NULL };
        int src = make_tree(), one = memfd(), two = memfd(), three = memfd();
        ArchiveStats st = {}, xs = {};
        ArchiveError err = {};
        char list[1024];

        CHECK_EQ_INT(archive_pack_dir(src, exclude, one, NULL, &st, &err), 0);
        CHECK_EQ_INT(st.n_skipped, 3); /* bad, a/bad2, fifo */
        CHECK_EQ_INT(st.n_files, 4);
        CHECK_EQ_INT(st.n_symlinks, 2);
        CHECK_EQ_INT(st.n_dirs, 3);
        CHECK_EQ_INT(archive_pack_dir(src, exclude, two, NULL, NULL, &err), 0);
        CHECK(same_bytes(one, two));
        list_entries(one, list, sizeof(list));
        CHECK_STREQ(list, "a/|a.b|a/b/|a/b/file|a/b/up|empty/|l1|run.sh|top.txt");

        fresh_target();
        CHECK(lseek(one, 0, SEEK_SET) == 0);
        CHECK_EQ_INT(archive_extract_safe(one, target_fd, NULL, &xs, &err), 0);
        CHECK_EQ_INT(xs.n_entries, 9);
        tree_compare(src, target_fd, ".", skip);
        tree_compare(target_fd, src, ".", (char *[]) { NULL });

        /* Extracted and packed again: the same bytes. */
        CHECK_EQ_INT(archive_pack_dir(target_fd, NULL, three, NULL, NULL, &err), 0);
        CHECK(same_bytes(one, three));

        safe_close(one);
        safe_close(two);
        safe_close(three);
        safe_close(src);
}

static void test_pack_globs(void) {
        char p[128];
        int src, out = memfd();
        char list[1024];
        ArchiveError err = {};
        ArchiveLimits l = archive_limits_default;

        snprintf(p, sizeof(p), "%s/src", base);
        src = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(src >= 0);

        CHECK_EQ_INT(archive_pack(src, (char *[]) { "a/b", "*.sh", NULL }, out, NULL, NULL, &err), 0);
        list_entries(out, list, sizeof(list));
        CHECK_STREQ(list, "a/|a/b/|a/b/file|a/b/up|run.sh");
        safe_close(out);

        out = memfd();
        CHECK_EQ_INT(archive_pack(src, (char *[]) { "**/*.o", "empty/", "bad", NULL }, out, NULL,
                                  NULL, &err), 0);
        list_entries(out, list, sizeof(list));
        CHECK_STREQ(list, "a/|a/x.o|empty/");
        safe_close(out);

        out = memfd();
        CHECK_EQ_INT(archive_pack(src, (char *[]) { "../x", NULL }, out, NULL, NULL, &err), -EINVAL);
        CHECK_EQ_INT(archive_pack(src, (char *[]) { "/etc", NULL }, out, NULL, NULL, &err), -EINVAL);
        l.max_entries = 3;
        CHECK_EQ_INT(archive_pack(src, (char *[]) { "**", NULL }, out, &l, NULL, &err), -E2BIG);
        l = archive_limits_default;
        l.max_total_bytes = 100;
        CHECK_EQ_INT(archive_pack_dir(src, NULL, out, &l, NULL, &err), -EFBIG);
        CHECK(strstr(err.message, "a/b/file"));
        /* Too deep only matters for what is packed. */
        l = archive_limits_default;
        l.max_depth = 2;
        CHECK_EQ_INT(archive_pack_dir(src, NULL, out, &l, NULL, &err), -ENAMETOOLONG);
        CHECK(strstr(err.message, "'a/b/file' is too long or too deep"));
        CHECK(ftruncate(out, 0) == 0 && lseek(out, 0, SEEK_SET) == 0);
        CHECK_EQ_INT(archive_pack_dir(src, (char *[]) { "a/b", NULL }, out, &l, NULL, &err), 0);
        list_entries(out, list, sizeof(list));
        CHECK_STREQ(list, "a/|a.b|a/x.o|build/|build/out|empty/|l1|run.sh|top.txt");
        safe_close(out);
        safe_close(src);
}

int main(void) {
        char p[128];

        snprintf(base, sizeof(base), "/tmp/test-archive-XXXXXX");
        CHECK(mkdtemp(base));
        snprintf(p, sizeof(p), "%s/outside", base);
        CHECK(mkdir(p, 0755) == 0);
        snprintf(p, sizeof(p), "%s/outside/keep", base);
        write_file(AT_FDCWD, p, "keep", 4, 0644);

        test_globs();
        test_hostile();
        test_many_files();
        test_sparse();
        test_modes_and_filters();
        test_garbage();
        test_pack_roundtrip();
        test_pack_globs();

        safe_close(target_fd);
        CHECK(rm_rf(base) >= 0);
        return 0;
}
