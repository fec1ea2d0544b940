/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "strutil.h"

void strbuf_init(struct strbuf *b, size_t max) {
        *b = (struct strbuf) { .max = max };
}

void strbuf_done(struct strbuf *b) {
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
}

void strbuf_reset(struct strbuf *b) {
        b->len = 0;
        if (b->data)
                b->data[0] = 0;
}

static int strbuf_reserve(struct strbuf *b, size_t extra) {
        size_t need, cap;
        char *p;

        if (ADD_OVERFLOW(b->len, extra, &need) || need > b->max)
                return -E2BIG;
        if (need + 1 <= b->cap)
                return 0;
        cap = b->cap ? b->cap : 256;
        while (cap < need + 1)
                if (MUL_OVERFLOW(cap, (size_t) 2, &cap))
                        return -E2BIG;
        /* The last byte holds the terminator, so cap may exceed max by one. */
        if (b->max < SIZE_MAX)
                cap = MIN(cap, b->max + 1);
        p = realloc(b->data, cap);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->cap = cap;
        return 0;
}

int strbuf_append(struct strbuf *b, const void *p, size_t n) {
        int r = strbuf_reserve(b, n);
        if (r < 0)
                return r;
        if (n > 0)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = 0;
        return 0;
}

int strbuf_puts(struct strbuf *b, const char *s) {
        return strbuf_append(b, s, strlen(s));
}

int strbuf_printf(struct strbuf *b, const char *fmt, ...) {
        va_list ap;
        int n, r;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        r = strbuf_reserve(b, (size_t) n);
        if (r < 0)
                return r;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t) n;
        return 0;
}

void strbuf_consume(struct strbuf *b, size_t n) {
        if (n >= b->len) {
                strbuf_reset(b);
                return;
        }
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
        b->data[b->len] = 0;
}

int strbuf_steal(struct strbuf *b, char **ret, size_t *ret_len) {
        if (!b->data) {
                char *e = strdup("");
                if (!e)
                        return -ENOMEM;
                b->data = e;
                b->cap = 1;
        }
        *ret = b->data;
        if (ret_len)
                *ret_len = b->len;
        b->data = NULL;
        b->len = b->cap = 0;
        return 0;
}

int parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret) {
        char *end;
        long long v;

        if (!s || !*s || isspace((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (end == s || *end)
                return -EINVAL;
        if (errno == ERANGE || v < min || v > max)
                return -ERANGE;
        if (errno != 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int parse_uint64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!s || !*s || *s == '-' || *s == '+' || isspace((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (errno != 0 || end == s || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

int parse_double(const char *s, double min, double max, double *ret) {
        char *end;
        double v;

        if (!s || !*s || isspace((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || *end || !isfinite(v))
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_duration_usec(const char *s, uint64_t *ret) {
        static const struct {
                const char *suffix;
                uint64_t mult;
        } units[] = {
                { "us", 1 }, { "ms", 1000 }, { "s", 1000000 }, { "sec", 1000000 },
                { "min", 60000000 }, { "m", 60000000 }, { "h", UINT64_C(3600000000) }, { "", 1000000 },
        };
        char *end;
        unsigned long long v;
        uint64_t r;

        if (!s || !*s || *s == '-' || *s == '+' || isspace((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                if (strcmp(end, units[i].suffix) == 0) {
                        if (MUL_OVERFLOW((uint64_t) v, units[i].mult, &r))
                                return -ERANGE;
                        *ret = r;
                        return 0;
                }
        return -EINVAL;
}

bool str_startswith(const char *s, const char *prefix) {
        return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

bool str_endswith(const char *s, const char *suffix) {
        size_t n, m;

        if (!s)
                return false;
        n = strlen(s);
        m = strlen(suffix);
        return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

bool str_startswith_ci(const char *s, const char *prefix) {
        return s && strncasecmp(s, prefix, strlen(prefix)) == 0;
}

bool str_equal_consttime(const char *a, size_t alen, const char *b, size_t blen) {
        unsigned char d = alen != blen;
        size_t n = MIN(alen, blen);

        /* Walk the shorter length fully; the length mismatch is already folded in. */
        for (size_t i = 0; i < n; i++)
                d |= (unsigned char) (a[i] ^ b[i]);
        return d == 0;
}

char *str_strip_trailing(char *s) {
        size_t n = strlen(s);

        while (n > 0 && isspace((unsigned char) s[n - 1]))
                s[--n] = 0;
        return s;
}

bool utf8_is_valid(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *) s;
        size_t i = 0;

        while (i < n) {
                unsigned char c = p[i];
                uint32_t cp;
                size_t k;

                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf) {
                        k = 1;
                        cp = c & 0x1f;
                } else if (c >= 0xe0 && c <= 0xef) {
                        k = 2;
                        cp = c & 0x0f;
                } else if (c >= 0xf0 && c <= 0xf4) {
                        k = 3;
                        cp = c & 0x07;
                } else
                        return false;
                if (n - i <= k)
                        return false;
                for (size_t j = 1; j <= k; j++) {
                        if ((p[i + j] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i + j] & 0x3f);
                }
                if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
                    (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += k + 1;
        }
        return true;
}

void utf8_scrub(char *s) {
        size_t n = strlen(s);

        for (size_t i = 0; i < n;) {
                unsigned char c = (unsigned char) s[i];
                size_t k = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;

                if (k <= n - i && utf8_is_valid(s + i, k)) {
                        i += k;
                        continue;
                }
                s[i++] = '?';
        }
}
