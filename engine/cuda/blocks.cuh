/* SPDX-License-Identifier: MIT */
#pragma once

/* Device-side decoding of the GGUF block formats, the same expressions as
 * the CPU dequantizers (quants-legacy.c, quants-k.c) so that a weight has
 * the same float value on both backends.
 *
 * Every type is cut into "chunks" of 4 or 8 values a thread decodes at once:
 * chunk j of a block yields v[0..3] at elements o0..o0+3 of the block and,
 * for RUNS == 2, v[4..7] at o1..o1+3. Runs of 4 contiguous elements let the
 * matching activations be read as one float4. Blocks only guarantee 2-byte
 * alignment (18, 22, 34 and 210 bytes long), hence the 16-bit loads.
 * The decoders also compile for the host, where selftest.cu checks them
 * against the CPU dequantizers on machines without a GPU. */

#include <cuda_fp16.h>
#include <stdint.h>

__host__ __device__ __forceinline__ uint32_t ld_u32(const uint8_t *p) {
        const uint16_t *h = (const uint16_t *) p;
        return (uint32_t) h[0] | ((uint32_t) h[1] << 16);
}

__host__ __device__ __forceinline__ float ld_f16(const uint8_t *p) {
        return __half2float(*(const __half *) p);
}

__host__ __device__ __forceinline__ float bf16_bits_to_f32(uint32_t h) {
#ifdef __CUDA_ARCH__
        return __uint_as_float(h << 16);
#else
        union { uint32_t u; float f; } v = { h << 16 };
        return v.f;
#endif
}

/* Rows of float types need K % 4 == 0 (checked at upload), which keeps F32
 * rows 16-byte and F16/BF16 rows 8-byte aligned. */
struct blk_f32 {
        static constexpr int QK = 4, BYTES = 16, CH = 1, RUNS = 1;
        __host__ __device__ static void deq(const uint8_t *b, int, float *v, int &o0, int &o1) {
                float4 f = *(const float4 *) b;
                v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
                o0 = 0, o1 = 0;
        }
};

struct blk_f16 {
        static constexpr int QK = 4, BYTES = 8, CH = 1, RUNS = 1;
        __host__ __device__ static void deq(const uint8_t *b, int, float *v, int &o0, int &o1) {
                const uint2 u = *(const uint2 *) b;
                v[0] = __half2float(__ushort_as_half((unsigned short) (u.x & 0xffff)));
                v[1] = __half2float(__ushort_as_half((unsigned short) (u.x >> 16)));
                v[2] = __half2float(__ushort_as_half((unsigned short) (u.y & 0xffff)));
                v[3] = __half2float(__ushort_as_half((unsigned short) (u.y >> 16)));
                o0 = 0, o1 = 0;
        }
};

struct blk_bf16 {
        static constexpr int QK = 4, BYTES = 8, CH = 1, RUNS = 1;
        __host__ __device__ static void deq(const uint8_t *b, int, float *v, int &o0, int &o1) {
                uint2 u = *(const uint2 *) b;
                v[0] = bf16_bits_to_f32(u.x & 0xffff), v[1] = bf16_bits_to_f32(u.x >> 16);
                v[2] = bf16_bits_to_f32(u.y & 0xffff), v[3] = bf16_bits_to_f32(u.y >> 16);
                o0 = 0, o1 = 0;
        }
};

/* d, qs[16]: low nibbles are elements 0-15, high nibbles 16-31. */
struct blk_q4_0 {
        static constexpr int QK = 32, BYTES = 18, CH = 4, RUNS = 2;
        __host__ __device__ static void deq(const uint8_t *b, int j, float *v, int &o0, int &o1) {
                const float d = ld_f16(b);
                const uint32_t q = ld_u32(b + 2 + 4 * j);
                for (int k = 0; k < 4; k++) {
                        v[k] = (float) ((int) ((q >> (8 * k)) & 15) - 8) * d;
                        v[k + 4] = (float) ((int) ((q >> (8 * k + 4)) & 15) - 8) * d;
                }
                o0 = 4 * j, o1 = 16 + 4 * j;
        }
};

struct blk_q4_1 {
        static constexpr int QK = 32, BYTES = 20, CH = 4, RUNS = 2;
        __host__ __device__ static void deq(const uint8_t *b, int j, float *v, int &o0, int &o1) {
                const float d = ld_f16(b), m = ld_f16(b + 2);
                const uint32_t q = ld_u32(b + 4 + 4 * j);
                for (int k = 0; k < 4; k++) {
                        v[k] = (float) ((q >> (8 * k)) & 15) * d + m;
                        v[k + 4] = (float) ((q >> (8 * k + 4)) & 15) * d + m;
                }
                o0 = 4 * j, o1 = 16 + 4 * j;
        }
};

/* d, qh (bit i = fifth bit of element i), qs[16]. */
struct blk_q5_0 {
        static constexpr int QK = 32, BYTES = 22, CH = 4, RUNS = 2;
        __host__ __device__ static void deq(const uint8_t *b, int j, float *v, int &o0, int &o1) {
                const float d = ld_f16(b);
                const uint32_t qh = ld_u32(b + 2), q = ld_u32(b + 6 + 4 * j);
                for (int k = 0; k < 4; k++) {
                        const int e = 4 * j + k;
                        const int lo = (int) (((q >> (8 * k)) & 15) | (((qh >> e) & 1) << 4));
                        const int hi = (int) (((q >> (8 * k + 4)) & 15) | (((qh >> (e + 16)) & 1) << 4));
                        v[k] = (float) (lo - 16) * d;
                        v[k + 4] = (float) (hi - 16) * d;
                }
                o0 = 4 * j, o1 = 16 + 4 * j;
        }
};

struct blk_q5_1 {
        static constexpr int QK = 32, BYTES = 24, CH = 4, RUNS = 2;
        __host__ __device__ static void deq(const uint8_t *b, int j, float *v, int &o0, int &o1) {
                const float d = ld_f16(b), m = ld_f16(b + 2);
                const uint32_t qh = ld_u32(b + 4), q = ld_u32(b + 8 + 4 * j);
                for (int k = 0; k < 4; k++) {
                        const int e = 4 * j + k;
                        const int lo = (int) (((q >> (8 * k)) & 15) | (((qh >> e) & 1) << 4));
                        const int hi = (int) (((q >> (8 * k + 4)) & 15) | (((qh >> (e + 16)) & 1) << 4));
                        v[k] = (float) lo * d + m;
                        v[k + 4] = (float) hi * d + m;
                }
                o0 = 4 * j, o1 = 16 + 4 * j;
        }
};

struct blk_q8_0 {
        static constexpr int QK = 32, BYTES = 34, CH = 4, RUNS = 2;
        __host__ __device__ static void deq(const uint8_t *b, int j, float *v, int &o0, int &o1) {
                const float d = ld_f16(b);
                const uint32_t q0 = ld_u32(b + 2 + 8 * j), q1 = ld_u32(b + 6 + 8 * j);
                for (int k = 0; k < 4; k++) {
                        v[k] = (float) (int8_t) (q0 >> (8 * k)) * d;
                        v[k + 4] = (float) (int8_t) (q1 >> (8 * k)) * d;
                }
                o0 = 8 * j, o1 = 8 * j + 4;
        }
};

/* Six-bit scale and min number j of a Q4_K/Q5_K block (k4_scale_min()). */
__host__ __device__ __forceinline__ void k4_scale_min(int j, const uint8_t *q, float &sc, float &m) {
        if (j < 4) {
                sc = (float) (q[j] & 63);
                m = (float) (q[j + 4] & 63);
        } else {
                sc = (float) ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
                m = (float) ((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
        }
}

/* d, dmin, scales[12], qs[128]: 64-element groups g, low nibbles of
 * qs[32g..32g+31] are elements 64g.., high nibbles 64g+32.. */
struct blk_q4_K {
        static constexpr int QK = 256, BYTES = 144, CH = 32, RUNS = 2;
        __host__ __device__ static void deq(const uint8_t *b, int c, float *v, int &o0, int &o1) {
                const int g = c >> 3, l0 = (c & 7) * 4;
                const float d = ld_f16(b), dmin = ld_f16(b + 2);
                float sc, m;
                k4_scale_min(2 * g, b + 4, sc, m);
                const float d1 = d * sc, m1 = dmin * m;
                k4_scale_min(2 * g + 1, b + 4, sc, m);
                const float d2 = d * sc, m2 = dmin * m;
                const uint32_t q = ld_u32(b + 16 + 32 * g + l0);
                for (int k = 0; k < 4; k++) {
                        v[k] = d1 * (float) ((q >> (8 * k)) & 15) - m1;
                        v[k + 4] = d2 * (float) ((q >> (8 * k + 4)) & 15) - m2;
                }
                o0 = 64 * g + l0, o1 = 64 * g + 32 + l0;
        }
};

/* As Q4_K with qh[32]: bit 2g of qh[l] tops element 64g+l, bit 2g+1 element 64g+32+l. */
struct blk_q5_K {
        static constexpr int QK = 256, BYTES = 176, CH = 32, RUNS = 2;
        __host__ __device__ static void deq(const uint8_t *b, int c, float *v, int &o0, int &o1) {
                const int g = c >> 3, l0 = (c & 7) * 4;
                const float d = ld_f16(b), dmin = ld_f16(b + 2);
                float sc, m;
                k4_scale_min(2 * g, b + 4, sc, m);
                const float d1 = d * sc, m1 = dmin * m;
                k4_scale_min(2 * g + 1, b + 4, sc, m);
                const float d2 = d * sc, m2 = dmin * m;
                const uint32_t qh = ld_u32(b + 16 + l0), q = ld_u32(b + 48 + 32 * g + l0);
                for (int k = 0; k < 4; k++) {
                        const uint32_t h = qh >> (8 * k);
                        v[k] = d1 * (float) (((q >> (8 * k)) & 15) | (((h >> (2 * g)) & 1) << 4)) - m1;
                        v[k + 4] = d2 * (float) (((q >> (8 * k + 4)) & 15) | (((h >> (2 * g + 1)) & 1) << 4)) - m2;
                }
                o0 = 64 * g + l0, o1 = 64 * g + 32 + l0;
        }
};

/* ql[128], qh[64], scales[16] (int8), d. Two 128-element halves h; within a
 * half, l in 0..31 gives elements l, l+32, l+64, l+96 from the nibbles of
 * ql[l], ql[l+32] and the bit pairs of qh[l]; sixteen-element groups have
 * their own scale. Chunk c: half c/16, pair sel (c/8)%2, four l's. */
struct blk_q6_K {
        static constexpr int QK = 256, BYTES = 210, CH = 32, RUNS = 2;
        __host__ __device__ static void deq(const uint8_t *b, int c, float *v, int &o0, int &o1) {
                const int h = c >> 4, sel = (c >> 3) & 1, l0 = (c & 7) * 4, g = l0 / 16;
                const float d = ld_f16(b + 208);
                const int8_t *sc = (const int8_t *) (b + 192 + 8 * h);
                const uint32_t qa = ld_u32(b + 64 * h + l0), qb = ld_u32(b + 64 * h + 32 + l0);
                const uint32_t qh = ld_u32(b + 128 + 32 * h + l0);
                const int sh = sel ? 4 : 0;
                const float s0 = d * (float) sc[g + 4 * sel], s1 = d * (float) sc[g + 2 + 4 * sel];
                for (int k = 0; k < 4; k++) {
                        const uint32_t hb = qh >> (8 * k);
                        const int q0 = (int) (((qa >> (8 * k + sh)) & 15) | (((hb >> (4 * sel)) & 3) << 4)) - 32;
                        const int q1 = (int) (((qb >> (8 * k + sh)) & 15) | (((hb >> (4 * sel + 2)) & 3) << 4)) - 32;
                        v[k] = s0 * (float) q0;
                        v[k + 4] = s1 * (float) q1;
                }
                o0 = 128 * h + 64 * sel + l0, o1 = o0 + 32;
        }
};

/* Calls f(blk{}) for a GGUF type number (a generic lambda takes the block
 * type from its argument); false for a type without a device decoder. */
template <typename F> __host__ bool dispatch_type(int type, F &&f) {
        switch (type) {
        case 0: f(blk_f32{}); return true;
        case 1: f(blk_f16{}); return true;
        case 2: f(blk_q4_0{}); return true;
        case 3: f(blk_q4_1{}); return true;
        case 6: f(blk_q5_0{}); return true;
        case 7: f(blk_q5_1{}); return true;
        case 8: f(blk_q8_0{}); return true;
        case 12: f(blk_q4_K{}); return true;
        case 13: f(blk_q5_K{}); return true;
        case 14: f(blk_q6_K{}); return true;
        case 30: f(blk_bf16{}); return true;
        default: return false;
        }
}
