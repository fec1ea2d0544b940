/* SPDX-License-Identifier: MIT */
#pragma once

/* Listening sockets for the daemons: take one from the service manager
 * (sd_listen_fds(), which the hive's process mode imitates), or bind one from
 * an address string:
 *   "HOST:PORT", "[IPV6]:PORT"    TCP (HOST may be a name: resolved, first answer)
 *   "/path", "unix:/path"         unix stream socket (a stale socket file is replaced)
 *   "@name"                       unix socket in the abstract namespace */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

union sockaddr_union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage storage;
};

struct listen_address {
        union sockaddr_union sa;
        socklen_t len;
};

/* -EINVAL for a malformed address, -EADDRNOTAVAIL when a host name does not resolve. */
int listen_address_parse(const char *s, struct listen_address *ret);
/* Unix sockets and loopback addresses (127/8, ::1, ::ffff:127/104). */
bool sockaddr_is_local(const struct sockaddr *sa, socklen_t len);
int sockaddr_to_string(const struct sockaddr *sa, socklen_t len, char *buf, size_t n);

/* Create, bind and listen (close-on-exec, non-blocking). For a unix path an
 * existing socket file nobody accepts on is removed first; a live one gives -EADDRINUSE. */
int listen_address_bind(const struct listen_address *a, int backlog, int *ret_fd);

/* The single stream socket passed by the service manager: 0 and *ret_fd set,
 * -ENOENT when none was passed, -EINVAL for more than one or a socket that is
 * not a listening stream socket. Unsets LISTEN_* in the environment. */
int listen_fd_from_manager(int *ret_fd);

/* Is the listening socket fd bound to a unix or loopback address? */
int listen_fd_is_local(int fd, bool *ret);
int listen_fd_describe(int fd, char *buf, size_t n);
