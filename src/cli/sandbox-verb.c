/* SPDX-License-Identifier: MIT */
/* kiln sandbox run|bench|gc: the sandbox engine on its own, like `crun run`. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "parse-util.h"
#include "sandbox.h"
#include "strv.h"
#include "verbs.h"

typedef struct RunOptions {
        SandboxConfig config;
        char **env;
        char *workdir;
        uint64_t timeout_usec;
        uint64_t kill_after_usec;
        unsigned runs;
        char **argv;
} RunOptions;

static void run_options_done(RunOptions *o) {
        sandbox_config_done(&o->config);
        strv_free(o->env);
        free(o->workdir);
}

static void sandbox_usage(FILE *f) {
        fprintf(f,
                "Usage: kiln sandbox run [OPTIONS] -- CMD [ARG…]\n"
                "       kiln sandbox bench [OPTIONS] [--runs N] -- CMD [ARG…]\n"
                "       kiln sandbox gc\n\n"
                "Runs CMD in a fresh sandbox and exits with its exit status (128+N when\n"
                "killed by signal N, 124 on --timeout). Nothing it writes outside its binds\n"
                "survives. Those writes are kept in memory (charged to --memory, and at\n"
                "most --memory or else half of the RAM), or with --disk on a size-limited\n"
                "ext4 image on disk.\n\n"
                "Options:\n"
                "  --image host|DIR     root file system: the host's / (read-only, secrets\n"
                "                       masked) or a root file system directory [host]\n"
                "  --memory SIZE        memory limit (e.g. 512M), files written included\n"
                "                       unless --disk is given\n"
                "  --pids N             process limit [4096; 0: none]\n"
                "  --cpus N             CPU limit (e.g. 1.5)\n"
                "  --disk SIZE          keep the writable layer on disk, in an ext4 image\n"
                "                       of SIZE (at least 16M), instead of in memory\n"
                "  --network MODE       none (loopback only), nat, or host [none]\n"
                "  --bind SRC:DST[:ro]  bind a host path into the sandbox (repeatable)\n"
                "  --mask PATH          hide a further host path (repeatable)\n"
                "  --workdir DIR        working directory inside [/]\n"
                "  --env K=V            set an environment variable (repeatable)\n"
                "  --hostname NAME      hostname inside\n"
                "  --timeout DURATION   stop the command after DURATION (SIGTERM, then\n"
                "                       SIGKILL after --kill-after, default 10s)\n"
                "  --runs N             (bench) how many runs [200]\n");
}

enum {
        OPT_IMAGE = 0x100, OPT_MEMORY, OPT_PIDS, OPT_CPUS, OPT_DISK, OPT_NETWORK, OPT_BIND, OPT_MASK,
        OPT_WORKDIR, OPT_ENV, OPT_HOSTNAME, OPT_TIMEOUT, OPT_KILL_AFTER, OPT_RUNS,
};

static int parse_run_options(int argc, char **argv, RunOptions *o) {
        static const struct option opts[] = {
                { "image", required_argument, NULL, OPT_IMAGE },
                { "memory", required_argument, NULL, OPT_MEMORY },
                { "pids", required_argument, NULL, OPT_PIDS },
                { "cpus", required_argument, NULL, OPT_CPUS },
                { "disk", required_argument, NULL, OPT_DISK },
                { "network", required_argument, NULL, OPT_NETWORK },
                { "bind", required_argument, NULL, OPT_BIND },
                { "mask", required_argument, NULL, OPT_MASK },
                { "workdir", required_argument, NULL, OPT_WORKDIR },
                { "env", required_argument, NULL, OPT_ENV },
                { "hostname", required_argument, NULL, OPT_HOSTNAME },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "kill-after", required_argument, NULL, OPT_KILL_AFTER },
                { "runs", required_argument, NULL, OPT_RUNS },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c, r = 0;

        o->kill_after_usec = 10 * 1000000ULL;
        /* Like podman's --pids-limit: a fork bomb stops here unless asked otherwise. */
        o->config.pids_max = 4096;
        o->runs = 200;
        optind = 1;
        while ((c = getopt_long(argc, argv, "+h", opts, NULL)) >= 0) {
                const char *what = NULL;
                switch (c) {
                case 'h':
                        sandbox_usage(stdout);
                        return 0;
                case OPT_IMAGE:
                        if (!streq(optarg, "host") && !path_is_absolute(optarg)) {
                                char *abs = realpath(optarg, NULL);
                                if (!abs)
                                        return log_error_errno(errno, "--image '%s': %m", optarg);
                                free(o->config.image);
                                o->config.image = abs;
                        } else {
                                free(o->config.image);
                                o->config.image = strdup(optarg);
                        }
                        break;
                case OPT_MEMORY:
                        r = parse_size(optarg, &o->config.memory_max), what = "--memory";
                        break;
                case OPT_PIDS:
                        r = safe_atou64(optarg, &o->config.pids_max), what = "--pids";
                        break;
                case OPT_CPUS:
                        r = parse_cpus(optarg, &o->config.cpu_millis), what = "--cpus";
                        break;
                case OPT_DISK:
                        r = parse_size(optarg, &o->config.disk_max), what = "--disk";
                        break;
                case OPT_NETWORK:
                        r = network_mode_from_string(optarg), what = "--network";
                        if (r >= 0)
                                o->config.network = (NetworkMode) r;
                        break;
                case OPT_BIND: {
                        BindMount *b = realloc(o->config.binds, sizeof(BindMount) * (o->config.n_binds + 1));
                        if (!b)
                                return -ENOMEM;
                        o->config.binds = b;
                        r = bind_mount_parse(optarg, &b[o->config.n_binds]), what = "--bind";
                        if (r >= 0)
                                o->config.n_binds++;
                        break;
                }
                case OPT_MASK:
                        if (!path_is_absolute(optarg))
                                r = -EINVAL, what = "--mask";
                        else
                                r = strv_extend(&o->config.mask_paths, optarg);
                        break;
                case OPT_WORKDIR:
                        if (!path_is_absolute(optarg))
                                r = -EINVAL, what = "--workdir";
                        else {
                                free(o->workdir);
                                o->workdir = strdup(optarg);
                        }
                        break;
                case OPT_ENV:
                        if (!strchr(optarg, '=') || optarg[0] == '=')
                                r = -EINVAL, what = "--env";
                        else
                                r = strv_extend(&o->env, optarg);
                        break;
                case OPT_HOSTNAME:
                        if (strlen(optarg) == 0 || strlen(optarg) > 64)
                                r = -EINVAL, what = "--hostname";
                        else {
                                free(o->config.hostname);
                                o->config.hostname = strdup(optarg);
                        }
                        break;
                case OPT_TIMEOUT:
                        r = parse_duration(optarg, &o->timeout_usec), what = "--timeout";
                        break;
                case OPT_KILL_AFTER:
                        r = parse_duration(optarg, &o->kill_after_usec), what = "--kill-after";
                        break;
                case OPT_RUNS:
                        r = safe_atou(optarg, &o->runs), what = "--runs";
                        if (r >= 0 && o->runs == 0)
                                r = -ERANGE;
                        break;
                default:
                        return -EINVAL;
                }
                if (r < 0)
                        return log_error_errno(r, "Invalid value for %s: '%s' (%m)", what ? what : "option", optarg);
        }
        if (optind >= argc)
                return log_error_errno(EINVAL, "No command given. Usage: kiln sandbox run [OPTIONS] -- CMD…");
        if (!o->config.image && !(o->config.image = strdup("host")))
                return -ENOMEM;
        /* Without --disk, what the command writes outside its binds stays in
         * memory: nothing to create or remove on disk for a short command. */
        o->config.layer_in_memory = o->config.disk_max == 0;
        o->argv = argv + optind;
        return 1;
}

static char **build_env(char **extra) {
        char **env = NULL;
        const char *term = getenv("TERM");
        if (strv_extend(&env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") < 0 ||
            strv_extend(&env, "HOME=/root") < 0)
                return strv_free(env);
        if (term) {
                _cleanup_free_ char *t = NULL;
                if (asprintf(&t, "TERM=%s", term) < 0 || strv_extend(&env, t) < 0)
                        return strv_free(env);
        }
        for (char **e = extra; e && *e; e++) {
                /* A later K=V replaces an earlier one. */
                size_t klen = (size_t) (strchr(*e, '=') - *e) + 1;
                for (char **o = env; *o; o++)
                        if (strneq(*o, *e, klen)) {
                                **o = 0;
                                break;
                        }
                if (strv_extend(&env, *e) < 0)
                        return strv_free(env);
        }
        /* Drop the entries emptied above. */
        size_t j = 0;
        for (size_t i = 0; env[i]; i++) {
                if (env[i][0])
                        env[j++] = env[i];
                else
                        free(env[i]);
        }
        env[j] = NULL;
        return env;
}

/* Signals for the command are taken through a signalfd polled together with
 * the sandbox, so that none is lost between a check and a wait. */
static int forwarding_signals(void) {
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGQUIT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        int fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        return fd < 0 ? -errno : fd;
}

static int need_root(void) {
        if (geteuid() != 0)
                return log_error_errno(EPERM, "kiln sandbox needs root (namespaces, idmapped mounts, cgroups)");
        return 0;
}

static int report_status(const RunOptions *o, const SandboxExitStatus *st) {
        if (st->exec_failed) {
                errno = st->exec_errno;
                log_error("Failed to execute '%s': %m", o->argv[0]);
                return st->exec_errno == ENOENT ? 127 : 126;
        }
        if (st->oom_killed)
                log_error("The command was killed: out of memory (memory limit %" PRIu64 " bytes%s)",
                          o->config.memory_max,
                          o->config.layer_in_memory ? "; without --disk, the files written outside the binds "
                                                      "are in memory and count against it"
                                                    : "");
        return sandbox_exit_status_to_code(st);
}

static int sandbox_run(int argc, char **argv) {
        _cleanup_(run_options_done) RunOptions o = {};
        _cleanup_sandbox_ Sandbox *s = NULL;
        _cleanup_strv_free_ char **env = NULL;
        SandboxExitStatus st;
        uint64_t id;
        int r;

        r = parse_run_options(argc, argv, &o);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        if (need_root() < 0)
                return 1;
        (void) sandbox_gc(SANDBOX_GC_VERBOSE);
        env = build_env(o.env);
        if (!env)
                return log_error_errno(ENOMEM, "Out of memory"), 1;

        _cleanup_close_ int sfd = forwarding_signals();
        if (sfd < 0)
                return log_error_errno(sfd, "signalfd: %m"), 1;
        r = sandbox_prepare(&o.config, &s);
        if (r < 0)
                return 1;
        SandboxExec e = { .argv = o.argv, .env = env, .cwd = o.workdir, .stdin_fd = STDIN_FILENO,
                          .stdout_fd = STDOUT_FILENO, .stderr_fd = STDERR_FILENO };
        r = sandbox_spawn(s, &e, &id);
        if (r < 0) {
                log_error_errno(r, "Failed to start the command: %m");
                return 1;
        }
        uint64_t deadline = o.timeout_usec ? now_usec(CLOCK_MONOTONIC) + o.timeout_usec : UINT64_MAX;
        bool timed_out = false;
        for (;;) {
                struct pollfd p[2] = {
                        { .fd = sandbox_control_fd(s), .events = POLLIN },
                        { .fd = sfd, .events = POLLIN },
                };
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                int ms = deadline == UINT64_MAX ? -1 : now >= deadline ? 0 : (int) ((deadline - now + 999) / 1000);
                if (poll(p, 2, ms) < 0 && errno != EINTR)
                        return log_error_errno(errno, "poll: %m"), 1;
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == (ssize_t) sizeof si)
                        (void) sandbox_signal(s, id, (int) si.ssi_signo);
                r = sandbox_wait(s, id, 0, &st);
                if (r >= 0)
                        break;
                if (r != -ETIME) {
                        log_error_errno(r, "Lost the sandbox: %m");
                        return 1;
                }
                if (now_usec(CLOCK_MONOTONIC) < deadline)
                        continue;
                if (timed_out)
                        break; /* the grace period is over: destroying kills everything */
                log_error("Timed out; stopping the command");
                timed_out = true;
                (void) sandbox_signal_all(s, SIGTERM);
                deadline = now_usec(CLOCK_MONOTONIC) + o.kill_after_usec;
        }
        r = timed_out ? 124 : report_status(&o, &st);
        (void) sandbox_destroy_before_exit(TAKE_PTR(s));
        return r;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

/* Times CMD run n times in one prepared (warm) sandbox, and the same CMD
 * started n times on the host with posix_spawn, and prints both medians. */
static int sandbox_bench(int argc, char **argv) {
        _cleanup_(run_options_done) RunOptions o = {};
        _cleanup_sandbox_ Sandbox *s = NULL;
        _cleanup_strv_free_ char **env = NULL;
        _cleanup_free_ uint64_t *warm = NULL, *host = NULL;
        int r;

        r = parse_run_options(argc, argv, &o);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        if (need_root() < 0)
                return 1;
        env = build_env(o.env);
        warm = calloc(o.runs, sizeof(uint64_t));
        host = calloc(o.runs, sizeof(uint64_t));
        if (!env || !warm || !host)
                return 1;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        r = sandbox_prepare(&o.config, &s);
        if (r < 0)
                return 1;
        uint64_t prepare = now_usec(CLOCK_MONOTONIC) - t0;
        SandboxExec e = { .argv = o.argv, .env = env, .cwd = o.workdir, .stdin_fd = -1, .stdout_fd = -1,
                          .stderr_fd = -1 };
        for (unsigned i = 0; i < o.runs; i++) {
                SandboxExitStatus st;
                t0 = now_usec(CLOCK_MONOTONIC);
                r = sandbox_exec(s, &e, UINT64_MAX, &st);
                warm[i] = now_usec(CLOCK_MONOTONIC) - t0;
                if (r < 0 || sandbox_exit_status_to_code(&st) != 0)
                        return log_error_errno(r < 0 ? r : EIO, "Run %u failed", i), 1;
        }
        for (unsigned i = 0; i < o.runs; i++) {
                pid_t pid;
                int status;
                t0 = now_usec(CLOCK_MONOTONIC);
                if (posix_spawnp(&pid, o.argv[0], NULL, NULL, o.argv, env) != 0 ||
                    waitpid(pid, &status, 0) < 0)
                        return log_error_errno(errno, "posix_spawn: %m"), 1;
                host[i] = now_usec(CLOCK_MONOTONIC) - t0;
        }
        qsort(warm, o.runs, sizeof(uint64_t), cmp_u64);
        qsort(host, o.runs, sizeof(uint64_t), cmp_u64);
        printf("{\"runs\": %u, \"prepare_us\": %" PRIu64 ", \"warm_exec_median_us\": %" PRIu64
               ", \"warm_exec_p95_us\": %" PRIu64 ", \"host_spawn_median_us\": %" PRIu64
               ", \"host_spawn_p95_us\": %" PRIu64 "}\n",
               o.runs, prepare, warm[o.runs / 2], warm[o.runs * 95 / 100], host[o.runs / 2],
               host[o.runs * 95 / 100]);
        return 0;
}

static int sandbox_gc_verb(int argc, char **argv) {
        if (argc > 1 && (streq(argv[1], "--help") || streq(argv[1], "-h"))) {
                sandbox_usage(stdout);
                return 0;
        }
        if (need_root() < 0)
                return 1;
        int n = sandbox_gc(SANDBOX_GC_VERBOSE | SANDBOX_GC_NETWORK);
        if (n < 0)
                return log_error_errno(n, "Garbage collection failed: %m"), 1;
        printf("removed %d leftover sandbox%s\n", n, n == 1 ? "" : "es");
        return 0;
}

int verb_sandbox(int argc, char **argv) {
        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
                sandbox_usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        if (streq(argv[1], "run"))
                return sandbox_run(argc - 1, argv + 1);
        if (streq(argv[1], "bench"))
                return sandbox_bench(argc - 1, argv + 1);
        if (streq(argv[1], "gc"))
                return sandbox_gc_verb(argc - 1, argv + 1);
        log_error("Unknown sandbox command '%s'. See 'kiln sandbox --help'.", argv[1]);
        return 2;
}
