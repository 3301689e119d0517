/* SPDX-License-Identifier: MIT */
/* Jobs and tasks in the SQLite store: submit, read, list, cancel, retry, and
 * the event log every state change appends to. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "macro.h"
#include "store-internal.h"
#include "taskstate.h"

#define RETRY_ON_FAILED 1
#define RETRY_ON_TIMED_OUT 2

static json_t *json_time(int64_t usec) {
        char buf[64];
        struct tm tm;
        time_t t = (time_t) (usec / 1000000);

        if (usec <= 0 || !gmtime_r(&t, &tm))
                return json_null();
        size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, sizeof buf - n, ".%03dZ", (int) ((usec / 1000) % 1000));
        return json_string(buf);
}

static json_t *column_time(sqlite3_stmt *st, int col) {
        if (sqlite3_column_type(st, col) == SQLITE_NULL)
                return json_null();
        return json_time(sqlite3_column_int64(st, col));
}

static json_t *column_int_or_null(sqlite3_stmt *st, int col) {
        if (sqlite3_column_type(st, col) == SQLITE_NULL)
                return json_null();
        return json_integer(sqlite3_column_int64(st, col));
}

int store_event_add(Store *s, StoreConn *c, const char *type, int64_t id, int64_t job_id,
                    const char *state, json_t *extra) {
        sqlite3_stmt *st;
        int64_t now = store_now_wall();
        int r;

        json_t *ev = json_pack("{s:s, s:I, s:s, s:o}", "type", type, "id", (json_int_t) id, "state",
                               state, "time", json_time(now));
        if (!ev) {
                json_decref(extra);
                return -ENOMEM;
        }
        if (job_id > 0)
                json_object_set_new(ev, "job", json_integer(job_id));
        if (extra) {
                json_object_update(ev, extra);
                json_decref(extra);
        }
        char *text = json_dumps(ev, JSON_COMPACT);
        json_decref(ev);
        if (!text)
                return -ENOMEM;
        r = conn_prepare(c, "INSERT INTO events(time, data) VALUES (?, ?)", &st);
        if (r >= 0) {
                sqlite3_bind_int64(st, 1, now);
                sqlite3_bind_text(st, 2, text, -1, SQLITE_TRANSIENT);
                r = conn_step(c, st);
        }
        free(text);
        if (r < 0)
                return r;
        s->last_event = conn_last_rowid(c);
        return 0;
}

/* The common case without counting every task: a running job with a task
 * still leased or running stays running. */
static int job_still_running(StoreConn *c, int64_t job_id) {
        sqlite3_stmt *st;
        int r = conn_prepare(c, "SELECT state = 'running' AND EXISTS (SELECT 1 FROM tasks WHERE job_id = ?1"
                                " AND state IN ('leased', 'running')) FROM jobs WHERE id = ?1", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, job_id);
        r = conn_step(c, st);
        if (r <= 0)
                return r;
        r = sqlite3_column_int(st, 0);
        sqlite3_reset(st);
        return r;
}

int store_job_refresh_state(Store *s, StoreConn *c, int64_t job_id) {
        unsigned counts[_TASK_STATE_MAX] = {};
        sqlite3_stmt *st;
        int r;

        r = job_still_running(c, job_id);
        if (r != 0)
                return r < 0 ? r : 0;
        r = conn_prepare(c, "SELECT state, COUNT(*) FROM tasks WHERE job_id = ? GROUP BY state", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, job_id);
        while ((r = conn_step(c, st)) > 0) {
                TaskState ts = task_state_from_string(column_text(st, 0));
                if (ts >= 0)
                        counts[ts] += (unsigned) sqlite3_column_int(st, 1);
        }
        if (r < 0)
                return r;
        const char *state = job_state_derive(counts);

        r = conn_prepare(c, "UPDATE jobs SET state = ?, updated = ? WHERE id = ? AND state != ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, store_now_wall());
        sqlite3_bind_int64(st, 3, job_id);
        sqlite3_bind_text(st, 4, state, -1, SQLITE_STATIC);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        if (conn_changes(c) == 0)
                return 0;
        return store_event_add(s, c, "job", job_id, 0, state, NULL);
}

/* ---- submit ---- */

typedef struct SubmitArgs {
        json_t *spec, *tasks;
        int64_t token_id;
        int64_t ret_id;
} SubmitArgs;

static void spec_retry_policy(json_t *spec, int *ret_max, int *ret_on) {
        json_t *retry = json_object_get(spec, "retry"), *on, *v;
        size_t i;

        *ret_max = 0;
        *ret_on = RETRY_ON_FAILED | RETRY_ON_TIMED_OUT;
        if (!json_is_object(retry))
                return;
        *ret_max = (int) json_integer_value(json_object_get(retry, "max"));
        on = json_object_get(retry, "on");
        if (!json_is_array(on))
                return;
        *ret_on = 0;
        json_array_foreach(on, i, v) {
                if (json_is_string(v) && streq(json_string_value(v), "failed"))
                        *ret_on |= RETRY_ON_FAILED;
                if (json_is_string(v) && streq(json_string_value(v), "timed_out"))
                        *ret_on |= RETRY_ON_TIMED_OUT;
        }
}

static int submit_task(Store *s, StoreConn *c, int64_t job_id, size_t idx, json_t *task,
                       const char *labels) {
        sqlite3_stmt *st;
        const char *name = json_string_value(json_object_get(task, "name"));
        json_int_t slots = json_integer_value(json_object_get(task, "slots"));
        json_t *env = json_object_get(task, "env");
        int r;

        char *env_text = json_is_object(env) ? json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
        if (!env_text)
                return -ENOMEM;
        r = conn_prepare(c, "INSERT INTO tasks(job_id, idx, name, slots, env, labels, state, queued_at)"
                            " VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)", &st);
        if (r >= 0) {
                sqlite3_bind_int64(st, 1, job_id);
                sqlite3_bind_int64(st, 2, (int64_t) idx);
                sqlite3_bind_text(st, 3, name ? name : "default", -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(st, 4, slots > 0 ? slots : 1);
                sqlite3_bind_text(st, 5, env_text, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 6, labels, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(st, 7, store_now_wall());
                r = conn_step(c, st);
        }
        free(env_text);
        if (r < 0)
                return r;
        int64_t task_id = conn_last_rowid(c);
        return store_event_add(s, c, "task", task_id, job_id, "queued",
                               json_pack("{s:s}", "name", name ? name : "default"));
}

static int submit_op(Store *s, StoreConn *c, void *userdata) {
        SubmitArgs *a = userdata;
        _cleanup_free_ char *spec_text = NULL, *labels = NULL;
        sqlite3_stmt *st;
        json_t *task;
        int retry_max, retry_on, r;
        size_t i;

        const char *name = json_string_value(json_object_get(a->spec, "name"));
        json_t *lab = json_object_get(a->spec, "labels");
        spec_text = json_dumps(a->spec, JSON_COMPACT);
        labels = json_is_object(lab) ? json_dumps(lab, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
        if (!spec_text || !labels)
                return -ENOMEM;
        spec_retry_policy(a->spec, &retry_max, &retry_on);

        r = conn_prepare(c, "INSERT INTO jobs(name, state, spec, labels, retry_max, retry_on, token_id,"
                            " created, updated) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)", &st);
        if (r < 0)
                return r;
        int64_t now = store_now_wall();
        sqlite3_bind_text(st, 1, name ? name : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, spec_text, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, labels, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 4, retry_max);
        sqlite3_bind_int(st, 5, retry_on);
        sqlite3_bind_int64(st, 6, a->token_id);
        sqlite3_bind_int64(st, 7, now);
        sqlite3_bind_int64(st, 8, now);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        a->ret_id = conn_last_rowid(c);
        r = store_event_add(s, c, "job", a->ret_id, 0, "queued", json_pack("{s:s}", "name", name ? name : ""));
        if (r < 0)
                return r;
        json_array_foreach(a->tasks, i, task) {
                r = submit_task(s, c, a->ret_id, i, task, labels);
                if (r < 0)
                        return r;
        }
        s->dirty.queue = true;
        return 0;
}

int store_job_submit(Store *s, json_t *spec, json_t *tasks, int64_t token_id, int64_t *ret_id) {
        SubmitArgs a = { .spec = spec, .tasks = tasks, .token_id = token_id };
        int r;

        if (!json_is_array(tasks) || json_array_size(tasks) == 0)
                return -EINVAL;
        r = store_write(s, submit_op, &a);
        if (r < 0)
                return r;
        *ret_id = a.ret_id;
        return 0;
}

/* ---- reads ---- */

static json_t *attempt_row_json(sqlite3_stmt *st) {
        /* id, number, worker_id, fence, state, started, finished, exit_code, log_size, reason,
         * (task_id), log_truncated */
        return json_pack("{s:I, s:i, s:I, s:I, s:s, s:o, s:o, s:o, s:o, s:o, s:b}",
                         "id", (json_int_t) sqlite3_column_int64(st, 0),
                         "number", sqlite3_column_int(st, 1),
                         "worker", (json_int_t) sqlite3_column_int64(st, 2),
                         "fence", (json_int_t) sqlite3_column_int64(st, 3),
                         "state", column_text(st, 4),
                         "started", column_time(st, 5),
                         "finished", column_time(st, 6),
                         "exit_code", column_int_or_null(st, 7),
                         "log_size", column_int_or_null(st, 8),
                         "reason", sqlite3_column_type(st, 9) == SQLITE_NULL ? json_null()
                                                                           : json_string(column_text(st, 9)),
                         "log_truncated", sqlite3_column_int(st, 11) != 0);
}

#define TASK_COLUMNS "id, job_id, idx, name, slots, env, state, user_retries, infra_retries, cancel, exit_code"

static json_t *task_row_json(sqlite3_stmt *st) {
        return json_pack("{s:I, s:I, s:i, s:s, s:i, s:o, s:s, s:i, s:i, s:b, s:o, s:[]}",
                         "id", (json_int_t) sqlite3_column_int64(st, 0),
                         "job", (json_int_t) sqlite3_column_int64(st, 1),
                         "index", sqlite3_column_int(st, 2),
                         "name", column_text(st, 3),
                         "slots", sqlite3_column_int(st, 4),
                         "env", column_json(st, 5),
                         "state", column_text(st, 6),
                         "user_retries", sqlite3_column_int(st, 7),
                         "infra_retries", sqlite3_column_int(st, 8),
                         "cancel_requested", sqlite3_column_int(st, 9) != 0,
                         "exit_code", column_int_or_null(st, 10),
                         "attempts");
}

/* Adds each attempt to its task in tasks (an array ordered by task id). */
static int attach_attempts(StoreConn *c, const char *sql, int64_t key, json_t *tasks) {
        sqlite3_stmt *st;
        size_t ti = 0;
        int r;

        r = conn_prepare(c, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, key);
        while ((r = conn_step(c, st)) > 0) {
                int64_t task_id = sqlite3_column_int64(st, 10);
                while (ti < json_array_size(tasks) &&
                       json_integer_value(json_object_get(json_array_get(tasks, ti), "id")) != task_id)
                        ti++;
                if (ti >= json_array_size(tasks))
                        break;
                json_array_append_new(json_object_get(json_array_get(tasks, ti), "attempts"),
                                      attempt_row_json(st));
        }
        return r < 0 ? r : 0;
}

#define ATTEMPT_COLUMNS \
        "id, number, worker_id, fence, state, started, finished, exit_code, log_size, reason, task_id, log_truncated"

static int job_load(StoreConn *c, int64_t id, json_t **ret) {
        sqlite3_stmt *st;
        json_t *job, *tasks;
        int r;

        r = conn_row_by_id(c, "SELECT id, name, state, spec, created, updated FROM jobs WHERE id = ?", id, &st);
        if (r < 0)
                return r;
        job = json_pack("{s:I, s:s, s:s, s:o, s:o, s:o}", "id", (json_int_t) sqlite3_column_int64(st, 0),
                        "name", column_text(st, 1), "state", column_text(st, 2),
                        "spec", column_json(st, 3), "created", column_time(st, 4),
                        "updated", column_time(st, 5));
        if (!job)
                return -ENOMEM;
        tasks = json_array();
        json_object_set_new(job, "tasks", tasks);
        r = conn_prepare(c, "SELECT " TASK_COLUMNS " FROM tasks WHERE job_id = ? ORDER BY id", &st);
        if (r >= 0) {
                sqlite3_bind_int64(st, 1, id);
                while ((r = conn_step(c, st)) > 0)
                        json_array_append_new(tasks, task_row_json(st));
        }
        if (r >= 0)
                r = attach_attempts(c, "SELECT " ATTEMPT_COLUMNS " FROM attempts WHERE job_id = ?"
                                       " ORDER BY task_id, number", id, tasks);
        if (r < 0) {
                json_decref(job);
                return r;
        }
        *ret = job;
        return 0;
}

int store_job_get(Store *s, int64_t id, json_t **ret) {
        StoreConn *c;
        int r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = job_load(c, id, ret);
        store_read_end(s, c);
        return r;
}

static int task_load(StoreConn *c, int64_t id, json_t **ret) {
        sqlite3_stmt *st;
        json_t *tasks;
        int r;

        r = conn_row_by_id(c, "SELECT " TASK_COLUMNS " FROM tasks WHERE id = ?", id, &st);
        if (r < 0)
                return r;
        tasks = json_pack("[o]", task_row_json(st));
        r = attach_attempts(c, "SELECT " ATTEMPT_COLUMNS " FROM attempts WHERE task_id = ?"
                               " ORDER BY number", id, tasks);
        if (r < 0) {
                json_decref(tasks);
                return r;
        }
        *ret = json_incref(json_array_get(tasks, 0));
        json_decref(tasks);
        return 0;
}

int store_task_get(Store *s, int64_t id, json_t **ret) {
        StoreConn *c;
        int r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = task_load(c, id, ret);
        store_read_end(s, c);
        return r;
}

int store_job_list(Store *s, const StoreJobFilter *f, json_t **ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        unsigned limit = f->limit ? MIN(f->limit, 500u) : 50;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT id, name, state, created, updated,"
                            " (SELECT COUNT(*) FROM tasks WHERE job_id = jobs.id) FROM jobs"
                            " WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR name = ?2)"
                            " AND (?3 = 0 OR id < ?3) ORDER BY id DESC LIMIT ?4", &st);
        if (r < 0)
                goto finish;
        if (f->state)
                sqlite3_bind_text(st, 1, f->state, -1, SQLITE_STATIC);
        if (f->name)
                sqlite3_bind_text(st, 2, f->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, f->before);
        sqlite3_bind_int64(st, 4, limit + 1);
        json_t *jobs = json_array();
        json_t *next = json_null();
        while ((r = conn_step(c, st)) > 0) {
                if (json_array_size(jobs) == limit) {
                        json_decref(next);
                        next = json_integer(json_integer_value(json_object_get(
                                json_array_get(jobs, limit - 1), "id")));
                        break;
                }
                json_array_append_new(jobs, json_pack(
                        "{s:I, s:s, s:s, s:o, s:o, s:i}", "id", (json_int_t) sqlite3_column_int64(st, 0),
                        "name", column_text(st, 1), "state", column_text(st, 2),
                        "created", column_time(st, 3), "updated", column_time(st, 4),
                        "tasks", sqlite3_column_int(st, 5)));
        }
        if (r >= 0) {
                *ret = json_pack("{s:o, s:o}", "jobs", jobs, "next", next);
                r = 0;
        } else {
                json_decref(jobs);
                json_decref(next);
        }
finish:
        store_read_end(s, c);
        return r;
}

/* ---- cancel and retry ---- */

static int job_exists(StoreConn *c, int64_t id, char ret_state[static 16]) {
        sqlite3_stmt *st;
        int r = conn_row_by_id(c, "SELECT state FROM jobs WHERE id = ?", id, &st);
        if (r < 0)
                return r;
        snprintf(ret_state, 16, "%s", column_text(st, 0));
        return 0;
}

/* Moves every task of job in one of the from-states to to, with an event each. */
static int tasks_move(Store *s, StoreConn *c, int64_t job_id, const char *from_sql, const char *update_sql,
                      const char *to, unsigned *ret_n) {
        sqlite3_stmt *st, *up;
        int r;
        unsigned n = 0;

        r = conn_prepare(c, from_sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, job_id);
        /* Collect first: the update must not run under the open SELECT. */
        json_t *ids = json_array();
        while ((r = conn_step(c, st)) > 0)
                json_array_append_new(ids, json_integer(sqlite3_column_int64(st, 0)));
        sqlite3_reset(st);
        for (size_t i = 0; r >= 0 && i < json_array_size(ids); i++) {
                int64_t id = json_integer_value(json_array_get(ids, i));
                r = conn_prepare(c, update_sql, &up);
                if (r < 0)
                        break;
                sqlite3_bind_int64(up, 1, id);
                sqlite3_bind_int64(up, 2, store_now_wall());
                r = conn_step(c, up);
                if (r >= 0)
                        r = store_event_add(s, c, "task", id, job_id, to, NULL);
                n++;
        }
        json_decref(ids);
        if (r < 0)
                return r;
        if (ret_n)
                *ret_n = n;
        return 0;
}

typedef struct JobArgs {
        int64_t id;
        unsigned n;
} JobArgs;

static int cancel_op(Store *s, StoreConn *c, void *userdata) {
        JobArgs *a = userdata;
        sqlite3_stmt *st;
        char state[16];
        int r;

        r = job_exists(c, a->id, state);
        if (r < 0)
                return r;
        r = tasks_move(s, c, a->id, "SELECT id FROM tasks WHERE job_id = ? AND state = 'queued'",
                       "UPDATE tasks SET state = 'cancelled', queued_at = ?2 WHERE id = ?1", "cancelled",
                       NULL);
        if (r < 0)
                return r;
        r = conn_prepare(c, "UPDATE tasks SET cancel = 1 WHERE job_id = ? AND state IN ('leased', 'running')",
                         &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, a->id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        return store_job_refresh_state(s, c, a->id);
}

int store_job_cancel(Store *s, int64_t id) {
        JobArgs a = { .id = id };
        return store_write(s, cancel_op, &a);
}

static int retry_op(Store *s, StoreConn *c, void *userdata) {
        JobArgs *a = userdata;
        char state[16];
        int r;

        r = job_exists(c, a->id, state);
        if (r < 0)
                return r;
        if (streq(state, "queued") || streq(state, "running"))
                return -EBUSY;
        r = tasks_move(s, c, a->id,
                       "SELECT id FROM tasks WHERE job_id = ? AND state IN ('failed', 'timed_out', 'lost', 'cancelled')",
                       "UPDATE tasks SET state = 'queued', cancel = 0, user_retries = 0, infra_retries = 0,"
                       " exit_code = NULL, queued_at = ?2 WHERE id = ?1",
                       "queued", &a->n);
        if (r < 0)
                return r;
        if (a->n > 0)
                s->dirty.queue = true;
        return store_job_refresh_state(s, c, a->id);
}

int store_job_retry(Store *s, int64_t id, unsigned *ret_n) {
        JobArgs a = { .id = id };
        int r = store_write(s, retry_op, &a);
        if (r < 0)
                return r;
        if (ret_n)
                *ret_n = a.n;
        return 0;
}

/* ---- events ---- */

int store_events_since(Store *s, int64_t after, unsigned limit, json_t **ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT seq, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?", &st);
        if (r >= 0) {
                json_t *list = json_array();
                sqlite3_bind_int64(st, 1, after);
                sqlite3_bind_int64(st, 2, limit ? limit : 1000);
                while ((r = conn_step(c, st)) > 0) {
                        json_t *ev = column_json(st, 1);
                        if (!json_is_object(ev)) {
                                json_decref(ev);
                                continue;
                        }
                        json_object_set_new(ev, "seq", json_integer(sqlite3_column_int64(st, 0)));
                        json_array_append_new(list, ev);
                }
                if (r >= 0) {
                        *ret = list;
                        r = 0;
                } else
                        json_decref(list);
        }
        store_read_end(s, c);
        return r;
}
