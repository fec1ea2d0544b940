/* SPDX-License-Identifier: MIT */
/* Tests for the GGUF writer (engine/gguf-writer.c) and the rbee-mkmodel
 * tool. Writer files are read back with the engine's own reader; the tool is
 * run as the real built binary (skipped when it is not built) at the tiny
 * shapes only, and its type mixtures are compared with a file that
 * llama.cpp's llama-quantize wrote for the same shape. */

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "gguf-writer.h"
#include "gguf.h"
#include "harness.h"
#include "macros.h"
#include "quants.h"
#include "tokenizer.h"

/* ---- helpers ------------------------------------------------------------ */

static char *path_in_tmp(const char *name) {
        char *p;

        ASSERT_TRUE(asprintf(&p, "%s/%s", harness_tmpdir(), name) >= 0);
        return p;
}

static gguf_file *open_ok(const char *path) {
        gguf_file *f = NULL;
        char err[512] = "";
        int r = gguf_open(path, &f, err, sizeof(err));

        if (r < 0)
                FAIL("gguf_open(%s): %d %s", path, r, err);
        return f;
}

static void assert_str(const gguf_file *f, const char *key, const char *want) {
        struct gguf_str s;

        ASSERT_OK(gguf_get_str(f, key, &s));
        if (s.n != strlen(want) || memcmp(s.s, want, s.n) != 0)
                FAIL("%s: \"%.*s\" != \"%s\"", key, (int) MIN(s.n, (uint64_t) 200), s.s, want);
}

static uint32_t get_u32(const gguf_file *f, const char *key) {
        uint32_t v = 0;

        ASSERT_OK(gguf_get_u32(f, key, &v));
        return v;
}

static float get_f32(const gguf_file *f, const char *key) {
        float v = 0;

        ASSERT_OK(gguf_get_f32(f, key, &v));
        return v;
}

static const struct gguf_tensor *tensor(const gguf_file *f, const char *name) {
        const struct gguf_tensor *t = gguf_find_tensor(f, name);

        if (!t)
                FAIL("no tensor %s", name);
        return t;
}

static void assert_tensor(const gguf_file *f, const char *name, enum rbee_type type, uint64_t ne0, uint64_t ne1) {
        const struct gguf_tensor *t = tensor(f, name);

        if (t->type != type)
                FAIL("%s: type %s, want %s", name, rbee_type_name(t->type), rbee_type_name(type));
        ASSERT_EQ(t->ne[0], ne0);
        ASSERT_EQ(t->ne[1], ne1);
        ASSERT_EQ(t->n_dims, ne1 > 1 ? 2 : 1);
}

/* A whole tensor as floats. */
static float *dequant(const struct gguf_tensor *t) {
        uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3], row_size;
        float *x = malloc_multiply(rows * t->ne[0], sizeof(float));

        ASSERT_NOT_NULL(x);
        ASSERT_OK(rbee_type_row_size(t->type, t->ne[0], &row_size));
        for (uint64_t r = 0; r < rows; r++)
                ASSERT_OK(rbee_dequantize_row(t->type, (const uint8_t *) t->data + r * row_size, x + r * t->ne[0],
                                              (int64_t) t->ne[0]));
        return x;
}

static size_t count_tmp_files(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;
        size_t n = 0;

        ASSERT_NOT_NULL(d);
        while ((de = readdir(d)))
                if (strstr(de->d_name, ".tmp."))
                        n++;
        closedir(d);
        return n;
}

/* Runs build/rbee-mkmodel with the given arguments (NULL-terminated),
 * stderr to a file; returns the exit status and, when ret_err is given, the
 * stderr text. */
static int mkmodel(char **ret_err, ...) {
        const char *bin = harness_build_path("rbee-mkmodel");
        char *argv[64], *errpath = path_in_tmp("mkmodel.stderr");
        size_t n = 0;
        va_list ap;
        pid_t pid;
        int status;

        if (access(bin, X_OK) < 0)
                SKIP("%s is not built", bin);
        argv[n++] = (char *) bin;
        va_start(ap, ret_err);
        for (const char *a; (a = va_arg(ap, const char *));) {
                ASSERT_TRUE(n < ELEMENTSOF(argv) - 1);
                argv[n++] = (char *) a;
        }
        va_end(ap);
        argv[n] = NULL;

        fflush(NULL);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

                if (fd < 0 || null < 0 || dup2(fd, STDERR_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0)
                        _exit(127);
                execv(bin, argv);
                _exit(127);
        }
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        if (ret_err)
                *ret_err = harness_read_file(errpath, NULL);
        free(errpath);
        if (!WIFEXITED(status))
                FAIL("rbee-mkmodel killed by signal %d", WTERMSIG(status));
        return WEXITSTATUS(status);
}

static void mkmodel_ok(const char *out, const char *shape, const char *type, const char *seed) {
        char *err = NULL;
        int r = mkmodel(&err, "-q", "-o", out, "--shape", shape, "--type", type, "--seed", seed, NULL);

        if (r != 0)
                FAIL("rbee-mkmodel --shape %s --type %s exited %d: %s", shape, type, r, err);
        free(err);
}

/* ---- writer ------------------------------------------------------------- */

struct rows_ctx {
        enum rbee_type type;
        uint64_t ne0;
        unsigned calls;
        int fail_at; /* call number that fails, or -1 */
};

/* Row r of a test tensor: values that depend on (r, j), quantized. */
static void test_row(uint64_t ne0, uint64_t r, float *x) {
        for (uint64_t j = 0; j < ne0; j++)
                x[j] = sinf((float) (r * 131 + j) * 0.37f) * (1.0f + (float) (r % 5));
}

static int rows_cb(void *userdata, uint64_t row0, uint64_t n_rows, void *buf) {
        struct rows_ctx *c = userdata;
        uint64_t row_size;
        float x[1024];

        if (c->fail_at >= 0 && c->calls == (unsigned) c->fail_at)
                return -EIO;
        c->calls++;
        ASSERT_TRUE(c->ne0 <= ELEMENTSOF(x));
        ASSERT_OK(rbee_type_row_size(c->type, c->ne0, &row_size));
        for (uint64_t r = 0; r < n_rows; r++) {
                test_row(c->ne0, row0 + r, x);
                ASSERT_OK(rbee_quantize_row(c->type, x, (uint8_t *) buf + r * row_size, (int64_t) c->ne0));
        }
        return 0;
}

TEST(writer_roundtrip_all_kv_types) {
        _cleanup_(gguf_writer_freep) gguf_writer *w = NULL;
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        _cleanup_(freep) char *path = path_in_tmp("kv.gguf");
        const char *strs[] = { "alpha", "", "\xe2\x96\x81the", "with space" };
        const int32_t i32s[] = { -5, 0, 7, INT32_MIN, INT32_MAX };
        const uint32_t u32s[] = { 0, 1, UINT32_MAX };
        const float f32s[] = { 0.5f, -1.25f, 1e-6f };
        const uint8_t u8s[] = { 0, 200, 255 };
        const struct gguf_str gs[] = { { "ab", 2 }, { "nul\0in", 6 } };
        const char *bin = "bin\0ary";
        enum gguf_vtype et;
        uint64_t n;
        struct gguf_str s;
        int32_t iv[5];
        float fv[3];
        uint64_t u64;
        int32_t i32;
        bool b;

        ASSERT_OK(gguf_writer_new(&w));
        ASSERT_OK(gguf_writer_add_str(w, "general.architecture", "llama"));
        ASSERT_OK(gguf_writer_add_u8(w, "t.u8", 250));
        ASSERT_OK(gguf_writer_add_i8(w, "t.i8", -100));
        ASSERT_OK(gguf_writer_add_u16(w, "t.u16", 65000));
        ASSERT_OK(gguf_writer_add_i16(w, "t.i16", -30000));
        ASSERT_OK(gguf_writer_add_u32(w, "t.u32", 4000000000u));
        ASSERT_OK(gguf_writer_add_i32(w, "t.i32", -2000000000));
        ASSERT_OK(gguf_writer_add_u64(w, "t.u64", UINT64_C(0xfedcba9876543210)));
        ASSERT_OK(gguf_writer_add_i64(w, "t.i64", 1234567890123LL));
        ASSERT_OK(gguf_writer_add_f32(w, "t.f32", 3.25f));
        ASSERT_OK(gguf_writer_add_f64(w, "t.f64", -0.125));
        ASSERT_OK(gguf_writer_add_bool(w, "t.true", true));
        ASSERT_OK(gguf_writer_add_bool(w, "t.false", false));
        ASSERT_OK(gguf_writer_add_str(w, "t.empty", ""));
        ASSERT_OK(gguf_writer_add_strn(w, "t.binary", bin, 7));
        ASSERT_OK(gguf_writer_add_arr_str(w, "t.arr_str", strs, ELEMENTSOF(strs)));
        ASSERT_OK(gguf_writer_add_arr_strn(w, "t.arr_strn", gs, ELEMENTSOF(gs)));
        ASSERT_OK(gguf_writer_add_arr_i32(w, "t.arr_i32", i32s, ELEMENTSOF(i32s)));
        ASSERT_OK(gguf_writer_add_arr_u32(w, "t.arr_u32", u32s, ELEMENTSOF(u32s)));
        ASSERT_OK(gguf_writer_add_arr_f32(w, "t.arr_f32", f32s, ELEMENTSOF(f32s)));
        ASSERT_OK(gguf_writer_add_arr(w, "t.arr_u8", GGUF_VTYPE_UINT8, u8s, ELEMENTSOF(u8s)));
        ASSERT_OK(gguf_writer_add_arr_i32(w, "t.arr_empty", NULL, 0));
        ASSERT_EQ(gguf_writer_n_kv(w), 22);
        ASSERT_TRUE(gguf_writer_has_key(w, "t.u64"));
        ASSERT_FALSE(gguf_writer_has_key(w, "t.nope"));
        ASSERT_OK(gguf_writer_write_file(w, path));

        f = open_ok(path);
        ASSERT_EQ(gguf_version(f), 3);
        ASSERT_EQ(gguf_n_kv(f), 22);
        ASSERT_EQ(gguf_n_tensors(f), 0);
        /* Order is kept. */
        ASSERT_STREQ(gguf_kv_key(f, 0), "general.architecture");
        ASSERT_STREQ(gguf_kv_key(f, 21), "t.arr_empty");
        ASSERT_EQ(gguf_kv_type(f, 1), GGUF_VTYPE_UINT8);
        ASSERT_EQ(gguf_kv_type(f, 2), GGUF_VTYPE_INT8);
        ASSERT_EQ(gguf_kv_type(f, 3), GGUF_VTYPE_UINT16);
        ASSERT_EQ(gguf_kv_type(f, 4), GGUF_VTYPE_INT16);
        ASSERT_EQ(gguf_kv_type(f, 8), GGUF_VTYPE_INT64);
        ASSERT_EQ(gguf_kv_type(f, 10), GGUF_VTYPE_FLOAT64);

        assert_str(f, "general.architecture", "llama");
        ASSERT_EQ(get_u32(f, "t.u8"), 250);
        ASSERT_OK(gguf_get_i32(f, "t.i8", &i32));
        ASSERT_EQ(i32, -100);
        ASSERT_EQ(get_u32(f, "t.u16"), 65000);
        ASSERT_OK(gguf_get_i32(f, "t.i16", &i32));
        ASSERT_EQ(i32, -30000);
        ASSERT_EQ(get_u32(f, "t.u32"), 4000000000u);
        ASSERT_OK(gguf_get_i32(f, "t.i32", &i32));
        ASSERT_EQ(i32, -2000000000);
        ASSERT_OK(gguf_get_u64(f, "t.u64", &u64));
        ASSERT_TRUE(u64 == UINT64_C(0xfedcba9876543210));
        ASSERT_OK(gguf_get_u64(f, "t.i64", &u64));
        ASSERT_EQ(u64, 1234567890123LL);
        ASSERT_TRUE(get_f32(f, "t.f32") == 3.25f);
        ASSERT_TRUE(get_f32(f, "t.f64") == -0.125f);
        ASSERT_OK(gguf_get_bool(f, "t.true", &b));
        ASSERT_TRUE(b);
        ASSERT_OK(gguf_get_bool(f, "t.false", &b));
        ASSERT_FALSE(b);
        assert_str(f, "t.empty", "");
        ASSERT_OK(gguf_get_str(f, "t.binary", &s));
        ASSERT_EQ(s.n, 7);
        ASSERT_EQ(memcmp(s.s, bin, 7), 0);

        ASSERT_OK(gguf_get_arr_info(f, "t.arr_str", &et, &n));
        ASSERT_EQ(et, GGUF_VTYPE_STRING);
        ASSERT_EQ(n, ELEMENTSOF(strs));
        for (size_t i = 0; i < ELEMENTSOF(strs); i++) {
                ASSERT_OK(gguf_get_arr_str(f, "t.arr_str", i, &s));
                ASSERT_EQ(s.n, strlen(strs[i]));
                ASSERT_EQ(memcmp(s.s, strs[i], s.n), 0);
        }
        ASSERT_OK(gguf_get_arr_str(f, "t.arr_strn", 1, &s));
        ASSERT_EQ(s.n, 6);
        ASSERT_EQ(memcmp(s.s, "nul\0in", 6), 0);
        ASSERT_OK(gguf_get_arr_info(f, "t.arr_i32", &et, &n));
        ASSERT_EQ(et, GGUF_VTYPE_INT32);
        ASSERT_OK(gguf_get_arr_i32(f, "t.arr_i32", iv, 5));
        for (size_t i = 0; i < 5; i++)
                ASSERT_EQ(iv[i], i32s[i]);
        ASSERT_OK(gguf_get_arr_info(f, "t.arr_u32", &et, &n));
        ASSERT_EQ(et, GGUF_VTYPE_UINT32);
        ASSERT_EQ(n, 3);
        ASSERT_OK(gguf_get_arr_f32(f, "t.arr_f32", fv, 3));
        for (size_t i = 0; i < 3; i++)
                ASSERT_TRUE(fv[i] == f32s[i]);
        ASSERT_OK(gguf_get_arr_info(f, "t.arr_u8", &et, &n));
        ASSERT_EQ(et, GGUF_VTYPE_UINT8);
        ASSERT_OK(gguf_get_arr_i32(f, "t.arr_u8", iv, 3));
        ASSERT_EQ(iv[1], 200);
        ASSERT_OK(gguf_get_arr_info(f, "t.arr_empty", &et, &n));
        ASSERT_EQ(n, 0);
        /* Header only: the file ends at the aligned end of the header. */
        ASSERT_EQ(gguf_file_size(f), gguf_writer_file_size(w));
}

TEST(writer_roundtrip_tensors) {
        _cleanup_(gguf_writer_freep) gguf_writer *w = NULL;
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        _cleanup_(freep) char *path = path_in_tmp("t.gguf");
        static float f32_data[3 * 5];
        struct rows_ctx q8 = { RBEE_TYPE_Q8_0, 96, 0, -1 }, q4k = { RBEE_TYPE_Q4_K, 512, 0, -1 },
                        f16 = { RBEE_TYPE_F16, 40, 0, -1 };
        const uint64_t ne_f32[] = { 5, 3 }, ne_bias[] = { 7 }, ne_q8[] = { 96, 4, 3 }, ne_q4k[] = { 512, 9 },
                       ne_f16[] = { 40, 2, 2, 2 };
        uint64_t row_size;
        float x[512], y[512];

        for (size_t i = 0; i < ELEMENTSOF(f32_data); i++)
                f32_data[i] = (float) i * 0.5f - 3.0f;

        ASSERT_OK(gguf_writer_new(&w));
        ASSERT_OK(gguf_writer_set_alignment(w, 64));
        ASSERT_OK(gguf_writer_add_str(w, "general.architecture", "test"));
        ASSERT_OK(gguf_writer_add_tensor(w, "a.f32", RBEE_TYPE_F32, 2, ne_f32, f32_data));
        ASSERT_OK(gguf_writer_add_tensor(w, "b.bias", RBEE_TYPE_F32, 1, ne_bias, f32_data));
        ASSERT_OK(gguf_writer_add_tensor_cb(w, "c.q8_0", RBEE_TYPE_Q8_0, 3, ne_q8, rows_cb, &q8));
        ASSERT_OK(gguf_writer_add_tensor_cb(w, "d.q4_k", RBEE_TYPE_Q4_K, 2, ne_q4k, rows_cb, &q4k));
        ASSERT_OK(gguf_writer_add_tensor_cb(w, "e.f16", RBEE_TYPE_F16, 4, ne_f16, rows_cb, &f16));
        ASSERT_EQ(gguf_writer_n_tensors(w), 5);
        /* Small chunks: several callbacks per tensor. */
        gguf_writer_set_chunk_size(w, 1000);
        ASSERT_OK(gguf_writer_write_file(w, path));
        ASSERT_EQ(q4k.calls, 3); /* 288-byte rows, 3 to a 1000-byte chunk */
        ASSERT_EQ(q8.calls, 2); /* 12 rows of 102 bytes, 9 to a chunk */

        f = open_ok(path);
        ASSERT_EQ(gguf_alignment(f), 64);
        ASSERT_EQ(get_u32(f, "general.alignment"), 64);
        ASSERT_EQ(gguf_n_tensors(f), 5);
        ASSERT_EQ(gguf_file_size(f), gguf_writer_file_size(w));
        ASSERT_EQ(gguf_data_size(f), gguf_writer_data_size(w));
        ASSERT_STREQ(gguf_get_tensor(f, 0)->name, "a.f32");
        ASSERT_STREQ(gguf_get_tensor(f, 4)->name, "e.f16");
        for (size_t i = 0; i < gguf_n_tensors(f); i++) {
                const struct gguf_tensor *t = gguf_get_tensor(f, i);

                ASSERT_EQ(t->offset % 64, 0);
                ASSERT_EQ(((uintptr_t) t->data - (uintptr_t) gguf_data_base(f)) % 64, 0);
        }

        assert_tensor(f, "a.f32", RBEE_TYPE_F32, 5, 3);
        ASSERT_EQ(memcmp(tensor(f, "a.f32")->data, f32_data, sizeof(f32_data)), 0);
        assert_tensor(f, "b.bias", RBEE_TYPE_F32, 7, 1);
        ASSERT_EQ(tensor(f, "b.bias")->n_dims, 1);
        ASSERT_EQ(memcmp(tensor(f, "b.bias")->data, f32_data, 7 * sizeof(float)), 0);

        const struct gguf_tensor *t = tensor(f, "c.q8_0");
        ASSERT_EQ(t->n_dims, 3);
        ASSERT_EQ(t->ne[2], 3);
        ASSERT_EQ(t->type, RBEE_TYPE_Q8_0);
        ASSERT_EQ(t->size, 12 * 96 / 32 * 34);

        /* Bit-exact against quantizing the same floats here. */
        t = tensor(f, "d.q4_k");
        ASSERT_OK(rbee_type_row_size(RBEE_TYPE_Q4_K, 512, &row_size));
        for (uint64_t r = 0; r < 9; r++) {
                uint8_t q[512];

                test_row(512, r, x);
                ASSERT_OK(rbee_quantize_row(RBEE_TYPE_Q4_K, x, q, 512));
                ASSERT_EQ(memcmp(q, (const uint8_t *) t->data + r * row_size, row_size), 0);
                ASSERT_OK(rbee_dequantize_row(RBEE_TYPE_Q4_K, q, y, 512));
                for (int j = 0; j < 512; j++)
                        ASSERT_NEAR(y[j], x[j], 0.1 * (1 + r % 5));
        }

        t = tensor(f, "e.f16");
        ASSERT_EQ(t->n_dims, 4);
        ASSERT_EQ(t->ne[3], 2);
        ASSERT_OK(rbee_dequantize_row(RBEE_TYPE_F16, (const uint8_t *) t->data + 7 * 80, y, 40));
        test_row(40, 7, x);
        for (int j = 0; j < 40; j++)
                ASSERT_NEAR(y[j], x[j], 0.01);
}

TEST(writer_default_alignment) {
        _cleanup_(gguf_writer_freep) gguf_writer *w = NULL;
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        _cleanup_(freep) char *path = path_in_tmp("a.gguf");
        static const float data[33];
        const uint64_t ne1[] = { 1 }, ne33[] = { 33 };

        ASSERT_OK(gguf_writer_new(&w));
        ASSERT_OK(gguf_writer_add_tensor(w, "one", RBEE_TYPE_F32, 1, ne1, data));
        ASSERT_OK(gguf_writer_add_tensor(w, "odd", RBEE_TYPE_F32, 1, ne33, data));
        ASSERT_OK(gguf_writer_add_tensor(w, "last", RBEE_TYPE_F32, 1, ne1, data));
        /* [0, 4) pad to 32, [32, 164) pad to 192, [192, 196) pad to 224 */
        ASSERT_EQ(gguf_writer_data_size(w), 224);
        ASSERT_OK(gguf_writer_write_file(w, path));
        f = open_ok(path);
        ASSERT_EQ(gguf_find_key(f, "general.alignment"), -ENOENT);
        ASSERT_EQ(gguf_alignment(f), 32);
        ASSERT_EQ(tensor(f, "one")->offset, 0);
        ASSERT_EQ(tensor(f, "odd")->offset, 32);
        ASSERT_EQ(tensor(f, "last")->offset, 192);
        ASSERT_EQ(gguf_file_size(f) % 32, 0);
        ASSERT_EQ(gguf_file_size(f), gguf_writer_file_size(w));
}

TEST(writer_rejects_bad_input) {
        _cleanup_(gguf_writer_freep) gguf_writer *w = NULL;
        static const uint8_t data[64];
        char long_name[80];
        const uint64_t ne32[] = { 32, 1 }, ne33[] = { 33, 1 }, ne256[] = { 256 }, ne0[] = { 0 },
                       huge[] = { UINT64_C(1) << 40, UINT64_C(1) << 40 }, huge2[] = { 32, UINT64_C(1) << 62 },
                       neg[] = { UINT64_C(1) << 63 };

        ASSERT_OK(gguf_writer_new(&w));
        ASSERT_OK(gguf_writer_add_u32(w, "k", 1));
        ASSERT_ERR(gguf_writer_add_u32(w, "k", 2), -EEXIST);
        ASSERT_ERR(gguf_writer_add_str(w, "k", "again"), -EEXIST);
        ASSERT_ERR(gguf_writer_add_u32(w, "", 1), -EINVAL);
        ASSERT_ERR(gguf_writer_add_str(w, "s", NULL), -EINVAL);
        ASSERT_ERR(gguf_writer_add_arr(w, "a", GGUF_VTYPE_STRING, data, 1), -EINVAL);
        ASSERT_ERR(gguf_writer_add_arr(w, "a", GGUF_VTYPE_ARRAY, data, 1), -EINVAL);
        ASSERT_ERR(gguf_writer_add_arr_f32(w, "a", NULL, 3), -EINVAL);
        ASSERT_ERR(gguf_writer_add_arr_str(w, "a", (const char *const[]) { "x", NULL }, 2), -EINVAL);
        ASSERT_FALSE(gguf_writer_has_key(w, "a"));

        ASSERT_OK(gguf_writer_add_tensor(w, "t", RBEE_TYPE_Q8_0, 2, ne32, data));
        ASSERT_ERR(gguf_writer_add_tensor(w, "t", RBEE_TYPE_Q8_0, 2, ne32, data), -EEXIST);
        /* Row lengths must be whole blocks. */
        ASSERT_ERR(gguf_writer_add_tensor(w, "q", RBEE_TYPE_Q4_0, 2, ne33, data), -EINVAL);
        ASSERT_ERR(gguf_writer_add_tensor(w, "q", RBEE_TYPE_Q4_K, 2, ne32, data), -EINVAL);
        ASSERT_OK(gguf_writer_add_tensor(w, "q", RBEE_TYPE_Q4_K, 1, ne256, data));
        ASSERT_ERR(gguf_writer_add_tensor(w, "z", RBEE_TYPE_F32, 1, ne0, data), -EINVAL);
        ASSERT_ERR(gguf_writer_add_tensor(w, "z", RBEE_TYPE_F32, 1, neg, data), -EINVAL);
        ASSERT_ERR(gguf_writer_add_tensor(w, "z", (enum rbee_type) 99, 1, ne256, data), -EINVAL);
        ASSERT_ERR(gguf_writer_add_tensor(w, "z", RBEE_TYPE_Q8_1 + 1, 1, ne256, data), -EINVAL);
        ASSERT_ERR(gguf_writer_add_tensor(w, "z", RBEE_TYPE_F32, 0, ne256, data), -EINVAL);
        ASSERT_ERR(gguf_writer_add_tensor(w, "z", RBEE_TYPE_F32, 5, ne256, data), -EINVAL);
        ASSERT_ERR(gguf_writer_add_tensor(w, "z", RBEE_TYPE_F32, 1, ne256, NULL), -EINVAL);
        ASSERT_ERR(gguf_writer_add_tensor_cb(w, "z", RBEE_TYPE_F32, 1, ne256, NULL, NULL), -EINVAL);
        ASSERT_ERR(gguf_writer_add_tensor(w, "", RBEE_TYPE_F32, 1, ne256, data), -EINVAL);
        memset(long_name, 'x', sizeof(long_name));
        long_name[GGUF_WRITER_MAX_TENSOR_NAME + 1] = 0;
        ASSERT_ERR(gguf_writer_add_tensor(w, long_name, RBEE_TYPE_F32, 1, ne256, data), -EINVAL);
        long_name[GGUF_WRITER_MAX_TENSOR_NAME] = 0;
        ASSERT_OK(gguf_writer_add_tensor(w, long_name, RBEE_TYPE_F32, 1, ne256, data));
        /* Sizes that overflow 64 bits. */
        ASSERT_ERR(gguf_writer_add_tensor(w, "big", RBEE_TYPE_F32, 2, huge, data), -EOVERFLOW);
        ASSERT_ERR(gguf_writer_add_tensor(w, "big", RBEE_TYPE_F32, 2, huge2, data), -EOVERFLOW);
        ASSERT_EQ(gguf_writer_n_tensors(w), 3);

        /* Alignment: a power of two, and only before tensors exist. */
        ASSERT_ERR(gguf_writer_set_alignment(w, 64), -EBUSY);
        gguf_writer_free(TAKE_PTR(w));
        ASSERT_OK(gguf_writer_new(&w));
        ASSERT_ERR(gguf_writer_set_alignment(w, 0), -EINVAL);
        ASSERT_ERR(gguf_writer_set_alignment(w, 48), -EINVAL);
        ASSERT_ERR(gguf_writer_set_alignment(w, 1u << 20), -EINVAL);
        ASSERT_OK(gguf_writer_set_alignment(w, 32)); /* the default: no key */
        ASSERT_FALSE(gguf_writer_has_key(w, "general.alignment"));
        ASSERT_OK(gguf_writer_set_alignment(w, 16));
        ASSERT_OK(gguf_writer_set_alignment(w, 128));
        ASSERT_EQ(gguf_writer_n_kv(w), 1);
        ASSERT_ERR(gguf_writer_write_file(w, ""), -EINVAL);
        ASSERT_ERR(gguf_writer_write_fd(w, -1), -EINVAL);
}

/* A failing producer, a cancelled write and an unwritable path leave nothing
 * behind, and an existing file stays as it was. */
TEST(writer_atomic_on_failure) {
        _cleanup_(gguf_writer_freep) gguf_writer *w = NULL;
        _cleanup_(freep) char *path = path_in_tmp("atomic.gguf");
        _cleanup_(freep) char *bad = path_in_tmp("no/such/dir/x.gguf");
        struct rows_ctx c = { RBEE_TYPE_F32, 64, 0, -1 };
        const uint64_t ne[] = { 64, 100 };
        struct stat st;
        char *before;
        size_t n_before, n_after;

        ASSERT_OK(gguf_writer_new(&w));
        ASSERT_OK(gguf_writer_add_tensor_cb(w, "w", RBEE_TYPE_F32, 2, ne, rows_cb, &c));
        gguf_writer_set_chunk_size(w, 64 * 4 * 10);
        ASSERT_OK(gguf_writer_write_file(w, path));
        ASSERT_EQ(c.calls, 10);
        ASSERT_OK(stat(path, &st));
        ASSERT_EQ(st.st_mode & 0777, 0644);
        before = harness_read_file(path, &n_before);

        /* Fails in the middle of the data: the old file must survive. */
        c.calls = 0;
        c.fail_at = 5;
        ASSERT_ERR(gguf_writer_write_file(w, path), -EIO);
        ASSERT_EQ(count_tmp_files(harness_tmpdir()), 0);
        char *after = harness_read_file(path, &n_after);
        ASSERT_EQ(n_after, n_before);
        ASSERT_EQ(memcmp(before, after, n_before), 0);
        free(after);

        ASSERT_ERR(gguf_writer_write_file(w, bad), -ENOENT);
        ASSERT_EQ(count_tmp_files(harness_tmpdir()), 0);
        free(before);
}

static bool cancel_at_half(uint64_t done, uint64_t total, void *userdata) {
        unsigned *calls = userdata;

        (*calls)++;
        return done < total / 2;
}

TEST(writer_progress_and_cancel) {
        _cleanup_(gguf_writer_freep) gguf_writer *w = NULL;
        _cleanup_(freep) char *path = path_in_tmp("cancel.gguf");
        struct rows_ctx c = { RBEE_TYPE_F32, 64, 0, -1 };
        const uint64_t ne[] = { 64, 100 };
        unsigned calls = 0;

        ASSERT_OK(gguf_writer_new(&w));
        ASSERT_OK(gguf_writer_add_tensor_cb(w, "w", RBEE_TYPE_F32, 2, ne, rows_cb, &c));
        gguf_writer_set_chunk_size(w, 64 * 4 * 10);
        gguf_writer_set_progress(w, cancel_at_half, &calls);
        ASSERT_ERR(gguf_writer_write_file(w, path), -ECANCELED);
        ASSERT_TRUE(calls >= 5 && calls <= 7);
        ASSERT_EQ(access(path, F_OK), -1);
        ASSERT_EQ(count_tmp_files(harness_tmpdir()), 0);
}

TEST(writer_copy_kv_from_file) {
        _cleanup_(gguf_writer_freep) gguf_writer *a = NULL, *b = NULL;
        _cleanup_(gguf_closep) gguf_file *fa = NULL, *fb = NULL;
        _cleanup_(freep) char *pa = path_in_tmp("src.gguf"), *pb = path_in_tmp("dst.gguf");
        const char *strs[] = { "x", "yy" };
        const int32_t ints[] = { 1, -2, 3 };
        const uint16_t u16s[] = { 1, 65535 };
        const float fl[] = { 1.5f };
        struct gguf_str s;
        int32_t iv[3];
        uint64_t u64;

        ASSERT_OK(gguf_writer_new(&a));
        ASSERT_OK(gguf_writer_add_u8(a, "u8", 7));
        ASSERT_OK(gguf_writer_add_i16(a, "i16", -7));
        ASSERT_OK(gguf_writer_add_u64(a, "u64", UINT64_MAX));
        ASSERT_OK(gguf_writer_add_i64(a, "i64", -5));
        ASSERT_OK(gguf_writer_add_f64(a, "f64", 0.25));
        ASSERT_OK(gguf_writer_add_bool(a, "b", true));
        ASSERT_OK(gguf_writer_add_str(a, "s", "hello"));
        ASSERT_OK(gguf_writer_add_arr_str(a, "as", strs, 2));
        ASSERT_OK(gguf_writer_add_arr_i32(a, "ai", ints, 3));
        ASSERT_OK(gguf_writer_add_arr(a, "au16", GGUF_VTYPE_UINT16, u16s, 2));
        ASSERT_OK(gguf_writer_add_arr_f32(a, "af", fl, 1));
        ASSERT_OK(gguf_writer_write_file(a, pa));
        fa = open_ok(pa);

        ASSERT_OK(gguf_writer_new(&b));
        for (size_t i = 0; i < gguf_n_kv(fa); i++)
                ASSERT_OK(gguf_writer_copy_kv(b, fa, i));
        ASSERT_ERR(gguf_writer_copy_kv(b, fa, 0), -EEXIST);
        ASSERT_ERR(gguf_writer_copy_kv(b, fa, gguf_n_kv(fa)), -EINVAL);
        ASSERT_OK(gguf_writer_write_file(b, pb));
        fb = open_ok(pb);

        ASSERT_EQ(gguf_n_kv(fb), gguf_n_kv(fa));
        for (size_t i = 0; i < gguf_n_kv(fa); i++) {
                ASSERT_STREQ(gguf_kv_key(fb, i), gguf_kv_key(fa, i));
                ASSERT_EQ(gguf_kv_type(fb, i), gguf_kv_type(fa, i));
        }
        /* Same values means byte-identical files. */
        ASSERT_EQ(gguf_file_size(fa), gguf_file_size(fb));
        char *da = harness_read_file(pa, NULL), *db = harness_read_file(pb, NULL);
        ASSERT_EQ(memcmp(da, db, gguf_file_size(fa)), 0);
        free(da);
        free(db);
        ASSERT_OK(gguf_get_u64(fb, "u64", &u64));
        ASSERT_TRUE(u64 == UINT64_MAX);
        ASSERT_OK(gguf_get_arr_str(fb, "as", 1, &s));
        ASSERT_EQ(s.n, 2);
        ASSERT_OK(gguf_get_arr_i32(fb, "ai", iv, 3));
        ASSERT_EQ(iv[1], -2);
}

/* ---- rbee-mkmodel ------------------------------------------------------- */

TEST_TIMEOUT(mkmodel_tiny_f32_metadata_and_tensors, 60) {
        _cleanup_(freep) char *path = path_in_tmp("tiny-f32.gguf");
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        enum gguf_vtype et;
        struct gguf_str s;
        uint64_t n, seed;
        bool b;

        mkmodel_ok(path, "tiny", "F32", "7");
        f = open_ok(path);
        assert_str(f, "general.architecture", "llama");
        assert_str(f, "general.name", "tiny");
        ASSERT_EQ(get_u32(f, "general.file_type"), 0);
        ASSERT_EQ(get_u32(f, "general.quantization_version"), 2);
        ASSERT_EQ(get_u32(f, "llama.context_length"), 256);
        ASSERT_EQ(get_u32(f, "llama.embedding_length"), 64);
        ASSERT_EQ(get_u32(f, "llama.block_count"), 2);
        ASSERT_EQ(get_u32(f, "llama.feed_forward_length"), 192);
        ASSERT_EQ(get_u32(f, "llama.attention.head_count"), 4);
        ASSERT_EQ(get_u32(f, "llama.attention.head_count_kv"), 2);
        ASSERT_EQ(get_u32(f, "llama.rope.dimension_count"), 16);
        ASSERT_EQ(get_u32(f, "llama.vocab_size"), 512);
        ASSERT_TRUE(get_f32(f, "llama.rope.freq_base") == 10000.0f);
        ASSERT_TRUE(get_f32(f, "llama.attention.layer_norm_rms_epsilon") == 1e-5f);
        ASSERT_EQ(gguf_find_key(f, "llama.attention.key_length"), -ENOENT);
        ASSERT_OK(gguf_get_u64(f, "rbee.mkmodel.seed", &seed));
        ASSERT_EQ(seed, 7);

        assert_str(f, "tokenizer.ggml.model", "llama");
        assert_str(f, "tokenizer.ggml.pre", "default");
        ASSERT_OK(gguf_get_arr_info(f, "tokenizer.ggml.tokens", &et, &n));
        ASSERT_EQ(et, GGUF_VTYPE_STRING);
        ASSERT_EQ(n, 512);
        ASSERT_OK(gguf_get_arr_info(f, "tokenizer.ggml.scores", &et, &n));
        ASSERT_EQ(n, 512);
        ASSERT_OK(gguf_get_arr_info(f, "tokenizer.ggml.token_type", &et, &n));
        ASSERT_EQ(et, GGUF_VTYPE_INT32);
        ASSERT_OK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 1, &s));
        ASSERT_EQ(s.n, 3);
        ASSERT_EQ(memcmp(s.s, "<s>", 3), 0);
        ASSERT_OK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 3 + 0x41, &s));
        ASSERT_EQ(memcmp(s.s, "<0x41>", 6), 0);
        ASSERT_EQ(get_u32(f, "tokenizer.ggml.bos_token_id"), 1);
        ASSERT_EQ(get_u32(f, "tokenizer.ggml.eos_token_id"), 2);
        ASSERT_EQ(get_u32(f, "tokenizer.ggml.unknown_token_id"), 0);
        ASSERT_OK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b));
        ASSERT_TRUE(b);
        ASSERT_OK(gguf_get_str(f, "tokenizer.chat_template", &s));
        ASSERT_TRUE(memmem(s.s, s.n, "<|assistant|>", 13) != NULL);

        ASSERT_EQ(gguf_n_tensors(f), 3 + 2 * 9); /* embd, norm, head; 9 per layer */
        assert_tensor(f, "token_embd.weight", RBEE_TYPE_F32, 64, 512);
        assert_tensor(f, "output_norm.weight", RBEE_TYPE_F32, 64, 1);
        assert_tensor(f, "output.weight", RBEE_TYPE_F32, 64, 512);
        for (int l = 0; l < 2; l++) {
                char name[64];

                snprintf(name, sizeof(name), "blk.%d.attn_q.weight", l);
                assert_tensor(f, name, RBEE_TYPE_F32, 64, 64);
                snprintf(name, sizeof(name), "blk.%d.attn_k.weight", l);
                assert_tensor(f, name, RBEE_TYPE_F32, 64, 32);
                snprintf(name, sizeof(name), "blk.%d.attn_v.weight", l);
                assert_tensor(f, name, RBEE_TYPE_F32, 64, 32);
                snprintf(name, sizeof(name), "blk.%d.attn_output.weight", l);
                assert_tensor(f, name, RBEE_TYPE_F32, 64, 64);
                snprintf(name, sizeof(name), "blk.%d.ffn_gate.weight", l);
                assert_tensor(f, name, RBEE_TYPE_F32, 64, 192);
                snprintf(name, sizeof(name), "blk.%d.ffn_up.weight", l);
                assert_tensor(f, name, RBEE_TYPE_F32, 64, 192);
                snprintf(name, sizeof(name), "blk.%d.ffn_down.weight", l);
                assert_tensor(f, name, RBEE_TYPE_F32, 192, 64);
                snprintf(name, sizeof(name), "blk.%d.attn_norm.weight", l);
                assert_tensor(f, name, RBEE_TYPE_F32, 64, 1);
                snprintf(name, sizeof(name), "blk.%d.ffn_norm.weight", l);
                assert_tensor(f, name, RBEE_TYPE_F32, 64, 1);
        }

        /* The distributions the tool documents. */
        _cleanup_(freep) float *norm = dequant(tensor(f, "blk.0.attn_norm.weight"));
        _cleanup_(freep) float *embd = dequant(tensor(f, "token_embd.weight"));
        _cleanup_(freep) float *down = dequant(tensor(f, "blk.1.ffn_down.weight"));
        double sum = 0, sum2 = 0;
        for (int i = 0; i < 64; i++) {
                ASSERT_TRUE(norm[i] > 0.6f && norm[i] < 1.4f);
                sum += norm[i];
        }
        ASSERT_NEAR(sum / 64, 1.0, 0.05);
        sum = sum2 = 0;
        for (int i = 0; i < 64 * 512; i++) {
                sum += embd[i];
                sum2 += (double) embd[i] * embd[i];
        }
        ASSERT_NEAR(sum / (64 * 512), 0.0, 0.002);
        ASSERT_NEAR(sqrt(sum2 / (64 * 512)), 1.0 / 8, 0.005); /* 1/sqrt(dim) */
        sum2 = 0;
        for (int i = 0; i < 192 * 64; i++)
                sum2 += (double) down[i] * down[i];
        /* 1/sqrt(ffn) / sqrt(2 * layers) */
        ASSERT_NEAR(sqrt(sum2 / (192 * 64)), 1.0 / sqrt(192.0) / 2.0, 0.002);
}

/* The same mixture llama-quantize chose for a file of the same shape. */
static void assert_types_match_reference(const gguf_file *f, const gguf_file *ref) {
        ASSERT_EQ(gguf_n_tensors(f), gguf_n_tensors(ref));
        for (size_t i = 0; i < gguf_n_tensors(ref); i++) {
                const struct gguf_tensor *r = gguf_get_tensor(ref, i), *t = tensor(f, r->name);

                if (t->type != r->type)
                        FAIL("%s: %s, llama.cpp wrote %s", r->name, rbee_type_name(t->type),
                             rbee_type_name(r->type));
                ASSERT_EQ(t->ne[0], r->ne[0]);
                ASSERT_EQ(t->n_dims, r->n_dims);
        }
}

TEST_TIMEOUT(mkmodel_tiny_q4_0_and_q4_k_m_mixtures, 60) {
        _cleanup_(freep) char *p40 = path_in_tmp("tiny-q4_0.gguf"), *pkm = path_in_tmp("tiny-q4_k_m.gguf");
        _cleanup_(gguf_closep) gguf_file *f40 = NULL, *fkm = NULL, *ref = NULL;

        mkmodel_ok(p40, "tiny", "Q4_0", "1");
        mkmodel_ok(pkm, "tiny", "Q4_K_M", "1");
        f40 = open_ok(p40);
        fkm = open_ok(pkm);
        ASSERT_EQ(get_u32(f40, "general.file_type"), 2);
        ASSERT_EQ(get_u32(fkm, "general.file_type"), 15);

        /* Q4_0: every matrix Q4_0 except the output head, which gets Q8_0
         * because 64 is not a multiple of 256; norms stay F32. */
        assert_tensor(f40, "token_embd.weight", RBEE_TYPE_Q4_0, 64, 512);
        assert_tensor(f40, "output.weight", RBEE_TYPE_Q8_0, 64, 512);
        assert_tensor(f40, "output_norm.weight", RBEE_TYPE_F32, 64, 1);
        assert_tensor(f40, "blk.1.ffn_down.weight", RBEE_TYPE_Q4_0, 192, 64);
        assert_tensor(f40, "blk.0.attn_v.weight", RBEE_TYPE_Q4_0, 64, 32);
        assert_tensor(f40, "blk.0.ffn_norm.weight", RBEE_TYPE_F32, 64, 1);

        /* Q4_K_M at dim 64: Q4_K falls back to Q5_0, Q6_K to Q8_0; the last
         * layer's attn_v and ffn_down get more bits. */
        assert_tensor(fkm, "token_embd.weight", RBEE_TYPE_Q5_0, 64, 512);
        assert_tensor(fkm, "blk.0.attn_v.weight", RBEE_TYPE_Q5_0, 64, 32);
        assert_tensor(fkm, "blk.1.attn_v.weight", RBEE_TYPE_Q8_0, 64, 32);
        assert_tensor(fkm, "blk.0.ffn_down.weight", RBEE_TYPE_Q5_0, 192, 64);
        assert_tensor(fkm, "blk.1.ffn_down.weight", RBEE_TYPE_Q8_0, 192, 64);
        assert_tensor(fkm, "output.weight", RBEE_TYPE_Q8_0, 64, 512);

        /* llama.cpp's own files at this shape (their vocab is 32000). */
        ref = open_ok(harness_shared("models/tiny-llama-d64-Q4_K_M.gguf"));
        assert_types_match_reference(fkm, ref);
        ref = gguf_close(ref);
        ref = open_ok(harness_shared("models/tiny-llama-d64-Q4_0.gguf"));
        assert_types_match_reference(f40, ref);
}

/* At a width of 256 the K-quants need no fallback: the real Q4_K_M and
 * Q4_K_S mixtures over 8 layers. */
TEST_TIMEOUT(mkmodel_k_mixtures_at_k_width, 120) {
        _cleanup_(freep) char *pm = path_in_tmp("km.gguf"), *ps = path_in_tmp("ks.gguf");
        _cleanup_(gguf_closep) gguf_file *fm = NULL, *fs = NULL;
        char *err = NULL;

        ASSERT_EQ(mkmodel(&err, "-q", "-o", pm, "--shape", "tiny", "--dim", "256", "--ffn", "512", "--layers", "8",
                          "--type", "Q4_K_M", NULL), 0);
        ASSERT_EQ(mkmodel(&err, "-q", "-o", ps, "--shape", "tiny", "--dim", "256", "--ffn", "512", "--layers", "8",
                          "--type", "q4_k_s", NULL), 0);
        fm = open_ok(pm);
        fs = open_ok(ps);
        ASSERT_EQ(get_u32(fs, "general.file_type"), 14);
        assert_tensor(fm, "token_embd.weight", RBEE_TYPE_Q4_K, 256, 512);
        assert_tensor(fm, "output.weight", RBEE_TYPE_Q6_K, 256, 512);
        assert_tensor(fs, "output.weight", RBEE_TYPE_Q6_K, 256, 512);
        for (int l = 0; l < 8; l++) {
                /* use_more_bits(l, 8): l < 1, l >= 7, or (l - 1) % 3 == 2 */
                bool more = l == 0 || l == 7 || (l - 1) % 3 == 2;
                char name[64];

                snprintf(name, sizeof(name), "blk.%d.attn_v.weight", l);
                assert_tensor(fm, name, more ? RBEE_TYPE_Q6_K : RBEE_TYPE_Q4_K, 256, 128);
                assert_tensor(fs, name, l < 4 ? RBEE_TYPE_Q5_K : RBEE_TYPE_Q4_K, 256, 128);
                snprintf(name, sizeof(name), "blk.%d.ffn_down.weight", l);
                assert_tensor(fm, name, more ? RBEE_TYPE_Q6_K : RBEE_TYPE_Q4_K, 512, 256);
                assert_tensor(fs, name, l < 1 ? RBEE_TYPE_Q5_K : RBEE_TYPE_Q4_K, 512, 256);
                snprintf(name, sizeof(name), "blk.%d.attn_q.weight", l);
                assert_tensor(fm, name, RBEE_TYPE_Q4_K, 256, 256);
                snprintf(name, sizeof(name), "blk.%d.ffn_up.weight", l);
                assert_tensor(fs, name, RBEE_TYPE_Q4_K, 256, 512);
        }
        free(err);
}

static double rel_rms_diff(const float *a, const float *b, size_t n) {
        double d = 0, s = 0;

        for (size_t i = 0; i < n; i++) {
                d += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
                s += (double) a[i] * a[i];
        }
        return sqrt(d / s);
}

/* Same seed, different types: the same underlying weights. */
TEST_TIMEOUT(mkmodel_types_share_weights, 60) {
        _cleanup_(freep) char *p32 = path_in_tmp("w-f32.gguf"), *p40 = path_in_tmp("w-q4_0.gguf"),
                             *pkm = path_in_tmp("w-q4_k_m.gguf"), *p16 = path_in_tmp("w-f16.gguf");
        _cleanup_(gguf_closep) gguf_file *f32 = NULL, *f40 = NULL, *fkm = NULL, *f16 = NULL;

        mkmodel_ok(p32, "tiny", "F32", "5");
        mkmodel_ok(p40, "tiny", "Q4_0", "5");
        mkmodel_ok(pkm, "tiny", "Q4_K_M", "5");
        mkmodel_ok(p16, "tiny", "F16", "5");
        f32 = open_ok(p32);
        f40 = open_ok(p40);
        fkm = open_ok(pkm);
        f16 = open_ok(p16);

        for (size_t i = 0; i < gguf_n_tensors(f32); i++) {
                const struct gguf_tensor *t = gguf_get_tensor(f32, i);
                size_t n = t->ne[0] * t->ne[1];
                _cleanup_(freep) float *a = dequant(t);
                _cleanup_(freep) float *b = dequant(tensor(f40, t->name));
                _cleanup_(freep) float *c = dequant(tensor(fkm, t->name));
                _cleanup_(freep) float *d = dequant(tensor(f16, t->name));
                double e40 = rel_rms_diff(a, b, n), ekm = rel_rms_diff(a, c, n), e16 = rel_rms_diff(a, d, n);

                /* 4-bit blocks keep about 10% relative RMS error, 5 and 8 bits far less. */
                if (e40 > 0.15 || ekm > 0.15 || e16 > 0.001)
                        FAIL("%s: relative RMS error Q4_0 %.4f, Q4_K_M %.4f, F16 %.5f", t->name, e40, ekm, e16);
                if (t->n_dims == 1)
                        ASSERT_TRUE(e40 == 0 && ekm == 0);
        }
}

TEST_TIMEOUT(mkmodel_seeds_and_determinism, 60) {
        _cleanup_(freep) char *a = path_in_tmp("s1.gguf"), *b = path_in_tmp("s2.gguf"), *c = path_in_tmp("s1b.gguf");
        _cleanup_(gguf_closep) gguf_file *fa = NULL, *fb = NULL;
        size_t na, nc;
        char *err = NULL;

        mkmodel_ok(a, "tiny", "Q8_0", "1");
        mkmodel_ok(b, "tiny", "Q8_0", "2");
        /* Same seed with one thread instead of two: byte-identical. */
        ASSERT_EQ(mkmodel(&err, "-q", "-o", c, "--type", "Q8_0", "--seed", "1", "-j", "1", NULL), 0);
        char *da = harness_read_file(a, &na), *dc = harness_read_file(c, &nc);
        ASSERT_EQ(na, nc);
        ASSERT_EQ(memcmp(da, dc, na), 0);
        free(da);
        free(dc);

        fa = open_ok(a);
        fb = open_ok(b);
        for (size_t i = 0; i < gguf_n_tensors(fa); i++) {
                const struct gguf_tensor *t = gguf_get_tensor(fa, i);
                size_t n = t->ne[0] * t->ne[1];
                _cleanup_(freep) float *x = dequant(t);
                _cleanup_(freep) float *y = dequant(tensor(fb, t->name));

                /* Independent draws: the difference is as large as the values. */
                ASSERT_TRUE(rel_rms_diff(x, y, n) > 0.5 * (t->n_dims == 1 ? 0.1 : 1.0));
        }
        free(err);
}

TEST_TIMEOUT(mkmodel_qwen2_and_phi3_shapes, 60) {
        _cleanup_(freep) char *pq = path_in_tmp("q.gguf"), *pp = path_in_tmp("p.gguf"), *ph = path_in_tmp("h.gguf");
        _cleanup_(gguf_closep) gguf_file *q = NULL, *p = NULL, *h = NULL;
        struct gguf_str s;
        char *err = NULL;

        mkmodel_ok(pq, "tiny-qwen2", "Q4_K_M", "3");
        q = open_ok(pq);
        assert_str(q, "general.architecture", "qwen2");
        ASSERT_TRUE(get_f32(q, "qwen2.rope.freq_base") == 1e6f);
        ASSERT_TRUE(get_f32(q, "qwen2.attention.layer_norm_rms_epsilon") == 1e-6f);
        ASSERT_EQ(get_u32(q, "qwen2.vocab_size"), 512);
        assert_str(q, "tokenizer.ggml.model", "gpt2");
        assert_str(q, "tokenizer.ggml.pre", "qwen2");
        ASSERT_OK(gguf_get_str(q, "tokenizer.chat_template", &s));
        ASSERT_TRUE(memmem(s.s, s.n, "<|im_start|>assistant", 21) != NULL);
        /* Tied: no output head, and the embedding is quantized as one. */
        ASSERT_TRUE(gguf_find_tensor(q, "output.weight") == NULL);
        assert_tensor(q, "token_embd.weight", RBEE_TYPE_Q8_0, 64, 512);
        assert_tensor(q, "blk.0.attn_q.bias", RBEE_TYPE_F32, 64, 1);
        assert_tensor(q, "blk.1.attn_k.bias", RBEE_TYPE_F32, 32, 1);
        assert_tensor(q, "blk.1.attn_v.bias", RBEE_TYPE_F32, 32, 1);
        assert_tensor(q, "blk.1.attn_v.weight", RBEE_TYPE_Q8_0, 64, 32);
        ASSERT_EQ(gguf_n_tensors(q), 2 + 2 * 12);
        /* Matches llama-quantize on a qwen2 file of this shape. */
        _cleanup_(gguf_closep) gguf_file *ref = open_ok(harness_shared("models/tiny-qwen2-d64-Q4_K_M.gguf"));
        assert_types_match_reference(q, ref);

        mkmodel_ok(pp, "tiny-phi3", "Q4_K_M", "3");
        p = open_ok(pp);
        assert_str(p, "general.architecture", "phi3");
        ASSERT_EQ(get_u32(p, "phi3.rope.scaling.original_context_length"), 256);
        ASSERT_EQ(get_u32(p, "phi3.attention.head_count_kv"), 4);
        /* Fused: q, k, v rows stacked; gate and up stacked. */
        assert_tensor(p, "blk.0.attn_qkv.weight", RBEE_TYPE_Q5_1, 64, 3 * 64); /* Q5_K, fallen back */
        assert_tensor(p, "blk.0.ffn_up.weight", RBEE_TYPE_Q5_0, 64, 2 * 192);
        assert_tensor(p, "blk.0.ffn_down.weight", RBEE_TYPE_Q5_0, 192, 64);
        ASSERT_TRUE(gguf_find_tensor(p, "blk.0.attn_q.weight") == NULL);
        ASSERT_TRUE(gguf_find_tensor(p, "blk.0.ffn_gate.weight") == NULL);
        assert_tensor(p, "output.weight", RBEE_TYPE_Q8_0, 64, 512);
        ASSERT_OK(gguf_get_arr_str(p, "tokenizer.ggml.tokens", get_u32(p, "tokenizer.ggml.eos_token_id"), &s));
        ASSERT_EQ(s.n, 13);
        ASSERT_EQ(memcmp(s.s, "<|endoftext|>", 13), 0);
        ASSERT_OK(gguf_get_str(p, "tokenizer.chat_template", &s));
        ASSERT_TRUE(memmem(s.s, s.n, "<|end|>", 7) != NULL);

        /* Heads wider than dim / heads, and overrides in any order. */
        ASSERT_EQ(mkmodel(&err, "-q", "--head-dim", "32", "-o", ph, "--type", "F16", "--untied", "--shape",
                          "tiny-qwen2", "--no-chat-template", "--ctx", "100", NULL), 0);
        h = open_ok(ph);
        ASSERT_EQ(get_u32(h, "qwen2.attention.key_length"), 32);
        ASSERT_EQ(get_u32(h, "qwen2.attention.value_length"), 32);
        ASSERT_EQ(get_u32(h, "qwen2.rope.dimension_count"), 32);
        ASSERT_EQ(get_u32(h, "qwen2.context_length"), 100);
        assert_tensor(h, "blk.0.attn_q.weight", RBEE_TYPE_F16, 64, 128);
        assert_tensor(h, "blk.0.attn_k.weight", RBEE_TYPE_F16, 64, 64);
        assert_tensor(h, "blk.0.attn_output.weight", RBEE_TYPE_F16, 128, 64);
        assert_tensor(h, "output.weight", RBEE_TYPE_F16, 64, 512);
        ASSERT_EQ(gguf_find_key(h, "tokenizer.chat_template"), -ENOENT);
        free(err);
}

/* Every merge joins two tokens into a third, all in the vocabulary. */
TEST_TIMEOUT(mkmodel_bpe_vocab_consistent, 60) {
        _cleanup_(freep) char *path = path_in_tmp("bpe.gguf");
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        enum gguf_vtype et;
        uint64_t n_tok, n_merges;
        struct gguf_str s;

        mkmodel_ok(path, "tiny-qwen2", "F16", "1");
        f = open_ok(path);
        ASSERT_OK(gguf_get_arr_info(f, "tokenizer.ggml.tokens", &et, &n_tok));
        ASSERT_OK(gguf_get_arr_info(f, "tokenizer.ggml.merges", &et, &n_merges));
        ASSERT_EQ(n_tok, 512);
        ASSERT_EQ(n_merges, 512 - 256 - 3);

        char **toks = calloc(n_tok, sizeof(char *));
        ASSERT_NOT_NULL(toks);
        for (uint64_t i = 0; i < n_tok; i++) {
                ASSERT_OK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &s));
                toks[i] = strndup(s.s, s.n);
                for (uint64_t j = 0; j < i; j++)
                        if (strcmp(toks[i], toks[j]) == 0)
                                FAIL("token %s twice (%" PRIu64 " and %" PRIu64 ")", toks[i], j, i);
        }
        ASSERT_STREQ(toks[0], "!");
        ASSERT_STREQ(toks[509], "<|endoftext|>");
        ASSERT_STREQ(toks[510], "<|im_start|>");
        ASSERT_STREQ(toks[511], "<|im_end|>");
        ASSERT_EQ(get_u32(f, "tokenizer.ggml.eos_token_id"), 511);
        ASSERT_EQ(get_u32(f, "tokenizer.ggml.bos_token_id"), 509);
        for (uint64_t m = 0; m < n_merges; m++) {
                char a[128], b[128], ab[256];
                bool fa = false, fb = false, fab = false;

                ASSERT_OK(gguf_get_arr_str(f, "tokenizer.ggml.merges", m, &s));
                const char *sp = memchr(s.s, ' ', s.n);
                ASSERT_NOT_NULL(sp);
                snprintf(a, sizeof(a), "%.*s", (int) (sp - s.s), s.s);
                snprintf(b, sizeof(b), "%.*s", (int) (s.n - (uint64_t) (sp - s.s) - 1), sp + 1);
                snprintf(ab, sizeof(ab), "%s%s", a, b);
                for (uint64_t i = 0; i < n_tok; i++) {
                        fa |= strcmp(toks[i], a) == 0;
                        fb |= strcmp(toks[i], b) == 0;
                        fab |= strcmp(toks[i], ab) == 0;
                }
                if (!fa || !fb || !fab)
                        FAIL("merge '%s %s' refers to a missing token", a, b);
        }
        for (uint64_t i = 0; i < n_tok; i++)
                free(toks[i]);
        free(toks);
}

/* The engine's tokenizer loads the synthesized vocabularies and round-trips text. */
TEST_TIMEOUT(mkmodel_vocab_tokenizes, 60) {
        static const char *const shapes[] = { "tiny", "tiny-qwen2", "tiny-phi3" };
        const char *text = "Hello world! Once upon a time, the little model said: 42 + x = {y}.";

        for (size_t k = 0; k < ELEMENTSOF(shapes); k++) {
                _cleanup_(freep) char *path = path_in_tmp("v.gguf");
                _cleanup_(gguf_closep) gguf_file *f = NULL;
                _cleanup_(rbee_vocab_freep) rbee_vocab *v = NULL;
                struct rbee_detok d;
                char err[512] = "", out[1024];
                int32_t ids[256];
                size_t len = 0;
                int n;

                mkmodel_ok(path, shapes[k], "F16", "1");
                f = open_ok(path);
                if (rbee_vocab_load(f, &v, err, sizeof(err)) < 0)
                        FAIL("%s: rbee_vocab_load: %s", shapes[k], err);
                ASSERT_EQ(rbee_vocab_n_tokens(v), 512);
                n = rbee_tokenize(v, text, strlen(text), false, false, ids, ELEMENTSOF(ids));
                ASSERT_TRUE(n > 0 && n < (int) strlen(text)); /* some merges happened */
                rbee_detok_init(&d, v, false);
                for (int i = 0; i < n; i++) {
                        int k2 = rbee_detok_push(&d, ids[i], out + len, sizeof(out) - len);

                        ASSERT_OK(k2);
                        len += (size_t) k2;
                }
                int k3 = rbee_detok_flush(&d, out + len, sizeof(out) - len);
                ASSERT_OK(k3);
                len += (size_t) k3;
                out[len] = 0;
                ASSERT_STREQ(out, text);
        }
}

TEST_TIMEOUT(mkmodel_vocab_from_file, 60) {
        const char *src = harness_shared("tokenizer/ggml-vocab-llama-spm.gguf");
        _cleanup_(freep) char *path = path_in_tmp("vf.gguf");
        _cleanup_(gguf_closep) gguf_file *f = NULL, *s = NULL;
        struct gguf_str a, b;
        char *err = NULL;

        ASSERT_EQ(mkmodel(&err, "-q", "-o", path, "--type", "Q8_0", "--vocab-from", src, NULL), 0);
        f = open_ok(path);
        s = open_ok(src);
        ASSERT_EQ(get_u32(f, "llama.vocab_size"), 32000);
        assert_tensor(f, "token_embd.weight", RBEE_TYPE_Q8_0, 64, 32000);
        assert_tensor(f, "output.weight", RBEE_TYPE_Q8_0, 64, 32000);
        for (size_t i = 0; i < gguf_n_kv(s); i++) {
                const char *key = gguf_kv_key(s, i);

                if (strncmp(key, "tokenizer.", 10) != 0)
                        continue;
                ASSERT_TRUE(gguf_find_key(f, key) >= 0);
                ASSERT_EQ(gguf_kv_type(f, (size_t) gguf_find_key(f, key)), gguf_kv_type(s, i));
        }
        for (uint64_t i = 0; i < 32000; i += 997) {
                ASSERT_OK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &a));
                ASSERT_OK(gguf_get_arr_str(s, "tokenizer.ggml.tokens", i, &b));
                ASSERT_EQ(a.n, b.n);
                ASSERT_EQ(memcmp(a.s, b.s, a.n), 0);
        }
        /* The source has no template: the arch's default is added. */
        ASSERT_TRUE(gguf_find_key(f, "tokenizer.chat_template") >= 0);

        /* A --vocab that contradicts the file is a usage error. */
        ASSERT_EQ(mkmodel(&err, "-o", path, "--vocab", "1000", "--vocab-from", src, NULL), 2);
        ASSERT_CONTAINS(err, "conflicts");
        free(err);
        ASSERT_EQ(mkmodel(&err, "-o", path, "--vocab-from", "/nonexistent.gguf", NULL), 1);
        ASSERT_CONTAINS(err, "nonexistent");
        free(err);
}

TEST(mkmodel_usage_errors) {
        static const struct {
                const char *args[10];
                const char *msg;
        } cases[] = {
                { { "--shape", "tiny", NULL }, "no output file" },
                { { "-o", "x.gguf", "--type", "Q3_K", NULL }, "Q3_K" },
                { { "-o", "x.gguf", "--shape", "gpt-5", NULL }, "gpt-5" },
                { { "-o", "x.gguf", "--arch", "mamba", NULL }, "mamba" },
                { { "-o", "x.gguf", "--dim", "abc", NULL }, "--dim" },
                { { "-o", "x.gguf", "--dim", "0", NULL }, "--dim" },
                { { "-o", "x.gguf", "--layers", "-3", NULL }, "--layers" },
                { { "-o", "x.gguf", "--eps", "nan", NULL }, "--eps" },
                { { "-o", "x.gguf", "--seed", "-1", NULL }, "--seed" },
                { { "-o", "x.gguf", "--frobnicate", NULL }, "--frobnicate" },
                { { "-o", "x.gguf", "--dim", NULL }, "needs an argument" },
                { { "-o", "x.gguf", "extra", NULL }, "extra" },
                { { "-o", "x.gguf", "--heads", "3", NULL }, "--heads" },
                { { "-o", "x.gguf", "--kv-heads", "3", NULL }, "--kv-heads" },
                { { "-o", "x.gguf", "--dim", "80", "--heads", "4", "--type", "Q4_0", NULL }, "multiple of 32" },
                { { "-o", "x.gguf", "--vocab", "100", NULL }, "too small" },
                { { "-o", "x.gguf", "--chat-template", "nope", NULL }, "nope" },
                { { "-o", "x.gguf", "--chat-template", "phi3", "--no-chat-template", NULL }, "contradict" },
        };
        _cleanup_(freep) char *out = path_in_tmp("x.gguf");
        char *err = NULL;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *a[10];
                int r;

                /* "x.gguf" stands for a path in the test's own directory. */
                for (size_t j = 0; j < 10; j++)
                        a[j] = cases[i].args[j] && strcmp(cases[i].args[j], "x.gguf") == 0 ? out : cases[i].args[j];
                r = mkmodel(&err, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);

                if (r != 2)
                        FAIL("case %zu (%s ...): exit %d, want 2: %s", i, a[0], r, err);
                ASSERT_CONTAINS(err, cases[i].msg);
                ASSERT_CONTAINS(err, "--help");
                free(err);
        }
        ASSERT_EQ(mkmodel(&err, "--help", NULL), 0);
        free(err);
        ASSERT_EQ(access(out, F_OK), -1);
        ASSERT_EQ(count_tmp_files(harness_tmpdir()), 0);
}

TEST(mkmodel_unwritable_output) {
        _cleanup_(freep) char *file = path_in_tmp("plain"), *under_file = path_in_tmp("plain/x.gguf");
        _cleanup_(freep) char *missing = path_in_tmp("missing/x.gguf");
        char *err = NULL;
        FILE *fp = fopen(file, "we");

        ASSERT_NOT_NULL(fp);
        fclose(fp);
        ASSERT_EQ(mkmodel(&err, "-q", "-o", missing, NULL), 1);
        ASSERT_CONTAINS(err, "missing/x.gguf");
        ASSERT_CONTAINS(err, "No such file or directory");
        free(err);
        ASSERT_EQ(mkmodel(&err, "-q", "-o", under_file, NULL), 1);
        ASSERT_CONTAINS(err, "Not a directory");
        free(err);
        ASSERT_EQ(count_tmp_files(harness_tmpdir()), 0);
}

/* Killed in the middle of writing, the tool removes its temporary file and
 * leaves no output. */
TEST_TIMEOUT(mkmodel_interrupted_leaves_nothing, 60) {
        const char *bin = harness_build_path("rbee-mkmodel");
        _cleanup_(freep) char *path = path_in_tmp("big.gguf");
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        int status;
        pid_t pid;

        if (access(bin, X_OK) < 0)
                SKIP("%s is not built", bin);
        fflush(NULL);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

                if (null < 0 || dup2(null, STDERR_FILENO) < 0)
                        _exit(127);
                /* About 100M parameters of Q4_K: many seconds of work. */
                execl(bin, bin, "-o", path, "--shape", "tiny", "--dim", "1024", "--ffn", "2816", "--layers", "8",
                      "--type", "Q4_K_M", (char *) NULL);
                _exit(127);
        }
        /* Wait for the temporary file to appear, then interrupt. */
        for (int i = 0; i < 500 && count_tmp_files(harness_tmpdir()) == 0; i++)
                nanosleep(&ts, NULL);
        ASSERT_EQ(count_tmp_files(harness_tmpdir()), 1);
        ASSERT_EQ(kill(pid, SIGTERM), 0);
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status));
        ASSERT_EQ(WEXITSTATUS(status), 1);
        ASSERT_EQ(count_tmp_files(harness_tmpdir()), 0);
        ASSERT_EQ(access(path, F_OK), -1);
}
