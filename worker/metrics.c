/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "metrics.h"

static const char *const route_names[_WORKER_ROUTE_MAX] = {
        [WORKER_ROUTE_INFERENCE] = "inference",
        [WORKER_ROUTE_CHAT] = "chat_completions",
        [WORKER_ROUTE_COMPLETIONS] = "completions",
        [WORKER_ROUTE_CANCEL] = "cancel",
        [WORKER_ROUTE_MODELS] = "models",
        [WORKER_ROUTE_HEALTH] = "health",
        [WORKER_ROUTE_READY] = "ready",
        [WORKER_ROUTE_METRICS] = "metrics",
        [WORKER_ROUTE_OTHER] = "other",
};

static const char *const outcome_names[_WORKER_OUTCOME_MAX] = {
        [WORKER_OUTCOME_COMPLETED] = "completed",
        [WORKER_OUTCOME_CANCELLED] = "cancelled",
        [WORKER_OUTCOME_DISCONNECTED] = "disconnected",
        [WORKER_OUTCOME_FAILED] = "failed",
};

void worker_metrics_init(struct worker_metrics *m) {
        memset(m, 0, sizeof(*m));
        pthread_mutex_init(&m->lock, NULL);
}

void worker_metrics_done(struct worker_metrics *m) {
        pthread_mutex_destroy(&m->lock);
}

void worker_metrics_request(struct worker_metrics *m, enum worker_route route, unsigned status) {
        unsigned cls = status / 100;

        if (route >= _WORKER_ROUTE_MAX || cls < 1 || cls > 5)
                return;
        atomic_fetch_add(&m->requests[route][cls], 1);
}

void worker_metrics_job(struct worker_metrics *m, enum worker_job_outcome outcome,
                        const struct rbee_generate_result *res, double queue_ms) {
        pthread_mutex_lock(&m->lock);
        if (outcome < _WORKER_OUTCOME_MAX)
                m->jobs[outcome]++;
        if (res) {
                m->prompt_tokens += res->n_prompt;
                m->cached_tokens += res->n_cached;
                m->generated_tokens += res->n_generated;
                m->prompt_seconds += res->prompt_ms / 1000.0;
                m->generation_seconds += res->gen_ms / 1000.0;
                if (res->gen_ms > 0 && res->n_generated > 0)
                        m->last_tokens_per_second = res->n_generated * 1000.0 / res->gen_ms;
        }
        m->queue_seconds += queue_ms / 1000.0;
        pthread_mutex_unlock(&m->lock);
}

void worker_metrics_set_load_seconds(struct worker_metrics *m, double s) {
        pthread_mutex_lock(&m->lock);
        m->load_seconds = s;
        pthread_mutex_unlock(&m->lock);
}

/* Label values are our own names, but the model name comes from the command
 * line: escape what the text format requires. */
static int append_label_value(struct strbuf *out, const char *s) {
        int r = 0;

        for (; *s && r >= 0; s++) {
                if (*s == '\\' || *s == '"')
                        r = strbuf_printf(out, "\\%c", *s);
                else if (*s == '\n')
                        r = strbuf_puts(out, "\\n");
                else
                        r = strbuf_append(out, s, 1);
        }
        return r;
}

int worker_metrics_render(struct worker_metrics *m, const struct worker_gauges *g, const char *model,
                          struct strbuf *out) {
        struct worker_metrics snap;
        int r = 0;

        pthread_mutex_lock(&m->lock);
        memcpy(snap.jobs, m->jobs, sizeof(snap.jobs));
        snap.prompt_tokens = m->prompt_tokens;
        snap.cached_tokens = m->cached_tokens;
        snap.generated_tokens = m->generated_tokens;
        snap.prompt_seconds = m->prompt_seconds;
        snap.generation_seconds = m->generation_seconds;
        snap.queue_seconds = m->queue_seconds;
        snap.last_tokens_per_second = m->last_tokens_per_second;
        snap.load_seconds = m->load_seconds;
        pthread_mutex_unlock(&m->lock);

#define EMIT(...) do { if (r >= 0) r = strbuf_printf(out, __VA_ARGS__); } while (0)
        EMIT("# HELP rbee_worker_info Worker build and model.\n# TYPE rbee_worker_info gauge\n");
        EMIT("rbee_worker_info{version=\"%s\",model=\"", rbee_version());
        if (r >= 0)
                r = append_label_value(out, model);
        EMIT("\"} 1\n");

        EMIT("# HELP rbee_worker_http_requests_total HTTP requests by route and status class.\n"
             "# TYPE rbee_worker_http_requests_total counter\n");
        for (int i = 0; i < _WORKER_ROUTE_MAX; i++)
                for (int c = 1; c <= 5; c++) {
                        uint64_t v = atomic_load(&m->requests[i][c]);
                        if (v)
                                EMIT("rbee_worker_http_requests_total{route=\"%s\",code=\"%dxx\"} %llu\n",
                                     route_names[i], c, (unsigned long long) v);
                }
        EMIT("# HELP rbee_worker_rejected_total Requests refused because the queue was full.\n"
             "# TYPE rbee_worker_rejected_total counter\n"
             "rbee_worker_rejected_total %llu\n", (unsigned long long) atomic_load(&m->rejected_queue_full));

        EMIT("# HELP rbee_worker_jobs_total Inference jobs by outcome.\n# TYPE rbee_worker_jobs_total counter\n");
        for (int i = 0; i < _WORKER_OUTCOME_MAX; i++)
                EMIT("rbee_worker_jobs_total{outcome=\"%s\"} %llu\n", outcome_names[i],
                     (unsigned long long) snap.jobs[i]);

        EMIT("# HELP rbee_worker_prompt_tokens_total Prompt tokens processed (cached ones included).\n"
             "# TYPE rbee_worker_prompt_tokens_total counter\nrbee_worker_prompt_tokens_total %llu\n",
             (unsigned long long) snap.prompt_tokens);
        EMIT("# HELP rbee_worker_cached_tokens_total Prompt tokens reused from the KV cache.\n"
             "# TYPE rbee_worker_cached_tokens_total counter\nrbee_worker_cached_tokens_total %llu\n",
             (unsigned long long) snap.cached_tokens);
        EMIT("# HELP rbee_worker_generated_tokens_total Tokens generated.\n"
             "# TYPE rbee_worker_generated_tokens_total counter\nrbee_worker_generated_tokens_total %llu\n",
             (unsigned long long) snap.generated_tokens);
        EMIT("# HELP rbee_worker_prompt_seconds_total Time spent processing prompts.\n"
             "# TYPE rbee_worker_prompt_seconds_total counter\nrbee_worker_prompt_seconds_total %.6f\n",
             snap.prompt_seconds);
        EMIT("# HELP rbee_worker_generation_seconds_total Time spent generating tokens.\n"
             "# TYPE rbee_worker_generation_seconds_total counter\nrbee_worker_generation_seconds_total %.6f\n",
             snap.generation_seconds);
        EMIT("# HELP rbee_worker_queue_seconds_total Time jobs spent waiting in the queue.\n"
             "# TYPE rbee_worker_queue_seconds_total counter\nrbee_worker_queue_seconds_total %.6f\n",
             snap.queue_seconds);
        EMIT("# HELP rbee_worker_tokens_per_second Generation speed of the last job.\n"
             "# TYPE rbee_worker_tokens_per_second gauge\nrbee_worker_tokens_per_second %.3f\n",
             snap.last_tokens_per_second);
        EMIT("# HELP rbee_worker_queue_depth Jobs waiting for the model.\n"
             "# TYPE rbee_worker_queue_depth gauge\nrbee_worker_queue_depth %u\n", g->queue_depth);
        EMIT("# HELP rbee_worker_queue_capacity Jobs that may wait before requests are refused.\n"
             "# TYPE rbee_worker_queue_capacity gauge\nrbee_worker_queue_capacity %u\n", g->queue_capacity);
        EMIT("# HELP rbee_worker_busy Whether a job is running.\n"
             "# TYPE rbee_worker_busy gauge\nrbee_worker_busy %u\n", g->busy);
        EMIT("# HELP rbee_worker_running Jobs being generated (batched together).\n"
             "# TYPE rbee_worker_running gauge\nrbee_worker_running %u\n", g->running);
        EMIT("# HELP rbee_worker_slots Jobs that may be generated at once.\n"
             "# TYPE rbee_worker_slots gauge\nrbee_worker_slots %u\n", g->slots);
        EMIT("# HELP rbee_worker_ready Whether the model is loaded and serving.\n"
             "# TYPE rbee_worker_ready gauge\nrbee_worker_ready %u\n", g->ready);
        EMIT("# HELP rbee_worker_context_size Context size in tokens.\n"
             "# TYPE rbee_worker_context_size gauge\nrbee_worker_context_size %u\n", g->n_ctx);
        EMIT("# HELP rbee_worker_model_load_seconds Time it took to load the model.\n"
             "# TYPE rbee_worker_model_load_seconds gauge\nrbee_worker_model_load_seconds %.6f\n",
             snap.load_seconds);
#undef EMIT
        return r;
}
