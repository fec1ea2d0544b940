/* SPDX-License-Identifier: MIT */
#pragma once

/* Helpers for the rbee-workerd tests: run the real daemon (on a unix socket
 * or on a loopback TCP socket handed over as fd 3 with LISTEN_FDS, the way
 * the hive and systemd do), read its sd_notify messages from a NOTIFY_SOCKET
 * the test owns, and talk HTTP/1.1 to it with a small client written here
 * (Content-Length and chunked bodies, server-sent events). Every wait has a
 * deadline; nothing sleeps in a loop.
 *
 * Header-only so that each tests/test-worker*.c executable can include it;
 * everything is static. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "../harness.h"
#include "macros.h"
#include "strutil.h"

#define WT_UNUSED __attribute__((unused))

#if defined(__SANITIZE_ADDRESS__)
#define WT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WT_SANITIZED 1
#endif
#endif
#ifndef WT_SANITIZED
#define WT_SANITIZED 0
#endif

/* Sanitizer builds run several times slower: deadlines scale with this
 * ($RBEE_TEST_SLOW overrides). */
static WT_UNUSED int wt_slow(void) {
        const char *s = getenv("RBEE_TEST_SLOW");
        int v = s && *s ? atoi(s) : 0;

        if (v > 0)
                return v;
        return WT_SANITIZED ? 3 : 1;
}

static WT_UNUSED double wt_now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- the daemon ------------------------------------------------------- */

struct wt_worker {
        pid_t pid;
        char sock[108];                 /* unix socket path, or "" */
        int port;                       /* TCP port, or 0 */
        char log[PATH_MAX];
        int notify_fd;
        char notify_path[108];
        char notes[16384];              /* every notify line so far, '\n'-separated */
        size_t notes_len;
        bool exited;
        int status;
};

struct wt_opts {
        const char *model;              /* --model value; NULL: none */
        const char *const *args;        /* more arguments, NULL-terminated */
        const char *const *env;         /* more environment, "K=V", NULL-terminated */
        bool tcp;                       /* loopback TCP socket as fd 3 instead of --listen PATH */
        bool no_wait;                   /* do not wait for READY=1 */
        const char *prog;               /* argv[0] override: another program to run (e.g. systemd-socket-activate) */
        const char *const *prefix;      /* arguments before the worker's own (for prog) */
};

static WT_UNUSED const char *wt_workerd(void) {
        const char *p = harness_build_path("rbee-workerd");

        if (access(p, X_OK) < 0)
                SKIP("%s not built", p);
        return p;
}

static WT_UNUSED char *wt_strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static WT_UNUSED char *wt_strdup_printf(const char *fmt, ...) {
        va_list ap;
        char *s;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                abort();
        va_end(ap);
        return s;
}

/* A model for tests that need no real text: written by rbee-mkmodel. */
static WT_UNUSED const char *wt_tiny_model(const char *extra) {
        const char *mk = harness_build_path("rbee-mkmodel");
        char *out = wt_strdup_printf("%s/tiny-%d.gguf", harness_tmpdir(), (int) (wt_now_ms() * 1000) % 1000000);
        char *cmd;

        if (access(mk, X_OK) < 0)
                SKIP("%s not built", mk);
        cmd = wt_strdup_printf("'%s' -q -o '%s' %s", mk, out, extra ? extra : "");
        if (system(cmd) != 0)
                FAIL("rbee-mkmodel failed: %s", cmd);
        free(cmd);
        return out;
}

static WT_UNUSED int wt_notify_socket(const char *path) {
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                FAIL("socket: %m");
        if (strlen(path) >= sizeof(un.sun_path))
                FAIL("path too long: %s", path);
        strcpy(un.sun_path, path);
        unlink(path);
        if (bind(fd, (struct sockaddr *) &un, sizeof(un)) < 0)
                FAIL("bind %s: %m", path);
        return fd;
}

/* A loopback listening socket on a free port. */
static WT_UNUSED int wt_tcp_listener(int *ret_port) {
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(in);
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        if (fd < 0)
                FAIL("socket: %m");
        if (bind(fd, (struct sockaddr *) &in, sizeof(in)) < 0 || listen(fd, 64) < 0)
                FAIL("bind/listen: %m");
        if (getsockname(fd, (struct sockaddr *) &in, &len) < 0)
                FAIL("getsockname: %m");
        *ret_port = ntohs(in.sin_port);
        return fd;
}

static WT_UNUSED char *wt_read_log(const struct wt_worker *w) {
        return harness_read_file(w->log, NULL);
}

static WT_UNUSED void wt_dump_log(const struct wt_worker *w) {
        char *s = wt_read_log(w);
        size_t n = strlen(s);

        fprintf(stderr, "  --- worker log (%s) ---\n%s", w->log, n > 6000 ? s + n - 6000 : s);
        free(s);
}

/* Wait for the worker to exit; returns its wait status, or -1 on timeout. */
static WT_UNUSED int wt_wait_exit(struct wt_worker *w, int timeout_ms) {
        double deadline = wt_now_ms() + timeout_ms;
        sigset_t set;

        if (w->exited)
                return w->status;
        sigemptyset(&set);
        sigaddset(&set, SIGCHLD);
        for (;;) {
                int st;
                pid_t r = waitpid(w->pid, &st, WNOHANG);
                if (r == w->pid) {
                        w->exited = true;
                        w->status = st;
                        return st;
                }
                double left = deadline - wt_now_ms();
                if (left <= 0)
                        return -1;
                /* SIGCHLD is blocked in tests (the harness blocks it), so it queues for us. */
                struct timespec ts = { .tv_sec = (time_t) (left / 1000), .tv_nsec = (long) ((long long) left % 1000) * 1000000L };
                sigtimedwait(&set, NULL, &ts);
        }
}

/* Read notify datagrams for up to timeout_ms; stop early when a line equals
 * (or, ending in '*', starts with) want. Returns true when it arrived. */
static WT_UNUSED bool wt_notify_wait(struct wt_worker *w, const char *want, int timeout_ms) {
        double deadline = wt_now_ms() + timeout_ms;
        size_t wl = want ? strlen(want) : 0;
        bool prefix = wl > 0 && want[wl - 1] == '*';

        for (;;) {
                double left = deadline - wt_now_ms();
                struct pollfd p = { .fd = w->notify_fd, .events = POLLIN };
                char buf[4096];

                if (left <= 0)
                        return false;
                if (poll(&p, 1, (int) left + 1) <= 0)
                        continue;
                ssize_t n = recv(w->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                bool hit = false;
                for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                        size_t ll = strlen(line);
                        if (w->notes_len + ll + 2 < sizeof(w->notes)) {
                                memcpy(w->notes + w->notes_len, line, ll);
                                w->notes_len += ll;
                                w->notes[w->notes_len++] = '\n';
                                w->notes[w->notes_len] = 0;
                        }
                        if (want && (prefix ? strncmp(line, want, wl - 1) == 0 : strcmp(line, want) == 0))
                                hit = true;
                }
                if (hit)
                        return true;
        }
}

/* Count notify lines equal to want during the next duration_ms. */
static WT_UNUSED int wt_notify_count(struct wt_worker *w, const char *want, int duration_ms) {
        double deadline = wt_now_ms() + duration_ms;
        int count = 0;

        for (;;) {
                double left = deadline - wt_now_ms();
                struct pollfd p = { .fd = w->notify_fd, .events = POLLIN };
                char buf[4096];

                if (left <= 0)
                        return count;
                if (poll(&p, 1, (int) left + 1) <= 0)
                        continue;
                ssize_t n = recv(w->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                        if (strcmp(line, want) == 0)
                                count++;
        }
}

static WT_UNUSED void wt_spawn(struct wt_worker *w, const struct wt_opts *o) {
        const char *dir = harness_tmpdir();
        const char *prog = o->prog ? o->prog : wt_workerd();
        static unsigned counter;
        int listen_fd = -1;
        pid_t pid;

        memset(w, 0, sizeof(*w));
        counter++;
        snprintf(w->log, sizeof(w->log), "%s/worker-%u.log", dir, counter);
        snprintf(w->notify_path, sizeof(w->notify_path), "%s/notify-%u", dir, counter);
        w->notify_fd = wt_notify_socket(w->notify_path);
        if (o->tcp)
                listen_fd = wt_tcp_listener(&w->port);
        else
                snprintf(w->sock, sizeof(w->sock), "%s/w-%u.sock", dir, counter);

        const char *argv[64];
        size_t n = 0;
        argv[n++] = prog;
        for (size_t i = 0; o->prefix && o->prefix[i] && n < 40; i++)
                argv[n++] = o->prefix[i];
        if (o->prog)
                argv[n++] = wt_workerd();
        if (o->model) {
                argv[n++] = "--model";
                argv[n++] = o->model;
        }
        if (!o->tcp && !o->prog) {
                argv[n++] = "--listen";
                argv[n++] = w->sock;
        }
        for (size_t i = 0; o->args && o->args[i] && n < 62; i++)
                argv[n++] = o->args[i];
        argv[n] = NULL;

        fflush(NULL);
        pid = fork();
        if (pid < 0)
                FAIL("fork: %m");
        if (pid == 0) {
                sigset_t none;
                int logfd = open(w->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGPIPE, SIG_DFL);
                if (logfd < 0)
                        _exit(127);
                dup2(logfd, STDOUT_FILENO);
                dup2(logfd, STDERR_FILENO);
                int devnull = open("/dev/null", O_RDONLY);
                if (devnull >= 0)
                        dup2(devnull, STDIN_FILENO);
                if (listen_fd >= 0) {
                        char pidbuf[32];
                        if (dup2(listen_fd, 3) < 0)
                                _exit(127);
                        fcntl(3, F_SETFD, 0);
                        snprintf(pidbuf, sizeof(pidbuf), "%d", (int) getpid());
                        setenv("LISTEN_PID", pidbuf, 1);
                        setenv("LISTEN_FDS", "1", 1);
                }
                setenv("NOTIFY_SOCKET", w->notify_path, 1);
                unsetenv("JOURNAL_STREAM");
                unsetenv("RBEE_API_KEY");
                unsetenv("WATCHDOG_USEC");
                unsetenv("WATCHDOG_PID");
                for (size_t i = 0; o->env && o->env[i]; i++)
                        putenv((char *) o->env[i]);
                execv(argv[0], (char *const *) argv);
                _exit(127);
        }
        w->pid = pid;
        if (listen_fd >= 0)
                close(listen_fd);
        if (o->no_wait)
                return;
        if (!wt_notify_wait(w, "READY=1", 30000 * wt_slow())) {
                wt_dump_log(w);
                FAIL("the worker did not send READY=1 (notify so far: %s)", w->notes);
        }
}

static WT_UNUSED void wt_start(struct wt_worker *w, const char *model, const char *const *args,
                               const char *const *env) {
        struct wt_opts o = { .model = model, .args = args, .env = env };

        wt_spawn(w, &o);
}

/* A sanitizer report fails the test even when the exit status looks expected. */
static WT_UNUSED void wt_assert_no_sanitizer_report(const struct wt_worker *w) {
        char *log = wt_read_log(w);
        bool bad = strstr(log, "Sanitizer") || strstr(log, "runtime error:");

        free(log);
        if (bad) {
                wt_dump_log(w);
                FAIL("the worker's log has a sanitizer report");
        }
}

/* SIGTERM and wait; returns the exit status (fails the test on a timeout). */
static WT_UNUSED int wt_stop(struct wt_worker *w) {
        int st;

        if (!w->exited)
                kill(w->pid, SIGTERM);
        st = wt_wait_exit(w, 15000 * wt_slow());
        if (st == -1) {
                kill(w->pid, SIGKILL);
                wt_wait_exit(w, 5000);
                wt_dump_log(w);
                FAIL("the worker did not exit after SIGTERM");
        }
        if (w->notify_fd >= 0)
                close(w->notify_fd);
        w->notify_fd = -1;
        wt_assert_no_sanitizer_report(w);
        return st;
}

/* Stop and require a clean exit (a sanitizer report makes it non-zero). */
static WT_UNUSED void wt_stop_clean(struct wt_worker *w) {
        int st = wt_stop(w);

        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                wt_dump_log(w);
                if (WIFSIGNALED(st))
                        FAIL("the worker died of signal %d", WTERMSIG(st));
                FAIL("the worker exited with status %d", WEXITSTATUS(st));
        }
}

/* ---- HTTP client ---------------------------------------------------------- */

static WT_UNUSED int wt_connect(const struct wt_worker *w) {
        int fd;

        if (w->port) {
                struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(w->port),
                                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *) &in, sizeof(in)) < 0)
                        FAIL("connect 127.0.0.1:%d: %m", w->port);
        } else {
                struct sockaddr_un un = { .sun_family = AF_UNIX };
                strcpy(un.sun_path, w->sock);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *) &un, sizeof(un)) < 0)
                        FAIL("connect %s: %m", w->sock);
        }
        return fd;
}

static WT_UNUSED void wt_send_all(int fd, const void *p, size_t n) {
        const char *s = p;

        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        /* The server answered early and closed: the answer is still to be read. */
                        if (errno == EPIPE || errno == ECONNRESET)
                                return;
                        FAIL("send: %m");
                }
                s += k;
                n -= (size_t) k;
        }
}

/* Send one request. headers: extra lines, each ending in \r\n (may be NULL). */
static WT_UNUSED void wt_send_request(int fd, const char *method, const char *path, const char *headers,
                                      const char *body, size_t len) {
        char *head = wt_strdup_printf("%s %s HTTP/1.1\r\nHost: localhost\r\n%s%s", method, path,
                                      headers ? headers : "", body ? "" : "\r\n");
        wt_send_all(fd, head, strlen(head));
        free(head);
        if (body) {
                char cl[64];
                snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n\r\n", len);
                wt_send_all(fd, cl, strlen(cl));
                wt_send_all(fd, body, len);
        }
}

struct wt_http {
        int fd;
        char raw[65536];
        size_t raw_len, raw_off;
        int status;
        char head[16384];
        bool chunked;
        long long content_length;       /* -1: until close */
        long long left;                 /* of the current chunk or the body */
        bool done;
        /* SSE */
        char *sse;
        size_t sse_len, sse_cap;
        int timeout_ms;
};

/* Fill raw; returns bytes added, 0 at EOF. Fails the test on timeout. */
static WT_UNUSED size_t wt_fill(struct wt_http *h) {
        struct pollfd p = { .fd = h->fd, .events = POLLIN };
        int r;

        if (h->raw_off > 0) {
                memmove(h->raw, h->raw + h->raw_off, h->raw_len - h->raw_off);
                h->raw_len -= h->raw_off;
                h->raw_off = 0;
        }
        if (h->raw_len == sizeof(h->raw))
                FAIL("response line too long");
        r = poll(&p, 1, h->timeout_ms);
        if (r == 0)
                FAIL("timed out after %d ms waiting for the worker", h->timeout_ms);
        ssize_t k = recv(h->fd, h->raw + h->raw_len, sizeof(h->raw) - h->raw_len, 0);
        if (k < 0) {
                if (errno == ECONNRESET)
                        return 0;
                FAIL("recv: %m");
        }
        h->raw_len += (size_t) k;
        return (size_t) k;
}

static WT_UNUSED char *wt_find_crlf(struct wt_http *h) {
        return memmem(h->raw + h->raw_off, h->raw_len - h->raw_off, "\r\n", 2);
}

static WT_UNUSED const char *wt_header(const struct wt_http *h, const char *name) {
        static char value[1024];
        size_t nl = strlen(name);
        const char *p = strstr(h->head, "\r\n");

        while (p && p[2]) {
                p += 2;
                if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
                        const char *v = p + nl + 1, *e = strstr(v, "\r\n");
                        while (*v == ' ')
                                v++;
                        snprintf(value, sizeof(value), "%.*s", (int) (e ? e - v : (long) strlen(v)), v);
                        return value;
                }
                p = strstr(p, "\r\n");
        }
        return NULL;
}

/* Read the status line and headers. Returns 0, or -1 when the server closed
 * the connection without a response. */
static WT_UNUSED int wt_http_begin(struct wt_http *h, int fd, int timeout_ms) {
        char *end;

        memset(h, 0, offsetof(struct wt_http, sse));
        h->sse = NULL;
        h->sse_len = h->sse_cap = 0;
        h->fd = fd;
        h->timeout_ms = timeout_ms;
        while (!(end = memmem(h->raw, h->raw_len, "\r\n\r\n", 4)))
                if (wt_fill(h) == 0)
                        return -1;
        size_t hl = (size_t) (end - h->raw) + 4;
        if (hl >= sizeof(h->head))
                FAIL("response head too long");
        memcpy(h->head, h->raw, hl);
        h->head[hl] = 0;
        h->raw_off = hl;
        if (sscanf(h->head, "HTTP/1.%*d %d", &h->status) != 1)
                FAIL("bad status line: %.80s", h->head);
        const char *te = wt_header(h, "Transfer-Encoding");
        const char *cl = wt_header(h, "Content-Length");
        h->chunked = te && strcasestr(te, "chunked");
        h->content_length = cl ? atoll(cl) : -1;
        h->left = h->chunked ? 0 : h->content_length;
        if (!h->chunked && h->content_length == 0)
                h->done = true;
        return 0;
}

/* Decoded body bytes, as they come. Returns 0 at the end of the body. */
static WT_UNUSED size_t wt_http_read(struct wt_http *h, char *out, size_t n) {
        for (;;) {
                if (h->done)
                        return 0;
                size_t avail = h->raw_len - h->raw_off;
                if (!h->chunked) {
                        if (avail == 0 && wt_fill(h) == 0) {
                                h->done = true;
                                return 0;
                        }
                        avail = h->raw_len - h->raw_off;
                        size_t k = MIN(n, avail);
                        if (h->left >= 0)
                                k = MIN(k, (size_t) h->left);
                        memcpy(out, h->raw + h->raw_off, k);
                        h->raw_off += k;
                        if (h->left >= 0) {
                                h->left -= (long long) k;
                                if (h->left == 0)
                                        h->done = true;
                        }
                        return k;
                }
                if (h->left > 0) {
                        if (avail == 0) {
                                if (wt_fill(h) == 0)
                                        FAIL("connection closed inside a chunk");
                                continue;
                        }
                        size_t k = MIN(MIN(n, avail), (size_t) h->left);
                        memcpy(out, h->raw + h->raw_off, k);
                        h->raw_off += k;
                        h->left -= (long long) k;
                        return k;
                }
                /* At a chunk boundary: "\r\n" after the previous chunk, then "SIZE\r\n". */
                char *crlf;
                while (!(crlf = wt_find_crlf(h)))
                        if (wt_fill(h) == 0)
                                FAIL("connection closed between chunks");
                if (crlf == h->raw + h->raw_off) {
                        h->raw_off += 2;
                        continue;
                }
                long long size = strtoll(h->raw + h->raw_off, NULL, 16);
                h->raw_off = (size_t) (crlf - h->raw) + 2;
                if (size == 0) {
                        h->done = true;
                        return 0;
                }
                h->left = size;
        }
}

static WT_UNUSED char *wt_http_body(struct wt_http *h) {
        size_t cap = 4096, len = 0;
        char *b = malloc(cap);

        for (;;) {
                if (cap - len < 2048) {
                        cap *= 2;
                        b = realloc(b, cap);
                }
                size_t k = wt_http_read(h, b + len, cap - len - 1);
                if (k == 0)
                        break;
                len += k;
        }
        b[len] = 0;
        return b;
}

/* Next server-sent event. Returns false at the end of the stream. *event is
 * "message" when the event had no name; both strings live until the next call. */
static WT_UNUSED bool wt_sse_next(struct wt_http *h, const char **event, const char **data) {
        static char ev[64], dat[65536];

        for (;;) {
                char *sep = h->sse_len ? memmem(h->sse, h->sse_len, "\n\n", 2) : NULL;
                if (sep) {
                        size_t bl = (size_t) (sep - h->sse);
                        snprintf(ev, sizeof(ev), "message");
                        dat[0] = 0;
                        for (size_t i = 0; i < bl;) {
                                char *nl = memchr(h->sse + i, '\n', bl - i);
                                size_t ll = nl ? (size_t) (nl - (h->sse + i)) : bl - i;
                                if (ll >= 7 && strncmp(h->sse + i, "event: ", 7) == 0)
                                        snprintf(ev, sizeof(ev), "%.*s", (int) ll - 7, h->sse + i + 7);
                                else if (ll >= 6 && strncmp(h->sse + i, "data: ", 6) == 0)
                                        snprintf(dat + strlen(dat), sizeof(dat) - strlen(dat), "%.*s", (int) ll - 6,
                                                 h->sse + i + 6);
                                i += ll + 1;
                        }
                        memmove(h->sse, sep + 2, h->sse_len - bl - 2);
                        h->sse_len -= bl + 2;
                        *event = ev;
                        *data = dat;
                        return true;
                }
                if (h->sse_cap - h->sse_len < 4096) {
                        h->sse_cap = h->sse_cap ? h->sse_cap * 2 : 16384;
                        h->sse = realloc(h->sse, h->sse_cap);
                }
                size_t k = wt_http_read(h, h->sse + h->sse_len, h->sse_cap - h->sse_len);
                if (k == 0) {
                        if (h->sse_len > 0)
                                FAIL("stream ended inside an event: %.*s", (int) MIN(h->sse_len, (size_t) 200), h->sse);
                        return false;
                }
                h->sse_len += k;
        }
}

static WT_UNUSED void wt_http_done(struct wt_http *h) {
        free(h->sse);
        h->sse = NULL;
        if (h->fd >= 0)
                close(h->fd);
        h->fd = -1;
}

struct wt_response {
        int status;
        char head[16384];
        char *body;
        struct json_object *json;       /* body parsed, or NULL */
};

static WT_UNUSED void wt_response_done(struct wt_response *r) {
        free(r->body);
        json_object_put(r->json);
        memset(r, 0, sizeof(*r));
}

/* One request on its own connection; the whole response. */
static WT_UNUSED void wt_call_raw(const struct wt_worker *w, const char *method, const char *path,
                                  const char *headers, const char *body, size_t len, struct wt_response *ret) {
        struct wt_http h;
        int fd = wt_connect(w);

        wt_send_request(fd, method, path, headers, body, len);
        if (wt_http_begin(&h, fd, 30000 * wt_slow()) < 0)
                FAIL("%s %s: the worker closed the connection without answering", method, path);
        memset(ret, 0, sizeof(*ret));
        ret->status = h.status;
        memcpy(ret->head, h.head, sizeof(ret->head));
        ret->body = wt_http_body(&h);
        ret->json = json_tokener_parse(ret->body);
        wt_http_done(&h);
}

#define WT_JSON_HEADERS "Content-Type: application/json\r\n"

static WT_UNUSED void wt_call(const struct wt_worker *w, const char *method, const char *path, const char *json_body,
                              struct wt_response *ret) {
        wt_call_raw(w, method, path, json_body ? WT_JSON_HEADERS : NULL, json_body, json_body ? strlen(json_body) : 0, ret);
}

/* Open a streaming request and read its head. */
static WT_UNUSED void wt_stream_open(const struct wt_worker *w, const char *path, const char *json_body,
                                     struct wt_http *h) {
        int fd = wt_connect(w);

        wt_send_request(fd, "POST", path, WT_JSON_HEADERS, json_body, strlen(json_body));
        if (wt_http_begin(h, fd, 30000 * wt_slow()) < 0)
                FAIL("POST %s: no response", path);
}

/* ---- JSON ----------------------------------------------------------------- */

/* o.a.b (object keys) or o.a.0.b (array indexes). NULL when absent. */
static WT_UNUSED struct json_object *wt_jget(struct json_object *o, const char *path) {
        char buf[256], *save = NULL;

        snprintf(buf, sizeof(buf), "%s", path);
        for (char *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save)) {
                if (json_object_is_type(o, json_type_array)) {
                        char *end;
                        long i = strtol(k, &end, 10);
                        o = *end ? NULL : json_object_array_get_idx(o, (size_t) i);
                } else if (!json_object_object_get_ex(o, k, &o))
                        o = NULL;
        }
        return o;
}

static WT_UNUSED const char *wt_jstr(struct json_object *o, const char *path) {
        struct json_object *v = wt_jget(o, path);
        return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static WT_UNUSED long long wt_jint(struct json_object *o, const char *path) {
        struct json_object *v = wt_jget(o, path);
        if (!v)
                FAIL("no '%s' in %s", path, o ? json_object_to_json_string(o) : "(null)");
        return (long long) json_object_get_int64(v);
}

static WT_UNUSED double wt_jdouble(struct json_object *o, const char *path) {
        struct json_object *v = wt_jget(o, path);
        if (!v)
                FAIL("no '%s' in %s", path, o ? json_object_to_json_string(o) : "(null)");
        return json_object_get_double(v);
}

#define ASSERT_STATUS(resp, code)                                                               \
        do {                                                                                    \
                if ((resp).status != (code))                                                    \
                        FAIL("expected HTTP %d, got %d: %s", (code), (resp).status, (resp).body); \
        } while (0)
