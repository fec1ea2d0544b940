/* SPDX-License-Identifier: MIT */
#include <langinfo.h>
#include <locale.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <wchar.h>

#include "strutil.h"
#include "term.h"

static bool utf8_locale;

void keeper_term_setup(void) {
        const char *cs;

        setlocale(LC_CTYPE, "");
        cs = nl_langinfo(CODESET);
        utf8_locale = cs && (strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "utf8") == 0);
}

bool keeper_term_utf8(void) {
        return utf8_locale;
}

bool keeper_term_isatty(int fd) {
        const char *t = getenv("TERM");

        if (!isatty(fd))
                return false;
        return !streq(t, "dumb");
}

bool keeper_term_colors(int fd, bool no_color) {
        const char *e = getenv("NO_COLOR");

        /* no-color.org: any non-empty value turns colors off. */
        if (no_color || (e && *e))
                return false;
        return keeper_term_isatty(fd);
}

unsigned keeper_term_columns(int fd) {
        const char *e = getenv("COLUMNS");
        struct winsize ws;
        int64_t v;

        if (e && parse_int64(e, 1, 100000, &v) == 0)
                return (unsigned) v;
        if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
                return ws.ws_col;
        return 80;
}

/* Decode one UTF-8 sequence; returns its length (1 for an invalid byte,
 * with *cp = 0xfffd). */
static size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp) {
        size_t k;
        uint32_t c;

        if (p[0] < 0x80) {
                *cp = p[0];
                return 1;
        }
        if (p[0] >= 0xc2 && p[0] <= 0xdf) {
                k = 1;
                c = p[0] & 0x1f;
        } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
                k = 2;
                c = p[0] & 0x0f;
        } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
                k = 3;
                c = p[0] & 0x07;
        } else
                goto invalid;
        if (n <= k)
                goto invalid;
        for (size_t j = 1; j <= k; j++) {
                if ((p[j] & 0xc0) != 0x80)
                        goto invalid;
                c = (c << 6) | (p[j] & 0x3f);
        }
        *cp = c;
        return k + 1;
invalid:
        *cp = 0xfffd;
        return 1;
}

static size_t cp_width(uint32_t cp) {
        int w;

        if (cp < 0x20 || cp == 0x7f)
                return 0;
        if (cp < 0x7f)
                return 1;
        w = utf8_locale ? wcwidth((wchar_t) cp) : 1;
        return w < 0 ? 1 : (size_t) w;
}

size_t keeper_term_width(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *) s;
        size_t w = 0;

        for (size_t i = 0; i < n;) {
                uint32_t cp;
                i += utf8_next(p + i, n - i, &cp);
                w += cp_width(cp);
        }
        return w;
}

void keeper_term_sanitize(char *s) {
        char *w = s;

        for (const char *p = s; *p; p++) {
                unsigned char c = (unsigned char) *p;
                if (c == 0xc2 && (unsigned char) p[1] >= 0x80 && (unsigned char) p[1] <= 0x9f) {
                        p++;
                        *w++ = ' ';
                } else
                        *w++ = c < 0x20 || c == 0x7f ? ' ' : (char) c;
        }
        *w = 0;
}

size_t keeper_term_prefix_fitting(const char *s, size_t n, size_t cols) {
        const unsigned char *p = (const unsigned char *) s;
        size_t w = 0, i = 0;

        while (i < n) {
                uint32_t cp;
                size_t k = utf8_next(p + i, n - i, &cp), cw = cp_width(cp);
                if (w + cw > cols)
                        break;
                w += cw;
                i += k;
        }
        return i;
}
