/* SPDX-License-Identifier: MIT */
/* Faults around the workers of rbee-hive (process mode, real sockets): a
 * worker SIGKILLed while it loads its model and while it serves several
 * streams at once, clients that go away mid-stream, and the hive SIGKILLed
 * mid-stream (its successor adopts the worker). Each case checks
 * that every client gets one terminal event or a clean end (never a hang),
 * that the hive reports the worker's fate, that no process is left behind,
 * and that the next request is served. */

#include <poll.h>

#include "harness.h"
#include "hive/htest.h"

static void wait_gone(int pid) {
        double deadline = wt_now_ms() + 5000;

        while (pid_exists(pid) && wt_now_ms() < deadline)
                usleep(20000);
        ASSERT_FALSE(pid_exists(pid));
}

static long long active_requests(struct ht_hive *h, const char *model) {
        struct wt_response r;
        char *p = wt_strdup_printf("/v1/workers/%s", model);
        long long n = -1;

        ht_call(h, "GET", p, NULL, &r);
        if (r.status == 200)
                n = wt_jint(r.json, "active_requests");
        wt_response_done(&r);
        free(p);
        return n;
}

static void wait_active(struct ht_hive *h, const char *model, long long want, int timeout_ms) {
        double deadline = wt_now_ms() + timeout_ms;
        long long n;

        while ((n = active_requests(h, model)) != want) {
                if (wt_now_ms() > deadline) {
                        ht_dump_log(h);
                        FAIL("%s: %lld active requests, expected %lld", model, n, want);
                }
                usleep(20000);
        }
}

/* The worker's own count of jobs cancelled because their client went away
 * (for the worker, the hive is the client). */
static long long worker_disconnected(const struct wt_worker *ww) {
        struct wt_response r;
        long long n = -1;
        const char *p;

        wt_call(ww, "GET", "/metrics", NULL, &r);
        ASSERT_STATUS(r, 200);
        p = strstr(r.body, "rbee_worker_jobs_total{outcome=\"disconnected\"} ");
        if (p)
                n = strtoll(strchr(p, '}') + 2, NULL, 10);
        wt_response_done(&r);
        return n;
}

static void next_request_works(struct ht_hive *h, int old_pid) {
        struct wt_response r;

        ht_call(h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"hi\",\"max_tokens\":2,\"stream\":false}", &r);
        if (r.status != 200) {
                ht_dump_log(h);
                FAIL("the next request: HTTP %d %s", r.status, r.body);
        }
        ASSERT_EQ(wt_jint(r.json, "tokens_out"), 2);
        wt_response_done(&r);
        int pid = ht_worker_pid(h, "stories", NULL, 0);
        ASSERT_GE(pid, 1);
        ASSERT_NE(pid, old_pid);
}

TEST_TIMEOUT(worker_sigkill_while_loading, 60) {
        struct ht_hive h;
        struct wt_http s;
        struct wt_response r;
        const char *ev, *data;
        char state[32], term[2048] = "";
        const char *last = NULL;
        bool killed = false;
        int pid = 0;

        /* Slow loading (per layer) leaves time to kill it mid-load. */
        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", "--failed-linger=1s", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_LOAD_DELAY_MS=300", NULL });
        ht_register(&h, "stories", ht_model());
        wt_stream_open(&h.conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":8}", &s);
        ASSERT_EQ(s.status, 200);
        while (wt_sse_next(&s, &ev, &data)) {
                if (!killed && (streq(ev, "loading") || streq(ev, "starting"))) {
                        double deadline = wt_now_ms() + 5000;
                        while ((pid = ht_worker_pid(&h, "stories", state, sizeof(state))) <= 0 && wt_now_ms() < deadline)
                                usleep(10000);
                        ASSERT_GE(pid, 1);
                        ASSERT_TRUE(streq(state, "starting") || streq(state, "loading"));
                        ASSERT_EQ(kill(pid, SIGKILL), 0);
                        killed = true;
                }
                if (streq(ev, "token"))
                        FAIL("a token from a worker killed while loading");
                if (streq(ev, "end") || streq(ev, "error")) {
                        last = streq(ev, "end") ? "end" : "error";
                        snprintf(term, sizeof(term), "%s", data);
                        break;
                }
        }
        ASSERT_FALSE(wt_sse_next(&s, &ev, &data));
        wt_http_done(&s);
        ASSERT_TRUE(killed);
        ASSERT_STREQ(last, "error");
        ASSERT_CONTAINS(term, "\"code\":\"worker_");
        ASSERT_CONTAINS(term, "signal 9");

        /* The hive shows the failure with its cause, then forgets it. */
        ht_call(&h, "GET", "/v1/workers/stories", NULL, &r);
        if (r.status == 200) {
                ASSERT_STREQ(wt_jstr(r.json, "state"), "failed");
                ASSERT_CONTAINS(wt_jstr(r.json, "error"), "signal 9");
        }
        wt_response_done(&r);
        wait_gone(pid);
        ASSERT_TRUE(ht_wait_worker(&h, "stories", "", 5000));
        next_request_works(&h, pid);
        ht_stop(&h);
}

TEST_TIMEOUT(worker_sigkill_under_load, 60) {
        struct ht_hive h;
        struct wt_http s[3];
        struct wt_response r;
        char term[2048];
        unsigned tokens;
        const char *ev, *data;

        ht_start(&h, NULL,
                 (const char *[]) { "--stop-workers-on-exit", "--failed-linger=1s", "--worker-parallel=1",
                                    "--max-queue=2", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_TOKEN_DELAY_MS=40", NULL });
        ht_register(&h, "stories", ht_model());
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"stories\"}", &r);
        ASSERT_STATUS(r, 201);
        int pid = (int) wt_jint(r.json, "pid");
        wt_response_done(&r);

        /* One running, two queued behind it (hive and worker queues). */
        for (int i = 0; i < 3; i++) {
                wt_stream_open(&h.conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":100}", &s[i]);
                ASSERT_EQ(s[i].status, 200);
        }
        wait_active(&h, "stories", 3, 5000);
        /* The first is producing tokens. */
        tokens = 0;
        while (wt_sse_next(&s[0], &ev, &data) && !(streq(ev, "token") && ++tokens == 3))
                ;
        ASSERT_EQ(tokens, 3);
        ASSERT_EQ(kill(pid, SIGKILL), 0);

        /* Every client: exactly one terminal error, then the end of the stream. */
        double t0 = wt_now_ms();
        for (int i = 0; i < 3; i++) {
                const char *last = ht_sse_until_terminal(&s[i], NULL, term, sizeof(term));
                if (!last || !streq(last, "error")) {
                        ht_dump_log(&h);
                        FAIL("client %d: %s %s", i, last ? last : "(no terminal event)", term);
                }
                ASSERT_CONTAINS(term, "\"code\":\"worker_");
                ASSERT_FALSE(wt_sse_next(&s[i], &ev, &data));
                wt_http_done(&s[i]);
        }
        ASSERT_TRUE(wt_now_ms() - t0 < 5000);
        ASSERT_TRUE(ht_wait_worker(&h, "stories", "failed", 3000) || ht_wait_worker(&h, "stories", "", 3000));
        wait_gone(pid);
        ASSERT_TRUE(ht_wait_worker(&h, "stories", "", 5000));
        next_request_works(&h, pid);
        ht_call(&h, "GET", "/metrics", NULL, &r);
        ASSERT_CONTAINS(r.body, "rbee_hive_worker_failures_total 1");
        wt_response_done(&r);
        ht_stop(&h);
}

TEST_TIMEOUT(client_disconnect_mid_stream_frees_worker, 60) {
        struct ht_hive h;
        struct wt_http s;
        struct wt_response r;
        const char *ev, *data;
        unsigned tokens = 0;

        /* One slot, no queue: a slot still held by a gone client would give a 503. */
        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", "--worker-parallel=1", "--max-queue=0", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_TOKEN_DELAY_MS=40", NULL });
        ht_register(&h, "stories", ht_model());
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"stories\"}", &r);
        ASSERT_STATUS(r, 201);
        int pid = (int) wt_jint(r.json, "pid");
        struct wt_worker ww = { 0 };
        ASSERT_TRUE(wt_jstr(r.json, "socket") && strlen(wt_jstr(r.json, "socket")) < sizeof(ww.sock));
        strcpy(ww.sock, wt_jstr(r.json, "socket"));
        wt_response_done(&r);

        /* Native SSE, then the OpenAI stream, then a blocking request: each
         * client hangs up early; each time the worker is free again soon. */
        static const struct {
                const char *path, *body;
                bool sse;
        } cases[] = {
                { "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":100}", true },
                { "/v1/chat/completions",
                  "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":100,\"stream\":true}",
                  true },
                { "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":100,\"stream\":false}", false },
                { "/v1/chat/completions",
                  "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":100}",
                  false },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                long long cancelled = worker_disconnected(&ww);
                ASSERT_GE(cancelled, 0);
                if (cases[i].sse) {
                        wt_stream_open(&h.conn, cases[i].path, cases[i].body, &s);
                        ASSERT_EQ(s.status, 200);
                        tokens = 0;
                        while (tokens < 3 && wt_sse_next(&s, &ev, &data))
                                if (streq(ev, "token") || streq(ev, "message"))
                                        tokens++;
                        ASSERT_EQ(tokens, 3);
                        wt_http_done(&s);       /* closes the socket mid-stream */
                } else {
                        int fd = wt_connect(&h.conn);
                        wt_send_request(fd, "POST", cases[i].path, WT_JSON_HEADERS, cases[i].body, strlen(cases[i].body));
                        wait_active(&h, "stories", 1, 5000);
                        usleep(200000);
                        close(fd);
                }
                /* A stream is cancelled as soon as the hive's next write fails;
                 * a blocking request as soon as the hive sees the hang-up
                 * while it waits for the worker's answer. Either way long
                 * before the generation would end (100 tokens at 40 ms). */
                double t0 = wt_now_ms();
                wait_active(&h, "stories", 0, (cases[i].sse ? 3000 : 1500) * wt_slow());
                /* The worker too gave up the job, not only the hive its slot. */
                while (worker_disconnected(&ww) != cancelled + 1) {
                        if (wt_now_ms() > t0 + 1500 * wt_slow()) {
                                ht_dump_log(&h);
                                FAIL("case %zu: the worker did not cancel the job of the gone client", i);
                        }
                        usleep(20000);
                }
                fprintf(stderr, "  case %zu: hive slot and worker job gone %.0f ms after the hang-up\n", i,
                        wt_now_ms() - t0);
                ht_call(&h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"max_tokens\":2,\"stream\":false}", &r);
                if (r.status != 200) {
                        ht_dump_log(&h);
                        FAIL("case %zu: after the disconnect: HTTP %d %s", i, r.status, r.body);
                }
                wt_response_done(&r);
        }
        /* Same worker throughout: a disconnect is not a crash. */
        ASSERT_EQ(ht_worker_pid(&h, "stories", NULL, 0), pid);
        ht_stop(&h);
        ASSERT_FALSE(pid_alive(pid));
}

TEST_TIMEOUT(hive_sigkill_mid_stream_then_restart_adopts_the_worker, 60) {
        struct ht_hive h, h2;
        struct wt_http s;
        struct wt_response r;
        const char *ev, *data;
        unsigned tokens = 0;

        ht_start(&h, NULL, (const char *[]) { "--worker-parallel=1", "--max-queue=0", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_TOKEN_DELAY_MS=40", NULL });
        ht_register(&h, "stories", ht_model());
        wt_stream_open(&h.conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":100}", &s);
        ASSERT_EQ(s.status, 200);
        while (tokens < 3 && wt_sse_next(&s, &ev, &data))
                tokens += streq(ev, "token");
        int wpid = ht_worker_pid(&h, "stories", NULL, 0);
        ASSERT_GE(wpid, 1);

        /* The hive dies: the client's stream ends (there is no one left to
         * send a terminal event), the worker lives on. */
        struct wt_worker hw = { .pid = h.pid };
        ASSERT_EQ(kill(h.pid, SIGKILL), 0);
        ASSERT_NE(wt_wait_exit(&hw, 5000), -1);
        close(h.notify_fd);
        double t0 = wt_now_ms();
        char buf[4096];
        struct pollfd p = { .fd = s.fd, .events = POLLIN };
        for (;;) {
                ASSERT_EQ(poll(&p, 1, 5000), 1);
                ssize_t k = read(s.fd, buf, sizeof(buf));
                if (k <= 0)
                        break;          /* EOF or a reset: the end the client sees */
                ASSERT_TRUE(memmem(buf, (size_t) k, "event: end", 10) == NULL);
        }
        ASSERT_TRUE(wt_now_ms() - t0 < 3000);
        s.done = true;
        wt_http_done(&s);
        ASSERT_TRUE(pid_alive(wpid));

        /* A new hive adopts it; the abandoned request does not hold its only slot. */
        ht_start(&h2, h.dir, (const char *[]) { "--stop-workers-on-exit", "--max-queue=0", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_TOKEN_DELAY_MS=40", NULL });
        ht_call(&h2, "GET", "/v1/workers/stories", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "pid"), wpid);
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "adopted")));
        wt_response_done(&r);
        double deadline = wt_now_ms() + 5000 * wt_slow();
        for (;;) {
                ht_call(&h2, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"max_tokens\":2,\"stream\":false}", &r);
                int st = r.status;
                if (st != 200 && st != 503) {
                        ht_dump_log(&h2);
                        FAIL("after the restart: HTTP %d %s", st, r.body);
                }
                wt_response_done(&r);
                if (st == 200)
                        break;
                ASSERT_TRUE(wt_now_ms() < deadline);
                usleep(100000);
        }
        ASSERT_EQ(ht_worker_pid(&h2, "stories", NULL, 0), wpid);
        ht_stop(&h2);
        ASSERT_FALSE(pid_alive(wpid));
}
