/* SPDX-License-Identifier: MIT */
/* The CLI's server-sent events parser on arbitrary streams, fed whole and
 * then in chunks whose sizes come from the input: both must give the same
 * events, comments and result (a chunk boundary may fall anywhere, between
 * a CR and its LF too). The text of each event also goes through the
 * terminal width helpers the CLI uses to lay out what the hive says. */

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "keeper/sse.h"
#include "strutil.h"
#include "keeper/term.h"

/* Every callback as one record: "E<name>\0<data>" or "C<text>", length-prefixed. */
struct log {
        struct strbuf b;
        unsigned n;
        unsigned stop_after;            /* return 1 from the nth callback, 0: never */
};

static int record(struct log *l, char kind, const char *name, const char *p, size_t n) {
        size_t nl = name ? strlen(name) : 0;
        uint64_t total = 1 + nl + 1 + n;

        FUZZ_CHECK(strbuf_append(&l->b, &total, sizeof(total)) == 0);
        FUZZ_CHECK(strbuf_append(&l->b, &kind, 1) == 0);
        FUZZ_CHECK(strbuf_append(&l->b, name ? name : "", nl + 1) == 0);
        FUZZ_CHECK(strbuf_append(&l->b, p, n) == 0);
        return ++l->n == l->stop_after ? 1 : 0;
}

static int on_event(void *userdata, const char *event, const char *data, size_t len) {
        FUZZ_CHECK(event && data);
        FUZZ_CHECK(len <= KEEPER_SSE_EVENT_MAX);
        FUZZ_CHECK(strlen(event) <= 256);
        FUZZ_CHECK(data[len] == 0);
        for (size_t cols = 0; cols < 100; cols += 37) {
                size_t k = keeper_term_prefix_fitting(data, len, cols);
                FUZZ_CHECK(k <= len);
                FUZZ_CHECK(keeper_term_width(data, k) <= cols);
        }
        return record(userdata, 'E', event, data, len);
}

static int on_comment(void *userdata, const char *text, size_t len) {
        return record(userdata, 'C', NULL, text, len);
}

static int run(const char *p, size_t n, const uint8_t *cuts, size_t n_cuts, unsigned stop_after, struct log *l,
               bool *ret_pending) {
        struct keeper_sse s;
        size_t i = 0, c = 0;
        int r = 0;

        *l = (struct log) { .b = STRBUF_INIT(64u << 20), .stop_after = stop_after };
        keeper_sse_init(&s, on_event, on_comment, l);
        while (i < n && r == 0) {
                uint8_t cut = n_cuts ? cuts[c++ % n_cuts] : 0;
                size_t k = n_cuts ? 1 + cut % 17u : n - i;
                if (k > n - i)
                        k = n - i;
                /* Empty chunks change nothing. */
                if (cut & 0x80)
                        FUZZ_CHECK(keeper_sse_feed(&s, p + i, 0) == 0);
                r = keeper_sse_feed(&s, p + i, k);
                i += k;
        }
        *ret_pending = keeper_sse_pending(&s);
        keeper_sse_done(&s);
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct log whole, chunked;
        bool pw, pc;
        int rw, rc;

        if (size < 2)
                return 0;
        /* byte 0: how many cut sizes follow; byte 1: which callback stops the parse. */
        size_t n_cuts = data[0] % 16;
        unsigned stop_after = data[1] % 8;
        if (size < 2 + n_cuts)
                return 0;
        const uint8_t *cuts = data + 2;
        size_t n = size - 2 - n_cuts;
        char *stream = malloc(n ? n : 1);
        FUZZ_CHECK(stream);
        memcpy(stream, data + 2 + n_cuts, n);

        rw = run(stream, n, NULL, 0, stop_after, &whole, &pw);
        rc = run(stream, n, cuts, n_cuts, stop_after, &chunked, &pc);
        FUZZ_CHECK(rw == 0 || rw == 1 || rw == -E2BIG);
        FUZZ_CHECK(rw == rc);
        FUZZ_CHECK(whole.n == chunked.n);
        FUZZ_CHECK(whole.b.len == chunked.b.len && (whole.b.len == 0 || memcmp(whole.b.data, chunked.b.data, whole.b.len) == 0));
        if (rw == 0)
                FUZZ_CHECK(pw == pc);
        strbuf_done(&whole.b);
        strbuf_done(&chunked.b);
        free(stream);
        return 0;
}
