/* SPDX-License-Identifier: MIT */
/* rbee-hive downloads against a local HuggingFace-like server: listing and
 * quant selection, redirects, sha256 verification, resume with Range after a
 * connection reset and after a stall, and each failure (404, 401, 403,
 * checksum mismatch, unknown quant) with its own error, no partial file left
 * behind and no catalog row. */

#include <dirent.h>

#include "harness.h"
#include "hive/hfserver.h"
#include "hive/htest.h"

struct dl_result {
        char terminal[64];
        char data[4096];
        unsigned progress, retries;
        bool verifying;
};

/* POST a download and follow its events to the end. */
static void download(struct ht_hive *h, const char *body, int want_status, struct dl_result *ret) {
        struct wt_response r;
        struct wt_http s;
        const char *ev, *data;

        memset(ret, 0, sizeof(*ret));
        ht_call(h, "POST", "/v1/models/download", body, &r);
        if (r.status != want_status) {
                ht_dump_log(h);
                FAIL("download %s: HTTP %d: %s", body, r.status, r.body);
        }
        if (want_status != 202) {
                snprintf(ret->data, sizeof(ret->data), "%s", r.body);
                wt_response_done(&r);
                return;
        }
        int fd = wt_connect(&h->conn);
        wt_send_request(fd, "GET", wt_jstr(r.json, "events_url"), NULL, NULL, 0);
        wt_response_done(&r);
        if (wt_http_begin(&s, fd, 20000) < 0 || s.status != 200)
                FAIL("events: no stream");
        while (wt_sse_next(&s, &ev, &data)) {
                if (streq(ev, "progress"))
                        ret->progress++;
                else if (streq(ev, "retry"))
                        ret->retries++;
                else if (streq(ev, "verifying"))
                        ret->verifying = true;
                else if (streq(ev, "end") || streq(ev, "error")) {
                        snprintf(ret->terminal, sizeof(ret->terminal), "%s", ev);
                        snprintf(ret->data, sizeof(ret->data), "%s", data);
                }
        }
        wt_http_done(&s);
        if (!ret->terminal[0])
                FAIL("the job ended without a terminal event");
}

static void start_pair(struct ht_hive *h, struct hf_server *hf_srv, const char *const *env) {
        char *ep;
        const char *args[8];

        hf_start(hf_srv, ht_model());
        ep = wt_strdup_printf("--hf-endpoint=http://127.0.0.1:%d", hf_srv->port);
        args[0] = "--stop-workers-on-exit";
        args[1] = ep;
        args[2] = "--download-backoff=50ms";
        args[3] = "--download-stall=1s";
        args[4] = "--download-retries=3";
        args[5] = NULL;
        ht_start(h, NULL, args, env);
}

/* A ranged request for path that resumed somewhere inside the file. */
static bool log_has_resume(const struct hf_server *s, const char *path) {
        char *l = harness_read_file(s->log, NULL);
        char *needle = wt_strdup_printf("GET %s range=", path);
        bool r = false;

        for (const char *p = strstr(l, needle); p && !r; p = strstr(p + 1, needle)) {
                unsigned long long from = strtoull(p + strlen(needle), NULL, 10);
                r = from > 0 && from < s->size;
        }
        free(needle);
        free(l);
        return r;
}

static bool log_has(const struct hf_server *s, const char *needle) {
        char *l = harness_read_file(s->log, NULL);
        bool r = strstr(l, needle) != NULL;
        free(l);
        return r;
}

TEST_TIMEOUT(download_by_quant_verifies_and_registers, 30) {
        struct ht_hive h;
        struct hf_server srv;
        struct dl_result d;
        struct wt_response r;

        start_pair(&h, &srv, NULL);
        download(&h, "{\"source\":\"hf:t/multi:Q8_0\"}", 202, &d);
        ASSERT_STREQ(d.terminal, "end");
        ASSERT_GE(d.progress, 1);
        ASSERT_TRUE(d.verifying);
        ASSERT_CONTAINS(d.data, "\"id\":\"multi:q8_0\"");
        ASSERT_CONTAINS(d.data, srv.sha);
        ASSERT_TRUE(log_has(&srv, "GET /t/multi/resolve/main/model-Q8_0.gguf"));
        ASSERT_TRUE(log_has(&srv, "GET /cdn/multi/model-Q8_0.gguf"));
        ht_call(&h, "GET", "/v1/models/multi:q8_0", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "sha256"), srv.sha);
        ASSERT_STREQ(wt_jstr(r.json, "source"), "hf:t/multi:model-Q8_0.gguf");
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "managed")));
        ASSERT_EQ(wt_jint(r.json, "size"), (long long) srv.size);
        wt_response_done(&r);
        ASSERT_EQ(ht_count_model_files(h.state, ".gguf"), 1);
        ASSERT_EQ(ht_count_model_files(h.state, ".partial"), 0);

        /* It serves: the downloaded model runs. */
        ht_call(&h, "POST", "/v1/inference", "{\"model\":\"multi:q8_0\",\"prompt\":\"hi\",\"max_tokens\":2,\"stream\":false}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);

        /* Again: the id is taken. Ambiguous and unknown quants have their own errors. */
        download(&h, "{\"source\":\"hf:t/multi:Q8_0\"}", 409, &d);
        ASSERT_CONTAINS(d.data, "model_exists");
        download(&h, "{\"source\":\"hf:t/multi\"}", 202, &d);
        ASSERT_STREQ(d.terminal, "error");
        ASSERT_CONTAINS(d.data, "ambiguous_file");
        download(&h, "{\"source\":\"hf:t/multi:Q2_K\"}", 202, &d);
        ASSERT_CONTAINS(d.data, "quant_not_found");
        download(&h, "{\"source\":\"nonsense\"}", 400, &d);
        ASSERT_CONTAINS(d.data, "invalid_reference");
        download(&h, "{\"source\":\"hf:t/../etc\"}", 400, &d);

        /* Removing a managed model deletes its file, after stopping its worker. */
        ht_call(&h, "DELETE", "/v1/models/multi:q8_0", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "file_removed")));
        wt_response_done(&r);
        ASSERT_EQ(ht_count_model_files(h.state, ".gguf"), 0);
        ASSERT_TRUE(ht_wait_worker(&h, "multi:q8_0", "", 3000));
        ht_stop(&h);
        hf_stop(&srv);
}

TEST_TIMEOUT(download_resumes_after_reset_and_stall, 40) {
        struct ht_hive h;
        struct hf_server srv;
        struct dl_result d;

        start_pair(&h, &srv, NULL);
        download(&h, "{\"source\":\"hf:t/reset\",\"id\":\"r1\"}", 202, &d);
        if (!streq(d.terminal, "end")) {
                ht_dump_log(&h);
                FAIL("reset: %s", d.data);
        }
        ASSERT_GE(d.retries, 1);
        /* The retry asked for the rest only. */
        ASSERT_TRUE(log_has_resume(&srv, "/cdn/reset/model-Q8_0.gguf"));
        ASSERT_TRUE(ht_in_catalog(&h, "r1"));

        download(&h, "{\"source\":\"hf:t/stall\",\"id\":\"s1\"}", 202, &d);
        if (!streq(d.terminal, "end")) {
                ht_dump_log(&h);
                FAIL("stall: %s", d.data);
        }
        ASSERT_GE(d.retries, 1);
        ASSERT_TRUE(log_has_resume(&srv, "/cdn/stall/model-Q8_0.gguf"));
        ASSERT_TRUE(ht_in_catalog(&h, "s1"));
        ASSERT_EQ(ht_count_model_files(h.state, ".gguf"), 2);
        ASSERT_EQ(ht_count_model_files(h.state, ".partial"), 0);
        ht_stop(&h);
        hf_stop(&srv);
}

TEST_TIMEOUT(download_failures_leave_nothing_behind, 30) {
        struct ht_hive h;
        struct hf_server srv;
        struct dl_result d;
        static const struct {
                const char *source, *code;
        } cases[] = {
                { "hf:t/missing", "upstream_not_found" },
                { "hf:t/private", "upstream_unauthorized" },
                { "hf:t/forbidden", "upstream_unauthorized" },
                { "hf:t/noauth", "upstream_unauthorized" },
                { "hf:t/badsum", "checksum_mismatch" },
                { "hf:t/good:missing.gguf", "quant_not_found" },
        };

        start_pair(&h, &srv, NULL);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *body = wt_strdup_printf("{\"source\":\"%s\",\"id\":\"m%zu\"}", cases[i].source, i);
                char *code = wt_strdup_printf("\"code\":\"%s\"", cases[i].code);
                download(&h, body, 202, &d);
                if (!streq(d.terminal, "error") || !strstr(d.data, code))
                        FAIL("%s: expected %s, got %s %s", cases[i].source, cases[i].code, d.terminal, d.data);
                char *id = wt_strdup_printf("m%zu", i);
                ASSERT_FALSE(ht_in_catalog(&h, id));
                free(id);
                free(body);
                free(code);
        }
        ASSERT_EQ(ht_count_model_files(h.state, ".gguf"), 0);
        ASSERT_EQ(ht_count_model_files(h.state, ".partial"), 0);
        ht_stop(&h);

        /* With HF_TOKEN the gated repo opens. */
        struct ht_hive h2;
        ht_start(&h2, NULL,
                 (const char *[]) { "--stop-workers-on-exit", wt_strdup_printf("--hf-endpoint=http://127.0.0.1:%d", srv.port), NULL },
                 (const char *[]) { "HF_TOKEN=secret-token", NULL });
        download(&h2, "{\"source\":\"hf:t/noauth\",\"id\":\"gated\"}", 202, &d);
        ASSERT_STREQ(d.terminal, "end");
        ASSERT_TRUE(ht_in_catalog(&h2, "gated"));
        ht_stop(&h2);
        hf_stop(&srv);
}

TEST_TIMEOUT(download_dedup_and_cancel, 30) {
        struct ht_hive h;
        struct hf_server srv;
        struct wt_response r1, r2, r;

        start_pair(&h, &srv, NULL);
        /* The stall repo keeps the first transfer busy: ask twice, get one job. */
        ht_call(&h, "POST", "/v1/models/download", "{\"source\":\"hf:t/stall\",\"id\":\"d1\"}", &r1);
        ht_call(&h, "POST", "/v1/jobs", "{\"type\":\"download\",\"source\":\"hf:t/stall\",\"id\":\"d1\"}", &r2);
        ASSERT_STATUS(r1, 202);
        ASSERT_STATUS(r2, 202);
        ASSERT_STREQ(wt_jstr(r1.json, "job_id"), wt_jstr(r2.json, "job_id"));
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r2.json, "existing")));
        char *del = wt_strdup_printf("/v1/jobs/%s", wt_jstr(r1.json, "job_id"));
        usleep(300000);
        ht_call(&h, "DELETE", del, NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        double deadline = wt_now_ms() + 5000;
        for (;;) {
                ht_call(&h, "GET", del, NULL, &r);
                bool done = streq(wt_jstr(r.json, "state"), "cancelled");
                wt_response_done(&r);
                if (done)
                        break;
                ASSERT_TRUE(wt_now_ms() < deadline);
                usleep(50000);
        }
        ASSERT_FALSE(ht_in_catalog(&h, "d1"));
        ASSERT_EQ(ht_count_model_files(h.state, ".partial"), 0);
        wt_response_done(&r1);
        wt_response_done(&r2);
        free(del);
        ht_stop(&h);
        hf_stop(&srv);
}
