/* SPDX-License-Identifier: MIT */
#pragma once

/* Thread and process creation that never overlaps the clone() of a sandbox's
 * init.
 *
 * The sandbox engine creates a sandbox's PID 1 with a raw clone() of the
 * calling thread, and PID 1 then goes on with glibc calls that take
 * process-wide glibc locks and read glibc's list of threads: setgroups() and
 * setresuid() (glibc runs them on every listed thread) and malloc(). The
 * child inherits those as they were at that instant. A thread that was still
 * starting (glibc marks it "being created" until it runs), a thread being
 * joined or created (both hold the stack cache lock) or a fork in progress
 * leaves the child waiting forever. So the worker creates, joins and forks
 * under a read lock, threads are announced only once they run, and the
 * sandbox engine takes the write lock around each of its clone() calls
 * (sandbox_set_clone_guard(), set up by the pool) — only there: what the
 * child inherits is fixed at that instant, so a whole prepare (a mkfs, NAT
 * set-up: tens of milliseconds) need not hold back a task's threads. Joined
 * threads are parked and reused by the next create, which then takes no lock
 * at all: a parked thread is neither starting nor being joined. (No thread
 * is created by a library: libcurl resolves no names itself, see client.c.
 * The malloc arena is covered by giving the pool thread an arena of its own,
 * see worker.c.)
 * The complete fix belongs in the sandbox engine: raw system calls and no
 * malloc() in PID 1 after the clone. */

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

/* Joinable threads only; join them with worker_thread_join(). */
int worker_thread_create(pthread_t *t, void *(*fn)(void *), void *arg);
int worker_thread_join(pthread_t t, void **ret);
/* -ETIMEDOUT when the thread is still running after timeout_usec. */
int worker_thread_timedjoin(pthread_t t, uint64_t timeout_usec);
pid_t worker_fork(void);
void worker_clone_guard_begin(void);
void worker_clone_guard_end(void);
