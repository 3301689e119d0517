/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared between the host side of a sandbox (sandbox.c) and its PID 1
 * (sandbox-init.c, sandbox-rootfs.c). Not part of the public API. */

#include <linux/filter.h>
#include <stdint.h>
#include <sys/types.h>

#include "cgroup.h"
#include "sandbox.h"

#define SANDBOX_UID_BASE 0x40000000U /* 2^30: far above any ordinary or subuid range */
#define SANDBOX_UID_COUNT 65536U
#define SANDBOX_SLOTS 16384U
#define SANDBOX_MSG_MAX (1U << 20)

/* Messages over the host ↔ init SOCK_SEQPACKET control socket. */
typedef enum MsgType {
        MSG_SPAWN = 1,  /* host → init: run a command (3 fds attached) */
        MSG_SIGNAL,     /* host → init: signal the process group of id */
        MSG_SIGNAL_ALL, /* host → init: signal every process but init */
        MSG_READY,      /* init → host: set up, waiting for commands (a: 0 or -errno) */
        MSG_SPAWNED,    /* init → host: id started (a: pid) or failed (b: errno) */
        MSG_EXITED,     /* init → host: id ended (a: wait status; b: exec errno or 0) */
} MsgType;

typedef struct MsgHeader {
        uint32_t type;
        uint32_t n_argv;
        uint64_t id;
        int32_t a, b;
        uint32_t uid, gid;
        uint32_t n_env;
        uint32_t payload; /* bytes of NUL-separated strings that follow: cwd, argv…, env… */
} MsgHeader;

/* Everything PID 1 needs; it is a forked copy of the host process, so this
 * lives in its memory already. */
typedef struct InitArgs {
        const SandboxConfig *config;
        const char *dir;   /* the sandbox's state directory */
        const char *mnt;   /* an empty directory to mount the sandbox's tmpfs on */
        const char *id;
        uint32_t uid_base;
        int userns_fd;     /* the sandbox's user namespace, maps already written */
        int control_fd;    /* init's end of the control socket */
        int life_fd;       /* read end of a pipe whose write end only the host holds */
        const Cgroup *cgroup;
        bool in_cgroup;    /* clone3(CLONE_INTO_CGROUP) put PID 1 there already */
        const char *masks; /* the mask manifest (sandbox-masks.c), or NULL */
        const char *disk_image; /* NULL without a disk quota */
        uint64_t layer_tmpfs_size; /* > 0: the writable layer is a tmpfs of this size, not on disk */
        const char *resolv_conf; /* contents for /etc/resolv.conf, or NULL to keep the image's */
        const struct sock_fprog *seccomp;
} InitArgs;

/* PID 1 of a new sandbox; never returns. */
_noreturn_ void sandbox_init_main(const InitArgs *a);

/* Builds the root file system in the calling (private) mount namespace and
 * pivots into it. Runs as PID 1 before it enters the user namespace. */
int sandbox_rootfs_setup(const InitArgs *a);

/* The manifest of what hides the host image's secrets; extra: further host
 * paths to hide (sandbox-masks.c). */
int sandbox_mask_manifest(char **extra, char **ret);
/* Creates the manifest's entries below layer_fd, owners shifted by base. */
int sandbox_mask_apply(int layer_fd, const char *manifest, uint32_t base);

/* KILN_SANDBOX_TIMING=1: prints the time since the previous call; NULL only
 * starts the clock. */
void sandbox_phase(const char *what);

int msg_send(int fd, const MsgHeader *h, const void *payload, const int *fds, size_t n_fds);
/* Receives one message into buf (SANDBOX_MSG_MAX bytes); fds up to 3.
 * Returns 0 when the peer has closed its end. */
ssize_t msg_recv(int fd, void *buf, size_t size, int *fds, size_t *n_fds);

/* The spawner (sandbox-spawner.c): prepares and destroys in the helper. */
int sandbox_spawner_prepare(const SandboxConfig *c, Sandbox **ret);
int sandbox_spawner_destroy(const char *id);
unsigned sandbox_spawner_generation(void);
bool sandbox_spawner_holds(unsigned generation);
/* A sandbox the spawner holds, as the asking process sees it: it talks to
 * PID 1 over control_fd; destroying it asks the spawner. */
int sandbox_new_remote(const char *id, const char *dir, pid_t init_pid, int control_fd, const Cgroup *cg,
                       Sandbox **ret);
/* Hands the control socket over: the sandbox keeps no copy. */
int sandbox_take_control_fd(Sandbox *s);
const Cgroup *sandbox_cgroup(const Sandbox *s);
