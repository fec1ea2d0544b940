/* SPDX-License-Identifier: MIT */

/* Loading a vocabulary from tokenizer.ggml.* metadata, the lookups built at
 * load time (text -> id hash, merge ranks, special-token trie), and the
 * accessors.
 *
 * Validation policy: everything is checked and a malformed vocabulary is
 * refused (-EBADMSG) rather than repaired: array lengths must agree, token
 * types must be known, byte tokens must read <0xNN>, special ids must be in
 * range (-1, or 0xFFFFFFFF as some converters write it, means "none"), and
 * every merge must name two tokens whose concatenation is a token too (as
 * HuggingFace's BPE requires). Two exceptions: a merge listed twice keeps
 * its first (best) rank, and a token text listed twice maps to its lowest
 * id; both occur in real files and are harmless.
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "macros.h"
#include "tokenizer-internal.h"
#include "unicode.h"

#define MAX_TOKENS (1 << 24)
#define MAX_TOKEN_LEN (1 << 16)
#define MAX_NAME 64

static int fail(char *err, size_t errlen, int r, const char *fmt, ...) _printf_(4, 5);
static int fail(char *err, size_t errlen, int r, const char *fmt, ...) {
        va_list ap;

        if (err && errlen > 0) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return r;
}

/* ---- token text -> id ---- */

#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME UINT64_C(0x100000001b3)

static uint64_t hash_update(uint64_t h, const void *p, size_t n) {
        const uint8_t *s = p;

        for (size_t i = 0; i < n; i++)
                h = (h ^ s[i]) * FNV_PRIME;
        return h;
}

/* Final mix so that the slot (low bits) depends on every input bit. */
static uint64_t hash_final(uint64_t h) {
        h ^= h >> 33;
        h *= UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 33;
        return h;
}

static int32_t lookup_hashed(const rbee_vocab *v, uint64_t h, const void *a, size_t na, const void *b, size_t nb) {
        uint32_t tag = (uint32_t) (h >> 32);

        for (size_t i = (size_t) h & v->map_mask;; i = (i + 1) & v->map_mask) {
                const struct rbee_map_slot *slot = &v->map[i];

                if (slot->id < 0)
                        return -1;
                if (slot->tag == tag && slot->len == na + nb && memcmp(v->arena + slot->off, a, na) == 0 &&
                    memcmp(v->arena + slot->off + na, b, nb) == 0)
                        return slot->id;
        }
}

int32_t rbee_vocab_lookup(const rbee_vocab *v, const void *s, size_t n) {
        return lookup_hashed(v, hash_final(hash_update(FNV_OFFSET, s, n)), s, n, "", 0);
}

static int map_build(rbee_vocab *v) {
        _cleanup_(freep) uint64_t *hashes = NULL;
        size_t cap = 1;

        /* At most two thirds full. */
        while (cap < (size_t) v->n_tokens + (size_t) v->n_tokens / 2)
                cap <<= 1;
        v->map = malloc_multiply(cap, sizeof(struct rbee_map_slot));
        hashes = malloc_multiply((size_t) v->n_tokens, sizeof(uint64_t));
        if (!v->map || !hashes)
                return -ENOMEM;
        for (size_t i = 0; i < cap; i++)
                v->map[i] = (struct rbee_map_slot) { .id = -1 };
        v->map_mask = cap - 1;

        for (int32_t id = 0; id < v->n_tokens; id++)
                hashes[id] = hash_final(hash_update(FNV_OFFSET, v->arena + v->tokens[id].off, v->tokens[id].len));

        for (int32_t id = 0; id < v->n_tokens; id++) {
                const struct rbee_token *t = &v->tokens[id];
                const char *text = v->arena + t->off;
                uint64_t h = hashes[id];
                uint32_t tag = (uint32_t) (h >> 32);
                size_t i;

                /* The slots are random: fetch a few inserts ahead. */
                if (id + 16 < v->n_tokens)
                        __builtin_prefetch(&v->map[(size_t) hashes[id + 16] & v->map_mask], 1);
                for (i = (size_t) h & v->map_mask; v->map[i].id >= 0; i = (i + 1) & v->map_mask) {
                        const struct rbee_map_slot *u = &v->map[i];
                        if (u->tag == tag && u->len == t->len && memcmp(v->arena + u->off, text, t->len) == 0)
                                break;
                }
                if (v->map[i].id < 0)   /* a duplicate keeps the lower id */
                        v->map[i] = (struct rbee_map_slot) { .id = id, .tag = tag, .off = t->off, .len = t->len };
        }
        return 0;
}

/* ---- loading ---- */

static bool str_eq(struct gguf_str s, const char *lit) {
        return s.n == strlen(lit) && memcmp(s.s, lit, s.n) == 0;
}

/* Read an array's length and check it matches the token count. Returns 1
 * when present, 0 when absent. */
static int arr_len(const gguf_file *f, const char *key, bool string, uint64_t want, uint64_t *ret_n,
                   char *err, size_t errlen) {
        enum gguf_vtype t;
        uint64_t n;
        int r;

        r = gguf_get_arr_info(f, key, &t, &n);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return fail(err, errlen, -EBADMSG, "%s is not an array", key);
        if (string != (t == GGUF_VTYPE_STRING))
                return fail(err, errlen, -EBADMSG, "%s is an array of the wrong type", key);
        if (want != UINT64_MAX && n != want)
                return fail(err, errlen, -EBADMSG, "%s has %" PRIu64 " entries, tokenizer.ggml.tokens has %" PRIu64,
                            key, n, want);
        if (ret_n)
                *ret_n = n;
        return 1;
}

static int parse_hex_nibble(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* "<0xNN>" -> NN, or -1. */
static int parse_byte_token(const char *s, size_t n) {
        int hi, lo;

        if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
                return -1;
        hi = parse_hex_nibble(s[3]);
        lo = parse_hex_nibble(s[4]);
        if (hi < 0 || lo < 0)
                return -1;
        return hi * 16 + lo;
}

static int load_tokens(rbee_vocab *v, const gguf_file *f, char *err, size_t errlen) {
        _cleanup_(freep) int32_t *types = NULL;
        size_t pos = 0, cap = 0;
        uint64_t n;
        int r;

        r = arr_len(f, "tokenizer.ggml.tokens", true, UINT64_MAX, &n, err, errlen);
        if (r < 0)
                return r;
        if (r == 0)
                return fail(err, errlen, -EBADMSG, "tokenizer.ggml.tokens is missing");
        if (n == 0 || n > MAX_TOKENS)
                return fail(err, errlen, -EBADMSG, "tokenizer.ggml.tokens has %" PRIu64 " entries (1..%d allowed)",
                            n, MAX_TOKENS);
        v->n_tokens = (int32_t) n;

        v->tokens = calloc(n, sizeof(struct rbee_token));
        if (!v->tokens)
                return -ENOMEM;

        for (uint64_t i = 0; i < n; i++) {
                struct gguf_str s;
                size_t need;

                r = gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &s);
                if (r < 0)
                        return fail(err, errlen, -EBADMSG, "tokenizer.ggml.tokens[%" PRIu64 "] cannot be read", i);
                /* Real tokens are short; the bound keeps every piece length
                 * well inside an int. Offsets are 32-bit. */
                if (s.n > MAX_TOKEN_LEN)
                        return fail(err, errlen, -EBADMSG, "tokenizer.ggml.tokens[%" PRIu64 "] is %" PRIu64 " bytes long (at most %d)",
                                    i, s.n, MAX_TOKEN_LEN);
                if ((uint64_t) pos + s.n + 1 > UINT32_MAX)
                        return fail(err, errlen, -EBADMSG, "tokenizer.ggml.tokens holds more than 4 GiB of text");
                need = pos + (size_t) s.n + 1;
                if (need > cap) {
                        char *a;
                        cap = MAX(need, MAX(cap * 2, (size_t) 4096));
                        a = realloc(v->arena, cap);
                        if (!a)
                                return -ENOMEM;
                        v->arena = a;
                }
                memcpy(v->arena + pos, s.s, s.n);
                v->arena[pos + s.n] = 0;
                v->tokens[i] = (struct rbee_token) {
                        .off = (uint32_t) pos,
                        .len = (uint32_t) s.n,
                        .type = RBEE_TOKEN_NORMAL,
                };
                v->max_token_len = MAX(v->max_token_len, (size_t) s.n);
                pos = need;
        }

        r = arr_len(f, "tokenizer.ggml.token_type", false, n, NULL, err, errlen);
        if (r < 0)
                return r;
        if (r > 0) {
                types = malloc_multiply(n, sizeof(int32_t));
                if (!types)
                        return -ENOMEM;
                r = gguf_get_arr_i32(f, "tokenizer.ggml.token_type", types, n);
                if (r < 0)
                        return fail(err, errlen, -EBADMSG, "tokenizer.ggml.token_type cannot be read as integers");
                for (uint64_t i = 0; i < n; i++) {
                        if (types[i] < RBEE_TOKEN_UNDEFINED || types[i] > RBEE_TOKEN_BYTE)
                                return fail(err, errlen, -EBADMSG, "token %" PRIu64 " has unknown type %" PRIi32,
                                            i, types[i]);
                        v->tokens[i].type = (uint8_t) types[i];
                }
        }

        for (uint64_t i = 0; i < n; i++) {
                struct rbee_token *t = &v->tokens[i];
                int b;

                if (t->type != RBEE_TOKEN_BYTE)
                        continue;
                b = parse_byte_token(v->arena + t->off, t->len);
                if (b < 0)
                        return fail(err, errlen, -EBADMSG, "byte token %" PRIu64 " is '%.*s', not <0xNN>",
                                    i, (int) MIN(t->len, (uint32_t) MAX_NAME), v->arena + t->off);
                t->flags |= TOKEN_IS_BYTE;
                t->byte = (uint8_t) b;
        }
        return 0;
}

static int load_scores(rbee_vocab *v, const gguf_file *f, bool required, char *err, size_t errlen) {
        _cleanup_(freep) float *scores = NULL;
        int r;

        r = arr_len(f, "tokenizer.ggml.scores", false, (uint64_t) v->n_tokens, NULL, err, errlen);
        if (r < 0)
                return r;
        if (r == 0)
                return required ? fail(err, errlen, -EBADMSG, "tokenizer.ggml.scores is missing") : 0;
        scores = malloc_multiply((size_t) v->n_tokens, sizeof(float));
        if (!scores)
                return -ENOMEM;
        r = gguf_get_arr_f32(f, "tokenizer.ggml.scores", scores, (uint64_t) v->n_tokens);
        if (r < 0)
                return fail(err, errlen, -EBADMSG, "tokenizer.ggml.scores cannot be read as numbers");
        for (int32_t i = 0; i < v->n_tokens; i++) {
                if (isnan(scores[i]))
                        return fail(err, errlen, -EBADMSG, "tokenizer.ggml.scores[%" PRIi32 "] is NaN", i);
                v->tokens[i].score = scores[i];
        }
        return 0;
}

/* A special token id: absent keeps *id, -1 or 0xFFFFFFFF means none. An id
 * out of range is an error, unless lenient (then it is none). */
static int load_id(const rbee_vocab *v, const gguf_file *f, const char *key, int32_t *id, bool lenient,
                   char *err, size_t errlen) {
        int32_t x;
        uint32_t u;
        uint64_t big;
        int r;

        r = gguf_get_i32(f, key, &x);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                if (gguf_get_u32(f, key, &u) == 0 && u == UINT32_MAX) {
                        *id = -1;
                        return 0;
                }
                if (gguf_get_u64(f, key, &big) == 0) {
                        if (lenient) {
                                *id = -1;
                                return 0;
                        }
                        return fail(err, errlen, -EBADMSG, "%s = %" PRIu64 " is out of range (vocabulary of %" PRIi32 " tokens)",
                                    key, big, v->n_tokens);
                }
                return fail(err, errlen, -EBADMSG, "%s is not an integer", key);
        }
        if (x == -1) {
                *id = -1;
                return 0;
        }
        if (x < 0 || x >= v->n_tokens) {
                if (lenient) {
                        *id = -1;
                        return 0;
                }
                return fail(err, errlen, -EBADMSG, "%s = %" PRIi32 " is out of range (vocabulary of %" PRIi32 " tokens)",
                            key, x, v->n_tokens);
        }
        *id = x;
        return 0;
}

static int load_bool(const gguf_file *f, const char *key, bool *b, char *err, size_t errlen) {
        int r = gguf_get_bool(f, key, b);

        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return fail(err, errlen, -EBADMSG, "%s is not a bool", key);
        return 0;
}

static int load_merges(rbee_vocab *v, const gguf_file *f, char *err, size_t errlen) {
        _cleanup_(freep) struct rbee_merge *list = NULL;
        uint64_t n;
        size_t cap = 1;
        int r;

        r = arr_len(f, "tokenizer.ggml.merges", true, UINT64_MAX, &n, err, errlen);
        if (r < 0)
                return r;
        if (r == 0)
                return fail(err, errlen, -EBADMSG, "tokenizer.ggml.merges is missing");
        if (n > INT32_MAX / 4)
                return fail(err, errlen, -EBADMSG, "tokenizer.ggml.merges has %" PRIu64 " entries", n);

        list = malloc_multiply((size_t) n, sizeof(struct rbee_merge));
        if (!list)
                return -ENOMEM;
        for (uint64_t rank = 0; rank < n; rank++) {
                struct gguf_str s;
                const char *sp;
                size_t na, nb;
                int32_t a, b, ab;
                uint64_t ha;

                r = gguf_get_arr_str(f, "tokenizer.ggml.merges", rank, &s);
                if (r < 0)
                        return fail(err, errlen, -EBADMSG, "tokenizer.ggml.merges[%" PRIu64 "] cannot be read", rank);
                /* The separator is the first space after the first byte, so
                 * that a left part that is itself a space still parses. */
                sp = s.n > 1 ? memchr(s.s + 1, ' ', s.n - 1) : NULL;
                if (!sp || sp + 1 == s.s + s.n)
                        return fail(err, errlen, -EBADMSG, "tokenizer.ggml.merges[%" PRIu64 "] '%.*s' is not \"left right\"",
                                    rank, (int) MIN(s.n, (uint64_t) MAX_NAME), s.s);
                na = (size_t) (sp - s.s);
                nb = s.n - na - 1;
                ha = hash_update(FNV_OFFSET, s.s, na);
                a = lookup_hashed(v, hash_final(ha), s.s, na, "", 0);
                b = rbee_vocab_lookup(v, sp + 1, nb);
                ab = lookup_hashed(v, hash_final(hash_update(ha, sp + 1, nb)), s.s, na, sp + 1, nb);
                if (a < 0 || b < 0 || ab < 0)
                        return fail(err, errlen, -EBADMSG,
                                    "tokenizer.ggml.merges[%" PRIu64 "] '%.*s': %s is not a token",
                                    rank, (int) MIN(s.n, (uint64_t) MAX_NAME), s.s,
                                    a < 0 ? "the left part" : b < 0 ? "the right part" : "the result");
                list[rank] = (struct rbee_merge) { .key = merge_key(a, b), .rank = (int32_t) rank, .id = ab };
        }

        /* At most two thirds full. */
        while (cap < (size_t) n + (size_t) n / 2)
                cap <<= 1;
        v->merges = malloc_multiply(cap, sizeof(struct rbee_merge));
        if (!v->merges)
                return -ENOMEM;
        for (size_t i = 0; i < cap; i++)
                v->merges[i].key = MERGE_EMPTY;
        v->merges_mask = cap - 1;

        /* The slots are random: fetch a few inserts ahead. */
        for (size_t k = 0; k < (size_t) n; k++) {
                uint64_t key = list[k].key;
                size_t i;

                if (k + 16 < (size_t) n)
                        __builtin_prefetch(&v->merges[merge_slot(list[k + 16].key, v->merges_mask)], 1);
                for (i = merge_slot(key, v->merges_mask); v->merges[i].key != MERGE_EMPTY; i = (i + 1) & v->merges_mask)
                        if (v->merges[i].key == key)
                                break;
                /* A pair listed twice keeps its first (best) rank. */
                if (v->merges[i].key == MERGE_EMPTY) {
                        v->merges[i] = list[k];
                        v->n_merges++;
                }
        }
        return 0;
}

/* GPT-2's byte -> code point map: printable Latin-1 bytes stand for
 * themselves; the other 68 (0x00-0x20, 0x7F-0xA0, 0xAD) take the code
 * points from U+0100 on, in order. */
static uint32_t byte_to_cp(uint8_t b) {
        if (b <= 0x20)
                return 0x100 + b;
        if (b >= 0x7F && b <= 0xA0)
                return 0x100 + 33 + (b - 0x7F);
        if (b == 0xAD)
                return 0x100 + 67;
        return b;
}

static void load_byte_tokens(rbee_vocab *v) {
        for (unsigned b = 0; b < 256; b++) {
                uint8_t buf[8];
                int32_t id = -1;

                if (v->kind == RBEE_VOCAB_BPE) {
                        size_t k = rbee_utf8_encode(byte_to_cp((uint8_t) b), buf);
                        id = rbee_vocab_lookup(v, buf, k);
                } else {
                        snprintf((char *) buf, sizeof(buf), "<0x%02X>", b);
                        id = rbee_vocab_lookup(v, buf, 6);
                        if (id >= 0 && !(v->tokens[id].flags & TOKEN_IS_BYTE))
                                id = -1;
                        /* Vocabularies without byte tokens may still hold
                         * single ASCII characters such as "\n". */
                        if (id < 0 && b < 0x80) {
                                buf[0] = (uint8_t) b;
                                id = rbee_vocab_lookup(v, buf, 1);
                                if (id >= 0 && !token_mergeable(v, id))
                                        id = -1;
                        }
                }
                v->byte_token[b] = id;
        }
}

/* Whether SPM text may be merged in chunks that each start at a "▁" after
 * another character: true when no piece holds such a "▁" (sentencepiece
 * splits on whitespace, so only runs of "▁" and a leading one occur). */
static bool spm_chunks_ok(const rbee_vocab *v) {
        static const char marker[] = "\xe2\x96\x81";

        for (int32_t id = 0; id < v->n_tokens; id++) {
                const struct rbee_token *t = &v->tokens[id];
                const char *s = v->arena + t->off;

                if (!token_mergeable(v, id))
                        continue;
                for (uint32_t i = 1; i + 3 <= t->len; i++)
                        if (memcmp(s + i, marker, 3) == 0 && (i < 3 || memcmp(s + i - 3, marker, 3) != 0))
                                return false;
        }
        return true;
}

static bool is_special_type(uint8_t type) {
        return type == RBEE_TOKEN_CONTROL || type == RBEE_TOKEN_USER_DEFINED;
}

/* Texts of end-of-turn tokens, in the order they are tried for EOT. */
static const char *const eot_texts[] = {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<EOT>",
        "_<EOT>",
        "<｜end▁of▁sentence｜>",              /* DeepSeek */
};

/* Other texts that end generation when they are control tokens. */
static const char *const eog_texts[] = {
        "</s>",
        "<|end_of_text|>",
        "<|eom_id|>",
        "<|return|>",
        "<|call|>",
        "<end_of_utterance>",
};

static int32_t find_special(const rbee_vocab *v, const char *text) {
        int32_t id = rbee_vocab_lookup(v, text, strlen(text));

        return id >= 0 && is_special_type(v->tokens[id].type) ? id : -1;
}

static void load_eog(rbee_vocab *v) {
        if (v->eot < 0)
                for (size_t i = 0; i < ELEMENTSOF(eot_texts) && v->eot < 0; i++)
                        v->eot = find_special(v, eot_texts[i]);
        if (v->eom < 0)
                v->eom = find_special(v, "<|eom_id|>");

        for (size_t i = 0; i < ELEMENTSOF(eot_texts); i++) {
                int32_t id = find_special(v, eot_texts[i]);
                if (id >= 0)
                        v->tokens[id].flags |= TOKEN_EOG;
        }
        for (size_t i = 0; i < ELEMENTSOF(eog_texts); i++) {
                int32_t id = find_special(v, eog_texts[i]);
                if (id >= 0)
                        v->tokens[id].flags |= TOKEN_EOG;
        }
        if (v->eos >= 0)
                v->tokens[v->eos].flags |= TOKEN_EOG;
        if (v->eot >= 0)
                v->tokens[v->eot].flags |= TOKEN_EOG;
        if (v->eom >= 0)
                v->tokens[v->eom].flags |= TOKEN_EOG;
}

static int trie_new_node(rbee_vocab *v, uint8_t byte, size_t *cap, int32_t *ret) {
        if (v->n_trie == *cap) {
                size_t c = *cap ? *cap * 2 : 64;
                struct rbee_trie_node *t = realloc(v->trie, c * sizeof(struct rbee_trie_node));
                if (!t)
                        return -ENOMEM;
                v->trie = t;
                *cap = c;
        }
        v->trie[v->n_trie] = (struct rbee_trie_node) { .child = -1, .sibling = -1, .token = -1, .byte = byte };
        *ret = (int32_t) v->n_trie++;
        return 0;
}

static int load_trie(rbee_vocab *v) {
        size_t cap = 0;
        int r;

        for (size_t b = 0; b < 256; b++)
                v->trie_root[b] = -1;

        for (int32_t id = 0; id < v->n_tokens; id++) {
                const struct rbee_token *t = &v->tokens[id];
                const uint8_t *s = (const uint8_t *) v->arena + t->off;
                int32_t node;

                if (t->len == 0 || !(is_special_type(t->type) || t->type == RBEE_TOKEN_UNKNOWN))
                        continue;

                node = v->trie_root[s[0]];
                if (node < 0) {
                        r = trie_new_node(v, s[0], &cap, &node);
                        if (r < 0)
                                return r;
                        v->trie_root[s[0]] = node;
                }
                for (uint32_t i = 1; i < t->len; i++) {
                        int32_t c, prev = -1;

                        for (c = v->trie[node].child; c >= 0; prev = c, c = v->trie[c].sibling)
                                if (v->trie[c].byte == s[i])
                                        break;
                        if (c < 0) {
                                r = trie_new_node(v, s[i], &cap, &c);
                                if (r < 0)
                                        return r;
                                if (prev < 0)
                                        v->trie[node].child = c;
                                else
                                        v->trie[prev].sibling = c;
                        }
                        node = c;
                }
                if (v->trie[node].token < 0)    /* duplicates keep the lower id */
                        v->trie[node].token = id;
        }
        return 0;
}

static int vocab_load(const gguf_file *f, rbee_vocab **ret, char *err, size_t errlen) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = NULL;
        struct gguf_str model, pre;
        char name[MAX_NAME + 1];
        int r;

        r = gguf_get_str(f, "tokenizer.ggml.model", &model);
        if (r == -ENOENT)
                return fail(err, errlen, -EBADMSG, "tokenizer.ggml.model is missing");
        if (r < 0)
                return fail(err, errlen, -EBADMSG, "tokenizer.ggml.model is not a string");

        v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        v->bos = v->eos = v->eot = v->eom = v->unk = v->pad = -1;

        if (str_eq(model, "llama"))
                v->kind = RBEE_VOCAB_SPM;
        else if (str_eq(model, "gpt2"))
                v->kind = RBEE_VOCAB_BPE;
        else
                return fail(err, errlen, -EOPNOTSUPP, "unsupported tokenizer model '%.*s' (supported: llama, gpt2)",
                            (int) MIN(model.n, (uint64_t) MAX_NAME), model.s);

        r = load_tokens(v, f, err, errlen);
        if (r < 0)
                return r;
        r = load_scores(v, f, v->kind == RBEE_VOCAB_SPM, err, errlen);
        if (r < 0)
                return r;
        r = map_build(v);
        if (r < 0)
                return r;

        if (v->kind == RBEE_VOCAB_SPM) {
                /* sentencepiece's fixed ids, when the file does not say. */
                if (v->n_tokens > 2) {
                        v->unk = 0;
                        v->bos = 1;
                        v->eos = 2;
                }
                v->add_bos = true;
                v->add_space_prefix = true;
                v->spm_chunks = spm_chunks_ok(v);
        } else {
                r = gguf_get_str(f, "tokenizer.ggml.pre", &pre);
                if (r == -ENOENT)
                        pre = (struct gguf_str) { .s = "default", .n = 7 };
                else if (r < 0)
                        return fail(err, errlen, -EBADMSG, "tokenizer.ggml.pre is not a string");
                if (pre.n > MAX_NAME || memchr(pre.s, 0, pre.n))
                        r = -EOPNOTSUPP;
                else {
                        memcpy(name, pre.s, pre.n);
                        name[pre.n] = 0;
                        r = rbee_pretok_from_name(name, &v->pretok, &v->ignore_merges);
                }
                if (r < 0)
                        return fail(err, errlen, -EOPNOTSUPP, "unsupported pre-tokenizer '%.*s' (tokenizer.ggml.pre)",
                                    (int) MIN(pre.n, (uint64_t) MAX_NAME), pre.s);
                /* Llama 3 starts every prompt with <|begin_of_text|>. */
                v->add_bos = v->pretok == RBEE_PRETOK_LLAMA3 && v->ignore_merges;

                r = load_merges(v, f, err, errlen);
                if (r < 0)
                        return r;
        }

        /* The padding id is only informative, and some converters write
         * one past the vocabulary: ignore it rather than refuse the model. */
        const struct {
                const char *key;
                int32_t *id;
                bool lenient;
        } ids[] = {
                { "tokenizer.ggml.bos_token_id",     &v->bos, false },
                { "tokenizer.ggml.eos_token_id",     &v->eos, false },
                { "tokenizer.ggml.eot_token_id",     &v->eot, false },
                { "tokenizer.ggml.eom_token_id",     &v->eom, false },
                { "tokenizer.ggml.unknown_token_id", &v->unk, false },
                { "tokenizer.ggml.padding_token_id", &v->pad, true },
        };
        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                r = load_id(v, f, ids[i].key, ids[i].id, ids[i].lenient, err, errlen);
                if (r < 0)
                        return r;
        }

        r = load_bool(f, "tokenizer.ggml.add_bos_token", &v->add_bos, err, errlen);
        if (r < 0)
                return r;
        r = load_bool(f, "tokenizer.ggml.add_eos_token", &v->add_eos, err, errlen);
        if (r < 0)
                return r;
        if (v->kind == RBEE_VOCAB_SPM) {
                r = load_bool(f, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err, errlen);
                if (r < 0)
                        return r;
        }

        load_byte_tokens(v);
        load_eog(v);
        r = load_trie(v);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(v);
        return 0;
}

int rbee_vocab_load(const gguf_file *f, rbee_vocab **ret, char *err, size_t errlen) {
        int r;

        if (err && errlen > 0)
                err[0] = 0;
        if (!f || !ret)
                return fail(err, errlen, -EINVAL, "invalid arguments");
        r = vocab_load(f, ret, err, errlen);
        /* Only allocation failures come back without a message. */
        if (r < 0 && err && errlen > 0 && !err[0])
                fail(err, errlen, r, "cannot load the vocabulary: %s", strerror(-r));
        return r;
}

rbee_vocab *rbee_vocab_free(rbee_vocab *v) {
        if (!v)
                return NULL;
        free(v->tokens);
        free(v->arena);
        free(v->map);
        free(v->merges);
        free(v->trie);
        free(v);
        return NULL;
}

/* ---- accessors ---- */

enum rbee_vocab_kind rbee_vocab_kind(const rbee_vocab *v) {
        return v->kind;
}

int32_t rbee_vocab_n_tokens(const rbee_vocab *v) {
        return v->n_tokens;
}

int32_t rbee_vocab_bos(const rbee_vocab *v) {
        return v->bos;
}

int32_t rbee_vocab_eos(const rbee_vocab *v) {
        return v->eos;
}

int32_t rbee_vocab_eot(const rbee_vocab *v) {
        return v->eot;
}

bool rbee_vocab_add_bos(const rbee_vocab *v) {
        return v->add_bos && v->bos >= 0;
}

bool rbee_vocab_add_eos(const rbee_vocab *v) {
        return v->add_eos && v->eos >= 0;
}

bool rbee_vocab_is_eog(const rbee_vocab *v, int32_t token) {
        return token >= 0 && token < v->n_tokens && (v->tokens[token].flags & TOKEN_EOG);
}

bool rbee_vocab_is_control(const rbee_vocab *v, int32_t token) {
        return token >= 0 && token < v->n_tokens && v->tokens[token].type == RBEE_TOKEN_CONTROL;
}

const char *rbee_vocab_token_text(const rbee_vocab *v, int32_t token) {
        if (token < 0 || token >= v->n_tokens)
                return NULL;
        return token_text(v, token);
}

int32_t rbee_vocab_find(const rbee_vocab *v, const char *s, size_t n) {
        if (!s && n > 0)
                return -1;
        if (n > v->max_token_len)
                return -1;
        return rbee_vocab_lookup(v, s ? s : "", n);
}
