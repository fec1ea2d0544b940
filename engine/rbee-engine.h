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

/* Bytes of KV cache a context of n_ctx tokens needs (an F16 cache, the default). */
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

/* Where a context runs the forward pass. CUDA keeps the weights (uploaded
 * once per model and device, in their file types), the KV cache and every
 * activation on the device; only the logits come back for the sampler, or
 * when generation needs no more (greedy, top_k without penalties: see
 * rbee_sampler_top_needed()), only its first candidates. */
enum rbee_backend {
        RBEE_BACKEND_CPU,
        RBEE_BACKEND_CUDA,
};

struct rbee_context_params {
        uint32_t n_ctx;         /* 0: the model's training context, capped at 4096 */
        uint32_t n_batch;       /* tokens per forward pass during prompt processing; 0: 512 */
        int n_threads;          /* 0: number of online CPUs */
        enum rbee_matmul matmul;
        enum rbee_backend backend;
        int device;             /* CUDA device index */
        uint32_t n_seq;         /* sequences, each with a KV cache of n_ctx tokens; 0: 1 (CPU only) */
        bool kv_f32;            /* keep the KV cache in F32 instead of F16 (twice the memory, and
                                 * the bandwidth that long contexts are bound by) */
        /* CUDA: called while the weights go to the device, once per layer
         * uploaded (only by the context that uploads them: later contexts
         * on the device share them). Return false to cancel:
         * rbee_context_new() then returns -ECANCELED. It must not create
         * or free contexts. */
        rbee_progress_fn progress;
        void *progress_userdata;
};

/* The most sequences a context holds. */
#define RBEE_MAX_SEQ 256

void rbee_context_default_params(struct rbee_context_params *p);

/* CUDA devices: a count (0 or more), -EOPNOTSUPP when the engine was built
 * without CUDA, -ENODEV when there is no usable driver (libcuda.so). */
int rbee_cuda_device_count(void);

struct rbee_gpu_info {
        char name[256];
        int cc_major, cc_minor; /* compute capability */
        uint64_t total_bytes;   /* VRAM */
};

/* -ENODEV for a device that does not exist; errors as above. */
int rbee_cuda_device_info(int device, struct rbee_gpu_info *ret);

/* -ENOMEM when the KV cache and buffers cannot be allocated (for CUDA: when
 * the weights and buffers do not fit in the device's free memory); -EINVAL
 * for bad params; -ENODEV for a CUDA device that is absent or unusable;
 * -ECANCELED when the progress callback asked to stop;
 * -EOPNOTSUPP for a CUDA context in a build without CUDA, or a model with a
 * tensor type the CUDA kernels do not cover. The reason is logged. */
int rbee_context_new(rbee_model *m, const struct rbee_context_params *p, rbee_context **ret);
rbee_context *rbee_context_free(rbee_context *c);
static inline void rbee_context_freep(rbee_context **c) {
        if (*c)
                rbee_context_free(*c);
}

uint32_t rbee_context_n_ctx(const rbee_context *c);  /* per sequence */
uint32_t rbee_context_n_seq(const rbee_context *c);
uint32_t rbee_context_pos(const rbee_context *c);   /* tokens in sequence 0's KV cache */
/* Forget everything of sequence 0 after position pos (0 clears it). */
int rbee_context_truncate(rbee_context *c, uint32_t pos);
const rbee_model *rbee_context_model(const rbee_context *c);

/* Sequences: a context made with n_seq > 1 holds that many independent KV
 * caches, numbered from 0. Everything that takes no sequence works on
 * sequence 0. rbee_seq_pos() is the number of tokens in seq's cache (0 for
 * a seq out of range); rbee_seq_truncate() forgets seq's tokens from pos on
 * (-EINVAL for a seq out of range or pos past its end). */
uint32_t rbee_seq_pos(const rbee_context *c, uint32_t seq);
int rbee_seq_truncate(rbee_context *c, uint32_t seq, uint32_t pos);
/* How many tokens at the start of seq's cache are tokens[0..n): the prefix
 * a prompt would reuse there. */
uint32_t rbee_seq_match(rbee_context *c, uint32_t seq, const int32_t *tokens, size_t n);

/* Run the model on n tokens appended at the current position, and compute
 * the logits of the last one. -EINVAL for a token id out of range or n == 0,
 * -ENOSPC when the tokens do not fit in the context (nothing is changed). */
int rbee_decode(rbee_context *c, const int32_t *tokens, size_t n);
/* Logits of the last decoded token (n_vocab floats), valid until the next
 * decode. On CUDA, when generation needed only the sampler's first
 * candidates, the logits are copied from the device here, on first use:
 * NULL if that fails (logged). */
const float *rbee_get_logits(const rbee_context *c);

/* rbee_decode() for sequence seq; -EINVAL also for a seq out of range. */
int rbee_seq_decode(rbee_context *c, uint32_t seq, const int32_t *tokens, size_t n);

/* One entry of a batch: token is appended to sequence seq, at the position
 * after that sequence's last token (entries of one sequence take
 * consecutive positions in batch order). */
struct rbee_batch_entry {
        int32_t token;
        uint32_t seq;
        bool logits;            /* compute the logits after this token */
};

/* Run the model on entries that may belong to different sequences, in one
 * forward pass per n_batch entries: the matrix products take all of them at
 * once, attention reads each entry's own sequence. A token's logits do not
 * depend on what else is in the batch: they are the bits a batch of that
 * token alone gives. At most one entry per sequence may ask for logits.
 * -EINVAL for a bad token or seq or two logits entries of one sequence,
 * -ENOSPC when a sequence would overflow n_ctx; nothing is changed then. */
int rbee_decode_batch(rbee_context *c, const struct rbee_batch_entry *entries, size_t n);
/* The logits computed last for seq (n_vocab floats, zeros before any), valid
 * until a later decode of seq; NULL for a seq out of range, or as
 * rbee_get_logits() says. */
const float *rbee_get_seq_logits(const rbee_context *c, uint32_t seq);

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

/* Streams: rbee_generate_tokens() cut into steps, so that one thread can
 * generate for several sequences of a context at once, their decode steps
 * batched into one forward pass (rbee_decode_batch()). A stream gives the
 * same tokens, text and stop reason as rbee_generate_tokens() would on the
 * same sequence, whatever the other streams do. */
typedef struct rbee_stream rbee_stream;

/* Prepare generation on sequence seq: check the parameters, make the
 * sampler, find the cached prefix (keep_cache) and forget the rest of seq's
 * cache. Nothing is decoded yet. prompt, p->stop and p->userdata must stay
 * valid until the stream is freed. -EINVAL for bad arguments or a seq out of
 * range, -E2BIG for a prompt over the context. Not thread-safe with
 * anything else on the same context. */
int rbee_stream_new(rbee_context *c, uint32_t seq, const int32_t *prompt, size_t n_prompt,
                    const struct rbee_generate_params *p, rbee_stream **ret);
rbee_stream *rbee_stream_free(rbee_stream *s);
static inline void rbee_stream_freep(rbee_stream **s) {
        if (*s)
                rbee_stream_free(*s);
}

/* Decode up to max (0: all) prompt tokens that are not in the cache yet.
 * Returns how many remain (0: the stream is ready to step), or an error
 * from rbee_decode(). */
int rbee_stream_prefill(rbee_stream *s, size_t max);

/* One step of n streams of one context (distinct sequences): each
 * unfinished stream whose prompt is done samples a token and hands it to its
 * on_token in array order, then the tokens of those still going are decoded
 * together, and with them the rest of the prompts that are short enough
 * (fewer than 32 tokens in all; longer ones need rbee_stream_prefill()).
 * Returns how many streams the pass carried (0 when none could go on: all
 * finished, or only long prompts left), -EINVAL for bad arguments, or a
 * decode error (which ends the streams of that pass with it). */
int rbee_stream_step(rbee_stream *const *s, size_t n);

/* Prompt tokens of s not decoded yet. */
size_t rbee_stream_pending(const rbee_stream *s);

/* True once the stream stopped (see rbee_stream_result()) or failed. */
bool rbee_stream_finished(const rbee_stream *s);
/* The counts and stop reason so far; the error when the stream failed. */
int rbee_stream_result(const rbee_stream *s, struct rbee_generate_result *ret);
