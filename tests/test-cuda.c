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
 * Top-k on the device: generation that needs only the sampler's first
 * candidates (greedy, top_k without penalties) gets them selected on the
 * device. The selection is checked against a sort of the same logits (the
 * device's, fetched afterwards), and the sampler on the candidates against
 * the sampler on the logits: same token, same random stream. The golden
 * texts go through the device's argmax.
 *
 * Without CUDA in the build, or without a driver or device, every GPU test
 * skips saying which; the no-device test checks that asking for CUDA then
 * fails cleanly and the CPU path still works in the same process. */

#include <sys/wait.h>

#include "backend.h"
#include "context.h"
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
        ASSERT_EQ(a->n_vocab, ref->n_vocab);
        return harness_logits_rel_err(a->logits, ref->logits, a->n_vocab, 1 + a->n_steps);
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
        /* greedy needs one candidate: the last pass selected it on the device */
        const float *tl;
        const int32_t *ti;
        ASSERT_EQ(rbee_seq_top(ctx, 0, &tl, &ti), 1);
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

/* ------------------------------------------------------- top-k on the device */

struct cand {
        float l;
        int32_t id;
};

/* The sampler's candidate order (sampler.h), NaN as -inf. */
static int cand_cmp(const void *a, const void *b) {
        const struct cand *x = a, *y = b;

        if (x->l != y->l)
                return x->l > y->l ? -1 : 1;
        return x->id < y->id ? -1 : x->id > y->id;
}

/* The first k candidates of l[0, n) by a sort, as the device should give them. */
static void host_top(const float *l, int n, int k, float *top_l, int32_t *top_id) {
        struct cand *c = calloc(n, sizeof(*c));

        ASSERT_NOT_NULL(c);
        for (int i = 0; i < n; i++)
                c[i] = (struct cand) { isnan(l[i]) ? -INFINITY : l[i], i };
        qsort(c, n, sizeof(*c), cand_cmp);
        for (int i = 0; i < k; i++) {
                top_l[i] = c[i].l;
                top_id[i] = c[i].id;
        }
        free(c);
}

/* Sampler settings whose candidates suffice, and the draws compared for each. */
static const struct {
        float temperature;
        int32_t top_k;
        float top_p, min_p;
} top_settings[] = {
        { 0.0f, 40, 0.95f, 0.05f }, { 0.8f, 40, 0.95f, 0.05f }, { 1.0f, 1, 1.0f, 0.0f }, { 1.5f, 64, 0.5f, 0.0f },
        { 0.7f, 40, 0.0f, 0.0f },   { 1.0f, 2, 1.0f, 0.5f },    { 2.0f, 64, 1.0f, 0.0f }, { 1e-30f, 40, 0.9f, 0.0f },
};
#define DRAWS 6

/* Samplers of every setting in top_settings, fed the first candidates or
 * the logits, pick the same tokens; returns the draws compared. */
static int check_sampler_on_top(const float *l, int32_t n_vocab, const float *top_l, const int32_t *top_id, size_t n,
                                uint64_t seed) {
        int compared = 0;

        for (size_t j = 0; j < ELEMENTSOF(top_settings); j++) {
                struct rbee_sampler_params p;
                _cleanup_(rbee_sampler_freep) rbee_sampler *a = NULL, *b = NULL;

                rbee_sampler_default_params(&p);
                p.temperature = top_settings[j].temperature;
                p.top_k = top_settings[j].top_k;
                p.top_p = top_settings[j].top_p;
                p.min_p = top_settings[j].min_p;
                p.seed = seed + j;
                ASSERT_OK(rbee_sampler_new(&p, n_vocab, &a));
                ASSERT_OK(rbee_sampler_new(&p, n_vocab, &b));
                int32_t need = rbee_sampler_top_needed(a);
                if (need <= 0 || (size_t) need > n)
                        continue;
                for (int d = 0; d < DRAWS; d++) {
                        int32_t x = rbee_sampler_sample_top(a, top_l, top_id, n), y = rbee_sampler_sample(b, l);
                        if (x != y)
                                FAIL("setting %zu draw %d: %d from the candidates, %d from the logits", j, d, x, y);
                        compared++;
                }
        }
        return compared;
}

/* No GPU needed: what the device path relies on. The first candidates are
 * enough exactly when rbee_sampler_top_needed() says so, and give the token
 * (and random stream) of the full logits, on logits full of ties, NaN,
 * infinities and signed zeros. */
TEST(sampler_top_matches_full) {
        enum { V = 3000 };
        static float l[V];
        float top_l[RBEE_SAMPLER_TOP_MAX];
        int32_t top_id[RBEE_SAMPLER_TOP_MAX];
        struct rbee_sampler_params p;
        uint64_t x = 88172645463325252ull;
        int compared = 0;

        rbee_sampler_default_params(&p);
        p.temperature = 0;
        {
                _cleanup_(rbee_sampler_freep) rbee_sampler *s = NULL;
                ASSERT_OK(rbee_sampler_new(&p, V, &s));
                ASSERT_EQ(rbee_sampler_top_needed(s), 1);
        }
        rbee_sampler_default_params(&p);
        {
                _cleanup_(rbee_sampler_freep) rbee_sampler *s = NULL;
                ASSERT_OK(rbee_sampler_new(&p, V, &s));
                ASSERT_EQ(rbee_sampler_top_needed(s), 40);
                ASSERT_ERR(rbee_sampler_sample_top(s, top_l, top_id, 39), -EINVAL);
        }
        p.repeat_penalty = 1.1f; /* penalties need every logit */
        {
                _cleanup_(rbee_sampler_freep) rbee_sampler *s = NULL;
                ASSERT_OK(rbee_sampler_new(&p, V, &s));
                ASSERT_EQ(rbee_sampler_top_needed(s), 0);
        }
        rbee_sampler_default_params(&p);
        p.top_k = RBEE_SAMPLER_TOP_MAX + 1;
        {
                _cleanup_(rbee_sampler_freep) rbee_sampler *s = NULL;
                ASSERT_OK(rbee_sampler_new(&p, V, &s));
                ASSERT_EQ(rbee_sampler_top_needed(s), 0);
        }
        p.top_k = 0;
        {
                _cleanup_(rbee_sampler_freep) rbee_sampler *s = NULL;
                ASSERT_OK(rbee_sampler_new(&p, V, &s));
                ASSERT_EQ(rbee_sampler_top_needed(s), 0);
                p.top_p = 0; /* only the top token can win */
                _cleanup_(rbee_sampler_freep) rbee_sampler *s0 = NULL;
                ASSERT_OK(rbee_sampler_new(&p, V, &s0));
                ASSERT_EQ(rbee_sampler_top_needed(s0), 1);
        }

        for (int round = 0; round < 60; round++) {
                for (int i = 0; i < V; i++) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        /* a coarse grid: many ties; a wide or a narrow spread */
                        l[i] = (float) (int) (x % 97) * (round % 2 ? 0.125f : 0.5f) - 20.0f;
                        if (round % 3 == 1 && x % 53 == 0)
                                l[i] = NAN;
                        if (round % 3 == 1 && x % 59 == 0)
                                l[i] = -INFINITY;
                        if (round % 5 == 2 && x % 61 == 0)
                                l[i] = x % 2 ? -0.0f : 0.0f;
                }
                if (round == 10)
                        l[1234] = INFINITY;
                if (round == 11)
                        for (int i = 0; i < V; i++)
                                l[i] = i % 7 == 0 ? 3.0f : -INFINITY; /* fewer finite than top_k */
                if (round == 12)
                        for (int i = 0; i < V; i++)
                                l[i] = NAN;
                host_top(l, V, RBEE_SAMPLER_TOP_MAX, top_l, top_id);
                compared += check_sampler_on_top(l, V, top_l, top_id, RBEE_SAMPLER_TOP_MAX, round * 17);
        }
        printf("  %d draws from the first candidates, all as from the logits\n", compared);
}

/* The selection kernels on made-up logits (ties, NaN, +-inf, +-0; 1 to 152k tokens). */
TEST_TIMEOUT(topk_kernel, 120) {
        char err[512] = "";

        require_device();
        int r = rbee_cuda_check_topk(0, err, sizeof(err));
        if (r < 0)
                FAIL("device top-k differs from a sort on the host: %s (%d)", err, r);
}

/* One model through a context: steps asking for 1, 40 and 64 candidates.
 * The candidates must be the first ones of the logits (fetched from the
 * device afterwards, and equal to those a full-logits pass returns on a
 * second context), and samplers on them must pick as on the logits. */
static void check_device_top(const char *label, const char *path) {
        static const uint32_t ks[] = { 1, 40, RBEE_SAMPLER_TOP_MAX };
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = NULL, *full = NULL;
        struct rbee_context_params cp;
        float want_l[RBEE_SAMPLER_TOP_MAX], got_l[RBEE_SAMPLER_TOP_MAX];
        int32_t want_id[RBEE_SAMPLER_TOP_MAX], got_id[RBEE_SAMPLER_TOP_MAX];
        char err[512];
        int compared = 0;

        if (rbee_model_load(path, NULL, &m, err, sizeof(err)) < 0)
                FAIL("loading %s: %s", path, err);
        rbee_context_default_params(&cp);
        cp.n_ctx = 128;
        cp.backend = RBEE_BACKEND_CUDA;
        ASSERT_OK(rbee_context_new(m, &cp, &c));
        ASSERT_OK(rbee_context_new(m, &cp, &full));
        const int32_t V = rbee_model_get_info(m)->n_vocab;
        int32_t toks[N_PROMPT + N_STEPS];
        for (int i = 0; i < N_PROMPT + N_STEPS; i++)
                toks[i] = (int32_t) ((i * 7919u + 3) % (uint32_t) V);

        for (int step = 0; step <= N_STEPS; step++) {
                const uint32_t k = MIN(ks[step % ELEMENTSOF(ks)], (uint32_t) V);
                const int32_t *t = step == 0 ? toks : &toks[N_PROMPT + step - 1];
                const size_t n_t = step == 0 ? N_PROMPT : 1; /* the prompt's batch, then the graph */
                const float *tl;
                const int32_t *ti;

                rbee_seq_want_top(c, 0, k);
                ASSERT_OK(rbee_decode(c, t, n_t));
                ASSERT_OK(rbee_decode(full, t, n_t));
                ASSERT_EQ(rbee_seq_top(c, 0, &tl, &ti), k);
                memcpy(got_l, tl, k * sizeof(float));
                memcpy(got_id, ti, k * sizeof(int32_t));
                ASSERT_EQ(rbee_seq_top(full, 0, &tl, &ti), 0);
                const float *l = rbee_get_logits(c); /* copied from the device now */
                ASSERT_NOT_NULL(l);
                ASSERT_TRUE(memcmp(l, rbee_get_logits(full), V * sizeof(float)) == 0);
                host_top(l, V, (int) k, want_l, want_id);
                for (uint32_t i = 0; i < k; i++)
                        if (got_id[i] != want_id[i] || !(got_l[i] == want_l[i]))
                                FAIL("%s step %d k %u: candidate %u is (%g, %d), want (%g, %d)", label, step, k, i,
                                     got_l[i], got_id[i], want_l[i], want_id[i]);
                compared += check_sampler_on_top(l, V, got_l, got_id, k, 100 + step);
        }
        printf("  %-22s %d steps: candidates as sorted, %d draws as from the logits\n", label, N_STEPS + 1, compared);
}

TEST_TIMEOUT(device_topk_matches_cpu, 600) {
        require_device();
        check_device_top("llama Q4_0", harness_mkmodel(LLAMA_ARGS, "Q4_0", "llama"));
        check_device_top("phi3 Q4_K_M", harness_mkmodel(PHI3_ARGS, "Q4_K_M", "phi3"));
        /* Qwen2's 151936 tokens: three selection stages */
        check_device_top("qwen2 Q8_0 vocab 151936",
                         harness_mkmodel(QWEN2_ARGS " --vocab 151936", "Q8_0", "qwen2-bigvocab"));
        check_device_top("tiny-llama-d64 Q6_K", harness_shared("models/tiny-llama-d64-Q6_K.gguf"));
        check_device_top("stories260K", harness_shared("models/stories260K.gguf"));
}

/* calls[0]: calls so far, calls[1]: the total reported, calls[2]: cancel at this layer (0: never). */
static bool progress_cb(unsigned done, unsigned total, void *userdata) {
        unsigned *calls = userdata;

        ASSERT_EQ(done, calls[0] + 1);
        calls[0]++;
        calls[1] = total;
        return calls[2] == 0 || done < calls[2];
}

/* Generation with top_k sampling: the tokens rbee_generate_tokens() picks
 * from the device's candidates are those a sampler with the same seed picks
 * from the full logits, step by step on a second context. */
static int collect_ids(int32_t token, const char *text, size_t len, void *userdata) {
        struct collect *c = userdata;

        if (token >= 0 && c->n_ids < ELEMENTSOF(c->ids))
                c->ids[c->n_ids++] = token;
        return 0;
}

TEST_TIMEOUT(generate_topk_same_tokens, 300) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        _cleanup_(rbee_context_freep) rbee_context *c = NULL, *ref = NULL;
        _cleanup_(rbee_sampler_freep) rbee_sampler *smp = NULL;
        struct rbee_context_params cp;
        struct rbee_generate_params gp;
        struct rbee_generate_result res;
        struct collect *got = calloc(1, sizeof(*got));
        const int32_t prompt[] = { 1, 400, 300, 200, 100 };
        char err[512];

        require_device();
        ASSERT_NOT_NULL(got);
        ASSERT_OK(rbee_model_load(harness_shared("models/stories260K.gguf"), NULL, &m, err, sizeof(err)));
        rbee_context_default_params(&cp);
        cp.n_ctx = 256;
        cp.backend = RBEE_BACKEND_CUDA;
        ASSERT_OK(rbee_context_new(m, &cp, &c));
        ASSERT_OK(rbee_context_new(m, &cp, &ref));
        rbee_generate_default_params(&gp);
        gp.sampling.temperature = 1.0f;
        gp.sampling.top_k = 40;
        gp.sampling.seed = 4242;
        gp.max_tokens = 100;
        gp.ignore_eos = true;
        gp.on_token = collect_ids;
        gp.userdata = got;
        ASSERT_OK(rbee_generate_tokens(c, prompt, ELEMENTSOF(prompt), &gp, &res));
        const float *tl;
        const int32_t *ti;
        ASSERT_EQ(rbee_seq_top(c, 0, &tl, &ti), 40);
        ASSERT_EQ(got->n_ids, 100);

        ASSERT_OK(rbee_sampler_new(&gp.sampling, rbee_model_get_info(m)->n_vocab, &smp));
        ASSERT_OK(rbee_decode(ref, prompt, ELEMENTSOF(prompt)));
        for (size_t i = 0; i < got->n_ids; i++) {
                int32_t t = rbee_sampler_sample(smp, rbee_get_logits(ref));
                if (t != got->ids[i])
                        FAIL("token %zu: %d from the device's candidates, %d from the logits", i, got->ids[i], t);
                rbee_sampler_accept(smp, t);
                ASSERT_OK(rbee_decode(ref, &t, 1));
        }
        free(got);
}

/* The upload reports each layer, only the context that uploads does, and a
 * false return cancels it with nothing left behind. */
TEST_TIMEOUT(upload_progress, 300) {
        const char *path;
        _cleanup_(rbee_model_freep) rbee_model *m = NULL, *m2 = NULL;
        rbee_context *a = NULL, *b = NULL;
        struct rbee_context_params cp;
        unsigned calls[3] = { 0 };
        char err[512];

        require_device();
        path = harness_mkmodel(LLAMA_ARGS, "Q4_0", "llama");
        ASSERT_OK(rbee_model_load(path, NULL, &m, err, sizeof(err)));
        const unsigned n_layer = rbee_model_get_info(m)->n_layer;
        rbee_context_default_params(&cp);
        cp.n_ctx = 64;
        cp.backend = RBEE_BACKEND_CUDA;
        cp.progress = progress_cb;
        cp.progress_userdata = calls;
        ASSERT_OK(rbee_context_new(m, &cp, &a));
        ASSERT_EQ(calls[0], n_layer);
        ASSERT_EQ(calls[1], n_layer);
        ASSERT_OK(rbee_context_new(m, &cp, &b)); /* shares the weights: nothing to upload */
        ASSERT_EQ(calls[0], n_layer);
        rbee_context_free(b);
        rbee_context_free(a);

        ASSERT_OK(rbee_model_load(path, NULL, &m2, err, sizeof(err)));
        calls[0] = 0;
        calls[2] = 1;
        ASSERT_ERR(rbee_context_new(m2, &cp, &a), -ECANCELED);
        ASSERT_TRUE(a == NULL);
        ASSERT_EQ(calls[0], 1);
        calls[0] = 0;
        calls[2] = 0;
        ASSERT_OK(rbee_context_new(m2, &cp, &a)); /* uploads again, whole */
        ASSERT_EQ(calls[0], n_layer);
        const int32_t toks[] = { 1, 2, 3 };
        ASSERT_OK(rbee_decode(a, toks, 3));
        ASSERT_TRUE(isfinite(rbee_get_logits(a)[0]));
        rbee_context_free(a);
}
