/* SPDX-License-Identifier: MIT */
/* The tokenizer on arbitrary bytes: encoding of any text (with and without
 * special tokens), decoding of any token ids through the streaming
 * detokenizer, and single pieces into buffers of any size. The first byte
 * picks the vocabulary and the mode; the rest is the text or the ids.
 *
 * Vocabularies: two written by rbee-mkmodel at build time (SPM and byte-level
 * BPE, always there), and the four of the shared test data when present
 * (else their slot falls back to a synthetic one of the same kind, so that a
 * corpus means the same thing everywhere). $RBEE_FUZZ_VOCAB_DIR overrides
 * where the synthetic ones are. */

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "gguf.h"
#include "strutil.h"
#include "tokenizer-internal.h"
#include "tokenizer.h"

#ifndef RBEE_BUILDDIR
#define RBEE_BUILDDIR RBEE_SRCDIR "/build"
#endif

#define N_SLOTS 6

static const struct {
        const char *file;
        bool synthetic;
        int fallback;
} slots[N_SLOTS] = {
        { "vocab-spm.gguf", true, 0 },
        { "vocab-bpe.gguf", true, 1 },
        { "ggml-vocab-llama-spm.gguf", false, 0 },
        { "ggml-vocab-gpt-2.gguf", false, 1 },
        { "ggml-vocab-qwen2.gguf", false, 1 },
        { "ggml-vocab-phi-3.gguf", false, 0 },
};

struct vocab {
        rbee_vocab *v;
        bool all_bytes;         /* every byte can be encoded, so text round-trips */
        bool space_prefix;      /* SPM that puts "▁" in front of the text */
};

static struct vocab vocabs[N_SLOTS];

static rbee_vocab *load(const char *dir, const char *file) {
        gguf_file *f = NULL;
        rbee_vocab *v = NULL;
        char path[8400], err[512];

        snprintf(path, sizeof(path), "%s/%s", dir, file);
        if (access(path, R_OK) < 0)
                return NULL;
        if (gguf_open(path, &f, err, sizeof(err)) < 0 || rbee_vocab_load(f, &v, err, sizeof(err)) < 0) {
                fprintf(stderr, "fuzz-tokenizer: %s: %s\n", path, err);
                abort();
        }
        gguf_close(f);
        return v;
}

static void init(void) {
        const char *build = getenv("RBEE_FUZZ_VOCAB_DIR"), *shared = getenv("RBEE_SHARED");
        char synth[4096], real[4096];

        snprintf(synth, sizeof(synth), "%s", build ? build : RBEE_BUILDDIR "/tests/fuzz");
        snprintf(real, sizeof(real), "%s/tokenizer", shared ? shared : RBEE_SRCDIR "/../shared");
        for (int i = 0; i < N_SLOTS; i++)
                vocabs[i].v = load(slots[i].synthetic ? synth : real, slots[i].file);
        for (int i = 0; i < 2; i++)
                if (!vocabs[i].v) {
                        fprintf(stderr, "fuzz-tokenizer: no %s in %s (built by rbee-mkmodel)\n", slots[i].file, synth);
                        abort();
                }
        for (int i = 0; i < N_SLOTS; i++) {
                struct vocab *x = &vocabs[i];
                char piece[64];
                int32_t id;
                if (!x->v)
                        continue;
                x->all_bytes = true;
                if (rbee_vocab_kind(x->v) == RBEE_VOCAB_SPM)
                        for (int b = 0; b < 256 && x->all_bytes; b++) {
                                snprintf(piece, sizeof(piece), "<0x%02X>", b);
                                x->all_bytes = rbee_vocab_find(x->v, piece, strlen(piece)) >= 0;
                        }
                x->space_prefix = rbee_vocab_kind(x->v) == RBEE_VOCAB_SPM &&
                                  rbee_tokenize(x->v, "a", 1, false, false, &id, 1) >= 1 &&
                                  rbee_token_to_piece(x->v, id, false, piece, sizeof(piece)) >= 1 && piece[0] == ' ';
        }
}

/* Concatenated pieces, without the SPM prefix space: the raw bytes. */
static char *pieces(const struct vocab *x, const int32_t *ids, size_t n, bool special, size_t *ret_len) {
        size_t cap = 64, len = 0;
        char *out = malloc(cap);

        FUZZ_CHECK(out);
        for (size_t i = 0; i < n; i++) {
                int r = rbee_token_to_piece(x->v, ids[i], special, NULL, 0);
                FUZZ_CHECK(r >= 0);
                while (len + (size_t) r + 1 > cap)
                        FUZZ_CHECK((out = realloc(out, cap *= 2)));
                FUZZ_CHECK(rbee_token_to_piece(x->v, ids[i], special, out + len, cap - len) == r);
                len += (size_t) r;
        }
        if (x->space_prefix && len > 0 && out[0] == ' ')
                memmove(out, out + 1, --len);
        *ret_len = len;
        return out;
}

/* The streaming detokenizer, each push first into a buffer too small for
 * most pieces: -ENOBUFS must leave the state as it was. */
static char *stream(const struct vocab *x, const int32_t *ids, size_t n, bool special, size_t *ret_len) {
        size_t max = rbee_detok_max_out(x->v), cap = 64 + (n + 1) * max, len = 0;
        char *out = malloc(cap);
        struct rbee_detok d;
        int r;

        FUZZ_CHECK(out);
        rbee_detok_init(&d, x->v, special);
        for (size_t i = 0; i < n; i++) {
                struct rbee_detok before = d;
                r = rbee_detok_push(&d, ids[i], out + len, 2);
                if (r == -ENOBUFS) {
                        FUZZ_CHECK(memcmp(&before, &d, sizeof(d)) == 0);
                        r = rbee_detok_push(&d, ids[i], out + len, max);
                }
                if (ids[i] < 0 || ids[i] >= rbee_vocab_n_tokens(x->v)) {
                        FUZZ_CHECK(r == -EINVAL);
                        continue;
                }
                FUZZ_CHECK(r >= 0 && (size_t) r <= max);
                FUZZ_CHECK(utf8_is_valid(out + len, (size_t) r));
                len += (size_t) r;
        }
        r = rbee_detok_flush(&d, out + len, max);
        FUZZ_CHECK(r >= 0);
        FUZZ_CHECK(utf8_is_valid(out + len, (size_t) r));
        *ret_len = len + (size_t) r;
        return out;
}

static int32_t *encode(const struct vocab *x, const char *s, size_t n, bool bos, bool special, size_t *ret_n) {
        int total = rbee_tokenize(x->v, s, n, bos, special, NULL, 0);
        int32_t *ids;

        FUZZ_CHECK(total >= 0);
        ids = malloc(((size_t) total + 1) * sizeof(int32_t));
        FUZZ_CHECK(ids);
        /* A buffer one short: the count is the same and nothing is written past it. */
        if (total > 0) {
                ids[total - 1] = -12345;
                FUZZ_CHECK(rbee_tokenize(x->v, s, n, bos, special, ids, (size_t) total - 1) == total);
                FUZZ_CHECK(ids[total - 1] == -12345);
        }
        FUZZ_CHECK(rbee_tokenize(x->v, s, n, bos, special, ids, (size_t) total) == total);
        for (int i = 0; i < total; i++)
                FUZZ_CHECK(ids[i] >= 0 && ids[i] < rbee_vocab_n_tokens(x->v));
        if (bos && rbee_vocab_bos(x->v) >= 0)
                FUZZ_CHECK(total >= 1 && ids[0] == rbee_vocab_bos(x->v));
        *ret_n = (size_t) total;
        return ids;
}

static void dump(const char *what, const char *s, size_t n) {
        fprintf(stderr, "  %s \"", what);
        for (size_t i = 0; i < n; i++)
                fprintf(stderr, (unsigned char) s[i] >= 0x20 && (unsigned char) s[i] < 0x7f && s[i] != '\\' ? "%c" : "\\x%02x",
                        (unsigned char) s[i]);
        fprintf(stderr, "\"\n");
}

static void check_encode(const struct vocab *x, const uint8_t *data, size_t size, bool bos, bool special) {
        const char *s = (const char *) data;
        size_t n, len, slen;
        int32_t *ids = encode(x, s, size, bos, special, &n);
        /* Skip the BOS for the round trip. */
        size_t skip = bos && rbee_vocab_bos(x->v) >= 0 ? 1 : 0;
        char *back = pieces(x, ids + skip, n - skip, special, &len);
        char *streamed = stream(x, ids + skip, n - skip, special, &slen);
        bool bpe = rbee_vocab_kind(x->v) == RBEE_VOCAB_BPE, matched_special = false;

        for (size_t i = skip; i < n; i++) {
                uint8_t t = x->v->tokens[ids[i]].type;
                matched_special |= t == RBEE_TOKEN_CONTROL || t == RBEE_TOKEN_USER_DEFINED || t == RBEE_TOKEN_UNKNOWN;
        }

        /* Every byte comes back, as the tokenizer tests promise: SPM reads
         * a "▁" of the input as a space and, as llama.cpp does, puts one
         * after a special or user-defined token (Phi-3's "</s>" is one). */
        if (x->all_bytes && (bpe || (!matched_special && !memmem(s, size, "\xe2\x96\x81", 3)))) {
                if (len != size || memcmp(back, s, size) != 0) {
                        fprintf(stderr, "round trip: %zu bytes came back as %zu:\n", size, len);
                        dump("in ", s, size);
                        dump("out", back, len);
                        for (size_t i = 0; i < n; i++)
                                fprintf(stderr, "%s%d", i ? " " : "  ids ", ids[i]);
                        fprintf(stderr, "\n");
                        abort();
                }
                if (utf8_is_valid(s, size))
                        FUZZ_CHECK(slen == size && memcmp(streamed, s, size) == 0);
        }
        free(back);
        free(streamed);
        free(ids);
}

/* Arbitrary ids, mostly in range, some just outside. */
static void check_decode(const struct vocab *x, const uint8_t *data, size_t size, bool special) {
        int32_t nv = rbee_vocab_n_tokens(x->v);
        size_t n = size / 3, len;
        int32_t *ids = malloc((n + 1) * sizeof(int32_t));
        char *out;

        FUZZ_CHECK(ids);
        for (size_t i = 0; i < n; i++) {
                uint32_t u = (uint32_t) data[3 * i] | (uint32_t) data[3 * i + 1] << 8 | (uint32_t) data[3 * i + 2] << 16;
                ids[i] = (int32_t) (u % ((uint32_t) nv + 4)) - 2;
        }
        out = stream(x, ids, n, special, &len);
        free(out);
        /* Pieces into buffers of every small size: the length never changes
         * and nothing is written past n. */
        for (size_t i = 0; i < n && i < 16; i++) {
                char buf[300];
                int full = rbee_token_to_piece(x->v, ids[i], special, NULL, 0);
                if (ids[i] < 0 || ids[i] >= nv) {
                        FUZZ_CHECK(full == -EINVAL);
                        continue;
                }
                FUZZ_CHECK(full >= 0);
                for (size_t k = 0; k < 8 && k <= (size_t) full + 1 && k + 1 < sizeof(buf); k++) {
                        memset(buf, 0x5a, sizeof(buf));
                        FUZZ_CHECK(rbee_token_to_piece(x->v, ids[i], special, buf, k) == full);
                        FUZZ_CHECK(buf[k] == 0x5a);
                }
        }
        free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool done;
        const struct vocab *x;

        if (!done) {
                init();
                done = true;
        }
        if (size < 1)
                return 0;
        unsigned slot = data[0] % N_SLOTS;
        x = vocabs[slot].v ? &vocabs[slot] : &vocabs[slots[slot].fallback];
        bool bos = data[0] & 0x08, special = data[0] & 0x10;
        /* Copy: ASan sees a read past the text. */
        uint8_t *text = malloc(size - 1 ? size - 1 : 1);
        FUZZ_CHECK(text);
        memcpy(text, data + 1, size - 1);
        if (data[0] & 0x20)
                check_decode(x, text, size - 1, special);
        else
                check_encode(x, text, size - 1, bos, special);
        free(text);
        return 0;
}
