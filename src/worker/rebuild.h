/* SPDX-License-Identifier: MIT */
#pragma once

/* Scheduled rebuilds (kiln worker --rebuild NAME@HH:MM, docs/worker.md): the
 * rebuild takes one of the worker's slots exactly like a task, so a host
 * limited to N sandboxes or VMs never runs N + 1. */

typedef struct Worker Worker;

/* Waits for a free slot (the claim loop leaves one free meanwhile), takes
 * it, runs `kiln image rebuild NAME --scheduled` on the worker's image store
 * as a child process, reporting to the server with the worker's session,
 * and gives the slot back. Returns the child's exit status, or -errno
 * (-ECANCELED when the worker drained while it waited). */
int rebuild_run(Worker *w, const char *name);

/* SIGTERM to a rebuild in progress (a hard stop). Call with the worker's
 * lock held. */
void rebuild_kill_locked(Worker *w);
