/* SPDX-License-Identifier: MIT */
/* Text generation on top of rbee_decode(): prompt processing, sampling,
 * streaming detokenization, stop strings and cancellation. */

#include <errno.h>
#include <string.h>
#include <time.h>

#include "context.h"
#include "log.h"
#include "macros.h"

#define MAX_PROMPT_BYTES (64u << 20)
#define MAX_STOP_BYTES 4096

const char *rbee_stop_reason_name(enum rbee_stop_reason r) {
        switch (r) {
        case RBEE_STOP_EOS:
                return "eos";
        case RBEE_STOP_LENGTH:
                return "length";
        case RBEE_STOP_STRING:
                return "stop";
        case RBEE_STOP_CANCELLED:
                return "cancelled";
        case RBEE_STOP_CONTEXT:
                return "context";
        default:
                return "none";
        }
}

void rbee_generate_default_params(struct rbee_generate_params *p) {
        *p = (struct rbee_generate_params) {
                .max_tokens = 128,
                .add_bos = true,
        };
        rbee_sampler_default_params(&p->sampling);
}

static double now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Text is held back while it could still become a stop string, so that a
 * stop string is never half-emitted. */
struct stopper {
        const char *const *stop;
        size_t n_stop;
        char *buf;
        size_t len, cap;
};

/* Length of the longest suffix of s that is a proper prefix of a stop string. */
static size_t held_suffix(const struct stopper *st, const char *s, size_t n) {
        size_t best = 0;

        for (size_t i = 0; i < st->n_stop; i++) {
                size_t sl = strlen(st->stop[i]);
                for (size_t k = MIN(n, sl - 1); k > best; k--)
                        if (memcmp(s + n - k, st->stop[i], k) == 0) {
                                best = k;
                                break;
                        }
        }
        return best;
}

/* Append piece; returns how many bytes at the start of st->buf may be emitted,
 * and sets *hit when a stop string was found (the emittable part then ends
 * right before it). */
static size_t stopper_push(struct stopper *st, const char *piece, size_t n, bool *hit) {
        memcpy(st->buf + st->len, piece, n);
        st->len += n;
        *hit = false;
        if (st->n_stop == 0)
                return st->len;
        size_t first = SIZE_MAX;
        for (size_t i = 0; i < st->n_stop; i++) {
                const char *f = memmem(st->buf, st->len, st->stop[i], strlen(st->stop[i]));
                if (f && (size_t) (f - st->buf) < first)
                        first = f - st->buf;
        }
        if (first != SIZE_MAX) {
                *hit = true;
                return first;
        }
        return st->len - held_suffix(st, st->buf, st->len);
}

static void stopper_consume(struct stopper *st, size_t n) {
        memmove(st->buf, st->buf + n, st->len - n);
        st->len -= n;
}

int rbee_generate_tokens(rbee_context *c, const int32_t *prompt, size_t n_prompt,
                         const struct rbee_generate_params *p, struct rbee_generate_result *ret) {
        _cleanup_(rbee_sampler_freep) rbee_sampler *smp = NULL;
        _cleanup_(freep) char *stopbuf = NULL;
        const rbee_model *m = c->model;
        const rbee_vocab *v = m->vocab;
        struct rbee_generate_result res = { .n_prompt = n_prompt };
        struct rbee_detok dt;
        struct stopper st = { .stop = p->stop, .n_stop = p->n_stop };
        char piece[512];
        int r;

        if (!prompt || n_prompt == 0)
                return -EINVAL;
        if (n_prompt > c->n_ctx)
                return -E2BIG;
        for (size_t i = 0; i < p->n_stop; i++) {
                size_t sl = p->stop[i] ? strlen(p->stop[i]) : 0;
                if (sl == 0 || sl > MAX_STOP_BYTES)
                        return -EINVAL;
                st.cap = MAX(st.cap, sl);
        }
        st.cap += sizeof(piece) + 1;
        stopbuf = st.buf = malloc(st.cap);
        if (!stopbuf)
                return -ENOMEM;

        r = rbee_sampler_new(&p->sampling, m->info.n_vocab, &smp);
        if (r < 0)
                return r;

        /* Reuse the longest cached prefix, but always decode at least one
         * token so that there are logits to sample from. */
        uint32_t keep = 0;
        if (p->keep_cache) {
                while (keep < c->pos && keep < n_prompt && c->history[keep] == prompt[keep])
                        keep++;
                if (keep == n_prompt)
                        keep--;
        }
        (void) rbee_context_truncate(c, keep);
        res.n_cached = keep;

        double t0 = now_ms();
        r = rbee_decode(c, prompt + keep, n_prompt - keep);
        if (r < 0)
                return r;
        double t1 = now_ms();
        res.prompt_ms = t1 - t0;
        for (size_t i = 0; i < n_prompt; i++)
                rbee_sampler_accept(smp, prompt[i]);

        rbee_detok_init(&dt, v, false);
        for (;;) {
                if (p->max_tokens >= 0 && res.n_generated >= (uint32_t) p->max_tokens) {
                        res.stop_reason = RBEE_STOP_LENGTH;
                        break;
                }
                int32_t tok = rbee_sampler_sample(smp, c->logits);
                rbee_sampler_accept(smp, tok);
                if (!p->ignore_eos && rbee_vocab_is_eog(v, tok)) {
                        res.stop_reason = RBEE_STOP_EOS;
                        break;
                }
                res.n_generated++;

                int n = rbee_detok_push(&dt, tok, piece, sizeof(piece));
                if (n < 0)
                        return n;
                bool hit;
                size_t emit = stopper_push(&st, piece, n, &hit);
                if (p->on_token && p->on_token(tok, st.buf, emit, p->userdata) != 0) {
                        res.stop_reason = RBEE_STOP_CANCELLED;
                        st.len = 0;
                        break;
                }
                if (hit) {
                        res.stop_reason = RBEE_STOP_STRING;
                        st.len = 0;
                        break;
                }
                stopper_consume(&st, emit);

                if (c->pos >= c->n_ctx) {
                        res.stop_reason = RBEE_STOP_CONTEXT;
                        break;
                }
                r = rbee_decode(c, &tok, 1);
                if (r < 0)
                        return r;
        }

        /* Whatever was held back (an incomplete character, a partial stop
         * string that never completed) belongs to the output. */
        if (res.stop_reason != RBEE_STOP_STRING && res.stop_reason != RBEE_STOP_CANCELLED) {
                int n = rbee_detok_flush(&dt, piece, sizeof(piece));
                if (n > 0) {
                        memcpy(st.buf + st.len, piece, n);
                        st.len += n;
                }
                if (st.len > 0 && p->on_token)
                        (void) p->on_token(-1, st.buf, st.len, p->userdata);
        }
        res.gen_ms = now_ms() - t1;
        if (ret)
                *ret = res;
        return 0;
}

int rbee_generate(rbee_context *c, const char *prompt, const struct rbee_generate_params *p,
                  struct rbee_generate_result *ret) {
        _cleanup_(freep) int32_t *toks = NULL;
        size_t len;
        int n;

        if (!c || !prompt || !p)
                return -EINVAL;
        len = strlen(prompt);
        if (len > MAX_PROMPT_BYTES)
                return -E2BIG;
        toks = malloc_multiply(c->n_ctx + 1, sizeof(int32_t));
        if (!toks)
                return -ENOMEM;
        n = rbee_tokenize(c->model->vocab, prompt, len, p->add_bos && rbee_vocab_add_bos(c->model->vocab),
                          p->parse_special, toks, c->n_ctx + 1);
        if (n < 0)
                return n;
        if ((size_t) n > c->n_ctx)
                return -E2BIG;
        if (n == 0)
                return -EINVAL;
        return rbee_generate_tokens(c, toks, n, p, ret);
}

const char *rbee_version(void) {
#ifdef RBEE_VERSION
        return RBEE_VERSION;
#else
        return "unknown";
#endif
}
