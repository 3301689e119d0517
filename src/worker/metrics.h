/* SPDX-License-Identifier: MIT */
#pragma once

/* The worker's /metrics endpoint (Prometheus text format). */

typedef struct Worker Worker;
typedef struct Metrics Metrics;

int metrics_start(Worker *w, const char *listen, Metrics **ret);
void metrics_stop(Metrics *m);
