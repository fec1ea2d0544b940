/* SPDX-License-Identifier: MIT */
#pragma once

/* Logging for the daemons and the CLI: structured records to journald when
 * stderr is connected to the journal (JOURNAL_STREAM matches stderr), else
 * readable lines on stderr. Levels are syslog priorities (LOG_ERR ...).
 *
 * Fields are "KEY=value" strings: global ones (set once at startup, e.g.
 * RBEE_MODEL=), one per thread (e.g. RBEE_JOB_ID= while a job runs), and any
 * passed with a single call. On stderr they are appended in brackets. */

#include <stdbool.h>
#include <syslog.h>

#include "macros.h"

enum log_target {
        LOG_TARGET_AUTO,
        LOG_TARGET_JOURNAL,
        LOG_TARGET_STDERR,
};

/* ident is the SYSLOG_IDENTIFIER and the stderr prefix; not copied. Not thread-safe: call first. */
void log_setup(const char *ident, enum log_target target);
enum log_target log_get_target(void);
void log_set_max_level(int level);
int log_get_max_level(void);
/* Parse "err", "warning", "info", "debug", ... or a number 0-7. */
int log_level_from_string(const char *s, int *ret);

/* Set or replace (by key) a field sent with every record; value NULL removes
 * it. Not thread-safe: call before starting threads. -E2BIG past 8 fields. */
int log_set_field(const char *key, const char *value);
/* Set the calling thread's field (one per thread); NULL clears it. Copied. */
void log_set_thread_field(const char *key, const char *value);

/* Log fmt (printf-style, %m prints error) with extra fields (NULL-terminated
 * array of "KEY=value", may be NULL). Returns -abs(error), or 0 when error
 * is 0, so that callers can write `return log_error_errno(r, ...)`. */
int log_full(int level, int error, const char *const *fields, const char *fmt, ...) _printf_(4, 5);

#define log_debug(...) log_full(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_debug_errno(e, ...) log_full(LOG_DEBUG, (e), NULL, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full(LOG_WARNING, (e), NULL, __VA_ARGS__)
#define log_error_errno(e, ...) log_full(LOG_ERR, (e), NULL, __VA_ARGS__)
/* log_struct(LOG_INFO, ((const char *[]) { "RBEE_TOKENS_OUT=12", NULL }), "done") */
#define log_struct(level, fields, ...) log_full((level), 0, (fields), __VA_ARGS__)
