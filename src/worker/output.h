/* SPDX-License-Identifier: MIT */
#pragma once

/* A task's output: two pipes that every step writes to (its stdout and its
 * stderr, each masked as a stream of its own) and one pipe per service. A
 * thread reads them all: the step pipes' bytes go through their maskers into
 * the log shipper, stderr's in frames (ESC "]kiln;err;" N BEL, then N bytes)
 * so that clients can keep the streams apart; each service's masked output
 * is kept in a bounded ring, attached to the log only if the service fails
 * its health check. */

#include <stddef.h>
#include <stdint.h>

#include "logship.h"
#include "macro.h"
#include "mask.h"

#define OUTPUT_SERVICES_MAX 16
#define OUTPUT_FRAME_MAX 65536U /* bytes in one stderr frame */
#define OUTPUT_SERVICE_TAIL (64U * 1024U)

typedef struct Output Output;

/* Takes neither the masker nor the shipper (both must outlive the Output).
 * secrets is what the masker was built from (for stderr's and the services'
 * own maskers). */
int output_new(Masker *m, char *const *secrets, LogShip *ship, size_t n_services, Output **ret);
/* Joins the thread (output_finish first). */
Output *output_free(Output *o);
DEFINE_TRIVIAL_CLEANUP_FUNC(Output *, output_free);

/* The write ends of the step pipes (owned by the Output) and of a service's. */
int output_log_fd(Output *o);
int output_err_fd(Output *o);
int output_service_fd(Output *o, size_t i);
/* Writes a message of the worker's own into the log, in order with the
 * output. */
void output_printf(Output *o, const char *fmt, ...) _printf_(2, 3);
void output_write(Output *o, const void *p, size_t n);
/* The service's last output, masked. */
int output_service_tail(Output *o, size_t i, char **ret, size_t *ret_size);
/* Closes the worker's write ends and waits up to grace_usec for every other
 * writer to go; then flushes the masker. */
void output_finish(Output *o, uint64_t grace_usec);
