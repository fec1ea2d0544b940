/* SPDX-License-Identifier: MIT */
/* parity MODEL batch|by6|by1 N_PROMPT N_STEPS [N_CTX]: the worst relative
 * RMS error of the CUDA backend's logits against the CPU (RBEE_MATMUL_BLAS),
 * then the device's top-k candidates against a sort of the same logits and
 * the sampler on them against the sampler on the logits.
 * parity --topk: the selection kernels on made-up logits (rbee_cuda_check_topk()).
 * parity --progress MODEL: upload progress, shared weights, cancelling.
 * parity --golden MODEL GOLDEN_TXT PROMPT POSITIONS: greedy text through the
 * device's argmax against a golden file (test-cuda's golden tests);
 * POSITIONS counts BOS and prompt as llama2.c's -n, or -N asks for N tokens. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend.h"
#include "context.h"
#include "rbee-engine.h"

static float *run(const char *path, int backend, int mm, unsigned n_batch, int by1, int n_prompt, int n_steps, unsigned n_ctx, int *nv) {
        rbee_model *m; rbee_context *c; char err[512];
        struct rbee_context_params cp;
        if (rbee_model_load(path, NULL, &m, err, sizeof(err)) < 0) { fprintf(stderr, "%s\n", err); exit(1); }
        rbee_context_default_params(&cp);
        cp.n_ctx = n_ctx; cp.n_threads = 1; cp.n_batch = n_batch; cp.matmul = mm; cp.backend = backend;
        int r = rbee_context_new(m, &cp, &c);
        if (r < 0) { fprintf(stderr, "context: %d\n", r); exit(1); }
        int V = rbee_model_get_info(m)->n_vocab; *nv = V;
        float *out = calloc((size_t) (1 + n_steps) * V, 4);
        int32_t *t = calloc(n_prompt + n_steps, 4);
        for (int i = 0; i < n_prompt + n_steps; i++) t[i] = (int32_t) ((i * 7919u + 3) % (unsigned) V);
        if (by1) { for (int i = 0; i < n_prompt; i++) if (rbee_decode(c, &t[i], 1) < 0) exit(2); }
        else if (rbee_decode(c, t, n_prompt) < 0) exit(2);
        memcpy(out, rbee_get_logits(c), V * 4);
        for (int s = 0; s < n_steps; s++) { if (rbee_decode(c, &t[n_prompt + s], 1) < 0) exit(2); memcpy(out + (size_t)(1 + s) * V, rbee_get_logits(c), V * 4); }
        rbee_context_free(c); rbee_model_free(m);
        return out;
}

struct cand { float l; int32_t id; };
static int cand_cmp(const void *a, const void *b) {
        const struct cand *x = a, *y = b;
        if (x->l != y->l) return x->l > y->l ? -1 : 1;
        return x->id < y->id ? -1 : x->id > y->id;
}

/* Steps of one token asking for k = 1, 40, 64 in turn: the candidates must be
 * the first k of a sort of the logits fetched afterwards, and samplers fed
 * either must pick the same tokens. Returns the number of mismatches. */
static int check_top(const char *path, int n_prompt, int n_steps) {
        static const struct { float temp; int32_t top_k; float top_p, min_p; } sp[] = {
                { 0, 40, 0.95f, 0.05f }, { 0.8f, 40, 0.95f, 0.05f }, { 1.0f, 1, 1, 0 },
                { 1.5f, 64, 0.5f, 0 }, { 0.7f, 40, 0, 0 }, { 1.0f, 2, 1, 0.5f },
        };
        static const uint32_t ks[] = { 1, 40, 64 };
        rbee_model *m; rbee_context *c; char err[512];
        struct rbee_context_params cp;
        int bad = 0;
        if (rbee_model_load(path, NULL, &m, err, sizeof(err)) < 0) { fprintf(stderr, "%s\n", err); exit(1); }
        rbee_context_default_params(&cp);
        cp.n_ctx = 128; cp.n_threads = 1; cp.backend = RBEE_BACKEND_CUDA;
        if (rbee_context_new(m, &cp, &c) < 0) exit(1);
        int V = rbee_model_get_info(m)->n_vocab;
        struct cand *ref = calloc(V, sizeof(*ref));
        int32_t *t = calloc(n_prompt + n_steps, 4);
        for (int i = 0; i < n_prompt + n_steps; i++) t[i] = (int32_t) ((i * 7919u + 3) % (unsigned) V);
        if (rbee_decode(c, t, n_prompt) < 0) exit(2);
        for (int s = 0; s < n_steps; s++) {
                uint32_t k = ks[s % 3] < (uint32_t) V ? ks[s % 3] : (uint32_t) V;
                const float *tl; const int32_t *ti;
                rbee_seq_want_top(c, 0, k);
                if (rbee_decode(c, &t[n_prompt + s], 1) < 0) exit(2);
                size_t n = rbee_seq_top(c, 0, &tl, &ti);
                float tl_copy[RBEE_SAMPLER_TOP_MAX]; int32_t ti_copy[RBEE_SAMPLER_TOP_MAX];
                memcpy(tl_copy, tl, n * 4); memcpy(ti_copy, ti, n * 4);
                const float *l = rbee_get_logits(c); /* fetched from the device now */
                if (n != k || !l) { printf("step %d: %zu candidates for k %u\n", s, n, k); bad++; continue; }
                for (int i = 0; i < V; i++) ref[i] = (struct cand) { isnan(l[i]) ? -INFINITY : l[i], i };
                qsort(ref, V, sizeof(*ref), cand_cmp);
                for (size_t i = 0; i < n; i++)
                        if (ti_copy[i] != ref[i].id || !(tl_copy[i] == ref[i].l)) {
                                printf("step %d k %u: candidate %zu (%g, %d) want (%g, %d)\n", s, k, i, tl_copy[i], ti_copy[i], ref[i].l, ref[i].id);
                                bad++;
                                break;
                        }
                for (size_t j = 0; j < sizeof(sp) / sizeof(sp[0]); j++) {
                        struct rbee_sampler_params p;
                        rbee_sampler *a, *b;
                        rbee_sampler_default_params(&p);
                        p.temperature = sp[j].temp; p.top_k = sp[j].top_k; p.top_p = sp[j].top_p; p.min_p = sp[j].min_p;
                        p.seed = 1000 + s;
                        if (rbee_sampler_new(&p, V, &a) < 0 || rbee_sampler_new(&p, V, &b) < 0) exit(3);
                        int32_t need = rbee_sampler_top_needed(a);
                        if (need > 0 && (uint32_t) need <= n) {
                                for (int r = 0; r < 4; r++) {
                                        int32_t x = rbee_sampler_sample_top(a, tl_copy, ti_copy, n), y = rbee_sampler_sample(b, l);
                                        if (x != y) { printf("step %d sampler %zu draw %d: top %d, full %d\n", s, j, r, x, y); bad++; }
                                }
                        }
                        rbee_sampler_free(a); rbee_sampler_free(b);
                }
        }
        printf("%s: top-k over %d steps: %s\n", path, n_steps, bad ? "MISMATCH" : "same as the logits");
        free(ref); free(t);
        rbee_context_free(c); rbee_model_free(m);
        return bad;
}

struct text { char buf[16384]; size_t len; };
static int collect(int32_t token, const char *text, size_t len, void *userdata) {
        struct text *t = userdata;
        if (t->len + len >= sizeof(t->buf)) return 1;
        memcpy(t->buf + t->len, text, len); t->len += len; t->buf[t->len] = 0;
        return 0;
}

/* Greedy on the device (argmax selected there) against a golden file, which
 * ends with a newline no token produced; positions counts BOS and prompt. */
static int golden(const char *path, const char *golden_path, const char *prompt, int positions) {
        rbee_model *m; rbee_context *c; char err[512];
        struct rbee_context_params cp;
        struct rbee_generate_params gp;
        struct rbee_generate_result res;
        static struct text t;
        static char want[16384];
        int32_t toks[512];
        FILE *f = fopen(golden_path, "r");
        size_t wl = f ? fread(want, 1, sizeof(want) - 1, f) : 0;
        if (f) fclose(f);
        if (wl == 0 || want[wl - 1] != '\n') { fprintf(stderr, "cannot read %s\n", golden_path); exit(1); }
        want[wl - 1] = 0;
        if (rbee_model_load(path, NULL, &m, err, sizeof(err)) < 0) { fprintf(stderr, "%s\n", err); exit(1); }
        rbee_context_default_params(&cp);
        cp.n_ctx = 512; cp.n_threads = 1; cp.backend = RBEE_BACKEND_CUDA;
        if (rbee_context_new(m, &cp, &c) < 0) exit(1);
        int n = rbee_tokenize(rbee_model_get_vocab(m), prompt, strlen(prompt), true, false, toks, 512);
        if (n <= 0) exit(1);
        rbee_generate_default_params(&gp);
        gp.sampling.temperature = 0;
        gp.max_tokens = positions < 0 ? -positions : positions - n + 1;
        gp.on_token = collect;
        gp.userdata = &t;
        collect(-1, prompt, strlen(prompt), &t);
        if (rbee_generate_tokens(c, toks, n, &gp, &res) < 0) exit(2);
        int same = strcmp(t.buf, want) == 0;
        printf("%s \"%s\": %u tokens, %s\n", golden_path, prompt, res.n_generated, same ? "byte-exact" : "DIFFERS");
        if (!same) printf("  got:  %s\n  want: %s\n", t.buf, want);
        rbee_context_free(c); rbee_model_free(m);
        return !same;
}

/* calls[0]: calls so far, calls[1]: cancel at this layer (0: never). */
static bool on_progress(unsigned done, unsigned total, void *userdata) {
        unsigned *calls = userdata;
        if (done != calls[0] + 1) { printf("progress: %u after %u calls\n", done, calls[0]); exit(4); }
        calls[0]++;
        return calls[1] == 0 || done < calls[1];
}

/* The upload reports each layer, a second context on the device reports
 * nothing (it shares the weights), and cancelling leaves nothing behind. */
static int progress(const char *path) {
        rbee_model *m, *m2; rbee_context *a = NULL, *b = NULL; char err[512];
        struct rbee_context_params cp;
        unsigned calls[2] = { 0, 0 };
        int bad = 0;
        if (rbee_model_load(path, NULL, &m, err, sizeof(err)) < 0 || rbee_model_load(path, NULL, &m2, err, sizeof(err)) < 0) exit(1);
        unsigned n_layer = rbee_model_get_info(m)->n_layer;
        rbee_context_default_params(&cp);
        cp.n_ctx = 64; cp.n_threads = 1; cp.backend = RBEE_BACKEND_CUDA;
        cp.progress = on_progress; cp.progress_userdata = calls;
        bad += rbee_context_new(m, &cp, &a) < 0 || calls[0] != n_layer;
        bad += rbee_context_new(m, &cp, &b) < 0 || calls[0] != n_layer;
        rbee_context_free(b); rbee_context_free(a); a = NULL;
        calls[0] = 0; calls[1] = 1;
        bad += rbee_context_new(m2, &cp, &a) != -ECANCELED || a || calls[0] != 1;
        calls[0] = 0; calls[1] = 0;
        bad += rbee_context_new(m2, &cp, &a) < 0 || calls[0] != n_layer;
        const int32_t t[] = { 1, 2, 3 };
        bad += rbee_decode(a, t, 3) < 0 || !isfinite(rbee_get_logits(a)[0]);
        rbee_context_free(a); rbee_model_free(m); rbee_model_free(m2);
        printf("%s: upload progress over %u layers, sharing and cancelling: %s\n", path, n_layer, bad ? "FAILED" : "ok");
        return bad != 0;
}

int main(int argc, char **argv) {
        if (argc >= 2 && !strcmp(argv[1], "--topk")) {
                char err[512] = "";
                int r = rbee_cuda_check_topk(0, err, sizeof(err));
                printf("top-k selection against a host sort: %s %s\n", r < 0 ? "FAILED" : "ok", err);
                return r < 0;
        }
        if (argc >= 3 && !strcmp(argv[1], "--progress"))
                return progress(argv[2]);
        if (argc >= 6 && !strcmp(argv[1], "--golden"))
                return golden(argv[2], argv[3], argv[4], atoi(argv[5]));
        const char *path = argv[1], *mode = argv[2];
        int n_prompt = atoi(argv[3]), n_steps = atoi(argv[4]); unsigned n_ctx = argc > 5 ? atoi(argv[5]) : 128;
        int V;
        float *ref = run(path, RBEE_BACKEND_CPU, RBEE_MATMUL_BLAS, 0, 0, n_prompt, n_steps, n_ctx, &V);
        float *g = run(path, RBEE_BACKEND_CUDA, 0, !strcmp(mode, "by6") ? 6 : 0, !strcmp(mode, "by1"), n_prompt, n_steps, n_ctx, &V);
        double worst = 0;
        for (int s = 0; s <= n_steps; s++) {
                double num = 0, den = 0;
                for (int i = 0; i < V; i++) { double d = g[s * V + i] - ref[s * V + i]; if (!isfinite(g[s*V+i])) { printf("non-finite at step %d\n", s); return 1; } num += d * d; den += (double) ref[s * V + i] * ref[s * V + i]; }
                double e = sqrt(num / den); if (e > worst) worst = e;
                if (getenv("VERBOSE")) printf("  step %d err %.6f\n", s, e);
        }
        printf("%s %s: worst rel err %.6f\n", path, mode, worst);
        return check_top(path, n_prompt, n_steps > 3 ? n_steps : 3) != 0;
}
