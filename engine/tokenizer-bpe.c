/* SPDX-License-Identifier: MIT */

/* Byte-level BPE (GPT-2 and its descendants): the text is split by the
 * pre-tokenizer, each piece starts as one symbol per byte (the token of the
 * printable code point GPT-2 maps that byte to), and the adjacent pair with
 * the lowest merge rank is merged first (ties: leftmost). Merges are looked
 * up by the pair of token ids, so no strings are built while merging. */

#include <errno.h>
#include <string.h>

#include "macros.h"
#include "tokenizer-internal.h"

struct bpe {
        const rbee_vocab *v;
        struct tok_out *o;
        struct symbol *sym;
        size_t cap_sym;
        char *word;             /* a piece in its byte-level spelling */
        size_t cap_word;
        struct bigram_heap heap;
};

static const struct rbee_merge *merge_find(const rbee_vocab *v, int32_t a, int32_t b) {
        uint64_t key = merge_key(a, b);

        if (!v->merges)
                return NULL;
        for (size_t i = merge_slot(key, v->merges_mask);; i = (i + 1) & v->merges_mask) {
                if (v->merges[i].key == key)
                        return &v->merges[i];
                if (v->merges[i].key == MERGE_EMPTY)
                        return NULL;
        }
}

static int try_add(struct bpe *s, int32_t left, int32_t right) {
        const struct symbol *l, *r;
        const struct rbee_merge *m;

        if (left < 0 || right < 0)
                return 0;
        l = &s->sym[left];
        r = &s->sym[right];
        if (l->id < 0 || r->id < 0)
                return 0;
        m = merge_find(s->v, l->id, r->id);
        if (!m)
                return 0;
        return rbee_bigram_heap_push(&s->heap, (struct bigram) {
                .prio = ((uint64_t) (uint32_t) m->rank << 32) | (uint32_t) left,
                .left = (uint32_t) left,
                .right = (uint32_t) right,
                .size = l->n + r->n,
        });
}

/* Llama 3 emits a piece that is a whole token as it is. */
static int32_t whole_word(struct bpe *s, const uint8_t *p, size_t n) {
        size_t need, k = 0;
        int32_t id;

        /* Each byte spells as at most two bytes of UTF-8. */
        if (MUL_OVERFLOW(n, (size_t) 2, &need) || need > 2 * s->v->max_token_len)
                return -1;
        if (need > s->cap_word) {
                char *w = realloc(s->word, need);
                if (!w)
                        return -ENOMEM;
                s->word = w;
                s->cap_word = need;
        }
        for (size_t i = 0; i < n; i++) {
                int32_t t = s->v->byte_token[p[i]];
                if (t < 0)
                        return -1;
                memcpy(s->word + k, token_text(s->v, t), s->v->tokens[t].len);
                k += s->v->tokens[t].len;
        }
        id = rbee_vocab_lookup(s->v, s->word, k);
        return id >= 0 && token_mergeable(s->v, id) ? id : -1;
}

static void emit_byte(struct bpe *s, uint8_t b) {
        int32_t id = s->v->byte_token[b];

        if (id < 0)
                id = s->v->unk;
        /* A vocabulary without this byte and without <unk> cannot express it. */
        if (id >= 0)
                tok_out_push(s->o, id);
}

static int encode_piece(const char *piece, size_t n, void *userdata) {
        struct bpe *s = userdata;
        const uint8_t *p = (const uint8_t *) piece;
        struct symbol *sym;
        int r;

        if (n == 1) {
                emit_byte(s, p[0]);
                return 0;
        }
        if (s->v->ignore_merges) {
                int32_t id = whole_word(s, p, n);
                if (id == -ENOMEM)
                        return id;
                if (id >= 0) {
                        tok_out_push(s->o, id);
                        return 0;
                }
        }

        if (n > s->cap_sym) {
                sym = realloc(s->sym, n * sizeof(struct symbol));
                if (!sym)
                        return -ENOMEM;
                s->sym = sym;
                s->cap_sym = n;
        }
        sym = s->sym;
        for (size_t i = 0; i < n; i++)
                sym[i] = (struct symbol) {
                        .start = (uint32_t) i,
                        .n = 1,
                        .prev = (int32_t) i - 1,
                        .next = i + 1 < n ? (int32_t) i + 1 : -1,
                        .id = s->v->byte_token[p[i]],
                };

        s->heap.n = 0;
        for (size_t i = 1; i < n; i++) {
                r = try_add(s, (int32_t) i - 1, (int32_t) i);
                if (r < 0)
                        return r;
        }
        while (s->heap.n > 0) {
                struct bigram b = rbee_bigram_heap_pop(&s->heap);
                struct symbol *l = &sym[b.left], *rt = &sym[b.right];
                const struct rbee_merge *m;

                /* Stale: one side was merged away or grew since it was queued. */
                if (l->n == 0 || rt->n == 0 || l->n + rt->n != b.size)
                        continue;
                m = merge_find(s->v, l->id, rt->id);

                l->id = m->id;
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

        for (int32_t i = 0; i >= 0; i = sym[i].next) {
                if (sym[i].id >= 0)
                        tok_out_push(s->o, sym[i].id);
                else
                        emit_byte(s, p[sym[i].start]);
        }
        return 0;
}

int rbee_bpe_encode(const rbee_vocab *v, const char *text, size_t len, struct tok_out *o) {
        struct bpe s = { .v = v, .o = o };
        int r;

        r = rbee_pretokenize(v->pretok, text, len, encode_piece, &s);
        free(s.sym);
        free(s.word);
        rbee_bigram_heap_done(&s.heap);
        return r;
}
