/* SPDX-License-Identifier: MIT */
#pragma once

/* kiln.yml: the YAML form of the job spec (docs/jobfile.md). A jobfile is
 * parsed into the JSON spec that jobspec.h validates, keeping where each
 * field came from so that every error names file:line:column. */

#include <jansson.h>
#include <stddef.h>

#include "macro.h"

/* Bounds on what a jobfile may make the parser do. */
#define JOBFILE_MAX_SIZE (1024U * 1024U)
#define JOBFILE_MAX_NODES 100000U
#define JOBFILE_MAX_DEPTH 64U

typedef struct JobFile JobFile;

typedef struct JobFileError {
        /* 1-based position in the file; 0 when there is none (I/O errors). */
        unsigned line;
        unsigned column;
        /* JSON path of the offending field as in JobSpecError; "" for YAML
         * syntax errors and for the document itself. */
        char path[256];
        char message[512];
} JobFileError;

/* Parses YAML text into the JSON spec: the YAML 1.2 core schema for plain
 * scalars (except where kiln expects a string, which keeps the text as
 * written), duplicate keys refused, aliases expanded within
 * JOBFILE_MAX_NODES and JOBFILE_MAX_DEPTH, and the jobfile conveniences
 * rewritten into the JSON form. Does not validate the spec. Returns 0, or
 * -EINVAL / -E2BIG (limits) with *err filled in, or -ENOMEM. */
int jobfile_parse(const char *text, size_t size, JobFile **ret, JobFileError *err);

/* Reads the file at path (at most JOBFILE_MAX_SIZE bytes), parses it and
 * validates the spec. On failure *err says where and why. */
int jobfile_load(const char *path, JobFile **ret, JobFileError *err);

/* Validates the spec with jobspec_validate(), mapping the error's path back
 * to the position of the field (or of its closest enclosing one). */
int jobfile_validate(JobFile *f, JobFileError *err);

/* The spec; owned by f. */
json_t *jobfile_spec(JobFile *f);

/* Finds where the field at path (or its closest enclosing field) starts.
 * Returns 0, or -ENOENT when not even the document is known. */
int jobfile_locate(const JobFile *f, const char *path, unsigned *ret_line, unsigned *ret_column);

JobFile *jobfile_free(JobFile *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(JobFile *, jobfile_free);
