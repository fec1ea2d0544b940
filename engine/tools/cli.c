/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "rbee-engine.h"

int cli_parse_int(const char *s, long min, long max, long *ret) {
        char *end;
        long v;

        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || end == s || *end || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

int cli_parse_float(const char *s, double min, double max, double *ret) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || *end || !isfinite(v) || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

int cli_parse_u64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (*s == '-')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 0);
        if (errno != 0 || end == s || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

void cli_log_stderr(int level, const char *msg, void *userdata) {
        static const char *const names[] = { [RBEE_LOG_ERR] = "error", [RBEE_LOG_WARNING] = "warning",
                                             [RBEE_LOG_NOTICE] = "notice", [RBEE_LOG_INFO] = "info",
                                             [RBEE_LOG_DEBUG] = "debug" };
        const char *n = level >= 0 && level <= RBEE_LOG_DEBUG && names[level] ? names[level] : "log";

        fprintf(stderr, "rbee: %s: %s\n", n, msg);
}
