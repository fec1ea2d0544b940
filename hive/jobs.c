/* SPDX-License-Identifier: MIT */
/* Jobs: long operations (downloads, inference) with an event log that SSE
 * readers replay from the start and then follow live. The log is bounded;
 * exactly one terminal event (end or error) closes it. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "hive.h"
#include "http-util.h"
#include "json-util.h"
#include "logging.h"
#include "macros.h"
#include "util.h"
#include "wclient.h"

#define JOB_LOG_MAX (64u << 20)
#define JOB_KEEP_USEC (600u * 1000000u)

const char *hive_job_state_name(enum hive_job_state s) {
        static const char *const names[] = {
                [HIVE_JOB_RUNNING] = "running",
                [HIVE_JOB_DONE] = "done",
                [HIVE_JOB_FAILED] = "failed",
                [HIVE_JOB_CANCELLED] = "cancelled",
        };
        return (unsigned) s < ELEMENTSOF(names) ? names[s] : "unknown";
}

const char *hive_job_type_name(enum hive_job_type t) {
        return t == HIVE_JOB_DOWNLOAD ? "download" : "infer";
}

/* Lock held. Wake whoever waits for the job: threads on the condition, SSE
 * readers on their eventfds. */
static void job_changed(struct hive *h, struct hive_job *j) {
        uint64_t one = 1;

        hive_changed_locked(h);
        for (size_t i = 0; i < j->n_watch; i++)
                (void) !write(j->watch_fds[i], &one, sizeof(one));
}

int hive_job_watch_locked(struct hive_job *j) {
        _cleanup_(closep) int fd = -EBADF;
        int *l;

        fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0)
                return -errno;
        l = realloc(j->watch_fds, (j->n_watch + 1) * sizeof(*l));
        if (!l)
                return -ENOMEM;
        j->watch_fds = l;
        j->watch_fds[j->n_watch++] = fd;
        return TAKE_FD(fd);
}

void hive_job_unwatch_locked(struct hive_job *j, int fd) {
        if (fd < 0)
                return;
        for (size_t i = 0; i < j->n_watch; i++)
                if (j->watch_fds[i] == fd) {
                        j->watch_fds[i] = j->watch_fds[--j->n_watch];
                        break;
                }
        close(fd);
}

int hive_job_wait(int watch_fd, int client_fd) {
        /* Only the client's hang-up counts: bytes it sends (a pipelined
         * request) are the HTTP server's to read later. */
        struct pollfd p[2] = {
                { .fd = watch_fd, .events = POLLIN },
                { .fd = client_fd, .events = POLLRDHUP },
        };
        uint64_t n;

        for (;;) {
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
                        return -ECANCELED;
                if (p[0].revents & (POLLERR | POLLNVAL))
                        return -EBADF;
                if (p[0].revents & POLLIN) {
                        (void) !read(watch_fd, &n, sizeof(n));
                        return 0;
                }
        }
}

/* Lock held. Drop a finished job from the list (its readers keep their references). */
static void job_forget_locked(struct hive *h, struct hive_job *j) {
        for (size_t i = 0; i < h->n_jobs; i++)
                if (h->jobs[i] == j) {
                        memmove(h->jobs + i, h->jobs + i + 1, (h->n_jobs - i - 1) * sizeof(*h->jobs));
                        h->n_jobs--;
                        hive_job_unref_locked(h, j);
                        return;
                }
}

int hive_job_new_locked(struct hive *h, enum hive_job_type type, const char *model, const char *id,
                        struct hive_job **ret) {
        struct hive_job *j, **nl;

        if (id) {
                if (!hive_job_id_is_valid(id))
                        return -EINVAL;
                j = hive_job_find_locked(h, id);
                if (j && !j->terminal)
                        return -EEXIST;
                /* A finished job of that id is still kept for its replay: the
                 * id now names the new one, so the old one goes. */
                if (j)
                        job_forget_locked(h, j);
        }
        nl = realloc(h->jobs, (h->n_jobs + 1) * sizeof(*nl));
        if (!nl)
                return -ENOMEM;
        h->jobs = nl;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->refs = 1;
        j->type = type;
        j->created_at = hive_wall_sec();
        if ((id ? !(j->id = strdup(id)) : hive_random_id("j-", 12, &j->id) < 0) ||
            (model && !(j->model = strdup(model)))) {
                free(j->id);
                free(j);
                return -ENOMEM;
        }
        h->jobs[h->n_jobs++] = j;
        *ret = j;
        return 0;
}

struct hive_job *hive_job_find_locked(struct hive *h, const char *id) {
        for (size_t i = 0; i < h->n_jobs; i++)
                if (streq(h->jobs[i]->id, id))
                        return h->jobs[i];
        return NULL;
}

struct hive_job *hive_job_ref(struct hive_job *j) {
        j->refs++;
        return j;
}

void hive_job_unref_locked(struct hive *h, struct hive_job *j) {
        if (!j || --j->refs > 0)
                return;
        for (size_t i = 0; i < j->n_events; i++)
                free(j->events[i]);
        free(j->events);
        /* Readers unwatch before they let go of the job: none should be left. */
        for (size_t i = 0; i < j->n_watch; i++)
                close(j->watch_fds[i]);
        free(j->watch_fds);
        free(j->id);
        free(j->model);
        free(j->source);
        free(j->worker_job_id);
        json_object_put(j->request);
        free(j);
}

static int append_frame(struct hive *h, struct hive_job *j, char *frame, size_t len) {
        if (j->terminal) {
                free(frame);
                return -EALREADY;
        }
        if (j->bytes + len > JOB_LOG_MAX) {
                free(frame);
                return -E2BIG;
        }
        if (j->n_events == j->cap_events) {
                size_t cap = j->cap_events ? j->cap_events * 2 : 32;
                char **nl = realloc(j->events, cap * sizeof(*nl));
                if (!nl) {
                        free(frame);
                        return -ENOMEM;
                }
                j->events = nl;
                j->cap_events = cap;
        }
        j->events[j->n_events++] = frame;
        j->bytes += len;
        job_changed(h, j);
        return 0;
}

static void finish(struct hive *h, struct hive_job *j, enum hive_job_state st) {
        j->terminal = true;
        j->state = j->cancel && st == HIVE_JOB_FAILED ? HIVE_JOB_CANCELLED : st;
        j->finished_at = hive_wall_sec();
        j->finished_usec = hive_now_usec();
        job_changed(h, j);
}

int hive_job_raw_event_locked(struct hive *h, struct hive_job *j, const char *frame, size_t len, bool terminal,
                              enum hive_job_state final_state) {
        char *copy = strndup(frame, len);
        int r;

        if (!copy)
                return -ENOMEM;
        r = append_frame(h, j, copy, len);
        if (r >= 0 && terminal)
                finish(h, j, final_state);
        return r;
}

int hive_job_event_locked(struct hive *h, struct hive_job *j, const char *name, struct json_object *data) {
        _cleanup_(json_object_putp) struct json_object *o = data;
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(JOB_LOG_MAX);
        bool terminal = streq(name, "end") || streq(name, "error");
        const char *s;
        char *frame;
        size_t n;
        int r;

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "job_id", json_object_new_string(j->id));
        s = json_to_string(o, &n);
        if (!s)
                return -ENOMEM;
        r = sse_append_event(&b, name, s, n);
        if (r < 0)
                return r;
        r = strbuf_steal(&b, &frame, &n);
        if (r < 0)
                return r;
        r = append_frame(h, j, frame, n);
        if (r >= 0 && terminal)
                finish(h, j, streq(name, "end") ? HIVE_JOB_DONE : HIVE_JOB_FAILED);
        return r;
}

int hive_job_error_locked(struct hive *h, struct hive_job *j, const char *code, const char *fmt, ...) {
        struct json_object *o = json_object_new_object();
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "code", json_object_new_string(code));
        json_object_object_add(o, "message", json_object_new_string(msg));
        if (j->type == HIVE_JOB_INFER)
                json_object_object_add(o, "tokens_out", json_object_new_int64(j->tokens));
        log_struct(LOG_NOTICE, ((const char *[]) { "RBEE_EVENT=job-error", NULL }), "Job %s (%s%s%s) failed: %s: %s",
                   j->id, hive_job_type_name(j->type), j->model ? " " : "", strempty(j->model), code, msg);
        return hive_job_event_locked(h, j, "error", o);
}

void hive_job_cancel_locked(struct hive *h, struct hive_job *j) {
        if (j->terminal || j->cancel)
                return;
        j->cancel = 1;
        log_info("Cancelling job %s", j->id);
        job_changed(h, j);
}

struct json_object *hive_job_to_json_locked(const struct hive_job *j) {
        struct json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        json_object_object_add(o, "job_id", json_object_new_string(j->id));
        json_object_object_add(o, "type", json_object_new_string(hive_job_type_name(j->type)));
        json_object_object_add(o, "state", json_object_new_string(hive_job_state_name(j->state)));
        json_object_object_add(o, "model", json_new_string_or_null(j->model));
        json_object_object_add(o, "source", json_new_string_or_null(j->source));
        json_object_object_add(o, "created_at", json_object_new_int64(j->created_at));
        json_object_object_add(o, "finished_at", j->finished_at ? json_object_new_int64(j->finished_at) : NULL);
        json_object_object_add(o, "events", json_object_new_int64((int64_t) j->n_events));
        char url[128];
        snprintf(url, sizeof(url), "/v1/jobs/%s/events", j->id);
        json_object_object_add(o, "events_url", json_object_new_string(url));
        return o;
}

static void *thread_main(void *p) {
        struct hive_thread_arg *a = p;
        void *(*fn)(void *) = a->j->type == HIVE_JOB_DOWNLOAD ? hive_download_thread : hive_infer_thread;
        struct hive *h = a->h;

        fn(a);
        pthread_mutex_lock(&h->lock);
        h->n_job_threads--;
        hive_job_unref_locked(h, a->j);
        hive_changed_locked(h);
        pthread_mutex_unlock(&h->lock);
        free(a);
        return NULL;
}

int hive_job_start_thread_locked(struct hive *h, struct hive_job *j) {
        struct hive_thread_arg *a;
        pthread_attr_t attr;
        pthread_t t;
        int r;

        if (h->n_job_threads >= h->opt.max_jobs)
                return -EAGAIN;
        a = malloc(sizeof(*a));
        if (!a)
                return -ENOMEM;
        *a = (struct hive_thread_arg) { .h = h, .j = hive_job_ref(j) };
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = pthread_create(&t, &attr, thread_main, a);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                j->refs--;
                free(a);
                return -r;
        }
        h->n_job_threads++;
        return 0;
}

void hive_jobs_expire_locked(struct hive *h) {
        uint64_t now = hive_now_usec();

        for (size_t i = 0; i < h->n_jobs;) {
                struct hive_job *j = h->jobs[i];
                if (j->terminal && now - j->finished_usec > JOB_KEEP_USEC) {
                        memmove(h->jobs + i, h->jobs + i + 1, (h->n_jobs - i - 1) * sizeof(*h->jobs));
                        h->n_jobs--;
                        hive_job_unref_locked(h, j);
                } else
                        i++;
        }
}
