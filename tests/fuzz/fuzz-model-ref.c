/* SPDX-License-Identifier: MIT */
/* Model references, ids and the names built from them, on arbitrary
 * strings. The first byte picks the parser:
 *   0 hive_download_parse_source()   hf:ORG/REPO[:QUANT|:FILE.gguf], file:///PATH
 *   1 hive_id_is_valid()             and the unit names and files made from an id
 *   2 hive_unit_unescape()           registry and unit names read back
 *   3 keeper_path()                  ids the CLI puts into URLs
 *   4 keeper hive names and URLs, keep-alive and duration strings
 *   5 keeper_config_load()           the CLI's hives file
 * Nothing accepted may reach outside where it belongs: no "." or ".."
 * component in a repo, file or URL segment, no "/" in an id. */

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "keeper/config.h"
#include "fuzz.h"
#include "hive/hive.h"
#include "keeper/keeper.h"
#include "strutil.h"
#include "hive/util.h"

static bool dot_segment(const char *p, size_t n) {
        return (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.');
}

static void check_no_dot_segments(const char *s) {
        for (const char *p = s; p && *p;) {
                size_t n = strcspn(p, "/");
                FUZZ_CHECK(!dot_segment(p, n));
                p += n;
                if (*p == '/')
                        p++;
        }
}

static void check_id(const char *id) {
        char *unit = NULL, *esc = NULL, *back = NULL;

        if (!hive_id_is_valid(id))
                return;
        FUZZ_CHECK(strlen(id) <= HIVE_ID_MAX);
        FUZZ_CHECK(!strchr(id, '/') && !dot_segment(id, strlen(id)) && id[0] != '.');
        FUZZ_CHECK(hive_unit_name(id, &unit) >= 0);
        FUZZ_CHECK(str_startswith(unit, "rbee-worker@") && str_endswith(unit, ".service") && !strchr(unit, '/'));
        FUZZ_CHECK(hive_unit_escape(id, &esc) >= 0);
        FUZZ_CHECK(hive_unit_unescape(esc, &back) >= 0 && streq(back, id));
        free(unit);
        free(esc);
        free(back);
}

static void check_source(const char *s) {
        char *repo = NULL, *sel = NULL, *id = NULL;
        char err[512] = "";
        int r;

        r = hive_download_parse_source(s, &repo, &sel, &id, err, sizeof(err));
        if (r < 0) {
                FUZZ_CHECK(r == -EINVAL && err[0]);
                return;
        }
        FUZZ_CHECK(id);
        if (str_startswith(s, "hf:")) {
                const char *slash = strchr(repo, '/');
                FUZZ_CHECK(slash && slash != repo && slash[1] && !strchr(slash + 1, '/'));
                check_no_dot_segments(repo);
                if (sel) {
                        FUZZ_CHECK(sel[0] && sel[0] != '/');
                        check_no_dot_segments(sel);
                }
        } else {
                FUZZ_CHECK(str_startswith(s, "file:///") && !repo && sel && sel[0] == '/');
        }
        /* The default id is only used when it is a valid one. */
        check_id(id);
        free(repo);
        free(sel);
        free(id);
}

static void check_unescape(const char *s) {
        char *back = NULL, *again = NULL;

        if (hive_unit_unescape(s, &back) < 0)
                return;
        FUZZ_CHECK(back);
        /* What comes back escapes to something that unescapes to it again. */
        if (hive_unit_escape(back, &again) >= 0) {
                char *third = NULL;
                FUZZ_CHECK(hive_unit_unescape(again, &third) >= 0 && streq(third, back));
                free(third);
        }
        free(back);
        free(again);
}

static void check_url_path(const char *id) {
        static const char *const prefixes[] = { "/v1/models/", "/v1/workers/", "/v1/jobs/" };

        for (size_t i = 0; i < 3; i++) {
                char *p = keeper_path(prefixes[i], id, i == 2 ? "/events" : NULL);
                size_t pl = strlen(prefixes[i]);
                if (!p)
                        continue;
                FUZZ_CHECK(strncmp(p, prefixes[i], pl) == 0);
                const char *seg = p + pl;
                size_t n = strcspn(seg, "/");
                /* One segment, no query or fragment, nothing a client or proxy would resolve away. */
                FUZZ_CHECK(i == 2 ? streq(seg + n, "/events") : seg[n] == 0);
                FUZZ_CHECK(!memchr(seg, '?', n) && !memchr(seg, '#', n));
                FUZZ_CHECK(!dot_segment(seg, n));
                for (size_t k = 0; k < n; k++)
                        FUZZ_CHECK((unsigned char) seg[k] > ' ' && (unsigned char) seg[k] < 0x7f);
                /* And it means the id. */
                if (n == 0)
                        FUZZ_CHECK(id[0] == 0);
                else if (strlen(id) < 4096) {
                        int out = 0;
                        char *dec = curl_easy_unescape(NULL, seg, (int) n, &out);
                        FUZZ_CHECK(dec && (size_t) out == strlen(id) && memcmp(dec, id, (size_t) out) == 0);
                        curl_free(dec);
                }
                free(p);
        }
}

static void check_names(const char *s) {
        int64_t ka;
        uint64_t usec;

        if (keeper_hive_name_valid(s))
                FUZZ_CHECK(!strchr(s, '/') && !dot_segment(s, strlen(s)) && strlen(s) <= 64);
        if (keeper_hive_url_valid(s))
                FUZZ_CHECK((str_startswith(s, "http://") || str_startswith(s, "https://")) && !strpbrk(s, " \t\r\n"));
        if (hive_keep_alive_from_string(s, &ka) >= 0)
                FUZZ_CHECK(ka >= -1);
        (void) parse_duration_usec(s, &usec);
}

static void check_config(const uint8_t *data, size_t size) {
        struct keeper_config c = {};
        char path[64], err[512];
        int fd;

        fd = memfd_create("fuzz-hives", MFD_CLOEXEC);
        FUZZ_CHECK(fd >= 0);
        FUZZ_CHECK(write(fd, data, size) == (ssize_t) size);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        if (keeper_config_load(path, &c, err, sizeof(err)) >= 0) {
                FUZZ_CHECK(c.n_hives <= KEEPER_HIVES_MAX);
                for (size_t i = 0; i < c.n_hives; i++) {
                        FUZZ_CHECK(keeper_hive_name_valid(c.hives[i].name));
                        FUZZ_CHECK(keeper_hive_url_valid(c.hives[i].url));
                        FUZZ_CHECK(keeper_config_find(&c, c.hives[i].name) == &c.hives[i]);
                }
                if (c.default_hive)
                        FUZZ_CHECK(keeper_hive_name_valid(c.default_hive));
        }
        keeper_config_done(&c);
        close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        if (data[0] % 6 == 5) {
                check_config(data + 1, size - 1);
                return 0;
        }
        char *s = fuzz_strndup(data + 1, size - 1);
        switch (data[0] % 6) {
        case 0: check_source(s); break;
        case 1: check_id(s); break;
        case 2: check_unescape(s); break;
        case 3: check_url_path(s); break;
        default: check_names(s); break;
        }
        free(s);
        return 0;
}
