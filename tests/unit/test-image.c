/* SPDX-License-Identifier: MIT */
/* The image store's pure parts and the layer merge: names, references,
 * rebuild schedules, whiteouts, opaque directories, owner shifts,
 * revisions (allocate, commit, switch, keep, remove). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fd-util.h"
#include "fs-util.h"
#include "image-layers.h"
#include "image-schedule.h"
#include "image-store.h"
#include "macro.h"
#include "test.h"

static void test_names(void) {
        char *name = NULL;
        unsigned rev = 7;

        CHECK(image_name_valid("debian-ci"));
        CHECK(image_name_valid("a.b_c-1"));
        CHECK(!image_name_valid(""));
        CHECK(!image_name_valid("host"));
        CHECK(!image_name_valid("Upper"));
        CHECK(!image_name_valid(".hidden"));
        CHECK(!image_name_valid("a/b"));
        CHECK(!image_name_valid("x12345678901234567890123456789012345678901234567890123456789012345"));
        CHECK(image_ref_parse("ci", &name, &rev) == 0 && streq(name, "ci") && rev == 0);
        free(name);
        CHECK(image_ref_parse("ci@12", &name, &rev) == 0 && streq(name, "ci") && rev == 12);
        free(name);
        CHECK(image_ref_parse("ci@0", &name, &rev) == -EINVAL);
        CHECK(image_ref_parse("ci@", &name, &rev) == -EINVAL);
        CHECK(image_ref_parse("ci@1x", &name, &rev) == -EINVAL);
        CHECK(image_ref_parse("../x@1", &name, &rev) == -EINVAL);
}

static void test_schedule(void) {
        ImageSchedule s;

        CHECK(image_schedule_parse("ci@03:30", &s) == 0 && streq(s.name, "ci") && s.hour == 3 && s.minute == 30);
        CHECK(image_schedule_parse("ci@24:00", &s) == -EINVAL);
        CHECK(image_schedule_parse("ci@3:30", &s) == -EINVAL);
        CHECK(image_schedule_parse("ci@03:60", &s) == -EINVAL);
        CHECK(image_schedule_parse("ci03:30", &s) == -EINVAL);
        CHECK(image_schedule_parse("host@03:30", &s) == -EINVAL);
        CHECK(image_schedule_parse("@03:30", &s) == -EINVAL);

        setenv("TZ", "UTC", 1);
        tzset();
        /* 2026-01-10 12:00:00 UTC */
        time_t noon = 1768046400;
        CHECK(image_schedule_parse("ci@12:01", &s) == 0);
        CHECK(image_schedule_next(&s, noon) == noon + 60);
        CHECK(image_schedule_parse("ci@12:00", &s) == 0);
        CHECK(image_schedule_next(&s, noon) == noon + 24 * 3600); /* strictly after */
        CHECK(image_schedule_parse("ci@03:00", &s) == 0);
        CHECK(image_schedule_next(&s, noon) == noon + 15 * 3600);
}

static void put(int dfd, const char *path, const char *data) {
        int fd = openat(dfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(fd >= 0);
        CHECK(loop_write(fd, data, strlen(data)) == 0);
        close(fd);
}

static bool exists(int dfd, const char *path) {
        struct stat st;
        return fstatat(dfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int open_dir(const char *p) {
        int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(fd >= 0);
        return fd;
}

static void test_merge_oci(const char *tmp) {
        char lower[256], upper[256];
        ArchiveError err;

        snprintf(lower, sizeof lower, "%s/oci-lower", tmp);
        snprintf(upper, sizeof upper, "%s/oci-upper", tmp);
        CHECK(mkdir(lower, 0755) == 0 && mkdir(upper, 0755) == 0);
        int lo = open_dir(lower), up = open_dir(upper);
        CHECK(mkdirat(lo, "d", 0755) == 0 && mkdirat(lo, "o", 0755) == 0 && mkdirat(lo, "o/sub", 0755) == 0);
        put(lo, "d/keep", "k");
        put(lo, "d/gone", "g");
        put(lo, "o/old", "o");
        put(lo, "f", "lower");
        CHECK(symlinkat("/etc", lo, "link") == 0);
        CHECK(mkdirat(up, "d", 0755) == 0 && mkdirat(up, "o", 0755) == 0 && mkdirat(up, "new", 0700) == 0);
        put(up, "d/.wh.gone", "");
        put(up, "o/.wh..wh..opq", "");
        put(up, "o/fresh", "f");
        put(up, "f", "upper");
        put(up, "new/.wh.nothing", ""); /* a whiteout in a new directory: dropped */
        CHECK(mkdirat(up, "link", 0755) == 0); /* a directory replaces a lower symlink */
        put(up, "link/inside", "i");

        CHECK(layer_merge(up, lo, LAYER_OCI, 0, &err) == 0);
        CHECK(exists(lo, "d/keep") && !exists(lo, "d/gone") && !exists(lo, "d/.wh.gone"));
        CHECK(exists(lo, "o/fresh") && !exists(lo, "o/old") && !exists(lo, "o/sub") &&
              !exists(lo, "o/.wh..wh..opq"));
        CHECK(exists(lo, "new") && !exists(lo, "new/.wh.nothing"));
        struct stat st;
        CHECK(fstatat(lo, "new", &st, 0) == 0 && (st.st_mode & 07777) == 0700);
        CHECK(fstatat(lo, "link", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode));
        CHECK(exists(lo, "link/inside"));
        char buf[16] = {};
        int fd = openat(lo, "f", O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0 && read(fd, buf, sizeof buf - 1) == 5 && streq(buf, "upper"));
        close(fd);

        /* A whiteout naming ".." is refused. */
        put(up, ".wh..", "");
        CHECK(layer_merge(up, lo, LAYER_OCI, 0, &err) == -EINVAL);
        CHECK(strstr(err.message, "names no entry"));
        close(lo);
        close(up);
}

static void test_merge_overlay(const char *tmp) {
        char lower[256], upper[256];
        ArchiveError err;
        const uid_t base = 0x40000000;

        if (geteuid() != 0) {
                printf("overlay merge: skipped (needs root: mknod, chown)\n");
                return;
        }
        snprintf(lower, sizeof lower, "%s/ovl-lower", tmp);
        snprintf(upper, sizeof upper, "%s/ovl-upper", tmp);
        CHECK(mkdir(lower, 0755) == 0 && mkdir(upper, 0755) == 0);
        int lo = open_dir(lower), up = open_dir(upper);
        CHECK(mkdirat(lo, "etc", 0755) == 0 && mkdirat(lo, "var", 0755) == 0);
        put(lo, "etc/issue", "x");
        put(lo, "var/old", "x");
        CHECK(mkdirat(up, "etc", 0755) == 0 && mkdirat(up, "var", 0755) == 0);
        CHECK(mknodat(up, "etc/issue", S_IFCHR | 0000, makedev(0, 0)) == 0);
        int var = openat(up, "var", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(var >= 0 && fsetxattr(var, "trusted.overlay.opaque", "y", 1, 0) == 0);
        close(var);
        put(up, "var/new", "n");
        CHECK(fchownat(up, "var/new", base + 42, base + 42, 0) == 0);
        CHECK(fchownat(up, "var", base, base, 0) == 0);
        CHECK(fchmodat(up, "var/new", 04755, 0) == 0);
        int nf = openat(up, "var/new", O_RDONLY | O_CLOEXEC);
        CHECK(nf >= 0 && fsetxattr(nf, "trusted.overlay.origin", "x", 1, 0) == 0 &&
              fsetxattr(nf, "user.keep", "k", 1, 0) == 0);
        close(nf);

        CHECK(layer_merge(up, lo, LAYER_OVERLAY, base, &err) == 0);
        CHECK(!exists(lo, "etc/issue") && exists(lo, "etc"));
        CHECK(!exists(lo, "var/old") && exists(lo, "var/new"));
        struct stat st;
        CHECK(fstatat(lo, "var/new", &st, 0) == 0 && st.st_uid == 42 && st.st_gid == 42 &&
              (st.st_mode & 07777) == 04755);
        char x[8];
        nf = openat(lo, "var/new", O_RDONLY | O_CLOEXEC);
        CHECK(nf >= 0 && fgetxattr(nf, "trusted.overlay.origin", x, sizeof x) < 0 && errno == ENODATA);
        CHECK(fgetxattr(nf, "user.keep", x, sizeof x) == 1);
        close(nf);
        close(lo);
        close(up);
}

static void test_store(const char *tmp) {
        char data[256];
        ImageStore *s = NULL;
        unsigned rev, cur;
        int log_fd;

        snprintf(data, sizeof data, "%s/data", tmp);
        CHECK(image_store_open(data, &s) == 0);
        CHECK(image_current(s, "t", &cur) == -ENOENT);
        for (unsigned i = 1; i <= 4; i++) {
                CHECK(image_rev_begin(s, "t", &rev, &log_fd) == 0 && rev == i);
                close(log_fd);
                char *dir = image_rev_dir(s, "t", rev, true), path[512];
                snprintf(path, sizeof path, "%s/rootfs/rev", dir);
                free(dir);
                char v[8];
                snprintf(v, sizeof v, "%u", i);
                int dfd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
                CHECK(dfd >= 0 && loop_write(dfd, v, strlen(v)) == 0);
                close(dfd);
                json_t *meta = json_object();
                CHECK(image_rev_commit(s, "t", rev, meta, 3) == 0);
                json_decref(meta);
                CHECK(image_current(s, "t", &cur) == 0 && cur == i);
        }
        unsigned *revs = NULL;
        size_t n;
        CHECK(image_revs(s, "t", &revs, &n) == 0 && n == 3 && revs[0] == 2 && revs[2] == 4);
        free(revs);
        /* A failed attempt's number is not reused. */
        CHECK(image_rev_begin(s, "t", &rev, &log_fd) == 0 && rev == 5);
        close(log_fd);
        json_t *fail = json_pack("{s:s}", "status", "failed");
        CHECK(image_rev_abort(s, "t", 5, fail) == 0);
        json_decref(fail);
        CHECK(image_rev_begin(s, "t", &rev, &log_fd) == 0 && rev == 6);
        close(log_fd);
        CHECK(image_switch(s, "t", 1) == -ENOENT);
        CHECK(image_switch(s, "t", 2) == 0 && image_current(s, "t", &cur) == 0 && cur == 2);
        CHECK(image_remove(s, "t", 2) == -EBUSY);
        /* A held revision is neither removed nor pruned; released, it is. */
        char cur_path[512], *resolved = NULL;
        snprintf(cur_path, sizeof cur_path, "%s/images/t/current/rootfs", data);
        int hold = image_hold(cur_path, &resolved);
        CHECK(hold >= 0 && strstr(resolved, "/revs/2/rootfs"));
        free(resolved);
        CHECK(image_switch(s, "t", 4) == 0);
        CHECK(image_remove(s, "t", 2) == -EBUSY);
        close(hold);
        CHECK(image_switch(s, "t", 2) == 0);
        CHECK(image_remove(s, "t", 3) == 0);
        json_t *meta = NULL;
        CHECK(image_rev_meta(s, "t", 4, &meta) == 0);
        CHECK(strneq(json_string_value(json_object_get(meta, "digest")), "sha256:", 7));
        json_decref(meta);
        CHECK(image_remove(s, "t", 0) == 0 && image_current(s, "t", &cur) == -ENOENT);
        image_store_free(s);
}

int main(void) {
        char tmp[] = "/tmp/kiln-test-image-XXXXXX";
        CHECK(mkdtemp(tmp));
        test_names();
        test_schedule();
        test_merge_oci(tmp);
        test_merge_overlay(tmp);
        test_store(tmp);
        rm_rf(tmp);
        return 0;
}
