/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Sandbox networking. Every sandbox has its own network namespace; loopback
 * is brought up inside it. NAT mode adds a veth pair whose host end is named
 * after the sandbox's slot, addresses from a /30 derived from the slot, and
 * relies on kiln's own nftables table for masquerade and isolation. */

/* Brings up "lo" in the calling process's network namespace. */
int net_loopback_up(void);

/* Sets up NAT networking for the network namespace netns_fd (opened from
 * /proc/PID/ns/net of a process in the sandbox). slot is unique per live
 * sandbox. */
int net_nat_setup(int netns_fd, unsigned slot);
/* Removes what net_nat_setup created on the host side, if anything is left. */
int net_nat_teardown(unsigned slot);
/* The contents to use as /etc/resolv.conf inside a NAT sandbox. */
int net_resolv_conf(char **ret);
/* Removes kiln's nftables table when no NAT sandbox remains. */
int net_gc(bool any_nat_sandbox_alive);
