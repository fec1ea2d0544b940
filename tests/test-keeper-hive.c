/* SPDX-License-Identifier: MIT */
/* rbee against the real rbee-hive in process mode on loopback, with the real
 * rbee-workerd and real models: streaming inference, Ctrl+C (the job is
 * cancelled on the hive and the worker is free right after), a download
 * from a local HF-like server with a progress bar, the error paths a real
 * hive gives, --json that parses, the worker commands, and chat. Every test
 * skips, saying why, when rbee-hive is not built. */

#include <ctype.h>

#include "harness.h"
#include "keeper/hfmini.h"
#include "keeper/ktest.h"

static const char *stories(void) {
        return harness_shared("models/stories260K.gguf");
}

/* rbee with --hive URL in front. */
static int rb(struct kt_proc *p, const struct kt_hive *h, const char *const *args, const char *const *env) {
        const char *argv[40];
        size_t n = 0;

        argv[n++] = "--hive";
        argv[n++] = h->url;
        for (size_t i = 0; args[i] && n < 39; i++)
                argv[n++] = args[i];
        argv[n] = NULL;
        return kt_run(p, argv, env);
}

static void rb_spawn(struct kt_proc *p, const struct kt_hive *h, unsigned flags, const char *const *args) {
        const char *argv[40];
        size_t n = 0;

        argv[n++] = "--hive";
        argv[n++] = h->url;
        for (size_t i = 0; args[i] && n < 39; i++)
                argv[n++] = args[i];
        argv[n] = NULL;
        kt_spawn(p, flags, 100, argv, NULL);
}

/* Pump until stdout has something; returns when it arrived (ms). */
static double wait_first_output(struct kt_proc *p, int timeout_ms) {
        double deadline = kt_now_ms() + timeout_ms;

        while (p->out.len == 0) {
                if (kt_now_ms() > deadline || !kt_pump(p, 20)) {
                        if (p->out.len > 0)
                                break;
                        FAIL("no output from rbee; stderr: %s", kt_buf_str(&p->err));
                }
        }
        return kt_now_ms();
}

static struct json_object *hive_get(const struct kt_hive *h, const char *path, int want_status) {
        struct kt_http r;
        struct json_object *o;

        if (!kt_http_call(h->port, "GET", path, NULL, 10000, &r))
                FAIL("GET %s: no answer", path);
        if (r.status != want_status)
                FAIL("GET %s: HTTP %d, expected %d: %s", path, r.status, want_status, kt_buf_str(&r.body));
        o = r.json ? json_object_get(r.json) : NULL;
        kt_http_done(&r);
        return o;
}

static char *job_id_in(const char *text) {
        /* rbee names its inference jobs (job_id "rbee-..."), and the hive keeps that name. */
        const char *s = strstr(text, "job rbee-");
        size_t n = 0;

        if (!s)
                FAIL("no job id in: %s", text);
        s += 4;
        while (s[n] && (isalnum((unsigned char) s[n]) || s[n] == '-'))
                n++;
        return strndup(s, n);
}

TEST(infer_streams) {
        struct kt_hive h;
        struct kt_proc p, q;
        struct json_object *o;
        double first, end;
        int rc;

        kt_hive_start(&h, NULL);
        rc = rb(&p, &h, KT_ARGS("model", "register", "stories", "--path", stories()), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.err.data, "Registered stories: llama F32");
        kt_proc_done(&p);

        /* Piped: the text alone on stdout; the worker's start on stderr, line by line. */
        rc = rb(&p, &h, KT_ARGS("infer", "-m", "stories", "-p", "Once upon a time", "-n", "40", "-s", "7", "-t", "0.8"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_GE(p.out.len, 20);
        ASSERT_CONTAINS(p.err.data, "Starting a worker for stories");
        ASSERT_TRUE(strchr(p.out.data, '\033') == NULL);

        /* The same request with --json: one document, the same text. */
        rc = rb(&q, &h, KT_ARGS("--json", "infer", "-m", "stories", "-p", "Once upon a time", "-n", "40", "-s", "7", "-t", "0.8"),
                NULL);
        KT_ASSERT_EXIT(&q, rc, 0);
        o = kt_json(q.out.data);
        ASSERT_STREQ(kt_jstr(o, "text"), p.out.data);
        ASSERT_EQ(json_object_get_int(kt_jget(o, "tokens_out")), 40);
        ASSERT_EQ(json_object_get_int(kt_jget(o, "tokens_received")), 40);
        ASSERT_STREQ(kt_jstr(o, "stop_reason"), "length");
        ASSERT_TRUE(str_startswith(kt_jstr(o, "job_id"), "rbee-"));
        ASSERT_FALSE(json_object_get_boolean(kt_jget(o, "cancelled")));
        json_object_put(o);
        kt_proc_done(&p);
        kt_proc_done(&q);

        /* Streaming: with a slower model the first text is out long before the end. */
        kt_hive_register(&h, "slow", kt_slow_model());
        rb_spawn(&p, &h, 0, KT_ARGS("infer", "-m", "slow", "-p", "Hello", "-n", "1000", "-s", "1", "-t", "1"));
        first = wait_first_output(&p, 20000);
        rc = kt_finish(&p, 30000);
        end = kt_now_ms();
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_GE(end - first, 300);
        kt_proc_done(&p);
        kt_hive_stop(&h);
}

TEST(sigint_cancels_the_job) {
        struct kt_hive h;
        struct kt_proc p;
        struct json_object *o;
        char *job;
        int rc, active = -1;

        kt_hive_start(&h, NULL);
        kt_hive_register(&h, "slow", kt_slow_model());
        rb_spawn(&p, &h, 0, KT_ARGS("infer", "-m", "slow", "-p", "Hello", "-n", "3000", "-s", "1", "-t", "1"));
        wait_first_output(&p, 20000);
        kill(p.pid, SIGINT);
        rc = kt_finish(&p, 10000);
        KT_ASSERT_EXIT(&p, rc, 130);
        ASSERT_CONTAINS(p.err.data, "cancelled on the hive after");
        job = job_id_in(p.err.data);

        /* The hive says so, and the worker has no request left. */
        char *path = kt_printf("/v1/jobs/%s", job);
        o = hive_get(&h, path, 200);
        ASSERT_STREQ(kt_jstr(o, "state"), "cancelled");
        json_object_put(o);
        for (int i = 0; i < 40 && active != 0; i++) {
                o = hive_get(&h, "/v1/workers/slow", 200);
                active = json_object_get_int(kt_jget(o, "active_requests"));
                json_object_put(o);
                if (active != 0)
                        usleep(50000);
        }
        ASSERT_EQ(active, 0);
        kt_proc_done(&p);

        /* Free right after: the next request is served at once. */
        double t0 = kt_now_ms();
        rc = rb(&p, &h, KT_ARGS("infer", "-m", "slow", "-p", "Hi", "-n", "5"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_LE(kt_now_ms() - t0, 5000);
        kt_proc_done(&p);

        /* --json after Ctrl+C: a document that says it was cancelled. */
        rb_spawn(&p, &h, 0, KT_ARGS("--json", "infer", "-m", "slow", "-p", "Hello", "-n", "3000", "-s", "1", "-t", "1"));
        {
                /* No text on stdout with --json: wait until the worker serves it. */
                double deadline = kt_now_ms() + 20000;
                for (active = 0; active == 0 && kt_now_ms() < deadline;) {
                        usleep(50000);
                        o = hive_get(&h, "/v1/workers/slow", 200);
                        active = json_object_get_int(kt_jget(o, "active_requests"));
                        json_object_put(o);
                }
                ASSERT_EQ(active, 1);
                usleep(200000);
        }
        kill(p.pid, SIGINT);
        rc = kt_finish(&p, 10000);
        KT_ASSERT_EXIT(&p, rc, 130);
        o = kt_json(p.out.data);
        ASSERT_TRUE(json_object_get_boolean(kt_jget(o, "cancelled")));
        ASSERT_TRUE(str_startswith(kt_jstr(o, "job_id"), "rbee-"));
        json_object_put(o);
        kt_proc_done(&p);
        free(path);
        free(job);
        kt_hive_stop(&h);
}

TEST(download_with_progress) {
        struct kt_hf hf;
        struct kt_hive h;
        struct kt_proc p;
        struct json_object *o;
        char *endpoint;
        int rc;

        kt_hf_start(&hf, stories());
        endpoint = kt_printf("--hf-endpoint=%s", hf.url);
        kt_hive_start(&h, KT_ARGS(endpoint));

        /* On a terminal: a bar redrawn in place, with percent, sizes, speed and ETA. */
        rb_spawn(&p, &h, KT_PTY_ERR, KT_ARGS("model", "download", "hf:test/tiny-GGUF"));
        rc = kt_finish(&p, 30000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.pty.data, "tiny-Q8_0.gguf");
        ASSERT_CONTAINS(p.pty.data, "\r\033[K");
        ASSERT_CONTAINS(p.pty.data, "100% [");
        ASSERT_CONTAINS(p.pty.data, "/1.2 MB");
        ASSERT_CONTAINS(p.pty.data, "/s");
        ASSERT_CONTAINS(p.pty.data, "ETA");
        ASSERT_CONTAINS(p.pty.data, "tiny");
        ASSERT_CONTAINS(p.pty.data, "is ready");
        kt_proc_done(&p);

        rc = rb(&p, &h, KT_ARGS("--json", "model", "get", "tiny"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        o = kt_json(p.out.data);
        ASSERT_STREQ(kt_jstr(o, "sha256"), hf.sha);
        ASSERT_EQ(json_object_get_int64(kt_jget(o, "size")), (int64_t) hf.size);
        ASSERT_TRUE(json_object_get_boolean(kt_jget(o, "managed")));
        json_object_put(o);
        kt_proc_done(&p);

        /* Piped: a plain line per quarter, and the model as JSON at the end. */
        rc = rb(&p, &h, KT_ARGS("--json", "model", "download", "hf:test/tiny-GGUF", "--id", "tiny2"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.err.data, "tiny-Q8_0.gguf: 0%");
        ASSERT_CONTAINS(p.err.data, "tiny-Q8_0.gguf: 100% (1.2 MB of 1.2 MB)");
        ASSERT_TRUE(strchr(p.err.data, '\r') == NULL);
        o = kt_json(p.out.data);
        ASSERT_STREQ(kt_jstr(o, "id"), "tiny2");
        json_object_put(o);
        kt_proc_done(&p);

        /* The same id again is refused with its own message. */
        rc = rb(&p, &h, KT_ARGS("model", "download", "hf:test/tiny-GGUF"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "a model 'tiny' is already in the catalog");
        ASSERT_CONTAINS(p.err.data, "pick another id with --id");
        kt_proc_done(&p);
        kt_hive_stop(&h);
        kt_hf_stop(&hf);
        free(endpoint);
}

TEST(download_interrupted_cancels) {
        struct kt_hf hf;
        struct kt_hive h;
        struct kt_proc p;
        char *endpoint;
        int rc;

        kt_hf_start(&hf, stories());
        endpoint = kt_printf("--hf-endpoint=%s", hf.url);
        kt_hive_start(&h, KT_ARGS(endpoint));
        /* Without a terminal to ask on, Ctrl+C cancels the download. */
        rb_spawn(&p, &h, 0, KT_ARGS("model", "download", "hf:test/tiny-GGUF"));
        if (!kt_wait_for(&p, &p.err, "tiny-Q8_0.gguf: 0%", 20000))
                FAIL("no progress: %s", kt_buf_str(&p.err));
        kill(p.pid, SIGINT);
        rc = kt_finish(&p, 10000);
        KT_ASSERT_EXIT(&p, rc, 130);
        ASSERT_CONTAINS(p.err.data, "cancelled on the hive; no file or catalog entry is left");
        ASSERT_TRUE(strstr(p.err.data, "100%") == NULL);
        kt_proc_done(&p);

        /* Nothing in the catalog. */
        json_object_put(hive_get(&h, "/v1/models/tiny", 404));
        rc = rb(&p, &h, KT_ARGS("model", "get", "tiny"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        kt_proc_done(&p);

        /* --detach: the job id on stdout at once, the download goes on. */
        rc = rb(&p, &h, KT_ARGS("model", "download", "--detach", "hf:test/tiny-GGUF"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_TRUE(str_startswith(p.out.data, "j-"));
        kt_proc_done(&p);
        kt_hive_stop(&h);
        kt_hf_stop(&hf);
        free(endpoint);
}

/* On a terminal, Ctrl+C asks; "y" leaves the download running on the hive. */
TEST(download_to_background) {
        struct kt_hf hf;
        struct kt_hive h;
        struct kt_proc p;
        struct kt_http r;
        char *endpoint;
        int rc, status = 0;

        kt_hf_start(&hf, stories());
        endpoint = kt_printf("--hf-endpoint=%s", hf.url);
        kt_hive_start(&h, KT_ARGS(endpoint));
        rb_spawn(&p, &h, KT_PTY_IN | KT_PTY_ERR, KT_ARGS("model", "download", "hf:test/tiny-GGUF"));
        if (!kt_wait_for(&p, &p.pty, "tiny-Q8_0.gguf", 20000))
                FAIL("no progress: %s", kt_buf_str(&p.pty));
        kill(p.pid, SIGINT);
        if (!kt_wait_for(&p, &p.pty, "Keep it running in the background? [y/N]", 5000))
                FAIL("no question: %s", kt_buf_str(&p.pty));
        kt_type(&p, "y\n");
        rc = kt_finish(&p, 10000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.pty.data, "goes on in the background");
        kt_proc_done(&p);

        /* It arrives without rbee watching. */
        for (int i = 0; i < 100 && status != 200; i++) {
                usleep(100000);
                if (kt_http_call(h.port, "GET", "/v1/models/tiny", NULL, 5000, &r))
                        status = r.status;
                kt_http_done(&r);
        }
        ASSERT_EQ(status, 200);
        kt_hive_stop(&h);
        kt_hf_stop(&hf);
        free(endpoint);
}

TEST(hive_error_paths) {
        struct kt_hf hf;
        struct kt_hive h;
        struct kt_proc p;
        char *endpoint, *junk = kt_printf("%s/junk.gguf", harness_tmpdir());
        FILE *f;
        int rc;

        kt_hf_start(&hf, stories());
        endpoint = kt_printf("--hf-endpoint=%s", hf.url);
        kt_hive_start(&h, KT_ARGS(endpoint));
        kt_hive_register(&h, "stories", stories());

        /* Unknown model. */
        rc = rb(&p, &h, KT_ARGS("infer", "-m", "nope", "-p", "hi"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "nope");
        ASSERT_CONTAINS(p.err.data, "'rbee model list' shows the models on this hive");
        kt_proc_done(&p);

        /* Bad reference. */
        rc = rb(&p, &h, KT_ARGS("model", "download", "huggingface.co/x"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "bad model reference 'huggingface.co/x'");
        ASSERT_CONTAINS(p.err.data, "hf:ORG/REPO:QUANT");
        kt_proc_done(&p);

        /* A repository the hub does not have. */
        rc = rb(&p, &h, KT_ARGS("model", "download", "hf:test/missing-GGUF"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "downloading hf:test/missing-GGUF failed");
        ASSERT_CONTAINS(p.err.data, "(upstream_not_found)");
        ASSERT_CONTAINS(p.err.data, "check the repository");
        kt_proc_done(&p);

        /* Registering twice, and a file that is not a model. */
        rc = rb(&p, &h, KT_ARGS("model", "register", "stories", "--path", stories()), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "rbee model remove stories");
        kt_proc_done(&p);
        f = fopen(junk, "we");
        fputs("this is not a GGUF file\n", f);
        fclose(f);
        rc = rb(&p, &h, KT_ARGS("model", "register", "junk", "--path", junk), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "GGUF");
        kt_proc_done(&p);

        /* No worker to stop; no model to remove. */
        rc = rb(&p, &h, KT_ARGS("worker", "stop", "stories"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "'rbee worker list' shows the running workers");
        kt_proc_done(&p);
        rc = rb(&p, &h, KT_ARGS("model", "remove", "nope"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        kt_proc_done(&p);

        /* A hive that went away: not reachable, with the hint. */
        kt_hive_stop(&h);
        rc = rb(&p, &h, KT_ARGS("ps"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "is not reachable");
        kt_proc_done(&p);
        kt_hf_stop(&hf);
        free(endpoint);
        free(junk);
}

TEST(json_everywhere) {
        static const char *const keys[] = { "data", "workers", "hives", "status", "backends", "id" };
        struct kt_hive h;
        struct kt_proc p;
        struct json_object *o;
        int rc;

        kt_hive_start(&h, NULL);
        kt_hive_register(&h, "stories", stories());
        rc = rb(&p, &h, KT_ARGS("-q", "infer", "-m", "stories", "-p", "Hi", "-n", "3"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        kt_proc_done(&p);

        const char *const *cmds[] = {
                KT_ARGS("--json", "model", "list"), KT_ARGS("--json", "worker", "list"), KT_ARGS("--json", "ps"),
                KT_ARGS("--json", "hive", "status"), KT_ARGS("--json", "hive", "backends"),
                KT_ARGS("--json", "model", "get", "stories"),
        };
        for (size_t i = 0; i < ELEMENTSOF(cmds); i++) {
                rc = rb(&p, &h, cmds[i], NULL);
                KT_ASSERT_EXIT(&p, rc, 0);
                o = kt_json(p.out.data);
                if (!kt_jget(o, keys[i]))
                        FAIL("%s %s: no \"%s\" in %s", cmds[i][1], cmds[i][2], keys[i], p.out.data);
                json_object_put(o);
                kt_proc_done(&p);
        }

        /* ps shows the loaded model: where it runs and until when. */
        rc = rb(&p, &h, KT_ARGS("ps"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.out.data, "MODEL");
        ASSERT_CONTAINS(p.out.data, "stories");
        ASSERT_CONTAINS(p.out.data, "100% CPU");
        ASSERT_CONTAINS(p.out.data, "from now");
        kt_proc_done(&p);

        /* NO_COLOR against the real hive, on a terminal. */
        kt_spawn(&p, KT_PTY_OUT | KT_PTY_ERR, 100, KT_ARGS("--hive", h.url, "worker", "list"), KT_ARGS("NO_COLOR=1"));
        rc = kt_finish(&p, 10000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.pty.data, "ready");
        ASSERT_TRUE(strchr(p.pty.data, '\033') == NULL);
        kt_proc_done(&p);
        kt_spawn(&p, KT_PTY_OUT | KT_PTY_ERR, 100, KT_ARGS("--hive", h.url, "worker", "list"), NULL);
        rc = kt_finish(&p, 10000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.pty.data, "\033[32mready");
        kt_proc_done(&p);
        kt_hive_stop(&h);
}

TEST(workers_and_models) {
        struct kt_hive h;
        struct kt_proc p;
        int rc;

        kt_hive_start(&h, NULL);
        kt_hive_register(&h, "stories", stories());
        rc = rb(&p, &h, KT_ARGS("worker", "spawn", "--model", "stories", "--keep-alive", "10m"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.err.data, "The worker for stories is ready");
        kt_proc_done(&p);

        rc = rb(&p, &h, KT_ARGS("worker", "list"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.out.data, "rbee-worker@stories.service");
        ASSERT_CONTAINS(p.out.data, "ready");
        kt_proc_done(&p);

        rc = rb(&p, &h, KT_ARGS("worker", "logs", "stories", "-n", "5"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.out.data, "stories");
        kt_proc_done(&p);

        /* logs -f follows until Ctrl+C. */
        rb_spawn(&p, &h, 0, KT_ARGS("worker", "logs", "-f", "stories"));
        if (!kt_wait_for(&p, &p.out, "stories", 10000))
                FAIL("no log: %s", kt_buf_str(&p.err));
        kill(p.pid, SIGINT);
        rc = kt_finish(&p, 5000);
        KT_ASSERT_EXIT(&p, rc, 0);
        kt_proc_done(&p);

        rc = rb(&p, &h, KT_ARGS("worker", "stop", "stories"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        kt_proc_done(&p);
        rc = rb(&p, &h, KT_ARGS("worker", "cleanup"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        kt_proc_done(&p);

        rc = rb(&p, &h, KT_ARGS("model", "remove", "stories"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.err.data, "Removed stories (the file stays)");
        kt_proc_done(&p);
        rc = rb(&p, &h, KT_ARGS("model", "list"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.err.data, "No models on");
        kt_proc_done(&p);
        kt_hive_stop(&h);
}

static const char *tinystories(void) {
        return harness_shared("models/TinyStories-656K-Q8_0.gguf");
}

TEST(chat_keeps_history) {
        struct kt_hive h;
        struct kt_proc p;
        struct json_object *o, *m;
        int rc;

        kt_hive_start(&h, NULL);
        kt_hive_register(&h, "ts", tinystories());
        rb_spawn(&p, &h, KT_STDIN_PIPE, KT_ARGS("--json", "chat", "-m", "ts", "-n", "8", "--system", "Be brief."));
        kt_write_stdin(&p, "Hello\n/clear\nTell me a story\nAnd then?\n");
        kt_close_stdin(&p);
        rc = kt_finish(&p, 30000);
        KT_ASSERT_EXIT(&p, rc, 0);
        o = kt_json(p.out.data);
        m = kt_jget(o, "messages");
        /* system, then (after /clear) two questions and two answers. */
        ASSERT_EQ(json_object_array_length(m), 5);
        ASSERT_STREQ(kt_jstr(json_object_array_get_idx(m, 0), "role"), "system");
        ASSERT_STREQ(kt_jstr(json_object_array_get_idx(m, 1), "content"), "Tell me a story");
        ASSERT_STREQ(kt_jstr(json_object_array_get_idx(m, 2), "role"), "assistant");
        ASSERT_STREQ(kt_jstr(json_object_array_get_idx(m, 3), "content"), "And then?");
        ASSERT_STREQ(kt_jstr(json_object_array_get_idx(m, 4), "role"), "assistant");
        json_object_put(o);
        kt_proc_done(&p);

        /* Plain: the answers on stdout, one after another. */
        rb_spawn(&p, &h, KT_STDIN_PIPE, KT_ARGS("chat", "-m", "ts", "-n", "8"));
        kt_write_stdin(&p, "Hello\nAgain\n");
        kt_close_stdin(&p);
        rc = kt_finish(&p, 30000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_GE(p.out.len, 4);
        kt_proc_done(&p);
        kt_hive_stop(&h);
}

/* Interactive: Ctrl+C cancels the answer, not the chat. */
TEST(chat_interactive_cancel) {
        struct kt_hive h;
        struct kt_proc p;
        int rc;

        kt_hive_start(&h, NULL);
        kt_hive_register(&h, "slow", kt_slow_model());
        rb_spawn(&p, &h, KT_PTY_IN | KT_PTY_OUT | KT_PTY_ERR, KT_ARGS("chat", "-m", "slow", "-n", "3000", "-s", "1", "-t", "1"));
        if (!kt_wait_for(&p, &p.pty, ">>> ", 10000))
                FAIL("no prompt: %s", kt_buf_str(&p.pty));
        kt_type(&p, "Hello\n");
        if (!kt_wait_for(&p, &p.pty, "Hello\n", 10000))
                FAIL("no echo: %s", kt_buf_str(&p.pty));
        usleep(300000);
        kill(p.pid, SIGINT);
        if (!kt_wait_for(&p, &p.pty, "cancelled on the hive", 10000))
                FAIL("no cancel: %s", kt_buf_str(&p.pty));
        kt_type(&p, "/bye\n");
        rc = kt_finish(&p, 10000);
        KT_ASSERT_EXIT(&p, rc, 0);
        kt_proc_done(&p);
        kt_hive_stop(&h);
}

/* A conversation that outgrows the context loses its oldest exchanges, not the chat. */
TEST(chat_trims_to_the_context) {
        struct kt_hive h;
        struct kt_proc p;
        struct json_object *o, *m;
        size_t n;
        int rc;

        kt_hive_start(&h, NULL);
        kt_hive_register(&h, "stories", stories());     /* a 128-token context */
        rb_spawn(&p, &h, KT_STDIN_PIPE, KT_ARGS("--json", "chat", "-m", "stories", "-n", "8"));
        kt_write_stdin(&p, "Hello there, little model\nTell me a story about a cat\nAnd then what happened?\n"
                           "Go on, please\n");
        kt_close_stdin(&p);
        rc = kt_finish(&p, 30000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.err.data, "forgetting its oldest exchange");
        o = kt_json(p.out.data);
        m = kt_jget(o, "messages");
        n = json_object_array_length(m);
        ASSERT_GE(n, 2);
        ASSERT_STREQ(kt_jstr(json_object_array_get_idx(m, n - 2), "content"), "Go on, please");
        json_object_put(o);
        kt_proc_done(&p);
        kt_hive_stop(&h);
}
