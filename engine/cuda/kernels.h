/* SPDX-License-Identifier: MIT */
#pragma once

/* The launchers of the CUDA kernels (matvec.cu, ops.cu), callable from C.
 * Each enqueues work on stream s and returns the launch status; nothing
 * here synchronizes. Positions are read from device memory (d_pos) rather
 * than passed by value so that one captured CUDA graph serves every decode
 * step. Weight rows are in their GGUF type ("type" is the GGUF number). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Tokens one mat-vec launch handles; larger batches are split (or go to cuBLAS). */
#define RBEE_CU_MATVEC_MAX_B 8
/* Keys per attention split (flash-decoding). */
#define RBEE_CU_ATT_CHUNK 256
#define RBEE_CU_MAX_HEAD_DIM 256

/* Whether type has device kernels, and the row alignment of its element count. */
bool rbee_cu_type_supported(int type, int64_t K);

/* y[b * ldy + r] = W[r] . x[b * ldx ...] (+ bias[r]) (+ y[...] when accumulate),
 * for r < rows and b < B. */
cudaError_t rbee_cu_matvec(cudaStream_t s, int type, const void *w, size_t row_bytes, int rows, int K,
                           const float *x, int ldx, int B, float *y, int ldy, const float *bias, bool accumulate);

/* dst[r * K + k] = W[r][k] as F16, r < rows (a tile for cuBLAS). */
cudaError_t rbee_cu_dequant_f16(cudaStream_t s, int type, const void *w, size_t row_bytes, int rows, int K,
                                void *dst);

/* out[b * K ...] = row tokens[b] of W (the embedding lookup). */
cudaError_t rbee_cu_get_rows(cudaStream_t s, int type, const void *w, size_t row_bytes, int K,
                             const int32_t *tokens, int B, float *out);

cudaError_t rbee_cu_rmsnorm(cudaStream_t s, const float *x, const float *w, float *out, int n, int B, float eps);

struct rbee_cu_layout {
        int n_head, n_head_kv, head_dim;
        int n_rot;
        bool neox;
        float freq_scale, attn_factor;
        const float *inv_freq; /* device, n_rot / 2 */
        int n_ctx;
        int max_splits;
};

/* Rotate q and k of the B rows of qkv ([q | k | v], stride ldq) at
 * positions *d_pos + b, and store k and v (F16) in the caches at those positions. */
cudaError_t rbee_cu_rope_store(cudaStream_t s, const struct rbee_cu_layout *p, float *qkv, int ldq, int B,
                               const int32_t *d_pos, void *k_cache, void *v_cache);

/* Causal attention of the B queries in q (stride ldq) against the caches up
 * to *d_pos + b; out is [B][n_head * head_dim]. B == 1 uses max_splits
 * key splits and part ([n_head][max_splits][head_dim + 2] floats). */
cudaError_t rbee_cu_attention(cudaStream_t s, const struct rbee_cu_layout *p, const float *q, int ldq, int B,
                              const int32_t *d_pos, const void *k_cache, const void *v_cache, float *out,
                              float *part);

/* out[b][j] = silu(gu[b][j]) * gu[b][F + j]; gu rows are 2F long. */
cudaError_t rbee_cu_swiglu(cudaStream_t s, const float *gu, int F, int B, float *out);

cudaError_t rbee_cu_f32_to_f16(cudaStream_t s, const float *x, size_t n, void *out);

/* y[b * ldy + r] += bias[r] */
cudaError_t rbee_cu_add_bias(cudaStream_t s, float *y, int ldy, const float *bias, int rows, int B);

/* Top-k on the device (topk.cu): the first k logits in the sampler's
 * candidate order (higher logit first, equal logits by lower id, NaN as
 * -inf; see sampler.h), as 64-bit keys that compare in that order: the
 * logit's bits made monotonic in the high half, the complement of the id in
 * the low half. 0 is no candidate (fewer than k tokens). */
#define RBEE_CU_TOPK_MAX 64

#ifdef __CUDACC__
#define RBEE_CU_HD __host__ __device__
#else
#define RBEE_CU_HD
#endif

static inline RBEE_CU_HD uint64_t rbee_cu_topk_key(uint32_t bits, int32_t id) {
        if ((bits & 0x7fffffffu) > 0x7f800000u)
                bits = 0xff800000u; /* NaN: -inf */
        else if ((bits & 0x7fffffffu) == 0)
                bits = 0; /* -0 ties with +0, as the CPU's compare says */
        const uint32_t o = bits & 0x80000000u ? ~bits : bits | 0x80000000u;
        return (uint64_t) o << 32 | (uint32_t) ~(uint32_t) id;
}

/* The float bits and the id of a key that is not 0. */
static inline RBEE_CU_HD uint32_t rbee_cu_topk_bits(uint64_t key) {
        const uint32_t o = (uint32_t) (key >> 32);
        return o & 0x80000000u ? o & 0x7fffffffu : ~o;
}

static inline RBEE_CU_HD int32_t rbee_cu_topk_id(uint64_t key) {
        return (int32_t) ~(uint32_t) key;
}

/* Keys of scratch the selection over n logits needs. */
size_t rbee_cu_topk_scratch(int n);

/* The first *d_k (0..RBEE_CU_TOPK_MAX; read on the device, so that a captured
 * graph serves any k) candidates of logits[0, n) to out[0, *d_k), in order,
 * and zeros to the rest of out's RBEE_CU_TOPK_MAX keys; nothing at all for
 * *d_k == 0. */
cudaError_t rbee_cu_topk(cudaStream_t s, const float *logits, int n, const int32_t *d_k, uint64_t *scratch,
                         uint64_t *out);

#ifdef __cplusplus
}
#endif
