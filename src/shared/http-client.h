/* SPDX-License-Identifier: MIT */
#pragma once

/* A one-shot blocking HTTP request for kiln's command-line tools. */

#include <stddef.h>

typedef struct HttpResult {
        long status;
        char *body; /* NUL-terminated */
        size_t size;
} HttpResult;

void http_result_done(HttpResult *r);

/* Sends method url with an optional body (JSON when content_type is NULL) and
 * the bearer token, over a connection of its own (http-conn.h). Returns 0 with
 * *ret filled whatever the HTTP status, or -errno, logged, when no response
 * arrived. */
int http_client_request(const char *server, const char *token, const char *method, const char *path,
                        const char *body, size_t body_size, const char *content_type, HttpResult *ret);
/* The server's message from an error body, or the status line. */
const char *http_result_message(const HttpResult *r, char *buf, size_t size);
