/* SPDX-License-Identifier: MIT */
#pragma once

/* From a parsed request to what the engine runs: the chat template applied
 * to messages, the text tokenized (BOS as the vocabulary wants it, special
 * tokens recognised), the length checked against the context, and the stop
 * strings gathered (the request's plus the chat format's end-of-turn texts). */

#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "rbee-engine.h"

struct worker_prompt_model {
        const rbee_vocab *vocab;
        const struct rbee_chat_template *chat;
        uint32_t n_ctx;
};

/* Fills j->tokens and j->stop. Thread-safe (the vocabulary is only read).
 * -E2BIG when the prompt leaves no room in the context, -EINVAL (message in
 * err) for a prompt that cannot be used, -ENOMEM. */
int worker_prompt_build(const struct worker_prompt_model *m, struct worker_job *j, char *err, size_t errlen);
