/* SPDX-License-Identifier: MIT */
/* The hive's reading of a worker's answer: hive/wclient.c's HTTP/1.1
 * response parser (status line, headers, Content-Length, chunked and
 * until-close bodies, peek_body, read_all) on a real socket fed by the
 * input, then what the hive does with the body (hive/wreply.c): the SSE
 * frames it relays and their event names, the error of a failed request,
 * the "not serving" 503.
 *
 * Each input is read twice: written at once into a stream socket, and cut
 * into records of a SOCK_SEQPACKET socket (each recv() then gets one), so
 * that the parser sees the bytes arrive in pieces. Both must decode the
 * same, and a decoded body must be what a strict reading of the framing
 * (written here from RFC 9112, not from wclient.c) gives.
 *
 * Input: byte 0 flags (bit 0: the rest is a body, not a response; bit 1:
 * peek_body first; bit 2: read_all instead of reads; bits 3-4: read_all's
 * limit), byte 1 the number of cut sizes that follow (0-15), then the data.
 * The cut sizes are the records' sizes (1-64) and the reads' sizes. */

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "hive/wclient.h"
#include "hive/wreply.h"
#include "json-util.h"
#include "macros.h"
#include "strutil.h"

#define INPUT_MAX (32u << 10)   /* below the reader's 64 KiB buffer, so that no record is cut */
#define TIMEOUT_MS 20000

struct feed {
        int fd;
        const char *p;
        size_t n;
        const uint8_t *cuts;
        size_t n_cuts;
};

static void *writer(void *arg) {
        struct feed *f = arg;

        for (size_t i = 0, c = 0; i < f->n;) {
                size_t k = f->n_cuts ? 1 + f->cuts[c++ % f->n_cuts] % 64u : f->n - i;
                ssize_t w;
                if (k > f->n - i)
                        k = f->n - i;
                w = send(f->fd, f->p + i, k, MSG_NOSIGNAL);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        break;          /* the reader gave up and closed its end */
                /* A record goes whole; a stream may take part of it. */
                FUZZ_CHECK((size_t) w == k || !f->n_cuts);
                i += (size_t) w;
        }
        close(f->fd);
        return NULL;
}

struct outcome {
        int head;
        char headers[4][1024];
        bool has[4];
        int peek;
        struct strbuf peeked;
        int end;                        /* of the body: 0, or the error */
        struct strbuf body;
};

static const char *const names[4] = { "Content-Type", "Transfer-Encoding", "Content-Length", "Retry-After" };

static void outcome_done(struct outcome *o) {
        strbuf_done(&o->peeked);
        strbuf_done(&o->body);
}

static void read_reply(const char *p, size_t n, const uint8_t *cuts, size_t n_cuts, bool packets, unsigned flags,
                       struct outcome *o) {
        _cleanup_(hive_wconn_freep) struct hive_wconn *c = NULL;
        struct feed f = { .p = p, .n = n, .cuts = cuts, .n_cuts = packets ? n_cuts : 0 };
        pthread_t t;
        int sv[2];

        *o = (struct outcome) { .peeked = STRBUF_INIT(1u << 20), .body = STRBUF_INIT(1u << 20), .peek = 1, .end = 1 };
        FUZZ_CHECK(socketpair(AF_UNIX, (packets ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC, 0, sv) == 0);
        f.fd = sv[1];
        FUZZ_CHECK(hive_wconn_from_fd(sv[0], &c) == 0);
        FUZZ_CHECK(pthread_create(&t, NULL, writer, &f) == 0);

        o->head = hive_wconn_read_head(c, TIMEOUT_MS);
        FUZZ_CHECK(o->head == -EBADMSG || o->head == -ECONNRESET || (o->head >= 100 && o->head <= 599));
        if (o->head < 0)
                goto out;
        FUZZ_CHECK(hive_wconn_status(c) == o->head);
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                const char *v = hive_wconn_header(c, names[i]);
                if (!v)
                        continue;
                FUZZ_CHECK(strlen(v) < sizeof(o->headers[i]));
                FUZZ_CHECK(!strpbrk(v, "\r\n"));
                snprintf(o->headers[i], sizeof(o->headers[i]), "%s", v);
                o->has[i] = true;
        }

        if (flags & 2) {
                const char *b = NULL;
                size_t bl = 0;
                o->peek = hive_wconn_peek_body(c, TIMEOUT_MS, &b, &bl);
                FUZZ_CHECK(o->peek == 0 || o->peek == -E2BIG || o->peek == -ECONNRESET);
                if (o->peek == 0) {
                        FUZZ_CHECK(bl < 65536 && bl <= n);
                        FUZZ_CHECK(strbuf_append(&o->peeked, b, bl) == 0);
                }
        }
        if (flags & 4) {
                static const size_t maxes[4] = { 1u << 20, 0, 7, 300 };
                size_t max = maxes[(flags >> 3) & 3];
                char *all = NULL;
                size_t al = 0;
                o->end = hive_wconn_read_all(c, max, TIMEOUT_MS, &all, &al);
                FUZZ_CHECK(o->end == 0 || o->end == -ECONNRESET || o->end == -EBADMSG || o->end == -E2BIG);
                if (o->end == 0) {
                        FUZZ_CHECK(all && all[al] == 0 && al <= max && al <= n);
                        FUZZ_CHECK(strbuf_append(&o->body, all, al) == 0);
                        free(all);
                }
        } else {
                char buf[4096];
                for (size_t i = 0;; i++) {
                        size_t want = n_cuts ? 1 + (size_t) cuts[i % n_cuts] * 13u % sizeof(buf) : sizeof(buf);
                        ssize_t k = hive_wconn_read(c, buf, want, TIMEOUT_MS);
                        if (k <= 0) {
                                o->end = (int) k;
                                break;
                        }
                        FUZZ_CHECK((size_t) k <= want);
                        FUZZ_CHECK(strbuf_append(&o->body, buf, (size_t) k) == 0);
                        FUZZ_CHECK(o->body.len <= n);
                }
                FUZZ_CHECK(o->end == 0 || o->end == -ECONNRESET || o->end == -EBADMSG);
                /* The end stays the end. */
                if (o->end == 0)
                        FUZZ_CHECK(hive_wconn_read(c, buf, sizeof(buf), TIMEOUT_MS) == 0);
        }
        if (o->peek == 0) {
                /* A peeked body is still there for the reads, and is all of it. */
                FUZZ_CHECK(o->end == 0 || o->end == -E2BIG);
                if (o->end == 0)
                        FUZZ_CHECK(o->body.len == o->peeked.len &&
                                   (o->body.len == 0 || memcmp(o->body.data, o->peeked.data, o->body.len) == 0));
        }
out:
        /* Closing our end first stops a writer that is blocked on a full socket. */
        c = hive_wconn_free(c);
        FUZZ_CHECK(pthread_join(t, NULL) == 0);
}

/* A strict chunked decoder: 1-16 hex digits, an optional ";ext", CRLF, the
 * data, CRLF; "0" ends it. Lines over 1024 bytes are refused. Returns what
 * a reader must report (0, -ECONNRESET when the bytes end early, -EBADMSG)
 * and the data before that point. */
static int ref_chunked(const char *p, size_t n, struct strbuf *out) {
        size_t i = 0;

        for (;;) {
                const char *crlf = memmem(p + i, n - i, "\r\n", 2);
                uint64_t size = 0;
                size_t d;

                if (!crlf)
                        return n - i > 1025 ? -EBADMSG : -ECONNRESET;
                if ((size_t) (crlf - (p + i)) > 1024)
                        return -EBADMSG;
                for (d = 0; p + i + d < crlf && strchr("0123456789abcdefABCDEF", p[i + d]) && p[i + d]; d++) {
                        if (d == 16)
                                return -EBADMSG;
                        size = size << 4 | (uint64_t) (p[i + d] <= '9' ? p[i + d] - '0' : (p[i + d] | 0x20) - 'a' + 10);
                }
                if (d == 0 || (p + i + d < crlf && p[i + d] != ';'))
                        return -EBADMSG;
                i = (size_t) (crlf - p) + 2;
                if (size == 0)
                        return 0;
                if (n - i < size) {
                        FUZZ_CHECK(strbuf_append(out, p + i, n - i) == 0);
                        return -ECONNRESET;
                }
                FUZZ_CHECK(strbuf_append(out, p + i, (size_t) size) == 0);
                i += (size_t) size;
                if (n - i < 2)
                        return -ECONNRESET;
                if (p[i] != '\r' || p[i + 1] != '\n')
                        return -EBADMSG;
                i += 2;
        }
}

/* What the framing gives, by the headers wclient read. */
static void check_reference(const char *p, size_t n, const struct outcome *o, unsigned flags) {
        _cleanup_(strbuf_donep) struct strbuf want = STRBUF_INIT(1u << 20);
        const char *end = memmem(p, n, "\r\n\r\n", 4);
        size_t hl;
        int r;

        FUZZ_CHECK(end);
        hl = (size_t) (end - p) + 4;
        p += hl;
        n -= hl;
        if (o->has[1] && strcasestr(o->headers[1], "chunked"))
                r = ref_chunked(p, n, &want);
        else {
                uint64_t cl;
                if (o->has[2] && parse_uint64(o->headers[2], &cl) >= 0) {
                        r = n >= cl ? 0 : -ECONNRESET;
                        FUZZ_CHECK(strbuf_append(&want, p, (size_t) MIN((uint64_t) n, cl)) == 0);
                } else {
                        r = 0;
                        FUZZ_CHECK(strbuf_append(&want, p, n) == 0);
                }
        }
        if (o->end == -E2BIG)
                return;
        if (o->end != r)
                fprintf(stderr, "wclient: %d, strict reading: %d\n", o->end, r);
        FUZZ_CHECK(o->end == r);
        /* read_all drops what came before an error. */
        if (r == 0 || !(flags & 4))
                FUZZ_CHECK(o->body.len == want.len &&
                           (want.len == 0 || memcmp(o->body.data, want.data, want.len) == 0));
}

/* What the hive does with a body: relay frames (200), or read the error. */
static void use_body(int status, const char *b, size_t n) {
        _cleanup_(json_object_putp) struct json_object *j = NULL;
        const char *code, *msg;
        size_t i = 0, fl;
        char name[32];

        if (status == 200) {
                while ((fl = hive_wreply_frame_len(b + i, n - i)) > 0) {
                        FUZZ_CHECK(fl >= 2 && fl <= n - i);
                        FUZZ_CHECK(b[i + fl - 2] == '\n' && b[i + fl - 1] == '\n');
                        FUZZ_CHECK(!memmem(b + i, fl - 1, "\n\n", 2));
                        hive_wreply_frame_event(b + i, fl, name, sizeof(name));
                        FUZZ_CHECK(strlen(name) < sizeof(name));
                        FUZZ_CHECK(!strchr(name, '\n'));
                        i += fl;
                }
                FUZZ_CHECK(i == n || !memmem(b + i, n - i, "\n\n", 2));
                return;
        }
        hive_wreply_error(b, n, &j, &code, &msg);
        if (code) {
                FUZZ_CHECK(j);
                FUZZ_CHECK(strlen(code) > 0 && strlen(code) < 64);
                FUZZ_CHECK(strspn(code, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(code));
        }
        if (msg)
                FUZZ_CHECK(j && utf8_is_valid(msg, strlen(msg)));
        if (status == 503)
                (void) hive_wreply_not_serving(b, n);
}

static bool same(const struct outcome *a, const struct outcome *b) {
        if (a->head != b->head || a->peek != b->peek || a->end != b->end)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (a->has[i] != b->has[i] || (a->has[i] && !streq(a->headers[i], b->headers[i])))
                        return false;
        return a->peeked.len == b->peeked.len &&
               (!a->peeked.len || !memcmp(a->peeked.data, b->peeked.data, a->peeked.len)) &&
               a->body.len == b->body.len && (!a->body.len || !memcmp(a->body.data, b->body.data, a->body.len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct outcome whole, pieces;

        if (size < 2 || size > INPUT_MAX)
                return 0;
        unsigned flags = data[0];
        size_t n_cuts = data[1] % 16;
        if (size < 2 + n_cuts)
                return 0;
        const uint8_t *cuts = data + 2;
        size_t n = size - 2 - n_cuts;
        char *p = malloc(n ? n : 1);
        FUZZ_CHECK(p);
        memcpy(p, data + 2 + n_cuts, n);

        if (flags & 1) {
                use_body(200, p, n);
                use_body(500, p, n);
                use_body(503, p, n);
                free(p);
                return 0;
        }

        read_reply(p, n, cuts, n_cuts, false, flags, &whole);
        read_reply(p, n, cuts, n_cuts, true, flags, &pieces);
        if (!same(&whole, &pieces))
                fprintf(stderr, "whole: head %d peek %d end %d body %zu; pieces: head %d peek %d end %d body %zu\n",
                        whole.head, whole.peek, whole.end, whole.body.len, pieces.head, pieces.peek, pieces.end,
                        pieces.body.len);
        FUZZ_CHECK(same(&whole, &pieces));
        if (whole.head > 0) {
                check_reference(p, n, &whole, flags);
                if (whole.end == 0)
                        use_body(whole.head, whole.body.data ? whole.body.data : "", whole.body.len);
        }
        outcome_done(&whole);
        outcome_done(&pieces);
        free(p);
        return 0;
}
