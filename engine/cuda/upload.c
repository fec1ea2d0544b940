/* SPDX-License-Identifier: MIT */
/* Weights on the device: uploaded once per model and device, in their file
 * types, into one allocation, and shared by every context on that device.
 * Sizes are computed by a dry run of the same placement code that uploads,
 * so that the VRAM check before allocating is exact. */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

#define ARENA_ALIGN 256
/* Room left for the CUDA context's own needs, cuBLAS workspaces and graphs. */
#define VRAM_RESERVE (256u << 20)

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cu_weights *registry;

struct placer {
        uint8_t *base;          /* NULL: dry run, only count */
        size_t off;
        int err;
        rbee_progress_fn progress; /* after each layer placed, when base is set */
        void *progress_userdata;
};

/* Place n bytes (copied from src, or zeroed when src is NULL) at the given alignment. */
static void *place(struct placer *p, const void *src, size_t n, size_t align) {
        p->off = ALIGN_TO(p->off, align);
        void *d = p->base ? p->base + p->off : NULL;
        p->off += n;
        if (!d || p->err < 0)
                return d;
        cudaError_t e = src ? cudaMemcpy(d, src, n, cudaMemcpyHostToDevice) : cudaMemset(d, 0, n);
        if (e != cudaSuccess)
                p->err = rbee_cu_errno(e);
        return d;
}

static const float *place_vec(struct placer *p, const float *v, size_t n) {
        return place(p, v, n * sizeof(float), ARENA_ALIGN);
}

/* Append the matrices ws (rows at output columns y_off[i]) to mat, merging
 * a matrix into the previous segment when type and width allow. */
static int place_mat(struct placer *p, struct cu_weights *cw, struct cu_mat *mat,
                     const struct rbee_weight *const *ws, const int *y_off, size_t n) {
        *mat = (struct cu_mat) { 0 };
        for (size_t i = 0; i < n; i++) {
                const struct rbee_weight *w = ws[i];
                if (!rbee_cu_type_supported(w->type, w->ne0) || w->ne1 > INT_MAX) {
                        log_error("cuda: tensor '%s' (%s, %" PRId64 " x %" PRId64 ") has no CUDA kernel", w->name,
                                  rbee_type_name(w->type), w->ne1, w->ne0);
                        return -EOPNOTSUPP;
                }
                struct cu_seg *prev = mat->n > 0 ? &mat->seg[mat->n - 1] : NULL;
                bool merge = prev && prev->type == (int) w->type && prev->K == w->ne0 &&
                             prev->y_off + prev->rows == y_off[i] && (int64_t) prev->rows + w->ne1 <= INT_MAX;
                const uint8_t *d = place(p, w->data, (size_t) w->ne1 * w->row_size, merge ? 1 : ARENA_ALIGN);
                if (merge) {
                        prev->rows += (int) w->ne1;
                        continue;
                }
                mat->seg[mat->n++] = (struct cu_seg) {
                        .type = w->type,
                        .data = d,
                        .rows = (int) w->ne1,
                        .K = (int) w->ne0,
                        .row_size = w->row_size,
                        .y_off = y_off[i],
                };
                cw->max_rows_x_k = MAX(cw->max_rows_x_k, (size_t) w->ne1 * w->ne0);
        }
        return 0;
}

/* Biases of the segments of mat: one vector of `total` floats (zeros where a
 * matrix has no bias), or none at all. */
static void place_bias(struct placer *p, struct cu_mat *mat, const float *const *b, const int *len, size_t n,
                       int total) {
        bool any = false;

        for (size_t i = 0; i < n; i++)
                any |= b[i] != NULL;
        if (!any)
                return;
        _cleanup_(freep) float *v = p->base ? calloc(total, sizeof(float)) : NULL;
        if (p->base && !v) {
                p->err = -ENOMEM;
                return;
        }
        for (size_t i = 0, off = 0; i < n; off += len[i], i++)
                if (v && b[i])
                        memcpy(v + off, b[i], len[i] * sizeof(float));
        const float *d = place_vec(p, v, total);
        for (int s = 0; s < mat->n; s++)
                mat->seg[s].bias = d ? d + mat->seg[s].y_off : NULL;
}

/* The embeddings and the output come first, so that the report of the last
 * layer is the end of the upload. */
static int place_model(struct placer *p, const rbee_model *m, struct cu_weights *cw) {
        const struct rbee_model_info *h = &m->info;
        const int Q = m->q_dim, KV = m->kv_dim, F = h->n_ff;
        int r;

        const struct rbee_weight *te[] = { &m->tok_embd };
        struct cu_mat emb;
        if ((r = place_mat(p, cw, &emb, te, (const int[]) { 0 }, 1)) < 0)
                return r;
        cw->tok_embd = emb.seg[0];
        if (m->output.data == m->tok_embd.data)
                cw->output = emb; /* tied embeddings: one copy */
        else {
                const struct rbee_weight *ow[] = { &m->output };
                if ((r = place_mat(p, cw, &cw->output, ow, (const int[]) { 0 }, 1)) < 0)
                        return r;
        }
        cw->output_norm = place_vec(p, m->output_norm, h->n_embd);

        for (uint32_t l = 0; l < h->n_layer; l++) {
                const struct rbee_layer *L = &m->layers[l];
                struct cu_layer *cl = &cw->layers[l];

                cl->attn_norm = place_vec(p, L->attn_norm, h->n_embd);
                cl->ffn_norm = place_vec(p, L->ffn_norm, h->n_embd);
                if (L->fused_qkv) {
                        const struct rbee_weight *ws[] = { &L->wqkv };
                        r = place_mat(p, cw, &cl->qkv, ws, (const int[]) { 0 }, 1);
                } else {
                        const struct rbee_weight *ws[] = { &L->wq, &L->wk, &L->wv };
                        r = place_mat(p, cw, &cl->qkv, ws, (const int[]) { 0, Q, Q + KV }, 3);
                        if (r >= 0)
                                place_bias(p, &cl->qkv, (const float *const[]) { L->bq, L->bk, L->bv },
                                           (const int[]) { Q, KV, KV }, 3, Q + 2 * KV);
                }
                if (r < 0)
                        return r;
                const struct rbee_weight *wo[] = { &L->wo };
                if ((r = place_mat(p, cw, &cl->wo, wo, (const int[]) { 0 }, 1)) < 0)
                        return r;
                if (L->fused_gate_up) {
                        const struct rbee_weight *ws[] = { &L->w_gate_up };
                        r = place_mat(p, cw, &cl->gate_up, ws, (const int[]) { 0 }, 1);
                } else {
                        const struct rbee_weight *ws[] = { &L->w_gate, &L->w_up };
                        r = place_mat(p, cw, &cl->gate_up, ws, (const int[]) { 0, F }, 2);
                }
                if (r < 0)
                        return r;
                const struct rbee_weight *wd[] = { &L->w_down };
                if ((r = place_mat(p, cw, &cl->down, wd, (const int[]) { 0 }, 1)) < 0)
                        return r;
                if (p->err < 0)
                        return p->err;
                if (p->base && p->progress && !p->progress(l + 1, h->n_layer, p->progress_userdata))
                        return -ECANCELED;
        }

        /* RoPE frequencies exactly as context.c computes them for the CPU. */
        _cleanup_(freep) float *inv = calloc(m->n_rot / 2 + 1, sizeof(float));
        if (!inv)
                return -ENOMEM;
        for (uint32_t i = 0; i < m->n_rot / 2; i++) {
                inv[i] = 1.0f / powf(h->rope_theta, (float) (2 * i) / (float) m->n_rot);
                if (m->rope_factors)
                        inv[i] /= m->rope_factors[i];
        }
        cw->inv_freq = place_vec(p, inv, m->n_rot / 2 + 1);
        return p->err;
}

static struct cu_weights *cu_weights_free(struct cu_weights *cw) {
        if (!cw)
                return NULL;
        if (cw->arena)
                (void) cudaFree(cw->arena);
        free(cw->layers);
        free(cw);
        return NULL;
}

static int upload(const rbee_model *m, int device, size_t ctx_bytes, rbee_progress_fn progress, void *userdata,
                  struct cu_weights **ret) {
        const struct rbee_model_info *h = &m->info;
        struct cu_weights *cw = calloc(1, sizeof(*cw));
        size_t free_b = 0, total_b = 0;
        int r;

        if (!cw || !(cw->layers = calloc(h->n_layer, sizeof(*cw->layers)))) {
                free(cw);
                return -ENOMEM;
        }
        cw->model = m;
        cw->device = device;

        struct placer dry = { 0 };
        if ((r = place_model(&dry, m, cw)) < 0)
                goto fail;
        cw->arena_bytes = dry.off;

        cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
        if (e != cudaSuccess) {
                log_error("cuda: device %d: %s", device, cudaGetErrorString(e));
                r = rbee_cu_errno(e);
                goto fail;
        }
        if (cw->arena_bytes + ctx_bytes + VRAM_RESERVE > free_b) {
                log_error("cuda: the model needs %.1f MiB of VRAM (weights %.1f MiB, context %.1f MiB, reserve %u "
                          "MiB) but device %d has %.1f MiB free of %.1f MiB",
                          (cw->arena_bytes + ctx_bytes + VRAM_RESERVE) / 1048576.0, cw->arena_bytes / 1048576.0,
                          ctx_bytes / 1048576.0, VRAM_RESERVE >> 20, device, free_b / 1048576.0,
                          total_b / 1048576.0);
                r = -ENOMEM;
                goto fail;
        }
        e = cudaMalloc(&cw->arena, cw->arena_bytes);
        if (e != cudaSuccess) {
                log_error("cuda: allocating %.1f MiB of weights on device %d: %s", cw->arena_bytes / 1048576.0,
                          device, cudaGetErrorString(e));
                cw->arena = NULL;
                r = rbee_cu_errno(e);
                goto fail;
        }
        cw->max_rows_x_k = 0;
        struct placer up = { .base = cw->arena, .progress = progress, .progress_userdata = userdata };
        if ((r = place_model(&up, m, cw)) == -ECANCELED) {
                log_info("cuda: uploading the weights to device %d was cancelled", device);
                goto fail;
        }
        if (r < 0) {
                log_error("cuda: uploading the weights to device %d failed (%d)", device, r);
                goto fail;
        }
        log_info("cuda: device %d: %.1f MiB of weights uploaded (%.1f MiB free before)", device,
                 cw->arena_bytes / 1048576.0, free_b / 1048576.0);
        *ret = cw;
        return 0;
fail:
        cu_weights_free(cw);
        return r;
}

int cu_weights_get(const rbee_model *m, int device, size_t ctx_bytes, rbee_progress_fn progress, void *userdata,
                   struct cu_weights **ret) {
        struct cu_weights *cw;
        int r = 0;

        pthread_mutex_lock(&registry_lock);
        for (cw = registry; cw; cw = cw->next)
                if (cw->model == m && cw->device == device)
                        break;
        if (cw) {
                size_t free_b = 0, total_b = 0;
                cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
                if (e != cudaSuccess)
                        r = rbee_cu_errno(e);
                else if (ctx_bytes + VRAM_RESERVE > free_b) {
                        log_error("cuda: the context needs %.1f MiB of VRAM but device %d has %.1f MiB free",
                                  ctx_bytes / 1048576.0, device, free_b / 1048576.0);
                        r = -ENOMEM;
                } else
                        cw->refs++;
        } else if ((r = upload(m, device, ctx_bytes, progress, userdata, &cw)) >= 0) {
                cw->refs = 1;
                cw->next = registry;
                registry = cw;
        }
        pthread_mutex_unlock(&registry_lock);
        if (r >= 0)
                *ret = cw;
        return r;
}

void cu_weights_put(struct cu_weights *w) {
        if (!w)
                return;
        pthread_mutex_lock(&registry_lock);
        if (--w->refs == 0) {
                for (struct cu_weights **p = &registry; *p; p = &(*p)->next)
                        if (*p == w) {
                                *p = w->next;
                                break;
                        }
                (void) cudaSetDevice(w->device);
                cu_weights_free(w);
        }
        pthread_mutex_unlock(&registry_lock);
}
