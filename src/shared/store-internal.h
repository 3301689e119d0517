/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared between the SQLite store's source files; not part of the interface. */

#include <pthread.h>
#include <sqlite3.h>

#include "store.h"

#define STORE_STMT_CACHE 96

typedef struct StoreConn {
        sqlite3 *db;
        size_t n_cache;
        struct {
                const char *sql;
                sqlite3_stmt *stmt;
        } cache[STORE_STMT_CACHE];
        struct StoreConn *next_free;
} StoreConn;

/* What a batch's operations changed; published after the commit. */
typedef struct StoreDirty {
        bool queue, attempts;
} StoreDirty;

typedef int (*StoreOpFunc)(Store *s, StoreConn *c, void *userdata);

typedef struct StoreOp {
        StoreOpFunc func;
        void *userdata;
        int result;
        bool done;
        /* Parked operations only (store_write_parked()). */
        bool taken;          /* in the writer's current batch */
        uint64_t seen_queue; /* the queue generation it last found nothing in */
        struct StoreOp *next;
} StoreOp;

struct Store {
        char *path;
        StoreOptions opts;

        StoreConn *writer;
        pthread_t writer_thread;
        bool writer_started, stopping;
        pthread_mutex_t op_lock;
        pthread_cond_t op_cond, done_cond;
        StoreOp *ops_head, **ops_tail;
        StoreOp *parked;  /* waiting for a task to be queued */
        bool parked_shutdown;
        StoreDirty dirty; /* only touched by the writer thread */
        uint64_t queue_published; /* gen.queue, as the writer thread last published it */
        int64_t last_event;
        uint64_t n_commits, n_ops; /* under op_lock */

        pthread_mutex_t pool_lock;
        StoreConn *pool;

        pthread_mutex_t gen_lock;
        pthread_cond_t gen_cond;
        StoreGen gen;
        bool woken_for_good;
};

/* Runs func in the writer thread inside the next group commit and returns its
 * result once the commit is durable (or the commit's error). */
int store_write(Store *s, StoreOpFunc func, void *userdata);
/* For an operation that waits for a task to be queued (a claim): func returns
 * -EAGAIN while there is nothing for it, which undoes what it did. It runs
 * inside every group commit that queues a task, after that batch's other
 * operations and in the same transaction — so a claim waiting when a job is
 * submitted is answered by the submission's own commit — and inside one of
 * its own if a task was queued after seen_queue (a StoreGen.queue the caller
 * read before it last looked). Returns func's result once it is not -EAGAIN
 * and is durable, -ETIMEDOUT at deadline (CLOCK_MONOTONIC µs), -ESHUTDOWN
 * once store_wake_all() ran. */
int store_write_parked(Store *s, StoreOpFunc func, void *userdata, uint64_t seen_queue, uint64_t deadline);
/* Borrows a read connection from the pool. */
int store_read_begin(Store *s, StoreConn **ret);
void store_read_end(Store *s, StoreConn *c);

/* A cached prepared statement, reset and with its bindings cleared. */
int conn_prepare(StoreConn *c, const char *sql, sqlite3_stmt **ret);
int conn_exec(StoreConn *c, const char *sql);
int sqlite_to_errno(sqlite3 *db, int rc);
/* sqlite3_step(): 1 on SQLITE_ROW, 0 on SQLITE_DONE, -errno otherwise. */
int conn_step(StoreConn *c, sqlite3_stmt *st);
/* Prepares sql, binds id to its one parameter and steps to the first row:
 * 0 with *ret there (reset it when done), -ENOENT when there is no row. */
int conn_row_by_id(StoreConn *c, const char *sql, int64_t id, sqlite3_stmt **ret);
int64_t conn_changes(StoreConn *c);
int64_t conn_last_rowid(StoreConn *c);

/* Appends an event in the current transaction. extra may be NULL; it is
 * merged into the event's JSON and its reference is taken over. */
int store_event_add(Store *s, StoreConn *c, const char *type, int64_t id, int64_t job_id,
                    const char *state, json_t *extra);
/* Recomputes a job's state from its tasks, storing it (and its event) when it
 * changed. */
int store_job_refresh_state(Store *s, StoreConn *c, int64_t job_id);


/* JSON text of a column, or NULL. */
json_t *column_json(sqlite3_stmt *st, int col);
const char *column_text(sqlite3_stmt *st, int col);
