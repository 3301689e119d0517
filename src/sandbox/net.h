/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Sandbox networking. Every sandbox has its own network namespace; loopback
 * is brought up inside it. NAT mode adds a veth pair whose host end is named
 * after the sandbox's slot, addresses from a /30 derived from the slot, and
 * relies on kiln's own nftables table for masquerade and isolation.
 *
 * Slot s uses 100.64.0.0 + 4*s as its /30: the host end "kv<s>" has .1, the
 * sandbox's "eth0" has .2 and a default route via .1. See docs/network.md. */

/* Slots run from 0 to NET_SLOT_MAX - 1 (100.64.0.0/16 holds 16384 /30s). */
#define NET_SLOT_MAX 16384U

/* Brings up "lo" in the calling thread's network namespace. */
int net_loopback_up(void);

/* Sets up NAT networking for the network namespace netns_fd (opened from
 * /proc/PID/ns/net of a process in the sandbox), from the calling thread's
 * network namespace (the host's), which is left unchanged. slot is unique per
 * live sandbox; a leftover "kv<slot>" of a dead one is replaced. Installs
 * kiln's nftables table before any link comes up, and sets
 * net.ipv4.ip_forward=1. Returns -EEXIST if the namespace already has an
 * "eth0". On failure nothing of the veth pair is left. */
int net_nat_setup(int netns_fd, unsigned slot);
/* Removes what net_nat_setup created on the host side, if anything is left. */
int net_nat_teardown(unsigned slot);
/* The contents to use as /etc/resolv.conf inside a NAT sandbox. */
int net_resolv_conf(char **ret);
/* The same from explicit files: path as the host's resolv.conf, fallback_path
 * (may be NULL) as the list of upstream servers to use when path names only
 * servers a sandbox cannot reach. Missing files count as empty. */
int net_resolv_conf_from(const char *path, const char *fallback_path, char **ret);
/* With any_nat_sandbox_alive false: deletes kiln's nftables table unless a
 * "kv<N>" link still exists in the calling thread's network namespace, in
 * which case it returns -EBUSY and keeps it: such a link means a sandbox's
 * namespace is still alive (a veth pair dies with its namespace), and the
 * table is what isolates it. Links of dead sandboxes are net_nat_teardown()'s
 * to remove, per slot. With it true, does nothing. Serialized against
 * net_nat_setup() of all processes by a lock file. */
int net_gc(bool any_nat_sandbox_alive);
