/* SPDX-License-Identifier: MIT */
/* The worker protocol in the SQLite store: claims, leases with fencing,
 * heartbeats, finishing an attempt and expiring leases (DESIGN §3). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "store-internal.h"
#include "taskstate.h"

#define RETRY_ON_FAILED 1
#define RETRY_ON_TIMED_OUT 2

void store_claim_done(StoreClaim *c) {
        if (!c)
                return;
        free(c->task_name);
        free(c->spec);
        free(c->task_env);
        *c = (StoreClaim) {};
}

/* Every claim and heartbeat proves the worker alive. */
static int worker_touch(Store *s, StoreConn *c, int64_t worker_id) {
        sqlite3_stmt *st;
        bool was_offline;
        int r;

        r = conn_row_by_id(c, "SELECT state FROM workers WHERE id = ?", worker_id, &st);
        if (r < 0)
                return r;
        was_offline = streq(column_text(st, 0), "offline");
        sqlite3_reset(st);
        r = conn_prepare(c, "UPDATE workers SET last_seen = ?, state = 'online' WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, (int64_t) store_now_mono());
        sqlite3_bind_int64(st, 2, worker_id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        return was_offline ? store_event_add(s, c, "worker", worker_id, 0, "online", NULL) : 0;
}

typedef struct WorkerBeatArgs {
        int64_t worker_id;
        const char *images; /* JSON text, or NULL */
} WorkerBeatArgs;

static int worker_heartbeat_op(Store *s, StoreConn *c, void *userdata) {
        WorkerBeatArgs *a = userdata;
        sqlite3_stmt *st;
        int r;

        r = worker_touch(s, c, a->worker_id);
        if (r < 0 || !a->images)
                return r;
        r = conn_prepare(c, "UPDATE workers SET info = json_set(info, '$.images', json(?)) WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, a->images, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, a->worker_id);
        r = conn_step(c, st);
        return r < 0 ? r : 0;
}

int store_worker_heartbeat(Store *s, int64_t worker_id, json_t *images) {
        _cleanup_free_ char *text = images ? json_dumps(images, JSON_COMPACT) : NULL;
        WorkerBeatArgs a = { .worker_id = worker_id, .images = text };

        if (images && !text)
                return -ENOMEM;
        return store_write(s, worker_heartbeat_op, &a);
}

/* Labels a task needs ⊆ labels the worker has. */
static bool labels_match(const char *needed_text, json_t *have) {
        json_t *needed, *v;
        const char *k;
        bool ok = true;

        if (!needed_text || streq(needed_text, "{}"))
                return true;
        needed = json_loads(needed_text, 0, NULL);
        if (!needed)
                return false;
        json_object_foreach(needed, k, v) {
                json_t *w = json_object_get(have, k);
                if (!w || !json_equal(v, w)) {
                        ok = false;
                        break;
                }
        }
        json_decref(needed);
        return ok;
}

typedef struct ClaimArgs {
        int64_t worker_id;
        json_t *labels;
        unsigned free_slots;
        bool found;
        StoreClaim claim;
        char job_state[16];
} ClaimArgs;

static int claim_find(StoreConn *c, ClaimArgs *a) {
        sqlite3_stmt *st;
        int64_t after = 0;
        int r;

        r = conn_prepare(c, "SELECT t.id, t.job_id, t.slots, t.labels, t.name, t.env, t.fence,"
                            " t.n_attempts, j.state FROM tasks t JOIN jobs j ON j.id = t.job_id"
                            " WHERE t.state = 'queued' AND t.id > ? ORDER BY t.id LIMIT 256", &st);
        if (r < 0)
                return r;
        for (;;) {
                unsigned rows = 0;
                sqlite3_reset(st);
                sqlite3_bind_int64(st, 1, after);
                while ((r = conn_step(c, st)) > 0) {
                        rows++;
                        after = sqlite3_column_int64(st, 0);
                        unsigned slots = (unsigned) sqlite3_column_int(st, 2);
                        if (slots > a->free_slots || !labels_match(column_text(st, 3), a->labels))
                                continue;
                        StoreClaim *cl = &a->claim;
                        cl->task_id = after;
                        cl->job_id = sqlite3_column_int64(st, 1);
                        cl->slots = slots;
                        cl->task_name = strdup(column_text(st, 4));
                        cl->task_env = strdup(column_text(st, 5));
                        cl->fence = sqlite3_column_int64(st, 6) + 1;
                        cl->attempt_number = (unsigned) sqlite3_column_int(st, 7) + 1;
                        snprintf(a->job_state, sizeof a->job_state, "%s", column_text(st, 8));
                        sqlite3_reset(st);
                        if (!cl->task_name || !cl->task_env)
                                return -ENOMEM;
                        a->found = true;
                        return 0;
                }
                if (r < 0)
                        return r;
                if (rows < 256)
                        return 0;
        }
}

static int claim_take(Store *s, StoreConn *c, ClaimArgs *a) {
        StoreClaim *cl = &a->claim;
        sqlite3_stmt *st;
        int r;

        r = conn_prepare(c, "INSERT INTO attempts(task_id, job_id, number, worker_id, fence, state,"
                            " expires, started) VALUES (?, ?, ?, ?, ?, 'leased', ?, ?)", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, cl->task_id);
        sqlite3_bind_int64(st, 2, cl->job_id);
        sqlite3_bind_int(st, 3, (int) cl->attempt_number);
        sqlite3_bind_int64(st, 4, a->worker_id);
        sqlite3_bind_int64(st, 5, cl->fence);
        sqlite3_bind_int64(st, 6, (int64_t) (store_now_mono() + s->opts.lease_ttl_usec));
        sqlite3_bind_int64(st, 7, store_now_wall());
        r = conn_step(c, st);
        if (r < 0)
                return r;
        cl->attempt_id = conn_last_rowid(c);

        r = conn_prepare(c, "UPDATE tasks SET state = 'leased', attempt = ?, fence = ?, n_attempts = ?"
                            " WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, cl->attempt_id);
        sqlite3_bind_int64(st, 2, cl->fence);
        sqlite3_bind_int(st, 3, (int) cl->attempt_number);
        sqlite3_bind_int64(st, 4, cl->task_id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        r = store_event_add(s, c, "task", cl->task_id, cl->job_id, "leased",
                            json_pack("{s:I, s:i, s:I}", "attempt", (json_int_t) cl->attempt_id,
                                      "number", (int) cl->attempt_number,
                                      "worker", (json_int_t) a->worker_id));
        if (r < 0)
                return r;
        s->dirty.attempts = true;
        if (streq(a->job_state, "queued")) {
                r = store_job_refresh_state(s, c, cl->job_id);
                if (r < 0)
                        return r;
        }
        r = conn_row_by_id(c, "SELECT spec FROM jobs WHERE id = ?", cl->job_id, &st);
        if (r < 0)
                return r;
        cl->spec = strdup(column_text(st, 0));
        sqlite3_reset(st);
        return cl->spec ? 0 : -ENOMEM;
}

static int claim_op(Store *s, StoreConn *c, void *userdata) {
        ClaimArgs *a = userdata;
        int r;

        r = worker_touch(s, c, a->worker_id);
        if (r < 0)
                return r;
        r = claim_find(c, a);
        if (r < 0 || !a->found)
                return r;
        r = claim_take(s, c, a);
        if (r < 0) {
                store_claim_done(&a->claim);
                a->found = false;
        }
        return r;
}

int store_claim(Store *s, int64_t worker_id, json_t *worker_labels, unsigned free_slots,
                StoreClaim *ret) {
        ClaimArgs a = { .worker_id = worker_id, .labels = worker_labels, .free_slots = free_slots };
        int r;

        r = store_write(s, claim_op, &a);
        if (r < 0) {
                store_claim_done(&a.claim);
                return r;
        }
        if (!a.found)
                return -EAGAIN;
        *ret = a.claim;
        return 0;
}

/* A waiting claim: finding nothing is -EAGAIN, which keeps it parked. */
static int claim_parked_op(Store *s, StoreConn *c, void *userdata) {
        ClaimArgs *a = userdata;

        store_claim_done(&a->claim);
        a->found = false;
        int r = claim_op(s, c, a);
        if (r >= 0 && !a->found)
                return -EAGAIN;
        return r;
}

int store_claim_wait(Store *s, int64_t worker_id, json_t *worker_labels, unsigned free_slots,
                     const StoreGen *seen, uint64_t deadline, StoreClaim *ret) {
        ClaimArgs a = { .worker_id = worker_id, .labels = worker_labels, .free_slots = free_slots };
        int r;

        r = store_write_parked(s, claim_parked_op, &a, seen->queue, deadline);
        if (r < 0) {
                store_claim_done(&a.claim);
                return r;
        }
        *ret = a.claim;
        return 0;
}

/* ---- attempts and leases ---- */

static int attempt_load(StoreConn *c, int64_t id, StoreAttempt *ret) {
        sqlite3_stmt *st;
        int r;

        r = conn_row_by_id(c, "SELECT a.id, a.task_id, a.job_id, a.worker_id, a.fence, a.number, a.state,"
                               " COALESCE(a.log_size, 0), t.attempt, a.expires FROM attempts a"
                               " JOIN tasks t ON t.id = a.task_id WHERE a.id = ?", id, &st);
        if (r < 0)
                return r;
        *ret = (StoreAttempt) {
                .id = sqlite3_column_int64(st, 0),
                .task_id = sqlite3_column_int64(st, 1),
                .job_id = sqlite3_column_int64(st, 2),
                .worker_id = sqlite3_column_int64(st, 3),
                .fence = sqlite3_column_int64(st, 4),
                .number = (unsigned) sqlite3_column_int(st, 5),
                .log_size = (uint64_t) sqlite3_column_int64(st, 7),
        };
        snprintf(ret->state, sizeof ret->state, "%s", column_text(st, 6));
        ret->live = (streq(ret->state, "leased") || streq(ret->state, "running")) &&
                    sqlite3_column_int64(st, 8) == ret->id;
        ret->expires = (uint64_t) sqlite3_column_int64(st, 9);
        sqlite3_reset(st);
        return 0;
}

static int lease_verify(StoreConn *c, int64_t id, int64_t fence, int64_t worker_id, StoreAttempt *ret) {
        int r = attempt_load(c, id, ret);
        if (r == -ENOENT)
                return -ESTALE;
        if (r < 0)
                return r;
        if (!ret->live || ret->fence != fence || ret->worker_id != worker_id)
                return -ESTALE;
        /* Past its expiry a lease is gone, whether or not the reaper has
         * marked the attempt lost yet. */
        if (ret->expires < store_now_mono())
                return -ESTALE;
        return 0;
}

int store_attempt_get(Store *s, int64_t attempt_id, StoreAttempt *ret) {
        StoreConn *c;
        int r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = attempt_load(c, attempt_id, ret);
        store_read_end(s, c);
        return r;
}

int store_task_latest_attempt(Store *s, int64_t task_id, StoreAttempt *ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT MAX(id) FROM attempts WHERE task_id = ?", &st);
        if (r >= 0) {
                sqlite3_bind_int64(st, 1, task_id);
                r = conn_step(c, st);
                if (r > 0 && sqlite3_column_type(st, 0) != SQLITE_NULL) {
                        int64_t id = sqlite3_column_int64(st, 0);
                        sqlite3_reset(st);
                        r = attempt_load(c, id, ret);
                } else if (r >= 0)
                        r = -ENOENT;
        }
        store_read_end(s, c);
        return r;
}

int store_lease_check(Store *s, int64_t attempt_id, int64_t fence, int64_t worker_id,
                      StoreAttempt *ret) {
        StoreConn *c;
        int r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = lease_verify(c, attempt_id, fence, worker_id, ret);
        store_read_end(s, c);
        return r;
}

typedef struct LeaseArgs {
        int64_t attempt_id, fence, worker_id;
        const char *state;
        int exit_code;
        uint64_t log_size;
        const char *reason;
        bool log_truncated;
        bool cancel;
} LeaseArgs;

static int set_task_state(Store *s, StoreConn *c, const StoreAttempt *at, const char *state, json_t *extra) {
        sqlite3_stmt *st;
        int r = conn_prepare(c, "UPDATE tasks SET state = ? WHERE id = ?", &st);
        if (r < 0) {
                json_decref(extra);
                return r;
        }
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, at->task_id);
        r = conn_step(c, st);
        if (r < 0) {
                json_decref(extra);
                return r;
        }
        return store_event_add(s, c, "task", at->task_id, at->job_id, state, extra);
}

static int heartbeat_op(Store *s, StoreConn *c, void *userdata) {
        LeaseArgs *a = userdata;
        StoreAttempt at;
        sqlite3_stmt *st;
        int r;

        r = lease_verify(c, a->attempt_id, a->fence, a->worker_id, &at);
        if (r < 0)
                return r;
        r = conn_prepare(c, "UPDATE attempts SET expires = ?, state = 'running' WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, (int64_t) (store_now_mono() + s->opts.lease_ttl_usec));
        sqlite3_bind_int64(st, 2, a->attempt_id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        if (streq(at.state, "leased")) {
                r = set_task_state(s, c, &at, "running",
                                   json_pack("{s:I}", "attempt", (json_int_t) at.id));
                if (r < 0)
                        return r;
                s->dirty.attempts = true;
        }
        r = conn_prepare(c, "SELECT cancel FROM tasks WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, at.task_id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        a->cancel = r > 0 && sqlite3_column_int(st, 0) != 0;
        sqlite3_reset(st);
        return worker_touch(s, c, a->worker_id);
}

int store_lease_heartbeat(Store *s, int64_t attempt_id, int64_t fence, int64_t worker_id,
                          bool *ret_cancel) {
        LeaseArgs a = { .attempt_id = attempt_id, .fence = fence, .worker_id = worker_id };
        int r = store_write(s, heartbeat_op, &a);
        if (r < 0)
                return r;
        if (ret_cancel)
                *ret_cancel = a.cancel;
        return 0;
}

/* Whether a finished attempt's task goes back to the queue under the job's
 * own retry policy. */
static int wants_user_retry(StoreConn *c, const StoreAttempt *at, const char *state, bool *ret) {
        sqlite3_stmt *st;
        int r = conn_row_by_id(c, "SELECT j.retry_max, j.retry_on, t.user_retries, t.cancel FROM tasks t"
                                  " JOIN jobs j ON j.id = t.job_id WHERE t.id = ?", at->task_id, &st);
        if (r < 0)
                return r;
        int max = sqlite3_column_int(st, 0), on = sqlite3_column_int(st, 1);
        int used = sqlite3_column_int(st, 2), cancel = sqlite3_column_int(st, 3);
        sqlite3_reset(st);
        bool matches = (streq(state, "failed") && (on & RETRY_ON_FAILED)) ||
                       (streq(state, "timed_out") && (on & RETRY_ON_TIMED_OUT));
        *ret = matches && !cancel && used < max;
        return 0;
}

static int requeue_task(Store *s, StoreConn *c, const StoreAttempt *at, const char *counter,
                        const char *why) {
        sqlite3_stmt *st;
        int r;

        r = conn_prepare(c, streq(counter, "user")
                                    ? "UPDATE tasks SET state = 'queued', user_retries = user_retries + 1,"
                                      " queued_at = ? WHERE id = ?"
                                    : "UPDATE tasks SET state = 'queued', infra_retries = infra_retries + 1,"
                                      " queued_at = ? WHERE id = ?",
                         &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, store_now_wall());
        sqlite3_bind_int64(st, 2, at->task_id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        s->dirty.queue = true;
        return store_event_add(s, c, "task", at->task_id, at->job_id, "queued",
                               json_pack("{s:s, s:s}", "retry", counter, "after", why));
}

/* An attempt was lost to the infrastructure (its lease expired, or its worker
 * could not run it; the attempt's row says so already): an event, and the
 * task queued again, up to max_infra_retries, if the attempt was its live one. */
static int attempt_lost(Store *s, StoreConn *c, const StoreAttempt *at, const char *reason) {
        sqlite3_stmt *st;
        int r = store_event_add(s, c, "attempt", at->id, at->job_id, "lost",
                                json_pack("{s:I, s:I, s:s}", "task", (json_int_t) at->task_id, "worker",
                                          (json_int_t) at->worker_id, "reason", reason));
        if (r < 0 || !at->live)
                return r;
        r = conn_row_by_id(c, "SELECT infra_retries, cancel FROM tasks WHERE id = ?", at->task_id, &st);
        if (r < 0)
                return r;
        unsigned used = (unsigned) sqlite3_column_int(st, 0);
        bool cancel = sqlite3_column_int(st, 1) != 0;
        sqlite3_reset(st);
        if (cancel)
                r = set_task_state(s, c, at, "cancelled", NULL);
        else if (used < s->opts.max_infra_retries)
                r = requeue_task(s, c, at, "infra", "lost");
        else
                r = set_task_state(s, c, at, "lost",
                                   json_pack("{s:s}", "reason", "infrastructure retries exhausted"));
        if (r < 0)
                return r;
        return store_job_refresh_state(s, c, at->job_id);
}

static int finish_op(Store *s, StoreConn *c, void *userdata) {
        LeaseArgs *a = userdata;
        StoreAttempt at;
        sqlite3_stmt *st;
        bool retry;
        int r;

        r = lease_verify(c, a->attempt_id, a->fence, a->worker_id, &at);
        if (r < 0)
                return r;
        r = conn_prepare(c, "UPDATE attempts SET state = ?, finished = ?, exit_code = ?, log_size = ?,"
                            " reason = ?, log_truncated = ? WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, a->state, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, store_now_wall());
        sqlite3_bind_int(st, 3, a->exit_code);
        sqlite3_bind_int64(st, 4, (int64_t) a->log_size);
        if (a->reason)
                sqlite3_bind_text(st, 5, a->reason, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, 5);
        sqlite3_bind_int(st, 6, a->log_truncated);
        sqlite3_bind_int64(st, 7, a->attempt_id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        s->dirty.attempts = true;

        if (streq(a->state, "lost")) {
                /* The worker could not run it, through no fault of the job's. */
                r = attempt_lost(s, c, &at, a->reason ? a->reason : "given back by its worker");
                return r < 0 ? r : worker_touch(s, c, a->worker_id);
        }
        r = wants_user_retry(c, &at, a->state, &retry);
        if (r < 0)
                return r;
        r = conn_prepare(c, "UPDATE tasks SET exit_code = ? WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int(st, 1, a->exit_code);
        sqlite3_bind_int64(st, 2, at.task_id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        json_t *ev = json_pack("{s:I, s:i}", "attempt", (json_int_t) at.id, "exit_code", a->exit_code);
        if (ev && a->reason)
                json_object_set_new(ev, "reason", json_string(a->reason));
        if (ev && a->log_truncated)
                json_object_set_new(ev, "log_truncated", json_true());
        r = set_task_state(s, c, &at, a->state, ev);
        if (r < 0)
                return r;
        if (retry) {
                r = requeue_task(s, c, &at, "user", a->state);
                if (r < 0)
                        return r;
        }
        r = store_job_refresh_state(s, c, at.job_id);
        if (r < 0)
                return r;
        return worker_touch(s, c, a->worker_id);
}

int store_lease_finish(Store *s, int64_t attempt_id, int64_t fence, int64_t worker_id, const StoreFinish *f) {
        LeaseArgs a = { .attempt_id = attempt_id, .fence = fence, .worker_id = worker_id,
                        .state = f->state, .exit_code = f->exit_code, .log_size = f->log_size,
                        .reason = f->reason, .log_truncated = f->log_truncated };
        TaskState ts = task_state_from_string(f->state);

        if (ts < 0 || !task_state_is_reportable(ts))
                return -EINVAL;
        return store_write(s, finish_op, &a);
}

/* ---- expiry ---- */

typedef struct ExpireArgs {
        unsigned n;
} ExpireArgs;

static int expire_one(Store *s, StoreConn *c, int64_t attempt_id) {
        StoreAttempt at;
        sqlite3_stmt *st;
        int r;

        r = attempt_load(c, attempt_id, &at);
        if (r < 0)
                return r;
        r = conn_prepare(c, "UPDATE attempts SET state = 'lost', finished = ?,"
                            " reason = 'lease expired' WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, store_now_wall());
        sqlite3_bind_int64(st, 2, attempt_id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        return attempt_lost(s, c, &at, "lease expired");
}

static int expire_op(Store *s, StoreConn *c, void *userdata) {
        ExpireArgs *a = userdata;
        sqlite3_stmt *st;
        int r;

        r = conn_prepare(c, "SELECT id FROM attempts WHERE state IN ('leased', 'running') AND expires < ?"
                            " ORDER BY id LIMIT 1000", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, (int64_t) store_now_mono());
        json_t *ids = json_array();
        while ((r = conn_step(c, st)) > 0)
                json_array_append_new(ids, json_integer(sqlite3_column_int64(st, 0)));
        sqlite3_reset(st);
        for (size_t i = 0; r >= 0 && i < json_array_size(ids); i++) {
                r = expire_one(s, c, json_integer_value(json_array_get(ids, i)));
                a->n++;
        }
        json_decref(ids);
        if (a->n > 0)
                s->dirty.attempts = true;
        return r < 0 ? r : 0;
}

int store_leases_expire(Store *s, unsigned *ret_n) {
        ExpireArgs a = {};
        int r = store_write(s, expire_op, &a);
        if (r < 0)
                return r;
        if (ret_n)
                *ret_n = a.n;
        return 0;
}
