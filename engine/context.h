/* SPDX-License-Identifier: MIT */
#pragma once

/* A context: the KV cache and every buffer the forward pass needs, sized
 * once at creation so that a forward pass allocates nothing. */

#include "model.h"
#include "threadpool.h"

/* Activation buffers per dot type: Q8_0, Q8_1, Q8_K. */
#define RBEE_ACT_SLOTS 3

struct rbee_context {
        rbee_model *model;
        rbee_pool *pool;
        uint32_t n_ctx;
        uint32_t n_batch;
        uint32_t pos;
        int n_threads;
        enum rbee_matmul matmul;

        float *k_cache;         /* [n_layer][n_ctx][kv_dim] */
        float *v_cache;

        float *x, *xb, *xb2;    /* [n_batch][n_embd], xb2 [n_batch][q_dim] */
        float *q;               /* [n_batch][q_dim] */
        float *qkv;             /* [n_batch][q_dim + 2 kv_dim], fused QKV only */
        float *hb, *hb2;        /* [n_batch][2 n_ff], [n_batch][n_ff] */
        float *att;             /* [n_threads][n_ctx] */
        float *rope;            /* [n_batch][n_rot] cos/sin pairs */
        float *inv_freq;        /* [n_rot/2] */
        float *logits;          /* [n_vocab] */
        void *act[RBEE_ACT_SLOTS];
        size_t act_row[RBEE_ACT_SLOTS]; /* bytes per row of the largest width */
        float *deq;             /* [n_threads][RBEE_DEQ_ROWS][max width] */
        size_t deq_stride;

        /* The tokens of the forward pass in flight. */
        const int32_t *tokens;
        uint32_t n_tokens;

        /* Tokens now in the KV cache, for prefix reuse. */
        int32_t *history;
};

#define RBEE_DEQ_ROWS 64
/* From this many tokens on, float matrices are multiplied with BLAS; below
 * it, dot products are cheaper. */
#define RBEE_BLAS_MIN_BATCH 32

/* Runs the model on c->tokens at c->pos; does not move c->pos. */
void rbee_forward(rbee_context *c);
