/* SPDX-License-Identifier: MIT */
#pragma once

/* Tables in the style of systemctl: a header, aligned columns, and on a
 * terminal the result fits its width (the widest shrinkable columns are
 * cut with an ellipsis). When piped, nothing is cut and nothing colored. */

#include <stdbool.h>
#include <stdio.h>

#include "macros.h"

enum {
        KEEPER_COL_RIGHT = 1 << 0,      /* numbers */
        KEEPER_COL_SHRINK = 1 << 1,     /* may be cut to fit the terminal */
        KEEPER_COL_DROP = 1 << 2,       /* left out when cutting is not enough (rightmost first) */
        KEEPER_COL_SHRINK_LAST = 1 << 3,        /* a key column: cut only when dropping was not enough */
};

struct keeper_table;

/* headers: n column titles; flags: n KEEPER_COL_* masks (or NULL). */
struct keeper_table *keeper_table_new(size_t n, const char *const *headers, const unsigned *flags);
struct keeper_table *keeper_table_free(struct keeper_table *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct keeper_table *, keeper_table_free);

/* Append one row of n cells (NULL prints as "-"); copied. -ENOMEM on failure. */
int keeper_table_add(struct keeper_table *t, const char *const *cells);
/* Color one cell of the last row (an ANSI sequence; used only with colors). */
int keeper_table_color_last(struct keeper_table *t, size_t col, const char *ansi);
size_t keeper_table_rows(const struct keeper_table *t);

/* Print. width 0 means "do not fit" (piped). */
int keeper_table_print(const struct keeper_table *t, FILE *f, unsigned width, bool colors);
