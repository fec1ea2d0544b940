/* SPDX-License-Identifier: MIT */
#pragma once

/* The state of one rbee invocation: global options, the terminal, the hive
 * it talks to, and the error the hive gave last. Commands return exit
 * codes (KEEPER_EXIT_*); library-style helpers return negative errno. */

#include <getopt.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>

#include "config.h"
#include "http.h"
#include "macros.h"

#ifndef RBEE_VERSION
#define RBEE_VERSION "0.0.0"
#endif

#define KEEPER_EXIT_OK 0
#define KEEPER_EXIT_ERROR 1
#define KEEPER_EXIT_USAGE 2
#define KEEPER_EXIT_INTERRUPTED 130
#define KEEPER_EXIT_PIPE 141

/* The hive API version this rbee speaks (GET /v1/health "api_version"). */
#define KEEPER_API_VERSION 1

enum {
        KEEPER_OPT_HIVE = 0x1000,
        KEEPER_OPT_API_KEY,
        KEEPER_OPT_API_KEY_FILE,
        KEEPER_OPT_JSON,
        KEEPER_OPT_NO_COLOR,
        KEEPER_OPT_FIRST_LOCAL,         /* commands number their own long options from here */
};

/* Options every command takes, wherever they appear. */
#define KEEPER_GLOBAL_OPTIONS                                                           \
        { "hive", required_argument, NULL, KEEPER_OPT_HIVE },                           \
        { "node", required_argument, NULL, KEEPER_OPT_HIVE },                           \
        { "api-key", required_argument, NULL, KEEPER_OPT_API_KEY },                     \
        { "api-key-file", required_argument, NULL, KEEPER_OPT_API_KEY_FILE },           \
        { "json", no_argument, NULL, KEEPER_OPT_JSON },                                 \
        { "no-color", no_argument, NULL, KEEPER_OPT_NO_COLOR },                         \
        { "quiet", no_argument, NULL, 'q' },                                            \
        { "verbose", no_argument, NULL, 'v' },                                          \
        { "help", no_argument, NULL, 'h' }
#define KEEPER_GLOBAL_SHORT "qvh"

struct keeper_hive_error {
        long status;                    /* HTTP status; 0 for transport errors */
        char code[64];                  /* the hive's error code, or "" */
        char message[1024];
};

struct keeper {
        /* options */
        char *hive_arg;
        char *api_key;
        char *api_key_file;
        bool json, quiet, verbose, no_color;

        /* terminal */
        bool in_tty, out_tty, err_tty;
        bool out_color, err_color;

        struct keeper_config config;
        bool config_loaded;

        /* the hive */
        char *hive_name;                /* NULL when given as a URL */
        char *hive_url;
        bool hive_is_local;             /* on a loopback address */
        bool key_sent;                  /* requests carry an API key */
        struct keeper_http *http;
        struct json_object *health;

        struct keeper_hive_error err;
};

void keeper_init(struct keeper *k);
void keeper_done(struct keeper *k);
/* Options changed: recompute colors and the like. */
void keeper_apply_options(struct keeper *k);

/* Handle a global option from getopt; 1 when it was one, 0 when not,
 * negative (message printed) for a bad value. */
int keeper_global_option(struct keeper *k, int c, const char *arg);

/* getopt over a command's options and the global ones (argv[0] is
 * "rbee CMD", for getopt's messages). Returns the next command-specific
 * option, -1 at the end, -2 after an error (message printed; exit with
 * KEEPER_EXIT_USAGE), or 'h' for --help. */
int keeper_getopt(struct keeper *k, int argc, char **argv, const char *shortopts, const struct option *longopts);

/* For verbs without options of their own: parse the global ones. Returns
 * -1 to go on (optind is at the arguments), else the exit code (after
 * --help or a bad option). */
int keeper_simple_options(struct keeper *k, int argc, char **argv, void (*help)(void));
/* Exactly one argument left (what names it in the message). Returns 0 or
 * KEEPER_EXIT_USAGE. */
int keeper_one_arg(struct keeper *k, const char *cmd, int argc, char **argv, const char *what, const char **ret);

/* Messages on stderr: errors always, notes unless -q. Both end the line. */
int keeper_error(struct keeper *k, const char *fmt, ...) _printf_(2, 3);
void keeper_note(struct keeper *k, const char *fmt, ...) _printf_(2, 3);
/* "rbee CMD: MSG" plus a pointer to --help; returns KEEPER_EXIT_USAGE. */
int keeper_usage_error(struct keeper *k, const char *cmd, const char *fmt, ...) _printf_(3, 4);

/* Print a JSON document on stdout (pretty on a terminal). */
int keeper_print_json(struct keeper *k, struct json_object *o);
/* Width to fit tables to: the terminal's, or 0 when piped. */
unsigned keeper_table_width(const struct keeper *k);

/* "hive 'local' at http://127.0.0.1:7835" or "hive at URL". */
const char *keeper_hive_label(struct keeper *k);

/* ---- talking to the hive (api.c) ---- */

/* Forget the hive talked to so far, so that keeper_connect() picks again. */
void keeper_reset_target(struct keeper *k);
/* Load the config (once). Prints and returns KEEPER_EXIT_ERROR on a bad file. */
int keeper_load_config(struct keeper *k);
/* Pick the hive (--hive, $RBEE_HIVE, the config's default, "local"), read
 * the API key, check GET /v1/health and the API version. Returns an exit
 * code, with the message printed. */
int keeper_connect(struct keeper *k);

/* One JSON call. body may be NULL. Returns 0 on a 2xx (with the parsed
 * answer in *ret, NULL for an empty one), -EREMOTEIO when the hive answered
 * with an error (k->err holds it), -EINTR, or a transport error (k->err
 * has the message). */
int keeper_api(struct keeper *k, const char *method, const char *path, struct json_object *body,
               struct json_object **ret);
/* The same with a streamed answer. */
int keeper_api_stream(struct keeper *k, const char *method, const char *path, struct json_object *body,
                      const struct keeper_http_stream *stream, struct keeper_http_response *resp);

/* Fill k->err from an HTTP answer that is not a success. */
void keeper_set_http_error(struct keeper *k, const struct keeper_http_response *resp);
/* Make every string in o safe to show on a terminal (keeper_term_sanitize());
 * keeper_api() does it to its answers unless --json. */
void keeper_json_sanitize(struct json_object *o);
/* Fill k->err from a transport error. */
void keeper_set_transport_error(struct keeper *k, int r, const char *detail);

/* Print k->err (or r's meaning) with what to do next. subject is the model
 * or job the command was about (for hints), or NULL. Returns the exit code. */
int keeper_report(struct keeper *k, int r, const char *subject);
/* Advice for a hive error code (job events use the same codes), or NULL. */
const char *keeper_hint(struct keeper *k, const char *code, const char *subject, char *buf, size_t len);

/* "/v1/models/ID" with ID percent-encoded; NULL on ENOMEM. */
char *keeper_path(const char *prefix, const char *id, const char *suffix);

/* Read a secret from a file (trailing whitespace dropped, at most 4 KiB). */
int keeper_read_key_file(const char *path, char **ret);
