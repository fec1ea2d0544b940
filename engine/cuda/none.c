/* SPDX-License-Identifier: MIT */
/* The backend seam in a build without CUDA (make CUDA=0). */

#include <errno.h>
#include <string.h>

#include "backend.h"
#include "log.h"

int rbee_cuda_device_count(void) {
        return -EOPNOTSUPP;
}

int rbee_cuda_device_info(int device, struct rbee_gpu_info *ret) {
        return -EOPNOTSUPP;
}

int rbee_cuda_new(rbee_model *m, int device, uint32_t n_ctx, uint32_t n_batch, rbee_progress_fn progress,
                  void *userdata, struct rbee_cuda **ret) {
        log_error("cuda: this engine was built without CUDA support");
        return -EOPNOTSUPP;
}

struct rbee_cuda *rbee_cuda_free(struct rbee_cuda *g) {
        return NULL;
}

int rbee_cuda_forward(struct rbee_cuda *g, const int32_t *tokens, uint32_t n, uint32_t pos, uint32_t k,
                      float *logits, float *top_l, int32_t *top_id) {
        return -EOPNOTSUPP;
}

int rbee_cuda_get_logits(struct rbee_cuda *g, float *logits) {
        return -EOPNOTSUPP;
}

int rbee_cuda_check_decoders(char *err, size_t errlen) {
        return -EOPNOTSUPP;
}

int rbee_cuda_check_topk(int device, char *err, size_t errlen) {
        return -EOPNOTSUPP;
}
