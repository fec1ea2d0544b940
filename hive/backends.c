/* SPDX-License-Identifier: MIT */
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backends.h"
#include "macros.h"
#include "rbee-engine.h"
#include "strutil.h"

static void read_meminfo(struct hive_cpu_info *c) {
        _cleanup_(fclosep) FILE *f = fopen("/proc/meminfo", "re");
        char line[256];
        unsigned long long kb;

        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
                        c->mem_total = (uint64_t) kb * 1024;
                else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
                        c->mem_available = (uint64_t) kb * 1024;
        }
}

static void read_cpuinfo(struct hive_cpu_info *c) {
        _cleanup_(fclosep) FILE *f = fopen("/proc/cpuinfo", "re");
        char line[4096];
        unsigned siblings = 0, cpu_cores = 0;

        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                char *v = strchr(line, ':');
                if (!v)
                        continue;
                v++;
                while (*v == ' ' || *v == '\t')
                        v++;
                str_strip_trailing(v);
                if (!c->name[0] && str_startswith(line, "model name"))
                        snprintf(c->name, sizeof(c->name), "%s", v);
                else if (!cpu_cores && str_startswith(line, "cpu cores"))
                        (void) sscanf(v, "%u", &cpu_cores);
                else if (!siblings && str_startswith(line, "siblings"))
                        (void) sscanf(v, "%u", &siblings);
        }
        if (cpu_cores && siblings && c->cores)
                c->physical_cores = MAX(1u, c->cores * cpu_cores / siblings);
}

static void add_flag(struct hive_cpu_info *c, const char *name) {
        size_t n = strlen(c->simd);

        snprintf(c->simd + n, sizeof(c->simd) - n, "%s%s", n ? " " : "", name);
}

static void detect_simd(struct hive_cpu_info *c) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("sse4.2"))
                add_flag(c, "sse4.2");
        if (__builtin_cpu_supports("avx"))
                add_flag(c, "avx");
        if (__builtin_cpu_supports("avx2"))
                add_flag(c, "avx2");
        if (__builtin_cpu_supports("fma"))
                add_flag(c, "fma");
        unsigned a, b, cx, d;
        if (__get_cpuid(1, &a, &b, &cx, &d) && (cx & (1u << 29)))
                add_flag(c, "f16c");
        if (__builtin_cpu_supports("avx512f"))
                add_flag(c, "avx512f");
        if (__get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
                if (cx & (1u << 11))
                        add_flag(c, "avx512vnni");
                if (d & (1u << 23))
                        add_flag(c, "avx512fp16");
        }
#elif defined(__aarch64__)
        add_flag(c, "neon");
#endif
}

/* NVML: names, memory (total and free) and compute capability. */
typedef int (*nvml_fn_void)(void);
typedef int (*nvml_count_fn)(unsigned *);
typedef int (*nvml_handle_fn)(unsigned, void **);
typedef int (*nvml_name_fn)(void *, char *, unsigned);
struct nvml_memory {
        unsigned long long total, free, used;
};
typedef int (*nvml_mem_fn)(void *, struct nvml_memory *);
typedef int (*nvml_cc_fn)(void *, int *, int *);

static bool detect_nvml(struct hive_backends *b) {
        void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
        nvml_fn_void init, shutdown;
        nvml_count_fn count;
        nvml_handle_fn handle;
        nvml_name_fn name;
        nvml_mem_fn mem;
        nvml_cc_fn cc;
        unsigned n = 0;

        if (!h)
                return false;
        init = (nvml_fn_void) dlsym(h, "nvmlInit_v2");
        shutdown = (nvml_fn_void) dlsym(h, "nvmlShutdown");
        count = (nvml_count_fn) dlsym(h, "nvmlDeviceGetCount_v2");
        handle = (nvml_handle_fn) dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
        name = (nvml_name_fn) dlsym(h, "nvmlDeviceGetName");
        mem = (nvml_mem_fn) dlsym(h, "nvmlDeviceGetMemoryInfo");
        cc = (nvml_cc_fn) dlsym(h, "nvmlDeviceGetCudaComputeCapability");
        if (!init || !shutdown || !count || !handle || !name || !mem || !cc) {
                snprintf(b->cuda_reason, sizeof(b->cuda_reason), "libnvidia-ml.so.1 lacks the functions needed");
                dlclose(h);
                return false;
        }
        if (init() != 0) {
                snprintf(b->cuda_reason, sizeof(b->cuda_reason), "NVML could not initialize (no driver loaded?)");
                dlclose(h);
                return false;
        }
        if (count(&n) == 0)
                for (unsigned i = 0; i < n && b->n_gpus < HIVE_MAX_GPUS; i++) {
                        struct hive_gpu_info *g = &b->gpus[b->n_gpus];
                        struct nvml_memory m = {};
                        void *dev;
                        if (handle(i, &dev) != 0)
                                continue;
                        if (name(dev, g->name, sizeof(g->name)) != 0)
                                snprintf(g->name, sizeof(g->name), "NVIDIA GPU %u", i);
                        if (mem(dev, &m) == 0) {
                                g->mem_total = m.total;
                                g->mem_free = m.free;
                        }
                        (void) cc(dev, &g->cc_major, &g->cc_minor);
                        b->n_gpus++;
                }
        shutdown();
        dlclose(h);
        snprintf(b->cuda_reason, sizeof(b->cuda_reason), n ? "NVML" : "NVML reports no devices");
        return n > 0;
}

/* The driver API, when NVML is absent: no free memory without a context. */
typedef int (*cu_init_fn)(unsigned);
typedef int (*cu_count_fn)(int *);
typedef int (*cu_get_fn)(int *, int);
typedef int (*cu_name_fn)(char *, int, int);
typedef int (*cu_mem_fn)(size_t *, int);
typedef int (*cu_attr_fn)(int *, int, int);

static bool detect_cuda_driver(struct hive_backends *b) {
        void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        cu_init_fn init;
        cu_count_fn count;
        cu_get_fn get;
        cu_name_fn name;
        cu_mem_fn mem;
        cu_attr_fn attr;
        int n = 0;

        if (!h)
                return false;
        init = (cu_init_fn) dlsym(h, "cuInit");
        count = (cu_count_fn) dlsym(h, "cuDeviceGetCount");
        get = (cu_get_fn) dlsym(h, "cuDeviceGet");
        name = (cu_name_fn) dlsym(h, "cuDeviceGetName");
        mem = (cu_mem_fn) dlsym(h, "cuDeviceTotalMem_v2");
        attr = (cu_attr_fn) dlsym(h, "cuDeviceGetAttribute");
        if (!init || !count || !get || !name || !mem || !attr) {
                snprintf(b->cuda_reason, sizeof(b->cuda_reason), "libcuda.so.1 lacks the functions needed");
                dlclose(h);
                return false;
        }
        if (init(0) != 0 || count(&n) != 0) {
                snprintf(b->cuda_reason, sizeof(b->cuda_reason), "the CUDA driver could not initialize");
                dlclose(h);
                return false;
        }
        for (int i = 0; i < n && b->n_gpus < HIVE_MAX_GPUS; i++) {
                struct hive_gpu_info *g = &b->gpus[b->n_gpus];
                size_t total = 0;
                int dev;
                if (get(&dev, i) != 0)
                        continue;
                if (name(g->name, (int) sizeof(g->name), dev) != 0)
                        snprintf(g->name, sizeof(g->name), "CUDA device %d", i);
                if (mem(&total, dev) == 0)
                        g->mem_total = total;
                /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR */
                (void) attr(&g->cc_major, 75, dev);
                (void) attr(&g->cc_minor, 76, dev);
                b->n_gpus++;
        }
        dlclose(h);
        snprintf(b->cuda_reason, sizeof(b->cuda_reason), n ? "CUDA driver API" : "the CUDA driver reports no devices");
        return n > 0;
}

int hive_backends_detect(struct hive_backends *ret) {
        struct hive_backends b = {};
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        b.cpu.cores = n > 0 ? (unsigned) n : 1;
        read_cpuinfo(&b.cpu);
        if (!b.cpu.name[0])
                snprintf(b.cpu.name, sizeof(b.cpu.name), "unknown CPU");
        read_meminfo(&b.cpu);
        detect_simd(&b.cpu);
        snprintf(b.cuda_reason, sizeof(b.cuda_reason), "libnvidia-ml.so.1 and libcuda.so.1 not found (no NVIDIA driver)");
        b.cuda_available = detect_nvml(&b);
        if (!b.cuda_available && b.n_gpus == 0) {
                char nvml_reason[256];
                memcpy(nvml_reason, b.cuda_reason, sizeof(nvml_reason));
                b.cuda_available = detect_cuda_driver(&b);
                if (!b.cuda_available && b.n_gpus == 0 && !b.cuda_reason[0])
                        memcpy(b.cuda_reason, nvml_reason, sizeof(nvml_reason));
        }
        *ret = b;
        return 0;
}

struct json_object *hive_backends_to_json(const struct hive_backends *b) {
        struct json_object *o = json_object_new_object(), *list = json_object_new_array();
        struct json_object *cpu = json_object_new_object(), *cpus = json_object_new_array(),
                           *dev = json_object_new_object(), *simd = json_object_new_array();
        struct json_object *cuda = json_object_new_object(), *gpus = json_object_new_array();
        struct json_object *metal = json_object_new_object();
        char flags[sizeof(b->cpu.simd)], *save = NULL;

        if (!o || !list || !cpu || !cpus || !dev || !simd || !cuda || !gpus || !metal) {
                json_object_put(o);
                json_object_put(list);
                json_object_put(cpu);
                json_object_put(cpus);
                json_object_put(dev);
                json_object_put(simd);
                json_object_put(cuda);
                json_object_put(gpus);
                json_object_put(metal);
                return NULL;
        }
        memcpy(flags, b->cpu.simd, sizeof(flags));
        for (char *t = strtok_r(flags, " ", &save); t; t = strtok_r(NULL, " ", &save))
                json_object_array_add(simd, json_object_new_string(t));
        json_object_object_add(dev, "index", json_object_new_int(0));
        json_object_object_add(dev, "name", json_object_new_string(b->cpu.name));
        json_object_object_add(dev, "cores", json_object_new_int64(b->cpu.physical_cores ? b->cpu.physical_cores
                                                                                           : b->cpu.cores));
        json_object_object_add(dev, "threads", json_object_new_int64(b->cpu.cores));
        json_object_object_add(dev, "simd", simd);
        json_object_object_add(dev, "memory_total", json_object_new_int64((int64_t) b->cpu.mem_total));
        json_object_object_add(dev, "memory_available", json_object_new_int64((int64_t) b->cpu.mem_available));
        json_object_array_add(cpus, dev);
        json_object_object_add(cpu, "name", json_object_new_string("cpu"));
        json_object_object_add(cpu, "available", json_object_new_boolean(true));
        json_object_object_add(cpu, "devices", cpus);
        json_object_array_add(list, cpu);

        for (unsigned i = 0; i < b->n_gpus; i++) {
                struct json_object *g = json_object_new_object();
                char cc[32];
                if (!g)
                        break;
                snprintf(cc, sizeof(cc), "%d.%d", b->gpus[i].cc_major, b->gpus[i].cc_minor);
                json_object_object_add(g, "index", json_object_new_int((int) i));
                json_object_object_add(g, "name", json_object_new_string(b->gpus[i].name));
                json_object_object_add(g, "memory_total", json_object_new_int64((int64_t) b->gpus[i].mem_total));
                json_object_object_add(g, "memory_free", b->gpus[i].mem_free
                                                                 ? json_object_new_int64((int64_t) b->gpus[i].mem_free)
                                                                 : NULL);
                json_object_object_add(g, "compute_capability", json_object_new_string(cc));
                json_object_array_add(gpus, g);
        }
        json_object_object_add(cuda, "name", json_object_new_string("cuda"));
        json_object_object_add(cuda, "available", json_object_new_boolean(b->cuda_available));
        json_object_object_add(cuda, b->cuda_available ? "detected_by" : "reason",
                               json_object_new_string(b->cuda_reason));
        json_object_object_add(cuda, "devices", gpus);
        json_object_object_add(cuda, "worker", b->cuda_workerd[0] ? json_object_new_string(b->cuda_workerd) : NULL);
        if (!b->cuda_workerd[0] && b->cuda_worker_reason[0])
                json_object_object_add(cuda, "worker_reason", json_object_new_string(b->cuda_worker_reason));
        json_object_array_add(list, cuda);

        json_object_object_add(metal, "name", json_object_new_string("metal"));
        json_object_object_add(metal, "available", json_object_new_boolean(false));
        json_object_object_add(metal, "reason", json_object_new_string("Metal is only available on macOS"));
        json_object_object_add(metal, "devices", json_object_new_array());
        json_object_array_add(list, metal);

        json_object_object_add(o, "backends", list);
        return o;
}

void hive_backends_find_cuda_worker(struct hive_backends *b, const char *workerd) {
        char path[sizeof(b->cuda_workerd)];
        int k;

        b->cuda_workerd[0] = b->cuda_worker_reason[0] = 0;
        if (!workerd || !*workerd) {
                snprintf(b->cuda_worker_reason, sizeof(b->cuda_worker_reason), "no worker binary is configured");
                return;
        }
        k = snprintf(path, sizeof(path), "%s-cuda", workerd);
        if (k > 0 && (size_t) k < sizeof(path) && access(path, X_OK) == 0) {
                memcpy(b->cuda_workerd, path, sizeof(path));
                return;
        }
        /* none.c answers -EOPNOTSUPP: a build without CUDA. */
        if (rbee_cuda_device_count() != -EOPNOTSUPP && strlen(workerd) < sizeof(b->cuda_workerd)) {
                snprintf(b->cuda_workerd, sizeof(b->cuda_workerd), "%s", workerd);
                return;
        }
        snprintf(b->cuda_worker_reason, sizeof(b->cuda_worker_reason),
                 "no CUDA worker: %.120s-cuda is missing and this build has no CUDA (install rbee-worker-cuda)",
                 workerd);
}

int hive_backends_check(const struct hive_backends *b, const char *backend, int device, uint64_t model_bytes,
                        char *err, size_t errlen) {
        if (!backend || streq(backend, "cpu")) {
                if (device != 0) {
                        snprintf(err, errlen, "backend cpu has one device (0), not %d", device);
                        return -ENODEV;
                }
                /* The model is mapped: it needs its size in page cache plus room for the context. */
                if (b->cpu.mem_available && model_bytes > b->cpu.mem_available) {
                        snprintf(err, errlen,
                                 "not enough memory: the model needs %llu MiB, %llu MiB available",
                                 (unsigned long long) (model_bytes >> 20),
                                 (unsigned long long) (b->cpu.mem_available >> 20));
                        return -ENOMEM;
                }
                return 0;
        }
        if (streq(backend, "cuda")) {
                if (!b->cuda_available) {
                        snprintf(err, errlen, "backend cuda is not available on this machine: %s", b->cuda_reason);
                        return -ENODEV;
                }
                if (device < 0 || (unsigned) device >= b->n_gpus) {
                        snprintf(err, errlen, "no CUDA device %d (this machine has %u)", device, b->n_gpus);
                        return -ENODEV;
                }
                if (b->gpus[device].mem_free && model_bytes > b->gpus[device].mem_free) {
                        snprintf(err, errlen, "not enough VRAM on CUDA device %d: the model needs %llu MiB, %llu MiB free",
                                 device, (unsigned long long) (model_bytes >> 20),
                                 (unsigned long long) (b->gpus[device].mem_free >> 20));
                        return -ENOMEM;
                }
                if (!b->cuda_workerd[0]) {
                        snprintf(err, errlen, "%s; not falling back to the CPU",
                                 b->cuda_worker_reason[0] ? b->cuda_worker_reason : "this hive has no CUDA worker");
                        return -EOPNOTSUPP;
                }
                return 0;
        }
        if (streq(backend, "metal")) {
                snprintf(err, errlen, "backend metal is only available on macOS");
                return -ENODEV;
        }
        snprintf(err, errlen, "unknown backend '%s' (cpu, cuda, metal)", backend);
        return -ENODEV;
}
