/* SPDX-License-Identifier: MIT */
/* The worker registry: who runs, in which state, with how many requests
 * attached; on-demand start with admission control, the idle clock, failure
 * reporting and reaping. The units backend (process or systemd) starts and
 * stops; this file decides when. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hive.h"
#include "json-util.h"
#include "logging.h"
#include "macros.h"
#include "util.h"
#include "wclient.h"
#include "wreply.h"

const char *hive_worker_state_name(enum hive_worker_state s) {
        static const char *const names[] = {
                [HIVE_WORKER_STARTING] = "starting", [HIVE_WORKER_LOADING] = "loading",
                [HIVE_WORKER_READY] = "ready",       [HIVE_WORKER_STOPPING] = "stopping",
                [HIVE_WORKER_FAILED] = "failed",     [HIVE_WORKER_GONE] = "stopped",
        };
        return (unsigned) s < ELEMENTSOF(names) ? names[s] : "unknown";
}

void hive_kick(struct hive *h) {
        uint64_t one = 1;

        if (h->kick_fd >= 0)
                (void) !write(h->kick_fd, &one, sizeof(one));
}

struct hive_worker *hive_worker_ref(struct hive_worker *w) {
        w->refs++;
        return w;
}

static void worker_free(struct hive_worker *w) {
        free(w->model);
        free(w->unit);
        free(w->socket_path);
        free(w->log_path);
        free(w->registry_path);
        free(w->backend);
        if (w->pidfd >= 0)
                close(w->pidfd);
        free(w);
}

void hive_worker_unref(struct hive *h, struct hive_worker *w) {
        if (!w)
                return;
        if (--w->refs > 0)
                return;
        /* The loop thread drops pid_source before the last reference goes. */
        if (w->pid_source)
                sd_event_source_disable_unref(w->pid_source);
        worker_free(w);
}

struct hive_worker *hive_worker_find(struct hive *h, const char *model) {
        for (size_t i = 0; i < h->n_workers; i++)
                if (streq(h->workers[i]->model, model))
                        return h->workers[i];
        return NULL;
}

int hive_worker_new_locked(struct hive *h, const char *model, struct hive_worker **ret) {
        struct hive_worker *w, **nl;

        /* The id becomes a file name in workers_dir (as %I does in
         * rbee-worker@.socket): no '/', no leading '.', nothing to escape. */
        if (!hive_id_is_valid(model))
                return -EINVAL;
        nl = realloc(h->workers, (h->n_workers + 1) * sizeof(*nl));
        if (!nl)
                return -ENOMEM;
        h->workers = nl;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->refs = 1;
        w->pidfd = -EBADF;
        w->device = 0;
        w->keep_alive_s = h->opt.keep_alive_s;
        w->healthy = true;
        w->queue_capacity = -1;
        if (!(w->model = strdup(model)) || hive_unit_name(model, &w->unit) < 0 ||
            asprintf(&w->socket_path, "%s/%s.sock", h->workers_dir, model) < 0 ||
            asprintf(&w->log_path, "%s/%s.log", h->workers_dir, model) < 0 ||
            asprintf(&w->registry_path, "%s/%s.json", h->workers_dir, model) < 0) {
                worker_free(w);
                return -ENOMEM;
        }
        snprintf(w->sub_state, sizeof(w->sub_state), "dead");
        h->workers[h->n_workers++] = w;
        *ret = w;
        return 0;
}

void hive_worker_remove_locked(struct hive *h, struct hive_worker *w) {
        for (size_t i = 0; i < h->n_workers; i++)
                if (h->workers[i] == w) {
                        memmove(h->workers + i, h->workers + i + 1, (h->n_workers - i - 1) * sizeof(*h->workers));
                        h->n_workers--;
                        if (w->state != HIVE_WORKER_FAILED)
                                w->state = HIVE_WORKER_GONE;
                        hive_changed_locked(h);
                        hive_worker_unref(h, w);
                        return;
                }
}

void hive_worker_set_failed_locked(struct hive *h, struct hive_worker *w, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(w->error, sizeof(w->error), fmt, ap);
        va_end(ap);
        if (w->state != HIVE_WORKER_FAILED)
                h->metrics.worker_failures++;
        w->state = HIVE_WORKER_FAILED;
        snprintf(w->sub_state, sizeof(w->sub_state), "failed");
        w->failed_usec = hive_now_usec();
        w->reported = false;
        log_struct(LOG_WARNING, ((const char *[]) { "RBEE_EVENT=worker-failed", NULL }), "Worker %s failed: %s",
                   w->model, w->error);
        hive_changed_locked(h);
}

static unsigned worker_slots_locked(struct hive *h, const struct hive_worker *w) {
        if (w->slots > 0)
                return w->slots;
        return h->opt.worker_parallel > 0 ? h->opt.worker_parallel : HIVE_WORKER_DEFAULT_SLOTS;
}

static unsigned worker_queue_locked(struct hive *h, const struct hive_worker *w) {
        /* A worker started elsewhere (a systemd unit, its drop-ins) may queue
         * less than --max-queue: the hive must not admit what it would refuse. */
        if (w->queue_capacity >= 0 && (uint64_t) w->queue_capacity < h->opt.max_queue)
                return (unsigned) w->queue_capacity;
        return h->opt.max_queue;
}

unsigned hive_worker_request_limit_locked(struct hive *h, const struct hive_worker *w) {
        return worker_slots_locked(h, w) + worker_queue_locked(h, w);
}

/* Without the lock, w referenced and ready: ask the worker how many requests
 * it runs at once and queues (its --parallel may have been lowered to what
 * the RAM holds, and a unit's drop-in may set either). Best effort: what is
 * not learnt now is learnt by the next request or health check. */
static void learn_capacity(struct hive *h, struct hive_worker *w, const char *health_body) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(freep) char *body = NULL;
        int64_t slots = 0, queue = -1;
        int status = 0;

        if (!health_body) {
                if (hive_wconn_get(w->socket_path, "/v1/health", 2000, &status, &body) < 0 || status != 200 || !body)
                        return;
                health_body = body;
        }
        if (json_parse_strict(health_body, strlen(health_body), 8, &o, NULL, 0) < 0 ||
            !json_object_is_type(o, json_type_object))
                return;
        /* Values from outside: within what rbee-workerd accepts. */
        if (json_get_int64(o, "slots", 1, 256, &slots) <= 0)
                return;
        if (json_get_int64(o, "queue_capacity", 0, 65536, &queue) <= 0)
                queue = -1;
        pthread_mutex_lock(&h->lock);
        if (w->slots != (unsigned) slots || w->queue_capacity != queue)
                log_debug("Worker %s runs %lld requests at once, queues %lld", w->model, (long long) slots,
                          (long long) queue);
        w->slots = (unsigned) slots;
        w->queue_capacity = queue;
        pthread_mutex_unlock(&h->lock);
}

struct json_object *hive_worker_to_json_locked(struct hive *h, const struct hive_worker *w) {
        struct json_object *o = json_object_new_object();
        uint64_t now = hive_now_usec();
        int64_t idle = 0;

        if (!o)
                return NULL;
        if (w->active == 0 && w->last_used_usec && now > w->last_used_usec)
                idle = (int64_t) ((now - w->last_used_usec) / 1000000);
        json_object_object_add(o, "model", json_object_new_string(w->model));
        json_object_object_add(o, "unit", json_object_new_string(w->unit));
        json_object_object_add(o, "mode", json_object_new_string(h->units->name));
        json_object_object_add(o, "state", json_object_new_string(hive_worker_state_name(w->state)));
        json_object_object_add(o, "sub_state", json_object_new_string(w->sub_state));
        json_object_object_add(o, "status_text", w->status_text[0] ? json_object_new_string(w->status_text) : NULL);
        json_object_object_add(o, "backend", json_object_new_string(w->backend ? w->backend : "cpu"));
        json_object_object_add(o, "device", json_object_new_int(w->device));
        json_object_object_add(o, "pid", w->pid > 0 ? json_object_new_int(w->pid) : NULL);
        json_object_object_add(o, "memory_bytes", json_object_new_int64(w->pid > 0 ? (int64_t) hive_pid_rss(w->pid) : 0));
        json_object_object_add(o, "started_at", w->started_at ? json_object_new_int64(w->started_at) : NULL);
        json_object_object_add(o, "ready_at", w->ready_at ? json_object_new_int64(w->ready_at) : NULL);
        json_object_object_add(o, "idle_seconds", json_object_new_int64(idle));
        json_object_object_add(o, "keep_alive_seconds", json_object_new_int64(w->keep_alive_s));
        if (w->state == HIVE_WORKER_READY && w->active == 0 && w->keep_alive_s >= 0)
                json_object_object_add(o, "expires_in_seconds",
                                       json_object_new_int64(MAX((int64_t) 0, w->keep_alive_s - idle)));
        else
                json_object_object_add(o, "expires_in_seconds", NULL);
        json_object_object_add(o, "active_requests", json_object_new_int64(w->active));
        json_object_object_add(o, "slots", json_object_new_int64(worker_slots_locked(h, w)));
        json_object_object_add(o, "queue_limit", json_object_new_int64(worker_queue_locked(h, w)));
        json_object_object_add(o, "request_limit", json_object_new_int64(hive_worker_request_limit_locked(h, w)));
        json_object_object_add(o, "socket", json_object_new_string(w->socket_path));
        json_object_object_add(o, "adopted", json_object_new_boolean(w->adopted));
        json_object_object_add(o, "healthy", json_object_new_boolean(w->healthy));
        json_object_object_add(o, "log", w->log_path && !w->adopted && streq(h->units->name, "process")
                                                 ? json_object_new_string(w->log_path)
                                                 : NULL);
        json_object_object_add(o, "error", w->error[0] ? json_object_new_string(w->error) : NULL);
        return o;
}

void hive_changed_locked(struct hive *h) {
        uint64_t one = 1;

        pthread_cond_broadcast(&h->changed);
        for (size_t i = 0; i < h->n_waiters; i++)
                (void) !write(h->waiter_fds[i], &one, sizeof(one));
}

static int timed_wait(struct hive *h, uint64_t until_usec) {
        struct timespec ts;
        uint64_t now = hive_now_usec();

        if (now >= until_usec)
                return ETIMEDOUT;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t) ts.tv_nsec + (until_usec - now) * 1000u;
        ts.tv_sec += (time_t) (ns / 1000000000u);
        ts.tv_nsec = (long) (ns % 1000000000u);
        return pthread_cond_timedwait(&h->changed, &h->lock, &ts);
}

/* Has the client of this request hung up? Only the hang-up counts: bytes it
 * sends (a pipelined request) are for the HTTP server to read later. */
static bool client_hung_up(int fd) {
        struct pollfd p = { .fd = fd, .events = POLLRDHUP };

        if (fd <= 0 || poll(&p, 1, 0) <= 0)
                return false;
        return p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL);
}

/* Lock held: as timed_wait(), but also ends (0) when the client hangs up, so
 * that the caller sees it at once. A condition variable cannot be polled
 * together with a socket: the wait registers an eventfd that
 * hive_changed_locked() writes to, before the lock is let go, so that no
 * change is lost in between. */
static int timed_wait_client(struct hive *h, uint64_t until_usec, int client_fd) {
        _cleanup_(closep) int fd = -EBADF;
        uint64_t now = hive_now_usec();
        int *l, r;

        if (client_fd <= 0)
                return timed_wait(h, until_usec);
        if (now >= until_usec)
                return ETIMEDOUT;
        fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        l = fd >= 0 ? realloc(h->waiter_fds, (h->n_waiters + 1) * sizeof(*l)) : NULL;
        if (!l)         /* no way to wait for both: look at the client now and then */
                return timed_wait(h, MIN(until_usec, now + 250000));
        h->waiter_fds = l;
        h->waiter_fds[h->n_waiters++] = fd;

        struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = client_fd, .events = POLLRDHUP } };
        uint64_t ms = (until_usec - now + 999) / 1000;
        pthread_mutex_unlock(&h->lock);
        r = poll(p, 2, (int) MIN(ms, (uint64_t) INT_MAX));
        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_waiters; i++)
                if (h->waiter_fds[i] == fd) {
                        h->waiter_fds[i] = h->waiter_fds[--h->n_waiters];
                        break;
                }
        return r == 0 && hive_now_usec() >= until_usec ? ETIMEDOUT : 0;
}

/* Lock held: wait for a change of the workers, or the client's hang-up,
 * until deadline (ETIMEDOUT). */
static int wait_change(struct hive *h, const struct hive_acquire *a, uint64_t deadline) {
        return timed_wait_client(h, deadline, a->client_fd);
}

void hive_acquire_error(int r, unsigned *ret_status, const char **ret_code) {
        switch (r) {
        case -ENOENT:
                *ret_status = 404, *ret_code = "model_not_found";
                break;
        case -ENODEV:
        case -EOPNOTSUPP:
                *ret_status = 400, *ret_code = "backend_unavailable";
                break;
        case -ENAMETOOLONG:
                *ret_status = 400, *ret_code = "invalid_request";
                break;
        case -ECONNREFUSED:
                *ret_status = 503, *ret_code = "worker_unavailable";
                break;
        case -ENOMEM:
                *ret_status = 507, *ret_code = "insufficient_memory";
                break;
        case -EBUSY:
        case -EMFILE:
                *ret_status = 503, *ret_code = "overloaded";
                break;
        case -ETIMEDOUT:
                *ret_status = 504, *ret_code = "worker_start_timeout";
                break;
        case -ECANCELED:
                *ret_status = 499, *ret_code = "cancelled";
                break;
        case -ESHUTDOWN:
                *ret_status = 503, *ret_code = "shutting_down";
                break;
        default:
                *ret_status = 502, *ret_code = "worker_failed";
        }
}

int hive_worker_check_placement_locked(struct hive *h, const struct hive_worker *w, const char *backend, int device,
                                       char *err, size_t errlen) {
        const char *running = w->backend ? w->backend : "cpu";
        int r;

        if (!backend && device < 0)
                return 0;
        /* What the machine lacks comes first: that reason holds after a stop too. */
        r = hive_backends_check(&h->backends, backend, device < 0 ? 0 : device, 0, err, errlen);
        if (r < 0)
                return r;
        if ((backend && !streq(backend, running)) || (device >= 0 && device != w->device)) {
                snprintf(err, errlen,
                         "the worker of '%s' runs on backend %s device %d, not %s device %d: stop it first "
                         "(DELETE /v1/workers/%s), never a silent fallback",
                         w->model, running, w->device, backend ? backend : running, device < 0 ? w->device : device,
                         w->model);
                return -ENODEV;
        }
        return 0;
}

/* Pre-start checks against what the machine has, then a new registry entry. */
static int prepare_start_locked(struct hive *h, const struct hive_acquire *a, struct hive_worker **ret, char *err,
                                size_t errlen) {
        _cleanup_(hive_model_freep) struct hive_model *m = NULL;
        struct hive_worker *w;
        const char *backend;
        size_t live = 0;
        int device, r;

        r = hive_catalog_get(h->catalog, a->model, &m);
        if (r == -ENOENT) {
                snprintf(err, errlen, "model '%s' is not in the catalog: register or download it first", a->model);
                return r;
        }
        if (r < 0) {
                snprintf(err, errlen, "cannot read the catalog: %s", strerror(-r));
                return -EIO;
        }
        if (access(m->local_path, R_OK) < 0) {
                snprintf(err, errlen, "the file of model '%s' (%s) cannot be read: %m", a->model, m->local_path);
                return -EIO;
        }
        /* The id names the worker's socket file: it must fit sun_path. */
        if (strlen(h->workers_dir) + 1 + strlen(a->model) + strlen(".sock") >= sizeof(((struct sockaddr_un) {}).sun_path)) {
                snprintf(err, errlen, "the id '%s' is too long for a worker socket path in %s: register the model "
                         "under a shorter id", a->model, h->workers_dir);
                return -ENAMETOOLONG;
        }
        backend = a->backend ? a->backend : m->backend;
        device = a->device >= 0 ? a->device : m->device;
        /* Memory moves: read it now, not at startup. */
        struct hive_backends now = h->backends;
        struct hive_backends fresh;
        if (hive_backends_detect(&fresh) >= 0)
                now.cpu = fresh.cpu;
        r = hive_backends_check(&now, backend, device, m->size, err, errlen);
        if (r < 0)
                return r;
        for (size_t i = 0; i < h->n_workers; i++)
                if (h->workers[i]->state != HIVE_WORKER_FAILED && h->workers[i]->state != HIVE_WORKER_GONE)
                        live++;
        if (h->opt.max_workers && live >= h->opt.max_workers) {
                snprintf(err, errlen, "%zu workers are running, the limit (--max-workers) is %u", live,
                         h->opt.max_workers);
                return -EMFILE;
        }
        r = hive_worker_new_locked(h, a->model, &w);
        if (r < 0)
                return r;
        w->backend = strdup(backend ? backend : "cpu");
        w->device = device;
        w->state = HIVE_WORKER_STARTING;
        snprintf(w->sub_state, sizeof(w->sub_state), "start");
        w->start_usec = hive_now_usec();
        w->started_at = hive_wall_sec();
        w->last_used_usec = w->start_usec;
        h->metrics.worker_starts++;
        *ret = w;
        return 0;
}

int hive_worker_acquire(struct hive *h, const struct hive_acquire *a, struct hive_worker **ret, bool *ret_started,
                        char *err, size_t errlen) {
        struct hive_worker *w = NULL;
        uint64_t deadline = hive_now_usec() + h->opt.start_timeout_usec;
        char last_status[256] = "";
        enum hive_worker_state last_state = HIVE_WORKER_GONE;
        bool started = false, attached = false;
        int r;

        pthread_mutex_lock(&h->lock);
        for (;;) {
                if (h->stopping) {
                        snprintf(err, errlen, "the hive is shutting down");
                        r = -ESHUTDOWN;
                        break;
                }
                if (a->cancel && *a->cancel) {
                        snprintf(err, errlen, "cancelled");
                        r = -ECANCELED;
                        break;
                }
                /* Gone while its request waited for the worker: it must
                 * not hold a place in the admission until the worker is
                 * ready (nor have its request sent to it then). */
                if (client_hung_up(a->client_fd)) {
                        snprintf(err, errlen, "the client hung up while its request waited for the worker");
                        r = -ECANCELED;
                        break;
                }
                if (!w) {
                        w = hive_worker_find(h, a->model);
                        if (w && w->state == HIVE_WORKER_FAILED && w->pid > 0 && !started) {
                                /* Failed but still exiting (a start that timed out): wait for it. */
                                w = NULL;
                                if (wait_change(h, a, deadline) == ETIMEDOUT) {
                                        snprintf(err, errlen, "the failed worker of '%s' is still exiting", a->model);
                                        r = -ETIMEDOUT;
                                        break;
                                }
                                continue;
                        }
                        if (w && w->state == HIVE_WORKER_FAILED && !started) {
                                /* Reported already: reap it and start afresh. */
                                struct hive_worker *old = hive_worker_ref(w);
                                hive_worker_remove_locked(h, old);
                                pthread_mutex_unlock(&h->lock);
                                (void) h->units->reap(h, old);
                                pthread_mutex_lock(&h->lock);
                                hive_worker_unref(h, old);
                                w = NULL;
                                continue;
                        }
                        if (w && (w->state == HIVE_WORKER_STOPPING || w->state == HIVE_WORKER_GONE)) {
                                /* Wait for the old one to go before starting another on its socket. */
                                w = NULL;
                                if (wait_change(h, a, deadline) == ETIMEDOUT) {
                                        snprintf(err, errlen, "the worker of '%s' is still stopping", a->model);
                                        r = -ETIMEDOUT;
                                        break;
                                }
                                continue;
                        }
                        if (!w) {
                                r = prepare_start_locked(h, a, &w, err, errlen);
                                if (r < 0) {
                                        w = NULL;
                                        break;
                                }
                                started = true;
                                hive_worker_ref(w);
                                if (!a->no_admission) {
                                        w->active++;
                                        attached = true;
                                }
                                if (a->progress)
                                        a->progress(a->userdata, w, "starting", "");
                                last_state = w->state;
                                log_info("Starting worker for %s (%s mode)", a->model, h->units->name);
                                pthread_mutex_unlock(&h->lock);
                                r = h->units->start(h, w);
                                pthread_mutex_lock(&h->lock);
                                if (r < 0 && w->state != HIVE_WORKER_FAILED)
                                        hive_worker_set_failed_locked(h, w, "cannot start %s: %s", w->unit, strerror(-r));
                                hive_kick(h);
                                continue;
                        }
                        /* Never attach a request to a worker on another backend than it asked for. */
                        r = hive_worker_check_placement_locked(h, w, a->backend, a->device, err, errlen);
                        if (r < 0) {
                                w = NULL;
                                break;
                        }
                        hive_worker_ref(w);
                        if (!a->no_admission) {
                                unsigned limit = hive_worker_request_limit_locked(h, w);
                                if (w->active >= limit) {
                                        h->metrics.rejected++;
                                        snprintf(err, errlen, "model '%s' is busy: %u requests running or queued (limit %u)",
                                                 a->model, w->active, limit);
                                        r = -EBUSY;
                                        break;
                                }
                                w->active++;
                                attached = true;
                        }
                }
                if (w->state == HIVE_WORKER_READY) {
                        r = 0;
                        break;
                }
                if (w->state == HIVE_WORKER_FAILED || w->state == HIVE_WORKER_GONE ||
                    w->state == HIVE_WORKER_STOPPING) {
                        snprintf(err, errlen, "the worker for '%s' %s: %s", a->model,
                                 w->state == HIVE_WORKER_FAILED ? "failed" : "stopped",
                                 w->error[0] ? w->error : "no reason given");
                        w->reported = true;
                        r = -EIO;
                        break;
                }
                if (a->progress && (w->state != last_state || strcmp(last_status, w->status_text) != 0)) {
                        a->progress(a->userdata, w, w->state == HIVE_WORKER_LOADING ? "loading" : "starting",
                                    w->status_text);
                        last_state = w->state;
                        memcpy(last_status, w->status_text, sizeof(last_status));
                }
                /* Also ends now and then for the progress of a start. */
                if (timed_wait_client(h, MIN(deadline, hive_now_usec() + 250000), a->client_fd) == ETIMEDOUT &&
                    hive_now_usec() >= deadline) {
                        snprintf(err, errlen, "the worker for '%s' did not become ready within %llu s (last status: %s)",
                                 a->model, (unsigned long long) (h->opt.start_timeout_usec / 1000000),
                                 w->status_text[0] ? w->status_text : "none");
                        r = -ETIMEDOUT;
                        break;
                }
        }
        if (r < 0 && w) {
                if (attached) {
                        w->active--;
                        w->last_used_usec = hive_now_usec();
                }
                /* A start that timed out or was abandoned must not linger half-started. */
                if (started && r == -ETIMEDOUT && w->state != HIVE_WORKER_FAILED)
                        hive_worker_set_failed_locked(h, w, "did not become ready within %llu s",
                                                      (unsigned long long) (h->opt.start_timeout_usec / 1000000));
                bool stop_it = started && r == -ETIMEDOUT;
                pthread_mutex_unlock(&h->lock);
                if (stop_it)
                        (void) h->units->stop(h, w);
                pthread_mutex_lock(&h->lock);
                hive_worker_unref(h, w);
                hive_kick(h);
                pthread_mutex_unlock(&h->lock);
                return r;
        }
        if (r >= 0) {
                w->last_used_usec = hive_now_usec();
                if (a->keep_alive_s >= -1)
                        w->keep_alive_s = a->keep_alive_s;
                *ret = w;
                if (ret_started)
                        *ret_started = started;
        }
        bool learn = r >= 0 && w->slots == 0;
        pthread_mutex_unlock(&h->lock);
        /* Once, as soon as it is ready: the admission limit until then was a guess. */
        if (learn)
                learn_capacity(h, w, NULL);
        return r;
}

void hive_worker_release(struct hive *h, struct hive_worker *w, int64_t keep_alive_s) {
        if (!w)
                return;
        pthread_mutex_lock(&h->lock);
        if (w->active > 0)
                w->active--;
        w->last_used_usec = hive_now_usec();
        if (keep_alive_s >= -1)
                w->keep_alive_s = keep_alive_s;
        hive_changed_locked(h);
        hive_worker_unref(h, w);
        hive_kick(h);
        pthread_mutex_unlock(&h->lock);
}

/* Errors of a connect, or of the wait for the answer's head, that say nobody
 * serves the socket any more (as opposed to a slow or confused worker). */
static bool worker_unreachable_error(int r) {
        return r == -ENOENT || r == -ECONNREFUSED || r == -ECONNRESET || r == -EPIPE || r == -ENOTCONN ||
               r == -ESHUTDOWN;
}

/* A worker that got SIGTERM answers what it still accepts with 503
 * shutting_down: for the hive that worker is gone too. One that answers 503
 * loading was started again behind the hive's back (socket activation after
 * a crash, systemctl restart, a watchdog restart): not ready after all. */
static bool worker_not_serving(struct hive_wconn *c) {
        const char *body;
        size_t len;

        if (hive_wconn_status(c) != 503 || hive_wconn_peek_body(c, 2000, &body, &len) < 0)
                return false;
        return hive_wreply_not_serving(body, len);
}

static const char *unreachable_reason(int r) {
        return r == -ESHUTDOWN ? "it answered 503: not serving" : strerror(-r);
}

/* A request could not reach w although it was listed ready: the worker was
 * stopped behind the hive's back (systemctl stop), crashed, or lost its
 * socket, and the hive has not seen it yet. Bring w->state up to date so
 * that the next acquire waits for it to go and starts a fresh one. */
static void worker_unreachable(struct hive *h, struct hive_worker *w, int error) {
        uint64_t deadline;
        int alive, pid;

        log_warning("Worker %s did not answer on %s (%s): checking it", w->model, w->socket_path,
                    unreachable_reason(error));
        pthread_mutex_lock(&h->lock);
        pid = w->pid;
        pthread_mutex_unlock(&h->lock);
        alive = h->units->check ? h->units->check(h, w) : 1;
        pthread_mutex_lock(&h->lock);
        /* A death is reported by the loop thread with its exit status (pidfd,
         * SIGCHLD), a STOPPING=1 by the notify socket, both already queued:
         * wait for them rather than guess. A worker that is alive has nothing
         * queued unless it is stopping, so it gets less time. */
        deadline = hive_now_usec() + (alive > 0 ? 300000 : 2000000);
        while (w->state == HIVE_WORKER_READY && timed_wait(h, deadline) != ETIMEDOUT)
                ;
        bool stop_it = false;
        if (w->state == HIVE_WORKER_READY) {
                if (alive == 0)
                        hive_worker_set_failed_locked(h, w, "the worker stopped answering on %s (%s)", w->socket_path,
                                                      unreachable_reason(error));
                else if (w->pid > 0 && w->pid != pid)
                        /* Started again behind our back (socket activation after
                         * a crash) and ready by now: that one may serve. */
                        log_info("Worker %s runs again as pid %d: retrying", w->model, w->pid);
                else {
                        /* It runs but nobody can reach it: replace it. */
                        log_warning("Worker %s runs but cannot be reached on %s: restarting it", w->model,
                                    w->socket_path);
                        w->healthy = false;
                        stop_it = true;
                }
        }
        hive_kick(h);
        pthread_mutex_unlock(&h->lock);
        if (stop_it)
                (void) h->units->stop(h, w);
}

int hive_worker_request(struct hive *h, const struct hive_acquire *a, const char *method, const char *path,
                        const char *body, size_t len, struct hive_wconn **slot, struct hive_worker **ret,
                        bool *ret_started, struct hive_wconn **ret_conn, char *err, size_t errlen) {
        bool started_any = false;
        int r;

        for (unsigned attempt = 0;; attempt++) {
                _cleanup_(hive_wconn_freep) struct hive_wconn *c = NULL;
                struct hive_worker *w = NULL;
                bool started = false;

                r = hive_worker_acquire(h, a, &w, &started, err, errlen);
                if (r < 0)
                        return r;
                started_any = started_any || started;
                r = hive_wconn_open(w->socket_path, method, path, "application/json", body, len, 10000, &c);
                if (r >= 0) {
                        pthread_mutex_lock(&h->lock);
                        if (slot)
                                *slot = c;
                        if (a->cancel && *a->cancel)
                                hive_wconn_abort(c);
                        pthread_mutex_unlock(&h->lock);
                        /* A blocking request gets its head only when the
                         * generation ends: a client gone meanwhile must not
                         * hold the slot that long. */
                        if (a->client_fd > 0)
                                hive_wconn_watch(c, a->client_fd);
                        r = hive_wconn_read_head(c, -1);
                        if (r >= 0 && worker_not_serving(c))
                                r = -ESHUTDOWN;
                        hive_wconn_watch(c, -EBADF);
                }
                if (r >= 0) {
                        *ret = w;
                        *ret_conn = TAKE_PTR(c);
                        if (ret_started)
                                *ret_started = started_any;
                        return 0;
                }
                if (slot) {
                        pthread_mutex_lock(&h->lock);
                        *slot = NULL;
                        pthread_mutex_unlock(&h->lock);
                }
                if (r == -ECANCELED && a->client_fd > 0) {
                        /* Closing the connection is what tells the worker to
                         * cancel the job: before the slot is given back, so
                         * that the next request finds the worker free. */
                        c = hive_wconn_free(c);
                        snprintf(err, errlen, "the client hung up before the worker answered");
                        hive_worker_release(h, w, -2);
                        return -ECANCELED;
                }
                bool cancelled = a->cancel && *a->cancel;
                if (attempt == 0 && !cancelled && !h->stopping && worker_unreachable_error(r)) {
                        worker_unreachable(h, w, r);
                        hive_worker_release(h, w, -2);
                        continue;
                }
                if (cancelled) {
                        snprintf(err, errlen, "cancelled");
                        r = -ECANCELED;
                } else if (worker_unreachable_error(r)) {
                        snprintf(err, errlen, "the worker for '%s' cannot be reached on %s even after a restart: %s",
                                 a->model, w->socket_path, unreachable_reason(r));
                        r = -ECONNREFUSED;
                } else {
                        snprintf(err, errlen, "the worker for '%s' did not answer on %s: %s", a->model, w->socket_path,
                                 strerror(-r));
                        r = -EIO;
                }
                hive_worker_release(h, w, -2);
                return r;
        }
}

int hive_worker_stop(struct hive *h, const char *model, bool wait) {
        struct hive_worker *w;
        uint64_t deadline;
        int r;

        pthread_mutex_lock(&h->lock);
        w = hive_worker_find(h, model);
        if (!w) {
                pthread_mutex_unlock(&h->lock);
                return -ENOENT;
        }
        hive_worker_ref(w);
        if (w->state == HIVE_WORKER_FAILED) {
                hive_worker_remove_locked(h, w);
                pthread_mutex_unlock(&h->lock);
                (void) h->units->reap(h, w);
                pthread_mutex_lock(&h->lock);
                hive_worker_unref(h, w);
                pthread_mutex_unlock(&h->lock);
                return 0;
        }
        pthread_mutex_unlock(&h->lock);
        r = h->units->stop(h, w);
        pthread_mutex_lock(&h->lock);
        hive_kick(h);
        deadline = hive_now_usec() + h->opt.stop_timeout_usec + 3000000;
        while (r >= 0 && wait && hive_worker_find(h, model) == w) {
                if (timed_wait(h, deadline) == ETIMEDOUT) {
                        r = -ETIMEDOUT;
                        break;
                }
        }
        hive_worker_unref(h, w);
        pthread_mutex_unlock(&h->lock);
        return r;
}

static void describe_status(int st, char *buf, size_t n) {
        if (st < 0)
                snprintf(buf, n, "exited");
        else if (WIFEXITED(st))
                snprintf(buf, n, "exited with status %d", WEXITSTATUS(st));
        else if (WIFSIGNALED(st))
                snprintf(buf, n, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
                snprintf(buf, n, "exited (wait status 0x%x)", (unsigned) st);
}

void hive_worker_exited(struct hive *h, struct hive_worker *w, int wait_status) {
        char how[128];

        describe_status(wait_status, how, sizeof(how));
        pthread_mutex_lock(&h->lock);
        if (w->pid_source) {
                sd_event_source_disable_unref(w->pid_source);
                w->pid_source = NULL;
        }
        if (w->pidfd >= 0) {
                close(w->pidfd);
                w->pidfd = -EBADF;
        }
        if (w->state == HIVE_WORKER_STOPPING || w->state == HIVE_WORKER_GONE) {
                log_info("Worker %s (pid %d) stopped: %s", w->model, w->pid, how);
                w->pid = 0;
                w->state = HIVE_WORKER_GONE;
                snprintf(w->sub_state, sizeof(w->sub_state), "dead");
        } else if (w->state != HIVE_WORKER_FAILED) {
                int pid = w->pid;
                w->pid = 0;
                hive_worker_set_failed_locked(h, w, "process %d %s%s%s%s; see %s", pid, how,
                                              w->status_text[0] ? " (last status: " : "", w->status_text,
                                              w->status_text[0] ? ")" : "", w->log_path);
        } else
                w->pid = 0;
        hive_changed_locked(h);
        hive_kick(h);
        pthread_mutex_unlock(&h->lock);
}

void hive_notify_message(struct hive *h, int pid, const char *msg) {
        struct hive_worker *w = NULL;
        char buf[4096], *save = NULL;

        snprintf(buf, sizeof(buf), "%s", msg);
        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_workers && pid > 0; i++)
                if (h->workers[i]->pid == pid)
                        w = h->workers[i];
        if (!w) {
                pthread_mutex_unlock(&h->lock);
                log_debug("Notify message from unknown pid %d ignored", pid);
                return;
        }
        for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (streq(line, "READY=1")) {
                        if (w->state == HIVE_WORKER_STARTING || w->state == HIVE_WORKER_LOADING) {
                                w->state = HIVE_WORKER_READY;
                                w->ready_usec = hive_now_usec();
                                w->ready_at = hive_wall_sec();
                                w->last_used_usec = w->ready_usec;
                                snprintf(w->sub_state, sizeof(w->sub_state), "running");
                                log_info("Worker %s (pid %d) is ready after %llu ms", w->model, w->pid,
                                         (unsigned long long) ((w->ready_usec - w->start_usec) / 1000));
                        }
                } else if (str_startswith(line, "STATUS=")) {
                        snprintf(w->status_text, sizeof(w->status_text), "%s", line + 7);
                        if (w->state == HIVE_WORKER_STARTING)
                                w->state = HIVE_WORKER_LOADING;
                } else if (streq(line, "STOPPING=1")) {
                        if (w->state != HIVE_WORKER_FAILED)
                                w->state = HIVE_WORKER_STOPPING;
                        snprintf(w->sub_state, sizeof(w->sub_state), "stop-sigterm");
                        if (!w->stop_usec)
                                w->stop_usec = hive_now_usec();
                } else if (str_startswith(line, "ERRNO=")) {
                        snprintf(w->error, sizeof(w->error), "%s%s%s", w->status_text, w->status_text[0] ? "; " : "",
                                 line);
                }
        }
        hive_changed_locked(h);
        pthread_mutex_unlock(&h->lock);
}

static void check_health(struct hive *h) {
        static uint64_t last;
        uint64_t now = hive_now_usec();
        struct hive_worker **ws = NULL;
        size_t n = 0;

        if (!h->opt.health_interval_usec || now - last < h->opt.health_interval_usec)
                return;
        last = now;
        pthread_mutex_lock(&h->lock);
        ws = calloc(h->n_workers + 1, sizeof(*ws));
        for (size_t i = 0; ws && i < h->n_workers; i++)
                if (h->workers[i]->state == HIVE_WORKER_READY)
                        ws[n++] = hive_worker_ref(h->workers[i]);
        pthread_mutex_unlock(&h->lock);
        for (size_t i = 0; i < n; i++) {
                _cleanup_(freep) char *body = NULL;
                int status = 0, r;
                r = hive_wconn_get(ws[i]->socket_path, "/v1/health", 2000, &status, &body);
                /* Adopted workers, and a --parallel changed by a restart behind the hive's back. */
                if (r >= 0 && status == 200 && body)
                        learn_capacity(h, ws[i], body);
                pthread_mutex_lock(&h->lock);
                if (r < 0 || status != 200) {
                        ws[i]->health_failures++;
                        if (ws[i]->healthy)
                                log_warning("Worker %s failed its health check: %s", ws[i]->model,
                                            r < 0 ? strerror(-r) : "bad status");
                        ws[i]->healthy = false;
                } else {
                        ws[i]->healthy = true;
                        ws[i]->health_failures = 0;
                }
                hive_worker_unref(h, ws[i]);
                pthread_mutex_unlock(&h->lock);
        }
        free(ws);
}

void hive_periodic(struct hive *h) {
        struct hive_worker *to_stop[64], *to_reap[64];
        size_t n_stop = 0, n_reap = 0;
        uint64_t now = hive_now_usec();

        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_workers; i++) {
                struct hive_worker *w = h->workers[i];

                switch (w->state) {
                case HIVE_WORKER_READY:
                        /* The idle clock runs only while nothing is attached. */
                        if (w->active == 0 && w->keep_alive_s >= 0 &&
                            now - w->last_used_usec >= (uint64_t) w->keep_alive_s * 1000000u && n_stop < 64) {
                                log_info("Worker %s idle for %llu s (keep-alive %lld s): stopping", w->model,
                                         (unsigned long long) ((now - w->last_used_usec) / 1000000),
                                         (long long) w->keep_alive_s);
                                to_stop[n_stop++] = hive_worker_ref(w);
                        }
                        break;
                case HIVE_WORKER_STOPPING:
                        if (w->stop_usec && now - w->stop_usec > h->opt.stop_timeout_usec && n_stop < 64)
                                to_stop[n_stop++] = hive_worker_ref(w);     /* escalates */
                        break;
                case HIVE_WORKER_FAILED:
                        /* Reported (or listed long enough): reap. */
                        if (w->pid <= 0 && (now - w->failed_usec > h->opt.failed_linger_usec) && w->active == 0 &&
                            n_reap < 64) {
                                to_reap[n_reap++] = hive_worker_ref(w);
                                hive_worker_remove_locked(h, w);
                                i--;
                        }
                        break;
                case HIVE_WORKER_GONE:
                        if (n_reap < 64) {
                                to_reap[n_reap++] = hive_worker_ref(w);
                                hive_worker_remove_locked(h, w);
                                i--;
                        }
                        break;
                default:
                        break;
                }
        }
        hive_jobs_expire_locked(h);
        pthread_mutex_unlock(&h->lock);

        for (size_t i = 0; i < n_stop; i++)
                (void) h->units->stop(h, to_stop[i]);
        for (size_t i = 0; i < n_reap; i++)
                (void) h->units->reap(h, to_reap[i]);
        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < n_stop; i++)
                hive_worker_unref(h, to_stop[i]);
        for (size_t i = 0; i < n_reap; i++)
                hive_worker_unref(h, to_reap[i]);
        pthread_mutex_unlock(&h->lock);
        check_health(h);
}
