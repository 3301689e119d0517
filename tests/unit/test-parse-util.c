/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "parse-util.h"
#include "test.h"

static void test_size(void) {
        uint64_t v;
        CHECK_EQ_INT(parse_size("512", &v), 0);
        CHECK_EQ_INT(v, 512);
        CHECK_EQ_INT(parse_size("64K", &v), 0);
        CHECK_EQ_INT(v, 65536);
        CHECK_EQ_INT(parse_size("1.5G", &v), 0);
        CHECK_EQ_INT(v, 1610612736ULL);
        CHECK_EQ_INT(parse_size("2GiB", &v), 0);
        CHECK_EQ_INT(v, 2147483648ULL);
        CHECK_EQ_INT(parse_size("100MB", &v), 0);
        CHECK_EQ_INT(v, 104857600ULL);
        CHECK_EQ_INT(parse_size("", &v), -EINVAL);
        CHECK_EQ_INT(parse_size("-1", &v), -EINVAL);
        CHECK_EQ_INT(parse_size("12X", &v), -EINVAL);
        CHECK_EQ_INT(parse_size("99999999999T", &v), -ERANGE);
}

static void test_duration(void) {
        uint64_t v;
        CHECK_EQ_INT(parse_duration("250ms", &v), 0);
        CHECK_EQ_INT(v, 250000);
        CHECK_EQ_INT(parse_duration("10", &v), 0);
        CHECK_EQ_INT(v, 10000000);
        CHECK_EQ_INT(parse_duration("1h30m", &v), 0);
        CHECK_EQ_INT(v, 5400000000ULL);
        CHECK_EQ_INT(parse_duration("1.5s", &v), 0);
        CHECK_EQ_INT(v, 1500000);
        CHECK_EQ_INT(parse_duration("5m", &v), 0);
        CHECK_EQ_INT(v, 300000000ULL);
        CHECK_EQ_INT(parse_duration("1m10", &v), -EINVAL);
        CHECK_EQ_INT(parse_duration("s", &v), -EINVAL);
        CHECK_EQ_INT(parse_duration("3x", &v), -EINVAL);
}

static void test_ints(void) {
        int i;
        unsigned u;
        uint64_t m;
        CHECK_EQ_INT(safe_atoi("-42", &i), 0);
        CHECK_EQ_INT(i, -42);
        CHECK_EQ_INT(safe_atoi("4x", &i), -EINVAL);
        CHECK_EQ_INT(safe_atoi("99999999999", &i), -ERANGE);
        CHECK_EQ_INT(safe_atou("-1", &u), -EINVAL);
        CHECK_EQ_INT(parse_cpus("0.5", &m), 0);
        CHECK_EQ_INT(m, 500);
        CHECK_EQ_INT(parse_cpus("0", &m), -ERANGE);
}

int main(void) {
        test_size();
        test_duration();
        test_ints();
        return 0;
}
