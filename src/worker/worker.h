/* SPDX-License-Identifier: MIT */
#pragma once

/* kiln worker: registers with a server, keeps a warm pool of sandboxes, claims
 * tasks with its free slots and runs each in a fresh sandbox (docs/worker.md).
 *
 * worker_run() is embeddable: it keeps no global state and installs no signal
 * handlers. The caller owns signals and asks the worker to stop through
 * stop_fd, an eventfd: each unit written is one stop request — the first
 * drains (stop claiming, let running tasks finish up to drain_timeout), the
 * second stops the running tasks at once so that they are queued again. */

#include <stdbool.h>
#include <stdint.h>

#include "archive-safe.h"

typedef struct WorkerImage {
        const char *name;  /* as job specs name it */
        const char *path;  /* "host" or a root file system directory; unused when managed */
        unsigned warm;     /* sandboxes to keep prepared */
        bool managed;      /* data_dir/images/NAME, following the server's published revision */
} WorkerImage;

typedef struct WorkerConfig {
        const char *server;      /* http://host:port */
        const char *token;       /* registration token (kind worker or admin) */
        const char *name;
        unsigned slots;
        char **labels;           /* "key=value" */
        const WorkerImage *images;
        size_t n_images;
        const char *default_image; /* for specs without "image" */
        const char *data_dir;
        /* Limits of warm sandboxes; tasks whose resources differ get a cold one. */
        uint64_t memory_max, pids_max, cpu_millis, disk_max;
        int network; /* NetworkMode of every sandbox: none (loopback only) or nat */
        uint64_t drain_timeout_usec;
        uint64_t kill_grace_usec;    /* SIGTERM → SIGKILL on timeout and cancel */
        uint64_t task_timeout_usec;  /* for specs without "timeout" */
        uint64_t log_max;            /* bytes per attempt's log; 0 = no cap */
        uint64_t claim_wait_usec;
        uint64_t cancel_poll_usec;   /* heartbeat at least this often (cancel latency) */
        uint64_t blob_max;
        uint64_t min_free;           /* no claims while data_dir has less free space; 0 = no check */
        ArchiveLimits workspace_limits;
        ArchiveLimits artifact_limits;
        const char *metrics_listen;  /* ADDR:PORT for /metrics, or NULL */
        uint64_t image_poll_usec;    /* how often followed images are compared with the server; 0 = never */
        char **rebuilds;             /* "NAME@HH:MM": daily rebuilds in one of the slots */
        const char *base_cache;      /* --base-cache of the rebuilds, or NULL */
        int stop_fd;                 /* eventfd owned by the caller, or -1 */
} WorkerConfig;

/* Fills in the defaults. */
void worker_config_init(WorkerConfig *c);

/* Runs until stopped. Returns 0 after a clean stop, -errno otherwise. */
int worker_run(const WorkerConfig *c);
