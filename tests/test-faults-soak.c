/* SPDX-License-Identifier: MIT */
/* A short, bounded soak of rbee-hive and its worker (the 10-minute one is
 * `make load SOAK=600`): a few client processes hammer every kind of request
 * for some seconds, each on a fresh connection: health, lists, inference
 * (blocking, streamed to the end, and abandoned mid-stream), OpenAI chat,
 * and the error paths (404, 400, 405, 413). Afterwards the hive and the
 * worker have as many fds and threads as before, and their RSS grew by less
 * than a bound, measured after a warm-up. */

#include <sys/wait.h>

#include "harness.h"
#include "hive/htest.h"

struct usage {
        long rss_kib;
        int fds, threads;
};

static struct usage usage_of(int pid) {
        struct usage u = { -1, -1, -1 };
        char *p = wt_strdup_printf("/proc/%d/status", pid);
        char *s = harness_read_file(p, NULL), *q;
        DIR *d;

        if ((q = strstr(s, "VmRSS:")))
                u.rss_kib = strtol(q + 6, NULL, 10);
        if ((q = strstr(s, "Threads:")))
                u.threads = (int) strtol(q + 8, NULL, 10);
        free(s);
        free(p);
        p = wt_strdup_printf("/proc/%d/fd", pid);
        d = opendir(p);
        ASSERT_NOT_NULL(d);
        u.fds = 0;
        for (struct dirent *de; (de = readdir(d));)
                u.fds += de->d_name[0] != '.';
        closedir(d);
        free(p);
        return u;
}

/* One client: requests round-robin until the deadline; exits 0 when every
 * answer was the expected one. */
static void client(struct ht_hive *h, int id, double seconds) {
        static const struct {
                const char *method, *path, *body;
                int status;
        } reqs[] = {
                { "GET", "/v1/health", NULL, 200 },
                { "GET", "/v1/models", NULL, 200 },
                { "GET", "/v1/models/stories", NULL, 200 },
                { "GET", "/v1/workers", NULL, 200 },
                { "GET", "/v1/jobs", NULL, 200 },
                { "POST", "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":3,\"stream\":false}", 200 },
                { "POST", "/v1/chat/completions",
                  "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":3}", 200 },
                { "GET", "/v1/models/nope", NULL, 404 },
                { "POST", "/v1/inference", "{\"model\":", 400 },
                { "PUT", "/v1/models", NULL, 405 },
                { "GET", "/metrics", NULL, 200 },
        };
        double deadline = wt_now_ms() + seconds * 1000;
        unsigned n = 0;

        while (wt_now_ms() < deadline) {
                struct wt_response r;
                size_t i = (n++ + (unsigned) id) % (ELEMENTSOF(reqs) + 2);

                if (i == ELEMENTSOF(reqs)) {
                        /* Streamed to the end. */
                        struct wt_http s;
                        wt_stream_open(&h->conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"a\",\"max_tokens\":4}", &s);
                        if (s.status != 200 && s.status != 503)
                                FAIL("stream: HTTP %d", s.status);
                        if (s.status == 200 && !ht_sse_until_terminal(&s, NULL, NULL, 0))
                                FAIL("stream without a terminal event");
                        wt_http_done(&s);
                        continue;
                }
                if (i == ELEMENTSOF(reqs) + 1) {
                        /* Abandoned after the first event. */
                        struct wt_http s;
                        const char *ev, *data;
                        wt_stream_open(&h->conn, "/v1/inference", "{\"model\":\"stories\",\"prompt\":\"a\",\"max_tokens\":50}", &s);
                        if (s.status == 200)
                                (void) wt_sse_next(&s, &ev, &data);
                        wt_http_done(&s);
                        continue;
                }
                wt_call(&h->conn, reqs[i].method, reqs[i].path, reqs[i].body, &r);
                /* 503: admission control, when the others fill the queue. */
                if (r.status != reqs[i].status && !(r.status == 503 && streq(reqs[i].method, "POST")))
                        FAIL("%s %s: HTTP %d, expected %d: %s", reqs[i].method, reqs[i].path, r.status, reqs[i].status,
                             r.body);
                wt_response_done(&r);
        }
}

static void load(struct ht_hive *h, int clients, double seconds) {
        pid_t pids[8];

        fflush(NULL);
        for (int i = 0; i < clients; i++) {
                pids[i] = fork();
                ASSERT_TRUE(pids[i] >= 0);
                if (pids[i] == 0) {
                        client(h, i, seconds);
                        _exit(0);
                }
        }
        for (int i = 0; i < clients; i++) {
                int st;
                ASSERT_EQ(waitpid(pids[i], &st, 0), pids[i]);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                        ht_dump_log(h);
                        FAIL("client %d failed (status 0x%x)", i, st);
                }
        }
}

/* Streams the clients abandoned end within a moment; wait for it. */
static void settle(struct ht_hive *h) {
        double deadline = wt_now_ms() + 5000;

        for (;;) {
                struct wt_response r;
                ht_call(h, "GET", "/v1/workers/stories", NULL, &r);
                long long active = wt_jint(r.json, "active_requests");
                wt_response_done(&r);
                if (active == 0)
                        break;
                ASSERT_TRUE(wt_now_ms() < deadline);
                usleep(50000);
        }
        usleep(300000);
}

TEST_TIMEOUT(soak_fds_threads_and_memory_stay_flat, 90) {
        struct ht_hive h;
        struct wt_response r;
        double secs = getenv("RBEE_SOAK_TEST_SECONDS") ? strtod(getenv("RBEE_SOAK_TEST_SECONDS"), NULL) : 6;

        if (WT_SANITIZED)
                secs = 3;       /* ASan's quarantine makes RSS meaningless; fds and threads still count */
        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", "--max-queue=4", "--keep-alive=-1", NULL }, NULL);
        ht_register(&h, "stories", ht_model());
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"stories\"}", &r);
        ASSERT_STATUS(r, 201);
        int wpid = (int) wt_jint(r.json, "pid");
        wt_response_done(&r);

        /* Warm-up: malloc arenas, thread stacks, SQLite's page cache. */
        load(&h, 3, 1.5);
        settle(&h);
        struct usage h0 = usage_of(h.pid), w0 = usage_of(wpid);
        double t0 = wt_now_ms();
        load(&h, 3, secs);
        double took = wt_now_ms() - t0;
        settle(&h);
        struct usage h1 = usage_of(h.pid), w1 = usage_of(wpid);
        ht_call(&h, "GET", "/metrics", NULL, &r);
        fprintf(stderr, "  %.1f s of load; hive rss %ld -> %ld KiB, fds %d -> %d, threads %d -> %d; "
                        "worker rss %ld -> %ld KiB, fds %d -> %d\n",
                took / 1000, h0.rss_kib, h1.rss_kib, h0.fds, h1.fds, h0.threads, h1.threads, w0.rss_kib, w1.rss_kib,
                w0.fds, w1.fds);
        wt_response_done(&r);

        ASSERT_EQ(h1.fds, h0.fds);
        ASSERT_EQ(w1.fds, w0.fds);
        ASSERT_TRUE(h1.threads <= h0.threads + 1);
        if (!WT_SANITIZED) {
                if (h1.rss_kib > h0.rss_kib + 8192)
                        FAIL("the hive grew from %ld to %ld KiB", h0.rss_kib, h1.rss_kib);
                if (w1.rss_kib > w0.rss_kib + 8192)
                        FAIL("the worker grew from %ld to %ld KiB", w0.rss_kib, w1.rss_kib);
        }
        ASSERT_EQ(ht_worker_pid(&h, "stories", NULL, 0), wpid);
        ht_stop(&h);
}
