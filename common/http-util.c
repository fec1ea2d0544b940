/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http-util.h"
#include "json-util.h"
#include "macros.h"
#include "strutil.h"

const char *http_error_type(unsigned status) {
        switch (status) {
        case 400:
        case 404:
        case 405:
        case 409:
        case 413:
        case 415:
                return "invalid_request_error";
        case 401:
                return "authentication_error";
        case 403:
                return "permission_error";
        case 429:
                return "rate_limit_error";
        case 503:
                return "overloaded_error";
        default:
                return status >= 500 ? "server_error" : "invalid_request_error";
        }
}

struct json_object *http_error_object(unsigned status, const char *code, const char *message) {
        struct json_object *o = json_object_new_object(), *e = json_object_new_object();
        _cleanup_(freep) char *scrubbed = NULL;

        /* Messages quote client input cut to a length, and json-c writes bytes
         * through as they are: strict clients would refuse the whole answer. */
        if (!utf8_is_valid(message, strlen(message))) {
                scrubbed = strdup(message);
                if (scrubbed)
                        utf8_scrub(scrubbed);
                message = scrubbed ? scrubbed : "(message not valid UTF-8)";
        }
        if (!o || !e) {
                json_object_put(o);
                json_object_put(e);
                return NULL;
        }
        json_object_object_add(e, "code", json_object_new_string(code));
        json_object_object_add(e, "message", json_object_new_string(message));
        json_object_object_add(e, "type", json_object_new_string(http_error_type(status)));
        json_object_object_add(o, "error", e);
        return o;
}

enum MHD_Result http_queue_text(struct MHD_Connection *c, unsigned status, const char *content_type,
                                const char *text, size_t len) {
        struct MHD_Response *r;
        enum MHD_Result ret;

        r = MHD_create_response_from_buffer(len, (void *) text, MHD_RESPMEM_MUST_COPY);
        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        ret = MHD_queue_response(c, status, r);
        MHD_destroy_response(r);
        return ret;
}

enum MHD_Result http_queue_json(struct MHD_Connection *c, unsigned status, struct json_object *body) {
        _cleanup_(json_object_putp) struct json_object *o = body;
        const char *s;
        size_t n;

        if (!o)
                return MHD_NO;
        s = json_to_string(o, &n);
        if (!s)
                return MHD_NO;
        /* A trailing newline keeps terminal users of curl happy. */
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(SIZE_MAX - 1);
        if (strbuf_append(&b, s, n) < 0 || strbuf_puts(&b, "\n") < 0)
                return MHD_NO;
        return http_queue_text(c, status, "application/json", b.data, b.len);
}

enum MHD_Result http_queue_error(struct MHD_Connection *c, unsigned status, const char *code,
                                 unsigned retry_after_s, const char *allow, const char *fmt, ...) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct MHD_Response *r;
        enum MHD_Result ret;
        char msg[1024], ra[16];
        const char *s;
        size_t n;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        o = http_error_object(status, code, msg);
        if (!o)
                return MHD_NO;
        s = json_to_string(o, &n);
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(SIZE_MAX - 1);
        if (!s || strbuf_append(&b, s, n) < 0 || strbuf_puts(&b, "\n") < 0)
                return MHD_NO;
        r = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        if (retry_after_s > 0) {
                snprintf(ra, sizeof(ra), "%u", retry_after_s);
                MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
        }
        if (status == MHD_HTTP_UNAUTHORIZED)
                MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        if (allow)
                MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
        ret = MHD_queue_response(c, status, r);
        MHD_destroy_response(r);
        return ret;
}

bool http_bearer_ok(struct MHD_Connection *c, const char *key, size_t key_len) {
        const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        const char *t;

        if (!h || !str_startswith_ci(h, "Bearer "))
                return false;
        t = h + 7;
        while (*t == ' ')
                t++;
        return str_equal_consttime(t, strlen(t), key, key_len);
}

int sse_append_event(struct strbuf *b, const char *name, const char *data, size_t len) {
        int r;

        if (name) {
                r = strbuf_printf(b, "event: %s\n", name);
                if (r < 0)
                        return r;
        }
        /* JSON from json-c never holds a raw newline, so one data line suffices. */
        r = strbuf_puts(b, "data: ");
        if (r < 0)
                return r;
        r = strbuf_append(b, data, len);
        if (r < 0)
                return r;
        return strbuf_puts(b, "\n\n");
}

void http_add_sse_headers(struct MHD_Response *r) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        /* Tell reverse proxies (nginx) not to buffer the stream. */
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
}
