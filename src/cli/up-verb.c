/* SPDX-License-Identifier: MIT */
/* kiln up: a server and a worker in one process, the embedded default; and
 * how the other verbs find one (or start a private one) when no server is
 * configured. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "parse-util.h"
#include "sandbox.h"
#include "server/server.h"
#include "token.h"
#include "verbs.h"
#include "worker.h"

#define UP_FILE "up.json"
#define UP_TOKEN_FILE "admin.token"
#define UP_LOCK_FILE "up.lock"
#define UP_LOG_FILE "up.log"
#define PRIVATE_IDLE "10m"
#define PRIVATE_START_TIMEOUT_USEC (20 * 1000000ULL)

static void up_usage(FILE *f) {
        fprintf(f, "Usage: kiln up [OPTIONS]\n\n"
                   "A kiln server and a worker in one process on this machine: the embedded\n"
                   "default that 'kiln run' and the other commands use when no server is\n"
                   "configured. Prints its URL and keeps an admin token in the state directory\n"
                   "($XDG_STATE_HOME/kiln, /var/lib/kiln for root), where the CLI finds it.\n"
                   "Needs root (the ns sandbox). SIGINT or SIGTERM drains; a second one stops.\n\n"
                   "Options:\n"
                   "  --listen ADDR:PORT   where the server listens [127.0.0.1:8750; port 0 picks one]\n"
                   "  --state DIR          state directory [$XDG_STATE_HOME/kiln]\n"
                   "  --slots N            tasks run at once [the number of CPUs]\n"
                   "  --pool N             warm sandboxes of the host image [1]\n"
                   "  --network none|nat   the jobs' network unless a job names its own [nat where\n"
                   "                       this machine can, else none]\n"
                   "  --idle-exit D        exit after D without a queued or running job [never]\n"
                   "  --quiet              print nothing but errors\n");
}

typedef struct UpOpts {
        const char *listen;
        char *state;
        unsigned slots;
        unsigned pool;
        int network;
        uint64_t idle_exit_usec;
        bool quiet;
} UpOpts;

static int up_parse(int argc, char **argv, UpOpts *o) {
        enum { ARG_LISTEN = 0x100, ARG_STATE, ARG_SLOTS, ARG_POOL, ARG_NETWORK, ARG_IDLE, ARG_QUIET };
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "listen", required_argument, NULL, ARG_LISTEN },
                { "state", required_argument, NULL, ARG_STATE },
                { "slots", required_argument, NULL, ARG_SLOTS },
                { "pool", required_argument, NULL, ARG_POOL },
                { "network", required_argument, NULL, ARG_NETWORK },
                { "idle-exit", required_argument, NULL, ARG_IDLE },
                { "quiet", no_argument, NULL, ARG_QUIET },
                {},
        };
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        int c, r;

        *o = (UpOpts) { .listen = "127.0.0.1:8750", .slots = ncpu > 0 ? (unsigned) MIN(ncpu, 64) : 1, .pool = 1,
                        .network = -1 };
        optind = 0;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0)
                switch (c) {
                case 'h':
                        up_usage(stdout);
                        return 1;
                case ARG_LISTEN: o->listen = optarg; break;
                case ARG_STATE:
                        free(o->state);
                        o->state = strdup(optarg);
                        if (!o->state)
                                return -ENOMEM;
                        break;
                case ARG_SLOTS:
                        if (safe_atou(optarg, &o->slots) < 0 || o->slots < 1 || o->slots > 4096)
                                return log_error_errno(EINVAL, "--slots: expected 1 to 4096, not '%s'.", optarg);
                        break;
                case ARG_POOL:
                        if (safe_atou(optarg, &o->pool) < 0 || o->pool > 64)
                                return log_error_errno(EINVAL, "--pool: expected 0 to 64, not '%s'.", optarg);
                        break;
                case ARG_NETWORK:
                        r = network_mode_from_string(optarg);
                        if (r < 0 || r == NETWORK_HOST)
                                return log_error_errno(EINVAL, "--network: 'none' or 'nat', not '%s'.", optarg);
                        o->network = r;
                        break;
                case ARG_IDLE:
                        if (parse_duration(optarg, &o->idle_exit_usec) < 0)
                                return log_error_errno(EINVAL, "--idle-exit: invalid duration '%s'.", optarg);
                        break;
                case ARG_QUIET: o->quiet = true; break;
                default:
                        return -EINVAL;
                }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument '%s'. See 'kiln up --help'.", argv[optind]);
        if (!o->state) {
                r = cli_state_dir(&o->state);
                if (r < 0)
                        return log_error_errno(r, "No state directory: set XDG_STATE_HOME or HOME, or pass --state.");
        }
        return 0;
}

/* Writes a file under dir atomically (temporary name, fsync, rename). */
static int write_file_atomic(int dirfd, const char *name, const char *text, mode_t mode) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, ".%s.tmp", name);
        _cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, mode) < 0)
                return -errno;
        int r = loop_write(fd, text, strlen(text));
        if (r < 0)
                return r;
        if (fsync(fd) < 0)
                return -errno;
        if (renameat(dirfd, tmp, dirfd, name) < 0)
                return -errno;
        return 0;
}

static int read_small_fileat(int dirfd, const char *name, char **ret) {
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        char buf[4097];
        if (fd < 0)
                return -errno;
        ssize_t n = loop_read(fd, buf, sizeof buf - 1);
        if (n < 0)
                return (int) n;
        buf[n] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

/* The admin token the CLI reads: kept while the store still knows it. */
static int up_admin_token(Server *srv, int dirfd, char **ret, bool *ret_created) {
        _cleanup_free_ char *token = NULL;
        uint8_t hash[TOKEN_HASH_SIZE];
        StoreToken st;
        int64_t id;
        int r;

        if (read_small_fileat(dirfd, UP_TOKEN_FILE, &token) >= 0 && token_hash(token, hash) >= 0 &&
            store_token_lookup(srv->store, hash, &st) >= 0 && streq(st.kind, "admin")) {
                *ret = TAKE_PTR(token);
                *ret_created = false;
                return 0;
        }
        free(token);
        token = NULL;
        r = token_generate(TOKEN_ADMIN, &token);
        if (r < 0)
                return r;
        r = token_hash(token, hash);
        if (r < 0)
                return r;
        r = store_token_create(srv->store, "admin", "kiln up", hash, 0, &id);
        if (r < 0)
                return r;
        char line[TOKEN_MAX_LEN + 2];
        snprintf(line, sizeof line, "%s\n", token);
        r = write_file_atomic(dirfd, UP_TOKEN_FILE, line, 0600);
        explicit_bzero(line, sizeof line);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(token);
        *ret_created = true;
        return 0;
}

typedef struct WorkerThread {
        WorkerConfig cfg;
        atomic_bool done;
        int result;
} WorkerThread;

static void *worker_thread(void *arg) {
        WorkerThread *w = arg;
        w->result = worker_run(&w->cfg);
        atomic_store(&w->done, true);
        return NULL;
}

/* True while some job is queued or running: the idle clock does not run. */
static bool up_busy(Server *srv) {
        static const char *const states[] = { "running", "queued" };
        for (size_t i = 0; i < ELEMENTSOF(states); i++) {
                StoreJobFilter f = { .state = states[i], .limit = 1 };
                json_t *j = NULL;
                if (store_job_list(srv->store, &f, &j) < 0)
                        return true;
                bool any = json_array_size(json_object_get(j, "jobs")) > 0;
                json_decref(j);
                if (any)
                        return true;
        }
        return false;
}

/* A free loopback port for the worker's /metrics (kiln top shows its pool
 * fill); 0 when none could be had. The port is free when asked: the worker
 * binds it moments later. */
static int free_port(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof sa;
        _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 ||
            getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return 0;
        return ntohs(sa.sin_port);
}

/* The embedded default gives jobs what a build on this machine has: outbound
 * network (through NAT: the host's own addresses stay out of reach). Where
 * NAT cannot be set up (no nftables, no veth), jobs get loopback only, and
 * kiln says so. */
static NetworkMode default_network(void) {
        SandboxConfig c = { .image = "host", .network = NETWORK_NAT };
        Sandbox *s = NULL;
        int r = sandbox_prepare(&c, &s);
        if (r < 0) {
                log_warning_errno(r, "Jobs get no outbound network: NAT cannot be set up here (%m); "
                                     "they run with loopback only.");
                return NETWORK_NONE;
        }
        (void) sandbox_destroy(s);
        return NETWORK_NAT;
}

static int up_lock(int dirfd, int *ret_fd) {
        _cleanup_close_ int fd = openat(dirfd, UP_LOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        /* A command checking whether a kiln up is alive holds a shared lock
         * for an instant (up_alive()): only a lock held for longer is
         * another kiln up. */
        for (int i = 0;; i++) {
                if (flock(fd, LOCK_EX | LOCK_NB) == 0)
                        break;
                if (errno != EWOULDBLOCK || i >= 20)
                        return -errno;
                (void) usleep(10000);
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int up_serve(UpOpts *o, int dirfd) {
        Server srv = { .data_fd = -EBADF, .listen_fd = -EBADF };
        _cleanup_free_ char *server_dir = NULL, *worker_dir = NULL, *token = NULL, *url = NULL, *info = NULL;
        char metrics[64] = "";
        WorkerThread wt = {};
        WorkerImage img = { .name = "host", .path = "host", .warm = o->pool };
        pthread_t th;
        bool created = false, worker_started = false;
        _cleanup_close_ int efd = -EBADF;
        int r, ret = 1;

        if (o->network < 0)
                o->network = default_network();
        if (asprintf(&server_dir, "%s/server", o->state) < 0 || asprintf(&worker_dir, "%s/worker", o->state) < 0)
                return -ENOMEM;
        server_config_defaults(&srv.cfg);
        srv.cfg.listen = o->listen;
        srv.cfg.data_dir = server_dir;
        srv.cfg.worker_timeout_usec = MAX(90 * 1000000ULL, 2 * srv.cfg.lease_ttl_usec);
        r = server_start(&srv);
        if (r < 0)
                goto finish;
        r = up_admin_token(&srv, dirfd, &token, &created);
        if (r < 0) {
                log_error_errno(r, "Failed to set up the admin token in '%s': %m", o->state);
                goto finish;
        }
        int mport = free_port();
        if (mport > 0)
                snprintf(metrics, sizeof metrics, "127.0.0.1:%d", mport);
        if (asprintf(&url, "http://%.*s:%d", (int) (strrchr(o->listen, ':') - o->listen), o->listen,
                     http_bound_port(&srv)) < 0 ||
            asprintf(&info, "{\"url\": \"%s\", \"pid\": %d, \"worker_metrics\": \"%s%s\"}\n", url,
                     (int) getpid(), metrics[0] ? "http://" : "", metrics) < 0) {
                r = -ENOMEM;
                goto finish;
        }

        worker_config_init(&wt.cfg);
        wt.cfg.server = url;
        wt.cfg.token = token;
        wt.cfg.name = "local";
        wt.cfg.slots = o->slots;
        wt.cfg.images = &img;
        wt.cfg.n_images = 1;
        wt.cfg.data_dir = worker_dir;
        /* Holding claims back on a short disk leaves the work to other
         * workers; this one is the only one, and `kiln run` would wait in
         * silence. Tasks say for themselves when the disk is full. */
        wt.cfg.min_free = 0;
        wt.cfg.network = o->network;
        wt.cfg.drain_timeout_usec = 10 * 1000000ULL;
        wt.cfg.kill_grace_usec = 2 * 1000000ULL;
        wt.cfg.cancel_poll_usec = 250000ULL;
        efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (efd < 0) {
                r = log_error_errno(errno, "eventfd: %m");
                goto finish;
        }
        wt.cfg.stop_fd = efd;
        wt.cfg.metrics_listen = metrics[0] ? metrics : NULL;
        r = mkdir_p(worker_dir, 0700);
        if (r < 0) {
                log_error_errno(r, "Failed to create '%s': %m", worker_dir);
                goto finish;
        }
        r = pthread_create(&th, NULL, worker_thread, &wt);
        if (r != 0) {
                log_error_errno(r, "Failed to start the worker: %m");
                goto finish;
        }
        worker_started = true;

        r = write_file_atomic(dirfd, UP_FILE, info, 0644);
        if (r < 0) {
                log_error_errno(r, "Failed to write '%s/%s': %m", o->state, UP_FILE);
                goto finish;
        }
        if (!o->quiet) {
                printf("kiln up: listening on %s\n", url);
                if (created)
                        printf("kiln up: admin token written to %s/%s (the CLI finds it there)\n", o->state,
                               UP_TOKEN_FILE);
                fflush(stdout);
        }

        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        uint64_t idle_since = now_usec(CLOCK_MONOTONIC);
        unsigned stops = 0;
        for (;;) {
                struct timespec ts = { .tv_sec = 0, .tv_nsec = 500 * 1000000L };
                int sig = sigtimedwait(&mask, NULL, &ts);
                uint64_t one = 1;
                if (sig > 0) {
                        if (!o->quiet)
                                log_info("Received %s, %s.", strsignal(sig), stops ? "stopping" : "draining");
                        (void) loop_write(efd, &one, sizeof one);
                        stops++;
                }
                if (atomic_load(&wt.done))
                        break;
                if (stops > 0 || o->idle_exit_usec == 0)
                        continue;
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                if (up_busy(&srv))
                        idle_since = now;
                else if (now - idle_since >= o->idle_exit_usec) {
                        log_info("Idle for %.0fs, exiting.", (double) o->idle_exit_usec / 1e6);
                        (void) loop_write(efd, &one, sizeof one);
                        stops++;
                }
        }
        ret = wt.result < 0 ? 1 : 0;
        if (wt.result < 0)
                log_error_errno(wt.result, "The worker stopped: %m");
finish:
        if (worker_started) {
                uint64_t two = 2;
                if (!atomic_load(&wt.done))
                        (void) loop_write(efd, &two, sizeof two);
                pthread_join(th, NULL);
        }
        /* Only our own announcement is removed. */
        _cleanup_free_ char *cur = NULL;
        if (info && read_small_fileat(dirfd, UP_FILE, &cur) >= 0 && strneq(cur, info, strcspn(info, "\n")))
                (void) unlinkat(dirfd, UP_FILE, 0);
        server_stop(&srv);
        if (token)
                explicit_bzero(token, strlen(token));
        return ret;
}

int verb_up(int argc, char **argv) {
        UpOpts o = {};
        _cleanup_close_ int dirfd = -EBADF, lockfd = -EBADF;
        int r;

        r = up_parse(argc, argv, &o);
        if (r != 0) {
                free(o.state);
                return r > 0 ? 0 : 2;
        }
        _cleanup_free_ char *state = o.state;
        if (geteuid() != 0) {
                log_error("kiln up needs root: its worker runs tasks in ns sandboxes (user namespaces, cgroups, "
                          "mounts). Run it as root, or point kiln at a server with KILN_SERVER and KILN_TOKEN.");
                return 1;
        }
        r = mkdir_p(state, 0700);
        if (r >= 0) {
                dirfd = open(state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dirfd < 0)
                        r = -errno;
        }
        if (r < 0) {
                log_error_errno(r, "Failed to open the state directory '%s': %m", state);
                return 1;
        }
        r = up_lock(dirfd, &lockfd);
        if (r == -EWOULDBLOCK) {
                log_error("kiln up is already running with state directory '%s' (see %s/%s).", state, state, UP_FILE);
                return 1;
        }
        if (r < 0) {
                log_error_errno(r, "Failed to lock '%s/%s': %m", state, UP_LOCK_FILE);
                return 1;
        }

        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        return up_serve(&o, dirfd);
}

/* ---- finding one ---- */

/* A running kiln up holds an exclusive lock on up.lock for as long as it
 * serves (it writes up.json once it listens): asking the kernel spares an
 * HTTP round trip to every command that looks for it. */
static bool up_alive(int dirfd) {
        _cleanup_close_ int fd = openat(dirfd, UP_LOCK_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return false;
        if (flock(fd, LOCK_SH | LOCK_NB) == 0)
                return false; /* nobody holds it: up.json is a leftover */
        return errno == EWOULDBLOCK;
}

static int up_read(const char *state, char **ret_url, char **ret_token) {
        _cleanup_close_ int dirfd = open(state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_free_ char *text = NULL, *token = NULL;
        if (dirfd < 0)
                return -ENOENT;
        if (read_small_fileat(dirfd, UP_FILE, &text) < 0)
                return -ENOENT;
        json_t *j = json_loads(text, 0, NULL);
        const char *url = json_string_value(json_object_get(j, "url"));
        char *u = url && strneq(url, "http://", 7) ? strdup(url) : NULL;
        json_decref(j);
        if (!u)
                return -ENOENT;
        if (!up_alive(dirfd)) {
                /* Left by a kiln up that died: gone, so that nobody waiting for
                 * the next one to start reads it as that one's. */
                free(u);
                (void) unlinkat(dirfd, UP_FILE, 0);
                return -ENOENT;
        }
        if (read_small_fileat(dirfd, UP_TOKEN_FILE, &token) < 0) {
                free(u);
                return -ENOENT;
        }
        *ret_url = u;
        *ret_token = TAKE_PTR(token);
        return 0;
}

static int up_spawn(const char *state) {
        _cleanup_free_ char *logpath = NULL;
        if (asprintf(&logpath, "%s/%s", state, UP_LOG_FILE) < 0)
                return -ENOMEM;
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                /* A session of its own: the terminal's Ctrl-C is for kiln run. */
                if (setsid() < 0)
                        _exit(1);
                pid_t p2 = fork();
                if (p2 != 0)
                        _exit(p2 < 0);
                int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
                int lf = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                if (nul < 0 || lf < 0 || dup2(nul, 0) < 0 || dup2(lf, 1) < 0 || dup2(lf, 2) < 0)
                        _exit(1);
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGINT, SIG_DFL);
                char *args[] = { (char *) "kiln", (char *) "up", (char *) "--listen", (char *) "127.0.0.1:0",
                                 (char *) "--idle-exit", (char *) PRIVATE_IDLE, (char *) "--quiet",
                                 (char *) "--state", (char *) state, NULL };
                execv("/proc/self/exe", args);
                _exit(127);
        }
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

int up_worker_metrics(const char *server_url, char **ret) {
        _cleanup_free_ char *state = NULL, *text = NULL;
        if (cli_state_dir(&state) < 0)
                return -ENOENT;
        _cleanup_close_ int dirfd = open(state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0 || read_small_fileat(dirfd, UP_FILE, &text) < 0)
                return -ENOENT;
        json_t *j = json_loads(text, 0, NULL);
        const char *url = json_string_value(json_object_get(j, "url"));
        const char *m = json_string_value(json_object_get(j, "worker_metrics"));
        int r = -ENOENT;
        if (url && m && *m && streq(url, server_url)) {
                *ret = strdup(m);
                r = *ret ? 0 : -ENOMEM;
        }
        json_decref(j);
        return r;
}

int up_find(bool start, char **ret_url, char **ret_token) {
        _cleanup_free_ char *state = NULL;
        int r = cli_state_dir(&state);
        if (r < 0)
                return -ENOENT;
        if (up_read(state, ret_url, ret_token) >= 0)
                return 0;
        if (!start)
                return -ENOENT;
        if (geteuid() != 0)
                return log_error_errno(EPERM, "No server configured, and kiln needs root to start its own (the "
                                              "ns sandbox). Run as root, or set KILN_SERVER and KILN_TOKEN.");
        r = mkdir_p(state, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create the state directory '%s': %m", state);
        r = up_spawn(state);
        if (r < 0)
                return log_error_errno(r, "Failed to start a private server: %m");
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + PRIVATE_START_TIMEOUT_USEC;
        while (now_usec(CLOCK_MONOTONIC) < deadline) {
                if (up_read(state, ret_url, ret_token) >= 0) {
                        if (isatty(STDERR_FILENO))
                                fprintf(stderr, "kiln: started a private server at %s (it exits after %s idle; "
                                                "log in %s/%s)\n", *ret_url, PRIVATE_IDLE, state, UP_LOG_FILE);
                        return 0;
                }
                (void) usleep(20000);
        }
        return log_error_errno(ETIMEDOUT, "The private server did not start: see %s/%s.", state, UP_LOG_FILE);
}
