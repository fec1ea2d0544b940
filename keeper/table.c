/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "table.h"
#include "term.h"

#define GAP 3

struct cell {
        char *text;
        const char *color;
};

struct keeper_table {
        size_t n_cols;
        char **headers;
        unsigned *flags;
        struct cell *cells;             /* n_rows * n_cols */
        size_t n_rows, cap_rows;
};

struct keeper_table *keeper_table_free(struct keeper_table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
                free(t->cells[i].text);
        for (size_t i = 0; i < t->n_cols; i++)
                free(t->headers[i]);
        free(t->cells);
        free(t->headers);
        free(t->flags);
        free(t);
        return NULL;
}

struct keeper_table *keeper_table_new(size_t n, const char *const *headers, const unsigned *flags) {
        struct keeper_table *t = calloc(1, sizeof(*t));

        if (!t || n == 0)
                return keeper_table_free(t);
        t->n_cols = n;
        t->headers = calloc(n, sizeof(char *));
        t->flags = calloc(n, sizeof(unsigned));
        if (!t->headers || !t->flags)
                return keeper_table_free(t);
        for (size_t i = 0; i < n; i++) {
                t->headers[i] = strdup(headers[i]);
                if (!t->headers[i])
                        return keeper_table_free(t);
                t->flags[i] = flags ? flags[i] : 0;
        }
        return t;
}

size_t keeper_table_rows(const struct keeper_table *t) {
        return t->n_rows;
}

int keeper_table_add(struct keeper_table *t, const char *const *cells) {
        struct cell *row;

        if (t->n_rows == t->cap_rows) {
                size_t cap = t->cap_rows ? t->cap_rows * 2 : 16, total, bytes;
                struct cell *c;

                if (MUL_OVERFLOW(cap, t->n_cols, &total) || MUL_OVERFLOW(total, sizeof(struct cell), &bytes))
                        return -ENOMEM;
                c = realloc(t->cells, bytes);
                if (!c)
                        return -ENOMEM;
                t->cells = c;
                t->cap_rows = cap;
        }
        row = t->cells + t->n_rows * t->n_cols;
        for (size_t i = 0; i < t->n_cols; i++) {
                row[i].color = NULL;
                row[i].text = strdup(cells[i] ? cells[i] : "-");
                if (!row[i].text) {
                        while (i > 0)
                                free(row[--i].text);
                        return -ENOMEM;
                }
                /* Cells are one line each: a control character would break the layout. */
                keeper_term_sanitize(row[i].text);
        }
        t->n_rows++;
        return 0;
}

int keeper_table_color_last(struct keeper_table *t, size_t col, const char *ansi) {
        if (t->n_rows == 0 || col >= t->n_cols)
                return -EINVAL;
        t->cells[(t->n_rows - 1) * t->n_cols + col].color = ansi;
        return 0;
}

static size_t text_width(const char *s) {
        return keeper_term_width(s, strlen(s));
}

/* Print s in exactly w columns: padded, or cut with an ellipsis. */
static void put_cell(FILE *f, const char *s, size_t w, bool right, bool last, const char *color) {
        size_t sw = text_width(s), n = strlen(s);
        const char *ell = keeper_term_utf8() ? "…" : "~";

        if (color)
                fputs(color, f);
        if (sw > w) {
                size_t keep = keeper_term_prefix_fitting(s, n, w > 0 ? w - 1 : 0);
                fwrite(s, 1, keep, f);
                if (w > 0)
                        fputs(ell, f);
                sw = keeper_term_width(s, keep) + (w > 0);
                if (color)
                        fputs(KEEPER_ANSI_RESET, f);
                if (!last)
                        for (; sw < w; sw++)
                                fputc(' ', f);
                return;
        }
        if (right)
                for (size_t i = sw; i < w; i++)
                        fputc(' ', f);
        fputs(s, f);
        if (color)
                fputs(KEEPER_ANSI_RESET, f);
        if (!right && !last)
                for (size_t i = sw; i < w; i++)
                        fputc(' ', f);
}

/* Natural widths of the shown columns, shrunk toward their minimum until the
 * table fits width (0: no limit). Returns the total width. */
static size_t fit(const struct keeper_table *t, const bool *hidden, size_t *w, unsigned width, bool cut_keys) {
        size_t total = 0, shown = 0;
        _cleanup_(freep) size_t *minw = calloc(t->n_cols, sizeof(size_t));

        if (!minw)
                return SIZE_MAX;
        for (size_t c = 0; c < t->n_cols; c++) {
                if (hidden[c]) {
                        w[c] = 0;
                        continue;
                }
                w[c] = text_width(t->headers[c]);
                minw[c] = w[c];
                for (size_t r = 0; r < t->n_rows; r++)
                        w[c] = MAX(w[c], text_width(t->cells[r * t->n_cols + c].text));
                if (!(t->flags[c] & KEEPER_COL_SHRINK) && !(cut_keys && (t->flags[c] & KEEPER_COL_SHRINK_LAST)))
                        minw[c] = w[c];
                else
                        minw[c] = MIN(MAX(minw[c], (size_t) 6), w[c]);
                total += w[c] + (shown++ > 0 ? GAP : 0);
        }

        /* Take one column at a time from the widest shrinkable column until
         * the table fits or nothing can shrink further. */
        while (width > 0 && total > width) {
                size_t best = SIZE_MAX;
                for (size_t c = 0; c < t->n_cols; c++)
                        if (!hidden[c] && w[c] > minw[c] && (best == SIZE_MAX || w[c] > w[best]))
                                best = c;
                if (best == SIZE_MAX)
                        break;
                w[best]--;
                total--;
        }
        return total;
}

int keeper_table_print(const struct keeper_table *t, FILE *f, unsigned width, bool colors) {
        _cleanup_(freep) size_t *w = calloc(t->n_cols, sizeof(size_t));
        _cleanup_(freep) bool *hidden = calloc(t->n_cols, sizeof(bool));
        size_t total;

        if (!w || !hidden)
                return -ENOMEM;
        total = fit(t, hidden, w, width, false);
        while (width > 0 && total != SIZE_MAX && total > width) {
                size_t drop = SIZE_MAX;
                for (size_t c = t->n_cols; c > 0; c--)
                        if (!hidden[c - 1] && (t->flags[c - 1] & KEEPER_COL_DROP)) {
                                drop = c - 1;
                                break;
                        }
                if (drop == SIZE_MAX)
                        break;
                hidden[drop] = true;
                total = fit(t, hidden, w, width, false);
        }
        if (width > 0 && total != SIZE_MAX && total > width)
                total = fit(t, hidden, w, width, true);
        if (total == SIZE_MAX)
                return -ENOMEM;

        for (size_t r = 0; r <= t->n_rows; r++) {
                bool first = true;
                size_t last = 0;

                for (size_t c = 0; c < t->n_cols; c++)
                        if (!hidden[c])
                                last = c;
                for (size_t c = 0; c < t->n_cols; c++) {
                        bool head = r == 0;
                        const struct cell *cell = head ? NULL : &t->cells[(r - 1) * t->n_cols + c];
                        const char *color = NULL;

                        if (hidden[c])
                                continue;
                        if (!first)
                                fprintf(f, "%*s", GAP, "");
                        first = false;
                        if (colors)
                                color = head ? KEEPER_ANSI_BOLD : cell->color;
                        put_cell(f, head ? t->headers[c] : cell->text, w[c], t->flags[c] & KEEPER_COL_RIGHT, c == last,
                                 color);
                }
                fputc('\n', f);
        }
        return ferror(f) ? -EIO : 0;
}
