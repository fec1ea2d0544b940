/* SPDX-License-Identifier: MIT */
#pragma once

/* rbee's inference engine: load a GGUF model, create a context (KV cache and
 * scratch buffers sized once), feed tokens, read logits, sample, generate.
 *
 * Conventions: functions return 0 (or a count) on success and a negative
 * errno on failure; objects are opaque and freed by *_free(), which takes
 * NULL and returns NULL. The engine never prints and never exits: messages go
 * to the callback installed with rbee_set_log(). A model may be shared by
 * several contexts; a context is used by one thread at a time. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "sampler.h"
#include "tokenizer.h"
#include "types.h"

/* Log levels are syslog priorities, so they map onto journald directly. */
enum {
        RBEE_LOG_ERR = 3,
        RBEE_LOG_WARNING = 4,
        RBEE_LOG_NOTICE = 5,
        RBEE_LOG_INFO = 6,
        RBEE_LOG_DEBUG = 7,
};

typedef void (*rbee_log_fn)(int level, const char *msg, void *userdata);

/* Process-wide; install it before loading models. Messages above max_level are dropped. */
void rbee_set_log(rbee_log_fn fn, void *userdata, int max_level);

const char *rbee_version(void);

typedef struct rbee_model rbee_model;
typedef struct rbee_context rbee_context;

enum rbee_arch {
        RBEE_ARCH_LLAMA,
        RBEE_ARCH_QWEN2,
        RBEE_ARCH_PHI3,
};

/* Called while loading, once per layer checked and mapped. Return false to
 * cancel the load (rbee_model_load() then returns -ECANCELED). */
typedef bool (*rbee_progress_fn)(unsigned done, unsigned total, void *userdata);

struct rbee_model_params {
        rbee_progress_fn progress;
        void *progress_userdata;
        bool prefault;          /* read the weights into the page cache while loading */
        bool mlock;             /* lock the mapping in RAM (needs RLIMIT_MEMLOCK) */
};

void rbee_model_default_params(struct rbee_model_params *p);

/* Map and validate a model. On failure err (may be NULL) says why:
 * -ENOENT etc. from open(), -EBADMSG for a corrupt or inconsistent file,
 * -EOPNOTSUPP for an architecture, tensor type or tokenizer we do not run,
 * -EPROTONOSUPPORT for a GGUF version we do not read. */
int rbee_model_load(const char *path, const struct rbee_model_params *p, rbee_model **ret,
                    char *err, size_t errlen);
rbee_model *rbee_model_free(rbee_model *m);
static inline void rbee_model_freep(rbee_model **m) {
        if (*m)
                rbee_model_free(*m);
}

struct rbee_model_info {
        enum rbee_arch arch;
        const char *arch_name;          /* "llama", "qwen2", "phi3" */
        const char *name;               /* general.name, or "" */
        const char *file_type;          /* "Q4_0", "Q4_K_M", "mixed", ... */
        const char *chat_template;      /* tokenizer.chat_template, or NULL */
        uint64_t n_params;
        uint64_t weight_bytes;          /* bytes of tensor data */
        uint64_t file_bytes;
        uint32_t n_ctx_train;
        uint32_t n_embd;
        uint32_t n_layer;
        uint32_t n_head;
        uint32_t n_head_kv;
        uint32_t head_dim;
        uint32_t n_ff;
        int32_t n_vocab;
        float rope_theta;
        float norm_eps;
};

const struct rbee_model_info *rbee_model_get_info(const rbee_model *m);
const rbee_vocab *rbee_model_get_vocab(const rbee_model *m);

/* Bytes of weights one generated token reads (every matrix, one embedding row):
 * what bounds generation speed by memory bandwidth. */
uint64_t rbee_model_bytes_per_token(const rbee_model *m);

/* Bytes of KV cache a context of n_ctx tokens needs. */
uint64_t rbee_model_kv_bytes(const rbee_model *m, uint32_t n_ctx);

/* How matrix products run. AUTO: quantized weights always use the quantized
 * integer dot products (faster than dequantizing for BLAS on the CPUs we
 * measured), float weights use BLAS from RBEE_BLAS_MIN_BATCH tokens on.
 * BLAS: dequantize tiles and use BLAS for every product, even one token (a
 * reference path for tests). QUANT: never BLAS. */
enum rbee_matmul {
        RBEE_MATMUL_AUTO,
        RBEE_MATMUL_BLAS,
        RBEE_MATMUL_QUANT,
};

struct rbee_context_params {
        uint32_t n_ctx;         /* 0: the model's training context, capped at 4096 */
        uint32_t n_batch;       /* tokens per forward pass during prompt processing; 0: 512 */
        int n_threads;          /* 0: number of online CPUs */
        enum rbee_matmul matmul;
};

void rbee_context_default_params(struct rbee_context_params *p);

/* -ENOMEM when the KV cache and buffers cannot be allocated; -EINVAL for bad params. */
int rbee_context_new(rbee_model *m, const struct rbee_context_params *p, rbee_context **ret);
rbee_context *rbee_context_free(rbee_context *c);
static inline void rbee_context_freep(rbee_context **c) {
        if (*c)
                rbee_context_free(*c);
}

uint32_t rbee_context_n_ctx(const rbee_context *c);
uint32_t rbee_context_pos(const rbee_context *c);   /* tokens in the KV cache */
/* Forget everything after position pos (0 clears the cache). */
int rbee_context_truncate(rbee_context *c, uint32_t pos);
const rbee_model *rbee_context_model(const rbee_context *c);

/* Run the model on n tokens appended at the current position, and compute
 * the logits of the last one. -EINVAL for a token id out of range or n == 0,
 * -ENOSPC when the tokens do not fit in the context (nothing is changed). */
int rbee_decode(rbee_context *c, const int32_t *tokens, size_t n);
/* Logits of the last decoded token (n_vocab floats), valid until the next decode. */
const float *rbee_get_logits(const rbee_context *c);

enum rbee_stop_reason {
        RBEE_STOP_NONE,
        RBEE_STOP_EOS,          /* the model ended its turn */
        RBEE_STOP_LENGTH,       /* max_tokens reached */
        RBEE_STOP_STRING,       /* a stop string appeared */
        RBEE_STOP_CANCELLED,    /* the token callback asked to stop */
        RBEE_STOP_CONTEXT,      /* the context is full */
};

const char *rbee_stop_reason_name(enum rbee_stop_reason r);

/* Called for every generated token with the text it completes (may be empty
 * while a multi-byte character or a possible stop string is held back).
 * Return non-zero to stop generation at once. */
typedef int (*rbee_token_fn)(int32_t token, const char *text, size_t len, void *userdata);

struct rbee_generate_params {
        int32_t max_tokens;             /* < 0: until EOS or the context is full */
        const char *const *stop;        /* stop strings, not included in the output */
        size_t n_stop;
        bool ignore_eos;
        bool add_bos;                   /* prepend BOS if the vocabulary wants one */
        bool parse_special;             /* recognise special-token text in the prompt */
        bool keep_cache;                /* reuse the cached prefix shared with the last prompt */
        struct rbee_sampler_params sampling;
        rbee_token_fn on_token;
        void *userdata;
};

void rbee_generate_default_params(struct rbee_generate_params *p);

struct rbee_generate_result {
        uint32_t n_prompt;              /* prompt tokens, BOS included */
        uint32_t n_cached;              /* prompt tokens reused from the cache */
        uint32_t n_generated;
        double prompt_ms;
        double gen_ms;
        enum rbee_stop_reason stop_reason;
};

/* Tokenize prompt, process it and sample until a stop condition. The
 * context is cleared first unless keep_cache is set. -E2BIG when the prompt
 * does not fit in the context; other errors as rbee_decode(). */
int rbee_generate(rbee_context *c, const char *prompt, const struct rbee_generate_params *p,
                  struct rbee_generate_result *ret);

/* The same from token ids. */
int rbee_generate_tokens(rbee_context *c, const int32_t *prompt, size_t n_prompt,
                         const struct rbee_generate_params *p, struct rbee_generate_result *ret);
