/* SPDX-License-Identifier: MIT */
/* `kiln server`: configuration, the data directory, start-up, the reaper
 * thread (lease expiry, offline workers, slow clients) and shutdown. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "fs-util.h"
#include "conf-args.h"
#include "log.h"
#include "strv.h"
#include "macro.h"
#include "parse-util.h"
#include "server.h"
#include "verbs.h"

#define REAPER_TICK_USEC 250000ULL

int http_bound_port(Server *srv);

static void usage(FILE *f) {
        fprintf(f, "Usage: kiln server --data DIR [--listen ADDR:PORT] [OPTIONS…]\n\n"
                   "The control plane: HTTP/JSON API under /api/v1 (docs/api.md).\n\n"
                   "  --config FILE             options from FILE: 'key = value' lines, keys the long\n"
                   "                            options below; the command line wins\n"
                   "  --listen ADDR:PORT        address to listen on (127.0.0.1:8750; port 0 picks one)\n"
                   "  --data DIR                data directory (kiln.db, blobs, logs, artifacts)\n"
                   "  --lease-ttl DURATION      lease time-to-live (30s)\n"
                   "  --max-infra-retries N     automatic retries of lost attempts (3)\n"
                   "  --header-timeout DURATION time a client has to send its request headers (10s)\n"
                   "  --max-body SIZE           JSON request bodies (1M)\n"
                   "  --max-blob-size SIZE      workspace blobs (1G)\n"
                   "  --max-artifact-size SIZE  artifacts (1G)\n"
                   "  --max-log-chunk SIZE      one log append (8M)\n"
                   "  --max-connections N       concurrent connections (1024)\n"
                   "  --worker-timeout DURATION a worker not heard from this long is offline\n"
                   "                            (90s, at least twice the lease TTL)\n"
                   "\nEnvironment: KILN_LISTEN, KILN_DATA.\n");
}

static int parse_duration_opt(const char *name, const char *v, uint64_t *ret) {
        if (parse_duration(v, ret) < 0 || *ret == 0)
                return log_error_errno(EINVAL, "Invalid %s '%s': expected a duration such as 30s.", name, v);
        return 0;
}

static int parse_size_opt(const char *name, const char *v, uint64_t *ret) {
        if (parse_size(v, ret) < 0 || *ret == 0)
                return log_error_errno(EINVAL, "Invalid %s '%s': expected a size such as 1M.", name, v);
        return 0;
}

static int parse_args(int argc, char **argv, ServerConfig *cfg) {
        enum { ARG_LISTEN = 0x100, ARG_DATA, ARG_TTL, ARG_INFRA, ARG_HDR, ARG_BODY, ARG_BLOB, ARG_ART,
               ARG_LOG, ARG_CONNS, ARG_WORKER_TIMEOUT };
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "listen", required_argument, NULL, ARG_LISTEN },
                { "data", required_argument, NULL, ARG_DATA },
                { "lease-ttl", required_argument, NULL, ARG_TTL },
                { "max-infra-retries", required_argument, NULL, ARG_INFRA },
                { "header-timeout", required_argument, NULL, ARG_HDR },
                { "max-body", required_argument, NULL, ARG_BODY },
                { "max-blob-size", required_argument, NULL, ARG_BLOB },
                { "max-artifact-size", required_argument, NULL, ARG_ART },
                { "max-log-chunk", required_argument, NULL, ARG_LOG },
                { "max-connections", required_argument, NULL, ARG_CONNS },
                { "worker-timeout", required_argument, NULL, ARG_WORKER_TIMEOUT },
                {}
        };
        int c, r = 0;
        unsigned u;

        /* The config's strings stay for the server's life. */
        static char **args;
        args = strv_free(args);
        if (conf_args_merge(argc, argv, opts, &args) < 0)
                return -EINVAL;
        argc = (int) strv_length(args);
        argv = args;
        optind = 0;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        usage(stdout);
                        return 1;
                case ARG_LISTEN:
                        cfg->listen = optarg;
                        break;
                case ARG_DATA:
                        cfg->data_dir = optarg;
                        break;
                case ARG_TTL:
                        r = parse_duration_opt("--lease-ttl", optarg, &cfg->lease_ttl_usec);
                        break;
                case ARG_WORKER_TIMEOUT:
                        r = parse_duration_opt("--worker-timeout", optarg, &cfg->worker_timeout_usec);
                        break;
                case ARG_HDR:
                        r = parse_duration_opt("--header-timeout", optarg, &cfg->header_timeout_usec);
                        break;
                case ARG_BODY:
                        r = parse_size_opt("--max-body", optarg, &cfg->max_body);
                        break;
                case ARG_BLOB:
                        r = parse_size_opt("--max-blob-size", optarg, &cfg->max_blob);
                        break;
                case ARG_ART:
                        r = parse_size_opt("--max-artifact-size", optarg, &cfg->max_artifact);
                        break;
                case ARG_LOG:
                        r = parse_size_opt("--max-log-chunk", optarg, &cfg->max_log_chunk);
                        break;
                case ARG_INFRA:
                case ARG_CONNS:
                        if (safe_atou(optarg, &u) < 0 || u == 0 || u > 100000)
                                return log_error_errno(EINVAL, "Invalid %s '%s'.",
                                                       c == ARG_INFRA ? "--max-infra-retries" : "--max-connections",
                                                       optarg);
                        if (c == ARG_INFRA)
                                cfg->max_infra_retries = u;
                        else
                                cfg->max_connections = u;
                        break;
                default:
                        return -EINVAL;
                }
                if (r < 0)
                        return r;
        }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument '%s'.", argv[optind]);
        if (!cfg->data_dir)
                return log_error_errno(EINVAL, "No data directory: pass --data DIR or set KILN_DATA.");
        if (cfg->worker_timeout_usec == 0)
                cfg->worker_timeout_usec = MAX(90 * 1000000ULL, 2 * cfg->lease_ttl_usec);
        const char *colon = strrchr(cfg->listen, ':');
        if (!colon || colon == cfg->listen || safe_atou(colon + 1, &u) < 0 || u > 65535)
                return log_error_errno(EINVAL, "Invalid --listen '%s': expected ADDR:PORT, e.g. 127.0.0.1:8750.",
                                       cfg->listen);
        return 0;
}

static void config_defaults(ServerConfig *cfg) {
        *cfg = (ServerConfig) {
                .listen = getenv("KILN_LISTEN") ? getenv("KILN_LISTEN") : "127.0.0.1:8750",
                .data_dir = getenv("KILN_DATA"),
                .lease_ttl_usec = 30 * 1000000ULL,
                .header_timeout_usec = 10 * 1000000ULL,
                .keepalive_timeout_usec = 60 * 1000000ULL,
                .max_body = 1024 * 1024,
                .max_blob = 1024ULL * 1024 * 1024,
                .max_artifact = 1024ULL * 1024 * 1024,
                .max_log_chunk = 8 * 1024 * 1024,
                .max_infra_retries = 3,
                .max_connections = 1024,
                .worker_timeout_usec = 0, /* 90 s, at least 2 × TTL */
        };
}

void server_config_defaults(ServerConfig *cfg) {
        config_defaults(cfg);
}

/* The data directory's layout (DESIGN §6), created durably. */
int server_data_dir_open(const char *dir, int *ret_fd);
int server_data_dir_open(const char *dir, int *ret_fd) {
        static const char *const subdirs[] = { "blobs", "blobs/sha256", "logs", "artifacts" };
        int r = mkdir_p(dir, 0750);
        if (r < 0)
                return r;
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (size_t i = 0; i < ELEMENTSOF(subdirs); i++)
                if (mkdirat(fd, subdirs[i], 0750) < 0 && errno != EEXIST)
                        return -errno;
        if (fsync(fd) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Uploads interrupted by a crash leave ".tmp-*" files behind; nothing refers
 * to them. Removes them from dir and, with depth, from its subdirectories. */
static void sweep_temporaries(int dirfd, const char *dir, unsigned depth) {
        int fd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return;
        DIR *d = fdopendir(fd);
        if (!d) {
                safe_close(fd);
                return;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strneq(de->d_name, ".tmp-", 5)) {
                        if (unlinkat(fd, de->d_name, 0) == 0)
                                log_info("Removed the leftover of an interrupted upload: %s/%s", dir, de->d_name);
                } else if (depth > 0 && de->d_type == DT_DIR && de->d_name[0] != '.')
                        sweep_temporaries(fd, de->d_name, depth - 1);
        }
        closedir(d);
}

static void *reaper_main(void *arg) {
        Server *srv = arg;
        uint64_t last_workers = 0;

        while (!atomic_load(&srv->stopping)) {
                unsigned n = 0;
                StoreGen gen;
                if (store_leases_expire(srv->store, &n) >= 0 && n > 0) {
                        srv->metrics.lease_expiries += n;
                        log_info("%u lease(s) expired; their tasks were requeued or marked lost.", n);
                }
                uint64_t now = store_now_mono();
                if (now - last_workers > 1000000ULL) {
                        /* Claims (also inside a long poll) and heartbeats mark
                         * a worker seen often enough; see api_claim(). */
                        (void) store_workers_reap(srv->store, srv->cfg.worker_timeout_usec, NULL);
                        last_workers = now;
                }
                http_reap_slow_connections(srv);
                /* Sleep on the store's change counters so shutdown wakes us. */
                store_gen_get(srv->store, &gen);
                (void) store_wait(srv->store, &gen, 0, store_now_mono() + REAPER_TICK_USEC);
        }
        return NULL;
}

int server_start(Server *srv) {
        char path[4096];
        StoreOptions so = { .lease_ttl_usec = srv->cfg.lease_ttl_usec,
                            .max_infra_retries = srv->cfg.max_infra_retries };
        int r;

        if (sodium_init() < 0)
                return log_error_errno(EIO, "libsodium failed to initialize.");
        r = server_data_dir_open(srv->cfg.data_dir, &srv->data_fd);
        if (r < 0)
                return log_error_errno(r, "Failed to set up data directory '%s': %m", srv->cfg.data_dir);
        sweep_temporaries(srv->data_fd, "blobs/sha256", 0);
        sweep_temporaries(srv->data_fd, "artifacts", 2);
        snprintf(path, sizeof path, "%s/kiln.db", srv->cfg.data_dir);
        r = store_open(path, &so, &srv->store);
        if (r < 0)
                return log_error_errno(r, "Failed to open store '%s': %m", path);
        r = secrets_key_load(srv->cfg.data_dir, srv->secret_key);
        if (r == -EPERM)
                return log_error_errno(r, "Refusing '%s/secrets.key': it must be owned by us with mode 0600.",
                                       srv->cfg.data_dir);
        if (r < 0)
                return log_error_errno(r, "Failed to load the secrets key: %m");
        r = http_start(srv);
        if (r < 0)
                return log_error_errno(r, "Failed to listen on '%s': %m", srv->cfg.listen);
        r = pthread_create(&srv->reaper, NULL, reaper_main, srv);
        if (r != 0)
                return log_error_errno(r, "Failed to start the reaper thread: %m");
        srv->reaper_started = true;
        return 0;
}

void server_stop(Server *srv) {
        atomic_store(&srv->stopping, true);
        if (srv->store)
                store_wake_all(srv->store);
        if (srv->reaper_started)
                pthread_join(srv->reaper, NULL);
        http_stop(srv);
        srv->store = store_close(srv->store);
        srv->data_fd = safe_close(srv->data_fd);
        sodium_memzero(srv->secret_key, sizeof srv->secret_key);
}

int verb_server(int argc, char **argv) {
        Server srv = { .data_fd = -EBADF, .listen_fd = -EBADF };
        sigset_t mask;
        int r, sig;

        config_defaults(&srv.cfg);
        r = parse_args(argc, argv, &srv.cfg);
        if (r != 0)
                return r > 0 ? 0 : 2;

        /* Every thread inherits the mask; only sigwait() below sees them. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        r = server_start(&srv);
        if (r < 0) {
                server_stop(&srv);
                return 1;
        }
        printf("kiln server: listening on http://%.*s:%d\n",
               (int) (strrchr(srv.cfg.listen, ':') - srv.cfg.listen), srv.cfg.listen, http_bound_port(&srv));
        fflush(stdout);
        log_info("Data directory '%s', lease TTL %.1fs.", srv.cfg.data_dir, (double) srv.cfg.lease_ttl_usec / 1e6);

        sigwait(&mask, &sig);
        log_info("Received %s, shutting down.", strsignal(sig));
        server_stop(&srv);
        return 0;
}
