/* SPDX-License-Identifier: MIT */
/* fp16/bf16 conversion, the float row types, and the per-type ops table with
 * its one-time CPU dispatch. The kernels live in quants-legacy.c (32-element
 * blocks), quants-k.c (K-quants), and quants-avx2.c, quants-vnni.c and
 * quants-avx512.c (SIMD versions). */

#include <errno.h>
#include <pthread.h>

#include "quants-impl.h"

float rbee_fp16_to_fp32(rbee_fp16 h) {
        return fp16_to_fp32(h);
}

rbee_fp16 rbee_fp32_to_fp16(float f) {
        return fp32_to_fp16(f);
}

float rbee_bf16_to_fp32(rbee_bf16 h) {
        return bf16_to_fp32(h);
}

rbee_bf16 rbee_fp32_to_bf16(float f) {
        return fp32_to_bf16(f);
}

void rbee_f32_to_float(const void *src, float *dst, int64_t n) {
        memmove(dst, src, (size_t) n * sizeof(float));
}

void rbee_f32_from_float(const float *src, void *dst, int64_t n) {
        memmove(dst, src, (size_t) n * sizeof(float));
}

void rbee_f16_to_float(const void *src, float *dst, int64_t n) {
        const rbee_fp16 *x = src;

        for (int64_t i = 0; i < n; i++)
                dst[i] = fp16_to_fp32(x[i]);
}

void rbee_f16_from_float(const float *src, void *dst, int64_t n) {
        rbee_fp16 *y = dst;

        for (int64_t i = 0; i < n; i++)
                y[i] = fp32_to_fp16(src[i]);
}

void rbee_bf16_to_float(const void *src, float *dst, int64_t n) {
        const rbee_bf16 *x = src;

        for (int64_t i = 0; i < n; i++)
                dst[i] = bf16_to_fp32(x[i]);
}

void rbee_bf16_from_float(const float *src, void *dst, int64_t n) {
        rbee_bf16 *y = dst;

        for (int64_t i = 0; i < n; i++)
                y[i] = fp32_to_bf16(src[i]);
}

/* Float dots accumulate in double: the portable path is the reference the
 * SIMD versions are checked against, so it should be the accurate one. */
float rbee_dot_f32(int64_t n, const void *w, const void *a) {
        const float *x = w, *y = a;
        double sum = 0;

        for (int64_t i = 0; i < n; i++)
                sum += (double) x[i] * y[i];
        return (float) sum;
}

float rbee_dot_f16(int64_t n, const void *w, const void *a) {
        const rbee_fp16 *x = w;
        const float *y = a;
        double sum = 0;

        for (int64_t i = 0; i < n; i++)
                sum += (double) fp16_to_fp32(x[i]) * y[i];
        return (float) sum;
}

float rbee_dot_bf16(int64_t n, const void *w, const void *a) {
        const rbee_bf16 *x = w;
        const float *y = a;
        double sum = 0;

        for (int64_t i = 0; i < n; i++)
                sum += (double) bf16_to_fp32(x[i]) * y[i];
        return (float) sum;
}

#define OPS(t, vt, to, from, ref, dot) \
        [t] = { .type = t, .vec_dot_type = vt, .to_float = to, .from_float = from, .quantize_ref = ref, .vec_dot = dot }

/* The portable table. Q8_1 and Q8_K only ever hold activations: they have
 * conversions but no vec_dot. */
static const struct rbee_quant_ops ops_scalar[_RBEE_TYPE_MAX] = {
        OPS(RBEE_TYPE_F32, RBEE_TYPE_F32, rbee_f32_to_float, rbee_f32_from_float, rbee_f32_from_float, rbee_dot_f32),
        OPS(RBEE_TYPE_F16, RBEE_TYPE_F32, rbee_f16_to_float, rbee_f16_from_float, rbee_f16_from_float, rbee_dot_f16),
        OPS(RBEE_TYPE_BF16, RBEE_TYPE_F32, rbee_bf16_to_float, rbee_bf16_from_float, rbee_bf16_from_float, rbee_dot_bf16),
        OPS(RBEE_TYPE_Q4_0, RBEE_TYPE_Q8_0, rbee_dequant_q4_0, rbee_quantize_q4_0, rbee_quantize_q4_0, rbee_dot_q4_0_q8_0),
        OPS(RBEE_TYPE_Q4_1, RBEE_TYPE_Q8_1, rbee_dequant_q4_1, rbee_quantize_q4_1, rbee_quantize_q4_1, rbee_dot_q4_1_q8_1),
        OPS(RBEE_TYPE_Q5_0, RBEE_TYPE_Q8_0, rbee_dequant_q5_0, rbee_quantize_q5_0, rbee_quantize_q5_0, rbee_dot_q5_0_q8_0),
        OPS(RBEE_TYPE_Q5_1, RBEE_TYPE_Q8_1, rbee_dequant_q5_1, rbee_quantize_q5_1, rbee_quantize_q5_1, rbee_dot_q5_1_q8_1),
        OPS(RBEE_TYPE_Q8_0, RBEE_TYPE_Q8_0, rbee_dequant_q8_0, rbee_quantize_q8_0, rbee_quantize_q8_0, rbee_dot_q8_0_q8_0),
        OPS(RBEE_TYPE_Q8_1, RBEE_TYPE_Q8_1, rbee_dequant_q8_1, rbee_quantize_q8_1, rbee_quantize_q8_1, NULL),
        OPS(RBEE_TYPE_Q4_K, RBEE_TYPE_Q8_K, rbee_dequant_q4_K, rbee_quantize_q4_K, rbee_quantize_q4_K, rbee_dot_q4_K_q8_K),
        OPS(RBEE_TYPE_Q5_K, RBEE_TYPE_Q8_K, rbee_dequant_q5_K, rbee_quantize_q5_K, rbee_quantize_q5_K, rbee_dot_q5_K_q8_K),
        OPS(RBEE_TYPE_Q6_K, RBEE_TYPE_Q8_K, rbee_dequant_q6_K, rbee_quantize_q6_K, rbee_quantize_q6_K, rbee_dot_q6_K_q8_K),
        OPS(RBEE_TYPE_Q8_K, RBEE_TYPE_Q8_K, rbee_dequant_q8_K, rbee_quantize_q8_K, rbee_quantize_q8_K, NULL),
};

static struct rbee_quant_ops ops_best[_RBEE_TYPE_MAX];
static const char *simd_name = "scalar";
static pthread_once_t dispatch_once = PTHREAD_ONCE_INIT;
static bool force_scalar;

static void dispatch_init(void) {
        memcpy(ops_best, ops_scalar, sizeof(ops_best));
        if (rbee_quant_install_avx2(ops_best, _RBEE_TYPE_MAX)) {
                simd_name = "avx2";
                if (rbee_quant_install_vnni(ops_best, _RBEE_TYPE_MAX)) {
                        simd_name = "avx512vnni";
                        if (rbee_quant_install_avx512(ops_best, _RBEE_TYPE_MAX))
                                simd_name = "avx512vnni+vbmi";
                }
        }
}

const struct rbee_quant_ops *rbee_quant_ops(enum rbee_type t) {
        if ((unsigned) t >= _RBEE_TYPE_MAX || !ops_scalar[t].to_float)
                return NULL;
        if (force_scalar)
                return &ops_scalar[t];
        pthread_once(&dispatch_once, dispatch_init);
        return &ops_best[t];
}

const char *rbee_quant_simd(void) {
        if (force_scalar)
                return "scalar";
        pthread_once(&dispatch_once, dispatch_init);
        return simd_name;
}

void rbee_quant_force_scalar(bool on) {
        force_scalar = on;
}

static const struct rbee_quant_ops *ops_for_row(enum rbee_type t, int64_t n) {
        const struct rbee_quant_ops *ops = rbee_quant_ops(t);
        const struct rbee_type_traits *tr = rbee_type_traits((uint32_t) t);

        if (!ops || !tr || n < 0 || n % tr->block_size != 0)
                return NULL;
        return ops;
}

int rbee_dequantize_row(enum rbee_type t, const void *src, float *dst, int64_t n) {
        const struct rbee_quant_ops *ops = ops_for_row(t, n);

        if (!ops || (n > 0 && (!src || !dst)))
                return -EINVAL;
        ops->to_float(src, dst, n);
        return 0;
}

int rbee_quantize_row(enum rbee_type t, const float *src, void *dst, int64_t n) {
        const struct rbee_quant_ops *ops = ops_for_row(t, n);

        if (!ops || (n > 0 && (!src || !dst)))
                return -EINVAL;
        ops->quantize_ref(src, dst, n);
        return 0;
}
