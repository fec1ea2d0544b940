/* SPDX-License-Identifier: MIT */
#pragma once

/* Slow-client (slowloris) defence for the libmicrohttpd daemons, which run a
 * thread per connection: a client that trickles its request holds a thread
 * and a connection slot, and libmicrohttpd's own timeout only measures
 * inactivity. The guard bounds the time to RECEIVE a request instead:
 *
 *   - its headers must be complete within header_timeout of the moment the
 *     server is ready for it (the accept, or the end of the previous response
 *     on a kept-alive connection: that is also the keep-alive idle limit);
 *   - its body must be complete within body_timeout of its headers;
 *   - once a request is in, nothing is cut: a stream may stay quiet as long
 *     as libmicrohttpd's idle timeout allows (prompt processing, a queue).
 *
 * A connection past its deadline is shut down (shutdown(2), not close: the
 * connection's thread sees EOF and libmicrohttpd closes and frees it). One
 * watcher thread sleeps on a condition variable until the nearest deadline.
 *
 * It also caps the connections one peer address may hold (IPv6 peers by /64,
 * the smallest block one user usually gets). Loopback and unix peers are
 * exempt unless cap_local is set: the CLI, the hive's own probes and a local
 * reverse proxy all come from there, and are as trusted as the machine.
 *
 * Wiring (see worker/server.c, hive/server.c): http_guard_accept() as (or
 * from) the accept policy, http_guard_notify() as MHD_OPTION_NOTIFY_CONNECTION,
 * both with the guard as cls; http_guard_headers_received() on the access
 * handler's first call, http_guard_request_received() on its last one (body
 * complete), http_guard_request_done() in MHD_OPTION_NOTIFY_COMPLETED; and
 * http_guard_free() only after MHD_stop_daemon(). */

#include <microhttpd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Defaults, in one place so that both daemons and their --help agree. Ten
 * seconds is far more than any real client needs for a few hundred bytes of
 * headers, even over a bad mobile link, and short enough that an attacker
 * needs a lot of addresses to hold many slots. Thirty seconds for a body lets
 * a full 8 MiB body through at about 2 Mbit/s; real prompts are kilobytes. */
#define HTTP_GUARD_HEADER_TIMEOUT_USEC (10u * 1000000u)
#define HTTP_GUARD_BODY_TIMEOUT_USEC (30u * 1000000u)

struct http_guard_config {
        uint64_t header_timeout_usec;   /* 0: no limit */
        uint64_t body_timeout_usec;     /* 0: no limit */
        unsigned max_conns_per_peer;    /* 0: no cap */
        bool cap_local;                 /* cap loopback and unix peers too */
};

/* One of the daemons' guard options by its long name ("header-timeout",
 * "body-timeout", "max-conns-per-peer", "cap-local-peers"; arg is NULL for
 * the last), from the command line: a bad value is reported on stderr,
 * "PROG: invalid value for --NAME: 'ARG' (what it takes)", and is -EINVAL. */
int http_guard_option(struct http_guard_config *cfg, const char *name, const char *arg);

struct http_guard_stats {
        uint64_t refused;               /* connections refused: the peer was at its cap */
        uint64_t timed_out;             /* connections cut: a request too slow to arrive */
        uint64_t idle_closed;           /* kept-alive connections closed unused after header_timeout */
};

struct http_guard;

/* Starts the watcher thread. -ENOMEM, or a negative errno from pthread_create(). */
int http_guard_new(const struct http_guard_config *cfg, struct http_guard **ret);
/* Stops the watcher. Call after MHD_stop_daemon() (every connection is gone
 * by then). Takes NULL; returns NULL. */
struct http_guard *http_guard_free(struct http_guard *g);

/* An MHD_AcceptPolicyCallback, cls = the guard: MHD_NO when the peer already
 * holds max_conns_per_peer connections (one warning per peer per minute). */
enum MHD_Result http_guard_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen);
/* An MHD_NotifyConnectionCallback, cls = the guard: registers and forgets
 * connections (their socket_context is the guard's). */
void http_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode toe);

/* From the connection's own thread; no-ops for a connection the guard does not know. */
void http_guard_headers_received(struct MHD_Connection *c);
void http_guard_request_received(struct MHD_Connection *c);
void http_guard_request_done(struct MHD_Connection *c);

void http_guard_get_stats(struct http_guard *g, struct http_guard_stats *ret);

/* For MHD_OPTION_EXTERNAL_LOGGER (cls unused): libmicrohttpd's messages at
 * debug level. It writes one for every connection that ends badly, which is
 * the very thing an attacker controls; the guard's own warnings say what
 * matters, once per peer. */
void http_guard_mhd_log(void *cls, const char *fmt, va_list ap);
