// SPDX-License-Identifier: MIT
// The emulator: a fiber scheduler with block barriers and warp shuffles, a
// fake CUDA runtime (host memory, synchronous streams, graphs that record and
// replay launches with their arguments copied at capture, as CUDA does) and a
// naive cuBLAS GemmEx. Only for checking logic on machines without a GPU.
#include "emu.h"
#include <ucontext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <vector>
#include <cublas_api.h>

extern "C" {
#include "backend.h"
/* internal.h's struct, spelled without __typeof__ (C++ overloads cublasGemmEx) */
struct rbee_cublas { void *create, *destroy, *set_stream, *gemm_ex; };
int rbee_cu_errno(cudaError_t e);
const struct rbee_cublas *rbee_cublas(void);
}

emu_fiber_pub *emu_cur_pub;
uint3 emu_block_idx;
dim3 emu_block_dim, emu_grid_dim;

enum { RUN, BARRIER, SHFL, DONE };
struct fiber {
        emu_fiber_pub pub;
        ucontext_t ctx;
        int state, warp, lane;
};
struct warp_state {
        float slot[2][32];
        unsigned long long slot64[2][32];
        unsigned gen;
        int arrived;
};
static ucontext_t sched;
static std::vector<fiber> fibers;
static std::vector<char *> stacks;
static std::vector<warp_state> warps;
static fiber *cur;
static std::function<void()> *kfn;
static const size_t STACK = 256 * 1024;

static void entry() {
        (*kfn)();
        cur->state = DONE;
}

void emu_syncthreads() {
        cur->state = BARRIER;
        swapcontext(&cur->ctx, &sched);
}

float emu_shfl_xor(float v, int o) {
        warp_state &w = warps[cur->warp];
        int b = w.gen & 1, lane = cur->lane;
        w.slot[b][lane] = v;
        w.arrived++;
        cur->state = SHFL;
        swapcontext(&cur->ctx, &sched);
        return w.slot[b][lane ^ o];
}

unsigned long long emu_shfl_xor(unsigned long long v, int o) {
        warp_state &w = warps[cur->warp];
        int b = w.gen & 1, lane = cur->lane;
        w.slot64[b][lane] = v;
        w.arrived++;
        cur->state = SHFL;
        swapcontext(&cur->ctx, &sched);
        return w.slot64[b][lane ^ o];
}

static void run_block(int n) {
        for (int i = 0; i < n; i++) {
                fiber &f = fibers[i];
                f.state = RUN;
                getcontext(&f.ctx);
                f.ctx.uc_stack.ss_sp = stacks[i];
                f.ctx.uc_stack.ss_size = STACK;
                f.ctx.uc_link = &sched;
                makecontext(&f.ctx, entry, 0);
        }
        int nw = (n + 31) / 32;
        for (int w = 0; w < nw; w++)
                warps[w].arrived = 0, warps[w].gen = 0;
        for (;;) {
                for (int i = 0; i < n; i++)
                        if (fibers[i].state == RUN) {
                                cur = &fibers[i];
                                emu_cur_pub = &cur->pub;
                                swapcontext(&sched, &cur->ctx);
                        }
                int live = 0, barrier = 0;
                for (int i = 0; i < n; i++) {
                        live += fibers[i].state != DONE;
                        barrier += fibers[i].state == BARRIER;
                }
                if (live == 0)
                        return;
                bool released = false;
                if (barrier == live) {
                        for (int i = 0; i < n; i++)
                                if (fibers[i].state == BARRIER)
                                        fibers[i].state = RUN;
                        released = true;
                }
                for (int w = 0; w < nw; w++) {
                        int lv = 0, sh = 0;
                        for (int i = w * 32; i < std::min(n, w * 32 + 32); i++) {
                                lv += fibers[i].state != DONE;
                                sh += fibers[i].state == SHFL;
                        }
                        if (sh > 0 && sh == lv) {
                                if (lv != 32) {
                                        fprintf(stderr, "emu: shuffle with %d live lanes\n", lv);
                                        abort();
                                }
                                for (int i = w * 32; i < w * 32 + 32; i++)
                                        fibers[i].state = RUN;
                                warps[w].arrived = 0;
                                warps[w].gen++;
                                released = true;
                        }
                }
                if (!released) {
                        bool any = false;
                        for (int i = 0; i < n; i++)
                                any |= fibers[i].state == RUN;
                        if (!any) {
                                fprintf(stderr, "emu: deadlock (live %d, at barrier %d)\n", live, barrier);
                                abort();
                        }
                }
        }
}

struct graph {
        std::vector<std::function<void()>> nodes;
        std::vector<std::pair<dim3, dim3>> cfg;
};
static graph *capturing;

static void exec(dim3 grid, dim3 block, std::function<void()> &fn) {
        int n = block.x * block.y * block.z;
        if (n > 1024 || n <= 0) {
                fprintf(stderr, "emu: bad block size %d\n", n);
                abort();
        }
        if (grid.y > 65535 || grid.z > 65535) {
                fprintf(stderr, "emu: grid too large %u %u\n", grid.y, grid.z);
                abort();
        }
        if ((int) fibers.size() < n) {
                fibers.resize(n);
                while ((int) stacks.size() < n)
                        stacks.push_back((char *) malloc(STACK));
                warps.resize((n + 31) / 32);
        }
        for (int i = 0; i < n; i++) {
                fibers[i].pub.tid = make_uint3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
                fibers[i].warp = i / 32;
                fibers[i].lane = i % 32;
        }
        emu_block_dim = block;
        emu_grid_dim = grid;
        kfn = &fn;
        for (unsigned z = 0; z < grid.z; z++)
                for (unsigned y = 0; y < grid.y; y++)
                        for (unsigned x = 0; x < grid.x; x++) {
                                emu_block_idx = make_uint3(x, y, z);
                                run_block(n);
                        }
}

void emu_launch(dim3 grid, dim3 block, cudaStream_t s, std::function<void()> fn) {
        if (capturing) {
                capturing->nodes.push_back(fn);
                capturing->cfg.push_back({ grid, block });
                return;
        }
        exec(grid, block, fn);
}

/* ------------------------------------------------------------ runtime */
extern "C" {
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) {
        const char *lim = getenv("EMU_VRAM_MIB");
        *t = (lim ? strtoull(lim, NULL, 10) : 8192) << 20;
        *f = *t;
        return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) {
        *p = NULL;
        /* poison so that reads of unwritten memory show */
        void *q = aligned_alloc(256, (n + 255) / 256 * 256);
        if (!q) return cudaErrorMemoryAllocation;
        memset(q, 0xff, n);
        *p = q;
        return cudaSuccess;
}
cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMallocHost(void **p, size_t n) { return cudaMalloc(p, n); }
cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind) { memcpy(d, s, n); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind, cudaStream_t) {
        if (capturing) abort();
        memcpy(d, s, n);
        return cudaSuccess;
}
cudaError_t cudaMemset(void *d, int v, size_t n) { memset(d, v, n); return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int) { *s = (cudaStream_t) malloc(8); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { free(s); return cudaSuccess; }
cudaError_t cudaStreamBeginCapture(cudaStream_t, enum cudaStreamCaptureMode) {
        if (getenv("EMU_NO_GRAPH")) return cudaErrorNotSupported;
        capturing = new graph;
        return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) {
        *g = (cudaGraph_t) capturing;
        capturing = NULL;
        return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) {
        graph *src = (graph *) g;
        *e = (cudaGraphExec_t) new graph(*src);
        return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete (graph *) g; return cudaSuccess; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t g) { delete (graph *) g; return cudaSuccess; }
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
        graph *g = (graph *) e;
        static int launches;
        if (getenv("EMU_VERBOSE")) fprintf(stderr, "emu: graph launch %d (%zu nodes)\n", ++launches, g->nodes.size());
        for (size_t i = 0; i < g->nodes.size(); i++)
                exec(g->cfg[i].first, g->cfg[i].second, g->nodes[i]);
        return cudaSuccess;
}
}

/* ------------------------------------------------------------ device.c */
int rbee_cu_errno(cudaError_t e) { return e == cudaSuccess ? 0 : e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO; }
extern "C" int rbee_cuda_device_count(void) { return 1; }
extern "C" int rbee_cuda_device_info(int device, struct rbee_gpu_info *ret) {
        if (device != 0) return -ENODEV;
        memset(ret, 0, sizeof(*ret));
        strcpy(ret->name, "emulated");
        ret->total_bytes = 8ull << 30;
        return 0;
}

static float h2f(const void *p, size_t i) { return __half2float(((const __half *) p)[i]); }
static cublasStatus_t f_create(cublasHandle_t *h) { *h = (cublasHandle_t) malloc(8); return CUBLAS_STATUS_SUCCESS; }
static cublasStatus_t f_destroy(cublasHandle_t h) { free(h); return CUBLAS_STATUS_SUCCESS; }
static cublasStatus_t f_set_stream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
int emu_gemm_calls;
static cublasStatus_t f_gemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                             const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                             int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t,
                             cublasGemmAlgo_t) {
        if (capturing) abort();
        emu_gemm_calls++;
        if (ct != CUDA_R_32F || at != bt || tb != CUBLAS_OP_N) abort();
        const float a = *(const float *) alpha, b = *(const float *) beta;
        float *c = (float *) C;
        for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) {
                        double s = 0;
                        for (int l = 0; l < k; l++) {
                                /* op(A)(i,l): A^T -> A(l,i) at i*lda + l; N -> A(i,l) at l*lda + i */
                                size_t ai = ta == CUBLAS_OP_T ? (size_t) i * lda + l : (size_t) l * lda + i;
                                size_t bi = (size_t) j * ldb + l;
                                float av = at == CUDA_R_16F ? h2f(A, ai) : ((const float *) A)[ai];
                                float bv = bt == CUDA_R_16F ? h2f(B, bi) : ((const float *) B)[bi];
                                s += (double) av * bv;
                        }
                        float *o = c + (size_t) j * ldc + i;
                        *o = (float) (a * s + (b != 0 ? b * *o : 0));
                }
        return CUBLAS_STATUS_SUCCESS;
}
static struct rbee_cublas fake = { (void *) f_create, (void *) f_destroy, (void *) f_set_stream, (void *) f_gemm };
const struct rbee_cublas *rbee_cublas(void) { return getenv("EMU_NO_BLAS") ? NULL : &fake; }
