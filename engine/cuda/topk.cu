/* SPDX-License-Identifier: MIT */
/* The first k candidates of the logits, selected where they are computed so
 * that a sampler that needs no more (greedy, top_k without penalties) gets
 * k (logit, id) pairs over the bus instead of the whole vocabulary.
 *
 * Candidates are 64-bit keys (kernels.h) whose integer order is the
 * sampler's candidate order, ties included, so a selection is a max over
 * integers. Each block takes a slice of the inputs (a few per thread, in
 * registers) and emits its first k by k rounds of a block-wide max, the
 * winner's owner dropping it and rescanning its own keys; the blocks'
 * outputs are selected again the same way, with more keys per thread, until
 * one block is left: two stages up to 262144 tokens. The cost is k rounds of
 * a block reduction per stage, not measured on a GPU yet; the code stays
 * simple enough to check under the emulator. */

#include "kernels.h"

#define TOPK_THREADS 256
/* Inputs per thread: logits (many blocks share the first stage), then keys
 * (one block should take all the first stage's outputs). */
#define TOPK_PER_THREAD_LOGITS 8
#define TOPK_PER_THREAD_KEYS 32

typedef uint64_t u64;

__device__ __forceinline__ u64 warp_max_u64(u64 v) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
                const u64 x = __shfl_xor_sync(0xffffffffu, (unsigned long long) v, o);
                v = x > v ? x : v;
        }
        return v;
}

/* Every thread of the block calls it and gets the max; red holds a u64 per warp. */
__device__ u64 block_max_u64(u64 v, u64 *red) {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

        v = warp_max_u64(v);
        __syncthreads(); /* the previous round has read red */
        if (lane == 0)
                red[warp] = v;
        __syncthreads();
        v = lane < TOPK_THREADS / 32 ? red[lane] : 0;
        return warp_max_u64(v);
}

/* KEYS: the input is the keys of a previous stage; else logits, whose ids
 * are their indices. Each block takes TOPK_THREADS * PER inputs. */
template <bool KEYS, int PER>
__global__ void __launch_bounds__(TOPK_THREADS)
topk_kernel(const void *__restrict__ in, int n, const int32_t *__restrict__ d_k, u64 *__restrict__ out) {
        __shared__ u64 red[TOPK_THREADS / 32];
        const int k = min(*d_k, RBEE_CU_TOPK_MAX), tid = threadIdx.x, base = blockIdx.x * TOPK_THREADS * PER;
        u64 *o = out + (size_t) blockIdx.x * RBEE_CU_TOPK_MAX;
        u64 key[PER], best = 0;

        if (k <= 0)
                return; /* the whole block leaves: no barrier is skipped */
        /* Loops over key[] are unrolled with constant indices, so that the
         * keys stay in registers. */
#pragma unroll
        for (int j = 0; j < PER; j++) {
                const int i = base + j * TOPK_THREADS + tid;
                key[j] = 0;
                if (i < n)
                        key[j] = KEYS ? ((const u64 *) in)[i]
                                      : rbee_cu_topk_key(__float_as_uint(((const float *) in)[i]), i);
                best = key[j] > best ? key[j] : best;
        }
        for (int r = 0; r < k; r++) {
                const u64 w = block_max_u64(best, red);
                if (tid == 0)
                        o[r] = w;
                /* Keys are unique (ids are), so one thread owns the winner. */
                if (w != 0 && best == w) {
                        best = 0;
#pragma unroll
                        for (int j = 0; j < PER; j++) {
                                key[j] = key[j] == w ? 0 : key[j];
                                best = key[j] > best ? key[j] : best;
                        }
                }
        }
        for (int r = k + tid; r < RBEE_CU_TOPK_MAX; r += TOPK_THREADS)
                o[r] = 0;
}

static int blocks_for(size_t n, bool keys) {
        const size_t slice = (size_t) TOPK_THREADS * (keys ? TOPK_PER_THREAD_KEYS : TOPK_PER_THREAD_LOGITS);
        return (int) ((n + slice - 1) / slice);
}

/* Stages until one block is left: the first over n logits, each next one
 * over RBEE_CU_TOPK_MAX keys per block of the one before. Outputs alternate
 * between scratch[0, a) and scratch[a, a + b), a and b the first two outputs
 * (each stage is at least 32 times smaller than the one before). */
extern "C" size_t rbee_cu_topk_scratch(int n) {
        const int nb0 = blocks_for((size_t) n, false);
        const size_t a = nb0 > 1 ? (size_t) nb0 * RBEE_CU_TOPK_MAX : 0;
        const size_t b = a && blocks_for(a, true) > 1 ? (size_t) blocks_for(a, true) * RBEE_CU_TOPK_MAX : 0;
        return a + b;
}

extern "C" cudaError_t rbee_cu_topk(cudaStream_t s, const float *logits, int n, const int32_t *d_k,
                                    uint64_t *scratch, uint64_t *out) {
        const size_t a = (size_t) blocks_for((size_t) n, false) * RBEE_CU_TOPK_MAX;
        const void *in = logits;
        size_t len = (size_t) n;
        bool keys = false;

        for (int stage = 0;; stage++) {
                const int nb = blocks_for(len, keys);
                u64 *dst = nb == 1 ? out : scratch + (stage % 2 ? a : 0);
                if (keys)
                        topk_kernel<true, TOPK_PER_THREAD_KEYS><<<nb, TOPK_THREADS, 0, s>>>(in, (int) len, d_k, dst);
                else
                        topk_kernel<false, TOPK_PER_THREAD_LOGITS><<<nb, TOPK_THREADS, 0, s>>>(in, (int) len, d_k,
                                                                                               dst);
                if (nb == 1)
                        break;
                in = dst;
                len = (size_t) nb * RBEE_CU_TOPK_MAX;
                keys = true;
        }
        return cudaGetLastError();
}
