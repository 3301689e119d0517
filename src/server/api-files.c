/* SPDX-License-Identifier: MIT */
/* Workspace blobs (content-addressed) and artifacts (per attempt). Uploads
 * stream into a temporary file while being hashed, are fsynced, then renamed
 * into place: a file under its final name is always complete. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "log.h"
#include "macro.h"
#include "server.h"

int api_mkdir_durable(int dirfd, const char *parent, const char *dir);

typedef struct Upload {
        Server *srv;
        int fd;
        char dir[128], tmp[256], final[256];
        crypto_hash_sha256_state hash;
        uint64_t size, limit;
        bool committed;
        /* blobs */
        char expect[65];
        /* artifacts */
        StoreAttempt attempt;
        char name[129];
        uint8_t head[4];
} Upload;

static void upload_free(void *p) {
        Upload *u = p;
        if (!u)
                return;
        safe_close(u->fd);
        if (!u->committed && u->tmp[0])
                (void) unlinkat(u->srv->data_fd, u->tmp, 0);
        free(u);
}

static bool digest_valid(const char *d, char hex[static 65]) {
        if (!d || !strneq(d, "sha256:", 7) || strlen(d) != 7 + 64)
                return false;
        for (size_t i = 7; i < 7 + 64; i++)
                if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
                        return false;
        memcpy(hex, d + 7, 65);
        return true;
}

static int upload_new(Request *r, const char *dir, const char *final, uint64_t limit, Upload **ret) {
        Upload *u = calloc(1, sizeof(Upload));
        uint8_t rnd[8];
        char rhex[17];

        if (!u)
                return -ENOMEM;
        u->srv = r->srv;
        u->fd = -EBADF;
        u->limit = limit;
        snprintf(u->dir, sizeof u->dir, "%s", dir);
        snprintf(u->final, sizeof u->final, "%s", final);
        randombytes_buf(rnd, sizeof rnd);
        sodium_bin2hex(rhex, sizeof rhex, rnd, sizeof rnd);
        snprintf(u->tmp, sizeof u->tmp, "%s/.tmp-%s", dir, rhex);
        crypto_hash_sha256_init(&u->hash);
        r->upload = u;
        r->upload_free = upload_free;
        u->fd = openat(r->srv->data_fd, u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (u->fd < 0) {
                u->tmp[0] = 0;
                return -errno;
        }
        *ret = u;
        return 0;
}

static void upload_defer(Request *r, int status, json_t *error) {
        if (r->deferred_status)
                return;
        r->deferred_status = status;
        r->deferred_error = error;
}

static void upload_defer_errno(Request *r, int err) {
        if (err == -ENOSPC || err == -EDQUOT)
                upload_defer(r, 507, http_error_body(507, "insufficient_storage", NULL,
                                                     "upload: the server's data directory is out of space; "
                                                     "nothing was stored, retry once space has been freed"));
        else
                upload_defer(r, 500, http_error_body(500, "internal", NULL, "upload: %s", strerror(-err)));
}

static int upload_write(Request *r, Upload *u, const char *data, size_t n) {
        if (u->size + n > u->limit) {
                upload_defer(r, 413, http_error_body(413, "body_too_large",
                                                     json_pack("{s:I}", "limit", (json_int_t) u->limit),
                                                     "upload exceeds the limit of %" PRIu64 " bytes", u->limit));
                return -EFBIG;
        }
        for (size_t i = 0; i < n && u->size + i < sizeof u->head; i++)
                u->head[u->size + i] = (uint8_t) data[i];
        crypto_hash_sha256_update(&u->hash, (const unsigned char *) data, n);
        int k = loop_write(u->fd, data, n);
        if (k < 0) {
                upload_defer_errno(r, k);
                return k;
        }
        u->size += n;
        return 0;
}

/* fsync, rename into place, fsync the directory. */
static int upload_commit(Upload *u) {
        if (fsync(u->fd) < 0)
                return -errno;
        if (renameat(u->srv->data_fd, u->tmp, u->srv->data_fd, u->final) < 0)
                return -errno;
        u->committed = true;
        return api_fsync_dir(u->srv->data_fd, u->dir);
}

static void upload_digest(Upload *u, char hex[static 65]) {
        uint8_t d[crypto_hash_sha256_BYTES];
        crypto_hash_sha256_final(&u->hash, d);
        sodium_bin2hex(hex, 65, d, sizeof d);
}

/* ---- blobs ---- */

int api_blob_upload_begin(Request *r) {
        char hex[65], final[128];
        struct stat st;
        Upload *u;
        int k;

        if (!digest_valid(r->args[0], hex))
                return http_error(r, 400, "invalid_digest", NULL,
                                  "blob names are 'sha256:' followed by 64 lowercase hex digits");
        snprintf(final, sizeof final, "blobs/sha256/%s", hex);
        if (fstatat(r->srv->data_fd, final, &st, 0) == 0)
                /* Uploaded once: answer before the body is read. */
                return http_json(r, 200, json_pack("{s:s, s:I, s:b}", "digest", r->args[0], "size",
                                                   (json_int_t) st.st_size, "created", false));
        k = upload_new(r, "blobs/sha256", final, r->srv->cfg.max_blob, &u);
        if (k < 0)
                return http_errno(r, k, "blob upload");
        memcpy(u->expect, hex, sizeof u->expect);
        return 0;
}

int api_blob_upload_data(Request *r, const char *data, size_t n) {
        return upload_write(r, r->upload, data, n);
}

int api_blob_upload_end(Request *r) {
        Upload *u = r->upload;
        char got[65];
        int k;

        upload_digest(u, got);
        if (!streq(got, u->expect))
                return http_error(r, 400, "digest_mismatch",
                                  json_pack("{s:s, s:s+}", "expected", r->args[0], "actual", "sha256:", got),
                                  "the body's digest is sha256:%s, not %s: refused", got, r->args[0]);
        k = upload_commit(u);
        if (k < 0)
                return http_errno(r, k, "blob upload");
        return http_json(r, 201, json_pack("{s:s, s:I, s:b}", "digest", r->args[0], "size",
                                           (json_int_t) u->size, "created", true));
}

static int blob_open(Request *r, int *ret_fd, uint64_t *ret_size) {
        char hex[65], path[128];
        struct stat st;

        if (!digest_valid(r->args[0], hex))
                return http_error(r, 400, "invalid_digest", NULL,
                                  "blob names are 'sha256:' followed by 64 lowercase hex digits");
        snprintf(path, sizeof path, "blobs/sha256/%s", hex);
        int fd = openat(r->srv->data_fd, path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return http_errno(r, -errno, "blob");
        if (fstat(fd, &st) < 0) {
                safe_close(fd);
                return http_errno(r, -errno, "blob");
        }
        *ret_fd = fd;
        *ret_size = (uint64_t) st.st_size;
        return 0;
}

static int respond_fd(Request *r, int fd, uint64_t size, const char *ctype) {
        struct MHD_Response *resp = MHD_create_response_from_fd64(size, fd);
        if (!resp) {
                safe_close(fd);
                return -ENOMEM;
        }
        MHD_add_response_header(resp, "Content-Type", ctype);
        return http_respond_response(r, 200, resp);
}

int api_blob_head(Request *r) {
        uint64_t size;
        int fd = -EBADF;
        if (blob_open(r, &fd, &size) < 0 || r->responded)
                return 0;
        return respond_fd(r, fd, size, "application/octet-stream");
}

int api_blob_get(Request *r) {
        return api_blob_head(r);
}

int api_blob_missing(Request *r) {
        static const char *const keys[] = { "digests", NULL };
        json_t *body, *missing, *v;
        size_t i;

        if (http_body_json(r, &body) < 0)
                return 0;
        json_t *digests = json_object_get(body, "digests");
        if (http_check_keys(r, body, keys) < 0)
                goto finish;
        if (!json_is_array(digests) || json_array_size(digests) > 10000) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "digests"),
                           "digests: an array of at most 10000 blob digests");
                goto finish;
        }
        missing = json_array();
        json_array_foreach(digests, i, v) {
                char hex[65], path[128];
                struct stat st;
                if (!digest_valid(json_string_value(v), hex)) {
                        json_decref(missing);
                        http_error(r, 400, "invalid_digest", json_pack("{s:s+}", "path", "digests", ""),
                                   "digests[%zu]: not a 'sha256:' digest", i);
                        goto finish;
                }
                snprintf(path, sizeof path, "blobs/sha256/%s", hex);
                if (fstatat(r->srv->data_fd, path, &st, 0) < 0)
                        json_array_append(missing, v);
        }
        http_json(r, 200, json_pack("{s:o}", "missing", missing));
finish:
        json_decref(body);
        return 0;
}

/* ---- artifacts ---- */

static bool artifact_name_valid(const char *n) {
        size_t len = n ? strlen(n) : 0;
        if (len == 0 || len > 128 || n[0] == '.')
                return false;
        for (size_t i = 0; i < len; i++) {
                char ch = n[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                      ch == '.' || ch == '_' || ch == '-'))
                        return false;
        }
        return true;
}

int api_artifact_upload_begin(Request *r) {
        char jobdir[64], dir[128], final[300];
        int64_t fence;
        StoreAttempt a;
        Upload *u;
        int k;

        if (http_query_int(r, "fence", 0, &fence) < 0)
                return 0;
        if (!artifact_name_valid(r->args[1]))
                return http_error(r, 400, "invalid_name", NULL,
                                  "artifact names are 1–128 characters of [A-Za-z0-9._-], not starting with '.'");
        if (api_lease_check(r, fence, &a) < 0)
                return 0;
        snprintf(jobdir, sizeof jobdir, "artifacts/%" PRId64, a.job_id);
        snprintf(dir, sizeof dir, "%s/%" PRId64 ".%u", jobdir, a.task_id, a.number);
        snprintf(final, sizeof final, "%s/%s", dir, r->args[1]);
        k = api_mkdir_durable(r->srv->data_fd, "artifacts", jobdir);
        if (k >= 0)
                k = api_mkdir_durable(r->srv->data_fd, jobdir, dir);
        if (k >= 0)
                k = upload_new(r, dir, final, r->srv->cfg.max_artifact, &u);
        if (k < 0)
                return http_errno(r, k, "artifact upload");
        u->attempt = a;
        snprintf(u->name, sizeof u->name, "%s", r->args[1]);
        return 0;
}

int api_artifact_upload_data(Request *r, const char *data, size_t n) {
        return upload_write(r, r->upload, data, n);
}

int api_artifact_upload_end(Request *r) {
        static const uint8_t zstd_magic[4] = { 0x28, 0xb5, 0x2f, 0xfd };
        Upload *u = r->upload;
        char hex[65], digest[80];
        StoreAttempt a;
        int64_t id;
        int k;

        if (u->size < 4 || memcmp(u->head, zstd_magic, 4) != 0)
                return http_error(r, 400, "not_zstd", NULL, "artifacts are uploaded as tar.zst (zstd frame expected)");
        /* The lease may have been lost while the body streamed in. */
        if (api_lease_check(r, u->attempt.fence, &a) < 0)
                return 0;
        upload_digest(u, hex);
        snprintf(digest, sizeof digest, "sha256:%s", hex);
        k = upload_commit(u);
        if (k >= 0)
                k = store_artifact_add(r->srv->store, &a, u->name, u->size, digest, u->final, &id);
        if (k < 0)
                return http_errno(r, k, "artifact upload");
        return http_json(r, 201, json_pack("{s:I, s:s, s:I, s:s}", "id", (json_int_t) id, "name", u->name,
                                           "size", (json_int_t) u->size, "sha256", digest));
}

int api_artifact_list(Request *r) {
        json_t *job, *list;
        int64_t id;
        int k;

        if (http_arg_id(r, 0, &id) < 0)
                return 0;
        k = store_job_get(r->srv->store, id, &job);
        if (k < 0)
                return http_errno(r, k, "job");
        json_decref(job);
        k = store_artifact_list(r->srv->store, id, &list);
        if (k < 0)
                return http_errno(r, k, "artifacts");
        return http_json(r, 200, json_pack("{s:o}", "artifacts", list));
}

int api_artifact_get(Request *r) {
        json_t *a;
        struct stat st;
        int64_t id;
        int k;

        if (http_arg_id(r, 0, &id) < 0)
                return 0;
        k = store_artifact_get(r->srv->store, id, &a);
        if (k < 0)
                return http_errno(r, k, "artifact");
        int fd = openat(r->srv->data_fd, json_string_value(json_object_get(a, "path")), O_RDONLY | O_CLOEXEC);
        char digest[80];
        snprintf(digest, sizeof digest, "%s", json_string_value(json_object_get(a, "sha256")));
        json_decref(a);
        if (fd < 0)
                return http_errno(r, -errno, "artifact");
        if (fstat(fd, &st) < 0) {
                safe_close(fd);
                return http_errno(r, -errno, "artifact");
        }
        struct MHD_Response *resp = MHD_create_response_from_fd64((uint64_t) st.st_size, fd);
        if (!resp) {
                safe_close(fd);
                return -ENOMEM;
        }
        MHD_add_response_header(resp, "Content-Type", "application/zstd");
        MHD_add_response_header(resp, "X-Kiln-Digest", digest);
        return http_respond_response(r, 200, resp);
}
