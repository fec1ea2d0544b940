/* SPDX-License-Identifier: MIT */
/* Device discovery, CUDA error mapping and the run-time loading of cuBLAS.
 * The CUDA runtime is linked statically and loads the driver (libcuda.so)
 * itself on first use: without a driver every call here fails with a status
 * we map to -ENODEV, and nothing else in the process is affected. */

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "log.h"

int rbee_cu_errno(cudaError_t e) {
        switch (e) {
        case cudaSuccess:
                return 0;
        case cudaErrorMemoryAllocation:
                return -ENOMEM;
        case cudaErrorNoDevice:
        case cudaErrorInsufficientDriver:
        case cudaErrorInvalidDevice:
        case cudaErrorDevicesUnavailable:
        case cudaErrorSystemDriverMismatch:
        case cudaErrorCompatNotSupportedOnDevice:
        case cudaErrorNoKernelImageForDevice:
                return -ENODEV;
        default:
                return -EIO;
        }
}

int rbee_cuda_device_count(void) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);

        if (e == cudaErrorNoDevice) {
                (void) cudaGetLastError();
                return 0;
        }
        if (e != cudaSuccess) {
                log_debug("cuda: no usable driver: %s", cudaGetErrorString(e));
                (void) cudaGetLastError(); /* not sticky: clear it */
                return -ENODEV;
        }
        return n;
}

int rbee_cuda_device_info(int device, struct rbee_gpu_info *ret) {
        struct cudaDeviceProp p;
        int n = rbee_cuda_device_count();

        if (!ret)
                return -EINVAL;
        if (n < 0)
                return n;
        if (device < 0 || device >= n)
                return -ENODEV;
        cudaError_t e = cudaGetDeviceProperties(&p, device);
        if (e != cudaSuccess)
                return rbee_cu_errno(e);
        *ret = (struct rbee_gpu_info) {
                .cc_major = p.major,
                .cc_minor = p.minor,
                .total_bytes = p.totalGlobalMem,
        };
        snprintf(ret->name, sizeof(ret->name), "%s", p.name);
        return 0;
}

static struct rbee_cublas cublas;
static bool cublas_ok;
static pthread_once_t cublas_once = PTHREAD_ONCE_INIT;

static void cublas_load(void) {
        char names[3][256];
        void *dl = NULL;

        /* The major version the headers describe, then any, then the toolkit's own copy. */
        snprintf(names[0], sizeof(names[0]), "libcublas.so.%d", CUDART_VERSION / 1000);
        snprintf(names[1], sizeof(names[1]), "libcublas.so");
        snprintf(names[2], sizeof(names[2]), "%s/libcublas.so.%d", RBEE_CUDA_LIBDIR, CUDART_VERSION / 1000);
        for (size_t i = 0; i < ELEMENTSOF(names) && !dl; i++)
                dl = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!dl) {
                log_warning("cuda: cannot load cuBLAS (%s): prompts run through the mat-vec kernels", dlerror());
                return;
        }
        cublas.create = (__typeof__(cublas.create)) dlsym(dl, "cublasCreate_v2");
        cublas.destroy = (__typeof__(cublas.destroy)) dlsym(dl, "cublasDestroy_v2");
        cublas.set_stream = (__typeof__(cublas.set_stream)) dlsym(dl, "cublasSetStream_v2");
        cublas.gemm_ex = (__typeof__(cublas.gemm_ex)) dlsym(dl, "cublasGemmEx");
        if (!cublas.create || !cublas.destroy || !cublas.set_stream || !cublas.gemm_ex) {
                log_warning("cuda: cuBLAS lacks the functions we use: prompts run through the mat-vec kernels");
                dlclose(dl);
                return;
        }
        cublas_ok = true; /* dl stays open for the life of the process */
}

const struct rbee_cublas *rbee_cublas(void) {
        pthread_once(&cublas_once, cublas_load);
        return cublas_ok ? &cublas : NULL;
}
