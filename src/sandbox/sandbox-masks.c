/* SPDX-License-Identifier: MIT */
/* What hides the host's secrets from a sandbox on the host image: opaque
 * empty directories for /root, /home, /run…, empty files for /etc/shadow…,
 * whiteouts for SSH host keys. They go into a small tmpfs layer that each
 * sandbox's PID 1 mounts in its own mount namespace and stacks between the
 * writable layer and the image — memory, not disk: no metadata writes to
 * create, none to delete, nothing left when the sandbox is gone.
 *
 * The manifest is computed by the host side for every sandbox from the
 * host's current state (stat and glob only), so a new key under
 * /etc/ssl/private is masked from the next sandbox on. Each line:
 * "KIND MODE UID GID PATH", owners as in the image. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "sandbox-internal.h"
#include "strv.h"

static const char *const masked_dirs[] = {
        "/root", "/home", "/run", "/tmp", "/var/tmp", "/var/lib/kiln", "/etc/kiln",
        "/var/spool/cron", "/var/lib/sss", "/etc/sudoers.d",
};
static const char *const masked_files[] = {
        "/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers",
};
static const char *const masked_globs[] = {
        "/etc/ssh/ssh_host_*", "/etc/ssl/private/*",
};

typedef enum MaskKind {
        MASK_DIR,      /* an opaque empty directory */
        MASK_FILE,     /* an empty file */
        MASK_WHITEOUT, /* absent */
        MASK_PARENT,   /* a plain directory on the way to a mask */
} MaskKind;

typedef struct Manifest {
        char *text;
        size_t len, alloc;
} Manifest;

static int manifest_add(Manifest *m, MaskKind k, const char *path, const struct stat *st) {
        char line[4200];
        int n = snprintf(line, sizeof line, "%d %o %u %u %s\n", (int) k, (unsigned) (st->st_mode & 07777),
                         (unsigned) st->st_uid, (unsigned) st->st_gid, path);
        if (n < 0 || (size_t) n >= sizeof line)
                return -ENAMETOOLONG;
        if (m->len + (size_t) n + 1 > m->alloc) {
                size_t a = MAX(m->alloc * 2, m->len + (size_t) n + 1024);
                char *t = realloc(m->text, a);
                if (!t)
                        return -ENOMEM;
                m->text = t;
                m->alloc = a;
        }
        memcpy(m->text + m->len, line, (size_t) n + 1);
        m->len += (size_t) n;
        return 0;
}

/* Adds path's parents (once each: the manifest is scanned) and path itself. */
static int manifest_mask(Manifest *m, const char *path, bool whiteout) {
        struct stat st;
        char buf[4096];

        if (!path_is_absolute(path) || strlen(path) >= sizeof buf || streq(path, "/"))
                return -EINVAL;
        if (lstat(path, &st) < 0 || S_ISLNK(st.st_mode))
                return 0; /* nothing to hide; a symlink leads to a path masked on its own */
        snprintf(buf, sizeof buf, "%s", path);
        for (char *s = buf + 1; *s; s++) {
                struct stat pst;
                if (*s != '/')
                        continue;
                *s = 0;
                if (lstat(buf, &pst) < 0 || !S_ISDIR(pst.st_mode))
                        return 0;
                char key[4200];
                snprintf(key, sizeof key, " %s\n", buf);
                if (!m->text || !strstr(m->text, key)) {
                        int r = manifest_add(m, MASK_PARENT, buf, &pst);
                        if (r < 0)
                                return r;
                }
                *s = '/';
        }
        return manifest_add(m, whiteout ? MASK_WHITEOUT : S_ISDIR(st.st_mode) ? MASK_DIR : MASK_FILE, path,
                            &st);
}

static int manifest_build(char **extra, Manifest *ret) {
        Manifest m = {};
        int r = 0;

        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(masked_dirs); i++)
                r = manifest_mask(&m, masked_dirs[i], false);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(masked_files); i++)
                r = manifest_mask(&m, masked_files[i], false);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(masked_globs); i++) {
                glob_t g = {};
                if (glob(masked_globs[i], 0, NULL, &g) == 0)
                        for (size_t k = 0; r >= 0 && k < g.gl_pathc; k++)
                                r = manifest_mask(&m, g.gl_pathv[k], true);
                globfree(&g);
        }
        if (r >= 0)
                r = manifest_mask(&m, sandbox_root_dir(), false);
        for (char **p = extra; r >= 0 && p && *p; p++)
                r = manifest_mask(&m, *p, false);
        if (r < 0) {
                free(m.text);
                return r;
        }
        if (!m.text && !(m.text = strdup("")))
                return -ENOMEM;
        *ret = m;
        return 0;
}

static int apply_line(int tree_fd, const char *line, uint32_t base) {
        int kind;
        unsigned mode, uid, gid;
        char path[4096];

        if (sscanf(line, "%d %o %u %u %4095[^\n]", &kind, &mode, &uid, &gid, path) != 5 || path[0] != '/')
                return -EBADMSG;
        const char *rel = path + 1;
        switch (kind) {
        case MASK_PARENT:
        case MASK_DIR:
                if (mkdirat(tree_fd, rel, mode) < 0 && errno != EEXIST)
                        return -errno;
                if (kind == MASK_DIR) {
                        _cleanup_close_ int fd = openat(tree_fd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        /* Opaque: the overlay shows none of the image's entries below. */
                        if (fd < 0 || fsetxattr(fd, "trusted.overlay.opaque", "y", 1, 0) < 0)
                                return -errno;
                }
                break;
        case MASK_FILE: {
                _cleanup_close_ int fd = openat(tree_fd, rel, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode);
                if (fd < 0)
                        return -errno;
                break;
        }
        case MASK_WHITEOUT:
                if (mknodat(tree_fd, rel, S_IFCHR | 0000, makedev(0, 0)) < 0)
                        return -errno;
                return 0;
        default:
                return -EBADMSG;
        }
        /* The image's owners, shifted into the sandbox's uid range. */
        if (fchownat(tree_fd, rel, uid + base, gid + base, AT_SYMLINK_NOFOLLOW) < 0 ||
            fchmodat(tree_fd, rel, mode, 0) < 0)
                return -errno;
        return 0;
}

int sandbox_mask_apply(int layer_fd, const char *manifest, uint32_t base) {
        for (const char *l = manifest; l && *l;) {
                int r = apply_line(layer_fd, l, base);
                if (r < 0)
                        return r;
                l = strchr(l, '\n');
                l = l ? l + 1 : "";
        }
        return 0;
}

int sandbox_mask_manifest(char **extra_masks, char **ret) {
        Manifest m;
        int r = manifest_build(extra_masks, &m);
        if (r < 0)
                return r;
        *ret = m.text;
        return 0;
}
