/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "json-util.h"
#include "keeper.h"
#include "strutil.h"
#include "term.h"

void keeper_init(struct keeper *k) {
        *k = (struct keeper) {};
        keeper_apply_options(k);
}

void keeper_done(struct keeper *k) {
        free(k->hive_arg);
        if (k->api_key) {
                explicit_bzero(k->api_key, strlen(k->api_key));
                free(k->api_key);
        }
        free(k->api_key_file);
        keeper_config_done(&k->config);
        free(k->hive_name);
        free(k->hive_url);
        keeper_http_free(k->http);
        json_object_putp(&k->health);
        *k = (struct keeper) {};
}

void keeper_reset_target(struct keeper *k) {
        free(k->hive_name);
        free(k->hive_url);
        k->hive_name = k->hive_url = NULL;
        k->http = keeper_http_free(k->http);
        json_object_putp(&k->health);
        k->health = NULL;
        k->hive_is_local = false;
}

void keeper_apply_options(struct keeper *k) {
        k->in_tty = isatty(STDIN_FILENO);
        k->out_tty = keeper_term_isatty(STDOUT_FILENO);
        k->err_tty = keeper_term_isatty(STDERR_FILENO);
        k->out_color = keeper_term_colors(STDOUT_FILENO, k->no_color);
        k->err_color = keeper_term_colors(STDERR_FILENO, k->no_color);
        if (k->http)
                keeper_http_set_verbose_retries(k->http, !k->quiet);
}

static int set_string(char **p, const char *v) {
        char *s = strdup(v);

        if (!s)
                return -ENOMEM;
        free(*p);
        *p = s;
        return 0;
}

int keeper_global_option(struct keeper *k, int c, const char *arg) {
        int r = 0;

        switch (c) {
        case KEEPER_OPT_HIVE:
                r = set_string(&k->hive_arg, arg);
                break;
        case KEEPER_OPT_API_KEY:
                r = set_string(&k->api_key, arg);
                break;
        case KEEPER_OPT_API_KEY_FILE:
                r = set_string(&k->api_key_file, arg);
                break;
        case KEEPER_OPT_JSON:
                k->json = true;
                break;
        case KEEPER_OPT_NO_COLOR:
                k->no_color = true;
                break;
        case 'q':
                k->quiet = true;
                break;
        case 'v':
                k->verbose = true;
                break;
        default:
                return 0;
        }
        if (r < 0) {
                keeper_error(k, "out of memory");
                return r;
        }
        keeper_apply_options(k);
        return 1;
}

int keeper_getopt(struct keeper *k, int argc, char **argv, const char *shortopts, const struct option *longopts) {
        for (;;) {
                int c = getopt_long(argc, argv, shortopts, longopts, NULL), r;

                if (c == -1)
                        return -1;
                if (c == '?' || c == ':') {
                        /* getopt said what was wrong, naming argv[0] ("rbee CMD"). */
                        fprintf(stderr, "Try '%s --help'.\n", argv[0]);
                        return -2;
                }
                if (c == 'h')
                        return 'h';
                r = keeper_global_option(k, c, optarg);
                if (r < 0)
                        return -2;
                if (r == 0)
                        return c;
        }
}

int keeper_simple_options(struct keeper *k, int argc, char **argv, void (*help)(void)) {
        static const struct option options[] = { KEEPER_GLOBAL_OPTIONS, {} };
        int c = keeper_getopt(k, argc, argv, KEEPER_GLOBAL_SHORT, options);

        if (c == -1)
                return -1;
        if (c == 'h') {
                help();
                return KEEPER_EXIT_OK;
        }
        return KEEPER_EXIT_USAGE;
}

int keeper_one_arg(struct keeper *k, const char *cmd, int argc, char **argv, const char *what, const char **ret) {
        if (optind >= argc)
                return keeper_usage_error(k, cmd, "missing %s", what);
        if (optind + 1 < argc)
                return keeper_usage_error(k, cmd, "unexpected argument '%s'", argv[optind + 1]);
        *ret = argv[optind];
        return 0;
}

static void vmessage(struct keeper *k, bool error, const char *fmt, va_list ap) _printf_(3, 0);
static void vmessage(struct keeper *k, bool error, const char *fmt, va_list ap) {
        bool color = error && k->err_color;
        _cleanup_(freep) char *msg = NULL;

        /* Messages quote what the hive said: a line each, nothing the terminal obeys. */
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        else
                keeper_term_sanitize(msg);
        fflush(stdout);
        if (color)
                fputs(KEEPER_ANSI_BOLD_RED, stderr);
        fputs("rbee: ", stderr);
        if (color)
                fputs(KEEPER_ANSI_RESET KEEPER_ANSI_RED, stderr);
        fputs(msg ? msg : "out of memory", stderr);
        if (color)
                fputs(KEEPER_ANSI_RESET, stderr);
        fputc('\n', stderr);
}

int keeper_error(struct keeper *k, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vmessage(k, true, fmt, ap);
        va_end(ap);
        return KEEPER_EXIT_ERROR;
}

void keeper_note(struct keeper *k, const char *fmt, ...) {
        va_list ap;

        if (k->quiet)
                return;
        va_start(ap, fmt);
        vmessage(k, false, fmt, ap);
        va_end(ap);
}

int keeper_usage_error(struct keeper *k, const char *cmd, const char *fmt, ...) {
        va_list ap;

        fflush(stdout);
        fprintf(stderr, "rbee %s: ", cmd);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry 'rbee %s --help'.\n", cmd);
        return KEEPER_EXIT_USAGE;
}

int keeper_print_json(struct keeper *k, struct json_object *o) {
        int flags = JSON_C_TO_STRING_NOSLASHESCAPE |
                    (k->out_tty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED : JSON_C_TO_STRING_PLAIN);
        const char *s = json_object_to_json_string_ext(o, flags);

        if (!s)
                return -ENOMEM;
        fputs(s, stdout);
        fputc('\n', stdout);
        return fflush(stdout) == 0 ? 0 : -errno;
}

unsigned keeper_table_width(const struct keeper *k) {
        return k->out_tty ? keeper_term_columns(STDOUT_FILENO) : 0;
}

const char *keeper_hive_label(struct keeper *k) {
        static char buf[2200];

        if (k->hive_name)
                snprintf(buf, sizeof(buf), "hive '%s' at %s", k->hive_name, strna(k->hive_url));
        else
                snprintf(buf, sizeof(buf), "hive at %s", strna(k->hive_url));
        return buf;
}

char *keeper_path(const char *prefix, const char *id, const char *suffix) {
        /* curl resolves a "." or ".." segment away (DELETE /v1/models/.. would
         * reach /v1/): percent-encoded, the hive gets the id as it was given. */
        _cleanup_(freep) char *e = streq(id, ".") ? strdup("%2E") : streq(id, "..") ? strdup("%2E%2E")
                                                                                     : keeper_http_escape(id);
        char *p;

        if (!e || asprintf(&p, "%s%s%s", prefix, e, suffix ? suffix : "") < 0)
                return NULL;
        return p;
}

int keeper_read_key_file(const char *path, char **ret) {
        _cleanup_(fclosep) FILE *f = fopen(path, "re");
        char buf[4097];
        size_t n;
        char *s;

        if (!f)
                return -errno;
        n = fread(buf, 1, sizeof(buf), f);
        if (ferror(f))
                return -EIO;
        if (n >= sizeof(buf))
                return -E2BIG;
        buf[n] = 0;
        if (strlen(buf) != n)
                return -EBADMSG;
        str_strip_trailing(buf);
        if (!buf[0])
                return -ENODATA;
        s = strdup(buf);
        explicit_bzero(buf, sizeof(buf));
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}
