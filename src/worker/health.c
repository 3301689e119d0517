/* SPDX-License-Identifier: MIT */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "threads.h"
#include "client.h"
#include "fd-util.h"
#include "health.h"
#include "macro.h"

typedef struct Check {
        pid_t init_pid;
        const char *target;
        bool http;
        uint64_t timeout_usec;
        int result;
        char why[512];
} Check;

static int connect_timeout(const struct addrinfo *ai, int timeout_ms) {
        _cleanup_close_ int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                if (errno != EINPROGRESS)
                        return -errno;
                struct pollfd p = { .fd = fd, .events = POLLOUT };
                int k = poll(&p, 1, timeout_ms);
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -ETIMEDOUT;
                int err = 0;
                socklen_t l = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
                        return -errno;
                if (err)
                        return -err;
        }
        return 0;
}

static int check_tcp(Check *c) {
        char host[256], port[16];
        const char *t = c->target, *colon;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;

        if (t[0] == '[') {
                const char *end = strchr(t, ']');
                if (!end || end[1] != ':')
                        return -EINVAL;
                snprintf(host, sizeof host, "%.*s", (int) (end - t - 1), t + 1);
                colon = end + 1;
        } else {
                colon = strrchr(t, ':');
                if (!colon)
                        return -EINVAL;
                snprintf(host, sizeof host, "%.*s", (int) (colon - t), t);
        }
        snprintf(port, sizeof port, "%s", colon + 1);
        int k = getaddrinfo(host, port, &hints, &res);
        if (k != 0) {
                snprintf(c->why, sizeof c->why, "cannot resolve '%s': %s", host, gai_strerror(k));
                return -EHOSTUNREACH;
        }
        int r = -EHOSTUNREACH;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                r = connect_timeout(ai, (int) MAX(c->timeout_usec / 1000, 1ULL));
                if (r == 0)
                        break;
        }
        freeaddrinfo(res);
        if (r < 0)
                snprintf(c->why, sizeof c->why, "connecting to %s failed: %s", c->target, strerror(-r));
        return r;
}

static size_t discard(char *p, size_t s, size_t n, void *u) {
        return s * n;
}

static int check_http(Check *c) {
        struct curl_slist *resolve = NULL;
        long status = 0;
        /* Resolved here, in the sandbox's network namespace, by this thread. */
        if (client_resolve(c->target, &resolve) < 0) {
                snprintf(c->why, sizeof c->why, "cannot resolve the host of %s", c->target);
                return -EHOSTUNREACH;
        }
        CURL *e = curl_easy_init();
        if (!e) {
                curl_slist_free_all(resolve);
                return -ENOMEM;
        }
        if (resolve)
                curl_easy_setopt(e, CURLOPT_RESOLVE, resolve);
        curl_easy_setopt(e, CURLOPT_URL, c->target);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) MAX(c->timeout_usec / 1000, 1ULL));
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
        CURLcode cc = curl_easy_perform(e);
        if (cc == CURLE_OK)
                curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(e);
        curl_slist_free_all(resolve);
        if (cc != CURLE_OK) {
                snprintf(c->why, sizeof c->why, "%s: %s", c->target, curl_easy_strerror(cc));
                return -EHOSTUNREACH;
        }
        if (status < 200 || status > 299) {
                snprintf(c->why, sizeof c->why, "%s answered %ld", c->target, status);
                return -EBADMSG;
        }
        return 0;
}

static void *check_thread(void *arg) {
        Check *c = arg;
        char path[64];

        /* A network namespace is per thread: joining it here leaves the rest
         * of the worker where it is. */
        snprintf(path, sizeof path, "/proc/%d/ns/net", (int) c->init_pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
                c->result = -errno;
                snprintf(c->why, sizeof c->why, "cannot enter the sandbox's network: %s", strerror(errno));
                return NULL;
        }
        c->result = c->http ? check_http(c) : check_tcp(c);
        return NULL;
}

static int run_check(Check *c, char *why, size_t whysize) {
        pthread_t t;
        int k = worker_thread_create(&t, check_thread, c);
        if (k < 0)
                return k;
        (void) worker_thread_join(t, NULL);
        if (c->result < 0)
                snprintf(why, whysize, "%s", c->why[0] ? c->why : strerror(-c->result));
        return c->result;
}

int health_tcp(pid_t init_pid, const char *hostport, uint64_t timeout_usec, char *why, size_t whysize) {
        Check c = { .init_pid = init_pid, .target = hostport, .timeout_usec = timeout_usec };
        return run_check(&c, why, whysize);
}

int health_http(pid_t init_pid, const char *url, uint64_t timeout_usec, char *why, size_t whysize) {
        Check c = { .init_pid = init_pid, .target = url, .http = true, .timeout_usec = timeout_usec };
        return run_check(&c, why, whysize);
}
