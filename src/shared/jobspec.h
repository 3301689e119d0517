/* SPDX-License-Identifier: MIT */
#pragma once

/* The job spec: the JSON form of kiln.yml that clients submit and the server
 * stores. Its grammar is documented in docs/jobfile.md (YAML) and
 * docs/api.md (JSON). */

#include <jansson.h>
#include <stdint.h>

typedef struct JobSpecError {
        /* JSON path of the offending field, e.g. "steps[2].timeout" or
         * "services[0].health.tcp"; "" for the document itself. */
        char path[256];
        /* What was wrong and what was expected, e.g. "unknown key 'tiemout'
         * (expected one of: name, run, argv, env, timeout)". */
        char message[512];
} JobSpecError;

/* Validates a spec: types, required fields, unknown keys, every limit.
 * Returns 0, or -EINVAL with *err filled in. */
int jobspec_validate(json_t *spec, JobSpecError *err);

/* Expands tasks and/or the matrix into the concrete task list: a JSON array of
 * {"name", "slots", "env"} objects, env merged job < axis values < task.
 * Call only on a validated spec. */
int jobspec_expand_tasks(json_t *spec, json_t **ret_tasks, JobSpecError *err);

/* The most tasks a job may have, after matrix expansion. */
#define JOBSPEC_MAX_TASKS 256

/* Readers for the spec's typed scalars, for whoever applies a validated spec.
 * Durations are kiln duration strings ("10m", "1h30m", "500ms") or
 * non-negative numbers of seconds; sizes are size strings ("512M", "2G") or
 * integers of bytes; CPU counts are numbers or strings ("0.5"), returned in
 * millicpus. Return 0, -EINVAL (wrong type or syntax) or -ERANGE. */
int jobspec_parse_duration(const json_t *v, uint64_t *ret_usec);
int jobspec_parse_size(const json_t *v, uint64_t *ret_bytes);
int jobspec_parse_cpus(const json_t *v, uint64_t *ret_millis);
