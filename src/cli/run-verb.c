/* SPDX-License-Identifier: MIT */
/* kiln run: pack the directory in front of you, submit it as a job, follow
 * its log and exit with its status (docs/cli.md). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive-safe.h"
#include "cli.h"
#include "fd-util.h"
#include "fs-util.h"
#include "jobfile.h"
#include "jobspec.h"
#include "log.h"
#include "parse-util.h"
#include "strv.h"
#include "run-follow.h"
#include "verbs.h"
#include "workspace-pack.h"

static void run_usage(FILE *f) {
        fprintf(f,
                "Usage: kiln run [OPTIONS] [-- CMD [ARG…]]\n\n"
                "Runs the current directory as a job: packs it (in a git checkout the tracked\n"
                "and the untracked-but-not-ignored files, elsewhere everything but what\n"
                ".kilnignore lists), uploads it unless the server has it, runs ./kiln.yml\n"
                "(or CMD), streams the log and exits with the job's status: the first failing\n"
                "task's exit code, 0 when every task succeeded or warned. Ctrl-C cancels the job\n"
                "and waits for it to stop; a second Ctrl-C detaches.\n\n"
                "With no server configured, uses a running 'kiln up', or starts a private one.\n\n"
                "Options:\n"
                "  -f, --file FILE        the jobfile [kiln.yml]; ignored with -- CMD\n"
                "      --image NAME       the image [the jobfile's, else the worker's default]\n"
                "  -e, --env K=V          an environment variable for every task (repeatable)\n"
                "      --secret NAME      a secret the job may read (repeatable)\n"
                "      --artifact GLOB    files to keep after each task (repeatable)\n"
                "      --timeout D        the task's time limit (e.g. 10m)\n"
                "      --network MODE     none (loopback only) or nat (outbound) [the jobfile's,\n"
                "                         else the worker's]\n"
                "      --label K=V        a label the worker must have (repeatable)\n"
                "  -o, --output DIR       download the artifacts into DIR\n"
                "  -d, --detach           submit, print the job id and exit\n"
                "  -q, --quiet            no summary lines, only the log\n"
                "      --server URL, --token TOKEN   [$KILN_SERVER, $KILN_TOKEN, config file]\n");
}

typedef struct RunOpts {
        ApiOptions api;
        const char *file;
        bool file_given;
        const char *image, *timeout, *output, *network;
        char **env, **secrets, **artifacts, **labels;
        char **cmd;
        bool detach, quiet;
} RunOpts;

static int kv_check(const char *opt, const char *arg) {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg)
                return log_error_errno(EINVAL, "%s: expected KEY=VALUE, not '%s'.", opt, arg);
        return 0;
}

static int run_parse(int argc, char **argv, RunOpts *o) {
        enum { ARG_IMAGE = 0x100, ARG_SECRET, ARG_ARTIFACT, ARG_TIMEOUT, ARG_LABEL, ARG_SERVER, ARG_TOKEN,
               ARG_NETWORK };
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "file", required_argument, NULL, 'f' },
                { "image", required_argument, NULL, ARG_IMAGE },
                { "env", required_argument, NULL, 'e' },
                { "secret", required_argument, NULL, ARG_SECRET },
                { "artifact", required_argument, NULL, ARG_ARTIFACT },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "network", required_argument, NULL, ARG_NETWORK },
                { "label", required_argument, NULL, ARG_LABEL },
                { "output", required_argument, NULL, 'o' },
                { "detach", no_argument, NULL, 'd' },
                { "quiet", no_argument, NULL, 'q' },
                { "server", required_argument, NULL, ARG_SERVER },
                { "token", required_argument, NULL, ARG_TOKEN },
                {},
        };
        uint64_t u;
        int c;

        o->file = "kiln.yml";
        o->api.start_private = true;
        optind = 0;
        /* '+': options end at the first non-option (the command). */
        while ((c = getopt_long(argc, argv, "+hf:e:o:dq", opts, NULL)) >= 0)
                switch (c) {
                case 'h':
                        run_usage(stdout);
                        return 1;
                case 'f': o->file = optarg; o->file_given = true; break;
                case ARG_IMAGE: o->image = optarg; break;
                case 'e':
                        if (kv_check("--env", optarg) < 0)
                                return -EINVAL;
                        if (strv_extend(&o->env, optarg) < 0)
                                return -ENOMEM;
                        break;
                case ARG_SECRET:
                        if (strv_extend(&o->secrets, optarg) < 0)
                                return -ENOMEM;
                        break;
                case ARG_ARTIFACT:
                        if (strv_extend(&o->artifacts, optarg) < 0)
                                return -ENOMEM;
                        break;
                case ARG_LABEL:
                        if (kv_check("--label", optarg) < 0)
                                return -EINVAL;
                        if (strv_extend(&o->labels, optarg) < 0)
                                return -ENOMEM;
                        break;
                case ARG_TIMEOUT:
                        if (parse_duration(optarg, &u) < 0 || u == 0)
                                return log_error_errno(EINVAL, "--timeout: invalid duration '%s' (e.g. 90s, 10m).",
                                                       optarg);
                        o->timeout = optarg;
                        break;
                case ARG_NETWORK:
                        if (!streq(optarg, "none") && !streq(optarg, "nat"))
                                return log_error_errno(EINVAL, "--network: 'none' or 'nat', not '%s'.", optarg);
                        o->network = optarg;
                        break;
                case 'o': o->output = optarg; break;
                case 'd': o->detach = true; break;
                case 'q': o->quiet = true; break;
                case ARG_SERVER: o->api.server = optarg; break;
                case ARG_TOKEN: o->api.token = optarg; break;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                o->cmd = argv + optind;
                if (optind > 0 && !streq(argv[optind - 1], "--"))
                        return log_error_errno(EINVAL, "Unexpected argument '%s': put the command after '--'.",
                                               argv[optind]);
        }
        return 0;
}

static void print_jobfile_error(const char *file, const JobFileError *e) {
        cli_print_safe(stderr, file);
        if (e->line > 0)
                fprintf(stderr, ":%u:%u", e->line, e->column);
        fputs(": ", stderr);
        if (!isempty(e->path)) {
                cli_print_safe(stderr, e->path);
                fputs(": ", stderr);
        }
        cli_print_safe(stderr, e->message);
        fputc('\n', stderr);
}

static int strv_to_object(char **kv, json_t *obj) {
        for (char **p = kv; p && *p; p++) {
                const char *eq = strchr(*p, '=');
                _cleanup_free_ char *k = strndup(*p, (size_t) (eq - *p));
                if (!k || json_object_set_new(obj, k, json_string(eq + 1)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static json_t *object_get_or_add(json_t *spec, const char *key, bool array) {
        json_t *v = json_object_get(spec, key);
        if (v)
                return v;
        v = array ? json_array() : json_object();
        if (json_object_set_new(spec, key, v) < 0)
                return NULL;
        return v;
}

/* The job spec: the jobfile's, or one step running CMD; the options on top. */
static int run_build_spec(const RunOpts *o, json_t **ret) {
        _cleanup_(jobfile_freep) JobFile *jf = NULL;
        JobFileError ferr = {};
        JobSpecError serr = {};
        json_t *spec;
        int r;

        if (o->cmd) {
                json_t *argv = json_array();
                for (char **p = o->cmd; *p; p++)
                        json_array_append_new(argv, json_string(*p));
                _cleanup_free_ char *cwd = getcwd(NULL, 0);
                const char *base = cwd && strrchr(cwd, '/') && strrchr(cwd, '/')[1] ? strrchr(cwd, '/') + 1 : "run";
                char name[129];
                snprintf(name, sizeof name, "%s", base);
                for (char *c = name; *c; c++)
                        if ((unsigned char) *c < 0x20)
                                *c = '?';
                spec = json_pack("{s:s, s:[{s:o}]}", "name", name, "steps", "argv", argv);
        } else {
                r = jobfile_load(o->file, &jf, &ferr);
                if (r == -ENOENT && !o->file_given && ferr.line == 0) {
                        log_error("No kiln.yml here: write one (docs/jobfile.md), pass -f FILE, or give a command: "
                                  "kiln run -- CMD…");
                        return -ENOENT;
                }
                if (r < 0) {
                        print_jobfile_error(o->file, &ferr);
                        return -EINVAL;
                }
                spec = json_deep_copy(jobfile_spec(jf));
        }
        if (!spec)
                return -ENOMEM;
        if (o->image && json_object_set_new(spec, "image", json_string(o->image)) < 0)
                goto oom;
        if (o->timeout && json_object_set_new(spec, "timeout", json_string(o->timeout)) < 0)
                goto oom;
        if (o->network && json_object_set_new(spec, "network", json_string(o->network)) < 0)
                goto oom;
        if (o->env && strv_to_object(o->env, object_get_or_add(spec, "env", false)) < 0)
                goto oom;
        if (o->labels && strv_to_object(o->labels, object_get_or_add(spec, "labels", false)) < 0)
                goto oom;
        for (char **p = o->secrets; p && *p; p++)
                if (json_array_append_new(object_get_or_add(spec, "secrets", true), json_string(*p)) < 0)
                        goto oom;
        for (char **p = o->artifacts; p && *p; p++)
                if (json_array_append_new(object_get_or_add(spec, "artifacts", true), json_string(*p)) < 0)
                        goto oom;
        r = jobspec_validate(spec, &serr);
        if (r < 0) {
                log_error("Invalid job: %s%s%s", serr.path, serr.path[0] ? ": " : "", serr.message);
                json_decref(spec);
                return -EINVAL;
        }
        *ret = spec;
        return 0;
oom:
        json_decref(spec);
        return -ENOMEM;
}

static int run_upload(Api *api, const RunWorkspace *ws, bool verbose) {
        json_t *missing = NULL, *body = json_pack("{s:[s]}", "digests", ws->digest);
        char path[128];
        int r;

        if (!body)
                return -ENOMEM;
        r = api_call(api, "POST", "/api/v1/blobs/missing", body, &missing);
        json_decref(body);
        if (r < 0)
                return r;
        bool need = json_array_size(json_object_get(missing, "missing")) > 0;
        json_decref(missing);
        if (!need) {
                if (verbose)
                        fprintf(stderr, "kiln: workspace %s (%" PRIu64 " files) is already on the server\n",
                                ws->digest, ws->files);
                return 0;
        }
        if (ws->fd < 0)
                return -ENODATA;
        if (verbose)
                fprintf(stderr, "kiln: uploading the workspace: %" PRIu64 " files, %.1f KiB\n", ws->files,
                        (double) ws->size / 1024.0);
        snprintf(path, sizeof path, "/api/v1/blobs/%s", ws->digest);
        return api_put_fd(api, path, ws->fd, ws->size, NULL);
}


int verb_run(int argc, char **argv) {
        RunOpts o = {};
        _cleanup_(api_freep) Api *api = NULL;
        json_t *spec = NULL, *job = NULL;
        RunWorkspace ws = { .fd = -EBADF };
        int r, status = 1;

        r = run_parse(argc, argv, &o);
        if (r != 0) {
                status = r > 0 ? 0 : 2;
                goto finish;
        }
        cli_sigint_install();
        r = run_build_spec(&o, &spec);
        if (r < 0)
                goto finish;
        r = run_workspace_pack(".", true, &ws);
        if (r < 0)
                goto finish;
        r = api_open(&o.api, &api);
        if (r < 0)
                goto finish;
        r = run_upload(api, &ws, !o.quiet && isatty(STDERR_FILENO));
        if (r == -ENODATA) {
                /* The server lacks a workspace known only by its digest: pack it now. */
                safe_close(ws.fd);
                ws = (RunWorkspace) { .fd = -EBADF };
                r = run_workspace_pack(".", false, &ws);
                if (r >= 0)
                        r = run_upload(api, &ws, !o.quiet && isatty(STDERR_FILENO));
        }
        if (r >= 0 && json_object_set_new(spec, "workspace", json_string(ws.digest)) < 0)
                r = -ENOMEM;
        if (r == -EINTR) {
                status = 130;
                goto finish;
        }
        if (r < 0)
                goto finish;
        if (cli_sigint_count() > 0) {
                status = 130;
                goto finish;
        }
        r = api_call(api, "POST", "/api/v1/jobs", spec, &job);
        if (r < 0)
                goto finish;
        int64_t id = json_integer_value(json_object_get(job, "id"));
        if (o.detach) {
                printf("%" PRId64 "\n", id);
                status = 0;
                goto finish;
        }
        if (!o.quiet && isatty(STDERR_FILENO))
                fprintf(stderr, "kiln: job %" PRId64 " on %s\n", id, api_server(api));

        json_t *final = NULL;
        FollowOpts fo = { .summary = !o.quiet, .cancel_on_sigint = true };
        status = follow_job(api, job, &fo, &final);
        if (status >= 0 && o.output && final && fo.outcome != FOLLOW_DETACHED)
                if (cli_download_artifacts(api, id, final, o.output) < 0 && status == 0)
                        status = 1;
        json_decref(final);
        if (status < 0)
                status = 1;
finish:
        json_decref(spec);
        json_decref(job);
        safe_close(ws.fd);
        strv_free(o.env);
        strv_free(o.secrets);
        strv_free(o.artifacts);
        strv_free(o.labels);
        return status;
}

/* Extracts every artifact of the job into dir (dir/TASK/ when it has several
 * tasks), with the same refusals as the worker's workspace extraction. */
int cli_download_artifacts(Api *api, int64_t job, json_t *jobj, const char *dir) {
        json_t *list = NULL, *a;
        char path[128];
        size_t i;
        int r;

        snprintf(path, sizeof path, "/api/v1/jobs/%" PRId64 "/artifacts", job);
        r = api_call(api, "GET", path, NULL, &list);
        if (r < 0)
                return r;
        bool several = json_array_size(json_object_get(jobj, "tasks")) > 1;
        r = 0;
        json_array_foreach(json_object_get(list, "artifacts"), i, a) {
                int64_t aid = json_integer_value(json_object_get(a, "id"));
                int64_t tid = json_integer_value(json_object_get(a, "task"));
                char tidbuf[32], target[4096];
                snprintf(tidbuf, sizeof tidbuf, "%" PRId64, tid);
                json_t *t = cli_job_find_task(jobj, tidbuf);
                const char *tname = t ? json_string_value(json_object_get(t, "name")) : NULL;
                if (several) {
                        char safe[160];
                        snprintf(safe, sizeof safe, "%s", tname && *tname && tname[0] != '.' ? tname : tidbuf);
                        for (char *c = safe; *c; c++)
                                if (*c == '/' || (unsigned char) *c < 0x20)
                                        *c = '_';
                        snprintf(target, sizeof target, "%s/%s", dir, safe);
                } else
                        snprintf(target, sizeof target, "%s", dir);
                r = mkdir_p(target, 0755);
                if (r < 0)
                        break;
                _cleanup_close_ int fd = memfd_create("kiln-artifact", MFD_CLOEXEC);
                _cleanup_close_ int tfd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0 || tfd < 0) {
                        r = -errno;
                        break;
                }
                snprintf(path, sizeof path, "/api/v1/artifacts/%" PRId64, aid);
                r = api_download(api, path, fd);
                if (r < 0)
                        break;
                if (lseek(fd, 0, SEEK_SET) < 0) {
                        r = -errno;
                        break;
                }
                ArchiveError err = {};
                ArchiveStats st = {};
                r = archive_extract_safe(fd, tfd, NULL, &st, &err);
                if (r < 0) {
                        log_error("Failed to extract artifact %" PRId64 " into '%s': %s", aid, target, err.message);
                        break;
                }
                if (isatty(STDERR_FILENO))
                        fprintf(stderr, "kiln: %" PRIu64 " files into %s\n", st.n_files, target);
        }
        json_decref(list);
        if (r < 0 && r != -EINVAL)
                log_error_errno(r, "Failed to download the artifacts into '%s': %m", dir);
        return r;
}
