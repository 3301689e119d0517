/* SPDX-License-Identifier: MIT */
#pragma once

/* Daily rebuild schedules, "NAME@HH:MM" in local time (kiln worker
 * --rebuild, docs/images.md). Pure functions: the worker owns the timer and
 * the slot the rebuild takes. */

#include <time.h>

#include "image-store.h"

typedef struct ImageSchedule {
        char name[IMAGE_NAME_MAX + 1];
        unsigned hour, minute;
} ImageSchedule;

/* -EINVAL for anything but a valid image name, '@', and a 24-hour HH:MM. */
int image_schedule_parse(const char *s, ImageSchedule *ret);

/* The first time strictly after now at which the schedule fires (local
 * time; on a day when HH:MM does not exist because of a DST jump, the
 * moment mktime() normalises it to). */
time_t image_schedule_next(const ImageSchedule *s, time_t now);
