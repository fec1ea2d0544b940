/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "commands.h"
#include "human.h"
#include "json-util.h"
#include "strutil.h"
#include "table.h"
#include "term.h"

static void help(void) {
        printf("Usage: rbee hive COMMAND [OPTIONS]\n"
               "\n"
               "  status                     is the hive up; its version, mode and catalog\n"
               "  backends                   CPU and GPU backends and devices of the hive\n"
               "  list                       the hives this rbee knows\n"
               "  add NAME URL [--api-key-file FILE] [--default]\n"
               "                             remember a hive (http://HOST:7835)\n"
               "  remove NAME                forget a hive\n"
               "\n"
               "The hives are kept in ~/.config/rbee/hives ($RBEE_CONFIG overrides). Without\n"
               "one, rbee talks to the local hive at " KEEPER_LOCAL_URL ". Pick one with\n"
               "--hive NAME|URL or $RBEE_HIVE.\n"
               "\n%s",
               keeper_global_help);
}

static const char *str_field(struct json_object *o, const char *key) {
        const char *s = NULL;

        return json_get_string(o, key, &s, NULL) > 0 ? s : NULL;
}

static void kv(struct keeper *k, const char *label, const char *color, const char *fmt, ...) _printf_(4, 5);
static void kv(struct keeper *k, const char *label, const char *color, const char *fmt, ...) {
        va_list ap;

        if (k->out_color)
                fputs(KEEPER_ANSI_BOLD, stdout);
        printf("%s:", label);
        if (k->out_color)
                fputs(KEEPER_ANSI_RESET, stdout);
        printf("%*s", (int) (10 - strlen(label)), "");
        if (color && k->out_color)
                fputs(color, stdout);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        if (color && k->out_color)
                fputs(KEEPER_ANSI_RESET, stdout);
        fputc('\n', stdout);
}

/* ---- status ---- */

static void status_help(void) {
        printf("Usage: rbee hive status [--json]\n\nCheck that the hive answers, and show its version and state.\n\n%s",
               keeper_global_help);
}

static int hive_status(struct keeper *k, int argc, char **argv) {
        struct json_object *h, *cat = NULL;
        const char *status, *recovered = NULL;
        int64_t v = 0;
        char a[KEEPER_HUMAN_MAX];
        int r;

        if ((r = keeper_simple_options(k, argc, argv, status_help)) >= 0)
                return r;
        if (optind < argc)
                return keeper_usage_error(k, "hive status", "unexpected argument '%s'", argv[optind]);
        if ((r = keeper_connect(k)) != 0)
                return r;
        h = k->health;
        if (k->json) {
                _cleanup_(json_object_putp) struct json_object *o = NULL;
                if (json_object_deep_copy(h, &o, NULL) < 0)
                        return keeper_error(k, "out of memory");
                json_object_object_add(o, "hive", json_new_string_or_null(k->hive_name));
                json_object_object_add(o, "url", json_object_new_string(k->hive_url));
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        }
        status = str_field(h, "status");
        json_get_typed(h, "catalog", json_type_object, &cat);
        if (cat)
                recovered = str_field(cat, "recovered_from");

        kv(k, "Hive", NULL, "%s (%s)", k->hive_name ? k->hive_name : "-", k->hive_url);
        kv(k, "Status", streq(status, "ok") ? KEEPER_ANSI_GREEN : KEEPER_ANSI_YELLOW, "%s", strna(status));
        json_get_int64(h, "api_version", 0, INT64_MAX, &v);
        kv(k, "Version", NULL, "rbee-hive %s, API %" PRIi64, strna(str_field(h, "version")), v);
        if (str_field(h, "mode"))
                kv(k, "Mode", NULL, "%s", str_field(h, "mode"));
        if (cat) {
                int64_t models = -1;
                json_get_int64(cat, "models", 0, INT64_MAX, &models);
                kv(k, "Catalog", NULL, "%s (%" PRIi64 " model%s)", strna(str_field(cat, "path")), models,
                   models == 1 ? "" : "s");
        }
        if (json_get_int64(h, "workers", 0, INT64_MAX, &v) > 0)
                kv(k, "Workers", NULL, "%" PRIi64, v);
        if (json_get_int64(h, "uptime_seconds", 0, INT64_MAX, &v) > 0)
                kv(k, "Uptime", NULL, "%s", keeper_human_duration((double) v, a, sizeof(a)));
        if (recovered)
                kv(k, "Warning", KEEPER_ANSI_YELLOW,
                   "the catalog was corrupt and was moved to %s; the hive started with an empty one "
                   "(re-register or download the models)",
                   recovered);
        return KEEPER_EXIT_OK;
}

/* ---- backends ---- */

static void backends_help(void) {
        printf("Usage: rbee hive backends [--json]\n\nList the hive's backends (CPU, CUDA, Metal) and their devices.\n\n%s",
               keeper_global_help);
}

static int hive_backends(struct keeper *k, int argc, char **argv) {
        static const char *const headers[] = { "BACKEND", "AVAILABLE", "DEVICE", "NAME", "MEMORY", "DETAILS" };
        static const unsigned flags[] = { 0, 0, KEEPER_COL_RIGHT, KEEPER_COL_SHRINK, 0,
                                          KEEPER_COL_SHRINK | KEEPER_COL_DROP };
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(keeper_table_freep) struct keeper_table *t = NULL;
        struct json_object *list;
        int r;

        if ((r = keeper_simple_options(k, argc, argv, backends_help)) >= 0)
                return r;
        if (optind < argc)
                return keeper_usage_error(k, "hive backends", "unexpected argument '%s'", argv[optind]);
        if ((r = keeper_connect(k)) != 0)
                return r;
        r = keeper_api(k, "GET", "/v1/backends", NULL, &o);
        if (r < 0)
                return keeper_report(k, r, NULL);
        if (k->json)
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        if (json_get_typed(o, "backends", json_type_array, &list) <= 0)
                return keeper_error(k, "%s answered GET /v1/backends without a \"backends\" list", keeper_hive_label(k));

        t = keeper_table_new(ELEMENTSOF(headers), headers, flags);
        if (!t)
                return keeper_error(k, "out of memory");
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                struct json_object *b = json_object_array_get_idx(list, i), *devs = NULL;
                bool avail = false;
                size_t nd;

                if (!json_object_is_type(b, json_type_object))
                        continue;
                json_get_bool(b, "available", &avail);
                json_get_typed(b, "devices", json_type_array, &devs);
                nd = devs ? json_object_array_length(devs) : 0;
                if (!avail || nd == 0) {
                        const char *cells[] = { str_field(b, "name"), avail ? "yes" : "no", "-", "-", "-",
                                                str_field(b, "reason") };
                        if (keeper_table_add(t, cells) < 0)
                                return keeper_error(k, "out of memory");
                        keeper_table_color_last(t, 1, avail ? KEEPER_ANSI_GREEN : KEEPER_ANSI_DIM);
                        continue;
                }
                for (size_t j = 0; j < nd; j++) {
                        struct json_object *d = json_object_array_get_idx(devs, j), *simd = NULL;
                        char idx[24] = "-", mem[2 * KEEPER_HUMAN_MAX + 16] = "-", details[512] = "";
                        char a1[KEEPER_HUMAN_MAX], a2[KEEPER_HUMAN_MAX];
                        int64_t v, total = -1, avail_mem = -1;
                        const char *cc;

                        if (!json_object_is_type(d, json_type_object))
                                continue;
                        if (json_get_int64(d, "index", 0, INT64_MAX, &v) > 0)
                                snprintf(idx, sizeof(idx), "%" PRIi64, v);
                        json_get_int64(d, "memory_total", 0, INT64_MAX, &total);
                        if (json_get_int64(d, "memory_available", 0, INT64_MAX, &avail_mem) <= 0)
                                json_get_int64(d, "memory_free", 0, INT64_MAX, &avail_mem);
                        if (total >= 0 && avail_mem >= 0)
                                snprintf(mem, sizeof(mem), "%s free of %s", keeper_human_bytes((uint64_t) avail_mem, a1, sizeof(a1)),
                                         keeper_human_bytes((uint64_t) total, a2, sizeof(a2)));
                        else if (total >= 0)
                                keeper_human_bytes((uint64_t) total, mem, sizeof(mem));
                        if (json_get_int64(d, "cores", 0, INT64_MAX, &v) > 0)
                                snprintf(details + strlen(details), sizeof(details) - strlen(details), "%" PRIi64 " cores", v);
                        if ((cc = str_field(d, "compute_capability")))
                                snprintf(details + strlen(details), sizeof(details) - strlen(details), "compute %s", cc);
                        if (json_get_typed(d, "simd", json_type_array, &simd) > 0)
                                for (size_t s = 0; s < json_object_array_length(simd); s++) {
                                        struct json_object *x = json_object_array_get_idx(simd, s);
                                        if (json_object_is_type(x, json_type_string))
                                                snprintf(details + strlen(details), sizeof(details) - strlen(details),
                                                         "%s%s", details[0] ? (s == 0 ? ", " : " ") : "",
                                                         json_object_get_string(x));
                                }
                        const char *cells[] = { j == 0 ? str_field(b, "name") : "", j == 0 ? "yes" : "", idx,
                                                str_field(d, "name"), mem, details };
                        if (keeper_table_add(t, cells) < 0)
                                return keeper_error(k, "out of memory");
                        keeper_table_color_last(t, 1, KEEPER_ANSI_GREEN);
                }
        }
        keeper_table_print(t, stdout, keeper_table_width(k), k->out_color);
        return KEEPER_EXIT_OK;
}

/* ---- the configured set ---- */

static void list_help(void) {
        printf("Usage: rbee hive list [--json]\n\nList the hives in the configuration (%s).\n\n%s",
               "~/.config/rbee/hives, or $RBEE_CONFIG", keeper_global_help);
}

static int hive_list(struct keeper *k, int argc, char **argv) {
        static const char *const headers[] = { "NAME", "URL", "DEFAULT", "API KEY" };
        static const unsigned flags[] = { 0, KEEPER_COL_SHRINK, 0, KEEPER_COL_SHRINK };
        _cleanup_(keeper_table_freep) struct keeper_table *t = NULL;
        _cleanup_(json_object_putp) struct json_object *arr = NULL;
        const char *dflt;
        bool have_local;
        int r;

        if ((r = keeper_simple_options(k, argc, argv, list_help)) >= 0)
                return r;
        if (optind < argc)
                return keeper_usage_error(k, "hive list", "unexpected argument '%s'", argv[optind]);
        if ((r = keeper_load_config(k)) != 0)
                return r;
        dflt = k->config.default_hive ? k->config.default_hive : KEEPER_LOCAL_HIVE;
        have_local = keeper_config_find(&k->config, KEEPER_LOCAL_HIVE);

        arr = json_object_new_array();
        t = keeper_table_new(ELEMENTSOF(headers), headers, flags);
        if (!arr || !t)
                return keeper_error(k, "out of memory");
        for (size_t i = 0; i <= k->config.n_hives; i++) {
                const char *name, *url, *key;
                struct json_object *o;

                if (i == k->config.n_hives) {
                        if (have_local)
                                break;
                        /* The built-in one, always there unless the file redefines it. */
                        name = KEEPER_LOCAL_HIVE;
                        url = KEEPER_LOCAL_URL;
                        key = NULL;
                } else {
                        name = k->config.hives[i].name;
                        url = k->config.hives[i].url;
                        key = k->config.hives[i].api_key_file;
                }
                const char *cells[] = { name, url, streq(name, dflt) ? "yes" : "", key ? key : "" };
                if (keeper_table_add(t, cells) < 0)
                        return keeper_error(k, "out of memory");
                o = json_object_new_object();
                if (!o || json_object_array_add(arr, o) < 0)
                        return keeper_error(k, "out of memory");
                json_object_object_add(o, "name", json_object_new_string(name));
                json_object_object_add(o, "url", json_object_new_string(url));
                json_object_object_add(o, "default", json_object_new_boolean(streq(name, dflt)));
                json_object_object_add(o, "api_key_file", json_new_string_or_null(key));
                json_object_object_add(o, "builtin", json_object_new_boolean(i == k->config.n_hives));
        }
        if (k->json) {
                _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
                if (!o)
                        return keeper_error(k, "out of memory");
                json_object_object_add(o, "config", json_new_string_or_null(k->config.path));
                json_object_object_add(o, "hives", json_object_get(arr));
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        }
        keeper_table_print(t, stdout, keeper_table_width(k), k->out_color);
        return KEEPER_EXIT_OK;
}

static void add_help(void) {
        printf("Usage: rbee hive add NAME URL [--api-key-file FILE] [--default]\n"
               "\n"
               "Remember a hive under a name (replacing one of the same name).\n"
               "  --api-key-file FILE   read its API key from FILE (absolute path)\n"
               "  --default             use it when no --hive is given\n"
               "\n%s",
               keeper_global_help);
}

static int save(struct keeper *k) {
        char err[512] = "";
        int r;

        if (!k->config.path)
                return keeper_error(k, "no place for the configuration: set HOME or RBEE_CONFIG");
        r = keeper_config_save(&k->config, err, sizeof(err));
        if (r < 0)
                return keeper_error(k, "%s", err[0] ? err : strerror(-r));
        return 0;
}

static int hive_add(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = {
                { "default", no_argument, NULL, KEEPER_OPT_FIRST_LOCAL },
                KEEPER_GLOBAL_OPTIONS,
                {},
        };
        const char *name, *url;
        bool make_default = false;
        int c, r;

        while ((c = keeper_getopt(k, argc, argv, KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        add_help();
                        return KEEPER_EXIT_OK;
                }
                if (c == KEEPER_OPT_FIRST_LOCAL)
                        make_default = true;
                else
                        return KEEPER_EXIT_USAGE;
        }
        if (argc - optind != 2)
                return keeper_usage_error(k, "hive add", "expected NAME URL");
        name = argv[optind];
        url = argv[optind + 1];
        if (!keeper_hive_name_valid(name))
                return keeper_usage_error(k, "hive add", "invalid name '%s': use 1-64 of A-Z a-z 0-9 _ . -, "
                                          "starting with a letter or digit", name);
        if (!keeper_hive_url_valid(url))
                return keeper_usage_error(k, "hive add", "invalid URL '%s': use http://HOST:PORT (the hive listens on "
                                          "port 7835 by default)", url);
        if (k->api_key_file && k->api_key_file[0] != '/')
                return keeper_usage_error(k, "hive add", "--api-key-file needs an absolute path");
        if (k->api_key_file && strpbrk(k->api_key_file, " \t"))
                return keeper_usage_error(k, "hive add", "--api-key-file: the path may not contain blanks");
        if ((r = keeper_load_config(k)) != 0)
                return r;
        if (keeper_config_set(&k->config, name, url, k->api_key_file) < 0)
                return keeper_error(k, "too many hives, or out of memory");
        if (make_default) {
                free(k->config.default_hive);
                k->config.default_hive = strdup(name);
                if (!k->config.default_hive)
                        return keeper_error(k, "out of memory");
        }
        if ((r = save(k)) != 0)
                return r;
        keeper_note(k, "added hive '%s' at %s%s; check it with 'rbee --hive %s hive status'", name, url,
                    make_default ? " as the default" : "", name);
        return KEEPER_EXIT_OK;
}

static void remove_help(void) {
        printf("Usage: rbee hive remove NAME\n\nForget a hive. The hive itself is not touched.\n\n%s", keeper_global_help);
}

static int hive_remove(struct keeper *k, int argc, char **argv) {
        const char *name;
        int r;

        if ((r = keeper_simple_options(k, argc, argv, remove_help)) >= 0)
                return r;
        if ((r = keeper_one_arg(k, "hive remove", argc, argv, "the hive NAME", &name)) != 0)
                return r;
        if ((r = keeper_load_config(k)) != 0)
                return r;
        if (keeper_config_remove(&k->config, name) < 0) {
                if (streq(name, KEEPER_LOCAL_HIVE))
                        return keeper_error(k, "'local' is built in and cannot be removed; add another hive with "
                                            "--default to talk to that one instead");
                return keeper_error(k, "unknown hive '%s': 'rbee hive list' shows the configured hives", name);
        }
        if ((r = save(k)) != 0)
                return r;
        keeper_note(k, "removed hive '%s'", name);
        return KEEPER_EXIT_OK;
}

int keeper_cmd_hive(struct keeper *k, int argc, char **argv) {
        static const struct keeper_verb verbs[] = {
                { "status", hive_status },
                { "backends", hive_backends },
                { "list", hive_list },
                { "ls", hive_list },
                { "add", hive_add },
                { "remove", hive_remove },
                { "rm", hive_remove },
        };

        return keeper_dispatch(k, "hive", verbs, ELEMENTSOF(verbs), help, argc, argv);
}
