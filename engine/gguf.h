/* SPDX-License-Identifier: MIT */
#pragma once

/* A GGUF v2/v3 reader over a read-only mmap. gguf_open() validates the whole
 * header before returning: every count, string length, array length, tensor
 * dimension, type, offset and alignment is checked (with overflow checks)
 * against the file size, so callers can trust what the accessors return.
 * Nothing is copied except the small index; tensor data and string bytes
 * point into the mapping. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "types.h"

enum gguf_vtype {
        GGUF_VTYPE_UINT8 = 0,
        GGUF_VTYPE_INT8 = 1,
        GGUF_VTYPE_UINT16 = 2,
        GGUF_VTYPE_INT16 = 3,
        GGUF_VTYPE_UINT32 = 4,
        GGUF_VTYPE_INT32 = 5,
        GGUF_VTYPE_FLOAT32 = 6,
        GGUF_VTYPE_BOOL = 7,
        GGUF_VTYPE_STRING = 8,
        GGUF_VTYPE_ARRAY = 9,
        GGUF_VTYPE_UINT64 = 10,
        GGUF_VTYPE_INT64 = 11,
        GGUF_VTYPE_FLOAT64 = 12,
        _GGUF_VTYPE_MAX,
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

/* A string inside the file: not NUL-terminated. */
struct gguf_str {
        const char *s;
        uint64_t n;
};

struct gguf_tensor {
        char *name;                   /* NUL-terminated copy */
        uint32_t n_dims;
        uint64_t ne[GGUF_MAX_DIMS];   /* ne[0] is the row length; unused dims are 1 */
        enum rbee_type type;
        uint64_t offset;              /* relative to the start of the data section */
        uint64_t size;                /* bytes */
        const void *data;             /* inside the mapping, aligned as the file says */
};

typedef struct gguf_file gguf_file;

/* Open and validate. On failure returns a negative errno and, when err is
 * non-NULL, a message naming what is wrong ("tensor 'blk.0.attn_q.weight':
 * data [..) extends past end of file (size ..)"); gguf_open() prefixes the
 * path. *ret is set only on success.
 *   -ENOENT/-EACCES/...  from open(); -EISDIR for a directory
 *   -EBADMSG             malformed or truncated file (most problems)
 *   -EPROTONOSUPPORT     bad magic or unsupported version
 *   -EOPNOTSUPP          a tensor type the engine does not know (by number)
 *   -EOVERFLOW           a size that overflows
 *   -ENOMEM              out of memory
 * Nested arrays (arrays of arrays) are rejected with -EBADMSG. The
 * general.alignment key may have any integer type whose value fits u32 and
 * must be a power of two; it defaults to 32. Opening maps the file and reads
 * the header only: tensor data pages are not touched. A gguf_file is
 * immutable after open, so the getters are safe to call from several
 * threads at once. */
int gguf_open(const char *path, gguf_file **ret, char *err, size_t errlen);

/* Same over a caller-owned buffer, which must outlive the gguf_file. */
int gguf_open_memory(const void *data, size_t size, gguf_file **ret, char *err, size_t errlen);

gguf_file *gguf_close(gguf_file *f); /* takes NULL, returns NULL */
static inline void gguf_closep(gguf_file **f) {
        if (*f)
                gguf_close(*f);
}

uint32_t gguf_version(const gguf_file *f);
uint64_t gguf_file_size(const gguf_file *f);
uint32_t gguf_alignment(const gguf_file *f);
const void *gguf_data_base(const gguf_file *f);
uint64_t gguf_data_size(const gguf_file *f);

/* Key/value metadata. Keys are unique (duplicates are rejected at open). */
size_t gguf_n_kv(const gguf_file *f);
const char *gguf_kv_key(const gguf_file *f, size_t i);
enum gguf_vtype gguf_kv_type(const gguf_file *f, size_t i);
int gguf_find_key(const gguf_file *f, const char *key); /* index, or -ENOENT */

/* Typed getters. -ENOENT when the key is missing, -EBADMSG when it has the
 * wrong type or its value does not fit (e.g. a negative int into u32).
 * Integer getters accept any integer vtype whose value fits; gguf_get_f32
 * accepts FLOAT32 and FLOAT64; gguf_get_bool only BOOL. *ret is untouched on
 * failure. Returned strings point into the file and live as long as it. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *ret);
int gguf_get_i32(const gguf_file *f, const char *key, int32_t *ret);
int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *ret);
int gguf_get_f32(const gguf_file *f, const char *key, float *ret);
int gguf_get_bool(const gguf_file *f, const char *key, bool *ret);
int gguf_get_str(const gguf_file *f, const char *key, struct gguf_str *ret);

/* Arrays. gguf_get_arr_info gives the element type and count. */
int gguf_get_arr_info(const gguf_file *f, const char *key, enum gguf_vtype *ret_type, uint64_t *ret_n);
/* Element i of a string array, O(1) (offsets are indexed at open).
 * -EBADMSG for a non-string array, -ERANGE when i >= the array length. */
int gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, struct gguf_str *ret);
/* Copy a numeric array converting to float (from FLOAT32, FLOAT64 or any
 * integer type) / int32 (from integer types; a value that does not fit gives
 * -EBADMSG and out is untouched). n must equal the array length, else
 * -EBADMSG: a length that differs from what the caller expects (scores vs
 * tokens) is a malformed file. */
int gguf_get_arr_f32(const gguf_file *f, const char *key, float *out, uint64_t n);
int gguf_get_arr_i32(const gguf_file *f, const char *key, int32_t *out, uint64_t n);

/* Tensors. Names are unique (duplicates are rejected at open). */
size_t gguf_n_tensors(const gguf_file *f);
const struct gguf_tensor *gguf_get_tensor(const gguf_file *f, size_t i);
const struct gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* NULL if absent */
