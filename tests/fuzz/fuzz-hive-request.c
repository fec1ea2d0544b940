/* SPDX-License-Identifier: MIT */
/* The hive's request parsing, the code hive/server.c runs: hive/requests.c
 * (the route, the body, each endpoint's fields). What the handlers do between
 * two of its calls (the catalog lookup of the model, the workers) is taken
 * to succeed. The first byte picks what is parsed:
 *   0xf0-0xff: the route: the second byte picks the method, the rest is the URL
 *   else, modulo 6, the body (the rest of the input) of
 *   0 POST /v1/models              register a local file
 *   1 POST /v1/models/download
 *   2 POST /v1/jobs                {"type": "download"} or {"type": "infer"}
 *   3 POST /v1/inference           (first byte / 6 even: streamed as a job, or relayed)
 *     or /v1/chat/completions      (odd: relayed as it is)
 *   4 POST /v1/workers             spawn
 *   5 POST /v1/workers/cleanup     (the body may be empty)
 * What is accepted must be safe to use: ids that cannot leave the models
 * directory, absolute paths, sources that name no parent directory, a relayed
 * body that parses again without the hive's own fields. What is refused has
 * a status, a code and a message that a client can parse (valid UTF-8). */

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "hive/hive.h"
#include "hive/requests.h"
#include "hive/util.h"
#include "json-util.h"
#include "strutil.h"

static const struct hive_backends backends = {
        .cpu = { .name = "fuzz", .cores = 4, .physical_cores = 2, .simd = "avx2", .mem_total = 8ull << 30,
                 .mem_available = 4ull << 30 },
        .cuda_available = true,
        .n_gpus = 2,
        .gpus = { { .name = "fuzz-gpu", .mem_total = 8ull << 30, .mem_free = 6ull << 30, .cc_major = 8 },
                  { .name = "fuzz-gpu", .mem_total = 8ull << 30, .cc_major = 9 } },
        .cuda_workerd = "/usr/sbin/rbee-workerd-cuda",
};

static void check_refusal(int r, const struct hive_req_error *e) {
        FUZZ_CHECK(r == -EINVAL || r == -ENOMEM);
        FUZZ_CHECK(e->status >= 400 && e->status <= 599);
        FUZZ_CHECK(e->code && e->code[0]);
        size_t n = strnlen(e->message, sizeof(e->message));
        FUZZ_CHECK(n >= 1 && n < sizeof(e->message));
        /* It goes out in a JSON answer that clients parse strictly. */
        FUZZ_CHECK(utf8_is_valid(e->message, n));
}

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

/* s is the string o[key]. */
static bool is_field(struct json_object *o, const char *key, const char *s) {
        const char *v = NULL;

        return json_get_string(o, key, &v, NULL) > 0 && v == s;
}

static void model_register(struct json_object *o) {
        struct hive_req_register req;
        struct hive_req_error e;
        char err[512];
        int r;

        r = hive_req_register(o, &backends, &req, &e);
        if (r < 0) {
                check_refusal(r, &e);
                FUZZ_CHECK(e.status == 400);
                return;
        }
        check_id(req.id);
        FUZZ_CHECK(is_field(o, "id", req.id) && is_field(o, "path", req.path) && req.path[0] == '/');
        FUZZ_CHECK(req.device >= 0 && req.device <= 1024);
        FUZZ_CHECK(!req.backend || is_field(o, "backend", req.backend));
        FUZZ_CHECK(!req.backend || hive_backends_check(&backends, req.backend, req.device, 0, err, sizeof(err)) == 0);
}

static void download(struct json_object *o) {
        struct hive_req_download req;
        struct hive_req_error e;
        int r;

        r = hive_req_download(o, &req, &e);
        if (r < 0) {
                check_refusal(r, &e);
                FUZZ_CHECK(e.status == 400 || r == -ENOMEM);
                hive_req_download_done(&req);
                return;
        }
        FUZZ_CHECK(is_field(o, "source", req.source));
        if (str_startswith(req.source, "hf:")) {
                FUZZ_CHECK(req.repo && strchr(req.repo, '/') && strchr(req.repo, '/') == strrchr(req.repo, '/'));
                check_no_dot_segments(req.repo);
                check_no_dot_segments(req.sel);
                FUZZ_CHECK(!req.sel || req.sel[0] != '/');
        } else {
                FUZZ_CHECK(str_startswith(req.source, "file:///") && !req.repo && req.sel &&
                           streq(req.sel, req.source + 7));
        }
        check_id(req.id);
        FUZZ_CHECK(is_field(o, "id", req.id) || req.id == req.default_id);
        hive_req_download_done(&req);
        FUZZ_CHECK(!req.repo && !req.sel && !req.default_id);
}

/* Returns whether it was accepted; req is to be freed either way. */
static bool infer(struct json_object *o, struct hive_req_infer *req) {
        struct hive_req_error e;
        int r;

        r = hive_req_infer(o, req, &e);
        if (r < 0) {
                check_refusal(r, &e);
                FUZZ_CHECK(e.status == 400 || r == -ENOMEM);
                return false;
        }
        check_id(req->model);
        FUZZ_CHECK(is_field(o, "model", req->model));
        if (req->job_id) {
                FUZZ_CHECK(is_field(o, "job_id", req->job_id) && hive_job_id_is_valid(req->job_id));
                FUZZ_CHECK(strlen(req->job_id) <= HIVE_JOB_ID_MAX && !strchr(req->job_id, '/'));
        }
        FUZZ_CHECK(!req->backend || streq(req->backend, json_object_get_string(json_object_object_get(o, "backend"))));
        FUZZ_CHECK(req->device >= -1 && req->device <= 1024);
        if (req->keep_alive) {
                FUZZ_CHECK(json_object_object_get(o, "keep_alive") == req->keep_alive);
                FUZZ_CHECK(req->keep_alive_s >= -1 && req->keep_alive_s <= INT32_MAX);
        } else
                FUZZ_CHECK(req->keep_alive_s == -2);
        return true;
}

static void jobs_post(struct json_object *o) {
        enum hive_req_job_type type;
        struct hive_req_error e;
        const char *t = NULL;
        int r;

        r = hive_req_job_type(o, &type, &e);
        if (r < 0) {
                check_refusal(r, &e);
                FUZZ_CHECK(e.status == 400);
                return;
        }
        FUZZ_CHECK(json_get_string(o, "type", &t, NULL) > 0);
        FUZZ_CHECK(type == (streq(t, "download") ? HIVE_REQ_JOB_DOWNLOAD : HIVE_REQ_JOB_INFER));
        if (type == HIVE_REQ_JOB_DOWNLOAD) {
                download(o);
                return;
        }
        FUZZ_CHECK(streq(t, "infer"));
        /* As handle_jobs_post(): the worker is not told the type. */
        json_object_object_del(o, "type");
        struct hive_req_infer req;
        (void) infer(o, &req);
        hive_req_infer_done(&req);
}

/* What handle_proxy() sends to the worker. */
static void forward(struct json_object *o, bool native) {
        struct json_object *again = NULL;
        const char *body = NULL, *model = NULL;
        size_t len = 0, n_fields = (size_t) json_object_object_length(o);
        char err[256];

        FUZZ_CHECK(hive_req_forward_body(o, native, &body, &len) == 0);
        FUZZ_CHECK(body && strlen(body) == len);
        FUZZ_CHECK(json_parse_strict(body, len, HIVE_REQ_MAX_DEPTH, &again, err, sizeof(err)) == 0);
        FUZZ_CHECK(json_object_is_type(again, json_type_object));
        FUZZ_CHECK(json_get_string(again, "model", &model, NULL) > 0 && hive_id_is_valid(model));
        if (native)
                FUZZ_CHECK(!json_object_object_get_ex(again, "keep_alive", NULL) &&
                           !json_object_object_get_ex(again, "backend", NULL) &&
                           !json_object_object_get_ex(again, "device", NULL));
        else
                FUZZ_CHECK((size_t) json_object_object_length(again) == n_fields);
        json_object_put(again);
}

static void inference(struct json_object *o, bool native) {
        struct hive_req_infer req;
        struct hive_req_error e;
        bool stream = true;
        int r;

        if (native) {
                r = hive_req_inference_stream(o, &stream, &e);
                if (r < 0) {
                        check_refusal(r, &e);
                        FUZZ_CHECK(e.status == 400);
                        return;
                }
        }
        /* A stream becomes a job: its thread (hive/infer.c) makes the worker's body itself. */
        if (infer(o, &req) && (!native || !stream))
                forward(o, native);
        hive_req_infer_done(&req);
}

static void workers_spawn(struct json_object *o) {
        struct hive_req_infer req;
        struct hive_req_error e;
        bool wait;
        int r;

        if (infer(o, &req)) {
                r = hive_req_spawn(o, &wait, &e);
                if (r < 0) {
                        check_refusal(r, &e);
                        FUZZ_CHECK(e.status == 400);
                }
        }
        hive_req_infer_done(&req);
}

static void workers_cleanup(const char *body, size_t len) {
        struct hive_req_error e;
        bool all = true;
        int r;

        r = hive_req_cleanup(body, len, &all, &e);
        if (r < 0) {
                check_refusal(r, &e);
                FUZZ_CHECK(e.status == 400 && len > 0);
                return;
        }
        FUZZ_CHECK(len || !all);
}

static void route(const uint8_t *data, size_t size) {
        static const char *const methods[] = { "GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS" };
        struct hive_req_route rt;
        struct hive_req_error e;
        const char *method, *rest;
        int r;

        if (size < 1)
                return;
        method = methods[data[0] % ELEMENTSOF(methods)];
        /* libmicrohttpd hands over the path as a C string. */
        char *url = fuzz_strndup(data + 1, size - 1);
        r = hive_req_route(url, method, &rt, &e);
        if (r < 0) {
                check_refusal(r, &e);
                FUZZ_CHECK(e.status == 404 || e.status == 405);
                FUZZ_CHECK(streq(e.code, e.status == 404 ? "not_found" : "method_not_allowed"));
                free(url);
                return;
        }
        switch (rt.endpoint) {
        case HIVE_EP_MODEL_GET:
        case HIVE_EP_MODEL_DELETE:
                FUZZ_CHECK(str_startswith(url, "/v1/models/"));
                rest = url + strlen("/v1/models/");
                FUZZ_CHECK(rt.id[0]);
                break;
        case HIVE_EP_WORKER_GET:
        case HIVE_EP_WORKER_STOP:
                FUZZ_CHECK(str_startswith(url, "/v1/workers/"));
                rest = url + strlen("/v1/workers/");
                FUZZ_CHECK(rt.id[0]);
                break;
        case HIVE_EP_JOB:
        case HIVE_EP_JOB_EVENTS:
                FUZZ_CHECK(str_startswith(url, "/v1/jobs/"));
                rest = url + strlen("/v1/jobs/");
                FUZZ_CHECK(!strchr(rt.id, '/'));
                FUZZ_CHECK(rt.endpoint == HIVE_EP_JOB ? !strchr(rest, '/') : str_endswith(rest, "/events"));
                break;
        default:
                /* No id in these URLs. */
                FUZZ_CHECK(!rt.id[0] && url[0] == '/' && strlen(url) <= strlen("/v1/chat/completions"));
                rest = NULL;
                break;
        }
        if (rest) {
                /* The id is the URL's, cut to the buffer ("" for /v1/jobs//events: no such job). */
                size_t n = strlen(rt.id);
                FUZZ_CHECK(n < sizeof(rt.id) && strncmp(rest, rt.id, n) == 0);
                FUZZ_CHECK(n == sizeof(rt.id) - 1 || rest[n] == 0 || rest[n] == '/');
        }
        free(url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct json_object *o = NULL;
        struct hive_req_error e;
        int r;

        if (size < 1)
                return 0;
        if (data[0] >= 0xf0) {
                route(data + 1, size - 1);
                return 0;
        }
        /* An exact copy, so that ASan sees a read past the end of the body. */
        size_t len = size - 1;
        char *body = malloc(len ? len : 1);
        FUZZ_CHECK(body);
        memcpy(body, data + 1, len);
        unsigned mode = data[0] % 6;
        if (mode == 5) {
                workers_cleanup(body, len);
                free(body);
                return 0;
        }
        r = hive_req_parse_body(body, len, &o, &e);
        if (r < 0) {
                check_refusal(r, &e);
                FUZZ_CHECK(e.status == 400 && !o);
                free(body);
                return 0;
        }
        FUZZ_CHECK(o && json_object_is_type(o, json_type_object));
        FUZZ_CHECK(utf8_is_valid(body, len));
        switch (mode) {
        case 0: model_register(o); break;
        case 1: download(o); break;
        case 2: jobs_post(o); break;
        case 3: inference(o, (data[0] / 6) % 2 == 0); break;
        default: workers_spawn(o); break;
        }
        json_object_put(o);
        free(body);
        return 0;
}
