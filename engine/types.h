/* SPDX-License-Identifier: MIT */
#pragma once

/* Tensor element types as GGUF numbers them (the ggml_type enum), and their
 * block geometry. Only the types the engine can compute with are described;
 * everything else is "unknown" and a file using it is rejected by name. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rbee_type {
        RBEE_TYPE_F32 = 0,
        RBEE_TYPE_F16 = 1,
        RBEE_TYPE_Q4_0 = 2,
        RBEE_TYPE_Q4_1 = 3,
        RBEE_TYPE_Q5_0 = 6,
        RBEE_TYPE_Q5_1 = 7,
        RBEE_TYPE_Q8_0 = 8,
        RBEE_TYPE_Q8_1 = 9,
        RBEE_TYPE_Q2_K = 10,
        RBEE_TYPE_Q3_K = 11,
        RBEE_TYPE_Q4_K = 12,
        RBEE_TYPE_Q5_K = 13,
        RBEE_TYPE_Q6_K = 14,
        RBEE_TYPE_Q8_K = 15,
        RBEE_TYPE_BF16 = 30,
        _RBEE_TYPE_MAX = 64,
};

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

struct rbee_type_traits {
        const char *name;
        uint32_t block_size; /* elements per block */
        uint32_t type_size;  /* bytes per block */
        bool weight;         /* may appear as a model weight we compute with */
};

/* NULL for a type number the engine does not know. */
const struct rbee_type_traits *rbee_type_traits(uint32_t type);

/* Name of a type, or "unknown". Never NULL. */
const char *rbee_type_name(uint32_t type);

/* Bytes taken by a row of n elements of the given type.
 * Returns 0 on success, -EINVAL for an unknown type, -EBADMSG when n is not a
 * multiple of the block size, -EOVERFLOW on overflow. */
int rbee_type_row_size(uint32_t type, uint64_t n, uint64_t *ret);

/* Parse a type name ("Q4_0", "q4_k", "F16", ...). Returns the type or -EINVAL. */
int rbee_type_from_name(const char *name);
