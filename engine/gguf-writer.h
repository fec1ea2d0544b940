/* SPDX-License-Identifier: MIT */
#pragma once

/* A GGUF v3 writer. Metadata and tensor descriptions are collected in memory
 * first (the key/value payloads are serialized as they are added, so the
 * caller's buffers may go away); tensor data is produced only while the file
 * is written, either from a caller-owned buffer or from a callback that fills
 * a few rows at a time, so a model of any size is written in bounded memory.
 *
 * Layout written: header, key/values in the order added, tensor infos in the
 * order added, padding to the alignment, then each tensor's data padded to
 * the alignment (the last one too, as ggml does). Every input is validated
 * when it is added; errors are negative errno:
 *   -EINVAL        bad argument (empty or over-long name, unknown type,
 *                  ne0 not a multiple of the type's block size, zero dims)
 *   -EEXIST        a key or tensor name added twice
 *   -EOVERFLOW     a size that does not fit in 64 bits (or in size_t)
 *   -ENOMEM        out of memory
 * A gguf_writer is not thread-safe; the rows callback may use threads inside. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "types.h"

/* ggml's limit for tensor names (GGML_MAX_NAME, with the NUL): readers built
 * on ggml reject longer ones. */
#define GGUF_WRITER_MAX_TENSOR_NAME 63
/* Not a format limit; a sanity bound against garbage keys. */
#define GGUF_WRITER_MAX_KEY 1024

typedef struct gguf_writer gguf_writer;

/* Fill rows [row0, row0 + n_rows) of a tensor into buf, which holds exactly
 * n_rows * row_size bytes (a row is ne[0] elements of the tensor's type).
 * Called with increasing row0, from the thread that calls write. Return 0, or
 * a negative errno that aborts the write and is returned by it. */
typedef int (*gguf_writer_rows_fn)(void *userdata, uint64_t row0, uint64_t n_rows, void *buf);

/* Called after each chunk of tensor data is written: bytes done so far out of
 * the whole data section. Return false to cancel (write returns -ECANCELED). */
typedef bool (*gguf_writer_progress_fn)(uint64_t done, uint64_t total, void *userdata);

/* A new, empty writer with the default alignment (32). */
int gguf_writer_new(gguf_writer **ret);
gguf_writer *gguf_writer_free(gguf_writer *w); /* takes NULL, returns NULL */
static inline void gguf_writer_freep(gguf_writer **w) {
        if (*w)
                gguf_writer_free(*w);
}

/* Tensor data alignment, a power of two in [1, 65536]. Anything but the
 * default 32 is recorded as the u32 key general.alignment (added on the first
 * call that changes it; readers default to 32 when the key is absent). Must
 * be called before any tensor is added. -EINVAL, -EBUSY (tensors exist). */
int gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment);

/* Scalar metadata. Keys are NUL-terminated, non-empty, unique. */
int gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v);
int gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v);
int gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v);
int gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v);
int gguf_writer_add_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_add_f64(gguf_writer *w, const char *key, double v);
int gguf_writer_add_bool(gguf_writer *w, const char *key, bool v);
int gguf_writer_add_str(gguf_writer *w, const char *key, const char *s);
/* A string of n bytes (may contain NULs; GGUF strings are length-prefixed). */
int gguf_writer_add_strn(gguf_writer *w, const char *key, const char *s, size_t n);

/* Arrays. Numeric element types (UINT8 ... FLOAT64 and BOOL) take n packed
 * values of that type from data; STRING and ARRAY elements are rejected here
 * (-EINVAL): use the string array functions. */
int gguf_writer_add_arr(gguf_writer *w, const char *key, enum gguf_vtype type, const void *data, size_t n);
int gguf_writer_add_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n);
int gguf_writer_add_arr_u32(gguf_writer *w, const char *key, const uint32_t *v, size_t n);
int gguf_writer_add_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n);
int gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n);
/* Strings given as (pointer, length), e.g. straight from a gguf_file. */
int gguf_writer_add_arr_strn(gguf_writer *w, const char *key, const struct gguf_str *v, size_t n);

/* Copy key/value number i of an open file, with its type. Supports every
 * scalar type and arrays of strings, floats and integers; arrays of arrays
 * give -EOPNOTSUPP, and so do 64-bit integer arrays whose values do not fit in
 * 32 bits (the reader only converts arrays to int32/float). */
int gguf_writer_copy_kv(gguf_writer *w, const gguf_file *f, size_t i);

bool gguf_writer_has_key(const gguf_writer *w, const char *key);
size_t gguf_writer_n_kv(const gguf_writer *w);
size_t gguf_writer_n_tensors(const gguf_writer *w);

/* Add a tensor of n_dims (1..4) dimensions in GGUF order (ne[0] is the row
 * length, the contiguous one). The data is not copied: it must hold the
 * tensor's exact size (rbee_type_row_size(type, ne[0]) * rows) and stay valid
 * until gguf_writer_write_*() returns. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, enum rbee_type type, uint32_t n_dims,
                           const uint64_t *ne, const void *data);

/* The same with the data produced by fn while writing (see gguf_writer_rows_fn). */
int gguf_writer_add_tensor_cb(gguf_writer *w, const char *name, enum rbee_type type, uint32_t n_dims,
                              const uint64_t *ne, gguf_writer_rows_fn fn, void *userdata);

/* Bytes of tensor data the file will hold (with alignment padding), and the
 * size of the whole file. */
uint64_t gguf_writer_data_size(const gguf_writer *w);
uint64_t gguf_writer_file_size(const gguf_writer *w);

void gguf_writer_set_progress(gguf_writer *w, gguf_writer_progress_fn fn, void *userdata);

/* Upper bound of bytes handed to one rows callback (default 4 MiB; at least
 * one row is always asked for). Smaller chunks mean more frequent progress. */
void gguf_writer_set_chunk_size(gguf_writer *w, size_t bytes);

/* Write the file to an open descriptor, sequentially from its current
 * position (pipes work). The writer stays usable and may be written again. */
int gguf_writer_write_fd(gguf_writer *w, int fd);

/* Write atomically: the data goes to "<path>.tmp.XXXXXX" in the same
 * directory, is fsync()ed, made mode 0644 and renamed over path, and the
 * directory is fsync()ed. On any failure the temporary file is removed and
 * path is untouched. Errors from open/write/fsync/rename are returned as
 * negative errno (-EACCES, -ENOSPC, -ENOENT for a missing directory, ...). */
int gguf_writer_write_file(gguf_writer *w, const char *path);
