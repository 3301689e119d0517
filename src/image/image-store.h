/* SPDX-License-Identifier: MIT */
#pragma once

/* The local image store (docs/images.md):
 *
 *   <data>/images/<name>/
 *       revs/<N>/rootfs            the revision's root file system
 *       revs/<N>/rootfs.tar.zst    its deterministic archive; the revision's
 *                                  digest is this file's sha256 (what the
 *                                  server stores as a blob)
 *       revs/<N>/meta.json         digest, recipe, validation, timing
 *       revs/<N>.new/              a revision being built or imported
 *       current -> revs/<N>        switched with rename(2): atomic
 *       logs/<N>.log               build or import log, kept for failures too
 *       image.json                 the last build's outcome
 *       .lock                      flock()ed while revisions are allocated,
 *                                  committed, switched or removed
 *
 * Revision numbers increase and are never reused. */

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#define IMAGE_NAME_MAX 64
#define IMAGE_KEEP_DEFAULT 3U
#define IMAGE_REVS_MAX 4096

typedef struct ImageStore ImageStore;

/* <data_dir>/images, created when missing. */
int image_store_open(const char *data_dir, ImageStore **ret);
ImageStore *image_store_free(ImageStore *s);
static inline void image_store_freep(ImageStore **s) {
        image_store_free(*s);
}
#define _cleanup_image_store_ _cleanup_(image_store_freep)

const char *image_store_root(const ImageStore *s);

/* [a-z0-9][a-z0-9._-]*, at most IMAGE_NAME_MAX bytes; not "host". */
bool image_name_valid(const char *name);
/* "NAME" or "NAME@REV"; *ret_rev is 0 without "@REV". */
int image_ref_parse(const char *ref, char **ret_name, unsigned *ret_rev);

/* Takes the image's lock, creating the image's directories. Returns the fd. */
int image_lock(ImageStore *s, const char *name);

/* Allocates the next revision number and creates revs/<N>.new/rootfs and
 * logs/<N>.log (opened for appending, returned in *ret_log_fd). */
int image_rev_begin(ImageStore *s, const char *name, unsigned *ret_rev, int *ret_log_fd);

/* Paths, allocated: revs/<N>.new (staging) or revs/<N>, and the log. */
char *image_rev_dir(const ImageStore *s, const char *name, unsigned rev, bool staging);
char *image_log_path(const ImageStore *s, const char *name, unsigned rev);

/* Packs the staged rootfs into rootfs.tar.zst, computes its digest, adds
 * digest, size and created to meta, writes meta.json, renames revs/<N>.new
 * to revs/<N>, switches current to it and removes the oldest revisions
 * beyond keep (never current). meta is borrowed. */
int image_rev_commit(ImageStore *s, const char *name, unsigned rev, json_t *meta, unsigned keep);

/* Removes the staged revision and records the failure (its step, message
 * and log) as the image's last build. */
int image_rev_abort(ImageStore *s, const char *name, unsigned rev, json_t *failure);

/* The current revision, -ENOENT when there is none. */
int image_current(ImageStore *s, const char *name, unsigned *ret_rev);
/* Points current at rev atomically; -ENOENT for an unknown revision. */
int image_switch(ImageStore *s, const char *name, unsigned rev);
/* The committed revisions, ascending. */
int image_revs(ImageStore *s, const char *name, unsigned **ret, size_t *ret_n);
/* The image names, sorted. */
int image_names(ImageStore *s, char ***ret);
int image_rev_meta(ImageStore *s, const char *name, unsigned rev, json_t **ret);
/* image.json, or an empty object. */
int image_info(ImageStore *s, const char *name, json_t **ret);
int image_info_update(ImageStore *s, const char *name, const char *key, json_t *value);
/* Removes one revision (never the current one: -EBUSY) or, rev == 0, the
 * whole image. */
int image_remove(ImageStore *s, const char *name, unsigned rev);

/* Holds the revision whose root file system rootfs_path is (or, through
 * current, resolves to now): a shared flock on its revs/<N> directory,
 * returned as an fd to keep for as long as a sandbox uses it. While held,
 * keeping the last K skips the revision and image_remove() answers -EBUSY.
 * The resolved rootfs directory is returned in *ret_rootfs if not NULL: pass
 * that, not the current link, to the sandbox, so both name one revision. */
int image_hold(const char *rootfs_path, char **ret_rootfs);

/* "sha256:<hex>" of the file's bytes. */
int image_file_digest(int fd, char ret[static 72], uint64_t *ret_size);
