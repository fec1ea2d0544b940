/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "human.h"
#include "infer.h"
#include "json-util.h"
#include "progress.h"
#include "strutil.h"
#include "table.h"
#include "term.h"

static void help(void) {
        printf("Usage: rbee model COMMAND [OPTIONS]\n"
               "\n"
               "The model catalog of a hive.\n"
               "\n"
               "  list                       models on the hive\n"
               "  get ID                     one model's details\n"
               "  download REF [--id ID] [--detach]\n"
               "                             fetch a model: REF is hf:ORG/REPO, hf:ORG/REPO:QUANT\n"
               "                             (e.g. Q4_K_M), hf:ORG/REPO:FILE.gguf or file:///PATH.gguf\n"
               "  register ID --path FILE [--backend B] [--device D]\n"
               "                             add a GGUF file that is on the hive's machine\n"
               "  remove ID                  remove a model (stops its worker; deletes the file\n"
               "                             when the hive downloaded it)\n"
               "\n"
               "A download shows a progress bar on a terminal. Ctrl+C asks whether to leave it\n"
               "running on the hive or to cancel it (without a terminal, it cancels).\n"
               "\n%s",
               keeper_global_help);
}

static const char *str_field(struct json_object *o, const char *key) {
        const char *s = NULL;

        return json_get_string(o, key, &s, NULL) > 0 ? s : NULL;
}

static int64_t int_field(struct json_object *o, const char *key, int64_t dflt) {
        int64_t v;

        return json_get_int64(o, key, INT64_MIN, INT64_MAX, &v) > 0 ? v : dflt;
}

/* ---- list ---- */

static void list_help(void) {
        printf("Usage: rbee model list [--json]\n\nList the models in the hive's catalog.\n\n%s", keeper_global_help);
}

static int model_list(struct keeper *k, int argc, char **argv) {
        static const char *const headers[] = { "ID", "SIZE", "QUANT", "ARCH", "PARAMS", "CONTEXT", "LOADED", "SOURCE" };
        static const unsigned flags[] = { KEEPER_COL_SHRINK_LAST, KEEPER_COL_RIGHT, 0, KEEPER_COL_DROP,
                                          KEEPER_COL_RIGHT | KEEPER_COL_DROP, KEEPER_COL_RIGHT | KEEPER_COL_DROP, 0,
                                          KEEPER_COL_SHRINK };
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(keeper_table_freep) struct keeper_table *t = NULL;
        struct json_object *data;
        int r;

        if ((r = keeper_simple_options(k, argc, argv, list_help)) >= 0)
                return r;
        if (optind < argc)
                return keeper_usage_error(k, "model list", "unexpected argument '%s'", argv[optind]);
        if ((r = keeper_connect(k)) != 0)
                return r;
        r = keeper_api(k, "GET", "/v1/models", NULL, &o);
        if (r < 0)
                return keeper_report(k, r, NULL);
        if (k->json)
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        if (json_get_typed(o, "data", json_type_array, &data) <= 0)
                return keeper_error(k, "%s answered GET /v1/models without a \"data\" list", keeper_hive_label(k));

        t = keeper_table_new(ELEMENTSOF(headers), headers, flags);
        if (!t)
                return keeper_error(k, "out of memory");
        for (size_t i = 0; i < json_object_array_length(data); i++) {
                struct json_object *m = json_object_array_get_idx(data, i);
                char size[KEEPER_HUMAN_MAX] = "-", params[KEEPER_HUMAN_MAX] = "-", ctx[32] = "-";
                int64_t v;
                bool loaded = false;

                if (!json_object_is_type(m, json_type_object))
                        continue;
                if ((v = int_field(m, "size", -1)) >= 0)
                        keeper_human_bytes((uint64_t) v, size, sizeof(size));
                if ((v = int_field(m, "parameters", -1)) > 0)
                        keeper_human_count((uint64_t) v, params, sizeof(params));
                if ((v = int_field(m, "context_length", -1)) > 0)
                        snprintf(ctx, sizeof(ctx), "%" PRIi64, v);
                json_get_bool(m, "loaded", &loaded);
                const char *cells[] = { str_field(m, "id"), size, str_field(m, "quantization"),
                                        str_field(m, "architecture"), params, ctx, loaded ? "yes" : "no",
                                        str_field(m, "source") };
                if (keeper_table_add(t, cells) < 0)
                        return keeper_error(k, "out of memory");
                if (loaded)
                        keeper_table_color_last(t, 6, KEEPER_ANSI_GREEN);
        }
        if (keeper_table_rows(t) == 0) {
                if (!k->quiet)
                        fprintf(stderr, "No models on %s. Add one with 'rbee model download hf:ORG/REPO:QUANT' or "
                                        "'rbee model register ID --path FILE'.\n",
                                keeper_hive_label(k));
                return KEEPER_EXIT_OK;
        }
        keeper_table_print(t, stdout, keeper_table_width(k), k->out_color);
        return KEEPER_EXIT_OK;
}

/* ---- get ---- */

static void get_help(void) {
        printf("Usage: rbee model get ID [--json]\n\nShow one model of the hive's catalog.\n\n%s", keeper_global_help);
}

static void print_model(struct keeper *k, struct json_object *m) {
        char a[KEEPER_HUMAN_MAX], line[256];
        int64_t v;
        bool b;
        const char *s;

        struct row {
                const char *label;
                char value[1100];
        } rows[16];
        size_t n = 0, w = 0;

#define ROW(l, ...)                                                             \
        do {                                                                    \
                rows[n].label = (l);                                            \
                snprintf(rows[n].value, sizeof(rows[n].value), __VA_ARGS__);    \
                n++;                                                            \
        } while (0)

        ROW("ID", "%s", strna(str_field(m, "id")));
        if ((s = str_field(m, "name")))
                ROW("Name", "%s", s);
        ROW("Architecture", "%s", strna(str_field(m, "architecture")));
        ROW("Quantization", "%s", strna(str_field(m, "quantization")));
        if ((v = int_field(m, "parameters", -1)) > 0)
                ROW("Parameters", "%s", keeper_human_count((uint64_t) v, a, sizeof(a)));
        if ((v = int_field(m, "context_length", -1)) > 0)
                ROW("Context", "%" PRIi64 " tokens", v);
        if ((v = int_field(m, "size", -1)) >= 0)
                ROW("Size", "%s (%" PRIi64 " bytes)", keeper_human_bytes((uint64_t) v, a, sizeof(a)), v);
        ROW("Source", "%s", strna(str_field(m, "source")));
        ROW("Path", "%s", strna(str_field(m, "local_path")));
        ROW("SHA-256", "%s", strna(str_field(m, "sha256")));
        snprintf(line, sizeof(line), "%s", strna(str_field(m, "backend")));
        if ((v = int_field(m, "device", -1)) >= 0)
                ROW("Backend", "%s, device %" PRIi64, line, v);
        else
                ROW("Backend", "%s", line);
        if (json_get_bool(m, "managed", &b) > 0)
                ROW("Managed", "%s", b ? "yes (downloaded by the hive; removing the model deletes the file)"
                                       : "no (registered; the file stays when the model is removed)");
        if (json_get_bool(m, "loaded", &b) > 0)
                ROW("Loaded", "%s", b ? "yes" : "no");
#undef ROW

        for (size_t i = 0; i < n; i++)
                w = MAX(w, strlen(rows[i].label));
        for (size_t i = 0; i < n; i++) {
                if (k->out_color)
                        fputs(KEEPER_ANSI_BOLD, stdout);
                printf("%s:", rows[i].label);
                if (k->out_color)
                        fputs(KEEPER_ANSI_RESET, stdout);
                printf("%*s%s\n", (int) (w - strlen(rows[i].label) + 1), "", rows[i].value);
        }
}

static int model_get(struct keeper *k, int argc, char **argv) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(freep) char *path = NULL;
        const char *id;
        int r;

        if ((r = keeper_simple_options(k, argc, argv, get_help)) >= 0)
                return r;
        if ((r = keeper_one_arg(k, "model get", argc, argv, "the model ID", &id)) != 0)
                return r;
        if ((r = keeper_connect(k)) != 0)
                return r;
        if (!(path = keeper_path("/v1/models/", id, NULL)))
                return keeper_error(k, "out of memory");
        r = keeper_api(k, "GET", path, NULL, &o);
        if (r < 0)
                return keeper_report(k, r, id);
        if (k->json)
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        print_model(k, o);
        return KEEPER_EXIT_OK;
}

/* ---- download ---- */

static void download_help(void) {
        printf("Usage: rbee model download REF [--id ID] [--detach]\n"
               "\n"
               "Have the hive download a model and add it to its catalog. REF is\n"
               "  hf:ORG/REPO             the repository's only .gguf file\n"
               "  hf:ORG/REPO:QUANT       the .gguf whose name has QUANT (e.g. Q4_K_M)\n"
               "  hf:ORG/REPO:FILE.gguf   that file\n"
               "  file:///PATH.gguf       a file on the hive's machine (registered, not copied)\n"
               "\n"
               "      --id ID      catalog id (default: the repository name, plus :quant)\n"
               "  -d, --detach     start the download and return; it goes on in the background\n"
               "\n"
               "The hive resumes an interrupted transfer and checks the file's sha256.\n"
               "Asking for a model that is already downloading follows that download.\n"
               "\n%s",
               keeper_global_help);
}

struct download {
        struct keeper *k;
        char job_id[128];
        char model[256];
        struct keeper_progress bar;
        bool bar_started;
        bool terminal;
        struct json_object *end_model;  /* owned */
        char err_code[64];
        char err_message[1024];
        char bad_event[256];
        bool cancel_sent, background;
        int cancel_error;
        char cancel_state[32];
        uint64_t cancel_usec;
};

static int dl_event(void *userdata, const char *name, const char *data, size_t len) {
        struct download *d = userdata;
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        char jerr[128] = "";
        const char *s;

        if (json_parse_strict(data, len, 32, &o, jerr, sizeof(jerr)) < 0 || !json_object_is_type(o, json_type_object)) {
                snprintf(d->bad_event, sizeof(d->bad_event), "the hive sent a malformed '%.32s' event (%s)", name,
                         jerr[0] ? jerr : "not a JSON object");
                return -EBADMSG;
        }
        /* File names and messages go to the terminal (the model to stdout with --json, as data). */
        if (!d->k->json)
                keeper_json_sanitize(o);
        if (streq(name, "progress")) {
                int64_t bytes = 0, total = 0;
                double speed = -1;

                if ((s = str_field(o, "model")) && !d->model[0])
                        snprintf(d->model, sizeof(d->model), "%s", s);
                if (json_get_int64(o, "bytes", 0, INT64_MAX, &bytes) < 0 ||
                    json_get_int64(o, "total", 0, INT64_MAX, &total) < 0) {
                        snprintf(d->bad_event, sizeof(d->bad_event), "the hive sent a 'progress' event with bad sizes");
                        return -EBADMSG;
                }
                json_get_double(o, "speed_bps", 0, 1e15, &speed);
                if (!d->bar_started) {
                        char label[200];
                        const char *file = str_field(o, "file");

                        snprintf(label, sizeof(label), "%.190s", file ? file : d->model[0] ? d->model : "download");
                        keeper_progress_init(&d->bar, label, d->k->err_tty, d->k->err_color, d->k->quiet);
                        d->bar_started = true;
                }
                if (!d->cancel_sent)
                        keeper_progress_update(&d->bar, (uint64_t) bytes, (uint64_t) total, speed);
                return 0;
        }
        if (streq(name, "retry")) {
                int64_t attempt = 0, delay = 0;

                json_get_int64(o, "attempt", 0, INT64_MAX, &attempt);
                json_get_int64(o, "delay_ms", 0, INT64_MAX, &delay);
                if (d->bar_started)
                        keeper_progress_clear(&d->bar);
                keeper_note(d->k, "the transfer broke off (%s); the hive resumes it in %" PRIi64 " ms (attempt %" PRIi64 ")",
                            strna(str_field(o, "reason")), delay, attempt);
                return 0;
        }
        if (streq(name, "verifying")) {
                if (d->bar_started) {
                        keeper_progress_finish(&d->bar, true);
                        d->bar_started = false;
                }
                keeper_note(d->k, "verifying the sha256 of %s", strna(str_field(o, "file")));
                return 0;
        }
        if (streq(name, "end")) {
                struct json_object *m;

                d->terminal = true;
                if (json_get_typed(o, "model", json_type_object, &m) > 0)
                        d->end_model = json_object_get(m);
                return 1;
        }
        if (streq(name, "error")) {
                d->terminal = true;
                snprintf(d->err_code, sizeof(d->err_code), "%s", (s = str_field(o, "code")) ? s : "unknown");
                snprintf(d->err_message, sizeof(d->err_message), "%s",
                         (s = str_field(o, "message")) ? s : "the download failed");
                return 1;
        }
        return 0;
}

/* Ask on the terminal whether to keep the download running. */
static bool ask_background(struct download *d) {
        struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
        char buf[64] = "";
        ssize_t n;

        fprintf(stderr, "\nThe download is running on the hive. Keep it running in the background? [y/N] ");
        fflush(stderr);
        /* A blocking read; a second Ctrl+C here exits at once and leaves it running. */
        if (poll(&p, 1, -1) <= 0)
                return false;
        n = read(STDIN_FILENO, buf, sizeof(buf) - 1);
        if (n <= 0)
                return false;
        buf[n] = 0;
        return buf[0] == 'y' || buf[0] == 'Y';
}

static int dl_interrupt(void *userdata) {
        struct download *d = userdata;

        if (d->cancel_sent)
                return 0;
        if (d->bar_started)
                keeper_progress_clear(&d->bar);
        if (d->k->in_tty && d->k->err_tty && ask_background(d)) {
                d->background = true;
                return 3;
        }
        d->cancel_sent = true;
        d->cancel_usec = keeper_now_usec();
        if (!d->k->quiet)
                fprintf(stderr, "rbee: cancelling download job %s...\n", d->job_id);
        d->cancel_error = keeper_cancel_job(d->k, d->job_id, d->cancel_state, sizeof(d->cancel_state));
        return 0;
}

static int dl_tick(void *userdata) {
        struct download *d = userdata;

        if (d->cancel_sent && keeper_now_usec() - d->cancel_usec > 3000000)
                return 2;
        return 0;
}

static int model_download(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = {
                { "id", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL },
                { "detach", no_argument, NULL, 'd' },
                KEEPER_GLOBAL_OPTIONS,
                {},
        };
        _cleanup_(json_object_putp) struct json_object *body = NULL, *job = NULL;
        struct keeper_http_response resp = { .retry_after = -1 };
        struct download d = { .k = k };
        struct keeper_http_stream stream = {
                .on_event = dl_event,
                .on_tick = dl_tick,
                .on_interrupt = dl_interrupt,
                .userdata = &d,
        };
        const char *id = NULL, *ref, *s, *events_url;
        bool detach = false, existing = false;
        char hint[512];
        int c, r, ret = KEEPER_EXIT_ERROR;

        while ((c = keeper_getopt(k, argc, argv, "d" KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        download_help();
                        return KEEPER_EXIT_OK;
                }
                if (c == KEEPER_OPT_FIRST_LOCAL)
                        id = optarg;
                else if (c == 'd')
                        detach = true;
                else
                        return KEEPER_EXIT_USAGE;
        }
        if (optind >= argc)
                return keeper_usage_error(k, "model download", "missing the model reference (e.g. hf:ORG/REPO:Q4_K_M)");
        if (optind + 1 < argc)
                return keeper_usage_error(k, "model download", "unexpected argument '%s'", argv[optind + 1]);
        ref = argv[optind];
        if ((r = keeper_connect(k)) != 0)
                return r;

        body = json_object_new_object();
        if (!body)
                return keeper_error(k, "out of memory");
        json_object_object_add(body, "source", json_object_new_string(ref));
        if (id)
                json_object_object_add(body, "id", json_object_new_string(id));
        r = keeper_api(k, "POST", "/v1/models/download", body, &job);
        if (r == -EREMOTEIO && streq(k->err.code, "invalid_reference"))
                return keeper_error(k, "bad model reference '%s' (%s): %s", ref, k->err.message,
                                    keeper_hint(k, "invalid_reference", NULL, hint, sizeof(hint)));
        if (r < 0)
                return keeper_report(k, r, id ? id : "ID");
        if (!(s = str_field(job, "job_id")) || !(events_url = str_field(job, "events_url")) || events_url[0] != '/')
                return keeper_error(k, "%s answered the download request without a job id and events URL: the hive and "
                                    "rbee may be different versions ('rbee hive status')", keeper_hive_label(k));
        snprintf(d.job_id, sizeof(d.job_id), "%s", s);
        /* Shown on stderr when Ctrl+C cancels, --json or not. */
        keeper_term_sanitize(d.job_id);
        json_get_bool(job, "existing", &existing);
        if (existing)
                keeper_note(k, "%s is already downloading (job %s); following that download", ref, d.job_id);
        if (detach) {
                if (k->json)
                        return keeper_print_json(k, job) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
                printf("%s\n", d.job_id);
                keeper_note(k, "downloading %s in the background as job %s; 'rbee model list' shows it when done", ref,
                            d.job_id);
                return KEEPER_EXIT_OK;
        }

        r = keeper_api_stream(k, "GET", events_url, NULL, &stream, &resp);
        if (d.bar_started && !d.terminal)
                keeper_progress_clear(&d.bar);
        if (r == -EREMOTEIO) {
                ret = keeper_report(k, r, d.job_id);
                goto out;
        }
        if (d.background) {
                keeper_note(k, "the download of %s goes on in the background (job %s); 'rbee model list' shows it when "
                            "done", ref, d.job_id);
                ret = KEEPER_EXIT_OK;
                goto out;
        }
        if (d.cancel_sent) {
                if (!k->quiet)
                        fprintf(stderr, "rbee: interrupted: download job %s %s\n", d.job_id,
                                d.cancel_error == 0 || streq(d.err_code, "cancelled")
                                        ? "cancelled on the hive; no file or catalog entry is left"
                                        : "may still run: the cancel request failed");
                ret = KEEPER_EXIT_INTERRUPTED;
                goto out;
        }
        if (r == -EBADMSG && d.bad_event[0]) {
                ret = keeper_error(k, "%s: the hive and rbee may be different versions ('rbee hive status')", d.bad_event);
                goto out;
        }
        if (d.end_model) {
                char sz[KEEPER_HUMAN_MAX];
                int64_t size = int_field(d.end_model, "size", 0);

                if (d.bar_started)
                        keeper_progress_finish(&d.bar, true);
                if (k->json)
                        keeper_print_json(k, d.end_model);
                else if (!k->quiet)
                        fprintf(stderr, "%s%s%s is ready: %s, %s %s (%s)\n", k->err_color ? KEEPER_ANSI_GREEN : "",
                                strna(str_field(d.end_model, "id")), k->err_color ? KEEPER_ANSI_RESET : "",
                                keeper_human_bytes((uint64_t) MAX(size, (int64_t) 0), sz, sizeof(sz)),
                                strna(str_field(d.end_model, "architecture")),
                                strna(str_field(d.end_model, "quantization")),
                                strna(str_field(d.end_model, "local_path")));
                ret = KEEPER_EXIT_OK;
                goto out;
        }
        if (d.terminal) {
                const char *h = keeper_hint(k, d.err_code, id, hint, sizeof(hint));

                if (d.bar_started)
                        keeper_progress_finish(&d.bar, false);
                if (h)
                        ret = keeper_error(k, "downloading %s failed: %s (%s): %s", ref, d.err_message, d.err_code, h);
                else
                        ret = keeper_error(k, "downloading %s failed: %s (%s)", ref, d.err_message, d.err_code);
                goto out;
        }
        if (r < 0 && r != -ECONNRESET) {
                ret = keeper_report(k, r, id);
                goto out;
        }
        if (!resp.streamed && r >= 0) {
                ret = keeper_error(k, "%s answered GET %s with '%s' instead of an event stream", keeper_hive_label(k),
                                   events_url, resp.content_type[0] ? resp.content_type : "no content type");
                goto out;
        }
        ret = keeper_error(k, "%s closed the event stream of download job %s before its end: the download may go on; "
                           "'rbee model list' shows whether it arrived, 'journalctl -u rbee-hive' what happened",
                           keeper_hive_label(k), d.job_id);
out:
        keeper_http_response_done(&resp);
        json_object_putp(&d.end_model);
        return ret;
}

/* ---- register ---- */

static void register_help(void) {
        printf("Usage: rbee model register ID --path FILE [--backend B] [--device D]\n"
               "\n"
               "Add a GGUF file to the catalog. The path is on the hive's machine; a relative\n"
               "path is made absolute here when the hive is local. The hive reads the GGUF\n"
               "header and computes the file's sha256 now.\n"
               "\n%s",
               keeper_global_help);
}

static int model_register(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = {
                { "path", required_argument, NULL, 'p' },
                { "backend", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL },
                { "device", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL + 1 },
                KEEPER_GLOBAL_OPTIONS,
                {},
        };
        _cleanup_(json_object_putp) struct json_object *body = NULL, *o = NULL;
        _cleanup_(freep) char *abs = NULL;
        const char *id, *path = NULL, *backend = NULL;
        int64_t device = -1;
        int c, r;

        while ((c = keeper_getopt(k, argc, argv, "p:" KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        register_help();
                        return KEEPER_EXIT_OK;
                }
                if (c == 'p')
                        path = optarg;
                else if (c == KEEPER_OPT_FIRST_LOCAL)
                        backend = optarg;
                else if (c == KEEPER_OPT_FIRST_LOCAL + 1) {
                        if (parse_int64(optarg, 0, 1024, &device) < 0)
                                return keeper_usage_error(k, "model register", "--device: expected a device index, got '%s'",
                                                          optarg);
                } else
                        return KEEPER_EXIT_USAGE;
        }
        if ((r = keeper_one_arg(k, "model register", argc, argv, "the model ID", &id)) != 0)
                return r;
        if (!path || !*path)
                return keeper_usage_error(k, "model register", "--path FILE is required");
        if ((r = keeper_connect(k)) != 0)
                return r;
        if (path[0] != '/') {
                if (!k->hive_is_local)
                        return keeper_usage_error(k, "model register", "'%s' is relative: give the absolute path of the "
                                                  "file on the hive's machine", path);
                abs = realpath(path, NULL);
                if (!abs)
                        return keeper_error(k, "cannot find %s: %m", path);
                path = abs;
        }

        body = json_object_new_object();
        if (!body)
                return keeper_error(k, "out of memory");
        json_object_object_add(body, "id", json_object_new_string(id));
        json_object_object_add(body, "path", json_object_new_string(path));
        if (backend)
                json_object_object_add(body, "backend", json_object_new_string(backend));
        if (device >= 0)
                json_object_object_add(body, "device", json_object_new_int64(device));
        r = keeper_api(k, "POST", "/v1/models", body, &o);
        if (r < 0)
                return keeper_report(k, r, id);
        if (k->json)
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        if (!k->quiet) {
                char sz[KEEPER_HUMAN_MAX];
                fprintf(stderr, "Registered %s: %s %s, %s\n", strna(str_field(o, "id")), strna(str_field(o, "architecture")),
                        strna(str_field(o, "quantization")),
                        keeper_human_bytes((uint64_t) MAX(int_field(o, "size", 0), (int64_t) 0), sz, sizeof(sz)));
        }
        return KEEPER_EXIT_OK;
}

/* ---- remove ---- */

static void remove_help(void) {
        printf("Usage: rbee model remove ID\n"
               "\n"
               "Remove a model from the catalog. Its worker is stopped first. The file is\n"
               "deleted only when the hive downloaded it.\n"
               "\n%s",
               keeper_global_help);
}

static int model_remove(struct keeper *k, int argc, char **argv) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(freep) char *path = NULL;
        const char *id;
        bool file_removed = false;
        int r;

        if ((r = keeper_simple_options(k, argc, argv, remove_help)) >= 0)
                return r;
        if ((r = keeper_one_arg(k, "model remove", argc, argv, "the model ID", &id)) != 0)
                return r;
        if ((r = keeper_connect(k)) != 0)
                return r;
        if (!(path = keeper_path("/v1/models/", id, NULL)))
                return keeper_error(k, "out of memory");
        r = keeper_api(k, "DELETE", path, NULL, &o);
        if (r < 0)
                return keeper_report(k, r, id);
        if (k->json)
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        json_get_bool(o, "file_removed", &file_removed);
        if (!k->quiet)
                fprintf(stderr, "Removed %s%s\n", id, file_removed ? " and deleted its file" : " (the file stays)");
        return KEEPER_EXIT_OK;
}

int keeper_cmd_model(struct keeper *k, int argc, char **argv) {
        static const struct keeper_verb verbs[] = {
                { "list", model_list },
                { "ls", model_list },
                { "get", model_get },
                { "show", model_get },
                { "download", model_download },
                { "pull", model_download },
                { "register", model_register },
                { "remove", model_remove },
                { "rm", model_remove },
        };

        return keeper_dispatch(k, "model", verbs, ELEMENTSOF(verbs), help, argc, argv);
}
