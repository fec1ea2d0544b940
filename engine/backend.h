/* SPDX-License-Identifier: MIT */
#pragma once

/* The seam between the engine and an accelerator backend. A context whose
 * params ask for CUDA holds a struct rbee_cuda and hands every forward pass
 * to it; the CPU path is untouched. Built without CUDA (make CUDA=0), these
 * functions exist (engine/cuda/none.c) and fail with -EOPNOTSUPP. */

#include "model.h"

struct rbee_cuda;

/* Upload the model to the device (once per model and device: contexts
 * share the weights) and allocate the KV cache and buffers there.
 * -ENODEV: no driver, no such device; -ENOMEM: it does not fit in the free
 * VRAM (checked before anything is allocated); -EOPNOTSUPP: a tensor type
 * or shape without device kernels. Each failure is logged with its reason. */
int rbee_cuda_new(rbee_model *m, int device, uint32_t n_ctx, uint32_t n_batch, struct rbee_cuda **ret);
struct rbee_cuda *rbee_cuda_free(struct rbee_cuda *g);

/* The forward pass of n <= n_batch tokens at pos: the KV cache is updated
 * on the device, and the n_vocab logits of the last token land in logits. */
int rbee_cuda_forward(struct rbee_cuda *g, const int32_t *tokens, uint32_t n, uint32_t pos, float *logits);

/* Check the device block decoders, run on the host, against the CPU
 * dequantizers for every weight type (no GPU needed). 0, or -EBADMSG with
 * the first difference in err. */
int rbee_cuda_check_decoders(char *err, size_t errlen);
