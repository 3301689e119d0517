/* SPDX-License-Identifier: MIT */
#include <curl/curl.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "fd-util.h"

#define MAX_REPLY (4U * 1024U * 1024U)

struct Client {
        CURL *curl;
        char *base;
        struct curl_slist *resolve;
        char *auth; /* "Authorization: Bearer …" */
        const atomic_bool *abort_flag;
        char errbuf[CURL_ERROR_SIZE];
};

typedef struct Sink {
        char *data;
        size_t size;
        int fd;        /* client_get_fd: where the body goes */
        uint64_t max;
        uint64_t written;
        long status;
        bool too_big;
        int write_error; /* -errno of a failed write to fd: local, never worth a retry */
        CURL *curl;
} Sink;

typedef struct Source {
        int fd;
        uint64_t offset, size;
} Source;

void client_reply_done(ClientReply *r) {
        json_decref(r->json);
        *r = (ClientReply) {};
}

static void auth_free(char *a) {
        if (a) {
                explicit_bzero(a, strlen(a));
                free(a);
        }
}

int client_set_token(Client *c, const char *token) {
        char *a = NULL;
        if (asprintf(&a, "Authorization: Bearer %s", token ? token : "") < 0)
                return -ENOMEM;
        auth_free(c->auth);
        c->auth = a;
        return 0;
}

static void global_init(void) {
        (void) curl_global_init(CURL_GLOBAL_DEFAULT);
}

int client_new(const char *server, const char *token, Client **ret) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        Client *c;
        size_t l = strlen(server);

        (void) pthread_once(&once, global_init);
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        while (l > 0 && server[l - 1] == '/')
                l--;
        c->base = strndup(server, l);
        c->curl = curl_easy_init();
        if (!c->base || !c->curl || client_set_token(c, token) < 0) {
                client_free(c);
                return -ENOMEM;
        }
        int r = client_resolve(c->base, &c->resolve);
        if (r < 0) {
                client_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

Client *client_free(Client *c) {
        if (!c)
                return NULL;
        if (c->curl)
                curl_easy_cleanup(c->curl);
        free(c->base);
        curl_slist_free_all(c->resolve);
        auth_free(c->auth);
        free(c);
        return NULL;
}

void client_set_abort(Client *c, const atomic_bool *flag) {
        c->abort_flag = flag;
}

static size_t on_data(char *p, size_t size, size_t n, void *userdata) {
        Sink *s = userdata;
        size_t len = size * n;

        if (s->fd >= 0) {
                if (s->status == 0)
                        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
                if (s->status >= 200 && s->status < 300) {
                        if (s->written + len > s->max) {
                                s->too_big = true;
                                return 0;
                        }
                        int w = loop_write(s->fd, p, len);
                        if (w < 0) {
                                s->write_error = w;
                                return 0;
                        }
                        s->written += len;
                        return len;
                }
        }
        if (s->size + len > MAX_REPLY)
                return 0;
        char *b = realloc(s->data, s->size + len + 1);
        if (!b)
                return 0;
        memcpy(b + s->size, p, len);
        s->data = b;
        s->size += len;
        s->data[s->size] = 0;
        return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *userdata) {
        Source *s = userdata;
        size_t want = MIN(size * n, (size_t) (s->size - s->offset));
        if (want == 0)
                return 0;
        ssize_t k = pread(s->fd, buf, want, (off_t) s->offset);
        if (k <= 0)
                return CURL_READFUNC_ABORT;
        s->offset += (uint64_t) k;
        return (size_t) k;
}

static int on_progress(void *userdata, curl_off_t a, curl_off_t b, curl_off_t c_, curl_off_t d) {
        const Client *c = userdata;
        return c->abort_flag && atomic_load(c->abort_flag) ? 1 : 0;
}

/* One request on the reused handle. */
static int perform(Client *c, const char *method, const char *path, const char *ctype, const void *body,
                   size_t body_size, Source *src, Sink *sink, long timeout_ms) {
        struct curl_slist *h = NULL;
        _cleanup_free_ char *url = NULL, *ct = NULL;
        CURL *e = c->curl;
        int r = 0;

        if (asprintf(&url, "%s%s", c->base, path) < 0)
                return -ENOMEM;
        if (ctype && asprintf(&ct, "Content-Type: %s", ctype) < 0)
                return -ENOMEM;
        curl_easy_reset(e);
        h = curl_slist_append(h, c->auth);
        if (ct)
                h = curl_slist_append(h, ct);
        h = curl_slist_append(h, "Expect:");
        if (!h)
                return -ENOMEM;
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, sink);
        curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(e, CURLOPT_XFERINFODATA, c);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        if (c->resolve)
                curl_easy_setopt(e, CURLOPT_RESOLVE, c->resolve);
        if (src) {
                curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
                curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
                curl_easy_setopt(e, CURLOPT_READDATA, src);
                curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t) src->size);
        } else if (body) {
                curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_size);
        }
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        sink->curl = e;

        CURLcode cc = curl_easy_perform(e);
        curl_slist_free_all(h);
        switch (cc) {
        case CURLE_OK:
                curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &sink->status);
                break;
        case CURLE_COULDNT_CONNECT:
                r = -ECONNREFUSED;
                break;
        case CURLE_OPERATION_TIMEDOUT:
                r = -ETIMEDOUT;
                break;
        case CURLE_ABORTED_BY_CALLBACK:
                r = -ECANCELED;
                break;
        case CURLE_WRITE_ERROR:
                r = sink->too_big ? -EFBIG : sink->write_error < 0 ? sink->write_error : -ENOBUFS;
                break;
        default:
                r = -EIO;
        }
        return r;
}

static int reply_from(Sink *s, int r, ClientReply *ret) {
        if (r >= 0) {
                *ret = (ClientReply) { .status = s->status };
                if (s->data)
                        ret->json = json_loadb(s->data, s->size, 0, NULL);
        }
        free(s->data);
        return r;
}

int client_call(Client *c, const char *method, const char *path, json_t *body, long timeout_ms,
                ClientReply *ret) {
        _cleanup_free_ char *text = NULL;
        Sink s = { .fd = -EBADF };

        if (body) {
                text = json_dumps(body, JSON_COMPACT);
                if (!text)
                        return -ENOMEM;
        }
        int r = perform(c, method, path, text ? "application/json" : NULL, text ? text : NULL,
                        text ? strlen(text) : 0, NULL, &s, timeout_ms);
        return reply_from(&s, r, ret);
}

int client_post_raw(Client *c, const char *path, const void *data, size_t n, long timeout_ms,
                    ClientReply *ret) {
        Sink s = { .fd = -EBADF };
        static const char empty[1];
        int r = perform(c, "POST", path, "application/octet-stream", n > 0 ? data : empty, n, NULL, &s,
                        timeout_ms);
        return reply_from(&s, r, ret);
}

int client_put_fd(Client *c, const char *path, int fd, uint64_t size, long timeout_ms, ClientReply *ret) {
        Sink s = { .fd = -EBADF };
        Source src = { .fd = fd, .size = size };
        int r = perform(c, "PUT", path, "application/zstd", NULL, 0, &src, &s, timeout_ms);
        return reply_from(&s, r, ret);
}

int client_get_fd(Client *c, const char *path, int fd, uint64_t max, long timeout_ms, long *ret_status) {
        Sink s = { .fd = fd, .max = max };
        int r = perform(c, "GET", path, NULL, NULL, 0, NULL, &s, timeout_ms);
        free(s.data);
        if (r < 0)
                return r;
        *ret_status = s.status;
        return 0;
}

int64_t client_reply_offset(const ClientReply *r) {
        json_t *o = json_object_get(r->json, "offset");
        if (!o)
                o = json_object_get(json_object_get(r->json, "error"), "offset");
        return json_is_integer(o) ? json_integer_value(o) : -1;
}

const char *client_reply_message(const ClientReply *r, char *buf, size_t size) {
        const char *m = json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
        if (m)
                snprintf(buf, size, "%s", m);
        else
                snprintf(buf, size, "HTTP status %ld", r->status);
        return buf;
}

int client_resolve(const char *url, struct curl_slist **ret) {
        CURLU *u = curl_url();
        char *host = NULL, *port = NULL;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
        struct curl_slist *l = NULL;
        unsigned char buf[sizeof(struct in6_addr)];
        int r = 0;

        *ret = NULL;
        if (!u)
                return -ENOMEM;
        if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
                r = -EINVAL;
                goto finish;
        }
        size_t hl = strlen(host);
        if (host[0] == '[' || inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1)
                goto finish; /* an address: nothing to resolve */
        if (getaddrinfo(host, port, &hints, &res) != 0) {
                r = -EHOSTUNREACH;
                goto finish;
        }
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                char addr[INET6_ADDRSTRLEN], entry[512];
                const void *p = ai->ai_family == AF_INET ? (const void *) &((struct sockaddr_in *) ai->ai_addr)->sin_addr
                                                         : (const void *) &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr;
                if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                    !inet_ntop(ai->ai_family, p, addr, sizeof addr))
                        continue;
                snprintf(entry, sizeof entry, "%.*s:%s:%s%s%s", (int) MIN(hl, 255U), host, port,
                         ai->ai_family == AF_INET6 ? "[" : "", addr, ai->ai_family == AF_INET6 ? "]" : "");
                struct curl_slist *n = curl_slist_append(l, entry);
                if (!n) {
                        r = -ENOMEM;
                        goto finish;
                }
                l = n;
                break; /* one address is enough: curl takes the first entry per host */
        }
        *ret = TAKE_PTR(l);
finish:
        if (res)
                freeaddrinfo(res);
        curl_slist_free_all(l);
        curl_free(host);
        curl_free(port);
        curl_url_cleanup(u);
        return r;
}
