/* SPDX-License-Identifier: MIT */
/* kiln worker: run tasks from a server's queue in fresh sandboxes. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "conf-args.h"
#include "fd-util.h"
#include "fs-util.h"
#include "image-schedule.h"
#include "image-store.h"
#include "log.h"
#include "parse-util.h"
#include "sandbox.h"
#include "strv.h"
#include "verbs.h"
#include "worker.h"

#define IMAGES_MAX 64

static void worker_usage(FILE *f) {
        fprintf(f,
                "Usage: kiln worker --server URL --token TOKEN [OPTIONS]\n\n"
                "Registers with a kiln server and runs its tasks, each in a fresh sandbox\n"
                "taken from a warm pool. SIGTERM or SIGINT drains (no new tasks, running ones\n"
                "finish); a second one stops the running tasks so that they are queued again.\n\n"
                "Options:\n"
                "  --config FILE           options from FILE: 'key = value' lines, keys the long\n"
                "                          options below; the command line wins (or adds)\n"
                "  --server URL            the server, e.g. http://127.0.0.1:7070 [$KILN_SERVER]\n"
                "  --token TOKEN           a worker registration token [$KILN_WORKER_TOKEN]\n"
                "  --token-file PATH       read the token from a file (keeps it out of ps)\n"
                "  --name NAME             the worker's name [the host name]\n"
                "  --slots N               tasks (slots) run at once [1]\n"
                "  --labels K=V,…          labels jobs can require\n"
                "  --image NAME=DIR        an image: a root file system directory (repeatable;\n"
                "                          'host' is always there)\n"
                "  --image NAME            an image of the image store under --data, pulled from\n"
                "                          the server (by digest, verified) when absent or when\n"
                "                          the server publishes another revision\n"
                "  --image-poll D          how often those are compared with the server [30s]\n"
                "  --rebuild NAME@HH:MM    rebuild NAME daily at local HH:MM with its recorded\n"
                "                          recipe, in one of the slots (repeatable)\n"
                "  --base-cache DIR        mmdebstrap base cache of the rebuilds\n"
                "  --pool IMAGE=N          keep N sandboxes of IMAGE prepared (repeatable)\n"
                "  --default-image NAME    for jobs that name none [host]\n"
                "  --data DIR              state: log spool, blob cache [/var/lib/kiln/worker]\n"
                "  --drain-timeout D       how long running tasks may finish after SIGTERM [10m]\n"
                "  --kill-grace D          SIGTERM → SIGKILL on timeout and cancel [10s]\n"
                "  --task-timeout D        for jobs without a timeout [24h]\n"
                "  --log-max SIZE          cap of one attempt's log [256M]\n"
                "  --min-free SIZE         take no task while --data has less free space [64M];\n"
                "                          0: never look\n"
                "  --claim-wait D          long-poll time of a claim [30s]\n"
                "  --cancel-poll D         heartbeat at least this often: bounds cancel latency [1s]\n"
                "  --memory/--pids/--cpus/--disk   limits of warm sandboxes [none]\n"
                "  --network none|nat      sandboxes' network: loopback only, or outbound\n"
                "                          access through NAT [none]\n"
                "  --workspace-max-files N, --workspace-max-bytes SIZE\n"
                "                          limits of a workspace archive [100000, 8G]\n"
                "  --artifact-max-bytes SIZE  limit of a task's artifacts [1G]\n"
                "  --metrics ADDR:PORT     serve /metrics there\n");
}

enum {
        ARG_SERVER = 0x100, ARG_TOKEN, ARG_TOKEN_FILE, ARG_NAME, ARG_SLOTS, ARG_LABELS, ARG_IMAGE, ARG_POOL, ARG_DEFAULT_IMAGE,
        ARG_DATA, ARG_DRAIN, ARG_GRACE, ARG_TASK_TIMEOUT, ARG_LOG_MAX, ARG_CLAIM_WAIT, ARG_CANCEL_POLL,
        ARG_MEMORY, ARG_PIDS, ARG_CPUS, ARG_DISK, ARG_WS_FILES, ARG_WS_BYTES, ARG_ART_BYTES, ARG_METRICS, ARG_NETWORK,
        ARG_IMAGE_POLL, ARG_REBUILD, ARG_BASE_CACHE, ARG_MIN_FREE,
};

typedef struct Opts {
        WorkerConfig cfg;
        WorkerImage images[IMAGES_MAX];
        char *strings[3 * IMAGES_MAX + 4]; /* owned names, paths and tokens */
        size_t n_strings;
        char **args; /* the command line with --config's options in */
} Opts;

static WorkerImage *image_get(Opts *o, const char *name, bool create) {
        for (size_t i = 0; i < o->cfg.n_images; i++)
                if (streq(o->images[i].name, name))
                        return &o->images[i];
        if (!create || o->cfg.n_images >= IMAGES_MAX || o->n_strings + 1 >= ELEMENTSOF(o->strings))
                return NULL;
        char *n = strdup(name);
        if (!n)
                return NULL;
        o->strings[o->n_strings++] = n;
        WorkerImage *img = &o->images[o->cfg.n_images++];
        *img = (WorkerImage) { .name = n, .path = streq(name, "host") || path_is_absolute(name) ? n : NULL };
        return img;
}

static int split_kv(const char *opt, const char *arg, char **ret_k, const char **ret_v) {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg || !eq[1]) {
                log_error("%s: expected NAME=VALUE, not '%s'", opt, arg);
                return -EINVAL;
        }
        *ret_k = strndup(arg, (size_t) (eq - arg));
        *ret_v = eq + 1;
        return *ret_k ? 0 : -ENOMEM;
}

static int opt_duration(const char *opt, const char *arg, uint64_t *ret) {
        if (parse_duration(arg, ret) < 0) {
                log_error("%s: invalid duration '%s'", opt, arg);
                return -EINVAL;
        }
        return 0;
}

static int opt_size(const char *opt, const char *arg, uint64_t *ret) {
        if (parse_size(arg, ret) < 0) {
                log_error("%s: invalid size '%s'", opt, arg);
                return -EINVAL;
        }
        return 0;
}

static int opt_u64(const char *opt, const char *arg, uint64_t *ret) {
        if (safe_atou64(arg, ret) < 0) {
                log_error("%s: invalid number '%s'", opt, arg);
                return -EINVAL;
        }
        return 0;
}

static int parse_labels(Opts *o, const char *arg) {
        _cleanup_free_ char *copy = strdup(arg);
        if (!copy)
                return -ENOMEM;
        for (char *p = copy, *next; p; p = next) {
                next = strchr(p, ',');
                if (next)
                        *next++ = 0;
                if (!*p)
                        continue;
                if (!strchr(p, '=') || p[0] == '=') {
                        log_error("--labels: expected KEY=VALUE, not '%s'", p);
                        return -EINVAL;
                }
                if (strv_extend(&o->cfg.labels, p) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int parse_one(Opts *o, int c, const char *arg) {
        WorkerConfig *w = &o->cfg;
        _cleanup_free_ char *k = NULL;
        const char *v;
        uint64_t n;
        int r;

        switch (c) {
        case ARG_SERVER: w->server = arg; return 0;
        case ARG_TOKEN: w->token = arg; return 0;
        case ARG_TOKEN_FILE: {
                char *t = NULL;
                r = read_full_file(arg, 4096, &t, NULL);
                if (r < 0)
                        return log_error_errno(r, "--token-file: cannot read '%s': %m", arg);
                t[strcspn(t, "\r\n")] = 0;
                if (o->n_strings >= ELEMENTSOF(o->strings)) {
                        free(t);
                        return -E2BIG;
                }
                o->strings[o->n_strings++] = t;
                w->token = t;
                return 0;
        }
        case ARG_NAME: w->name = arg; return 0;
        case ARG_DEFAULT_IMAGE: w->default_image = arg; return 0;
        case ARG_DATA: w->data_dir = arg; return 0;
        case ARG_METRICS: w->metrics_listen = arg; return 0;
        case ARG_LABELS: return parse_labels(o, arg);
        case ARG_NETWORK:
                r = network_mode_from_string(arg);
                if (r < 0 || r == NETWORK_HOST) {
                        log_error("--network: 'none' or 'nat', not '%s'", arg);
                        return -EINVAL;
                }
                w->network = r;
                return 0;
        case ARG_SLOTS:
                r = opt_u64("--slots", arg, &n);
                if (r >= 0 && (n < 1 || n > 4096)) {
                        log_error("--slots: from 1 to 4096");
                        r = -EINVAL;
                }
                w->slots = (unsigned) n;
                return r;
        case ARG_IMAGE: {
                if (!strchr(arg, '=')) {
                        if (!image_name_valid(arg)) {
                                log_error("--image: invalid image name '%s'", arg);
                                return -EINVAL;
                        }
                        WorkerImage *img = image_get(o, arg, true);
                        if (!img)
                                return -ENOMEM;
                        img->managed = true;
                        img->path = "";
                        return 0;
                }
                r = split_kv("--image", arg, &k, &v);
                if (r < 0)
                        return r;
                if (!path_is_absolute(v) || streq(k, "host")) {
                        log_error("--image: the path must be absolute and the name not 'host': '%s'", arg);
                        return -EINVAL;
                }
                WorkerImage *img = image_get(o, k, true);
                char *p = strdup(v);
                if (!img || !p || o->n_strings >= ELEMENTSOF(o->strings)) {
                        free(p);
                        return -ENOMEM;
                }
                o->strings[o->n_strings++] = p;
                img->path = p;
                img->managed = false;
                return 0;
        }
        case ARG_IMAGE_POLL: return opt_duration("--image-poll", arg, &w->image_poll_usec);
        case ARG_BASE_CACHE: w->base_cache = arg; return 0;
        case ARG_REBUILD: {
                ImageSchedule sc;
                if (image_schedule_parse(arg, &sc) < 0) {
                        log_error("--rebuild: expected NAME@HH:MM (local time), not '%s'", arg);
                        return -EINVAL;
                }
                return strv_extend(&w->rebuilds, arg) < 0 ? -ENOMEM : 0;
        }
        case ARG_POOL: {
                r = split_kv("--pool", arg, &k, &v);
                if (r < 0)
                        return r;
                if (opt_u64("--pool", v, &n) < 0 || n > 64) {
                        log_error("--pool: IMAGE=N with N from 0 to 64, not '%s'", arg);
                        return -EINVAL;
                }
                WorkerImage *img = image_get(o, k, true);
                if (!img)
                        return -ENOMEM;
                img->warm = (unsigned) n;
                return 0;
        }
        case ARG_DRAIN: return opt_duration("--drain-timeout", arg, &w->drain_timeout_usec);
        case ARG_GRACE: return opt_duration("--kill-grace", arg, &w->kill_grace_usec);
        case ARG_TASK_TIMEOUT: return opt_duration("--task-timeout", arg, &w->task_timeout_usec);
        case ARG_CLAIM_WAIT: return opt_duration("--claim-wait", arg, &w->claim_wait_usec);
        case ARG_CANCEL_POLL: return opt_duration("--cancel-poll", arg, &w->cancel_poll_usec);
        case ARG_LOG_MAX: return opt_size("--log-max", arg, &w->log_max);
        case ARG_MIN_FREE: return opt_size("--min-free", arg, &w->min_free);
        case ARG_MEMORY: return opt_size("--memory", arg, &w->memory_max);
        case ARG_DISK: return opt_size("--disk", arg, &w->disk_max);
        case ARG_PIDS: return opt_u64("--pids", arg, &w->pids_max);
        case ARG_CPUS:
                if (parse_cpus(arg, &w->cpu_millis) < 0) {
                        log_error("--cpus: invalid CPU count '%s'", arg);
                        return -EINVAL;
                }
                return 0;
        case ARG_WS_FILES: return opt_u64("--workspace-max-files", arg, &w->workspace_limits.max_entries);
        case ARG_WS_BYTES: return opt_size("--workspace-max-bytes", arg, &w->workspace_limits.max_total_bytes);
        case ARG_ART_BYTES: return opt_size("--artifact-max-bytes", arg, &w->artifact_limits.max_total_bytes);
        }
        return -EINVAL;
}

static int parse_options(int argc, char **argv, Opts *o) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "server", required_argument, NULL, ARG_SERVER },
                { "token", required_argument, NULL, ARG_TOKEN },
                { "token-file", required_argument, NULL, ARG_TOKEN_FILE },
                { "name", required_argument, NULL, ARG_NAME },
                { "slots", required_argument, NULL, ARG_SLOTS },
                { "labels", required_argument, NULL, ARG_LABELS },
                { "image", required_argument, NULL, ARG_IMAGE },
                { "pool", required_argument, NULL, ARG_POOL },
                { "default-image", required_argument, NULL, ARG_DEFAULT_IMAGE },
                { "data", required_argument, NULL, ARG_DATA },
                { "drain-timeout", required_argument, NULL, ARG_DRAIN },
                { "kill-grace", required_argument, NULL, ARG_GRACE },
                { "task-timeout", required_argument, NULL, ARG_TASK_TIMEOUT },
                { "log-max", required_argument, NULL, ARG_LOG_MAX },
                { "min-free", required_argument, NULL, ARG_MIN_FREE },
                { "claim-wait", required_argument, NULL, ARG_CLAIM_WAIT },
                { "cancel-poll", required_argument, NULL, ARG_CANCEL_POLL },
                { "memory", required_argument, NULL, ARG_MEMORY },
                { "pids", required_argument, NULL, ARG_PIDS },
                { "cpus", required_argument, NULL, ARG_CPUS },
                { "disk", required_argument, NULL, ARG_DISK },
                { "workspace-max-files", required_argument, NULL, ARG_WS_FILES },
                { "workspace-max-bytes", required_argument, NULL, ARG_WS_BYTES },
                { "artifact-max-bytes", required_argument, NULL, ARG_ART_BYTES },
                { "metrics", required_argument, NULL, ARG_METRICS },
                { "network", required_argument, NULL, ARG_NETWORK },
                { "image-poll", required_argument, NULL, ARG_IMAGE_POLL },
                { "rebuild", required_argument, NULL, ARG_REBUILD },
                { "base-cache", required_argument, NULL, ARG_BASE_CACHE },
                {},
        };
        int c;

        worker_config_init(&o->cfg);
        o->cfg.server = getenv("KILN_SERVER");
        o->cfg.token = getenv("KILN_WORKER_TOKEN");
        if (conf_args_merge(argc, argv, opts, &o->args) < 0)
                return -EINVAL;
        argc = (int) strv_length(o->args);
        argv = o->args;
        optind = 0;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                if (c == 'h') {
                        worker_usage(stdout);
                        return 1;
                }
                if (c == '?' || parse_one(o, c, optarg) < 0)
                        return -EINVAL;
        }
        if (optind < argc) {
                log_error("Unexpected argument '%s'", argv[optind]);
                return -EINVAL;
        }
        if (!o->cfg.server || !o->cfg.token) {
                log_error("--server and --token are required (or $KILN_SERVER and $KILN_WORKER_TOKEN)");
                return -EINVAL;
        }
        if (!strneq(o->cfg.server, "http://", 7) && !strneq(o->cfg.server, "https://", 8)) {
                log_error("--server: expected an http:// or https:// URL, not '%s'", o->cfg.server);
                return -EINVAL;
        }
        if (!image_get(o, "host", true))
                return -ENOMEM;
        for (size_t i = 0; i < o->cfg.n_images; i++)
                if (!o->images[i].path) {
                        log_error("--pool: unknown image '%s' (define it with --image NAME=DIR or --image NAME)",
                                  o->images[i].name);
                        return -EINVAL;
                }
        if (!image_get(o, o->cfg.default_image, false)) {
                log_error("--default-image: unknown image '%s'", o->cfg.default_image);
                return -EINVAL;
        }
        if (o->cfg.kill_grace_usec == 0 || o->cfg.cancel_poll_usec < 10000) {
                log_error("--kill-grace must be positive and --cancel-poll at least 10ms");
                return -EINVAL;
        }
        o->cfg.images = o->images;
        return 0;
}

typedef struct SignalArgs {
        sigset_t set;
        int fd;
} SignalArgs;

/* The verb owns the signals: SIGTERM and SIGINT become stop requests. */
static void *signal_thread(void *arg) {
        SignalArgs *a = arg;
        for (;;) {
                int sig;
                if (sigwait(&a->set, &sig) != 0)
                        continue;
                uint64_t one = 1;
                log_info("Received %s", sig == SIGINT ? "SIGINT" : "SIGTERM");
                (void) loop_write(a->fd, &one, sizeof one);
        }
        return NULL;
}

int verb_worker(int argc, char **argv) {
        static SignalArgs sa;
        Opts o = {};
        pthread_t th;
        int r;

        r = parse_options(argc, argv, &o);
        if (r != 0) {
                r = r > 0 ? 0 : 2;
                goto finish;
        }
        int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (efd < 0) {
                r = 1;
                goto finish;
        }
        /* Blocked before any thread exists, so every thread inherits it and
         * only the signal thread takes them. */
        sigemptyset(&sa.set);
        sigaddset(&sa.set, SIGTERM);
        sigaddset(&sa.set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &sa.set, NULL);
        signal(SIGPIPE, SIG_IGN);
        sa.fd = efd;
        o.cfg.stop_fd = efd;
        if (pthread_create(&th, NULL, signal_thread, &sa) != 0) {
                r = 1;
                goto finish;
        }
        pthread_detach(th);
        r = worker_run(&o.cfg) < 0 ? 1 : 0;
finish:
        strv_free(o.cfg.labels);
        strv_free(o.cfg.rebuilds);
        for (size_t i = 0; i < o.n_strings; i++)
                free(o.strings[i]);
        strv_free(o.args);
        return r;
}
