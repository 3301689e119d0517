/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "image-schedule.h"
#include "macro.h"

static int two_digits(const char *p, unsigned max, unsigned *ret) {
        if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
                return -EINVAL;
        unsigned v = (unsigned) (p[0] - '0') * 10 + (unsigned) (p[1] - '0');
        if (v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

int image_schedule_parse(const char *s, ImageSchedule *ret) {
        ImageSchedule sc = {};
        const char *at = s ? strrchr(s, '@') : NULL;

        if (!at || (size_t) (at - s) > IMAGE_NAME_MAX)
                return -EINVAL;
        memcpy(sc.name, s, (size_t) (at - s));
        sc.name[at - s] = 0;
        if (!image_name_valid(sc.name))
                return -EINVAL;
        at++;
        if (strlen(at) != 5 || at[2] != ':' || two_digits(at, 23, &sc.hour) < 0 ||
            two_digits(at + 3, 59, &sc.minute) < 0)
                return -EINVAL;
        *ret = sc;
        return 0;
}

time_t image_schedule_next(const ImageSchedule *s, time_t now) {
        struct tm tm;

        /* Today at HH:MM, then tomorrow, …: a couple of days suffices even
         * across a DST change; mktime() normalises day overflow. */
        localtime_r(&now, &tm);
        for (int day = 0; day < 4; day++) {
                struct tm t = tm;
                t.tm_mday += day;
                t.tm_hour = (int) s->hour;
                t.tm_min = (int) s->minute;
                t.tm_sec = 0;
                t.tm_isdst = -1;
                time_t when = mktime(&t);
                if (when != (time_t) -1 && when > now)
                        return when;
        }
        return now + 24 * 3600;
}
