/* SPDX-License-Identifier: MIT */
#pragma once
#include <stddef.h>

/* Writes "hello, NAME!" into buf; returns the length it needed. */
size_t greet(char *buf, size_t size, const char *name);
