/* SPDX-License-Identifier: MIT */
#pragma once

/* Log shipping: the masked bytes of one attempt are spooled (the first 64 KiB
 * in memory, the rest in a file in the worker's data directory, or, once that
 * cannot be written, in memory again, up to 64 MiB) and sent to the server by
 * byte offset from there, by a thread of their own. A retried append is harmless (the server
 * keeps bytes it holds); a gap is answered with the server's offset, from
 * which the rest is resent. While the server is unreachable the bytes wait
 * in the spool, so nothing is lost, reordered or sent twice. */

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

typedef struct LogShip LogShip;

typedef struct Client Client;

typedef struct LogShipConfig {
        Client *client; /* borrowed: used by the shipping thread until logship_free() */
        int64_t lease, fence;
        const char *spool_path;
        uint64_t max_bytes;  /* the log's cap; 0 = none */
        uint64_t chunk_max;  /* bytes per append request */
        /* Called by the shipping thread after each acknowledged append. */
        void (*on_acked)(void *userdata);
        void *userdata;
} LogShipConfig;

int logship_new(const LogShipConfig *c, LogShip **ret);
/* Joins the thread and removes the spool file. */
LogShip *logship_free(LogShip *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(LogShip *, logship_free);

/* Appends to the spool; past the cap (or with neither disk nor memory left
 * for it), writes an explicit marker once and drops the rest (counted). */
int logship_append(LogShip *l, const void *data, size_t n);
/* No more bytes will come. */
void logship_close(LogShip *l);
/* Waits until the server acknowledged every byte (0), the lease was refused
 * (-ESTALE), or logship_abort() was called (-ECANCELED). *ret_size: the log's
 * size. */
int logship_wait(LogShip *l, uint64_t *ret_size);
/* The server holds only `offset` bytes after all (finish answered
 * log_incomplete): send again from there. */
void logship_rewind(LogShip *l, uint64_t offset);
void logship_abort(LogShip *l);

uint64_t logship_size(LogShip *l);
bool logship_truncated(LogShip *l);
uint64_t logship_dropped(LogShip *l);
