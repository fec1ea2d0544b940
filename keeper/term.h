/* SPDX-License-Identifier: MIT */
#pragma once

/* What the terminal can do: its width, whether to use colors (never when
 * piped, with NO_COLOR set, --no-color, or TERM=dumb), whether it takes
 * UTF-8, and how wide a string is on screen. */

#include <stdbool.h>
#include <stddef.h>

#define KEEPER_ANSI_RESET "\033[0m"
#define KEEPER_ANSI_BOLD "\033[1m"
#define KEEPER_ANSI_DIM "\033[2m"
#define KEEPER_ANSI_RED "\033[31m"
#define KEEPER_ANSI_GREEN "\033[32m"
#define KEEPER_ANSI_YELLOW "\033[33m"
#define KEEPER_ANSI_CYAN "\033[36m"
#define KEEPER_ANSI_BOLD_RED "\033[1;31m"
#define KEEPER_ANSI_CLEAR_LINE "\r\033[K"

/* Call once at start: reads the locale's charset (LC_CTYPE only, so that
 * numbers keep printing with a dot). */
void keeper_term_setup(void);

/* Is fd a terminal (TERM=dumb counts as not)? */
bool keeper_term_isatty(int fd);

/* Should output on fd use ANSI colors? no_color is --no-color. */
bool keeper_term_colors(int fd, bool no_color);

/* Width in columns: $COLUMNS when valid, else TIOCGWINSZ on fd, else 80. */
unsigned keeper_term_columns(int fd);

/* Does the terminal take UTF-8 (for "…" and block characters)? */
bool keeper_term_utf8(void);

/* On-screen width of the first n bytes of s (control characters count 0,
 * invalid bytes 1, wide characters 2). */
size_t keeper_term_width(const char *s, size_t n);

/* Byte length of the longest prefix of s[0..n) that fits in cols columns. */
size_t keeper_term_prefix_fitting(const char *s, size_t n, size_t cols);

/* Make text from the network safe to show, in place: C0 controls, DEL and C1
 * controls (U+0080..U+009F, UTF-8 C2 80..C2 9F; CSI to some terminals)
 * become spaces, so that no escape sequence reaches the terminal and a line
 * stays one line. */
void keeper_term_sanitize(char *s);
