/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>
#include <time.h>

#include "inference.h"
#include "logging.h"
#include "prompt.h"

#define RECENT_IDS 128
/* Prompt tokens decoded between two heartbeats (and two cancellation checks). */
#define PREFILL_CHUNK 256
/* Prompts up to this long are decoded with the other slots' step. */
#define PREFILL_MERGE 16
/* How much longer than now systemd should wait for the start, per progress step. */
#define EXTEND_TIMEOUT_USEC (60ull * 1000000ull)

/* A slot runs one job on one sequence of the context. Only the inference
 * thread changes a slot, under the lock for j (which other threads read). */
struct slot {
        struct worker_inference *e;
        uint32_t seq;
        struct worker_job *j;           /* NULL: free */
        rbee_stream *stream;
        bool prefilling;
};

struct worker_inference {
        struct worker_inference_config cfg;
        char *model_path, *name, *chat_format;
        struct worker_metrics *metrics;

        pthread_t thread;
        bool thread_started, thread_joined;
        int efd;

        pthread_mutex_t lock;
        pthread_cond_t cond;
        enum worker_state state;
        bool stopping;
        unsigned progress_done, progress_total;
        bool uploading;                 /* progress counts layers going to the GPU, after the load */
        int load_error;
        char load_message[512];
        struct worker_job *queue_head, *queue_tail;
        unsigned n_queued;
        struct slot *slots;
        unsigned n_slots, n_active;
        char recent[RECENT_IDS][WORKER_JOB_ID_MAX + 1];
        unsigned recent_next;
        bool stalled_once;

        atomic_bool busy;
        atomic_uint_fast64_t heartbeat_usec;
        uint64_t last_activity_usec;    /* under lock */

        /* Owned by the inference thread; read-only for others once READY. */
        rbee_model *model;
        rbee_context *ctx;
        const rbee_vocab *vocab;
        struct rbee_chat_template chat;
        uint32_t n_ctx;
        int32_t n_vocab;
        int64_t loaded_at;
};

const char *worker_state_name(enum worker_state s) {
        switch (s) {
        case WORKER_STATE_LOADING:
                return "loading";
        case WORKER_STATE_READY:
                return "ready";
        case WORKER_STATE_FAILED:
                return "failed";
        case WORKER_STATE_STOPPING:
                return "stopping";
        }
        return "unknown";
}

static uint64_t mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static void beat(struct worker_inference *e) {
        atomic_store(&e->heartbeat_usec, mono_usec());
}

static void signal_main(struct worker_inference *e) {
        uint64_t one = 1;

        (void) !write(e->efd, &one, sizeof(one));
}

int worker_inference_new(const struct worker_inference_config *cfg, struct worker_metrics *metrics,
                         struct worker_inference **ret) {
        struct worker_inference *e;
        pthread_condattr_t ca;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->cfg = *cfg;
        e->model_path = strdup(cfg->model_path);
        e->name = strdup(cfg->name);
        e->chat_format = cfg->chat_format ? strdup(cfg->chat_format) : NULL;
        e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (!e->model_path || !e->name || (cfg->chat_format && !e->chat_format) || e->efd < 0) {
                if (e->efd >= 0)
                        close(e->efd);
                free(e->model_path);
                free(e->name);
                free(e->chat_format);
                free(e);
                return -ENOMEM;
        }
        e->cfg.model_path = e->model_path;
        e->cfg.name = e->name;
        e->cfg.chat_format = e->chat_format;
        e->metrics = metrics;
        pthread_mutex_init(&e->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&e->cond, &ca);
        pthread_condattr_destroy(&ca);
        e->state = WORKER_STATE_LOADING;
        atomic_init(&e->busy, true);
        atomic_init(&e->heartbeat_usec, mono_usec());
        *ret = e;
        return 0;
}

/* Wait on the engine's condition for up to ms, or until pred() holds.
 * Only the test hooks wait like this; real work never sleeps. */
static void timed_wait_locked(struct worker_inference *e, unsigned ms, bool (*pred)(struct worker_inference *, void *),
                              void *arg) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (long) (ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        while (!pred(e, arg))
                if (pthread_cond_timedwait(&e->cond, &e->lock, &ts) == ETIMEDOUT)
                        break;
}

static bool is_stopping(struct worker_inference *e, void *arg) {
        return e->stopping;
}

static bool progress_cb(unsigned done, unsigned total, void *userdata) {
        struct worker_inference *e = userdata;
        bool stop;

        beat(e);
        pthread_mutex_lock(&e->lock);
        bool changed = done != e->progress_done || total != e->progress_total;
        e->progress_done = done;
        e->progress_total = total;
        if (e->cfg.test_load_delay_ms > 0)
                timed_wait_locked(e, e->cfg.test_load_delay_ms, is_stopping, NULL);
        stop = e->stopping;
        pthread_mutex_unlock(&e->lock);

        if (changed && e->uploading)
                (void) sd_notifyf(false, "STATUS=Uploading %u/%u layers to GPU %d\nEXTEND_TIMEOUT_USEC=%llu", done,
                                  total, e->cfg.device, EXTEND_TIMEOUT_USEC);
        else if (changed)
                (void) sd_notifyf(false, "STATUS=Loading %u/%u layers\nEXTEND_TIMEOUT_USEC=%llu", done, total,
                                  EXTEND_TIMEOUT_USEC);
        beat(e);
        return !stop;
}

static int fail_load(struct worker_inference *e, int r, const char *fmt, ...) _printf_(3, 4);
static int fail_load(struct worker_inference *e, int r, const char *fmt, ...) {
        va_list ap;

        pthread_mutex_lock(&e->lock);
        e->load_error = r;
        va_start(ap, fmt);
        vsnprintf(e->load_message, sizeof(e->load_message), fmt, ap);
        va_end(ap);
        e->state = WORKER_STATE_FAILED;
        pthread_mutex_unlock(&e->lock);
        return r;
}

/* --parallel: as asked, else 4 sequences, fewer when their KV caches at
 * full length would take more than half the RAM. The cache is mapped
 * lazily, so an idle slot costs address space, not memory. */
static uint32_t pick_parallel(struct worker_inference *e, const struct rbee_model_info *info) {
        uint32_t n_ctx = e->cfg.n_ctx ? e->cfg.n_ctx : MIN(info->n_ctx_train, 4096u);
        uint64_t kv = rbee_model_kv_bytes(e->model, n_ctx);
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        uint64_t ram = pages > 0 && psz > 0 ? (uint64_t) pages * (uint64_t) psz : UINT64_MAX;
        uint32_t n = 4;

        if (e->cfg.n_parallel > 0)
                return e->cfg.n_parallel;
        while (n > 1 && kv > 0 && n * kv > ram / 2)
                n--;
        log_info("Running up to %u requests at once (%.1f MiB of KV cache each at %u tokens)", n,
                 kv / 1048576.0, n_ctx);
        return n;
}

static int load(struct worker_inference *e) {
        struct rbee_model_params mp;
        struct rbee_context_params cp;
        const struct rbee_model_info *info;
        char err[512] = "";
        uint64_t t0 = mono_usec();
        int r;

        (void) sd_notifyf(false, "STATUS=Loading %s\nEXTEND_TIMEOUT_USEC=%llu", e->name, EXTEND_TIMEOUT_USEC);
        log_info("Loading model %s from %s", e->name, e->model_path);

        rbee_model_default_params(&mp);
        mp.progress = progress_cb;
        mp.progress_userdata = e;
        mp.mlock = e->cfg.mlock;
        r = rbee_model_load(e->model_path, &mp, &e->model, err, sizeof(err));
        if (r == -ECANCELED)
                return fail_load(e, r, "loading was cancelled");
        if (r < 0)
                return fail_load(e, r, "cannot load %s: %s", e->model_path, err[0] ? err : strerror(-r));

        info = rbee_model_get_info(e->model);
        e->vocab = rbee_model_get_vocab(e->model);
        e->n_vocab = info->n_vocab;

        if (e->chat_format) {
                e->chat = (struct rbee_chat_template) {};
                r = rbee_chat_format_from_name(e->chat_format, &e->chat.format);
                if (r < 0)
                        return fail_load(e, -EINVAL, "unknown chat format '%s'", e->chat_format);
        } else {
                r = rbee_chat_template_detect(info->chat_template, &e->chat);
                if (r < 0) {
                        /* Like llama.cpp: a model without a template we know gets ChatML. */
                        log_notice("Model %s has %s chat template; using chatml for chat requests", e->name,
                                   r == -ENOENT ? "no" : "an unrecognised");
                        e->chat = (struct rbee_chat_template) { .format = RBEE_CHAT_CHATML };
                }
        }
        log_debug("Chat format: %s", strna(rbee_chat_format_name(e->chat.format)));

        rbee_context_default_params(&cp);
        cp.n_ctx = e->cfg.n_ctx;
        cp.n_threads = e->cfg.n_threads;
        if (e->cfg.cuda) {
                cp.backend = RBEE_BACKEND_CUDA;
                cp.device = e->cfg.device;
        }
        if (e->cfg.n_batch > 0)
                cp.n_batch = e->cfg.n_batch;
        cp.n_seq = e->cfg.cuda ? 1 : pick_parallel(e, info);
        /* A CUDA context uploads the weights layer by layer: as long as the load again. */
        cp.progress = progress_cb;
        cp.progress_userdata = e;
        e->uploading = e->cfg.cuda;
        r = rbee_context_new(e->model, &cp, &e->ctx);
        if (r == -ECANCELED)
                return fail_load(e, r, "loading was cancelled");
        if (r < 0)
                return fail_load(e, r, "cannot create a context of %u tokens: %s", cp.n_ctx, strerror(-r));
        e->n_ctx = rbee_context_n_ctx(e->ctx);
        e->slots = calloc(cp.n_seq, sizeof(struct slot));
        if (!e->slots)
                return fail_load(e, -ENOMEM, "out of memory");
        for (uint32_t i = 0; i < cp.n_seq; i++)
                e->slots[i] = (struct slot) { .e = e, .seq = i };
        pthread_mutex_lock(&e->lock);
        e->n_slots = cp.n_seq;
        pthread_mutex_unlock(&e->lock);

        double secs = (mono_usec() - t0) / 1e6;
        worker_metrics_set_load_seconds(e->metrics, secs);
        e->loaded_at = (int64_t) time(NULL);

        char f_secs[32], f_ctx[32];
        snprintf(f_secs, sizeof(f_secs), "RBEE_LOAD_SECONDS=%.3f", secs);
        snprintf(f_ctx, sizeof(f_ctx), "RBEE_N_CTX=%u", e->n_ctx);
        log_struct(LOG_INFO, ((const char *[]) { f_secs, f_ctx, NULL }),
                   "Loaded %s (%s, %s, %u layers) in %.2f s; context %u tokens", e->name, info->arch_name,
                   info->file_type, info->n_layer, secs, e->n_ctx);
        return 0;
}

static void remember(struct worker_inference *e, const char *id) {
        snprintf(e->recent[e->recent_next], sizeof(e->recent[0]), "%s", id);
        e->recent_next = (e->recent_next + 1) % RECENT_IDS;
}

static bool job_cancelled(struct worker_inference *e, void *arg) {
        return e->stopping || worker_job_cancel_reason(arg) != WORKER_CANCEL_NONE;
}

static int on_token(int32_t token, const char *text, size_t len, void *userdata) {
        struct slot *sl = userdata;
        struct worker_inference *e = sl->e;

        beat(e);
        if (e->cfg.test_token_delay_ms > 0 || (e->cfg.test_stall_ms > 0 && !e->stalled_once)) {
                pthread_mutex_lock(&e->lock);
                if (e->cfg.test_stall_ms > 0 && !e->stalled_once) {
                        /* A stall makes no heartbeat: the watchdog pings must stop. */
                        e->stalled_once = true;
                        timed_wait_locked(e, e->cfg.test_stall_ms, job_cancelled, sl->j);
                }
                if (e->cfg.test_token_delay_ms > 0)
                        timed_wait_locked(e, e->cfg.test_token_delay_ms, job_cancelled, sl->j);
                pthread_mutex_unlock(&e->lock);
                beat(e);
        }
        return worker_job_token(sl->j, text, len, token >= 0);
}

/* How a job ends, delivered to its client only once its slot is free
 * again: whoever sees the end and asks right away finds the slot free, the
 * metrics counted and the id among the finished ones. */
struct job_end {
        struct rbee_generate_result res;
        unsigned status;                /* 0: finished, else failed with this status */
        const char *code;
        char message[128];
};

static void deliver(struct worker_job *j, const struct job_end *end) {
        if (end->status)
                worker_job_fail(j, end->status, end->code, "%s", end->message);
        else
                worker_job_finish(j, &end->res);
}

/* The job of sl ended (r < 0: it failed): log it, count it, free the slot
 * and tell the client. */
static void end_job(struct worker_inference *e, struct slot *sl, int r) {
        struct worker_job *j = sl->j;
        struct rbee_generate_result res = { .n_prompt = (uint32_t) j->n_tokens };
        enum worker_job_outcome outcome;
        struct job_end end;

        log_set_thread_field("RBEE_JOB_ID", j->id);
        if (sl->stream) {
                if (r >= 0)
                        r = rbee_stream_result(sl->stream, &res);
                sl->stream = rbee_stream_free(sl->stream);
        }
        if (r >= 0 && res.stop_reason == RBEE_STOP_NONE)
                res.stop_reason = RBEE_STOP_CANCELLED; /* ended while its prompt was decoded */
        if (r < 0)
                /* Whatever the engine left in the cache is not to be trusted. */
                (void) rbee_seq_truncate(e->ctx, sl->seq, 0);

        enum worker_cancel_reason why = worker_job_cancel_reason(j);
        end = (struct job_end) { .res = res };
        if (r < 0) {
                outcome = WORKER_OUTCOME_FAILED;
                log_error_errno(r, "Job %s failed: %m", j->id);
                end.status = 500;
                end.code = "internal_error";
                snprintf(end.message, sizeof(end.message), "generation failed: %s", strerror(-r));
        } else if (res.stop_reason == RBEE_STOP_CANCELLED && why == WORKER_CANCEL_SHUTDOWN) {
                outcome = WORKER_OUTCOME_CANCELLED;
                end.status = 503;
                end.code = "shutting_down";
                snprintf(end.message, sizeof(end.message), "the worker is shutting down");
        } else
                outcome = res.stop_reason != RBEE_STOP_CANCELLED ? WORKER_OUTCOME_COMPLETED
                          : why == WORKER_CANCEL_DISCONNECT      ? WORKER_OUTCOME_DISCONNECTED
                                                                 : WORKER_OUTCOME_CANCELLED;
        worker_metrics_job(e->metrics, outcome, r < 0 ? NULL : &res, j->queue_ms);

        char f_in[40], f_out[40], f_cached[40], f_pms[48], f_gms[48], f_stop[48];
        snprintf(f_in, sizeof(f_in), "RBEE_TOKENS_IN=%u", res.n_prompt);
        snprintf(f_out, sizeof(f_out), "RBEE_TOKENS_OUT=%u", res.n_generated);
        snprintf(f_cached, sizeof(f_cached), "RBEE_TOKENS_CACHED=%u", res.n_cached);
        snprintf(f_pms, sizeof(f_pms), "RBEE_PROMPT_MS=%.1f", res.prompt_ms);
        snprintf(f_gms, sizeof(f_gms), "RBEE_GEN_MS=%.1f", res.gen_ms);
        snprintf(f_stop, sizeof(f_stop), "RBEE_STOP_REASON=%s", rbee_stop_reason_name(res.stop_reason));
        if (r >= 0)
                log_struct(LOG_INFO, ((const char *[]) { f_in, f_out, f_cached, f_pms, f_gms, f_stop, NULL }),
                           "Job %s: %u prompt tokens (%u cached) in %.0f ms, %u generated in %.0f ms (%.1f tok/s), %s",
                           j->id, res.n_prompt, res.n_cached, res.prompt_ms, res.n_generated, res.gen_ms,
                           res.gen_ms > 0 ? res.n_generated * 1000.0 / res.gen_ms : 0.0,
                           why == WORKER_CANCEL_DISCONNECT ? "client disconnected"
                           : why == WORKER_CANCEL_SHUTDOWN ? "shutting down"
                                                           : rbee_stop_reason_name(res.stop_reason));
        log_set_thread_field(NULL, NULL);

        pthread_mutex_lock(&e->lock);
        sl->j = NULL;
        e->n_active--;
        e->last_activity_usec = mono_usec();
        remember(e, j->id);
        atomic_store(&e->busy, e->n_active > 0);
        beat(e);
        pthread_mutex_unlock(&e->lock);
        deliver(j, &end);
        worker_job_unref(j);
}

static void start_job(struct worker_inference *e, struct slot *sl) {
        struct worker_job *j = sl->j;
        struct rbee_generate_params gp;
        int r;

        worker_job_begin(j, (uint32_t) j->n_tokens);
        rbee_generate_default_params(&gp);
        gp.max_tokens = j->req.max_tokens;
        gp.stop = j->stop;
        gp.n_stop = j->n_stop;
        gp.ignore_eos = j->req.ignore_eos;
        gp.add_bos = false;
        gp.keep_cache = true;
        gp.sampling = j->req.sampling;
        gp.on_token = on_token;
        gp.userdata = sl;
        r = rbee_stream_new(e->ctx, sl->seq, j->tokens, j->n_tokens, &gp, &sl->stream);
        if (r < 0) {
                end_job(e, sl, r);
                return;
        }
        sl->prefilling = true;
}

/* Decode the next piece of a long prompt, so that it keeps the heartbeat
 * going, can be cancelled, and lets the other slots step in between. A
 * short prompt (or the short rest of one) goes with the next step instead,
 * in the same forward pass as the other slots' tokens. */
static void prefill_step(struct worker_inference *e, struct slot *sl) {
        int r;

        if (worker_job_cancel_reason(sl->j) != WORKER_CANCEL_NONE) {
                end_job(e, sl, 0);
                return;
        }
        if (rbee_stream_pending(sl->stream) <= PREFILL_MERGE)
                return;
        r = rbee_stream_prefill(sl->stream, PREFILL_CHUNK);
        beat(e);
        if (r < 0)
                end_job(e, sl, r);
        else if (r == 0)
                sl->prefilling = false;
}

/* A free slot for j: the one whose cache holds the longest prefix of its
 * prompt, so that a conversation goes on where its last turn left off. */
static struct slot *pick_slot_locked(struct worker_inference *e, struct worker_job *j) {
        struct slot *best = NULL;
        uint32_t best_n = 0;

        for (unsigned i = 0; i < e->n_slots; i++) {
                struct slot *sl = &e->slots[i];
                if (sl->j)
                        continue;
                uint32_t n = rbee_seq_match(e->ctx, sl->seq, j->tokens, j->n_tokens);
                if (!best || n > best_n) {
                        best = sl;
                        best_n = n;
                }
        }
        return best;
}

static void *thread_main(void *p) {
        struct worker_inference *e = p;
        int r;

        beat(e);
        r = load(e);
        if (r < 0) {
                atomic_store(&e->busy, false);
                signal_main(e);
                return NULL;
        }
        pthread_mutex_lock(&e->lock);
        if (!e->stopping)
                e->state = WORKER_STATE_READY;
        e->last_activity_usec = mono_usec();
        pthread_mutex_unlock(&e->lock);
        atomic_store(&e->busy, false);
        beat(e);
        signal_main(e);

        for (;;) {
                struct slot *admitted[RBEE_MAX_SEQ], *gen[RBEE_MAX_SEQ];
                rbee_stream *streams[RBEE_MAX_SEQ];
                unsigned n_admitted = 0, n_gen = 0;

                /* Take queued jobs into free slots; wait when there is nothing to do. */
                pthread_mutex_lock(&e->lock);
                while (!e->stopping && !e->queue_head && e->n_active == 0)
                        pthread_cond_wait(&e->cond, &e->lock);
                if (e->stopping && e->n_active == 0) {
                        pthread_mutex_unlock(&e->lock);
                        break;
                }
                while (!e->stopping && e->queue_head && e->n_active < e->n_slots) {
                        struct worker_job *j = e->queue_head;
                        e->queue_head = j->queue_next;
                        if (!e->queue_head)
                                e->queue_tail = NULL;
                        j->queue_next = NULL;
                        e->n_queued--;
                        struct slot *sl = pick_slot_locked(e, j);
                        sl->j = j;
                        e->n_active++;
                        admitted[n_admitted++] = sl;
                }
                atomic_store(&e->busy, e->n_active > 0);
                beat(e);
                pthread_mutex_unlock(&e->lock);

                for (unsigned i = 0; i < n_admitted; i++)
                        start_job(e, admitted[i]);

                /* One piece of each long prompt, then one token of every
                 * stream that is generating and the short prompts, all of
                 * them in one forward pass. */
                for (unsigned i = 0; i < e->n_slots; i++) {
                        struct slot *sl = &e->slots[i];
                        if (sl->j && sl->stream && sl->prefilling)
                                prefill_step(e, sl);
                }
                for (unsigned i = 0; i < e->n_slots; i++) {
                        struct slot *sl = &e->slots[i];
                        if (sl->j && sl->stream) {
                                gen[n_gen] = sl;
                                streams[n_gen++] = sl->stream;
                        }
                }
                if (n_gen == 0)
                        continue;
                r = rbee_stream_step(streams, n_gen);
                beat(e);
                for (unsigned i = 0; i < n_gen; i++) {
                        if (rbee_stream_pending(gen[i]->stream) == 0)
                                gen[i]->prefilling = false;
                        if (rbee_stream_finished(gen[i]->stream))
                                end_job(e, gen[i], 0);
                }
                if (r < 0)
                        log_debug("Decode step of %u streams failed: %s", n_gen, strerror(-r));
        }
        return NULL;
}

int worker_inference_start(struct worker_inference *e) {
        int r = pthread_create(&e->thread, NULL, thread_main, e);

        if (r != 0)
                return -r;
        e->thread_started = true;
        return 0;
}

int worker_inference_shutdown(struct worker_inference *e, uint64_t timeout_usec) {
        struct worker_job *q, *running[RBEE_MAX_SEQ];
        unsigned n_running = 0;
        struct timespec ts;
        int r;

        pthread_mutex_lock(&e->lock);
        e->stopping = true;
        if (e->state != WORKER_STATE_FAILED)
                e->state = WORKER_STATE_STOPPING;
        q = e->queue_head;
        e->queue_head = e->queue_tail = NULL;
        e->n_queued = 0;
        for (unsigned i = 0; i < e->n_slots; i++)
                if (e->slots[i].j)
                        running[n_running++] = worker_job_ref(e->slots[i].j);
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->lock);

        while (q) {
                struct worker_job *next = q->queue_next;
                q->queue_next = NULL;
                worker_job_cancel(q, WORKER_CANCEL_SHUTDOWN);
                worker_job_fail(q, 503, "shutting_down", "the worker is shutting down");
                worker_metrics_job(e->metrics, WORKER_OUTCOME_CANCELLED, NULL, 0);
                worker_job_unref(q);
                q = next;
        }
        for (unsigned i = 0; i < n_running; i++)
                worker_job_cancel(running[i], WORKER_CANCEL_SHUTDOWN);

        if (!e->thread_started || e->thread_joined) {
                for (unsigned i = 0; i < n_running; i++)
                        worker_job_unref(running[i]);
                return 0;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t) (timeout_usec / 1000000u);
        ts.tv_nsec += (long) (timeout_usec % 1000000u) * 1000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        r = pthread_timedjoin_np(e->thread, NULL, &ts);
        if (r == 0) {
                e->thread_joined = true;
                for (unsigned i = 0; i < n_running; i++)
                        worker_job_unref(running[i]);
                return 0;
        }
        /* The engine is stuck in a forward pass: end the streams for it. */
        for (unsigned i = 0; i < n_running; i++) {
                worker_job_fail(running[i], 503, "shutting_down", "the worker is shutting down");
                worker_job_unref(running[i]);
        }
        return -ETIMEDOUT;
}

struct worker_inference *worker_inference_free(struct worker_inference *e) {
        if (!e)
                return NULL;
        if (e->thread_started && !e->thread_joined) {
                /* Still running (wedged): leave it all to the process exit. */
                return NULL;
        }
        rbee_context_free(e->ctx);
        rbee_model_free(e->model);
        free(e->slots);
        close(e->efd);
        pthread_cond_destroy(&e->cond);
        pthread_mutex_destroy(&e->lock);
        free(e->model_path);
        free(e->name);
        free(e->chat_format);
        free(e);
        return NULL;
}

int worker_inference_event_fd(struct worker_inference *e) {
        return e->efd;
}

void worker_inference_ack(struct worker_inference *e) {
        uint64_t v;

        (void) !read(e->efd, &v, sizeof(v));
}

enum worker_state worker_inference_state(struct worker_inference *e, unsigned *ret_done, unsigned *ret_total) {
        enum worker_state s;

        pthread_mutex_lock(&e->lock);
        s = e->state;
        if (ret_done)
                *ret_done = e->progress_done;
        if (ret_total)
                *ret_total = e->progress_total;
        pthread_mutex_unlock(&e->lock);
        return s;
}

int worker_inference_load_error(struct worker_inference *e, const char **ret_message) {
        *ret_message = e->load_message;
        return e->load_error;
}

bool worker_inference_healthy(struct worker_inference *e, uint64_t stall_usec) {
        uint64_t now = mono_usec(), last = atomic_load(&e->heartbeat_usec);

        if (!atomic_load(&e->busy))
                return true;
        return now < last || now - last < stall_usec;
}

int worker_inference_prepare(struct worker_inference *e, struct worker_job *j, char *err, size_t errlen) {
        struct worker_prompt_model pm;

        if (worker_inference_state(e, NULL, NULL) != WORKER_STATE_READY)
                return -EAGAIN;
        /* Written by the inference thread before it became READY, read-only since. */
        pm = (struct worker_prompt_model) { .vocab = e->vocab, .chat = &e->chat, .n_ctx = e->n_ctx };
        return worker_prompt_build(&pm, j, err, errlen);
}

static struct worker_job *find_running_locked(struct worker_inference *e, const char *id) {
        for (unsigned i = 0; i < e->n_slots; i++)
                if (e->slots[i].j && streq(e->slots[i].j->id, id))
                        return e->slots[i].j;
        return NULL;
}

int worker_inference_submit(struct worker_inference *e, struct worker_job *j) {
        int r = 0;

        pthread_mutex_lock(&e->lock);
        if (e->stopping)
                r = -ESHUTDOWN;
        else if (e->state != WORKER_STATE_READY)
                r = -EAGAIN;
        else if (find_running_locked(e, j->id))
                r = -EEXIST;
        else {
                for (struct worker_job *q = e->queue_head; q; q = q->queue_next)
                        if (streq(q->id, j->id)) {
                                r = -EEXIST;
                                break;
                        }
                /* Every slot busy and max_queue jobs waiting behind them. */
                if (r == 0 && e->n_active + e->n_queued >= MAX(e->n_slots, 1u) + e->cfg.max_queue)
                        r = -EBUSY;
        }
        if (r == 0) {
                worker_job_ref(j);
                if (e->queue_tail)
                        e->queue_tail->queue_next = j;
                else
                        e->queue_head = j;
                e->queue_tail = j;
                e->n_queued++;
                pthread_cond_broadcast(&e->cond);
        }
        pthread_mutex_unlock(&e->lock);
        return r;
}

/* Take j out of the queue if it is still there; the caller then owns the queue's reference. */
static bool dequeue_locked(struct worker_inference *e, struct worker_job *j) {
        for (struct worker_job **p = &e->queue_head, *prev = NULL; *p; prev = *p, p = &(*p)->queue_next)
                if (*p == j) {
                        *p = j->queue_next;
                        if (e->queue_tail == j)
                                e->queue_tail = prev;
                        j->queue_next = NULL;
                        e->n_queued--;
                        return true;
                }
        return false;
}

static void end_queued(struct worker_inference *e, struct worker_job *j, enum worker_cancel_reason why) {
        struct rbee_generate_result res = { .n_prompt = (uint32_t) j->n_tokens, .stop_reason = RBEE_STOP_CANCELLED };

        worker_job_cancel(j, why);
        worker_job_finish(j, &res);
        worker_metrics_job(e->metrics,
                           why == WORKER_CANCEL_DISCONNECT ? WORKER_OUTCOME_DISCONNECTED : WORKER_OUTCOME_CANCELLED,
                           NULL, 0);
        log_info("Job %s cancelled while queued%s", j->id, why == WORKER_CANCEL_DISCONNECT ? " (client disconnected)" : "");
}

int worker_inference_cancel(struct worker_inference *e, const char *id) {
        struct worker_job *found = NULL;
        bool queued = false;

        pthread_mutex_lock(&e->lock);
        found = worker_job_ref(find_running_locked(e, id));
        if (!found)
                for (struct worker_job *q = e->queue_head; q; q = q->queue_next)
                        if (streq(q->id, id)) {
                                found = q;
                                queued = dequeue_locked(e, q);
                                break;
                        }
        if (!found) {
                for (unsigned i = 0; i < RECENT_IDS; i++)
                        if (streq(e->recent[i], id)) {
                                pthread_mutex_unlock(&e->lock);
                                return 1;
                        }
                pthread_mutex_unlock(&e->lock);
                return -ENOENT;
        }
        if (queued)
                remember(e, id);
        pthread_mutex_unlock(&e->lock);

        if (queued) {
                end_queued(e, found, WORKER_CANCEL_REQUEST);
                worker_job_unref(found);
                return 0;
        }
        /* The running job may have ended a moment ago, before the thread
         * cleared it: then this is a repeat like any other. */
        if (!worker_job_cancel(found, WORKER_CANCEL_REQUEST)) {
                worker_job_unref(found);
                return 1;
        }
        /* Wake a test hook's wait; real work checks the flag at the next token. */
        pthread_mutex_lock(&e->lock);
        pthread_cond_broadcast(&e->cond);
        pthread_mutex_unlock(&e->lock);
        log_info("Job %s: cancellation requested", id);
        worker_job_unref(found);
        return 0;
}

void worker_inference_cancel_job(struct worker_inference *e, struct worker_job *j, enum worker_cancel_reason why) {
        bool queued;

        pthread_mutex_lock(&e->lock);
        queued = dequeue_locked(e, j);
        if (queued)
                remember(e, j->id);
        pthread_mutex_unlock(&e->lock);

        if (queued) {
                end_queued(e, j, why);
                worker_job_unref(j);
                return;
        }
        if (worker_job_cancel(j, why)) {
                pthread_mutex_lock(&e->lock);
                pthread_cond_broadcast(&e->cond);
                pthread_mutex_unlock(&e->lock);
        }
}

void worker_inference_new_job_id(char buf[static WORKER_JOB_ID_MAX + 1]) {
        sd_id128_t id;

        if (sd_id128_randomize(&id) < 0) {
                /* Never happens on Linux with getrandom(); keep ids unique anyway. */
                static atomic_uint_fast64_t counter;
                snprintf(buf, WORKER_JOB_ID_MAX + 1, "job-%d-%llu", getpid(),
                         (unsigned long long) atomic_fetch_add(&counter, 1));
                return;
        }
        sd_id128_to_string(id, buf);
}

struct worker_limits worker_inference_limits(struct worker_inference *e) {
        return (struct worker_limits) {
                .n_ctx = e->n_ctx ? e->n_ctx : 1,
                .n_vocab = e->n_vocab,
                .max_prompt_bytes = 16u << 20,
        };
}

void worker_inference_gauges(struct worker_inference *e, struct worker_gauges *g) {
        pthread_mutex_lock(&e->lock);
        g->queue_depth = e->n_queued;
        g->queue_capacity = e->cfg.max_queue;
        g->busy = e->n_active > 0;
        g->running = e->n_active;
        g->slots = e->n_slots;
        g->ready = e->state == WORKER_STATE_READY;
        g->n_ctx = e->n_ctx;
        pthread_mutex_unlock(&e->lock);
}

double worker_inference_idle_seconds(struct worker_inference *e) {
        double s = 0;

        pthread_mutex_lock(&e->lock);
        if (e->state == WORKER_STATE_READY && e->n_active == 0 && !e->queue_head && e->last_activity_usec > 0)
                s = (mono_usec() - e->last_activity_usec) / 1e6;
        pthread_mutex_unlock(&e->lock);
        return s;
}

const char *worker_inference_name(struct worker_inference *e) {
        return e->name;
}

int64_t worker_inference_loaded_at(struct worker_inference *e) {
        return e->loaded_at;
}
