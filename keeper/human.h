/* SPDX-License-Identifier: MIT */
#pragma once

/* Numbers for people: sizes in decimal units (as ollama and disk vendors
 * print them), rates, durations and "in 4 minutes". All write into a caller
 * buffer and return it. */

#include <stddef.h>
#include <stdint.h>

#define KEEPER_HUMAN_MAX 64

char *keeper_human_bytes(uint64_t n, char *buf, size_t len);
char *keeper_human_rate(double bytes_per_s, char *buf, size_t len);
/* "850ms", "12s", "3m20s", "2h05m", "3d4h". */
char *keeper_human_duration(double seconds, char *buf, size_t len);
/* "4 minutes from now", "about a minute", for keep-alive deadlines. */
char *keeper_human_until(int64_t seconds, char *buf, size_t len);
/* "3 seconds ago", for timestamps. */
char *keeper_human_ago(int64_t seconds, char *buf, size_t len);
/* "1.1B", "260K" for parameter counts. */
char *keeper_human_count(uint64_t n, char *buf, size_t len);
