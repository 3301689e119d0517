/* SPDX-License-Identifier: MIT */
#pragma once

/* Workspace and artifact archives: hostile-input-safe extraction and
 * deterministic packing of tar.zst. (Not "archive.h": that name belongs to
 * libarchive's own header, which this module includes.) */

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

typedef struct ArchiveLimits {
        uint64_t max_entries;     /* archive entries (extract) or packed entries */
        uint64_t max_total_bytes; /* sum of apparent file sizes; holes count */
        uint64_t max_file_bytes;  /* apparent size of one file */
        size_t max_path_len;      /* bytes, also for link targets */
        unsigned max_depth;       /* path components */
} ArchiveLimits;

/* 100,000 entries, 8 GiB total, 4 GiB per file, 1024-byte paths, 64 levels. */
extern const ArchiveLimits archive_limits_default;

typedef struct ArchiveStats {
        uint64_t n_entries;
        uint64_t n_files;
        uint64_t n_dirs;
        uint64_t n_symlinks;
        uint64_t n_hardlinks;
        uint64_t n_stripped; /* extract: entries whose setuid/setgid/sticky bits were dropped */
        uint64_t n_skipped;  /* pack: special files and symlinks that point outside */
        uint64_t bytes;      /* apparent size of the regular files */
} ArchiveStats;

/* Why an operation failed, naming the entry; for the user, control
 * characters replaced by '?'. */
typedef struct ArchiveError {
        char message[512];
} ArchiveError;

/* Extracts a tar (plain, gzip, xz or zstd; detected) read from archive_fd
 * into target_dir_fd. All file system work is relative to target_dir_fd and
 * never follows a symlink, so nothing outside it is touched whatever the
 * archive holds. Refused, with the entry named in *ret_error:
 *   -EINVAL        absolute paths, ".." components, a malformed archive
 *   -ELOOP         a path that goes through a symlink; a symlink whose
 *                  target is absolute, climbs above the target directory or
 *                  has ".." after a name (the lexical check is then exact)
 *   -EPERM         device nodes, FIFOs, sockets; a hardlink whose target is
 *                  not a regular file already inside
 *   -EEXIST        a second entry for a path already extracted (except a
 *                  directory over a directory)
 *   -E2BIG         too many entries
 *   -EFBIG         a file or the total past the byte limits (apparent sizes:
 *                  a sparse 1 GiB file counts as 1 GiB)
 *   -ENAMETOOLONG  path or link target too long, or too deep
 * setuid, setgid and sticky bits are stripped (counted in n_stripped);
 * directories always get u+rwx; owners are not restored; file and symlink
 * mtimes are. On failure what was extracted so far stays: the caller
 * discards the directory. l may be NULL for the defaults; ret_stats and
 * ret_error may be NULL. */
int archive_extract_safe(int archive_fd, int target_dir_fd, const ArchiveLimits *l,
                         ArchiveStats *ret_stats, ArchiveError *ret_error);

/* Packs the entries under dir_fd whose relative path matches one of globs
 * into a tar.zst written to out_fd. Globs are fnmatch() patterns applied per
 * path component ('*' does not cross '/'), "**" matches any number of
 * components, a matching directory brings everything below it; parent
 * directories of packed entries are packed too. -EINVAL for an absolute
 * glob or one with "..". */
int archive_pack(int dir_fd, char *const *globs, int out_fd, const ArchiveLimits *l,
                 ArchiveStats *ret_stats, ArchiveError *ret_error);

/* Packs everything under dir_fd except the paths matching exclude_globs (a
 * matching directory is skipped whole); exclude_globs may be NULL. */
int archive_pack_dir(int dir_fd, char *const *exclude_globs, int out_fd, const ArchiveLimits *l,
                     ArchiveStats *ret_stats, ArchiveError *ret_error);

/* A SHA-256 over what archive_pack_dir() would pack, as the file system
 * describes it — each entry's path, type and mode, size, link target, and
 * inode, device, mtime and ctime to the nanosecond — without reading a file
 * or touching libarchive: equal stamps mean the packer would read the same
 * files unchanged, so the archive's digest can be remembered under its
 * stamp. *ret_newest is the newest mtime or ctime seen (ns since the epoch):
 * a stamp is only trustworthy once the clock has moved past it, since a
 * write within the file system's timestamp granularity leaves no trace. */
int archive_pack_dir_stamp(int dir_fd, char *const *exclude_globs, const ArchiveLimits *l, uint8_t ret[32],
                           int64_t *ret_newest, ArchiveError *ret_error);

/* Both packers produce the same bytes for the same tree: entries sorted by
 * path, uid/gid 0 and no user or group names, permission bits without
 * setuid/setgid/sticky, mtimes in whole seconds for files and symlinks and 0
 * for directories. Symlinks are stored as symlinks; one the extractor would
 * refuse (pointing outside) is skipped, as are FIFOs, sockets and devices.
 * Hardlinked files are stored as separate files. A file that changes size
 * while being packed fails the pack (-EIO). */

/* Root file systems (images): like archive_extract_safe() and
 * archive_pack_dir(), with the same refusals of paths that leave the target,
 * links through which an entry would be written, device nodes, FIFOs and
 * sockets, and the same limits, but keeping what an operating system tree
 * needs: numeric owners, setuid/setgid/sticky bits, and symlinks whatever
 * their target (absolute ones are normal in a root file system; they are
 * resolved inside the sandbox, and the extractor never follows a link). The
 * packer is deterministic in the same way, with owners as on disk. */
typedef enum ArchiveRootfsFlags {
        /* Character and block devices directly in dev/ (what mmdebstrap's and
         * docker export's tarballs carry) are skipped and counted in
         * n_skipped instead of refused: the backend makes its own /dev.
         * Anywhere else they are refused still. */
        ARCHIVE_ROOTFS_SKIP_DEV_NODES = 1 << 0,
} ArchiveRootfsFlags;

int archive_extract_rootfs(int archive_fd, int target_dir_fd, const ArchiveLimits *l, ArchiveRootfsFlags flags,
                           ArchiveStats *ret_stats, ArchiveError *ret_error);
int archive_pack_rootfs(int dir_fd, int out_fd, const ArchiveLimits *l, ArchiveStats *ret_stats,
                        ArchiveError *ret_error);

bool archive_glob_match(const char *glob, const char *path);
