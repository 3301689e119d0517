/* SPDX-License-Identifier: MIT */
/* The user-facing verbs' shared parts: configuration, the API connection,
 * Ctrl-C, colour and formatting (docs/cli.md). */
#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http-conn.h"
#include "cli.h"
#include "conf-args.h"
#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "parse-util.h"

struct Api {
        char *server;
        char *token;
        HttpConn *conn;
        char *auth; /* "Authorization: Bearer …" */
};

/* ---- Ctrl-C ---- */

static volatile sig_atomic_t sigint_count;
static unsigned sigint_acked;

static void on_sigint(int sig _unused_) {
        sigint_count = sigint_count + 1;
}

void cli_sigint_install(void) {
        struct sigaction sa = { .sa_handler = on_sigint };
        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGINT, &sa, NULL);
}

unsigned cli_sigint_count(void) {
        return (unsigned) sigint_count;
}

bool cli_sigint_pending(void) {
        return (unsigned) sigint_count != sigint_acked;
}

void cli_sigint_ack(unsigned n) {
        sigint_acked = n;
}

/* ---- configuration ---- */

int cli_state_dir(char **ret) {
        const char *x = getenv("XDG_STATE_HOME");
        char *p = NULL;
        int r;

        if (!isempty(x) && path_is_absolute(x))
                r = asprintf(&p, "%s/kiln", x);
        else if (geteuid() == 0)
                r = asprintf(&p, "/var/lib/kiln");
        else {
                const char *home = getenv("HOME");
                if (isempty(home) || !path_is_absolute(home))
                        return -ENOENT;
                r = asprintf(&p, "%s/.local/state/kiln", home);
        }
        if (r < 0)
                return -ENOMEM;
        *ret = p;
        return 0;
}

static int config_line(const char *path, unsigned lineno, const char *k, const char *v, void *userdata) {
        char ***dsts = userdata; /* server, token */
        char **dst = streq(k, "server") ? dsts[0] : streq(k, "token") ? dsts[1] : NULL;
        if (!dst)
                return log_error_errno(EINVAL, "%s:%u: unknown key '%s' (expected server or token).", path, lineno,
                                       k);
        free(*dst);
        *dst = strdup(v);
        return *dst ? 0 : -ENOMEM;
}

/* The config file: "key = value" lines, '#' comments; keys server, token. */
static int config_read(char **ret_server, char **ret_token) {
        _cleanup_free_ char *user = NULL;
        const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
        const char *path = NULL;
        int r;

        if (!isempty(x) && path_is_absolute(x))
                r = asprintf(&user, "%s/kiln/kiln.conf", x);
        else if (!isempty(home) && path_is_absolute(home))
                r = asprintf(&user, "%s/.config/kiln/kiln.conf", home);
        else
                r = 0;
        if (r < 0)
                return -ENOMEM;
        path = user && access(user, F_OK) == 0 ? user : "/etc/kiln/kiln.conf";
        char **dsts[] = { ret_server, ret_token };
        r = conf_parse_file(path, CLI_CONFIG_MAX, config_line, dsts);
        return r == -ENOENT ? 0 : r;
}

Api *api_free(Api *a) {
        if (!a)
                return NULL;
        http_conn_free(a->conn);
        if (a->auth) {
                explicit_bzero(a->auth, strlen(a->auth));
                free(a->auth);
        }
        if (a->token) {
                explicit_bzero(a->token, strlen(a->token));
                free(a->token);
        }
        free(a->server);
        free(a);
        return NULL;
}

const char *api_server(const Api *a) {
        return a->server;
}

int api_open(const ApiOptions *o, Api **ret) {
        _cleanup_(api_freep) Api *a = calloc(1, sizeof *a);
        _cleanup_free_ char *cfg_server = NULL, *cfg_token = NULL;
        const char *server = o->server, *token = o->token;
        int r;

        if (!a)
                return -ENOMEM;
        if (!server)
                server = getenv("KILN_SERVER");
        if (!token)
                token = getenv("KILN_TOKEN");
        if (isempty(server) || isempty(token)) {
                r = config_read(&cfg_server, &cfg_token);
                if (r < 0)
                        return r;
                if (isempty(server))
                        server = cfg_server;
                if (isempty(token))
                        token = cfg_token;
        }
        if (isempty(server)) {
                r = up_find(o->start_private, &a->server, &a->token);
                if (r == -ENOENT)
                        return log_error_errno(r, "No server configured and no 'kiln up' running: start one with "
                                                  "'kiln up', or set KILN_SERVER and KILN_TOKEN.");
                if (r < 0)
                        return r;
        } else {
                if (!strneq(server, "http://", 7) && !strneq(server, "https://", 8))
                        return log_error_errno(EINVAL, "Invalid server '%s': expected an http:// or https:// URL.",
                                               server);
                if (isempty(token))
                        return log_error_errno(EINVAL, "No token for '%s': pass --token or set KILN_TOKEN.", server);
                a->server = strdup(server);
                a->token = strdup(token);
                if (!a->server || !a->token)
                        return -ENOMEM;
        }
        size_t n = strlen(a->server);
        while (n > 0 && a->server[n - 1] == '/')
                a->server[--n] = 0;

        r = http_conn_new(a->server, &a->conn);
        if (r < 0)
                return r;
        if (asprintf(&a->auth, "Authorization: Bearer %s", a->token) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(a);
        return 0;
}

/* ---- transfers ---- */

typedef struct Sink {
        HttpBody body; /* without fn */
        ApiDataFn fn;
        ApiDataFn header_fn;
        void *userdata;
} Sink;

static bool sink_header(const char *p, size_t len, void *userdata) {
        Sink *s = userdata;
        return s->header_fn ? s->header_fn(p, len, s->userdata) : true;
}

static bool sink_write(const char *p, size_t len, void *userdata) {
        Sink *s = userdata;
        return s->fn ? s->fn(p, len, s->userdata) : http_body_collect(p, len, &s->body);
}

/* One request; a body either in memory or body_fd's first fd_size bytes. */
static int transfer(Api *a, const char *method, const char *path, const char *body, size_t body_size,
                    int body_fd, uint64_t fd_size, const char *content_type, Sink *sink, long *ret_status) {
        _cleanup_free_ char *ctype = NULL;

        if (asprintf(&ctype, "Content-Type: %s", content_type ? content_type : "application/json") < 0)
                return -ENOMEM;
        const char *headers[] = { a->auth, ctype, NULL };
        HttpRequest q = {
                .method = method,
                .path = path,
                .headers = headers,
                .body = body,
                .body_size = body_size,
                .body_fd = body_fd,
                .body_fd_size = fd_size,
                .on_data = sink_write,
                .on_header = sink_header,
                .userdata = sink,
                .should_abort = cli_sigint_pending,
        };
        return http_conn_request(a->conn, &q, ret_status);
}

static int http_status_errno(long status) {
        return status == 404 ? -ENOENT : status == 409 ? -EBUSY : status == 401 || status == 403 ? -EACCES : -EIO;
}

static void log_http_error(const char *method, const char *path, long status, const char *body) {
        json_t *j = body ? json_loads(body, 0, NULL) : NULL;
        const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        if (status == 401)
                log_error("The server refused the token (401): check KILN_TOKEN or the config file.");
        else if (m)
                log_error("%s", m);
        else
                log_error("%s %s: HTTP status %ld", method, path, status);
        json_decref(j);
}

static int call(Api *a, const char *method, const char *path, json_t *body, json_t **ret, long *ret_status,
                bool quiet) {
        _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        Sink sink = {};
        long status = 0;
        int r;

        if (body && !text)
                return -ENOMEM;
        r = transfer(a, method, path, text, text ? strlen(text) : 0, -EBADF, 0, NULL, &sink, &status);
        if (r >= 0 && sink.body.too_large)
                r = log_error_errno(EFBIG, "%s %s: the server's answer is larger than %u MiB.", method, path,
                                    HTTP_BODY_MAX >> 20);
        if (r < 0) {
                free(sink.body.data);
                return r;
        }
        if (ret_status)
                *ret_status = status;
        if (status < 200 || status >= 300) {
                if (!quiet)
                        log_http_error(method, path, status, sink.body.data);
                free(sink.body.data);
                return http_status_errno(status);
        }
        if (ret) {
                json_error_t err;
                *ret = sink.body.data ? json_loads(sink.body.data, 0, &err) : json_object();
                if (!*ret && !quiet)
                        log_error("%s %s: the server's answer is not JSON.", method, path);
        }
        free(sink.body.data);
        return ret && !*ret ? -EBADMSG : 0;
}

int api_call(Api *a, const char *method, const char *path, json_t *body, json_t **ret) {
        return call(a, method, path, body, ret, NULL, false);
}

int api_call_status(Api *a, const char *method, const char *path, json_t *body, json_t **ret, long *ret_status) {
        return call(a, method, path, body, ret, ret_status, false);
}

int api_call_quiet(Api *a, const char *method, const char *path, json_t *body, json_t **ret, long *ret_status) {
        return call(a, method, path, body, ret, ret_status, true);
}

int api_put_fd(Api *a, const char *path, int fd, uint64_t size, json_t **ret) {
        Sink sink = {};
        long status = 0;
        int r = transfer(a, "PUT", path, NULL, 0, fd, size, "application/octet-stream", &sink, &status);
        if (r < 0) {
                free(sink.body.data);
                return r;
        }
        if (status < 200 || status >= 300) {
                log_http_error("PUT", path, status, sink.body.data);
                free(sink.body.data);
                return http_status_errno(status);
        }
        if (ret)
                *ret = sink.body.data ? json_loads(sink.body.data, 0, NULL) : json_object();
        free(sink.body.data);
        return 0;
}

int api_stream(Api *a, const char *path, ApiDataFn on_data, ApiDataFn on_header, void *userdata,
               long *ret_status) {
        Sink sink = { .fn = on_data, .header_fn = on_header, .userdata = userdata };
        return transfer(a, "GET", path, NULL, 0, -EBADF, 0, NULL, &sink, ret_status);
}

static bool write_to_fd(const char *p, size_t n, void *userdata) {
        return loop_write(*(int *) userdata, p, n) >= 0;
}

int api_download(Api *a, const char *path, int fd) {
        long status = 0;
        int r = api_stream(a, path, write_to_fd, NULL, &fd, &status);
        if (r < 0)
                return r;
        if (status != 200) {
                log_error("GET %s: HTTP status %ld", path, status);
                return http_status_errno(status);
        }
        return 0;
}

/* ---- presentation ---- */

bool cli_colour(FILE *f) {
        const char *t = getenv("TERM");
        if (getenv("NO_COLOR"))
                return false;
        if (t && streq(t, "dumb"))
                return false;
        return isatty(fileno(f));
}

const char *cli_state_colour(const char *state) {
        if (!state)
                return "";
        if (streq(state, "succeeded"))
                return "\033[32m";
        if (IN_SET_STR(state, "failed", "timed_out", "lost"))
                return "\033[31m";
        if (IN_SET_STR(state, "warning", "cancelled"))
                return "\033[33m";
        if (IN_SET_STR(state, "running", "leased"))
                return "\033[36m";
        if (streq(state, "skipped"))
                return "\033[90m";
        return "";
}

bool cli_state_is_final(const char *state) {
        return state && !IN_SET_STR(state, "queued", "leased", "running");
}

void cli_format_duration(uint64_t usec, char *buf, size_t size) {
        uint64_t s = usec / 1000000;
        if (usec < 10 * 1000000ULL)
                snprintf(buf, size, "%.1fs", (double) usec / 1e6);
        else if (s < 3600)
                snprintf(buf, size, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
        else
                snprintf(buf, size, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, (s / 60) % 60);
}

int cli_parse_time(const char *s, int64_t *ret_usec) {
        struct tm tm = {};
        unsigned ms = 0;
        if (!s)
                return -EINVAL;
        const char *e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!e)
                return -EINVAL;
        if (*e == '.') {
                e++;
                unsigned digits = 0;
                for (; isdigit((unsigned char) *e); e++)
                        if (digits++ < 3)
                                ms = ms * 10 + (unsigned) (*e - '0');
                for (; digits < 3; digits++)
                        ms *= 10;
        }
        time_t t = timegm(&tm);
        if (t == (time_t) -1)
                return -EINVAL;
        *ret_usec = (int64_t) t * 1000000 + (int64_t) ms * 1000;
        return 0;
}

int64_t cli_now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void cli_print_safe(FILE *f, const char *s) {
        for (; s && *s; s++) {
                unsigned char ch = (unsigned char) *s;
                fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
        }
}

int cli_parse_job_ref(const char *s, int64_t *ret_job, const char **ret_task) {
        const char *slash = strchr(s, '/');
        char num[32];
        size_t n = slash ? (size_t) (slash - s) : strlen(s);
        uint64_t id;

        if (n == 0 || n >= sizeof num)
                return log_error_errno(EINVAL, "Invalid job '%s': expected JOB or JOB/TASK.", s);
        memcpy(num, s, n);
        num[n] = 0;
        if (safe_atou64(num, &id) < 0 || id == 0 || id > INT64_MAX)
                return log_error_errno(EINVAL, "Invalid job id '%s': expected a positive number.", num);
        if (slash && !ret_task)
                return log_error_errno(EINVAL, "Expected a job id, not '%s'.", s);
        *ret_job = (int64_t) id;
        if (ret_task)
                *ret_task = slash && slash[1] ? slash + 1 : NULL;
        return 0;
}

json_t *cli_job_find_task(json_t *job, const char *ref) {
        json_t *t;
        size_t i;
        uint64_t id = 0;
        bool numeric = safe_atou64(ref, &id) >= 0;

        json_array_foreach(json_object_get(job, "tasks"), i, t) {
                const char *name = json_string_value(json_object_get(t, "name"));
                if (name && streq(name, ref))
                        return t;
        }
        if (numeric)
                json_array_foreach(json_object_get(job, "tasks"), i, t)
                        if ((uint64_t) json_integer_value(json_object_get(t, "id")) == id ||
                            (uint64_t) json_integer_value(json_object_get(t, "index")) == id)
                                return t;
        return NULL;
}

int cli_task_exit_status(json_t *task) {
        const char *state = json_string_value(json_object_get(task, "state"));
        json_t *ec = json_object_get(task, "exit_code");

        if (!state || IN_SET_STR(state, "succeeded", "warning", "skipped"))
                return 0;
        if (streq(state, "cancelled"))
                return 130;
        if (streq(state, "timed_out"))
                return 124;
        if (json_is_integer(ec)) {
                json_int_t v = json_integer_value(ec);
                if (v > 0 && v <= 255)
                        return (int) v;
                if (v < 0 && v >= -64)
                        return 128 + (int) -v;
        }
        return 1;
}

void cli_print_json(json_t *j) {
        char *t = json_dumps(j, JSON_INDENT(2));
        if (t) {
                fputs(t, stdout);
                fputc('\n', stdout);
        }
        free(t);
}
