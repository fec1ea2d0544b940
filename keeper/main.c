/* SPDX-License-Identifier: MIT */
/* rbee: the command-line client of rbee hives. */

#include <curl/curl.h>
#include <string.h>

#include "commands.h"
#include "signals.h"
#include "strutil.h"
#include "term.h"

static void help(void) {
        printf("Usage: rbee [GLOBAL OPTIONS] COMMAND [ARGS]\n"
               "\n"
               "Run language models on your own machines. rbee talks to rbee-hive, the\n"
               "daemon on each machine that keeps the models and starts their workers.\n"
               "\n"
               "Commands:\n"
               "  infer --model ID --prompt TEXT   generate text, streamed to stdout\n"
               "  chat --model ID                  an interactive chat\n"
               "  ps                               loaded models on each hive\n"
               "  model list|get|download|register|remove\n"
               "                                   the model catalog\n"
               "  worker list|spawn|stop|cleanup|logs\n"
               "                                   the workers (one per loaded model)\n"
               "  hive status|backends|list|add|remove\n"
               "                                   hives: health, hardware, and the set rbee knows\n"
               "  version                          rbee's version (and the hive's, if reachable)\n"
               "\n"
               "'rbee COMMAND --help' tells more.\n"
               "\n%s",
               keeper_global_help);
}

static int cmd_version(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = { KEEPER_GLOBAL_OPTIONS, {} };
        int c;

        while ((c = keeper_getopt(k, argc, argv, KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        printf("Usage: rbee version\n\nPrint rbee's version and the API version it speaks.\n\n%s",
                               keeper_global_help);
                        return KEEPER_EXIT_OK;
                }
                return KEEPER_EXIT_USAGE;
        }
        if (k->json) {
                printf("{\"version\":\"%s\",\"api_version\":%d}\n", RBEE_VERSION, KEEPER_API_VERSION);
                return KEEPER_EXIT_OK;
        }
        printf("rbee %s (hive API %d, %s)\n", RBEE_VERSION, KEEPER_API_VERSION, curl_version());
        return KEEPER_EXIT_OK;
}

static int run(struct keeper *k, int argc, char **argv) {
        static const struct option options[] = {
                KEEPER_GLOBAL_OPTIONS,
                { "version", no_argument, NULL, 'V' },
                {},
        };
        static const struct {
                const char *name;
                int (*run)(struct keeper *k, int argc, char **argv);
        } commands[] = {
                { "infer", keeper_cmd_infer },
                { "run", keeper_cmd_infer },
                { "chat", keeper_cmd_chat },
                { "model", keeper_cmd_model },
                { "models", keeper_cmd_model },
                { "worker", keeper_cmd_worker },
                { "workers", keeper_cmd_worker },
                { "hive", keeper_cmd_hive },
                { "hives", keeper_cmd_hive },
                { "ps", keeper_cmd_ps },
                { "version", cmd_version },
        };
        static char name[64];
        const char *cmd;
        int c;

        /* "+": stop at the command; its own parser takes the rest. */
        while ((c = keeper_getopt(k, argc, argv, "+V" KEEPER_GLOBAL_SHORT, options)) != -1) {
                if (c == 'h') {
                        help();
                        return KEEPER_EXIT_OK;
                }
                if (c == 'V')
                        return cmd_version(k, 1, argv);
                return KEEPER_EXIT_USAGE;
        }
        if (optind >= argc) {
                help();
                return KEEPER_EXIT_USAGE;
        }
        cmd = argv[optind];
        if (streq(cmd, "help")) {
                if (optind + 1 < argc) {
                        /* "rbee help model" is "rbee model --help". */
                        char *v[] = { argv[optind + 1], (char *) "--help", NULL };
                        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                                if (streq(commands[i].name, v[0])) {
                                        optind = 0;
                                        return commands[i].run(k, 2, v);
                                }
                        fprintf(stderr, "rbee: unknown command '%s'\nTry 'rbee --help'.\n", v[0]);
                        return KEEPER_EXIT_USAGE;
                }
                help();
                return KEEPER_EXIT_OK;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(commands[i].name, cmd)) {
                        snprintf(name, sizeof(name), "rbee %s", cmd);
                        argv[optind] = name;
                        argc -= optind;
                        argv += optind;
                        optind = 0;
                        return commands[i].run(k, argc, argv);
                }
        fprintf(stderr, "rbee: unknown command '%s'\nTry 'rbee --help'.\n", cmd);
        return KEEPER_EXIT_USAGE;
}

int main(int argc, char **argv) {
        struct keeper k;
        int r;

        keeper_term_setup();
        keeper_init(&k);
        r = keeper_signals_setup();
        if (r < 0) {
                fprintf(stderr, "rbee: cannot set up signal handling: %s\n", strerror(-r));
                return KEEPER_EXIT_ERROR;
        }
        argv[0] = (char *) "rbee";
        r = run(&k, argc, argv);
        fflush(stdout);
        keeper_done(&k);
        return r;
}
