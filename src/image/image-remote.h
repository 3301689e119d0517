/* SPDX-License-Identifier: MIT */
#pragma once

/* Publishing revisions to a kiln server and pulling them from one
 * (docs/images.md, *Distribution*): the revision's rootfs.tar.zst is a
 * content-addressed blob; PUT /api/v1/images/NAME names the current one. */

#include <stdbool.h>

#include <jansson.h>

#include "image-store.h"

typedef struct ImageRemote {
        const char *server;
        const char *token;
} ImageRemote;

/* Uploads revision rev's archive (if the server lacks it) and publishes it
 * as NAME's current revision. */
int image_push(ImageStore *s, const ImageRemote *remote, const char *name, unsigned rev, char ret_digest[static 72]);

/* Reports a build's outcome (POST /api/v1/images/NAME/builds): an event. */
int image_report_build(const ImageRemote *remote, const char *name, json_t *outcome);

/* The digest (and meta, if ret_meta) of NAME's published revision; -ENOENT
 * when the server has none. */
int image_remote_ref(const ImageRemote *remote, const char *name, char ret_digest[static 72], json_t **ret_meta);

/* The current local revision and its digest; -ENOENT when there is none. */
int image_current_digest(ImageStore *s, const char *name, unsigned *ret_rev, char ret_digest[static 72]);

/* Makes the blob digest NAME's current local revision: switches to the local
 * revision that already has that digest, or streams the blob to disk while
 * hashing it (a mismatch is refused), unpacks it as a new revision and
 * commits it, which must pack to the same digest. ref_meta (borrowed, may be
 * NULL) becomes the new revision's meta. What kiln image pull and the worker
 * (kiln worker --image NAME) run. */
int image_fetch(ImageStore *s, const ImageRemote *remote, const char *name, const char *digest, json_t *ref_meta,
                unsigned *ret_rev, bool *ret_fetched);

/* image_remote_ref() + image_fetch(): NAME's published revision made current. */
int image_pull(ImageStore *s, const ImageRemote *remote, const char *name, unsigned *ret_rev,
               char ret_digest[static 72], bool *ret_fetched);
