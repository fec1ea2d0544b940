/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "macros.h"
#include "pretokenize.h"
#include "unicode.h"

/* What the patterns ask of a character. Ill-formed bytes have no flags, so
 * they fall in [^\s\p{L}\p{N}], as any other character would. */
struct ch {
        uint32_t cp;
        unsigned flags;
        size_t len;             /* 0 at the end of the text */
};

static struct ch peek(const uint8_t *s, size_t len, size_t pos) {
        struct ch c = {};

        if (pos >= len)
                return c;
        if (s[pos] < 0x80) {
                c.cp = s[pos];
                c.flags = rbee_unicode_flags(c.cp);
                c.len = 1;
                return c;
        }
        c.len = rbee_utf8_next(s + pos, len - pos, &c.cp);
        c.flags = rbee_unicode_flags(c.cp);
        return c;
}

#define LNS (RBEE_UC_LETTER | RBEE_UC_NUMBER | RBEE_UC_WHITESPACE)

static bool is_other(struct ch c) {
        return c.len > 0 && !(c.flags & LNS);
}

static bool is_letter(struct ch c) {
        return c.len > 0 && (c.flags & RBEE_UC_LETTER);
}

static bool is_number(struct ch c) {
        return c.len > 0 && (c.flags & RBEE_UC_NUMBER);
}

static bool is_space(struct ch c) {
        return c.len > 0 && (c.flags & RBEE_UC_WHITESPACE);
}

static bool is_newline(struct ch c) {
        return c.len > 0 && (c.cp == '\r' || c.cp == '\n');
}

/* End of the run of characters that satisfy pred, starting at pos. */
static size_t run(const uint8_t *s, size_t len, size_t pos, bool (*pred)(struct ch)) {
        for (;;) {
                struct ch c = peek(s, len, pos);
                if (!pred(c))
                        return pos;
                pos += c.len;
        }
}

static uint8_t ascii_lower(uint8_t c) {
        return c >= 'A' && c <= 'Z' ? (uint8_t) (c + 'a' - 'A') : c;
}

/* The contraction after an apostrophe at s[pos]: 's 't 're 've 'm 'll 'd.
 * Returns the length of the match including the apostrophe, or 0. */
static size_t contraction(const uint8_t *s, size_t len, size_t pos, bool fold) {
        uint8_t a, b;

        if (pos + 1 >= len)
                return 0;
        a = fold ? ascii_lower(s[pos + 1]) : s[pos + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd')
                return 2;
        if (pos + 2 >= len)
                return 0;
        b = fold ? ascii_lower(s[pos + 2]) : s[pos + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
                return 3;
        return 0;
}

/* \s+(?!\S)|\s+ at a space: the whole run when it ends the text, else the
 * run but its last character (which goes with what follows), but never less
 * than one character. */
static size_t space_run(const uint8_t *s, size_t len, size_t pos) {
        size_t p = pos, last = pos, k = 0;

        for (;;) {
                struct ch c = peek(s, len, p);
                if (!is_space(c))
                        break;
                last = p;
                p += c.len;
                k++;
        }
        if (p < len && k > 1)
                return last - pos;
        return p - pos;
}

/* Length of the GPT-2 match at pos (< len). */
static size_t match_gpt2(const uint8_t *s, size_t len, size_t pos) {
        struct ch c = peek(s, len, pos), d;
        size_t p = pos, n;

        if (c.cp == '\'') {
                n = contraction(s, len, pos, false);
                if (n > 0)
                        return n;
        }

        /* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' */
        d = c;
        if (c.cp == ' ') {
                d = peek(s, len, pos + 1);
                p = pos + 1;
        }
        if (is_letter(d))
                return run(s, len, p, is_letter) - pos;
        if (is_number(d))
                return run(s, len, p, is_number) - pos;
        if (is_other(d))
                return run(s, len, p, is_other) - pos;

        if (is_space(c))
                return space_run(s, len, pos);
        return c.len;
}

/* Length of the Llama 3 / Qwen2 match at pos (< len); max_digits is 3 or 1. */
static size_t match_llama3(const uint8_t *s, size_t len, size_t pos, unsigned max_digits) {
        struct ch c = peek(s, len, pos), d;
        size_t p, n;

        if (c.cp == '\'') {
                n = contraction(s, len, pos, true);
                if (n > 0)
                        return n;
        }

        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (is_letter(c))
                return run(s, len, pos, is_letter) - pos;
        if (!is_newline(c) && !is_number(c) && is_letter(peek(s, len, pos + c.len)))
                return run(s, len, pos + c.len, is_letter) - pos;

        /* \p{N}{1,max_digits} */
        if (is_number(c)) {
                p = pos;
                for (unsigned i = 0; i < max_digits; i++) {
                        d = peek(s, len, p);
                        if (!is_number(d))
                                break;
                        p += d.len;
                }
                return p - pos;
        }

        /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
        p = pos;
        d = c;
        if (c.cp == ' ') {
                p = pos + 1;
                d = peek(s, len, p);
        }
        if (is_other(d)) {
                p = run(s, len, p, is_other);
                return run(s, len, p, is_newline) - pos;
        }

        if (is_space(c)) {
                /* \s*[\r\n]+: up to the last newline of the run of spaces. */
                size_t nl_end = 0;
                for (p = pos;;) {
                        d = peek(s, len, p);
                        if (!is_space(d))
                                break;
                        p += d.len;
                        if (is_newline(d))
                                nl_end = p;
                }
                if (nl_end > 0)
                        return nl_end - pos;
                return space_run(s, len, pos);
        }
        return c.len;
}

static size_t match(enum rbee_pretok kind, const uint8_t *s, size_t len, size_t pos) {
        switch (kind) {
        case RBEE_PRETOK_LLAMA3:
                return match_llama3(s, len, pos, 3);
        case RBEE_PRETOK_QWEN2:
                return match_llama3(s, len, pos, 1);
        case RBEE_PRETOK_GPT2:
        case RBEE_PRETOK_DIGITS_GPT2:
        default:
                return match_gpt2(s, len, pos);
        }
}

static int split(enum rbee_pretok kind, const char *text, size_t len, rbee_pretok_fn fn, void *userdata) {
        const uint8_t *s = (const uint8_t *) text;

        for (size_t pos = 0; pos < len;) {
                size_t n = match(kind, s, len, pos);
                int r;

                r = fn(text + pos, n, userdata);
                if (r < 0)
                        return r;
                pos += n;
        }
        return 0;
}

int rbee_pretokenize(enum rbee_pretok kind, const char *text, size_t len,
                     rbee_pretok_fn fn, void *userdata) {
        const uint8_t *s = (const uint8_t *) text;
        size_t start = 0;
        int r;

        if (kind != RBEE_PRETOK_DIGITS_GPT2)
                return split(kind, text, len, fn, userdata);

        /* Each digit is a piece of its own; the text between digits is split
         * on its own, so that lookaheads stop at the digit. */
        for (size_t pos = 0; pos < len;) {
                struct ch c = peek(s, len, pos);

                if (!is_number(c)) {
                        pos += c.len;
                        continue;
                }
                r = split(kind, text + start, pos - start, fn, userdata);
                if (r < 0)
                        return r;
                r = fn(text + pos, c.len, userdata);
                if (r < 0)
                        return r;
                pos += c.len;
                start = pos;
        }
        return split(kind, text + start, len - start, fn, userdata);
}

static const struct {
        const char *name;
        enum rbee_pretok kind;
        bool ignore_merges;
} pretok_names[] = {
        /* "default" is what converters write when they do not recognise the
         * tokenizer; GPT-2's pattern is the common ancestor of them all. */
        { "default",          RBEE_PRETOK_GPT2,        false },
        { "gpt2",             RBEE_PRETOK_GPT2,        false },
        { "gpt-2",            RBEE_PRETOK_GPT2,        false },
        { "phi-2",            RBEE_PRETOK_GPT2,        false },
        { "mpt",              RBEE_PRETOK_GPT2,        false },
        { "olmo",             RBEE_PRETOK_GPT2,        false },
        { "llama3",           RBEE_PRETOK_LLAMA3,      true },
        { "llama-v3",         RBEE_PRETOK_LLAMA3,      true },
        { "llama-bpe",        RBEE_PRETOK_LLAMA3,      true },
        { "falcon3",          RBEE_PRETOK_LLAMA3,      true },
        { "pixtral",          RBEE_PRETOK_LLAMA3,      true },
        { "dbrx",             RBEE_PRETOK_LLAMA3,      false },
        { "smaug-bpe",        RBEE_PRETOK_LLAMA3,      false },
        { "qwen2",            RBEE_PRETOK_QWEN2,       false },
        { "stablelm2",        RBEE_PRETOK_QWEN2,       false },
        { "deepseek-r1-qwen", RBEE_PRETOK_QWEN2,       false },
        { "smollm",           RBEE_PRETOK_DIGITS_GPT2, false },
        { "starcoder",        RBEE_PRETOK_DIGITS_GPT2, false },
        { "refact",           RBEE_PRETOK_DIGITS_GPT2, false },
        { "command-r",        RBEE_PRETOK_DIGITS_GPT2, false },
        { "codeshell",        RBEE_PRETOK_DIGITS_GPT2, false },
        { "exaone",           RBEE_PRETOK_DIGITS_GPT2, false },
};

int rbee_pretok_from_name(const char *name, enum rbee_pretok *ret, bool *ret_ignore_merges) {
        for (size_t i = 0; i < ELEMENTSOF(pretok_names); i++)
                if (strcmp(name, pretok_names[i].name) == 0) {
                        *ret = pretok_names[i].kind;
                        *ret_ignore_merges = pretok_names[i].ignore_merges;
                        return 0;
                }
        return -EOPNOTSUPP;
}
