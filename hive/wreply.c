/* SPDX-License-Identifier: MIT */
#include <json-c/json.h>
#include <string.h>

#include "json-util.h"
#include "macros.h"
#include "strutil.h"
#include "wreply.h"

size_t hive_wreply_frame_len(const char *p, size_t n) {
        const char *sep = n ? memmem(p, n, "\n\n", 2) : NULL;

        return sep ? (size_t) (sep - p) + 2 : 0;
}

void hive_wreply_frame_event(const char *f, size_t len, char *name, size_t n) {
        name[0] = 0;
        for (size_t i = 0; i < len;) {
                const char *nl = memchr(f + i, '\n', len - i);
                size_t ll = nl ? (size_t) (nl - (f + i)) : len - i;
                if (ll > 6 && strncmp(f + i, "event:", 6) == 0) {
                        const char *v = f + i + 6;
                        size_t vl = ll - 6;
                        while (vl && *v == ' ')
                                v++, vl--;
                        snprintf(name, n, "%.*s", (int) MIN(vl, n - 1), v);
                        return;
                }
                i += ll + 1;
        }
}

static bool error_code_ok(const char *s) {
        size_t n = strlen(s);

        return n > 0 && n < 64 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

void hive_wreply_error(const char *body, size_t len, struct json_object **ret_json, const char **ret_code,
                       const char **ret_message) {
        struct json_object *o = NULL, *e = NULL;
        const char *code = NULL, *msg = NULL;

        /* The code goes into the job's error event as it is, and clients
         * match on it: only what looks like one of ours. */
        if (json_parse_strict(body, len, 16, &o, NULL, 0) >= 0 && json_object_is_type(o, json_type_object) &&
            json_get_typed(o, "error", json_type_object, &e) > 0) {
                if (json_get_string(e, "code", &code, NULL) <= 0 || !error_code_ok(code))
                        code = NULL;
                if (json_get_string(e, "message", &msg, NULL) <= 0)
                        msg = NULL;
        }
        *ret_json = o;
        *ret_code = code;
        *ret_message = msg;
}

bool hive_wreply_not_serving(const char *body, size_t len) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *e = NULL, *code = NULL;
        const char *s;

        if (json_parse_strict(body, len, 8, &o, NULL, 0) < 0)
                return false;
        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "error", &e) ||
            !json_object_object_get_ex(e, "code", &code) || !json_object_is_type(code, json_type_string))
                return false;
        s = json_object_get_string(code);
        return streq(s, "shutting_down") || streq(s, "loading");
}
