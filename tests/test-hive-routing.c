/* SPDX-License-Identifier: MIT */
/* rbee-hive request routing, with the real daemon in process mode and the
 * real rbee-workerd: a worker that went away behind the hive's back (kill -9,
 * SIGTERM, its socket removed) is restarted for the request that finds it
 * gone, instead of that request failing; client-supplied job ids; a request
 * for another backend than the running worker's. */

#include "harness.h"
#include "hive/htest.h"

/* Start the model's worker and return its pid. */
static int spawn_worker(struct ht_hive *h, const char *model) {
        struct wt_response r;
        char *body = wt_strdup_printf("{\"model\":\"%s\",\"keep_alive\":-1}", model);
        int pid;

        ht_call(h, "POST", "/v1/workers", body, &r);
        if (r.status != 200 && r.status != 201) {
                ht_dump_log(h);
                FAIL("spawn %s: HTTP %d: %s", model, r.status, r.body);
        }
        pid = (int) wt_jint(r.json, "pid");
        wt_response_done(&r);
        free(body);
        if (pid <= 0)
                FAIL("spawn %s: no pid", model);
        return pid;
}

static void wait_gone(int pid) {
        double deadline = wt_now_ms() + 10000;

        while (pid_alive(pid) && wt_now_ms() < deadline)
                usleep(20000);
        if (pid_alive(pid))
                FAIL("worker %d is still running", pid);
}

/* A non-streaming request right after the worker went: a normal answer. */
static void infer_ok(struct ht_hive *h, const char *what) {
        struct wt_response r;

        ht_call(h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":3,\"stream\":false}",
                &r);
        if (r.status != 200) {
                ht_dump_log(h);
                FAIL("%s: HTTP %d: %s", what, r.status, r.body);
        }
        ASSERT_EQ(wt_jint(r.json, "tokens_out"), 3);
        wt_response_done(&r);
}

TEST_TIMEOUT(worker_gone_behind_the_hive_is_restarted, 90) {
        struct ht_hive h;
        struct wt_response r;
        struct wt_http s;
        char term[2048], state[32];
        unsigned tokens;
        int pid, pid2;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        ht_register(&h, "stories", ht_model());

        /* kill -9, then at once a request: the hive may not have seen the
         * death yet (its socket file is still there, nobody listens). */
        pid = spawn_worker(&h, "stories");
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        infer_ok(&h, "non-streaming request right after kill -9");
        pid2 = ht_worker_pid(&h, "stories", state, sizeof(state));
        ASSERT_GE(pid2, 1);
        ASSERT_NE(pid2, pid);
        ASSERT_STREQ(state, "ready");

        /* The same through a stream: no error event, the tokens arrive. */
        pid = pid2;
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        wt_stream_open(&h.conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":5}", &s);
        ASSERT_EQ(s.status, 200);
        const char *last = ht_sse_until_terminal(&s, &tokens, term, sizeof(term));
        wt_http_done(&s);
        if (!last || !streq(last, "end")) {
                ht_dump_log(&h);
                FAIL("stream right after kill -9 ended with %s: %s", last ? last : "nothing", term);
        }
        ASSERT_EQ(tokens, 5);
        pid2 = ht_worker_pid(&h, "stories", NULL, 0);
        ASSERT_GE(pid2, 1);
        ASSERT_NE(pid2, pid);

        /* An OpenAI request after a SIGTERM (a stop behind the hive's back). */
        pid = pid2;
        ASSERT_EQ(kill(pid, SIGTERM), 0);
        ht_call(&h, "POST", "/v1/chat/completions",
                "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}", &r);
        if (r.status != 200) {
                ht_dump_log(&h);
                FAIL("chat completion right after SIGTERM: HTTP %d: %s", r.status, r.body);
        }
        ASSERT_EQ(wt_jint(r.json, "usage.completion_tokens"), 2);
        wt_response_done(&r);
        /* (The old worker may have served it while draining: then none runs now.) */
        wait_gone(pid);

        /* A worker that runs but whose socket is gone cannot be reached: the
         * hive replaces it rather than failing every request. */
        pid = spawn_worker(&h, "stories");
        char *sock = wt_strdup_printf("%s/workers/stories.sock", h.runtime);
        ASSERT_EQ(unlink(sock), 0);
        infer_ok(&h, "request to a worker whose socket was removed");
        wait_gone(pid);
        pid2 = ht_worker_pid(&h, "stories", NULL, 0);
        ASSERT_GE(pid2, 1);
        ASSERT_NE(pid2, pid);
        ASSERT_EQ(access(sock, F_OK), 0);

        /* No request failed on the way. */
        ht_call(&h, "GET", "/metrics", NULL, &r);
        ASSERT_CONTAINS(r.body, "rbee_hive_requests_total{status=\"5xx\"} 0");
        wt_response_done(&r);
        free(sock);
        ht_stop(&h);
}

TEST_TIMEOUT(worker_files_use_the_plain_id, 40) {
        struct ht_hive h;
        struct wt_response r;
        char *want;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        /* '-' is what systemd escapes (\x2d): the unit name has it escaped,
         * the files do not, as rbee-worker@.socket's %I. */
        ht_register(&h, "tiny-stories:f32", ht_model());
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"tiny-stories:f32\"}", &r);
        ASSERT_STATUS(r, 201);
        ASSERT_STREQ(wt_jstr(r.json, "unit"), "rbee-worker@tiny\\x2dstories:f32.service");
        want = wt_strdup_printf("%s/workers/tiny-stories:f32.sock", h.runtime);
        ASSERT_STREQ(wt_jstr(r.json, "socket"), want);
        ASSERT_EQ(access(want, F_OK), 0);
        free(want);
        /* The process-mode log, as documented for the "log" field. */
        want = wt_strdup_printf("%s/workers/tiny-stories:f32.log", h.runtime);
        ASSERT_STREQ(wt_jstr(r.json, "log"), want);
        char *log = harness_read_file(want, NULL);
        ASSERT_CONTAINS(log, "rbee-hive: starting");
        free(log);
        free(want);
        wt_response_done(&r);
        ht_call(&h, "POST", "/v1/inference",
                "{\"model\":\"tiny-stories:f32\",\"prompt\":\"Once\",\"max_tokens\":2,\"stream\":false}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);

        /* An id is at most 128 characters, but the socket address holds 107:
         * such a model is refused a worker with a reason, not a failed bind. */
        char id[129];
        memset(id, 'a', 128);
        id[128] = 0;
        ht_register(&h, id, ht_model());
        char *body = wt_strdup_printf("{\"model\":\"%s\",\"prompt\":\"x\",\"stream\":false}", id);
        ht_call(&h, "POST", "/v1/inference", body, &r);
        ASSERT_STATUS(r, 400);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "invalid_request");
        ASSERT_CONTAINS(wt_jstr(r.json, "error.message"), "too long for a worker socket path");
        wt_response_done(&r);
        free(body);
        ht_stop(&h);
}

TEST_TIMEOUT(client_job_ids, 60) {
        struct ht_hive h;
        struct wt_response r;
        struct wt_http s, s2;
        const char *ev, *data;
        char term[2048];
        unsigned tokens;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_TOKEN_DELAY_MS=30", NULL });
        ht_register(&h, "stories", ht_model());

        /* The id names the job: header, every event, /v1/jobs/{id}. */
        wt_stream_open(&h.conn, "/v1/inference",
                       "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":3,\"job_id\":\"my-job.1\"}", &s);
        ASSERT_EQ(s.status, 200);
        ASSERT_STREQ(wt_header(&s, "X-Rbee-Job-Id"), "my-job.1");
        unsigned events = 0;
        while (wt_sse_next(&s, &ev, &data)) {
                events++;
                /* Token events are the worker's, relayed as they are: {"text","index"}. */
                if (!streq(ev, "token"))
                        ASSERT_CONTAINS(data, "\"job_id\":\"my-job.1\"");
                if (streq(ev, "end") || streq(ev, "error")) {
                        ASSERT_STREQ(ev, "end");
                        break;
                }
        }
        wt_http_done(&s);
        ASSERT_GE(events, 5);           /* loading, ready, started, 3 tokens, end */
        ht_call(&h, "GET", "/v1/jobs/my-job.1", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "state"), "done");
        wt_response_done(&r);

        /* As a job: the id and its events URL. */
        ht_call(&h, "POST", "/v1/jobs",
                "{\"type\":\"infer\",\"model\":\"stories\",\"prompt\":\"x\",\"max_tokens\":1,\"job_id\":\"via-jobs\"}", &r);
        ASSERT_STATUS(r, 202);
        ASSERT_STREQ(wt_jstr(r.json, "job_id"), "via-jobs");
        ASSERT_STREQ(wt_jstr(r.json, "events_url"), "/v1/jobs/via-jobs/events");
        wt_response_done(&r);

        /* Not streaming: the worker's result carries it. */
        ht_call(&h, "POST", "/v1/inference",
                "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":2,\"stream\":false,\"job_id\":\"plain:2\"}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "job_id"), "plain:2");
        wt_response_done(&r);

        /* Refused: a bad id, whatever the route. */
        static const char *const bad[] = {
                "\"a/b\"", "\"../x\"", "\"\"", "\"with space\"", "42",
                "\"12345678901234567890123456789012345678901234567890123456789012345\"",  /* 65 */
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *b = wt_strdup_printf("{\"model\":\"stories\",\"prompt\":\"x\",\"max_tokens\":1,\"job_id\":%s}", bad[i]);
                ht_call(&h, "POST", "/v1/inference", b, &r);
                if (r.status != 400)
                        FAIL("job_id %s: HTTP %d: %s", bad[i], r.status, r.body);
                ASSERT_STREQ(wt_jstr(r.json, "error.code"), "invalid_request");
                ASSERT_CONTAINS(wt_jstr(r.json, "error.message"), "job_id");
                wt_response_done(&r);
                free(b);
        }
        ht_call(&h, "POST", "/v1/jobs", "{\"type\":\"infer\",\"model\":\"stories\",\"prompt\":\"x\",\"job_id\":\"a/b\"}", &r);
        ASSERT_STATUS(r, 400);
        wt_response_done(&r);
        /* 64 characters is the limit, and fine. */
        ht_call(&h, "POST", "/v1/inference",
                "{\"model\":\"stories\",\"prompt\":\"x\",\"max_tokens\":1,\"stream\":false,"
                "\"job_id\":\"1234567890123456789012345678901234567890123456789012345678901234\"}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);

        /* A running job's id is taken: 409 on every route. */
        wt_stream_open(&h.conn, "/v1/inference",
                       "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":60,\"job_id\":\"dup\"}", &s);
        ASSERT_EQ(s.status, 200);
        while (wt_sse_next(&s, &ev, &data) && !streq(ev, "token"))
                ;
        ht_call(&h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"max_tokens\":1,\"job_id\":\"dup\"}", &r);
        ASSERT_STATUS(r, 409);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "job_exists");
        wt_response_done(&r);
        ht_call(&h, "POST", "/v1/inference",
                "{\"model\":\"stories\",\"prompt\":\"x\",\"max_tokens\":1,\"stream\":false,\"job_id\":\"dup\"}", &r);
        ASSERT_STATUS(r, 409);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "job_exists");
        wt_response_done(&r);
        ht_call(&h, "POST", "/v1/jobs", "{\"type\":\"infer\",\"model\":\"stories\",\"prompt\":\"x\",\"job_id\":\"dup\"}", &r);
        ASSERT_STATUS(r, 409);
        wt_response_done(&r);
        /* The running job is untouched by that, and cancellable by its id. */
        ht_call(&h, "DELETE", "/v1/jobs/dup", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "state"), "cancelled");
        wt_response_done(&r);
        ASSERT_STREQ(ht_sse_until_terminal(&s, NULL, term, sizeof(term)), "error");
        ASSERT_CONTAINS(term, "cancelled");
        wt_http_done(&s);

        /* Once a job has ended its id may be used again: it then names the new
         * job. (Right after a cancel the worker may still be winding the old
         * one down and refuse the id for a moment: a job that ended by itself
         * is the clear case.) */
        wt_stream_open(&h.conn, "/v1/inference",
                       "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":2,\"job_id\":\"my-job.1\"}", &s2);
        ASSERT_EQ(s2.status, 200);
        const char *t2 = ht_sse_until_terminal(&s2, &tokens, term, sizeof(term));
        if (!t2 || !streq(t2, "end"))
                FAIL("reusing a finished id: %s %s", t2 ? t2 : "nothing", term);
        ASSERT_EQ(tokens, 2);
        wt_http_done(&s2);
        ht_call(&h, "GET", "/v1/jobs/my-job.1", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "state"), "done");
        wt_response_done(&r);
        ht_call(&h, "GET", "/v1/jobs", NULL, &r);
        ASSERT_STATUS(r, 200);
        unsigned named = 0;
        struct json_object *jobs = wt_jget(r.json, "jobs");
        for (size_t i = 0; jobs && i < json_object_array_length(jobs); i++) {
                struct json_object *id = NULL;
                if (json_object_object_get_ex(json_object_array_get_idx(jobs, i), "job_id", &id) &&
                    streq(json_object_get_string(id), "my-job.1"))
                        named++;
        }
        ASSERT_EQ(named, 1);
        wt_response_done(&r);
        ht_stop(&h);
}

TEST_TIMEOUT(other_backend_than_the_running_worker, 40) {
        struct ht_hive h;
        struct wt_response r;
        int pid;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        ht_register(&h, "stories", ht_model());
        pid = spawn_worker(&h, "stories");

        /* The worker runs on the CPU: cuda must not quietly use it. */
        static const char *const asks[][2] = {
                { "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"backend\":\"cuda\",\"stream\":false}" },
                { "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"backend\":\"cuda\"}" },
                { "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"backend\":\"cuda\",\"device\":0,\"stream\":false}" },
                { "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"device\":1,\"stream\":false}" },
                { "/v1/chat/completions", "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"backend\":\"cuda\"}" },
                { "/v1/workers", "{\"model\":\"stories\",\"backend\":\"cuda\"}" },
                { "/v1/jobs", "{\"type\":\"infer\",\"model\":\"stories\",\"prompt\":\"x\",\"backend\":\"cuda\"}" },
                { "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"backend\":\"metal\",\"stream\":false}" },
        };
        for (size_t i = 0; i < ELEMENTSOF(asks); i++) {
                ht_call(&h, "POST", asks[i][0], asks[i][1], &r);
                if (r.status != 400)
                        FAIL("POST %s %s: HTTP %d: %s", asks[i][0], asks[i][1], r.status, r.body);
                ASSERT_STREQ(wt_jstr(r.json, "error.code"), "backend_unavailable");
                wt_response_done(&r);
        }
        /* Wrong types are malformed requests, not backends. */
        ht_call(&h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"backend\":7}", &r);
        ASSERT_STATUS(r, 400);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "invalid_request");
        wt_response_done(&r);

        /* What it runs on is fine, named or not, and it is the same worker. */
        ht_call(&h, "POST", "/v1/inference",
                "{\"model\":\"stories\",\"prompt\":\"x\",\"max_tokens\":2,\"backend\":\"cpu\",\"device\":0,\"stream\":false}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"stories\",\"backend\":\"cpu\"}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        ASSERT_EQ(ht_worker_pid(&h, "stories", NULL, 0), pid);
        ht_stop(&h);
}
