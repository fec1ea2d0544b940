/* SPDX-License-Identifier: MIT */
/* A CUDA context: KV cache (F16) and activation buffers on one device, and
 * the forward pass enqueued on its own stream. The same kernels serve
 * prompts and generation; positions and token ids live in device memory, so
 * the one-token pass is captured once as a CUDA graph and replayed for every
 * generated token (one launch instead of ~10 per layer), the selection of
 * the sampler's first candidates (topk.cu) included. Batches of
 * RBEE_CU_BLAS_MIN_BATCH tokens and more multiply through cuBLAS: weights
 * are decoded to F16 tiles and multiplied with tensor cores. */

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

/* Below this many tokens a weight is cheaper to read in its quantized form
 * once per 8 tokens than to decode to F16 for a GEMM. */
#define RBEE_CU_BLAS_MIN_BATCH 32
/* Elements of the F16 weight tile for cuBLAS (64 MiB). */
#define RBEE_CU_TILE_ELEMS (32u << 20)

struct rbee_cuda {
        struct cu_weights *w;
        const rbee_model *model;
        int device;
        uint32_t n_ctx, n_batch;
        struct rbee_cu_layout lay;
        cudaStream_t stream;

        void *k_cache, *v_cache;        /* F16 [n_layer][n_ctx][kv_dim] */
        float *x, *xn;                  /* [n_batch][n_embd] */
        float *qkv;                     /* [n_batch][q_dim + 2 kv_dim] */
        float *att;                     /* [n_batch][q_dim] */
        float *gu;                      /* [n_batch][2 n_ff] */
        float *hf;                      /* [n_batch][n_ff] */
        float *part;                    /* [n_head][max_splits][head_dim + 2] */
        float *logits;                  /* [n_vocab] */
        uint64_t *top_scratch, *top;    /* top-k keys: between stages, and the result [RBEE_CU_TOPK_MAX] */
        int32_t *d_io;                  /* [0]: position, [1]: top-k k, [2..]: tokens */
        int32_t *h_io;                  /* pinned staging for d_io */
        float *h_logits;                /* pinned */
        uint64_t *h_top;                /* pinned [RBEE_CU_TOPK_MAX] */

        const struct rbee_cublas *blas;
        cublasHandle_t blas_handle;
        void *xh;                       /* F16 activations [n_batch][max width] */
        void *tile;                     /* F16 weight tile */
        size_t tile_elems;

        cudaGraphExec_t graph;
        bool no_graph;
};

struct sizes {
        size_t kv, x, qkv, att, gu, hf, part, logits, top_scratch, top, io, xh, tile;
};

static void context_sizes(const rbee_model *m, uint32_t n_ctx, uint32_t n_batch, bool blas, size_t max_rows_x_k,
                          struct sizes *s, size_t *total) {
        const struct rbee_model_info *h = &m->info;
        const size_t B = n_batch, D = h->n_embd, F = h->n_ff, Q = m->q_dim, KV = m->kv_dim;
        const size_t splits = (n_ctx + RBEE_CU_ATT_CHUNK - 1) / RBEE_CU_ATT_CHUNK;

        *s = (struct sizes) {
                .kv = (size_t) h->n_layer * n_ctx * KV * 2,
                .x = B * D * sizeof(float),
                .qkv = B * (Q + 2 * KV) * sizeof(float),
                .att = B * Q * sizeof(float),
                .gu = B * 2 * F * sizeof(float),
                .hf = B * F * sizeof(float),
                .part = (size_t) h->n_head * splits * (h->head_dim + 2) * sizeof(float),
                .logits = (size_t) h->n_vocab * sizeof(float),
                .top_scratch = rbee_cu_topk_scratch(h->n_vocab) * sizeof(uint64_t),
                .top = RBEE_CU_TOPK_MAX * sizeof(uint64_t),
                .io = (B + 2) * sizeof(int32_t),
        };
        if (blas && n_batch >= RBEE_CU_BLAS_MIN_BATCH) {
                s->xh = B * MAX(MAX(D, F), Q) * 2;
                s->tile = MIN((size_t) RBEE_CU_TILE_ELEMS, max_rows_x_k) * 2;
        }
        *total = 2 * s->kv + 2 * s->x + s->qkv + s->att + s->gu + s->hf + s->part + s->logits + s->top_scratch +
                 s->top + s->io + s->xh + s->tile;
}

struct rbee_cuda *rbee_cuda_free(struct rbee_cuda *g) {
        if (!g)
                return NULL;
        (void) cudaSetDevice(g->device);
        if (g->stream)
                (void) cudaStreamSynchronize(g->stream);
        if (g->graph)
                (void) cudaGraphExecDestroy(g->graph);
        if (g->blas_handle)
                g->blas->destroy(g->blas_handle);
        void *bufs[] = { g->k_cache, g->v_cache, g->x, g->xn, g->qkv, g->att, g->gu, g->hf, g->part, g->logits,
                         g->top_scratch, g->top, g->d_io, g->xh, g->tile };
        for (size_t i = 0; i < ELEMENTSOF(bufs); i++)
                if (bufs[i])
                        (void) cudaFree(bufs[i]);
        if (g->h_io)
                (void) cudaFreeHost(g->h_io);
        if (g->h_logits)
                (void) cudaFreeHost(g->h_logits);
        if (g->h_top)
                (void) cudaFreeHost(g->h_top);
        if (g->stream)
                (void) cudaStreamDestroy(g->stream);
        cu_weights_put(g->w);
        free(g);
        return NULL;
}

static void rbee_cuda_freep(struct rbee_cuda **g) {
        rbee_cuda_free(*g);
}

static int dalloc(void *p, size_t n) {
        cudaError_t e = cudaMalloc((void **) p, n ? n : 256);
        if (e != cudaSuccess) {
                *(void **) p = NULL;
                log_error("cuda: allocating %.1f MiB: %s", n / 1048576.0, cudaGetErrorString(e));
                return rbee_cu_errno(e);
        }
        return 0;
}

int rbee_cuda_new(rbee_model *m, int device, uint32_t n_ctx, uint32_t n_batch, rbee_progress_fn progress,
                  void *userdata, struct rbee_cuda **ret) {
        _cleanup_(rbee_cuda_freep) struct rbee_cuda *g = NULL;
        const struct rbee_model_info *h = &m->info;
        struct sizes s;
        size_t total;
        cudaError_t e;
        int r, n;

        n = rbee_cuda_device_count();
        if (n < 0) {
                log_error("cuda: no usable CUDA driver in this process");
                return n;
        }
        if (device < 0 || device >= n) {
                log_error("cuda: device %d does not exist (%d device%s)", device, n, n == 1 ? "" : "s");
                return -ENODEV;
        }
        /* Batch and rows index grid dimensions, which stop at 65535. */
        if (n_batch == 0 || n_batch > 65535 || n_ctx == 0) {
                log_error("cuda: batch of %u tokens: at most 65535", n_batch);
                return -EINVAL;
        }
        if (h->head_dim > RBEE_CU_MAX_HEAD_DIM || h->n_head % h->n_head_kv != 0) {
                log_error("cuda: head size %u (at most %d) or grouping %u/%u is not supported", h->head_dim,
                          RBEE_CU_MAX_HEAD_DIM, h->n_head, h->n_head_kv);
                return -EOPNOTSUPP;
        }
        if ((e = cudaSetDevice(device)) != cudaSuccess) {
                log_error("cuda: device %d: %s", device, cudaGetErrorString(e));
                return rbee_cu_errno(e);
        }

        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->model = m;
        g->device = device;
        g->n_ctx = n_ctx;
        g->n_batch = n_batch;
        g->blas = rbee_cublas();

        /* The weight tile size depends on the largest matrix: estimate with
         * the whole tile for the VRAM check, the real size comes after. */
        context_sizes(m, n_ctx, n_batch, g->blas != NULL, RBEE_CU_TILE_ELEMS, &s, &total);
        if ((r = cu_weights_get(m, device, total, progress, userdata, &g->w)) < 0)
                return r;
        context_sizes(m, n_ctx, n_batch, g->blas != NULL, g->w->max_rows_x_k, &s, &total);

        g->lay = (struct rbee_cu_layout) {
                .n_head = h->n_head,
                .n_head_kv = h->n_head_kv,
                .head_dim = h->head_dim,
                .n_rot = m->n_rot,
                .neox = m->rope_type == RBEE_ROPE_NEOX,
                .freq_scale = m->rope_freq_scale,
                .attn_factor = m->attn_factor,
                .inv_freq = g->w->inv_freq,
                .n_ctx = n_ctx,
                .max_splits = (n_ctx + RBEE_CU_ATT_CHUNK - 1) / RBEE_CU_ATT_CHUNK,
        };

        if ((e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) != cudaSuccess) {
                g->stream = NULL;
                return rbee_cu_errno(e);
        }
        if ((r = dalloc(&g->k_cache, s.kv)) < 0 || (r = dalloc(&g->v_cache, s.kv)) < 0 ||
            (r = dalloc(&g->x, s.x)) < 0 || (r = dalloc(&g->xn, s.x)) < 0 || (r = dalloc(&g->qkv, s.qkv)) < 0 ||
            (r = dalloc(&g->att, s.att)) < 0 || (r = dalloc(&g->gu, s.gu)) < 0 || (r = dalloc(&g->hf, s.hf)) < 0 ||
            (r = dalloc(&g->part, s.part)) < 0 || (r = dalloc(&g->logits, s.logits)) < 0 ||
            (r = dalloc(&g->d_io, s.io)) < 0 || (r = dalloc(&g->top_scratch, s.top_scratch)) < 0 ||
            (r = dalloc(&g->top, s.top)) < 0)
                return r;
        if (s.tile > 0) {
                if ((r = dalloc(&g->xh, s.xh)) < 0 || (r = dalloc(&g->tile, s.tile)) < 0)
                        return r;
                g->tile_elems = s.tile / 2;
                if (g->blas->create(&g->blas_handle) != CUBLAS_STATUS_SUCCESS) {
                        g->blas_handle = NULL;
                        log_error("cuda: cannot create a cuBLAS handle on device %d", device);
                        return -EIO;
                }
                if (g->blas->set_stream(g->blas_handle, g->stream) != CUBLAS_STATUS_SUCCESS) {
                        log_error("cuda: cannot bind cuBLAS to the stream on device %d", device);
                        return -EIO; /* the handle goes with g */
                }
        }
        if ((e = cudaMallocHost((void **) &g->h_io, s.io)) != cudaSuccess) {
                g->h_io = NULL;
                return rbee_cu_errno(e);
        }
        if ((e = cudaMallocHost((void **) &g->h_logits, s.logits)) != cudaSuccess) {
                g->h_logits = NULL;
                return rbee_cu_errno(e);
        }
        if ((e = cudaMallocHost((void **) &g->h_top, s.top)) != cudaSuccess) {
                g->h_top = NULL;
                return rbee_cu_errno(e);
        }

        log_info("cuda: device %d: context of %u tokens, batch %u, %.1f MiB of VRAM (KV cache %.1f MiB)%s", device,
                 n_ctx, n_batch, total / 1048576.0, 2.0 * s.kv / 1048576.0,
                 g->blas_handle ? ", cuBLAS for prompts" : "");
        *ret = TAKE_PTR(g);
        return 0;
}

/* y (+)= W x for the B rows of x (stride ldx == the width of W). */
static cudaError_t matmul(struct rbee_cuda *g, const struct cu_mat *mat, const float *x, int ldx, int B, float *y,
                          int ldy, bool accumulate) {
        const bool gemm = g->blas_handle && B >= RBEE_CU_BLAS_MIN_BATCH;
        const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
        cudaError_t e;

        if (gemm && (e = rbee_cu_f32_to_f16(g->stream, x, (size_t) B * ldx, g->xh)) != cudaSuccess)
                return e;
        for (int i = 0; i < mat->n; i++) {
                const struct cu_seg *sg = &mat->seg[i];
                float *ys = y + sg->y_off;

                if (!gemm) {
                        e = rbee_cu_matvec(g->stream, sg->type, sg->data, sg->row_size, sg->rows, sg->K, x, ldx, B, ys,
                                           ldy, sg->bias, accumulate);
                        if (e != cudaSuccess)
                                return e;
                        continue;
                }
                /* Row-major Y[B][ldy] = X[B][K] W^T is column-major Y^T = W X^T:
                 * op(A) = W^T of the column-major K x rows view of W. */
                if (sg->type == RBEE_TYPE_F32 || sg->type == RBEE_TYPE_F16) {
                        const bool f32 = sg->type == RBEE_TYPE_F32;
                        if (g->blas->gemm_ex(g->blas_handle, CUBLAS_OP_T, CUBLAS_OP_N, sg->rows, B, sg->K, &one,
                                             sg->data, f32 ? CUDA_R_32F : CUDA_R_16F, sg->K, f32 ? (const void *) x : g->xh,
                                             f32 ? CUDA_R_32F : CUDA_R_16F, ldx, &beta, ys, CUDA_R_32F, ldy,
                                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
                                return cudaErrorUnknown;
                } else {
                        const int tile_rows = (int) MIN(MIN((size_t) sg->rows, g->tile_elems / sg->K), (size_t) 65535);
                        for (int r0 = 0; r0 < sg->rows; r0 += tile_rows) {
                                const int nr = MIN(tile_rows, sg->rows - r0);
                                e = rbee_cu_dequant_f16(g->stream, sg->type, sg->data + (size_t) r0 * sg->row_size,
                                                        sg->row_size, nr, sg->K, g->tile);
                                if (e != cudaSuccess)
                                        return e;
                                if (g->blas->gemm_ex(g->blas_handle, CUBLAS_OP_T, CUBLAS_OP_N, nr, B, sg->K, &one,
                                                     g->tile, CUDA_R_16F, sg->K, g->xh, CUDA_R_16F, ldx, &beta,
                                                     ys + r0, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F,
                                                     CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
                                        return cudaErrorUnknown;
                        }
                }
                if (sg->bias && (e = rbee_cu_add_bias(g->stream, ys, ldy, sg->bias, sg->rows, B)) != cudaSuccess)
                        return e;
        }
        return cudaSuccess;
}

#define TRY(expr)                                       \
        do {                                            \
                cudaError_t _e = (expr);                \
                if (_e != cudaSuccess)                  \
                        return _e;                      \
        } while (0)

/* The whole forward pass of B tokens, enqueued on g->stream, and with top
 * the selection of the first candidates of its logits (k read from d_io[1]). */
static cudaError_t enqueue(struct rbee_cuda *g, int B, bool top) {
        const rbee_model *m = g->model;
        const struct rbee_model_info *h = &m->info;
        const struct cu_weights *w = g->w;
        const int D = h->n_embd, Q = m->q_dim, KV = m->kv_dim, F = h->n_ff, QKV = Q + 2 * KV;
        const int32_t *d_pos = g->d_io, *d_k = g->d_io + 1, *d_tok = g->d_io + 2;
        const size_t layer_kv = (size_t) g->n_ctx * KV * 2;
        cudaStream_t s = g->stream;

        TRY(rbee_cu_get_rows(s, w->tok_embd.type, w->tok_embd.data, w->tok_embd.row_size, D, d_tok, B, g->x));
        for (uint32_t l = 0; l < h->n_layer; l++) {
                const struct cu_layer *L = &w->layers[l];
                void *kc = (uint8_t *) g->k_cache + l * layer_kv, *vc = (uint8_t *) g->v_cache + l * layer_kv;

                TRY(rbee_cu_rmsnorm(s, g->x, L->attn_norm, g->xn, D, B, h->norm_eps));
                TRY(matmul(g, &L->qkv, g->xn, D, B, g->qkv, QKV, false));
                TRY(rbee_cu_rope_store(s, &g->lay, g->qkv, QKV, B, d_pos, kc, vc));
                TRY(rbee_cu_attention(s, &g->lay, g->qkv, QKV, B, d_pos, kc, vc, g->att, g->part));
                TRY(matmul(g, &L->wo, g->att, Q, B, g->x, D, true)); /* the residual add is the accumulate */
                TRY(rbee_cu_rmsnorm(s, g->x, L->ffn_norm, g->xn, D, B, h->norm_eps));
                TRY(matmul(g, &L->gate_up, g->xn, D, B, g->gu, 2 * F, false));
                TRY(rbee_cu_swiglu(s, g->gu, F, B, g->hf));
                TRY(matmul(g, &L->down, g->hf, F, B, g->x, D, true));
        }
        TRY(rbee_cu_rmsnorm(s, g->x + (size_t) (B - 1) * D, w->output_norm, g->xn, D, 1, h->norm_eps));
        TRY(matmul(g, &w->output, g->xn, D, 1, g->logits, h->n_vocab, false));
        if (top)
                TRY(rbee_cu_topk(s, g->logits, h->n_vocab, d_k, g->top_scratch, g->top));
        return cudaSuccess;
}

/* Record the one-token pass as a graph, with the top-k selection (which
 * does nothing when k is 0). On failure generation goes on without graphs
 * (slower, same results). */
static void capture(struct rbee_cuda *g) {
        cudaGraph_t graph = NULL;
        cudaError_t e, e2;

        e = cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal);
        if (e == cudaSuccess) {
                e = enqueue(g, 1, true);
                e2 = cudaStreamEndCapture(g->stream, &graph);
                if (e == cudaSuccess)
                        e = e2;
        }
        if (e == cudaSuccess)
                e = cudaGraphInstantiate(&g->graph, graph, 0);
        if (graph)
                (void) cudaGraphDestroy(graph);
        if (e != cudaSuccess) {
                log_warning("cuda: cannot capture the decode step as a graph (%s): launching kernels one by one",
                            cudaGetErrorString(e));
                (void) cudaGetLastError();
                g->graph = NULL;
                g->no_graph = true;
        }
}

int rbee_cuda_forward(struct rbee_cuda *g, const int32_t *tokens, uint32_t n, uint32_t pos, uint32_t k,
                      float *logits, float *top_l, int32_t *top_id) {
        const int32_t n_vocab = g->model->info.n_vocab;
        cudaError_t e;

        if (n == 0 || n > g->n_batch || pos > g->n_ctx || n > g->n_ctx - pos || k > RBEE_CU_TOPK_MAX ||
            k > (uint32_t) n_vocab || (k > 0 && (!top_l || !top_id)))
                return -EINVAL;
        if ((e = cudaSetDevice(g->device)) != cudaSuccess)
                return rbee_cu_errno(e);
        /* The previous pass synchronized, so the staging buffer is free. */
        g->h_io[0] = (int32_t) pos;
        g->h_io[1] = (int32_t) k;
        memcpy(g->h_io + 2, tokens, n * sizeof(int32_t));
        e = cudaMemcpyAsync(g->d_io, g->h_io, (n + 2) * sizeof(int32_t), cudaMemcpyHostToDevice, g->stream);
        if (e == cudaSuccess) {
                if (n == 1 && !g->graph && !g->no_graph)
                        capture(g);
                e = n == 1 && g->graph ? cudaGraphLaunch(g->graph, g->stream) : enqueue(g, (int) n, k > 0);
        }
        if (e == cudaSuccess && k > 0)
                e = cudaMemcpyAsync(g->h_top, g->top, k * sizeof(uint64_t), cudaMemcpyDeviceToHost, g->stream);
        else if (e == cudaSuccess && logits)
                e = cudaMemcpyAsync(g->h_logits, g->logits, n_vocab * sizeof(float), cudaMemcpyDeviceToHost,
                                    g->stream);
        if (e == cudaSuccess)
                e = cudaStreamSynchronize(g->stream);
        if (e != cudaSuccess) {
                log_error("cuda: forward pass on device %d failed: %s", g->device, cudaGetErrorString(e));
                return rbee_cu_errno(e);
        }
        for (uint32_t i = 0; i < k; i++) {
                const uint64_t key = g->h_top[i];
                const uint32_t bits = rbee_cu_topk_bits(key);
                /* k <= n_vocab, so every slot holds a token */
                if (key == 0 || (uint32_t) rbee_cu_topk_id(key) >= (uint32_t) n_vocab) {
                        log_error("cuda: top-k selection on device %d returned no token at %u", g->device, i);
                        return -EIO;
                }
                memcpy(&top_l[i], &bits, sizeof(float));
                top_id[i] = rbee_cu_topk_id(key);
        }
        if (k == 0 && logits)
                memcpy(logits, g->h_logits, n_vocab * sizeof(float));
        return 0;
}

int rbee_cuda_get_logits(struct rbee_cuda *g, float *logits) {
        const int32_t n_vocab = g->model->info.n_vocab;
        cudaError_t e;

        if ((e = cudaSetDevice(g->device)) == cudaSuccess)
                e = cudaMemcpyAsync(g->h_logits, g->logits, n_vocab * sizeof(float), cudaMemcpyDeviceToHost,
                                    g->stream);
        if (e == cudaSuccess)
                e = cudaStreamSynchronize(g->stream);
        if (e != cudaSuccess) {
                log_error("cuda: copying the logits from device %d failed: %s", g->device, cudaGetErrorString(e));
                return rbee_cu_errno(e);
        }
        memcpy(logits, g->h_logits, n_vocab * sizeof(float));
        return 0;
}
