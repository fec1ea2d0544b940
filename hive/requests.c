/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hive.h"
#include "json-util.h"
#include "macros.h"
#include "requests.h"
#include "strutil.h"
#include "util.h"

void hive_req_error_vset(struct hive_req_error *e, unsigned status, const char *code, const char *fmt, va_list ap) {
        e->status = status;
        e->code = code;
        vsnprintf(e->message, sizeof(e->message), fmt, ap);
        /* Messages quote what the client sent, cut to a length ("%.200s"),
         * and go out in a JSON answer that clients parse strictly. */
        utf8_scrub(e->message);
}

int hive_req_error_set(struct hive_req_error *e, unsigned status, const char *code, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        hive_req_error_vset(e, status, code, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

#define bad_request(e, ...) hive_req_error_set(e, 400, "invalid_request", __VA_ARGS__)

static int out_of_memory(struct hive_req_error *e) {
        (void) hive_req_error_set(e, 500, "internal_error", "out of memory");
        return -ENOMEM;
}

/* ---- routes ----------------------------------------------------------------- */

static bool seg(const char *url, const char *prefix, const char **ret_rest) {
        size_t n = strlen(prefix);

        if (strncmp(url, prefix, n) != 0 || !url[n])
                return false;
        *ret_rest = url + n;
        return true;
}

static int route(struct hive_req_route *r, enum hive_endpoint endpoint) {
        r->endpoint = endpoint;
        return 0;
}

static int not_allowed(struct hive_req_error *e, const char *what) {
        return hive_req_error_set(e, 405, "method_not_allowed", "%s", what);
}

static void set_id(struct hive_req_route *r, const char *s, size_t n) {
        n = MIN(n, sizeof(r->id) - 1);
        memcpy(r->id, s, n);
        r->id[n] = 0;
}

int hive_req_route(const char *url, const char *method, struct hive_req_route *ret, struct hive_req_error *e) {
        bool get = streq(method, "GET"), post = streq(method, "POST"), del = streq(method, "DELETE");
        const char *rest;

        *ret = (struct hive_req_route) {};
        if (streq(url, "/v1/health"))
                return get ? route(ret, HIVE_EP_HEALTH) : not_allowed(e, "use GET");
        if (streq(url, "/v1/backends"))
                return get ? route(ret, HIVE_EP_BACKENDS) : not_allowed(e, "use GET");
        if (streq(url, "/metrics"))
                return get ? route(ret, HIVE_EP_METRICS) : not_allowed(e, "use GET");
        if (streq(url, "/v1/models"))
                return get ? route(ret, HIVE_EP_MODELS_LIST) : post ? route(ret, HIVE_EP_MODEL_REGISTER)
                                                                    : not_allowed(e, "use GET or POST");
        /* Only POST: GET and DELETE /v1/models/download are about a model of that id. */
        if (streq(url, "/v1/models/download") && post)
                return route(ret, HIVE_EP_MODEL_DOWNLOAD);
        if (seg(url, "/v1/models/", &rest)) {
                set_id(ret, rest, strlen(rest));
                return get ? route(ret, HIVE_EP_MODEL_GET) : del ? route(ret, HIVE_EP_MODEL_DELETE)
                                                                 : not_allowed(e, "use GET or DELETE");
        }
        if (streq(url, "/v1/workers"))
                return get ? route(ret, HIVE_EP_WORKERS_LIST) : post ? route(ret, HIVE_EP_WORKERS_SPAWN)
                                                                     : not_allowed(e, "use GET or POST");
        if (streq(url, "/v1/workers/cleanup"))
                return post ? route(ret, HIVE_EP_WORKERS_CLEANUP) : not_allowed(e, "use POST");
        if (seg(url, "/v1/workers/", &rest)) {
                set_id(ret, rest, strlen(rest));
                return get ? route(ret, HIVE_EP_WORKER_GET) : del ? route(ret, HIVE_EP_WORKER_STOP)
                                                                  : not_allowed(e, "use GET or DELETE");
        }
        if (streq(url, "/v1/jobs"))
                return get ? route(ret, HIVE_EP_JOBS_LIST) : post ? route(ret, HIVE_EP_JOBS_POST)
                                                                  : not_allowed(e, "use GET or POST");
        if (seg(url, "/v1/jobs/", &rest)) {
                const char *slash = strchr(rest, '/');
                set_id(ret, rest, slash ? (size_t) (slash - rest) : strlen(rest));
                if (slash && streq(slash, "/events"))
                        return get ? route(ret, HIVE_EP_JOB_EVENTS) : not_allowed(e, "use GET");
                if (slash)
                        return hive_req_error_set(e, 404, "not_found", "no endpoint %.200s", url);
                return get || del ? route(ret, HIVE_EP_JOB) : not_allowed(e, "use GET or DELETE");
        }
        if (streq(url, "/v1/inference"))
                return post ? route(ret, HIVE_EP_INFERENCE) : not_allowed(e, "use POST");
        if (streq(url, "/v1/chat/completions") || streq(url, "/v1/completions"))
                return post ? route(ret, HIVE_EP_OPENAI) : not_allowed(e, "use POST");
        return hive_req_error_set(e, 404, "not_found", "no endpoint %.20s %.200s", method, url);
}

/* ---- bodies ----------------------------------------------------------------- */

int hive_req_parse_body(const char *body, size_t len, struct json_object **ret, struct hive_req_error *e) {
        struct json_object *o = NULL;
        char err[256] = "";
        int r;

        *ret = NULL;
        if (!len)
                return bad_request(e, "the request has no body: a JSON object is expected");
        r = json_parse_strict(body, len, HIVE_REQ_MAX_DEPTH, &o, err, sizeof(err));
        if (r < 0)
                return bad_request(e, "malformed JSON: %s", r == -E2BIG ? "nested too deeply" : err);
        /* "null" parses to NULL. */
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return bad_request(e, "the request body must be a JSON object");
        }
        *ret = o;
        return 0;
}

int hive_req_register(struct json_object *o, const struct hive_backends *b, struct hive_req_register *ret,
                      struct hive_req_error *e) {
        const char *id = NULL, *path = NULL, *backend = NULL;
        int64_t device = 0;
        char err[512] = "";
        int r;

        if (json_get_string(o, "id", &id, NULL) <= 0 || !hive_id_is_valid(id))
                return bad_request(e,
                                   "'id' must be 1-%d characters of [A-Za-z0-9._:-], starting with a letter or digit",
                                   HIVE_ID_MAX);
        if (json_get_string(o, "path", &path, NULL) <= 0 || path[0] != '/')
                return bad_request(e, "'path' must be an absolute path to a .gguf file");
        if (json_get_string(o, "backend", &backend, NULL) < 0)
                return bad_request(e, "'backend' must be a string");
        if (json_get_int64(o, "device", 0, 1024, &device) < 0)
                return bad_request(e, "'device' must be an integer 0-1024");
        if (backend) {
                r = hive_backends_check(b, backend, (int) device, 0, err, sizeof(err));
                if (r < 0)
                        return hive_req_error_set(e, 400, "backend_unavailable", "%s", err);
        }
        *ret = (struct hive_req_register) { .id = id, .path = path, .backend = backend, .device = (int) device };
        return 0;
}

int hive_req_download(struct json_object *o, struct hive_req_download *ret, struct hive_req_error *e) {
        const char *source = NULL, *id = NULL;
        char err[512] = "";
        int r;

        *ret = (struct hive_req_download) {};
        if (json_get_string(o, "source", &source, NULL) <= 0)
                return bad_request(e, "'source' (hf:ORG/REPO[:QUANT|:FILE] or file:///PATH) is required");
        r = hive_download_parse_source(source, &ret->repo, &ret->sel, &ret->default_id, err, sizeof(err));
        if (r == -ENOMEM)
                return out_of_memory(e);
        if (r < 0)
                return hive_req_error_set(e, 400, "invalid_reference", "%s", err);
        r = json_get_string(o, "id", &id, NULL);
        if (r < 0 || (r > 0 && !hive_id_is_valid(id)))
                return bad_request(e,
                                   "'id' must be 1-%d characters of [A-Za-z0-9._:-], starting with a letter or digit",
                                   HIVE_ID_MAX);
        if (!id)
                id = ret->default_id;
        if (!hive_id_is_valid(id))
                return bad_request(e, "cannot derive a model id from '%s': pass \"id\"", source);
        ret->source = source;
        ret->id = id;
        return 0;
}

void hive_req_download_done(struct hive_req_download *d) {
        free(d->repo);
        free(d->sel);
        free(d->default_id);
        *d = (struct hive_req_download) {};
}

int hive_req_job_type(struct json_object *o, enum hive_req_job_type *ret, struct hive_req_error *e) {
        const char *type = NULL;

        if (json_get_string(o, "type", &type, NULL) <= 0)
                return bad_request(e, "'type' (\"download\" or \"infer\") is required");
        if (streq(type, "download"))
                *ret = HIVE_REQ_JOB_DOWNLOAD;
        else if (streq(type, "infer"))
                *ret = HIVE_REQ_JOB_INFER;
        else
                return bad_request(e, "unknown job type '%.50s' (download, infer)", type);
        return 0;
}

int hive_req_infer(struct json_object *o, struct hive_req_infer *ret, struct hive_req_error *e) {
        struct json_object *ka = NULL;
        const char *model = NULL, *job_id = NULL, *backend = NULL;
        int64_t keep = -2, device = -1;
        int r;

        *ret = (struct hive_req_infer) { .device = -1, .keep_alive_s = -2 };
        if (json_get_string(o, "model", &model, NULL) <= 0 || !hive_id_is_valid(model))
                return bad_request(e, "'model' (a model id from the catalog) is required");
        /* null is as good as absent: the model's default. */
        if (json_object_object_get_ex(o, "keep_alive", &ka) && ka && hive_keep_alive_from_json(ka, &keep) < 0)
                return bad_request(e, "'keep_alive' must be seconds (-1 = never) or a duration like \"5m\"");
        r = json_get_string(o, "job_id", &job_id, NULL);
        if (r < 0 || (r > 0 && !hive_job_id_is_valid(job_id)))
                return bad_request(e, "'job_id' must be 1-%d characters of [A-Za-z0-9._:-]", HIVE_JOB_ID_MAX);
        if (json_get_string(o, "backend", &backend, NULL) < 0 || json_get_int64(o, "device", 0, 1024, &device) < 0)
                return bad_request(e, "'backend' must be a string and 'device' an integer 0-1024");
        /* A copy: the body relayed to the worker drops it (hive_req_forward_body()). */
        if (backend && !(ret->backend = strdup(backend)))
                return out_of_memory(e);
        ret->model = model;
        ret->job_id = job_id;
        ret->device = device;
        ret->keep_alive_s = keep;
        ret->keep_alive = ka;
        return 0;
}

void hive_req_infer_done(struct hive_req_infer *r) {
        free(r->backend);
        r->backend = NULL;
}

int hive_req_inference_stream(struct json_object *o, bool *ret, struct hive_req_error *e) {
        bool stream = true;

        if (json_get_bool(o, "stream", &stream) < 0)
                return bad_request(e, "'stream' must be a boolean");
        *ret = stream;
        return 0;
}

int hive_req_spawn(struct json_object *o, bool *ret_wait, struct hive_req_error *e) {
        const char *backend = NULL;
        int64_t device = -1;
        bool wait = true;

        /* backend and device were read by hive_req_infer() already: only "wait"
         * can fail here, but the message has always named all three. */
        if (json_get_bool(o, "wait", &wait) < 0 || json_get_string(o, "backend", &backend, NULL) < 0 ||
            json_get_int64(o, "device", 0, 1024, &device) < 0)
                return bad_request(e, "'wait' is a boolean, 'backend' a string, 'device' 0-1024");
        *ret_wait = wait;
        return 0;
}

int hive_req_cleanup(const char *body, size_t len, bool *ret_all, struct hive_req_error *e) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        bool all = false;
        int r;

        /* No body is no options. */
        if (len) {
                r = hive_req_parse_body(body, len, &o, e);
                if (r < 0)
                        return r;
                if (json_get_bool(o, "all", &all) < 0)
                        return bad_request(e, "'all' must be a boolean");
        }
        *ret_all = all;
        return 0;
}

int hive_req_forward_body(struct json_object *o, bool native, const char **ret, size_t *ret_len) {
        const char *s;

        /* The worker need not see what only the hive understands. The OpenAI
         * bodies go as they came: the worker ignores the fields it does not read. */
        if (native) {
                json_object_object_del(o, "keep_alive");
                json_object_object_del(o, "backend");
                json_object_object_del(o, "device");
        }
        s = json_to_string(o, ret_len);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}
