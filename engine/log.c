/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "log.h"

static rbee_log_fn log_fn;
static void *log_userdata;
static int log_max = RBEE_LOG_INFO;

void rbee_set_log(rbee_log_fn fn, void *userdata, int max_level) {
        log_fn = fn;
        log_userdata = userdata;
        log_max = max_level;
}

void rbee_logf(int level, const char *fmt, ...) {
        char buf[1024];
        va_list ap;

        if (!log_fn || level > log_max)
                return;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        log_fn(level, buf, log_userdata);
}
