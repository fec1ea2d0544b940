/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "format.h"
#include "http-guard.h"
#include "http-util.h"
#include "json-util.h"
#include "logging.h"
#include "sd-listen.h"
#include "server.h"

struct worker_server {
        struct worker_server_config cfg;
        char *api_key;
        struct MHD_Daemon *daemon;
        struct http_guard *guard;
        struct worker_inference *inf;
        struct worker_metrics *metrics;
        bool quiesced;

        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned n_streams;
};

/* How much of a refused upload is read and dropped so that the refusal
 * reaches the client (see refuse_later()). */
#define DRAIN_MAX (16u << 20)

/* Per-request state, MHD's *con_cls. */
struct request {
        struct worker_server *server;
        enum worker_route route;
        const char *method;
        char url[128];
        struct strbuf body;
        bool body_too_big;
        size_t dropped;                 /* body bytes read and thrown away */
        unsigned pending_status;        /* a refusal to send once the body is in */
        const char *pending_code, *pending_allow;
        char pending_message[512];
        bool responded;
        bool counted;
        unsigned status;
        struct worker_job *job;
};

/* The stream's own state: outlives the request when MHD still holds the response. */
struct stream {
        struct worker_server *server;
        struct worker_job *job;
        int fd;
};

/* Counted when the answer is decided, not when the connection is done with
 * it: a client that reads its answer and then asks for /metrics sees it. */
static void mark_responded(struct request *rq, unsigned status) {
        rq->status = status;
        rq->responded = true;
        if (!rq->counted) {
                worker_metrics_request(rq->server->metrics, rq->route, status);
                rq->counted = true;
        }
}

static enum MHD_Result respond_error(struct request *rq, struct MHD_Connection *c, unsigned status,
                                     const char *code, unsigned retry_after, const char *allow,
                                     const char *fmt, ...) _printf_(7, 8);
static enum MHD_Result respond_error(struct request *rq, struct MHD_Connection *c, unsigned status,
                                     const char *code, unsigned retry_after, const char *allow,
                                     const char *fmt, ...) {
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        mark_responded(rq, status);
        return http_queue_error(c, status, code, retry_after, allow, "%s", msg);
}

static enum MHD_Result respond_json(struct request *rq, struct MHD_Connection *c, unsigned status,
                                    struct json_object *o) {
        mark_responded(rq, status);
        return http_queue_json(c, status, o);
}

static int connection_fd(struct MHD_Connection *c) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

        return ci ? ci->connect_fd : -1;
}

static void add_str(struct json_object *o, const char *k, const char *v) {
        json_object_object_add(o, k, json_object_new_string(v));
}

static void log_job(const struct worker_job *j, const char *what) {
        char f[WORKER_JOB_ID_MAX + 16];

        snprintf(f, sizeof(f), "RBEE_JOB_ID=%s", j->id);
        log_struct(LOG_INFO, ((const char *[]) { f, NULL }), "Job %s: %s", j->id, what);
}

/* ---- simple endpoints ---------------------------------------------------- */

static enum MHD_Result handle_health(struct request *rq, struct MHD_Connection *c) {
        struct worker_inference *inf = rq->server->inf;
        struct json_object *o = json_object_new_object();

        if (!o)
                return MHD_NO;
        add_str(o, "status", "ok");
        add_str(o, "version", rbee_version());
        json_object_object_add(o, "api_version", json_object_new_int(1));
        add_str(o, "model", worker_inference_name(inf));
        add_str(o, "state", worker_state_name(worker_inference_state(inf, NULL, NULL)));
        json_object_object_add(o, "pid", json_object_new_int(getpid()));
        struct worker_gauges g;
        char idle[32];
        worker_inference_gauges(inf, &g);
        json_object_object_add(o, "busy", json_object_new_boolean(g.busy));
        json_object_object_add(o, "queue_depth", json_object_new_int64(g.queue_depth));
        json_object_object_add(o, "running", json_object_new_int64(g.running));
        json_object_object_add(o, "slots", json_object_new_int64(g.slots));
        json_object_object_add(o, "queue_capacity", json_object_new_int64(g.queue_capacity));
        double is = worker_inference_idle_seconds(inf);
        snprintf(idle, sizeof(idle), "%.3f", is);
        json_object_object_add(o, "idle_seconds", json_object_new_double_s(is, idle));
        return respond_json(rq, c, 200, o);
}

static enum MHD_Result handle_ready(struct request *rq, struct MHD_Connection *c) {
        struct worker_inference *inf = rq->server->inf;
        struct json_object *o = json_object_new_object(), *p = json_object_new_object();
        unsigned done, total;
        enum worker_state st = worker_inference_state(inf, &done, &total);
        bool ready = st == WORKER_STATE_READY;

        if (!o || !p) {
                json_object_put(o);
                json_object_put(p);
                return MHD_NO;
        }
        json_object_object_add(o, "ready", json_object_new_boolean(ready));
        add_str(o, "state", worker_state_name(st));
        json_object_object_add(p, "done", json_object_new_int64(done));
        json_object_object_add(p, "total", json_object_new_int64(total));
        json_object_object_add(o, "progress", p);
        if (st == WORKER_STATE_FAILED) {
                const char *msg;
                (void) worker_inference_load_error(inf, &msg);
                add_str(o, "error", msg);
        }
        if (ready)
                return respond_json(rq, c, 200, o);

        /* Not an error object: the body says how far loading got. */
        _cleanup_(json_object_putp) struct json_object *body = o;
        const char *s;
        size_t n;
        struct MHD_Response *r;
        enum MHD_Result ret;

        s = json_to_string(body, &n);
        r = s ? MHD_create_response_from_buffer(n, (void *) s, MHD_RESPMEM_MUST_COPY) : NULL;
        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
        mark_responded(rq, 503);
        ret = MHD_queue_response(c, 503, r);
        MHD_destroy_response(r);
        return ret;
}

static struct json_object *model_object(struct worker_inference *inf) {
        struct json_object *m = json_object_new_object();

        if (!m)
                return NULL;
        add_str(m, "id", worker_inference_name(inf));
        add_str(m, "object", "model");
        json_object_object_add(m, "created", json_object_new_int64(worker_inference_loaded_at(inf)));
        add_str(m, "owned_by", "rbee");
        return m;
}

static enum MHD_Result handle_models(struct request *rq, struct MHD_Connection *c, const char *id) {
        struct worker_inference *inf = rq->server->inf;
        struct json_object *o, *data;

        if (id) {
                if (!streq(id, worker_inference_name(inf)))
                        return respond_error(rq, c, 404, "model_not_found", 0, NULL,
                                             "this worker serves '%s', not '%s'", worker_inference_name(inf), id);
                return respond_json(rq, c, 200, model_object(inf));
        }
        o = json_object_new_object();
        data = json_object_new_array();
        if (!o || !data) {
                json_object_put(o);
                json_object_put(data);
                return MHD_NO;
        }
        add_str(o, "object", "list");
        json_object_array_add(data, model_object(inf));
        json_object_object_add(o, "data", data);
        return respond_json(rq, c, 200, o);
}

static enum MHD_Result handle_metrics(struct request *rq, struct MHD_Connection *c) {
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(1u << 20);
        struct worker_gauges g;
        struct http_guard_stats gs;

        worker_inference_gauges(rq->server->inf, &g);
        http_guard_get_stats(rq->server->guard, &gs);
        if (worker_metrics_render(rq->server->metrics, &g, worker_inference_name(rq->server->inf), &b) < 0 ||
            strbuf_printf(&b,
                          "# HELP rbee_worker_connections_refused_total Connections refused: the client address "
                          "already held --max-conns-per-peer.\n"
                          "# TYPE rbee_worker_connections_refused_total counter\n"
                          "rbee_worker_connections_refused_total %llu\n"
                          "# HELP rbee_worker_slow_requests_total Connections closed because a request's headers "
                          "or body did not arrive in time.\n"
                          "# TYPE rbee_worker_slow_requests_total counter\n"
                          "rbee_worker_slow_requests_total %llu\n",
                          (unsigned long long) gs.refused, (unsigned long long) gs.timed_out) < 0)
                return respond_error(rq, c, 500, "internal_error", 0, NULL, "cannot render metrics");
        mark_responded(rq, 200);
        return http_queue_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "", b.len);
}

static enum MHD_Result cancel_by_id(struct request *rq, struct MHD_Connection *c, const char *id) {
        struct json_object *o;
        int r;

        if (!worker_job_id_is_valid(id))
                return respond_error(rq, c, 400, "invalid_request", 0, NULL,
                                     "a job id is 1-%d characters of [A-Za-z0-9._:-]", WORKER_JOB_ID_MAX);
        r = worker_inference_cancel(rq->server->inf, id);
        if (r == -ENOENT)
                return respond_error(rq, c, 404, "job_not_found", 0, NULL, "no job '%s'", id);
        o = json_object_new_object();
        if (!o)
                return MHD_NO;
        add_str(o, "job_id", id);
        json_object_object_add(o, "cancelled", json_object_new_boolean(r == 0));
        add_str(o, "state", r == 0 ? "cancelling" : "finished");
        return respond_json(rq, c, 200, o);
}

static enum MHD_Result handle_cancel_post(struct request *rq, struct MHD_Connection *c) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        char err[256];
        const char *id = NULL;
        int r;

        r = json_parse_strict(rq->body.data ? rq->body.data : "", rq->body.len, 8, &o, err, sizeof(err));
        if (r < 0)
                return respond_error(rq, c, 400, "invalid_json", 0, NULL, "%s", rq->body.len ? err : "the request has no body");
        if (!json_object_is_type(o, json_type_object))
                return respond_error(rq, c, 400, "invalid_request", 0, NULL, "the request body must be a JSON object");
        r = json_get_string(o, "job_id", &id, NULL);
        if (r <= 0)
                return respond_error(rq, c, 400, "invalid_request", 0, NULL, "'job_id' (a string) is required");
        return cancel_by_id(rq, c, id);
}

/* ---- inference ----------------------------------------------------------- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
        struct stream *st = cls;
        ssize_t n;

        n = worker_job_read(st->job, buf, max, st->fd);
        if (n > 0)
                return n;
        if (n == 0)
                return MHD_CONTENT_READER_END_OF_STREAM;
        log_job(st->job, "client disconnected, cancelling");
        worker_inference_cancel_job(st->server->inf, st->job, WORKER_CANCEL_DISCONNECT);
        return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls) {
        struct stream *st = cls;
        struct worker_server *s = st->server;

        worker_job_unref(st->job);
        free(st);
        pthread_mutex_lock(&s->lock);
        s->n_streams--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

static enum MHD_Result not_ready(struct request *rq, struct MHD_Connection *c, enum worker_state st) {
        if (st == WORKER_STATE_LOADING)
                return respond_error(rq, c, 503, "loading", 2, NULL, "the model is still loading");
        if (st == WORKER_STATE_FAILED)
                return respond_error(rq, c, 503, "load_failed", 0, NULL, "the model failed to load");
        return respond_error(rq, c, 503, "shutting_down", 0, NULL, "the worker is shutting down");
}

static enum MHD_Result handle_inference(struct request *rq, struct MHD_Connection *c, enum worker_api api) {
        struct worker_server *s = rq->server;
        struct worker_request req;
        _cleanup_(worker_job_unrefp) struct worker_job *j = NULL;
        char err[512] = "", id[WORKER_JOB_ID_MAX + 1];
        enum worker_state st;
        int r;

        st = worker_inference_state(s->inf, NULL, NULL);
        if (st != WORKER_STATE_READY)
                return not_ready(rq, c, st);

        struct worker_limits lim = worker_inference_limits(s->inf);
        r = worker_request_parse(api, rq->body.data ? rq->body.data : "", rq->body.len, &lim, &req, err, sizeof(err));
        if (r == -ENOMEM)
                return respond_error(rq, c, 500, "internal_error", 0, NULL, "out of memory");
        if (r < 0)
                return respond_error(rq, c, 400, r == -EBADMSG ? "invalid_json" : "invalid_request", 0, NULL, "%s", err);

        if (req.job_id[0])
                snprintf(id, sizeof(id), "%s", req.job_id);
        else
                worker_inference_new_job_id(id);
        r = worker_job_new(&req, id, worker_inference_name(s->inf), &j);
        worker_request_done(&req);
        if (r < 0)
                return respond_error(rq, c, 500, "internal_error", 0, NULL, "cannot create a job: %s", strerror(-r));

        r = worker_inference_prepare(s->inf, j, err, sizeof(err));
        if (r == -E2BIG)
                return respond_error(rq, c, 400, "context_length_exceeded", 0, NULL, "%s", err);
        if (r == -EAGAIN)
                return not_ready(rq, c, worker_inference_state(s->inf, NULL, NULL));
        if (r == -ENOMEM)
                return respond_error(rq, c, 500, "internal_error", 0, NULL, "out of memory");
        if (r < 0)
                return respond_error(rq, c, 400, "invalid_request", 0, NULL, "%s", err);

        r = worker_inference_submit(s->inf, j);
        if (r == -EBUSY) {
                atomic_fetch_add(&s->metrics->rejected_queue_full, 1);
                return respond_error(rq, c, 503, "queue_full", 1, NULL,
                                     "the worker is busy and its queue is full; retry later");
        }
        if (r == -EEXIST)
                return respond_error(rq, c, 409, "job_exists", 0, NULL, "a job with id '%s' is already active", id);
        if (r == -EAGAIN || r == -ESHUTDOWN)
                return not_ready(rq, c, worker_inference_state(s->inf, NULL, NULL));
        if (r < 0)
                return respond_error(rq, c, 500, "internal_error", 0, NULL, "cannot queue the job: %s", strerror(-r));
        rq->job = worker_job_ref(j);

        int fd = connection_fd(c);
        if (j->req.stream) {
                struct stream *stc = calloc(1, sizeof(*stc));
                struct MHD_Response *resp;
                enum MHD_Result ret;

                if (!stc) {
                        worker_inference_cancel_job(s->inf, j, WORKER_CANCEL_DISCONNECT);
                        return MHD_NO;
                }
                *stc = (struct stream) { .server = s, .job = worker_job_ref(j), .fd = fd };
                pthread_mutex_lock(&s->lock);
                s->n_streams++;
                pthread_mutex_unlock(&s->lock);
                resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, stc, stream_free);
                if (!resp) {
                        stream_free(stc);
                        worker_inference_cancel_job(s->inf, j, WORKER_CANCEL_DISCONNECT);
                        return MHD_NO;
                }
                http_add_sse_headers(resp);
                MHD_add_response_header(resp, "X-Rbee-Job-Id", j->id);
                mark_responded(rq, 200);
                ret = MHD_queue_response(c, 200, resp);
                MHD_destroy_response(resp);
                return ret;
        }

        r = worker_job_wait(j, fd);
        if (r < 0) {
                log_job(j, "client disconnected, cancelling");
                worker_inference_cancel_job(s->inf, j, WORKER_CANCEL_DISCONNECT);
                mark_responded(rq, 499);
                return MHD_NO;
        }
        unsigned status;
        struct json_object *o;
        pthread_mutex_lock(&j->lock);
        o = worker_format_result(j, &status);
        pthread_mutex_unlock(&j->lock);
        if (!o)
                return respond_error(rq, c, 500, "internal_error", 0, NULL, "out of memory");
        struct MHD_Response *resp;
        const char *txt;
        size_t n;
        txt = json_to_string(o, &n);
        resp = txt ? MHD_create_response_from_buffer(n, (void *) txt, MHD_RESPMEM_MUST_COPY) : NULL;
        json_object_put(o);
        if (!resp)
                return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(resp, "X-Rbee-Job-Id", j->id);
        if (status == 503)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
        mark_responded(rq, status);
        enum MHD_Result ret = MHD_queue_response(c, status, resp);
        MHD_destroy_response(resp);
        return ret;
}

/* ---- routing ------------------------------------------------------------- */

struct route {
        const char *path;
        bool prefix;                    /* path + "{id}" */
        enum worker_route route;
        const char *allow;
};

static const struct route routes[] = {
        { "/v1/health", false, WORKER_ROUTE_HEALTH, "GET" },
        { "/v1/ready", false, WORKER_ROUTE_READY, "GET" },
        { "/metrics", false, WORKER_ROUTE_METRICS, "GET" },
        { "/v1/models", false, WORKER_ROUTE_MODELS, "GET" },
        { "/v1/models/", true, WORKER_ROUTE_MODELS, "GET" },
        { "/v1/inference", false, WORKER_ROUTE_INFERENCE, "POST" },
        { "/v1/inference/", true, WORKER_ROUTE_CANCEL, "DELETE" },
        { "/v1/cancel", false, WORKER_ROUTE_CANCEL, "POST" },
        { "/v1/chat/completions", false, WORKER_ROUTE_CHAT, "POST" },
        { "/v1/completions", false, WORKER_ROUTE_COMPLETIONS, "POST" },
};

static const struct route *find_route(const char *url, const char **ret_id) {
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                if (routes[i].prefix) {
                        if (str_startswith(url, routes[i].path) && url[strlen(routes[i].path)] &&
                            !strchr(url + strlen(routes[i].path), '/')) {
                                *ret_id = url + strlen(routes[i].path);
                                return &routes[i];
                        }
                } else if (streq(url, routes[i].path)) {
                        *ret_id = NULL;
                        return &routes[i];
                }
        }
        return NULL;
}

static enum MHD_Result dispatch(struct request *rq, struct MHD_Connection *c, const struct route *rt,
                                const char *id) {
        switch (rt->route) {
        case WORKER_ROUTE_HEALTH:
                return handle_health(rq, c);
        case WORKER_ROUTE_READY:
                return handle_ready(rq, c);
        case WORKER_ROUTE_METRICS:
                return handle_metrics(rq, c);
        case WORKER_ROUTE_MODELS:
                return handle_models(rq, c, id);
        case WORKER_ROUTE_CANCEL:
                return id ? cancel_by_id(rq, c, id) : handle_cancel_post(rq, c);
        case WORKER_ROUTE_INFERENCE:
                return handle_inference(rq, c, WORKER_API_NATIVE);
        case WORKER_ROUTE_CHAT:
                return handle_inference(rq, c, WORKER_API_CHAT);
        case WORKER_ROUTE_COMPLETIONS:
                return handle_inference(rq, c, WORKER_API_COMPLETION);
        default:
                return respond_error(rq, c, 404, "not_found", 0, NULL, "no such endpoint");
        }
}

static bool content_type_ok(struct MHD_Connection *c) {
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);

        /* Absent is fine (curl -d sets a form type, which we do refuse). */
        return !ct || strcasestr(ct, "json");
}

/* A refusal decided from the headers alone. It is sent once the body (if
 * any, and at most --max-body of it) has been read and dropped: answering in
 * the middle of an upload makes the kernel reset the connection, and the
 * client may then never see the answer. Only a body declared too large is
 * refused at once. */
static void refuse_later(struct request *rq, unsigned status, const char *code, const char *allow,
                         const char *fmt, ...) _printf_(5, 6);
static void refuse_later(struct request *rq, unsigned status, const char *code, const char *allow,
                         const char *fmt, ...) {
        va_list ap;

        rq->pending_status = status;
        rq->pending_code = code;
        rq->pending_allow = allow;
        va_start(ap, fmt);
        vsnprintf(rq->pending_message, sizeof(rq->pending_message), fmt, ap);
        va_end(ap);
}

/* First call for a request: headers only. Authentication comes before
 * everything else, so that a client without the key learns nothing, not
 * even which routes and methods exist. */
static enum MHD_Result on_headers(struct request *rq, struct MHD_Connection *c, const char *url, const char *method) {
        struct worker_server *s = rq->server;
        const struct route *rt;
        const char *id, *cl;
        uint64_t n;
        bool too_big = false;

        if (streq(method, "POST") || streq(method, "PUT")) {
                cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
                too_big = cl && parse_uint64(cl, &n) >= 0 && n > s->cfg.max_body;
        }
        rt = find_route(url, &id);
        rq->route = rt ? rt->route : WORKER_ROUTE_OTHER;
        /* GET /v1/health alone is open, as on the hive: load balancers probe it. */
        if (s->api_key && !(rt && rt->route == WORKER_ROUTE_HEALTH && streq(method, "GET")) &&
            !http_bearer_ok(c, s->api_key, s->cfg.api_key_len)) {
                /* A body declared too large is not worth draining only to refuse it. */
                if (too_big)
                        return respond_error(rq, c, 401, "unauthorized", 0, NULL,
                                             "a valid API key is required (Authorization: Bearer <key>)");
                refuse_later(rq, 401, "unauthorized", NULL,
                             "a valid API key is required (Authorization: Bearer <key>)");
                return MHD_YES;
        }
        if (too_big)
                return respond_error(rq, c, 413, "request_too_large", 0, NULL,
                                     "the request body is larger than %zu bytes", s->cfg.max_body);
        if (!rt)
                refuse_later(rq, 404, "not_found", NULL, "no endpoint %.200s %.200s", method, url);
        else if (!streq(method, rt->allow))
                refuse_later(rq, 405, "method_not_allowed", rt->allow, "%.200s does not allow %.20s (only %s)", url,
                             method, rt->allow);
        else if (streq(method, "POST") && !content_type_ok(c))
                refuse_later(rq, 415, "unsupported_media_type", NULL, "the request body must be application/json");
        return MHD_YES;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **con_cls) {
        struct worker_server *s = cls;
        struct request *rq = *con_cls;
        const struct route *rt;
        const char *id;

        if (!rq) {
                rq = calloc(1, sizeof(*rq));
                if (!rq)
                        return MHD_NO;
                rq->server = s;
                rq->method = method;
                snprintf(rq->url, sizeof(rq->url), "%s", url);
                strbuf_init(&rq->body, s->cfg.max_body);
                *con_cls = rq;
                http_guard_headers_received(c);
                return on_headers(rq, c, url, method);
        }
        if (*upload_data_size > 0) {
                size_t k = *upload_data_size;

                *upload_data_size = 0;
                if (rq->responded)
                        return MHD_YES;
                if (rq->pending_status || rq->body_too_big) {
                        /* Dropped, but not without end: past a hard cap the
                         * answer goes out at once, reset or not. */
                        if (ADD_OVERFLOW(rq->dropped, k, &rq->dropped) ||
                            rq->dropped > MAX(s->cfg.max_body * 4, (size_t) DRAIN_MAX))
                                return rq->pending_status
                                               ? respond_error(rq, c, rq->pending_status, rq->pending_code, 0,
                                                               rq->pending_allow, "%s", rq->pending_message)
                                               : respond_error(rq, c, 413, "request_too_large", 0, NULL,
                                                               "the request body is larger than %zu bytes",
                                                               s->cfg.max_body);
                        return MHD_YES;
                }
                if (strbuf_append(&rq->body, upload_data, k) < 0)
                        rq->body_too_big = true;
                return MHD_YES;
        }
        /* The whole request is in: from here on only the idle timeout applies
         * (a stream may stay quiet while the prompt is processed or queued). */
        http_guard_request_received(c);
        if (rq->responded)
                return MHD_YES;
        if (rq->pending_status)
                return respond_error(rq, c, rq->pending_status, rq->pending_code, 0, rq->pending_allow, "%s",
                                     rq->pending_message);
        if (rq->body_too_big)
                return respond_error(rq, c, 413, "request_too_large", 0, NULL,
                                     "the request body is larger than %zu bytes", s->cfg.max_body);
        rt = find_route(url, &id);
        return dispatch(rq, c, rt, id);
}

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                              enum MHD_RequestTerminationCode toe) {
        struct worker_server *s = cls;
        struct request *rq = *con_cls;

        http_guard_request_done(c);
        if (!rq)
                return;
        /* However the request ended, a job nobody will read any more must not
         * hold the model: this is where a dropped connection frees its slot. */
        if (rq->job && !worker_job_is_terminal(rq->job) &&
            worker_job_cancel_reason(rq->job) == WORKER_CANCEL_NONE) {
                log_job(rq->job, "connection closed before the end, cancelling");
                worker_inference_cancel_job(s->inf, rq->job, WORKER_CANCEL_DISCONNECT);
        }
        if (!rq->counted)
                worker_metrics_request(s->metrics, rq->route, rq->status ? rq->status : 500);
        log_debug("%s %s -> %u", rq->method, rq->url, rq->status);
        worker_job_unref(rq->job);
        strbuf_done(&rq->body);
        free(rq);
        *con_cls = NULL;
}

static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
        struct worker_server *s = cls;

        if (!s->api_key && !s->cfg.listen_is_unix && !sockaddr_is_local(addr, addrlen)) {
                log_warning("Refusing a connection from a non-loopback address: no API key is configured");
                return MHD_NO;
        }
        return http_guard_accept(s->guard, addr, addrlen);
}

int worker_server_new(const struct worker_server_config *cfg, struct worker_inference *inf,
                      struct worker_metrics *metrics, struct worker_server **ret) {
        struct worker_server *s;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->cfg = *cfg;
        if (cfg->api_key) {
                s->api_key = strndup(cfg->api_key, cfg->api_key_len);
                if (!s->api_key) {
                        free(s);
                        return -ENOMEM;
                }
        }
        s->cfg.api_key = s->api_key;
        s->inf = inf;
        s->metrics = metrics;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        r = http_guard_new(&cfg->guard, &s->guard);
        if (r < 0) {
                pthread_cond_destroy(&s->cond);
                pthread_mutex_destroy(&s->lock);
                free(s->api_key);
                free(s);
                return r;
        }

        s->daemon = MHD_start_daemon(
                MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ITC |
                        MHD_USE_ERROR_LOG,
                0, accept_policy, s, access_handler, s,
                MHD_OPTION_EXTERNAL_LOGGER, http_guard_mhd_log, NULL,
                MHD_OPTION_LISTEN_SOCKET, cfg->listen_fd,
                MHD_OPTION_NOTIFY_COMPLETED, request_completed, s,
                MHD_OPTION_NOTIFY_CONNECTION, http_guard_notify, s->guard,
                MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
                MHD_OPTION_CONNECTION_TIMEOUT, cfg->idle_timeout_s,
                MHD_OPTION_END);
        if (!s->daemon) {
                http_guard_free(s->guard);
                pthread_cond_destroy(&s->cond);
                pthread_mutex_destroy(&s->lock);
                free(s->api_key);
                free(s);
                return -EIO;
        }
        *ret = s;
        return 0;
}

void worker_server_quiesce(struct worker_server *s) {
        MHD_socket fd;

        if (!s || s->quiesced)
                return;
        fd = MHD_quiesce_daemon(s->daemon);
        if (fd != MHD_INVALID_SOCKET)
                close(fd);
        s->quiesced = true;
}

int worker_server_drain(struct worker_server *s, uint64_t timeout_usec) {
        struct timespec ts;
        int r = 0;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t) (timeout_usec / 1000000u);
        ts.tv_nsec += (long) (timeout_usec % 1000000u) * 1000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&s->lock);
        while (s->n_streams > 0 && r == 0)
                r = pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        pthread_mutex_unlock(&s->lock);
        return r == 0 ? 0 : -ETIMEDOUT;
}

struct worker_server *worker_server_free(struct worker_server *s) {
        if (!s)
                return NULL;
        MHD_stop_daemon(s->daemon);
        /* After the daemon: closing its connections unregisters them from the guard. */
        http_guard_free(s->guard);
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        if (s->api_key) {
                explicit_bzero(s->api_key, s->cfg.api_key_len);
                free(s->api_key);
        }
        free(s);
        return NULL;
}
