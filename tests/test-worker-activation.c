/* SPDX-License-Identifier: MIT */
/* rbee-workerd under systemd-socket-activate (unix and TCP) with a
 * NOTIFY_SOCKET read by the test: loading progress, READY=1 only once the
 * model is resident, a real stream, STOPPING=1; and the watchdog, which must
 * go quiet while the inference thread is wedged. */

#include <sys/inotify.h>

#include "worker/wtest.h"

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })
#define SOCKET_ACTIVATE "/usr/bin/systemd-socket-activate"

static const char *stories(void) {
        return harness_shared("models/stories260K.gguf");
}

static void need_socket_activate(void) {
        if (access(SOCKET_ACTIVATE, X_OK) < 0)
                SKIP("%s is not installed", SOCKET_ACTIVATE);
}

/* Wait, on inotify, until path exists. */
static void wait_for_file(const char *path, int timeout_ms) {
        char dir[PATH_MAX];
        const char *slash = strrchr(path, '/');
        double deadline = wt_now_ms() + timeout_ms;
        int fd;

        snprintf(dir, sizeof(dir), "%.*s", (int) (slash - path), path);
        fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        ASSERT_TRUE(fd >= 0);
        ASSERT_TRUE(inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO) >= 0);
        while (access(path, F_OK) < 0) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                char buf[4096];
                double left = deadline - wt_now_ms();

                if (left <= 0)
                        FAIL("%s did not appear", path);
                if (poll(&p, 1, (int) left + 1) > 0)
                        (void) !read(fd, buf, sizeof(buf));
        }
        close(fd);
}

static void check_activated_worker(struct wt_worker *w) {
        struct wt_response r;
        struct wt_http h;
        const char *ev, *data;
        int tokens = 0;

        /* The first connection starts the worker; it answers while loading. */
        wt_call(w, "GET", "/v1/ready", NULL, &r);
        ASSERT_STATUS(r, 503);
        ASSERT_STREQ(wt_jstr(r.json, "state"), "loading");
        ASSERT_FALSE(json_object_get_boolean(wt_jget(r.json, "ready")));
        ASSERT_LE(wt_jint(r.json, "progress.done"), wt_jint(r.json, "progress.total"));
        ASSERT_CONTAINS(r.head, "Retry-After: ");
        wt_response_done(&r);
        wt_call(w, "POST", "/v1/inference", "{\"prompt\":\"Once\"}", &r);
        ASSERT_STATUS(r, 503);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "loading");
        wt_response_done(&r);

        if (!wt_notify_wait(w, "READY=1", 30000 * wt_slow())) {
                wt_dump_log(w);
                FAIL("no READY=1; notify: %s", w->notes);
        }
        /* Every layer's progress, in order, then READY=1. */
        const char *prev = w->notes;
        for (int i = 1; i <= 5; i++) {
                char line[64];
                snprintf(line, sizeof(line), "STATUS=Loading %d/5 layers\n", i);
                const char *at = strstr(w->notes, line);
                if (!at)
                        FAIL("no '%s' in notify: %s", line, w->notes);
                ASSERT_TRUE(at >= prev);
                prev = at;
        }
        ASSERT_TRUE(strstr(w->notes, "READY=1") > prev);
        ASSERT_CONTAINS(w->notes, "EXTEND_TIMEOUT_USEC=");

        wt_call(w, "GET", "/v1/ready", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);

        wt_stream_open(w, "/v1/inference", "{\"prompt\":\"Once upon a time\",\"max_tokens\":20,\"temperature\":0,\"stream\":true}", &h);
        ASSERT_EQ(h.status, 200);
        ASSERT_TRUE(wt_sse_next(&h, &ev, &data));
        ASSERT_STREQ(ev, "started");
        while (wt_sse_next(&h, &ev, &data)) {
                if (streq(ev, "token")) {
                        tokens++;
                        continue;
                }
                ASSERT_STREQ(ev, "end");
                struct json_object *o = json_tokener_parse(data);
                ASSERT_EQ(wt_jint(o, "tokens_out"), 20);
                json_object_put(o);
        }
        ASSERT_TRUE(tokens > 10);
        wt_http_done(&h);

        kill(w->pid, SIGTERM);
        ASSERT_TRUE(wt_notify_wait(w, "STOPPING=1", 10000 * wt_slow()));
        wt_stop_clean(w);
}

TEST(socket_activation_unix) {
        struct wt_worker w;
        char sock[108];

        need_socket_activate();
        snprintf(sock, sizeof(sock), "%s/activated.sock", harness_tmpdir());
        struct wt_opts o = {
                .prog = SOCKET_ACTIVATE,
                .prefix = ARGS("-l", sock, "-E", "NOTIFY_SOCKET", "-E", "RBEE_WORKER_TEST_LOAD_DELAY_MS", "--"),
                .model = stories(),
                .args = ARGS("--threads", "1"),
                .env = ARGS("RBEE_WORKER_TEST_LOAD_DELAY_MS=60"),
                .no_wait = true,
        };
        wt_spawn(&w, &o);
        snprintf(w.sock, sizeof(w.sock), "%s", sock);
        wait_for_file(sock, 10000);
        /* Nothing is loaded before the first connection. */
        ASSERT_FALSE(wt_notify_wait(&w, "READY=1", 100));
        check_activated_worker(&w);
}

TEST(socket_activation_tcp) {
        struct wt_worker w;

        need_socket_activate();
        /* Our own listening socket as fd 3: systemd-socket-activate passes
         * it on, so there is no race for a port. */
        struct wt_opts o = {
                .prog = SOCKET_ACTIVATE,
                .prefix = ARGS("-E", "NOTIFY_SOCKET", "-E", "RBEE_WORKER_TEST_LOAD_DELAY_MS", "--"),
                .model = stories(),
                .args = ARGS("--threads", "1"),
                .env = ARGS("RBEE_WORKER_TEST_LOAD_DELAY_MS=60"),
                .tcp = true,
                .no_wait = true,
        };
        wt_spawn(&w, &o);
        ASSERT_FALSE(wt_notify_wait(&w, "READY=1", 100));
        check_activated_worker(&w);
        char *log = wt_read_log(&w);
        ASSERT_CONTAINS(log, "Listening on 127.0.0.1:");
        free(log);
}

TEST(watchdog_withheld_while_wedged) {
        struct wt_worker w;
        struct wt_http h;
        char job[8];

        /* 300 ms watchdog: pings every 100 ms. The first token stalls the
         * inference thread for 2 s without a heartbeat. */
        struct wt_opts o = {
                .model = stories(),
                .args = ARGS("--threads", "1"),
                .env = ARGS("WATCHDOG_USEC=300000", "RBEE_WORKER_TEST_STALL_MS=2000"),
        };
        wt_spawn(&w, &o);
        ASSERT_TRUE(wt_notify_count(&w, "WATCHDOG=1", 500) >= 3);

        double t0 = wt_now_ms();
        wt_stream_open(&w, "/v1/inference", "{\"prompt\":\"Once\",\"max_tokens\":5,\"stream\":true}", &h);
        const char *ev, *data;
        ASSERT_TRUE(wt_sse_next(&h, &ev, &data));
        ASSERT_STREQ(ev, "started");
        (void) job;
        /* Give the stall time to pass the 300 ms threshold, then listen. */
        int early = wt_notify_count(&w, "WATCHDOG=1", (int) (t0 + 550 - wt_now_ms()));
        ASSERT_LE(early, 5);
        int during = wt_notify_count(&w, "WATCHDOG=1", (int) (t0 + 1800 - wt_now_ms()));
        ASSERT_EQ(during, 0);
        /* The stall ends at 2 s: the stream finishes and the pings resume. */
        while (wt_sse_next(&h, &ev, &data))
                ;
        wt_http_done(&h);
        ASSERT_TRUE(wt_notify_count(&w, "WATCHDOG=1", 600) >= 2);

        char *log = wt_read_log(&w);
        ASSERT_CONTAINS(log, "withholding watchdog pings");
        ASSERT_CONTAINS(log, "resuming watchdog pings");
        free(log);
        wt_stop_clean(&w);
}
