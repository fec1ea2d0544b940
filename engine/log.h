/* SPDX-License-Identifier: MIT */
#pragma once

/* The engine never prints: it hands messages to a callback the program
 * installs (the worker sends them to journald, the tools to stderr). */

#include <stdarg.h>

#include "macros.h"
#include "rbee-engine.h"

void rbee_logf(int level, const char *fmt, ...) _printf_(2, 3);

#define log_debug(...) rbee_logf(RBEE_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) rbee_logf(RBEE_LOG_INFO, __VA_ARGS__)
#define log_warning(...) rbee_logf(RBEE_LOG_WARNING, __VA_ARGS__)
#define log_error(...) rbee_logf(RBEE_LOG_ERR, __VA_ARGS__)
