/* SPDX-License-Identifier: MIT */
/* Inference jobs: start the model's worker on demand (loading progress as
 * events), then relay the worker's SSE stream event by event into the job's
 * log as it arrives. A stream that ends without a terminal event means the
 * worker died: the job ends with worker_died and the number of tokens that
 * made it through. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hive.h"
#include "json-util.h"
#include "logging.h"
#include "macros.h"
#include "requests.h"
#include "util.h"
#include "wclient.h"
#include "wreply.h"

static void on_progress(void *userdata, const struct hive_worker *w, const char *state, const char *status) {
        struct hive_thread_arg *a = userdata;
        struct json_object *o = json_object_new_object();

        if (!o)
                return;
        json_object_object_add(o, "model", json_object_new_string(w->model));
        json_object_object_add(o, "state", json_object_new_string(state));
        json_object_object_add(o, "status", json_object_new_string(status ? status : ""));
        (void) hive_job_event_locked(a->h, a->j, "loading", o);
}

/* The worker's body: the client's, less what only the hive understands. */
static int worker_body(struct hive_job *j, bool stream, char **ret, size_t *ret_len) {
        struct json_object *o = NULL;
        const char *s;
        size_t n;

        if (json_object_deep_copy(j->request, &o, NULL) < 0 || !o)
                return -ENOMEM;
        json_object_object_add(o, "job_id", json_object_new_string(j->id));
        json_object_object_add(o, "stream", json_object_new_boolean(stream));
        if (hive_req_forward_body(o, true, &s, &n) < 0 || !(*ret = strndup(s, n))) {
                json_object_put(o);
                return -ENOMEM;
        }
        *ret_len = n;
        json_object_put(o);
        return 0;
}

/* Relay frames until the terminal one. 1 when it arrived, 0 on EOF without
 * one, negative on error. */
static int relay(struct hive *h, struct hive_job *j, struct hive_wconn *c) {
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(4u << 20);
        char tmp[16384], name[32];
        ssize_t k;
        int r;

        for (;;) {
                size_t fl;
                while ((fl = hive_wreply_frame_len(b.data, b.len)) > 0) {
                        bool terminal;
                        hive_wreply_frame_event(b.data, fl, name, sizeof(name));
                        terminal = streq(name, "end") || streq(name, "error");
                        pthread_mutex_lock(&h->lock);
                        if (streq(name, "token")) {
                                j->tokens++;
                                h->metrics.tokens++;
                        }
                        r = hive_job_raw_event_locked(h, j, b.data, fl, terminal,
                                                      streq(name, "end") ? HIVE_JOB_DONE : HIVE_JOB_FAILED);
                        pthread_mutex_unlock(&h->lock);
                        strbuf_consume(&b, fl);
                        if (r < 0)
                                return r;
                        if (terminal)
                                return 1;
                }
                k = hive_wconn_read(c, tmp, sizeof(tmp), -1);
                if (k == 0 || k == -ECONNRESET)
                        return 0;
                if (k < 0)
                        return (int) k;
                r = strbuf_append(&b, tmp, (size_t) k);
                if (r < 0)
                        return r;
        }
}

static void fail_from_body(struct hive *h, struct hive_job *j, int status, const char *body, size_t len) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        const char *code, *msg;

        hive_wreply_error(body ? body : "", body ? len : 0, &o, &code, &msg);
        pthread_mutex_lock(&h->lock);
        (void) hive_job_error_locked(h, j, code ? code : "worker_failed", "%s (worker answered HTTP %d)",
                                     msg ? msg : "request failed", status);
        pthread_mutex_unlock(&h->lock);
}

void *hive_infer_thread(void *arg) {
        struct hive_thread_arg *a = arg;
        struct hive *h = a->h;
        struct hive_job *j = a->j;
        _cleanup_(freep) char *body = NULL;
        _cleanup_(hive_wconn_freep) struct hive_wconn *c = NULL;
        struct hive_worker *w = NULL;
        const char *backend = NULL;
        int64_t keep = -2, dev = -1;
        struct json_object *ka = NULL;
        bool started = false;
        char err[1024];
        size_t len;
        int r, status;

        (void) json_get_string(j->request, "backend", &backend, NULL);
        (void) json_get_int64(j->request, "device", 0, 1024, &dev);
        if (json_object_object_get_ex(j->request, "keep_alive", &ka) && ka)
                (void) hive_keep_alive_from_json(ka, &keep);

        struct hive_acquire acq = {
                .model = j->model,
                .backend = backend,
                .device = (int) dev,
                .keep_alive_s = keep,
                .progress = on_progress,
                .userdata = a,
                .cancel = &j->cancel,
        };
        bool spawn_only = false;
        (void) json_get_bool(j->request, "spawn_only", &spawn_only);
        acq.no_admission = spawn_only;
        uint64_t t0 = hive_now_usec();
        if (spawn_only)
                r = hive_worker_acquire(h, &acq, &w, &started, err, sizeof(err));
        else {
                r = worker_body(j, true, &body, &len);
                if (r < 0) {
                        pthread_mutex_lock(&h->lock);
                        (void) hive_job_error_locked(h, j, "internal_error", "cannot build the worker's request: %s",
                                                     strerror(-r));
                        pthread_mutex_unlock(&h->lock);
                        return NULL;
                }
                /* Publishes the connection as j->conn, so that a cancel aborts it. */
                r = hive_worker_request(h, &acq, "POST", "/v1/inference", body, len, &j->conn, &w, &started, &c, err,
                                        sizeof(err));
        }
        if (r < 0) {
                unsigned st;
                const char *code;
                hive_acquire_error(r, &st, &code);
                pthread_mutex_lock(&h->lock);
                (void) hive_job_error_locked(h, j, code, "%s", err);
                pthread_mutex_unlock(&h->lock);
                return NULL;
        }
        if (started) {
                struct json_object *o = json_object_new_object();
                pthread_mutex_lock(&h->lock);
                if (o) {
                        json_object_object_add(o, "model", json_object_new_string(w->model));
                        json_object_object_add(o, "pid", json_object_new_int(w->pid));
                        json_object_object_add(o, "load_ms", json_object_new_int64((int64_t) ((hive_now_usec() - t0) / 1000)));
                        (void) hive_job_event_locked(h, j, "ready", o);
                }
                pthread_mutex_unlock(&h->lock);
        }

        if (spawn_only) {
                struct json_object *o = json_object_new_object();
                pthread_mutex_lock(&h->lock);
                if (o) {
                        json_object_object_add(o, "model", json_object_new_string(w->model));
                        json_object_object_add(o, "pid", json_object_new_int(w->pid));
                        json_object_object_add(o, "state", json_object_new_string(hive_worker_state_name(w->state)));
                        (void) hive_job_event_locked(h, j, "end", o);
                }
                hive_worker_unref(h, w);
                pthread_mutex_unlock(&h->lock);
                return NULL;
        }

        status = hive_wconn_status(c);
        if (status != 200) {
                _cleanup_(freep) char *eb = NULL;
                size_t el = 0;
                if (hive_wconn_read_all(c, 1 << 20, 10000, &eb, &el) < 0)
                        el = 0;
                fail_from_body(h, j, status, eb, el);
                r = 1;
        } else
                r = relay(h, j, c);

        pthread_mutex_lock(&h->lock);
        j->conn = NULL;
        if (r <= 0 && !j->terminal) {
                if (j->cancel)
                        (void) hive_job_error_locked(h, j, "cancelled", "the job was cancelled after %u tokens", j->tokens);
                else if (r < 0)
                        (void) hive_job_error_locked(h, j, "internal_error", "relaying the stream failed: %s",
                                                     strerror(-r));
                else
                        (void) hive_job_error_locked(h, j, "worker_died",
                                                     "the worker for '%s' died mid-stream after %u tokens", j->model,
                                                     j->tokens);
        }
        pthread_mutex_unlock(&h->lock);
        hive_worker_release(h, w, keep);
        return NULL;
}
