/* SPDX-License-Identifier: MIT */
#pragma once

/* A plain-C test harness in the spirit of libuv's: every test runs in its own
 * forked process under a timeout, assertions print both sides, and a test can
 * skip itself (exit code 77) saying why. Each test executable prints one line
 * per test and ends with "N passed, N failed, N skipped". */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HARNESS_EXIT_SKIP 77

typedef void (*harness_fn)(void);

void harness_register(const char *name, harness_fn fn, unsigned timeout_s);
_Noreturn void harness_fail(const char *file, int line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
_Noreturn void harness_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Path of a file under the shared test data (../shared from the source tree,
 * or $RBEE_SHARED). Skips the calling test when it does not exist. The
 * returned string lives until the process exits. */
const char *harness_shared(const char *rel);

/* A fresh private directory for this test; removed when the test ends. */
const char *harness_tmpdir(void);

/* Path to a built program (build/<name>, or $RBEE_BUILD/<name>). */
const char *harness_build_path(const char *name);

/* Read a whole file into a NUL-terminated buffer; fails the test on error. */
char *harness_read_file(const char *path, size_t *ret_size);

/* Every integer in a text file ("[1, 2, 3]" or "1 2 3"), at most max of them
 * (more fails the test); returns how many. */
size_t harness_read_ids(const char *path, int32_t *out, size_t max);

/* A model written by rbee-mkmodel (seed 7) into this test's directory as
 * NAME-TYPE.gguf, once; SHAPE_ARGS are its shape flags. Skips when
 * rbee-mkmodel is not built. */
const char *harness_mkmodel(const char *shape_args, const char *type, const char *name);

/* Logits of two runs, n_rows rows of n_vocab: the worst row's relative RMS
 * error of x against ref. Every x must be finite and no ref row all zero. */
double harness_logits_rel_err(const float *x, const float *ref, int32_t n_vocab, int n_rows);

#define TEST_TIMEOUT(name, secs)                                                \
        static void test_##name(void);                                          \
        __attribute__((constructor)) static void register_##name(void) {        \
                harness_register(#name, test_##name, secs);                     \
        }                                                                       \
        static void test_##name(void)

#define TEST(name) TEST_TIMEOUT(name, 60)

#define SKIP(...) harness_skip(__VA_ARGS__)
#define FAIL(...) harness_fail(__FILE__, __LINE__, __VA_ARGS__)

#define ASSERT_TRUE(expr)                                                       \
        do {                                                                    \
                if (!(expr))                                                    \
                        FAIL("assertion failed: %s", #expr);                    \
        } while (0)

#define ASSERT_FALSE(expr) ASSERT_TRUE(!(expr))

#define ASSERT_EQ(a, b)                                                         \
        do {                                                                    \
                intmax_t _a = (intmax_t) (a), _b = (intmax_t) (b);              \
                if (_a != _b)                                                   \
                        FAIL("%s == %s: %jd != %jd", #a, #b, _a, _b);           \
        } while (0)

#define ASSERT_NE(a, b)                                                         \
        do {                                                                    \
                intmax_t _a = (intmax_t) (a), _b = (intmax_t) (b);              \
                if (_a == _b)                                                   \
                        FAIL("%s != %s: both %jd", #a, #b, _a);                 \
        } while (0)

#define ASSERT_GE(a, b)                                                         \
        do {                                                                    \
                intmax_t _a = (intmax_t) (a), _b = (intmax_t) (b);              \
                if (!(_a >= _b))                                                \
                        FAIL("%s >= %s: %jd < %jd", #a, #b, _a, _b);            \
        } while (0)

#define ASSERT_LE(a, b)                                                         \
        do {                                                                    \
                intmax_t _a = (intmax_t) (a), _b = (intmax_t) (b);              \
                if (!(_a <= _b))                                                \
                        FAIL("%s <= %s: %jd > %jd", #a, #b, _a, _b);            \
        } while (0)

/* r is a return value: non-negative means success. */
#define ASSERT_OK(r)                                                            \
        do {                                                                    \
                intmax_t _r = (intmax_t) (r);                                   \
                if (_r < 0)                                                     \
                        FAIL("%s failed: %jd (%s)", #r, _r, strerror((int) -_r)); \
        } while (0)

/* r must be exactly the negative errno e. */
#define ASSERT_ERR(r, e)                                                        \
        do {                                                                    \
                intmax_t _r = (intmax_t) (r), _e = (intmax_t) (e);              \
                if (_r != _e)                                                   \
                        FAIL("%s: expected %jd (%s), got %jd (%s)", #r, _e,     \
                             strerror((int) -_e), _r, _r < 0 ? strerror((int) -_r) : "success"); \
        } while (0)

#define ASSERT_STREQ(a, b)                                                      \
        do {                                                                    \
                const char *_a = (a), *_b = (b);                                \
                if (!_a || !_b || strcmp(_a, _b) != 0)                          \
                        FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b,              \
                             _a ? _a : "(null)", _b ? _b : "(null)");           \
        } while (0)

#define ASSERT_NOT_NULL(p)                                                      \
        do {                                                                    \
                if (!(p))                                                       \
                        FAIL("%s is NULL", #p);                                 \
        } while (0)

#define ASSERT_NEAR(a, b, tol)                                                  \
        do {                                                                    \
                double _a = (double) (a), _b = (double) (b), _t = (double) (tol); \
                if (!(fabs(_a - _b) <= _t))                                     \
                        FAIL("%s ~= %s: %g vs %g (tolerance %g)", #a, #b, _a, _b, _t); \
        } while (0)

/* Substring check, for error messages. */
#define ASSERT_CONTAINS(hay, needle)                                            \
        do {                                                                    \
                const char *_h = (hay), *_n = (needle);                         \
                if (!_h || !strstr(_h, _n))                                     \
                        FAIL("%s does not contain \"%s\": \"%s\"", #hay, _n,    \
                             _h ? _h : "(null)");                               \
        } while (0)
