/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf-writer.h"
#include "macros.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_VERSION 3
#define OUT_BUF_SIZE (1u << 20)
#define DEFAULT_CHUNK_SIZE (4u << 20)

/* A growable byte buffer for serialized key/value payloads. */
struct bytes {
        uint8_t *p;
        size_t n, cap;
};

struct kv {
        char *key;
        size_t key_len;
        enum gguf_vtype type;
        struct bytes payload; /* everything after the type field */
};

struct tensor {
        char *name;
        size_t name_len;
        uint32_t n_dims;
        uint64_t ne[GGUF_MAX_DIMS];
        enum rbee_type type;
        uint64_t row_size, n_rows, size, offset;
        const void *data;
        gguf_writer_rows_fn fn;
        void *userdata;
};

/* Open addressing over indices into kvs[] or tensors[], so duplicate checks
 * stay O(1) for models with thousands of tensors. Slots hold index + 1. */
struct name_index {
        size_t *slots;
        size_t cap;
};

struct gguf_writer {
        struct kv *kvs;
        size_t n_kv, cap_kv;
        struct name_index kv_index;

        struct tensor *tensors;
        size_t n_tensors, cap_tensors;
        struct name_index tensor_index;

        uint32_t alignment;
        uint64_t data_size; /* aligned end of the last tensor */

        gguf_writer_progress_fn progress;
        void *progress_userdata;
        size_t chunk_size;
};

/* Output: a buffer in front of write(2), with the running offset. */
struct out {
        int fd;
        uint8_t *buf;
        size_t n;
        uint64_t written;
};

static uint64_t hash_name(const char *s, size_t n) {
        uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */

        for (size_t i = 0; i < n; i++) {
                h ^= (uint8_t) s[i];
                h *= 0x100000001b3ULL;
        }
        return h;
}

typedef const char *(*name_at_fn)(const gguf_writer *w, size_t i, size_t *ret_len);

static const char *kv_name_at(const gguf_writer *w, size_t i, size_t *ret_len) {
        *ret_len = w->kvs[i].key_len;
        return w->kvs[i].key;
}

static const char *tensor_name_at(const gguf_writer *w, size_t i, size_t *ret_len) {
        *ret_len = w->tensors[i].name_len;
        return w->tensors[i].name;
}

static size_t *name_index_slot(const gguf_writer *w, const struct name_index *ix, name_at_fn at,
                               const char *s, size_t n) {
        size_t mask = ix->cap - 1;

        for (size_t h = (size_t) hash_name(s, n) & mask;; h = (h + 1) & mask) {
                size_t len;
                const char *name;

                if (ix->slots[h] == 0)
                        return &ix->slots[h];
                name = at(w, ix->slots[h] - 1, &len);
                if (len == n && memcmp(name, s, n) == 0)
                        return &ix->slots[h];
        }
}

static bool name_index_contains(const gguf_writer *w, const struct name_index *ix, name_at_fn at,
                                const char *s, size_t n) {
        if (ix->cap == 0)
                return false;
        return *name_index_slot(w, ix, at, s, n) != 0;
}

/* Makes room for one more of count entries (kept under half full). */
static int name_index_reserve(const gguf_writer *w, struct name_index *ix, name_at_fn at, size_t count) {
        struct name_index nix;
        size_t want;

        if (ix->cap > 0 && (count + 1) * 2 <= ix->cap)
                return 0;
        want = ix->cap ? ix->cap * 2 : 64;
        while ((count + 1) * 2 > want) {
                if (want > SIZE_MAX / 2)
                        return -ENOMEM;
                want *= 2;
        }
        nix.cap = want;
        nix.slots = calloc(want, sizeof(size_t));
        if (!nix.slots)
                return -ENOMEM;
        for (size_t i = 0; i < count; i++) {
                size_t len;
                const char *name = at(w, i, &len);

                *name_index_slot(w, &nix, at, name, len) = i + 1;
        }
        free(ix->slots);
        *ix = nix;
        return 0;
}

static int bytes_reserve(struct bytes *b, size_t more) {
        size_t need, cap;
        uint8_t *p;

        if (ADD_OVERFLOW(b->n, more, &need))
                return -EOVERFLOW;
        if (need <= b->cap)
                return 0;
        cap = b->cap ? b->cap : 16;
        while (cap < need) {
                if (cap > SIZE_MAX / 2) {
                        cap = need;
                        break;
                }
                cap *= 2;
        }
        p = realloc(b->p, cap);
        if (!p)
                return -ENOMEM;
        b->p = p;
        b->cap = cap;
        return 0;
}

static int bytes_put(struct bytes *b, const void *data, size_t n) {
        int r = bytes_reserve(b, n);

        if (r < 0)
                return r;
        if (n > 0)
                memcpy(b->p + b->n, data, n);
        b->n += n;
        return 0;
}

/* GGUF is little-endian; store integers byte by byte so the writer does not
 * depend on the host's byte order. */
static void le_store(uint8_t *p, uint64_t v, size_t n) {
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

static int bytes_put_le(struct bytes *b, uint64_t v, size_t n) {
        uint8_t tmp[8];

        le_store(tmp, v, n);
        return bytes_put(b, tmp, n);
}

static int bytes_put_str(struct bytes *b, const char *s, size_t n) {
        int r = bytes_put_le(b, n, 8);

        if (r < 0)
                return r;
        return bytes_put(b, s, n);
}

static size_t vtype_size(enum gguf_vtype t) {
        switch (t) {
        case GGUF_VTYPE_UINT8:
        case GGUF_VTYPE_INT8:
        case GGUF_VTYPE_BOOL:
                return 1;
        case GGUF_VTYPE_UINT16:
        case GGUF_VTYPE_INT16:
                return 2;
        case GGUF_VTYPE_UINT32:
        case GGUF_VTYPE_INT32:
        case GGUF_VTYPE_FLOAT32:
                return 4;
        case GGUF_VTYPE_UINT64:
        case GGUF_VTYPE_INT64:
        case GGUF_VTYPE_FLOAT64:
                return 8;
        default:
                return 0;
        }
}

int gguf_writer_new(gguf_writer **ret) {
        gguf_writer *w;

        if (!ret)
                return -EINVAL;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->alignment = GGUF_DEFAULT_ALIGNMENT;
        w->chunk_size = DEFAULT_CHUNK_SIZE;
        *ret = w;
        return 0;
}

gguf_writer *gguf_writer_free(gguf_writer *w) {
        if (!w)
                return NULL;
        for (size_t i = 0; i < w->n_kv; i++) {
                free(w->kvs[i].key);
                free(w->kvs[i].payload.p);
        }
        free(w->kvs);
        free(w->kv_index.slots);
        for (size_t i = 0; i < w->n_tensors; i++)
                free(w->tensors[i].name);
        free(w->tensors);
        free(w->tensor_index.slots);
        free(w);
        return NULL;
}

static int check_key(const gguf_writer *w, const char *key, size_t *ret_len) {
        size_t n;

        if (!w || !key)
                return -EINVAL;
        n = strnlen(key, GGUF_WRITER_MAX_KEY + 1);
        if (n == 0 || n > GGUF_WRITER_MAX_KEY)
                return -EINVAL;
        if (name_index_contains(w, &w->kv_index, kv_name_at, key, n))
                return -EEXIST;
        *ret_len = n;
        return 0;
}

/* Takes ownership of payload on success and on failure. */
static int add_kv(gguf_writer *w, const char *key, size_t key_len, enum gguf_vtype type, struct bytes *payload) {
        _cleanup_(freep) uint8_t *owned = payload->p;
        _cleanup_(freep) char *k = NULL;
        int r;

        payload->p = NULL;
        if (w->n_kv == w->cap_kv) {
                size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
                struct kv *kvs = reallocarray(w->kvs, cap, sizeof(*kvs));

                if (!kvs)
                        return -ENOMEM;
                w->kvs = kvs;
                w->cap_kv = cap;
        }
        r = name_index_reserve(w, &w->kv_index, kv_name_at, w->n_kv);
        if (r < 0)
                return r;
        k = strndup(key, key_len);
        if (!k)
                return -ENOMEM;
        w->kvs[w->n_kv] = (struct kv) {
                .key = TAKE_PTR(k),
                .key_len = key_len,
                .type = type,
                .payload = { TAKE_PTR(owned), payload->n, payload->cap },
        };
        *name_index_slot(w, &w->kv_index, kv_name_at, key, key_len) = w->n_kv + 1;
        w->n_kv++;
        return 0;
}

static int add_scalar(gguf_writer *w, const char *key, enum gguf_vtype type, uint64_t bits) {
        struct bytes b = {};
        size_t n;
        int r;

        r = check_key(w, key, &n);
        if (r < 0)
                return r;
        r = bytes_put_le(&b, bits, vtype_size(type));
        if (r < 0) {
                free(b.p);
                return r;
        }
        return add_kv(w, key, n, type, &b);
}

int gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v) {
        return add_scalar(w, key, GGUF_VTYPE_UINT8, v);
}

int gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v) {
        return add_scalar(w, key, GGUF_VTYPE_INT8, (uint8_t) v);
}

int gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v) {
        return add_scalar(w, key, GGUF_VTYPE_UINT16, v);
}

int gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v) {
        return add_scalar(w, key, GGUF_VTYPE_INT16, (uint16_t) v);
}

int gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v) {
        return add_scalar(w, key, GGUF_VTYPE_UINT32, v);
}

int gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v) {
        return add_scalar(w, key, GGUF_VTYPE_INT32, (uint32_t) v);
}

int gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v) {
        return add_scalar(w, key, GGUF_VTYPE_UINT64, v);
}

int gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v) {
        return add_scalar(w, key, GGUF_VTYPE_INT64, (uint64_t) v);
}

int gguf_writer_add_f32(gguf_writer *w, const char *key, float v) {
        uint32_t bits;

        memcpy(&bits, &v, sizeof(bits));
        return add_scalar(w, key, GGUF_VTYPE_FLOAT32, bits);
}

int gguf_writer_add_f64(gguf_writer *w, const char *key, double v) {
        uint64_t bits;

        memcpy(&bits, &v, sizeof(bits));
        return add_scalar(w, key, GGUF_VTYPE_FLOAT64, bits);
}

int gguf_writer_add_bool(gguf_writer *w, const char *key, bool v) {
        return add_scalar(w, key, GGUF_VTYPE_BOOL, v ? 1 : 0);
}

int gguf_writer_add_strn(gguf_writer *w, const char *key, const char *s, size_t n) {
        struct bytes b = {};
        size_t kn;
        int r;

        if (!s && n > 0)
                return -EINVAL;
        r = check_key(w, key, &kn);
        if (r < 0)
                return r;
        r = bytes_put_str(&b, s, n);
        if (r < 0) {
                free(b.p);
                return r;
        }
        return add_kv(w, key, kn, GGUF_VTYPE_STRING, &b);
}

int gguf_writer_add_str(gguf_writer *w, const char *key, const char *s) {
        if (!s)
                return -EINVAL;
        return gguf_writer_add_strn(w, key, s, strlen(s));
}

int gguf_writer_add_arr(gguf_writer *w, const char *key, enum gguf_vtype type, const void *data, size_t n) {
        struct bytes b = {};
        size_t kn, esz, total;
        int r;

        esz = vtype_size(type);
        if (esz == 0 || (!data && n > 0))
                return -EINVAL;
        if (MUL_OVERFLOW(esz, n, &total))
                return -EOVERFLOW;
        r = check_key(w, key, &kn);
        if (r < 0)
                return r;
        r = bytes_reserve(&b, 4 + 8 + total);
        if (r >= 0)
                r = bytes_put_le(&b, type, 4);
        if (r >= 0)
                r = bytes_put_le(&b, n, 8);
        /* Element by element, for the same byte-order independence as scalars. */
        for (size_t i = 0; r >= 0 && i < n; i++) {
                uint64_t v = 0;

                switch (esz) {
                case 1: v = ((const uint8_t *) data)[i]; break;
                case 2: v = ((const uint16_t *) data)[i]; break;
                case 4: v = ((const uint32_t *) data)[i]; break;
                case 8: v = ((const uint64_t *) data)[i]; break;
                }
                if (type == GGUF_VTYPE_BOOL)
                        v = v != 0;
                r = bytes_put_le(&b, v, esz);
        }
        if (r < 0) {
                free(b.p);
                return r;
        }
        return add_kv(w, key, kn, GGUF_VTYPE_ARRAY, &b);
}

int gguf_writer_add_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n) {
        return gguf_writer_add_arr(w, key, GGUF_VTYPE_INT32, v, n);
}

int gguf_writer_add_arr_u32(gguf_writer *w, const char *key, const uint32_t *v, size_t n) {
        return gguf_writer_add_arr(w, key, GGUF_VTYPE_UINT32, v, n);
}

int gguf_writer_add_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n) {
        return gguf_writer_add_arr(w, key, GGUF_VTYPE_FLOAT32, v, n);
}

typedef struct gguf_str (*str_at_fn)(const void *v, size_t i);

static struct gguf_str cstr_at(const void *v, size_t i) {
        const char *s = ((const char *const *) v)[i];

        return (struct gguf_str) { s, s ? strlen(s) : 0 };
}

static struct gguf_str gstr_at(const void *v, size_t i) {
        return ((const struct gguf_str *) v)[i];
}

static int add_arr_str(gguf_writer *w, const char *key, const void *v, size_t n, str_at_fn at) {
        struct bytes b = {};
        size_t kn;
        int r;

        if (!v && n > 0)
                return -EINVAL;
        r = check_key(w, key, &kn);
        if (r < 0)
                return r;
        r = bytes_put_le(&b, GGUF_VTYPE_STRING, 4);
        if (r >= 0)
                r = bytes_put_le(&b, n, 8);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                struct gguf_str s = at(v, i);

                if (!s.s && s.n > 0)
                        r = -EINVAL;
                else if (s.n > SIZE_MAX)
                        r = -EOVERFLOW;
                else
                        r = bytes_put_str(&b, s.s, (size_t) s.n);
        }
        if (r < 0) {
                free(b.p);
                return r;
        }
        return add_kv(w, key, kn, GGUF_VTYPE_ARRAY, &b);
}

int gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n) {
        if (v)
                for (size_t i = 0; i < n; i++)
                        if (!v[i])
                                return -EINVAL;
        return add_arr_str(w, key, v, n, cstr_at);
}

int gguf_writer_add_arr_strn(gguf_writer *w, const char *key, const struct gguf_str *v, size_t n) {
        return add_arr_str(w, key, v, n, gstr_at);
}

static int copy_int_array(gguf_writer *w, const gguf_file *f, const char *key, enum gguf_vtype et, size_t n) {
        _cleanup_(freep) int32_t *v = NULL;
        _cleanup_(freep) uint8_t *packed = NULL;
        size_t esz = vtype_size(et);
        int r;

        v = malloc_multiply(n, sizeof(int32_t));
        packed = malloc_multiply(n, esz);
        if (!v || !packed)
                return -ENOMEM;
        r = gguf_get_arr_i32(f, key, v, n);
        if (r == -EBADMSG)
                return -EOPNOTSUPP; /* values beyond int32 */
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                int64_t x = v[i];

                /* The reader validated the values against their own type, so
                 * narrowing back to it is exact. */
                switch (esz) {
                case 1: packed[i] = (uint8_t) x; break;
                case 2: ((uint16_t *) packed)[i] = (uint16_t) x; break;
                case 4: ((uint32_t *) packed)[i] = (uint32_t) x; break;
                case 8: ((uint64_t *) packed)[i] = (uint64_t) x; break;
                }
        }
        return gguf_writer_add_arr(w, key, et, packed, n);
}

static int copy_array(gguf_writer *w, const gguf_file *f, const char *key) {
        enum gguf_vtype et;
        uint64_t n64;
        size_t n;
        int r;

        r = gguf_get_arr_info(f, key, &et, &n64);
        if (r < 0)
                return r;
        if (n64 > SIZE_MAX / 16)
                return -EOVERFLOW;
        n = (size_t) n64;

        switch (et) {
        case GGUF_VTYPE_STRING: {
                _cleanup_(freep) struct gguf_str *v = malloc_multiply(n, sizeof(struct gguf_str));

                if (!v)
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++) {
                        r = gguf_get_arr_str(f, key, i, &v[i]);
                        if (r < 0)
                                return r;
                }
                return gguf_writer_add_arr_strn(w, key, v, n);
        }
        case GGUF_VTYPE_FLOAT32:
        case GGUF_VTYPE_FLOAT64: {
                _cleanup_(freep) float *v = malloc_multiply(n, sizeof(float));

                if (!v)
                        return -ENOMEM;
                r = gguf_get_arr_f32(f, key, v, n);
                if (r < 0)
                        return r;
                if (et == GGUF_VTYPE_FLOAT32)
                        return gguf_writer_add_arr_f32(w, key, v, n);
                _cleanup_(freep) double *d = malloc_multiply(n, sizeof(double));
                if (!d)
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++)
                        d[i] = v[i];
                return gguf_writer_add_arr(w, key, GGUF_VTYPE_FLOAT64, d, n);
        }
        case GGUF_VTYPE_UINT8:
        case GGUF_VTYPE_INT8:
        case GGUF_VTYPE_UINT16:
        case GGUF_VTYPE_INT16:
        case GGUF_VTYPE_UINT32:
        case GGUF_VTYPE_INT32:
        case GGUF_VTYPE_UINT64:
        case GGUF_VTYPE_INT64:
                return copy_int_array(w, f, key, et, n);
        default:
                return -EOPNOTSUPP;
        }
}

int gguf_writer_copy_kv(gguf_writer *w, const gguf_file *f, size_t i) {
        const char *key;
        int r;

        if (!w || !f || i >= gguf_n_kv(f))
                return -EINVAL;
        key = gguf_kv_key(f, i);

        switch (gguf_kv_type(f, i)) {
        case GGUF_VTYPE_UINT8:
        case GGUF_VTYPE_UINT16:
        case GGUF_VTYPE_UINT32: {
                uint32_t v;

                r = gguf_get_u32(f, key, &v);
                if (r < 0)
                        return r;
                return add_scalar(w, key, gguf_kv_type(f, i), v);
        }
        case GGUF_VTYPE_INT8:
        case GGUF_VTYPE_INT16:
        case GGUF_VTYPE_INT32: {
                int32_t v;

                r = gguf_get_i32(f, key, &v);
                if (r < 0)
                        return r;
                return add_scalar(w, key, gguf_kv_type(f, i), (uint64_t) (int64_t) v);
        }
        case GGUF_VTYPE_UINT64: {
                uint64_t v;

                r = gguf_get_u64(f, key, &v);
                if (r < 0)
                        return r;
                return gguf_writer_add_u64(w, key, v);
        }
        case GGUF_VTYPE_INT64: {
                uint64_t u;
                int32_t s;

                /* The reader has no signed 64-bit getter: non-negative values
                 * come through u64, negative ones only when they fit int32. */
                if (gguf_get_u64(f, key, &u) >= 0) {
                        if (u > INT64_MAX)
                                return -EOVERFLOW;
                        return gguf_writer_add_i64(w, key, (int64_t) u);
                }
                r = gguf_get_i32(f, key, &s);
                if (r < 0)
                        return -EOPNOTSUPP;
                return gguf_writer_add_i64(w, key, s);
        }
        case GGUF_VTYPE_FLOAT32:
        case GGUF_VTYPE_FLOAT64: {
                float v;

                r = gguf_get_f32(f, key, &v);
                if (r < 0)
                        return r;
                if (gguf_kv_type(f, i) == GGUF_VTYPE_FLOAT64)
                        return gguf_writer_add_f64(w, key, v);
                return gguf_writer_add_f32(w, key, v);
        }
        case GGUF_VTYPE_BOOL: {
                bool v;

                r = gguf_get_bool(f, key, &v);
                if (r < 0)
                        return r;
                return gguf_writer_add_bool(w, key, v);
        }
        case GGUF_VTYPE_STRING: {
                struct gguf_str s;

                r = gguf_get_str(f, key, &s);
                if (r < 0)
                        return r;
                if (s.n > SIZE_MAX)
                        return -EOVERFLOW;
                return gguf_writer_add_strn(w, key, s.s, (size_t) s.n);
        }
        case GGUF_VTYPE_ARRAY:
                return copy_array(w, f, key);
        default:
                return -EOPNOTSUPP;
        }
}

bool gguf_writer_has_key(const gguf_writer *w, const char *key) {
        if (!w || !key)
                return false;
        return name_index_contains(w, &w->kv_index, kv_name_at, key, strlen(key));
}

size_t gguf_writer_n_kv(const gguf_writer *w) {
        return w ? w->n_kv : 0;
}

size_t gguf_writer_n_tensors(const gguf_writer *w) {
        return w ? w->n_tensors : 0;
}

int gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment) {
        int r;

        if (!w || alignment == 0 || alignment > 65536 || (alignment & (alignment - 1)) != 0)
                return -EINVAL;
        if (w->n_tensors > 0)
                return -EBUSY;
        if (alignment == w->alignment)
                return 0;
        if (gguf_writer_has_key(w, "general.alignment")) {
                /* Rewrite the recorded value in place: the key was ours. */
                for (size_t i = 0; i < w->n_kv; i++)
                        if (strcmp(w->kvs[i].key, "general.alignment") == 0) {
                                if (w->kvs[i].type != GGUF_VTYPE_UINT32)
                                        return -EEXIST;
                                le_store(w->kvs[i].payload.p, alignment, 4);
                        }
        } else {
                r = gguf_writer_add_u32(w, "general.alignment", alignment);
                if (r < 0)
                        return r;
        }
        w->alignment = alignment;
        return 0;
}

static int add_tensor(gguf_writer *w, const char *name, enum rbee_type type, uint32_t n_dims, const uint64_t *ne,
                      const void *data, gguf_writer_rows_fn fn, void *userdata) {
        _cleanup_(freep) char *copy = NULL;
        struct tensor t = {};
        uint64_t rows = 1, size, offset, end;
        size_t n;
        int r;

        if (!w || !name || !ne || n_dims < 1 || n_dims > GGUF_MAX_DIMS)
                return -EINVAL;
        n = strnlen(name, GGUF_WRITER_MAX_TENSOR_NAME + 1);
        if (n == 0 || n > GGUF_WRITER_MAX_TENSOR_NAME)
                return -EINVAL;
        if (!rbee_type_traits((uint32_t) type))
                return -EINVAL;
        for (uint32_t d = 0; d < n_dims; d++) {
                if (ne[d] == 0 || ne[d] > INT64_MAX) /* ggml keeps dims as int64 */
                        return -EINVAL;
                if (d > 0 && MUL_OVERFLOW(rows, ne[d], &rows))
                        return -EOVERFLOW;
        }
        r = rbee_type_row_size((uint32_t) type, ne[0], &t.row_size);
        if (r == -EBADMSG)
                return -EINVAL; /* ne0 is not a multiple of the block size */
        if (r < 0)
                return r;
        if (MUL_OVERFLOW(t.row_size, rows, &size) || MUL_OVERFLOW(rows, ne[0], &(uint64_t) { 0 }))
                return -EOVERFLOW;
        offset = w->data_size;
        if (ADD_OVERFLOW(offset, size, &end) || end > UINT64_MAX - w->alignment)
                return -EOVERFLOW;
        end = ALIGN_TO(end, (uint64_t) w->alignment);
        if (name_index_contains(w, &w->tensor_index, tensor_name_at, name, n))
                return -EEXIST;

        if (w->n_tensors == w->cap_tensors) {
                size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
                struct tensor *ts = reallocarray(w->tensors, cap, sizeof(*ts));

                if (!ts)
                        return -ENOMEM;
                w->tensors = ts;
                w->cap_tensors = cap;
        }
        r = name_index_reserve(w, &w->tensor_index, tensor_name_at, w->n_tensors);
        if (r < 0)
                return r;
        copy = strndup(name, n);
        if (!copy)
                return -ENOMEM;

        t.name = TAKE_PTR(copy);
        t.name_len = n;
        t.n_dims = n_dims;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
                t.ne[d] = d < n_dims ? ne[d] : 1;
        t.type = type;
        t.n_rows = rows;
        t.size = size;
        t.offset = offset;
        t.data = data;
        t.fn = fn;
        t.userdata = userdata;
        w->tensors[w->n_tensors] = t;
        *name_index_slot(w, &w->tensor_index, tensor_name_at, name, n) = w->n_tensors + 1;
        w->n_tensors++;
        w->data_size = end;
        return 0;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, enum rbee_type type, uint32_t n_dims,
                           const uint64_t *ne, const void *data) {
        if (!data)
                return -EINVAL;
        return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

int gguf_writer_add_tensor_cb(gguf_writer *w, const char *name, enum rbee_type type, uint32_t n_dims,
                              const uint64_t *ne, gguf_writer_rows_fn fn, void *userdata) {
        if (!fn)
                return -EINVAL;
        return add_tensor(w, name, type, n_dims, ne, NULL, fn, userdata);
}

static uint64_t header_size(const gguf_writer *w) {
        /* Every term is bounded by what add_* accepted, and each allocation
         * behind it succeeded, so the sum cannot overflow 64 bits. */
        uint64_t n = 4 + 4 + 8 + 8;

        for (size_t i = 0; i < w->n_kv; i++)
                n += 8 + w->kvs[i].key_len + 4 + w->kvs[i].payload.n;
        for (size_t i = 0; i < w->n_tensors; i++)
                n += 8 + w->tensors[i].name_len + 4 + 8 * (uint64_t) w->tensors[i].n_dims + 4 + 8;
        return n;
}

uint64_t gguf_writer_data_size(const gguf_writer *w) {
        return w ? w->data_size : 0;
}

uint64_t gguf_writer_file_size(const gguf_writer *w) {
        if (!w)
                return 0;
        return ALIGN_TO(header_size(w), (uint64_t) w->alignment) + w->data_size;
}

void gguf_writer_set_progress(gguf_writer *w, gguf_writer_progress_fn fn, void *userdata) {
        if (!w)
                return;
        w->progress = fn;
        w->progress_userdata = userdata;
}

void gguf_writer_set_chunk_size(gguf_writer *w, size_t bytes) {
        if (w)
                w->chunk_size = bytes > 0 ? bytes : DEFAULT_CHUNK_SIZE;
}

static int write_all(int fd, const void *p, size_t n) {
        const uint8_t *b = p;

        while (n > 0) {
                ssize_t k = write(fd, b, MIN(n, (size_t) SSIZE_MAX));

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                b += k;
                n -= (size_t) k;
        }
        return 0;
}

static int out_flush(struct out *o) {
        int r;

        if (o->n == 0)
                return 0;
        r = write_all(o->fd, o->buf, o->n);
        o->n = 0;
        return r;
}

static int out_put(struct out *o, const void *p, size_t n) {
        const uint8_t *b = p;
        int r;

        o->written += n;
        if (n >= OUT_BUF_SIZE) {
                r = out_flush(o);
                if (r < 0)
                        return r;
                return write_all(o->fd, b, n);
        }
        while (n > 0) {
                size_t k = MIN(n, OUT_BUF_SIZE - o->n);

                memcpy(o->buf + o->n, b, k);
                o->n += k;
                b += k;
                n -= k;
                if (o->n == OUT_BUF_SIZE) {
                        r = out_flush(o);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int out_le(struct out *o, uint64_t v, size_t n) {
        uint8_t tmp[8];

        le_store(tmp, v, n);
        return out_put(o, tmp, n);
}

static int out_pad(struct out *o, uint32_t alignment) {
        static const uint8_t zeros[256];
        uint64_t pad = ALIGN_TO(o->written, (uint64_t) alignment) - o->written;
        int r = 0;

        while (pad > 0 && r >= 0) {
                size_t k = (size_t) MIN(pad, (uint64_t) sizeof(zeros));

                r = out_put(o, zeros, k);
                pad -= k;
        }
        return r;
}

static int write_header(const gguf_writer *w, struct out *o) {
        int r;

        r = out_put(o, GGUF_MAGIC, 4);
        if (r >= 0)
                r = out_le(o, GGUF_VERSION, 4);
        if (r >= 0)
                r = out_le(o, w->n_tensors, 8);
        if (r >= 0)
                r = out_le(o, w->n_kv, 8);
        for (size_t i = 0; r >= 0 && i < w->n_kv; i++) {
                const struct kv *kv = &w->kvs[i];

                r = out_le(o, kv->key_len, 8);
                if (r >= 0)
                        r = out_put(o, kv->key, kv->key_len);
                if (r >= 0)
                        r = out_le(o, kv->type, 4);
                if (r >= 0)
                        r = out_put(o, kv->payload.p, kv->payload.n);
        }
        for (size_t i = 0; r >= 0 && i < w->n_tensors; i++) {
                const struct tensor *t = &w->tensors[i];

                r = out_le(o, t->name_len, 8);
                if (r >= 0)
                        r = out_put(o, t->name, t->name_len);
                if (r >= 0)
                        r = out_le(o, t->n_dims, 4);
                for (uint32_t d = 0; r >= 0 && d < t->n_dims; d++)
                        r = out_le(o, t->ne[d], 8);
                if (r >= 0)
                        r = out_le(o, (uint32_t) t->type, 4);
                if (r >= 0)
                        r = out_le(o, t->offset, 8);
        }
        if (r >= 0)
                r = out_pad(o, w->alignment);
        return r;
}

static int report(const gguf_writer *w, uint64_t done) {
        if (w->progress && !w->progress(done, w->data_size, w->progress_userdata))
                return -ECANCELED;
        return 0;
}

static int write_tensor(const gguf_writer *w, const struct tensor *t, struct out *o, uint64_t data_start,
                        uint8_t **chunk, size_t *chunk_cap) {
        int r;

        /* Offsets were assigned when the tensor was added; check that the
         * stream is where they say. */
        if (o->written - data_start != t->offset)
                return -EIO;

        if (t->data) {
                const uint8_t *p = t->data;
                uint64_t left = t->size;

                while (left > 0) {
                        size_t k = (size_t) MIN(left, (uint64_t) MAX(w->chunk_size, (size_t) OUT_BUF_SIZE));

                        r = out_put(o, p, k);
                        if (r < 0)
                                return r;
                        p += k;
                        left -= k;
                        r = report(w, o->written - data_start);
                        if (r < 0)
                                return r;
                }
        } else {
                uint64_t rows_per_chunk = MAX((uint64_t) 1, (uint64_t) w->chunk_size / t->row_size);

                rows_per_chunk = MIN(rows_per_chunk, t->n_rows);
                if (rows_per_chunk > SIZE_MAX / t->row_size)
                        return -EOVERFLOW;
                size_t need = (size_t) (rows_per_chunk * t->row_size);
                if (need > *chunk_cap) {
                        uint8_t *p = realloc(*chunk, need);

                        if (!p)
                                return -ENOMEM;
                        *chunk = p;
                        *chunk_cap = need;
                }
                for (uint64_t row = 0; row < t->n_rows; row += rows_per_chunk) {
                        uint64_t n = MIN(rows_per_chunk, t->n_rows - row);
                        size_t bytes = (size_t) (n * t->row_size);

                        r = t->fn(t->userdata, row, n, *chunk);
                        if (r < 0)
                                return r;
                        r = out_put(o, *chunk, bytes);
                        if (r < 0)
                                return r;
                        r = report(w, o->written - data_start);
                        if (r < 0)
                                return r;
                }
        }
        return out_pad(o, w->alignment);
}

int gguf_writer_write_fd(gguf_writer *w, int fd) {
        _cleanup_(freep) uint8_t *buf = NULL, *chunk = NULL;
        size_t chunk_cap = 0;
        struct out o;
        uint64_t data_start;
        int r;

        if (!w || fd < 0)
                return -EINVAL;
        buf = malloc(OUT_BUF_SIZE);
        if (!buf)
                return -ENOMEM;
        o = (struct out) { .fd = fd, .buf = buf };

        r = write_header(w, &o);
        if (r < 0)
                return r;
        data_start = o.written;
        r = report(w, 0);
        if (r < 0)
                return r;
        for (size_t i = 0; i < w->n_tensors; i++) {
                r = write_tensor(w, &w->tensors[i], &o, data_start, &chunk, &chunk_cap);
                if (r < 0)
                        return r;
        }
        r = out_flush(&o);
        if (r < 0)
                return r;
        if (o.written - data_start != w->data_size)
                return -EIO;
        return 0;
}

/* Best effort: the rename has happened, and failing now would report an
 * error for a file that is in place. */
static void fsync_parent(const char *path) {
        _cleanup_(freep) char *dir = strdup(path);
        char *slash;
        int fd;

        if (!dir)
                return;
        slash = strrchr(dir, '/');
        if (!slash)
                fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        else {
                if (slash == dir)
                        slash[1] = 0;
                else
                        *slash = 0;
                fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (fd < 0)
                return;
        (void) fsync(fd);
        close(fd);
}

int gguf_writer_write_file(gguf_writer *w, const char *path) {
        _cleanup_(freep) char *tmp = NULL;
        int fd, r;

        if (!w || !path || !*path)
                return -EINVAL;
        if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;

        r = gguf_writer_write_fd(w, fd);
        if (r >= 0 && fchmod(fd, 0644) < 0)
                r = -errno;
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r >= 0)
                r = -errno;
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlink(tmp);
                return r;
        }
        fsync_parent(path);
        return 0;
}
