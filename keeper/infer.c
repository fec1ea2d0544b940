/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "human.h"
#include "infer.h"
#include "json-util.h"
#include "progress.h"
#include "signals.h"
#include "term.h"

#define CANCEL_GRACE_USEC (3ULL * 1000000)
#define EVENT_DEPTH_MAX 32

void keeper_infer_params_init(struct keeper_infer_params *p) {
        *p = (struct keeper_infer_params) {
                .max_tokens = -1,
                .temperature = -1,
                .top_p = -1,
                .top_k = -1,
                .seed = -1,
                .device = -1,
                .stall_usec = KEEPER_STALL_DEFAULT_USEC,
        };
}

void keeper_infer_params_done(struct keeper_infer_params *p) {
        free(p->stop);
        p->stop = NULL;
}

static int add_stop(struct keeper_infer_params *p, const char *s) {
        size_t n = 0;
        char **v;

        while (p->stop && p->stop[n])
                n++;
        if (n >= 16)
                return -E2BIG;
        v = realloc(p->stop, (n + 2) * sizeof(char *));
        if (!v)
                return -ENOMEM;
        v[n] = (char *) s;
        v[n + 1] = NULL;
        p->stop = v;
        return 0;
}

int keeper_infer_option(struct keeper *k, const char *cmd, struct keeper_infer_params *p, int c, const char *arg) {
        int64_t v;
        double d;

        switch (c) {
        case 'm':
                if (!*arg)
                        goto bad;
                p->model = arg;
                return 1;
        case 'n':
                if (parse_int64(arg, -1, INT32_MAX, &v) < 0 || v == 0)
                        return keeper_usage_error(k, cmd, "--max-tokens: expected a positive number (or -1), got '%s'", arg), -EINVAL;
                p->max_tokens = v;
                return 1;
        case 't':
                if (parse_double(arg, 0, 100, &d) < 0)
                        return keeper_usage_error(k, cmd, "--temperature: expected a number >= 0, got '%s'", arg), -EINVAL;
                p->temperature = d;
                return 1;
        case KEEPER_OPT_FIRST_LOCAL + 50:
                if (parse_double(arg, 0, 1, &d) < 0)
                        return keeper_usage_error(k, cmd, "--top-p: expected a number in [0, 1], got '%s'", arg), -EINVAL;
                p->top_p = d;
                return 1;
        case KEEPER_OPT_FIRST_LOCAL + 51:
                if (parse_int64(arg, 0, INT32_MAX, &v) < 0)
                        return keeper_usage_error(k, cmd, "--top-k: expected a number >= 0, got '%s'", arg), -EINVAL;
                p->top_k = v;
                return 1;
        case 's':
                if (parse_int64(arg, 0, INT64_MAX, &v) < 0)
                        return keeper_usage_error(k, cmd, "--seed: expected a number >= 0, got '%s'", arg), -EINVAL;
                p->seed = v;
                return 1;
        case KEEPER_OPT_FIRST_LOCAL + 52:
                if (!*arg)
                        goto bad;
                p->backend = arg;
                return 1;
        case KEEPER_OPT_FIRST_LOCAL + 53:
                if (parse_int64(arg, 0, 1024, &v) < 0)
                        return keeper_usage_error(k, cmd, "--device: expected a device index, got '%s'", arg), -EINVAL;
                p->device = v;
                return 1;
        case KEEPER_OPT_FIRST_LOCAL + 54:
                if (!*arg)
                        goto bad;
                p->keep_alive = arg;
                return 1;
        case KEEPER_OPT_FIRST_LOCAL + 55:
                if (add_stop(p, arg) < 0)
                        return keeper_usage_error(k, cmd, "--stop: at most 16 stop strings"), -EINVAL;
                return 1;
        case KEEPER_OPT_FIRST_LOCAL + 56: {
                uint64_t u;
                if (parse_duration_usec(arg, &u) < 0)
                        return keeper_usage_error(k, cmd, "--stall-timeout: expected a duration like 30s or 2min "
                                                  "(0 disables it), got '%s'", arg), -EINVAL;
                p->stall_usec = u;
                return 1;
        }
        default:
                return 0;
        }
bad:
        return keeper_usage_error(k, cmd, "empty option value"), -EINVAL;
}

void keeper_infer_result_done(struct keeper_infer_result *r) {
        strbuf_done(&r->text);
        json_object_putp(&r->end);
}

void keeper_new_job_id(char *buf, size_t len) {
        uint8_t b[8] = {};

        if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
                uint64_t t = keeper_now_usec() ^ ((uint64_t) getpid() << 32);
                memcpy(b, &t, sizeof(b));
        }
        snprintf(buf, len, "rbee-%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
}

static int add(struct json_object *o, const char *key, struct json_object *v) {
        if (!v)
                return -ENOMEM;
        return json_object_object_add(o, key, v) < 0 ? -ENOMEM : 0;
}

int keeper_infer_request(const struct keeper_infer_params *p, const char *job_id, const char *prompt,
                         struct json_object *messages, struct json_object **ret) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        int r = 0;

        if (!o)
                return -ENOMEM;
        r |= add(o, "model", json_object_new_string(p->model));
        if (prompt)
                r |= add(o, "prompt", json_object_new_string(prompt));
        if (messages)
                r |= add(o, "messages", json_object_get(messages));
        r |= add(o, "stream", json_object_new_boolean(1));
        r |= add(o, "job_id", json_object_new_string(job_id));
        if (p->max_tokens > 0)
                r |= add(o, "max_tokens", json_object_new_int64(p->max_tokens));
        if (p->temperature >= 0)
                r |= add(o, "temperature", json_object_new_double(p->temperature));
        if (p->top_p >= 0)
                r |= add(o, "top_p", json_object_new_double(p->top_p));
        if (p->top_k >= 0)
                r |= add(o, "top_k", json_object_new_int64(p->top_k));
        if (p->seed >= 0)
                r |= add(o, "seed", json_object_new_int64(p->seed));
        if (p->backend)
                r |= add(o, "backend", json_object_new_string(p->backend));
        if (p->device >= 0)
                r |= add(o, "device", json_object_new_int64(p->device));
        if (p->keep_alive)
                r |= add(o, "keep_alive", json_object_new_string(p->keep_alive));
        if (p->stop) {
                struct json_object *a = json_object_new_array();
                r |= add(o, "stop", a);
                for (size_t i = 0; a && p->stop[i]; i++)
                        if (json_object_array_add(a, json_object_new_string(p->stop[i])) < 0)
                                r = -ENOMEM;
        }
        if (r < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

int keeper_cancel_job(struct keeper *k, const char *job_id, char *state, size_t state_len) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        _cleanup_(freep) char *path = keeper_path("/v1/jobs/", job_id, NULL);
        const char *s = NULL;
        int r;

        if (!path)
                return -ENOMEM;
        r = keeper_api(k, "DELETE", path, NULL, &o);
        if (r < 0)
                return r;
        json_get_string(o, "state", &s, NULL);
        snprintf(state, state_len, "%s", strempty(s));
        return 0;
}

/* ---- the stream ---- */

struct state {
        struct keeper *k;
        const struct keeper_infer_params *p;
        struct keeper_infer_result *res;
        bool print;

        bool terminal;                  /* "end" or "error" arrived */
        bool job_id_confirmed;          /* an event named the hive's id for the job */
        char err_code[64];
        char err_message[1024];
        int64_t err_tokens_out;
        char bad_event[512];            /* why an event could not be used */

        uint64_t start_usec, last_activity_usec;
        bool cancel_sent;               /* DELETE went out (Ctrl+C, stall or EPIPE) */
        uint64_t cancel_usec;
        char cancel_state[32];
        int cancel_error;
        enum keeper_infer_outcome why_cancel;

        char status[256];               /* worker loading status */
        bool status_drawn;
        unsigned spin;
        uint64_t last_spin_usec;
        bool last_newline;              /* the output so far ends with a newline */
        bool held_c2;                   /* a 0xC2 lead byte waits for its continuation */
};

static void status_clear(struct state *s) {
        if (s->status_drawn) {
                fputs(KEEPER_ANSI_CLEAR_LINE, stderr);
                fflush(stderr);
                s->status_drawn = false;
        }
}

static void status_draw(struct state *s) {
        static const char *const spin_utf8[] = { "⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏" };
        static const char *const spin_ascii[] = { "|", "/", "-", "\\" };
        char line[512], el[KEEPER_HUMAN_MAX];
        unsigned cols = keeper_term_columns(STDERR_FILENO);
        size_t keep;
        const char *sp = keeper_term_utf8() ? spin_utf8[s->spin % 10] : spin_ascii[s->spin % 4];

        snprintf(line, sizeof(line), "%s %s (%s)", sp, s->status,
                 keeper_human_duration((double) (keeper_now_usec() - s->start_usec) / 1e6, el, sizeof(el)));
        keep = keeper_term_prefix_fitting(line, strlen(line), cols > 1 ? cols - 1 : 1);
        fputs(KEEPER_ANSI_CLEAR_LINE, stderr);
        if (s->k->err_color)
                fputs(KEEPER_ANSI_DIM, stderr);
        fwrite(line, 1, keep, stderr);
        if (s->k->err_color)
                fputs(KEEPER_ANSI_RESET, stderr);
        fflush(stderr);
        s->status_drawn = true;
}

static void set_status(struct state *s, const char *text) {
        if (s->k->quiet || s->k->json || streq(s->status, text))
                return;
        snprintf(s->status, sizeof(s->status), "%.250s", text);
        /* Control characters from the network must not steer the terminal. */
        keeper_term_sanitize(s->status);
        if (s->k->err_tty)
                status_draw(s);
        else
                fprintf(stderr, "rbee: %s\n", s->status);
}

static int write_token(struct state *s, const char *text, size_t n) {
        int r;

        r = strbuf_append(&s->res->text, text, n);
        if (r < 0)
                return r;
        s->res->n_tokens++;
        if (n > 0)
                s->last_newline = text[n - 1] == '\n';
        if (!s->print)
                return 0;
        status_clear(s);
        if (s->k->out_tty) {
                /* Model output must not steer the terminal: escape sequences and
                 * other control characters are shown, not obeyed. */
                for (size_t i = 0; i < n; i++) {
                        unsigned char c = (unsigned char) text[i];
                        bool c1 = false;

                        /* C1 controls (U+0080..U+009F, UTF-8 C2 80..C2 9F) such as
                         * CSI are obeyed by some terminals too. A token may end
                         * between the two bytes, so the lead byte is held. */
                        if (s->held_c2) {
                                s->held_c2 = false;
                                c1 = c >= 0x80 && c <= 0x9f;
                                if (!c1 && fputc(0xc2, stdout) == EOF)
                                        return errno == EPIPE ? -EPIPE : -EIO;
                        }
                        if (!c1 && c == 0xc2) {
                                s->held_c2 = true;
                                continue;
                        }
                        if (c1 || (c < 0x20 && c != '\n' && c != '\t' && c != '\r') || c == 0x7f) {
                                if (fputs(keeper_term_utf8() ? "\xef\xbf\xbd" /* U+FFFD */ : "?", stdout) < 0)
                                        return errno == EPIPE ? -EPIPE : -EIO;
                        } else if (fputc(c, stdout) == EOF)
                                return errno == EPIPE ? -EPIPE : -EIO;
                }
        } else if (fwrite(text, 1, n, stdout) != n)
                return errno == EPIPE ? -EPIPE : -EIO;
        if (fflush(stdout) != 0)
                return errno == EPIPE ? -EPIPE : -EIO;
        return 0;
}

static int bad_event(struct state *s, const char *name, const char *why) {
        snprintf(s->bad_event, sizeof(s->bad_event), "the hive sent a malformed '%.32s' event (%s)", name, why);
        return -EBADMSG;
}

/* Cancel the job on the hive. Returns non-zero when the stream should be
 * dropped at once (closing it is then what cancels the job). */
static int do_cancel(struct state *s, enum keeper_infer_outcome why) {
        if (s->cancel_sent)
                return 0;
        s->why_cancel = why;
        s->cancel_sent = true;
        s->cancel_usec = keeper_now_usec();
        status_clear(s);
        if (why == KEEPER_INFER_CANCELLED && !s->k->quiet) {
                fflush(stdout);
                /* On a terminal, end the line that holds the text or the echoed ^C. */
                fprintf(stderr, "%srbee: cancelling job %s on %s...\n", s->k->err_tty ? "\n" : "", s->res->job_id,
                        keeper_hive_label(s->k));
        }
        s->cancel_error = keeper_cancel_job(s->k, s->res->job_id, s->cancel_state, sizeof(s->cancel_state));
        /* Without the hive's confirmation there is no final event to wait for. */
        return s->cancel_error < 0 ? 4 : 0;
}

static void adopt_job_id(struct state *s, struct json_object *o) {
        const char *id = NULL;
        size_t n = 0;

        /* The hive names the job in every event; its id may differ from the one we proposed. */
        if (s->job_id_confirmed || json_get_string(o, "job_id", &id, &n) <= 0 || n == 0 ||
            n >= sizeof(s->res->job_id))
                return;
        for (size_t i = 0; i < n; i++)
                if (!(isalnum((unsigned char) id[i]) || strchr("._:-", id[i])))
                        return;
        memcpy(s->res->job_id, id, n + 1);
        s->job_id_confirmed = true;
}

static int on_event(void *userdata, const char *name, const char *data, size_t len) {
        struct state *s = userdata;
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        const char *str = NULL;
        size_t slen = 0;
        char jerr[128];
        int r;

        if (json_parse_strict(data, len, EVENT_DEPTH_MAX, &o, jerr, sizeof(jerr)) < 0)
                return bad_event(s, name, jerr);
        if (!json_object_is_type(o, json_type_object))
                return bad_event(s, name, "not a JSON object");
        adopt_job_id(s, o);

        if (streq(name, "token")) {
                r = json_get_string(o, "text", &str, &slen);
                if (r <= 0)
                        return bad_event(s, name, "no \"text\" string");
                s->last_activity_usec = keeper_now_usec();
                if (s->cancel_sent)
                        return 0;
                r = write_token(s, str, slen);
                if (r == -EPIPE)
                        return do_cancel(s, KEEPER_INFER_BROKEN_PIPE);
                return r;
        }
        if (streq(name, "loading")) {
                char line[300];

                s->last_activity_usec = keeper_now_usec();
                json_get_string(o, "status", &str, NULL);
                snprintf(line, sizeof(line), "Starting a worker for %s: %s", s->p->model,
                         str && *str ? str : "starting");
                set_status(s, line);
                return 0;
        }
        if (streq(name, "ready")) {
                int64_t pid = 0, ms = 0;

                s->last_activity_usec = keeper_now_usec();
                status_clear(s);
                json_get_int64(o, "pid", 0, INT64_MAX, &pid);
                json_get_int64(o, "load_ms", 0, INT64_MAX, &ms);
                if (s->k->verbose)
                        fprintf(stderr, "rbee: worker for %s ready (pid %" PRIi64 ", loaded in %" PRIi64 " ms)\n",
                                s->p->model, pid, ms);
                return 0;
        }
        if (streq(name, "started")) {
                s->last_activity_usec = keeper_now_usec();
                status_clear(s);
                return 0;
        }
        if (streq(name, "end")) {
                s->terminal = true;
                s->res->end = TAKE_PTR(o);
                return 1;
        }
        if (streq(name, "error")) {
                const char *code = NULL, *msg = NULL;

                s->terminal = true;
                json_get_string(o, "code", &code, NULL);
                json_get_string(o, "message", &msg, NULL);
                json_get_int64(o, "tokens_out", 0, INT64_MAX, &s->err_tokens_out);
                snprintf(s->err_code, sizeof(s->err_code), "%s", code ? code : "unknown");
                snprintf(s->err_message, sizeof(s->err_message), "%s", msg ? msg : "the job failed");
                return 1;
        }
        /* Events this rbee does not know are from a newer hive: skip them. */
        return 0;
}

static int on_tick(void *userdata) {
        struct state *s = userdata;
        uint64_t now = keeper_now_usec();

        if (s->cancel_sent)
                /* Wait a little for the job's final event, then give up on it. */
                return now - s->cancel_usec > CANCEL_GRACE_USEC ? 2 : 0;
        if (s->p->stall_usec > 0 && now - s->last_activity_usec > s->p->stall_usec)
                return do_cancel(s, KEEPER_INFER_STALLED);
        if (s->status_drawn && now - s->last_spin_usec > 100000) {
                s->last_spin_usec = now;
                s->spin++;
                status_draw(s);
        }
        return 0;
}

static int on_interrupt(void *userdata) {
        return do_cancel(userdata, KEEPER_INFER_CANCELLED);
}

static void print_stats(struct state *s) {
        const struct keeper_infer_result *res = s->res;
        double tps = 0, ms = 0;
        int64_t in = 0, out = 0;
        char a[KEEPER_HUMAN_MAX];

        if (s->k->quiet || !res->end || !(s->k->verbose || s->k->err_tty))
                return;
        json_get_int64(res->end, "tokens_in", 0, INT64_MAX, &in);
        json_get_int64(res->end, "tokens_out", 0, INT64_MAX, &out);
        json_get_double(res->end, "tokens_per_second", 0, 1e12, &tps);
        json_get_double(res->end, "gen_ms", 0, 1e15, &ms);
        if (s->k->err_color)
                fputs(KEEPER_ANSI_DIM, stderr);
        fprintf(stderr, "%" PRIi64 " prompt tokens, %" PRIi64 " generated in %s (%.1f tokens/s)", in, out,
                keeper_human_duration(ms / 1000.0, a, sizeof(a)), tps);
        if (s->k->err_color)
                fputs(KEEPER_ANSI_RESET, stderr);
        fputc('\n', stderr);
}

static int finish_cancelled(struct state *s) {
        struct keeper *k = s->k;
        struct keeper_infer_result *res = s->res;
        char el[KEEPER_HUMAN_MAX];
        const char *confirmed;

        res->outcome = s->why_cancel;
        if (s->why_cancel == KEEPER_INFER_BROKEN_PIPE)
                return 0;
        if (s->cancel_error == 0)
                confirmed = streq(s->cancel_state, "cancelled") || streq(s->err_code, "cancelled")
                                    ? "cancelled on the hive"
                                    : "already finished on the hive";
        else
                /* The hive cancels a streamed job whose client goes away. */
                confirmed = "cancelled by closing its stream";
        keeper_human_duration((double) (keeper_now_usec() - s->start_usec) / 1e6, el, sizeof(el));
        if (s->why_cancel == KEEPER_INFER_STALLED) {
                char st[KEEPER_HUMAN_MAX];
                keeper_error(k, "no token from %s for %s: job %s %s after %" PRIu64 " tokens; the worker may be hung "
                             "or overloaded: 'rbee ps' and 'rbee worker logs %s' show its state "
                             "(--stall-timeout changes the limit)",
                             keeper_hive_label(k),
                             keeper_human_duration((double) s->p->stall_usec / 1e6, st, sizeof(st)),
                             res->job_id, confirmed, res->n_tokens, s->p->model);
                return 0;
        }
        if (!k->quiet)
                fprintf(stderr, "rbee: interrupted: job %s %s after %" PRIu64 " tokens in %s\n", res->job_id,
                        confirmed, res->n_tokens, el);
        return 0;
}

int keeper_infer_run(struct keeper *k, const struct keeper_infer_params *p, struct json_object *request,
                     unsigned flags, struct keeper_infer_result *res) {
        bool print = flags & KEEPER_INFER_PRINT;
        struct keeper_http_response resp = { .retry_after = -1 };
        struct json_object *jid;
        struct state s = {
                .k = k,
                .p = p,
                .res = res,
                .print = print,
                .last_newline = true,
        };
        struct keeper_http_stream stream = {
                .on_event = on_event,
                .on_tick = on_tick,
                .on_interrupt = on_interrupt,
                .userdata = &s,
        };
        int r;

        res->outcome = KEEPER_INFER_FAILED;
        strbuf_init(&res->text, 64 * 1024 * 1024);
        if (json_object_object_get_ex(request, "job_id", &jid))
                snprintf(res->job_id, sizeof(res->job_id), "%s", json_object_get_string(jid));
        s.start_usec = s.last_activity_usec = keeper_now_usec();

        r = keeper_api_stream(k, "POST", "/v1/inference", request, &stream, &resp);
        status_clear(&s);
        res->seconds = (double) (keeper_now_usec() - s.start_usec) / 1e6;
        if (s.held_c2)                  /* a lone lead byte at the very end */
                fputc(0xc2, stdout);
        if (print && res->n_tokens > 0 && !s.last_newline && k->out_tty && !s.cancel_sent) {
                fputc('\n', stdout);
                fflush(stdout);
        }

        if (r == -EREMOTEIO) {
                keeper_http_response_done(&resp);
                snprintf(res->error_code, sizeof(res->error_code), "%s", k->err.code);
                if (!(flags & KEEPER_INFER_QUIET_CONTEXT) || !streq(k->err.code, "context_length_exceeded"))
                        keeper_report(k, r, p->model);
                return 0;
        }
        if (r == -EBADMSG && s.bad_event[0]) {
                keeper_http_response_done(&resp);
                if (!s.cancel_sent)
                        do_cancel(&s, KEEPER_INFER_FAILED);
                keeper_error(k, "%s after %" PRIu64 " tokens; job %s was cancelled: the hive and rbee may be "
                             "different versions ('rbee hive status')", s.bad_event, res->n_tokens, res->job_id);
                return 0;
        }
        if (!resp.streamed && r >= 0 && resp.status >= 200 && resp.status < 300) {
                keeper_http_response_done(&resp);
                keeper_error(k, "%s answered the inference request with '%s' instead of an event stream: "
                             "the hive and rbee may be different versions ('rbee hive status')",
                             keeper_hive_label(k), resp.content_type[0] ? resp.content_type : "no content type");
                return 0;
        }
        keeper_http_response_done(&resp);

        if (s.cancel_sent)
                return finish_cancelled(&s);
        if (r < 0 && r != -ECONNRESET && !s.terminal) {
                if (r == -EPIPE) {
                        res->outcome = KEEPER_INFER_BROKEN_PIPE;
                        return 0;
                }
                keeper_report(k, r, p->model);
                return 0;
        }
        if (res->end) {
                res->outcome = KEEPER_INFER_DONE;
                print_stats(&s);
                return 0;
        }
        if (s.terminal) {
                char hint[512];
                const char *h = keeper_hint(k, s.err_code, p->model, hint, sizeof(hint));

                snprintf(res->error_code, sizeof(res->error_code), "%s", s.err_code);
                if ((flags & KEEPER_INFER_QUIET_CONTEXT) && streq(s.err_code, "context_length_exceeded"))
                        return 0;
                if (streq(s.err_code, "worker_died"))
                        keeper_error(k, "the worker for %s died after %" PRIi64 " tokens (%s): %s", p->model,
                                     s.err_tokens_out, s.err_message, h);
                else if (h)
                        keeper_error(k, "%s (%s): %s", s.err_message, s.err_code, h);
                else
                        keeper_error(k, "%s (%s)", s.err_message, s.err_code);
                return 0;
        }
        keeper_error(k, "%s closed the event stream of job %s before its end (after %" PRIu64 " tokens): "
                     "the hive may have crashed or restarted; 'journalctl -u rbee-hive' shows why",
                     keeper_hive_label(k), res->job_id, res->n_tokens);
        return 0;
}
