/* SPDX-License-Identifier: MIT */
/* Attention for one key/value head and the query heads that share it. At
 * long contexts this is what a generated token spends its time on besides
 * the weights: every layer reads the whole cache of its sequence, so it is
 * done in cache-friendly order (tiles of key and value rows that stay in
 * L1 while every head of the group uses them, each row loaded once for two
 * heads) with a vector exponential, never one call per element. The cache
 * may be F16, which halves what a long context reads. */

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "attention.h"
#include "macros.h"
#include "quants.h"

/* Element i of row t of a cache. */
static inline float kv_at(const void *base, bool f16, size_t ld, uint32_t t, uint32_t i) {
        return f16 ? rbee_fp16_to_fp32(((const rbee_fp16 *) base)[t * ld + i]) : ((const float *) base)[t * ld + i];
}

static void attend_c(const float *q, uint32_t n_q, uint32_t hd, const void *k, const void *v, bool f16, size_t ld,
                     uint32_t n, float scale, float *att, float *out) {
        for (uint32_t g = 0; g < n_q; g++) {
                const float *qg = q + (size_t) g * hd;
                float *a = att + (size_t) g * n, *o = out + (size_t) g * hd;
                float mx = -INFINITY, sum = 0;

                for (uint32_t t = 0; t < n; t++) {
                        float s = 0;
                        for (uint32_t i = 0; i < hd; i++)
                                s += qg[i] * kv_at(k, f16, ld, t, i);
                        a[t] = s * scale;
                        mx = a[t] > mx ? a[t] : mx;
                }
                for (uint32_t t = 0; t < n; t++) {
                        a[t] = expf(a[t] - mx);
                        sum += a[t];
                }
                float inv = 1.0f / sum;
                memset(o, 0, hd * sizeof(float));
                for (uint32_t t = 0; t < n; t++) {
                        float w = a[t] * inv;
                        for (uint32_t i = 0; i < hd; i++)
                                o[i] += w * kv_at(v, f16, ld, t, i);
                }
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <cpuid.h>

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define TARGET_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline
/* The accumulators must live in registers, which takes full unrolling. */
#if defined(__clang__)
#define UNROLL8 _Pragma("clang loop unroll(full)")
#else
#define UNROLL8 _Pragma("GCC unroll 8")
#endif

/* The eight horizontal sums of a[0..7], as one vector. */
/* The four horizontal sums of a[0..3], as one vector. */
TARGET static inline __m128 hsum4(const __m256 a[4]) {
        __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

TARGET static inline float hsum(__m256 x) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
}

TARGET static inline float hmax(__m256 x) {
        __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        s = _mm_max_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
}

/* exp(x) for x <= 0 (softmax arguments), within 2 ulp of expf: Cody-Waite
 * reduction by ln 2 and the Cephes degree-6 polynomial. Below -87.3 it
 * returns about 1e-38 instead of a subnormal, which no sum notices. */
TARGET static inline __m256 exp_neg(__m256 x) {
        x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
        __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
        r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
        __m256 y = _mm256_set1_ps(1.9875691500e-4f);
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
        y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
        __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* Rows of K and V per tile: 64 rows of a 128-wide head are 32 KiB, which
 * stays in L1 while every head of the group uses it. */
#define KV_TILE 64
/* Heads of a group done together (groups are 8 at most in the models we
 * know; larger ones are done in pieces). */
#define MAX_GROUP 16

/* Eight elements of a cache at element offset i; f16 is a constant where
 * this is inlined, so each cache type gets its own loops. */
TARGET_INLINE __m256 load8(const void *base, bool f16, size_t i) {
        if (f16)
                return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) ((const rbee_fp16 *) base + i)));
        return _mm256_loadu_ps((const float *) base + i);
}

/* Scores of nh (1 or 2) heads for keys [t0, t1): a key row is loaded once
 * for both heads, four keys at a time. A head's arithmetic does not depend
 * on nh, so a head gives the same bits alone or paired. */
TARGET_INLINE void score_tile(const int nh, const float *q, uint32_t hd, const void *k, bool f16, size_t ld,
                              uint32_t t0, uint32_t t1, float scale, float *a0, float *a1, float *mx) {
        float *a[2] = { a0, a1 };
        __m128 vmx[2] = { _mm_set1_ps(mx[0]), _mm_set1_ps(mx[nh - 1]) };
        const __m128 vscale = _mm_set1_ps(scale);
        uint32_t t = t0;

        for (; t + 4 <= t1; t += 4) {
                __m256 acc[2][4];
                UNROLL8
                for (int h = 0; h < nh; h++)
                        UNROLL8
                        for (int j = 0; j < 4; j++)
                                acc[h][j] = _mm256_setzero_ps();
                for (uint32_t i = 0; i < hd; i += 8) {
                        __m256 kv[4];
                        UNROLL8
                        for (int j = 0; j < 4; j++)
                                kv[j] = load8(k, f16, (t + j) * ld + i);
                        UNROLL8
                        for (int h = 0; h < nh; h++) {
                                __m256 qv = _mm256_loadu_ps(q + (size_t) h * hd + i);
                                UNROLL8
                                for (int j = 0; j < 4; j++)
                                        acc[h][j] = _mm256_fmadd_ps(qv, kv[j], acc[h][j]);
                        }
                }
                UNROLL8
                for (int h = 0; h < nh; h++) {
                        __m128 sc = _mm_mul_ps(hsum4(acc[h]), vscale);
                        _mm_storeu_ps(a[h] + t, sc);
                        vmx[h] = _mm_max_ps(vmx[h], sc);
                }
        }
        UNROLL8
        for (int h = 0; h < nh; h++) {
                __m128 m = vmx[h];
                m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                m = _mm_max_ss(m, _mm_movehdup_ps(m));
                mx[h] = _mm_cvtss_f32(m);
        }
        for (; t < t1; t++)
                UNROLL8
                for (int h = 0; h < nh; h++) {
                        __m256 acc = _mm256_setzero_ps();
                        for (uint32_t i = 0; i < hd; i += 8)
                                acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t) h * hd + i), load8(k, f16, t * ld + i),
                                                      acc);
                        a[h][t] = hsum(acc) * scale;
                        mx[h] = a[h][t] > mx[h] ? a[h][t] : mx[h];
                }
}

/* out[h] += sum over t in [t0, t1) of a[h][t] v[t] for nh (1 or 2) heads:
 * a value row is loaded once for both, 32 floats of each head's output are
 * held in registers at a time. */
TARGET_INLINE void value_tile(const int nh, const float *a0, const float *a1, const void *v, bool f16, size_t ld,
                              uint32_t hd, uint32_t t0, uint32_t t1, float *o0, float *o1) {
        const float *a[2] = { a0, a1 };
        float *o[2] = { o0, o1 };
        uint32_t c0 = 0;

        for (; c0 + 32 <= hd; c0 += 32) {
                __m256 acc[2][4];
                UNROLL8
                for (int h = 0; h < nh; h++)
                        UNROLL8
                        for (int i = 0; i < 4; i++)
                                acc[h][i] = _mm256_loadu_ps(o[h] + c0 + 8 * i);
                for (uint32_t t = t0; t < t1; t++) {
                        __m256 vv[4];
                        UNROLL8
                        for (int i = 0; i < 4; i++)
                                vv[i] = load8(v, f16, t * ld + c0 + 8 * i);
                        UNROLL8
                        for (int h = 0; h < nh; h++) {
                                __m256 w = _mm256_broadcast_ss(a[h] + t);
                                UNROLL8
                                for (int i = 0; i < 4; i++)
                                        acc[h][i] = _mm256_fmadd_ps(w, vv[i], acc[h][i]);
                        }
                }
                UNROLL8
                for (int h = 0; h < nh; h++)
                        UNROLL8
                        for (int i = 0; i < 4; i++)
                                _mm256_storeu_ps(o[h] + c0 + 8 * i, acc[h][i]);
        }
        for (; c0 < hd; c0 += 8)
                UNROLL8
                for (int h = 0; h < nh; h++) {
                        __m256 acc = _mm256_loadu_ps(o[h] + c0);
                        for (uint32_t t = t0; t < t1; t++)
                                acc = _mm256_fmadd_ps(_mm256_broadcast_ss(a[h] + t), load8(v, f16, t * ld + c0), acc);
                        _mm256_storeu_ps(o[h] + c0, acc);
                }
}

/* hd is a multiple of 8; n_q <= MAX_GROUP. */
TARGET_INLINE void attend_avx2_group(const float *q, uint32_t n_q, uint32_t hd, const void *k, const void *v,
                                     bool f16, size_t ld, uint32_t n, float scale, float *att, float *out) {
        float mxs[MAX_GROUP];

        for (uint32_t g = 0; g < n_q; g++)
                mxs[g] = -INFINITY;
        /* Scores, a tile of keys at a time for every head, so that the
         * tile stays in L1 while the group uses it. */
        for (uint32_t t0 = 0; t0 < n; t0 += KV_TILE) {
                uint32_t t1 = MIN(n, t0 + KV_TILE);
                uint32_t g = 0;
                for (; g + 2 <= n_q; g += 2)
                        score_tile(2, q + (size_t) g * hd, hd, k, f16, ld, t0, t1, scale, att + (size_t) g * n,
                                   att + (size_t) (g + 1) * n, mxs + g);
                if (g < n_q)
                        score_tile(1, q + (size_t) g * hd, hd, k, f16, ld, t0, t1, scale, att + (size_t) g * n, NULL,
                                   mxs + g);
        }

        for (uint32_t g = 0; g < n_q; g++) {
                float *a = att + (size_t) g * n;
                const float mx = mxs[g];
                uint32_t t;

                /* Softmax, normalised here so the value pass only multiplies. */
                __m256 vsum = _mm256_setzero_ps(), m = _mm256_set1_ps(mx);
                float sum = 0;
                for (t = 0; t + 8 <= n; t += 8) {
                        __m256 e = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(a + t), m));
                        _mm256_storeu_ps(a + t, e);
                        vsum = _mm256_add_ps(vsum, e);
                }
                for (; t < n; t++) {
                        a[t] = expf(a[t] - mx);
                        sum += a[t];
                }
                sum += hsum(vsum);
                __m256 inv = _mm256_set1_ps(1.0f / sum);
                for (t = 0; t + 8 <= n; t += 8)
                        _mm256_storeu_ps(a + t, _mm256_mul_ps(_mm256_loadu_ps(a + t), inv));
                for (; t < n; t++)
                        a[t] *= 1.0f / sum;
        }

        /* Weighted values, likewise a tile of rows at a time. */
        memset(out, 0, (size_t) n_q * hd * sizeof(float));
        for (uint32_t t0 = 0; t0 < n; t0 += KV_TILE) {
                uint32_t t1 = MIN(n, t0 + KV_TILE);
                uint32_t g = 0;
                for (; g + 2 <= n_q; g += 2)
                        value_tile(2, att + (size_t) g * n, att + (size_t) (g + 1) * n, v, f16, ld, hd, t0, t1,
                                   out + (size_t) g * hd, out + (size_t) (g + 1) * hd);
                if (g < n_q)
                        value_tile(1, att + (size_t) g * n, NULL, v, f16, ld, hd, t0, t1, out + (size_t) g * hd, NULL);
        }
}

TARGET static void attend_avx2_f32(const float *q, uint32_t n_q, uint32_t hd, const void *k, const void *v,
                                   size_t ld, uint32_t n, float scale, float *att, float *out) {
        attend_avx2_group(q, n_q, hd, k, v, false, ld, n, scale, att, out);
}

TARGET static void attend_avx2_f16(const float *q, uint32_t n_q, uint32_t hd, const void *k, const void *v,
                                   size_t ld, uint32_t n, float scale, float *att, float *out) {
        attend_avx2_group(q, n_q, hd, k, v, true, ld, n, scale, att, out);
}

static void attend_avx2(const float *q, uint32_t n_q, uint32_t hd, const void *k, const void *v, bool f16,
                        size_t ld, uint32_t n, float scale, float *att, float *out) {
        for (uint32_t g = 0; g < n_q; g += MAX_GROUP) {
                uint32_t m = MIN(n_q - g, (uint32_t) MAX_GROUP);
                (f16 ? attend_avx2_f16 : attend_avx2_f32)(q + (size_t) g * hd, m, hd, k, v, ld, n, scale,
                                                          att + (size_t) g * n, out + (size_t) g * hd);
        }
}

static bool have_avx2;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

static void detect(void) {
        unsigned a, b, c, d;

        __builtin_cpu_init();
        /* F16C is CPUID.1:ECX bit 29 (not every compiler's cpu_supports knows it). */
        have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

void rbee_attend_ref(const float *q, uint32_t n_q, uint32_t hd, const void *k, const void *v, bool f16, size_t ld,
                     uint32_t n, float scale, float *att, float *out) {
        attend_c(q, n_q, hd, k, v, f16, ld, n, scale, att, out);
}

void rbee_attend(const float *q, uint32_t n_q, uint32_t hd, const void *k, const void *v, bool f16, size_t ld,
                 uint32_t n, float scale, float *att, float *out) {
#if defined(__x86_64__) && defined(__GNUC__)
        pthread_once(&detect_once, detect);
        if (have_avx2 && hd % 8 == 0) {
                attend_avx2(q, n_q, hd, k, v, f16, ld, n, scale, att, out);
                return;
        }
#endif
        attend_c(q, n_q, hd, k, v, f16, ld, n, scale, att, out);
}
