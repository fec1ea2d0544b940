/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>

#include "format.h"
#include "job.h"
#include "logging.h"

/* Output of one job is bounded by the context (every token is one event),
 * but a client that never reads must not make us hold unbounded memory. */
#define MAX_PENDING_OUTPUT (64u << 20)

static int64_t unix_now(void) {
        return (int64_t) time(NULL);
}

static uint64_t mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

int worker_job_new(struct worker_request *req, const char *id, const char *model_name, struct worker_job **ret) {
        struct worker_job *j;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        atomic_init(&j->n_ref, 1);
        snprintf(j->id, sizeof(j->id), "%s", id);
        j->model_name = strdup(model_name);
        j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (!j->model_name || j->efd < 0) {
                int r = j->efd < 0 ? -errno : -ENOMEM;
                if (j->efd >= 0)
                        close(j->efd);
                free(j->model_name);
                free(j);
                return r;
        }
        pthread_mutex_init(&j->lock, NULL);
        strbuf_init(&j->out, MAX_PENDING_OUTPUT);
        strbuf_init(&j->text, MAX_PENDING_OUTPUT);
        j->created = unix_now();
        j->submit_usec = mono_usec();
        j->req = *req;
        worker_request_init(req, req->api);
        *ret = j;
        return 0;
}

struct worker_job *worker_job_ref(struct worker_job *j) {
        if (j)
                atomic_fetch_add(&j->n_ref, 1);
        return j;
}

struct worker_job *worker_job_unref(struct worker_job *j) {
        if (!j || atomic_fetch_sub(&j->n_ref, 1) != 1)
                return NULL;
        worker_request_done(&j->req);
        free(j->tokens);
        free(j->stop);
        free(j->model_name);
        strbuf_done(&j->out);
        strbuf_done(&j->text);
        close(j->efd);
        pthread_mutex_destroy(&j->lock);
        free(j);
        return NULL;
}

static void wake(struct worker_job *j) {
        uint64_t one = 1;

        /* EAGAIN means the counter is already non-zero: the reader will wake anyway. */
        (void) !write(j->efd, &one, sizeof(one));
}

bool worker_job_cancel(struct worker_job *j, enum worker_cancel_reason why) {
        bool active;

        pthread_mutex_lock(&j->lock);
        active = !j->terminal;
        if (active && j->cancel == WORKER_CANCEL_NONE)
                j->cancel = why;
        pthread_mutex_unlock(&j->lock);
        wake(j);
        return active;
}

enum worker_cancel_reason worker_job_cancel_reason(struct worker_job *j) {
        enum worker_cancel_reason r;

        pthread_mutex_lock(&j->lock);
        r = j->cancel;
        pthread_mutex_unlock(&j->lock);
        return r;
}

/* A failed append means we ran out of memory for a client that is not
 * reading: the stream cannot be continued, so the job is cancelled. */
static void check_append(struct worker_job *j, int r) {
        if (r < 0 && j->cancel == WORKER_CANCEL_NONE) {
                log_warning_errno(r, "Job %s: cannot buffer output, cancelling: %m", j->id);
                j->cancel = WORKER_CANCEL_DISCONNECT;
        }
}

void worker_job_begin(struct worker_job *j, uint32_t n_prompt) {
        pthread_mutex_lock(&j->lock);
        j->state = WORKER_JOB_RUNNING;
        j->queue_ms = (mono_usec() - j->submit_usec) / 1000.0;
        j->result.n_prompt = n_prompt;
        if (j->req.stream)
                check_append(j, worker_format_started(j, &j->out));
        pthread_mutex_unlock(&j->lock);
        wake(j);
}

int worker_job_token(struct worker_job *j, const char *text, size_t len, bool counts) {
        int r = 0;

        pthread_mutex_lock(&j->lock);
        /* Checked under the lock that also guards the output: once a cancel
         * has returned to its caller, no further token reaches the client. */
        if (j->cancel != WORKER_CANCEL_NONE) {
                pthread_mutex_unlock(&j->lock);
                return 1;
        }
        if (counts)
                j->n_out++;
        if (len > 0) {
                if (j->req.stream)
                        check_append(j, worker_format_token(j, text, len, &j->out));
                else
                        check_append(j, strbuf_append(&j->text, text, len));
        }
        r = j->cancel != WORKER_CANCEL_NONE;
        pthread_mutex_unlock(&j->lock);
        if (len > 0)
                wake(j);
        return r;
}

void worker_job_finish(struct worker_job *j, const struct rbee_generate_result *res) {
        pthread_mutex_lock(&j->lock);
        if (!j->terminal) {
                j->result = *res;
                j->terminal = true;
                j->state = WORKER_JOB_DONE;
                if (j->req.stream)
                        (void) worker_format_end(j, &j->out);
        }
        pthread_mutex_unlock(&j->lock);
        wake(j);
}

void worker_job_fail(struct worker_job *j, unsigned status, const char *code, const char *fmt, ...) {
        va_list ap;

        pthread_mutex_lock(&j->lock);
        if (!j->terminal) {
                j->terminal = true;
                j->state = WORKER_JOB_DONE;
                j->error_status = status;
                snprintf(j->error_code, sizeof(j->error_code), "%s", code);
                va_start(ap, fmt);
                vsnprintf(j->error_message, sizeof(j->error_message), fmt, ap);
                va_end(ap);
                j->result.n_generated = j->n_out;
                if (j->result.n_prompt == 0)
                        j->result.n_prompt = (uint32_t) j->n_tokens;
                if (j->req.stream) {
                        /* The terminal event must get out even when the
                         * buffer is at its limit: make room for it. */
                        if (worker_format_error(j, &j->out) < 0) {
                                strbuf_reset(&j->out);
                                (void) worker_format_error(j, &j->out);
                        }
                }
        }
        pthread_mutex_unlock(&j->lock);
        wake(j);
}

bool worker_job_is_terminal(struct worker_job *j) {
        bool t;

        pthread_mutex_lock(&j->lock);
        t = j->terminal;
        pthread_mutex_unlock(&j->lock);
        return t;
}

/* Sleep until the producer signals or the peer hangs up. */
static int wait_event(struct worker_job *j, int sockfd) {
        struct pollfd p[2] = {
                { .fd = j->efd, .events = POLLIN },
                { .fd = sockfd, .events = POLLRDHUP },
        };
        uint64_t v;
        int r;

        for (;;) {
                r = poll(p, sockfd >= 0 ? 2 : 1, -1);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                break;
        }
        if (sockfd >= 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
                return -ECONNRESET;
        (void) !read(j->efd, &v, sizeof(v));
        return 0;
}

ssize_t worker_job_read(struct worker_job *j, char *buf, size_t n, int sockfd) {
        int r;

        for (;;) {
                pthread_mutex_lock(&j->lock);
                if (j->out.len > 0) {
                        size_t k = MIN(n, j->out.len);
                        memcpy(buf, j->out.data, k);
                        strbuf_consume(&j->out, k);
                        pthread_mutex_unlock(&j->lock);
                        return (ssize_t) k;
                }
                bool end = j->terminal;
                pthread_mutex_unlock(&j->lock);
                if (end)
                        return 0;
                r = wait_event(j, sockfd);
                if (r < 0)
                        return r;
        }
}

int worker_job_wait(struct worker_job *j, int sockfd) {
        int r;

        while (!worker_job_is_terminal(j)) {
                r = wait_event(j, sockfd);
                if (r < 0)
                        return r;
        }
        return 0;
}
