/* SPDX-License-Identifier: MIT */
/* The user's view of the queue: ps, logs, watch, cancel, retry, artifacts,
 * workers (docs/cli.md). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fd-util.h"
#include "log.h"
#include "parse-util.h"
#include "run-follow.h"
#include "verbs.h"

typedef struct Common {
        ApiOptions api;
        bool json;
        bool follow;
        bool raw;
        const char *output;
        const char *state;
        unsigned limit;
        unsigned attempt;
        char **rest;
        int n_rest;
} Common;

/* Options every verb here takes, plus the ones named in extra ("fosna"). */
static int common_parse(int argc, char **argv, const char *usage, const char *extra, Common *c) {
        enum { ARG_SERVER = 0x100, ARG_TOKEN, ARG_JSON, ARG_STATE, ARG_ATTEMPT, ARG_RAW };
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "server", required_argument, NULL, ARG_SERVER },
                { "token", required_argument, NULL, ARG_TOKEN },
                { "json", no_argument, NULL, ARG_JSON },
                { "follow", no_argument, NULL, 'f' },
                { "output", required_argument, NULL, 'o' },
                { "state", required_argument, NULL, ARG_STATE },
                { "limit", required_argument, NULL, 'n' },
                { "attempt", required_argument, NULL, ARG_ATTEMPT },
                { "raw", no_argument, NULL, ARG_RAW },
                {},
        };
        int ch;

        *c = (Common) { .limit = 20 };
        optind = 0;
        while ((ch = getopt_long(argc, argv, "hfo:n:", opts, NULL)) >= 0) {
                char key = ch == ARG_STATE     ? 's'
                           : ch == ARG_ATTEMPT ? 'a'
                           : ch == ARG_JSON    ? 'j'
                           : ch == ARG_RAW     ? 'r'
                                               : (char) ch;
                if (ch != 'h' && ch != ARG_SERVER && ch != ARG_TOKEN && ch != '?' && !strchr(extra, key)) {
                        log_error("%s: unknown option. See 'kiln %s --help'.", argv[optind - 1], argv[0]);
                        return -EINVAL;
                }
                switch (ch) {
                case 'h': fputs(usage, stdout); return 1;
                case ARG_SERVER: c->api.server = optarg; break;
                case ARG_TOKEN: c->api.token = optarg; break;
                case ARG_JSON: c->json = true; break;
                case 'f': c->follow = true; break;
                case ARG_RAW: c->raw = true; break;
                case 'o': c->output = optarg; break;
                case ARG_STATE: c->state = optarg; break;
                case 'n':
                        if (safe_atou(optarg, &c->limit) < 0 || c->limit < 1 || c->limit > 500)
                                return log_error_errno(EINVAL, "--limit: expected 1 to 500, not '%s'.", optarg);
                        break;
                case ARG_ATTEMPT:
                        if (safe_atou(optarg, &c->attempt) < 0 || c->attempt < 1)
                                return log_error_errno(EINVAL, "--attempt: expected a positive number.");
                        break;
                default:
                        return -EINVAL;
                }
        }
        c->rest = argv + optind;
        c->n_rest = argc - optind;
        return 0;
}

static int exit_of(int r) {
        return r > 0 ? 0 : 2;
}

static void age(const char *iso, char *buf, size_t size) {
        int64_t t;
        if (cli_parse_time(iso, &t) < 0) {
                snprintf(buf, size, "-");
                return;
        }
        int64_t now = cli_now_usec();
        char d[32];
        cli_format_duration(now > t ? (uint64_t) (now - t) : 0, d, sizeof d);
        snprintf(buf, size, "%s ago", d);
}

static void print_state(FILE *f, const char *state, bool colour, int width) {
        fprintf(f, "%s%-*s%s", colour ? cli_state_colour(state) : "", width, state ? state : "?",
                colour ? CLI_RESET : "");
}

/* ---- ps ---- */

static const char ps_usage[] =
        "Usage: kiln ps [--state STATE] [-n N] [--json]\n\n"
        "Lists the newest jobs: id, name, state, tasks, age.\n\n"
        "  --state STATE  only jobs in this state (queued, running, succeeded, failed, …)\n"
        "  -n, --limit N  at most N jobs [20]\n"
        "  --json         the API's answer as JSON\n"
        "  --server URL, --token TOKEN   [$KILN_SERVER, $KILN_TOKEN, config file, kiln up]\n";

int verb_ps(int argc, char **argv) {
        _cleanup_(api_freep) Api *api = NULL;
        Common c;
        json_t *res = NULL, *j;
        char path[256];
        size_t i;
        int r = common_parse(argc, argv, ps_usage, "jsn", &c);
        if (r != 0)
                return exit_of(r);
        if (c.n_rest > 0) {
                log_error("Unexpected argument '%s'. See 'kiln ps --help'.", c.rest[0]);
                return 2;
        }
        if (c.state && strspn(c.state, "abcdefghijklmnopqrstuvwxyz_") != strlen(c.state)) {
                log_error("--state: invalid state '%s'.", c.state);
                return 2;
        }
        if (api_open(&c.api, &api) < 0)
                return 1;
        snprintf(path, sizeof path, "/api/v1/jobs?limit=%u%s%s", c.limit, c.state ? "&state=" : "",
                 c.state ? c.state : "");
        if (api_call(api, "GET", path, NULL, &res) < 0)
                return 1;
        if (c.json) {
                cli_print_json(res);
                json_decref(res);
                return 0;
        }
        bool colour = cli_colour(stdout);
        printf("%-6s %-24s %-10s %5s  %s\n", "ID", "NAME", "STATE", "TASKS", "CREATED");
        json_array_foreach(json_object_get(res, "jobs"), i, j) {
                char a[48], name[25];
                age(json_string_value(json_object_get(j, "created")), a, sizeof a);
                snprintf(name, sizeof name, "%s", json_string_value(json_object_get(j, "name")) ?: "");
                printf("%-6" JSON_INTEGER_FORMAT " ", json_integer_value(json_object_get(j, "id")));
                cli_print_safe(stdout, name);
                printf("%*s ", (int) (24 - strlen(name)), "");
                print_state(stdout, json_string_value(json_object_get(j, "state")), colour, 10);
                printf(" %5" JSON_INTEGER_FORMAT "  %s\n", json_integer_value(json_object_get(j, "tasks")), a);
        }
        json_decref(res);
        return 0;
}

/* ---- logs ---- */

static const char logs_usage[] =
        "Usage: kiln logs [-f] [--attempt N] [--raw] JOB[/TASK]\n\n"
        "Prints the log of each task of a job (or of one task, by name or id): the\n"
        "steps' stdout to stdout, their stderr and the worker's lines to stderr.\n\n"
        "  -f, --follow   keep printing as the job runs; exit with its status\n"
        "  --attempt N    that attempt instead of the latest\n"
        "  --raw          the log as stored, all to stdout (stderr in frames)\n";

static int get_job(Api *api, int64_t id, json_t **ret) {
        char path[64];
        snprintf(path, sizeof path, "/api/v1/jobs/%" PRId64, id);
        return api_call(api, "GET", path, NULL, ret);
}

/* The body of a 200 goes to stdout; an error's body is not log. */
static bool to_stdout(const char *p, size_t n, void *userdata) {
        return !*(bool *) userdata || loop_write(STDOUT_FILENO, p, n) >= 0;
}

static bool status_ok(const char *p, size_t n, void *userdata) {
        if (n > 12 && strneq(p, "HTTP/", 5)) {
                const char *sp = memchr(p, ' ', n);
                *(bool *) userdata = sp && (size_t) (sp - p) + 4 <= n && strneq(sp + 1, "200", 3);
        }
        return true;
}

int verb_logs(int argc, char **argv) {
        _cleanup_(api_freep) Api *api = NULL;
        const char *task_ref = NULL;
        json_t *job = NULL, *t;
        int64_t id;
        size_t i;
        Common c;
        int r = common_parse(argc, argv, logs_usage, "far", &c);
        if (r != 0)
                return exit_of(r);
        if (c.n_rest != 1) {
                log_error("Expected one JOB or JOB/TASK. See 'kiln logs --help'.");
                return 2;
        }
        if (cli_parse_job_ref(c.rest[0], &id, &task_ref) < 0)
                return 2;
        if (api_open(&c.api, &api) < 0 || get_job(api, id, &job) < 0)
                return 1;
        if (task_ref && !cli_job_find_task(job, task_ref)) {
                log_error("Job %" PRId64 " has no task '%s'.", id, task_ref);
                json_decref(job);
                return 1;
        }
        if (c.follow) {
                cli_sigint_install();
                FollowOpts fo = { .only_task = task_ref, .cancel_on_sigint = false };
                r = follow_job(api, job, &fo, NULL);
                json_decref(job);
                return r < 0 ? 1 : fo.outcome == FOLLOW_DETACHED ? 130 : r;
        }
        size_t n = json_array_size(json_object_get(job, "tasks"));
        r = 0;
        json_array_foreach(json_object_get(job, "tasks"), i, t) {
                if (task_ref && t != cli_job_find_task(job, task_ref))
                        continue;
                char path[160];
                long status = 0;
                if (n > 1 && !task_ref) {
                        fprintf(stderr, "kiln: ── task ");
                        cli_print_safe(stderr, json_string_value(json_object_get(t, "name")));
                        fprintf(stderr, " ──\n");
                }
                if (json_array_size(json_object_get(t, "attempts")) == 0)
                        continue;
                snprintf(path, sizeof path, "/api/v1/tasks/%" JSON_INTEGER_FORMAT "/log%s%.0u",
                         json_integer_value(json_object_get(t, "id")), c.attempt ? "?attempt=" : "", c.attempt);
                bool ok = false;
                r = c.raw ? api_stream(api, path, to_stdout, status_ok, &ok, &status)
                          : follow_print_log(api, path, &status);
                if (r < 0)
                        break;
                if (status != 200) {
                        log_error("No log for task %" JSON_INTEGER_FORMAT "%s (HTTP status %ld).",
                                  json_integer_value(json_object_get(t, "id")), c.attempt ? " at that attempt" : "",
                                  status);
                        r = -EIO;
                }
        }
        json_decref(job);
        return r < 0 ? 1 : 0;
}

/* ---- cancel, retry ---- */

static const char cancel_usage[] =
        "Usage: kiln cancel JOB…\n\n"
        "Cancels jobs: queued tasks at once, running ones at their worker's next\n"
        "heartbeat (their sandbox is killed).\n\n"
        "  --json   the jobs as the API answers\n";

static const char retry_usage[] =
        "Usage: kiln retry JOB\n\n"
        "Queues again every task of a finished job that failed, timed out, was lost or\n"
        "cancelled (new attempts; the old ones stay visible). Prints the job id.\n\n"
        "  --json   the job as the API answers\n";

static int job_action(int argc, char **argv, const char *usage, const char *action) {
        _cleanup_(api_freep) Api *api = NULL;
        Common c;
        int r = common_parse(argc, argv, usage, "j", &c), ret = 0;
        if (r != 0)
                return exit_of(r);
        if (c.n_rest < 1) {
                log_error("Expected a JOB id. See 'kiln %s --help'.", argv[0]);
                return 2;
        }
        int64_t ids[64];
        if (c.n_rest > (int) ELEMENTSOF(ids)) {
                log_error("At most %zu jobs at once.", ELEMENTSOF(ids));
                return 2;
        }
        for (int i = 0; i < c.n_rest; i++)
                if (cli_parse_job_ref(c.rest[i], &ids[i], NULL) < 0)
                        return 2;
        if (api_open(&c.api, &api) < 0)
                return 1;
        for (int i = 0; i < c.n_rest; i++) {
                char path[96];
                json_t *res = NULL;
                snprintf(path, sizeof path, "/api/v1/jobs/%" PRId64 "/%s", ids[i], action);
                r = api_call(api, "POST", path, NULL, &res);
                if (r < 0) {
                        ret = 1;
                        continue;
                }
                if (c.json)
                        cli_print_json(res);
                else if (streq(action, "retry"))
                        printf("%" PRId64 "\n", ids[i]),
                                fprintf(stderr, "kiln: job %" PRId64 ": %" JSON_INTEGER_FORMAT " task(s) queued again\n",
                                        ids[i], json_integer_value(json_object_get(res, "retried")));
                else
                        fprintf(stderr, "kiln: job %" PRId64 ": cancel requested (%s)\n", ids[i],
                                json_string_value(json_object_get(res, "state")) ?: "?");
                json_decref(res);
        }
        return ret;
}

int verb_cancel(int argc, char **argv) {
        return job_action(argc, argv, cancel_usage, "cancel");
}

int verb_retry(int argc, char **argv) {
        return job_action(argc, argv, retry_usage, "retry");
}

/* ---- artifacts ---- */

static const char artifacts_usage[] =
        "Usage: kiln artifacts JOB [-o DIR] [--json]\n\n"
        "Lists a job's artifacts, or with -o downloads and extracts them into DIR\n"
        "(DIR/TASK/ for a job of several tasks).\n";

int verb_artifacts(int argc, char **argv) {
        _cleanup_(api_freep) Api *api = NULL;
        json_t *res = NULL, *a, *job = NULL;
        int64_t id;
        char path[96];
        size_t i;
        Common c;
        int r = common_parse(argc, argv, artifacts_usage, "jo", &c);
        if (r != 0)
                return exit_of(r);
        if (c.n_rest != 1 || cli_parse_job_ref(c.rest[0], &id, NULL) < 0) {
                log_error("Expected one JOB id. See 'kiln artifacts --help'.");
                return 2;
        }
        if (api_open(&c.api, &api) < 0)
                return 1;
        if (c.output) {
                if (get_job(api, id, &job) < 0)
                        return 1;
                r = cli_download_artifacts(api, id, job, c.output);
                json_decref(job);
                return r < 0 ? 1 : 0;
        }
        snprintf(path, sizeof path, "/api/v1/jobs/%" PRId64 "/artifacts", id);
        if (api_call(api, "GET", path, NULL, &res) < 0)
                return 1;
        if (c.json)
                cli_print_json(res);
        else {
                printf("%-6s %-6s %-8s %10s  %s\n", "ID", "TASK", "ATTEMPT", "SIZE", "NAME");
                json_array_foreach(json_object_get(res, "artifacts"), i, a) {
                        printf("%-6" JSON_INTEGER_FORMAT " %-6" JSON_INTEGER_FORMAT " %-8" JSON_INTEGER_FORMAT
                               " %10" JSON_INTEGER_FORMAT "  ",
                               json_integer_value(json_object_get(a, "id")), json_integer_value(json_object_get(a, "task")),
                               json_integer_value(json_object_get(a, "attempt")),
                               json_integer_value(json_object_get(a, "size")));
                        cli_print_safe(stdout, json_string_value(json_object_get(a, "name")));
                        putchar('\n');
                }
        }
        json_decref(res);
        return 0;
}

/* ---- workers ---- */

static const char workers_usage[] =
        "Usage: kiln workers [--json]\n\n"
        "Lists the workers: state, slots in use, labels, warm pool targets.\n";

static void print_object_kv(FILE *f, json_t *o) {
        const char *k;
        json_t *v;
        bool first = true;
        json_object_foreach(o, k, v) {
                fputs(first ? "" : ",", f);
                cli_print_safe(f, k);
                fputc('=', f);
                if (json_is_string(v))
                        cli_print_safe(f, json_string_value(v));
                else if (json_is_object(v)) {
                        /* An image: {"warm", "digest", "revision"} (older workers: the warm count). */
                        const char *d = json_string_value(json_object_get(v, "digest"));
                        fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(v, "warm")));
                        if (d && strlen(d) > 19)
                                fprintf(f, "@%.12s", d + 7);
                } else
                        fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                first = false;
        }
        if (first)
                fputc('-', f);
}

int verb_workers(int argc, char **argv) {
        _cleanup_(api_freep) Api *api = NULL;
        json_t *res = NULL, *w;
        size_t i;
        Common c;
        int r = common_parse(argc, argv, workers_usage, "j", &c);
        if (r != 0)
                return exit_of(r);
        if (c.n_rest > 0) {
                log_error("Unexpected argument '%s'.", c.rest[0]);
                return 2;
        }
        if (api_open(&c.api, &api) < 0 || api_call(api, "GET", "/api/v1/workers", NULL, &res) < 0)
                return 1;
        if (c.json) {
                cli_print_json(res);
                json_decref(res);
                return 0;
        }
        bool colour = cli_colour(stdout);
        printf("%-4s %-20s %-8s %-7s %-20s %s\n", "ID", "NAME", "STATE", "SLOTS", "LABELS", "POOL");
        json_array_foreach(json_object_get(res, "workers"), i, w) {
                char name[21], slots[32];
                snprintf(name, sizeof name, "%s", json_string_value(json_object_get(w, "name")) ?: "");
                snprintf(slots, sizeof slots, "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                         json_integer_value(json_object_get(w, "running")),
                         json_integer_value(json_object_get(w, "slots")));
                printf("%-4" JSON_INTEGER_FORMAT " ", json_integer_value(json_object_get(w, "id")));
                cli_print_safe(stdout, name);
                printf("%*s ", (int) (20 - strlen(name)), "");
                print_state(stdout, json_string_value(json_object_get(w, "state")), colour, 8);
                printf(" %-7s ", slots);
                print_object_kv(stdout, json_object_get(w, "labels"));
                fputc(' ', stdout);
                print_object_kv(stdout, json_object_get(json_object_get(w, "info"), "images"));
                putchar('\n');
        }
        json_decref(res);
        return 0;
}

/* ---- watch ---- */

static const char watch_usage[] =
        "Usage: kiln watch JOB\n\n"
        "A live table of the job's tasks and their states, until the job ends; then\n"
        "exits with the job's status. On a terminal the table is redrawn in place;\n"
        "otherwise each state change is printed as a line.\n";

#define WATCH_INTERVAL_USEC 200000

static void watch_draw(json_t *job, bool colour) {
        json_t *t;
        size_t i;
        fputs("\033[H\033[2J", stdout);
        printf("job %" JSON_INTEGER_FORMAT "  ", json_integer_value(json_object_get(job, "id")));
        cli_print_safe(stdout, json_string_value(json_object_get(job, "name")));
        printf("  ");
        print_state(stdout, json_string_value(json_object_get(job, "state")), colour, 0);
        printf("\n\n%-6s %-28s %-10s %-8s %-9s %s\n", "TASK", "NAME", "STATE", "ATTEMPT", "TIME", "EXIT");
        json_array_foreach(json_object_get(job, "tasks"), i, t) {
                json_t *atts = json_object_get(t, "attempts"), *last;
                last = json_array_get(atts, json_array_size(atts) - 1);
                char name[29], dur[32] = "-", ec[16] = "-";
                int64_t s, e;
                if (last && cli_parse_time(json_string_value(json_object_get(last, "started")), &s) >= 0) {
                        if (cli_parse_time(json_string_value(json_object_get(last, "finished")), &e) < 0)
                                e = cli_now_usec();
                        cli_format_duration(e > s ? (uint64_t) (e - s) : 0, dur, sizeof dur);
                }
                if (json_is_integer(json_object_get(t, "exit_code")))
                        snprintf(ec, sizeof ec, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(t, "exit_code")));
                snprintf(name, sizeof name, "%s", json_string_value(json_object_get(t, "name")) ?: "");
                printf("%-6" JSON_INTEGER_FORMAT " ", json_integer_value(json_object_get(t, "id")));
                cli_print_safe(stdout, name);
                printf("%*s ", (int) (28 - strlen(name)), "");
                print_state(stdout, json_string_value(json_object_get(t, "state")), colour, 10);
                printf(" %-8zu %-9s %s\n", json_array_size(atts), dur, ec);
        }
        fflush(stdout);
}

int verb_watch(int argc, char **argv) {
        _cleanup_(api_freep) Api *api = NULL;
        json_t *job = NULL, *seen = json_object();
        int64_t id;
        Common c;
        int r = common_parse(argc, argv, watch_usage, "", &c), status = 0;
        if (r != 0)
                return exit_of(r);
        if (c.n_rest != 1 || cli_parse_job_ref(c.rest[0], &id, NULL) < 0) {
                log_error("Expected one JOB id. See 'kiln watch --help'.");
                return 2;
        }
        if (api_open(&c.api, &api) < 0)
                return 1;
        bool tty = isatty(STDOUT_FILENO), colour = cli_colour(stdout);
        cli_sigint_install();
        for (;;) {
                json_t *t;
                size_t i;
                r = get_job(api, id, &job);
                if (r == -EINTR || cli_sigint_count() > 0) {
                        status = 130;
                        break;
                }
                if (r < 0) {
                        status = 1;
                        break;
                }
                if (tty)
                        watch_draw(job, colour);
                else
                        json_array_foreach(json_object_get(job, "tasks"), i, t) {
                                const char *key = json_string_value(json_object_get(t, "name"));
                                const char *st = json_string_value(json_object_get(t, "state"));
                                const char *old = json_string_value(json_object_get(seen, key ? key : "?"));
                                if (!st || (old && streq(old, st)))
                                        continue;
                                json_object_set_new(seen, key ? key : "?", json_string(st));
                                printf("task %" JSON_INTEGER_FORMAT " ", json_integer_value(json_object_get(t, "id")));
                                cli_print_safe(stdout, key);
                                printf(" %s\n", st);
                                fflush(stdout);
                        }
                if (cli_state_is_final(json_string_value(json_object_get(job, "state")))) {
                        json_array_foreach(json_object_get(job, "tasks"), i, t) {
                                int s = cli_task_exit_status(t);
                                if (status == 0 && s != 0)
                                        status = s;
                        }
                        break;
                }
                json_decref(job);
                job = NULL;
                for (unsigned k = 0; k < WATCH_INTERVAL_USEC / 10000 && cli_sigint_count() == 0; k++)
                        (void) usleep(10000);
        }
        json_decref(job);
        json_decref(seen);
        return status;
}
