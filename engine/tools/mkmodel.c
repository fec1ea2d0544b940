/* SPDX-License-Identifier: MIT */
/* rbee-mkmodel: write a GGUF model with seeded random weights at a real
 * model's shape, in any weight type the engine runs, quantized with the
 * engine's own quantizer. This machine cannot download weights, so tests and
 * benchmarks make their models with this tool.
 *
 * Metadata keys, tensor names, shapes and the per-tensor type mixtures follow
 * what llama.cpp's converters and llama-quantize write, so a file from here
 * looks like a real one to any GGUF reader.
 *
 * Weights: every element is a pure function of (seed, tensor name, row,
 * column), drawn from a counter-based generator, so the same seed and shape
 * give the same underlying weights whatever the output type (an F32 and a
 * Q4_0 file differ only by quantization error), and rows can be produced in
 * any order by any number of threads. The distribution is Irwin-Hall with
 * four terms (the sum of four uniforms, rescaled to unit variance): normal
 * enough for a weight matrix, bounded at +-3.46 sigma. Scales keep the
 * activations of the random network O(1) through every layer:
 *   - matrices reading the residual stream (attn_q/k/v/qkv, ffn_gate/up) and
 *     the output head: std 1/sqrt(fan_in), so each output has unit variance
 *     for a unit-RMS (normalized) input; for dim 2048 that is 0.022, about
 *     the 0.02 real models are initialized with;
 *   - matrices writing into the residual stream (attn_output, ffn_down):
 *     1/sqrt(fan_in) scaled by 1/sqrt(2 * n_layers) (the GPT-2 residual
 *     scaling), so the 2 * n_layers additions sum to O(1) and no layer
 *     drowns the others;
 *   - token_embd: 1/sqrt(dim), as in real models (embeddings are small and
 *     the first RMS norm rescales them); with tied embeddings the logits then
 *     have unit variance, like those of the untied output head;
 *   - norm weights 1 + 0.1 noise, biases 0.02 noise. */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "gguf-writer.h"
#include "gguf.h"
#include "macros.h"
#include "quants.h"
#include "threadpool.h"
#include "types.h"

#define PROG "rbee-mkmodel"
#define EXIT_USAGE 2

/* ---------------------------------------------------------------- shapes */

enum arch {
        ARCH_LLAMA,
        ARCH_QWEN2,
        ARCH_PHI3,
        _ARCH_MAX,
};

static const char *const arch_names[_ARCH_MAX] = {
        [ARCH_LLAMA] = "llama",
        [ARCH_QWEN2] = "qwen2",
        [ARCH_PHI3] = "phi3",
};

enum vocab_kind {
        VOCAB_SPM,        /* Llama 2 / TinyLlama / Mistral SentencePiece */
        VOCAB_SPM_PHI3,   /* the same plus Phi-3's chat tokens */
        VOCAB_BPE_QWEN2,  /* byte-level BPE with Qwen2's pre-tokenizer and ChatML tokens */
        VOCAB_BPE_LLAMA3, /* byte-level BPE with Llama 3's pre-tokenizer and header tokens */
};

struct hparams {
        enum arch arch;
        uint32_t dim, n_layers, n_heads, n_kv_heads, ffn, n_vocab, n_ctx;
        uint32_t head_dim; /* 0: dim / n_heads */
        float rope_theta, eps;
        bool tied;
        enum vocab_kind vocab;
        const char *chat_template; /* template name */
};

struct shape {
        const char *name;
        const char *desc;
        struct hparams hp;
};

static const struct shape shapes[] = {
        { "tinyllama-1.1b", "TinyLlama 1.1B (Chat v1.0)",
          { ARCH_LLAMA, 2048, 22, 32, 4, 5632, 32000, 2048, 0, 10000.0f, 1e-5f, false, VOCAB_SPM, "zephyr" } },
        { "qwen2.5-0.5b", "Qwen2.5 0.5B Instruct",
          { ARCH_QWEN2, 896, 24, 14, 2, 4864, 151936, 32768, 0, 1000000.0f, 1e-6f, true, VOCAB_BPE_QWEN2, "chatml" } },
        { "phi3-mini", "Phi-3 mini 4k Instruct",
          { ARCH_PHI3, 3072, 32, 32, 32, 8192, 32064, 4096, 0, 10000.0f, 1e-5f, false, VOCAB_SPM_PHI3, "phi3" } },
        { "llama-7b", "Llama 2 7B",
          { ARCH_LLAMA, 4096, 32, 32, 32, 11008, 32000, 4096, 0, 10000.0f, 1e-5f, false, VOCAB_SPM, "zephyr" } },
        { "mistral-7b", "Mistral 7B Instruct v0.2",
          { ARCH_LLAMA, 4096, 32, 32, 8, 14336, 32000, 32768, 0, 1000000.0f, 1e-5f, false, VOCAB_SPM, "mistral" } },
        { "llama3-8b", "Llama 3 8B Instruct",
          { ARCH_LLAMA, 4096, 32, 32, 8, 14336, 128256, 8192, 0, 500000.0f, 1e-5f, false, VOCAB_BPE_LLAMA3, "llama3" } },
        { "tiny", "test-sized llama",
          { ARCH_LLAMA, 64, 2, 4, 2, 192, 512, 256, 0, 10000.0f, 1e-5f, false, VOCAB_SPM, "zephyr" } },
        { "tiny-qwen2", "test-sized qwen2 (QKV biases, tied embeddings)",
          { ARCH_QWEN2, 64, 2, 4, 2, 192, 512, 256, 0, 1000000.0f, 1e-6f, true, VOCAB_BPE_QWEN2, "chatml" } },
        { "tiny-phi3", "test-sized phi3 (fused QKV and gate|up)",
          { ARCH_PHI3, 64, 2, 4, 4, 192, 512, 256, 0, 10000.0f, 1e-5f, false, VOCAB_SPM_PHI3, "phi3" } },
};

/* What an --arch override brings along when it changes the architecture. */
static void arch_defaults(enum arch a, struct hparams *hp) {
        switch (a) {
        case ARCH_LLAMA:
                hp->vocab = VOCAB_SPM;
                hp->chat_template = "zephyr";
                break;
        case ARCH_QWEN2:
                hp->vocab = VOCAB_BPE_QWEN2;
                hp->chat_template = "chatml";
                break;
        case ARCH_PHI3:
                hp->vocab = VOCAB_SPM_PHI3;
                hp->chat_template = "phi3";
                break;
        default:
                break;
        }
}

/* ------------------------------------------------------- chat templates */

/* The templates as the models ship them in tokenizer_config.json. */
static const struct {
        const char *name;
        const char *alias;
        const char *text;
} templates[] = {
        { "zephyr", "tinyllama",
          "{% for message in messages %}\n"
          "{% if message['role'] == 'user' %}\n"
          "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'system' %}\n"
          "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'assistant' %}\n"
          "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
          "{% endif %}\n"
          "{% if loop.last and add_generation_prompt %}\n"
          "{{ '<|assistant|>' }}\n"
          "{% endif %}\n"
          "{% endfor %}" },
        { "chatml", "qwen2.5",
          "{%- if tools %}\n"
          "    {{- '<|im_start|>system\\n' }}\n"
          "    {%- if messages[0]['role'] == 'system' %}\n"
          "        {{- messages[0]['content'] }}\n"
          "    {%- else %}\n"
          "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
          "    {%- endif %}\n"
          "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
          "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
          "    {%- for tool in tools %}\n"
          "        {{- \"\\n\" }}\n"
          "        {{- tool | tojson }}\n"
          "    {%- endfor %}\n"
          "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and "
          "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
          "{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
          "{%- else %}\n"
          "    {%- if messages[0]['role'] == 'system' %}\n"
          "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
          "    {%- else %}\n"
          "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
          "assistant.<|im_end|>\\n' }}\n"
          "    {%- endif %}\n"
          "{%- endif %}\n"
          "{%- for message in messages %}\n"
          "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
          "(message.role == \"assistant\" and not message.tool_calls) %}\n"
          "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
          "    {%- elif message.role == \"assistant\" %}\n"
          "        {{- '<|im_start|>' + message.role }}\n"
          "        {%- if message.content %}\n"
          "            {{- '\\n' + message.content }}\n"
          "        {%- endif %}\n"
          "        {%- for tool_call in message.tool_calls %}\n"
          "            {%- if tool_call.function is defined %}\n"
          "                {%- set tool_call = tool_call.function %}\n"
          "            {%- endif %}\n"
          "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
          "            {{- tool_call.name }}\n"
          "            {{- '\", \"arguments\": ' }}\n"
          "            {{- tool_call.arguments | tojson }}\n"
          "            {{- '}\\n</tool_call>' }}\n"
          "        {%- endfor %}\n"
          "        {{- '<|im_end|>\\n' }}\n"
          "    {%- elif message.role == \"tool\" %}\n"
          "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
          "            {{- '<|im_start|>user' }}\n"
          "        {%- endif %}\n"
          "        {{- '\\n<tool_response>\\n' }}\n"
          "        {{- message.content }}\n"
          "        {{- '\\n</tool_response>' }}\n"
          "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
          "            {{- '<|im_end|>\\n' }}\n"
          "        {%- endif %}\n"
          "    {%- endif %}\n"
          "{%- endfor %}\n"
          "{%- if add_generation_prompt %}\n"
          "    {{- '<|im_start|>assistant\\n' }}\n"
          "{%- endif %}\n" },
        { "phi3", "phi-3",
          "{% for message in messages %}{% if message['role'] == 'system' %}"
          "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
          "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
          "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
          "{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}" },
        { "llama3", "llama-3",
          "{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
          "+ message['content'] | trim + '<|eot_id|>' %}"
          "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}" },
        { "mistral", "mistral-instruct",
          "{{ bos_token }}{% for message in messages %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
          "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
          "{% endfor %}" },
};

static const char *find_template(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(templates); i++)
                if (strcasecmp(name, templates[i].name) == 0 || strcasecmp(name, templates[i].alias) == 0)
                        return templates[i].text;
        return NULL;
}

/* ---------------------------------------------------- file types, mixes */

enum ftype {
        FT_F32,
        FT_F16,
        FT_BF16,
        FT_Q4_0,
        FT_Q4_1,
        FT_Q5_0,
        FT_Q5_1,
        FT_Q8_0,
        FT_Q4_K_S,
        FT_Q4_K_M,
        FT_Q5_K_S,
        FT_Q5_K_M,
        FT_Q6_K,
        _FT_MAX,
};

/* llama_ftype numbers are what general.file_type holds. */
static const struct {
        const char *name;
        const char *alias;
        uint32_t llama_ftype;
        enum rbee_type base;
} ftypes[_FT_MAX] = {
        [FT_F32] = { "F32", NULL, 0, RBEE_TYPE_F32 },
        [FT_F16] = { "F16", NULL, 1, RBEE_TYPE_F16 },
        [FT_BF16] = { "BF16", NULL, 32, RBEE_TYPE_BF16 },
        [FT_Q4_0] = { "Q4_0", NULL, 2, RBEE_TYPE_Q4_0 },
        [FT_Q4_1] = { "Q4_1", NULL, 3, RBEE_TYPE_Q4_1 },
        [FT_Q5_0] = { "Q5_0", NULL, 8, RBEE_TYPE_Q5_0 },
        [FT_Q5_1] = { "Q5_1", NULL, 9, RBEE_TYPE_Q5_1 },
        [FT_Q8_0] = { "Q8_0", NULL, 7, RBEE_TYPE_Q8_0 },
        [FT_Q4_K_S] = { "Q4_K_S", NULL, 14, RBEE_TYPE_Q4_K },
        [FT_Q4_K_M] = { "Q4_K_M", "Q4_K", 15, RBEE_TYPE_Q4_K },
        [FT_Q5_K_S] = { "Q5_K_S", NULL, 16, RBEE_TYPE_Q5_K },
        [FT_Q5_K_M] = { "Q5_K_M", "Q5_K", 17, RBEE_TYPE_Q5_K },
        [FT_Q6_K] = { "Q6_K", NULL, 18, RBEE_TYPE_Q6_K },
};

static int parse_ftype(const char *s) {
        for (int i = 0; i < _FT_MAX; i++)
                if (strcasecmp(s, ftypes[i].name) == 0 || (ftypes[i].alias && strcasecmp(s, ftypes[i].alias) == 0))
                        return i;
        return -EINVAL;
}

static bool ftype_quantized(enum ftype f) {
        return f != FT_F32 && f != FT_F16 && f != FT_BF16;
}

static bool type_is_k(enum rbee_type t) {
        return t == RBEE_TYPE_Q4_K || t == RBEE_TYPE_Q5_K || t == RBEE_TYPE_Q6_K;
}

enum tkind {
        T_TOKEN_EMBD,
        T_OUTPUT_NORM,
        T_OUTPUT,
        T_ATTN_NORM,
        T_ATTN_Q,
        T_ATTN_K,
        T_ATTN_V,
        T_ATTN_QKV,
        T_ATTN_OUT,
        T_ATTN_Q_BIAS,
        T_ATTN_K_BIAS,
        T_ATTN_V_BIAS,
        T_FFN_NORM,
        T_FFN_GATE,
        T_FFN_UP,
        T_FFN_DOWN,
};

/* llama.cpp's rule for which layers get more bits in the _M mixes: the
 * first and last eighth, and every third layer in between. */
static bool use_more_bits(uint32_t layer, uint32_t n_layers) {
        int64_t i = layer, n = n_layers;

        return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The type llama-quantize gives a 2-D weight (llama_tensor_get_type, for
 * the file types we write and the dense llama/qwen2/phi3 architectures). */
static enum rbee_type mix_type(enum ftype ft, bool pure, enum tkind kind, uint32_t layer, uint32_t n_layers,
                               uint64_t ne0, bool tied) {
        enum rbee_type t = ftypes[ft].base;

        if (!ftype_quantized(ft))
                return t;
        if (!pure) {
                if (kind == T_OUTPUT || (tied && kind == T_TOKEN_EMBD)) {
                        /* The output head (or the embedding standing in for it)
                         * is the tensor most sensitive to quantization. */
                        if (ne0 % QK_K != 0)
                                t = RBEE_TYPE_Q8_0;
                        else if (t != RBEE_TYPE_Q8_0)
                                t = RBEE_TYPE_Q6_K;
                } else if (kind == T_ATTN_V) {
                        if ((ft == FT_Q4_K_M || ft == FT_Q5_K_M) && use_more_bits(layer, n_layers))
                                t = RBEE_TYPE_Q6_K;
                        else if (ft == FT_Q4_K_S && layer < 4)
                                t = RBEE_TYPE_Q5_K;
                } else if (kind == T_FFN_DOWN) {
                        if ((ft == FT_Q4_K_M || ft == FT_Q5_K_M) && use_more_bits(layer, n_layers))
                                t = RBEE_TYPE_Q6_K;
                        else if (ft == FT_Q4_K_S && layer < n_layers / 8)
                                t = RBEE_TYPE_Q5_K;
                } else if (kind == T_ATTN_QKV) {
                        if (ft == FT_Q4_K_M)
                                t = RBEE_TYPE_Q5_K;
                        else if (ft == FT_Q5_K_M)
                                t = RBEE_TYPE_Q6_K;
                }
        }
        /* K-quants need rows in whole 256-blocks; llama.cpp falls back. */
        if (type_is_k(t) && ne0 % QK_K != 0)
                t = t == RBEE_TYPE_Q4_K ? RBEE_TYPE_Q5_0 : t == RBEE_TYPE_Q5_K ? RBEE_TYPE_Q5_1 : RBEE_TYPE_Q8_0;
        return t;
}

/* ---------------------------------------------------------------- weights */

static uint64_t mix64(uint64_t z) {
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL; /* splitmix64's finalizer */
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s) {
        uint64_t h = 0xcbf29ce484222325ULL;

        for (; *s; s++) {
                h ^= (uint8_t) *s;
                h *= 0x100000001b3ULL;
        }
        return h;
}

struct wtensor {
        char name[GGUF_WRITER_MAX_TENSOR_NAME + 1];
        enum tkind kind;
        uint32_t layer;
        uint32_t n_dims;
        uint64_t ne[2];
        enum rbee_type type;
        float mean, std;
        uint64_t key;
        uint64_t row_size;
        struct generator *gen;
};

struct generator {
        rbee_pool *pool;
        int n_threads;
        float **scratch; /* one row per thread */
};

/* One row of a tensor's float weights. */
static void fill_row(const struct wtensor *t, uint64_t row, float *x) {
        const float sqrt3 = 1.7320508f;
        uint64_t key = mix64(t->key + (row + 1) * 0x9e3779b97f4a7c15ULL);

        for (uint64_t j = 0; j < t->ne[0]; j++) {
                uint64_t h = mix64(key + j * 0xd1b54a32d192ed03ULL);
                /* Four 16-bit uniforms, each centred on its cell. */
                float s = (float) (h & 0xffff) + (float) ((h >> 16) & 0xffff) + (float) ((h >> 32) & 0xffff) +
                          (float) (h >> 48) + 2.0f;

                x[j] = t->mean + t->std * sqrt3 * (s * (1.0f / 65536.0f) - 2.0f);
        }
}

struct chunk_job {
        const struct wtensor *t;
        uint64_t row0;
        uint64_t n_rows;
        uint8_t *buf;
        atomic_int error;
};

static void chunk_work(int ith, int nth, void *arg) {
        struct chunk_job *job = arg;
        const struct wtensor *t = job->t;
        float *x = t->gen->scratch[ith];
        long b, e;

        rbee_split((long) job->n_rows, ith, nth, 1, &b, &e);
        for (long r = b; r < e; r++) {
                int k;

                fill_row(t, job->row0 + (uint64_t) r, x);
                k = rbee_quantize_row(t->type, x, job->buf + (uint64_t) r * t->row_size, (int64_t) t->ne[0]);
                if (k < 0)
                        atomic_store(&job->error, k);
        }
}

static int tensor_rows(void *userdata, uint64_t row0, uint64_t n_rows, void *buf) {
        struct wtensor *t = userdata;
        struct chunk_job job = { .t = t, .row0 = row0, .n_rows = n_rows, .buf = buf };

        if (n_rows > LONG_MAX)
                return -EOVERFLOW;
        atomic_init(&job.error, 0);
        rbee_pool_run(t->gen->pool, chunk_work, &job);
        return atomic_load(&job.error);
}

/* ------------------------------------------------------------ vocabulary */

enum {
        TOK_NORMAL = 1,
        TOK_UNKNOWN = 2,
        TOK_CONTROL = 3,
        TOK_USER_DEFINED = 4,
        TOK_UNUSED = 5,
        TOK_BYTE = 6,
};

struct vocab {
        char **tokens;
        float *scores;
        int32_t *types;
        size_t n, cap;
        size_t *slots; /* open addressing over tokens, index + 1 */
        size_t n_slots;

        char **merges;
        size_t n_merges, cap_merges;

        const char *model, *pre;
        int32_t bos, eos, unk, pad; /* -1: none */
        bool add_bos;
        bool has_scores;
};

static void vocab_done(struct vocab *v) {
        for (size_t i = 0; i < v->n; i++)
                free(v->tokens[i]);
        for (size_t i = 0; i < v->n_merges; i++)
                free(v->merges[i]);
        free(v->tokens);
        free(v->scores);
        free(v->types);
        free(v->slots);
        free(v->merges);
}

static int vocab_init(struct vocab *v, size_t n_vocab) {
        size_t slots = 16;

        *v = (struct vocab) { .bos = -1, .eos = -1, .unk = -1, .pad = -1 };
        while (slots < n_vocab * 2)
                slots *= 2;
        v->tokens = calloc(n_vocab, sizeof(char *));
        v->scores = calloc(n_vocab, sizeof(float));
        v->types = calloc(n_vocab, sizeof(int32_t));
        v->slots = calloc(slots, sizeof(size_t));
        if (!v->tokens || !v->scores || !v->types || !v->slots)
                return -ENOMEM;
        v->cap = n_vocab;
        v->n_slots = slots;
        return 0;
}

static size_t *vocab_slot(const struct vocab *v, const char *s) {
        size_t mask = v->n_slots - 1;

        for (size_t h = (size_t) fnv1a(s) & mask;; h = (h + 1) & mask)
                if (v->slots[h] == 0 || strcmp(v->tokens[v->slots[h] - 1], s) == 0)
                        return &v->slots[h];
}

static bool vocab_has(const struct vocab *v, const char *s) {
        return *vocab_slot(v, s) != 0;
}

static int32_t vocab_id(const struct vocab *v, const char *s) {
        size_t i = *vocab_slot(v, s);

        return i == 0 ? -1 : (int32_t) (i - 1);
}

/* Returns 1 when added, 0 when the text is already there, -ENOSPC when full. */
static int vocab_add(struct vocab *v, const char *s, float score, int32_t type) {
        size_t *slot;

        if (v->n >= v->cap)
                return -ENOSPC;
        slot = vocab_slot(v, s);
        if (*slot != 0)
                return 0;
        v->tokens[v->n] = strdup(s);
        if (!v->tokens[v->n])
                return -ENOMEM;
        v->scores[v->n] = score;
        v->types[v->n] = type;
        *slot = ++v->n;
        return 1;
}

static int vocab_add_merge(struct vocab *v, const char *a, const char *b) {
        char *m;

        if (v->n_merges == v->cap_merges) {
                size_t cap = v->cap_merges ? v->cap_merges * 2 : 1024;
                char **p = reallocarray(v->merges, cap, sizeof(char *));

                if (!p)
                        return -ENOMEM;
                v->merges = p;
                v->cap_merges = cap;
        }
        if (asprintf(&m, "%s %s", a, b) < 0)
                return -ENOMEM;
        v->merges[v->n_merges++] = m;
        return 0;
}

/* Common English words, so that synthesized vocabularies split ordinary text
 * into word-sized tokens the way real ones do. */
static const char *const words[] = {
        "the", "of", "and", "to", "a", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
        "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word",
        "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an",
        "each", "which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many",
        "then", "them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has",
        "look", "two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than",
        "first", "water", "been", "call", "who", "its", "now", "find", "long", "down", "day", "did", "get",
        "come", "made", "may", "part", "over", "new", "take", "only", "little", "work", "know", "place",
        "year", "live", "me", "back", "give", "most", "very", "after", "thing", "our", "just", "name",
        "good", "man", "think", "say", "great", "where", "help", "through", "much", "before", "line",
        "right", "too", "mean", "old", "any", "same", "tell", "boy", "girl", "came", "want", "show", "also",
        "around", "three", "small", "put", "end", "does", "another", "well", "large", "must", "big",
        "even", "such", "because", "turn", "here", "why", "ask", "went", "read", "need", "land", "home",
        "us", "move", "try", "kind", "hand", "again", "play", "away", "animal", "house", "once", "upon",
        "story", "happy", "friend", "park", "hello", "world", "model", "token", "text", "question",
        "answer", "ing", "ed", "er", "es", "ly", "tion", "s",
        "The", "I", "A", "It", "He", "She", "They", "We", "You", "Once", "Hello", "What", "How", "This",
};

/* The GPT-2 byte-level alphabet: printable bytes stand for themselves, the
 * other 68 are moved to U+0100.. in byte order. Writes the UTF-8 of byte b's
 * symbol and returns its length. */
static size_t byte_symbol(uint8_t b, char out[4]) {
        uint32_t cp;

        if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae))
                cp = b;
        else {
                uint32_t n = 0;

                for (uint32_t c = 0; c < b; c++)
                        if (!((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae)))
                                n++;
                cp = 256 + n;
        }
        if (cp < 0x80) {
                out[0] = (char) cp;
                out[1] = 0;
                return 1;
        }
        out[0] = (char) (0xc0 | (cp >> 6));
        out[1] = (char) (0x80 | (cp & 0x3f));
        out[2] = 0;
        return 2;
}

/* The 256 symbols in the order GPT-2 numbers them (printable first). */
static int bpe_add_bytes(struct vocab *v) {
        uint8_t order[256];
        size_t n = 0;
        int r;

        for (int b = 0; b < 256; b++)
                if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae)
                        order[n++] = (uint8_t) b;
        for (int b = 0; b < 256; b++)
                if (!((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae))
                        order[n++] = (uint8_t) b;
        for (size_t i = 0; i < 256; i++) {
                char sym[4];

                byte_symbol(order[i], sym);
                r = vocab_add(v, sym, 0.0f, TOK_NORMAL);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Adds the byte-level BPE tokens for an ASCII word, left to right, each with
 * the merge that makes it, so every token is reachable by merging. Stops
 * quietly at limit. */
static int bpe_add_word(struct vocab *v, const char *w, size_t limit) {
        char cur[256], sym[4];
        size_t len;
        int r;

        len = byte_symbol((uint8_t) w[0], cur);
        for (size_t i = 1; w[i]; i++) {
                size_t k = byte_symbol((uint8_t) w[i], sym);
                char next[256];

                if (len + k >= sizeof(next))
                        return -E2BIG;
                memcpy(next, cur, len);
                memcpy(next + len, sym, k + 1);
                if (!vocab_has(v, next)) {
                        if (v->n >= limit)
                                return 0;
                        r = vocab_add(v, next, 0.0f, TOK_NORMAL);
                        if (r < 0)
                                return r;
                        r = vocab_add_merge(v, cur, sym);
                        if (r < 0)
                                return r;
                }
                memcpy(cur, next, len + k + 1);
                len += k;
        }
        return 0;
}

#define SPM_SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's space marker */

/* SentencePiece pieces for a word: every prefix (of at least two symbols)
 * of the piece, so the bigram merges can build it, with scores falling in
 * the order added (earlier pieces merge first). */
static int spm_add_word(struct vocab *v, const char *w, bool space, size_t limit, float *score) {
        char buf[256];
        size_t len = 0, n_sym = 0;
        int r;

        if (space) {
                memcpy(buf, SPM_SPACE, 3);
                len = 3;
                n_sym = 1;
        }
        for (size_t i = 0; w[i]; i++) {
                if (len + 2 >= sizeof(buf))
                        return -E2BIG;
                buf[len++] = w[i];
                buf[len] = 0;
                n_sym++;
                if (n_sym < 2 || vocab_has(v, buf))
                        continue;
                if (v->n >= limit)
                        return 0;
                r = vocab_add(v, buf, *score, TOK_NORMAL);
                if (r < 0)
                        return r;
                *score -= 1.0f;
        }
        return 0;
}

/* Lowercase letter strings of growing length, as filler pieces once the word
 * list is used up: enumerating by length keeps every prefix present. */
static int add_filler(struct vocab *v, bool bpe, size_t limit, float *score) {
        char s[8];
        int r;

        for (unsigned len = 1; len <= 5 && v->n < limit; len++) {
                uint64_t count = 1;

                for (unsigned i = 0; i < len; i++)
                        count *= 26;
                for (uint64_t idx = 0; idx < count && v->n < limit; idx++) {
                        uint64_t x = idx;

                        for (unsigned i = len; i > 0; i--) {
                                s[i] = (char) ('a' + x % 26);
                                x /= 26;
                        }
                        s[len + 1] = 0;
                        s[0] = ' ';
                        /* With and without the leading space. */
                        for (int with_space = 1; with_space >= 0 && v->n < limit; with_space--) {
                                const char *w = with_space ? s : s + 1;

                                if (bpe)
                                        r = strlen(w) >= 2 ? bpe_add_word(v, w, limit) : 0;
                                else
                                        r = spm_add_word(v, s + 1, with_space, limit, score);
                                if (r < 0)
                                        return r;
                        }
                }
        }
        /* Only vocabularies of millions of tokens get here. */
        for (uint64_t i = 0; v->n < limit; i++) {
                char name[32];

                snprintf(name, sizeof(name), "<fill_%" PRIu64 ">", i);
                r = vocab_add(v, name, bpe ? 0.0f : -1e9f, TOK_NORMAL);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int add_specials(struct vocab *v, const char *const *names, size_t n, int32_t type, float score) {
        for (size_t i = 0; i < n; i++) {
                int r = vocab_add(v, names[i], score, type);

                if (r < 0)
                        return r;
                if (r == 0)
                        return -EEXIST;
        }
        return 0;
}

static int add_pads(struct vocab *v, int32_t type, float score) {
        while (v->n < v->cap) {
                char name[32];
                int r;

                snprintf(name, sizeof(name), "[PAD%zu]", v->n);
                r = vocab_add(v, name, score, type);
                if (r <= 0)
                        return r < 0 ? r : -EEXIST;
        }
        return 0;
}

static const char *const phi3_specials[] = {
        "<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
        "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>",
};

static const char *const qwen2_specials[] = {
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
        "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
        "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
        /* Qwen2.5 marks these as not special: user-defined. */
        "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
        "<|repo_name|>", "<|file_sep|>",
};
#define QWEN2_N_CONTROL 14

/* Minimum size of each synthesized vocabulary: its fixed tokens plus room
 * for some pieces. */
static uint32_t vocab_min(enum vocab_kind k) {
        switch (k) {
        case VOCAB_SPM:
                return 3 + 256 + 95 + 16;
        case VOCAB_SPM_PHI3:
                return 3 + 256 + 95 + ELEMENTSOF(phi3_specials) + 16;
        case VOCAB_BPE_QWEN2:
                return 256 + 3 + 16;
        case VOCAB_BPE_LLAMA3:
                return 256 + 10 + 16;
        }
        return UINT32_MAX;
}

static int build_spm(struct vocab *v, bool phi3) {
        size_t n_vocab = v->cap, limit = n_vocab;
        float score = -1.0f;
        int r;

        if (phi3) {
                /* Phi-3: 32000 SentencePiece tokens, 11 chat tokens, padding to 32064. */
                limit = n_vocab >= 32064 ? n_vocab - 64 : n_vocab - ELEMENTSOF(phi3_specials);
        }
        v->model = "llama";
        v->pre = "default";
        v->has_scores = true;
        v->add_bos = true;

        r = vocab_add(v, "<unk>", 0.0f, TOK_UNKNOWN);
        if (r >= 0)
                r = vocab_add(v, "<s>", 0.0f, TOK_CONTROL);
        if (r >= 0)
                r = vocab_add(v, "</s>", 0.0f, TOK_CONTROL);
        for (int b = 0; r >= 0 && b < 256; b++) {
                char name[8];

                snprintf(name, sizeof(name), "<0x%02X>", b);
                r = vocab_add(v, name, 0.0f, TOK_BYTE);
        }
        if (r < 0)
                return r;
        v->unk = 0;
        v->bos = 1;
        v->eos = 2;

        /* Single characters never come out of a merge; their scores are moot. */
        r = vocab_add(v, SPM_SPACE, -1e6f, TOK_NORMAL);
        for (int c = '!'; r >= 0 && c <= '~'; c++) {
                char s[2] = { (char) c, 0 };

                r = vocab_add(v, s, -1e6f, TOK_NORMAL);
        }
        if (r < 0)
                return r;

        for (size_t i = 0; i < ELEMENTSOF(words) && v->n < limit; i++) {
                r = spm_add_word(v, words[i], true, limit, &score);
                if (r >= 0)
                        r = spm_add_word(v, words[i], false, limit, &score);
                if (r < 0)
                        return r;
        }
        r = add_filler(v, false, limit, &score);
        if (r < 0)
                return r;

        if (phi3) {
                r = add_specials(v, phi3_specials, ELEMENTSOF(phi3_specials), TOK_CONTROL, 0.0f);
                if (r < 0)
                        return r;
                v->eos = vocab_id(v, "<|endoftext|>");
                v->pad = v->eos;
                r = add_pads(v, TOK_UNUSED, -10000.0f);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int build_bpe_qwen2(struct vocab *v) {
        size_t n_vocab = v->cap, n_special, limit;
        int r;

        /* Qwen2.5's layout: 151643 BPE tokens, 22 specials, padding to 151936.
         * Smaller vocabularies keep the three ChatML tokens at the end. */
        n_special = n_vocab >= 4096 ? ELEMENTSOF(qwen2_specials) : 3;
        limit = n_vocab >= 151643 + ELEMENTSOF(qwen2_specials) ? 151643 : n_vocab - n_special;
        v->model = "gpt2";
        v->pre = "qwen2";
        v->add_bos = false;

        r = bpe_add_bytes(v);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(words) && v->n < limit; i++) {
                char w[64];

                snprintf(w, sizeof(w), " %s", words[i]);
                r = bpe_add_word(v, w, limit);
                if (r >= 0 && strlen(words[i]) >= 2)
                        r = bpe_add_word(v, words[i], limit);
                if (r < 0)
                        return r;
        }
        r = add_filler(v, true, limit, NULL);
        if (r < 0)
                return r;
        r = add_specials(v, qwen2_specials, MIN(n_special, (size_t) QWEN2_N_CONTROL), TOK_CONTROL, 0.0f);
        if (r >= 0 && n_special > QWEN2_N_CONTROL)
                r = add_specials(v, qwen2_specials + QWEN2_N_CONTROL, n_special - QWEN2_N_CONTROL,
                                 TOK_USER_DEFINED, 0.0f);
        if (r >= 0)
                r = add_pads(v, TOK_UNUSED, 0.0f);
        if (r < 0)
                return r;
        v->bos = vocab_id(v, "<|endoftext|>");
        v->pad = v->bos;
        v->eos = vocab_id(v, "<|im_end|>"); /* the instruct models end turns with it */
        return 0;
}

static int build_bpe_llama3(struct vocab *v) {
        static const char *const head[] = {
                "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>",
        };
        size_t n_vocab = v->cap, n_special, limit;
        int r;

        /* Llama 3: 128000 BPE tokens, then 256 control tokens. */
        n_special = n_vocab >= 4096 ? 256 : ELEMENTSOF(head);
        limit = n_vocab - n_special;
        v->model = "gpt2";
        v->pre = "llama-bpe";
        v->add_bos = true;

        r = bpe_add_bytes(v);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(words) && v->n < limit; i++) {
                char w[64];

                snprintf(w, sizeof(w), " %s", words[i]);
                r = bpe_add_word(v, w, limit);
                if (r >= 0 && strlen(words[i]) >= 2)
                        r = bpe_add_word(v, words[i], limit);
                if (r < 0)
                        return r;
        }
        r = add_filler(v, true, limit, NULL);
        if (r >= 0)
                r = add_specials(v, head, ELEMENTSOF(head), TOK_CONTROL, 0.0f);
        for (size_t i = 5; r >= 0 && v->n < n_vocab; i++) {
                char name[48];

                snprintf(name, sizeof(name), "<|reserved_special_token_%zu|>", i);
                r = vocab_add(v, name, 0.0f, TOK_CONTROL);
                if (r == 0)
                        r = -EEXIST;
        }
        if (r < 0)
                return r;
        v->bos = vocab_id(v, "<|begin_of_text|>");
        v->eos = vocab_id(v, "<|eot_id|>");
        return 0;
}

static int vocab_build(struct vocab *v, enum vocab_kind kind, uint32_t n_vocab) {
        int r;

        r = vocab_init(v, n_vocab);
        if (r < 0)
                return r;
        switch (kind) {
        case VOCAB_SPM:
                r = build_spm(v, false);
                break;
        case VOCAB_SPM_PHI3:
                r = build_spm(v, true);
                break;
        case VOCAB_BPE_QWEN2:
                r = build_bpe_qwen2(v);
                break;
        case VOCAB_BPE_LLAMA3:
                r = build_bpe_llama3(v);
                break;
        }
        if (r < 0)
                return r;
        /* Every slot must be filled: the count is the model's vocab size. */
        return v->n == v->cap ? 0 : -EPROTO;
}

static int vocab_write(const struct vocab *v, gguf_writer *w) {
        int r;

        r = gguf_writer_add_str(w, "tokenizer.ggml.model", v->model);
        if (r >= 0)
                r = gguf_writer_add_str(w, "tokenizer.ggml.pre", v->pre);
        if (r >= 0)
                r = gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *) v->tokens, v->n);
        if (r >= 0 && v->has_scores)
                r = gguf_writer_add_arr_f32(w, "tokenizer.ggml.scores", v->scores, v->n);
        if (r >= 0)
                r = gguf_writer_add_arr_i32(w, "tokenizer.ggml.token_type", v->types, v->n);
        if (r >= 0 && v->n_merges > 0)
                r = gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *) v->merges,
                                            v->n_merges);
        if (r >= 0 && v->bos >= 0)
                r = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t) v->bos);
        if (r >= 0 && v->eos >= 0)
                r = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t) v->eos);
        if (r >= 0 && v->unk >= 0)
                r = gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t) v->unk);
        if (r >= 0 && v->pad >= 0)
                r = gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t) v->pad);
        if (r >= 0)
                r = gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
        if (r >= 0)
                r = gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", false);
        return r;
}

/* ------------------------------------------------------------------ CLI */

struct options {
        const char *output;
        const struct shape *shape;
        struct hparams hp;
        enum ftype ftype;
        uint64_t seed;
        int n_threads;
        const char *vocab_from;
        const char *chat_template; /* explicit --chat-template */
        bool no_chat_template;
        bool vocab_given;
        bool pure;
        bool quiet;
        const char *name;
};

static void help(void) {
        printf("Usage: " PROG " -o FILE [OPTIONS]\n"
               "\n"
               "Write a GGUF model with seeded random weights at a real model's shape, in\n"
               "any weight type the engine runs, with llama.cpp's names, metadata and\n"
               "quantization mixtures. Same seed and shape give the same weights in every type.\n"
               "\n"
               "  -o, --output FILE         file to write (atomically: FILE.tmp.XXXXXX, then rename)\n"
               "  -s, --shape NAME          model shape (default tiny; see below)\n"
               "  -a, --arch NAME           llama, qwen2 or phi3 (default: the shape's)\n"
               "  -t, --type TYPE           F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_S Q4_K_M (= Q4_K)\n"
               "                            Q5_K_S Q5_K_M (= Q5_K) Q6_K (default F16)\n"
               "      --pure                one type for every matrix, no mixture\n"
               "  -S, --seed N              weight seed (default 1)\n"
               "      --dim N               embedding length\n"
               "      --layers N            number of blocks\n"
               "      --heads N             attention heads\n"
               "      --kv-heads N          key/value heads (GQA)\n"
               "      --head-dim N          per-head size (default dim / heads)\n"
               "      --ffn N               feed-forward length\n"
               "      --vocab N             vocabulary size\n"
               "      --ctx N               context length\n"
               "      --rope-theta F        RoPE base frequency\n"
               "      --eps F               RMS norm epsilon\n"
               "      --tied | --untied     share token_embd as the output head, or not\n"
               "      --vocab-from FILE     copy tokenizer.* from another GGUF (sets the vocab size)\n"
               "      --chat-template NAME  zephyr (tinyllama), chatml (qwen2.5), phi3, llama3, mistral\n"
               "      --no-chat-template    write no tokenizer.chat_template\n"
               "      --name NAME           general.name (default: the shape's name)\n"
               "  -j, --threads N           quantization threads (default 2)\n"
               "  -q, --quiet               no progress output\n"
               "  -h, --help                this text\n"
               "\n"
               "Shapes:\n");
        for (size_t i = 0; i < ELEMENTSOF(shapes); i++) {
                const struct hparams *h = &shapes[i].hp;

                printf("  %-15s %-5s dim %u, %u layers, %u/%u heads, ffn %u, vocab %u, ctx %u%s: %s\n",
                       shapes[i].name, arch_names[h->arch], h->dim, h->n_layers, h->n_heads, h->n_kv_heads, h->ffn,
                       h->n_vocab, h->n_ctx, h->tied ? ", tied" : "", shapes[i].desc);
        }
        printf("\n"
               "Exit status: 0 on success, 1 when writing fails, 2 on a usage error.\n");
}

static _printf_(1, 2) int usage_error(const char *fmt, ...) {
        va_list ap;

        fprintf(stderr, PROG ": ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry '" PROG " --help' for more information.\n");
        return -EINVAL;
}

static _printf_(1, 2) void errorf(const char *fmt, ...) {
        va_list ap;

        fprintf(stderr, PROG ": ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static int parse_u32(const char *opt, const char *s, uint32_t min, uint32_t max, uint32_t *ret) {
        char *end;
        unsigned long long v;

        errno = 0;
        if (*s == '-' || *s == '+' || *s == ' ')
                return usage_error("%s: '%s' is not a number in [%u, %u]", opt, s, min, max);
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end || v < min || v > max)
                return usage_error("%s: '%s' is not a number in [%u, %u]", opt, s, min, max);
        *ret = (uint32_t) v;
        return 0;
}

static int parse_float(const char *opt, const char *s, double min, double max, float *ret) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || *end || !isfinite(v) || v < min || v > max)
                return usage_error("%s: '%s' is not a number in [%g, %g]", opt, s, min, max);
        *ret = (float) v;
        return 0;
}

enum {
        OPT_DIM = 0x100,
        OPT_LAYERS,
        OPT_HEADS,
        OPT_KV_HEADS,
        OPT_HEAD_DIM,
        OPT_FFN,
        OPT_VOCAB,
        OPT_CTX,
        OPT_ROPE_THETA,
        OPT_EPS,
        OPT_TIED,
        OPT_UNTIED,
        OPT_VOCAB_FROM,
        OPT_CHAT_TEMPLATE,
        OPT_NO_CHAT_TEMPLATE,
        OPT_NAME,
        OPT_PURE,
};

/* Returns 0 to go on, 1 when done (--help), or -EINVAL after printing a usage error. */
static int parse_args(int argc, char **argv, struct options *o) {
        static const struct option longopts[] = {
                { "output", required_argument, NULL, 'o' },
                { "shape", required_argument, NULL, 's' },
                { "arch", required_argument, NULL, 'a' },
                { "type", required_argument, NULL, 't' },
                { "seed", required_argument, NULL, 'S' },
                { "threads", required_argument, NULL, 'j' },
                { "quiet", no_argument, NULL, 'q' },
                { "help", no_argument, NULL, 'h' },
                { "dim", required_argument, NULL, OPT_DIM },
                { "layers", required_argument, NULL, OPT_LAYERS },
                { "heads", required_argument, NULL, OPT_HEADS },
                { "kv-heads", required_argument, NULL, OPT_KV_HEADS },
                { "head-dim", required_argument, NULL, OPT_HEAD_DIM },
                { "ffn", required_argument, NULL, OPT_FFN },
                { "vocab", required_argument, NULL, OPT_VOCAB },
                { "ctx", required_argument, NULL, OPT_CTX },
                { "rope-theta", required_argument, NULL, OPT_ROPE_THETA },
                { "eps", required_argument, NULL, OPT_EPS },
                { "tied", no_argument, NULL, OPT_TIED },
                { "untied", no_argument, NULL, OPT_UNTIED },
                { "vocab-from", required_argument, NULL, OPT_VOCAB_FROM },
                { "chat-template", required_argument, NULL, OPT_CHAT_TEMPLATE },
                { "no-chat-template", no_argument, NULL, OPT_NO_CHAT_TEMPLATE },
                { "name", required_argument, NULL, OPT_NAME },
                { "pure", no_argument, NULL, OPT_PURE },
                {}
        };
        /* Overrides are applied over the shape at the end, so options may come
         * in any order. Every size is at least 1, so 0 means "not given". */
        struct hparams ov = {};
        bool theta_set = false, eps_set = false;
        int tied = -1, arch = -1;
        const char *shape = "tiny";
        uint32_t v;
        int c, r;

        *o = (struct options) { .ftype = FT_F16, .seed = 1, .n_threads = 2 };
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":o:s:a:t:S:j:qh", longopts, NULL)) >= 0) {
                switch (c) {
                case 'o':
                        if (!*optarg)
                                return usage_error("--output: empty file name");
                        o->output = optarg;
                        break;
                case 's':
                        shape = optarg;
                        break;
                case 'a':
                        arch = -1;
                        for (int i = 0; i < _ARCH_MAX; i++)
                                if (strcasecmp(optarg, arch_names[i]) == 0)
                                        arch = i;
                        if (arch < 0)
                                return usage_error("--arch: unknown architecture '%s' (llama, qwen2, phi3)", optarg);
                        break;
                case 't':
                        r = parse_ftype(optarg);
                        if (r < 0)
                                return usage_error("--type: unknown type '%s' (see --help)", optarg);
                        o->ftype = (enum ftype) r;
                        break;
                case 'S': {
                        char *end;

                        errno = 0;
                        if (*optarg == '-')
                                return usage_error("--seed: '%s' is not an unsigned 64-bit number", optarg);
                        o->seed = strtoull(optarg, &end, 0);
                        if (errno != 0 || end == optarg || *end)
                                return usage_error("--seed: '%s' is not an unsigned 64-bit number", optarg);
                        break;
                }
                case 'j':
                        r = parse_u32("--threads", optarg, 1, 256, &v);
                        if (r < 0)
                                return r;
                        o->n_threads = (int) v;
                        break;
                case 'q':
                        o->quiet = true;
                        break;
                case 'h':
                        help();
                        return 1;
                case OPT_DIM:
                        r = parse_u32("--dim", optarg, 1, 1u << 20, &ov.dim);
                        break;
                case OPT_LAYERS:
                        r = parse_u32("--layers", optarg, 1, 4096, &ov.n_layers);
                        break;
                case OPT_HEADS:
                        r = parse_u32("--heads", optarg, 1, 4096, &ov.n_heads);
                        break;
                case OPT_KV_HEADS:
                        r = parse_u32("--kv-heads", optarg, 1, 4096, &ov.n_kv_heads);
                        break;
                case OPT_HEAD_DIM:
                        r = parse_u32("--head-dim", optarg, 1, 4096, &ov.head_dim);
                        break;
                case OPT_FFN:
                        r = parse_u32("--ffn", optarg, 1, 1u << 22, &ov.ffn);
                        break;
                case OPT_VOCAB:
                        r = parse_u32("--vocab", optarg, 1, 1u << 24, &ov.n_vocab);
                        o->vocab_given = true;
                        break;
                case OPT_CTX:
                        r = parse_u32("--ctx", optarg, 1, 1u << 24, &ov.n_ctx);
                        break;
                case OPT_ROPE_THETA:
                        r = parse_float("--rope-theta", optarg, 1.0, 1e9, &ov.rope_theta);
                        theta_set = true;
                        break;
                case OPT_EPS:
                        r = parse_float("--eps", optarg, 1e-12, 1.0, &ov.eps);
                        eps_set = true;
                        break;
                case OPT_TIED:
                        tied = 1;
                        break;
                case OPT_UNTIED:
                        tied = 0;
                        break;
                case OPT_VOCAB_FROM:
                        o->vocab_from = optarg;
                        break;
                case OPT_CHAT_TEMPLATE:
                        if (!find_template(optarg))
                                return usage_error("--chat-template: unknown template '%s' "
                                                   "(zephyr, chatml, phi3, llama3, mistral)", optarg);
                        o->chat_template = optarg;
                        break;
                case OPT_NO_CHAT_TEMPLATE:
                        o->no_chat_template = true;
                        break;
                case OPT_NAME:
                        o->name = optarg;
                        break;
                case OPT_PURE:
                        o->pure = true;
                        break;
                case ':':
                        return usage_error("option '%s' needs an argument", argv[optind - 1]);
                default:
                        return usage_error("unknown option '%s'", argv[optind - 1]);
                }
                if (c >= OPT_DIM && r < 0)
                        return r;
                r = 0;
        }
        if (optind < argc)
                return usage_error("unexpected argument '%s'", argv[optind]);
        if (!o->output)
                return usage_error("no output file given (-o FILE)");
        if (o->chat_template && o->no_chat_template)
                return usage_error("--chat-template and --no-chat-template contradict each other");

        for (size_t i = 0; i < ELEMENTSOF(shapes); i++)
                if (strcasecmp(shape, shapes[i].name) == 0)
                        o->shape = &shapes[i];
        if (!o->shape)
                return usage_error("--shape: unknown shape '%s' (see --help)", shape);

        o->hp = o->shape->hp;
        if (arch >= 0 && (enum arch) arch != o->hp.arch) {
                o->hp.arch = (enum arch) arch;
                arch_defaults(o->hp.arch, &o->hp);
        }
#define OVERRIDE(f)                     \
        do {                            \
                if (ov.f)               \
                        o->hp.f = ov.f; \
        } while (0)
        OVERRIDE(dim);
        OVERRIDE(n_layers);
        OVERRIDE(n_heads);
        OVERRIDE(n_kv_heads);
        OVERRIDE(head_dim);
        OVERRIDE(ffn);
        OVERRIDE(n_vocab);
        OVERRIDE(n_ctx);
#undef OVERRIDE
        if (theta_set)
                o->hp.rope_theta = ov.rope_theta;
        if (eps_set)
                o->hp.eps = ov.eps;
        if (tied >= 0)
                o->hp.tied = tied;
        if (!o->name)
                o->name = o->shape->name;
        return 0;
}

/* Checks that the hyper-parameters describe a model, now that the vocabulary
 * size is final. */
static int check_hparams(const struct options *o) {
        const struct hparams *h = &o->hp;

        if (h->n_heads % h->n_kv_heads != 0)
                return usage_error("--heads %u is not a multiple of --kv-heads %u", h->n_heads, h->n_kv_heads);
        if (h->head_dim == 0 && h->dim % h->n_heads != 0)
                return usage_error("--dim %u is not a multiple of --heads %u (or give --head-dim)", h->dim,
                                   h->n_heads);
        if ((h->head_dim ? h->head_dim : h->dim / h->n_heads) % 2 != 0)
                return usage_error("head size %u is odd: RoPE rotates pairs",
                                   h->head_dim ? h->head_dim : h->dim / h->n_heads);
        if (!o->vocab_from && h->n_vocab < vocab_min(h->vocab))
                return usage_error("--vocab %u is too small for a synthesized %s vocabulary (at least %u)", h->n_vocab,
                                   h->vocab == VOCAB_BPE_QWEN2 || h->vocab == VOCAB_BPE_LLAMA3 ? "BPE" : "SentencePiece",
                                   vocab_min(h->vocab));
        return 0;
}

/* ---------------------------------------------------------------- model */

struct plan {
        struct wtensor *t;
        size_t n, cap;
        uint64_t n_params;
};

static int plan_add(struct plan *p, const struct options *o, enum tkind kind, int layer, uint64_t ne0,
                    uint64_t ne1, float mean, float std) {
        const struct hparams *h = &o->hp;
        static const char *const suffix[] = {
                [T_TOKEN_EMBD] = "token_embd.weight", [T_OUTPUT_NORM] = "output_norm.weight",
                [T_OUTPUT] = "output.weight",         [T_ATTN_NORM] = "attn_norm.weight",
                [T_ATTN_Q] = "attn_q.weight",         [T_ATTN_K] = "attn_k.weight",
                [T_ATTN_V] = "attn_v.weight",         [T_ATTN_QKV] = "attn_qkv.weight",
                [T_ATTN_OUT] = "attn_output.weight",  [T_ATTN_Q_BIAS] = "attn_q.bias",
                [T_ATTN_K_BIAS] = "attn_k.bias",      [T_ATTN_V_BIAS] = "attn_v.bias",
                [T_FFN_NORM] = "ffn_norm.weight",     [T_FFN_GATE] = "ffn_gate.weight",
                [T_FFN_UP] = "ffn_up.weight",         [T_FFN_DOWN] = "ffn_down.weight",
        };
        struct wtensor *t;

        if (p->n == p->cap) {
                size_t cap = p->cap ? p->cap * 2 : 64;
                struct wtensor *n = reallocarray(p->t, cap, sizeof(*n));

                if (!n)
                        return -ENOMEM;
                p->t = n;
                p->cap = cap;
        }
        t = &p->t[p->n++];
        *t = (struct wtensor) {
                .kind = kind,
                .layer = layer < 0 ? 0 : (uint32_t) layer,
                .n_dims = ne1 ? 2 : 1,
                .ne = { ne0, ne1 ? ne1 : 1 },
                .mean = mean,
                .std = std,
        };
        if (layer >= 0)
                snprintf(t->name, sizeof(t->name), "blk.%d.%s", layer, suffix[kind]);
        else
                snprintf(t->name, sizeof(t->name), "%s", suffix[kind]);
        t->key = mix64(mix64(o->seed ^ 0x726265656d6b6d64ULL) ^ fnv1a(t->name));
        t->type = t->n_dims == 1 ? RBEE_TYPE_F32
                                 : mix_type(o->ftype, o->pure, kind, t->layer, h->n_layers, ne0, h->tied);
        p->n_params += ne0 * t->ne[1];
        return 0;
}

static int plan_build(struct plan *p, const struct options *o) {
        const struct hparams *h = &o->hp;
        uint64_t hd = h->head_dim ? h->head_dim : h->dim / h->n_heads;
        uint64_t q_dim = hd * h->n_heads, kv_dim = hd * h->n_kv_heads;
        float in_std = 1.0f / sqrtf((float) h->dim);
        float res_scale = 1.0f / sqrtf(2.0f * (float) h->n_layers);
        int r;

        r = plan_add(p, o, T_TOKEN_EMBD, -1, h->dim, h->n_vocab, 0.0f, in_std);
        for (uint32_t l = 0; r >= 0 && l < h->n_layers; l++) {
                int L = (int) l;

                r = plan_add(p, o, T_ATTN_NORM, L, h->dim, 0, 1.0f, 0.1f);
                if (r >= 0 && h->arch == ARCH_PHI3)
                        r = plan_add(p, o, T_ATTN_QKV, L, h->dim, q_dim + 2 * kv_dim, 0.0f, in_std);
                else {
                        if (r >= 0)
                                r = plan_add(p, o, T_ATTN_Q, L, h->dim, q_dim, 0.0f, in_std);
                        if (r >= 0 && h->arch == ARCH_QWEN2)
                                r = plan_add(p, o, T_ATTN_Q_BIAS, L, q_dim, 0, 0.0f, 0.02f);
                        if (r >= 0)
                                r = plan_add(p, o, T_ATTN_K, L, h->dim, kv_dim, 0.0f, in_std);
                        if (r >= 0 && h->arch == ARCH_QWEN2)
                                r = plan_add(p, o, T_ATTN_K_BIAS, L, kv_dim, 0, 0.0f, 0.02f);
                        if (r >= 0)
                                r = plan_add(p, o, T_ATTN_V, L, h->dim, kv_dim, 0.0f, in_std);
                        if (r >= 0 && h->arch == ARCH_QWEN2)
                                r = plan_add(p, o, T_ATTN_V_BIAS, L, kv_dim, 0, 0.0f, 0.02f);
                }
                if (r >= 0)
                        r = plan_add(p, o, T_ATTN_OUT, L, q_dim, h->dim, 0.0f,
                                     res_scale / sqrtf((float) q_dim));
                if (r >= 0)
                        r = plan_add(p, o, T_FFN_NORM, L, h->dim, 0, 1.0f, 0.1f);
                if (r >= 0 && h->arch == ARCH_PHI3)
                        /* gate and up stacked: rows [0, ffn) gate, [ffn, 2 ffn) up */
                        r = plan_add(p, o, T_FFN_UP, L, h->dim, 2 * (uint64_t) h->ffn, 0.0f, in_std);
                else {
                        if (r >= 0)
                                r = plan_add(p, o, T_FFN_GATE, L, h->dim, h->ffn, 0.0f, in_std);
                        if (r >= 0)
                                r = plan_add(p, o, T_FFN_UP, L, h->dim, h->ffn, 0.0f, in_std);
                }
                if (r >= 0)
                        r = plan_add(p, o, T_FFN_DOWN, L, h->ffn, h->dim, 0.0f,
                                     res_scale / sqrtf((float) h->ffn));
        }
        if (r >= 0)
                r = plan_add(p, o, T_OUTPUT_NORM, -1, h->dim, 0, 1.0f, 0.1f);
        if (r >= 0 && !h->tied)
                r = plan_add(p, o, T_OUTPUT, -1, h->dim, h->n_vocab, 0.0f, in_std);
        if (r < 0)
                return r;

        for (size_t i = 0; i < p->n; i++) {
                struct wtensor *t = &p->t[i];
                const struct rbee_type_traits *tr = rbee_type_traits((uint32_t) t->type);

                r = rbee_type_row_size((uint32_t) t->type, t->ne[0], &t->row_size);
                if (r == -EBADMSG)
                        return usage_error("tensor %s: row length %" PRIu64 " is not a multiple of %u, "
                                           "the block size of %s", t->name, t->ne[0], tr->block_size, tr->name);
                if (r < 0)
                        return usage_error("tensor %s: cannot store %" PRIu64 " elements per row as %s", t->name,
                                           t->ne[0], rbee_type_name((uint32_t) t->type));
        }
        return 0;
}

static int add_metadata(gguf_writer *w, const struct options *o) {
        const struct hparams *h = &o->hp;
        const char *a = arch_names[h->arch];
        uint32_t hd = h->head_dim ? h->head_dim : h->dim / h->n_heads;
        char key[128];
        int r;

#define ARCH_KEY(k) (snprintf(key, sizeof(key), "%s.%s", a, k), key)
        r = gguf_writer_add_str(w, "general.architecture", a);
        if (r >= 0)
                r = gguf_writer_add_str(w, "general.name", o->name);
        if (r >= 0)
                r = gguf_writer_add_u32(w, ARCH_KEY("context_length"), h->n_ctx);
        if (r >= 0 && h->arch == ARCH_PHI3)
                r = gguf_writer_add_u32(w, ARCH_KEY("rope.scaling.original_context_length"), h->n_ctx);
        if (r >= 0)
                r = gguf_writer_add_u32(w, ARCH_KEY("embedding_length"), h->dim);
        if (r >= 0)
                r = gguf_writer_add_u32(w, ARCH_KEY("block_count"), h->n_layers);
        if (r >= 0)
                r = gguf_writer_add_u32(w, ARCH_KEY("feed_forward_length"), h->ffn);
        if (r >= 0)
                r = gguf_writer_add_u32(w, ARCH_KEY("attention.head_count"), h->n_heads);
        if (r >= 0)
                r = gguf_writer_add_u32(w, ARCH_KEY("attention.head_count_kv"), h->n_kv_heads);
        if (r >= 0)
                r = gguf_writer_add_f32(w, ARCH_KEY("rope.freq_base"), h->rope_theta);
        if (r >= 0)
                r = gguf_writer_add_f32(w, ARCH_KEY("attention.layer_norm_rms_epsilon"), h->eps);
        if (r >= 0 && hd * h->n_heads != h->dim) {
                /* Converters write these only when heads are not dim / n_heads wide. */
                r = gguf_writer_add_u32(w, ARCH_KEY("attention.key_length"), hd);
                if (r >= 0)
                        r = gguf_writer_add_u32(w, ARCH_KEY("attention.value_length"), hd);
        }
        if (r >= 0)
                r = gguf_writer_add_u32(w, ARCH_KEY("rope.dimension_count"), hd);
        if (r >= 0)
                r = gguf_writer_add_u32(w, ARCH_KEY("vocab_size"), h->n_vocab);
        if (r >= 0)
                r = gguf_writer_add_u32(w, "general.file_type", ftypes[o->ftype].llama_ftype);
        if (r >= 0)
                r = gguf_writer_add_u32(w, "general.quantization_version", 2);
        /* Provenance, so that a test can tell how a file was made. */
        if (r >= 0)
                r = gguf_writer_add_u64(w, "rbee.mkmodel.seed", o->seed);
        if (r >= 0)
                r = gguf_writer_add_str(w, "rbee.mkmodel.shape", o->shape->name);
#undef ARCH_KEY
        return r;
}

/* Opens the --vocab-from file and takes the vocabulary size from it. */
static int open_vocab_from(struct options *o, gguf_file **ret) {
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        enum gguf_vtype et;
        uint64_t n;
        char err[512];
        int r;

        r = gguf_open(o->vocab_from, &f, err, sizeof(err));
        if (r < 0) {
                errorf("--vocab-from: %s", err);
                return -EIO;
        }
        r = gguf_get_arr_info(f, "tokenizer.ggml.tokens", &et, &n);
        if (r < 0 || et != GGUF_VTYPE_STRING) {
                errorf("--vocab-from: %s has no tokenizer.ggml.tokens string array", o->vocab_from);
                return -EIO;
        }
        if (n == 0 || n > (1u << 24)) {
                errorf("--vocab-from: %s has %" PRIu64 " tokens (1 to %u supported)", o->vocab_from, n, 1u << 24);
                return -EIO;
        }
        if (o->vocab_given && n != o->hp.n_vocab)
                return usage_error("--vocab %u conflicts with the %" PRIu64 " tokens of %s", o->hp.n_vocab, n,
                                   o->vocab_from);
        o->hp.n_vocab = (uint32_t) n;
        *ret = TAKE_PTR(f);
        return 0;
}

/* Copies tokenizer.* (all of it: model, tokens, scores, merges, special ids). */
static int copy_vocab(gguf_writer *w, const gguf_file *f, const char *path, bool skip_template) {
        for (size_t i = 0; i < gguf_n_kv(f); i++) {
                const char *key = gguf_kv_key(f, i);
                int r;

                if (strncmp(key, "tokenizer.", 10) != 0)
                        continue;
                if (skip_template && strcmp(key, "tokenizer.chat_template") == 0)
                        continue;
                r = gguf_writer_copy_kv(w, f, i);
                if (r < 0) {
                        errorf("--vocab-from: cannot copy %s from %s: %s", key, path, strerror(-r));
                        return r;
                }
        }
        return 0;
}

/* ---------------------------------------------------------------- writing */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
        interrupted = sig;
}

struct progress {
        bool quiet;
        bool tty;
        int last_percent;
        struct timespec start;
};

static double elapsed(const struct timespec *start) {
        struct timespec now;

        clock_gettime(CLOCK_MONOTONIC, &now);
        return (double) (now.tv_sec - start->tv_sec) + (double) (now.tv_nsec - start->tv_nsec) / 1e9;
}

static bool on_progress(uint64_t done, uint64_t total, void *userdata) {
        struct progress *p = userdata;
        int percent = total ? (int) (done * 100 / total) : 100;

        if (interrupted)
                return false;
        if (p->quiet || percent == p->last_percent)
                return true;
        /* A terminal gets a line redrawn in place; a log gets every tenth. */
        if (p->tty)
                fprintf(stderr, "\r" PROG ": %3d%% (%.1f/%.1f MiB, %.1f s)", percent, (double) done / (1 << 20),
                        (double) total / (1 << 20), elapsed(&p->start));
        else if (percent / 10 != p->last_percent / 10)
                fprintf(stderr, PROG ": %3d%% (%.1f/%.1f MiB, %.1f s)\n", percent, (double) done / (1 << 20),
                        (double) total / (1 << 20), elapsed(&p->start));
        p->last_percent = percent;
        return true;
}

static struct generator *generator_free(struct generator *g) {
        if (!g)
                return NULL;
        if (g->scratch)
                for (int i = 0; i < g->n_threads; i++)
                        free(g->scratch[i]);
        free(g->scratch);
        rbee_pool_free(g->pool);
        free(g);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct generator *, generator_free);

static int generator_new(int n_threads, uint64_t max_row, struct generator **ret) {
        _cleanup_(generator_freep) struct generator *g = NULL;
        int r;

        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->scratch = calloc((size_t) n_threads, sizeof(float *));
        if (!g->scratch)
                return -ENOMEM;
        g->n_threads = n_threads;
        for (int i = 0; i < n_threads; i++) {
                g->scratch[i] = malloc_multiply((size_t) max_row, sizeof(float));
                if (!g->scratch[i])
                        return -ENOMEM;
        }
        r = rbee_pool_new(n_threads, &g->pool);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(g);
        return 0;
}

static void plan_free(struct plan *p) {
        free(p->t);
}

/* Returns 0, -EINVAL for a usage error (already reported), or -EIO for a
 * failure (already reported). */
static int run(int argc, char **argv) {
        _cleanup_(gguf_writer_freep) gguf_writer *w = NULL;
        _cleanup_(gguf_closep) gguf_file *vocab_file = NULL;
        _cleanup_(generator_freep) struct generator *gen = NULL;
        _cleanup_(plan_free) struct plan plan = {};
        struct progress prog = { .last_percent = -10 };
        struct sigaction sa = { .sa_handler = on_signal };
        struct options o;
        uint64_t max_row = 0;
        int r;

        r = parse_args(argc, argv, &o);
        if (r != 0)
                return r < 0 ? r : 0;
        if (o.vocab_from) {
                r = open_vocab_from(&o, &vocab_file);
                if (r < 0)
                        return r;
        }
        r = check_hparams(&o);
        if (r < 0)
                return r;
        r = plan_build(&plan, &o);
        if (r < 0)
                return r;

        /* From here on nothing is the caller's fault. */
        r = gguf_writer_new(&w);
        if (r >= 0)
                r = add_metadata(w, &o);
        if (r < 0) {
                errorf("failed to assemble the metadata: %s", strerror(-r));
                return -EIO;
        }
        if (vocab_file) {
                r = copy_vocab(w, vocab_file, o.vocab_from, o.chat_template || o.no_chat_template);
                if (r < 0)
                        return -EIO;
                vocab_file = gguf_close(vocab_file);
        } else {
                struct vocab vocab;

                r = vocab_build(&vocab, o.hp.vocab, o.hp.n_vocab);
                if (r >= 0)
                        r = vocab_write(&vocab, w);
                vocab_done(&vocab);
                if (r < 0) {
                        errorf("failed to build the vocabulary: %s", strerror(-r));
                        return -EIO;
                }
        }
        if (!o.no_chat_template && !gguf_writer_has_key(w, "tokenizer.chat_template")) {
                const char *t = find_template(o.chat_template ? o.chat_template : o.hp.chat_template);

                r = gguf_writer_add_str(w, "tokenizer.chat_template", t);
                if (r < 0) {
                        errorf("failed to add the chat template: %s", strerror(-r));
                        return -EIO;
                }
        }

        for (size_t i = 0; i < plan.n; i++)
                max_row = MAX(max_row, plan.t[i].ne[0]);
        r = generator_new(o.n_threads, max_row, &gen);
        if (r < 0) {
                errorf("failed to start %d threads: %s", o.n_threads, strerror(-r));
                return -EIO;
        }
        for (size_t i = 0; i < plan.n; i++) {
                struct wtensor *t = &plan.t[i];

                t->gen = gen;
                r = gguf_writer_add_tensor_cb(w, t->name, t->type, t->n_dims, t->ne, tensor_rows, t);
                if (r < 0) {
                        errorf("tensor %s: %s", t->name, strerror(-r));
                        return -EIO;
                }
        }

        prog.quiet = o.quiet;
        prog.tty = isatty(STDERR_FILENO);
        clock_gettime(CLOCK_MONOTONIC, &prog.start);
        gguf_writer_set_progress(w, on_progress, &prog);
        if (!o.quiet)
                fprintf(stderr, PROG ": writing %s: %s (%s), %s, %" PRIu64 " parameters, %zu tensors, %.1f MiB, "
                        "%d thread%s\n", o.output, o.shape->name, arch_names[o.hp.arch], ftypes[o.ftype].name,
                        plan.n_params, plan.n, (double) gguf_writer_file_size(w) / (1 << 20), o.n_threads,
                        o.n_threads == 1 ? "" : "s");

        /* A signal cancels the write through the progress callback, so the
         * temporary file is removed rather than left behind. */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);

        r = gguf_writer_write_file(w, o.output);
        if (prog.tty && !o.quiet)
                fputc('\n', stderr);
        if (r < 0) {
                if (r == -ECANCELED)
                        errorf("interrupted; %s not written", o.output);
                else
                        errorf("failed to write %s: %s", o.output, strerror(-r));
                return -EIO;
        }
        if (!o.quiet)
                fprintf(stderr, PROG ": wrote %s (%.1f MiB) in %.2f s\n", o.output,
                        (double) gguf_writer_file_size(w) / (1 << 20), elapsed(&prog.start));
        return 0;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);

        if (r == -EINVAL)
                return EXIT_USAGE;
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
