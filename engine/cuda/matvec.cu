/* SPDX-License-Identifier: MIT */
/* Quantized matrix-vector products (generation, small batches), weight
 * decoding to F16 tiles (prompt processing through cuBLAS) and the embedding
 * lookup, for every block type in blocks.cuh.
 *
 * Mat-vec: one warp per weight row. Lanes walk the row's chunks so that the
 * 32 lanes of a warp read neighbouring bytes; each decoded chunk is
 * multiplied with up to NT activation rows (read as float4 from L1/L2, where
 * the small activation vectors stay) and the warp sums by shuffles. Batch 1
 * is bound by the bytes of weights read, so the kernel reads every weight
 * byte exactly once per launch. */

#include "blocks.cuh"
#include "kernels.h"

#define MV_WARPS 4

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
        return v;
}

template <typename T, int NT>
__global__ void __launch_bounds__(32 * MV_WARPS)
matvec_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int rows, int K, const float *__restrict__ x, int ldx,
              float *__restrict__ y, int ldy, const float *__restrict__ bias, bool accumulate) {
        const int row = blockIdx.x * MV_WARPS + threadIdx.y, lane = threadIdx.x;

        if (row >= rows)
                return;
        const uint8_t *wr = w + (size_t) row * row_bytes;
        const int nch = K / T::QK * T::CH;
        float acc[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
                acc[t] = 0.f;

#pragma unroll 4
        for (int c = lane; c < nch; c += 32) {
                const int blk = c / T::CH, j = c % T::CH;
                float v[8];
                int o0, o1;
                T::deq(wr + (size_t) blk * T::BYTES, j, v, o0, o1);
                const float *xb = x + blk * T::QK;
#pragma unroll
                for (int t = 0; t < NT; t++) {
                        const float4 a = *(const float4 *) (xb + (size_t) t * ldx + o0);
                        float s = v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w;
                        if (T::RUNS == 2) {
                                const float4 e = *(const float4 *) (xb + (size_t) t * ldx + o1);
                                s += v[4] * e.x + v[5] * e.y + v[6] * e.z + v[7] * e.w;
                        }
                        acc[t] += s;
                }
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
                const float s = warp_sum(acc[t]);
                if (lane == 0) {
                        float *out = y + (size_t) t * ldy + row;
                        float r = s + (bias ? bias[row] : 0.f);
                        *out = accumulate ? *out + r : r;
                }
        }
}

template <typename T>
__global__ void dequant_f16_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int K, __half *__restrict__ dst) {
        const int row = blockIdx.y, nch = K / T::QK * T::CH;
        const int c = blockIdx.x * blockDim.x + threadIdx.x;

        if (c >= nch)
                return;
        const int blk = c / T::CH, j = c % T::CH;
        float v[8];
        int o0, o1;
        T::deq(w + (size_t) row * row_bytes + (size_t) blk * T::BYTES, j, v, o0, o1);
        __half *o = dst + (size_t) row * K + blk * T::QK;
#pragma unroll
        for (int k = 0; k < 4; k++)
                o[o0 + k] = __float2half(v[k]);
        if (T::RUNS == 2)
#pragma unroll
                for (int k = 0; k < 4; k++)
                        o[o1 + k] = __float2half(v[4 + k]);
}

template <typename T>
__global__ void get_rows_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int K, const int32_t *__restrict__ tokens,
                                float *__restrict__ out) {
        const int b = blockIdx.y, nch = K / T::QK * T::CH;
        const int c = blockIdx.x * blockDim.x + threadIdx.x;

        if (c >= nch)
                return;
        const int blk = c / T::CH, j = c % T::CH;
        float v[8];
        int o0, o1;
        T::deq(w + (size_t) tokens[b] * row_bytes + (size_t) blk * T::BYTES, j, v, o0, o1);
        float *o = out + (size_t) b * K + blk * T::QK;
#pragma unroll
        for (int k = 0; k < 4; k++)
                o[o0 + k] = v[k];
        if (T::RUNS == 2)
#pragma unroll
                for (int k = 0; k < 4; k++)
                        o[o1 + k] = v[4 + k];
}

template <typename T, int NT>
static void launch_matvec(cudaStream_t s, const void *w, size_t row_bytes, int rows, int K, const float *x, int ldx,
                          float *y, int ldy, const float *bias, bool accumulate) {
        const dim3 block(32, MV_WARPS), grid((rows + MV_WARPS - 1) / MV_WARPS);
        matvec_kernel<T, NT><<<grid, block, 0, s>>>((const uint8_t *) w, row_bytes, rows, K, x, ldx, y, ldy, bias,
                                                     accumulate);
}

extern "C" bool rbee_cu_type_supported(int type, int64_t K) {
        int qk = 0;
        bool ok = dispatch_type(type, [&](auto blk) { qk = decltype(blk)::QK; });
        return ok && K > 0 && K % qk == 0 && K <= INT32_MAX / 2;
}

extern "C" cudaError_t rbee_cu_matvec(cudaStream_t s, int type, const void *w, size_t row_bytes, int rows, int K,
                                      const float *x, int ldx, int B, float *y, int ldy, const float *bias,
                                      bool accumulate) {
        /* Batches go by 8, 4, 2, 1 tokens: every launch reads the weights
         * once, whatever its batch. */
        while (B > 0) {
                const int nt = B >= 8 ? 8 : B >= 4 ? 4 : B >= 2 ? 2 : 1;
                const bool ok = dispatch_type(type, [&](auto blk) {
                        using T = decltype(blk);
                        switch (nt) {
                        case 8: launch_matvec<T, 8>(s, w, row_bytes, rows, K, x, ldx, y, ldy, bias, accumulate); break;
                        case 4: launch_matvec<T, 4>(s, w, row_bytes, rows, K, x, ldx, y, ldy, bias, accumulate); break;
                        case 2: launch_matvec<T, 2>(s, w, row_bytes, rows, K, x, ldx, y, ldy, bias, accumulate); break;
                        default: launch_matvec<T, 1>(s, w, row_bytes, rows, K, x, ldx, y, ldy, bias, accumulate); break;
                        }
                });
                if (!ok)
                        return cudaErrorInvalidValue;
                x += (size_t) nt * ldx;
                y += (size_t) nt * ldy;
                B -= nt;
        }
        return cudaGetLastError();
}

extern "C" cudaError_t rbee_cu_dequant_f16(cudaStream_t s, int type, const void *w, size_t row_bytes, int rows, int K,
                                           void *dst) {
        const bool ok = dispatch_type(type, [&](auto blk) {
                using T = decltype(blk);
                const int nch = K / T::QK * T::CH;
                const dim3 grid((nch + 127) / 128, rows);
                dequant_f16_kernel<T><<<grid, 128, 0, s>>>((const uint8_t *) w, row_bytes, K, (__half *) dst);
        });
        return ok ? cudaGetLastError() : cudaErrorInvalidValue;
}

extern "C" cudaError_t rbee_cu_get_rows(cudaStream_t s, int type, const void *w, size_t row_bytes, int K,
                                        const int32_t *tokens, int B, float *out) {
        const bool ok = dispatch_type(type, [&](auto blk) {
                using T = decltype(blk);
                const int nch = K / T::QK * T::CH;
                const dim3 grid((nch + 127) / 128, B);
                get_rows_kernel<T><<<grid, 128, 0, s>>>((const uint8_t *) w, row_bytes, K, tokens, out);
        });
        return ok ? cudaGetLastError() : cudaErrorInvalidValue;
}
