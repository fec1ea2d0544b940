/* SPDX-License-Identifier: MIT */
#pragma once

/* What the hive makes of a worker's answers, apart from the HTTP framing
 * (wclient.c): the event name of each SSE frame it relays, the error of a
 * request that failed, and whether a 503 says the worker is not serving.
 * Workers run the hive's own code, but a wedged, dying or replaced one may
 * send anything: nothing here trusts the bytes. */

#include <stdbool.h>
#include <stddef.h>

struct json_object;

/* The length of the first complete frame ("...\n\n") of p[0..n), or 0. */
size_t hive_wreply_frame_len(const char *p, size_t n);

/* The value of the frame's first "event:" line (leading spaces dropped), cut
 * to n - 1 bytes; "" for a frame without one. */
void hive_wreply_frame_event(const char *f, size_t len, char *name, size_t n);

/* The error of a failed request's body ({"error": {"code", "message"}}):
 * code is a valid error code (lowercase letters, digits, '_', at most 63
 * bytes) or NULL, message a string without NUL or NULL. Both point into
 * *ret_json, which the caller puts; it is NULL when the body is no JSON
 * object. */
void hive_wreply_error(const char *body, size_t len, struct json_object **ret_json, const char **ret_code,
                       const char **ret_message);

/* A 503 body saying the worker is not serving ("shutting_down" or "loading"). */
bool hive_wreply_not_serving(const char *body, size_t len);
