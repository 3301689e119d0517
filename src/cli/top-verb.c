/* SPDX-License-Identifier: MIT */
/* kiln top: a full-screen, live view of the queue, the workers and the
 * running tasks (ncurses). */
#include <curses.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "http-conn.h"
#include "log.h"
#include "verbs.h"

#define TOP_REFRESH_MS 500
#define TOP_JOBS_MAX 50

typedef struct TopData {
        double queue_depth;
        double oldest_age;
        json_t *workers; /* the API's list */
        json_t *running; /* [{job, task, name, worker, started}] */
        json_t *pool_ready; /* image → warm sandboxes ready, of the local kiln up's worker */
        char error[256];
} TopData;

/* The screen initscr() returns: everything is drawn through it, so that kiln
 * uses no data symbol of ncurses (stdscr, LINES) and the library can be
 * loaded only when kiln top runs (tools/lazy-stubs binds functions only). */
static WINDOW *scr;

/* Sums the samples of one metric in Prometheus text. */
static double metric_sum(const char *text, const char *name) {
        double sum = 0;
        size_t len = strlen(name);
        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
                if (!strneq(l, name, len) || (l[len] != ' ' && l[len] != '{'))
                        continue;
                const char *v = strchr(l, ' ');
                if (l[len] == '{') {
                        const char *close = strchr(l, '}');
                        v = close ? strchr(close, ' ') : NULL;
                }
                if (v)
                        sum += strtod(v + 1, NULL);
        }
        return sum;
}

/* kiln_worker_pool_ready{image="NAME"} V lines into {NAME: V}. */
static json_t *pool_ready_parse(const char *text) {
        static const char name[] = "kiln_worker_pool_ready{image=\"";
        json_t *o = json_object();
        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
                if (!strneq(l, name, sizeof name - 1))
                        continue;
                const char *img = l + sizeof name - 1, *q = strchr(img, '"');
                if (!q || q - img > 128 || q[1] != '}' || q[2] != ' ')
                        continue;
                char key[129];
                snprintf(key, sizeof key, "%.*s", (int) (q - img), img);
                json_object_set_new(o, key, json_integer((json_int_t) strtod(q + 3, NULL)));
        }
        return o;
}

static void top_fetch_pool(Api *worker_api, TopData *d) {
        HttpBody m = {};
        long status = 0;
        if (worker_api && api_stream(worker_api, "/metrics", http_body_collect, NULL, &m, &status) >= 0 &&
            status == 200 && m.data)
                d->pool_ready = pool_ready_parse(m.data);
        free(m.data);
}

static void top_data_done(TopData *d) {
        json_decref(d->pool_ready);
        json_decref(d->workers);
        json_decref(d->running);
        *d = (TopData) {};
}

static int top_fetch(Api *api, TopData *d) {
        HttpBody m = {};
        json_t *jobs = NULL, *j;
        long status = 0;
        size_t i;
        int r;

        r = api_stream(api, "/metrics", http_body_collect, NULL, &m, &status);
        if (r >= 0 && status == 200 && m.data) {
                d->queue_depth = metric_sum(m.data, "kiln_queue_depth");
                d->oldest_age = metric_sum(m.data, "kiln_queue_oldest_age_seconds");
        }
        free(m.data);
        if (r < 0)
                return r;
        json_t *w = NULL;
        r = api_call_quiet(api, "GET", "/api/v1/workers", NULL, &w, &status);
        if (r < 0) {
                snprintf(d->error, sizeof d->error, "GET /api/v1/workers: HTTP status %ld", status);
                return r;
        }
        d->workers = json_incref(json_object_get(w, "workers"));
        json_decref(w);

        d->running = json_array();
        char path[96];
        snprintf(path, sizeof path, "/api/v1/jobs?state=running&limit=%d", TOP_JOBS_MAX);
        r = api_call_quiet(api, "GET", path, NULL, &jobs, &status);
        if (r < 0)
                return r;
        json_array_foreach(json_object_get(jobs, "jobs"), i, j) {
                json_t *job = NULL, *t;
                size_t k;
                snprintf(path, sizeof path, "/api/v1/jobs/%" JSON_INTEGER_FORMAT,
                         json_integer_value(json_object_get(j, "id")));
                if (api_call_quiet(api, "GET", path, NULL, &job, &status) < 0)
                        continue;
                json_array_foreach(json_object_get(job, "tasks"), k, t) {
                        const char *st = json_string_value(json_object_get(t, "state"));
                        if (!st || !IN_SET_STR(st, "running", "leased"))
                                continue;
                        json_t *atts = json_object_get(t, "attempts");
                        json_t *last = json_array_get(atts, json_array_size(atts) - 1);
                        json_array_append_new(d->running,
                                json_pack("{s:O, s:O, s:O, s:s, s:O, s:O}", "job", json_object_get(job, "id"),
                                          "task", json_object_get(t, "id"), "name",
                                          json_object_get(t, "name") ?: json_null(), "state", st, "worker",
                                          last ? json_object_get(last, "worker") : json_null(), "started",
                                          last ? json_object_get(last, "started") : json_null()));
                }
                json_decref(job);
        }
        json_decref(jobs);
        return 0;
}

static void put_safe(const char *s, int max) {
        for (int i = 0; s && s[i] && i < max; i++) {
                unsigned char c = (unsigned char) s[i];
                waddch(scr, c < 0x20 || c == 0x7f ? '?' : c);
        }
}

static const char *worker_name(TopData *d, json_int_t id) {
        json_t *w;
        size_t i;
        json_array_foreach(d->workers, i, w)
                if (json_integer_value(json_object_get(w, "id")) == id)
                        return json_string_value(json_object_get(w, "name"));
        return "-";
}

static void top_draw(Api *api, TopData *d, bool colour) {
        json_t *w, *t;
        size_t i;
        int row = 0;
        char age[32];

        werase(scr);
        cli_format_duration((uint64_t) (d->oldest_age * 1e6), age, sizeof age);
        wattron(scr, A_BOLD);
        mvwprintw(scr, row++, 0, "kiln top — %s", api_server(api));
        wattroff(scr, A_BOLD);
        mvwprintw(scr, row++, 0, "QUEUE  depth %.0f  oldest %s", d->queue_depth, d->queue_depth > 0 ? age : "-");
        if (d->error[0])
                mvwprintw(scr, row++, 0, "error: %s", d->error);
        row++;
        wattron(scr, A_REVERSE);
        mvwprintw(scr, row++, 0, "%-4s %-20s %-8s %-9s %-24s", "ID", "WORKER", "STATE", "SLOTS", "POOL (ready/target)");
        wattroff(scr, A_REVERSE);
        json_array_foreach(d->workers, i, w) {
                if (row >= getmaxy(scr) - 4)
                        break;
                const char *st = json_string_value(json_object_get(w, "state"));
                mvwprintw(scr, row, 0, "%-4" JSON_INTEGER_FORMAT " ", json_integer_value(json_object_get(w, "id")));
                put_safe(json_string_value(json_object_get(w, "name")), 20);
                wmove(scr, row, 26);
                if (colour && st && streq(st, "online"))
                        wattron(scr, COLOR_PAIR(1));
                wprintw(scr, "%-8s", st ? st : "?");
                if (colour)
                        wattroff(scr, COLOR_PAIR(1));
                wprintw(scr, " %3" JSON_INTEGER_FORMAT "/%-5" JSON_INTEGER_FORMAT " ",
                       json_integer_value(json_object_get(w, "running")), json_integer_value(json_object_get(w, "slots")));
                const char *img;
                json_t *n;
                const char *wname = json_string_value(json_object_get(w, "name"));
                bool local = d->pool_ready && wname && streq(wname, "local");
                json_object_foreach(json_object_get(json_object_get(w, "info"), "images"), img, n) {
                        /* {"warm", "digest", …}, or the warm count from older workers. */
                        if (json_is_object(n))
                                n = json_object_get(n, "warm");
                        put_safe(img, 20);
                        if (local)
                                wprintw(scr, " %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT " warm  ",
                                       json_integer_value(json_object_get(d->pool_ready, img)), json_integer_value(n));
                        else
                                wprintw(scr, " target %" JSON_INTEGER_FORMAT "  ", json_integer_value(n));
                }
                row++;
        }
        row++;
        wattron(scr, A_REVERSE);
        mvwprintw(scr, row++, 0, "%-6s %-6s %-24s %-9s %-16s %s", "JOB", "TASK", "NAME", "STATE", "WORKER", "TIME");
        wattroff(scr, A_REVERSE);
        json_array_foreach(d->running, i, t) {
                if (row >= getmaxy(scr) - 1)
                        break;
                int64_t s;
                char dur[32] = "-";
                if (cli_parse_time(json_string_value(json_object_get(t, "started")), &s) >= 0) {
                        int64_t now = cli_now_usec();
                        cli_format_duration(now > s ? (uint64_t) (now - s) : 0, dur, sizeof dur);
                }
                mvwprintw(scr, row, 0, "%-6" JSON_INTEGER_FORMAT " %-6" JSON_INTEGER_FORMAT " ",
                         json_integer_value(json_object_get(t, "job")), json_integer_value(json_object_get(t, "task")));
                put_safe(json_string_value(json_object_get(t, "name")), 24);
                mvwprintw(scr, row, 39, "%-9s ", json_string_value(json_object_get(t, "state")));
                put_safe(worker_name(d, json_integer_value(json_object_get(t, "worker"))), 16);
                mvwprintw(scr, row, 66, "%s", dur);
                row++;
        }
        if (json_array_size(d->running) == 0)
                mvwprintw(scr, row++, 0, "(no running tasks)");
        mvwprintw(scr, getmaxy(scr) - 1, 0, "q quits");
        wrefresh(scr);
}

static const char top_usage[] =
        "Usage: kiln top [--server URL] [--token TOKEN]\n\n"
        "A full-screen live view: queue depth and the oldest queued task's age, each\n"
        "worker's state, slots in use and warm pool targets, and the running tasks.\n"
        "Refreshes twice a second; q quits.\n";

int verb_top(int argc, char **argv) {
        enum { ARG_SERVER = 0x100, ARG_TOKEN };
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "server", required_argument, NULL, ARG_SERVER },
                { "token", required_argument, NULL, ARG_TOKEN },
                {},
        };
        _cleanup_(api_freep) Api *api = NULL, *worker_api = NULL;
        _cleanup_free_ char *murl = NULL;
        ApiOptions ao = {};
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0)
                switch (c) {
                case 'h': fputs(top_usage, stdout); return 0;
                case ARG_SERVER: ao.server = optarg; break;
                case ARG_TOKEN: ao.token = optarg; break;
                default: return 2;
                }
        if (optind < argc) {
                log_error("Unexpected argument '%s'. See 'kiln top --help'.", argv[optind]);
                return 2;
        }
        if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
                log_error("kiln top needs a terminal; for scripts use 'kiln ps --json' and 'kiln workers --json'.");
                return 1;
        }
        if (api_open(&ao, &api) < 0)
                return 1;
        if (up_worker_metrics(api_server(api), &murl) >= 0) {
                ApiOptions wo = { .server = murl, .token = "-" };
                (void) api_open(&wo, &worker_api);
        }
        bool colour = cli_colour(stdout);
        scr = initscr();
        if (!scr) {
                log_error("Failed to initialise the terminal.");
                return 1;
        }
        cbreak();
        noecho();
        curs_set(0);
        wtimeout(scr, TOP_REFRESH_MS);
        if (colour && has_colors()) {
                start_color();
                use_default_colors();
                init_pair(1, COLOR_GREEN, -1);
        } else
                colour = false;
        int ret = 0;
        for (;;) {
                TopData d = {};
                int r = top_fetch(api, &d);
                top_fetch_pool(worker_api, &d);
                if (r < 0 && !d.error[0])
                        snprintf(d.error, sizeof d.error, "cannot reach %s", api_server(api));
                top_draw(api, &d, colour);
                top_data_done(&d);
                int ch = wgetch(scr);
                if (ch == 'q' || ch == 'Q')
                        break;
        }
        endwin();
        return ret;
}
