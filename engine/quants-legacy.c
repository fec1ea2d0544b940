/* SPDX-License-Identifier: MIT */
/* The 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1): the
 * reference quantizers, dequantizers and portable dot products.
 *
 * The quantizers reproduce llama.cpp's reference ones operation for
 * operation (the same scale choice, the same float expressions, the same
 * truncating or rounding casts) so that a row we quantize has the same bytes
 * as llama-quantize's; the dequantizers evaluate the same expressions, so
 * values read from a file are the values llama.cpp computes with. */

#include <float.h>

#include "quants-impl.h"

/* Value with the largest magnitude, sign kept (the first one on ties). */
static float signed_absmax(const float *x, int n) {
        float amax = 0.f, max = 0.f;

        for (int j = 0; j < n; j++)
                if (amax < fabsf(x[j])) {
                        amax = fabsf(x[j]);
                        max = x[j];
                }
        return max;
}

static void min_max(const float *x, int n, float *ret_min, float *ret_max) {
        float min = FLT_MAX, max = -FLT_MAX;

        for (int j = 0; j < n; j++) {
                if (x[j] < min)
                        min = x[j];
                if (x[j] > max)
                        max = x[j];
        }
        *ret_min = min;
        *ret_max = max;
}

static void put_u32le(uint8_t out[4], uint32_t v) {
        out[0] = (uint8_t) v;
        out[1] = (uint8_t) (v >> 8);
        out[2] = (uint8_t) (v >> 16);
        out[3] = (uint8_t) (v >> 24);
}

static uint32_t get_u32le(const uint8_t in[4]) {
        return (uint32_t) in[0] | (uint32_t) in[1] << 8 | (uint32_t) in[2] << 16 | (uint32_t) in[3] << 24;
}

/* Symmetric 4 bits: the largest-magnitude value maps to -8 exactly, so the
 * full range [-8, 7] is used on the side where it matters. */
void rbee_quantize_q4_0(const float *src, void *dst, int64_t n) {
        block_q4_0 *y = dst;

        for (int64_t i = 0; i < n / QK4_0; i++) {
                const float *x = src + i * QK4_0;
                const float d = signed_absmax(x, QK4_0) / -8;
                const float id = d != 0.f ? 1.0f / d : 0.f;

                y[i].d = fp32_to_fp16(d);
                for (int j = 0; j < QK4_0 / 2; j++) {
                        int lo = clamp_int(trunc_int(x[j] * id + 8.5f), 0, 15);
                        int hi = clamp_int(trunc_int(x[j + QK4_0 / 2] * id + 8.5f), 0, 15);
                        y[i].qs[j] = (uint8_t) ((lo & 0x0f) | (hi << 4));
                }
        }
}

void rbee_quantize_q4_1(const float *src, void *dst, int64_t n) {
        block_q4_1 *y = dst;

        for (int64_t i = 0; i < n / QK4_1; i++) {
                const float *x = src + i * QK4_1;
                float min, max;

                min_max(x, QK4_1, &min, &max);
                const float d = (max - min) / 15;
                const float id = d != 0.f ? 1.0f / d : 0.f;

                y[i].d = fp32_to_fp16(d);
                y[i].m = fp32_to_fp16(min);
                for (int j = 0; j < QK4_1 / 2; j++) {
                        int lo = clamp_int(trunc_int((x[j] - min) * id + 0.5f), 0, 15);
                        int hi = clamp_int(trunc_int((x[j + QK4_1 / 2] - min) * id + 0.5f), 0, 15);
                        y[i].qs[j] = (uint8_t) ((lo & 0x0f) | (hi << 4));
                }
        }
}

void rbee_quantize_q5_0(const float *src, void *dst, int64_t n) {
        block_q5_0 *y = dst;

        for (int64_t i = 0; i < n / QK5_0; i++) {
                const float *x = src + i * QK5_0;
                const float d = signed_absmax(x, QK5_0) / -16;
                const float id = d != 0.f ? 1.0f / d : 0.f;
                uint32_t qh = 0;

                y[i].d = fp32_to_fp16(d);
                for (int j = 0; j < QK5_0 / 2; j++) {
                        int lo = clamp_int(trunc_int(x[j] * id + 16.5f), 0, 31);
                        int hi = clamp_int(trunc_int(x[j + QK5_0 / 2] * id + 16.5f), 0, 31);
                        y[i].qs[j] = (uint8_t) ((lo & 0x0f) | ((hi & 0x0f) << 4));
                        qh |= (uint32_t) ((lo >> 4) & 1) << j;
                        qh |= (uint32_t) ((hi >> 4) & 1) << (j + QK5_0 / 2);
                }
                put_u32le(y[i].qh, qh);
        }
}

void rbee_quantize_q5_1(const float *src, void *dst, int64_t n) {
        block_q5_1 *y = dst;

        for (int64_t i = 0; i < n / QK5_1; i++) {
                const float *x = src + i * QK5_1;
                float min, max;
                uint32_t qh = 0;

                min_max(x, QK5_1, &min, &max);
                const float d = (max - min) / 31;
                const float id = d != 0.f ? 1.0f / d : 0.f;

                y[i].d = fp32_to_fp16(d);
                y[i].m = fp32_to_fp16(min);
                for (int j = 0; j < QK5_1 / 2; j++) {
                        /* llama.cpp has no clamp here: (x - min) * id never passes 31 by more than rounding. */
                        int lo = clamp_int(trunc_int((x[j] - min) * id + 0.5f), 0, 255) & 31;
                        int hi = clamp_int(trunc_int((x[j + QK5_1 / 2] - min) * id + 0.5f), 0, 255) & 31;
                        y[i].qs[j] = (uint8_t) ((lo & 0x0f) | ((hi & 0x0f) << 4));
                        qh |= (uint32_t) (lo >> 4) << j;
                        qh |= (uint32_t) (hi >> 4) << (j + QK5_1 / 2);
                }
                put_u32le(y[i].qh, qh);
        }
}

void rbee_quantize_q8_0(const float *src, void *dst, int64_t n) {
        block_q8_0 *y = dst;

        for (int64_t i = 0; i < n / QK8_0; i++) {
                const float *x = src + i * QK8_0;
                float amax = 0.f;

                for (int j = 0; j < QK8_0; j++)
                        amax = fmaxf(amax, fabsf(x[j]));
                const float d = amax / 127;
                const float id = d != 0.f ? 1.0f / d : 0.f;

                y[i].d = fp32_to_fp16(d);
                for (int j = 0; j < QK8_0; j++)
                        y[i].qs[j] = (int8_t) clamp_int(round_int(x[j] * id), -128, 127);
        }
}

void rbee_quantize_q8_1(const float *src, void *dst, int64_t n) {
        block_q8_1 *y = dst;

        for (int64_t i = 0; i < n / QK8_1; i++) {
                const float *x = src + i * QK8_1;
                float amax = 0.f;
                int sum = 0;

                for (int j = 0; j < QK8_1; j++)
                        amax = fmaxf(amax, fabsf(x[j]));
                const float d = amax / 127;
                const float id = d != 0.f ? 1.0f / d : 0.f;

                y[i].d = fp32_to_fp16(d);
                for (int j = 0; j < QK8_1; j++) {
                        y[i].qs[j] = (int8_t) clamp_int(round_int(x[j] * id), -128, 127);
                        sum += y[i].qs[j];
                }
                y[i].s = fp32_to_fp16((float) sum * d);
        }
}

void rbee_dequant_q4_0(const void *src, float *dst, int64_t n) {
        const block_q4_0 *x = src;

        for (int64_t i = 0; i < n / QK4_0; i++) {
                const float d = fp16_to_fp32(x[i].d);
                float *y = dst + i * QK4_0;

                for (int j = 0; j < QK4_0 / 2; j++) {
                        y[j] = (float) ((x[i].qs[j] & 0x0f) - 8) * d;
                        y[j + QK4_0 / 2] = (float) ((x[i].qs[j] >> 4) - 8) * d;
                }
        }
}

void rbee_dequant_q4_1(const void *src, float *dst, int64_t n) {
        const block_q4_1 *x = src;

        for (int64_t i = 0; i < n / QK4_1; i++) {
                const float d = fp16_to_fp32(x[i].d);
                const float m = fp16_to_fp32(x[i].m);
                float *y = dst + i * QK4_1;

                for (int j = 0; j < QK4_1 / 2; j++) {
                        y[j] = (float) (x[i].qs[j] & 0x0f) * d + m;
                        y[j + QK4_1 / 2] = (float) (x[i].qs[j] >> 4) * d + m;
                }
        }
}

void rbee_dequant_q5_0(const void *src, float *dst, int64_t n) {
        const block_q5_0 *x = src;

        for (int64_t i = 0; i < n / QK5_0; i++) {
                const float d = fp16_to_fp32(x[i].d);
                const uint32_t qh = get_u32le(x[i].qh);
                float *y = dst + i * QK5_0;

                for (int j = 0; j < QK5_0 / 2; j++) {
                        int lo = (int) ((x[i].qs[j] & 0x0f) | (((qh >> j) & 1) << 4));
                        int hi = (int) ((x[i].qs[j] >> 4) | (((qh >> (j + QK5_0 / 2)) & 1) << 4));
                        y[j] = (float) (lo - 16) * d;
                        y[j + QK5_0 / 2] = (float) (hi - 16) * d;
                }
        }
}

void rbee_dequant_q5_1(const void *src, float *dst, int64_t n) {
        const block_q5_1 *x = src;

        for (int64_t i = 0; i < n / QK5_1; i++) {
                const float d = fp16_to_fp32(x[i].d);
                const float m = fp16_to_fp32(x[i].m);
                const uint32_t qh = get_u32le(x[i].qh);
                float *y = dst + i * QK5_1;

                for (int j = 0; j < QK5_1 / 2; j++) {
                        int lo = (int) ((x[i].qs[j] & 0x0f) | (((qh >> j) & 1) << 4));
                        int hi = (int) ((x[i].qs[j] >> 4) | (((qh >> (j + QK5_1 / 2)) & 1) << 4));
                        y[j] = (float) lo * d + m;
                        y[j + QK5_1 / 2] = (float) hi * d + m;
                }
        }
}

void rbee_dequant_q8_0(const void *src, float *dst, int64_t n) {
        const block_q8_0 *x = src;

        for (int64_t i = 0; i < n / QK8_0; i++) {
                const float d = fp16_to_fp32(x[i].d);

                for (int j = 0; j < QK8_0; j++)
                        dst[i * QK8_0 + j] = (float) x[i].qs[j] * d;
        }
}

void rbee_dequant_q8_1(const void *src, float *dst, int64_t n) {
        const block_q8_1 *x = src;

        for (int64_t i = 0; i < n / QK8_1; i++) {
                const float d = fp16_to_fp32(x[i].d);

                for (int j = 0; j < QK8_1; j++)
                        dst[i * QK8_1 + j] = (float) x[i].qs[j] * d;
        }
}

/* The dot products sum integer products within a block exactly and apply
 * the two block scales once. */

float rbee_dot_q4_0_q8_0(int64_t n, const void *w, const void *a) {
        const block_q4_0 *x = w;
        const block_q8_0 *y = a;
        float sum = 0.f;

        for (int64_t i = 0; i < n / QK4_0; i++) {
                int s = 0;

                for (int j = 0; j < QK4_0 / 2; j++) {
                        s += ((x[i].qs[j] & 0x0f) - 8) * y[i].qs[j];
                        s += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK4_0 / 2];
                }
                sum += (float) s * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
        }
        return sum;
}

float rbee_dot_q4_1_q8_1(int64_t n, const void *w, const void *a) {
        const block_q4_1 *x = w;
        const block_q8_1 *y = a;
        float sum = 0.f;

        for (int64_t i = 0; i < n / QK4_1; i++) {
                int s = 0;

                for (int j = 0; j < QK4_1 / 2; j++) {
                        s += (x[i].qs[j] & 0x0f) * y[i].qs[j];
                        s += (x[i].qs[j] >> 4) * y[i].qs[j + QK4_1 / 2];
                }
                /* sum((q*d + m) * a) = d*da*sum(q*qa) + m*(da*sum(qa)), the last factor being y.s */
                sum += (float) s * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d)) +
                       fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
        }
        return sum;
}

float rbee_dot_q5_0_q8_0(int64_t n, const void *w, const void *a) {
        const block_q5_0 *x = w;
        const block_q8_0 *y = a;
        float sum = 0.f;

        for (int64_t i = 0; i < n / QK5_0; i++) {
                const uint32_t qh = get_u32le(x[i].qh);
                int s = 0;

                for (int j = 0; j < QK5_0 / 2; j++) {
                        int lo = (int) ((x[i].qs[j] & 0x0f) | (((qh >> j) & 1) << 4)) - 16;
                        int hi = (int) ((x[i].qs[j] >> 4) | (((qh >> (j + QK5_0 / 2)) & 1) << 4)) - 16;
                        s += lo * y[i].qs[j] + hi * y[i].qs[j + QK5_0 / 2];
                }
                sum += (float) s * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
        }
        return sum;
}

float rbee_dot_q5_1_q8_1(int64_t n, const void *w, const void *a) {
        const block_q5_1 *x = w;
        const block_q8_1 *y = a;
        float sum = 0.f;

        for (int64_t i = 0; i < n / QK5_1; i++) {
                const uint32_t qh = get_u32le(x[i].qh);
                int s = 0;

                for (int j = 0; j < QK5_1 / 2; j++) {
                        int lo = (int) ((x[i].qs[j] & 0x0f) | (((qh >> j) & 1) << 4));
                        int hi = (int) ((x[i].qs[j] >> 4) | (((qh >> (j + QK5_1 / 2)) & 1) << 4));
                        s += lo * y[i].qs[j] + hi * y[i].qs[j + QK5_1 / 2];
                }
                sum += (float) s * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d)) +
                       fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
        }
        return sum;
}

float rbee_dot_q8_0_q8_0(int64_t n, const void *w, const void *a) {
        const block_q8_0 *x = w;
        const block_q8_0 *y = a;
        float sum = 0.f;

        for (int64_t i = 0; i < n / QK8_0; i++) {
                int s = 0;

                for (int j = 0; j < QK8_0; j++)
                        s += x[i].qs[j] * y[i].qs[j];
                sum += (float) s * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
        }
        return sum;
}
