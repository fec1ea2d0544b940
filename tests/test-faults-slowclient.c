/* SPDX-License-Identifier: MIT */
/* Slow clients (slowloris) against the real daemons, and what the guard of
 * common/http-guard.c promises in SECURITY.md: connections that trickle
 * their request headers or body are cut at the deadline (here a short one,
 * set by --header-timeout/--body-timeout) while a normal client is served at
 * once; a stream that is quiet AFTER its request arrived is never cut by
 * those deadlines; one address holds at most --max-conns-per-peer
 * connections (loopback only with --cap-local-peers, so the test can reach
 * it); each kind of trouble is logged once per peer, not per connection;
 * and the worker answers 401 before 404/405 when it has a key. */

#include <poll.h>

#include "harness.h"
#include "hive/hfserver.h"
#include "hive/htest.h"
#include "strutil.h"

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })
#define KEY "k3y-slowclient-0123456789abcdef"

/* --header-timeout and --body-timeout in the attack tests. */
#define DEADLINE_MS 1000
/* Attackers send a byte this often: they are never idle. */
#define TICK_MS 200

struct slow {
        int fd;
        double start_ms;                /* when its deadline began: connect, or the end of its headers */
        double closed_ms;               /* 0 while open */
        bool body;
};

static unsigned count_str(const char *hay, const char *needle) {
        unsigned n = 0;

        for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

/* Has the server closed (or reset) fd? Drains whatever it sent first. */
static bool closed_by_server(int fd) {
        char b[4096];

        for (;;) {
                ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
                if (n > 0)
                        continue;
                if (n == 0)
                        return true;
                if (errno == EINTR)
                        continue;
                return errno != EAGAIN && errno != EWOULDBLOCK;
        }
}

/* n_head connections trickle header bytes of a GET, n_body trickle the body
 * of a POST to body_path; each must be closed by the server within the
 * deadline (plus slack), not before it. Halfway through, a normal request
 * must be answered at once. */
static void dump_log(const char *path) {
        char *s = harness_read_file(path, NULL);
        size_t n = strlen(s);

        fprintf(stderr, "  --- daemon log ---\n%s\n", n > 8000 ? s + n - 8000 : s);
        free(s);
}

static void attack(const struct wt_worker *conn, const char *log, const char *body_path, size_t n_head, size_t n_body) {
        static const char get_head[] = "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        struct slow s[64];
        struct pollfd p[64];
        size_t n = n_head + n_body, left = n;
        double t0, next_tick, slack = 1500.0 * wt_slow();
        bool checked = false;

        ASSERT_TRUE(n <= ELEMENTSOF(s));
        /* Each clock starts before the server's can (connect, or sending the
         * headers): a test process descheduled in between must not make a
         * cut look early. */
        for (size_t i = 0; i < n; i++) {
                s[i] = (struct slow) { .start_ms = wt_now_ms(), .body = i >= n_head };
                s[i].fd = wt_connect(conn);
                if (s[i].body) {
                        char *head = wt_strdup_printf("POST %s HTTP/1.1\r\nHost: x\r\n"
                                                      "Content-Type: application/json\r\n"
                                                      "Content-Length: 100000\r\n\r\n{",
                                                      body_path);
                        s[i].start_ms = wt_now_ms();
                        wt_send_all(s[i].fd, head, strlen(head));
                        free(head);
                } else
                        wt_send_all(s[i].fd, get_head, strlen(get_head));
        }
        t0 = next_tick = wt_now_ms();
        while (left > 0) {
                double now = wt_now_ms();
                size_t k = 0;

                if (now >= next_tick) {
                        for (size_t i = 0; i < n; i++)
                                if (!s[i].closed_ms &&
                                    send(s[i].fd, s[i].body ? " " : "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
                                    (errno == EPIPE || errno == ECONNRESET)) {
                                        s[i].closed_ms = now;
                                        left--;
                                }
                        next_tick += TICK_MS;
                }
                if (!checked && now - t0 >= DEADLINE_MS / 2) {
                        struct wt_response r;
                        double t = wt_now_ms();

                        wt_call(conn, "GET", "/v1/health", NULL, &r);
                        ASSERT_STATUS(r, 200);
                        wt_response_done(&r);
                        if (wt_now_ms() - t > 500.0 * wt_slow())
                                FAIL("a normal request took %.0f ms during the attack", wt_now_ms() - t);
                        checked = true;
                }
                if (now - t0 > DEADLINE_MS + slack) {
                        dump_log(log);
                        FAIL("%zu of %zu slow connections still open after %.0f ms", left, n, now - t0);
                }
                for (size_t i = 0; i < n; i++)
                        if (!s[i].closed_ms)
                                p[k++] = (struct pollfd) { .fd = s[i].fd, .events = POLLIN | POLLRDHUP };
                if (poll(p, k, (int) MAX(1.0, next_tick - wt_now_ms())) <= 0)
                        continue;
                for (size_t j = 0; j < k; j++) {
                        if (!p[j].revents || !closed_by_server(p[j].fd))
                                continue;
                        for (size_t i = 0; i < n; i++)
                                if (s[i].fd == p[j].fd) {
                                        s[i].closed_ms = wt_now_ms();
                                        left--;
                                }
                }
        }
        ASSERT_TRUE(checked);
        for (size_t i = 0; i < n; i++) {
                double held = s[i].closed_ms - s[i].start_ms;

                if (held < DEADLINE_MS - 20 || held > DEADLINE_MS + slack) {
                        dump_log(log);
                        FAIL("a connection trickling its %s was closed after %.0f ms (deadline %d ms)",
                             s[i].body ? "body" : "headers", held, DEADLINE_MS);
                }
                close(s[i].fd);
        }
}

TEST_TIMEOUT(hive_cuts_slow_headers_and_bodies, 30) {
        struct ht_hive h;
        struct wt_response r;

        ht_start(&h, NULL, ARGS("--header-timeout=1s", "--body-timeout=1s"), NULL);
        attack(&h.conn, h.log, "/v1/models", 12, 4);
        /* Sixteen cuts, one line: the warning is per peer, not per connection. */
        char *log = harness_read_file(h.log, NULL);
        ASSERT_EQ(count_str(log, "Closed a connection from 127.0.0.1 that did not send"), 1);
        free(log);
        ht_call(&h, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        ht_stop(&h);
}

TEST_TIMEOUT(worker_cuts_slow_headers_and_bodies, 30) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_opts o = { .model = wt_tiny_model(NULL), .tcp = true,
                             .args = ARGS("--threads", "1", "--header-timeout", "1s", "--body-timeout", "1s") };

        wt_spawn(&w, &o);
        attack(&w, w.log, "/v1/inference", 12, 4);
        char *log = wt_read_log(&w);
        ASSERT_EQ(count_str(log, "Closed a connection from 127.0.0.1 that did not send"), 1);
        free(log);
        wt_call(&w, "GET", "/metrics", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_CONTAINS(r.body, "\nrbee_worker_slow_requests_total 16\n");
        wt_response_done(&r);
        wt_stop_clean(&w);
}

/* The stream must stay open for ms although nothing (or little) comes: read
 * what comes, fail on EOF, or on an event named noisy (it was not quiet). */
static void expect_open_for(struct wt_http *s, double ms, const char *what, const char *noisy) {
        double t0 = wt_now_ms(), until = t0 + ms;

        for (double now = t0; now < until; now = wt_now_ms()) {
                struct pollfd p = { .fd = s->fd, .events = POLLIN | POLLRDHUP };
                const char *ev, *data;

                if (poll(&p, 1, (int) MAX(1.0, until - now)) <= 0)
                        continue;
                if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
                        FAIL("%s was closed after %.0f ms of quiet", what, wt_now_ms() - t0);
                ASSERT_TRUE(wt_sse_next(s, &ev, &data));
                if (noisy && streq(ev, noisy))
                        FAIL("%s was not quiet: a '%s' event came", what, ev);
        }
}

TEST_TIMEOUT(hive_quiet_event_stream_is_not_cut, 30) {
        struct hf_server srv;
        struct ht_hive h;
        struct wt_response r, d;
        struct wt_http s;
        const char *ev, *data;
        char *ep, *del;
        bool terminal = false;

        hf_start(&srv, wt_tiny_model(NULL));
        ep = wt_strdup_printf("--hf-endpoint=http://127.0.0.1:%d", srv.port);
        /* The "hang" repo sends the file's headers, then nothing: the job's
         * event stream goes quiet until --download-stall, far away. */
        ht_start(&h, NULL, ARGS(ep, "--header-timeout=500ms", "--body-timeout=500ms", "--download-stall=60s"), NULL);
        ht_call(&h, "POST", "/v1/models/download", "{\"source\":\"hf:t/hang\",\"id\":\"quiet\"}", &r);
        ASSERT_STATUS(r, 202);
        int fd = wt_connect(&h.conn);
        wt_send_request(fd, "GET", wt_jstr(r.json, "events_url"), NULL, NULL, 0);
        ASSERT_EQ(wt_http_begin(&s, fd, 5000 * wt_slow()), 0);
        ASSERT_EQ(s.status, 200);
        /* The transfer's first progress event (0 bytes); after it, silence. */
        do
                ASSERT_TRUE(wt_sse_next(&s, &ev, &data));
        while (!streq(ev, "progress"));
        expect_open_for(&s, 3000, "a job's event stream", "progress");
        /* Still a working stream: cancelling the job ends it with its terminal event. */
        del = wt_strdup_printf("/v1/jobs/%s", wt_jstr(r.json, "job_id"));
        ht_call(&h, "DELETE", del, NULL, &d);
        ASSERT_STATUS(d, 200);
        wt_response_done(&d);
        while (wt_sse_next(&s, &ev, &data))
                terminal = streq(ev, "end") || streq(ev, "error");
        ASSERT_TRUE(terminal);
        wt_http_done(&s);
        wt_response_done(&r);
        free(del);
        free(ep);
        ht_stop(&h);
        hf_stop(&srv);
}

TEST_TIMEOUT(worker_quiet_queued_stream_is_not_cut, 40) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_http a, b;
        const char *ev, *data;
        unsigned tokens = 0;
        bool end = false;
        /* One slot, taken by a long generation (25 ms per token): the second
         * request waits in the queue, its stream open and quiet. */
        struct wt_opts o = { .model = wt_tiny_model("--ctx 1024"), .tcp = true,
                             .args = ARGS("--threads", "1", "--parallel", "1", "--max-queue", "2",
                                          "--header-timeout", "500ms", "--body-timeout", "500ms"),
                             .env = ARGS("RBEE_WORKER_TEST_TOKEN_DELAY_MS=25") };

        wt_spawn(&w, &o);
        wt_stream_open(&w, "/v1/inference",
                       "{\"prompt\":\"Once\",\"max_tokens\":900,\"ignore_eos\":true,\"stream\":true,"
                       "\"job_id\":\"busy\"}",
                       &a);
        ASSERT_EQ(a.status, 200);
        ASSERT_TRUE(wt_sse_next(&a, &ev, &data));
        ASSERT_STREQ(ev, "started");
        wt_stream_open(&w, "/v1/inference",
                       "{\"prompt\":\"Once\",\"max_tokens\":3,\"stream\":true,\"job_id\":\"quiet\"}", &b);
        ASSERT_EQ(b.status, 200);
        expect_open_for(&b, 3000, "a queued stream", "token");
        wt_call(&w, "POST", "/v1/cancel", "{\"job_id\":\"busy\"}", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        while (wt_sse_next(&b, &ev, &data))
                if (streq(ev, "end")) {
                        struct json_object *e = json_tokener_parse(data);
                        ASSERT_NOT_NULL(e);
                        tokens = (unsigned) wt_jint(e, "tokens_out");
                        json_object_put(e);
                        end = true;
                }
        ASSERT_TRUE(end);
        ASSERT_EQ(tokens, 3);
        wt_http_done(&a);
        wt_http_done(&b);
        wt_stop_clean(&w);
}

/* A connection refused at accept: closed without an answer. */
static bool refused(const struct wt_worker *conn) {
        struct wt_http s;
        int fd = wt_connect(conn);
        bool r;

        wt_send_request(fd, "GET", "/v1/health", NULL, NULL, 0);
        r = wt_http_begin(&s, fd, 5000 * wt_slow()) < 0;
        wt_http_done(&s);
        return r;
}

/* GET path as soon as the peer has a free slot again: the daemon frees one
 * when it has cleaned up a connection the client closed, a moment later. */
static void get_when_a_slot_frees(const struct wt_worker *conn, const char *path, struct wt_response *ret) {
        double until = wt_now_ms() + 3000.0 * wt_slow();

        for (;;) {
                struct wt_http s;
                int fd = wt_connect(conn);

                wt_send_request(fd, "GET", path, NULL, NULL, 0);
                if (wt_http_begin(&s, fd, 5000 * wt_slow()) == 0) {
                        memset(ret, 0, sizeof(*ret));
                        ret->status = s.status;
                        ret->body = wt_http_body(&s);
                        wt_http_done(&s);
                        return;
                }
                wt_http_done(&s);
                if (wt_now_ms() > until)
                        FAIL("no slot freed after connections of the peer closed");
                usleep(20000);
        }
}

/* conn's daemon runs with --max-conns-per-peer=3 --cap-local-peers. */
static void check_cap(const struct wt_worker *conn, const char *log_path) {
        struct wt_response r;
        int held[3];

        for (size_t i = 0; i < ELEMENTSOF(held); i++)
                held[i] = wt_connect(conn);
        /* The fourth and later connections from the address are closed unanswered. */
        for (int i = 0; i < 3; i++)
                if (!refused(conn))
                        FAIL("connection %d from the same address was served past the cap of 3", 4 + i);
        /* A slot frees as soon as the daemon has closed one of the three. */
        close(held[0]);
        get_when_a_slot_frees(conn, "/v1/health", &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        close(held[1]);
        close(held[2]);
        char *log = harness_read_file(log_path, NULL);
        ASSERT_EQ(count_str(log, "Refusing connections from 127.0.0.1"), 1);
        free(log);
}

TEST_TIMEOUT(hive_caps_connections_per_peer, 30) {
        struct ht_hive h;
        struct wt_http s[4];

        ht_start(&h, NULL, ARGS("--max-conns-per-peer=3", "--cap-local-peers", "--header-timeout=5s"), NULL);
        check_cap(&h.conn, h.log);
        ht_stop(&h);

        /* Without --cap-local-peers, loopback clients are not capped. */
        ht_start(&h, NULL, ARGS("--max-conns-per-peer=2"), NULL);
        for (size_t i = 0; i < ELEMENTSOF(s); i++)
                s[i].fd = wt_connect(&h.conn);
        for (size_t i = 0; i < ELEMENTSOF(s); i++) {
                wt_send_request(s[i].fd, "GET", "/v1/health", NULL, NULL, 0);
                ASSERT_EQ(wt_http_begin(&s[i], s[i].fd, 5000 * wt_slow()), 0);
                ASSERT_EQ(s[i].status, 200);
        }
        for (size_t i = 0; i < ELEMENTSOF(s); i++)
                wt_http_done(&s[i]);
        ht_stop(&h);
}

TEST_TIMEOUT(worker_caps_connections_per_peer, 30) {
        struct wt_worker w;
        struct wt_response r;
        struct wt_opts o = { .model = wt_tiny_model(NULL), .tcp = true,
                             .args = ARGS("--threads", "1", "--max-conns-per-peer", "3", "--cap-local-peers",
                                          "--header-timeout", "5s") };

        wt_spawn(&w, &o);
        check_cap(&w, w.log);
        get_when_a_slot_frees(&w, "/metrics", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_TRUE(strstr(r.body, "\nrbee_worker_connections_refused_total ") != NULL);
        ASSERT_GE(atoi(strstr(r.body, "\nrbee_worker_connections_refused_total ") + 39), 3);
        wt_response_done(&r);
        wt_stop_clean(&w);
}

TEST_TIMEOUT(worker_answers_401_before_404_and_405, 30) {
        static const struct {
                const char *method, *path;
                int with_key;                   /* the answer once authenticated */
        } probes[] = {
                { "GET", "/v1/nothing", 404 },          { "GET", "/v2/models", 404 },
                { "POST", "/v1/models/a/b", 404 },      { "GET", "/v1/inference/j-1/x", 404 },
                { "POST", "/v1/health", 405 },          { "GET", "/v1/inference", 405 },
                { "PUT", "/v1/models", 405 },           { "DELETE", "/v1/cancel", 405 },
                { "GET", "/v1/chat/completions", 405 },
        };
        static const char *const no_key[] = { NULL, "Authorization: Bearer wrong\r\n" };
        struct wt_worker w;
        struct wt_response r;
        struct wt_http s;
        struct wt_opts o = { .model = wt_tiny_model(NULL), .tcp = true, .args = ARGS("--threads", "1"),
                             .env = ARGS("RBEE_API_KEY=" KEY) };

        wt_spawn(&w, &o);
        for (size_t i = 0; i < ELEMENTSOF(probes); i++) {
                for (size_t k = 0; k < ELEMENTSOF(no_key); k++) {
                        wt_call_raw(&w, probes[i].method, probes[i].path, no_key[k], NULL, 0, &r);
                        if (r.status != 401)
                                FAIL("%s %s %s: HTTP %d, not 401", probes[i].method, probes[i].path,
                                     no_key[k] ? "with a wrong key" : "without a key", r.status);
                        ASSERT_CONTAINS(r.head, "WWW-Authenticate: Bearer");
                        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "unauthorized");
                        wt_response_done(&r);
                }
                /* Past authentication, the same requests get what they always got. */
                wt_call_raw(&w, probes[i].method, probes[i].path, "Authorization: Bearer " KEY "\r\n", NULL, 0, &r);
                if (r.status != probes[i].with_key)
                        FAIL("%s %s with the key: HTTP %d, not %d", probes[i].method, probes[i].path, r.status,
                             probes[i].with_key);
                wt_response_done(&r);
        }
        /* Health stays open, for load balancers. */
        wt_call(&w, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        /* A body declared too large without a key: 401 at once, nothing drained. */
        int fd = wt_connect(&w);
        static const char big[] = "POST /v1/inference HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  "Content-Length: 1000000000\r\n\r\n";
        wt_send_all(fd, big, strlen(big));
        ASSERT_EQ(wt_http_begin(&s, fd, 5000 * wt_slow()), 0);
        ASSERT_EQ(s.status, 401);
        wt_http_done(&s);
        wt_stop_clean(&w);
}
