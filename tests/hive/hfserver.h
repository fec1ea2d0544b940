/* SPDX-License-Identifier: MIT */
#pragma once

/* A local HTTP server that behaves like the HuggingFace endpoint for the
 * download tests: GET /api/models/t/NAME/tree/main (the listing, with LFS
 * sha256 and sizes), GET /t/NAME/resolve/main/FILE (a 302 to /cdn/...),
 * and GET /cdn/NAME/FILE with Range. The repo NAME picks a behaviour:
 *   good     one .gguf, correct sha256         multi    two .gguf files and a README
 *   reset    the first transfer is cut (RST) halfway, then it serves Range
 *   stall    the first transfer stops halfway and hangs
 *   badsum   the listing's sha256 is wrong     private  401   forbidden 403   missing 404
 *   noauth   401 unless "Authorization: Bearer secret-token"
 *   slow     sends 4 KiB every 10 ms (about 3 s for the test model)
 *   flaky    every transfer ends early (FIN) after 400 KB: it takes several resumes
 *   dead     every transfer is cut right after the headers
 *   hang     every transfer sends the headers, then nothing
 *   xhost    the resolve redirect goes to another host name (localhost)
 * It runs in a forked child (a thread per connection) and appends one line
 * per request ("GET /path range=N") to a log the test reads. */

#include <pthread.h>
#include <sys/prctl.h>

#include "../../hive/sha256.h"
#include "../worker/wtest.h"

struct hf_server {
        pid_t pid;
        int port;
        char log[PATH_MAX];
        char sha[65];
        size_t size;
};

static struct {
        const char *data;
        size_t size;
        char sha[65];
        int log_fd;
        int port;
        int reset_count, stall_count;
        pthread_mutex_t lock;
} hf;

static void hf_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void hf_log(const char *fmt, ...) {
        char buf[1024];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
        va_end(ap);
        if (n > 0 && n < (int) sizeof(buf) - 1) {
                buf[n++] = '\n';
                (void) !write(hf.log_fd, buf, (size_t) n);
        }
}

static void hf_send(int fd, const void *p, size_t n) {
        const char *s = p;

        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
                if (k <= 0)
                        return;
                s += k;
                n -= (size_t) k;
        }
}

static void hf_reply(int fd, int status, const char *extra, const char *body) {
        char head[1024];
        int n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", status,
                         strlen(body), extra ? extra : "");
        hf_send(fd, head, (size_t) n);
        hf_send(fd, body, strlen(body));
}

static void hf_listing(int fd, const char *name) {
        char body[2048];
        const char *sha = streq(name, "badsum") ? "1111111111111111111111111111111111111111111111111111111111111111" : hf.sha;

        if (streq(name, "private"))
                return hf_reply(fd, 401, NULL, "{\"error\":\"Repository not found\"}");
        if (streq(name, "forbidden"))
                return hf_reply(fd, 403, NULL, "{\"error\":\"gated\"}");
        if (streq(name, "missing"))
                return hf_reply(fd, 404, NULL, "{\"error\":\"Repository not found\"}");
        if (streq(name, "multi"))
                snprintf(body, sizeof(body),
                         "[{\"type\":\"file\",\"path\":\"README.md\",\"size\":10},"
                         "{\"type\":\"file\",\"path\":\"model-Q8_0.gguf\",\"size\":%zu,\"lfs\":{\"oid\":\"%s\",\"size\":%zu}},"
                         "{\"type\":\"file\",\"path\":\"model-F32.gguf\",\"size\":%zu,\"lfs\":{\"oid\":\"%s\",\"size\":%zu}}]",
                         hf.size, sha, hf.size, hf.size, sha, hf.size);
        else
                snprintf(body, sizeof(body),
                         "[{\"type\":\"directory\",\"path\":\"docs\"},"
                         "{\"type\":\"file\",\"path\":\"model-Q8_0.gguf\",\"size\":%zu,\"lfs\":{\"oid\":\"%s\",\"size\":%zu}}]",
                         hf.size, sha, hf.size);
        hf_reply(fd, 200, "Content-Type: application/json\r\n", body);
}

static void hf_file(int fd, const char *name, const char *file, unsigned long long from) {
        char head[512];
        size_t n;
        bool cut = false, stall = false;
        size_t limit = hf.size - (size_t) from;

        if (!streq(file, "model-Q8_0.gguf") && !streq(file, "model-F32.gguf"))
                return hf_reply(fd, 404, NULL, "Entry not found");
        if (from >= hf.size)
                return hf_reply(fd, 416, NULL, "");
        pthread_mutex_lock(&hf.lock);
        if (streq(name, "reset") && hf.reset_count++ == 0)
                cut = true;
        if (streq(name, "stall") && hf.stall_count++ == 0)
                stall = true;
        pthread_mutex_unlock(&hf.lock);
        if (from)
                n = (size_t) snprintf(head, sizeof(head),
                                      "HTTP/1.1 206 Partial Content\r\nContent-Length: %zu\r\nContent-Range: bytes %llu-%zu/%zu\r\n"
                                      "Connection: close\r\n\r\n",
                                      hf.size - (size_t) from, from, hf.size - 1, hf.size);
        else
                n = (size_t) snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                                      hf.size);
        hf_send(fd, head, n);
        if (streq(name, "slow")) {
                for (size_t off = (size_t) from; off < hf.size; off += 4096) {
                        hf_send(fd, hf.data + off, MIN((size_t) 4096, hf.size - off));
                        usleep(10000);
                }
                return;
        }
        if (streq(name, "flaky") || streq(name, "dead") || streq(name, "hang")) {
                if (streq(name, "flaky")) {
                        hf_send(fd, hf.data + from, MIN(limit, (size_t) 400000));
                        return;
                }
                if (streq(name, "hang"))
                        sleep(8);
                struct linger l = { .l_onoff = 1, .l_linger = 0 };
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
                return;
        }
        if (cut || stall) {
                hf_send(fd, hf.data + from, (hf.size - from) / 2);
                if (stall)
                        sleep(6);
                struct linger l = { .l_onoff = 1, .l_linger = 0 };
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
                return;
        }
        hf_send(fd, hf.data + from, hf.size - from);
}

static void *hf_conn(void *arg) {
        int fd = (int) (intptr_t) arg;
        char req[8192], method[16], path[1024], org[64], name[64], file[256];
        size_t len = 0;
        unsigned long long from = 0;

        while (len < sizeof(req) - 1) {
                ssize_t k = recv(fd, req + len, sizeof(req) - 1 - len, 0);
                if (k <= 0)
                        break;
                len += (size_t) k;
                req[len] = 0;
                if (strstr(req, "\r\n\r\n"))
                        break;
        }
        req[len] = 0;
        if (sscanf(req, "%15s %1023s", method, path) != 2) {
                close(fd);
                return NULL;
        }
        const char *rg = strcasestr(req, "\r\nRange: bytes=");
        if (rg)
                from = strtoull(rg + 15, NULL, 10);
        bool auth = strstr(req, "Authorization: Bearer secret-token") != NULL;
        hf_log("%s %s range=%llu auth=%d", method, path, from, auth);

        if (sscanf(path, "/api/models/%63[^/]/%63[^/]/tree/main", org, name) == 2) {
                if (streq(name, "noauth") && !auth)
                        hf_reply(fd, 401, NULL, "{\"error\":\"token required\"}");
                else
                        hf_listing(fd, name);
        } else if (sscanf(path, "/%63[^/]/%63[^/]/resolve/main/%255s", org, name, file) == 3) {
                char loc[512];
                if (streq(name, "xhost"))
                        snprintf(loc, sizeof(loc), "Location: http://localhost:%d/cdn/%s/%s\r\n", hf.port, name, file);
                else
                        snprintf(loc, sizeof(loc), "Location: /cdn/%s/%s\r\n", name, file);
                hf_reply(fd, 302, loc, "");
        } else if (sscanf(path, "/cdn/%63[^/]/%255s", name, file) == 2)
                hf_file(fd, name, file, from);
        else
                hf_reply(fd, 404, NULL, "no such route");
        close(fd);
        return NULL;
}

static WT_UNUSED void hf_start(struct hf_server *s, const char *model_path) {
        size_t size;
        char *data = harness_read_file(model_path, &size);
        int lfd = wt_tcp_listener(&s->port);
        pid_t pid;

        memset(hf.sha, 0, sizeof(hf.sha));
        if (hive_sha256_file(model_path, hf.sha, NULL) < 0)
                FAIL("cannot hash %s", model_path);
        snprintf(s->sha, sizeof(s->sha), "%s", hf.sha);
        s->size = size;
        snprintf(s->log, sizeof(s->log), "%s/hf.log", harness_tmpdir());
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
                hf.data = data;
                hf.size = size;
                hf.port = s->port;
                pthread_mutex_init(&hf.lock, NULL);
                hf.log_fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                for (;;) {
                        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                        pthread_t t;
                        if (fd < 0)
                                continue;
                        if (pthread_create(&t, NULL, hf_conn, (void *) (intptr_t) fd) != 0)
                                close(fd);
                        else
                                pthread_detach(t);
                }
        }
        close(lfd);
        free(data);
        s->pid = pid;
}

static WT_UNUSED void hf_stop(struct hf_server *s) {
        struct wt_worker w = { .pid = s->pid };

        kill(s->pid, SIGKILL);
        wt_wait_exit(&w, 5000);
}
