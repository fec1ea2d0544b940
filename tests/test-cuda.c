/* SPDX-License-Identifier: MIT */
/* The CUDA backend against the CPU backend, and against the golden texts.
 *
 * Parity measure: the relative RMS error of the logits over the vocabulary
 * (as in test-forward.c), worst over the end of a prompt and the decode
 * steps after it. The reference is the CPU with RBEE_MATMUL_BLAS: the same
 * quantized weights, dequantized exactly, against F32 activations, which
 * is what the GPU kernels compute too. What remains is the F16 KV cache, F16
 * activations in the cuBLAS prompt path, and summation order. The kernels
 * run on the CPU under engine/cuda/emu (an emulator: the same kernel code
 * and host code, a fake runtime) measure 0.03-0.13% for every type here;
 * PARITY_BOUND leaves room for the GPU's FMA contraction and reduction
 * order, and is not yet confirmed on a GPU. Each type runs three ways: the
 * prompt in one batch (cuBLAS), in batches of 6 (multi-token mat-vec, 4 + 2)
 * and token by token (the captured decode graph and split-K attention).
 *
 * Without CUDA in the build, or without a driver or device, every GPU test
 * skips saying which; the no-device test checks that asking for CUDA then
 * fails cleanly and the CPU path still works in the same process. */

#include <sys/wait.h>

#include "backend.h"
#include "harness.h"
#include "macros.h"
#include "rbee-engine.h"

#define N_PROMPT 40
#define N_STEPS 8
#define PARITY_BOUND 0.01

static void require_device(void) {
        int n = rbee_cuda_device_count();

        if (n == -EOPNOTSUPP)
                SKIP("the engine was built without CUDA (CUDA=0)");
        if (n < 0)
                SKIP("no usable CUDA driver (libcuda.so) on this machine");
        if (n == 0)
                SKIP("no CUDA device on this machine");
}

struct run {
        int32_t n_vocab;
        float *logits; /* [1 + n_steps][n_vocab] */
        int n_steps;
};

struct how {
        enum rbee_backend backend;
        enum rbee_matmul matmul;
        uint32_t n_batch;       /* 0: default (512) */
        bool one_by_one;
        uint32_t n_ctx;         /* 0: 128 */
        int n_prompt;           /* 0: N_PROMPT */
};

static struct run run_ctx(rbee_context *c, const rbee_model *m, const struct how *h) {
        const int n_prompt = h->n_prompt ? h->n_prompt : N_PROMPT;
        struct run r = { .n_vocab = rbee_model_get_info(m)->n_vocab, .n_steps = N_STEPS };
        int32_t *toks = calloc(n_prompt + N_STEPS, sizeof(int32_t));

        ASSERT_NOT_NULL(toks);
        r.logits = calloc((size_t) (1 + N_STEPS) * r.n_vocab, sizeof(float));
        ASSERT_NOT_NULL(r.logits);
        for (int i = 0; i < n_prompt + N_STEPS; i++)
                toks[i] = (int32_t) ((i * 7919u + 3) % (uint32_t) r.n_vocab);
        if (h->one_by_one)
                for (int i = 0; i < n_prompt; i++)
                        ASSERT_OK(rbee_decode(c, &toks[i], 1));
        else
                ASSERT_OK(rbee_decode(c, toks, n_prompt));
        memcpy(r.logits, rbee_get_logits(c), r.n_vocab * sizeof(float));
        for (int s = 0; s < N_STEPS; s++) {
                ASSERT_OK(rbee_decode(c, &toks[n_prompt + s], 1));
                memcpy(r.logits + (size_t) (1 + s) * r.n_vocab, rbee_get_logits(c), r.n_vocab * sizeof(float));
        }
        free(toks);
        return r;
}

static struct run run_model(const char *path, const struct how *h) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = NULL;
        struct rbee_context_params cp;
        char err[512];

        if (rbee_model_load(path, NULL, &m, err, sizeof(err)) < 0)
                FAIL("loading %s: %s", path, err);
        rbee_context_default_params(&cp);
        cp.n_ctx = h->n_ctx ? h->n_ctx : 128;
        cp.n_threads = 2;
        cp.n_batch = h->n_batch;
        cp.matmul = h->matmul;
        cp.backend = h->backend;
        cp.device = 0;
        ASSERT_OK(rbee_context_new(m, &cp, &c));
        return run_ctx(c, m, h);
}

static double rel_err(const struct run *a, const struct run *ref) {
        double worst = 0;

        ASSERT_EQ(a->n_vocab, ref->n_vocab);
        for (int s = 0; s <= a->n_steps; s++) {
                const float *x = a->logits + (size_t) s * a->n_vocab, *y = ref->logits + (size_t) s * a->n_vocab;
                double num = 0, den = 0;
                for (int i = 0; i < a->n_vocab; i++) {
                        ASSERT_TRUE(isfinite(x[i]));
                        num += (x[i] - y[i]) * (double) (x[i] - y[i]);
                        den += (double) y[i] * y[i];
                }
                ASSERT_TRUE(den > 0);
                worst = MAX(worst, sqrt(num / den));
        }
        return worst;
}

/* GPU three ways against the CPU reference; returns how many are over the bound. */
static int check_file(const char *label, const char *path, uint32_t n_ctx, int n_prompt) {
        const struct how ref_how = { RBEE_BACKEND_CPU, RBEE_MATMUL_BLAS, 0, false, n_ctx, n_prompt };
        const struct how gpu[] = {
                { RBEE_BACKEND_CUDA, RBEE_MATMUL_AUTO, 0, false, n_ctx, n_prompt },
                { RBEE_BACKEND_CUDA, RBEE_MATMUL_AUTO, 6, false, n_ctx, n_prompt },
                { RBEE_BACKEND_CUDA, RBEE_MATMUL_AUTO, 0, true, n_ctx, n_prompt },
        };
        static const char *const names[] = { "batch", "by 6", "by 1" };
        struct run ref = run_model(path, &ref_how);
        int bad = 0;

        for (size_t i = 0; i < ELEMENTSOF(gpu); i++) {
                struct run r = run_model(path, &gpu[i]);
                double e = rel_err(&r, &ref);
                printf("  %-24s %-6s GPU vs CPU logits rel. RMS error %.5f (bound %.3f)%s\n", label, names[i], e,
                       PARITY_BOUND, e <= PARITY_BOUND ? "" : "  OVER");
                bad += !(e <= PARITY_BOUND);
                free(r.logits);
        }
        free(ref.logits);
        return bad;
}

#define LLAMA_ARGS "--shape tiny --dim 256 --ffn 512 --heads 4 --kv-heads 2 --layers 2 --vocab 512"
#define QWEN2_ARGS "--shape tiny-qwen2 --dim 256 --ffn 512 --heads 4 --kv-heads 2 --layers 2"
#define PHI3_ARGS "--shape tiny-phi3 --dim 256 --ffn 512 --heads 4 --kv-heads 4 --layers 2"

static const char *const all_types[] = { "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q5_1",
                                         "Q4_K_M", "Q4_0", "Q4_1" };

static void check_arch(const char *shape_args, const char *name) {
        int bad = 0;
        char label[64];

        require_device();
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++) {
                snprintf(label, sizeof(label), "%s %s", name, all_types[i]);
                bad += check_file(label, harness_mkmodel(shape_args, all_types[i], name), 0, 0);
        }
        if (bad)
                FAIL("%d runs over the bound", bad);
}

/* The device decoders of every type, run on the host: no GPU needed. */
TEST(decoders_match_cpu) {
        char err[256] = "";
        int r = rbee_cuda_check_decoders(err, sizeof(err));

        if (r == -EOPNOTSUPP)
                SKIP("the engine was built without CUDA (CUDA=0)");
        if (r < 0)
                FAIL("device decoders differ from the CPU: %s", err);
}

TEST(device_count) {
        int n = rbee_cuda_device_count();
        struct rbee_gpu_info info;

        printf("  rbee_cuda_device_count() = %d\n", n);
        ASSERT_TRUE(n >= 0 || n == -ENODEV || n == -EOPNOTSUPP);
        for (int i = 0; i < n; i++) {
                ASSERT_OK(rbee_cuda_device_info(i, &info));
                printf("  device %d: %s, compute %d.%d, %.0f MiB\n", i, info.name, info.cc_major, info.cc_minor,
                       info.total_bytes / 1048576.0);
                ASSERT_TRUE(info.total_bytes > 0);
        }
        ASSERT_TRUE(rbee_cuda_device_info(n > 0 ? n : 0, &info) < 0);
}

/* On a machine without a GPU (or a build without CUDA) asking for CUDA fails
 * with an error, and the CPU backend keeps working in the same process. */
TEST(no_device_fails_cleanly) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        rbee_context *c = NULL;
        struct rbee_context_params cp;
        char err[512];
        int n = rbee_cuda_device_count();

        if (n > 0)
                SKIP("a CUDA device is present (the parity tests cover it)");
        ASSERT_OK(rbee_model_load(harness_mkmodel(LLAMA_ARGS, "Q4_0", "llama"), NULL, &m, err, sizeof(err)));
        rbee_context_default_params(&cp);
        cp.n_ctx = 64;
        cp.n_threads = 1;
        cp.backend = RBEE_BACKEND_CUDA;
        int r = rbee_context_new(m, &cp, &c);
        ASSERT_TRUE(r == -ENODEV || r == -EOPNOTSUPP);
        ASSERT_TRUE(c == NULL);

        cp.backend = RBEE_BACKEND_CPU;
        ASSERT_OK(rbee_context_new(m, &cp, &c));
        const int32_t toks[] = { 1, 2, 3 };
        ASSERT_OK(rbee_decode(c, toks, 3));
        ASSERT_TRUE(isfinite(rbee_get_logits(c)[0]));
        rbee_context_free(c);
}

TEST(bad_params) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        rbee_context *c = NULL;
        struct rbee_context_params cp;
        char err[512];

        ASSERT_OK(rbee_model_load(harness_mkmodel(LLAMA_ARGS, "Q4_0", "llama"), NULL, &m, err, sizeof(err)));
        rbee_context_default_params(&cp);
        cp.n_ctx = 64;
        cp.backend = (enum rbee_backend) 7;
        ASSERT_EQ(rbee_context_new(m, &cp, &c), -EINVAL);
        int n = rbee_cuda_device_count();
        if (n < 0)
                return;
        cp.backend = RBEE_BACKEND_CUDA;
        cp.device = n; /* one past the last */
        ASSERT_EQ(rbee_context_new(m, &cp, &c), -ENODEV);
        cp.device = -1;
        ASSERT_EQ(rbee_context_new(m, &cp, &c), -ENODEV);
}

TEST_TIMEOUT(llama_parity, 600) {
        check_arch(LLAMA_ARGS, "llama");
}

TEST_TIMEOUT(qwen2_parity, 600) {
        check_arch(QWEN2_ARGS, "qwen2");
}

TEST_TIMEOUT(phi3_parity, 600) {
        check_arch(PHI3_ARGS, "phi3");
}

/* 700 positions: a prompt in three batches, then decode steps whose
 * attention spans three key splits. */
TEST_TIMEOUT(long_context, 600) {
        require_device();
        int bad = check_file("llama Q4_0 n_ctx 1024", harness_mkmodel(LLAMA_ARGS, "Q4_0", "llama"), 1024, 700);
        bad += check_file("qwen2 Q8_0 n_ctx 1024", harness_mkmodel(QWEN2_ARGS, "Q8_0", "qwen2"), 1024, 700);
        if (bad)
                FAIL("%d runs over the bound", bad);
}

/* Files quantized by llama.cpp. */
TEST_TIMEOUT(shared_models, 600) {
        static const char *const files[] = {
                "models/tiny-llama-d64-F32.gguf",  "models/tiny-llama-d64-F16.gguf",    "models/tiny-llama-d64-Q8_0.gguf",
                "models/tiny-llama-d64-Q6_K.gguf", "models/tiny-llama-d64-Q4_K_M.gguf", "models/tiny-llama-d64-Q4_0.gguf",
                "models/tiny-qwen2-d64-F16.gguf",  "models/tiny-qwen2-d64-Q4_K_M.gguf", "models/TinyStories-656K-Q8_0.gguf",
                "models/stories260K.gguf",
        };
        int bad = 0;

        require_device();
        for (size_t i = 0; i < ELEMENTSOF(files); i++)
                bad += check_file(files[i] + 7, harness_shared(files[i]), 0, 0);
        if (bad)
                FAIL("%d runs over the bound", bad);
}

/* Contexts share the uploaded weights: two contexts give the same logits,
 * and freeing one leaves the other (and the weights) working. */
TEST_TIMEOUT(shared_weights, 300) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        rbee_context *a = NULL, *b = NULL;
        struct rbee_context_params cp;
        const struct how h = { RBEE_BACKEND_CUDA, RBEE_MATMUL_AUTO, 0, false, 128, 0 };
        char err[512];

        require_device();
        ASSERT_OK(rbee_model_load(harness_mkmodel(LLAMA_ARGS, "Q4_K_M", "llama"), NULL, &m, err, sizeof(err)));
        rbee_context_default_params(&cp);
        cp.n_ctx = 128;
        cp.backend = RBEE_BACKEND_CUDA;
        ASSERT_OK(rbee_context_new(m, &cp, &a));
        ASSERT_OK(rbee_context_new(m, &cp, &b));
        struct run ra = run_ctx(a, m, &h);
        rbee_context_free(a);
        struct run rb = run_ctx(b, m, &h);
        ASSERT_TRUE(memcmp(ra.logits, rb.logits, (size_t) (1 + N_STEPS) * ra.n_vocab * sizeof(float)) == 0);
        rbee_context_free(b);
        free(ra.logits);
        free(rb.logits);
}

/* ---------------------------------------------------------- golden texts */

struct collect {
        char text[16384];
        size_t len;
        int32_t ids[1024];
        size_t n_ids;
};

static int collect_token(int32_t token, const char *text, size_t len, void *userdata) {
        struct collect *c = userdata;

        ASSERT_TRUE(c->len + len < sizeof(c->text));
        memcpy(c->text + c->len, text, len);
        c->len += len;
        c->text[c->len] = 0;
        if (token >= 0 && c->n_ids < ELEMENTSOF(c->ids))
                c->ids[c->n_ids++] = token;
        return 0;
}

/* Greedy on the GPU; positions counts BOS and prompt (llama2.c's -n) when n_gen < 0. */
static struct collect *gpu_greedy(const char *model_path, const char *prompt, int positions, int n_gen) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *ctx = NULL;
        struct rbee_context_params cp;
        struct rbee_generate_params gp;
        struct rbee_generate_result res;
        struct collect *c = calloc(1, sizeof(*c));
        int32_t toks[512];
        char err[256];

        ASSERT_NOT_NULL(c);
        ASSERT_OK(rbee_model_load(model_path, NULL, &m, err, sizeof(err)));
        rbee_context_default_params(&cp);
        cp.n_ctx = 512;
        cp.backend = RBEE_BACKEND_CUDA;
        ASSERT_OK(rbee_context_new(m, &cp, &ctx));
        const rbee_vocab *v = rbee_model_get_vocab(m);
        int n = rbee_tokenize(v, prompt, strlen(prompt), true, false, toks, ELEMENTSOF(toks));
        ASSERT_OK(n);
        rbee_generate_default_params(&gp);
        gp.sampling.temperature = 0;
        gp.max_tokens = n_gen >= 0 ? n_gen : positions - n + 1;
        gp.on_token = collect_token;
        gp.userdata = c;
        collect_token(-1, prompt, strlen(prompt), c);
        ASSERT_OK(rbee_generate_tokens(ctx, toks, n, &gp, &res));
        return c;
}

/* The golden files end with a newline no token produced (see test-golden.c). */
static void check_golden(const struct collect *c, const char *golden_rel) {
        char *want = harness_read_file(harness_shared(golden_rel), NULL);
        size_t wl = strlen(want);

        ASSERT_TRUE(wl > 0 && want[wl - 1] == '\n');
        want[wl - 1] = 0;
        if (strcmp(c->text, want) != 0) {
                size_t i = 0;
                while (c->text[i] && c->text[i] == want[i])
                        i++;
                FAIL("GPU output differs from %s at byte %zu:\n  got:  \"%.80s\"\n  want: \"%.80s\"", golden_rel, i,
                     c->text + i, want + i);
        }
        free(want);
}

TEST_TIMEOUT(golden_stories260k, 300) {
        require_device();
        const char *model = harness_shared("models/stories260K.gguf");
        struct collect *c = gpu_greedy(model, "", 256, -1);
        check_golden(c, "golden/stories260K.greedy.noprompt.n256.txt");
        free(c);
        c = gpu_greedy(model, "Once upon a time", 256, -1);
        check_golden(c, "golden/stories260K.greedy.once-upon-a-time.n256.txt");
        free(c);
        c = gpu_greedy(model, "Lily and Tom went to the park", 256, -1);
        check_golden(c, "golden/stories260K.greedy.lily-and-tom.n256.txt");
        free(c);
}

TEST_TIMEOUT(golden_tinystories656k, 300) {
        require_device();
        struct collect *c = gpu_greedy(harness_shared("models/TinyStories-656K-F32.gguf"), "Once upon a time", 0, 48);
        int32_t want[64];
        size_t n = harness_read_ids(harness_shared("golden/TinyStories-656K.greedy.once-upon-a-time.n48.ids.txt"), want,
                            ELEMENTSOF(want));

        check_golden(c, "golden/TinyStories-656K.greedy.once-upon-a-time.n48.txt");
        ASSERT_EQ(c->n_ids, n);
        for (size_t i = 0; i < n; i++)
                if (c->ids[i] != want[i])
                        FAIL("token %zu: got %d, want %d", i, c->ids[i], want[i]);
        free(c);
}
