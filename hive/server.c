/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hive.h"
#include "http-guard.h"
#include "http-util.h"
#include "json-util.h"
#include "logging.h"
#include "macros.h"
#include "requests.h"
#include "server.h"
#include "sha256.h"
#include "util.h"
#include "wclient.h"

#define MAX_BODY (8u << 20)
#define API_VERSION 1

#ifndef RBEE_VERSION
#define RBEE_VERSION "0.1.0"
#endif

struct hive_server {
        struct hive *h;
        struct MHD_Daemon *daemon;
        struct http_guard *guard;
};

struct request {
        struct hive *h;
        struct strbuf body;
        bool too_big;
        bool unauthorized;              /* decided on the headers: the body is read but never kept */
        bool responded;
        unsigned status;
        char route[48];
};

static void count_status(struct hive *h, unsigned status) {
        unsigned k = status / 100;

        pthread_mutex_lock(&h->lock);
        h->metrics.requests[k >= 1 && k <= 5 ? k : 0]++;
        pthread_mutex_unlock(&h->lock);
}

static enum MHD_Result reply_json(struct request *rq, struct MHD_Connection *c, unsigned status,
                                  struct json_object *o) {
        rq->responded = true;
        rq->status = status;
        return http_queue_json(c, status, o);
}

static enum MHD_Result reply_error(struct request *rq, struct MHD_Connection *c, unsigned status, const char *code,
                                   const char *fmt, ...) _printf_(5, 6);
static enum MHD_Result reply_req_error(struct request *rq, struct MHD_Connection *c, const struct hive_req_error *e) {
        rq->responded = true;
        rq->status = e->status;
        return http_queue_error(c, e->status, e->code, e->status == 503 ? 1 : 0,
                                e->status == 405 ? "GET, POST, DELETE" : NULL, "%s", e->message);
}

static enum MHD_Result reply_error(struct request *rq, struct MHD_Connection *c, unsigned status, const char *code,
                                   const char *fmt, ...) {
        struct hive_req_error e;
        va_list ap;

        /* Formatted as requests.c's refusals are: valid UTF-8 whatever the ids in the URL. */
        va_start(ap, fmt);
        hive_req_error_vset(&e, status, code, fmt, ap);
        va_end(ap);
        return reply_req_error(rq, c, &e);
}

static int client_fd(struct MHD_Connection *c) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

        return ci ? ci->connect_fd : -1;
}

/* Has the client gone? Its socket reads EOF or reports a hangup. */
static bool client_gone(int fd) {
        struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
        char b;

        if (fd < 0)
                return false;
        if (poll(&p, 1, 0) <= 0)
                return false;
        if (p.revents & (POLLRDHUP | POLLHUP | POLLERR))
                return true;
        return (p.revents & POLLIN) && recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* ---- body parsing --------------------------------------------------------- */

static int parse_body(struct request *rq, struct MHD_Connection *c, struct json_object **ret) {
        struct hive_req_error e;
        int r;

        r = hive_req_parse_body(rq->body.data, rq->body.len, ret, &e);
        if (r < 0)
                reply_req_error(rq, c, &e);
        return r;
}

/* ---- health, backends, metrics -------------------------------------------- */

static enum MHD_Result handle_health(struct request *rq, struct MHD_Connection *c) {
        struct hive *h = rq->h;
        struct json_object *o = json_object_new_object(), *cat = json_object_new_object();
        size_t n_models = 0;

        if (!o || !cat) {
                json_object_put(o);
                json_object_put(cat);
                return MHD_NO;
        }
        (void) hive_catalog_count(h->catalog, &n_models);
        pthread_mutex_lock(&h->lock);
        json_object_object_add(o, "status", json_object_new_string(h->catalog_recovered_from ? "degraded" : "ok"));
        json_object_object_add(o, "version", json_object_new_string(RBEE_VERSION));
        json_object_object_add(o, "api_version", json_object_new_int(API_VERSION));
        json_object_object_add(o, "mode", json_object_new_string(h->units->name));
        json_object_object_add(cat, "path", json_object_new_string(h->catalog_path));
        json_object_object_add(cat, "models", json_object_new_int64((int64_t) n_models));
        json_object_object_add(cat, "recovered_from", json_new_string_or_null(h->catalog_recovered_from));
        json_object_object_add(o, "catalog", cat);
        json_object_object_add(o, "workers", json_object_new_int64((int64_t) h->n_workers));
        json_object_object_add(o, "uptime_seconds", json_object_new_int64(hive_wall_sec() - h->started_at));
        pthread_mutex_unlock(&h->lock);
        return reply_json(rq, c, 200, o);
}

static enum MHD_Result handle_backends(struct request *rq, struct MHD_Connection *c) {
        struct hive_backends b;
        struct hive *h = rq->h;

        pthread_mutex_lock(&h->lock);
        b = h->backends;
        pthread_mutex_unlock(&h->lock);
        struct hive_backends fresh;
        if (hive_backends_detect(&fresh) >= 0)
                b.cpu = fresh.cpu;
        return reply_json(rq, c, 200, hive_backends_to_json(&b));
}

static enum MHD_Result handle_metrics(struct request *rq, struct MHD_Connection *c) {
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(1u << 20);
        static const char *const classes[] = { "other", "1xx", "2xx", "3xx", "4xx", "5xx" };
        struct hive *h = rq->h;
        unsigned by_state[HIVE_WORKER_GONE + 1] = {};
        size_t n_models = 0;

        (void) hive_catalog_count(h->catalog, &n_models);
        pthread_mutex_lock(&h->lock);
        struct hive_metrics m = h->metrics;
        for (size_t i = 0; i < h->n_workers; i++)
                by_state[h->workers[i]->state]++;
        pthread_mutex_unlock(&h->lock);
        struct http_guard_stats gs = {};
        if (h->guard)
                http_guard_get_stats(h->guard, &gs);

        (void) strbuf_puts(&b, "# HELP rbee_hive_requests_total HTTP requests by status class.\n"
                               "# TYPE rbee_hive_requests_total counter\n");
        for (size_t i = 0; i < ELEMENTSOF(classes); i++)
                (void) strbuf_printf(&b, "rbee_hive_requests_total{status=\"%s\"} %llu\n", classes[i],
                                     (unsigned long long) m.requests[i]);
        (void) strbuf_puts(&b, "# HELP rbee_hive_workers Workers by state.\n# TYPE rbee_hive_workers gauge\n");
        for (int s = 0; s <= HIVE_WORKER_GONE; s++)
                (void) strbuf_printf(&b, "rbee_hive_workers{state=\"%s\"} %u\n", hive_worker_state_name(s), by_state[s]);
        (void) strbuf_printf(&b,
                             "# HELP rbee_hive_models Models in the catalog.\n# TYPE rbee_hive_models gauge\n"
                             "rbee_hive_models %zu\n"
                             "# TYPE rbee_hive_worker_starts_total counter\nrbee_hive_worker_starts_total %llu\n"
                             "# TYPE rbee_hive_worker_failures_total counter\nrbee_hive_worker_failures_total %llu\n"
                             "# TYPE rbee_hive_rejected_total counter\nrbee_hive_rejected_total %llu\n"
                             "# TYPE rbee_hive_tokens_total counter\nrbee_hive_tokens_total %llu\n"
                             "# TYPE rbee_hive_downloads_total counter\n"
                             "rbee_hive_downloads_total{result=\"ok\"} %llu\n"
                             "rbee_hive_downloads_total{result=\"failed\"} %llu\n"
                             "# TYPE rbee_hive_download_bytes_total counter\nrbee_hive_download_bytes_total %llu\n"
                             "# HELP rbee_hive_connections_refused_total Connections refused: the client address held "
                             "--max-conns-per-peer.\n"
                             "# TYPE rbee_hive_connections_refused_total counter\nrbee_hive_connections_refused_total %llu\n"
                             "# HELP rbee_hive_slow_requests_total Connections closed because a request did not arrive "
                             "within --header-timeout/--body-timeout.\n"
                             "# TYPE rbee_hive_slow_requests_total counter\nrbee_hive_slow_requests_total %llu\n",
                             n_models, (unsigned long long) m.worker_starts, (unsigned long long) m.worker_failures,
                             (unsigned long long) m.rejected, (unsigned long long) m.tokens,
                             (unsigned long long) m.downloads_ok, (unsigned long long) m.downloads_failed,
                             (unsigned long long) m.download_bytes, (unsigned long long) gs.refused,
                             (unsigned long long) gs.timed_out);
        rq->responded = true;
        rq->status = 200;
        return http_queue_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "", b.len);
}

/* ---- models ----------------------------------------------------------------- */

static bool model_loaded(struct hive *h, const char *id) {
        bool r;

        pthread_mutex_lock(&h->lock);
        struct hive_worker *w = hive_worker_find(h, id);
        r = w && w->state == HIVE_WORKER_READY;
        pthread_mutex_unlock(&h->lock);
        return r;
}

static enum MHD_Result handle_models_list(struct request *rq, struct MHD_Connection *c) {
        _cleanup_(hive_model_listp) struct hive_model **l = NULL;
        struct json_object *o, *data;
        int r;

        r = hive_catalog_list(rq->h->catalog, &l, NULL);
        if (r < 0)
                return reply_error(rq, c, 500, "internal_error", "cannot read the catalog: %s", strerror(-r));
        o = json_object_new_object();
        data = json_object_new_array();
        if (!o || !data) {
                json_object_put(o);
                json_object_put(data);
                return MHD_NO;
        }
        for (struct hive_model **m = l; *m; m++)
                json_object_array_add(data, hive_model_to_json(*m, model_loaded(rq->h, (*m)->id)));
        json_object_object_add(o, "object", json_object_new_string("list"));
        json_object_object_add(o, "data", data);
        return reply_json(rq, c, 200, o);
}

static enum MHD_Result reply_model(struct request *rq, struct MHD_Connection *c, const char *id, unsigned status) {
        _cleanup_(hive_model_freep) struct hive_model *m = NULL;
        int r;

        r = hive_catalog_get(rq->h->catalog, id, &m);
        if (r == -ENOENT)
                return reply_error(rq, c, 404, "model_not_found", "no model '%.200s' in the catalog", id);
        if (r < 0)
                return reply_error(rq, c, 500, "internal_error", "cannot read the catalog: %s", strerror(-r));
        return reply_json(rq, c, status, hive_model_to_json(m, model_loaded(rq->h, id)));
}

static enum MHD_Result handle_model_register(struct request *rq, struct MHD_Connection *c) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct hive_model m = {};
        _cleanup_(freep) char *source = NULL, *real = NULL;
        struct hive_req_register req;
        struct hive_req_error e;
        struct hive_backends b;
        const char *id, *path, *backend;
        char err[512], sha[65];
        int r;

        if (parse_body(rq, c, &o) < 0)
                return MHD_YES;
        pthread_mutex_lock(&rq->h->lock);
        b = rq->h->backends;
        pthread_mutex_unlock(&rq->h->lock);
        if (hive_req_register(o, &b, &req, &e) < 0)
                return reply_req_error(rq, c, &e);
        id = req.id;
        path = req.path;
        backend = req.backend;
        real = realpath(path, NULL);
        if (!real)
                return reply_error(rq, c, 422, "invalid_model", "cannot open %.300s: %m", path);
        r = hive_model_inspect(real, &m, err, sizeof(err));
        if (r < 0) {
                free(m.architecture);
                free(m.quantization);
                free(m.name);
                return reply_error(rq, c, 422, "invalid_model", "%s", err);
        }
        r = hive_sha256_file(real, sha, NULL);
        if (asprintf(&source, "file://%s", real) < 0)
                r = -ENOMEM;
        m.id = (char *) id;
        m.local_path = real;
        m.source = source;
        m.sha256 = r >= 0 ? sha : NULL;
        m.backend = (char *) (backend ? backend : "cpu");
        m.device = req.device;
        m.created_at = hive_wall_sec();
        r = hive_catalog_add(rq->h->catalog, &m);
        free(m.architecture);
        free(m.quantization);
        free(m.name);
        m.architecture = m.quantization = m.name = NULL;
        if (r == -EEXIST)
                return reply_error(rq, c, 409, "model_exists", "a model '%s' is already in the catalog", id);
        if (r == -EBUSY)
                return reply_error(rq, c, 503, "catalog_busy", "the catalog is locked by another process: try again");
        if (r < 0)
                return reply_error(rq, c, 500, "internal_error", "cannot write the catalog: %s", strerror(-r));
        log_struct(LOG_INFO, ((const char *[]) { "RBEE_EVENT=model-register", NULL }), "Registered model %s (%s)", id,
                   real);
        return reply_model(rq, c, id, 201);
}

static enum MHD_Result handle_model_delete(struct request *rq, struct MHD_Connection *c, const char *id) {
        _cleanup_(hive_model_freep) struct hive_model *m = NULL;
        struct json_object *o;
        bool file_removed = false;
        int r;

        r = hive_catalog_get(rq->h->catalog, id, &m);
        if (r == -ENOENT)
                return reply_error(rq, c, 404, "model_not_found", "no model '%.200s' in the catalog", id);
        if (r < 0)
                return reply_error(rq, c, 500, "internal_error", "cannot read the catalog: %s", strerror(-r));
        /* The worker goes first: it maps the file. */
        r = hive_worker_stop(rq->h, id, true);
        if (r < 0 && r != -ENOENT)
                return reply_error(rq, c, 409, "model_busy", "cannot stop the worker of '%s': %s", id, strerror(-r));
        r = hive_catalog_remove(rq->h->catalog, id);
        if (r == -EBUSY)
                return reply_error(rq, c, 503, "catalog_busy", "the catalog is locked by another process: try again");
        if (r < 0 && r != -ENOENT)
                return reply_error(rq, c, 500, "internal_error", "cannot write the catalog: %s", strerror(-r));
        if (m->managed && unlink(m->local_path) >= 0)
                file_removed = true;
        log_struct(LOG_INFO, ((const char *[]) { "RBEE_EVENT=model-remove", NULL }), "Removed model %s%s", id,
                   file_removed ? " and its file" : "");
        o = json_object_new_object();
        if (!o)
                return MHD_NO;
        json_object_object_add(o, "id", json_object_new_string(id));
        json_object_object_add(o, "removed", json_object_new_boolean(true));
        json_object_object_add(o, "file_removed", json_object_new_boolean(file_removed));
        return reply_json(rq, c, 200, o);
}

/* ---- jobs ------------------------------------------------------------------- */

static struct json_object *job_created(const struct hive_job *j, bool existing) {
        struct json_object *o = hive_job_to_json_locked(j);

        if (o)
                json_object_object_add(o, "existing", json_object_new_boolean(existing));
        return o;
}

static enum MHD_Result start_download(struct request *rq, struct MHD_Connection *c, struct json_object *o) {
        struct hive *h = rq->h;
        _cleanup_(hive_req_download_done) struct hive_req_download req = {};
        _cleanup_(hive_model_freep) struct hive_model *existing = NULL;
        struct hive_req_error e;
        const char *source, *id;
        struct hive_job *j;
        int r;

        if (hive_req_download(o, &req, &e) < 0)
                return reply_req_error(rq, c, &e);
        source = req.source;
        id = req.id;

        pthread_mutex_lock(&h->lock);
        /* One download per model: a second ask joins the first. */
        for (size_t i = 0; i < h->n_jobs; i++) {
                j = h->jobs[i];
                if (j->type == HIVE_JOB_DOWNLOAD && !j->terminal && streq(j->model, id)) {
                        struct json_object *resp = job_created(j, true);
                        pthread_mutex_unlock(&h->lock);
                        return reply_json(rq, c, 202, resp);
                }
        }
        pthread_mutex_unlock(&h->lock);
        if (hive_catalog_get(h->catalog, id, &existing) >= 0)
                return reply_error(rq, c, 409, "model_exists", "a model '%s' is already in the catalog (from %s)", id,
                                   strna(existing->source));

        pthread_mutex_lock(&h->lock);
        r = hive_job_new_locked(h, HIVE_JOB_DOWNLOAD, id, NULL, &j);
        if (r >= 0) {
                j->source = strdup(source);
                j->request = json_object_get(o);
                r = hive_job_start_thread_locked(h, j);
                if (r < 0) {
                        (void) hive_job_error_locked(h, j, "overloaded", "too many jobs are running");
                        pthread_mutex_unlock(&h->lock);
                        return reply_error(rq, c, 503, "overloaded", "too many jobs are running (%u)", h->opt.max_jobs);
                }
        }
        struct json_object *resp = r >= 0 ? job_created(j, false) : NULL;
        pthread_mutex_unlock(&h->lock);
        if (r < 0)
                return reply_error(rq, c, 500, "internal_error", "cannot create the job: %s", strerror(-r));
        log_info("Download job %s: %s -> %s", j->id, source, id);
        return reply_json(rq, c, 202, resp);
}

/* Read an inference body (hive_req_infer(), free req with
 * hive_req_infer_done() whatever the result) and refuse at once what
 * cannot work: a model not in the catalog, a backend it cannot have. */
static int check_infer_body(struct request *rq, struct MHD_Connection *c, struct json_object *o,
                            struct hive_req_infer *req) {
        _cleanup_(hive_model_freep) struct hive_model *m = NULL;
        struct hive_req_error e;
        const char *model, *backend;
        int64_t device;
        int r;

        r = hive_req_infer(o, req, &e);
        if (r < 0) {
                reply_req_error(rq, c, &e);
                return r;
        }
        model = req->model;
        backend = req->backend;
        device = req->device;
        r = hive_catalog_get(rq->h->catalog, model, &m);
        if (r == -ENOENT) {
                reply_error(rq, c, 404, "model_not_found", "no model '%s' in the catalog: register or download it first",
                            model);
                return r;
        }
        if (r < 0) {
                reply_error(rq, c, 500, "internal_error", "cannot read the catalog: %s", strerror(-r));
                return r;
        }
        /* A backend this machine lacks, or another one than the running
         * worker's, is refused now rather than as a stream holding one
         * error. The acquire checks again, against races. */
        if (backend || device >= 0) {
                struct hive *h = rq->h;
                char err[512];

                pthread_mutex_lock(&h->lock);
                struct hive_worker *w = hive_worker_find(h, model);
                if (w && (w->state == HIVE_WORKER_FAILED || w->state == HIVE_WORKER_GONE ||
                          w->state == HIVE_WORKER_STOPPING))
                        w = NULL;
                r = w ? hive_worker_check_placement_locked(h, w, backend, (int) device, err, sizeof(err))
                      : hive_backends_check(&h->backends, backend, device < 0 ? 0 : (int) device, 0, err, sizeof(err));
                pthread_mutex_unlock(&h->lock);
                if (r == -ENODEV || r == -EOPNOTSUPP) {
                        reply_error(rq, c, 400, "backend_unavailable", "%s", err);
                        return r;
                }
        }
        return 0;
}

/* id: the client's job id (NULL: a random one). */
static int new_infer_job(struct request *rq, struct MHD_Connection *c, struct json_object *o, const char *model,
                         const char *id, struct hive_job **ret) {
        struct hive *h = rq->h;
        struct hive_job *j;
        int r;

        pthread_mutex_lock(&h->lock);
        /* Refuse at once what admission would refuse anyway, so that the
         * client gets a 503 and not a stream holding one error. */
        struct hive_worker *w = hive_worker_find(h, model);
        unsigned limit = w ? hive_worker_request_limit_locked(h, w) : 0;
        if (w && w->state != HIVE_WORKER_FAILED && w->active >= limit) {
                h->metrics.rejected++;
                pthread_mutex_unlock(&h->lock);
                reply_error(rq, c, 503, "overloaded", "model '%s' is busy: %u requests running or queued (limit %u)",
                            model, w->active, limit);
                return -EBUSY;
        }
        r = hive_job_new_locked(h, HIVE_JOB_INFER, model, id, &j);
        if (r == -EEXIST) {
                pthread_mutex_unlock(&h->lock);
                reply_error(rq, c, 409, "job_exists", "a job with id '%s' is running", id);
                return r;
        }
        if (r >= 0) {
                j->request = json_object_get(o);
                r = hive_job_start_thread_locked(h, j);
                if (r < 0) {
                        (void) hive_job_error_locked(h, j, "overloaded", "too many jobs are running");
                        pthread_mutex_unlock(&h->lock);
                        reply_error(rq, c, 503, "overloaded", "too many jobs are running (%u)", h->opt.max_jobs);
                        return -EBUSY;
                }
                hive_job_ref(j);
        }
        pthread_mutex_unlock(&h->lock);
        if (r < 0) {
                reply_error(rq, c, 500, "internal_error", "cannot create the job: %s", strerror(-r));
                return r;
        }
        *ret = j;
        return 0;
}

static enum MHD_Result handle_jobs_post(struct request *rq, struct MHD_Connection *c) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(hive_req_infer_done) struct hive_req_infer req = {};
        enum hive_req_job_type type;
        struct hive_req_error e;
        struct hive_job *j;

        if (parse_body(rq, c, &o) < 0)
                return MHD_YES;
        if (hive_req_job_type(o, &type, &e) < 0)
                return reply_req_error(rq, c, &e);
        if (type == HIVE_REQ_JOB_DOWNLOAD)
                return start_download(rq, c, o);
        /* The job's thread sends the rest of the body to the worker. */
        json_object_object_del(o, "type");
        if (check_infer_body(rq, c, o, &req) < 0 || new_infer_job(rq, c, o, req.model, req.job_id, &j) < 0)
                return MHD_YES;
        pthread_mutex_lock(&rq->h->lock);
        struct json_object *resp = job_created(j, false);
        hive_job_unref_locked(rq->h, j);
        pthread_mutex_unlock(&rq->h->lock);
        return reply_json(rq, c, 202, resp);
}

static enum MHD_Result handle_jobs_list(struct request *rq, struct MHD_Connection *c) {
        struct json_object *o = json_object_new_object(), *a = json_object_new_array();

        if (!o || !a) {
                json_object_put(o);
                json_object_put(a);
                return MHD_NO;
        }
        pthread_mutex_lock(&rq->h->lock);
        for (size_t i = 0; i < rq->h->n_jobs; i++)
                json_object_array_add(a, hive_job_to_json_locked(rq->h->jobs[i]));
        pthread_mutex_unlock(&rq->h->lock);
        json_object_object_add(o, "jobs", a);
        return reply_json(rq, c, 200, o);
}

static enum MHD_Result handle_job(struct request *rq, struct MHD_Connection *c, const char *method, const char *id) {
        struct hive *h = rq->h;
        struct hive_job *j;
        struct json_object *o;

        pthread_mutex_lock(&h->lock);
        j = hive_job_find_locked(h, id);
        if (!j) {
                pthread_mutex_unlock(&h->lock);
                return reply_error(rq, c, 404, "job_not_found", "no job '%.100s'", id);
        }
        if (streq(method, "DELETE")) {
                hive_job_cancel_locked(h, j);
                hive_wconn_abort(j->conn);
        }
        o = hive_job_to_json_locked(j);
        /* Decided under the lock: the job's thread may end it any moment now. */
        if (o && streq(method, "DELETE") && j->cancel && !j->terminal)
                json_object_object_add(o, "state", json_object_new_string("cancelled"));
        pthread_mutex_unlock(&h->lock);
        return reply_json(rq, c, 200, o);
}

/* SSE reader over a job's log. */
struct job_stream {
        struct hive *h;
        struct hive_job *j;
        size_t idx, off;
        int fd;
        int watch_fd;           /* readable when the job changed (hive_job_watch_locked) */
        bool owner;             /* the client's disconnect cancels the job */
};

static ssize_t job_stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
        struct job_stream *s = cls;
        struct hive *h = s->h;
        struct hive_job *j = s->j;

        pthread_mutex_lock(&h->lock);
        for (;;) {
                if (s->idx < j->n_events) {
                        size_t n = 0;
                        while (s->idx < j->n_events && n < max) {
                                const char *f = j->events[s->idx];
                                size_t fl = strlen(f), k = MIN(fl - s->off, max - n);
                                memcpy(buf + n, f + s->off, k);
                                n += k;
                                s->off += k;
                                if (s->off == fl) {
                                        s->idx++;
                                        s->off = 0;
                                }
                        }
                        pthread_mutex_unlock(&h->lock);
                        return (ssize_t) n;
                }
                if (j->terminal) {
                        pthread_mutex_unlock(&h->lock);
                        return MHD_CONTENT_READER_END_OF_STREAM;
                }
                if (h->stopping) {
                        /* As shutdown_streams() in main.c says it: a download is only paused. */
                        (void) hive_job_error_locked(h, j, "shutting_down", "%s",
                                                     j->type == HIVE_JOB_DOWNLOAD
                                                             ? "the hive is shutting down: the download resumes when it starts again"
                                                             : "the hive is shutting down");
                        hive_job_cancel_locked(h, j);
                        hive_wconn_abort(j->conn);
                        continue;
                }
                /* The next event or the client's hang-up, whichever comes
                 * first: a client that waits in a queue sees no event for a
                 * long time, and must not hold its place there. */
                pthread_mutex_unlock(&h->lock);
                int r = hive_job_wait(s->watch_fd, s->fd);
                pthread_mutex_lock(&h->lock);
                if (r < 0) {
                        if (s->owner) {
                                hive_job_cancel_locked(h, j);
                                hive_wconn_abort(j->conn);
                        }
                        pthread_mutex_unlock(&h->lock);
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                }
        }
}

static void job_stream_free(void *cls) {
        struct job_stream *s = cls;

        pthread_mutex_lock(&s->h->lock);
        if (s->owner && !s->j->terminal) {
                hive_job_cancel_locked(s->h, s->j);
                hive_wconn_abort(s->j->conn);
        }
        hive_job_unwatch_locked(s->j, s->watch_fd);
        hive_job_unref_locked(s->h, s->j);
        pthread_mutex_unlock(&s->h->lock);
        free(s);
}

/* Takes the reference to j. */
static enum MHD_Result reply_job_stream(struct request *rq, struct MHD_Connection *c, struct hive_job *j, bool owner) {
        struct job_stream *s = calloc(1, sizeof(*s));
        struct MHD_Response *r;
        enum MHD_Result ret;

        if (!s) {
                pthread_mutex_lock(&rq->h->lock);
                hive_job_unref_locked(rq->h, j);
                pthread_mutex_unlock(&rq->h->lock);
                return MHD_NO;
        }
        *s = (struct job_stream) { .h = rq->h, .j = j, .fd = client_fd(c), .watch_fd = -EBADF, .owner = owner };
        pthread_mutex_lock(&rq->h->lock);
        s->watch_fd = hive_job_watch_locked(j);
        pthread_mutex_unlock(&rq->h->lock);
        r = s->watch_fd >= 0 ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, job_stream_read, s,
                                                                  job_stream_free)
                             : NULL;
        if (!r) {
                job_stream_free(s);
                return MHD_NO;
        }
        http_add_sse_headers(r);
        MHD_add_response_header(r, "X-Rbee-Job-Id", j->id);
        ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        rq->responded = true;
        rq->status = 200;
        return ret;
}

static enum MHD_Result handle_job_events(struct request *rq, struct MHD_Connection *c, const char *id) {
        struct hive_job *j;

        pthread_mutex_lock(&rq->h->lock);
        j = hive_job_find_locked(rq->h, id);
        if (j)
                hive_job_ref(j);
        pthread_mutex_unlock(&rq->h->lock);
        if (!j)
                return reply_error(rq, c, 404, "job_not_found", "no job '%.100s'", id);
        return reply_job_stream(rq, c, j, false);
}

/* ---- workers ---------------------------------------------------------------- */

static enum MHD_Result handle_workers_list(struct request *rq, struct MHD_Connection *c, const char *model) {
        struct hive *h = rq->h;
        struct json_object *o = NULL, *a;

        pthread_mutex_lock(&h->lock);
        if (model) {
                struct hive_worker *w = hive_worker_find(h, model);
                if (w) {
                        o = hive_worker_to_json_locked(h, w);
                        w->reported = true;
                }
                pthread_mutex_unlock(&h->lock);
                if (!w)
                        return reply_error(rq, c, 404, "worker_not_found", "no worker for '%.200s'", model);
                return reply_json(rq, c, 200, o);
        }
        o = json_object_new_object();
        a = json_object_new_array();
        if (o && a) {
                for (size_t i = 0; i < h->n_workers; i++) {
                        json_object_array_add(a, hive_worker_to_json_locked(h, h->workers[i]));
                        h->workers[i]->reported = true;
                }
                json_object_object_add(o, "workers", a);
                a = NULL;
        }
        pthread_mutex_unlock(&h->lock);
        json_object_put(a);
        return reply_json(rq, c, 200, o);
}

static enum MHD_Result handle_workers_spawn(struct request *rq, struct MHD_Connection *c) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(hive_req_infer_done) struct hive_req_infer req = {};
        struct hive *h = rq->h;
        struct hive_worker *w;
        struct json_object *ka, *resp;
        struct hive_req_error e;
        const char *model;
        bool wait = true, started = false;
        char err[1024];
        unsigned status;
        const char *code;
        int r;

        if (parse_body(rq, c, &o) < 0)
                return MHD_YES;
        if (check_infer_body(rq, c, o, &req) < 0)
                return MHD_YES;
        if (hive_req_spawn(o, &wait, &e) < 0)
                return reply_req_error(rq, c, &e);
        model = req.model;
        ka = req.keep_alive;
        struct hive_acquire acq = {
                .model = model, .backend = req.backend, .device = (int) req.device, .keep_alive_s = req.keep_alive_s,
                .no_admission = true,
        };
        if (!wait) {
                /* Start it from a short-lived job thread so that this answer is immediate. */
                struct hive_job *j;
                _cleanup_(json_object_putp) struct json_object *job = json_object_new_object();
                if (!job)
                        return MHD_NO;
                json_object_object_add(job, "model", json_object_new_string(model));
                json_object_object_add(job, "spawn_only", json_object_new_boolean(true));
                if (ka)
                        json_object_object_add(job, "keep_alive", json_object_get(ka));
                if (new_infer_job(rq, c, job, model, NULL, &j) < 0)
                        return MHD_YES;
                pthread_mutex_lock(&h->lock);
                resp = job_created(j, false);
                hive_job_unref_locked(h, j);
                pthread_mutex_unlock(&h->lock);
                return reply_json(rq, c, 202, resp);
        }
        r = hive_worker_acquire(h, &acq, &w, &started, err, sizeof(err));
        if (r < 0) {
                hive_acquire_error(r, &status, &code);
                return reply_error(rq, c, status, code, "%s", err);
        }
        pthread_mutex_lock(&h->lock);
        resp = hive_worker_to_json_locked(h, w);
        hive_worker_unref(h, w);
        pthread_mutex_unlock(&h->lock);
        return reply_json(rq, c, started ? 201 : 200, resp);
}

static enum MHD_Result handle_workers_stop(struct request *rq, struct MHD_Connection *c, const char *model) {
        struct json_object *o;
        int r;

        r = hive_worker_stop(rq->h, model, true);
        if (r == -ENOENT)
                return reply_error(rq, c, 404, "worker_not_found", "no worker for '%.200s'", model);
        if (r < 0)
                return reply_error(rq, c, 500, "internal_error", "stopping the worker of '%s' failed: %s", model,
                                   strerror(-r));
        o = json_object_new_object();
        if (!o)
                return MHD_NO;
        json_object_object_add(o, "model", json_object_new_string(model));
        json_object_object_add(o, "stopped", json_object_new_boolean(true));
        return reply_json(rq, c, 200, o);
}

static enum MHD_Result handle_workers_cleanup(struct request *rq, struct MHD_Connection *c) {
        struct hive *h = rq->h;
        struct json_object *resp, *reaped, *stopped;
        struct hive_req_error e;
        char **names = NULL;
        size_t n = 0;
        bool all = false;

        if (hive_req_cleanup(rq->body.data, rq->body.len, &all, &e) < 0)
                return reply_req_error(rq, c, &e);
        resp = json_object_new_object();
        reaped = json_object_new_array();
        stopped = json_object_new_array();
        if (!resp || !reaped || !stopped) {
                json_object_put(resp);
                json_object_put(reaped);
                json_object_put(stopped);
                return MHD_NO;
        }
        pthread_mutex_lock(&h->lock);
        names = calloc(h->n_workers + 1, sizeof(*names));
        for (size_t i = 0; names && i < h->n_workers; i++) {
                struct hive_worker *w = h->workers[i];
                if (w->state == HIVE_WORKER_FAILED || w->state == HIVE_WORKER_GONE || all)
                        names[n++] = strdup(w->model);
        }
        pthread_mutex_unlock(&h->lock);
        for (size_t i = 0; i < n; i++) {
                if (!names[i])
                        continue;
                bool was_failed = false;
                pthread_mutex_lock(&h->lock);
                struct hive_worker *w = hive_worker_find(h, names[i]);
                was_failed = w && (w->state == HIVE_WORKER_FAILED || w->state == HIVE_WORKER_GONE);
                pthread_mutex_unlock(&h->lock);
                if (hive_worker_stop(h, names[i], true) >= 0)
                        json_object_array_add(was_failed ? reaped : stopped, json_object_new_string(names[i]));
                free(names[i]);
        }
        free(names);
        json_object_object_add(resp, "reaped", reaped);
        json_object_object_add(resp, "stopped", stopped);
        return reply_json(rq, c, 200, resp);
}

/* ---- inference ------------------------------------------------------------ */

/* A relay of a worker's response, body as it comes. */
struct proxy_stream {
        struct hive *h;
        struct hive_worker *w;
        struct hive_wconn *conn;
        int64_t keep_alive;
        int fd;
        bool sse;
        bool error_sent;
        bool saw_done;
        char tail[8];
};

static ssize_t proxy_read(void *cls, uint64_t pos, char *buf, size_t max) {
        struct proxy_stream *s = cls;
        ssize_t k;

        for (;;) {
                if (s->error_sent)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                k = hive_wconn_read(s->conn, buf, max, 500);
                if (k > 0) {
                        /* "[DONE]" may straddle two reads: look at the seam too. */
                        char seam[32];
                        size_t tl = strnlen(s->tail, sizeof(s->tail)), hl = MIN((size_t) k, sizeof(seam) - tl);
                        memcpy(seam, s->tail, tl);
                        memcpy(seam + tl, buf, hl);
                        if (memmem(seam, tl + hl, "[DONE]", 6) || memmem(buf, (size_t) k, "[DONE]", 6))
                                s->saw_done = true;
                        size_t keep = MIN((size_t) k, sizeof(s->tail) - 1);
                        memset(s->tail, 0, sizeof(s->tail));
                        memcpy(s->tail, buf + k - keep, keep);
                        return k;
                }
                if (k == 0)
                        return MHD_CONTENT_READER_END_OF_STREAM;
                /* The client hung up (hive_wconn_watch). */
                if (k == -ECANCELED)
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                if (k == -ETIMEDOUT) {
                        if (client_gone(s->fd) || s->h->stopping)
                                return MHD_CONTENT_READER_END_WITH_ERROR;
                        continue;
                }
                /* The worker went away mid-response. */
                if (!s->sse || s->saw_done)
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                int n = snprintf(buf, max,
                                 "data: {\"error\":{\"code\":\"worker_died\",\"message\":\"the worker for this model "
                                 "died mid-stream\",\"type\":\"server_error\"}}\n\n");
                s->error_sent = true;
                return n > 0 && (size_t) n < max ? n : MHD_CONTENT_READER_END_WITH_ERROR;
        }
}

static void proxy_free(void *cls) {
        struct proxy_stream *s = cls;

        hive_wconn_free(s->conn);
        hive_worker_release(s->h, s->w, s->keep_alive);
        free(s);
}

/* OpenAI endpoints and non-streaming /v1/inference: start the worker (the
 * client waits), then relay the worker's response as it is. */
static enum MHD_Result handle_proxy(struct request *rq, struct MHD_Connection *c, const char *path, bool native) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(hive_req_infer_done) struct hive_req_infer req = {};
        struct hive *h = rq->h;
        struct hive_worker *w = NULL;
        struct hive_wconn *conn = NULL;
        const char *ct;
        const char *body;
        size_t len;
        int64_t keep;
        char err[1024];
        unsigned st;
        const char *code;
        int r, status;

        if (parse_body(rq, c, &o) < 0)
                return MHD_YES;
        if (check_infer_body(rq, c, o, &req) < 0)
                return MHD_YES;
        keep = req.keep_alive_s;
        /* The worker refuses a duplicate of its own jobs; the hive's streams are checked here. */
        if (native && req.job_id) {
                pthread_mutex_lock(&h->lock);
                struct hive_job *dup = hive_job_find_locked(h, req.job_id);
                bool running = dup && !dup->terminal;
                pthread_mutex_unlock(&h->lock);
                if (running)
                        return reply_error(rq, c, 409, "job_exists", "a job with id '%s' is running", req.job_id);
        }
        struct hive_acquire acq = {
                .model = req.model, .backend = req.backend, .device = (int) req.device, .keep_alive_s = keep,
                .client_fd = client_fd(c),
        };
        if (hive_req_forward_body(o, native, &body, &len) < 0)
                return MHD_NO;
        r = hive_worker_request(h, &acq, "POST", path, body, len, NULL, &w, NULL, &conn, err, sizeof(err));
        if (r == -ECANCELED) {
                /* Nobody to answer: just drop the connection. */
                rq->responded = true;
                rq->status = 499;
                return MHD_NO;
        }
        if (r < 0) {
                hive_acquire_error(r, &st, &code);
                return reply_error(rq, c, st == 499 ? 503 : st, code, "%s", err);
        }
        status = hive_wconn_status(conn);
        ct = hive_wconn_header(conn, "Content-Type");
        bool sse = ct && strstr(ct, "event-stream");
        char ctype[128];
        snprintf(ctype, sizeof(ctype), "%s", ct ? ct : "application/json");
        const char *ra = hive_wconn_header(conn, "Retry-After");
        char retry[16] = "";
        if (ra)
                snprintf(retry, sizeof(retry), "%s", ra);

        struct proxy_stream *s = calloc(1, sizeof(*s));
        if (!s) {
                hive_wconn_free(conn);
                hive_worker_release(h, w, keep);
                return MHD_NO;
        }
        *s = (struct proxy_stream) { .h = h, .w = w, .conn = conn, .keep_alive = keep, .fd = client_fd(c), .sse = sse };
        /* A stream that waits in the worker's queue sends nothing for a
         * while: its client's hang-up must end the wait at once. */
        hive_wconn_watch(conn, s->fd);
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, proxy_read, s, proxy_free);
        if (!resp) {
                proxy_free(s);
                return MHD_NO;
        }
        if (sse)
                http_add_sse_headers(resp);
        else
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
        if (retry[0])
                MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry);
        enum MHD_Result ret = MHD_queue_response(c, (unsigned) status, resp);
        MHD_destroy_response(resp);
        rq->responded = true;
        rq->status = (unsigned) status;
        return ret;
}

static enum MHD_Result handle_inference(struct request *rq, struct MHD_Connection *c) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(hive_req_infer_done) struct hive_req_infer req = {};
        struct hive_req_error e;
        struct hive_job *j;
        bool stream;

        if (parse_body(rq, c, &o) < 0)
                return MHD_YES;
        if (hive_req_inference_stream(o, &stream, &e) < 0)
                return reply_req_error(rq, c, &e);
        if (!stream) {
                /* The body is parsed again by handle_proxy: cheap, and one path. */
                return handle_proxy(rq, c, "/v1/inference", true);
        }
        if (check_infer_body(rq, c, o, &req) < 0 || new_infer_job(rq, c, o, req.model, req.job_id, &j) < 0)
                return MHD_YES;
        return reply_job_stream(rq, c, j, true);
}

/* ---- routing ---------------------------------------------------------------- */

static enum MHD_Result dispatch(struct request *rq, struct MHD_Connection *c, const char *url, const char *method) {
        struct hive_req_route route;
        struct hive_req_error e;

        if (hive_req_route(url, method, &route, &e) < 0)
                return reply_req_error(rq, c, &e);
        switch (route.endpoint) {
        case HIVE_EP_HEALTH:
                return handle_health(rq, c);
        case HIVE_EP_BACKENDS:
                return handle_backends(rq, c);
        case HIVE_EP_METRICS:
                return handle_metrics(rq, c);
        case HIVE_EP_MODELS_LIST:
                return handle_models_list(rq, c);
        case HIVE_EP_MODEL_REGISTER:
                return handle_model_register(rq, c);
        case HIVE_EP_MODEL_DOWNLOAD: {
                _cleanup_(json_object_putp) struct json_object *o = NULL;
                if (parse_body(rq, c, &o) < 0)
                        return MHD_YES;
                return start_download(rq, c, o);
        }
        case HIVE_EP_MODEL_GET:
                return reply_model(rq, c, route.id, 200);
        case HIVE_EP_MODEL_DELETE:
                return handle_model_delete(rq, c, route.id);
        case HIVE_EP_WORKERS_LIST:
                return handle_workers_list(rq, c, NULL);
        case HIVE_EP_WORKERS_SPAWN:
                return handle_workers_spawn(rq, c);
        case HIVE_EP_WORKERS_CLEANUP:
                return handle_workers_cleanup(rq, c);
        case HIVE_EP_WORKER_GET:
                return handle_workers_list(rq, c, route.id);
        case HIVE_EP_WORKER_STOP:
                return handle_workers_stop(rq, c, route.id);
        case HIVE_EP_JOBS_LIST:
                return handle_jobs_list(rq, c);
        case HIVE_EP_JOBS_POST:
                return handle_jobs_post(rq, c);
        case HIVE_EP_JOB:
                return handle_job(rq, c, method, route.id);
        case HIVE_EP_JOB_EVENTS:
                return handle_job_events(rq, c, route.id);
        case HIVE_EP_INFERENCE:
                return handle_inference(rq, c);
        case HIVE_EP_OPENAI:
                return handle_proxy(rq, c, url, false);
        }
        return reply_error(rq, c, 404, "not_found", "no endpoint %.20s %.200s", method, url);
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **con_cls) {
        struct hive *h = cls;
        struct request *rq = *con_cls;

        if (!rq) {
                rq = calloc(1, sizeof(*rq));
                if (!rq)
                        return MHD_NO;
                rq->h = h;
                strbuf_init(&rq->body, MAX_BODY);
                snprintf(rq->route, sizeof(rq->route), "%s", url);
                rq->unauthorized = h->api_key && !(streq(url, "/v1/health") && streq(method, "GET")) &&
                                   !http_bearer_ok(c, h->api_key, h->api_key_len);
                *con_cls = rq;
                http_guard_headers_received(c);
                return MHD_YES;
        }
        if (*upload_data_size > 0) {
                /* Unauthenticated bodies are not buffered (up to MAX_BODY per connection). */
                if (!rq->too_big && !rq->unauthorized && strbuf_append(&rq->body, upload_data, *upload_data_size) < 0)
                        rq->too_big = true;
                *upload_data_size = 0;
                return MHD_YES;
        }
        /* The whole request is in: only the idle timeout applies from here
         * (a job's event stream may stay quiet for long). */
        http_guard_request_received(c);
        if (rq->responded)
                return MHD_YES;
        if (rq->unauthorized)
                return reply_error(rq, c, 401, "unauthorized",
                                   "a valid API key is required (Authorization: Bearer <key>)");
        if (rq->too_big)
                return reply_error(rq, c, 413, "request_too_large", "the request body is larger than %u bytes", MAX_BODY);
        if (h->stopping)
                return reply_error(rq, c, 503, "shutting_down", "the hive is shutting down");
        return dispatch(rq, c, url, method);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
        struct request *rq = *con_cls;

        http_guard_request_done(c);
        if (!rq)
                return;
        if (rq->responded)
                count_status(rq->h, rq->status);
        log_debug("%s -> %u", rq->route, rq->status);
        strbuf_done(&rq->body);
        free(rq);
        *con_cls = NULL;
}

int hive_server_new(struct hive *h, int listen_fd, unsigned max_connections, const struct http_guard_config *guard,
                    struct hive_server **ret) {
        struct hive_server *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        s->h = h;
        r = http_guard_new(guard, &s->guard);
        if (r < 0) {
                free(s);
                return r;
        }
        /* The 600 s idle timeout is for streams that wait on a job; receiving
         * a request is bounded by the guard's much shorter deadlines. */
        s->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                                             MHD_USE_ITC | MHD_USE_ERROR_LOG,
                                     0, http_guard_accept, s->guard, access_handler, h, MHD_OPTION_LISTEN_SOCKET,
                                     listen_fd, MHD_OPTION_CONNECTION_LIMIT, max_connections,
                                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 600, MHD_OPTION_NOTIFY_COMPLETED,
                                     completed, h, MHD_OPTION_NOTIFY_CONNECTION, http_guard_notify, s->guard,
                                     MHD_OPTION_EXTERNAL_LOGGER, http_guard_mhd_log, NULL,
                                     MHD_OPTION_THREAD_STACK_SIZE, (size_t) (512 * 1024), MHD_OPTION_END);
        if (!s->daemon) {
                http_guard_free(s->guard);
                free(s);
                return -EIO;
        }
        h->guard = s->guard;
        *ret = s;
        return 0;
}

void hive_server_quiesce(struct hive_server *s) {
        if (s && s->daemon)
                (void) MHD_quiesce_daemon(s->daemon);
}

struct hive_server *hive_server_free(struct hive_server *s) {
        if (!s)
                return NULL;
        if (s->daemon)
                MHD_stop_daemon(s->daemon);
        s->h->guard = NULL;
        http_guard_free(s->guard);      /* after the daemon, which unregisters every connection */
        free(s);
        return NULL;
}
