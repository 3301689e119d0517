/* SPDX-License-Identifier: MIT */
#pragma once

/* The worker protocol's HTTP client: one libcurl easy handle per Client, so
 * its connection is kept alive and reused between calls. A Client is used by
 * one thread at a time. */

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "macro.h"

typedef struct Client Client;

typedef struct ClientReply {
        long status;   /* HTTP status */
        json_t *json;  /* the body parsed as JSON, or NULL */
} ClientReply;

void client_reply_done(ClientReply *r);

int client_new(const char *server, const char *token, Client **ret);
Client *client_free(Client *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Client *, client_free);

int client_set_token(Client *c, const char *token);
/* A transfer in progress is aborted (-ECANCELED) once *flag is true. */
void client_set_abort(Client *c, const atomic_bool *flag);

/* All calls return 0 with *ret filled whatever the HTTP status, or -errno
 * when no answer arrived (connection refused, timeout, reset: retry later). */
int client_call(Client *c, const char *method, const char *path, json_t *body, long timeout_ms,
                ClientReply *ret);
int client_post_raw(Client *c, const char *path, const void *data, size_t n, long timeout_ms,
                    ClientReply *ret);
/* PUTs size bytes read from fd (from its start). */
int client_put_fd(Client *c, const char *path, int fd, uint64_t size, long timeout_ms, ClientReply *ret);
/* GETs path into fd; -EFBIG past max bytes, the write's own error when fd
 * refuses the body (-ENOSPC: a full disk, not worth retrying). On a non-2xx
 * answer the body is not written. */
int client_get_fd(Client *c, const char *path, int fd, uint64_t max, long timeout_ms, long *ret_status);

/* For a URL whose host is a name, a CURLOPT_RESOLVE list ("host:port:addr")
 * resolved now, in the calling thread: libcurl would otherwise start a
 * resolver thread of its own (see threads.h). *ret is NULL for an address. */
struct curl_slist;
int client_resolve(const char *url, struct curl_slist **ret);

/* The "offset" member of an error or success body, or -1. */
int64_t client_reply_offset(const ClientReply *r);
/* The server's error message, or the status. */
const char *client_reply_message(const ClientReply *r, char *buf, size_t size);
