/* SPDX-License-Identifier: MIT */
/* AVX-512 (VNNI, VBMI) kernels, two weight rows per 512-bit register:
 * four weight rows against one activation row for generation (vec_dot4r),
 * and four weight rows against four activation rows for prompts
 * (vec_dot4x4), for Q4_0, Q5_0, Q8_0, Q4_K and Q6_K. Generation reads
 * every weight once per token, so what matters is how few instructions
 * each weight byte costs (the AVX2 single-row kernels top out below the
 * memory bandwidth of one core) and how many independent streams are in
 * flight; prompts reuse each unpacked weight for four tokens.
 *
 * Exactness: every result is bit-identical to the AVX2 vec_dot's on that
 * row (quants-avx2.c). Those reduce each pair of 32-element blocks (or each
 * super-block) to 8 int32 lanes with a fixed grouping of products, then
 * convert, scale and accumulate in floats. Here the same integer lanes come
 * out of vpdpbusd/vpdpwssd on rearranged bytes (integer sums are exact in
 * any order), and the float steps are the same operations lane by lane: the
 * upper 256 bits of each register simply carry a second row. */

#include "quants-impl.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)

#include <immintrin.h>

#define TARGET_512 \
        __attribute__((target("avx2,fma,f16c,bmi2,avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi")))
/* Read ahead of the weights by this many rows (the groups of four that
 * follow). Weights are mmapped file pages, where the hardware prefetchers
 * stop at every 4 KB page: without this a row sweep runs at a third of the
 * bandwidth; measured on Zen 5 with 1-3 KB rows, 16 is past the knee. */
#define PF_ROWS 16

#define VNNI_TARGET TARGET_512
#include "quants-vnni-inl.h"

static inline TARGET_512 __m256 half_ps(__m512 v, int h) {
        return h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)) : _mm512_castps512_ps256(v);
}

static inline TARGET_512 __m512i dup_256(__m256i v) {
        return _mm512_broadcast_i64x4(v);
}

static inline TARGET_512 __m512 dup_ps(__m256 v) {
        return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(v)));
}

static inline TARGET_512 __m512i join_256(__m256i lo, __m256i hi) {
        return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

static inline TARGET_512 __m512 join_ps(__m256 lo, __m256 hi) {
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi), 1));
}

/* Byte and word positions inside a 36-byte pair of Q4_0 blocks (d at 0,
 * codes at 2..17, then d at 18, codes at 20..35), for vpermt2b/vpermt2w
 * over two rows' pairs (indices of the second row have 64 or 32 added).
 * Codes: lane j of the AVX2 kernels' sums covers elements 8j'..8j'+7 of
 * one block, that is code bytes 0-3 and 4-7 (low nibbles), 8-11 and
 * 12-15, and the same bytes' high nibbles in the upper 128 bits; "lo"
 * gathers the first four bytes of each group, "hi" the second four. */
#define Q4P_LO(o) (o) + 2, (o) + 3, (o) + 4, (o) + 5, (o) + 10, (o) + 11, (o) + 12, (o) + 13, \
                  (o) + 20, (o) + 21, (o) + 22, (o) + 23, (o) + 28, (o) + 29, (o) + 30, (o) + 31
#define Q4P_HI(o) (o) + 6, (o) + 7, (o) + 8, (o) + 9, (o) + 14, (o) + 15, (o) + 16, (o) + 17, \
                  (o) + 24, (o) + 25, (o) + 26, (o) + 27, (o) + 32, (o) + 33, (o) + 34, (o) + 35
static const uint8_t q4p_lo[64] = { Q4P_LO(0), Q4P_LO(0), Q4P_LO(64), Q4P_LO(64) };
static const uint8_t q4p_hi[64] = { Q4P_HI(0), Q4P_HI(0), Q4P_HI(64), Q4P_HI(64) };
/* The scales [d0 d0 d1 d1 d0 d0 d1 d1] of each row (words 0 and 9). */
static const uint16_t q4p_d[32] = { 0, 0, 9, 9, 0, 0, 9, 9, 32, 32, 41, 41, 32, 32, 41, 41 };

static TARGET_512 void dot4r_q4_0_q8_0(int64_t n, const void *w, size_t w_stride, const void *a, float out[4]) {
        const int64_t nb = n / QK4_0;
        const block_q8_0 *y = a;
        const __m512i idx_lo = _mm512_loadu_si512(q4p_lo), idx_hi = _mm512_loadu_si512(q4p_hi);
        const __m512i idx_d = _mm512_loadu_si512(q4p_d);
        const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4), m4 = _mm512_set1_epi8(0x0f);
        const __m256i eight = _mm256_set1_epi8(8);
        const __mmask64 pair = (1ULL << 36) - 1;
        const size_t pf = PF_ROWS * w_stride;
        const uint8_t *x[4];
        __m512 acc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };

        for (int r = 0; r < 4; r++)
                x[r] = (const uint8_t *) w + r * w_stride;
        int64_t i = 0;
        for (; i + 1 < nb; i += 2) {
                __m256i a0 = _mm256_loadu_si256((const __m256i *) y[i].qs);
                __m256i a1 = _mm256_loadu_si256((const __m256i *) y[i + 1].qs);
                __m256i al = pick_lo(a0, a1), ah = pick_hi(a0, a1);
                /* -8 * (sum of each lane's 8 activations): Q4_0's offset, for every row. */
                __m256i off = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), eight, al), eight, ah);
                const __m512i off2 = dup_256(_mm256_sub_epi32(_mm256_setzero_si256(), off));
                const __m512i al2 = dup_256(al), ah2 = dup_256(ah);
                const __m512 ys = dup_ps(two_scales(y[i].d, y[i + 1].d));
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const uint8_t *p0 = x[2 * g] + i * sizeof(block_q4_0), *p1 = x[2 * g + 1] + i * sizeof(block_q4_0);
                        prefetch_at(p0, pf);
                        prefetch_at(p1, pf);
                        __m512i b0 = _mm512_maskz_loadu_epi8(pair, p0), b1 = _mm512_maskz_loadu_epi8(pair, p1);
                        __m512i wl = _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutex2var_epi8(b0, idx_lo, b1), shift), m4);
                        __m512i wh = _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutex2var_epi8(b0, idx_hi, b1), shift), m4);
                        __m512 xs = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(b0, idx_d, b1)));
                        __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(off2, wl, al2), wh, ah2);
                        acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(xs, ys), acc[g]);
                }
        }
        for (int r = 0; r < 4; r++) {
                float sum = hsum_ps(half_ps(acc[r / 2], r % 2));
                if (i < nb)
                        sum += tail_q4_0((const block_q4_0 *) x[r] + i, &y[i]);
                out[r] = sum;
        }
}

/* Q8_0 weights are signed; flipping their top bit makes them w + 128 for
 * vpdpbusd's unsigned side, and 128 * (sum of each lane's activations),
 * taken out once for all rows, undoes it. */
static TARGET_512 void dot4r_q8_0_q8_0(int64_t n, const void *w, size_t w_stride, const void *a, float out[4]) {
        const int64_t nb = n / QK8_0;
        const block_q8_0 *y = a;
        const __m256i flip = _mm256_set1_epi8((char) 0x80);
        const __m512i flip2 = _mm512_set1_epi8((char) 0x80);
        const size_t pf = PF_ROWS * w_stride;
        const block_q8_0 *x[4];
        __m512 acc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };

        for (int r = 0; r < 4; r++)
                x[r] = (const block_q8_0 *) ((const uint8_t *) w + r * w_stride);
        int64_t i = 0;
        for (; i + 1 < nb; i += 2) {
                __m256i a0 = _mm256_loadu_si256((const __m256i *) y[i].qs);
                __m256i a1 = _mm256_loadu_si256((const __m256i *) y[i + 1].qs);
                __m256i al = pick_lo(a0, a1), ah = pick_hi(a0, a1);
                __m256i off = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), flip, al), flip, ah);
                const __m512i off2 = dup_256(_mm256_sub_epi32(_mm256_setzero_si256(), off));
                const __m512i al2 = dup_256(al), ah2 = dup_256(ah);
                const __m512 ys = dup_ps(two_scales(y[i].d, y[i + 1].d));
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const block_q8_0 *u = x[2 * g] + i, *v = x[2 * g + 1] + i;
                        prefetch_at(u, pf);
                        prefetch_at(u, pf + 64);
                        prefetch_at(v, pf);
                        prefetch_at(v, pf + 64);
                        __m256i u0 = _mm256_loadu_si256((const __m256i *) u[0].qs);
                        __m256i u1 = _mm256_loadu_si256((const __m256i *) u[1].qs);
                        __m256i v0 = _mm256_loadu_si256((const __m256i *) v[0].qs);
                        __m256i v1 = _mm256_loadu_si256((const __m256i *) v[1].qs);
                        __m512i wl = _mm512_xor_si512(join_256(pick_lo(u0, u1), pick_lo(v0, v1)), flip2);
                        __m512i wh = _mm512_xor_si512(join_256(pick_hi(u0, u1), pick_hi(v0, v1)), flip2);
                        __m512 xs = join_ps(two_scales(u[0].d, u[1].d), two_scales(v[0].d, v[1].d));
                        __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(off2, wl, al2), wh, ah2);
                        acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(xs, ys), acc[g]);
                }
        }
        for (int r = 0; r < 4; r++) {
                float sum = hsum_ps(half_ps(acc[r / 2], r % 2));
                if (i < nb)
                        sum += tail_q8_0(&x[r][i], &y[i]);
                out[r] = sum;
        }
}

/* The activation side of a pair of Q8_0 blocks, as the AVX2 kernels'
 * lanes want it, in both halves: the two picks and the scales. */
struct act_pair {
        __m512i lo, hi;
        __m512 d;
};

static inline TARGET_512 struct act_pair act_pair_load(const block_q8_0 *y, __m256i *ret_lo, __m256i *ret_hi) {
        __m256i a0 = _mm256_loadu_si256((const __m256i *) y[0].qs);
        __m256i a1 = _mm256_loadu_si256((const __m256i *) y[1].qs);
        *ret_lo = pick_lo(a0, a1);
        *ret_hi = pick_hi(a0, a1);
        return (struct act_pair) { dup_256(*ret_lo), dup_256(*ret_hi), dup_ps(two_scales(y[0].d, y[1].d)) };
}

/* Q5_0: a 44-byte pair of blocks is d (0), qh (2), codes (6..21), then
 * d (22), qh (24), codes (28..43). The low four bits come as Q4_0's; the
 * fifth (bit e of qh for element e) goes to the same byte positions by
 * pext: the 8 bits of "lo" per block and 128-bit half are qh bits 0-3 and
 * 8-11 (low half) or 16-19 and 24-27 (high half); "hi" takes the others. */
#define Q5P_LO(o) (o) + 6, (o) + 7, (o) + 8, (o) + 9, (o) + 14, (o) + 15, (o) + 16, (o) + 17, \
                  (o) + 28, (o) + 29, (o) + 30, (o) + 31, (o) + 36, (o) + 37, (o) + 38, (o) + 39
#define Q5P_HI(o) (o) + 10, (o) + 11, (o) + 12, (o) + 13, (o) + 18, (o) + 19, (o) + 20, (o) + 21, \
                  (o) + 32, (o) + 33, (o) + 34, (o) + 35, (o) + 40, (o) + 41, (o) + 42, (o) + 43
static const uint8_t q5p_lo[64] = { Q5P_LO(0), Q5P_LO(0), Q5P_LO(64), Q5P_LO(64) };
static const uint8_t q5p_hi[64] = { Q5P_HI(0), Q5P_HI(0), Q5P_HI(64), Q5P_HI(64) };
static const uint16_t q5p_d[32] = { 0, 0, 11, 11, 0, 0, 11, 11, 32, 32, 43, 43, 32, 32, 43, 43 };

/* The fifth bits of one row's pair, in the byte order of lo (sel
 * 0x0f0f0f0f) or hi (0xf0f0f0f0): block 0's low half, block 1's low half,
 * block 0's high half, block 1's high half. */
static inline TARGET_512 uint32_t q5_bits(const uint8_t *pair, uint32_t sel) {
        uint32_t h0, h1;
        memcpy(&h0, pair + 2, 4);
        memcpy(&h1, pair + 24, 4);
        uint32_t p0 = _pext_u32(h0, sel), p1 = _pext_u32(h1, sel);
        return (p0 & 0xff) | (p1 & 0xff) << 8 | (p0 >> 8) << 16 | (p1 >> 8) << 24;
}

struct q5_pair {
        __m512i lo, hi;
        __m512 d;
};

/* Two rows' pairs of Q5_0 blocks at p0 and p1, unpacked for vpdpbusd. */
static inline TARGET_512 struct q5_pair q5_unpack(const uint8_t *p0, const uint8_t *p1, __m512i idx_lo, __m512i idx_hi,
                                                  __m512i idx_d) {
        const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4), m4 = _mm512_set1_epi8(0x0f);
        const __m512i sixteen = _mm512_set1_epi8(16);
        const __mmask64 pair = (1ULL << 44) - 1;
        __m512i b0 = _mm512_maskz_loadu_epi8(pair, p0), b1 = _mm512_maskz_loadu_epi8(pair, p1);
        __m512i lo = _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutex2var_epi8(b0, idx_lo, b1), shift), m4);
        __m512i hi = _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutex2var_epi8(b0, idx_hi, b1), shift), m4);
        __mmask64 klo = (uint64_t) q5_bits(p0, 0x0f0f0f0f) | (uint64_t) q5_bits(p1, 0x0f0f0f0f) << 32;
        __mmask64 khi = (uint64_t) q5_bits(p0, 0xf0f0f0f0) | (uint64_t) q5_bits(p1, 0xf0f0f0f0) << 32;
        return (struct q5_pair) {
                _mm512_or_si512(lo, _mm512_maskz_mov_epi8(klo, sixteen)),
                _mm512_or_si512(hi, _mm512_maskz_mov_epi8(khi, sixteen)),
                _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(b0, idx_d, b1))),
        };
}

/* A lone last Q5_0 block, as the AVX2 tail: 8 lanes of 4 products of the
 * five-bit codes, minus 16 times the activations. */
static inline TARGET_512 float tail_q5_0(const block_q5_0 *x, const block_q8_0 *y) {
        uint32_t qh;
        memcpy(&qh, x->qh, 4);
        __m256i u = _mm256_or_si256(nibbles_32(x->qs), _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(16)));
        __m256i a = _mm256_loadu_si256((const __m256i *) y->qs);
        __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a);
        p = _mm256_sub_epi32(p, _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(16), a));
        return hsum_ps(_mm256_cvtepi32_ps(p)) * (h2f(x->d) * h2f(y->d));
}

static TARGET_512 void dot4r_q5_0_q8_0(int64_t n, const void *w, size_t w_stride, const void *a, float out[4]) {
        const int64_t nb = n / QK5_0;
        const block_q8_0 *y = a;
        const __m512i idx_lo = _mm512_loadu_si512(q5p_lo), idx_hi = _mm512_loadu_si512(q5p_hi);
        const __m512i idx_d = _mm512_loadu_si512(q5p_d);
        const __m256i sixteen = _mm256_set1_epi8(16);
        const size_t pf = PF_ROWS * w_stride;
        const uint8_t *x[4];
        __m512 acc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };

        for (int r = 0; r < 4; r++)
                x[r] = (const uint8_t *) w + r * w_stride;
        int64_t i = 0;
        for (; i + 1 < nb; i += 2) {
                __m256i a0 = _mm256_loadu_si256((const __m256i *) y[i].qs);
                __m256i a1 = _mm256_loadu_si256((const __m256i *) y[i + 1].qs);
                __m256i al = pick_lo(a0, a1), ah = pick_hi(a0, a1);
                __m256i off = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), sixteen, al), sixteen, ah);
                const __m512i off2 = dup_256(_mm256_sub_epi32(_mm256_setzero_si256(), off));
                const __m512i al2 = dup_256(al), ah2 = dup_256(ah);
                const __m512 ys = dup_ps(two_scales(y[i].d, y[i + 1].d));
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const uint8_t *p0 = x[2 * g] + i * sizeof(block_q5_0), *p1 = x[2 * g + 1] + i * sizeof(block_q5_0);
                        prefetch_at(p0, pf);
                        prefetch_at(p1, pf);
                        struct q5_pair q = q5_unpack(p0, p1, idx_lo, idx_hi, idx_d);
                        __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(off2, q.lo, al2), q.hi, ah2);
                        acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(q.d, ys), acc[g]);
                }
        }
        for (int r = 0; r < 4; r++) {
                float sum = hsum_ps(half_ps(acc[r / 2], r % 2));
                if (i < nb)
                        sum += tail_q5_0((const block_q5_0 *) x[r] + i, &y[i]);
                out[r] = sum;
        }
}

static TARGET_512 void dot4x4_q5_0_q8_0(int64_t n, const void *w, size_t w_stride, const void *a, size_t a_stride,
                                        float out[16]) {
        const int64_t nb = n / QK5_0;
        const __m512i idx_lo = _mm512_loadu_si512(q5p_lo), idx_hi = _mm512_loadu_si512(q5p_hi);
        const __m512i idx_d = _mm512_loadu_si512(q5p_d);
        const __m256i sixteen = _mm256_set1_epi8(16);
        const uint8_t *x[4];
        const block_q8_0 *y[4];
        __m512 acc[2][4];

        for (int r = 0; r < 4; r++) {
                x[r] = (const uint8_t *) w + r * w_stride;
                y[r] = (const block_q8_0 *) ((const uint8_t *) a + r * a_stride);
                acc[r / 2][r % 2] = acc[r / 2][r % 2 + 2] = _mm512_setzero_ps();
        }
        int64_t i = 0;
        for (; i + 1 < nb; i += 2) {
                struct q5_pair q[2];
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const uint8_t *p0 = x[2 * g] + i * sizeof(block_q5_0), *p1 = x[2 * g + 1] + i * sizeof(block_q5_0);
                        prefetch_at(p0, 4 * w_stride);
                        prefetch_at(p1, 4 * w_stride);
                        q[g] = q5_unpack(p0, p1, idx_lo, idx_hi, idx_d);
                }
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                        __m256i al, ah;
                        struct act_pair ap = act_pair_load(&y[k][i], &al, &ah);
                        __m256i off = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), sixteen, al), sixteen, ah);
                        const __m512i off2 = dup_256(_mm256_sub_epi32(_mm256_setzero_si256(), off));
#pragma GCC unroll 2
                        for (int g = 0; g < 2; g++) {
                                __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(off2, q[g].lo, ap.lo), q[g].hi, ap.hi);
                                acc[g][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(q[g].d, ap.d), acc[g][k]);
                        }
                }
        }
        for (int k = 0; k < 4; k++)
                for (int r = 0; r < 4; r++) {
                        float sum = hsum_ps(half_ps(acc[r / 2][k], r % 2));
                        if (i < nb)
                                sum += tail_q5_0((const block_q5_0 *) x[r] + i, &y[k][i]);
                        out[k * 4 + r] = sum;
                }
}

/* Broadcast 16-bit lane k of each 128-bit lane. */
static inline TARGET_512 __m512i bcast16(__m512i v, int k) {
        return _mm512_shuffle_epi8(v, _mm512_set1_epi16((short) ((2 * k + 1) << 8 | 2 * k)));
}

/* Lane 2k of each 128-bit lane in the even lanes, 2k+1 in the odd ones. */
static inline TARGET_512 __m512i bcast16_pair(__m512i v, int k) {
        const short lo = (short) ((4 * k + 1) << 8 | 4 * k), hi = (short) ((4 * k + 3) << 8 | (4 * k + 2));
        const __m256i pat = _mm256_setr_epi16(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi);
        return _mm512_shuffle_epi8(v, dup_256(pat));
}

static inline TARGET_512 __m512i load_2x256(const void *p0, const void *p1) {
        return join_256(_mm256_loadu_si256((const __m256i *) p0), _mm256_loadu_si256((const __m256i *) p1));
}

static inline TARGET_512 void prefetch_block(const void *p, size_t size, size_t off) {
        for (size_t o = 0; o < size; o += 64)
                prefetch_at(p, off + o);
        prefetch_at(p, off + size - 1);
}

/* The 8 six-bit scales of a Q4_K super-block as 16-bit lanes in both
 * 128-bit halves, and its 8 mins (see k4_scales() in quants-avx2.c; the
 * 16-byte load stays inside the block). */
static inline TARGET_512 __m256i k4_scales_mins(const uint8_t packed[K_SCALE_SIZE], __m128i *ret_mins) {
        __m128i v = _mm_loadu_si128((const __m128i *) packed);
        __m128i lo = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));
        __m128i hi = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));
        lo = _mm_and_si128(_mm_srlv_epi32(lo, _mm_setr_epi32(0, 0, 0, 4)),
                           _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
        hi = _mm_and_si128(_mm_srli_epi32(hi, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
        __m256i sm = _mm256_cvtepu8_epi16(_mm_or_si128(lo, hi));
        *ret_mins = _mm256_extracti128_si256(sm, 1);
        return _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
}

/* Q4_K: the AVX2 kernel's sumi lanes (scale times 4-product sums, with
 * vpdpwssd fusing its vpmaddwd and vpaddd), two rows per register; the
 * min term and the float steps per row as there. */
static TARGET_512 void dot4r_q4_K_q8_K(int64_t n, const void *w, size_t w_stride, const void *a, float out[4]) {
        const int64_t nb = n / QK_K;
        const block_q8_K *y = a;
        const __m512i m4 = _mm512_set1_epi8(0x0f);
        const size_t pf = PF_ROWS * w_stride;
        const block_q4_K *x[4];
        __m512 acc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };
        __m128 acc_m[4];

        for (int r = 0; r < 4; r++) {
                x[r] = (const block_q4_K *) ((const uint8_t *) w + r * w_stride);
                acc_m[r] = _mm_setzero_ps();
        }
        for (int64_t i = 0; i < nb; i++) {
                __m512i a8[8];
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++)
                        a8[j] = dup_256(_mm256_loadu_si256((const __m256i *) (y[i].qs + 32 * j)));
                __m256i bs = _mm256_loadu_si256((const __m256i *) y[i].bsums);
                __m128i pair = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const block_q4_K *u = &x[2 * g][i], *v = &x[2 * g + 1][i];
                        prefetch_block(u, sizeof(*u), pf);
                        prefetch_block(v, sizeof(*v), pf);
                        __m128i mins_u, mins_v;
                        __m256i su = k4_scales_mins(u->scales, &mins_u), sv = k4_scales_mins(v->scales, &mins_v);
                        __m512i sc = join_256(su, sv);
                        __m512i sumi = _mm512_setzero_si512();
#pragma GCC unroll 4
                        for (int j = 0; j < QK_K / 64; j++) {
                                __m512i q = load_2x256(u->qs + 32 * j, v->qs + 32 * j);
                                __m512i lo = _mm512_and_si512(q, m4);
                                __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(lo, a8[2 * j]), bcast16(sc, 2 * j));
                                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(hi, a8[2 * j + 1]), bcast16(sc, 2 * j + 1));
                        }
                        const float du = y[i].d * h2f(u->d), dv = y[i].d * h2f(v->d);
                        acc[g] = _mm512_fmadd_ps(join_ps(_mm256_set1_ps(du), _mm256_set1_ps(dv)), _mm512_cvtepi32_ps(sumi),
                                                 acc[g]);
                        acc_m[2 * g] = _mm_fmadd_ps(_mm_set1_ps(y[i].d * h2f(u->dmin)),
                                                    _mm_cvtepi32_ps(_mm_madd_epi16(mins_u, pair)), acc_m[2 * g]);
                        acc_m[2 * g + 1] = _mm_fmadd_ps(_mm_set1_ps(y[i].d * h2f(v->dmin)),
                                                        _mm_cvtepi32_ps(_mm_madd_epi16(mins_v, pair)), acc_m[2 * g + 1]);
                }
        }
        for (int r = 0; r < 4; r++)
                out[r] = hsum_ps(half_ps(acc[r / 2], r % 2)) - hsum_ps128(acc_m[r]);
}

/* Q6_K: six-bit codes from ql (low four bits) and qh (top two), 16
 * signed scales per super-block, the -32 offset through the activation
 * sums; as the AVX2 kernel, two rows per register. */
static TARGET_512 void dot4r_q6_K_q8_K(int64_t n, const void *w, size_t w_stride, const void *a, float out[4]) {
        const int64_t nb = n / QK_K;
        const block_q8_K *y = a;
        const __m512i m4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(0x30);
        const size_t pf = PF_ROWS * w_stride;
        const block_q6_K *x[4];
        __m512 acc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };

        for (int r = 0; r < 4; r++)
                x[r] = (const block_q6_K *) ((const uint8_t *) w + r * w_stride);
        for (int64_t i = 0; i < nb; i++) {
                __m512i a8[8];
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++)
                        a8[j] = dup_256(_mm256_loadu_si256((const __m256i *) (y[i].qs + 32 * j)));
                const __m512i bs = dup_256(_mm256_loadu_si256((const __m256i *) y[i].bsums));
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const block_q6_K *u = &x[2 * g][i], *v = &x[2 * g + 1][i];
                        prefetch_block(u, sizeof(*u), pf);
                        prefetch_block(v, sizeof(*v), pf);
                        __m512i sc = join_256(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) u->scales)),
                                              _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) v->scales)));
                        __m512i off = _mm512_madd_epi16(bs, sc);
                        __m512i sumi = _mm512_setzero_si512();
#pragma GCC unroll 2
                        for (int c = 0; c < QK_K / 128; c++) {
                                __m512i s8 = c == 0 ? _mm512_shuffle_i64x2(sc, sc, _MM_SHUFFLE(2, 2, 0, 0))
                                                    : _mm512_shuffle_i64x2(sc, sc, _MM_SHUFFLE(3, 3, 1, 1));
                                __m512i l0 = load_2x256(u->ql + 64 * c, v->ql + 64 * c);
                                __m512i l1 = load_2x256(u->ql + 64 * c + 32, v->ql + 64 * c + 32);
                                __m512i h = load_2x256(u->qh + 32 * c, v->qh + 32 * c);
                                __m512i q0 = _mm512_or_si512(_mm512_and_si512(l0, m4), _mm512_and_si512(_mm512_slli_epi16(h, 4), m2));
                                __m512i q1 = _mm512_or_si512(_mm512_and_si512(l1, m4), _mm512_and_si512(_mm512_slli_epi16(h, 2), m2));
                                __m512i q2 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l0, 4), m4), _mm512_and_si512(h, m2));
                                __m512i q3 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l1, 4), m4),
                                                             _mm512_and_si512(_mm512_srli_epi16(h, 2), m2));
                                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q0, a8[4 * c]), bcast16_pair(s8, 0));
                                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q1, a8[4 * c + 1]), bcast16_pair(s8, 1));
                                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q2, a8[4 * c + 2]), bcast16_pair(s8, 2));
                                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q3, a8[4 * c + 3]), bcast16_pair(s8, 3));
                        }
                        sumi = _mm512_sub_epi32(sumi, _mm512_slli_epi32(off, 5));
                        const float du = y[i].d * h2f(u->d), dv = y[i].d * h2f(v->d);
                        acc[g] = _mm512_fmadd_ps(join_ps(_mm256_set1_ps(du), _mm256_set1_ps(dv)), _mm512_cvtepi32_ps(sumi),
                                                 acc[g]);
                }
        }
        for (int r = 0; r < 4; r++)
                out[r] = hsum_ps(half_ps(acc[r / 2], r % 2));
}

/* Q4_0 prompt tile: four weight rows (two per register) times four
 * activation rows, out[k * 4 + r], in vec_dot's lanes and float steps. */
static TARGET_512 void dot4x4_q4_0_q8_0(int64_t n, const void *w, size_t w_stride, const void *a, size_t a_stride,
                                        float out[16]) {
        const int64_t nb = n / QK4_0;
        const __m512i idx_lo = _mm512_loadu_si512(q4p_lo), idx_hi = _mm512_loadu_si512(q4p_hi);
        const __m512i idx_d = _mm512_loadu_si512(q4p_d);
        const __m512i shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4), m4 = _mm512_set1_epi8(0x0f);
        const __m256i eight = _mm256_set1_epi8(8);
        const __mmask64 pair = (1ULL << 36) - 1;
        const uint8_t *x[4];
        const block_q8_0 *y[4];
        __m512 acc[2][4];

        for (int r = 0; r < 4; r++) {
                x[r] = (const uint8_t *) w + r * w_stride;
                y[r] = (const block_q8_0 *) ((const uint8_t *) a + r * a_stride);
                acc[r / 2][r % 2] = acc[r / 2][r % 2 + 2] = _mm512_setzero_ps();
        }
        int64_t i = 0;
        for (; i + 1 < nb; i += 2) {
                __m512i wl[2], wh[2];
                __m512 xs[2];
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const uint8_t *p0 = x[2 * g] + i * sizeof(block_q4_0), *p1 = x[2 * g + 1] + i * sizeof(block_q4_0);
                        prefetch_at(p0, 4 * w_stride);
                        prefetch_at(p1, 4 * w_stride);
                        __m512i b0 = _mm512_maskz_loadu_epi8(pair, p0), b1 = _mm512_maskz_loadu_epi8(pair, p1);
                        wl[g] = _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutex2var_epi8(b0, idx_lo, b1), shift), m4);
                        wh[g] = _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutex2var_epi8(b0, idx_hi, b1), shift), m4);
                        xs[g] = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(b0, idx_d, b1)));
                }
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                        __m256i al, ah;
                        struct act_pair ap = act_pair_load(&y[k][i], &al, &ah);
                        __m256i off = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), eight, al), eight, ah);
                        const __m512i off2 = dup_256(_mm256_sub_epi32(_mm256_setzero_si256(), off));
#pragma GCC unroll 2
                        for (int g = 0; g < 2; g++) {
                                __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(off2, wl[g], ap.lo), wh[g], ap.hi);
                                acc[g][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(xs[g], ap.d), acc[g][k]);
                        }
                }
        }
        for (int k = 0; k < 4; k++)
                for (int r = 0; r < 4; r++) {
                        float sum = hsum_ps(half_ps(acc[r / 2][k], r % 2));
                        if (i < nb)
                                sum += tail_q4_0((const block_q4_0 *) x[r] + i, &y[k][i]);
                        out[k * 4 + r] = sum;
                }
}

/* Q8_0 prompt tile, with the weights made unsigned (w + 128) and
 * 128 * (activation lane sums) taken out per token. */
static TARGET_512 void dot4x4_q8_0_q8_0(int64_t n, const void *w, size_t w_stride, const void *a, size_t a_stride,
                                        float out[16]) {
        const int64_t nb = n / QK8_0;
        const __m256i flip = _mm256_set1_epi8((char) 0x80);
        const __m512i flip2 = _mm512_set1_epi8((char) 0x80);
        const block_q8_0 *x[4];
        const block_q8_0 *y[4];
        __m512 acc[2][4];

        for (int r = 0; r < 4; r++) {
                x[r] = (const block_q8_0 *) ((const uint8_t *) w + r * w_stride);
                y[r] = (const block_q8_0 *) ((const uint8_t *) a + r * a_stride);
                acc[r / 2][r % 2] = acc[r / 2][r % 2 + 2] = _mm512_setzero_ps();
        }
        int64_t i = 0;
        for (; i + 1 < nb; i += 2) {
                __m512i wl[2], wh[2];
                __m512 xs[2];
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const block_q8_0 *u = x[2 * g] + i, *v = x[2 * g + 1] + i;
                        prefetch_at(u, 4 * w_stride);
                        prefetch_at(u, 4 * w_stride + 64);
                        prefetch_at(v, 4 * w_stride);
                        prefetch_at(v, 4 * w_stride + 64);
                        __m256i u0 = _mm256_loadu_si256((const __m256i *) u[0].qs);
                        __m256i u1 = _mm256_loadu_si256((const __m256i *) u[1].qs);
                        __m256i v0 = _mm256_loadu_si256((const __m256i *) v[0].qs);
                        __m256i v1 = _mm256_loadu_si256((const __m256i *) v[1].qs);
                        wl[g] = _mm512_xor_si512(join_256(pick_lo(u0, u1), pick_lo(v0, v1)), flip2);
                        wh[g] = _mm512_xor_si512(join_256(pick_hi(u0, u1), pick_hi(v0, v1)), flip2);
                        xs[g] = join_ps(two_scales(u[0].d, u[1].d), two_scales(v[0].d, v[1].d));
                }
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                        __m256i al, ah;
                        struct act_pair ap = act_pair_load(&y[k][i], &al, &ah);
                        __m256i off = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), flip, al), flip, ah);
                        const __m512i off2 = dup_256(_mm256_sub_epi32(_mm256_setzero_si256(), off));
#pragma GCC unroll 2
                        for (int g = 0; g < 2; g++) {
                                __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(off2, wl[g], ap.lo), wh[g], ap.hi);
                                acc[g][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(xs[g], ap.d), acc[g][k]);
                        }
                }
        }
        for (int k = 0; k < 4; k++)
                for (int r = 0; r < 4; r++) {
                        float sum = hsum_ps(half_ps(acc[r / 2][k], r % 2));
                        if (i < nb)
                                sum += tail_q8_0(&x[r][i], &y[k][i]);
                        out[k * 4 + r] = sum;
                }
}

/* Prompt tiles: four weight rows (two per register) times four
 * activation rows, out[k * 4 + r]; each weight super-block is unpacked
 * once for four tokens and each activation load serves four rows. The
 * integer lanes and the float steps of every (row, token) pair are
 * vec_dot's, as above. */
static TARGET_512 void dot4x4_q4_K_q8_K(int64_t n, const void *w, size_t w_stride, const void *a, size_t a_stride,
                                        float out[16]) {
        const int64_t nb = n / QK_K;
        const __m512i m4 = _mm512_set1_epi8(0x0f);
        const block_q4_K *x[4];
        const block_q8_K *y[4];
        __m512 acc[2][4], acc_m[2][2];

        for (int r = 0; r < 4; r++) {
                x[r] = (const block_q4_K *) ((const uint8_t *) w + r * w_stride);
                y[r] = (const block_q8_K *) ((const uint8_t *) a + r * a_stride);
                acc[r / 2][r % 2] = acc[r / 2][r % 2 + 2] = _mm512_setzero_ps();
                acc_m[r / 2][r % 2] = _mm512_setzero_ps();
        }
        for (int64_t i = 0; i < nb; i++) {
                __m512i sc[2], mins[2], sumi[2][4];
                /* The bsums pair sums of tokens k and k + 1, for the min term of both rows of a pair. */
                __m512i pairs[2];
                for (int h = 0; h < 2; h++) {
                        __m128i p2[2];
                        for (int e = 0; e < 2; e++) {
                                __m256i bs = _mm256_loadu_si256((const __m256i *) y[2 * h + e][i].bsums);
                                p2[e] = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
                        }
                        pairs[h] = join_256(_mm256_broadcastsi128_si256(p2[0]), _mm256_broadcastsi128_si256(p2[1]));
                }
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const block_q4_K *u = &x[2 * g][i], *v = &x[2 * g + 1][i];
                        prefetch_block(u, sizeof(*u), 4 * w_stride);
                        prefetch_block(v, sizeof(*v), 4 * w_stride);
                        __m128i mu, mv;
                        __m256i su = k4_scales_mins(u->scales, &mu), sv = k4_scales_mins(v->scales, &mv);
                        sc[g] = join_256(su, sv);
                        mins[g] = dup_256(_mm256_setr_m128i(mu, mv));
#pragma GCC unroll 4
                        for (int k = 0; k < 4; k++)
                                sumi[g][k] = _mm512_setzero_si512();
                }
#pragma GCC unroll 1
                for (int j = 0; j < QK_K / 64; j++) {
                        __m512i lo[2], hi[2], s0[2], s1[2];
#pragma GCC unroll 2
                        for (int g = 0; g < 2; g++) {
                                __m512i q = load_2x256(x[2 * g][i].qs + 32 * j, x[2 * g + 1][i].qs + 32 * j);
                                lo[g] = _mm512_and_si512(q, m4);
                                hi[g] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                                s0[g] = bcast16(sc[g], 2 * j);
                                s1[g] = bcast16(sc[g], 2 * j + 1);
                        }
#pragma GCC unroll 4
                        for (int k = 0; k < 4; k++) {
                                __m512i a0 = dup_256(_mm256_loadu_si256((const __m256i *) (y[k][i].qs + 64 * j)));
                                __m512i a1 = dup_256(_mm256_loadu_si256((const __m256i *) (y[k][i].qs + 64 * j + 32)));
#pragma GCC unroll 2
                                for (int g = 0; g < 2; g++) {
                                        sumi[g][k] = _mm512_dpwssd_epi32(sumi[g][k], _mm512_maddubs_epi16(lo[g], a0), s0[g]);
                                        sumi[g][k] = _mm512_dpwssd_epi32(sumi[g][k], _mm512_maddubs_epi16(hi[g], a1), s1[g]);
                                }
                        }
                }
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const block_q4_K *u = &x[2 * g][i], *v = &x[2 * g + 1][i];
                        const __m512 xd = join_ps(_mm256_set1_ps(h2f(u->d)), _mm256_set1_ps(h2f(v->d)));
                        const __m512 xm = dup_ps(_mm256_setr_m128(_mm_set1_ps(h2f(u->dmin)), _mm_set1_ps(h2f(v->dmin))));
#pragma GCC unroll 4
                        for (int k = 0; k < 4; k++)
                                acc[g][k] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(y[k][i].d), xd),
                                                            _mm512_cvtepi32_ps(sumi[g][k]), acc[g][k]);
                        /* Lanes: row u and row v for token 2h, then for token 2h + 1. */
#pragma GCC unroll 2
                        for (int h = 0; h < 2; h++) {
                                __m512 yd = join_ps(_mm256_set1_ps(y[2 * h][i].d), _mm256_set1_ps(y[2 * h + 1][i].d));
                                acc_m[g][h] = _mm512_fmadd_ps(_mm512_mul_ps(yd, xm),
                                                              _mm512_cvtepi32_ps(_mm512_madd_epi16(mins[g], pairs[h])),
                                                              acc_m[g][h]);
                        }
                }
        }
        for (int g = 0; g < 2; g++)
                for (int k = 0; k < 4; k++)
                        for (int e = 0; e < 2; e++) {
                                __m128 m;
                                switch ((k % 2) * 2 + e) {
                                case 0: m = _mm512_extractf32x4_ps(acc_m[g][k / 2], 0); break;
                                case 1: m = _mm512_extractf32x4_ps(acc_m[g][k / 2], 1); break;
                                case 2: m = _mm512_extractf32x4_ps(acc_m[g][k / 2], 2); break;
                                default: m = _mm512_extractf32x4_ps(acc_m[g][k / 2], 3); break;
                                }
                                out[k * 4 + 2 * g + e] = hsum_ps(half_ps(acc[g][k], e)) - hsum_ps128(m);
                        }
}

static TARGET_512 void dot4x4_q6_K_q8_K(int64_t n, const void *w, size_t w_stride, const void *a, size_t a_stride,
                                        float out[16]) {
        const int64_t nb = n / QK_K;
        const __m512i m4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(0x30);
        const block_q6_K *x[4];
        const block_q8_K *y[4];
        __m512 acc[2][4];

        for (int r = 0; r < 4; r++) {
                x[r] = (const block_q6_K *) ((const uint8_t *) w + r * w_stride);
                y[r] = (const block_q8_K *) ((const uint8_t *) a + r * a_stride);
                acc[r / 2][r % 2] = acc[r / 2][r % 2 + 2] = _mm512_setzero_ps();
        }
        for (int64_t i = 0; i < nb; i++) {
                __m512i sc[2], sumi[2][4];
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const block_q6_K *u = &x[2 * g][i], *v = &x[2 * g + 1][i];
                        prefetch_block(u, sizeof(*u), 4 * w_stride);
                        prefetch_block(v, sizeof(*v), 4 * w_stride);
                        sc[g] = join_256(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) u->scales)),
                                         _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) v->scales)));
#pragma GCC unroll 4
                        for (int k = 0; k < 4; k++)
                                sumi[g][k] = _mm512_setzero_si512();
                }
#pragma GCC unroll 1
                for (int c = 0; c < QK_K / 128; c++)
#pragma GCC unroll 1
                        for (int part = 0; part < 2; part++) {
                                /* q0 and q1 (part 0), or q2 and q3 (part 1), of both row pairs. */
                                __m512i q[2][2], b[2][2];
#pragma GCC unroll 2
                                for (int g = 0; g < 2; g++) {
                                        const block_q6_K *u = &x[2 * g][i], *v = &x[2 * g + 1][i];
                                        __m512i s8 = c == 0 ? _mm512_shuffle_i64x2(sc[g], sc[g], _MM_SHUFFLE(2, 2, 0, 0))
                                                            : _mm512_shuffle_i64x2(sc[g], sc[g], _MM_SHUFFLE(3, 3, 1, 1));
                                        __m512i l0 = load_2x256(u->ql + 64 * c, v->ql + 64 * c);
                                        __m512i l1 = load_2x256(u->ql + 64 * c + 32, v->ql + 64 * c + 32);
                                        __m512i h = load_2x256(u->qh + 32 * c, v->qh + 32 * c);
                                        if (part == 0) {
                                                q[g][0] = _mm512_or_si512(_mm512_and_si512(l0, m4),
                                                                          _mm512_and_si512(_mm512_slli_epi16(h, 4), m2));
                                                q[g][1] = _mm512_or_si512(_mm512_and_si512(l1, m4),
                                                                          _mm512_and_si512(_mm512_slli_epi16(h, 2), m2));
                                        } else {
                                                q[g][0] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l0, 4), m4),
                                                                          _mm512_and_si512(h, m2));
                                                q[g][1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l1, 4), m4),
                                                                          _mm512_and_si512(_mm512_srli_epi16(h, 2), m2));
                                        }
                                        b[g][0] = bcast16_pair(s8, 2 * part);
                                        b[g][1] = bcast16_pair(s8, 2 * part + 1);
                                }
#pragma GCC unroll 4
                                for (int k = 0; k < 4; k++) {
                                        const int8_t *a8 = y[k][i].qs + 128 * c + 64 * part;
                                        __m512i a0 = dup_256(_mm256_loadu_si256((const __m256i *) a8));
                                        __m512i a1 = dup_256(_mm256_loadu_si256((const __m256i *) (a8 + 32)));
#pragma GCC unroll 2
                                        for (int g = 0; g < 2; g++) {
                                                sumi[g][k] = _mm512_dpwssd_epi32(sumi[g][k], _mm512_maddubs_epi16(q[g][0], a0), b[g][0]);
                                                sumi[g][k] = _mm512_dpwssd_epi32(sumi[g][k], _mm512_maddubs_epi16(q[g][1], a1), b[g][1]);
                                        }
                                }
                        }
#pragma GCC unroll 2
                for (int g = 0; g < 2; g++) {
                        const __m512 xd = join_ps(_mm256_set1_ps(h2f(x[2 * g][i].d)), _mm256_set1_ps(h2f(x[2 * g + 1][i].d)));
#pragma GCC unroll 4
                        for (int k = 0; k < 4; k++) {
                                __m512i bs = dup_256(_mm256_loadu_si256((const __m256i *) y[k][i].bsums));
                                __m512i s = _mm512_sub_epi32(sumi[g][k], _mm512_slli_epi32(_mm512_madd_epi16(bs, sc[g]), 5));
                                acc[g][k] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(y[k][i].d), xd), _mm512_cvtepi32_ps(s),
                                                            acc[g][k]);
                        }
                }
        }
        for (int g = 0; g < 2; g++)
                for (int k = 0; k < 4; k++)
                        for (int e = 0; e < 2; e++)
                                out[k * 4 + 2 * g + e] = hsum_ps(half_ps(acc[g][k], e));
}

bool rbee_quant_install_avx512(struct rbee_quant_ops *ops, size_t n_ops) {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512vl") ||
            !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vnni") ||
            !__builtin_cpu_supports("avx512vbmi") || !__builtin_cpu_supports("bmi2"))
                return false;
        if (n_ops <= RBEE_TYPE_Q8_0 || n_ops <= RBEE_TYPE_Q6_K)
                return false;
        ops[RBEE_TYPE_Q4_0].vec_dot4r = dot4r_q4_0_q8_0;
        ops[RBEE_TYPE_Q8_0].vec_dot4r = dot4r_q8_0_q8_0;
        ops[RBEE_TYPE_Q4_K].vec_dot4r = dot4r_q4_K_q8_K;
        ops[RBEE_TYPE_Q6_K].vec_dot4r = dot4r_q6_K_q8_K;
        ops[RBEE_TYPE_Q4_0].vec_dot4x4 = dot4x4_q4_0_q8_0;
        ops[RBEE_TYPE_Q5_0].vec_dot4r = dot4r_q5_0_q8_0;
        ops[RBEE_TYPE_Q5_0].vec_dot4x4 = dot4x4_q5_0_q8_0;
        ops[RBEE_TYPE_Q8_0].vec_dot4x4 = dot4x4_q8_0_q8_0;
        ops[RBEE_TYPE_Q4_K].vec_dot4x4 = dot4x4_q4_K_q8_K;
        ops[RBEE_TYPE_Q6_K].vec_dot4x4 = dot4x4_q6_K_q8_K;
        return true;
}

#else

bool rbee_quant_install_avx512(struct rbee_quant_ops *ops, size_t n_ops) {
        return false;
}

#endif
