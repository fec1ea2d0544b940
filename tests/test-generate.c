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
