/* SPDX-License-Identifier: MIT */
#pragma once

/* A small HTTP server on loopback that speaks the documented hive API
 * (hive/API.md) with scripted misbehaviour, for the CLI's error paths that a
 * healthy hive cannot produce on demand: a wrong API version, a server that
 * is not a hive, 503 with Retry-After, malformed or cut event streams, a
 * stall, a worker that dies mid-stream, a bearer key check. It runs in a
 * forked child with a thread per connection and logs one line per request
 * ("METHOD PATH auth=0|1") to a file the test reads. */

#include <pthread.h>

#include "ktest.h"

enum kt_fake_mode {
        KT_FAKE_OK,                     /* a well-behaved hive with one model */
        KT_FAKE_API2,                   /* health says api_version 2 */
        KT_FAKE_NOT_HIVE,               /* health is a 404 web page */
        KT_FAKE_BUSY_ONCE,              /* the first inference gets 503 Retry-After: 1 */
        KT_FAKE_BUSY_ALWAYS,            /* every inference gets 503 Retry-After: 0 */
        KT_FAKE_BAD_EVENT,              /* a token event whose data is not JSON */
        KT_FAKE_CUT_STREAM,             /* the stream ends without a terminal event */
        KT_FAKE_STALL,                  /* one token, then silence */
        KT_FAKE_WORKER_DIED,            /* two tokens, then error worker_died */
        KT_FAKE_AUTH,                   /* everything but health needs "Bearer sekrit" */
        KT_FAKE_BAD_JSON,               /* GET /v1/models answers 200 with broken JSON */
        KT_FAKE_SLOW_CANCEL,            /* tokens for 10 s; a cancel takes 5 s to answer */
        KT_FAKE_CONTROL,                /* tokens carry C0 and C1 terminal controls */
};

struct kt_fake {
        pid_t pid;
        int port;
        char url[64];
        char log[PATH_MAX];
};

static struct {
        enum kt_fake_mode mode;
        int log_fd;
        int inference_count;
        volatile bool cancelled;        /* a DELETE /v1/jobs/... came */
        pthread_mutex_t lock;
} kt_fk;

static void kt_fk_send(int fd, const char *s, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
                if (k <= 0)
                        return;
                s += k;
                n -= (size_t) k;
        }
}

static void kt_fk_reply(int fd, int status, const char *extra, const char *ctype, const char *body) {
        char *head = kt_printf("HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
                               status, ctype, strlen(body), extra ? extra : "");
        kt_fk_send(fd, head, strlen(head));
        kt_fk_send(fd, body, strlen(body));
        free(head);
}

static void kt_fk_json(int fd, int status, const char *body) {
        kt_fk_reply(fd, status, NULL, "application/json", body);
}

static void kt_fk_event(int fd, const char *name, const char *data) {
        char *s = kt_printf("event: %s\ndata: %s\n\n", name, data);
        kt_fk_send(fd, s, strlen(s));
        free(s);
}

static void kt_fk_stream_head(int fd) {
        static const char h[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                                "Connection: close\r\n\r\n";
        kt_fk_send(fd, h, sizeof(h) - 1);
}

static void kt_fk_inference(int fd) {
        int n;

        pthread_mutex_lock(&kt_fk.lock);
        n = kt_fk.inference_count++;
        pthread_mutex_unlock(&kt_fk.lock);

        if ((kt_fk.mode == KT_FAKE_BUSY_ONCE && n == 0) || kt_fk.mode == KT_FAKE_BUSY_ALWAYS)
                return kt_fk_reply(fd, 503, kt_fk.mode == KT_FAKE_BUSY_ONCE ? "Retry-After: 1\r\n" : "Retry-After: 0\r\n",
                                   "application/json",
                                   "{\"error\":{\"code\":\"overloaded\",\"message\":\"model 'm' is busy: 5 requests "
                                   "running or queued (limit 5)\",\"type\":\"server_error\"}}");
        kt_fk_stream_head(fd);
        kt_fk_event(fd, "started", "{\"job_id\":\"j-fake1\",\"model\":\"m\",\"prompt_tokens\":3,\"queue_ms\":0.1}");
        switch (kt_fk.mode) {
        case KT_FAKE_BAD_EVENT:
                kt_fk_event(fd, "token", "{\"text\":\"Once\",\"index\":0}");
                kt_fk_event(fd, "token", "{\"text\": oops");
                sleep(5);
                return;
        case KT_FAKE_CUT_STREAM:
                kt_fk_event(fd, "token", "{\"text\":\"Once\",\"index\":0}");
                return;
        case KT_FAKE_STALL:
                kt_fk_event(fd, "token", "{\"text\":\"Once\",\"index\":0}");
                /* Keep-alive comments are not tokens: the stall clock must not reset. */
                for (int i = 0; i < 40 && !kt_fk.cancelled; i++) {
                        kt_fk_send(fd, ": ping\n\n", 8);
                        usleep(125000);
                }
                if (kt_fk.cancelled)
                        kt_fk_event(fd, "error", "{\"job_id\":\"j-fake1\",\"code\":\"cancelled\",\"message\":\"the job "
                                                 "was cancelled\",\"status\":499,\"tokens_out\":1}");
                return;
        case KT_FAKE_SLOW_CANCEL:
                for (int i = 0; i < 100; i++) {
                        char *d = kt_printf("{\"text\":\" tok%d\",\"index\":%d}", i, i);
                        kt_fk_event(fd, "token", d);
                        free(d);
                        usleep(100000);
                }
                return;
        case KT_FAKE_CONTROL:
                kt_fk_event(fd, "token", "{\"text\":\"a\\u001b[2Jb\",\"index\":0}");
                kt_fk_event(fd, "token", "{\"text\":\"c\\u009b31md \\u00e9\\n\",\"index\":1}");
                kt_fk_event(fd, "end", "{\"job_id\":\"j-fake1\",\"stop_reason\":\"length\",\"finish_reason\":\"length\","
                                       "\"tokens_in\":3,\"tokens_out\":2,\"cached_tokens\":0,\"queue_ms\":0.1,"
                                       "\"prompt_ms\":1.0,\"gen_ms\":2.0,\"tokens_per_second\":1500.0}");
                return;
        case KT_FAKE_WORKER_DIED:
                kt_fk_event(fd, "token", "{\"text\":\"Once\",\"index\":0}");
                kt_fk_event(fd, "token", "{\"text\":\" upon\",\"index\":1}");
                kt_fk_event(fd, "error", "{\"job_id\":\"j-fake1\",\"code\":\"worker_died\",\"message\":\"the worker "
                                         "exited with signal 9\",\"status\":502,\"tokens_out\":2}");
                return;
        default:
                kt_fk_event(fd, "token", "{\"text\":\"Once\",\"index\":0}");
                kt_fk_event(fd, "token", "{\"text\":\" upon\",\"index\":1}");
                kt_fk_event(fd, "token", "{\"text\":\" a time\",\"index\":2}");
                kt_fk_event(fd, "end", "{\"job_id\":\"j-fake1\",\"stop_reason\":\"length\",\"finish_reason\":\"length\","
                                       "\"tokens_in\":3,\"tokens_out\":3,\"cached_tokens\":0,\"queue_ms\":0.1,"
                                       "\"prompt_ms\":1.0,\"gen_ms\":2.0,\"tokens_per_second\":1500.0}");
        }
}

static void *kt_fk_conn(void *arg) {
        int fd = (int) (intptr_t) arg;
        char req[65536], method[16] = "", path[1024] = "";
        size_t len = 0, want = 0;
        char *hend = NULL;
        bool auth;

        while (len < sizeof(req) - 1) {
                ssize_t k = recv(fd, req + len, sizeof(req) - 1 - len, 0);
                if (k <= 0)
                        break;
                len += (size_t) k;
                req[len] = 0;
                if (!hend && (hend = strstr(req, "\r\n\r\n"))) {
                        const char *cl = strcasestr(req, "\r\nContent-Length:");
                        want = (size_t) (hend + 4 - req) + (cl && cl < hend ? strtoul(cl + 17, NULL, 10) : 0);
                }
                if (hend && len >= want)
                        break;
        }
        req[len] = 0;
        if (sscanf(req, "%15s %1023s", method, path) != 2) {
                close(fd);
                return NULL;
        }
        auth = strstr(req, "\r\nAuthorization: Bearer sekrit\r\n") != NULL;
        {
                char *line = kt_printf("%s %s auth=%d\n", method, path, auth);
                (void) !write(kt_fk.log_fd, line, strlen(line));
                free(line);
        }

        if (streq(path, "/v1/health")) {
                if (kt_fk.mode == KT_FAKE_NOT_HIVE)
                        kt_fk_reply(fd, 404, NULL, "text/html", "<html><body>Not Found</body></html>");
                else
                        kt_fk_json(fd, 200, kt_fk.mode == KT_FAKE_API2
                                                    ? "{\"status\":\"ok\",\"version\":\"2.0.0\",\"api_version\":2}"
                                                    : "{\"status\":\"ok\",\"version\":\"0.1.0\",\"api_version\":1,"
                                                      "\"mode\":\"process\",\"workers\":0,\"uptime_seconds\":5}");
        } else if (kt_fk.mode == KT_FAKE_AUTH && !auth) {
                kt_fk_reply(fd, 401, "WWW-Authenticate: Bearer\r\n", "application/json",
                            "{\"error\":{\"code\":\"unauthorized\",\"message\":\"a bearer API key is required\","
                            "\"type\":\"authentication_error\"}}");
        } else if (streq(method, "POST") && streq(path, "/v1/inference")) {
                kt_fk_inference(fd);
        } else if (streq(method, "DELETE") && strncmp(path, "/v1/jobs/", 9) == 0) {
                kt_fk.cancelled = true;
                if (kt_fk.mode == KT_FAKE_SLOW_CANCEL)
                        sleep(5);
                char *b = kt_printf("{\"job_id\":\"%s\",\"state\":\"cancelled\"}", path + 9);
                kt_fk_json(fd, 200, b);
                free(b);
        } else if (streq(method, "GET") && streq(path, "/v1/models")) {
                if (kt_fk.mode == KT_FAKE_BAD_JSON)
                        kt_fk_json(fd, 200, "{\"object\":\"list\",\"data\":[");
                else
                        kt_fk_json(fd, 200, "{\"object\":\"list\",\"data\":[{\"id\":\"a-model-with-a-rather-long-name:q4_k_m\","
                                            "\"object\":\"model\",\"source\":\"hf:SomeOrganization/A-Model-With-A-Rather-"
                                            "Long-Name-GGUF:Q4_K_M\",\"size\":1185376,\"architecture\":\"llama\","
                                            "\"quantization\":\"Q4_K_M\",\"context_length\":512,\"parameters\":260000,"
                                            "\"loaded\":true}]}");
        } else if (streq(method, "GET") && strncmp(path, "/v1/models/", 11) == 0) {
                kt_fk_json(fd, 404, "{\"error\":{\"code\":\"model_not_found\",\"message\":\"no model in the catalog\","
                                    "\"type\":\"invalid_request_error\"}}");
        } else
                kt_fk_json(fd, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\","
                                    "\"type\":\"invalid_request_error\"}}");
        close(fd);
        return NULL;
}

static KT_UNUSED void kt_fake_start(struct kt_fake *f, enum kt_fake_mode mode) {
        int lfd = kt_listener(&f->port);
        pid_t pid;

        snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->port);
        snprintf(f->log, sizeof(f->log), "%s/fake-%d.log", harness_tmpdir(), f->port);
        fflush(NULL);
        pid = fork();
        if (pid < 0)
                FAIL("fork: %m");
        if (pid == 0) {
                sigset_t none;

                prctl(PR_SET_PDEATHSIG, SIGKILL);
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGPIPE, SIG_IGN);
                kt_fk.mode = mode;
                pthread_mutex_init(&kt_fk.lock, NULL);
                kt_fk.log_fd = open(f->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                for (;;) {
                        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                        pthread_t t;

                        if (fd < 0)
                                continue;
                        if (pthread_create(&t, NULL, kt_fk_conn, (void *) (intptr_t) fd) != 0)
                                close(fd);
                        else
                                pthread_detach(t);
                }
        }
        close(lfd);
        f->pid = pid;
}

/* What the server saw so far. */
static KT_UNUSED char *kt_fake_log(const struct kt_fake *f) {
        if (access(f->log, R_OK) < 0)
                return strdup("");
        return harness_read_file(f->log, NULL);
}

static KT_UNUSED void kt_fake_stop(struct kt_fake *f) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
}
