/* SPDX-License-Identifier: MIT */
#pragma once

/* Pre-tokenizers of byte-level BPE vocabularies: the splitting regexes of
 * GPT-2, Llama 3 and Qwen2 (and GPT-2 after a digit split, as StarCoder and
 * SmolLM use), matched by hand over code points. The pieces are contiguous
 * and cover the whole input. Ill-formed UTF-8 is kept byte for byte: each
 * maximal ill-formed subpart is one character that is neither a letter, a
 * number nor a space. */

#include <stdbool.h>
#include <stddef.h>

enum rbee_pretok {
        /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
        RBEE_PRETOK_GPT2,
        /* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
         *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
        RBEE_PRETOK_LLAMA3,
        /* The same with \p{N} instead of \p{N}{1,3}: one digit per piece. */
        RBEE_PRETOK_QWEN2,
        /* Every \p{N} alone first, then the GPT-2 pattern on what is between. */
        RBEE_PRETOK_DIGITS_GPT2,
};

/* Map a tokenizer.ggml.pre value to a pre-tokenizer. ret_ignore_merges says
 * whether a piece that is a whole token is emitted without merging (Llama 3).
 * Returns 0, or -EOPNOTSUPP for a name it does not know. */
int rbee_pretok_from_name(const char *name, enum rbee_pretok *ret, bool *ret_ignore_merges);

/* Called once per piece, in order; a negative return stops the split. */
typedef int (*rbee_pretok_fn)(const char *piece, size_t n, void *userdata);

/* Split text[0..len) and hand each piece to fn. Returns 0, or the first
 * negative value fn returned. */
int rbee_pretokenize(enum rbee_pretok kind, const char *text, size_t len,
                     rbee_pretok_fn fn, void *userdata);
