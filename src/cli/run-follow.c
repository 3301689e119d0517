/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fd-util.h"
#include "log.h"
#include "parse-util.h"
#include "run-follow.h"

/* The worker's own messages are the log's lines that start with "[kiln] "
 * (docs/worker.md): they go to stderr, the rest to stdout. A step's stderr
 * comes framed: ESC "]kiln;err;" N BEL, then N bytes (docs/cli.md). */
#define WORKER_PREFIX "[kiln] "
#define WORKER_PREFIX_LEN (sizeof WORKER_PREFIX - 1)
#define FRAME_PREFIX "\033]kiln;err;"
#define FRAME_PREFIX_LEN (sizeof FRAME_PREFIX - 1)
#define FRAME_HEADER_MAX (FRAME_PREFIX_LEN + 8)
#define FRAME_MAX 65536U

typedef struct LogSink {
        unsigned attempt; /* from X-Kiln-Attempt */
        uint64_t bytes;   /* of this attempt's log received so far */
        bool mid_line;    /* not at the start of a line */
        bool to_err;      /* the current line is the worker's */
        char pending[WORKER_PREFIX_LEN];
        size_t n_pending; /* bytes at a line's start that match the prefix so far */
        char header[FRAME_HEADER_MAX];
        size_t n_header;  /* bytes of a frame header so far (from ESC) */
        size_t frame_left; /* bytes of stderr still to come in this frame */
        bool ok;           /* the answer is a 200: its body is the log */
} LogSink;

static int sink_flush_pending(LogSink *s) {
        int r = loop_write(STDOUT_FILENO, s->pending, s->n_pending);
        s->n_pending = 0;
        return r;
}

/* Unframed bytes: the step's stdout and the worker's lines. */
static bool emit_plain(LogSink *s, const char *p, size_t n) {
        while (n > 0) {
                if (s->to_err || s->mid_line) {
                        const char *nl = memchr(p, '\n', n);
                        size_t k = nl ? (size_t) (nl - p) + 1 : n;
                        if (loop_write(s->to_err ? STDERR_FILENO : STDOUT_FILENO, p, k) < 0)
                                return false;
                        if (nl)
                                s->to_err = s->mid_line = false;
                        p += k;
                        n -= k;
                        continue;
                }
                if (*p == WORKER_PREFIX[s->n_pending]) {
                        s->pending[s->n_pending++] = *p++;
                        n--;
                        if (s->n_pending == WORKER_PREFIX_LEN) {
                                if (loop_write(STDERR_FILENO, s->pending, s->n_pending) < 0)
                                        return false;
                                s->n_pending = 0;
                                s->to_err = true;
                        }
                        continue;
                }
                if (sink_flush_pending(s) < 0)
                        return false;
                s->mid_line = true;
        }
        return true;
}

/* One more byte of a frame header: returns 1 when the header is complete
 * (frame_left set), 0 while it may still be one, -1 when it is not one. */
static int header_feed(LogSink *s, char c) {
        s->header[s->n_header++] = c;
        if (s->n_header <= FRAME_PREFIX_LEN)
                return c == FRAME_PREFIX[s->n_header - 1] ? 0 : -1;
        if (c == '\a' && s->n_header > FRAME_PREFIX_LEN + 1) {
                size_t v = 0;
                for (size_t i = FRAME_PREFIX_LEN; i < s->n_header - 1; i++)
                        v = v * 10 + (size_t) (s->header[i] - '0');
                if (v > FRAME_MAX)
                        return -1;
                s->frame_left = v;
                s->n_header = 0;
                return 1;
        }
        if (c < '0' || c > '9' || s->n_header >= FRAME_HEADER_MAX)
                return -1;
        return 0;
}

static bool on_log(const char *p, size_t n, void *userdata) {
        LogSink *s = userdata;
        if (!s->ok)
                return true; /* an error's body */
        s->bytes += n;
        while (n > 0) {
                if (s->frame_left > 0) {
                        size_t k = MIN(n, s->frame_left);
                        if (loop_write(STDERR_FILENO, p, k) < 0)
                                return false;
                        s->frame_left -= k;
                        p += k;
                        n -= k;
                        continue;
                }
                if (s->n_header > 0) {
                        int h = header_feed(s, *p);
                        p++;
                        n--;
                        if (h < 0) {
                                /* Not a frame: the bytes are output like any. */
                                size_t k = s->n_header;
                                s->n_header = 0;
                                if (!emit_plain(s, s->header, k))
                                        return false;
                        }
                        continue;
                }
                const char *esc = memchr(p, '\033', n);
                size_t k = esc ? (size_t) (esc - p) : n;
                if (!emit_plain(s, p, k))
                        return false;
                p += k;
                n -= k;
                if (esc) {
                        s->header[0] = '\033';
                        s->n_header = 1;
                        p++;
                        n--;
                }
        }
        return true;
}

/* The end of an attempt's log: what was held back is output. */
static void sink_end(LogSink *s) {
        size_t k = s->n_header;
        s->n_header = 0;
        s->frame_left = 0;
        if (k > 0)
                (void) emit_plain(s, s->header, k);
        if (s->n_pending > 0)
                (void) sink_flush_pending(s);
        s->mid_line = s->to_err = false;
}

static bool on_header(const char *p, size_t n, void *userdata) {
        LogSink *s = userdata;
        static const char name[] = "X-Kiln-Attempt:";
        char buf[64];
        if (n > 12 && strneq(p, "HTTP/", 5)) {
                const char *sp = memchr(p, ' ', n);
                s->ok = sp && (size_t) (sp - p) + 4 <= n && strneq(sp + 1, "200", 3);
                return true;
        }
        if (n < sizeof name || n >= sizeof buf || strncasecmp(p, name, sizeof name - 1) != 0)
                return true;
        memcpy(buf, p + sizeof name - 1, n - (sizeof name - 1));
        buf[n - (sizeof name - 1)] = 0;
        char *v = buf + strspn(buf, " \t");
        v[strcspn(v, "\r\n ")] = 0;
        unsigned a;
        if (safe_atou(v, &a) >= 0)
                s->attempt = a;
        return true;
}

int follow_print_log(Api *api, const char *path, long *ret_status) {
        LogSink sink = {};
        int r = api_stream(api, path, on_log, on_header, &sink, ret_status);
        sink_end(&sink);
        return r;
}

/* A Ctrl-C arrived: the first cancels, the next detaches. Returns true to
 * stop following. */
static bool follow_sigint(Api *api, int64_t job, FollowOpts *o) {
        unsigned n = cli_sigint_count();
        cli_sigint_ack(n);
        if (n >= 2 || !o->cancel_on_sigint) {
                o->outcome = FOLLOW_DETACHED;
                fprintf(stderr, "\nkiln: detached; job %" PRId64 " goes on (kiln logs -f %" PRId64 ", kiln cancel %"
                                PRId64 ")\n", job, job, job);
                return true;
        }
        char path[96];
        snprintf(path, sizeof path, "/api/v1/jobs/%" PRId64 "/cancel", job);
        fprintf(stderr, "\nkiln: cancelling job %" PRId64 "… (Ctrl-C again to detach)\n", job);
        json_t *j = NULL;
        if (api_call(api, "POST", path, NULL, &j) >= 0)
                o->outcome = FOLLOW_CANCELLED;
        json_decref(j);
        return false;
}

static int task_get(Api *api, int64_t id, json_t **ret) {
        char path[96];
        snprintf(path, sizeof path, "/api/v1/tasks/%" PRId64, id);
        return api_call(api, "GET", path, NULL, ret);
}

/* Sleeps up to usec, waking early for a Ctrl-C. */
static void nap(uint64_t usec) {
        unsigned before = cli_sigint_count();
        for (uint64_t t = 0; t < usec && cli_sigint_count() == before; t += 10000)
                (void) usleep(10000);
}

/* Streams every attempt of one task until the task is final. Returns 1 when
 * detached, 0 when done, -errno. */
static int follow_task(Api *api, int64_t job, int64_t task_id, FollowOpts *o) {
        unsigned next = 1;
        LogSink sink = {};
        int r;

        for (bool first = true;; first = false) {
                json_t *t = NULL;
                if (cli_sigint_pending() && follow_sigint(api, job, o))
                        return 1;
                size_t n = 0;
                bool final = false;
                /* At first the log is asked for straight away: the server
                 * waits for the first attempt itself. */
                if (!first || sink.bytes > 0) {
                        r = task_get(api, task_id, &t);
                        if (r == -EINTR)
                                continue;
                        if (r < 0)
                                return r;
                        n = json_array_size(json_object_get(t, "attempts"));
                        final = cli_state_is_final(json_string_value(json_object_get(t, "state")));
                        json_decref(t);
                }
                if (n < next && final)
                        return 0;
                if (n < next && next > 1) {
                        nap(100000);
                        continue;
                }
                /* The first attempt: the server waits for it. */
                char path[160];
                sink.attempt = 0;
                if (n >= next)
                        snprintf(path, sizeof path, "/api/v1/tasks/%" PRId64 "/log?attempt=%u&follow=1&offset=%" PRIu64,
                                 task_id, next, sink.bytes);
                else
                        snprintf(path, sizeof path, "/api/v1/tasks/%" PRId64 "/log?follow=1", task_id);
                if (next > 1 && sink.bytes == 0 && !o->only_task)
                        fprintf(stderr, "kiln: attempt %u\n", next);
                long status = 0;
                r = api_stream(api, path, on_log, on_header, &sink, &status);
                if (r == -EINTR)
                        continue; /* resumes from sink.bytes */
                sink_end(&sink);
                if (r < 0)
                        return r;
                if (status == 200) {
                        next = (sink.attempt ? sink.attempt : next) + 1;
                        sink.bytes = 0;
                } else if (status != 404)
                        return log_error_errno(EIO, "Following the log of task %" PRId64 ": HTTP status %ld",
                                               task_id, status);
                else
                        nap(100000);
        }
}

static int64_t attempt_usec(json_t *task) {
        json_t *atts = json_object_get(task, "attempts");
        json_t *last = json_array_get(atts, json_array_size(atts) - 1);
        int64_t s, e;
        if (!last || cli_parse_time(json_string_value(json_object_get(last, "started")), &s) < 0)
                return -1;
        if (cli_parse_time(json_string_value(json_object_get(last, "finished")), &e) < 0)
                e = cli_now_usec();
        return e > s ? e - s : 0;
}

void follow_print_task_line(FILE *f, json_t *task, bool colour, int name_width) {
        const char *state = json_string_value(json_object_get(task, "state"));
        const char *name = json_string_value(json_object_get(task, "name"));
        const char *mark = !state                                    ? "?"
                           : streq(state, "succeeded")               ? "✓"
                           : IN_SET_STR(state, "warning")            ? "!"
                           : IN_SET_STR(state, "skipped", "cancelled") ? "-"
                           : cli_state_is_final(state)               ? "✗"
                                                                     : "…";
        char dur[32] = "";
        int64_t us = attempt_usec(task);
        if (us >= 0)
                cli_format_duration((uint64_t) us, dur, sizeof dur);
        fprintf(f, "kiln: %s ", mark);
        cli_print_safe(f, name ? name : "?");
        int pad = name_width - (int) strlen(name ? name : "?");
        fprintf(f, "%*s %s%s%s", pad > 0 ? pad : 0, "", colour ? cli_state_colour(state) : "", state ? state : "?",
                colour ? CLI_RESET : "");
        if (dur[0])
                fprintf(f, " in %s", dur);
        json_t *ec = json_object_get(task, "exit_code");
        if (state && IN_SET_STR(state, "failed") && json_is_integer(ec))
                fprintf(f, " (exit status %" JSON_INTEGER_FORMAT ")", json_integer_value(ec));
        json_t *attempts = json_object_get(task, "attempts");
        json_t *last = json_array_get(attempts, json_array_size(attempts) - 1);
        if (json_is_true(json_object_get(last, "log_truncated")))
                fprintf(f, ", log cut at the worker's cap");
        fputc('\n', f);
}

int follow_job(Api *api, json_t *job, FollowOpts *o, json_t **ret_job) {
        int64_t id = json_integer_value(json_object_get(job, "id"));
        json_t *tasks = json_object_get(job, "tasks"), *t, *final = NULL;
        size_t i, n = json_array_size(tasks);
        char path[96];
        int r;

        o->outcome = FOLLOW_DONE;
        json_array_foreach(tasks, i, t) {
                const char *name = json_string_value(json_object_get(t, "name"));
                if (o->only_task && t != cli_job_find_task(job, o->only_task))
                        continue;
                if (n > 1 && !o->only_task) {
                        fprintf(stderr, "kiln: ── task ");
                        cli_print_safe(stderr, name ? name : "?");
                        fprintf(stderr, " ──\n");
                }
                r = follow_task(api, id, json_integer_value(json_object_get(t, "id")), o);
                if (r < 0)
                        return r;
                if (r > 0)
                        return 130;
        }
        /* Every task followed is final; the others may still run (only_task). */
        snprintf(path, sizeof path, "/api/v1/jobs/%" PRId64, id);
        for (;;) {
                r = api_call(api, "GET", path, NULL, &final);
                if (r == -EINTR)
                        continue;
                if (r < 0)
                        return r;
                break;
        }
        int status = 0, width = 0;
        json_array_foreach(json_object_get(final, "tasks"), i, t) {
                const char *name = json_string_value(json_object_get(t, "name"));
                width = MAX(width, name ? (int) MIN(strlen(name), 40) : 1);
        }
        bool colour = cli_colour(stderr);
        json_array_foreach(json_object_get(final, "tasks"), i, t) {
                if (o->only_task && t != cli_job_find_task(final, o->only_task))
                        continue;
                if (o->summary)
                        follow_print_task_line(stderr, t, colour, width);
                int s = cli_task_exit_status(t);
                if (status == 0 && s != 0)
                        status = s;
        }
        if (o->outcome == FOLLOW_CANCELLED)
                status = 130;
        if (ret_job)
                *ret_job = final;
        else
                json_decref(final);
        return status;
}
