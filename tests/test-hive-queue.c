/* SPDX-License-Identifier: MIT */
/* rbee-hive's queue, with the real daemon in process mode and the real
 * rbee-workerd: a client that hangs up while its request waits (in the
 * worker's queue behind a busy slot, or in the hive while the worker loads)
 * gives its place back at once, on every inference route, and the others are
 * not disturbed; admission counts the slots the worker really runs. */

#include <poll.h>

#include "../hive/hive.h"
#include "harness.h"
#include "hive/htest.h"

TEST(request_limit_follows_what_the_worker_says) {
        struct hive h = { .opt = { .max_queue = 4 } };
        struct hive_worker w = { .queue_capacity = -1 };

        /* Not known yet: the worker's default of 4 slots, or what it was told. */
        ASSERT_EQ(hive_worker_request_limit_locked(&h, &w), 4 + 4);
        h.opt.worker_parallel = 2;
        ASSERT_EQ(hive_worker_request_limit_locked(&h, &w), 2 + 4);
        /* What it says wins (it runs fewer when RAM is short, a unit's drop-in may say more). */
        w.slots = 3;
        ASSERT_EQ(hive_worker_request_limit_locked(&h, &w), 3 + 4);
        w.queue_capacity = 8;
        ASSERT_EQ(hive_worker_request_limit_locked(&h, &w), 3 + 4);
        /* Never more waiting than the worker queues. */
        w.queue_capacity = 1;
        ASSERT_EQ(hive_worker_request_limit_locked(&h, &w), 3 + 1);
        w.queue_capacity = 0;
        ASSERT_EQ(hive_worker_request_limit_locked(&h, &w), 3);
}

/* A field of GET /v1/workers/{model}, -1 when there is no such worker. */
static long long hive_worker_field(struct ht_hive *h, const char *model, const char *field) {
        struct wt_response r;
        char *p = wt_strdup_printf("/v1/workers/%s", model);
        long long n = -1;

        ht_call(h, "GET", p, NULL, &r);
        if (r.status == 200)
                n = wt_jint(r.json, field);
        wt_response_done(&r);
        free(p);
        return n;
}

/* A field of the worker's own GET /v1/health (queue_depth, running, slots). */
static long long worker_health(const struct wt_worker *ww, const char *field) {
        struct wt_response r;
        long long n;

        wt_call(ww, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        n = wt_jint(r.json, field);
        wt_response_done(&r);
        return n;
}

/* The worker's jobs of every outcome so far. */
static long long worker_jobs_total(const struct wt_worker *ww) {
        struct wt_response r;
        long long n = 0;

        wt_call(ww, "GET", "/metrics", NULL, &r);
        ASSERT_STATUS(r, 200);
        for (const char *p = r.body; (p = strstr(p, "rbee_worker_jobs_total{")); p++)
                n += strtoll(strchr(p, '}') + 2, NULL, 10);
        wt_response_done(&r);
        return n;
}

/* Bounded wait until the hive and, when ww is given, the worker show what is
 * wanted (-1: any). Returns the milliseconds it took. */
static double wait_counts(struct ht_hive *h, const struct wt_worker *ww, long long active, long long queued,
                          long long running, int timeout_ms, const char *what) {
        double t0 = wt_now_ms(), deadline = t0 + timeout_ms * wt_slow();
        long long a, q = -1, run = -1;

        for (;;) {
                a = hive_worker_field(h, "stories", "active_requests");
                if (ww) {
                        q = worker_health(ww, "queue_depth");
                        run = worker_health(ww, "running");
                }
                if (a == active && (queued < 0 || q == queued) && (running < 0 || run == running))
                        return wt_now_ms() - t0;
                if (wt_now_ms() > deadline) {
                        ht_dump_log(h);
                        FAIL("%s: after %d ms the hive holds %lld requests (want %lld), the worker runs %lld "
                             "(want %lld) and queues %lld (want %lld)",
                             what, timeout_ms * wt_slow(), a, active, run, running, q, queued);
                }
                usleep(10000);
        }
}

static void worker_socket(struct ht_hive *h, struct wt_worker *ww) {
        char *sock = wt_strdup_printf("%s/workers/stories.sock", h->runtime);

        memset(ww, 0, sizeof(*ww));
        ASSERT_TRUE(strlen(sock) < sizeof(ww->sock));
        strcpy(ww->sock, sock);
        free(sock);
}

/* The four ways to ask for a generation, each waited for differently: a
 * native stream is a hive job whose head the hive sends at once; the others
 * wait for the worker's head, which a chat stream gets at once too. */
static const struct {
        const char *name, *path, *body;
} routes[] = {
        { "native stream", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"b\",\"max_tokens\":5}" },
        { "native, not streaming", "/v1/inference",
          "{\"model\":\"stories\",\"prompt\":\"b\",\"max_tokens\":5,\"stream\":false}" },
        { "chat completion", "/v1/chat/completions",
          "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"b\"}],\"max_tokens\":5}" },
        { "chat completion stream", "/v1/chat/completions",
          "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"b\"}],\"max_tokens\":5,"
          "\"stream\":true}" },
};

/* Send a request and leave it waiting: the caller closes the socket. */
static int send_only(struct ht_hive *h, const char *path, const char *body) {
        int fd = wt_connect(&h->conn);

        wt_send_request(fd, "POST", path, WT_JSON_HEADERS, body, strlen(body));
        return fd;
}

/* The end event of a stream: "end" with tokens_out. */
static void stream_ends_with(struct wt_http *s, long long tokens_out, const char *what) {
        char term[2048] = "";
        const char *last = ht_sse_until_terminal(s, NULL, term, sizeof(term));

        if (!last || !streq(last, "end"))
                FAIL("%s ended with %s: %s", what, last ? last : "nothing", term);
        struct json_object *end = json_tokener_parse(term);
        ASSERT_NOT_NULL(end);
        ASSERT_EQ(wt_jint(end, "tokens_out"), tokens_out);
        json_object_put(end);
}

TEST_TIMEOUT(hangup_while_queued_in_the_worker, 90) {
        struct ht_hive h;
        struct wt_worker ww;
        struct wt_response r;
        struct wt_http a;
        const char *ev, *data;

        /* One slot: A runs, whatever comes next waits in the worker's queue. */
        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", "--worker-parallel=1", "--max-queue=2", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_TOKEN_DELAY_MS=100", NULL });
        ht_register(&h, "stories", ht_model());
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"stories\",\"keep_alive\":-1}", &r);
        ASSERT_STATUS(r, 201);
        wt_response_done(&r);
        worker_socket(&h, &ww);
        ASSERT_EQ(worker_health(&ww, "slots"), 1);

        /* A: long enough to outlast every case below (100 tokens, 10 s). */
        wt_stream_open(&h.conn, "/v1/inference",
                       "{\"model\":\"stories\",\"prompt\":\"a\",\"max_tokens\":100,\"ignore_eos\":true}", &a);
        ASSERT_EQ(a.status, 200);
        while (wt_sse_next(&a, &ev, &data) && !streq(ev, "token"))
                ;
        wait_counts(&h, &ww, 1, 0, 1, 5000, "A running");

        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                long long jobs = worker_jobs_total(&ww);
                int fd = send_only(&h, routes[i].path, routes[i].body);
                /* B waits in the worker's queue, relayed by the hive. */
                wait_counts(&h, &ww, 2, 1, 1, 5000, routes[i].name);
                close(fd);
                double ms = wait_counts(&h, &ww, 1, 0, 1, 1000, routes[i].name);
                fprintf(stderr, "  %s: the hive and the worker let go of it %.0f ms after the hang-up\n",
                        routes[i].name, ms);
                /* The worker ended the job (it never ran), and A still runs. */
                ASSERT_EQ(worker_jobs_total(&ww), jobs + 1);
                ASSERT_TRUE(hive_worker_field(&h, "stories", "active_requests") == 1);
        }

        /* A saw none of it: every token, then its end. */
        stream_ends_with(&a, 100, "A");
        wt_http_done(&a);
        wait_counts(&h, &ww, 0, 0, 0, 5000, "all done");
        ht_call(&h, "GET", "/metrics", NULL, &r);
        ASSERT_CONTAINS(r.body, "rbee_hive_requests_total{status=\"5xx\"} 0");
        wt_response_done(&r);
        ht_stop(&h);
}

TEST_TIMEOUT(hangup_while_the_worker_loads, 90) {
        struct ht_hive h;
        struct wt_worker ww;
        struct wt_http c;
        char state[32];
        int fds[ELEMENTSOF(routes)];

        /* Loading takes seconds: every layer waits 600 ms. */
        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", "--keep-alive=-1", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_LOAD_DELAY_MS=600", NULL });
        ht_register(&h, "stories", ht_model());

        /* C starts the worker and stays. */
        wt_stream_open(&h.conn, "/v1/inference",
                       "{\"model\":\"stories\",\"prompt\":\"c\",\"max_tokens\":5,\"ignore_eos\":true}", &c);
        ASSERT_EQ(c.status, 200);
        wait_counts(&h, NULL, 1, -1, -1, 5000, "C attached");
        /* Until the worker says otherwise, the worker's default of 4 slots counts. */
        ASSERT_EQ(hive_worker_field(&h, "stories", "slots"), 4);
        ASSERT_EQ(hive_worker_field(&h, "stories", "request_limit"), 4 + 4);

        /* One client per route waits for the same start, then all hang up. */
        for (size_t i = 0; i < ELEMENTSOF(routes); i++)
                fds[i] = send_only(&h, routes[i].path, routes[i].body);
        wait_counts(&h, NULL, 1 + ELEMENTSOF(routes), -1, -1, 5000, "all attached");
        for (size_t i = 0; i < ELEMENTSOF(routes); i++)
                close(fds[i]);
        double ms = wait_counts(&h, NULL, 1, -1, -1, 1000, "after the hang-ups");
        (void) ht_worker_pid(&h, "stories", state, sizeof(state));
        fprintf(stderr, "  the hive let go of them %.0f ms after the hang-ups, the worker still %s\n", ms, state);
        /* Noticed while the worker loads, not when it is ready. */
        ASSERT_TRUE(streq(state, "starting") || streq(state, "loading"));

        /* C is served; the worker never saw the others. */
        stream_ends_with(&c, 5, "C");
        wt_http_done(&c);
        worker_socket(&h, &ww);
        wait_counts(&h, &ww, 0, 0, 0, 5000, "C done");
        ASSERT_EQ(worker_jobs_total(&ww), 1);
        /* Now the hive knows what the worker runs. */
        ASSERT_EQ(hive_worker_field(&h, "stories", "slots"), worker_health(&ww, "slots"));
        ASSERT_EQ(hive_worker_field(&h, "stories", "request_limit"), worker_health(&ww, "slots") + 4);
        ht_stop(&h);
}

TEST_TIMEOUT(admission_counts_the_worker_slots, 60) {
        struct ht_hive h;
        struct wt_worker ww;
        struct wt_response r;
        struct wt_http s[3];

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", "--worker-parallel=2", "--max-queue=1", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_TOKEN_DELAY_MS=30", NULL });
        ht_register(&h, "stories", ht_model());
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"stories\"}", &r);
        ASSERT_STATUS(r, 201);
        wt_response_done(&r);
        worker_socket(&h, &ww);
        ht_call(&h, "GET", "/v1/workers/stories", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "slots"), 2);
        ASSERT_EQ(wt_jint(r.json, "queue_limit"), 1);
        ASSERT_EQ(wt_jint(r.json, "request_limit"), 3);
        wt_response_done(&r);
        /* The worker runs what it was told and queues at least what the hive may send it. */
        ASSERT_EQ(worker_health(&ww, "slots"), 2);
        ASSERT_GE(worker_health(&ww, "queue_capacity"), 1);

        /* Two run, one waits: three admitted. */
        for (int i = 0; i < 3; i++) {
                wt_stream_open(&h.conn, "/v1/inference",
                               "{\"model\":\"stories\",\"prompt\":\"a\",\"max_tokens\":30,\"ignore_eos\":true}", &s[i]);
                ASSERT_EQ(s[i].status, 200);
        }
        wait_counts(&h, &ww, 3, 1, 2, 5000, "three admitted");

        /* The fourth, on every route: 503 overloaded. */
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                ht_call(&h, "POST", routes[i].path, routes[i].body, &r);
                if (r.status != 503) {
                        ht_dump_log(&h);
                        FAIL("%s: HTTP %d: %s", routes[i].name, r.status, r.body);
                }
                ASSERT_STREQ(wt_jstr(r.json, "error.code"), "overloaded");
                ASSERT_CONTAINS(wt_jstr(r.json, "error.message"), "limit 3");
                ASSERT_CONTAINS(r.head, "Retry-After:");
                wt_response_done(&r);
        }

        /* The three complete. */
        for (int i = 0; i < 3; i++) {
                stream_ends_with(&s[i], 30, "an admitted stream");
                wt_http_done(&s[i]);
        }
        wait_counts(&h, &ww, 0, 0, 0, 5000, "all done");
        ht_call(&h, "GET", "/metrics", NULL, &r);
        ASSERT_CONTAINS(r.body, "rbee_hive_rejected_total 4");
        wt_response_done(&r);
        ht_stop(&h);
}
