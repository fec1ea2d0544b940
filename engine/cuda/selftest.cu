/* SPDX-License-Identifier: MIT */
/* The device block decoders run on the host against the CPU dequantizers
 * and dot products: a wrong offset, nibble or scale in blocks.cuh shows on
 * any machine, GPU or not. The mat-vec lane loop (chunk -> element mapping,
 * float4 activation reads) is replayed the same way. */

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks.cuh"

extern "C" {
#include "backend.h"
#include "quants.h"
}

namespace {

struct check {
        int type;
        char *err;
        size_t errlen;
        int r;
};

template <typename T> int check_type(check &c) {
        const int K = 512, rows = 3;
        const struct rbee_type_traits *tr = rbee_type_traits(c.type);
        uint64_t rs = 0;

        if (!tr || rbee_type_row_size(c.type, K, &rs) < 0)
                return -EINVAL;
        /* Float rows are decoded 4 elements (a chunk) per "block". */
        if ((int) tr->block_size * T::BYTES != T::QK * (int) tr->type_size) {
                snprintf(c.err, c.errlen, "%s: block geometry %d/%d != %u/%u", tr->name, T::QK, T::BYTES,
                         tr->block_size, tr->type_size);
                return -EBADMSG;
        }
        float *src = (float *) malloc(sizeof(float) * K * rows), *ref = (float *) malloc(sizeof(float) * K * rows);
        float *got = (float *) malloc(sizeof(float) * K * rows), *x = (float *) malloc(sizeof(float) * K);
        uint8_t *q = (uint8_t *) malloc(rs * rows);
        int r = 0;

        if (!src || !ref || !got || !x || !q) {
                r = -ENOMEM;
                goto out;
        }
        {
                uint32_t s = 12345u + (uint32_t) c.type;
                for (int i = 0; i < K * rows; i++) {
                        s = s * 1664525u + 1013904223u;
                        /* Varying magnitudes per 16 elements exercise the sub-block scales. */
                        src[i] = ((float) (s >> 8) / 16777216.0f - 0.5f) * (1.0f + (float) ((i / 16) % 7));
                }
                for (int i = 0; i < K; i++)
                        x[i] = src[(i * 37) % (K * rows)] * 0.5f;
        }
        for (int row = 0; row < rows; row++) {
                if ((r = rbee_quantize_row((enum rbee_type) c.type, src + row * K, q + row * rs, K)) < 0 ||
                    (r = rbee_dequantize_row((enum rbee_type) c.type, q + row * rs, ref + row * K, K)) < 0)
                        goto out;
        }
        memset(got, 0xff, sizeof(float) * K * rows); /* NaNs where nothing is written */
        for (int row = 0; row < rows; row++) {
                const uint8_t *wr = q + row * rs;
                double dot = 0, dot_ref = 0, mag = 0;
                /* The mat-vec kernel's loop, all lanes in turn. */
                for (int c2 = 0; c2 < K / T::QK * T::CH; c2++) {
                        const int blk = c2 / T::CH, j = c2 % T::CH;
                        float v[8];
                        int o0, o1;
                        T::deq(wr + (size_t) blk * T::BYTES, j, v, o0, o1);
                        float *g = got + row * K + blk * T::QK;
                        for (int k = 0; k < 4; k++) {
                                g[o0 + k] = v[k];
                                dot += (double) v[k] * x[blk * T::QK + o0 + k];
                        }
                        if (T::RUNS == 2)
                                for (int k = 0; k < 4; k++) {
                                        g[o1 + k] = v[4 + k];
                                        dot += (double) v[4 + k] * x[blk * T::QK + o1 + k];
                                }
                }
                for (int i = 0; i < K; i++) {
                        const float a = got[row * K + i], b = ref[row * K + i];
                        if (!(fabsf(a - b) <= 1e-6f * fabsf(b) + 1e-30f)) {
                                snprintf(c.err, c.errlen, "%s: row %d element %d decodes to %g, CPU %g", tr->name, row,
                                         i, a, b);
                                r = -EBADMSG;
                                goto out;
                        }
                        dot_ref += (double) b * x[i];
                        mag += fabs((double) b * x[i]);
                }
                if (!(fabs(dot - dot_ref) <= 1e-9 * mag + 1e-30)) {
                        snprintf(c.err, c.errlen, "%s: row %d dot %g, CPU %g", tr->name, row, dot, dot_ref);
                        r = -EBADMSG;
                        goto out;
                }
        }
out:
        free(src);
        free(ref);
        free(got);
        free(x);
        free(q);
        return r;
}

} // namespace

extern "C" int rbee_cuda_check_decoders(char *err, size_t errlen) {
        static const int types[] = { 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30 };

        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
                check c = { types[i], err, errlen, 0 };
                const bool ok = dispatch_type(types[i], [&](auto blk) { c.r = check_type<decltype(blk)>(c); });
                if (!ok) {
                        snprintf(err, errlen, "type %d has no decoder", types[i]);
                        return -EOPNOTSUPP;
                }
                if (c.r < 0) {
                        if (c.r != -EBADMSG)
                                snprintf(err, errlen, "type %d: error %d", types[i], c.r);
                        return c.r;
                }
        }
        return 0;
}
