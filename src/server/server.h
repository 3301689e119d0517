/* SPDX-License-Identifier: MIT */
#pragma once

/* kiln server internals: the HTTP layer (http.c), the handlers per area
 * (api-*.c) and metrics. */

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "secrets.h"
#include "store.h"

typedef struct ServerConfig {
        const char *listen;
        const char *data_dir;
        uint64_t lease_ttl_usec;
        uint64_t header_timeout_usec;
        uint64_t keepalive_timeout_usec;
        uint64_t max_body;       /* JSON bodies */
        uint64_t max_blob;       /* workspace blobs */
        uint64_t max_artifact;
        uint64_t max_log_chunk;
        unsigned max_infra_retries;
        unsigned max_connections;
        uint64_t worker_timeout_usec;
} ServerConfig;

typedef struct Request Request;

enum {
        AUTH_ADMIN = 1 << 0,
        AUTH_USER = 1 << 1,
        AUTH_WORKER = 1 << 2,
        AUTH_SESSION = 1 << 3,
        AUTH_ANY_USER = AUTH_ADMIN | AUTH_USER,
};

typedef enum BodyKind {
        BODY_NONE,   /* no body expected (refused above 0 bytes only by max) */
        BODY_JSON,   /* buffered, max_body */
        BODY_RAW,    /* buffered, route's own limit */
        BODY_STREAM, /* handed to upload_data as it arrives */
} BodyKind;

typedef struct Route {
        const char *method;
        const char *pattern; /* '*' matches one path segment */
        unsigned auth;       /* 0: no token needed */
        BodyKind body;
        int (*upload_begin)(Request *r);
        int (*upload_data)(Request *r, const char *data, size_t n);
        int (*handle)(Request *r);
} Route;

#define HTTP_ROUTES_MAX 64
#define HTTP_DURATION_BUCKETS 12

typedef struct Metrics {
        _Atomic uint64_t status[600];
        _Atomic uint64_t duration_bucket[HTTP_ROUTES_MAX][HTTP_DURATION_BUCKETS + 1];
        _Atomic uint64_t duration_sum_usec[HTTP_ROUTES_MAX];
        _Atomic uint64_t duration_count[HTTP_ROUTES_MAX];
        _Atomic uint64_t claims, claims_empty, lease_expiries, log_bytes, finishes;
} Metrics;

typedef struct ConnTrack ConnTrack;

typedef struct Server {
        ServerConfig cfg;
        Store *store;
        int data_fd;
        uint8_t secret_key[SECRET_KEY_SIZE];
        struct MHD_Daemon *mhd;
        int listen_fd;
        Metrics metrics;
        atomic_bool stopping;
        pthread_t reaper;
        bool reaper_started;

        pthread_mutex_t conn_lock;
        ConnTrack *conns;
} Server;

struct Request {
        Server *srv;
        struct MHD_Connection *conn;
        const Route *route;
        size_t route_index;
        const char *method;
        char *path;
        char *args[4];
        size_t n_args;
        StoreToken token;
        bool authenticated;

        char *body;
        size_t body_size, body_max;
        bool responded, body_refused;
        int status;
        uint64_t start;

        /* A handler's state across a streamed upload. */
        void *upload;
        void (*upload_free)(void *upload);
        /* Set by upload_data to answer with an error once the body ends. */
        int deferred_status;
        json_t *deferred_error;
};

/* Embedding (kiln up): the defaults `kiln server` starts from; start opens
 * the data directory and listens (srv needs .data_fd and .listen_fd set to
 * -EBADF and .cfg filled in); stop undoes what start did, also after a failed
 * start. The caller owns the signals. */
void server_config_defaults(ServerConfig *cfg);
int server_start(Server *srv);
void server_stop(Server *srv);
/* The port the server listens on (useful with port 0). */
int http_bound_port(Server *srv);

extern const Route server_routes[];
extern const size_t server_n_routes;

/* http.c */
int http_start(Server *srv);
void http_stop(Server *srv);
void http_reap_slow_connections(Server *srv);
const char *http_query(Request *r, const char *key);
const char *http_header(Request *r, const char *key);
int http_query_int(Request *r, const char *key, int64_t def, int64_t *ret);
/* Queue a response; these take ownership of the body. */
int http_respond(Request *r, int status, const char *content_type, char *body, size_t size);
int http_respond_response(Request *r, int status, struct MHD_Response *resp);
int http_json(Request *r, int status, json_t *j);
int http_error(Request *r, int status, const char *code, json_t *extra, const char *fmt, ...)
        _printf_(5, 6);
json_t *http_error_body(int status, const char *code, json_t *extra, const char *fmt, ...)
        _printf_(4, 5);
/* Maps a store or I/O error onto the right status; what says what failed. */
int http_errno(Request *r, int err, const char *what);
/* Parses the body as a JSON object with depth and size limits. On failure it
 * has answered 400 itself and returns -EINVAL. */
int http_body_json(Request *r, json_t **ret);
/* 400 naming the first key of obj not in allowed (NULL-terminated). */
int http_check_keys(Request *r, json_t *obj, const char *const *allowed);
/* Parses args[i] as a positive id; answers 404 otherwise. */
int http_arg_id(Request *r, size_t i, int64_t *ret);

/* api-*.c handlers are referenced by the route table in routes.c. */
int api_healthz(Request *r);
int api_readyz(Request *r);
int api_metrics(Request *r);
int api_token_create(Request *r);
int api_token_list(Request *r);
int api_token_revoke(Request *r);
int api_secret_put(Request *r);
int api_secret_list(Request *r);
int api_secret_delete(Request *r);
int api_image_put(Request *r);
int api_image_get(Request *r);
int api_image_list(Request *r);
int api_image_build_report(Request *r);
int api_job_submit(Request *r);
int api_job_list(Request *r);
int api_job_get(Request *r);
int api_job_cancel(Request *r);
int api_job_retry(Request *r);
int api_task_get(Request *r);
int api_worker_register(Request *r);
int api_worker_list(Request *r);
int api_claim(Request *r);
int api_heartbeat(Request *r);
int api_worker_heartbeat(Request *r);
int api_finish(Request *r);
int api_log_append(Request *r);
int api_log_get(Request *r);
int api_events(Request *r);
int api_blob_head(Request *r);
int api_blob_get(Request *r);
int api_blob_missing(Request *r);
int api_blob_upload_begin(Request *r);
int api_blob_upload_data(Request *r, const char *data, size_t n);
int api_blob_upload_end(Request *r);
int api_artifact_upload_begin(Request *r);
int api_artifact_upload_data(Request *r, const char *data, size_t n);
int api_artifact_upload_end(Request *r);
int api_artifact_list(Request *r);
int api_artifact_get(Request *r);

/* Lease arguments of a worker call: the lease id from the path, the fence
 * from the body or query; answers 409 itself when stale (returns -ESTALE). */
int api_lease_check(Request *r, int64_t fence, StoreAttempt *ret);
/* logs/<job>/<task>.<attempt>.log relative to the data directory. */
void api_log_path(const StoreAttempt *a, char *buf, size_t size);
/* Writes and fsyncs a file's directory entry. */
int api_fsync_dir(int dirfd, const char *dir);
