/* SPDX-License-Identifier: MIT */
#pragma once

/* json-c helpers for request bodies from the network: strict parsing with a
 * depth limit, and typed field access that tells "absent" from "wrong type"
 * from "out of range", so that every bad field gets a precise 400. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macros.h"

static inline void json_object_putp(struct json_object **o) {
        if (*o)
                json_object_put(*o);
}

/* Parse exactly one JSON value from s[0..n): RFC 8259 strict, valid UTF-8,
 * nesting up to max_depth, nothing but whitespace after it. The document
 * "null" gives *ret = NULL (json-c's null). Errors:
 * -EBADMSG (message in err), -E2BIG (nesting too deep). */
int json_parse_strict(const char *s, size_t n, int max_depth, struct json_object **ret,
                      char *err, size_t errlen);

/* Typed getters. Return 0 when the key is absent or null (*ret untouched),
 * 1 when *ret was set, -EINVAL for the wrong type, -ERANGE out of [min, max]. */
int json_get_int64(const struct json_object *o, const char *key, int64_t min, int64_t max, int64_t *ret);
int json_get_uint64(const struct json_object *o, const char *key, uint64_t *ret);
/* Integers are accepted for doubles; NaN and infinities never appear in strict JSON. */
int json_get_double(const struct json_object *o, const char *key, double min, double max, double *ret);
int json_get_bool(const struct json_object *o, const char *key, bool *ret);
/* *ret points into o. Without ret_len, a string holding a NUL is -EINVAL. */
int json_get_string(const struct json_object *o, const char *key, const char **ret, size_t *ret_len);
/* Any value of the given type (object, array). */
int json_get_typed(const struct json_object *o, const char *key, enum json_type type, struct json_object **ret);

/* Compact serialization; the string belongs to o. */
const char *json_to_string(struct json_object *o, size_t *ret_len);

/* Shorthands that never return NULL for the value argument of
 * json_object_object_add (json-c treats NULL as JSON null). */
struct json_object *json_new_string_n(const char *s, size_t n);
struct json_object *json_new_string_or_null(const char *s);
