/* SPDX-License-Identifier: MIT */
/* The workspace `kiln run` submits: in a git checkout the tracked files plus
 * the untracked ones git does not ignore; elsewhere the directory minus the
 * globs of .kilnignore. Packed deterministically, so an unchanged directory
 * has an unchanged digest and is uploaded once. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <fcntl.h>
#include <sodium.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "archive-safe.h"
#include "cli.h"
#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "strv.h"
#include "workspace-pack.h"

extern char **environ;

#define GIT_OUTPUT_MAX (16U * 1024U * 1024U)

/* A glob that matches exactly this path: fnmatch escapes. */
static char *glob_escape(const char *path) {
        size_t n = strlen(path);
        char *g = malloc(2 * n + 1), *q = g;
        if (!g)
                return NULL;
        for (const char *p = path; *p; p++) {
                if (strchr("*?[]\\", *p))
                        *q++ = '\\';
                *q++ = *p;
        }
        *q = 0;
        return g;
}

static bool in_git_checkout(void) {
        _cleanup_free_ char *cwd = getcwd(NULL, 0);
        if (!cwd)
                return false;
        for (;;) {
                char p[4096];
                snprintf(p, sizeof p, "%s/.git", cwd);
                if (access(p, F_OK) == 0)
                        return true;
                char *slash = strrchr(cwd, '/');
                if (!slash || slash == cwd)
                        return false;
                *slash = 0;
        }
}

/* git's ignored paths under the current directory (directories whole), as
 * exclude globs. -ENOENT when git cannot tell (no git, not a checkout). */
static int git_ignored(char ***excludes) {
        char *argv[] = { (char *) "git", (char *) "ls-files", (char *) "-z", (char *) "--others",
                         (char *) "--ignored", (char *) "--exclude-standard", (char *) "--directory", NULL };
        _cleanup_close_pair_ int p[2] = { -EBADF, -EBADF };
        posix_spawn_file_actions_t fa;
        _cleanup_free_ char *out = NULL;
        size_t size = 0;
        pid_t pid;
        int r, status;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        r = posix_spawnp(&pid, "git", &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (r != 0)
                return -ENOENT;
        p[1] = safe_close(p[1]);
        for (;;) {
                if (size >= GIT_OUTPUT_MAX) {
                        r = -E2BIG;
                        break;
                }
                char *b = realloc(out, size + 65536 + 1);
                if (!b) {
                        r = -ENOMEM;
                        break;
                }
                out = b;
                ssize_t n = read(p[0], out + size, 65536);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : 0;
                        break;
                }
                size += (size_t) n;
        }
        p[0] = safe_close(p[0]);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (r < 0)
                return r;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return -ENOENT;
        for (size_t i = 0; i < size;) {
                const char *path = out + i;
                size_t len = strnlen(path, size - i);
                i += len + 1;
                if (len == 0 || len >= size)
                        continue;
                _cleanup_free_ char *copy = strndup(path, len);
                if (!copy)
                        return -ENOMEM;
                if (len > 1 && copy[len - 1] == '/')
                        copy[len - 1] = 0;
                char *g = glob_escape(copy);
                if (!g || strv_consume(excludes, g) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* .kilnignore: one glob per line, '#' comments; a leading or trailing '/'
 * is dropped (globs are relative to the workspace anyway). */
static int kilnignore(char ***excludes) {
        _cleanup_free_ char *text = NULL;
        int r = read_full_file(".kilnignore", 1024 * 1024, &text, NULL);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "Failed to read .kilnignore: %m");
        for (char *line = text, *next; line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                line[strcspn(line, "\r")] = 0;
                line += strspn(line, " \t");
                if (!*line || *line == '#')
                        continue;
                while (*line == '/')
                        line++;
                size_t n = strlen(line);
                while (n > 0 && (line[n - 1] == '/' || line[n - 1] == ' '))
                        line[--n] = 0;
                if (n > 0 && strv_extend(excludes, line) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* STATE/workspaces/STAMP holds "DIGEST FILES SIZE\n" of a tree packed
 * before. A missing or unreadable cache is no error: the tree is packed. */
static int cache_path(const uint8_t stamp[32], char **ret) {
        _cleanup_free_ char *state = NULL;
        char hex[65];
        if (cli_state_dir(&state) < 0)
                return -ENOENT;
        sodium_bin2hex(hex, sizeof hex, stamp, 32);
        return asprintf(ret, "%s/workspaces/%s", state, hex) < 0 ? -ENOMEM : 0;
}

static bool cache_lookup(const uint8_t stamp[32], RunWorkspace *ret) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        char digest[sizeof ret->digest];
        unsigned long long files, size;

        if (cache_path(stamp, &path) < 0 || read_full_file(path, 4096, &text, NULL) < 0)
                return false;
        if (sscanf(text, "%71s %llu %llu", digest, &files, &size) != 3 || strlen(digest) != 7 + 64 ||
            !strneq(digest, "sha256:", 7))
                return false;
        memcpy(ret->digest, digest, sizeof ret->digest);
        ret->files = files;
        ret->size = size;
        ret->fd = -EBADF;
        return true;
}

/* Entries older than this are dropped when a new one is written. */
#define CACHE_MAX_AGE_SEC (30 * 24 * 3600)

static void cache_store(const uint8_t stamp[32], const RunWorkspace *ws) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        if (cache_path(stamp, &path) < 0 || asprintf(&text, "%s %" PRIu64 " %" PRIu64 "\n", ws->digest, ws->files,
                                                      ws->size) < 0)
                return;
        char *slash = strrchr(path, '/');
        *slash = 0;
        if (mkdir_p(path, 0700) < 0)
                return;
        _cleanup_close_ int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        *slash = '/';
        if (dfd < 0)
                return;
        DIR *d = fdopendir(fcntl(dfd, F_DUPFD_CLOEXEC, 3));
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        for (struct dirent *de; d && (de = readdir(d));) {
                struct stat st;
                if (de->d_name[0] != '.' && fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) >= 0 &&
                    st.st_mtime < now.tv_sec - CACHE_MAX_AGE_SEC)
                        (void) unlinkat(dfd, de->d_name, 0);
        }
        if (d)
                closedir(d);
        /* Written whole under a temporary name, then renamed. */
        char tmp[64];
        snprintf(tmp, sizeof tmp, ".new-%d", (int) getpid());
        _cleanup_close_ int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return;
        if (loop_write(fd, text, strlen(text)) < 0 || renameat(dfd, tmp, dfd, slash + 1) < 0)
                (void) unlinkat(dfd, tmp, 0);
}

int run_workspace_pack(const char *dir, bool use_cache, RunWorkspace *ret) {
        _cleanup_strv_free_ char **excludes = NULL;
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        ArchiveStats st = {};
        ArchiveError err = {};
        crypto_hash_sha256_state h;
        uint8_t digest[crypto_hash_sha256_BYTES], stamp[32];
        int64_t newest = INT64_MAX;
        bool stamped = false;
        char buf[65536];
        int r;

        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return log_error_errno(errno, "Failed to open '%s': %m", dir);
        if (strv_extend(&excludes, ".git") < 0)
                return -ENOMEM;
        ret->git = false;
        if (in_git_checkout()) {
                r = git_ignored(&excludes);
                if (r == -ENOMEM || r == -E2BIG)
                        return log_error_errno(r, "Failed to list git's ignored files: %m");
                ret->git = r >= 0;
        }
        if (!ret->git) {
                r = kilnignore(&excludes);
                if (r < 0)
                        return r;
        }
        if (sodium_init() < 0)
                return -EIO;
        if (use_cache) {
                /* Stat only; packing (and loading libarchive) only when the
                 * tree changed since it was last packed. */
                stamped = archive_pack_dir_stamp(dfd, excludes, NULL, stamp, &newest, &err) >= 0;
                if (stamped && cache_lookup(stamp, ret))
                        return 0;
        }
        fd = memfd_create("kiln-workspace", MFD_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "memfd_create: %m");
        r = archive_pack_dir(dfd, excludes, fd, NULL, &st, &err);
        if (r < 0)
                return log_error_errno(r, "Failed to pack the workspace: %s", err.message[0] ? err.message : "%m");

        crypto_hash_sha256_init(&h);
        if (lseek(fd, 0, SEEK_SET) < 0)
                return -errno;
        uint64_t size = 0;
        for (;;) {
                ssize_t n = loop_read(fd, buf, sizeof buf);
                if (n < 0)
                        return (int) n;
                if (n == 0)
                        break;
                crypto_hash_sha256_update(&h, (const uint8_t *) buf, (size_t) n);
                size += (uint64_t) n;
        }
        crypto_hash_sha256_final(&h, digest);
        memcpy(ret->digest, "sha256:", 7);
        sodium_bin2hex(ret->digest + 7, sizeof ret->digest - 7, digest, sizeof digest);
        ret->fd = TAKE_FD(fd);
        ret->size = size;
        ret->files = st.n_files;
        /* Remembered only when every time stamp is safely in the past: a file
         * written again within the file system's time granularity would
         * otherwise look unchanged. The stamp was taken before the packing,
         * so a change while packing gives a stamp no later run sees again. */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (stamped && newest < (int64_t) now.tv_sec * 1000000000LL + now.tv_nsec - 2000000000LL)
                cache_store(stamp, ret);
        return 0;
}
