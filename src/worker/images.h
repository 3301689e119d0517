/* SPDX-License-Identifier: MIT */
#pragma once

/* The worker's images (docs/worker.md, *Images*): the list it serves, the
 * ones it follows from the server by name (pulled by digest into the image
 * store under its data directory, unpacked once), what it reports to the
 * server, and the scheduled rebuilds, which take one of its slots. */

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

typedef struct Worker Worker;

typedef struct WorkerImageState {
        char *name;
        char *path;  /* "host", a root file system directory, or a store's .../current/rootfs */
        unsigned warm;
        bool managed; /* follows the server's published revision */
        char server_digest[72]; /* the server's, when last looked at */
} WorkerImageState;

/* Opens the image store and builds the list from the configuration. */
int worker_images_init(Worker *w);
void worker_images_done(Worker *w);

/* {"NAME": {"warm", "digest", "revision"}}: what registration and worker
 * heartbeats carry. */
json_t *worker_images_json(Worker *w);

/* Brings every image the worker follows in line with the server: at start
 * when the local current revision's digest differs from the server's, later
 * when the server's changed. Returns > 0 when a current revision changed. */
int worker_images_sync(Worker *w, bool startup);

/* For a task naming an image the worker does not serve: pulls it from the
 * server and adds it to the pool. -ENOENT when the server has none. */
int worker_image_ensure(Worker *w, const char *name);

/* The thread that polls the server, reports and runs scheduled rebuilds
 * (rebuild.h); it ends once the worker drains. */
void *worker_images_thread(void *worker);
