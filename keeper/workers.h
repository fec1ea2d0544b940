/* SPDX-License-Identifier: MIT */
#pragma once

/* Worker objects from the hive (GET /v1/workers) as table cells, shared by
 * `rbee worker list` and `rbee ps`, and the names systemd gives them. */

#include <json-c/json.h>

#include "human.h"

struct keeper_worker_view {
        const char *model, *state, *unit;       /* point into the object */
        char pid[24];
        char memory[KEEPER_HUMAN_MAX];
        char processor[64];
        char requests[24];
        char idle[KEEPER_HUMAN_MAX];
        char until[KEEPER_HUMAN_MAX + 16];
};

void keeper_worker_view(struct json_object *w, struct keeper_worker_view *ret);
/* ANSI color for a state (ready green, starting/loading yellow, failed red). */
const char *keeper_worker_state_color(const char *state);

/* "rbee-worker@<id escaped as systemd-escape does>.service". */
int keeper_worker_unit_name(const char *id, char **ret);
/* The process-mode log of a worker, from its socket path:
 * <workers>/<id>.sock -> <workers>/<id>.log (as the hive names them). */
int keeper_worker_log_path(const char *socket, char **ret);
