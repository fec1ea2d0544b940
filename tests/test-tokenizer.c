/* SPDX-License-Identifier: MIT */
/* Tokenizer tests: the reference vectors of four vocabularies (SPM and
 * byte-level BPE), round trips, streaming detokenization, special tokens,
 * the golden outputs of the small models, hand-made corrupt vocabularies,
 * and speed on large inputs. */

#include <time.h>

#include "gguf.h"
#include "harness.h"
#include "macros.h"
#include "pretokenize.h"
#include "tokenizer.h"
#include "unicode.h"

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

/* The vocabulary outlives its file, which is closed here. */
static rbee_vocab *load_vocab(const char *rel) {
        const char *path = harness_shared(rel);
        gguf_file *f = NULL;
        rbee_vocab *v = NULL;
        char err[256] = "";
        int r;

        r = gguf_open(path, &f, err, sizeof(err));
        if (r < 0)
                FAIL("gguf_open(%s): %s (%s)", path, strerror(-r), err);
        r = rbee_vocab_load(f, &v, err, sizeof(err));
        if (r < 0)
                FAIL("rbee_vocab_load(%s): %s (%s)", path, strerror(-r), err);
        gguf_close(f);
        return v;
}

static bool valid_utf8(const char *s, size_t n) {
        for (size_t i = 0; i < n;) {
                uint32_t cp;
                int r = rbee_utf8_decode((const uint8_t *) s + i, n - i, &cp);
                if (r <= 0)
                        return false;
                i += (size_t) r;
        }
        return true;
}

/* Encode into a fresh array; *ret_n gets the count. */
static int32_t *encode(const rbee_vocab *v, const char *s, size_t n, bool add_bos, bool special, size_t *ret_n) {
        int32_t *ids;
        int r;

        r = rbee_tokenize(v, s, n, add_bos, special, NULL, 0);
        ASSERT_OK(r);
        ids = malloc_multiply((size_t) r + 1, sizeof(int32_t));
        ASSERT_NOT_NULL(ids);
        ASSERT_EQ(rbee_tokenize(v, s, n, add_bos, special, ids, (size_t) r), r);
        *ret_n = (size_t) r;
        return ids;
}

/* Decode with the streaming detokenizer, one token at a time. */
static char *decode(const rbee_vocab *v, const int32_t *ids, size_t n, bool special, size_t *ret_len) {
        struct rbee_detok d;
        size_t cap = 64 + n * rbee_detok_max_out(v), len = 0;
        char *out = malloc(cap + 1);
        int r;

        ASSERT_NOT_NULL(out);
        rbee_detok_init(&d, v, special);
        for (size_t i = 0; i < n; i++) {
                r = rbee_detok_push(&d, ids[i], out + len, cap - len);
                ASSERT_OK(r);
                ASSERT_TRUE(valid_utf8(out + len, (size_t) r));
                len += (size_t) r;
        }
        r = rbee_detok_flush(&d, out + len, cap - len);
        ASSERT_OK(r);
        len += (size_t) r;
        out[len] = 0;
        *ret_len = len;
        return out;
}

/* Decode by concatenating rbee_token_to_piece(), dropping the SPM prefix
 * space: raw bytes, with no UTF-8 repair. */
static char *decode_pieces(const rbee_vocab *v, const int32_t *ids, size_t n, bool special, size_t *ret_len) {
        size_t cap = 16, len = 0;
        char *out = malloc(cap);

        ASSERT_NOT_NULL(out);
        for (size_t i = 0; i < n; i++) {
                int r = rbee_token_to_piece(v, ids[i], special, NULL, 0);
                ASSERT_OK(r);
                while (len + (size_t) r + 1 > cap) {
                        cap *= 2;
                        out = realloc(out, cap);
                        ASSERT_NOT_NULL(out);
                }
                ASSERT_EQ(rbee_token_to_piece(v, ids[i], special, out + len, cap - len), r);
                len += (size_t) r;
        }
        out[len] = 0;
        if (rbee_vocab_kind(v) == RBEE_VOCAB_SPM && len > 0 && out[0] == ' ') {
                memmove(out, out + 1, len);
                len--;
        }
        *ret_len = len;
        return out;
}

static void print_ids(FILE *o, const int32_t *ids, size_t n) {
        for (size_t i = 0; i < n; i++)
                fprintf(o, " %" PRIi32, ids[i]);
}

/* ---- reference vectors ---- */

struct vec_case {
        const char *inp;
        size_t inp_len;
        int32_t ids[512];
        size_t n_ids;
};

#define VEC_SEP "\n__ggml_vocab_test__\n"

/* The cases point into *ret_buf, which the caller frees. */
static size_t read_cases(const char *name, struct vec_case **ret, char **ret_buf) {
        char rel[256];
        _cleanup_(freep) char *out = NULL;
        char *inp, *p, *line;
        struct vec_case *cases = NULL;
        size_t n = 0, n_lines = 0, size;

        snprintf(rel, sizeof(rel), "tokenizer/ggml-vocab-%s.gguf.inp", name);
        inp = harness_read_file(harness_shared(rel), &size);
        snprintf(rel, sizeof(rel), "tokenizer/ggml-vocab-%s.gguf.out", name);
        out = harness_read_file(harness_shared(rel), NULL);

        for (p = inp; *p;) {
                char *sep = strstr(p, VEC_SEP);
                if (!sep)
                        break;
                cases = realloc(cases, (n + 1) * sizeof(*cases));
                ASSERT_NOT_NULL(cases);
                *sep = 0;
                cases[n] = (struct vec_case) { .inp = p, .inp_len = (size_t) (sep - p) };
                n++;
                p = sep + strlen(VEC_SEP);
        }

        for (line = out; *line && n_lines < n; n_lines++) {
                char *nl = strchr(line, '\n'), *q = line;
                if (nl)
                        *nl = 0;
                while (*q) {
                        char *end;
                        long x = strtol(q, &end, 10);
                        if (end == q)
                                break;
                        ASSERT_TRUE(cases[n_lines].n_ids < ELEMENTSOF(cases[n_lines].ids));
                        cases[n_lines].ids[cases[n_lines].n_ids++] = (int32_t) x;
                        q = end;
                }
                if (!nl)
                        break;
                line = nl + 1;
        }
        ASSERT_EQ(n_lines, n);
        *ret = cases;
        *ret_buf = inp;
        return n;
}

/* Every case must encode to the reference ids; the decoded text must give
 * the input back; streaming must equal the whole. */
static void check_vectors(const char *name) {
        char rel[256];
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = NULL;
        _cleanup_(freep) struct vec_case *cases = NULL;
        _cleanup_(freep) char *buf = NULL;
        size_t n, pass = 0, round = 0;

        snprintf(rel, sizeof(rel), "tokenizer/ggml-vocab-%s.gguf", name);
        v = load_vocab(rel);
        n = read_cases(name, &cases, &buf);
        ASSERT_EQ(n, 46);

        for (size_t i = 0; i < n; i++) {
                _cleanup_(freep) int32_t *ids = NULL;
                _cleanup_(freep) char *text = NULL, *text2 = NULL;
                size_t n_ids, len, len2;

                ids = encode(v, cases[i].inp, cases[i].inp_len, false, false, &n_ids);
                if (n_ids == cases[i].n_ids && memcmp(ids, cases[i].ids, n_ids * sizeof(int32_t)) == 0)
                        pass++;
                else {
                        fprintf(stderr, "  %s case %zu \"%.*s\":\n    want", name, i, (int) cases[i].inp_len, cases[i].inp);
                        print_ids(stderr, cases[i].ids, cases[i].n_ids);
                        fprintf(stderr, "\n    got ");
                        print_ids(stderr, ids, n_ids);
                        fprintf(stderr, "\n");
                }

                text = decode(v, ids, n_ids, false, &len);
                text2 = decode_pieces(v, ids, n_ids, false, &len2);
                if (len == cases[i].inp_len && memcmp(text, cases[i].inp, len) == 0)
                        round++;
                else
                        fprintf(stderr, "  %s case %zu does not round-trip: \"%s\"\n", name, i, text);
                if (len != len2 || memcmp(text, text2, len) != 0)
                        FAIL("%s case %zu: streaming \"%s\" != whole \"%s\"", name, i, text, text2);
        }
        printf("  %s: %zu/%zu cases match, %zu round-trip\n", name, pass, n, round);
        ASSERT_EQ(pass, n);
        ASSERT_EQ(round, n);
}

TEST(vectors_llama_spm) {
        check_vectors("llama-spm");
}

TEST(vectors_phi_3) {
        check_vectors("phi-3");
}

TEST(vectors_gpt_2) {
        check_vectors("gpt-2");
}

TEST(vectors_qwen2) {
        check_vectors("qwen2");
}

/* ---- the small models ---- */

TEST(stories260k_golden_decode) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = load_vocab("models/stories260K.gguf");
        _cleanup_(freep) char *ids_txt = harness_read_file(harness_shared("golden/stories260K.greedy.noprompt.ids.txt"), NULL);
        _cleanup_(freep) char *want = harness_read_file(harness_shared("golden/stories260K.greedy.noprompt.n256.txt"), NULL);
        _cleanup_(freep) int32_t *ids = NULL, *prompt = NULL;
        _cleanup_(freep) char *text = NULL;
        size_t n = 0, len, n_prompt;
        char *p = ids_txt;

        ASSERT_EQ(rbee_vocab_kind(v), RBEE_VOCAB_SPM);
        ASSERT_EQ(rbee_vocab_n_tokens(v), 512);
        ASSERT_EQ(rbee_vocab_bos(v), 1);
        ASSERT_EQ(rbee_vocab_eos(v), 2);
        ASSERT_TRUE(rbee_vocab_add_bos(v));
        ASSERT_TRUE(rbee_vocab_is_eog(v, 2));
        ASSERT_FALSE(rbee_vocab_is_eog(v, 1));

        /* "[1, 403, 407, ...]" */
        ids = malloc_multiply(strlen(ids_txt), sizeof(int32_t));
        ASSERT_NOT_NULL(ids);
        while (*p) {
                char *end;
                long x;

                if (!(*p >= '0' && *p <= '9')) {
                        p++;
                        continue;
                }
                x = strtol(p, &end, 10);
                ids[n++] = (int32_t) x;
                p = end;
        }
        /* 256 positions for llama2.c; llama.cpp's run went two tokens further
         * and the text covers them. */
        ASSERT_GE(n, 256);
        ASSERT_EQ(ids[0], 1);

        text = decode(v, ids, n, false, &len);
        ASSERT_EQ(len, strlen(want));
        ASSERT_STREQ(text, want);

        /* The generated text starts "Once upon a time": the prompt's own
         * tokens are the same as the first generated ones. */
        prompt = encode(v, "Once upon a time", 16, true, false, &n_prompt);
        printf("  stories260K \"Once upon a time\":");
        print_ids(stdout, prompt, n_prompt);
        printf("\n");
        ASSERT_GE(n_prompt, 2);
        ASSERT_TRUE(n_prompt <= n);
        ASSERT_EQ(memcmp(prompt, ids, n_prompt * sizeof(int32_t)), 0);
}

TEST(tinystories656k) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = load_vocab("models/TinyStories-656K-F32.gguf");
        _cleanup_(freep) char *ids_txt = harness_read_file(harness_shared("golden/TinyStories-656K.greedy.once-upon-a-time.n48.ids.txt"), NULL);
        _cleanup_(freep) char *want = harness_read_file(harness_shared("golden/TinyStories-656K.greedy.once-upon-a-time.n48.txt"), NULL);
        _cleanup_(freep) int32_t *prompt = NULL;
        _cleanup_(freep) char *text = NULL, *back = NULL;
        int32_t ids[64];
        size_t n = 0, len, n_prompt;
        const char *prefix = "Once upon a time";
        char *p = ids_txt;

        /* Despite "BPE" in its description, this vocabulary is SentencePiece
         * style ("llama") with pieces like "tor▁", and has no byte tokens. */
        ASSERT_EQ(rbee_vocab_kind(v), RBEE_VOCAB_SPM);
        ASSERT_EQ(rbee_vocab_n_tokens(v), 2048);
        ASSERT_STREQ(rbee_vocab_token_text(v, rbee_vocab_bos(v)), "<|start_story|>");
        ASSERT_TRUE(rbee_vocab_is_eog(v, rbee_vocab_eos(v)));

        prompt = encode(v, prefix, strlen(prefix), true, false, &n_prompt);
        printf("  TinyStories-656K \"%s\":", prefix);
        for (size_t i = 0; i < n_prompt; i++)
                printf(" %" PRIi32 "='%s'", prompt[i], rbee_vocab_token_text(v, prompt[i]));
        printf("\n");
        /* With llama.cpp's space prefix: "▁Once▁upon▁a▁time" gives
         * ▁ On ce▁ upon▁a▁tim e. The golden generation was made from these
         * ids (tests/test-golden.c reproduces it). */
        ASSERT_EQ(n_prompt, 6);
        ASSERT_EQ(memcmp(prompt, ((const int32_t[]) { 1, 80, 147, 201, 282, 57 }), 6 * sizeof(int32_t)), 0);
        back = decode(v, prompt, n_prompt, false, &len);
        ASSERT_STREQ(back, prefix);

        while (*p) {
                char *end;
                long x = strtol(p, &end, 10);
                if (end == p)
                        break;
                ASSERT_TRUE(n < ELEMENTSOF(ids));
                ids[n++] = (int32_t) x;
                p = end;
        }
        ASSERT_EQ(n, 48);

        /* The golden text is the prompt followed by the generated tokens,
         * decoded after the prompt (so no leading space is dropped), and a
         * newline that the writer of the file added (the last token is
         * "bird"). */
        len = strlen(want);
        if (len > 0 && want[len - 1] == '\n')
                want[len - 1] = 0;
        {
                int32_t all[128];
                memcpy(all, prompt, n_prompt * sizeof(int32_t));
                memcpy(all + n_prompt, ids, n * sizeof(int32_t));
                text = decode(v, all, n_prompt + n, false, &len);
        }
        ASSERT_STREQ(text, want);
}

/* The synthetic models carry the same vocabularies as the reference files. */
TEST(model_files_vocabularies) {
        static const struct {
                const char *model, *vocab;
        } pairs[] = {
                { "models/tiny-llama-d64-F32.gguf", "tokenizer/ggml-vocab-llama-spm.gguf" },
                { "models/tiny-qwen2-d64-F16.gguf", "tokenizer/ggml-vocab-qwen2.gguf" },
        };
        const char *s = "Hello world, \xc3\xa9t\xc3\xa9 2024!\n<|im_end|>";

        for (size_t i = 0; i < ELEMENTSOF(pairs); i++) {
                _cleanup_(rbee_vocab_freep) rbee_vocab *a = load_vocab(pairs[i].model);
                _cleanup_(rbee_vocab_freep) rbee_vocab *b = load_vocab(pairs[i].vocab);
                _cleanup_(freep) int32_t *x = NULL, *y = NULL;
                size_t nx, ny;

                ASSERT_EQ(rbee_vocab_n_tokens(a), rbee_vocab_n_tokens(b));
                ASSERT_EQ(rbee_vocab_kind(a), rbee_vocab_kind(b));
                x = encode(a, s, strlen(s), true, true, &nx);
                y = encode(b, s, strlen(s), true, true, &ny);
                ASSERT_EQ(nx, ny);
                ASSERT_EQ(memcmp(x, y, nx * sizeof(int32_t)), 0);
        }
}

/* ---- special tokens and metadata ---- */

TEST(qwen2_special_tokens) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = load_vocab("tokenizer/ggml-vocab-qwen2.gguf");
        _cleanup_(freep) int32_t *a = NULL, *b = NULL, *c = NULL;
        _cleanup_(freep) char *text = NULL;
        const char *s = "<|im_start|>user\nHi<|im_end|>";
        int32_t user = rbee_vocab_find(v, "user", 4);
        size_t na, nb, nc, len;
        char buf[64];

        ASSERT_EQ(rbee_vocab_kind(v), RBEE_VOCAB_BPE);
        ASSERT_EQ(rbee_vocab_n_tokens(v), 151936);
        ASSERT_GE(user, 0);

        a = encode(v, "<|im_start|>user", 16, false, true, &na);
        ASSERT_EQ(na, 2);
        ASSERT_EQ(a[0], 151644);
        ASSERT_EQ(a[1], user);

        /* Without parse_special the control text is plain text. */
        b = encode(v, "<|im_start|>user", 16, false, false, &nb);
        ASSERT_GE(nb, 3);
        for (size_t i = 0; i < nb; i++)
                ASSERT_FALSE(rbee_vocab_is_control(v, b[i]));

        /* Control tokens render only with special=true. */
        ASSERT_EQ(rbee_token_to_piece(v, 151644, false, buf, sizeof(buf)), 0);
        ASSERT_EQ(rbee_token_to_piece(v, 151644, true, buf, sizeof(buf)), 12);
        ASSERT_EQ(memcmp(buf, "<|im_start|>", 12), 0);

        c = encode(v, s, strlen(s), false, true, &nc);
        ASSERT_EQ(c[0], 151644);
        ASSERT_EQ(c[nc - 1], 151645);
        text = decode(v, c, nc, true, &len);
        ASSERT_STREQ(text, s);
        free(text);
        text = decode(v, c, nc, false, &len);
        ASSERT_STREQ(text, "user\nHi");

        /* User-defined tokens are cut out even without parse_special, and
         * always render as their text. */
        free(c);
        c = encode(v, "a<tool_call>b", 13, false, false, &nc);
        ASSERT_EQ(nc, 3);
        ASSERT_EQ(c[1], 151657);
        ASSERT_EQ(rbee_token_to_piece(v, 151657, false, buf, sizeof(buf)), 11);

        /* Longest match: "<|im_start|>" is not cut at a shorter special. */
        ASSERT_EQ(rbee_vocab_eot(v), 151645);
        ASSERT_TRUE(rbee_vocab_is_eog(v, 151643));   /* <|endoftext|>, EOS */
        ASSERT_TRUE(rbee_vocab_is_eog(v, 151645));   /* <|im_end|> */
        ASSERT_FALSE(rbee_vocab_is_eog(v, 151644));
        ASSERT_FALSE(rbee_vocab_is_eog(v, user));
        ASSERT_FALSE(rbee_vocab_is_eog(v, -1));
        ASSERT_FALSE(rbee_vocab_is_eog(v, 151936));
        ASSERT_FALSE(rbee_vocab_add_bos(v));

        /* Unused padding tokens render as nothing. */
        ASSERT_EQ(rbee_token_to_piece(v, 151935, true, buf, sizeof(buf)), 0);
}

TEST(phi3_and_llama_metadata) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *phi = load_vocab("tokenizer/ggml-vocab-phi-3.gguf");
        _cleanup_(rbee_vocab_freep) rbee_vocab *spm = load_vocab("tokenizer/ggml-vocab-llama-spm.gguf");
        _cleanup_(rbee_vocab_freep) rbee_vocab *gpt2 = load_vocab("tokenizer/ggml-vocab-gpt-2.gguf");
        _cleanup_(freep) int32_t *ids = NULL;
        size_t n;
        const char *s = "<|user|>\nHi<|end|>";

        ASSERT_EQ(rbee_vocab_eos(phi), 32000);
        ASSERT_EQ(rbee_vocab_eot(phi), 32007);        /* <|end|> */
        ASSERT_TRUE(rbee_vocab_is_eog(phi, 32000));
        ASSERT_TRUE(rbee_vocab_is_eog(phi, 32007));
        ASSERT_FALSE(rbee_vocab_is_eog(phi, 32010));  /* <|user|> */
        ASSERT_TRUE(rbee_vocab_add_bos(phi));

        /* SPM after a special token gets the space prefix too (llama.cpp). */
        ids = encode(phi, s, strlen(s), true, true, &n);
        ASSERT_EQ(ids[0], 1);
        ASSERT_EQ(ids[1], 32010);
        ASSERT_EQ(ids[n - 1], 32007);

        ASSERT_EQ(rbee_vocab_bos(spm), 1);
        ASSERT_EQ(rbee_vocab_eos(spm), 2);
        ASSERT_EQ(rbee_vocab_eot(spm), -1);
        ASSERT_TRUE(rbee_vocab_is_eog(spm, 2));
        ASSERT_TRUE(rbee_vocab_is_control(spm, 1));
        ASSERT_FALSE(rbee_vocab_is_control(spm, 3));
        ASSERT_STREQ(rbee_vocab_token_text(spm, 3), "<0x00>");
        ASSERT_TRUE(rbee_vocab_token_text(spm, 32000) == NULL);
        ASSERT_EQ(rbee_vocab_find(spm, "<s>", 3), 1);
        ASSERT_EQ(rbee_vocab_find(spm, "no such token", 13), -1);

        ASSERT_EQ(rbee_vocab_eos(gpt2), 50256);
        ASSERT_TRUE(rbee_vocab_is_eog(gpt2, 50256));
        ASSERT_FALSE(rbee_vocab_add_bos(gpt2));
}

TEST(api_errors) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = load_vocab("models/stories260K.gguf");
        _cleanup_(freep) char *big = NULL;
        int32_t ids[4] = { -7, -7, -7, -7 };
        char buf[8];
        int r;

        ASSERT_ERR(rbee_tokenize(NULL, "a", 1, false, false, ids, 4), -EINVAL);
        ASSERT_ERR(rbee_tokenize(v, NULL, 1, false, false, ids, 4), -EINVAL);
        ASSERT_ERR(rbee_tokenize(v, "a", 1, false, false, NULL, 4), -EINVAL);
        ASSERT_EQ(rbee_tokenize(v, NULL, 0, false, false, NULL, 0), 0);
        ASSERT_EQ(rbee_tokenize(v, "", 0, true, false, ids, 4), 1);
        ASSERT_EQ(ids[0], 1);

        /* A short buffer gets the first ids; the return value is the total. */
        r = rbee_tokenize(v, "Once upon a time there was a dog", 32, true, false, ids, 2);
        ASSERT_GE(r, 5);
        ASSERT_EQ(ids[0], 1);
        ASSERT_NE(ids[1], -7);
        ASSERT_EQ(ids[2], -7);

        big = calloc(1, (64u << 20) + 1);
        ASSERT_NOT_NULL(big);
        ASSERT_ERR(rbee_tokenize(v, big, (64u << 20) + 1, false, false, NULL, 0), -E2BIG);

        ASSERT_ERR(rbee_token_to_piece(v, -1, false, buf, sizeof(buf)), -EINVAL);
        ASSERT_ERR(rbee_token_to_piece(v, 512, false, buf, sizeof(buf)), -EINVAL);
        /* The length is returned even when the buffer is short. */
        r = rbee_token_to_piece(v, 1, true, buf, 1);
        ASSERT_EQ(r, 3);
        ASSERT_EQ(buf[0], '<');
}

/* ---- streaming detokenizer ---- */

TEST(detok_spm_byte_tokens) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = load_vocab("tokenizer/ggml-vocab-llama-spm.gguf");
        _cleanup_(freep) int32_t *ids = NULL;
        const char *emoji = "\xf0\x9f\x98\x80";   /* U+1F600, no token of its own */
        int32_t b[4], a = rbee_vocab_find(v, "a", 1), ff = rbee_vocab_find(v, "<0xFF>", 6);
        struct rbee_detok d, saved;
        char out[256];
        size_t n;

        for (int i = 0; i < 4; i++) {
                char name[8];
                snprintf(name, sizeof(name), "<0x%02X>", (uint8_t) emoji[i]);
                b[i] = rbee_vocab_find(v, name, 6);
                ASSERT_GE(b[i], 0);
        }
        ASSERT_GE(a, 0);
        ASSERT_GE(ff, 0);
        ASSERT_LE(rbee_detok_max_out(v), 256);

        /* "▁" then the four bytes. */
        ids = encode(v, emoji, 4, false, false, &n);
        ASSERT_EQ(n, 5);
        ASSERT_STREQ(rbee_vocab_token_text(v, ids[0]), "\xe2\x96\x81");
        for (int i = 0; i < 4; i++)
                ASSERT_EQ(ids[i + 1], b[i]);

        rbee_detok_init(&d, v, false);
        ASSERT_EQ(rbee_detok_push(&d, ids[0], out, sizeof(out)), 0);    /* the prefix space, dropped */
        ASSERT_EQ(rbee_detok_push(&d, b[0], out, sizeof(out)), 0);
        ASSERT_EQ(rbee_detok_push(&d, b[1], out, sizeof(out)), 0);
        ASSERT_EQ(rbee_detok_push(&d, b[2], out, sizeof(out)), 0);
        /* Too small a buffer leaves the state as it was. */
        saved = d;
        ASSERT_ERR(rbee_detok_push(&d, b[3], out, 3), -ENOBUFS);
        ASSERT_EQ(memcmp(&saved, &d, sizeof(d)), 0);
        ASSERT_EQ(rbee_detok_push(&d, b[3], out, sizeof(out)), 4);
        ASSERT_EQ(memcmp(out, emoji, 4), 0);
        ASSERT_EQ(rbee_detok_flush(&d, out, sizeof(out)), 0);

        /* A later space is kept. */
        ASSERT_EQ(rbee_detok_push(&d, ids[0], out, sizeof(out)), 1);
        ASSERT_EQ(out[0], ' ');

        /* An invalid byte becomes U+FFFD; a broken sequence is replaced
         * and what follows it comes through. */
        rbee_detok_init(&d, v, false);
        ASSERT_EQ(rbee_detok_push(&d, ff, out, sizeof(out)), 3);
        ASSERT_EQ(memcmp(out, "\xef\xbf\xbd", 3), 0);
        ASSERT_EQ(rbee_detok_push(&d, b[0], out, sizeof(out)), 0);
        ASSERT_EQ(rbee_detok_push(&d, b[1], out, sizeof(out)), 0);
        ASSERT_EQ(rbee_detok_push(&d, a, out, sizeof(out)), 4);
        ASSERT_EQ(memcmp(out, "\xef\xbf\xbd" "a", 4), 0);

        /* An unfinished sequence at the end is flushed as one U+FFFD. */
        ASSERT_EQ(rbee_detok_push(&d, b[0], out, sizeof(out)), 0);
        ASSERT_EQ(rbee_detok_push(&d, b[1], out, sizeof(out)), 0);
        ASSERT_ERR(rbee_detok_flush(&d, out, 2), -ENOBUFS);
        ASSERT_EQ(rbee_detok_flush(&d, out, sizeof(out)), 3);
        ASSERT_EQ(memcmp(out, "\xef\xbf\xbd", 3), 0);
        ASSERT_EQ(rbee_detok_flush(&d, out, sizeof(out)), 0);

        ASSERT_ERR(rbee_detok_push(&d, -1, out, sizeof(out)), -EINVAL);
        ASSERT_ERR(rbee_detok_push(&d, 32000, out, sizeof(out)), -EINVAL);
}

TEST(detok_bos_and_special) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = load_vocab("tokenizer/ggml-vocab-llama-spm.gguf");
        _cleanup_(freep) int32_t *ids = NULL;
        _cleanup_(freep) char *text = NULL;
        size_t n, len;

        ids = encode(v, "Hello world", 11, true, false, &n);
        ASSERT_EQ(ids[0], 1);
        text = decode(v, ids, n, false, &len);
        ASSERT_STREQ(text, "Hello world");
        free(text);
        /* Rendered, BOS is the first piece and the space stays. */
        text = decode(v, ids, n, true, &len);
        ASSERT_STREQ(text, "<s> Hello world");
}

/* Every chunk the stream hands out is valid UTF-8, even when a character
 * is split across byte-level BPE tokens, and the chunks add up to the whole. */
TEST(detok_bpe_split_characters) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = load_vocab("tokenizer/ggml-vocab-gpt-2.gguf");
        _cleanup_(freep) int32_t *ids = NULL;
        const char *s = "\xe1\x9e\x80\xe1\x9e\xb6\xe1\x9e\x93 \xf0\x9f\x98\x80\xf0\x9f\xa6\x99 \xe4\xb8\xad\xe6\x96\x87 caf\xc3\xa9";
        struct rbee_detok d;
        char out[256], all[256];
        size_t n, len = 0, split = 0;

        ids = encode(v, s, strlen(s), false, false, &n);
        rbee_detok_init(&d, v, false);
        for (size_t i = 0; i < n; i++) {
                char piece[64];
                int k = rbee_detok_push(&d, ids[i], out, sizeof(out));
                int p = rbee_token_to_piece(v, ids[i], false, piece, sizeof(piece));

                ASSERT_OK(k);
                ASSERT_OK(p);
                if (!valid_utf8(piece, (size_t) p))
                        split++;
                ASSERT_TRUE(valid_utf8(out, (size_t) k));
                ASSERT_TRUE(len + (size_t) k < sizeof(all));
                memcpy(all + len, out, (size_t) k);
                len += (size_t) k;
        }
        ASSERT_EQ(rbee_detok_flush(&d, out, sizeof(out)), 0);
        all[len] = 0;
        ASSERT_STREQ(all, s);
        /* The test means something only if some token held part of a character. */
        ASSERT_GE(split, 1);
}

/* ---- hand-made vocabularies ---- */

/* A GGUF v3 file with metadata only, built in memory. */
struct gb {
        uint8_t *p;
        size_t n, cap;
        uint64_t n_kv;
};

static void gb_raw(struct gb *b, const void *p, size_t n) {
        while (b->n + n > b->cap) {
                b->cap = b->cap ? 2 * b->cap : 4096;
                b->p = realloc(b->p, b->cap);
                ASSERT_NOT_NULL(b->p);
        }
        memcpy(b->p + b->n, p, n);
        b->n += n;
}

static void gb_u32(struct gb *b, uint32_t x) {
        gb_raw(b, &x, 4);
}

static void gb_u64(struct gb *b, uint64_t x) {
        gb_raw(b, &x, 8);
}

static void gb_str(struct gb *b, const char *s) {
        gb_u64(b, strlen(s));
        gb_raw(b, s, strlen(s));
}

static void kv_str(struct gb *b, const char *key, const char *val) {
        gb_str(b, key);
        gb_u32(b, GGUF_VTYPE_STRING);
        gb_str(b, val);
        b->n_kv++;
}

static void kv_u32(struct gb *b, const char *key, uint32_t val) {
        gb_str(b, key);
        gb_u32(b, GGUF_VTYPE_UINT32);
        gb_u32(b, val);
        b->n_kv++;
}

static void kv_i32(struct gb *b, const char *key, int32_t val) {
        gb_str(b, key);
        gb_u32(b, GGUF_VTYPE_INT32);
        gb_raw(b, &val, 4);
        b->n_kv++;
}

static void kv_bool(struct gb *b, const char *key, bool val) {
        uint8_t x = val;

        gb_str(b, key);
        gb_u32(b, GGUF_VTYPE_BOOL);
        gb_raw(b, &x, 1);
        b->n_kv++;
}

static void kv_arr_str(struct gb *b, const char *key, const char *const *vals, size_t n) {
        gb_str(b, key);
        gb_u32(b, GGUF_VTYPE_ARRAY);
        gb_u32(b, GGUF_VTYPE_STRING);
        gb_u64(b, n);
        for (size_t i = 0; i < n; i++)
                gb_str(b, vals[i]);
        b->n_kv++;
}

static void kv_arr_f32(struct gb *b, const char *key, const float *vals, size_t n) {
        gb_str(b, key);
        gb_u32(b, GGUF_VTYPE_ARRAY);
        gb_u32(b, GGUF_VTYPE_FLOAT32);
        gb_u64(b, n);
        gb_raw(b, vals, n * sizeof(float));
        b->n_kv++;
}

static void kv_arr_i32(struct gb *b, const char *key, const int32_t *vals, size_t n) {
        gb_str(b, key);
        gb_u32(b, GGUF_VTYPE_ARRAY);
        gb_u32(b, GGUF_VTYPE_INT32);
        gb_u64(b, n);
        gb_raw(b, vals, n * sizeof(int32_t));
        b->n_kv++;
}

/* Header + metadata, padded to the alignment. */
static uint8_t *gb_finish(struct gb *b, size_t *ret_size) {
        struct gb f = {};
        static const uint8_t zero[32];

        gb_raw(&f, "GGUF", 4);
        gb_u32(&f, 3);
        gb_u64(&f, 0);
        gb_u64(&f, b->n_kv);
        gb_raw(&f, b->p, b->n);
        gb_raw(&f, zero, ALIGN_TO(f.n, 32) - f.n);
        free(b->p);
        *b = (struct gb) {};
        *ret_size = f.n;
        return f.p;
}

/* Options for the small vocabularies below; each test changes one. */
struct spec {
        const char *model;              /* NULL: no key */
        const char *pre;                /* NULL: no key */
        const char *const *tokens;
        size_t n_tokens;
        const float *scores;
        size_t n_scores;
        const int32_t *types;
        size_t n_types;
        const char *const *merges;
        size_t n_merges;
        int64_t bos;                    /* INT64_MIN: no key; >= 2^31: stored as u32 */
        bool has_pad;
        int32_t pad;
        int space_prefix;               /* -1: no key */
};

/* Load the vocabulary; returns the error and leaves the message in err. */
static int load_spec(const struct spec *s, rbee_vocab **ret, char *err, size_t errlen) {
        struct gb b = {};
        _cleanup_(freep) uint8_t *data = NULL;
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        size_t size;
        int r;

        if (s->model)
                kv_str(&b, "tokenizer.ggml.model", s->model);
        if (s->pre)
                kv_str(&b, "tokenizer.ggml.pre", s->pre);
        if (s->tokens)
                kv_arr_str(&b, "tokenizer.ggml.tokens", s->tokens, s->n_tokens);
        if (s->scores)
                kv_arr_f32(&b, "tokenizer.ggml.scores", s->scores, s->n_scores);
        if (s->types)
                kv_arr_i32(&b, "tokenizer.ggml.token_type", s->types, s->n_types);
        if (s->merges)
                kv_arr_str(&b, "tokenizer.ggml.merges", s->merges, s->n_merges);
        if (s->bos >= (int64_t) 1 << 31)
                kv_u32(&b, "tokenizer.ggml.bos_token_id", (uint32_t) s->bos);
        else if (s->bos != INT64_MIN)
                kv_i32(&b, "tokenizer.ggml.bos_token_id", (int32_t) s->bos);
        if (s->has_pad)
                kv_i32(&b, "tokenizer.ggml.padding_token_id", s->pad);
        if (s->space_prefix >= 0)
                kv_bool(&b, "tokenizer.ggml.add_space_prefix", s->space_prefix);
        kv_u32(&b, "tokenizer.ggml.eos_token_id", 2);

        data = gb_finish(&b, &size);
        r = gguf_open_memory(data, size, &f, err, errlen);
        ASSERT_OK(r);
        err[0] = 0;
        return rbee_vocab_load(f, ret, err, errlen);
}

/* SPM: <unk> <s> </s>, 256 byte tokens, then a few pieces. */
#define SPM_N (3 + 256 + 8)
static const char *spm_tokens[SPM_N];
static float spm_scores[SPM_N];
static int32_t spm_types[SPM_N];

static struct spec spm_spec(void) {
        static char bytes[256][8];
        static const char *const pieces[] = { "\xe2\x96\x81", "a", "b", "c", "ab", "bc", "▁a", "x y" };
        static const float piece_scores[] = { -1, -1, -1, -1, -2, -2, -3, -1 };

        spm_tokens[0] = "<unk>";
        spm_tokens[1] = "<s>";
        spm_tokens[2] = "</s>";
        spm_types[0] = RBEE_TOKEN_UNKNOWN;
        spm_types[1] = spm_types[2] = RBEE_TOKEN_CONTROL;
        for (int i = 0; i < 256; i++) {
                snprintf(bytes[i], sizeof(bytes[i]), "<0x%02X>", i);
                spm_tokens[3 + i] = bytes[i];
                spm_types[3 + i] = RBEE_TOKEN_BYTE;
        }
        for (size_t i = 0; i < ELEMENTSOF(pieces); i++) {
                spm_tokens[259 + i] = pieces[i];
                spm_scores[259 + i] = piece_scores[i];
                spm_types[259 + i] = RBEE_TOKEN_NORMAL;
        }
        return (struct spec) {
                .model = "llama",
                .tokens = spm_tokens, .n_tokens = SPM_N,
                .scores = spm_scores, .n_scores = SPM_N,
                .types = spm_types, .n_types = SPM_N,
                .bos = 1,
                .space_prefix = -1,
        };
}

/* Byte-level BPE: the 256 byte characters, then a few merged tokens. */
#define BPE_N (256 + 5)
static const char *bpe_tokens[BPE_N];

static struct spec bpe_spec(const char *const *merges, size_t n_merges) {
        static char chars[256][4];

        for (int b = 0, k = 0; b < 256; b++) {
                uint32_t cp = b;
                uint8_t buf[4];
                size_t n;

                if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE))
                        cp = 0x100 + (uint32_t) k++;
                n = rbee_utf8_encode(cp, buf);
                memcpy(chars[b], buf, n);
                chars[b][n] = 0;
                bpe_tokens[b] = chars[b];
        }
        bpe_tokens[256] = "ab";
        bpe_tokens[257] = "bc";
        bpe_tokens[258] = "abc";
        bpe_tokens[259] = "\xc4\xa0" "a";       /* "Ġa": " a" */
        bpe_tokens[260] = "<|end|>";
        return (struct spec) {
                .model = "gpt2",
                .pre = "gpt2",
                .tokens = bpe_tokens, .n_tokens = BPE_N,
                .merges = merges, .n_merges = n_merges,
                .bos = INT64_MIN,
                .space_prefix = -1,
        };
}

static void expect_ids(const rbee_vocab *v, const char *s, const int32_t *want, size_t n_want) {
        _cleanup_(freep) int32_t *ids = NULL;
        size_t n;

        ids = encode(v, s, strlen(s), false, false, &n);
        if (n != n_want || memcmp(ids, want, n * sizeof(int32_t)) != 0) {
                fprintf(stderr, "  \"%s\": want", s);
                print_ids(stderr, want, n_want);
                fprintf(stderr, ", got");
                print_ids(stderr, ids, n);
                FAIL("wrong ids for \"%s\"", s);
        }
}

TEST(spm_merge_order) {
        struct spec s = spm_spec();
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = NULL;
        char err[256];
        /* ids: ▁ 259, a 260, b 261, c 262, ab 263, bc 264, ▁a 265, "x y" 266 */

        s.space_prefix = 0;
        ASSERT_OK(load_spec(&s, &v, err, sizeof(err)));
        /* "ab" and "bc" score the same: the leftmost pair merges first. */
        expect_ids(v, "abc", (const int32_t[]) { 263, 262 }, 2);
        expect_ids(v, "bca", (const int32_t[]) { 264, 260 }, 2);
        /* Byte fallback for what no piece covers; the space is "▁". */
        expect_ids(v, "a\xc3\xa9", (const int32_t[]) { 260, 3 + 0xC3, 3 + 0xA9 }, 3);
        expect_ids(v, "b a", (const int32_t[]) { 261, 265 }, 2);
        /* A space inside a piece's text cannot match: spaces became "▁". */
        expect_ids(v, "x y", (const int32_t[]) { 3 + 'x', 259, 3 + 'y' }, 3);
        v = rbee_vocab_free(v);

        /* With a higher score for "bc" it wins. */
        spm_scores[264] = -1.5f;
        ASSERT_OK(load_spec(&s, &v, err, sizeof(err)));
        spm_scores[264] = -2;
        expect_ids(v, "abc", (const int32_t[]) { 260, 264 }, 2);
        v = rbee_vocab_free(v);

        /* The default adds the space prefix (score -3 for "▁a" loses to nothing). */
        s.space_prefix = -1;
        ASSERT_OK(load_spec(&s, &v, err, sizeof(err)));
        expect_ids(v, "ab", (const int32_t[]) { 259, 263 }, 2);
        expect_ids(v, "a", (const int32_t[]) { 265 }, 1);
}

TEST(bpe_merge_ranks) {
        static const char *const m1[] = { "b c", "a b", "ab c", "\xc4\xa0 a" };
        static const char *const m2[] = { "a b", "b c", "ab c", "\xc4\xa0 a" };
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = NULL;
        struct spec s = bpe_spec(m1, ELEMENTSOF(m1));
        char err[256];

        ASSERT_OK(load_spec(&s, &v, err, sizeof(err)));
        /* "b c" ranks first, and no merge makes "abc" from "a" + "bc".
         * Byte b's own token is id b here. */
        expect_ids(v, "abc", (const int32_t[]) { 'a', 257 }, 2);
        expect_ids(v, " abc", (const int32_t[]) { 259, 257 }, 2);
        expect_ids(v, "ab", (const int32_t[]) { 256 }, 1);
        /* Control tokens are plain text unless parse_special. */
        expect_ids(v, "<|end|>", (const int32_t[]) { '<', '|', 'e', 'n', 'd', '|', '>' }, 7);
        v = rbee_vocab_free(v);

        s = bpe_spec(m2, ELEMENTSOF(m2));
        ASSERT_OK(load_spec(&s, &v, err, sizeof(err)));
        expect_ids(v, "abc", (const int32_t[]) { 258 }, 1);
        expect_ids(v, "abcbc", (const int32_t[]) { 258, 257 }, 2);
        v = rbee_vocab_free(v);

        /* Llama 3 takes a piece that is a whole token as it is. */
        s = bpe_spec(m1, ELEMENTSOF(m1));
        s.pre = "llama-bpe";
        ASSERT_OK(load_spec(&s, &v, err, sizeof(err)));
        expect_ids(v, "abc", (const int32_t[]) { 258 }, 1);
        ASSERT_TRUE(rbee_vocab_add_bos(v) == false);    /* no BOS token here */
}

static void expect_load_error(const struct spec *s, int want, const char *needle) {
        rbee_vocab *v = NULL;
        char err[256];
        int r;

        r = load_spec(s, &v, err, sizeof(err));
        ASSERT_TRUE(v == NULL);
        ASSERT_ERR(r, want);
        ASSERT_CONTAINS(err, needle);
        printf("  %s\n", err);
}

TEST(corrupt_metadata) {
        static const char *const merges[] = { "a b", "b c" };
        static const char *const bad_merge[] = { "a b", "ab" };
        static const char *const unknown_merge[] = { "a b", "a zz" };
        static const char *const bad_result[] = { "a b", "c a" };
        struct spec s;
        int32_t types[SPM_N];
        float scores[SPM_N];
        rbee_vocab *v = NULL;
        char err[256];

        s = spm_spec();
        s.n_scores = SPM_N - 1;
        expect_load_error(&s, -EBADMSG, "tokenizer.ggml.scores");

        s = spm_spec();
        s.n_types = 7;
        expect_load_error(&s, -EBADMSG, "tokenizer.ggml.token_type");

        s = spm_spec();
        s.scores = NULL;
        expect_load_error(&s, -EBADMSG, "tokenizer.ggml.scores is missing");

        s = spm_spec();
        s.bos = SPM_N;
        expect_load_error(&s, -EBADMSG, "bos_token_id");

        s = spm_spec();
        s.bos = -5;
        expect_load_error(&s, -EBADMSG, "bos_token_id");

        s = spm_spec();
        s.bos = 3000000000;
        expect_load_error(&s, -EBADMSG, "bos_token_id");

        s = spm_spec();
        s.model = "foo";
        expect_load_error(&s, -EOPNOTSUPP, "'foo'");

        s = spm_spec();
        s.model = NULL;
        expect_load_error(&s, -EBADMSG, "tokenizer.ggml.model");

        s = spm_spec();
        s.tokens = NULL;
        expect_load_error(&s, -EBADMSG, "tokenizer.ggml.tokens");

        s = spm_spec();
        memcpy(types, spm_types, sizeof(types));
        types[100] = 9;
        s.types = types;
        expect_load_error(&s, -EBADMSG, "unknown type 9");

        s = spm_spec();
        memcpy(types, spm_types, sizeof(types));
        types[260] = RBEE_TOKEN_BYTE;   /* "a" */
        s.types = types;
        expect_load_error(&s, -EBADMSG, "not <0xNN>");

        s = spm_spec();
        memcpy(scores, spm_scores, sizeof(scores));
        scores[5] = NAN;
        s.scores = scores;
        expect_load_error(&s, -EBADMSG, "NaN");

        s = bpe_spec(merges, ELEMENTSOF(merges));
        s.pre = "bar";
        expect_load_error(&s, -EOPNOTSUPP, "'bar'");

        s = bpe_spec(NULL, 0);
        expect_load_error(&s, -EBADMSG, "tokenizer.ggml.merges is missing");

        s = bpe_spec(bad_merge, ELEMENTSOF(bad_merge));
        expect_load_error(&s, -EBADMSG, "merges[1]");

        s = bpe_spec(unknown_merge, ELEMENTSOF(unknown_merge));
        expect_load_error(&s, -EBADMSG, "the right part is not a token");

        s = bpe_spec(bad_result, ELEMENTSOF(bad_result));
        expect_load_error(&s, -EBADMSG, "the result is not a token");

        /* 0xFFFFFFFF is "none", as some converters write it. */
        s = spm_spec();
        s.bos = UINT32_MAX;
        ASSERT_OK(load_spec(&s, &v, err, sizeof(err)));
        ASSERT_EQ(rbee_vocab_bos(v), -1);
        ASSERT_FALSE(rbee_vocab_add_bos(v));
        ASSERT_EQ(rbee_tokenize(v, "", 0, true, false, NULL, 0), 0);
        v = rbee_vocab_free(v);

        /* A padding id past the end is ignored, not fatal. */
        s = spm_spec();
        s.has_pad = true;
        s.pad = SPM_N;
        ASSERT_OK(load_spec(&s, &v, err, sizeof(err)));
        v = rbee_vocab_free(v);

        /* No pre-tokenizer key: GPT-2's. */
        s = bpe_spec(merges, ELEMENTSOF(merges));
        s.pre = NULL;
        ASSERT_OK(load_spec(&s, &v, err, sizeof(err)));
        v = rbee_vocab_free(v);

        ASSERT_TRUE(rbee_vocab_free(NULL) == NULL);
        ASSERT_ERR(rbee_vocab_load(NULL, &v, err, sizeof(err)), -EINVAL);
}

/* ---- unicode and pre-tokenizers ---- */

TEST(unicode_flags_and_utf8) {
        uint32_t cp = 0;
        uint8_t buf[4];

        ASSERT_EQ(rbee_unicode_flags('a'), RBEE_UC_LETTER);
        ASSERT_EQ(rbee_unicode_flags(0x00E9), RBEE_UC_LETTER);             /* é */
        ASSERT_EQ(rbee_unicode_flags(0x4E2D), RBEE_UC_LETTER);             /* 中 */
        ASSERT_EQ(rbee_unicode_flags('7'), RBEE_UC_NUMBER);
        ASSERT_EQ(rbee_unicode_flags(0x00BD), RBEE_UC_NUMBER);             /* ½ */
        ASSERT_EQ(rbee_unicode_flags('!'), RBEE_UC_PUNCT);
        ASSERT_EQ(rbee_unicode_flags('$'), RBEE_UC_SYMBOL);
        ASSERT_EQ(rbee_unicode_flags(0x0301), RBEE_UC_MARK);
        ASSERT_EQ(rbee_unicode_flags(' '), RBEE_UC_SEPARATOR | RBEE_UC_WHITESPACE);
        ASSERT_EQ(rbee_unicode_flags(0x3000), RBEE_UC_SEPARATOR | RBEE_UC_WHITESPACE);
        ASSERT_EQ(rbee_unicode_flags('\n'), RBEE_UC_OTHER | RBEE_UC_WHITESPACE);
        ASSERT_EQ(rbee_unicode_flags(0x85), RBEE_UC_OTHER | RBEE_UC_WHITESPACE);
        ASSERT_EQ(rbee_unicode_flags(0x1C), RBEE_UC_OTHER);                /* not White_Space */
        ASSERT_EQ(rbee_unicode_flags(0x200B), RBEE_UC_OTHER);              /* ZWSP is Cf */
        ASSERT_EQ(rbee_unicode_flags(0x1F600), RBEE_UC_SYMBOL);
        ASSERT_EQ(rbee_unicode_flags(0x10FFFF), RBEE_UC_OTHER);
        ASSERT_EQ(rbee_unicode_flags(0x110000), 0);

        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\xf0\x9f\x98\x80", 4, &cp), 4);
        ASSERT_EQ(cp, 0x1F600);
        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\xc3\xa9", 2, &cp), 2);
        ASSERT_EQ(cp, 0xE9);
        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\xc0\x80", 2, &cp), -1);          /* overlong */
        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\xe0\x80\x80", 3, &cp), -1);      /* overlong */
        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\xed\xa0\x80", 3, &cp), -1);      /* surrogate */
        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\xf4\x90\x80\x80", 4, &cp), -1);  /* > U+10FFFF */
        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\xf5", 1, &cp), -1);
        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\x80", 1, &cp), -1);
        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\xe2\x82", 2, &cp), 0);           /* incomplete */
        ASSERT_EQ(rbee_utf8_decode((const uint8_t *) "\xe2\x82" "A", 3, &cp), -2);
        ASSERT_EQ(rbee_utf8_next((const uint8_t *) "\xe2\x82", 2, &cp), 2);
        ASSERT_EQ(cp, UINT32_MAX);

        for (uint32_t c = 0; c <= RBEE_UNICODE_MAX; c += 0x7F) {
                size_t n;
                if (c >= 0xD800 && c <= 0xDFFF)
                        continue;
                n = rbee_utf8_encode(c, buf);
                ASSERT_EQ(rbee_utf8_decode(buf, n, &cp), (int) n);
                ASSERT_EQ(cp, c);
        }
}

struct pieces {
        char s[512];
        size_t n;
};

static int collect_piece(const char *p, size_t n, void *userdata) {
        struct pieces *c = userdata;

        ASSERT_TRUE(n > 0);
        ASSERT_TRUE(c->n + n + 2 < sizeof(c->s));
        if (c->n > 0)
                c->s[c->n++] = '|';
        memcpy(c->s + c->n, p, n);
        c->n += n;
        c->s[c->n] = 0;
        return 0;
}

static void expect_split(enum rbee_pretok kind, const char *in, const char *want) {
        struct pieces c = {};

        ASSERT_OK(rbee_pretokenize(kind, in, strlen(in), collect_piece, &c));
        ASSERT_STREQ(c.s, want);
}

static int stop_at_second(const char *p, size_t n, void *userdata) {
        int *k = userdata;
        return ++*k == 2 ? -ECANCELED : 0;
}

TEST(pretokenize_patterns) {
        enum rbee_pretok kind;
        bool ignore_merges;
        int k = 0;

        expect_split(RBEE_PRETOK_GPT2, "Hello world's  x\n\n 123abc", "Hello| world|'s| | x|\n\n| 123|abc");
        expect_split(RBEE_PRETOK_GPT2, "I'M fine!!  ", "I|'|M| fine|!!|  ");
        expect_split(RBEE_PRETOK_GPT2, "a\xff\xfe" "b", "a|\xff\xfe|b");
        expect_split(RBEE_PRETOK_GPT2, "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87", "caf\xc3\xa9| \xe4\xb8\xad\xe6\x96\x87");

        expect_split(RBEE_PRETOK_LLAMA3, "12345 I'M ok\r\n\r\nx", "123|45| I|'M| ok|\r\n\r\n|x");
        expect_split(RBEE_PRETOK_LLAMA3, "(normal) \tHi", "(normal|)| |\tHi");
        expect_split(RBEE_PRETOK_LLAMA3, " ...\n\nyes   ", " ...\n\n|yes|   ");
        expect_split(RBEE_PRETOK_QWEN2, "x12345", "x|1|2|3|4|5");
        expect_split(RBEE_PRETOK_DIGITS_GPT2, "ab 12 cd", "ab| |1|2| cd");

        ASSERT_ERR(rbee_pretokenize(RBEE_PRETOK_GPT2, "a b c", 5, stop_at_second, &k), -ECANCELED);

        ASSERT_OK(rbee_pretok_from_name("llama-bpe", &kind, &ignore_merges));
        ASSERT_EQ(kind, RBEE_PRETOK_LLAMA3);
        ASSERT_TRUE(ignore_merges);
        ASSERT_OK(rbee_pretok_from_name("smollm", &kind, &ignore_merges));
        ASSERT_EQ(kind, RBEE_PRETOK_DIGITS_GPT2);
        ASSERT_FALSE(ignore_merges);
        ASSERT_ERR(rbee_pretok_from_name("bar", &kind, &ignore_merges), -EOPNOTSUPP);
}

static uint64_t rng_next(uint64_t *s) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

/* Random strings of valid and broken UTF-8, spaces, and pieces of special
 * token texts: every byte comes back. */
static void check_random_round_trip(const char *rel, bool bpe) {
        static const char *const parts[] = {
                "a", "b", "Z", "the", " ", "  ", "\n", "\r\n", "\t", "0", "42", "'s", "'LL", "!", "...",
                "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\xff", "\xc3", "\xe2\x82",
                "\xed\xa0\x80", "<0x41>", "<s", "s>", "<|", "|>", "<unk>",
        };
        /* SPM cannot give back a U+2581 of the input (it reads as a space);
         * SPM also puts a space after a special token: BPE only. */
        static const char *const bpe_only[] = { "\xe2\x96\x81", "<|im_start|>", "<|endoftext|>", "<tool_call>", "</s>", "<s>" };
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = load_vocab(rel);
        uint64_t seed = 12345;

        for (int iter = 0; iter < 300; iter++) {
                _cleanup_(freep) int32_t *ids = NULL, *ids2 = NULL;
                _cleanup_(freep) char *back = NULL, *back2 = NULL;
                char s[512];
                size_t len = 0, n, n2, back_len, back2_len;
                int k = (int) (rng_next(&seed) % 24);

                for (int j = 0; j < k; j++) {
                        uint64_t r = rng_next(&seed);
                        const char *p = bpe && r % 16 == 0 ? bpe_only[(r >> 8) % ELEMENTSOF(bpe_only)]
                                                           : parts[(r >> 8) % ELEMENTSOF(parts)];
                        memcpy(s + len, p, strlen(p));
                        len += strlen(p);
                }
                s[len] = 0;

                ids = encode(v, s, len, false, false, &n);
                back = decode_pieces(v, ids, n, false, &back_len);
                if (back_len != len || memcmp(back, s, len) != 0)
                        FAIL("\"%s\" came back as \"%s\"", s, back);
                /* The stream gives valid UTF-8 whatever the input. */
                free(back);
                back = decode(v, ids, n, false, &back_len);
                ASSERT_TRUE(valid_utf8(back, back_len));

                if (!bpe)
                        continue;
                /* Special tokens parsed and rendered also round-trip. */
                ids2 = encode(v, s, len, false, true, &n2);
                back2 = decode_pieces(v, ids2, n2, true, &back2_len);
                if (back2_len != len || memcmp(back2, s, len) != 0)
                        FAIL("\"%s\" came back as \"%s\" with special tokens", s, back2);
        }
}

TEST(random_round_trip) {
        check_random_round_trip("tokenizer/ggml-vocab-llama-spm.gguf", false);
        check_random_round_trip("tokenizer/ggml-vocab-gpt-2.gguf", true);
        check_random_round_trip("tokenizer/ggml-vocab-qwen2.gguf", true);
}

/* ---- speed ---- */

/* About n bytes of word-like random text: ASCII and non-ASCII letters,
 * digits, punctuation, spaces and newlines. */
static char *random_text(size_t n, uint64_t seed, size_t *ret_len) {
        static const char *const alphabet[] = {
                "a", "e", "i", "o", "n", "s", "t", "r", "l", "h", "T", "W", "'",
                "\xc3\xa9", "\xc3\xbc", "\xe4\xb8\xad", "\xd0\xb4", "\xf0\x9f\x98\x80",
                "0", "7", ".", ",", "!", "-", "\t",
        };
        char *s = malloc(n + 16);
        size_t len = 0;

        ASSERT_NOT_NULL(s);
        while (len < n) {
                uint64_t r = rng_next(&seed);
                size_t word = 1 + r % 9;

                for (size_t i = 0; i < word && len < n; i++) {
                        const char *c = alphabet[rng_next(&seed) % ELEMENTSOF(alphabet)];
                        memcpy(s + len, c, strlen(c));
                        len += strlen(c);
                }
                s[len++] = (r >> 32) % 13 == 0 ? '\n' : ' ';
        }
        s[len] = 0;
        *ret_len = len;
        return s;
}

static void check_speed(const char *rel, bool round_trip) {
        _cleanup_(rbee_vocab_freep) rbee_vocab *v = NULL;
        _cleanup_(freep) char *text = NULL, *same = NULL, *back = NULL;
        _cleanup_(freep) int32_t *ids = NULL;
        size_t len, n, back_len;
        double t0, t_load, t_random, t_same;
        int r;

        t0 = now_s();
        v = load_vocab(rel);
        t_load = now_s() - t0;

        text = random_text(1 << 20, 0x9E3779B97F4A7C15ull, &len);
        t0 = now_s();
        ids = encode(v, text, len, false, false, &n);
        t_random = now_s() - t0;
        back = decode(v, ids, n, false, &back_len);
        if (round_trip) {
                ASSERT_EQ(back_len, len);
                ASSERT_EQ(memcmp(back, text, len), 0);
        }

        /* One megabyte without a break: a single piece to merge. */
        same = malloc(1 << 20);
        ASSERT_NOT_NULL(same);
        memset(same, 'a', 1 << 20);
        t0 = now_s();
        r = rbee_tokenize(v, same, 1 << 20, false, false, NULL, 0);
        t_same = now_s() - t0;
        ASSERT_GE(r, 1);

        printf("  %s: load %.1f ms, 1 MiB random text %.0f ms (%zu tokens), 1 MiB of 'a' %.0f ms (%d tokens)\n",
               rel, t_load * 1e3, t_random * 1e3, n, t_same * 1e3, r);
        /* Generous bounds: sanitizers slow everything down several times. */
        ASSERT_TRUE(t_load < 1.0);
        ASSERT_TRUE(t_random < 5.0);
        ASSERT_TRUE(t_same < 5.0);
}

TEST(speed_llama_spm) {
        check_speed("tokenizer/ggml-vocab-llama-spm.gguf", true);
}

TEST(speed_gpt_2) {
        check_speed("tokenizer/ggml-vocab-gpt-2.gguf", true);
}

TEST(speed_qwen2) {
        check_speed("tokenizer/ggml-vocab-qwen2.gguf", true);
}

TEST(speed_tinystories) {
        /* No byte tokens: what it has no piece for becomes <unk>. */
        check_speed("models/TinyStories-656K-F32.gguf", false);
}
