/* SPDX-License-Identifier: MIT */
#pragma once

/* Counters for GET /metrics (Prometheus text format). Updated from the HTTP
 * threads and the inference thread: plain counters are atomic, the job
 * figures (a few per job, never per token) sit under one lock. */

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "rbee-engine.h"
#include "strutil.h"

enum worker_route {
        WORKER_ROUTE_INFERENCE,
        WORKER_ROUTE_CHAT,
        WORKER_ROUTE_COMPLETIONS,
        WORKER_ROUTE_CANCEL,
        WORKER_ROUTE_MODELS,
        WORKER_ROUTE_HEALTH,
        WORKER_ROUTE_READY,
        WORKER_ROUTE_METRICS,
        WORKER_ROUTE_OTHER,
        _WORKER_ROUTE_MAX,
};

enum worker_job_outcome {
        WORKER_OUTCOME_COMPLETED,
        WORKER_OUTCOME_CANCELLED,
        WORKER_OUTCOME_DISCONNECTED,
        WORKER_OUTCOME_FAILED,
        _WORKER_OUTCOME_MAX,
};

struct worker_metrics {
        atomic_uint_fast64_t requests[_WORKER_ROUTE_MAX][6];   /* by status class 1xx..5xx; [0] unused */
        atomic_uint_fast64_t rejected_queue_full;

        pthread_mutex_t lock;
        uint64_t jobs[_WORKER_OUTCOME_MAX];
        uint64_t prompt_tokens, cached_tokens, generated_tokens;
        double prompt_seconds, generation_seconds, queue_seconds;
        double last_tokens_per_second;
        double load_seconds;
};

void worker_metrics_init(struct worker_metrics *m);
void worker_metrics_done(struct worker_metrics *m);
void worker_metrics_request(struct worker_metrics *m, enum worker_route route, unsigned status);
void worker_metrics_job(struct worker_metrics *m, enum worker_job_outcome outcome,
                        const struct rbee_generate_result *res, double queue_ms);
void worker_metrics_set_load_seconds(struct worker_metrics *m, double s);

/* Gauges the metrics do not own, read at render time. */
struct worker_gauges {
        unsigned queue_depth;
        unsigned queue_capacity;
        unsigned busy;
        unsigned running;               /* jobs in slots */
        unsigned slots;                 /* --parallel */
        unsigned ready;
        uint32_t n_ctx;
};

int worker_metrics_render(struct worker_metrics *m, const struct worker_gauges *g, const char *model,
                          struct strbuf *out);
