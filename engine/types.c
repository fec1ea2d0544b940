/* SPDX-License-Identifier: MIT */
#include "types.h"

#include <errno.h>
#include <strings.h>

#include "../common/macros.h"

/* Block sizes follow the ggml layouts byte for byte: these are on-disk formats. */
static const struct rbee_type_traits traits[_RBEE_TYPE_MAX] = {
        [RBEE_TYPE_F32] = { "F32", 1, 4, true },
        [RBEE_TYPE_F16] = { "F16", 1, 2, true },
        [RBEE_TYPE_BF16] = { "BF16", 1, 2, true },
        [RBEE_TYPE_Q4_0] = { "Q4_0", QK4_0, 2 + QK4_0 / 2, true },
        [RBEE_TYPE_Q4_1] = { "Q4_1", QK4_1, 4 + QK4_1 / 2, true },
        [RBEE_TYPE_Q5_0] = { "Q5_0", QK5_0, 2 + 4 + QK5_0 / 2, true },
        [RBEE_TYPE_Q5_1] = { "Q5_1", QK5_1, 4 + 4 + QK5_1 / 2, true },
        [RBEE_TYPE_Q8_0] = { "Q8_0", QK8_0, 2 + QK8_0, true },
        [RBEE_TYPE_Q8_1] = { "Q8_1", QK8_1, 4 + QK8_1, false },
        [RBEE_TYPE_Q4_K] = { "Q4_K", QK_K, 2 + 2 + K_SCALE_SIZE + QK_K / 2, true },
        [RBEE_TYPE_Q5_K] = { "Q5_K", QK_K, 2 + 2 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2, true },
        [RBEE_TYPE_Q6_K] = { "Q6_K", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, true },
        [RBEE_TYPE_Q8_K] = { "Q8_K", QK_K, 4 + QK_K + QK_K / 16 * 2, false },
};

const struct rbee_type_traits *rbee_type_traits(uint32_t type) {
        if (type >= _RBEE_TYPE_MAX || !traits[type].name)
                return NULL;
        return &traits[type];
}

const char *rbee_type_name(uint32_t type) {
        const struct rbee_type_traits *t = rbee_type_traits(type);
        return t ? t->name : "unknown";
}

int rbee_type_row_size(uint32_t type, uint64_t n, uint64_t *ret) {
        const struct rbee_type_traits *t = rbee_type_traits(type);
        uint64_t r;

        if (!t)
                return -EINVAL;
        if (n % t->block_size != 0)
                return -EBADMSG;
        if (MUL_OVERFLOW(n / t->block_size, (uint64_t) t->type_size, &r))
                return -EOVERFLOW;
        *ret = r;
        return 0;
}

int rbee_type_from_name(const char *name) {
        for (uint32_t i = 0; i < _RBEE_TYPE_MAX; i++)
                if (traits[i].name && strcasecmp(traits[i].name, name) == 0)
                        return (int) i;
        return -EINVAL;
}
