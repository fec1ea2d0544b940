/* SPDX-License-Identifier: MIT */
/* The transformer forward pass for Llama-family models (Llama, Mistral,
 * Qwen2, Phi-3). All threads run the whole pass as a sequence of steps
 * (threadpool.h): each step is a list of items (blocks of rows of a matrix,
 * heads of attention); each thread works through its own run of them and
 * then takes what is left of the others', and a thread waits only until
 * the items of the step whose results it reads next are finished, never for
 * a thread that holds none. So a thread the scheduler puts aside on a busy
 * machine holds up the others for at most one item, and its share goes to
 * them.
 *
 * Few steps, because each is a point where the fastest thread may wait for
 * the slowest: whatever needs only rows that the item itself computed is
 * done in the same item (bias, rope and the cache writes after Q/K/V, the
 * residual add after the output and down projections, SwiGLU and the
 * quantization of its result after gate/up, the quantization of the heads
 * after attention), and for a few tokens each thread normalizes and
 * quantizes the step's input itself rather than wait for one copy. A
 * generated token takes five steps per layer: Q/K/V, attention, output
 * projection, gate/up, down.
 *
 * Which thread computes a row never changes its bits: every kernel gives
 * vec_dot's result for a row (quants.h), attention gives a head's result
 * alone or in a group (attention.h), and BLAS calls cover the same blocks
 * of rows however the items fall. */

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

static const enum rbee_type act_types[RBEE_ACT_SLOTS] = { RBEE_TYPE_Q8_0, RBEE_TYPE_Q8_1, RBEE_TYPE_Q8_K };

/* The activation types that products with w read (none on the BLAS path). */
static unsigned act_mask(const rbee_context *c, const struct rbee_weight *w) {
        int s = act_slot(w->ops->vec_dot_type);
        return s < 0 || c->matmul == RBEE_MATMUL_BLAS ? 0 : 1u << s;
}

/* Bytes of k elements of activation slot s (k a multiple of its block). */
static size_t act_bytes(int s, int64_t k) {
        uint64_t rs = 0;

        (void) rbee_type_row_size(act_types[s], k, &rs);
        return rs;
}

/* The largest block among the types in mask, 1 for none. */
static uint32_t act_block(unsigned mask) {
        uint32_t bs = 1;

        for (int s = 0; s < RBEE_ACT_SLOTS; s++)
                if (mask & (1u << s))
                        bs = MAX(bs, rbee_type_traits(act_types[s])->block_size);
        return bs;
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

/* Where a matrix product reads its input: F32 rows (for BLAS and for F32,
 * F16 and BF16 weights), and their copies in each dot type, one row of
 * width K after another. */
struct act_in {
        const float *x;
        int64_t ldx;
        const void *a[RBEE_ACT_SLOTS];
};

/* Quantizes elements [k0, k0 + n) of x, token b's row of width K, into that
 * token's row of act[s] for each type in mask. k0 and n are multiples of
 * the blocks: a block depends on its own elements only, so a row converted
 * in parts has the bits of the row converted at once. */
static void quantize_span(unsigned mask, void *const act[], int64_t K, uint32_t b, const float *x, int64_t k0,
                          int64_t n) {
        for (int s = 0; s < RBEE_ACT_SLOTS; s++)
                if (mask & (1u << s))
                        rbee_quant_ops(act_types[s])->from_float(
                                x + k0, (uint8_t *) act[s] + b * act_bytes(s, K) + act_bytes(s, k0), n);
}

/* y[b][r] = W[r] . x[b] for the rows r0 <= r < r1 of W; y has stride ldy. */
static void matmul_rows(rbee_context *c, int ith, const struct rbee_weight *w, const struct act_in *in, uint32_t B,
                        float *y, int64_t ldy, long r0, long r1) {
        const int64_t K = w->ne0;

        if (use_blas(c, w, B)) {
                float *deq = c->deq + (size_t) ith * c->deq_stride;
                /* Blocks at multiples of RBEE_DEQ_ROWS wherever the items
                 * begin, so that each row meets the same GEMM call. */
                for (long r = r0, n; r < r1; r += n) {
                        n = MIN(RBEE_DEQ_ROWS - r % RBEE_DEQ_ROWS, r1 - r);
                        const float *wf;
                        if (w->type == RBEE_TYPE_F32)
                                wf = (const float *) (w->data + r * w->row_size);
                        else {
                                for (long i = 0; i < n; i++)
                                        w->ops->to_float(w->data + (r + i) * w->row_size, deq + i * K, K);
                                wf = deq;
                        }
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n, K, 1.0f, in->x, in->ldx, wf, K,
                                    0.0f, y + r, ldy);
                }
                return;
        }

        int s = act_slot(w->ops->vec_dot_type);
        const uint8_t *a;
        size_t ars;
        if (s < 0) {
                a = (const uint8_t *) in->x;
                ars = in->ldx * sizeof(float);
        } else {
                a = in->a[s];
                ars = act_bytes(s, K);
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

static void rope_row(rbee_context *c, uint32_t b) {
        const rbee_model *m = c->model;
        const uint32_t half = m->n_rot / 2;
        float p = (float) c->tok_pos[b] * m->rope_freq_scale;
        float *cs = c->rope + (size_t) b * m->n_rot;

        for (uint32_t i = 0; i < half; i++) {
                float a = p * c->inv_freq[i];
                cs[2 * i] = cosf(a) * m->attn_factor;
                cs[2 * i + 1] = sinf(a) * m->attn_factor;
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

/* The first element of kv head kvh of this layer in the cache of token b's sequence. */
static size_t kv_head(const rbee_context *c, uint32_t layer, uint32_t b, uint32_t kvh) {
        const struct rbee_model_info *h = &c->model->info;

        return (((size_t) c->tok_seq[b] * h->n_layer + layer) * h->n_head_kv + kvh) * c->n_ctx * h->head_dim;
}

/* Where token b's own row of that head goes. */
static size_t kv_at(const rbee_context *c, uint32_t layer, uint32_t b, uint32_t kvh) {
        return kv_head(c, layer, b, kvh) + (size_t) c->tok_pos[b] * c->model->info.head_dim;
}

static void kv_store(const rbee_context *c, void *cache, size_t at, const float *x) {
        const uint32_t hd = c->model->info.head_dim;

        if (c->kv_f16)
                c->kv_ops->from_float(x, (uint16_t *) cache + at, hd);
        else
                memcpy((float *) cache + at, x, hd * sizeof(float));
}

/* Up to this many tokens, each thread normalizes and quantizes a step's
 * input for itself: a few microseconds of work repeated, against a wait for
 * the slowest thread. Its copy lives in its deq rows (64 rows of the
 * largest width, far more than this needs), which only the BLAS path uses,
 * and that path never takes so few tokens unless forced (then no thread
 * makes its own copy). */
#define PRIVATE_MAX 4

/* One thread's place in the pass. */
struct pass {
        rbee_context *c;
        int ith, nth;
        unsigned step; /* numbered alike in every thread */
};

static long next(struct pass *p, long n) {
        return rbee_pool_next(p->c->pool, p->ith, p->step, n);
}

static void finish(struct pass *p) {
        rbee_pool_wait(p->c->pool, p->step++);
}

static bool private_inputs(const rbee_context *c, uint32_t B) {
        return B <= PRIVATE_MAX && c->matmul != RBEE_MATMUL_BLAS;
}

/* Rows per item of a product with R rows: a BLAS block (and a few
 * microseconds of a generated token's weights), more for a vocabulary so
 * that a thread takes an item at most a few dozen times per step. */
static long row_chunk(const struct pass *p, long R) {
        return RBEE_DEQ_ROWS * MAX(1L, R / (RBEE_DEQ_ROWS * 32L * p->nth));
}

/* A step's input: B rows of x (row b at rows[b] when rows is set, which
 * needs norm), RMS-normalized with norm when set, then converted to the
 * dot types in mask. */
struct input {
        const float *x;
        int64_t ldx, K;
        const uint32_t *rows;
        const float *norm;
        uint32_t B;
        unsigned mask;
};

/* Row b of the input, normalized into xf (rows of K) when it asks for it. */
static void input_row(const rbee_context *c, const struct input *in, uint32_t b, float *xf, void *const act[]) {
        const float *x = in->x + (size_t) (in->rows ? in->rows[b] : b) * in->ldx;

        if (in->norm) {
                rmsnorm(xf + (size_t) b * in->K, x, in->norm, in->K, c->model->info.norm_eps);
                x = xf + (size_t) b * in->K;
        }
        quantize_span(in->mask, act, in->K, b, x, 0, in->K);
}

/* The input for this thread alone. */
static void input_private(rbee_context *c, int ith, const struct input *in, struct act_in *ret) {
        float *xf = c->deq + (size_t) ith * c->deq_stride;
        uint8_t *p = (uint8_t *) (xf + (in->norm ? (size_t) in->B * in->K : 0));
        void *act[RBEE_ACT_SLOTS] = { 0 };

        for (int s = 0; s < RBEE_ACT_SLOTS; s++)
                if (in->mask & (1u << s)) {
                        p = (uint8_t *) ALIGN_TO((uintptr_t) p, 64);
                        act[s] = p;
                        p += in->B * act_bytes(s, in->K);
                }
        for (uint32_t b = 0; b < in->B; b++)
                input_row(c, in, b, xf, act);
        *ret = (struct act_in) { in->norm ? xf : in->x, in->norm ? in->K : in->ldx, { act[0], act[1], act[2] } };
}

/* The input, once for all threads (normalized into xb), as a step of its
 * own; none when there is nothing to do. */
static void input_shared(struct pass *p, const struct input *in, struct act_in *ret) {
        rbee_context *c = p->c;

        if (in->norm || in->mask) {
                for (long b; (b = next(p, in->B)) >= 0;)
                        input_row(c, in, b, c->xb, c->act);
                finish(p);
        }
        *ret = (struct act_in) { in->norm ? c->xb : in->x, in->norm ? in->K : in->ldx,
                                 { c->act[0], c->act[1], c->act[2] } };
}

/* Embeddings, and the rope angles of these positions. */
static void embed_step(struct pass *p) {
        rbee_context *c = p->c;
        const rbee_model *m = c->model;
        const uint32_t D = m->info.n_embd;

        for (long b; (b = next(p, c->n_tokens)) >= 0;) {
                m->tok_embd.ops->to_float(m->tok_embd.data + (size_t) c->tokens[b] * m->tok_embd.row_size,
                                          c->x + b * D, D);
                rope_row(c, b);
        }
        finish(p);
}

/* Rows [r0, r1) of part 0 (q), 1 (k) or 2 (v) of the layer, whole heads,
 * with their bias; q and k rotated, k and v written to the cache. */
static void qkv_rows(rbee_context *c, int ith, uint32_t l, const struct act_in *in, int part, long r0, long r1) {
        const rbee_model *m = c->model;
        const struct rbee_layer *L = &m->layers[l];
        const uint32_t B = c->n_tokens, hd = m->info.head_dim, Q = m->q_dim, KV = m->kv_dim;
        const float *bias = NULL;
        float *y;
        int64_t ldy;

        if (L->fused_qkv) {
                long off = part == 0 ? 0 : part == 1 ? Q : Q + KV;
                ldy = Q + 2 * KV;
                matmul_rows(c, ith, &L->wqkv, in, B, c->qkv, ldy, off + r0, off + r1);
                y = c->qkv + off;
        } else {
                const struct rbee_weight *w = part == 0 ? &L->wq : part == 1 ? &L->wk : &L->wv;
                y = part == 0 ? c->q : part == 1 ? c->k : c->v;
                ldy = part == 0 ? Q : KV;
                bias = part == 0 ? L->bq : part == 1 ? L->bk : L->bv;
                matmul_rows(c, ith, w, in, B, y, ldy, r0, r1);
        }
        for (uint32_t b = 0; b < B; b++) {
                float *yb = y + (size_t) b * ldy;
                const float *cs = c->rope + (size_t) b * m->n_rot;
                if (bias)
                        for (long r = r0; r < r1; r++)
                                yb[r] += bias[r];
                for (long h = r0 / hd; h < r1 / hd; h++) {
                        if (part < 2)
                                rope_apply(m, yb + h * hd, cs);
                        if (part > 0)
                                kv_store(c, part == 1 ? c->k_cache : c->v_cache, kv_at(c, l, b, h), yb + h * hd);
                }
        }
}

static void qkv_step(struct pass *p, uint32_t l, bool priv) {
        rbee_context *c = p->c;
        const rbee_model *m = c->model;
        const struct rbee_layer *L = &m->layers[l];
        const uint32_t D = m->info.n_embd, hd = m->info.head_dim;
        const long Q = m->q_dim, KV = m->kv_dim;
        const unsigned mask = L->fused_qkv ? act_mask(c, &L->wqkv)
                                           : act_mask(c, &L->wq) | act_mask(c, &L->wk) | act_mask(c, &L->wv);
        const struct input src = { c->x, D, D, NULL, L->attn_norm, c->n_tokens, mask };
        struct act_in in = { 0 };
        bool ready = !priv;

        if (!priv)
                input_shared(p, &src, &in);
        /* Whole heads per item, so that each can rotate and store its rows;
         * the items of q, k and v form one list. */
        const long ch = hd * ((RBEE_DEQ_ROWS + hd - 1) / hd);
        const long nq = (Q + ch - 1) / ch, nk = (KV + ch - 1) / ch, n = nq + 2 * nk;
        for (long i; (i = next(p, n)) >= 0;) {
                if (!ready) {
                        input_private(c, p->ith, &src, &in);
                        ready = true;
                }
                int part = i < nq ? 0 : i < nq + nk ? 1 : 2;
                long r0 = (part == 0 ? i : part == 1 ? i - nq : i - nq - nk) * ch;
                qkv_rows(c, p->ith, l, &in, part, r0, MIN(r0 + ch, part ? KV : Q));
        }
        finish(p);
}

/* Attention, then the output projection and the residual. Each work item
 * of attention is one token's kv head and some of the query heads that
 * share it: all of them when that gives every thread work, else the group
 * is split (a head's result is the same either way). */
static void attention_step(struct pass *p, uint32_t l, bool priv) {
        rbee_context *c = p->c;
        const rbee_model *m = c->model;
        const struct rbee_layer *L = &m->layers[l];
        const uint32_t B = c->n_tokens, D = m->info.n_embd, Q = m->q_dim, KV = m->kv_dim;
        const uint32_t hd = m->info.head_dim, nkv = m->info.n_head_kv, group = m->info.n_head / nkv;
        const float scale = 1.0f / sqrtf((float) hd);
        const float *q = L->fused_qkv ? c->qkv : c->q;
        const int64_t ldq = L->fused_qkv ? Q + 2 * KV : Q;
        float *att = c->att + (size_t) p->ith * group * c->n_ctx;
        uint32_t parts = 1;

        while (parts < group && group % (2 * parts) == 0 && (long) B * nkv * parts < 2L * p->nth)
                parts *= 2;
        const uint32_t per = group / parts;
        const long total = (long) B * nkv * parts;
        /* An item converts its heads for the output projection when they
         * are whole blocks of its input type. */
        const unsigned mask = act_mask(c, &L->wo);
        const bool epi = per * hd % act_block(mask) == 0;
        for (long i; (i = next(p, total)) >= 0;) {
                /* The last tokens of a prompt attend to the most keys: first. */
                long j = total - 1 - i;
                uint32_t b = j / (nkv * parts), kvh = j / parts % nkv, h = kvh * group + j % parts * per;
                size_t at = kv_head(c, l, b, kvh) * (c->kv_f16 ? sizeof(uint16_t) : sizeof(float));
                float *out = c->xb2 + (size_t) b * Q;

                /* Causal: keys up to and including this token's position. */
                rbee_attend(q + b * ldq + h * hd, per, hd, (const uint8_t *) c->k_cache + at,
                            (const uint8_t *) c->v_cache + at, c->kv_f16, hd, c->tok_pos[b] + 1, scale, att,
                            out + h * hd);
                if (epi)
                        quantize_span(mask, c->act, Q, b, out, h * hd, per * hd);
        }
        finish(p);

        const struct input src = { c->xb2, Q, Q, NULL, NULL, B, epi ? 0 : mask };
        struct act_in in = { c->xb2, Q, { c->act[0], c->act[1], c->act[2] } };
        bool ready = true;
        if (!epi && priv)
                ready = false;
        else if (!epi)
                input_shared(p, &src, &in);
        const long ch = row_chunk(p, D), n = (D + ch - 1) / ch;
        for (long i; (i = next(p, n)) >= 0;) {
                if (!ready) {
                        input_private(c, p->ith, &src, &in);
                        ready = true;
                }
                long r0 = i * ch, r1 = MIN(r0 + ch, (long) D);
                matmul_rows(c, p->ith, &L->wo, &in, B, c->xb, D, r0, r1);
                for (uint32_t b = 0; b < B; b++)
                        for (long r = r0; r < r1; r++)
                                c->x[(size_t) b * D + r] += c->xb[(size_t) b * D + r];
        }
        finish(p);
}

/* Gate and up with SwiGLU, then down and the residual. */
static void ffn_step(struct pass *p, uint32_t l, bool priv) {
        rbee_context *c = p->c;
        const rbee_model *m = c->model;
        const struct rbee_layer *L = &m->layers[l];
        const uint32_t B = c->n_tokens, D = m->info.n_embd, F = m->info.n_ff;
        const unsigned mask = L->fused_gate_up ? act_mask(c, &L->w_gate_up)
                                               : act_mask(c, &L->w_gate) | act_mask(c, &L->w_up);
        const struct input src = { c->x, D, D, NULL, L->ffn_norm, B, mask };
        struct act_in in = { 0 };
        bool ready = !priv;

        if (!priv)
                input_shared(p, &src, &in);
        /* With private inputs, each item converts its part of the down
         * projection's input as it finishes it, so items are whole blocks of
         * that type; shared ones still hold the input of gate and up, and
         * the conversion takes a step of its own. */
        const unsigned down_mask = act_mask(c, &L->w_down);
        const long bs = act_block(down_mask);
        const long ch = (row_chunk(p, F) + bs - 1) / bs * bs, n = (F + ch - 1) / ch;
        float *g = c->hb, *u = L->fused_gate_up ? c->hb + F : c->hb2;
        const int64_t ldg = L->fused_gate_up ? 2 * (int64_t) F : F; /* u's too */
        for (long i; (i = next(p, n)) >= 0;) {
                if (!ready) {
                        input_private(c, p->ith, &src, &in);
                        ready = true;
                }
                long j0 = i * ch, j1 = MIN(j0 + ch, (long) F);
                if (L->fused_gate_up) {
                        matmul_rows(c, p->ith, &L->w_gate_up, &in, B, c->hb, ldg, j0, j1);
                        matmul_rows(c, p->ith, &L->w_gate_up, &in, B, c->hb, ldg, F + j0, F + j1);
                } else {
                        matmul_rows(c, p->ith, &L->w_gate, &in, B, c->hb, F, j0, j1);
                        matmul_rows(c, p->ith, &L->w_up, &in, B, c->hb2, F, j0, j1);
                }
                for (uint32_t b = 0; b < B; b++) {
                        float *gb = g + b * ldg;
                        const float *ub = u + b * ldg;
                        for (long j = j0; j < j1; j++) {
                                float x = gb[j];
                                gb[j] = x / (1.0f + expf(-x)) * ub[j];
                        }
                        if (priv)
                                quantize_span(down_mask, c->act, F, b, gb, j0, j1 - j0);
                }
        }
        finish(p);

        const struct input dsrc = { g, ldg, F, NULL, NULL, B, down_mask };
        struct act_in din = { g, ldg, { c->act[0], c->act[1], c->act[2] } };
        if (!priv)
                input_shared(p, &dsrc, &din);
        const long dch = row_chunk(p, D), dn = (D + dch - 1) / dch;
        for (long i; (i = next(p, dn)) >= 0;) {
                long r0 = i * dch, r1 = MIN(r0 + dch, (long) D);
                matmul_rows(c, p->ith, &L->w_down, &din, B, c->xb, D, r0, r1);
                for (uint32_t b = 0; b < B; b++)
                        for (long r = r0; r < r1; r++)
                                c->x[(size_t) b * D + r] += c->xb[(size_t) b * D + r];
        }
        finish(p);
}

/* Logits only for the tokens that want them, as one product. */
static void output_step(struct pass *p) {
        rbee_context *c = p->c;
        const rbee_model *m = c->model;
        const uint32_t n_out = c->n_out, D = m->info.n_embd;
        const long V = m->info.n_vocab;
        const bool priv = private_inputs(c, n_out);
        const struct input src = { c->x, D, D, c->out_tok, m->output_norm, n_out, act_mask(c, &m->output) };
        struct act_in in = { 0 };
        bool ready = !priv;

        if (n_out == 0)
                return;
        if (!priv)
                input_shared(p, &src, &in);
        const long ch = row_chunk(p, V), n = (V + ch - 1) / ch;
        for (long i; (i = next(p, n)) >= 0;) {
                if (!ready) {
                        input_private(c, p->ith, &src, &in);
                        ready = true;
                }
                long r0 = i * ch;
                matmul_rows(c, p->ith, &m->output, &in, n_out, c->logits_out, V, r0, MIN(r0 + ch, V));
        }
        finish(p);
}

static void forward_thread(int ith, int nth, void *arg) {
        rbee_context *c = arg;
        struct pass p = { c, ith, nth, 0 };
        const bool priv = private_inputs(c, c->n_tokens);

        embed_step(&p);
        for (uint32_t l = 0; l < c->model->info.n_layer; l++) {
                qkv_step(&p, l, priv);
                attention_step(&p, l, priv);
                ffn_step(&p, l, priv);
        }
        output_step(&p);
}

void rbee_forward(rbee_context *c) {
        rbee_pool_run(c->pool, forward_thread, c);
}
