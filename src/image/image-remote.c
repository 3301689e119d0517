/* SPDX-License-Identifier: MIT */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "archive-safe.h"
#include "fd-util.h"
#include "fs-util.h"
#include "http-client.h"
#include "image-layers.h"
#include "image-remote.h"
#include "log.h"
#include "macro.h"

#define IMAGE_BLOB_MAX (UINT64_C(64) << 30)

static int api_json(const ImageRemote *rm, const char *method, const char *path, json_t *body, json_t **ret) {
        _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        _cleanup_(http_result_done) HttpResult res = {};
        char buf[256];
        int k;

        if (body && !text)
                return -ENOMEM;
        k = http_client_request(rm->server, rm->token, method, path, text, text ? strlen(text) : 0, NULL, &res);
        if (k < 0)
                return k; /* logged */
        if (res.status == 404)
                return -ENOENT;
        if (res.status < 200 || res.status >= 300)
                return log_error_errno(EIO, "%s %s: %ld %s", method, path, res.status,
                                       http_result_message(&res, buf, sizeof buf));
        if (ret) {
                *ret = json_loadb(res.body ?: "", res.size, 0, NULL);
                if (!*ret)
                        return log_error_errno(EBADMSG, "%s %s: the answer is not JSON", method, path);
        }
        return 0;
}

typedef struct Transfer {
        int fd;
        uint64_t size, limit;
        crypto_hash_sha256_state hash;
        int error;
} Transfer;

static size_t on_read(char *p, size_t size, size_t n, void *userdata) {
        Transfer *t = userdata;
        ssize_t k = read(t->fd, p, size * n);
        if (k < 0) {
                t->error = -errno;
                return CURL_READFUNC_ABORT;
        }
        return (size_t) k;
}

static size_t on_discard(char *p, size_t size, size_t n, void *userdata) {
        return size * n;
}

static size_t on_write(char *p, size_t size, size_t n, void *userdata) {
        Transfer *t = userdata;
        size_t len = size * n;
        if (t->size + len > t->limit) {
                t->error = -EFBIG;
                return 0;
        }
        int k = loop_write(t->fd, p, len);
        if (k < 0) {
                t->error = k;
                return 0;
        }
        crypto_hash_sha256_update(&t->hash, (const uint8_t *) p, len);
        t->size += len;
        return len;
}

/* Streams a blob from or to fd: images are larger than any buffer. */
static int blob_transfer(const ImageRemote *rm, const char *digest, int fd, bool upload, uint64_t size,
                         Transfer *t) {
        struct curl_slist *headers = NULL;
        _cleanup_free_ char *url = NULL, *auth = NULL;
        long status = 0;
        int r = 0;

        *t = (Transfer) { .fd = fd, .limit = IMAGE_BLOB_MAX };
        crypto_hash_sha256_init(&t->hash);
        CURL *c = curl_easy_init();
        if (!c)
                return -ENOMEM;
        if (asprintf(&url, "%s/api/v1/blobs/%s", rm->server, digest) < 0 ||
            asprintf(&auth, "Authorization: Bearer %s", rm->token ?: "") < 0) {
                curl_easy_cleanup(c);
                return -ENOMEM;
        }
        headers = curl_slist_append(headers, auth);
        headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
        headers = curl_slist_append(headers, "Expect:");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
        if (upload) {
                curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
                curl_easy_setopt(c, CURLOPT_READDATA, t);
                curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t) size);
                curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_discard);
        } else {
                curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
                curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
                curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
        }
        CURLcode cc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (t->error < 0)
                r = t->error;
        else if (cc != CURLE_OK)
                r = log_error_errno(EIO, "%s %s: %s", upload ? "PUT" : "GET", url, curl_easy_strerror(cc));
        else if (status < 200 || status >= 300)
                r = log_error_errno(EIO, "%s %s: HTTP %ld", upload ? "PUT" : "GET", url, status);
        curl_slist_free_all(headers);
        curl_easy_cleanup(c);
        memset(auth, 0, strlen(auth));
        return r;
}

int image_push(ImageStore *s, const ImageRemote *rm, const char *name, unsigned rev, char ret_digest[static 72]) {
        _cleanup_free_ char *dir = image_rev_dir(s, name, rev, false), *archive = NULL, *path = NULL;
        json_t *meta = NULL, *missing = NULL, *body;
        struct stat st;
        Transfer t;
        int k;

        if (!dir || asprintf(&archive, "%s/rootfs.tar.zst", dir) < 0 || asprintf(&path, "/api/v1/images/%s", name) < 0)
                return -ENOMEM;
        k = image_rev_meta(s, name, rev, &meta);
        if (k < 0)
                return log_error_errno(k, "Image '%s' has no revision %u: %m", name, rev);
        const char *digest = json_string_value(json_object_get(meta, "digest"));
        _cleanup_close_ int fd = open(archive, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (!digest || fd < 0 || fstat(fd, &st) < 0) {
                json_decref(meta);
                return log_error_errno(ENOENT, "Revision %u of '%s' has no archive", rev, name);
        }
        snprintf(ret_digest, 72, "%s", digest);
        body = json_pack("{s:[s]}", "digests", digest);
        k = api_json(rm, "POST", "/api/v1/blobs/missing", body, &missing);
        json_decref(body);
        if (k >= 0 && json_array_size(json_object_get(missing, "missing")) > 0) {
                k = blob_transfer(rm, digest, fd, true, (uint64_t) st.st_size, &t);
                if (k < 0)
                        log_error_errno(k, "Failed to upload %s: %m", archive);
        }
        json_decref(missing);
        if (k >= 0) {
                json_object_del(meta, "build_log"); /* a path on this host */
                body = json_pack("{s:i, s:s, s:O}", "revision", (json_int_t) rev, "digest", ret_digest, "meta", meta);
                k = body ? api_json(rm, "PUT", path, body, NULL) : -ENOMEM;
                json_decref(body);
        }
        json_decref(meta);
        return k;
}

int image_report_build(const ImageRemote *rm, const char *name, json_t *outcome) {
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/api/v1/images/%s/builds", name) < 0)
                return -ENOMEM;
        return api_json(rm, "POST", path, outcome, NULL);
}

static int find_local_digest(ImageStore *s, const char *name, const char *digest, unsigned *ret) {
        _cleanup_free_ unsigned *revs = NULL;
        size_t n = 0;
        if (image_revs(s, name, &revs, &n) < 0)
                return -ENOENT;
        for (size_t i = n; i > 0; i--) {
                json_t *m = NULL;
                if (image_rev_meta(s, name, revs[i - 1], &m) < 0)
                        continue;
                bool same = streq(json_string_value(json_object_get(m, "digest")) ?: "", digest);
                json_decref(m);
                if (same) {
                        *ret = revs[i - 1];
                        return 0;
                }
        }
        return -ENOENT;
}

int image_remote_ref(const ImageRemote *rm, const char *name, char ret_digest[static 72], json_t **ret_meta) {
        _cleanup_free_ char *path = NULL;
        json_t *ref = NULL;
        int k;

        if (asprintf(&path, "/api/v1/images/%s", name) < 0)
                return -ENOMEM;
        k = api_json(rm, "GET", path, NULL, &ref);
        if (k < 0)
                return k;
        const char *digest = json_string_value(json_object_get(ref, "digest"));
        if (!digest || strlen(digest) != 71 || !strneq(digest, "sha256:", 7)) {
                json_decref(ref);
                return log_error_errno(EBADMSG, "The server's image '%s' has no digest", name);
        }
        snprintf(ret_digest, 72, "%s", digest);
        if (ret_meta)
                *ret_meta = json_deep_copy(json_object_get(ref, "meta")) ?: json_object();
        json_decref(ref);
        return 0;
}

int image_current_digest(ImageStore *s, const char *name, unsigned *ret_rev, char ret_digest[static 72]) {
        json_t *m = NULL;
        unsigned rev;
        int k;

        k = image_current(s, name, &rev);
        if (k < 0)
                return k;
        k = image_rev_meta(s, name, rev, &m);
        if (k < 0)
                return k;
        const char *d = json_string_value(json_object_get(m, "digest"));
        if (!d || strlen(d) != 71) {
                json_decref(m);
                return -EBADMSG;
        }
        snprintf(ret_digest, 72, "%s", d);
        json_decref(m);
        if (ret_rev)
                *ret_rev = rev;
        return 0;
}

int image_pull(ImageStore *s, const ImageRemote *rm, const char *name, unsigned *ret_rev, char ret_digest[static 72],
               bool *ret_fetched) {
        json_t *meta = NULL;
        int k;

        k = image_remote_ref(rm, name, ret_digest, &meta);
        if (k == -ENOENT)
                return log_error_errno(k, "The server has no image '%s'", name);
        if (k < 0)
                return k;
        k = image_fetch(s, rm, name, ret_digest, meta, ret_rev, ret_fetched);
        json_decref(meta);
        return k;
}

int image_fetch(ImageStore *s, const ImageRemote *rm, const char *name, const char *digest, json_t *ref_meta,
                unsigned *ret_rev, bool *ret_fetched) {
        _cleanup_free_ char *staging = NULL, *archive = NULL, *rootfs = NULL;
        json_t *meta = NULL;
        ArchiveError err = {};
        uint8_t d[crypto_hash_sha256_BYTES];
        char got[72];
        unsigned rev, before = 0;
        Transfer t;
        int k, log_fd = -EBADF;

        meta = ref_meta ? json_deep_copy(ref_meta) : json_object();
        if (!meta)
                return -ENOMEM;
        bool had = image_current(s, name, &before) >= 0;
        if (find_local_digest(s, name, digest, &rev) >= 0) {
                json_decref(meta);
                *ret_fetched = false;
                *ret_rev = rev;
                return image_switch(s, name, rev);
        }

        k = image_rev_begin(s, name, &rev, &log_fd);
        _cleanup_close_ int lfd = log_fd;
        staging = image_rev_dir(s, name, rev, true);
        if (k < 0 || !staging || asprintf(&archive, "%s/pulled.tar.zst", staging) < 0 ||
            asprintf(&rootfs, "%s/rootfs", staging) < 0) {
                json_decref(meta);
                return k < 0 ? k : -ENOMEM;
        }
        dprintf(lfd, "== pull %s from %s\n", digest, rm->server);
        _cleanup_close_ int fd = open(archive, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        k = fd < 0 ? -errno : blob_transfer(rm, digest, fd, false, 0, &t);
        if (k >= 0) {
                crypto_hash_sha256_final(&t.hash, d);
                memcpy(got, "sha256:", 7);
                for (size_t i = 0; i < sizeof d; i++)
                        snprintf(got + 7 + 2 * i, 3, "%02x", d[i]);
                if (!streq(got, digest))
                        k = log_error_errno(EBADMSG, "The blob's digest is %s, not %s: refused", got, digest);
        }
        _cleanup_close_ int rfd = k >= 0 ? open(rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -EBADF;
        if (k >= 0 && (rfd < 0 || lseek(fd, 0, SEEK_SET) < 0))
                k = -errno;
        if (k >= 0) {
                k = archive_extract_rootfs(fd, rfd, &image_rootfs_limits, 0, NULL, &err);
                if (k < 0)
                        log_error_errno(k, "Failed to unpack %s: %s", digest, err.message);
        }
        (void) unlink(archive);
        if (k < 0) {
                json_t *fail = json_pack("{s:s, s:i, s:s, s:s}", "status", "failed", "revision", (json_int_t) rev,
                                         "step", "pull", "digest", digest);
                (void) image_rev_abort(s, name, rev, fail);
                json_decref(fail);
                json_decref(meta);
                return k;
        }
        json_object_set_new(meta, "source", json_string("pull"));
        json_object_set_new(meta, "pulled_from", json_string(rm->server));
        json_object_del(meta, "digest");
        k = image_rev_commit(s, name, rev, meta, IMAGE_KEEP_DEFAULT);
        json_decref(meta);
        if (k < 0)
                return k;
        /* The unpacked tree must pack to the very bytes the server holds. */
        json_t *m = NULL;
        k = image_rev_meta(s, name, rev, &m);
        if (k >= 0 && !streq(json_string_value(json_object_get(m, "digest")) ?: "", digest)) {
                log_error("Revision %u of '%s' packs to %s, not %s: removed", rev, name,
                          json_string_value(json_object_get(m, "digest")), digest);
                if (had)
                        (void) image_switch(s, name, before);
                (void) image_remove(s, name, rev);
                k = -EBADMSG;
        }
        json_decref(m);
        *ret_rev = rev;
        *ret_fetched = true;
        return k;
}
