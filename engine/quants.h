/* SPDX-License-Identifier: MIT */
#pragma once

/* Block formats (bit-compatible with GGUF/ggml), conversion to and from float,
 * and the dot products the matrix-vector kernels are made of. Weights are
 * multiplied in their quantized form: the activation vector is quantized once
 * to the weight type's "vec_dot_type" (Q8_0, Q8_1 or Q8_K) and integer dot
 * products run on blocks, with AVX2/FMA/F16C code chosen at run time and a
 * portable scalar fallback. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "types.h"

typedef uint16_t rbee_fp16;
typedef uint16_t rbee_bf16;

/* IEEE binary16 and bfloat16. Widening is exact. Narrowing rounds to nearest,
 * ties to even, keeps subnormals, overflows to infinity, and turns a NaN
 * into a quiet NaN (the same bits as F16C's vcvtps2ph). Thread-safe. */
float rbee_fp16_to_fp32(rbee_fp16 h);
rbee_fp16 rbee_fp32_to_fp16(float f);
float rbee_bf16_to_fp32(rbee_bf16 h);
rbee_bf16 rbee_fp32_to_bf16(float f);

/* Block layouts, as in ggml. */
typedef struct { rbee_fp16 d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { rbee_fp16 d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct { rbee_fp16 d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct { rbee_fp16 d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct { rbee_fp16 d; int8_t qs[QK8_0]; } block_q8_0;
typedef struct { rbee_fp16 d, s; int8_t qs[QK8_1]; } block_q8_1; /* s = d * sum(qs) */
typedef struct { rbee_fp16 d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K;
typedef struct { rbee_fp16 d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K;
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; rbee_fp16 d; } block_q6_K;
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;

/* Per-type operations. Each n below is a row length and must be a multiple
 * of the type's block size (callers check with rbee_type_row_size()); for
 * F32/F16/BF16 any n >= 0 works. Pointers need only the alignment of the
 * block struct (2, or 4 for Q8_K); the kernels use unaligned loads. */
typedef void (*rbee_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*rbee_from_float_fn)(const float *src, void *dst, int64_t n);
/* Dot product of a weight row (type t) with an activation row already in
 * vec_dot_type(t), as written by that type's from_float. Activation codes
 * must lie in [-127, 127] (every quantizer here guarantees it; the SIMD
 * Q8_0 x Q8_0 kernel is inexact for a -128 activation against a -128 weight). */
typedef float (*rbee_vec_dot_fn)(int64_t n, const void *w, const void *a);
/* The same for four activation rows at a + k * a_stride (k = 0..3): the
 * weight row is loaded and unpacked once for all four (prompt processing).
 * Each result is bit-identical to vec_dot's on that row. */
typedef void (*rbee_vec_dot4_fn)(int64_t n, const void *w, const void *a, size_t a_stride, float out[4]);

/* Four weight rows at w + r * w_stride (r = 0..3) against four activation
 * rows at a + k * a_stride: out[k * 4 + r] is row r dotted with activation
 * k. Every result is bit-identical to vec_dot's on that pair, so the tiling
 * of a matrix product never changes it. */
typedef void (*rbee_vec_dot4x4_fn)(int64_t n, const void *w, size_t w_stride, const void *a, size_t a_stride,
                                   float out[16]);

/* Four weight rows at w + r * w_stride against one activation row: out[r]
 * (generation, where one token meets every row once). Four rows share the
 * activation loads and keep four streams of weights in flight. Each result
 * is bit-identical to vec_dot's on that row. */
typedef void (*rbee_vec_dot4r_fn)(int64_t n, const void *w, size_t w_stride, const void *a, float out[4]);

struct rbee_quant_ops {
        enum rbee_type type;
        enum rbee_type vec_dot_type; /* what activations are converted to */
        rbee_to_float_fn to_float;
        rbee_from_float_fn from_float;     /* fast, for activations (and a fallback quantizer) */
        rbee_from_float_fn quantize_ref;   /* careful quantizer for writing weights: the same bytes
                                            * as llama.cpp's reference quantizers */
        rbee_vec_dot_fn vec_dot;           /* NULL for Q8_1 and Q8_K, which only hold activations */
        rbee_vec_dot4_fn vec_dot4;         /* optional (NULL: call vec_dot four times) */
        rbee_vec_dot4x4_fn vec_dot4x4;     /* optional (NULL: call vec_dot4 or vec_dot) */
        rbee_vec_dot4r_fn vec_dot4r;       /* optional (NULL: call vec_dot per row) */
};

/* NULL for types without ops. Runtime CPU dispatch happens on first call
 * (thread-safe, pthread_once); the tables are constant afterwards and the
 * returned pointer stays valid for the life of the process. */
const struct rbee_quant_ops *rbee_quant_ops(enum rbee_type t);

/* Name of the SIMD level in use ("avx2", "scalar", ...), for logs and bench. */
const char *rbee_quant_simd(void);

/* Make later rbee_quant_ops() calls return the portable scalar table (tests
 * compare SIMD against it); pointers obtained before stay valid. Not
 * thread-safe: set it before other threads use this module. */
void rbee_quant_force_scalar(bool on);

/* Convenience: dequantize n elements of type t. Returns 0 or -EINVAL. */
int rbee_dequantize_row(enum rbee_type t, const void *src, float *dst, int64_t n);
/* Quantize n elements into type t with the careful quantizer. Returns 0 or -EINVAL. */
int rbee_quantize_row(enum rbee_type t, const float *src, void *dst, int64_t n);
