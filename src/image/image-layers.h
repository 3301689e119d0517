/* SPDX-License-Identifier: MIT */
#pragma once

/* Filling a root file system from layers: OCI image layouts (a directory or
 * a tar of one), `docker save` archives and plain root file system tarballs,
 * and the writable layer of a sandbox in which a provisioning script ran.
 *
 * Every layer is first extracted with archive_extract_rootfs() into an empty
 * scratch directory (so the hostile-archive rules of workspaces apply: no
 * path leaves the target, nothing is written through a symlink, no device
 * nodes), then merged into the root file system with fd-relative, no-follow
 * operations: whiteouts remove what lower layers had, opaque directories
 * drop their lower content, everything else replaces what was there. */

#include <sys/types.h>

#include "archive-safe.h"

typedef enum LayerKind {
        LAYER_OCI,     /* whiteouts are ".wh.NAME" files, ".wh..wh..opq" marks an opaque directory */
        LAYER_OVERLAY, /* an overlayfs upper directory: 0/0 character devices and trusted.overlay.opaque */
        _LAYER_KIND_MAX,
} LayerKind;

extern const ArchiveLimits image_rootfs_limits;

/* Moves (or copies, across file systems) the tree under src_fd into dst_fd.
 * Owners are shifted down by uid_shift (the host uid of the sandbox's root
 * for LAYER_OVERLAY; 0 otherwise). src_fd's tree is consumed. */
int layer_merge(int src_fd, int dst_fd, LayerKind kind, uid_t uid_shift, ArchiveError *ret_error);

/* Imports source (a directory holding an OCI layout or an unpacked docker
 * save archive, or a tar of either, or a root file system tarball) into the
 * empty directory rootfs_fd, using scratch_dir (created, then removed) for
 * the layers. *ret_format: "oci", "docker" or "rootfs". Progress goes to
 * log_fd. */
int image_import_source(const char *source, int rootfs_fd, const char *scratch_dir, int log_fd,
                        const char **ret_format, ArchiveError *ret_error);
