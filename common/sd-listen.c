/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "macros.h"
#include "sd-listen.h"
#include "strutil.h"

static int parse_unix(const char *path, bool abstract, struct listen_address *ret) {
        struct listen_address a = { .sa.un.sun_family = AF_UNIX };
        size_t n = strlen(path);

        if (n == 0 || n >= sizeof(a.sa.un.sun_path))
                return -EINVAL;
        if (abstract) {
                /* Abstract names start with a NUL byte and are not NUL-terminated. */
                memcpy(a.sa.un.sun_path + 1, path, n);
                a.len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + n);
        } else {
                memcpy(a.sa.un.sun_path, path, n);
                a.len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1);
        }
        *ret = a;
        return 0;
}

int listen_address_parse(const char *s, struct listen_address *ret) {
        _cleanup_(freep) char *host = NULL;
        const char *colon, *port;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
        struct addrinfo *res = NULL;
        int64_t p;
        int r;

        if (!s || !*s)
                return -EINVAL;
        if (str_startswith(s, "unix:"))
                return parse_unix(s + 5, false, ret);
        if (s[0] == '/')
                return parse_unix(s, false, ret);
        if (s[0] == '@')
                return parse_unix(s + 1, true, ret);

        if (s[0] == '[') {
                const char *close = strchr(s, ']');
                if (!close || close[1] != ':')
                        return -EINVAL;
                host = strndup(s + 1, close - s - 1);
                port = close + 2;
                hints.ai_family = AF_INET6;
                hints.ai_flags |= AI_NUMERICHOST;
        } else {
                colon = strrchr(s, ':');
                if (!colon || strchr(s, ':') != colon)
                        return -EINVAL;
                host = strndup(s, colon - s);
                port = colon + 1;
        }
        if (!host)
                return -ENOMEM;
        if (!*host)
                return -EINVAL;
        r = parse_int64(port, 0, 65535, &p);
        if (r < 0)
                return -EINVAL;
        if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
                return -EADDRNOTAVAIL;
        if (res->ai_addrlen > sizeof(ret->sa)) {
                freeaddrinfo(res);
                return -EINVAL;
        }
        memset(ret, 0, sizeof(*ret));
        memcpy(&ret->sa, res->ai_addr, res->ai_addrlen);
        ret->len = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
}

bool sockaddr_is_local(const struct sockaddr *sa, socklen_t len) {
        static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

        if (!sa || len < sizeof(sa_family_t))
                return false;
        switch (sa->sa_family) {
        case AF_UNIX:
                return true;
        case AF_INET:
                if (len < sizeof(struct sockaddr_in))
                        return false;
                return (ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr) >> 24) == 127;
        case AF_INET6: {
                if (len < sizeof(struct sockaddr_in6))
                        return false;
                const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;
                if (IN6_IS_ADDR_LOOPBACK(a))
                        return true;
                return memcmp(a->s6_addr, v4mapped, 12) == 0 && a->s6_addr[12] == 127;
        }
        default:
                return false;
        }
}

int sockaddr_to_string(const struct sockaddr *sa, socklen_t len, char *buf, size_t n) {
        char host[INET6_ADDRSTRLEN];

        if (!sa || len < sizeof(sa_family_t))
                return -EINVAL;
        switch (sa->sa_family) {
        case AF_UNIX: {
                const struct sockaddr_un *un = (const struct sockaddr_un *) sa;
                size_t pl = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
                if (pl == 0)
                        snprintf(buf, n, "unix:(unnamed)");
                else if (un->sun_path[0] == 0)
                        snprintf(buf, n, "@%.*s", (int) (pl - 1), un->sun_path + 1);
                else
                        snprintf(buf, n, "%.*s", (int) strnlen(un->sun_path, pl), un->sun_path);
                return 0;
        }
        case AF_INET: {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                snprintf(buf, n, "%s:%u", host, ntohs(in->sin_port));
                return 0;
        }
        case AF_INET6: {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                snprintf(buf, n, "[%s]:%u", host, ntohs(in6->sin6_port));
                return 0;
        }
        default:
                snprintf(buf, n, "(family %d)", sa->sa_family);
                return 0;
        }
}

/* A socket file is stale when connecting to it is refused. */
static int remove_stale_socket(const char *path) {
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        struct stat st;
        int fd, r;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        strncpy(un.sun_path, path, sizeof(un.sun_path) - 1);
        r = connect(fd, (struct sockaddr *) &un, sizeof(un));
        close(fd);
        if (r == 0)
                return -EADDRINUSE;
        if (errno != ECONNREFUSED)
                return -errno;
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

int listen_address_bind(const struct listen_address *a, int backlog, int *ret_fd) {
        _cleanup_(closep) int fd = -EBADF;
        int one = 1, r;

        if (a->sa.sa.sa_family == AF_UNIX && a->sa.un.sun_path[0] != 0) {
                r = remove_stale_socket(a->sa.un.sun_path);
                if (r < 0)
                        return r;
        }
        fd = socket(a->sa.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (a->sa.sa.sa_family != AF_UNIX)
                (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (a->sa.sa.sa_family == AF_INET6)
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, &a->sa.sa, a->len) < 0)
                return -errno;
        if (listen(fd, backlog) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int listen_fd_from_manager(int *ret_fd) {
        int n, r;

        n = sd_listen_fds(true);
        if (n < 0)
                return n;
        if (n == 0)
                return -ENOENT;
        if (n > 1) {
                for (int i = 0; i < n; i++)
                        close(SD_LISTEN_FDS_START + i);
                return -EINVAL;
        }
        r = sd_is_socket(SD_LISTEN_FDS_START, AF_UNSPEC, SOCK_STREAM, 1);
        if (r <= 0) {
                close(SD_LISTEN_FDS_START);
                return r < 0 ? r : -EINVAL;
        }
        (void) fcntl(SD_LISTEN_FDS_START, F_SETFD, FD_CLOEXEC);
        *ret_fd = SD_LISTEN_FDS_START;
        return 0;
}

int listen_fd_is_local(int fd, bool *ret) {
        union sockaddr_union sa;
        socklen_t len = sizeof(sa);

        if (getsockname(fd, &sa.sa, &len) < 0)
                return -errno;
        *ret = sockaddr_is_local(&sa.sa, len);
        return 0;
}

int listen_fd_describe(int fd, char *buf, size_t n) {
        union sockaddr_union sa;
        socklen_t len = sizeof(sa);

        if (getsockname(fd, &sa.sa, &len) < 0)
                return -errno;
        return sockaddr_to_string(&sa.sa, len, buf, n);
}
