/* SPDX-License-Identifier: MIT */
/* Faults around rbee-hive downloads, against the local HuggingFace-like
 * server of tests/hive/hfserver.h: the hive SIGKILLed mid-download and
 * restarted (the download resumes under its job id with a Range request,
 * stray partial files go), the hive stopped mid-download (same), the hive
 * dead between the rename and the catalog row (verified, not fetched again), the disk
 * filling up (a small tmpfs in a private mount namespace), and connections
 * that are cut every time, cut after a while, or hang. Each case checks what
 * the client sees, the catalog (models and downloads-in-flight tables) and
 * the models directory: no .partial file, no row, unless resumable. */

#include <dirent.h>
#include <sched.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "harness.h"
#include "hive/hfserver.h"
#include "hive/htest.h"

struct dl_result {
        char terminal[64];
        char data[4096];
        unsigned progress, retries;
};

/* Follow a job's events to the end. */
static void follow(struct ht_hive *h, const char *events_url, struct dl_result *ret) {
        struct wt_http s;
        const char *ev, *data;
        int fd = wt_connect(&h->conn);

        memset(ret, 0, sizeof(*ret));
        wt_send_request(fd, "GET", events_url, NULL, NULL, 0);
        if (wt_http_begin(&s, fd, 20000) < 0 || s.status != 200)
                FAIL("%s: no event stream", events_url);
        while (wt_sse_next(&s, &ev, &data)) {
                if (streq(ev, "progress"))
                        ret->progress++;
                else if (streq(ev, "retry"))
                        ret->retries++;
                else if (streq(ev, "end") || streq(ev, "error")) {
                        snprintf(ret->terminal, sizeof(ret->terminal), "%s", ev);
                        snprintf(ret->data, sizeof(ret->data), "%s", data);
                }
        }
        wt_http_done(&s);
        if (!ret->terminal[0])
                FAIL("%s ended without a terminal event", events_url);
}

/* POST a download; returns its job id (malloc'd) and events URL in *ret_events. */
static char *post_download(struct ht_hive *h, const char *body, char **ret_events) {
        struct wt_response r;
        char *id;

        ht_call(h, "POST", "/v1/models/download", body, &r);
        if (r.status != 202) {
                ht_dump_log(h);
                FAIL("download %s: HTTP %d: %s", body, r.status, r.body);
        }
        id = strdup(wt_jstr(r.json, "job_id"));
        *ret_events = strdup(wt_jstr(r.json, "events_url"));
        wt_response_done(&r);
        return id;
}

static void download(struct ht_hive *h, const char *body, struct dl_result *ret) {
        char *events = NULL;
        free(post_download(h, body, &events));
        follow(h, events, ret);
        free(events);
}

/* Rows of the downloads-in-flight table, read as another process would. */
static int downloads_rows(const char *state) {
        char *db = wt_strdup_printf("%s/catalog.db", state);
        sqlite3 *s = NULL;
        sqlite3_stmt *st = NULL;
        int n = -1;

        if (sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(s, "SELECT COUNT(*) FROM downloads", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(s);
        free(db);
        if (n < 0)
                FAIL("cannot read the downloads table of %s/catalog.db", state);
        return n;
}

static const char *const *hive_args(const struct hf_server *srv) {
        static const char *args[8];
        static char ep[64];

        snprintf(ep, sizeof(ep), "--hf-endpoint=http://127.0.0.1:%d", srv->port);
        args[0] = "--stop-workers-on-exit";
        args[1] = ep;
        args[2] = "--download-backoff=50ms";
        args[3] = "--download-stall=1s";
        args[4] = "--download-retries=3";
        args[5] = NULL;
        return args;
}

static long long file_size(const char *path) {
        struct stat st;
        return stat(path, &st) < 0 ? -1 : (long long) st.st_size;
}

/* Bounded wait until path holds at least min bytes. */
static void wait_size(const char *path, long long min, int timeout_ms) {
        double deadline = wt_now_ms() + timeout_ms;

        while (file_size(path) < min) {
                if (wt_now_ms() > deadline)
                        FAIL("%s did not reach %lld bytes (has %lld)", path, min, file_size(path));
                usleep(20000);
        }
}

/* A ranged request for path that resumed strictly inside the file. */
static unsigned resumes_in_log(const struct hf_server *s, const char *path) {
        char *l = harness_read_file(s->log, NULL);
        char *needle = wt_strdup_printf("GET %s range=", path);
        unsigned n = 0;

        for (const char *p = strstr(l, needle); p; p = strstr(p + 1, needle)) {
                unsigned long long from = strtoull(p + strlen(needle), NULL, 10);
                n += from > 0 && from < s->size;
        }
        free(needle);
        free(l);
        return n;
}

static void check_clean_after_failure(struct ht_hive *h, const char *id) {
        ASSERT_FALSE(ht_in_catalog(h, id));
        ASSERT_EQ(ht_count_model_files(h->state, ".partial"), 0);
        ASSERT_EQ(ht_count_model_files(h->state, ".gguf"), 0);
        ASSERT_EQ(downloads_rows(h->state), 0);
}

TEST_TIMEOUT(hive_sigkill_mid_download_resumes_after_restart, 60) {
        struct ht_hive h, h2;
        struct hf_server srv;
        struct wt_response r;
        struct dl_result d;
        char *events = NULL, *job, *partial, *orphan;

        hf_start(&srv, ht_model());
        ht_start(&h, NULL, hive_args(&srv), NULL);
        job = post_download(&h, "{\"source\":\"hf:t/slow\",\"id\":\"k1\"}", &events);
        partial = wt_strdup_printf("%s/models/k1.gguf.partial", h.state);
        wait_size(partial, 200000, 10000 * wt_slow());
        ASSERT_EQ(downloads_rows(h.state), 1);
        ASSERT_FALSE(ht_in_catalog(&h, "k1"));

        /* SIGKILL: no chance to clean up. The partial file is what is left. */
        struct wt_worker w = { .pid = h.pid };
        ASSERT_EQ(kill(h.pid, SIGKILL), 0);
        ASSERT_NE(wt_wait_exit(&w, 5000), -1);
        close(h.notify_fd);
        long long had = file_size(partial);
        ASSERT_GE(had, 200000);
        ASSERT_TRUE(had < (long long) srv.size);
        /* A partial file no download claims (a crash of an older hive). */
        orphan = wt_strdup_printf("%s/models/orphan.gguf.partial", h.state);
        FILE *f = fopen(orphan, "we");
        ASSERT_NOT_NULL(f);
        fputs("half a model", f);
        fclose(f);

        /* The next hive resumes it under the same job id, from where it was. */
        ht_start(&h2, h.dir, hive_args(&srv), NULL);
        ASSERT_TRUE(access(orphan, F_OK) < 0);
        char *jp = wt_strdup_printf("/v1/jobs/%s", job);
        ht_call(&h2, "GET", jp, NULL, &r);
        if (r.status != 200) {
                ht_dump_log(&h2);
                FAIL("the download job %s was not resumed: HTTP %d %s", job, r.status, r.body);
        }
        ASSERT_STREQ(wt_jstr(r.json, "type"), "download");
        wt_response_done(&r);
        follow(&h2, events, &d);
        if (!streq(d.terminal, "end")) {
                ht_dump_log(&h2);
                FAIL("resumed download: %s %s", d.terminal, d.data);
        }
        ASSERT_GE(resumes_in_log(&srv, "/cdn/slow/model-Q8_0.gguf"), 1);
        ASSERT_TRUE(ht_in_catalog(&h2, "k1"));
        ht_call(&h2, "GET", "/v1/models/k1", NULL, &r);
        ASSERT_STREQ(wt_jstr(r.json, "sha256"), srv.sha);
        ASSERT_EQ(wt_jint(r.json, "size"), (long long) srv.size);
        wt_response_done(&r);
        ASSERT_EQ(ht_count_model_files(h2.state, ".partial"), 0);
        ASSERT_EQ(ht_count_model_files(h2.state, ".gguf"), 1);
        ASSERT_EQ(downloads_rows(h2.state), 0);
        ht_stop(&h2);
        hf_stop(&srv);
        free(jp);
        free(job);
        free(events);
        free(partial);
        free(orphan);
}

TEST_TIMEOUT(hive_stop_mid_download_keeps_partial_and_resumes, 60) {
        struct ht_hive h, h2;
        struct hf_server srv;
        struct dl_result d;
        char *events = NULL, *job, *partial;

        hf_start(&srv, ht_model());
        ht_start(&h, NULL, hive_args(&srv), NULL);
        job = post_download(&h, "{\"source\":\"hf:t/slow\",\"id\":\"k2\"}", &events);
        partial = wt_strdup_printf("%s/models/k2.gguf.partial", h.state);
        wait_size(partial, 100000, 10000 * wt_slow());

        /* A follower sees the stop as a terminal error that says it resumes. */
        int fd = wt_connect(&h.conn);
        struct wt_http s;
        wt_send_request(fd, "GET", events, NULL, NULL, 0);
        ASSERT_EQ(wt_http_begin(&s, fd, 10000), 0);
        ht_stop(&h);
        char term[2048] = "";
        const char *last = ht_sse_until_terminal(&s, NULL, term, sizeof(term));
        wt_http_done(&s);
        ASSERT_STREQ(last, "error");
        ASSERT_CONTAINS(term, "\"code\":\"shutting_down\"");
        /* Whoever ends the stream first (the hive's shutdown, the stream
         * itself, the download thread) says that it is only a pause. */
        ASSERT_CONTAINS(term, "the download resumes when it starts again");
        ASSERT_GE(file_size(partial), 100000);
        ASSERT_EQ(downloads_rows(h.state), 1);

        ht_start(&h2, h.dir, hive_args(&srv), NULL);
        follow(&h2, events, &d);
        ASSERT_STREQ(d.terminal, "end");
        ASSERT_TRUE(ht_in_catalog(&h2, "k2"));
        ASSERT_EQ(ht_count_model_files(h2.state, ".partial"), 0);
        ASSERT_EQ(downloads_rows(h2.state), 0);
        ASSERT_GE(resumes_in_log(&srv, "/cdn/slow/model-Q8_0.gguf"), 1);
        ht_stop(&h2);
        hf_stop(&srv);
        free(job);
        free(events);
        free(partial);
}

/* Fill the file system of dir up to leave about `leave` bytes free. */
static void fill_disk(const char *path, size_t leave) {
        static char block[65536];
        struct statvfs v;
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

        ASSERT_TRUE(fd >= 0);
        for (;;) {
                ASSERT_EQ(fstatvfs(fd, &v), 0);
                uint64_t free_bytes = (uint64_t) v.f_bavail * v.f_frsize;
                if (free_bytes <= leave)
                        break;
                size_t n = MIN(sizeof(block), (size_t) (free_bytes - leave));
                if (write(fd, block, n) < 0) {
                        ASSERT_EQ(errno, ENOSPC);
                        break;
                }
        }
        close(fd);
}

TEST_TIMEOUT(disk_full_before_and_during_download, 60) {
        struct ht_hive h;
        struct hf_server srv;
        struct dl_result d;
        char *events = NULL, *job, *partial, *filler, *filler2, *state;
        char disk_dir[PATH_MAX];

        /* A 24 MiB tmpfs, private to this test: root in a mount namespace. */
        snprintf(disk_dir, sizeof(disk_dir), "%s/disk", harness_tmpdir());
        ASSERT_EQ(mkdir(disk_dir, 0755), 0);
        if (unshare(CLONE_NEWNS) < 0)
                SKIP("cannot make a mount namespace for a small tmpfs (needs root or CAP_SYS_ADMIN): %m");
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("tmpfs", disk_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=24m,mode=0755") < 0)
                SKIP("cannot mount a tmpfs: %m");
        /* On a failure the mount goes with the namespace, when the test's
         * processes are gone. */

        hf_start(&srv, ht_model());
        /* The hive's dirs are on the small disk; its log is not. */
        state = wt_strdup_printf("%s/hive", disk_dir);
        ht_start(&h, state, hive_args(&srv), NULL);
        filler = wt_strdup_printf("%s/filler", disk_dir);
        filler2 = wt_strdup_printf("%s/filler2", disk_dir);

        /* Not enough room for the file plus the margin: refused up front. */
        fill_disk(filler, 8u << 20);
        download(&h, "{\"source\":\"hf:t/good\",\"id\":\"f1\"}", &d);
        ASSERT_STREQ(d.terminal, "error");
        ASSERT_CONTAINS(d.data, "\"code\":\"disk_full\"");
        ASSERT_CONTAINS(d.data, "not enough free space");
        check_clean_after_failure(&h, "f1");
        ASSERT_EQ(unlink(filler), 0);

        /* The disk fills while the file streams in. */
        job = post_download(&h, "{\"source\":\"hf:t/slow\",\"id\":\"f2\"}", &events);
        partial = wt_strdup_printf("%s/models/f2.gguf.partial", h.state);
        wait_size(partial, 100000, 10000 * wt_slow());
        fill_disk(filler2, 0);
        follow(&h, events, &d);
        ASSERT_STREQ(d.terminal, "error");
        ASSERT_CONTAINS(d.data, "\"code\":\"disk_full\"");
        ASSERT_CONTAINS(d.data, "No space left on device");
        ASSERT_TRUE(access(partial, F_OK) < 0);
        ASSERT_EQ(unlink(filler2), 0);
        check_clean_after_failure(&h, "f2");

        /* Room again: the same download works, the hive never went down. */
        download(&h, "{\"source\":\"hf:t/good\",\"id\":\"f2\"}", &d);
        ASSERT_STREQ(d.terminal, "end");
        ASSERT_TRUE(ht_in_catalog(&h, "f2"));
        ASSERT_EQ(ht_count_model_files(h.state, ".partial"), 0);
        ht_stop(&h);
        hf_stop(&srv);
        ASSERT_EQ(umount2(disk_dir, MNT_DETACH), 0);      /* so that the harness can remove the directory */
        free(job);
        free(events);
        free(partial);
        free(filler);
        free(filler2);
        free(state);
}

TEST_TIMEOUT(network_cuts_and_stalls, 60) {
        struct ht_hive h;
        struct hf_server srv;
        struct dl_result d;

        hf_start(&srv, ht_model());
        ht_start(&h, NULL, hive_args(&srv), NULL);

        /* Cut after 400 KB each time: every attempt resumes where the last ended. */
        download(&h, "{\"source\":\"hf:t/flaky\",\"id\":\"n1\"}", &d);
        if (!streq(d.terminal, "end")) {
                ht_dump_log(&h);
                FAIL("flaky: %s %s", d.terminal, d.data);
        }
        ASSERT_GE(d.retries, 2);
        ASSERT_GE(resumes_in_log(&srv, "/cdn/flaky/model-Q8_0.gguf"), 2);
        ASSERT_TRUE(ht_in_catalog(&h, "n1"));
        ASSERT_EQ(ht_count_model_files(h.state, ".partial"), 0);
        ASSERT_EQ(downloads_rows(h.state), 0);
        struct wt_response r;
        ht_call(&h, "DELETE", "/v1/models/n1", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);

        /* Cut before any byte, every time: bounded retries, then a clear error. */
        double t0 = wt_now_ms();
        download(&h, "{\"source\":\"hf:t/dead\",\"id\":\"n2\"}", &d);
        ASSERT_STREQ(d.terminal, "error");
        ASSERT_CONTAINS(d.data, "\"code\":\"network_error\"");
        ASSERT_CONTAINS(d.data, "after 4 attempts");
        ASSERT_EQ(d.retries, 3);
        ASSERT_TRUE(wt_now_ms() - t0 < 10000);
        check_clean_after_failure(&h, "n2");

        /* Headers, then silence: the stall timeout (1 s) ends each attempt. */
        t0 = wt_now_ms();
        download(&h, "{\"source\":\"hf:t/hang\",\"id\":\"n3\"}", &d);
        ASSERT_STREQ(d.terminal, "error");
        ASSERT_CONTAINS(d.data, "\"code\":\"stalled\"");
        ASSERT_CONTAINS(d.data, "stalled");
        ASSERT_EQ(d.retries, 3);
        ASSERT_TRUE(wt_now_ms() - t0 < 20000);
        check_clean_after_failure(&h, "n3");

        /* The endpoint is gone altogether (connection refused). */
        hf_stop(&srv);
        download(&h, "{\"source\":\"hf:t/good\",\"id\":\"n4\"}", &d);
        ASSERT_STREQ(d.terminal, "error");
        ASSERT_CONTAINS(d.data, "\"code\":\"network_error\"");
        check_clean_after_failure(&h, "n4");

        ht_call(&h, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        ht_stop(&h);
}

static unsigned count_in_log(const struct hf_server *s, const char *needle) {
        char *l = harness_read_file(s->log, NULL);
        unsigned n = 0;

        for (const char *p = strstr(l, needle); p; p = strstr(p + 1, needle))
                n++;
        free(l);
        return n;
}

/* The state a hive leaves when it dies after the rename into place but
 * before the catalog row: the whole file and the download row. The next
 * hive verifies and registers the file without fetching it again. */
TEST_TIMEOUT(hive_killed_between_rename_and_catalog_row, 60) {
        struct ht_hive h, h2;
        struct hf_server srv;
        struct dl_result d;
        struct wt_response r;
        sqlite3 *s;

        hf_start(&srv, ht_model());
        ht_start(&h, NULL, hive_args(&srv), NULL);
        download(&h, "{\"source\":\"hf:t/good\",\"id\":\"w1\"}", &d);
        ASSERT_STREQ(d.terminal, "end");
        ht_stop(&h);
        ASSERT_EQ(count_in_log(&srv, "GET /cdn/good/model-Q8_0.gguf"), 1);

        char *db = wt_strdup_printf("%s/catalog.db", h.state);
        ASSERT_EQ(sqlite3_open_v2(db, &s, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        ASSERT_EQ(sqlite3_exec(s,
                               "DELETE FROM models WHERE id = 'w1';"
                               "INSERT INTO downloads (id, source, job_id, created_at) VALUES ('w1', 'hf:t/good', 'j-w1', 0);",
                               NULL, NULL, NULL),
                  SQLITE_OK);
        sqlite3_close(s);

        ht_start(&h2, h.dir, hive_args(&srv), NULL);
        follow(&h2, "/v1/jobs/j-w1/events", &d);
        if (!streq(d.terminal, "end")) {
                ht_dump_log(&h2);
                FAIL("w1: %s %s", d.terminal, d.data);
        }
        ht_call(&h2, "GET", "/v1/models/w1", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_STREQ(wt_jstr(r.json, "sha256"), srv.sha);
        wt_response_done(&r);
        ASSERT_EQ(count_in_log(&srv, "GET /cdn/good/model-Q8_0.gguf"), 1);
        ASSERT_EQ(ht_count_model_files(h2.state, ".gguf"), 1);
        ASSERT_EQ(ht_count_model_files(h2.state, ".partial"), 0);
        ASSERT_EQ(downloads_rows(h2.state), 0);
        ht_stop(&h2);
        hf_stop(&srv);
        free(db);
}
