/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "macro.h"
#include "taskstate.h"

static const char *const task_state_table[_TASK_STATE_MAX] = {
        [TASK_QUEUED] = "queued",       [TASK_LEASED] = "leased",
        [TASK_RUNNING] = "running",     [TASK_SUCCEEDED] = "succeeded",
        [TASK_FAILED] = "failed",       [TASK_WARNING] = "warning",
        [TASK_SKIPPED] = "skipped",     [TASK_CANCELLED] = "cancelled",
        [TASK_TIMED_OUT] = "timed_out", [TASK_LOST] = "lost",
};

const char *task_state_to_string(TaskState s) {
        if (s < 0 || s >= _TASK_STATE_MAX)
                return NULL;
        return task_state_table[s];
}

TaskState task_state_from_string(const char *s) {
        if (!s)
                return _TASK_STATE_INVALID;
        for (int i = 0; i < _TASK_STATE_MAX; i++)
                if (streq(task_state_table[i], s))
                        return (TaskState) i;
        return _TASK_STATE_INVALID;
}

bool task_state_is_final(TaskState s) {
        return s >= TASK_SUCCEEDED && s < _TASK_STATE_MAX;
}

bool task_state_is_reportable(TaskState s) {
        return task_state_is_final(s);
}

const char *job_state_derive(const unsigned counts[_TASK_STATE_MAX]) {
        static const TaskState worst_first[] = {
                TASK_FAILED, TASK_TIMED_OUT, TASK_LOST, TASK_CANCELLED, TASK_WARNING,
                TASK_SUCCEEDED,
        };
        unsigned total = 0;

        for (int i = 0; i < _TASK_STATE_MAX; i++)
                total += counts[i];
        if (counts[TASK_QUEUED] + counts[TASK_LEASED] + counts[TASK_RUNNING] > 0) {
                if (counts[TASK_QUEUED] == total)
                        return "queued";
                return "running";
        }
        for (size_t i = 0; i < ELEMENTSOF(worst_first); i++)
                if (counts[worst_first[i]] > 0)
                        return task_state_to_string(worst_first[i]);
        return total > 0 ? "skipped" : "succeeded";
}
