/* SPDX-License-Identifier: MIT */
/* The CLI against a hostile hive: the real commands (rbee ps, model
 * list/get/download/register/remove, worker list/spawn/stop/cleanup, hive
 * status/backends, infer) run against a small HTTP server in this process
 * that answers with the input, through the CLI's own HTTP client (libcurl,
 * keeper/http.c's header and body callbacks), keeper_api() and the
 * renderers. Wrong types, missing fields, huge or negative numbers, invalid
 * UTF-8, control characters and deep nesting must not crash the CLI, and
 * with stdout and stderr marked a terminal (colors off), no control
 * character the hive sent may reach them: no C0 byte other than newline and
 * tab (and CR in a model's text, which `rbee infer` passes on), no DEL, no
 * C1 control (U+0080-U+009F), so no escape sequence at all.
 *
 * stdout and stderr are memory streams while a command runs (stdio only:
 * the sanitizers still write to fd 2).
 *
 * Input: byte 0 picks the command, byte 1 flags (bit 0 --json, bit 1
 * stderr is a terminal, bit 2 -q, bit 3 -v, bit 4 the health answer is
 * fuzzed too, bits 5-6 the terminal's width); then the answers to the
 * requests in order, separated by "\n#--#\n" (the last one answers the
 * rest). An answer: byte 0 the status, byte 1 the Content-Type (and
 * whether its first line is a header of its own), then the body. */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "keeper/commands.h"
#include "keeper/keeper.h"
#include "keeper/term.h"
#include "macros.h"
#include "strutil.h"

#define SEP "\n#--#\n"
#define ANSWERS_MAX 8

struct answer {
        const char *p;
        size_t n;
};

static struct {
        pthread_mutex_t lock;
        int listen_fd;
        char url[64];
        /* the current input's answers; the server copies one per request */
        struct answer answers[ANSWERS_MAX];
        size_t n_answers, next;
        bool fuzz_health;
} srv = { .lock = PTHREAD_MUTEX_INITIALIZER, .listen_fd = -1 };

static const char *const health_body =
        "{\"status\":\"ok\",\"api_version\":1,\"version\":\"0.1.0\",\"hive\":\"fuzz\",\"uptime_s\":5,"
        "\"workers\":0,\"models\":1,\"jobs\":0}";

static void send_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return;
                p += k;
                n -= (size_t) k;
        }
}

/* Read the request head and its body (Content-Length), so that curl is
 * done sending before the answer comes. Returns the head. */
static int read_request(int fd, char *buf, size_t size) {
        size_t len = 0;
        char *end = NULL;

        while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
                ssize_t k = recv(fd, buf + len, size - 1 - len, 0);
                if (k <= 0)
                        return -EIO;
                len += (size_t) k;
                if (len >= size - 1)
                        return -E2BIG;
        }
        buf[len] = 0;
        size_t hl = (size_t) (end - buf) + 4, cl = 0;
        const char *h = strcasestr(buf, "\r\nContent-Length:");
        if (h && h < end)
                cl = strtoul(h + 17, NULL, 10);
        for (size_t have = len - hl; have < cl;) {
                char tmp[4096];
                ssize_t k = recv(fd, tmp, MIN(sizeof(tmp), cl - have), 0);
                if (k <= 0)
                        return -EIO;
                have += (size_t) k;
        }
        buf[hl] = 0;
        return 0;
}

static const int statuses[] = { 200, 200, 200, 201, 202, 204, 400, 401, 404,
                                409, 413, 500, 502, 503, 429, 299, 302, 418 };
static const char *const types[] = { "application/json", "text/event-stream", "application/json; charset=utf-8",
                                     "text/plain", "", "TEXT/EVENT-STREAM ; x" };

static void *serve(void *arg) {
        int fd = (int) (intptr_t) arg;
        char req[16384], head[2048], *body = NULL;
        struct answer a = {};
        bool health;
        int status;

        if (read_request(fd, req, sizeof(req)) < 0)
                goto out;
        health = str_startswith(req, "GET /v1/health ");
        pthread_mutex_lock(&srv.lock);
        if (!health || srv.fuzz_health) {
                a = srv.answers[MIN(srv.next, srv.n_answers - 1)];
                srv.next++;
        }
        if (a.p) {
                body = malloc(a.n ? a.n : 1);
                if (body)
                        memcpy(body, a.p, a.n);
        }
        pthread_mutex_unlock(&srv.lock);

        if (health && !a.p) {
                int n = snprintf(head, sizeof(head),
                                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                                 "Connection: close\r\n\r\n",
                                 strlen(health_body));
                send_all(fd, head, (size_t) n);
                send_all(fd, health_body, strlen(health_body));
                goto out;
        }
        if (!body)
                goto out;
        const uint8_t *p = (const uint8_t *) body;
        size_t n = a.n, off = MIN(n, (size_t) 2);
        status = statuses[(n > 0 ? p[0] : 0) % ELEMENTSOF(statuses)];
        unsigned t = n > 1 ? p[1] : 0;
        const char *ct = types[(t & 0x7f) % ELEMENTSOF(types)];
        char extra[512] = "";
        if (t & 0x80) {
                /* The body's first line is a header of the answer (Content-Type,
                 * Retry-After, anything). A busy answer with Retry-After would
                 * make the CLI wait: not those. */
                const char *nl = memchr(body + off, '\n', n - off);
                size_t ll = nl ? (size_t) (nl - (body + off)) : 0;
                if (nl && ll < sizeof(extra) - 3 && !memchr(body + off, '\r', ll) && !memchr(body + off, 0, ll) &&
                    !((status == 503 || status == 429) && strncasecmp(body + off, "retry-after", 11) == 0)) {
                        memcpy(extra, body + off, ll);
                        memcpy(extra + ll, "\r\n", 3);
                        off += ll + 1;
                }
        }
        bool sse = strcasestr(ct, "event-stream") || strcasestr(extra, "event-stream");
        int hn = snprintf(head, sizeof(head), "HTTP/1.1 %d Fuzz\r\n%s%s%s%s", status, ct[0] ? "Content-Type: " : "", ct,
                          ct[0] ? "\r\n" : "", extra);
        /* Event streams end with the connection; the rest has a length. */
        if (!sse && status != 204)
                hn += snprintf(head + hn, sizeof(head) - (size_t) hn, "Content-Length: %zu\r\n", n - off);
        hn += snprintf(head + hn, sizeof(head) - (size_t) hn, "Connection: close\r\n\r\n");
        send_all(fd, head, (size_t) hn);
        if (status != 204)
                send_all(fd, body + off, n - off);
out:
        free(body);
        shutdown(fd, SHUT_RDWR);
        close(fd);
        return NULL;
}

static void *acceptor(void *arg) {
        for (;;) {
                int fd = accept4(srv.listen_fd, NULL, NULL, SOCK_CLOEXEC);
                pthread_t t;
                if (fd < 0)
                        continue;
                if (pthread_create(&t, NULL, serve, (void *) (intptr_t) fd) != 0) {
                        close(fd);
                        continue;
                }
                pthread_detach(t);
        }
        return arg;
}

static void setup(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sa);
        pthread_t t;

        setenv("RBEE_CONFIG", "/nonexistent/rbee-fuzz/hives", 1);
        unsetenv("RBEE_HIVE");
        unsetenv("RBEE_API_KEY");
        unsetenv("NO_COLOR");
        unsetenv("HF_TOKEN");
        setenv("LC_ALL", "C.UTF-8", 1);
        keeper_term_setup();
        srv.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(srv.listen_fd >= 0);
        FUZZ_CHECK(bind(srv.listen_fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        FUZZ_CHECK(listen(srv.listen_fd, 64) == 0);
        FUZZ_CHECK(getsockname(srv.listen_fd, (struct sockaddr *) &sa, &sl) == 0);
        snprintf(srv.url, sizeof(srv.url), "http://127.0.0.1:%u", (unsigned) ntohs(sa.sin_port));
        FUZZ_CHECK(pthread_create(&t, NULL, acceptor, NULL) == 0);
        pthread_detach(t);
}

struct command {
        int (*run)(struct keeper *k, int argc, char **argv);
        const char *argv[8];
};

static const struct command commands[] = {
        { keeper_cmd_ps, { "ps" } },
        { keeper_cmd_model, { "model", "list" } },
        { keeper_cmd_model, { "model", "get", "tiny:q8_0" } },
        { keeper_cmd_model, { "model", "download", "hf:org/tiny-GGUF:Q8_0" } },
        { keeper_cmd_model, { "model", "register", "tiny", "--path", "/models/tiny.gguf" } },
        { keeper_cmd_model, { "model", "remove", "tiny" } },
        { keeper_cmd_worker, { "worker", "list" } },
        { keeper_cmd_worker, { "worker", "spawn", "--model", "tiny" } },
        { keeper_cmd_worker, { "worker", "stop", "tiny" } },
        { keeper_cmd_worker, { "worker", "cleanup" } },
        { keeper_cmd_hive, { "hive", "status" } },
        { keeper_cmd_hive, { "hive", "backends" } },
        { keeper_cmd_infer, { "infer", "--model", "tiny", "Hello" } },
        { keeper_cmd_worker, { "worker", "spawn", "--model", "tiny", "--no-wait" } },
};

/* What may reach a terminal: no C0 control but newline and tab (and CR
 * where allowed), no DEL, no C1 control in its UTF-8 form. The CLI's own
 * "clear the line" is taken out first where stderr is a terminal. */
static void check_terminal(const char *what, const char *s, size_t n, bool allow_cr, bool own_clear) {
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (own_clear && n - i >= 4 && memcmp(s + i, KEEPER_ANSI_CLEAR_LINE, 4) == 0) {
                        i += 3;
                        continue;
                }
                unsigned char next = i + 1 < n ? (unsigned char) s[i + 1] : 0;
                bool bad = (c < 0x20 && c != '\n' && c != '\t' && !(allow_cr && c == '\r')) || c == 0x7f ||
                           (c == 0xc2 && next >= 0x80 && next <= 0x9f);
                if (bad) {
                        fprintf(stderr, "%s has byte 0x%02x at %zu: '%.*s'\n", what, c, i,
                                (int) MIN(n - i + MIN(i, (size_t) 60), (size_t) 160), s + i - MIN(i, (size_t) 60));
                        FUZZ_CHECK(!bad);
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool ready;
        static const char *const columns[4] = { "80", "20", "200", "1" };
        char *out_buf = NULL, *err_buf = NULL;
        size_t out_len = 0, err_len = 0;
        FILE *saved_out = stdout, *saved_err = stderr;
        struct keeper k;
        char *argv[13];
        int argc = 0;

        if (size < 2 || size > (256u << 10))
                return 0;
        /* Once per process, and not before a real input: the replay driver
         * runs an empty one in its parent, whose threads its children lack. */
        if (!ready) {
                setup();
                ready = true;
        }
        const struct command *cmd = &commands[data[0] % ELEMENTSOF(commands)];
        unsigned flags = data[1];
        char *input = malloc(size - 2 + 1);
        FUZZ_CHECK(input);
        memcpy(input, data + 2, size - 2);

        pthread_mutex_lock(&srv.lock);
        srv.n_answers = srv.next = 0;
        for (size_t i = 0, n = size - 2; srv.n_answers < ANSWERS_MAX;) {
                const char *sep = srv.n_answers + 1 < ANSWERS_MAX ? memmem(input + i, n - i, SEP, strlen(SEP)) : NULL;
                size_t len = sep ? (size_t) (sep - (input + i)) : n - i;
                srv.answers[srv.n_answers++] = (struct answer) { input + i, len };
                if (!sep)
                        break;
                i += len + strlen(SEP);
        }
        srv.fuzz_health = flags & 16;
        pthread_mutex_unlock(&srv.lock);

        setenv("COLUMNS", columns[(flags >> 5) & 3], 1);
        /* The command's own arguments only: the global options are set by
         * hand below, since parsing them would recompute the terminal from
         * the file descriptors. */
        for (const char *const *a = cmd->argv; *a && argc < 12; a++)
                argv[argc++] = (char *) *a;
        argv[argc] = NULL;

        FILE *out = open_memstream(&out_buf, &out_len), *err = open_memstream(&err_buf, &err_len);
        FUZZ_CHECK(out && err);
        keeper_init(&k);
        k.hive_arg = strdup(srv.url);
        FUZZ_CHECK(k.hive_arg);
        k.json = flags & 1;
        k.quiet = flags & 4;
        k.verbose = flags & 8;
        k.out_tty = true;
        k.err_tty = flags & 2;
        k.out_color = k.err_color = false;
        stdout = out;
        stderr = err;
        optind = 0;
        opterr = 0;
        int rc = cmd->run(&k, argc, argv);
        fflush(out);
        fflush(err);
        stdout = saved_out;
        stderr = saved_err;
        keeper_done(&k);
        fclose(out);
        fclose(err);
        FUZZ_CHECK(rc == KEEPER_EXIT_OK || rc == KEEPER_EXIT_ERROR || rc == KEEPER_EXIT_INTERRUPTED ||
                   rc == KEEPER_EXIT_USAGE);
        if (rc == KEEPER_EXIT_USAGE)
                fprintf(stderr, "usage error: %.*s\n", (int) err_len, err_buf);
        FUZZ_CHECK(rc != KEEPER_EXIT_USAGE);

        bool infer = cmd->run == keeper_cmd_infer;
        /* --json prints JSON, which escapes C0 but passes C1 through as data. */
        if (!(flags & 1))
                check_terminal("stdout", out_buf, out_len, infer, false);
        check_terminal("stderr", err_buf, err_len, false, flags & 2);

        free(out_buf);
        free(err_buf);
        free(input);
        return 0;
}
