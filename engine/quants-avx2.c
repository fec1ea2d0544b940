/* SPDX-License-Identifier: MIT */
/* AVX2+FMA+F16C kernels: integer block dot products (vpmaddubsw/vpmaddwd on
 * unsigned weight codes times signed activations, one float conversion and
 * FMA per pair of 32-element blocks or per 256-element super-block), fast
 * activation quantizers, and F16/BF16 rows converted on the fly.
 *
 * Every function carries its own target attribute so the rest of the build
 * stays baseline x86-64; rbee_quant_install_avx2() checks the CPU before any
 * of it runs. Offsets of the signed formats (Q4_0's -8, Q5_0's -16, Q6_K's
 * -32) are taken out afterwards through the activation sums, which keeps the
 * weight codes unsigned for vpmaddubsw. */

#include "quants-impl.h"

#if defined(__x86_64__) || defined(__i386__)

#include <cpuid.h>
#include <immintrin.h>

/* How far ahead of the weights the kernels read (the VNNI ones read ahead as far). */
#define RBEE_PF_DIST 4096
#define TARGET __attribute__((target("avx2,fma,f16c")))
/* Dequantizers must round like the portable code: with FMA enabled the
 * compiler may fuse a multiply and an add, so they go without it. Helpers
 * both kinds share are plain AVX2 (a callee may not have more ISA than its
 * caller to be inlined). */
#define TARGET_NOFMA __attribute__((target("avx2,f16c")))
#define TARGET_AVX2 __attribute__((target("avx2")))

/* A hint only: never faults, so the address may lie past the row (formed
 * as an integer, so that no out-of-bounds pointer is made). Hardware
 * prefetchers stop at page boundaries; rows follow each other in the file,
 * so reading ahead by a few KB keeps the next rows coming. */
static inline TARGET void prefetch_at(const void *p, size_t off) {
        _mm_prefetch((const char *) ((uintptr_t) p + off), _MM_HINT_T0);
}

static inline TARGET float hsum_ps(__m256 v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
}

static inline TARGET float hsum_ps128(__m128 s) {
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
}

static inline TARGET int hsum_epi32(__m256i v) {
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
        return _mm_cvtsi128_si32(s);
}

/* fp16 to float by table: one load, where vcvtph2ps on a scalar costs a
 * shuffle-port insert and a conversion per use. Filled before the SIMD ops
 * are published (under the dispatch pthread_once), read-only afterwards. */
float rbee_fp16_lut[1 << 16];

static inline float h2f(rbee_fp16 h) {
        return rbee_fp16_lut[h];
}

/* 16 bytes of packed nibbles to 32 bytes: the low nibbles (values 0-15)
 * then the high nibbles (values 16-31), the order of the 32-element blocks.
 * The 64-bit variable shift moves only the upper half; what it drags across
 * byte boundaries lands in the bits the mask clears. */
static inline TARGET_AVX2 __m256i nibbles_32(const uint8_t *qs) {
        __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) qs));
        v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
        return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Bit k of qh to byte k: 0xff when set. */
static inline TARGET_AVX2 __m256i bits_to_bytes(const uint8_t qh[4]) {
        uint32_t v;
        memcpy(&v, qh, sizeof(v));
        const __m256i spread = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                  0x0202020202020202, 0x0303030303030303);
        const __m256i bit = _mm256_set1_epi64x((long long) 0x8040201008040201ULL);
        __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int) v), spread);
        return _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
}

/* Sum over a block of unsigned codes u times signed activations a, minus
 * off times the sum of a, as 8 int32 partial sums. */
static inline TARGET __m256i dot_u8_i8_off(__m256i u, __m256i a, __m256i off) {
        __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(u, a), _mm256_maddubs_epi16(off, a));
        return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

static inline TARGET __m256i dot_u8_i8(__m256i u, __m256i a) {
        return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1));
}

/* Signed by signed: vpmaddubsw wants one unsigned side, so take |x| and
 * move x's sign onto y (exact unless both are -128, which no activation is). */
static inline TARGET __m256i dot_i8_i8(__m256i x, __m256i y) {
        __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* Two blocks share one conversion and one FMA: vphaddd folds their partial
 * sums into lanes [0 0 1 1 | 0 0 1 1], and the scales are laid out alike. */
static inline TARGET __m256 two_blocks(__m256i p0, __m256i p1) {
        return _mm256_cvtepi32_ps(_mm256_hadd_epi32(p0, p1));
}

static inline TARGET __m256 two_scales(rbee_fp16 a0, rbee_fp16 a1) {
        return _mm256_blend_ps(_mm256_broadcast_ss(&rbee_fp16_lut[a0]), _mm256_broadcast_ss(&rbee_fp16_lut[a1]), 0xcc);
}

static inline TARGET __m256 two_products(rbee_fp16 x0, rbee_fp16 y0, rbee_fp16 x1, rbee_fp16 y1) {
        return _mm256_mul_ps(two_scales(x0, x1), two_scales(y0, y1));
}

/* The loop every 32-element block type shares. BLOCK_DOT(i) gives block
 * i's 8 int32 partial sums; blocks go in pairs, an odd last one alone. With
 * HAS_MIN (Q4_1, Q5_1) each block also adds x.MF * y.SF (min times the
 * activation block's scaled sum); the pair layout puts that product in 4
 * lanes per block, hence the quarter at the end. */
#define DOT_LOOP(x, y, nb, BLOCK_DOT, HAS_MIN, MF, SF)                                                  \
        ({                                                                                              \
                __m256 acc_ = _mm256_setzero_ps(), accm_ = _mm256_setzero_ps();                         \
                int64_t i_ = 0;                                                                         \
                for (; i_ + 1 < (nb); i_ += 2) {                                                        \
                        prefetch_at(&(x)[i_], RBEE_PF_DIST);                                            \
                        __m256i p0_ = BLOCK_DOT(i_), p1_ = BLOCK_DOT(i_ + 1);                           \
                        __m256 s_ = two_products((x)[i_].d, (y)[i_].d, (x)[i_ + 1].d, (y)[i_ + 1].d);   \
                        acc_ = _mm256_fmadd_ps(two_blocks(p0_, p1_), s_, acc_);                         \
                        if (HAS_MIN)                                                                    \
                                accm_ = _mm256_fmadd_ps(two_scales((x)[i_].MF, (x)[i_ + 1].MF),         \
                                                        two_scales((y)[i_].SF, (y)[i_ + 1].SF), accm_); \
                }                                                                                       \
                float sum_ = hsum_ps(acc_);                                                             \
                if (i_ < (nb)) {                                                                        \
                        __m256 f_ = _mm256_cvtepi32_ps(BLOCK_DOT(i_));                                  \
                        sum_ += hsum_ps(f_) * (h2f((x)[i_].d) * h2f((y)[i_].d));                        \
                        if (HAS_MIN)                                                                    \
                                sum_ += h2f((x)[i_].MF) * h2f((y)[i_].SF);                              \
                }                                                                                       \
                if (HAS_MIN)                                                                            \
                        sum_ += 0.25f * hsum_ps(accm_);                                                 \
                sum_;                                                                                   \
        })

static TARGET float dot_q4_0_q8_0(int64_t n, const void *w, const void *a) {
        const block_q4_0 *x = w;
        const block_q8_0 *y = a;
        const __m256i eight = _mm256_set1_epi8(8);
#define Q4_0_DOT(i) dot_u8_i8_off(nibbles_32(x[i].qs), _mm256_loadu_si256((const __m256i *) y[i].qs), eight)
        return DOT_LOOP(x, y, n / QK4_0, Q4_0_DOT, 0, d, d);
#undef Q4_0_DOT
}

/* Four activation rows against one weight row, in the same pairs of blocks
 * and the same order of operations as the single-row kernels, so every
 * result is bit-identical to theirs: a prompt gives the same logits
 * whether its tokens go through one at a time or four at a time. */
#define DOT4_LOOP(x, nb, a, stride, out, UNPACK, BLOCK_DOT)                                             \
        do {                                                                                            \
                const block_q8_0 *y_[4];                                                                \
                __m256 acc_[4];                                                                         \
                for (int c_ = 0; c_ < 4; c_++) {                                                        \
                        y_[c_] = (const block_q8_0 *) ((const uint8_t *) (a) + c_ * (stride));          \
                        acc_[c_] = _mm256_setzero_ps();                                                 \
                }                                                                                       \
                int64_t i_ = 0;                                                                         \
                for (; i_ + 1 < (nb); i_ += 2) {                                                        \
                        __m256i u0_ = UNPACK(i_), u1_ = UNPACK(i_ + 1);                                 \
                        for (int c_ = 0; c_ < 4; c_++) {                                                \
                                const block_q8_0 *y = y_[c_];                                           \
                                __m256i p0_ = BLOCK_DOT(u0_, i_), p1_ = BLOCK_DOT(u1_, i_ + 1);         \
                                __m256 s_ = two_products((x)[i_].d, y[i_].d, (x)[i_ + 1].d, y[i_ + 1].d); \
                                acc_[c_] = _mm256_fmadd_ps(two_blocks(p0_, p1_), s_, acc_[c_]);         \
                        }                                                                               \
                }                                                                                       \
                for (int c_ = 0; c_ < 4; c_++) {                                                        \
                        const block_q8_0 *y = y_[c_];                                                   \
                        float sum_ = hsum_ps(acc_[c_]);                                                 \
                        if (i_ < (nb)) {                                                                \
                                __m256 f_ = _mm256_cvtepi32_ps(BLOCK_DOT(UNPACK(i_), i_));              \
                                sum_ += hsum_ps(f_) * (h2f((x)[i_].d) * h2f(y[i_].d));                  \
                        }                                                                               \
                        (out)[c_] = sum_;                                                               \
                }                                                                                       \
        } while (0)

static TARGET void dot4_q4_0_q8_0(int64_t n, const void *w, const void *a, size_t stride, float out[4]) {
        const block_q4_0 *x = w;
        const __m256i eight = _mm256_set1_epi8(8);
#define UNPACK(i) nibbles_32(x[i].qs)
#define BDOT(u, i) dot_u8_i8_off(u, _mm256_loadu_si256((const __m256i *) y[i].qs), eight)
        DOT4_LOOP(x, n / QK4_0, a, stride, out, UNPACK, BDOT);
#undef UNPACK
#undef BDOT
}

static TARGET void dot4_q8_0_q8_0(int64_t n, const void *w, const void *a, size_t stride, float out[4]) {
        const block_q8_0 *x = w;
#define UNPACK(i) _mm256_loadu_si256((const __m256i *) x[i].qs)
#define BDOT(u, i) dot_i8_i8(u, _mm256_loadu_si256((const __m256i *) y[i].qs))
        DOT4_LOOP(x, n / QK8_0, a, stride, out, UNPACK, BDOT);
#undef UNPACK
#undef BDOT
}

static TARGET float dot_q5_0_q8_0(int64_t n, const void *w, const void *a) {
        const block_q5_0 *x = w;
        const block_q8_0 *y = a;
        const __m256i sixteen = _mm256_set1_epi8(16);
#define Q5_0_DOT(i)                                                                                       \
        dot_u8_i8_off(_mm256_or_si256(nibbles_32(x[i].qs), _mm256_and_si256(bits_to_bytes(x[i].qh), sixteen)), \
                      _mm256_loadu_si256((const __m256i *) y[i].qs), sixteen)
        return DOT_LOOP(x, y, n / QK5_0, Q5_0_DOT, 0, d, d);
#undef Q5_0_DOT
}

static TARGET float dot_q8_0_q8_0(int64_t n, const void *w, const void *a) {
        const block_q8_0 *x = w;
        const block_q8_0 *y = a;
#define Q8_0_DOT(i) dot_i8_i8(_mm256_loadu_si256((const __m256i *) x[i].qs), _mm256_loadu_si256((const __m256i *) y[i].qs))
        return DOT_LOOP(x, y, n / QK8_0, Q8_0_DOT, 0, d, d);
#undef Q8_0_DOT
}

static TARGET float dot_q4_1_q8_1(int64_t n, const void *w, const void *a) {
        const block_q4_1 *x = w;
        const block_q8_1 *y = a;
#define Q4_1_DOT(i) dot_u8_i8(nibbles_32(x[i].qs), _mm256_loadu_si256((const __m256i *) y[i].qs))
        return DOT_LOOP(x, y, n / QK4_1, Q4_1_DOT, 1, m, s);
#undef Q4_1_DOT
}

static TARGET float dot_q5_1_q8_1(int64_t n, const void *w, const void *a) {
        const block_q5_1 *x = w;
        const block_q8_1 *y = a;
        const __m256i sixteen = _mm256_set1_epi8(16);
#define Q5_1_DOT(i)                                                                                       \
        dot_u8_i8(_mm256_or_si256(nibbles_32(x[i].qs), _mm256_and_si256(bits_to_bytes(x[i].qh), sixteen)), \
                  _mm256_loadu_si256((const __m256i *) y[i].qs))
        return DOT_LOOP(x, y, n / QK5_1, Q5_1_DOT, 1, m, s);
#undef Q5_1_DOT
}

/* Broadcast 16-bit lane k of each 128-bit half. */
static inline TARGET __m256i bcast16(__m256i v, int k) {
        return _mm256_shuffle_epi8(v, _mm256_set1_epi16((short) ((2 * k + 1) << 8 | 2 * k)));
}

/* Q4_K/Q5_K sub-block scales as 16-bit lanes in both halves, and the min
 * term sum(m_j * sum of activations in sub-block j) as 4 int32. The 6-bit
 * fields are unpacked in registers (see k4_unpack_scales() for the layout):
 * 32-bit lanes w0 w2 w1 w2 give scales 0-3, the low nibbles of scales 4-7,
 * mins 0-3 and the high nibbles of mins 4-7; w0 w0 w1 w1 shifted right by
 * 2 bring the spare top bits of bytes 0-7 to bits 4-5. The 16-byte load
 * reads 4 bytes past the scales, which are still inside the block. */
static inline TARGET __m256i k4_scales(const uint8_t packed[K_SCALE_SIZE], const int16_t bsums[QK_K / 16],
                                       __m128i *ret_min_prod) {
        __m128i v = _mm_loadu_si128((const __m128i *) packed);
        __m128i lo = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));
        __m128i hi = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));
        lo = _mm_and_si128(_mm_srlv_epi32(lo, _mm_setr_epi32(0, 0, 0, 4)),
                           _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
        hi = _mm_and_si128(_mm_srli_epi32(hi, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
        __m256i sm = _mm256_cvtepu8_epi16(_mm_or_si128(lo, hi)); /* scales 0-7, mins 0-7 */

        __m256i bs = _mm256_loadu_si256((const __m256i *) bsums);
        __m128i pair = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        *ret_min_prod = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), pair);
        return _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
}

static TARGET float dot_q4_K_q8_K(int64_t n, const void *w, const void *a) {
        const block_q4_K *x = w;
        const block_q8_K *y = a;
        const int64_t nb = n / QK_K;
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        __m256 acc = _mm256_setzero_ps();
        __m128 acc_m = _mm_setzero_ps();

        for (int64_t i = 0; i < nb; i++) {
                for (size_t o = 0; o < sizeof(x[i]); o += 64)
                        prefetch_at(&x[i], RBEE_PF_DIST + o);
                const float d = y[i].d * h2f(x[i].d);
                const float dmin = y[i].d * h2f(x[i].dmin);
                __m128i min_prod;
                __m256i scales = k4_scales(x[i].scales, y[i].bsums, &min_prod);
                __m256i sumi = _mm256_setzero_si256();

                for (int j = 0; j < QK_K / 64; j++) {
                        __m256i q = _mm256_loadu_si256((const __m256i *) (x[i].qs + 32 * j));
                        __m256i lo = _mm256_and_si256(q, m4);
                        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                        __m256i a0 = _mm256_loadu_si256((const __m256i *) (y[i].qs + 64 * j));
                        __m256i a1 = _mm256_loadu_si256((const __m256i *) (y[i].qs + 64 * j + 32));
                        __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), bcast16(scales, 2 * j));
                        __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), bcast16(scales, 2 * j + 1));
                        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_m);
        }
        return hsum_ps(acc) - hsum_ps128(acc_m);
}

static TARGET float dot_q5_K_q8_K(int64_t n, const void *w, const void *a) {
        const block_q5_K *x = w;
        const block_q8_K *y = a;
        const int64_t nb = n / QK_K;
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        const __m256i bit4 = _mm256_set1_epi8(0x10);
        __m256 acc = _mm256_setzero_ps();
        __m128 acc_m = _mm_setzero_ps();

        for (int64_t i = 0; i < nb; i++) {
                const float d = y[i].d * h2f(x[i].d);
                const float dmin = y[i].d * h2f(x[i].dmin);
                __m128i min_prod;
                __m256i scales = k4_scales(x[i].scales, y[i].bsums, &min_prod);
                __m256i hb = _mm256_loadu_si256((const __m256i *) x[i].qh);
                __m256i sumi = _mm256_setzero_si256();

                /* Sub-blocks 2j and 2j+1 take their fifth bit from bits 0 and 1 of hb >> 2j. */
                for (int j = 0; j < QK_K / 64; j++) {
                        __m256i q = _mm256_loadu_si256((const __m256i *) (x[i].qs + 32 * j));
                        __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4),
                                                     _mm256_and_si256(_mm256_slli_epi16(hb, 4), bit4));
                        __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                                     _mm256_and_si256(_mm256_slli_epi16(hb, 3), bit4));
                        __m256i a0 = _mm256_loadu_si256((const __m256i *) (y[i].qs + 64 * j));
                        __m256i a1 = _mm256_loadu_si256((const __m256i *) (y[i].qs + 64 * j + 32));
                        __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), bcast16(scales, 2 * j));
                        __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), bcast16(scales, 2 * j + 1));
                        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
                        hb = _mm256_srli_epi16(hb, 2);
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
                acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_m);
        }
        return hsum_ps(acc) - hsum_ps128(acc_m);
}

/* 16-bit lane 2k of the low half of v in the low half of the result, lane
 * 2k+1 in the high half, for v holding the same 8 scales in both halves. */
static inline TARGET __m256i bcast16_pair(__m256i v, int k) {
        const short lo = (short) ((4 * k + 1) << 8 | 4 * k), hi = (short) ((4 * k + 3) << 8 | (4 * k + 2));
        return _mm256_shuffle_epi8(v, _mm256_setr_epi16(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi));
}

static TARGET float dot_q6_K_q8_K(int64_t n, const void *w, const void *a) {
        const block_q6_K *x = w;
        const block_q8_K *y = a;
        const int64_t nb = n / QK_K;
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        const __m256i m2 = _mm256_set1_epi8(0x30);
        __m256 acc = _mm256_setzero_ps();

        for (int64_t i = 0; i < nb; i++) {
                for (size_t o = 0; o < sizeof(x[i]); o += 64)
                        prefetch_at(&x[i], RBEE_PF_DIST + o);
                const float d = y[i].d * h2f(x[i].d);
                __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) x[i].scales));
                /* The -32 offset of every value: 32 * sum(scale_g * activation sum of group g). */
                __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *) y[i].bsums), sc);
                __m256i sumi = _mm256_setzero_si256();

                for (int c = 0; c < QK_K / 128; c++) {
                        const uint8_t *ql = x[i].ql + 64 * c;
                        const int8_t *a8 = y[i].qs + 128 * c;
                        __m256i s8 = _mm256_broadcastsi128_si256(c == 0 ? _mm256_castsi256_si128(sc)
                                                                        : _mm256_extracti128_si256(sc, 1));
                        __m256i l0 = _mm256_loadu_si256((const __m256i *) ql);
                        __m256i l1 = _mm256_loadu_si256((const __m256i *) (ql + 32));
                        __m256i h = _mm256_loadu_si256((const __m256i *) (x[i].qh + 32 * c));
                        __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2));
                        __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2));
                        __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m2));
                        __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                                     _mm256_and_si256(_mm256_srli_epi16(h, 2), m2));
                        __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *) a8)),
                                                       bcast16_pair(s8, 0));
                        __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *) (a8 + 32))),
                                                       bcast16_pair(s8, 1));
                        __m256i p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *) (a8 + 64))),
                                                       bcast16_pair(s8, 2));
                        __m256i p3 = _mm256_madd_epi16(_mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *) (a8 + 96))),
                                                       bcast16_pair(s8, 3));
                        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3)));
                }
                sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(off, 5));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        return hsum_ps(acc);
}

/* Four activation rows against one Q4_K / Q6_K row: the weight codes and
 * scales are unpacked once per super-block for all four, and each row's
 * arithmetic is the single-row kernel's, in the same order (bit-identical). */
static TARGET void dot4_q4_K_q8_K(int64_t n, const void *w, const void *a, size_t stride, float out[4]) {
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
                        prefetch_at(&x[i], RBEE_PF_DIST + o);
                __m128i min_prod[4];
                __m256i scales = k4_scales(x[i].scales, y[0][i].bsums, &min_prod[0]);
                __m256i sumi[4];
#pragma GCC unroll 4
                for (int c = 1; c < 4; c++)
                        (void) k4_scales(x[i].scales, y[c][i].bsums, &min_prod[c]);
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++)
                        sumi[c] = _mm256_setzero_si256();
                for (int j = 0; j < QK_K / 64; j++) {
                        __m256i q = _mm256_loadu_si256((const __m256i *) (x[i].qs + 32 * j));
                        __m256i lo = _mm256_and_si256(q, m4);
                        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                        __m256i s0 = bcast16(scales, 2 * j), s1 = bcast16(scales, 2 * j + 1);
#pragma GCC unroll 4
                        for (int c = 0; c < 4; c++) {
                                __m256i a0 = _mm256_loadu_si256((const __m256i *) (y[c][i].qs + 64 * j));
                                __m256i a1 = _mm256_loadu_si256((const __m256i *) (y[c][i].qs + 64 * j + 32));
                                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), s0);
                                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), s1);
                                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(p0, p1));
                        }
                }
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) {
                        const float d = y[c][i].d * h2f(x[i].d);
                        const float dmin = y[c][i].d * h2f(x[i].dmin);
                        acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
                        acc_m[c] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod[c]), acc_m[c]);
                }
        }
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
                out[c] = hsum_ps(acc[c]) - hsum_ps128(acc_m[c]);
}

static TARGET void dot4_q6_K_q8_K(int64_t n, const void *w, const void *a, size_t stride, float out[4]) {
        const block_q6_K *x = w;
        const block_q8_K *y[4];
        const int64_t nb = n / QK_K;
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        const __m256i m2 = _mm256_set1_epi8(0x30);
        __m256 acc[4];
#pragma GCC unroll 4

        for (int c = 0; c < 4; c++) {
                y[c] = (const block_q8_K *) ((const uint8_t *) a + c * stride);
                acc[c] = _mm256_setzero_ps();
        }
        for (int64_t i = 0; i < nb; i++) {
                for (size_t o = 0; o < sizeof(x[i]); o += 64)
                        prefetch_at(&x[i], RBEE_PF_DIST + o);
                __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) x[i].scales));
                __m256i sumi[4];
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++)
                        sumi[c] = _mm256_setzero_si256();
                for (int h = 0; h < QK_K / 128; h++) {
                        const uint8_t *ql = x[i].ql + 64 * h;
                        __m256i s8 = _mm256_broadcastsi128_si256(h == 0 ? _mm256_castsi256_si128(sc)
                                                                        : _mm256_extracti128_si256(sc, 1));
                        __m256i l0 = _mm256_loadu_si256((const __m256i *) ql);
                        __m256i l1 = _mm256_loadu_si256((const __m256i *) (ql + 32));
                        __m256i hb = _mm256_loadu_si256((const __m256i *) (x[i].qh + 32 * h));
                        __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m2));
                        __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m2));
                        __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m2));
                        __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                                     _mm256_and_si256(_mm256_srli_epi16(hb, 2), m2));
                        __m256i b0 = bcast16_pair(s8, 0), b1 = bcast16_pair(s8, 1);
                        __m256i b2 = bcast16_pair(s8, 2), b3 = bcast16_pair(s8, 3);
#pragma GCC unroll 4
                        for (int c = 0; c < 4; c++) {
                                const int8_t *a8 = y[c][i].qs + 128 * h;
                                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *) a8)), b0);
                                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *) (a8 + 32))), b1);
                                __m256i p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *) (a8 + 64))), b2);
                                __m256i p3 = _mm256_madd_epi16(_mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *) (a8 + 96))), b3);
                                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3)));
                        }
                }
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++) {
                        const float d = y[c][i].d * h2f(x[i].d);
                        __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *) y[c][i].bsums), sc);
                        __m256i s = _mm256_sub_epi32(sumi[c], _mm256_slli_epi32(off, 5));
                        acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[c]);
                }
        }
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
                out[c] = hsum_ps(acc[c]);
}

/* Float rows. Four accumulators hide the FMA latency. */

static TARGET float dot_f32(int64_t n, const void *w, const void *a) {
        const float *x = w, *y = a;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        int64_t i = 0;

        for (; i + 32 <= n; i += 32) {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
                s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), s2);
                s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), s3);
        }
        for (; i + 8 <= n; i += 8)
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
        float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (; i < n; i++)
                sum += x[i] * y[i];
        return sum;
}

static inline TARGET __m256 load_f16x8(const rbee_fp16 *p) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) p));
}

/* The last n % 8 elements, with an explicit FMA so that vec_dot and
 * vec_dot4r round alike whatever the compiler contracts. */
static inline TARGET float f16_tail(const rbee_fp16 *x, const float *y, int64_t i, int64_t n, float sum) {
        for (; i < n; i++)
                sum = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(h2f(x[i])), _mm_set_ss(y[i]), _mm_set_ss(sum)));
        return sum;
}

static TARGET float dot_f16(int64_t n, const void *w, const void *a) {
        const rbee_fp16 *x = w;
        const float *y = a;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        int64_t i = 0;

        for (; i + 32 <= n; i += 32) {
                prefetch_at(x + i, RBEE_PF_DIST);
                s0 = _mm256_fmadd_ps(load_f16x8(x + i), _mm256_loadu_ps(y + i), s0);
                s1 = _mm256_fmadd_ps(load_f16x8(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
                s2 = _mm256_fmadd_ps(load_f16x8(x + i + 16), _mm256_loadu_ps(y + i + 16), s2);
                s3 = _mm256_fmadd_ps(load_f16x8(x + i + 24), _mm256_loadu_ps(y + i + 24), s3);
        }
        for (; i + 8 <= n; i += 8)
                s0 = _mm256_fmadd_ps(load_f16x8(x + i), _mm256_loadu_ps(y + i), s0);
        float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        return f16_tail(x, y, i, n, sum);
}

/* Four F16 rows against one float row (generation): each activation load
 * serves four rows, each row reads ahead by 16 rows (mmapped weights get
 * no help from the hardware prefetchers across 4 KB pages), and each row's
 * arithmetic is dot_f16()'s, in the same order. */
static TARGET void dot4r_f16(int64_t n, const void *w, size_t w_stride, const void *a, float out[4]) {
        const rbee_fp16 *x[4];
        const float *y = a;
        const size_t pf = 16 * w_stride;
        __m256 s[4][4];
        int64_t i = 0;

        for (int r = 0; r < 4; r++) {
                x[r] = (const rbee_fp16 *) ((const uint8_t *) w + r * w_stride);
                for (int k = 0; k < 4; k++)
                        s[r][k] = _mm256_setzero_ps();
        }
        for (; i + 32 <= n; i += 32) {
                __m256 y0 = _mm256_loadu_ps(y + i), y1 = _mm256_loadu_ps(y + i + 8);
                __m256 y2 = _mm256_loadu_ps(y + i + 16), y3 = _mm256_loadu_ps(y + i + 24);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                        prefetch_at(x[r] + i, pf);
                        s[r][0] = _mm256_fmadd_ps(load_f16x8(x[r] + i), y0, s[r][0]);
                        s[r][1] = _mm256_fmadd_ps(load_f16x8(x[r] + i + 8), y1, s[r][1]);
                        s[r][2] = _mm256_fmadd_ps(load_f16x8(x[r] + i + 16), y2, s[r][2]);
                        s[r][3] = _mm256_fmadd_ps(load_f16x8(x[r] + i + 24), y3, s[r][3]);
                }
        }
        for (; i + 8 <= n; i += 8)
                for (int r = 0; r < 4; r++)
                        s[r][0] = _mm256_fmadd_ps(load_f16x8(x[r] + i), _mm256_loadu_ps(y + i), s[r][0]);
        for (int r = 0; r < 4; r++) {
                float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(s[r][0], s[r][1]), _mm256_add_ps(s[r][2], s[r][3])));
                out[r] = f16_tail(x[r], y, i, n, sum);
        }
}

static inline TARGET __m256 load_bf16x8(const rbee_bf16 *p) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *) p));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static TARGET float dot_bf16(int64_t n, const void *w, const void *a) {
        const rbee_bf16 *x = w;
        const float *y = a;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        int64_t i = 0;

        for (; i + 32 <= n; i += 32) {
                s0 = _mm256_fmadd_ps(load_bf16x8(x + i), _mm256_loadu_ps(y + i), s0);
                s1 = _mm256_fmadd_ps(load_bf16x8(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
                s2 = _mm256_fmadd_ps(load_bf16x8(x + i + 16), _mm256_loadu_ps(y + i + 16), s2);
                s3 = _mm256_fmadd_ps(load_bf16x8(x + i + 24), _mm256_loadu_ps(y + i + 24), s3);
        }
        for (; i + 8 <= n; i += 8)
                s0 = _mm256_fmadd_ps(load_bf16x8(x + i), _mm256_loadu_ps(y + i), s0);
        float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (; i < n; i++)
                sum += bf16_to_fp32(x[i]) * y[i];
        return sum;
}

static TARGET void f16_to_float(const void *src, float *dst, int64_t n) {
        const rbee_fp16 *x = src;
        int64_t i = 0;

        for (; i + 8 <= n; i += 8)
                _mm256_storeu_ps(dst + i, load_f16x8(x + i));
        for (; i < n; i++)
                dst[i] = h2f(x[i]);
}

static TARGET void f16_from_float(const float *src, void *dst, int64_t n) {
        rbee_fp16 *y = dst;
        int64_t i = 0;

        for (; i + 8 <= n; i += 8)
                _mm_storeu_si128((__m128i *) (y + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
        for (; i < n; i++)
                y[i] = fp32_to_fp16(src[i]);
}

static TARGET void bf16_to_float(const void *src, float *dst, int64_t n) {
        const rbee_bf16 *x = src;
        int64_t i = 0;

        for (; i + 8 <= n; i += 8)
                _mm256_storeu_ps(dst + i, load_bf16x8(x + i));
        for (; i < n; i++)
                dst[i] = bf16_to_fp32(x[i]);
}

/* Activation quantizers. vcvtps2dq rounds to nearest even (the default
 * MXCSR mode); the scalar reference rounds ties away from zero. Both are
 * valid encodings, and each dot product only ever sees one of them. */

static inline TARGET __m256 abs_ps(__m256 v) {
        return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

static inline TARGET float hmax_ps(__m256 v) {
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        return _mm_cvtss_f32(m);
}

/* 32 scaled floats to 32 int8 in order; also their int32 partial sums. */
static inline TARGET __m256i round_pack_32(const float *x, __m256 mul, __m256i *ret_sum) {
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), mul));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), mul));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), mul));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), mul));

        if (ret_sum)
                *ret_sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        /* The packs work per 128-bit half; a dword permute restores the order. */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline TARGET float absmax_32(const float *x) {
        __m256 m = _mm256_max_ps(_mm256_max_ps(abs_ps(_mm256_loadu_ps(x)), abs_ps(_mm256_loadu_ps(x + 8))),
                                 _mm256_max_ps(abs_ps(_mm256_loadu_ps(x + 16)), abs_ps(_mm256_loadu_ps(x + 24))));
        return hmax_ps(m);
}

static TARGET void quantize_q8_0(const float *src, void *dst, int64_t n) {
        block_q8_0 *y = dst;

        for (int64_t i = 0; i < n / QK8_0; i++) {
                const float *x = src + i * QK8_0;
                const float amax = absmax_32(x);
                const float id = amax > 0.f ? 127.f / amax : 0.f;

                y[i].d = _cvtss_sh(amax / 127.f, 0);
                _mm256_storeu_si256((__m256i *) y[i].qs, round_pack_32(x, _mm256_set1_ps(id), NULL));
        }
}

static TARGET void quantize_q8_1(const float *src, void *dst, int64_t n) {
        block_q8_1 *y = dst;

        for (int64_t i = 0; i < n / QK8_1; i++) {
                const float *x = src + i * QK8_1;
                const float amax = absmax_32(x);
                const float d = amax / 127.f;
                const float id = amax > 0.f ? 127.f / amax : 0.f;
                __m256i sum;

                y[i].d = _cvtss_sh(d, 0);
                _mm256_storeu_si256((__m256i *) y[i].qs, round_pack_32(x, _mm256_set1_ps(id), &sum));
                /* With the stored (rounded) d, s is the sum of the values the dot products see. */
                y[i].s = _cvtss_sh((float) hsum_epi32(sum) * h2f(y[i].d), 0);
        }
}

static TARGET void quantize_q8_K(const float *src, void *dst, int64_t n) {
        block_q8_K *y = dst;

        for (int64_t i = 0; i < n / QK_K; i++) {
                const float *x = src + i * QK_K;
                __m256 m = _mm256_setzero_ps();

                for (int j = 0; j < QK_K; j += 8)
                        m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + j)));
                const float amax = hmax_ps(m);
                if (!(amax > 0.f)) {
                        memset(&y[i], 0, sizeof(y[i]));
                        continue;
                }
                const __m256 mul = _mm256_set1_ps(127.f / amax);

                for (int j = 0; j < QK_K / 32; j++) {
                        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * j), mul));
                        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * j + 8), mul));
                        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * j + 16), mul));
                        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * j + 24), mul));
                        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
                        _mm256_storeu_si256((__m256i *) (y[i].qs + 32 * j),
                                            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));

                        /* Sums of values 0-15 and 16-31: fold to 4+4 lanes per half, then add the halves. */
                        __m256i h = _mm256_hadd_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
                        h = _mm256_hadd_epi32(h, h);
                        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                        y[i].bsums[2 * j] = (int16_t) _mm_cvtsi128_si32(s);
                        y[i].bsums[2 * j + 1] = (int16_t) _mm_extract_epi32(s, 1);
                }
                y[i].d = amax / 127.f;
        }
}

/* Dequantizers, for the batched path that feeds float rows to a GEMM. Each
 * value is the same float expression as in the portable code (one multiply,
 * then an add or subtract where the format has a min), so the results are
 * bit-identical. */

/* 16 int8 codes times d, plus m when has_m (minus m with sub). */
static inline TARGET_NOFMA void put_16(float *y, __m128i q, __m256 d, __m256 m, bool has_m, bool sub) {
        __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
        __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))), d);

        if (has_m) {
                v0 = sub ? _mm256_sub_ps(v0, m) : _mm256_add_ps(v0, m);
                v1 = sub ? _mm256_sub_ps(v1, m) : _mm256_add_ps(v1, m);
        }
        _mm256_storeu_ps(y, v0);
        _mm256_storeu_ps(y + 8, v1);
}

static inline TARGET_NOFMA void put_32(float *y, __m256i q, __m256 d, __m256 m, bool has_m, bool sub) {
        put_16(y, _mm256_castsi256_si128(q), d, m, has_m, sub);
        put_16(y + 16, _mm256_extracti128_si256(q, 1), d, m, has_m, sub);
}

static TARGET_NOFMA void dequant_q4_0(const void *src, float *dst, int64_t n) {
        const block_q4_0 *x = src;
        const __m256i eight = _mm256_set1_epi8(8);

        for (int64_t i = 0; i < n / QK4_0; i++)
                put_32(dst + i * QK4_0, _mm256_sub_epi8(nibbles_32(x[i].qs), eight), _mm256_set1_ps(h2f(x[i].d)),
                       _mm256_setzero_ps(), false, false);
}

static TARGET_NOFMA void dequant_q4_1(const void *src, float *dst, int64_t n) {
        const block_q4_1 *x = src;

        for (int64_t i = 0; i < n / QK4_1; i++)
                put_32(dst + i * QK4_1, nibbles_32(x[i].qs), _mm256_set1_ps(h2f(x[i].d)), _mm256_set1_ps(h2f(x[i].m)),
                       true, false);
}

static TARGET_NOFMA void dequant_q5_0(const void *src, float *dst, int64_t n) {
        const block_q5_0 *x = src;
        const __m256i sixteen = _mm256_set1_epi8(16);

        for (int64_t i = 0; i < n / QK5_0; i++) {
                __m256i q = _mm256_or_si256(nibbles_32(x[i].qs), _mm256_and_si256(bits_to_bytes(x[i].qh), sixteen));
                put_32(dst + i * QK5_0, _mm256_sub_epi8(q, sixteen), _mm256_set1_ps(h2f(x[i].d)), _mm256_setzero_ps(),
                       false, false);
        }
}

static TARGET_NOFMA void dequant_q5_1(const void *src, float *dst, int64_t n) {
        const block_q5_1 *x = src;
        const __m256i sixteen = _mm256_set1_epi8(16);

        for (int64_t i = 0; i < n / QK5_1; i++) {
                __m256i q = _mm256_or_si256(nibbles_32(x[i].qs), _mm256_and_si256(bits_to_bytes(x[i].qh), sixteen));
                put_32(dst + i * QK5_1, q, _mm256_set1_ps(h2f(x[i].d)), _mm256_set1_ps(h2f(x[i].m)), true, false);
        }
}

static TARGET_NOFMA void dequant_q8_0(const void *src, float *dst, int64_t n) {
        const block_q8_0 *x = src;

        for (int64_t i = 0; i < n / QK8_0; i++)
                put_32(dst + i * QK8_0, _mm256_loadu_si256((const __m256i *) x[i].qs), _mm256_set1_ps(h2f(x[i].d)),
                       _mm256_setzero_ps(), false, false);
}

/* Q4_K and Q5_K: d1 = d*sc and m1 = dmin*m as scalars, then d1*q - m1. */
static TARGET_NOFMA void dequant_q4_K(const void *src, float *dst, int64_t n) {
        const block_q4_K *x = src;
        const __m256i m4 = _mm256_set1_epi8(0x0f);

        for (int64_t i = 0; i < n / QK_K; i++) {
                const float d = h2f(x[i].d), min = h2f(x[i].dmin);
                uint8_t sc[8], m[8];

                k4_unpack_scales(x[i].scales, sc, m);
                for (int j = 0; j < QK_K / 64; j++) {
                        __m256i q = _mm256_loadu_si256((const __m256i *) (x[i].qs + 32 * j));
                        float *y = dst + i * QK_K + 64 * j;
                        put_32(y, _mm256_and_si256(q, m4), _mm256_set1_ps(d * (float) sc[2 * j]),
                               _mm256_set1_ps(min * (float) m[2 * j]), true, true);
                        put_32(y + 32, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4), _mm256_set1_ps(d * (float) sc[2 * j + 1]),
                               _mm256_set1_ps(min * (float) m[2 * j + 1]), true, true);
                }
        }
}

static TARGET_NOFMA void dequant_q5_K(const void *src, float *dst, int64_t n) {
        const block_q5_K *x = src;
        const __m256i m4 = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10);

        for (int64_t i = 0; i < n / QK_K; i++) {
                const float d = h2f(x[i].d), min = h2f(x[i].dmin);
                __m256i hb = _mm256_loadu_si256((const __m256i *) x[i].qh);
                uint8_t sc[8], m[8];

                k4_unpack_scales(x[i].scales, sc, m);
                for (int j = 0; j < QK_K / 64; j++) {
                        __m256i q = _mm256_loadu_si256((const __m256i *) (x[i].qs + 32 * j));
                        __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), bit4));
                        __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                                     _mm256_and_si256(_mm256_slli_epi16(hb, 3), bit4));
                        float *y = dst + i * QK_K + 64 * j;
                        put_32(y, lo, _mm256_set1_ps(d * (float) sc[2 * j]), _mm256_set1_ps(min * (float) m[2 * j]), true, true);
                        put_32(y + 32, hi, _mm256_set1_ps(d * (float) sc[2 * j + 1]), _mm256_set1_ps(min * (float) m[2 * j + 1]),
                               true, true);
                        hb = _mm256_srli_epi16(hb, 2);
                }
        }
}

/* Q6_K: (d*sc) as a scalar, times q - 32; values l and l+16 of each group
 * of 32 have different scales, hence the two halves. */
static TARGET_NOFMA void dequant_q6_K(const void *src, float *dst, int64_t n) {
        const block_q6_K *x = src;
        const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);

        for (int64_t i = 0; i < n / QK_K; i++) {
                const float d = h2f(x[i].d);

                for (int c = 0; c < QK_K / 128; c++) {
                        const uint8_t *ql = x[i].ql + 64 * c;
                        const int8_t *sc = x[i].scales + 8 * c;
                        __m256i l0 = _mm256_loadu_si256((const __m256i *) ql);
                        __m256i l1 = _mm256_loadu_si256((const __m256i *) (ql + 32));
                        __m256i h = _mm256_loadu_si256((const __m256i *) (x[i].qh + 32 * c));
                        __m256i q[4] = {
                                _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2)),
                                _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2)),
                                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m2)),
                                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                                _mm256_and_si256(_mm256_srli_epi16(h, 2), m2)),
                        };
                        for (int k = 0; k < 4; k++) {
                                __m256i v = _mm256_sub_epi8(q[k], off);
                                float *y = dst + i * QK_K + 128 * c + 32 * k;
                                put_16(y, _mm256_castsi256_si128(v), _mm256_set1_ps(d * (float) sc[2 * k]),
                                       _mm256_setzero_ps(), false, false);
                                put_16(y + 16, _mm256_extracti128_si256(v, 1), _mm256_set1_ps(d * (float) sc[2 * k + 1]),
                                       _mm256_setzero_ps(), false, false);
                        }
                }
        }
}

/* clang's __builtin_cpu_supports() does not know "f16c"; CPUID.1:ECX bit 29
 * is the same flag (the OS support for the YMM state it needs is part of
 * the "avx2" check). */
static bool cpu_has_f16c(void) {
        unsigned eax, ebx, ecx, edx;

        if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
                return false;
        return ecx & (1u << 29);
}

bool rbee_quant_install_avx2(struct rbee_quant_ops *ops, size_t n_ops) {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !cpu_has_f16c())
                return false;
        if (n_ops <= RBEE_TYPE_BF16)
                return false;
        for (uint32_t h = 0; h < sizeof(rbee_fp16_lut) / sizeof(rbee_fp16_lut[0]); h++)
                rbee_fp16_lut[h] = fp16_to_fp32((rbee_fp16) h);

        ops[RBEE_TYPE_F32].vec_dot = dot_f32;
        ops[RBEE_TYPE_F16].vec_dot = dot_f16;
        ops[RBEE_TYPE_F16].vec_dot4r = dot4r_f16;
        ops[RBEE_TYPE_F16].to_float = f16_to_float;
        ops[RBEE_TYPE_F16].from_float = f16_from_float;
        ops[RBEE_TYPE_F16].quantize_ref = f16_from_float;
        ops[RBEE_TYPE_BF16].vec_dot = dot_bf16;
        ops[RBEE_TYPE_BF16].to_float = bf16_to_float;
        ops[RBEE_TYPE_Q4_0].to_float = dequant_q4_0;
        ops[RBEE_TYPE_Q4_1].to_float = dequant_q4_1;
        ops[RBEE_TYPE_Q5_0].to_float = dequant_q5_0;
        ops[RBEE_TYPE_Q5_1].to_float = dequant_q5_1;
        ops[RBEE_TYPE_Q8_0].to_float = dequant_q8_0;
        ops[RBEE_TYPE_Q4_K].to_float = dequant_q4_K;
        ops[RBEE_TYPE_Q5_K].to_float = dequant_q5_K;
        ops[RBEE_TYPE_Q6_K].to_float = dequant_q6_K;
        ops[RBEE_TYPE_Q4_0].vec_dot = dot_q4_0_q8_0;
        ops[RBEE_TYPE_Q4_1].vec_dot = dot_q4_1_q8_1;
        ops[RBEE_TYPE_Q5_0].vec_dot = dot_q5_0_q8_0;
        ops[RBEE_TYPE_Q5_1].vec_dot = dot_q5_1_q8_1;
        ops[RBEE_TYPE_Q8_0].vec_dot = dot_q8_0_q8_0;
        ops[RBEE_TYPE_Q4_0].vec_dot4 = dot4_q4_0_q8_0;
        ops[RBEE_TYPE_Q8_0].vec_dot4 = dot4_q8_0_q8_0;
        ops[RBEE_TYPE_Q4_K].vec_dot4 = dot4_q4_K_q8_K;
        ops[RBEE_TYPE_Q6_K].vec_dot4 = dot4_q6_K_q8_K;
        ops[RBEE_TYPE_Q4_K].vec_dot = dot_q4_K_q8_K;
        ops[RBEE_TYPE_Q5_K].vec_dot = dot_q5_K_q8_K;
        ops[RBEE_TYPE_Q6_K].vec_dot = dot_q6_K_q8_K;
        /* Weight types keep the reference quantizer as from_float; only the
         * activation types get the fast one. */
        ops[RBEE_TYPE_Q8_0].from_float = quantize_q8_0;
        ops[RBEE_TYPE_Q8_1].from_float = quantize_q8_1;
        ops[RBEE_TYPE_Q8_K].from_float = quantize_q8_K;
        return true;
}

#else

bool rbee_quant_install_avx2(struct rbee_quant_ops *ops, size_t n_ops) {
        return false;
}

#endif
