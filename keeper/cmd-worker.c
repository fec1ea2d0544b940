/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "human.h"
#include "json-util.h"
#include "progress.h"
#include "signals.h"
#include "strutil.h"
#include "table.h"
#include "term.h"
#include "workers.h"

static void help(void) {
        printf("Usage: rbee worker COMMAND [OPTIONS]\n"
               "\n"
               "The workers of a hive: one process (a systemd unit rbee-worker@ID.service)\n"
               "per loaded model.\n"
               "\n"
               "  list                        workers, their state, memory and idle time\n"
               "  spawn --model ID [--keep-alive DUR] [--no-wait]\n"
               "                              load a model now (the hive also does it on demand)\n"
               "  stop ID                     stop the worker of model ID\n"
               "  cleanup [--all]             reap failed and dead workers (--all: stop every one)\n"
               "  logs ID [-f] [-n N]         the worker's log (journal of rbee-worker@ID)\n"
               "\n%s",
               keeper_global_help);
}

static const char *str_field(struct json_object *o, const char *key) {
        const char *s = NULL;

        return json_get_string(o, key, &s, NULL) > 0 ? s : NULL;
}

/* ---- list ---- */

static void list_help(void) {
        printf("Usage: rbee worker list [--json]\n\nList the hive's workers.\n\n%s", keeper_global_help);
}

static int worker_list(struct keeper *k, int argc, char **argv) {
        static const char *const headers[] = { "MODEL", "STATE", "PID", "MEMORY", "PROCESSOR", "REQUESTS", "IDLE", "UNTIL", "UNIT" };
        static const unsigned flags[] = { KEEPER_COL_SHRINK_LAST, 0, KEEPER_COL_RIGHT | KEEPER_COL_DROP, KEEPER_COL_RIGHT, 0,
                                          KEEPER_COL_RIGHT | KEEPER_COL_DROP, KEEPER_COL_RIGHT | KEEPER_COL_DROP, 0,
                                          KEEPER_COL_SHRINK | KEEPER_COL_DROP };
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(keeper_table_freep) struct keeper_table *t = NULL;
        struct json_object *list;
        int r;

        if ((r = keeper_simple_options(k, argc, argv, list_help)) >= 0)
                return r;
        if (optind < argc)
                return keeper_usage_error(k, "worker list", "unexpected argument '%s'", argv[optind]);
        if ((r = keeper_connect(k)) != 0)
                return r;
        r = keeper_api(k, "GET", "/v1/workers", NULL, &o);
        if (r < 0)
                return keeper_report(k, r, NULL);
        if (k->json)
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        if (json_get_typed(o, "workers", json_type_array, &list) <= 0)
                return keeper_error(k, "%s answered GET /v1/workers without a \"workers\" list", keeper_hive_label(k));

        t = keeper_table_new(ELEMENTSOF(headers), headers, flags);
        if (!t)
                return keeper_error(k, "out of memory");
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                struct json_object *w = json_object_array_get_idx(list, i);
                struct keeper_worker_view v;

                if (!json_object_is_type(w, json_type_object))
                        continue;
                keeper_worker_view(w, &v);
                const char *cells[] = { v.model, v.state, v.pid, v.memory, v.processor, v.requests, v.idle, v.until,
                                        v.unit };
                if (keeper_table_add(t, cells) < 0)
                        return keeper_error(k, "out of memory");
                keeper_table_color_last(t, 1, keeper_worker_state_color(v.state));
        }
        if (keeper_table_rows(t) == 0) {
                if (!k->quiet)
                        fprintf(stderr, "No workers on %s. They start on demand, or with 'rbee worker spawn --model ID'.\n",
                                keeper_hive_label(k));
                return KEEPER_EXIT_OK;
        }
        keeper_table_print(t, stdout, keeper_table_width(k), k->out_color);
        return KEEPER_EXIT_OK;
}

/* ---- spawn ---- */

static void spawn_help(void) {
        printf("Usage: rbee worker spawn --model ID [--keep-alive DUR] [--no-wait]\n"
               "\n"
               "Start the worker for a model and wait until it is ready.\n"
               "\n"
               "  -m, --model ID        the model\n"
               "      --keep-alive DUR  unload after DUR without requests (30s, 5m, 1h; 0; -1 = never)\n"
               "      --no-wait         return as soon as the hive started it\n"
               "\n%s",
               keeper_global_help);
}

struct spawn_wait {
        struct keeper *k;
        const char *model;
        uint64_t start;
        uint64_t last_draw;
        unsigned spin;
        bool drawn;
};

static int spawn_tick(void *userdata) {
        struct spawn_wait *s = userdata;
        uint64_t now = keeper_now_usec();
        char el[KEEPER_HUMAN_MAX];
        static const char *const spin[] = { "⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏" };

        if (s->k->quiet || !s->k->err_tty || now - s->last_draw < 200000)
                return 0;
        s->last_draw = now;
        fprintf(stderr, "%s%s starting the worker for %s... %s", KEEPER_ANSI_CLEAR_LINE,
                keeper_term_utf8() ? spin[s->spin++ % ELEMENTSOF(spin)] : "*", s->model, keeper_human_duration((double) (now - s->start) / 1e6, el, sizeof(el)));
        fflush(stderr);
        s->drawn = true;
        return 0;
}

static int worker_spawn(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = {
                { "model", required_argument, NULL, 'm' },
                { "keep-alive", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL },
                { "no-wait", no_argument, NULL, KEEPER_OPT_FIRST_LOCAL + 1 },
                KEEPER_GLOBAL_OPTIONS,
                {},
        };
        _cleanup_(json_object_putp) struct json_object *body = NULL, *o = NULL;
        struct keeper_http_response resp = { .retry_after = -1 };
        const char *model = NULL, *keep_alive = NULL;
        bool wait = true;
        struct spawn_wait sw = { .k = k };
        struct keeper_http_stream hooks = { .on_tick = spawn_tick, .userdata = &sw };
        char jerr[128];
        int c, r;

        while ((c = keeper_getopt(k, argc, argv, "m:" KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        spawn_help();
                        return KEEPER_EXIT_OK;
                }
                if (c == 'm')
                        model = optarg;
                else if (c == KEEPER_OPT_FIRST_LOCAL)
                        keep_alive = optarg;
                else if (c == KEEPER_OPT_FIRST_LOCAL + 1)
                        wait = false;
                else
                        return KEEPER_EXIT_USAGE;
        }
        if (!model && optind < argc)
                model = argv[optind++];
        if (optind < argc)
                return keeper_usage_error(k, "worker spawn", "unexpected argument '%s'", argv[optind]);
        if (!model || !*model)
                return keeper_usage_error(k, "worker spawn", "--model is required");
        if ((r = keeper_connect(k)) != 0)
                return r;

        body = json_object_new_object();
        if (!body)
                return keeper_error(k, "out of memory");
        json_object_object_add(body, "model", json_object_new_string(model));
        json_object_object_add(body, "wait", json_object_new_boolean(wait));
        if (keep_alive) {
                int64_t secs;
                /* A plain number is seconds; anything else is a duration string for the hive. */
                if (parse_int64(keep_alive, -1, INT32_MAX, &secs) == 0)
                        json_object_object_add(body, "keep_alive", json_object_new_int64(secs));
                else
                        json_object_object_add(body, "keep_alive", json_object_new_string(keep_alive));
        }

        sw.model = model;
        sw.start = keeper_now_usec();
        r = keeper_api_stream(k, "POST", "/v1/workers", body, &hooks, &resp);
        if (sw.drawn) {
                fputs(KEEPER_ANSI_CLEAR_LINE, stderr);
                fflush(stderr);
        }
        if (r == -EINTR) {
                keeper_http_response_done(&resp);
                if (!k->quiet)
                        fprintf(stderr, "rbee: interrupted: the worker for %s may still be starting on the hive; "
                                        "'rbee worker stop %s' stops it\n", model, model);
                return KEEPER_EXIT_INTERRUPTED;
        }
        if (r < 0) {
                keeper_http_response_done(&resp);
                return keeper_report(k, r, model);
        }
        if (resp.body_len > 0 && json_parse_strict(resp.body, resp.body_len, 32, &o, jerr, sizeof(jerr)) < 0) {
                keeper_http_response_done(&resp);
                return keeper_error(k, "%s answered POST /v1/workers with malformed JSON (%s)", keeper_hive_label(k), jerr);
        }
        keeper_http_response_done(&resp);
        if (k->json && o)
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        if (o)
                keeper_json_sanitize(o);
        if (!k->quiet) {
                const char *state = o ? str_field(o, "state") : NULL;
                int64_t pid = 0;

                if (o)
                        json_get_int64(o, "pid", 0, INT64_MAX, &pid);
                if (!wait)
                        fprintf(stderr, "Starting the worker for %s (%s); 'rbee worker list' shows when it is ready\n",
                                model, state ? state : "starting");
                else
                        fprintf(stderr, "The worker for %s is %s (pid %" PRIi64 ", %s)\n", model,
                                state ? state : "ready", pid,
                                strna(o ? str_field(o, "unit") : NULL));
        }
        return KEEPER_EXIT_OK;
}

/* ---- stop ---- */

static void stop_help(void) {
        printf("Usage: rbee worker stop ID\n\nStop the worker of model ID (its requests end).\n\n%s", keeper_global_help);
}

static int worker_stop(struct keeper *k, int argc, char **argv) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(freep) char *path = NULL;
        const char *id;
        int r;

        if ((r = keeper_simple_options(k, argc, argv, stop_help)) >= 0)
                return r;
        if ((r = keeper_one_arg(k, "worker stop", argc, argv, "the model ID", &id)) != 0)
                return r;
        if ((r = keeper_connect(k)) != 0)
                return r;
        if (!(path = keeper_path("/v1/workers/", id, NULL)))
                return keeper_error(k, "out of memory");
        r = keeper_api(k, "DELETE", path, NULL, &o);
        if (r < 0)
                return keeper_report(k, r, id);
        if (k->json)
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        keeper_note(k, "stopped the worker for %s", id);
        return KEEPER_EXIT_OK;
}

/* ---- cleanup ---- */

static void cleanup_help(void) {
        printf("Usage: rbee worker cleanup [--all]\n"
               "\n"
               "Reap failed and dead workers and remove their stale sockets and records.\n"
               "  --all   also stop every running worker\n"
               "\n%s",
               keeper_global_help);
}

static size_t print_ids(struct json_object *o, const char *key, const char *verb) {
        struct json_object *a;
        size_t n = 0;

        if (json_get_typed(o, key, json_type_array, &a) <= 0)
                return 0;
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                struct json_object *v = json_object_array_get_idx(a, i);
                if (json_object_is_type(v, json_type_string)) {
                        printf("%s %s\n", verb, json_object_get_string(v));
                        n++;
                }
        }
        return n;
}

static int worker_cleanup(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = {
                { "all", no_argument, NULL, 'a' },
                KEEPER_GLOBAL_OPTIONS,
                {},
        };
        _cleanup_(json_object_putp) struct json_object *body = NULL, *o = NULL;
        bool all = false;
        int c, r;

        while ((c = keeper_getopt(k, argc, argv, "a" KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        cleanup_help();
                        return KEEPER_EXIT_OK;
                }
                if (c == 'a')
                        all = true;
                else
                        return KEEPER_EXIT_USAGE;
        }
        if (optind < argc)
                return keeper_usage_error(k, "worker cleanup", "unexpected argument '%s'", argv[optind]);
        if ((r = keeper_connect(k)) != 0)
                return r;
        body = json_object_new_object();
        if (!body)
                return keeper_error(k, "out of memory");
        json_object_object_add(body, "all", json_object_new_boolean(all));
        r = keeper_api(k, "POST", "/v1/workers/cleanup", body, &o);
        if (r < 0)
                return keeper_report(k, r, NULL);
        if (k->json)
                return keeper_print_json(k, o) < 0 ? KEEPER_EXIT_ERROR : KEEPER_EXIT_OK;
        if (print_ids(o, "reaped", "reaped") + print_ids(o, "stopped", "stopped") == 0)
                keeper_note(k, "nothing to clean up on %s", keeper_hive_label(k));
        return KEEPER_EXIT_OK;
}

/* ---- logs ---- */

static void logs_help(void) {
        printf("Usage: rbee worker logs ID [-f] [-n N]\n"
               "\n"
               "Show the log of the worker of model ID: the journal of its unit\n"
               "rbee-worker@ID.service (through journalctl), or, when the hive runs workers\n"
               "as plain processes, the log file next to its socket. Works for the local\n"
               "hive only; on another machine, run it there.\n"
               "\n"
               "  -f, --follow      keep printing new lines\n"
               "  -n, --lines N     show the last N lines (default 50)\n"
               "\n%s",
               keeper_global_help);
}

static int follow_file(struct keeper *k, int fd, const char *path) {
        _cleanup_(closep) int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        char buf[65536];

        if (in < 0 || inotify_add_watch(in, path, IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF) < 0)
                return keeper_error(k, "cannot watch %s: %m", path);
        for (;;) {
                struct pollfd p[2] = {
                        { .fd = in, .events = POLLIN },
                        { .fd = keeper_signals_fd(), .events = POLLIN },
                };
                ssize_t n;

                while ((n = read(fd, buf, sizeof(buf))) > 0)
                        if (fwrite(buf, 1, (size_t) n, stdout) != (size_t) n || fflush(stdout) != 0)
                                return KEEPER_EXIT_PIPE;
                if (keeper_signals_count() > 0)
                        return KEEPER_EXIT_OK;
                if (poll(p, 2, -1) < 0 && errno != EINTR)
                        return keeper_error(k, "poll: %m");
                if (keeper_signals_count() > 0)
                        return KEEPER_EXIT_OK;
                while (read(in, buf, sizeof(buf)) > 0)
                        ;
        }
}

/* Print the last n lines of an open file, leaving the offset at its end. */
static int tail_file(int fd, unsigned n) {
        struct stat st;
        off_t start = 0;
        char buf[65536];
        ssize_t got;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (n > 0 && st.st_size > 0) {
                unsigned seen = 0;
                off_t pos = st.st_size;

                /* Walk back block by block counting newlines (the last byte's does not count). */
                while (pos > 0 && seen <= n) {
                        size_t want = (size_t) MIN((off_t) sizeof(buf), pos);
                        pos -= (off_t) want;
                        if (pread(fd, buf, want, pos) != (ssize_t) want)
                                return -EIO;
                        for (size_t i = want; i > 0; i--) {
                                if (buf[i - 1] == '\n' && pos + (off_t) i != st.st_size && ++seen > n) {
                                        start = pos + (off_t) i;
                                        break;
                                }
                        }
                }
        } else if (n == 0)
                start = st.st_size;
        if (lseek(fd, start, SEEK_SET) < 0)
                return -errno;
        while ((got = read(fd, buf, sizeof(buf))) > 0)
                if (fwrite(buf, 1, (size_t) got, stdout) != (size_t) got)
                        return -EPIPE;
        fflush(stdout);
        return 0;
}

static int worker_logs(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = {
                { "follow", no_argument, NULL, 'f' },
                { "lines", required_argument, NULL, 'n' },
                KEEPER_GLOBAL_OPTIONS,
                {},
        };
        _cleanup_(json_object_putp) struct json_object *w = NULL;
        _cleanup_(freep) char *path = NULL, *unit = NULL, *log = NULL;
        const char *id, *mode = NULL, *socket = NULL, *u = NULL, *logfield = NULL;
        bool follow = false;
        int64_t lines = 50;
        int c, r;

        while ((c = keeper_getopt(k, argc, argv, "fn:" KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        logs_help();
                        return KEEPER_EXIT_OK;
                }
                if (c == 'f')
                        follow = true;
                else if (c == 'n') {
                        if (parse_int64(optarg, 0, 1000000, &lines) < 0)
                                return keeper_usage_error(k, "worker logs", "--lines: expected a number, got '%s'", optarg);
                } else
                        return KEEPER_EXIT_USAGE;
        }
        if ((r = keeper_one_arg(k, "worker logs", argc, argv, "the model ID", &id)) != 0)
                return r;
        if ((r = keeper_connect(k)) != 0)
                return r;

        if (!(path = keeper_path("/v1/workers/", id, NULL)))
                return keeper_error(k, "out of memory");
        r = keeper_api(k, "GET", path, NULL, &w);
        if (r < 0 && !(r == -EREMOTEIO && k->err.status == 404))
                return keeper_report(k, r, id);
        if (w) {
                mode = str_field(w, "mode");
                socket = str_field(w, "socket");
                u = str_field(w, "unit");
                logfield = str_field(w, "log");
        } else if (k->health) {
                mode = str_field(k->health, "mode");
        }
        if (u)
                unit = strdup(u);
        else if (keeper_worker_unit_name(id, &unit) < 0)
                return keeper_error(k, "out of memory");
        if (!unit)
                return keeper_error(k, "out of memory");

        if (!k->hive_is_local)
                return keeper_error(k, "%s is on another machine: run 'journalctl -u %s%s' there "
                                    "(or 'rbee worker logs %s' on that machine)",
                                    keeper_hive_label(k), unit, follow ? " -f" : "", id);

        if (streq(mode, "process")) {
                _cleanup_(closep) int fd = -EBADF;

                if (!socket && !logfield)
                        return keeper_error(k, "there is no worker for %s on %s right now, and in process mode its log "
                                            "is kept in the hive's runtime directory (workers/*.log): 'rbee worker list' "
                                            "shows the running workers", id, keeper_hive_label(k));
                if (logfield && logfield[0] == '/') {
                        if (!(log = strdup(logfield)))
                                return keeper_error(k, "out of memory");
                } else if (keeper_worker_log_path(socket, &log) < 0)
                        return keeper_error(k, "cannot tell the log file of %s from its socket path %s", id, socket);
                fd = open(log, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return keeper_error(k, "cannot read the log of %s at %s: %m", id, log);
                if (tail_file(fd, (unsigned) lines) < 0)
                        return keeper_error(k, "cannot read %s: %m", log);
                return follow ? follow_file(k, fd, log) : KEEPER_EXIT_OK;
        }

        /* systemd mode: the journal of the unit. */
        {
                char nbuf[32];
                const char *args[] = { "journalctl", "--no-pager", "-u", unit, "-n", nbuf, follow ? "-f" : NULL, NULL };

                snprintf(nbuf, sizeof(nbuf), "%" PRIi64, lines);
                fflush(stdout);
                execvp("journalctl", (char *const *) args);
                return keeper_error(k, "cannot run journalctl (%m): read the log with 'journalctl -u %s'", unit);
        }
}

int keeper_cmd_worker(struct keeper *k, int argc, char **argv) {
        static const struct keeper_verb verbs[] = {
                { "list", worker_list },
                { "ls", worker_list },
                { "spawn", worker_spawn },
                { "start", worker_spawn },
                { "stop", worker_stop },
                { "cleanup", worker_cleanup },
                { "logs", worker_logs },
        };

        return keeper_dispatch(k, "worker", verbs, ELEMENTSOF(verbs), help, argc, argv);
}
