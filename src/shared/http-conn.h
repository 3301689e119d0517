/* SPDX-License-Identifier: MIT */
#pragma once

/* The command-line tools' HTTP connection to a kiln server (docs/cli.md,
 * "HTTP"): libevent's evhttp for http:// servers, libcurl for https://
 * (certificates verified against the system's CAs or KILN_CA_FILE). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct HttpConn HttpConn;

/* Returns false to stop the transfer (which then still succeeds). */
typedef bool (*HttpDataFn)(const char *p, size_t n, void *userdata);

typedef struct HttpRequest {
        const char *method; /* GET, HEAD, POST, PUT, DELETE */
        const char *path;   /* appended to the server's URL */
        const char *const *headers; /* "Name: value", NULL-terminated */
        const char *body;
        size_t body_size;
        int body_fd; /* >= 0: the body is body_fd_size bytes of this file from offset 0 */
        uint64_t body_fd_size;
        HttpDataFn on_data;   /* every piece of the response body */
        HttpDataFn on_header; /* the status line, then each header line */
        void *userdata;
        bool (*should_abort)(void); /* polled while waiting; true aborts with -EINTR */
} HttpRequest;

/* A response body collected in memory, NUL-terminated, up to HTTP_BODY_MAX. */
#define HTTP_BODY_MAX (64U * 1024U * 1024U)

typedef struct HttpBody {
        char *data;
        size_t size;
        bool too_large; /* the collection stopped at HTTP_BODY_MAX */
} HttpBody;

/* An HttpDataFn that collects into the HttpBody userdata. */
bool http_body_collect(const char *p, size_t n, void *userdata);

/* server: "http[s]://host[:port]" with no path. */
int http_conn_new(const char *server, HttpConn **ret);
HttpConn *http_conn_free(HttpConn *c);

/* Returns 0 with *ret_status set whatever the HTTP status; -EINTR when
 * should_abort() said so; another -errno, logged, when no response came. */
int http_conn_request(HttpConn *c, const HttpRequest *q, long *ret_status);
