/* SPDX-License-Identifier: MIT */
#pragma once

/* The hive's HTTP API (see hive/API.md), on libmicrohttpd with a thread per
 * connection (bounded): streams block on the job log or the worker socket. */

#include <stdbool.h>

#include "http-guard.h"

struct hive;
struct hive_server;

/* guard: request deadlines and the per-peer connection cap (common/http-guard.h). */
int hive_server_new(struct hive *h, int listen_fd, unsigned max_connections, const struct http_guard_config *guard,
                    struct hive_server **ret);
/* Stop accepting connections (the listening socket goes back to the caller). */
void hive_server_quiesce(struct hive_server *s);
struct hive_server *hive_server_free(struct hive_server *s);
