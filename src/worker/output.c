/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "threads.h"
#include "buf.h"
#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "output.h"

#define READ_SIZE (64U * 1024U)

typedef struct Ring {
        char data[OUTPUT_SERVICE_TAIL];
        size_t start, len;
} Ring;

typedef struct Service {
        int rfd, wfd;
        Masker *masker;
        Ring *ring; /* allocated per service: most tasks have none */
} Service;

struct Output {
        pthread_t thread;
        bool started;
        pthread_mutex_t lock;
        Masker *masker;     /* the steps' stdout (and the worker's own words) */
        Masker *err_masker; /* the steps' stderr: a stream of its own */
        LogShip *ship;
        int log_r, log_w;
        int err_r, err_w;
        int err_peek; /* a duplicate of err_r, to see what the stderr pipe holds */
        int stop_fd; /* eventfd: give up waiting for writers */
        Service services[OUTPUT_SERVICES_MAX];
        size_t n_services;
        Buf out;
};

static void ring_append(Ring *r, const uint8_t *p, size_t n) {
        if (n >= sizeof r->data) {
                memcpy(r->data, p + n - sizeof r->data, sizeof r->data);
                r->start = 0;
                r->len = sizeof r->data;
                return;
        }
        for (size_t i = 0; i < n; i++) {
                size_t at = (r->start + r->len) % sizeof r->data;
                r->data[at] = (char) p[i];
                if (r->len < sizeof r->data)
                        r->len++;
                else
                        r->start = (r->start + 1) % sizeof r->data;
        }
}

/* stdout's masked bytes go to the log as they are; stderr's are framed:
 * ESC "]kiln;err;" N BEL, then the N bytes (docs/api.md). */
static void ship_masked(Output *o, bool err) {
        int r = 0;

        if (!err)
                r = o->out.len > 0 ? logship_append(o->ship, o->out.data, o->out.len) : 0;
        for (size_t at = 0; err && r >= 0 && at < o->out.len;) {
                size_t n = MIN(o->out.len - at, (size_t) OUTPUT_FRAME_MAX);
                char head[48];
                int k = snprintf(head, sizeof head, "\033]kiln;err;%zu\007", n);
                r = logship_append(o->ship, head, (size_t) k);
                if (r >= 0)
                        r = logship_append(o->ship, o->out.data + at, n);
                at += n;
        }
        if (r < 0)
                log_warning_errno(r, "Failed to spool log bytes: %m");
}

static void log_bytes(Output *o, bool err, const void *p, size_t n) {
        buf_clear(&o->out);
        int r = masker_feed(err ? o->err_masker : o->masker, p, n, &o->out);
        if (r < 0) {
                log_warning_errno(r, "Failed to mask output: %m");
                return; /* never pass unmasked bytes on */
        }
        ship_masked(o, err);
}

/* Reads what one of the step pipes holds: false at its end. */
static bool read_step_pipe(Output *o, bool err, uint8_t *buf) {
        int *fd = err ? &o->err_r : &o->log_r;
        ssize_t k = read(*fd, buf, READ_SIZE);
        if (k > 0) {
                log_bytes(o, err, buf, (size_t) k);
                return true;
        }
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
                return true;
        *fd = safe_close(*fd); /* every writer is gone */
        return false;
}

static void service_bytes(Output *o, Service *s, const void *p, size_t n) {
        Buf b = BUF_INIT(0);
        pthread_mutex_lock(&o->lock);
        if (masker_feed(s->masker, p, n, &b) >= 0)
                ring_append(s->ring, b.data, b.len);
        pthread_mutex_unlock(&o->lock);
        buf_done(&b);
}

static void *output_thread(void *arg) {
        Output *o = arg;
        _cleanup_free_ uint8_t *buf = malloc(READ_SIZE);
        struct pollfd p[OUTPUT_SERVICES_MAX + 3];

        /* Both step pipes are read until every writer of each is gone. When
         * both have bytes, stdout's go first: a step that writes to one and
         * then the other mostly finds this thread waiting in between, so the
         * order in the log is the order of the writes. */
        while (buf && (o->log_r >= 0 || o->err_r >= 0)) {
                size_t n = 0;
                p[n++] = (struct pollfd) { .fd = o->log_r, .events = POLLIN };
                p[n++] = (struct pollfd) { .fd = o->err_r, .events = POLLIN };
                p[n++] = (struct pollfd) { .fd = o->stop_fd, .events = POLLIN };
                for (size_t i = 0; i < o->n_services; i++)
                        p[n++] = (struct pollfd) { .fd = o->services[i].rfd, .events = POLLIN };
                if (poll(p, n, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                bool step_bytes = false;
                if (p[0].revents)
                        step_bytes |= read_step_pipe(o, false, buf);
                if (p[1].revents)
                        step_bytes |= read_step_pipe(o, true, buf);
                if (step_bytes)
                        continue; /* the step pipes first: drain them before stopping */
                if (p[2].revents)
                        break;
                for (size_t i = 0; i < o->n_services; i++) {
                        Service *s = &o->services[i];
                        if (s->rfd < 0 || !p[i + 3].revents)
                                continue;
                        ssize_t k = read(s->rfd, buf, READ_SIZE);
                        if (k > 0)
                                service_bytes(o, s, buf, (size_t) k);
                        else if (k == 0 || (errno != EINTR && errno != EAGAIN))
                                s->rfd = safe_close(s->rfd);
                }
                /* A closed pipe leaves an fd of -1 in the array, which poll()
                 * ignores. */
        }
        buf_clear(&o->out);
        if (masker_flush(o->masker, &o->out) >= 0)
                ship_masked(o, false);
        buf_clear(&o->out);
        if (masker_flush(o->err_masker, &o->out) >= 0)
                ship_masked(o, true);
        return NULL;
}

int output_new(Masker *m, char *const *secrets, LogShip *ship, size_t n_services, Output **ret) {
        Output *o;
        int p[2], r;

        if (n_services > OUTPUT_SERVICES_MAX)
                return -E2BIG;
        o = calloc(1, sizeof *o);
        if (!o)
                return -ENOMEM;
        pthread_mutex_init(&o->lock, NULL);
        o->masker = m;
        o->ship = ship;
        o->out = BUF_INIT(0);
        o->log_r = o->log_w = o->err_r = o->err_w = o->err_peek = o->stop_fd = -EBADF;
        for (size_t i = 0; i < OUTPUT_SERVICES_MAX; i++)
                o->services[i].rfd = o->services[i].wfd = -EBADF;
        if (pipe2(p, O_CLOEXEC) < 0)
                goto fail_errno;
        o->log_r = p[0];
        o->log_w = p[1];
        (void) fcntl(o->log_r, F_SETPIPE_SZ, 1 << 20);
        if (pipe2(p, O_CLOEXEC) < 0)
                goto fail_errno;
        o->err_r = p[0];
        o->err_w = p[1];
        o->err_peek = fcntl(o->err_r, F_DUPFD_CLOEXEC, 3);
        if (o->err_peek < 0)
                goto fail_errno;
        (void) fcntl(o->err_r, F_SETPIPE_SZ, 1 << 20);
        r = masker_new(secrets, &o->err_masker);
        if (r < 0)
                goto fail;
        o->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (o->stop_fd < 0)
                goto fail_errno;
        for (size_t i = 0; i < n_services; i++) {
                Service *s = &o->services[i];
                if (pipe2(p, O_CLOEXEC) < 0)
                        goto fail_errno;
                s->rfd = p[0];
                s->wfd = p[1];
                o->n_services++;
                s->ring = calloc(1, sizeof(Ring));
                if (!s->ring)
                        goto fail_enomem;
                r = masker_new(secrets, &s->masker);
                if (r < 0)
                        goto fail;
        }
        r = worker_thread_create(&o->thread, output_thread, o);
        if (r < 0)
                goto fail;
        o->started = true;
        *ret = o;
        return 0;
fail_enomem:
        r = -ENOMEM;
        goto fail;
fail_errno:
        r = -errno;
fail:
        output_free(o);
        return r;
}

Output *output_free(Output *o) {
        if (!o)
                return NULL;
        if (o->started)
                output_finish(o, 0);
        safe_close(o->log_r);
        safe_close(o->log_w);
        safe_close(o->err_r);
        safe_close(o->err_w);
        safe_close(o->err_peek);
        masker_free(o->err_masker);
        safe_close(o->stop_fd);
        for (size_t i = 0; i < o->n_services; i++) {
                safe_close(o->services[i].rfd);
                safe_close(o->services[i].wfd);
                masker_free(o->services[i].masker);
                free(o->services[i].ring);
        }
        buf_done(&o->out);
        pthread_mutex_destroy(&o->lock);
        free(o);
        return NULL;
}

int output_log_fd(Output *o) {
        return o->log_w;
}

int output_err_fd(Output *o) {
        return o->err_w;
}

int output_service_fd(Output *o, size_t i) {
        return i < o->n_services ? o->services[i].wfd : -EBADF;
}

void output_write(Output *o, const void *p, size_t n) {
        /* The worker's lines go into the stdout pipe, after what the steps
         * wrote there; what they wrote to stderr before must not be overtaken
         * either: wait until the reader has taken it out of its pipe (it ships
         * it before it reads on), for at most 50 ms (a process still writing
         * to stderr could keep it full). */
        for (int i = 0; i < 200; i++) {
                int queued = 0;
                if (ioctl(o->err_peek, FIONREAD, &queued) < 0 || queued == 0)
                        break;
                (void) usleep(250);
        }
        if (o->log_w >= 0)
                (void) loop_write(o->log_w, p, n);
}

void output_printf(Output *o, const char *fmt, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;

        va_start(ap, fmt);
        int n = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (n > 0)
                output_write(o, s, (size_t) n);
}

int output_service_tail(Output *o, size_t i, char **ret, size_t *ret_size) {
        if (i >= o->n_services)
                return -EINVAL;
        Ring *r = o->services[i].ring;
        pthread_mutex_lock(&o->lock);
        char *s = malloc(r->len + 1);
        if (s) {
                for (size_t k = 0; k < r->len; k++)
                        s[k] = r->data[(r->start + k) % sizeof r->data];
                s[r->len] = 0;
                *ret_size = r->len;
        }
        pthread_mutex_unlock(&o->lock);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

void output_finish(Output *o, uint64_t grace_usec) {
        o->log_w = safe_close(o->log_w);
        o->err_w = safe_close(o->err_w);
        for (size_t i = 0; i < o->n_services; i++)
                o->services[i].wfd = safe_close(o->services[i].wfd);
        if (!o->started)
                return;
        /* The thread ends at EOF on the log pipe; a process that escaped the
         * kill and still holds it open only gets grace_usec. */
        if (worker_thread_timedjoin(o->thread, grace_usec) == 0) {
                o->started = false;
                return;
        }
        uint64_t one = 1;
        (void) write(o->stop_fd, &one, sizeof one);
        (void) worker_thread_join(o->thread, NULL);
        o->started = false;
}
