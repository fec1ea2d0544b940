/* SPDX-License-Identifier: MIT */
#include "vecf.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__clang__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

typedef float v8f __attribute__((vector_size(32), aligned(4)));

/* Eight independent lanes, so the compiler vectorises without -ffast-math. */
CLONES float rbee_vec_dot_f32(const float *a, const float *b, int n) {
        v8f acc0 = { 0 }, acc1 = { 0 };
        int i = 0;

        for (; i + 16 <= n; i += 16) {
                acc0 += *(const v8f *) (a + i) * *(const v8f *) (b + i);
                acc1 += *(const v8f *) (a + i + 8) * *(const v8f *) (b + i + 8);
        }
        for (; i + 8 <= n; i += 8)
                acc0 += *(const v8f *) (a + i) * *(const v8f *) (b + i);
        acc0 += acc1;
        float s = 0;
        for (int j = 0; j < 8; j++)
                s += acc0[j];
        for (; i < n; i++)
                s += a[i] * b[i];
        return s;
}

CLONES void rbee_vec_axpy_f32(float *y, float a, const float *x, int n) {
        int i = 0;

        for (; i + 8 <= n; i += 8)
                *(v8f *) (y + i) += a * *(const v8f *) (x + i);
        for (; i < n; i++)
                y[i] += a * x[i];
}

CLONES void rbee_vec_scale_f32(float *y, float a, int n) {
        for (int i = 0; i < n; i++)
                y[i] *= a;
}

CLONES float rbee_vec_sumsq_f32(const float *x, int n) {
        return rbee_vec_dot_f32(x, x, n);
}
