/* SPDX-License-Identifier: MIT */
/* Faults around the hive's SQLite catalog: another process holds the write
 * lock (reads go on, writes answer 503 catalog_busy after the busy timeout,
 * a finished download waits for the lock instead of throwing the file away),
 * and a corrupt catalog file (moved aside byte for byte, the hive starts
 * degraded with an empty catalog, the model files stay on disk). */

#include <dirent.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "harness.h"
#include "hive/hfserver.h"
#include "hive/htest.h"

/* Take the catalog's write lock from this process, as an sqlite3 shell
 * running a long transaction would. */
static sqlite3 *lock_catalog(const struct ht_hive *h) {
        char *db = wt_strdup_printf("%s/catalog.db", h->state);
        sqlite3 *s = NULL;

        ASSERT_EQ(sqlite3_open_v2(db, &s, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        ASSERT_EQ(sqlite3_exec(s, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
        ASSERT_EQ(sqlite3_exec(s, "INSERT INTO downloads (id, source, created_at) VALUES ('held', 'x', 0)", NULL, NULL,
                               NULL),
                  SQLITE_OK);
        free(db);
        return s;
}

static void unlock_catalog(sqlite3 *s) {
        /* Roll back: the lock holder's own write never lands. */
        ASSERT_EQ(sqlite3_exec(s, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(s);
}

TEST_TIMEOUT(sqlite_busy_register_and_delete, 60) {
        struct ht_hive h;
        struct wt_response r;
        char *body = wt_strdup_printf("{\"id\":\"late\",\"path\":\"%s\"}", ht_model());

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        ht_register(&h, "stories", ht_model());
        sqlite3 *s = lock_catalog(&h);

        /* Reads go on under WAL. */
        double t0 = wt_now_ms();
        ht_call(&h, "GET", "/v1/models", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "data.0.id"), "stories");
        wt_response_done(&r);
        ASSERT_TRUE(wt_now_ms() - t0 < 2000);

        /* Writes wait for the busy timeout, then say why, with Retry-After.
         * Meanwhile reads (and so routing) are not held up by the waiting
         * writer: a child process reads while the parent's write waits. */
        fflush(NULL);
        pid_t reader = fork();
        ASSERT_TRUE(reader >= 0);
        if (reader == 0) {
                struct wt_response rr;
                usleep(1000000);
                double t = wt_now_ms();
                ht_call(&h, "GET", "/v1/models/stories", NULL, &rr);
                /* Well under the 5 s busy timeout it would wait behind the writer. */
                _exit(rr.status == 200 && wt_now_ms() - t < 2500 ? 0 : 1);
        }
        t0 = wt_now_ms();
        ht_call(&h, "POST", "/v1/models", body, &r);
        ASSERT_STATUS(r, 503);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "catalog_busy");
        ASSERT_CONTAINS(wt_jstr(r.json, "error.message"), "locked by another process");
        ASSERT_CONTAINS(r.head, "Retry-After:");
        wt_response_done(&r);
        double waited = wt_now_ms() - t0;
        ASSERT_TRUE(waited >= 4000 && waited < 15000);
        int st;
        ASSERT_EQ(waitpid(reader, &st, 0), reader);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                FAIL("a read had to wait behind the writer that waits for the lock");
        ht_call(&h, "DELETE", "/v1/models/stories", NULL, &r);
        ASSERT_STATUS(r, 503);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "catalog_busy");
        wt_response_done(&r);

        /* Nothing was half-done: the model is still there, health is fine. */
        ht_call(&h, "GET", "/v1/models/stories", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        ht_call(&h, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);

        /* Released: the same requests work. */
        unlock_catalog(s);
        ht_call(&h, "POST", "/v1/models", body, &r);
        ASSERT_STATUS(r, 201);
        wt_response_done(&r);
        ht_call(&h, "DELETE", "/v1/models/late", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        ht_stop(&h);
        free(body);
}

TEST_TIMEOUT(sqlite_busy_when_a_download_finishes, 90) {
        struct ht_hive h;
        struct hf_server srv;
        struct wt_response r;
        struct wt_http s;
        const char *ev, *data;
        char *ep;
        bool saw_wait = false;
        char term[64] = "";

        hf_start(&srv, ht_model());
        ep = wt_strdup_printf("--hf-endpoint=http://127.0.0.1:%d", srv.port);
        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", ep, NULL }, NULL);
        sqlite3 *db = lock_catalog(&h);

        ht_call(&h, "POST", "/v1/models/download", "{\"source\":\"hf:t/good\",\"id\":\"b1\"}", &r);
        ASSERT_STATUS(r, 202);
        int fd = wt_connect(&h.conn);
        wt_send_request(fd, "GET", wt_jstr(r.json, "events_url"), NULL, NULL, 0);
        wt_response_done(&r);
        ASSERT_EQ(wt_http_begin(&s, fd, 20000), 0);
        while (wt_sse_next(&s, &ev, &data)) {
                /* The file is in and verified; only the catalog row waits. */
                if (streq(ev, "retry") && strstr(data, "catalog is locked") && !saw_wait) {
                        saw_wait = true;
                        ASSERT_EQ(ht_count_model_files(h.state, ".gguf"), 1);
                        unlock_catalog(db);
                }
                if (streq(ev, "end") || streq(ev, "error")) {
                        snprintf(term, sizeof(term), "%s", ev);
                        if (streq(ev, "error"))
                                FAIL("download: %s", data);
                }
        }
        wt_http_done(&s);
        ASSERT_TRUE(saw_wait);
        ASSERT_STREQ(term, "end");
        ht_call(&h, "GET", "/v1/models/b1", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "sha256"), srv.sha);
        wt_response_done(&r);
        ASSERT_EQ(ht_count_model_files(h.state, ".partial"), 0);
        ht_stop(&h);
        hf_stop(&srv);
        free(ep);
}

TEST_TIMEOUT(corrupt_catalog_keeps_files_and_the_evidence, 60) {
        struct ht_hive h, h2;
        struct hf_server srv;
        struct wt_response r;
        char *ep, *db, *garbage, *moved;
        size_t glen, mlen;

        hf_start(&srv, ht_model());
        ep = wt_strdup_printf("--hf-endpoint=http://127.0.0.1:%d", srv.port);
        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", ep, NULL }, NULL);
        ht_call(&h, "POST", "/v1/models/download", "{\"source\":\"hf:t/good\",\"id\":\"c1\"}", &r);
        ASSERT_STATUS(r, 202);
        wt_response_done(&r);
        ASSERT_TRUE(ht_wait_model(&h, "c1", 20000));
        ht_stop(&h);

        /* Half the database overwritten, as a bad disk or a stray dd would. */
        db = wt_strdup_printf("%s/catalog.db", h.state);
        unlink(wt_strdup_printf("%s-wal", db));
        unlink(wt_strdup_printf("%s-shm", db));
        garbage = harness_read_file(db, &glen);
        ASSERT_GE(glen, 4096);
        memset(garbage, 0xa5, glen / 2);
        FILE *f = fopen(db, "we");
        ASSERT_NOT_NULL(f);
        ASSERT_EQ(fwrite(garbage, 1, glen, f), glen);
        fclose(f);

        ht_start(&h2, h.dir, (const char *[]) { "--stop-workers-on-exit", ep, NULL }, NULL);
        ht_call(&h2, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "status"), "degraded");
        moved = strdup(wt_jstr(r.json, "catalog.recovered_from"));
        wt_response_done(&r);
        /* The corrupt file is kept as it was, for whoever repairs it. */
        char *kept = harness_read_file(moved, &mlen);
        ASSERT_EQ(mlen, glen);
        ASSERT_TRUE(memcmp(kept, garbage, glen) == 0);
        /* The model file the lost row pointed to is still on disk. */
        ASSERT_EQ(ht_count_model_files(h2.state, ".gguf"), 1);
        ht_call(&h2, "GET", "/v1/models", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(json_object_array_length(wt_jget(r.json, "data")), 0);
        wt_response_done(&r);
        /* The fresh catalog works. */
        ht_register(&h2, "stories", ht_model());
        ht_stop(&h2);
        hf_stop(&srv);
        free(kept);
        free(moved);
        free(garbage);
        free(db);
        free(ep);
}
