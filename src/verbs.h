/* SPDX-License-Identifier: MIT */
#pragma once

/* Subcommands: each takes argv with argv[0] being the command's own name and
 * returns the process exit status. */
typedef struct Verb {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *summary;
} Verb;

const Verb *verb_find(const char *name);

int verb_run(int argc, char **argv);
int verb_up(int argc, char **argv);
int verb_ps(int argc, char **argv);
int verb_logs(int argc, char **argv);
int verb_watch(int argc, char **argv);
int verb_cancel(int argc, char **argv);
int verb_retry(int argc, char **argv);
int verb_artifacts(int argc, char **argv);
int verb_workers(int argc, char **argv);
int verb_top(int argc, char **argv);
int verb_server(int argc, char **argv);
int verb_token(int argc, char **argv);
int verb_secret(int argc, char **argv);
int verb_image(int argc, char **argv);
int verb_sandbox(int argc, char **argv);
int verb_worker(int argc, char **argv);
int verb_validate(int argc, char **argv);
int verb_workspace_helper(int argc, char **argv);
int verb_version(int argc, char **argv);
int verb_help(int argc, char **argv);
