// SPDX-License-Identifier: MIT
// CPU emulation of the CUDA kernels (see run.sh): one fiber per CUDA thread,
// the blocks of a launch in turn, __shared__ as statics (one block at a time).
#pragma once
#define __shared__ static
#define __launch_bounds__(...)
#include <cuda_runtime_api.h>
#include <cuda_fp16.h>
#include <math.h>
#include <string.h>
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
#include <stdint.h>
#include <algorithm>
#include <functional>
using std::min;
using std::max;

struct emu_fiber_pub { uint3 tid; };
extern emu_fiber_pub *emu_cur_pub;
extern uint3 emu_block_idx;
extern dim3 emu_block_dim, emu_grid_dim;
#define threadIdx (emu_cur_pub->tid)
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
#define gridDim emu_grid_dim

void emu_syncthreads();
float emu_shfl_xor(float v, int o);
unsigned long long emu_shfl_xor(unsigned long long v, int o);
#define __syncthreads() emu_syncthreads()
#define __shfl_xor_sync(mask, v, o) emu_shfl_xor((v), (o))
void emu_launch(dim3 grid, dim3 block, cudaStream_t s, std::function<void()> fn);
