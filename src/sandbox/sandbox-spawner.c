/* SPDX-License-Identifier: MIT */
/* The sandbox spawner (docs/sandbox.md, "The spawner"): a small helper
 * process, `kiln __sandboxd`, that creates and destroys sandboxes for a
 * long-lived, multi-threaded process — the worker, `kiln up`.
 *
 * Creating a sandbox clones its PID 1 from the process that asks, and PID 1
 * lives as long as the sandbox. Cloned from the worker, it would copy the
 * page tables of the worker's whole address space and leave every page of it
 * shared copy-on-write for the sandbox's lifetime: each page the worker's
 * threads (or kiln up's server) then write costs a fault and a TLB
 * shoot-down across CPUs — measured as half of kiln up's CPU time per task.
 * The spawner is exec'd fresh, holds nothing but sandboxes, and the clone
 * copies nothing of the worker.
 *
 * Each request carries its own reply socket, so that several threads of the
 * worker may prepare and destroy sandboxes at once; the spawner serves each
 * in a thread of its own. The worker receives the new sandbox's control
 * socket and talks to its PID 1 directly; the spawner keeps the rest (the
 * life pipe, the slot lock, the cgroup, the network) and destroys it on
 * request, or everything when the worker goes away. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fd-util.h"
#include "log.h"
#include "sandbox-internal.h"
#include "strv.h"

#define SPAWNER_FD 3
#define SPAWNER_REPLY_MAX (64U * 1024U) /* an id, a path, a pid, cgroup paths */

enum {
        SPAWNER_PREPARE = 100, /* payload: the config as JSON; fd: the reply socket */
        SPAWNER_DESTROY,       /* payload: {"id": …}; fd: the reply socket */
        SPAWNER_REPLY,         /* a: 0 or -errno; payload: JSON; fd: the control socket */
};

static void close_fds(int *fds, size_t n) {
        for (size_t i = 0; i < n; i++)
                safe_close(fds[i]);
}

/* ---- the asking process's side ---- */

static pthread_mutex_t client_lock = PTHREAD_MUTEX_INITIALIZER;
static int client_fd = -EBADF;
static pid_t client_pid;
static unsigned generation; /* of the spawner running now */

/* Called locked. */
static int start_locked(bool gc) {
        int sv[2];

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        char *argv[] = { (char *) "kiln", (char *) "__sandboxd", gc ? (char *) "--gc" : NULL, NULL };
        extern char **environ;
        pid_t pid = fork();
        if (pid == 0) {
                /* Only async-signal-safe calls until execve(). */
                int fd = fcntl(sv[1], F_DUPFD_CLOEXEC, 16);
                if (fd < 0 || dup2(fd, SPAWNER_FD) < 0)
                        _exit(126);
                execve("/proc/self/exe", argv, environ);
                _exit(127);
        }
        int r = pid < 0 ? -errno : 0;
        safe_close(sv[1]);
        if (r < 0) {
                safe_close(sv[0]);
                return r;
        }
        client_fd = sv[0];
        client_pid = pid;
        generation++;
        return 0;
}

unsigned sandbox_spawner_generation(void) {
        pthread_mutex_lock(&client_lock);
        unsigned g = generation;
        pthread_mutex_unlock(&client_lock);
        return g;
}

/* Whether the spawner of that generation still runs: the sandboxes it held
 * die with it (their PID 1 a moment after its socket closes). */
bool sandbox_spawner_holds(unsigned gen) {
        pthread_mutex_lock(&client_lock);
        struct pollfd p = { .fd = client_fd, .events = POLLRDHUP };
        bool alive = client_fd >= 0 && gen == generation && poll(&p, 1, 0) == 0;
        pthread_mutex_unlock(&client_lock);
        return alive;
}

static void reap_locked(void) {
        client_fd = safe_close(client_fd);
        if (client_pid > 0) {
                while (waitpid(client_pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                client_pid = 0;
        }
}

int sandbox_spawner_start(void) {
        pthread_mutex_lock(&client_lock);
        int r = client_fd >= 0 ? 0 : start_locked(false);
        pthread_mutex_unlock(&client_lock);
        return r;
}

/* The spawner died (killed on its own): its sandboxes died with it. A new
 * one removes what they left on the host, then serves. */
static int restart(int dead_fd) {
        int r = 0;
        pthread_mutex_lock(&client_lock);
        if (client_fd == dead_fd) {
                log_warning("The sandbox spawner died; starting another.");
                reap_locked();
                r = start_locked(true);
        }
        pthread_mutex_unlock(&client_lock);
        return r;
}

bool sandbox_spawner_active(void) {
        pthread_mutex_lock(&client_lock);
        bool on = client_fd >= 0;
        pthread_mutex_unlock(&client_lock);
        return on;
}

void sandbox_spawner_stop(void) {
        pthread_mutex_lock(&client_lock);
        /* The spawner destroys what is left when it sees the socket close. */
        reap_locked();
        pthread_mutex_unlock(&client_lock);
}

/* Sends one request and waits for its reply; *ret_fd: the fd it carried. */
static int ask(uint32_t type, json_t *payload, json_t **ret, int *ret_fd) {
        /* The work is done at the asking thread's priority: the pool refills
         * below the tasks' (docs/worker.md). */
        errno = 0;
        int nice = getpriority(PRIO_PROCESS, (id_t) gettid());
        if (errno == 0 && json_object_set_new(payload, "nice", json_integer(nice)) < 0)
                return -ENOMEM;
        _cleanup_free_ char *text = json_dumps(payload, JSON_COMPACT);
        _cleanup_free_ char *buf = malloc(SPAWNER_REPLY_MAX);
        _cleanup_close_pair_ int reply[2] = { -EBADF, -EBADF };
        int r;

        if (!text || !buf)
                return -ENOMEM;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, reply) < 0)
                return -errno;
        MsgHeader h = { .type = type, .payload = (uint32_t) strlen(text) };
        for (unsigned attempt = 0;; attempt++) {
                pthread_mutex_lock(&client_lock);
                int fd = client_fd;
                r = fd < 0 ? -ENOTCONN : msg_send(fd, &h, text, &reply[1], 1);
                pthread_mutex_unlock(&client_lock);
                if (r >= 0 || attempt > 0 || !IN_SET(r, -EPIPE, -ECONNRESET) || restart(fd) < 0)
                        break;
        }
        if (r < 0)
                return r;
        reply[1] = safe_close(reply[1]);

        int fds[3];
        size_t n_fds = 0;
        ssize_t n = msg_recv(reply[0], buf, SPAWNER_REPLY_MAX - 1, fds, &n_fds);
        if (n == 0) {
                /* The spawner died on it: the next request starts another. */
                close_fds(fds, n_fds);
                return -ECONNRESET;
        }
        if (n < 0)
                return (int) n;
        if ((size_t) n < sizeof(MsgHeader)) {
                close_fds(fds, n_fds);
                return -EBADMSG;
        }
        MsgHeader m;
        memcpy(&m, buf, sizeof m);
        buf[n] = 0;
        if (m.type != SPAWNER_REPLY || m.a < 0) {
                close_fds(fds, n_fds);
                return m.type != SPAWNER_REPLY ? -EBADMSG : m.a;
        }
        *ret = json_loads(buf + sizeof m, 0, NULL);
        if (!*ret) {
                close_fds(fds, n_fds);
                return -EBADMSG;
        }
        *ret_fd = n_fds > 0 ? fds[0] : -EBADF;
        for (size_t i = 1; i < n_fds; i++)
                safe_close(fds[i]);
        return 0;
}

static json_t *strv_to_json(char **l) {
        json_t *a = json_array();
        for (char **p = l; a && p && *p; p++)
                if (json_array_append_new(a, json_string(*p)) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

static json_t *config_to_json(const SandboxConfig *c) {
        json_t *binds = json_array();
        for (size_t i = 0; binds && i < c->n_binds; i++)
                if (json_array_append_new(binds, json_pack("{s:s, s:s, s:b}", "source", c->binds[i].source,
                                                           "target", c->binds[i].target, "read_only",
                                                           c->binds[i].read_only)) < 0) {
                        json_decref(binds);
                        return NULL;
                }
        if (!binds)
                return NULL;
        return json_pack("{s:s, s:I, s:I, s:I, s:I, s:i, s:b, s:o, s:o, s:s*}", "image", c->image,
                         "memory_max", (json_int_t) c->memory_max, "pids_max", (json_int_t) c->pids_max,
                         "cpu_millis", (json_int_t) c->cpu_millis, "disk_max", (json_int_t) c->disk_max,
                         "network", (int) c->network, "layer_in_memory", c->layer_in_memory, "binds", binds,
                         "mask_paths", strv_to_json(c->mask_paths), "hostname", c->hostname);
}

int sandbox_spawner_prepare(const SandboxConfig *c, Sandbox **ret) {
        json_t *req = config_to_json(c), *rep = NULL;
        int control = -EBADF;

        if (!req)
                return -ENOMEM;
        int r = ask(SPAWNER_PREPARE, req, &rep, &control);
        json_decref(req);
        if (r < 0)
                return r;
        Cgroup cg = { .v2 = json_is_true(json_object_get(rep, "cgroup_v2")) };
        json_t *paths = json_object_get(rep, "cgroup");
        for (size_t k = 0; k < _CG_MAX; k++) {
                const char *p = json_string_value(json_array_get(paths, k));
                cg.paths[k] = p ? strdup(p) : NULL;
        }
        r = sandbox_new_remote(json_string_value(json_object_get(rep, "id")),
                               json_string_value(json_object_get(rep, "dir")),
                               (pid_t) json_integer_value(json_object_get(rep, "init_pid")), control,
                               json_array_size(paths) > 0 ? &cg : NULL, ret);
        if (r < 0) {
                safe_close(control);
                cgroup_done(&cg);
        }
        json_decref(rep);
        return r;
}

int sandbox_spawner_destroy(const char *id) {
        json_t *req = json_pack("{s:s}", "id", id), *rep = NULL;
        int fd = -EBADF;
        if (!req)
                return -ENOMEM;
        int r = ask(SPAWNER_DESTROY, req, &rep, &fd);
        json_decref(req);
        if (r == -ESRCH)
                r = 0; /* held by a spawner that died: its PID 1 died with it, the new one removed the rest */
        safe_close(fd);
        json_decref(rep);
        return r;
}

/* ---- the spawner (kiln __sandboxd, socket on fd 3) ---- */

typedef struct Entry {
        Sandbox *s;
        struct Entry *next;
} Entry;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static Entry *table;

static void table_add(Entry *e) {
        pthread_mutex_lock(&table_lock);
        e->next = table;
        table = e;
        pthread_mutex_unlock(&table_lock);
}

static Sandbox *table_take(const char *id) {
        Sandbox *s = NULL;
        pthread_mutex_lock(&table_lock);
        for (Entry **e = &table; *e; e = &(*e)->next)
                if (streq(sandbox_id((*e)->s), id)) {
                        Entry *x = *e;
                        *e = x->next;
                        s = x->s;
                        free(x);
                        break;
                }
        pthread_mutex_unlock(&table_lock);
        return s;
}

static int config_from_json(json_t *j, SandboxConfig *c) {
        json_int_t mem = 0, pids = 0, cpu = 0, disk = 0;
        int network = 0, in_memory = 0, nice_unused; /* "nice" is serve()'s */
        json_t *binds = NULL, *masks = NULL;
        const char *image = NULL, *hostname = NULL;
        json_error_t err;

        if (json_unpack_ex(j, &err, JSON_STRICT, "{s:s, s:I, s:I, s:I, s:I, s:i, s:b, s:o, s:o, s?s, s?i}", "image",
                           &image, "memory_max", &mem, "pids_max", &pids, "cpu_millis", &cpu, "disk_max", &disk,
                           "network", &network, "layer_in_memory", &in_memory, "binds", &binds, "mask_paths",
                           &masks, "hostname", &hostname, "nice", &nice_unused) < 0)
                return log_error_errno(EBADMSG, "A malformed sandbox request: %s", err.text);
        *c = (SandboxConfig) { .memory_max = (uint64_t) mem, .pids_max = (uint64_t) pids,
                               .cpu_millis = (uint64_t) cpu, .disk_max = (uint64_t) disk,
                               .network = (NetworkMode) network, .layer_in_memory = in_memory };
        if (network < 0 || network >= _NETWORK_MAX || !(c->image = strdup(image)) ||
            (hostname && !(c->hostname = strdup(hostname))))
                return -EINVAL;
        size_t i;
        json_t *v;
        c->binds = calloc(json_array_size(binds) + 1, sizeof *c->binds);
        if (!c->binds)
                return -ENOMEM;
        json_array_foreach (binds, i, v) {
                const char *src = json_string_value(json_object_get(v, "source"));
                const char *dst = json_string_value(json_object_get(v, "target"));
                if (!src || !dst)
                        return -EBADMSG;
                c->binds[i] = (BindMount) { .source = strdup(src), .target = strdup(dst),
                                            .read_only = json_is_true(json_object_get(v, "read_only")) };
                c->n_binds++;
                if (!c->binds[i].source || !c->binds[i].target)
                        return -ENOMEM;
        }
        json_array_foreach (masks, i, v) {
                if (!json_is_string(v))
                        return -EBADMSG;
                int r = strv_extend(&c->mask_paths, json_string_value(v));
                if (r < 0)
                        return r;
        }
        return 0;
}

static void reply(int fd, int error, json_t *j, int pass_fd) {
        _cleanup_free_ char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        MsgHeader h = { .type = SPAWNER_REPLY, .a = error < 0 ? error : 0,
                        .payload = text ? (uint32_t) strlen(text) : 0 };
        (void) msg_send(fd, &h, text, pass_fd >= 0 ? &pass_fd : NULL, pass_fd >= 0 ? 1 : 0);
}

static json_t *prepared_to_json(Sandbox *s) {
        const Cgroup *cg = sandbox_cgroup(s);
        json_t *paths = json_array();
        for (size_t k = 0; paths && cg && k < _CG_MAX; k++)
                (void) json_array_append_new(paths, cg->paths[k] ? json_string(cg->paths[k]) : json_null());
        return json_pack("{s:s, s:s, s:I, s:b, s:o}", "id", sandbox_id(s), "dir", sandbox_state_dir(s),
                         "init_pid", (json_int_t) sandbox_init_pid(s), "cgroup_v2", cg && cg->v2, "cgroup",
                         paths);
}

/* No thread is created while PID 1 is cloned (as in the worker). */
static pthread_rwlock_t create_lock = PTHREAD_RWLOCK_INITIALIZER;

static void guard_begin(void) {
        pthread_rwlock_wrlock(&create_lock);
}

static void guard_end(void) {
        pthread_rwlock_unlock(&create_lock);
}

typedef struct Work {
        uint32_t type;
        json_t *request;
        int reply_fd;
        struct Work *next;
} Work;

/* PID 1 dies with the thread that cloned it (PDEATHSIG), so the threads
 * that prepare sandboxes live as long as the spawner: a pool that grows
 * while every thread is busy. */
#define SERVERS_MAX 32

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static Work *queue_head, **queue_tail = &queue_head;
static unsigned n_servers, n_idle;

static int base_nice;

static void serve(Work *w) {
        json_t *nice = json_object_get(w->request, "nice");
        int r;

        if (json_is_integer(nice))
                (void) setpriority(PRIO_PROCESS, (id_t) gettid(), (int) json_integer_value(nice));

        if (w->type == SPAWNER_PREPARE) {
                SandboxConfig c = {};
                Sandbox *s = NULL;
                r = config_from_json(w->request, &c);
                if (r >= 0)
                        r = sandbox_prepare(&c, &s);
                sandbox_config_done(&c);
                Entry *e = r >= 0 ? calloc(1, sizeof *e) : NULL;
                json_t *j = e ? prepared_to_json(s) : NULL;
                if (r >= 0 && !j) {
                        free(e);
                        (void) sandbox_destroy(s);
                        r = -ENOMEM;
                }
                if (r < 0)
                        reply(w->reply_fd, r, NULL, -EBADF);
                else {
                        /* The asking process is the one that talks to PID 1. */
                        _cleanup_close_ int control = sandbox_take_control_fd(s);
                        e->s = s;
                        table_add(e);
                        reply(w->reply_fd, 0, j, control);
                }
                json_decref(j);
        } else {
                const char *id = json_string_value(json_object_get(w->request, "id"));
                Sandbox *s = id ? table_take(id) : NULL;
                r = s ? sandbox_destroy(s) : -ESRCH;
                json_t *j = json_object();
                reply(w->reply_fd, r, j, -EBADF);
                json_decref(j);
        }
        safe_close(w->reply_fd);
        json_decref(w->request);
        free(w);
        (void) setpriority(PRIO_PROCESS, (id_t) gettid(), base_nice);
}

static void *server_thread(void *userdata _unused_) {
        pthread_mutex_lock(&queue_lock);
        for (;;) {
                while (!queue_head) {
                        n_idle++;
                        pthread_cond_wait(&queue_cond, &queue_lock);
                        n_idle--;
                }
                Work *w = queue_head;
                queue_head = w->next;
                if (!queue_head)
                        queue_tail = &queue_head;
                pthread_mutex_unlock(&queue_lock);
                serve(w);
                pthread_mutex_lock(&queue_lock);
        }
        return NULL;
}

static void enqueue(Work *w) {
        pthread_mutex_lock(&queue_lock);
        *queue_tail = w;
        queue_tail = &w->next;
        if (n_idle == 0 && n_servers < SERVERS_MAX) {
                pthread_t t;
                pthread_attr_t attr;
                pthread_attr_init(&attr);
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                pthread_rwlock_rdlock(&create_lock);
                if (pthread_create(&t, &attr, server_thread, NULL) == 0)
                        n_servers++;
                pthread_rwlock_unlock(&create_lock);
                pthread_attr_destroy(&attr);
        }
        pthread_cond_signal(&queue_cond);
        pthread_mutex_unlock(&queue_lock);
}

int sandbox_spawner_main(int argc, char **argv) {
        _cleanup_free_ char *buf = malloc(SANDBOX_MSG_MAX);
        int keep[] = { STDERR_FILENO, SPAWNER_FD };

        bool gc = argc == 2 && streq(argv[1], "--gc");
        if ((argc != 1 && !gc) || fcntl(SPAWNER_FD, F_GETFD) < 0) {
                log_error("kiln __sandboxd is the worker's own helper, not a command.");
                return 2;
        }
        if (!buf)
                return 1;
        (void) close_all_fds(keep, ELEMENTSOF(keep));
        log_set_prefix("kiln-sandboxd");
        (void) prctl(PR_SET_NAME, "kiln-sandboxd");
        /* Ctrl-C in a terminal reaches the whole process group: the worker
         * decides what happens to its sandboxes, the spawner waits for it. */
        (void) signal(SIGINT, SIG_IGN);
        (void) signal(SIGTERM, SIG_IGN);
        (void) signal(SIGPIPE, SIG_IGN);
        sandbox_set_clone_guard(guard_begin, guard_end);
        errno = 0;
        base_nice = getpriority(PRIO_PROCESS, 0);
        if (errno != 0)
                base_nice = 0;
        if (gc) {
                int k = sandbox_gc(SANDBOX_GC_VERBOSE);
                if (k > 0)
                        log_info("Removed %d leftover sandbox(es)", k);
        }

        for (;;) {
                int fds[3];
                size_t n_fds = 0;
                ssize_t n = msg_recv(SPAWNER_FD, buf, SANDBOX_MSG_MAX - 1, fds, &n_fds);
                if (n <= 0)
                        break; /* the worker is gone */
                MsgHeader h;
                if ((size_t) n < sizeof h || n_fds != 1) {
                        close_fds(fds, n_fds);
                        continue;
                }
                memcpy(&h, buf, sizeof h);
                buf[n] = 0;
                Work *w = calloc(1, sizeof *w);
                if (w)
                        *w = (Work) { .type = h.type, .request = json_loads(buf + sizeof h, 0, NULL),
                                      .reply_fd = fds[0] };
                if (!w || !w->request || !IN_SET(h.type, SPAWNER_PREPARE, SPAWNER_DESTROY)) {
                        if (w)
                                json_decref(w->request);
                        free(w);
                        reply(fds[0], -EBADMSG, NULL, -EBADF);
                        safe_close(fds[0]);
                        continue;
                }
                enqueue(w);
        }

        /* Nothing will ask for these any more. */
        for (;;) {
                pthread_mutex_lock(&table_lock);
                Entry *e = table;
                if (e)
                        table = e->next;
                pthread_mutex_unlock(&table_lock);
                if (!e)
                        break;
                (void) sandbox_destroy(e->s);
                free(e);
        }
        fflush(stderr);
        _exit(0);
}
