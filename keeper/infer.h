/* SPDX-License-Identifier: MIT */
#pragma once

/* One streamed inference on the hive (POST /v1/inference), shared by
 * `rbee infer` and `rbee chat`: tokens go to stdout as they arrive, worker
 * loading progress to stderr; Ctrl+C cancels the job on the hive
 * (DELETE /v1/jobs/{id}) and waits briefly for its final event; a stall
 * (no token for a while) does the same and says so. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "keeper.h"
#include "strutil.h"

#define KEEPER_STALL_DEFAULT_USEC (120ULL * 1000000)

struct keeper_infer_params {
        const char *model;
        int64_t max_tokens;             /* -1: the hive's default */
        double temperature, top_p;      /* < 0: the hive's default */
        int64_t top_k;                  /* < 0: default */
        int64_t seed;                   /* < 0: default */
        const char *backend;
        int64_t device;                 /* < 0: default */
        const char *keep_alive;
        char **stop;                    /* NULL-terminated, or NULL */
        uint64_t stall_usec;            /* 0: no stall timeout */
};

void keeper_infer_params_init(struct keeper_infer_params *p);
/* Frees the stop array (the strings belong to argv). */
void keeper_infer_params_done(struct keeper_infer_params *p);

/* Parse one inference option into p (for the commands' getopt loops).
 * Returns 1 when c was one, 0 when not, -EINVAL after printing a usage
 * message. */
int keeper_infer_option(struct keeper *k, const char *cmd, struct keeper_infer_params *p, int c, const char *arg);

/* Long options for keeper_infer_option (ids from KEEPER_OPT_FIRST_LOCAL + 50 up). */
#define KEEPER_INFER_OPTIONS                                                                    \
        { "model", required_argument, NULL, 'm' },                                              \
        { "max-tokens", required_argument, NULL, 'n' },                                         \
        { "temperature", required_argument, NULL, 't' },                                        \
        { "temp", required_argument, NULL, 't' },                                               \
        { "top-p", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL + 50 },                      \
        { "top-k", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL + 51 },                      \
        { "seed", required_argument, NULL, 's' },                                               \
        { "backend", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL + 52 },                    \
        { "device", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL + 53 },                     \
        { "keep-alive", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL + 54 },                 \
        { "stop", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL + 55 },                       \
        { "stall-timeout", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL + 56 }
#define KEEPER_INFER_SHORT "m:n:t:s:"

enum keeper_infer_outcome {
        KEEPER_INFER_DONE,              /* an "end" event */
        KEEPER_INFER_CANCELLED,         /* Ctrl+C; the job was cancelled */
        KEEPER_INFER_STALLED,           /* no token in time; the job was cancelled */
        KEEPER_INFER_FAILED,            /* the message was printed */
        KEEPER_INFER_BROKEN_PIPE,       /* stdout went away; the job was cancelled */
};

struct keeper_infer_result {
        enum keeper_infer_outcome outcome;
        char job_id[72];
        struct strbuf text;             /* everything printed */
        uint64_t n_tokens;
        double seconds;                 /* from the request to the end */
        struct json_object *end;        /* the "end" event, owned */
        char error_code[64];            /* why it failed, when the hive said */
};

void keeper_infer_result_done(struct keeper_infer_result *r);

/* Build the request body for a prompt or chat messages (one of them NULL). */
int keeper_infer_request(const struct keeper_infer_params *p, const char *job_id, const char *prompt,
                         struct json_object *messages, struct json_object **ret);

enum {
        KEEPER_INFER_PRINT = 1 << 0,            /* tokens to stdout */
        KEEPER_INFER_QUIET_CONTEXT = 1 << 1,    /* no message for context_length_exceeded (chat trims) */
};

/* Run it. k must be connected. Returns 0 (look at res->outcome); messages
 * for failures are printed. */
int keeper_infer_run(struct keeper *k, const struct keeper_infer_params *p, struct json_object *request,
                     unsigned flags, struct keeper_infer_result *res);

/* A job id of our own, so that a cancel can name the job before its first event. */
void keeper_new_job_id(char *buf, size_t len);

/* Cancel a job on the hive; returns the state it reports, or NULL. */
int keeper_cancel_job(struct keeper *k, const char *job_id, char *state, size_t state_len);
