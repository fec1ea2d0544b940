/* SPDX-License-Identifier: MIT */
#pragma once

/* The seam between the engine and an accelerator backend. A context whose
 * params ask for CUDA holds a struct rbee_cuda and hands every forward pass
 * to it; the CPU path is untouched. Built without CUDA (make CUDA=0), these
 * functions exist (engine/cuda/none.c) and fail with -EOPNOTSUPP. */

#include "model.h"

struct rbee_cuda;

/* Upload the model to the device (once per model and device: contexts
 * share the weights) and allocate the KV cache and buffers there. progress
 * (may be NULL) is called after each layer uploaded, done counting to
 * n_layer, only when this call uploads; false cancels: everything is freed
 * and -ECANCELED returned. It runs under the lock of the weights registry:
 * it must not create or free CUDA contexts.
 * -ENODEV: no driver, no such device; -ENOMEM: it does not fit in the free
 * VRAM (checked before anything is allocated); -EOPNOTSUPP: a tensor type
 * or shape without device kernels. Each failure is logged with its reason. */
int rbee_cuda_new(rbee_model *m, int device, uint32_t n_ctx, uint32_t n_batch, rbee_progress_fn progress,
                  void *userdata, struct rbee_cuda **ret);
struct rbee_cuda *rbee_cuda_free(struct rbee_cuda *g);

/* The forward pass of n <= n_batch tokens at pos: the KV cache is updated
 * on the device and the logits of the last token computed there. k == 0:
 * the n_vocab logits land in logits (NULL: none come back). k in
 * 1..min(n_vocab, RBEE_SAMPLER_TOP_MAX): only the first k candidates in the
 * sampler's order come back, to top_l and top_id (see
 * rbee_sampler_sample_top()). The logits stay on the device until the next
 * pass either way. */
int rbee_cuda_forward(struct rbee_cuda *g, const int32_t *tokens, uint32_t n, uint32_t pos, uint32_t k,
                      float *logits, float *top_l, int32_t *top_id);

/* Copy the n_vocab logits of the last forward pass from the device. */
int rbee_cuda_get_logits(struct rbee_cuda *g, float *logits);

/* Check the device block decoders, run on the host, against the CPU
 * dequantizers for every weight type (no GPU needed). 0, or -EBADMSG with
 * the first difference in err. */
int rbee_cuda_check_decoders(char *err, size_t errlen);

/* Check the top-k selection on device against a sort on the host, over
 * logits with ties, NaN, infinities and signed zeros, for vocabularies of
 * one to three selection stages. 0, or -EBADMSG with the first difference
 * in err; device errors as negative errno. */
int rbee_cuda_check_topk(int device, char *err, size_t errlen);
