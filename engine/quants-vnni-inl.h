/* SPDX-License-Identifier: MIT */
#pragma once

/* The 256-bit helpers that the AVX-512 VNNI kernels of quants-vnni.c and
 * quants-avx512.c share: each file defines VNNI_TARGET as its own target
 * attribute before including this, so both keep their own code generation
 * and give the same bits as before. */

#ifndef VNNI_TARGET
#error "define VNNI_TARGET before including quants-vnni-inl.h"
#endif

static inline VNNI_TARGET float h2f(rbee_fp16 h) {
        return rbee_fp16_lut[h];
}

/* A hint only: never faults, so the address may lie past the data (it is
 * formed as an integer so that no out-of-bounds pointer is made). */
static inline VNNI_TARGET void prefetch_at(const void *p, size_t off) {
        _mm_prefetch((const char *) ((uintptr_t) p + off), _MM_HINT_T0);
}

static inline VNNI_TARGET float hsum_ps(__m256 v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
}

/* [d0 d0 d1 d1 | d0 d0 d1 d1]: the scale layout of a pair of blocks. */
static inline VNNI_TARGET __m256 two_scales(rbee_fp16 d0, rbee_fp16 d1) {
        return _mm256_blend_ps(_mm256_broadcast_ss(&rbee_fp16_lut[d0]), _mm256_broadcast_ss(&rbee_fp16_lut[d1]), 0xcc);
}

static inline VNNI_TARGET __m256i nibbles_32(const uint8_t *qs) {
        __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) qs));
        v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
        return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* Dwords 0 and 2 (lo) or 1 and 3 (hi) of each 128-bit half of b0, then of
 * b1: lane j of lo and lane j of hi are the two 4-byte halves of the 8
 * bytes whose sum is lane j of vphaddd(p(b0), p(b1)). */
static inline VNNI_TARGET __m256i pick_lo(__m256i b0, __m256i b1) {
        return _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(b0), _mm256_castsi256_ps(b1),
                                                     _MM_SHUFFLE(2, 0, 2, 0)));
}

static inline VNNI_TARGET __m256i pick_hi(__m256i b0, __m256i b1) {
        return _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(b0), _mm256_castsi256_ps(b1),
                                                     _MM_SHUFFLE(3, 1, 3, 1)));
}

/* The single-block tail, as quants-avx2.c does it: 8 lanes of 4 products. */
static inline VNNI_TARGET float tail_q4_0(const block_q4_0 *x, const block_q8_0 *y) {
        __m256i a = _mm256_loadu_si256((const __m256i *) y->qs);
        __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles_32(x->qs), a);
        p = _mm256_sub_epi32(p, _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(8), a));
        return hsum_ps(_mm256_cvtepi32_ps(p)) * (h2f(x->d) * h2f(y->d));
}

static inline VNNI_TARGET float tail_q8_0(const block_q8_0 *x, const block_q8_0 *y) {
        const __m256i flip = _mm256_set1_epi8((char) 0x80);
        __m256i w = _mm256_loadu_si256((const __m256i *) x->qs);
        __m256i au = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *) y->qs), flip);
        __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), au, w);
        p = _mm256_sub_epi32(p, _mm256_dpbusd_epi32(_mm256_setzero_si256(), flip, w));
        return hsum_ps(_mm256_cvtepi32_ps(p)) * (h2f(x->d) * h2f(y->d));
}

static inline VNNI_TARGET float hsum_ps128(__m128 s) {
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
}
