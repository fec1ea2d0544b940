/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared between tokenizer.c (loading), tokenizer-encode.c (special tokens,
 * the bigram queue), tokenizer-spm.c, tokenizer-bpe.c and tokenizer-detok.c.
 * Not part of the public API. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pretokenize.h"
#include "tokenizer.h"

#define RBEE_TOKENIZE_MAX_INPUT (64u << 20)

/* Token flags. */
enum {
        TOKEN_EOG = 1 << 0,     /* ends generation */
        TOKEN_IS_BYTE = 1 << 1, /* a <0xNN> token: .byte holds NN */
};

struct rbee_token {
        uint32_t off;           /* text in vocab->arena, NUL-terminated */
        uint32_t len;
        float score;            /* SPM merge priority */
        uint8_t type;           /* enum rbee_token_type */
        uint8_t flags;
        uint8_t byte;
};

/* Pair (left id, right id) -> merge rank and the merged token. */
struct rbee_merge {
        uint64_t key;           /* MERGE_EMPTY when the slot is free */
        int32_t rank;
        int32_t id;
};
#define MERGE_EMPTY UINT64_MAX

static inline uint64_t merge_key(int32_t a, int32_t b) {
        return ((uint64_t) (uint32_t) a << 32) | (uint32_t) b;
}

static inline size_t merge_slot(uint64_t key, size_t mask) {
        return (size_t) ((key * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & mask;
}

/* The text's place is kept in the slot so that a lookup touches only the
 * slot and the text. */
struct rbee_map_slot {
        int32_t id;             /* -1 when free */
        uint32_t tag;           /* upper bits of the hash, to skip most compares */
        uint32_t off, len;
};

struct rbee_trie_node {
        int32_t child;          /* first child, -1 if none */
        int32_t sibling;        /* next sibling, -1 if none */
        int32_t token;          /* token ending here, -1 if none */
        uint8_t byte;
};

struct rbee_vocab {
        enum rbee_vocab_kind kind;
        enum rbee_pretok pretok;
        bool ignore_merges;     /* a piece that is a whole token skips merging */
        bool add_bos, add_eos, add_space_prefix;

        int32_t n_tokens;
        struct rbee_token *tokens;
        char *arena;
        size_t max_token_len;
        /* SPM: no piece has U+2581 right after another character, so the
         * text can be merged in independent chunks that start at each space. */
        bool spm_chunks;

        int32_t bos, eos, eot, eom, unk, pad;

        /* token text -> id, open addressing, size map_mask + 1 (a power of two) */
        struct rbee_map_slot *map;
        size_t map_mask;

        /* BPE merges, open addressing */
        struct rbee_merge *merges;
        size_t merges_mask;
        size_t n_merges;

        /* SPM: token of byte b (<0xNN>, else the one-byte token, else -1).
         * BPE: token of the code point that byte b stands for, or -1. */
        int32_t byte_token[256];

        /* Special tokens (control, user-defined, unknown) by text, for
         * leftmost-longest matching in the input. */
        int32_t trie_root[256];
        struct rbee_trie_node *trie;
        size_t n_trie;
};

static inline const char *token_text(const rbee_vocab *v, int32_t id) {
        return v->arena + v->tokens[id].off;
}

/* Id of the token whose text is s[0..n), or -1. */
int32_t rbee_vocab_lookup(const rbee_vocab *v, const void *s, size_t n);

/* Whether merging may produce this token: control, unknown, unused and byte
 * tokens never come out of plain text. */
static inline bool token_mergeable(const rbee_vocab *v, int32_t id) {
        uint8_t t = v->tokens[id].type;
        return t == RBEE_TOKEN_NORMAL || t == RBEE_TOKEN_USER_DEFINED || t == RBEE_TOKEN_UNDEFINED;
}

/* Where tokenize() writes: only the first n_max ids are stored, all are counted. */
struct tok_out {
        int32_t *ids;
        size_t n_max;
        size_t n;
};

static inline void tok_out_push(struct tok_out *o, int32_t id) {
        if (o->n < o->n_max)
                o->ids[o->n] = id;
        o->n++;
}

/* A bigram waiting to be merged. prio orders the min-heap: its high half is
 * the merge priority (BPE rank, or SPM score made ascending), its low half
 * the left position, so that ties go to the leftmost pair. */
struct bigram {
        uint64_t prio;
        uint32_t left, right;
        uint32_t size;          /* bytes of left + right when queued */
};

struct bigram_heap {
        struct bigram *items;
        size_t n, cap;
};

int rbee_bigram_heap_push(struct bigram_heap *h, struct bigram b);
struct bigram rbee_bigram_heap_pop(struct bigram_heap *h);  /* h->n > 0 */
void rbee_bigram_heap_done(struct bigram_heap *h);

/* A symbol of the text being merged: a run of bytes in a doubly linked list. */
struct symbol {
        uint32_t start;
        uint32_t n;             /* 0 once merged into its left neighbour */
        int32_t prev, next;
        int32_t id;             /* BPE: current token, -1 if the byte has none */
};

/* Encode one fragment of plain text (no special tokens in it). prefix_space
 * asks SPM to add the space prefix (start of text or after a special token). */
int rbee_spm_encode(const rbee_vocab *v, const char *text, size_t len, bool prefix_space, struct tok_out *o);
int rbee_bpe_encode(const rbee_vocab *v, const char *text, size_t len, struct tok_out *o);
