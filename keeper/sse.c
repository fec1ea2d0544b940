/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "sse.h"

void keeper_sse_init(struct keeper_sse *s, keeper_sse_event_fn on_event, keeper_sse_comment_fn on_comment,
                     void *userdata) {
        *s = (struct keeper_sse) {
                .line = STRBUF_INIT(KEEPER_SSE_LINE_MAX),
                .event = STRBUF_INIT(256),
                .data = STRBUF_INIT(KEEPER_SSE_EVENT_MAX),
                .on_event = on_event,
                .on_comment = on_comment,
                .userdata = userdata,
        };
}

void keeper_sse_done(struct keeper_sse *s) {
        strbuf_done(&s->line);
        strbuf_done(&s->event);
        strbuf_done(&s->data);
}

bool keeper_sse_pending(const struct keeper_sse *s) {
        return s->have_data || s->line.len > 0 || s->event.len > 0;
}

static int dispatch(struct keeper_sse *s) {
        int r = 0;

        if (s->have_data)
                r = s->on_event(s->userdata, s->event.len > 0 ? s->event.data : "message",
                                s->data.data ? s->data.data : "", s->data.len);
        strbuf_reset(&s->event);
        strbuf_reset(&s->data);
        s->have_data = false;
        return r;
}

static int process_line(struct keeper_sse *s, const char *l, size_t n) {
        const char *colon, *value;
        size_t field_len, value_len;
        int r;

        if (n == 0)
                return dispatch(s);
        if (l[0] == ':')
                return s->on_comment ? s->on_comment(s->userdata, l + 1, n - 1) : 0;

        colon = memchr(l, ':', n);
        field_len = colon ? (size_t) (colon - l) : n;
        value = colon ? colon + 1 : l + n;
        value_len = colon ? n - field_len - 1 : 0;
        if (value_len > 0 && value[0] == ' ') {
                value++;
                value_len--;
        }

        if (field_len == 4 && memcmp(l, "data", 4) == 0) {
                if (s->have_data && (r = strbuf_append(&s->data, "\n", 1)) < 0)
                        return r;
                if ((r = strbuf_append(&s->data, value, value_len)) < 0)
                        return r;
                s->have_data = true;
        } else if (field_len == 5 && memcmp(l, "event", 5) == 0) {
                strbuf_reset(&s->event);
                if ((r = strbuf_append(&s->event, value, value_len)) < 0)
                        return r;
        }
        /* "id", "retry" and unknown fields are ignored, as the format says. */
        return 0;
}

int keeper_sse_feed(struct keeper_sse *s, const char *p, size_t n) {
        size_t i = 0;
        int r;

        if (s->last_cr && n > 0) {
                if (p[0] == '\n')
                        i = 1;
                s->last_cr = false;
        }
        while (i < n) {
                const char *start = p + i;
                size_t k = 0;

                while (i + k < n && start[k] != '\n' && start[k] != '\r')
                        k++;
                /* The same bound whether a line arrives whole or in pieces. */
                if (s->line.len + k > KEEPER_SSE_LINE_MAX)
                        return -E2BIG;
                if (i + k == n) {
                        /* No end of line yet: keep the partial line. */
                        return strbuf_append(&s->line, start, k);
                }
                if (s->line.len > 0) {
                        if ((r = strbuf_append(&s->line, start, k)) < 0)
                                return r;
                        r = process_line(s, s->line.data, s->line.len);
                        strbuf_reset(&s->line);
                } else
                        r = process_line(s, start, k);
                if (r != 0)
                        return r;
                i += k;
                if (p[i] == '\r') {
                        if (i + 1 < n) {
                                if (p[i + 1] == '\n')
                                        i++;
                        } else
                                s->last_cr = true;
                }
                i++;
        }
        return 0;
}
