/* SPDX-License-Identifier: MIT */
#pragma once

/* Inference requests as they arrive over HTTP, parsed and validated into one
 * shape for the three APIs (rbee's /v1/inference and OpenAI's chat and text
 * completions). Parsing knows nothing of the model; limits that depend on it
 * (context size) come in through struct worker_limits. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rbee-engine.h"

enum worker_api {
        WORKER_API_NATIVE,              /* POST /v1/inference */
        WORKER_API_CHAT,                /* POST /v1/chat/completions */
        WORKER_API_COMPLETION,          /* POST /v1/completions */
};

#define WORKER_JOB_ID_MAX 64
#define WORKER_MAX_STOP 16
#define WORKER_MAX_STOP_LEN 256
#define WORKER_MAX_MESSAGES 1024

struct worker_limits {
        uint32_t n_ctx;                 /* max_tokens may not exceed it */
        int32_t n_vocab;                /* for prompts given as token ids */
        size_t max_prompt_bytes;
};

struct worker_request {
        enum worker_api api;
        char job_id[WORKER_JOB_ID_MAX + 1];    /* "" when the client gave none */
        char *model;                    /* OpenAI "model", or NULL */

        /* Exactly one of: prompt text, chat messages, prompt token ids. */
        char *prompt;
        struct rbee_chat_message *messages;     /* role and content owned */
        size_t n_messages;
        int32_t *prompt_tokens;
        size_t n_prompt_tokens;

        int32_t max_tokens;             /* -1: until end of turn or a full context */
        struct rbee_sampler_params sampling;
        char **stop;
        size_t n_stop;
        bool stream;
        bool include_usage;             /* OpenAI stream_options.include_usage */
        bool ignore_eos;
        bool echo;                      /* OpenAI completions: prepend the prompt */
};

void worker_request_init(struct worker_request *r, enum worker_api api);
void worker_request_done(struct worker_request *r);

/* Parse a request body. On error returns -EINVAL (or -EBADMSG for bad JSON,
 * -E2BIG for limits) with a message for the client in err. */
int worker_request_parse(enum worker_api api, const char *body, size_t len,
                         const struct worker_limits *lim, struct worker_request *ret,
                         char *err, size_t errlen);

/* Job ids are 1-64 characters from [A-Za-z0-9._:-]. */
bool worker_job_id_is_valid(const char *s);
