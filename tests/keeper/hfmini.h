/* SPDX-License-Identifier: MIT */
#pragma once

/* A loopback server that answers like the HuggingFace endpoint as far as
 * rbee-hive uses it (see hive/API.md): the repository listing with LFS
 * sha256 and sizes, and the file itself through a redirect, with Range.
 * It sends the file slowly (about 1.5 s for the whole of it) so that a
 * download shows progress and can be interrupted. Repositories:
 *   test/tiny-GGUF      one .gguf file
 *   anything else       404 */

#include <pthread.h>

#include "ktest.h"

struct kt_hf {
        pid_t pid;
        int port;
        char url[64];
        char sha[65];
        size_t size;
};

static struct {
        const char *data;
        size_t size;
        const char *sha;
} kt_hfs;

static void kt_hf_send(int fd, const char *s, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
                if (k <= 0)
                        return;
                s += k;
                n -= (size_t) k;
        }
}

static void kt_hf_reply(int fd, int status, const char *extra, const char *body) {
        char *h = kt_printf("HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", status, strlen(body),
                            extra ? extra : "");
        kt_hf_send(fd, h, strlen(h));
        kt_hf_send(fd, body, strlen(body));
        free(h);
}

static void *kt_hf_conn(void *arg) {
        int fd = (int) (intptr_t) arg;
        char req[8192], path[1024] = "";
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
        if (sscanf(req, "%*15s %1023s", path) != 1) {
                close(fd);
                return NULL;
        }
        const char *rg = strcasestr(req, "\r\nRange: bytes=");
        if (rg)
                from = strtoull(rg + 15, NULL, 10);

        if (streq(path, "/api/models/test/tiny-GGUF/tree/main")) {
                char *body = kt_printf("[{\"type\":\"file\",\"path\":\"README.md\",\"size\":12},"
                                       "{\"type\":\"file\",\"path\":\"tiny-Q8_0.gguf\",\"size\":%zu,"
                                       "\"lfs\":{\"oid\":\"%s\",\"size\":%zu}}]",
                                       kt_hfs.size, kt_hfs.sha, kt_hfs.size);
                kt_hf_reply(fd, 200, "Content-Type: application/json\r\n", body);
                free(body);
        } else if (streq(path, "/test/tiny-GGUF/resolve/main/tiny-Q8_0.gguf")) {
                kt_hf_reply(fd, 302, "Location: /cdn/tiny-Q8_0.gguf\r\n", "");
        } else if (streq(path, "/cdn/tiny-Q8_0.gguf") && from < kt_hfs.size) {
                char *h = from ? kt_printf("HTTP/1.1 206 Partial Content\r\nContent-Length: %zu\r\n"
                                           "Content-Range: bytes %llu-%zu/%zu\r\nConnection: close\r\n\r\n",
                                           kt_hfs.size - (size_t) from, from, kt_hfs.size - 1, kt_hfs.size)
                               : kt_printf("HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                                           kt_hfs.size);
                size_t chunk = kt_hfs.size / 30 + 1;

                kt_hf_send(fd, h, strlen(h));
                free(h);
                for (size_t off = from; off < kt_hfs.size; off += chunk) {
                        kt_hf_send(fd, kt_hfs.data + off, MIN(chunk, kt_hfs.size - off));
                        usleep(50000);
                }
        } else
                kt_hf_reply(fd, 404, "X-Error-Code: RepoNotFound\r\n", "{\"error\":\"Repository not found\"}");
        close(fd);
        return NULL;
}

static KT_UNUSED void kt_hf_start(struct kt_hf *s, const char *model_path) {
        char *cmd = kt_printf("sha256sum '%s'", model_path), *data;
        FILE *f = popen(cmd, "r");
        size_t size;
        int lfd;
        pid_t pid;

        if (!f || fscanf(f, "%64s", s->sha) != 1)
                FAIL("%s failed", cmd);
        pclose(f);
        free(cmd);
        data = harness_read_file(model_path, &size);
        s->size = size;
        lfd = kt_listener(&s->port);
        snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->port);
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
                kt_hfs.data = data;
                kt_hfs.size = size;
                kt_hfs.sha = s->sha;
                for (;;) {
                        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                        pthread_t t;

                        if (fd < 0)
                                continue;
                        if (pthread_create(&t, NULL, kt_hf_conn, (void *) (intptr_t) fd) != 0)
                                close(fd);
                        else
                                pthread_detach(t);
                }
        }
        free(data);
        close(lfd);
        s->pid = pid;
}

static KT_UNUSED void kt_hf_stop(struct kt_hf *s) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
}
