/* SPDX-License-Identifier: MIT */
#pragma once

/* What this machine can run: the CPU (cores, SIMD, RAM, from /proc and
 * cpuid) and CUDA devices (through NVML or the driver API, loaded with
 * dlopen() so that nothing links CUDA at build time). Metal is reported as
 * unavailable on Linux. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#define HIVE_MAX_GPUS 16

struct hive_cpu_info {
        char name[128];
        unsigned cores;                 /* online logical CPUs */
        unsigned physical_cores;        /* 0 when unknown */
        char simd[256];                 /* space-separated */
        uint64_t mem_total;
        uint64_t mem_available;
};

struct hive_gpu_info {
        char name[128];
        uint64_t mem_total;
        uint64_t mem_free;              /* 0 when unknown */
        int cc_major, cc_minor;
};

struct hive_backends {
        struct hive_cpu_info cpu;
        bool cuda_available;
        char cuda_reason[256];          /* why not, or which library answered */
        unsigned n_gpus;
        struct hive_gpu_info gpus[HIVE_MAX_GPUS];
        /* The worker binary that runs backend cuda (hive_backends_find_cuda_worker);
         * empty: none, and cuda_worker_reason says why. */
        char cuda_workerd[512];
        char cuda_worker_reason[256];
};

/* Never fails for a missing GPU stack: that is reported in cuda_reason. */
int hive_backends_detect(struct hive_backends *ret);
struct json_object *hive_backends_to_json(const struct hive_backends *b);

/* Which worker runs backend cuda: WORKERD-cuda when it exists (the package
 * rbee-worker-cuda installs /usr/sbin/rbee-workerd-cuda next to the CPU
 * worker), else WORKERD itself when this build has CUDA (the hive and the
 * worker come from the same build tree). Kept in b for hive_backends_check. */
void hive_backends_find_cuda_worker(struct hive_backends *b, const char *workerd);

/* Can a model of model_bytes run on backend/device? 0, or -ENODEV (no such
 * backend or device), -EOPNOTSUPP (this hive has no worker for it), -ENOMEM
 * (not enough memory), with the reason in err. */
int hive_backends_check(const struct hive_backends *b, const char *backend, int device, uint64_t model_bytes,
                        char *err, size_t errlen);
