/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static int max_level = LOG_INFO;
static const char *log_prefix = "kiln";

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

void log_set_prefix(const char *prefix) {
        log_prefix = prefix;
}

int log_internal(int level, int error, const char *file, int line, const char *fmt, ...) {
        char buf[2048];
        int saved = errno, n;
        va_list ap;

        if (error < 0)
                error = -error;
        /* %m means the error passed in, or errno as the caller left it. */
        if (error != 0)
                errno = error;
        va_start(ap, fmt);
        n = vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        if (n < 0)
                buf[0] = 0;

        /* One write() per message so that concurrent processes do not interleave. */
        char out[2300];
        if (max_level >= LOG_DEBUG)
                n = snprintf(out, sizeof out, "%s[%d]: %s:%d: %s\n", log_prefix, (int) getpid(),
                             file, line, buf);
        else
                n = snprintf(out, sizeof out, "%s: %s\n", log_prefix, buf);
        if (n > 0)
                (void) !write(STDERR_FILENO, out, MIN((size_t) n, sizeof out - 1));
        errno = saved;
        return -error;
}

int log_level_from_string(const char *s) {
        static const char *const names[] = {
                [LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
                [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (names[i] && streq(names[i], s))
                        return (int) i;
        return -EINVAL;
}
