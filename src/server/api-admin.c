/* SPDX-License-Identifier: MIT */
/* Administration and operations: tokens, secrets, health, readiness and
 * Prometheus metrics. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "server.h"
#include "token.h"

const uint64_t *http_duration_bounds(void);

int api_healthz(Request *r) {
        return http_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

int api_readyz(Request *r) {
        int64_t n;
        int k = store_token_count(r->srv->store, "admin", &n);
        if (k < 0 || atomic_load(&r->srv->stopping))
                return http_error(r, 503, "not_ready", NULL, "the store is not available");
        return http_json(r, 200, json_pack("{s:s}", "status", "ready"));
}

/* ---- metrics ---- */

static void prom_label_value(FILE *f, const char *s) {
        for (; *s; s++) {
                if (*s == '\\' || *s == '"')
                        fputc('\\', f);
                if (*s == '\n') {
                        fputs("\\n", f);
                        continue;
                }
                fputc(*s, f);
        }
}

static void metrics_queue(FILE *f, Server *srv) {
        json_t *stats, *e, *v;
        const char *k;
        size_t i;
        int64_t now = store_now_wall();

        fputs("# HELP kiln_queue_depth Tasks waiting to be claimed, per label set.\n"
              "# TYPE kiln_queue_depth gauge\n", f);
        if (store_queue_stats(srv->store, &stats) < 0)
                return;
        json_array_foreach(stats, i, e) {
                fputs("kiln_queue_depth{labels=\"", f);
                bool first = true;
                json_object_foreach(json_object_get(e, "labels"), k, v) {
                        fprintf(f, "%s", first ? "" : ",");
                        prom_label_value(f, k);
                        fputc('=', f);
                        prom_label_value(f, json_is_string(v) ? json_string_value(v) : "?");
                        first = false;
                }
                fprintf(f, "\"} %" JSON_INTEGER_FORMAT "\n", json_integer_value(json_object_get(e, "depth")));
        }
        fputs("# HELP kiln_queue_oldest_age_seconds Age of the oldest queued task.\n"
              "# TYPE kiln_queue_oldest_age_seconds gauge\n", f);
        int64_t oldest = 0;
        json_array_foreach(stats, i, e) {
                int64_t t = json_integer_value(json_object_get(e, "oldest"));
                if (t > 0 && (oldest == 0 || t < oldest))
                        oldest = t;
        }
        fprintf(f, "kiln_queue_oldest_age_seconds %.3f\n", oldest ? (double) (now - oldest) / 1e6 : 0.0);
        json_decref(stats);
}

static void metrics_counter(FILE *f, const char *name, const char *help, uint64_t v) {
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

static void metrics_http(FILE *f, Server *srv) {
        const uint64_t *bounds = http_duration_bounds();

        fputs("# HELP kiln_http_requests_total HTTP responses by status code.\n"
              "# TYPE kiln_http_requests_total counter\n", f);
        for (int c = 100; c < 600; c++)
                if (srv->metrics.status[c])
                        fprintf(f, "kiln_http_requests_total{code=\"%d\"} %" PRIu64 "\n", c,
                                (uint64_t) srv->metrics.status[c]);
        fputs("# HELP kiln_http_request_duration_seconds Request durations per route.\n"
              "# TYPE kiln_http_request_duration_seconds histogram\n", f);
        for (size_t ri = 0; ri < HTTP_ROUTES_MAX; ri++) {
                if (!srv->metrics.duration_count[ri])
                        continue;
                char route[160];
                if (ri < server_n_routes)
                        snprintf(route, sizeof route, "%s %s", server_routes[ri].method, server_routes[ri].pattern);
                else
                        snprintf(route, sizeof route, "unmatched");
                uint64_t cum = 0;
                for (size_t b = 0; b <= HTTP_DURATION_BUCKETS; b++) {
                        cum += srv->metrics.duration_bucket[ri][b];
                        if (b < HTTP_DURATION_BUCKETS)
                                fprintf(f, "kiln_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %" PRIu64 "\n",
                                        route, (double) bounds[b] / 1e6, cum);
                        else
                                fprintf(f, "kiln_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
                                        route, cum);
                }
                fprintf(f, "kiln_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route,
                        (double) srv->metrics.duration_sum_usec[ri] / 1e6);
                fprintf(f, "kiln_http_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n", route,
                        (uint64_t) srv->metrics.duration_count[ri]);
        }
}

int api_metrics(Request *r) {
        Server *srv = r->srv;
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return -ENOMEM;
        metrics_queue(f, srv);
        metrics_counter(f, "kiln_claims_total", "Tasks handed to workers.", srv->metrics.claims);
        metrics_counter(f, "kiln_claims_empty_total", "Claims that ended without a task.",
                        srv->metrics.claims_empty);
        metrics_counter(f, "kiln_lease_expiries_total", "Leases that expired (attempts lost).",
                        srv->metrics.lease_expiries);
        metrics_counter(f, "kiln_finishes_total", "Attempts finished by their worker.", srv->metrics.finishes);
        metrics_counter(f, "kiln_log_bytes_total", "Log bytes received.", srv->metrics.log_bytes);
        uint64_t commits, ops;
        store_commit_stats(srv->store, &commits, &ops);
        metrics_counter(f, "kiln_store_commits_total", "Store transactions committed (group commits).", commits);
        metrics_counter(f, "kiln_store_write_ops_total", "Write operations carried by those commits.", ops);
        metrics_http(f, srv);
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        return http_respond(r, 200, "text/plain; version=0.0.4", buf, size);
}

/* ---- tokens ---- */

int api_token_create(Request *r) {
        static const char *const keys[] = { "kind", "name", NULL };
        uint8_t hash[TOKEN_HASH_SIZE];
        _cleanup_free_ char *token = NULL;
        json_t *body;
        int64_t id;
        int k;

        if (http_body_json(r, &body) < 0)
                return 0;
        const char *kind = json_string_value(json_object_get(body, "kind"));
        json_t *name = json_object_get(body, "name");
        TokenKind tk = token_kind_from_string(kind);
        if (http_check_keys(r, body, keys) < 0)
                goto finish;
        if (tk < 0 || tk == TOKEN_SESSION) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "kind"),
                           "kind: one of admin, user, worker");
                goto finish;
        }
        if (name && (!json_is_string(name) || json_string_length(name) > 128)) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "name"),
                           "name: a string of at most 128 characters");
                goto finish;
        }
        k = token_generate(tk, &token);
        if (k >= 0)
                k = token_hash(token, hash);
        if (k >= 0)
                k = store_token_create(r->srv->store, kind, json_string_value(name), hash, 0, &id);
        if (k < 0) {
                http_errno(r, k, "create token");
                goto finish;
        }
        http_json(r, 201, json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t) id, "kind", kind, "name",
                                    name ? json_string_value(name) : "", "token", token));
finish:
        json_decref(body);
        return 0;
}

int api_token_list(Request *r) {
        json_t *list;
        int k = store_token_list(r->srv->store, &list);
        if (k < 0)
                return http_errno(r, k, "list tokens");
        return http_json(r, 200, json_pack("{s:o}", "tokens", list));
}

int api_token_revoke(Request *r) {
        int64_t id;
        int k;

        if (http_arg_id(r, 0, &id) < 0)
                return 0;
        k = store_token_revoke(r->srv->store, id);
        if (k < 0)
                return http_errno(r, k, "token");
        return http_json(r, 200, json_pack("{s:I, s:b}", "id", (json_int_t) id, "revoked", true));
}

/* ---- secrets ---- */

int api_secret_put(Request *r) {
        static const char *const keys[] = { "value", NULL };
        const char *why;
        uint8_t *sealed = NULL;
        size_t sealed_len;
        json_t *body;
        int k;

        if ((why = secret_name_invalid(r->args[0])))
                return http_error(r, 400, "invalid_name", NULL, "%s", why);
        if (http_body_json(r, &body) < 0)
                return 0;
        json_t *value = json_object_get(body, "value");
        if (http_check_keys(r, body, keys) < 0)
                goto finish;
        if (!json_is_string(value)) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "value"),
                           "value: required, a string");
                goto finish;
        }
        if ((why = secret_value_invalid(json_string_value(value), json_string_length(value)))) {
                http_error(r, 400, "invalid_value", json_pack("{s:s}", "path", "value"), "%s", why);
                goto finish;
        }
        k = secret_seal(r->srv->secret_key, json_string_value(value), json_string_length(value), &sealed,
                        &sealed_len);
        if (k >= 0)
                k = store_secret_put(r->srv->store, r->args[0], sealed, sealed_len);
        free(sealed);
        if (k < 0) {
                http_errno(r, k, "store secret");
                goto finish;
        }
        http_json(r, 200, json_pack("{s:s}", "name", r->args[0]));
finish:
        json_decref(body);
        return 0;
}

int api_secret_list(Request *r) {
        json_t *list;
        int k = store_secret_list(r->srv->store, &list);
        if (k < 0)
                return http_errno(r, k, "list secrets");
        return http_json(r, 200, json_pack("{s:o}", "secrets", list));
}

int api_secret_delete(Request *r) {
        const char *why = secret_name_invalid(r->args[0]);
        if (why)
                return http_error(r, 400, "invalid_name", NULL, "%s", why);
        int k = store_secret_delete(r->srv->store, r->args[0]);
        if (k < 0)
                return http_errno(r, k, "secret");
        return http_json(r, 200, json_pack("{s:s, s:b}", "name", r->args[0], "deleted", true));
}
