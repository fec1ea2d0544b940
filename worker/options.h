/* SPDX-License-Identifier: MIT */
#pragma once

/* rbee-workerd's command line. */

#include <stdbool.h>
#include <stdint.h>

#include "http-guard.h"

struct worker_options {
        char *model;                    /* --model: a file (has a '/' or ends in .gguf) or a catalog id */
        char *model_id;                 /* --model-id: always a catalog id */
        char *name;
        char *listen;
        char *catalog;
        char *api_key_file;
        char *chat_format;
        int threads;
        uint32_t ctx_size;
        uint32_t batch_size;
        int device;                     /* --device: CUDA device, -1: the CPU (--device cpu),
                                         * -2: not given (the catalog row's, else the CPU) */
        unsigned parallel;              /* --parallel: 0 for the default */
        unsigned max_queue;
        unsigned max_connections;
        uint64_t max_body;
        uint64_t shutdown_timeout_usec;
        struct http_guard_config guard; /* slow clients and greedy peers */
        int log_level;
        bool mlock;
};

/* Returns 1 to run, 0 when --help/--version printed, -EINVAL on a bad argument
 * (after printing why on stderr). */
int worker_options_parse(int argc, char **argv, struct worker_options *ret);
void worker_options_done(struct worker_options *o);
