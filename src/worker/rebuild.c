/* SPDX-License-Identifier: MIT */
/* Scheduled rebuilds in one of the worker's slots. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs-util.h"
#include "log.h"
#include "rebuild.h"
#include "strv.h"
#include "threads.h"
#include "worker-internal.h"

/* The child's environment: ours, with the worker's session as the token the
 * rebuild reports with (POST /api/v1/images/NAME/builds accepts sessions). */
static int rebuild_env(Worker *w, char ***ret) {
        _cleanup_strv_free_ char **env = NULL;
        _cleanup_free_ char *tok = NULL;

        for (char **e = environ; e && *e; e++)
                if (!strneq(*e, "KILN_TOKEN=", 11) && !strneq(*e, "KILN_SERVER=", 12) && strv_extend(&env, *e) < 0)
                        return -ENOMEM;
        if (asprintf(&tok, "KILN_TOKEN=%s", w->session) < 0 || strv_extend(&env, tok) < 0)
                return -ENOMEM;
        explicit_bzero(tok, strlen(tok));
        *ret = TAKE_PTR(env);
        return 0;
}

static void slot_take(Worker *w, const char *name) {
        const WorkerConfig *c = w->cfg;
        bool said = false;

        pthread_mutex_lock(&w->lock);
        w->rebuild_waiting = true;
        while (!atomic_load(&w->draining) && w->used_slots + w->claim_asked + 1 > c->slots) {
                if (!said) {
                        log_info("Scheduled rebuild of '%s': waiting for a free slot (%u of %u in use)", name,
                                 w->used_slots, c->slots);
                        said = true;
                }
                pthread_cond_wait(&w->cond, &w->lock);
        }
        w->rebuild_waiting = false;
        if (!atomic_load(&w->draining)) {
                w->used_slots++;
                w->rebuild_running = true;
        }
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

static void slot_give_back(Worker *w) {
        pthread_mutex_lock(&w->lock);
        w->used_slots--;
        w->rebuild_running = false;
        w->rebuild_pid = 0;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

int rebuild_run(Worker *w, const char *name) {
        const WorkerConfig *c = w->cfg;
        _cleanup_strv_free_ char **env = NULL;
        char *argv[16];
        size_t n = 0;
        int r, status;

        r = rebuild_env(w, &env);
        if (r < 0)
                return log_error_errno(r, "Scheduled rebuild of '%s': %m", name);
        argv[n++] = (char *) "kiln";
        argv[n++] = (char *) "image";
        argv[n++] = (char *) "rebuild";
        argv[n++] = (char *) name;
        argv[n++] = (char *) "--scheduled";
        argv[n++] = (char *) "--no-publish";
        argv[n++] = (char *) "--data";
        argv[n++] = (char *) c->data_dir;
        argv[n++] = (char *) "--server";
        argv[n++] = (char *) c->server;
        if (c->base_cache) {
                argv[n++] = (char *) "--base-cache";
                argv[n++] = (char *) c->base_cache;
        }
        argv[n] = NULL;

        slot_take(w, name);
        pthread_mutex_lock(&w->lock);
        bool running = w->rebuild_running;
        pthread_mutex_unlock(&w->lock);
        if (!running) {
                log_info("Scheduled rebuild of '%s' not run: the worker is stopping", name);
                return -ECANCELED;
        }
        log_info("Scheduled rebuild of '%s' started in one of %u slots", name, c->slots);
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        pid_t pid = worker_fork();
        if (pid == 0) {
                /* Only async-signal-safe calls until execve(). The worker's
                 * blocked and ignored signals are not the rebuild's. */
                sigset_t none;
                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                (void) signal(SIGPIPE, SIG_DFL);
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                execve("/proc/self/exe", argv, env);
                _exit(127);
        }
        if (pid < 0) {
                r = log_error_errno(errno, "Scheduled rebuild of '%s': cannot start it: %m", name);
                slot_give_back(w);
                atomic_fetch_add(&w->m.rebuilds_failed, 1);
                return r;
        }
        pthread_mutex_lock(&w->lock);
        w->rebuild_pid = pid;
        pthread_mutex_unlock(&w->lock);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        status = -1;
                        break;
                }
        slot_give_back(w);
        double secs = (double) (now_usec(CLOCK_MONOTONIC) - t0) / 1e6;
        atomic_fetch_add(&w->m.rebuilds, 1);
        atomic_store(&w->images_changed, true);
        if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                log_info("Scheduled rebuild of '%s' succeeded in %.1f s", name, secs);
                return 0;
        }
        atomic_fetch_add(&w->m.rebuilds_failed, 1);
        if (status >= 0 && WIFSIGNALED(status))
                log_error("Scheduled rebuild of '%s' killed by signal %d after %.1f s", name, WTERMSIG(status), secs);
        else
                log_error("Scheduled rebuild of '%s' failed (exit status %d) after %.1f s: see kiln image show %s",
                          name, status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1, secs, name);
        return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -ECHILD;
}

void rebuild_kill_locked(Worker *w) {
        if (w->rebuild_pid > 0)
                (void) kill(w->rebuild_pid, SIGTERM);
}
