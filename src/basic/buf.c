/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static size_t buf_max(const Buf *b) {
        return b->max > 0 ? b->max : BUF_MAX_DEFAULT;
}

int buf_reserve(Buf *b, size_t n) {
        size_t max = buf_max(b), want, cap;
        uint8_t *p;

        if (n > max || b->len > max - n)
                return -ENOBUFS;
        want = b->len + n;
        if (want <= b->cap)
                return 0;

        cap = MAX(b->cap, (size_t) 256);
        while (cap < want)
                cap = cap > max / 2 ? max : cap * 2;
        p = realloc(b->data, cap);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->cap = cap;
        return 0;
}

int buf_append(Buf *b, const void *p, size_t n) {
        int r;

        if (n == 0)
                return 0;
        r = buf_reserve(b, n);
        if (r < 0)
                return r;
        memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
}

void buf_consume(Buf *b, size_t n) {
        if (n >= b->len) {
                b->len = 0;
                return;
        }
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
}

void buf_done(Buf *b) {
        b->data = mfree(b->data);
        b->len = b->cap = 0;
}
