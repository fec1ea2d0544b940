/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "context.h"
#include "log.h"
#include "macros.h"

/* OpenBLAS runs inside our own threads, one tile per thread. */
void openblas_set_num_threads(int n);

void rbee_context_default_params(struct rbee_context_params *p) {
        *p = (struct rbee_context_params) { 0 };
}

static void *alloc_floats(size_t n, size_t *total) {
        size_t bytes;

        if (MUL_OVERFLOW(n, sizeof(float), &bytes) || ADD_OVERFLOW(*total, bytes, total))
                return NULL;
        /* 64-byte alignment keeps SIMD loads within cache lines. */
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
                return NULL;
        memset(p, 0, bytes);
        return p;
}

int rbee_context_new(rbee_model *m, const struct rbee_context_params *p, rbee_context **ret) {
        _cleanup_(rbee_context_freep) rbee_context *c = NULL;
        struct rbee_context_params defaults;
        const struct rbee_model_info *h;
        size_t total = 0;
        int r;

        if (!m || !ret)
                return -EINVAL;
        if (!p) {
                rbee_context_default_params(&defaults);
                p = &defaults;
        }
        h = &m->info;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->model = m;
        c->n_ctx = p->n_ctx ? p->n_ctx : MIN(h->n_ctx_train, 4096u);
        c->n_batch = p->n_batch ? p->n_batch : 512;
        if (c->n_ctx > 1u << 20 || c->n_batch > 1u << 16)
                return -EINVAL;
        c->n_batch = MIN(c->n_batch, c->n_ctx);
        c->n_threads = p->n_threads;
        if ((unsigned) p->matmul > RBEE_MATMUL_QUANT)
                return -EINVAL;
        c->matmul = p->matmul;
        if (c->n_threads <= 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                c->n_threads = n > 0 ? (int) MIN(n, 64L) : 1;
        }
        if (c->n_threads > 1024)
                return -EINVAL;

        const size_t B = c->n_batch, D = h->n_embd, F = h->n_ff;
        const size_t Q = m->q_dim, KV = m->kv_dim;
        size_t kv = (size_t) h->n_layer * c->n_ctx * KV;
        size_t maxw = MAX(MAX(D, F), Q);

        if (!(c->k_cache = alloc_floats(kv, &total)) || !(c->v_cache = alloc_floats(kv, &total)) ||
            !(c->x = alloc_floats(B * D, &total)) || !(c->xb = alloc_floats(B * D, &total)) ||
            !(c->xb2 = alloc_floats(B * Q, &total)) || !(c->q = alloc_floats(B * Q, &total)) ||
            !(c->hb = alloc_floats(B * 2 * F, &total)) || !(c->hb2 = alloc_floats(B * F, &total)) ||
            !(c->att = alloc_floats((size_t) c->n_threads * c->n_ctx, &total)) ||
            !(c->rope = alloc_floats(B * m->n_rot, &total)) ||
            !(c->inv_freq = alloc_floats(m->n_rot / 2, &total)) ||
            !(c->logits = alloc_floats(h->n_vocab, &total)))
                return -ENOMEM;
        if (m->layers[0].fused_qkv && !(c->qkv = alloc_floats(B * (Q + 2 * KV), &total)))
                return -ENOMEM;
        c->deq_stride = RBEE_DEQ_ROWS * maxw;
        if (!(c->deq = alloc_floats((size_t) c->n_threads * c->deq_stride, &total)))
                return -ENOMEM;
        static const enum rbee_type act_types[RBEE_ACT_SLOTS] = { RBEE_TYPE_Q8_0, RBEE_TYPE_Q8_1, RBEE_TYPE_Q8_K };
        for (int s = 0; s < RBEE_ACT_SLOTS; s++) {
                uint64_t rs = 0;
                /* Widths that are not a multiple of the block never meet this type. */
                size_t w = maxw - maxw % rbee_type_traits(act_types[s])->block_size;
                (void) rbee_type_row_size(act_types[s], w, &rs);
                c->act_row[s] = rs;
                if (!(c->act[s] = alloc_floats((B * rs + 3) / 4 + 16, &total)))
                        return -ENOMEM;
        }
        c->history = malloc_multiply(c->n_ctx, sizeof(int32_t));
        if (!c->history)
                return -ENOMEM;

        /* Frequencies as llama2.c and llama.cpp compute them, divided by the
         * model's per-dimension factors (Llama 3.1, Phi-3) when present. */
        for (uint32_t i = 0; i < m->n_rot / 2; i++) {
                c->inv_freq[i] = 1.0f / powf(h->rope_theta, (float) (2 * i) / (float) m->n_rot);
                if (m->rope_factors)
                        c->inv_freq[i] /= m->rope_factors[i];
        }

        openblas_set_num_threads(1);
        r = rbee_pool_new(c->n_threads, &c->pool);
        if (r < 0)
                return r;

        log_info("context: %u tokens, batch %u, %d threads, %.1f MiB of buffers (KV cache %.1f MiB)",
                 c->n_ctx, c->n_batch, c->n_threads, total / 1048576.0, 2.0 * kv * sizeof(float) / 1048576.0);
        *ret = TAKE_PTR(c);
        return 0;
}

rbee_context *rbee_context_free(rbee_context *c) {
        if (!c)
                return NULL;
        rbee_pool_free(c->pool);
        free(c->k_cache);
        free(c->v_cache);
        free(c->x);
        free(c->xb);
        free(c->xb2);
        free(c->q);
        free(c->qkv);
        free(c->hb);
        free(c->hb2);
        free(c->att);
        free(c->rope);
        free(c->inv_freq);
        free(c->logits);
        for (int s = 0; s < RBEE_ACT_SLOTS; s++)
                free(c->act[s]);
        free(c->deq);
        free(c->history);
        free(c);
        return NULL;
}

uint32_t rbee_context_n_ctx(const rbee_context *c) {
        return c->n_ctx;
}

uint32_t rbee_context_pos(const rbee_context *c) {
        return c->pos;
}

const rbee_model *rbee_context_model(const rbee_context *c) {
        return c->model;
}

int rbee_context_truncate(rbee_context *c, uint32_t pos) {
        if (pos > c->pos)
                return -EINVAL;
        c->pos = pos;
        return 0;
}

int rbee_decode(rbee_context *c, const int32_t *tokens, size_t n) {
        const int32_t n_vocab = c->model->info.n_vocab;

        if (!c || !tokens || n == 0)
                return -EINVAL;
        if (n > c->n_ctx - c->pos)
                return -ENOSPC;
        for (size_t i = 0; i < n; i++)
                if (tokens[i] < 0 || tokens[i] >= n_vocab)
                        return -EINVAL;

        while (n > 0) {
                uint32_t k = (uint32_t) MIN(n, (size_t) c->n_batch);
                c->tokens = tokens;
                c->n_tokens = k;
                rbee_forward(c);
                memcpy(c->history + c->pos, tokens, k * sizeof(int32_t));
                c->pos += k;
                tokens += k;
                n -= k;
        }
        return 0;
}

const float *rbee_get_logits(const rbee_context *c) {
        return c->logits;
}
