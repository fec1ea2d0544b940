/* SPDX-License-Identifier: MIT */

#include <time.h>

#include "harness.h"
#include "macros.h"
#include "sampler.h"

/* The test's own generator for making up logits (independent of the
 * sampler's): a 64-bit LCG plus Box-Muller. */
static uint64_t test_rng = 12345;

static double test_uniform(void) {
        test_rng = test_rng * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
        return ((double) (test_rng >> 11) + 0.5) * 0x1.0p-53;
}

static float test_gauss(void) {
        double u = test_uniform(), v = test_uniform();
        return (float) (sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
}

static void fill_gauss(float *l, size_t n, float scale) {
        for (size_t i = 0; i < n; i++)
                l[i] = scale * test_gauss();
}

static size_t argmax(const float *l, size_t n) {
        size_t best = 0;

        for (size_t i = 1; i < n; i++)
                if (l[i] > l[best])
                        best = i;
        return best;
}

/* Parameters with every filter off, so only the temperature shapes the draw. */
static struct rbee_sampler_params plain(float temperature, uint64_t seed) {
        struct rbee_sampler_params p;

        rbee_sampler_default_params(&p);
        p.temperature = temperature;
        p.top_k = 0;
        p.top_p = 1.0f;
        p.min_p = 0.0f;
        p.repeat_last_n = 0;
        p.seed = seed;
        return p;
}

static rbee_sampler *make(const struct rbee_sampler_params *p, int32_t n_vocab) {
        rbee_sampler *s = NULL;

        ASSERT_OK(rbee_sampler_new(p, n_vocab, &s));
        ASSERT_NOT_NULL(s);
        return s;
}

/* Pearson's chi-square of observed counts against expected probabilities. */
static double chi_square(const size_t *counts, const double *prob, size_t k, size_t draws) {
        double chi = 0.0;

        for (size_t i = 0; i < k; i++) {
                double e = prob[i] * (double) draws;
                double d = (double) counts[i] - e;
                chi += d * d / e;
        }
        return chi;
}

static void softmax(const float *l, size_t n, float temperature, double *out) {
        double max = -INFINITY, sum = 0.0;

        for (size_t i = 0; i < n; i++)
                max = fmax(max, (double) l[i]);
        for (size_t i = 0; i < n; i++) {
                out[i] = exp(((double) l[i] - max) / temperature);
                sum += out[i];
        }
        for (size_t i = 0; i < n; i++)
                out[i] /= sum;
}

TEST(default_params) {
        struct rbee_sampler_params p;

        rbee_sampler_default_params(&p);
        ASSERT_NEAR(p.temperature, 0.8, 1e-6);
        ASSERT_EQ(p.top_k, 40);
        ASSERT_NEAR(p.top_p, 0.95, 1e-6);
        ASSERT_NEAR(p.min_p, 0.05, 1e-6);
        ASSERT_NEAR(p.repeat_penalty, 1.0, 0);
        ASSERT_EQ(p.repeat_last_n, 64);
        ASSERT_NEAR(p.presence_penalty, 0.0, 0);
        ASSERT_NEAR(p.frequency_penalty, 0.0, 0);
        ASSERT_TRUE(p.seed == RBEE_SAMPLER_SEED_RANDOM);
}

TEST(new_rejects_nonsense) {
        struct rbee_sampler_params good, p;
        rbee_sampler *s = (rbee_sampler *) &good; /* must stay untouched */

        rbee_sampler_default_params(&good);
        ASSERT_ERR(rbee_sampler_new(NULL, 10, &s), -EINVAL);
        ASSERT_ERR(rbee_sampler_new(&good, 10, NULL), -EINVAL);
        ASSERT_ERR(rbee_sampler_new(&good, 0, &s), -EINVAL);
        ASSERT_ERR(rbee_sampler_new(&good, -5, &s), -EINVAL);

        p = good; p.temperature = NAN;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.temperature = INFINITY;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.top_p = -0.1f;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.top_p = NAN;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.min_p = 1.5f;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.min_p = -0.01f;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.repeat_penalty = 0.0f;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.repeat_penalty = -1.1f;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.repeat_last_n = -2;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.frequency_penalty = -INFINITY;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.presence_penalty = NAN;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -EINVAL);
        p = good; p.repeat_penalty = 1.1f; p.repeat_last_n = RBEE_SAMPLER_MAX_LAST_N + 1;
        ASSERT_ERR(rbee_sampler_new(&p, 10, &s), -E2BIG);
        ASSERT_TRUE(s == (rbee_sampler *) &good);

        /* boundaries that are fine */
        p = good; p.top_p = 0.0f; p.min_p = 1.0f; p.top_k = -3; p.temperature = -1.0f;
        p.repeat_last_n = -1; p.repeat_penalty = 1.3f;
        s = NULL;
        ASSERT_OK(rbee_sampler_new(&p, 1, &s));
        ASSERT_EQ(rbee_sampler_n_vocab(s), 1);
        rbee_sampler_free(s);

        ASSERT_TRUE(rbee_sampler_free(NULL) == NULL);
        rbee_sampler_reset(NULL);
        rbee_sampler_accept(NULL, 3);
}

TEST(greedy_is_argmax) {
        struct rbee_sampler_params p = plain(0.0f, 1);
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 1000);
        float l[1000];

        for (int round = 0; round < 200; round++) {
                fill_gauss(l, ELEMENTSOF(l), 4.0f);
                ASSERT_EQ(rbee_sampler_sample(s, l), argmax(l, ELEMENTSOF(l)));
        }
}

TEST(greedy_ties_lowest_id) {
        struct rbee_sampler_params p = plain(0.0f, 1);
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 8);
        float l[8] = { 1, 3, 2, 3, 3, -1, 0, 3 };
        float flat[8] = { 0, 0, 0, 0, 0, 0, 0, 0 };

        ASSERT_EQ(rbee_sampler_sample(s, l), 1);
        ASSERT_EQ(rbee_sampler_sample(s, flat), 0);
        l[1] = 2.999f;
        ASSERT_EQ(rbee_sampler_sample(s, l), 3);

        /* a denormal temperature is greedy in effect */
        p.temperature = 1e-45f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s3 = make(&p, 8);
        ASSERT_EQ(rbee_sampler_sample(s3, l), 3);

        /* negative temperature is greedy too */
        p.temperature = -0.5f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s2 = make(&p, 8);
        ASSERT_EQ(rbee_sampler_sample(s2, l), 3);
}

TEST(seed_determinism) {
        struct rbee_sampler_params p;
        float l[64];
        int32_t a[500], b[500];
        size_t same = 0;

        rbee_sampler_default_params(&p);
        p.seed = 42;
        p.top_k = 0;
        p.temperature = 1.0f;
        fill_gauss(l, ELEMENTSOF(l), 1.0f);

        _cleanup_(rbee_sampler_freep) rbee_sampler *s1 = make(&p, 64);
        _cleanup_(rbee_sampler_freep) rbee_sampler *s2 = make(&p, 64);
        ASSERT_TRUE(rbee_sampler_seed(s1) == 42);
        for (size_t i = 0; i < ELEMENTSOF(a); i++) {
                a[i] = rbee_sampler_sample(s1, l);
                ASSERT_EQ(rbee_sampler_sample(s2, l), a[i]);
        }

        /* reset replays the stream */
        rbee_sampler_reset(s1);
        for (size_t i = 0; i < ELEMENTSOF(a); i++)
                ASSERT_EQ(rbee_sampler_sample(s1, l), a[i]);

        /* another seed gives another stream */
        p.seed = 43;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s3 = make(&p, 64);
        for (size_t i = 0; i < ELEMENTSOF(b); i++) {
                b[i] = rbee_sampler_sample(s3, l);
                same += a[i] == b[i];
        }
        ASSERT_LE(same, 400);
}

TEST(random_seed) {
        struct rbee_sampler_params p = plain(1.0f, RBEE_SAMPLER_SEED_RANDOM);
        _cleanup_(rbee_sampler_freep) rbee_sampler *s1 = make(&p, 16);
        _cleanup_(rbee_sampler_freep) rbee_sampler *s2 = make(&p, 16);
        float l[16];
        int32_t first[100];

        ASSERT_TRUE(rbee_sampler_seed(s1) != RBEE_SAMPLER_SEED_RANDOM);
        ASSERT_TRUE(rbee_sampler_seed(s1) != rbee_sampler_seed(s2));

        /* the drawn seed replays the run */
        fill_gauss(l, ELEMENTSOF(l), 1.0f);
        for (size_t i = 0; i < ELEMENTSOF(first); i++)
                first[i] = rbee_sampler_sample(s1, l);
        p.seed = rbee_sampler_seed(s1);
        _cleanup_(rbee_sampler_freep) rbee_sampler *s3 = make(&p, 16);
        for (size_t i = 0; i < ELEMENTSOF(first); i++)
                ASSERT_EQ(rbee_sampler_sample(s3, l), first[i]);
}

/* Locks the random stream: these ids must not change between versions,
 * compilers or machines (xoshiro256** seeded by splitmix64). They were
 * cross-checked with an independent Python model of the generator and the
 * draw; every draw lies at least 0.026 away from a bucket boundary, far
 * beyond any expf() rounding. */
TEST(stream_is_stable) {
        static const int32_t expect[24] = {
                0, 3, 0, 1, 3, 1, 2, 1, 3, 0, 3, 3,
                3, 2, 3, 1, 0, 3, 3, 2, 3, 2, 1, 2,
        };
        struct rbee_sampler_params p = plain(1.0f, 2024);
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 4);
        float l[4] = { 0.0f, 0.5f, 1.0f, 1.5f };

        for (size_t i = 0; i < ELEMENTSOF(expect); i++)
                ASSERT_EQ(rbee_sampler_sample(s, l), expect[i]);
}

static void check_distribution(float temperature, uint64_t seed) {
        static const float l[8] = { 1.0f, 2.0f, 0.5f, 3.0f, -1.0f, 2.5f, 0.0f, 1.5f };
        struct rbee_sampler_params p = plain(temperature, seed);
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 8);
        const size_t draws = 200000;
        size_t counts[8] = {};
        double prob[8], chi;

        softmax(l, 8, temperature, prob);
        for (size_t i = 0; i < draws; i++) {
                int32_t t = rbee_sampler_sample(s, l);
                ASSERT_TRUE(t >= 0 && t < 8);
                counts[t]++;
        }
        chi = chi_square(counts, prob, 8, draws);
        /* 7 degrees of freedom: P(chi2 > 24.32) = 0.001 */
        if (!(chi < 24.32))
                FAIL("temperature %g: chi-square %.2f over 7 dof", (double) temperature, chi);
}

TEST(distribution_matches_softmax) {
        check_distribution(1.0f, 7);
        check_distribution(0.7f, 8);
        check_distribution(1.8f, 9);
}

TEST(top_k_one_is_greedy) {
        struct rbee_sampler_params p = plain(1.5f, 5);
        float l[2000];

        p.top_k = 1;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 2000);
        for (int round = 0; round < 100; round++) {
                fill_gauss(l, ELEMENTSOF(l), 1.0f);
                l[round * 7] = l[argmax(l, 2000)]; /* a tie: lowest id must win */
                ASSERT_EQ(rbee_sampler_sample(s, l), argmax(l, 2000));
        }
}

TEST(top_k_keeps_k_renormalised) {
        float l[10] = { 0.1f, 2.0f, 0.3f, 1.5f, 0.2f, 1.0f, 0.0f, -1.0f, 0.4f, 0.9f };
        struct rbee_sampler_params p = plain(1.0f, 11);
        const size_t draws = 100000;
        size_t counts[10] = {};
        double prob[3], chi;
        size_t top[3] = { 1, 3, 5 };
        float sub[3] = { 2.0f, 1.5f, 1.0f };
        size_t sub_counts[3];

        p.top_k = 3;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 10);
        for (size_t i = 0; i < draws; i++)
                counts[rbee_sampler_sample(s, l)]++;
        for (size_t i = 0; i < 10; i++)
                if (i != 1 && i != 3 && i != 5)
                        ASSERT_EQ(counts[i], 0);
        softmax(sub, 3, 1.0f, prob);
        for (size_t i = 0; i < 3; i++)
                sub_counts[i] = counts[top[i]];
        chi = chi_square(sub_counts, prob, 3, draws);
        /* 2 dof: P(chi2 > 13.82) = 0.001 */
        ASSERT_TRUE(chi < 13.82);
}

TEST(top_p) {
        /* probabilities 0.5, 0.3, 0.2 at temperature 1 */
        float l[3] = { logf(0.5f), logf(0.3f), logf(0.2f) };
        struct rbee_sampler_params p = plain(1.0f, 3);
        size_t counts[3] = {};

        /* 0.5 < 0.7 <= 0.8: the first two */
        p.top_p = 0.7f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 3);
        for (size_t i = 0; i < 20000; i++)
                counts[rbee_sampler_sample(s, l)]++;
        ASSERT_EQ(counts[2], 0);
        /* 5:3 split, loosely */
        ASSERT_NEAR((double) counts[0] / 20000.0, 0.625, 0.02);

        /* small top_p: only the top token, also at a high temperature */
        p.top_p = 0.01f;
        p.temperature = 5.0f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s2 = make(&p, 3);
        for (size_t i = 0; i < 1000; i++)
                ASSERT_EQ(rbee_sampler_sample(s2, l), 0);
        p.top_p = 0.0f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s3 = make(&p, 3);
        for (size_t i = 0; i < 1000; i++)
                ASSERT_EQ(rbee_sampler_sample(s3, l), 0);
}

TEST(top_p_large_vocab) {
        /* Over a big vocabulary the kept set must be exactly the shortest
         * prefix (by logit) reaching the mass, checked against a brute force. */
        enum { N = 50000 };
        static float l[N];
        static double prob[N];
        static size_t order[N];
        static bool seen[N];
        struct rbee_sampler_params p = plain(1.0f, 77);
        double cum = 0.0, thr;
        size_t keep = 0;

        fill_gauss(l, N, 2.0f);
        softmax(l, N, 1.0f, prob);
        /* selection sort of the top few hundred is plenty here */
        for (size_t i = 0; i < N; i++)
                order[i] = i;
        p.top_p = 0.3f;
        while (cum < 0.3) {
                size_t b = keep;
                for (size_t j = keep + 1; j < N; j++)
                        if (l[order[j]] > l[order[b]])
                                b = j;
                size_t t = order[keep]; order[keep] = order[b]; order[b] = t;
                cum += prob[order[keep]];
                keep++;
        }
        thr = l[order[keep - 1]];
        ASSERT_TRUE(keep > 10);

        /* The set comes from the temperature-1 distribution; a high
         * temperature then makes every member about equally likely, so a
         * set cut too short or too long shows within a few thousand draws. */
        p.temperature = 50.0f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, N);
        for (size_t i = 0; i < 2000; i++) {
                int32_t t = rbee_sampler_sample(s, l);
                if (!(l[t] >= thr))
                        FAIL("token %d (logit %g) is outside the top-p set (cut %g, %zu kept)",
                             t, (double) l[t], (double) thr, keep);
                seen[t] = true;
        }
        /* the set is not cut shorter: its last members show up too */
        ASSERT_TRUE(seen[order[0]]);
        ASSERT_TRUE(seen[order[keep - 1]]);
        ASSERT_TRUE(seen[order[keep - 2]]);
}

TEST(min_p) {
        /* probabilities 0.5, 0.3, 0.15, 0.05 */
        float l[4] = { logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f) };
        struct rbee_sampler_params p = plain(1.0f, 4);
        size_t counts[4] = {};

        /* threshold 0.2 * 0.5 = 0.1: token 3 goes */
        p.min_p = 0.2f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 4);
        for (size_t i = 0; i < 20000; i++)
                counts[rbee_sampler_sample(s, l)]++;
        ASSERT_EQ(counts[3], 0);
        ASSERT_TRUE(counts[2] > 0);
        /* the survivors are renormalised: 0.15 / 0.95 */
        ASSERT_NEAR((double) counts[2] / 20000.0, 0.15 / 0.95, 0.015);

        /* threshold 0.35: only the top one */
        p.min_p = 0.7f;
        p.temperature = 3.0f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s2 = make(&p, 4);
        for (size_t i = 0; i < 1000; i++)
                ASSERT_EQ(rbee_sampler_sample(s2, l), 0);

        /* min_p after top_p: top_p 0.9 keeps 3, min_p 0.2 cuts that to 3 as
         * well; top_p 0.6 keeps 2, which min_p does not widen */
        p.temperature = 1.0f;
        p.top_p = 0.6f;
        p.min_p = 0.2f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s3 = make(&p, 4);
        memset(counts, 0, sizeof counts);
        for (size_t i = 0; i < 5000; i++)
                counts[rbee_sampler_sample(s3, l)]++;
        ASSERT_EQ(counts[2] + counts[3], 0);
        ASSERT_TRUE(counts[1] > 0);
}

TEST(repetition_penalty) {
        struct rbee_sampler_params p = plain(0.0f, 1);
        float l[8] = { 2.0f, 1.9f, -1.0f, -1.05f, 0.0f, 0.0f, 0.0f, 0.0f };
        float copy[8];

        p.repeat_penalty = 1.1f;
        p.repeat_last_n = 2;
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 8);
        memcpy(copy, l, sizeof l);

        ASSERT_EQ(rbee_sampler_sample(s, l), 0);
        rbee_sampler_accept(s, 0);
        /* 2.0 / 1.1 = 1.82 < 1.9 */
        ASSERT_EQ(rbee_sampler_sample(s, l), 1);
        ASSERT_TRUE(memcmp(l, copy, sizeof l) == 0);

        /* counted once, however often it repeats */
        rbee_sampler_accept(s, 0);
        ASSERT_EQ(rbee_sampler_sample(s, l), 1);

        /* two more tokens push 0 out of the window of 2 */
        rbee_sampler_accept(s, 6);
        rbee_sampler_accept(s, 7);
        ASSERT_EQ(rbee_sampler_sample(s, l), 0);

        /* negative logits are multiplied: -1.0 * 1.1 = -1.1 < -1.05 */
        {
                float neg[3] = { -1.0f, -1.05f, -5.0f };
                struct rbee_sampler_params q = p;
                q.repeat_last_n = -1;
                _cleanup_(rbee_sampler_freep) rbee_sampler *n = make(&q, 3);
                ASSERT_EQ(rbee_sampler_sample(n, neg), 0);
                rbee_sampler_accept(n, 0);
                ASSERT_EQ(rbee_sampler_sample(n, neg), 1);
                /* whole history: still penalised much later */
                for (int i = 0; i < 1000; i++)
                        rbee_sampler_accept(n, 2);
                ASSERT_EQ(rbee_sampler_sample(n, neg), 1);
                /* reset forgets */
                rbee_sampler_reset(n);
                ASSERT_EQ(rbee_sampler_sample(n, neg), 0);
        }

        /* out-of-range tokens are ignored */
        rbee_sampler_accept(s, -1);
        rbee_sampler_accept(s, 8);
        rbee_sampler_accept(s, INT32_MAX);
        ASSERT_EQ(rbee_sampler_sample(s, l), 0);

        /* window 0 switches penalties off */
        p.repeat_last_n = 0;
        _cleanup_(rbee_sampler_freep) rbee_sampler *off = make(&p, 8);
        rbee_sampler_accept(off, 0);
        ASSERT_EQ(rbee_sampler_sample(off, l), 0);
}

TEST(presence_frequency_penalty) {
        struct rbee_sampler_params p = plain(0.0f, 1);
        float l[4] = { 3.0f, 2.5f, 2.2f, 0.0f };

        /* frequency: 3.0 - 2 * 0.3 = 2.4 < 2.5 after two repeats, not after one */
        p.frequency_penalty = 0.3f;
        p.repeat_last_n = 64;
        _cleanup_(rbee_sampler_freep) rbee_sampler *f = make(&p, 4);
        rbee_sampler_accept(f, 0);
        ASSERT_EQ(rbee_sampler_sample(f, l), 0);
        rbee_sampler_accept(f, 0);
        ASSERT_EQ(rbee_sampler_sample(f, l), 1);

        /* presence: a flat 0.6 however often: 2.4, then still 2.4 */
        p.frequency_penalty = 0.0f;
        p.presence_penalty = 0.6f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *q = make(&p, 4);
        rbee_sampler_accept(q, 0);
        ASSERT_EQ(rbee_sampler_sample(q, l), 1);
        rbee_sampler_accept(q, 1);
        rbee_sampler_accept(q, 1);
        rbee_sampler_accept(q, 1);
        /* 2.4 vs 1.9 vs 2.2 */
        ASSERT_EQ(rbee_sampler_sample(q, l), 0);

        /* negative penalties encourage */
        p.presence_penalty = -1.0f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *e = make(&p, 4);
        rbee_sampler_accept(e, 3);
        l[3] = 2.9f;
        ASSERT_EQ(rbee_sampler_sample(e, l), 3);
}

TEST(non_finite_logits) {
        struct rbee_sampler_params p = plain(1.0f, 9);
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(&p, 6);
        float nan6[6] = { NAN, NAN, NAN, NAN, NAN, NAN };
        float ninf[6] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY };
        float mixed[6] = { NAN, 1.0f, -INFINITY, NAN, 1.2f, -INFINITY };
        float pinf[6] = { 0.0f, INFINITY, NAN, INFINITY, 5.0f, -INFINITY };

        ASSERT_EQ(rbee_sampler_sample(s, nan6), 0);
        ASSERT_EQ(rbee_sampler_sample(s, ninf), 0);
        ASSERT_EQ(rbee_sampler_sample(s, pinf), 1);
        for (int i = 0; i < 2000; i++) {
                int32_t t = rbee_sampler_sample(s, mixed);
                ASSERT_TRUE(t == 1 || t == 4);
        }

        /* the same through greedy and through every filter */
        p.temperature = 0.0f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *g = make(&p, 6);
        ASSERT_EQ(rbee_sampler_sample(g, nan6), 0);
        ASSERT_EQ(rbee_sampler_sample(g, mixed), 4);
        ASSERT_EQ(rbee_sampler_sample(g, pinf), 1);

        rbee_sampler_default_params(&p);
        p.seed = 3;
        p.repeat_penalty = 1.2f;
        _cleanup_(rbee_sampler_freep) rbee_sampler *d = make(&p, 6);
        rbee_sampler_accept(d, 4);
        rbee_sampler_accept(d, 2);
        for (int i = 0; i < 2000; i++) {
                int32_t t = rbee_sampler_sample(d, mixed);
                ASSERT_TRUE(t == 1 || t == 4);
        }
        ASSERT_EQ(rbee_sampler_sample(d, nan6), 0);

        /* NULL logits do not crash */
        ASSERT_EQ(rbee_sampler_sample(d, NULL), 0);
}

static double now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

static double time_config(const char *name, struct rbee_sampler_params *p, float *l, int32_t n) {
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = make(p, n);
        const int rounds = 100;
        double t0, ms;

        for (int i = 0; i < 64; i++)
                rbee_sampler_accept(s, (int32_t) (i * 2371) % n);
        (void) rbee_sampler_sample(s, l); /* warm the caches */
        t0 = now_ms();
        for (int i = 0; i < rounds; i++) {
                int32_t t = rbee_sampler_sample(s, l);
                ASSERT_TRUE(t >= 0 && t < n);
        }
        ms = (now_ms() - t0) / rounds;
        fprintf(stderr, "  %-34s %.3f ms/sample\n", name, ms);
        return ms;
}

/* Generous bounds: CI machines are slow and may run sanitizers. */
TEST_TIMEOUT(speed_152k_vocab, 60) {
        enum { N = 151936 };
        static float l[N];
        struct rbee_sampler_params p;

        /* roughly LLM-like: a broad body and a few strong candidates */
        fill_gauss(l, N, 2.5f);
        for (int i = 0; i < 20; i++)
                l[(i * 7919) % N] += 12.0f;

        rbee_sampler_default_params(&p);
        p.seed = 1;
        p.repeat_penalty = 1.1f;
        ASSERT_TRUE(time_config("default chain (top_k 40)", &p, l, N) < 25.0);

        p.top_k = 0;
        ASSERT_TRUE(time_config("top_k off, top_p 0.95, min_p 0.05", &p, l, N) < 25.0);

        p.min_p = 0.0f;
        ASSERT_TRUE(time_config("top_k off, top_p 0.95, min_p off", &p, l, N) < 25.0);

        /* nearly flat: top_p has to keep most of the vocabulary */
        fill_gauss(l, N, 0.05f);
        ASSERT_TRUE(time_config("flat logits, top_p 0.95", &p, l, N) < 25.0);

        p.temperature = 0.0f;
        ASSERT_TRUE(time_config("greedy", &p, l, N) < 25.0);
}
