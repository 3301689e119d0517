/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* A growable byte buffer with a hard ceiling, in the spirit of curl's dynbuf.
 * max == 0 means BUF_MAX_DEFAULT. Appending past max fails with -ENOBUFS and
 * leaves the buffer as it was. */
#define BUF_MAX_DEFAULT ((size_t) 1 << 30)

typedef struct Buf {
        uint8_t *data;
        size_t len;
        size_t cap;
        size_t max;
} Buf;

#define BUF_INIT(m) ((Buf) { .max = (m) })

/* Makes room for n more bytes without changing len. */
int buf_reserve(Buf *b, size_t n);
int buf_append(Buf *b, const void *p, size_t n);
/* Drops the first n bytes (or all of them). */
void buf_consume(Buf *b, size_t n);
static inline void buf_clear(Buf *b) {
        b->len = 0;
}
void buf_done(Buf *b);
