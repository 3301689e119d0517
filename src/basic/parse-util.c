/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "parse-util.h"

int safe_atou64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (isempty(s) || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end)
                return -EINVAL;
        *ret = v;
        return 0;
}

int safe_atou(const char *s, unsigned *ret) {
        uint64_t v;
        int r = safe_atou64(s, &v);
        if (r < 0)
                return r;
        if (v > UINT_MAX)
                return -ERANGE;
        *ret = (unsigned) v;
        return 0;
}

int safe_atoi(const char *s, int *ret) {
        char *end;
        long v;

        if (isempty(s))
                return -EINVAL;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno == ERANGE || v > INT_MAX || v < INT_MIN)
                return -ERANGE;
        if (*end || isspace((unsigned char) s[0]))
                return -EINVAL;
        *ret = (int) v;
        return 0;
}

/* Parses a non-negative decimal with optional fraction; returns the end. */
static int parse_decimal(const char *s, double *ret, const char **ret_end) {
        char *end;
        double v;

        if (!isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtod(s, &end);
        if (errno == ERANGE || !isfinite(v) || v < 0)
                return -ERANGE;
        *ret = v;
        *ret_end = end;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        static const struct {
                const char *suffix;
                uint64_t factor;
        } table[] = {
                { "", 1ULL },
                { "B", 1ULL },
                { "K", 1ULL << 10 }, { "KB", 1ULL << 10 }, { "KiB", 1ULL << 10 }, { "k", 1ULL << 10 },
                { "M", 1ULL << 20 }, { "MB", 1ULL << 20 }, { "MiB", 1ULL << 20 }, { "m", 1ULL << 20 },
                { "G", 1ULL << 30 }, { "GB", 1ULL << 30 }, { "GiB", 1ULL << 30 }, { "g", 1ULL << 30 },
                { "T", 1ULL << 40 }, { "TB", 1ULL << 40 }, { "TiB", 1ULL << 40 }, { "t", 1ULL << 40 },
        };
        const char *end;
        double v;
        int r;

        if (isempty(s))
                return -EINVAL;
        r = parse_decimal(s, &v, &end);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (streq(end, table[i].suffix)) {
                        double bytes = v * (double) table[i].factor;
                        if (bytes >= 18446744073709551615.0)
                                return -ERANGE;
                        *ret = (uint64_t) bytes;
                        return 0;
                }
        return -EINVAL;
}

int parse_duration(const char *s, uint64_t *ret_usec) {
        static const struct {
                const char *suffix;
                uint64_t usec;
        } table[] = {
                /* Longest suffixes first so that "ms" is not read as "m" + "s". */
                { "us", 1ULL }, { "ms", 1000ULL }, { "s", 1000000ULL }, { "m", 60000000ULL },
                { "h", 3600000000ULL }, { "d", 86400000000ULL },
        };
        double total = 0;
        const char *p = s;

        if (isempty(s))
                return -EINVAL;
        while (*p) {
                const char *end;
                double v;
                size_t i;
                int r = parse_decimal(p, &v, &end);
                if (r < 0)
                        return r;
                if (!*end) {
                        /* A bare number is only allowed on its own. */
                        if (p != s)
                                return -EINVAL;
                        total = v * 1e6;
                        p = end;
                        break;
                }
                for (i = 0; i < ELEMENTSOF(table); i++) {
                        size_t l = strlen(table[i].suffix);
                        if (strneq(end, table[i].suffix, l) &&
                            (end[l] == 0 || isdigit((unsigned char) end[l]))) {
                                total += v * (double) table[i].usec;
                                p = end + l;
                                break;
                        }
                }
                if (i == ELEMENTSOF(table))
                        return -EINVAL;
        }
        if (total >= 1.8e19)
                return -ERANGE;
        *ret_usec = (uint64_t) total;
        return 0;
}

int parse_cpus(const char *s, uint64_t *ret_millis) {
        const char *end;
        double v;
        int r;

        if (isempty(s))
                return -EINVAL;
        r = parse_decimal(s, &v, &end);
        if (r < 0)
                return r;
        if (*end || v <= 0 || v > 1e6)
                return -ERANGE;
        *ret_millis = round_u64(v * 1000);
        if (*ret_millis == 0)
                return -ERANGE;
        return 0;
}
