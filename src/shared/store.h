/* SPDX-License-Identifier: MIT */
#pragma once

/* The server's store: the only source of truth for jobs, tasks, attempts,
 * leases, workers, tokens, secrets, artifacts and the event log.
 *
 * This header is the interface; store-sqlite*.c implement it over SQLite
 * (WAL, synchronous=FULL). A PostgreSQL implementation provides the same
 * functions. Callers never see SQL.
 *
 * Writes are group-committed: every write call queues an operation for the
 * single writer thread, which runs all pending operations in one transaction
 * (each inside its own savepoint, so one failing operation does not abort its
 * neighbours), commits once, and only then wakes the callers. A write call
 * returns after its change is durable.
 *
 * Errors: -ENOENT (no such object), -ESTALE (lease fencing mismatch, the
 * attempt is no longer the task's live attempt), -EAGAIN (nothing to claim),
 * -EEXIST (duplicate), -EBUSY (wrong state for the request), -ENOSPC (disk
 * full), -EIO. */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define STORE_HASH_SIZE 32

typedef struct Store Store;

typedef struct StoreOptions {
        uint64_t lease_ttl_usec;     /* default 30 s */
        unsigned max_infra_retries;  /* default 3 */
        /* Opened by a tool next to (or instead of) a running server: leave
         * leases and workers' clocks alone. */
        bool offline;
} StoreOptions;

int store_open(const char *path, const StoreOptions *opts, Store **ret);
Store *store_close(Store *s);
static inline void store_closep(Store **s) {
        if (*s)
                store_close(*s);
}
#define _cleanup_store_ _cleanup_(store_closep)

/* Clocks the store uses, in µs: leases run on CLOCK_MONOTONIC. */
uint64_t store_now_mono(void);
int64_t store_now_wall(void);

int store_schema_version(Store *s);
/* Group commit: transactions committed and write operations they carried. */
void store_commit_stats(Store *s, uint64_t *ret_commits, uint64_t *ret_ops);
uint64_t store_lease_ttl(Store *s);

/* Change notification. Each counter only grows; a waiter snapshots them
 * before looking, then waits for the ones it cares about to move. */
typedef struct StoreGen {
        uint64_t queue;    /* a task became queued */
        uint64_t events;   /* last committed event sequence number */
        uint64_t attempts; /* an attempt changed state */
        uint64_t logs;     /* bytes were appended to some log */
} StoreGen;

enum {
        STORE_WAIT_QUEUE = 1 << 0,
        STORE_WAIT_EVENTS = 1 << 1,
        STORE_WAIT_ATTEMPTS = 1 << 2,
        STORE_WAIT_LOGS = 1 << 3,
};

void store_gen_get(Store *s, StoreGen *ret);
/* Returns 0 once one of the counters in mask differs from *seen, -ETIMEDOUT
 * at deadline (CLOCK_MONOTONIC µs), -ESHUTDOWN once store_wake_all() ran. */
int store_wait(Store *s, const StoreGen *seen, unsigned mask, uint64_t deadline);
void store_notify_logs(Store *s);
/* Wakes every waiter for good: used at shutdown. */
void store_wake_all(Store *s);

/* Tokens. kind is "admin", "user", "worker" or "session". */
typedef struct StoreToken {
        int64_t id;
        uint8_t hash[STORE_HASH_SIZE];
        char kind[16];
        int64_t worker_id;
} StoreToken;

int store_token_create(Store *s, const char *kind, const char *name,
                       const uint8_t hash[STORE_HASH_SIZE], int64_t worker_id, int64_t *ret_id);
int store_token_lookup(Store *s, const uint8_t hash[STORE_HASH_SIZE], StoreToken *ret);
int store_token_list(Store *s, json_t **ret);
int store_token_revoke(Store *s, int64_t id);
int store_token_count(Store *s, const char *kind, int64_t *ret);

/* Workers. info: {"name", "labels":{}, "slots", "backends":[], "images":{}}. */
int store_worker_register(Store *s, json_t *info, const uint8_t session_hash[STORE_HASH_SIZE],
                          int64_t *ret_id);
int store_worker_get_labels(Store *s, int64_t id, json_t **ret_labels, unsigned *ret_slots);
int store_worker_list(Store *s, json_t **ret);
/* The worker is alive; images (borrowed, may be NULL) replaces info.images. */
int store_worker_heartbeat(Store *s, int64_t worker_id, json_t *images);
/* Marks workers not seen within max_age as offline (one event each). */
int store_workers_reap(Store *s, uint64_t max_age_usec, unsigned *ret_n);

/* Jobs. spec is validated, tasks its expansion ([{"name","slots","env"}]). */
int store_job_submit(Store *s, json_t *spec, json_t *tasks, int64_t token_id, int64_t *ret_id);
int store_job_get(Store *s, int64_t id, json_t **ret);
typedef struct StoreJobFilter {
        const char *state; /* NULL: any */
        const char *name;  /* NULL: any */
        int64_t before;    /* 0: from the newest; else ids < before */
        unsigned limit;
} StoreJobFilter;
/* Returns {"jobs":[…], "next": id or null}. Newest first. */
int store_job_list(Store *s, const StoreJobFilter *f, json_t **ret);
int store_job_cancel(Store *s, int64_t id);
/* Queues a new attempt of every task that ended failed, timed_out, lost or
 * cancelled. -EBUSY while the job is not finished. */
int store_job_retry(Store *s, int64_t id, unsigned *ret_n);
int store_task_get(Store *s, int64_t id, json_t **ret);

/* The worker protocol. */
typedef struct StoreClaim {
        int64_t task_id, job_id, attempt_id, fence;
        unsigned attempt_number;
        char *task_name;
        char *spec;      /* job spec, JSON text */
        char *task_env;  /* JSON text */
        unsigned slots;
} StoreClaim;
void store_claim_done(StoreClaim *c);

int store_claim(Store *s, int64_t worker_id, json_t *worker_labels, unsigned free_slots,
                StoreClaim *ret);
/* Waits for a task to claim after store_claim() found none (seen: the
 * generations read before that call): the claim is made inside the commit
 * that queues a task, in the same transaction — a worker waiting when a job
 * is submitted has its assignment as soon as the submission is durable, with
 * no commit of its own. -ETIMEDOUT at deadline (CLOCK_MONOTONIC µs),
 * -ESHUTDOWN once store_wake_all() ran. */
int store_claim_wait(Store *s, int64_t worker_id, json_t *worker_labels, unsigned free_slots,
                     const StoreGen *seen, uint64_t deadline, StoreClaim *ret);

typedef struct StoreAttempt {
        int64_t id, task_id, job_id, worker_id, fence;
        unsigned number;
        char state[16];
        bool live; /* the task's current attempt, still leased or running */
        uint64_t expires; /* CLOCK_MONOTONIC µs, meaningful while live */
        uint64_t log_size;
} StoreAttempt;

/* Read-only lookup of an attempt. */
int store_attempt_get(Store *s, int64_t attempt_id, StoreAttempt *ret);
/* The latest attempt of a task (-ENOENT before the first claim). */
int store_task_latest_attempt(Store *s, int64_t task_id, StoreAttempt *ret);
/* -ESTALE unless attempt is live, has this fence and belongs to worker. */
int store_lease_check(Store *s, int64_t attempt_id, int64_t fence, int64_t worker_id,
                      StoreAttempt *ret);
int store_lease_heartbeat(Store *s, int64_t attempt_id, int64_t fence, int64_t worker_id,
                          bool *ret_cancel);
/* state: succeeded, failed, warning, skipped, cancelled, timed_out. */
typedef struct StoreFinish {
        const char *state;
        int exit_code;
        uint64_t log_size;
        const char *reason; /* why it ended so, in words; NULL: nothing to say */
        bool log_truncated; /* the worker cut the log at its cap */
} StoreFinish;
int store_lease_finish(Store *s, int64_t attempt_id, int64_t fence, int64_t worker_id, const StoreFinish *f);
/* Marks every lease past its expiry lost and requeues its task. */
int store_leases_expire(Store *s, unsigned *ret_n);

/* Events: returns a JSON array of {"seq","time","type","id","job","state",…}. */
int store_events_since(Store *s, int64_t after, unsigned limit, json_t **ret);

/* Secrets: the store keeps ciphertext only. */
/* An image event (docs/images.md): type "image", id the revision, "image"
 * the name, state "published", "build_succeeded" or "build_failed"; extra's
 * keys are added (borrowed). */
int store_image_event(Store *s, const char *name, int64_t revision, const char *state, json_t *extra);
int store_secret_put(Store *s, const char *name, const void *blob, size_t size);
int store_secret_get(Store *s, const char *name, void **ret_blob, size_t *ret_size);
int store_secret_list(Store *s, json_t **ret);
int store_secret_delete(Store *s, const char *name);

/* Artifacts. */
int store_artifact_add(Store *s, const StoreAttempt *a, const char *name, uint64_t size,
                       const char *sha256, const char *path, int64_t *ret_id);
int store_artifact_list(Store *s, int64_t job_id, json_t **ret);
/* Returns {"id","name","size","sha256","path",…}. */
int store_artifact_get(Store *s, int64_t id, json_t **ret);

/* Operations. Returns [{"labels":{…},"depth":N,"oldest":unix µs}]. */
int store_queue_stats(Store *s, json_t **ret);
