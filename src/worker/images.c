/* SPDX-License-Identifier: MIT */
/* The images a worker serves, follows from the server and reports. */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs-util.h"
#include "image-remote.h"
#include "image-schedule.h"
#include "image-store.h"
#include "images.h"
#include "log.h"
#include "rebuild.h"
#include "strv.h"
#include "threads.h"
#include "worker-internal.h"

#define REPORT_CHECK_USEC (2 * 1000000ULL)

static WorkerImageState *state_add(Worker *w, const char *name, const char *path, unsigned warm, bool managed) {
        if (w->n_images >= POOL_IMAGES_MAX)
                return NULL;
        WorkerImageState *img = &w->images[w->n_images];
        *img = (WorkerImageState) { .name = strdup(name), .path = strdup(path), .warm = warm, .managed = managed };
        if (!img->name || !img->path) {
                free(img->name);
                free(img->path);
                *img = (WorkerImageState) {};
                return NULL;
        }
        w->n_images++;
        return img;
}

static char *store_path(Worker *w, const char *name) {
        char *p = NULL;
        if (asprintf(&p, "%s/%s/current/rootfs", image_store_root(w->store), name) < 0)
                return NULL;
        return p;
}

int worker_images_init(Worker *w) {
        const WorkerConfig *c = w->cfg;
        int r;

        r = image_store_open(c->data_dir, &w->store);
        if (r < 0)
                return log_error_errno(r, "Failed to open the image store in '%s/images': %m", c->data_dir);
        for (size_t i = 0; i < c->n_images; i++) {
                const WorkerImage *ci = &c->images[i];
                _cleanup_free_ char *p = ci->managed ? store_path(w, ci->name) : NULL;
                if (ci->managed && !p)
                        return -ENOMEM;
                if (!state_add(w, ci->name, p ?: ci->path, ci->warm, ci->managed))
                        return -ENOMEM;
        }
        return 0;
}

void worker_images_done(Worker *w) {
        for (size_t i = 0; i < w->n_images; i++) {
                free(w->images[i].name);
                free(w->images[i].path);
        }
        w->n_images = 0;
        image_store_free(w->store);
        w->store = NULL;
}

/* The revision a root file system directory belongs to, if it is one of an
 * image store (.../revs/N/rootfs next to .../revs/N/meta.json). */
static json_t *revision_of(const char *path) {
        _cleanup_free_ char *real = realpath(path, NULL), *meta = NULL;
        if (!real)
                return NULL;
        if (asprintf(&meta, "%s/meta.json", dirname(real)) < 0)
                return NULL;
        json_t *m = json_load_file(meta, 0, NULL);
        const char *d = json_string_value(json_object_get(m, "digest"));
        json_t *out = NULL;
        if (d && strneq(d, "sha256:", 7))
                out = json_pack("{s:s, s:O?}", "digest", d, "revision", json_object_get(m, "revision"));
        json_decref(m);
        return out;
}

json_t *worker_images_json(Worker *w) {
        json_t *all = json_object();

        pthread_mutex_lock(&w->image_lock);
        for (size_t i = 0; all && i < w->n_images; i++) {
                const WorkerImageState *img = &w->images[i];
                json_t *rev = streq(img->path, "host") ? NULL : revision_of(img->path);
                json_t *o = json_pack("{s:i, s:o, s:o?, s:b}", "warm", (int) img->warm, "digest",
                                      json_incref(json_object_get(rev, "digest")) ?: json_null(), "revision",
                                      json_incref(json_object_get(rev, "revision")), "follows_server",
                                      img->managed);
                json_decref(rev);
                json_object_set_new(all, img->name, o);
        }
        pthread_mutex_unlock(&w->image_lock);
        return all;
}

/* Called with image_lock held. */
static int sync_one(Worker *w, WorkerImageState *img, bool startup) {
        ImageRemote rm = { .server = w->cfg->server, .token = w->session };
        char remote[72], local[72];
        json_t *meta = NULL;
        unsigned rev = 0;
        bool fetched = false;
        int k;

        k = image_remote_ref(&rm, img->name, remote, &meta);
        if (k == -ENOENT) {
                if (startup && image_current(w->store, img->name, &rev) >= 0)
                        log_warning("Image '%s': the server has not published it; using local revision %u",
                                    img->name, rev);
                else if (startup)
                        log_warning("Image '%s': neither the server nor %s has it; tasks naming it fail until "
                                    "it is published", img->name, image_store_root(w->store));
                return 0;
        }
        if (k < 0)
                return k;
        bool seen = streq(img->server_digest, remote);
        snprintf(img->server_digest, sizeof img->server_digest, "%s", remote);
        /* Later only a change on the server counts, so that a local scheduled
         * rebuild (not published) is not undone by the next poll. */
        if ((!startup && seen) ||
            (image_current_digest(w->store, img->name, NULL, local) >= 0 && streq(local, remote))) {
                json_decref(meta);
                return 0;
        }
        log_info("Image '%s': pulling %s from the server", img->name, remote);
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        k = image_fetch(w->store, &rm, img->name, remote, meta, &rev, &fetched);
        json_decref(meta);
        if (k < 0) {
                img->server_digest[0] = 0; /* try again at the next poll */
                return log_error_errno(k, "Image '%s': failed to pull %s: %m", img->name, remote);
        }
        log_info("Image '%s': revision %u is current (%s, %s in %.1f s)", img->name, rev, remote,
                 fetched ? "fetched, verified and unpacked" : "already here",
                 (double) (now_usec(CLOCK_MONOTONIC) - t0) / 1e6);
        return 1;
}

int worker_images_sync(Worker *w, bool startup) {
        int changed = 0;

        pthread_mutex_lock(&w->image_lock);
        for (size_t i = 0; i < w->n_images; i++)
                if (w->images[i].managed && sync_one(w, &w->images[i], startup) > 0)
                        changed = 1;
        pthread_mutex_unlock(&w->image_lock);
        return changed;
}

int worker_image_ensure(Worker *w, const char *name) {
        int k;

        if (!image_name_valid(name))
                return -ENOENT;
        pthread_mutex_lock(&w->image_lock);
        /* Another task may have pulled it meanwhile. */
        if (pool_has_image(w->pool, name)) {
                pthread_mutex_unlock(&w->image_lock);
                return 0;
        }
        _cleanup_free_ char *path = store_path(w, name);
        WorkerImageState *img = path ? state_add(w, name, path, 0, true) : NULL;
        if (!img) {
                pthread_mutex_unlock(&w->image_lock);
                return -ENOMEM;
        }
        k = sync_one(w, img, true);
        if (k >= 0 && image_current(w->store, name, &(unsigned) { 0 }) < 0)
                k = -ENOENT; /* the server has not published it */
        if (k >= 0) {
                PoolImage pi = { .name = img->name, .path = img->path, .target = 0 };
                k = pool_add_image(w->pool, &pi);
                if (k == -EEXIST)
                        k = 0;
        }
        if (k < 0) {
                free(img->name);
                free(img->path);
                *img = (WorkerImageState) {};
                w->n_images--;
        } else
                atomic_store(&w->images_changed, true);
        pthread_mutex_unlock(&w->image_lock);
        return k;
}

static void report(Worker *w, Client *cl, json_t **last) {
        json_t *now = worker_images_json(w);
        ClientReply rep = {};

        if (!now)
                return;
        if (*last && json_equal(now, *last) && !atomic_exchange(&w->images_changed, false)) {
                json_decref(now);
                return;
        }
        json_t *body = json_pack("{s:O}", "images", now);
        int r = client_call(cl, "POST", "/api/v1/workers/heartbeat", body, 10000L, &rep);
        json_decref(body);
        if (r >= 0 && rep.status == 200) {
                json_decref(*last);
                *last = now;
        } else {
                char msg[256];
                log_debug("Worker heartbeat failed: %s", r < 0 ? strerror(-r) : client_reply_message(&rep, msg, sizeof msg));
                json_decref(now);
        }
        client_reply_done(&rep);
}

void *worker_images_thread(void *arg) {
        Worker *w = arg;
        const WorkerConfig *c = w->cfg;
        _cleanup_(client_freep) Client *cl = NULL;
        size_t n = strv_length(c->rebuilds);
        ImageSchedule sched[n > 0 ? n : 1];
        time_t next[n > 0 ? n : 1];
        uint64_t next_sync = now_usec(CLOCK_MONOTONIC) + c->image_poll_usec, next_report = 0;
        json_t *last = NULL;

        if (client_new(c->server, w->session, &cl) < 0)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                /* Validated by the caller. */
                (void) image_schedule_parse(c->rebuilds[i], &sched[i]);
                next[i] = image_schedule_next(&sched[i], time(NULL));
        }
        while (!atomic_load(&w->draining)) {
                for (size_t i = 0; i < n && !atomic_load(&w->draining); i++)
                        if (time(NULL) >= next[i]) {
                                (void) rebuild_run(w, sched[i].name);
                                next[i] = image_schedule_next(&sched[i], time(NULL));
                        }
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                if (c->image_poll_usec > 0 && now >= next_sync) {
                        (void) worker_images_sync(w, false);
                        next_sync = now_usec(CLOCK_MONOTONIC) + c->image_poll_usec;
                }
                if (now >= next_report || atomic_load(&w->images_changed)) {
                        report(w, cl, &last);
                        next_report = now_usec(CLOCK_MONOTONIC) + REPORT_CHECK_USEC;
                }
                struct timespec ts = timespec_after(CLOCK_REALTIME, 200 * 1000ULL);
                pthread_mutex_lock(&w->lock);
                if (!atomic_load(&w->draining))
                        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
                pthread_mutex_unlock(&w->lock);
        }
        json_decref(last);
        return NULL;
}

