/* SPDX-License-Identifier: MIT */
#pragma once

/* The commands. Each takes argv starting at its own name and returns the
 * process exit code. */

#include "keeper.h"

int keeper_cmd_infer(struct keeper *k, int argc, char **argv);
int keeper_cmd_chat(struct keeper *k, int argc, char **argv);
int keeper_cmd_model(struct keeper *k, int argc, char **argv);
int keeper_cmd_worker(struct keeper *k, int argc, char **argv);
int keeper_cmd_hive(struct keeper *k, int argc, char **argv);
int keeper_cmd_ps(struct keeper *k, int argc, char **argv);

/* The global options, for every --help. */
extern const char keeper_global_help[];

/* Dispatch "rbee GROUP VERB ...": find verb in table and run it. */
struct keeper_verb {
        const char *name;
        int (*run)(struct keeper *k, int argc, char **argv);
};
int keeper_dispatch(struct keeper *k, const char *group, const struct keeper_verb *verbs, size_t n,
                    void (*help)(void), int argc, char **argv);
