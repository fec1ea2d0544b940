/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared by the host side of the CUDA backend (device.c, upload.c, decode.c). */

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "backend.h"
#include "kernels.h"

/* -errno for a CUDA status: -ENOMEM, -ENODEV (no driver or device), else -EIO. */
int rbee_cu_errno(cudaError_t e);

/* cuBLAS is opened at run time (dlopen) so that programs start, and the
 * CPU path runs, on machines without it; NULL when it cannot be loaded. */
struct rbee_cublas {
        __typeof__(cublasCreate_v2) *create;
        __typeof__(cublasDestroy_v2) *destroy;
        __typeof__(cublasSetStream_v2) *set_stream;
        __typeof__(cublasGemmEx) *gemm_ex;
};
const struct rbee_cublas *rbee_cublas(void);

/* A run of weight rows of one type in device memory. Adjacent matrices of
 * the same type and width (Q, K and V; gate and up) are uploaded back to back
 * and become one segment, multiplied by one launch. */
struct cu_seg {
        int type;
        const uint8_t *data;
        int rows, K;
        size_t row_size;
        const float *bias;      /* rows floats, or NULL */
        int y_off;              /* first output column of these rows */
};

struct cu_mat {
        int n;
        struct cu_seg seg[3];
};

struct cu_layer {
        const float *attn_norm, *ffn_norm;
        struct cu_mat qkv;      /* -> [q | k | v] */
        struct cu_mat wo;
        struct cu_mat gate_up;  /* -> [gate | up] */
        struct cu_mat down;
};

/* The weights of one model on one device, shared by its contexts there. */
struct cu_weights {
        struct cu_weights *next;
        const rbee_model *model;
        int device;
        unsigned refs;
        void *arena;
        size_t arena_bytes;
        struct cu_seg tok_embd;
        struct cu_mat output;
        const float *output_norm;
        const float *inv_freq;
        struct cu_layer *layers;
        size_t max_rows_x_k;    /* largest segment: sizes the cuBLAS weight tile */
};

/* Reference to the weights of m on device (uploading them on first use,
 * with progress as rbee_cuda_new() says); ctx_bytes is what the caller will
 * allocate next, included in the VRAM check. */
int cu_weights_get(const rbee_model *m, int device, size_t ctx_bytes, rbee_progress_fn progress, void *userdata,
                   struct cu_weights **ret);
void cu_weights_put(struct cu_weights *w);
