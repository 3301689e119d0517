/* SPDX-License-Identifier: MIT */
#pragma once

/* A minimal unit-test harness: each test file is a program; a failed check
 * prints where and exits 1; exit 77 means skipped (meson's convention). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(expr)                                                                   \
        do {                                                                          \
                if (!(expr)) {                                                        \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                                #expr);                                               \
                        exit(1);                                                      \
                }                                                                     \
        } while (0)

#define CHECK_EQ_INT(a, b)                                                             \
        do {                                                                           \
                long long _a = (long long) (a), _b = (long long) (b);                 \
                if (_a != _b) {                                                        \
                        fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n",      \
                                __FILE__, __LINE__, #a, _a, #b, _b);                    \
                        exit(1);                                                       \
                }                                                                      \
        } while (0)

#define CHECK_STREQ(a, b)                                                              \
        do {                                                                           \
                const char *_a = (a), *_b = (b);                                       \
                if (!_a || !_b || strcmp(_a, _b) != 0) {                               \
                        fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n",       \
                                __FILE__, __LINE__, #a, _a ? _a : "(null)",            \
                                _b ? _b : "(null)");                                    \
                        exit(1);                                                       \
                }                                                                      \
        } while (0)

#define SKIP(...)                                                                      \
        do {                                                                           \
                printf("SKIP: " __VA_ARGS__);                                          \
                printf("\n");                                                          \
                exit(77);                                                              \
        } while (0)
