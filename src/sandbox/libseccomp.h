/* SPDX-License-Identifier: MIT */
#pragma once

/* libseccomp's own <seccomp.h>. kiln's src/sandbox/seccomp.h shadows it on the
 * include path, so reach past it. Include this with angle brackets. */
#include_next <seccomp.h>
