/* SPDX-License-Identifier: MIT */

/* SentencePiece-style BPE as llama.cpp and sentencepiece do it: spaces
 * become U+2581, the text starts as one symbol per character, and the
 * adjacent pair whose concatenation is the token with the highest score is
 * merged first (ties: leftmost), until no pair is a token. Characters that
 * are no token fall back to <0xNN> byte tokens. */

#include <errno.h>
#include <string.h>

#include "macros.h"
#include "tokenizer-internal.h"
#include "unicode.h"

static const char space_marker[] = "\xe2\x96\x81"; /* U+2581 */
#define SPACE_MARKER_LEN 3

/* Map a float to a uint32 with the same order, then flip it so that the
 * highest score comes first out of the min-heap. */
static uint32_t score_key(float score) {
        uint32_t u;

        memcpy(&u, &score, sizeof(u));
        u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
        return ~u;
}

struct spm {
        const rbee_vocab *v;
        const char *text;       /* the chunk being merged */
        struct symbol *sym;
        size_t cap_sym;
        struct bigram_heap heap;
};

static int try_add(struct spm *s, int32_t left, int32_t right) {
        const struct symbol *l, *r;
        size_t n;
        int32_t id;

        if (left < 0 || right < 0)
                return 0;
        l = &s->sym[left];
        r = &s->sym[right];
        n = (size_t) l->n + r->n;
        if (n > s->v->max_token_len)
                return 0;
        /* Symbols are contiguous in the text, so the pair is one span. */
        id = rbee_vocab_lookup(s->v, s->text + l->start, n);
        if (id < 0 || !token_mergeable(s->v, id))
                return 0;
        return rbee_bigram_heap_push(&s->heap, (struct bigram) {
                .prio = ((uint64_t) score_key(s->v->tokens[id].score) << 32) | (uint32_t) left,
                .left = (uint32_t) left,
                .right = (uint32_t) right,
                .size = (uint32_t) n,
        });
}

static void emit_bytes(const rbee_vocab *v, const char *p, size_t n, struct tok_out *o) {
        for (size_t i = 0; i < n; i++) {
                int32_t id = v->byte_token[(uint8_t) p[i]];

                if (id < 0)
                        id = v->unk;
                /* Without byte tokens or <unk> the byte cannot be expressed at all. */
                if (id >= 0)
                        tok_out_push(o, id);
        }
}

static void emit_symbol(const rbee_vocab *v, const char *p, size_t n, struct tok_out *o) {
        int32_t id = n <= v->max_token_len ? rbee_vocab_lookup(v, p, n) : -1;

        if (id >= 0 && token_mergeable(v, id)) {
                tok_out_push(o, id);
                return;
        }
        /* Only single characters can miss: every merge made a token. A
         * whole character with no byte tokens is <unk> once, as
         * sentencepiece does, rather than once per byte. */
        for (size_t i = 0; i < n; i++)
                if (v->byte_token[(uint8_t) p[i]] < 0) {
                        if (v->unk >= 0)
                                tok_out_push(o, v->unk);
                        return;
                }
        emit_bytes(v, p, n, o);
}

/* Merge text[0..n) (n > 0) and emit its tokens. */
static int merge_chunk(struct spm *s, const char *text, size_t n, struct tok_out *o) {
        struct symbol *sym;
        size_t n_sym = 0;
        int r;

        if (n > s->cap_sym) {
                sym = realloc(s->sym, n * sizeof(struct symbol));
                if (!sym)
                        return -ENOMEM;
                s->sym = sym;
                s->cap_sym = n;
        }
        sym = s->sym;
        for (size_t i = 0; i < n;) {
                uint32_t cp;
                size_t k = rbee_utf8_next((const uint8_t *) text + i, n - i, &cp);

                sym[n_sym] = (struct symbol) {
                        .start = (uint32_t) i,
                        .n = (uint32_t) k,
                        .prev = (int32_t) n_sym - 1,
                        .next = i + k < n ? (int32_t) n_sym + 1 : -1,
                        .id = -1,
                };
                n_sym++;
                i += k;
        }

        s->text = text;
        s->heap.n = 0;
        for (size_t i = 1; i < n_sym; i++) {
                r = try_add(s, (int32_t) i - 1, (int32_t) i);
                if (r < 0)
                        return r;
        }

        while (s->heap.n > 0) {
                struct bigram b = rbee_bigram_heap_pop(&s->heap);
                struct symbol *l = &sym[b.left], *rt = &sym[b.right];

                /* Stale: one side was merged away or grew since it was queued. */
                if (l->n == 0 || rt->n == 0 || l->n + rt->n != b.size)
                        continue;

                l->n += rt->n;
                rt->n = 0;
                l->next = rt->next;
                if (rt->next >= 0)
                        sym[rt->next].prev = (int32_t) b.left;

                r = try_add(s, l->prev, (int32_t) b.left);
                if (r < 0)
                        return r;
                r = try_add(s, (int32_t) b.left, l->next);
                if (r < 0)
                        return r;
        }

        for (int32_t i = 0; i >= 0; i = sym[i].next)
                emit_symbol(s->v, text + sym[i].start, sym[i].n, o);
        return 0;
}

/* Where the chunk that starts at buf[start] ends: before the next "▁" that
 * follows another character. */
static size_t chunk_end(const char *buf, size_t n, size_t start) {
        for (size_t i = start + 1; i + SPACE_MARKER_LEN <= n; i++)
                if (memcmp(buf + i, space_marker, SPACE_MARKER_LEN) == 0) {
                        if (i < SPACE_MARKER_LEN ||
                            memcmp(buf + i - SPACE_MARKER_LEN, space_marker, SPACE_MARKER_LEN) != 0)
                                return i;
                        i += SPACE_MARKER_LEN - 1;
                }
        return n;
}

int rbee_spm_encode(const rbee_vocab *v, const char *text, size_t len, bool prefix_space, struct tok_out *o) {
        _cleanup_(freep) char *buf = NULL;
        struct spm s = { .v = v };
        size_t n = 0, cap;
        int r = 0;

        /* Every byte may become three (a space), plus the prefix. */
        if (MUL_OVERFLOW(len, (size_t) SPACE_MARKER_LEN, &cap) || ADD_OVERFLOW(cap, (size_t) SPACE_MARKER_LEN, &cap))
                return -E2BIG;
        buf = malloc(cap ? cap : 1);
        if (!buf)
                return -ENOMEM;
        if (prefix_space) {
                memcpy(buf, space_marker, SPACE_MARKER_LEN);
                n = SPACE_MARKER_LEN;
        }
        for (size_t i = 0; i < len; i++) {
                if (text[i] == ' ') {
                        memcpy(buf + n, space_marker, SPACE_MARKER_LEN);
                        n += SPACE_MARKER_LEN;
                } else
                        buf[n++] = text[i];
        }
        if (n > UINT32_MAX / 2)
                return -E2BIG;

        for (size_t start = 0; start < n && r >= 0;) {
                size_t end = v->spm_chunks ? chunk_end(buf, n, start) : n;

                r = merge_chunk(&s, buf + start, end - start, o);
                start = end;
        }
        free(s.sym);
        rbee_bigram_heap_done(&s.heap);
        return r;
}
