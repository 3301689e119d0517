/* SPDX-License-Identifier: MIT */
/* Jobs and tasks: submit, list, get, cancel, retry. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "jobspec.h"
#include "log.h"
#include "macro.h"
#include "server.h"
#include "taskstate.h"

static int spec_error(Request *r, const JobSpecError *e) {
        return http_error(r, 400, "invalid_spec", json_pack("{s:s}", "path", e->path), "%s%s%s",
                          e->path[0] ? e->path : "", e->path[0] ? ": " : "", e->message);
}

/* What the spec names must exist: its secrets and its workspace blob. */
static int spec_check_references(Request *r, json_t *spec) {
        json_t *secrets = json_object_get(spec, "secrets"), *v;
        const char *ws = json_string_value(json_object_get(spec, "workspace"));
        size_t i;

        json_array_foreach(secrets, i, v) {
                void *blob = NULL;
                size_t n;
                int k = store_secret_get(r->srv->store, json_string_value(v), &blob, &n);
                free(blob);
                if (k == -ENOENT) {
                        char path[64];
                        snprintf(path, sizeof path, "secrets[%zu]", i);
                        return http_error(r, 400, "invalid_spec", json_pack("{s:s}", "path", path),
                                          "%s: no secret named '%s' (see 'kiln secret set')", path,
                                          json_string_value(v));
                }
                if (k < 0)
                        return http_errno(r, k, "secret lookup");
        }
        if (ws && strneq(ws, "sha256:", 7)) {
                char path[128];
                struct stat st;
                snprintf(path, sizeof path, "blobs/sha256/%.64s", ws + 7);
                if (fstatat(r->srv->data_fd, path, &st, 0) < 0)
                        return http_error(r, 400, "invalid_spec", json_pack("{s:s}", "path", "workspace"),
                                          "workspace: blob '%.80s' has not been uploaded", ws);
        }
        return 0;
}

int api_job_submit(Request *r) {
        json_t *spec = NULL, *tasks = NULL, *job = NULL;
        JobSpecError e = {};
        int64_t id;
        int k;

        k = http_body_json(r, &spec);
        if (k < 0)
                return 0;
        if (jobspec_validate(spec, &e) < 0) {
                k = spec_error(r, &e);
                goto finish;
        }
        k = spec_check_references(r, spec);
        if (k < 0 || r->responded)
                goto finish;
        if (jobspec_expand_tasks(spec, &tasks, &e) < 0) {
                k = spec_error(r, &e);
                goto finish;
        }
        k = store_job_submit(r->srv->store, spec, tasks, r->token.id, &id);
        if (k < 0) {
                k = http_errno(r, k, "submit job");
                goto finish;
        }
        k = store_job_get(r->srv->store, id, &job);
        if (k < 0) {
                k = http_errno(r, k, "read job");
                goto finish;
        }
        k = http_json(r, 201, job);
finish:
        json_decref(spec);
        json_decref(tasks);
        return k;
}

int api_job_list(Request *r) {
        StoreJobFilter f = {};
        int64_t before, limit;
        json_t *list;
        int k;

        f.state = http_query(r, "state");
        f.name = http_query(r, "name");
        if (f.state && !streq(f.state, "queued") && !streq(f.state, "running") &&
            task_state_from_string(f.state) < 0 && !streq(f.state, "skipped"))
                return http_error(r, 400, "invalid_parameter", json_pack("{s:s}", "parameter", "state"),
                                  "unknown state '%.32s'", f.state);
        if (f.name && strlen(f.name) > 128)
                return http_error(r, 400, "invalid_parameter", json_pack("{s:s}", "parameter", "name"),
                                  "name filter longer than 128 characters");
        if (http_query_int(r, "before", 0, &before) < 0 || http_query_int(r, "limit", 50, &limit) < 0)
                return 0;
        if (limit < 1 || limit > 500)
                return http_error(r, 400, "invalid_parameter", json_pack("{s:s}", "parameter", "limit"),
                                  "limit must be between 1 and 500");
        f.before = before;
        f.limit = (unsigned) limit;
        k = store_job_list(r->srv->store, &f, &list);
        if (k < 0)
                return http_errno(r, k, "list jobs");
        return http_json(r, 200, list);
}

int api_job_get(Request *r) {
        json_t *job;
        int64_t id;
        int k;

        if (http_arg_id(r, 0, &id) < 0)
                return 0;
        k = store_job_get(r->srv->store, id, &job);
        if (k < 0)
                return http_errno(r, k, "job");
        return http_json(r, 200, job);
}

int api_task_get(Request *r) {
        json_t *task;
        int64_t id;
        int k;

        if (http_arg_id(r, 0, &id) < 0)
                return 0;
        k = store_task_get(r->srv->store, id, &task);
        if (k < 0)
                return http_errno(r, k, "task");
        return http_json(r, 200, task);
}

static int job_reply(Request *r, int64_t id, json_t *extra) {
        json_t *job;
        int k = store_job_get(r->srv->store, id, &job);
        if (k < 0) {
                json_decref(extra);
                return http_errno(r, k, "job");
        }
        if (extra) {
                json_object_update(job, extra);
                json_decref(extra);
        }
        return http_json(r, 200, job);
}

int api_job_cancel(Request *r) {
        int64_t id;
        int k;

        if (http_arg_id(r, 0, &id) < 0)
                return 0;
        k = store_job_cancel(r->srv->store, id);
        if (k < 0)
                return http_errno(r, k, "cancel job");
        return job_reply(r, id, NULL);
}

int api_job_retry(Request *r) {
        unsigned n;
        int64_t id;
        int k;

        if (http_arg_id(r, 0, &id) < 0)
                return 0;
        k = store_job_retry(r->srv->store, id, &n);
        if (k == -EBUSY)
                return http_error(r, 409, "job_not_finished", NULL,
                                  "job %lld is still queued or running; cancel it first or wait",
                                  (long long) id);
        if (k < 0)
                return http_errno(r, k, "retry job");
        return job_reply(r, id, json_pack("{s:i}", "retried", n));
}
