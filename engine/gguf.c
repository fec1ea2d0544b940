/* SPDX-License-Identifier: MIT */
/* GGUF v2/v3 reader. The file is mapped read-only and parsed once; what the
 * parser keeps is an index (positions into the mapping), never a copy of the
 * data. Every number read from the file is checked against the bytes that are
 * actually left before it is used to size an allocation or a loop, so a
 * corrupt or hostile file costs at most memory proportional to its size.
 *
 * GGUF is little-endian; so is every host we build for (checked below), so
 * scalars are read with memcpy (the header is not aligned) and no swapping.
 * Big-endian GGUF files are recognised only to say so in the error. */

#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "../common/macros.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian values in place and needs a little-endian host"
#endif

#define GGUF_MAGIC "GGUF"
/* magic, version, n_tensors, n_kv */
#define HEADER_SIZE (4 + 4 + 8 + 8)
/* The spec caps key lengths at 65535 bytes; tensor names get the same bound
 * (the spec says 64, but writers do not all honour that). */
#define NAME_MAX_LEN 65535
/* The least a kv can take: key length, one key byte, value type, a 1-byte value. */
#define KV_MIN_SIZE (8 + 1 + 4 + 1)
/* The least a tensor info can take: name length, one name byte, n_dims, one
 * dimension, type, offset. */
#define TENSOR_MIN_SIZE (8 + 1 + 4 + 8 + 4 + 8)

struct gguf_kv {
        char *key;          /* NUL-terminated, in f->names */
        uint64_t key_pos;   /* key bytes in the file */
        uint64_t key_len;
        enum gguf_vtype type;
        enum gguf_vtype arr_type;
        uint64_t arr_n;
        uint64_t val_pos;   /* the value; for arrays the first element */
        uint64_t *str_pos;  /* string arrays: each element's length prefix */
};

struct name_ref {
        uint64_t pos, len;
};

/* Open addressing over entry numbers: a slot holds entry + 1, 0 is empty.
 * Entries are added in order 0, 1, 2, ... and the table doubles to stay at
 * most half full. Names are compared against the file bytes, so the index
 * works before the NUL-terminated copies exist. */
struct name_index {
        size_t *slots;
        size_t mask;
        size_t n;
};

struct gguf_file {
        const uint8_t *base;
        uint64_t size;
        bool mapped;

        uint32_t version;
        uint32_t alignment;
        uint64_t data_offset;
        uint64_t data_size;

        struct gguf_kv *kvs;
        size_t n_kv;
        struct name_index kv_index;

        struct gguf_tensor *tensors;
        struct name_ref *tensor_names; /* name bytes in the file, for lookups */
        size_t n_tensors;
        struct name_index tensor_index;

        char *names; /* NUL-terminated copies of every key and tensor name */
};

struct parser {
        gguf_file *f;
        uint64_t pos;
        char *err;
        size_t errlen;
        /* What is being parsed ("key 'x'"), for truncation messages. */
        char ctx[160];
        /* Counts as the header declares them; the arrays grow towards them
         * as entries are actually parsed, so a corrupt count in a large file
         * does not allocate in proportion to the file. */
        size_t n_kv, n_tensors;
        size_t kv_cap, tensor_cap;
};

static const char *const vtype_names[_GGUF_VTYPE_MAX] = {
        [GGUF_VTYPE_UINT8] = "uint8",     [GGUF_VTYPE_INT8] = "int8",
        [GGUF_VTYPE_UINT16] = "uint16",   [GGUF_VTYPE_INT16] = "int16",
        [GGUF_VTYPE_UINT32] = "uint32",   [GGUF_VTYPE_INT32] = "int32",
        [GGUF_VTYPE_FLOAT32] = "float32", [GGUF_VTYPE_BOOL] = "bool",
        [GGUF_VTYPE_STRING] = "string",   [GGUF_VTYPE_ARRAY] = "array",
        [GGUF_VTYPE_UINT64] = "uint64",   [GGUF_VTYPE_INT64] = "int64",
        [GGUF_VTYPE_FLOAT64] = "float64",
};

/* Fixed element sizes; 0 for the variable-sized string and array. */
static const uint8_t vtype_sizes[_GGUF_VTYPE_MAX] = {
        [GGUF_VTYPE_UINT8] = 1,   [GGUF_VTYPE_INT8] = 1,    [GGUF_VTYPE_UINT16] = 2,
        [GGUF_VTYPE_INT16] = 2,   [GGUF_VTYPE_UINT32] = 4,  [GGUF_VTYPE_INT32] = 4,
        [GGUF_VTYPE_FLOAT32] = 4, [GGUF_VTYPE_BOOL] = 1,    [GGUF_VTYPE_STRING] = 0,
        [GGUF_VTYPE_ARRAY] = 0,   [GGUF_VTYPE_UINT64] = 8,  [GGUF_VTYPE_INT64] = 8,
        [GGUF_VTYPE_FLOAT64] = 8,
};

static _printf_(3, 4) int fail(struct parser *p, int r, const char *fmt, ...) {
        va_list ap;

        if (p->err && p->errlen > 0) {
                va_start(ap, fmt);
                vsnprintf(p->err, p->errlen, fmt, ap);
                va_end(ap);
        }
        return r;
}

static uint64_t remaining(const struct parser *p) {
        return p->f->size - p->pos;
}

/* Reads n bytes at the cursor; what names the field for the message. */
static int read_bytes(struct parser *p, void *dst, size_t n, const char *what) {
        if (remaining(p) < n)
                return fail(p, -EBADMSG, "truncated file: %s%s%s needs %zu bytes at offset %" PRIu64
                            " but the file ends at %" PRIu64, p->ctx, p->ctx[0] ? ": " : "", what, n,
                            p->pos, p->f->size);
        memcpy(dst, p->f->base + p->pos, n);
        p->pos += n;
        return 0;
}

static int read_u32(struct parser *p, uint32_t *ret, const char *what) {
        return read_bytes(p, ret, sizeof(*ret), what);
}

static int read_u64(struct parser *p, uint64_t *ret, const char *what) {
        return read_bytes(p, ret, sizeof(*ret), what);
}

static int skip_bytes(struct parser *p, uint64_t n, const char *what) {
        if (remaining(p) < n)
                return fail(p, -EBADMSG, "truncated file: %s%s%s needs %" PRIu64 " bytes at offset %" PRIu64
                            " but the file ends at %" PRIu64, p->ctx, p->ctx[0] ? ": " : "", what, n,
                            p->pos, p->f->size);
        p->pos += n;
        return 0;
}

static uint64_t hash_bytes(const void *s, size_t n) {
        const uint8_t *b = s;
        uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */

        for (size_t i = 0; i < n; i++) {
                h ^= b[i];
                h *= UINT64_C(0x100000001b3);
        }
        return h;
}

typedef struct name_ref (*name_of_fn)(const gguf_file *f, size_t i);

static struct name_ref kv_name(const gguf_file *f, size_t i) {
        return (struct name_ref) { f->kvs[i].key_pos, f->kvs[i].key_len };
}

static struct name_ref tensor_name(const gguf_file *f, size_t i) {
        return f->tensor_names[i];
}

/* Returns the entry named s, or -ENOENT. */
static ssize_t name_index_find(const gguf_file *f, const struct name_index *ix, name_of_fn name_of,
                               const char *s, size_t n) {
        if (!ix->slots)
                return -ENOENT;
        for (size_t h = hash_bytes(s, n) & ix->mask;; h = (h + 1) & ix->mask) {
                size_t v = ix->slots[h];
                struct name_ref r;

                if (v == 0)
                        return -ENOENT;
                r = name_of(f, v - 1);
                if (r.len == n && memcmp(f->base + r.pos, s, n) == 0)
                        return (ssize_t) (v - 1);
        }
}

static void name_index_put(const gguf_file *f, struct name_index *ix, name_of_fn name_of, size_t i) {
        struct name_ref r = name_of(f, i);
        size_t h = hash_bytes(f->base + r.pos, r.len) & ix->mask;

        while (ix->slots[h] != 0)
                h = (h + 1) & ix->mask;
        ix->slots[h] = i + 1;
}

/* Adds entry ix->n, whose name must already be readable through name_of.
 * Returns -EEXIST when an earlier entry has the same name. */
static int name_index_add(const gguf_file *f, struct name_index *ix, name_of_fn name_of) {
        struct name_ref r = name_of(f, ix->n);

        if (name_index_find(f, ix, name_of, (const char *) f->base + r.pos, r.len) >= 0)
                return -EEXIST;
        if (!ix->slots || (ix->n + 1) * 2 > ix->mask + 1) {
                /* Entry counts are bounded by the file size, so this cannot overflow. */
                size_t cap = ix->slots ? (ix->mask + 1) * 2 : 64;
                size_t *slots = calloc(cap, sizeof(size_t));

                if (!slots)
                        return -ENOMEM;
                free(ix->slots);
                ix->slots = slots;
                ix->mask = cap - 1;
                for (size_t i = 0; i < ix->n; i++)
                        name_index_put(f, ix, name_of, i);
        }
        name_index_put(f, ix, name_of, ix->n);
        ix->n++;
        return 0;
}

/* Makes room for entry n in an array that grows towards max entries; new
 * entries are zeroed. */
static int grow(void **array, size_t *cap, size_t n, size_t max, size_t elem) {
        size_t new_cap;
        void *a;

        if (n < *cap)
                return 0;
        new_cap = MIN(MAX(*cap * 2, (size_t) 64), max);
        /* max is a count bounded by the file size (see parse()), so this
         * product stays far from overflowing. */
        a = realloc(*array, new_cap * elem);
        if (!a)
                return -ENOMEM;
        memset((uint8_t *) a + *cap * elem, 0, (new_cap - *cap) * elem);
        *array = a;
        *cap = new_cap;
        return 0;
}

/* Reads a length-prefixed name (key or tensor name): non-empty, bounded,
 * without NUL bytes. */
static int read_name(struct parser *p, const char *what, size_t idx, uint64_t *ret_pos, uint64_t *ret_len) {
        uint64_t n;
        int r;

        r = read_u64(p, &n, what);
        if (r < 0)
                return r;
        if (n == 0)
                return fail(p, -EBADMSG, "%s %zu: empty name at offset %" PRIu64, what, idx, p->pos - 8);
        if (n > NAME_MAX_LEN)
                return fail(p, -EBADMSG, "%s %zu: name length %" PRIu64 " exceeds the limit of %u bytes",
                            what, idx, n, NAME_MAX_LEN);
        if (n > remaining(p))
                return fail(p, -EBADMSG, "truncated file: %s %zu: name of %" PRIu64 " bytes at offset %" PRIu64
                            " but the file ends at %" PRIu64, what, idx, n, p->pos, p->f->size);
        if (memchr(p->f->base + p->pos, 0, n))
                return fail(p, -EBADMSG, "%s %zu: name '%.*s' contains a NUL byte", what, idx,
                            (int) strnlen((const char *) p->f->base + p->pos, n),
                            (const char *) p->f->base + p->pos);
        *ret_pos = p->pos;
        *ret_len = n;
        p->pos += n;
        return 0;
}

static int read_vtype(struct parser *p, const char *key, const char *what, enum gguf_vtype *ret) {
        uint32_t t;
        int r;

        r = read_u32(p, &t, what);
        if (r < 0)
                return r;
        if (t >= _GGUF_VTYPE_MAX)
                return fail(p, -EBADMSG, "key '%s': unknown value type %" PRIu32, key, t);
        *ret = (enum gguf_vtype) t;
        return 0;
}

/* Skips one string, checking its length against the file. */
static int skip_string(struct parser *p, const char *key) {
        uint64_t n;
        int r;

        r = read_u64(p, &n, "string length");
        if (r < 0)
                return r;
        if (n > remaining(p))
                return fail(p, -EBADMSG, "key '%s': string length %" PRIu64 " at offset %" PRIu64
                            " exceeds the %" PRIu64 " bytes left in the file",
                            key, n, p->pos - 8, remaining(p));
        p->pos += n;
        return 0;
}

static int parse_array(struct parser *p, struct gguf_kv *kv, const char *key) {
        uint64_t n, bytes;
        int r;

        r = read_vtype(p, key, "array element type", &kv->arr_type);
        if (r < 0)
                return r;
        /* One level only: no GGUF writer emits nested arrays for anything the
         * engine reads, and they cannot be indexed in O(1). */
        if (kv->arr_type == GGUF_VTYPE_ARRAY)
                return fail(p, -EBADMSG, "key '%s': nested arrays are not supported", key);
        r = read_u64(p, &n, "array length");
        if (r < 0)
                return r;
        kv->arr_n = n;
        kv->val_pos = p->pos;

        if (kv->arr_type != GGUF_VTYPE_STRING) {
                if (MUL_OVERFLOW(n, (uint64_t) vtype_sizes[kv->arr_type], &bytes))
                        return fail(p, -EOVERFLOW, "key '%s': array of %" PRIu64 " %s elements overflows",
                                    key, n, vtype_names[kv->arr_type]);
                if (bytes > remaining(p))
                        return fail(p, -EBADMSG, "key '%s': array of %" PRIu64 " %s elements (%" PRIu64
                                    " bytes) exceeds the %" PRIu64 " bytes left in the file",
                                    key, n, vtype_names[kv->arr_type], bytes, remaining(p));
                p->pos += bytes;
                return 0;
        }

        /* Each string takes at least its 8-byte length, which bounds the
         * offset table by the file size. */
        if (n > remaining(p) / 8)
                return fail(p, -EBADMSG, "key '%s': array of %" PRIu64 " strings exceeds the %" PRIu64
                            " bytes left in the file", key, n, remaining(p));
        kv->str_pos = malloc_multiply(n, sizeof(uint64_t));
        if (!kv->str_pos)
                return fail(p, -ENOMEM, "key '%s': out of memory for %" PRIu64 " string offsets", key, n);
        for (uint64_t i = 0; i < n; i++) {
                uint64_t len;

                kv->str_pos[i] = p->pos;
                r = read_u64(p, &len, "string length");
                if (r < 0)
                        return r;
                if (len > remaining(p))
                        return fail(p, -EBADMSG, "key '%s': element %" PRIu64 ": string length %" PRIu64
                                    " exceeds the %" PRIu64 " bytes left in the file",
                                    key, i, len, remaining(p));
                p->pos += len;
        }
        return 0;
}

static int parse_kvs(struct parser *p) {
        gguf_file *f = p->f;
        int r;

        for (size_t i = 0; i < p->n_kv; i++) {
                struct gguf_kv *kv;
                char key[128];

                r = grow((void **) &f->kvs, &p->kv_cap, i, p->n_kv, sizeof(*f->kvs));
                if (r < 0)
                        return fail(p, r, "out of memory for %zu keys", i + 1);
                kv = &f->kvs[i];
                f->n_kv = i + 1; /* so that gguf_close() frees what this kv allocates */

                snprintf(p->ctx, sizeof(p->ctx), "kv %zu", i);
                r = read_name(p, "key", i, &kv->key_pos, &kv->key_len);
                if (r < 0)
                        return r;
                /* For messages only; long keys are cut. */
                snprintf(key, sizeof(key), "%.*s", (int) MIN(kv->key_len, sizeof(key) - 1),
                         (const char *) f->base + kv->key_pos);
                snprintf(p->ctx, sizeof(p->ctx), "key '%s'", key);

                r = name_index_add(f, &f->kv_index, kv_name);
                if (r == -EEXIST)
                        return fail(p, -EBADMSG, "duplicate key '%s' (kv %zu)", key, i);
                if (r < 0)
                        return fail(p, r, "out of memory indexing %zu keys", i + 1);

                r = read_vtype(p, key, "value type", &kv->type);
                if (r < 0)
                        return r;
                kv->val_pos = p->pos;
                switch (kv->type) {
                case GGUF_VTYPE_STRING:
                        r = skip_string(p, key);
                        break;
                case GGUF_VTYPE_ARRAY:
                        r = parse_array(p, kv, key);
                        break;
                default:
                        r = skip_bytes(p, vtype_sizes[kv->type], vtype_names[kv->type]);
                        break;
                }
                if (r < 0)
                        return r;
        }
        p->ctx[0] = 0;
        return 0;
}

static int parse_alignment(struct parser *p) {
        gguf_file *f = p->f;
        uint32_t a;
        int r;

        r = gguf_get_u32(f, "general.alignment", &a);
        if (r == -ENOENT) {
                f->alignment = GGUF_DEFAULT_ALIGNMENT;
                return 0;
        }
        if (r < 0)
                return fail(p, -EBADMSG, "general.alignment is not an unsigned 32-bit integer");
        if (a == 0 || (a & (a - 1)) != 0)
                return fail(p, -EBADMSG, "general.alignment %" PRIu32 " is not a non-zero power of two", a);
        f->alignment = a;
        return 0;
}

static int parse_tensor(struct parser *p, size_t i) {
        gguf_file *f = p->f;
        const struct rbee_type_traits *traits;
        struct gguf_tensor *t;
        struct name_ref *nm;
        uint64_t row_size, rows = 1;
        int64_t nelem = 1;
        uint32_t type;
        char name[128];
        size_t cap;
        int r;

        cap = p->tensor_cap;
        r = grow((void **) &f->tensors, &cap, i, p->n_tensors, sizeof(*f->tensors));
        if (r >= 0) {
                cap = p->tensor_cap;
                r = grow((void **) &f->tensor_names, &cap, i, p->n_tensors, sizeof(*f->tensor_names));
        }
        if (r < 0)
                return fail(p, r, "out of memory for %zu tensors", i + 1);
        p->tensor_cap = cap;
        t = &f->tensors[i];
        nm = &f->tensor_names[i];
        f->n_tensors = i + 1;

        snprintf(p->ctx, sizeof(p->ctx), "tensor %zu", i);
        r = read_name(p, "tensor", i, &nm->pos, &nm->len);
        if (r < 0)
                return r;
        snprintf(name, sizeof(name), "%.*s", (int) MIN(nm->len, sizeof(name) - 1),
                 (const char *) f->base + nm->pos);
        snprintf(p->ctx, sizeof(p->ctx), "tensor '%s'", name);
        r = name_index_add(f, &f->tensor_index, tensor_name);
        if (r == -EEXIST)
                return fail(p, -EBADMSG, "duplicate tensor name '%s' (tensor %zu)", name, i);
        if (r < 0)
                return fail(p, r, "out of memory indexing %zu tensors", i + 1);

        r = read_u32(p, &t->n_dims, "tensor dimension count");
        if (r < 0)
                return r;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
                return fail(p, -EBADMSG, "tensor '%s': %" PRIu32 " dimensions, expected 1 to %d",
                            name, t->n_dims, GGUF_MAX_DIMS);
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
                t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
                r = read_u64(p, &t->ne[d], "tensor dimension");
                if (r < 0)
                        return r;
                if (t->ne[d] == 0)
                        return fail(p, -EBADMSG, "tensor '%s': dimension %" PRIu32 " is 0", name, d);
                if (t->ne[d] > INT64_MAX || MUL_OVERFLOW(nelem, (int64_t) t->ne[d], &nelem))
                        return fail(p, -EOVERFLOW, "tensor '%s': element count overflows at dimension %"
                                    PRIu32 " (%" PRIu64 ")", name, d, t->ne[d]);
        }

        r = read_u32(p, &type, "tensor type");
        if (r < 0)
                return r;
        traits = rbee_type_traits(type);
        if (!traits)
                return fail(p, -EOPNOTSUPP, "tensor '%s': unknown or unsupported tensor type %" PRIu32,
                            name, type);
        t->type = (enum rbee_type) type;
        if (t->ne[0] % traits->block_size != 0)
                return fail(p, -EBADMSG, "tensor '%s': row length %" PRIu64 " is not a multiple of the %s block size %"
                            PRIu32, name, t->ne[0], traits->name, traits->block_size);
        r = rbee_type_row_size(type, t->ne[0], &row_size);
        if (r < 0)
                return fail(p, r, "tensor '%s': cannot size a %s row of %" PRIu64 " elements",
                            name, traits->name, t->ne[0]);
        for (uint32_t d = 1; d < GGUF_MAX_DIMS; d++)
                rows *= t->ne[d]; /* cannot overflow: the element count did not */
        if (MUL_OVERFLOW(row_size, rows, &t->size))
                return fail(p, -EOVERFLOW, "tensor '%s': size of %" PRIu64 " rows of %" PRIu64 " bytes overflows",
                            name, rows, row_size);

        r = read_u64(p, &t->offset, "tensor offset");
        if (r < 0)
                return r;
        if (t->offset % f->alignment != 0)
                return fail(p, -EBADMSG, "tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
                            name, t->offset, f->alignment);
        return 0;
}

struct extent {
        uint64_t offset, size;
        size_t idx;
};

static int extent_cmp(const void *a, const void *b) {
        const struct extent *x = a, *y = b;

        if (x->offset != y->offset)
                return x->offset < y->offset ? -1 : 1;
        return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int check_extents(struct parser *p) {
        gguf_file *f = p->f;
        _cleanup_(freep) struct extent *ext = NULL;

        for (size_t i = 0; i < f->n_tensors; i++) {
                const struct gguf_tensor *t = &f->tensors[i];
                uint64_t end;

                if (ADD_OVERFLOW(t->offset, t->size, &end))
                        return fail(p, -EOVERFLOW, "tensor '%s': offset %" PRIu64 " + size %" PRIu64 " overflows",
                                    t->name, t->offset, t->size);
                if (end > f->data_size)
                        return fail(p, -EBADMSG, "tensor '%s': data [%" PRIu64 ", %" PRIu64 ") extends past end of file"
                                    " (data section of %" PRIu64 " bytes at offset %" PRIu64 ", file size %" PRIu64 ")",
                                    t->name, t->offset, end, f->data_size, f->data_offset, f->size);
        }
        if (f->n_tensors < 2)
                return 0;

        ext = malloc_multiply(f->n_tensors, sizeof(*ext));
        if (!ext)
                return fail(p, -ENOMEM, "out of memory sorting %zu tensors", f->n_tensors);
        for (size_t i = 0; i < f->n_tensors; i++)
                ext[i] = (struct extent) { f->tensors[i].offset, f->tensors[i].size, i };
        qsort(ext, f->n_tensors, sizeof(*ext), extent_cmp);
        for (size_t i = 1; i < f->n_tensors; i++)
                if (ext[i - 1].offset + ext[i - 1].size > ext[i].offset)
                        return fail(p, -EBADMSG, "tensor '%s': data [%" PRIu64 ", %" PRIu64 ") overlaps tensor '%s' [%"
                                    PRIu64 ", %" PRIu64 ")",
                                    f->tensors[ext[i].idx].name, ext[i].offset, ext[i].offset + ext[i].size,
                                    f->tensors[ext[i - 1].idx].name, ext[i - 1].offset,
                                    ext[i - 1].offset + ext[i - 1].size);
        return 0;
}

/* One allocation for every key and tensor name, NUL-terminated. */
static int copy_names(struct parser *p) {
        gguf_file *f = p->f;
        uint64_t total = 0;
        char *q;

        /* Each name came from the file and is at most NAME_MAX_LEN, so the sum
         * is below file size + count and cannot overflow. */
        for (size_t i = 0; i < f->n_kv; i++)
                total += f->kvs[i].key_len + 1;
        for (size_t i = 0; i < f->n_tensors; i++)
                total += f->tensor_names[i].len + 1;
        f->names = malloc(total ? total : 1);
        if (!f->names)
                return fail(p, -ENOMEM, "out of memory for %" PRIu64 " bytes of names", total);
        q = f->names;
        for (size_t i = 0; i < f->n_kv; i++) {
                struct gguf_kv *kv = &f->kvs[i];

                memcpy(q, f->base + kv->key_pos, kv->key_len);
                q[kv->key_len] = 0;
                kv->key = q;
                q += kv->key_len + 1;
        }
        for (size_t i = 0; i < f->n_tensors; i++) {
                struct gguf_tensor *t = &f->tensors[i];
                size_t n = f->tensor_names[i].len;

                memcpy(q, f->base + f->tensor_names[i].pos, n);
                q[n] = 0;
                t->name = q;
                q += n + 1;
        }
        return 0;
}

static int parse(struct parser *p) {
        gguf_file *f = p->f;
        uint64_t n_tensors, n_kv, need_kv, need_tensors, need;
        char magic[4];
        int r;

        if (f->size == 0)
                return fail(p, -EBADMSG, "file is empty");
        if (f->size >= 4 && memcmp(f->base, GGUF_MAGIC, 4) != 0)
                return fail(p, -EPROTONOSUPPORT, "not a GGUF file: bad magic %02x %02x %02x %02x",
                            f->base[0], f->base[1], f->base[2], f->base[3]);
        if (f->size < HEADER_SIZE)
                return fail(p, -EBADMSG, "truncated file: %" PRIu64 " bytes is too small for a GGUF header (%d bytes)",
                            f->size, HEADER_SIZE);

        r = read_bytes(p, magic, sizeof(magic), "magic");
        if (r < 0)
                return r;
        r = read_u32(p, &f->version, "version");
        if (r < 0)
                return r;
        if (f->version != 2 && f->version != 3) {
                if (f->version > 0xffff && (f->version & 0xffff) == 0)
                        return fail(p, -EPROTONOSUPPORT, "unsupported GGUF version %" PRIu32
                                    " (a big-endian file?); only versions 2 and 3 are supported", f->version);
                return fail(p, -EPROTONOSUPPORT, "unsupported GGUF version %" PRIu32
                            "; only versions 2 and 3 are supported", f->version);
        }
        r = read_u64(p, &n_tensors, "tensor count");
        if (r < 0)
                return r;
        r = read_u64(p, &n_kv, "kv count");
        if (r < 0)
                return r;

        /* Bound the counts by the bytes that could hold them before allocating. */
        if (MUL_OVERFLOW(n_kv, (uint64_t) KV_MIN_SIZE, &need_kv) || need_kv > remaining(p))
                return fail(p, -EBADMSG, "kv count %" PRIu64 " cannot fit in the %" PRIu64
                            " bytes left in the file (truncated or corrupt file)", n_kv, remaining(p));
        if (MUL_OVERFLOW(n_tensors, (uint64_t) TENSOR_MIN_SIZE, &need_tensors) || need_tensors > remaining(p))
                return fail(p, -EBADMSG, "tensor count %" PRIu64 " cannot fit in the %" PRIu64
                            " bytes left in the file (truncated or corrupt file)", n_tensors, remaining(p));
        if (ADD_OVERFLOW(need_kv, need_tensors, &need) || need > remaining(p))
                return fail(p, -EBADMSG, "kv count %" PRIu64 " and tensor count %" PRIu64
                            " cannot fit in the %" PRIu64 " bytes left in the file (truncated or corrupt file)",
                            n_kv, n_tensors, remaining(p));
        p->n_kv = (size_t) n_kv;
        p->n_tensors = (size_t) n_tensors;

        r = parse_kvs(p);
        if (r < 0)
                return r;
        r = parse_alignment(p);
        if (r < 0)
                return r;
        for (size_t i = 0; i < p->n_tensors; i++) {
                r = parse_tensor(p, i);
                if (r < 0)
                        return r;
        }
        p->ctx[0] = 0;
        r = copy_names(p);
        if (r < 0)
                return r;

        /* The data section starts at the next alignment boundary. A file with
         * no tensors may end before that boundary (writers skip the padding). */
        if (ADD_OVERFLOW(p->pos, (uint64_t) f->alignment - 1, &f->data_offset))
                return fail(p, -EOVERFLOW, "data section offset overflows");
        f->data_offset = f->data_offset / f->alignment * f->alignment;
        if (f->data_offset > f->size) {
                if (f->n_tensors > 0)
                        return fail(p, -EBADMSG, "truncated file: data section at offset %" PRIu64
                                    " starts past end of file (size %" PRIu64 ")", f->data_offset, f->size);
                f->data_offset = f->size;
        }
        f->data_size = f->size - f->data_offset;
        r = check_extents(p);
        if (r < 0)
                return r;
        for (size_t i = 0; i < f->n_tensors; i++)
                f->tensors[i].data = f->base + f->data_offset + f->tensors[i].offset;
        return 0;
}

gguf_file *gguf_close(gguf_file *f) {
        if (!f)
                return NULL;
        if (f->kvs)
                for (size_t i = 0; i < f->n_kv; i++)
                        free(f->kvs[i].str_pos);
        free(f->kvs);
        free(f->tensors);
        free(f->tensor_names);
        free(f->kv_index.slots);
        free(f->tensor_index.slots);
        free(f->names);
        if (f->mapped && f->size > 0)
                munmap((void *) f->base, f->size);
        free(f);
        return NULL;
}

static int open_common(gguf_file *f, gguf_file **ret, char *err, size_t errlen) {
        struct parser p = { .f = f, .err = err, .errlen = errlen };
        int r;

        r = parse(&p);
        if (r < 0)
                return r;
        *ret = f;
        return 0;
}

int gguf_open_memory(const void *data, size_t size, gguf_file **ret, char *err, size_t errlen) {
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        int r;

        if (err && errlen > 0)
                err[0] = 0;
        if (!data && size > 0) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "no buffer given");
                return -EINVAL;
        }
        f = calloc(1, sizeof(*f));
        if (!f) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        f->base = data;
        f->size = size;
        r = open_common(f, ret, err, errlen);
        if (r < 0)
                return r;
        TAKE_PTR(f);
        return 0;
}

int gguf_open(const char *path, gguf_file **ret, char *err, size_t errlen) {
        _cleanup_(gguf_closep) gguf_file *f = NULL;
        _cleanup_(closep) int fd = -EBADF;
        char msg[512] = "";
        struct stat st;
        void *m;
        int r;

        if (err && errlen > 0)
                err[0] = 0;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                if (err && errlen > 0)
                        snprintf(err, errlen, "failed to open '%s': %s", path, strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                if (err && errlen > 0)
                        snprintf(err, errlen, "failed to stat '%s': %s", path, strerror(-r));
                return r;
        }
        if (S_ISDIR(st.st_mode)) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "'%s' is a directory", path);
                return -EISDIR;
        }
        if (!S_ISREG(st.st_mode)) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "'%s' is not a regular file", path);
                return -EINVAL;
        }
        if (st.st_size == 0) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "%s: file is empty", path);
                return -EBADMSG;
        }
        if ((uint64_t) st.st_size > SIZE_MAX) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "%s: file of %jd bytes is too large to map", path, (intmax_t) st.st_size);
                return -EFBIG;
        }

        f = calloc(1, sizeof(*f));
        if (!f) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        m = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
                r = -errno;
                if (err && errlen > 0)
                        snprintf(err, errlen, "failed to map '%s': %s", path, strerror(-r));
                return r;
        }
        f->base = m;
        f->size = (uint64_t) st.st_size;
        f->mapped = true;
        /* The parser walks the header front to back and then the engine reads
         * weights layer by layer; let the kernel read ahead as usual. */

        r = open_common(f, ret, msg, sizeof(msg));
        if (r < 0) {
                if (err && errlen > 0)
                        snprintf(err, errlen, "%s: %s", path, msg);
                return r;
        }
        TAKE_PTR(f);
        return 0;
}

uint32_t gguf_version(const gguf_file *f) {
        return f->version;
}

uint64_t gguf_file_size(const gguf_file *f) {
        return f->size;
}

uint32_t gguf_alignment(const gguf_file *f) {
        return f->alignment;
}

const void *gguf_data_base(const gguf_file *f) {
        return f->base + f->data_offset;
}

uint64_t gguf_data_size(const gguf_file *f) {
        return f->data_size;
}

size_t gguf_n_kv(const gguf_file *f) {
        return f->n_kv;
}

const char *gguf_kv_key(const gguf_file *f, size_t i) {
        return i < f->n_kv ? f->kvs[i].key : NULL;
}

enum gguf_vtype gguf_kv_type(const gguf_file *f, size_t i) {
        return i < f->n_kv ? f->kvs[i].type : _GGUF_VTYPE_MAX;
}

int gguf_find_key(const gguf_file *f, const char *key) {
        ssize_t i;

        if (!key)
                return -EINVAL;
        i = name_index_find(f, &f->kv_index, kv_name, key, strlen(key));
        if (i < 0)
                return -ENOENT;
        if (i > INT32_MAX)
                return -E2BIG;
        return (int) i;
}

static const struct gguf_kv *find_kv(const gguf_file *f, const char *key) {
        ssize_t i;

        if (!key)
                return NULL;
        i = name_index_find(f, &f->kv_index, kv_name, key, strlen(key));
        return i < 0 ? NULL : &f->kvs[i];
}

/* Reads an integer of type t at p as either signed or unsigned 64-bit.
 * Returns false for a non-integer type. */
static bool read_int(enum gguf_vtype t, const uint8_t *p, bool *ret_signed, int64_t *ret_s, uint64_t *ret_u) {
        union {
                uint8_t u8;
                int8_t i8;
                uint16_t u16;
                int16_t i16;
                uint32_t u32;
                int32_t i32;
                uint64_t u64;
                int64_t i64;
        } v;

        switch (t) {
        case GGUF_VTYPE_UINT8:
                memcpy(&v.u8, p, 1);
                *ret_signed = false, *ret_u = v.u8;
                return true;
        case GGUF_VTYPE_INT8:
                memcpy(&v.i8, p, 1);
                *ret_signed = true, *ret_s = v.i8;
                return true;
        case GGUF_VTYPE_UINT16:
                memcpy(&v.u16, p, 2);
                *ret_signed = false, *ret_u = v.u16;
                return true;
        case GGUF_VTYPE_INT16:
                memcpy(&v.i16, p, 2);
                *ret_signed = true, *ret_s = v.i16;
                return true;
        case GGUF_VTYPE_UINT32:
                memcpy(&v.u32, p, 4);
                *ret_signed = false, *ret_u = v.u32;
                return true;
        case GGUF_VTYPE_INT32:
                memcpy(&v.i32, p, 4);
                *ret_signed = true, *ret_s = v.i32;
                return true;
        case GGUF_VTYPE_UINT64:
                memcpy(&v.u64, p, 8);
                *ret_signed = false, *ret_u = v.u64;
                return true;
        case GGUF_VTYPE_INT64:
                memcpy(&v.i64, p, 8);
                *ret_signed = true, *ret_s = v.i64;
                return true;
        default:
                return false;
        }
}

/* An integer value as a checked range: fits [lo, hi]? */
static int int_in_range(enum gguf_vtype t, const uint8_t *p, int64_t lo, uint64_t hi, bool *ret_neg,
                        uint64_t *ret_mag) {
        bool is_signed;
        int64_t s = 0;
        uint64_t u = 0;

        if (!read_int(t, p, &is_signed, &s, &u))
                return -EBADMSG;
        if (is_signed && s < 0) {
                if (s < lo)
                        return -EBADMSG;
                *ret_neg = true;
                *ret_mag = (uint64_t) -(s + 1) + 1; /* |s| without overflowing INT64_MIN */
                return 0;
        }
        if (is_signed)
                u = (uint64_t) s;
        if (u > hi)
                return -EBADMSG;
        *ret_neg = false;
        *ret_mag = u;
        return 0;
}

static int get_int(const gguf_file *f, const char *key, int64_t lo, uint64_t hi, bool *ret_neg,
                   uint64_t *ret_mag) {
        const struct gguf_kv *kv = find_kv(f, key);

        if (!kv)
                return -ENOENT;
        return int_in_range(kv->type, f->base + kv->val_pos, lo, hi, ret_neg, ret_mag);
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *ret) {
        uint64_t m;
        bool neg;
        int r;

        r = get_int(f, key, 0, UINT32_MAX, &neg, &m);
        if (r < 0)
                return r;
        *ret = (uint32_t) m;
        return 0;
}

int gguf_get_i32(const gguf_file *f, const char *key, int32_t *ret) {
        uint64_t m;
        bool neg;
        int r;

        r = get_int(f, key, INT32_MIN, INT32_MAX, &neg, &m);
        if (r < 0)
                return r;
        *ret = neg ? (int32_t) -(int64_t) m : (int32_t) m;
        return 0;
}

int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *ret) {
        uint64_t m;
        bool neg;
        int r;

        r = get_int(f, key, 0, UINT64_MAX, &neg, &m);
        if (r < 0)
                return r;
        *ret = m;
        return 0;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *ret) {
        const struct gguf_kv *kv = find_kv(f, key);

        if (!kv)
                return -ENOENT;
        if (kv->type == GGUF_VTYPE_FLOAT32) {
                memcpy(ret, f->base + kv->val_pos, sizeof(float));
                return 0;
        }
        if (kv->type == GGUF_VTYPE_FLOAT64) {
                double d;

                memcpy(&d, f->base + kv->val_pos, sizeof(d));
                *ret = (float) d;
                return 0;
        }
        return -EBADMSG;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *ret) {
        const struct gguf_kv *kv = find_kv(f, key);

        if (!kv)
                return -ENOENT;
        if (kv->type != GGUF_VTYPE_BOOL)
                return -EBADMSG;
        *ret = f->base[kv->val_pos] != 0;
        return 0;
}

static struct gguf_str str_at(const gguf_file *f, uint64_t pos) {
        uint64_t n;

        memcpy(&n, f->base + pos, sizeof(n));
        return (struct gguf_str) { (const char *) f->base + pos + 8, n };
}

int gguf_get_str(const gguf_file *f, const char *key, struct gguf_str *ret) {
        const struct gguf_kv *kv = find_kv(f, key);

        if (!kv)
                return -ENOENT;
        if (kv->type != GGUF_VTYPE_STRING)
                return -EBADMSG;
        *ret = str_at(f, kv->val_pos);
        return 0;
}

static const struct gguf_kv *find_array(const gguf_file *f, const char *key, int *ret_r) {
        const struct gguf_kv *kv = find_kv(f, key);

        if (!kv) {
                *ret_r = -ENOENT;
                return NULL;
        }
        if (kv->type != GGUF_VTYPE_ARRAY) {
                *ret_r = -EBADMSG;
                return NULL;
        }
        return kv;
}

int gguf_get_arr_info(const gguf_file *f, const char *key, enum gguf_vtype *ret_type, uint64_t *ret_n) {
        const struct gguf_kv *kv;
        int r;

        kv = find_array(f, key, &r);
        if (!kv)
                return r;
        if (ret_type)
                *ret_type = kv->arr_type;
        if (ret_n)
                *ret_n = kv->arr_n;
        return 0;
}

int gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, struct gguf_str *ret) {
        const struct gguf_kv *kv;
        int r;

        kv = find_array(f, key, &r);
        if (!kv)
                return r;
        if (kv->arr_type != GGUF_VTYPE_STRING)
                return -EBADMSG;
        if (i >= kv->arr_n)
                return -ERANGE;
        *ret = str_at(f, kv->str_pos[i]);
        return 0;
}

static bool vtype_is_int(enum gguf_vtype t) {
        return vtype_sizes[t] > 0 && t != GGUF_VTYPE_FLOAT32 && t != GGUF_VTYPE_FLOAT64 && t != GGUF_VTYPE_BOOL;
}

int gguf_get_arr_f32(const gguf_file *f, const char *key, float *out, uint64_t n) {
        const struct gguf_kv *kv;
        const uint8_t *p;
        size_t esz;
        int r;

        kv = find_array(f, key, &r);
        if (!kv)
                return r;
        if (kv->arr_type != GGUF_VTYPE_FLOAT32 && kv->arr_type != GGUF_VTYPE_FLOAT64 && !vtype_is_int(kv->arr_type))
                return -EBADMSG;
        if (kv->arr_n != n)
                return -EBADMSG;
        esz = vtype_sizes[kv->arr_type];
        p = f->base + kv->val_pos;
        for (uint64_t i = 0; i < n; i++) {
                const uint8_t *e = p + i * esz; /* n * esz bytes were checked at open */
                bool is_signed = false;
                int64_t s = 0;
                uint64_t u = 0;
                double d;
                float v;

                switch (kv->arr_type) {
                case GGUF_VTYPE_FLOAT32:
                        memcpy(&v, e, sizeof(v));
                        out[i] = v;
                        break;
                case GGUF_VTYPE_FLOAT64:
                        memcpy(&d, e, sizeof(d));
                        out[i] = (float) d;
                        break;
                default:
                        (void) read_int(kv->arr_type, e, &is_signed, &s, &u);
                        out[i] = is_signed ? (float) s : (float) u;
                        break;
                }
        }
        return 0;
}

int gguf_get_arr_i32(const gguf_file *f, const char *key, int32_t *out, uint64_t n) {
        const struct gguf_kv *kv;
        const uint8_t *p;
        size_t esz;
        int r;

        kv = find_array(f, key, &r);
        if (!kv)
                return r;
        if (!vtype_is_int(kv->arr_type))
                return -EBADMSG;
        if (kv->arr_n != n)
                return -EBADMSG;
        esz = vtype_sizes[kv->arr_type];
        p = f->base + kv->val_pos;
        /* Check every element first so that out is untouched on failure. */
        for (int pass = 0; pass < 2; pass++)
                for (uint64_t i = 0; i < n; i++) {
                        uint64_t m;
                        bool neg;

                        r = int_in_range(kv->arr_type, p + i * esz, INT32_MIN, INT32_MAX, &neg, &m);
                        if (r < 0)
                                return r;
                        if (pass == 1)
                                out[i] = neg ? (int32_t) -(int64_t) m : (int32_t) m;
                }
        return 0;
}

size_t gguf_n_tensors(const gguf_file *f) {
        return f->n_tensors;
}

const struct gguf_tensor *gguf_get_tensor(const gguf_file *f, size_t i) {
        return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const struct gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
        ssize_t i;

        if (!name)
                return NULL;
        i = name_index_find(f, &f->tensor_index, tensor_name, name, strlen(name));
        return i < 0 ? NULL : &f->tensors[i];
}
