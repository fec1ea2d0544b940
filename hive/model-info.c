/* SPDX-License-Identifier: MIT */
/* Model metadata for the catalog, read from the GGUF header at registration
 * (the file is mapped, tensor data is never touched). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "catalog.h"
#include "gguf.h"
#include "macros.h"
#include "types.h"

/* general.file_type as llama.cpp numbers it: the name users know a file by. */
static const char *file_type_name(uint32_t ft) {
        static const char *const names[] = {
                [0] = "F32",     [1] = "F16",     [2] = "Q4_0",    [3] = "Q4_1",    [7] = "Q8_0",
                [8] = "Q5_0",    [9] = "Q5_1",    [10] = "Q2_K",   [11] = "Q3_K_S", [12] = "Q3_K_M",
                [13] = "Q3_K_L", [14] = "Q4_K_S", [15] = "Q4_K_M", [16] = "Q5_K_S", [17] = "Q5_K_M",
                [18] = "Q6_K",   [32] = "BF16",
        };

        return ft < ELEMENTSOF(names) ? names[ft] : NULL;
}

static char *strndup_gguf(const struct gguf_str *s) {
        return strndup(s->s, s->n > 4096 ? 4096 : (size_t) s->n);
}

int hive_model_inspect(const char *path, struct hive_model *m, char *err, size_t errlen) {
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        _cleanup_(freep) char *arch = NULL, *name = NULL, *quant = NULL;
        struct gguf_str s;
        uint64_t params = 0, best_bytes = 0, bytes[64] = { 0 };
        uint32_t ft, ctx = 0;
        const char *qname = NULL;
        char key[128];
        int r, best = -1;

        r = gguf_open(path, &f, err, errlen);
        if (r < 0)
                return r;
        if (gguf_get_str(f, "general.architecture", &s) < 0) {
                snprintf(err, errlen, "%s: no general.architecture: not a model file", path);
                return -EBADMSG;
        }
        arch = strndup_gguf(&s);
        if (!arch)
                return -ENOMEM;
        if (gguf_get_str(f, "general.name", &s) >= 0 && !(name = strndup_gguf(&s)))
                return -ENOMEM;
        snprintf(key, sizeof(key), "%s.context_length", arch);
        if (gguf_get_u32(f, key, &ctx) < 0) {
                uint64_t c64;
                ctx = gguf_get_u64(f, key, &c64) >= 0 && c64 <= UINT32_MAX ? (uint32_t) c64 : 0;
        }
        if (gguf_n_tensors(f) == 0) {
                snprintf(err, errlen, "%s: the file holds no tensors", path);
                return -EBADMSG;
        }
        for (size_t i = 0; i < gguf_n_tensors(f); i++) {
                const struct gguf_tensor *t = gguf_get_tensor(f, i);
                uint64_t n = 1;
                for (uint32_t d = 0; d < t->n_dims; d++)
                        if (MUL_OVERFLOW(n, t->ne[d], &n))
                                n = UINT64_MAX;
                if (ADD_OVERFLOW(params, n, &params))
                        params = UINT64_MAX;
                if ((unsigned) t->type < ELEMENTSOF(bytes))
                        bytes[t->type] += t->size;
        }
        for (size_t i = 0; i < ELEMENTSOF(bytes); i++)
                if (bytes[i] > best_bytes) {
                        best_bytes = bytes[i];
                        best = (int) i;
                }
        if (gguf_get_u32(f, "general.file_type", &ft) >= 0)
                qname = file_type_name(ft);
        if (!qname && best >= 0)
                qname = rbee_type_name((uint32_t) best);
        quant = strdup(qname ? qname : "unknown");
        if (!quant)
                return -ENOMEM;

        free(m->architecture);
        m->architecture = TAKE_PTR(arch);
        free(m->name);
        m->name = TAKE_PTR(name);
        free(m->quantization);
        m->quantization = TAKE_PTR(quant);
        m->context_length = ctx;
        m->parameters = params;
        m->size = gguf_file_size(f);
        return 0;
}
