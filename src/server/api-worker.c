/* SPDX-License-Identifier: MIT */
/* The worker protocol (DESIGN §3): register, long-poll claim, heartbeat,
 * finish. Log appends and artifact uploads live with logs and files. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "macro.h"
#include "server.h"
#include "taskstate.h"
#include "token.h"

#define MAX_WORKER_SLOTS 4096
#define MAX_CLAIM_WAIT_SEC 60

static int check_labels(Request *r, json_t *labels) {
        const char *k;
        json_t *v;

        if (!labels)
                return 0;
        if (!json_is_object(labels) || json_object_size(labels) > 64)
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "labels"),
                                  "labels: expected an object of at most 64 string values");
        json_object_foreach(labels, k, v) {
                if (strlen(k) == 0 || strlen(k) > 63 || !json_is_string(v) ||
                    json_string_length(v) > 255)
                        return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "labels"),
                                          "labels.%.63s: keys are 1–63 characters, values strings of at "
                                          "most 255", k);
        }
        return 0;
}

static int check_register(Request *r, json_t *body) {
        static const char *const keys[] = { "name", "labels", "slots", "backends", "images", "version", NULL };
        json_t *name = json_object_get(body, "name"), *slots = json_object_get(body, "slots");
        json_t *backends = json_object_get(body, "backends"), *images = json_object_get(body, "images");

        if (http_check_keys(r, body, keys) < 0)
                return -EINVAL;
        if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 128)
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "name"),
                                  "name: required, a string of 1–128 characters");
        if (slots && (!json_is_integer(slots) || json_integer_value(slots) < 1 ||
                      json_integer_value(slots) > MAX_WORKER_SLOTS))
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "slots"),
                                  "slots: an integer from 1 to %d", MAX_WORKER_SLOTS);
        if (backends && (!json_is_array(backends) || json_array_size(backends) > 16))
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "backends"),
                                  "backends: an array of at most 16 names");
        if (images && (!json_is_object(images) || json_object_size(images) > 256))
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "images"),
                                  "images: an object of at most 256 entries");
        return check_labels(r, json_object_get(body, "labels"));
}

int api_worker_register(Request *r) {
        uint8_t hash[TOKEN_HASH_SIZE];
        _cleanup_free_ char *token = NULL;
        json_t *body;
        int64_t id;
        int k;

        if (http_body_json(r, &body) < 0)
                return 0;
        k = check_register(r, body);
        if (k < 0 || r->responded)
                goto finish;
        k = token_generate(TOKEN_SESSION, &token);
        if (k >= 0)
                k = token_hash(token, hash);
        if (k >= 0)
                k = store_worker_register(r->srv->store, body, hash, &id);
        if (k < 0) {
                k = http_errno(r, k, "register worker");
                goto finish;
        }
        double ttl = (double) store_lease_ttl(r->srv->store) / 1e6;
        k = http_json(r, 201, json_pack("{s:I, s:s, s:f, s:f}", "worker", (json_int_t) id, "token", token,
                                        "lease_ttl", ttl, "heartbeat_interval", ttl / 3));
finish:
        json_decref(body);
        return k;
}

int api_worker_list(Request *r) {
        json_t *list;
        int k = store_worker_list(r->srv->store, &list);
        if (k < 0)
                return http_errno(r, k, "list workers");
        return http_json(r, 200, json_pack("{s:o}", "workers", list));
}

/* The secrets a task's spec names, decrypted for its assignment only. */
static json_t *claim_secrets(Server *srv, json_t *spec) {
        json_t *names = json_object_get(spec, "secrets"), *out = json_object(), *v;
        size_t i;

        json_array_foreach(names, i, v) {
                void *blob = NULL;
                size_t n;
                char *plain = NULL;
                const char *name = json_string_value(v);
                if (!name || store_secret_get(srv->store, name, &blob, &n) < 0)
                        continue;
                if (secret_open(srv->secret_key, blob, n, &plain, NULL) >= 0)
                        json_object_set_new(out, name, json_string(plain));
                if (plain)
                        memset(plain, 0, strlen(plain));
                free(plain);
                free(blob);
        }
        return out;
}

static json_t *claim_assignment(Server *srv, const StoreClaim *c) {
        json_t *spec = json_loads(c->spec, 0, NULL);
        json_t *env = json_loads(c->task_env, 0, NULL);
        double ttl = (double) store_lease_ttl(srv->store) / 1e6;

        if (!spec)
                spec = json_object();
        json_t *a = json_pack("{s:I, s:I, s:f, s:f, s:I, s:{s:I, s:s, s:i, s:o}, s:i, s:o}",
                              "lease", (json_int_t) c->attempt_id, "fence", (json_int_t) c->fence,
                              "expires_in", ttl, "lease_ttl", ttl, "job", (json_int_t) c->job_id,
                              "task", "id", (json_int_t) c->task_id, "name", c->task_name,
                              "slots", (int) c->slots, "env", env ? env : json_object(),
                              "attempt", (int) c->attempt_number, "secrets", claim_secrets(srv, spec));
        if (a)
                json_object_set_new(a, "spec", spec);
        else
                json_decref(spec);
        return a;
}

static int parse_claim(Request *r, json_t *body, unsigned default_slots, unsigned *ret_slots,
                       uint64_t *ret_wait) {
        static const char *const keys[] = { "slots", "wait", NULL };
        json_t *slots = json_object_get(body, "slots"), *wait = json_object_get(body, "wait");

        if (http_check_keys(r, body, keys) < 0)
                return -EINVAL;
        *ret_slots = default_slots;
        if (slots) {
                if (!json_is_integer(slots) || json_integer_value(slots) < 1 ||
                    json_integer_value(slots) > MAX_WORKER_SLOTS)
                        return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "slots"),
                                          "slots: the free slots, an integer from 1 to %d", MAX_WORKER_SLOTS);
                /* A worker never has more free slots than it registered. */
                *ret_slots = MIN((unsigned) json_integer_value(slots), default_slots);
        }
        *ret_wait = 30 * 1000000ULL;
        if (wait) {
                if (!json_is_number(wait) || json_number_value(wait) < 0 ||
                    json_number_value(wait) > MAX_CLAIM_WAIT_SEC)
                        return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "wait"),
                                          "wait: seconds to long-poll, from 0 to %d", MAX_CLAIM_WAIT_SEC);
                *ret_wait = (uint64_t) (json_number_value(wait) * 1e6);
        }
        return 0;
}

int api_claim(Request *r) {
        Server *srv = r->srv;
        StoreClaim c = {};
        json_t *body = NULL, *labels = NULL;
        unsigned slots, worker_slots;
        uint64_t wait;
        int k;

        if (r->body_size > 0 && http_body_json(r, &body) < 0)
                return 0;
        k = store_worker_get_labels(srv->store, r->token.worker_id, &labels, &worker_slots);
        if (k < 0) {
                k = http_errno(r, k, "worker");
                goto finish;
        }
        if (!body)
                body = json_object();
        k = parse_claim(r, body, worker_slots, &slots, &wait);
        if (k < 0 || r->responded)
                goto finish;

        uint64_t deadline = store_now_mono() + wait;
        for (;;) {
                StoreGen gen;
                store_gen_get(srv->store, &gen);
                k = store_claim(srv->store, r->token.worker_id, labels, slots, &c);
                if (k != -EAGAIN)
                        break;
                /* Made by the commit that queues a task, not by a timer. The
                 * claim is retried (which marks the worker seen) at least twice
                 * per --worker-timeout so a polling worker never looks dead. */
                uint64_t slice = store_now_mono() + srv->cfg.worker_timeout_usec / 2;
                k = store_claim_wait(srv->store, r->token.worker_id, labels, slots, &gen, MIN(deadline, slice),
                                     &c);
                if (k == -ETIMEDOUT && store_now_mono() < deadline)
                        continue;
                break;
        }
        if (k == -ETIMEDOUT || k == -ESHUTDOWN) {
                srv->metrics.claims_empty++;
                k = http_respond(r, 204, NULL, NULL, 0);
                goto finish;
        }
        if (k < 0) {
                k = http_errno(r, k, "claim");
                goto finish;
        }
        srv->metrics.claims++;
        k = http_json(r, 200, claim_assignment(srv, &c));
        store_claim_done(&c);
finish:
        json_decref(labels);
        json_decref(body);
        return k;
}

int api_lease_check(Request *r, int64_t fence, StoreAttempt *ret) {
        int64_t id;
        int k;

        if (http_arg_id(r, 0, &id) < 0)
                return -ENOENT;
        k = store_lease_check(r->srv->store, id, fence, r->token.worker_id, ret);
        if (k < 0) {
                http_errno(r, k, "lease");
                return k;
        }
        return 0;
}

static int body_fence(Request *r, json_t *body, int64_t *ret) {
        json_t *f = json_object_get(body, "fence");
        if (!json_is_integer(f) || json_integer_value(f) < 1) {
                http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "fence"),
                           "fence: required, the fencing number of the lease");
                return -EINVAL;
        }
        *ret = json_integer_value(f);
        return 0;
}

int api_worker_heartbeat(Request *r) {
        static const char *const keys[] = { "images", NULL };
        json_t *body, *images;
        int k;

        if (http_body_json(r, &body) < 0)
                return 0;
        images = json_object_get(body, "images");
        if (http_check_keys(r, body, keys) < 0) {
                json_decref(body);
                return 0;
        }
        if (images && (!json_is_object(images) || json_object_size(images) > 256)) {
                json_decref(body);
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "images"),
                                  "images: an object of at most 256 entries");
        }
        k = store_worker_heartbeat(r->srv->store, r->token.worker_id, images);
        json_decref(body);
        if (k < 0)
                return http_errno(r, k, "worker heartbeat");
        return http_json(r, 200, json_pack("{s:I}", "worker", (json_int_t) r->token.worker_id));
}

int api_heartbeat(Request *r) {
        static const char *const keys[] = { "fence", NULL };
        json_t *body;
        int64_t id, fence;
        bool cancel;
        int k;

        if (http_arg_id(r, 0, &id) < 0 || http_body_json(r, &body) < 0)
                return 0;
        if (http_check_keys(r, body, keys) < 0 || body_fence(r, body, &fence) < 0) {
                json_decref(body);
                return 0;
        }
        json_decref(body);
        k = store_lease_heartbeat(r->srv->store, id, fence, r->token.worker_id, &cancel);
        if (k < 0)
                return http_errno(r, k, "heartbeat");
        double ttl = (double) store_lease_ttl(r->srv->store) / 1e6;
        return http_json(r, 200, json_pack("{s:f, s:b}", "expires_in", ttl, "cancel", cancel));
}

#define FINISH_REASON_MAX 1024

/* The body's strings stay valid while body lives. */
static int parse_finish(Request *r, json_t *body, StoreFinish *f, int64_t *ret_log_size) {
        static const char *const keys[] = { "fence", "state", "exit_code", "log_size", "reason", "log_truncated",
                                            NULL };
        json_t *st = json_object_get(body, "state"), *ec = json_object_get(body, "exit_code");
        json_t *ls = json_object_get(body, "log_size"), *why = json_object_get(body, "reason");
        json_t *cut = json_object_get(body, "log_truncated");

        if (http_check_keys(r, body, keys) < 0)
                return -EINVAL;
        TaskState ts = task_state_from_string(json_string_value(st));
        if (ts < 0 || !task_state_is_reportable(ts))
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "state"),
                                  "state: one of succeeded, failed, warning, skipped, cancelled, timed_out, "
                                  "lost");
        if (ec && (!json_is_integer(ec) || json_integer_value(ec) < -255 || json_integer_value(ec) > 255))
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "exit_code"),
                                  "exit_code: an integer from -255 to 255");
        if (ls && (!json_is_integer(ls) || json_integer_value(ls) < 0))
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "log_size"),
                                  "log_size: the number of log bytes sent");
        if (why && !json_is_null(why) &&
            (!json_is_string(why) || json_string_length(why) > FINISH_REASON_MAX ||
             strlen(json_string_value(why)) != json_string_length(why)))
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "reason"),
                                  "reason: a string of at most %d bytes", FINISH_REASON_MAX);
        if (cut && !json_is_boolean(cut))
                return http_error(r, 400, "invalid_field", json_pack("{s:s}", "path", "log_truncated"),
                                  "log_truncated: a boolean");
        f->state = task_state_to_string(ts);
        f->exit_code = ec ? (int) json_integer_value(ec) : 0;
        f->reason = json_is_string(why) && json_string_length(why) > 0 ? json_string_value(why) : NULL;
        f->log_truncated = json_is_true(cut);
        *ret_log_size = ls ? json_integer_value(ls) : -1;
        return 0;
}

/* The log bytes the server holds for an attempt. */
static int log_size_of(Server *srv, const StoreAttempt *a, uint64_t *ret) {
        char path[256];
        struct stat st;

        api_log_path(a, path, sizeof path);
        if (fstatat(srv->data_fd, path, &st, 0) < 0) {
                if (errno != ENOENT)
                        return -errno;
                *ret = 0;
                return 0;
        }
        *ret = (uint64_t) st.st_size;
        return 0;
}

int api_finish(Request *r) {
        StoreAttempt a;
        StoreFinish f = {};
        _cleanup_(json_decrefp) json_t *body = NULL;
        int64_t fence = 0, log_size = -1;
        uint64_t have = 0;
        int k;

        if (http_body_json(r, &body) < 0)
                return 0;
        k = body_fence(r, body, &fence);
        if (k >= 0)
                k = parse_finish(r, body, &f, &log_size);
        if (k < 0 || r->responded)
                return 0;
        if (api_lease_check(r, fence, &a) < 0)
                return 0;
        k = log_size_of(r->srv, &a, &have);
        if (k < 0)
                return http_errno(r, k, "log");
        if (log_size >= 0 && (uint64_t) log_size != have)
                return http_error(r, 416, "log_incomplete", json_pack("{s:I}", "offset", (json_int_t) have),
                                  "the server holds %llu log bytes, not %lld: send the rest from offset %llu",
                                  (unsigned long long) have, (long long) log_size, (unsigned long long) have);
        f.log_size = have;
        k = store_lease_finish(r->srv->store, a.id, fence, r->token.worker_id, &f);
        if (k < 0)
                return http_errno(r, k, "finish");
        r->srv->metrics.finishes++;
        return http_json(r, 200, json_pack("{s:I, s:s, s:I}", "lease", (json_int_t) a.id, "state", f.state,
                                           "log_size", (json_int_t) have));
}
