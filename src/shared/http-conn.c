/* SPDX-License-Identifier: MIT */
/* The command-line tools' HTTP connection (docs/cli.md, "HTTP").
 *
 * A `kiln run` against a local server lives for a few tens of milliseconds,
 * and loading libcurl with its dependencies (OpenSSL, GnuTLS, Kerberos,
 * LDAP, …) costs 13–18 ms of that on its own. Plain http:// therefore goes
 * through libevent's evhttp, which loads in about half a millisecond; https://
 * goes through libcurl, for its TLS and certificate verification. Either way
 * one connection is kept alive across the requests of a command. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http-conn.h"
#include "fd-util.h"
#include "log.h"
#include "macro.h"

/* Until the response's headers arrive: connecting, sending, the server's
 * work. After them a stream may stay quiet as long as the job does. */
#define HTTP_RESPONSE_TIMEOUT_SEC 60
#define HTTP_CONNECT_TIMEOUT_SEC 10L
#define HTTP_ABORT_POLL_USEC 100000

struct HttpConn {
        char *server;
        /* http:// */
        struct event_base *base;
        struct evhttp_connection *evcon;
        char *host; /* the Host header */
        /* https:// */
        CURL *curl;
};

HttpConn *http_conn_free(HttpConn *c) {
        if (!c)
                return NULL;
        if (c->evcon)
                evhttp_connection_free(c->evcon);
        if (c->base)
                event_base_free(c->base);
        if (c->curl)
                curl_easy_cleanup(c->curl);
        free(c->host);
        free(c->server);
        free(c);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(HttpConn *, http_conn_free);

int http_conn_new(const char *server, HttpConn **ret) {
        _cleanup_(http_conn_freep) HttpConn *c = calloc(1, sizeof *c);
        if (!c || !(c->server = strdup(server)))
                return -ENOMEM;

        if (strneq(server, "https://", 8)) {
                c->curl = curl_easy_init();
                if (!c->curl)
                        return -ENOMEM;
                *ret = TAKE_PTR(c);
                return 0;
        }

        struct evhttp_uri *u = evhttp_uri_parse(server);
        const char *host = u ? evhttp_uri_get_host(u) : NULL;
        int port = u ? evhttp_uri_get_port(u) : -1;
        if (!host || !*host || !strneq(server, "http://", 7)) {
                if (u)
                        evhttp_uri_free(u);
                return log_error_errno(EINVAL, "Invalid server '%s': expected http://HOST[:PORT] or https://…",
                                       server);
        }
        /* The Host header keeps an IPv6 literal's brackets, the address does not. */
        int k = port > 0 ? asprintf(&c->host, "%s:%d", host, port) : asprintf(&c->host, "%s", host);
        char addr[256];
        size_t n = strlen(host);
        bool bracketed = n > 2 && host[0] == '[' && host[n - 1] == ']';
        bool fits = snprintf(addr, sizeof addr, "%.*s", (int) (bracketed ? n - 2 : n), host + bracketed) <
                    (int) sizeof addr;
        evhttp_uri_free(u);
        if (k < 0)
                return -ENOMEM;
        if (!fits)
                return log_error_errno(ENAMETOOLONG, "Invalid server '%s': host name too long.", server);

        c->base = event_base_new();
        if (!c->base)
                return -ENOMEM;
        c->evcon = evhttp_connection_base_new(c->base, NULL, addr, (unsigned short) (port > 0 ? port : 80));
        if (!c->evcon)
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

bool http_body_collect(const char *p, size_t n, void *userdata) {
        HttpBody *b = userdata;
        if (b->size + n > HTTP_BODY_MAX) {
                b->too_large = true;
                return false;
        }
        char *d = realloc(b->data, b->size + n + 1);
        if (!d)
                return false;
        memcpy(d + b->size, p, n);
        b->data = d;
        b->size += n;
        b->data[b->size] = 0;
        return true;
}

/* ---- http:// through evhttp ---- */

typedef struct Xfer {
        HttpConn *c;
        const HttpRequest *q;
        struct evhttp_request *req; /* NULL once libevent has finished with it */
        long status;
        bool done, stopped, aborted, got_headers;
        int error; /* enum evhttp_request_error + 1, 0 = none */
} Xfer;

static void emit_header(Xfer *x, const char *line, size_t n) {
        if (x->q->on_header)
                (void) x->q->on_header(line, n, x->q->userdata);
}

static int on_headers(struct evhttp_request *req, void *userdata) {
        Xfer *x = userdata;
        char line[8192];
        int n;

        x->got_headers = true;
        x->status = evhttp_request_get_response_code(req);
        (void) bufferevent_set_timeouts(evhttp_connection_get_bufferevent(x->c->evcon), NULL, NULL);
        const char *reason = evhttp_request_get_response_code_line(req);
        n = snprintf(line, sizeof line, "HTTP/1.1 %ld %s\r\n", x->status, reason ? reason : "");
        emit_header(x, line, (size_t) MIN(n, (int) sizeof line - 1));
        for (struct evkeyval *h = evhttp_request_get_input_headers(req)->tqh_first; h; h = h->next.tqe_next) {
                n = snprintf(line, sizeof line, "%s: %s\r\n", h->key, h->value);
                if (n > 0 && n < (int) sizeof line)
                        emit_header(x, line, (size_t) n);
        }
        emit_header(x, "\r\n", 2);
        return 0;
}

static void on_chunk(struct evhttp_request *req, void *userdata) {
        Xfer *x = userdata;
        struct evbuffer *in = evhttp_request_get_input_buffer(req);

        while (!x->stopped && evbuffer_get_length(in) > 0) {
                struct evbuffer_iovec v;
                if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
                        break;
                if (x->q->on_data && !x->q->on_data(v.iov_base, v.iov_len, x->q->userdata)) {
                        x->stopped = true;
                        event_base_loopbreak(x->c->base);
                }
                (void) evbuffer_drain(in, v.iov_len);
        }
        if (x->stopped)
                (void) evbuffer_drain(in, evbuffer_get_length(in));
}

static void on_error(enum evhttp_request_error e, void *userdata) {
        Xfer *x = userdata;
        x->error = (int) e + 1;
}

static void on_done(struct evhttp_request *req, void *userdata) {
        Xfer *x = userdata;
        if (req) {
                on_chunk(req, x); /* what a response without a body stream left */
                if (!x->got_headers && evhttp_request_get_response_code(req) > 0)
                        x->status = evhttp_request_get_response_code(req);
        }
        x->req = NULL;
        x->done = true;
        event_base_loopbreak(x->c->base);
}

static void on_poll(evutil_socket_t fd _unused_, short what _unused_, void *userdata) {
        Xfer *x = userdata;
        if (x->q->should_abort && x->q->should_abort()) {
                x->aborted = true;
                event_base_loopbreak(x->c->base);
        }
}

static const char *error_text(int e) {
        switch (e - 1) {
        case EVREQ_HTTP_TIMEOUT:
                return "no answer in time";
        case EVREQ_HTTP_EOF:
                return "the connection was refused or closed";
        case EVREQ_HTTP_INVALID_HEADER:
                return "invalid response";
        case EVREQ_HTTP_DATA_TOO_LONG:
                return "response too large";
        default:
                return "connection error";
        }
}

static int method_of(const char *m, enum evhttp_cmd_type *ret) {
        static const struct {
                const char *name;
                enum evhttp_cmd_type type;
        } table[] = {
                { "GET", EVHTTP_REQ_GET },   { "HEAD", EVHTTP_REQ_HEAD },     { "POST", EVHTTP_REQ_POST },
                { "PUT", EVHTTP_REQ_PUT },   { "DELETE", EVHTTP_REQ_DELETE }, { "PATCH", EVHTTP_REQ_PATCH },
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (streq(m, table[i].name)) {
                        *ret = table[i].type;
                        return 0;
                }
        return -EINVAL;
}

static int add_headers(struct evhttp_request *req, const HttpConn *c, const HttpRequest *q) {
        struct evkeyvalq *out = evhttp_request_get_output_headers(req);
        if (evhttp_add_header(out, "Host", c->host) < 0)
                return -ENOMEM;
        for (const char *const *h = q->headers; h && *h; h++) {
                const char *colon = strchr(*h, ':');
                char name[128];
                if (!colon || (size_t) (colon - *h) >= sizeof name)
                        return -EINVAL;
                memcpy(name, *h, (size_t) (colon - *h));
                name[colon - *h] = 0;
                if (evhttp_add_header(out, name, colon + 1 + strspn(colon + 1, " ")) < 0)
                        return -EINVAL;
        }
        return 0;
}

static int add_body(struct evhttp_request *req, const HttpRequest *q) {
        struct evbuffer *body = evhttp_request_get_output_buffer(req);
        char len[32];
        uint64_t size = q->body_fd >= 0 ? q->body_fd_size : q->body_size;

        snprintf(len, sizeof len, "%" PRIu64, size);
        if (evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", len) < 0)
                return -ENOMEM;
        if (q->body_fd >= 0) {
                if (size == 0)
                        return 0;
                if (size > (uint64_t) INT64_MAX)
                        return -EFBIG;
                /* libevent closes the descriptor it is given. */
                int fd = fcntl(q->body_fd, F_DUPFD_CLOEXEC, 3);
                if (fd < 0)
                        return -errno;
                if (evbuffer_add_file(body, fd, 0, (ev_off_t) size) < 0) {
                        safe_close(fd);
                        return -EIO;
                }
                return 0;
        }
        return q->body_size > 0 && evbuffer_add(body, q->body, q->body_size) < 0 ? -ENOMEM : 0;
}

static int request_event(HttpConn *c, const HttpRequest *q, long *ret_status) {
        const struct timeval response_tv = { .tv_sec = HTTP_RESPONSE_TIMEOUT_SEC };
        const struct timeval poll_tv = { .tv_usec = HTTP_ABORT_POLL_USEC };
        Xfer x = { .c = c, .q = q };
        enum evhttp_cmd_type type;
        int r;

        if (method_of(q->method, &type) < 0)
                return -EINVAL;
        x.req = evhttp_request_new(on_done, &x);
        if (!x.req)
                return -ENOMEM;
        evhttp_request_set_header_cb(x.req, on_headers);
        evhttp_request_set_chunked_cb(x.req, on_chunk);
        evhttp_request_set_error_cb(x.req, on_error);
        r = add_headers(x.req, c, q);
        if (r >= 0 && !IN_SET(type, EVHTTP_REQ_GET, EVHTTP_REQ_HEAD))
                r = add_body(x.req, q);
        if (r < 0) {
                evhttp_request_free(x.req);
                return r;
        }

        evhttp_connection_set_timeout_tv(c->evcon, &response_tv);
        struct event *poll = event_new(c->base, -1, EV_PERSIST, on_poll, &x);
        if (!poll || event_add(poll, &poll_tv) < 0) {
                if (poll)
                        event_free(poll);
                evhttp_request_free(x.req);
                return -ENOMEM;
        }
        /* On failure evhttp_make_request() has freed the request. */
        if (evhttp_make_request(c->evcon, x.req, type, q->path) < 0) {
                x.req = NULL;
                x.error = EVREQ_HTTP_EOF + 1;
        } else
                while (!x.done && !x.stopped && !x.aborted)
                        if (event_base_loop(c->base, EVLOOP_ONCE) < 0)
                                break;
        event_free(poll);
        if (x.req && !x.done) {
                /* Stopped or aborted mid-transfer: the connection is reset
                 * and the next request opens another. */
                evhttp_cancel_request(x.req);
                x.req = NULL;
                (void) event_base_loop(c->base, EVLOOP_NONBLOCK);
        }
        if (x.aborted)
                return -EINTR;
        if (x.stopped || x.status > 0) {
                *ret_status = x.status;
                return 0;
        }
        return log_error_errno(x.error == EVREQ_HTTP_TIMEOUT + 1 ? ETIMEDOUT : ECONNREFUSED,
                               "Failed to reach the server at '%s': %s.", c->server, error_text(x.error));
}

/* ---- https:// through libcurl ---- */

typedef struct CurlXfer {
        const HttpRequest *q;
        uint64_t left; /* of the body from body_fd */
        bool stopped;
} CurlXfer;

static size_t curl_on_data(char *p, size_t size, size_t n, void *userdata) {
        CurlXfer *x = userdata;
        if (x->q->on_data && !x->q->on_data(p, size * n, x->q->userdata)) {
                x->stopped = true;
                return 0;
        }
        return size * n;
}

static size_t curl_on_header(char *p, size_t size, size_t n, void *userdata) {
        CurlXfer *x = userdata;
        if (x->q->on_header)
                (void) x->q->on_header(p, size * n, x->q->userdata);
        return size * n;
}

static size_t curl_read_body(char *p, size_t size, size_t n, void *userdata) {
        CurlXfer *x = userdata;
        ssize_t k = loop_read(x->q->body_fd, p, MIN(size * n, x->left));
        if (k < 0)
                return CURL_READFUNC_ABORT;
        x->left -= (uint64_t) k;
        return (size_t) k;
}

static int curl_on_progress(void *userdata, curl_off_t a _unused_, curl_off_t b _unused_, curl_off_t c _unused_,
                            curl_off_t d _unused_) {
        CurlXfer *x = userdata;
        return x->q->should_abort && x->q->should_abort();
}

static int request_curl(HttpConn *c, const HttpRequest *q, long *ret_status) {
        _cleanup_free_ char *url = NULL;
        struct curl_slist *headers = NULL;
        CurlXfer x = { .q = q, .left = q->body_fd_size };
        CURL *h = c->curl;

        if (asprintf(&url, "%s%s", c->server, q->path) < 0)
                return -ENOMEM;
        for (const char *const *p = q->headers; p && *p; p++)
                headers = curl_slist_append(headers, *p);
        headers = curl_slist_append(headers, "Expect:");
        if (!headers)
                return -ENOMEM;
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, HTTP_CONNECT_TIMEOUT_SEC);
        curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
        const char *ca = getenv("KILN_CA_FILE");
        if (ca && *ca)
                curl_easy_setopt(h, CURLOPT_CAINFO, ca);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, curl_on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, curl_on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
        if (streq(q->method, "GET"))
                curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        else if (streq(q->method, "HEAD"))
                curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        else if (q->body_fd >= 0) {
                if (lseek(q->body_fd, 0, SEEK_SET) < 0) {
                        curl_slist_free_all(headers);
                        return -errno;
                }
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
                curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(h, CURLOPT_READFUNCTION, curl_read_body);
                curl_easy_setopt(h, CURLOPT_READDATA, &x);
                curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t) q->body_fd_size);
        } else {
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body ? q->body : "");
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) q->body_size);
        }
        CURLcode cc = curl_easy_perform(h);
        curl_slist_free_all(headers);
        if (cc == CURLE_ABORTED_BY_CALLBACK)
                return -EINTR;
        if (cc == CURLE_WRITE_ERROR && x.stopped)
                cc = CURLE_OK;
        if (cc != CURLE_OK)
                return log_error_errno(cc == CURLE_COULDNT_CONNECT ? ECONNREFUSED : EIO,
                                       "Failed to reach the server at '%s': %s.", c->server, curl_easy_strerror(cc));
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, ret_status);
        return 0;
}

int http_conn_request(HttpConn *c, const HttpRequest *q, long *ret_status) {
        return c->curl ? request_curl(c, q, ret_status) : request_event(c, q, ret_status);
}
