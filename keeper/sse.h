/* SPDX-License-Identifier: MIT */
#pragma once

/* An incremental parser for server-sent events (the WHATWG event-stream
 * format): feed it bytes as they arrive, and it calls back once per event.
 * Lines end in LF, CRLF or CR; "data:" lines of one event are joined with
 * LF; comments (":...") are reported separately, since the hive sends them
 * while a worker loads. Lines and events have hard size limits. */

#include <stdbool.h>
#include <stddef.h>

#include "strutil.h"

#define KEEPER_SSE_LINE_MAX (1024 * 1024)
#define KEEPER_SSE_EVENT_MAX (4 * 1024 * 1024)

/* event is "message" when the stream named none. A non-zero return stops
 * parsing and is handed back by keeper_sse_feed(). */
typedef int (*keeper_sse_event_fn)(void *userdata, const char *event, const char *data, size_t len);
typedef int (*keeper_sse_comment_fn)(void *userdata, const char *text, size_t len);

struct keeper_sse {
        struct strbuf line;
        struct strbuf event;
        struct strbuf data;
        bool have_data;
        bool last_cr;                   /* the previous chunk ended in CR: skip a leading LF */
        keeper_sse_event_fn on_event;
        keeper_sse_comment_fn on_comment;
        void *userdata;
};

void keeper_sse_init(struct keeper_sse *s, keeper_sse_event_fn on_event, keeper_sse_comment_fn on_comment,
                     void *userdata);
void keeper_sse_done(struct keeper_sse *s);
/* Returns 0, the callback's non-zero value, or -E2BIG past a limit. */
int keeper_sse_feed(struct keeper_sse *s, const char *p, size_t n);
/* Is an event half-received (the stream must not end here)? */
bool keeper_sse_pending(const struct keeper_sse *s);
