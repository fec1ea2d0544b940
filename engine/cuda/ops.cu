/* SPDX-License-Identifier: MIT */
/* The element-wise and attention kernels of the forward pass. Float
 * expressions follow engine/forward.c (expf, sincosf and 1/sqrtf, never the
 * fast intrinsics) so that the two backends differ by summation order and
 * the F16 KV cache only. */

#include <cuda_fp16.h>
#include <math_constants.h>

#include "kernels.h"

#define ATT_THREADS 128

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
        return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
                v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        return v;
}

/* Every thread of the block must call these; red holds 32 floats. */
__device__ float block_sum(float v, float *red) {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;

        v = warp_sum(v);
        __syncthreads();
        if (lane == 0)
                red[warp] = v;
        __syncthreads();
        v = lane < nw ? red[lane] : 0.f;
        return warp_sum(v);
}

__device__ float block_max(float v, float *red) {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;

        v = warp_max(v);
        __syncthreads();
        if (lane == 0)
                red[warp] = v;
        __syncthreads();
        v = lane < nw ? red[lane] : -CUDART_INF_F;
        return warp_max(v);
}

__global__ void rmsnorm_kernel(const float *__restrict__ x, const float *__restrict__ w, float *__restrict__ out, int n,
                               float eps) {
        __shared__ float red[32];
        const float *xr = x + (size_t) blockIdx.x * n;
        float *o = out + (size_t) blockIdx.x * n;
        float ss = 0.f;

        for (int i = threadIdx.x; i < n; i += blockDim.x)
                ss += xr[i] * xr[i];
        ss = block_sum(ss, red) / (float) n + eps;
        const float scale = 1.0f / sqrtf(ss);
        for (int i = threadIdx.x; i < n; i += blockDim.x)
                o[i] = xr[i] * scale * w[i];
}

extern "C" cudaError_t rbee_cu_rmsnorm(cudaStream_t s, const float *x, const float *w, float *out, int n, int B,
                                       float eps) {
        rmsnorm_kernel<<<B, 256, 0, s>>>(x, w, out, n, eps);
        return cudaGetLastError();
}

__global__ void rope_store_kernel(struct rbee_cu_layout p, float *__restrict__ qkv, int ldq,
                                  const int32_t *__restrict__ d_pos, __half *__restrict__ kc,
                                  __half *__restrict__ vc) {
        const int b = blockIdx.x, pos = *d_pos + b, hd = p.head_dim, half = p.n_rot / 2;
        const int nh = p.n_head, nkv = p.n_head_kv, kvd = nkv * hd;
        float *qr = qkv + (size_t) b * ldq, *kr = qr + nh * hd, *vr = kr + kvd;
        __half *kd = kc + (size_t) pos * kvd, *vd = vc + (size_t) pos * kvd;
        const float fp = (float) pos * p.freq_scale;

        for (int i = threadIdx.x; i < (nh + nkv) * half; i += blockDim.x) {
                const int h = i / half, j = i % half;
                const int i0 = p.neox ? j : 2 * j, i1 = p.neox ? j + half : 2 * j + 1;
                float sn, cs;
                sincosf(fp * p.inv_freq[j], &sn, &cs);
                cs *= p.attn_factor;
                sn *= p.attn_factor;
                float *v = h < nh ? qr + h * hd : kr + (h - nh) * hd;
                const float x0 = v[i0], x1 = v[i1];
                const float y0 = x0 * cs - x1 * sn, y1 = x0 * sn + x1 * cs;
                if (h < nh) {
                        v[i0] = y0;
                        v[i1] = y1;
                } else {
                        kd[(h - nh) * hd + i0] = __float2half(y0);
                        kd[(h - nh) * hd + i1] = __float2half(y1);
                }
        }
        /* Dimensions past n_rot are not rotated. */
        const int rest = hd - p.n_rot;
        for (int i = threadIdx.x; i < nkv * rest; i += blockDim.x) {
                const int h = i / rest, d = p.n_rot + i % rest;
                kd[h * hd + d] = __float2half(kr[h * hd + d]);
        }
        for (int i = threadIdx.x; i < kvd; i += blockDim.x)
                vd[i] = __float2half(vr[i]);
}

extern "C" cudaError_t rbee_cu_rope_store(cudaStream_t s, const struct rbee_cu_layout *p, float *qkv, int ldq, int B,
                                          const int32_t *d_pos, void *k_cache, void *v_cache) {
        rope_store_kernel<<<B, 256, 0, s>>>(*p, qkv, ldq, d_pos, (__half *) k_cache, (__half *) v_cache);
        return cudaGetLastError();
}

/* One block per (head, split, query token). Keys go by RBEE_CU_ATT_CHUNK:
 * scores of a chunk into shared memory (a warp per key), then an online
 * softmax update of the running max, sum and output (a thread per output
 * dimension, two when head_dim > ATT_THREADS). SPLIT: this block covers one
 * chunk and leaves its unnormalized output, max and sum in part for
 * attn_combine_kernel (flash-decoding); otherwise it covers every key of
 * its query and writes the result. */
template <bool SPLIT>
__global__ void __launch_bounds__(ATT_THREADS)
attn_kernel(struct rbee_cu_layout p, const float *__restrict__ q, int ldq, const int32_t *__restrict__ d_pos,
            const __half *__restrict__ kc, const __half *__restrict__ vc, float *__restrict__ out,
            float *__restrict__ part) {
        __shared__ float sq[RBEE_CU_MAX_HEAD_DIM], ss[RBEE_CU_ATT_CHUNK], red[32];
        const int h = blockIdx.x, split = blockIdx.y, b = blockIdx.z;
        const int hd = p.head_dim, kvd = p.n_head_kv * hd, kvh = h / (p.n_head / p.n_head_kv);
        const int n = *d_pos + b + 1;
        const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, nw = ATT_THREADS / 32;
        const float scale = 1.0f / sqrtf((float) hd);
        int t_begin = 0, t_end = n;

        if (SPLIT) {
                t_begin = split * RBEE_CU_ATT_CHUNK;
                if (t_begin >= n)
                        return; /* the whole block leaves: no barrier is skipped */
                t_end = min(n, t_begin + RBEE_CU_ATT_CHUNK);
        }
        for (int i = tid; i < hd; i += ATT_THREADS)
                sq[i] = q[(size_t) b * ldq + h * hd + i];
        __syncthreads();

        const __half *kb = kc + kvh * hd, *vb = vc + kvh * hd;
        float M = -CUDART_INF_F, L = 0.f, acc0 = 0.f, acc1 = 0.f;
        for (int t0 = t_begin; t0 < t_end; t0 += RBEE_CU_ATT_CHUNK) {
                const int nt = min(RBEE_CU_ATT_CHUNK, t_end - t0);
                for (int t = warp; t < nt; t += nw) {
                        const __half *k = kb + (size_t) (t0 + t) * kvd;
                        float d = 0.f;
                        for (int i = lane; i < hd; i += 32)
                                d += sq[i] * __half2float(k[i]);
                        d = warp_sum(d);
                        if (lane == 0)
                                ss[t] = d * scale;
                }
                __syncthreads();
                float mx = -CUDART_INF_F;
                for (int t = tid; t < nt; t += ATT_THREADS)
                        mx = fmaxf(mx, ss[t]);
                const float Mn = fmaxf(M, block_max(mx, red));
                const float corr = expf(M - Mn); /* 0 on the first chunk */
                float ls = 0.f;
                for (int t = tid; t < nt; t += ATT_THREADS) {
                        ss[t] = expf(ss[t] - Mn);
                        ls += ss[t];
                }
                ls = block_sum(ls, red); /* its barriers also publish ss */
                L = L * corr + ls;
                acc0 *= corr;
                acc1 *= corr;
                for (int t = 0; t < nt; t++) {
                        const __half *v = vb + (size_t) (t0 + t) * kvd;
                        const float pt = ss[t];
                        if (tid < hd)
                                acc0 += pt * __half2float(v[tid]);
                        if (tid + ATT_THREADS < hd)
                                acc1 += pt * __half2float(v[tid + ATT_THREADS]);
                }
                M = Mn;
                __syncthreads(); /* ss is rewritten by the next chunk */
        }
        if (SPLIT) {
                float *pp = part + ((size_t) h * p.max_splits + split) * (hd + 2);
                if (tid < hd)
                        pp[tid] = acc0;
                if (tid + ATT_THREADS < hd)
                        pp[tid + ATT_THREADS] = acc1;
                if (tid == 0) {
                        pp[hd] = M;
                        pp[hd + 1] = L;
                }
        } else {
                float *o = out + (size_t) b * p.n_head * hd + h * hd;
                if (tid < hd)
                        o[tid] = acc0 / L;
                if (tid + ATT_THREADS < hd)
                        o[tid + ATT_THREADS] = acc1 / L;
        }
}

__global__ void attn_combine_kernel(struct rbee_cu_layout p, const int32_t *__restrict__ d_pos,
                                    const float *__restrict__ part, float *__restrict__ out) {
        const int h = blockIdx.x, hd = p.head_dim;
        const int ns = (*d_pos + 1 + RBEE_CU_ATT_CHUNK - 1) / RBEE_CU_ATT_CHUNK;
        const float *pp = part + (size_t) h * p.max_splits * (hd + 2);
        float M = -CUDART_INF_F;

        for (int s = 0; s < ns; s++)
                M = fmaxf(M, pp[(size_t) s * (hd + 2) + hd]);
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
                float o = 0.f, l = 0.f;
                for (int s = 0; s < ns; s++) {
                        const float *ps = pp + (size_t) s * (hd + 2);
                        const float f = expf(ps[hd] - M);
                        o += f * ps[d];
                        l += f * ps[hd + 1];
                }
                out[h * hd + d] = o / l;
        }
}

extern "C" cudaError_t rbee_cu_attention(cudaStream_t s, const struct rbee_cu_layout *p, const float *q, int ldq,
                                         int B, const int32_t *d_pos, const void *k_cache, const void *v_cache,
                                         float *out, float *part) {
        const __half *kc = (const __half *) k_cache, *vc = (const __half *) v_cache;

        if (B == 1) {
                attn_kernel<true><<<dim3(p->n_head, p->max_splits, 1), ATT_THREADS, 0, s>>>(*p, q, ldq, d_pos, kc, vc,
                                                                                          out, part);
                attn_combine_kernel<<<p->n_head, 128, 0, s>>>(*p, d_pos, part, out);
        } else
                attn_kernel<false><<<dim3(p->n_head, 1, B), ATT_THREADS, 0, s>>>(*p, q, ldq, d_pos, kc, vc, out,
                                                                               part);
        return cudaGetLastError();
}

__global__ void swiglu_kernel(const float *__restrict__ gu, int F, float *__restrict__ out) {
        const int b = blockIdx.y;
        const float *g = gu + (size_t) b * 2 * F, *u = g + F;

        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < F; j += gridDim.x * blockDim.x) {
                const float x = g[j];
                out[(size_t) b * F + j] = x / (1.0f + expf(-x)) * u[j];
        }
}

extern "C" cudaError_t rbee_cu_swiglu(cudaStream_t s, const float *gu, int F, int B, float *out) {
        swiglu_kernel<<<dim3((F + 255) / 256, B), 256, 0, s>>>(gu, F, out);
        return cudaGetLastError();
}

__global__ void f32_to_f16_kernel(const float *__restrict__ x, size_t n, __half *__restrict__ out) {
        for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t) gridDim.x * blockDim.x)
                out[i] = __float2half(x[i]);
}

extern "C" cudaError_t rbee_cu_f32_to_f16(cudaStream_t s, const float *x, size_t n, void *out) {
        const size_t blocks = (n + 255) / 256;
        f32_to_f16_kernel<<<(unsigned) (blocks < 65535 ? blocks : 65535), 256, 0, s>>>(x, n, (__half *) out);
        return cudaGetLastError();
}

__global__ void add_bias_kernel(float *__restrict__ y, int ldy, const float *__restrict__ bias, int rows) {
        const int b = blockIdx.y;

        for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x)
                y[(size_t) b * ldy + r] += bias[r];
}

extern "C" cudaError_t rbee_cu_add_bias(cudaStream_t s, float *y, int ldy, const float *bias, int rows, int B) {
        add_bias_kernel<<<dim3((rows + 255) / 256, B), 256, 0, s>>>(y, ldy, bias, rows);
        return cudaGetLastError();
}
