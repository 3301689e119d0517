/* SPDX-License-Identifier: MIT */
/* Published images: which blob is each image name's current revision
 * (docs/images.md, *Distribution*). One small JSON file per name under
 * DIR/image-refs/, written to a temporary name, fsynced and renamed: a
 * reader sees the previous publication or the new one. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fd-util.h"
#include "macro.h"
#include "server.h"

#define IMAGE_REFS_DIR "image-refs"
#define IMAGE_REF_MAX (2U << 20)
#define IMAGE_REFS_LIST_MAX 10000

int api_mkdir_durable(int dirfd, const char *parent, const char *dir);

/* The image store's names: [a-z0-9][a-z0-9._-]*, at most 64 bytes, not "host". */
static bool image_ref_name_valid(const char *name) {
        size_t n = strlen(name);
        if (n == 0 || n > 64 || streq(name, "host") || !strchr("abcdefghijklmnopqrstuvwxyz0123456789", name[0]))
                return false;
        return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static bool blob_digest_valid(const char *d) {
        return d && strneq(d, "sha256:", 7) && strlen(d) == 71 && strspn(d + 7, "0123456789abcdef") == 64;
}

static int ref_read(Server *srv, const char *name, json_t **ret) {
        char path[128];
        struct stat st;

        snprintf(path, sizeof path, IMAGE_REFS_DIR "/%s.json", name);
        _cleanup_close_ int fd = openat(srv->data_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size > IMAGE_REF_MAX)
                return -EFBIG;
        json_error_t e;
        json_t *j = json_loadfd(fd, 0, &e);
        if (!j)
                return -EBADMSG;
        *ret = j;
        return 0;
}

static int ref_write(Server *srv, const char *name, json_t *ref) {
        char tmp[160], path[128];
        int k;

        k = api_mkdir_durable(srv->data_fd, ".", IMAGE_REFS_DIR);
        if (k < 0)
                return k;
        snprintf(path, sizeof path, IMAGE_REFS_DIR "/%s.json", name);
        snprintf(tmp, sizeof tmp, IMAGE_REFS_DIR "/.%s.json.%ld", name, (long) gettid());
        _cleanup_close_ int fd = openat(srv->data_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
        if (fd < 0)
                return -errno;
        if (json_dumpfd(ref, fd, JSON_COMPACT | JSON_SORT_KEYS) < 0 || fsync(fd) < 0) {
                k = errno ? -errno : -EIO;
                (void) unlinkat(srv->data_fd, tmp, 0);
                return k;
        }
        if (renameat(srv->data_fd, tmp, srv->data_fd, path) < 0) {
                k = -errno;
                (void) unlinkat(srv->data_fd, tmp, 0);
                return k;
        }
        return api_fsync_dir(srv->data_fd, IMAGE_REFS_DIR);
}

int api_image_put(Request *r) {
        static const char *const keys[] = { "revision", "digest", "meta", NULL };
        char blob[128];
        struct stat st;
        json_t *body;
        int k;

        if (!image_ref_name_valid(r->args[0]))
                return http_error(r, 400, "invalid_name", NULL,
                                  "image names are [a-z0-9][a-z0-9._-]*, at most 64 bytes, not 'host'");
        if (http_body_json(r, &body) < 0)
                return 0;
        json_t *rev = json_object_get(body, "revision"), *meta = json_object_get(body, "meta");
        const char *digest = json_string_value(json_object_get(body, "digest"));
        if (http_check_keys(r, body, keys) < 0)
                goto finish;
        if (!json_is_integer(rev) || json_integer_value(rev) < 1 || json_integer_value(rev) > UINT32_MAX) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "revision"),
                           "revision: required, a positive integer");
                goto finish;
        }
        if (!blob_digest_valid(digest)) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "digest"),
                           "digest: required, 'sha256:' followed by 64 lowercase hex digits");
                goto finish;
        }
        if (meta && !json_is_object(meta)) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "meta"), "meta: an object");
                goto finish;
        }
        snprintf(blob, sizeof blob, "blobs/sha256/%s", digest + 7);
        if (fstatat(r->srv->data_fd, blob, &st, 0) < 0) {
                http_error(r, 400, "blob_missing", json_pack("{s:s}", "path", "digest"),
                           "blob %s has not been uploaded", digest);
                goto finish;
        }
        json_t *ref = json_pack("{s:s, s:O, s:s, s:I, s:I, s:O?}", "name", r->args[0], "revision", rev, "digest",
                                digest, "size", (json_int_t) st.st_size, "published", (json_int_t) time(NULL),
                                "meta", meta);
        k = ref ? ref_write(r->srv, r->args[0], ref) : -ENOMEM;
        if (k >= 0) {
                json_t *ev = json_pack("{s:s}", "digest", digest);
                k = ev ? store_image_event(r->srv->store, r->args[0], json_integer_value(rev), "published", ev)
                       : -ENOMEM;
                json_decref(ev);
        }
        if (k < 0)
                http_errno(r, k, "image reference");
        else
                http_json(r, 200, json_incref(ref));
        json_decref(ref);
finish:
        json_decref(body);
        return 0;
}

/* The outcome of a build or rebuild (kiln image build --server, a worker's
 * scheduled rebuild), recorded as an event. */
int api_image_build_report(Request *r) {
        static const char *const keys[] = { "status", "revision", "seconds", "step", "message", "digest",
                                            "scheduled", "worker", NULL };
        json_t *body;

        if (!image_ref_name_valid(r->args[0]))
                return http_error(r, 400, "invalid_name", NULL, "not an image name");
        if (http_body_json(r, &body) < 0)
                return 0;
        const char *status = json_string_value(json_object_get(body, "status"));
        json_t *rev = json_object_get(body, "revision");
        if (http_check_keys(r, body, keys) < 0)
                goto finish;
        if (!status || (!streq(status, "succeeded") && !streq(status, "failed"))) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "status"),
                           "status: required, 'succeeded' or 'failed'");
                goto finish;
        }
        if (!json_is_integer(rev) || json_integer_value(rev) < 1) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "revision"),
                           "revision: required, a positive integer");
                goto finish;
        }
        const char *const strings[] = { "step", "message", "digest", "worker" };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++) {
                json_t *v = json_object_get(body, strings[i]);
                if (v && (!json_is_string(v) || json_string_length(v) > 1024)) {
                        http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", strings[i]),
                                   "%s: a string of at most 1024 bytes", strings[i]);
                        goto finish;
                }
        }
        if ((json_object_get(body, "seconds") && !json_is_number(json_object_get(body, "seconds"))) ||
            (json_object_get(body, "scheduled") && !json_is_boolean(json_object_get(body, "scheduled")))) {
                http_error(r, 400, "invalid_field", NULL, "seconds: a number; scheduled: a boolean");
                goto finish;
        }
        const char *state = streq(status, "succeeded") ? "build_succeeded" : "build_failed";
        json_int_t revision = json_integer_value(rev);
        /* status and rev point into body: both are read before the keys go. */
        json_object_del(body, "status");
        json_object_del(body, "revision");
        int k = store_image_event(r->srv->store, r->args[0], revision, state, body);
        if (k < 0)
                http_errno(r, k, "event");
        else
                http_json(r, 200, json_pack("{s:s}", "image", r->args[0]));
finish:
        json_decref(body);
        return 0;
}

int api_image_get(Request *r) {
        json_t *ref = NULL;
        if (!image_ref_name_valid(r->args[0]))
                return http_error(r, 400, "invalid_name", NULL, "not an image name");
        int k = ref_read(r->srv, r->args[0], &ref);
        if (k == -ENOENT)
                return http_error(r, 404, "not_found", NULL, "no image '%s' has been published", r->args[0]);
        if (k < 0)
                return http_errno(r, k, "image reference");
        return http_json(r, 200, ref);
}

int api_image_list(Request *r) {
        json_t *list = json_array();
        if (!list)
                return -ENOMEM;
        int fd = openat(r->srv->data_fd, IMAGE_REFS_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (!d)
                safe_close(fd);
        for (struct dirent *de; d && (de = readdir(d)) && json_array_size(list) < IMAGE_REFS_LIST_MAX;) {
                char name[80];
                size_t n = strlen(de->d_name);
                json_t *ref = NULL;
                if (n <= 5 || n - 5 >= sizeof name || !streq(de->d_name + n - 5, ".json"))
                        continue;
                memcpy(name, de->d_name, n - 5);
                name[n - 5] = 0;
                if (image_ref_name_valid(name) && ref_read(r->srv, name, &ref) >= 0) {
                        json_object_del(ref, "meta");
                        json_array_append_new(list, ref);
                }
        }
        if (d)
                closedir(d);
        return http_json(r, 200, json_pack("{s:o}", "images", list));
}
