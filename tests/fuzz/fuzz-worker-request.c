/* SPDX-License-Identifier: MIT */
/* Every request body the worker parses: POST /v1/inference, /v1/chat/completions
 * and /v1/completions through worker_request_parse() (then the chat template
 * over the parsed messages, as the prompt builder does), and POST /v1/cancel.
 * The first byte picks the endpoint and the limits; the rest is the body.
 * A request that parses must be within every limit it was given. */

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "chat.h"
#include "fuzz.h"
#include "json-util.h"
#include "worker/request.h"
#include "strutil.h"

static const struct worker_limits limits[4] = {
        { .n_ctx = 2048, .n_vocab = 32000, .max_prompt_bytes = 1u << 20 },
        { .n_ctx = 16, .n_vocab = 100, .max_prompt_bytes = 64 },
        { .n_ctx = 1, .n_vocab = 1, .max_prompt_bytes = 1 },
        { .n_ctx = 131072, .n_vocab = 152064, .max_prompt_bytes = 8u << 20 },
};

static void check_parsed(const struct worker_request *r, enum worker_api api, const struct worker_limits *lim,
                         unsigned format) {
        FUZZ_CHECK(r->api == api);
        FUZZ_CHECK(r->job_id[0] == 0 || worker_job_id_is_valid(r->job_id));
        FUZZ_CHECK((r->prompt != NULL) + (r->messages != NULL) + (r->prompt_tokens != NULL) == 1);
        if (r->prompt)
                FUZZ_CHECK(strlen(r->prompt) <= lim->max_prompt_bytes);
        FUZZ_CHECK(r->n_prompt_tokens <= lim->n_ctx);
        for (size_t i = 0; i < r->n_prompt_tokens; i++)
                FUZZ_CHECK(r->prompt_tokens[i] >= 0 && r->prompt_tokens[i] < lim->n_vocab);
        FUZZ_CHECK(r->max_tokens >= -1 && (r->max_tokens < 0 || (uint32_t) r->max_tokens <= lim->n_ctx));
        FUZZ_CHECK(r->n_stop <= WORKER_MAX_STOP);
        for (size_t i = 0; i < r->n_stop; i++)
                FUZZ_CHECK(r->stop[i] && strlen(r->stop[i]) <= WORKER_MAX_STOP_LEN);
        FUZZ_CHECK(r->n_messages <= WORKER_MAX_MESSAGES);
        size_t total = 0;
        for (size_t i = 0; i < r->n_messages; i++) {
                const struct rbee_chat_message *m = &r->messages[i];
                FUZZ_CHECK(m->role && m->content);
                FUZZ_CHECK(streq(m->role, "system") || streq(m->role, "user") || streq(m->role, "assistant"));
                total += strlen(m->content);
        }
        FUZZ_CHECK(total <= lim->max_prompt_bytes);
        if (r->messages) {
                char *prompt = NULL;
                int k = rbee_chat_apply((enum rbee_chat_format) (format % _RBEE_CHAT_FORMAT_MAX), r->messages,
                                        r->n_messages, true, &prompt);
                FUZZ_CHECK(k >= 0 && prompt);
                free(prompt);
        }
}

/* POST /v1/cancel, as worker/server.c reads it. */
static void check_cancel(const uint8_t *data, size_t size) {
        struct json_object *o = NULL;
        const char *id = NULL;
        char err[256] = "";

        if (json_parse_strict((const char *) data, size, 8, &o, err, sizeof(err)) < 0) {
                FUZZ_CHECK(err[0]);
                return;
        }
        if (json_object_is_type(o, json_type_object) && json_get_string(o, "job_id", &id, NULL) > 0 &&
            worker_job_id_is_valid(id)) {
                size_t n = strlen(id);
                FUZZ_CHECK(n >= 1 && n <= WORKER_JOB_ID_MAX && strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") == n);
        }
        json_object_put(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct worker_request req;
        char err[512] = "";
        int r;

        if (size < 1)
                return 0;
        unsigned sel = data[0];
        /* An exact copy without a NUL: the parser gets a length, not a string. */
        char *body = malloc(size - 1 ? size - 1 : 1);
        FUZZ_CHECK(body);
        memcpy(body, data + 1, size - 1);
        if (sel % 4 == 3) {
                check_cancel((const uint8_t *) body, size - 1);
                free(body);
                return 0;
        }
        enum worker_api api = (enum worker_api) (sel % 4);
        const struct worker_limits *lim = &limits[(sel >> 2) & 3];
        worker_request_init(&req, api);
        r = worker_request_parse(api, body, size - 1, lim, &req, err, sizeof(err));
        if (r >= 0)
                check_parsed(&req, api, lim, sel >> 4);
        else
                FUZZ_CHECK(r == -EINVAL || r == -EBADMSG || r == -E2BIG || r == -ENOMEM);
        if (r == -EINVAL || r == -EBADMSG || r == -E2BIG)
                FUZZ_CHECK(err[0]);
        worker_request_done(&req);
        free(body);
        return 0;
}
