/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "macros.h"
#include "strutil.h"
#include "wclient.h"

#define HEAD_MAX 16384
#define CHUNK_LINE_MAX 1024

struct hive_wconn {
        int fd;
        char buf[65536];
        size_t len, off;
        char head[HEAD_MAX];
        int status;
        bool chunked;
        bool until_close;
        uint64_t left;          /* of the body or the current chunk */
        bool in_chunk;
        bool done;
        int watch_fd;           /* a client whose hang-up ends the wait, or negative */
};

static uint64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static int send_all(int fd, const void *p, size_t n) {
        const char *s = p;

        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                s += k;
                n -= (size_t) k;
        }
        return 0;
}

static struct hive_wconn *wconn_new(int fd) {
        struct hive_wconn *c = calloc(1, sizeof(*c));

        if (!c)
                return NULL;
        c->fd = fd;
        c->watch_fd = -EBADF;
        return c;
}

int hive_wconn_from_fd(int fd, struct hive_wconn **ret) {
        struct hive_wconn *c = wconn_new(fd);

        if (!c)
                return -ENOMEM;
        *ret = c;
        return 0;
}

int hive_wconn_open(const char *socket_path, const char *method, const char *path, const char *content_type,
                    const char *body, size_t len, int timeout_ms, struct hive_wconn **ret) {
        _cleanup_(hive_wconn_freep) struct hive_wconn *c = NULL;
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
        _cleanup_(freep) char *head = NULL;
        int r;

        if (strlen(socket_path) >= sizeof(un.sun_path))
                return -ENAMETOOLONG;
        memcpy(un.sun_path, socket_path, strlen(socket_path) + 1);
        c = wconn_new(-EBADF);
        if (!c)
                return -ENOMEM;
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return -errno;
        /* Bounds connect() and the sends; reads use poll(). */
        (void) setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(c->fd, (struct sockaddr *) &un, sizeof(un)) < 0)
                return -errno;
        if (body) {
                if (asprintf(&head,
                             "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: %s\r\n"
                             "Content-Length: %zu\r\nAccept: */*\r\n\r\n",
                             method, path, content_type ? content_type : "application/json", len) < 0)
                        return -ENOMEM;
        } else if (asprintf(&head, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", method, path) < 0)
                return -ENOMEM;
        r = send_all(c->fd, head, strlen(head));
        if (r >= 0 && body)
                r = send_all(c->fd, body, len);
        if (r < 0)
                return r == -EAGAIN ? -ETIMEDOUT : r;
        *ret = TAKE_PTR(c);
        return 0;
}

void hive_wconn_watch(struct hive_wconn *c, int fd) {
        c->watch_fd = fd;
}

/* More bytes into buf: > 0, 0 at EOF, negative errno; -ECANCELED when the
 * watched client hangs up first. */
static ssize_t fill(struct hive_wconn *c, int timeout_ms) {
        /* Only the hang-up of the client counts: bytes it sends (a pipelined
         * request) are MHD's to read later. */
        struct pollfd p[2] = {
                { .fd = c->fd, .events = POLLIN },
                { .fd = c->watch_fd, .events = POLLRDHUP },
        };
        ssize_t k;
        int r;

        if (c->off > 0) {
                memmove(c->buf, c->buf + c->off, c->len - c->off);
                c->len -= c->off;
                c->off = 0;
        }
        if (c->len == sizeof(c->buf))
                return -EBADMSG;
        for (;;) {
                r = poll(p, c->watch_fd >= 0 ? 2 : 1, timeout_ms);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return -ETIMEDOUT;
                if (c->watch_fd >= 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
                        return -ECANCELED;
                if (!p[0].revents)
                        continue;
                k = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return errno == ECONNRESET || errno == EPIPE ? 0 : -errno;
                c->len += (size_t) k;
                return k;
        }
}

/* "SIZE[;ext]" before the CRLF at end: 1 to 16 hex digits and nothing
 * before them (strtoull() would skip whitespace, the CRLF too, and take a
 * sign or "0x"). */
static int parse_chunk_size(const char *p, const char *end, uint64_t *ret) {
        uint64_t v = 0;
        const char *q;

        for (q = p; q < end && isxdigit((unsigned char) *q); q++) {
                if (q - p == 16)
                        return -EBADMSG;
                int d = isdigit((unsigned char) *q) ? *q - '0' : tolower((unsigned char) *q) - 'a' + 10;
                v = v << 4 | (uint64_t) d;
        }
        if (q == p || (q < end && *q != ';'))
                return -EBADMSG;
        *ret = v;
        return 0;
}

const char *hive_wconn_header(struct hive_wconn *c, const char *name) {
        static __thread char value[1024];
        size_t nl = strlen(name);
        const char *p = strstr(c->head, "\r\n");

        while (p && p[2]) {
                p += 2;
                if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
                        const char *v = p + nl + 1;
                        while (*v == ' ' || *v == '\t')
                                v++;
                        /* One line: the hive forwards some values (Content-Type, Retry-After). */
                        snprintf(value, sizeof(value), "%.*s", (int) MIN(strcspn(v, "\r\n"), sizeof(value) - 1), v);
                        return value;
                }
                p = strstr(p, "\r\n");
        }
        return NULL;
}

int hive_wconn_read_head(struct hive_wconn *c, int timeout_ms) {
        const char *end, *te, *cl;
        size_t hl;
        ssize_t k;

        while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
                if (c->len >= HEAD_MAX - 1)
                        return -EBADMSG;
                k = fill(c, timeout_ms);
                if (k < 0)
                        return (int) k;
                if (k == 0)
                        return -ECONNRESET;
        }
        hl = (size_t) (end - c->buf) + 4;
        if (hl >= sizeof(c->head))
                return -EBADMSG;
        memcpy(c->head, c->buf, hl);
        c->head[hl] = 0;
        c->off = hl;
        if (sscanf(c->head, "HTTP/1.%*d %d", &c->status) != 1 || c->status < 100 || c->status > 599)
                return -EBADMSG;
        te = hive_wconn_header(c, "Transfer-Encoding");
        c->chunked = te && strcasestr(te, "chunked");
        if (!c->chunked) {
                uint64_t v;
                cl = hive_wconn_header(c, "Content-Length");
                if (cl && parse_uint64(cl, &v) >= 0) {
                        c->left = v;
                        c->done = v == 0;
                } else
                        c->until_close = true;
        }
        return c->status;
}

int hive_wconn_peek_body(struct hive_wconn *c, int timeout_ms, const char **ret, size_t *ret_len) {
        ssize_t k;

        /* Only what fits the buffer, which then still holds it for the reads. */
        if (c->chunked || c->until_close || c->left >= sizeof(c->buf))
                return -E2BIG;
        while (c->len - c->off < c->left) {
                k = fill(c, timeout_ms);
                if (k < 0)
                        return (int) k;
                if (k == 0)
                        return -ECONNRESET;
        }
        *ret = c->buf + c->off;
        *ret_len = (size_t) c->left;
        return 0;
}

int hive_wconn_status(const struct hive_wconn *c) {
        return c->status;
}

ssize_t hive_wconn_read(struct hive_wconn *c, void *out, size_t n, int timeout_ms) {
        uint64_t deadline = timeout_ms >= 0 ? now_ms() + (uint64_t) timeout_ms : 0;
        ssize_t k;

        for (;;) {
                size_t avail = c->len - c->off;
                int left_ms = -1;

                if (c->done)
                        return 0;
                if (timeout_ms >= 0) {
                        uint64_t t = now_ms();
                        left_ms = t >= deadline ? 0 : (int) (deadline - t);
                }
                if (!c->chunked) {
                        if (avail == 0) {
                                k = fill(c, left_ms);
                                if (k < 0)
                                        return k;
                                if (k == 0) {
                                        if (c->until_close) {
                                                c->done = true;
                                                return 0;
                                        }
                                        return -ECONNRESET;
                                }
                                continue;
                        }
                        size_t m = MIN(n, avail);
                        if (!c->until_close) {
                                m = (size_t) MIN((uint64_t) m, c->left);
                                c->left -= m;
                                if (c->left == 0)
                                        c->done = true;
                        }
                        memcpy(out, c->buf + c->off, m);
                        c->off += m;
                        return (ssize_t) m;
                }
                if (c->in_chunk && c->left > 0) {
                        if (avail == 0) {
                                k = fill(c, left_ms);
                                if (k < 0)
                                        return k;
                                if (k == 0)
                                        return -ECONNRESET;
                                continue;
                        }
                        size_t m = (size_t) MIN((uint64_t) MIN(n, avail), c->left);
                        memcpy(out, c->buf + c->off, m);
                        c->off += m;
                        c->left -= m;
                        return (ssize_t) m;
                }
                /* A chunk boundary: "\r\n" after the previous chunk's data, then "SIZE[;ext]\r\n". */
                const char *crlf = memmem(c->buf + c->off, avail, "\r\n", 2);
                /* The chunk's data ends with its CRLF, and nothing else; a
                 * size line is limited the same whether it arrived whole or
                 * in pieces. */
                if ((c->in_chunk && avail >= 2 && crlf != c->buf + c->off) ||
                    (!crlf && avail > CHUNK_LINE_MAX + 1 /* its CR may be here already */) ||
                    (crlf && (size_t) (crlf - (c->buf + c->off)) > CHUNK_LINE_MAX))
                        return -EBADMSG;
                if (!crlf) {
                        k = fill(c, left_ms);
                        if (k < 0)
                                return k;
                        if (k == 0)
                                return -ECONNRESET;
                        continue;
                }
                if (c->in_chunk) {
                        c->off += 2;
                        c->in_chunk = false;
                        continue;
                }
                uint64_t size;
                if (parse_chunk_size(c->buf + c->off, crlf, &size) < 0)
                        return -EBADMSG;
                c->off = (size_t) (crlf - c->buf) + 2;
                if (size == 0) {
                        c->done = true;
                        return 0;
                }
                c->left = size;
                c->in_chunk = true;
        }
}

int hive_wconn_read_all(struct hive_wconn *c, size_t max, int timeout_ms, char **ret, size_t *ret_len) {
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(max);
        char tmp[16384];
        ssize_t k;
        int r;

        while ((k = hive_wconn_read(c, tmp, sizeof(tmp), timeout_ms)) > 0) {
                r = strbuf_append(&b, tmp, (size_t) k);
                if (r < 0)
                        return r;
        }
        if (k < 0)
                return (int) k;
        return strbuf_steal(&b, ret, ret_len);
}

void hive_wconn_abort(struct hive_wconn *c) {
        if (c && c->fd >= 0)
                (void) shutdown(c->fd, SHUT_RDWR);
}

struct hive_wconn *hive_wconn_free(struct hive_wconn *c) {
        if (!c)
                return NULL;
        if (c->fd >= 0)
                close(c->fd);
        free(c);
        return NULL;
}

int hive_wconn_get(const char *socket_path, const char *path, int timeout_ms, int *ret_status, char **ret_body) {
        _cleanup_(hive_wconn_freep) struct hive_wconn *c = NULL;
        char *body;
        size_t len;
        int r;

        r = hive_wconn_open(socket_path, "GET", path, NULL, NULL, 0, timeout_ms, &c);
        if (r < 0)
                return r;
        r = hive_wconn_read_head(c, timeout_ms);
        if (r < 0)
                return r;
        r = hive_wconn_read_all(c, 1 << 20, timeout_ms, &body, &len);
        if (r < 0)
                return r;
        *ret_status = c->status;
        if (ret_body)
                *ret_body = body;
        else
                free(body);
        return 0;
}
