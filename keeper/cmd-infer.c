/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "infer.h"
#include "json-util.h"
#include "strutil.h"

#define PROMPT_MAX (8 * 1024 * 1024)

static void help(void) {
        printf("Usage: rbee infer --model ID [--prompt TEXT | TEXT | < FILE] [OPTIONS]\n"
               "\n"
               "Run one prompt on a hive and stream the answer to stdout as it is generated.\n"
               "Worker start-up progress goes to stderr. Ctrl+C cancels the job on the hive\n"
               "(exit 130); a second Ctrl+C exits at once.\n"
               "\n"
               "  -m, --model ID            model id from 'rbee model list' (required)\n"
               "  -p, --prompt TEXT         the prompt (also: the first argument, or stdin)\n"
               "  -n, --max-tokens N        stop after N tokens\n"
               "  -t, --temperature T       sampling temperature (0 = greedy)\n"
               "      --top-p P             nucleus sampling\n"
               "      --top-k K             top-k sampling\n"
               "  -s, --seed S              sampling seed, for repeatable output\n"
               "      --stop TEXT           stop at TEXT (repeatable)\n"
               "      --backend B           cpu, cuda, ... ('rbee hive backends')\n"
               "      --device D            device index for the backend\n"
               "      --keep-alive DUR      keep the worker loaded this long after (5m, 1h, 0, -1)\n"
               "      --stall-timeout DUR   cancel when no token comes for DUR (default 120s, 0 = never)\n"
               "\n%s",
               keeper_global_help);
}

static int read_stdin(char **ret) {
        struct strbuf b = STRBUF_INIT(PROMPT_MAX);
        char buf[65536];
        size_t n;
        int r;

        while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
                if ((r = strbuf_append(&b, buf, n)) < 0) {
                        strbuf_done(&b);
                        return r;
                }
        if (ferror(stdin)) {
                strbuf_done(&b);
                return -EIO;
        }
        return strbuf_steal(&b, ret, NULL);
}

static int emit_json(struct keeper *k, const struct keeper_infer_params *p, struct keeper_infer_result *res) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "job_id", json_object_new_string(res->job_id));
        json_object_object_add(o, "model", json_object_new_string(p->model));
        json_object_object_add(o, "hive", json_object_new_string(keeper_http_base_url(k->http)));
        json_object_object_add(o, "text", json_object_new_string_len(res->text.data ? res->text.data : "",
                                                                      (int) res->text.len));
        json_object_object_add(o, "tokens_received", json_object_new_int64((int64_t) res->n_tokens));
        json_object_object_add(o, "cancelled", json_object_new_boolean(res->outcome == KEEPER_INFER_CANCELLED ||
                                                                       res->outcome == KEEPER_INFER_STALLED));
        if (res->outcome == KEEPER_INFER_STALLED)
                json_object_object_add(o, "stalled", json_object_new_boolean(1));
        if (res->end) {
                json_object_object_foreach(res->end, key, val) {
                        if (!streq(key, "job_id"))
                                json_object_object_add(o, key, json_object_get(val));
                }
        }
        return keeper_print_json(k, o);
}

int keeper_cmd_infer(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = {
                KEEPER_INFER_OPTIONS,
                { "prompt", required_argument, NULL, 'p' },
                KEEPER_GLOBAL_OPTIONS,
                {},
        };
        _cleanup_(keeper_infer_result_done) struct keeper_infer_result res = {};
        _cleanup_(json_object_putp) struct json_object *req = NULL;
        _cleanup_(freep) char *stdin_prompt = NULL;
        _cleanup_(keeper_infer_params_done) struct keeper_infer_params p;
        const char *prompt = NULL;
        char job_id[64];
        int c, r;

        keeper_infer_params_init(&p);
        while ((c = keeper_getopt(k, argc, argv, "p:" KEEPER_INFER_SHORT KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        help();
                        return KEEPER_EXIT_OK;
                }
                if (c == -2)
                        return KEEPER_EXIT_USAGE;
                if (c == 'p') {
                        prompt = optarg;
                        continue;
                }
                r = keeper_infer_option(k, "infer", &p, c, optarg);
                if (r < 0)
                        return KEEPER_EXIT_USAGE;
                if (r == 0)
                        return keeper_usage_error(k, "infer", "unexpected option");
        }

        if (optind < argc) {
                if (prompt || optind + 1 < argc)
                        return keeper_usage_error(k, "infer", "give the prompt once (quote it when it has spaces)");
                prompt = argv[optind];
        }
        if (!p.model)
                return keeper_usage_error(k, "infer", "--model is required ('rbee model list' shows the ids)");
        if (!prompt) {
                if (k->in_tty)
                        return keeper_usage_error(k, "infer", "no prompt: use --prompt TEXT, or pipe it on stdin");
                r = read_stdin(&stdin_prompt);
                if (r < 0)
                        return keeper_error(k, "cannot read the prompt from stdin: %s",
                                            r == -E2BIG ? "larger than 8 MiB" : strerror(-r));
                prompt = stdin_prompt;
        }
        if (!*prompt)
                return keeper_usage_error(k, "infer", "the prompt is empty");

        if ((r = keeper_connect(k)) != 0)
                return r;
        keeper_new_job_id(job_id, sizeof(job_id));
        if (keeper_infer_request(&p, job_id, prompt, NULL, &req) < 0)
                return keeper_error(k, "out of memory");

        r = keeper_infer_run(k, &p, req, k->json ? 0 : KEEPER_INFER_PRINT, &res);
        if (r < 0)
                return keeper_report(k, r, p.model);
        if (k->json && res.outcome != KEEPER_INFER_FAILED && res.outcome != KEEPER_INFER_BROKEN_PIPE)
                emit_json(k, &p, &res);
        switch (res.outcome) {
        case KEEPER_INFER_DONE:
                return KEEPER_EXIT_OK;
        case KEEPER_INFER_CANCELLED:
                return KEEPER_EXIT_INTERRUPTED;
        case KEEPER_INFER_BROKEN_PIPE:
                return KEEPER_EXIT_PIPE;
        default:
                return KEEPER_EXIT_ERROR;
        }
}
