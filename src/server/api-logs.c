/* SPDX-License-Identifier: MIT */
/* Logs (append by byte offset, read, follow) and the server-sent-events
 * stream of state changes. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "log.h"
#include "taskstate.h"
#include "macro.h"
#include "server.h"

#define STREAM_WAIT_USEC (15 * 1000000ULL)

void api_log_path(const StoreAttempt *a, char *buf, size_t size) {
        snprintf(buf, size, "logs/%" PRId64 "/%" PRId64 ".%u.log", a->job_id, a->task_id, a->number);
}

int api_fsync_dir(int dirfd, const char *dir) {
        _cleanup_close_ int fd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fsync(fd) < 0 ? -errno : 0;
}

/* Creates dir (one level below an existing parent) and makes the new entry
 * durable. */
int api_mkdir_durable(int dirfd, const char *parent, const char *dir);
int api_mkdir_durable(int dirfd, const char *parent, const char *dir) {
        if (mkdirat(dirfd, dir, 0755) < 0)
                return errno == EEXIST ? 0 : -errno;
        return api_fsync_dir(dirfd, parent);
}

/* Opens an attempt's log for appending, creating it and its job's directory
 * when missing. Neither entry is made durable here: log_append() does that
 * before it acknowledges the log's first bytes. */
static int log_open_append(Server *srv, const StoreAttempt *a, int *ret_fd) {
        char dir[64], path[256];
        int fd;

        snprintf(dir, sizeof dir, "logs/%" PRId64, a->job_id);
        api_log_path(a, path, sizeof path);
        fd = openat(srv->data_fd, path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
                if (mkdirat(srv->data_fd, dir, 0755) < 0 && errno != EEXIST)
                        return -errno;
                fd = openat(srv->data_fd, path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        }
        if (fd < 0)
                return -errno;
        *ret_fd = fd;
        return 0;
}

/* Makes the new bytes and, for a log that held none, its directory entries
 * durable. The file's own sync comes first: on a journalling file system it
 * commits the entries' creation too, and the directories' syncs then find
 * nothing left to do. */
static int log_sync(Server *srv, const StoreAttempt *a, int fd, bool first) {
        char dir[64];

        if (fdatasync(fd) < 0)
                return -errno;
        if (!first)
                return 0;
        snprintf(dir, sizeof dir, "logs/%" PRId64, a->job_id);
        int k = api_fsync_dir(srv->data_fd, dir);
        if (k >= 0)
                k = api_fsync_dir(srv->data_fd, "logs");
        return k;
}

/* Appends [data, data + n) at offset: bytes the log already holds are kept, a
 * gap is refused (-ERANGE) with *ret_size the current size.
 *
 * Followers are woken as soon as the bytes are in the file, before they are
 * synced: the sync is the worker's acknowledgement, not the reader's. The lock
 * is held until the sync is done, so an append never looks past bytes that
 * are not durable yet, and an empty log (nothing ever acknowledged) is the
 * only one whose directory entries may not be durable. Why a reader may see
 * bytes before they are durable: docs/api.md, "Durability". */
static int log_append(Server *srv, const StoreAttempt *a, int fd, uint64_t offset, const char *data, size_t n,
                      uint64_t *ret_size) {
        struct stat st;

        if (flock(fd, LOCK_EX) < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        uint64_t size = (uint64_t) st.st_size;
        *ret_size = size;
        if (offset > size)
                return -ERANGE;
        uint64_t skip = size - offset;
        if (skip >= n)
                return 0;
        int k = loop_write(fd, data + skip, n - (size_t) skip);
        if (k >= 0) {
                store_notify_logs(srv->store);
                k = log_sync(srv, a, fd, size == 0);
        }
        if (k < 0) {
                /* Leave only acknowledged bytes behind. */
                (void) ftruncate(fd, (off_t) size);
                return k;
        }
        *ret_size = size + (n - skip);
        return 0;
}

int api_log_append(Request *r) {
        StoreAttempt a;
        int64_t fence, offset;
        uint64_t size = 0;
        int fd = -EBADF, k;

        if (http_query_int(r, "fence", 0, &fence) < 0 || http_query_int(r, "offset", -1, &offset) < 0)
                return 0;
        if (fence <= 0 || offset < 0)
                return http_error(r, 400, "invalid_parameter", NULL,
                                  "query parameters 'fence' and 'offset' are required");
        if (api_lease_check(r, fence, &a) < 0)
                return 0;
        k = log_open_append(r->srv, &a, &fd);
        if (k < 0)
                return http_errno(r, k, "log append");
        k = log_append(r->srv, &a, fd, (uint64_t) offset, r->body ? r->body : "", r->body_size, &size);
        safe_close(fd);
        if (k == -ERANGE)
                return http_error(r, 416, "log_gap", json_pack("{s:I}", "offset", (json_int_t) size),
                                  "offset %lld is past the end of the log: the server holds %llu bytes, "
                                  "resend from there", (long long) offset, (unsigned long long) size);
        if (k < 0)
                return http_errno(r, k, "log append");
        r->srv->metrics.log_bytes += r->body_size;
        return http_json(r, 200, json_pack("{s:I}", "offset", (json_int_t) size));
}

/* ---- reading and following ---- */

typedef struct Follow {
        Server *srv;
        StoreAttempt attempt;
        char path[256];
        int fd;
        uint64_t offset;
        bool final;
} Follow;

static void follow_free(void *cls) {
        Follow *f = cls;
        safe_close(f->fd);
        free(f);
}

static bool attempt_is_final(Server *srv, int64_t id) {
        StoreAttempt a;
        if (store_attempt_get(srv->store, id, &a) < 0)
                return true;
        return !streq(a.state, "leased") && !streq(a.state, "running");
}

static ssize_t follow_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Follow *f = cls;

        for (;;) {
                StoreGen gen;
                store_gen_get(f->srv->store, &gen);
                if (f->fd < 0)
                        f->fd = openat(f->srv->data_fd, f->path, O_RDONLY | O_CLOEXEC);
                if (f->fd >= 0) {
                        ssize_t n = pread(f->fd, buf, max, (off_t) f->offset);
                        if (n > 0) {
                                f->offset += (uint64_t) n;
                                return n;
                        }
                        if (n < 0)
                                return MHD_CONTENT_READER_END_WITH_ERROR;
                }
                if (f->final)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                if (attempt_is_final(f->srv, f->attempt.id)) {
                        /* Read once more: bytes appended before the finish. */
                        f->final = true;
                        continue;
                }
                int k = store_wait(f->srv->store, &gen, STORE_WAIT_LOGS | STORE_WAIT_ATTEMPTS,
                                   store_now_mono() + STREAM_WAIT_USEC);
                if (k == -ESHUTDOWN)
                        return MHD_CONTENT_READER_END_WITH_ERROR;
        }
}

/* The attempt a log request names: ?attempt=N, else the latest. Waits for a
 * first attempt when following a task that is still queued. */
static int log_pick_attempt(Request *r, int64_t task_id, int64_t number, bool follow, StoreAttempt *ret) {
        json_t *task, *at;
        size_t i;
        int k;

        uint64_t deadline = store_now_mono() + 60 * 1000000ULL;

        for (;;) {
                StoreGen gen;
                store_gen_get(r->srv->store, &gen);
                k = store_task_get(r->srv->store, task_id, &task);
                if (k < 0)
                        return k;
                int64_t id = 0;
                json_array_foreach(json_object_get(task, "attempts"), i, at)
                        if (number == 0 || json_integer_value(json_object_get(at, "number")) == number)
                                id = json_integer_value(json_object_get(at, "id"));
                TaskState ts = task_state_from_string(json_string_value(json_object_get(task, "state")));
                json_decref(task);
                if (id > 0)
                        return store_attempt_get(r->srv->store, id, ret);
                /* A task that ended without an attempt (cancelled while
                 * queued) never gets one. */
                if (number > 0 || !follow || (ts >= 0 && task_state_is_final(ts)))
                        return -ENOENT;
                k = store_wait(r->srv->store, &gen, STORE_WAIT_ATTEMPTS, deadline);
                if (k < 0)
                        return k == -ETIMEDOUT ? -ENOENT : k;
        }
}

static int log_serve_static(Request *r, Follow *f) {
        struct stat st;
        int fd = openat(r->srv->data_fd, f->path, O_RDONLY | O_CLOEXEC);

        if (fd < 0 && errno != ENOENT)
                return http_errno(r, -errno, "log");
        uint64_t size = 0;
        if (fd >= 0 && fstat(fd, &st) == 0)
                size = (uint64_t) st.st_size;
        if (f->offset > size) {
                safe_close(fd);
                return http_error(r, 416, "offset_past_end", json_pack("{s:I}", "offset", (json_int_t) size),
                                  "offset %llu is past the end of the log (%llu bytes)",
                                  (unsigned long long) f->offset, (unsigned long long) size);
        }
        struct MHD_Response *resp = fd >= 0 ? MHD_create_response_from_fd_at_offset64(size - f->offset, fd,
                                                                                     f->offset)
                                            : MHD_create_response_from_buffer(0, (char *) "",
                                                                              MHD_RESPMEM_PERSISTENT);
        if (!resp) {
                safe_close(fd);
                return -ENOMEM;
        }
        char v[32];
        snprintf(v, sizeof v, "%llu", (unsigned long long) size);
        MHD_add_response_header(resp, "X-Kiln-Log-Size", v);
        snprintf(v, sizeof v, "%u", f->attempt.number);
        MHD_add_response_header(resp, "X-Kiln-Attempt", v);
        MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
        return http_respond_response(r, 200, resp);
}

int api_log_get(Request *r) {
        const char *fol = http_query(r, "follow");
        bool follow = fol && (streq(fol, "1") || streq(fol, "true"));
        int64_t task_id, number, offset;
        int k;

        if (http_arg_id(r, 0, &task_id) < 0)
                return 0;
        if (http_query_int(r, "attempt", 0, &number) < 0 || http_query_int(r, "offset", 0, &offset) < 0)
                return 0;
        Follow *f = calloc(1, sizeof(Follow));
        if (!f)
                return -ENOMEM;
        f->srv = r->srv;
        f->fd = -EBADF;
        f->offset = (uint64_t) offset;
        k = log_pick_attempt(r, task_id, number, follow, &f->attempt);
        if (k == -ENOENT && !follow && number == 0) {
                free(f);
                return http_respond(r, 200, "application/octet-stream", NULL, 0);
        }
        if (k < 0) {
                free(f);
                return http_errno(r, k, "task log");
        }
        api_log_path(&f->attempt, f->path, sizeof f->path);
        if (!follow) {
                k = log_serve_static(r, f);
                free(f);
                return k;
        }
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
                                                                      follow_read, f, follow_free);
        if (!resp) {
                follow_free(f);
                return -ENOMEM;
        }
        char v[32];
        snprintf(v, sizeof v, "%u", f->attempt.number);
        MHD_add_response_header(resp, "X-Kiln-Attempt", v);
        MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
        return http_respond_response(r, 200, resp);
}

/* ---- events ---- */

typedef struct EventStream {
        Server *srv;
        int64_t last;
        char *buf;
        size_t len, pos;
        bool follow;
} EventStream;

static void events_free(void *cls) {
        EventStream *e = cls;
        free(e->buf);
        free(e);
}

static int events_fill(EventStream *e) {
        json_t *list, *ev;
        size_t i, cap = 0;
        int k;

        k = store_events_since(e->srv->store, e->last, 256, &list);
        if (k < 0)
                return k;
        e->buf = mfree(e->buf);
        e->len = e->pos = 0;
        json_array_foreach(list, i, ev) {
                char *data = json_dumps(ev, JSON_COMPACT);
                if (!data)
                        continue;
                const char *type = json_string_value(json_object_get(ev, "type"));
                int64_t seq = json_integer_value(json_object_get(ev, "seq"));
                size_t need = strlen(data) + 128;
                if (e->len + need > cap) {
                        cap = (e->len + need) * 2;
                        char *p = realloc(e->buf, cap);
                        if (!p) {
                                free(data);
                                json_decref(list);
                                return -ENOMEM;
                        }
                        e->buf = p;
                }
                e->len += (size_t) snprintf(e->buf + e->len, cap - e->len, "id: %" PRId64 "\nevent: %s\ndata: %s\n\n",
                                            seq, type ? type : "event", data);
                e->last = seq;
                free(data);
        }
        json_decref(list);
        return 0;
}

static ssize_t events_read(void *cls, uint64_t pos, char *out, size_t max) {
        EventStream *e = cls;

        for (;;) {
                if (e->pos < e->len) {
                        size_t n = MIN(max, e->len - e->pos);
                        memcpy(out, e->buf + e->pos, n);
                        e->pos += n;
                        return (ssize_t) n;
                }
                StoreGen gen;
                store_gen_get(e->srv->store, &gen);
                if (events_fill(e) < 0)
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                if (e->len > 0)
                        continue;
                if (!e->follow || atomic_load(&e->srv->stopping))
                        return MHD_CONTENT_READER_END_OF_STREAM;
                int k = store_wait(e->srv->store, &gen, STORE_WAIT_EVENTS, store_now_mono() + STREAM_WAIT_USEC);
                if (k == -ESHUTDOWN)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                if (k == -ETIMEDOUT) {
                        /* A comment keeps proxies and dead-peer detection honest. */
                        free(e->buf);
                        e->buf = strdup(": keepalive\n\n");
                        e->len = e->buf ? strlen(e->buf) : 0;
                        e->pos = 0;
                }
        }
}

int api_events(Request *r) {
        const char *lei = http_header(r, "Last-Event-ID");
        const char *fol = http_query(r, "follow");
        int64_t after;

        if (http_query_int(r, "after", 0, &after) < 0)
                return 0;
        if (lei) {
                char *end;
                errno = 0;
                long long x = strtoll(lei, &end, 10);
                if (errno != 0 || *end || x < 0)
                        return http_error(r, 400, "invalid_header", NULL, "Last-Event-ID must be an event id");
                after = x;
        }
        EventStream *e = calloc(1, sizeof(EventStream));
        if (!e)
                return -ENOMEM;
        e->srv = r->srv;
        e->last = after;
        e->follow = !fol || !(streq(fol, "0") || streq(fol, "false"));
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                      events_read, e, events_free);
        if (!resp) {
                events_free(e);
                return -ENOMEM;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        return http_respond_response(r, 200, resp);
}
