/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdint.h>

/* "512", "64K", "1.5G", "2GiB", "100MB" (all binary: K = 1024). */
int parse_size(const char *s, uint64_t *ret);
/* "250ms", "10s", "5m", "1h30m", "2h", "1.5s"; a bare number is seconds. Result in µs. */
int parse_duration(const char *s, uint64_t *ret_usec);
/* Decimal integers with range checks; no leading/trailing junk. */
int safe_atou64(const char *s, uint64_t *ret);
int safe_atoi(const char *s, int *ret);
int safe_atou(const char *s, unsigned *ret);
/* "1", "0.5", "2.25": a CPU count, returned in millicpus. */
/* Rounds a finite, non-negative value that fits in 64 bits to the nearest
 * integer (what llround() would give, without linking libm). */
static inline uint64_t round_u64(double v) {
        return (uint64_t) (v + 0.5);
}

int parse_cpus(const char *s, uint64_t *ret_millis);
