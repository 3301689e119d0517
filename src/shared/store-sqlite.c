/* SPDX-License-Identifier: MIT */
/* The SQLite store's core: connections, schema migrations, the group-commit
 * writer thread, the read pool and change notification. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs-util.h"
#include "log.h"
#include "macro.h"
#include "store-internal.h"

/* Each entry moves the schema from version i to i + 1, in one transaction. */
static const char *const migrations[] = {
        /* 1: the initial schema */
        "CREATE TABLE tokens ("
        "  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',"
        "  hash BLOB NOT NULL UNIQUE, worker_id INTEGER, created INTEGER NOT NULL,"
        "  revoked INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE workers ("
        "  id INTEGER PRIMARY KEY, name TEXT NOT NULL, labels TEXT NOT NULL, slots INTEGER NOT NULL,"
        "  info TEXT NOT NULL, state TEXT NOT NULL, registered INTEGER NOT NULL,"
        "  last_seen INTEGER NOT NULL);"
        "CREATE TABLE jobs ("
        "  id INTEGER PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL, spec TEXT NOT NULL,"
        "  labels TEXT NOT NULL, retry_max INTEGER NOT NULL, retry_on INTEGER NOT NULL,"
        "  token_id INTEGER, created INTEGER NOT NULL, updated INTEGER NOT NULL);"
        "CREATE INDEX jobs_state ON jobs(state, id);"
        "CREATE TABLE tasks ("
        "  id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL REFERENCES jobs(id), idx INTEGER NOT NULL,"
        "  name TEXT NOT NULL, slots INTEGER NOT NULL, env TEXT NOT NULL, labels TEXT NOT NULL,"
        "  state TEXT NOT NULL, user_retries INTEGER NOT NULL DEFAULT 0,"
        "  infra_retries INTEGER NOT NULL DEFAULT 0, attempt INTEGER NOT NULL DEFAULT 0,"
        "  n_attempts INTEGER NOT NULL DEFAULT 0, fence INTEGER NOT NULL DEFAULT 0,"
        "  cancel INTEGER NOT NULL DEFAULT 0, queued_at INTEGER NOT NULL, exit_code INTEGER);"
        "CREATE INDEX tasks_job ON tasks(job_id, state);"
        "CREATE INDEX tasks_queue ON tasks(id) WHERE state = 'queued';"
        "CREATE TABLE attempts ("
        "  id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks(id),"
        "  job_id INTEGER NOT NULL, number INTEGER NOT NULL, worker_id INTEGER NOT NULL,"
        "  fence INTEGER NOT NULL, state TEXT NOT NULL, expires INTEGER NOT NULL,"
        "  started INTEGER NOT NULL, finished INTEGER, exit_code INTEGER, log_size INTEGER,"
        "  reason TEXT);"
        "CREATE INDEX attempts_task ON attempts(task_id, number);"
        "CREATE INDEX attempts_job ON attempts(job_id);"
        "CREATE INDEX attempts_live ON attempts(expires) WHERE state IN ('leased', 'running');"
        "CREATE TABLE events ("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, data TEXT NOT NULL);"
        "CREATE TABLE secrets ("
        "  name TEXT PRIMARY KEY, value BLOB NOT NULL, created INTEGER NOT NULL,"
        "  updated INTEGER NOT NULL);"
        "CREATE TABLE artifacts ("
        "  id INTEGER PRIMARY KEY, attempt_id INTEGER NOT NULL, task_id INTEGER NOT NULL,"
        "  job_id INTEGER NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,"
        "  sha256 TEXT NOT NULL, path TEXT NOT NULL, created INTEGER NOT NULL,"
        "  UNIQUE(attempt_id, name));"
        "CREATE INDEX artifacts_job ON artifacts(job_id);",
        /* 2: an attempt's log cut at the worker's cap */
        "ALTER TABLE attempts ADD COLUMN log_truncated INTEGER NOT NULL DEFAULT 0;",
};

uint64_t store_now_mono(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

int64_t store_now_wall(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int sqlite_to_errno(sqlite3 *db, int rc) {
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_IOERR:
                if (db && (sqlite3_system_errno(db) == ENOSPC || sqlite3_system_errno(db) == EDQUOT))
                        return -ENOSPC;
                return -EIO;
        default:
                return -EIO;
        }
}

int conn_prepare(StoreConn *c, const char *sql, sqlite3_stmt **ret) {
        for (size_t i = 0; i < c->n_cache; i++)
                if (c->cache[i].sql == sql) {
                        sqlite3_reset(c->cache[i].stmt);
                        sqlite3_clear_bindings(c->cache[i].stmt);
                        *ret = c->cache[i].stmt;
                        return 0;
                }
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
        if (rc != SQLITE_OK) {
                log_debug("SQL prepare failed: %s: %s", sqlite3_errmsg(c->db), sql);
                return sqlite_to_errno(c->db, rc);
        }
        if (c->n_cache < STORE_STMT_CACHE) {
                c->cache[c->n_cache].sql = sql;
                c->cache[c->n_cache].stmt = st;
                c->n_cache++;
        } else
                log_debug("statement cache full");
        *ret = st;
        return 0;
}

int conn_step(StoreConn *c, sqlite3_stmt *st) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        log_debug("SQL step failed: %s", sqlite3_errmsg(c->db));
        return sqlite_to_errno(c->db, rc);
}

int conn_row_by_id(StoreConn *c, const char *sql, int64_t id, sqlite3_stmt **ret) {
        sqlite3_stmt *st;
        int r = conn_prepare(c, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        r = conn_step(c, st);
        if (r <= 0)
                return r < 0 ? r : -ENOENT;
        *ret = st;
        return 0;
}

int conn_exec(StoreConn *c, const char *sql) {
        char *err = NULL;
        int rc = sqlite3_exec(c->db, sql, NULL, NULL, &err);
        if (rc != SQLITE_OK) {
                log_debug("SQL failed: %s: %.60s", err ? err : "?", sql);
                sqlite3_free(err);
                return sqlite_to_errno(c->db, rc);
        }
        return 0;
}

int64_t conn_changes(StoreConn *c) {
        return sqlite3_changes64(c->db);
}

int64_t conn_last_rowid(StoreConn *c) {
        return sqlite3_last_insert_rowid(c->db);
}

const char *column_text(sqlite3_stmt *st, int col) {
        const unsigned char *t = sqlite3_column_text(st, col);
        return t ? (const char *) t : NULL;
}

json_t *column_json(sqlite3_stmt *st, int col) {
        const char *t = column_text(st, col);
        if (!t)
                return json_null();
        json_t *j = json_loads(t, JSON_DECODE_ANY, NULL);
        return j ? j : json_null();
}

/* A statement left mid-result pins its snapshot; reset them all. */
static void conn_reset_all(StoreConn *c) {
        for (size_t i = 0; i < c->n_cache; i++)
                sqlite3_reset(c->cache[i].stmt);
}

static void conn_free(StoreConn *c) {
        if (!c)
                return;
        for (size_t i = 0; i < c->n_cache; i++)
                sqlite3_finalize(c->cache[i].stmt);
        sqlite3_close_v2(c->db);
        free(c);
}

static int conn_open(const char *path, bool writer, StoreConn **ret) {
        StoreConn *c = calloc(1, sizeof(StoreConn));
        if (!c)
                return -ENOMEM;
        int rc = sqlite3_open_v2(path, &c->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 NULL);
        if (rc != SQLITE_OK) {
                int r = sqlite_to_errno(c->db, rc);
                conn_free(c);
                return r;
        }
        sqlite3_busy_timeout(c->db, 10000);
        sqlite3_extended_result_codes(c->db, 1);
        int r = conn_exec(c, writer ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                      "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;"
                                    : "PRAGMA query_only=ON; PRAGMA cache_size=-1024;");
        if (r < 0) {
                conn_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static int store_migrate(StoreConn *c) {
        sqlite3_stmt *st;
        int r, version;

        r = conn_prepare(c, "PRAGMA user_version", &st);
        if (r < 0)
                return r;
        r = conn_step(c, st);
        if (r <= 0)
                return r < 0 ? r : -EIO;
        version = sqlite3_column_int(st, 0);
        sqlite3_reset(st);
        if (version > (int) ELEMENTSOF(migrations))
                return log_debug_errno(EPROTO, "Store schema %d is newer than this kiln (%zu).",
                                       version, ELEMENTSOF(migrations));
        for (int v = version; v < (int) ELEMENTSOF(migrations); v++) {
                char pragma[64];
                snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d;", v + 1);
                r = conn_exec(c, "BEGIN IMMEDIATE");
                if (r < 0)
                        return r;
                r = conn_exec(c, migrations[v]);
                if (r >= 0)
                        r = conn_exec(c, pragma);
                if (r >= 0)
                        r = conn_exec(c, "COMMIT");
                if (r < 0) {
                        (void) conn_exec(c, "ROLLBACK");
                        return r;
                }
        }
        return 0;
}

int store_schema_version(Store *s) {
        return (int) ELEMENTSOF(migrations);
}

void store_commit_stats(Store *s, uint64_t *ret_commits, uint64_t *ret_ops) {
        pthread_mutex_lock(&s->op_lock);
        *ret_commits = s->n_commits;
        *ret_ops = s->n_ops;
        pthread_mutex_unlock(&s->op_lock);
}

uint64_t store_lease_ttl(Store *s) {
        return s->opts.lease_ttl_usec;
}

/* A restarted server gives every open lease a full TTL from now, on this
 * boot's monotonic clock (DESIGN §3). */
static int store_rebase_leases(Store *s, StoreConn *c, void *userdata) {
        sqlite3_stmt *st;
        int r;

        if (s->opts.offline)
                goto events;
        r = conn_prepare(c, "UPDATE attempts SET expires = ? WHERE state IN ('leased', 'running')", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, (int64_t) (store_now_mono() + s->opts.lease_ttl_usec));
        r = conn_step(c, st);
        if (r < 0)
                return r;
        r = conn_prepare(c, "UPDATE workers SET last_seen = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, (int64_t) store_now_mono());
        r = conn_step(c, st);
        if (r < 0)
                return r;
events:
        r = conn_prepare(c, "SELECT COALESCE(MAX(seq), 0) FROM events", &st);
        if (r < 0)
                return r;
        r = conn_step(c, st);
        if (r < 0)
                return r;
        s->last_event = sqlite3_column_int64(st, 0);
        return 0;
}

/* ---- the group-commit writer ---- */

static bool parked_stale(const Store *s, const StoreOp *parked) {
        for (const StoreOp *p = parked; p; p = p->next)
                if (p->seen_queue != s->queue_published)
                        return true;
        return false;
}

/* Runs ops, each in its own savepoint; returns < 0 when SQLite rolled the
 * whole transaction back. */
static int ops_run(Store *s, StoreOp *batch, StoreOp *whole) {
        StoreConn *c = s->writer;
        int r;

        for (StoreOp *op = batch; op; op = op->next) {
                r = conn_exec(c, "SAVEPOINT op");
                if (r < 0) {
                        op->result = r;
                        continue;
                }
                StoreDirty saved = s->dirty;
                int64_t saved_event = s->last_event;
                op->result = op->func(s, c, op->userdata);
                conn_reset_all(c);
                if (op->result < 0) {
                        s->dirty = saved;
                        s->last_event = saved_event;
                        (void) conn_exec(c, "ROLLBACK TO op");
                }
                if (sqlite3_get_autocommit(c->db)) {
                        /* SQLite rolled the whole transaction back (it does
                         * so on some SQLITE_FULL and I/O errors): nothing of
                         * the batch so far survives. */
                        r = op->result < 0 ? op->result : -EIO;
                        for (StoreOp *o = whole; o; o = o->next)
                                o->result = r;
                        return r;
                }
                (void) conn_exec(c, "RELEASE op");
        }
        return 0;
}

/* The batch's operations, then the parked ones if a task was queued (by this
 * batch, or since they last looked), in one transaction. */
static int batch_run(Store *s, StoreOp *batch, StoreOp *parked) {
        StoreConn *c = s->writer;
        int r;

        r = conn_exec(c, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        r = ops_run(s, batch, batch);
        if (r < 0)
                return r;
        if (parked && (s->dirty.queue || parked_stale(s, parked))) {
                r = ops_run(s, parked, parked);
                if (r < 0) {
                        for (StoreOp *op = batch; op; op = op->next)
                                op->result = r;
                        return r;
                }
        } else
                for (StoreOp *p = parked; p; p = p->next)
                        p->result = -EAGAIN;
        r = conn_exec(c, "COMMIT");
        if (r < 0 && !sqlite3_get_autocommit(c->db))
                (void) conn_exec(c, "ROLLBACK");
        return r;
}

static void publish(Store *s, int64_t committed_event) {
        pthread_mutex_lock(&s->gen_lock);
        if (s->dirty.queue)
                s->gen.queue++;
        s->queue_published = s->gen.queue;
        if (s->dirty.attempts)
                s->gen.attempts++;
        if ((uint64_t) committed_event > s->gen.events)
                s->gen.events = (uint64_t) committed_event;
        pthread_cond_broadcast(&s->gen_cond);
        pthread_mutex_unlock(&s->gen_lock);
        s->dirty = (StoreDirty) {};
}

static void *writer_main(void *arg) {
        Store *s = arg;

        pthread_mutex_lock(&s->op_lock);
        for (;;) {
                while (!s->ops_head && !parked_stale(s, s->parked) && !s->stopping)
                        pthread_cond_wait(&s->op_cond, &s->op_lock);
                if (!s->ops_head && s->stopping)
                        break;
                StoreOp *batch = s->ops_head, *parked = s->parked;
                s->ops_head = NULL;
                s->ops_tail = &s->ops_head;
                s->parked = NULL;
                for (StoreOp *p = parked; p; p = p->next)
                        p->taken = true;
                pthread_mutex_unlock(&s->op_lock);

                int64_t event_before = s->last_event;
                int r = batch_run(s, batch, parked);
                if (r < 0) {
                        /* Nothing of this batch is durable: fail every operation
                         * that thought it had succeeded; parked ones wait on
                         * (whatever they found is still queued). */
                        for (StoreOp *op = batch; op; op = op->next)
                                if (op->result >= 0)
                                        op->result = r;
                        for (StoreOp *p = parked; p; p = p->next)
                                p->result = -EAGAIN;
                        s->last_event = event_before;
                        s->dirty = (StoreDirty) {};
                } else
                        publish(s, s->last_event);

                pthread_mutex_lock(&s->op_lock);
                s->n_commits++;
                for (StoreOp *op = batch; op; op = op->next) {
                        op->done = true;
                        s->n_ops++;
                }
                while (parked) {
                        StoreOp *p = parked;
                        parked = p->next;
                        p->taken = false;
                        if (p->result == -EAGAIN && !s->parked_shutdown) {
                                p->seen_queue = s->queue_published;
                                p->next = s->parked;
                                s->parked = p;
                                continue;
                        }
                        if (p->result == -EAGAIN)
                                p->result = -ESHUTDOWN;
                        p->done = true;
                        s->n_ops++;
                }
                pthread_cond_broadcast(&s->done_cond);
        }
        for (StoreOp *p = s->parked; p; p = p->next) {
                p->result = -ESHUTDOWN;
                p->done = true;
        }
        s->parked = NULL;
        pthread_cond_broadcast(&s->done_cond);
        pthread_mutex_unlock(&s->op_lock);
        return NULL;
}

int store_write(Store *s, StoreOpFunc func, void *userdata) {
        StoreOp op = { .func = func, .userdata = userdata };

        pthread_mutex_lock(&s->op_lock);
        if (s->stopping) {
                pthread_mutex_unlock(&s->op_lock);
                return -ESHUTDOWN;
        }
        *s->ops_tail = &op;
        s->ops_tail = &op.next;
        pthread_cond_signal(&s->op_cond);
        while (!op.done)
                pthread_cond_wait(&s->done_cond, &s->op_lock);
        pthread_mutex_unlock(&s->op_lock);
        return op.result;
}

int store_write_parked(Store *s, StoreOpFunc func, void *userdata, uint64_t seen_queue, uint64_t deadline) {
        StoreOp op = { .func = func, .userdata = userdata, .seen_queue = seen_queue };
        struct timespec ts;

        pthread_mutex_lock(&s->op_lock);
        if (s->stopping || s->parked_shutdown) {
                pthread_mutex_unlock(&s->op_lock);
                return -ESHUTDOWN;
        }
        op.next = s->parked;
        s->parked = &op;
        pthread_cond_signal(&s->op_cond);
        for (;;) {
                if (op.done)
                        break;
                uint64_t now = store_now_mono();
                if (now >= deadline && !op.taken) {
                        for (StoreOp **p = &s->parked; *p; p = &(*p)->next)
                                if (*p == &op) {
                                        *p = op.next;
                                        break;
                                }
                        op.result = -ETIMEDOUT;
                        break;
                }
                if (now >= deadline) {
                        /* In a batch right now: its commit is near. */
                        pthread_cond_wait(&s->done_cond, &s->op_lock);
                        continue;
                }
                /* done_cond runs on CLOCK_REALTIME. */
                ts = timespec_after(CLOCK_REALTIME, deadline - now);
                pthread_cond_timedwait(&s->done_cond, &s->op_lock, &ts);
        }
        pthread_mutex_unlock(&s->op_lock);
        return op.result;
}

/* ---- the read pool ---- */

int store_read_begin(Store *s, StoreConn **ret) {
        StoreConn *c;

        pthread_mutex_lock(&s->pool_lock);
        c = s->pool;
        if (c)
                s->pool = c->next_free;
        pthread_mutex_unlock(&s->pool_lock);
        if (!c) {
                int r = conn_open(s->path, false, &c);
                if (r < 0)
                        return r;
        }
        *ret = c;
        return 0;
}

void store_read_end(Store *s, StoreConn *c) {
        if (!c)
                return;
        /* Ends any implicit read transaction so the WAL can be checkpointed. */
        conn_reset_all(c);
        pthread_mutex_lock(&s->pool_lock);
        c->next_free = s->pool;
        s->pool = c;
        pthread_mutex_unlock(&s->pool_lock);
}

/* ---- change notification ---- */

void store_gen_get(Store *s, StoreGen *ret) {
        pthread_mutex_lock(&s->gen_lock);
        *ret = s->gen;
        pthread_mutex_unlock(&s->gen_lock);
}

static bool gen_moved(const StoreGen *now, const StoreGen *seen, unsigned mask) {
        return ((mask & STORE_WAIT_QUEUE) && now->queue != seen->queue) ||
               ((mask & STORE_WAIT_EVENTS) && now->events != seen->events) ||
               ((mask & STORE_WAIT_ATTEMPTS) && now->attempts != seen->attempts) ||
               ((mask & STORE_WAIT_LOGS) && now->logs != seen->logs);
}

int store_wait(Store *s, const StoreGen *seen, unsigned mask, uint64_t deadline) {
        struct timespec ts;
        int r = 0;

        /* Condition variables wait on CLOCK_REALTIME by default; convert the
         * monotonic deadline into a relative one. */
        pthread_mutex_lock(&s->gen_lock);
        for (;;) {
                if (s->woken_for_good) {
                        r = -ESHUTDOWN;
                        break;
                }
                if (gen_moved(&s->gen, seen, mask))
                        break;
                uint64_t now = store_now_mono();
                if (now >= deadline) {
                        r = -ETIMEDOUT;
                        break;
                }
                ts = timespec_after(CLOCK_MONOTONIC, deadline - now);
                pthread_cond_timedwait(&s->gen_cond, &s->gen_lock, &ts);
        }
        pthread_mutex_unlock(&s->gen_lock);
        return r;
}

void store_notify_logs(Store *s) {
        pthread_mutex_lock(&s->gen_lock);
        s->gen.logs++;
        pthread_cond_broadcast(&s->gen_cond);
        pthread_mutex_unlock(&s->gen_lock);
}

void store_wake_all(Store *s) {
        pthread_mutex_lock(&s->gen_lock);
        s->woken_for_good = true;
        pthread_cond_broadcast(&s->gen_cond);
        pthread_mutex_unlock(&s->gen_lock);

        /* Parked operations the writer does not hold end now; those it does
         * end with its batch. */
        pthread_mutex_lock(&s->op_lock);
        s->parked_shutdown = true;
        for (StoreOp *p = s->parked; p; p = p->next) {
                p->result = -ESHUTDOWN;
                p->done = true;
        }
        s->parked = NULL;
        pthread_cond_broadcast(&s->done_cond);
        pthread_mutex_unlock(&s->op_lock);
}

/* ---- open and close ---- */

static int store_init_sync(Store *s) {
        pthread_condattr_t attr;

        pthread_mutex_init(&s->op_lock, NULL);
        pthread_mutex_init(&s->pool_lock, NULL);
        pthread_mutex_init(&s->gen_lock, NULL);
        pthread_cond_init(&s->op_cond, NULL);
        pthread_cond_init(&s->done_cond, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&s->gen_cond, &attr);
        pthread_condattr_destroy(&attr);
        s->ops_tail = &s->ops_head;
        return 0;
}

int store_open(const char *path, const StoreOptions *opts, Store **ret) {
        _cleanup_store_ Store *s = NULL;
        int r;

        s = calloc(1, sizeof(Store));
        if (!s)
                return -ENOMEM;
        store_init_sync(s);
        s->path = strdup(path);
        if (!s->path)
                return -ENOMEM;
        s->opts.lease_ttl_usec = opts && opts->lease_ttl_usec ? opts->lease_ttl_usec : 30000000ULL;
        s->opts.max_infra_retries = opts && opts->max_infra_retries ? opts->max_infra_retries : 3;
        s->opts.offline = opts && opts->offline;

        r = conn_open(path, true, &s->writer);
        if (r < 0)
                return r;
        r = store_migrate(s->writer);
        conn_reset_all(s->writer);
        if (r < 0)
                return r;
        r = pthread_create(&s->writer_thread, NULL, writer_main, s);
        if (r != 0)
                return -r;
        s->writer_started = true;
        r = store_write(s, store_rebase_leases, NULL);
        if (r < 0)
                return r;
        s->gen.events = (uint64_t) s->last_event;
        *ret = TAKE_PTR(s);
        return 0;
}

Store *store_close(Store *s) {
        if (!s)
                return NULL;
        store_wake_all(s);
        if (s->writer_started) {
                pthread_mutex_lock(&s->op_lock);
                s->stopping = true;
                pthread_cond_signal(&s->op_cond);
                pthread_mutex_unlock(&s->op_lock);
                pthread_join(s->writer_thread, NULL);
        }
        conn_free(s->writer);
        while (s->pool) {
                StoreConn *c = s->pool;
                s->pool = c->next_free;
                conn_free(c);
        }
        free(s->path);
        free(s);
        return NULL;
}
