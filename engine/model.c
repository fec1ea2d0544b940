/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"
#include "macros.h"
#include "model.h"
#include "tokenizer.h"

#define ERR(r, ...) ({ if (err) snprintf(err, errlen, __VA_ARGS__); (r); })

static const struct {
        const char *name;
        enum rbee_arch arch;
} archs[] = {
        { "llama", RBEE_ARCH_LLAMA },
        { "qwen2", RBEE_ARCH_QWEN2 },
        { "phi3", RBEE_ARCH_PHI3 },
};

/* general.file_type as llama.cpp numbers it (llama_ftype). */
static const char *file_type_name(uint32_t ft) {
        static const char *const names[] = {
                [0] = "F32", [1] = "F16", [2] = "Q4_0", [3] = "Q4_1", [7] = "Q8_0",
                [8] = "Q5_0", [9] = "Q5_1", [10] = "Q2_K", [11] = "Q3_K_S", [12] = "Q3_K_M",
                [13] = "Q3_K_L", [14] = "Q4_K_S", [15] = "Q4_K_M", [16] = "Q5_K_S",
                [17] = "Q5_K_M", [18] = "Q6_K", [32] = "BF16",
        };
        if (ft < ELEMENTSOF(names) && names[ft])
                return names[ft];
        return "unknown";
}

void rbee_model_default_params(struct rbee_model_params *p) {
        *p = (struct rbee_model_params) { 0 };
}

size_t rbee_weight_act_row_size(const struct rbee_weight *w) {
        uint64_t n = 0;

        (void) rbee_type_row_size(w->ops->vec_dot_type, w->ne0, &n);
        return n;
}

struct loader {
        const gguf_file *f;
        const char *arch;
        char *err;
        size_t errlen;
};

static int get_arch_u32(struct loader *l, const char *key, bool required, uint32_t def, uint32_t *ret) {
        char k[128];
        int r;

        snprintf(k, sizeof(k), "%s.%s", l->arch, key);
        r = gguf_get_u32(l->f, k, ret);
        if (r == -ENOENT && !required) {
                *ret = def;
                return 0;
        }
        if (r < 0) {
                if (l->err)
                        snprintf(l->err, l->errlen, "metadata '%s' is %s", k,
                                 r == -ENOENT ? "missing" : "not a valid unsigned integer");
                return -EBADMSG;
        }
        return 0;
}

static int get_arch_f32(struct loader *l, const char *key, float def, float *ret) {
        char k[128];
        int r;

        snprintf(k, sizeof(k), "%s.%s", l->arch, key);
        r = gguf_get_f32(l->f, k, ret);
        if (r == -ENOENT) {
                *ret = def;
                return 0;
        }
        if (r < 0 || !isfinite(*ret)) {
                if (l->err)
                        snprintf(l->err, l->errlen, "metadata '%s' is not a valid number", k);
                return -EBADMSG;
        }
        return 0;
}

/* Map a 2-D weight and check its shape; required=false leaves w->data NULL when absent. */
static int load_weight(struct loader *l, struct rbee_weight *w, const char *name,
                       int64_t ne0, int64_t ne1, bool required) {
        const struct gguf_tensor *t = gguf_find_tensor(l->f, name);
        char *err = l->err;
        size_t errlen = l->errlen;

        if (!t) {
                if (!required)
                        return 0;
                return ERR(-EBADMSG, "tensor '%s' is missing", name);
        }
        if (t->n_dims > 2 || (int64_t) t->ne[0] != ne0 || (int64_t) t->ne[1] != ne1)
                return ERR(-EBADMSG, "tensor '%s' has shape [%" PRIu64 ", %" PRIu64 "], expected [%" PRId64 ", %" PRId64 "]",
                           name, t->ne[0], t->ne[1], ne0, ne1);
        const struct rbee_quant_ops *ops = rbee_quant_ops(t->type);
        if (!ops || !ops->vec_dot)
                return ERR(-EOPNOTSUPP, "tensor '%s' has type %s, which the engine cannot multiply",
                           name, rbee_type_name(t->type));
        uint64_t rs;
        int r = rbee_type_row_size(t->type, t->ne[0], &rs);
        if (r < 0)
                return ERR(-EBADMSG, "tensor '%s': bad row size", name);
        /* Activations are converted to the weight's dot type, which must
         * accept this row length (Q8_K rows are 256 long). */
        uint64_t ars;
        if (rbee_type_row_size(ops->vec_dot_type, t->ne[0], &ars) < 0)
                return ERR(-EBADMSG, "tensor '%s': row of %" PRIu64 " does not fit type %s",
                           name, t->ne[0], rbee_type_name(ops->vec_dot_type));
        *w = (struct rbee_weight) {
                .name = t->name,
                .type = t->type,
                .data = t->data,
                .ne0 = ne0,
                .ne1 = ne1,
                .row_size = rs,
                .ops = ops,
        };
        return 0;
}

/* Copy a 1-D tensor of n elements to a new F32 array. */
static int load_vector(struct loader *l, float **ret, const char *name, int64_t n, bool required) {
        const struct gguf_tensor *t = gguf_find_tensor(l->f, name);
        char *err = l->err;
        size_t errlen = l->errlen;

        if (!t) {
                if (!required) {
                        *ret = NULL;
                        return 0;
                }
                return ERR(-EBADMSG, "tensor '%s' is missing", name);
        }
        if (t->n_dims != 1 || (int64_t) t->ne[0] != n)
                return ERR(-EBADMSG, "tensor '%s' has %u dims and %" PRIu64 " elements, expected a vector of %" PRId64,
                           name, t->n_dims, t->ne[0], n);
        _cleanup_(freep) float *v = malloc_multiply(n, sizeof(float));
        if (!v)
                return -ENOMEM;
        int r = rbee_dequantize_row(t->type, t->data, v, n);
        if (r < 0)
                return ERR(-EOPNOTSUPP, "tensor '%s' has type %s, which cannot be read", name, rbee_type_name(t->type));
        for (int64_t i = 0; i < n; i++)
                if (!isfinite(v[i]))
                        return ERR(-EBADMSG, "tensor '%s' holds a non-finite value at %" PRId64, name, i);
        *ret = TAKE_PTR(v);
        return 0;
}

static int load_layer(struct loader *l, rbee_model *m, uint32_t i) {
        const struct rbee_model_info *h = &m->info;
        struct rbee_layer *L = &m->layers[i];
        char n[96];
        int r;

#define NAME(s) (snprintf(n, sizeof(n), "blk.%u." s, i), n)
        r = load_vector(l, &L->attn_norm, NAME("attn_norm.weight"), h->n_embd, true);
        if (r < 0)
                return r;
        r = load_vector(l, &L->ffn_norm, NAME("ffn_norm.weight"), h->n_embd, true);
        if (r < 0)
                return r;

        if (gguf_find_tensor(l->f, NAME("attn_qkv.weight"))) {
                L->fused_qkv = true;
                r = load_weight(l, &L->wqkv, n, h->n_embd, m->q_dim + 2 * m->kv_dim, true);
        } else {
                r = load_weight(l, &L->wq, NAME("attn_q.weight"), h->n_embd, m->q_dim, true);
                if (r >= 0)
                        r = load_weight(l, &L->wk, NAME("attn_k.weight"), h->n_embd, m->kv_dim, true);
                if (r >= 0)
                        r = load_weight(l, &L->wv, NAME("attn_v.weight"), h->n_embd, m->kv_dim, true);
        }
        if (r < 0)
                return r;
        r = load_weight(l, &L->wo, NAME("attn_output.weight"), m->q_dim, h->n_embd, true);
        if (r < 0)
                return r;

        if (!L->fused_qkv) {
                bool need = h->arch == RBEE_ARCH_QWEN2;
                r = load_vector(l, &L->bq, NAME("attn_q.bias"), m->q_dim, need);
                if (r >= 0)
                        r = load_vector(l, &L->bk, NAME("attn_k.bias"), m->kv_dim, need);
                if (r >= 0)
                        r = load_vector(l, &L->bv, NAME("attn_v.bias"), m->kv_dim, need);
                if (r < 0)
                        return r;
        }

        if (gguf_find_tensor(l->f, NAME("ffn_gate.weight"))) {
                r = load_weight(l, &L->w_gate, n, h->n_embd, h->n_ff, true);
                if (r >= 0)
                        r = load_weight(l, &L->w_up, NAME("ffn_up.weight"), h->n_embd, h->n_ff, true);
        } else {
                /* Phi-3 stores gate and up as one matrix: gate rows first. */
                L->fused_gate_up = true;
                r = load_weight(l, &L->w_gate_up, NAME("ffn_up.weight"), h->n_embd, 2 * (int64_t) h->n_ff, true);
        }
        if (r < 0)
                return r;
        r = load_weight(l, &L->w_down, NAME("ffn_down.weight"), h->n_ff, h->n_embd, true);
        if (r < 0)
                return r;
#undef NAME
        return 0;
}

static int load_hparams(struct loader *l, rbee_model *m) {
        struct rbee_model_info *h = &m->info;
        char *err = l->err;
        size_t errlen = l->errlen;
        uint32_t v;
        int r;

        if ((r = get_arch_u32(l, "context_length", true, 0, &h->n_ctx_train)) < 0 ||
            (r = get_arch_u32(l, "embedding_length", true, 0, &h->n_embd)) < 0 ||
            (r = get_arch_u32(l, "block_count", true, 0, &h->n_layer)) < 0 ||
            (r = get_arch_u32(l, "feed_forward_length", true, 0, &h->n_ff)) < 0 ||
            (r = get_arch_u32(l, "attention.head_count", true, 0, &h->n_head)) < 0)
                return r;
        if ((r = get_arch_u32(l, "attention.head_count_kv", false, h->n_head, &h->n_head_kv)) < 0)
                return r;

        /* Bounds that keep every size computation below far from overflow
         * and reject nonsense before anything is allocated. */
        if (h->n_embd == 0 || h->n_embd > 65536)
                return ERR(-EBADMSG, "embedding_length %u is out of range", h->n_embd);
        if (h->n_layer == 0 || h->n_layer > 1024)
                return ERR(-EBADMSG, "block_count %u is out of range", h->n_layer);
        if (h->n_ff == 0 || h->n_ff > 1 << 20)
                return ERR(-EBADMSG, "feed_forward_length %u is out of range", h->n_ff);
        if (h->n_head == 0 || h->n_head > 1024 || h->n_embd % h->n_head != 0)
                return ERR(-EBADMSG, "head_count %u does not divide embedding_length %u", h->n_head, h->n_embd);
        if (h->n_head_kv == 0 || h->n_head % h->n_head_kv != 0)
                return ERR(-EBADMSG, "head_count_kv %u does not divide head_count %u", h->n_head_kv, h->n_head);
        if (h->n_ctx_train == 0)
                return ERR(-EBADMSG, "context_length is 0");

        if ((r = get_arch_u32(l, "attention.key_length", false, h->n_embd / h->n_head, &h->head_dim)) < 0)
                return r;
        if ((r = get_arch_u32(l, "attention.value_length", false, h->head_dim, &v)) < 0)
                return r;
        if (h->head_dim == 0 || h->head_dim > 1024 || h->head_dim % 2 != 0 || v != h->head_dim)
                return ERR(-EBADMSG, "attention key/value length %u/%u is not supported", h->head_dim, v);
        m->q_dim = h->n_head * h->head_dim;
        m->kv_dim = h->n_head_kv * h->head_dim;

        if ((r = get_arch_u32(l, "rope.dimension_count", false, h->head_dim, &m->n_rot)) < 0)
                return r;
        if (m->n_rot == 0 || m->n_rot > h->head_dim || m->n_rot % 2 != 0)
                return ERR(-EBADMSG, "rope.dimension_count %u does not fit head size %u", m->n_rot, h->head_dim);

        if ((r = get_arch_f32(l, "rope.freq_base", 10000.0f, &h->rope_theta)) < 0)
                return r;
        if (!(h->rope_theta > 0))
                return ERR(-EBADMSG, "rope.freq_base %g is not positive", h->rope_theta);
        if ((r = get_arch_f32(l, "attention.layer_norm_rms_epsilon", 1e-5f, &h->norm_eps)) < 0)
                return r;
        if (!(h->norm_eps > 0 && h->norm_eps < 1))
                return ERR(-EBADMSG, "layer_norm_rms_epsilon %g is out of range", h->norm_eps);

        m->rope_type = h->arch == RBEE_ARCH_LLAMA ? RBEE_ROPE_NORM : RBEE_ROPE_NEOX;
        m->rope_freq_scale = 1.0f;
        m->attn_factor = 1.0f;

        char key[128];
        struct gguf_str s;
        snprintf(key, sizeof(key), "%s.rope.scaling.type", l->arch);
        if (gguf_get_str(l->f, key, &s) >= 0) {
                float factor;
                if ((r = get_arch_f32(l, "rope.scaling.factor", 1.0f, &factor)) < 0)
                        return r;
                if (s.n == 6 && memcmp(s.s, "linear", 6) == 0) {
                        if (!(factor >= 1.0f && factor <= 1024.0f))
                                return ERR(-EBADMSG, "rope.scaling.factor %g is out of range", factor);
                        m->rope_freq_scale = 1.0f / factor;
                } else if (!(s.n == 4 && memcmp(s.s, "none", 4) == 0) &&
                           !(s.n == 8 && memcmp(s.s, "longrope", 8) == 0))
                        return ERR(-EOPNOTSUPP, "rope scaling '%.*s' is not supported", (int) MIN(s.n, 64u), s.s);
        } else {
                /* Older files carry only the factor. */
                float scale;
                if ((r = get_arch_f32(l, "rope.scale_linear", 1.0f, &scale)) < 0)
                        return r;
                if (!(scale >= 1.0f && scale <= 1024.0f))
                        return ERR(-EBADMSG, "rope.scale_linear %g is out of range", scale);
                m->rope_freq_scale = 1.0f / scale;
        }
        return 0;
}

static int load_rope_factors(struct loader *l, rbee_model *m) {
        const struct rbee_model_info *h = &m->info;
        const char *name = "rope_freqs.weight";
        uint32_t orig = 0;
        int r;

        if (h->arch == RBEE_ARCH_PHI3 && gguf_find_tensor(l->f, "rope_factors_long.weight")) {
                /* Phi-3 long-rope: short factors within the original context,
                 * long ones beyond it, plus a magnitude correction. We always
                 * run within the original context when it is known, so pick
                 * the short factors then. */
                r = get_arch_u32(l, "rope.scaling.original_context_length", false, 0, &orig);
                if (r < 0)
                        return r;
                name = orig > 0 ? "rope_factors_short.weight" : "rope_factors_long.weight";
                if (orig > 0 && h->n_ctx_train > orig) {
                        float scale = (float) h->n_ctx_train / orig;
                        m->attn_factor = sqrtf(1.0f + logf(scale) / logf((float) orig));
                }
                float af;
                r = get_arch_f32(l, "rope.scaling.attn_factor", 0.0f, &af);
                if (r < 0)
                        return r;
                if (af > 0)
                        m->attn_factor = af;
        }
        r = load_vector(l, &m->rope_factors, name, m->n_rot / 2, false);
        if (r < 0)
                return r;
        if (m->rope_factors)
                for (uint32_t i = 0; i < m->n_rot / 2; i++)
                        if (!(m->rope_factors[i] > 0)) {
                                char *err = l->err;
                                size_t errlen = l->errlen;
                                return ERR(-EBADMSG, "tensor '%s' holds a non-positive factor", name);
                        }
        return 0;
}

static char *dup_str(struct gguf_str s) {
        char *p = malloc(s.n + 1);

        if (!p)
                return NULL;
        memcpy(p, s.s, s.n);
        p[s.n] = 0;
        return p;
}

int rbee_model_load(const char *path, const struct rbee_model_params *p, rbee_model **ret,
                    char *err, size_t errlen) {
        _cleanup_(rbee_model_freep) rbee_model *m = NULL;
        struct rbee_model_params defaults;
        struct loader l = { .err = err, .errlen = errlen };
        struct gguf_str s;
        char msg[512];
        int r;

        if (!path || !ret)
                return -EINVAL;
        if (!p) {
                rbee_model_default_params(&defaults);
                p = &defaults;
        }
        if (err && errlen)
                err[0] = 0;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;

        r = gguf_open(path, &m->gguf, msg, sizeof(msg));
        if (r < 0)
                return ERR(r, "%s: %s", path, msg);
        l.f = m->gguf;

        r = gguf_get_str(m->gguf, "general.architecture", &s);
        if (r < 0)
                return ERR(-EBADMSG, "general.architecture is missing");
        for (size_t i = 0; i < ELEMENTSOF(archs); i++)
                if (strlen(archs[i].name) == s.n && memcmp(archs[i].name, s.s, s.n) == 0) {
                        m->info.arch = archs[i].arch;
                        m->info.arch_name = archs[i].name;
                }
        if (!m->info.arch_name)
                return ERR(-EOPNOTSUPP, "architecture '%.*s' is not supported (supported: llama, qwen2, phi3)",
                           (int) MIN(s.n, 64u), s.s);
        l.arch = m->info.arch_name;

        if (gguf_get_str(m->gguf, "general.name", &s) >= 0)
                m->name = dup_str(s);
        else
                m->name = strdup("");
        if (!m->name)
                return -ENOMEM;
        m->info.name = m->name;
        if (gguf_get_str(m->gguf, "tokenizer.chat_template", &s) >= 0) {
                m->chat_template = dup_str(s);
                if (!m->chat_template)
                        return -ENOMEM;
                m->info.chat_template = m->chat_template;
        }
        uint32_t ft;
        m->info.file_type = gguf_get_u32(m->gguf, "general.file_type", &ft) >= 0 ? file_type_name(ft) : "unknown";

        r = load_hparams(&l, m);
        if (r < 0)
                return r;

        r = rbee_vocab_load(m->gguf, &m->vocab, msg, sizeof(msg));
        if (r < 0)
                return ERR(r, "tokenizer: %s", msg);
        m->info.n_vocab = rbee_vocab_n_tokens(m->vocab);

        const struct rbee_model_info *h = &m->info;
        r = load_weight(&l, &m->tok_embd, "token_embd.weight", h->n_embd, h->n_vocab, true);
        if (r < 0)
                return r;
        r = load_vector(&l, &m->output_norm, "output_norm.weight", h->n_embd, true);
        if (r < 0)
                return r;
        r = load_weight(&l, &m->output, "output.weight", h->n_embd, h->n_vocab, false);
        if (r < 0)
                return r;
        if (!m->output.data)
                m->output = m->tok_embd; /* tied embeddings */
        r = load_rope_factors(&l, m);
        if (r < 0)
                return r;

        m->layers = calloc(h->n_layer, sizeof(struct rbee_layer));
        if (!m->layers)
                return -ENOMEM;
        for (uint32_t i = 0; i < h->n_layer; i++) {
                r = load_layer(&l, m, i);
                if (r < 0)
                        return r;
                if (p->prefault) {
                        /* Touch the layer's pages now so the first token does not stall. */
                        const struct rbee_layer *L = &m->layers[i];
                        const struct rbee_weight *ws[] = { &L->wq, &L->wk, &L->wv, &L->wqkv, &L->wo,
                                                           &L->w_gate, &L->w_up, &L->w_gate_up, &L->w_down };
                        for (size_t j = 0; j < ELEMENTSOF(ws); j++)
                                if (ws[j]->data)
                                        (void) madvise((void *) ((uintptr_t) ws[j]->data & ~(uintptr_t) 4095),
                                                       ws[j]->row_size * ws[j]->ne1 + 4096, MADV_WILLNEED);
                }
                if (p->progress && !p->progress(i + 1, h->n_layer, p->progress_userdata))
                        return ERR(-ECANCELED, "loading was cancelled");
        }

        /* Sizes for the info block. */
        for (size_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
                const struct gguf_tensor *t = gguf_get_tensor(m->gguf, i);
                m->info.weight_bytes += t->size;
                m->info.n_params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        }
        m->info.file_bytes = gguf_file_size(m->gguf);

        if (p->mlock && mlock(gguf_data_base(m->gguf), gguf_data_size(m->gguf)) < 0)
                log_warning("mlock of %" PRIu64 " bytes failed: %m (raise LimitMEMLOCK=)", gguf_data_size(m->gguf));

        log_info("loaded %s: %s, %u layers, dim %u, %u heads (%u kv), ffn %u, vocab %d, %s, %.1f MiB",
                 path, m->info.arch_name, h->n_layer, h->n_embd, h->n_head, h->n_head_kv, h->n_ff,
                 h->n_vocab, m->info.file_type, m->info.weight_bytes / 1048576.0);
        *ret = TAKE_PTR(m);
        return 0;
}

rbee_model *rbee_model_free(rbee_model *m) {
        if (!m)
                return NULL;
        if (m->layers)
                for (uint32_t i = 0; i < m->info.n_layer; i++) {
                        struct rbee_layer *L = &m->layers[i];
                        free(L->attn_norm);
                        free(L->ffn_norm);
                        free(L->bq);
                        free(L->bk);
                        free(L->bv);
                }
        free(m->layers);
        free(m->output_norm);
        free(m->rope_factors);
        free(m->name);
        free(m->chat_template);
        rbee_vocab_free(m->vocab);
        gguf_close(m->gguf);
        free(m);
        return NULL;
}

const struct rbee_model_info *rbee_model_get_info(const rbee_model *m) {
        return &m->info;
}

const rbee_vocab *rbee_model_get_vocab(const rbee_model *m) {
        return m->vocab;
}

uint64_t rbee_model_kv_bytes(const rbee_model *m, uint32_t n_ctx) {
        return 2ull * m->info.n_layer * n_ctx * m->kv_dim * sizeof(uint16_t);
}

uint64_t rbee_model_bytes_per_token(const rbee_model *m) {
        uint64_t b = m->info.weight_bytes;

        if (m->output.data != m->tok_embd.data)
                b -= m->tok_embd.row_size * (m->tok_embd.ne1 - 1);
        return b;
}
