/* SPDX-License-Identifier: MIT */
/* Tokens, workers, secrets, artifacts and queue statistics in the SQLite
 * store. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "store-internal.h"

/* ---- tokens ---- */

typedef struct TokenArgs {
        const char *kind, *name;
        const uint8_t *hash;
        int64_t worker_id, id;
} TokenArgs;

static int token_insert(StoreConn *c, TokenArgs *a) {
        sqlite3_stmt *st;
        int r = conn_prepare(c, "INSERT INTO tokens(kind, name, hash, worker_id, created)"
                                " VALUES (?, ?, ?, ?, ?)", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, a->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, a->name ? a->name : "", -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, a->hash, STORE_HASH_SIZE, SQLITE_STATIC);
        if (a->worker_id > 0)
                sqlite3_bind_int64(st, 4, a->worker_id);
        sqlite3_bind_int64(st, 5, store_now_wall());
        r = conn_step(c, st);
        if (r < 0)
                return r;
        a->id = conn_last_rowid(c);
        return 0;
}

static int token_create_op(Store *s, StoreConn *c, void *userdata) {
        return token_insert(c, userdata);
}

int store_token_create(Store *s, const char *kind, const char *name,
                       const uint8_t hash[STORE_HASH_SIZE], int64_t worker_id, int64_t *ret_id) {
        TokenArgs a = { .kind = kind, .name = name, .hash = hash, .worker_id = worker_id };
        int r = store_write(s, token_create_op, &a);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = a.id;
        return 0;
}

int store_token_lookup(Store *s, const uint8_t hash[STORE_HASH_SIZE], StoreToken *ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT id, kind, COALESCE(worker_id, 0), hash FROM tokens"
                            " WHERE hash = ? AND revoked = 0", &st);
        if (r >= 0) {
                sqlite3_bind_blob(st, 1, hash, STORE_HASH_SIZE, SQLITE_STATIC);
                r = conn_step(c, st);
                if (r > 0) {
                        ret->id = sqlite3_column_int64(st, 0);
                        snprintf(ret->kind, sizeof ret->kind, "%s", column_text(st, 1));
                        ret->worker_id = sqlite3_column_int64(st, 2);
                        if (sqlite3_column_bytes(st, 3) == STORE_HASH_SIZE)
                                memcpy(ret->hash, sqlite3_column_blob(st, 3), STORE_HASH_SIZE);
                        r = 0;
                } else if (r == 0)
                        r = -ENOENT;
        }
        store_read_end(s, c);
        return r;
}

int store_token_list(Store *s, json_t **ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT id, kind, name, COALESCE(worker_id, 0), created FROM tokens"
                            " WHERE revoked = 0 ORDER BY id", &st);
        if (r >= 0) {
                json_t *list = json_array();
                while ((r = conn_step(c, st)) > 0)
                        json_array_append_new(list, json_pack(
                                "{s:I, s:s, s:s, s:I, s:I}", "id", (json_int_t) sqlite3_column_int64(st, 0),
                                "kind", column_text(st, 1), "name", column_text(st, 2),
                                "worker", (json_int_t) sqlite3_column_int64(st, 3),
                                "created_usec", (json_int_t) sqlite3_column_int64(st, 4)));
                if (r >= 0) {
                        *ret = list;
                        r = 0;
                } else
                        json_decref(list);
        }
        store_read_end(s, c);
        return r;
}

static int token_revoke_op(Store *s, StoreConn *c, void *userdata) {
        TokenArgs *a = userdata;
        sqlite3_stmt *st;
        int r = conn_prepare(c, "UPDATE tokens SET revoked = 1 WHERE id = ? AND revoked = 0", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, a->id);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        return conn_changes(c) > 0 ? 0 : -ENOENT;
}

int store_token_revoke(Store *s, int64_t id) {
        TokenArgs a = { .id = id };
        return store_write(s, token_revoke_op, &a);
}

int store_token_count(Store *s, const char *kind, int64_t *ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT COUNT(*) FROM tokens WHERE kind = ? AND revoked = 0", &st);
        if (r >= 0) {
                sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
                r = conn_step(c, st);
                if (r > 0) {
                        *ret = sqlite3_column_int64(st, 0);
                        r = 0;
                } else if (r == 0)
                        r = -EIO;
        }
        store_read_end(s, c);
        return r;
}

/* ---- workers ---- */

typedef struct WorkerArgs {
        json_t *info;
        const uint8_t *hash;
        int64_t id;
        uint64_t max_age;
        unsigned n;
} WorkerArgs;

static int worker_register_op(Store *s, StoreConn *c, void *userdata) {
        WorkerArgs *a = userdata;
        _cleanup_free_ char *info = NULL, *labels = NULL;
        sqlite3_stmt *st;
        json_t *lab = json_object_get(a->info, "labels");
        json_int_t slots = json_integer_value(json_object_get(a->info, "slots"));
        const char *name = json_string_value(json_object_get(a->info, "name"));
        int r;

        info = json_dumps(a->info, JSON_COMPACT);
        labels = json_is_object(lab) ? json_dumps(lab, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
        if (!info || !labels)
                return -ENOMEM;
        r = conn_prepare(c, "INSERT INTO workers(name, labels, slots, info, state, registered, last_seen)"
                            " VALUES (?, ?, ?, ?, 'online', ?, ?)", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, name ? name : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, labels, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, slots > 0 ? slots : 1);
        sqlite3_bind_text(st, 4, info, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, store_now_wall());
        sqlite3_bind_int64(st, 6, (int64_t) store_now_mono());
        r = conn_step(c, st);
        if (r < 0)
                return r;
        a->id = conn_last_rowid(c);
        TokenArgs t = { .kind = "session", .name = name, .hash = a->hash, .worker_id = a->id };
        r = token_insert(c, &t);
        if (r < 0)
                return r;
        return store_event_add(s, c, "worker", a->id, 0, "online",
                               json_pack("{s:s, s:o}", "name", name ? name : "",
                                         "labels", json_is_object(lab) ? json_incref(lab) : json_object()));
}

int store_worker_register(Store *s, json_t *info, const uint8_t session_hash[STORE_HASH_SIZE],
                          int64_t *ret_id) {
        WorkerArgs a = { .info = info, .hash = session_hash };
        int r = store_write(s, worker_register_op, &a);
        if (r < 0)
                return r;
        *ret_id = a.id;
        return 0;
}

int store_worker_get_labels(Store *s, int64_t id, json_t **ret_labels, unsigned *ret_slots) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT labels, slots FROM workers WHERE id = ?", &st);
        if (r >= 0) {
                sqlite3_bind_int64(st, 1, id);
                r = conn_step(c, st);
                if (r > 0) {
                        *ret_labels = column_json(st, 0);
                        *ret_slots = (unsigned) sqlite3_column_int(st, 1);
                        r = 0;
                } else if (r == 0)
                        r = -ENOENT;
        }
        store_read_end(s, c);
        return r;
}

int store_worker_list(Store *s, json_t **ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT w.id, w.name, w.labels, w.slots, w.state, w.info,"
                            " (SELECT COUNT(*) FROM attempts a WHERE a.worker_id = w.id"
                            "  AND a.state IN ('leased', 'running')) FROM workers w ORDER BY w.id", &st);
        if (r >= 0) {
                json_t *list = json_array();
                while ((r = conn_step(c, st)) > 0)
                        json_array_append_new(list, json_pack(
                                "{s:I, s:s, s:o, s:i, s:s, s:o, s:i}",
                                "id", (json_int_t) sqlite3_column_int64(st, 0), "name", column_text(st, 1),
                                "labels", column_json(st, 2), "slots", sqlite3_column_int(st, 3),
                                "state", column_text(st, 4), "info", column_json(st, 5),
                                "running", sqlite3_column_int(st, 6)));
                if (r >= 0) {
                        *ret = list;
                        r = 0;
                } else
                        json_decref(list);
        }
        store_read_end(s, c);
        return r;
}

static int workers_reap_op(Store *s, StoreConn *c, void *userdata) {
        WorkerArgs *a = userdata;
        sqlite3_stmt *st;
        int r;
        uint64_t now = store_now_mono();

        if (now < a->max_age)
                return 0;
        r = conn_prepare(c, "UPDATE workers SET state = 'offline' WHERE state = 'online' AND last_seen < ?"
                            " RETURNING id", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, (int64_t) (now - a->max_age));
        json_t *ids = json_array();
        while ((r = conn_step(c, st)) > 0)
                json_array_append_new(ids, json_integer(sqlite3_column_int64(st, 0)));
        sqlite3_reset(st);
        for (size_t i = 0; r >= 0 && i < json_array_size(ids); i++) {
                r = store_event_add(s, c, "worker", json_integer_value(json_array_get(ids, i)), 0,
                                    "offline", NULL);
                a->n++;
        }
        json_decref(ids);
        return r < 0 ? r : 0;
}

int store_workers_reap(Store *s, uint64_t max_age_usec, unsigned *ret_n) {
        WorkerArgs a = { .max_age = max_age_usec };
        int r = store_write(s, workers_reap_op, &a);
        if (r < 0)
                return r;
        if (ret_n)
                *ret_n = a.n;
        return 0;
}

/* ---- secrets ---- */

typedef struct SecretArgs {
        const char *name;
        const void *blob;
        size_t size;
} SecretArgs;

static int secret_put_op(Store *s, StoreConn *c, void *userdata) {
        SecretArgs *a = userdata;
        sqlite3_stmt *st;
        int64_t now = store_now_wall();
        int r = conn_prepare(c, "INSERT INTO secrets(name, value, created, updated) VALUES (?1, ?2, ?3, ?3)"
                                " ON CONFLICT(name) DO UPDATE SET value = ?2, updated = ?3", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, a->blob, (int) a->size, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, now);
        return conn_step(c, st);
}

typedef struct ImageEventArgs {
        const char *name;
        int64_t revision;
        const char *state;
        json_t *extra;
} ImageEventArgs;

static int image_event_op(Store *s, StoreConn *c, void *userdata) {
        ImageEventArgs *a = userdata;
        json_t *extra = a->extra ? json_deep_copy(a->extra) : json_object();
        if (!extra || json_object_set_new(extra, "image", json_string(a->name)) < 0) {
                json_decref(extra);
                return -ENOMEM;
        }
        return store_event_add(s, c, "image", a->revision, 0, a->state, extra);
}

int store_image_event(Store *s, const char *name, int64_t revision, const char *state, json_t *extra) {
        ImageEventArgs a = { .name = name, .revision = revision, .state = state, .extra = extra };
        return store_write(s, image_event_op, &a);
}

int store_secret_put(Store *s, const char *name, const void *blob, size_t size) {
        SecretArgs a = { .name = name, .blob = blob, .size = size };
        return store_write(s, secret_put_op, &a);
}

int store_secret_get(Store *s, const char *name, void **ret_blob, size_t *ret_size) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT value FROM secrets WHERE name = ?", &st);
        if (r >= 0) {
                sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
                r = conn_step(c, st);
                if (r > 0) {
                        size_t n = (size_t) sqlite3_column_bytes(st, 0);
                        void *p = malloc(n ? n : 1);
                        if (p) {
                                memcpy(p, sqlite3_column_blob(st, 0), n);
                                *ret_blob = p;
                                *ret_size = n;
                                r = 0;
                        } else
                                r = -ENOMEM;
                } else if (r == 0)
                        r = -ENOENT;
        }
        store_read_end(s, c);
        return r;
}

int store_secret_list(Store *s, json_t **ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT name FROM secrets ORDER BY name", &st);
        if (r >= 0) {
                json_t *list = json_array();
                while ((r = conn_step(c, st)) > 0)
                        json_array_append_new(list, json_string(column_text(st, 0)));
                if (r >= 0) {
                        *ret = list;
                        r = 0;
                } else
                        json_decref(list);
        }
        store_read_end(s, c);
        return r;
}

static int secret_delete_op(Store *s, StoreConn *c, void *userdata) {
        SecretArgs *a = userdata;
        sqlite3_stmt *st;
        int r = conn_prepare(c, "DELETE FROM secrets WHERE name = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
        r = conn_step(c, st);
        if (r < 0)
                return r;
        return conn_changes(c) > 0 ? 0 : -ENOENT;
}

int store_secret_delete(Store *s, const char *name) {
        SecretArgs a = { .name = name };
        return store_write(s, secret_delete_op, &a);
}

/* ---- artifacts ---- */

typedef struct ArtifactArgs {
        const StoreAttempt *at;
        const char *name, *sha256, *path;
        uint64_t size;
        int64_t id;
} ArtifactArgs;

static int artifact_add_op(Store *s, StoreConn *c, void *userdata) {
        ArtifactArgs *a = userdata;
        sqlite3_stmt *st;
        int r = conn_prepare(c, "INSERT INTO artifacts(attempt_id, task_id, job_id, name, size, sha256,"
                                " path, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                                " ON CONFLICT(attempt_id, name) DO UPDATE SET size = excluded.size,"
                                " sha256 = excluded.sha256, path = excluded.path RETURNING id", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, a->at->id);
        sqlite3_bind_int64(st, 2, a->at->task_id);
        sqlite3_bind_int64(st, 3, a->at->job_id);
        sqlite3_bind_text(st, 4, a->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (int64_t) a->size);
        sqlite3_bind_text(st, 6, a->sha256, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, a->path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, store_now_wall());
        r = conn_step(c, st);
        if (r <= 0)
                return r < 0 ? r : -EIO;
        a->id = sqlite3_column_int64(st, 0);
        while ((r = conn_step(c, st)) > 0)
                ;
        if (r < 0)
                return r;
        return store_event_add(s, c, "artifact", a->id, a->at->job_id, "uploaded",
                               json_pack("{s:s, s:I, s:I, s:I}", "name", a->name,
                                         "task", (json_int_t) a->at->task_id,
                                         "attempt", (json_int_t) a->at->id,
                                         "size", (json_int_t) a->size));
}

int store_artifact_add(Store *s, const StoreAttempt *at, const char *name, uint64_t size,
                       const char *sha256, const char *path, int64_t *ret_id) {
        ArtifactArgs a = { .at = at, .name = name, .sha256 = sha256, .path = path, .size = size };
        int r = store_write(s, artifact_add_op, &a);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = a.id;
        return 0;
}

static json_t *artifact_row_json(sqlite3_stmt *st) {
        return json_pack("{s:I, s:I, s:I, s:I, s:s, s:I, s:s, s:s}",
                         "id", (json_int_t) sqlite3_column_int64(st, 0),
                         "attempt", (json_int_t) sqlite3_column_int64(st, 1),
                         "task", (json_int_t) sqlite3_column_int64(st, 2),
                         "job", (json_int_t) sqlite3_column_int64(st, 3),
                         "name", column_text(st, 4),
                         "size", (json_int_t) sqlite3_column_int64(st, 5),
                         "sha256", column_text(st, 6),
                         "path", column_text(st, 7));
}

int store_artifact_list(Store *s, int64_t job_id, json_t **ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT id, attempt_id, task_id, job_id, name, size, sha256, path"
                            " FROM artifacts WHERE job_id = ? ORDER BY id", &st);
        if (r >= 0) {
                json_t *list = json_array();
                sqlite3_bind_int64(st, 1, job_id);
                while ((r = conn_step(c, st)) > 0) {
                        json_t *a = artifact_row_json(st);
                        json_object_del(a, "path");
                        json_array_append_new(list, a);
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

int store_artifact_get(Store *s, int64_t id, json_t **ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT id, attempt_id, task_id, job_id, name, size, sha256, path"
                            " FROM artifacts WHERE id = ?", &st);
        if (r >= 0) {
                sqlite3_bind_int64(st, 1, id);
                r = conn_step(c, st);
                if (r > 0) {
                        *ret = artifact_row_json(st);
                        r = 0;
                } else if (r == 0)
                        r = -ENOENT;
        }
        store_read_end(s, c);
        return r;
}

/* ---- statistics ---- */

int store_queue_stats(Store *s, json_t **ret) {
        sqlite3_stmt *st;
        StoreConn *c;
        int r;

        r = store_read_begin(s, &c);
        if (r < 0)
                return r;
        r = conn_prepare(c, "SELECT labels, COUNT(*), MIN(queued_at) FROM tasks WHERE state = 'queued'"
                            " GROUP BY labels", &st);
        if (r >= 0) {
                json_t *list = json_array();
                while ((r = conn_step(c, st)) > 0)
                        json_array_append_new(list, json_pack(
                                "{s:o, s:I, s:I}", "labels", column_json(st, 0),
                                "depth", (json_int_t) sqlite3_column_int64(st, 1),
                                "oldest", (json_int_t) sqlite3_column_int64(st, 2)));
                if (r >= 0) {
                        *ret = list;
                        r = 0;
                } else
                        json_decref(list);
        }
        store_read_end(s, c);
        return r;
}
