/* SPDX-License-Identifier: MIT */
#pragma once

/* Tokenizers built from GGUF metadata (tokenizer.ggml.*):
 *   "llama": SentencePiece-style BPE over scores, with byte fallback
 *            (<0xNN> tokens) and the "▁" space marker;
 *   "gpt2":  byte-level BPE over ranked merges, with a pre-tokenizer chosen
 *            by tokenizer.ggml.pre ("default"/"gpt2", "qwen2", "llama-bpe"/"llama3", ...).
 * Merges use a priority queue, so encoding is O(n log n) in the input. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct rbee_vocab rbee_vocab;

enum rbee_vocab_kind {
        RBEE_VOCAB_SPM,
        RBEE_VOCAB_BPE,
};

/* Token attributes from tokenizer.ggml.token_type. */
enum rbee_token_type {
        RBEE_TOKEN_UNDEFINED = 0,
        RBEE_TOKEN_NORMAL = 1,
        RBEE_TOKEN_UNKNOWN = 2,
        RBEE_TOKEN_CONTROL = 3,
        RBEE_TOKEN_USER_DEFINED = 4,
        RBEE_TOKEN_UNUSED = 5,
        RBEE_TOKEN_BYTE = 6,
};

/* Build the vocabulary. Validates everything (token count, ids of special
 * tokens in range, merges well-formed). On error returns a negative errno
 * and a message in err: -EBADMSG for malformed metadata, -EOPNOTSUPP for an
 * unknown tokenizer model or pre-tokenizer (named in the message).
 * The vocabulary copies what it needs: f may be closed afterwards. A loaded
 * vocabulary is never modified, so every function below may be called on it
 * from several threads at once (a struct rbee_detok belongs to one stream). */
int rbee_vocab_load(const gguf_file *f, rbee_vocab **ret, char *err, size_t errlen);
rbee_vocab *rbee_vocab_free(rbee_vocab *v); /* takes NULL, returns NULL */
static inline void rbee_vocab_freep(rbee_vocab **v) {
        if (*v)
                rbee_vocab_free(*v);
}

enum rbee_vocab_kind rbee_vocab_kind(const rbee_vocab *v);
int32_t rbee_vocab_n_tokens(const rbee_vocab *v);
int32_t rbee_vocab_bos(const rbee_vocab *v);   /* -1 when none */
int32_t rbee_vocab_eos(const rbee_vocab *v);   /* -1 when none */
int32_t rbee_vocab_eot(const rbee_vocab *v);   /* -1 when none (e.g. <|eot_id|>, <|im_end|>, <|end|>) */
bool rbee_vocab_add_bos(const rbee_vocab *v);  /* tokenizer.ggml.add_bos_token, or the family default */
bool rbee_vocab_add_eos(const rbee_vocab *v);
/* End of generation: EOS, EOT, or another end-of-turn control token. */
bool rbee_vocab_is_eog(const rbee_vocab *v, int32_t token);
bool rbee_vocab_is_control(const rbee_vocab *v, int32_t token);
/* The token's text as stored in the vocabulary (not decoded). NULL if out of range. */
const char *rbee_vocab_token_text(const rbee_vocab *v, int32_t token);
/* Id of a token whose stored text is exactly s, or -1. */
int32_t rbee_vocab_find(const rbee_vocab *v, const char *s, size_t n);

/* Encode text. add_bos prepends BOS when the vocabulary has one (EOS is
 * never appended: see rbee_vocab_add_eos()).
 * parse_special recognises special/control token texts (e.g. "<|im_start|>")
 * in the input and emits their ids; otherwise they are tokenized as text.
 * User-defined tokens (e.g. Qwen's "<tool_call>") are always recognised, as
 * HuggingFace and llama.cpp do; the longest match wins. SPM vocabularies with
 * add_space_prefix put "▁" at the start of the text and after each special
 * token, as llama.cpp does. Ill-formed UTF-8 is encoded byte for byte.
 * Writes up to n_max ids to out and returns the total number of tokens
 * (which may exceed n_max: call again with a bigger buffer), or a negative
 * errno (-EINVAL for bad arguments, -E2BIG for input over 64 MiB). */
int rbee_tokenize(const rbee_vocab *v, const char *text, size_t len, bool add_bos,
                  bool parse_special, int32_t *out, size_t n_max);

/* Raw bytes of one token: SPM "▁" becomes a space and <0xNN> the byte NN;
 * byte-level BPE maps its unicode code points back to bytes. Control tokens
 * give an empty string unless special is true (then their text);
 * user-defined and unknown tokens always give their text, unused ones
 * nothing (as llama.cpp renders them). The bytes need not be valid UTF-8.
 * Returns the number of bytes (possibly larger than n: nothing is written
 * beyond n), or -EINVAL for an out-of-range token. */
int rbee_token_to_piece(const rbee_vocab *v, int32_t token, bool special, char *buf, size_t n);

/* Streaming detokenizer: feeds tokens one at a time and hands back only
 * complete UTF-8 (an incomplete multi-byte sequence is held until it is
 * completed; invalid bytes are replaced by U+FFFD). For SPM vocabularies the
 * space the tokenizer added in front of the first piece is removed, so that
 * decode(encode(s)) == s. */
struct rbee_detok {
        const rbee_vocab *vocab;
        bool special;          /* render control tokens */
        bool first;            /* nothing emitted yet */
        uint8_t pending[8];
        uint8_t n_pending;
};

void rbee_detok_init(struct rbee_detok *d, const rbee_vocab *v, bool special);
/* Appends the complete UTF-8 text now available to out (up to n bytes) and
 * returns its length, or a negative errno (-EINVAL bad token, -ENOBUFS when n
 * is too small; the state is then unchanged, so the call can be repeated with
 * a bigger buffer). rbee_detok_max_out(v) bytes always suffice for one token:
 * 256 for every vocabulary whose tokens are at most 82 bytes long. */
int rbee_detok_push(struct rbee_detok *d, int32_t token, char *out, size_t n);
size_t rbee_detok_max_out(const rbee_vocab *v);
/* Flush what is pending at the end of the stream (incomplete sequences become U+FFFD). */
int rbee_detok_flush(struct rbee_detok *d, char *out, size_t n);
