/* SPDX-License-Identifier: MIT */
/* GGUF reader tests. Every input is built here byte by byte, one hand-made
 * corrupt file per failure class, plus the shared model and vocabulary files
 * and a seeded mutation loop. Buffers handed to gguf_open_memory() are exact
 * size heap copies, so any read past the end trips ASan. */

#include <fcntl.h>
#include <glob.h>
#include <time.h>

#include "gguf.h"
#include "harness.h"
#include "macros.h"

/* ---- a small GGUF writer ------------------------------------------------ */

struct gb {
        uint8_t *b;
        size_t n, cap;
};

static void gb_put(struct gb *g, const void *p, size_t n) {
        if (g->cap - g->n < n) {
                size_t cap = g->cap ? g->cap : 256;
                while (cap - g->n < n)
                        cap *= 2;
                g->b = realloc(g->b, cap);
                ASSERT_NOT_NULL(g->b);
                g->cap = cap;
        }
        memcpy(g->b + g->n, p, n);
        g->n += n;
}

#define GB_PUT_FN(name, type)                                   \
        static void gb_##name(struct gb *g, type v) {           \
                gb_put(g, &v, sizeof(v));                       \
        }
GB_PUT_FN(u8, uint8_t)
GB_PUT_FN(i8, int8_t)
GB_PUT_FN(u16, uint16_t)
GB_PUT_FN(i16, int16_t)
GB_PUT_FN(u32, uint32_t)
GB_PUT_FN(i32, int32_t)
GB_PUT_FN(u64, uint64_t)
GB_PUT_FN(i64, int64_t)
GB_PUT_FN(f32, float)
GB_PUT_FN(f64, double)

static void gb_strn(struct gb *g, const char *s, size_t n) {
        gb_u64(g, n);
        gb_put(g, s, n);
}

static void gb_str(struct gb *g, const char *s) {
        gb_strn(g, s, strlen(s));
}

static void gb_header(struct gb *g, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
        gb_put(g, "GGUF", 4);
        gb_u32(g, version);
        gb_u64(g, n_tensors);
        gb_u64(g, n_kv);
}

static void gb_kv(struct gb *g, const char *key, enum gguf_vtype t) {
        gb_str(g, key);
        gb_u32(g, t);
}

static void gb_tensor(struct gb *g, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                      uint64_t offset) {
        gb_str(g, name);
        gb_u32(g, n_dims);
        for (uint32_t i = 0; i < n_dims; i++)
                gb_u64(g, ne[i]);
        gb_u32(g, type);
        gb_u64(g, offset);
}

static void gb_zeros(struct gb *g, size_t n) {
        uint8_t z[256] = { 0 };

        while (n > 0) {
                size_t k = MIN(n, sizeof(z));
                gb_put(g, z, k);
                n -= k;
        }
}

static void gb_align(struct gb *g, size_t a) {
        gb_zeros(g, ALIGN_TO(g->n, a) - g->n);
}

static void gb_free(struct gb *g) {
        free(g->b);
        *g = (struct gb) { 0 };
}

/* Opens the first n bytes of g from an exact-size heap copy. On success the
 * copy is returned in *ret_buf and must outlive the file. */
static int open_prefix(const struct gb *g, size_t n, gguf_file **ret, void **ret_buf, char *err, size_t errlen) {
        void *buf = malloc(n ? n : 1);
        int r;

        ASSERT_NOT_NULL(buf);
        if (n)
                memcpy(buf, g->b, n);
        r = gguf_open_memory(buf, n, ret, err, errlen);
        if (r < 0 || !ret_buf)
                free(buf);
        else
                *ret_buf = buf;
        return r;
}

/* Expects opening g to fail with errno e and a message containing what. */
static void expect_fail(const struct gb *g, int e, const char *what) {
        gguf_file *f = NULL;
        char err[512] = "";
        int r;

        r = open_prefix(g, g->n, &f, NULL, err, sizeof(err));
        ASSERT_ERR(r, e);
        ASSERT_TRUE(f == NULL);
        ASSERT_CONTAINS(err, what);
        /* The same without a message buffer must fail the same way. */
        ASSERT_ERR(open_prefix(g, g->n, &f, NULL, NULL, 0), e);
}

static const char *write_tmp(const char *name, const void *data, size_t n) {
        static char path[4096];
        FILE *fp;

        snprintf(path, sizeof(path), "%s/%s", harness_tmpdir(), name);
        fp = fopen(path, "we");
        ASSERT_NOT_NULL(fp);
        if (n)
                ASSERT_EQ(fwrite(data, 1, n, fp), n);
        ASSERT_EQ(fclose(fp), 0);
        return path;
}

/* A file with one tensor and no kvs; data_bytes of zeros after the header. */
static struct gb one_tensor(uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset, size_t data_bytes) {
        struct gb g = { 0 };

        gb_header(&g, 3, 1, 0);
        gb_tensor(&g, "t", n_dims, ne, type, offset);
        gb_align(&g, GGUF_DEFAULT_ALIGNMENT);
        gb_zeros(&g, data_bytes);
        return g;
}

/* The small valid file most tests start from: a few kvs of different types
 * and two tensors, with no padding after the last tensor so that every
 * strict prefix is truncated somewhere that matters. */
static struct gb small_valid(void) {
        struct gb g = { 0 };
        uint64_t ne_a[2] = { 8, 2 }, ne_b[1] = { 32 };

        gb_header(&g, 3, 2, 4);
        gb_kv(&g, "general.architecture", GGUF_VTYPE_STRING);
        gb_str(&g, "llama");
        gb_kv(&g, "test.u32", GGUF_VTYPE_UINT32);
        gb_u32(&g, 7);
        gb_kv(&g, "test.tokens", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_STRING);
        gb_u64(&g, 3);
        gb_str(&g, "a");
        gb_str(&g, "bc");
        gb_str(&g, "");
        gb_kv(&g, "test.scores", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_FLOAT32);
        gb_u64(&g, 2);
        gb_f32(&g, 0.5f);
        gb_f32(&g, -1.0f);
        gb_tensor(&g, "a", 2, ne_a, RBEE_TYPE_F32, 0);
        gb_tensor(&g, "b", 1, ne_b, RBEE_TYPE_Q8_0, 64);
        gb_align(&g, GGUF_DEFAULT_ALIGNMENT);
        for (int i = 0; i < 16; i++)
                gb_f32(&g, (float) i);
        gb_zeros(&g, 34);
        return g;
}

static double now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- header ------------------------------------------------------------- */

TEST(empty_file) {
        gguf_file *f = NULL;
        char err[512] = "";
        const char *path = write_tmp("empty.gguf", NULL, 0);

        ASSERT_ERR(gguf_open(path, &f, err, sizeof(err)), -EBADMSG);
        ASSERT_CONTAINS(err, "empty");
        ASSERT_CONTAINS(err, path);
        ASSERT_ERR(gguf_open_memory("", 0, &f, err, sizeof(err)), -EBADMSG);
        ASSERT_CONTAINS(err, "empty");
        ASSERT_TRUE(f == NULL);
}

TEST(missing_file) {
        gguf_file *f = NULL;
        char err[512] = "";

        ASSERT_ERR(gguf_open("/nonexistent/x.gguf", &f, err, sizeof(err)), -ENOENT);
        ASSERT_CONTAINS(err, "/nonexistent/x.gguf");
        ASSERT_ERR(gguf_open(harness_tmpdir(), &f, err, sizeof(err)), -EISDIR);
        ASSERT_CONTAINS(err, "directory");
}

TEST(too_small) {
        struct gb g = { 0 };

        gb_put(&g, "GGUF", 4);
        gb_u32(&g, 3);
        gb_u32(&g, 0);
        expect_fail(&g, -EBADMSG, "too small");
        gb_free(&g);
}

TEST(bad_magic) {
        struct gb g = { 0 };

        gb_put(&g, "GGML", 4);
        gb_u32(&g, 3);
        gb_u64(&g, 0);
        gb_u64(&g, 0);
        expect_fail(&g, -EPROTONOSUPPORT, "bad magic 47 47 4d 4c");
        gb_free(&g);
}

TEST(version_1_and_4) {
        struct gb g = { 0 };

        gb_header(&g, 1, 0, 0);
        expect_fail(&g, -EPROTONOSUPPORT, "version 1");
        gb_free(&g);
        gb_header(&g, 4, 0, 0);
        expect_fail(&g, -EPROTONOSUPPORT, "version 4");
        gb_free(&g);
        /* A big-endian v3 file reads as version 0x03000000. */
        gb_header(&g, 0x03000000, 0, 0);
        expect_fail(&g, -EPROTONOSUPPORT, "big-endian");
        gb_free(&g);
}

TEST(version_2_and_3_accepted) {
        for (uint32_t v = 2; v <= 3; v++) {
                struct gb g = { 0 };
                gguf_file *f = NULL;
                void *buf = NULL;
                char err[512] = "";

                gb_header(&g, v, 0, 1);
                gb_kv(&g, "k", GGUF_VTYPE_UINT8);
                gb_u8(&g, 1);
                ASSERT_OK(open_prefix(&g, g.n, &f, &buf, err, sizeof(err)));
                ASSERT_EQ(gguf_version(f), v);
                ASSERT_EQ(gguf_n_kv(f), 1);
                ASSERT_EQ(gguf_n_tensors(f), 0);
                /* No tensors: the data section is empty even though the
                 * header does not end on an alignment boundary. */
                ASSERT_EQ(gguf_data_size(f), 0);
                ASSERT_EQ(gguf_file_size(f), g.n);
                gguf_close(f);
                free(buf);
                gb_free(&g);
        }
}

TEST(truncated_every_prefix) {
        struct gb g = small_valid();
        gguf_file *f = NULL;
        void *buf = NULL;
        char err[512];

        ASSERT_OK(open_prefix(&g, g.n, &f, &buf, err, sizeof(err)));
        gguf_close(f);
        free(buf);

        for (size_t n = 0; n < g.n; n++) {
                int r;

                err[0] = 0;
                f = NULL;
                r = open_prefix(&g, n, &f, NULL, err, sizeof(err));
                if (r != -EBADMSG)
                        FAIL("prefix of %zu bytes: expected -EBADMSG, got %d (%s)", n, r, err);
                ASSERT_TRUE(f == NULL);
                if (!strstr(err, "truncated") && !strstr(err, "past end") && !strstr(err, "cannot fit") &&
                    !strstr(err, "exceeds") && !strstr(err, "empty") && !strstr(err, "too small"))
                        FAIL("prefix of %zu bytes: message does not say it is truncated: %s", n, err);
        }

        /* The same through the mmap path for a few prefixes. */
        for (size_t n = 1; n < g.n; n += 37) {
                const char *path = write_tmp("prefix.gguf", g.b, n);

                ASSERT_ERR(gguf_open(path, &f, err, sizeof(err)), -EBADMSG);
                ASSERT_CONTAINS(err, path);
        }
        gb_free(&g);
}

TEST(truncation_names_the_field) {
        uint64_t ne[1] = { 8 };
        struct gb g = { 0 };
        gguf_file *f = NULL;
        char err[512] = "";

        gb_header(&g, 3, 1, 0);
        gb_tensor(&g, "abcdefghij", 1, ne, RBEE_TYPE_F32, 0);
        /* Header 24 + name 18 + n_dims 4 + ne 8 + type 4, then 4 of the 8 offset bytes. */
        ASSERT_ERR(open_prefix(&g, 62, &f, NULL, err, sizeof(err)), -EBADMSG);
        ASSERT_CONTAINS(err, "truncated file: tensor 'abcdefghij': tensor offset needs 8 bytes at offset 58 "
                        "but the file ends at 62");
        gb_free(&g);

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "abc", GGUF_VTYPE_UINT32);
        gb_u32(&g, 5);
        ASSERT_ERR(open_prefix(&g, g.n - 2, &f, NULL, err, sizeof(err)), -EBADMSG);
        ASSERT_CONTAINS(err, "truncated file: key 'abc': uint32 needs 4 bytes at offset 39 but the file ends at 41");
        gb_free(&g);
}

TEST(huge_n_tensors) {
        struct gb g = { 0 };

        gb_header(&g, 3, UINT64_C(1) << 60, 0);
        gb_zeros(&g, 64);
        expect_fail(&g, -EBADMSG, "tensor count 1152921504606846976 cannot fit");
        gb_free(&g);
}

TEST(huge_n_kv) {
        struct gb g = { 0 };

        gb_header(&g, 3, 0, UINT64_MAX);
        gb_zeros(&g, 64);
        expect_fail(&g, -EBADMSG, "kv count 18446744073709551615 cannot fit");
        gb_free(&g);

        /* Each count fits alone, together they do not. */
        gb_header(&g, 3, 2, 4);
        gb_zeros(&g, 100);
        expect_fail(&g, -EBADMSG, "kv count 4 and tensor count 2 cannot fit");
        gb_free(&g);
}

/* ---- kvs ---------------------------------------------------------------- */

TEST(huge_string_length) {
        struct gb g = { 0 };

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "general.name", GGUF_VTYPE_STRING);
        gb_u64(&g, UINT64_C(1) << 62);
        gb_put(&g, "abc", 3);
        expect_fail(&g, -EBADMSG, "key 'general.name': string length 4611686018427387904");
        gb_free(&g);

        gb_header(&g, 3, 0, 1);
        gb_u64(&g, UINT64_MAX);
        gb_zeros(&g, 32);
        expect_fail(&g, -EBADMSG, "name length 18446744073709551615 exceeds");
        gb_free(&g);
}

TEST(bad_keys) {
        struct gb g = { 0 };

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "", GGUF_VTYPE_UINT8);
        gb_u8(&g, 0);
        gb_zeros(&g, 8);
        expect_fail(&g, -EBADMSG, "key 0: empty name");
        gb_free(&g);

        gb_header(&g, 3, 0, 1);
        gb_strn(&g, "ab\0cd", 5);
        gb_u32(&g, GGUF_VTYPE_UINT8);
        gb_u8(&g, 0);
        expect_fail(&g, -EBADMSG, "name 'ab' contains a NUL byte");
        gb_free(&g);
}

TEST(huge_array_count) {
        struct gb g = { 0 };

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "arr", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_UINT8);
        gb_u64(&g, UINT64_C(1) << 40);
        gb_zeros(&g, 16);
        expect_fail(&g, -EBADMSG, "key 'arr': array of 1099511627776 uint8 elements");
        gb_free(&g);

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "tokenizer.ggml.tokens", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_STRING);
        gb_u64(&g, UINT64_C(1) << 60);
        gb_str(&g, "x");
        expect_fail(&g, -EBADMSG, "key 'tokenizer.ggml.tokens': array of 1152921504606846976 strings");
        gb_free(&g);

        /* A string element longer than the file. */
        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "tok", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_STRING);
        gb_u64(&g, 2);
        gb_str(&g, "x");
        gb_u64(&g, 1000);
        gb_put(&g, "yy", 2);
        expect_fail(&g, -EBADMSG, "key 'tok': element 1: string length 1000");
        gb_free(&g);
}

TEST(array_count_overflow) {
        struct gb g = { 0 };

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "arr", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_UINT64);
        gb_u64(&g, UINT64_C(1) << 62); /* * 8 wraps to 0 */
        gb_zeros(&g, 16);
        expect_fail(&g, -EOVERFLOW, "key 'arr': array of 4611686018427387904 uint64 elements overflows");
        gb_free(&g);
}

TEST(unknown_value_type) {
        struct gb g = { 0 };

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "weird", 13);
        gb_zeros(&g, 16);
        expect_fail(&g, -EBADMSG, "key 'weird': unknown value type 13");
        gb_free(&g);

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "weird", GGUF_VTYPE_ARRAY);
        gb_u32(&g, 0xdeadbeef);
        gb_u64(&g, 1);
        gb_zeros(&g, 16);
        expect_fail(&g, -EBADMSG, "key 'weird': unknown value type 3735928559");
        gb_free(&g);
}

TEST(nested_array) {
        struct gb g = { 0 };

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "nest", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_ARRAY);
        gb_u64(&g, 1);
        gb_u32(&g, GGUF_VTYPE_UINT8);
        gb_u64(&g, 1);
        gb_u8(&g, 1);
        expect_fail(&g, -EBADMSG, "key 'nest': nested arrays are not supported");
        gb_free(&g);
}

TEST(duplicate_keys) {
        struct gb g = { 0 };

        gb_header(&g, 3, 0, 3);
        gb_kv(&g, "a.b", GGUF_VTYPE_UINT8);
        gb_u8(&g, 1);
        gb_kv(&g, "a.c", GGUF_VTYPE_UINT8);
        gb_u8(&g, 1);
        gb_kv(&g, "a.b", GGUF_VTYPE_STRING);
        gb_str(&g, "x");
        expect_fail(&g, -EBADMSG, "duplicate key 'a.b' (kv 2)");
        gb_free(&g);
}

TEST(bad_alignment) {
        static const uint32_t bad[] = { 0, 3, 48, 0x80000001 };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct gb g = { 0 };
                char want[64];

                gb_header(&g, 3, 0, 1);
                gb_kv(&g, "general.alignment", GGUF_VTYPE_UINT32);
                gb_u32(&g, bad[i]);
                snprintf(want, sizeof(want), "general.alignment %u is not a non-zero power of two", bad[i]);
                expect_fail(&g, -EBADMSG, want);
                gb_free(&g);
        }

        struct gb g = { 0 };
        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "general.alignment", GGUF_VTYPE_STRING);
        gb_str(&g, "32");
        expect_fail(&g, -EBADMSG, "general.alignment is not an unsigned 32-bit integer");
        gb_free(&g);
}

/* ---- tensors ------------------------------------------------------------ */

TEST(unknown_tensor_type) {
        uint64_t ne[1] = { 32 };
        struct gb g = one_tensor(1, ne, 99, 0, 128);

        expect_fail(&g, -EOPNOTSUPP, "tensor 't': unknown or unsupported tensor type 99");
        gb_free(&g);
        /* 16 is a real ggml type (IQ2_XXS) the engine does not know. */
        g = one_tensor(1, ne, 16, 0, 128);
        expect_fail(&g, -EOPNOTSUPP, "tensor type 16");
        gb_free(&g);
}

TEST(bad_n_dims) {
        uint64_t ne[5] = { 4, 1, 1, 1, 1 };
        struct gb g = one_tensor(0, ne, RBEE_TYPE_F32, 0, 64);

        expect_fail(&g, -EBADMSG, "tensor 't': 0 dimensions, expected 1 to 4");
        gb_free(&g);
        g = one_tensor(5, ne, RBEE_TYPE_F32, 0, 64);
        expect_fail(&g, -EBADMSG, "tensor 't': 5 dimensions, expected 1 to 4");
        gb_free(&g);
}

TEST(ne_zero) {
        uint64_t ne[2] = { 4, 0 };
        struct gb g = one_tensor(2, ne, RBEE_TYPE_F32, 0, 64);

        expect_fail(&g, -EBADMSG, "tensor 't': dimension 1 is 0");
        gb_free(&g);
}

TEST(ne_product_overflow) {
        uint64_t ne[3] = { UINT64_C(1) << 32, UINT64_C(1) << 30, 4 };
        struct gb g = one_tensor(3, ne, RBEE_TYPE_F32, 0, 64);

        expect_fail(&g, -EOVERFLOW, "tensor 't': element count overflows at dimension 2");
        gb_free(&g);

        uint64_t huge[1] = { UINT64_MAX };
        g = one_tensor(1, huge, RBEE_TYPE_F32, 0, 64);
        expect_fail(&g, -EOVERFLOW, "overflows at dimension 0 (18446744073709551615)");
        gb_free(&g);

        /* The element count fits int64 but the byte size does not. */
        uint64_t big[2] = { UINT64_C(1) << 32, UINT64_C(1) << 30 };
        g = one_tensor(2, big, RBEE_TYPE_F32, 0, 64);
        expect_fail(&g, -EOVERFLOW, "tensor 't': size of 1073741824 rows of 17179869184 bytes overflows");
        gb_free(&g);

        /* A size that fits but runs far past the end. */
        uint64_t large[2] = { 1024, 1024 };
        g = one_tensor(2, large, RBEE_TYPE_F32, 0, 64);
        expect_fail(&g, -EBADMSG, "extends past end of file");
        gb_free(&g);
}

TEST(row_not_multiple_of_block) {
        uint64_t ne[2] = { 33, 2 };
        struct gb g = one_tensor(2, ne, RBEE_TYPE_Q4_0, 0, 64);

        expect_fail(&g, -EBADMSG, "tensor 't': row length 33 is not a multiple of the Q4_0 block size 32");
        gb_free(&g);
        ne[0] = 128;
        g = one_tensor(2, ne, RBEE_TYPE_Q4_K, 0, 1024);
        expect_fail(&g, -EBADMSG, "row length 128 is not a multiple of the Q4_K block size 256");
        gb_free(&g);
}

TEST(misaligned_offset) {
        uint64_t ne[1] = { 4 };
        struct gb g = one_tensor(1, ne, RBEE_TYPE_F32, 4, 64);

        expect_fail(&g, -EBADMSG, "tensor 't': offset 4 is not a multiple of the alignment 32");
        gb_free(&g);
}

TEST(overlapping_tensors) {
        struct gb g = { 0 };
        uint64_t ne[1] = { 16 }; /* 64 bytes of F32 */

        gb_header(&g, 3, 3, 0);
        gb_tensor(&g, "w0", 1, ne, RBEE_TYPE_F32, 128);
        gb_tensor(&g, "w1", 1, ne, RBEE_TYPE_F32, 0);
        gb_tensor(&g, "w2", 1, ne, RBEE_TYPE_F32, 32);
        gb_align(&g, 32);
        gb_zeros(&g, 192);
        expect_fail(&g, -EBADMSG, "tensor 'w2': data [32, 96) overlaps tensor 'w1' [0, 64)");
        gb_free(&g);
}

TEST(tensor_past_eof) {
        uint64_t ne[2] = { 8, 4 }; /* 128 bytes */
        struct gb g = one_tensor(2, ne, RBEE_TYPE_F32, 32, 159);

        expect_fail(&g, -EBADMSG, "tensor 't': data [32, 160) extends past end of file");
        gb_free(&g);
        /* An offset near 2^64 must not wrap around. */
        g = one_tensor(2, ne, RBEE_TYPE_F32, UINT64_MAX - 31, 160);
        expect_fail(&g, -EOVERFLOW, "tensor 't': offset 18446744073709551584 + size 128 overflows");
        gb_free(&g);
}

TEST(duplicate_tensor_names) {
        struct gb g = { 0 };
        uint64_t ne[1] = { 8 };

        gb_header(&g, 3, 2, 0);
        gb_tensor(&g, "blk.0.attn_q.weight", 1, ne, RBEE_TYPE_F32, 0);
        gb_tensor(&g, "blk.0.attn_q.weight", 1, ne, RBEE_TYPE_F32, 32);
        gb_align(&g, 32);
        gb_zeros(&g, 64);
        expect_fail(&g, -EBADMSG, "duplicate tensor name 'blk.0.attn_q.weight' (tensor 1)");
        gb_free(&g);
}

TEST(bad_tensor_names) {
        uint64_t ne[1] = { 8 };
        struct gb g = { 0 };

        gb_header(&g, 3, 1, 0);
        gb_tensor(&g, "", 1, ne, RBEE_TYPE_F32, 0);
        gb_align(&g, 32);
        gb_zeros(&g, 32);
        expect_fail(&g, -EBADMSG, "tensor 0: empty name");
        gb_free(&g);

        gb_header(&g, 3, 1, 0);
        gb_u64(&g, 65536);
        gb_zeros(&g, 65536 + 64);
        expect_fail(&g, -EBADMSG, "tensor 0: name length 65536 exceeds the limit");
        gb_free(&g);

        gb_header(&g, 3, 1, 0);
        gb_strn(&g, "x\0y", 3);
        gb_u32(&g, 1);
        gb_u64(&g, 8);
        gb_u32(&g, RBEE_TYPE_F32);
        gb_u64(&g, 0);
        gb_align(&g, 32);
        gb_zeros(&g, 32);
        expect_fail(&g, -EBADMSG, "name 'x' contains a NUL byte");
        gb_free(&g);
}

/* ---- valid files -------------------------------------------------------- */

TEST(all_value_types_round_trip) {
        struct gb g = { 0 };
        gguf_file *f = NULL;
        void *buf = NULL;
        char err[512] = "";

        gb_header(&g, 3, 0, 21);
        gb_kv(&g, "u8", GGUF_VTYPE_UINT8);
        gb_u8(&g, 200);
        gb_kv(&g, "i8", GGUF_VTYPE_INT8);
        gb_i8(&g, -100);
        gb_kv(&g, "u16", GGUF_VTYPE_UINT16);
        gb_u16(&g, 60000);
        gb_kv(&g, "i16", GGUF_VTYPE_INT16);
        gb_i16(&g, -30000);
        gb_kv(&g, "u32", GGUF_VTYPE_UINT32);
        gb_u32(&g, 4000000000u);
        gb_kv(&g, "i32", GGUF_VTYPE_INT32);
        gb_i32(&g, -5);
        gb_kv(&g, "f32", GGUF_VTYPE_FLOAT32);
        gb_f32(&g, 1e-5f);
        gb_kv(&g, "bool", GGUF_VTYPE_BOOL);
        gb_u8(&g, 1);
        gb_kv(&g, "str", GGUF_VTYPE_STRING);
        gb_str(&g, "hello");
        gb_kv(&g, "u64", GGUF_VTYPE_UINT64);
        gb_u64(&g, UINT64_C(1) << 40);
        gb_kv(&g, "i64", GGUF_VTYPE_INT64);
        gb_i64(&g, INT64_MIN);
        gb_kv(&g, "f64", GGUF_VTYPE_FLOAT64);
        gb_f64(&g, 1e6);
        gb_kv(&g, "i64small", GGUF_VTYPE_INT64);
        gb_i64(&g, 42);
        gb_kv(&g, "arr_i16", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_INT16);
        gb_u64(&g, 3);
        gb_i16(&g, -1);
        gb_i16(&g, 0);
        gb_i16(&g, 300);
        gb_kv(&g, "arr_f64", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_FLOAT64);
        gb_u64(&g, 2);
        gb_f64(&g, 0.25);
        gb_f64(&g, -2.5);
        gb_kv(&g, "arr_u32", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_UINT32);
        gb_u64(&g, 2);
        gb_u32(&g, 7);
        gb_u32(&g, 3000000000u);
        gb_kv(&g, "arr_i32", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_INT32);
        gb_u64(&g, 3);
        gb_i32(&g, INT32_MIN);
        gb_i32(&g, 0);
        gb_i32(&g, INT32_MAX);
        gb_kv(&g, "arr_bool", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_BOOL);
        gb_u64(&g, 2);
        gb_u8(&g, 0);
        gb_u8(&g, 1);
        gb_kv(&g, "arr_empty", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_STRING);
        gb_u64(&g, 0);
        gb_kv(&g, "bool0", GGUF_VTYPE_BOOL);
        gb_u8(&g, 0);
        gb_kv(&g, "empty_str", GGUF_VTYPE_STRING);
        gb_str(&g, "");
        ASSERT_OK(open_prefix(&g, g.n, &f, &buf, err, sizeof(err)));
        ASSERT_EQ(gguf_n_kv(f), 21);
        ASSERT_STREQ(gguf_kv_key(f, 0), "u8");
        ASSERT_STREQ(gguf_kv_key(f, 20), "empty_str");
        ASSERT_TRUE(gguf_kv_key(f, 21) == NULL);
        ASSERT_EQ(gguf_kv_type(f, 8), GGUF_VTYPE_STRING);
        ASSERT_EQ(gguf_find_key(f, "f64"), 11);
        ASSERT_ERR(gguf_find_key(f, "nope"), -ENOENT);
        ASSERT_ERR(gguf_find_key(f, "f6"), -ENOENT);
        ASSERT_ERR(gguf_find_key(f, "f644"), -ENOENT);
        ASSERT_EQ(gguf_alignment(f), GGUF_DEFAULT_ALIGNMENT);

        uint32_t u32 = 0;
        int32_t i32 = 0;
        uint64_t u64 = 0;
        float f32 = 0;
        bool b = false;
        struct gguf_str s;

        /* Integer getters convert between integer types when the value fits. */
        ASSERT_OK(gguf_get_u32(f, "u8", &u32));
        ASSERT_EQ(u32, 200);
        ASSERT_OK(gguf_get_i32(f, "i8", &i32));
        ASSERT_EQ(i32, -100);
        ASSERT_OK(gguf_get_u32(f, "u16", &u32));
        ASSERT_EQ(u32, 60000);
        ASSERT_OK(gguf_get_i32(f, "i16", &i32));
        ASSERT_EQ(i32, -30000);
        ASSERT_OK(gguf_get_u32(f, "u32", &u32));
        ASSERT_EQ(u32, 4000000000u);
        ASSERT_OK(gguf_get_u64(f, "u32", &u64));
        ASSERT_EQ(u64, 4000000000u);
        ASSERT_OK(gguf_get_i32(f, "i32", &i32));
        ASSERT_EQ(i32, -5);
        ASSERT_OK(gguf_get_u64(f, "u64", &u64));
        ASSERT_EQ(u64, UINT64_C(1) << 40);
        ASSERT_OK(gguf_get_u32(f, "i64small", &u32));
        ASSERT_EQ(u32, 42);
        ASSERT_OK(gguf_get_i32(f, "i64small", &i32));
        ASSERT_EQ(i32, 42);
        ASSERT_OK(gguf_get_u32(f, "u8", &u32));

        /* Range errors leave the output alone. */
        u32 = 123;
        ASSERT_ERR(gguf_get_u32(f, "i32", &u32), -EBADMSG);
        ASSERT_EQ(u32, 123);
        ASSERT_ERR(gguf_get_u32(f, "i8", &u32), -EBADMSG);
        ASSERT_ERR(gguf_get_u64(f, "i64", &u64), -EBADMSG);
        ASSERT_ERR(gguf_get_i32(f, "u32", &i32), -EBADMSG);
        ASSERT_ERR(gguf_get_i32(f, "i64", &i32), -EBADMSG);
        ASSERT_ERR(gguf_get_u32(f, "u64", &u32), -EBADMSG);
        /* Wrong types. */
        ASSERT_ERR(gguf_get_u32(f, "f32", &u32), -EBADMSG);
        ASSERT_ERR(gguf_get_u32(f, "str", &u32), -EBADMSG);
        ASSERT_ERR(gguf_get_u32(f, "bool", &u32), -EBADMSG);
        ASSERT_ERR(gguf_get_bool(f, "u8", &b), -EBADMSG);
        ASSERT_ERR(gguf_get_str(f, "u8", &s), -EBADMSG);
        ASSERT_ERR(gguf_get_f32(f, "i32", &f32), -EBADMSG);
        ASSERT_ERR(gguf_get_u32(f, "arr_i16", &u32), -EBADMSG);
        /* Missing keys. */
        ASSERT_ERR(gguf_get_u32(f, "missing", &u32), -ENOENT);
        ASSERT_ERR(gguf_get_i32(f, "missing", &i32), -ENOENT);
        ASSERT_ERR(gguf_get_u64(f, "missing", &u64), -ENOENT);
        ASSERT_ERR(gguf_get_f32(f, "missing", &f32), -ENOENT);
        ASSERT_ERR(gguf_get_bool(f, "missing", &b), -ENOENT);
        ASSERT_ERR(gguf_get_str(f, "missing", &s), -ENOENT);
        ASSERT_ERR(gguf_get_arr_info(f, "missing", NULL, NULL), -ENOENT);

        ASSERT_OK(gguf_get_f32(f, "f32", &f32));
        ASSERT_TRUE(f32 == 1e-5f);
        ASSERT_OK(gguf_get_f32(f, "f64", &f32));
        ASSERT_TRUE(f32 == 1e6f);
        ASSERT_OK(gguf_get_bool(f, "bool", &b));
        ASSERT_TRUE(b);
        ASSERT_OK(gguf_get_bool(f, "bool0", &b));
        ASSERT_FALSE(b);
        ASSERT_OK(gguf_get_str(f, "str", &s));
        ASSERT_EQ(s.n, 5);
        ASSERT_TRUE(memcmp(s.s, "hello", 5) == 0);
        ASSERT_OK(gguf_get_str(f, "empty_str", &s));
        ASSERT_EQ(s.n, 0);

        /* Arrays. */
        enum gguf_vtype et;
        uint64_t n;
        float fa[3];
        int32_t ia[3] = { 11, 22, 33 };

        ASSERT_OK(gguf_get_arr_info(f, "arr_i16", &et, &n));
        ASSERT_EQ(et, GGUF_VTYPE_INT16);
        ASSERT_EQ(n, 3);
        ASSERT_ERR(gguf_get_arr_info(f, "str", &et, &n), -EBADMSG);
        ASSERT_OK(gguf_get_arr_f32(f, "arr_i16", fa, 3));
        ASSERT_TRUE(fa[0] == -1.0f && fa[1] == 0.0f && fa[2] == 300.0f);
        ASSERT_OK(gguf_get_arr_i32(f, "arr_i16", ia, 3));
        ASSERT_TRUE(ia[0] == -1 && ia[1] == 0 && ia[2] == 300);
        ASSERT_OK(gguf_get_arr_f32(f, "arr_f64", fa, 2));
        ASSERT_TRUE(fa[0] == 0.25f && fa[1] == -2.5f);
        ASSERT_OK(gguf_get_arr_i32(f, "arr_i32", ia, 3));
        ASSERT_TRUE(ia[0] == INT32_MIN && ia[1] == 0 && ia[2] == INT32_MAX);
        ASSERT_OK(gguf_get_arr_f32(f, "arr_u32", fa, 2));
        ASSERT_TRUE(fa[0] == 7.0f && fa[1] == 3e9f);
        /* 3e9 does not fit int32: error, output untouched. */
        ia[0] = 99;
        ASSERT_ERR(gguf_get_arr_i32(f, "arr_u32", ia, 2), -EBADMSG);
        ASSERT_EQ(ia[0], 99);
        ASSERT_ERR(gguf_get_arr_i32(f, "arr_f64", ia, 2), -EBADMSG);
        ASSERT_ERR(gguf_get_arr_f32(f, "arr_bool", fa, 2), -EBADMSG);
        ASSERT_ERR(gguf_get_arr_f32(f, "arr_empty", fa, 0), -EBADMSG);
        /* The length must match. */
        ASSERT_ERR(gguf_get_arr_f32(f, "arr_i16", fa, 2), -EBADMSG);
        ASSERT_ERR(gguf_get_arr_i32(f, "arr_i16", ia, 1), -EBADMSG);
        ASSERT_ERR(gguf_get_arr_f32(f, "u8", fa, 1), -EBADMSG);
        ASSERT_ERR(gguf_get_arr_f32(f, "missing", fa, 1), -ENOENT);
        ASSERT_OK(gguf_get_arr_info(f, "arr_empty", &et, &n));
        ASSERT_EQ(et, GGUF_VTYPE_STRING);
        ASSERT_EQ(n, 0);
        ASSERT_ERR(gguf_get_arr_str(f, "arr_empty", 0, &s), -ERANGE);
        ASSERT_ERR(gguf_get_arr_str(f, "arr_i16", 0, &s), -EBADMSG);

        gguf_close(f);
        free(buf);
        gb_free(&g);
}

TEST(string_array_indexing) {
        struct gb g = { 0 };
        gguf_file *f = NULL;
        void *buf = NULL;
        char err[512] = "", word[32];
        struct gguf_str s;
        const uint64_t n = 1000;

        gb_header(&g, 3, 0, 1);
        gb_kv(&g, "tokenizer.ggml.tokens", GGUF_VTYPE_ARRAY);
        gb_u32(&g, GGUF_VTYPE_STRING);
        gb_u64(&g, n);
        for (uint64_t i = 0; i < n; i++) {
                snprintf(word, sizeof(word), "w%" PRIu64, i * 7);
                gb_str(&g, word);
        }
        ASSERT_OK(open_prefix(&g, g.n, &f, &buf, err, sizeof(err)));
        for (uint64_t i = 0; i < n; i++) {
                uint64_t j = (i * 389) % n;

                snprintf(word, sizeof(word), "w%" PRIu64, j * 7);
                ASSERT_OK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", j, &s));
                ASSERT_EQ(s.n, strlen(word));
                ASSERT_TRUE(memcmp(s.s, word, s.n) == 0);
        }
        ASSERT_ERR(gguf_get_arr_str(f, "tokenizer.ggml.tokens", n, &s), -ERANGE);
        ASSERT_ERR(gguf_get_arr_str(f, "tokenizer.ggml.tokens", UINT64_MAX, &s), -ERANGE);
        ASSERT_ERR(gguf_get_arr_str(f, "nope", 0, &s), -ENOENT);
        gguf_close(f);
        free(buf);
        gb_free(&g);
}

TEST(tensor_data_pointers) {
        struct gb g = small_valid();
        gguf_file *f = NULL;
        void *buf = NULL;
        char err[512] = "";
        const struct gguf_tensor *a, *b;

        ASSERT_OK(open_prefix(&g, g.n, &f, &buf, err, sizeof(err)));
        ASSERT_EQ(gguf_n_tensors(f), 2);
        ASSERT_EQ(gguf_data_size(f), 64 + 34);
        ASSERT_TRUE((const uint8_t *) gguf_data_base(f) == (const uint8_t *) buf + (g.n - 98));
        ASSERT_EQ(((const uint8_t *) gguf_data_base(f) - (const uint8_t *) buf) % 32, 0);

        a = gguf_find_tensor(f, "a");
        ASSERT_NOT_NULL(a);
        ASSERT_TRUE(a == gguf_get_tensor(f, 0));
        ASSERT_STREQ(a->name, "a");
        ASSERT_EQ(a->n_dims, 2);
        ASSERT_EQ(a->ne[0], 8);
        ASSERT_EQ(a->ne[1], 2);
        ASSERT_EQ(a->ne[2], 1);
        ASSERT_EQ(a->ne[3], 1);
        ASSERT_EQ(a->type, RBEE_TYPE_F32);
        ASSERT_EQ(a->size, 64);
        ASSERT_TRUE(a->data == gguf_data_base(f));
        for (int i = 0; i < 16; i++) {
                float v;
                memcpy(&v, (const uint8_t *) a->data + 4 * i, 4);
                ASSERT_TRUE(v == (float) i);
        }
        b = gguf_find_tensor(f, "b");
        ASSERT_NOT_NULL(b);
        ASSERT_EQ(b->type, RBEE_TYPE_Q8_0);
        ASSERT_EQ(b->size, 34);
        ASSERT_EQ(b->offset, 64);
        ASSERT_TRUE((const uint8_t *) b->data == (const uint8_t *) gguf_data_base(f) + 64);
        ASSERT_TRUE(gguf_find_tensor(f, "c") == NULL);
        ASSERT_TRUE(gguf_find_tensor(f, "") == NULL);
        ASSERT_TRUE(gguf_find_tensor(f, "aa") == NULL);
        ASSERT_TRUE(gguf_get_tensor(f, 2) == NULL);

        struct gguf_str s;
        ASSERT_OK(gguf_get_str(f, "general.architecture", &s));
        ASSERT_EQ(s.n, 5);
        ASSERT_OK(gguf_get_arr_str(f, "test.tokens", 1, &s));
        ASSERT_TRUE(s.n == 2 && memcmp(s.s, "bc", 2) == 0);
        gguf_close(f);
        free(buf);
        gb_free(&g);
}

TEST(custom_alignment) {
        struct gb g = { 0 };
        uint64_t ne[1] = { 4 };
        gguf_file *f = NULL;
        void *buf = NULL;
        char err[512] = "";

        gb_header(&g, 3, 2, 1);
        gb_kv(&g, "general.alignment", GGUF_VTYPE_UINT32);
        gb_u32(&g, 256);
        gb_tensor(&g, "x", 1, ne, RBEE_TYPE_F32, 0);
        gb_tensor(&g, "y", 1, ne, RBEE_TYPE_F16, 256);
        gb_align(&g, 256);
        gb_zeros(&g, 256 + 8);
        ASSERT_OK(open_prefix(&g, g.n, &f, &buf, err, sizeof(err)));
        ASSERT_EQ(gguf_alignment(f), 256);
        ASSERT_EQ((const uint8_t *) gguf_data_base(f) - (const uint8_t *) buf, 256);
        ASSERT_EQ((const uint8_t *) gguf_find_tensor(f, "y")->data - (const uint8_t *) buf, 512);
        gguf_close(f);
        free(buf);
        gb_free(&g);

        /* Any integer type holding a power of two will do. */
        gb_header(&g, 3, 1, 1);
        gb_kv(&g, "general.alignment", GGUF_VTYPE_UINT64);
        gb_u64(&g, 64);
        gb_tensor(&g, "x", 1, ne, RBEE_TYPE_F32, 64);
        gb_align(&g, 64);
        gb_zeros(&g, 64 + 16);
        ASSERT_OK(open_prefix(&g, g.n, &f, &buf, err, sizeof(err)));
        ASSERT_EQ(gguf_alignment(f), 64);
        ASSERT_EQ((const uint8_t *) gguf_find_tensor(f, "x")->data - (const uint8_t *) buf, g.n - 16);
        gguf_close(f);
        free(buf);
        gb_free(&g);

        /* Offset 32 is fine for the default alignment but not for 256. */
        gb_header(&g, 3, 1, 1);
        gb_kv(&g, "general.alignment", GGUF_VTYPE_UINT32);
        gb_u32(&g, 256);
        gb_tensor(&g, "x", 1, ne, RBEE_TYPE_F32, 32);
        gb_align(&g, 256);
        gb_zeros(&g, 256);
        expect_fail(&g, -EBADMSG, "tensor 'x': offset 32 is not a multiple of the alignment 256");
        gb_free(&g);
}

TEST(open_file_matches_memory) {
        struct gb g = small_valid();
        const char *path = write_tmp("small.gguf", g.b, g.n);
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        char err[512] = "";
        const struct gguf_tensor *t;
        uint32_t u;

        ASSERT_OK(gguf_open(path, &f, err, sizeof(err)));
        ASSERT_EQ(gguf_file_size(f), g.n);
        ASSERT_EQ(gguf_n_kv(f), 4);
        ASSERT_OK(gguf_get_u32(f, "test.u32", &u));
        ASSERT_EQ(u, 7);
        t = gguf_find_tensor(f, "b");
        ASSERT_NOT_NULL(t);
        ASSERT_EQ(((uintptr_t) t->data) % 32, 0);
        ASSERT_TRUE((const uint8_t *) t->data == (const uint8_t *) gguf_data_base(f) + t->offset);
        t = gguf_find_tensor(f, "a");
        ASSERT_TRUE(memcmp(t->data, g.b + g.n - 98, 64) == 0);
        /* A NULL message buffer is fine. */
        gguf_file *f2 = NULL;
        ASSERT_OK(gguf_open(path, &f2, NULL, 0));
        ASSERT_TRUE(gguf_close(f2) == NULL);
        ASSERT_TRUE(gguf_close(NULL) == NULL);
        gb_free(&g);
}

TEST_TIMEOUT(many_keys_and_tensors, 30) {
        struct gb g = { 0 };
        gguf_file *f = NULL;
        void *buf = NULL;
        char err[512] = "", key[64];
        const size_t n_kv = 100000, n_t = 20000;
        uint64_t ne[1] = { 8 }; /* 32 bytes of F32: exactly one alignment unit */
        double t0, ms;

        gb_header(&g, 3, n_t, n_kv);
        for (size_t i = 0; i < n_kv; i++) {
                snprintf(key, sizeof(key), "key.%zu", i);
                gb_kv(&g, key, GGUF_VTYPE_UINT32);
                gb_u32(&g, (uint32_t) i);
        }
        for (size_t i = 0; i < n_t; i++) {
                snprintf(key, sizeof(key), "blk.%zu.weight", i);
                /* Reverse order of offsets, to exercise the overlap sort. */
                gb_tensor(&g, key, 1, ne, RBEE_TYPE_F32, (n_t - 1 - i) * 32);
        }
        gb_align(&g, 32);
        gb_zeros(&g, n_t * 32);

        t0 = now_ms();
        ASSERT_OK(open_prefix(&g, g.n, &f, &buf, err, sizeof(err)));
        ms = now_ms() - t0;
        fprintf(stderr, "  open with %zu keys and %zu tensors: %.1f ms\n", n_kv, n_t, ms);
        /* Quadratic duplicate checks would take seconds here. */
        ASSERT_LE(ms, 2000);
        for (size_t i = 0; i < n_kv; i += 997) {
                uint32_t v;
                snprintf(key, sizeof(key), "key.%zu", i);
                ASSERT_EQ(gguf_find_key(f, key), i);
                ASSERT_OK(gguf_get_u32(f, key, &v));
                ASSERT_EQ(v, i);
        }
        for (size_t i = 0; i < n_t; i += 101) {
                snprintf(key, sizeof(key), "blk.%zu.weight", i);
                ASSERT_TRUE(gguf_find_tensor(f, key) == gguf_get_tensor(f, i));
        }
        gguf_close(f);
        free(buf);
        gb_free(&g);
}

/* ---- real files --------------------------------------------------------- */

/* Opens every tensor and key the way a loader would, touching each getter. */
static void walk(const gguf_file *f) {
        for (size_t i = 0; i < gguf_n_kv(f); i++) {
                const char *k = gguf_kv_key(f, i);
                enum gguf_vtype t = gguf_kv_type(f, i), et;
                struct gguf_str s;
                uint64_t n, u64;
                uint32_t u32;
                int32_t i32;
                float f32;
                bool b;

                ASSERT_NOT_NULL(k);
                ASSERT_EQ(gguf_find_key(f, k), i);
                (void) gguf_get_u32(f, k, &u32);
                (void) gguf_get_i32(f, k, &i32);
                (void) gguf_get_u64(f, k, &u64);
                (void) gguf_get_f32(f, k, &f32);
                (void) gguf_get_bool(f, k, &b);
                if (t == GGUF_VTYPE_STRING) {
                        ASSERT_OK(gguf_get_str(f, k, &s));
                        if (s.n)
                                (void) ((volatile const char *) s.s)[s.n - 1];
                }
                if (t != GGUF_VTYPE_ARRAY)
                        continue;
                ASSERT_OK(gguf_get_arr_info(f, k, &et, &n));
                if (et == GGUF_VTYPE_STRING) {
                        /* First, middle and last element. */
                        const uint64_t at[3] = { 0, n / 2, n - 1 };
                        for (size_t j = 0; n > 0 && j < ELEMENTSOF(at); j++) {
                                ASSERT_OK(gguf_get_arr_str(f, k, at[j], &s));
                                if (s.n)
                                        (void) ((volatile const char *) s.s)[s.n - 1];
                        }
                } else if (n > 0 && n < (1u << 24)) {
                        float *fa = malloc(n * sizeof(float));
                        int32_t *ia = malloc(n * sizeof(int32_t));
                        ASSERT_TRUE(fa && ia);
                        (void) gguf_get_arr_f32(f, k, fa, n);
                        (void) gguf_get_arr_i32(f, k, ia, n);
                        free(fa);
                        free(ia);
                }
        }
        for (size_t i = 0; i < gguf_n_tensors(f); i++) {
                const struct gguf_tensor *t = gguf_get_tensor(f, i);
                ASSERT_NOT_NULL(t);
                ASSERT_TRUE(gguf_find_tensor(f, t->name) == t);
                ASSERT_LE(t->offset + t->size, gguf_data_size(f));
                ASSERT_EQ(t->offset % gguf_alignment(f), 0);
                (void) ((volatile const uint8_t *) t->data)[0];
                (void) ((volatile const uint8_t *) t->data)[t->size - 1];
        }
}

static size_t open_all(const char *dir) {
        glob_t gl;
        char pat[4096];
        size_t n = 0;

        snprintf(pat, sizeof(pat), "%s/*.gguf", dir);
        if (glob(pat, 0, NULL, &gl) != 0)
                return 0;
        for (size_t i = 0; i < gl.gl_pathc; i++) {
                _cleanup_(gguf_closep) gguf_file *f = NULL;
                char err[512] = "";
                int r = gguf_open(gl.gl_pathv[i], &f, err, sizeof(err));

                if (r < 0)
                        FAIL("%s: %d %s", gl.gl_pathv[i], r, err);
                ASSERT_TRUE(gguf_version(f) == 2 || gguf_version(f) == 3);
                walk(f);
                n++;
        }
        globfree(&gl);
        return n;
}

TEST(shared_models_open) {
        const char *dir = harness_shared("models");

        ASSERT_GE(open_all(dir), 1);
}

TEST(shared_vocabs_open) {
        const char *dir = harness_shared("tokenizer");

        ASSERT_GE(open_all(dir), 1);
}

TEST(tiny_llama_facts) {
        const char *path = harness_shared("models/tiny-llama-d64-F32.gguf");
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        char err[512] = "";
        struct gguf_str s;
        const struct gguf_tensor *t;
        uint32_t u;
        uint64_t n;
        enum gguf_vtype et;

        ASSERT_OK(gguf_open(path, &f, err, sizeof(err)));
        ASSERT_OK(gguf_get_str(f, "general.architecture", &s));
        ASSERT_TRUE(s.n == 5 && memcmp(s.s, "llama", 5) == 0);
        ASSERT_OK(gguf_get_u32(f, "llama.embedding_length", &u));
        ASSERT_EQ(u, 64);
        ASSERT_OK(gguf_get_u32(f, "llama.block_count", &u));
        ASSERT_EQ(u, 2);
        ASSERT_OK(gguf_get_arr_info(f, "tokenizer.ggml.tokens", &et, &n));
        ASSERT_EQ(et, GGUF_VTYPE_STRING);
        ASSERT_EQ(n, 32000);
        t = gguf_find_tensor(f, "token_embd.weight");
        ASSERT_NOT_NULL(t);
        ASSERT_EQ(t->n_dims, 2);
        ASSERT_EQ(t->ne[0], 64);
        ASSERT_EQ(t->ne[1], 32000);
        ASSERT_EQ(t->type, RBEE_TYPE_F32);
        ASSERT_EQ(t->size, 64 * 32000 * 4);
        ASSERT_EQ(((uintptr_t) t->data) % gguf_alignment(f), 0);
}

TEST(tiny_llama_quantized_types) {
        static const struct {
                const char *file;
                enum rbee_type attn_q;
        } cases[] = {
                { "models/tiny-llama-d64-Q4_0.gguf", RBEE_TYPE_Q4_0 },
                { "models/tiny-llama-d64-Q8_0.gguf", RBEE_TYPE_Q8_0 },
                { "models/tiny-llama-d64-F16.gguf", RBEE_TYPE_F16 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(gguf_closep) gguf_file *f = NULL;
                char err[512] = "";
                const struct gguf_tensor *t;

                ASSERT_OK(gguf_open(harness_shared(cases[i].file), &f, err, sizeof(err)));
                t = gguf_find_tensor(f, "blk.0.attn_q.weight");
                ASSERT_NOT_NULL(t);
                ASSERT_EQ(t->type, cases[i].attn_q);
                ASSERT_EQ(t->ne[0], 64);
                ASSERT_EQ(t->ne[1], 64);
        }
}

TEST(vocab_facts_and_speed) {
        const char *path = harness_shared("tokenizer/ggml-vocab-qwen2.gguf");
        double best = 1e9;
        struct gguf_str s;
        uint64_t n;
        enum gguf_vtype et;

        for (int rep = 0; rep < 3; rep++) {
                gguf_file *f = NULL;
                char err[512] = "";
                double t0 = now_ms();

                ASSERT_OK(gguf_open(path, &f, err, sizeof(err)));
                best = MIN(best, now_ms() - t0);
                ASSERT_OK(gguf_get_arr_info(f, "tokenizer.ggml.tokens", &et, &n));
                ASSERT_EQ(et, GGUF_VTYPE_STRING);
                ASSERT_EQ(n, 151936);
                ASSERT_OK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 151643, &s));
                ASSERT_TRUE(s.n == 13 && memcmp(s.s, "<|endoftext|>", 13) == 0);
                ASSERT_EQ(gguf_n_tensors(f), 0);
                gguf_close(f);
        }
        fprintf(stderr, "  open %s: %.1f ms\n", path, best);
        ASSERT_LE(best, 50);

        _cleanup_(gguf_closep) gguf_file *f = NULL;
        ASSERT_OK(gguf_open(harness_shared("tokenizer/ggml-vocab-llama-spm.gguf"), &f, NULL, 0));
        ASSERT_OK(gguf_get_arr_info(f, "tokenizer.ggml.tokens", &et, &n));
        ASSERT_EQ(n, 32000);
        ASSERT_OK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 1, &s));
        ASSERT_TRUE(s.n == 3 && memcmp(s.s, "<s>", 3) == 0);
        float *scores = malloc(n * sizeof(float));
        ASSERT_NOT_NULL(scores);
        ASSERT_OK(gguf_get_arr_f32(f, "tokenizer.ggml.scores", scores, n));
        free(scores);
}

/* ---- mutation ----------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
        /* xorshift64*: fixed seed, same sequence everywhere. */
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        return *s * UINT64_C(2685821657736338717);
}

TEST_TIMEOUT(random_mutations, 60) {
        struct gb g = small_valid();
        uint64_t seed = UINT64_C(0x9e3779b97f4a7c15);
        unsigned ok = 0, bad = 0;

        for (int it = 0; it < 2000; it++) {
                uint8_t *m = malloc(g.n);
                size_t n = g.n;
                gguf_file *f = NULL;
                char err[512];
                int r, k = 1 + (int) (rng_next(&seed) % 4);

                ASSERT_NOT_NULL(m);
                memcpy(m, g.b, g.n);
                for (int j = 0; j < k && n > 0; j++) {
                        uint64_t x = rng_next(&seed);
                        size_t at = (size_t) ((x >> 8) % n);

                        switch (x % 5) {
                        case 0: /* flip a bit */
                                m[at] ^= (uint8_t) (1u << ((x >> 40) % 8));
                                break;
                        case 1: /* a random byte */
                                m[at] = (uint8_t) (x >> 48);
                                break;
                        case 2: /* a length or count turned huge or small */
                                if (at + 8 <= n) {
                                        uint64_t v = rng_next(&seed);
                                        if (x & 0x100)
                                                v %= 300;
                                        memcpy(m + at, &v, 8);
                                }
                                break;
                        case 3: /* nudge a 64-bit little-endian field */
                                if (at + 8 <= n) {
                                        uint64_t v;
                                        memcpy(&v, m + at, 8);
                                        v += (x & 0x200) ? 1 : (uint64_t) -1;
                                        memcpy(m + at, &v, 8);
                                }
                                break;
                        default: /* truncate */
                                n = at;
                                break;
                        }
                }
                err[0] = 0;
                r = gguf_open_memory(m, n, &f, err, sizeof(err));
                if (r < 0) {
                        if (!err[0])
                                FAIL("iteration %d: error %d without a message", it, r);
                        ASSERT_TRUE(f == NULL);
                        bad++;
                } else {
                        walk(f);
                        gguf_close(f);
                        ok++;
                }
                free(m);
        }
        fprintf(stderr, "  %u opened, %u rejected\n", ok, bad);
        ASSERT_GE(bad, 1000);
        gb_free(&g);
}
