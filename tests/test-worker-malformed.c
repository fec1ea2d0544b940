/* SPDX-License-Identifier: MIT */
/* Malformed requests against a real rbee-workerd: every case gets its 4xx
 * and error code, and the worker is still healthy (and, in a sanitizer
 * build, exits cleanly) after all of them. The model is written by
 * rbee-mkmodel, so this suite needs no shared data. */

#include "worker/wtest.h"

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })

struct bad_case {
        const char *name;
        const char *method;
        const char *path;
        const char *headers;            /* NULL: Content-Type: application/json when there is a body */
        const char *body;               /* NULL: no body */
        size_t len;                     /* 0: strlen(body) */
        int status;
        const char *code;               /* expected error.code, or NULL */
};

#define MSG(x) "{\"messages\":" x "}"

static const struct bad_case cases[] = {
        { "no body", "POST", "/v1/inference", WT_JSON_HEADERS, "", 0, 400, "invalid_json" },
        { "truncated JSON", "POST", "/v1/inference", NULL, "{\"prompt\":", 0, 400, "invalid_json" },
        { "not JSON", "POST", "/v1/inference", NULL, "prompt=hello", 0, 400, "invalid_json" },
        { "single quotes", "POST", "/v1/inference", NULL, "{'prompt':'x'}", 0, 400, "invalid_json" },
        { "trailing comma", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",}", 0, 400, "invalid_json" },
        { "trailing garbage", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\"} {}", 0, 400, "invalid_json" },
        { "array body", "POST", "/v1/inference", NULL, "[1,2,3]", 0, 400, "invalid_request" },
        { "string body", "POST", "/v1/inference", NULL, "\"hello\"", 0, 400, "invalid_request" },
        { "number body", "POST", "/v1/inference", NULL, "42", 0, 400, "invalid_request" },
        { "literal body", "POST", "/v1/inference", NULL, "null", 0, 400, "invalid_request" },
        { "empty object", "POST", "/v1/inference", NULL, "{}", 0, 400, "invalid_request" },
        { "null prompt", "POST", "/v1/inference", NULL, "{\"prompt\":null}", 0, 400, "invalid_request" },
        { "numeric prompt", "POST", "/v1/inference", NULL, "{\"prompt\":5}", 0, 400, "invalid_request" },
        { "prompt and messages", "POST", "/v1/inference", NULL,
          "{\"prompt\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"y\"}]}", 0, 400, "invalid_request" },
        { "negative max_tokens", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"max_tokens\":-5}", 0, 400, "invalid_request" },
        { "zero max_tokens", "POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"max_tokens\":0}", 0, 400, "invalid_request" },
        { "huge max_tokens", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"max_tokens\":99999999999999999999}", 0, 400, "invalid_request" },
        { "max_tokens over context", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"max_tokens\":100000}", 0, 400, "invalid_request" },
        { "float max_tokens", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"max_tokens\":1e30}", 0, 400, "invalid_request" },
        { "string max_tokens", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"max_tokens\":\"10\"}", 0, 400, "invalid_request" },
        { "negative temperature", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"temperature\":-1}", 0, 400, "invalid_request" },
        { "string temperature", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", 0, 400, "invalid_request" },
        { "top_p above 1", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"top_p\":1.5}", 0, 400, "invalid_request" },
        { "negative top_k", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"top_k\":-1}", 0, 400, "invalid_request" },
        { "negative seed", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"seed\":-1}", 0, 400, "invalid_request" },
        { "zero repeat_penalty", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"repeat_penalty\":0}", 0, 400, "invalid_request" },
        { "string stream", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"stream\":\"yes\"}", 0, 400, "invalid_request" },
        { "numeric stop", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"stop\":5}", 0, 400, "invalid_request" },
        { "mixed stop", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"stop\":[\"a\",3]}", 0, 400, "invalid_request" },
        { "empty stop", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"stop\":[\"\"]}", 0, 400, "invalid_request" },
        { "too many stops", "POST", "/v1/inference", NULL,
          "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]}",
          0, 400, "invalid_request" },
        { "bad job id", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"job_id\":\"no spaces!\"}", 0, 400, "invalid_request" },
        { "empty job id", "POST", "/v1/inference", NULL, "{\"prompt\":\"x\",\"job_id\":\"\"}", 0, 400, "invalid_request" },
        { "empty messages", "POST", "/v1/chat/completions", NULL, MSG("[]"), 0, 400, "invalid_request" },
        { "string messages", "POST", "/v1/chat/completions", NULL, MSG("\"hi\""), 0, 400, "invalid_request" },
        { "message not an object", "POST", "/v1/chat/completions", NULL, MSG("[5]"), 0, 400, "invalid_request" },
        { "unknown role", "POST", "/v1/chat/completions", NULL, MSG("[{\"role\":\"wizard\",\"content\":\"x\"}]"), 0, 400, "invalid_request" },
        { "missing content", "POST", "/v1/chat/completions", NULL, MSG("[{\"role\":\"user\"}]"), 0, 400, "invalid_request" },
        { "numeric content", "POST", "/v1/chat/completions", NULL, MSG("[{\"role\":\"user\",\"content\":5}]"), 0, 400, "invalid_request" },
        { "image content", "POST", "/v1/chat/completions", NULL,
          MSG("[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x\"}}]}]"), 0, 400,
          "invalid_request" },
        { "chat without messages", "POST", "/v1/chat/completions", NULL, "{\"prompt\":\"x\"}", 0, 400, "invalid_request" },
        { "n above 1", "POST", "/v1/chat/completions", NULL,
          "{\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 0, 400, "invalid_request" },
        { "logprobs", "POST", "/v1/chat/completions", NULL,
          "{\"logprobs\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 0, 400, "invalid_request" },
        { "tools", "POST", "/v1/chat/completions", NULL,
          "{\"tools\":[{\"type\":\"function\"}],\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 0, 400, "invalid_request" },
        { "bad stream_options", "POST", "/v1/chat/completions", NULL,
          "{\"stream_options\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 0, 400, "invalid_request" },
        { "empty prompt array", "POST", "/v1/completions", NULL, "{\"prompt\":[]}", 0, 400, "invalid_request" },
        { "negative token id", "POST", "/v1/completions", NULL, "{\"prompt\":[1,-2]}", 0, 400, "invalid_request" },
        { "token id beyond vocab", "POST", "/v1/completions", NULL, "{\"prompt\":[1,99999]}", 0, 400, "invalid_request" },
        { "two prompts", "POST", "/v1/completions", NULL, "{\"prompt\":[\"a\",\"b\"]}", 0, 400, "invalid_request" },
        { "echo", "POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"echo\":true}", 0, 400, "invalid_request" },
        { "invalid UTF-8", "POST", "/v1/inference", NULL, "{\"prompt\":\"\xff\xfe\"}", 0, 400, "invalid_json" },
        { "NUL byte in body", "POST", "/v1/inference", NULL, "{\"prompt\":\"a\0b\"}", 16, 400, "invalid_json" },
        { "escaped NUL in prompt", "POST", "/v1/inference", NULL, "{\"prompt\":\"a\\u0000b\"}", 0, 400, "invalid_request" },
        { "form content type", "POST", "/v1/inference", "Content-Type: application/x-www-form-urlencoded\r\n",
          "prompt=x", 0, 415, "unsupported_media_type" },
        { "unknown route", "GET", "/v1/nothing", NULL, NULL, 0, 404, "not_found" },
        { "path traversal", "GET", "/../../etc/passwd", NULL, NULL, 0, 404, "not_found" },
        { "PUT on inference", "PUT", "/v1/inference", NULL, "{}", 0, 405, "method_not_allowed" },
        { "GET on inference", "GET", "/v1/inference", NULL, NULL, 0, 405, "method_not_allowed" },
        { "POST on health", "POST", "/v1/health", NULL, "{}", 0, 405, "method_not_allowed" },
        { "DELETE without id", "DELETE", "/v1/inference/", NULL, NULL, 0, 404, "not_found" },
        { "DELETE nested path", "DELETE", "/v1/inference/a/b", NULL, NULL, 0, 404, "not_found" },
        { "DELETE bad id", "DELETE", "/v1/inference/bad%20id", NULL, NULL, 0, 400, "invalid_request" },
        { "DELETE unknown id", "DELETE", "/v1/inference/unknown-job", NULL, NULL, 0, 404, "job_not_found" },
        { "cancel without body", "POST", "/v1/cancel", WT_JSON_HEADERS, "", 0, 400, "invalid_json" },
        { "cancel numeric id", "POST", "/v1/cancel", NULL, "{\"job_id\":5}", 0, 400, "invalid_request" },
        { "declared body too large", "POST", "/v1/inference", WT_JSON_HEADERS "Content-Length: 999999999\r\n", NULL, 0,
          413, "request_too_large" },
};

static void run_case(const struct wt_worker *w, const struct bad_case *c) {
        struct wt_response r;
        size_t len = c->body ? (c->len ? c->len : strlen(c->body)) : 0;

        wt_call_raw(w, c->method, c->path, c->headers ? c->headers : (c->body ? WT_JSON_HEADERS : NULL), c->body, len, &r);
        if (r.status != c->status)
                FAIL("case '%s': expected HTTP %d, got %d: %s", c->name, c->status, r.status, r.body);
        if (c->code) {
                const char *code = wt_jstr(r.json, "error.code");
                if (!code || strcmp(code, c->code) != 0)
                        FAIL("case '%s': expected error code %s: %s", c->name, c->code, r.body);
                if (!wt_jstr(r.json, "error.message"))
                        FAIL("case '%s': no error message: %s", c->name, r.body);
        }
        wt_response_done(&r);
}

/* Send raw bytes; the worker must answer with a 4xx or close the connection. */
static void raw_exchange(const struct wt_worker *w, const char *what, const void *data, size_t len) {
        struct wt_http h;
        int fd = wt_connect(w);

        wt_send_all(fd, data, len);
        shutdown(fd, SHUT_WR);
        if (wt_http_begin(&h, fd, 10000 * wt_slow()) == 0) {
                if (h.status < 400 || h.status > 499)
                        FAIL("%s: expected a 4xx, got %d", what, h.status);
                free(wt_http_body(&h));
        }
        wt_http_done(&h);
}

static void check_alive(const struct wt_worker *w) {
        struct wt_response r;

        wt_call(w, "GET", "/v1/health", NULL, &r);
        ASSERT_STATUS(r, 200);
        wt_response_done(&r);
        wt_call(w, "POST", "/v1/inference", "{\"prompt\":\"hello\",\"max_tokens\":3}", &r);
        ASSERT_STATUS(r, 200);
        ASSERT_EQ(wt_jint(r.json, "tokens_out"), 3);
        wt_response_done(&r);
}

TEST(malformed_requests) {
        const char *model = wt_tiny_model("--chat-template zephyr");
        struct wt_worker w;

        ASSERT_TRUE(ELEMENTSOF(cases) >= 30);
        wt_start(&w, model, ARGS("--threads", "1", "--max-body", "65536"), NULL);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                run_case(&w, &cases[i]);
        check_alive(&w);
        wt_stop_clean(&w);
}

TEST(oversized_and_garbage) {
        const char *model = wt_tiny_model(NULL);
        struct wt_worker w;
        struct wt_response r;
        char *big;

        wt_start(&w, model, ARGS("--threads", "1", "--max-body", "65536", "--ctx-size", "256"), NULL);

        /* A body over --max-body, sent in chunks without a length. */
        size_t n = 200 * 1024;
        big = malloc(n + 64);
        memset(big, 'a', n);
        int fd = wt_connect(&w);
        const char *head = "POST /v1/inference HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n";
        wt_send_all(fd, head, strlen(head));
        for (size_t off = 0; off < n; off += 16384) {
                size_t k = MIN((size_t) 16384, n - off);
                char sz[32];
                snprintf(sz, sizeof(sz), "%zx\r\n", k);
                wt_send_all(fd, sz, strlen(sz));
                wt_send_all(fd, big + off, k);
                wt_send_all(fd, "\r\n", 2);
        }
        wt_send_all(fd, "0\r\n\r\n", 5);
        struct wt_http h;
        ASSERT_EQ(wt_http_begin(&h, fd, 10000 * wt_slow()), 0);
        ASSERT_EQ(h.status, 413);
        free(wt_http_body(&h));
        wt_http_done(&h);

        /* A prompt of text longer than the context. */
        size_t pl = 20000;
        char *body = malloc(pl + 64);
        int k = snprintf(body, pl + 64, "{\"prompt\":\"");
        for (size_t i = 0; i < pl; i += 5)
                memcpy(body + k + i, "word ", 5);
        snprintf(body + k + pl, 64, "\"}");
        wt_call(&w, "POST", "/v1/inference", body, &r);
        ASSERT_STATUS(r, 400);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "context_length_exceeded");
        wt_response_done(&r);
        free(body);

        /* JSON nested far too deep. */
        body = malloc(4096);
        k = snprintf(body, 4096, "{\"prompt\":\"x\",\"extra\":");
        for (int i = 0; i < 1000; i++)
                body[k++] = '[';
        for (int i = 0; i < 1000; i++)
                body[k++] = ']';
        snprintf(body + k, 4096 - (size_t) k, "}");
        wt_call(&w, "POST", "/v1/inference", body, &r);
        ASSERT_STATUS(r, 400);
        ASSERT_STREQ(wt_jstr(r.json, "error.code"), "invalid_json");
        wt_response_done(&r);
        free(body);

        /* Too many messages. */
        size_t cap = 64 * 1024, len = 0;
        body = malloc(cap);
        len += (size_t) snprintf(body, cap, "{\"messages\":[");
        for (int i = 0; i < 1100; i++)
                len += (size_t) snprintf(body + len, cap - len, "%s{\"role\":\"user\",\"content\":\"x\"}", i ? "," : "");
        snprintf(body + len, cap - len, "]}");
        wt_call(&w, "POST", "/v1/chat/completions", body, &r);
        ASSERT_STATUS(r, 400);
        wt_response_done(&r);
        free(body);

        /* Not HTTP at all, a broken request line, a header past any sane size. */
#define RAW(what, lit) raw_exchange(&w, what, lit, sizeof(lit) - 1)
        RAW("garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n");
        RAW("bad request line", "HELLO WORLD\r\n\r\n");
        RAW("bad content length", "POST /v1/inference HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n");
#undef RAW
        memset(big, 'h', 100000);
        memcpy(big, "GET /v1/health HTTP/1.1\r\nX-Big: ", 32);
        memcpy(big + 99996, "\r\n\r\n", 4);
        raw_exchange(&w, "huge header", big, 100000);
        free(big);

        /* A client that sends half a request and vanishes. */
        fd = wt_connect(&w);
        static const char half[] = "POST /v1/inference HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro";
        wt_send_all(fd, half, sizeof(half) - 1);
        close(fd);

        check_alive(&w);
        wt_stop_clean(&w);
}
