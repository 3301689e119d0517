/* SPDX-License-Identifier: MIT */
/* libFuzzer target: a jobfile as an untrusted input — parse, validate,
 * expand. Any crash, leak or sanitizer report is a bug; errors are fine but
 * must say where. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "jobfile.h"
#include "jobspec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(jobfile_freep) JobFile *f = NULL;
        json_auto_t *tasks = NULL;
        JobFileError err = {};
        JobSpecError serr = {};

        if (jobfile_parse((const char *) data, size, &f, &err) < 0) {
                if (size <= JOBFILE_MAX_SIZE && (err.line == 0 || !err.message[0]))
                        abort();
                return 0;
        }
        if (jobfile_validate(f, &err) < 0) {
                if (err.line == 0 || !err.message[0])
                        abort();
                return 0;
        }
        if (jobspec_expand_tasks(jobfile_spec(f), &tasks, &serr) < 0 || json_array_size(tasks) == 0 ||
            json_array_size(tasks) > JOBSPEC_MAX_TASKS)
                abort();
        return 0;
}
