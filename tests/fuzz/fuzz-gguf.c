/* SPDX-License-Identifier: MIT */
/* The GGUF reader on arbitrary bytes, and what reads a GGUF file's header
 * after it: every accessor on every key and tensor, the tokenizer built from
 * the metadata, the model loader and the hive's inspection of a registered
 * or downloaded file. A file that opens must keep every promise of gguf.h. */

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hive/catalog.h"
#include "fuzz.h"
#include "gguf.h"
#include "rbee-engine.h"
#include "tokenizer.h"

static void check_kv(const gguf_file *f, size_t i) {
        const char *key = gguf_kv_key(f, i);
        enum gguf_vtype t = gguf_kv_type(f, i), at;
        struct gguf_str s;
        uint32_t u32;
        int32_t i32;
        uint64_t u64, n;
        float f32;
        bool b;

        FUZZ_CHECK(key);
        FUZZ_CHECK(t < _GGUF_VTYPE_MAX);
        FUZZ_CHECK(gguf_find_key(f, key) == (int) i);
        (void) gguf_get_u32(f, key, &u32);
        (void) gguf_get_i32(f, key, &i32);
        (void) gguf_get_u64(f, key, &u64);
        (void) gguf_get_f32(f, key, &f32);
        (void) gguf_get_bool(f, key, &b);
        if (gguf_get_str(f, key, &s) >= 0) {
                FUZZ_CHECK(t == GGUF_VTYPE_STRING);
                /* Touch both ends: the string must lie inside the buffer. */
                if (s.n > 0)
                        FUZZ_CHECK((s.s[0] | s.s[s.n - 1] | 1) != 0);
        }
        if (gguf_get_arr_info(f, key, &at, &n) < 0) {
                FUZZ_CHECK(t != GGUF_VTYPE_ARRAY);
                return;
        }
        FUZZ_CHECK(t == GGUF_VTYPE_ARRAY);
        FUZZ_CHECK(at < _GGUF_VTYPE_MAX && at != GGUF_VTYPE_ARRAY);
        if (at == GGUF_VTYPE_STRING) {
                for (uint64_t k = 0; k < n && k < 64; k++) {
                        FUZZ_CHECK(gguf_get_arr_str(f, key, k, &s) == 0);
                        if (s.n > 0)
                                FUZZ_CHECK((s.s[0] | s.s[s.n - 1] | 1) != 0);
                }
                if (n > 0)
                        FUZZ_CHECK(gguf_get_arr_str(f, key, n - 1, &s) == 0);
                FUZZ_CHECK(gguf_get_arr_str(f, key, n, &s) == -ERANGE);
                return;
        }
        FUZZ_CHECK(gguf_get_arr_str(f, key, 0, &s) < 0);
        if (n <= (1u << 16)) {
                float *fv = malloc((n + 1) * sizeof(float));
                int32_t *iv = malloc((n + 1) * sizeof(int32_t));
                FUZZ_CHECK(fv && iv);
                (void) gguf_get_arr_f32(f, key, fv, n);
                (void) gguf_get_arr_i32(f, key, iv, n);
                FUZZ_CHECK(gguf_get_arr_f32(f, key, fv, n + 1) < 0);
                free(fv);
                free(iv);
        }
}

static void check_tensor(const gguf_file *f, size_t i) {
        const struct gguf_tensor *t = gguf_get_tensor(f, i);
        const uint8_t *base = gguf_data_base(f);

        FUZZ_CHECK(t && t->name);
        FUZZ_CHECK(gguf_find_tensor(f, t->name) == t);
        FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        FUZZ_CHECK(t->offset <= gguf_data_size(f) && t->size <= gguf_data_size(f) - t->offset);
        FUZZ_CHECK((const uint8_t *) t->data == base + t->offset);
        if (t->size > 0) {
                const volatile uint8_t *p = t->data;
                (void) p[0];
                (void) p[t->size - 1];
        }
}

/* The vocabulary of a file that opens: load it and use it a little. */
static void check_vocab(const gguf_file *f) {
        rbee_vocab *v = NULL;
        char err[256];
        int32_t ids[64];
        char out[512];

        if (rbee_vocab_load(f, &v, err, sizeof(err)) < 0)
                return;
        static const char text[] = "Hello world <s> \xe4\xb8\xad\xff";
        int n = rbee_tokenize(v, text, sizeof(text) - 1, true, true, ids, 64);
        FUZZ_CHECK(n >= 0);
        struct rbee_detok d;
        rbee_detok_init(&d, v, true);
        for (int i = 0; i < n && i < 64; i++) {
                FUZZ_CHECK(ids[i] >= 0 && ids[i] < rbee_vocab_n_tokens(v));
                if (rbee_detok_max_out(v) <= sizeof(out))
                        FUZZ_CHECK(rbee_detok_push(&d, ids[i], out, sizeof(out)) >= 0);
        }
        (void) rbee_detok_flush(&d, out, sizeof(out));
        rbee_vocab_free(v);
}

/* The path-based readers get the same bytes through a memfd. */
static void check_by_path(const uint8_t *data, size_t size) {
        struct hive_model m = {};
        rbee_model *model = NULL;
        struct rbee_model_params p;
        char path[64], err[512];
        int fd;

        fd = memfd_create("fuzz-gguf", MFD_CLOEXEC);
        if (fd < 0)
                return;
        if (write(fd, data, size) != (ssize_t) size) {
                close(fd);
                return;
        }
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        (void) hive_model_inspect(path, &m, err, sizeof(err));
        free(m.architecture);
        free(m.quantization);
        free(m.name);
        rbee_model_default_params(&p);
        if (rbee_model_load(path, &p, &model, err, sizeof(err)) >= 0)
                rbee_model_free(model);
        close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        gguf_file *f = NULL;
        char err[512];
        int r;

        /* An exact copy, so that ASan catches a read one past the end. */
        uint8_t *copy = malloc(size ? size : 1);
        FUZZ_CHECK(copy);
        memcpy(copy, data, size);
        r = gguf_open_memory(copy, size, &f, err, sizeof(err));
        if (r < 0) {
                FUZZ_CHECK(err[0] != 0);
                FUZZ_CHECK(!f);
                free(copy);
                return 0;
        }
        FUZZ_CHECK(gguf_version(f) == 2 || gguf_version(f) == 3);
        FUZZ_CHECK(gguf_alignment(f) > 0 && (gguf_alignment(f) & (gguf_alignment(f) - 1)) == 0);
        FUZZ_CHECK(gguf_file_size(f) == size);
        for (size_t i = 0; i < gguf_n_kv(f); i++)
                check_kv(f, i);
        for (size_t i = 0; i < gguf_n_tensors(f); i++)
                check_tensor(f, i);
        FUZZ_CHECK(gguf_find_key(f, "no such key \x01") == -ENOENT);
        check_vocab(f);
        gguf_close(f);
        free(copy);
        check_by_path(data, size);
        return 0;
}
