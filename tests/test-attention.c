/* SPDX-License-Identifier: MIT */
/* rbee_attend(), the attention kernel of the forward pass, against its
 * portable reference on random data: odd lengths and tails, head sizes
 * that are and are not a multiple of the SIMD width, groups larger than the
 * kernel's, F32 and F16 caches, a row stride wider than the head. */

#include <math.h>

#include "attention.h"
#include "harness.h"
#include "macros.h"
#include "quants.h"

static uint64_t rng = 88172645463325252ull;

static float frand(void) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return (float) ((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void check(uint32_t n_q, uint32_t hd, uint32_t n, size_t ld, bool f16) {
        const size_t cells = (size_t) n * ld;
        _cleanup_(freep) float *q = malloc(sizeof(float) * n_q * hd), *kf = malloc(sizeof(float) * cells),
                              *vf = malloc(sizeof(float) * cells), *att = malloc(sizeof(float) * n_q * n),
                              *out = malloc(sizeof(float) * n_q * hd), *ref = malloc(sizeof(float) * n_q * hd),
                              *one = malloc(sizeof(float) * hd);
        _cleanup_(freep) rbee_fp16 *kh = malloc(sizeof(rbee_fp16) * cells), *vh = malloc(sizeof(rbee_fp16) * cells);

        ASSERT_TRUE(q && kf && vf && att && out && ref && one && kh && vh);
        for (size_t i = 0; i < (size_t) n_q * hd; i++)
                q[i] = 3.0f * frand(); /* peaky softmax too */
        for (size_t i = 0; i < cells; i++) {
                kf[i] = frand();
                vf[i] = frand();
                kh[i] = rbee_fp32_to_fp16(kf[i]);
                vh[i] = rbee_fp32_to_fp16(vf[i]);
        }
        const void *k = f16 ? (const void *) kh : kf, *v = f16 ? (const void *) vh : vf;
        const float scale = 1.0f / sqrtf((float) hd);

        rbee_attend(q, n_q, hd, k, v, f16, ld, n, scale, att, out);
        rbee_attend_ref(q, n_q, hd, k, v, f16, ld, n, scale, att, ref);
        for (size_t i = 0; i < (size_t) n_q * hd; i++)
                if (!(fabsf(out[i] - ref[i]) <= 2e-5f + 2e-5f * fabsf(ref[i])))
                        FAIL("n_q %u hd %u n %u ld %zu %s: out[%zu] = %.8g, reference %.8g", n_q, hd, n, ld,
                             f16 ? "f16" : "f32", i, out[i], ref[i]);
        /* Each head gives the same bits alone as in its group. */
        for (uint32_t g = 0; g < n_q; g++) {
                rbee_attend(q + (size_t) g * hd, 1, hd, k, v, f16, ld, n, scale, att, one);
                ASSERT_TRUE(memcmp(one, out + (size_t) g * hd, hd * sizeof(float)) == 0);
        }
}

TEST(attend_matches_reference) {
        static const uint32_t ns[] = { 1, 2, 7, 8, 9, 63, 64, 65, 130, 700 };
        static const uint32_t hds[] = { 8, 16, 24, 64, 72, 128, 12 };
        static const uint32_t groups[] = { 1, 3, 8, 17 };

        for (size_t a = 0; a < ELEMENTSOF(ns); a++)
                for (size_t b = 0; b < ELEMENTSOF(hds); b++)
                        for (size_t g = 0; g < ELEMENTSOF(groups); g++)
                                for (int f16 = 0; f16 < 2; f16++) {
                                        check(groups[g], hds[b], ns[a], hds[b], f16);
                                        check(groups[g], hds[b], ns[a], hds[b] * 4 + 8, f16);
                                }
}
