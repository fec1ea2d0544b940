/* SPDX-License-Identifier: MIT */
#pragma once

/* Attention over a KV cache for the query heads that share one key/value
 * head (grouped-query attention): each key and value row is read once for
 * all of them, scores and the weighted sum of values run in SIMD (AVX2/FMA
 * when the CPU has it, chosen at run time, else portable C). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* For g < n_q: out[g] = softmax(scale * K q[g]) V over the n rows of K and
 * V (row t at element t * ld of k and v, hd elements each, F16 when f16 is
 * set, else F32). q[g] is at q + g * hd,
 * out[g] at out + g * hd; att is scratch of n_q * n floats. The result for a
 * head does not depend on n_q (a head gives the same bits alone or in a
 * group). Thread-safe. */
void rbee_attend(const float *q, uint32_t n_q, uint32_t hd, const void *k, const void *v, bool f16, size_t ld,
                 uint32_t n, float scale, float *att, float *out);

/* The portable version, which the SIMD one is tested against. */
void rbee_attend_ref(const float *q, uint32_t n_q, uint32_t hd, const void *k, const void *v, bool f16, size_t ld,
                     uint32_t n, float scale, float *att, float *out);
