/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "prompt.h"
#include "strutil.h"

/* Chat templates leave BOS to the tokenizer, but a raw prompt may bring its own. */
static bool starts_with_bos_text(const rbee_vocab *v, const char *text) {
        int32_t bos = rbee_vocab_bos(v);
        const char *t = bos >= 0 ? rbee_vocab_token_text(v, bos) : NULL;

        return t && *t && str_startswith(text, t);
}

static int too_long(size_t n, uint32_t n_ctx, char *err, size_t errlen) {
        snprintf(err, errlen, "the prompt has %zu tokens, but the context holds %u (and one more is needed to answer)",
                 n, n_ctx);
        return -E2BIG;
}

static int tokenize(const struct worker_prompt_model *m, struct worker_job *j, char *err, size_t errlen) {
        _cleanup_(freep) char *templated = NULL;
        _cleanup_(freep) int32_t *toks = NULL;
        const char *text = j->req.prompt;
        int r, n;

        if (j->req.messages) {
                r = rbee_chat_template_apply(m->chat, j->req.messages, j->req.n_messages, true, &templated);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        snprintf(err, errlen, "cannot apply the chat template: %s", strerror(-r));
                        return r == -E2BIG ? -E2BIG : -EINVAL;
                }
                text = templated;
        }
        if (!text)
                return -EINVAL;

        toks = malloc_multiply((size_t) m->n_ctx + 1, sizeof(int32_t));
        if (!toks)
                return -ENOMEM;
        /* Special tokens are recognised in every prompt, as llama.cpp's server
         * does: the chat template's markers must be, and a raw prompt is the
         * client's to shape. One slot more than the context tells "too long". */
        n = rbee_tokenize(m->vocab, text, strlen(text),
                          rbee_vocab_add_bos(m->vocab) && !starts_with_bos_text(m->vocab, text), true, toks,
                          (size_t) m->n_ctx + 1);
        if (n == -E2BIG) {
                snprintf(err, errlen, "the prompt is too long");
                return -E2BIG;
        }
        if (n < 0) {
                snprintf(err, errlen, "cannot tokenize the prompt: %s", strerror(-n));
                return -EINVAL;
        }
        if ((uint32_t) n >= m->n_ctx)
                return too_long((size_t) n, m->n_ctx, err, errlen);
        if (n == 0) {
                snprintf(err, errlen, "the prompt is empty");
                return -EINVAL;
        }
        j->tokens = TAKE_PTR(toks);
        j->n_tokens = (size_t) n;
        return 0;
}

int worker_prompt_build(const struct worker_prompt_model *m, struct worker_job *j, char *err, size_t errlen) {
        const char *const *fmt_stops = NULL;
        size_t n_fmt_stops = 0;
        int r;

        if (j->req.prompt_tokens) {
                if (j->req.n_prompt_tokens >= m->n_ctx)
                        return too_long(j->req.n_prompt_tokens, m->n_ctx, err, errlen);
                j->tokens = TAKE_PTR(j->req.prompt_tokens);
                j->n_tokens = j->req.n_prompt_tokens;
        } else {
                r = tokenize(m, j, err, errlen);
                if (r < 0)
                        return r;
        }

        if (j->req.messages) {
                fmt_stops = rbee_chat_stop_strings(m->chat->format);
                while (fmt_stops && fmt_stops[n_fmt_stops])
                        n_fmt_stops++;
        }
        if (j->req.n_stop + n_fmt_stops > 0) {
                j->stop = calloc(j->req.n_stop + n_fmt_stops, sizeof(char *));
                if (!j->stop)
                        return -ENOMEM;
                for (size_t i = 0; i < j->req.n_stop; i++)
                        j->stop[j->n_stop++] = j->req.stop[i];
                for (size_t i = 0; i < n_fmt_stops; i++)
                        j->stop[j->n_stop++] = fmt_stops[i];
        }
        return 0;
}
