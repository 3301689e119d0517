/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "jobspec.h"
#include "macro.h"
#include "parse-util.h"

/* Every size a job author controls is bounded here; docs/jobfile.md lists
 * the same numbers. */
#define MAX_DEPTH 16
#define MAX_NAME 128
#define MAX_TASK_NAME 1024
#define MAX_SCRIPT (64U * 1024U)
#define MAX_ARG 4096
#define MAX_ARGV 1024
#define MAX_ENV_NAME 128
#define MAX_ENV_VALUE (32U * 1024U)
#define MAX_ENV 128
#define MAX_SECRETS 64
#define MAX_SERVICES 16
#define MAX_STEPS 256
#define MAX_TASKS JOBSPEC_MAX_TASKS
#define MAX_SLOTS 64
#define MAX_AXES 16
#define MAX_AXIS_VALUES 256
#define MAX_MATRIX_ENTRIES 256
#define MAX_MATRIX_VALUE 256
#define MAX_COMBINATIONS 4096
#define MAX_ARTIFACTS 64
#define MAX_GLOB 1024
#define MAX_LABELS 32
#define MAX_LABEL_KEY 63
#define MAX_LABEL_VALUE 255
#define MAX_URL 2048
#define MAX_RETRIES 10
#define MAX_HEALTH_RETRIES 1000
#define MAX_PIDS 4194304
#define MAX_CPUS 1024
#define USEC_PER_SEC 1000000ULL
#define MAX_DURATION (7ULL * 24 * 3600 * USEC_PER_SEC)

typedef struct Ctx {
        JobSpecError *err;
        char path[sizeof(((JobSpecError *) NULL)->path)];
        size_t len;
} Ctx;

static size_t ctx_push_key(Ctx *c, const char *key) {
        size_t saved = c->len;
        int n = snprintf(c->path + c->len, sizeof(c->path) - c->len, "%s%s",
                         c->len > 0 ? "." : "", key);
        c->len = n < 0 ? c->len : MIN(c->len + (size_t) n, sizeof(c->path) - 1);
        return saved;
}

static size_t ctx_push_index(Ctx *c, size_t i) {
        size_t saved = c->len;
        int n = snprintf(c->path + c->len, sizeof(c->path) - c->len, "[%zu]", i);
        c->len = n < 0 ? c->len : MIN(c->len + (size_t) n, sizeof(c->path) - 1);
        return saved;
}

static void ctx_pop(Ctx *c, size_t saved) {
        c->len = saved;
        c->path[saved] = 0;
}

/* Copies a user-supplied string for a message: bounded, control characters
 * replaced, so that an error line stays one line. */
static const char *quote(char *buf, size_t size, const char *s) {
        size_t i = 0;

        for (; s[i] && i + 1 < size; i++)
                buf[i] = (unsigned char) s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
        buf[i] = 0;
        if (s[i] && size > 4)
                memcpy(buf + size - 4, "...", 4);
        return buf;
}
#define Q(s) quote((char[65]){}, 65, (s))

_printf_(2, 3) static int fail(Ctx *c, const char *fmt, ...) {
        va_list ap;

        if (!c->err)
                return -EINVAL;
        snprintf(c->err->path, sizeof(c->err->path), "%s", c->path);
        va_start(ap, fmt);
        vsnprintf(c->err->message, sizeof(c->err->message), fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static const char *type_name(const json_t *v) {
        switch (json_typeof(v)) {
        case JSON_OBJECT: return "an object";
        case JSON_ARRAY: return "a list";
        case JSON_STRING: return "a string";
        case JSON_INTEGER: return "an integer";
        case JSON_REAL: return "a number";
        case JSON_TRUE:
        case JSON_FALSE: return "a boolean";
        case JSON_NULL: return "null";
        }
        return "a value";
}

static int fail_type(Ctx *c, const json_t *v, const char *expected) {
        return fail(c, "expected %s, got %s", expected, type_name(v));
}

/* ---- leaf values ---- */

enum {
        STR_NO_CONTROL = 1 << 0, /* one line: no control characters at all */
        STR_NO_NUL = 1 << 1,     /* multi-line text: no NUL bytes */
};

static int check_string(Ctx *c, const json_t *v, size_t min, size_t max, unsigned flags) {
        const char *s;
        size_t l;

        if (!json_is_string(v))
                return fail_type(c, v, "a string");
        s = json_string_value(v);
        l = json_string_length(v);
        if (l < min)
                return fail(c, min == 1 ? "must not be empty" : "too short (at least %zu bytes)", min);
        if (l > max)
                return fail(c, "too long (%zu bytes, at most %zu)", l, max);
        if (strlen(s) != l)
                return fail(c, "must not contain NUL bytes");
        if (flags & STR_NO_CONTROL)
                for (size_t i = 0; i < l; i++)
                        if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
                                return fail(c, "must not contain control characters");
        return 0;
}

static bool env_name_valid(const char *s) {
        size_t l = strlen(s);

        if (l == 0 || l > MAX_ENV_NAME)
                return false;
        if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
                return false;
        for (size_t i = 1; i < l; i++)
                if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
                        return false;
        return true;
}

static int check_env_name(Ctx *c, const char *name, const char *what) {
        if (!env_name_valid(name))
                return fail(c, "invalid %s '%s' (expected letters, digits and '_', not starting "
                            "with a digit, at most %d bytes)", what, Q(name), MAX_ENV_NAME);
        return 0;
}

int jobspec_parse_duration(const json_t *v, uint64_t *ret_usec) {
        uint64_t usec;
        int r;

        if (json_is_string(v)) {
                r = parse_duration(json_string_value(v), &usec);
                if (r < 0)
                        return r;
        } else if (json_is_integer(v)) {
                json_int_t i = json_integer_value(v);
                if (i < 0)
                        return -ERANGE;
                if ((uint64_t) i > UINT64_MAX / USEC_PER_SEC)
                        return -ERANGE;
                usec = (uint64_t) i * USEC_PER_SEC;
        } else if (json_is_real(v)) {
                double d = json_real_value(v);
                if (!isfinite(d) || d < 0 || d > 1.8e13)
                        return -ERANGE;
                usec = round_u64(d * 1e6);
        } else
                return -EINVAL;
        *ret_usec = usec;
        return 0;
}

int jobspec_parse_size(const json_t *v, uint64_t *ret_bytes) {
        if (json_is_string(v))
                return parse_size(json_string_value(v), ret_bytes);
        if (json_is_integer(v)) {
                if (json_integer_value(v) < 0)
                        return -ERANGE;
                *ret_bytes = (uint64_t) json_integer_value(v);
                return 0;
        }
        return -EINVAL;
}

int jobspec_parse_cpus(const json_t *v, uint64_t *ret_millis) {
        if (json_is_string(v))
                return parse_cpus(json_string_value(v), ret_millis);
        if (json_is_number(v)) {
                double d = json_number_value(v);
                if (!isfinite(d) || d <= 0 || d > 1e6)
                        return -ERANGE;
                *ret_millis = round_u64(d * 1000);
                return *ret_millis == 0 ? -ERANGE : 0;
        }
        return -EINVAL;
}

static int check_duration(Ctx *c, const json_t *v) {
        uint64_t usec;
        int r;

        if (!json_is_string(v) && !json_is_number(v))
                return fail_type(c, v, "a duration (a string like \"90s\", \"10m\", \"1h30m\" or a number of seconds)");
        if (json_is_string(v) && json_string_length(v) > 64)
                return fail(c, "invalid duration (too long)");
        r = jobspec_parse_duration(v, &usec);
        if (r == -ERANGE && json_is_number(v))
                return fail(c, "invalid duration (expected a non-negative number of seconds)");
        if (r < 0)
                return fail(c, "invalid duration '%s' (expected e.g. \"500ms\", \"90s\", \"10m\", "
                            "\"1h30m\" or a number of seconds)", Q(json_string_value(v)));
        if (usec > MAX_DURATION)
                return fail(c, "duration too long (at most 7d)");
        return 0;
}

static int check_size(Ctx *c, const json_t *v) {
        uint64_t bytes;
        int r;

        if (!json_is_string(v) && !json_is_integer(v))
                return fail_type(c, v, "a size (a string like \"512M\", \"2G\" or a number of bytes)");
        if (json_is_string(v) && json_string_length(v) > 64)
                return fail(c, "invalid size (too long)");
        r = jobspec_parse_size(v, &bytes);
        if (r < 0 && json_is_integer(v))
                return fail(c, "invalid size (expected a positive number of bytes)");
        if (r < 0)
                return fail(c, "invalid size '%s' (expected e.g. \"512M\", \"2G\", \"64KiB\" or a "
                            "number of bytes)", Q(json_string_value(v)));
        if (bytes == 0)
                return fail(c, "invalid size (must be greater than zero)");
        return 0;
}

static int check_int(Ctx *c, const json_t *v, json_int_t min, json_int_t max) {
        if (!json_is_integer(v))
                return fail_type(c, v, "an integer");
        if (json_integer_value(v) < min || json_integer_value(v) > max)
                return fail(c, "out of range (expected an integer from %lld to %lld)",
                            (long long) min, (long long) max);
        return 0;
}

/* ---- objects ---- */

typedef int (*CheckFn)(Ctx *c, json_t *v);

typedef struct Field {
        const char *name;
        CheckFn check;
        bool required;
        const char *missing; /* message when a required field is absent */
} Field;

/* Levenshtein distance, for "did you mean"; long strings are never close. */
static size_t edit_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b), row[33];

        if (la > 32 || lb > 32)
                return SIZE_MAX;
        for (size_t j = 0; j <= lb; j++)
                row[j] = j;
        for (size_t i = 1; i <= la; i++) {
                size_t diag = row[0];
                row[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t up = row[j];
                        row[j] = MIN(MIN(row[j] + 1, row[j - 1] + 1), diag + (a[i - 1] != b[j - 1]));
                        diag = up;
                }
        }
        return row[lb];
}

static int fail_unknown_key(Ctx *c, const char *key, const Field *fields, size_t n) {
        char allowed[256] = "";
        size_t l = 0, best = SIZE_MAX;
        const char *suggestion = NULL;

        for (size_t i = 0; i < n; i++) {
                size_t d = edit_distance(key, fields[i].name);
                if (d < best && d <= 2 && d < strlen(fields[i].name)) {
                        best = d;
                        suggestion = fields[i].name;
                }
        }

        for (size_t i = 0; i < n && l < sizeof(allowed); i++) {
                int k = snprintf(allowed + l, sizeof(allowed) - l, "%s%s", i > 0 ? ", " : "",
                                 fields[i].name);
                if (k < 0)
                        break;
                l += (size_t) k;
        }
        if (suggestion)
                return fail(c, "unknown key '%s' (expected one of: %s; did you mean '%s'?)", Q(key), allowed,
                            suggestion);
        return fail(c, "unknown key '%s' (expected one of: %s)", Q(key), allowed);
}

/* Checks an object against its field table in document order, so that the
 * first error reported is the first one in the file; then required fields. */
static int check_fields(Ctx *c, json_t *obj, const Field *fields, size_t n) {
        const char *key;
        json_t *v;
        int r;

        if (!json_is_object(obj))
                return fail_type(c, obj, "an object");
        json_object_foreach(obj, key, v) {
                size_t saved = ctx_push_key(c, key), i;

                for (i = 0; i < n; i++)
                        if (streq(fields[i].name, key))
                                break;
                if (i == n)
                        return fail_unknown_key(c, key, fields, n);
                if (fields[i].check) {
                        r = fields[i].check(c, v);
                        if (r < 0)
                                return r;
                }
                ctx_pop(c, saved);
        }
        for (size_t i = 0; i < n; i++)
                if (fields[i].required && !json_object_get(obj, fields[i].name)) {
                        ctx_push_key(c, fields[i].name);
                        return fail(c, "%s", fields[i].missing ? fields[i].missing : "required key is missing");
                }
        return 0;
}

/* Runs check on each element of an array with the index in the path. */
static int check_array(Ctx *c, const json_t *v, size_t min, size_t max, const char *what, CheckFn check) {
        size_t i;
        json_t *e;
        int r;

        if (!json_is_array(v))
                return fail_type(c, v, what);
        if (json_array_size(v) < min)
                return fail(c, "must not be empty (expected %s)", what);
        if (json_array_size(v) > max)
                return fail(c, "too many entries (%zu, at most %zu)", json_array_size(v), max);
        json_array_foreach(v, i, e) {
                size_t saved = ctx_push_index(c, i);
                r = check(c, e);
                if (r < 0)
                        return r;
                ctx_pop(c, saved);
        }
        return 0;
}

/* Fails if the string member "name" of an element repeats an earlier one. */
static int check_unique_names(Ctx *c, const json_t *arr, const char *what) {
        size_t i, j;
        json_t *a, *b;

        json_array_foreach(arr, i, a) {
                const char *na = json_string_value(json_is_object(a) ? json_object_get(a, "name") : a);
                if (!na)
                        continue;
                for (j = 0; j < i; j++) {
                        b = json_array_get(arr, j);
                        const char *nb = json_string_value(json_is_object(b) ? json_object_get(b, "name") : b);
                        if (nb && streq(na, nb)) {
                                size_t saved = ctx_push_index(c, i);
                                if (json_is_object(a))
                                        ctx_push_key(c, "name");
                                int r = fail(c, "duplicate %s name '%s' (first used by entry %zu)", what, Q(na), j);
                                ctx_pop(c, saved);
                                return r;
                        }
                }
        }
        return 0;
}

static int check_name(Ctx *c, json_t *v) {
        return check_string(c, v, 1, MAX_NAME, STR_NO_CONTROL);
}

static int check_env(Ctx *c, json_t *v) {
        const char *key;
        json_t *val;
        int r;

        if (!json_is_object(v))
                return fail_type(c, v, "an object of environment variables (NAME: value)");
        if (json_object_size(v) > MAX_ENV)
                return fail(c, "too many variables (%zu, at most %d)", json_object_size(v), MAX_ENV);
        json_object_foreach(v, key, val) {
                size_t saved = ctx_push_key(c, key);
                r = check_env_name(c, key, "environment variable name");
                if (r < 0)
                        return r;
                r = check_string(c, val, 0, MAX_ENV_VALUE, STR_NO_NUL);
                if (r < 0)
                        return r;
                ctx_pop(c, saved);
        }
        return 0;
}

static int check_run(Ctx *c, json_t *v) {
        return check_string(c, v, 1, MAX_SCRIPT, STR_NO_NUL);
}

static int check_arg(Ctx *c, json_t *v) {
        return check_string(c, v, 0, MAX_ARG, STR_NO_NUL);
}

static int check_argv(Ctx *c, json_t *v) {
        int r = check_array(c, v, 1, MAX_ARGV, "a list of strings (program and arguments)", check_arg);
        if (r < 0)
                return r;
        if (json_string_length(json_array_get(v, 0)) == 0) {
                size_t saved = ctx_push_index(c, 0);
                r = fail(c, "the program name must not be empty");
                ctx_pop(c, saved);
        }
        return r;
}

/* A step or service: exactly one of run and argv. */
static int check_run_or_argv(Ctx *c, const json_t *obj) {
        bool run = json_object_get(obj, "run"), argv = json_object_get(obj, "argv");

        if (run && argv) {
                size_t saved = ctx_push_key(c, "argv");
                int r = fail(c, "'run' and 'argv' are mutually exclusive (give exactly one)");
                ctx_pop(c, saved);
                return r;
        }
        if (!run && !argv)
                return fail(c, "missing command (expected exactly one of 'run' or 'argv')");
        return 0;
}

static int check_secret(Ctx *c, json_t *v) {
        if (!json_is_string(v))
                return fail_type(c, v, "a secret name");
        return check_env_name(c, json_string_value(v), "secret name");
}

static int check_secrets(Ctx *c, json_t *v) {
        int r = check_array(c, v, 0, MAX_SECRETS, "a list of secret names", check_secret);
        if (r < 0)
                return r;
        return check_unique_names(c, v, "secret");
}

/* ---- services ---- */

static int check_service_name(Ctx *c, json_t *v) {
        const char *s;
        int r = check_string(c, v, 1, 63, STR_NO_CONTROL);
        if (r < 0)
                return r;
        s = json_string_value(v);
        for (size_t i = 0; s[i]; i++) {
                bool alnum = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                             (s[i] >= '0' && s[i] <= '9');
                if (!alnum && (i == 0 || (s[i] != '-' && s[i] != '_' && s[i] != '.')))
                        return fail(c, "invalid service name '%s' (expected letters, digits, '-', '_' "
                                    "and '.', starting with a letter or digit)", Q(s));
        }
        return 0;
}

static int check_health_command(Ctx *c, json_t *v) {
        if (json_is_string(v))
                return check_run(c, v);
        if (json_is_array(v))
                return check_argv(c, v);
        return fail_type(c, v, "a shell command (string) or a list of strings (argv)");
}

static int check_url(Ctx *c, json_t *v) {
        const char *s;
        int r = check_string(c, v, 1, MAX_URL, STR_NO_CONTROL);
        if (r < 0)
                return r;
        s = json_string_value(v);
        if (!strneq(s, "http://", 7) && !strneq(s, "https://", 8))
                return fail(c, "invalid URL '%s' (expected http://HOST[:PORT]/PATH or https://…)", Q(s));
        if (strchr(s, ' '))
                return fail(c, "invalid URL '%s' (must not contain spaces)", Q(s));
        if (s[strneq(s, "http://", 7) ? 7 : 8] == 0 || s[strneq(s, "http://", 7) ? 7 : 8] == '/')
                return fail(c, "invalid URL '%s' (no host)", Q(s));
        return 0;
}

static int check_hostport(Ctx *c, json_t *v) {
        const char *s, *colon;
        unsigned port;
        int r = check_string(c, v, 1, 256, STR_NO_CONTROL);
        if (r < 0)
                return r;
        s = json_string_value(v);
        colon = strrchr(s, ':');
        if (!colon || colon == s || safe_atou(colon + 1, &port) < 0 || port == 0 || port > 65535)
                return fail(c, "invalid address '%s' (expected \"HOST:PORT\" with a port from 1 to "
                            "65535, e.g. \"127.0.0.1:5432\")", Q(s));
        if (s[0] == '[' ? colon[-1] != ']' : memchr(s, ':', (size_t) (colon - s)) != NULL)
                return fail(c, "invalid address '%s' (write IPv6 hosts in brackets: \"[::1]:5432\")", Q(s));
        return 0;
}

static int check_health_retries(Ctx *c, json_t *v) {
        return check_int(c, v, 0, MAX_HEALTH_RETRIES);
}

static int check_duration_fn(Ctx *c, json_t *v) {
        return check_duration(c, v);
}

static int check_health(Ctx *c, json_t *v) {
        static const Field fields[] = {
                { "command", check_health_command },
                { "http", check_url },
                { "tcp", check_hostport },
                { "interval", check_duration_fn },
                { "timeout", check_duration_fn },
                { "retries", check_health_retries },
        };
        const char *kinds[] = { "command", "http", "tcp" }, *first = NULL;
        int r = check_fields(c, v, fields, ELEMENTSOF(fields));
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
                if (!json_object_get(v, kinds[i]))
                        continue;
                if (first) {
                        size_t saved = ctx_push_key(c, kinds[i]);
                        r = fail(c, "a health check has exactly one kind, but both '%s' and '%s' "
                                 "are given (expected one of: command, http, tcp)", first, kinds[i]);
                        ctx_pop(c, saved);
                        return r;
                }
                first = kinds[i];
        }
        if (!first)
                return fail(c, "missing health check kind (expected exactly one of: command, http, tcp)");
        return 0;
}

static int check_service(Ctx *c, json_t *v) {
        static const Field fields[] = {
                { "name", check_service_name, true, "a service needs a name" },
                { "run", check_run },
                { "argv", check_argv },
                { "env", check_env },
                { "health", check_health },
        };
        int r = check_fields(c, v, fields, ELEMENTSOF(fields));
        if (r < 0)
                return r;
        return check_run_or_argv(c, v);
}

static int check_services(Ctx *c, json_t *v) {
        int r = check_array(c, v, 0, MAX_SERVICES, "a list of services", check_service);
        if (r < 0)
                return r;
        return check_unique_names(c, v, "service");
}

/* ---- steps ---- */

static int check_step(Ctx *c, json_t *v) {
        static const Field fields[] = {
                { "name", check_name },
                { "run", check_run },
                { "argv", check_argv },
                { "env", check_env },
                { "timeout", check_duration_fn },
        };
        int r = check_fields(c, v, fields, ELEMENTSOF(fields));
        if (r < 0)
                return r;
        return check_run_or_argv(c, v);
}

static int check_steps(Ctx *c, json_t *v) {
        int r = check_array(c, v, 1, MAX_STEPS, "a list of steps (at least one)", check_step);
        if (r < 0)
                return r;
        return check_unique_names(c, v, "step");
}

/* ---- tasks ---- */

static int check_slots(Ctx *c, json_t *v) {
        return check_int(c, v, 1, MAX_SLOTS);
}

static int check_task(Ctx *c, json_t *v) {
        static const Field fields[] = {
                { "name", check_name, true, "a task needs a name" },
                { "slots", check_slots },
                { "env", check_env },
        };
        if (json_is_string(v))
                return check_name(c, v);
        if (!json_is_object(v))
                return fail_type(c, v, "a task name or an object {name, slots, env}");
        return check_fields(c, v, fields, ELEMENTSOF(fields));
}

static int check_tasks(Ctx *c, json_t *v) {
        int r = check_array(c, v, 1, MAX_TASKS, "a list of tasks", check_task);
        if (r < 0)
                return r;
        return check_unique_names(c, v, "task");
}

/* ---- matrix ---- */

static int check_matrix_value(Ctx *c, json_t *v) {
        if (json_is_string(v))
                return check_string(c, v, 0, MAX_MATRIX_VALUE, STR_NO_CONTROL);
        if (json_is_number(v) || json_is_boolean(v))
                return 0;
        return fail_type(c, v, "a string, number or boolean");
}

static int check_axis(Ctx *c, json_t *v) {
        return check_array(c, v, 1, MAX_AXIS_VALUES, "a list of values", check_matrix_value);
}

static int check_axes(Ctx *c, json_t *v) {
        const char *key;
        json_t *val;
        int r;

        if (!json_is_object(v))
                return fail_type(c, v, "an object of axes (NAME: [values])");
        if (json_object_size(v) > MAX_AXES)
                return fail(c, "too many axes (%zu, at most %d)", json_object_size(v), MAX_AXES);
        json_object_foreach(v, key, val) {
                size_t saved = ctx_push_key(c, key);
                r = check_env_name(c, key, "axis name");
                if (r < 0)
                        return r;
                r = check_axis(c, val);
                if (r < 0)
                        return r;
                ctx_pop(c, saved);
        }
        return 0;
}

static int check_combination(Ctx *c, json_t *v) {
        const char *key;
        json_t *val;
        int r;

        if (!json_is_object(v))
                return fail_type(c, v, "an object (NAME: value)");
        if (json_object_size(v) == 0)
                return fail(c, "must not be empty (expected NAME: value pairs)");
        if (json_object_size(v) > MAX_AXES)
                return fail(c, "too many variables (%zu, at most %d)", json_object_size(v), MAX_AXES);
        json_object_foreach(v, key, val) {
                size_t saved = ctx_push_key(c, key);
                r = check_env_name(c, key, "variable name");
                if (r < 0)
                        return r;
                r = check_matrix_value(c, val);
                if (r < 0)
                        return r;
                ctx_pop(c, saved);
        }
        return 0;
}

static int check_combinations(Ctx *c, json_t *v) {
        return check_array(c, v, 0, MAX_MATRIX_ENTRIES, "a list of objects (NAME: value)", check_combination);
}

static int fail_axis_list(Ctx *c, const char *key, const json_t *axes) {
        char list[256] = "";
        size_t l = 0;
        const char *k;
        json_t *unused;

        json_object_foreach((json_t *) axes, k, unused) {
                int n = snprintf(list + l, sizeof(list) - l, "%s%s", l > 0 ? ", " : "", k);
                if (n < 0 || (size_t) n >= sizeof(list) - l)
                        break;
                l += (size_t) n;
        }
        return fail(c, "unknown axis '%s' (axes are: %s)", Q(key), l > 0 ? list : "none");
}

static int check_matrix(Ctx *c, json_t *v) {
        static const Field fields[] = {
                { "axes", check_axes },
                { "include", check_combinations },
                { "exclude", check_combinations },
        };
        json_t *axes, *exclude, *e;
        size_t i;
        int r;

        r = check_fields(c, v, fields, ELEMENTSOF(fields));
        if (r < 0)
                return r;
        axes = json_object_get(v, "axes");
        if (json_object_size(axes) == 0 && json_array_size(json_object_get(v, "include")) == 0)
                return fail(c, "empty matrix (expected 'axes' with at least one axis, or 'include')");

        /* An exclude entry naming no axis would silently never match. */
        exclude = json_object_get(v, "exclude");
        json_array_foreach(exclude, i, e) {
                const char *key;
                json_t *val;
                json_object_foreach(e, key, val)
                        if (!json_object_get(axes, key)) {
                                size_t saved = ctx_push_key(c, "exclude");
                                ctx_push_index(c, i);
                                ctx_push_key(c, key);
                                r = fail_axis_list(c, key, axes);
                                ctx_pop(c, saved);
                                return r;
                        }
        }
        return 0;
}

/* ---- the rest ---- */

static int check_glob(Ctx *c, json_t *v) {
        const char *s;
        int r = check_string(c, v, 1, MAX_GLOB, STR_NO_CONTROL);
        if (r < 0)
                return r;
        s = json_string_value(v);
        if (s[0] == '/')
                return fail(c, "invalid artifact path '%s' (expected a path relative to the workspace)", Q(s));
        for (const char *p = s; p; p = strchr(p, '/')) {
                if (*p == '/')
                        p++;
                if (strneq(p, "..", 2) && (p[2] == 0 || p[2] == '/'))
                        return fail(c, "invalid artifact path '%s' (must not contain '..')", Q(s));
        }
        return 0;
}

static int check_artifacts(Ctx *c, json_t *v) {
        return check_array(c, v, 0, MAX_ARTIFACTS, "a list of paths or globs", check_glob);
}

static int check_retry_max(Ctx *c, json_t *v) {
        return check_int(c, v, 0, MAX_RETRIES);
}

static int check_retry_on_value(Ctx *c, json_t *v) {
        if (!json_is_string(v))
                return fail_type(c, v, "a string");
        if (!streq(json_string_value(v), "failed") && !streq(json_string_value(v), "timed_out"))
                return fail(c, "invalid retry condition '%s' (expected one of: failed, timed_out)",
                            Q(json_string_value(v)));
        return 0;
}

static int check_retry_on(Ctx *c, json_t *v) {
        int r = check_array(c, v, 1, 2, "a list of conditions (failed, timed_out)", check_retry_on_value);
        if (r < 0)
                return r;
        return check_unique_names(c, v, "retry condition");
}

static int check_retry(Ctx *c, json_t *v) {
        static const Field fields[] = {
                { "max", check_retry_max, true, "missing the number of retries" },
                { "on", check_retry_on },
        };
        return check_fields(c, v, fields, ELEMENTSOF(fields));
}

static int check_cpus(Ctx *c, json_t *v) {
        uint64_t millis;

        if (!json_is_string(v) && !json_is_number(v))
                return fail_type(c, v, "a number of CPUs (e.g. 2 or \"0.5\")");
        if (json_is_string(v) && json_string_length(v) > 32)
                return fail(c, "invalid CPU count (too long)");
        if (jobspec_parse_cpus(v, &millis) < 0 || millis > MAX_CPUS * 1000ULL)
                return fail(c, "invalid CPU count (expected a number greater than 0 and at most %d, e.g. 2 or \"0.5\")",
                            MAX_CPUS);
        return 0;
}

static int check_pids(Ctx *c, json_t *v) {
        return check_int(c, v, 1, MAX_PIDS);
}

static int check_size_fn(Ctx *c, json_t *v) {
        return check_size(c, v);
}

static int check_resources(Ctx *c, json_t *v) {
        static const Field fields[] = {
                { "cpus", check_cpus },
                { "memory", check_size_fn },
                { "pids", check_pids },
                { "disk", check_size_fn },
        };
        return check_fields(c, v, fields, ELEMENTSOF(fields));
}

static int check_labels(Ctx *c, json_t *v) {
        const char *key;
        json_t *val;
        int r;

        if (!json_is_object(v))
                return fail_type(c, v, "an object of labels (key: value)");
        if (json_object_size(v) > MAX_LABELS)
                return fail(c, "too many labels (%zu, at most %d)", json_object_size(v), MAX_LABELS);
        json_object_foreach(v, key, val) {
                size_t saved = ctx_push_key(c, key), l = strlen(key);
                bool ok = l > 0 && l <= MAX_LABEL_KEY;
                for (size_t i = 0; ok && i < l; i++) {
                        char ch = key[i];
                        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                                     (ch >= '0' && ch <= '9');
                        ok = alnum || (i > 0 && strchr("._/-", ch));
                }
                if (!ok)
                        return fail(c, "invalid label key '%s' (expected letters, digits, '.', '_', "
                                    "'/' and '-', starting with a letter or digit, at most %d bytes)",
                                    Q(key), MAX_LABEL_KEY);
                r = check_string(c, val, 0, MAX_LABEL_VALUE, STR_NO_CONTROL);
                if (r < 0)
                        return r;
                ctx_pop(c, saved);
        }
        return 0;
}

static int check_image(Ctx *c, json_t *v) {
        const char *s;
        int r = check_string(c, v, 1, MAX_NAME, STR_NO_CONTROL);
        if (r < 0)
                return r;
        s = json_string_value(v);
        if (s[strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/@")])
                return fail(c, "invalid image name '%s' (expected letters, digits and '._-:/@')", Q(s));
        return 0;
}

static int check_network(Ctx *c, json_t *v) {
        if (!json_is_string(v))
                return fail_type(c, v, "\"none\" (loopback only) or \"nat\" (outbound through NAT)");
        const char *s = json_string_value(v);
        if (!streq(s, "none") && !streq(s, "nat"))
                return fail(c, "invalid network '%s' (expected \"none\": loopback only, or \"nat\": outbound "
                            "through NAT)", Q(s));
        return 0;
}

static int check_workspace(Ctx *c, json_t *v) {
        const char *s;
        int r = check_string(c, v, 1, 128, STR_NO_CONTROL);
        if (r < 0)
                return r;
        s = json_string_value(v);
        if (strlen(s) != 7 + 64 || !strneq(s, "sha256:", 7) ||
            s[7 + strspn(s + 7, "0123456789abcdef")] != 0)
                return fail(c, "invalid workspace '%s' (expected \"sha256:\" and 64 lowercase hex digits)", Q(s));
        return 0;
}

static int check_depth(Ctx *c, const json_t *v, unsigned depth) {
        const char *key;
        json_t *e;
        size_t i;
        int r;

        if (depth > MAX_DEPTH)
                return fail(c, "nested too deeply (at most %d levels)", MAX_DEPTH);
        if (json_is_object(v))
                json_object_foreach((json_t *) v, key, e) {
                        size_t saved = ctx_push_key(c, key);
                        r = check_depth(c, e, depth + 1);
                        if (r < 0)
                                return r;
                        ctx_pop(c, saved);
                }
        else if (json_is_array(v))
                json_array_foreach(v, i, e) {
                        size_t saved = ctx_push_index(c, i);
                        r = check_depth(c, e, depth + 1);
                        if (r < 0)
                                return r;
                        ctx_pop(c, saved);
                }
        return 0;
}

int jobspec_validate(json_t *spec, JobSpecError *err) {
        static const Field fields[] = {
                { "name", check_name },
                { "image", check_image },
                { "env", check_env },
                { "secrets", check_secrets },
                { "services", check_services },
                { "steps", check_steps, true, "missing 'steps' (a job needs at least one step)" },
                { "tasks", check_tasks },
                { "matrix", check_matrix },
                { "artifacts", check_artifacts },
                { "timeout", check_duration_fn },
                { "retry", check_retry },
                { "resources", check_resources },
                { "network", check_network },
                { "labels", check_labels },
                { "workspace", check_workspace },
        };
        _cleanup_(json_decrefp) json_t *tasks = NULL;
        Ctx c = { .err = err };
        int r;

        if (!spec)
                return fail(&c, "no job spec");
        r = check_depth(&c, spec, 0);
        if (r < 0)
                return r;
        if (!json_is_object(spec))
                return fail_type(&c, spec, "a job spec (an object)");
        r = check_fields(&c, spec, fields, ELEMENTSOF(fields));
        if (r < 0)
                return r;
        /* Expanding enforces the task limit and unique names across tasks
         * and matrix combinations. */
        return jobspec_expand_tasks(spec, &tasks, err);
}

/* ---- expansion ---- */

/* The environment form of a scalar: strings as they are, numbers in their
 * shortest JSON form, booleans as "true"/"false". */
static char *scalar_to_string(const json_t *v) {
        char *s = NULL;

        if (json_is_string(v))
                return strdup(json_string_value(v));
        if (json_is_integer(v))
                return asprintf(&s, "%lld", (long long) json_integer_value(v)) < 0 ? NULL : s;
        if (json_is_true(v))
                return strdup("true");
        if (json_is_false(v))
                return strdup("false");
        return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17));
}

/* A copy of the matrix with every value in its string form, so that
 * matching compares strings without allocating: up to 4096 combinations
 * are each checked against up to 256 exclude entries. */
static json_t *stringify(const json_t *v) {
        json_t *copy, *e;
        const char *key;
        size_t i;

        if (json_is_object(v)) {
                copy = json_object();
                json_object_foreach((json_t *) v, key, e)
                        if (!copy || json_object_set_new(copy, key, stringify(e)) < 0)
                                return json_decref(copy), NULL;
                return copy;
        }
        if (json_is_array(v)) {
                copy = json_array();
                json_array_foreach(v, i, e)
                        if (!copy || json_array_append_new(copy, stringify(e)) < 0)
                                return json_decref(copy), NULL;
                return copy;
        }
        _cleanup_free_ char *s = scalar_to_string(v);
        return s ? json_string(s) : NULL;
}

/* Sets every member of src in dst, as strings. */
static int env_merge(json_t *dst, const json_t *src) {
        const char *key;
        json_t *v;

        json_object_foreach((json_t *) src, key, v) {
                char *s = scalar_to_string(v);
                if (!s)
                        return -ENOMEM;
                if (json_object_set_new(dst, key, json_string(s)) < 0) {
                        free(s);
                        return -ENOMEM;
                }
                free(s);
        }
        return 0;
}

typedef struct Expansion {
        Ctx *ctx;
        json_t *tasks;      /* the result */
        const json_t *env;  /* job env */
} Expansion;

static int add_task(Expansion *x, const char *name, json_int_t slots, const json_t *combo,
                    const json_t *task_env) {
        json_auto_t *task = NULL, *env = NULL;
        size_t i;
        json_t *t;
        int r;

        if (json_array_size(x->tasks) >= MAX_TASKS)
                return fail(x->ctx, "too many tasks (more than %d after matrix expansion)", MAX_TASKS);
        json_array_foreach(x->tasks, i, t)
                if (streq(json_string_value(json_object_get(t, "name")), name))
                        return fail(x->ctx, "duplicate task name '%s'", Q(name));

        env = json_object();
        if (!env)
                return -ENOMEM;
        if ((r = env_merge(env, x->env)) < 0 || (r = env_merge(env, combo)) < 0 ||
            (r = env_merge(env, task_env)) < 0)
                return r;
        task = json_pack("{s:s, s:I, s:O}", "name", name, "slots", slots, "env", env);
        if (!task || json_array_append(x->tasks, task) < 0)
                return -ENOMEM;
        return 0;
}

static int expand_explicit(Expansion *x, const json_t *tasks) {
        size_t i;
        json_t *t;
        int r;

        json_array_foreach(tasks, i, t) {
                size_t saved = ctx_push_index(x->ctx, i);
                const json_t *slots = json_object_get(t, "slots");
                if (json_is_object(t))
                        ctx_push_key(x->ctx, "name");
                r = add_task(x, json_string_value(json_is_string(t) ? t : json_object_get(t, "name")),
                             slots ? json_integer_value(slots) : 1, NULL, json_object_get(t, "env"));
                if (r < 0)
                        return r;
                ctx_pop(x->ctx, saved);
        }
        return 0;
}

static bool combination_matches(const json_t *combo, const json_t *entry, const json_t *only_keys) {
        const char *key;
        json_t *v;

        json_object_foreach((json_t *) entry, key, v) {
                const json_t *have;
                if (only_keys && !json_object_get(only_keys, key))
                        continue;
                have = json_object_get(combo, key);
                if (!json_is_string(have) || !json_is_string(v) || !streq(json_string_value(have), json_string_value(v)))
                        return false;
        }
        return true;
}

/* The cartesian product of the axes, first axis slowest, minus excludes. */
static int matrix_product(Ctx *c, const json_t *matrix, json_t *combos) {
        const json_t *axes = json_object_get(matrix, "axes"), *exclude = json_object_get(matrix, "exclude");
        size_t naxes = json_object_size(axes), total = 1, idx[MAX_AXES] = {};
        const json_t *lists[MAX_AXES];
        const char *keys[MAX_AXES];
        const char *key;
        json_t *v;
        size_t a = 0;

        if (naxes == 0)
                return 0;
        json_object_foreach((json_t *) axes, key, v) {
                keys[a] = key;
                lists[a++] = v;
                total *= json_array_size(v);
                if (total > MAX_COMBINATIONS)
                        return fail(c, "matrix has more than %d combinations", MAX_COMBINATIONS);
        }
        for (size_t n = 0; n < total; n++) {
                json_auto_t *combo = json_object();
                size_t i;
                json_t *e;
                bool excluded = false;

                if (!combo)
                        return -ENOMEM;
                for (size_t k = 0, rest = n; k < naxes; k++) {
                        size_t radix_idx = naxes - 1 - k;
                        idx[radix_idx] = rest % json_array_size(lists[radix_idx]);
                        rest /= json_array_size(lists[radix_idx]);
                }
                for (size_t k = 0; k < naxes; k++)
                        if (json_object_set(combo, keys[k], json_array_get(lists[k], idx[k])) < 0)
                                return -ENOMEM;
                json_array_foreach(exclude, i, e)
                        if (combination_matches(combo, e, NULL)) {
                                excluded = true;
                                break;
                        }
                if (excluded)
                        continue;
                if (json_array_size(combos) >= MAX_TASKS)
                        return fail(c, "matrix expands to more than %d tasks", MAX_TASKS);
                if (json_array_append(combos, combo) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* GitHub Actions' include rules: an entry extends every original
 * combination whose axis values it does not contradict (its other keys may
 * overwrite values an earlier include added); an entry that extends none is
 * appended as a combination of its own. Appended entries are never extended. */
static int matrix_include(Ctx *c, const json_t *matrix, json_t *combos) {
        const json_t *axes = json_object_get(matrix, "axes"), *include = json_object_get(matrix, "include");
        size_t n_original = json_array_size(combos), i;
        json_t *e;

        json_array_foreach(include, i, e) {
                bool extended = false;
                for (size_t k = 0; k < n_original; k++) {
                        json_t *combo = json_array_get(combos, k);
                        if (!combination_matches(combo, e, axes))
                                continue;
                        if (json_object_update(combo, e) < 0)
                                return -ENOMEM;
                        extended = true;
                }
                if (extended)
                        continue;
                if (json_array_size(combos) >= MAX_TASKS) {
                        size_t saved = ctx_push_key(c, "include");
                        ctx_push_index(c, i);
                        int r = fail(c, "matrix expands to more than %d tasks", MAX_TASKS);
                        ctx_pop(c, saved);
                        return r;
                }
                if (json_array_append_new(combos, json_deep_copy(e)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int combination_name(const json_t *combo, char **ret) {
        char buf[MAX_TASK_NAME + 1];
        size_t l = 0;
        const char *key;
        json_t *v;

        json_object_foreach((json_t *) combo, key, v) {
                _cleanup_free_ char *s = scalar_to_string(v);
                int n;
                if (!s)
                        return -ENOMEM;
                n = snprintf(buf + l, sizeof(buf) - l, "%s%s=%s", l > 0 ? "," : "", key, s);
                if (n < 0 || (size_t) n >= sizeof(buf) - l)
                        return -E2BIG;
                l += (size_t) n;
        }
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

static int expand_matrix(Expansion *x, const json_t *original) {
        json_auto_t *combos = json_array(), *matrix = stringify(original);
        size_t i;
        json_t *combo;
        int r;

        if (!combos || !matrix)
                return -ENOMEM;
        r = matrix_product(x->ctx, matrix, combos);
        if (r < 0)
                return r;
        r = matrix_include(x->ctx, matrix, combos);
        if (r < 0)
                return r;
        if (json_array_size(combos) == 0)
                return fail(x->ctx, "the matrix has no combinations left: 'exclude' removed them all");
        json_array_foreach(combos, i, combo) {
                _cleanup_free_ char *name = NULL;
                r = combination_name(combo, &name);
                if (r == -E2BIG)
                        return fail(x->ctx, "a matrix combination's name is longer than %d bytes", MAX_TASK_NAME);
                if (r < 0)
                        return r;
                r = add_task(x, name, 1, combo, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

int jobspec_expand_tasks(json_t *spec, json_t **ret_tasks, JobSpecError *err) {
        json_auto_t *tasks = json_array();
        Ctx c = { .err = err };
        Expansion x = { .ctx = &c, .env = json_object_get(spec, "env") };
        const json_t *list = json_object_get(spec, "tasks"), *matrix = json_object_get(spec, "matrix");
        int r;

        if (!tasks)
                return -ENOMEM;
        x.tasks = tasks;
        if (list) {
                size_t saved = ctx_push_key(&c, "tasks");
                r = expand_explicit(&x, list);
                if (r < 0)
                        return r;
                ctx_pop(&c, saved);
        }
        if (matrix) {
                size_t saved = ctx_push_key(&c, "matrix");
                r = expand_matrix(&x, matrix);
                if (r < 0)
                        return r;
                ctx_pop(&c, saved);
        }
        if (!list && !matrix) {
                r = add_task(&x, "default", 1, NULL, NULL);
                if (r < 0)
                        return r;
        }
        *ret_tasks = TAKE_PTR(tasks);
        return 0;
}
