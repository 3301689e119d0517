/* SPDX-License-Identifier: MIT */
#pragma once

/* Publishing revisions to a kiln server and pulling them from one
 * (docs/images.md, *Distribution*): the revision's rootfs.tar.zst is a
 * content-addressed blob; PUT /api/v1/images/NAME names the current one. */

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

/* Fetches NAME's published revision, verifies its digest while writing it
 * to disk, unpacks it as a new local revision (or switches to the local
 * revision that already has that digest) and makes it current. */
int image_pull(ImageStore *s, const ImageRemote *remote, const char *name, unsigned *ret_rev,
               char ret_digest[static 72], bool *ret_fetched);
