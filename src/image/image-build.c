/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "archive-safe.h"
#include "fd-util.h"
#include "fs-util.h"
#include "image-build.h"
#include "image-layers.h"
#include "log.h"
#include "macro.h"
#include "strv.h"

#define PROVISION_PATH "/kiln-provision"
#define ENV_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

extern char **environ;

void image_recipe_init(ImageRecipe *r) {
        *r = (ImageRecipe) { .tries = 3, .min_success = 0.8, .step_timeout_usec = 3600ULL * 1000000ULL,
                             .keep = IMAGE_KEEP_DEFAULT };
}

void image_recipe_done(ImageRecipe *r) {
        free(r->suite);
        strv_free(r->packages);
        free(r->script);
        free(r->validate);
        free(r->base_cache);
        for (size_t i = 0; i < r->n_binds; i++) {
                free(r->binds[i].source);
                free(r->binds[i].target);
        }
        free(r->binds);
        *r = (ImageRecipe) {};
}

json_t *image_recipe_to_json(const ImageRecipe *r) {
        json_t *pk = json_array();
        _cleanup_free_ char *from = NULL;
        if (!pk)
                return NULL;
        for (char **p = r->packages; p && *p; p++)
                json_array_append_new(pk, json_string(*p));
        if (r->suite && asprintf(&from, "debian:%s", r->suite) < 0) {
                json_decref(pk);
                return NULL;
        }
        return json_pack("{s:s?, s:o, s:s?, s:s?, s:i, s:f}", "from", from, "packages", pk, "script", r->script,
                         "validate", r->validate, "tries", (json_int_t) r->tries, "min_success", r->min_success);
}

int image_recipe_from_json(json_t *j, ImageRecipe *r) {
        const char *from = json_string_value(json_object_get(j, "from"));
        const char *script = json_string_value(json_object_get(j, "script"));
        const char *validate = json_string_value(json_object_get(j, "validate"));
        json_t *pk = json_object_get(j, "packages"), *p;
        size_t i;

        if (!from || !strneq(from, "debian:", 7))
                return -EINVAL;
        if (!(r->suite = strdup(from + 7)))
                return -ENOMEM;
        json_array_foreach(pk, i, p)
                if (json_is_string(p) && strv_extend(&r->packages, json_string_value(p)) < 0)
                        return -ENOMEM;
        if ((script && !(r->script = strdup(script))) || (validate && !(r->validate = strdup(validate))))
                return -ENOMEM;
        if (json_is_integer(json_object_get(j, "tries")))
                r->tries = (unsigned) json_integer_value(json_object_get(j, "tries"));
        if (json_is_number(json_object_get(j, "min_success")))
                r->min_success = json_number_value(json_object_get(j, "min_success"));
        return 0;
}

void image_result_done(ImageResult *res) {
        res->log_path = mfree(res->log_path);
}

_printf_(3, 4) static int step_fail(ImageResult *res, const char *step, const char *fmt, ...) {
        va_list ap;
        snprintf(res->step, sizeof res->step, "%s", step);
        va_start(ap, fmt);
        vsnprintf(res->message, sizeof res->message, fmt, ap);
        va_end(ap);
        return -EIO;
}

static void log_step(int fd, const char *fmt, ...) _printf_(2, 3);
static void log_step(int fd, const char *fmt, ...) {
        va_list ap;
        time_t t = time(NULL);
        struct tm tm;
        char ts[32];
        gmtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        dprintf(fd, "== %s ", ts);
        va_start(ap, fmt);
        vdprintf(fd, fmt, ap);
        va_end(ap);
        dprintf(fd, "\n");
}

static double seconds_since(uint64_t t0) {
        return (double) (now_usec(CLOCK_MONOTONIC) - t0) / 1e6;
}

/* ---- base ---- */

static int spawn_wait(char **argv, int log_fd) {
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status, r;

        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, log_fd, STDOUT_FILENO);
        posix_spawn_file_actions_adddup2(&fa, log_fd, STDERR_FILENO);
        r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (r != 0)
                return -r;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return 128 + WTERMSIG(status);
}

/* The backend makes its own /dev: device nodes are not part of an image. */
static void drop_devices(int rootfs_fd) {
        _cleanup_close_ int dfd = openat(rootfs_fd, "dev", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return;
        DIR *d = fdopendir(dfd);
        if (!d)
                return;
        dfd = -EBADF;
        for (struct dirent *de; (de = readdir(d));) {
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) >= 0 &&
                    (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
}

static int base_cache_path(const ImageRecipe *r, char **ret) {
        crypto_hash_sha256_state h;
        uint8_t d[crypto_hash_sha256_BYTES];
        char hex[17];

        crypto_hash_sha256_init(&h);
        crypto_hash_sha256_update(&h, (const uint8_t *) r->suite, strlen(r->suite) + 1);
        for (char **p = r->packages; p && *p; p++)
                crypto_hash_sha256_update(&h, (const uint8_t *) *p, strlen(*p) + 1);
        crypto_hash_sha256_final(&h, d);
        for (size_t i = 0; i < 8; i++)
                snprintf(hex + 2 * i, 3, "%02x", d[i]);
        return asprintf(ret, "%s/debian-%s-%s.tar.zst", r->base_cache, r->suite, hex) < 0 ? -ENOMEM : 0;
}

static int step_base(const ImageRecipe *r, const char *rootfs, int rootfs_fd, int log_fd, ImageResult *res) {
        _cleanup_free_ char *cache = NULL, *include = NULL, *tmp = NULL;
        ArchiveError err = {};
        int k;

        if (r->base_cache) {
                if (mkdir_p(r->base_cache, 0700) < 0 || base_cache_path(r, &cache) < 0)
                        return step_fail(res, "base", "cannot use the base cache '%s'", r->base_cache);
                _cleanup_close_ int fd = open(cache, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                if (fd >= 0) {
                        log_step(log_fd, "base: from the cache %s", cache);
                        k = archive_extract_rootfs(fd, rootfs_fd, &image_rootfs_limits, 0, NULL, &err);
                        if (k < 0)
                                return step_fail(res, "base", "the cached base '%s' is unusable: %s", cache,
                                                 err.message);
                        return 0;
                }
        }
        _cleanup_strv_free_ char **argv = NULL;
        if (strv_extend(&argv, "mmdebstrap") < 0 || strv_extend(&argv, "--variant=minbase") < 0)
                return -ENOMEM;
        for (char **p = r->packages; p && *p; p++) {
                _cleanup_free_ char *n = NULL;
                if (asprintf(&n, "%s%s%s", include ?: "--include=", include ? "," : "", *p) < 0)
                        return -ENOMEM;
                free(include);
                include = TAKE_PTR(n);
        }
        if ((include && strv_extend(&argv, include) < 0) || strv_extend(&argv, r->suite) < 0 ||
            strv_extend(&argv, rootfs) < 0)
                return -ENOMEM;
        log_step(log_fd, "base: mmdebstrap --variant=minbase%s%s %s", include ? " " : "", include ?: "", r->suite);
        k = spawn_wait(argv, log_fd);
        if (k < 0)
                return step_fail(res, "base", "cannot run mmdebstrap: %s (install it: apt-get install mmdebstrap)",
                                 strerror(-k));
        if (k != 0)
                return step_fail(res, "base", "mmdebstrap failed with exit status %d", k);
        drop_devices(rootfs_fd);
        if (cache) {
                /* Written under a temporary name: a half-written cache is never used. */
                if (asprintf(&tmp, "%s.%d.tmp", cache, (int) getpid()) < 0)
                        return -ENOMEM;
                _cleanup_close_ int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (out < 0 || archive_pack_rootfs(rootfs_fd, out, &image_rootfs_limits, NULL, &err) < 0 ||
                    fsync(out) < 0 || rename(tmp, cache) < 0) {
                        log_step(log_fd, "base: could not cache the base in %s: %s", cache, err.message);
                        (void) unlink(tmp);
                } else
                        log_step(log_fd, "base: cached as %s", cache);
        }
        return 0;
}

/* ---- sandboxes ---- */

static int config_for(const ImageRecipe *r, const char *rootfs, NetworkMode net, const char *script_file,
                      SandboxConfig *c) {
        *c = (SandboxConfig) { .network = net, .pids_max = 32768 };
        c->image = strdup(rootfs);
        c->binds = calloc(r->n_binds + 1, sizeof(BindMount));
        if (!c->image || !c->binds)
                return -ENOMEM;
        for (size_t i = 0; i < r->n_binds; i++) {
                c->binds[i] = (BindMount) { .source = strdup(r->binds[i].source),
                                            .target = strdup(r->binds[i].target),
                                            .read_only = r->binds[i].read_only };
                c->n_binds++;
                if (!c->binds[i].source || !c->binds[i].target)
                        return -ENOMEM;
        }
        if (script_file) {
                c->binds[c->n_binds] = (BindMount) { .source = strdup(script_file), .target = strdup(PROVISION_PATH),
                                                     .read_only = true };
                c->n_binds++;
                if (!c->binds[c->n_binds - 1].source || !c->binds[c->n_binds - 1].target)
                        return -ENOMEM;
        }
        return 0;
}

/* Runs argv in s; returns the exit code (0..255, 128+N), -ETIME or -errno. */
static int run_in(Sandbox *s, char **argv, char **env, int log_fd, uint64_t timeout) {
        SandboxExec e = { .argv = argv, .env = env, .stdin_fd = -1, .stdout_fd = log_fd, .stderr_fd = log_fd };
        SandboxExitStatus st;
        int r = sandbox_exec(s, &e, timeout ?: UINT64_MAX, &st);
        if (r < 0)
                return r;
        if (st.exec_failed)
                return 127;
        return sandbox_exit_status_to_code(&st);
}

static int step_script(const ImageRecipe *r, const char *staging, const char *rootfs, int rootfs_fd, int log_fd,
                       ImageResult *res) {
        _cleanup_(sandbox_config_done) SandboxConfig c = {};
        _cleanup_sandbox_ Sandbox *s = NULL;
        _cleanup_free_ char *script_file = NULL, *upper = NULL;
        ArchiveError err = {};
        struct stat up, root;
        int k;

        if (asprintf(&script_file, "%s/provision.sh", staging) < 0)
                return -ENOMEM;
        _cleanup_close_ int sfd = open(script_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        k = sfd < 0 ? -errno : loop_write(sfd, r->script, strlen(r->script));
        if (k < 0)
                return step_fail(res, "script", "cannot write '%s': %s", script_file, strerror(-k));
        if (config_for(r, rootfs, NETWORK_NAT, script_file, &c) < 0)
                return -ENOMEM;
        log_step(log_fd, "script: /bin/sh %s in a sandbox of the new root file system (network nat)",
                 PROVISION_PATH);
        if (sandbox_prepare(&c, &s) < 0)
                return step_fail(res, "script", "cannot prepare a sandbox of the new root file system");
        char *argv[] = { (char *) "/bin/sh", (char *) "-e", (char *) PROVISION_PATH, NULL };
        char *env[] = { (char *) ENV_PATH, (char *) "HOME=/root", (char *) "DEBIAN_FRONTEND=noninteractive",
                        (char *) "KILN_IMAGE_BUILD=1", NULL };
        k = run_in(s, argv, env, log_fd, r->step_timeout_usec);
        if (k == -ETIME)
                return step_fail(res, "script", "the provisioning script timed out");
        if (k < 0)
                return step_fail(res, "script", "cannot run the provisioning script: %s", strerror(-k));
        if (k != 0)
                return step_fail(res, "script", "the provisioning script failed with exit status %d", k);

        /* The script's changes are the sandbox's writable layer; its owners
         * are host uids of the sandbox's range, shifted back here. */
        if (asprintf(&upper, "%s/upper", sandbox_state_dir(s)) < 0)
                return -ENOMEM;
        _cleanup_close_ int ufd = open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (ufd < 0 || fstat(ufd, &up) < 0 || fstat(rootfs_fd, &root) < 0 || up.st_uid < root.st_uid)
                return step_fail(res, "script", "cannot read the sandbox's writable layer '%s'", upper);
        k = layer_merge(ufd, rootfs_fd, LAYER_OVERLAY, up.st_uid - root.st_uid, &err);
        if (k < 0)
                return step_fail(res, "script", "cannot apply the script's changes: %s", err.message);
        log_step(log_fd, "script: done, changes applied");
        return 0;
}

static int step_validate(const ImageRecipe *r, const char *rootfs, int log_fd, json_t **ret, ImageResult *res) {
        json_t *runs = json_array();
        unsigned passed = 0;

        if (!runs)
                return -ENOMEM;
        for (unsigned i = 1; i <= r->tries; i++) {
                _cleanup_(sandbox_config_done) SandboxConfig c = {};
                _cleanup_sandbox_ Sandbox *s = NULL;
                char try_env[64], tries_env[64];
                uint64_t t0 = now_usec(CLOCK_MONOTONIC);
                int k;

                snprintf(try_env, sizeof try_env, "KILN_VALIDATE_TRY=%u", i);
                snprintf(tries_env, sizeof tries_env, "KILN_VALIDATE_TRIES=%u", r->tries);
                char *argv[] = { (char *) "/bin/sh", (char *) "-c", r->validate, NULL };
                char *env[] = { (char *) ENV_PATH, (char *) "HOME=/root", try_env, tries_env, NULL };
                log_step(log_fd, "validate: try %u/%u: %s", i, r->tries, r->validate);
                if (config_for(r, rootfs, NETWORK_NONE, NULL, &c) < 0) {
                        json_decref(runs);
                        return -ENOMEM;
                }
                k = sandbox_prepare(&c, &s) < 0 ? -ENXIO : run_in(s, argv, env, log_fd, r->step_timeout_usec);
                if (k >= 0)
                        log_step(log_fd, "validate: try %u/%u: exit status %d", i, r->tries, k);
                else
                        log_step(log_fd, "validate: try %u/%u: %s", i, r->tries,
                                 k == -ENXIO  ? "cannot prepare a sandbox of the new revision (see kiln's errors)"
                                 : k == -ETIME ? "timed out"
                                               : strerror(-k));
                if (k == 0)
                        passed++;
                json_array_append_new(runs, json_pack("{s:i, s:i, s:f}", "try", (json_int_t) i, "exit",
                                                      (json_int_t) k, "seconds", seconds_since(t0)));
        }
        bool ok = (double) passed + 1e-9 >= r->min_success * (double) r->tries;
        *ret = json_pack("{s:s, s:i, s:i, s:f, s:o, s:b}", "command", r->validate, "tries", (json_int_t) r->tries,
                         "passed", (json_int_t) passed, "min_success", r->min_success, "runs", runs, "ok", ok);
        if (!ok)
                return step_fail(res, "validate", "validation passed %u of %u tries; at least %.0f%% needed", passed,
                                 r->tries, r->min_success * 100.0);
        return 0;
}

/* ---- the pipeline ---- */

typedef struct Staged {
        unsigned rev;
        char *dir;
        char *rootfs;
        int rootfs_fd;
        int log_fd;
        uint64_t t0;
} Staged;

static void staged_done(Staged *st) {
        free(st->dir);
        free(st->rootfs);
        safe_close(st->rootfs_fd);
        safe_close(st->log_fd);
}

static int stage(ImageStore *s, const char *name, Staged *st, ImageResult *res) {
        int k;
        *st = (Staged) { .rootfs_fd = -EBADF, .log_fd = -EBADF, .t0 = now_usec(CLOCK_MONOTONIC) };
        k = image_rev_begin(s, name, &st->rev, &st->log_fd);
        if (k < 0)
                return log_error_errno(k, "Failed to start a revision of image '%s': %m", name);
        res->rev = st->rev;
        res->log_path = image_log_path(s, name, st->rev);
        st->dir = image_rev_dir(s, name, st->rev, true);
        if (!res->log_path || !st->dir || asprintf(&st->rootfs, "%s/rootfs", st->dir) < 0)
                return -ENOMEM;
        st->rootfs_fd = open(st->rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (st->rootfs_fd < 0)
                return log_error_errno(errno, "Failed to open '%s': %m", st->rootfs);
        return 0;
}

static int finish(ImageStore *s, const char *name, const ImageRecipe *r, Staged *st, json_t *meta, int k,
                  ImageResult *res) {
        json_t *outcome;
        json_object_set_new(meta, "build_seconds", json_real(seconds_since(st->t0)));
        json_object_set_new(meta, "build_log", json_string(res->log_path));
        if (k >= 0) {
                log_step(st->log_fd, "commit: packing and switching current");
                k = image_rev_commit(s, name, st->rev, meta, r->keep);
                if (k < 0)
                        step_fail(res, "commit", "cannot commit the revision: %s", strerror(-k));
        }
        if (k >= 0) {
                json_t *m = NULL;
                res->committed = true;
                if (image_rev_meta(s, name, st->rev, &m) >= 0) {
                        snprintf(res->digest, sizeof res->digest, "%s",
                                 json_string_value(json_object_get(m, "digest")) ?: "");
                        json_decref(m);
                }
                log_step(st->log_fd, "done: revision %u is current (%s)", st->rev, res->digest);
                outcome = json_pack("{s:s, s:i, s:f, s:s, s:I}", "status", "succeeded", "revision",
                                    (json_int_t) st->rev, "seconds", seconds_since(st->t0), "log", res->log_path,
                                    "finished", (json_int_t) time(NULL));
                (void) image_info_update(s, name, "last_build", outcome);
                json_decref(outcome);
                return 0;
        }
        log_step(st->log_fd, "failed: step %s: %s", res->step, res->message);
        outcome = json_pack("{s:s, s:i, s:s, s:s, s:f, s:s, s:I, s:O?}", "status", "failed", "revision",
                            (json_int_t) st->rev, "step", res->step, "message", res->message, "seconds",
                            seconds_since(st->t0), "log", res->log_path, "finished", (json_int_t) time(NULL),
                            "validation", json_object_get(meta, "validation"));
        (void) image_rev_abort(s, name, st->rev, outcome);
        json_decref(outcome);
        return k;
}

static int gate(const ImageRecipe *r, Staged *st, json_t *meta, ImageResult *res) {
        json_t *v = NULL;
        if (!r->validate)
                return 0;
        int k = step_validate(r, st->rootfs, st->log_fd, &v, res);
        if (v)
                json_object_set_new(meta, "validation", v);
        return k;
}

int image_build(ImageStore *s, const char *name, const ImageRecipe *r, ImageResult *res) {
        _cleanup_(staged_done) Staged st = { .rootfs_fd = -EBADF, .log_fd = -EBADF };
        json_t *meta = NULL;
        int k;

        k = stage(s, name, &st, res);
        if (k < 0)
                return k;
        meta = json_pack("{s:s, s:o}", "source", "build", "recipe", image_recipe_to_json(r));
        if (!meta)
                return -ENOMEM;
        uint64_t t = now_usec(CLOCK_MONOTONIC);
        k = step_base(r, st.rootfs, st.rootfs_fd, st.log_fd, res);
        json_object_set_new(meta, "base_seconds", json_real(seconds_since(t)));
        if (k >= 0 && r->script) {
                t = now_usec(CLOCK_MONOTONIC);
                k = step_script(r, st.dir, st.rootfs, st.rootfs_fd, st.log_fd, res);
                json_object_set_new(meta, "script_seconds", json_real(seconds_since(t)));
                _cleanup_free_ char *script_file = NULL;
                if (asprintf(&script_file, "%s/provision.sh", st.dir) >= 0)
                        (void) unlink(script_file);
        }
        if (k >= 0)
                k = gate(r, &st, meta, res);
        k = finish(s, name, r, &st, meta, k, res);
        json_decref(meta);
        return k;
}

int image_import(ImageStore *s, const char *name, const char *source, const ImageRecipe *r, ImageResult *res) {
        _cleanup_(staged_done) Staged st = { .rootfs_fd = -EBADF, .log_fd = -EBADF };
        _cleanup_free_ char *scratch = NULL;
        const char *format = NULL;
        ArchiveError err = {};
        json_t *meta = NULL;
        int k;

        k = stage(s, name, &st, res);
        if (k < 0)
                return k;
        if (asprintf(&scratch, "%s/scratch", st.dir) < 0)
                return -ENOMEM;
        log_step(st.log_fd, "import: %s", source);
        k = image_import_source(source, st.rootfs_fd, scratch, st.log_fd, &format, &err);
        if (k < 0)
                step_fail(res, "import", "%s", err.message[0] ? err.message : strerror(-k));
        meta = json_pack("{s:s, s:{s:s, s:s?}}", "source", "import", "import", "from", source, "format", format);
        if (!meta)
                return -ENOMEM;
        if (k >= 0 && r->validate) {
                json_t *rec = json_pack("{s:s, s:i, s:f}", "validate", r->validate, "tries", (json_int_t) r->tries,
                                        "min_success", r->min_success);
                json_object_set_new(meta, "recipe", rec);
                k = gate(r, &st, meta, res);
        }
        k = finish(s, name, r, &st, meta, k, res);
        json_decref(meta);
        return k;
}
