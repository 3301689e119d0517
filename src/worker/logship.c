/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "threads.h"
#include "client.h"
#include "fd-util.h"
#include "log.h"
#include "logship.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define APPEND_TIMEOUT_MS 20000L
/* The log's first bytes are kept in memory, the rest in the spool file, which
 * is created when the log outgrows them: a short log is sent without touching
 * the disk, and a task's first output never waits for the file system. File
 * offsets are log offsets (the file starts with a hole). */
#define SPOOL_HEAD (64U * 1024U)
/* When the spool file cannot be written (the worker's disk is full), the log
 * goes on in memory, in blocks that never move (the shipping thread reads
 * them without the lock), up to MEM_BLOCKS of them; past that it is cut with
 * an explicit marker, for which MEM_RESERVE bytes are kept. */
#define MEM_BLOCK (1U << 20)
#define MEM_BLOCKS 64U
#define MEM_RESERVE 512U

struct LogShip {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t thread;
        bool thread_started;
        Client *client;
        char *head; /* [0, MIN(written, SPOOL_HEAD)) */
        int fd;     /* [SPOOL_HEAD, mem_base); -EBADF until needed */
        char *mem[MEM_BLOCKS]; /* [mem_base, written) once the file failed us */
        uint64_t mem_base;     /* UINT64_MAX: the file holds everything past the head */
        char *path;
        int64_t lease, fence;
        void (*on_acked)(void *userdata);
        void *userdata;
        uint64_t max_bytes, chunk_max;
        uint64_t written, acked, dropped;
        bool closed, truncated, stop;
        int result; /* 1 while running, then 0, -ESTALE or -ECANCELED */
        atomic_bool abort_flag;
};

static void sleep_ms(LogShip *l, unsigned ms) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long) (ms % 1000) * 1000000L;
        ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&l->lock);
        if (!l->stop)
                pthread_cond_timedwait(&l->cond, &l->lock, &ts);
        pthread_mutex_unlock(&l->lock);
}

/* Copies [from, from + n) out of the memory blocks. */
static void mem_read(const LogShip *l, uint64_t mem_base, uint64_t from, size_t n, char *dst) {
        while (n > 0) {
                uint64_t o = from - mem_base;
                size_t k = MIN(n, (size_t) (MEM_BLOCK - o % MEM_BLOCK));
                memcpy(dst, l->mem[o / MEM_BLOCK] + o % MEM_BLOCK, k);
                dst += k;
                from += k;
                n -= k;
        }
}

/* The bytes [from, to): in place when the memory head holds them all, else
 * copied into *buf (grown as needed). Bytes below `written` never change,
 * nor move, so they are read without the lock. */
static int chunk_get(LogShip *l, uint64_t from, uint64_t to, void **buf, size_t *buf_size, const void **ret) {
        size_t n = (size_t) (to - from);

        if (to <= SPOOL_HEAD) {
                *ret = l->head + from;
                return 0;
        }
        if (n > *buf_size) {
                void *p = malloc(n);
                if (!p)
                        return -ENOMEM;
                free(*buf);
                *buf = p;
                *buf_size = n;
        }
        pthread_mutex_lock(&l->lock);
        uint64_t mem_base = l->mem_base;
        pthread_mutex_unlock(&l->lock);
        char *dst = *buf;
        uint64_t at = from;
        if (at < SPOOL_HEAD) {
                memcpy(dst, l->head + at, SPOOL_HEAD - at);
                dst += SPOOL_HEAD - at;
                at = SPOOL_HEAD;
        }
        uint64_t file_end = MIN(to, mem_base);
        if (at < file_end) {
                size_t k = (size_t) (file_end - at);
                if (pread(l->fd, dst, k, (off_t) at) != (ssize_t) k)
                        return -EIO;
                dst += k;
                at = file_end;
        }
        if (at < to)
                mem_read(l, mem_base, at, (size_t) (to - at), dst);
        *ret = *buf;
        return 0;
}

/* Sends [from, to) once. Returns the server's new offset, -ESTALE, or -EAGAIN
 * to retry later. */
static int64_t send_chunk(LogShip *l, uint64_t from, uint64_t to, void **buf_p, size_t *buf_size) {
        char path[128];
        ClientReply rep = {};
        size_t n = (size_t) (to - from);
        const void *buf;

        int g = chunk_get(l, from, to, buf_p, buf_size, &buf);
        if (g < 0)
                return g == -ENOMEM ? -EAGAIN : -EIO;
        snprintf(path, sizeof path, "/api/v1/leases/%" PRId64 "/log?fence=%" PRId64 "&offset=%" PRIu64,
                 l->lease, l->fence, from);
        int r = client_post_raw(l->client, path, buf, n, APPEND_TIMEOUT_MS, &rep);
        if (r < 0) {
                log_debug_errno(r, "Log append at %" PRIu64 " failed, will retry: %m", from);
                return -EAGAIN;
        }
        int64_t off = client_reply_offset(&rep);
        long status = rep.status;
        client_reply_done(&rep);
        if (status == 200 && off >= 0)
                return off;
        if (status == 416 && off >= 0)
                return off; /* a gap: resend from what the server holds */
        if (status == 409 || status == 404)
                return -ESTALE;
        if (status == 413 && l->chunk_max > 64 * 1024) {
                /* The server takes smaller appends than we sent. */
                l->chunk_max /= 2;
                return -EAGAIN;
        }
        log_debug("Log append at %" PRIu64 " answered %ld, will retry", from, status);
        return -EAGAIN;
}

static void *ship_thread(void *arg) {
        LogShip *l = arg;
        _cleanup_free_ void *buf = NULL;
        size_t buf_size = 0;
        unsigned backoff = BACKOFF_MIN_MS;
        int result = 0;

        for (;;) {
                pthread_mutex_lock(&l->lock);
                while (!l->stop && l->acked >= l->written && !l->closed)
                        pthread_cond_wait(&l->cond, &l->lock);
                if (l->stop) {
                        pthread_mutex_unlock(&l->lock);
                        result = -ECANCELED;
                        break;
                }
                if (l->closed && l->acked >= l->written) {
                        pthread_mutex_unlock(&l->lock);
                        break;
                }
                uint64_t from = l->acked, to = MIN(l->written, l->acked + l->chunk_max);
                pthread_mutex_unlock(&l->lock);

                int64_t off = send_chunk(l, from, to, &buf, &buf_size);
                if (off == -ESTALE) {
                        result = -ESTALE;
                        break;
                }
                if (off < 0) {
                        sleep_ms(l, backoff);
                        backoff = MIN(backoff * 2, (unsigned) BACKOFF_MAX_MS);
                        continue;
                }
                backoff = BACKOFF_MIN_MS;
                pthread_mutex_lock(&l->lock);
                /* The server can never hold more than was written; and an
                 * answer for an older request must not move the offset back
                 * past a rewind's target. */
                l->acked = MIN((uint64_t) off, l->written);
                pthread_cond_broadcast(&l->cond);
                pthread_mutex_unlock(&l->lock);
                if (l->on_acked)
                        l->on_acked(l->userdata);
        }
        pthread_mutex_lock(&l->lock);
        l->result = result;
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
        return NULL;
}

int logship_new(const LogShipConfig *c, LogShip **ret) {
        LogShip *l = calloc(1, sizeof *l);
        int r;

        if (!l)
                return -ENOMEM;
        pthread_mutex_init(&l->lock, NULL);
        pthread_cond_init(&l->cond, NULL);
        l->lease = c->lease;
        l->fence = c->fence;
        l->on_acked = c->on_acked;
        l->userdata = c->userdata;
        l->max_bytes = c->max_bytes;
        l->chunk_max = c->chunk_max ? c->chunk_max : 4U << 20;
        l->result = 1;
        l->fd = -EBADF;
        l->mem_base = UINT64_MAX;
        l->path = strdup(c->spool_path);
        l->head = malloc(SPOOL_HEAD);
        if (!l->path || !l->head) {
                logship_free(l);
                return -ENOMEM;
        }
        l->client = c->client;
        client_set_abort(l->client, &l->abort_flag);
        r = worker_thread_create(&l->thread, ship_thread, l);
        if (r < 0) {
                logship_free(l);
                return r;
        }
        l->thread_started = true;
        *ret = l;
        return 0;
}

LogShip *logship_free(LogShip *l) {
        if (!l)
                return NULL;
        if (l->thread_started) {
                logship_abort(l);
                (void) worker_thread_join(l->thread, NULL);
        }
        if (l->client)
                client_set_abort(l->client, NULL);
        if (l->fd >= 0)
                (void) unlink(l->path);
        safe_close(l->fd);
        free(l->path);
        free(l->head);
        for (size_t i = 0; i < MEM_BLOCKS; i++)
                free(l->mem[i]);
        pthread_mutex_destroy(&l->lock);
        pthread_cond_destroy(&l->cond);
        free(l);
        return NULL;
}

/* Appends to the memory blocks; only `reserved` may use the last
 * MEM_RESERVE bytes. */
static int mem_write(LogShip *l, const char *data, size_t n, bool reserved) {
        uint64_t end = l->written + n - l->mem_base;
        if (end > (uint64_t) MEM_BLOCK * MEM_BLOCKS - (reserved ? 0 : MEM_RESERVE))
                return -ENOSPC;
        for (uint64_t o = l->written - l->mem_base; n > 0;) {
                char **b = &l->mem[o / MEM_BLOCK];
                if (!*b && !(*b = malloc(MEM_BLOCK)))
                        return -ENOMEM;
                size_t k = MIN(n, (size_t) (MEM_BLOCK - o % MEM_BLOCK));
                memcpy(*b + o % MEM_BLOCK, data, k);
                data += k;
                n -= k;
                o += k;
                l->written += k;
        }
        return 0;
}

static int file_write(LogShip *l, const char *data, size_t n) {
        if (l->fd < 0) {
                l->fd = open(l->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (l->fd < 0)
                        return -errno;
        }
        for (size_t done = 0; done < n;) {
                ssize_t k = pwrite(l->fd, data + done, n - done, (off_t) (l->written + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                done += (size_t) k;
        }
        l->written += n;
        return 0;
}

/* Called with the lock held. */
static int spool_write(LogShip *l, const void *data, size_t n, bool reserved) {
        if (l->written < SPOOL_HEAD) {
                size_t h = MIN(n, (size_t) (SPOOL_HEAD - l->written));
                memcpy(l->head + l->written, data, h);
                l->written += h;
                data = (const char *) data + h;
                n -= h;
        }
        if (n == 0)
                return 0;
        if (l->mem_base == UINT64_MAX) {
                int r = file_write(l, data, n);
                if (r >= 0)
                        return 0;
                /* Nothing of what failed counts as written; the file keeps
                 * what it holds below here. */
                log_warning_errno(r, "Cannot spool the log of lease %" PRId64 " to %s: %m; keeping the rest "
                                  "of it in memory (at most %u MiB)", l->lease, l->path, MEM_BLOCKS);
                l->mem_base = l->written;
        }
        return mem_write(l, data, n, reserved);
}

/* Called with the lock held: the rest is not kept, and the log says so. */
static void cut(LogShip *l, size_t dropped, const char *why) {
        char marker[256];
        int m = snprintf(marker, sizeof marker, "\n[kiln] %s: the rest of the output is not kept\n", why);
        l->dropped += dropped;
        l->truncated = true;
        (void) spool_write(l, marker, (size_t) m, true);
}

int logship_append(LogShip *l, const void *data, size_t n) {
        pthread_mutex_lock(&l->lock);
        if (l->truncated)
                l->dropped += n;
        else if (l->max_bytes > 0 && l->written + n > l->max_bytes) {
                char why[128];
                size_t keep = (size_t) (l->max_bytes - l->written);
                if (spool_write(l, data, keep, false) < 0)
                        keep = 0;
                snprintf(why, sizeof why, "the log reached its limit of %" PRIu64 " bytes", l->max_bytes);
                cut(l, n - keep, why);
        } else if (spool_write(l, data, n, false) < 0)
                cut(l, n, "the worker's disk is full and its memory for this log too");
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
        return 0;
}

void logship_close(LogShip *l) {
        pthread_mutex_lock(&l->lock);
        l->closed = true;
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
}

int logship_wait(LogShip *l, uint64_t *ret_size) {
        pthread_mutex_lock(&l->lock);
        while (l->result > 0)
                pthread_cond_wait(&l->cond, &l->lock);
        int r = l->result;
        *ret_size = l->written;
        pthread_mutex_unlock(&l->lock);
        return r;
}

void logship_rewind(LogShip *l, uint64_t offset) {
        pthread_mutex_lock(&l->lock);
        if (l->result > 0 || l->result == 0) {
                bool restart = l->result == 0;
                l->acked = MIN(offset, l->written);
                if (restart) {
                        /* The thread finished: start it again for the rest. */
                        l->result = 1;
                        pthread_mutex_unlock(&l->lock);
                        (void) worker_thread_join(l->thread, NULL);
                        l->thread_started = false;
                        if (worker_thread_create(&l->thread, ship_thread, l) == 0)
                                l->thread_started = true;
                        else {
                                pthread_mutex_lock(&l->lock);
                                l->result = -ENOMEM;
                                pthread_mutex_unlock(&l->lock);
                        }
                        return;
                }
                pthread_cond_broadcast(&l->cond);
        }
        pthread_mutex_unlock(&l->lock);
}

void logship_abort(LogShip *l) {
        pthread_mutex_lock(&l->lock);
        l->stop = true;
        atomic_store(&l->abort_flag, true);
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
}

uint64_t logship_size(LogShip *l) {
        pthread_mutex_lock(&l->lock);
        uint64_t n = l->written;
        pthread_mutex_unlock(&l->lock);
        return n;
}

bool logship_truncated(LogShip *l) {
        pthread_mutex_lock(&l->lock);
        bool t = l->truncated;
        pthread_mutex_unlock(&l->lock);
        return t;
}

uint64_t logship_dropped(LogShip *l) {
        pthread_mutex_lock(&l->lock);
        uint64_t n = l->dropped;
        pthread_mutex_unlock(&l->lock);
        return n;
}
