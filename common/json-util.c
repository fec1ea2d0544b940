/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "strutil.h"

int json_parse_strict(const char *s, size_t n, int max_depth, struct json_object **ret,
                      char *err, size_t errlen) {
        struct json_tokener *tok;
        struct json_object *o;
        enum json_tokener_error e;
        size_t end;

        if (n > INT32_MAX)
                return -E2BIG;
        if (memchr(s, 0, n)) {
                snprintf(err, errlen, "NUL byte in JSON text");
                return -EBADMSG;
        }
        /* json-c's own check lets overlong forms (0xC0 0xBC), surrogates and
         * code points past U+10FFFF through. */
        if (!utf8_is_valid(s, n)) {
                snprintf(err, errlen, "invalid UTF-8 in JSON text");
                return -EBADMSG;
        }
        tok = json_tokener_new_ex(max_depth);
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        o = json_tokener_parse_ex(tok, s, (int) n);
        e = json_tokener_get_error(tok);
        end = json_tokener_get_parse_end(tok);
        if (!o && e == json_tokener_continue && n > 0) {
                /* A bare number or literal could still go on: end the input
                 * the way json-c understands, with a NUL byte. */
                o = json_tokener_parse_ex(tok, "", 1);
                e = json_tokener_get_error(tok);
                end = n;
        }
        json_tokener_free(tok);

        if (!o && e == json_tokener_success) {
                /* The document is JSON null, which json-c represents as NULL. */
                for (size_t i = end; i < n; i++)
                        if (!strchr(" \t\r\n", s[i])) {
                                snprintf(err, errlen, "trailing data after the JSON value at byte %zu", i);
                                return -EBADMSG;
                        }
                *ret = NULL;
                return 0;
        }
        if (!o || e != json_tokener_success) {
                json_object_put(o);
                if (e == json_tokener_error_depth) {
                        snprintf(err, errlen, "JSON nested deeper than %d levels", max_depth);
                        return -E2BIG;
                }
                if (e == json_tokener_continue || e == json_tokener_success)
                        snprintf(err, errlen, "truncated JSON text");
                else
                        snprintf(err, errlen, "invalid JSON at byte %zu: %s", end,
                                 json_tokener_error_desc(e));
                return -EBADMSG;
        }
        for (size_t i = end; i < n; i++)
                if (!strchr(" \t\r\n", s[i])) {
                        json_object_put(o);
                        snprintf(err, errlen, "trailing data after the JSON value at byte %zu", i);
                        return -EBADMSG;
                }
        *ret = o;
        return 0;
}

static struct json_object *lookup(const struct json_object *o, const char *key) {
        struct json_object *v = NULL;

        if (!o || !json_object_is_type(o, json_type_object))
                return NULL;
        if (!json_object_object_get_ex(o, key, &v))
                return NULL;
        return v; /* NULL for an explicit null too */
}

int json_get_int64(const struct json_object *o, const char *key, int64_t min, int64_t max, int64_t *ret) {
        struct json_object *v = lookup(o, key);
        int64_t x;

        if (!v)
                return 0;
        if (!json_object_is_type(v, json_type_int))
                return -EINVAL;
        /* json-c clamps integers beyond int64 to its limits, which the range check catches
         * as long as the limits are narrower. */
        errno = 0;
        x = json_object_get_int64(v);
        if (x == INT64_MAX && json_object_get_uint64(v) > (uint64_t) INT64_MAX)
                return -ERANGE;
        if (x < min || x > max)
                return -ERANGE;
        *ret = x;
        return 1;
}

int json_get_uint64(const struct json_object *o, const char *key, uint64_t *ret) {
        struct json_object *v = lookup(o, key);

        if (!v)
                return 0;
        if (!json_object_is_type(v, json_type_int))
                return -EINVAL;
        if (json_object_get_int64(v) < 0)
                return -ERANGE;
        *ret = json_object_get_uint64(v);
        return 1;
}

int json_get_double(const struct json_object *o, const char *key, double min, double max, double *ret) {
        struct json_object *v = lookup(o, key);
        double x;

        if (!v)
                return 0;
        if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
                return -EINVAL;
        x = json_object_get_double(v);
        if (!isfinite(x))
                return -ERANGE;
        if (x < min || x > max)
                return -ERANGE;
        *ret = x;
        return 1;
}

int json_get_bool(const struct json_object *o, const char *key, bool *ret) {
        struct json_object *v = lookup(o, key);

        if (!v)
                return 0;
        if (!json_object_is_type(v, json_type_boolean))
                return -EINVAL;
        *ret = json_object_get_boolean(v);
        return 1;
}

int json_get_string(const struct json_object *o, const char *key, const char **ret, size_t *ret_len) {
        struct json_object *v = lookup(o, key);

        if (!v)
                return 0;
        if (!json_object_is_type(v, json_type_string))
                return -EINVAL;
        /* A caller without ret_len reads a C string: "a\u0000b" would pass as
         * "a" (another model id, a shorter prompt), so it is refused. */
        if (!ret_len && strlen(json_object_get_string(v)) != (size_t) json_object_get_string_len(v))
                return -EINVAL;
        *ret = json_object_get_string(v);
        if (ret_len)
                *ret_len = (size_t) json_object_get_string_len(v);
        return 1;
}

int json_get_typed(const struct json_object *o, const char *key, enum json_type type, struct json_object **ret) {
        struct json_object *v = lookup(o, key);

        if (!v)
                return 0;
        if (!json_object_is_type(v, type))
                return -EINVAL;
        *ret = v;
        return 1;
}

const char *json_to_string(struct json_object *o, size_t *ret_len) {
        size_t n = 0;
        const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);

        if (ret_len)
                *ret_len = s ? n : 0;
        return s;
}

struct json_object *json_new_string_n(const char *s, size_t n) {
        return json_object_new_string_len(s, (int) MIN(n, (size_t) INT32_MAX));
}

struct json_object *json_new_string_or_null(const char *s) {
        return s ? json_object_new_string(s) : NULL;
}
