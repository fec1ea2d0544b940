/* SPDX-License-Identifier: MIT */

#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "macros.h"
#include "sampler.h"

/* Histogram resolution for cutting a large candidate set by mass. */
#define MASS_BUCKETS 1024

struct rbee_sampler {
        struct rbee_sampler_params params;
        int32_t n_vocab;
        uint64_t seed;          /* effective seed */
        uint64_t rng[4];        /* xoshiro256** state */

        float *work;            /* [n_vocab] sanitised logits after penalties */
        /* Candidates, as parallel arrays so that the exp() passes vectorise:
         * logit, weight (exp(logit - max) at temperature 1 for top_p, then
         * at the sampling temperature) and token id. */
        float *cl, *cw;         /* [n_vocab] */
        int32_t *cid;           /* [n_vocab] */
        float *vw;              /* [n_vocab] weight of each token, for top_p without top_k */
        uint16_t *bkt;          /* [n_vocab] logit bucket of each token, likewise */
        double mass[4][MASS_BUCKETS];

        /* Penalty history: how often each token occurs in the window, and the
         * list of tokens that occur at all, so that applying the penalties
         * costs O(distinct tokens), not O(n_vocab). */
        bool penalties;
        uint32_t *count;        /* [n_vocab] */
        int32_t *slot;          /* [n_vocab] index into distinct, valid while count > 0 */
        int32_t *distinct;      /* [n_vocab] */
        size_t n_distinct;
        int32_t *ring;          /* [ring_cap] the window; NULL for the whole history */
        size_t ring_cap, ring_len, ring_head; /* ring_head: oldest entry */
};

void rbee_sampler_default_params(struct rbee_sampler_params *p) {
        if (!p)
                return;
        *p = (struct rbee_sampler_params) {
                .temperature = 0.8f,
                .top_k = 40,
                .top_p = 0.95f,
                .min_p = 0.05f,
                .repeat_penalty = 1.0f,
                .repeat_last_n = 64,
                .presence_penalty = 0.0f,
                .frequency_penalty = 0.0f,
                .seed = RBEE_SAMPLER_SEED_RANDOM,
        };
}

/* ---- random numbers ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
        uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k) {
        return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4]) {
        uint64_t result = rotl64(s[1] * 5, 7) * 9;
        uint64_t t = s[1] << 17;

        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl64(s[3], 45);
        return result;
}

static void rng_seed(uint64_t state[4], uint64_t seed) {
        uint64_t x = seed;

        /* splitmix64 never yields four zero words in a row, so the xoshiro
         * state is never all zero */
        for (size_t i = 0; i < 4; i++)
                state[i] = splitmix64(&x);
}

/* uniform in [0, 1) with 53 random bits */
static double rng_uniform(uint64_t state[4]) {
        return (double) (xoshiro_next(state) >> 11) * 0x1.0p-53;
}

static uint64_t random_seed(const void *salt) {
        uint64_t v = 0;
        ssize_t l;

        l = getrandom(&v, sizeof v, GRND_NONBLOCK);
        if (l != (ssize_t) sizeof v) {
                struct timespec ts = {};
                uint64_t x;

                /* no entropy pool yet (early boot): the clock, pid and an
                 * address are unpredictable enough for sampling */
                (void) clock_gettime(CLOCK_MONOTONIC, &ts);
                x = (uint64_t) ts.tv_sec * UINT64_C(1000000000) + (uint64_t) ts.tv_nsec;
                x ^= (uint64_t) getpid() << 32;
                x ^= (uint64_t) (uintptr_t) salt;
                v = splitmix64(&x);
        }
        /* a drawn seed must replay as itself when passed back in params */
        if (v == RBEE_SAMPLER_SEED_RANDOM)
                v ^= UINT64_C(1) << 63;
        return v;
}

/* ---- vector kernels ------------------------------------------------------
 *
 * exp() is computed by our own routine (Cephes' single-precision polynomial)
 * rather than libm's expf: it is several times faster, vectorises, and gives
 * the same bits in the scalar and the AVX2 version, so which one runs never
 * changes a result. The AVX2 functions are built for "avx2" without "fma"
 * on purpose: the compiler must not fuse a multiply and an add there, since
 * the scalar code (baseline x86-64, or any other architecture built without
 * FMA) cannot. Sums run in eight double lanes, element i into lane i % 8,
 * and the lanes are combined in one fixed order, again identical in both.
 * Each AVX2 function clears the upper register halves (vzeroupper) before
 * any scalar code runs: GCC does not always do it by itself, and SSE code
 * running with dirty upper halves is several times slower on Intel. */

#define EXP_LO (-87.3f)         /* below: 0 (exp(-87.3) is 1.2e-38) */
#define EXP_HI 88.0f            /* keeps the exponent field below 255 */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f     /* ln 2 = C1 - C2, C1 exact in few bits */
#define EXP_C2 (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

static inline float exp_scalar(float x) {
        float fx, r, r2, y, scale;
        uint32_t bits;

        if (!(x >= EXP_LO))
                return 0.0f;
        if (x > EXP_HI)
                x = EXP_HI;
        fx = floorf(x * EXP_LOG2E + 0.5f);
        r = x - fx * EXP_C1;
        r = r - fx * EXP_C2;
        r2 = r * r;
        y = EXP_P0;
        y = y * r + EXP_P1;
        y = y * r + EXP_P2;
        y = y * r + EXP_P3;
        y = y * r + EXP_P4;
        y = y * r + EXP_P5;
        y = y * r2 + r + 1.0f;
        bits = (uint32_t) ((int32_t) fx + 127) << 23;
        memcpy(&scale, &bits, sizeof scale);
        return y * scale;
}

static double lanes_total(const double a[8]) {
        return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* out[i] = exp((in[i] - sub) * mul) */
static void exp_map_scalar(const float *in, float *out, size_t n, float sub, float mul) {
        for (size_t i = 0; i < n; i++)
                out[i] = exp_scalar((in[i] - sub) * mul);
}

/* sum of exp((in[i] - sub) * mul) */
static double sum_exp_scalar(const float *in, size_t n, float sub, float mul) {
        double a[8] = {};

        for (size_t i = 0; i < n; i++)
                a[i % 8] += (double) exp_scalar((in[i] - sub) * mul);
        return lanes_total(a);
}

static double sum_scalar(const float *w, size_t n) {
        double a[8] = {};

        for (size_t i = 0; i < n; i++)
                a[i % 8] += (double) w[i];
        return lanes_total(a);
}

/* NaN becomes -inf */
static void sanitize_scalar(const float *in, float *out, size_t n) {
        for (size_t i = 0; i < n; i++)
                out[i] = isnan(in[i]) ? -INFINITY : in[i];
}

static float max_scalar(const float *l, size_t n) {
        float m[8] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                       -INFINITY, -INFINITY, -INFINITY, -INFINITY };
        float r = -INFINITY;

        /* eight independent chains instead of one long dependency */
        for (size_t i = 0; i < n; i++)
                m[i % 8] = l[i] > m[i % 8] ? l[i] : m[i % 8];
        for (size_t j = 0; j < 8; j++)
                r = m[j] > r ? m[j] : r;
        return r;
}

/* Gather, in id order, the tokens with l[i] >= t: their logits to ol and
 * ids to oid. Returns the count. */
static size_t gather_at_least_scalar(const float *l, size_t n, float t, float *ol, int32_t *oid) {
        size_t m = 0;

        for (size_t i = 0; i < n; i++)
                if (l[i] >= t) {
                        ol[m] = l[i];
                        oid[m++] = (int32_t) i;
                }
        return m;
}

/* Gather, in id order, the tokens that come no later than (cl, cid) in
 * candidate order. Branch-free: half of them may be kept, at random. */
static size_t gather_upto_scalar(const float *l, size_t n, float cl, int32_t cid,
                                 float *ol, int32_t *oid) {
        size_t m = 0;

        for (size_t i = 0; i < n; i++) {
                float v = l[i];

                ol[m] = v;
                oid[m] = (int32_t) i;
                m += (v > cl) | ((v == cl) & ((int32_t) i <= cid));
        }
        return m;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <pthread.h>
#define HAVE_AVX2_KERNELS 1

__attribute__((target("avx2")))
static inline __m256 exp_avx2(__m256 x) {
        const __m256 lo = _mm256_set1_ps(EXP_LO);
        __m256 keep, fx, r, r2, y;
        __m256i e;

        keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
        x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(EXP_HI)), lo);
        fx = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                                           _mm256_set1_ps(0.5f)));
        r = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(EXP_C1)));
        r = _mm256_sub_ps(r, _mm256_mul_ps(fx, _mm256_set1_ps(EXP_C2)));
        r2 = _mm256_mul_ps(r, r);
        y = _mm256_set1_ps(EXP_P0);
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EXP_P1));
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EXP_P2));
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EXP_P3));
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EXP_P4));
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EXP_P5));
        y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, r2), r), _mm256_set1_ps(1.0f));
        e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
        return _mm256_and_ps(keep, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

__attribute__((target("avx2")))
static void exp_map_avx2(const float *in, float *out, size_t n, float sub, float mul) {
        const __m256 vs = _mm256_set1_ps(sub), vm = _mm256_set1_ps(mul);
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                __m256 x = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(in + i), vs), vm);
                _mm256_storeu_ps(out + i, exp_avx2(x));
        }
        _mm256_zeroupper();
        exp_map_scalar(in + i, out + i, n - i, sub, mul);
}

/* lanes a[0..3] from the low half of each 8-block, a[4..7] from the high */
__attribute__((target("avx2")))
static void store_lanes(double a[8], __m256d lo, __m256d hi) {
        _mm256_storeu_pd(a, lo);
        _mm256_storeu_pd(a + 4, hi);
}

__attribute__((target("avx2")))
static double sum_exp_avx2(const float *in, size_t n, float sub, float mul) {
        const __m256 vs = _mm256_set1_ps(sub), vm = _mm256_set1_ps(mul);
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
        double a[8];
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                __m256 e = exp_avx2(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(in + i), vs), vm));
                lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
                hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
        }
        store_lanes(a, lo, hi);
        _mm256_zeroupper();
        for (size_t j = 0; i < n; i++, j++)
                a[j] += (double) exp_scalar((in[i] - sub) * mul);
        return lanes_total(a);
}

__attribute__((target("avx2")))
static double sum_avx2(const float *w, size_t n) {
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
        double a[8];
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                __m256 e = _mm256_loadu_ps(w + i);
                lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
                hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
        }
        store_lanes(a, lo, hi);
        _mm256_zeroupper();
        for (size_t j = 0; i < n; i++, j++)
                a[j] += (double) w[i];
        return lanes_total(a);
}

__attribute__((target("avx2")))
static void sanitize_avx2(const float *in, float *out, size_t n) {
        const __m256 ninf = _mm256_set1_ps(-INFINITY);
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                __m256 v = _mm256_loadu_ps(in + i);
                __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
                _mm256_storeu_ps(out + i, _mm256_blendv_ps(v, ninf, nan));
        }
        _mm256_zeroupper();
        sanitize_scalar(in + i, out + i, n - i);
}

__attribute__((target("avx2")))
static float max_avx2(const float *l, size_t n) {
        __m256 m = _mm256_set1_ps(-INFINITY);
        float lanes[8], r;
        size_t i = 0;

        /* no NaN here (sanitised), so max_ps is an exact max */
        for (; i + 8 <= n; i += 8)
                m = _mm256_max_ps(m, _mm256_loadu_ps(l + i));
        _mm256_storeu_ps(lanes, m);
        _mm256_zeroupper();
        r = max_scalar(l + i, n - i);
        for (size_t j = 0; j < 8; j++)
                r = lanes[j] > r ? lanes[j] : r;
        return r;
}

/* compress[mask]: the lanes whose mask bit is set, in order (for
 * _mm256_permutevar8x32: AVX2 has no compress instruction) */
static int32_t compress_lut[256][8];
static pthread_once_t compress_once = PTHREAD_ONCE_INIT;

static void compress_init(void) {
        for (unsigned mask = 0; mask < 256; mask++) {
                unsigned k = 0;

                for (unsigned b = 0; b < 8; b++)
                        if (mask & (1u << b))
                                compress_lut[mask][k++] = (int32_t) b;
                while (k < 8)
                        compress_lut[mask][k++] = 0;
        }
}

/* Store the lanes of v and ids selected by mask at ol/oid (writing all 8
 * lanes, so there must be room), return how many were selected. */
__attribute__((target("avx2,popcnt")))
static inline size_t compress_store(__m256 v, __m256i ids, __m256 mask, float *ol, int32_t *oid) {
        unsigned bits = (unsigned) _mm256_movemask_ps(mask);
        __m256i perm = _mm256_loadu_si256((const __m256i *) compress_lut[bits]);

        _mm256_storeu_ps(ol, _mm256_permutevar8x32_ps(v, perm));
        _mm256_storeu_si256((__m256i *) oid, _mm256_permutevar8x32_epi32(ids, perm));
        return (size_t) __builtin_popcount(bits);
}

/* Output position m never passes input position i, and only full blocks of
 * 8 go through here, so the 8-lane stores stay inside the n-sized outputs. */
__attribute__((target("avx2,popcnt")))
static size_t gather_at_least_avx2(const float *l, size_t n, float t, float *ol, int32_t *oid) {
        const __m256 vt = _mm256_set1_ps(t);
        __m256i ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i eight = _mm256_set1_epi32(8);
        size_t i = 0, m = 0;

        for (; i + 8 <= n; i += 8) {
                __m256 v = _mm256_loadu_ps(l + i);
                m += compress_store(v, ids, _mm256_cmp_ps(v, vt, _CMP_GE_OQ), ol + m, oid + m);
                ids = _mm256_add_epi32(ids, eight);
        }
        _mm256_zeroupper();
        for (; i < n; i++)
                if (l[i] >= t) {
                        ol[m] = l[i];
                        oid[m++] = (int32_t) i;
                }
        return m;
}

__attribute__((target("avx2,popcnt")))
static size_t gather_upto_avx2(const float *l, size_t n, float cl, int32_t cid,
                               float *ol, int32_t *oid) {
        const __m256 vc = _mm256_set1_ps(cl);
        /* id <= cid, as cid + 1 > id (cid is a token id, far below INT32_MAX) */
        const __m256i vid = _mm256_set1_epi32(cid + 1);
        __m256i ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i eight = _mm256_set1_epi32(8);
        size_t i = 0, m = 0;

        for (; i + 8 <= n; i += 8) {
                __m256 v = _mm256_loadu_ps(l + i);
                __m256 gt = _mm256_cmp_ps(v, vc, _CMP_GT_OQ);
                __m256 eq = _mm256_cmp_ps(v, vc, _CMP_EQ_OQ);
                __m256 le = _mm256_castsi256_ps(_mm256_cmpgt_epi32(vid, ids));
                __m256 mask = _mm256_or_ps(gt, _mm256_and_ps(eq, le));

                m += compress_store(v, ids, mask, ol + m, oid + m);
                ids = _mm256_add_epi32(ids, eight);
        }
        _mm256_zeroupper();
        for (; i < n; i++) {
                float v = l[i];

                ol[m] = v;
                oid[m] = (int32_t) i;
                m += (v > cl) | ((v == cl) & ((int32_t) i <= cid));
        }
        return m;
}

static bool use_avx2(void) {
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}

static void kernels_init(void) {
        if (use_avx2())
                (void) pthread_once(&compress_once, compress_init);
}
#else
#define HAVE_AVX2_KERNELS 0
static void kernels_init(void) {
}
#endif

static void exp_map(const float *in, float *out, size_t n, float sub, float mul) {
#if HAVE_AVX2_KERNELS
        if (use_avx2())
                return exp_map_avx2(in, out, n, sub, mul);
#endif
        exp_map_scalar(in, out, n, sub, mul);
}

static double sum_exp(const float *in, size_t n, float sub, float mul) {
#if HAVE_AVX2_KERNELS
        if (use_avx2())
                return sum_exp_avx2(in, n, sub, mul);
#endif
        return sum_exp_scalar(in, n, sub, mul);
}

static double sum(const float *w, size_t n) {
#if HAVE_AVX2_KERNELS
        if (use_avx2())
                return sum_avx2(w, n);
#endif
        return sum_scalar(w, n);
}

static void sanitize(const float *in, float *out, size_t n) {
#if HAVE_AVX2_KERNELS
        if (use_avx2())
                return sanitize_avx2(in, out, n);
#endif
        sanitize_scalar(in, out, n);
}

static float max_of(const float *l, size_t n) {
#if HAVE_AVX2_KERNELS
        if (use_avx2())
                return max_avx2(l, n);
#endif
        return max_scalar(l, n);
}

static size_t gather_at_least(const float *l, size_t n, float t, float *ol, int32_t *oid) {
#if HAVE_AVX2_KERNELS
        if (use_avx2())
                return gather_at_least_avx2(l, n, t, ol, oid);
#endif
        return gather_at_least_scalar(l, n, t, ol, oid);
}

static size_t gather_upto(const float *l, size_t n, float cl, int32_t cid, float *ol, int32_t *oid) {
#if HAVE_AVX2_KERNELS
        if (use_avx2())
                return gather_upto_avx2(l, n, cl, cid, ol, oid);
#endif
        return gather_upto_scalar(l, n, cl, cid, ol, oid);
}

/* ---- creation ---------------------------------------------------------- */

static bool params_valid(const struct rbee_sampler_params *p) {
        if (!isfinite(p->temperature) || !isfinite(p->top_p) || !isfinite(p->min_p) ||
            !isfinite(p->repeat_penalty) || !isfinite(p->presence_penalty) ||
            !isfinite(p->frequency_penalty))
                return false;
        if (p->top_p < 0.0f)
                return false;
        if (p->min_p < 0.0f || p->min_p > 1.0f)
                return false;
        if (p->repeat_penalty <= 0.0f)
                return false;
        if (p->repeat_last_n < -1)
                return false;
        return true;
}

int rbee_sampler_new(const struct rbee_sampler_params *p, int32_t n_vocab, rbee_sampler **ret) {
        _cleanup_(rbee_sampler_freep) rbee_sampler *s = NULL;
        size_t n;

        if (!p || !ret || n_vocab <= 0)
                return -EINVAL;
        if (!params_valid(p))
                return -EINVAL;
        if (p->repeat_last_n > RBEE_SAMPLER_MAX_LAST_N)
                return -E2BIG;

        n = (size_t) n_vocab;
        kernels_init();
        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->params = *p;
        s->n_vocab = n_vocab;

        s->work = malloc_multiply(n, sizeof *s->work);
        s->cl = malloc_multiply(n, sizeof *s->cl);
        s->cw = malloc_multiply(n, sizeof *s->cw);
        s->cid = malloc_multiply(n, sizeof *s->cid);
        s->vw = malloc_multiply(n, sizeof *s->vw);
        s->bkt = malloc_multiply(n, sizeof *s->bkt);
        if (!s->work || !s->cl || !s->cw || !s->cid || !s->vw || !s->bkt)
                return -ENOMEM;

        s->penalties = p->repeat_last_n != 0 &&
                       (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f ||
                        p->frequency_penalty != 0.0f);
        if (s->penalties) {
                s->count = calloc(n, sizeof *s->count);
                s->slot = malloc_multiply(n, sizeof *s->slot);
                s->distinct = malloc_multiply(n, sizeof *s->distinct);
                if (!s->count || !s->slot || !s->distinct)
                        return -ENOMEM;
                if (p->repeat_last_n > 0) {
                        s->ring_cap = (size_t) p->repeat_last_n;
                        s->ring = malloc_multiply(s->ring_cap, sizeof *s->ring);
                        if (!s->ring)
                                return -ENOMEM;
                }
        }

        s->seed = p->seed == RBEE_SAMPLER_SEED_RANDOM ? random_seed(s) : p->seed;
        rng_seed(s->rng, s->seed);

        *ret = TAKE_PTR(s);
        return 0;
}

rbee_sampler *rbee_sampler_free(rbee_sampler *s) {
        if (!s)
                return NULL;
        free(s->work);
        free(s->cl);
        free(s->cw);
        free(s->cid);
        free(s->vw);
        free(s->bkt);
        free(s->count);
        free(s->slot);
        free(s->distinct);
        free(s->ring);
        free(s);
        return NULL;
}

uint64_t rbee_sampler_seed(const rbee_sampler *s) {
        return s ? s->seed : 0;
}

int32_t rbee_sampler_n_vocab(const rbee_sampler *s) {
        return s ? s->n_vocab : 0;
}

/* ---- penalty history --------------------------------------------------- */

static void history_add(rbee_sampler *s, int32_t t) {
        if (s->count[t] == 0) {
                s->slot[t] = (int32_t) s->n_distinct;
                s->distinct[s->n_distinct++] = t;
        }
        /* only the whole-history mode can get here, after 2^32 tokens */
        if (s->count[t] < UINT32_MAX)
                s->count[t]++;
}

static void history_remove(rbee_sampler *s, int32_t t) {
        int32_t last;

        if (s->count[t] == 0)
                return;
        if (--s->count[t] > 0)
                return;
        /* swap-remove from the distinct list */
        last = s->distinct[--s->n_distinct];
        s->distinct[s->slot[t]] = last;
        s->slot[last] = s->slot[t];
}

void rbee_sampler_reset(rbee_sampler *s) {
        if (!s)
                return;
        if (s->penalties) {
                for (size_t i = 0; i < s->n_distinct; i++)
                        s->count[s->distinct[i]] = 0;
                s->n_distinct = 0;
                s->ring_len = s->ring_head = 0;
        }
        rng_seed(s->rng, s->seed);
}

void rbee_sampler_accept(rbee_sampler *s, int32_t token) {
        if (!s || !s->penalties || token < 0 || token >= s->n_vocab)
                return;
        if (s->ring) {
                if (s->ring_len == s->ring_cap) {
                        history_remove(s, s->ring[s->ring_head]);
                        s->ring[s->ring_head] = token;
                        s->ring_head = (s->ring_head + 1) % s->ring_cap;
                } else {
                        s->ring[(s->ring_head + s->ring_len) % s->ring_cap] = token;
                        s->ring_len++;
                }
        }
        history_add(s, token);
}

static void apply_penalties(rbee_sampler *s, float *l) {
        const struct rbee_sampler_params *p = &s->params;

        for (size_t i = 0; i < s->n_distinct; i++) {
                int32_t t = s->distinct[i];
                float c = (float) s->count[t];
                float v = l[t];

                if (v <= 0.0f)
                        v *= p->repeat_penalty;
                else
                        v /= p->repeat_penalty;
                v -= c * p->frequency_penalty + p->presence_penalty;
                l[t] = v;
        }
}

/* ---- selection -----------------------------------------------------------
 *
 * Candidate order: higher logit first, then lower id. It is a strict total
 * order, so every cut below is unique and independent of memory layout. */

struct cands {
        float *l, *w;
        int32_t *id;
};

static inline bool cand_before(const struct cands *c, size_t a, size_t b) {
        return c->l[a] > c->l[b] || (c->l[a] == c->l[b] && c->id[a] < c->id[b]);
}

static inline void cand_swap(const struct cands *c, size_t a, size_t b) {
        float l = c->l[a], w = c->w[a];
        int32_t id = c->id[a];

        c->l[a] = c->l[b];
        c->w[a] = c->w[b];
        c->id[a] = c->id[b];
        c->l[b] = l;
        c->w[b] = w;
        c->id[b] = id;
}

/* Put (v, id) into the heap hl/hid of m entries at hole j, moving worse
 * children up: the root is the worst entry, the last in candidate order. */
static void heap_sift_down(float *hl, int32_t *hid, size_t m, size_t j, float v, int32_t id) {
        for (;;) {
                size_t a = 2 * j + 1, b = a + 1, worst;

                if (a >= m)
                        break;
                worst = a;
                if (b < m && (hl[b] < hl[a] || (hl[b] == hl[a] && hid[b] > hid[a])))
                        worst = b;
                if (!(hl[worst] < v || (hl[worst] == v && hid[worst] > id)))
                        break;
                hl[j] = hl[worst];
                hid[j] = hid[worst];
                j = worst;
        }
        hl[j] = v;
        hid[j] = id;
}

/* Keep the k first tokens of l[0, n) (finite ones only) in a binary heap
 * whose root is the worst kept one, then sort the heap: writes them to
 * c[0, m) in candidate order and returns m = min(k, finite tokens). One
 * compare per token for almost all of them: no sort of the vocabulary.
 * Tokens come in id order, so a token tying the root on logit has a higher
 * id and never displaces it. The sort makes what follows (mass sums, the
 * quickselect) independent of how the heap happened to be arranged, so that
 * the same k candidates from elsewhere (a device reduction, see
 * rbee_sampler_sample_top()) give the same token. */
static size_t top_k_heap(const float *l, size_t n, size_t k, const struct cands *c) {
        float *hl = c->l;
        int32_t *hid = c->id;
        size_t m = 0;

        for (size_t i = 0; i < n; i++) {
                float v = l[i];
                size_t j;

                if (!(v > -INFINITY))
                        continue;
                if (m < k) {
                        /* sift up: parents are "before" their children in
                         * reverse, i.e. the root is the last in order */
                        j = m++;
                        while (j > 0) {
                                size_t p = (j - 1) / 2;
                                if (!(hl[p] > v || (hl[p] == v && hid[p] < (int32_t) i)))
                                        break;
                                hl[j] = hl[p];
                                hid[j] = hid[p];
                                j = p;
                        }
                        hl[j] = v;
                        hid[j] = (int32_t) i;
                        continue;
                }
                if (!(v > hl[0]))
                        continue;
                heap_sift_down(hl, hid, m, 0, v, (int32_t) i);
        }
        /* heapsort: the worst goes to the end, again and again */
        for (size_t end = m; end > 1; end--) {
                float v = hl[end - 1];
                int32_t id = hid[end - 1];

                hl[end - 1] = hl[0];
                hid[end - 1] = hid[0];
                heap_sift_down(hl, hid, end - 1, 0, v, id);
        }
        return m;
}

/* Pivot positions come from a private generator with a fixed start, so that
 * results stay deterministic and the sampler's own stream is not touched;
 * random pivots keep quickselect O(n) expected on any input. */
static inline size_t pivot_index(uint64_t *ps, size_t lo, size_t hi) {
        *ps ^= *ps << 13;
        *ps ^= *ps >> 7;
        *ps ^= *ps << 17;
        return lo + (size_t) (*ps % (uint64_t) (hi - lo));
}

/* Lomuto partition of c[lo, hi) around a random pivot: returns s with
 * c[lo, s) before the pivot, the pivot at s, and c(s, hi) after it. */
static size_t partition(const struct cands *c, size_t lo, size_t hi, uint64_t *ps) {
        size_t s = lo;

        cand_swap(c, pivot_index(ps, lo, hi), hi - 1);
        for (size_t i = lo; i < hi - 1; i++)
                if (cand_before(c, i, hi - 1))
                        cand_swap(c, i, s++);
        cand_swap(c, s, hi - 1);
        return s;
}

/* Find the shortest prefix of c[base, base + n), in candidate order, whose
 * weight sum reaches target, move it to the front of that range and return
 * its length (n if the total stays below target; at least 1). A weighted
 * quickselect: expected O(n), no sorting. */
static size_t select_mass_small(const struct cands *c, size_t base, size_t n, double target) {
        uint64_t ps = UINT64_C(0x2545F4914F6CDD1D);
        size_t lo = base, hi = base + n;
        double before = 0.0; /* weight of c[base, lo), all inside the prefix */

        while (lo < hi) {
                size_t s = partition(c, lo, hi, &ps);
                double upper = 0.0;

                for (size_t i = lo; i < s; i++)
                        upper += c->w[i];
                if (before + upper >= target)
                        hi = s;
                else if (before + upper + c->w[s] >= target)
                        return s + 1 - base;
                else {
                        before += upper + c->w[s];
                        lo = s + 1;
                }
        }
        /* Only reached when the total falls short of target (top_p close to
         * 1, or sums that differ at rounding level): all of c[base, lo). */
        return lo > base ? lo - base : 1;
}

/* Sort a few candidates by id (insertion sort; weights are not carried). */
static void sort_by_id(const struct cands *c, size_t n) {
        for (size_t i = 1; i < n; i++) {
                float l = c->l[i];
                int32_t id = c->id[i];
                size_t j = i;

                for (; j > 0 && c->id[j - 1] > id; j--) {
                        c->l[j] = c->l[j - 1];
                        c->id[j] = c->id[j - 1];
                }
                c->l[j] = l;
                c->id[j] = id;
        }
}

/* The last of c[0, n) in candidate order. n > 0. */
static size_t last_in_order(const struct cands *c, size_t n) {
        size_t last = 0;

        for (size_t i = 1; i < n; i++)
                if (cand_before(c, last, i))
                        last = i;
        return last;
}

static size_t first_index_of(const float *l, size_t n, float v) {
        size_t i = 0;

        while (i < n - 1 && !(l[i] == v))
                i++;
        return i;
}

/* Lowest logit >= thr; +inf if none. */
static float min_at_least(const float *l, size_t n, float thr) {
        float m[8] = { INFINITY, INFINITY, INFINITY, INFINITY,
                       INFINITY, INFINITY, INFINITY, INFINITY };
        float r = INFINITY;

        for (size_t i = 0; i < n; i++) {
                float v = l[i] >= thr ? l[i] : INFINITY;
                m[i % 8] = v < m[i % 8] ? v : m[i % 8];
        }
        for (size_t j = 0; j < 8; j++)
                r = m[j] < r ? m[j] : r;
        return r;
}

/* Bucket of a logit: 0 holds the top, MASS_BUCKETS - 1 everything far below. */
static inline uint16_t bucket_of(float v, float max, float scale) {
        float b = (max - v) * scale;
        return (uint16_t) (b < (float) (MASS_BUCKETS - 1) ? b : (float) (MASS_BUCKETS - 1));
}

/* top_p over the whole vocabulary (top_k off), without moving tokens
 * around: a histogram of the weights w over logit buckets finds the bucket
 * in which the mass reaches target; only that bucket's tokens are gathered
 * and cut by the weighted quickselect. Bucket indices are monotonic in the
 * logit (each float step is), so the result is exactly the shortest prefix
 * in candidate order. Candidates are the tokens with l >= thr. Returns true
 * with the last kept token in *ret_l and *ret_id, or false when every
 * candidate is kept. */
static bool mass_cut_vocab(rbee_sampler *s, const float *l, const float *w, size_t n,
                           float max, float thr, double target, float *ret_l, int32_t *ret_id) {
        struct cands c = { .l = s->cl, .w = s->cw, .id = s->cid };
        uint16_t *bkt = s->bkt;
        size_t cut = MASS_BUCKETS, k = 0, kept, last;
        double cum = 0.0, before = 0.0;
        float range, scale = 0.0f;

        /* Beyond 88 below the top, weights are 0 in floats anyway: capping
         * the range keeps the buckets fine when a few logits sit far down
         * (masked tokens), which all share the last bucket. */
        range = max - min_at_least(l, n, thr);
        if (range > 88.0f)
                range = 88.0f;
        if (range > 0.0f)
                scale = (float) (MASS_BUCKETS - 1) / range;

        /* four interleaved histograms, so that runs of tokens landing in the
         * same bucket do not queue behind each other's stores */
        memset(s->mass, 0, sizeof s->mass);
        for (size_t i = 0; i < n; i++)
                if (l[i] >= thr) {
                        bkt[i] = bucket_of(l[i], max, scale);
                        s->mass[i % 4][bkt[i]] += (double) w[i];
                }
        for (size_t b = 0; b < MASS_BUCKETS; b++) {
                double v = (s->mass[0][b] + s->mass[1][b]) + (s->mass[2][b] + s->mass[3][b]);

                if (cum + v >= target) {
                        cut = b;
                        before = cum;
                        break;
                }
                cum += v;
        }
        if (cut == MASS_BUCKETS)
                return false;

        for (size_t i = 0; i < n; i++)
                if (l[i] >= thr && bkt[i] == cut) {
                        c.l[k] = l[i];
                        c.w[k] = w[i];
                        c.id[k++] = (int32_t) i;
                }
        kept = select_mass_small(&c, 0, k, target - before);
        last = last_in_order(&c, kept);
        *ret_l = c.l[last];
        *ret_id = c.id[last];
        return true;
}

/* ---- sampling ----------------------------------------------------------
 *
 * Every filter keeps a prefix of the candidate order (top_k the first k,
 * top_p the shortest prefix with enough mass, min_p those within a factor of
 * the top), so the survivors are always "every candidate up to some last
 * one". The draw then walks the survivors in id order: which token a random
 * number picks depends on the kept set and the weights only, never on how
 * the selection happened to arrange memory. */

/* Up to this many survivors of top_k are sorted by id directly; more are
 * gathered again from the vocabulary, which comes in id order. */
#define SORT_MAX 64
/* Up to this many min_p candidates are cut by mass directly. */
#define FEW_MAX 4096

/* Put survivors c[0, m), a prefix of the candidate order in any
 * arrangement, in id order; returns their count. */
static size_t sort_survivors(const struct cands *c, size_t m, const float *l, size_t n) {
        size_t last;

        if (m <= SORT_MAX) {
                sort_by_id(c, m);
                return m;
        }
        last = last_in_order(c, m);
        return gather_upto(l, n, c->l[last], c->id[last], c->l, c->id);
}

/* top_k on: the m first candidates, c[0, m) in candidate order, cut by
 * min_p, then by mass over what top_k kept. Leaves the survivors in c[0, m)
 * in id order. l and n (the vocabulary) are read only for more than
 * SORT_MAX survivors. */
static size_t cut_top_k(rbee_sampler *s, const struct cands *c, size_t m, const float *l, size_t n,
                        float max, float thr) {
        const struct rbee_sampler_params *p = &s->params;
        double z = 0.0;
        size_t k = 0;

        /* top_p's mass is over what top_k left, before min_p */
        if (p->top_p < 1.0f)
                z = sum_exp(c->l, m, max, 1.0f);
        for (size_t j = 0; j < m; j++)
                if (c->l[j] >= thr) {
                        c->l[k] = c->l[j];
                        c->id[k++] = c->id[j];
                }
        m = k;
        /* min_p kept a prefix; cutting that by mass gives the shorter of the
         * two prefixes, as the chain top_p -> min_p does */
        if (p->top_p < 1.0f && m > 1) {
                exp_map(c->l, c->w, m, max, 1.0f);
                m = select_mass_small(c, 0, m, (double) p->top_p * z);
        }
        return sort_survivors(c, m, l, n);
}

/* top_k off: min_p and the mass cut over the whole vocabulary, without
 * sorting it. Leaves the survivors in c[0, m) in id order. */
static size_t keep_vocab(rbee_sampler *s, const struct cands *c, const float *l, size_t n,
                         float max, float thr) {
        const struct rbee_sampler_params *p = &s->params;
        float cut_l;
        int32_t cut_id;

        if (p->top_p < 1.0f && p->min_p > 0.0f) {
                /* min_p usually leaves a handful: cut those directly, with
                 * the mass still taken over the whole vocabulary */
                size_t m = gather_at_least(l, n, thr, c->l, c->id);

                if (m <= FEW_MAX) {
                        double z = sum_exp(l, n, max, 1.0f);

                        exp_map(c->l, c->w, m, max, 1.0f);
                        m = select_mass_small(c, 0, m, (double) p->top_p * z);
                        return sort_survivors(c, m, l, n);
                }
        }
        if (p->top_p < 1.0f) {
                exp_map(l, s->vw, n, max, 1.0f);
                if (mass_cut_vocab(s, l, s->vw, n, max, thr, (double) p->top_p * sum(s->vw, n),
                                   &cut_l, &cut_id))
                        return gather_upto(l, n, cut_l, cut_id, c->l, c->id);
        }
        return gather_at_least(l, n, thr, c->l, c->id);
}

/* Draw among the survivors c[0, m) (m > 0, in id order) at the sampling
 * temperature: exactly one random number. */
static int32_t draw(rbee_sampler *s, const struct cands *c, size_t m, float max) {
        double total, r, acc = 0.0;

        exp_map(c->l, c->w, m, max, 1.0f / s->params.temperature);
        total = sum(c->w, m);
        r = rng_uniform(s->rng) * total;
        for (size_t j = 0; j < m; j++) {
                acc += (double) c->w[j];
                if (r < acc)
                        return c->id[j];
        }
        /* rounding pushed r to the very end */
        return c->id[m - 1];
}

/* The device path hands at most this many candidates, all sorted by id directly. */
_Static_assert(RBEE_SAMPLER_TOP_MAX <= SORT_MAX, "top candidates must not need the vocabulary");

int32_t rbee_sampler_sample(rbee_sampler *s, const float *logits) {
        const struct rbee_sampler_params *p;
        struct cands c;
        size_t n, m;
        float *l, max, thr;

        if (!s || !logits)
                return 0;
        p = &s->params;
        n = (size_t) s->n_vocab;
        l = s->work;
        c = (struct cands) { .l = s->cl, .w = s->cw, .id = s->cid };

        sanitize(logits, l, n);
        if (s->penalties)
                apply_penalties(s, l);

        max = max_of(l, n);
        /* Greedy, or nothing a softmax could weigh: +inf wins outright, and
         * all -inf gives token 0. A temperature so small that its inverse
         * overflows is greedy in effect (and would give 0 * inf below). */
        if (p->temperature <= 0.0f || isinf(max) || isinf(1.0f / p->temperature))
                return (int32_t) first_index_of(l, n, max);

        /* candidates: finite, and within min_p of the top */
        thr = p->min_p > 0.0f ? max + logf(p->min_p) : -FLT_MAX;

        if (p->top_p <= 0.0f) {
                /* only the first candidate: the max, lowest id */
                c.l[0] = max;
                c.id[0] = (int32_t) first_index_of(l, n, max);
                m = 1;
        } else if (p->top_k > 0 && (size_t) p->top_k < n) {
                m = top_k_heap(l, n, (size_t) p->top_k, &c);
                m = cut_top_k(s, &c, m, l, n, max, thr);
        } else
                m = keep_vocab(s, &c, l, n, max, thr);

        return draw(s, &c, m, max);
}

int32_t rbee_sampler_top_needed(const rbee_sampler *s) {
        const struct rbee_sampler_params *p;

        if (!s || s->penalties)
                return 0;
        p = &s->params;
        if (p->temperature <= 0.0f || isinf(1.0f / p->temperature) || p->top_p <= 0.0f)
                return 1;
        if (p->top_k > 0 && p->top_k < s->n_vocab && p->top_k <= RBEE_SAMPLER_TOP_MAX)
                return p->top_k;
        return 0;
}

int32_t rbee_sampler_sample_top(rbee_sampler *s, const float *l, const int32_t *id, size_t n) {
        const struct rbee_sampler_params *p;
        struct cands c;
        int32_t need;
        size_t m = 0;
        float max, thr;

        need = rbee_sampler_top_needed(s);
        if (need == 0 || !l || !id || n < (size_t) need || n > RBEE_SAMPLER_TOP_MAX)
                return -EINVAL;
        for (size_t j = 0; j < n; j++) {
                if (isnan(l[j]) || id[j] < 0 || id[j] >= s->n_vocab)
                        return -EINVAL;
                if (j > 0 && !(l[j - 1] > l[j] || (l[j - 1] == l[j] && id[j - 1] < id[j])))
                        return -EINVAL;
        }
        p = &s->params;
        c = (struct cands) { .l = s->cl, .w = s->cw, .id = s->cid };

        /* The same steps as rbee_sampler_sample() on what they would see:
         * l[0] is the max, the first in candidate order. */
        max = l[0];
        if (p->temperature <= 0.0f || isinf(max) || isinf(1.0f / p->temperature))
                return id[0];
        thr = p->min_p > 0.0f ? max + logf(p->min_p) : -FLT_MAX;
        if (p->top_p <= 0.0f) {
                c.l[0] = max;
                c.id[0] = id[0];
                m = 1;
        } else {
                /* what top_k_heap() keeps: the finite ones among the first top_k */
                while (m < (size_t) need && l[m] > -INFINITY) {
                        c.l[m] = l[m];
                        c.id[m] = id[m];
                        m++;
                }
                m = cut_top_k(s, &c, m, NULL, 0, max, thr);
        }
        return draw(s, &c, m, max);
}
