/* SPDX-License-Identifier: MIT */
/* rbee-generate: generate text from a GGUF model, streaming it to stdout
 * with timings on stderr. Flags follow llama.cpp's where they overlap. */

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "macros.h"
#include "rbee-engine.h"

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
        interrupted = 1;
}

static void help(void) {
        printf("Usage: rbee-generate -m FILE [-p PROMPT | -f FILE] [options]\n\n"
               "Generate text from a GGUF model on the CPU.\n\n"
               "  -m, --model FILE        GGUF model to load\n"
               "  -p, --prompt TEXT       prompt (default: empty, BOS only)\n"
               "  -f, --file FILE         read the prompt from FILE\n"
               "  -n, --n-predict N       tokens to generate (default 128, -1 = until EOS)\n"
               "      --temp T            temperature (default 0.8; 0 = greedy)\n"
               "      --top-k K           top-k (default 40; 0 = off)\n"
               "      --top-p P           top-p (default 0.95; 1 = off)\n"
               "      --min-p P           min-p (default 0.05; 0 = off)\n"
               "      --repeat-penalty F  repetition penalty (default 1.0 = off)\n"
               "      --repeat-last-n N   tokens the penalty looks back on (default 64)\n"
               "  -s, --seed N            random seed (default: random)\n"
               "  -t, --threads N         threads (default: all CPUs)\n"
               "  -c, --ctx-size N        context size (default: the model's, at most 4096)\n"
               "  -b, --batch-size N      prompt tokens per forward pass (default 512)\n"
               "      --device N          run on CUDA device N (default: the CPU)\n"
               "      --chat              treat the prompt as a user message in the model's chat template\n"
               "      --system TEXT       system message for --chat\n"
               "      --chat-format NAME  override the chat template (chatml, llama2, llama3, zephyr, phi3, ...)\n"
               "      --stop TEXT         stop when TEXT appears (repeatable)\n"
               "      --ignore-eos        keep going after end-of-sequence\n"
               "      --no-bos            do not add BOS\n"
               "      --special           parse special tokens in the prompt\n"
               "      --no-echo           do not print the prompt\n"
               "      --ids               print generated token ids to stderr at the end\n"
               "  -v, --verbose           engine log on stderr\n"
               "  -h, --help              this help\n");
}

struct out_state {
        int32_t *ids;
        size_t n_ids, cap;
};

static int on_token(int32_t token, const char *text, size_t len, void *userdata) {
        struct out_state *o = userdata;

        if (len > 0) {
                fwrite(text, 1, len, stdout);
                fflush(stdout);
        }
        if (token >= 0 && o->n_ids < o->cap)
                o->ids[o->n_ids++] = token;
        return interrupted ? 1 : 0;
}

int main(int argc, char **argv) {
        enum { ARG_TEMP = 256, ARG_TOPK, ARG_TOPP, ARG_MINP, ARG_REP, ARG_REPN, ARG_CHAT, ARG_SYSTEM,
               ARG_FORMAT, ARG_STOP, ARG_IGNORE_EOS, ARG_NO_BOS, ARG_SPECIAL, ARG_NO_ECHO, ARG_IDS, ARG_DEVICE };
        static const struct option opts[] = {
                { "model", required_argument, NULL, 'm' },
                { "prompt", required_argument, NULL, 'p' },
                { "file", required_argument, NULL, 'f' },
                { "n-predict", required_argument, NULL, 'n' },
                { "temp", required_argument, NULL, ARG_TEMP },
                { "top-k", required_argument, NULL, ARG_TOPK },
                { "top-p", required_argument, NULL, ARG_TOPP },
                { "min-p", required_argument, NULL, ARG_MINP },
                { "repeat-penalty", required_argument, NULL, ARG_REP },
                { "repeat-last-n", required_argument, NULL, ARG_REPN },
                { "seed", required_argument, NULL, 's' },
                { "threads", required_argument, NULL, 't' },
                { "ctx-size", required_argument, NULL, 'c' },
                { "batch-size", required_argument, NULL, 'b' },
                { "device", required_argument, NULL, ARG_DEVICE },
                { "chat", no_argument, NULL, ARG_CHAT },
                { "system", required_argument, NULL, ARG_SYSTEM },
                { "chat-format", required_argument, NULL, ARG_FORMAT },
                { "stop", required_argument, NULL, ARG_STOP },
                { "ignore-eos", no_argument, NULL, ARG_IGNORE_EOS },
                { "no-bos", no_argument, NULL, ARG_NO_BOS },
                { "special", no_argument, NULL, ARG_SPECIAL },
                { "no-echo", no_argument, NULL, ARG_NO_ECHO },
                { "ids", no_argument, NULL, ARG_IDS },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        _cleanup_(rbee_model_freep) rbee_model *model = NULL;
        _cleanup_(rbee_context_freep) rbee_context *ctx = NULL;
        _cleanup_(freep) char *prompt_buf = NULL;
        _cleanup_(freep) char *chat_prompt = NULL;
        _cleanup_(freep) int32_t *ids = NULL;
        struct rbee_generate_params gp;
        struct rbee_context_params cp;
        struct rbee_model_params mp;
        const char *model_path = NULL, *prompt = "", *system = NULL, *format = NULL;
        const char *stops[16];
        size_t n_stops = 0;
        bool chat = false, echo = true, verbose = false, show_ids = false;
        long l;
        double d;
        int c, r;

        rbee_generate_default_params(&gp);
        rbee_context_default_params(&cp);
        rbee_model_default_params(&mp);

        while ((c = getopt_long(argc, argv, "m:p:f:n:s:t:c:b:vh", opts, NULL)) >= 0) {
                switch (c) {
                case 'm':
                        model_path = optarg;
                        break;
                case 'p':
                        prompt = optarg;
                        break;
                case 'f': {
                        FILE *f = fopen(optarg, "re");
                        size_t n;
                        if (!f) {
                                fprintf(stderr, "rbee-generate: cannot open prompt file %s: %m\n", optarg);
                                return 1;
                        }
                        free(prompt_buf);
                        prompt_buf = malloc((64u << 20) + 1);
                        if (!prompt_buf) {
                                fclose(f);
                                fprintf(stderr, "rbee-generate: out of memory\n");
                                return 1;
                        }
                        n = fread(prompt_buf, 1, 64u << 20, f);
                        fclose(f);
                        prompt_buf[n] = 0;
                        prompt = prompt_buf;
                        break;
                }
                case 'n':
                        if (cli_parse_int(optarg, -1, 1 << 24, &l) < 0)
                                goto bad;
                        gp.max_tokens = l;
                        break;
                case ARG_TEMP:
                        if (cli_parse_float(optarg, 0, 100, &d) < 0)
                                goto bad;
                        gp.sampling.temperature = d;
                        break;
                case ARG_TOPK:
                        if (cli_parse_int(optarg, 0, 1 << 24, &l) < 0)
                                goto bad;
                        gp.sampling.top_k = l;
                        break;
                case ARG_TOPP:
                        if (cli_parse_float(optarg, 0, 1, &d) < 0)
                                goto bad;
                        gp.sampling.top_p = d;
                        break;
                case ARG_MINP:
                        if (cli_parse_float(optarg, 0, 1, &d) < 0)
                                goto bad;
                        gp.sampling.min_p = d;
                        break;
                case ARG_REP:
                        if (cli_parse_float(optarg, 0, 10, &d) < 0)
                                goto bad;
                        gp.sampling.repeat_penalty = d;
                        break;
                case ARG_REPN:
                        if (cli_parse_int(optarg, -1, 1 << 24, &l) < 0)
                                goto bad;
                        gp.sampling.repeat_last_n = l;
                        break;
                case 's':
                        if (cli_parse_u64(optarg, &gp.sampling.seed) < 0)
                                goto bad;
                        break;
                case 't':
                        if (cli_parse_int(optarg, 1, 1024, &l) < 0)
                                goto bad;
                        cp.n_threads = l;
                        break;
                case 'c':
                        if (cli_parse_int(optarg, 1, 1 << 20, &l) < 0)
                                goto bad;
                        cp.n_ctx = l;
                        break;
                case 'b':
                        if (cli_parse_int(optarg, 1, 1 << 16, &l) < 0)
                                goto bad;
                        cp.n_batch = l;
                        break;
                case ARG_DEVICE:
                        if (cli_parse_int(optarg, 0, 1023, &l) < 0)
                                goto bad;
                        cp.backend = RBEE_BACKEND_CUDA;
                        cp.device = l;
                        break;
                case ARG_CHAT:
                        chat = true;
                        break;
                case ARG_SYSTEM:
                        system = optarg;
                        break;
                case ARG_FORMAT:
                        format = optarg;
                        chat = true;
                        break;
                case ARG_STOP:
                        if (n_stops >= ELEMENTSOF(stops)) {
                                fprintf(stderr, "rbee-generate: at most %zu --stop strings\n", ELEMENTSOF(stops));
                                return 2;
                        }
                        if (!*optarg)
                                goto bad;
                        stops[n_stops++] = optarg;
                        break;
                case ARG_IGNORE_EOS:
                        gp.ignore_eos = true;
                        break;
                case ARG_NO_BOS:
                        gp.add_bos = false;
                        break;
                case ARG_SPECIAL:
                        gp.parse_special = true;
                        break;
                case ARG_NO_ECHO:
                        echo = false;
                        break;
                case ARG_IDS:
                        show_ids = true;
                        break;
                case 'v':
                        verbose = true;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "Try 'rbee-generate --help'.\n");
                        return 2;
                }
                continue;
        bad:
                fprintf(stderr, "rbee-generate: invalid value '%s' for %s\n", optarg, argv[optind - 1]);
                return 2;
        }
        if (optind < argc) {
                fprintf(stderr, "rbee-generate: unexpected argument '%s'\n", argv[optind]);
                return 2;
        }
        if (!model_path) {
                fprintf(stderr, "rbee-generate: no model given (-m FILE); see --help\n");
                return 2;
        }

        rbee_set_log(cli_log_stderr, NULL, verbose ? RBEE_LOG_DEBUG : RBEE_LOG_WARNING);

        char err[512];
        r = rbee_model_load(model_path, &mp, &model, err, sizeof(err));
        if (r < 0) {
                fprintf(stderr, "rbee-generate: cannot load model: %s\n", err[0] ? err : strerror(-r));
                return 1;
        }
        const struct rbee_model_info *info = rbee_model_get_info(model);

        if (chat) {
                struct rbee_chat_template tmpl = {};
                struct rbee_chat_message msgs[2];
                size_t n = 0;

                if (format)
                        r = rbee_chat_format_from_name(format, &tmpl.format);
                else
                        r = rbee_chat_template_detect(info->chat_template, &tmpl);
                if (r < 0) {
                        if (format)
                                fprintf(stderr, "rbee-generate: unknown chat format '%s'\n", format);
                        else if (r == -ENOENT)
                                fprintf(stderr, "rbee-generate: the model has no chat template; pass --chat-format NAME\n");
                        else
                                fprintf(stderr, "rbee-generate: the model's chat template is not one rbee knows; pass --chat-format NAME\n");
                        return 1;
                }
                if (system)
                        msgs[n++] = (struct rbee_chat_message) { "system", system };
                msgs[n++] = (struct rbee_chat_message) { "user", prompt };
                r = rbee_chat_template_apply(&tmpl, msgs, n, true, &chat_prompt);
                if (r < 0) {
                        fprintf(stderr, "rbee-generate: cannot apply the chat template: %s\n", strerror(-r));
                        return 1;
                }
                prompt = chat_prompt;
                gp.parse_special = true;
                for (const char *const *s = rbee_chat_stop_strings(tmpl.format); s && *s && n_stops < ELEMENTSOF(stops); s++)
                        stops[n_stops++] = *s;
                echo = false;
        }
        gp.stop = stops;
        gp.n_stop = n_stops;

        r = rbee_context_new(model, &cp, &ctx);
        if (r < 0) {
                fprintf(stderr, "rbee-generate: cannot create a context of %u tokens: %s\n", cp.n_ctx, strerror(-r));
                return 1;
        }

        struct out_state o = { .cap = gp.max_tokens >= 0 ? (size_t) gp.max_tokens : rbee_context_n_ctx(ctx) };
        ids = calloc(o.cap + 1, sizeof(int32_t));
        if (!ids)
                return 1;
        o.ids = ids;
        gp.on_token = on_token;
        gp.userdata = &o;

        struct sigaction sa = { .sa_handler = on_sigint };
        sigaction(SIGINT, &sa, NULL);

        if (echo) {
                fputs(prompt, stdout);
                fflush(stdout);
        }

        struct rbee_generate_result res;
        r = rbee_generate(ctx, prompt, &gp, &res);
        if (r < 0) {
                fprintf(stderr, "\nrbee-generate: generation failed: %s\n",
                        r == -E2BIG ? "the prompt does not fit in the context (raise -c)" : strerror(-r));
                return 1;
        }
        fflush(stdout);
        if (show_ids) {
                for (size_t i = 0; i < o.n_ids; i++)
                        fprintf(stderr, "%s%d", i ? " " : "", ids[i]);
                fputc('\n', stderr);
        }
        fprintf(stderr, "\n\nprompt: %u tokens in %.1f ms (%.2f tok/s)\n", res.n_prompt - res.n_cached, res.prompt_ms,
                res.prompt_ms > 0 ? (res.n_prompt - res.n_cached) * 1e3 / res.prompt_ms : 0.0);
        fprintf(stderr, "generation: %u tokens in %.1f ms (%.2f tok/s), stop: %s\n", res.n_generated, res.gen_ms,
                res.gen_ms > 0 ? res.n_generated * 1e3 / res.gen_ms : 0.0, rbee_stop_reason_name(res.stop_reason));
        return res.stop_reason == RBEE_STOP_CANCELLED ? 130 : 0;
}
