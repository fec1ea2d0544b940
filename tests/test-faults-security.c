/* SPDX-License-Identifier: MIT */
/* What SECURITY.md promises, checked against the real daemons: the hive
 * refuses a non-loopback listener without an API key; with a key every
 * endpoint but GET /v1/health wants it, and bodies of unauthenticated
 * requests are never buffered; the key comparison takes the same time
 * wherever the keys differ; request bodies and headers have limits on both
 * daemons; model ids, download references and ids cannot walk out of the
 * state directory; API keys and HF tokens never reach a log, a command line
 * or a job listing; and the systemd units keep their sandbox. */

#include <netinet/in.h>
#include <sys/stat.h>
#include <time.h>

#include "harness.h"
#include "hive/hfserver.h"
#include "hive/htest.h"
#include "strutil.h"

#define KEY "k3y-0123456789abcdef-SECRET"
#define HF_SECRET "secret-token"  /* what tests/hive/hfserver.h wants for the noauth repo */

static double cpu_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (double) ts.tv_sec * 1e9 + (double) ts.tv_nsec;
}

TEST(consttime_compare) {
        static const char a[] = "correct horse battery staple";

        ASSERT_TRUE(str_equal_consttime(a, strlen(a), "correct horse battery staple", strlen(a)));
        ASSERT_FALSE(str_equal_consttime(a, strlen(a), "Correct horse battery staple", strlen(a)));
        ASSERT_FALSE(str_equal_consttime(a, strlen(a), "correct horse battery staplE", strlen(a)));
        ASSERT_FALSE(str_equal_consttime(a, strlen(a), "correct horse battery stapl", strlen(a) - 1));
        ASSERT_FALSE(str_equal_consttime(a, strlen(a), "correct horse battery staple!", strlen(a) + 1));
        ASSERT_FALSE(str_equal_consttime(a, strlen(a), "", 0));
        ASSERT_TRUE(str_equal_consttime("", 0, "", 0));
        /* Not a C string compare: a NUL inside does not end it. */
        ASSERT_FALSE(str_equal_consttime("ab\0c", 4, "ab\0d", 4));

        /* No early exit: a difference in the first byte costs what one in
         * the last byte costs. With 4 MiB keys an early-exit compare would
         * differ by orders of magnitude; the bound leaves room for noise. */
        size_t n = 4u << 20;
        char *x = malloc(n), *y = malloc(n), *z = malloc(n);
        ASSERT_TRUE(x && y && z);
        memset(x, 'k', n);
        memcpy(y, x, n);
        memcpy(z, x, n);
        y[0] = 'j';
        z[n - 1] = 'j';
        double first = 1e30, last = 1e30;
        for (int i = 0; i < 15; i++) {
                double t = cpu_ns();
                ASSERT_FALSE(str_equal_consttime(x, n, y, n));
                first = MIN(first, cpu_ns() - t);
                t = cpu_ns();
                ASSERT_FALSE(str_equal_consttime(x, n, z, n));
                last = MIN(last, cpu_ns() - t);
        }
        if (first * 4 < last || last * 4 < first)
                FAIL("the compare is not constant-time: %.0f ns (first byte differs) vs %.0f ns (last byte)", first, last);
        free(x);
        free(y);
        free(z);
}

/* Run rbee-hive on a listening socket bound to addr (fd 3), or with only
 * the given arguments when fd < 0; return its exit status (it must exit
 * within 10 s) and its output in *ret_log. */
static int hive_exit_status(int fd, const char *const *args, const char *const *env, int timeout_ms, char **ret_log) {
        char *log = wt_strdup_printf("%s/refuse-%d.log", harness_tmpdir(), fd);
        char *state = wt_strdup_printf("%s/refuse-state", harness_tmpdir());
        const char *argv[16] = { harness_build_path("rbee-hive"), "--units=process", "--state-dir", state,
                                 "--runtime-dir", state, "--workerd", wt_workerd() };
        size_t n = 8;
        pid_t pid;

        for (size_t i = 0; args && args[i] && n < 15; i++)
                argv[n++] = args[i];
        argv[n] = NULL;
        fflush(NULL);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                int lf = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                char pidbuf[32];
                if (lf < 0 || dup2(lf, 1) < 0 || dup2(lf, 2) < 0)
                        _exit(127);
                unsetenv("RBEE_API_KEY");
                unsetenv("CREDENTIALS_DIRECTORY");
                unsetenv("NOTIFY_SOCKET");
                if (fd >= 0) {
                        if (dup2(fd, 3) < 0)
                                _exit(127);
                        fcntl(3, F_SETFD, 0);   /* dup2() onto itself keeps O_CLOEXEC */
                        snprintf(pidbuf, sizeof(pidbuf), "%d", (int) getpid());
                        setenv("LISTEN_PID", pidbuf, 1);
                        setenv("LISTEN_FDS", "1", 1);
                } else
                        unsetenv("LISTEN_FDS");
                for (size_t i = 0; env && env[i]; i++)
                        putenv((char *) env[i]);
                execv(argv[0], (char *const *) argv);
                _exit(127);
        }
        struct wt_worker w = { .pid = pid };
        int st = wt_wait_exit(&w, timeout_ms);
        if (st == -1) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
        *ret_log = harness_read_file(log, NULL);
        free(log);
        free(state);
        return st;
}

TEST_TIMEOUT(hive_refuses_public_listener_without_key, 40) {
        struct sockaddr_in any = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
        char *log;
        int st, fd;

        /* --listen on all addresses. */
        st = hive_exit_status(-1, (const char *[]) { "--listen=0.0.0.0:0", NULL }, NULL, 10000, &log);
        ASSERT_TRUE(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
        ASSERT_CONTAINS(log, "without an API key");
        free(log);

        /* A socket on all addresses handed over by the service manager. */
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(bind(fd, (struct sockaddr *) &any, sizeof(any)), 0);
        ASSERT_EQ(listen(fd, 8), 0);
        st = hive_exit_status(fd, NULL, NULL, 10000, &log);
        ASSERT_TRUE(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
        ASSERT_CONTAINS(log, "non-loopback");
        free(log);

        /* With a key the same socket is served: it runs until killed. */
        st = hive_exit_status(fd, (const char *[]) { "--log-level=debug", NULL }, (const char *[]) { "RBEE_API_KEY=" KEY, NULL },
                              4000, &log);
        /* It did not exit on its own: it was serving. */
        ASSERT_EQ(st, -1);
        ASSERT_CONTAINS(log, "API key required");
        ASSERT_TRUE(strstr(log, KEY) == NULL);
        free(log);
        close(fd);
}

TEST_TIMEOUT(worker_refuses_public_socket_and_wants_key_everywhere, 40) {
        struct sockaddr_in any = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
        char *log = wt_strdup_printf("%s/w-refuse.log", harness_tmpdir());
        /* Resolved before the fork: without the shared model the test skips here. */
        const char *model = ht_model();
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pid_t pid;

        /* A socket on all addresses from the service manager, no key: refused. */
        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(bind(fd, (struct sockaddr *) &any, sizeof(any)), 0);
        ASSERT_EQ(listen(fd, 8), 0);
        fflush(NULL);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                int lf = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                char pidbuf[32];
                if (lf < 0 || dup2(lf, 1) < 0 || dup2(lf, 2) < 0 || dup2(fd, 3) < 0)
                        _exit(127);
                fcntl(3, F_SETFD, 0);
                snprintf(pidbuf, sizeof(pidbuf), "%d", (int) getpid());
                setenv("LISTEN_PID", pidbuf, 1);
                setenv("LISTEN_FDS", "1", 1);
                unsetenv("RBEE_API_KEY");
                unsetenv("CREDENTIALS_DIRECTORY");
                unsetenv("NOTIFY_SOCKET");
                execl(wt_workerd(), wt_workerd(), "--model", model, "--threads", "1", (char *) NULL);
                _exit(127);
        }
        close(fd);
        struct wt_worker p = { .pid = pid };
        int st = wt_wait_exit(&p, 10000);
        if (st == -1)
                kill(pid, SIGKILL);
        ASSERT_TRUE(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
        char *text = harness_read_file(log, NULL);
        ASSERT_CONTAINS(text, "without an API key");
        free(text);
        free(log);

        /* With a key, every route but GET /v1/health wants it. */
        static const struct {
                const char *method, *path;
        } routes[] = {
                { "GET", "/v1/ready" },           { "GET", "/metrics" },         { "GET", "/v1/models" },
                { "GET", "/v1/models/x" },        { "POST", "/v1/inference" },   { "DELETE", "/v1/inference/j-1" },
                { "POST", "/v1/cancel" },         { "POST", "/v1/chat/completions" }, { "POST", "/v1/completions" },
                { "GET", "/v1/nothing" },         { "POST", "/v1/health" },
        };
        struct wt_worker w;
        struct wt_response r;
        struct wt_opts o = { .model = ht_model(), .args = (const char *[]) { "--threads", "1", NULL },
                             .env = (const char *[]) { "RBEE_API_KEY=" KEY, NULL }, .tcp = true };
        const char *body = "{\"prompt\":\"x\",\"max_tokens\":1}";
        wt_spawn(&w, &o);
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                wt_call_raw(&w, routes[i].method, routes[i].path, WT_JSON_HEADERS "Authorization: Bearer k3y\r\n", body,
                            strlen(body), &r);
                /* 401 first, for routes and methods that do not exist too: a
                 * client without the key cannot map the API. */
                if (r.status != 401)
                        FAIL("worker %s %s with a wrong key: HTTP %d", routes[i].method, routes[i].path, r.status);
                ASSERT_CONTAINS(r.head, "WWW-Authenticate: Bearer");
                wt_response_done(&r);
        }
        wt_call(&w, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_call_raw(&w, "POST", "/v1/inference", WT_JSON_HEADERS "Authorization: Bearer " KEY "\r\n", body, strlen(body), &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_stop_clean(&w);
}

static long rss_kib(int pid) {
        char path[64], *s, *p;
        long kib = -1;

        snprintf(path, sizeof(path), "/proc/%d/status", pid);
        s = harness_read_file(path, NULL);
        p = strstr(s, "VmRSS:");
        if (p)
                kib = strtol(p + 6, NULL, 10);
        free(s);
        return kib;
}

TEST_TIMEOUT(hive_auth_on_every_endpoint, 60) {
        struct ht_hive h;
        struct wt_response r;
        static const struct {
                const char *method, *path;
        } routes[] = {
                { "GET", "/v1/models" },          { "POST", "/v1/models" },
                { "GET", "/v1/models/stories" },  { "DELETE", "/v1/models/stories" },
                { "POST", "/v1/models/download" }, { "GET", "/v1/workers" },
                { "POST", "/v1/workers" },        { "POST", "/v1/workers/cleanup" },
                { "GET", "/v1/workers/stories" }, { "DELETE", "/v1/workers/stories" },
                { "GET", "/v1/jobs" },            { "POST", "/v1/jobs" },
                { "GET", "/v1/jobs/j-x" },        { "DELETE", "/v1/jobs/j-x" },
                { "GET", "/v1/jobs/j-x/events" }, { "POST", "/v1/inference" },
                { "POST", "/v1/chat/completions" }, { "POST", "/v1/completions" },
                { "GET", "/v1/backends" },        { "GET", "/metrics" },
                { "GET", "/v1/nothing" },         { "PUT", "/v1/models" },
                { "POST", "/v1/health" },
        };
        static const char *const bad[] = {
                NULL,
                "Authorization: Bearer wrong\r\n",
                "Authorization: Bearer k3y-0123456789abcdef-SECREX\r\n",        /* same length, last byte */
                "Authorization: Bearer " KEY "x\r\n",
                "Authorization: Bearer k3y-0123456789abcdef-SECRE\r\n",
                "Authorization: Bearer \r\n",
                "Authorization: Basic " KEY "\r\n",
                "Authorization: " KEY "\r\n",
                "X-Api-Key: " KEY "\r\n",
        };
        const char *body = "{\"model\":\"stories\",\"prompt\":\"x\",\"id\":\"stories\"}";

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, (const char *[]) { "RBEE_API_KEY=" KEY, NULL });
        for (size_t i = 0; i < ELEMENTSOF(routes); i++)
                for (size_t k = 0; k < ELEMENTSOF(bad); k++) {
                        char *hdr = wt_strdup_printf("%s%s", WT_JSON_HEADERS, bad[k] ? bad[k] : "");
                        wt_call_raw(&h.conn, routes[i].method, routes[i].path, hdr, body, strlen(body), &r);
                        if (r.status != 401)
                                FAIL("%s %s with %s: HTTP %d, not 401", routes[i].method, routes[i].path,
                                     bad[k] ? bad[k] : "no key", r.status);
                        ASSERT_CONTAINS(r.head, "WWW-Authenticate: Bearer");
                        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "unauthorized");
                        wt_response_done(&r);
                        free(hdr);
                }
        /* Health answers without a key (for load balancers), and says no more. */
        ht_call(&h, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        /* With the key, each route is past authentication. */
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                if (streq(routes[i].method, "POST") && strstr(routes[i].path, "inference"))
                        continue;       /* would start a worker for an unknown model: 404 anyway */
                wt_call_raw(&h.conn, routes[i].method, routes[i].path,
                            WT_JSON_HEADERS "Authorization: Bearer " KEY "\r\n", "{}", 2, &r);
                ASSERT_NE(r.status, 401);
                wt_response_done(&r);
        }
        wt_call_raw(&h.conn, "GET", "/v1/models", "Authorization: bearer  " KEY "\r\n", NULL, 0, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);

        /* Unauthenticated bodies are not kept: four clients each push 7 MiB
         * without a key and hold the request open; the hive does not grow by
         * their size (it would by 28 MiB if it buffered them). */
        long before = rss_kib(h.pid);
        int fds[4];
        size_t n = 7u << 20;
        char *blob = malloc(n);
        ASSERT_NOT_NULL(blob);
        memset(blob, ' ', n);
        for (int i = 0; i < 4; i++) {
                char head[256];
                fds[i] = wt_connect(&h.conn);
                snprintf(head, sizeof(head),
                         "POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                         n + 1);
                wt_send_all(fds[i], head, strlen(head));
                wt_send_all(fds[i], blob, n);   /* one byte short: the request stays open */
        }
        usleep(300000);
        long during = rss_kib(h.pid);
        if (during - before > 12 * 1024)
                FAIL("the hive buffered unauthenticated bodies: RSS %ld -> %ld KiB", before, during);
        for (int i = 0; i < 4; i++) {
                struct wt_http s;
                wt_send_all(fds[i], "}", 1);
                ASSERT_EQ(wt_http_begin(&s, fds[i], 10000), 0);
                ASSERT_EQ(s.status, 401);
                free(wt_http_body(&s));
                wt_http_done(&s);
        }
        free(blob);
        ht_stop(&h);
}

/* Send raw bytes, return the status of the answer, or 0 when the daemon
 * closed the connection without one. */
static int raw_status(int port, const char *req, size_t len) {
        struct wt_worker c = { .port = port };
        struct wt_http s;
        int fd = wt_connect(&c), st = 0;

        wt_send_all(fd, req, len);
        if (wt_http_begin(&s, fd, 10000) == 0) {
                st = s.status;
                free(wt_http_body(&s));
                wt_http_done(&s);
        } else
                close(fd);
        return st;
}

static void check_header_limits(int port, const char *what) {
        size_t n = 256 * 1024;
        char *req = malloc(n + 256), *p;
        int st;

        /* One huge header line. */
        p = req + sprintf(req, "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ");
        memset(p, 'a', n);
        p += n;
        p += sprintf(p, "\r\n\r\n");
        st = raw_status(port, req, (size_t) (p - req));
        if (st != 431 && st != 413 && st != 400 && st != 0)
                FAIL("%s: a 256 KiB header line got HTTP %d", what, st);
        /* Ten thousand small headers. */
        p = req + sprintf(req, "GET /v1/health HTTP/1.1\r\nHost: x\r\n");
        for (int i = 0; i < 10000 && (size_t) (p - req) < n; i++)
                p += sprintf(p, "X-%d: y\r\n", i);
        p += sprintf(p, "\r\n");
        st = raw_status(port, req, (size_t) (p - req));
        if (st != 431 && st != 413 && st != 400 && st != 0)
                FAIL("%s: 10000 headers got HTTP %d", what, st);
        /* A URL of 64 KiB. */
        p = req + sprintf(req, "GET /v1/models/");
        memset(p, 'm', 65536);
        p += 65536;
        p += sprintf(p, " HTTP/1.1\r\nHost: x\r\n\r\n");
        st = raw_status(port, req, (size_t) (p - req));
        if (st != 414 && st != 431 && st != 413 && st != 400 && st != 404 && st != 0)
                FAIL("%s: a 64 KiB URL got HTTP %d", what, st);
        free(req);
        /* Still serving. */
        st = raw_status(port, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", 36);
        ASSERT_EQ(st, 200);
}

TEST_TIMEOUT(body_and_header_limits, 60) {
        struct ht_hive h;
        struct wt_response r;
        struct wt_worker w;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        /* Body: 8 MiB at most on the hive. */
        size_t n = 9u << 20;
        char *big = malloc(n);
        ASSERT_NOT_NULL(big);
        memset(big, ' ', n);
        big[0] = '{';
        big[n - 1] = '}';
        wt_call_raw(&h.conn, "POST", "/v1/models", WT_JSON_HEADERS, big, n, &r);
        ASSERT_STATUS(r, 413);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "request_too_large");
        wt_response_done(&r);
        check_header_limits(h.port, "hive");
        ht_stop(&h);

        /* The worker: --max-body (default 8 MiB) and the same header limits. */
        wt_start(&w, ht_model(), (const char *[]) { "--threads", "1", NULL }, NULL);
        int fd = wt_connect(&w);
        /* Refused on the Content-Length alone, before any of the body. */
        char head[256];
        snprintf(head, sizeof(head),
                 "POST /v1/inference HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n", n);
        wt_send_all(fd, head, strlen(head));
        struct wt_http s;
        ASSERT_EQ(wt_http_begin(&s, fd, 10000), 0);
        ASSERT_EQ(s.status, 413);
        free(wt_http_body(&s));
        wt_http_done(&s);
        free(big);
        /* The unix-socket worker: use a TCP one for the raw requests. */
        wt_stop_clean(&w);
        struct wt_opts o = { .model = ht_model(), .args = (const char *[]) { "--threads", "1", NULL }, .tcp = true };
        wt_spawn(&w, &o);
        check_header_limits(w.port, "worker");
        wt_stop_clean(&w);
}

TEST_TIMEOUT(ids_and_references_cannot_escape, 60) {
        struct ht_hive h;
        struct wt_response r;
        static const char *const bad_ids[] = {
                "../x", "..", ".", ".hidden", "a/b", "a\\\\b", "/etc/passwd", "a b", "-rf", ":x", "a\\u0000b",
                "a%2fb", "x\\n", "\\u00e9t\\u00e9",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        };
        static const char *const bad_sources[] = {
                "hf:t/../etc", "hf:../x", "hf:t/x/../../y", "hf:t/x:../../etc/passwd.gguf", "hf:t/x:/etc/passwd.gguf",
                "hf:t/x:a/../../b.gguf", "hf:t/x:..", "hf:t/x y", "hf:t/x?y=1", "hf:t/x#frag", "hf:t/x:a%2f..%2fb.gguf",
                "hf:/x", "hf:t/", "file://relative/path", "file://", "http://evil.example/x.gguf", "hf:t/x\\r\\nHost: y",
        };
        char *canary = wt_strdup_printf("%s/canary.gguf", harness_tmpdir());

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, NULL);
        for (size_t i = 0; i < ELEMENTSOF(bad_ids); i++) {
                char *body = wt_strdup_printf("{\"id\":\"%s\",\"path\":\"%s\"}", bad_ids[i], ht_model());
                ht_call(&h, "POST", "/v1/models", body, &r);
                if (r.status != 400)
                        FAIL("register id %s: HTTP %d %s", bad_ids[i], r.status, r.body);
                wt_response_done(&r);
                free(body);
                body = wt_strdup_printf("{\"source\":\"hf:t/good\",\"id\":\"%s\"}", bad_ids[i]);
                ht_call(&h, "POST", "/v1/models/download", body, &r);
                if (r.status != 400)
                        FAIL("download id %s: HTTP %d %s", bad_ids[i], r.status, r.body);
                wt_response_done(&r);
                free(body);
                body = wt_strdup_printf("{\"model\":\"%s\",\"prompt\":\"x\",\"stream\":false}", bad_ids[i]);
                ht_call(&h, "POST", "/v1/inference", body, &r);
                if (r.status != 400 && r.status != 404)
                        FAIL("inference model %s: HTTP %d %s", bad_ids[i], r.status, r.body);
                wt_response_done(&r);
                free(body);
                body = wt_strdup_printf("{\"model\":\"%s\"}", bad_ids[i]);
                ht_call(&h, "POST", "/v1/workers", body, &r);
                if (r.status != 400 && r.status != 404)
                        FAIL("spawn model %s: HTTP %d %s", bad_ids[i], r.status, r.body);
                wt_response_done(&r);
                free(body);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad_sources); i++) {
                char *body = wt_strdup_printf("{\"source\":\"%s\",\"id\":\"ok\"}", bad_sources[i]);
                ht_call(&h, "POST", "/v1/models/download", body, &r);
                if (r.status != 400)
                        FAIL("download source %s: HTTP %d %s", bad_sources[i], r.status, r.body);
                ASSERT_STREQ(wt_jstr(r.json, "error.code"), "invalid_reference");
                wt_response_done(&r);
                free(body);
        }
        /* Traversal in the URL reaches no file: ids in paths are looked up, never opened. */
        static const char *const paths[] = {
                "/v1/models/..%2F..%2F..%2Fetc%2Fpasswd", "/v1/models/../../etc/passwd", "/v1/workers/..%2Fnotify",
                "/v1/jobs/..%2F..%2Fx/events", "/v1/models/%2e%2e",
        };
        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                ht_call(&h, "GET", paths[i], NULL, &r);
                if (r.status != 404 && r.status != 400)
                        FAIL("GET %s: HTTP %d %s", paths[i], r.status, r.body);
                wt_response_done(&r);
                ht_call(&h, "DELETE", paths[i], NULL, &r);
                if (r.status != 404 && r.status != 400 && r.status != 405)
                        FAIL("DELETE %s: HTTP %d %s", paths[i], r.status, r.body);
                wt_response_done(&r);
        }
        /* DELETE of a registered (not managed) model never removes its file,
         * even reached through a symlink. */
        ASSERT_EQ(symlink(ht_model(), canary), 0);
        ht_register(&h, "canary", canary);
        ht_call(&h, "DELETE", "/v1/models/canary", NULL, &r);
        ASSERT_STATUS(r, 200);
        ASSERT_FALSE(json_object_get_boolean(wt_jget(r.json, "file_removed")));
        wt_response_done(&r);
        ASSERT_EQ(access(canary, F_OK), 0);
        ASSERT_EQ(access(ht_model(), F_OK), 0);
        ht_stop(&h);
        free(canary);
}

static void assert_no_secret(const char *what, const char *text) {
        static const char *const secrets[] = { KEY, HF_SECRET, "WRONG-SECRET-4711" };

        for (size_t i = 0; i < ELEMENTSOF(secrets); i++)
                if (text && strstr(text, secrets[i]))
                        FAIL("%s holds the secret %s", what, secrets[i]);
}

static char *read_proc(int pid, const char *file, size_t *ret_len) {
        char *p = wt_strdup_printf("/proc/%d/%s", pid, file);
        char *s = harness_read_file(p, ret_len);
        free(p);
        return s;
}

TEST_TIMEOUT(no_secrets_in_logs, 60) {
        struct ht_hive h;
        struct hf_server srv;
        struct wt_response r;
        struct wt_http s;
        const char *ev, *data;
        char *ep;

        hf_start(&srv, ht_model());
        ep = wt_strdup_printf("--hf-endpoint=http://127.0.0.1:%d", srv.port);
        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", ep, NULL },
                 (const char *[]) { "RBEE_API_KEY=" KEY, "HF_TOKEN=" HF_SECRET, NULL });
        /* Wrong keys are not logged either. */
        wt_call_raw(&h.conn, "GET", "/v1/models", "Authorization: Bearer WRONG-SECRET-4711\r\n", NULL, 0, &r);
        ASSERT_STATUS(r, 401);
        wt_response_done(&r);
        /* A download that needs the token, followed to the end. */
        const char *dl = "{\"source\":\"hf:t/noauth\",\"id\":\"gated\"}";
        wt_call_raw(&h.conn, "POST", "/v1/models/download", WT_JSON_HEADERS "Authorization: Bearer " KEY "\r\n", dl,
                    strlen(dl), &r);
        ASSERT_STATUS(r, 202);
        char *events = strdup(wt_jstr(r.json, "events_url"));
        wt_response_done(&r);
        int fd = wt_connect(&h.conn);
        wt_send_request(fd, "GET", events, "Authorization: Bearer " KEY "\r\n", NULL, 0);
        ASSERT_EQ(wt_http_begin(&s, fd, 20000), 0);
        char last[64] = "";
        while (wt_sse_next(&s, &ev, &data)) {
                assert_no_secret("a download event", data);
                snprintf(last, sizeof(last), "%s", ev);
        }
        wt_http_done(&s);
        ASSERT_STREQ(last, "end");
        /* The token went to the server, so it was really used. */
        char *hflog = harness_read_file(srv.log, NULL);
        ASSERT_CONTAINS(hflog, "auth=1");
        free(hflog);
        /* An inference starts a worker. */
        const char *inf = "{\"model\":\"gated\",\"prompt\":\"hi\",\"max_tokens\":2,\"stream\":false}";
        wt_call_raw(&h.conn, "POST", "/v1/inference", WT_JSON_HEADERS "Authorization: Bearer " KEY "\r\n", inf,
                    strlen(inf), &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_call_raw(&h.conn, "GET", "/v1/jobs", "Authorization: Bearer " KEY "\r\n", NULL, 0, &r);
        ASSERT_STATUS(r, 200);
        assert_no_secret("GET /v1/jobs", r.body);
        wt_response_done(&r);
        wt_call_raw(&h.conn, "GET", "/v1/workers/gated", "Authorization: Bearer " KEY "\r\n", NULL, 0, &r);
        ASSERT_STATUS(r, 200);
        int wpid = (int) wt_jint(r.json, "pid");
        char *wlog_path = strdup(wt_jstr(r.json, "log"));
        wt_response_done(&r);
        ASSERT_GE(wpid, 1);

        /* Command lines are world-readable. */
        size_t len;
        char *cmd = read_proc(h.pid, "cmdline", &len);
        for (size_t i = 0; i + 1 < len; i++)
                if (!cmd[i])
                        cmd[i] = ' ';
        assert_no_secret("the hive's command line", cmd);
        free(cmd);
        cmd = read_proc(wpid, "cmdline", &len);
        for (size_t i = 0; i + 1 < len; i++)
                if (!cmd[i])
                        cmd[i] = ' ';
        assert_no_secret("the worker's command line", cmd);
        free(cmd);
        /* The worker never needs the API key (its socket is private). */
        char *env = read_proc(wpid, "environ", &len);
        for (size_t i = 0; i + 1 < len; i++)
                if (!env[i])
                        env[i] = '\n';
        ASSERT_TRUE(strstr(env, KEY) == NULL);
        free(env);

        ht_stop(&h);
        char *log = harness_read_file(h.log, NULL);
        ASSERT_CONTAINS(log, "gated");          /* debug logging was on and said things */
        assert_no_secret("the hive log", log);
        free(log);
        log = harness_read_file(wlog_path, NULL);
        assert_no_secret("the worker log", log);
        free(log);
        hf_stop(&srv);
        free(events);
        free(wlog_path);
        free(ep);
}

/* The HF token goes to the configured endpoint only: a redirect to another
 * host (HuggingFace sends downloads to its CDN) does not carry it. */
TEST_TIMEOUT(hf_token_not_sent_to_other_hosts, 30) {
        struct ht_hive h;
        struct hf_server srv;
        struct wt_response r;
        char *ep;

        hf_start(&srv, ht_model());
        ep = wt_strdup_printf("--hf-endpoint=http://127.0.0.1:%d", srv.port);
        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", ep, NULL },
                 (const char *[]) { "HF_TOKEN=" HF_SECRET, NULL });
        ht_call(&h, "POST", "/v1/models/download", "{\"source\":\"hf:t/xhost\",\"id\":\"x1\"}", &r);
        ASSERT_STATUS(r, 202);
        wt_response_done(&r);
        ASSERT_TRUE(ht_wait_model(&h, "x1", 20000));
        char *log = harness_read_file(srv.log, NULL);
        ASSERT_CONTAINS(log, "GET /api/models/t/xhost/tree/main range=0 auth=1");
        ASSERT_CONTAINS(log, "GET /t/xhost/resolve/main/model-Q8_0.gguf range=0 auth=1");
        ASSERT_CONTAINS(log, "GET /cdn/xhost/model-Q8_0.gguf range=0 auth=0");
        ASSERT_TRUE(strstr(log, "/cdn/xhost/model-Q8_0.gguf range=0 auth=1") == NULL);
        free(log);
        ht_stop(&h);
        hf_stop(&srv);
        free(ep);
}

TEST_TIMEOUT(worker_environment_has_no_hf_token, 30) {
        struct ht_hive h;
        struct wt_response r;
        size_t len;

        ht_start(&h, NULL, (const char *[]) { "--stop-workers-on-exit", NULL }, (const char *[]) { "HF_TOKEN=" HF_SECRET, NULL });
        ht_register(&h, "stories", ht_model());
        ht_call(&h, "POST", "/v1/workers", "{\"model\":\"stories\"}", &r);
        ASSERT_STATUS(r, 201);
        int wpid = (int) wt_jint(r.json, "pid");
        wt_response_done(&r);
        char *env = read_proc(wpid, "environ", &len);
        for (size_t i = 0; i + 1 < len; i++)
                if (!env[i])
                        env[i] = '\n';
        bool leaked = strstr(env, HF_SECRET) != NULL;
        free(env);
        ht_stop(&h);
        ASSERT_FALSE(leaked);
}

/* The sandbox of the units (issue: packaging): the directives that make
 * the promises of SECURITY.md hold under systemd. */
TEST(units_keep_their_sandbox) {
        static const char *const common[] = {
                "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "PrivateTmp=yes", "PrivateDevices=yes",
                "ProtectSystem=strict", "ProtectHome=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                "ProtectControlGroups=yes", "RestrictNamespaces=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes",
                "MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service", "UMask=0077", "User=rbee",
        };
        char *hive = harness_read_file(RBEE_SRCDIR "/units/rbee-hive.service", NULL);
        char *worker = harness_read_file(RBEE_SRCDIR "/units/rbee-worker@.service", NULL);

        for (size_t i = 0; i < ELEMENTSOF(common); i++) {
                if (!strstr(hive, common[i]))
                        FAIL("rbee-hive.service lacks %s", common[i]);
                if (!strstr(worker, common[i]))
                        FAIL("rbee-worker@.service lacks %s", common[i]);
        }
        /* Workers have no network at all: the hive talks to them over unix sockets. */
        ASSERT_CONTAINS(worker, "PrivateNetwork=yes");
        ASSERT_CONTAINS(worker, "RestrictAddressFamilies=AF_UNIX\n");
        ASSERT_CONTAINS(worker, "IPAddressDeny=any");
        /* The hive gets its key as a credential, not in its environment. */
        ASSERT_CONTAINS(hive, "LoadCredential=rbee-api-key");
        ASSERT_TRUE(strstr(hive, "RBEE_API_KEY=") == NULL);
        free(hive);
        free(worker);
}
