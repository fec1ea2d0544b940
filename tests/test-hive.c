/* SPDX-License-Identifier: MIT */
/* rbee-hive: the catalog (unit level), then the real daemon in process mode
 * with the real rbee-workerd and a real model: on-demand start, routing
 * (native SSE and OpenAI), idle stop, kill -9 mid-stream, adoption across a
 * hive restart, admission control, jobs and cancellation, auth. */

#include <sqlite3.h>

#include "../hive/backends.h"
#include "../hive/catalog.h"
#include "harness.h"
#include "hive/htest.h"
#include "../hive/sha256.h"
#include "../hive/util.h"
#include "rbee-engine.h"

TEST(sha256_vectors) {
        struct hive_sha256 s;
        char out[65];

        hive_sha256_init(&s);
        hive_sha256_update(&s, "abc", 3);
        hive_sha256_hex(&s, out);
        ASSERT_STREQ(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        hive_sha256_init(&s);
        hive_sha256_hex(&s, out);
        ASSERT_STREQ(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        /* 56 bytes: the padding spills into a second block. */
        const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        hive_sha256_init(&s);
        for (size_t i = 0; i < strlen(m); i++)
                hive_sha256_update(&s, m + i, 1);
        hive_sha256_hex(&s, out);
        ASSERT_STREQ(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(unit_names_and_ids) {
        char *s = NULL, *u = NULL;

        ASSERT_OK(hive_unit_name("tinyllama:q4_k_m", &s));
        ASSERT_STREQ(s, "rbee-worker@tinyllama:q4_k_m.service");
        free(s);
        ASSERT_OK(hive_unit_escape("a-b.c", &s));
        ASSERT_STREQ(s, "a\\x2db.c");
        ASSERT_OK(hive_unit_unescape(s, &u));
        ASSERT_STREQ(u, "a-b.c");
        free(s);
        free(u);
        ASSERT_ERR(hive_unit_unescape("bad\\x", &u), -EINVAL);
        ASSERT_TRUE(hive_id_is_valid("stories260k"));
        ASSERT_FALSE(hive_id_is_valid("../etc"));
        ASSERT_FALSE(hive_id_is_valid(".hidden"));
        ASSERT_FALSE(hive_id_is_valid("a/b"));
        ASSERT_FALSE(hive_id_is_valid(""));
        int64_t k;
        ASSERT_OK(hive_keep_alive_from_string("5m", &k));
        ASSERT_EQ(k, 300);
        ASSERT_OK(hive_keep_alive_from_string("-1", &k));
        ASSERT_EQ(k, -1);
        ASSERT_ERR(hive_keep_alive_from_string("soon", &k), -EINVAL);
        /* A NUL inside a JSON string does not end it early. */
        struct json_object *v = json_object_new_string_len("5m\0junk", 7);
        ASSERT_ERR(hive_keep_alive_from_json(v, &k), -EINVAL);
        json_object_put(v);
        v = json_object_new_string("5m");
        ASSERT_OK(hive_keep_alive_from_json(v, &k));
        ASSERT_EQ(k, 300);
        json_object_put(v);
}

TEST(catalog_crud_and_inspect) {
        char *db = wt_strdup_printf("%s/catalog.db", harness_tmpdir());
        struct hive_catalog *c = NULL;
        struct hive_model m = {}, *got = NULL, **list = NULL;
        char *recovered = NULL, err[512];
        size_t n;

        ASSERT_OK(hive_catalog_open(db, &c, &recovered, err, sizeof(err)));
        ASSERT_TRUE(recovered == NULL);
        ASSERT_OK(hive_model_inspect(ht_model(), &m, err, sizeof(err)));
        ASSERT_STREQ(m.architecture, "llama");
        ASSERT_STREQ(m.quantization, "F32");
        ASSERT_EQ(m.context_length, 128);
        ASSERT_GE(m.parameters, 200000);
        m.id = (char *) "stories";
        m.local_path = (char *) ht_model();
        m.source = (char *) "file:///x";
        ASSERT_OK(hive_catalog_add(c, &m));
        ASSERT_ERR(hive_catalog_add(c, &m), -EEXIST);
        ASSERT_OK(hive_catalog_get(c, "stories", &got));
        ASSERT_STREQ(got->architecture, "llama");
        ASSERT_EQ(got->size, m.size);
        hive_model_free(got);
        ASSERT_ERR(hive_catalog_get(c, "nope", &got), -ENOENT);
        ASSERT_OK(hive_catalog_list(c, &list, &n));
        ASSERT_EQ(n, 1);
        hive_model_listp(&list);
        hive_catalog_free(c);

        /* The worker's contract: models(id, local_path), readable while we hold it. */
        sqlite3 *s;
        sqlite3_stmt *st;
        ASSERT_EQ(sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ASSERT_EQ(sqlite3_prepare_v2(s, "SELECT local_path FROM models WHERE id = 'stories'", -1, &st, NULL), SQLITE_OK);
        ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
        ASSERT_STREQ((const char *) sqlite3_column_text(st, 0), ht_model());
        sqlite3_finalize(st);
        ASSERT_EQ(sqlite3_prepare_v2(s, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
        ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
        ASSERT_STREQ((const char *) sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
        sqlite3_close(s);

        ASSERT_OK(hive_catalog_open(db, &c, &recovered, err, sizeof(err)));
        ASSERT_OK(hive_catalog_remove(c, "stories"));
        ASSERT_ERR(hive_catalog_remove(c, "stories"), -ENOENT);
        hive_catalog_free(c);
        free(m.architecture);
        free(m.quantization);
        free(m.name);

        /* Not a GGUF. */
        struct hive_model bad = {};
        ASSERT_TRUE(hive_model_inspect(db, &bad, err, sizeof(err)) < 0);
        free(db);
}

TEST(catalog_corrupt_is_moved_aside) {
        char *db = wt_strdup_printf("%s/catalog.db", harness_tmpdir());
        struct hive_catalog *c = NULL;
        char *recovered = NULL, err[512];
        FILE *f = fopen(db, "we");

        ASSERT_NOT_NULL(f);
        for (int i = 0; i < 200; i++)
                fputs("this is not an SQLite database, just garbage\n", f);
        fclose(f);
        ASSERT_OK(hive_catalog_open(db, &c, &recovered, err, sizeof(err)));
        ASSERT_NOT_NULL(recovered);
        ASSERT_CONTAINS(recovered, "catalog.db.corrupt-");
        ASSERT_EQ(access(recovered, F_OK), 0);
        size_t n = 99;
        ASSERT_OK(hive_catalog_count(c, &n));
        ASSERT_EQ(n, 0);
        hive_catalog_free(c);
        free(recovered);

        /* A database from a newer hive is refused, not moved. */
        sqlite3 *s;
        ASSERT_EQ(sqlite3_open(db, &s), SQLITE_OK);
        ASSERT_EQ(sqlite3_exec(s, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(s);
        recovered = NULL;
        ASSERT_ERR(hive_catalog_open(db, &c, &recovered, err, sizeof(err)), -EPROTONOSUPPORT);
        ASSERT_CONTAINS(err, "newer");
        ASSERT_EQ(access(db, F_OK), 0);
        free(db);
}

TEST_TIMEOUT(daemon_models_api_and_corrupt_catalog, 30) {
        struct ht_hive h;
        struct wt_response r;
        char *p;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        ht_call(&h, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "status"), "ok");
        ASSERT_EQ(wt_jint(r.json, "api_version"), 1);
        ASSERT_STREQ(wt_jstr(r.json, "mode"), "process");
        wt_response_done(&r);

        ht_register(&h, "stories", ht_model());
        p = wt_strdup_printf("{\"id\":\"stories\",\"path\":\"%s\"}", ht_model());
        ht_call(&h, "POST", "/v1/models", p, &r);
        ASSERT_STATUS(r, 409);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "model_exists");
        wt_response_done(&r);
        free(p);
        ht_call(&h, "POST", "/v1/models", "{\"id\":\"junk\",\"path\":\"/etc/hostname\"}", &r);
        ASSERT_STATUS(r, 422);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "invalid_model");
        wt_response_done(&r);
        ht_call(&h, "POST", "/v1/models", "{\"id\":\"../x\",\"path\":\"/etc/hostname\"}", &r);
        ASSERT_STATUS(r, 400);
        wt_response_done(&r);
        ht_call(&h, "POST", "/v1/models", "{\"id\":", &r);
        ASSERT_STATUS(r, 400);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "invalid_request");
        wt_response_done(&r);

        ht_call(&h, "GET", "/v1/models", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "object"), "list");
        ASSERT_STREQ(wt_jstr(r.json, "data.0.id"), "stories");
        ASSERT_STREQ(wt_jstr(r.json, "data.0.architecture"), "llama");
        ASSERT_EQ(strlen(wt_jstr(r.json, "data.0.sha256")), 64);
        wt_response_done(&r);
        ht_call(&h, "GET", "/v1/models/nope", NULL, &r);
        ASSERT_STATUS(r, 404);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "model_not_found");
        wt_response_done(&r);
        ht_call(&h, "GET", "/v1/nothing", NULL, &r);
        ASSERT_STATUS(r, 404);
        wt_response_done(&r);
        ht_call(&h, "PUT", "/v1/models", NULL, &r);
        ASSERT_STATUS(r, 405);
        wt_response_done(&r);

        ht_call(&h, "GET", "/v1/backends", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "backends.0.name"), "cpu");
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "backends.0.available")));
        ASSERT_GE(wt_jint(r.json, "backends.0.devices.0.threads"), 1);
        ASSERT_GE(wt_jint(r.json, "backends.0.devices.0.memory_total"), 1 << 20);
        ASSERT_STREQ(wt_jstr(r.json, "backends.1.name"), "cuda");
        ASSERT_STREQ(wt_jstr(r.json, "backends.2.name"), "metal");
        ASSERT_FALSE(json_object_get_boolean(wt_jget(r.json, "backends.2.available")));
        bool cuda = json_object_get_boolean(wt_jget(r.json, "backends.1.available"));
        if (!cuda)
                ASSERT_NOT_NULL(wt_jstr(r.json, "backends.1.reason"));
        wt_response_done(&r);
        /* Never a silent fallback to the CPU. */
        ht_call(&h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"backend\":\"cuda\",\"stream\":false}", &r);
        ASSERT_STATUS(r, 400);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "backend_unavailable");
        wt_response_done(&r);

        ht_call(&h, "DELETE", "/v1/models/stories", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_FALSE(json_object_get_boolean(wt_jget(r.json, "file_removed")));
        wt_response_done(&r);
        ASSERT_EQ(access(ht_model(), R_OK), 0);
        ht_call(&h, "GET", "/metrics", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_CONTAINS(r.body, "rbee_hive_requests_total{status=\"4xx\"}");
        ASSERT_CONTAINS(r.body, "rbee_hive_models 0");
        wt_response_done(&r);
        ht_stop(&h);

        /* Corrupt the catalog under a stopped hive: the next one reports it. */
        p = wt_strdup_printf("%s/catalog.db", h.state);
        unlink(wt_strdup_printf("%s-wal", p));
        unlink(wt_strdup_printf("%s-shm", p));
        FILE *f = fopen(p, "we");
        ASSERT_NOT_NULL(f);
        for (int i = 0; i < 100; i++)
                fputs("garbage garbage garbage garbage garbage\n", f);
        fclose(f);
        struct ht_hive h2;
        ht_start(&h2, h.dir, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        ht_call(&h2, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "status"), "degraded");
        ASSERT_CONTAINS(wt_jstr(r.json, "catalog.recovered_from"), "catalog.db.corrupt-");
        wt_response_done(&r);
        ht_stop(&h2);
        free(p);
}

TEST_TIMEOUT(daemon_auth, 20) {
        struct ht_hive h;
        struct wt_response r;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL },
                 (const char *[]) { "RBEE_API_KEY=sekrit", NULL });
        ht_call(&h, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        ht_call(&h, "GET", "/v1/models", NULL, &r);
        ASSERT_STATUS(r, 401);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "unauthorized");
        ASSERT_CONTAINS(r.head, "WWW-Authenticate: Bearer");
        wt_response_done(&r);
        wt_call_raw(&h.conn, "GET", "/v1/models", "Authorization: Bearer sekrit\r\n", NULL, 0, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_call_raw(&h.conn, "GET", "/v1/models", "Authorization: Bearer wrong\r\n", NULL, 0, &r);
        ASSERT_STATUS(r, 401);
        wt_response_done(&r);
        ht_stop(&h);
}

TEST_TIMEOUT(on_demand_start_routing_and_idle_stop, 40) {
        struct ht_hive h;
        struct wt_response r;
        struct wt_http s;
        const char *ev, *data;
        bool saw_loading = false, saw_ready = false, saw_started = false;
        unsigned tokens = 0;
        char state[32];

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", "--keep-alive=1", NULL }, NULL);
        ht_register(&h, "stories", ht_model());
        ASSERT_EQ(ht_worker_pid(&h, "stories", NULL, 0), 0);

        wt_stream_open(&h.conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once upon a time\",\"max_tokens\":16,\"seed\":7}", &s);
        ASSERT_EQ(s.status, 200);
        ASSERT_CONTAINS(wt_header(&s, "Content-Type"), "text/event-stream");
        while (wt_sse_next(&s, &ev, &data)) {
                if (streq(ev, "loading"))
                        saw_loading = true;
                else if (streq(ev, "ready")) {
                        saw_ready = true;
                        ASSERT_FALSE(saw_started);
                } else if (streq(ev, "started"))
                        saw_started = true;
                else if (streq(ev, "token"))
                        tokens++;
                else if (streq(ev, "end")) {
                        ASSERT_CONTAINS(data, "\"tokens_out\":16");
                        ASSERT_CONTAINS(data, "\"job_id\":\"j-");
                        break;
                } else if (streq(ev, "error"))
                        FAIL("error event: %s", data);
        }
        wt_http_done(&s);
        ASSERT_TRUE(saw_loading && saw_ready && saw_started);
        ASSERT_EQ(tokens, 16);

        int pid = ht_worker_pid(&h, "stories", state, sizeof(state));
        ASSERT_GE(pid, 1);
        ASSERT_STREQ(state, "ready");
        ht_call(&h, "GET", "/v1/workers", NULL, &r);
        ASSERT_STREQ(wt_jstr(r.json, "workers.0.unit"), "rbee-worker@stories.service");
        ASSERT_STREQ(wt_jstr(r.json, "workers.0.mode"), "process");
        ASSERT_GE(wt_jint(r.json, "workers.0.memory_bytes"), 1);
        wt_response_done(&r);

        /* OpenAI, routed by "model": not streaming, then streaming. */
        ht_call(&h, "POST", "/v1/chat/completions",
                "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":4}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "object"), "chat.completion");
        ASSERT_EQ(wt_jint(r.json, "usage.completion_tokens"), 4);
        wt_response_done(&r);
        wt_stream_open(&h.conn, "/v1/completions", "{\"model\":\"stories\",\"prompt\":\"hi\",\"max_tokens\":3,\"stream\":true}", &s);
        ASSERT_EQ(s.status, 200);
        bool done = false;
        unsigned chunks = 0;
        while (wt_sse_next(&s, &ev, &data)) {
                if (streq(data, "[DONE]"))
                        done = true;
                else
                        chunks++;
        }
        wt_http_done(&s);
        ASSERT_TRUE(done);
        ASSERT_GE(chunks, 3);
        ht_call(&h, "POST", "/v1/chat/completions", "{\"model\":\"nope\",\"messages\":[]}", &r);
        ASSERT_STATUS(r, 404);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "model_not_found");
        wt_response_done(&r);
        /* Still the same worker: routing reuses it. */
        ASSERT_EQ(ht_worker_pid(&h, "stories", NULL, 0), pid);

        /* Idle for the keep-alive (1 s): stopped, reaped, socket gone. */
        if (!ht_wait_worker(&h, "stories", "", 6000)) {
                ht_dump_log(&h);
                FAIL("the idle worker was not stopped");
        }
        ASSERT_FALSE(pid_exists(pid));
        char *sock = wt_strdup_printf("%s/workers/stories.sock", h.runtime);
        ASSERT_TRUE(access(sock, F_OK) < 0);

        /* keep_alive per request: 0 unloads right after it. */
        ht_call(&h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"hi\",\"max_tokens\":2,\"stream\":false,\"keep_alive\":-1}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "tokens_out"), 2);
        wt_response_done(&r);
        usleep(2500000);
        ASSERT_GE(ht_worker_pid(&h, "stories", state, sizeof(state)), 1);
        ASSERT_STREQ(state, "ready");
        ht_call(&h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"hi\",\"max_tokens\":2,\"stream\":false,\"keep_alive\":0}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        ASSERT_TRUE(ht_wait_worker(&h, "stories", "", 3000));
        ht_stop(&h);
        free(sock);
}

TEST_TIMEOUT(kill9_mid_stream_gives_terminal_error_and_reaps, 40) {
        struct ht_hive h;
        struct wt_http s;
        struct wt_response r;
        const char *ev, *data;
        unsigned tokens = 0;
        char state[32], term[1024] = "";
        const char *last = NULL;
        int pid = 0;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", "--failed-linger=1s", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_TOKEN_DELAY_MS=40", NULL });
        ht_register(&h, "stories", ht_model());
        wt_stream_open(&h.conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":100}", &s);
        while (wt_sse_next(&s, &ev, &data)) {
                if (streq(ev, "token") && ++tokens == 5) {
                        pid = ht_worker_pid(&h, "stories", NULL, 0);
                        ASSERT_GE(pid, 1);
                        ASSERT_EQ(kill(pid, SIGKILL), 0);
                }
                if (streq(ev, "end") || streq(ev, "error")) {
                        last = streq(ev, "end") ? "end" : "error";
                        snprintf(term, sizeof(term), "%s", data);
                        break;
                }
        }
        ASSERT_FALSE(wt_sse_next(&s, &ev, &data));     /* one terminal event, then the end */
        wt_http_done(&s);
        ASSERT_STREQ(last, "error");
        ASSERT_CONTAINS(term, "\"code\":\"worker_died\"");
        struct json_object *t = json_tokener_parse(term);
        ASSERT_EQ(wt_jint(t, "tokens_out"), tokens);
        json_object_put(t);

        /* Reported as failed with the signal, then reaped: no zombie, no entry. */
        ASSERT_TRUE(ht_wait_worker(&h, "stories", "failed", 3000));
        ht_call(&h, "GET", "/v1/workers/stories", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "state"), "failed");
        ASSERT_CONTAINS(wt_jstr(r.json, "error"), "signal 9");
        wt_response_done(&r);
        double deadline = wt_now_ms() + 3000;
        while (pid_exists(pid) && wt_now_ms() < deadline)
                usleep(20000);
        ASSERT_FALSE(pid_exists(pid));
        ASSERT_TRUE(ht_wait_worker(&h, "stories", "", 5000));

        /* The next request starts a fresh worker. */
        ht_call(&h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"hi\",\"max_tokens\":2,\"stream\":false}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        int pid2 = ht_worker_pid(&h, "stories", state, sizeof(state));
        ASSERT_GE(pid2, 1);
        ASSERT_NE(pid2, pid);
        ht_call(&h, "GET", "/metrics", NULL, &r);
        ASSERT_CONTAINS(r.body, "rbee_hive_worker_failures_total 1");
        wt_response_done(&r);
        ht_stop(&h);
        ASSERT_FALSE(pid_alive(pid2));
}

TEST_TIMEOUT(hive_restart_adopts_running_workers, 40) {
        struct ht_hive h, h2;
        struct wt_response r;
        char state[32];
        int pid, pid2;

        ht_start(&h, NULL, NULL, NULL);
        ht_register(&h, "stories", ht_model());
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"stories\"}", &r);
        ASSERT_STATUS(r, 201);
        ASSERT_STREQ(wt_jstr(r.json, "state"), "ready");
        pid = (int) wt_jint(r.json, "pid");
        wt_response_done(&r);
        ht_stop(&h);
        ASSERT_TRUE(pid_alive(pid));            /* workers outlive the hive, as units do */

        ht_start(&h2, h.dir, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        ht_call(&h2, "GET", "/v1/workers/stories", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "pid"), pid);
        ASSERT_STREQ(wt_jstr(r.json, "state"), "ready");
        ASSERT_TRUE(json_object_get_boolean(wt_jget(r.json, "adopted")));
        wt_response_done(&r);
        ht_call(&h2, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"hi\",\"max_tokens\":3,\"stream\":false}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "tokens_out"), 3);
        wt_response_done(&r);
        pid2 = ht_worker_pid(&h2, "stories", state, sizeof(state));
        ASSERT_EQ(pid2, pid);

        /* Stopping an adopted worker works too (it is not our child). */
        ht_call(&h2, "DELETE", "/v1/workers/stories", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        double deadline = wt_now_ms() + 5000;
        while (pid_alive(pid) && wt_now_ms() < deadline)
                usleep(20000);
        ASSERT_FALSE(pid_alive(pid));
        ht_call(&h2, "DELETE", "/v1/workers/stories", NULL, &r);
        ASSERT_STATUS(r, 404);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "worker_not_found");
        wt_response_done(&r);
        ht_stop(&h2);
}

TEST_TIMEOUT(admission_control_and_cancel, 40) {
        struct ht_hive h;
        struct wt_http s1, s2;
        struct wt_response r;
        const char *ev, *data;
        char term[1024];
        unsigned tokens;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", "--worker-parallel=1", "--max-queue=1", NULL },
                 (const char *[]) { "RBEE_WORKER_TEST_TOKEN_DELAY_MS=30", NULL });
        ht_register(&h, "stories", ht_model());
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"stories\"}", &r);
        ASSERT_STATUS(r, 201);
        wt_response_done(&r);

        /* One running (one slot), one queued: the bound is 1 + 1. */
        wt_stream_open(&h.conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"a\",\"max_tokens\":30,\"ignore_eos\":true}", &s1);
        wt_stream_open(&h.conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"b\",\"max_tokens\":30,\"ignore_eos\":true}", &s2);
        ASSERT_EQ(s1.status, 200);
        ASSERT_EQ(s2.status, 200);
        /* Wait until both are attached. */
        double deadline = wt_now_ms() + 5000;
        for (;;) {
                ht_call(&h, "GET", "/v1/workers/stories", NULL, &r);
                long long active = wt_jint(r.json, "active_requests");
                wt_response_done(&r);
                if (active >= 2)
                        break;
                ASSERT_TRUE(wt_now_ms() < deadline);
                usleep(10000);
        }
        ht_call(&h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"c\",\"max_tokens\":3}", &r);
        ASSERT_STATUS(r, 503);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "overloaded");
        ASSERT_CONTAINS(r.head, "Retry-After:");
        wt_response_done(&r);
        ht_call(&h, "POST", "/v1/completions", "{\"model\":\"stories\",\"prompt\":\"c\",\"max_tokens\":3}", &r);
        ASSERT_STATUS(r, 503);
        wt_response_done(&r);

        /* Both admitted streams finish; nothing hangs. */
        ASSERT_STREQ(ht_sse_until_terminal(&s1, &tokens, term, sizeof(term)), "end");
        /* 30 tokens generated; a byte token that ends inside a UTF-8
         * character travels in the next token's event, so count from "end". */
        struct json_object *end = json_tokener_parse(term);
        ASSERT_NOT_NULL(end);
        ASSERT_EQ(wt_jint(end, "tokens_out"), 30);
        json_object_put(end);
        ASSERT_TRUE(tokens >= 1 && tokens <= 30);
        ASSERT_STREQ(ht_sse_until_terminal(&s2, &tokens, term, sizeof(term)), "end");
        wt_http_done(&s1);
        wt_http_done(&s2);

        /* A job: created, its events replayed, then cancelled. */
        ht_call(&h, "POST", "/v1/jobs", "{\"type\":\"infer\",\"model\":\"stories\",\"prompt\":\"a\",\"max_tokens\":100}", &r);
        ASSERT_STATUS(r, 202);
        char *id = strdup(wt_jstr(r.json, "job_id"));
        char *url = strdup(wt_jstr(r.json, "events_url"));
        wt_response_done(&r);
        int fd = wt_connect(&h.conn);
        wt_send_request(fd, "GET", url, NULL, NULL, 0);
        ASSERT_EQ(wt_http_begin(&s1, fd, 10000), 0);
        ASSERT_EQ(s1.status, 200);
        tokens = 0;
        while (wt_sse_next(&s1, &ev, &data) && !(streq(ev, "token") && ++tokens == 3))
                ;
        char *del = wt_strdup_printf("/v1/jobs/%s", id);
        double t0 = wt_now_ms();
        ht_call(&h, "DELETE", del, NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        const char *last = ht_sse_until_terminal(&s1, NULL, term, sizeof(term));
        ASSERT_STREQ(last, "error");
        ASSERT_CONTAINS(term, "cancelled");
        ASSERT_TRUE(wt_now_ms() - t0 < 2000);
        wt_http_done(&s1);
        ht_call(&h, "GET", del, NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "state"), "cancelled");
        wt_response_done(&r);
        ht_call(&h, "DELETE", "/v1/jobs/j-nope", NULL, &r);
        ASSERT_STATUS(r, 404);
        wt_response_done(&r);
        /* The worker is free at once: a request runs straight away. */
        ht_call(&h, "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"max_tokens\":2,\"stream\":false}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        free(id);
        free(url);
        free(del);
        ht_stop(&h);
}

/* Backend cuda, decided without a GPU: what the machine lacks comes first,
 * then the device, the VRAM, and last whether a CUDA worker exists. */
TEST(backends_cuda_checks) {
        struct hive_backends b = {};
        char err[512], *dir, *cuda;

        snprintf(b.cuda_reason, sizeof(b.cuda_reason), "no driver here");
        ASSERT_ERR(hive_backends_check(&b, "cuda", 0, 0, err, sizeof(err)), -ENODEV);
        ASSERT_CONTAINS(err, "not available on this machine: no driver here");
        b.cuda_available = true;
        b.n_gpus = 1;
        b.gpus[0].mem_free = 1ull << 30;
        ASSERT_ERR(hive_backends_check(&b, "cuda", 1, 0, err, sizeof(err)), -ENODEV);
        ASSERT_CONTAINS(err, "no CUDA device 1");
        ASSERT_ERR(hive_backends_check(&b, "cuda", 0, 2ull << 30, err, sizeof(err)), -ENOMEM);
        ASSERT_CONTAINS(err, "not enough VRAM");
        snprintf(b.cuda_worker_reason, sizeof(b.cuda_worker_reason), "no CUDA worker: test");
        ASSERT_ERR(hive_backends_check(&b, "cuda", 0, 1 << 20, err, sizeof(err)), -EOPNOTSUPP);
        ASSERT_CONTAINS(err, "no CUDA worker: test; not falling back to the CPU");

        /* <workerd>-cuda (the package's /usr/sbin/rbee-workerd-cuda) wins. */
        dir = wt_strdup_printf("%s/cudaw", harness_tmpdir());
        ASSERT_EQ(mkdir(dir, 0755), 0);
        cuda = wt_strdup_printf("%s/rbee-workerd-cuda", dir);
        hive_backends_find_cuda_worker(&b, wt_strdup_printf("%s/rbee-workerd", dir));
        if (rbee_cuda_device_count() == -EOPNOTSUPP) {
                ASSERT_STREQ(b.cuda_workerd, "");
                ASSERT_CONTAINS(b.cuda_worker_reason, "rbee-workerd-cuda is missing");
        } else
                /* A CUDA build: the worker of the same build runs CUDA. */
                ASSERT_STREQ(b.cuda_workerd, wt_strdup_printf("%s/rbee-workerd", dir));
        FILE *f = fopen(cuda, "we");
        ASSERT_NOT_NULL(f);
        fclose(f);
        ASSERT_EQ(chmod(cuda, 0755), 0);
        hive_backends_find_cuda_worker(&b, wt_strdup_printf("%s/rbee-workerd", dir));
        ASSERT_STREQ(b.cuda_workerd, cuda);
        ASSERT_OK(hive_backends_check(&b, "cuda", 0, 1 << 20, err, sizeof(err)));
        struct json_object *o = hive_backends_to_json(&b);
        ASSERT_NOT_NULL(o);
        ASSERT_STREQ(wt_jstr(o, "backends.1.worker"), cuda);
        ASSERT_STREQ(wt_jstr(o, "backends.1.devices.0.compute_capability"), "0.0");
        json_object_put(o);
        unlink(cuda);
}

/* On a machine without an NVIDIA driver every way of asking for CUDA is a
 * 400 backend_unavailable with the reason, and no worker starts. */
TEST_TIMEOUT(daemon_cuda_without_gpu_is_refused_with_reason, 30) {
        struct ht_hive h;
        struct wt_response r;
        char *p;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        ht_call(&h, "GET", "/v1/backends", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "backends.1.name"), "cuda");
        if (json_object_get_boolean(wt_jget(r.json, "backends.1.available"))) {
                wt_response_done(&r);
                ht_stop(&h);
                SKIP("this machine has a CUDA device: the refusal needs one without");
        }
        ASSERT_NOT_NULL(wt_jstr(r.json, "backends.1.reason"));
        ASSERT_EQ(json_object_array_length(wt_jget(r.json, "backends.1.devices")), 0);
        /* The key is always there: the worker binary, or null with worker_reason. */
        ASSERT_TRUE(json_object_object_get_ex(wt_jget(r.json, "backends.1"), "worker", NULL));
        wt_response_done(&r);

        p = wt_strdup_printf("{\"id\":\"gpu\",\"path\":\"%s\",\"backend\":\"cuda\",\"device\":0}", ht_model());
        ht_call(&h, "POST", "/v1/models", p, &r);
        ASSERT_STATUS(r, 400);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "backend_unavailable");
        ASSERT_CONTAINS(wt_jstr(r.json, "error.message"), "backend cuda is not available on this machine");
        wt_response_done(&r);
        free(p);

        ht_register(&h, "stories", ht_model());
        static const char *const asks[][2] = {
                { "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"x\",\"backend\":\"cuda\",\"device\":1,\"stream\":false}" },
                { "/v1/workers", "{\"model\":\"stories\",\"backend\":\"cuda\",\"device\":0}" },
                { "/v1/chat/completions", "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"backend\":\"cuda\"}" },
        };
        for (size_t i = 0; i < ELEMENTSOF(asks); i++) {
                ht_call(&h, "POST", asks[i][0], asks[i][1], &r);
                ASSERT_STATUS(r, 400);
                ASSERT_STREQ(wt_jstr(r.json, "error.code"), "backend_unavailable");
                ASSERT_CONTAINS(wt_jstr(r.json, "error.message"), "backend cuda is not available on this machine");
                wt_response_done(&r);
        }
        ht_call(&h, "GET", "/v1/workers", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(json_object_array_length(wt_jget(r.json, "workers")), 0);
        wt_response_done(&r);
        ht_stop(&h);
}

/* `systemctl start rbee-worker@ID` passes no --device: the worker follows the
 * catalog row. A row on cuda must not quietly run on the CPU here. */
TEST_TIMEOUT(worker_follows_the_catalog_placement, 30) {
        char *db = wt_strdup_printf("%s/placed.db", harness_tmpdir());
        struct hive_catalog *c = NULL;
        struct hive_model m = {};
        struct wt_response r;
        char *recovered = NULL, err[512];

        if (rbee_cuda_device_count() > 0)
                SKIP("this machine has a CUDA device: a cuda row would run");
        ASSERT_OK(hive_catalog_open(db, &c, &recovered, err, sizeof(err)));
        ASSERT_OK(hive_model_inspect(ht_model(), &m, err, sizeof(err)));
        m.id = (char *) "gpu";
        m.local_path = (char *) ht_model();
        m.source = (char *) "file:///x";
        m.backend = (char *) "cuda";
        m.device = 0;
        ASSERT_OK(hive_catalog_add(c, &m));
        hive_catalog_free(c);

        /* The row decides: cuda device 0, which this machine lacks. */
        struct wt_worker w;
        struct wt_opts o = { .args = (const char *[]) { "--model-id", "gpu", "--catalog", db, "--threads", "1", NULL },
                             .no_wait = true };
        wt_spawn(&w, &o);
        ASSERT_GE(wt_wait_exit(&w, 20000 * wt_slow()), 0);
        ASSERT_TRUE(WIFEXITED(w.status) && WEXITSTATUS(w.status) != 0);
        ASSERT_CONTAINS(wt_read_log(&w), "CUDA");
        /* --device cpu (what the hive passes for a request on the CPU) overrides it. */
        o.args = (const char *[]) { "--model-id", "gpu", "--catalog", db, "--threads", "1", "--device", "cpu", NULL };
        o.no_wait = false;
        wt_spawn(&w, &o);
        wt_call(&w, "GET", "/v1/ready", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_stop_clean(&w);
}
