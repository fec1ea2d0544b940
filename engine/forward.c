/* SPDX-License-Identifier: MIT */
/* The transformer forward pass for Llama-family models (Llama, Mistral,
 * Qwen2, Phi-3). All threads run the whole pass; each step is divided among
 * them and a barrier separates steps whose inputs another thread wrote. */

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "attention.h"
#include "context.h"
#include "macros.h"
#include "vecf.h"

static int act_slot(enum rbee_type t) {
        switch (t) {
        case RBEE_TYPE_Q8_0:
                return 0;
        case RBEE_TYPE_Q8_1:
                return 1;
        case RBEE_TYPE_Q8_K:
                return 2;
        default:
                return -1; /* dotted with the F32 activations directly */
        }
}

static unsigned act_mask(const struct rbee_weight *w) {
        int s = act_slot(w->ops->vec_dot_type);
        return s < 0 ? 0 : 1u << s;
}

static bool use_blas(const rbee_context *c, const struct rbee_weight *w, uint32_t B) {
        switch (c->matmul) {
        case RBEE_MATMUL_BLAS:
                return true;
        case RBEE_MATMUL_QUANT:
                return false;
        default:
                return B >= RBEE_BLAS_MIN_BATCH &&
                       (w->type == RBEE_TYPE_F32 || w->type == RBEE_TYPE_F16 || w->type == RBEE_TYPE_BF16);
        }
}

/* Convert the B rows of x (width K, stride ldx) to every dot type in mask. */
static void act_quantize(rbee_context *c, int ith, int nth, const float *x, uint32_t B, int64_t K,
                         int64_t ldx, unsigned mask) {
        if (c->matmul == RBEE_MATMUL_BLAS)
                return;
        for (int s = 0; s < RBEE_ACT_SLOTS; s++) {
                if (!(mask & (1u << s)))
                        continue;
                static const enum rbee_type types[] = { RBEE_TYPE_Q8_0, RBEE_TYPE_Q8_1, RBEE_TYPE_Q8_K };
                const struct rbee_quant_ops *ops = rbee_quant_ops(types[s]);
                uint64_t rs = 0;
                (void) rbee_type_row_size(types[s], K, &rs);
                long b0, b1;
                rbee_split(B, ith, nth, 1, &b0, &b1);
                for (long b = b0; b < b1; b++)
                        ops->from_float(x + b * ldx, (uint8_t *) c->act[s] + b * rs, K);
        }
}

/* y[b][r] = W[r] . x[b] for the rows r of W this thread owns; y has stride
 * ldy. act_quantize() must have run on the same x (and a barrier passed). */
static void matmul(rbee_context *c, int ith, int nth, const struct rbee_weight *w, const float *x,
                   int64_t ldx, uint32_t B, float *y, int64_t ldy) {
        const int64_t K = w->ne0;
        long r0, r1;

        if (use_blas(c, w, B)) {
                float *deq = c->deq + (size_t) ith * c->deq_stride;
                rbee_split(w->ne1, ith, nth, RBEE_DEQ_ROWS, &r0, &r1);
                for (long r = r0; r < r1; r += RBEE_DEQ_ROWS) {
                        long n = MIN(RBEE_DEQ_ROWS, r1 - r);
                        const float *wf;
                        if (w->type == RBEE_TYPE_F32)
                                wf = (const float *) (w->data + r * w->row_size);
                        else {
                                for (long i = 0; i < n; i++)
                                        w->ops->to_float(w->data + (r + i) * w->row_size, deq + i * K, K);
                                wf = deq;
                        }
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n, K, 1.0f, x, ldx,
                                    wf, K, 0.0f, y + r, ldy);
                }
                return;
        }

        int s = act_slot(w->ops->vec_dot_type);
        const uint8_t *a;
        size_t ars;
        if (s < 0) {
                a = (const uint8_t *) x;
                ars = ldx * sizeof(float);
        } else {
                uint64_t rs = 0;
                (void) rbee_type_row_size(w->ops->vec_dot_type, K, &rs);
                a = c->act[s];
                ars = rs;
        }
        /* Tiles of rows x tokens small enough that both the weight rows and
         * the activation rows of a tile stay in L2 while it is computed: a
         * long prompt otherwise streams every activation row from L3 (or
         * RAM) once per weight row. Within a tile, groups of four rows take
         * the 4x4 kernel for four tokens at a time and the four-row kernel
         * for each token left over (all of generation); every kernel gives
         * vec_dot's bits, so how a product is tiled never changes it. */
        const struct rbee_quant_ops *ops = w->ops;
        const size_t wrs = w->row_size;
        const long row_tile = 64, tok_tile = 32;
        rbee_split(w->ne1, ith, nth, 8, &r0, &r1);
        for (long rt = r0; rt < r1; rt += row_tile) {
                long re = MIN(rt + row_tile, r1);
                for (uint32_t bt = 0; bt < B; bt += tok_tile) {
                        uint32_t be = MIN(bt + tok_tile, B);
                        bool quads = ops->vec_dot4x4 && be - bt >= 4;
                        long r = rt;
                        if (quads || ops->vec_dot4r)
                                for (; r + 4 <= re; r += 4) {
                                        const uint8_t *rows = w->data + r * wrs;
                                        uint32_t b = bt;
                                        if (quads)
                                                for (; b + 4 <= be; b += 4) {
                                                        float o[16];
                                                        ops->vec_dot4x4(K, rows, wrs, a + b * ars, ars, o);
                                                        for (int k = 0; k < 4; k++)
                                                                memcpy(y + (b + k) * ldy + r, o + 4 * k, 4 * sizeof(float));
                                                }
                                        for (; b < be; b++) {
                                                if (ops->vec_dot4r) {
                                                        ops->vec_dot4r(K, rows, wrs, a + b * ars, y + b * ldy + r);
                                                        continue;
                                                }
                                                for (int i = 0; i < 4; i++)
                                                        y[b * ldy + r + i] = ops->vec_dot(K, rows + i * wrs, a + b * ars);
                                        }
                                }
                        for (; r < re; r++) {
                                const uint8_t *row = w->data + r * wrs;
                                uint32_t b = bt;
                                if (ops->vec_dot4)
                                        for (; b + 4 <= be; b += 4) {
                                                float o[4];
                                                ops->vec_dot4(K, row, a + b * ars, ars, o);
                                                for (int k = 0; k < 4; k++)
                                                        y[(b + k) * ldy + r] = o[k];
                                        }
                                for (; b < be; b++)
                                        y[b * ldy + r] = ops->vec_dot(K, row, a + b * ars);
                        }
                }
        }
}

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
        float ss = rbee_vec_sumsq_f32(x, n) / n + eps;
        float scale = 1.0f / sqrtf(ss);

        for (int i = 0; i < n; i++)
                out[i] = x[i] * scale * w[i];
}

static void rmsnorm_rows(rbee_context *c, int ith, int nth, float *out, const float *x, const float *w,
                         uint32_t B) {
        const int n = c->model->info.n_embd;
        long b0, b1;

        rbee_split(B, ith, nth, 1, &b0, &b1);
        for (long b = b0; b < b1; b++)
                rmsnorm(out + b * n, x + b * n, w, n, c->model->info.norm_eps);
}

static void add_rows(rbee_context *c, int ith, int nth, float *x, const float *d, uint32_t B) {
        const long n = (long) B * c->model->info.n_embd;
        long i0, i1;

        rbee_split(n, ith, nth, 16, &i0, &i1);
        for (long i = i0; i < i1; i++)
                x[i] += d[i];
}

static void add_bias(float *y, int64_t ldy, const float *bias, int n, uint32_t B, int ith, int nth) {
        long b0, b1;

        if (!bias)
                return;
        rbee_split(B, ith, nth, 1, &b0, &b1);
        for (long b = b0; b < b1; b++)
                for (int i = 0; i < n; i++)
                        y[b * ldy + i] += bias[i];
}

static void rope_table(rbee_context *c, int ith, int nth) {
        const rbee_model *m = c->model;
        const uint32_t half = m->n_rot / 2;
        long b0, b1;

        rbee_split(c->n_tokens, ith, nth, 1, &b0, &b1);
        for (long b = b0; b < b1; b++) {
                float p = (float) c->tok_pos[b] * m->rope_freq_scale;
                float *cs = c->rope + b * m->n_rot;
                for (uint32_t i = 0; i < half; i++) {
                        float a = p * c->inv_freq[i];
                        cs[2 * i] = cosf(a) * m->attn_factor;
                        cs[2 * i + 1] = sinf(a) * m->attn_factor;
                }
        }
}

static void rope_apply(const rbee_model *m, float *v, const float *cs) {
        const uint32_t half = m->n_rot / 2;

        if (m->rope_type == RBEE_ROPE_NORM)
                for (uint32_t i = 0; i < half; i++) {
                        float x0 = v[2 * i], x1 = v[2 * i + 1];
                        v[2 * i] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
                        v[2 * i + 1] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
                }
        else
                for (uint32_t i = 0; i < half; i++) {
                        float x0 = v[i], x1 = v[i + half];
                        v[i] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
                        v[i + half] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
                }
}

/* Rotate q and the new keys, and write the keys and values of each token to
 * its sequence's cache at its position. */
static void rope_rows(rbee_context *c, int ith, int nth, uint32_t layer, float *q, int64_t ldq, float *k,
                      const float *v, int64_t ldk) {
        const rbee_model *m = c->model;
        const uint32_t hd = m->info.head_dim, nh = m->info.n_head, nkv = m->info.n_head_kv;
        const long total = (long) c->n_tokens * (nh + nkv);
        long i0, i1;

        rbee_split(total, ith, nth, 1, &i0, &i1);
        for (long i = i0; i < i1; i++) {
                long b = i / (nh + nkv), h = i % (nh + nkv);
                const float *cs = c->rope + b * m->n_rot;
                if (h < nh) {
                        rope_apply(m, q + b * ldq + h * hd, cs);
                        continue;
                }
                float *kh = k + b * ldk + (h - nh) * hd;
                size_t at = ((((size_t) c->tok_seq[b] * m->info.n_layer + layer) * nkv + (h - nh)) * c->n_ctx +
                             c->tok_pos[b]) * hd;
                const float *vh = v + b * ldk + (h - nh) * hd;
                rope_apply(m, kh, cs);
                if (c->kv_f16) {
                        c->kv_ops->from_float(kh, (uint16_t *) c->k_cache + at, hd);
                        c->kv_ops->from_float(vh, (uint16_t *) c->v_cache + at, hd);
                } else {
                        memcpy((float *) c->k_cache + at, kh, hd * sizeof(float));
                        memcpy((float *) c->v_cache + at, vh, hd * sizeof(float));
                }
        }
}

/* Each work item is one token's kv head and some of the query heads that
 * share it: all of them when that gives every thread work, else the group
 * is split (a head's result is the same either way). */
static void attention(rbee_context *c, int ith, int nth, uint32_t layer, const float *q, int64_t ldq,
                      float *out) {
        const rbee_model *m = c->model;
        const uint32_t hd = m->info.head_dim, nkv = m->info.n_head_kv;
        const uint32_t group = m->info.n_head / nkv;
        const float scale = 1.0f / sqrtf((float) hd);
        float *att = c->att + (size_t) ith * group * c->n_ctx;
        uint32_t parts = 1;

        while (parts < group && group % (2 * parts) == 0 && (long) c->n_tokens * nkv * parts < 2L * nth)
                parts *= 2;
        const uint32_t per = group / parts;
        const long total = (long) c->n_tokens * nkv * parts;
        /* Strided, not in ranges: a later token of a prompt attends to more
         * keys, so ranges would leave the first threads idle. */
        for (long i = ith; i < total; i += nth) {
                uint32_t b = i / (nkv * parts), kvh = i / parts % nkv, h = kvh * group + i % parts * per;
                size_t at = (((size_t) c->tok_seq[b] * m->info.n_layer + layer) * nkv + kvh) * c->n_ctx * hd *
                            (c->kv_f16 ? sizeof(uint16_t) : sizeof(float));

                /* Causal: keys up to and including this token's position. */
                rbee_attend(q + b * ldq + h * hd, per, hd, (const uint8_t *) c->k_cache + at,
                            (const uint8_t *) c->v_cache + at, c->kv_f16, hd, c->tok_pos[b] + 1, scale, att,
                            out + (size_t) b * m->q_dim + h * hd);
        }
}

static void swiglu(rbee_context *c, int ith, int nth, float *g, int64_t ldg, const float *u, int64_t ldu) {
        const uint32_t nff = c->model->info.n_ff;
        long i0, i1;

        rbee_split((long) c->n_tokens * nff, ith, nth, 16, &i0, &i1);
        for (long i = i0; i < i1; i++) {
                long b = i / nff, j = i % nff;
                float x = g[b * ldg + j];
                g[b * ldg + j] = x / (1.0f + expf(-x)) * u[b * ldu + j];
        }
}

static void forward_thread(int ith, int nth, void *arg) {
        rbee_context *c = arg;
        rbee_pool *pool = c->pool;
        const rbee_model *m = c->model;
        const struct rbee_model_info *h = &m->info;
        const uint32_t B = c->n_tokens, D = h->n_embd, Q = m->q_dim, KV = m->kv_dim, F = h->n_ff;
        long b0, b1;

        /* Embeddings, and the rope angles of these positions. */
        rbee_split(B, ith, nth, 1, &b0, &b1);
        for (long b = b0; b < b1; b++)
                m->tok_embd.ops->to_float(m->tok_embd.data + (size_t) c->tokens[b] * m->tok_embd.row_size,
                                          c->x + b * D, D);
        rope_table(c, ith, nth);
        rbee_pool_barrier(pool);

        for (uint32_t l = 0; l < h->n_layer; l++) {
                const struct rbee_layer *L = &m->layers[l];
                float *q, *k, *v;
                int64_t ldq;

                rmsnorm_rows(c, ith, nth, c->xb, c->x, L->attn_norm, B);
                rbee_pool_barrier(pool);

                if (L->fused_qkv) {
                        act_quantize(c, ith, nth, c->xb, B, D, D, act_mask(&L->wqkv));
                        rbee_pool_barrier(pool);
                        matmul(c, ith, nth, &L->wqkv, c->xb, D, B, c->qkv, Q + 2 * KV);
                        rbee_pool_barrier(pool);
                        q = c->qkv;
                        k = c->qkv + Q;
                        v = c->qkv + Q + KV;
                        ldq = Q + 2 * KV;
                        rope_rows(c, ith, nth, l, q, ldq, k, v, ldq);
                } else {
                        act_quantize(c, ith, nth, c->xb, B, D, D,
                                     act_mask(&L->wq) | act_mask(&L->wk) | act_mask(&L->wv));
                        rbee_pool_barrier(pool);
                        matmul(c, ith, nth, &L->wq, c->xb, D, B, c->q, Q);
                        matmul(c, ith, nth, &L->wk, c->xb, D, B, c->k, KV);
                        matmul(c, ith, nth, &L->wv, c->xb, D, B, c->v, KV);
                        rbee_pool_barrier(pool);
                        add_bias(c->q, Q, L->bq, Q, B, ith, nth);
                        add_bias(c->k, KV, L->bk, KV, B, ith, nth);
                        add_bias(c->v, KV, L->bv, KV, B, ith, nth);
                        q = c->q;
                        k = c->k;
                        v = c->v;
                        ldq = Q;
                        if (L->bq || L->bk || L->bv)
                                rbee_pool_barrier(pool);
                        rope_rows(c, ith, nth, l, q, ldq, k, v, KV);
                }
                rbee_pool_barrier(pool);

                attention(c, ith, nth, l, q, ldq, c->xb2);
                rbee_pool_barrier(pool);

                act_quantize(c, ith, nth, c->xb2, B, Q, Q, act_mask(&L->wo));
                rbee_pool_barrier(pool);
                matmul(c, ith, nth, &L->wo, c->xb2, Q, B, c->xb, D);
                rbee_pool_barrier(pool);
                add_rows(c, ith, nth, c->x, c->xb, B);
                rbee_pool_barrier(pool);

                rmsnorm_rows(c, ith, nth, c->xb, c->x, L->ffn_norm, B);
                rbee_pool_barrier(pool);
                float *g, *u;
                int64_t ldg;
                if (L->fused_gate_up) {
                        act_quantize(c, ith, nth, c->xb, B, D, D, act_mask(&L->w_gate_up));
                        rbee_pool_barrier(pool);
                        matmul(c, ith, nth, &L->w_gate_up, c->xb, D, B, c->hb, 2 * F);
                        g = c->hb;
                        u = c->hb + F;
                        ldg = 2 * F;
                } else {
                        act_quantize(c, ith, nth, c->xb, B, D, D, act_mask(&L->w_gate) | act_mask(&L->w_up));
                        rbee_pool_barrier(pool);
                        matmul(c, ith, nth, &L->w_gate, c->xb, D, B, c->hb, F);
                        matmul(c, ith, nth, &L->w_up, c->xb, D, B, c->hb2, F);
                        g = c->hb;
                        u = c->hb2;
                        ldg = F;
                }
                rbee_pool_barrier(pool);
                swiglu(c, ith, nth, g, ldg, u, L->fused_gate_up ? ldg : F);
                rbee_pool_barrier(pool);
                act_quantize(c, ith, nth, g, B, F, ldg, act_mask(&L->w_down));
                rbee_pool_barrier(pool);
                matmul(c, ith, nth, &L->w_down, g, ldg, B, c->xb, D);
                rbee_pool_barrier(pool);
                add_rows(c, ith, nth, c->x, c->xb, B);
                rbee_pool_barrier(pool);
        }

        /* Logits only for the tokens that want them, as one product. */
        const uint32_t n_out = c->n_out;
        if (n_out == 0)
                return;
        rbee_split(n_out, ith, nth, 1, &b0, &b1);
        for (long i = b0; i < b1; i++)
                rmsnorm(c->xb + i * D, c->x + (size_t) c->out_tok[i] * D, m->output_norm, D, h->norm_eps);
        rbee_pool_barrier(pool);
        act_quantize(c, ith, nth, c->xb, n_out, D, D, act_mask(&m->output));
        rbee_pool_barrier(pool);
        matmul(c, ith, nth, &m->output, c->xb, D, n_out, c->logits_out, h->n_vocab);
}

void rbee_forward(rbee_context *c) {
        rbee_pool_run(c->pool, forward_thread, c);
}
