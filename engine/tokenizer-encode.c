/* SPDX-License-Identifier: MIT */

/* rbee_tokenize(): cut special tokens out of the input and hand the text
 * between them to the SPM or BPE encoder; and the bigram queue both use.
 *
 * Special tokens in the input: user-defined tokens are always cut out, as
 * HuggingFace and llama.cpp do; control and unknown tokens only when
 * parse_special is set. Matching is leftmost-longest, over a trie of the
 * special texts: each input byte costs at most the length of the longest
 * special text, usually one step. */

#include <errno.h>

#include "macros.h"
#include "tokenizer-internal.h"

int rbee_bigram_heap_push(struct bigram_heap *h, struct bigram b) {
        size_t i;

        if (h->n == h->cap) {
                size_t cap = h->cap ? h->cap * 2 : 64;
                struct bigram *items = realloc(h->items, cap * sizeof(struct bigram));
                if (!items)
                        return -ENOMEM;
                h->items = items;
                h->cap = cap;
        }
        for (i = h->n++; i > 0; i = (i - 1) / 2) {
                size_t parent = (i - 1) / 2;
                if (h->items[parent].prio <= b.prio)
                        break;
                h->items[i] = h->items[parent];
        }
        h->items[i] = b;
        return 0;
}

struct bigram rbee_bigram_heap_pop(struct bigram_heap *h) {
        struct bigram top = h->items[0], last = h->items[--h->n];
        size_t i = 0;

        for (;;) {
                size_t c = 2 * i + 1;
                if (c >= h->n)
                        break;
                if (c + 1 < h->n && h->items[c + 1].prio < h->items[c].prio)
                        c++;
                if (last.prio <= h->items[c].prio)
                        break;
                h->items[i] = h->items[c];
                i = c;
        }
        if (h->n > 0)
                h->items[i] = last;
        return top;
}

void rbee_bigram_heap_done(struct bigram_heap *h) {
        free(h->items);
        *h = (struct bigram_heap) {};
}

/* Longest special token at s[0..n) that may be cut out; 0 if none. */
static size_t match_special(const rbee_vocab *v, const uint8_t *s, size_t n, bool parse_special, int32_t *ret_id) {
        int32_t node = v->trie_root[s[0]];
        size_t best = 0;

        for (size_t i = 0;;) {
                int32_t tok = v->trie[node].token;

                if (tok >= 0 && (parse_special || v->tokens[tok].type == RBEE_TOKEN_USER_DEFINED)) {
                        best = i + 1;
                        *ret_id = tok;
                }
                if (++i >= n)
                        break;
                for (node = v->trie[node].child; node >= 0; node = v->trie[node].sibling)
                        if (v->trie[node].byte == s[i])
                                break;
                if (node < 0)
                        break;
        }
        return best;
}

/* Every piece of plain text starts the input or follows a special token,
 * and SPM puts its space prefix in both places, as llama.cpp does. */
static int encode_text(const rbee_vocab *v, const char *text, size_t len, struct tok_out *o) {
        if (len == 0)
                return 0;
        if (v->kind == RBEE_VOCAB_SPM)
                return rbee_spm_encode(v, text, len, v->add_space_prefix, o);
        return rbee_bpe_encode(v, text, len, o);
}

int rbee_tokenize(const rbee_vocab *v, const char *text, size_t len, bool add_bos,
                  bool parse_special, int32_t *out, size_t n_max) {
        struct tok_out o = { .ids = out, .n_max = n_max };
        const uint8_t *s = (const uint8_t *) text;
        size_t start = 0;
        int r;

        if (!v || (!text && len > 0) || (!out && n_max > 0))
                return -EINVAL;
        if (len > RBEE_TOKENIZE_MAX_INPUT)
                return -E2BIG;

        if (add_bos && v->bos >= 0)
                tok_out_push(&o, v->bos);

        for (size_t pos = 0; pos < len;) {
                int32_t id = -1;
                size_t m = 0;

                if (v->trie_root[s[pos]] >= 0)
                        m = match_special(v, s + pos, len - pos, parse_special, &id);
                if (m == 0) {
                        pos++;
                        continue;
                }
                r = encode_text(v, text + start, pos - start, &o);
                if (r < 0)
                        return r;
                tok_out_push(&o, id);
                pos += m;
                start = pos;
        }
        if (start < len) {
                r = encode_text(v, text + start, len - start, &o);
                if (r < 0)
                        return r;
        }
        return (int) o.n;
}
