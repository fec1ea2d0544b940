/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "json-util.h"
#include "keeper.h"
#include "strutil.h"
#include "term.h"

#define JSON_DEPTH_MAX 64

int keeper_load_config(struct keeper *k) {
        _cleanup_(freep) char *path = NULL;
        char err[512] = "";
        int r;

        if (k->config_loaded)
                return 0;
        r = keeper_config_path(&path);
        if (r == -ENOENT) {
                /* No home directory (a system service): only the built-in local hive. */
                k->config_loaded = true;
                return 0;
        }
        if (r < 0)
                return keeper_error(k, "out of memory");
        r = keeper_config_load(path, &k->config, err, sizeof(err));
        if (r < 0)
                return keeper_error(k, "bad hive configuration: %s: fix or remove the file (RBEE_CONFIG names another one)",
                                    err[0] ? err : strerror(-r));
        k->config_loaded = true;
        return 0;
}

static bool url_is_loopback(const char *url) {
        const char *h = strstr(url, "://");
        char host[256];
        size_t n = 0;

        if (!h)
                return false;
        h += 3;
        if (*h == '[') {
                const char *e = strchr(h, ']');
                if (!e)
                        return false;
                return (size_t) (e - h - 1) == 3 && memcmp(h + 1, "::1", 3) == 0;
        }
        while (h[n] && h[n] != ':' && h[n] != '/' && n < sizeof(host) - 1) {
                host[n] = (char) tolower((unsigned char) h[n]);
                n++;
        }
        host[n] = 0;
        return streq(host, "localhost") || str_startswith(host, "127.");
}

static int set_target(struct keeper *k, const char *name, const char *url) {
        free(k->hive_name);
        free(k->hive_url);
        k->hive_name = name ? strdup(name) : NULL;
        k->hive_url = strdup(url);
        if ((name && !k->hive_name) || !k->hive_url)
                return -ENOMEM;
        k->hive_is_local = url_is_loopback(url);
        return 0;
}

static int resolve_hive(struct keeper *k, const struct keeper_hive_entry **ret_entry) {
        const char *want = k->hive_arg, *from = "--hive";
        const struct keeper_hive_entry *e;
        int r;

        *ret_entry = NULL;
        if (!want || !*want) {
                want = getenv("RBEE_HIVE");
                from = "$RBEE_HIVE";
        }
        if (!want || !*want) {
                want = k->config.default_hive;
                from = "the default in the configuration";
        }
        if (!want || !*want)
                want = KEEPER_LOCAL_HIVE;

        if (strstr(want, "://")) {
                if (!keeper_hive_url_valid(want))
                        return keeper_error(k, "'%s' (from %s) is not a hive URL: use http://HOST:PORT, e.g. %s",
                                            want, from, KEEPER_LOCAL_URL);
                r = set_target(k, NULL, want);
        } else if ((e = keeper_config_find(&k->config, want))) {
                *ret_entry = e;
                r = set_target(k, e->name, e->url);
        } else if (streq(want, KEEPER_LOCAL_HIVE)) {
                r = set_target(k, KEEPER_LOCAL_HIVE, KEEPER_LOCAL_URL);
        } else if (strchr(want, ':') && !strchr(want, '/')) {
                /* HOST:PORT is a URL without its scheme. */
                _cleanup_(freep) char *u = NULL;
                if (asprintf(&u, "http://%s", want) < 0)
                        return keeper_error(k, "out of memory");
                if (!keeper_hive_url_valid(u))
                        return keeper_error(k, "'%s' (from %s) is not a hive URL: use http://HOST:PORT", want, from);
                r = set_target(k, NULL, u);
        } else
                return keeper_error(k, "unknown hive '%s' (from %s): 'rbee hive list' shows the configured hives; "
                                    "add this one with 'rbee hive add %s http://HOST:7835'",
                                    want, from, keeper_hive_name_valid(want) ? want : "NAME");
        if (r < 0)
                return keeper_error(k, "out of memory");
        return 0;
}

static int resolve_key(struct keeper *k, const struct keeper_hive_entry *e, char **ret) {
        const char *file = k->api_key_file, *env = getenv("RBEE_API_KEY");
        int r;

        *ret = NULL;
        if (!file && !k->api_key && !(env && *env) && e && e->api_key_file)
                file = e->api_key_file;
        if (file) {
                r = keeper_read_key_file(file, ret);
                if (r < 0)
                        return keeper_error(k, "cannot read the API key from %s: %s", file,
                                            r == -ENODATA ? "the file is empty"
                                            : r == -E2BIG ? "the file is larger than 4 KiB"
                                                          : strerror(-r));
                return 0;
        }
        if (k->api_key || (env && *env)) {
                *ret = strdup(k->api_key ? k->api_key : env);
                if (!*ret)
                        return keeper_error(k, "out of memory");
        }
        return 0;
}

static const char *reachability_hint(struct keeper *k) {
        if (k->hive_is_local)
                return "is rbee-hive.socket running? Check 'systemctl status rbee-hive.socket' and 'journalctl -u rbee-hive'";
        return "is rbee-hive running on that host, and can this machine reach its port? 'rbee hive list' shows the "
               "configured URLs";
}

int keeper_connect(struct keeper *k) {
        const struct keeper_hive_entry *entry;
        _cleanup_(freep) char *key = NULL;
        struct json_object *health = NULL, *v;
        int64_t api = 0;
        int r;

        if (k->health)
                return 0;
        if ((r = keeper_load_config(k)) != 0)
                return r;
        if ((r = resolve_hive(k, &entry)) != 0)
                return r;
        if ((r = resolve_key(k, entry, &key)) != 0)
                return r;
        r = keeper_http_new(k->hive_url, key, &k->http);
        k->key_sent = key;
        if (key)
                explicit_bzero(key, strlen(key));
        if (r < 0)
                return keeper_error(k, "cannot set up HTTP: %s", strerror(-r));
        keeper_http_set_verbose_retries(k->http, !k->quiet);

        r = keeper_api(k, "GET", "/v1/health", NULL, &health);
        if (r == -EREMOTEIO && (k->err.status == 404 || !k->err.code[0]))
                return keeper_error(k, "%s does not look like an rbee hive: GET /v1/health answered HTTP %ld; "
                                    "check the URL ('rbee hive list')", k->hive_url, k->err.status);
        if (r == -EBADMSG || (r == 0 && !json_object_is_type(health, json_type_object))) {
                json_object_putp(&health);
                return keeper_error(k, "%s does not look like an rbee hive: GET /v1/health did not answer with a "
                                    "JSON object; check the URL ('rbee hive list')", k->hive_url);
        }
        if (r < 0)
                return keeper_report(k, r, NULL);
        k->health = health;

        r = json_get_int64(health, "api_version", 0, INT32_MAX, &api);
        if (r <= 0)
                return keeper_error(k, "%s does not look like an rbee hive: its health answer has no api_version; "
                                    "check the URL ('rbee hive list')", k->hive_url);
        if (api != KEEPER_API_VERSION) {
                const char *ver = "unknown";
                if (json_object_object_get_ex(health, "version", &v) && json_object_is_type(v, json_type_string))
                        ver = json_object_get_string(v);
                return keeper_error(k, "version mismatch: %s runs rbee-hive %s with API version %lld, but this rbee "
                                    "(%s) speaks API version %d: install the same rbee release on both sides",
                                    keeper_hive_label(k), ver, (long long) api, RBEE_VERSION, KEEPER_API_VERSION);
        }
        return 0;
}

static bool needs_sanitizing(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f ||
                    ((unsigned char) s[0] == 0xc2 && (unsigned char) s[1] >= 0x80 && (unsigned char) s[1] <= 0x9f))
                        return true;
        return false;
}

void keeper_json_sanitize(struct json_object *o) {
        switch (json_object_get_type(o)) {
        case json_type_object: {
                json_object_object_foreach(o, key, v) {
                        (void) key;
                        keeper_json_sanitize(v);
                }
                break;
        }
        case json_type_array:
                for (size_t i = 0; i < json_object_array_length(o); i++)
                        keeper_json_sanitize(json_object_array_get_idx(o, i));
                break;
        case json_type_string: {
                const char *s = json_object_get_string(o);
                char *copy;
                /* A string with a NUL is cut there: what follows would not be shown anyway. */
                if (!needs_sanitizing(s) && strlen(s) == (size_t) json_object_get_string_len(o))
                        break;
                copy = strdup(s);
                if (!copy) {
                        (void) json_object_set_string(o, "");
                        break;
                }
                keeper_term_sanitize(copy);
                (void) json_object_set_string(o, copy);
                free(copy);
                break;
        }
        default:
                break;
        }
}

void keeper_set_http_error(struct keeper *k, const struct keeper_http_response *resp) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        struct json_object *e = NULL;
        const char *code = NULL, *msg = NULL;
        char jerr[128];

        k->err = (struct keeper_hive_error) { .status = resp->status };
        if (resp->body_len > 0 &&
            json_parse_strict(resp->body, resp->body_len, JSON_DEPTH_MAX, &o, jerr, sizeof(jerr)) == 0 &&
            json_get_typed(o, "error", json_type_object, &e) > 0) {
                json_get_string(e, "code", &code, NULL);
                json_get_string(e, "message", &msg, NULL);
        }
        snprintf(k->err.code, sizeof(k->err.code), "%s", strempty(code));
        if (msg)
                snprintf(k->err.message, sizeof(k->err.message), "%s", msg);
        else if (resp->body_len > 0 && resp->body_len < 200 && utf8_is_valid(resp->body, resp->body_len))
                snprintf(k->err.message, sizeof(k->err.message), "HTTP %ld: %s", resp->status, resp->body);
        else
                snprintf(k->err.message, sizeof(k->err.message), "HTTP %ld", resp->status);
        str_strip_trailing(k->err.message);
        keeper_term_sanitize(k->err.message);
}

void keeper_set_transport_error(struct keeper *k, int r, const char *detail) {
        k->err = (struct keeper_hive_error) {};
        snprintf(k->err.message, sizeof(k->err.message), "%s", detail && *detail ? detail : strerror(-r));
        keeper_term_sanitize(k->err.message);
}

int keeper_api_stream(struct keeper *k, const char *method, const char *path, struct json_object *body,
                      const struct keeper_http_stream *stream, struct keeper_http_response *resp) {
        const char *b = NULL;
        size_t blen = 0;
        char err[512] = "";
        int r;

        if (body) {
                b = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
                if (!b)
                        return -ENOMEM;
                blen = strlen(b);
        }
        r = keeper_http_request(k->http, method, path, b, blen, 0, stream, resp, err, sizeof(err));
        if (r < 0) {
                keeper_set_transport_error(k, r, err);
                return r;
        }
        if (r > 0)
                return r;
        if (!resp->streamed && (resp->status < 200 || resp->status >= 300)) {
                keeper_set_http_error(k, resp);
                return -EREMOTEIO;
        }
        return 0;
}

int keeper_api(struct keeper *k, const char *method, const char *path, struct json_object *body,
               struct json_object **ret) {
        struct keeper_http_response resp = { .retry_after = -1 };
        struct json_object *o = NULL;
        char jerr[128] = "";
        int r;

        r = keeper_api_stream(k, method, path, body, NULL, &resp);
        if (r < 0) {
                keeper_http_response_done(&resp);
                return r;
        }
        if (resp.body_len > 0) {
                r = json_parse_strict(resp.body, resp.body_len, JSON_DEPTH_MAX, &o, jerr, sizeof(jerr));
                if (r < 0) {
                        k->err = (struct keeper_hive_error) { .status = resp.status };
                        snprintf(k->err.message, sizeof(k->err.message),
                                 "the hive answered %s %s with malformed JSON (%s)", method, path, jerr);
                        keeper_http_response_done(&resp);
                        return -EBADMSG;
                }
        }
        keeper_http_response_done(&resp);
        /* What the hive says is shown to people, except with --json, where it is data. */
        if (o && !k->json)
                keeper_json_sanitize(o);
        if (ret)
                *ret = o;
        else
                json_object_putp(&o);
        return 0;
}

const char *keeper_hint(struct keeper *k, const char *code, const char *subject, char *buf, size_t len) {
        const char *s = subject ? subject : "MODEL";

        if (!code || !*code)
                return NULL;
        if (streq(code, "model_not_found")) {
                snprintf(buf, len, "'rbee model list' shows the models on this hive; 'rbee model download "
                                   "hf:ORG/REPO[:QUANT]' or 'rbee model register ID --path FILE' adds one");
        } else if (streq(code, "worker_not_found"))
                snprintf(buf, len, "'rbee worker list' shows the running workers");
        else if (streq(code, "job_not_found"))
                snprintf(buf, len, "jobs are kept 10 minutes after they end");
        else if (streq(code, "invalid_reference"))
                snprintf(buf, len, "a model reference is hf:ORG/REPO, hf:ORG/REPO:QUANT (e.g. Q4_K_M), "
                                   "hf:ORG/REPO:FILE.gguf or file:///ABSOLUTE/PATH.gguf");
        else if (streq(code, "model_exists"))
                snprintf(buf, len, "pick another id with --id, or remove the old one first: 'rbee model remove %s'", s);
        else if (streq(code, "invalid_model"))
                snprintf(buf, len, "the file must be a complete GGUF model");
        else if (streq(code, "backend_unavailable"))
                snprintf(buf, len, "'rbee hive backends' lists the backends and devices of this hive");
        else if (streq(code, "unauthorized"))
                snprintf(buf, len, "pass the hive's key with --api-key-file FILE or $RBEE_API_KEY, or add "
                                   "api-key-file=FILE to the hive in %s", k->config.path ? k->config.path : "the configuration");
        else if (streq(code, "overloaded"))
                snprintf(buf, len, "the queue for this model is full; try again later, or raise rbee-hive --max-queue");
        else if (streq(code, "shutting_down"))
                snprintf(buf, len, "the hive is stopping; try again once it is back");
        else if (streq(code, "worker_failed") || streq(code, "worker_died"))
                snprintf(buf, len, "'rbee worker logs %s' shows what the worker said", s);
        else if (streq(code, "worker_start_timeout"))
                snprintf(buf, len, "a large model may need more time (rbee-hive --start-timeout); "
                                   "'rbee worker logs %s' shows how far it got", s);
        else if (streq(code, "insufficient_memory"))
                snprintf(buf, len, "stop other workers ('rbee ps', 'rbee worker stop ID') or use a smaller quantization");
        else if (streq(code, "model_busy"))
                snprintf(buf, len, "stop its worker first: 'rbee worker stop %s'", s);
        else if (streq(code, "request_too_large"))
                snprintf(buf, len, "the request is over the hive's 8 MiB limit");
        else if (streq(code, "internal_error"))
                snprintf(buf, len, "this is a bug in rbee-hive; 'journalctl -u rbee-hive' has the details");
        else if (streq(code, "not_found") || streq(code, "method_not_allowed"))
                snprintf(buf, len, "the hive may be older than this rbee (%s): 'rbee hive status' shows its version",
                         RBEE_VERSION);
        else if (streq(code, "upstream_not_found"))
                snprintf(buf, len, "check the repository and file name on the hub the hive downloads from "
                                   "(rbee-hive --hf-endpoint)");
        else if (streq(code, "upstream_unauthorized"))
                snprintf(buf, len, "the repository is gated or private: give rbee-hive a token with access "
                                   "(HF_TOKEN in its environment, e.g. 'systemctl edit rbee-hive')");
        else if (streq(code, "quant_not_found"))
                snprintf(buf, len, "ask for a quantization the repository has, or name the file: hf:ORG/REPO:FILE.gguf");
        else if (streq(code, "ambiguous_file"))
                snprintf(buf, len, "name the quantization or the file: hf:ORG/REPO:Q4_K_M or hf:ORG/REPO:FILE.gguf");
        else if (streq(code, "checksum_mismatch"))
                snprintf(buf, len, "the file was damaged on the way; run the download again");
        else if (streq(code, "disk_full"))
                snprintf(buf, len, "free space in the hive's state directory (/var/lib/rbee) and run the download again");
        else if (streq(code, "stalled") || streq(code, "network_error") || streq(code, "upstream_error"))
                snprintf(buf, len, "check the hive's connection to the hub; running the download again resumes it");
        else
                return NULL;
        return buf;
}

int keeper_report(struct keeper *k, int r, const char *subject) {
        char hint[512];
        const char *h;

        if (r == -EINTR) {
                if (!k->quiet)
                        fprintf(stderr, "%srbee: interrupted\n", k->err_tty ? "\n" : "");
                return KEEPER_EXIT_INTERRUPTED;
        }
        if (r == -ENOMEM)
                return keeper_error(k, "out of memory");
        if (r == -EREMOTEIO) {
                if (k->err.status == 401)
                        return keeper_error(k, "%s refused the request (unauthorized: %s): %s", keeper_hive_label(k),
                                            k->key_sent ? "wrong API key" : "it needs an API key",
                                            keeper_hint(k, "unauthorized", subject, hint, sizeof(hint)));
                h = keeper_hint(k, k->err.code, subject, hint, sizeof(hint));
                if (h)
                        return keeper_error(k, "%s: %s", k->err.message, h);
                if (!k->err.code[0])
                        return keeper_error(k, "%s answered %s", keeper_hive_label(k), k->err.message);
                return keeper_error(k, "%s", k->err.message);
        }
        if (r == -EBADMSG)
                return keeper_error(k, "%s: %s", keeper_hive_label(k), k->err.message);

        switch (r) {
        case -ECONNREFUSED:
        case -EHOSTUNREACH:
        case -ENETUNREACH:
        case -ECONNABORTED:
                return keeper_error(k, "%s is not reachable (%s): %s", keeper_hive_label(k), k->err.message,
                                    reachability_hint(k));
        case -ENXIO:
                return keeper_error(k, "%s: the host name does not resolve (%s): check the URL with 'rbee hive list'",
                                    keeper_hive_label(k), k->err.message);
        case -ETIMEDOUT:
                return keeper_error(k, "%s did not answer in time (%s): %s", keeper_hive_label(k), k->err.message,
                                    reachability_hint(k));
        case -ECONNRESET:
                return keeper_error(k, "%s closed the connection early (%s): it may have crashed or restarted; "
                                    "'journalctl -u rbee-hive' shows why",
                                    keeper_hive_label(k), k->err.message);
        case -EPROTO:
                return keeper_error(k, "TLS with %s failed (%s)", keeper_hive_label(k), k->err.message);
        case -EINVAL:
                return keeper_error(k, "bad hive URL %s (%s): 'rbee hive list' shows the configured URLs",
                                    strna(k->hive_url), k->err.message);
        case -E2BIG:
                return keeper_error(k, "%s sent an answer over rbee's size limits", keeper_hive_label(k));
        default:
                return keeper_error(k, "talking to %s failed: %s", keeper_hive_label(k),
                                    k->err.message[0] ? k->err.message : strerror(-r));
        }
}
