/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include "sandbox.h"
