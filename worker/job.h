/* SPDX-License-Identifier: MIT */
#pragma once

/* One inference job: the request, the prompt tokens, and the output as it is
 * produced. The inference thread produces (begin, token..., then exactly one
 * of finish or fail); the HTTP connection thread consumes, either the stream
 * bytes as they come or the whole result at the end.
 *
 * The consumer waits in poll() on the job's eventfd and on its own socket at
 * once, so that a client that goes away is noticed while it waits, not when
 * the next write fails. Jobs are reference counted; every function here is
 * thread-safe. */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "request.h"
#include "strutil.h"

enum worker_job_state {
        WORKER_JOB_QUEUED,
        WORKER_JOB_RUNNING,
        WORKER_JOB_DONE,
};

enum worker_cancel_reason {
        WORKER_CANCEL_NONE,
        WORKER_CANCEL_REQUEST,          /* POST /v1/cancel or DELETE /v1/inference/{id} */
        WORKER_CANCEL_DISCONNECT,       /* the client went away */
        WORKER_CANCEL_SHUTDOWN,         /* SIGTERM */
};

struct worker_job {
        atomic_uint n_ref;
        char id[WORKER_JOB_ID_MAX + 1];
        struct worker_request req;
        char *model_name;
        int64_t created;                /* unix time, for OpenAI's "created" */
        uint64_t submit_usec;           /* CLOCK_MONOTONIC */

        /* Set by the preparing thread before the job is queued, then read-only. */
        int32_t *tokens;
        size_t n_tokens;
        const char **stop;              /* request stops plus the chat format's */
        size_t n_stop;

        struct worker_job *queue_next;  /* owned by the inference queue's lock */

        pthread_mutex_t lock;
        int efd;
        enum worker_job_state state;
        enum worker_cancel_reason cancel;
        bool terminal;                  /* finish or fail happened */
        struct strbuf out;              /* stream bytes not yet taken by the connection */
        struct strbuf text;             /* everything generated, for non-streaming answers */
        uint32_t n_out;                 /* tokens generated so far */
        bool sent_role;                 /* OpenAI chat: the first chunk carries the role */
        double queue_ms;
        struct rbee_generate_result result;
        unsigned error_status;          /* 0 unless failed */
        char error_code[32];
        char error_message[256];
};

/* Takes over *req (left empty). */
int worker_job_new(struct worker_request *req, const char *id, const char *model_name, struct worker_job **ret);
struct worker_job *worker_job_ref(struct worker_job *j);
struct worker_job *worker_job_unref(struct worker_job *j);
static inline void worker_job_unrefp(struct worker_job **j) {
        if (*j)
                worker_job_unref(*j);
}

/* Ask the job to stop. Returns true when it had not ended yet (the first
 * reason given sticks). The producer notices at its next token. */
bool worker_job_cancel(struct worker_job *j, enum worker_cancel_reason why);
enum worker_cancel_reason worker_job_cancel_reason(struct worker_job *j);

/* Producer side, inference thread only. */
void worker_job_begin(struct worker_job *j, uint32_t n_prompt);
/* Returns non-zero when the job was cancelled: the token is then dropped. */
int worker_job_token(struct worker_job *j, const char *text, size_t len, bool counts);
void worker_job_finish(struct worker_job *j, const struct rbee_generate_result *res);
/* The terminal error event. Ignored when the job already ended. */
void worker_job_fail(struct worker_job *j, unsigned status, const char *code, const char *fmt, ...)
        _printf_(4, 5);

/* Consumer side. Copy up to n stream bytes into buf, waiting for them.
 * Returns the count, 0 at the end of the stream, -ECONNRESET when sockfd
 * (may be -1) hung up first. */
ssize_t worker_job_read(struct worker_job *j, char *buf, size_t n, int sockfd);
/* Wait for the job to end; -ECONNRESET when sockfd hung up first. */
int worker_job_wait(struct worker_job *j, int sockfd);
bool worker_job_is_terminal(struct worker_job *j);
