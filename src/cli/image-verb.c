/* SPDX-License-Identifier: MIT */
/* kiln image build|rebuild|import|ls|show|rollback|rm|path (docs/images.md). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "fs-util.h"
#include "image-build.h"
#include "image-remote.h"
#include "image-store.h"
#include "log.h"
#include "parse-util.h"
#include "sandbox.h"
#include "strv.h"
#include "verbs.h"

typedef struct ImageOpts {
        const char *data;
        ImageRemote remote;
        bool scheduled;
        bool no_publish;
        bool json;
        ImageRecipe recipe;
        char **args;
        int n_args;
} ImageOpts;

static void image_usage(FILE *f) {
        fprintf(f,
                "Usage: kiln image build NAME --from debian:SUITE [--packages P,…] [--script FILE]\n"
                "                        [--validate CMD] [--tries N] [--min-success R]\n"
                "       kiln image rebuild NAME        (with the current revision's recipe)\n"
                "       kiln image import NAME FILE|DIR [--validate CMD …]\n"
                "       kiln image ls | show NAME | rollback NAME [REV] | rm NAME[@REV] | path NAME[@REV]\n"
                "       kiln image push NAME[@REV] | pull NAME   --server URL --token TOKEN\n\n"
                "Builds, imports and switches revisioned root file systems. A new revision\n"
                "becomes current only when its validation passed; the switch is atomic.\n\n"
                "Options:\n"
                "  --data DIR           kiln's data directory; images live in DIR/images\n"
                "                       [$KILN_DATA or /var/lib/kiln]\n"
                "  --from debian:SUITE  build with mmdebstrap --variant=minbase\n"
                "  --packages P,…       packages included at build time\n"
                "  --script FILE        provisioning script, run by /bin/sh -e in a sandbox of\n"
                "                       the new root file system with NAT networking\n"
                "  --validate CMD       run by /bin/sh -c in fresh sandboxes of the new revision\n"
                "                       ($KILN_VALIDATE_TRY is 1…N)\n"
                "  --tries N            validation runs [3]\n"
                "  --min-success R      fraction of runs that must pass [0.8]\n"
                "  --keep K             revisions kept [3]\n"
                "  --bind SRC:DST[:ro]  bind into the script and validation sandboxes (repeatable)\n"
                "  --timeout DURATION   limit of the script and of each validation run [1h]\n"
                "  --base-cache DIR     reuse mmdebstrap bases of the same suite and packages\n"
                "  --server URL         the server to push to or pull from; with build and\n"
                "                       rebuild: report the outcome (an event) and publish\n"
                "                       the new revision [$KILN_SERVER]\n"
                "  --scheduled          (rebuild) mark the report as a scheduled rebuild\n"
                "  --no-publish         with --server: report the outcome, do not publish\n"
                "                       (kiln worker --rebuild: a worker's session may report)\n"
                "  --token TOKEN        an admin token (push) or user token (pull) [$KILN_TOKEN]\n"
                "  --json               machine-readable output\n");
}

enum { ARG_DATA = 0x100, ARG_FROM, ARG_PACKAGES, ARG_SCRIPT, ARG_VALIDATE, ARG_TRIES, ARG_MIN_SUCCESS, ARG_KEEP,
       ARG_BIND, ARG_TIMEOUT, ARG_BASE_CACHE, ARG_JSON, ARG_SERVER, ARG_TOKEN, ARG_SCHEDULED,
       ARG_NO_PUBLISH };

static int parse_packages(const char *s, char ***l) {
        _cleanup_free_ char *copy = strdup(s);
        char *next;
        if (!copy)
                return -ENOMEM;
        for (char *p = copy; p; p = next) {
                next = strchr(p, ',');
                if (next)
                        *next++ = 0;
                if (!*p)
                        continue;
                /* Debian package names: [a-z0-9][a-z0-9+.-]+ */
                if (strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789+.-") != strlen(p) || strlen(p) > 128)
                        return -EINVAL;
                if (strv_length(*l) >= IMAGE_PACKAGES_MAX || strv_extend(l, p) < 0)
                        return -E2BIG;
        }
        return 0;
}

static int parse_opts(int argc, char **argv, ImageOpts *o) {
        static const struct option opts[] = {
                { "data", required_argument, NULL, ARG_DATA },
                { "from", required_argument, NULL, ARG_FROM },
                { "packages", required_argument, NULL, ARG_PACKAGES },
                { "script", required_argument, NULL, ARG_SCRIPT },
                { "validate", required_argument, NULL, ARG_VALIDATE },
                { "tries", required_argument, NULL, ARG_TRIES },
                { "min-success", required_argument, NULL, ARG_MIN_SUCCESS },
                { "keep", required_argument, NULL, ARG_KEEP },
                { "bind", required_argument, NULL, ARG_BIND },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "base-cache", required_argument, NULL, ARG_BASE_CACHE },
                { "json", no_argument, NULL, ARG_JSON },
                { "server", required_argument, NULL, ARG_SERVER },
                { "token", required_argument, NULL, ARG_TOKEN },
                { "scheduled", no_argument, NULL, ARG_SCHEDULED },
                { "no-publish", no_argument, NULL, ARG_NO_PUBLISH },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        ImageRecipe *rc = &o->recipe;
        int c, r;

        o->data = getenv("KILN_DATA") ?: "/var/lib/kiln";
        o->remote.server = getenv("KILN_SERVER");
        o->remote.token = getenv("KILN_TOKEN");
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                const char *what = NULL;
                r = 0;
                switch (c) {
                case 'h':
                        image_usage(stdout);
                        return 0;
                case ARG_DATA:
                        o->data = optarg;
                        break;
                case ARG_FROM:
                        what = "--from";
                        if (!strneq(optarg, "debian:", 7) || !optarg[7] || strlen(optarg) > 64 ||
                            strspn(optarg + 7, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(optarg + 7))
                                r = -EINVAL;
                        else {
                                free(rc->suite);
                                rc->suite = strdup(optarg + 7);
                        }
                        break;
                case ARG_PACKAGES:
                        r = parse_packages(optarg, &rc->packages), what = "--packages";
                        break;
                case ARG_SCRIPT: {
                        size_t n;
                        free(rc->script);
                        rc->script = NULL;
                        r = read_full_file(optarg, IMAGE_SCRIPT_MAX, &rc->script, &n), what = "--script";
                        break;
                }
                case ARG_VALIDATE:
                        what = "--validate";
                        if (!optarg[0] || strlen(optarg) > 65536)
                                r = -EINVAL;
                        else {
                                free(rc->validate);
                                rc->validate = strdup(optarg);
                        }
                        break;
                case ARG_TRIES:
                        r = safe_atou(optarg, &rc->tries), what = "--tries";
                        if (r >= 0 && (rc->tries < 1 || rc->tries > 100))
                                r = -ERANGE;
                        break;
                case ARG_MIN_SUCCESS: {
                        char *end = NULL;
                        what = "--min-success";
                        errno = 0;
                        rc->min_success = strtod(optarg, &end);
                        if (errno || !end || *end || !(rc->min_success >= 0.0 && rc->min_success <= 1.0))
                                r = -ERANGE;
                        break;
                }
                case ARG_KEEP:
                        r = safe_atou(optarg, &rc->keep), what = "--keep";
                        if (r >= 0 && (rc->keep < 1 || rc->keep > 1000))
                                r = -ERANGE;
                        break;
                case ARG_BIND: {
                        BindMount *b = realloc(rc->binds, sizeof(BindMount) * (rc->n_binds + 1));
                        if (!b)
                                return -ENOMEM;
                        rc->binds = b;
                        r = bind_mount_parse(optarg, &b[rc->n_binds]), what = "--bind";
                        if (r >= 0)
                                rc->n_binds++;
                        break;
                }
                case ARG_TIMEOUT:
                        r = parse_duration(optarg, &rc->step_timeout_usec), what = "--timeout";
                        break;
                case ARG_BASE_CACHE:
                        free(rc->base_cache);
                        rc->base_cache = strdup(optarg);
                        break;
                case ARG_JSON:
                        o->json = true;
                        break;
                case ARG_SERVER:
                        o->remote.server = optarg;
                        break;
                case ARG_TOKEN:
                        o->remote.token = optarg;
                        break;
                case ARG_SCHEDULED:
                        o->scheduled = true;
                        break;
                case ARG_NO_PUBLISH:
                        o->no_publish = true;
                        break;
                default:
                        return -EINVAL;
                }
                if (r < 0)
                        return log_error_errno(r, "Invalid value for %s: '%s' (%m)", what ?: "option", optarg);
        }
        o->args = argv + optind;
        o->n_args = argc - optind;
        return 1;
}

static int open_store(const ImageOpts *o, ImageStore **ret) {
        int r = image_store_open(o->data, ret);
        if (r < 0)
                return log_error_errno(r, "Failed to open the image store in '%s/images': %m", o->data);
        return 0;
}

static int need_name(const ImageOpts *o, const char *usage) {
        if (o->n_args < 1)
                return log_error_errno(EINVAL, "Usage: kiln image %s", usage);
        if (!image_name_valid(o->args[0]))
                return log_error_errno(EINVAL, "Invalid image name '%s': lowercase letters, digits, '.', '_' and "
                                               "'-', at most %d bytes, not 'host'", o->args[0], IMAGE_NAME_MAX);
        return 0;
}

static int report(const ImageOpts *o, const char *verb, const char *name, int k, unsigned before, bool had,
                  const ImageResult *res) {
        if (o->json) {
                json_t *j = json_pack("{s:s, s:i, s:b, s:s?, s:s?, s:s?, s:s?}", "image", name, "revision",
                                      (json_int_t) res->rev, "committed", res->committed, "digest",
                                      res->committed ? res->digest : NULL, "failed_step",
                                      res->committed ? NULL : res->step, "message",
                                      res->committed ? NULL : res->message, "log", res->log_path);
                json_dumpf(j, stdout, JSON_COMPACT);
                printf("\n");
                json_decref(j);
        }
        if (k >= 0 && res->committed) {
                if (!o->json)
                        printf("%s revision %u of '%s' is current (%s)\n", verb, res->rev, name, res->digest);
                return 0;
        }
        if (res->step[0]) {
                log_error("kiln image %s: step '%s' failed: %s", verb, res->step, res->message);
                if (res->log_path)
                        log_error("Log: %s", res->log_path);
                if (had)
                        log_error("The current revision of '%s' is unchanged: %u", name, before);
                else
                        log_error("'%s' has no current revision", name);
        }
        return 1;
}

static int need_server(const ImageOpts *o) {
        if (!o->remote.server || !o->remote.token)
                return log_error_errno(EINVAL, "No server: pass --server URL and --token TOKEN (or set KILN_SERVER "
                                               "and KILN_TOKEN)");
        return 0;
}

/* With --server: the outcome becomes an event, a committed revision is
 * published. */
static int publish_build(const ImageOpts *o, ImageStore *s, const char *name, const ImageResult *res) {
        json_t *info = NULL, *outcome;
        char digest[72];
        int k;

        if (need_server(o) < 0)
                return -EINVAL;
        (void) image_info(s, name, &info);
        json_t *lb = json_object_get(info, "last_build");
        outcome = json_pack("{s:s, s:i, s:f, s:b}", "status", res->committed ? "succeeded" : "failed", "revision",
                            (json_int_t) res->rev, "seconds", json_number_value(json_object_get(lb, "seconds")),
                            "scheduled", o->scheduled);
        if (outcome && res->committed)
                json_object_set_new(outcome, "digest", json_string(res->digest));
        if (outcome && !res->committed && res->step[0]) {
                json_object_set_new(outcome, "step", json_string(res->step));
                json_object_set_new(outcome, "message", json_string(res->message));
        }
        json_decref(info);
        k = outcome ? image_report_build(&o->remote, name, outcome) : -ENOMEM;
        json_decref(outcome);
        if (k >= 0 && res->committed && !o->no_publish)
                k = image_push(s, &o->remote, name, res->rev, digest);
        if (k < 0)
                log_error_errno(k, "Failed to report the build of '%s' to %s: %m", name, o->remote.server);
        else if (!o->json)
                printf("reported to %s%s\n", o->remote.server,
                       res->committed && !o->no_publish ? " and published" : "");
        return k;
}

static int image_build_verb(ImageOpts *o, bool rebuild) {
        _cleanup_image_store_ ImageStore *s = NULL;
        _cleanup_(image_result_done) ImageResult res = {};
        unsigned before = 0;
        bool had;
        int k;

        if (need_name(o, rebuild ? "rebuild NAME" : "build NAME --from debian:SUITE …") < 0)
                return 2;
        if (open_store(o, &s) < 0)
                return 1;
        had = image_current(s, o->args[0], &before) >= 0;
        if (rebuild) {
                json_t *meta = NULL;
                if (!had || image_rev_meta(s, o->args[0], before, &meta) < 0)
                        return log_error_errno(ENOENT, "Image '%s' has no current revision to rebuild", o->args[0]), 1;
                ImageRecipe saved;
                image_recipe_init(&saved);
                k = image_recipe_from_json(json_object_get(meta, "recipe"), &saved);
                json_decref(meta);
                if (k < 0) {
                        image_recipe_done(&saved);
                        return log_error_errno(k, "Revision %u of '%s' was not built from a recipe: %m", before,
                                               o->args[0]), 1;
                }
                /* The recorded recipe, with this invocation's local settings. */
                saved.base_cache = TAKE_PTR(o->recipe.base_cache);
                saved.binds = TAKE_PTR(o->recipe.binds);
                saved.n_binds = o->recipe.n_binds;
                o->recipe.n_binds = 0;
                saved.keep = o->recipe.keep;
                saved.step_timeout_usec = o->recipe.step_timeout_usec;
                image_recipe_done(&o->recipe);
                o->recipe = saved;
        } else if (!o->recipe.suite)
                return log_error_errno(EINVAL, "kiln image build needs --from debian:SUITE"), 2;
        if (geteuid() != 0)
                return log_error_errno(EPERM, "kiln image build needs root (mmdebstrap, sandboxes)"), 1;
        (void) sandbox_gc(0);
        k = image_build(s, o->args[0], &o->recipe, &res);
        int ret = report(o, rebuild ? "rebuild" : "build", o->args[0], k, before, had, &res);
        if (o->remote.server && !o->remote.token)
                log_warning("A server but no token (--token, $KILN_TOKEN): the build is not reported");
        else if (o->remote.server && publish_build(o, s, o->args[0], &res) < 0)
                return 1;
        return ret;
}

static int image_import_verb(ImageOpts *o) {
        _cleanup_image_store_ ImageStore *s = NULL;
        _cleanup_(image_result_done) ImageResult res = {};
        unsigned before = 0;
        bool had;

        if (need_name(o, "import NAME FILE|DIR") < 0)
                return 2;
        if (o->n_args != 2)
                return log_error_errno(EINVAL, "Usage: kiln image import NAME FILE|DIR"), 2;
        if (open_store(o, &s) < 0)
                return 1;
        if (o->recipe.validate && geteuid() != 0)
                return log_error_errno(EPERM, "Validation needs root (sandboxes)"), 1;
        had = image_current(s, o->args[0], &before) >= 0;
        int k = image_import(s, o->args[0], o->args[1], &o->recipe, &res);
        return report(o, "import", o->args[0], k, before, had, &res);
}

static json_t *image_summary(ImageStore *s, const char *name) {
        _cleanup_free_ unsigned *revs = NULL;
        json_t *list = json_array(), *info = NULL, *meta = NULL;
        unsigned cur = 0;
        size_t n = 0;

        (void) image_current(s, name, &cur);
        (void) image_revs(s, name, &revs, &n);
        for (size_t i = 0; i < n; i++) {
                json_t *m = NULL;
                if (image_rev_meta(s, name, revs[i], &m) < 0)
                        m = json_pack("{s:i}", "revision", (json_int_t) revs[i]);
                json_object_set_new(m, "current", json_boolean(revs[i] == cur));
                _cleanup_free_ char *dir = image_rev_dir(s, name, revs[i], false);
                _cleanup_free_ char *rootfs = NULL;
                if (dir && asprintf(&rootfs, "%s/rootfs", dir) >= 0)
                        json_object_set_new(m, "rootfs", json_string(rootfs));
                if (revs[i] == cur)
                        meta = json_incref(m);
                json_array_append_new(list, m);
        }
        (void) image_info(s, name, &info);
        json_t *j = json_pack("{s:s, s:o, s:o?, s:o}", "name", name, "revisions", list, "last_build",
                              json_incref(json_object_get(info, "last_build")), "current",
                              cur ? json_integer(cur) : json_null());
        if (meta) {
                json_object_set(j, "digest", json_object_get(meta, "digest"));
                json_decref(meta);
        }
        json_decref(info);
        return j;
}

static void print_size(uint64_t b) {
        if (b >= (1ULL << 30))
                printf("%.1fG", (double) b / (double) (1ULL << 30));
        else
                printf("%.1fM", (double) b / (double) (1ULL << 20));
}

static int image_ls(ImageOpts *o) {
        _cleanup_image_store_ ImageStore *s = NULL;
        _cleanup_strv_free_ char **names = NULL;
        json_t *all = json_array();

        if (open_store(o, &s) < 0 || image_names(s, &names) < 0)
                return 1;
        if (!o->json)
                printf("%-24s %-8s %-6s %-10s %s\n", "NAME", "CURRENT", "REVS", "SIZE", "DIGEST");
        for (char **n = names; n && *n; n++) {
                json_t *j = image_summary(s, *n);
                if (!o->json) {
                        json_t *cur = json_object_get(j, "current"), *m, *found = NULL;
                        char curs[16] = "-";
                        size_t i;
                        json_array_foreach(json_object_get(j, "revisions"), i, m)
                                if (json_is_true(json_object_get(m, "current")))
                                        found = m;
                        if (json_is_integer(cur))
                                snprintf(curs, sizeof curs, "%" JSON_INTEGER_FORMAT, json_integer_value(cur));
                        printf("%-24s %-8s %-6zu ", *n, curs, json_array_size(json_object_get(j, "revisions")));
                        if (found)
                                print_size((uint64_t) json_integer_value(json_object_get(found, "rootfs_bytes")));
                        else
                                printf("-");
                        printf("      %s\n", json_string_value(json_object_get(j, "digest")) ?: "-");
                }
                json_array_append_new(all, j);
        }
        if (o->json) {
                json_dumpf(all, stdout, JSON_INDENT(2));
                printf("\n");
        }
        json_decref(all);
        return 0;
}

static int image_show(ImageOpts *o) {
        _cleanup_image_store_ ImageStore *s = NULL;
        json_t *m;
        size_t i;

        if (need_name(o, "show NAME") < 0)
                return 2;
        if (open_store(o, &s) < 0)
                return 1;
        json_t *j = image_summary(s, o->args[0]);
        json_t *revs = json_object_get(j, "revisions"), *lb = json_object_get(j, "last_build");
        if (json_array_size(revs) == 0 && !lb) {
                json_decref(j);
                return log_error_errno(ENOENT, "No image '%s'", o->args[0]), 1;
        }
        if (o->json) {
                json_dumpf(j, stdout, JSON_INDENT(2));
                printf("\n");
                json_decref(j);
                return 0;
        }
        printf("image %s\n", o->args[0]);
        json_array_foreach(revs, i, m) {
                time_t t = (time_t) json_integer_value(json_object_get(m, "created"));
                struct tm tm;
                char ts[32] = "-";
                if (t > 0 && gmtime_r(&t, &tm))
                        strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%SZ", &tm);
                json_t *v = json_object_get(m, "validation");
                printf("%s revision %" JSON_INTEGER_FORMAT "  %s  %s  ", json_is_true(json_object_get(m, "current")) ? "*" : " ",
                       json_integer_value(json_object_get(m, "revision")), ts,
                       json_string_value(json_object_get(m, "source")) ?: "?");
                print_size((uint64_t) json_integer_value(json_object_get(m, "rootfs_bytes")));
                printf("  built in %.1fs", json_number_value(json_object_get(m, "build_seconds")));
                if (v)
                        printf("  validated %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                               json_integer_value(json_object_get(v, "passed")),
                               json_integer_value(json_object_get(v, "tries")));
                printf("\n    %s\n", json_string_value(json_object_get(m, "digest")) ?: "");
        }
        if (lb) {
                printf("last build: %s, revision %" JSON_INTEGER_FORMAT ", %.1fs",
                       json_string_value(json_object_get(lb, "status")) ?: "?",
                       json_integer_value(json_object_get(lb, "revision")),
                       json_number_value(json_object_get(lb, "seconds")));
                if (json_object_get(lb, "step"))
                        printf(", step '%s': %s", json_string_value(json_object_get(lb, "step")),
                               json_string_value(json_object_get(lb, "message")));
                printf("\n    log: %s\n", json_string_value(json_object_get(lb, "log")) ?: "-");
        }
        json_decref(j);
        return 0;
}

static int image_rollback(ImageOpts *o) {
        _cleanup_image_store_ ImageStore *s = NULL;
        _cleanup_free_ unsigned *revs = NULL;
        unsigned cur = 0, to = 0;
        size_t n = 0;
        int k;

        if (need_name(o, "rollback NAME [REV]") < 0)
                return 2;
        if (o->n_args > 2)
                return log_error_errno(EINVAL, "Usage: kiln image rollback NAME [REV]"), 2;
        if (o->n_args == 2 && (safe_atou(o->args[1], &to) < 0 || to == 0))
                return log_error_errno(EINVAL, "Invalid revision '%s'", o->args[1]), 2;
        if (open_store(o, &s) < 0)
                return 1;
        if (image_current(s, o->args[0], &cur) < 0 || image_revs(s, o->args[0], &revs, &n) < 0)
                return log_error_errno(ENOENT, "Image '%s' has no current revision", o->args[0]), 1;
        if (to == 0) {
                for (size_t i = 0; i < n; i++)
                        if (revs[i] < cur)
                                to = revs[i];
                if (to == 0)
                        return log_error_errno(ENOENT, "Image '%s' has no revision older than %u", o->args[0], cur), 1;
        }
        k = image_switch(s, o->args[0], to);
        if (k == -ENOENT)
                return log_error_errno(k, "Image '%s' has no revision %u", o->args[0], to), 1;
        if (k < 0)
                return log_error_errno(k, "Failed to switch '%s' to revision %u: %m", o->args[0], to), 1;
        if (o->json)
                printf("{\"image\": \"%s\", \"previous\": %u, \"current\": %u}\n", o->args[0], cur, to);
        else
                printf("'%s': revision %u is current (was %u)\n", o->args[0], to, cur);
        return 0;
}

static int image_rm(ImageOpts *o) {
        _cleanup_image_store_ ImageStore *s = NULL;
        _cleanup_free_ char *name = NULL;
        unsigned rev;
        int k;

        if (o->n_args != 1)
                return log_error_errno(EINVAL, "Usage: kiln image rm NAME[@REV]"), 2;
        if (image_ref_parse(o->args[0], &name, &rev) < 0)
                return log_error_errno(EINVAL, "Invalid image reference '%s'", o->args[0]), 2;
        if (open_store(o, &s) < 0)
                return 1;
        k = image_remove(s, name, rev);
        if (k == -EBUSY)
                return log_error_errno(k, "Revision %u of '%s' is current (roll back first) or in use by a sandbox",
                                       rev, name), 1;
        if (k == -ENOENT)
                return log_error_errno(k, "No image '%s'", o->args[0]), 1;
        if (k < 0)
                return log_error_errno(k, "Failed to remove '%s': %m", o->args[0]), 1;
        if (!o->json)
                printf("removed %s\n", o->args[0]);
        return 0;
}

static int image_path_verb(ImageOpts *o) {
        _cleanup_image_store_ ImageStore *s = NULL;
        _cleanup_free_ char *name = NULL, *dir = NULL;
        unsigned rev;

        if (o->n_args != 1 || image_ref_parse(o->args[0], &name, &rev) < 0)
                return log_error_errno(EINVAL, "Usage: kiln image path NAME[@REV]"), 2;
        if (open_store(o, &s) < 0)
                return 1;
        if (rev == 0 && image_current(s, name, &rev) < 0)
                return log_error_errno(ENOENT, "Image '%s' has no current revision", name), 1;
        dir = image_rev_dir(s, name, rev, false);
        if (!dir || access(dir, F_OK) < 0)
                return log_error_errno(ENOENT, "Image '%s' has no revision %u", name, rev), 1;
        printf("%s/rootfs\n", dir);
        return 0;
}

static int image_push_verb(ImageOpts *o) {
        _cleanup_image_store_ ImageStore *s = NULL;
        _cleanup_free_ char *name = NULL;
        char digest[72];
        unsigned rev;

        if (o->n_args != 1 || image_ref_parse(o->args[0], &name, &rev) < 0)
                return log_error_errno(EINVAL, "Usage: kiln image push NAME[@REV] --server URL --token TOKEN"), 2;
        if (need_server(o) < 0)
                return 2;
        if (open_store(o, &s) < 0)
                return 1;
        if (rev == 0 && image_current(s, name, &rev) < 0)
                return log_error_errno(ENOENT, "Image '%s' has no current revision", name), 1;
        if (image_push(s, &o->remote, name, rev, digest) < 0)
                return 1;
        if (o->json)
                printf("{\"image\": \"%s\", \"revision\": %u, \"digest\": \"%s\"}\n", name, rev, digest);
        else
                printf("published revision %u of '%s' (%s)\n", rev, name, digest);
        return 0;
}

static int image_pull_verb(ImageOpts *o) {
        _cleanup_image_store_ ImageStore *s = NULL;
        char digest[72];
        unsigned rev = 0;
        bool fetched = false;

        if (need_name(o, "pull NAME --server URL --token TOKEN") < 0 || need_server(o) < 0)
                return 2;
        if (open_store(o, &s) < 0)
                return 1;
        if (image_pull(s, &o->remote, o->args[0], &rev, digest, &fetched) < 0)
                return 1;
        if (o->json)
                printf("{\"image\": \"%s\", \"revision\": %u, \"digest\": \"%s\", \"fetched\": %s}\n",
                       o->args[0], rev, digest, fetched ? "true" : "false");
        else
                printf("revision %u of '%s' is current (%s%s)\n", rev, o->args[0], digest,
                       fetched ? "" : ", already here");
        return 0;
}

int verb_image(int argc, char **argv) {
        ImageOpts o = {};
        static const struct {
                const char *name;
                int (*run)(ImageOpts *o);
        } cmds[] = {
                { "import", image_import_verb }, { "ls", image_ls }, { "show", image_show },
                { "rollback", image_rollback }, { "rm", image_rm }, { "path", image_path_verb },
                { "push", image_push_verb }, { "pull", image_pull_verb },
        };
        int r;

        if (argc < 2 || streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
                image_usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        image_recipe_init(&o.recipe);
        r = parse_opts(argc - 1, argv + 1, &o);
        if (r <= 0) {
                image_recipe_done(&o.recipe);
                return r < 0 ? 2 : 0;
        }
        if (streq(argv[1], "build") || streq(argv[1], "rebuild")) {
                r = image_build_verb(&o, streq(argv[1], "rebuild"));
                image_recipe_done(&o.recipe);
                return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(cmds); i++)
                if (streq(argv[1], cmds[i].name)) {
                        r = cmds[i].run(&o);
                        image_recipe_done(&o.recipe);
                        return r;
                }
        image_recipe_done(&o.recipe);
        log_error("Unknown image command '%s'. See 'kiln image --help'.", argv[1]);
        return 2;
}
