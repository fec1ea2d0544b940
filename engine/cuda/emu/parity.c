/* SPDX-License-Identifier: MIT */
/* parity MODEL batch|by6|by1 N_PROMPT N_STEPS [N_CTX]: the worst relative
 * RMS error of the CUDA backend's logits against the CPU (RBEE_MATMUL_BLAS). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv) {
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
        return 0;
}
