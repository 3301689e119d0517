/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "fd-util.h"
#include "jobfile.h"
#include "jobspec.h"

#define MAX_KEY 256
#define PATH_MAX_LEN (sizeof(((JobFileError *) NULL)->path))

typedef struct Mark {
        unsigned line, column; /* 1-based */
} Mark;

struct JobFile {
        json_t *spec;
        /* JSON path → position, packed as line << 32 | column: a hash
         * table, as a document may have 100,000 paths. */
        json_t *marks;
};

/* Which plain scalars keep their text: where kiln expects a string, "3.10"
 * or "true" must not turn into a number or a boolean on the way. */
typedef enum Context {
        CTX_NONE,   /* resolve by the core schema */
        CTX_STRING, /* a string field */
        CTX_ITEMS,  /* a string field or a list of strings */
        CTX_VALUES, /* a mapping whose values are strings (env, labels) */
        CTX_ALL,    /* every scalar below is a string (matrix) */
} Context;

typedef struct Anchor {
        char *name;
        json_t *value;
        size_t nodes;    /* nodes the value expands to */
        unsigned height; /* levels below the anchored node */
} Anchor;

typedef struct Loader {
        yaml_parser_t parser;
        JobFile *file;
        JobFileError *err;
        Anchor *anchors;
        size_t n_anchors;
        size_t nodes;
        char path[PATH_MAX_LEN];
        size_t len;
} Loader;

JobFile *jobfile_free(JobFile *f) {
        if (!f)
                return NULL;
        json_decref(f->spec);
        json_decref(f->marks);
        free(f);
        return NULL;
}

json_t *jobfile_spec(JobFile *f) {
        return f->spec;
}

static bool mark_find(const JobFile *f, const char *path, Mark *ret) {
        json_t *v = json_object_get(f->marks, path);
        json_int_t packed;

        if (!v)
                return false;
        packed = json_integer_value(v);
        *ret = (Mark) { (unsigned) (packed >> 32), (unsigned) (packed & 0xffffffff) };
        return true;
}

static int mark_add(JobFile *f, const char *path, unsigned line, unsigned column) {
        if (json_object_set_new(f->marks, path, json_integer((json_int_t) line << 32 | column)) < 0)
                return -ENOMEM;
        return 0;
}

/* The end of the path's parent: the last ".key" or "[i]" is dropped. */
static size_t path_parent_len(const char *path, size_t len) {
        while (len > 0) {
                len--;
                if (path[len] == '.' || path[len] == '[')
                        return len;
        }
        return 0;
}

int jobfile_locate(const JobFile *f, const char *path, unsigned *ret_line, unsigned *ret_column) {
        char buf[PATH_MAX_LEN];
        size_t len;

        snprintf(buf, sizeof(buf), "%s", path);
        len = strlen(buf);
        for (;;) {
                Mark m;
                buf[len] = 0;
                if (mark_find(f, buf, &m)) {
                        *ret_line = m.line;
                        *ret_column = m.column;
                        return 0;
                }
                if (len == 0)
                        return -ENOENT;
                len = path_parent_len(buf, len);
        }
}

_printf_(4, 5) static int fail_at(JobFileError *err, const char *path, yaml_mark_t mark, const char *fmt, ...) {
        va_list ap;

        if (!err)
                return -EINVAL;
        err->line = (unsigned) mark.line + 1;
        err->column = (unsigned) mark.column + 1;
        snprintf(err->path, sizeof(err->path), "%s", path ? path : "");
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        return -EINVAL;
}

#define fail(L, mark, ...) fail_at((L)->err, (L)->path, (mark), __VA_ARGS__)

static size_t loader_push_key(Loader *L, const char *key) {
        size_t saved = L->len;
        int n = snprintf(L->path + L->len, sizeof(L->path) - L->len, "%s%s", L->len > 0 ? "." : "", key);
        L->len = n < 0 ? L->len : MIN(L->len + (size_t) n, sizeof(L->path) - 1);
        return saved;
}

static size_t loader_push_index(Loader *L, size_t i) {
        size_t saved = L->len;
        int n = snprintf(L->path + L->len, sizeof(L->path) - L->len, "[%zu]", i);
        L->len = n < 0 ? L->len : MIN(L->len + (size_t) n, sizeof(L->path) - 1);
        return saved;
}

static void loader_pop(Loader *L, size_t saved) {
        L->len = saved;
        L->path[saved] = 0;
}

/* Positions of paths too long for an error message are not kept: no error
 * could name them. */
static int loader_record(Loader *L, yaml_mark_t mark) {
        if (L->len >= sizeof(L->path) - 1 || json_object_get(L->file->marks, L->path))
                return 0;
        return mark_add(L->file, L->path, (unsigned) mark.line + 1, (unsigned) mark.column + 1);
}

static int next_event(Loader *L, yaml_event_t *ev) {
        if (yaml_parser_parse(&L->parser, ev))
                return 0;
        if (L->parser.error == YAML_MEMORY_ERROR)
                return -ENOMEM;
        if (L->parser.context)
                return fail_at(L->err, "", L->parser.problem_mark, "YAML syntax error: %s %s",
                               L->parser.problem ? L->parser.problem : "invalid YAML", L->parser.context);
        return fail_at(L->err, "", L->parser.problem_mark, "YAML syntax error: %s",
                       L->parser.problem ? L->parser.problem : "invalid YAML");
}

/* ---- scalars: the YAML 1.2 core schema ---- */

static bool match_all(const char *s, const char *set) {
        return *s && s[strspn(s, set)] == 0;
}

static bool is_core_int(const char *s) {
        if (strneq(s, "0o", 2))
                return match_all(s + 2, "01234567");
        if (strneq(s, "0x", 2))
                return match_all(s + 2, "0123456789abcdefABCDEF");
        if (*s == '-' || *s == '+')
                s++;
        return match_all(s, "0123456789");
}

/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static bool is_core_float(const char *s) {
        size_t digits = 0;

        if (*s == '-' || *s == '+')
                s++;
        while (*s >= '0' && *s <= '9')
                s++, digits++;
        if (*s == '.') {
                s++;
                size_t frac = 0;
                while (*s >= '0' && *s <= '9')
                        s++, frac++;
                if (digits == 0 && frac == 0)
                        return false;
        } else if (digits == 0)
                return false;
        if (*s == 'e' || *s == 'E') {
                s++;
                if (*s == '-' || *s == '+')
                        s++;
                if (!match_all(s, "0123456789"))
                        return false;
                return true;
        }
        return *s == 0;
}

static bool is_one_of(const char *s, const char *const *list) {
        for (; *list; list++)
                if (streq(s, *list))
                        return true;
        return false;
}

/* Scalars are loaded as strings behind a tag byte and resolved only once the
 * whole document is built (finalize()), because whether "3.10" is a string
 * or a number depends on where it ends up — an alias may carry it anywhere. */
#define TAG_PLAIN '\x01'
#define TAG_STRING '\x02'

_printf_(4, 5) static int fail_path(const JobFile *f, JobFileError *err, const char *path, const char *fmt, ...) {
        va_list ap;

        if (!err)
                return -EINVAL;
        *err = (JobFileError) {};
        (void) jobfile_locate(f, path, &err->line, &err->column);
        snprintf(err->path, sizeof(err->path), "%s", path);
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static int resolve_plain(const JobFile *f, JobFileError *err, const char *path, const char *s, bool keep_string,
                         json_t **ret) {
        static const char *const nulls[] = { "", "~", "null", "Null", "NULL", NULL };
        static const char *const trues[] = { "true", "True", "TRUE", NULL };
        static const char *const falses[] = { "false", "False", "FALSE", NULL };
        static const char *const infs[] = { ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF",
                                            "-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN", NULL };

        if (is_one_of(s, nulls))
                *ret = json_null();
        else if (keep_string)
                *ret = json_string(s);
        else if (is_one_of(s, trues))
                *ret = json_true();
        else if (is_one_of(s, falses))
                *ret = json_false();
        else if (is_core_int(s)) {
                char *end;
                long long v;
                int base = strneq(s, "0o", 2) ? 8 : strneq(s, "0x", 2) ? 16 : 10;
                errno = 0;
                v = strtoll(base == 10 ? s : s + 2, &end, base);
                if (errno == ERANGE || *end)
                        return fail_path(f, err, path, "integer '%.64s' out of range", s);
                *ret = json_integer(v);
        } else if (is_core_float(s)) {
                double d = strtod(s, NULL);
                if (!isfinite(d))
                        return fail_path(f, err, path, "number '%.64s' out of range", s);
                *ret = json_real(d);
        } else if (is_one_of(s, infs))
                return fail_path(f, err, path, "infinite and NaN numbers are not supported (quote '%s' for a string)", s);
        else
                *ret = json_string(s);
        return *ret ? 0 : -ENOMEM;
}

static int load_scalar(Loader *L, const yaml_event_t *ev, json_t **ret) {
        const char *s = (const char *) ev->data.scalar.value;
        const char *tag = (const char *) ev->data.scalar.tag;
        _cleanup_free_ char *tagged = NULL;
        size_t l = ev->data.scalar.length;

        if (strlen(s) != l)
                return fail(L, ev->start_mark, "NUL characters are not allowed");
        if (tag && !streq(tag, "!") && !streq(tag, YAML_STR_TAG))
                return fail(L, ev->start_mark, "unsupported tag '%.64s' (only !!str is supported)", tag);
        tagged = malloc(l + 2);
        if (!tagged)
                return -ENOMEM;
        tagged[0] = tag || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ? TAG_STRING : TAG_PLAIN;
        memcpy(tagged + 1, s, l + 1);
        *ret = json_stringn(tagged, l + 1);
        if (!*ret)
                return fail(L, ev->start_mark, "invalid UTF-8");
        return 0;
}

/* ---- collections ---- */

static Context child_context(Context parent, const char *key) {
        static const char *const strings[] = { "name", "image", "run", "http", "tcp", "workspace", "network",
                                               NULL };
        static const char *const items[] = { "command", "argv", "artifacts", "secrets", "steps", "tasks",
                                             "health", NULL };

        if (parent == CTX_ALL)
                return CTX_ALL;
        if (parent == CTX_VALUES)
                return CTX_STRING;
        if (!key)
                return parent == CTX_ITEMS ? CTX_STRING : CTX_NONE;
        if (streq(key, "matrix"))
                return CTX_ALL;
        if (streq(key, "env") || streq(key, "labels"))
                return CTX_VALUES;
        if (is_one_of(key, strings))
                return CTX_STRING;
        if (is_one_of(key, items))
                return CTX_ITEMS;
        return CTX_NONE;
}

static int load_node(Loader *L, yaml_event_t *ev, unsigned depth, json_t **ret, size_t *ret_nodes,
                     unsigned *ret_height);

static int count_node(Loader *L, yaml_mark_t mark, size_t n) {
        if (n > JOBFILE_MAX_NODES - MIN(L->nodes, (size_t) JOBFILE_MAX_NODES)) {
                fail(L, mark, "document too large: it expands to more than %u nodes (are aliases "
                     "nested to multiply?)", JOBFILE_MAX_NODES);
                return -E2BIG;
        }
        L->nodes += n;
        return 0;
}

static int load_sequence(Loader *L, unsigned depth, json_t **ret, size_t *ret_nodes,
                         unsigned *ret_height) {
        json_auto_t *arr = json_array();
        size_t nodes = 1;
        unsigned height = 0;
        int r;

        if (!arr)
                return -ENOMEM;
        for (size_t i = 0;; i++) {
                yaml_event_t ev;
                json_t *v = NULL;
                size_t n;
                unsigned h;

                r = next_event(L, &ev);
                if (r < 0)
                        return r;
                if (ev.type == YAML_SEQUENCE_END_EVENT) {
                        yaml_event_delete(&ev);
                        break;
                }
                size_t saved = loader_push_index(L, i);
                r = loader_record(L, ev.start_mark);
                if (r >= 0)
                        r = load_node(L, &ev, depth + 1, &v, &n, &h);
                yaml_event_delete(&ev);
                if (r < 0)
                        return r;
                loader_pop(L, saved);
                if (json_array_append_new(arr, v) < 0)
                        return -ENOMEM;
                nodes += n;
                height = MAX(height, h + 1);
        }
        *ret = TAKE_PTR(arr);
        *ret_nodes = nodes;
        *ret_height = height;
        return 0;
}

static int load_key(Loader *L, yaml_event_t *ev, char **ret) {
        const char *s;

        if (ev->type == YAML_ALIAS_EVENT)
                return fail(L, ev->start_mark, "aliases are not allowed as mapping keys");
        if (ev->type != YAML_SCALAR_EVENT)
                return fail(L, ev->start_mark, "mapping keys must be strings, not lists or mappings");
        s = (const char *) ev->data.scalar.value;
        if (strlen(s) != ev->data.scalar.length)
                return fail(L, ev->start_mark, "NUL characters are not allowed in keys");
        if (ev->data.scalar.length > MAX_KEY)
                return fail(L, ev->start_mark, "key too long (%zu bytes, at most %d)", ev->data.scalar.length, MAX_KEY);
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

/* "<<: *defaults" (or a list of aliases): the keys of the given mappings are
 * added to this one unless it sets them itself; with a list, earlier
 * mappings win. Values are copied so that no node has two parents. */
static int merge_sources(Loader *L, json_t *merged, json_t *v, yaml_mark_t mark) {
        json_t *src, *val;
        const char *k;
        size_t i;

        if (json_is_object(v)) {
                json_object_foreach(v, k, val)
                        if (!json_object_get(merged, k) && json_object_set_new(merged, k, json_deep_copy(val)) < 0)
                                return -ENOMEM;
                return 0;
        }
        if (!json_is_array(v))
                return fail(L, mark, "a merge key '<<' takes a mapping or a list of mappings");
        json_array_foreach(v, i, src) {
                if (!json_is_object(src))
                        return fail(L, mark, "a merge key '<<' takes a mapping or a list of mappings");
                int r = merge_sources(L, merged, src, mark);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int apply_merge(Loader *L, json_t *obj, json_t *merged, yaml_mark_t mark) {
        const char *k;
        json_t *val;

        json_object_foreach(merged, k, val) {
                if (json_object_get(obj, k))
                        continue;
                size_t saved = loader_push_key(L, k);
                int r = loader_record(L, mark);
                loader_pop(L, saved);
                if (r < 0)
                        return r;
                if (json_object_set(obj, k, val) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int load_mapping(Loader *L, unsigned depth, json_t **ret, size_t *ret_nodes,
                        unsigned *ret_height) {
        json_auto_t *obj = json_object(), *merged = NULL;
        yaml_mark_t merge_mark = {};
        size_t nodes = 1;
        unsigned height = 0;
        int r;

        if (!obj)
                return -ENOMEM;
        for (;;) {
                _cleanup_free_ char *key = NULL;
                yaml_event_t ev;
                json_t *v = NULL;
                size_t n, saved;
                unsigned h;

                r = next_event(L, &ev);
                if (r < 0)
                        return r;
                if (ev.type == YAML_MAPPING_END_EVENT) {
                        yaml_event_delete(&ev);
                        break;
                }
                r = load_key(L, &ev, &key);
                if (r < 0) {
                        yaml_event_delete(&ev);
                        return r;
                }
                if (streq(key, "<<") && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev.data.scalar.tag) {
                        if (merged) {
                                r = fail(L, ev.start_mark, "duplicate merge key '<<' (give a list of mappings instead)");
                                yaml_event_delete(&ev);
                                return r;
                        }
                        merge_mark = ev.start_mark;
                        yaml_event_delete(&ev);
                        r = next_event(L, &ev);
                        if (r < 0)
                                return r;
                        r = load_node(L, &ev, depth + 1, &v, &n, &h);
                        yaml_event_delete(&ev);
                        if (r < 0)
                                return r;
                        merged = json_object();
                        r = merged ? merge_sources(L, merged, v, merge_mark) : -ENOMEM;
                        json_decref(v);
                        if (r < 0)
                                return r;
                        nodes += n;
                        height = MAX(height, h);
                        continue;
                }
                saved = loader_push_key(L, key);
                if (json_object_get(obj, key)) {
                        Mark first;
                        if (mark_find(L->file, L->path, &first))
                                r = fail(L, ev.start_mark, "duplicate key '%.64s' (first defined at line %u)",
                                         key, first.line);
                        else
                                r = fail(L, ev.start_mark, "duplicate key '%.64s'", key);
                        yaml_event_delete(&ev);
                        return r;
                }
                r = loader_record(L, ev.start_mark);
                yaml_event_delete(&ev);
                if (r < 0)
                        return r;

                r = next_event(L, &ev);
                if (r < 0)
                        return r;
                r = load_node(L, &ev, depth + 1, &v, &n, &h);
                yaml_event_delete(&ev);
                if (r < 0)
                        return r;
                loader_pop(L, saved);
                if (json_object_set_new(obj, key, v) < 0)
                        return -ENOMEM;
                nodes += n;
                height = MAX(height, h + 1);
        }
        if (merged) {
                r = apply_merge(L, obj, merged, merge_mark);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(obj);
        *ret_nodes = nodes;
        *ret_height = height;
        return 0;
}

static int load_alias(Loader *L, const yaml_event_t *ev, unsigned depth, json_t **ret, size_t *ret_nodes,
                      unsigned *ret_height) {
        const char *name = (const char *) ev->data.alias.anchor;
        const Anchor *a = NULL;
        int r;

        /* The latest definition of a name wins, as YAML says. */
        for (size_t i = L->n_anchors; i > 0; i--)
                if (streq(L->anchors[i - 1].name, name)) {
                        a = &L->anchors[i - 1];
                        break;
                }
        if (!a)
                return fail(L, ev->start_mark, "unknown alias '*%.64s' (no anchor '&%.64s' before it)", name, name);
        if (depth + a->height > JOBFILE_MAX_DEPTH)
                return fail(L, ev->start_mark, "document nested too deeply through alias '*%.64s' (at most %u levels)",
                            name, JOBFILE_MAX_DEPTH);
        r = count_node(L, ev->start_mark, a->nodes);
        if (r < 0)
                return r;
        *ret = json_deep_copy(a->value);
        if (!*ret)
                return -ENOMEM;
        *ret_nodes = a->nodes;
        *ret_height = a->height;
        return 0;
}

static int anchor_add(Loader *L, const char *name, json_t *value, size_t nodes, unsigned height) {
        Anchor *a;

        a = reallocarray(L->anchors, L->n_anchors + 1, sizeof(Anchor));
        if (!a)
                return -ENOMEM;
        L->anchors = a;
        a[L->n_anchors] = (Anchor) { strdup(name), json_incref(value), nodes, height };
        if (!a[L->n_anchors].name) {
                json_decref(value);
                return -ENOMEM;
        }
        L->n_anchors++;
        return 0;
}

/* Loads the node that starts with *ev (which the caller owns). */
static int load_node(Loader *L, yaml_event_t *ev, unsigned depth, json_t **ret, size_t *ret_nodes,
                     unsigned *ret_height) {
        json_auto_t *v = NULL;
        const yaml_char_t *anchor = NULL;
        size_t nodes = 1;
        unsigned height = 0;
        int r;

        if (depth > JOBFILE_MAX_DEPTH)
                return fail(L, ev->start_mark, "document nested too deeply (at most %u levels)", JOBFILE_MAX_DEPTH);
        if (ev->type != YAML_ALIAS_EVENT) {
                r = count_node(L, ev->start_mark, 1);
                if (r < 0)
                        return r;
        }
        switch (ev->type) {
        case YAML_SCALAR_EVENT:
                anchor = ev->data.scalar.anchor;
                r = load_scalar(L, ev, &v);
                break;
        case YAML_SEQUENCE_START_EVENT:
                anchor = ev->data.sequence_start.anchor;
                r = load_sequence(L, depth, &v, &nodes, &height);
                break;
        case YAML_MAPPING_START_EVENT:
                anchor = ev->data.mapping_start.anchor;
                r = load_mapping(L, depth, &v, &nodes, &height);
                break;
        case YAML_ALIAS_EVENT:
                r = load_alias(L, ev, depth, &v, &nodes, &height);
                break;
        default:
                return fail(L, ev->start_mark, "unexpected YAML event");
        }
        if (r < 0)
                return r;
        /* The anchor pointer stays valid: the caller deletes *ev only after
         * this returns. */
        if (anchor) {
                r = anchor_add(L, (const char *) anchor, v, nodes, height);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(v);
        *ret_nodes = nodes;
        *ret_height = height;
        return 0;
}

static int expect_event(Loader *L, yaml_event_type_t type) {
        yaml_event_t ev;
        int r = next_event(L, &ev);
        if (r < 0)
                return r;
        if (ev.type != type) {
                if (type == YAML_STREAM_END_EVENT && ev.type == YAML_DOCUMENT_START_EVENT)
                        r = fail_at(L->err, "", ev.start_mark, "a jobfile holds one YAML document, found a second one");
                else
                        r = fail_at(L->err, "", ev.start_mark, "unexpected YAML event");
        }
        yaml_event_delete(&ev);
        return r;
}

static int load_document(Loader *L, json_t **ret) {
        yaml_event_t ev;
        size_t nodes;
        unsigned height;
        int r;

        r = expect_event(L, YAML_STREAM_START_EVENT);
        if (r < 0)
                return r;
        r = next_event(L, &ev);
        if (r < 0)
                return r;
        if (ev.type == YAML_STREAM_END_EVENT) {
                r = fail_at(L->err, "", ev.start_mark, "empty jobfile (expected a mapping with at least 'steps')");
                yaml_event_delete(&ev);
                return r;
        }
        yaml_event_delete(&ev); /* DOCUMENT_START */
        r = next_event(L, &ev);
        if (r < 0)
                return r;
        r = loader_record(L, ev.start_mark);
        if (r >= 0)
                r = load_node(L, &ev, 0, ret, &nodes, &height);
        yaml_event_delete(&ev);
        if (r < 0)
                return r;
        r = expect_event(L, YAML_DOCUMENT_END_EVENT);
        if (r >= 0)
                r = expect_event(L, YAML_STREAM_END_EVENT);
        if (r < 0) {
                json_decref(*ret);
                *ret = NULL;
        }
        return r;
}

/* Resolves the tagged scalars now that each one's place is known. */
static int finalize(JobFile *f, JobFileError *err, json_t **node, Context ctx, char *path, size_t len) {
        const char *key;
        json_t *child;
        size_t i;
        int r;

        if (json_is_string(*node)) {
                const char *s = json_string_value(*node);
                json_t *v = NULL;
                if (s[0] == TAG_PLAIN)
                        r = resolve_plain(f, err, path, s + 1, ctx == CTX_STRING || ctx == CTX_ITEMS || ctx == CTX_ALL, &v);
                else {
                        v = json_string(s[0] == TAG_STRING ? s + 1 : s);
                        r = v ? 0 : -ENOMEM;
                }
                if (r < 0)
                        return r;
                json_decref(*node);
                *node = v;
                return 0;
        }
        if (json_is_object(*node))
                json_object_foreach(*node, key, child) {
                        if (len == 0 && strneq(key, "x-", 2))
                                continue; /* dropped by rewrite_shorthands() */
                        int n = snprintf(path + len, PATH_MAX_LEN - len, "%s%s", len > 0 ? "." : "", key);
                        size_t l = n < 0 ? len : MIN(len + (size_t) n, PATH_MAX_LEN - 1);
                        json_t *c = json_incref(child);
                        r = finalize(f, err, &c, child_context(ctx, key), path, l);
                        path[len] = 0;
                        if (r < 0) {
                                json_decref(c);
                                return r;
                        }
                        if (json_object_set_new(*node, key, c) < 0)
                                return -ENOMEM;
                }
        else if (json_is_array(*node))
                json_array_foreach(*node, i, child) {
                        int n = snprintf(path + len, PATH_MAX_LEN - len, "[%zu]", i);
                        size_t l = n < 0 ? len : MIN(len + (size_t) n, PATH_MAX_LEN - 1);
                        json_t *c = json_incref(child);
                        r = finalize(f, err, &c, child_context(ctx, NULL), path, l);
                        path[len] = 0;
                        if (r < 0) {
                                json_decref(c);
                                return r;
                        }
                        if (json_array_set_new(*node, i, c) < 0)
                                return -ENOMEM;
                }
        return 0;
}

/* ---- conveniences: rewrite the YAML shorthands into the JSON form ---- */

static int alias_mark(JobFile *f, const char *from, const char *to) {
        Mark m, unused;
        if (!mark_find(f, from, &m) || mark_find(f, to, &unused))
                return 0;
        return mark_add(f, to, m.line, m.column);
}

/* "steps: [make]" → {"run": "make"}; "health: cmd" → {"command": "cmd"}. */
static int wrap_string(JobFile *f, json_t *parent_arr_or_obj, size_t index, const char *key,
                       const char *member, const char *path) {
        json_t *v = key ? json_object_get(parent_arr_or_obj, key) : json_array_get(parent_arr_or_obj, index);
        json_t *obj;
        char to[PATH_MAX_LEN];
        int r;

        if (!json_is_string(v))
                return 0;
        obj = json_pack("{s:O}", member, v);
        if (!obj)
                return -ENOMEM;
        r = key ? json_object_set_new(parent_arr_or_obj, key, obj) : json_array_set_new(parent_arr_or_obj, index, obj);
        if (r < 0)
                return -ENOMEM;
        if ((size_t) snprintf(to, sizeof(to), "%s.%s", path, member) >= sizeof(to))
                return 0; /* too deep to have a mark of its own: errors point at the parent */
        return alias_mark(f, path, to);
}

static int rewrite_matrix(JobFile *f, json_t *matrix) {
        json_auto_t *axes = NULL;
        const char *key;
        json_t *v;
        void *tmp;

        if (!json_is_object(matrix) || json_object_get(matrix, "axes"))
                return 0;
        axes = json_object();
        if (!axes)
                return -ENOMEM;
        json_object_foreach_safe(matrix, tmp, key, v) {
                if (streq(key, "include") || streq(key, "exclude"))
                        continue;
                if (json_object_set(axes, key, v) < 0 || json_object_del(matrix, key) < 0)
                        return -ENOMEM;
        }
        if (json_object_size(axes) == 0)
                return 0;
        if (json_object_set(matrix, "axes", axes) < 0)
                return -ENOMEM;

        /* matrix.K… → matrix.axes.K…; the new names are collected first,
         * as an object must not grow while it is iterated. */
        json_auto_t *moved = json_object();
        if (!moved)
                return -ENOMEM;
        json_object_foreach_safe(f->marks, tmp, key, v) {
                const char *rest;
                char axis[MAX_KEY + 1], n[PATH_MAX_LEN + 16];
                if (!strneq(key, "matrix.", 7))
                        continue;
                rest = key + 7;
                snprintf(axis, sizeof(axis), "%.*s", (int) MIN(strcspn(rest, ".["), (size_t) MAX_KEY), rest);
                if (!json_object_get(axes, axis))
                        continue;
                snprintf(n, sizeof(n), "matrix.axes.%s", rest);
                if (strlen(n) < PATH_MAX_LEN - 1 && json_object_set(moved, n, v) < 0)
                        return -ENOMEM;
                if (json_object_del(f->marks, key) < 0)
                        return -ENOMEM;
        }
        if (json_object_update(f->marks, moved) < 0)
                return -ENOMEM;
        return alias_mark(f, "matrix", "matrix.axes");
}

static int rewrite_shorthands(JobFile *f) {
        json_t *spec = f->spec, *steps = json_object_get(spec, "steps"), *services = json_object_get(spec, "services");
        char path[PATH_MAX_LEN];
        const char *key;
        void *tmp;
        size_t i;
        json_t *v;
        int r;

        if (!json_is_object(spec))
                return 0;
        /* Top-level "x-…" keys hold anchors for reuse, as in Compose files. */
        json_object_foreach_safe(spec, tmp, key, v)
                if (strneq(key, "x-", 2) && json_object_del(spec, key) < 0)
                        return -ENOMEM;
        json_array_foreach(steps, i, v) {
                snprintf(path, sizeof(path), "steps[%zu]", i);
                r = wrap_string(f, steps, i, NULL, "run", path);
                if (r < 0)
                        return r;
        }
        json_array_foreach(services, i, v) {
                snprintf(path, sizeof(path), "services[%zu].health", i);
                if (json_is_object(v) && (r = wrap_string(f, v, 0, "health", "command", path)) < 0)
                        return r;
        }
        return rewrite_matrix(f, json_object_get(spec, "matrix"));
}

int jobfile_parse(const char *text, size_t size, JobFile **ret, JobFileError *err) {
        _cleanup_(jobfile_freep) JobFile *f = NULL;
        Loader L = { .err = err };
        int r;

        if (size > JOBFILE_MAX_SIZE) {
                fail_at(err, "", (yaml_mark_t) {}, "jobfile too large (%zu bytes, at most %u)", size, JOBFILE_MAX_SIZE);
                return -E2BIG;
        }
        f = calloc(1, sizeof(JobFile));
        if (!f)
                return -ENOMEM;
        f->marks = json_object();
        if (!f->marks)
                return -ENOMEM;
        if (!yaml_parser_initialize(&L.parser))
                return -ENOMEM;
        yaml_parser_set_input_string(&L.parser, (const unsigned char *) text, size);
        L.file = f;
        r = load_document(&L, &f->spec);
        yaml_parser_delete(&L.parser);
        for (size_t i = 0; i < L.n_anchors; i++) {
                free(L.anchors[i].name);
                json_decref(L.anchors[i].value);
        }
        free(L.anchors);
        if (r < 0)
                return r;
        char path[PATH_MAX_LEN] = "";
        r = finalize(f, err, &f->spec, CTX_NONE, path, 0);
        if (r < 0)
                return r;
        r = rewrite_shorthands(f);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(f);
        return 0;
}

int jobfile_validate(JobFile *f, JobFileError *err) {
        JobSpecError e = {};
        int r;

        r = jobspec_validate(f->spec, &e);
        if (r >= 0)
                return 0;
        if (err) {
                *err = (JobFileError) {};
                snprintf(err->path, sizeof(err->path), "%s", e.path);
                snprintf(err->message, sizeof(err->message), "%s", e.message);
                (void) jobfile_locate(f, e.path, &err->line, &err->column);
        }
        return r;
}

static int read_file(const char *path, char **ret, size_t *ret_size, JobFileError *err) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t n = 0;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, &st) < 0) {
                int e = errno;
                snprintf(err->message, sizeof(err->message), "cannot read jobfile: %s", strerror(e));
                return -e;
        }
        if (S_ISDIR(st.st_mode)) {
                snprintf(err->message, sizeof(err->message), "cannot read jobfile: it is a directory");
                return -EISDIR;
        }
        buf = malloc(JOBFILE_MAX_SIZE + 1);
        if (!buf)
                return -ENOMEM;
        /* Read one byte past the limit to tell "at the limit" from "over". */
        while (n <= JOBFILE_MAX_SIZE) {
                ssize_t k = read(fd, buf + n, JOBFILE_MAX_SIZE + 1 - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        int e = errno;
                        snprintf(err->message, sizeof(err->message), "cannot read jobfile: %s", strerror(e));
                        return -e;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        if (n > JOBFILE_MAX_SIZE) {
                snprintf(err->message, sizeof(err->message), "jobfile too large (more than %u bytes)", JOBFILE_MAX_SIZE);
                return -E2BIG;
        }
        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

int jobfile_load(const char *path, JobFile **ret, JobFileError *err) {
        _cleanup_(jobfile_freep) JobFile *f = NULL;
        _cleanup_free_ char *text = NULL;
        JobFileError dummy;
        size_t size = 0;
        int r;

        if (!err)
                err = &dummy;
        *err = (JobFileError) {};
        r = read_file(path, &text, &size, err);
        if (r < 0)
                return r;
        r = jobfile_parse(text, size, &f, err);
        if (r < 0)
                return r;
        r = jobfile_validate(f, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(f);
        return 0;
}
