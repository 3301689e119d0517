/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "parse-util.h"
#include "worker-internal.h"

struct Metrics {
        struct MHD_Daemon *mhd;
        Worker *w;
};

static void put(Buf *b, const char *fmt, ...) _printf_(2, 3);
static void put(Buf *b, const char *fmt, ...) {
        char line[512];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        if (n > 0)
                (void) buf_append(b, line, MIN((size_t) n, sizeof line - 1));
}

static void render(Worker *w, Buf *b) {
        PoolStats ps[POOL_IMAGES_MAX];
        uint64_t n_prep = 0, sum_prep = 0, retired = 0;
        size_t n = w->pool ? pool_stats(w->pool, ps, ELEMENTSOF(ps)) : 0;

        put(b, "# TYPE kiln_worker_pool_ready gauge\n");
        for (size_t i = 0; i < n; i++)
                put(b, "kiln_worker_pool_ready{image=\"%s\"} %u\n", ps[i].name, ps[i].ready);
        put(b, "# TYPE kiln_worker_pool_target gauge\n");
        for (size_t i = 0; i < n; i++)
                put(b, "kiln_worker_pool_target{image=\"%s\"} %u\n", ps[i].name, ps[i].target);
        if (w->pool)
                pool_prepare_times(w->pool, &n_prep, &sum_prep, &retired);
        put(b, "# TYPE kiln_worker_sandbox_prepare_seconds summary\n");
        put(b, "kiln_worker_sandbox_prepare_seconds_sum %.6f\n", (double) sum_prep / 1e6);
        put(b, "kiln_worker_sandbox_prepare_seconds_count %" PRIu64 "\n", n_prep);
        put(b, "# TYPE kiln_worker_pool_retired_total counter\nkiln_worker_pool_retired_total %" PRIu64 "\n",
            retired);
        put(b, "# TYPE kiln_worker_claim_to_start_seconds histogram\n");
        for (size_t i = 0; i < ELEMENTSOF(w->m.claim_to_start_bucket); i++)
                put(b, "kiln_worker_claim_to_start_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                    (double) worker_latency_buckets_usec[i] / 1e6, atomic_load(&w->m.claim_to_start_bucket[i]));
        put(b, "kiln_worker_claim_to_start_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
            atomic_load(&w->m.claim_to_start_count));
        put(b, "kiln_worker_claim_to_start_seconds_sum %.6f\n",
            (double) atomic_load(&w->m.claim_to_start_sum_usec) / 1e6);
        put(b, "kiln_worker_claim_to_start_seconds_count %" PRIu64 "\n", atomic_load(&w->m.claim_to_start_count));
        put(b, "# TYPE kiln_worker_bytes_masked_total counter\nkiln_worker_bytes_masked_total %" PRIu64 "\n",
            atomic_load(&w->m.bytes_masked));
        put(b, "# TYPE kiln_worker_log_bytes_total counter\nkiln_worker_log_bytes_total %" PRIu64 "\n",
            atomic_load(&w->m.log_bytes));
        put(b, "# TYPE kiln_worker_tasks_started_total counter\nkiln_worker_tasks_started_total %" PRIu64 "\n",
            atomic_load(&w->m.tasks_started));
        put(b, "# TYPE kiln_worker_tasks_finished_total counter\nkiln_worker_tasks_finished_total %" PRIu64 "\n",
            atomic_load(&w->m.tasks_finished));
        put(b, "# TYPE kiln_worker_starts_total counter\nkiln_worker_starts_total{pool=\"warm\"} %" PRIu64
               "\nkiln_worker_starts_total{pool=\"cold\"} %" PRIu64 "\n",
            atomic_load(&w->m.warm_starts), atomic_load(&w->m.cold_starts));
        put(b, "# TYPE kiln_worker_leases_lost_total counter\nkiln_worker_leases_lost_total %" PRIu64 "\n",
            atomic_load(&w->m.leases_lost));
        pthread_mutex_lock(&w->lock);
        unsigned used = w->used_slots, tasks = w->n_tasks, rebuilding = w->rebuild_running;
        pthread_mutex_unlock(&w->lock);
        put(b, "# TYPE kiln_worker_rebuilds_total counter\nkiln_worker_rebuilds_total %" PRIu64 "\n",
            atomic_load(&w->m.rebuilds));
        put(b, "# TYPE kiln_worker_rebuilds_failed_total counter\nkiln_worker_rebuilds_failed_total %" PRIu64 "\n",
            atomic_load(&w->m.rebuilds_failed));
        put(b, "# TYPE kiln_worker_rebuild_running gauge\nkiln_worker_rebuild_running %u\n", rebuilding);
        put(b, "# TYPE kiln_worker_slots gauge\nkiln_worker_slots %u\n", w->cfg->slots);
        put(b, "# TYPE kiln_worker_data_free_bytes gauge\nkiln_worker_data_free_bytes %" PRIu64 "\n",
            atomic_load(&w->m.data_free_bytes));
        put(b, "# TYPE kiln_worker_disk_short gauge\nkiln_worker_disk_short %d\n",
            atomic_load(&w->m.disk_short) ? 1 : 0);
        put(b, "# TYPE kiln_worker_slots_used gauge\nkiln_worker_slots_used %u\n", used);
        put(b, "# TYPE kiln_worker_tasks_running gauge\nkiln_worker_tasks_running %u\n", tasks);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state) {
        Metrics *m = cls;
        struct MHD_Response *resp;
        Buf b = BUF_INIT(1 << 20);
        unsigned status = 200;

        if (!streq(method, "GET") && !streq(method, "HEAD"))
                status = 405;
        else if (!streq(url, "/metrics"))
                status = 404;
        else
                render(m->w, &b);
        resp = MHD_create_response_from_buffer(b.len, b.data ? b.data : (void *) "", MHD_RESPMEM_MUST_COPY);
        buf_done(&b);
        if (!resp)
                return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
        enum MHD_Result r = MHD_queue_response(conn, status, resp);
        MHD_destroy_response(resp);
        return r;
}

int metrics_start(Worker *w, const char *listen, Metrics **ret) {
        struct sockaddr_in sa = { .sin_family = AF_INET };
        const char *colon = strrchr(listen, ':');
        char host[64];
        unsigned port;

        if (!colon || (size_t) (colon - listen) >= sizeof host || safe_atou(colon + 1, &port) < 0 || port > 65535)
                return log_error_errno(EINVAL, "--metrics: expected ADDR:PORT, not '%s'", listen);
        snprintf(host, sizeof host, "%.*s", (int) (colon - listen), listen);
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
                return log_error_errno(EINVAL, "--metrics: '%s' is not an IPv4 address", host);
        sa.sin_port = htons((uint16_t) port);
        Metrics *m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->w = w;
        m->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, m,
                                  MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT, 16U,
                                  MHD_OPTION_CONNECTION_TIMEOUT, 10U, MHD_OPTION_END);
        if (!m->mhd) {
                free(m);
                return log_error_errno(EADDRINUSE, "Failed to listen on '%s' for /metrics", listen);
        }
        *ret = m;
        return 0;
}

void metrics_stop(Metrics *m) {
        if (!m)
                return;
        MHD_stop_daemon(m->mhd);
        free(m);
}
