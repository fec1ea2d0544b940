/* SPDX-License-Identifier: MIT */
/* Block formats, conversions and dot products: fp16/bf16 exhaustively,
 * quantization error per type on several kinds of data, SIMD kernels against
 * the portable ones, and bytes against the llama.cpp-quantized models in
 * shared/models (re-quantizing their F32 original must give the same file). */

#include <float.h>
#include <sys/mman.h>
#include <pthread.h>
#include <time.h>

#include "harness.h"
#include "macros.h"
#include "quants.h"

/* ---- data ---------------------------------------------------------------- */

struct rng {
        uint64_t s;
};

static uint64_t rng_u64(struct rng *r) {
        /* xorshift64* */
        r->s ^= r->s >> 12;
        r->s ^= r->s << 25;
        r->s ^= r->s >> 27;
        return r->s * 2685821657736338717ULL;
}

static double rng_unit(struct rng *r) {
        return (double) (rng_u64(r) >> 11) * 0x1p-53;
}

static float rng_gauss(struct rng *r) {
        double u = rng_unit(r), v = rng_unit(r);
        return (float) (sqrt(-2.0 * log(u + 1e-300)) * cos(2 * M_PI * v));
}

enum dist {
        DIST_GAUSS,
        DIST_UNIFORM,
        DIST_OUTLIERS, /* gaussian with one value in 64 twenty times larger */
        DIST_LAPLACE,
        DIST_SHIFTED,  /* gaussian around +2: all-positive blocks */
        DIST_TINY,     /* gaussian at 1e-3: Q6_K/Q8_0 block scales become fp16 subnormals */
        DIST_ZERO,
        DIST_CONST_POS,
        DIST_CONST_NEG,
        _DIST_MAX,
};

static const char *const dist_name[_DIST_MAX] = {
        "gauss", "uniform", "outliers", "laplace", "shifted", "tiny", "zero", "const+", "const-",
};

static void fill(float *x, int64_t n, enum dist d, uint64_t seed) {
        struct rng r = { seed * 0x9e3779b97f4a7c15ULL + 1 };

        for (int64_t i = 0; i < n; i++) {
                switch (d) {
                case DIST_GAUSS:
                        x[i] = rng_gauss(&r);
                        break;
                case DIST_UNIFORM:
                        x[i] = (float) (rng_unit(&r) * 2 - 1);
                        break;
                case DIST_OUTLIERS:
                        x[i] = rng_gauss(&r) * ((rng_u64(&r) & 63) == 0 ? 20.f : 1.f);
                        break;
                case DIST_LAPLACE: {
                        double u = rng_unit(&r) - 0.5;
                        x[i] = (float) (u < 0 ? log(1 + 2 * u + 1e-300) : -log(1 - 2 * u + 1e-300));
                        break;
                }
                case DIST_SHIFTED:
                        x[i] = 2.f + 0.5f * rng_gauss(&r);
                        break;
                case DIST_TINY:
                        x[i] = 1e-3f * rng_gauss(&r);
                        break;
                case DIST_ZERO:
                        x[i] = 0.f;
                        break;
                case DIST_CONST_POS:
                        x[i] = 0.375f;
                        break;
                case DIST_CONST_NEG:
                        x[i] = -1.3f;
                        break;
                default:
                        abort();
                }
        }
}

static double rms(const float *x, int64_t n) {
        double s = 0;
        for (int64_t i = 0; i < n; i++)
                s += (double) x[i] * x[i];
        return sqrt(s / (double) n);
}

static double rms_diff(const float *x, const float *y, int64_t n) {
        double s = 0;
        for (int64_t i = 0; i < n; i++)
                s += ((double) x[i] - y[i]) * ((double) x[i] - y[i]);
        return sqrt(s / (double) n);
}

static size_t row_bytes(enum rbee_type t, int64_t n) {
        uint64_t b;
        ASSERT_OK(rbee_type_row_size(t, (uint64_t) n, &b));
        return (size_t) b;
}

static void *xmalloc(size_t n) {
        void *p = malloc(n ? n : 1);
        ASSERT_NOT_NULL(p);
        return p;
}

static uint32_t f32bits_of(float f) {
        uint32_t u;
        memcpy(&u, &f, sizeof(u));
        return u;
}

static float f32_of_bits(uint32_t u) {
        float f;
        memcpy(&f, &u, sizeof(f));
        return f;
}

static const enum rbee_type weight_types[] = {
        RBEE_TYPE_F32, RBEE_TYPE_F16, RBEE_TYPE_BF16, RBEE_TYPE_Q4_0, RBEE_TYPE_Q4_1, RBEE_TYPE_Q5_0,
        RBEE_TYPE_Q5_1, RBEE_TYPE_Q8_0, RBEE_TYPE_Q4_K, RBEE_TYPE_Q5_K, RBEE_TYPE_Q6_K,
};

/* Largest error (RMS of the error over RMS of the data) allowed per type,
 * on any of the non-degenerate distributions, and on gaussian data alone.
 * Measured with the reference quantizers (n = 16384):
 *
 *         gauss  uniform outliers laplace shifted tiny
 *   Q4_0  0.0858 0.0653  0.1425   0.1075  0.0522  0.0863
 *   Q4_1  0.0785 0.0605  0.1154   0.0908  0.0191  0.0783
 *   Q5_0  0.0427 0.0314  0.0861   0.0531  0.0261  0.0427
 *   Q5_1  0.0381 0.0293  0.0529   0.0439  0.0093  0.0382
 *   Q8_0  0.0053 0.0038  0.0112   0.0067  0.0033  0.0054
 *   Q4_K  0.0717 0.0545  0.0994   0.0843  0.0254  0.0717
 *   Q5_K  0.0364 0.0276  0.0526   0.0426  0.0126  0.0370
 *   Q6_K  0.0178 0.0133  0.0317   0.0214  0.0110  0.0205
 *
 * (Q4_K's gaussian figure is what llama.cpp's own reference quantizer gets:
 * same search.) The bounds sit 10-20% above the worst case so that a real
 * regression (a wrong scale, a swapped nibble, a lost search) fails at once:
 * those give errors near 100%, or several times these. */
static double error_bound(enum rbee_type t) {
        switch (t) {
        case RBEE_TYPE_F32: return 0;
        case RBEE_TYPE_F16: return 5.0e-4;   /* 2^-11 relative rounding at most */
        case RBEE_TYPE_BF16: return 4.0e-3;  /* 2^-8 at most */
        case RBEE_TYPE_Q8_0: return 0.013;
        case RBEE_TYPE_Q6_K: return 0.037;
        case RBEE_TYPE_Q5_1: return 0.062;
        case RBEE_TYPE_Q5_K: return 0.062;
        case RBEE_TYPE_Q5_0: return 0.10;
        case RBEE_TYPE_Q4_K: return 0.115;
        case RBEE_TYPE_Q4_1: return 0.135;
        case RBEE_TYPE_Q4_0: return 0.165;
        default: return 0;
        }
}

static double gauss_error_bound(enum rbee_type t) {
        switch (t) {
        case RBEE_TYPE_Q8_0: return 0.006;
        case RBEE_TYPE_Q6_K: return 0.020;
        case RBEE_TYPE_Q5_1: return 0.042;
        case RBEE_TYPE_Q5_K: return 0.040;
        case RBEE_TYPE_Q5_0: return 0.047;
        case RBEE_TYPE_Q4_K: return 0.079;
        case RBEE_TYPE_Q4_1: return 0.086;
        case RBEE_TYPE_Q4_0: return 0.094;
        default: return error_bound(t);
        }
}

/* ---- fp16 / bf16 ----------------------------------------------------------- */

static bool is_half_nan(uint16_t h) {
        return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}

TEST(fp16_known_values) {
        ASSERT_EQ(rbee_fp32_to_fp16(1.0f), 0x3c00);
        ASSERT_EQ(rbee_fp32_to_fp16(-2.0f), 0xc000);
        ASSERT_EQ(rbee_fp32_to_fp16(0.5f), 0x3800);
        ASSERT_EQ(rbee_fp32_to_fp16(65504.f), 0x7bff);
        ASSERT_EQ(rbee_fp32_to_fp16(65519.f), 0x7bff);
        ASSERT_EQ(rbee_fp32_to_fp16(65520.f), 0x7c00); /* the tie rounds to even: infinity */
        ASSERT_EQ(rbee_fp32_to_fp16(1e10f), 0x7c00);
        ASSERT_EQ(rbee_fp32_to_fp16(-1e10f), 0xfc00);
        ASSERT_EQ(rbee_fp32_to_fp16(INFINITY), 0x7c00);
        ASSERT_EQ(rbee_fp32_to_fp16(-INFINITY), 0xfc00);
        ASSERT_EQ(rbee_fp32_to_fp16(0.f), 0x0000);
        ASSERT_EQ(rbee_fp32_to_fp16(-0.f), 0x8000);
        ASSERT_EQ(rbee_fp32_to_fp16(0x1p-14f), 0x0400);     /* smallest normal */
        ASSERT_EQ(rbee_fp32_to_fp16(0x1p-24f), 0x0001);     /* smallest subnormal */
        ASSERT_EQ(rbee_fp32_to_fp16(0x1p-25f), 0x0000);     /* tie to even zero */
        ASSERT_EQ(rbee_fp32_to_fp16(0x1.000002p-25f), 0x0001);
        ASSERT_EQ(rbee_fp32_to_fp16(0x3p-25f), 0x0002);     /* 1.5 ulp: tie to even 2 */
        ASSERT_EQ(rbee_fp32_to_fp16(0x1p-30f), 0x0000);
        ASSERT_EQ(rbee_fp32_to_fp16(FLT_MIN), 0x0000);
        ASSERT_EQ(rbee_fp32_to_fp16(0x1.ff8p-15f), 0x03ff); /* largest subnormal */
        ASSERT_EQ(rbee_fp32_to_fp16(0x1.ffcp-15f), 0x0400); /* tie: rounds up into the normals (even) */
        ASSERT_EQ(rbee_fp32_to_fp16(0x1.ffbp-15f), 0x03ff);
        ASSERT_EQ(rbee_fp32_to_fp16(1.f + 0x1p-11f), 0x3c00);       /* tie, even */
        ASSERT_EQ(rbee_fp32_to_fp16(1.f + 0x3p-11f), 0x3c02);       /* tie, even */
        ASSERT_EQ(rbee_fp32_to_fp16(1.f + 0x1.002p-11f), 0x3c01);  /* just past the tie */
        ASSERT_EQ(rbee_fp32_to_fp16(3.14159265f), 0x4248);
        ASSERT_TRUE(is_half_nan(rbee_fp32_to_fp16(NAN)));
        ASSERT_EQ(rbee_fp32_to_fp16(NAN) & 0x200, 0x200);

        ASSERT_TRUE(rbee_fp16_to_fp32(0x3c00) == 1.0f);
        ASSERT_TRUE(rbee_fp16_to_fp32(0xc000) == -2.0f);
        ASSERT_TRUE(rbee_fp16_to_fp32(0x7bff) == 65504.f);
        ASSERT_TRUE(rbee_fp16_to_fp32(0x0001) == 0x1p-24f);
        ASSERT_TRUE(rbee_fp16_to_fp32(0x03ff) == 0x1.ff8p-15f);
        ASSERT_TRUE(rbee_fp16_to_fp32(0x0400) == 0x1p-14f);
        ASSERT_TRUE(rbee_fp16_to_fp32(0x7c00) == INFINITY);
        ASSERT_TRUE(rbee_fp16_to_fp32(0xfc00) == -INFINITY);
        ASSERT_TRUE(rbee_fp16_to_fp32(0x8000) == 0.f && signbit(rbee_fp16_to_fp32(0x8000)));
        ASSERT_TRUE(isnan(rbee_fp16_to_fp32(0x7e00)));
        ASSERT_TRUE(isnan(rbee_fp16_to_fp32(0x7c01)));
}

TEST(fp16_exhaustive_round_trip) {
        for (uint32_t h = 0; h < 65536; h++) {
                float f = rbee_fp16_to_fp32((rbee_fp16) h);
                rbee_fp16 back = rbee_fp32_to_fp16(f);

                if (is_half_nan((uint16_t) h)) {
                        ASSERT_TRUE(isnan(f));
                        /* NaNs come back quiet with their payload. */
                        ASSERT_EQ(back, h | 0x200);
                        continue;
                }
                ASSERT_EQ(back, h);
                ASSERT_EQ(!!signbit(f), !!(h & 0x8000));
        }
}

/* Between every two neighbouring finite halves: the midpoint rounds to the
 * even one, anything off the midpoint to the nearer one. */
TEST(fp16_exhaustive_rounding) {
        for (uint32_t h = 0; h < 0x7bff; h++)
                for (int neg = 0; neg < 2; neg++) {
                        uint16_t s = neg ? 0x8000 : 0;
                        float lo = rbee_fp16_to_fp32((rbee_fp16) (h | s));
                        float hi = rbee_fp16_to_fp32((rbee_fp16) ((h + 1) | s));
                        float mid = (lo + hi) / 2; /* exact: 12 significant bits */
                        uint16_t even = (h & 1) ? (uint16_t) (h + 1) : (uint16_t) h;

                        ASSERT_TRUE((double) mid == ((double) lo + hi) / 2);
                        ASSERT_EQ(rbee_fp32_to_fp16(mid), even | s);
                        ASSERT_EQ(rbee_fp32_to_fp16(nextafterf(mid, lo)), h | s);
                        ASSERT_EQ(rbee_fp32_to_fp16(nextafterf(mid, hi)), (h + 1) | s);
                }
}

/* The F16C instructions the SIMD table uses must give the scalar bits. */
TEST(fp16_simd_matches_scalar) {
        const struct rbee_quant_ops *simd, *scalar;
        const int64_t n = 1 << 20;
        _cleanup_(freep) float *f = xmalloc(n * sizeof(float));
        _cleanup_(freep) float *g = xmalloc(n * sizeof(float));
        _cleanup_(freep) uint16_t *h1 = xmalloc(n * sizeof(uint16_t));
        _cleanup_(freep) uint16_t *h2 = xmalloc(n * sizeof(uint16_t));
        struct rng r = { 42 };

        simd = rbee_quant_ops(RBEE_TYPE_F16);
        rbee_quant_force_scalar(true);
        scalar = rbee_quant_ops(RBEE_TYPE_F16);
        rbee_quant_force_scalar(false);
        ASSERT_NOT_NULL(simd);
        ASSERT_NOT_NULL(scalar);
        if (strcmp(rbee_quant_simd(), "scalar") == 0)
                SKIP("no SIMD on this CPU");

        for (uint32_t i = 0; i < 65536; i++)
                h1[i] = (uint16_t) i;
        simd->to_float(h1, f, 65536);
        scalar->to_float(h1, g, 65536);
        ASSERT_EQ(memcmp(f, g, 65536 * sizeof(float)), 0);

        /* Random bit patterns cover every exponent, NaNs and subnormals included. */
        for (int64_t i = 0; i < n; i++) {
                uint32_t u = (uint32_t) rng_u64(&r);
                memcpy(&f[i], &u, sizeof(u));
        }
        simd->from_float(f, h1, n);
        scalar->from_float(f, h2, n);
        for (int64_t i = 0; i < n; i++)
                if (h1[i] != h2[i])
                        FAIL("fp32 %a (0x%08x): F16C 0x%04x, scalar 0x%04x", f[i], (unsigned) f32bits_of(f[i]),
                             h1[i], h2[i]);
}

TEST(bf16_known_values) {
        ASSERT_EQ(rbee_fp32_to_bf16(1.0f), 0x3f80);
        ASSERT_EQ(rbee_fp32_to_bf16(-2.0f), 0xc000);
        ASSERT_EQ(rbee_fp32_to_bf16(3.14159265f), 0x4049);
        ASSERT_EQ(rbee_fp32_to_bf16(0x1.01p0f), 0x3f80);      /* tie, even */
        ASSERT_EQ(rbee_fp32_to_bf16(0x1.03p0f), 0x3f82);      /* tie, even */
        ASSERT_EQ(rbee_fp32_to_bf16(0x1.010002p0f), 0x3f81);
        ASSERT_EQ(rbee_fp32_to_bf16(FLT_MAX), 0x7f80);        /* past the last bf16: infinity */
        ASSERT_EQ(rbee_fp32_to_bf16(INFINITY), 0x7f80);
        ASSERT_EQ(rbee_fp32_to_bf16(-INFINITY), 0xff80);
        ASSERT_EQ(rbee_fp32_to_bf16(-0.f), 0x8000);
        ASSERT_EQ(rbee_fp32_to_bf16(0x1p-133f), 0x0001);      /* subnormals are kept */
        ASSERT_EQ(rbee_fp32_to_bf16(0x1p-134f), 0x0000);      /* tie to even zero */
        uint16_t nan = rbee_fp32_to_bf16(NAN);
        ASSERT_TRUE((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
        /* A signalling NaN whose payload lives only in the low half stays a NaN. */
        ASSERT_TRUE(rbee_fp32_to_bf16(f32_of_bits(0x7f800001)) != 0x7f80);
        ASSERT_TRUE(rbee_bf16_to_fp32(0x3f80) == 1.0f);
        ASSERT_TRUE(rbee_bf16_to_fp32(0xc049) == -3.140625f);
}

TEST(bf16_exhaustive_round_trip) {
        for (uint32_t b = 0; b < 65536; b++) {
                float f = rbee_bf16_to_fp32((rbee_bf16) b);

                ASSERT_EQ(f32bits_of(f), b << 16);
                if ((b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0)
                        ASSERT_EQ(rbee_fp32_to_bf16(f), b | 0x40);
                else
                        ASSERT_EQ(rbee_fp32_to_bf16(f), b);
                /* Halfway to the next one rounds to even. */
                if ((b & 0x7fff) < 0x7f7f) {
                        uint32_t mid = (b << 16) | 0x8000;
                        uint32_t want = (b & 1) ? b + 1 : b;
                        ASSERT_EQ(rbee_fp32_to_bf16(f32_of_bits(mid)), want);
                        ASSERT_EQ(rbee_fp32_to_bf16(f32_of_bits(mid + 1)), b + 1);
                        ASSERT_EQ(rbee_fp32_to_bf16(f32_of_bits(mid - 1)), b);
                }
        }
}

/* ---- quantization error ------------------------------------------------- */

static bool is_block_type(enum rbee_type t) {
        return t != RBEE_TYPE_F32 && t != RBEE_TYPE_F16 && t != RBEE_TYPE_BF16;
}

/* Quantize n values of dist with the careful quantizer and return the
 * relative RMS error of the round trip (absolute when the data is all 0). */
static double round_trip_error(enum rbee_type t, enum dist d, int64_t n, uint64_t seed, float *x, float *y, void *q) {
        fill(x, n, d, seed);
        ASSERT_OK(rbee_quantize_row(t, x, q, n));
        ASSERT_OK(rbee_dequantize_row(t, q, y, n));
        double r = rms(x, n);
        return r > 0 ? rms_diff(x, y, n) / r : rms(y, n);
}

TEST_TIMEOUT(quantize_error_per_type, 60) {
        const int64_t n = 64 * QK_K;
        _cleanup_(freep) float *x = xmalloc(n * sizeof(float));
        _cleanup_(freep) float *y = xmalloc(n * sizeof(float));
        _cleanup_(freep) void *q = xmalloc(row_bytes(RBEE_TYPE_F32, n));

        for (size_t k = 0; k < ELEMENTSOF(weight_types); k++) {
                enum rbee_type t = weight_types[k];
                char line[512];
                int len = snprintf(line, sizeof(line), "%-5s", rbee_type_name(t));

                for (int d = 0; d < _DIST_MAX; d++) {
                        double err = round_trip_error(t, (enum dist) d, n, 1000 + (uint64_t) d, x, y, q);

                        if (len > 0 && (size_t) len < sizeof(line))
                                len += snprintf(line + len, sizeof(line) - (size_t) len, " %s=%.4f", dist_name[d], err);
                        switch (d) {
                        case DIST_ZERO:
                                /* Zeros stay exact zeros. */
                                ASSERT_TRUE(err == 0);
                                break;
                        case DIST_CONST_POS:
                        case DIST_CONST_NEG:
                                /* A constant row costs at most the rounding of one fp16/bf16 scale. */
                                if (!(err <= MIN(error_bound(t), 4e-3) + 1e-9))
                                        FAIL("%s on %s rows: error %.5f", rbee_type_name(t), dist_name[d], err);
                                break;
                        default:
                                if (!(err <= error_bound(t)))
                                        FAIL("%s on %s data: relative RMS error %.5f > bound %.5f",
                                             rbee_type_name(t), dist_name[d], err, error_bound(t));
                                if (d == DIST_GAUSS && !(err <= gauss_error_bound(t)))
                                        FAIL("%s on gaussian data: relative RMS error %.5f > bound %.5f",
                                             rbee_type_name(t), err, gauss_error_bound(t));
                        }
                }
                fprintf(stderr, "  error %s\n", line);
        }
}

/* Block scales: the K-quants' scale search must beat plain min/max scaling
 * (what a careless quantizer does), and more bits must mean less error. */
TEST(quantize_error_ordering) {
        const int64_t n = 32 * QK_K;
        _cleanup_(freep) float *x = xmalloc(n * sizeof(float));
        _cleanup_(freep) float *y = xmalloc(n * sizeof(float));
        _cleanup_(freep) void *q = xmalloc(row_bytes(RBEE_TYPE_F32, n));

        double e4_1 = round_trip_error(RBEE_TYPE_Q4_1, DIST_GAUSS, n, 7, x, y, q);
        double e4k = round_trip_error(RBEE_TYPE_Q4_K, DIST_GAUSS, n, 7, x, y, q);
        double e5_1 = round_trip_error(RBEE_TYPE_Q5_1, DIST_GAUSS, n, 7, x, y, q);
        double e5k = round_trip_error(RBEE_TYPE_Q5_K, DIST_GAUSS, n, 7, x, y, q);
        double e6k = round_trip_error(RBEE_TYPE_Q6_K, DIST_GAUSS, n, 7, x, y, q);
        double e8 = round_trip_error(RBEE_TYPE_Q8_0, DIST_GAUSS, n, 7, x, y, q);

        /* Q4_K spends fewer bits per value than Q4_1 (4.5 vs 5) yet searches its scales. */
        ASSERT_TRUE(e4k < e4_1 * 1.05);
        ASSERT_TRUE(e5k < e5_1 * 1.05);
        ASSERT_TRUE(e5k < e4k * 0.6);
        ASSERT_TRUE(e6k < e5k * 0.6);
        ASSERT_TRUE(e8 < e6k * 0.5);
}

/* Quantizing what a quantization gives back should land on (nearly) the
 * same codes: the format's fixed points are stable. */
TEST(quantize_requantize_stable) {
        const int64_t n = 64 * QK_K;
        _cleanup_(freep) float *x = xmalloc(n * sizeof(float));
        _cleanup_(freep) float *y1 = xmalloc(n * sizeof(float));
        _cleanup_(freep) float *y2 = xmalloc(n * sizeof(float));
        _cleanup_(freep) uint8_t *q1 = xmalloc(row_bytes(RBEE_TYPE_F32, n));
        _cleanup_(freep) uint8_t *q2 = xmalloc(row_bytes(RBEE_TYPE_F32, n));

        for (size_t k = 0; k < ELEMENTSOF(weight_types); k++) {
                enum rbee_type t = weight_types[k];
                const struct rbee_type_traits *tr = rbee_type_traits(t);
                size_t nb = (size_t) (n / tr->block_size), same = 0;

                fill(x, n, DIST_GAUSS, 99);
                ASSERT_OK(rbee_quantize_row(t, x, q1, n));
                ASSERT_OK(rbee_dequantize_row(t, q1, y1, n));
                ASSERT_OK(rbee_quantize_row(t, y1, q2, n));
                ASSERT_OK(rbee_dequantize_row(t, q2, y2, n));
                for (size_t b = 0; b < nb; b++)
                        same += memcmp(q1 + b * tr->type_size, q2 + b * tr->type_size, tr->type_size) == 0;
                double drift = rms_diff(y1, y2, n) / rms(y1, n);
                fprintf(stderr, "  requantize %-5s: %zu/%zu blocks identical, drift %.5f\n", rbee_type_name(t), same,
                        nb, drift);

                switch (t) {
                case RBEE_TYPE_F32:
                case RBEE_TYPE_F16:
                case RBEE_TYPE_BF16:
                case RBEE_TYPE_Q4_0:
                case RBEE_TYPE_Q5_0:
                case RBEE_TYPE_Q8_0:
                        /* The largest value pins the scale exactly: a fixed point. */
                        ASSERT_EQ(same, nb);
                        break;
                case RBEE_TYPE_Q4_1:
                case RBEE_TYPE_Q5_1:
                        /* (max - min) / 15 may round to a neighbouring fp16 scale now and then. */
                        ASSERT_TRUE(same * 100 >= nb * 95);
                        ASSERT_TRUE(drift < 0.01);
                        break;
                default:
                        /* K-quants search again and may move a scale by a step, but the
                         * values hardly move: far less than the quantization error. */
                        ASSERT_TRUE(drift < error_bound(t) * 0.25);
                }
        }
}

TEST(quantize_api_errors) {
        float x[QK_K] = { 0 };
        uint8_t q[512];

        ASSERT_ERR(rbee_quantize_row(RBEE_TYPE_Q4_0, x, q, 31), -EINVAL);
        ASSERT_ERR(rbee_quantize_row(RBEE_TYPE_Q4_K, x, q, 128), -EINVAL);
        ASSERT_ERR(rbee_quantize_row(RBEE_TYPE_Q2_K, x, q, QK_K), -EINVAL);
        ASSERT_ERR(rbee_quantize_row((enum rbee_type) 63, x, q, 32), -EINVAL);
        ASSERT_ERR(rbee_quantize_row((enum rbee_type) 1000, x, q, 32), -EINVAL);
        ASSERT_ERR(rbee_quantize_row(RBEE_TYPE_Q8_0, x, q, -32), -EINVAL);
        ASSERT_ERR(rbee_dequantize_row(RBEE_TYPE_Q5_K, q, x, 100), -EINVAL);
        ASSERT_ERR(rbee_dequantize_row(RBEE_TYPE_Q3_K, q, x, QK_K), -EINVAL);
        ASSERT_OK(rbee_quantize_row(RBEE_TYPE_Q4_0, x, q, 0));
        ASSERT_OK(rbee_dequantize_row(RBEE_TYPE_F16, q, x, 7));

        ASSERT_TRUE(rbee_quant_ops(RBEE_TYPE_Q2_K) == NULL);
        ASSERT_TRUE(rbee_quant_ops((enum rbee_type) 4) == NULL);
        ASSERT_TRUE(rbee_quant_ops((enum rbee_type) 64) == NULL);
        ASSERT_TRUE(rbee_quant_ops((enum rbee_type) -1) == NULL);

        /* The table as the matrix-vector code relies on it. */
        for (size_t k = 0; k < ELEMENTSOF(weight_types); k++) {
                const struct rbee_quant_ops *ops = rbee_quant_ops(weight_types[k]);
                ASSERT_NOT_NULL(ops);
                ASSERT_EQ(ops->type, weight_types[k]);
                ASSERT_TRUE(ops->to_float && ops->from_float && ops->quantize_ref && ops->vec_dot);
                const struct rbee_quant_ops *act = rbee_quant_ops(ops->vec_dot_type);
                ASSERT_NOT_NULL(act);
                ASSERT_TRUE(act->from_float && act->to_float);
        }
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_F16)->vec_dot_type, RBEE_TYPE_F32);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_BF16)->vec_dot_type, RBEE_TYPE_F32);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_F32)->vec_dot_type, RBEE_TYPE_F32);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_Q4_0)->vec_dot_type, RBEE_TYPE_Q8_0);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_Q5_0)->vec_dot_type, RBEE_TYPE_Q8_0);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_Q8_0)->vec_dot_type, RBEE_TYPE_Q8_0);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_Q4_1)->vec_dot_type, RBEE_TYPE_Q8_1);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_Q5_1)->vec_dot_type, RBEE_TYPE_Q8_1);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_Q4_K)->vec_dot_type, RBEE_TYPE_Q8_K);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_Q5_K)->vec_dot_type, RBEE_TYPE_Q8_K);
        ASSERT_EQ(rbee_quant_ops(RBEE_TYPE_Q6_K)->vec_dot_type, RBEE_TYPE_Q8_K);
}

/* Non-finite input is garbage in, but must not crash or trip the sanitizers. */
TEST(quantize_nonfinite_input) {
        const int64_t n = 2 * QK_K;
        _cleanup_(freep) float *x = xmalloc(n * sizeof(float));
        _cleanup_(freep) float *y = xmalloc(n * sizeof(float));
        _cleanup_(freep) void *q = xmalloc(row_bytes(RBEE_TYPE_F32, n));

        fill(x, n, DIST_GAUSS, 5);
        x[3] = NAN;
        x[40] = INFINITY;
        x[300] = -INFINITY;
        x[301] = 1e30f;
        for (size_t k = 0; k < ELEMENTSOF(weight_types); k++) {
                ASSERT_OK(rbee_quantize_row(weight_types[k], x, q, n));
                ASSERT_OK(rbee_dequantize_row(weight_types[k], q, y, n));
        }
        static const enum rbee_type act[] = { RBEE_TYPE_Q8_0, RBEE_TYPE_Q8_1, RBEE_TYPE_Q8_K };
        for (int s = 0; s < 2; s++) {
                rbee_quant_force_scalar(s);
                for (size_t k = 0; k < ELEMENTSOF(act); k++)
                        rbee_quant_ops(act[k])->from_float(x, q, n);
        }
        rbee_quant_force_scalar(false);
}

/* ---- dot products ------------------------------------------------------- */

struct dot_case {
        enum rbee_type t;
        int64_t n;
        void *w, *a;             /* weight row, activation row (in vec_dot_type) */
        float *wf, *af;          /* their dequantized values */
};

static void dot_case_free(struct dot_case *c) {
        free(c->w);
        free(c->a);
        free(c->wf);
        free(c->af);
}

/* Weights of type t from dist; activations gaussian, quantized with the
 * activation type's from_float of the given table. */
static void dot_case_make(struct dot_case *c, enum rbee_type t, int64_t n, enum dist d, uint64_t seed,
                          const struct rbee_quant_ops *act_ops) {
        const struct rbee_quant_ops *ops = rbee_quant_ops(t);
        _cleanup_(freep) float *x = xmalloc(n * sizeof(float));

        *c = (struct dot_case) { .t = t, .n = n };
        c->w = xmalloc(row_bytes(t, n));
        c->a = xmalloc(row_bytes(ops->vec_dot_type, n));
        c->wf = xmalloc(n * sizeof(float));
        c->af = xmalloc(n * sizeof(float));
        fill(x, n, d, seed);
        ASSERT_OK(rbee_quantize_row(t, x, c->w, n));
        ASSERT_OK(rbee_dequantize_row(t, c->w, c->wf, n));
        fill(x, n, DIST_GAUSS, seed + 1);
        act_ops->from_float(x, c->a, n);
        act_ops->to_float(c->a, c->af, n);
}

static void ref_dot(const float *x, const float *y, int64_t n, double *ret_dot, double *ret_mag) {
        double s = 0, m = 0;
        for (int64_t i = 0; i < n; i++) {
                s += (double) x[i] * y[i];
                m += fabs((double) x[i] * y[i]);
        }
        *ret_dot = s;
        *ret_mag = m;
}

static void scalar_and_simd(enum rbee_type t, const struct rbee_quant_ops **ret_scalar, const struct rbee_quant_ops **ret_simd) {
        rbee_quant_force_scalar(true);
        *ret_scalar = rbee_quant_ops(t);
        rbee_quant_force_scalar(false);
        *ret_simd = rbee_quant_ops(t);
        ASSERT_NOT_NULL(*ret_scalar);
        ASSERT_NOT_NULL(*ret_simd);
}

/* How far a block dot may sit from the float dot of the dequantized rows,
 * relative to sum|w*a|: integer sums are exact, so only the final float
 * scaling rounds, except that Q4_1/Q5_1 fold their min through the
 * activation block's sum s, which Q8_1 keeps as fp16. */
static double dot_tolerance(enum rbee_type t) {
        return t == RBEE_TYPE_Q4_1 || t == RBEE_TYPE_Q5_1 ? 1e-3 : 2e-5;
}

TEST_TIMEOUT(vec_dot_simd_matches_scalar, 60) {
        static const int64_t sizes[] = { 4096, 768, 256 };
        bool have_simd = strcmp(rbee_quant_simd(), "scalar") != 0;

        for (size_t k = 0; k < ELEMENTSOF(weight_types); k++) {
                enum rbee_type t = weight_types[k];
                const struct rbee_quant_ops *sc, *si, *act_sc, *act_si;
                double worst_simd = 0, worst_ref = 0;

                scalar_and_simd(t, &sc, &si);
                scalar_and_simd(sc->vec_dot_type, &act_sc, &act_si);
                for (size_t s = 0; s < ELEMENTSOF(sizes); s++)
                        for (int d = 0; d < DIST_ZERO; d++) {
                                /* Float rows also get a length that leaves a tail. */
                                int64_t n = sizes[s] + (is_block_type(t) ? 0 : 13);
                                struct dot_case c;
                                double ref, mag;

                                dot_case_make(&c, t, n, (enum dist) d, 300 + (uint64_t) d * 7 + s, act_sc);
                                ref_dot(c.wf, c.af, n, &ref, &mag);
                                float v_sc = sc->vec_dot(n, c.w, c.a);
                                float v_si = si->vec_dot(n, c.w, c.a);
                                double e_simd = fabs((double) v_si - v_sc) / mag;
                                double e_ref = fabs((double) v_sc - ref) / mag;
                                worst_simd = MAX(worst_simd, e_simd);
                                worst_ref = MAX(worst_ref, e_ref);
                                if (!(e_simd <= 1e-5))
                                        FAIL("%s n=%" PRId64 " %s: simd %.9g vs scalar %.9g (|w*a| %.6g)", rbee_type_name(t),
                                             n, dist_name[d], v_si, v_sc, mag);
                                if (!(e_ref <= dot_tolerance(t)))
                                        FAIL("%s n=%" PRId64 " %s: vec_dot %.9g vs dequantized dot %.9g (|w*a| %.6g)",
                                             rbee_type_name(t), n, dist_name[d], v_sc, ref, mag);
                                dot_case_free(&c);

                                /* And with the activations from the SIMD quantizer. */
                                dot_case_make(&c, t, n, (enum dist) d, 300 + (uint64_t) d * 7 + s, act_si);
                                ref_dot(c.wf, c.af, n, &ref, &mag);
                                v_si = si->vec_dot(n, c.w, c.a);
                                if (!(fabs((double) v_si - ref) <= dot_tolerance(t) * mag))
                                        FAIL("%s n=%" PRId64 " %s (SIMD activations): vec_dot %.9g vs dequantized dot %.9g",
                                             rbee_type_name(t), n, dist_name[d], v_si, ref);
                                dot_case_free(&c);
                        }
                fprintf(stderr, "  dot %-5s: simd-scalar %.2e, scalar-dequantized %.2e (relative to sum|w*a|)%s\n",
                        rbee_type_name(t), worst_simd, worst_ref, have_simd ? "" : " [no SIMD]");
        }
}

/* Arbitrary block bytes (every code, every scale, extreme activations) so
 * that packing order, sign handling and 16-bit intermediate ranges are
 * exercised beyond what a quantizer produces. Activations stay in
 * [-127, 127], as every activation quantizer here guarantees. */
TEST(vec_dot_random_bytes) {
        const int64_t n = 8 * QK_K;
        struct rng r = { 77 };

        for (size_t k = 0; k < ELEMENTSOF(weight_types); k++) {
                enum rbee_type t = weight_types[k];
                const struct rbee_quant_ops *sc, *si;
                if (!is_block_type(t))
                        continue;
                scalar_and_simd(t, &sc, &si);
                enum rbee_type at = sc->vec_dot_type;
                size_t wb = row_bytes(t, n), ab = row_bytes(at, n);
                _cleanup_(freep) uint8_t *w = xmalloc(wb);
                _cleanup_(freep) uint8_t *a = xmalloc(ab);
                _cleanup_(freep) float *wf = xmalloc(n * sizeof(float));
                _cleanup_(freep) float *af = xmalloc(n * sizeof(float));
                const struct rbee_type_traits *wt = rbee_type_traits(t), *atr = rbee_type_traits(at);

                for (int round = 0; round < 20; round++) {
                        for (size_t i = 0; i < wb; i++)
                                w[i] = (uint8_t) rng_u64(&r);
                        /* Sane fp16 scales: |d| in [2^-10, 2^-2], either sign. */
                        for (size_t b = 0; b < wb / wt->type_size; b++) {
                                uint8_t *blk = w + b * wt->type_size;
                                size_t off = t == RBEE_TYPE_Q6_K ? wt->type_size - 2 : 0;
                                size_t nh = t == RBEE_TYPE_Q4_1 || t == RBEE_TYPE_Q5_1 || t == RBEE_TYPE_Q4_K ||
                                                    t == RBEE_TYPE_Q5_K ? 2 : 1;
                                for (size_t h = 0; h < nh; h++) {
                                        uint16_t v = rbee_fp32_to_fp16((float) (rng_unit(&r) * 0.25 + 0x1p-10) *
                                                                       ((rng_u64(&r) & 1) ? 1.f : -1.f));
                                        memcpy(blk + off + 2 * h, &v, 2);
                                }
                        }
                        for (size_t b = 0; b < ab / atr->type_size; b++) {
                                uint8_t *blk = a + b * atr->type_size;
                                if (at == RBEE_TYPE_Q8_K) {
                                        block_q8_K *y = (block_q8_K *) blk;
                                        y->d = (float) (rng_unit(&r) * 0.01 + 1e-4);
                                        for (int i = 0; i < QK_K; i++)
                                                /* Half the rounds hit the extremes only. */
                                                y->qs[i] = (int8_t) (round & 1 ? ((rng_u64(&r) & 1) ? 127 : -127)
                                                                              : (int) (rng_u64(&r) % 255) - 127);
                                        for (int g = 0; g < QK_K / 16; g++) {
                                                int s = 0;
                                                for (int i = 0; i < 16; i++)
                                                        s += y->qs[16 * g + i];
                                                y->bsums[g] = (int16_t) s;
                                        }
                                } else {
                                        size_t hdr = at == RBEE_TYPE_Q8_1 ? 4 : 2;
                                        int sum = 0;
                                        for (size_t i = hdr; i < atr->type_size; i++) {
                                                int v = round & 1 ? ((rng_u64(&r) & 1) ? 127 : -127) : (int) (rng_u64(&r) % 255) - 127;
                                                blk[i] = (uint8_t) (int8_t) v;
                                                sum += v;
                                        }
                                        float dd = (float) (rng_unit(&r) * 0.01 + 1e-4);
                                        uint16_t dh = rbee_fp32_to_fp16(dd);
                                        memcpy(blk, &dh, 2);
                                        if (at == RBEE_TYPE_Q8_1) {
                                                uint16_t sh = rbee_fp32_to_fp16(rbee_fp16_to_fp32(dh) * (float) sum);
                                                memcpy(blk + 2, &sh, 2);
                                        }
                                }
                        }
                        sc->to_float(w, wf, n);
                        rbee_quant_ops(at)->to_float(a, af, n);
                        double ref, mag;
                        ref_dot(wf, af, n, &ref, &mag);
                        float v_sc = sc->vec_dot(n, w, a), v_si = si->vec_dot(n, w, a);
                        if (!(fabs((double) v_si - v_sc) <= 1e-5 * mag))
                                FAIL("%s round %d: simd %.9g vs scalar %.9g (|w*a| %.6g)", rbee_type_name(t), round,
                                     v_si, v_sc, mag);
                        if (!(fabs((double) v_sc - ref) <= dot_tolerance(t) * mag))
                                FAIL("%s round %d: vec_dot %.9g vs dequantized dot %.9g (|w*a| %.6g)", rbee_type_name(t),
                                     round, v_sc, ref, mag);
                }
        }
}

/* The SIMD dequantizers (used to feed GEMMs) must give the portable code's
 * bits exactly, for every code and any finite scale, subnormals included. */
TEST(dequantize_simd_matches_scalar) {
        static const enum rbee_type types[] = {
                RBEE_TYPE_F16, RBEE_TYPE_BF16, RBEE_TYPE_Q4_0, RBEE_TYPE_Q4_1, RBEE_TYPE_Q5_0, RBEE_TYPE_Q5_1,
                RBEE_TYPE_Q8_0, RBEE_TYPE_Q8_1, RBEE_TYPE_Q4_K, RBEE_TYPE_Q5_K, RBEE_TYPE_Q6_K, RBEE_TYPE_Q8_K,
        };
        const int64_t n = 16 * QK_K;
        struct rng r = { 2024 };

        for (size_t k = 0; k < ELEMENTSOF(types); k++) {
                enum rbee_type t = types[k];
                const struct rbee_quant_ops *sc, *si;
                const struct rbee_type_traits *tr = rbee_type_traits(t);
                size_t rb = row_bytes(t, n);
                _cleanup_(freep) uint8_t *q = xmalloc(rb);
                _cleanup_(freep) float *y1 = xmalloc(n * sizeof(float));
                _cleanup_(freep) float *y2 = xmalloc(n * sizeof(float));

                scalar_and_simd(t, &sc, &si);
                for (int round = 0; round < 10; round++) {
                        for (size_t i = 0; i < rb; i++)
                                q[i] = (uint8_t) rng_u64(&r);
                        for (size_t b = 0; b < rb / tr->type_size; b++) {
                                uint8_t *blk = q + b * tr->type_size;
                                if (t == RBEE_TYPE_Q8_K) {
                                        float d = (float) rng_gauss(&r);
                                        memcpy(blk, &d, sizeof(d));
                                        continue;
                                }
                                /* Every fp16 field of the header finite (exponent below 31). */
                                size_t off = t == RBEE_TYPE_Q6_K ? tr->type_size - 2 : 0;
                                size_t nh = t == RBEE_TYPE_Q6_K || t == RBEE_TYPE_Q4_0 || t == RBEE_TYPE_Q5_0 ||
                                                    t == RBEE_TYPE_Q8_0 ? 1 : 2;
                                if (t == RBEE_TYPE_F16 || t == RBEE_TYPE_BF16)
                                        nh = 0;
                                for (size_t h = 0; h < nh; h++)
                                        if ((blk[off + 2 * h + 1] & 0x7c) == 0x7c)
                                                blk[off + 2 * h + 1] &= 0xbf;
                        }
                        if (t == RBEE_TYPE_F16 || t == RBEE_TYPE_BF16)
                                /* Whole rows of halves: skip NaN patterns, whose payload handling may differ. */
                                for (size_t i = 0; i + 1 < rb; i += 2) {
                                        uint16_t v;
                                        memcpy(&v, q + i, 2);
                                        bool nan = t == RBEE_TYPE_F16 ? is_half_nan(v)
                                                                      : (v & 0x7f80) == 0x7f80 && (v & 0x7f);
                                        if (nan)
                                                q[i + 1] &= 0x80;
                                }
                        sc->to_float(q, y1, n);
                        si->to_float(q, y2, n);
                        for (int64_t i = 0; i < n; i++)
                                if (f32bits_of(y1[i]) != f32bits_of(y2[i]))
                                        FAIL("%s round %d value %" PRId64 ": scalar %a, simd %a", rbee_type_name(t), round, i,
                                             y1[i], y2[i]);
                }
        }
}

/* The fast activation quantizers give valid blocks: close to the input,
 * Q8_1's s and Q8_K's group sums consistent with the codes, no -128. */
TEST(activation_quantizers) {
        static const enum rbee_type act[] = { RBEE_TYPE_Q8_0, RBEE_TYPE_Q8_1, RBEE_TYPE_Q8_K };
        const int64_t n = 16 * QK_K;
        _cleanup_(freep) float *x = xmalloc(n * sizeof(float));
        _cleanup_(freep) float *y = xmalloc(n * sizeof(float));
        _cleanup_(freep) uint8_t *q = xmalloc(row_bytes(RBEE_TYPE_F32, n));

        for (size_t k = 0; k < ELEMENTSOF(act); k++)
                for (int s = 0; s < 2; s++)
                        for (int d = 0; d < _DIST_MAX; d++) {
                                const struct rbee_quant_ops *ops;
                                rbee_quant_force_scalar(s);
                                ops = rbee_quant_ops(act[k]);
                                rbee_quant_force_scalar(false);

                                fill(x, n, (enum dist) d, 4242 + (uint64_t) d);
                                ops->from_float(x, q, n);
                                ops->to_float(q, y, n);
                                double rx = rms(x, n), err = rx > 0 ? rms_diff(x, y, n) / rx : rms(y, n);
                                /* Measured worst (outliers): 0.0107 for 32-blocks, 0.0252 for Q8_K's 256. */
                                double bound = act[k] == RBEE_TYPE_Q8_K ? 0.03 : 0.013;
                                if (!(err < bound))
                                        FAIL("%s (%s) on %s: error %.5f", rbee_type_name(act[k]), s ? "scalar" : "simd",
                                             dist_name[d], err);
                                if (act[k] == RBEE_TYPE_Q8_K) {
                                        const block_q8_K *b = (const block_q8_K *) q;
                                        for (int64_t i = 0; i < n / QK_K; i++)
                                                for (int g = 0; g < QK_K / 16; g++) {
                                                        int sum = 0;
                                                        for (int l = 0; l < 16; l++) {
                                                                ASSERT_TRUE(b[i].qs[16 * g + l] != -128);
                                                                sum += b[i].qs[16 * g + l];
                                                        }
                                                        ASSERT_EQ(b[i].bsums[g], sum);
                                                }
                                } else if (act[k] == RBEE_TYPE_Q8_1) {
                                        const block_q8_1 *b = (const block_q8_1 *) q;
                                        for (int64_t i = 0; i < n / QK8_1; i++) {
                                                int sum = 0;
                                                for (int l = 0; l < QK8_1; l++) {
                                                        ASSERT_TRUE(b[i].qs[l] != -128);
                                                        sum += b[i].qs[l];
                                                }
                                                float want = rbee_fp16_to_fp32(b[i].d) * (float) sum;
                                                /* The reference rounds s from the unrounded d: two fp16 roundings. */
                                                ASSERT_NEAR(rbee_fp16_to_fp32(b[i].s), want, fabsf(want) * 2.5e-3f + 1e-7f);
                                        }
                                } else {
                                        const block_q8_0 *b = (const block_q8_0 *) q;
                                        for (int64_t i = 0; i < n / QK8_0; i++)
                                                for (int l = 0; l < QK8_0; l++)
                                                        ASSERT_TRUE(b[i].qs[l] != -128);
                                }
                        }
}

struct dispatch_arg {
        const struct rbee_quant_ops *ops;
        const char *simd;
};

static void *dispatch_thread(void *p) {
        struct dispatch_arg *arg = p;
        arg->ops = rbee_quant_ops(RBEE_TYPE_Q4_K);
        arg->simd = rbee_quant_simd();
        return NULL;
}

/* First use from many threads at once resolves one table. */
TEST(dispatch_thread_safe) {
        pthread_t th[8];
        struct dispatch_arg args[8];

        for (int i = 0; i < 8; i++)
                ASSERT_EQ(pthread_create(&th[i], NULL, dispatch_thread, &args[i]), 0);
        for (int i = 0; i < 8; i++)
                ASSERT_EQ(pthread_join(th[i], NULL), 0);
        for (int i = 1; i < 8; i++) {
                ASSERT_TRUE(args[i].ops == args[0].ops);
                ASSERT_STREQ(args[i].simd, args[0].simd);
        }
        ASSERT_TRUE(args[0].ops->vec_dot != NULL);

        rbee_quant_force_scalar(true);
        ASSERT_STREQ(rbee_quant_simd(), "scalar");
        const struct rbee_quant_ops *sc = rbee_quant_ops(RBEE_TYPE_Q4_K);
        rbee_quant_force_scalar(false);
        ASSERT_STREQ(rbee_quant_simd(), args[0].simd);
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
                ASSERT_TRUE(strcmp(args[0].simd, "avx2") == 0 || strncmp(args[0].simd, "avx512", 6) == 0);
                ASSERT_TRUE(sc->vec_dot != args[0].ops->vec_dot);
        }
}

/* ---- llama.cpp files -------------------------------------------------------- */

/* A minimal GGUF tensor-table reader for these tests, independent of
 * engine/gguf.c: skips the metadata (reading only general.alignment) and
 * checks every length against the buffer. */

struct gg_tensor {
        char name[128];
        uint32_t type, n_dims;
        uint64_t ne[4];
        uint64_t n_rows;  /* ne[1] * ne[2] * ne[3] */
        const uint8_t *data;
        uint64_t size;
};

struct gg_file {
        uint8_t *buf;
        size_t size, pos;
        uint32_t alignment;
        size_t n_tensors;
        struct gg_tensor *tensors;
};

static const void *gg_take(struct gg_file *f, uint64_t n) {
        if (n > f->size - f->pos)
                FAIL("GGUF: read of %" PRIu64 " bytes at %zu past end (%zu)", n, f->pos, f->size);
        const void *p = f->buf + f->pos;
        f->pos += (size_t) n;
        return p;
}

static uint32_t gg_u32(struct gg_file *f) {
        uint32_t v;
        memcpy(&v, gg_take(f, 4), 4);
        return v;
}

static uint64_t gg_u64(struct gg_file *f) {
        uint64_t v;
        memcpy(&v, gg_take(f, 8), 8);
        return v;
}

static void gg_str(struct gg_file *f, const char **ret_s, uint64_t *ret_n) {
        uint64_t n = gg_u64(f);
        *ret_s = gg_take(f, n);
        *ret_n = n;
}

static void gg_skip_value(struct gg_file *f, uint32_t type, int depth) {
        static const uint8_t size[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
        const char *s;
        uint64_t n;

        if (type >= ELEMENTSOF(size) || depth > 2)
                FAIL("GGUF: bad value type %u", type);
        if (type == 8) {
                gg_str(f, &s, &n);
        } else if (type == 9) {
                uint32_t et = gg_u32(f);
                n = gg_u64(f);
                if (et != 8 && et != 9 && et < ELEMENTSOF(size)) {
                        if (n > f->size / size[et])
                                FAIL("GGUF: array too long");
                        gg_take(f, n * size[et]);
                } else
                        for (uint64_t i = 0; i < n; i++)
                                gg_skip_value(f, et, depth + 1);
        } else
                gg_take(f, size[type]);
}

static void gg_open(const char *path, struct gg_file *f) {
        *f = (struct gg_file) { .alignment = 32 };
        f->buf = (uint8_t *) harness_read_file(path, &f->size);

        ASSERT_EQ(memcmp(gg_take(f, 4), "GGUF", 4), 0);
        uint32_t version = gg_u32(f);
        ASSERT_TRUE(version == 2 || version == 3);
        uint64_t n_tensors = gg_u64(f), n_kv = gg_u64(f);
        ASSERT_TRUE(n_tensors < 100000 && n_kv < 100000);

        for (uint64_t i = 0; i < n_kv; i++) {
                const char *key;
                uint64_t klen;
                gg_str(f, &key, &klen);
                uint32_t type = gg_u32(f);
                if (klen == strlen("general.alignment") && memcmp(key, "general.alignment", klen) == 0 && type == 4) {
                        f->alignment = gg_u32(f);
                        ASSERT_TRUE(f->alignment > 0 && f->alignment <= 4096);
                } else
                        gg_skip_value(f, type, 0);
        }

        f->n_tensors = (size_t) n_tensors;
        f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(struct gg_tensor));
        ASSERT_NOT_NULL(f->tensors);
        uint64_t *offsets = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(uint64_t));
        ASSERT_NOT_NULL(offsets);
        for (size_t i = 0; i < f->n_tensors; i++) {
                struct gg_tensor *t = &f->tensors[i];
                const char *name;
                uint64_t nlen;

                gg_str(f, &name, &nlen);
                ASSERT_TRUE(nlen < sizeof(t->name));
                memcpy(t->name, name, (size_t) nlen);
                t->n_dims = gg_u32(f);
                ASSERT_TRUE(t->n_dims >= 1 && t->n_dims <= 4);
                t->n_rows = 1;
                for (uint32_t d = 0; d < 4; d++) {
                        t->ne[d] = d < t->n_dims ? gg_u64(f) : 1;
                        ASSERT_TRUE(t->ne[d] > 0 && t->ne[d] < (1u << 24));
                        if (d > 0)
                                t->n_rows *= t->ne[d];
                }
                t->type = gg_u32(f);
                offsets[i] = gg_u64(f);
        }
        size_t data = ALIGN_TO(f->pos, (size_t) f->alignment);
        ASSERT_TRUE(data <= f->size);
        for (size_t i = 0; i < f->n_tensors; i++) {
                struct gg_tensor *t = &f->tensors[i];
                uint64_t rb;
                ASSERT_OK(rbee_type_row_size(t->type, t->ne[0], &rb));
                t->size = rb * t->n_rows;
                ASSERT_TRUE(offsets[i] <= f->size - data && t->size <= f->size - data - offsets[i]);
                t->data = f->buf + data + offsets[i];
        }
        free(offsets);
}

static void gg_close(struct gg_file *f) {
        free(f->buf);
        free(f->tensors);
        *f = (struct gg_file) { .buf = NULL };
}

static const struct gg_tensor *gg_find(const struct gg_file *f, const char *name) {
        for (size_t i = 0; i < f->n_tensors; i++)
                if (strcmp(f->tensors[i].name, name) == 0)
                        return &f->tensors[i];
        return NULL;
}

/* Compare every tensor of a llama.cpp-quantized file with the original:
 * dequantized values within the type's error of the F32 weights, and our
 * reference quantizer must write exactly llama-quantize's bytes. These files
 * were made by running llama-quantize on the F16 file (requantizing the F32
 * values gives different roundings in ~40% of the Q8_0 blocks, the F16
 * values none), so the F16 tensors are the quantizer's input here. */
static void check_against_original(const char *file, const char *what) {
        struct gg_file ref, src, f;
        size_t n_quant = 0, n_types[_RBEE_TYPE_MAX] = { 0 };
        uint64_t blocks_total[_RBEE_TYPE_MAX] = { 0 }, blocks_same[_RBEE_TYPE_MAX] = { 0 };
        double worst_err[_RBEE_TYPE_MAX] = { 0 };

        gg_open(harness_shared("models/tiny-llama-d64-F32.gguf"), &ref);
        gg_open(harness_shared("models/tiny-llama-d64-F16.gguf"), &src);
        gg_open(harness_shared(file), &f);
        ASSERT_EQ(f.n_tensors, ref.n_tensors);
        ASSERT_EQ(src.n_tensors, ref.n_tensors);

        for (size_t i = 0; i < f.n_tensors; i++) {
                const struct gg_tensor *t = &f.tensors[i], *r = gg_find(&ref, t->name), *st = gg_find(&src, t->name);
                ASSERT_NOT_NULL(r);
                ASSERT_NOT_NULL(st);
                ASSERT_EQ(r->type, RBEE_TYPE_F32);
                ASSERT_TRUE(st->type == RBEE_TYPE_F32 || st->type == RBEE_TYPE_F16);
                for (int d = 0; d < 4; d++)
                        ASSERT_EQ(t->ne[d], r->ne[d]);
                if (t->type == RBEE_TYPE_F32) {
                        ASSERT_EQ(memcmp(t->data, r->data, t->size), 0);
                        continue;
                }
                const struct rbee_type_traits *tr = rbee_type_traits(t->type);
                ASSERT_NOT_NULL(tr);
                ASSERT_NOT_NULL(rbee_quant_ops(t->type));
                n_quant++;
                n_types[t->type]++;

                int64_t ne0 = (int64_t) t->ne[0], nel = ne0 * (int64_t) t->n_rows;
                size_t rb = t->size / t->n_rows, srb = st->size / st->n_rows;
                _cleanup_(freep) float *y = xmalloc((size_t) nel * sizeof(float));
                _cleanup_(freep) float *x = xmalloc((size_t) ne0 * sizeof(float));
                _cleanup_(freep) uint8_t *q = xmalloc(rb);

                for (uint64_t row = 0; row < t->n_rows; row++) {
                        ASSERT_OK(rbee_dequantize_row(t->type, t->data + row * rb, y + row * ne0, ne0));
                        ASSERT_OK(rbee_dequantize_row(st->type, st->data + row * srb, x, ne0));
                        ASSERT_OK(rbee_quantize_row(t->type, x, q, ne0));
                        for (size_t b = 0; b < rb / tr->type_size; b++) {
                                blocks_total[t->type]++;
                                blocks_same[t->type] += memcmp(q + b * tr->type_size, t->data + row * rb + b * tr->type_size,
                                                               tr->type_size) == 0;
                        }
                }
                double err = rms_diff((const float *) r->data, y, nel) / rms((const float *) r->data, nel);
                worst_err[t->type] = MAX(worst_err[t->type], err);
                if (!(err <= error_bound(t->type)))
                        FAIL("%s %s (%s): dequantized error %.5f over bound %.5f", what, t->name,
                             rbee_type_name(t->type), err, error_bound(t->type));
        }
        ASSERT_TRUE(n_quant > 0);

        for (uint32_t ty = 0; ty < _RBEE_TYPE_MAX; ty++) {
                if (!n_types[ty])
                        continue;
                fprintf(stderr, "  %s: %zu %s tensors, %" PRIu64 "/%" PRIu64 " blocks byte-identical after requantizing, "
                        "worst error %.5f\n", what, n_types[ty], rbee_type_name(ty), blocks_same[ty], blocks_total[ty],
                        worst_err[ty]);
                if (blocks_same[ty] != blocks_total[ty])
                        FAIL("%s: %s: only %" PRIu64 " of %" PRIu64 " blocks match llama.cpp's bytes", what,
                             rbee_type_name(ty), blocks_same[ty], blocks_total[ty]);
        }
        gg_close(&f);
        gg_close(&src);
        gg_close(&ref);
}

TEST_TIMEOUT(llama_file_f16, 60) {
        check_against_original("models/tiny-llama-d64-F16.gguf", "F16");
}

TEST_TIMEOUT(llama_file_q8_0, 60) {
        check_against_original("models/tiny-llama-d64-Q8_0.gguf", "Q8_0");
}

TEST_TIMEOUT(llama_file_q4_0, 60) {
        check_against_original("models/tiny-llama-d64-Q4_0.gguf", "Q4_0");
}

/* With dim 64 no row is a multiple of 256: llama-quantize falls back to
 * Q5_0 and Q8_0 for every tensor of these two, so they check those. */
TEST_TIMEOUT(llama_file_q4_k_m, 60) {
        check_against_original("models/tiny-llama-d64-Q4_K_M.gguf", "Q4_K_M");
}

TEST_TIMEOUT(llama_file_q6_k, 60) {
        check_against_original("models/tiny-llama-d64-Q6_K.gguf", "Q6_K");
}

/* Dotting a real quantized tensor with an activation must agree with the F32
 * original's dot within the quantization error. */
TEST_TIMEOUT(llama_file_vec_dot, 60) {
        struct gg_file ref, f;
        struct rng r = { 31337 };

        gg_open(harness_shared("models/tiny-llama-d64-F32.gguf"), &ref);
        gg_open(harness_shared("models/tiny-llama-d64-Q4_0.gguf"), &f);
        const struct gg_tensor *t = gg_find(&f, "blk.0.ffn_down.weight"), *rt = gg_find(&ref, "blk.0.ffn_down.weight");
        ASSERT_NOT_NULL(t);
        ASSERT_NOT_NULL(rt);
        ASSERT_EQ(t->type, RBEE_TYPE_Q4_0);

        const struct rbee_quant_ops *ops = rbee_quant_ops(t->type), *act = rbee_quant_ops(ops->vec_dot_type);
        int64_t n = (int64_t) t->ne[0];
        size_t rb = t->size / t->n_rows;
        _cleanup_(freep) float *x = xmalloc((size_t) n * sizeof(float));
        _cleanup_(freep) uint8_t *xq = xmalloc(row_bytes(ops->vec_dot_type, n));
        double err2 = 0, ref2 = 0;

        for (int64_t i = 0; i < n; i++)
                x[i] = rng_gauss(&r);
        act->from_float(x, xq, n);
        for (uint64_t row = 0; row < t->n_rows; row++) {
                double want = 0;
                for (int64_t i = 0; i < n; i++)
                        want += (double) ((const float *) rt->data)[row * (uint64_t) n + (uint64_t) i] * x[i];
                double got = ops->vec_dot(n, t->data + row * rb, xq);
                err2 += (got - want) * (got - want);
                ref2 += want * want;
        }
        double rel = sqrt(err2 / ref2);
        fprintf(stderr, "  Q4_0 ffn_down x activations: relative RMS error of the outputs %.4f\n", rel);
        ASSERT_TRUE(rel < error_bound(RBEE_TYPE_Q4_0));
        gg_close(&f);
        gg_close(&ref);
}

/* ---- speed (informational) ---------------------------------------------- */

static double now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e9 + (double) ts.tv_nsec;
}

static void bench_dot(enum rbee_type t, int64_t n) {
        const struct rbee_quant_ops *ops = rbee_quant_ops(t), *act = rbee_quant_ops(ops->vec_dot_type);
        const int rows = 64;
        size_t rb = row_bytes(t, n);
        _cleanup_(freep) float *x = xmalloc((size_t) n * rows * sizeof(float));
        _cleanup_(freep) uint8_t *w = xmalloc(rb * rows);
        _cleanup_(freep) uint8_t *a = xmalloc(row_bytes(ops->vec_dot_type, n));
        volatile float sink = 0;

        fill(x, n * rows, DIST_GAUSS, 1);
        for (int i = 0; i < rows; i++)
                ASSERT_OK(rbee_quantize_row(t, x + (int64_t) i * n, w + (size_t) i * rb, n));
        act->from_float(x, a, n);

        /* Rows stay in L2 (<= 300 KB): this measures the kernel, not DRAM.
         * Best of 10 short windows, so that a busy machine reads less wrong. */
        double ns = 1e30, ns4 = 1e30, ns16 = 1e30, qns = 1e30;
        for (int win = 0; win < 10; win++) {
                long calls = 0;
                double t0 = now_ns(), t1;
                do {
                        for (int i = 0; i < rows; i++)
                                sink += ops->vec_dot(n, w + (size_t) i * rb, a);
                        calls += rows;
                        t1 = now_ns();
                } while (t1 - t0 < 4e6);
                ns = MIN(ns, (t1 - t0) / (double) calls);

                /* The four-row kernel generation uses, per row. */
                if (ops->vec_dot4r) {
                        calls = 0;
                        t0 = now_ns();
                        do {
                                for (int i = 0; i + 4 <= rows; i += 4) {
                                        float o[4];
                                        ops->vec_dot4r(n, w + (size_t) i * rb, rb, a, o);
                                        sink += o[0];
                                }
                                calls += rows;
                                t1 = now_ns();
                        } while (t1 - t0 < 4e6);
                        ns4 = MIN(ns4, (t1 - t0) / (double) calls);
                }

                /* The 4x4 tile prompts use, per row and token (the four
                 * activation rows are one row four times: it stays in L1). */
                if (ops->vec_dot4x4) {
                        calls = 0;
                        t0 = now_ns();
                        do {
                                for (int i = 0; i + 4 <= rows; i += 4) {
                                        float o[16];
                                        ops->vec_dot4x4(n, w + (size_t) i * rb, rb, a, 0, o);
                                        sink += o[0];
                                }
                                calls += 4 * rows;
                                t1 = now_ns();
                        } while (t1 - t0 < 4e6);
                        ns16 = MIN(ns16, (t1 - t0) / (double) calls);
                }

                /* And the activation quantizer, run once per input vector. */
                calls = 0;
                t0 = now_ns();
                do {
                        act->from_float(x, a, n);
                        calls++;
                        t1 = now_ns();
                } while (t1 - t0 < 1e6);
                qns = MIN(qns, (t1 - t0) / (double) calls);
        }
        fprintf(stderr, "  bench %-5s n=%-5" PRId64 " [%s]: %7.1f ns/vec_dot, %6.1f GB/s of weights; %s from_float %6.1f ns\n",
                rbee_type_name(t), n, rbee_quant_simd(), ns, (double) rb / ns, rbee_type_name(ops->vec_dot_type), qns);
        if (ops->vec_dot4r)
                fprintf(stderr, "  bench %-5s n=%-5" PRId64 " [%s]: %7.1f ns/row with vec_dot4r, %6.1f GB/s of weights\n",
                        rbee_type_name(t), n, rbee_quant_simd(), ns4, (double) rb / ns4);
        if (ops->vec_dot4x4)
                fprintf(stderr, "  bench %-5s n=%-5" PRId64 " [%s]: %7.1f ns/row/token with vec_dot4x4\n",
                        rbee_type_name(t), n, rbee_quant_simd(), ns16);
        (void) sink;
}

TEST_TIMEOUT(throughput, 60) {
        bench_dot(RBEE_TYPE_Q4_0, 2048);
        bench_dot(RBEE_TYPE_Q4_0, 4096);
        bench_dot(RBEE_TYPE_Q8_0, 4096);
        bench_dot(RBEE_TYPE_Q4_K, 2048);
        bench_dot(RBEE_TYPE_Q4_K, 4096);
        bench_dot(RBEE_TYPE_Q6_K, 4096);
        bench_dot(RBEE_TYPE_Q5_K, 4096);
        bench_dot(RBEE_TYPE_Q5_0, 4096);
        bench_dot(RBEE_TYPE_Q5_0, 896);
        bench_dot(RBEE_TYPE_Q4_1, 4096);
        bench_dot(RBEE_TYPE_F16, 4096);
}

/* vec_dot4 (four activation rows at once, for prompts) gives exactly what
 * vec_dot gives on each row, so batching never changes a result. */
TEST(vec_dot4_bit_identical) {
        static const enum rbee_type types[] = { RBEE_TYPE_Q4_0, RBEE_TYPE_Q8_0, RBEE_TYPE_Q4_K, RBEE_TYPE_Q6_K };
        /* An odd number of blocks for each type: the tail of the pair loops too. */
        const int64_t n_big = 4096 + 256, n_small = 4096 + 32;
        int64_t n = n_big;
        float *x = malloc(n * sizeof(float)), *act = malloc(4 * n * sizeof(float));
        uint8_t *w = malloc(n * 2), *aq = malloc(4 * n * 2);
        uint32_t seed = 12345;

        ASSERT_TRUE(x && act && w && aq);
        for (int64_t i = 0; i < n; i++) {
                seed = seed * 1664525u + 1013904223u;
                x[i] = (float) ((int32_t) seed) / 2147483648.0f;
        }
        for (int64_t i = 0; i < 4 * n; i++) {
                seed = seed * 1664525u + 1013904223u;
                act[i] = (float) ((int32_t) seed) / 2147483648.0f * 3.0f;
        }
        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                const struct rbee_quant_ops *ops = rbee_quant_ops(types[t]);
                const struct rbee_quant_ops *aops = rbee_quant_ops(ops->vec_dot_type);
                uint64_t ars;
                n = types[t] == RBEE_TYPE_Q4_K || types[t] == RBEE_TYPE_Q6_K ? n_big : n_small;
                ASSERT_OK(rbee_type_row_size(ops->vec_dot_type, n, &ars));
                ASSERT_OK(rbee_quantize_row(types[t], x, w, n));
                for (int k = 0; k < 4; k++)
                        aops->from_float(act + k * n, aq + k * ars, n);
                if (!ops->vec_dot4)
                        continue; /* the scalar build has none; nothing to compare */
                float out[4];
                ops->vec_dot4(n, w, aq, ars, out);
                for (int k = 0; k < 4; k++) {
                        float one = ops->vec_dot(n, w, aq + k * ars);
                        if (memcmp(&one, &out[k], sizeof(float)) != 0)
                                FAIL("%s row %d: vec_dot4 %.9g != vec_dot %.9g", rbee_type_name(types[t]), k, out[k], one);
                }
        }
        free(x), free(act), free(w), free(aq);
}

/* vec_dot4x4 (four weight rows times four activation rows) gives exactly
 * what vec_dot gives on each pair, for an even and an odd number of blocks,
 * on random codes (extreme weights included) and on real quantizer output. */
TEST(vec_dot4x4_bit_identical) {
        static const enum rbee_type types[] = { RBEE_TYPE_Q4_0, RBEE_TYPE_Q8_0 };
        static const int64_t sizes[] = { 32, 64, 96, 2048, 4096 + 32 };
        const int64_t nmax = 4096 + 32;
        const size_t wstride = nmax * 2 + 64, astride = nmax * 2 + 64;
        float *x = malloc(nmax * sizeof(float)), *act = malloc(nmax * sizeof(float));
        uint8_t *w = calloc(4, wstride), *aq = calloc(4, astride);
        uint32_t seed = 777;

        ASSERT_TRUE(x && act && w && aq);
        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                const struct rbee_quant_ops *ops = rbee_quant_ops(types[t]);
                const struct rbee_quant_ops *aops = rbee_quant_ops(ops->vec_dot_type);
                if (!ops->vec_dot4x4)
                        continue; /* not on this CPU */
                for (size_t z = 0; z < ELEMENTSOF(sizes); z++)
                        for (int mode = 0; mode < 2; mode++) {
                                const int64_t n = sizes[z];
                                for (int k = 0; k < 4; k++) {
                                        for (int64_t i = 0; i < n; i++) {
                                                seed = seed * 1664525u + 1013904223u;
                                                x[i] = (float) ((int32_t) seed) / 2147483648.0f * (float) (k + 1);
                                                seed = seed * 1664525u + 1013904223u;
                                                act[i] = (float) ((int32_t) seed) / 2147483648.0f * 3.0f;
                                        }
                                        ASSERT_OK(rbee_quantize_row(types[t], x, w + k * wstride, n));
                                        if (mode == 1) {
                                                /* Random code bytes, scales kept finite. */
                                                size_t bs = types[t] == RBEE_TYPE_Q4_0 ? sizeof(block_q4_0) : sizeof(block_q8_0);
                                                for (int64_t b = 0; b < n / 32; b++)
                                                        for (size_t j = 2; j < bs; j++) {
                                                                seed = seed * 1664525u + 1013904223u;
                                                                uint8_t v = (uint8_t) (seed >> 24);
                                                                if (types[t] == RBEE_TYPE_Q8_0 && v == 0x80)
                                                                        v = 0x81;
                                                                w[k * wstride + b * bs + j] = v;
                                                        }
                                        }
                                        aops->from_float(act, aq + k * astride, n);
                                }
                                float out[16];
                                ops->vec_dot4x4(n, w, wstride, aq, astride, out);
                                for (int k = 0; k < 4; k++)
                                        for (int r = 0; r < 4; r++) {
                                                float one = ops->vec_dot(n, w + r * wstride, aq + k * astride);
                                                if (memcmp(&one, &out[k * 4 + r], sizeof(float)) != 0)
                                                        FAIL("%s n=%lld row %d act %d: vec_dot4x4 %.9g != vec_dot %.9g",
                                                             rbee_type_name(types[t]), (long long) n, r, k, out[k * 4 + r], one);
                                        }
                        }
        }
        free(x), free(act), free(w), free(aq);
}

/* Random weight rows of type t (quantizer output, or random code bytes with
 * sane scales when raw), rows at w + r * stride. */
static void fill_rows(enum rbee_type t, uint8_t *w, size_t stride, int rows, int64_t n, bool raw, struct rng *r) {
        const struct rbee_type_traits *tr = rbee_type_traits(t);
        _cleanup_(freep) float *x = xmalloc(n * sizeof(float));

        for (int k = 0; k < rows; k++) {
                fill(x, n, (enum dist) (k % DIST_ZERO), rng_u64(r));
                ASSERT_OK(rbee_quantize_row(t, x, w + k * stride, n));
                if (!raw)
                        continue;
                for (int64_t b = 0; b < n / tr->block_size; b++) {
                        uint8_t *blk = w + k * stride + b * tr->type_size;
                        /* Every code byte random; the fp16 scales where each format keeps them stay. */
                        size_t lo = t == RBEE_TYPE_Q4_K || t == RBEE_TYPE_Q5_K ? 4 : t == RBEE_TYPE_Q6_K ? 0 : 2;
                        size_t hi = t == RBEE_TYPE_Q6_K ? tr->type_size - 2 : tr->type_size;
                        for (size_t j = lo; j < hi; j++) {
                                uint8_t v = (uint8_t) rng_u64(r);
                                /* Q8_0's -128 is outside what quantizers write (see quants.h). */
                                blk[j] = t == RBEE_TYPE_Q8_0 && v == 0x80 ? 0x81 : v;
                        }
                }
        }
}

/* vec_dot4r (four weight rows, one activation row: generation) gives exactly
 * what vec_dot gives on each row: for 1, 2, 3 and many blocks, even and odd
 * counts (the pair loops' tails), rows packed as in a matrix and with a
 * gap, and with the last row ending at a page that cannot be read (the
 * kernels' wide loads must stay inside the data). */
TEST(vec_dot4r_bit_identical) {
        static const enum rbee_type types[] = { RBEE_TYPE_Q4_0, RBEE_TYPE_Q5_0, RBEE_TYPE_Q8_0, RBEE_TYPE_Q4_K,
                                                RBEE_TYPE_Q6_K, RBEE_TYPE_F16 };
        static const int64_t blocks[] = { 1, 2, 3, 7, 8, 22, 65 };
        const long page = sysconf(_SC_PAGESIZE);
        struct rng r = { 4242 };
        int checked = 0;

        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                const struct rbee_quant_ops *ops = rbee_quant_ops(types[t]);
                const struct rbee_quant_ops *aops = rbee_quant_ops(ops->vec_dot_type);
                const struct rbee_type_traits *tr = rbee_type_traits(types[t]);
                if (!ops->vec_dot4r)
                        continue; /* not on this CPU */
                for (size_t z = 0; z < ELEMENTSOF(blocks); z++)
                        for (int mode = 0; mode < 4; mode++) {
                                /* Float rows: lengths that leave every kind of tail (32, 8, 1). */
                                const int64_t n = blocks[z] * (tr->block_size == 1 ? 37 : tr->block_size);
                                const size_t rb = row_bytes(types[t], n);
                                const size_t stride = rb + (mode & 1 ? 2 * tr->type_size : 0);
                                /* Four rows ending at a guard page. */
                                size_t span = 3 * stride + rb;
                                size_t len = (span + page - 1) / page * page + page;
                                uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                                ASSERT_TRUE(map != MAP_FAILED);
                                ASSERT_OK(mprotect(map + len - page, page, PROT_NONE));
                                uint8_t *w = map + len - page - span;
                                _cleanup_(freep) float *x = xmalloc(n * sizeof(float));
                                _cleanup_(freep) uint8_t *aq = xmalloc(row_bytes(ops->vec_dot_type, n));

                                fill_rows(types[t], w, stride, 4, n, mode & 2, &r);
                                fill(x, n, DIST_GAUSS, rng_u64(&r));
                                aops->from_float(x, aq, n);
                                float out[4];
                                ops->vec_dot4r(n, w, stride, aq, out);
                                for (int k = 0; k < 4; k++) {
                                        float one = ops->vec_dot(n, w + k * stride, aq);
                                        if (memcmp(&one, &out[k], sizeof(float)) != 0)
                                                FAIL("%s n=%lld mode %d row %d: vec_dot4r %.9g != vec_dot %.9g",
                                                     rbee_type_name(types[t]), (long long) n, mode, k, out[k], one);
                                }
                                checked++;
                                munmap(map, len);
                        }
        }
        fprintf(stderr, "  vec_dot4r: %d cases bit-identical [%s]\n", checked, rbee_quant_simd());
}

/* vec_dot4x4 of every type that has one, on 1, 2, 3 and many blocks, on
 * quantizer output and on random code bytes, with the weight rows packed
 * and with a gap, and the activation rows at an odd stride. */
TEST(vec_dot4x4_all_types_bit_identical) {
        static const enum rbee_type types[] = { RBEE_TYPE_Q4_0, RBEE_TYPE_Q5_0, RBEE_TYPE_Q8_0, RBEE_TYPE_Q4_K,
                                                RBEE_TYPE_Q6_K };
        static const int64_t blocks[] = { 1, 2, 3, 8, 11, 22 };
        struct rng r = { 999 };
        int checked = 0;

        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                const struct rbee_quant_ops *ops = rbee_quant_ops(types[t]);
                const struct rbee_quant_ops *aops = rbee_quant_ops(ops->vec_dot_type);
                const struct rbee_type_traits *tr = rbee_type_traits(types[t]);
                if (!ops->vec_dot4x4)
                        continue; /* not on this CPU */
                for (size_t z = 0; z < ELEMENTSOF(blocks); z++)
                        for (int mode = 0; mode < 4; mode++) {
                                const int64_t n = blocks[z] * tr->block_size;
                                const size_t rb = row_bytes(types[t], n);
                                const size_t ws = rb + (mode & 1 ? tr->type_size : 0);
                                const size_t as = row_bytes(ops->vec_dot_type, n) + 4 * (mode & 1);
                                _cleanup_(freep) uint8_t *w = xmalloc(4 * ws);
                                _cleanup_(freep) uint8_t *aq = xmalloc(4 * as);
                                _cleanup_(freep) float *x = xmalloc(n * sizeof(float));

                                fill_rows(types[t], w, ws, 4, n, mode & 2, &r);
                                for (int k = 0; k < 4; k++) {
                                        fill(x, n, (enum dist) ((k + mode) % DIST_ZERO), rng_u64(&r));
                                        aops->from_float(x, aq + k * as, n);
                                }
                                float out[16];
                                ops->vec_dot4x4(n, w, ws, aq, as, out);
                                for (int k = 0; k < 4; k++)
                                        for (int i = 0; i < 4; i++) {
                                                float one = ops->vec_dot(n, w + i * ws, aq + k * as);
                                                if (memcmp(&one, &out[k * 4 + i], sizeof(float)) != 0)
                                                        FAIL("%s n=%lld mode %d row %d act %d: vec_dot4x4 %.9g != vec_dot %.9g",
                                                             rbee_type_name(types[t]), (long long) n, mode, i, k,
                                                             out[k * 4 + i], one);
                                        }
                                checked++;
                        }
        }
        fprintf(stderr, "  vec_dot4x4: %d cases bit-identical [%s]\n", checked, rbee_quant_simd());
}
