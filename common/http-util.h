/* SPDX-License-Identifier: MIT */
#pragma once

/* libmicrohttpd helpers shared by the worker and the hive: JSON and error
 * responses in one shape ({"error":{"code","message","type"}}), bearer-token
 * checks, and server-sent-event framing. */

#include <json-c/json.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

#include "macros.h"
#include "strutil.h"

/* Queue body (consumed: the reference is dropped) as application/json. */
enum MHD_Result http_queue_json(struct MHD_Connection *c, unsigned status, struct json_object *body);
/* Queue {"error":{...}}. retry_after_s > 0 adds a Retry-After header;
 * 401 adds WWW-Authenticate, 405 adds Allow when allow is given. */
enum MHD_Result http_queue_error(struct MHD_Connection *c, unsigned status, const char *code,
                                 unsigned retry_after_s, const char *allow, const char *fmt, ...)
        _printf_(6, 7);
enum MHD_Result http_queue_text(struct MHD_Connection *c, unsigned status, const char *content_type,
                                const char *text, size_t len);
/* The error object alone, for SSE error events and streamed OpenAI errors. */
struct json_object *http_error_object(unsigned status, const char *code, const char *message);
/* OpenAI's "type" for a status: invalid_request_error, authentication_error, ... */
const char *http_error_type(unsigned status);

/* Does the request carry "Authorization: Bearer <key>"? Constant-time compare. */
bool http_bearer_ok(struct MHD_Connection *c, const char *key, size_t key_len);

/* Append one SSE event: "event: NAME\n" (when name is non-NULL), "data: JSON\n\n". */
int sse_append_event(struct strbuf *b, const char *name, const char *data, size_t len);

/* Common response headers for event streams. */
void http_add_sse_headers(struct MHD_Response *r);
