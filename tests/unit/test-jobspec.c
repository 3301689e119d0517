/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "jobspec.h"
#include "macro.h"
#include "test.h"

#define STEPS "\"steps\":[{\"run\":\"true\"}]"

static json_t *load(const char *text) {
        json_error_t e;
        json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
        if (!v) {
                fprintf(stderr, "bad test JSON: %s: %s\n", text, e.text);
                exit(1);
        }
        return v;
}

static void expect_ok(const char *text) {
        json_auto_t *v = load(text);
        JobSpecError err = {};
        int r = jobspec_validate(v, &err);
        if (r != 0) {
                fprintf(stderr, "expected valid: %s\n  got %s: %s\n", text, err.path, err.message);
                exit(1);
        }
}

/* Checks the path exactly and that the message contains the fragment. */
static void expect_error(const char *text, const char *path, const char *fragment) {
        json_auto_t *v = load(text);
        JobSpecError err = {};
        int r = jobspec_validate(v, &err);
        if (r != -EINVAL || !streq(err.path, path) || !strstr(err.message, fragment)) {
                fprintf(stderr, "spec: %s\n  expected -EINVAL at '%s' with '%s'\n  got %d at '%s': %s\n",
                        text, path, fragment, r, err.path, err.message);
                exit(1);
        }
}

static void test_minimal_and_full(void) {
        expect_ok("{" STEPS "}");
        expect_ok("{\"name\":\"build\",\"image\":\"debian:bookworm\",\"env\":{\"CC\":\"gcc\",\"_X1\":\"\"},"
                  "\"secrets\":[\"TOKEN\",\"DB_PASS\"],"
                  "\"services\":[{\"name\":\"db\",\"argv\":[\"postgres\",\"-D\",\"/tmp\"],\"env\":{\"A\":\"b\"},"
                  "\"health\":{\"tcp\":\"127.0.0.1:5432\",\"interval\":\"500ms\",\"timeout\":2,\"retries\":30}},"
                  "{\"name\":\"web\",\"run\":\"python3 -m http.server\",\"health\":{\"http\":\"http://127.0.0.1:8000/\"}},"
                  "{\"name\":\"v6\",\"run\":\"x\",\"health\":{\"tcp\":\"[::1]:80\"}},"
                  "{\"name\":\"c\",\"run\":\"x\",\"health\":{\"command\":[\"pg_isready\"]}},"
                  "{\"name\":\"d\",\"run\":\"x\",\"health\":{\"command\":\"test -e /tmp/ready\"}}],"
                  "\"steps\":[{\"name\":\"a\",\"run\":\"make\\nmake check\",\"timeout\":\"10m\"},"
                  "{\"name\":\"b\",\"argv\":[\"ls\",\"\"],\"env\":{\"X\":\"1\"},\"timeout\":1.5}],"
                  "\"tasks\":[\"one\",{\"name\":\"two\",\"slots\":2,\"env\":{\"Y\":\"2\"}}],"
                  "\"matrix\":{\"axes\":{\"CC\":[\"gcc\",\"clang\"]}},"
                  "\"artifacts\":[\"build/*.tar\",\"out/**\"],\"timeout\":\"1h30m\","
                  "\"retry\":{\"max\":2,\"on\":[\"failed\",\"timed_out\"]},"
                  "\"resources\":{\"cpus\":\"0.5\",\"memory\":\"512M\",\"pids\":256,\"disk\":1073741824},"
                  "\"labels\":{\"os\":\"linux\",\"kiln.dev/kvm\":\"true\"},"
                  "\"workspace\":\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}");
        expect_ok("{" STEPS ",\"resources\":{\"cpus\":2}}");
        expect_ok("{" STEPS ",\"resources\":{\"cpus\":0.25}}");
        expect_ok("{" STEPS ",\"timeout\":0}");
}

static void test_top_level(void) {
        expect_error("[]", "", "expected a job spec (an object), got a list");
        expect_error("{}", "steps", "a job needs at least one step");
        expect_error("{" STEPS ",\"tiemout\":\"1m\"}", "tiemout", "did you mean 'timeout'?");
        expect_error("{" STEPS ",\"frobnicate\":1}", "frobnicate", "labels, workspace)");
        expect_error("{" STEPS ",\"tiemout\":\"1m\"}", "tiemout",
                     "unknown key 'tiemout' (expected one of: name, image, env, secrets, services, steps, tasks");
        expect_error("{" STEPS ",\"name\":5}", "name", "expected a string, got an integer");
        expect_error("{" STEPS ",\"name\":\"\"}", "name", "must not be empty");
        expect_error("{" STEPS ",\"name\":\"a\\nb\"}", "name", "control characters");
        expect_error("{" STEPS ",\"image\":\"bad image\"}", "image", "invalid image name");
        expect_error("{" STEPS ",\"workspace\":\"sha256:abc\"}", "workspace", "64 lowercase hex");
        expect_error("{" STEPS ",\"workspace\":\"sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\"}",
                     "workspace", "64 lowercase hex");
        expect_error("{\"steps\":[{\"run\":\"true\",\"env\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":"
                     "{\"h\":{\"i\":{\"j\":{\"k\":{\"l\":{\"m\":{\"n\":{\"o\":1}}}}}}}}}}}}}}}}]}",
                     "steps[0].env.a.b.c.d.e.f.g.h.i.j.k.l.m.n", "nested too deeply");
}

static void test_env_and_secrets(void) {
        expect_error("{" STEPS ",\"env\":[]}", "env", "expected an object of environment variables");
        expect_error("{" STEPS ",\"env\":{\"A=B\":\"x\"}}", "env.A=B", "invalid environment variable name 'A=B'");
        expect_error("{" STEPS ",\"env\":{\"1A\":\"x\"}}", "env.1A", "not starting with a digit");
        expect_error("{" STEPS ",\"env\":{\"\":\"x\"}}", "env.", "invalid environment variable name");
        expect_error("{" STEPS ",\"env\":{\"A\":1}}", "env.A", "expected a string, got an integer");
        expect_error("{" STEPS ",\"env\":{\"A\":\"x\\u0000y\"}}", "env.A", "NUL");
        expect_error("{" STEPS ",\"secrets\":[\"ok\",\"not-ok\"]}", "secrets[1]", "invalid secret name 'not-ok'");
        expect_error("{" STEPS ",\"secrets\":[\"A\",\"A\"]}", "secrets[1]", "duplicate secret name 'A'");
        expect_error("{" STEPS ",\"secrets\":[3]}", "secrets[0]", "expected a secret name");
        expect_error("{" STEPS ",\"secrets\":\"A\"}", "secrets", "expected a list of secret names, got a string");

        /* Limits: 129 variables, a 33 KiB value. */
        char buf[40000];
        size_t l = (size_t) snprintf(buf, sizeof(buf), "{" STEPS ",\"env\":{");
        for (int i = 0; i < 129; i++)
                l += (size_t) snprintf(buf + l, sizeof(buf) - l, "%s\"V%d\":\"\"", i ? "," : "", i);
        snprintf(buf + l, sizeof(buf) - l, "}}");
        expect_error(buf, "env", "too many variables (129, at most 128)");
        l = (size_t) snprintf(buf, sizeof(buf), "{" STEPS ",\"env\":{\"A\":\"");
        memset(buf + l, 'x', 33 * 1024);
        l += 33 * 1024;
        snprintf(buf + l, sizeof(buf) - l, "\"}}");
        expect_error(buf, "env.A", "too long (33792 bytes, at most 32768)");
}

static void test_steps(void) {
        expect_error("{\"steps\":[]}", "steps", "must not be empty");
        expect_error("{\"steps\":{}}", "steps", "expected a list of steps");
        expect_error("{\"steps\":[\"make\"]}", "steps[0]", "expected an object, got a string");
        expect_error("{\"steps\":[{\"name\":\"x\"}]}", "steps[0]", "expected exactly one of 'run' or 'argv'");
        expect_error("{\"steps\":[{\"run\":\"a\"},{\"run\":\"b\",\"argv\":[\"b\"]}]}", "steps[1].argv",
                     "mutually exclusive");
        expect_error("{\"steps\":[{\"run\":\"\"}]}", "steps[0].run", "must not be empty");
        expect_error("{\"steps\":[{\"argv\":[]}]}", "steps[0].argv", "must not be empty");
        expect_error("{\"steps\":[{\"argv\":[\"\"]}]}", "steps[0].argv[0]", "program name must not be empty");
        expect_error("{\"steps\":[{\"argv\":[\"ls\",1]}]}", "steps[0].argv[1]", "expected a string");
        expect_error("{\"steps\":[{\"name\":\"a\",\"run\":\"x\"},{\"name\":\"b\",\"run\":\"x\"},{\"name\":\"a\",\"run\":\"y\"}]}",
                     "steps[2].name", "duplicate step name 'a' (first used by entry 0)");
        expect_error("{\"steps\":[{\"run\":\"x\"},{\"run\":\"x\"},{\"run\":\"x\",\"timeout\":\"ten\"}]}",
                     "steps[2].timeout", "invalid duration 'ten'");
        expect_error("{\"steps\":[{\"run\":\"x\",\"timeout\":-1}]}", "steps[0].timeout", "non-negative");
        expect_error("{\"steps\":[{\"run\":\"x\",\"timeout\":true}]}", "steps[0].timeout", "expected a duration");
        expect_error("{\"steps\":[{\"run\":\"x\",\"timeout\":\"8d\"}]}", "steps[0].timeout", "at most 7d");
        expect_error("{\"steps\":[{\"run\":\"x\",\"tmeout\":\"8d\"}]}", "steps[0].tmeout",
                     "unknown key 'tmeout' (expected one of: name, run, argv, env, timeout; did you mean 'timeout'?)");

        char buf[300 * 16 + 64];
        size_t l = (size_t) snprintf(buf, sizeof(buf), "{\"steps\":[");
        for (int i = 0; i < 257; i++)
                l += (size_t) snprintf(buf + l, sizeof(buf) - l, "%s{\"run\":\"x\"}", i ? "," : "");
        snprintf(buf + l, sizeof(buf) - l, "]}");
        expect_error(buf, "steps", "too many entries (257, at most 256)");
}

static void test_services(void) {
        expect_error("{" STEPS ",\"services\":[{\"run\":\"x\"}]}", "services[0].name", "a service needs a name");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"-db\",\"run\":\"x\"}]}", "services[0].name",
                     "invalid service name '-db'");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\"}]}", "services[0]", "exactly one of 'run' or 'argv'");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\"},{\"name\":\"db\",\"run\":\"y\"}]}",
                     "services[1].name", "duplicate service name 'db'");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{}}]}",
                     "services[0].health", "missing health check kind (expected exactly one of: command, http, tcp)");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{\"tcp\":\"h:1\",\"http\":\"http://h/\"}}]}",
                     "services[0].health.tcp", "both 'http' and 'tcp'");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{\"tcp\":\"localhost\"}}]}",
                     "services[0].health.tcp", "expected \"HOST:PORT\"");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{\"tcp\":\"h:70000\"}}]}",
                     "services[0].health.tcp", "port from 1 to 65535");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{\"tcp\":\"::1:80\"}}]}",
                     "services[0].health.tcp", "brackets");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{\"http\":\"ftp://h/\"}}]}",
                     "services[0].health.http", "invalid URL 'ftp://h/'");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{\"http\":\"http:///x\"}}]}",
                     "services[0].health.http", "no host");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{\"command\":5}}]}",
                     "services[0].health.command", "a shell command (string) or a list of strings");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{\"command\":\"x\",\"retries\":-1}}]}",
                     "services[0].health.retries", "from 0 to 1000");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":{\"command\":\"x\",\"interval\":\"1y\"}}]}",
                     "services[0].health.interval", "invalid duration '1y'");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"db\",\"run\":\"x\",\"health\":\"x\"}]}",
                     "services[0].health", "expected an object, got a string");
}

static void test_tasks_resources_misc(void) {
        expect_error("{" STEPS ",\"tasks\":[]}", "tasks", "must not be empty");
        expect_error("{" STEPS ",\"tasks\":[1]}", "tasks[0]", "a task name or an object");
        expect_error("{" STEPS ",\"tasks\":[{\"slots\":1}]}", "tasks[0].name", "a task needs a name");
        expect_error("{" STEPS ",\"tasks\":[{\"name\":\"a\",\"slots\":0}]}", "tasks[0].slots", "from 1 to 64");
        expect_error("{" STEPS ",\"tasks\":[{\"name\":\"a\",\"slots\":1.5}]}", "tasks[0].slots", "expected an integer");
        expect_error("{" STEPS ",\"tasks\":[\"a\",{\"name\":\"a\"}]}", "tasks[1].name", "duplicate task name 'a'");
        expect_error("{" STEPS ",\"tasks\":[\"CC=gcc\"],\"matrix\":{\"axes\":{\"CC\":[\"gcc\"]}}}", "matrix",
                     "duplicate task name 'CC=gcc'");
        expect_error("{" STEPS ",\"resources\":{\"memory\":\"lots\"}}", "resources.memory", "invalid size 'lots'");
        expect_error("{" STEPS ",\"resources\":{\"memory\":0}}", "resources.memory", "greater than zero");
        expect_error("{" STEPS ",\"resources\":{\"memory\":-5}}", "resources.memory", "positive number of bytes");
        expect_error("{" STEPS ",\"resources\":{\"disk\":1.5}}", "resources.disk", "expected a size");
        expect_error("{" STEPS ",\"resources\":{\"cpus\":0}}", "resources.cpus", "invalid CPU count");
        expect_error("{" STEPS ",\"resources\":{\"cpus\":\"many\"}}", "resources.cpus", "invalid CPU count");
        expect_error("{" STEPS ",\"resources\":{\"cpus\":2000}}", "resources.cpus", "at most 1024");
        expect_error("{" STEPS ",\"resources\":{\"pids\":0}}", "resources.pids", "from 1 to 4194304");
        expect_error("{" STEPS ",\"resources\":{\"gpu\":1}}", "resources.gpu", "expected one of: cpus, memory, pids, disk");
        expect_error("{" STEPS ",\"retry\":{}}", "retry.max", "missing the number of retries");
        expect_error("{" STEPS ",\"retry\":{\"max\":11}}", "retry.max", "from 0 to 10");
        expect_error("{" STEPS ",\"retry\":{\"max\":1,\"on\":[\"lost\"]}}", "retry.on[0]",
                     "invalid retry condition 'lost' (expected one of: failed, timed_out)");
        expect_error("{" STEPS ",\"retry\":{\"max\":1,\"on\":[\"failed\",\"failed\"]}}", "retry.on[1]", "duplicate");
        expect_error("{" STEPS ",\"artifacts\":[\"/etc/passwd\"]}", "artifacts[0]", "relative to the workspace");
        expect_error("{" STEPS ",\"artifacts\":[\"a/../../x\"]}", "artifacts[0]", "'..'");
        expect_error("{" STEPS ",\"artifacts\":[\"..\"]}", "artifacts[0]", "'..'");
        expect_ok("{" STEPS ",\"artifacts\":[\"a..b/c..\"]}");
        expect_error("{" STEPS ",\"labels\":{\"-x\":\"y\"}}", "labels.-x", "invalid label key");
        expect_error("{" STEPS ",\"labels\":{\"x\":true}}", "labels.x", "expected a string, got a boolean");
        expect_error("{" STEPS ",\"timeout\":\"\"}", "timeout", "invalid duration ''");
}

static void test_matrix_errors(void) {
        expect_error("{" STEPS ",\"matrix\":{}}", "matrix", "empty matrix");
        expect_error("{" STEPS ",\"matrix\":{\"CC\":[\"gcc\"]}}", "matrix.CC",
                     "unknown key 'CC' (expected one of: axes, include, exclude)");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"CC\":[]}}}", "matrix.axes.CC", "must not be empty");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"CC\":\"gcc\"}}}", "matrix.axes.CC", "expected a list of values");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"C-C\":[\"gcc\"]}}}", "matrix.axes.C-C", "invalid axis name");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"CC\":[null]}}}", "matrix.axes.CC[0]",
                     "expected a string, number or boolean, got null");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"CC\":[[1]]}}}", "matrix.axes.CC[0]", "got a list");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"CC\":[\"gcc\"]},\"exclude\":[{\"CXX\":\"g++\"}]}}",
                     "matrix.exclude[0].CXX", "unknown axis 'CXX' (axes are: CC)");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"CC\":[\"gcc\"]},\"include\":[{}]}}",
                     "matrix.include[0]", "must not be empty");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"CC\":[\"gcc\"]},\"include\":[{\"X\":{}}]}}",
                     "matrix.include[0].X", "expected a string, number or boolean");
        /* 17 × 16 = 272 > 256 */
        char buf[4096];
        size_t l = (size_t) snprintf(buf, sizeof(buf), "{" STEPS ",\"matrix\":{\"axes\":{\"A\":[");
        for (int i = 0; i < 17; i++)
                l += (size_t) snprintf(buf + l, sizeof(buf) - l, "%s%d", i ? "," : "", i);
        l += (size_t) snprintf(buf + l, sizeof(buf) - l, "],\"B\":[");
        for (int i = 0; i < 16; i++)
                l += (size_t) snprintf(buf + l, sizeof(buf) - l, "%s%d", i ? "," : "", i);
        snprintf(buf + l, sizeof(buf) - l, "]}}}");
        expect_error(buf, "matrix", "matrix expands to more than 256 tasks");
        /* ...but excluding one row of 16 brings it to exactly 256. */
        snprintf(buf + l, sizeof(buf) - l, "]},\"exclude\":[{\"A\":16}]}}");
        expect_ok(buf);
        /* 256^3 combinations are refused before enumeration (at most 4096). */
        l = (size_t) snprintf(buf, sizeof(buf), "{" STEPS ",\"matrix\":{\"axes\":{");
        for (int a = 0; a < 3; a++) {
                l += (size_t) snprintf(buf + l, sizeof(buf) - l, "%s\"A%d\":[", a ? "," : "", a);
                for (int i = 0; i < 256; i++)
                        l += (size_t) snprintf(buf + l, sizeof(buf) - l, "%s%d", i ? "," : "", i);
                l += (size_t) snprintf(buf + l, sizeof(buf) - l, "]");
        }
        snprintf(buf + l, sizeof(buf) - l, "}}}");
        expect_error(buf, "matrix", "more than 4096 combinations");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"A\":[1,2]},\"exclude\":[{\"A\":1},{\"A\":\"2\"}]}}", "matrix",
                     "'exclude' removed them all");
        expect_ok("{" STEPS ",\"matrix\":{\"axes\":{\"A\":[1,2]},\"exclude\":[{\"A\":1},{\"A\":2}],\"include\":[{\"A\":3}]}}");
        /* Explicit tasks count too. */
        expect_error("{" STEPS ",\"tasks\":[\"t\"],\"matrix\":{\"axes\":{\"A\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16],"
                     "\"B\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}}}",
                     "matrix", "more than 256");
}

/* Expands a valid spec and returns the task list as compact JSON. */
static char *expand(const char *text) {
        json_auto_t *v = load(text), *tasks = NULL;
        JobSpecError err = {};
        if (jobspec_validate(v, &err) < 0) {
                fprintf(stderr, "invalid: %s: %s: %s\n", text, err.path, err.message);
                exit(1);
        }
        CHECK_EQ_INT(jobspec_expand_tasks(v, &tasks, &err), 0);
        return json_dumps(tasks, JSON_COMPACT);
}

static char *names(const char *text) {
        json_auto_t *v = load(text), *tasks = NULL;
        JobSpecError err = {};
        char buf[8192] = "";
        size_t l = 0, i;
        json_t *t;

        if (jobspec_validate(v, &err) < 0) {
                fprintf(stderr, "invalid: %s: %s: %s\n", text, err.path, err.message);
                exit(1);
        }
        CHECK_EQ_INT(jobspec_expand_tasks(v, &tasks, &err), 0);
        json_array_foreach(tasks, i, t)
                l += (size_t) snprintf(buf + l, sizeof(buf) - l, "%s%s", i ? " | " : "",
                                       json_string_value(json_object_get(t, "name")));
        return strdup(buf);
}

static void test_expand(void) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL, *f = NULL, *g = NULL;

        a = expand("{" STEPS ",\"env\":{\"A\":\"1\"}}");
        CHECK_STREQ(a, "[{\"name\":\"default\",\"slots\":1,\"env\":{\"A\":\"1\"}}]");

        /* job < task env */
        b = expand("{" STEPS ",\"env\":{\"A\":\"1\",\"B\":\"1\"},\"tasks\":[\"x\",{\"name\":\"y\",\"slots\":4,\"env\":{\"B\":\"2\"}}]}");
        CHECK_STREQ(b, "[{\"name\":\"x\",\"slots\":1,\"env\":{\"A\":\"1\",\"B\":\"1\"}},"
                       "{\"name\":\"y\",\"slots\":4,\"env\":{\"A\":\"1\",\"B\":\"2\"}}]");

        /* product in key order, first axis slowest; job < axis; scalars as strings */
        c = expand("{" STEPS ",\"env\":{\"CC\":\"cc\",\"Z\":\"z\"},\"matrix\":{\"axes\":{\"CC\":[\"gcc\",\"clang\"],\"OPT\":[2,true,1.5]}}}");
        CHECK_STREQ(c, "[{\"name\":\"CC=gcc,OPT=2\",\"slots\":1,\"env\":{\"CC\":\"gcc\",\"Z\":\"z\",\"OPT\":\"2\"}},"
                       "{\"name\":\"CC=gcc,OPT=true\",\"slots\":1,\"env\":{\"CC\":\"gcc\",\"Z\":\"z\",\"OPT\":\"true\"}},"
                       "{\"name\":\"CC=gcc,OPT=1.5\",\"slots\":1,\"env\":{\"CC\":\"gcc\",\"Z\":\"z\",\"OPT\":\"1.5\"}},"
                       "{\"name\":\"CC=clang,OPT=2\",\"slots\":1,\"env\":{\"CC\":\"clang\",\"Z\":\"z\",\"OPT\":\"2\"}},"
                       "{\"name\":\"CC=clang,OPT=true\",\"slots\":1,\"env\":{\"CC\":\"clang\",\"Z\":\"z\",\"OPT\":\"true\"}},"
                       "{\"name\":\"CC=clang,OPT=1.5\",\"slots\":1,\"env\":{\"CC\":\"clang\",\"Z\":\"z\",\"OPT\":\"1.5\"}}]");

        /* exclude: an entry matches when all its keys match; numbers match their string form */
        d = names("{" STEPS ",\"matrix\":{\"axes\":{\"CC\":[\"gcc\",\"clang\"],\"OPT\":[\"1\",\"2\"]},"
                  "\"exclude\":[{\"CC\":\"clang\",\"OPT\":1},{\"OPT\":\"3\"}]}}");
        CHECK_STREQ(d, "CC=gcc,OPT=1 | CC=gcc,OPT=2 | CC=clang,OPT=2");

        /* GitHub Actions' documented include example. */
        e = names("{" STEPS ",\"matrix\":{\"axes\":{\"fruit\":[\"apple\",\"pear\"],\"animal\":[\"cat\",\"dog\"]},"
                  "\"include\":[{\"color\":\"green\"},{\"color\":\"pink\",\"animal\":\"cat\"},"
                  "{\"fruit\":\"apple\",\"shape\":\"circle\"},{\"fruit\":\"banana\"},"
                  "{\"fruit\":\"banana\",\"animal\":\"cat\"}]}}");
        CHECK_STREQ(e, "fruit=apple,animal=cat,color=pink,shape=circle | "
                       "fruit=apple,animal=dog,color=green,shape=circle | "
                       "fruit=pear,animal=cat,color=pink | fruit=pear,animal=dog,color=green | "
                       "fruit=banana | fruit=banana,animal=cat");

        /* include only; explicit tasks come first */
        f = names("{" STEPS ",\"tasks\":[\"lint\"],\"matrix\":{\"include\":[{\"OS\":\"a\"},{\"OS\":\"b\",\"X\":1}]}}");
        CHECK_STREQ(f, "lint | OS=a | OS=b,X=1");

        /* an include can only add to combinations an exclude left */
        g = names("{" STEPS ",\"matrix\":{\"axes\":{\"A\":[1,2]},\"exclude\":[{\"A\":2}],\"include\":[{\"A\":2,\"B\":3}]}}");
        CHECK_STREQ(g, "A=1 | A=2,B=3");
}

static void test_readers(void) {
        json_auto_t *s = json_string("1h30m"), *n = json_real(0.5), *i = json_integer(3), *neg = json_integer(-1),
                    *bad = json_true();
        uint64_t v;

        CHECK_EQ_INT(jobspec_parse_duration(s, &v), 0);
        CHECK_EQ_INT(v, 5400ULL * 1000000);
        CHECK_EQ_INT(jobspec_parse_duration(n, &v), 0);
        CHECK_EQ_INT(v, 500000);
        CHECK_EQ_INT(jobspec_parse_duration(i, &v), 0);
        CHECK_EQ_INT(v, 3000000);
        CHECK_EQ_INT(jobspec_parse_duration(neg, &v), -ERANGE);
        CHECK_EQ_INT(jobspec_parse_duration(bad, &v), -EINVAL);
        CHECK_EQ_INT(jobspec_parse_size(i, &v), 0);
        CHECK_EQ_INT(v, 3);
        CHECK_EQ_INT(jobspec_parse_size(neg, &v), -ERANGE);
        CHECK_EQ_INT(jobspec_parse_size(n, &v), -EINVAL);
        CHECK_EQ_INT(jobspec_parse_cpus(n, &v), 0);
        CHECK_EQ_INT(v, 500);
        CHECK_EQ_INT(jobspec_parse_cpus(neg, &v), -ERANGE);
}


/* Replaces every value in a valid spec, one at a time, by values of every
 * type: the validator must answer each with 0 or an error whose path is
 * the replaced field or lies inside it. */
static void sweep(json_t *root, json_t *node, const char *path) {
        json_t *wrong[] = { json_null(), json_integer(-1), json_real(1e300), json_string(""), json_string("x=y"),
                            json_array(), json_object(), json_true(), json_pack("[i]", 1),
                            json_pack("{s:s}", "A", "b") };
        json_t *child;
        const char *key;
        size_t i;

        if (json_is_object(node)) {
                json_object_foreach(node, key, child) {
                        char p[256];
                        snprintf(p, sizeof(p), "%s%s%s", path, *path ? "." : "", key);
                        json_incref(child);
                        for (size_t w = 0; w < ELEMENTSOF(wrong); w++) {
                                JobSpecError err = {};
                                json_object_set(node, key, wrong[w]);
                                if (jobspec_validate(root, &err) < 0) {
                                        CHECK(err.message[0]);
                                        if (!strneq(err.path, p, strlen(p)) && !strneq(p, err.path, strlen(err.path)) &&
                                            !strneq(err.path, "matrix", 6)) {
                                                fprintf(stderr, "replacing %s: error at unrelated %s: %s\n", p,
                                                        err.path, err.message);
                                                exit(1);
                                        }
                                }
                        }
                        json_object_set(node, key, child);
                        sweep(root, child, p);
                        json_decref(child);
                }
        } else if (json_is_array(node)) {
                json_array_foreach(node, i, child) {
                        char p[256];
                        snprintf(p, sizeof(p), "%s[%zu]", path, i);
                        json_incref(child);
                        for (size_t w = 0; w < ELEMENTSOF(wrong); w++) {
                                JobSpecError err = {};
                                json_array_set(node, i, wrong[w]);
                                if (jobspec_validate(root, &err) < 0)
                                        CHECK(err.message[0]);
                        }
                        json_array_set(node, i, child);
                        sweep(root, child, p);
                        json_decref(child);
                }
        }
        for (size_t w = 0; w < ELEMENTSOF(wrong); w++)
                json_decref(wrong[w]);
}

static void test_sweep(void) {
        json_auto_t *v = load("{\"name\":\"n\",\"image\":\"host\",\"env\":{\"A\":\"1\"},\"secrets\":[\"S\"],"
                              "\"services\":[{\"name\":\"db\",\"argv\":[\"pg\"],\"env\":{\"B\":\"2\"},"
                              "\"health\":{\"tcp\":\"h:1\",\"interval\":1,\"timeout\":\"1s\",\"retries\":3}}],"
                              "\"steps\":[{\"name\":\"a\",\"run\":\"x\",\"env\":{\"C\":\"3\"},\"timeout\":\"1m\"},{\"argv\":[\"ls\"]}],"
                              "\"tasks\":[\"t\",{\"name\":\"u\",\"slots\":2,\"env\":{\"D\":\"4\"}}],"
                              "\"matrix\":{\"axes\":{\"CC\":[\"gcc\",1]},\"include\":[{\"CC\":\"gcc\",\"X\":true}],"
                              "\"exclude\":[{\"CC\":1}]},\"artifacts\":[\"a\"],\"timeout\":60,"
                              "\"retry\":{\"max\":1,\"on\":[\"failed\"]},"
                              "\"resources\":{\"cpus\":1,\"memory\":\"1G\",\"pids\":10,\"disk\":1024},"
                              "\"labels\":{\"k\":\"v\"},"
                              "\"workspace\":\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}");
        JobSpecError err = {};
        CHECK_EQ_INT(jobspec_validate(v, &err), 0);
        sweep(v, v, "");
        CHECK_EQ_INT(jobspec_validate(v, &err), 0);
        CHECK_EQ_INT(jobspec_validate(NULL, &err), -EINVAL);
}


/* Builds {"steps":[{"run":"x"}], prefix item,item,… suffix} with n items,
 * each the template with '#' replaced by the item's index. */
static char *build_list(const char *prefix, const char *item, int n, const char *suffix) {
        size_t size = strlen(prefix) + strlen(suffix) + (size_t) n * (strlen(item) * 4 + 8) + 64, l;
        char *buf = malloc(size);
        CHECK(buf);
        l = (size_t) snprintf(buf, size, "{" STEPS ",%s", prefix);
        for (int i = 0; i < n; i++) {
                if (i)
                        buf[l++] = ',';
                for (const char *t = item; *t; t++)
                        if (*t == '#')
                                l += (size_t) snprintf(buf + l, size - l, "%d", i);
                        else
                                buf[l++] = *t;
        }
        snprintf(buf + l, size - l, "%s}", suffix);
        return buf;
}

static void test_limits(void) {
        _cleanup_free_ char *argv = build_list("\"services\":[{\"name\":\"s\",\"argv\":[", "\"a#\"", 1025, "]}]");
        expect_error(argv, "services[0].argv", "too many entries (1025, at most 1024)");
        _cleanup_free_ char *tasks = build_list("\"tasks\":[", "\"t#\"", 257, "]");
        expect_error(tasks, "tasks", "too many entries (257, at most 256)");
        _cleanup_free_ char *tasks_ok = build_list("\"tasks\":[", "\"t#\"", 256, "]");
        expect_ok(tasks_ok);
        _cleanup_free_ char *axes = build_list("\"matrix\":{\"axes\":{", "\"A#\":[1]", 17, "}}");
        expect_error(axes, "matrix.axes", "too many axes (17, at most 16)");
        _cleanup_free_ char *values = build_list("\"matrix\":{\"axes\":{\"A\":[", "\"v#\"", 257, "]}}");
        expect_error(values, "matrix.axes.A", "too many entries (257, at most 256)");
        _cleanup_free_ char *inc_keys = build_list("\"matrix\":{\"include\":[{", "\"K#\":1", 17, "}]}");
        expect_error(inc_keys, "matrix.include[0]", "too many variables (17, at most 16)");
        _cleanup_free_ char *inc = build_list("\"matrix\":{\"include\":[", "{\"I\":\"#\"}", 257, "]}");
        expect_error(inc, "matrix.include", "too many entries (257, at most 256)");
        /* 200 combinations and 57 new include entries: the include that
         * crosses 256 is named. */
        _cleanup_free_ char *cross = build_list("\"matrix\":{\"axes\":{\"A\":[1,2,3,4,5,6,7,8,9,10],\"B\":[1,2,3,4,5,6,7,8,9,10,"
                                                "11,12,13,14,15,16,17,18,19,20]},\"include\":[",
                                                "{\"A\":\"x#\",\"C\":#}", 57, "]}");
        expect_error(cross, "matrix.include[56]", "matrix expands to more than 256 tasks");
        _cleanup_free_ char *labels = build_list("\"labels\":{", "\"l#\":\"v\"", 33, "}");
        expect_error(labels, "labels", "too many labels (33, at most 32)");
        _cleanup_free_ char *secrets = build_list("\"secrets\":[", "\"S#\"", 65, "]");
        expect_error(secrets, "secrets", "too many entries (65, at most 64)");
        _cleanup_free_ char *services = build_list("\"services\":[", "{\"name\":\"s#\",\"run\":\"x\"}", 17, "]");
        expect_error(services, "services", "too many entries (17, at most 16)");
        _cleanup_free_ char *artifacts = build_list("\"artifacts\":[", "\"a#\"", 65, "]");
        expect_error(artifacts, "artifacts", "too many entries (65, at most 64)");

        char big[70 * 1024];
        size_t l = (size_t) snprintf(big, sizeof(big), "{\"steps\":[{\"run\":\"");
        memset(big + l, 'x', 65 * 1024);
        l += 65 * 1024;
        snprintf(big + l, sizeof(big) - l, "\"}]}");
        expect_error(big, "steps[0].run", "too long (66560 bytes, at most 65536)");
        l = (size_t) snprintf(big, sizeof(big), "{" STEPS ",\"name\":\"");
        memset(big + l, 'n', 129);
        l += 129;
        snprintf(big + l, sizeof(big) - l, "\"}");
        expect_error(big, "name", "too long (129 bytes, at most 128)");
        l = (size_t) snprintf(big, sizeof(big), "{" STEPS ",\"labels\":{\"");
        memset(big + l, 'k', 64);
        l += 64;
        snprintf(big + l, sizeof(big) - l, "\":\"v\"}}");
        expect_error(big, "labels.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "at most 63 bytes");
        /* Generated names are bounded too: 16 axes of 100-byte values. */
        l = (size_t) snprintf(big, sizeof(big), "{" STEPS ",\"matrix\":{\"axes\":{");
        for (int a = 0; a < 16; a++) {
                l += (size_t) snprintf(big + l, sizeof(big) - l, "%s\"A%d\":[\"", a ? "," : "", a);
                memset(big + l, 'v', 100);
                l += 100;
                l += (size_t) snprintf(big + l, sizeof(big) - l, "\"]");
        }
        snprintf(big + l, sizeof(big) - l, "}}}");
        expect_error(big, "matrix", "name is longer than 1024 bytes");

        expect_error("{" STEPS ",\"timeout\":700000}", "timeout", "at most 7d");
        expect_error("{" STEPS ",\"timeout\":\"1111111111111111111111111111111111111111111111111111111111111111111s\"}",
                     "timeout", "invalid duration (too long)");
        expect_error("{" STEPS ",\"resources\":{\"memory\":\"1111111111111111111111111111111111111111111111111111111111111111111\"}}",
                     "resources.memory", "invalid size (too long)");
        expect_error("{" STEPS ",\"retry\":{\"max\":1,\"on\":[]}}", "retry.on", "must not be empty");
        expect_error("{" STEPS ",\"services\":[{\"name\":\"w\",\"run\":\"x\",\"health\":{\"http\":\"http://a b/\"}}]}",
                     "services[0].health.http", "must not contain spaces");
        expect_error("{" STEPS ",\"tasks\":[{\"name\":\"a\",\"env\":{\"B-C\":\"x\"}}]}", "tasks[0].env.B-C",
                     "invalid environment variable name");
        expect_error("{" STEPS ",\"matrix\":{\"axes\":{\"A\":[\"a\\nb\"]}}}", "matrix.axes.A[0]", "control characters");
}

int main(void) {
        test_minimal_and_full();
        test_top_level();
        test_env_and_secrets();
        test_steps();
        test_services();
        test_tasks_resources_misc();
        test_matrix_errors();
        test_expand();
        test_readers();
        test_sweep();
        test_limits();
        printf("ok\n");
        return 0;
}
