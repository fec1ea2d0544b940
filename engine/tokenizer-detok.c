/* SPDX-License-Identifier: MIT */

/* Tokens back to bytes: one token at a time (rbee_token_to_piece), and as a
 * stream that hands out only complete, valid UTF-8 (rbee_detok_*). */

#include <errno.h>
#include <string.h>

#include "macros.h"
#include "tokenizer-internal.h"
#include "unicode.h"

static void put(char *buf, size_t n, size_t *pos, const void *p, size_t k) {
        if (*pos < n)
                memcpy(buf + *pos, p, MIN(k, n - *pos));
        *pos += k;
}

/* GPT-2's code point -> byte map, the inverse of byte_to_cp() in
 * tokenizer.c; -1 for code points that stand for no byte. */
static int cp_to_byte(uint32_t cp) {
        if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
                return (int) cp;
        if (cp >= 0x100 && cp < 0x100 + 33)
                return (int) (cp - 0x100);
        if (cp >= 0x100 + 33 && cp < 0x100 + 67)
                return (int) (cp - 0x100 - 33 + 0x7F);
        if (cp == 0x100 + 67)
                return 0xAD;
        return -1;
}

static size_t piece_spm(const char *t, size_t len, char *buf, size_t n) {
        size_t pos = 0;

        for (size_t i = 0; i < len;) {
                if (i + 3 <= len && memcmp(t + i, "\xe2\x96\x81", 3) == 0) {
                        put(buf, n, &pos, " ", 1);
                        i += 3;
                } else {
                        put(buf, n, &pos, t + i, 1);
                        i++;
                }
        }
        return pos;
}

static size_t piece_bpe(const char *t, size_t len, char *buf, size_t n) {
        size_t pos = 0;

        for (size_t i = 0; i < len;) {
                uint32_t cp;
                size_t k = rbee_utf8_next((const uint8_t *) t + i, len - i, &cp);
                int b = cp_to_byte(cp);

                /* Characters outside the byte map (which a well-formed
                 * vocabulary does not have) pass through as they are. */
                if (b >= 0) {
                        uint8_t c = (uint8_t) b;
                        put(buf, n, &pos, &c, 1);
                } else
                        put(buf, n, &pos, t + i, k);
                i += k;
        }
        return pos;
}

int rbee_token_to_piece(const rbee_vocab *v, int32_t token, bool special, char *buf, size_t n) {
        const struct rbee_token *t;
        const char *text;
        size_t pos = 0;

        if (!v || (!buf && n > 0) || token < 0 || token >= v->n_tokens)
                return -EINVAL;
        t = &v->tokens[token];
        text = token_text(v, token);

        switch (t->type) {
        case RBEE_TOKEN_CONTROL:
                if (special)
                        put(buf, n, &pos, text, t->len);
                break;
        case RBEE_TOKEN_UNKNOWN:
        case RBEE_TOKEN_USER_DEFINED:
                put(buf, n, &pos, text, t->len);
                break;
        case RBEE_TOKEN_BYTE:
                put(buf, n, &pos, &t->byte, 1);
                break;
        case RBEE_TOKEN_NORMAL:
                pos = v->kind == RBEE_VOCAB_SPM ? piece_spm(text, t->len, buf, n) : piece_bpe(text, t->len, buf, n);
                break;
        default:
                /* Unused and undefined tokens render as nothing, like control tokens. */
                break;
        }
        return (int) pos;
}

/* Pass in[0..n) through as valid UTF-8: ill-formed subparts become U+FFFD,
 * and an incomplete sequence at the end is left over (its start returned in
 * *ret_used). Writes to out only when it is non-NULL; returns the length. */
static size_t sanitize(const uint8_t *in, size_t n, uint8_t *out, size_t *ret_used) {
        static const uint8_t replacement[3] = { 0xEF, 0xBF, 0xBD };
        size_t i = 0, k = 0;

        while (i < n) {
                uint32_t cp;
                int r = rbee_utf8_decode(in + i, n - i, &cp);

                if (r == 0)
                        break;
                if (r > 0) {
                        if (out)
                                memcpy(out + k, in + i, (size_t) r);
                        k += (size_t) r;
                        i += (size_t) r;
                } else {
                        if (out)
                                memcpy(out + k, replacement, 3);
                        k += 3;
                        i += (size_t) -r;
                }
        }
        *ret_used = i;
        return k;
}

void rbee_detok_init(struct rbee_detok *d, const rbee_vocab *v, bool special) {
        *d = (struct rbee_detok) {
                .vocab = v,
                .special = special,
                .first = true,
        };
}

size_t rbee_detok_max_out(const rbee_vocab *v) {
        /* A piece is never longer than its token's text; with up to three
         * bytes held over, every byte may turn into a 3-byte U+FFFD. */
        return 3 * (v->max_token_len + 3);
}

int rbee_detok_push(struct rbee_detok *d, int32_t token, char *out, size_t n) {
        const rbee_vocab *v;
        _cleanup_(freep) uint8_t *heap = NULL;
        uint8_t stack[512], *b = stack;
        size_t cap, total, used, k, skip = 0;
        int len;
        bool first;

        if (!d || !d->vocab || (!out && n > 0) || d->n_pending > 3)
                return -EINVAL;
        v = d->vocab;
        if (token < 0 || token >= v->n_tokens)
                return -EINVAL;

        cap = d->n_pending + v->max_token_len;
        if (cap > sizeof(stack)) {
                heap = malloc(cap);
                if (!heap)
                        return -ENOMEM;
                b = heap;
        }
        memcpy(b, d->pending, d->n_pending);
        len = rbee_token_to_piece(v, token, d->special, (char *) b + d->n_pending, cap - d->n_pending);
        if (len < 0)
                return len;

        /* Drop the space that SPM put in front of the text, once. */
        first = d->first;
        if (first && len > 0) {
                if (v->kind == RBEE_VOCAB_SPM && v->add_space_prefix && b[d->n_pending] == ' ')
                        skip = 1;
                first = false;
        }
        if (skip)
                memmove(b + d->n_pending, b + d->n_pending + 1, (size_t) len - 1);

        total = d->n_pending + (size_t) len - skip;
        k = sanitize(b, total, NULL, &used);
        if (k > n)
                return -ENOBUFS;
        sanitize(b, total, (uint8_t *) out, &used);

        d->first = first;
        d->n_pending = (uint8_t) (total - used);
        memcpy(d->pending, b + used, d->n_pending);
        return (int) k;
}

int rbee_detok_flush(struct rbee_detok *d, char *out, size_t n) {
        if (!d || (!out && n > 0) || d->n_pending > 3)
                return -EINVAL;
        if (d->n_pending == 0)
                return 0;
        /* What is held is a well-formed but unfinished sequence: one U+FFFD. */
        if (n < 3)
                return -ENOBUFS;
        memcpy(out, "\xef\xbf\xbd", 3);
        d->n_pending = 0;
        return 3;
}
