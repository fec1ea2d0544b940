/* SPDX-License-Identifier: MIT */
#pragma once

/* The CLI's HTTP client, on libcurl's multi interface so that one loop
 * waits on the connection, on Ctrl+C (the signal pipe) and on a periodic
 * tick at once. Event streams are parsed as they arrive; everything else
 * is collected into a bounded body.
 *
 * Retries are limited to what is safe to repeat: a connection that was
 * refused (nothing was sent), and 503/429 answers carrying Retry-After
 * (the hive turned the request away before doing anything). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macros.h"
#include "sse.h"

#define KEEPER_HTTP_BODY_MAX (64 * 1024 * 1024)
#define KEEPER_HTTP_BUSY_ATTEMPTS 5

struct keeper_http;

struct keeper_http_response {
        long status;                    /* 0 when no response arrived */
        char *body;                     /* NUL-terminated; empty for a consumed event stream */
        size_t body_len;
        char content_type[128];
        int64_t retry_after;            /* seconds, -1 when absent */
        bool streamed;                  /* a 2xx event stream went to the callbacks */
        bool stream_incomplete;         /* it ended in the middle of an event */
};

void keeper_http_response_done(struct keeper_http_response *r);

struct keeper_http_stream {
        keeper_sse_event_fn on_event;
        keeper_sse_comment_fn on_comment;       /* may be NULL */
        /* About five times a second and after network activity; non-zero stops. */
        int (*on_tick)(void *userdata);
        /* After each SIGINT/SIGTERM; non-zero stops, 0 carries on (e.g. to
         * read the final event after a cancel). NULL: stop with -EINTR. */
        int (*on_interrupt)(void *userdata);
        void *userdata;
};

enum {
        KEEPER_HTTP_NO_RETRY = 1 << 0,          /* neither connect nor busy retries */
};

/* base_url like "http://127.0.0.1:7835" (a trailing slash is dropped);
 * api_key may be NULL. Both are copied. */
int keeper_http_new(const char *base_url, const char *api_key, struct keeper_http **ret);
struct keeper_http *keeper_http_free(struct keeper_http *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct keeper_http *, keeper_http_free);

/* Say on stderr when waiting for a busy hive (off with -q). */
void keeper_http_set_verbose_retries(struct keeper_http *h, bool on);
const char *keeper_http_base_url(const struct keeper_http *h);

/* Send one request; body (JSON) may be NULL. Returns 0 when any HTTP answer
 * arrived (look at ret->status), a callback's non-zero value when one
 * stopped the transfer, or a transport error with a message in err:
 * -ECONNREFUSED (and other connect errnos), -ENXIO (unknown host name),
 * -ETIMEDOUT, -ECONNRESET (closed early), -EPROTO (TLS), -EINVAL (bad URL),
 * -E2BIG (body or event over the limits), -EINTR (interrupted), -EIO. */
int keeper_http_request(struct keeper_http *h, const char *method, const char *path, const char *body,
                        size_t body_len, unsigned flags, const struct keeper_http_stream *stream,
                        struct keeper_http_response *ret, char *err, size_t errlen);

/* Percent-encode one path segment; free() the result. NULL on ENOMEM. */
char *keeper_http_escape(const char *s);
