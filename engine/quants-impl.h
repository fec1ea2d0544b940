/* SPDX-License-Identifier: MIT */
#pragma once

/* Internal to the quants*.c files: the per-type kernels behind the ops table
 * and small helpers that have to give identical results everywhere (fp16
 * conversion, the rounding ggml's quantizers use, K-quant scale packing). */

#include <math.h>
#include <string.h>

#include "quants.h"

_Static_assert(sizeof(block_q4_0) == 2 + QK4_0 / 2, "block_q4_0 layout");
_Static_assert(sizeof(block_q4_1) == 4 + QK4_1 / 2, "block_q4_1 layout");
_Static_assert(sizeof(block_q5_0) == 6 + QK5_0 / 2, "block_q5_0 layout");
_Static_assert(sizeof(block_q5_1) == 8 + QK5_1 / 2, "block_q5_1 layout");
_Static_assert(sizeof(block_q8_0) == 2 + QK8_0, "block_q8_0 layout");
_Static_assert(sizeof(block_q8_1) == 4 + QK8_1, "block_q8_1 layout");
_Static_assert(sizeof(block_q4_K) == 4 + K_SCALE_SIZE + QK_K / 2, "block_q4_K layout");
_Static_assert(sizeof(block_q5_K) == 4 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2, "block_q5_K layout");
_Static_assert(sizeof(block_q6_K) == QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, "block_q6_K layout");
_Static_assert(sizeof(block_q8_K) == 4 + QK_K + QK_K / 16 * 2, "block_q8_K layout");

static inline uint32_t f32_bits(float f) {
        uint32_t u;
        memcpy(&u, &f, sizeof(u));
        return u;
}

static inline float f32_from_bits(uint32_t u) {
        float f;
        memcpy(&f, &u, sizeof(f));
        return f;
}

/* Exact: every half is representable as a float. NaNs come out quiet with
 * their payload kept, which is what F16C's vcvtph2ps does too. */
static inline float fp16_to_fp32(rbee_fp16 h) {
        uint32_t sign = (uint32_t) (h & 0x8000) << 16;
        uint32_t exp = (h >> 10) & 0x1f;
        uint32_t mant = h & 0x3ff;

        if (exp == 0) {
                /* Zero or subnormal: mant * 2^-24 is exact in float. */
                float f = (float) mant * 0x1p-24f;
                return f32_from_bits(f32_bits(f) | sign);
        }
        if (exp == 31)
                return f32_from_bits(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0));
        return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

/* Round to nearest, ties to even, with subnormals, overflow to infinity and
 * quiet NaNs: the same bits as F16C's vcvtps2ph with rounding mode 0. */
static inline rbee_fp16 fp32_to_fp16(float f) {
        uint32_t u = f32_bits(f);
        uint32_t sign = (u >> 16) & 0x8000;
        uint32_t a = u & 0x7fffffffu;

        if (a > 0x7f800000u)
                return (rbee_fp16) (sign | 0x7e00 | ((a >> 13) & 0x3ff));
        if (a >= 0x477ff000u) /* 65520 and up round to infinity */
                return (rbee_fp16) (sign | 0x7c00);
        if (a < 0x38800000u) {
                /* Below the smallest normal half: the result is a multiple of 2^-24. */
                if (a <= 0x33000000u) /* at most 2^-25: ties go to even zero */
                        return (rbee_fp16) sign;
                uint32_t e = a >> 23;
                uint32_t m = (a & 0x7fffff) | 0x800000;
                uint32_t shift = 126 - e;
                uint32_t r = m >> shift;
                uint32_t rem = m & ((1u << shift) - 1);
                uint32_t half = 1u << (shift - 1);
                if (rem > half || (rem == half && (r & 1)))
                        r++;
                return (rbee_fp16) (sign | r);
        }
        uint32_t r = (a >> 13) - (112u << 10);
        uint32_t rem = a & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
                r++; /* a carry into the exponent is still right */
        return (rbee_fp16) (sign | r);
}

static inline float bf16_to_fp32(rbee_bf16 h) {
        return f32_from_bits((uint32_t) h << 16);
}

static inline rbee_bf16 fp32_to_bf16(float f) {
        uint32_t u = f32_bits(f);

        if ((u & 0x7fffffffu) > 0x7f800000u)
                return (rbee_bf16) ((u >> 16) | 0x40); /* keep it a NaN, make it quiet */
        return (rbee_bf16) ((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static inline int clamp_int(int v, int lo, int hi) {
        return v < lo ? lo : v > hi ? hi : v;
}

/* Round to nearest, ties to even, as ggml's nearest_int() does for the
 * K-quants (so that our quantizer picks the same integers). Out-of-range and
 * NaN inputs are clamped instead of being undefined. */
static inline int nearest_int(float v) {
        if (!(v >= -4194303.f))
                v = isnan(v) ? 0.f : -4194303.f;
        else if (v > 4194303.f)
                v = 4194303.f;
        float t = v + 12582912.f; /* 1.5 * 2^23: the integer lands in the low mantissa bits */
        return (int) (f32_bits(t) & 0x007fffff) - 0x00400000;
}

/* The C cast (truncation) the legacy quantizers use, defined for every input. */
static inline int trunc_int(float v) {
        if (!(v >= -1024.f))
                return isnan(v) ? 0 : -1024;
        if (v > 1024.f)
                return 1024;
        return (int) v;
}

/* roundf() then a cast, defined for every input. */
static inline int round_int(float v) {
        if (!(v >= -1024.f))
                return isnan(v) ? 0 : -1024;
        if (v > 1024.f)
                return 1024;
        return (int) roundf(v);
}

/* Q4_K/Q5_K keep 8 six-bit scales and 8 six-bit mins in 12 bytes: bytes 0-3
 * hold scales 0-3 and bytes 4-7 mins 0-3 in their low 6 bits; scales and
 * mins 4-7 have their low nibbles in bytes 8-11 and their top two bits in the
 * spare top bits of bytes 0-3 (scales) and 4-7 (mins). */
static inline void k4_scale_min(int j, const uint8_t *q, uint8_t *ret_sc, uint8_t *ret_m) {
        if (j < 4) {
                *ret_sc = q[j] & 63;
                *ret_m = q[j + 4] & 63;
        } else {
                *ret_sc = (uint8_t) ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
                *ret_m = (uint8_t) ((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
        }
}

/* All eight at once: sc[0..7] and m[0..7]. */
static inline void k4_unpack_scales(const uint8_t *q, uint8_t sc[8], uint8_t m[8]) {
        uint32_t w[3], out[4];

        memcpy(w, q, sizeof(w));
        out[0] = w[0] & 0x3f3f3f3fu;
        out[1] = (w[2] & 0x0f0f0f0fu) | (((w[0] >> 6) & 0x03030303u) << 4);
        out[2] = w[1] & 0x3f3f3f3fu;
        out[3] = ((w[2] >> 4) & 0x0f0f0f0fu) | (((w[1] >> 6) & 0x03030303u) << 4);
        memcpy(sc, out, 8);
        memcpy(m, out + 2, 8);
}

/* Float rows (quants.c). */
void rbee_f32_to_float(const void *src, float *dst, int64_t n);
void rbee_f32_from_float(const float *src, void *dst, int64_t n);
void rbee_f16_to_float(const void *src, float *dst, int64_t n);
void rbee_f16_from_float(const float *src, void *dst, int64_t n);
void rbee_bf16_to_float(const void *src, float *dst, int64_t n);
void rbee_bf16_from_float(const float *src, void *dst, int64_t n);
float rbee_dot_f32(int64_t n, const void *w, const void *a);
float rbee_dot_f16(int64_t n, const void *w, const void *a);
float rbee_dot_bf16(int64_t n, const void *w, const void *a);

/* 32-element block types (quants-legacy.c). */
void rbee_dequant_q4_0(const void *src, float *dst, int64_t n);
void rbee_dequant_q4_1(const void *src, float *dst, int64_t n);
void rbee_dequant_q5_0(const void *src, float *dst, int64_t n);
void rbee_dequant_q5_1(const void *src, float *dst, int64_t n);
void rbee_dequant_q8_0(const void *src, float *dst, int64_t n);
void rbee_dequant_q8_1(const void *src, float *dst, int64_t n);
void rbee_quantize_q4_0(const float *src, void *dst, int64_t n);
void rbee_quantize_q4_1(const float *src, void *dst, int64_t n);
void rbee_quantize_q5_0(const float *src, void *dst, int64_t n);
void rbee_quantize_q5_1(const float *src, void *dst, int64_t n);
void rbee_quantize_q8_0(const float *src, void *dst, int64_t n);
void rbee_quantize_q8_1(const float *src, void *dst, int64_t n);
float rbee_dot_q4_0_q8_0(int64_t n, const void *w, const void *a);
float rbee_dot_q4_1_q8_1(int64_t n, const void *w, const void *a);
float rbee_dot_q5_0_q8_0(int64_t n, const void *w, const void *a);
float rbee_dot_q5_1_q8_1(int64_t n, const void *w, const void *a);
float rbee_dot_q8_0_q8_0(int64_t n, const void *w, const void *a);

/* 256-element super-block types (quants-k.c). */
void rbee_dequant_q4_K(const void *src, float *dst, int64_t n);
void rbee_dequant_q5_K(const void *src, float *dst, int64_t n);
void rbee_dequant_q6_K(const void *src, float *dst, int64_t n);
void rbee_dequant_q8_K(const void *src, float *dst, int64_t n);
void rbee_quantize_q4_K(const float *src, void *dst, int64_t n);
void rbee_quantize_q5_K(const float *src, void *dst, int64_t n);
void rbee_quantize_q6_K(const float *src, void *dst, int64_t n);
void rbee_quantize_q8_K(const float *src, void *dst, int64_t n);
float rbee_dot_q4_K_q8_K(int64_t n, const void *w, const void *a);
float rbee_dot_q5_K_q8_K(int64_t n, const void *w, const void *a);
float rbee_dot_q6_K_q8_K(int64_t n, const void *w, const void *a);

/* AVX2+FMA+F16C kernels (quants-avx2.c): true when this CPU has them and
 * ops[] (indexed by type) was updated with them. */
bool rbee_quant_install_avx2(struct rbee_quant_ops *ops, size_t n_ops);
/* fp16 to float by table, filled by rbee_quant_install_avx2() before it
 * returns true (under the dispatch pthread_once), read-only afterwards. */
extern float rbee_fp16_lut[1 << 16];
/* AVX512-VNNI kernels (quants-vnni.c), installed over the AVX2 ones: true
 * when this CPU has them and ops[] was updated. */
bool rbee_quant_install_vnni(struct rbee_quant_ops *ops, size_t n_ops);
/* AVX-512 (VNNI, VBMI) generation kernels (quants-avx512.c), installed over
 * the VNNI ones: true when this CPU has them and ops[] was updated. */
bool rbee_quant_install_avx512(struct rbee_quant_ops *ops, size_t n_ops);
