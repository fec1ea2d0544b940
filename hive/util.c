/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "json-util.h"
#include "macros.h"
#include "strutil.h"
#include "util.h"

bool hive_id_is_valid(const char *id) {
        size_t n;

        if (!id || !isalnum((unsigned char) id[0]))
                return false;
        n = strlen(id);
        if (n > HIVE_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char) id[i]) && !strchr("._:-", id[i]))
                        return false;
        return true;
}

bool hive_job_id_is_valid(const char *id) {
        size_t n = id ? strnlen(id, HIVE_JOB_ID_MAX + 1) : 0;

        if (n == 0 || n > HIVE_JOB_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char) id[i]) && !strchr("._:-", id[i]))
                        return false;
        return true;
}

int hive_unit_escape(const char *s, char **ret) {
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(4096);
        char *out;
        size_t len;
        int r = 0;

        for (size_t i = 0; s[i] && r >= 0; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '/')
                        r = strbuf_puts(&b, "-");
                else if ((c == '.' && i == 0) || !(isalnum(c) || c == ':' || c == '_' || c == '.'))
                        r = strbuf_printf(&b, "\\x%02x", c);
                else
                        r = strbuf_append(&b, &s[i], 1);
        }
        if (r < 0)
                return r;
        r = strbuf_steal(&b, &out, &len);
        if (r < 0)
                return r;
        *ret = out;
        return 0;
}

int hive_unit_name(const char *id, char **ret) {
        _cleanup_(freep) char *e = NULL;
        int r;

        r = hive_unit_escape(id, &e);
        if (r < 0)
                return r;
        if (asprintf(ret, "rbee-worker@%s.service", e) < 0)
                return -ENOMEM;
        return 0;
}

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int hive_unit_unescape(const char *s, char **ret) {
        size_t n = strlen(s), j = 0;
        _cleanup_(freep) char *out = malloc(n + 1);

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '-')
                        out[j++] = '/';
                else if (s[i] == '\\') {
                        int a, b;
                        if (i + 3 >= n)
                                return -EINVAL;
                        if (s[i + 1] != 'x' || (a = unhex(s[i + 2])) < 0 || (b = unhex(s[i + 3])) < 0)
                                return -EINVAL;
                        out[j++] = (char) (a * 16 + b);
                        i += 3;
                } else
                        out[j++] = s[i];
        }
        out[j] = 0;
        *ret = TAKE_PTR(out);
        return 0;
}

int hive_keep_alive_from_string(const char *s, int64_t *ret) {
        uint64_t usec;
        int64_t v;

        if (!s)
                return -EINVAL;
        if (parse_int64(s, -1, INT32_MAX, &v) >= 0) {
                *ret = v;
                return 0;
        }
        if (parse_duration_usec(s, &usec) < 0 || usec / 1000000 > INT32_MAX)
                return -EINVAL;
        *ret = (int64_t) ((usec + 999999) / 1000000);
        return 0;
}

int hive_keep_alive_from_json(struct json_object *v, int64_t *ret) {
        if (json_object_is_type(v, json_type_int)) {
                int64_t x = json_object_get_int64(v);
                if (x < -1 || x > INT32_MAX)
                        return -ERANGE;
                *ret = x < 0 ? -1 : x;
                return 0;
        }
        if (json_object_is_type(v, json_type_double)) {
                double d = json_object_get_double(v);
                if (!(d >= -1 && d <= INT32_MAX))
                        return -ERANGE;
                *ret = d < 0 ? -1 : (int64_t) d;
                return 0;
        }
        if (json_object_is_type(v, json_type_string)) {
                const char *s = json_object_get_string(v);
                /* "5m\u0000junk" must not pass as "5m". */
                if ((size_t) json_object_get_string_len(v) != strlen(s))
                        return -EINVAL;
                return hive_keep_alive_from_string(s, ret);
        }
        return -EINVAL;
}

uint64_t hive_now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

int64_t hive_wall_sec(void) {
        return (int64_t) time(NULL);
}

int hive_mkdir_p(const char *path, unsigned mode) {
        _cleanup_(freep) char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = 0;
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int hive_random_id(const char *prefix, size_t n, char **ret) {
        unsigned char b[32];
        char hex[65];

        if (n > sizeof(b))
                return -EINVAL;
        if (getrandom(b, n, 0) != (ssize_t) n)
                return -EIO;
        for (size_t i = 0; i < n; i++)
                snprintf(hex + 2 * i, 3, "%02x", b[i]);
        hex[2 * n] = 0;
        if (asprintf(ret, "%s%s", prefix, hex) < 0)
                return -ENOMEM;
        return 0;
}

uint64_t hive_pid_rss(int pid) {
        char path[64];
        unsigned long long size = 0, rss = 0;
        _cleanup_(fclosep) FILE *f = NULL;

        snprintf(path, sizeof(path), "/proc/%d/statm", pid);
        f = fopen(path, "re");
        if (!f || fscanf(f, "%llu %llu", &size, &rss) != 2)
                return 0;
        return (uint64_t) rss * (uint64_t) sysconf(_SC_PAGESIZE);
}

int hive_pid_starttime(int pid, uint64_t *ret) {
        char path[64], buf[1024], *p;
        _cleanup_(closep) int fd = -EBADF;
        unsigned long long st;
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return n < 0 ? -errno : -EIO;
        buf[n] = 0;
        /* The command name may hold spaces and parentheses: start after the last ')'. */
        p = strrchr(buf, ')');
        if (!p)
                return -EBADMSG;
        p++;
        /* Fields 3..22: skip 19 fields to reach starttime. */
        for (int i = 0; i < 19; i++) {
                p = strchr(p + 1, ' ');
                if (!p)
                        return -EBADMSG;
        }
        if (sscanf(p, " %llu", &st) != 1)
                return -EBADMSG;
        *ret = st;
        return 0;
}
