/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "sandbox.h"
#include "verbs.h"

static const Verb verbs[] = {
        { "run", verb_run, "run this directory (or -- CMD) as a job and follow it" },
        { "up", verb_up, "a server and a worker in one process: the embedded default" },
        { "ps", verb_ps, "list jobs" },
        { "logs", verb_logs, "print or follow a job's logs" },
        { "watch", verb_watch, "a live table of a job's tasks" },
        { "cancel", verb_cancel, "cancel jobs" },
        { "retry", verb_retry, "queue a finished job's failed tasks again" },
        { "artifacts", verb_artifacts, "list or download a job's artifacts" },
        { "workers", verb_workers, "list the workers" },
        { "top", verb_top, "full-screen live view of the queue and the workers" },
        { "server", verb_server, "run the control plane: API, queue, logs, artifacts" },
        { "token", verb_token, "create, list and revoke API tokens" },
        { "secret", verb_secret, "set, list and delete secrets" },
        { "worker", verb_worker, "run tasks from a server's queue in fresh sandboxes" },
        { "image", verb_image, "build, import, switch and roll back runner images" },
        { "sandbox", verb_sandbox, "run a command in a fresh sandbox; manage sandboxes" },
        { "validate", verb_validate, "check a kiln.yml and show the job it describes" },
        { "version", verb_version, "print kiln's version" },
        { "help", verb_help, "show help for a command" },
        { "__workspace", verb_workspace_helper, NULL }, /* the worker's own helper */
        { "__sandboxd", sandbox_spawner_main, NULL },   /* the worker's sandbox spawner */
};

const Verb *verb_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].name, name))
                        return &verbs[i];
        return NULL;
}

static void usage(FILE *f) {
        fprintf(f, "Usage: kiln COMMAND [OPTIONS…]\n\n"
                   "kiln runs CI jobs in fresh, isolated sandboxes on your own machines.\n\n"
                   "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (verbs[i].summary)
                        fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
        fprintf(f, "\nRun 'kiln help COMMAND' or 'kiln COMMAND --help' for a command's options.\n");
}

int verb_version(int argc _unused_, char **argv _unused_) {
        printf("kiln %s\n", KILN_VERSION);
        return 0;
}

int verb_help(int argc, char **argv) {
        if (argc < 2) {
                usage(stdout);
                return 0;
        }
        const Verb *v = verb_find(argv[1]);
        if (!v) {
                log_error("Unknown command '%s'. See 'kiln help'.", argv[1]);
                return 2;
        }
        char *args[] = { argv[1], (char *) "--help", NULL };
        return v->run(2, args);
}

int main(int argc, char **argv) {
        const char *lvl = getenv("KILN_LOG_LEVEL");
        if (lvl) {
                int l = log_level_from_string(lvl);
                if (l >= 0)
                        log_set_max_level(l);
        }
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (streq(argv[1], "--help") || streq(argv[1], "-h")) {
                usage(stdout);
                return 0;
        }
        if (streq(argv[1], "--version"))
                return verb_version(argc - 1, argv + 1);

        const Verb *v = verb_find(argv[1]);
        if (!v) {
                log_error("Unknown command '%s'. See 'kiln help'.", argv[1]);
                return 2;
        }
        int r = v->run(argc - 1, argv + 1);
        /* Nothing is left to clean up that the kernel does not: the libraries'
         * exit handlers (OpenSSL's, GnuTLS's, loaded with libcurl) would only
         * free memory, and cost a short command a noticeable share of its
         * run time. */
        if (fflush(NULL) != 0 && r == 0)
                r = 1;
        _exit(r);
}
