/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "commands.h"
#include "strutil.h"

const char keeper_global_help[] =
        "Global options:\n"
        "      --hive NAME|URL       the hive to talk to (also $RBEE_HIVE; default: the\n"
        "                            configured default, else " KEEPER_LOCAL_URL ")\n"
        "      --api-key KEY         the hive's API key (prefer --api-key-file or $RBEE_API_KEY)\n"
        "      --api-key-file FILE   read the API key from FILE\n"
        "      --json                machine-readable output on stdout\n"
        "      --no-color            no colors (also $NO_COLOR)\n"
        "  -q, --quiet               no progress or notes on stderr\n"
        "  -v, --verbose             more detail on stderr\n"
        "  -h, --help                help for the command\n"
        "\n"
        "Exit status: 0 ok, 1 error, 2 usage error, 130 interrupted. See rbee(1).\n";

int keeper_dispatch(struct keeper *k, const char *group, const struct keeper_verb *verbs, size_t n,
                    void (*help)(void), int argc, char **argv) {
        static char name[128];
        const char *verb;

        if (argc < 2) {
                fprintf(stderr, "rbee %s: missing command\n", group);
                fprintf(stderr, "Try 'rbee %s --help'.\n", group);
                return KEEPER_EXIT_USAGE;
        }
        verb = argv[1];
        if (streq(verb, "--help") || streq(verb, "-h") || streq(verb, "help")) {
                help();
                return KEEPER_EXIT_OK;
        }
        for (size_t i = 0; i < n; i++)
                if (streq(verbs[i].name, verb)) {
                        /* getopt names argv[0] in its messages. */
                        snprintf(name, sizeof(name), "rbee %s %s", group, verb);
                        argv[1] = name;
                        optind = 0;
                        return verbs[i].run(k, argc - 1, argv + 1);
                }
        return keeper_usage_error(k, group, "unknown command '%s'", verb);
}
