/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "jobfile.h"
#include "jobspec.h"
#include "log.h"
#include "verbs.h"

static void help(void) {
        printf("Usage: kiln validate [-f FILE] [--json | --tasks]\n\n"
               "Checks a jobfile and shows the job it describes.\n\n"
               "  -f, --file FILE  the jobfile (default: ./kiln.yml)\n"
               "      --json       print the normalized JSON job spec\n"
               "      --tasks      print the tasks the job expands to, as JSON\n"
               "  -h, --help       show this help\n\n"
               "Errors are printed as FILE:LINE:COLUMN: PATH: MESSAGE; the exit status is 1.\n");
}

/* Keeps the error on one line whatever the jobfile's keys contain. */
static void print_sanitized(FILE *f, const char *s) {
        for (; *s; s++)
                fputc((unsigned char) *s < 0x20 || *s == 0x7f ? '?' : *s, f);
}

static void print_error(const char *file, const JobFileError *e) {
        print_sanitized(stderr, file);
        if (e->line > 0)
                fprintf(stderr, ":%u:%u", e->line, e->column);
        fputs(": ", stderr);
        if (!isempty(e->path)) {
                print_sanitized(stderr, e->path);
                fputs(": ", stderr);
        }
        print_sanitized(stderr, e->message);
        fputc('\n', stderr);
}

int verb_validate(int argc, char **argv) {
        enum { ARG_JSON = 0x100, ARG_TASKS };
        static const struct option options[] = {
                { "file", required_argument, NULL, 'f' },
                { "json", no_argument, NULL, ARG_JSON },
                { "tasks", no_argument, NULL, ARG_TASKS },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        _cleanup_(jobfile_freep) JobFile *f = NULL;
        json_auto_t *tasks = NULL;
        const char *file = "kiln.yml";
        JobFileError err = {};
        JobSpecError serr = {};
        bool json = false, show_tasks = false;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "f:h", options, NULL)) >= 0)
                switch (c) {
                case 'f':
                        file = optarg;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                case ARG_TASKS:
                        show_tasks = true;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return 2;
                }
        if (json && show_tasks) {
                log_error("--json and --tasks are mutually exclusive.");
                return 2;
        }
        if (optind < argc) {
                log_error("Unexpected argument '%s'. See 'kiln validate --help'.", argv[optind]);
                return 2;
        }

        r = jobfile_load(file, &f, &err);
        if (r == -ENOMEM) {
                log_error_errno(r, "Out of memory.");
                return 1;
        }
        if (r < 0) {
                print_error(file, &err);
                return 1;
        }
        if (json) {
                if (json_dumpf(jobfile_spec(f), stdout, JSON_INDENT(2)) < 0 || fputc('\n', stdout) == EOF) {
                        log_error("Failed to write the job spec.");
                        return 1;
                }
                return 0;
        }
        r = jobspec_expand_tasks(jobfile_spec(f), &tasks, &serr);
        if (r < 0) {
                log_error_errno(r, "Failed to expand tasks: %s: %s", serr.path, serr.message);
                return 1;
        }
        if (show_tasks) {
                if (json_dumpf(tasks, stdout, JSON_INDENT(2)) < 0 || fputc('\n', stdout) == EOF) {
                        log_error("Failed to write the tasks.");
                        return 1;
                }
                return 0;
        }
        printf("ok: %zu task%s\n", json_array_size(tasks), json_array_size(tasks) == 1 ? "" : "s");
        return 0;
}
