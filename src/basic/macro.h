/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _noreturn_ __attribute__((noreturn))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* Moves ownership out of a variable that a cleanup attribute guards. */
#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) _p_ = (p);        \
                (p) = NULL;                     \
                _p_;                            \
        })
#define TAKE_FD(fd)                             \
        ({                                      \
                int _fd_ = (fd);                \
                (fd) = -EBADF;                  \
                _fd_;                           \
        })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)         \
        static inline void func##p(type *p) {           \
                if (*p)                                 \
                        func(*p);                       \
        }

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

/* Returns -errno for negative or positive errno values alike, never 0. */
static inline int negative_errno(int e) {
        if (e == 0)
                return -EIO;
        return e < 0 ? e : -e;
}

/* IN_SET(x, a, b, c): x equals one of the (int) values listed. */
#define IN_SET(x, ...)                                                          \
        ({                                                                      \
                const int _set_[] = { __VA_ARGS__ };                            \
                int _x_ = (x);                                                  \
                bool _found_ = false;                                           \
                for (size_t _i_ = 0; _i_ < sizeof(_set_) / sizeof(_set_[0]); _i_++) \
                        if (_set_[_i_] == _x_)                                  \
                                _found_ = true;                                 \
                _found_;                                                        \
        })

#define streq(a, b) (strcmp((a), (b)) == 0)
#define strneq(a, b, n) (strncmp((a), (b), (n)) == 0)
#define isempty(s) (!(s) || !(s)[0])
