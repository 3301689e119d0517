/* SPDX-License-Identifier: MIT */
/* libFuzzer target: a workspace or artifact archive as an untrusted input.
 * Extraction may refuse it, but must never crash, and must never create
 * anything outside its target directory: a sibling directory must stay
 * empty whatever the archive says. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive-safe.h"
#include "fd-util.h"
#include "fs-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool dir_is_empty(const char *path) {
        DIR *d = opendir(path);
        struct dirent *de;
        bool empty = true;
        if (!d)
                return false;
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        empty = false;
        closedir(d);
        return empty;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* Small limits keep a fuzzed "bomb" cheap while still exercising them. */
        static const ArchiveLimits limits = {
                .max_entries = 256, .max_total_bytes = 1 << 20, .max_file_bytes = 1 << 19,
                .max_path_len = 512, .max_depth = 16,
        };
        char top[] = "/tmp/kiln-fuzz-archive-XXXXXX", target[64], outside[64];
        ArchiveStats stats;
        ArchiveError err = {};

        if (!mkdtemp(top))
                abort();
        snprintf(target, sizeof target, "%s/target", top);
        snprintf(outside, sizeof outside, "%s/outside", top);
        if (mkdir(target, 0755) < 0 || mkdir(outside, 0755) < 0)
                abort();
        _cleanup_close_ int in = memfd_create("archive", MFD_CLOEXEC);
        _cleanup_close_ int dfd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (in < 0 || dfd < 0 || loop_write(in, data, size) < 0 || lseek(in, 0, SEEK_SET) < 0)
                abort();

        int r = archive_extract_safe(in, dfd, &limits, &stats, &err);
        if (r < 0 && !err.message[0])
                abort(); /* a refusal must say why */
        if (!dir_is_empty(outside))
                abort();
        if (rm_rf(top) < 0)
                abort();
        return 0;
}
