/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "threads.h"
#include "fd-util.h"
#include "fs-util.h"
#include "image-store.h"
#include "log.h"
#include "pool.h"
#include "workspace.h"

#define RETRY_USEC (1000 * 1000ULL)
#define REVISION_CHECK_USEC (1000 * 1000ULL)

/* A sandbox and the image revision it was prepared from: the resolved root
 * file system directory, held (image_hold()) until the sandbox is destroyed,
 * so that neither keep-K pruning nor kiln image rm removes it under a task. */
typedef struct Held {
        Sandbox *s;
        int hold_fd;
        char *rootfs;
        struct Held *next;
} Held;

typedef struct Slot {
        PoolImage img;
        Held **ready;
        size_t n_ready, max_ready;
        uint64_t failed_until; /* back off after a failed prepare */
} Slot;

typedef struct Request {
        const Slot *slot;
        PoolLimits limits;
        Held *result;
        int error;
        bool done;
        struct Request *next;
} Request;

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
        Held *busy; /* handed to tasks */
        Held *dead;
        uint64_t prepared, prepare_usec, retired;
        uint64_t next_revision_check;
        unsigned unsettled;   /* warm hand-overs not settled yet */
        uint64_t quiet_until; /* CLOCK_MONOTONIC µs */
};

static void held_free(Held *h) {
        if (!h)
                return;
        safe_close(h->hold_fd);
        free(h->rootfs);
        free(h);
}

/* What the image's path resolves to now (current switched by a build, an
 * import, a pull or a rollback), or NULL for "host" and unresolvable paths. */
static char *slot_resolve(const Slot *slot) {
        if (streq(slot->img.path, "host"))
                return NULL;
        return realpath(slot->img.path, NULL);
}

/* Takes warm sandbox i out of the slot and queues it for destruction. */
static void discard_locked(Pool *p, Slot *slot, size_t i) {
        Held *h = slot->ready[i];
        memmove(slot->ready + i, slot->ready + i + 1, (slot->n_ready - i - 1) * sizeof(Held *));
        slot->n_ready--;
        h->next = p->dead;
        p->dead = h;
}

static void retire_locked(Pool *p, Slot *slot, size_t i, const char *current) {
        Held *h = slot->ready[i];
        log_info("Retiring warm sandbox %s of image '%s': prepared from %s, current is %s", sandbox_id(h->s),
                 slot->img.name, h->rootfs, current);
        discard_locked(p, slot, i);
        p->retired++;
}

/* Warm sandboxes of a revision that is no longer current are destroyed, not
 * used; the refill prepares the current one. */
static void retire_stale_locked(Pool *p, Slot *slot, const char *current) {
        if (!current)
                return;
        for (size_t i = slot->n_ready; i > 0; i--)
                if (!streq(slot->ready[i - 1]->rootfs, current))
                        retire_locked(p, slot, i - 1, current);
}

/* A warm sandbox whose PID 1 died (killed from outside, or with a spawner
 * that was killed) is destroyed, not handed to a task. */
static void retire_dead_locked(Pool *p, Slot *slot) {
        for (size_t i = slot->n_ready; i > 0; i--) {
                Held *h = slot->ready[i - 1];
                if (sandbox_alive(h->s))
                        continue;
                log_warning("Warm sandbox %s of image '%s' died before use; discarding it", sandbox_id(h->s),
                            slot->img.name);
                discard_locked(p, slot, i - 1);
        }
}

static void retire_stale(Pool *p) {
        pthread_mutex_lock(&p->lock);
        size_t n = p->n_slots;
        pthread_mutex_unlock(&p->lock);
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *cur = slot_resolve(&p->slots[i]);
                pthread_mutex_lock(&p->lock);
                retire_stale_locked(p, &p->slots[i], cur);
                retire_dead_locked(p, &p->slots[i]);
                pthread_mutex_unlock(&p->lock);
        }
}

static int prepare(Pool *p, const Slot *slot, const PoolLimits *l, Held **ret) {
        _cleanup_free_ char *rootfs = NULL;
        _cleanup_close_ int hold = -EBADF;
        SandboxConfig c = {
                .memory_max = l->memory_max,
                .pids_max = l->pids_max,
                .cpu_millis = l->cpu_millis,
                .disk_max = l->disk_max,
                .network = l->network,
        };
        Sandbox *s = NULL;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        int r;

        /* The sandbox gets the resolved revision, never the current link, and
         * keeps it whatever current becomes. */
        if (streq(slot->img.path, "host"))
                rootfs = strdup("host");
        else {
                hold = image_hold(slot->img.path, &rootfs);
                if (hold < 0)
                        return log_warning_errno(hold, "Image '%s': cannot use '%s': %m", slot->img.name,
                                                 slot->img.path);
        }
        if (!rootfs)
                return -ENOMEM;
        Held *h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        c.image = rootfs;
        r = sandbox_prepare(&c, &s);
        if (r < 0) {
                free(h);
                return r;
        }
        r = workspace_create(sandbox_init_pid(s));
        if (r < 0) {
                log_warning_errno(r, "Failed to create %s in sandbox %s: %m", WORKSPACE_DIR, sandbox_id(s));
                sandbox_destroy(s);
                free(h);
                return r;
        }
        *h = (Held) { .s = s, .hold_fd = TAKE_FD(hold), .rootfs = TAKE_PTR(rootfs) };
        pthread_mutex_lock(&p->lock);
        p->prepared++;
        p->prepare_usec += now_usec(CLOCK_MONOTONIC) - t0;
        pthread_mutex_unlock(&p->lock);
        *ret = h;
        return 0;
}

static bool quiet(const Pool *p, uint64_t now) {
        return p->unsettled > 0 && now < p->quiet_until;
}

/* The next thing to do, in order of urgency: a task waiting for a cold
 * sandbox, an empty pool, then (outside a dispatch's quiet time) a used
 * sandbox to destroy and a pool below its target. Called locked; returns
 * false when there is nothing to do now. */
static bool pick(Pool *p, Request **ret_req, Slot **ret_refill, Held **ret_dead) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        *ret_req = NULL;
        *ret_refill = NULL;
        *ret_dead = NULL;
        for (Request *q = p->requests; q; q = q->next)
                if (!q->done && !q->result && q->error == 0) {
                        *ret_req = q;
                        return true;
                }
        /* Cloning a sandbox copies the worker's page tables and holds its
         * memory map meanwhile, which stalls every other thread: while a warm
         * dispatch is in flight only a task that waits is served. */
        if (quiet(p, now))
                return false;
        /* An empty pool is refilled before used sandboxes are destroyed; a
         * partly full one after, so that destruction never falls behind. */
        for (size_t i = 0; i < p->n_slots; i++)
                if (p->slots[i].n_ready == 0 && p->slots[i].img.target > 0 && now >= p->slots[i].failed_until) {
                        *ret_refill = &p->slots[i];
                        return true;
                }
        if (p->dead) {
                *ret_dead = p->dead;
                p->dead = p->dead->next;
                return true;
        }
        for (size_t i = 0; i < p->n_slots; i++)
                if (p->slots[i].n_ready < p->slots[i].img.target && now >= p->slots[i].failed_until) {
                        *ret_refill = &p->slots[i];
                        return true;
                }
        return false;
}

/* Refills and destruction are background work: they run at a lower priority
 * than the tasks (nice + POOL_NICE for this thread), so that a task does not
 * wait for the CPU behind the sandbox being prepared for the next one. A
 * prepared sandbox's init gets the worker's own priority back before it is
 * handed out; a task waiting for a sandbox is served at full priority. */
#define POOL_NICE 10

static void pool_priority(int base, bool background) {
        (void) setpriority(PRIO_PROCESS, (id_t) gettid(), background ? MIN(base + POOL_NICE, 19) : base);
}

static void *pool_thread(void *arg) {
        Pool *p = arg;

        errno = 0;
        int base = getpriority(PRIO_PROCESS, 0);
        if (errno != 0)
                base = 0;
        pthread_mutex_lock(&p->lock);
        while (!p->stop) {
                Request *req;
                Slot *refill;
                Held *dead, *s = NULL;

                if (now_usec(CLOCK_MONOTONIC) >= p->next_revision_check) {
                        p->next_revision_check = now_usec(CLOCK_MONOTONIC) + REVISION_CHECK_USEC;
                        pthread_mutex_unlock(&p->lock);
                        retire_stale(p);
                        pthread_mutex_lock(&p->lock);
                        continue;
                }
                if (!pick(p, &req, &refill, &dead)) {
                        uint64_t now = now_usec(CLOCK_MONOTONIC);
                        uint64_t wait = quiet(p, now) ? p->quiet_until - now : 1000000ULL;
                        struct timespec ts = timespec_after(CLOCK_REALTIME, wait);
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
                        pool_priority(base, true);
                        int r = prepare(p, refill, &p->defaults, &s);
                        if (r >= 0)
                                (void) setpriority(PRIO_PROCESS, (id_t) sandbox_init_pid(s->s), base);
                        pool_priority(base, false);
                        pthread_mutex_lock(&p->lock);
                        if (r < 0) {
                                log_warning_errno(r, "Failed to prepare a warm sandbox of image '%s': %m",
                                                  refill->img.name);
                                refill->failed_until = now_usec(CLOCK_MONOTONIC) + RETRY_USEC;
                        } else
                                refill->ready[refill->n_ready++] = s;
                } else {
                        pthread_mutex_unlock(&p->lock);
                        pool_priority(base, true);
                        (void) sandbox_destroy(dead->s);
                        held_free(dead);
                        pool_priority(base, false);
                        pthread_mutex_lock(&p->lock);
                }
        }
        /* Everything this thread created dies with it, but the host-side state
         * is removed properly here. */
        for (size_t i = 0; i < p->n_slots; i++)
                while (p->slots[i].n_ready > 0) {
                        Held *h = p->slots[i].ready[--p->slots[i].n_ready];
                        (void) sandbox_destroy(h->s);
                        held_free(h);
                }
        while (p->dead) {
                Held *d = p->dead;
                p->dead = d->next;
                (void) sandbox_destroy(d->s);
                held_free(d);
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

static int slot_init(Slot *s, const PoolImage *img) {
        s->img.name = strdup(img->name);
        s->img.path = strdup(img->path);
        s->img.target = img->target;
        s->max_ready = MAX(img->target, 1U);
        s->ready = calloc(s->max_ready, sizeof(Held *));
        if (!s->img.name || !s->img.path || !s->ready)
                return -ENOMEM;
        return 0;
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
                r = slot_init(&p->slots[p->n_slots++], &images[i]);
                if (r < 0) {
                        pool_free(p);
                        return r;
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
        while (p->busy) {
                Held *h = p->busy;
                p->busy = h->next;
                held_free(h);
        }
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

static Slot *slot_find_locked(Pool *p, const char *image) {
        for (size_t i = 0; i < p->n_slots; i++)
                if (streq(p->slots[i].img.name, image))
                        return &p->slots[i];
        return NULL;
}

bool pool_has_image(Pool *p, const char *image) {
        pthread_mutex_lock(&p->lock);
        bool found = slot_find_locked(p, image) != NULL;
        pthread_mutex_unlock(&p->lock);
        return found;
}

int pool_add_image(Pool *p, const PoolImage *img) {
        int r = 0;

        pthread_mutex_lock(&p->lock);
        if (slot_find_locked(p, img->name))
                r = -EEXIST;
        else if (p->n_slots >= POOL_IMAGES_MAX)
                r = -E2BIG;
        else {
                /* Slots never move: a Request points at one. */
                r = slot_init(&p->slots[p->n_slots], img);
                if (r >= 0)
                        p->n_slots++;
                else {
                        free(p->slots[p->n_slots].img.name);
                        free(p->slots[p->n_slots].img.path);
                        free(p->slots[p->n_slots].ready);
                        p->slots[p->n_slots] = (Slot) {};
                }
                pthread_cond_broadcast(&p->wake);
        }
        pthread_mutex_unlock(&p->lock);
        return r;
}

int pool_acquire(Pool *p, const char *image, const PoolLimits *l, Sandbox **ret, bool *ret_warm) {
        pthread_mutex_lock(&p->lock);
        Slot *slot = slot_find_locked(p, image);
        pthread_mutex_unlock(&p->lock);
        if (!slot)
                return -ENOENT;
        /* A task starts on the revision that is current now. */
        _cleanup_free_ char *current = slot_resolve(slot);

        pthread_mutex_lock(&p->lock);
        retire_stale_locked(p, slot, current);
        retire_dead_locked(p, slot);
        if (memcmp(l, &p->defaults, sizeof *l) == 0 && slot->n_ready > 0) {
                /* Oldest first: it has been ready the longest. */
                Held *h = slot->ready[0];
                memmove(slot->ready, slot->ready + 1, (slot->n_ready - 1) * sizeof(Held *));
                slot->n_ready--;
                p->unsettled++;
                p->quiet_until = now_usec(CLOCK_MONOTONIC) + POOL_QUIET_MAX_USEC;
                h->next = p->busy;
                p->busy = h;
                pthread_cond_broadcast(&p->wake);
                pthread_mutex_unlock(&p->lock);
                *ret = h->s;
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
        if (req.error >= 0) {
                req.result->next = p->busy;
                p->busy = req.result;
        }
        pthread_mutex_unlock(&p->lock);
        if (req.error < 0)
                return req.error;
        *ret = req.result->s;
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
        if (!s)
                return;
        /* Nothing inside may run on while it waits for destruction. */
        (void) sandbox_signal_all(s, SIGKILL);
        pthread_mutex_lock(&p->lock);
        Held *h = NULL;
        for (Held **q = &p->busy; *q; q = &(*q)->next)
                if ((*q)->s == s) {
                        h = *q;
                        *q = h->next;
                        break;
                }
        if (!h || p->stop) {
                /* Cannot queue it: the pool thread's exit kills it anyway. */
                pthread_mutex_unlock(&p->lock);
                held_free(h);
                log_warning("Sandbox %s could not be queued for destruction", sandbox_id(s));
                return;
        }
        h->next = p->dead;
        p->dead = h;
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

void pool_prepare_times(Pool *p, uint64_t *ret_count, uint64_t *ret_sum_usec, uint64_t *ret_retired) {
        pthread_mutex_lock(&p->lock);
        *ret_count = p->prepared;
        *ret_sum_usec = p->prepare_usec;
        *ret_retired = p->retired;
        pthread_mutex_unlock(&p->lock);
}
