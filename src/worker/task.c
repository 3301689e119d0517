/* SPDX-License-Identifier: MIT */
/* One task attempt, end to end: sandbox, workspace, services, steps,
 * artifacts, log, result. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "threads.h"
#include "client.h"
#include "fd-util.h"
#include "fs-util.h"
#include "health.h"
#include "jobspec.h"
#include "log.h"
#include "logship.h"
#include "mask.h"
#include "output.h"
#include "strv.h"
#include "worker-internal.h"
#include "workspace.h"

#define SLICE_USEC (100 * 1000ULL)
#define INIT_KILL_DELAY_USEC (2 * 1000000ULL)
#define CALL_TIMEOUT_MS 15000L
#define TRANSFER_TIMEOUT_MS (10 * 60 * 1000L)
#define RETRY_MAX_USEC (1000 * 1000ULL)

typedef enum Stop {
        STOP_NONE,
        STOP_TIMEOUT,
        STOP_CANCEL,
        STOP_LOST, /* lease refused or lapsed, or the worker stops hard: no report */
} Stop;

typedef struct Run {
        Task *t;
        Worker *w;
        const WorkerConfig *cfg;
        json_t *spec;
        Client *client;
        Client *ship_client;
        Sandbox *sandbox;
        Output *out;
        LogShip *ship;
        Masker *masker;
        char **secrets; /* values */
        char **env;     /* the task's base environment */
        uint64_t deadline;
        uint64_t memory_max;
        Stop stop;
        const char *state;
        int exit_code;
        char reason[512]; /* why the attempt ended so, for its finish report */
        atomic_bool unsettled; /* a warm sandbox's dispatch, see pool_settle() */
} Run;

/* ---- small helpers ---- */

static void run_vwhy(Run *r, bool gap, const char *fmt, va_list ap) {
        (void) vsnprintf(r->reason, sizeof r->reason, fmt, ap);
        output_printf(r->out, "%s[kiln] %s\n", gap ? "\n" : "", r->reason);
}

/* Why the attempt fails (or ends otherwise): a line of the worker's in the log
 * (after an empty line when gap), and the reason in its finish report. */
_printf_(3, 4) static void run_why(Run *r, bool gap, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        run_vwhy(r, gap, fmt, ap);
        va_end(ap);
}

/* The same, and the attempt's state. */
_printf_(4, 5) static void run_end(Run *r, const char *state, bool gap, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        run_vwhy(r, gap, fmt, ap);
        va_end(ap);
        r->state = state;
}

/* The dispatch is over once the task's first log bytes reached the server
 * (or the task ended, or POOL_QUIET_MAX_USEC passed). */
static void run_settle(Run *r) {
        if (atomic_exchange(&r->unsettled, false))
                pool_settle(r->w->pool);
}

static void run_settle_cb(void *userdata) {
        run_settle(userdata);
}

static int env_set(char ***env, const char *k, const char *v) {
        _cleanup_free_ char *kv = NULL;
        size_t kl = strlen(k);

        if (asprintf(&kv, "%s=%s", k, v) < 0)
                return -ENOMEM;
        for (char **e = *env; e && *e; e++)
                if (strneq(*e, k, kl) && (*e)[kl] == '=') {
                        free(*e);
                        *e = TAKE_PTR(kv);
                        return 0;
                }
        return strv_consume(env, TAKE_PTR(kv));
}

static int env_merge(char ***env, json_t *obj) {
        const char *k;
        json_t *v;
        json_object_foreach(obj, k, v)
                if (json_is_string(v)) {
                        int r = env_set(env, k, json_string_value(v));
                        if (r < 0)
                                return r;
                }
        return 0;
}

/* argv from {"run": script} or {"argv": [...]} (or a health command). */
static int command_argv(json_t *run, json_t *argv, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        size_t i;
        json_t *v;

        if (json_is_string(run)) {
                if (strv_extend(&l, "/bin/sh") < 0 || strv_extend(&l, "-c") < 0 ||
                    strv_extend(&l, json_string_value(run)) < 0)
                        return -ENOMEM;
        } else if (json_is_array(argv)) {
                json_array_foreach(argv, i, v)
                        if (!json_is_string(v) || strv_extend(&l, json_string_value(v)) < 0)
                                return -EINVAL;
        }
        if (!l)
                return -EINVAL;
        *ret = TAKE_PTR(l);
        return 0;
}

static Stop flags_stop(Run *r) {
        if (atomic_load(&r->t->lease_lost) || atomic_load(&r->t->hard_stop))
                return STOP_LOST;
        if (atomic_load(&r->t->cancel))
                return STOP_CANCEL;
        return STOP_NONE;
}

/* Sleeps up to usec, in slices, returning early once the task must stop. */
static void sleep_watching(Run *r, uint64_t usec) {
        uint64_t end = now_usec(CLOCK_MONOTONIC) + usec;
        for (uint64_t now = now_usec(CLOCK_MONOTONIC); now < end && flags_stop(r) == STOP_NONE;
             now = now_usec(CLOCK_MONOTONIC))
                usleep((useconds_t) MIN(end - now, SLICE_USEC));
}

/* Ends everything in the sandbox: at once when the lease is gone, else
 * SIGTERM first. Returns when SIGKILL is due. */
static uint64_t begin_stop(Run *r, Stop why, uint64_t now) {
        if (r->stop == STOP_LOST || (r->stop != STOP_NONE && why != STOP_LOST))
                return UINT64_MAX;
        r->stop = why;
        if (why == STOP_LOST) {
                (void) sandbox_signal_all(r->sandbox, SIGKILL);
                return UINT64_MAX;
        }
        (void) sandbox_signal_all(r->sandbox, SIGTERM);
        return now + r->cfg->kill_grace_usec;
}

/* Waits for command id, watching the deadline, cancel and the lease. */
static int wait_command(Run *r, uint64_t id, uint64_t deadline, SandboxExitStatus *st) {
        uint64_t kill_at = UINT64_MAX, init_kill_at = UINT64_MAX;
        bool init_killed = false;

        for (;;) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                Stop why = flags_stop(r);
                if (why == STOP_NONE && now >= deadline)
                        why = STOP_TIMEOUT;
                if (why != STOP_NONE) {
                        uint64_t k = begin_stop(r, why, now);
                        if (k != UINT64_MAX)
                                kill_at = k;
                }
                if (now >= kill_at) {
                        (void) sandbox_signal_all(r->sandbox, SIGKILL);
                        kill_at = UINT64_MAX;
                        /* If the sandbox's init does not carry it out either,
                         * killing the init itself ends the PID namespace. */
                        init_kill_at = now + INIT_KILL_DELAY_USEC;
                }
                if (now >= init_kill_at && !init_killed) {
                        (void) kill(sandbox_init_pid(r->sandbox), SIGKILL);
                        init_killed = true;
                }
                uint64_t slice = SLICE_USEC;
                if (deadline > now)
                        slice = MIN(slice, deadline - now);
                if (kill_at != UINT64_MAX && kill_at > now)
                        slice = MIN(slice, kill_at - now);
                if (why == STOP_LOST && init_kill_at == UINT64_MAX)
                        init_kill_at = now + INIT_KILL_DELAY_USEC;
                int k = sandbox_wait(r->sandbox, id, MAX(slice, 1000ULL), st);
                if (k == 0)
                        return 0;
                if (k != -ETIME && k != -EINTR)
                        return k;
        }
}

/* The sandbox's OOM kill counter, found from its init's cgroup, so that a
 * step whose child (not the step itself) was OOM-killed is reported as such.
 * -ENODATA when it cannot be read. */
static int oom_kills(pid_t init_pid, uint64_t *ret) {
        static const char *const roots[] = { "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup" };
        _cleanup_free_ char *cg = NULL;
        char path[4200];

        snprintf(path, sizeof path, "/proc/%d/cgroup", (int) init_pid);
        if (read_full_file(path, 1 << 16, &cg, NULL) < 0)
                return -ENODATA;
        for (size_t i = 0; i < ELEMENTSOF(roots); i++) {
                const char *key = i == 0 ? ":memory:" : "0::";
                char *line = strstr(cg, key);
                if (!line || (i > 0 && line != cg && line[-1] != '\n'))
                        continue;
                line += strlen(key);
                size_t n = strcspn(line, "\n");
                char rel[4096];
                snprintf(rel, sizeof rel, "%.*s", (int) MIN(n, sizeof rel - 1), line);
                snprintf(path, sizeof path, "%s%s/%s", roots[i], rel,
                         i == 0 ? "memory.oom_control" : "memory.events");
                _cleanup_free_ char *buf = NULL;
                if (read_full_file(path, 1 << 16, &buf, NULL) < 0)
                        continue;
                const char *p = strstr(buf, "oom_kill ");
                if (!p)
                        continue;
                *ret = strtoull(p + strlen("oom_kill "), NULL, 10);
                return 0;
        }
        return -ENODATA;
}

/* ---- workspace ---- */

static int blob_verify(int fd, const char *hex) {
        crypto_hash_sha256_state h;
        unsigned char digest[crypto_hash_sha256_BYTES];
        char got[crypto_hash_sha256_BYTES * 2 + 1];
        _cleanup_free_ uint8_t *buf = malloc(1 << 16);
        uint64_t off = 0;

        if (!buf)
                return -ENOMEM;
        crypto_hash_sha256_init(&h);
        for (;;) {
                ssize_t n = pread(fd, buf, 1 << 16, (off_t) off);
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                crypto_hash_sha256_update(&h, buf, (size_t) n);
                off += (uint64_t) n;
        }
        crypto_hash_sha256_final(&h, digest);
        sodium_bin2hex(got, sizeof got, digest, sizeof digest);
        return streq(got, hex) ? 0 : -EBADMSG;
}

/* The workspace blob, from the cache or downloaded into it. */
static int blob_open(Run *r, const char *digest, int *ret_fd) {
        char path[4200], tmp[4200], url[128];
        const char *hex = digest + 7;
        long status = 0;
        int k;

        if (!strneq(digest, "sha256:", 7) || strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64)
                return -EINVAL;
        snprintf(path, sizeof path, "%s/sha256-%s", r->w->blob_dir, hex);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
                *ret_fd = fd;
                return 0;
        }
        snprintf(tmp, sizeof tmp, "%s/.tmp-%" PRId64 "-%s", r->w->blob_dir, r->t->lease, hex);
        _cleanup_close_ int out = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (out < 0)
                return -errno;
        snprintf(url, sizeof url, "/api/v1/blobs/%s", digest);
        for (uint64_t backoff = 50000;; backoff = MIN(backoff * 2, RETRY_MAX_USEC)) {
                if (ftruncate(out, 0) < 0 || lseek(out, 0, SEEK_SET) < 0) {
                        k = -errno;
                        break;
                }
                k = client_get_fd(r->client, url, out, r->cfg->blob_max, TRANSFER_TIMEOUT_MS, &status);
                if (k >= 0 && status == 200)
                        k = blob_verify(out, hex);
                else if (k >= 0)
                        k = status == 404 ? -ENOENT : status == 409 ? -ESTALE : -EAGAIN;
                if (k != -EAGAIN && k != -ECONNREFUSED && k != -ETIMEDOUT && k != -EIO)
                        break;
                if (flags_stop(r) != STOP_NONE) {
                        k = -ECANCELED;
                        break;
                }
                usleep((useconds_t) backoff);
        }
        if (k < 0) {
                (void) unlink(tmp);
                return k;
        }
        if (rename(tmp, path) < 0) {
                k = -errno;
                (void) unlink(tmp);
                return k;
        }
        *ret_fd = TAKE_FD(out);
        return 0;
}

static int workspace_setup(Run *r) {
        const char *digest = json_string_value(json_object_get(r->spec, "workspace"));
        _cleanup_close_ int fd = -EBADF;
        char err[600];

        if (!digest)
                return 0;
        int k = blob_open(r, digest, &fd);
        if (errno_is_disk_full(k)) {
                run_why(r, false, "cannot fetch the workspace %s: the worker's disk is full (%s)", digest,
                        r->w->blob_dir);
                return k;
        }
        if (k < 0) {
                run_why(r, false, "cannot fetch the workspace %s: %s", digest, strerror(-k));
                return k;
        }
        k = workspace_extract(sandbox_init_pid(r->sandbox), fd, &r->cfg->workspace_limits, err, sizeof err);
        if (k < 0) {
                run_why(r, false, "the workspace archive was refused: %s", err);
                return k;
        }
        log_debug("Task %" PRId64 ": workspace extracted after %.2f ms", r->t->task_id,
                  (double) (now_usec(CLOCK_MONOTONIC) - r->t->claimed_usec) / 1000);
        return 0;
}

/* ---- services ---- */

typedef struct HealthSpec {
        json_t *command; /* string or argv */
        const char *http, *tcp;
        uint64_t interval, timeout;
        unsigned retries;
} HealthSpec;

static void health_spec(json_t *h, HealthSpec *ret) {
        *ret = (HealthSpec) { .interval = 500 * 1000ULL, .timeout = 5 * 1000000ULL, .retries = 60 };
        if (!h)
                return;
        if (json_is_string(h)) {
                ret->command = h;
                return;
        }
        ret->command = json_object_get(h, "command");
        ret->http = json_string_value(json_object_get(h, "http"));
        ret->tcp = json_string_value(json_object_get(h, "tcp"));
        (void) jobspec_parse_duration(json_object_get(h, "interval"), &ret->interval);
        (void) jobspec_parse_duration(json_object_get(h, "timeout"), &ret->timeout);
        json_t *n = json_object_get(h, "retries");
        if (json_is_integer(n))
                ret->retries = (unsigned) json_integer_value(n);
}

/* One check: 0 healthy, > 0 not yet, < 0 could not check. */
static int health_once(Run *r, const HealthSpec *h, int out_fd, char *why, size_t whysize) {
        if (h->tcp)
                return health_tcp(sandbox_init_pid(r->sandbox), h->tcp, h->timeout, why, whysize) < 0 ? 1 : 0;
        if (h->http)
                return health_http(sandbox_init_pid(r->sandbox), h->http, h->timeout, why, whysize) < 0 ? 1 : 0;

        _cleanup_strv_free_ char **argv = NULL;
        SandboxExitStatus st;
        uint64_t id;
        int k = command_argv(json_is_string(h->command) ? h->command : NULL,
                             json_is_array(h->command) ? h->command : NULL, &argv);
        if (k < 0)
                return k;
        SandboxExec e = { .argv = argv, .env = r->env, .cwd = WORKSPACE_DIR,
                          .stdin_fd = -EBADF, .stdout_fd = out_fd, .stderr_fd = out_fd };
        k = sandbox_spawn(r->sandbox, &e, &id);
        if (k < 0)
                return k;
        k = sandbox_wait(r->sandbox, id, h->timeout, &st);
        if (k == -ETIME) {
                (void) sandbox_signal(r->sandbox, id, SIGKILL);
                (void) sandbox_wait(r->sandbox, id, 5 * 1000000ULL, &st);
                snprintf(why, whysize, "the check took longer than its timeout");
                return 1;
        }
        if (k < 0)
                return k;
        if (st.code == 0 && st.signal == 0 && !st.exec_failed)
                return 0;
        if (st.exec_failed)
                snprintf(why, whysize, "the check could not be started: %s", strerror(st.exec_errno));
        else
                snprintf(why, whysize, "the check exited with status %d", sandbox_exit_status_to_code(&st));
        return 1;
}

static void service_fail(Run *r, size_t i, const char *name, const char *what) {
        _cleanup_free_ char *tail = NULL;
        size_t n = 0;

        run_why(r, false, "service '%s' %s", name, what);
        output_printf(r->out, "[kiln] output of service '%s':\n", name);
        if (output_service_tail(r->out, i, &tail, &n) >= 0 && n > 0) {
                output_write(r->out, tail, n);
                if (tail[n - 1] != '\n')
                        output_write(r->out, "\n", 1);
        }
        output_printf(r->out, "[kiln] end of the output of service '%s'\n", name);
}

/* Starts a service and waits for its health check. */
static int service_start(Run *r, size_t i, json_t *svc) {
        const char *name = json_string_value(json_object_get(svc, "name"));
        _cleanup_strv_free_ char **argv = NULL, **env = strv_copy(r->env);
        HealthSpec h;
        SandboxExitStatus st;
        uint64_t id;
        char why[512] = "";
        int k;

        if (!env)
                return -ENOMEM;
        k = command_argv(json_object_get(svc, "run"), json_object_get(svc, "argv"), &argv);
        if (k >= 0)
                k = env_merge(&env, json_object_get(svc, "env"));
        if (k < 0)
                return k;
        int fd = output_service_fd(r->out, i);
        SandboxExec e = { .argv = argv, .env = env, .cwd = WORKSPACE_DIR,
                          .stdin_fd = -EBADF, .stdout_fd = fd, .stderr_fd = fd };
        k = sandbox_spawn(r->sandbox, &e, &id);
        if (k < 0) {
                run_why(r, false, "service '%s' could not be started: %s", name, strerror(-k));
                return k;
        }
        health_spec(json_object_get(svc, "health"), &h);
        if (!json_object_get(svc, "health"))
                return 0;
        for (unsigned failures = 0;;) {
                Stop stop = flags_stop(r);
                if (stop != STOP_NONE || now_usec(CLOCK_MONOTONIC) >= r->deadline) {
                        (void) begin_stop(r, stop != STOP_NONE ? stop : STOP_TIMEOUT, now_usec(CLOCK_MONOTONIC));
                        return -ECANCELED;
                }
                /* Has it died already? */
                k = sandbox_wait(r->sandbox, id, 1000, &st);
                if (k == 0) {
                        char what[128];
                        snprintf(what, sizeof what, "exited with status %d before it became healthy",
                                 sandbox_exit_status_to_code(&st));
                        service_fail(r, i, name, what);
                        return -ESRCH;
                }
                k = health_once(r, &h, fd, why, sizeof why);
                if (k == 0)
                        return 0;
                if (k < 0) {
                        snprintf(why, sizeof why, "%s", strerror(-k));
                        failures = h.retries;
                }
                if (++failures > h.retries) {
                        char what[700];
                        snprintf(what, sizeof what, "did not become healthy after %u checks (last: %s)",
                                 failures, why);
                        service_fail(r, i, name, what);
                        return -ETIMEDOUT;
                }
                sleep_watching(r, h.interval);
        }
}

/* ---- steps ---- */

static const char *step_label(json_t *step, size_t i, char *buf, size_t size) {
        const char *n = json_string_value(json_object_get(step, "name"));
        if (n)
                snprintf(buf, size, "'%s'", n);
        else
                snprintf(buf, size, "%zu", i + 1);
        return buf;
}

/* Runs one step; returns false when the task stops here. */
static bool step_run(Run *r, size_t i, json_t *step, bool *warning) {
        _cleanup_strv_free_ char **argv = NULL, **env = strv_copy(r->env);
        SandboxExitStatus st;
        uint64_t id, timeout = 0;
        char label[160];
        int k;

        step_label(step, i, label, sizeof label);
        if (!env)
                k = -ENOMEM;
        else
                k = command_argv(json_object_get(step, "run"), json_object_get(step, "argv"), &argv);
        if (k >= 0)
                k = env_merge(&env, json_object_get(step, "env"));
        if (k < 0) {
                run_end(r, "failed", false, "step %s: %s", label, strerror(-k));
                return false;
        }
        uint64_t deadline = r->deadline;
        if (jobspec_parse_duration(json_object_get(step, "timeout"), &timeout) >= 0 && timeout > 0)
                deadline = MIN(deadline, now_usec(CLOCK_MONOTONIC) + timeout);
        SandboxExec e = { .argv = argv, .env = env, .cwd = WORKSPACE_DIR, .stdin_fd = -EBADF,
                          .stdout_fd = output_log_fd(r->out), .stderr_fd = output_err_fd(r->out) };
        uint64_t oom_before = 0, oom_after = 0;
        bool have_oom = oom_kills(sandbox_init_pid(r->sandbox), &oom_before) >= 0;
        k = sandbox_spawn(r->sandbox, &e, &id);
        if (k < 0) {
                run_end(r, "failed", false, "step %s could not be started: %s", label, strerror(-k));
                r->exit_code = -1;
                return false;
        }
        if (i == 0) {
                uint64_t lat = now_usec(CLOCK_MONOTONIC) - r->t->claimed_usec;
                log_debug("Task %" PRId64 ": first step spawned after %.2f ms", r->t->task_id, (double) lat / 1000);
                atomic_fetch_add(&r->w->m.claim_to_start_count, 1);
                atomic_fetch_add(&r->w->m.claim_to_start_sum_usec, lat);
                for (size_t b = 0; b < ELEMENTSOF(r->w->m.claim_to_start_bucket); b++)
                        if (lat <= worker_latency_buckets_usec[b])
                                atomic_fetch_add(&r->w->m.claim_to_start_bucket[b], 1);
        }
        k = wait_command(r, id, deadline, &st);
        if (k < 0) {
                run_end(r, "failed", false, "lost track of step %s: %s", label, strerror(-k));
                r->exit_code = -1;
                return false;
        }
        int code = sandbox_exit_status_to_code(&st);
        r->exit_code = code;
        switch (r->stop) {
        case STOP_LOST:
                return false;
        case STOP_CANCEL:
                run_end(r, "cancelled", true, "step %s was stopped: the task was cancelled", label);
                return false;
        case STOP_TIMEOUT:
                run_end(r, "timed_out", true, "step %s was stopped: it ran past its timeout", label);
                return false;
        case STOP_NONE:
                break;
        }
        if (st.exec_failed) {
                run_end(r, "failed", false, "step %s could not be started: %s", label, strerror(st.exec_errno));
                return false;
        }
        if (!st.oom_killed && code != 0 && have_oom &&
            oom_kills(sandbox_init_pid(r->sandbox), &oom_after) >= 0 && oom_after > oom_before)
                st.oom_killed = true;
        if (st.oom_killed) {
                if (r->memory_max > 0)
                        run_end(r, "failed", true,
                                "step %s was killed: out of memory (the task's memory limit is %" PRIu64 " bytes)",
                                label, r->memory_max);
                else
                        run_end(r, "failed", true, "step %s was killed: out of memory", label);
                return false;
        }
        if (st.signal) {
                run_end(r, "failed", true, "step %s was killed by signal %d (%s)", label, st.signal,
                        strsignal(st.signal));
                return false;
        }
        if (code == 0)
                return true;
        if (code == 42) {
                *warning = true;
                return true;
        }
        if (code == 43) {
                run_end(r, "skipped", false, "step %s exited with status 43: the task is skipped", label);
                return false;
        }
        run_end(r, "failed", false, "step %s exited with status %d", label, code);
        return false;
}

/* ---- artifacts ---- */

static int artifacts_collect(Run *r) {
        json_t *globs_j = json_object_get(r->spec, "artifacts"), *v;
        _cleanup_strv_free_ char **globs = NULL;
        char path[4200], url[256], err[600];
        uint64_t entries = 0;
        size_t i;
        int k;

        if (json_array_size(globs_j) == 0)
                return 0;
        json_array_foreach(globs_j, i, v)
                if (json_is_string(v) && strv_extend(&globs, json_string_value(v)) < 0)
                        return -ENOMEM;
        snprintf(path, sizeof path, "%s/artifacts-%" PRId64 ".tar.zst", r->w->tmp_dir, r->t->lease);
        _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        (void) unlink(path);
        k = workspace_pack(sandbox_init_pid(r->sandbox), globs, fd, &r->cfg->artifact_limits, &entries, err,
                           sizeof err);
        if (k < 0) {
                if (errno_is_disk_full(k))
                        run_why(r, false, "collecting the artifacts failed: the worker's disk is full (%s): %s",
                                r->w->tmp_dir, err);
                else
                        run_why(r, false, "collecting the artifacts failed: %s", err);
                return k;
        }
        if (entries == 0) {
                /* Not an error, and a successful task's log stays exactly what
                 * its steps wrote. */
                log_debug("Task %" PRId64 ": no file matched the artifact patterns", r->t->task_id);
                return 0;
        }
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        snprintf(url, sizeof url, "/api/v1/leases/%" PRId64 "/artifacts/artifacts.tar.zst?fence=%" PRId64,
                 r->t->lease, r->t->fence);
        for (uint64_t backoff = 50000;; backoff = MIN(backoff * 2, RETRY_MAX_USEC)) {
                ClientReply rep = {};
                k = client_put_fd(r->client, url, fd, (uint64_t) st.st_size, TRANSFER_TIMEOUT_MS, &rep);
                long status = rep.status;
                char msg[256];
                if (k >= 0)
                        client_reply_message(&rep, msg, sizeof msg);
                client_reply_done(&rep);
                if (k >= 0 && status == 201)
                        return 0;
                if (k >= 0 && status == 409)
                        return -ESTALE;
                if (k >= 0 && status < 500) {
                        run_why(r, false, "the server refused the artifacts: %s", msg);
                        return -EIO;
                }
                if (flags_stop(r) == STOP_LOST)
                        return -ECANCELED;
                usleep((useconds_t) backoff);
        }
}

/* ---- the result ---- */

static int finish_report(Run *r) {
        char path[128];
        uint64_t size;

        for (uint64_t backoff = 50000;; backoff = MIN(backoff * 2, RETRY_MAX_USEC)) {
                int k = logship_wait(r->ship, &size);
                if (k < 0)
                        return k;
                _cleanup_(json_decrefp) json_t *body = json_pack(
                        "{s:I, s:s, s:i, s:I, s:b}", "fence", (json_int_t) r->t->fence, "state", r->state,
                        "exit_code", MAX(MIN(r->exit_code, 255), -255), "log_size", (json_int_t) size,
                        "log_truncated", logship_truncated(r->ship));
                if (body && r->reason[0] && !streq(r->state, "succeeded"))
                        json_object_set_new(body, "reason", json_string(r->reason));
                ClientReply rep = {};
                if (!body)
                        return -ENOMEM;
                snprintf(path, sizeof path, "/api/v1/leases/%" PRId64 "/finish", r->t->lease);
                k = client_call(r->client, "POST", path, body, CALL_TIMEOUT_MS, &rep);
                long status = rep.status;
                int64_t off = client_reply_offset(&rep);
                client_reply_done(&rep);
                if (k >= 0 && status == 200) {
                        atomic_store(&r->t->reported, true);
                        return 0;
                }
                if (k >= 0 && status == 409)
                        return -ESTALE;
                if (k >= 0 && status == 416 && off >= 0) {
                        logship_rewind(r->ship, (uint64_t) off);
                        continue;
                }
                if (k >= 0 && status >= 400 && status < 500 && status != 408 && status != 429)
                        return -EPROTO;
                if (flags_stop(r) == STOP_LOST)
                        return -ECANCELED;
                usleep((useconds_t) backoff);
        }
}

/* ---- setup ---- */

static int run_prepare_env(Run *r) {
        json_t *task = json_object_get(r->t->assignment, "task");
        char buf[32];
        int k = 0;

        k |= env_set(&r->env, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        k |= env_set(&r->env, "HOME", "/root");
        k |= env_set(&r->env, "CI", "true");
        k |= env_set(&r->env, "KILN", "1");
        snprintf(buf, sizeof buf, "%" PRId64, r->t->job);
        k |= env_set(&r->env, "KILN_JOB_ID", buf);
        snprintf(buf, sizeof buf, "%" PRId64, r->t->task_id);
        k |= env_set(&r->env, "KILN_TASK_ID", buf);
        snprintf(buf, sizeof buf, "%u", r->t->attempt);
        k |= env_set(&r->env, "KILN_ATTEMPT", buf);
        const char *name = json_string_value(json_object_get(task, "name"));
        k |= env_set(&r->env, "KILN_TASK_NAME", name ? name : "");
        if (k < 0)
                return -ENOMEM;
        /* The task's env is already job < matrix axis < task. */
        k = env_merge(&r->env, json_object_get(task, "env"));
        if (k < 0)
                return k;
        return env_merge(&r->env, json_object_get(r->t->assignment, "secrets"));
}

static int run_masker(Run *r, char *why, size_t whysize) {
        json_t *secrets = json_object_get(r->t->assignment, "secrets"), *v;
        const char *name;

        json_object_foreach(secrets, name, v) {
                const char *s = json_string_value(v);
                if (!s)
                        continue;
                if (strlen(s) < MASK_SECRET_MIN) {
                        snprintf(why, whysize,
                                 "secret '%s' is shorter than %d characters: it is refused because masking so "
                                 "short a value in the log would hide ordinary output without protecting it",
                                 name, MASK_SECRET_MIN);
                        return -EINVAL;
                }
                if (strv_extend(&r->secrets, s) < 0)
                        return -ENOMEM;
        }
        int k = masker_new(r->secrets, &r->masker);
        if (k < 0)
                snprintf(why, whysize, "the secrets cannot be masked: %s", strerror(-k));
        return k;
}

static int run_limits(Run *r, PoolLimits *l) {
        json_t *res = json_object_get(r->spec, "resources");
        *l = (PoolLimits) { .memory_max = r->cfg->memory_max, .pids_max = r->cfg->pids_max,
                            .cpu_millis = r->cfg->cpu_millis, .disk_max = r->cfg->disk_max,
                            .network = (NetworkMode) r->cfg->network };
        json_t *v;
        if ((v = json_object_get(res, "memory")) && jobspec_parse_size(v, &l->memory_max) < 0)
                return -EINVAL;
        if ((v = json_object_get(res, "cpus")) && jobspec_parse_cpus(v, &l->cpu_millis) < 0)
                return -EINVAL;
        if ((v = json_object_get(res, "disk")) && jobspec_parse_size(v, &l->disk_max) < 0)
                return -EINVAL;
        if ((v = json_object_get(res, "pids"))) {
                if (!json_is_integer(v) || json_integer_value(v) < 1)
                        return -EINVAL;
                l->pids_max = (uint64_t) json_integer_value(v);
        }
        /* The job's own network, else the worker's. */
        if ((v = json_object_get(r->spec, "network"))) {
                int n = network_mode_from_string(json_string_value(v));
                if (n < 0 || n == NETWORK_HOST)
                        return -EINVAL;
                l->network = (NetworkMode) n;
        }
        r->memory_max = l->memory_max;
        return 0;
}

/* Everything between taking the sandbox and the last step. */
static void run_body(Run *r) {
        json_t *services = json_object_get(r->spec, "services"), *v;
        bool warning = false;
        size_t i;

        int k = workspace_setup(r);
        if (k < 0) {
                /* A full disk here is no fault of the job's: the task is
                 * given back, to run elsewhere. */
                r->state = errno_is_disk_full(k) ? "lost" : "failed";
                r->exit_code = -1;
                return;
        }
        json_array_foreach(services, i, v)
                if (service_start(r, i, v) < 0) {
                        r->state = r->stop == STOP_CANCEL    ? "cancelled"
                                   : r->stop == STOP_TIMEOUT ? "timed_out"
                                                             : "failed";
                        r->exit_code = -1;
                        return;
                }
        json_array_foreach(json_object_get(r->spec, "steps"), i, v)
                if (!step_run(r, i, v, &warning))
                        return;
        r->state = warning ? "warning" : "succeeded";
        r->exit_code = warning ? 42 : 0;
}

static void run_attempt(Run *r) {
        const char *image = json_string_value(json_object_get(r->spec, "image"));
        char why[512], spool[4200];
        PoolLimits limits;
        bool warm = false;
        uint64_t timeout = r->cfg->task_timeout_usec;
        int k;

        if (!image)
                image = r->cfg->default_image;
        (void) jobspec_parse_duration(json_object_get(r->spec, "timeout"), &timeout);
        r->deadline = timeout > 0 ? r->t->claimed_usec + timeout : UINT64_MAX;
        r->state = "failed";
        r->exit_code = -1;

        k = worker_client_get(r->w, &r->client);
        if (k >= 0)
                k = worker_client_get(r->w, &r->ship_client);
        if (k < 0)
                return (void) log_error_errno(k, "Task %" PRId64 ": %m", r->t->task_id);
        why[0] = 0;
        k = run_masker(r, why, sizeof why);
        if (k >= 0)
                k = run_prepare_env(r);
        snprintf(spool, sizeof spool, "%s/%" PRId64 ".log", r->w->spool_dir, r->t->lease);
        LogShipConfig lc = { .client = r->ship_client, .lease = r->t->lease,
                             .fence = r->t->fence, .spool_path = spool, .max_bytes = r->cfg->log_max,
                             .on_acked = run_settle_cb, .userdata = r };
        int q = logship_new(&lc, &r->ship);
        if (q < 0)
                return (void) log_error_errno(q, "Task %" PRId64 ": cannot spool its log: %m", r->t->task_id);
        if (!r->masker) /* without a masker nothing may reach the log but our own words */
                (void) masker_new(NULL, &r->masker);
        q = output_new(r->masker, r->secrets, r->ship, json_array_size(json_object_get(r->spec, "services")),
                       &r->out);
        if (q < 0)
                return (void) log_error_errno(q, "Task %" PRId64 ": %m", r->t->task_id);
        if (k < 0) {
                run_why(r, false, "%s", why[0] ? why : strerror(-k));
                goto report;
        }
        if (run_limits(r, &limits) < 0) {
                run_why(r, false, "invalid resources or network in the job spec");
                goto report;
        }
        /* An image the worker does not serve yet: pulled from the server
         * (verified by digest, unpacked once) if it published one. */
        if (!pool_has_image(r->w->pool, image)) {
                k = worker_image_ensure(r->w, image);
                if (k < 0 && k != -ENOENT) {
                        run_why(r, false, "image '%s': pulling it from the server failed: %s", image, strerror(-k));
                        goto report;
                }
        }
        k = pool_acquire(r->w->pool, image, &limits, &r->sandbox, &warm);
        if (k < 0) {
                run_why(r, false, "no sandbox for image '%s': %s", image,
                        k == -ENOENT ? "neither this worker nor the server has that image" : strerror(-k));
                goto report;
        }
        atomic_store(&r->unsettled, warm);
        pthread_mutex_lock(&r->w->lock);
        r->t->init_pid = sandbox_init_pid(r->sandbox);
        if (atomic_load(&r->t->lease_lost) || atomic_load(&r->t->hard_stop))
                task_kill_sandbox_locked(r->t);
        pthread_mutex_unlock(&r->w->lock);
        atomic_fetch_add(warm ? &r->w->m.warm_starts : &r->w->m.cold_starts, 1);
        log_debug("Task %" PRId64 ": %s sandbox after %.2f ms", r->t->task_id, warm ? "warm" : "cold",
                  (double) (now_usec(CLOCK_MONOTONIC) - r->t->claimed_usec) / 1000);
        run_body(r);
        /* Services and anything a step left behind end with the task. */
        (void) sandbox_signal_all(r->sandbox, SIGKILL);
        k = r->stop != STOP_LOST ? artifacts_collect(r) : 0;
        if (k < 0 && flags_stop(r) != STOP_LOST && (streq(r->state, "succeeded") || streq(r->state, "warning")))
                r->state = errno_is_disk_full(k) ? "lost" : "failed";
report:
        output_finish(r->out, 2 * 1000000ULL);
        atomic_fetch_add(&r->w->m.bytes_masked, masker_bytes_masked(r->masker));
        logship_close(r->ship);
        if (r->stop == STOP_LOST || flags_stop(r) == STOP_LOST) {
                logship_abort(r->ship);
                atomic_fetch_add(&r->w->m.leases_lost, 1);
                log_warning("Task %" PRId64 " (lease %" PRId64 ") stopped without a report: %s", r->t->task_id,
                            r->t->lease, atomic_load(&r->t->lease_lost) ? "its lease is gone" : "the worker stops");
                run_settle(r);
                return;
        }
        k = finish_report(r);
        /* The dispatch ends with the report: the pool may clone again. */
        run_settle(r);
        atomic_fetch_add(&r->w->m.log_bytes, logship_size(r->ship));
        if (k < 0)
                log_warning_errno(k, "Task %" PRId64 " (lease %" PRId64 "): the result was not accepted: %m",
                                  r->t->task_id, r->t->lease);
        else
                log_info("Task %" PRId64 " attempt %u: %s (exit %d)", r->t->task_id, r->t->attempt, r->state,
                         r->exit_code);
}

static void *task_thread(void *arg) {
        Task *t = arg;
        Worker *w = t->w;
        Run r = { .t = t, .w = w, .cfg = w->cfg, .spec = json_object_get(t->assignment, "spec") };
        sigset_t pipe_set;

        /* Writes to a pipe whose reader is gone fail with EPIPE instead of
         * killing the process, whoever owns the signal dispositions. */
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);

        run_attempt(&r);
        output_free(r.out);
        pthread_mutex_lock(&w->lock);
        t->init_pid = 0; /* from here on the pool reaps it: the PID may be reused */
        pthread_mutex_unlock(&w->lock);
        if (r.sandbox)
                pool_release(w->pool, r.sandbox);
        logship_free(r.ship);
        masker_free(r.masker);
        worker_client_put(w, r.client);
        worker_client_put(w, r.ship_client);
        for (char **s = r.secrets; s && *s; s++)
                explicit_bzero(*s, strlen(*s));
        strv_free(r.secrets);
        strv_free(r.env);
        atomic_fetch_add(&w->m.tasks_finished, 1);

        pthread_mutex_lock(&w->lock);
        for (Task **p = &w->tasks; *p; p = &(*p)->next)
                if (*p == t) {
                        *p = t->next;
                        break;
                }
        w->used_slots -= t->slots;
        w->n_tasks--;
        /* Room was made when the task started. */
        w->finished[w->n_finished++] = pthread_self();
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        task_unref(t);
        return NULL;
}

void task_kill_sandbox_locked(Task *t) {
        if (t->init_pid > 0)
                (void) kill(t->init_pid, SIGKILL);
}

void task_unref(Task *t) {
        if (t && atomic_fetch_sub(&t->refs, 1) == 1) {
                json_decref(t->assignment);
                free(t);
        }
}

static int64_t jint(json_t *o, const char *k) {
        json_t *v = json_object_get(o, k);
        return json_is_integer(v) ? json_integer_value(v) : -1;
}

int task_start(Worker *w, json_t *a) {
        _cleanup_(json_decrefp) json_t *assignment = a;
        pthread_t th;
        Task *t;

        t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        atomic_init(&t->refs, 1); /* the thread's; it leaves the list before dropping it */
        t->w = w;
        t->lease = jint(a, "lease");
        t->fence = jint(a, "fence");
        t->job = jint(a, "job");
        t->attempt = (unsigned) MAX(jint(a, "attempt"), 0);
        t->task_id = jint(json_object_get(a, "task"), "id");
        t->slots = (unsigned) MAX(jint(json_object_get(a, "task"), "slots"), 1);
        t->claimed_usec = now_usec(CLOCK_MONOTONIC);
        json_t *exp = json_object_get(a, "expires_in");
        t->lease_deadline = t->claimed_usec + (uint64_t) ((json_is_number(exp) ? json_number_value(exp) : 30.0) * 1e6);
        t->next_heartbeat = 0; /* at once: it moves the attempt to running */
        if (t->lease <= 0 || t->fence <= 0 || !json_is_object(json_object_get(a, "spec"))) {
                free(t);
                return -EBADMSG;
        }
        t->assignment = TAKE_PTR(assignment);

        pthread_mutex_lock(&w->lock);
        /* Every task thread, running or ended and not yet joined, has a place
         * in finished[]. */
        if (w->n_tasks + w->n_finished + 1 > w->max_finished) {
                size_t n = MAX(w->max_finished * 2, (size_t) 16);
                pthread_t *f = realloc(w->finished, n * sizeof(pthread_t));
                if (!f) {
                        pthread_mutex_unlock(&w->lock);
                        json_decref(t->assignment);
                        free(t);
                        return -ENOMEM;
                }
                w->finished = f;
                w->max_finished = n;
        }
        t->next = w->tasks;
        w->tasks = t;
        w->used_slots += t->slots;
        w->n_tasks++;
        pthread_mutex_unlock(&w->lock);
        atomic_fetch_add(&w->m.tasks_started, 1);

        int k = worker_thread_create(&th, task_thread, t);
        if (k < 0) {
                pthread_mutex_lock(&w->lock);
                for (Task **p = &w->tasks; *p; p = &(*p)->next)
                        if (*p == t) {
                                *p = t->next;
                                break;
                        }
                w->used_slots -= t->slots;
                w->n_tasks--;
                pthread_mutex_unlock(&w->lock);
                json_decref(t->assignment);
                free(t);
                return k;
        }
        return 0;
}
