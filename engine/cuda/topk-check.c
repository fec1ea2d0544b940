/* SPDX-License-Identifier: MIT */
/* The top-k selection (topk.cu) on a device against a sort on the host, on
 * logits made to catch what real ones rarely show: long runs of equal
 * values (ties go to the lower id), NaN (counts as -inf), +-inf, -0 next to
 * +0 (equal, so the lower id wins), fewer finite logits than k, and
 * vocabularies that take one, two and three selection stages. */

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

struct cand {
        float l;
        int32_t id;
};

/* The sampler's candidate order (sampler.h), NaN as -inf. */
static int cand_cmp(const void *a, const void *b) {
        const struct cand *x = a, *y = b;

        if (x->l != y->l)
                return x->l > y->l ? -1 : 1;
        return x->id < y->id ? -1 : x->id > y->id;
}

/* Logits of one case: values on a coarse grid so that ties abound. */
static void make_logits(float *l, int n, int kind, uint64_t seed) {
        uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

        for (int i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                l[i] = (float) (int) (x % 64) * 0.25f - 8.0f;
                switch (kind) {
                case 1: /* specials sprinkled in, and the top value repeated far apart */
                        if (x % 97 == 0)
                                l[i] = NAN;
                        else if (x % 89 == 0)
                                l[i] = -INFINITY;
                        else if (x % 83 == 0)
                                l[i] = x % 2 ? -0.0f : 0.0f;
                        else if (x % 1009 == 0)
                                l[i] = 7.75f;
                        break;
                case 2: /* one +inf (two when n allows), the rest as case 0 */
                        if (i == n / 2 || i == n - 1)
                                l[i] = INFINITY;
                        break;
                case 3: /* almost nothing finite */
                        l[i] = i % 5 == 3 ? 1.0f : i % 2 ? NAN : -INFINITY;
                        break;
                case 4: /* nothing finite at all */
                        l[i] = i % 3 ? -INFINITY : NAN;
                        break;
                case 5: /* only zeros of both signs */
                        l[i] = x % 2 ? -0.0f : 0.0f;
                        break;
                default:
                        break;
                }
        }
}

struct bufs {
        cudaStream_t stream;
        float *logits;
        int32_t *d_k;
        uint64_t *scratch, *out;
};

static void bufs_free(struct bufs *b) {
        if (b->stream)
                (void) cudaStreamSynchronize(b->stream);
        (void) cudaFree(b->logits);
        (void) cudaFree(b->d_k);
        (void) cudaFree(b->scratch);
        (void) cudaFree(b->out);
        if (b->stream)
                (void) cudaStreamDestroy(b->stream);
}

static int check_case(struct bufs *b, int n, int k, int kind, uint64_t seed, float *l, struct cand *ref,
                      char *err, size_t errlen) {
        uint64_t keys[RBEE_CU_TOPK_MAX];
        const int32_t k32 = k;
        cudaError_t e;

        make_logits(l, n, kind, seed);
        for (int i = 0; i < n; i++)
                ref[i] = (struct cand) { isnan(l[i]) ? -INFINITY : l[i], i };
        qsort(ref, n, sizeof(*ref), cand_cmp);

        e = cudaMemcpy(b->logits, l, (size_t) n * sizeof(float), cudaMemcpyHostToDevice);
        if (e == cudaSuccess)
                e = cudaMemcpy(b->d_k, &k32, sizeof(k32), cudaMemcpyHostToDevice);
        if (e == cudaSuccess)
                e = rbee_cu_topk(b->stream, b->logits, n, b->d_k, b->scratch, b->out);
        if (e == cudaSuccess)
                e = cudaStreamSynchronize(b->stream);
        if (e == cudaSuccess)
                e = cudaMemcpy(keys, b->out, sizeof(keys), cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) {
                snprintf(err, errlen, "n %d k %d: %s", n, k, cudaGetErrorString(e));
                return rbee_cu_errno(e);
        }
        for (int i = 0; i < RBEE_CU_TOPK_MAX; i++) {
                if (i >= k) {
                        if (keys[i] != 0) {
                                snprintf(err, errlen, "n %d k %d case %d: slot %d past k is not empty", n, k, kind, i);
                                return -EBADMSG;
                        }
                        continue;
                }
                const uint32_t bits = rbee_cu_topk_bits(keys[i]);
                float v;
                memcpy(&v, &bits, sizeof(v));
                /* == so that -0 and +0 agree: the sampler cannot tell them apart either */
                if (keys[i] == 0 || rbee_cu_topk_id(keys[i]) != ref[i].id || !(v == ref[i].l)) {
                        snprintf(err, errlen, "n %d k %d case %d: candidate %d is (%g, %d), want (%g, %d)", n, k,
                                 kind, i, v, rbee_cu_topk_id(keys[i]), ref[i].l, ref[i].id);
                        return -EBADMSG;
                }
        }
        return 0;
}

int rbee_cuda_check_topk(int device, char *err, size_t errlen) {
        /* one stage (a partial block, a full one), two (up to 262144), three */
        static const int sizes[] = { 1, 7, 512, 2048, 2049, 32000, 151936, 600000 };
        static const int ks[] = { 1, 40, RBEE_CU_TOPK_MAX };
        const int n_max = sizes[ELEMENTSOF(sizes) - 1];
        _cleanup_(freep) float *l = malloc(n_max * sizeof(float));
        _cleanup_(freep) struct cand *ref = malloc(n_max * sizeof(struct cand));
        struct bufs b = { 0 };
        cudaError_t e;
        int r = 0;

        if (!l || !ref)
                return -ENOMEM;
        if ((r = rbee_cuda_device_count()) < 0)
                return r;
        if (device < 0 || device >= r)
                return -ENODEV;
        if ((e = cudaSetDevice(device)) != cudaSuccess ||
            (e = cudaStreamCreateWithFlags(&b.stream, cudaStreamNonBlocking)) != cudaSuccess ||
            (e = cudaMalloc((void **) &b.logits, n_max * sizeof(float))) != cudaSuccess ||
            (e = cudaMalloc((void **) &b.d_k, sizeof(int32_t))) != cudaSuccess ||
            (e = cudaMalloc((void **) &b.scratch, (rbee_cu_topk_scratch(n_max) + 1) * sizeof(uint64_t))) !=
                    cudaSuccess ||
            (e = cudaMalloc((void **) &b.out, RBEE_CU_TOPK_MAX * sizeof(uint64_t))) != cudaSuccess) {
                snprintf(err, errlen, "device %d: %s", device, cudaGetErrorString(e));
                bufs_free(&b);
                return rbee_cu_errno(e);
        }
        r = 0;
        for (size_t si = 0; si < ELEMENTSOF(sizes) && r == 0; si++)
                for (size_t ki = 0; ki < ELEMENTSOF(ks) && r == 0; ki++)
                        for (int kind = 0; kind <= 5 && r == 0; kind++) {
                                const int k = ks[ki] < sizes[si] ? ks[ki] : sizes[si];
                                r = check_case(&b, sizes[si], k, kind, si * 131 + ki * 7 + kind, l, ref, err, errlen);
                        }
        bufs_free(&b);
        return r;
}
