/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "macro.h"
#include "secrets.h"

static int key_create(const char *path, uint8_t key[SECRET_KEY_SIZE]) {
        char tmp[4096];
        _cleanup_close_ int fd = -EBADF;
        int r;

        if ((size_t) snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
                return -ENAMETOOLONG;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        randombytes_buf(key, SECRET_KEY_SIZE);
        r = loop_write(fd, key, SECRET_KEY_SIZE);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlink(tmp);
                sodium_memzero(key, SECRET_KEY_SIZE);
        }
        return r;
}

int secrets_key_load(const char *datadir, uint8_t key[SECRET_KEY_SIZE]) {
        char path[4096];
        struct stat st;
        _cleanup_close_ int fd = -EBADF;

        if (sodium_init() < 0)
                return -EIO;
        if ((size_t) snprintf(path, sizeof path, "%s/secrets.key", datadir) >= sizeof path - 8)
                return -ENAMETOOLONG;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT)
                return key_create(path, key);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if ((st.st_mode & 077) != 0 || st.st_uid != geteuid())
                return -EPERM;
        if (st.st_size != SECRET_KEY_SIZE)
                return -EBADMSG;
        ssize_t n = loop_read(fd, key, SECRET_KEY_SIZE);
        if (n < 0)
                return (int) n;
        return n == SECRET_KEY_SIZE ? 0 : -EBADMSG;
}

const char *secret_name_invalid(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0)
                return "a secret name must not be empty";
        if (n > SECRET_NAME_MAX)
                return "a secret name is at most 64 characters";
        for (size_t i = 0; i < n; i++) {
                char ch = name[i];
                bool ok = ch == '_' || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                          (i > 0 && ch >= '0' && ch <= '9');
                if (!ok)
                        return "a secret name is letters, digits and '_', not starting with a digit";
        }
        return NULL;
}

const char *secret_value_invalid(const char *value, size_t len) {
        if (len < SECRET_MIN_LEN)
                return "secret values shorter than 6 characters are refused: the worker masks "
                       "secrets in logs, and masking a very short string would hide ordinary "
                       "output without protecting anything";
        if (len > SECRET_MAX_LEN)
                return "secret values are at most 64 KiB";
        if (memchr(value, '\0', len))
                return "secret values must not contain NUL bytes";
        return NULL;
}

int secret_seal(const uint8_t key[SECRET_KEY_SIZE], const char *value, size_t len, uint8_t **ret,
                size_t *ret_len) {
        size_t n = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + len;
        uint8_t *out = malloc(n);
        if (!out)
                return -ENOMEM;
        randombytes_buf(out, crypto_secretbox_NONCEBYTES);
        crypto_secretbox_easy(out + crypto_secretbox_NONCEBYTES, (const unsigned char *) value, len,
                              out, key);
        *ret = out;
        *ret_len = n;
        return 0;
}

int secret_open(const uint8_t key[SECRET_KEY_SIZE], const uint8_t *sealed, size_t len, char **ret,
                size_t *ret_len) {
        if (len < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)
                return -EBADMSG;
        size_t n = len - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
        char *out = malloc(n + 1);
        if (!out)
                return -ENOMEM;
        if (crypto_secretbox_open_easy((unsigned char *) out, sealed + crypto_secretbox_NONCEBYTES,
                                       len - crypto_secretbox_NONCEBYTES, sealed, key) != 0) {
                free(out);
                return -EBADMSG;
        }
        out[n] = 0;
        *ret = out;
        if (ret_len)
                *ret_len = n;
        return 0;
}
