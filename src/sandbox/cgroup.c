/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include "cgroup.h"
