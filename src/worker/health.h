/* SPDX-License-Identifier: MIT */
#pragma once

/* Network health checks of services, made from inside the sandbox's network
 * namespace (a thread that joins it), so that "127.0.0.1:5432" means the
 * sandbox's loopback. Return 0 when healthy; otherwise why says why. */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* "HOST:PORT" or "[V6]:PORT": healthy when a connection opens. */
int health_tcp(pid_t init_pid, const char *hostport, uint64_t timeout_usec, char *why, size_t whysize);
/* http:// or https:// URL: healthy on a 2xx answer. */
int health_http(pid_t init_pid, const char *url, uint64_t timeout_usec, char *why, size_t whysize);
