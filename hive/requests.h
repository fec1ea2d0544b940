/* SPDX-License-Identifier: MIT */
#pragma once

/* What the hive reads from a request before it does anything: the route and
 * the ids in the URL, the JSON body and each endpoint's fields. Pure code (no
 * HTTP server, no catalog, no workers, no lock), so that
 * tests/fuzz/fuzz-hive-request.c runs exactly what hive/server.c runs. A
 * refusal is a struct hive_req_error that server.c sends as it is.
 *
 * The strings in the parsed structs point into the JSON object they were
 * read from (or into the struct itself), unless said otherwise: they live as
 * long as the object and its field. */

#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends.h"
#include "macros.h"

/* Nesting limit of a request body. */
#define HIVE_REQ_MAX_DEPTH 64

/* An answer that refuses a request: HTTP status, error code, message. */
struct hive_req_error {
        unsigned status;
        const char *code;               /* static */
        char message[1024];
};

/* Fill e (the message is cut to fit and made valid UTF-8); returns -EINVAL. */
int hive_req_error_set(struct hive_req_error *e, unsigned status, const char *code, const char *fmt, ...)
        _printf_(4, 5);
void hive_req_error_vset(struct hive_req_error *e, unsigned status, const char *code, const char *fmt, va_list ap)
        _printf_(4, 0);

enum hive_endpoint {
        HIVE_EP_HEALTH,
        HIVE_EP_BACKENDS,
        HIVE_EP_METRICS,
        HIVE_EP_MODELS_LIST,            /* GET /v1/models */
        HIVE_EP_MODEL_REGISTER,         /* POST /v1/models */
        HIVE_EP_MODEL_DOWNLOAD,         /* POST /v1/models/download */
        HIVE_EP_MODEL_GET,              /* GET /v1/models/{id} */
        HIVE_EP_MODEL_DELETE,           /* DELETE /v1/models/{id} */
        HIVE_EP_WORKERS_LIST,           /* GET /v1/workers */
        HIVE_EP_WORKERS_SPAWN,          /* POST /v1/workers */
        HIVE_EP_WORKERS_CLEANUP,        /* POST /v1/workers/cleanup */
        HIVE_EP_WORKER_GET,             /* GET /v1/workers/{model} */
        HIVE_EP_WORKER_STOP,            /* DELETE /v1/workers/{model} */
        HIVE_EP_JOBS_LIST,              /* GET /v1/jobs */
        HIVE_EP_JOBS_POST,              /* POST /v1/jobs */
        HIVE_EP_JOB,                    /* GET or DELETE /v1/jobs/{id} */
        HIVE_EP_JOB_EVENTS,             /* GET /v1/jobs/{id}/events */
        HIVE_EP_INFERENCE,              /* POST /v1/inference */
        HIVE_EP_OPENAI,                 /* POST /v1/chat/completions, /v1/completions */
};

struct hive_req_route {
        enum hive_endpoint endpoint;
        /* The {id} or {model} of the URL as it came, cut to 255 bytes; not
         * validated: the handlers look it up, and an invalid one is not found. */
        char id[256];
};

/* Which handler serves method on url (the path, without the query). Refusals:
 * 404 not_found, 405 method_not_allowed. */
int hive_req_route(const char *url, const char *method, struct hive_req_route *ret, struct hive_req_error *e);

/* A request body: a JSON object (RFC 8259, valid UTF-8, nested up to
 * HIVE_REQ_MAX_DEPTH). The caller owns *ret. Refusals: 400 invalid_request. */
int hive_req_parse_body(const char *body, size_t len, struct json_object **ret, struct hive_req_error *e);

/* POST /v1/models. The backend is checked against b. */
struct hive_req_register {
        const char *id;                 /* hive_id_is_valid() */
        const char *path;               /* absolute */
        const char *backend;            /* NULL: not given */
        int device;                     /* 0-1024, 0 when not given */
};
int hive_req_register(struct json_object *o, const struct hive_backends *b, struct hive_req_register *ret,
                      struct hive_req_error *e);

/* POST /v1/models/download and POST /v1/jobs {"type": "download"}. Free with
 * hive_req_download_done() whatever the result. */
struct hive_req_download {
        const char *source;
        const char *id;                 /* given, or derived from the source: hive_id_is_valid() */
        char *repo;                     /* hf: ORG/REPO; NULL for file:// */
        char *sel;                      /* hf: the quantization or file (NULL: choose); file://: the path */
        char *default_id;               /* derived from the source */
};
int hive_req_download(struct json_object *o, struct hive_req_download *ret, struct hive_req_error *e);
void hive_req_download_done(struct hive_req_download *d);

/* POST /v1/jobs: which kind of job. The "download" body is then read by
 * hive_req_download(), the "infer" one by hive_req_infer() (after "type" is
 * removed: the worker does not know it). */
enum hive_req_job_type {
        HIVE_REQ_JOB_DOWNLOAD,
        HIVE_REQ_JOB_INFER,
};
int hive_req_job_type(struct json_object *o, enum hive_req_job_type *ret, struct hive_req_error *e);

/* The fields of an inference the hive itself reads (POST /v1/inference, the
 * OpenAI endpoints, /v1/jobs infer, /v1/workers); the rest is the worker's.
 * Free with hive_req_infer_done() whatever the result. */
struct hive_req_infer {
        const char *model;              /* hive_id_is_valid() */
        const char *job_id;             /* hive_job_id_is_valid(); NULL: not given */
        char *backend;                  /* a copy, so that the body can drop it; NULL: not given */
        int64_t device;                 /* 0-1024; -1: not given */
        int64_t keep_alive_s;           /* -1 never, else seconds; -2: not given */
        struct json_object *keep_alive; /* the value as given (borrowed); NULL: not given */
};
int hive_req_infer(struct json_object *o, struct hive_req_infer *ret, struct hive_req_error *e);
void hive_req_infer_done(struct hive_req_infer *r);

/* POST /v1/inference: "stream" (default true). A streaming request becomes a
 * job; the others are relayed to the worker. */
int hive_req_inference_stream(struct json_object *o, bool *ret, struct hive_req_error *e);

/* POST /v1/workers: what it reads besides hive_req_infer(), after the model
 * was found in the catalog. */
int hive_req_spawn(struct json_object *o, bool *ret_wait, struct hive_req_error *e);

/* POST /v1/workers/cleanup: the body is optional; {"all": true} stops every
 * worker, not only the failed ones. */
int hive_req_cleanup(const char *body, size_t len, bool *ret_all, struct hive_req_error *e);

/* The body relayed to the worker: for /v1/inference (native) without the
 * fields only the hive reads (keep_alive, backend, device); the OpenAI
 * bodies as they are. *ret belongs to o. -ENOMEM. */
int hive_req_forward_body(struct json_object *o, bool native, const char **ret, size_t *ret_len);
