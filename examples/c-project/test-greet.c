/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "greet.h"

static int failures;

static void check(const char *name, size_t size, const char *expected, size_t expected_len) {
        char buf[64];
        size_t n = greet(buf, size, name);
        if (n != expected_len || strcmp(buf, expected) != 0) {
                printf("FAIL: greet(%s, %zu) = \"%s\" (%zu), expected \"%s\" (%zu)\n", name ? name : "NULL",
                       size, buf, n, expected, expected_len);
                failures++;
        }
}

int main(void) {
        check("kiln", sizeof(((char[64]){})), "hello, kiln!", 12);
        check(NULL, 64, "hello, world!", 13);
        check("", 64, "hello, world!", 13);
        check("kiln", 6, "hello", 12); /* truncated, but reports the full length */
        printf("%s\n", failures ? "tests failed" : "all tests passed");
        return failures ? 1 : 0;
}
