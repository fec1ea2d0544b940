/* SPDX-License-Identifier: MIT */
#pragma once

/* Small helpers shared by the engine's command-line tools. */

#include <stdbool.h>
#include <stdint.h>

/* Strict number parsing: the whole string must be a number in range. */
int cli_parse_int(const char *s, long min, long max, long *ret);
int cli_parse_float(const char *s, double min, double max, double *ret);
int cli_parse_u64(const char *s, uint64_t *ret);

/* Log callback printing "rbee: message" to stderr. */
void cli_log_stderr(int level, const char *msg, void *userdata);
