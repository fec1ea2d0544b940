/* SPDX-License-Identifier: MIT */
/* rbee-workerd --parallel: requests that arrive together are generated
 * together (their decode steps batched into one forward pass), and each
 * answer is the one the request gets alone. Real daemon, real HTTP. */

#include "worker/wtest.h"

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })
#define N 4

static const char *const prompts[N] = {
        "Once upon a time",
        "Lily and Tom went to the park",
        "The little dog",
        "One day, a bird",
};

static void body_for(int i, bool stream, char *buf, size_t n) {
        /* Three greedy, one sampled with a seed: a stream's sampler is its own. */
        snprintf(buf, n,
                 "{\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":%s,\"seed\":7,\"ignore_eos\":true,"
                 "\"stream\":%s,\"job_id\":\"par-%s-%d\"}",
                 prompts[i], 24 + 6 * i, i == 3 ? "0.8" : "0", stream ? "true" : "false", stream ? "s" : "b", i);
}

/* The text of a stream up to its first token (max_tokens 1) or its end
 * event; *ret_tokens counts the tokens. */
static void read_text(struct wt_http *h, char *text, size_t n, int *ret_tokens, int max_tokens) {
        const char *ev, *data;

        for (;;) {
                if (max_tokens > 0 && *ret_tokens >= max_tokens)
                        return;
                ASSERT_TRUE(wt_sse_next(h, &ev, &data));
                if (streq(ev, "started"))
                        continue;
                struct json_object *o = json_tokener_parse(data);
                ASSERT_NOT_NULL(o);
                if (streq(ev, "token")) {
                        strncat(text, wt_jstr(o, "text"), n - strlen(text) - 1);
                        (*ret_tokens)++;
                        json_object_put(o);
                        continue;
                }
                ASSERT_STREQ(ev, "end");
                ASSERT_STREQ(wt_jstr(o, "stop_reason"), "length");
                json_object_put(o);
                break;
        }
        ASSERT_FALSE(wt_sse_next(h, &ev, &data));
}

TEST_TIMEOUT(parallel_streams_match_alone, 120) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_http h[N];
        static char alone[N][8192], together[N][8192];
        int n_alone[N];
        char body[512];

        /* The token delay makes the four overlap for seconds, not microseconds. */
        wt_start(&w, harness_shared("models/stories260K.gguf"), ARGS("--threads", "2", "--parallel", "4"),
                 ARGS("RBEE_WORKER_TEST_TOKEN_DELAY_MS=10"));

        for (int i = 0; i < N; i++) {
                body_for(i, false, body, sizeof(body));
                wt_call(&w, "POST", "/v1/inference", body, &r);
                ASSERT_STATUS(r, 200);
                snprintf(alone[i], sizeof(alone[i]), "%s", wt_jstr(r.json, "text"));
                n_alone[i] = (int) wt_jint(r.json, "tokens_out");
                ASSERT_EQ(n_alone[i], 24 + 6 * i);
                wt_response_done(&r);
        }

        for (int i = 0; i < N; i++) {
                body_for(i, true, body, sizeof(body));
                wt_stream_open(&w, "/v1/inference", body, &h[i]);
                ASSERT_EQ(h[i].status, 200);
        }
        /* All four run (each has a token out) and none waits in the queue. */
        int n[N] = {};
        for (int i = 0; i < N; i++) {
                together[i][0] = 0;
                read_text(&h[i], together[i], sizeof(together[i]), &n[i], 1);
        }
        wt_call(&w, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "busy")));
        ASSERT_EQ(wt_jint(r.json, "queue_depth"), 0);
        ASSERT_EQ(wt_jint(r.json, "running"), N);
        ASSERT_EQ(wt_jint(r.json, "slots"), N);
        wt_response_done(&r);
        wt_call(&w, "GET", "/metrics", NULL, &r);
        ASSERT_CONTAINS(r.body, "rbee_worker_running 4\n");
        ASSERT_CONTAINS(r.body, "rbee_worker_slots 4\n");
        wt_response_done(&r);

        for (int i = 0; i < N; i++) {
                read_text(&h[i], together[i], sizeof(together[i]), &n[i], 0);
                ASSERT_EQ(n[i], n_alone[i]);
                ASSERT_STREQ(together[i], alone[i]);
                wt_http_done(&h[i]);
        }
        wt_stop_clean(&w);
}

/* With --parallel 2, a third request waits in the queue and still gets its
 * answer when a slot frees; max-queue counts only the waiting ones. */
TEST(parallel_queue_accounting) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_http h[3];
        char body[512], text[8192];

        wt_start(&w, harness_shared("models/stories260K.gguf"),
                 ARGS("--threads", "1", "--parallel", "2", "--max-queue", "1"),
                 ARGS("RBEE_WORKER_TEST_TOKEN_DELAY_MS=25"));
        for (int i = 0; i < 3; i++) {
                body_for(i, true, body, sizeof(body));
                wt_stream_open(&w, "/v1/inference", body, &h[i]);
                ASSERT_EQ(h[i].status, 200);
        }
        int n[3] = {};
        text[0] = 0;
        read_text(&h[0], text, sizeof(text), &n[0], 1);
        read_text(&h[1], text, sizeof(text), &n[1], 1);
        wt_call(&w, "GET", "/v1/health", NULL, &r);
        ASSERT_EQ(wt_jint(r.json, "queue_depth"), 1);
        ASSERT_EQ(wt_jint(r.json, "running"), 2);
        wt_response_done(&r);
        /* Two running and one waiting: the next is refused. */
        body_for(3, false, body, sizeof(body));
        wt_call(&w, "POST", "/v1/inference", body, &r);
        ASSERT_STATUS(r, 503);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "queue_full");
        wt_response_done(&r);
        for (int i = 0; i < 3; i++) {
                read_text(&h[i], text, sizeof(text), &n[i], 0);
                ASSERT_EQ(n[i], 24 + 6 * i);
                wt_http_done(&h[i]);
        }
        wt_stop_clean(&w);
}
