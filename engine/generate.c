/* SPDX-License-Identifier: MIT */
/* Text generation on top of rbee_decode(): prompt processing, sampling,
 * streaming detokenization, stop strings and cancellation. */

#include <errno.h>
#include <limits.h>
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

struct rbee_stream {
        rbee_context *c;
        uint32_t seq;
        struct rbee_generate_params p;
        rbee_sampler *smp;
        const int32_t *prompt;
        size_t n_prompt;
        size_t n_done;                  /* prompt tokens in the cache */
        struct rbee_detok dt;
        struct stopper st;
        struct rbee_generate_result res;
        double t_gen;                   /* when the prompt was done */
        bool finished;
        int error;
        char piece[512];
};

rbee_stream *rbee_stream_free(rbee_stream *s) {
        if (!s)
                return NULL;
        rbee_sampler_free(s->smp);
        free(s->st.buf);
        free(s);
        return NULL;
}

int rbee_stream_new(rbee_context *c, uint32_t seq, const int32_t *prompt, size_t n_prompt,
                    const struct rbee_generate_params *p, rbee_stream **ret) {
        _cleanup_(rbee_stream_freep) rbee_stream *s = NULL;
        int r;

        if (!c || !prompt || n_prompt == 0 || !p || !ret || seq >= c->n_seq)
                return -EINVAL;
        if (n_prompt > c->n_ctx)
                return -E2BIG;
        for (size_t i = 0; i < n_prompt; i++)
                if (prompt[i] < 0 || prompt[i] >= c->model->info.n_vocab)
                        return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *s = (struct rbee_stream) {
                .c = c, .seq = seq, .p = *p, .prompt = prompt, .n_prompt = n_prompt,
                .st = { .stop = p->stop, .n_stop = p->n_stop },
                .res = { .n_prompt = n_prompt },
        };
        for (size_t i = 0; i < p->n_stop; i++) {
                size_t sl = p->stop[i] ? strlen(p->stop[i]) : 0;
                if (sl == 0 || sl > MAX_STOP_BYTES)
                        return -EINVAL;
                s->st.cap = MAX(s->st.cap, sl);
        }
        s->st.cap += sizeof(s->piece) + 1;
        s->st.buf = malloc(s->st.cap);
        if (!s->st.buf)
                return -ENOMEM;
        r = rbee_sampler_new(&p->sampling, c->model->info.n_vocab, &s->smp);
        if (r < 0)
                return r;

        /* Reuse the longest cached prefix, but always decode at least one
         * token so that there are logits to sample from. */
        uint32_t keep = 0;
        if (p->keep_cache) {
                keep = rbee_seq_match(c, seq, prompt, n_prompt);
                if (keep == n_prompt)
                        keep--;
        }
        (void) rbee_seq_truncate(c, seq, keep);
        s->res.n_cached = keep;
        s->n_done = keep;
        rbee_detok_init(&s->dt, c->model->vocab, false);
        *ret = TAKE_PTR(s);
        return 0;
}

static void stream_finish(rbee_stream *s, enum rbee_stop_reason why) {
        const struct rbee_generate_params *p = &s->p;
        struct stopper *st = &s->st;

        s->res.stop_reason = why;
        s->finished = true;
        /* Whatever was held back (an incomplete character, a partial stop
         * string that never completed) belongs to the output. */
        if (why != RBEE_STOP_STRING && why != RBEE_STOP_CANCELLED) {
                int n = rbee_detok_flush(&s->dt, s->piece, sizeof(s->piece));
                if (n > 0) {
                        memcpy(st->buf + st->len, s->piece, n);
                        st->len += n;
                }
                if (st->len > 0 && p->on_token)
                        (void) p->on_token(-1, st->buf, st->len, p->userdata);
        }
        s->res.gen_ms = now_ms() - s->t_gen;
}

/* Bookkeeping of a prompt now all in the cache. */
static void prompt_done(rbee_stream *s, double ms) {
        s->n_done = s->n_prompt;
        s->res.prompt_ms += ms;
        for (size_t i = 0; i < s->n_prompt; i++)
                rbee_sampler_accept(s->smp, s->prompt[i]);
        s->t_gen = now_ms();
}

int rbee_stream_prefill(rbee_stream *s, size_t max) {
        rbee_context *c = s->c;
        size_t n = s->n_prompt - s->n_done;
        int r;

        if (s->error < 0)
                return s->error;
        if (n == 0)
                return 0;
        if (max > 0)
                n = MIN(n, max);
        double t0 = now_ms();
        rbee_seq_want_top(c, s->seq, (uint32_t) rbee_sampler_top_needed(s->smp));
        r = rbee_seq_decode(c, s->seq, s->prompt + s->n_done, n);
        if (r < 0)
                return s->error = r;
        s->n_done += n;
        double t1 = now_ms();
        if (s->n_done < s->n_prompt) {
                s->res.prompt_ms += t1 - t0;
                return (int) MIN(s->n_prompt - s->n_done, (size_t) INT_MAX);
        }
        prompt_done(s, t1 - t0);
        return 0;
}

/* Sample, emit and check the stop conditions; true when the stream goes on
 * with *ret_token. */
static bool stream_sample(rbee_stream *s, int32_t *ret_token) {
        const struct rbee_generate_params *p = &s->p;
        rbee_context *c = s->c;
        struct stopper *st = &s->st;

        if (p->max_tokens >= 0 && s->res.n_generated >= (uint32_t) p->max_tokens) {
                stream_finish(s, RBEE_STOP_LENGTH);
                return false;
        }
        /* From the first candidates when the device selected them: the same
         * token as from the logits, which are then never copied back. */
        const float *top_l, *l;
        const int32_t *top_id;
        size_t n_top = rbee_seq_top(c, s->seq, &top_l, &top_id);
        int32_t tok = n_top > 0 ? rbee_sampler_sample_top(s->smp, top_l, top_id, n_top) : -EINVAL;
        if (tok < 0) {
                if (n_top > 0)
                        log_warning("the device's candidates for sequence %u are unusable (%d): sampling from "
                                    "the logits", s->seq, tok);
                l = rbee_get_seq_logits(c, s->seq);
                if (!l) {
                        s->error = -EIO;
                        return false;
                }
                tok = rbee_sampler_sample(s->smp, l);
        }
        rbee_sampler_accept(s->smp, tok);
        if (!p->ignore_eos && rbee_vocab_is_eog(c->model->vocab, tok)) {
                stream_finish(s, RBEE_STOP_EOS);
                return false;
        }
        s->res.n_generated++;

        int n = rbee_detok_push(&s->dt, tok, s->piece, sizeof(s->piece));
        if (n < 0) {
                s->error = n;
                return false;
        }
        bool hit;
        size_t emit = stopper_push(st, s->piece, n, &hit);
        if (p->on_token && p->on_token(tok, st->buf, emit, p->userdata) != 0) {
                st->len = 0;
                stream_finish(s, RBEE_STOP_CANCELLED);
                return false;
        }
        if (hit) {
                st->len = 0;
                stream_finish(s, RBEE_STOP_STRING);
                return false;
        }
        stopper_consume(st, emit);
        if (c->seq_pos[s->seq] >= c->n_ctx) {
                stream_finish(s, RBEE_STOP_CONTEXT);
                return false;
        }
        *ret_token = tok;
        return true;
}

/* The prompt tokens a step may carry with it: fewer than the batch at
 * which float weights switch to BLAS, so that every token of the pass takes
 * the same kernels as it does alone (quantized weights take the same
 * kernels at any batch). */
#define MERGE_MAX (RBEE_BLAS_MIN_BATCH - 1)

size_t rbee_stream_pending(const rbee_stream *s) {
        return s->n_prompt - s->n_done;
}

int rbee_stream_step(rbee_stream *const *s, size_t n) {
        struct rbee_batch_entry e[MERGE_MAX + RBEE_MAX_SEQ];
        rbee_stream *in[RBEE_MAX_SEQ], *pre[RBEE_MAX_SEQ];
        size_t k = 0, n_in = 0, n_pre = 0;
        int r;

        if (n == 0 || n > RBEE_MAX_SEQ)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (!s[i] || s[i]->c != s[0]->c)
                        return -EINVAL;
                for (size_t j = 0; j < i; j++)
                        if (s[j]->seq == s[i]->seq)
                                return -EINVAL;
        }
        for (size_t i = 0; i < n; i++) {
                int32_t tok;
                if (s[i]->finished || s[i]->error < 0 || s[i]->n_done < s[i]->n_prompt)
                        continue;
                if (!stream_sample(s[i], &tok))
                        continue;
                e[k++] = (struct rbee_batch_entry) { .token = tok, .seq = s[i]->seq, .logits = true };
                in[n_in++] = s[i];
        }
        /* Short prompts ride along. */
        const size_t room = MIN((size_t) MERGE_MAX, (size_t) s[0]->c->n_batch);
        for (size_t i = 0; i < n; i++) {
                rbee_stream *x = s[i];
                size_t rest = x->n_prompt - x->n_done;
                if (x->error < 0 || rest == 0 || k + rest > room)
                        continue;
                for (size_t j = 0; j < rest; j++)
                        e[k++] = (struct rbee_batch_entry) { .token = x->prompt[x->n_done + j], .seq = x->seq,
                                                             .logits = j == rest - 1 };
                pre[n_pre++] = x;
        }
        if (k == 0)
                return 0;
        for (size_t i = 0; i < n_in; i++)
                rbee_seq_want_top(in[i]->c, in[i]->seq, (uint32_t) rbee_sampler_top_needed(in[i]->smp));
        for (size_t i = 0; i < n_pre; i++)
                rbee_seq_want_top(pre[i]->c, pre[i]->seq, (uint32_t) rbee_sampler_top_needed(pre[i]->smp));
        double t0 = now_ms();
        r = rbee_decode_batch(s[0]->c, e, k);
        if (r < 0) {
                for (size_t i = 0; i < n_in; i++)
                        in[i]->error = r;
                for (size_t i = 0; i < n_pre; i++)
                        pre[i]->error = r;
                return r;
        }
        double ms = now_ms() - t0;
        for (size_t i = 0; i < n_pre; i++)
                prompt_done(pre[i], ms);
        return (int) (n_in + n_pre);
}

bool rbee_stream_finished(const rbee_stream *s) {
        return s->finished || s->error < 0;
}

int rbee_stream_result(const rbee_stream *s, struct rbee_generate_result *ret) {
        if (s->error < 0)
                return s->error;
        if (ret)
                *ret = s->res;
        return 0;
}

int rbee_generate_tokens(rbee_context *c, const int32_t *prompt, size_t n_prompt,
                         const struct rbee_generate_params *p, struct rbee_generate_result *ret) {
        _cleanup_(rbee_stream_freep) rbee_stream *s = NULL;
        int r;

        r = rbee_stream_new(c, 0, prompt, n_prompt, p, &s);
        if (r < 0)
                return r;
        r = rbee_stream_prefill(s, 0);
        if (r < 0)
                return r;
        while (!rbee_stream_finished(s)) {
                r = rbee_stream_step(&s, 1);
                if (r < 0)
                        return r;
        }
        return rbee_stream_result(s, ret);
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
