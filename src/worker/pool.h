/* SPDX-License-Identifier: MIT */
#pragma once

/* The warm pool: one long-lived thread prepares (and destroys) every sandbox
 * of a worker, because a sandbox's init dies with the thread that created it.
 * It keeps `target` prepared sandboxes per image, hands them to tasks, builds
 * a cold one when a task needs limits the warm ones do not have (or none is
 * ready), and refills in the background after each use. A sandbox serves
 * exactly one task attempt.
 *
 * Images follow revisions: a sandbox is prepared from the revision its image
 * path resolves to at that moment (image_hold(): a kiln image store's
 * current link is resolved once and the revision held until the sandbox is
 * destroyed), so a running task keeps its revision. Warm sandboxes of a
 * revision that is no longer current are retired — destroyed instead of
 * used, when a task asks or within a second — and replaced by the refill. */

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"
#include "sandbox.h"

#define POOL_IMAGES_MAX 64

typedef struct PoolImage {
        char *name;     /* what job specs say: "host" or a name given with --image */
        char *path;     /* "host" or a root file system directory */
        unsigned target; /* warm sandboxes to keep */
} PoolImage;

typedef struct PoolLimits {
        uint64_t memory_max, pids_max, cpu_millis, disk_max;
        NetworkMode network;
} PoolLimits;

typedef struct PoolStats {
        char name[128];
        unsigned ready, target;
} PoolStats;

typedef struct Pool Pool;

/* images are copied. */
int pool_new(const PoolImage *images, size_t n_images, const PoolLimits *defaults, Pool **ret);
/* Stops the pool thread after destroying every sandbox it holds or was
 * handed back. */
Pool *pool_free(Pool *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(Pool *, pool_free);

/* Adds an image (a pulled one) at run time; -EEXIST when it is there. */
int pool_add_image(Pool *p, const PoolImage *img);

/* A sandbox for one task: a warm one when its limits are the defaults and one
 * is ready, else one prepared now. -ENOENT for an unknown image. */
int pool_acquire(Pool *p, const char *image, const PoolLimits *l, Sandbox **ret, bool *ret_warm);
/* A warm sandbox's hand-over starts its task's dispatch. Until pool_settle()
 * (the task's first log bytes acknowledged, or its report) or
 * POOL_QUIET_MAX_USEC, the pool thread serves only tasks waiting for a
 * sandbox: refilling and destroying take a clone of the worker's address
 * space (which stalls its other threads), mounts and milliseconds of CPU that
 * would otherwise compete with the task. Once per warm acquire. */
#define POOL_QUIET_MAX_USEC (100 * 1000ULL)
void pool_settle(Pool *p);
/* Hands a used sandbox back for destruction. */
void pool_release(Pool *p, Sandbox *s);

size_t pool_stats(Pool *p, PoolStats *ret, size_t max);
/* Sandboxes prepared, their total preparation time, and warm sandboxes
 * retired because their revision was no longer current. */
void pool_prepare_times(Pool *p, uint64_t *ret_count, uint64_t *ret_sum_usec, uint64_t *ret_retired);
bool pool_has_image(Pool *p, const char *image);
