/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "infer.h"
#include "json-util.h"
#include "signals.h"
#include "strutil.h"
#include "term.h"

#define LINE_MAX_BYTES (1024 * 1024)

static void help(void) {
        printf("Usage: rbee chat --model ID [--system TEXT] [OPTIONS]\n"
               "\n"
               "Chat with a model. The hive applies the model's chat template to the whole\n"
               "conversation, so every answer sees the history. One line is one message;\n"
               "with stdin not a terminal, every line read is a message and the answers go\n"
               "to stdout one after another.\n"
               "\n"
               "In the chat:  /clear forgets the history   /bye (or Ctrl+D) ends the chat\n"
               "              Ctrl+C while an answer streams cancels that answer\n"
               "\n"
               "  -m, --model ID            model id (required)\n"
               "      --system TEXT         a system message to start the conversation with\n"
               "  -n, --max-tokens N        longest answer\n"
               "  -t, --temperature T       sampling temperature\n"
               "      --top-p P, --top-k K, -s, --seed S, --stop TEXT, --backend B, --device D,\n"
               "      --keep-alive DUR, --stall-timeout DUR   as for 'rbee infer'\n"
               "\n"
               "With --json, the whole conversation is printed as JSON at the end.\n"
               "\n%s",
               keeper_global_help);
}

static int add_message(struct json_object *msgs, const char *role, const char *content, size_t len) {
        struct json_object *m = json_object_new_object();

        if (!m)
                return -ENOMEM;
        json_object_object_add(m, "role", json_object_new_string(role));
        json_object_object_add(m, "content", json_object_new_string_len(content, (int) len));
        if (json_object_array_add(msgs, m) < 0) {
                json_object_put(m);
                return -ENOMEM;
        }
        return 0;
}

/* Lines from stdin, read without stdio so that a wait for input also
 * notices Ctrl+C. Returns 1 with a line (no newline) in *ret, owned by the
 * reader until the next call; 0 at the end; -EINTR; -E2BIG for a line
 * over the limit (skipped). */
struct line_reader {
        struct strbuf pending;
        char *line;
        bool eof;
        bool skipping;                  /* dropping the rest of an oversized line */
};

static int read_line(struct line_reader *lr, char **ret) {
        char buf[4096];

        for (;;) {
                char *nl = lr->pending.data ? memchr(lr->pending.data, '\n', lr->pending.len) : NULL;
                ssize_t n;
                int r;

                if (nl || (lr->eof && lr->pending.len > 0)) {
                        size_t len = nl ? (size_t) (nl - lr->pending.data) : lr->pending.len;

                        free(lr->line);
                        lr->line = strndup(lr->pending.data, len);
                        if (!lr->line)
                                return -ENOMEM;
                        strbuf_consume(&lr->pending, nl ? len + 1 : len);
                        *ret = lr->line;
                        return 1;
                }
                if (lr->eof)
                        return 0;
                r = keeper_signals_wait_fd(STDIN_FILENO);
                if (r < 0)
                        return r;
                n = read(STDIN_FILENO, buf, sizeof(buf));
                if (n < 0 && errno != EINTR && errno != EAGAIN)
                        return -errno;
                if (n == 0)
                        lr->eof = true;
                if (n <= 0)
                        continue;
                size_t off = 0;
                if (lr->skipping) {
                        char *e = memchr(buf, '\n', (size_t) n);
                        if (!e)
                                continue;
                        off = (size_t) (e - buf) + 1;
                        lr->skipping = false;
                }
                r = strbuf_append(&lr->pending, buf + off, (size_t) n - off);
                if (r < 0) {
                        /* Drop the oversized line up to its end. */
                        strbuf_reset(&lr->pending);
                        lr->skipping = true;
                        return r;
                }
        }
}

static void line_reader_done(struct line_reader *lr) {
        strbuf_done(&lr->pending);
        free(lr->line);
}

static void chat_help(void) {
        printf("  /clear   forget the conversation so far\n"
               "  /bye     end the chat (also Ctrl+D)\n"
               "  /help    this text\n");
}

int keeper_cmd_chat(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = {
                KEEPER_INFER_OPTIONS,
                { "system", required_argument, NULL, KEEPER_OPT_FIRST_LOCAL },
                KEEPER_GLOBAL_OPTIONS,
                {},
        };
        _cleanup_(keeper_infer_params_done) struct keeper_infer_params p;
        _cleanup_(json_object_putp) struct json_object *msgs = NULL;
        _cleanup_(line_reader_done) struct line_reader lr = { .pending = STRBUF_INIT(LINE_MAX_BYTES) };
        char *line = NULL;
        const char *system_msg = NULL;
        size_t base;
        bool interactive;
        int c, r, exit_code = KEEPER_EXIT_OK;

        keeper_infer_params_init(&p);
        while ((c = keeper_getopt(k, argc, argv, KEEPER_INFER_SHORT KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        help();
                        return KEEPER_EXIT_OK;
                }
                if (c == -2)
                        return KEEPER_EXIT_USAGE;
                if (c == KEEPER_OPT_FIRST_LOCAL) {
                        system_msg = optarg;
                        continue;
                }
                r = keeper_infer_option(k, "chat", &p, c, optarg);
                if (r < 0)
                        return KEEPER_EXIT_USAGE;
                if (r == 0)
                        return keeper_usage_error(k, "chat", "unexpected option");
        }
        if (optind < argc)
                return keeper_usage_error(k, "chat", "unexpected argument '%s'", argv[optind]);
        if (!p.model)
                return keeper_usage_error(k, "chat", "--model is required ('rbee model list' shows the ids)");
        if ((r = keeper_connect(k)) != 0)
                return r;

        msgs = json_object_new_array();
        if (!msgs || (system_msg && add_message(msgs, "system", system_msg, strlen(system_msg)) < 0))
                return keeper_error(k, "out of memory");
        base = json_object_array_length(msgs);
        interactive = k->in_tty && k->out_tty;
        if (interactive && !k->quiet)
                fprintf(stderr, "Chatting with %s on %s. /help for commands, /bye or Ctrl+D to end.\n", p.model,
                        keeper_hive_label(k));

        for (;;) {
                _cleanup_(keeper_infer_result_done) struct keeper_infer_result res = {};
                _cleanup_(json_object_putp) struct json_object *req = NULL;
                char job_id[64];

                if (interactive) {
                        fputs(k->out_color ? KEEPER_ANSI_BOLD ">>> " KEEPER_ANSI_RESET : ">>> ", stdout);
                        fflush(stdout);
                }
                r = read_line(&lr, &line);
                if (r == -E2BIG) {
                        keeper_error(k, "a message longer than 1 MiB was skipped");
                        continue;
                }
                if (r <= 0) {
                        if (interactive)
                                fputc('\n', stdout);
                        /* Ctrl+C at the prompt ends the chat. */
                        if (r == -EINTR)
                                exit_code = KEEPER_EXIT_INTERRUPTED;
                        else if (r < 0)
                                exit_code = keeper_error(k, "cannot read stdin: %s", strerror(-r));
                        break;
                }
                str_strip_trailing(line);
                if (!line[0])
                        continue;
                if (line[0] == '/') {
                        if (streq(line, "/bye") || streq(line, "/exit") || streq(line, "/quit"))
                                break;
                        if (streq(line, "/clear")) {
                                while (json_object_array_length(msgs) > base)
                                        json_object_array_del_idx(msgs, json_object_array_length(msgs) - 1, 1);
                                if (interactive)
                                        printf("Cleared the conversation.\n");
                                continue;
                        }
                        if (streq(line, "/help") || streq(line, "/?")) {
                                chat_help();
                                continue;
                        }
                        /* Anything else that starts with a slash is a message. */
                }
                if (add_message(msgs, "user", line, strlen(line)) < 0)
                        return keeper_error(k, "out of memory");

                for (;;) {
                        keeper_new_job_id(job_id, sizeof(job_id));
                        json_object_putp(&req);
                        req = NULL;
                        if (keeper_infer_request(&p, job_id, NULL, msgs, &req) < 0)
                                return keeper_error(k, "out of memory");
                        keeper_infer_result_done(&res);
                        res = (struct keeper_infer_result) {};
                        r = keeper_infer_run(k, &p, req, (k->json ? 0 : KEEPER_INFER_PRINT) | KEEPER_INFER_QUIET_CONTEXT,
                                             &res);
                        if (r < 0)
                                return keeper_report(k, r, p.model);
                        if (res.outcome != KEEPER_INFER_FAILED || !streq(res.error_code, "context_length_exceeded"))
                                break;
                        /* The conversation outgrew the model's context: forget the oldest exchange. */
                        if (json_object_array_length(msgs) < base + 3) {
                                keeper_error(k, "this message alone does not fit the context of %s: make it shorter, "
                                             "or lower --max-tokens", p.model);
                                break;
                        }
                        json_object_array_del_idx(msgs, base, 2);
                        keeper_note(k, "the conversation no longer fits the context of %s; forgetting its oldest "
                                    "exchange", p.model);
                }

                if (res.outcome == KEEPER_INFER_DONE) {
                        if (add_message(msgs, "assistant", res.text.data ? res.text.data : "", res.text.len) < 0)
                                return keeper_error(k, "out of memory");
                        if (!interactive && !k->json && (res.text.len == 0 || res.text.data[res.text.len - 1] != '\n')) {
                                fputc('\n', stdout);
                                fflush(stdout);
                        }
                        continue;
                }
                /* The question goes, so that the next one is not answered twice. */
                json_object_array_del_idx(msgs, json_object_array_length(msgs) - 1, 1);
                if (res.outcome == KEEPER_INFER_BROKEN_PIPE)
                        return KEEPER_EXIT_PIPE;
                if (res.outcome == KEEPER_INFER_CANCELLED && interactive) {
                        keeper_signals_reset();
                        continue;
                }
                if (res.outcome == KEEPER_INFER_CANCELLED) {
                        exit_code = KEEPER_EXIT_INTERRUPTED;
                        break;
                }
                if (!interactive) {
                        exit_code = KEEPER_EXIT_ERROR;
                        break;
                }
        }
        if (k->json) {
                _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
                if (!o)
                        return keeper_error(k, "out of memory");
                json_object_object_add(o, "model", json_object_new_string(p.model));
                json_object_object_add(o, "messages", json_object_get(msgs));
                keeper_print_json(k, o);
        }
        return exit_code;
}
