/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http-client.h"
#include "http-conn.h"
#include "log.h"
#include "macro.h"

void http_result_done(HttpResult *r) {
        free(r->body);
        *r = (HttpResult) {};
}

int http_client_request(const char *server, const char *token, const char *method, const char *path,
                        const char *body, size_t body_size, const char *content_type, HttpResult *ret) {
        _cleanup_free_ char *base = NULL, *auth = NULL, *ctype = NULL;
        HttpConn *c = NULL;
        HttpBody b = {};
        long status = 0;

        size_t sl = strlen(server);
        if (!(base = strndup(server, sl > 0 && server[sl - 1] == '/' ? sl - 1 : sl)) ||
            asprintf(&auth, "Authorization: Bearer %s", token ? token : "") < 0 ||
            asprintf(&ctype, "Content-Type: %s", content_type ? content_type : "application/json") < 0)
                return -ENOMEM;
        int r = http_conn_new(base, &c);
        if (r >= 0) {
                const char *headers[] = { auth, ctype, NULL };
                HttpRequest q = { .method = method, .path = path, .headers = headers, .body = body,
                                  .body_size = body ? body_size : 0, .body_fd = -EBADF, .on_data = http_body_collect,
                                  .userdata = &b };
                r = http_conn_request(c, &q, &status);
                http_conn_free(c);
        }
        explicit_bzero(auth, strlen(auth));
        if (r >= 0 && b.too_large)
                r = log_error_errno(EFBIG, "%s %s: the answer is larger than %u MiB.", method, path,
                                    HTTP_BODY_MAX >> 20);
        if (r < 0) {
                free(b.data);
                return r;
        }
        *ret = (HttpResult) { .status = status, .body = b.data, .size = b.size };
        return 0;
}

const char *http_result_message(const HttpResult *r, char *buf, size_t size) {
        json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
        const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        if (m)
                snprintf(buf, size, "%s", m);
        else
                snprintf(buf, size, "HTTP status %ld", r->status);
        json_decref(j);
        return buf;
}
