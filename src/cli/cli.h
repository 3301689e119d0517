/* SPDX-License-Identifier: MIT */
#pragma once

/* What the user-facing verbs share (docs/cli.md): finding the server and the
 * token (flags, KILN_SERVER/KILN_TOKEN, the config file, a running `kiln up`),
 * one kept-alive connection to the API, colour and terminal detection, and
 * Ctrl-C handling that interrupts a blocked transfer. */

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"

static inline bool cli_str_in(const char *s, const char *const *list) {
        for (; s && *list; list++)
                if (streq(s, *list))
                        return true;
        return false;
}
#define IN_SET_STR(s, ...) cli_str_in((s), (const char *const[]) { __VA_ARGS__, NULL })

/* The largest config file the CLI reads. */
#define CLI_CONFIG_MAX (64U * 1024U)

typedef struct Api Api;

typedef struct ApiOptions {
        const char *server; /* --server, else KILN_SERVER, else the config file */
        const char *token;  /* --token, else KILN_TOKEN, else the config file */
        /* With no server configured and no `kiln up` running: start a private
         * one (kiln run) instead of failing. */
        bool start_private;
} ApiOptions;

/* Resolves the server and the token as docs/cli.md describes. Logs one clear
 * line and returns -errno on failure. */
int api_open(const ApiOptions *o, Api **ret);
Api *api_free(Api *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(Api *, api_free);
const char *api_server(const Api *a);

/* A JSON call. body may be NULL; it is not consumed. A 2xx answer is parsed
 * into *ret (an empty object when there is no body; ret may be NULL).
 * Anything else is logged as one line ("kiln: … : message") and returns
 * -EIO (-ENOENT for 404, -EBUSY for 409), with the HTTP status in
 * *ret_status when that is not NULL. */
int api_call(Api *a, const char *method, const char *path, json_t *body, json_t **ret);
int api_call_status(Api *a, const char *method, const char *path, json_t *body, json_t **ret,
                    long *ret_status);
/* Same, quiet: no log on HTTP errors. */
int api_call_quiet(Api *a, const char *method, const char *path, json_t *body, json_t **ret,
                   long *ret_status);

/* Uploads size bytes of fd (from offset 0) with PUT. */
int api_put_fd(Api *a, const char *path, int fd, uint64_t size, json_t **ret);

/* A streamed GET: each piece of the body goes to on_data (return false to
 * stop). Headers are reported through on_header when not NULL. Returns 0 when
 * the body ended (*ret_status set), -EINTR when a Ctrl-C interrupted it,
 * -errno otherwise. */
typedef bool (*ApiDataFn)(const char *p, size_t n, void *userdata);
int api_stream(Api *a, const char *path, ApiDataFn on_data, ApiDataFn on_header, void *userdata,
               long *ret_status);

/* Downloads path into fd. */
int api_download(Api *a, const char *path, int fd);

/* The state directory: $XDG_STATE_HOME/kiln, /var/lib/kiln for root, else
 * ~/.local/state/kiln. */
int cli_state_dir(char **ret);

/* Ctrl-C: the count of SIGINTs since cli_sigint_install(). A transfer in
 * progress is interrupted (-EINTR) when the count moves past what the caller
 * acknowledged with cli_sigint_ack(). */
void cli_sigint_install(void);
unsigned cli_sigint_count(void);
void cli_sigint_ack(unsigned n);
bool cli_sigint_pending(void);

/* Colour: only on a terminal, never with NO_COLOR (or TERM=dumb). */
bool cli_colour(FILE *f);
const char *cli_state_colour(const char *state); /* ANSI sequence or "" */
#define CLI_RESET "\033[0m"

/* "1.2s", "3m04s", "2h05m". */
void cli_format_duration(uint64_t usec, char *buf, size_t size);
/* Parses an ISO 8601 UTC time as the server writes it, into µs since the epoch. */
int cli_parse_time(const char *s, int64_t *ret_usec);
int64_t cli_now_usec(void);
/* Replaces control characters except \n and \t by '?': the server's strings
 * are untrusted when shown on a terminal. */
void cli_print_safe(FILE *f, const char *s);

/* Parses JOB or JOB/TASK (a task id or name); task may be NULL. */
int cli_parse_job_ref(const char *s, int64_t *ret_job, const char **ret_task);
/* Finds a task of a job (JSON as the API shows it) by id or name. */
json_t *cli_job_find_task(json_t *job, const char *ref);

/* The exit status `kiln run` and `kiln logs` use for a finished task. */
int cli_task_exit_status(json_t *task);
bool cli_state_is_final(const char *state);

void cli_print_json(json_t *j);

/* Downloads and extracts every artifact of job (jobj: the job as the API
 * shows it) into dir, or dir/TASK/ when the job has several tasks. */
int cli_download_artifacts(Api *api, int64_t job, json_t *jobj, const char *dir);

/* The embedded server: kiln-up.c. Looks for a running `kiln up` under the
 * state directory; with start, starts a private one when none answers.
 * Returns its URL and admin token. */
int up_find(bool start, char **ret_url, char **ret_token);
/* The /metrics base URL of the worker of the `kiln up` at server_url, when
 * that is the one on this machine. */
int up_worker_metrics(const char *server_url, char **ret);
