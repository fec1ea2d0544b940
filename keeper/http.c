/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "http.h"
#include "signals.h"
#include "strutil.h"

#ifndef RBEE_VERSION
#define RBEE_VERSION "0.0.0"
#endif

#define CONNECT_ATTEMPTS 4
#define BUSY_WAIT_MAX_S 60

struct keeper_http {
        CURLM *multi;                   /* keeps connections alive between requests */
        char *base;
        char *auth_header;
        bool verbose_retries;
        bool loopback;                  /* never through a proxy */
        bool in_transfer;               /* a request made from a callback gets its own multi */
};

struct transfer {
        CURL *easy;
        const struct keeper_http_stream *stream;
        struct keeper_sse sse;
        struct strbuf body;
        struct keeper_http_response *resp;
        bool decided;                   /* whether the body is an event stream is known */
        bool sse_mode;
        int cb_result;                  /* why a callback stopped the transfer */
};

static bool curl_ready;

void keeper_http_response_done(struct keeper_http_response *r) {
        free(r->body);
        *r = (struct keeper_http_response) { .retry_after = -1 };
}

int keeper_http_new(const char *base_url, const char *api_key, struct keeper_http **ret) {
        _cleanup_(keeper_http_freep) struct keeper_http *h = NULL;
        size_t n;

        if (!curl_ready) {
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return -EIO;
                curl_ready = true;
        }
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->base = strdup(base_url);
        if (!h->base)
                return -ENOMEM;
        n = strlen(h->base);
        while (n > 0 && h->base[n - 1] == '/')
                h->base[--n] = 0;
        if (api_key && asprintf(&h->auth_header, "Authorization: Bearer %s", api_key) < 0) {
                h->auth_header = NULL;
                return -ENOMEM;
        }
        h->multi = curl_multi_init();
        if (!h->multi)
                return -ENOMEM;
        h->verbose_retries = true;
        h->loopback = str_startswith(h->base, "http://127.") || str_startswith(h->base, "http://localhost") ||
                      str_startswith(h->base, "http://[::1]");
        *ret = TAKE_PTR(h);
        return 0;
}

struct keeper_http *keeper_http_free(struct keeper_http *h) {
        if (!h)
                return NULL;
        if (h->multi)
                curl_multi_cleanup(h->multi);
        if (h->auth_header) {
                /* The key should not linger in freed memory. */
                explicit_bzero(h->auth_header, strlen(h->auth_header));
                free(h->auth_header);
        }
        free(h->base);
        free(h);
        return NULL;
}

void keeper_http_set_verbose_retries(struct keeper_http *h, bool on) {
        h->verbose_retries = on;
}

const char *keeper_http_base_url(const struct keeper_http *h) {
        return h->base;
}

char *keeper_http_escape(const char *s) {
        char *e = curl_easy_escape(NULL, s, (int) strnlen(s, 4096)), *r;

        if (!e)
                return NULL;
        r = strdup(e);
        curl_free(e);
        return r;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *userdata) {
        struct transfer *t = userdata;
        size_t n = size * nmemb, k;
        const char *v;

        if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
                /* A new response (after 100 Continue): forget earlier headers. */
                t->resp->content_type[0] = 0;
                t->resp->retry_after = -1;
                return n;
        }
        if (n > 13 && strncasecmp(p, "content-type:", 13) == 0) {
                v = p + 13;
                k = n - 13;
                while (k > 0 && (*v == ' ' || *v == '\t')) {
                        v++;
                        k--;
                }
                while (k > 0 && isspace((unsigned char) v[k - 1]))
                        k--;
                k = MIN(k, sizeof(t->resp->content_type) - 1);
                memcpy(t->resp->content_type, v, k);
                t->resp->content_type[k] = 0;
        } else if (n > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
                char buf[32];
                int64_t s;

                v = p + 12;
                k = n - 12;
                while (k > 0 && (*v == ' ' || *v == '\t')) {
                        v++;
                        k--;
                }
                while (k > 0 && isspace((unsigned char) v[k - 1]))
                        k--;
                /* Only delay-seconds; an HTTP date from a proxy is not worth the parsing. */
                if (k > 0 && k < sizeof(buf)) {
                        memcpy(buf, v, k);
                        buf[k] = 0;
                        if (parse_int64(buf, 0, 86400, &s) == 0)
                                t->resp->retry_after = s;
                }
        }
        return n;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *userdata) {
        struct transfer *t = userdata;
        size_t n = size * nmemb;
        int r;

        if (!t->decided) {
                long status = 0;

                curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
                t->sse_mode = t->stream && t->stream->on_event && status >= 200 && status < 300 &&
                              str_startswith_ci(t->resp->content_type, "text/event-stream");
                t->decided = true;
        }
        if (t->sse_mode) {
                r = keeper_sse_feed(&t->sse, p, n);
                if (r != 0) {
                        t->cb_result = r;
                        return 0;
                }
                return n;
        }
        r = strbuf_append(&t->body, p, n);
        if (r < 0) {
                t->cb_result = r;
                return 0;
        }
        return n;
}

static int map_curl_error(CURL *e, CURLcode c, const char *errbuf, char *err, size_t errlen) {
        long os_errno = 0;
        const char *what = errbuf[0] ? errbuf : curl_easy_strerror(c);

        snprintf(err, errlen, "%s", what);
        switch (c) {
        case CURLE_COULDNT_CONNECT:
                curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &os_errno);
                if (os_errno > 0 && os_errno < 4096) {
                        /* "Connection refused" says more than curl's sentence around it. */
                        snprintf(err, errlen, "%s", strerror((int) os_errno));
                        return -(int) os_errno;
                }
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -ENXIO;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
                return -ECONNRESET;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
                return -EINVAL;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
                return -EPROTO;
        case CURLE_WEIRD_SERVER_REPLY:
                return -EBADMSG;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        default:
                return -EIO;
        }
}

/* Drive one transfer to its end, waking for signals and ticks. */
static int run_transfer(CURLM *m, struct transfer *t, CURLcode *ret_result) {
        unsigned seen = keeper_signals_count();
        const struct keeper_http_stream *st = t->stream;
        CURLcode result = CURLE_OK;
        bool done = false;
        int r = 0;

        if (curl_multi_add_handle(m, t->easy) != CURLM_OK)
                return -ENOMEM;
        while (!done) {
                struct curl_waitfd w = { .fd = keeper_signals_fd(), .events = CURL_WAIT_POLLIN };
                int running = 0, left;
                CURLMsg *msg;

                if (curl_multi_perform(m, &running) != CURLM_OK) {
                        r = -EIO;
                        break;
                }
                while ((msg = curl_multi_info_read(m, &left)))
                        if (msg->msg == CURLMSG_DONE && msg->easy_handle == t->easy) {
                                result = msg->data.result;
                                done = true;
                        }
                if (done)
                        break;
                if (curl_multi_poll(m, w.fd >= 0 ? &w : NULL, w.fd >= 0 ? 1 : 0, 200, NULL) != CURLM_OK) {
                        r = -EIO;
                        break;
                }
                if (w.revents)
                        keeper_signals_drain();
                if (keeper_signals_count() != seen) {
                        seen = keeper_signals_count();
                        r = st && st->on_interrupt ? st->on_interrupt(st->userdata) : -EINTR;
                        if (r != 0)
                                break;
                }
                if (st && st->on_tick && (r = st->on_tick(st->userdata)) != 0)
                        break;
        }
        curl_multi_remove_handle(m, t->easy);
        *ret_result = result;
        return r;
}

static int attempt(struct keeper_http *h, const char *method, const char *url, const char *body, size_t body_len,
                   const struct keeper_http_stream *stream, struct keeper_http_response *resp, char *err,
                   size_t errlen) {
        char errbuf[CURL_ERROR_SIZE] = "";
        struct curl_slist *headers = NULL, *hl;
        struct transfer t = { .stream = stream, .resp = resp, .body = STRBUF_INIT(KEEPER_HTTP_BODY_MAX) };
        CURLM *m = h->multi, *own = NULL;
        CURLcode result = CURLE_OK;
        bool was_in_transfer = h->in_transfer;
        int r;

        keeper_sse_init(&t.sse, stream ? stream->on_event : NULL, stream ? stream->on_comment : NULL,
                        stream ? stream->userdata : NULL);
        keeper_http_response_done(resp);

        t.easy = curl_easy_init();
        if (!t.easy) {
                r = -ENOMEM;
                goto finish;
        }
        hl = curl_slist_append(headers, "Accept: application/json, text/event-stream");
        if (hl)
                headers = hl;
        if (body && (hl = curl_slist_append(headers, "Content-Type: application/json")))
                headers = hl;
        if (h->auth_header && (hl = curl_slist_append(headers, h->auth_header)))
                headers = hl;
        /* libcurl sends "Expect: 100-continue" for large bodies; the hive has no use for it. */
        if ((hl = curl_slist_append(headers, "Expect:")))
                headers = hl;

        curl_easy_setopt(t.easy, CURLOPT_URL, url);
        curl_easy_setopt(t.easy, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(t.easy, CURLOPT_USERAGENT, "rbee/" RBEE_VERSION);
        curl_easy_setopt(t.easy, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(t.easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(t.easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
        curl_easy_setopt(t.easy, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(t.easy, CURLOPT_PROTOCOLS_STR, "http,https");
        /* An http_proxy meant for the internet must not swallow the local hive. */
        if (h->loopback)
                curl_easy_setopt(t.easy, CURLOPT_PROXY, "");
        curl_easy_setopt(t.easy, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(t.easy, CURLOPT_HEADERDATA, &t);
        curl_easy_setopt(t.easy, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(t.easy, CURLOPT_WRITEDATA, &t);
        if (body) {
                curl_easy_setopt(t.easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len);
                curl_easy_setopt(t.easy, CURLOPT_POSTFIELDS, body);
        }
        if (!streq(method, body ? "POST" : "GET"))
                curl_easy_setopt(t.easy, CURLOPT_CUSTOMREQUEST, method);

        if (was_in_transfer) {
                own = curl_multi_init();
                if (!own) {
                        r = -ENOMEM;
                        goto finish;
                }
                m = own;
        }
        h->in_transfer = true;
        r = run_transfer(m, &t, &result);
        h->in_transfer = was_in_transfer;

        curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &resp->status);
        resp->streamed = t.sse_mode;
        resp->stream_incomplete = t.sse_mode && keeper_sse_pending(&t.sse);
        if (r == 0 && result != CURLE_OK) {
                /* A body cut short is a transport failure, not an answer. */
                if (result == CURLE_WRITE_ERROR && t.cb_result != 0)
                        r = t.cb_result;
                else
                        r = map_curl_error(t.easy, result, errbuf, err, errlen);
        }
        if (r == -E2BIG)
                snprintf(err, errlen, "the hive's answer is larger than the limit");
        else if (r == -EINTR)
                snprintf(err, errlen, "interrupted");
        if (r >= 0 && strbuf_steal(&t.body, &resp->body, &resp->body_len) < 0)
                r = -ENOMEM;

finish:
        if (t.easy)
                curl_easy_cleanup(t.easy);
        if (own)
                curl_multi_cleanup(own);
        curl_slist_free_all(headers);
        keeper_sse_done(&t.sse);
        strbuf_done(&t.body);
        return r;
}

static uint64_t jitter(uint64_t usec) {
        uint32_t x = 0;

        /* ±25%, so that many clients do not come back in step. */
        if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != sizeof(x))
                x = (uint32_t) usec * 2654435761u;
        return usec * 3 / 4 + (usec / 2) * (x % 1000) / 1000;
}

int keeper_http_request(struct keeper_http *h, const char *method, const char *path, const char *body,
                        size_t body_len, unsigned flags, const struct keeper_http_stream *stream,
                        struct keeper_http_response *ret, char *err, size_t errlen) {
        _cleanup_(freep) char *url = NULL;
        unsigned connect_tries = 0, busy_tries = 0;
        bool nested = h->in_transfer;
        int r;

        if (asprintf(&url, "%s%s", h->base, path) < 0) {
                url = NULL;
                return -ENOMEM;
        }
        for (;;) {
                r = attempt(h, method, url, body, body_len, stream, ret, err, errlen);
                if (flags & KEEPER_HTTP_NO_RETRY || nested)
                        return r;

                if (r == -ECONNREFUSED && ++connect_tries < CONNECT_ATTEMPTS) {
                        /* 100, 300, 900 ms: covers a hive that is restarting. */
                        uint64_t d = 100000;
                        for (unsigned i = 1; i < connect_tries; i++)
                                d *= 3;
                        if (keeper_signals_sleep(jitter(d)) < 0) {
                                snprintf(err, errlen, "interrupted");
                                return -EINTR;
                        }
                        continue;
                }
                if (r == 0 && (ret->status == 503 || ret->status == 429) && ret->retry_after >= 0 &&
                    ++busy_tries < KEEPER_HTTP_BUSY_ATTEMPTS) {
                        int64_t s = MIN(ret->retry_after, (int64_t) BUSY_WAIT_MAX_S);

                        if (h->verbose_retries)
                                fprintf(stderr, "rbee: the hive is busy (HTTP %ld); retrying in %llds (attempt %u of %d)\n",
                                        ret->status, (long long) s, busy_tries + 1, KEEPER_HTTP_BUSY_ATTEMPTS);
                        /* Retry-After: 0 still deserves a breath. */
                        if (keeper_signals_sleep(s > 0 ? (uint64_t) s * 1000000 : 100000) < 0) {
                                snprintf(err, errlen, "interrupted");
                                return -EINTR;
                        }
                        continue;
                }
                return r;
        }
}
