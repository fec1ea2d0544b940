/* SPDX-License-Identifier: MIT */
/* rbee_generate(): stop strings, cancellation, limits, the prompt cache and
 * seeded sampling, on a real trained model (stories260K) so that the text is
 * meaningful, and on a generated model when ../shared is missing. */

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"
#include "macros.h"
#include "rbee-engine.h"

struct out {
        char text[65536];
        size_t len;
        unsigned calls;
        unsigned cancel_after;
};

static int on_token(int32_t token, const char *text, size_t len, void *userdata) {
        struct out *o = userdata;

        ASSERT_TRUE(o->len + len < sizeof(o->text));
        memcpy(o->text + o->len, text, len);
        o->len += len;
        o->text[o->len] = 0;
        if (token >= 0)
                o->calls++;
        return o->cancel_after && o->calls >= o->cancel_after;
}

static rbee_context *setup(rbee_model **ret_model, uint32_t n_ctx) {
        rbee_model *m = NULL;
        rbee_context *c = NULL;
        struct rbee_context_params cp;

        ASSERT_OK(rbee_model_load(harness_shared("models/stories260K.gguf"), NULL, &m, NULL, 0));
        rbee_context_default_params(&cp);
        cp.n_ctx = n_ctx;
        cp.n_threads = 2;
        ASSERT_OK(rbee_context_new(m, &cp, &c));
        *ret_model = m;
        return c;
}

static void greedy(struct rbee_generate_params *gp, struct out *o, int max_tokens) {
        rbee_generate_default_params(gp);
        gp->sampling.temperature = 0;
        gp->max_tokens = max_tokens;
        gp->on_token = on_token;
        gp->userdata = o;
}

TEST(stop_string) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = setup(&m, 512);
        struct rbee_generate_params gp;
        struct rbee_generate_result res;
        static struct out full, cut;
        const char *stop[] = { "Lily" };

        greedy(&gp, &full, 60);
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        ASSERT_EQ(res.stop_reason, RBEE_STOP_LENGTH);
        ASSERT_EQ(res.n_generated, 60);
        const char *at = strstr(full.text, "Lily");
        ASSERT_NOT_NULL(at);

        greedy(&gp, &cut, 60);
        gp.stop = stop;
        gp.n_stop = 1;
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        ASSERT_EQ(res.stop_reason, RBEE_STOP_STRING);
        /* Everything before the stop string, and nothing of it. */
        ASSERT_EQ(cut.len, (size_t) (at - full.text));
        ASSERT_TRUE(memcmp(cut.text, full.text, cut.len) == 0);
        ASSERT_TRUE(res.n_generated < 60);
}

/* A stop string that never completes is not lost: the held-back prefix is emitted. */
TEST(stop_string_partial_match_is_emitted) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = setup(&m, 512);
        struct rbee_generate_params gp;
        struct rbee_generate_result res;
        static struct out a, b;
        const char *stop[] = { "Lily will never say this" };

        greedy(&gp, &a, 40);
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        greedy(&gp, &b, 40);
        gp.stop = stop;
        gp.n_stop = 1;
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        ASSERT_EQ(res.stop_reason, RBEE_STOP_LENGTH);
        ASSERT_STREQ(a.text, b.text);
}

TEST(cancel_from_callback) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = setup(&m, 512);
        struct rbee_generate_params gp;
        struct rbee_generate_result res;
        static struct out o;

        greedy(&gp, &o, 100);
        o.cancel_after = 3;
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        ASSERT_EQ(res.stop_reason, RBEE_STOP_CANCELLED);
        ASSERT_EQ(res.n_generated, 3);
        ASSERT_EQ(o.calls, 3);
}

TEST(limits) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = setup(&m, 32);
        struct rbee_generate_params gp;
        struct rbee_generate_result res;
        static struct out o;
        char longp[4096];

        greedy(&gp, &o, 0);
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        ASSERT_EQ(res.stop_reason, RBEE_STOP_LENGTH);
        ASSERT_EQ(res.n_generated, 0);

        /* Until the context is full. */
        greedy(&gp, &o, -1);
        gp.ignore_eos = true;
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        ASSERT_EQ(res.stop_reason, RBEE_STOP_CONTEXT);
        ASSERT_EQ(res.n_prompt + res.n_generated, 32 + 1);
        ASSERT_EQ(rbee_context_pos(c), 32);

        /* A prompt longer than the context. */
        memset(longp, 0, sizeof(longp));
        for (size_t i = 0; i + 6 < sizeof(longp); i += 6)
                memcpy(longp + i, "tree. ", 6);
        ASSERT_ERR(rbee_generate(c, longp, &gp, &res), -E2BIG);
        /* Bad sampling parameters. */
        greedy(&gp, &o, 4);
        gp.sampling.top_p = -1;
        ASSERT_ERR(rbee_generate(c, "Once", &gp, &res), -EINVAL);
        /* An empty stop string. */
        const char *bad[] = { "" };
        greedy(&gp, &o, 4);
        gp.stop = bad;
        gp.n_stop = 1;
        ASSERT_ERR(rbee_generate(c, "Once", &gp, &res), -EINVAL);
}

/* Reusing the cached prefix of the last prompt gives the same output. */
TEST(prompt_cache) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = setup(&m, 512);
        struct rbee_generate_params gp;
        struct rbee_generate_result res;
        static struct out fresh, cached;

        greedy(&gp, &fresh, 30);
        ASSERT_OK(rbee_generate(c, "Lily and Tom went to the park", &gp, &res));
        ASSERT_EQ(res.n_cached, 0);

        greedy(&gp, &cached, 10);
        ASSERT_OK(rbee_generate(c, "Lily and Tom went to the park", &gp, &res));
        greedy(&gp, &cached, 30);
        cached.len = 0;
        gp.keep_cache = true;
        ASSERT_OK(rbee_generate(c, "Lily and Tom went to the park", &gp, &res));
        ASSERT_TRUE(res.n_cached > 0);
        ASSERT_EQ(res.n_cached, res.n_prompt - 1);
        ASSERT_STREQ(cached.text, fresh.text);
}

TEST(seeded_sampling) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = setup(&m, 512);
        struct rbee_generate_params gp;
        struct rbee_generate_result res;
        static struct out a, b, d;

        rbee_generate_default_params(&gp);
        gp.max_tokens = 60;
        gp.sampling.temperature = 1.0f;
        gp.sampling.seed = 42;
        gp.on_token = on_token;
        gp.userdata = &a;
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        gp.userdata = &b;
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        ASSERT_STREQ(a.text, b.text);
        gp.sampling.seed = 43;
        gp.userdata = &d;
        ASSERT_OK(rbee_generate(c, "Once upon a time", &gp, &res));
        ASSERT_TRUE(strcmp(a.text, d.text) != 0);
}

/* Ctrl+C in rbee-generate stops at the next token and exits 130. */
TEST(generate_cli_sigint) {
        const char *bin = harness_build_path("rbee-generate");
        const char *model = harness_shared("models/stories260K.gguf");
        int fds[2];

        if (access(bin, X_OK) < 0)
                SKIP("%s is not built", bin);
        ASSERT_OK(pipe(fds));
        pid_t pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                dup2(fds[1], 1);
                close(fds[0]);
                int null = open("/dev/null", O_WRONLY);
                dup2(null, 2);
                /* -1: until the context is full, with EOS ignored: long enough. */
                execl(bin, bin, "-m", model, "-p", "Once upon a time", "-n", "-1", "--ignore-eos", "-c", "100000",
                      "-t", "1", (char *) NULL);
                _exit(127);
        }
        close(fds[1]);
        char buf[256];
        ASSERT_TRUE(read(fds[0], buf, sizeof(buf)) > 0); /* it is generating */
        kill(pid, SIGINT);
        while (read(fds[0], buf, sizeof(buf)) > 0)
                ;
        int st;
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT_TRUE(WIFEXITED(st));
        ASSERT_EQ(WEXITSTATUS(st), 130);
}

/* Parallel sequences. Four prompts of different lengths, each generated alone
 * on a one-sequence context and then all four at once as streams of one
 * four-sequence context, their decode steps batched: every stream must give
 * the same tokens, text and stop reason as it did alone, also while the
 * batch shrinks as streams end. Models: a trained float one and random
 * quantized ones, whose products take the four-token kernels in a batch. */

#define N_PAR 4

struct rec {
        struct out o;
        int32_t ids[256];
        unsigned n_ids;
};

static int on_token_rec(int32_t token, const char *text, size_t len, void *userdata) {
        struct rec *r = userdata;

        if (token >= 0 && r->n_ids < ELEMENTSOF(r->ids))
                r->ids[r->n_ids++] = token;
        return on_token(token, text, len, &r->o);
}

static void check_parallel(const char *model, uint32_t n_threads, bool kv_f32) {
        static const char *const prompts[N_PAR] = {
                "Once upon a time",
                "Lily and Tom went to the park to play with a big red ball and",
                "The",
                "One day, a little bird",
        };
        static const int max_tokens[N_PAR] = { 48, 20, 64, 33 };
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *one = NULL, *par = NULL;
        struct rbee_context_params cp;
        static struct rec alone[N_PAR], batched[N_PAR];
        struct rbee_generate_result res_alone[N_PAR], res;
        static int32_t toks[N_PAR][128];
        int n_toks[N_PAR];

        ASSERT_OK(rbee_model_load(harness_shared(model), NULL, &m, NULL, 0));
        const rbee_vocab *v = rbee_model_get_vocab(m);
        rbee_context_default_params(&cp);
        cp.n_ctx = 128;
        cp.n_threads = n_threads;
        cp.kv_f32 = kv_f32;
        ASSERT_OK(rbee_context_new(m, &cp, &one));
        cp.n_seq = N_PAR;
        ASSERT_OK(rbee_context_new(m, &cp, &par));
        ASSERT_EQ(rbee_context_n_seq(par), N_PAR);

        for (int i = 0; i < N_PAR; i++) {
                struct rbee_generate_params gp;
                n_toks[i] = rbee_tokenize(v, prompts[i], strlen(prompts[i]), rbee_vocab_add_bos(v), false, toks[i],
                                          128);
                ASSERT_TRUE(n_toks[i] > 0);
                memset(&alone[i], 0, sizeof(alone[i]));
                rbee_generate_default_params(&gp);
                gp.sampling.temperature = 0;
                gp.max_tokens = max_tokens[i];
                gp.ignore_eos = i != 0;
                gp.on_token = on_token_rec;
                gp.userdata = &alone[i];
                ASSERT_OK(rbee_generate_tokens(one, toks[i], n_toks[i], &gp, &res_alone[i]));
        }

        /* The streams; sequence i runs prompt (i + 1) % N_PAR, so that no
         * stream has the sequence number it had alone (0). */
        rbee_stream *s[N_PAR] = {};
        for (int i = 0; i < N_PAR; i++) {
                struct rbee_generate_params gp;
                memset(&batched[i], 0, sizeof(batched[i]));
                rbee_generate_default_params(&gp);
                gp.sampling.temperature = 0;
                gp.max_tokens = max_tokens[i];
                gp.ignore_eos = i != 0;
                gp.on_token = on_token_rec;
                gp.userdata = &batched[i];
                ASSERT_OK(rbee_stream_new(par, (i + 1) % N_PAR, toks[i], n_toks[i], &gp, &s[i]));
        }
        /* A prompt is decoded in pieces while other streams already step;
         * the rest of it, and all of another, ride along with a step. */
        ASSERT_OK(rbee_stream_prefill(s[0], 0));
        ASSERT_OK(rbee_stream_prefill(s[2], 0));
        ASSERT_TRUE(rbee_stream_step((rbee_stream *[]) { s[0], s[2] }, 2) == 2);
        ASSERT_TRUE(rbee_stream_prefill(s[1], 3) > 0);
        ASSERT_TRUE(rbee_stream_step((rbee_stream *[]) { s[0], s[2] }, 2) == 2);
        ASSERT_TRUE(rbee_stream_pending(s[1]) > 0);
        ASSERT_TRUE(rbee_stream_pending(s[3]) > 0);
        ASSERT_EQ(rbee_stream_step(s, N_PAR), N_PAR);
        ASSERT_EQ(rbee_stream_pending(s[1]), 0);
        ASSERT_EQ(rbee_stream_pending(s[3]), 0);
        unsigned max_batch = 0;
        for (;;) {
                int r = rbee_stream_step(s, N_PAR);
                ASSERT_OK(r);
                if (r == 0)
                        break;
                max_batch = MAX(max_batch, (unsigned) r);
        }
        ASSERT_EQ(max_batch, N_PAR);
        for (int i = 0; i < N_PAR; i++) {
                ASSERT_TRUE(rbee_stream_finished(s[i]));
                ASSERT_OK(rbee_stream_result(s[i], &res));
                ASSERT_EQ(res.stop_reason, res_alone[i].stop_reason);
                ASSERT_EQ(res.n_generated, res_alone[i].n_generated);
                ASSERT_EQ(res.n_prompt, res_alone[i].n_prompt);
                ASSERT_EQ(batched[i].n_ids, alone[i].n_ids);
                ASSERT_TRUE(memcmp(batched[i].ids, alone[i].ids, alone[i].n_ids * sizeof(int32_t)) == 0);
                ASSERT_STREQ(batched[i].o.text, alone[i].o.text);
                ASSERT_EQ(rbee_seq_pos(par, (i + 1) % N_PAR), res.n_prompt + res.n_generated);
                rbee_stream_free(s[i]);
        }
}

TEST(parallel_streams_match_alone_f32) {
        check_parallel("models/stories260K.gguf", 2, false);
}

TEST(parallel_streams_match_alone_q4_0) {
        check_parallel("models/tiny-llama-d64-Q4_0.gguf", 2, false);
}

TEST(parallel_streams_match_alone_q4_k) {
        /* And the F32 cache. */
        check_parallel("models/tiny-llama-d64-Q4_K_M.gguf", 3, true);
}

/* The logits of a batch of tokens from different sequences are the bits
 * each token gives alone, whatever its place in the batch. */
TEST(decode_batch_logits_are_exact) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *one = NULL, *par = NULL;
        struct rbee_context_params cp;
        const uint32_t S = 5;
        _cleanup_(freep) float *want_buf = NULL;

        ASSERT_OK(rbee_model_load(harness_shared("models/tiny-llama-d64-Q8_0.gguf"), NULL, &m, NULL, 0));
        const int32_t V = rbee_model_get_info(m)->n_vocab;
        want_buf = calloc((size_t) S * 6 * V, sizeof(float));
        ASSERT_NOT_NULL(want_buf);
#define want(s, t) (want_buf + ((size_t) (s) * 6 + (t)) * V)
        rbee_context_default_params(&cp);
        cp.n_ctx = 64;
        cp.n_threads = 2;
        ASSERT_OK(rbee_context_new(m, &cp, &one));
        cp.n_seq = S;
        ASSERT_OK(rbee_context_new(m, &cp, &par));

        /* Sequence s: a prompt of s + 2 tokens, then 6 tokens one at a time. */
        for (uint32_t s = 0; s < S; s++) {
                int32_t p[8];
                for (uint32_t i = 0; i < s + 2; i++)
                        p[i] = (int32_t) ((s * 31 + i * 7 + 1) % V);
                ASSERT_OK(rbee_context_truncate(one, 0));
                ASSERT_OK(rbee_decode(one, p, s + 2));
                ASSERT_OK(rbee_seq_decode(par, s, p, s + 2));
                ASSERT_TRUE(memcmp(rbee_get_seq_logits(par, s), rbee_get_logits(one), V * sizeof(float)) == 0);
                for (int t = 0; t < 6; t++) {
                        int32_t tok = (int32_t) ((s * 13 + t * 5 + 3) % V);
                        ASSERT_OK(rbee_decode(one, &tok, 1));
                        memcpy(want(s, t), rbee_get_logits(one), V * sizeof(float));
                }
        }
        /* Steps of all sequences in a rotating order, two steps of sequence
         * 4 in one batch (only the second asks for logits). */
        for (int t = 0; t < 6; t++) {
                struct rbee_batch_entry e[6];
                size_t n = 0;
                for (uint32_t i = 0; i < S; i++) {
                        uint32_t s = (i + t) % S;
                        if (s == 4 && t % 2 == 1)
                                continue;
                        e[n++] = (struct rbee_batch_entry) { (int32_t) ((s * 13 + t * 5 + 3) % V), s,
                                                             !(s == 4 && t % 2 == 0) };
                        if (s == 4 && t % 2 == 0)
                                e[n++] = (struct rbee_batch_entry) { (int32_t) ((s * 13 + (t + 1) * 5 + 3) % V), s,
                                                                     true };
                }
                ASSERT_OK(rbee_decode_batch(par, e, n));
                for (uint32_t s = 0; s < 4; s++)
                        ASSERT_TRUE(memcmp(rbee_get_seq_logits(par, s), want(s, t), V * sizeof(float)) == 0);
                if (t % 2 == 0)
                        ASSERT_TRUE(memcmp(rbee_get_seq_logits(par, 4), want(4, t + 1), V * sizeof(float)) == 0);
        }
        for (uint32_t s = 0; s < S; s++)
                ASSERT_EQ(rbee_seq_pos(par, s), s + 2 + 6);

        /* Refused batches change nothing. */
        struct rbee_batch_entry bad_seq = { 1, S, true }, bad_tok = { V, 0, true };
        struct rbee_batch_entry two[2] = { { 1, 2, true }, { 2, 2, true } };
        ASSERT_ERR(rbee_decode_batch(par, &bad_seq, 1), -EINVAL);
        ASSERT_ERR(rbee_decode_batch(par, &bad_tok, 1), -EINVAL);
        ASSERT_ERR(rbee_decode_batch(par, two, 2), -EINVAL);
        ASSERT_ERR(rbee_seq_decode(par, S, &two[0].token, 1), -EINVAL);
        static struct rbee_batch_entry many[64];
        for (int i = 0; i < 64; i++)
                many[i] = (struct rbee_batch_entry) { 1, 3, i == 63 };
        ASSERT_ERR(rbee_decode_batch(par, many, 64), -ENOSPC);
        for (uint32_t s = 0; s < S; s++)
                ASSERT_EQ(rbee_seq_pos(par, s), s + 2 + 6);
        ASSERT_ERR(rbee_seq_truncate(par, S, 0), -EINVAL);
        ASSERT_ERR(rbee_seq_truncate(par, 1, 100), -EINVAL);
        ASSERT_OK(rbee_seq_truncate(par, 1, 2));
        ASSERT_EQ(rbee_seq_pos(par, 1), 2);
        ASSERT_EQ(rbee_seq_pos(par, 0), 8);
#undef want
}
