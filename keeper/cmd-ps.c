/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "commands.h"
#include "json-util.h"
#include "strutil.h"
#include "table.h"
#include "workers.h"

static void help(void) {
        printf("Usage: rbee ps [--hive NAME|URL] [--json]\n"
               "\n"
               "Show the loaded models: on every configured hive, or on the one --hive names.\n"
               "PROCESSOR says where the model runs, UNTIL when the hive unloads it if no\n"
               "request comes (\"forever\" with keep-alive -1, \"busy\" while it serves).\n"
               "\n%s",
               keeper_global_help);
}

static int add_hive(struct keeper *k, struct keeper_table *t, struct json_object *all, bool show_hive) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *list, *entry;
        int r;

        r = keeper_api(k, "GET", "/v1/workers", NULL, &o);
        if (r < 0)
                return keeper_report(k, r, NULL);
        if (json_get_typed(o, "workers", json_type_array, &list) <= 0)
                return keeper_error(k, "%s answered GET /v1/workers without a \"workers\" list", keeper_hive_label(k));

        entry = json_object_new_object();
        if (!entry || json_object_array_add(all, entry) < 0)
                return keeper_error(k, "out of memory");
        json_object_object_add(entry, "hive", json_new_string_or_null(k->hive_name));
        json_object_object_add(entry, "url", json_object_new_string(k->hive_url));
        json_object_object_add(entry, "workers", json_object_get(list));

        for (size_t i = 0; i < json_object_array_length(list); i++) {
                struct json_object *w = json_object_array_get_idx(list, i);
                struct keeper_worker_view v;

                if (!json_object_is_type(w, json_type_object))
                        continue;
                keeper_worker_view(w, &v);
                const char *cells[] = { k->hive_name ? k->hive_name : k->hive_url, v.model, v.state, v.processor,
                                        v.memory, v.pid, v.until };
                if (keeper_table_add(t, show_hive ? cells : cells + 1) < 0)
                        return keeper_error(k, "out of memory");
                keeper_table_color_last(t, show_hive ? 2 : 1, keeper_worker_state_color(v.state));
        }
        return 0;
}

int keeper_cmd_ps(struct keeper *k, int argc, char **argv) {
        static const char *const headers[] = { "HIVE", "MODEL", "STATE", "PROCESSOR", "MEMORY", "PID", "UNTIL" };
        static const unsigned flags[] = { KEEPER_COL_SHRINK_LAST, KEEPER_COL_SHRINK_LAST, 0, 0, KEEPER_COL_RIGHT,
                                          KEEPER_COL_RIGHT | KEEPER_COL_DROP, 0 };
        _cleanup_(keeper_table_freep) struct keeper_table *t = NULL;
        _cleanup_(json_object_putp) struct json_object *all = NULL;
        const char *env = getenv("RBEE_HIVE");
        bool one, show_hive;
        size_t n_targets;
        int r, ret = KEEPER_EXIT_OK;

        if ((r = keeper_simple_options(k, argc, argv, help)) >= 0)
                return r;
        if (optind < argc)
                return keeper_usage_error(k, "ps", "unexpected argument '%s'", argv[optind]);
        one = k->hive_arg || (env && *env);
        if ((r = keeper_load_config(k)) != 0)
                return r;
        n_targets = one || k->config.n_hives == 0 ? 1 : k->config.n_hives;
        show_hive = n_targets > 1;

        all = json_object_new_array();
        t = show_hive ? keeper_table_new(ELEMENTSOF(headers), headers, flags)
                      : keeper_table_new(ELEMENTSOF(headers) - 1, headers + 1, flags + 1);
        if (!all || !t)
                return keeper_error(k, "out of memory");

        for (size_t i = 0; i < n_targets; i++) {
                if (n_targets > 1) {
                        keeper_reset_target(k);
                        free(k->hive_arg);
                        k->hive_arg = strdup(k->config.hives[i].name);
                        if (!k->hive_arg)
                                return keeper_error(k, "out of memory");
                }
                r = keeper_connect(k);
                if (r == 0)
                        r = add_hive(k, t, all, show_hive);
                if (r == KEEPER_EXIT_INTERRUPTED)
                        return r;
                if (r != 0)
                        ret = r;
        }
        if (k->json) {
                _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
                if (!o)
                        return keeper_error(k, "out of memory");
                json_object_object_add(o, "hives", json_object_get(all));
                keeper_print_json(k, o);
                return ret;
        }
        if (keeper_table_rows(t) == 0) {
                if (!k->quiet && ret == KEEPER_EXIT_OK)
                        fprintf(stderr, "No models are loaded.\n");
                return ret;
        }
        keeper_table_print(t, stdout, keeper_table_width(k), k->out_color);
        return ret;
}
