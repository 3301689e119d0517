/* SPDX-License-Identifier: MIT */
/* The HTTP layer of kiln server on libmicrohttpd: one thread per connection
 * (a long-poll or a stream blocks only its own thread), routing, token
 * authentication, body limits enforced before a byte of body is read, and a
 * header deadline so that a client trickling its headers is cut off. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "fd-util.h"
#include "log.h"
#include "macro.h"
#include "server.h"
#include "token.h"

#define JSON_MAX_DEPTH 32

struct ConnTrack {
        int fd;
        uint64_t deadline; /* CLOCK_MONOTONIC µs; 0: inside a request */
        bool cut;
        ConnTrack *prev, *next;
};

static const uint64_t duration_bounds_usec[HTTP_DURATION_BUCKETS] = {
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 1000000, 10000000,
};

/* ---- responses ---- */

int http_respond_response(Request *r, int status, struct MHD_Response *resp) {
        if (!resp)
                return -ENOMEM;
        MHD_add_response_header(resp, "Cache-Control", "no-store");
        enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned) status, resp);
        MHD_destroy_response(resp);
        if (ok != MHD_YES)
                return -EIO;
        r->responded = true;
        r->status = status;
        return 0;
}

int http_respond(Request *r, int status, const char *content_type, char *body, size_t size) {
        struct MHD_Response *resp =
                MHD_create_response_from_buffer(size, body ? body : (char *) "",
                                                body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!resp) {
                free(body);
                return -ENOMEM;
        }
        if (content_type)
                MHD_add_response_header(resp, "Content-Type", content_type);
        return http_respond_response(r, status, resp);
}

int http_json(Request *r, int status, json_t *j) {
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!text)
                return -ENOMEM;
        size_t n = strlen(text);
        /* A trailing newline makes curl output and logs readable. */
        char *p = realloc(text, n + 2);
        if (!p) {
                free(text);
                return -ENOMEM;
        }
        p[n] = '\n';
        p[n + 1] = 0;
        return http_respond(r, status, "application/json", p, n + 1);
}

static json_t *error_body_v(int status, const char *code, json_t *extra, const char *fmt, va_list ap) {
        char msg[1024];
        vsnprintf(msg, sizeof msg, fmt, ap);
        json_t *err = json_pack("{s:i, s:s, s:s}", "status", status, "code", code, "message", msg);
        if (extra) {
                json_object_update(err, extra);
                json_decref(extra);
        }
        return json_pack("{s:o}", "error", err);
}

json_t *http_error_body(int status, const char *code, json_t *extra, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        json_t *j = error_body_v(status, code, extra, fmt, ap);
        va_end(ap);
        return j;
}

int http_error(Request *r, int status, const char *code, json_t *extra, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        json_t *j = error_body_v(status, code, extra, fmt, ap);
        va_end(ap);
        return http_json(r, status, j);
}

int http_errno(Request *r, int err, const char *what) {
        switch (err) {
        case -ENOSPC:
        case -EDQUOT:
                return http_error(r, 507, "insufficient_storage", NULL,
                                  "%s: the server's data directory is out of space; nothing was "
                                  "changed, retry once space has been freed", what);
        case -ENOENT:
                return http_error(r, 404, "not_found", NULL, "%s: not found", what);
        case -ESTALE:
                return http_error(r, 409, "stale_lease", NULL,
                                  "%s: the lease is no longer held (expired, finished, or replaced "
                                  "by a newer attempt)", what);
        case -EBUSY:
                return http_error(r, 409, "conflict", NULL, "%s: not possible in the current state", what);
        case -EEXIST:
                return http_error(r, 409, "exists", NULL, "%s: already exists", what);
        case -EINVAL:
                return http_error(r, 400, "invalid", NULL, "%s: invalid request", what);
        case -ESHUTDOWN:
                return http_error(r, 503, "shutting_down", NULL, "%s: the server is shutting down", what);
        default:
                log_error_errno(err, "%s: %m", what);
                return http_error(r, 500, "internal", NULL, "%s: internal error (%s)", what, strerror(-err));
        }
}

/* ---- request helpers ---- */

const char *http_query(Request *r, const char *key) {
        return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_header(Request *r, const char *key) {
        return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, key);
}

int http_query_int(Request *r, const char *key, int64_t def, int64_t *ret) {
        const char *v = http_query(r, key);
        char *end;

        if (!v || !*v) {
                *ret = def;
                return 0;
        }
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno != 0 || *end || x < 0) {
                http_error(r, 400, "invalid_parameter", json_pack("{s:s}", "parameter", key),
                           "query parameter '%s' must be a non-negative integer", key);
                return -EINVAL;
        }
        *ret = x;
        return 0;
}

int http_arg_id(Request *r, size_t i, int64_t *ret) {
        char *end;
        if (i >= r->n_args)
                return -EINVAL;
        errno = 0;
        long long x = strtoll(r->args[i], &end, 10);
        if (errno != 0 || *end || x <= 0) {
                http_error(r, 404, "not_found", NULL, "no such object '%s'", r->args[i]);
                return -ENOENT;
        }
        *ret = x;
        return 0;
}

/* Nesting depth of a JSON text, without parsing it: jansson has no depth
 * limit of its own that we control. */
static size_t json_depth(const char *s, size_t n) {
        size_t depth = 0, max = 0;
        bool in_string = false;

        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                if (in_string) {
                        if (ch == '\\')
                                i++;
                        else if (ch == '"')
                                in_string = false;
                } else if (ch == '"')
                        in_string = true;
                else if (ch == '{' || ch == '[') {
                        if (++depth > max)
                                max = depth;
                } else if ((ch == '}' || ch == ']') && depth > 0)
                        depth--;
        }
        return max;
}

int http_body_json(Request *r, json_t **ret) {
        json_error_t e;

        if (r->body_size == 0) {
                http_error(r, 400, "invalid_json", NULL, "a JSON object body is required");
                return -EINVAL;
        }
        if (json_depth(r->body, r->body_size) > JSON_MAX_DEPTH) {
                http_error(r, 400, "json_too_deep", NULL, "JSON nesting deeper than %d levels", JSON_MAX_DEPTH);
                return -EINVAL;
        }
        json_t *j = json_loadb(r->body, r->body_size, JSON_REJECT_DUPLICATES, &e);
        if (!j) {
                http_error(r, 400, "invalid_json",
                           json_pack("{s:i, s:i, s:i}", "line", e.line, "column", e.column,
                                     "position", e.position),
                           "malformed JSON at line %d, column %d (byte %d): %s", e.line, e.column,
                           e.position, e.text);
                return -EINVAL;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                http_error(r, 400, "invalid_json", NULL, "the body must be a JSON object");
                return -EINVAL;
        }
        *ret = j;
        return 0;
}

int http_check_keys(Request *r, json_t *obj, const char *const *allowed) {
        const char *key;
        json_t *v;

        json_object_foreach(obj, key, v) {
                bool ok = false;
                for (const char *const *a = allowed; *a; a++)
                        if (streq(*a, key)) {
                                ok = true;
                                break;
                        }
                if (!ok) {
                        char list[512] = "";
                        size_t n = 0;
                        for (const char *const *a = allowed; *a && n < sizeof list; a++)
                                n += (size_t) snprintf(list + n, sizeof list - n, "%s%s",
                                                       a == allowed ? "" : ", ", *a);
                        http_error(r, 400, "unknown_field", json_pack("{s:s}", "path", key),
                                   "unknown field '%.64s' (expected one of: %s)", key, list);
                        return -EINVAL;
                }
        }
        return 0;
}

/* ---- routing and authentication ---- */

/* Matches path against pattern; captures '*' segments into r when given. */
static bool pattern_match(const char *pattern, const char *path, Request *r) {
        const char *p = pattern, *u = path;
        size_t n_args = 0;
        char *args[ELEMENTSOF(r->args)] = {};

        while (*p && *u) {
                if (*p == '*') {
                        const char *end = strchr(u, '/');
                        size_t n = end ? (size_t) (end - u) : strlen(u);
                        if (n == 0 || n > 256 || n_args >= ELEMENTSOF(args))
                                break;
                        if (r)
                                args[n_args] = strndup(u, n);
                        n_args++;
                        u += n;
                        p++;
                        continue;
                }
                if (*p != *u)
                        break;
                p++;
                u++;
        }
        bool ok = *p == 0 && *u == 0;
        for (size_t i = 0; i < n_args && r; i++) {
                if (ok)
                        r->args[i] = args[i];
                else
                        free(args[i]);
        }
        if (ok && r)
                r->n_args = n_args;
        return ok;
}

static int request_route(Request *r) {
        const char *method = streq(r->method, "HEAD") ? "HEAD" : r->method;
        bool path_known = false;

        for (size_t i = 0; i < server_n_routes; i++) {
                const Route *rt = &server_routes[i];
                if (!streq(rt->method, method)) {
                        path_known = path_known || pattern_match(rt->pattern, r->path, NULL);
                        continue;
                }
                if (pattern_match(rt->pattern, r->path, r)) {
                        r->route = rt;
                        r->route_index = i;
                        return 0;
                }
        }
        if (path_known)
                return http_error(r, 405, "method_not_allowed", NULL, "method %s is not allowed on '%.200s'",
                                  r->method, r->path);
        return http_error(r, 404, "not_found", NULL, "no such endpoint '%.200s'", r->path);
}

static unsigned kind_bit(const char *kind) {
        if (streq(kind, "admin"))
                return AUTH_ADMIN;
        if (streq(kind, "user"))
                return AUTH_USER;
        if (streq(kind, "worker"))
                return AUTH_WORKER;
        if (streq(kind, "session"))
                return AUTH_SESSION;
        return 0;
}

static int request_authenticate(Request *r) {
        uint8_t hash[TOKEN_HASH_SIZE];
        const char *h = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
        int k;

        if (r->route->auth == 0)
                return 0;
        if (!h || strncasecmp(h, "Bearer ", 7) != 0 || token_hash(h + 7, hash) < 0)
                return http_error(r, 401, "unauthorized", NULL,
                                  "a valid token is required: 'Authorization: Bearer kiln_…'");
        k = store_token_lookup(r->srv->store, hash, &r->token);
        /* The index found the row; the decision is a constant-time compare. */
        if (k >= 0 && !token_hash_equal(hash, r->token.hash))
                k = -ENOENT;
        if (k == -ENOENT)
                return http_error(r, 401, "unauthorized", NULL, "the token is unknown or revoked");
        if (k < 0)
                return http_errno(r, k, "token lookup");
        r->authenticated = true;
        if (!(kind_bit(r->token.kind) & r->route->auth))
                return http_error(r, 403, "forbidden", json_pack("{s:s}", "kind", r->token.kind),
                                  "a %s token may not use this endpoint", r->token.kind);
        return 0;
}

static uint64_t body_limit(Server *srv, const Route *rt) {
        switch (rt->body) {
        case BODY_NONE:
                return 0;
        case BODY_JSON:
                return srv->cfg.max_body;
        case BODY_RAW:
                return srv->cfg.max_log_chunk;
        case BODY_STREAM:
                return rt->upload_begin == api_blob_upload_begin ? srv->cfg.max_blob : srv->cfg.max_artifact;
        }
        return 0;
}

/* Refuses by Content-Length before any of the body is read. */
static int request_check_length(Request *r) {
        const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t max = body_limit(r->srv, r->route);

        r->body_max = (size_t) max;
        if (!cl)
                return 0;
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno != 0 || *end)
                return http_error(r, 400, "invalid_length", NULL, "invalid Content-Length");
        if (n > max)
                return http_error(r, 413, "body_too_large",
                                  json_pack("{s:I}", "limit", (json_int_t) max),
                                  "request body of %llu bytes exceeds this endpoint's limit of %" PRIu64
                                  " bytes", n, max);
        return 0;
}

/* ---- connection tracking: the header deadline ---- */

static ConnTrack *conn_track_of(struct MHD_Connection *conn) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return ci ? ci->socket_context : NULL;
}

static void conn_track_set(Server *srv, struct MHD_Connection *conn, uint64_t deadline) {
        ConnTrack *ct = conn_track_of(conn);
        if (!ct)
                return;
        pthread_mutex_lock(&srv->conn_lock);
        ct->deadline = deadline;
        pthread_mutex_unlock(&srv->conn_lock);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
        Server *srv = cls;

        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci =
                        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
                ConnTrack *ct = calloc(1, sizeof(ConnTrack));
                if (!ct || !ci) {
                        free(ct);
                        return;
                }
                ct->fd = ci->connect_fd;
                ct->deadline = store_now_mono() + srv->cfg.header_timeout_usec;
                pthread_mutex_lock(&srv->conn_lock);
                ct->next = srv->conns;
                if (srv->conns)
                        srv->conns->prev = ct;
                srv->conns = ct;
                pthread_mutex_unlock(&srv->conn_lock);
                *socket_context = ct;
        } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
                ConnTrack *ct = *socket_context;
                if (!ct)
                        return;
                pthread_mutex_lock(&srv->conn_lock);
                if (ct->prev)
                        ct->prev->next = ct->next;
                else
                        srv->conns = ct->next;
                if (ct->next)
                        ct->next->prev = ct->prev;
                pthread_mutex_unlock(&srv->conn_lock);
                free(ct);
                *socket_context = NULL;
        }
}

void http_reap_slow_connections(Server *srv) {
        uint64_t now = store_now_mono();

        pthread_mutex_lock(&srv->conn_lock);
        for (ConnTrack *ct = srv->conns; ct; ct = ct->next)
                if (!ct->cut && ct->deadline != 0 && now > ct->deadline) {
                        /* The connection's own thread sees EOF and closes it. */
                        (void) shutdown(ct->fd, SHUT_RDWR);
                        ct->cut = true;
                }
        pthread_mutex_unlock(&srv->conn_lock);
}

/* ---- the request lifecycle ---- */

static int request_begin(Server *srv, struct MHD_Connection *conn, const char *url, const char *method,
                         Request **ret) {
        Request *r = calloc(1, sizeof(Request));
        if (!r)
                return -ENOMEM;
        r->srv = srv;
        r->conn = conn;
        r->method = method;
        r->start = store_now_mono();
        r->route_index = HTTP_ROUTES_MAX - 1;
        r->path = strndup(url, 2048);
        *ret = r;
        if (!r->path)
                return -ENOMEM;
        conn_track_set(srv, conn, 0);

        if (request_route(r) < 0 || r->responded)
                return 0;
        if (request_authenticate(r) < 0 || r->responded)
                return 0;
        if (request_check_length(r) < 0 || r->responded)
                return 0;
        if (r->route->body == BODY_STREAM)
                (void) r->route->upload_begin(r);
        return 0;
}

static void request_body(Request *r, const char *data, size_t n) {
        if (r->responded || r->body_refused || r->deferred_status)
                return;
        if (r->route->body == BODY_STREAM) {
                (void) r->route->upload_data(r, data, n);
                return;
        }
        if (r->body_size + n > r->body_max) {
                /* Chunked bodies have no Content-Length to refuse up front. */
                r->body_refused = true;
                r->body = mfree(r->body);
                return;
        }
        char *p = realloc(r->body, r->body_size + n + 1);
        if (!p) {
                r->deferred_status = 500;
                return;
        }
        memcpy(p + r->body_size, data, n);
        r->body = p;
        r->body_size += n;
        r->body[r->body_size] = 0;
}

static void request_end(Request *r) {
        int k;

        if (r->body_refused)
                k = http_error(r, 413, "body_too_large", json_pack("{s:I}", "limit", (json_int_t) r->body_max),
                               "request body exceeds this endpoint's limit of %zu bytes", r->body_max);
        else if (r->deferred_status)
                k = http_json(r, r->deferred_status,
                              r->deferred_error ? json_incref(r->deferred_error)
                                                : http_error_body(r->deferred_status, "internal", NULL,
                                                                  "internal error"));
        else
                k = r->route->handle(r);
        if (k < 0 && !r->responded)
                (void) http_errno(r, k, r->path);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
        Server *srv = cls;
        Request *r = *con_cls;

        if (!r) {
                int k = request_begin(srv, conn, url, method, &r);
                *con_cls = r;
                return k < 0 ? MHD_NO : MHD_YES;
        }
        if (*upload_data_size > 0) {
                request_body(r, upload_data, *upload_data_size);
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (!r->responded)
                request_end(r);
        return r->responded ? MHD_YES : MHD_NO;
}

static void metrics_observe(Server *srv, Request *r) {
        uint64_t d = store_now_mono() - r->start;
        size_t ri = MIN(r->route_index, (size_t) HTTP_ROUTES_MAX - 1);
        size_t b = 0;

        if (r->status > 0 && r->status < 600)
                srv->metrics.status[r->status]++;
        while (b < HTTP_DURATION_BUCKETS && d > duration_bounds_usec[b])
                b++;
        srv->metrics.duration_bucket[ri][b]++;
        srv->metrics.duration_sum_usec[ri] += d;
        srv->metrics.duration_count[ri]++;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        Server *srv = cls;
        Request *r = *con_cls;

        conn_track_set(srv, conn, store_now_mono() + srv->cfg.keepalive_timeout_usec);
        if (!r)
                return;
        metrics_observe(srv, r);
        if (r->upload_free)
                r->upload_free(r->upload);
        json_decref(r->deferred_error);
        for (size_t i = 0; i < r->n_args; i++)
                free(r->args[i]);
        free(r->body);
        free(r->path);
        free(r);
        *con_cls = NULL;
}

const uint64_t *http_duration_bounds(void);
const uint64_t *http_duration_bounds(void) {
        return duration_bounds_usec;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
        char buf[512];
        vsnprintf(buf, sizeof buf, fmt, ap);
        log_debug("libmicrohttpd: %s", buf);
}

static int listen_socket(const char *addr, int *ret_fd) {
        struct sockaddr_storage ss = {};
        socklen_t len;
        char host[256];
        const char *colon = strrchr(addr, ':');
        unsigned port;

        if (!colon || (size_t) (colon - addr) >= sizeof host || sscanf(colon + 1, "%u", &port) != 1 ||
            port > 65535)
                return -EINVAL;
        memcpy(host, addr, (size_t) (colon - addr));
        host[colon - addr] = 0;
        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;
                host[strlen(host) - 1] = 0;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons((uint16_t) port);
                if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
                        return -EINVAL;
                len = sizeof *a;
        } else {
                struct sockaddr_in *a = (struct sockaddr_in *) &ss;
                a->sin_family = AF_INET;
                a->sin_port = htons((uint16_t) port);
                if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &a->sin_addr) != 1)
                        return -EINVAL;
                len = sizeof *a;
        }
        _cleanup_close_ int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        int one = 1;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *) &ss, len) < 0 || listen(fd, 1024) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int http_bound_port(Server *srv);
int http_bound_port(Server *srv) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(srv->listen_fd, (struct sockaddr *) &ss, &len) < 0)
                return -errno;
        if (ss.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
        return ntohs(((struct sockaddr_in *) &ss)->sin_port);
}

int http_start(Server *srv) {
        int r = listen_socket(srv->cfg.listen, &srv->listen_fd);
        if (r < 0)
                return r;
        pthread_mutex_init(&srv->conn_lock, NULL);
        srv->mhd = MHD_start_daemon(
                MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO |
                        MHD_USE_ERROR_LOG,
                0, NULL, NULL, on_request, srv,
                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
                MHD_OPTION_LISTEN_SOCKET, srv->listen_fd,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 64 * 1024,
                MHD_OPTION_CONNECTION_LIMIT, srv->cfg.max_connections,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 120,
                MHD_OPTION_END);
        if (!srv->mhd)
                return -EIO;
        return 0;
}

void http_stop(Server *srv) {
        if (srv->mhd) {
                MHD_stop_daemon(srv->mhd);
                srv->mhd = NULL;
        }
        srv->listen_fd = safe_close(srv->listen_fd);
}
