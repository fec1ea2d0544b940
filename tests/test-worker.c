/* SPDX-License-Identifier: MIT */
/* rbee-workerd end to end: the real daemon on a unix or loopback TCP socket,
 * real models, a real HTTP client. Token-rate dependent tests slow the
 * worker down with its test hook (RBEE_WORKER_TEST_TOKEN_DELAY_MS), so that
 * "mid-stream" is a window of seconds and not of microseconds. */

#include <sched.h>
#include <sqlite3.h>
#include <sys/mount.h>

#include "worker/wtest.h"

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })

static const char *stories(void) {
        return harness_shared("models/stories260K.gguf");
}

static void read_started(struct wt_http *h, char *job_id, size_t n) {
        const char *ev, *data;
        struct json_object *o;

        ASSERT_TRUE(wt_sse_next(h, &ev, &data));
        ASSERT_STREQ(ev, "started");
        o = json_tokener_parse(data);
        ASSERT_NOT_NULL(o);
        snprintf(job_id, n, "%s", wt_jstr(o, "job_id"));
        json_object_put(o);
}

/* Read n token events. */
static void read_tokens(struct wt_http *h, int n) {
        const char *ev, *data;

        for (int i = 0; i < n; i++) {
                ASSERT_TRUE(wt_sse_next(h, &ev, &data));
                ASSERT_STREQ(ev, "token");
        }
}

/* Read to the terminal event; return it (parsed) and how many tokens came first. */
static struct json_object *read_to_end(struct wt_http *h, const char **ret_event, int *ret_tokens) {
        static char evname[32];
        const char *ev, *data;
        int tokens = 0;

        for (;;) {
                if (!wt_sse_next(h, &ev, &data))
                        FAIL("the stream ended without a terminal event");
                if (streq(ev, "token")) {
                        tokens++;
                        continue;
                }
                if (streq(ev, "started"))
                        continue;
                ASSERT_TRUE(streq(ev, "end") || streq(ev, "error"));
                snprintf(evname, sizeof(evname), "%s", ev);
                struct json_object *o = json_tokener_parse(data);
                ASSERT_NOT_NULL(o);
                /* Exactly one terminal event: nothing may follow it. */
                ASSERT_FALSE(wt_sse_next(h, &ev, &data));
                *ret_event = evname;
                if (ret_tokens)
                        *ret_tokens = tokens;
                return o;
        }
}

TEST(api_basics) {
        struct wt_worker w;
        struct wt_response r;

        wt_start(&w, stories(), ARGS("--threads", "1", "--name", "stories"), NULL);

        wt_call(&w, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "status"), "ok");
        ASSERT_STREQ(wt_jstr(r.json, "model"), "stories");
        ASSERT_STREQ(wt_jstr(r.json, "state"), "ready");
        ASSERT_NOT_NULL(wt_jstr(r.json, "version"));
        ASSERT_EQ(wt_jint(r.json, "pid"), w.pid);
        ASSERT_FALSE(json_object_get_boolean(wt_jget(r.json, "busy")));
        ASSERT_EQ(wt_jint(r.json, "queue_depth"), 0);
        ASSERT_TRUE(wt_jdouble(r.json, "idle_seconds") >= 0);
        wt_response_done(&r);

        wt_call(&w, "GET", "/v1/ready", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "ready")));
        ASSERT_EQ(wt_jint(r.json, "progress.done"), 5);
        ASSERT_EQ(wt_jint(r.json, "progress.total"), 5);
        wt_response_done(&r);

        wt_call(&w, "GET", "/v1/models", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "object"), "list");
        ASSERT_STREQ(wt_jstr(r.json, "data.0.id"), "stories");
        ASSERT_STREQ(wt_jstr(r.json, "data.0.object"), "model");
        wt_response_done(&r);
        wt_call(&w, "GET", "/v1/models/stories", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_call(&w, "GET", "/v1/models/gpt-4", NULL, &r);
        ASSERT_STATUS(r, 404);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "model_not_found");
        wt_response_done(&r);

        wt_call(&w, "POST", "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":4}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);

        wt_call(&w, "GET", "/metrics", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_CONTAINS(r.body, "# TYPE rbee_worker_generated_tokens_total counter");
        ASSERT_CONTAINS(r.body, "rbee_worker_generated_tokens_total 4\n");
        ASSERT_CONTAINS(r.body, "rbee_worker_jobs_total{outcome=\"completed\"} 1\n");
        ASSERT_CONTAINS(r.body, "rbee_worker_http_requests_total{route=\"inference\",code=\"2xx\"} 1\n");
        ASSERT_CONTAINS(r.body, "rbee_worker_ready 1\n");
        ASSERT_CONTAINS(r.body, "rbee_worker_queue_depth 0\n");
        ASSERT_CONTAINS(r.body, "rbee_worker_queue_capacity 8\n");
        ASSERT_CONTAINS(r.body, "rbee_worker_model_load_seconds ");
        ASSERT_CONTAINS(r.body, "rbee_worker_tokens_per_second ");
        ASSERT_CONTAINS(r.body, "rbee_worker_info{version=");
        wt_response_done(&r);

        wt_stop_clean(&w);
}

TEST(inference_stream_matches_blocking) {
        const char *body = "{\"prompt\":\"Once upon a time\",\"max_tokens\":40,\"temperature\":0}";
        struct wt_worker w;
        struct wt_response a, b;
        struct wt_http h;
        char text[8192] = "", job[80];
        const char *ev, *data;
        int n_tokens = 0, last_index = -1;

        wt_start(&w, stories(), ARGS("--threads", "1"), NULL);

        wt_call(&w, "POST", "/v1/inference", body, &a);
        ASSERT_STATUS(a, 200);
        wt_call(&w, "POST", "/v1/inference", body, &b);
        ASSERT_STATUS(b, 200);
        const char *t = wt_jstr(a.json, "text");
        ASSERT_NOT_NULL(t);
        ASSERT_TRUE(strlen(t) > 20);
        /* Greedy decoding is deterministic, and the second run reuses the cached prompt. */
        ASSERT_STREQ(t, wt_jstr(b.json, "text"));
        ASSERT_EQ(wt_jint(a.json, "tokens_out"), 40);
        ASSERT_STREQ(wt_jstr(a.json, "stop_reason"), "length");
        ASSERT_STREQ(wt_jstr(a.json, "finish_reason"), "length");
        ASSERT_EQ(wt_jint(a.json, "tokens_in"), wt_jint(b.json, "tokens_in"));
        ASSERT_EQ(wt_jint(b.json, "cached_tokens"), wt_jint(b.json, "tokens_in") - 1);
        ASSERT_TRUE(wt_jdouble(a.json, "timings.gen_ms") > 0);
        ASSERT_TRUE(strstr(a.head, wt_jstr(a.json, "job_id")) != NULL); /* X-Rbee-Job-Id */

        wt_stream_open(&w, "/v1/inference",
                       "{\"prompt\":\"Once upon a time\",\"max_tokens\":40,\"temperature\":0,\"stream\":true,\"job_id\":\"s-1\"}",
                       &h);
        ASSERT_EQ(h.status, 200);
        ASSERT_CONTAINS(wt_header(&h, "Content-Type"), "text/event-stream");
        read_started(&h, job, sizeof(job));
        ASSERT_STREQ(job, "s-1");
        for (;;) {
                ASSERT_TRUE(wt_sse_next(&h, &ev, &data));
                struct json_object *o = json_tokener_parse(data);
                ASSERT_NOT_NULL(o);
                if (streq(ev, "token")) {
                        int idx = (int) wt_jint(o, "index");
                        ASSERT_TRUE(idx > last_index);
                        last_index = idx;
                        strncat(text, wt_jstr(o, "text"), sizeof(text) - strlen(text) - 1);
                        n_tokens++;
                        json_object_put(o);
                        continue;
                }
                ASSERT_STREQ(ev, "end");
                ASSERT_STREQ(wt_jstr(o, "job_id"), "s-1");
                ASSERT_EQ(wt_jint(o, "tokens_out"), 40);
                ASSERT_EQ(wt_jint(o, "tokens_in"), wt_jint(a.json, "tokens_in"));
                ASSERT_STREQ(wt_jstr(o, "stop_reason"), "length");
                ASSERT_TRUE(wt_jdouble(o, "tokens_per_second") > 0);
                json_object_put(o);
                break;
        }
        ASSERT_FALSE(wt_sse_next(&h, &ev, &data));
        ASSERT_STREQ(text, t);
        ASSERT_TRUE(n_tokens > 10);
        wt_http_done(&h);

        /* A fixed seed reproduces a sampled answer. */
        wt_response_done(&a);
        wt_response_done(&b);
        body = "{\"prompt\":\"Lily\",\"max_tokens\":30,\"temperature\":0.9,\"seed\":42}";
        wt_call(&w, "POST", "/v1/inference", body, &a);
        wt_call(&w, "POST", "/v1/inference", body, &b);
        ASSERT_STATUS(a, 200);
        ASSERT_STREQ(wt_jstr(a.json, "text"), wt_jstr(b.json, "text"));
        wt_response_done(&a);
        wt_response_done(&b);

        wt_stop_clean(&w);
}

TEST(stop_strings) {
        struct wt_worker w;
        struct wt_response a, b;
        char body[512], stop[64];

        wt_start(&w, stories(), ARGS("--threads", "1"), NULL);
        wt_call(&w, "POST", "/v1/inference", "{\"prompt\":\"Once upon a time\",\"max_tokens\":40,\"temperature\":0}", &a);
        ASSERT_STATUS(a, 200);
        const char *t = wt_jstr(a.json, "text");
        /* Stop at the fourth word of the greedy answer. */
        const char *p = t;
        for (int i = 0; i < 4 && p; i++)
                p = strchr(p + 1, ' ');
        ASSERT_NOT_NULL(p);
        const char *e = strchr(p + 1, ' ');
        ASSERT_NOT_NULL(e);
        snprintf(stop, sizeof(stop), "%.*s", (int) (e - p), p);
        snprintf(body, sizeof(body),
                 "{\"prompt\":\"Once upon a time\",\"max_tokens\":40,\"temperature\":0,\"stop\":[\"zzzz\",\"%s\"]}", stop);
        wt_call(&w, "POST", "/v1/inference", body, &b);
        ASSERT_STATUS(b, 200);
        ASSERT_STREQ(wt_jstr(b.json, "stop_reason"), "stop");
        ASSERT_STREQ(wt_jstr(b.json, "finish_reason"), "stop");
        ASSERT_EQ(strlen(wt_jstr(b.json, "text")), (size_t) (p - t));
        ASSERT_TRUE(strncmp(wt_jstr(b.json, "text"), t, (size_t) (p - t)) == 0);
        wt_response_done(&a);
        wt_response_done(&b);
        wt_stop_clean(&w);
}

TEST(openai_chat) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_http h;
        const char *ev, *data;
        char content[8192] = "";
        bool saw_role = false, saw_finish = false, saw_usage = false, saw_done = false;
        int chunks = 0;

        wt_start(&w, stories(), ARGS("--threads", "1", "--name", "stories"), NULL);

        wt_call(&w, "POST", "/v1/chat/completions",
                "{\"model\":\"stories\",\"messages\":[{\"role\":\"system\",\"content\":\"Tell a story.\"},"
                "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Once upon\"},{\"type\":\"text\",\"text\":\" a time\"}]}],"
                "\"max_tokens\":12,\"temperature\":0}",
                &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "object"), "chat.completion");
        ASSERT_STREQ(wt_jstr(r.json, "model"), "stories");
        ASSERT_TRUE(strncmp(wt_jstr(r.json, "id"), "chatcmpl-", 9) == 0);
        ASSERT_STREQ(wt_jstr(r.json, "choices.0.message.role"), "assistant");
        ASSERT_NOT_NULL(wt_jstr(r.json, "choices.0.message.content"));
        const char *fr = wt_jstr(r.json, "choices.0.finish_reason");
        ASSERT_TRUE(streq(fr, "stop") || streq(fr, "length"));
        long long pt = wt_jint(r.json, "usage.prompt_tokens"), ct = wt_jint(r.json, "usage.completion_tokens");
        ASSERT_TRUE(pt > 10);
        ASSERT_TRUE(ct >= 1 && ct <= 12);
        ASSERT_EQ(wt_jint(r.json, "usage.total_tokens"), pt + ct);
        char blocking[8192];
        snprintf(blocking, sizeof(blocking), "%s", wt_jstr(r.json, "choices.0.message.content"));
        wt_response_done(&r);

        wt_stream_open(&w, "/v1/chat/completions",
                       "{\"model\":\"stories\",\"messages\":[{\"role\":\"system\",\"content\":\"Tell a story.\"},"
                       "{\"role\":\"user\",\"content\":\"Once upon a time\"}],"
                       "\"max_tokens\":12,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                       &h);
        ASSERT_EQ(h.status, 200);
        while (wt_sse_next(&h, &ev, &data)) {
                ASSERT_STREQ(ev, "message");
                ASSERT_FALSE(saw_done);
                if (streq(data, "[DONE]")) {
                        saw_done = true;
                        continue;
                }
                struct json_object *o = json_tokener_parse(data);
                ASSERT_NOT_NULL(o);
                ASSERT_STREQ(wt_jstr(o, "object"), "chat.completion.chunk");
                chunks++;
                if (wt_jget(o, "usage")) {
                        ASSERT_FALSE(saw_usage);
                        ASSERT_TRUE(saw_finish);
                        ASSERT_EQ(json_object_array_length(wt_jget(o, "choices")), 0);
                        ASSERT_EQ(wt_jint(o, "usage.prompt_tokens"), pt);
                        ASSERT_EQ(wt_jint(o, "usage.total_tokens"), pt + wt_jint(o, "usage.completion_tokens"));
                        saw_usage = true;
                } else {
                        ASSERT_FALSE(saw_finish);
                        if (chunks == 1) {
                                ASSERT_STREQ(wt_jstr(o, "choices.0.delta.role"), "assistant");
                                saw_role = true;
                        }
                        const char *c = wt_jstr(o, "choices.0.delta.content");
                        if (c)
                                strncat(content, c, sizeof(content) - strlen(content) - 1);
                        const char *f = wt_jstr(o, "choices.0.finish_reason");
                        if (f) {
                                ASSERT_TRUE(streq(f, "stop") || streq(f, "length"));
                                saw_finish = true;
                        }
                }
                json_object_put(o);
        }
        ASSERT_TRUE(saw_role && saw_finish && saw_usage && saw_done);
        /* The same conversation (content parts joined) gives the same greedy answer. */
        ASSERT_STREQ(content, blocking);
        wt_http_done(&h);
        wt_stop_clean(&w);
}

TEST(openai_completions) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_http h;
        const char *ev, *data;
        char text[8192] = "";
        bool finish = false, done = false;

        wt_start(&w, stories(), ARGS("--threads", "1"), NULL);
        wt_call(&w, "POST", "/v1/completions", "{\"model\":\"x\",\"prompt\":\"Once upon a time\",\"max_tokens\":10,\"temperature\":0}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "object"), "text_completion");
        ASSERT_STREQ(wt_jstr(r.json, "choices.0.finish_reason"), "length");
        ASSERT_EQ(wt_jint(r.json, "usage.completion_tokens"), 10);
        char blocking[4096];
        snprintf(blocking, sizeof(blocking), "%s", wt_jstr(r.json, "choices.0.text"));
        wt_response_done(&r);

        wt_stream_open(&w, "/v1/completions", "{\"prompt\":[\"Once upon a time\"],\"max_tokens\":10,\"temperature\":0,\"stream\":true}", &h);
        while (wt_sse_next(&h, &ev, &data)) {
                ASSERT_FALSE(done);
                if (streq(data, "[DONE]")) {
                        done = true;
                        continue;
                }
                struct json_object *o = json_tokener_parse(data);
                ASSERT_NOT_NULL(o);
                ASSERT_FALSE(finish);
                strncat(text, wt_jstr(o, "choices.0.text"), sizeof(text) - strlen(text) - 1);
                if (wt_jstr(o, "choices.0.finish_reason"))
                        finish = true;
                json_object_put(o);
        }
        ASSERT_TRUE(finish && done);
        ASSERT_STREQ(text, blocking);
        wt_http_done(&h);

        /* A prompt of token ids. */
        wt_call(&w, "POST", "/v1/completions", "{\"prompt\":[1,400,300,100],\"max_tokens\":3}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "usage.prompt_tokens"), 4);
        wt_response_done(&r);
        wt_stop_clean(&w);
}

TEST(cancel_mid_stream) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_http h, q;
        const char *ev;
        char job[80];
        int tokens;

        /* One slot, so that the second job waits in the queue. */
        wt_start(&w, stories(), ARGS("--threads", "1", "--parallel", "1"), ARGS("RBEE_WORKER_TEST_TOKEN_DELAY_MS=50"));

        wt_stream_open(&w, "/v1/inference",
                       "{\"prompt\":\"Once\",\"max_tokens\":100,\"ignore_eos\":true,\"stream\":true,\"job_id\":\"c-1\"}", &h);
        read_started(&h, job, sizeof(job));
        read_tokens(&h, 3);

        /* A second job waits in the queue; cancelling it ends it at once. */
        wt_stream_open(&w, "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":50,\"stream\":true,\"job_id\":\"c-2\"}", &q);
        ASSERT_EQ(q.status, 200);
        wt_call(&w, "DELETE", "/v1/inference/c-2", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "cancelled")));
        wt_response_done(&r);
        struct json_object *qe = read_to_end(&q, &ev, &tokens);
        ASSERT_STREQ(ev, "end");
        ASSERT_STREQ(wt_jstr(qe, "stop_reason"), "cancelled");
        ASSERT_EQ(wt_jint(qe, "tokens_out"), 0);
        ASSERT_EQ(tokens, 0);
        json_object_put(qe);
        wt_http_done(&q);

        /* Drain what is buffered: once a token had to be waited for, the
         * next is about 50 ms away. */
        for (int i = 0; i < 60; i++) {
                double t = wt_now_ms();
                read_tokens(&h, 1);
                if (wt_now_ms() - t > 20)
                        break;
        }
        double t0 = wt_now_ms();
        wt_call(&w, "POST", "/v1/cancel", "{\"job_id\":\"c-1\"}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "job_id"), "c-1");
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "cancelled")));
        wt_response_done(&r);

        struct json_object *end = read_to_end(&h, &ev, &tokens);
        double dt = wt_now_ms() - t0;
        ASSERT_STREQ(ev, "end");
        ASSERT_STREQ(wt_jstr(end, "stop_reason"), "cancelled");
        ASSERT_STREQ(wt_jstr(end, "finish_reason"), "cancelled");
        /* At 50 ms a token, "within one token" leaves no room for more than
         * what was already on its way when the cancel arrived. */
        ASSERT_LE(tokens, 2);
        ASSERT_TRUE(wt_jint(end, "tokens_out") < 20);
        ASSERT_TRUE(dt < 1000.0 * wt_slow());
        json_object_put(end);
        wt_http_done(&h);

        /* Repeats are harmless; unknown ids are 404. */
        wt_call(&w, "POST", "/v1/cancel", "{\"job_id\":\"c-1\"}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_FALSE(json_object_get_boolean(wt_jget(r.json, "cancelled")));
        wt_response_done(&r);
        wt_call(&w, "DELETE", "/v1/inference/c-1", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_call(&w, "DELETE", "/v1/inference/never-was", NULL, &r);
        ASSERT_STATUS(r, 404);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "job_not_found");
        wt_response_done(&r);
        wt_call(&w, "POST", "/v1/cancel", "{\"job_id\":\"never-was\"}", &r);
        ASSERT_STATUS(r, 404);
        wt_response_done(&r);

        /* The model is free again. */
        wt_call(&w, "POST", "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":2}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_TRUE(wt_jdouble(r.json, "timings.queue_ms") < 500);
        wt_response_done(&r);

        wt_call(&w, "GET", "/metrics", NULL, &r);
        ASSERT_CONTAINS(r.body, "rbee_worker_jobs_total{outcome=\"cancelled\"} 2\n");
        wt_response_done(&r);
        wt_stop_clean(&w);
}

TEST(disconnect_frees_slot) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_http h;
        char job[80];

        wt_start(&w, stories(), ARGS("--threads", "1"), ARGS("RBEE_WORKER_TEST_TOKEN_DELAY_MS=25"));

        /* 100 tokens at 25 ms would hold the model for 2.5 s. */
        wt_stream_open(&w, "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":100,\"ignore_eos\":true,\"stream\":true}", &h);
        read_started(&h, job, sizeof(job));
        read_tokens(&h, 2);
        wt_http_done(&h);

        double t0 = wt_now_ms();
        wt_call(&w, "POST", "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":4}", &r);
        double dt = wt_now_ms() - t0;
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "tokens_out"), 4);
        ASSERT_TRUE(wt_jdouble(r.json, "timings.queue_ms") < 300.0 * wt_slow());
        ASSERT_TRUE(dt < 1000.0 * wt_slow());
        wt_response_done(&r);

        /* The same for a blocking request whose client goes away. */
        int fd = wt_connect(&w);
        const char *body = "{\"prompt\":\"Once\",\"max_tokens\":100,\"ignore_eos\":true}";
        wt_send_request(fd, "POST", "/v1/inference", WT_JSON_HEADERS, body, strlen(body));
        /* Wait until it runs: the metrics show the model busy. */
        for (double until = wt_now_ms() + 5000.0 * wt_slow();;) {
                wt_call(&w, "GET", "/metrics", NULL, &r);
                bool busy = strstr(r.body, "rbee_worker_busy 1\n") != NULL;
                wt_response_done(&r);
                if (busy)
                        break;
                ASSERT_TRUE(wt_now_ms() < until);
        }
        close(fd);
        t0 = wt_now_ms();
        wt_call(&w, "POST", "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":4}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_TRUE(wt_jdouble(r.json, "timings.queue_ms") < 300.0 * wt_slow());
        ASSERT_TRUE(wt_now_ms() - t0 < 1000.0 * wt_slow());
        wt_response_done(&r);

        wt_call(&w, "GET", "/metrics", NULL, &r);
        ASSERT_CONTAINS(r.body, "rbee_worker_jobs_total{outcome=\"disconnected\"} 2\n");
        wt_response_done(&r);
        char *log = wt_read_log(&w);
        ASSERT_CONTAINS(log, "client disconnected");
        free(log);
        wt_stop_clean(&w);
}

TEST(queue_full_is_503) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_http a, b;
        char job[80];

        wt_start(&w, stories(), ARGS("--threads", "1", "--parallel", "1", "--max-queue", "1"), ARGS("RBEE_WORKER_TEST_TOKEN_DELAY_MS=25"));
        wt_stream_open(&w, "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":100,\"stream\":true,\"job_id\":\"q-a\"}", &a);
        read_started(&a, job, sizeof(job));
        /* The stream's head comes back once the job is queued. */
        wt_stream_open(&w, "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":5,\"stream\":true,\"job_id\":\"q-b\"}", &b);
        ASSERT_EQ(b.status, 200);

        wt_call(&w, "POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r);
        ASSERT_STATUS(r, 503);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "queue_full");
        ASSERT_CONTAINS(r.head, "Retry-After: 1\r\n");
        wt_response_done(&r);
        /* A duplicate id is refused too. */
        wt_call(&w, "POST", "/v1/inference", "{\"prompt\":\"Once\",\"job_id\":\"q-a\"}", &r);
        ASSERT_TRUE(r.status == 409 || r.status == 503);
        wt_response_done(&r);

        /* What the hive's keep-alive clock reads: busy, so never idle. */
        wt_call(&w, "GET", "/v1/health", NULL, &r);
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "busy")));
        ASSERT_EQ(wt_jint(r.json, "queue_depth"), 1);
        ASSERT_TRUE(wt_jdouble(r.json, "idle_seconds") == 0);
        wt_response_done(&r);

        wt_call(&w, "GET", "/metrics", NULL, &r);
        ASSERT_CONTAINS(r.body, "rbee_worker_queue_depth 1\n");
        ASSERT_CONTAINS(r.body, "rbee_worker_busy 1\n");
        ASSERT_CONTAINS(r.body, "rbee_worker_rejected_total 1\n");
        wt_response_done(&r);

        wt_call(&w, "POST", "/v1/cancel", "{\"job_id\":\"q-a\"}", &r);
        wt_response_done(&r);
        const char *ev;
        struct json_object *o = read_to_end(&a, &ev, NULL);
        json_object_put(o);
        o = read_to_end(&b, &ev, NULL);
        ASSERT_STREQ(ev, "end");
        ASSERT_EQ(wt_jint(o, "tokens_out"), 5);
        json_object_put(o);
        wt_http_done(&a);
        wt_http_done(&b);
        wt_stop_clean(&w);
}

TEST(concurrent_clients) {
        struct wt_worker w;
        struct wt_http h[4];
        int fds[4];

        wt_start(&w, stories(), ARGS("--threads", "1"), NULL);
        for (int i = 0; i < 4; i++) {
                char body[128];
                snprintf(body, sizeof(body), "{\"prompt\":\"Once\",\"max_tokens\":%d,\"temperature\":0}", 5 + i);
                fds[i] = wt_connect(&w);
                wt_send_request(fds[i], "POST", "/v1/inference", WT_JSON_HEADERS, body, strlen(body));
        }
        char ids[4][80];
        for (int i = 0; i < 4; i++) {
                ASSERT_EQ(wt_http_begin(&h[i], fds[i], 30000 * wt_slow()), 0);
                ASSERT_EQ(h[i].status, 200);
                char *b = wt_http_body(&h[i]);
                struct json_object *o = json_tokener_parse(b);
                ASSERT_EQ(wt_jint(o, "tokens_out"), 5 + i);
                snprintf(ids[i], sizeof(ids[i]), "%s", wt_jstr(o, "job_id"));
                for (int k = 0; k < i; k++)
                        ASSERT_FALSE(streq(ids[k], ids[i]));
                json_object_put(o);
                free(b);
                wt_http_done(&h[i]);
        }
        wt_stop_clean(&w);
}

TEST(sigterm_ends_streams) {
        struct wt_worker w;
        struct wt_http a, b;
        const char *ev;
        char job[80];

        /* One slot: the chat stream below is the queued case. */
        wt_start(&w, stories(), ARGS("--threads", "1", "--parallel", "1"), ARGS("RBEE_WORKER_TEST_TOKEN_DELAY_MS=25"));
        wt_stream_open(&w, "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":100,\"ignore_eos\":true,\"stream\":true}", &a);
        read_started(&a, job, sizeof(job));
        read_tokens(&a, 2);
        wt_stream_open(&w, "/v1/chat/completions",
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":50,\"stream\":true}", &b);
        ASSERT_EQ(b.status, 200);

        double t0 = wt_now_ms();
        kill(w.pid, SIGTERM);
        struct json_object *o = read_to_end(&a, &ev, NULL);
        ASSERT_STREQ(ev, "error");
        ASSERT_STREQ(wt_jstr(o, "code"), "shutting_down");
        ASSERT_TRUE(wt_jint(o, "tokens_out") >= 2);
        json_object_put(o);

        /* The queued OpenAI stream gets an error chunk, and no [DONE]. */
        const char *e2, *data;
        ASSERT_TRUE(wt_sse_next(&b, &e2, &data));
        o = json_tokener_parse(data);
        ASSERT_STREQ(wt_jstr(o, "error.code"), "shutting_down");
        json_object_put(o);
        ASSERT_FALSE(wt_sse_next(&b, &e2, &data));

        int st = wt_wait_exit(&w, 10000 * wt_slow());
        ASSERT_TRUE(st != -1);
        ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ASSERT_TRUE(wt_now_ms() - t0 < 5000.0 * wt_slow());
        ASSERT_TRUE(wt_notify_wait(&w, "STOPPING=1", 1000));
        wt_http_done(&a);
        wt_http_done(&b);
        wt_stop(&w);
}

TEST(api_key) {
        struct wt_worker w;
        struct wt_response r;
        char path[PATH_MAX];

        wt_start(&w, stories(), ARGS("--threads", "1"), ARGS("RBEE_API_KEY=s3cret-key"));
        wt_call(&w, "GET", "/v1/ready", NULL, &r);
        ASSERT_STATUS(r, 401);
        ASSERT_CONTAINS(r.head, "WWW-Authenticate: Bearer");
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "unauthorized");
        wt_response_done(&r);
        wt_call_raw(&w, "GET", "/v1/ready", "Authorization: Bearer wrong\r\n", NULL, 0, &r);
        ASSERT_STATUS(r, 401);
        wt_response_done(&r);
        wt_call_raw(&w, "GET", "/v1/ready", "Authorization: Bearer s3cret-key\r\n", NULL, 0, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        /* Liveness needs no key. */
        wt_call(&w, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        /* A refused upload is answered before its body is read. */
        const char *body = "{\"prompt\":\"Once\",\"max_tokens\":2}";
        wt_call_raw(&w, "POST", "/v1/inference", WT_JSON_HEADERS, body, strlen(body), &r);
        ASSERT_STATUS(r, 401);
        wt_response_done(&r);
        wt_call_raw(&w, "POST", "/v1/inference", WT_JSON_HEADERS "Authorization: bearer s3cret-key\r\n", body,
                    strlen(body), &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_stop_clean(&w);

        /* The same key from a file (a trailing newline is not part of it). */
        snprintf(path, sizeof(path), "%s/key", harness_tmpdir());
        FILE *f = fopen(path, "we");
        ASSERT_NOT_NULL(f);
        fputs("file-key\n", f);
        fclose(f);
        wt_start(&w, stories(), ARGS("--threads", "1", "--api-key-file", path), NULL);
        wt_call_raw(&w, "GET", "/v1/models", "Authorization: Bearer file-key\r\n", NULL, 0, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_call(&w, "GET", "/v1/models", NULL, &r);
        ASSERT_STATUS(r, 401);
        wt_response_done(&r);
        wt_stop_clean(&w);
}

TEST(refuses_public_address_without_key) {
        struct wt_worker w;
        struct wt_opts o = { .model = stories(), .args = ARGS("--listen", "0.0.0.0:0"), .no_wait = true };

        wt_spawn(&w, &o);
        int st = wt_wait_exit(&w, 10000 * wt_slow());
        ASSERT_TRUE(st != -1);
        ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) != 0);
        char *log = wt_read_log(&w);
        ASSERT_CONTAINS(log, "without an API key");
        free(log);
        wt_notify_wait(&w, NULL, 200);
        ASSERT_CONTAINS(w.notes, "STATUS=Failed: Refusing to listen on 0.0.0.0:0 without an API key");
        ASSERT_CONTAINS(w.notes, "ERRNO=1\n");
        ASSERT_TRUE(strstr(w.notes, "READY=1") == NULL);
        wt_stop(&w);
}

TEST(load_failure_is_reported) {
        struct wt_worker w;
        char path[PATH_MAX];

        snprintf(path, sizeof(path), "%s/broken.gguf", harness_tmpdir());
        FILE *f = fopen(path, "we");
        ASSERT_NOT_NULL(f);
        fputs("GGUF but not really a model file", f);
        fclose(f);

        struct wt_opts o = { .model = path, .no_wait = true };
        wt_spawn(&w, &o);
        int st = wt_wait_exit(&w, 10000 * wt_slow());
        ASSERT_TRUE(st != -1);
        ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        wt_notify_wait(&w, NULL, 200);
        ASSERT_CONTAINS(w.notes, "STATUS=Failed: Cannot load model broken");
        ASSERT_CONTAINS(w.notes, "ERRNO=");
        ASSERT_TRUE(strstr(w.notes, "READY=1") == NULL);
        wt_stop(&w);
}

static void make_catalog(const char *db, const char *id, const char *model) {
        sqlite3 *s;
        char *sql;

        ASSERT_EQ(sqlite3_open(db, &s), SQLITE_OK);
        sql = sqlite3_mprintf("PRAGMA journal_mode=WAL;"
                              "CREATE TABLE models(id TEXT PRIMARY KEY, source TEXT, local_path TEXT NOT NULL, size INTEGER);"
                              "INSERT INTO models VALUES(%Q, 'file://x', %Q, 1);", id, model);
        ASSERT_EQ(sqlite3_exec(s, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_free(sql);
        sqlite3_close(s);
}

TEST(catalog_resolution) {
        struct wt_worker w;
        struct wt_response r;
        char db[PATH_MAX], env[PATH_MAX + 32];

        snprintf(db, sizeof(db), "%s/catalog.db", harness_tmpdir());
        make_catalog(db, "tinystories", stories());

        wt_start(&w, NULL, ARGS("--model-id", "tinystories", "--catalog", db, "--threads", "1"), NULL);
        wt_call(&w, "GET", "/v1/models", NULL, &r);
        ASSERT_STREQ(wt_jstr(r.json, "data.0.id"), "tinystories");
        wt_response_done(&r);
        wt_stop_clean(&w);

        /* --model with a bare name goes through the catalog in $RBEE_STATE_DIRECTORY. */
        snprintf(env, sizeof(env), "RBEE_STATE_DIRECTORY=%s", harness_tmpdir());
        wt_start(&w, "tinystories", ARGS("--threads", "1"), ARGS(env));
        wt_call(&w, "GET", "/v1/health", NULL, &r);
        ASSERT_STREQ(wt_jstr(r.json, "model"), "tinystories");
        wt_response_done(&r);
        wt_stop_clean(&w);

        struct wt_opts o = { .args = ARGS("--model-id", "nope", "--catalog", db), .no_wait = true };
        wt_spawn(&w, &o);
        int st = wt_wait_exit(&w, 10000 * wt_slow());
        ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        char *log = wt_read_log(&w);
        ASSERT_CONTAINS(log, "model 'nope' is not in the catalog");
        free(log);
        wt_stop(&w);

        /* Something that is not a catalog is reported as such. */
        char bad[PATH_MAX];
        snprintf(bad, sizeof(bad), "%s/not-a-catalog.db", harness_tmpdir());
        FILE *f = fopen(bad, "we");
        ASSERT_NOT_NULL(f);
        fputs("this is not an SQLite database, just text long enough to have a header........", f);
        fclose(f);
        struct wt_opts o2 = { .args = ARGS("--model-id", "tinystories", "--catalog", bad), .no_wait = true };
        wt_spawn(&w, &o2);
        st = wt_wait_exit(&w, 10000 * wt_slow());
        ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        log = wt_read_log(&w);
        ASSERT_CONTAINS(log, "is not a model catalog this worker can read");
        free(log);
        wt_notify_wait(&w, NULL, 100);
        ASSERT_CONTAINS(w.notes, "ERRNO=74\n"); /* EBADMSG */
        wt_stop(&w);
}

TEST(context_limits) {
        const char *model = wt_tiny_model("--ctx 1024");
        struct wt_worker w;
        struct wt_response r;
        char *body;
        size_t cap = 16384, len = 0;

        wt_start(&w, model, ARGS("--threads", "1", "--ctx-size", "1024"), NULL);

        /* 600 prompt tokens: processed in chunks, then reused from the cache. */
        body = malloc(cap);
        len += (size_t) snprintf(body + len, cap - len, "{\"prompt\":[");
        for (int i = 0; i < 600; i++)
                len += (size_t) snprintf(body + len, cap - len, "%s%d", i ? "," : "", 1 + (i * 7) % 500);
        snprintf(body + len, cap - len, "],\"max_tokens\":3,\"temperature\":0}");
        wt_call_raw(&w, "POST", "/v1/completions", WT_JSON_HEADERS, body, strlen(body), &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "usage.prompt_tokens"), 600);
        char first[512];
        snprintf(first, sizeof(first), "%s", wt_jstr(r.json, "choices.0.text"));
        wt_response_done(&r);
        wt_call_raw(&w, "POST", "/v1/inference", WT_JSON_HEADERS, body, strlen(body), &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "cached_tokens"), 599);
        ASSERT_STREQ(wt_jstr(r.json, "text"), first);
        wt_response_done(&r);
        free(body);

        /* A prompt the context cannot hold. */
        len = 0;
        body = malloc(cap);
        len += (size_t) snprintf(body + len, cap - len, "{\"prompt\":[");
        for (int i = 0; i < 1024; i++)
                len += (size_t) snprintf(body + len, cap - len, "%s%d", i ? "," : "", 1 + i % 500);
        snprintf(body + len, cap - len, "]}");
        wt_call_raw(&w, "POST", "/v1/completions", WT_JSON_HEADERS, body, strlen(body), &r);
        ASSERT_STATUS(r, 400);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "context_length_exceeded");
        wt_response_done(&r);
        free(body);

        wt_call(&w, "POST", "/v1/inference", "{\"prompt\":\"x\",\"max_tokens\":1025}", &r);
        ASSERT_STATUS(r, 400);
        ASSERT_CONTAINS(wt_jstr(r.json, "error.message"), "max_tokens");
        wt_response_done(&r);
        wt_stop_clean(&w);
}

/* Structured logging: the worker sends native journal records when its
 * stderr is the journal stream. A private mount namespace gives the test its
 * own /run/systemd/journal/socket to read them from (root only). */
TEST(journal_fields) {
        struct wt_worker w;
        struct wt_response r;
        struct stat st;
        char env[64], got[65536] = "";
        size_t got_len = 0;
        int fd;

        if (unshare(CLONE_NEWNS) < 0)
                SKIP("cannot make a mount namespace: %m");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") < 0)
                SKIP("cannot mount a private /run: %m");
        ASSERT_EQ(mkdir("/run/systemd", 0755), 0);
        ASSERT_EQ(mkdir("/run/systemd/journal", 0755), 0);
        fd = wt_notify_socket("/run/systemd/journal/socket");

        /* stderr will be the log file; JOURNAL_STREAM names it. */
        struct wt_opts o = { .model = stories(), .args = ARGS("--threads", "1", "--name", "stories"), .no_wait = true };
        char logpath[PATH_MAX];
        snprintf(logpath, sizeof(logpath), "%s/worker-1.log", harness_tmpdir());
        int lf = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ASSERT_TRUE(lf >= 0 && fstat(lf, &st) == 0);
        close(lf);
        snprintf(env, sizeof(env), "JOURNAL_STREAM=%llu:%llu", (unsigned long long) st.st_dev,
                 (unsigned long long) st.st_ino);
        o.env = ARGS(env);
        wt_spawn(&w, &o);
        ASSERT_STREQ(w.log, logpath);
        /* wt_spawn truncates the same file (same inode); JOURNAL_STREAM was unset before env is applied. */
        ASSERT_TRUE(wt_notify_wait(&w, "READY=1", 30000 * wt_slow()));
        wt_call(&w, "POST", "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":3,\"job_id\":\"journal-1\"}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_stop_clean(&w);

        for (;;) {
                char buf[8192];
                ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                if (n <= 0)
                        break;
                if (got_len + (size_t) n + 2 < sizeof(got)) {
                        memcpy(got + got_len, buf, (size_t) n);
                        got_len += (size_t) n;
                        got[got_len++] = '\n';
                        got[got_len] = 0;
                }
        }
        ASSERT_CONTAINS(got, "SYSLOG_IDENTIFIER=rbee-workerd\n");
        ASSERT_CONTAINS(got, "RBEE_MODEL=stories\n");
        ASSERT_CONTAINS(got, "PRIORITY=6\n");
        ASSERT_CONTAINS(got, "MESSAGE=Serving stories on ");
        ASSERT_CONTAINS(got, "RBEE_JOB_ID=journal-1\n");
        ASSERT_CONTAINS(got, "RBEE_TOKENS_OUT=3\n");
        ASSERT_CONTAINS(got, "RBEE_SOURCE=engine\n");
        /* Nothing went to stderr: the journal took it all. */
        char *log = wt_read_log(&w);
        ASSERT_TRUE(strstr(log, "Serving stories") == NULL);
        free(log);
        close(fd);
}

TEST(openai_node_client) {
        const char *script = RBEE_SRCDIR "/tests/worker/openai-stream.cjs";
        const char *mods = getenv("RBEE_NODE_MODULES");
        char cand[PATH_MAX], cmd[PATH_MAX * 3], out[PATH_MAX];
        struct wt_worker w;

        if (system("command -v node >/dev/null 2>&1") != 0)
                SKIP("node is not installed");
        /* The openai package: $RBEE_NODE_MODULES, tests/worker/node_modules, or npm's global root. */
        if (mods)
                snprintf(cand, sizeof(cand), "%s", mods);
        else {
                snprintf(cand, sizeof(cand), "%s/tests/worker/node_modules", RBEE_SRCDIR);
                snprintf(cmd, sizeof(cmd), "%s/openai/package.json", cand);
                if (access(cmd, R_OK) < 0) {
                        FILE *p = popen("npm root -g 2>/dev/null", "r");
                        cand[0] = 0;
                        if (p) {
                                if (fgets(cand, sizeof(cand), p))
                                        cand[strcspn(cand, "\n")] = 0;
                                pclose(p);
                        }
                }
        }
        snprintf(cmd, sizeof(cmd), "%s/openai/package.json", cand);
        if (!cand[0] || access(cmd, R_OK) < 0)
                SKIP("the openai npm package is not installed (npm ci --prefix tests/worker, "
                     "or set RBEE_NODE_MODULES)");

        struct wt_opts o = { .model = stories(), .args = ARGS("--threads", "1", "--name", "stories"), .tcp = true };
        wt_spawn(&w, &o);
        snprintf(out, sizeof(out), "%s/node.out", harness_tmpdir());
        snprintf(cmd, sizeof(cmd), "NODE_PATH='%s' node '%s' http://127.0.0.1:%d/v1 stories > '%s' 2>&1", cand, script,
                 w.port, out);
        int rc = system(cmd);
        char *res = harness_read_file(out, NULL);
        if (rc != 0)
                FAIL("the openai client failed (%d): %s", rc, res);
        char *line = strstr(res, "RESULT ");
        ASSERT_NOT_NULL(line);
        struct json_object *j = json_tokener_parse(line + 7);
        ASSERT_NOT_NULL(j);
        ASSERT_TRUE(wt_jint(j, "stream_chunks") >= 3);
        ASSERT_TRUE(strlen(wt_jstr(j, "stream_text")) > 0);
        ASSERT_STREQ(wt_jstr(j, "stream_text"), wt_jstr(j, "text"));
        const char *fr = wt_jstr(j, "finish_reason");
        ASSERT_TRUE(streq(fr, "stop") || streq(fr, "length"));
        ASSERT_TRUE(wt_jint(j, "usage.completion_tokens") >= 1);
        ASSERT_STREQ(wt_jstr(j, "models.0"), "stories");
        json_object_put(j);
        free(res);
        wt_stop_clean(&w);
}
