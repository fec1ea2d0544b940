/* SPDX-License-Identifier: MIT */
#pragma once

/* The model as the forward pass sees it: hyper-parameters read from the GGUF
 * metadata and weight tensors mapped to each architecture's roles, every
 * shape checked at load. Matrix weights stay in the mapping in their file
 * type; only the small 1-D tensors (norms, biases, rope factors) are copied
 * to F32. */

#include "gguf.h"
#include "quants.h"
#include "rbee-engine.h"

enum rbee_rope_type {
        RBEE_ROPE_NORM, /* rotate adjacent pairs (Llama as converted to GGUF) */
        RBEE_ROPE_NEOX, /* rotate x[i] with x[i + n_rot/2] (Qwen2, Phi-3) */
};

/* A 2-D weight: ne1 rows of ne0 elements. */
struct rbee_weight {
        const char *name;
        enum rbee_type type;
        const uint8_t *data;
        int64_t ne0, ne1;
        size_t row_size;
        const struct rbee_quant_ops *ops;
};

struct rbee_layer {
        float *attn_norm;
        struct rbee_weight wq, wk, wv, wqkv, wo;
        float *bq, *bk, *bv;
        float *ffn_norm;
        struct rbee_weight w_gate, w_up, w_gate_up, w_down;
        bool fused_qkv, fused_gate_up;
};

struct rbee_model {
        gguf_file *gguf;
        rbee_vocab *vocab;
        struct rbee_model_info info;
        char *name;
        char *chat_template;

        enum rbee_rope_type rope_type;
        uint32_t n_rot;
        float rope_freq_scale;  /* 1/linear scaling factor */
        float attn_factor;      /* magnitude scale for long-rope models */
        float *rope_factors;    /* n_rot/2 divisors of the frequencies, or NULL */
        uint32_t q_dim, kv_dim; /* n_head*head_dim, n_head_kv*head_dim */

        struct rbee_weight tok_embd;
        float *output_norm;
        struct rbee_weight output;
        struct rbee_layer *layers;
};

/* Bytes needed for one row of length n converted to the weight's vec_dot type. */
size_t rbee_weight_act_row_size(const struct rbee_weight *w);
