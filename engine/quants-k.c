/* SPDX-License-Identifier: MIT */
/* The 256-element super-block formats (Q4_K, Q5_K, Q6_K and the Q8_K
 * activations they are dotted with): quantizers, dequantizers and portable
 * dot products.
 *
 * Q4_K/Q5_K: 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min,
 * themselves scaled by the fp16 d and dmin: x = d*sc*q - dmin*m.
 * Q6_K: 16 sub-blocks of 16 with a signed 8-bit scale: x = d*sc*(q - 32).
 *
 * The quantizers search for each sub-block's scale (and min) by weighted
 * least squares over a few candidate grids, then quantize the sub-block
 * scales themselves and requantize the values against the rounded scales,
 * the same procedure as llama.cpp's reference K-quantizers (and with the same
 * float arithmetic, so the chosen integers agree). */

#include "quants-impl.h"

/* Values below this count as an all-zero group. */
#define GROUP_EPS 1e-15f

/* Asymmetric fit for one group: find scale > 0 and min <= 0 with
 * x ~= scale*L + min, L in [0, nmax], minimizing sum(w * err^2). Starts from
 * the plain min/max grid, then tries nstep+1 slightly stretched grids
 * (nmax + rmin + rdelta*k levels across the range), each followed by the
 * closed-form weighted least-squares scale and min for the integers it
 * gives. Returns the scale; *ret_neg_min gets -min (>= 0). */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *ret_neg_min,
                           float rmin, float rdelta, int nstep) {
        uint8_t cand[32];
        float min = x[0], max = x[0];
        float sum_w = w[0], sum_x = w[0] * x[0];

        for (int i = 1; i < n; i++) {
                if (x[i] < min)
                        min = x[i];
                if (x[i] > max)
                        max = x[i];
                sum_w += w[i];
                sum_x += w[i] * x[i];
        }
        /* The min is subtracted from non-negative codes: it can only pull down. */
        if (min > 0)
                min = 0;
        if (max == min) {
                memset(L, 0, (size_t) n);
                *ret_neg_min = -min;
                return 0.f;
        }

        float iscale = (float) nmax / (max - min);
        float scale = 1 / iscale;
        float best_err = 0;
        for (int i = 0; i < n; i++) {
                int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
                L[i] = (uint8_t) l;
                float diff = scale * (float) l + min - x[i];
                best_err += w[i] * (diff * diff);
        }

        for (int step = 0; step <= nstep; step++) {
                float sum_l = 0, sum_l2 = 0, sum_xl = 0;

                iscale = (rmin + rdelta * (float) step + (float) nmax) / (max - min);
                for (int i = 0; i < n; i++) {
                        int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
                        cand[i] = (uint8_t) l;
                        sum_l += w[i] * (float) l;
                        sum_l2 += w[i] * (float) l * (float) l;
                        sum_xl += w[i] * (float) l * x[i];
                }
                float det = sum_w * sum_l2 - sum_l * sum_l;
                if (!(det > 0))
                        continue;
                float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
                float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
                if (this_min > 0) {
                        this_min = 0;
                        this_scale = sum_xl / sum_l2;
                }
                float err = 0;
                for (int i = 0; i < n; i++) {
                        float diff = this_scale * (float) cand[i] + this_min - x[i];
                        err += w[i] * (diff * diff);
                }
                if (err < best_err) {
                        memcpy(L, cand, (size_t) n);
                        best_err = err;
                        scale = this_scale;
                        min = this_min;
                }
        }
        *ret_neg_min = -min;
        return scale;
}

/* Symmetric fit for one group of Q6_K: L in [-nmax, nmax-1] (stored +nmax),
 * weights x^2 so large values dominate. Tries 19 grids around nmax levels
 * for the largest-magnitude value and keeps the one whose least-squares
 * scale explains the most of x. Returns the (signed) scale. */
static float fit_scale_sym(int n, int nmax, const float *x, int8_t *L) {
        float amax = 0, max = 0;

        for (int i = 0; i < n; i++)
                if (fabsf(x[i]) > amax) {
                        amax = fabsf(x[i]);
                        max = x[i];
                }
        if (amax < GROUP_EPS) {
                memset(L, 0, (size_t) n);
                return 0.f;
        }

        float iscale = (float) -nmax / max;
        float sum_lx = 0, sum_l2 = 0;
        for (int i = 0; i < n; i++) {
                int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
                float w = x[i] * x[i];
                L[i] = (int8_t) (l + nmax);
                sum_lx += w * x[i] * (float) l;
                sum_l2 += w * (float) l * (float) l;
        }
        float scale = sum_l2 != 0.f ? sum_lx / sum_l2 : 0.f;
        float best = scale * sum_lx;

        for (int step = -9; step <= 9; step++) {
                if (step == 0)
                        continue;
                iscale = -((float) nmax + 0.1f * (float) step) / max;
                sum_lx = sum_l2 = 0;
                for (int i = 0; i < n; i++) {
                        int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
                        float w = x[i] * x[i];
                        sum_lx += w * x[i] * (float) l;
                        sum_l2 += w * (float) l * (float) l;
                }
                /* Explained energy sum_lx^2/sum_l2, compared without dividing. */
                if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
                        for (int i = 0; i < n; i++)
                                L[i] = (int8_t) (nmax + clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1));
                        scale = sum_lx / sum_l2;
                        best = scale * sum_lx;
                }
        }
        return scale;
}

/* Shared by Q4_K and Q5_K: fit the 8 sub-blocks, quantize their scales and
 * mins to 6 bits against the block maxima, pack them, and requantize every
 * value against the scales as they will be read back. */
static void quantize_k_sub_blocks(const float *x, int nmax, float rmin, float rdelta, int nstep,
                                  rbee_fp16 *ret_d, rbee_fp16 *ret_dmin, uint8_t packed[K_SCALE_SIZE],
                                  uint8_t L[QK_K]) {
        float scales[QK_K / 32], mins[QK_K / 32], w[32];
        float max_scale = 0, max_min = 0;

        for (int j = 0; j < QK_K / 32; j++) {
                const float *xs = x + 32 * j;
                float sum_x2 = 0;

                for (int l = 0; l < 32; l++)
                        sum_x2 += xs[l] * xs[l];
                /* Weight by magnitude, floored by the group's RMS so small values still count. */
                float av_x = sqrtf(sum_x2 / 32);
                for (int l = 0; l < 32; l++)
                        w[l] = av_x + fabsf(xs[l]);
                scales[j] = fit_scale_min(32, nmax, xs, w, L + 32 * j, &mins[j], rmin, rdelta, nstep);
                if (scales[j] > max_scale)
                        max_scale = scales[j];
                if (mins[j] > max_min)
                        max_min = mins[j];
        }

        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        memset(packed, 0, K_SCALE_SIZE);
        for (int j = 0; j < QK_K / 32; j++) {
                int ls = clamp_int(nearest_int(inv_scale * scales[j]), 0, 63);
                int lm = clamp_int(nearest_int(inv_min * mins[j]), 0, 63);

                if (j < 4) {
                        packed[j] |= (uint8_t) ls;
                        packed[j + 4] |= (uint8_t) lm;
                } else {
                        packed[j + 4] = (uint8_t) ((ls & 0x0f) | ((lm & 0x0f) << 4));
                        packed[j - 4] |= (uint8_t) ((ls >> 4) << 6);
                        packed[j] |= (uint8_t) ((lm >> 4) << 6);
                }
        }
        *ret_d = fp32_to_fp16(max_scale / 63.f);
        *ret_dmin = fp32_to_fp16(max_min / 63.f);

        for (int j = 0; j < QK_K / 32; j++) {
                uint8_t sc, m;

                k4_scale_min(j, packed, &sc, &m);
                const float d = fp16_to_fp32(*ret_d) * (float) sc;
                if (d == 0.f)
                        continue;
                const float dm = fp16_to_fp32(*ret_dmin) * (float) m;
                for (int l = 0; l < 32; l++)
                        L[32 * j + l] = (uint8_t) clamp_int(nearest_int((x[32 * j + l] + dm) / d), 0, nmax);
        }
}

void rbee_quantize_q4_K(const float *src, void *dst, int64_t n) {
        block_q4_K *y = dst;
        uint8_t L[QK_K];

        for (int64_t i = 0; i < n / QK_K; i++) {
                quantize_k_sub_blocks(src + i * QK_K, 15, -1.f, 0.1f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
                /* Each 32 bytes hold two sub-blocks: the first in the low nibbles. */
                for (int j = 0; j < QK_K / 64; j++)
                        for (int l = 0; l < 32; l++)
                                y[i].qs[32 * j + l] = (uint8_t) (L[64 * j + l] | (L[64 * j + l + 32] << 4));
        }
}

void rbee_quantize_q5_K(const float *src, void *dst, int64_t n) {
        block_q5_K *y = dst;
        uint8_t L[QK_K];

        for (int64_t i = 0; i < n / QK_K; i++) {
                quantize_k_sub_blocks(src + i * QK_K, 31, -0.5f, 0.1f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
                /* Low nibbles as in Q4_K; the fifth bit of value l of sub-block s is bit s of qh[l]. */
                memset(y[i].qh, 0, sizeof(y[i].qh));
                for (int j = 0; j < QK_K / 64; j++)
                        for (int l = 0; l < 32; l++) {
                                int a = L[64 * j + l], b = L[64 * j + l + 32];
                                y[i].qs[32 * j + l] = (uint8_t) ((a & 0x0f) | ((b & 0x0f) << 4));
                                y[i].qh[l] |= (uint8_t) (((a >> 4) << (2 * j)) | ((b >> 4) << (2 * j + 1)));
                        }
        }
}

void rbee_quantize_q6_K(const float *src, void *dst, int64_t n) {
        block_q6_K *y = dst;
        int8_t L[QK_K];
        float scales[QK_K / 16];

        for (int64_t i = 0; i < n / QK_K; i++) {
                const float *x = src + i * QK_K;
                float max_scale = 0, max_abs_scale = 0;

                for (int j = 0; j < QK_K / 16; j++) {
                        scales[j] = fit_scale_sym(16, 32, x + 16 * j, L + 16 * j);
                        if (fabsf(scales[j]) > max_abs_scale) {
                                max_abs_scale = fabsf(scales[j]);
                                max_scale = scales[j];
                        }
                }
                if (max_abs_scale < GROUP_EPS) {
                        memset(&y[i], 0, sizeof(y[i]));
                        continue;
                }

                /* The largest scale becomes -128 so the signed 8-bit range is used fully. */
                float iscale = -128.f / max_scale;
                y[i].d = fp32_to_fp16(1 / iscale);
                for (int j = 0; j < QK_K / 16; j++)
                        y[i].scales[j] = (int8_t) clamp_int(nearest_int(iscale * scales[j]), -128, 127);

                for (int j = 0; j < QK_K / 16; j++) {
                        const float d = fp16_to_fp32(y[i].d) * (float) y[i].scales[j];
                        if (d == 0.f)
                                continue;
                        for (int l = 0; l < 16; l++)
                                L[16 * j + l] = (int8_t) (clamp_int(nearest_int(x[16 * j + l] / d), -32, 31) + 32);
                }

                /* Per 128 values: ql[0..31] low nibbles of values 0-31 and (high
                 * nibble) 64-95, ql[32..63] of 32-63 and 96-127; qh[l] the top two
                 * bits of values l, l+32, l+64, l+96. */
                for (int c = 0; c < QK_K / 128; c++) {
                        uint8_t *ql = y[i].ql + 64 * c, *qh = y[i].qh + 32 * c;
                        const int8_t *Lc = L + 128 * c;

                        for (int l = 0; l < 32; l++) {
                                int q0 = Lc[l], q1 = Lc[l + 32], q2 = Lc[l + 64], q3 = Lc[l + 96];
                                ql[l] = (uint8_t) ((q0 & 0x0f) | ((q2 & 0x0f) << 4));
                                ql[l + 32] = (uint8_t) ((q1 & 0x0f) | ((q3 & 0x0f) << 4));
                                qh[l] = (uint8_t) ((q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6));
                        }
                }
        }
}

/* Activations: scale so the largest magnitude is 127; the group sums of 16
 * let the dot products fold in Q4_K/Q5_K mins and Q6_K's offset cheaply. */
void rbee_quantize_q8_K(const float *src, void *dst, int64_t n) {
        block_q8_K *y = dst;

        for (int64_t i = 0; i < n / QK_K; i++) {
                const float *x = src + i * QK_K;
                float amax = 0, max = 0;

                for (int j = 0; j < QK_K; j++)
                        if (fabsf(x[j]) > amax) {
                                amax = fabsf(x[j]);
                                max = x[j];
                        }
                if (amax == 0.f) {
                        memset(&y[i], 0, sizeof(y[i]));
                        continue;
                }
                const float iscale = -127.f / max;
                for (int j = 0; j < QK_K; j++)
                        y[i].qs[j] = (int8_t) clamp_int(nearest_int(iscale * x[j]), -127, 127);
                for (int j = 0; j < QK_K / 16; j++) {
                        int s = 0;
                        for (int l = 0; l < 16; l++)
                                s += y[i].qs[16 * j + l];
                        y[i].bsums[j] = (int16_t) s;
                }
                y[i].d = 1 / iscale;
        }
}

void rbee_dequant_q4_K(const void *src, float *dst, int64_t n) {
        const block_q4_K *x = src;

        for (int64_t i = 0; i < n / QK_K; i++) {
                const float d = fp16_to_fp32(x[i].d);
                const float min = fp16_to_fp32(x[i].dmin);
                const uint8_t *q = x[i].qs;
                float *y = dst + i * QK_K;

                for (int j = 0; j < QK_K / 64; j++, q += 32, y += 64) {
                        uint8_t sc, m;

                        k4_scale_min(2 * j, x[i].scales, &sc, &m);
                        const float d1 = d * (float) sc, m1 = min * (float) m;
                        k4_scale_min(2 * j + 1, x[i].scales, &sc, &m);
                        const float d2 = d * (float) sc, m2 = min * (float) m;
                        for (int l = 0; l < 32; l++)
                                y[l] = d1 * (float) (q[l] & 0x0f) - m1;
                        for (int l = 0; l < 32; l++)
                                y[l + 32] = d2 * (float) (q[l] >> 4) - m2;
                }
        }
}

void rbee_dequant_q5_K(const void *src, float *dst, int64_t n) {
        const block_q5_K *x = src;

        for (int64_t i = 0; i < n / QK_K; i++) {
                const float d = fp16_to_fp32(x[i].d);
                const float min = fp16_to_fp32(x[i].dmin);
                const uint8_t *q = x[i].qs, *qh = x[i].qh;
                float *y = dst + i * QK_K;

                for (int j = 0; j < QK_K / 64; j++, q += 32, y += 64) {
                        uint8_t sc, m;

                        k4_scale_min(2 * j, x[i].scales, &sc, &m);
                        const float d1 = d * (float) sc, m1 = min * (float) m;
                        k4_scale_min(2 * j + 1, x[i].scales, &sc, &m);
                        const float d2 = d * (float) sc, m2 = min * (float) m;
                        for (int l = 0; l < 32; l++)
                                y[l] = d1 * (float) ((q[l] & 0x0f) | (((qh[l] >> (2 * j)) & 1) << 4)) - m1;
                        for (int l = 0; l < 32; l++)
                                y[l + 32] = d2 * (float) ((q[l] >> 4) | (((qh[l] >> (2 * j + 1)) & 1) << 4)) - m2;
                }
        }
}

void rbee_dequant_q6_K(const void *src, float *dst, int64_t n) {
        const block_q6_K *x = src;

        for (int64_t i = 0; i < n / QK_K; i++) {
                const float d = fp16_to_fp32(x[i].d);

                for (int c = 0; c < QK_K / 128; c++) {
                        const uint8_t *ql = x[i].ql + 64 * c, *qh = x[i].qh + 32 * c;
                        const int8_t *sc = x[i].scales + 8 * c;
                        float *y = dst + i * QK_K + 128 * c;

                        for (int l = 0; l < 32; l++) {
                                int g = l / 16;
                                int q0 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                                int q1 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                                int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                                int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                                /* (d * sc) * q, in that order, as llama.cpp evaluates it */
                                y[l] = d * (float) sc[g] * (float) q0;
                                y[l + 32] = d * (float) sc[g + 2] * (float) q1;
                                y[l + 64] = d * (float) sc[g + 4] * (float) q2;
                                y[l + 96] = d * (float) sc[g + 6] * (float) q3;
                        }
                }
        }
}

void rbee_dequant_q8_K(const void *src, float *dst, int64_t n) {
        const block_q8_K *x = src;

        for (int64_t i = 0; i < n / QK_K; i++)
                for (int j = 0; j < QK_K; j++)
                        dst[i * QK_K + j] = x[i].d * (float) x[i].qs[j];
}

float rbee_dot_q4_K_q8_K(int64_t n, const void *w, const void *a) {
        const block_q4_K *x = w;
        const block_q8_K *y = a;
        float sum = 0.f;

        for (int64_t i = 0; i < n / QK_K; i++) {
                uint8_t sc[8], m[8];
                int sum_q = 0, sum_m = 0;

                k4_unpack_scales(x[i].scales, sc, m);
                for (int j = 0; j < QK_K / 64; j++) {
                        const uint8_t *q = x[i].qs + 32 * j;
                        const int8_t *a8 = y[i].qs + 64 * j;
                        int s1 = 0, s2 = 0;

                        for (int l = 0; l < 32; l++) {
                                s1 += (q[l] & 0x0f) * a8[l];
                                s2 += (q[l] >> 4) * a8[l + 32];
                        }
                        sum_q += sc[2 * j] * s1 + sc[2 * j + 1] * s2;
                }
                for (int j = 0; j < QK_K / 32; j++)
                        sum_m += m[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
                sum += y[i].d * (fp16_to_fp32(x[i].d) * (float) sum_q - fp16_to_fp32(x[i].dmin) * (float) sum_m);
        }
        return sum;
}

float rbee_dot_q5_K_q8_K(int64_t n, const void *w, const void *a) {
        const block_q5_K *x = w;
        const block_q8_K *y = a;
        float sum = 0.f;

        for (int64_t i = 0; i < n / QK_K; i++) {
                uint8_t sc[8], m[8];
                int sum_q = 0, sum_m = 0;

                k4_unpack_scales(x[i].scales, sc, m);
                for (int j = 0; j < QK_K / 64; j++) {
                        const uint8_t *q = x[i].qs + 32 * j, *qh = x[i].qh;
                        const int8_t *a8 = y[i].qs + 64 * j;
                        int s1 = 0, s2 = 0;

                        for (int l = 0; l < 32; l++) {
                                s1 += ((q[l] & 0x0f) | (((qh[l] >> (2 * j)) & 1) << 4)) * a8[l];
                                s2 += ((q[l] >> 4) | (((qh[l] >> (2 * j + 1)) & 1) << 4)) * a8[l + 32];
                        }
                        sum_q += sc[2 * j] * s1 + sc[2 * j + 1] * s2;
                }
                for (int j = 0; j < QK_K / 32; j++)
                        sum_m += m[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
                sum += y[i].d * (fp16_to_fp32(x[i].d) * (float) sum_q - fp16_to_fp32(x[i].dmin) * (float) sum_m);
        }
        return sum;
}

float rbee_dot_q6_K_q8_K(int64_t n, const void *w, const void *a) {
        const block_q6_K *x = w;
        const block_q8_K *y = a;
        float sum = 0.f;

        for (int64_t i = 0; i < n / QK_K; i++) {
                int sum_q = 0, sum_off = 0;

                for (int c = 0; c < QK_K / 128; c++) {
                        const uint8_t *ql = x[i].ql + 64 * c, *qh = x[i].qh + 32 * c;
                        const int8_t *sc = x[i].scales + 8 * c;
                        const int8_t *a8 = y[i].qs + 128 * c;

                        for (int g = 0; g < 2; g++) {
                                int s0 = 0, s1 = 0, s2 = 0, s3 = 0;

                                for (int l = 16 * g; l < 16 * g + 16; l++) {
                                        s0 += ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) * a8[l];
                                        s1 += ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) * a8[l + 32];
                                        s2 += ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) * a8[l + 64];
                                        s3 += ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) * a8[l + 96];
                                }
                                sum_q += sc[g] * s0 + sc[g + 2] * s1 + sc[g + 4] * s2 + sc[g + 6] * s3;
                        }
                }
                /* The -32 offset of every value, through the activation group sums. */
                for (int j = 0; j < QK_K / 16; j++)
                        sum_off += x[i].scales[j] * y[i].bsums[j];
                sum += y[i].d * fp16_to_fp32(x[i].d) * (float) (sum_q - 32 * sum_off);
        }
        return sum;
}
