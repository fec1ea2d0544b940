/* SPDX-License-Identifier: MIT */
/* What the hive reads from a HuggingFace endpoint when it downloads a model:
 * the repo listing (GET /api/models/ORG/REPO/tree/main), from which
 * hive_download_choose_file() picks the file by name, by quant or as the
 * only .gguf, and the status lines of the file's responses (curl hands them
 * over without a NUL). The endpoint is whatever --hf-endpoint names, so all
 * of it is hostile: what it picks goes into the file's URL and into the
 * catalog as the model's source, and must be what a user could have named.
 *
 * Input: byte 0 picks the mode; for a listing, the selector follows up to
 * the first newline (mode 0: none, 1: a quant, 2: a file name), then the
 * listing. Mode 3: the rest is one header line, which ends at the end of a
 * readable page. */

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "hive/hive.h"
#include "json-util.h"
#include "macros.h"

static bool is_listed(struct json_object *list, const char *path) {
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                const char *p = NULL;
                if (json_get_string(json_object_array_get_idx(list, i), "path", &p, NULL) > 0 && streq(p, path))
                        return true;
        }
        return false;
}

static void check_listing(unsigned mode, const char *sel_in, size_t sel_len, const char *text, size_t len) {
        _cleanup_(freep) char *source = NULL, *repo = NULL, *sel = NULL, *id = NULL;
        _cleanup_(freep) char *path = NULL, *sha = NULL, *again = NULL;
        _cleanup_(json_object_putp) struct json_object *list = NULL;
        const char *code = NULL;
        uint64_t size = 0;
        char err[1024] = "";
        int r;

        /* The selector comes from the user's reference, through the same parser the hive uses. */
        bool add_ext = mode == 2 && !(sel_len >= 5 && strncasecmp(sel_in + sel_len - 5, ".gguf", 5) == 0);
        if (mode == 0)
                r = asprintf(&source, "hf:org/repo-GGUF");
        else
                r = asprintf(&source, "hf:org/repo-GGUF:%.*s%s", (int) sel_len, sel_in, add_ext ? ".gguf" : "");
        FUZZ_CHECK(r >= 0);
        if (hive_download_parse_source(source, &repo, &sel, &id, err, sizeof(err)) < 0)
                return;
        FUZZ_CHECK(repo && streq(repo, "org/repo-GGUF"));

        r = hive_download_parse_listing(text, len, &list);
        if (r < 0) {
                FUZZ_CHECK(r == -EBADMSG || r == -ENOMEM || r == -E2BIG);
                FUZZ_CHECK(!list);
                return;
        }
        FUZZ_CHECK(json_object_is_type(list, json_type_array));

        r = hive_download_choose_file(list, repo, sel, &path, &size, &sha, &code, err, sizeof(err));
        if (r < 0) {
                FUZZ_CHECK(r == -ENOENT || r == -ENOTUNIQ || r == -EBADMSG || r == -ENOMEM);
                FUZZ_CHECK(!path && !sha);
                FUZZ_CHECK(code && err[0]);
                FUZZ_CHECK(streq(code, r == -ENOENT     ? "quant_not_found"
                                       : r == -ENOTUNIQ ? "ambiguous_file"
                                       : r == -EBADMSG  ? "upstream_error"
                                                        : "internal_error"));
                return;
        }
        FUZZ_CHECK(path);
        FUZZ_CHECK(is_listed(list, path));
        size_t pl = strlen(path);
        FUZZ_CHECK(pl >= 5 && strcasecmp(path + pl - 5, ".gguf") == 0);
        if (sel && str_endswith(sel, ".gguf"))
                FUZZ_CHECK(streq(path, sel));
        else if (sel)
                FUZZ_CHECK(strcasestr(path, sel));
        FUZZ_CHECK(!sha || (strlen(sha) == 64 && strspn(sha, "0123456789abcdef") == 64));
        FUZZ_CHECK(size <= (uint64_t) INT64_MAX);

        /* The hive fetches REPO/resolve/main/FILE and records hf:REPO:FILE as
         * the source: that must be a reference the hive itself accepts, for
         * this very repo and file (no "..", no characters a URL would read
         * differently). */
        _cleanup_(freep) char *repo2 = NULL, *sel2 = NULL, *id2 = NULL;
        FUZZ_CHECK(asprintf(&again, "hf:%s:%s", repo, path) >= 0);
        r = hive_download_parse_source(again, &repo2, &sel2, &id2, err, sizeof(err));
        if (r < 0)
                fprintf(stderr, "picked '%s': %s\n", path, err);
        FUZZ_CHECK(r == 0);
        FUZZ_CHECK(streq(repo2, repo) && sel2 && streq(sel2, path));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        unsigned mode = data[0] % 4;
        /* An exact-size copy: the parsers must not read past len. */
        size_t n = size - 1;
        char *p = malloc(n ? n : 1);
        FUZZ_CHECK(p);
        memcpy(p, data + 1, n);

        if (mode == 3) {
                /* The line ends where a page ends, before one that may not
                 * be read: a parser that looks for a NUL past the line
                 * faults (ASan does not see reads inside libc's sscanf()). */
                long pg = sysconf(_SC_PAGESIZE);
                if (n < (size_t) pg) {
                        char *m = mmap(NULL, 2 * (size_t) pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                       -1, 0);
                        FUZZ_CHECK(m != MAP_FAILED);
                        FUZZ_CHECK(mprotect(m + pg, (size_t) pg, PROT_NONE) == 0);
                        char *line = m + pg - n;
                        memcpy(line, p, n);
                        int st = hive_download_header_status(line, n);
                        FUZZ_CHECK(st == -EINVAL || (st >= 100 && st <= 999));
                        if (st > 0)
                                FUZZ_CHECK(n >= 12 && memcmp(line, "HTTP/", 5) == 0);
                        FUZZ_CHECK(munmap(m, 2 * (size_t) pg) == 0);
                }
        } else {
                const char *nl = memchr(p, '\n', n);
                size_t sl = nl ? (size_t) (nl - p) : 0, off = nl ? sl + 1 : 0;
                /* A selector with a NUL is not a C string the user could type. */
                if (!memchr(p, 0, sl))
                        check_listing(mode, p, sl, p + off, n - off);
        }
        free(p);
        return 0;
}
