/* SPDX-License-Identifier: MIT */
/* bench/server-throughput: how many trivial tasks per second the server
 * hands out and takes back, with durable commits.
 *
 * In one run it measures, side by side:
 *   1. this machine's fdatasync rate in the data directory's file system,
 *   2. the store alone, in-process: claim + finish, 16 threads,
 *   3. the whole server over HTTP on loopback: 16 simulated workers, each on
 *      its own keep-alive connection, claim + finish.
 * The bar (DESIGN §9, issue 3): ≥ 1,000 tasks/s through HTTP on 2 cores. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs-util.h"
#include "macro.h"
#include "store.h"

#define N_WORKERS 16
#define TASKS_PER_JOB 256

static unsigned n_tasks = 8000;
static const char *kiln_bin = "build/kiln";

static double now_sec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double bench_fdatasync(const char *dir) {
        char path[4200], buf[512] = {};
        snprintf(path, sizeof path, "%s/fdatasync.probe", dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -1;
        unsigned n = 0;
        double start = now_sec(), t = start;
        do {
                if (pwrite(fd, buf, sizeof buf, (off_t) (n % 64) * 512) < 0 || fdatasync(fd) < 0)
                        break;
                n++;
        } while ((t = now_sec()) - start < 1.0);
        close(fd);
        unlink(path);
        return n / (t - start);
}

static json_t *job_spec(unsigned n) {
        json_t *tasks = json_array();
        for (unsigned i = 0; i < n; i++) {
                char name[32];
                snprintf(name, sizeof name, "t%u", i);
                json_array_append_new(tasks, json_string(name));
        }
        return json_pack("{s:s, s:[{s:s}], s:o}", "name", "bench", "steps", "run", "true", "tasks", tasks);
}

static json_t *expanded(unsigned n) {
        json_t *tasks = json_array();
        for (unsigned i = 0; i < n; i++) {
                char name[32];
                snprintf(name, sizeof name, "t%u", i);
                json_array_append_new(tasks, json_pack("{s:s, s:i, s:{}}", "name", name, "slots", 1, "env"));
        }
        return tasks;
}

/* ---- in-process ---- */

typedef struct StoreBench {
        Store *store;
        int64_t workers[N_WORKERS];
        atomic_uint done;
} StoreBench;

typedef struct Arg {
        void *bench;
        unsigned i;
} Arg;

static void *store_worker(void *p) {
        Arg *a = p;
        StoreBench *b = a->bench;
        json_t *labels = json_object();
        for (;;) {
                StoreClaim c;
                int r = store_claim(b->store, b->workers[a->i], labels, 1, &c);
                if (r < 0)
                        break;
                r = store_lease_finish(b->store, c.attempt_id, c.fence, b->workers[a->i],
                                       &(StoreFinish) { .state = "succeeded" });
                store_claim_done(&c);
                if (r < 0) {
                        fprintf(stderr, "finish failed: %s\n", strerror(-r));
                        break;
                }
                b->done++;
        }
        json_decref(labels);
        return NULL;
}

static double bench_store(const char *dir) {
        char path[4200];
        StoreBench b = {};
        pthread_t th[N_WORKERS];
        Arg args[N_WORKERS];
        uint8_t hash[STORE_HASH_SIZE] = {};

        snprintf(path, sizeof path, "%s/store.db", dir);
        if (store_open(path, NULL, &b.store) < 0)
                return -1;
        for (unsigned i = 0; i < N_WORKERS; i++) {
                json_t *info = json_pack("{s:s}", "name", "bench");
                hash[0] = (uint8_t) i;
                hash[1] = 0xbe;
                store_worker_register(b.store, info, hash, &b.workers[i]);
                json_decref(info);
        }
        for (unsigned left = n_tasks; left > 0;) {
                unsigned n = MIN(left, (unsigned) TASKS_PER_JOB);
                json_t *spec = job_spec(n), *tasks = expanded(n);
                int64_t id;
                store_job_submit(b.store, spec, tasks, 0, &id);
                json_decref(spec);
                json_decref(tasks);
                left -= n;
        }
        double start = now_sec();
        for (unsigned i = 0; i < N_WORKERS; i++) {
                args[i] = (Arg) { &b, i };
                pthread_create(&th[i], NULL, store_worker, &args[i]);
        }
        for (unsigned i = 0; i < N_WORKERS; i++)
                pthread_join(th[i], NULL);
        double t = now_sec() - start;
        store_close(b.store);
        return b.done / t;
}

/* ---- over HTTP ---- */

typedef struct Buf {
        char data[1 << 16];
        size_t n;
} Buf;

static size_t on_body(char *p, size_t size, size_t n, void *userdata) {
        Buf *b = userdata;
        size_t len = size * n;
        if (b->n + len < sizeof b->data) {
                memcpy(b->data + b->n, p, len);
                b->n += len;
                b->data[b->n] = 0;
        }
        return len;
}

typedef struct HttpBench {
        char base[64];
        char tokens[N_WORKERS][128];
        atomic_uint done, errors;
} HttpBench;

static long http_call(CURL *c, struct curl_slist *hdrs, const char *url, const char *body, Buf *out) {
        long status = 0;
        out->n = 0;
        out->data[0] = 0;
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        if (body)
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        else
                curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
        if (curl_easy_perform(c) != CURLE_OK)
                return -1;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        return status;
}

static struct curl_slist *auth_headers(const char *token) {
        char h[300];
        snprintf(h, sizeof h, "Authorization: Bearer %.200s", token);
        struct curl_slist *l = curl_slist_append(NULL, h);
        l = curl_slist_append(l, "Content-Type: application/json");
        return curl_slist_append(l, "Expect:");
}

static void *http_worker(void *p) {
        Arg *a = p;
        HttpBench *b = a->bench;
        CURL *c = curl_easy_init();
        struct curl_slist *hdrs = auth_headers(b->tokens[a->i]);
        char url[256], body[128];
        Buf *out = malloc(sizeof(Buf));

        for (;;) {
                snprintf(url, sizeof url, "%s/api/v1/workers/claim", b->base);
                long st = http_call(c, hdrs, url, "{\"wait\":0}", out);
                if (st == 204)
                        break;
                json_t *j = st == 200 ? json_loads(out->data, 0, NULL) : NULL;
                if (!j) {
                        b->errors++;
                        break;
                }
                json_int_t lease = json_integer_value(json_object_get(j, "lease"));
                json_int_t fence = json_integer_value(json_object_get(j, "fence"));
                json_decref(j);
                snprintf(url, sizeof url, "%s/api/v1/leases/%" JSON_INTEGER_FORMAT "/finish", b->base, lease);
                snprintf(body, sizeof body, "{\"fence\":%" JSON_INTEGER_FORMAT ",\"state\":\"succeeded\",\"exit_code\":0}",
                         fence);
                if (http_call(c, hdrs, url, body, out) != 200) {
                        b->errors++;
                        break;
                }
                b->done++;
        }
        free(out);
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(c);
        return NULL;
}

static int start_server(const char *dir, pid_t *ret_pid, char *base, size_t size) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                dup2(p[1], 1);
                execl(kiln_bin, kiln_bin, "server", "--data", dir, "--listen", "127.0.0.1:0", (char *) NULL);
                _exit(127);
        }
        close(p[1]);
        char line[256] = {};
        ssize_t n = read(p[0], line, sizeof line - 1);
        close(p[0]);
        char *u = n > 0 ? strstr(line, "http://") : NULL;
        if (!u) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                return -EIO;
        }
        u[strcspn(u, "\n")] = 0;
        snprintf(base, size, "%s", u);
        *ret_pid = pid;
        return 0;
}

static int admin_token(const char *dir, char *ret, size_t size) {
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "'%s' token create --kind admin --data '%s' 2>/dev/null", kiln_bin, dir);
        FILE *f = popen(cmd, "r");
        if (!f)
                return -errno;
        if (!fgets(ret, (int) size, f)) {
                pclose(f);
                return -EIO;
        }
        pclose(f);
        ret[strcspn(ret, "\n")] = 0;
        return 0;
}

static int http_setup(HttpBench *b, const char *admin) {
        CURL *c = curl_easy_init();
        struct curl_slist *hdrs = auth_headers(admin);
        Buf *out = malloc(sizeof(Buf));
        char url[256];
        int r = 0;

        for (unsigned left = n_tasks; left > 0 && r == 0;) {
                unsigned n = MIN(left, (unsigned) TASKS_PER_JOB);
                json_t *spec = job_spec(n);
                char *text = json_dumps(spec, JSON_COMPACT);
                json_decref(spec);
                snprintf(url, sizeof url, "%s/api/v1/jobs", b->base);
                if (http_call(c, hdrs, url, text, out) != 201)
                        r = -EIO;
                free(text);
                left -= n;
        }
        for (unsigned i = 0; i < N_WORKERS && r == 0; i++) {
                snprintf(url, sizeof url, "%s/api/v1/workers/register", b->base);
                json_t *j = NULL;
                if (http_call(c, hdrs, url, "{\"name\":\"bench\",\"slots\":1}", out) == 201)
                        j = json_loads(out->data, 0, NULL);
                const char *t = json_string_value(json_object_get(j, "token"));
                if (t)
                        snprintf(b->tokens[i], sizeof b->tokens[i], "%s", t);
                else
                        r = -EIO;
                json_decref(j);
        }
        free(out);
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(c);
        return r;
}

static double ops_per_commit = 0;

static double metric(const char *text, const char *name) {
        const char *p = text;
        size_t n = strlen(name);
        while ((p = strstr(p, name))) {
                if ((p == text || p[-1] == '\n') && p[n] == ' ')
                        return strtod(p + n + 1, NULL);
                p += n;
        }
        return 0;
}

static void http_commit_stats(HttpBench *b) {
        CURL *c = curl_easy_init();
        Buf *out = malloc(sizeof(Buf));
        struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
        char url[256];
        snprintf(url, sizeof url, "%s/metrics", b->base);
        if (http_call(c, hdrs, url, NULL, out) == 200) {
                double commits = metric(out->data, "kiln_store_commits_total");
                double ops = metric(out->data, "kiln_store_write_ops_total");
                ops_per_commit = commits > 0 ? ops / commits : 0;
        }
        curl_slist_free_all(hdrs);
        free(out);
        curl_easy_cleanup(c);
}

static double bench_http(const char *dir) {
        static HttpBench b;
        pthread_t th[N_WORKERS];
        Arg args[N_WORKERS];
        char admin[256];
        pid_t pid = 0;

        if (admin_token(dir, admin, sizeof admin) < 0 || start_server(dir, &pid, b.base, sizeof b.base) < 0)
                return -1;
        double rate = -1;
        if (http_setup(&b, admin) == 0) {
                double start = now_sec();
                for (unsigned i = 0; i < N_WORKERS; i++) {
                        args[i] = (Arg) { &b, i };
                        pthread_create(&th[i], NULL, http_worker, &args[i]);
                }
                for (unsigned i = 0; i < N_WORKERS; i++)
                        pthread_join(th[i], NULL);
                double t = now_sec() - start;
                if (b.errors == 0 && b.done == n_tasks)
                        rate = b.done / t;
                else
                        fprintf(stderr, "http: %u done, %u errors\n", (unsigned) b.done, (unsigned) b.errors);
                http_commit_stats(&b);
        }
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        return rate;
}

int main(int argc, char **argv) {
        char tmpl[] = "/var/tmp/kiln-bench-XXXXXX";
        int c;

        while ((c = getopt(argc, argv, "k:n:")) >= 0) {
                if (c == 'k')
                        kiln_bin = optarg;
                else if (c == 'n')
                        n_tasks = (unsigned) strtoul(optarg, NULL, 10);
                else {
                        fprintf(stderr, "Usage: %s [-k KILN] [-n TASKS]\n", argv[0]);
                        return 2;
                }
        }
        if (!mkdtemp(tmpl))
                return 1;
        curl_global_init(CURL_GLOBAL_DEFAULT);
        char d1[64], d2[64];
        snprintf(d1, sizeof d1, "%s/store", tmpl);
        snprintf(d2, sizeof d2, "%s/server", tmpl);
        mkdir_p(d1, 0700);

        double sync_rate = bench_fdatasync(tmpl);
        double store_rate = bench_store(d1);
        double http_rate = bench_http(d2);
        rm_rf(tmpl);

        printf("server-throughput: %u trivial tasks, %d concurrent workers, SQLite WAL synchronous=FULL\n",
               n_tasks, N_WORKERS);
        printf("  fdatasync (this file system)   %8.0f /s\n", sync_rate);
        printf("  store in-process claim+finish  %8.0f tasks/s\n", store_rate);
        printf("  HTTP claim+finish              %8.0f tasks/s  (%.0f requests/s; %.0f%% of in-process)\n",
               http_rate, 2 * http_rate, store_rate > 0 ? 100 * http_rate / store_rate : 0);
        printf("  group commit over HTTP: %.1f write operations per fsync'd transaction\n", ops_per_commit);
        printf("  bar: >= 1000 tasks/s through HTTP: %s\n", http_rate >= 1000 ? "met" : "NOT met");
        curl_global_cleanup();
        return http_rate > 0 && store_rate > 0 ? 0 : 1;
}
