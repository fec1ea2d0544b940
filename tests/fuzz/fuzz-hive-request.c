/* SPDX-License-Identifier: MIT */
/* Every request body the hive parses, validated field by field in the order
 * hive/server.c does it, with the same helpers (json_parse_strict,
 * json_get_*, hive_id_is_valid, hive_download_parse_source,
 * hive_keep_alive_from_json, hive_backends_check), so that no SQLite, worker
 * or network is needed. The first byte picks the endpoint:
 *   0 POST /v1/models              register a local file
 *   1 POST /v1/models/download     and POST /v1/jobs {"type":"download"}
 *   2 POST /v1/jobs                {"type":"infer"} and the others
 *   3 POST /v1/inference           and /v1/chat/completions, /v1/completions
 *   4 POST /v1/workers             spawn
 *   5 POST /v1/workers/cleanup
 * What is accepted must be safe to use: ids that cannot leave the models
 * directory, absolute paths, sources that name no parent directory. */

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "hive/hive.h"
#include "json-util.h"
#include "strutil.h"
#include "hive/util.h"

#define HIVE_BODY_DEPTH 64

static struct hive_backends backends = {
        .cpu = { .name = "fuzz", .cores = 4, .physical_cores = 2, .simd = "avx2", .mem_total = 8ull << 30,
                 .mem_available = 4ull << 30 },
        .cuda_available = true,
        .n_gpus = 1,
        .gpus = { { .name = "fuzz-gpu", .mem_total = 8ull << 30, .mem_free = 6ull << 30, .cc_major = 8 } },
};

/* An id that passes is one file name inside the models directory. */
static void check_id(const char *id) {
        FUZZ_CHECK(hive_id_is_valid(id));
        size_t n = strlen(id);
        FUZZ_CHECK(n >= 1 && n <= HIVE_ID_MAX);
        FUZZ_CHECK(!strchr(id, '/') && !strchr(id, '\\') && !streq(id, ".") && !streq(id, ".."));
        FUZZ_CHECK(id[0] != '.' && id[0] != '-');
        char *unit = NULL, *back = NULL;
        FUZZ_CHECK(hive_unit_name(id, &unit) >= 0);
        FUZZ_CHECK(!strchr(unit, '/'));
        free(unit);
        FUZZ_CHECK(hive_unit_escape(id, &unit) >= 0);
        FUZZ_CHECK(hive_unit_unescape(unit, &back) >= 0 && streq(back, id));
        free(unit);
        free(back);
}

/* No component of an accepted path or repo is "." or "..". */
static void check_no_dot_segments(const char *s) {
        for (const char *p = s; p && *p;) {
                size_t n = strcspn(p, "/");
                FUZZ_CHECK(!(n == 1 && p[0] == '.') && !(n == 2 && p[0] == '.' && p[1] == '.'));
                p += n;
                if (*p == '/')
                        p++;
        }
}

static int get_keep_alive(struct json_object *o) {
        struct json_object *ka = NULL;
        int64_t keep = -2;

        if (json_object_object_get_ex(o, "keep_alive", &ka) && ka) {
                if (hive_keep_alive_from_json(ka, &keep) < 0)
                        return 400;
                FUZZ_CHECK(keep >= -1 && keep <= INT32_MAX);
        }
        return 0;
}

static int check_backend(struct json_object *o) {
        const char *backend = NULL;
        int64_t device = 0;
        char err[512];

        if (json_get_string(o, "backend", &backend, NULL) < 0 || json_get_int64(o, "device", 0, 1024, &device) < 0)
                return 400;
        FUZZ_CHECK(device >= 0 && device <= 1024);
        if (backend && hive_backends_check(&backends, backend, (int) device, 0, err, sizeof(err)) < 0) {
                FUZZ_CHECK(err[0]);
                return 400;
        }
        return 0;
}

static int model_register(struct json_object *o) {
        const char *id = NULL, *path = NULL;

        if (json_get_string(o, "id", &id, NULL) <= 0 || !hive_id_is_valid(id))
                return 400;
        if (json_get_string(o, "path", &path, NULL) <= 0 || path[0] != '/')
                return 400;
        if (check_backend(o))
                return 400;
        check_id(id);
        return 201;
}

static int download(struct json_object *o) {
        char *repo = NULL, *sel = NULL, *def_id = NULL;
        const char *source = NULL, *id = NULL;
        char err[512] = "";
        int r, status = 400;

        if (json_get_string(o, "source", &source, NULL) <= 0)
                return 400;
        r = hive_download_parse_source(source, &repo, &sel, &def_id, err, sizeof(err));
        if (r < 0) {
                FUZZ_CHECK(r == -EINVAL && err[0]);
                return 400;
        }
        if (str_startswith(source, "hf:")) {
                FUZZ_CHECK(repo && strchr(repo, '/') && strchr(repo, '/') == strrchr(repo, '/'));
                check_no_dot_segments(repo);
                check_no_dot_segments(sel);
                FUZZ_CHECK(!sel || sel[0] != '/');
        } else {
                FUZZ_CHECK(str_startswith(source, "file:///") && !repo && sel && sel[0] == '/');
        }
        r = json_get_string(o, "id", &id, NULL);
        if (r < 0 || (r > 0 && !hive_id_is_valid(id)))
                goto out;
        if (!id)
                id = def_id;
        if (!hive_id_is_valid(id))
                goto out;
        check_id(id);
        status = 202;
out:
        free(repo);
        free(sel);
        free(def_id);
        return status;
}

static int check_infer(struct json_object *o) {
        const char *model = NULL;

        if (json_get_string(o, "model", &model, NULL) <= 0 || !hive_id_is_valid(model))
                return 400;
        if (get_keep_alive(o))
                return 400;
        check_id(model);
        return 0;
}

static int jobs_post(struct json_object *o) {
        const char *type = NULL;

        if (json_get_string(o, "type", &type, NULL) <= 0)
                return 400;
        if (streq(type, "download"))
                return download(o);
        if (!streq(type, "infer"))
                return 400;
        json_object_object_del(o, "type");
        return check_infer(o) ? 400 : 202;
}

static int inference(struct json_object *o) {
        bool stream = true;
        int64_t device = -1;
        const char *backend = NULL;

        if (json_get_bool(o, "stream", &stream) < 0)
                return 400;
        if (check_infer(o))
                return 400;
        /* The proxy path reads these leniently, then drops them before the worker sees the body. */
        (void) json_get_string(o, "backend", &backend, NULL);
        (void) json_get_int64(o, "device", 0, 1024, &device);
        if (!stream) {
                json_object_object_del(o, "keep_alive");
                json_object_object_del(o, "backend");
                json_object_object_del(o, "device");
        }
        size_t len = 0;
        const char *body = json_to_string(o, &len);
        FUZZ_CHECK(body && strlen(body) == len);
        /* What goes to the worker parses again. */
        struct json_object *again = NULL;
        char err[256];
        FUZZ_CHECK(json_parse_strict(body, len, HIVE_BODY_DEPTH + 1, &again, err, sizeof(err)) == 0);
        json_object_put(again);
        return 200;
}

static int workers_spawn(struct json_object *o) {
        bool wait = true;

        if (check_infer(o))
                return 400;
        if (json_get_bool(o, "wait", &wait) < 0 || check_backend(o))
                return 400;
        return wait ? 201 : 202;
}

static int workers_cleanup(struct json_object *o) {
        bool all = false;

        return json_get_bool(o, "all", &all) < 0 ? 400 : 200;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct json_object *o = NULL;
        char err[512] = "";
        int r;

        if (size < 1)
                return 0;
        char *body = malloc(size - 1 ? size - 1 : 1);
        FUZZ_CHECK(body);
        memcpy(body, data + 1, size - 1);
        r = json_parse_strict(body, size - 1, HIVE_BODY_DEPTH, &o, err, sizeof(err));
        if (r < 0) {
                FUZZ_CHECK(r == -E2BIG || (r == -EBADMSG && err[0]));
                FUZZ_CHECK(!o);
                free(body);
                return 0;
        }
        FUZZ_CHECK(utf8_is_valid(body, size - 1));
        /* Like parse_body(): only objects go further. */
        if (o && json_object_is_type(o, json_type_object)) {
                switch (data[0] % 6) {
                case 0: (void) model_register(o); break;
                case 1: (void) download(o); break;
                case 2: (void) jobs_post(o); break;
                case 3: (void) inference(o); break;
                case 4: (void) workers_spawn(o); break;
                default: (void) workers_cleanup(o); break;
                }
        }
        json_object_put(o);
        free(body);
        return 0;
}
