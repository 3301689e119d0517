/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>

#include "jobfile.h"
#include "macro.h"
#include "test.h"

static JobFile *parse_ok(const char *yaml) {
        JobFile *f = NULL;
        JobFileError err = {};
        int r = jobfile_parse(yaml, strlen(yaml), &f, &err);
        if (r < 0) {
                fprintf(stderr, "parse failed: %d %u:%u: %s: %s\n--\n%s\n", r, err.line, err.column, err.path,
                        err.message, yaml);
                exit(1);
        }
        return f;
}

/* The spec as compact JSON with sorted keys. */
static char *parse_json(const char *yaml) {
        _cleanup_(jobfile_freep) JobFile *f = parse_ok(yaml);
        return json_dumps(jobfile_spec(f), JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

static void expect_json(const char *yaml, const char *json) {
        _cleanup_free_ char *s = parse_json(yaml);
        if (!streq(s, json)) {
                fprintf(stderr, "yaml:\n%s\n  got      %s\n  expected %s\n", yaml, s, json);
                exit(1);
        }
}

/* Parses and validates; expects an error at line:column with path and a
 * message containing fragment. */
static void expect_error(int expected_r, const char *yaml, unsigned line, unsigned column, const char *path,
                         const char *fragment) {
        _cleanup_(jobfile_freep) JobFile *f = NULL;
        JobFileError err = {};
        int r = jobfile_parse(yaml, strlen(yaml), &f, &err);
        if (r >= 0)
                r = jobfile_validate(f, &err);
        if (r != expected_r || err.line != line || err.column != column || !streq(err.path, path) ||
            !strstr(err.message, fragment)) {
                fprintf(stderr, "yaml:\n%s\n  expected %d at %u:%u '%s' with '%s'\n  got      %d at %u:%u '%s': %s\n",
                        yaml, expected_r, line, column, path, fragment, r, err.line, err.column, err.path,
                        err.message);
                exit(1);
        }
}

static void test_scalars(void) {
        expect_json("steps: [x]\n"
                    "labels: {a: 1}\n"
                    "timeout: 90\n"
                    "x: [1, -2, +3, 0x1F, 0o17, 1.5, -.5, 1e3, 2.E-1, true, False, null, ~, '', \"1\", '1', "
                    "1_000, 0b1, yes, no, on, 01, 1.2.3, .inf-ish, \"true\", TRUE, Null, 12:30]\n",
                    "{\"labels\":{\"a\":\"1\"},\"steps\":[{\"run\":\"x\"}],\"timeout\":90,"
                    "\"x\":[1,-2,3,31,15,1.5,-0.5,1000.0,0.20000000000000001,true,false,null,null,\"\",\"1\",\"1\","
                    "\"1_000\",\"0b1\",\"yes\",\"no\",\"on\",1,\"1.2.3\",\".inf-ish\",\"true\",true,null,\"12:30\"]}");
        /* Where kiln expects a string, plain scalars keep their text. */
        expect_json("name: 1.0\n"
                    "env: {PY: 3.10, DEBUG: true, N: 010, E: ~}\n"
                    "steps: [true, {run: 42, argv: [ls, 1, 0x10]}]\n"
                    "tasks: [1, {name: 2, slots: 3}]\n"
                    "matrix: {PY: [3.10, 3.9], include: [{PY: 3.12, X: 1}]}\n",
                    "{\"env\":{\"DEBUG\":\"true\",\"E\":null,\"N\":\"010\",\"PY\":\"3.10\"},"
                    "\"matrix\":{\"axes\":{\"PY\":[\"3.10\",\"3.9\"]},\"include\":[{\"PY\":\"3.12\",\"X\":\"1\"}]},"
                    "\"name\":\"1.0\",\"steps\":[{\"run\":\"true\"},{\"argv\":[\"ls\",\"1\",\"0x10\"],\"run\":\"42\"}],"
                    "\"tasks\":[\"1\",{\"name\":\"2\",\"slots\":3}]}");
        expect_json("a: !!str 12\nb: ! 12\nc: |\n  line1\n  line2\n", "{\"a\":\"12\",\"b\":\"12\",\"c\":\"line1\\nline2\\n\"}");
        expect_error(-EINVAL, "a: !!int 12\n", 1, 4, "a", "unsupported tag 'tag:yaml.org,2002:int'");
        expect_error(-EINVAL, "a: 99999999999999999999\n", 1, 1, "a", "integer '99999999999999999999' out of range");
        expect_error(-EINVAL, "a: [1, .inf]\n", 1, 8, "a[1]", "infinite and NaN");
        expect_error(-EINVAL, "a: \"x\\0y\"\n", 1, 4, "a", "NUL characters");
}

static void test_conveniences(void) {
        expect_json("steps:\n  - make\n  - name: t\n    run: make check\n"
                    "services:\n  - name: db\n    run: x\n    health: pg_isready\n"
                    "  - name: web\n    run: y\n    health: {http: 'http://127.0.0.1:8000/'}\n",
                    "{\"services\":[{\"health\":{\"command\":\"pg_isready\"},\"name\":\"db\",\"run\":\"x\"},"
                    "{\"health\":{\"http\":\"http://127.0.0.1:8000/\"},\"name\":\"web\",\"run\":\"y\"}],"
                    "\"steps\":[{\"run\":\"make\"},{\"name\":\"t\",\"run\":\"make check\"}]}");
        /* The JSON form of the matrix is accepted as is. */
        expect_json("steps: [x]\nmatrix:\n  axes: {CC: [gcc]}\n  exclude: [{CC: gcc}]\n",
                    "{\"matrix\":{\"axes\":{\"CC\":[\"gcc\"]},\"exclude\":[{\"CC\":\"gcc\"}]},\"steps\":[{\"run\":\"x\"}]}");
        /* Positions follow the rewrite: matrix.CC becomes matrix.axes.CC. */
        expect_error(-EINVAL, "steps: [x]\nmatrix:\n  CC: []\n", 3, 3, "matrix.axes.CC", "must not be empty");
        expect_error(-EINVAL, "steps: [x]\nmatrix:\n  CC: [gcc]\n  OPT:\n    - 1\n    - [2]\n", 6, 7,
                     "matrix.axes.OPT[1]", "expected a string, number or boolean");
        expect_error(-EINVAL, "steps: [x]\nmatrix:\n  CC: [gcc]\n  exclude:\n    - CXX: g++\n", 5, 7,
                     "matrix.exclude[0].CXX", "unknown axis 'CXX' (axes are: CC)");
        expect_error(-EINVAL, "steps:\n  - make\n  - ''\n", 3, 5, "steps[1].run", "must not be empty");
        expect_error(-EINVAL, "steps: [x]\nservices:\n  - name: db\n    run: x\n    health: ''\n", 5, 5,
                     "services[0].health.command", "must not be empty");
}

static void test_positions(void) {
        expect_error(-EINVAL, "name: build\nsteps:\n  - run: a\n  - run: b\n  - run: c\n    timeout: soon\n", 6, 5,
                     "steps[2].timeout", "invalid duration 'soon'");
        expect_error(-EINVAL, "steps: [x]\ntiemout: 10m\n", 2, 1, "tiemout", "unknown key 'tiemout' (expected one of:");
        expect_error(-EINVAL, "name: x\n", 1, 1, "steps", "a job needs at least one step");
        expect_error(-EINVAL, "# comment\n\nsteps: []\n", 3, 1, "steps", "must not be empty");
        expect_error(-EINVAL, "steps:\n  - {name: a, run: x}\n  - {name: a, run: y}\n", 3, 6, "steps[1].name",
                     "duplicate step name 'a'");
        expect_error(-EINVAL, "- a\n- b\n", 1, 1, "", "expected a job spec (an object), got a list");
        expect_error(-EINVAL, "steps: [x]\nresources:\n  memory: 2 GB\n", 3, 3, "resources.memory", "invalid size '2 GB'");
}

static void test_yaml_errors(void) {
        expect_error(-EINVAL, "steps: [x\nname: y\n", 2, 5, "", "YAML syntax error");
        expect_error(-EINVAL, "steps:\n  - x\n bad: 1\n", 3, 2, "", "YAML syntax error");
        expect_error(-EINVAL, "steps: [x]\nname: a\nname: b\n", 3, 1, "name", "duplicate key 'name' (first defined at line 2)");
        expect_error(-EINVAL, "steps:\n  - run: x\n    env: {A: 1, A: 2}\n", 3, 17, "steps[0].env.A", "duplicate key 'A'");
        expect_error(-EINVAL, "", 1, 1, "", "empty jobfile");
        expect_error(-EINVAL, "steps: [x]\n---\nsteps: [y]\n", 2, 1, "", "one YAML document");
        expect_error(-EINVAL, "? [a]\n: b\n", 1, 3, "", "mapping keys must be strings");
        expect_error(-EINVAL, "a: *nope\n", 1, 4, "a", "unknown alias '*nope'");
        expect_error(-EINVAL, "x: &k a\n*k : b\n", 2, 1, "", "aliases are not allowed as mapping keys");
        {
                char key[400];
                memset(key, 'k', 300);
                snprintf(key + 300, sizeof(key) - 300, ": 1\n");
                expect_error(-EINVAL, key, 1, 1, "", "key too long (300 bytes, at most 256)");
        }
        expect_error(-EINVAL, "a: \"\xff\"\n", 1, 1, "", "invalid leading UTF-8 octet");
        /* An anchor cannot be used inside itself: no cycles. */
        expect_error(-EINVAL, "a: &x [*x]\n", 1, 8, "a[0]", "unknown alias '*x'");
}

static void test_aliases(void) {
        expect_json("defaults: &env {CC: gcc, N: 1}\nsteps:\n  - run: make\n    env: *env\n",
                    "{\"defaults\":{\"CC\":\"gcc\",\"N\":1},\"steps\":[{\"env\":{\"CC\":\"gcc\",\"N\":\"1\"},\"run\":\"make\"}]}");
        /* Top-level x- keys only hold anchors. */
        expect_json("x-env: &e {A: b}\nsteps: [{run: x, env: *e}]\n", "{\"steps\":[{\"env\":{\"A\":\"b\"},\"run\":\"x\"}]}");
        /* Scalars resolve where an alias puts them, not where the anchor is. */
        expect_json("defs: &d {PY: 3.10, N: 1}\nenv: *d\nsteps: [{run: x, env: *d}]\n",
                    "{\"defs\":{\"N\":1,\"PY\":3.1000000000000001},\"env\":{\"N\":\"1\",\"PY\":\"3.10\"},"
                    "\"steps\":[{\"env\":{\"N\":\"1\",\"PY\":\"3.10\"},\"run\":\"x\"}]}");
        /* Merge keys: explicit keys win wherever they are; earlier sources win. */
        expect_json("x-a: &a {A: 1, B: 1}\nx-b: &b {B: 2, C: 2}\n"
                    "env:\n  A: 0\n  <<: [*a, *b]\n  D: 3\nsteps: [x]\n",
                    "{\"env\":{\"A\":\"0\",\"B\":\"1\",\"C\":\"2\",\"D\":\"3\"},\"steps\":[{\"run\":\"x\"}]}");
        expect_json("x-s: &s {timeout: 10m}\nsteps:\n  - <<: *s\n    run: make\n",
                    "{\"steps\":[{\"run\":\"make\",\"timeout\":\"10m\"}]}");
        /* A quoted "<<" is an ordinary key. */
        expect_json("'<<': {a: 1}\n", "{\"<<\":{\"a\":1}}");
        expect_error(-EINVAL, "x-s: &s {tmeout: 10m}\nsteps:\n  - <<: *s\n    run: make\n", 3, 5, "steps[0].tmeout",
                     "unknown key 'tmeout'");
        expect_error(-EINVAL, "steps:\n  - <<: [a]\n", 2, 5, "steps[0]", "merge key '<<' takes a mapping");
        expect_error(-EINVAL, "steps:\n  - <<: {a: 1}\n    <<: {b: 1}\n", 3, 5, "steps[0]", "duplicate merge key");
        /* A later anchor of the same name wins. */
        expect_json("a: &x 1\nb: &x 2\nc: *x\n", "{\"a\":1,\"b\":2,\"c\":2}");

        /* Billion laughs: 10 levels of 10 aliases = 10^10 nodes. */
        char buf[4096];
        size_t l = (size_t) snprintf(buf, sizeof(buf), "l0: &l0 [lol]\n");
        for (int i = 1; i < 10; i++)
                l += (size_t) snprintf(buf + l, sizeof(buf) - l, "l%d: &l%d [*l%d,*l%d,*l%d,*l%d,*l%d,*l%d,*l%d,*l%d,*l%d,*l%d]\n",
                                       i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
        expect_error(-E2BIG, buf, 6, 22, "l5[3]", "expands to more than 100000 nodes");

        /* Depth: 65 nested flow sequences, and 40 levels twice via an alias. */
        l = 0;
        l += (size_t) snprintf(buf + l, sizeof(buf) - l, "a: ");
        for (int i = 0; i < 65; i++)
                buf[l++] = '[';
        for (int i = 0; i < 65; i++)
                buf[l++] = ']';
        buf[l] = 0;
        _cleanup_(jobfile_freep) JobFile *f = NULL;
        JobFileError err = {};
        CHECK_EQ_INT(jobfile_parse(buf, l, &f, &err), -EINVAL);
        CHECK(strstr(err.message, "nested too deeply (at most 64 levels)"));
        CHECK_EQ_INT(err.line, 1);

        l = (size_t) snprintf(buf, sizeof(buf), "a: &deep ");
        for (int i = 0; i < 40; i++)
                buf[l++] = '[';
        for (int i = 0; i < 40; i++)
                buf[l++] = ']';
        l += (size_t) snprintf(buf + l, sizeof(buf) - l, "\nb: [[[[[[[[[[[[[[[[[[[[[[[[[[*deep]]]]]]]]]]]]]]]]]]]]]]]]]\n");
        expect_error(-EINVAL, buf, 2, 30, "b[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]",
                     "nested too deeply through alias '*deep'");
}


static const char rich[] =
        "x-env: &env {CC: gcc, CFLAGS: -O2}\n"
        "name: sweep\n"
        "image: host\n"
        "env: *env\n"
        "secrets: [TOKEN]\n"
        "services:\n"
        "  - name: db\n"
        "    argv: [postgres, -D, /tmp]\n"
        "    health: {tcp: '127.0.0.1:5432', interval: 1s, retries: 3}\n"
        "  - {name: web, run: \"python3 -m http.server\", health: pg_isready}\n"
        "steps:\n"
        "  - make\n"
        "  - name: test\n"
        "    run: |\n"
        "      make check\n"
        "    timeout: 1h30m\n"
        "    env: {V: 1}\n"
        "tasks: [lint, {name: big, slots: 2}]\n"
        "matrix:\n"
        "  CC: [gcc, clang]\n"
        "  exclude: [{CC: clang}]\n"
        "  include: [{CC: tcc, X: 1}]\n"
        "artifacts: ['out/*']\n"
        "retry: {max: 1, on: [failed]}\n"
        "resources: {cpus: 0.5, memory: 1G, pids: 64, disk: 1G}\n"
        "labels: {os: linux}\n";

/* Parses and validates; any outcome is fine but a crash, a sanitizer report
 * or an error without a position. */
static void parse_any(const char *text, size_t size) {
        _cleanup_(jobfile_freep) JobFile *f = NULL;
        JobFileError err = {};
        int r = jobfile_parse(text, size, &f, &err);
        if (r >= 0)
                r = jobfile_validate(f, &err);
        if (r < 0) {
                CHECK(r == -EINVAL || r == -E2BIG);
                CHECK(err.line >= 1 && err.column >= 1);
                CHECK(err.message[0]);
        }
}

static void test_sweep(void) {
        char buf[sizeof(rich)];
        uint32_t seed = 12345;

        parse_any(rich, strlen(rich));
        {
                _cleanup_(jobfile_freep) JobFile *f = parse_ok(rich);
                JobFileError err = {};
                CHECK_EQ_INT(jobfile_validate(f, &err), 0);
        }
        /* Every truncation. */
        for (size_t n = 0; n < strlen(rich); n++)
                parse_any(rich, n);
        /* Deterministic single- and multi-byte mutations. */
        for (int i = 0; i < 3000; i++) {
                memcpy(buf, rich, sizeof(buf));
                for (int k = 0; k < 1 + i % 4; k++) {
                        seed = seed * 1103515245U + 12345U;
                        size_t at = (seed >> 8) % (sizeof(rich) - 1);
                        static const char alphabet[] = "-:[]{}&*!|>'\"#,? \n\t0a.~%@`";
                        seed = seed * 1103515245U + 12345U;
                        buf[at] = alphabet[(seed >> 8) % (sizeof(alphabet) - 1)];
                }
                parse_any(buf, strlen(rich));
        }
}

static void test_load(void) {
        char dir[] = "/tmp/test-jobfile-XXXXXX", path[64];
        _cleanup_(jobfile_freep) JobFile *f = NULL;
        JobFileError err = {};
        FILE *fp;

        CHECK(mkdtemp(dir));
        CHECK_EQ_INT(jobfile_load(dir, &f, &err), -EISDIR);
        snprintf(path, sizeof(path), "%s/kiln.yml", dir);
        CHECK_EQ_INT(jobfile_load(path, &f, &err), -ENOENT);
        CHECK(strstr(err.message, "cannot read jobfile"));

        fp = fopen(path, "w");
        CHECK(fp);
        fputs("steps:\n  - make\n", fp);
        fclose(fp);
        CHECK_EQ_INT(jobfile_load(path, &f, &err), 0);
        CHECK_STREQ(json_string_value(json_object_get(json_array_get(json_object_get(jobfile_spec(f), "steps"), 0), "run")),
                    "make");

        fp = fopen(path, "w");
        CHECK(fp);
        fputs("steps:\n  - make\n", fp);
        for (size_t i = 0; i < JOBFILE_MAX_SIZE / 16; i++)
                fputs("# padding .....\n", fp);
        fclose(fp);
        f = jobfile_free(f);
        CHECK_EQ_INT(jobfile_load(path, &f, &err), -E2BIG);
        CHECK(strstr(err.message, "jobfile too large"));
        CHECK(!f);
        unlink(path);
        rmdir(dir);
}

int main(void) {
        test_scalars();
        test_conveniences();
        test_positions();
        test_yaml_errors();
        test_aliases();
        test_sweep();
        test_load();
        printf("ok\n");
        return 0;
}
