/* SPDX-License-Identifier: MIT */
#pragma once

/* The worker's HTTP API over libmicrohttpd, one thread per connection (with
 * a cap): a streaming request's thread sleeps on its job's events and its
 * own socket at once, so it sees a client hang up right away. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http-guard.h"
#include "inference.h"
#include "metrics.h"

struct worker_server_config {
        int listen_fd;                  /* taken over */
        bool listen_is_unix;
        const char *api_key;            /* NULL: no key; then only loopback and unix peers */
        size_t api_key_len;
        unsigned max_connections;
        size_t max_body;
        unsigned idle_timeout_s;        /* once a request is in: streams may be quiet this long */
        struct http_guard_config guard; /* receiving a request, and connections per peer */
};

struct worker_server;

int worker_server_new(const struct worker_server_config *cfg, struct worker_inference *inf,
                      struct worker_metrics *metrics, struct worker_server **ret);
/* Stop accepting connections (the listening socket is closed; under socket
 * activation the manager keeps its copy, so new clients queue for the next start). */
void worker_server_quiesce(struct worker_server *s);
/* Wait until every stream has been handed its last byte or timeout_usec passed. */
int worker_server_drain(struct worker_server *s, uint64_t timeout_usec);
struct worker_server *worker_server_free(struct worker_server *s);
