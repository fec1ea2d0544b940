/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "format.h"
#include "http-util.h"
#include "json-util.h"

#ifndef RBEE_VERSION
#define RBEE_VERSION "0"
#endif

const char *worker_finish_reason(enum rbee_stop_reason r) {
        switch (r) {
        case RBEE_STOP_LENGTH:
        case RBEE_STOP_CONTEXT:
                return "length";
        case RBEE_STOP_CANCELLED:
                return "cancelled";
        default:
                return "stop";
        }
}

static void add_str(struct json_object *o, const char *k, const char *v) {
        json_object_object_add(o, k, json_object_new_string(v));
}

static void add_int(struct json_object *o, const char *k, int64_t v) {
        json_object_object_add(o, k, json_object_new_int64(v));
}

static void add_ms(struct json_object *o, const char *k, double v) {
        char buf[64];

        /* Three decimals are plenty; json-c would print 17 digits. */
        snprintf(buf, sizeof(buf), "%.3f", v);
        json_object_object_add(o, k, json_object_new_double_s(v, buf));
}

static double tokens_per_second(const struct rbee_generate_result *r) {
        return r->gen_ms > 0 ? r->n_generated * 1000.0 / r->gen_ms : 0.0;
}

static int append_json(struct strbuf *out, const char *event, struct json_object *o) {
        _cleanup_(json_object_putp) struct json_object *obj = o;
        const char *s;
        size_t n;

        if (!obj)
                return -ENOMEM;
        s = json_to_string(obj, &n);
        if (!s)
                return -ENOMEM;
        return sse_append_event(out, event, s, n);
}

static const char *openai_prefix(const struct worker_job *j) {
        return j->req.api == WORKER_API_CHAT ? "chatcmpl-" : "cmpl-";
}

/* The envelope every OpenAI chunk and answer shares. */
static struct json_object *openai_object(const struct worker_job *j, const char *object) {
        struct json_object *o = json_object_new_object();
        char id[WORKER_JOB_ID_MAX + 16];

        if (!o)
                return NULL;
        snprintf(id, sizeof(id), "%s%s", openai_prefix(j), j->id);
        add_str(o, "id", id);
        add_str(o, "object", object);
        add_int(o, "created", j->created);
        add_str(o, "model", j->req.model ? j->req.model : j->model_name);
        add_str(o, "system_fingerprint", "rbee-" RBEE_VERSION);
        return o;
}

static struct json_object *openai_chunk(const struct worker_job *j, struct json_object *delta_or_text,
                                        const char *finish_reason) {
        bool chat = j->req.api == WORKER_API_CHAT;
        struct json_object *o = openai_object(j, chat ? "chat.completion.chunk" : "text_completion");
        struct json_object *choices = json_object_new_array(), *c = json_object_new_object();

        if (!o || !choices || !c) {
                json_object_put(o);
                json_object_put(choices);
                json_object_put(c);
                json_object_put(delta_or_text);
                return NULL;
        }
        add_int(c, "index", 0);
        json_object_object_add(c, chat ? "delta" : "text", delta_or_text);
        json_object_object_add(c, "logprobs", NULL);
        json_object_object_add(c, "finish_reason", json_new_string_or_null(finish_reason));
        json_object_array_add(choices, c);
        json_object_object_add(o, "choices", choices);
        return o;
}

static struct json_object *usage_object(const struct worker_job *j) {
        struct json_object *u = json_object_new_object();

        if (!u)
                return NULL;
        add_int(u, "prompt_tokens", j->result.n_prompt);
        add_int(u, "completion_tokens", j->result.n_generated);
        add_int(u, "total_tokens", (int64_t) j->result.n_prompt + j->result.n_generated);
        return u;
}

int worker_format_started(struct worker_job *j, struct strbuf *out) {
        struct json_object *o;

        switch (j->req.api) {
        case WORKER_API_NATIVE:
                if (!(o = json_object_new_object()))
                        return -ENOMEM;
                add_str(o, "job_id", j->id);
                add_str(o, "model", j->model_name);
                add_int(o, "prompt_tokens", (int64_t) j->n_tokens);
                add_ms(o, "queue_ms", j->queue_ms);
                return append_json(out, "started", o);
        case WORKER_API_CHAT: {
                struct json_object *d = json_object_new_object();
                if (!d)
                        return -ENOMEM;
                add_str(d, "role", "assistant");
                add_str(d, "content", "");
                j->sent_role = true;
                return append_json(out, NULL, openai_chunk(j, d, NULL));
        }
        default:
                return 0;
        }
}

int worker_format_token(struct worker_job *j, const char *text, size_t len, struct strbuf *out) {
        struct json_object *o, *d;

        switch (j->req.api) {
        case WORKER_API_NATIVE:
                if (!(o = json_object_new_object()))
                        return -ENOMEM;
                json_object_object_add(o, "text", json_new_string_n(text, len));
                add_int(o, "index", j->n_out > 0 ? (int64_t) j->n_out - 1 : 0);
                return append_json(out, "token", o);
        case WORKER_API_CHAT:
                if (!(d = json_object_new_object()))
                        return -ENOMEM;
                json_object_object_add(d, "content", json_new_string_n(text, len));
                return append_json(out, NULL, openai_chunk(j, d, NULL));
        default:
                return append_json(out, NULL, openai_chunk(j, json_new_string_n(text, len), NULL));
        }
}

static struct json_object *native_end_object(const struct worker_job *j) {
        struct json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        add_str(o, "job_id", j->id);
        add_str(o, "stop_reason", rbee_stop_reason_name(j->result.stop_reason));
        add_str(o, "finish_reason", worker_finish_reason(j->result.stop_reason));
        add_int(o, "tokens_in", j->result.n_prompt);
        add_int(o, "tokens_out", j->result.n_generated);
        add_int(o, "cached_tokens", j->result.n_cached);
        add_ms(o, "queue_ms", j->queue_ms);
        add_ms(o, "prompt_ms", j->result.prompt_ms);
        add_ms(o, "gen_ms", j->result.gen_ms);
        add_ms(o, "tokens_per_second", tokens_per_second(&j->result));
        return o;
}

int worker_format_end(struct worker_job *j, struct strbuf *out) {
        const char *fr = worker_finish_reason(j->result.stop_reason);
        int r;

        if (j->req.api == WORKER_API_NATIVE)
                return append_json(out, "end", native_end_object(j));

        if (j->req.api == WORKER_API_CHAT) {
                struct json_object *d = json_object_new_object();
                if (!d)
                        return -ENOMEM;
                r = append_json(out, NULL, openai_chunk(j, d, fr));
        } else
                r = append_json(out, NULL, openai_chunk(j, json_object_new_string(""), fr));
        if (r < 0)
                return r;
        if (j->req.include_usage) {
                struct json_object *o = openai_object(j, j->req.api == WORKER_API_CHAT ? "chat.completion.chunk"
                                                                                          : "text_completion");
                if (!o)
                        return -ENOMEM;
                json_object_object_add(o, "choices", json_object_new_array());
                json_object_object_add(o, "usage", usage_object(j));
                r = append_json(out, NULL, o);
                if (r < 0)
                        return r;
        }
        return strbuf_puts(out, "data: [DONE]\n\n");
}

int worker_format_error(struct worker_job *j, struct strbuf *out) {
        struct json_object *o;

        if (j->req.api == WORKER_API_NATIVE) {
                if (!(o = json_object_new_object()))
                        return -ENOMEM;
                add_str(o, "job_id", j->id);
                add_str(o, "code", j->error_code);
                add_str(o, "message", j->error_message);
                add_int(o, "status", j->error_status);
                add_int(o, "tokens_in", j->result.n_prompt);
                add_int(o, "tokens_out", j->result.n_generated);
                return append_json(out, "error", o);
        }
        /* OpenAI's clients raise an APIError for a data line holding "error". */
        return append_json(out, NULL, http_error_object(j->error_status, j->error_code, j->error_message));
}

struct json_object *worker_format_result(struct worker_job *j, unsigned *ret_status) {
        const char *text = j->text.data ? j->text.data : "";
        size_t len = j->text.len;
        struct json_object *o, *choices, *c;

        if (j->error_status) {
                *ret_status = j->error_status;
                o = http_error_object(j->error_status, j->error_code, j->error_message);
                if (o) {
                        struct json_object *e = NULL;
                        if (json_object_object_get_ex(o, "error", &e) && e)
                                add_str(e, "job_id", j->id);
                }
                return o;
        }
        *ret_status = 200;

        if (j->req.api == WORKER_API_NATIVE) {
                struct json_object *t = json_object_new_object();
                if (!(o = json_object_new_object()) || !t) {
                        json_object_put(o);
                        json_object_put(t);
                        return NULL;
                }
                add_str(o, "job_id", j->id);
                add_str(o, "model", j->model_name);
                json_object_object_add(o, "text", json_new_string_n(text, len));
                add_str(o, "stop_reason", rbee_stop_reason_name(j->result.stop_reason));
                add_str(o, "finish_reason", worker_finish_reason(j->result.stop_reason));
                add_int(o, "tokens_in", j->result.n_prompt);
                add_int(o, "tokens_out", j->result.n_generated);
                add_int(o, "cached_tokens", j->result.n_cached);
                add_ms(t, "queue_ms", j->queue_ms);
                add_ms(t, "prompt_ms", j->result.prompt_ms);
                add_ms(t, "gen_ms", j->result.gen_ms);
                add_ms(t, "tokens_per_second", tokens_per_second(&j->result));
                json_object_object_add(o, "timings", t);
                return o;
        }

        bool chat = j->req.api == WORKER_API_CHAT;
        o = openai_object(j, chat ? "chat.completion" : "text_completion");
        choices = json_object_new_array();
        c = json_object_new_object();
        if (!o || !choices || !c) {
                json_object_put(o);
                json_object_put(choices);
                json_object_put(c);
                return NULL;
        }
        add_int(c, "index", 0);
        if (chat) {
                struct json_object *m = json_object_new_object();
                if (m) {
                        add_str(m, "role", "assistant");
                        json_object_object_add(m, "content", json_new_string_n(text, len));
                }
                json_object_object_add(c, "message", m);
        } else
                json_object_object_add(c, "text", json_new_string_n(text, len));
        json_object_object_add(c, "logprobs", NULL);
        add_str(c, "finish_reason", worker_finish_reason(j->result.stop_reason));
        json_object_array_add(choices, c);
        json_object_object_add(o, "choices", choices);
        json_object_object_add(o, "usage", usage_object(j));
        return o;
}
