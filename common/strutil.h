/* SPDX-License-Identifier: MIT */
#pragma once

/* String helpers shared by the daemons and the CLI: a growable buffer with a
 * hard maximum (in the spirit of curl's dynbuf), strict number parsing, and
 * small predicates. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macros.h"

struct strbuf {
        char *data;             /* always NUL-terminated when non-NULL */
        size_t len;
        size_t cap;
        size_t max;             /* appends that would grow len past this fail with -E2BIG */
};

#define STRBUF_INIT(m) ((struct strbuf) { .max = (m) })

void strbuf_init(struct strbuf *b, size_t max);
void strbuf_done(struct strbuf *b);             /* frees; the buffer may be reused after strbuf_init() */
void strbuf_reset(struct strbuf *b);            /* empties, keeps the allocation */
int strbuf_append(struct strbuf *b, const void *p, size_t n);
int strbuf_puts(struct strbuf *b, const char *s);
int strbuf_printf(struct strbuf *b, const char *fmt, ...) _printf_(2, 3);
/* Drop the first n bytes. */
void strbuf_consume(struct strbuf *b, size_t n);
/* Hand the data to the caller (never NULL on success: an empty buffer gives ""). */
int strbuf_steal(struct strbuf *b, char **ret, size_t *ret_len);

static inline void strbuf_donep(struct strbuf *b) {
        strbuf_done(b);
}

/* Strict parsing: the whole string must be a number within [min, max]. */
int parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret);
int parse_uint64(const char *s, uint64_t *ret);
int parse_double(const char *s, double min, double max, double *ret);
/* "30", "30s", "500ms", "2min", "1h" into microseconds. */
int parse_duration_usec(const char *s, uint64_t *ret);

bool str_startswith(const char *s, const char *prefix);
bool str_endswith(const char *s, const char *suffix);
/* Case-insensitive prefix test for header values ("Bearer ..."). */
bool str_startswith_ci(const char *s, const char *prefix);
/* Compare without leaking where the first difference is. */
bool str_equal_consttime(const char *a, size_t alen, const char *b, size_t blen);
/* Remove trailing whitespace in place; returns s. */
char *str_strip_trailing(char *s);
/* Does s consist of n bytes of valid UTF-8 (no overlongs, no surrogates)? */
bool utf8_is_valid(const char *s, size_t n);
/* Every byte of s that is not part of a valid UTF-8 sequence (a sequence cut
 * by a "%.200s" too) becomes '?', in place: for text that goes out as JSON. */
void utf8_scrub(char *s);

static inline const char *strna(const char *s) {
        return s ? s : "n/a";
}

static inline const char *strempty(const char *s) {
        return s ? s : "";
}

static inline bool streq(const char *a, const char *b) {
        return a && b && __builtin_strcmp(a, b) == 0;
}
