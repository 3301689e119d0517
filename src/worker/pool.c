/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "threads.h"
#include "fs-util.h"
#include "log.h"
#include "pool.h"
#include "workspace.h"

#define RETRY_USEC (1000 * 1000ULL)

typedef struct Slot {
        PoolImage img;
        Sandbox **ready;
        size_t n_ready;
        uint64_t failed_until; /* back off after a failed prepare */
} Slot;

typedef struct Request {
        const Slot *slot;
        PoolLimits limits;
        Sandbox *result;
        int error;
        bool done;
        struct Request *next;
} Request;

typedef struct Dead {
        Sandbox *s;
        struct Dead *next;
} Dead;

struct Pool {
        pthread_mutex_t lock;
        pthread_cond_t wake; /* the pool thread */
        pthread_cond_t done; /* requesters */
        pthread_t thread;
        bool stop;
        Slot slots[POOL_IMAGES_MAX];
        size_t n_slots;
        PoolLimits defaults;
        Request *requests;
        Dead *dead;
        uint64_t prepared, prepare_usec;
        unsigned unsettled;   /* warm hand-overs not settled yet */
        uint64_t quiet_until; /* CLOCK_MONOTONIC µs */
};

static int prepare(Pool *p, const Slot *slot, const PoolLimits *l, Sandbox **ret) {
        SandboxConfig c = {
                .image = slot->img.path,
                .memory_max = l->memory_max,
                .pids_max = l->pids_max,
                .cpu_millis = l->cpu_millis,
                .disk_max = l->disk_max,
                .network = l->network,
        };
        Sandbox *s = NULL;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        int r = sandbox_prepare(&c, &s);
        if (r < 0)
                return r;
        r = workspace_create(sandbox_init_pid(s));
        if (r < 0) {
                log_warning_errno(r, "Failed to create %s in sandbox %s: %m", WORKSPACE_DIR, sandbox_id(s));
                sandbox_destroy(s);
                return r;
        }
        pthread_mutex_lock(&p->lock);
        p->prepared++;
        p->prepare_usec += now_usec(CLOCK_MONOTONIC) - t0;
        pthread_mutex_unlock(&p->lock);
        *ret = s;
        return 0;
}

static bool quiet(const Pool *p, uint64_t now) {
        return p->unsettled > 0 && now < p->quiet_until;
}

/* The next thing to do, in order of urgency: a task waiting for a cold
 * sandbox, an empty pool, then (outside a dispatch's quiet time) a used
 * sandbox to destroy and a pool below its target. Called locked; returns
 * false when there is nothing to do now. */
static bool pick(Pool *p, Request **ret_req, Slot **ret_refill, Sandbox **ret_dead) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        *ret_req = NULL;
        *ret_refill = NULL;
        *ret_dead = NULL;
        for (Request *q = p->requests; q; q = q->next)
                if (!q->done && !q->result && q->error == 0) {
                        *ret_req = q;
                        return true;
                }
        /* An empty pool is refilled before used sandboxes are destroyed; a
         * partly full one after, so that destruction never falls behind. */
        for (size_t i = 0; i < p->n_slots; i++)
                if (p->slots[i].n_ready == 0 && p->slots[i].img.target > 0 && now >= p->slots[i].failed_until) {
                        *ret_refill = &p->slots[i];
                        return true;
                }
        if (quiet(p, now))
                return false;
        if (p->dead) {
                Dead *d = p->dead;
                p->dead = d->next;
                *ret_dead = d->s;
                free(d);
                return true;
        }
        for (size_t i = 0; i < p->n_slots; i++)
                if (p->slots[i].n_ready < p->slots[i].img.target && now >= p->slots[i].failed_until) {
                        *ret_refill = &p->slots[i];
                        return true;
                }
        return false;
}

static void *pool_thread(void *arg) {
        Pool *p = arg;

        pthread_mutex_lock(&p->lock);
        while (!p->stop) {
                Request *req;
                Slot *refill;
                Sandbox *dead, *s = NULL;

                if (!pick(p, &req, &refill, &dead)) {
                        uint64_t now = now_usec(CLOCK_MONOTONIC);
                        uint64_t wait = quiet(p, now) ? p->quiet_until - now : 1000000ULL;
                        struct timespec ts;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        ts.tv_sec += (time_t) (wait / 1000000);
                        ts.tv_nsec += (long) (wait % 1000000) * 1000;
                        if (ts.tv_nsec >= 1000000000L) {
                                ts.tv_sec++;
                                ts.tv_nsec -= 1000000000L;
                        }
                        pthread_cond_timedwait(&p->wake, &p->lock, &ts);
                        continue;
                }
                if (req) {
                        /* Marked as taken by setting error to a placeholder. */
                        req->error = -EINPROGRESS;
                        pthread_mutex_unlock(&p->lock);
                        int r = prepare(p, req->slot, &req->limits, &s);
                        pthread_mutex_lock(&p->lock);
                        req->error = r < 0 ? r : 0;
                        req->result = s;
                        req->done = true;
                        pthread_cond_broadcast(&p->done);
                } else if (refill) {
                        pthread_mutex_unlock(&p->lock);
                        int r = prepare(p, refill, &p->defaults, &s);
                        pthread_mutex_lock(&p->lock);
                        if (r < 0) {
                                log_warning_errno(r, "Failed to prepare a warm sandbox of image '%s': %m",
                                                  refill->img.name);
                                refill->failed_until = now_usec(CLOCK_MONOTONIC) + RETRY_USEC;
                        } else
                                refill->ready[refill->n_ready++] = s;
                } else {
                        pthread_mutex_unlock(&p->lock);
                        (void) sandbox_destroy(dead);
                        pthread_mutex_lock(&p->lock);
                }
        }
        /* Everything this thread created dies with it, but the host-side state
         * is removed properly here. */
        for (size_t i = 0; i < p->n_slots; i++)
                while (p->slots[i].n_ready > 0)
                        (void) sandbox_destroy(p->slots[i].ready[--p->slots[i].n_ready]);
        while (p->dead) {
                Dead *d = p->dead;
                p->dead = d->next;
                (void) sandbox_destroy(d->s);
                free(d);
        }
        for (Request *q = p->requests; q; q = q->next)
                if (!q->done) {
                        q->error = -ESHUTDOWN;
                        q->done = true;
                }
        pthread_cond_broadcast(&p->done);
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

int pool_new(const PoolImage *images, size_t n_images, const PoolLimits *defaults, Pool **ret) {
        Pool *p;
        int r;

        if (n_images > POOL_IMAGES_MAX)
                return -E2BIG;
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->wake, NULL);
        pthread_cond_init(&p->done, NULL);
        p->defaults = *defaults;
        for (size_t i = 0; i < n_images; i++) {
                Slot *s = &p->slots[p->n_slots++];
                s->img.name = strdup(images[i].name);
                s->img.path = strdup(images[i].path);
                s->img.target = images[i].target;
                s->ready = calloc(MAX(images[i].target, 1U), sizeof(Sandbox *));
                if (!s->img.name || !s->img.path || !s->ready) {
                        pool_free(p);
                        return -ENOMEM;
                }
        }
        sandbox_set_clone_guard(worker_clone_guard_begin, worker_clone_guard_end);
        r = worker_thread_create(&p->thread, pool_thread, p);
        if (r < 0) {
                p->stop = true; /* nothing to join */
                p->thread = 0;
                pool_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

Pool *pool_free(Pool *p) {
        if (!p)
                return NULL;
        pthread_mutex_lock(&p->lock);
        bool running = !p->stop;
        p->stop = true;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        if (running && p->thread)
                (void) worker_thread_join(p->thread, NULL);
        for (size_t i = 0; i < p->n_slots; i++) {
                free(p->slots[i].img.name);
                free(p->slots[i].img.path);
                free(p->slots[i].ready);
        }
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->wake);
        pthread_cond_destroy(&p->done);
        free(p);
        return NULL;
}

static Slot *slot_find(Pool *p, const char *image) {
        for (size_t i = 0; i < p->n_slots; i++)
                if (streq(p->slots[i].img.name, image))
                        return &p->slots[i];
        return NULL;
}

bool pool_has_image(Pool *p, const char *image) {
        return slot_find(p, image) != NULL;
}

int pool_acquire(Pool *p, const char *image, const PoolLimits *l, Sandbox **ret, bool *ret_warm) {
        Slot *slot = slot_find(p, image);
        if (!slot)
                return -ENOENT;

        pthread_mutex_lock(&p->lock);
        if (memcmp(l, &p->defaults, sizeof *l) == 0 && slot->n_ready > 0) {
                /* Oldest first: it has been ready the longest. */
                *ret = slot->ready[0];
                memmove(slot->ready, slot->ready + 1, (slot->n_ready - 1) * sizeof(Sandbox *));
                slot->n_ready--;
                p->unsettled++;
                p->quiet_until = now_usec(CLOCK_MONOTONIC) + POOL_QUIET_MAX_USEC;
                pthread_cond_broadcast(&p->wake);
                pthread_mutex_unlock(&p->lock);
                *ret_warm = true;
                return 0;
        }
        Request req = { .slot = slot, .limits = *l, .next = p->requests };
        p->requests = &req;
        pthread_cond_broadcast(&p->wake);
        while (!req.done)
                pthread_cond_wait(&p->done, &p->lock);
        for (Request **q = &p->requests; *q; q = &(*q)->next)
                if (*q == &req) {
                        *q = req.next;
                        break;
                }
        pthread_mutex_unlock(&p->lock);
        if (req.error < 0)
                return req.error;
        *ret = req.result;
        *ret_warm = false;
        return 0;
}

void pool_settle(Pool *p) {
        pthread_mutex_lock(&p->lock);
        if (p->unsettled > 0)
                p->unsettled--;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
}

void pool_release(Pool *p, Sandbox *s) {
        Dead *d;

        if (!s)
                return;
        /* Nothing inside may run on while it waits for destruction. */
        (void) sandbox_signal_all(s, SIGKILL);
        d = malloc(sizeof *d);
        pthread_mutex_lock(&p->lock);
        if (!d || p->stop) {
                /* Cannot queue it: the pool thread's exit kills it anyway. */
                pthread_mutex_unlock(&p->lock);
                free(d);
                log_warning("Sandbox %s could not be queued for destruction", sandbox_id(s));
                return;
        }
        *d = (Dead) { .s = s, .next = p->dead };
        p->dead = d;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
}

size_t pool_stats(Pool *p, PoolStats *ret, size_t max) {
        size_t n = 0;
        pthread_mutex_lock(&p->lock);
        for (size_t i = 0; i < p->n_slots && n < max; i++, n++) {
                snprintf(ret[n].name, sizeof ret[n].name, "%s", p->slots[i].img.name);
                ret[n].ready = (unsigned) p->slots[i].n_ready;
                ret[n].target = p->slots[i].img.target;
        }
        pthread_mutex_unlock(&p->lock);
        return n;
}

void pool_prepare_times(Pool *p, uint64_t *ret_count, uint64_t *ret_sum_usec) {
        pthread_mutex_lock(&p->lock);
        *ret_count = p->prepared;
        *ret_sum_usec = p->prepare_usec;
        pthread_mutex_unlock(&p->lock);
}
