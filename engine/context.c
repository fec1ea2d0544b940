/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "context.h"
#include "log.h"
#include "macros.h"

/* OpenBLAS runs inside our own threads, one tile per thread. */
void openblas_set_num_threads(int n);

void rbee_context_default_params(struct rbee_context_params *p) {
        *p = (struct rbee_context_params) { 0 };
}

static void *alloc_floats(size_t n, size_t *total) {
        size_t bytes;

        if (MUL_OVERFLOW(n, sizeof(float), &bytes) || ADD_OVERFLOW(*total, bytes, total))
                return NULL;
        /* 64-byte alignment keeps SIMD loads within cache lines. */
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
                return NULL;
        memset(p, 0, bytes);
        return p;
}

/* The KV cache comes from the kernel's zero pages: nothing reads a row
 * before a forward pass wrote it, so a context costs no time and no memory
 * for the part of the cache it has not used yet. */
static void *alloc_kv(size_t n, size_t elt, size_t *ret_bytes) {
        size_t bytes;
        void *p;

        if (MUL_OVERFLOW(n, elt, &bytes))
                return NULL;
        bytes = MAX(bytes, (size_t) 4096);
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return NULL;
        *ret_bytes = bytes;
        return p;
}

static void free_kv(void *p, size_t bytes) {
        if (p)
                (void) munmap(p, bytes);
}

int rbee_context_new(rbee_model *m, const struct rbee_context_params *p, rbee_context **ret) {
        _cleanup_(rbee_context_freep) rbee_context *c = NULL;
        struct rbee_context_params defaults;
        const struct rbee_model_info *h;
        size_t total = 0;
        int r;

        if (!m || !ret)
                return -EINVAL;
        if (!p) {
                rbee_context_default_params(&defaults);
                p = &defaults;
        }
        h = &m->info;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->model = m;
        c->n_ctx = p->n_ctx ? p->n_ctx : MIN(h->n_ctx_train, 4096u);
        c->n_batch = p->n_batch ? p->n_batch : 512;
        c->n_seq = p->n_seq ? p->n_seq : 1;
        if (c->n_ctx > 1u << 20 || c->n_batch > 1u << 16 || c->n_seq > RBEE_MAX_SEQ)
                return -EINVAL;
        /* A decode step of every sequence is one pass. */
        c->n_batch = MAX(MIN(c->n_batch, c->n_ctx), c->n_seq);
        c->n_threads = p->n_threads;
        if ((unsigned) p->matmul > RBEE_MATMUL_QUANT)
                return -EINVAL;
        c->matmul = p->matmul;
        if ((unsigned) p->backend > RBEE_BACKEND_CUDA)
                return -EINVAL;
        if (p->backend == RBEE_BACKEND_CUDA && c->n_seq > 1)
                return -EOPNOTSUPP;
        if (c->n_threads <= 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                c->n_threads = n > 0 ? (int) MIN(n, 64L) : 1;
        }
        if (c->n_threads > 1024)
                return -EINVAL;

        const size_t B = c->n_batch, D = h->n_embd, F = h->n_ff;
        const size_t Q = m->q_dim, KV = m->kv_dim;
        const size_t S = c->n_seq, V = h->n_vocab, group = h->n_head / h->n_head_kv;
        size_t kv = 0;
        size_t maxw = MAX(MAX(D, F), Q);

        if (p->backend != RBEE_BACKEND_CUDA &&
            (MUL_OVERFLOW(S * h->n_layer, (size_t) c->n_ctx, &kv) || MUL_OVERFLOW(kv, KV, &kv)))
                return -ENOMEM;
        c->kv_f16 = !p->kv_f32;
        c->kv_ops = rbee_quant_ops(RBEE_TYPE_F16);
        const size_t elt = c->kv_f16 ? sizeof(uint16_t) : sizeof(float);
        if (!(c->k_cache = alloc_kv(kv, elt, &c->kv_bytes)) || !(c->v_cache = alloc_kv(kv, elt, &c->kv_bytes)))
                return -ENOMEM;
        total += 2 * c->kv_bytes;
        if (!(c->x = alloc_floats(B * D, &total)) || !(c->xb = alloc_floats(B * D, &total)) ||
            !(c->xb2 = alloc_floats(B * Q, &total)) || !(c->q = alloc_floats(B * Q, &total)) ||
            !(c->hb = alloc_floats(B * 2 * F, &total)) || !(c->hb2 = alloc_floats(B * F, &total)) ||
            !(c->k = alloc_floats(B * KV, &total)) || !(c->v = alloc_floats(B * KV, &total)) ||
            !(c->att = alloc_floats((size_t) c->n_threads * group * c->n_ctx, &total)) ||
            !(c->rope = alloc_floats(B * m->n_rot, &total)) ||
            !(c->inv_freq = alloc_floats(m->n_rot / 2, &total)) ||
            !(c->logits = alloc_floats(S * V, &total)) || !(c->logits_out = alloc_floats(S * V, &total)))
                return -ENOMEM;
        if (m->layers[0].fused_qkv && !(c->qkv = alloc_floats(B * (Q + 2 * KV), &total)))
                return -ENOMEM;
        c->deq_stride = RBEE_DEQ_ROWS * maxw;
        if (!(c->deq = alloc_floats((size_t) c->n_threads * c->deq_stride, &total)))
                return -ENOMEM;
        static const enum rbee_type act_types[RBEE_ACT_SLOTS] = { RBEE_TYPE_Q8_0, RBEE_TYPE_Q8_1, RBEE_TYPE_Q8_K };
        for (int s = 0; s < RBEE_ACT_SLOTS; s++) {
                uint64_t rs = 0;
                /* Widths that are not a multiple of the block never meet this type. */
                size_t w = maxw - maxw % rbee_type_traits(act_types[s])->block_size;
                (void) rbee_type_row_size(act_types[s], w, &rs);
                c->act_row[s] = rs;
                if (!(c->act[s] = alloc_floats((B * rs + 3) / 4 + 16, &total)))
                        return -ENOMEM;
        }
        c->history = malloc_multiply(S * c->n_ctx, sizeof(int32_t));
        c->tokens = malloc_multiply(B, sizeof(int32_t));
        c->tok_seq = malloc_multiply(B, sizeof(uint32_t));
        c->tok_pos = malloc_multiply(B, sizeof(uint32_t));
        c->out_tok = malloc_multiply(S, sizeof(uint32_t));
        c->seq_pos = calloc(S, sizeof(uint32_t));
        c->seq_tmp = calloc(S, sizeof(uint32_t));
        c->top_want = calloc(S, sizeof(uint32_t));
        c->top_n = calloc(S, sizeof(uint32_t));
        c->top_l = malloc_multiply(S * RBEE_SAMPLER_TOP_MAX, sizeof(float));
        c->top_id = malloc_multiply(S * RBEE_SAMPLER_TOP_MAX, sizeof(int32_t));
        c->logits_remote = calloc(S, sizeof(bool));
        if (!c->history || !c->tokens || !c->tok_seq || !c->tok_pos || !c->out_tok || !c->seq_pos ||
            !c->seq_tmp || !c->top_want || !c->top_n || !c->top_l || !c->top_id || !c->logits_remote)
                return -ENOMEM;

        /* Frequencies as llama2.c and llama.cpp compute them, divided by the
         * model's per-dimension factors (Llama 3.1, Phi-3) when present. */
        for (uint32_t i = 0; i < m->n_rot / 2; i++) {
                c->inv_freq[i] = 1.0f / powf(h->rope_theta, (float) (2 * i) / (float) m->n_rot);
                if (m->rope_factors)
                        c->inv_freq[i] /= m->rope_factors[i];
        }

        openblas_set_num_threads(1);
        r = rbee_pool_new(c->n_threads, &c->pool);
        if (r < 0)
                return r;
        if (p->backend == RBEE_BACKEND_CUDA &&
            (r = rbee_cuda_new(m, p->device, c->n_ctx, c->n_batch, p->progress, p->progress_userdata, &c->cuda)) < 0)
                return r;

        log_info("context: %u x %u tokens, batch %u, %d threads, %.1f MiB of buffers (KV cache %.1f MiB)",
                 c->n_seq, c->n_ctx, c->n_batch, c->n_threads, total / 1048576.0,
                 2.0 * kv * elt / 1048576.0);
        *ret = TAKE_PTR(c);
        return 0;
}

rbee_context *rbee_context_free(rbee_context *c) {
        if (!c)
                return NULL;
        rbee_cuda_free(c->cuda);
        rbee_pool_free(c->pool);
        free_kv(c->k_cache, c->kv_bytes);
        free_kv(c->v_cache, c->kv_bytes);
        free(c->k);
        free(c->v);
        free(c->logits_out);
        free(c->tokens);
        free(c->tok_seq);
        free(c->tok_pos);
        free(c->out_tok);
        free(c->seq_pos);
        free(c->seq_tmp);
        free(c->top_want);
        free(c->top_n);
        free(c->top_l);
        free(c->top_id);
        free(c->logits_remote);
        free(c->x);
        free(c->xb);
        free(c->xb2);
        free(c->q);
        free(c->qkv);
        free(c->hb);
        free(c->hb2);
        free(c->att);
        free(c->rope);
        free(c->inv_freq);
        free(c->logits);
        for (int s = 0; s < RBEE_ACT_SLOTS; s++)
                free(c->act[s]);
        free(c->deq);
        free(c->history);
        free(c);
        return NULL;
}

uint32_t rbee_context_n_ctx(const rbee_context *c) {
        return c->n_ctx;
}

uint32_t rbee_context_n_seq(const rbee_context *c) {
        return c->n_seq;
}

uint32_t rbee_context_pos(const rbee_context *c) {
        return c->seq_pos[0];
}

uint32_t rbee_seq_pos(const rbee_context *c, uint32_t seq) {
        return seq < c->n_seq ? c->seq_pos[seq] : 0;
}

const rbee_model *rbee_context_model(const rbee_context *c) {
        return c->model;
}

int rbee_seq_truncate(rbee_context *c, uint32_t seq, uint32_t pos) {
        if (seq >= c->n_seq || pos > c->seq_pos[seq])
                return -EINVAL;
        c->seq_pos[seq] = pos;
        return 0;
}

uint32_t rbee_seq_match(rbee_context *c, uint32_t seq, const int32_t *tokens, size_t n) {
        uint32_t k = 0;

        if (!c || seq >= c->n_seq || !tokens)
                return 0;
        const int32_t *hist = rbee_seq_history(c, seq);
        while (k < c->seq_pos[seq] && k < n && hist[k] == tokens[k])
                k++;
        return k;
}

int rbee_context_truncate(rbee_context *c, uint32_t pos) {
        return rbee_seq_truncate(c, 0, pos);
}

/* Run the n tokens staged in c->tokens, c->tok_seq and c->tok_pos, and on
 * success move each sequence past them. Logits land in each sequence's row. */
static int run_staged(rbee_context *c, uint32_t n) {
        const size_t V = c->model->info.n_vocab;

        c->n_tokens = n;
        if (c->cuda) {
                /* One sequence, and its logits entry (if any) ends the chunk.
                 * The device computes the last token's logits either way. */
                const uint32_t seq = c->tok_seq[0], k = c->n_out ? c->top_want[seq] : 0;
                int r;

                /* A pass without logits overwrites those still on the device:
                 * fetch them first, so that they stay readable as on the CPU. */
                if (!c->n_out) {
                        if (c->logits_remote[seq] && !rbee_get_seq_logits(c, seq))
                                return -EIO;
                        c->top_n[seq] = 0;
                }
                r = rbee_cuda_forward(c->cuda, c->tokens, n, c->tok_pos[0], k, c->n_out && !k ? c->logits : NULL,
                                      c->top_l + (size_t) seq * RBEE_SAMPLER_TOP_MAX,
                                      c->top_id + (size_t) seq * RBEE_SAMPLER_TOP_MAX);
                if (c->n_out) {
                        c->top_want[seq] = 0;
                        c->top_n[seq] = r < 0 ? 0 : k;
                        c->logits_remote[seq] = r >= 0 && k > 0;
                }
                if (r < 0)
                        return r;
        } else {
                rbee_forward(c);
                for (uint32_t i = 0; i < c->n_out; i++)
                        memcpy(c->logits + c->tok_seq[c->out_tok[i]] * V, c->logits_out + i * V, V * sizeof(float));
        }
        for (uint32_t b = 0; b < n; b++) {
                rbee_seq_history(c, c->tok_seq[b])[c->tok_pos[b]] = c->tokens[b];
                c->seq_pos[c->tok_seq[b]] = c->tok_pos[b] + 1;
        }
        return 0;
}

int rbee_decode(rbee_context *c, const int32_t *tokens, size_t n) {
        return rbee_seq_decode(c, 0, tokens, n);
}

int rbee_seq_decode(rbee_context *c, uint32_t seq, const int32_t *tokens, size_t n) {
        if (!c || !tokens || n == 0 || seq >= c->n_seq)
                return -EINVAL;
        const int32_t n_vocab = c->model->info.n_vocab;
        if (n > c->n_ctx - c->seq_pos[seq])
                return -ENOSPC;
        for (size_t i = 0; i < n; i++)
                if (tokens[i] < 0 || tokens[i] >= n_vocab)
                        return -EINVAL;

        while (n > 0) {
                uint32_t k = (uint32_t) MIN(n, (size_t) c->n_batch), pos = c->seq_pos[seq];
                for (uint32_t b = 0; b < k; b++) {
                        c->tokens[b] = tokens[b];
                        c->tok_seq[b] = seq;
                        c->tok_pos[b] = pos + b;
                }
                /* Logits for the last token of the prompt only. */
                c->n_out = k == n;
                c->out_tok[0] = k - 1;
                int r = run_staged(c, k);
                if (r < 0)
                        return r;
                tokens += k;
                n -= k;
        }
        return 0;
}

int rbee_decode_batch(rbee_context *c, const struct rbee_batch_entry *e, size_t n) {
        if (!c || !e || n == 0)
                return -EINVAL;
        const int32_t n_vocab = c->model->info.n_vocab;

        /* Check everything first so that a refused batch changes nothing:
         * seq_tmp counts each sequence's entries, then its logits entries. */
        memset(c->seq_tmp, 0, c->n_seq * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++) {
                if (e[i].seq >= c->n_seq || e[i].token < 0 || e[i].token >= n_vocab)
                        return -EINVAL;
                if (++c->seq_tmp[e[i].seq] > c->n_ctx - c->seq_pos[e[i].seq])
                        return -ENOSPC;
        }
        memset(c->seq_tmp, 0, c->n_seq * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++)
                if (e[i].logits && c->seq_tmp[e[i].seq]++ > 0)
                        return -EINVAL;

        while (n > 0) {
                uint32_t k = 0;
                c->n_out = 0;
                /* seq_tmp: the next position of each sequence within the chunk. */
                for (uint32_t s = 0; s < c->n_seq; s++)
                        c->seq_tmp[s] = c->seq_pos[s];
                while (k < n && k < c->n_batch) {
                        const struct rbee_batch_entry *x = &e[k];
                        c->tokens[k] = x->token;
                        c->tok_seq[k] = x->seq;
                        c->tok_pos[k] = c->seq_tmp[x->seq]++;
                        if (x->logits)
                                c->out_tok[c->n_out++] = k;
                        k++;
                        if (x->logits && c->cuda)
                                break;
                }
                int r = run_staged(c, k);
                if (r < 0)
                        return r;
                e += k;
                n -= k;
        }
        return 0;
}

const float *rbee_get_logits(const rbee_context *c) {
        return rbee_get_seq_logits(c, 0);
}

const float *rbee_get_seq_logits(const rbee_context *c, uint32_t seq) {
        if (seq >= c->n_seq)
                return NULL;
        float *l = c->logits + (size_t) seq * c->model->info.n_vocab;
        if (c->logits_remote[seq]) {
                /* Fetched on first use: the caller sees the context as it was,
                 * and contexts are never const objects, so the cast is sound. */
                rbee_context *mc = (rbee_context *) c;
                if (rbee_cuda_get_logits(mc->cuda, l) < 0)
                        return NULL;
                mc->logits_remote[seq] = false;
        }
        return l;
}

void rbee_seq_want_top(rbee_context *c, uint32_t seq, uint32_t k) {
        /* Only a device selects candidates; the CPU has every logit at hand. */
        if (c->cuda && seq < c->n_seq)
                c->top_want[seq] = MIN(MIN(k, (uint32_t) RBEE_SAMPLER_TOP_MAX), (uint32_t) c->model->info.n_vocab);
}

size_t rbee_seq_top(const rbee_context *c, uint32_t seq, const float **ret_l, const int32_t **ret_id) {
        if (seq >= c->n_seq || c->top_n[seq] == 0)
                return 0;
        *ret_l = c->top_l + (size_t) seq * RBEE_SAMPLER_TOP_MAX;
        *ret_id = c->top_id + (size_t) seq * RBEE_SAMPLER_TOP_MAX;
        return c->top_n[seq];
}
