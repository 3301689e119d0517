/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared between the worker's main loop (worker.c) and its task threads
 * (task.c). */

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "client.h"
#include "image-store.h"
#include "images.h"
#include "pool.h"
#include "worker.h"

typedef struct Worker Worker;

typedef struct Task {
        Worker *w;
        atomic_int refs;
        json_t *assignment;
        int64_t lease, fence, job, task_id;
        unsigned attempt, slots;
        uint64_t claimed_usec;
        /* Set by the heartbeat thread or the main loop; read by the task. */
        atomic_bool cancel, lease_lost, hard_stop;
        atomic_bool reported; /* the server accepted the result */
        /* The sandbox's init while the task holds its sandbox, else 0: killing
         * it ends everything in the sandbox at once, even when the task thread
         * is stuck talking to it. Guarded by the worker's lock. */
        pid_t init_pid;
        /* Guarded by the worker's lock. */
        uint64_t lease_deadline, next_heartbeat;
        struct Task *next;
} Task;

typedef struct WorkerMetrics {
        _Atomic uint64_t tasks_started, tasks_finished, claims, claims_empty;
        _Atomic uint64_t claim_to_start_count, claim_to_start_sum_usec;
        _Atomic uint64_t claim_to_start_bucket[8];
        _Atomic uint64_t bytes_masked, log_bytes, leases_lost, warm_starts, cold_starts;
        _Atomic uint64_t rebuilds, rebuilds_failed;
        _Atomic uint64_t data_free_bytes; /* at the last check before a claim */
        atomic_bool disk_short;           /* claims held back: less than --min-free */
} WorkerMetrics;

extern const uint64_t worker_latency_buckets_usec[8];

struct Worker {
        const WorkerConfig *cfg;
        Pool *pool;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        Task *tasks;
        unsigned used_slots, n_tasks;
        char *session;
        int64_t id;
        uint64_t lease_ttl_usec, heartbeat_usec;
        atomic_bool draining, stopping;
        char spool_dir[4096], blob_dir[4096], tmp_dir[4096];
        WorkerMetrics m;
        Client *idle[32];
        size_t n_idle;
        /* Ended task threads waiting to be joined (n_finished ≤ n of tasks). */
        pthread_t *finished;
        size_t n_finished, max_finished;

        /* images.c: the list and pulls are guarded by image_lock. */
        pthread_mutex_t image_lock;
        ImageStore *store;
        WorkerImageState images[POOL_IMAGES_MAX];
        size_t n_images;
        atomic_bool images_changed;
        /* rebuild.c, guarded by lock: a rebuild waiting for a slot keeps the
         * claim loop from asking for it; the slots a claim in flight asked
         * for are not free for a rebuild. */
        bool rebuild_waiting, rebuild_running;
        unsigned claim_asked;
        pid_t rebuild_pid;
};

int worker_client_get(Worker *w, Client **ret);
void worker_client_put(Worker *w, Client *c);

/* Starts a task thread for an assignment (taken). */
int task_start(Worker *w, json_t *assignment);
/* Kills the task's sandbox now (call with the worker's lock held). */
void task_kill_sandbox_locked(Task *t);
void task_unref(Task *t);
