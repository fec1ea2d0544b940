/* SPDX-License-Identifier: MIT */
#pragma once

/* The inference thread: it loads the model, then owns the one rbee_context
 * and runs queued jobs in its slots, one sequence of the context each, up to
 * n_parallel at once: their prompts are decoded piece by piece and their
 * tokens generated in one batched forward pass per step. Everything else
 * talks to it through the bounded queue below; the state and the heartbeat
 * are readable from any thread. */

#include <stdbool.h>
#include <stdint.h>

#include "job.h"
#include "metrics.h"
#include "rbee-engine.h"

enum worker_state {
        WORKER_STATE_LOADING,
        WORKER_STATE_READY,
        WORKER_STATE_FAILED,
        WORKER_STATE_STOPPING,
};

const char *worker_state_name(enum worker_state s);

struct worker_inference_config {
        const char *model_path;
        const char *name;               /* the model as clients see it */
        uint32_t n_ctx;                 /* 0: the engine's default */
        uint32_t n_batch;
        int n_threads;                  /* 0: all CPUs */
        bool cuda;                      /* run on CUDA device `device` */
        int device;
        unsigned n_parallel;            /* jobs run at once; 0: 4, fewer when RAM is short */
        unsigned max_queue;             /* jobs waiting while every slot is busy */
        const char *chat_format;        /* NULL: from the model's template, else chatml */
        bool mlock;
        /* Test hooks (see README): slow the load and the tokens down, stall once. */
        unsigned test_load_delay_ms;
        unsigned test_token_delay_ms;
        unsigned test_stall_ms;
};

struct worker_inference;

int worker_inference_new(const struct worker_inference_config *cfg, struct worker_metrics *metrics,
                         struct worker_inference **ret);
/* Start the thread, which begins by loading the model. */
int worker_inference_start(struct worker_inference *e);
/* Cancel everything (queued jobs and the running one get a terminal
 * "shutting_down" error), then wait up to timeout_usec for the thread.
 * Returns 0 when it ended, -ETIMEDOUT when it is still stuck in the engine
 * (the running job's stream has been ended for it all the same). */
int worker_inference_shutdown(struct worker_inference *e, uint64_t timeout_usec);
/* Frees everything when the thread has ended; when it has not, the engine
 * objects are left to the process exit. */
struct worker_inference *worker_inference_free(struct worker_inference *e);

/* Readable (EFD) when the state changed; drain with worker_inference_ack(). */
int worker_inference_event_fd(struct worker_inference *e);
void worker_inference_ack(struct worker_inference *e);
enum worker_state worker_inference_state(struct worker_inference *e, unsigned *ret_done, unsigned *ret_total);
/* Why loading failed (valid in WORKER_STATE_FAILED). */
int worker_inference_load_error(struct worker_inference *e, const char **ret_message);

/* Healthy while idle, or while the running job or the load made progress in
 * the last stall_usec. A wedged thread turns this false and keeps it false. */
bool worker_inference_healthy(struct worker_inference *e, uint64_t stall_usec);

/* Turn a parsed request into prompt tokens (chat template, tokenizer, checks
 * against the context) and stop strings. Thread-safe once READY. Errors:
 * -EAGAIN not ready, -E2BIG prompt over the context, -EINVAL with a message. */
int worker_inference_prepare(struct worker_inference *e, struct worker_job *j, char *err, size_t errlen);

/* Queue a prepared job. -EAGAIN not ready yet, -ESHUTDOWN stopping,
 * -EBUSY queue full, -EEXIST a job with that id is active. Takes a reference. */
int worker_inference_submit(struct worker_inference *e, struct worker_job *j);

/* Cancel by id: 0 when it was queued or running, 1 when it had already
 * ended recently (harmless repeat), -ENOENT for an id never seen. */
int worker_inference_cancel(struct worker_inference *e, const char *id);
/* Cancel one job we hold (a client disconnect). */
void worker_inference_cancel_job(struct worker_inference *e, struct worker_job *j, enum worker_cancel_reason why);

/* A fresh job id: 32 hex digits. */
void worker_inference_new_job_id(char buf[static WORKER_JOB_ID_MAX + 1]);

struct worker_limits worker_inference_limits(struct worker_inference *e);
/* Seconds since the last job ended (0 while one runs or waits): the hive's
 * keep-alive clock, which must never run during a generation. */
double worker_inference_idle_seconds(struct worker_inference *e);
void worker_inference_gauges(struct worker_inference *e, struct worker_gauges *g);
const char *worker_inference_name(struct worker_inference *e);
int64_t worker_inference_loaded_at(struct worker_inference *e);
