/* SPDX-License-Identifier: MIT */
#pragma once

/* The sandbox engine: fresh, isolated sandboxes built from Linux namespaces,
 * an overlay root, cgroup limits and a seccomp filter.
 *
 * A Sandbox is prepared ahead of time (namespaces, mounts, cgroup, network and
 * its PID 1 init all in place) and then runs one or more commands, each a
 * child of the sandbox's init, with stdio the caller passes in. Destroying it
 * kills everything inside and removes everything it created on the host. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "macro.h"

typedef enum NetworkMode {
        NETWORK_NONE, /* loopback only */
        NETWORK_NAT,  /* veth pair + masquerade through kiln's nftables table */
        NETWORK_HOST, /* the host's network namespace: only when the operator allows it */
        _NETWORK_MAX,
} NetworkMode;

const char *network_mode_to_string(NetworkMode m);
int network_mode_from_string(const char *s);

typedef struct BindMount {
        char *source;
        char *target;
        bool read_only;
} BindMount;

typedef struct SandboxConfig {
        char *image;        /* "host" or the path of a root filesystem directory */
        uint64_t memory_max; /* bytes; 0 = no limit */
        uint64_t pids_max;   /* 0 = no limit */
        uint64_t cpu_millis; /* 1000 = one CPU; 0 = no limit */
        uint64_t disk_max;   /* bytes of the writable layer; 0 = no limit */
        /* Without a disk quota, the writable layer lives in a tmpfs private to the
         * sandbox instead of under its state directory: nothing of it touches the
         * disk, and it is gone with the sandbox's mount namespace. Its pages are
         * charged to the writer's memory cgroup, so it counts against memory_max;
         * its size is memory_max, or half of the host's RAM without a limit. Only
         * for callers whose sandboxes write little: the state directory then holds
         * no upper/ for them to read. */
        bool layer_in_memory;
        NetworkMode network;
        BindMount *binds;
        size_t n_binds;
        char **mask_paths; /* further host paths hidden inside (the host image masks secrets anyway) */
        char *hostname;
} SandboxConfig;

void sandbox_config_done(SandboxConfig *c);

/* Parses "SRC:DST[:ro|:rw]". */
int bind_mount_parse(const char *s, BindMount *ret);

typedef struct SandboxExec {
        char **argv;
        char **env;       /* complete environment; NULL for a default PATH/HOME/TERM */
        const char *cwd;  /* inside the sandbox; NULL = "/" */
        int stdin_fd;     /* < 0: /dev/null */
        int stdout_fd;    /* < 0: /dev/null */
        int stderr_fd;    /* < 0: /dev/null */
        uid_t uid;        /* inside the sandbox; 0 = root */
        gid_t gid;
} SandboxExec;

typedef struct SandboxExitStatus {
        int code;     /* exit status when exited normally */
        int signal;   /* terminating signal, or 0 */
        bool oom_killed;
        bool exec_failed; /* the command could not be started (code is 127) */
        int exec_errno;   /* why, when exec_failed */
} SandboxExitStatus;

/* 0..255 for a normal exit, 128+N when killed by signal N. */
int sandbox_exit_status_to_code(const SandboxExitStatus *st);

typedef struct Sandbox Sandbox;

/* Builds a sandbox and starts its init. The caller's thread must stay alive for
 * as long as the sandbox lives: the sandbox's init dies with it (PDEATHSIG). */
int sandbox_prepare(const SandboxConfig *c, Sandbox **ret);
/* Called around each clone() sandbox_prepare() makes (PID 1, and the
 * throwaway child that creates the user namespace), and around nothing else:
 * a child inherits the process as it is at that instant only, so that is
 * where an embedder keeps its thread creations, joins and forks away from.
 * Process-wide, like the hazard; NULL for none. */
void sandbox_set_clone_guard(void (*begin)(void), void (*end)(void));

/* Starts a command; ret_id names it for wait and signal. */
int sandbox_spawn(Sandbox *s, const SandboxExec *e, uint64_t *ret_id);
/* Waits for the command to end. timeout_usec == UINT64_MAX waits forever;
 * returns -ETIME when the timeout passed first; 0 only takes what has
 * already arrived. -ECONNRESET when the sandbox's init is gone, except when
 * the OOM killer took it: then the command ended by SIGKILL, oom_killed. */
int sandbox_wait(Sandbox *s, uint64_t id, uint64_t timeout_usec, SandboxExitStatus *ret);
/* Signals the command's process group. */
int sandbox_signal(Sandbox *s, uint64_t id, int sig);
/* Signals every process in the sandbox except its init. */
int sandbox_signal_all(Sandbox *s, int sig);
/* Runs a command to its end: spawn + wait. */
int sandbox_exec(Sandbox *s, const SandboxExec *e, uint64_t timeout_usec, SandboxExitStatus *ret);

const char *sandbox_id(const Sandbox *s);
/* Readable when init has something to report: for callers that poll it
 * together with their own fds, then call sandbox_wait() with timeout 0. */
int sandbox_control_fd(const Sandbox *s);
pid_t sandbox_init_pid(const Sandbox *s);
/* The directory that holds the sandbox's host-side state. */
const char *sandbox_state_dir(const Sandbox *s);
/* False once PID 1 is gone (its end of the control socket closed). */
bool sandbox_alive(const Sandbox *s);

/* Kills everything inside and removes all host state. Always frees s. */
int sandbox_destroy(Sandbox *s);
/* The same, for a process that exits right after (kiln sandbox run): every
 * process in the sandbox has SIGKILL before this returns, but what has to
 * wait until the kernel has torn the namespaces down (~1.5 ms) — removing the
 * cgroup, then the state directory — is left to a helper that outlives the
 * caller by that long. Should the helper be killed first, the state
 * directory, its lock free, is a leftover for sandbox_gc(). Always frees s. */
int sandbox_destroy_before_exit(Sandbox *s);

/* Long-lived, multi-threaded processes (the worker, kiln up) create their
 * sandboxes through a helper process of their own, `kiln __sandboxd`
 * (sandbox-spawner.c): once started, sandbox_prepare() and
 * sandbox_destroy() go through it. */
int sandbox_spawner_start(void);
bool sandbox_spawner_active(void);
void sandbox_spawner_stop(void);
int sandbox_spawner_main(int argc, char **argv);
static inline void sandbox_destroyp(Sandbox **s) {
        if (*s)
                sandbox_destroy(*s);
}
#define _cleanup_sandbox_ _cleanup_(sandbox_destroyp)

typedef enum SandboxGcFlags {
        SANDBOX_GC_VERBOSE = 1 << 0, /* log each sandbox removed */
        SANDBOX_GC_NETWORK = 1 << 1, /* also remove kiln's nftables table if no NAT sandbox is left */
} SandboxGcFlags;

/* Removes every sandbox whose owning process is gone (crashed or SIGKILLed):
 * processes, cgroups, network state, directories. Returns how many. */
int sandbox_gc(SandboxGcFlags flags);

/* Where sandbox state lives: $KILN_SANDBOX_DIR or /var/lib/kiln/sandboxes. */
const char *sandbox_root_dir(void);
