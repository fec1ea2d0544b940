/* SPDX-License-Identifier: MIT */
/* AVX512-VNNI tile kernels for prompt processing: four weight rows times
 * four activation rows per call, so that each unpacked weight block and
 * each loaded activation block serves four dot products, and vpdpbusd does
 * in one instruction what vpmaddubsw + vpmaddwd + vpaddd do in three.
 *
 * Exactness: the AVX2 single-row kernels (quants-avx2.c) reduce each pair of
 * 32-element blocks to 8 int32 lanes, lane j holding the sum of 8
 * consecutive products (vphaddd of two 4-product sums), then convert, scale
 * and accumulate those lanes in floats. Here both operands are first
 * shuffled (vshufps) so that two vpdpbusd produce exactly those 8 integer
 * sums; integer arithmetic is exact, so the floats that follow, computed in
 * the same order, are bit-identical to vec_dot's.
 *
 * vpdpbusd multiplies unsigned by signed bytes. Q4_0 codes are unsigned
 * (0..15, the -8 offset is taken out through 8 * sum(a), once per
 * activation block for all four rows). Q8_0 weights are signed, so the
 * activations are made unsigned (a + 128, a bit flip) and 128 * sum(w) is
 * taken out once per weight block for all four activations (this is exact
 * even for a -128 activation, where the AVX2 kernel is not; quants.h rules
 * such activations out). The 256-bit EVEX forms give 32 vector registers,
 * which the 16 accumulators need. */

#include "quants-impl.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)

#include <immintrin.h>

#define TARGET_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))
/* As RBEE_PF_DIST in quants-avx2.c: far enough ahead for the next rows. */
#define PF_DIST 4096

#define VNNI_TARGET TARGET_VNNI
#include "quants-vnni-inl.h"

/* Four weight rows (each reading ahead into the next group of four, the
 * rows a matrix product takes next) against four activation rows;
 * out[k * 4 + r]. The loops are unrolled so that the 16 accumulators live
 * in registers. */
static TARGET_VNNI void dot4x4_q4_0_q8_0(int64_t n, const void *w, size_t w_stride, const void *a, size_t a_stride,
                                         float out[16]) {
        const int64_t nb = n / QK4_0;
        const __m256i eight = _mm256_set1_epi8(8);
        const block_q4_0 *x[4];
        const block_q8_0 *y[4];
        __m256 acc[4][4];

#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
                x[k] = (const block_q4_0 *) ((const uint8_t *) w + k * w_stride);
                y[k] = (const block_q8_0 *) ((const uint8_t *) a + k * a_stride);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++)
                        acc[k][r] = _mm256_setzero_ps();
        }

        int64_t i = 0;
        for (; i + 1 < nb; i += 2) {
                __m256i wl[4], wh[4];
                __m256 xs[4];
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                        prefetch_at(&x[r][i], 4 * w_stride);
                        __m256i u0 = nibbles_32(x[r][i].qs), u1 = nibbles_32(x[r][i + 1].qs);
                        wl[r] = pick_lo(u0, u1);
                        wh[r] = pick_hi(u0, u1);
                        xs[r] = two_scales(x[r][i].d, x[r][i + 1].d);
                }
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                        __m256i a0 = _mm256_loadu_si256((const __m256i *) y[k][i].qs);
                        __m256i a1 = _mm256_loadu_si256((const __m256i *) y[k][i + 1].qs);
                        __m256i al = pick_lo(a0, a1), ah = pick_hi(a0, a1);
                        /* -8 * (sum of each lane's 8 activations), the start of every row's sum. */
                        __m256i off = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), eight, al), eight, ah);
                        off = _mm256_sub_epi32(_mm256_setzero_si256(), off);
                        __m256 ys = two_scales(y[k][i].d, y[k][i + 1].d);
#pragma GCC unroll 4
                        for (int r = 0; r < 4; r++) {
                                __m256i p = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(off, wl[r], al), wh[r], ah);
                                acc[k][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(xs[r], ys), acc[k][r]);
                        }
                }
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                        float sum = hsum_ps(acc[k][r]);
                        if (i < nb)
                                sum += tail_q4_0(&x[r][i], &y[k][i]);
                        out[k * 4 + r] = sum;
                }
}

static TARGET_VNNI void dot4x4_q8_0_q8_0(int64_t n, const void *w, size_t w_stride, const void *a, size_t a_stride,
                                         float out[16]) {
        const int64_t nb = n / QK8_0;
        const __m256i flip = _mm256_set1_epi8((char) 0x80);
        const block_q8_0 *x[4];
        const block_q8_0 *y[4];
        __m256 acc[4][4];

#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
                x[k] = (const block_q8_0 *) ((const uint8_t *) w + k * w_stride);
                y[k] = (const block_q8_0 *) ((const uint8_t *) a + k * a_stride);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++)
                        acc[k][r] = _mm256_setzero_ps();
        }

        int64_t i = 0;
        for (; i + 1 < nb; i += 2) {
                __m256i wl[4], wh[4], off[4];
                __m256 xs[4];
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                        prefetch_at(&x[r][i], 4 * w_stride);
                        prefetch_at(&x[r][i], 4 * w_stride + 64);
                        __m256i w0 = _mm256_loadu_si256((const __m256i *) x[r][i].qs);
                        __m256i w1 = _mm256_loadu_si256((const __m256i *) x[r][i + 1].qs);
                        wl[r] = pick_lo(w0, w1);
                        wh[r] = pick_hi(w0, w1);
                        /* -128 * (sum of each lane's 8 weights): what the +128 on the activations adds. */
                        off[r] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), flip, wl[r]), flip, wh[r]);
                        off[r] = _mm256_sub_epi32(_mm256_setzero_si256(), off[r]);
                        xs[r] = two_scales(x[r][i].d, x[r][i + 1].d);
                }
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                        __m256i a0 = _mm256_loadu_si256((const __m256i *) y[k][i].qs);
                        __m256i a1 = _mm256_loadu_si256((const __m256i *) y[k][i + 1].qs);
                        __m256i al = _mm256_xor_si256(pick_lo(a0, a1), flip);
                        __m256i ah = _mm256_xor_si256(pick_hi(a0, a1), flip);
                        __m256 ys = two_scales(y[k][i].d, y[k][i + 1].d);
#pragma GCC unroll 4
                        for (int r = 0; r < 4; r++) {
                                __m256i p = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(off[r], al, wl[r]), ah, wh[r]);
                                acc[k][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(xs[r], ys), acc[k][r]);
                        }
                }
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                        float sum = hsum_ps(acc[k][r]);
                        if (i < nb)
                                sum += tail_q8_0(&x[r][i], &y[k][i]);
                        out[k * 4 + r] = sum;
                }
}

/* Q4_K against four activation rows: the AVX2 kernel's integer sums with
 * vpdpwssd fusing each vpmaddwd and its vpaddd (integer, so the same
 * values), then the same float steps in the same order. */
static inline TARGET_VNNI __m256i bcast16(__m256i v, int k) {
        return _mm256_shuffle_epi8(v, _mm256_set1_epi16((short) ((2 * k + 1) << 8 | 2 * k)));
}

/* As k4_scales() in quants-avx2.c: the 8 scales as 16-bit lanes in both
 * halves, and the 8 mins as 16-bit lanes for the min term. */
static inline TARGET_VNNI __m256i k4_scales_mins(const uint8_t packed[K_SCALE_SIZE], __m128i *ret_mins) {
        __m128i v = _mm_loadu_si128((const __m128i *) packed);
        __m128i lo = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));
        __m128i hi = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));
        lo = _mm_and_si128(_mm_srlv_epi32(lo, _mm_setr_epi32(0, 0, 0, 4)),
                           _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
        hi = _mm_and_si128(_mm_srli_epi32(hi, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
        __m256i sm = _mm256_cvtepu8_epi16(_mm_or_si128(lo, hi)); /* scales 0-7, mins 0-7 */
        *ret_mins = _mm256_extracti128_si256(sm, 1);
        return _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
}

static TARGET_VNNI void dot4_q4_K_q8_K(int64_t n, const void *w, const void *a, size_t stride, float out[4]) {
        const block_q4_K *x = w;
        const block_q8_K *y[4];
        const int64_t nb = n / QK_K;
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        __m256 acc[4];
        __m128 acc_m[4];

#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
                y[c] = (const block_q8_K *) ((const uint8_t *) a + c * stride);
                acc[c] = _mm256_setzero_ps();
                acc_m[c] = _mm_setzero_ps();
        }
        for (int64_t i = 0; i < nb; i++) {
                for (size_t o = 0; o < sizeof(x[i]); o += 64)
                        prefetch_at(&x[i], PF_DIST + o);
                __m128i mins;
                __m256i scales = k4_scales_mins(x[i].scales, &mins);
                __m256i sumi[4];
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++)
                        sumi[c] = _mm256_setzero_si256();
#pragma GCC unroll 4
                for (int j = 0; j < QK_K / 64; j++) {
                        __m256i q = _mm256_loadu_si256((const __m256i *) (x[i].qs + 32 * j));
                        __m256i lo = _mm256_and_si256(q, m4);
                        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                        __m256i s0 = bcast16(scales, 2 * j), s1 = bcast16(scales, 2 * j + 1);
#pragma GCC unroll 4
                        for (int c = 0; c < 4; c++) {
                                __m256i a0 = _mm256_loadu_si256((const __m256i *) (y[c][i].qs + 64 * j));
                                __m256i a1 = _mm256_loadu_si256((const __m256i *) (y[c][i].qs + 64 * j + 32));
                                sumi[c] = _mm256_dpwssd_epi32(sumi[c], _mm256_maddubs_epi16(lo, a0), s0);
                                sumi[c] = _mm256_dpwssd_epi32(sumi[c], _mm256_maddubs_epi16(hi, a1), s1);
                        }
                }
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) {
                        const float d = y[c][i].d * h2f(x[i].d);
                        const float dmin = y[c][i].d * h2f(x[i].dmin);
                        __m256i bs = _mm256_loadu_si256((const __m256i *) y[c][i].bsums);
                        __m128i pair = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
                        __m128i min_prod = _mm_madd_epi16(mins, pair);
                        acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
                        acc_m[c] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_m[c]);
                }
        }
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
                out[c] = hsum_ps(acc[c]) - hsum_ps128(acc_m[c]);
}

bool rbee_quant_install_vnni(struct rbee_quant_ops *ops, size_t n_ops) {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512vl") ||
            !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vnni"))
                return false;
        if (n_ops <= RBEE_TYPE_Q8_0 || n_ops <= RBEE_TYPE_Q4_0 || n_ops <= RBEE_TYPE_Q4_K)
                return false;
        ops[RBEE_TYPE_Q4_0].vec_dot4x4 = dot4x4_q4_0_q8_0;
        ops[RBEE_TYPE_Q8_0].vec_dot4x4 = dot4x4_q8_0_q8_0;
        ops[RBEE_TYPE_Q4_K].vec_dot4 = dot4_q4_K_q8_K;
        return true;
}

#else

bool rbee_quant_install_vnni(struct rbee_quant_ops *ops, size_t n_ops) {
        return false;
}

#endif
