/* SPDX-License-Identifier: MIT */
#pragma once

/* Following a job to its end: every task's log in turn (each attempt of it),
 * the state of each task as a summary line, and the job's exit status. Shared
 * by `kiln run` and `kiln logs -f`. */

#include <jansson.h>
#include <stdbool.h>

#include "cli.h"

typedef enum FollowOutcome {
        FOLLOW_DONE,
        FOLLOW_CANCELLED, /* a Ctrl-C cancelled the job */
        FOLLOW_DETACHED,  /* a second Ctrl-C left it running */
} FollowOutcome;

typedef struct FollowOpts {
        bool summary;          /* one line per task on stderr at the end */
        bool cancel_on_sigint; /* Ctrl-C cancels the job (else it detaches) */
        const char *only_task; /* follow just this task (id or name) */
        FollowOutcome outcome; /* out */
} FollowOpts;

/* job is the job as the API shows it. Returns the exit status (the first
 * failing task's, 0 when all succeeded or warned, 130 after a cancel or
 * detach) or -errno; *ret_job (may be NULL) gets the final job. */
int follow_job(Api *api, json_t *job, FollowOpts *o, json_t **ret_job);

/* One log (an API path) printed as a follower does: the steps' stdout to
 * stdout, their stderr and the worker's lines to stderr. Returns -errno or
 * 0 with the HTTP status in *ret_status. */
int follow_print_log(Api *api, const char *path, long *ret_status);

/* The summary line of a task, to f. */
void follow_print_task_line(FILE *f, json_t *task, bool colour, int name_width);
