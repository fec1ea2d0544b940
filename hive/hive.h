/* SPDX-License-Identifier: MIT */
#pragma once

/* The hive's shared state. One lock guards everything below (workers, jobs,
 * counters); `changed` is broadcast whenever a worker or a job changes, so
 * that HTTP threads waiting for a worker to become ready, or for the next
 * event of a job, wake up. The event loop thread owns the sd-event sources
 * (notify socket, signals, child pidfds, timers); other threads ask it for
 * work by writing to kick_fd. */

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "backends.h"
#include "catalog.h"
#include "http-guard.h"
#include "strutil.h"

struct hive_wconn;

enum hive_units_mode {
        HIVE_UNITS_AUTO,
        HIVE_UNITS_PROCESS,
        HIVE_UNITS_SYSTEMD,
};

struct hive_options {
        char *listen;
        char *state_dir;
        char *runtime_dir;
        char *workerd;
        char *hf_endpoint;
        char *api_key_file;
        enum hive_units_mode units;
        int64_t keep_alive_s;           /* -1 never, 0 at once */
        unsigned max_queue;             /* waiting requests per worker, beyond its slots */
        unsigned max_workers;
        unsigned max_jobs;              /* concurrent job threads */
        int worker_threads;             /* --threads for workers; 0 = their default */
        unsigned worker_parallel;       /* --parallel for workers (process mode); 0 = their default */
        uint64_t start_timeout_usec;
        uint64_t stop_timeout_usec;
        uint64_t health_interval_usec;
        uint64_t failed_linger_usec;    /* how long a failed worker stays listed before it is reaped */
        unsigned download_retries;
        uint64_t download_stall_usec;
        uint64_t download_retry_base_usec;
        bool stop_workers_on_exit;
        int log_level;
        /* Slow clients and greedy peers (common/http-guard.h). */
        struct http_guard_config guard;
};

/* rbee-workerd's --parallel when it is given none (it runs fewer when their
 * KV caches would not fit in half the RAM). */
#define HIVE_WORKER_DEFAULT_SLOTS 4u

enum hive_worker_state {
        HIVE_WORKER_STARTING,
        HIVE_WORKER_LOADING,
        HIVE_WORKER_READY,
        HIVE_WORKER_STOPPING,
        HIVE_WORKER_FAILED,
        HIVE_WORKER_GONE,               /* exited after a stop; about to leave the list */
};

struct hive_worker {
        unsigned refs;
        char *model;                    /* a valid id (hive_id_is_valid): safe as a file name */
        char *unit;
        char *socket_path;              /* <runtime>/workers/<model>.sock, the id unescaped (%I) */
        char *log_path;
        char *registry_path;
        char *backend;
        int device;
        enum hive_worker_state state;
        char sub_state[32];
        char status_text[256];
        char error[512];
        int pid;
        int pidfd;
        sd_event_source *pid_source;    /* loop thread only */
        bool is_child;                  /* forked by this hive: waitpid() it */
        bool adopted;
        bool healthy;
        unsigned health_failures;
        uint64_t starttime;             /* /proc starttime, against pid reuse */
        int64_t started_at, ready_at;   /* wall clock */
        uint64_t start_usec, ready_usec, last_used_usec, failed_usec, stop_usec;
        int64_t keep_alive_s;
        unsigned active;                /* requests attached (running, queued, or waiting for the start) */
        /* What the worker says it takes (its /v1/health, read once it is
         * ready): requests run at once, and how many may wait behind them.
         * 0 and -1 until known. */
        unsigned slots;
        int64_t queue_capacity;
        bool reported;                  /* a failure was shown in a listing */
};

enum hive_job_type {
        HIVE_JOB_DOWNLOAD,
        HIVE_JOB_INFER,
};

enum hive_job_state {
        HIVE_JOB_RUNNING,
        HIVE_JOB_DONE,
        HIVE_JOB_FAILED,
        HIVE_JOB_CANCELLED,
};

struct hive_job {
        unsigned refs;
        char *id;
        enum hive_job_type type;
        enum hive_job_state state;
        char *model;                    /* model id (infer, download target) */
        char *source;                   /* download */
        struct json_object *request;    /* infer body, download body */
        char **events;                  /* SSE frames */
        size_t n_events, cap_events, bytes;
        bool terminal;
        volatile int cancel;
        struct hive_wconn *conn;        /* the worker stream, for cancellation */
        int *watch_fds;                 /* eventfds of the SSE readers that wait for what comes next */
        size_t n_watch;
        char *worker_job_id;
        int64_t created_at, finished_at;
        uint64_t finished_usec;
        unsigned tokens;
};

struct hive_metrics {
        uint64_t requests[6];           /* by status class 1xx..5xx, [0] other */
        uint64_t worker_starts, worker_failures, rejected, tokens;
        uint64_t downloads_ok, downloads_failed, download_bytes;
};

struct hive;

/* The worker manager: systemd units over D-Bus, or processes forked here
 * with the same socket and notify contract. All called without the lock. */
struct hive_units_ops {
        const char *name;
        int (*init)(struct hive *h);
        void (*done)(struct hive *h);
        /* Start the worker; returns once it is started (process) or its
         * start job finished (systemd). Readiness is reported through
         * w->state under the lock. */
        int (*start)(struct hive *h, struct hive_worker *w);
        int (*stop)(struct hive *h, struct hive_worker *w);
        /* Reconcile with the truth (units, processes): adopt, mark failed,
         * drop what is gone. At startup with initial = true, then periodically. */
        int (*refresh)(struct hive *h, bool initial);
        /* Forget a failed worker (ResetFailedUnit, remove registry files). */
        int (*reap)(struct hive *h, struct hive_worker *w);
        /* A request could not reach the worker although it was listed ready:
         * read the truth about this one worker now (unit state, process
         * alive) instead of waiting for the next refresh, and update w->state
         * under the lock. 1 while it still runs, 0 when it is gone. */
        int (*check)(struct hive *h, struct hive_worker *w);
};

extern const struct hive_units_ops hive_units_process;
extern const struct hive_units_ops hive_units_systemd;

struct hive {
        pthread_mutex_t lock;
        pthread_cond_t changed;
        /* eventfds of threads that wait for a change and for their client's
         * hang-up at once (poll cannot wait on a condition variable) */
        int *waiter_fds;
        size_t n_waiters;
        struct hive_options opt;
        char *catalog_path;
        char *models_dir;
        char *workers_dir;              /* <runtime>/workers: registry and logs */
        char *notify_path;
        struct hive_catalog *catalog;
        char *catalog_recovered_from;
        struct hive_backends backends;
        const struct hive_units_ops *units;
        void *units_data;
        sd_event *event;
        int kick_fd;
        int notify_fd;
        struct hive_worker **workers;
        size_t n_workers;
        struct hive_job **jobs;
        size_t n_jobs;
        unsigned n_job_threads;
        struct hive_metrics metrics;
        struct http_guard *guard;       /* the server's, for /metrics; NULL before it starts */
        char *api_key;
        size_t api_key_len;
        int64_t started_at;
        bool stopping;
};

/* ---- loop.c ---- */
int hive_init(struct hive *h);
void hive_done(struct hive *h);
/* SIGCHLD: waitpid() every exited child and report the workers among them. */
void hive_reap_children(struct hive *h);

/* ---- workers.c ---- */
void hive_kick(struct hive *h);

struct hive_worker *hive_worker_ref(struct hive_worker *w);
void hive_worker_unref(struct hive *h, struct hive_worker *w);  /* lock held */
/* Lock held. */
struct hive_worker *hive_worker_find(struct hive *h, const char *model);
int hive_worker_new_locked(struct hive *h, const char *model, struct hive_worker **ret);
void hive_worker_remove_locked(struct hive *h, struct hive_worker *w);
void hive_worker_set_failed_locked(struct hive *h, struct hive_worker *w, const char *fmt, ...) _printf_(3, 4);
const char *hive_worker_state_name(enum hive_worker_state s);
struct json_object *hive_worker_to_json_locked(struct hive *h, const struct hive_worker *w);

typedef void (*hive_progress_fn)(void *userdata, const struct hive_worker *w, const char *state, const char *status);

struct hive_acquire {
        const char *model;
        const char *backend;            /* NULL: the model's default */
        int device;                     /* -1: the model's default */
        int64_t keep_alive_s;           /* -2: leave as is */
        hive_progress_fn progress;      /* called with the lock held */
        void *userdata;
        const volatile int *cancel;
        bool no_admission;              /* spawn requests: do not count as a request */
        int client_fd;                  /* > 0: while the worker's start or its answer is awaited,
                                         * a hang-up of this client gives up (-ECANCELED) and so
                                         * frees its place; 0 (stdin, never a client): none */
};

/* Lock held. How many requests w may hold at once (running and waiting):
 * its slots plus --max-queue, no more than the worker itself queues. Until
 * the worker said how many slots it runs, --worker-parallel or the worker's
 * default stands in. */
unsigned hive_worker_request_limit_locked(struct hive *h, const struct hive_worker *w);

/* Find or start the model's worker, wait until it is ready and attach to it
 * (admission: -EBUSY when it already holds hive_worker_request_limit_locked()
 * requests). *ret_started
 * tells whether this call started it. Errors with a message in err:
 * -ENOENT (no model), -ENODEV/-EOPNOTSUPP/-ENOMEM (pre-start checks),
 * -EBUSY, -ETIMEDOUT, -ECANCELED, -ESHUTDOWN, -EIO (worker failed), -EMFILE (max workers),
 * -ENAMETOOLONG (the id does not fit a socket path). A running worker on
 * another backend than a->backend is -ENODEV. */
int hive_worker_acquire(struct hive *h, const struct hive_acquire *a, struct hive_worker **ret, bool *ret_started,
                        char *err, size_t errlen);
/* Lock held. Whether a request asking for backend/device (NULL/-1: the
 * model's default) may use the running worker w: -ENODEV/-EOPNOTSUPP with a
 * message when the machine lacks that backend or w runs on another one. */
int hive_worker_check_placement_locked(struct hive *h, const struct hive_worker *w, const char *backend, int device,
                                       char *err, size_t errlen);
/* Acquire the model's worker and send it one request: connect, send, read the
 * response head (status in hive_wconn_status()). A worker that was listed
 * ready but cannot be reached (stopped behind the hive's back, crashed, its
 * socket gone) is re-checked, restarted and tried once more. *slot (may be
 * NULL) is published under the lock while the head is awaited, so that a
 * cancel can abort it; a->client_fd is watched meanwhile. Errors as
 * hive_worker_acquire(), -ECONNREFUSED when even the restarted worker could
 * not be reached, -ECANCELED when the client hung up. On success the caller
 * owns *ret_conn and releases *ret with hive_worker_release(). */
int hive_worker_request(struct hive *h, const struct hive_acquire *a, const char *method, const char *path,
                        const char *body, size_t len, struct hive_wconn **slot, struct hive_worker **ret,
                        bool *ret_started, struct hive_wconn **ret_conn, char *err, size_t errlen);
/* Detach a request; keep_alive_s >= -1 sets the worker's keep-alive. */
void hive_worker_release(struct hive *h, struct hive_worker *w, int64_t keep_alive_s);
/* Stop the model's worker and wait for it to go (bounded). -ENOENT when none. */
int hive_worker_stop(struct hive *h, const char *model, bool wait);

/* Loop thread: exit of a worker process (status < 0: unknown). */
void hive_worker_exited(struct hive *h, struct hive_worker *w, int wait_status);
/* Loop thread: one notify datagram from pid. */
void hive_notify_message(struct hive *h, int pid, const char *msg);
/* Loop thread: idle stops, reaping, health, stop escalation. */
void hive_periodic(struct hive *h);

/* ---- jobs.c ---- */
/* A new job under id (a client's job_id; NULL: a random "j-..."). -EINVAL
 * for an id that is not hive_job_id_is_valid(), -EEXIST while a running job
 * has that id; a finished job of that id is dropped. */
int hive_job_new_locked(struct hive *h, enum hive_job_type type, const char *model, const char *id,
                        struct hive_job **ret);
struct hive_job *hive_job_find_locked(struct hive *h, const char *id);
struct hive_job *hive_job_ref(struct hive_job *j);
void hive_job_unref_locked(struct hive *h, struct hive_job *j);
/* Append one SSE event (data is a JSON object; job_id is added). Lock held.
 * A terminal event (end, error) finishes the job with state. */
int hive_job_event_locked(struct hive *h, struct hive_job *j, const char *name, struct json_object *data);
/* Append a frame as received (already "event: ...\ndata: ...\n\n"). */
int hive_job_raw_event_locked(struct hive *h, struct hive_job *j, const char *frame, size_t len, bool terminal,
                              enum hive_job_state final_state);
int hive_job_error_locked(struct hive *h, struct hive_job *j, const char *code, const char *fmt, ...) _printf_(4, 5);
void hive_job_cancel_locked(struct hive *h, struct hive_job *j);
/* Lock held: wake everyone waiting for a change of workers or jobs (the
 * condition, and the waiters' eventfds). */
void hive_changed_locked(struct hive *h);

/* For an SSE reader: an eventfd that turns readable with every change of the
 * job (an event, its end, a cancel), so that the reader can wait for it and
 * for its client's hang-up at once (hive_job_wait). Lock held; the fd belongs
 * to the job until hive_job_unwatch_locked() (negative: nothing to do). */
int hive_job_watch_locked(struct hive_job *j);
void hive_job_unwatch_locked(struct hive_job *j, int fd);
/* Without the lock: wait until watch_fd is readable, and reset it; or until
 * client_fd (negative: none) hangs up, -ECANCELED. */
int hive_job_wait(int watch_fd, int client_fd);
struct json_object *hive_job_to_json_locked(const struct hive_job *j);
const char *hive_job_state_name(enum hive_job_state s);
const char *hive_job_type_name(enum hive_job_type t);
/* Start a detached thread for the job (bounded by max_jobs): -EAGAIN when full. Lock held. */
int hive_job_start_thread_locked(struct hive *h, struct hive_job *j);
/* Drop finished jobs older than ten minutes. Lock held. */
void hive_jobs_expire_locked(struct hive *h);

/* ---- infer.c ---- */
void *hive_infer_thread(void *arg);
/* Map an acquire error to (status, code). */
void hive_acquire_error(int r, unsigned *ret_status, const char **ret_code);

/* ---- download.c ---- */
void *hive_download_thread(void *arg);
/* At start, before serving: resume the downloads a previous hive left in
 * flight (catalog downloads table) under their job ids, and remove .partial
 * files no download claims. Returns how many resumed. Lock not held. */
int hive_downloads_recover(struct hive *h);
/* Parse a source reference, derive the default id. -EINVAL with a message. */
int hive_download_parse_source(const char *source, char **ret_repo, char **ret_sel, char **ret_default_id,
                               char *err, size_t errlen);
/* The repo listing (GET /api/models/REPO/tree/main): a JSON array, else -EBADMSG. */
int hive_download_parse_listing(const char *text, size_t len, struct json_object **ret);
/* Pick the file from the listing: exact name, else the one .gguf whose name
 * holds the quant, else the repo's only .gguf; with its size and sha256 (LFS
 * oid, NULL unless 64 hex digits). Files whose name could not be given as
 * hf:REPO:FILE are not considered. A failure names its job error code and
 * says why: -ENOENT (quant_not_found), -ENOTUNIQ (ambiguous_file), -EBADMSG
 * (upstream_error: a size over INT64_MAX), -ENOMEM. */
int hive_download_choose_file(struct json_object *list, const char *repo, const char *sel, char **ret_path,
                              uint64_t *ret_size, char **ret_sha, const char **ret_code, char *err, size_t errlen);
/* The status of a "HTTP/x yyy ..." header line of len bytes (not NUL-terminated), else -EINVAL. */
int hive_download_header_status(const char *p, size_t len);

struct hive_thread_arg {
        struct hive *h;
        struct hive_job *j;
};
