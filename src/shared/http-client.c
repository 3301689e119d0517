/* SPDX-License-Identifier: MIT */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http-client.h"
#include "macro.h"

#define MAX_RESPONSE (64U * 1024U * 1024U)

void http_result_done(HttpResult *r) {
        free(r->body);
        *r = (HttpResult) {};
}

static size_t on_data(char *p, size_t size, size_t n, void *userdata) {
        HttpResult *r = userdata;
        size_t len = size * n;
        if (r->size + len > MAX_RESPONSE)
                return 0;
        char *b = realloc(r->body, r->size + len + 1);
        if (!b)
                return 0;
        memcpy(b + r->size, p, len);
        r->body = b;
        r->size += len;
        r->body[r->size] = 0;
        return len;
}

int http_client_request(const char *server, const char *token, const char *method, const char *path,
                        const char *body, size_t body_size, const char *content_type, HttpResult *ret) {
        struct curl_slist *headers = NULL;
        HttpResult res = {};
        char *url = NULL, *auth = NULL, *ctype = NULL;
        int r = 0;

        CURL *c = curl_easy_init();
        if (!c)
                return -ENOMEM;
        size_t sl = strlen(server);
        if (asprintf(&url, "%.*s%s", (int) (sl > 0 && server[sl - 1] == '/' ? sl - 1 : sl), server, path) < 0 ||
            asprintf(&auth, "Authorization: Bearer %s", token ? token : "") < 0 ||
            asprintf(&ctype, "Content-Type: %s", content_type ? content_type : "application/json") < 0) {
                r = -ENOMEM;
                goto finish;
        }
        headers = curl_slist_append(headers, auth);
        headers = curl_slist_append(headers, ctype);
        headers = curl_slist_append(headers, "Expect:");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &res);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
        if (body) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_size);
        }
        CURLcode cc = curl_easy_perform(c);
        if (cc != CURLE_OK) {
                r = cc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED : -EIO;
                http_result_done(&res);
                goto finish;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &res.status);
        *ret = res;
finish:
        curl_slist_free_all(headers);
        curl_easy_cleanup(c);
        free(url);
        if (auth) {
                memset(auth, 0, strlen(auth));
                free(auth);
        }
        free(ctype);
        return r;
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
