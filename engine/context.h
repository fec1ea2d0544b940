/* SPDX-License-Identifier: MIT */
#pragma once

/* A context: the KV cache and every buffer the forward pass needs, sized
 * once at creation so that a forward pass allocates nothing. */

#include "backend.h"
#include "model.h"
#include "threadpool.h"

/* Activation buffers per dot type: Q8_0, Q8_1, Q8_K. */
#define RBEE_ACT_SLOTS 3

struct rbee_context {
        rbee_model *model;
        rbee_pool *pool;
        uint32_t n_ctx;         /* per sequence */
        uint32_t n_batch;
        uint32_t n_seq;
        int n_threads;
        enum rbee_matmul matmul;

        /* Each sequence owns a whole cache, so that its entries sit at their
         * positions, and each kv head its own rows: attention reads one
         * contiguous run (rows kv_dim apart would meet in the same L1 sets). */
        void *k_cache;          /* [n_seq][n_layer][n_head_kv][n_ctx][head_dim] */
        void *v_cache;
        bool kv_f16;            /* F16 elements, else F32 */
        const struct rbee_quant_ops *kv_ops; /* F16's, for its from_float */
        size_t kv_bytes;        /* of each mapping */
        uint32_t *seq_pos;      /* [n_seq] tokens in each sequence's cache */
        uint32_t *seq_tmp;      /* [n_seq] scratch for rbee_decode_batch() */

        float *x, *xb, *xb2;    /* [n_batch][n_embd], xb2 [n_batch][q_dim] */
        float *q;               /* [n_batch][q_dim] */
        float *qkv;             /* [n_batch][q_dim + 2 kv_dim], fused QKV only */
        float *hb, *hb2;        /* [n_batch][2 n_ff], [n_batch][n_ff] */
        float *k, *v;           /* [n_batch][kv_dim] new keys and values, before the cache */
        float *att;             /* [n_threads][group][n_ctx] attention weights */
        float *rope;            /* [n_batch][n_rot] cos/sin pairs */
        float *inv_freq;        /* [n_rot/2] */
        float *logits;          /* [n_seq][n_vocab] the last logits of each sequence */
        float *logits_out;      /* [n_seq][n_vocab] those of the pass in flight */
        void *act[RBEE_ACT_SLOTS];
        size_t act_row[RBEE_ACT_SLOTS]; /* bytes per row of the largest width */
        float *deq;             /* [n_threads][RBEE_DEQ_ROWS][max width] */
        size_t deq_stride;

        /* The forward pass in flight: token b goes to sequence tok_seq[b]
         * at position tok_pos[b]; the n_out tokens out_tok[] want logits. */
        int32_t *tokens;        /* [n_batch] */
        uint32_t *tok_seq, *tok_pos;
        uint32_t *out_tok;      /* [n_seq] */
        uint32_t n_tokens, n_out;

        /* Tokens now in each sequence's KV cache, for prefix reuse. */
        int32_t *history;       /* [n_seq][n_ctx] */

        /* Set when the forward pass runs on a CUDA device (then k_cache and
         * v_cache are unused: the cache lives on the device). */
        struct rbee_cuda *cuda;

        /* CUDA: how many first candidates the sampler of each sequence needs
         * from its next logits (0: all logits), a hint that the next pass
         * computing them takes and clears; after it, the candidates the
         * device selected, and whether the logits themselves are still on
         * the device only (rbee_get_seq_logits() fetches them). */
        uint32_t *top_want;     /* [n_seq] */
        uint32_t *top_n;        /* [n_seq] valid entries of top_l/top_id; 0: use the logits */
        float *top_l;           /* [n_seq][RBEE_SAMPLER_TOP_MAX] */
        int32_t *top_id;        /* [n_seq][RBEE_SAMPLER_TOP_MAX] */
        bool *logits_remote;    /* [n_seq] */
};

static inline int32_t *rbee_seq_history(rbee_context *c, uint32_t seq) {
        return c->history + (size_t) seq * c->n_ctx;
}

/* The sampler of seq needs only its first k candidates (k from
 * rbee_sampler_top_needed(), 0: every logit) from the next logits computed
 * for seq. A hint: backends that cannot select them on their own compute
 * full logits, and rbee_get_seq_logits() always returns full logits. */
void rbee_seq_want_top(rbee_context *c, uint32_t seq, uint32_t k);

/* The first candidates selected for seq's last logits (see
 * rbee_sampler_sample_top()): their count, 0 when there are only the full
 * logits. Valid until the next decode. */
size_t rbee_seq_top(const rbee_context *c, uint32_t seq, const float **ret_l, const int32_t **ret_id);

#define RBEE_DEQ_ROWS 64
/* From this many tokens on, float matrices are multiplied with BLAS; below
 * it, dot products are cheaper. */
#define RBEE_BLAS_MIN_BATCH 32

/* Runs the model on c->tokens at their positions, writes their keys and
 * values to the cache and the logits of c->out_tok[] to c->logits_out;
 * moves no position. */
void rbee_forward(rbee_context *c);
