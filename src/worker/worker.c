/* SPDX-License-Identifier: MIT */
/* The worker's main loop: registration, the claim loop, heartbeats, drain. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "threads.h"
#include "client.h"
#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "images.h"
#include "image-schedule.h"
#include "metrics.h"
#include "rebuild.h"
#include "sandbox.h"
#include "worker-internal.h"
#include "workspace.h"

#define CALL_TIMEOUT_MS 10000L
#define HEARTBEAT_TIMEOUT_MS 5000L
#define HEARTBEAT_RETRY_USEC (500 * 1000ULL)
#define TICK_MS 50

const uint64_t worker_latency_buckets_usec[8] = { 1000, 2000, 5000, 10000, 25000, 50000, 100000, 1000000 };

void worker_config_init(WorkerConfig *c) {
        *c = (WorkerConfig) {
                .name = NULL,
                .slots = 1,
                .default_image = "host",
                .data_dir = "/var/lib/kiln/worker",
                .drain_timeout_usec = 10 * 60 * 1000000ULL,
                .kill_grace_usec = 10 * 1000000ULL,
                .task_timeout_usec = 24 * 3600 * 1000000ULL,
                .log_max = 256ULL << 20,
                .claim_wait_usec = 30 * 1000000ULL,
                .cancel_poll_usec = 1000000ULL,
                .blob_max = 1ULL << 30,
                .min_free = 64ULL << 20,
                .workspace_limits = archive_limits_default,
                .artifact_limits = archive_limits_default,
                .stop_fd = -1,
                .image_poll_usec = 30 * 1000000ULL,
        };
        c->artifact_limits.max_total_bytes = 1ULL << 30;
}

/* ---- registration ---- */

static unsigned stop_requests(int fd) {
        uint64_t v = 0;
        if (fd < 0 || read(fd, &v, sizeof v) != sizeof v)
                return 0;
        return (unsigned) MIN(v, 2ULL);
}


static json_t *labels_json(char **labels) {
        json_t *o = json_object();
        for (char **l = labels; l && *l; l++) {
                const char *eq = strchr(*l, '=');
                if (!eq)
                        continue;
                _cleanup_free_ char *k = strndup(*l, (size_t) (eq - *l));
                if (k)
                        json_object_set_new(o, k, json_string(eq + 1));
        }
        return o;
}

static int worker_register(Worker *w) {
        const WorkerConfig *c = w->cfg;
        _cleanup_(client_freep) Client *cl = NULL;
        json_t *images = worker_images_json(w);
        char host[256];
        int r;

        if (gethostname(host, sizeof host) < 0)
                snprintf(host, sizeof host, "worker");
        json_t *body = json_pack("{s:s, s:o, s:i, s:[s], s:o, s:s}", "name", c->name ? c->name : host,
                                 "labels", labels_json(c->labels), "slots", (int) c->slots, "backends", "ns",
                                 "images", images, "version", KILN_VERSION);
        if (!body)
                return -ENOMEM;
        r = client_new(c->server, c->token, &cl);
        if (r < 0) {
                json_decref(body);
                return r;
        }
        for (unsigned attempt = 0;; attempt++) {
                ClientReply rep = {};
                /* Nothing runs yet: a stop request ends the worker at once. */
                if (stop_requests(c->stop_fd) > 0)
                        break;
                char msg[256];
                r = client_call(cl, "POST", "/api/v1/workers/register", body, CALL_TIMEOUT_MS, &rep);
                if (r >= 0 && rep.status == 201) {
                        const char *tok = json_string_value(json_object_get(rep.json, "token"));
                        double ttl = json_number_value(json_object_get(rep.json, "lease_ttl"));
                        double hb = json_number_value(json_object_get(rep.json, "heartbeat_interval"));
                        w->id = json_integer_value(json_object_get(rep.json, "worker"));
                        w->session = tok ? strdup(tok) : NULL;
                        w->lease_ttl_usec = (uint64_t) (ttl > 0 ? ttl * 1e6 : 30e6);
                        w->heartbeat_usec = (uint64_t) (hb > 0 ? hb * 1e6 : (double) w->lease_ttl_usec / 3);
                        client_reply_done(&rep);
                        json_decref(body);
                        return w->session ? 0 : -ENOMEM;
                }
                if (r >= 0 && rep.status >= 400 && rep.status < 500) {
                        log_error("The server refused the registration: %s",
                                  client_reply_message(&rep, msg, sizeof msg));
                        client_reply_done(&rep);
                        json_decref(body);
                        return -EPERM;
                }
                if (attempt % 10 == 0)
                        log_warning("Cannot reach the server at %s to register (%s), retrying", c->server,
                                    r < 0 ? strerror(-r) : client_reply_message(&rep, msg, sizeof msg));
                client_reply_done(&rep);
                usleep(500 * 1000);
        }
        json_decref(body);
        return -ECANCELED;
}

/* ---- claims ---- */

/* Whether the data directory has too little room to take a task: its log
 * spool, workspace download and artifacts all go there. A worker on a full
 * disk would otherwise take task after task only to fail each one. */
static bool disk_short(Worker *w) {
        struct statvfs v;

        if (w->cfg->min_free == 0 || statvfs(w->cfg->data_dir, &v) < 0)
                return false;
        uint64_t avail = (uint64_t) v.f_bavail * v.f_frsize;
        bool shortage = avail < w->cfg->min_free;
        atomic_store(&w->m.data_free_bytes, avail);
        if (shortage != atomic_exchange(&w->m.disk_short, shortage)) {
                if (shortage)
                        log_warning("Not taking tasks: %s has %" PRIu64 " MiB free, less than --min-free %" PRIu64
                                    " MiB",
                                    w->cfg->data_dir, avail >> 20, w->cfg->min_free >> 20);
                else
                        log_info("Taking tasks again: %s has %" PRIu64 " MiB free", w->cfg->data_dir, avail >> 20);
        }
        return shortage;
}

/* Called locked. */
static unsigned claimable_slots(Worker *w) {
        unsigned busy = w->used_slots + (w->rebuild_waiting ? 1 : 0);
        return w->cfg->slots - MIN(busy, w->cfg->slots);
}

static void *claim_thread(void *arg) {
        Worker *w = arg;
        _cleanup_(client_freep) Client *cl = NULL;
        uint64_t backoff = 100 * 1000ULL;
        char path[] = "/api/v1/workers/claim";

        if (client_new(w->cfg->server, w->session, &cl) < 0)
                return NULL;
        client_set_abort(cl, (const atomic_bool *) &w->draining);
        while (!atomic_load(&w->draining)) {
                pthread_mutex_lock(&w->lock);
                unsigned free_slots;
                /* A rebuild waiting for a slot gets the next one that is free. */
                while ((free_slots = claimable_slots(w)) == 0 && !atomic_load(&w->draining))
                        pthread_cond_wait(&w->cond, &w->lock);
                if (!atomic_load(&w->draining) && disk_short(w)) {
                        /* Looked at again each second; a drain ends the wait. */
                        struct timespec ts;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        ts.tv_sec += 1;
                        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
                        pthread_mutex_unlock(&w->lock);
                        continue;
                }
                w->claim_asked = free_slots;
                pthread_mutex_unlock(&w->lock);
                if (atomic_load(&w->draining))
                        break;

                double wait = (double) w->cfg->claim_wait_usec / 1e6;
                json_t *body = json_pack("{s:i, s:f}", "slots", (int) free_slots, "wait", wait);
                ClientReply rep = {};
                int r = client_call(cl, "POST", path, body, (long) (wait * 1000) + CALL_TIMEOUT_MS, &rep);
                json_decref(body);
                if (r >= 0 && rep.status == 200) {
                        atomic_fetch_add(&w->m.claims, 1);
                        r = task_start(w, TAKE_PTR(rep.json));
                        if (r < 0)
                                log_error_errno(r, "Failed to start a claimed task: %m");
                        backoff = 100 * 1000ULL;
                } else if (r >= 0 && rep.status == 204) {
                        atomic_fetch_add(&w->m.claims_empty, 1);
                        backoff = 100 * 1000ULL;
                } else if (r != -ECANCELED) {
                        char msg[256];
                        log_debug("Claim failed: %s", r < 0 ? strerror(-r) : client_reply_message(&rep, msg, sizeof msg));
                        client_reply_done(&rep);
                        usleep((useconds_t) backoff);
                        backoff = MIN(backoff * 2, 2 * 1000000ULL);
                }
                client_reply_done(&rep);
                pthread_mutex_lock(&w->lock);
                w->claim_asked = 0;
                pthread_cond_broadcast(&w->cond);
                pthread_mutex_unlock(&w->lock);
        }
        return NULL;
}

/* ---- connections ---- */

/* Clients go back to an idle list so that their connections to the server are
 * reused by the next task instead of being opened on its dispatch path. */
int worker_client_get(Worker *w, Client **ret) {
        pthread_mutex_lock(&w->lock);
        if (w->n_idle > 0) {
                *ret = w->idle[--w->n_idle];
                pthread_mutex_unlock(&w->lock);
                return 0;
        }
        pthread_mutex_unlock(&w->lock);
        return client_new(w->cfg->server, w->session, ret);
}

void worker_client_put(Worker *w, Client *c) {
        if (!c)
                return;
        client_set_abort(c, NULL);
        pthread_mutex_lock(&w->lock);
        if (w->n_idle < ELEMENTSOF(w->idle)) {
                w->idle[w->n_idle++] = c;
                c = NULL;
        }
        pthread_mutex_unlock(&w->lock);
        client_free(c);
}

/* ---- heartbeats ---- */

static void heartbeat_one(Worker *w, Client *cl, Task *t) {
        char path[96];
        ClientReply rep = {};
        uint64_t sent = now_usec(CLOCK_MONOTONIC);

        snprintf(path, sizeof path, "/api/v1/leases/%" PRId64 "/heartbeat", t->lease);
        json_t *body = json_pack("{s:I}", "fence", (json_int_t) t->fence);
        int r = client_call(cl, "POST", path, body, HEARTBEAT_TIMEOUT_MS, &rep);
        json_decref(body);
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        uint64_t period = MIN(w->heartbeat_usec, w->cfg->cancel_poll_usec);

        pthread_mutex_lock(&w->lock);
        if (r >= 0 && rep.status == 200) {
                double exp = json_number_value(json_object_get(rep.json, "expires_in"));
                t->lease_deadline = sent + (uint64_t) (exp * 1e6);
                t->next_heartbeat = now + period;
                if (json_is_true(json_object_get(rep.json, "cancel")) && !atomic_exchange(&t->cancel, true))
                        log_info("Task %" PRId64 ": cancel requested", t->task_id);
        } else if (r >= 0 && (rep.status == 409 || rep.status == 404)) {
                /* A heartbeat that crossed the task's finish is answered 409 too. */
                if (!atomic_load(&t->reported) && !atomic_exchange(&t->lease_lost, true)) {
                        log_warning("Task %" PRId64 ": the server refused lease %" PRId64 " (%ld): stopping it",
                                    t->task_id, t->lease, rep.status);
                        task_kill_sandbox_locked(t);
                }
        } else
                t->next_heartbeat = now + HEARTBEAT_RETRY_USEC;
        pthread_mutex_unlock(&w->lock);
        client_reply_done(&rep);
}

static void *heartbeat_thread(void *arg) {
        Worker *w = arg;
        _cleanup_(client_freep) Client *cl = NULL;

        if (client_new(w->cfg->server, w->session, &cl) < 0)
                return NULL;
        while (!atomic_load(&w->stopping)) {
                Task *due[256];
                size_t n = 0;
                uint64_t now = now_usec(CLOCK_MONOTONIC);

                pthread_mutex_lock(&w->lock);
                for (Task *t = w->tasks; t; t = t->next) {
                        if (atomic_load(&t->lease_lost) || atomic_load(&t->reported))
                                continue;
                        if (now >= t->lease_deadline) {
                                atomic_store(&t->lease_lost, true);
                                task_kill_sandbox_locked(t);
                                log_warning("Task %" PRId64 ": lease %" PRId64 " lapsed without a heartbeat: "
                                            "stopping it", t->task_id, t->lease);
                                continue;
                        }
                        if (now >= t->next_heartbeat && n < ELEMENTSOF(due)) {
                                atomic_fetch_add(&t->refs, 1);
                                due[n++] = t;
                        }
                }
                pthread_mutex_unlock(&w->lock);
                for (size_t i = 0; i < n; i++) {
                        heartbeat_one(w, cl, due[i]);
                        task_unref(due[i]);
                }
                if (n == 0)
                        usleep(TICK_MS * 1000);
        }
        return NULL;
}

/* ---- data directory ---- */

static int data_dir_setup(Worker *w, int *ret_lock) {
        const char *d = w->cfg->data_dir;
        char path[4200];
        int r;

        r = mkdir_p(d, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create the data directory '%s': %m", d);
        snprintf(path, sizeof path, "%s/lock", d);
        _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(errno, "Failed to open '%s': %m", path);
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return log_error_errno(errno, "Another worker uses the data directory '%s'", d);
        snprintf(w->spool_dir, sizeof w->spool_dir, "%s/spool", d);
        snprintf(w->blob_dir, sizeof w->blob_dir, "%s/blobs", d);
        snprintf(w->tmp_dir, sizeof w->tmp_dir, "%s/tmp", d);
        const char *dirs[] = { w->spool_dir, w->blob_dir, w->tmp_dir };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                r = mkdir_p(dirs[i], 0700);
                if (r < 0)
                        return log_error_errno(r, "Failed to create '%s': %m", dirs[i]);
        }
        *ret_lock = TAKE_FD(fd);
        return 0;
}

/* Spools and temporary files of a previous run: its tasks were lost with it. */
static void leftovers_remove(Worker *w) {
        const char *dirs[] = { w->spool_dir, w->tmp_dir };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                DIR *d = opendir(dirs[i]);
                if (!d)
                        continue;
                for (struct dirent *de; (de = readdir(d));) {
                        if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                                continue;
                        if (unlinkat(dirfd(d), de->d_name, 0) >= 0)
                                log_info("Removed leftover %s/%s", dirs[i], de->d_name);
                }
                closedir(d);
        }
        DIR *d = opendir(w->blob_dir);
        if (d) {
                for (struct dirent *de; (de = readdir(d));)
                        if (strneq(de->d_name, ".tmp-", 5))
                                (void) unlinkat(dirfd(d), de->d_name, 0);
                closedir(d);
        }
}

/* ---- the main loop ---- */

static void stop_all_tasks(Worker *w) {
        pthread_mutex_lock(&w->lock);
        rebuild_kill_locked(w);
        for (Task *t = w->tasks; t; t = t->next) {
                atomic_store(&t->hard_stop, true);
                task_kill_sandbox_locked(t);
        }
        pthread_mutex_unlock(&w->lock);
}

/* Task threads end by handing their pthread_t over; joined here. */
static void reap_task_threads(Worker *w) {
        for (;;) {
                pthread_mutex_lock(&w->lock);
                if (w->n_finished == 0) {
                        pthread_mutex_unlock(&w->lock);
                        return;
                }
                pthread_t t = w->finished[--w->n_finished];
                pthread_mutex_unlock(&w->lock);
                (void) worker_thread_join(t, NULL);
        }
}

static int worker_loop(Worker *w) {
        const WorkerConfig *c = w->cfg;
        unsigned level = 0;
        uint64_t drain_deadline = UINT64_MAX;

        for (;;) {
                struct pollfd p = { .fd = c->stop_fd, .events = POLLIN };
                (void) poll(&p, c->stop_fd >= 0 ? 1 : 0, TICK_MS * 2);
                reap_task_threads(w);
                unsigned n = p.revents ? stop_requests(c->stop_fd) : 0;
                if (n > 0 && level < 2) {
                        unsigned old = level;
                        level = MIN(level + n, 2U);
                        if (old == 0) {
                                log_info("Draining: no new tasks; waiting up to %" PRIu64 " s for %u running",
                                         c->drain_timeout_usec / 1000000, w->n_tasks);
                                atomic_store(&w->draining, true);
                                pthread_mutex_lock(&w->lock);
                                pthread_cond_broadcast(&w->cond);
                                pthread_mutex_unlock(&w->lock);
                                drain_deadline = now_usec(CLOCK_MONOTONIC) + c->drain_timeout_usec;
                        }
                        if (level == 2) {
                                log_info("Stopping the running tasks: they will be queued again");
                                stop_all_tasks(w);
                        }
                }
                if (level == 1 && now_usec(CLOCK_MONOTONIC) >= drain_deadline) {
                        log_info("Drain timeout: stopping the running tasks; they will be queued again");
                        level = 2;
                        stop_all_tasks(w);
                }
                if (level > 0) {
                        pthread_mutex_lock(&w->lock);
                        bool idle = w->n_tasks == 0 && !w->rebuild_running;
                        pthread_mutex_unlock(&w->lock);
                        if (idle) {
                                reap_task_threads(w);
                                return 0;
                        }
                }
        }
}

int worker_run(const WorkerConfig *c) {
        _cleanup_close_ int lock = -EBADF;
        pthread_t claim, heartbeat, images;
        Metrics *metrics = NULL;
        int r;

        if (!c->server || !c->token)
                return log_error_errno(EINVAL, "A server URL and a registration token are required");
        if (c->slots < 1 || c->n_images < 1)
                return log_error_errno(EINVAL, "A worker needs at least one slot and one image");
        for (char **e = c->rebuilds; e && *e; e++) {
                ImageSchedule sc;
                if (image_schedule_parse(*e, &sc) < 0)
                        return log_error_errno(EINVAL, "Invalid rebuild schedule '%s': expected NAME@HH:MM", *e);
        }

        /* A sandbox's init is a raw clone() of the pool thread and goes on
         * using that thread's malloc arena. glibc lets threads share arenas
         * once there are 8 per CPU; another thread holding the shared lock at
         * the instant of the clone would wedge the init in malloc(). With
         * room for an arena per thread, the pool thread's stays its own. */
        (void) mallopt(M_ARENA_MAX, 4096);

        Worker *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->cfg = c;
        pthread_mutex_init(&w->lock, NULL);
        pthread_mutex_init(&w->image_lock, NULL);
        pthread_cond_init(&w->cond, NULL);

        r = data_dir_setup(w, &lock);
        if (r < 0)
                goto finish;
        /* Sandboxes of a worker that died (kill -9, a crash): its processes
         * died with it, the host-side state did not. */
        r = sandbox_gc(SANDBOX_GC_VERBOSE | SANDBOX_GC_NETWORK);
        if (r > 0)
                log_info("Removed %d leftover sandbox(es)", r);
        leftovers_remove(w);
        r = workspace_helper_start(w->tmp_dir);
        if (r < 0) {
                log_error_errno(r, "Cannot start the workspace helper: %m");
                goto finish;
        }
        r = sandbox_spawner_start();
        if (r < 0) {
                log_error_errno(r, "Cannot start the sandbox spawner: %m");
                goto finish;
        }

        /* Its thread exists before the first sandbox is cloned. */
        if (c->metrics_listen) {
                r = metrics_start(w, c->metrics_listen, &metrics);
                if (r < 0)
                        goto finish;
        }
        r = worker_images_init(w);
        if (r < 0)
                goto finish;
        /* Stop requests that arrive while registering end it early. */
        r = worker_register(w);
        if (r == -ECANCELED) {
                r = 0;
                goto finish;
        }
        if (r < 0)
                goto finish;
        log_info("Registered as worker %" PRId64 " with %u slot(s); lease TTL %.1f s", w->id, c->slots,
                 (double) w->lease_ttl_usec / 1e6);
        /* With the session: the server's image references need one. Before
         * the pool, which prepares what the sync made current. */
        if (worker_images_sync(w, true) > 0)
                atomic_store(&w->images_changed, true);

        PoolImage imgs[POOL_IMAGES_MAX];
        for (size_t i = 0; i < w->n_images; i++)
                imgs[i] = (PoolImage) { .name = w->images[i].name, .path = w->images[i].path,
                                        .target = w->images[i].warm };
        PoolLimits defaults = { .memory_max = c->memory_max, .pids_max = c->pids_max,
                                .cpu_millis = c->cpu_millis, .disk_max = c->disk_max,
                                .network = (NetworkMode) c->network };
        r = pool_new(imgs, w->n_images, &defaults, &w->pool);
        if (r < 0) {
                log_error_errno(r, "Failed to start the sandbox pool: %m");
                goto finish;
        }

        r = worker_thread_create(&heartbeat, heartbeat_thread, w);
        if (r < 0)
                goto finish;
        r = worker_thread_create(&images, worker_images_thread, w);
        if (r < 0) {
                atomic_store(&w->stopping, true);
                (void) worker_thread_join(heartbeat, NULL);
                goto finish;
        }
        r = worker_thread_create(&claim, claim_thread, w);
        if (r < 0) {
                atomic_store(&w->draining, true);
                atomic_store(&w->stopping, true);
                pthread_mutex_lock(&w->lock);
                pthread_cond_broadcast(&w->cond);
                pthread_mutex_unlock(&w->lock);
                (void) worker_thread_join(images, NULL);
                (void) worker_thread_join(heartbeat, NULL);
                goto finish;
        }
        r = worker_loop(w);
        atomic_store(&w->draining, true);
        pthread_mutex_lock(&w->lock);
        rebuild_kill_locked(w); /* only after a drain timeout or a second stop request */
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        (void) worker_thread_join(claim, NULL);
        (void) worker_thread_join(images, NULL);
        atomic_store(&w->stopping, true);
        (void) worker_thread_join(heartbeat, NULL);
        /* A task started by a claim answered during the drain. */
        pthread_mutex_lock(&w->lock);
        for (Task *t = w->tasks; t; t = t->next) {
                atomic_store(&t->hard_stop, true);
                task_kill_sandbox_locked(t);
        }
        while (w->n_tasks > 0)
                pthread_cond_wait(&w->cond, &w->lock);
        pthread_mutex_unlock(&w->lock);
        reap_task_threads(w);
        log_info("Worker stopped");
finish:
        metrics_stop(metrics);
        while (w->n_idle > 0)
                client_free(w->idle[--w->n_idle]);
        pool_free(w->pool);
        sandbox_spawner_stop();
        workspace_helper_stop();
        worker_images_done(w);
        if (w->session) {
                explicit_bzero(w->session, strlen(w->session));
                free(w->session);
        }
        free(w->finished);
        pthread_mutex_destroy(&w->lock);
        pthread_mutex_destroy(&w->image_lock);
        pthread_cond_destroy(&w->cond);
        free(w);
        return r;
}
