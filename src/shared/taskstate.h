/* SPDX-License-Identifier: MIT */
#pragma once

/* Task and job states (DESIGN §2) and the rules that relate them. Pure logic,
 * no I/O. */

#include <stdbool.h>

typedef enum TaskState {
        TASK_QUEUED,
        TASK_LEASED,
        TASK_RUNNING,
        TASK_SUCCEEDED,
        TASK_FAILED,
        TASK_WARNING,
        TASK_SKIPPED,
        TASK_CANCELLED,
        TASK_TIMED_OUT,
        TASK_LOST,
        _TASK_STATE_MAX,
        _TASK_STATE_INVALID = -1,
} TaskState;

const char *task_state_to_string(TaskState s);
TaskState task_state_from_string(const char *s);
bool task_state_is_final(TaskState s);
/* The states a worker may report when it finishes an attempt: every final
 * one; "lost" gives the task back, to be queued again (an infrastructure
 * retry). */
bool task_state_is_reportable(TaskState s);

/* A job's state from how many of its tasks are in each state: "queued" while
 * nothing started, "running" while anything is unfinished, then the worst
 * outcome: failed > timed_out > lost > cancelled > warning > succeeded
 * ("skipped" when every task was skipped). */
const char *job_state_derive(const unsigned counts[_TASK_STATE_MAX]);
