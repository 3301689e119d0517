/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "fs-util.h"
#include "threads.h"

/* Process-wide on purpose: the hazard is the process's thread list, shared by
 * every worker (and anything else) in the process. */
static pthread_rwlock_t create_lock;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* A thread whose function returned and that was joined is not ended but
 * parked, and the next worker_thread_create() hands it the new function: a
 * task's threads then cost no thread creation, no join and no wait for the
 * clone guard on the dispatch path. At most IDLE_MAX threads stay parked. */
#define IDLE_MAX 32

typedef struct Entry {
        pthread_t thread;
        void *(*fn)(void *);
        void *arg;
        void *result;
        sigset_t mask; /* the thread's signal mask as created, restored for each use */
        sem_t started, run, done;
        bool exit;
        struct Entry *next;
} Entry;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static Entry *registry; /* handed out, not joined yet */
static Entry *idle;     /* parked */
static size_t n_idle;

static void init_lock(void) {
        pthread_rwlockattr_t a;
        pthread_rwlockattr_init(&a);
        /* A steady stream of thread creations must not starve the pool. */
        pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&create_lock, &a);
        pthread_rwlockattr_destroy(&a);
}

static void sem_wait_uninterrupted(sem_t *s) {
        while (sem_wait(s) < 0 && errno == EINTR)
                ;
}

static void *trampoline(void *p) {
        Entry *e = p;

        (void) pthread_sigmask(SIG_SETMASK, NULL, &e->mask);
        /* glibc marks a thread ready for setxid in its own start-up code, which
         * has run by now; only then may a sandbox be cloned. */
        sem_post(&e->started);
        for (;;) {
                e->result = e->fn(e->arg);
                sem_post(&e->done);
                sem_wait_uninterrupted(&e->run);
                if (e->exit)
                        return NULL;
                (void) pthread_sigmask(SIG_SETMASK, &e->mask, NULL);
        }
}

static void entry_free(Entry *e) {
        sem_destroy(&e->started);
        sem_destroy(&e->run);
        sem_destroy(&e->done);
        free(e);
}

int worker_thread_create(pthread_t *t, void *(*fn)(void *), void *arg) {
        Entry *e;
        int r;

        pthread_once(&once, init_lock);
        pthread_mutex_lock(&registry_lock);
        e = idle;
        if (e) {
                idle = e->next;
                n_idle--;
                e->fn = fn;
                e->arg = arg;
                e->next = registry;
                registry = e;
                *t = e->thread;
                pthread_mutex_unlock(&registry_lock);
                sem_post(&e->run);
                return 0;
        }
        pthread_mutex_unlock(&registry_lock);

        e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        e->fn = fn;
        e->arg = arg;
        sem_init(&e->started, 0, 0);
        sem_init(&e->run, 0, 0);
        sem_init(&e->done, 0, 0);
        pthread_mutex_lock(&registry_lock);
        pthread_rwlock_rdlock(&create_lock);
        r = pthread_create(&e->thread, NULL, trampoline, e);
        if (r == 0) {
                sem_wait_uninterrupted(&e->started);
                e->next = registry;
                registry = e;
                *t = e->thread;
        }
        pthread_rwlock_unlock(&create_lock);
        pthread_mutex_unlock(&registry_lock);
        if (r != 0)
                entry_free(e);
        return -r;
}

static Entry *entry_take(pthread_t t) {
        pthread_mutex_lock(&registry_lock);
        for (Entry **p = &registry; *p; p = &(*p)->next)
                if (pthread_equal((*p)->thread, t)) {
                        Entry *e = *p;
                        *p = e->next;
                        pthread_mutex_unlock(&registry_lock);
                        return e;
                }
        pthread_mutex_unlock(&registry_lock);
        return NULL;
}

static void entry_put(Entry *e) {
        pthread_mutex_lock(&registry_lock);
        e->next = registry;
        registry = e;
        pthread_mutex_unlock(&registry_lock);
}

/* The thread's function has returned: park the thread, or end it when enough
 * are parked. pthread_join() frees the thread's stack under glibc's stack
 * cache lock: done under the read lock. */
static void entry_finish(Entry *e, void **ret) {
        if (ret)
                *ret = e->result;
        pthread_mutex_lock(&registry_lock);
        if (n_idle < IDLE_MAX) {
                e->next = idle;
                idle = e;
                n_idle++;
                pthread_mutex_unlock(&registry_lock);
                return;
        }
        pthread_mutex_unlock(&registry_lock);
        e->exit = true;
        sem_post(&e->run);
        pthread_rwlock_rdlock(&create_lock);
        pthread_join(e->thread, NULL);
        pthread_rwlock_unlock(&create_lock);
        entry_free(e);
}

int worker_thread_join(pthread_t t, void **ret) {
        Entry *e = entry_take(t);
        if (!e)
                return -ESRCH;
        sem_wait_uninterrupted(&e->done);
        entry_finish(e, ret);
        return 0;
}

int worker_thread_timedjoin(pthread_t t, uint64_t timeout_usec) {
        struct timespec ts;
        Entry *e = entry_take(t);
        if (!e)
                return -ESRCH;
        ts = timespec_after(CLOCK_REALTIME, timeout_usec);
        int r;
        while ((r = sem_timedwait(&e->done, &ts)) < 0 && errno == EINTR)
                ;
        if (r < 0) {
                entry_put(e);
                return -ETIMEDOUT;
        }
        entry_finish(e, NULL);
        return 0;
}

void worker_clone_guard_begin(void) {
        pthread_once(&once, init_lock);
        pthread_rwlock_wrlock(&create_lock);
}

void worker_clone_guard_end(void) {
        pthread_rwlock_unlock(&create_lock);
}

pid_t worker_fork(void) {
        pthread_once(&once, init_lock);
        pthread_rwlock_rdlock(&create_lock);
        pid_t pid = fork();
        if (pid != 0)
                pthread_rwlock_unlock(&create_lock);
        return pid;
}
