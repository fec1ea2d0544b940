/* SPDX-License-Identifier: MIT */
/* The forward pass in every supported type and architecture, checked against
 * the F32 forward of the same weights. Models come from rbee-mkmodel (same
 * seed, so the same underlying weights in every type) and, when present,
 * from ../shared (quantized by llama.cpp).
 *
 * The measure is the relative RMS error of the logits over the vocabulary,
 * ||l - l_f32|| / ||l_f32||, at the end of a prompt and after several decode
 * steps (the worst of them). Two checks per type:
 *
 * 1. Against the F32 model: how much the type's rounding of the weights moves
 *    the logits. Random-weight models amplify weight noise: here BF16
 *    (0.1% per weight) already moves the logits by 0.8%, and Q4_0 by 35-50%,
 *    while llama.cpp's own Q4_0 of the shared d64 model measures 13%. The
 *    bounds are 1.5x the measured figures, so a regression in a quantizer
 *    or a kernel that makes things worse shows; uncorrelated logits would be
 *    near 1.4.
 * 2. Exactness of the kernels: the same quantized weights through the
 *    quantized dot products (activations rounded to Q8_0/Q8_1/Q8_K) and
 *    through dequantization + BLAS on F32 activations must agree to within
 *    the activation rounding, amplified like the weight noise above
 *    (measured 2.6-4.2% for the quantized types, 0 for F16/BF16; bound 8%).
 *    A wrong block layout or a SIMD bug gives errors near 100%. */

#include <malloc.h>
#include <sys/wait.h>

#include "harness.h"
#include "macros.h"
#include "rbee-engine.h"

#define N_PROMPT 40 /* above RBEE_BLAS_MIN_BATCH: an F32 batch goes through BLAS */
#define N_STEPS 8

struct run {
        int32_t n_vocab;
        float *logits; /* [1 + N_STEPS][n_vocab] */
};

/* Process a fixed prompt in one batch (or token by token), then feed N_STEPS
 * fixed tokens, keeping every step's logits. */
static struct run run_model_mm(const char *path, int threads, bool one_by_one, uint32_t n_batch, enum rbee_matmul mm) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = NULL;
        struct rbee_context_params cp;
        struct run r;
        char err[512];
        int32_t toks[N_PROMPT + N_STEPS];

        int e = rbee_model_load(path, NULL, &m, err, sizeof(err));
        if (e < 0)
                FAIL("loading %s: %s", path, err);
        rbee_context_default_params(&cp);
        cp.n_ctx = 128;
        cp.n_threads = threads;
        cp.n_batch = n_batch;
        cp.matmul = mm;
        ASSERT_OK(rbee_context_new(m, &cp, &c));
        r.n_vocab = rbee_model_get_info(m)->n_vocab;
        r.logits = calloc((size_t) (1 + N_STEPS) * r.n_vocab, sizeof(float));
        ASSERT_NOT_NULL(r.logits);
        for (int i = 0; i < N_PROMPT + N_STEPS; i++)
                toks[i] = (int32_t) ((i * 7919u + 3) % (uint32_t) r.n_vocab);

        if (one_by_one)
                for (int i = 0; i < N_PROMPT; i++)
                        ASSERT_OK(rbee_decode(c, &toks[i], 1));
        else
                ASSERT_OK(rbee_decode(c, toks, N_PROMPT));
        memcpy(r.logits, rbee_get_logits(c), r.n_vocab * sizeof(float));
        for (int s = 0; s < N_STEPS; s++) {
                ASSERT_OK(rbee_decode(c, &toks[N_PROMPT + s], 1));
                memcpy(r.logits + (size_t) (1 + s) * r.n_vocab, rbee_get_logits(c), r.n_vocab * sizeof(float));
        }
        return r;
}

static struct run run_model(const char *path, int threads, bool one_by_one, uint32_t n_batch) {
        return run_model_mm(path, threads, one_by_one, n_batch, RBEE_MATMUL_AUTO);
}

/* Worst relative RMS error over the steps. */
static double rel_err(const struct run *a, const struct run *ref) {
        ASSERT_EQ(a->n_vocab, ref->n_vocab);
        return harness_logits_rel_err(a->logits, ref->logits, a->n_vocab, 1 + N_STEPS);
}

static void check_types(const char *shape_args, const char *name, const char *const *types, const double *bounds,
                        size_t n) {
        struct run ref = run_model(harness_mkmodel(shape_args, "F32", name), 2, false, 0);
        int bad = 0;

        for (size_t i = 0; i < n; i++) {
                struct run r = run_model(harness_mkmodel(shape_args, types[i], name), 2, false, 0);
                double e = rel_err(&r, &ref);
                printf("  %s %-7s logits rel. RMS error %.4f (bound %.3f)%s\n", name, types[i], e, bounds[i],
                       e <= bounds[i] ? "" : "  OVER");
                bad += !(e <= bounds[i]);
                free(r.logits);
        }
        if (bad)
                FAIL("%d types over their bound", bad);
}

/* 256 wide so that the K-quants are used rather than their fallbacks. */
#define LLAMA_ARGS "--shape tiny --dim 256 --ffn 512 --heads 4 --kv-heads 2 --layers 2 --vocab 512"
#define QWEN2_ARGS "--shape tiny-qwen2 --dim 256 --ffn 512 --heads 4 --kv-heads 2 --layers 2"
#define PHI3_ARGS "--shape tiny-phi3 --dim 256 --ffn 512 --heads 4 --kv-heads 4 --layers 2"

static const char *const all_types[] = { "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q5_1",
                                         "Q4_K_M", "Q4_0", "Q4_1" };
static const double all_bounds[] = { 0.005, 0.02, 0.06, 0.17, 0.26, 0.32, 0.28, 0.55, 0.80, 0.65 };

static void check_kernels(const char *shape_args, const char *name) {
        int bad = 0;

        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                const char *path = harness_mkmodel(shape_args, all_types[i], name);
                struct run a = run_model_mm(path, 2, false, 0, RBEE_MATMUL_BLAS);
                struct run b = run_model_mm(path, 2, true, 0, RBEE_MATMUL_QUANT);
                double e = rel_err(&b, &a);
                printf("  %s %-7s dot products vs dequantize+BLAS: %.4f (bound 0.08)%s\n", name, all_types[i], e,
                       e <= 0.08 ? "" : "  OVER");
                bad += !(e <= 0.08);
                free(a.logits);
                free(b.logits);
        }
        if (bad)
                FAIL("%d types over their bound", bad);
}

TEST_TIMEOUT(llama_kernels, 120) {
        check_kernels(LLAMA_ARGS, "llama");
}

TEST_TIMEOUT(qwen2_kernels, 120) {
        check_kernels(QWEN2_ARGS, "qwen2");
}

TEST_TIMEOUT(phi3_kernels, 120) {
        check_kernels(PHI3_ARGS, "phi3");
}

TEST_TIMEOUT(llama_types, 120) {
        check_types(LLAMA_ARGS, "llama", all_types, all_bounds, ELEMENTSOF(all_types));
}

TEST_TIMEOUT(qwen2_types, 120) {
        check_types(QWEN2_ARGS, "qwen2", all_types, all_bounds, ELEMENTSOF(all_types));
}

TEST_TIMEOUT(phi3_types, 120) {
        check_types(PHI3_ARGS, "phi3", all_types, all_bounds, ELEMENTSOF(all_types));
}

/* Files quantized by llama.cpp against their F32 original. */
TEST_TIMEOUT(shared_llama_types, 120) {
        static const char *const types[] = { "F16", "Q8_0", "Q6_K", "Q4_K_M", "Q4_0" };
        static const double bounds[] = { 0.01, 0.03, 0.05, 0.15, 0.20 };
        char rel[256];

        struct run ref = run_model(harness_shared("models/tiny-llama-d64-F32.gguf"), 2, false, 0);
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                snprintf(rel, sizeof(rel), "models/tiny-llama-d64-%s.gguf", types[i]);
                struct run r = run_model(harness_shared(rel), 2, false, 0);
                double e = rel_err(&r, &ref);
                printf("  tiny-llama-d64 %-7s rel. RMS error %.4f (bound %.3f)\n", types[i], e, bounds[i]);
                if (!(e <= bounds[i]))
                        FAIL("%s: error %.4f over bound %.3f", types[i], e, bounds[i]);
        }
}

TEST_TIMEOUT(shared_qwen2, 120) {
        struct run ref = run_model(harness_shared("models/tiny-qwen2-d64-F16.gguf"), 2, false, 0);
        struct run r = run_model(harness_shared("models/tiny-qwen2-d64-Q4_K_M.gguf"), 2, false, 0);
        double e = rel_err(&r, &ref);
        printf("  tiny-qwen2-d64 Q4_K_M vs F16 rel. RMS error %.4f\n", e);
        ASSERT_TRUE(e < 0.15);
}

/* Threads split rows, never change the arithmetic of one row. */
TEST_TIMEOUT(threads_agree, 120) {
        const char *path = harness_mkmodel(LLAMA_ARGS, "Q4_K_M", "llama");
        struct run a = run_model(path, 1, false, 0), b = run_model(path, 2, false, 0), c = run_model(path, 3, false, 0);

        ASSERT_TRUE(rel_err(&b, &a) < 1e-5);
        ASSERT_TRUE(rel_err(&c, &a) < 1e-5);
}

/* A prompt in one batch (BLAS on F32 activations) or token by token
 * (quantized dot products) gives the same logits, up to the Q8 rounding of
 * the activations. */
TEST_TIMEOUT(batch_vs_incremental, 120) {
        const char *f32 = harness_mkmodel(LLAMA_ARGS, "F32", "llama");
        struct run a = run_model(f32, 2, false, 0), b = run_model(f32, 2, true, 0);
        ASSERT_TRUE(rel_err(&b, &a) < 1e-4);
        struct run c = run_model(f32, 2, false, 5); /* odd batch size: 5 chunks */
        ASSERT_TRUE(rel_err(&c, &a) < 1e-4);

}

TEST(decode_errors) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = NULL;
        struct rbee_context_params cp;
        int32_t toks[20] = { 0 };

        ASSERT_OK(rbee_model_load(harness_mkmodel(LLAMA_ARGS, "Q8_0", "llama"), NULL, &m, NULL, 0));
        rbee_context_default_params(&cp);
        cp.n_ctx = 16;
        cp.n_threads = 2;
        ASSERT_OK(rbee_context_new(m, &cp, &c));
        toks[3] = 512;
        ASSERT_ERR(rbee_decode(c, toks, 4), -EINVAL);
        toks[3] = -1;
        ASSERT_ERR(rbee_decode(c, toks, 4), -EINVAL);
        ASSERT_EQ(rbee_context_pos(c), 0);
        toks[3] = 0;
        ASSERT_ERR(rbee_decode(c, toks, 17), -ENOSPC);
        ASSERT_ERR(rbee_decode(c, toks, 0), -EINVAL);
        ASSERT_OK(rbee_decode(c, toks, 16));
        ASSERT_ERR(rbee_decode(c, toks, 1), -ENOSPC);
        ASSERT_OK(rbee_context_truncate(c, 4));
        ASSERT_EQ(rbee_context_pos(c), 4);
        ASSERT_ERR(rbee_context_truncate(c, 5), -EINVAL);
        ASSERT_OK(rbee_decode(c, toks, 1));
}

/* forward() allocates nothing: the heap does not move across decode steps. */
TEST(decode_does_not_allocate) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = NULL;
        struct rbee_context_params cp;
        int32_t t = 5;

        ASSERT_OK(rbee_model_load(harness_mkmodel(LLAMA_ARGS, "Q4_K_M", "llama"), NULL, &m, NULL, 0));
        rbee_context_default_params(&cp);
        cp.n_ctx = 64;
        cp.n_threads = 1;
        ASSERT_OK(rbee_context_new(m, &cp, &c));
        ASSERT_OK(rbee_decode(c, &t, 1));
        struct mallinfo2 before = mallinfo2();
        for (int i = 0; i < 8; i++)
                ASSERT_OK(rbee_decode(c, &t, 1));
        struct mallinfo2 after = mallinfo2();
        ASSERT_EQ(after.uordblks, before.uordblks);
}

/* Unsupported models are refused with a message, never run. */
TEST(reject_bad_models) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        char err[512] = "";

        ASSERT_ERR(rbee_model_load("/nonexistent/model.gguf", NULL, &m, err, sizeof(err)), -ENOENT);
        ASSERT_CONTAINS(err, "/nonexistent/model.gguf");
        /* A vocabulary-only file has no weights. */
        int r = rbee_model_load(harness_shared("tokenizer/ggml-vocab-llama-spm.gguf"), NULL, &m, err, sizeof(err));
        ASSERT_TRUE(r < 0);
        printf("  vocab-only file: %s\n", err);
}
