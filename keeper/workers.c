/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "strutil.h"
#include "term.h"
#include "workers.h"

static const char *str_field(struct json_object *o, const char *key) {
        const char *s = NULL;

        return json_get_string(o, key, &s, NULL) > 0 ? s : NULL;
}

void keeper_worker_view(struct json_object *w, struct keeper_worker_view *v) {
        const char *backend = str_field(w, "backend");
        struct json_object *exp = NULL;
        int64_t x, dev = -1, active = 0, keep = 0;

        *v = (struct keeper_worker_view) {
                .model = str_field(w, "model"),
                .state = str_field(w, "state"),
                .unit = str_field(w, "unit"),
        };
        snprintf(v->pid, sizeof(v->pid), "-");
        if (json_get_int64(w, "pid", 1, INT64_MAX, &x) > 0)
                snprintf(v->pid, sizeof(v->pid), "%" PRIi64, x);
        snprintf(v->memory, sizeof(v->memory), "-");
        if (json_get_int64(w, "memory_bytes", 0, INT64_MAX, &x) > 0)
                keeper_human_bytes((uint64_t) x, v->memory, sizeof(v->memory));

        json_get_int64(w, "device", 0, INT32_MAX, &dev);
        if (!backend || streq(backend, "cpu"))
                snprintf(v->processor, sizeof(v->processor), "100%% CPU");
        else if (dev >= 0)
                snprintf(v->processor, sizeof(v->processor), "100%% GPU (%s:%" PRIi64 ")", backend, dev);
        else
                snprintf(v->processor, sizeof(v->processor), "100%% GPU (%s)", backend);

        json_get_int64(w, "active_requests", 0, INT64_MAX, &active);
        snprintf(v->requests, sizeof(v->requests), "%" PRIi64, active);
        snprintf(v->idle, sizeof(v->idle), "-");
        if (active == 0 && json_get_int64(w, "idle_seconds", 0, INT64_MAX, &x) > 0)
                keeper_human_duration((double) x, v->idle, sizeof(v->idle));

        json_get_int64(w, "keep_alive_seconds", -1, INT64_MAX, &keep);
        if (streq(v->state, "stopping"))
                snprintf(v->until, sizeof(v->until), "stopping...");
        else if (streq(v->state, "failed"))
                snprintf(v->until, sizeof(v->until), "-");
        else if (active > 0)
                snprintf(v->until, sizeof(v->until), "busy");
        else if (keep < 0)
                snprintf(v->until, sizeof(v->until), "forever");
        else if (json_object_object_get_ex(w, "expires_in_seconds", &exp) && json_object_is_type(exp, json_type_int))
                keeper_human_until(json_object_get_int64(exp), v->until, sizeof(v->until));
        else
                snprintf(v->until, sizeof(v->until), "-");
}

const char *keeper_worker_state_color(const char *state) {
        if (streq(state, "ready"))
                return KEEPER_ANSI_GREEN;
        if (streq(state, "starting") || streq(state, "loading") || streq(state, "stopping"))
                return KEEPER_ANSI_YELLOW;
        if (streq(state, "failed"))
                return KEEPER_ANSI_RED;
        return NULL;
}

int keeper_worker_unit_name(const char *id, char **ret) {
        struct strbuf b = STRBUF_INIT(4096);
        int r = strbuf_puts(&b, "rbee-worker@");

        /* systemd's unit name escaping: '/' becomes '-', a leading '.' and
         * anything outside [A-Za-z0-9:_.] become \xNN. */
        for (const char *p = id; r >= 0 && *p; p++) {
                unsigned char c = (unsigned char) *p;
                if (c == '/')
                        r = strbuf_append(&b, "-", 1);
                else if ((isalnum(c) && c < 0x80) || c == ':' || c == '_' || (c == '.' && p != id))
                        r = strbuf_append(&b, p, 1);
                else
                        r = strbuf_printf(&b, "\\x%02x", c);
        }
        if (r >= 0)
                r = strbuf_puts(&b, ".service");
        if (r >= 0)
                r = strbuf_steal(&b, ret, NULL);
        strbuf_done(&b);
        return r;
}

int keeper_worker_log_path(const char *socket, char **ret) {
        /* The hive names a process-mode worker's files by its model id, side by
         * side: <workers>/<id>.sock and <workers>/<id>.log. */
        const char *slash = strrchr(socket, '/');
        size_t n = strlen(socket);
        char *p;

        if (!slash || !str_endswith(socket, ".sock") || (size_t) (socket + n - slash) <= strlen("/.sock"))
                return -EINVAL;
        if (asprintf(&p, "%.*s.log", (int) (n - strlen(".sock")), socket) < 0)
                return -ENOMEM;
        *ret = p;
        return 0;
}
