/* SPDX-License-Identifier: MIT */
/* The SQLite store without HTTP: jobs, claims, leases and fencing, expiry,
 * retries, events, group commit under concurrency, reopening. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fs-util.h"
#include "store.h"
#include "taskstate.h"
#include "test.h"

static char dir[] = "/tmp/kiln-test-store-XXXXXX";
static char path[256];

static Store *open_store(uint64_t ttl_usec) {
        StoreOptions o = { .lease_ttl_usec = ttl_usec, .max_infra_retries = 2 };
        Store *s = NULL;
        CHECK_EQ_INT(store_open(path, &o, &s), 0);
        return s;
}

static int64_t submit(Store *s, const char *spec_text, unsigned n_tasks) {
        json_t *spec = json_loads(spec_text, 0, NULL), *tasks = json_array();
        int64_t id;
        CHECK(spec);
        for (unsigned i = 0; i < n_tasks; i++) {
                char name[16];
                snprintf(name, sizeof name, "t%u", i);
                json_array_append_new(tasks, json_pack("{s:s, s:i}", "name", name, "slots", 1));
        }
        CHECK_EQ_INT(store_job_submit(s, spec, tasks, 0, &id), 0);
        json_decref(spec);
        json_decref(tasks);
        return id;
}

static int64_t worker(Store *s, const char *labels_text, uint8_t tag) {
        uint8_t hash[STORE_HASH_SIZE] = { tag, 0x77 };
        json_t *info = json_pack("{s:s, s:o, s:i}", "name", "w", "labels", json_loads(labels_text, 0, NULL),
                                 "slots", 4);
        int64_t id;
        CHECK_EQ_INT(store_worker_register(s, info, hash, &id), 0);
        json_decref(info);
        return id;
}

static const char *job_state(Store *s, int64_t id, char buf[static 32]) {
        json_t *j;
        CHECK_EQ_INT(store_job_get(s, id, &j), 0);
        snprintf(buf, 32, "%s", json_string_value(json_object_get(j, "state")));
        json_decref(j);
        return buf;
}

static void test_job_state_derivation(void) {
        unsigned c[_TASK_STATE_MAX] = {};
        c[TASK_QUEUED] = 2;
        CHECK_STREQ(job_state_derive(c), "queued");
        c[TASK_SUCCEEDED] = 1;
        CHECK_STREQ(job_state_derive(c), "running");
        c[TASK_QUEUED] = 0;
        c[TASK_WARNING] = 1;
        CHECK_STREQ(job_state_derive(c), "warning");
        c[TASK_FAILED] = 1;
        c[TASK_LOST] = 1;
        CHECK_STREQ(job_state_derive(c), "failed");
        unsigned skipped[_TASK_STATE_MAX] = { [TASK_SKIPPED] = 3 };
        CHECK_STREQ(job_state_derive(skipped), "skipped");
        CHECK(task_state_is_reportable(TASK_WARNING));
        CHECK(task_state_is_reportable(TASK_LOST));
        CHECK(!task_state_is_reportable(TASK_RUNNING));
        CHECK_EQ_INT(task_state_from_string("bogus"), _TASK_STATE_INVALID);
}

static void test_claim_fence_finish(Store *s) {
        char buf[32];
        int64_t job = submit(s, "{\"name\":\"a\",\"labels\":{\"os\":\"linux\"}}", 1);
        int64_t wrong = worker(s, "{\"os\":\"mac\"}", 1);
        int64_t w = worker(s, "{\"os\":\"linux\",\"arch\":\"x\"}", 2);
        StoreClaim c;
        bool cancel;

        json_t *mac = json_loads("{\"os\":\"mac\"}", 0, NULL);
        CHECK_EQ_INT(store_claim(s, wrong, mac, 4, &c), -EAGAIN);
        json_decref(mac);
        json_t *labels = json_loads("{\"os\":\"linux\",\"arch\":\"x\"}", 0, NULL);
        CHECK_EQ_INT(store_claim(s, w, labels, 4, &c), 0);
        CHECK_EQ_INT(c.job_id, job);
        CHECK_EQ_INT(c.attempt_number, 1);
        CHECK_STREQ(job_state(s, job, buf), "running");
        StoreClaim none;
        CHECK_EQ_INT(store_claim(s, w, labels, 4, &none), -EAGAIN);

        CHECK_EQ_INT(store_lease_heartbeat(s, c.attempt_id, c.fence + 1, w, &cancel), -ESTALE);
        CHECK_EQ_INT(store_lease_heartbeat(s, c.attempt_id, c.fence, wrong, &cancel), -ESTALE);
        CHECK_EQ_INT(store_lease_heartbeat(s, c.attempt_id, c.fence, w, &cancel), 0);
        CHECK(!cancel);
        CHECK_EQ_INT(store_lease_finish(s, c.attempt_id, c.fence, w,
                                        &(StoreFinish) { .state = "running", .exit_code = 0, .log_size = 0 }), -EINVAL);
        CHECK_EQ_INT(store_lease_finish(s, c.attempt_id, c.fence, w,
                                        &(StoreFinish) { .state = "succeeded", .exit_code = 0, .log_size = 5 }), 0);
        CHECK_EQ_INT(store_lease_finish(s, c.attempt_id, c.fence, w,
                                        &(StoreFinish) { .state = "succeeded", .exit_code = 0, .log_size = 5 }), -ESTALE);
        CHECK_STREQ(job_state(s, job, buf), "succeeded");
        StoreAttempt a;
        CHECK_EQ_INT(store_attempt_get(s, c.attempt_id, &a), 0);
        CHECK_STREQ(a.state, "succeeded");
        CHECK(!a.live);
        CHECK_EQ_INT(a.log_size, 5);
        store_claim_done(&c);
        json_decref(labels);
}

static void test_expiry_and_user_retry(Store *s) {
        char buf[32];
        int64_t job = submit(s, "{\"name\":\"b\",\"retry\":{\"max\":1,\"on\":[\"failed\"]}}", 1);
        int64_t w = worker(s, "{}", 3);
        json_t *labels = json_object();
        StoreClaim c1, c2, c3;
        unsigned n;

        CHECK_EQ_INT(store_claim(s, w, labels, 1, &c1), 0);
        usleep(300000);
        CHECK_EQ_INT(store_leases_expire(s, &n), 0);
        CHECK_EQ_INT(n, 1);
        CHECK_EQ_INT(store_lease_heartbeat(s, c1.attempt_id, c1.fence, w, NULL), -ESTALE);
        /* Lost attempts are retried without using the job's own retries. */
        CHECK_EQ_INT(store_claim(s, w, labels, 1, &c2), 0);
        CHECK_EQ_INT(c2.task_id, c1.task_id);
        CHECK(c2.fence > c1.fence);
        CHECK_EQ_INT(store_lease_finish(s, c2.attempt_id, c2.fence, w,
                                        &(StoreFinish) { .state = "failed", .exit_code = 1, .log_size = 0 }), 0);
        CHECK_EQ_INT(store_claim(s, w, labels, 1, &c3), 0);
        CHECK_EQ_INT(c3.attempt_number, 3);
        CHECK_EQ_INT(store_lease_finish(s, c3.attempt_id, c3.fence, w,
                                        &(StoreFinish) { .state = "failed", .exit_code = 1, .log_size = 0 }), 0);
        CHECK_STREQ(job_state(s, job, buf), "failed");
        json_t *t;
        CHECK_EQ_INT(store_task_get(s, c1.task_id, &t), 0);
        CHECK_EQ_INT(json_integer_value(json_object_get(t, "infra_retries")), 1);
        CHECK_EQ_INT(json_integer_value(json_object_get(t, "user_retries")), 1);
        CHECK_EQ_INT(json_array_size(json_object_get(t, "attempts")), 3);
        json_decref(t);
        unsigned retried;
        CHECK_EQ_INT(store_job_retry(s, job, &retried), 0);
        CHECK_EQ_INT(retried, 1);
        CHECK_STREQ(job_state(s, job, buf), "queued");
        CHECK_EQ_INT(store_job_cancel(s, job), 0);
        CHECK_STREQ(job_state(s, job, buf), "cancelled");
        store_claim_done(&c1);
        store_claim_done(&c2);
        store_claim_done(&c3);
        json_decref(labels);
}

typedef struct Racer {
        Store *s;
        int64_t worker;
        unsigned done;
} Racer;

static void *racer(void *p) {
        Racer *r = p;
        json_t *labels = json_object();
        StoreClaim c;
        while (store_claim(r->s, r->worker, labels, 1, &c) == 0) {
                CHECK_EQ_INT(store_lease_finish(r->s, c.attempt_id, c.fence, r->worker,
                                        &(StoreFinish) { .state = "succeeded", .exit_code = 0, .log_size = 0 }), 0);
                store_claim_done(&c);
                r->done++;
        }
        json_decref(labels);
        return NULL;
}

static void test_group_commit_race(Store *s) {
        Racer r[8];
        pthread_t th[8];
        unsigned total = 0;

        for (int i = 0; i < 3; i++)
                submit(s, "{\"name\":\"race\"}", 200);
        for (int i = 0; i < 8; i++) {
                r[i] = (Racer) { .s = s, .worker = worker(s, "{}", (uint8_t) (10 + i)) };
                CHECK_EQ_INT(pthread_create(&th[i], NULL, racer, &r[i]), 0);
        }
        for (int i = 0; i < 8; i++) {
                pthread_join(th[i], NULL);
                total += r[i].done;
        }
        CHECK_EQ_INT(total, 600);
}

typedef struct Waiter {
        Store *s;
        int64_t worker;
        uint64_t timeout_usec;
        int result;
        StoreClaim claim;
} Waiter;

static void *waiter(void *p) {
        Waiter *w = p;
        json_t *labels = json_object();
        StoreGen gen;
        store_gen_get(w->s, &gen);
        w->result = store_claim(w->s, w->worker, labels, 1, &w->claim);
        if (w->result == -EAGAIN)
                w->result = store_claim_wait(w->s, w->worker, labels, 1, &gen,
                                             store_now_mono() + w->timeout_usec, &w->claim);
        json_decref(labels);
        return NULL;
}

/* A claim that waits when a job is submitted is made in the submission's own
 * commit; one that finds nothing times out; a queue change it missed between
 * looking and parking is not lost. */
static void test_parked_claim(Store *s) {
        uint64_t commits0, commits1, ops;
        pthread_t th;
        int64_t w = worker(s, "{}", 40);

        Waiter t = { .s = s, .worker = w, .timeout_usec = 50000 };
        CHECK_EQ_INT(pthread_create(&th, NULL, waiter, &t), 0);
        pthread_join(th, NULL);
        CHECK_EQ_INT(t.result, -ETIMEDOUT);

        Waiter a = { .s = s, .worker = w, .timeout_usec = 10 * 1000000ULL };
        CHECK_EQ_INT(pthread_create(&th, NULL, waiter, &a), 0);
        usleep(100 * 1000); /* parked by now */
        store_commit_stats(s, &commits0, &ops);
        int64_t job = submit(s, "{\"name\":\"parked\"}", 1);
        pthread_join(th, NULL);
        store_commit_stats(s, &commits1, &ops);
        CHECK_EQ_INT(a.result, 0);
        CHECK_EQ_INT(a.claim.job_id, job);
        CHECK_EQ_INT(commits1 - commits0, 1);
        StoreAttempt at;
        CHECK_EQ_INT(store_attempt_get(s, a.claim.attempt_id, &at), 0);
        CHECK(at.live);
        CHECK_EQ_INT(store_lease_finish(s, a.claim.attempt_id, a.claim.fence, w,
                                        &(StoreFinish) { .state = "succeeded", .exit_code = 0, .log_size = 0 }), 0);
        store_claim_done(&a.claim);

        /* Queued after the waiter's generation snapshot but before it parks:
         * the parked claim runs at once and finds it. */
        StoreGen gen;
        StoreClaim c;
        json_t *labels = json_object();
        store_gen_get(s, &gen);
        job = submit(s, "{\"name\":\"missed\"}", 1);
        CHECK_EQ_INT(store_claim_wait(s, w, labels, 1, &gen, store_now_mono() + 10 * 1000000ULL, &c), 0);
        CHECK_EQ_INT(c.job_id, job);
        CHECK_EQ_INT(store_lease_finish(s, c.attempt_id, c.fence, w,
                                        &(StoreFinish) { .state = "succeeded", .exit_code = 0, .log_size = 0 }), 0);
        store_claim_done(&c);
        json_decref(labels);
}

static void test_events_increase(Store *s) {
        json_t *ev, *e;
        size_t i;
        int64_t last = 0;
        CHECK_EQ_INT(store_events_since(s, 0, 100000, &ev), 0);
        CHECK(json_array_size(ev) > 600);
        json_array_foreach(ev, i, e) {
                int64_t seq = json_integer_value(json_object_get(e, "seq"));
                CHECK(seq > last);
                last = seq;
        }
        json_decref(ev);
}

static void test_tokens_and_secrets(Store *s) {
        uint8_t h[STORE_HASH_SIZE] = { 0xaa };
        StoreToken t;
        int64_t id;
        CHECK_EQ_INT(store_token_create(s, "user", "u", h, 0, &id), 0);
        CHECK_EQ_INT(store_token_create(s, "user", "dup", h, 0, NULL), -EEXIST);
        CHECK_EQ_INT(store_token_lookup(s, h, &t), 0);
        CHECK_STREQ(t.kind, "user");
        CHECK_EQ_INT(store_token_revoke(s, id), 0);
        CHECK_EQ_INT(store_token_lookup(s, h, &t), -ENOENT);
        CHECK_EQ_INT(store_secret_put(s, "K", "sealed", 6), 0);
        void *blob;
        size_t n;
        CHECK_EQ_INT(store_secret_get(s, "K", &blob, &n), 0);
        CHECK_EQ_INT(n, 6);
        free(blob);
        CHECK_EQ_INT(store_secret_delete(s, "K"), 0);
        CHECK_EQ_INT(store_secret_delete(s, "K"), -ENOENT);
}

static void test_reopen_keeps_leases(void) {
        Store *s = open_store(60 * 1000000ULL);
        int64_t w = worker(s, "{}", 99);
        submit(s, "{\"name\":\"persist\"}", 1);
        json_t *labels = json_object();
        StoreClaim c;
        CHECK_EQ_INT(store_claim(s, w, labels, 1, &c), 0);
        store_close(s);

        s = open_store(60 * 1000000ULL);
        CHECK_EQ_INT(store_schema_version(s), 2);
        CHECK_EQ_INT(store_lease_heartbeat(s, c.attempt_id, c.fence, w, NULL), 0);
        CHECK_EQ_INT(store_lease_finish(s, c.attempt_id, c.fence, w,
                                        &(StoreFinish) { .state = "succeeded", .exit_code = 0, .log_size = 0 }), 0);
        store_claim_done(&c);
        json_decref(labels);
        store_close(s);
}

int main(void) {
        CHECK(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/kiln.db", dir);

        test_job_state_derivation();
        Store *s = open_store(200000);
        test_claim_fence_finish(s);
        test_expiry_and_user_retry(s);
        test_group_commit_race(s);
        test_parked_claim(s);
        test_events_increase(s);
        test_tokens_and_secrets(s);
        store_close(s);
        test_reopen_keeps_leases();
        rm_rf(dir);
        return 0;
}
