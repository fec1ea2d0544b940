/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>

#include "human.h"

char *keeper_human_bytes(uint64_t n, char *buf, size_t len) {
        static const char *const units[] = { "kB", "MB", "GB", "TB", "PB", "EB" };
        double v = (double) n;
        size_t u = 0;

        if (n < 1000) {
                snprintf(buf, len, "%u B", (unsigned) n);
                return buf;
        }
        v /= 1000.0;
        while (v >= 999.95 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1000.0;
                u++;
        }
        snprintf(buf, len, v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
        return buf;
}

char *keeper_human_rate(double bytes_per_s, char *buf, size_t len) {
        char b[KEEPER_HUMAN_MAX];

        if (!(bytes_per_s >= 0) || !isfinite(bytes_per_s))
                bytes_per_s = 0;
        keeper_human_bytes((uint64_t) bytes_per_s, b, sizeof(b));
        snprintf(buf, len, "%s/s", b);
        return buf;
}

char *keeper_human_duration(double s, char *buf, size_t len) {
        uint64_t t;

        if (!(s >= 0) || !isfinite(s))
                s = 0;
        if (s < 1) {
                snprintf(buf, len, "%.0fms", s * 1000);
                return buf;
        }
        if (s < 10) {
                snprintf(buf, len, "%.1fs", s);
                return buf;
        }
        if (s > 1e12)
                s = 1e12;
        t = (uint64_t) llround(s);
        if (t < 60)
                snprintf(buf, len, "%us", (unsigned) t);
        else if (t < 3600)
                snprintf(buf, len, "%um%02us", (unsigned) (t / 60), (unsigned) (t % 60));
        else if (t < 86400)
                snprintf(buf, len, "%uh%02um", (unsigned) (t / 3600), (unsigned) (t % 3600 / 60));
        else
                snprintf(buf, len, "%llud%uh", (unsigned long long) (t / 86400), (unsigned) (t % 86400 / 3600));
        return buf;
}

static char *human_span(int64_t s, const char *suffix, char *buf, size_t len) {
        static const struct {
                int64_t secs;
                const char *one, *many;
        } units[] = {
                { 86400, "a day", "days" },
                { 3600, "an hour", "hours" },
                { 60, "a minute", "minutes" },
                { 1, "a second", "seconds" },
        };

        if (s < 1) {
                snprintf(buf, len, "%s", "now");
                return buf;
        }
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
                int64_t n = s / units[i].secs;
                if (n == 0)
                        continue;
                if (n == 1)
                        snprintf(buf, len, "%s %s", units[i].one, suffix);
                else
                        snprintf(buf, len, "%lld %s %s", (long long) n, units[i].many, suffix);
                return buf;
        }
        return buf;
}

char *keeper_human_until(int64_t s, char *buf, size_t len) {
        return human_span(s, "from now", buf, len);
}

char *keeper_human_ago(int64_t s, char *buf, size_t len) {
        return human_span(s, "ago", buf, len);
}

char *keeper_human_count(uint64_t n, char *buf, size_t len) {
        static const struct {
                double v;
                const char *s;
        } units[] = { { 1e12, "T" }, { 1e9, "B" }, { 1e6, "M" }, { 1e3, "K" } };

        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
                if ((double) n >= units[i].v) {
                        double v = (double) n / units[i].v;
                        snprintf(buf, len, v < 10 ? "%.1f%s" : "%.0f%s", v, units[i].s);
                        return buf;
                }
        snprintf(buf, len, "%llu", (unsigned long long) n);
        return buf;
}
