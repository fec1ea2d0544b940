/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "json-util.h"
#include "request.h"
#include "strutil.h"

#define MAX_JSON_DEPTH 32

void worker_request_init(struct worker_request *r, enum worker_api api) {
        *r = (struct worker_request) { .api = api, .max_tokens = -1 };
        rbee_sampler_default_params(&r->sampling);
}

void worker_request_done(struct worker_request *r) {
        free(r->model);
        free(r->prompt);
        for (size_t i = 0; i < r->n_messages; i++) {
                free((char *) r->messages[i].role);
                free((char *) r->messages[i].content);
        }
        free(r->messages);
        free(r->prompt_tokens);
        for (size_t i = 0; i < r->n_stop; i++)
                free(r->stop[i]);
        free(r->stop);
        *r = (struct worker_request) { .api = r->api };
}

bool worker_job_id_is_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > WORKER_JOB_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == ':' || c == '-'))
                        return false;
        }
        return true;
}

static int fail(char *err, size_t errlen, int r, const char *fmt, ...) _printf_(4, 5);
static int fail(char *err, size_t errlen, int r, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        return r;
}

/* One message for every typed getter's failure. */
static int field_error(int r, const char *key, const char *what, char *err, size_t errlen) {
        if (r == -ERANGE)
                return fail(err, errlen, -EINVAL, "'%s' is out of range: it must be %s", key, what);
        return fail(err, errlen, -EINVAL, "'%s' must be %s", key, what);
}

static int get_float(const struct json_object *o, const char *key, double min, double max, float *ret,
                     char *err, size_t errlen) {
        double d;
        int r = json_get_double(o, key, min, max, &d);

        if (r < 0) {
                char what[96];
                snprintf(what, sizeof(what), "a number between %g and %g", min, max);
                return field_error(r, key, what, err, errlen);
        }
        if (r > 0)
                *ret = (float) d;
        return 0;
}

static int parse_stop(const struct json_object *o, struct worker_request *req, char *err, size_t errlen) {
        struct json_object *v = NULL;
        size_t n;

        if (!json_object_object_get_ex(o, "stop", &v) || !v)
                return 0;
        if (json_object_is_type(v, json_type_string)) {
                n = 1;
        } else if (json_object_is_type(v, json_type_array)) {
                n = json_object_array_length(v);
                if (n > WORKER_MAX_STOP)
                        return fail(err, errlen, -EINVAL, "'stop' has %zu entries; at most %d are allowed",
                                    n, WORKER_MAX_STOP);
        } else
                return fail(err, errlen, -EINVAL, "'stop' must be a string or an array of strings");
        if (n == 0)
                return 0;

        req->stop = calloc(n, sizeof(char *));
        if (!req->stop)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                struct json_object *s = json_object_is_type(v, json_type_array) ? json_object_array_get_idx(v, i) : v;
                size_t len;

                if (!s || !json_object_is_type(s, json_type_string))
                        return fail(err, errlen, -EINVAL, "'stop' must be a string or an array of strings");
                len = (size_t) json_object_get_string_len(s);
                if (len == 0 || len > WORKER_MAX_STOP_LEN)
                        return fail(err, errlen, -EINVAL, "stop strings must be 1 to %d bytes long",
                                    WORKER_MAX_STOP_LEN);
                req->stop[i] = strndup(json_object_get_string(s), len);
                if (!req->stop[i])
                        return -ENOMEM;
                req->n_stop = i + 1;    /* before any error: worker_request_done() frees it */
                if (strlen(req->stop[i]) != len)
                        return fail(err, errlen, -EINVAL, "stop strings may not contain NUL");
        }
        return 0;
}

/* OpenAI content is a string or an array of parts; only text parts are supported. */
static int message_content(struct json_object *c, size_t idx, size_t max, char **ret, char *err, size_t errlen) {
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(max);
        int r;

        if (!c)
                return fail(err, errlen, -EINVAL, "messages[%zu].content is missing", idx);
        if (json_object_is_type(c, json_type_string)) {
                r = strbuf_append(&b, json_object_get_string(c), (size_t) json_object_get_string_len(c));
                if (r < 0)
                        return r == -E2BIG ? fail(err, errlen, -E2BIG, "the prompt is longer than %zu bytes", max) : r;
        } else if (json_object_is_type(c, json_type_array)) {
                size_t n = json_object_array_length(c);
                for (size_t i = 0; i < n; i++) {
                        struct json_object *part = json_object_array_get_idx(c, i);
                        const char *type = NULL, *text = NULL;
                        size_t tl = 0;

                        if (!part || !json_object_is_type(part, json_type_object))
                                return fail(err, errlen, -EINVAL, "messages[%zu].content[%zu] must be an object", idx, i);
                        if (json_get_string(part, "type", &type, NULL) <= 0)
                                return fail(err, errlen, -EINVAL, "messages[%zu].content[%zu].type must be a string", idx, i);
                        if (!streq(type, "text"))
                                return fail(err, errlen, -EINVAL,
                                            "messages[%zu].content[%zu] has type '%s': only text is supported", idx, i, type);
                        if (json_get_string(part, "text", &text, &tl) <= 0)
                                return fail(err, errlen, -EINVAL, "messages[%zu].content[%zu].text must be a string", idx, i);
                        r = strbuf_append(&b, text, tl);
                        if (r < 0)
                                return r == -E2BIG ? fail(err, errlen, -E2BIG, "the prompt is longer than %zu bytes", max) : r;
                }
        } else
                return fail(err, errlen, -EINVAL, "messages[%zu].content must be a string or an array of text parts", idx);

        if (b.data && strlen(b.data) != b.len)
                return fail(err, errlen, -EINVAL, "messages[%zu].content contains a NUL character", idx);
        return strbuf_steal(&b, ret, NULL);
}

static int parse_messages(struct json_object *arr, struct worker_request *req, const struct worker_limits *lim,
                          char *err, size_t errlen) {
        size_t n = json_object_array_length(arr), total = 0;
        int r;

        if (n == 0)
                return fail(err, errlen, -EINVAL, "'messages' must not be empty");
        if (n > WORKER_MAX_MESSAGES)
                return fail(err, errlen, -E2BIG, "'messages' has %zu entries; at most %d are allowed", n,
                            WORKER_MAX_MESSAGES);
        req->messages = calloc(n, sizeof(struct rbee_chat_message));
        if (!req->messages)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                struct json_object *m = json_object_array_get_idx(arr, i), *c = NULL;
                const char *role = NULL;
                char *content = NULL;

                if (!m || !json_object_is_type(m, json_type_object))
                        return fail(err, errlen, -EINVAL, "messages[%zu] must be an object", i);
                r = json_get_string(m, "role", &role, NULL);
                if (r <= 0)
                        return fail(err, errlen, -EINVAL, "messages[%zu].role must be a string", i);
                /* OpenAI's newer "developer" role is the system prompt under another name. */
                if (streq(role, "developer"))
                        role = "system";
                if (!streq(role, "system") && !streq(role, "user") && !streq(role, "assistant"))
                        return fail(err, errlen, -EINVAL,
                                    "messages[%zu].role '%.32s' is not supported (system, user, assistant)", i, role);
                (void) json_object_object_get_ex(m, "content", &c);
                r = message_content(c, i, lim->max_prompt_bytes - total, &content, err, errlen);
                if (r < 0)
                        return r;
                total += strlen(content);
                req->messages[i].content = content;
                req->messages[i].role = strdup(role);
                req->n_messages = i + 1;
                if (!req->messages[i].role)
                        return -ENOMEM;
        }
        return 0;
}

static int parse_token_array(struct json_object *arr, struct worker_request *req, const struct worker_limits *lim,
                             char *err, size_t errlen) {
        size_t n = json_object_array_length(arr);

        if (n == 0)
                return fail(err, errlen, -EINVAL, "'prompt' must not be empty");
        if (n > lim->n_ctx)
                return fail(err, errlen, -E2BIG, "the prompt has %zu tokens; the context holds %u", n, lim->n_ctx);
        req->prompt_tokens = calloc(n, sizeof(int32_t));
        if (!req->prompt_tokens)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                struct json_object *t = json_object_array_get_idx(arr, i);
                int64_t v;

                if (!t || !json_object_is_type(t, json_type_int))
                        return fail(err, errlen, -EINVAL, "prompt token %zu is not an integer", i);
                v = json_object_get_int64(t);
                if (v < 0 || v >= lim->n_vocab)
                        return fail(err, errlen, -EINVAL, "prompt token %zu (%lld) is not in the vocabulary (0-%d)",
                                    i, (long long) v, lim->n_vocab - 1);
                req->prompt_tokens[i] = (int32_t) v;
        }
        req->n_prompt_tokens = n;
        return 0;
}

static int parse_prompt_value(struct json_object *p, struct worker_request *req, const struct worker_limits *lim,
                              char *err, size_t errlen) {
        size_t len;

        if (json_object_is_type(p, json_type_array)) {
                size_t n = json_object_array_length(p);
                struct json_object *first = n > 0 ? json_object_array_get_idx(p, 0) : NULL;

                if (n == 0)
                        return fail(err, errlen, -EINVAL, "'prompt' must not be empty");
                /* A batch of prompts would need n choices; only one is served. */
                if (first && (json_object_is_type(first, json_type_string) ||
                              json_object_is_type(first, json_type_array))) {
                        if (n != 1)
                                return fail(err, errlen, -EINVAL, "only one prompt per request is supported");
                        p = first;
                        if (json_object_is_type(p, json_type_array))
                                return parse_token_array(p, req, lim, err, errlen);
                } else
                        return parse_token_array(p, req, lim, err, errlen);
        }
        if (!json_object_is_type(p, json_type_string))
                return fail(err, errlen, -EINVAL, "'prompt' must be a string, an array of token ids, or an array of one string");
        len = (size_t) json_object_get_string_len(p);
        if (len > lim->max_prompt_bytes)
                return fail(err, errlen, -E2BIG, "the prompt is longer than %zu bytes", lim->max_prompt_bytes);
        req->prompt = strndup(json_object_get_string(p), len);
        if (!req->prompt)
                return -ENOMEM;
        if (strlen(req->prompt) != len)
                return fail(err, errlen, -EINVAL, "the prompt contains a NUL character");
        return 0;
}

/* Fields that would change the answer's shape and that we cannot honour: refuse
 * rather than ignore, so a client does not silently get something else. */
static int check_unsupported(const struct json_object *o, enum worker_api api, char *err, size_t errlen) {
        struct json_object *v = NULL;
        int64_t n;
        bool b;
        int r;

        r = json_get_int64(o, "n", 1, 1, &n);
        if (r < 0)
                return fail(err, errlen, -EINVAL, "'n' must be 1: one choice per request is supported");
        r = json_get_int64(o, "best_of", 1, 1, &n);
        if (r < 0)
                return fail(err, errlen, -EINVAL, "'best_of' must be 1");
        if (json_object_object_get_ex(o, "logprobs", &v) && v &&
            !(json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v)))
                return fail(err, errlen, -EINVAL, "'logprobs' is not supported");
        if (json_object_object_get_ex(o, "tools", &v) && v &&
            !(json_object_is_type(v, json_type_array) && json_object_array_length(v) == 0))
                return fail(err, errlen, -EINVAL, "'tools' (function calling) is not supported");
        if (json_object_object_get_ex(o, "suffix", &v) && v)
                return fail(err, errlen, -EINVAL, "'suffix' is not supported");
        r = json_get_bool(o, "echo", &b);
        if (r < 0)
                return field_error(r, "echo", "a boolean", err, errlen);
        if (r > 0 && b)
                return fail(err, errlen, -EINVAL, "'echo' is not supported");
        (void) api;
        return 0;
}

int worker_request_parse(enum worker_api api, const char *body, size_t len,
                         const struct worker_limits *lim, struct worker_request *ret,
                         char *err, size_t errlen) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct worker_request req;
        struct json_object *v = NULL, *msgs = NULL, *prompt = NULL, *so = NULL;
        const char *s;
        size_t sl;
        int64_t i64;
        uint64_t u64;
        int r;

        worker_request_init(&req, api);

        if (len == 0)
                return fail(err, errlen, -EBADMSG, "the request has no body: a JSON object is expected");
        r = json_parse_strict(body, len, MAX_JSON_DEPTH, &o, err, errlen);
        if (r < 0)
                return r == -E2BIG ? -EBADMSG : r;
        if (!json_object_is_type(o, json_type_object))
                return fail(err, errlen, -EINVAL, "the request body must be a JSON object");

        r = json_get_string(o, "job_id", &s, &sl);
        /* A "\u0000" inside would hide the rest from the check, and sl bytes are copied. */
        if (r < 0 || (r > 0 && (strlen(s) != sl || !worker_job_id_is_valid(s)))) {
                r = fail(err, errlen, -EINVAL, "'job_id' must be 1-%d characters of [A-Za-z0-9._:-]", WORKER_JOB_ID_MAX);
                goto finish;
        }
        if (r > 0)
                memcpy(req.job_id, s, sl + 1);

        r = json_get_string(o, "model", &s, &sl);
        if (r < 0) {
                r = field_error(r, "model", "a string", err, errlen);
                goto finish;
        }
        if (r > 0 && !(req.model = strndup(s, sl))) {
                r = -ENOMEM;
                goto finish;
        }

        r = json_get_bool(o, "stream", &req.stream);
        if (r < 0) {
                r = field_error(r, "stream", "a boolean", err, errlen);
                goto finish;
        }
        r = json_get_typed(o, "stream_options", json_type_object, &so);
        if (r < 0) {
                r = field_error(r, "stream_options", "an object", err, errlen);
                goto finish;
        }
        if (r > 0) {
                r = json_get_bool(so, "include_usage", &req.include_usage);
                if (r < 0) {
                        r = field_error(r, "stream_options.include_usage", "a boolean", err, errlen);
                        goto finish;
                }
        }
        r = json_get_bool(o, "ignore_eos", &req.ignore_eos);
        if (r < 0) {
                r = field_error(r, "ignore_eos", "a boolean", err, errlen);
                goto finish;
        }

        /* max_completion_tokens is the newer name in the chat API and wins. */
        static const char *const max_keys[] = { "max_tokens", "max_completion_tokens" };
        for (size_t k = 0; k < ELEMENTSOF(max_keys); k++) {
                char what[64];

                r = json_get_int64(o, max_keys[k], api == WORKER_API_NATIVE ? -1 : 1, lim->n_ctx, &i64);
                if (r < 0) {
                        snprintf(what, sizeof(what), "an integer from %d to the context size (%u)",
                                 api == WORKER_API_NATIVE ? -1 : 1, lim->n_ctx);
                        r = field_error(r, max_keys[k], what, err, errlen);
                        goto finish;
                }
                if (r > 0 && i64 == 0) {
                        r = fail(err, errlen, -EINVAL, "'%s' must be at least 1", max_keys[k]);
                        goto finish;
                }
                if (r > 0)
                        req.max_tokens = (int32_t) i64;
        }

        if ((r = get_float(o, "temperature", 0, 10, &req.sampling.temperature, err, errlen)) < 0 ||
            (r = get_float(o, "top_p", 0, 1, &req.sampling.top_p, err, errlen)) < 0 ||
            (r = get_float(o, "min_p", 0, 1, &req.sampling.min_p, err, errlen)) < 0 ||
            (r = get_float(o, "repeat_penalty", 0.01, 10, &req.sampling.repeat_penalty, err, errlen)) < 0 ||
            (r = get_float(o, "presence_penalty", -2, 2, &req.sampling.presence_penalty, err, errlen)) < 0 ||
            (r = get_float(o, "frequency_penalty", -2, 2, &req.sampling.frequency_penalty, err, errlen)) < 0)
                goto finish;
        r = json_get_int64(o, "top_k", 0, 1 << 20, &i64);
        if (r < 0) {
                r = field_error(r, "top_k", "an integer from 0 to 1048576", err, errlen);
                goto finish;
        }
        if (r > 0)
                req.sampling.top_k = (int32_t) i64;
        r = json_get_int64(o, "repeat_last_n", -1, RBEE_SAMPLER_MAX_LAST_N, &i64);
        if (r < 0) {
                r = field_error(r, "repeat_last_n", "an integer from -1 to 4194304", err, errlen);
                goto finish;
        }
        if (r > 0)
                req.sampling.repeat_last_n = (int32_t) i64;
        r = json_get_uint64(o, "seed", &u64);
        if (r < 0) {
                r = field_error(r, "seed", "a non-negative integer", err, errlen);
                goto finish;
        }
        if (r > 0)
                req.sampling.seed = u64;
        /* Without explicit sampling settings, the OpenAI APIs mean plain
         * temperature sampling: no top-k/min-p truncation unless asked. */
        if (api != WORKER_API_NATIVE) {
                if (!json_object_object_get_ex(o, "top_k", &v) || !v)
                        req.sampling.top_k = 0;
                if (!json_object_object_get_ex(o, "min_p", &v) || !v)
                        req.sampling.min_p = 0;
                if (!json_object_object_get_ex(o, "temperature", &v) || !v)
                        req.sampling.temperature = 1.0f;
                if (!json_object_object_get_ex(o, "top_p", &v) || !v)
                        req.sampling.top_p = 1.0f;
        }

        r = parse_stop(o, &req, err, errlen);
        if (r < 0)
                goto finish;
        r = check_unsupported(o, api, err, errlen);
        if (r < 0)
                goto finish;
        r = json_get_typed(o, "messages", json_type_array, &msgs);
        if (r < 0) {
                r = field_error(r, "messages", "an array of message objects", err, errlen);
                goto finish;
        }
        if (api == WORKER_API_COMPLETION)
                msgs = NULL;
        if (api != WORKER_API_CHAT)
                (void) json_object_object_get_ex(o, "prompt", &prompt);

        if (api == WORKER_API_CHAT && !msgs) {
                r = fail(err, errlen, -EINVAL, "'messages' is required");
                goto finish;
        }
        if (api == WORKER_API_COMPLETION && !prompt) {
                r = fail(err, errlen, -EINVAL, "'prompt' is required");
                goto finish;
        }
        if (api == WORKER_API_NATIVE) {
                if (!msgs && !prompt) {
                        r = fail(err, errlen, -EINVAL, "either 'prompt' or 'messages' is required");
                        goto finish;
                }
                if (msgs && prompt) {
                        r = fail(err, errlen, -EINVAL, "give either 'prompt' or 'messages', not both");
                        goto finish;
                }
        }
        if (msgs)
                r = parse_messages(msgs, &req, lim, err, errlen);
        else
                r = parse_prompt_value(prompt, &req, lim, err, errlen);
        if (r < 0)
                goto finish;

        *ret = req;
        return 0;

finish:
        worker_request_done(&req);
        return r;
}
