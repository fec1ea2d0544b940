/* SPDX-License-Identifier: MIT */
#pragma once

/* A small blocking HTTP/1.1 client for talking to workers over their unix
 * sockets: one request per connection (Connection: close), Content-Length,
 * chunked and until-close bodies, decoded as they arrive so that streams are
 * relayed without buffering. hive_wconn_abort() may be called from another
 * thread to wake a blocked reader (it shuts the socket down). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct hive_wconn;

/* Connect and send the request. body may be NULL. -ECONNREFUSED/-ENOENT when
 * nobody listens. */
int hive_wconn_open(const char *socket_path, const char *method, const char *path, const char *content_type,
                    const char *body, size_t len, int timeout_ms, struct hive_wconn **ret);
/* The same over a connected socket whose request went out already (tests);
 * c owns fd from then on. */
int hive_wconn_from_fd(int fd, struct hive_wconn **ret);
/* Read the status line and headers: the status, or -ECONNRESET when the
 * worker closed without answering, -ETIMEDOUT, -EBADMSG. */
int hive_wconn_read_head(struct hive_wconn *c, int timeout_ms);
int hive_wconn_status(const struct hive_wconn *c);
/* After the head: a small Content-Length body, buffered but not consumed
 * (the reads still return it). -E2BIG for chunked, until-close or large
 * bodies; -ECONNRESET when it ends early. */
int hive_wconn_peek_body(struct hive_wconn *c, int timeout_ms, const char **ret, size_t *ret_len);
/* A response header (case-insensitive): the first of that name, up to the
 * end of its line (no CR or LF), at most 1023 bytes; or NULL. */
const char *hive_wconn_header(struct hive_wconn *c, const char *name);
/* Decoded body bytes: > 0 bytes, 0 at the proper end of the body,
 * -ECONNRESET when the connection ended early (a worker that died),
 * -ETIMEDOUT (timeout_ms < 0 waits forever), -EBADMSG for bad framing. */
ssize_t hive_wconn_read(struct hive_wconn *c, void *buf, size_t n, int timeout_ms);
/* Whole body into a NUL-terminated buffer (at most max bytes). */
int hive_wconn_read_all(struct hive_wconn *c, size_t max, int timeout_ms, char **ret, size_t *ret_len);
/* Until called again with a negative fd, the reads also watch fd (the client this
 * request is for): when its peer hangs up they fail with -ECANCELED, so that
 * a gone client stops waiting at once instead of when the worker answers. */
void hive_wconn_watch(struct hive_wconn *c, int fd);
void hive_wconn_abort(struct hive_wconn *c);
struct hive_wconn *hive_wconn_free(struct hive_wconn *c);

static inline void hive_wconn_freep(struct hive_wconn **c) {
        hive_wconn_free(*c);
}

/* GET path and return the status and body (small bodies only). */
int hive_wconn_get(const char *socket_path, const char *path, int timeout_ms, int *ret_status, char **ret_body);
