/* SPDX-License-Identifier: MIT */
#pragma once

/* Building, importing and validating image revisions (docs/images.md).
 *
 * A build runs three steps, each appending to the revision's log:
 *   base      mmdebstrap --variant=minbase --include=PACKAGES SUITE into the
 *             staged revision (or, with a base cache, a copy of an earlier
 *             mmdebstrap of the same suite and packages);
 *   script    the provisioning script run by /bin/sh in a sandbox of the
 *             staged root file system with NAT networking; the sandbox's
 *             writable layer is then merged into the root file system;
 *   validate  the validation command run `tries` times, each in a fresh
 *             sandbox of the staged revision; the revision is committed
 *             (made current) only when at least min_success of them passed.
 * Any failure removes the staged revision, leaves current alone and names
 * the step and the log. */

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "image-store.h"
#include "sandbox.h"

#define IMAGE_SCRIPT_MAX (1U << 20)
#define IMAGE_PACKAGES_MAX 1024

typedef struct ImageRecipe {
        char *suite;          /* from "debian:SUITE"; NULL for imports */
        char **packages;
        char *script;         /* the provisioning script's contents, or NULL */
        char *validate;       /* shell command, or NULL */
        unsigned tries;       /* default 3 */
        double min_success;   /* fraction of tries, default 0.8 */
        /* Not part of the recorded recipe: */
        char *base_cache;     /* directory for cached mmdebstrap bases, or NULL */
        BindMount *binds;     /* for the script and validation sandboxes */
        size_t n_binds;
        uint64_t step_timeout_usec;
        unsigned keep;
} ImageRecipe;

void image_recipe_init(ImageRecipe *r);
void image_recipe_done(ImageRecipe *r);
json_t *image_recipe_to_json(const ImageRecipe *r);
/* The recorded parts (suite, packages, script, validate, tries, min_success). */
int image_recipe_from_json(json_t *j, ImageRecipe *r);

typedef struct ImageResult {
        unsigned rev;
        bool committed;
        char step[16];     /* the step that failed */
        char message[512]; /* why */
        char *log_path;
        char digest[72];
} ImageResult;

void image_result_done(ImageResult *res);

/* Returns 0 when the revision became current, -errno otherwise; in both
 * cases res says what happened. */
int image_build(ImageStore *s, const char *name, const ImageRecipe *r, ImageResult *res);
int image_import(ImageStore *s, const char *name, const char *source, const ImageRecipe *r, ImageResult *res);
