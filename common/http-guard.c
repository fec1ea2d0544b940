/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http-guard.h"
#include "logging.h"
#include "macros.h"
#include "sd-listen.h"
#include "strutil.h"

/* One warning per peer and kind at most this often; past WARN_SLOTS peers
 * warned about within the interval, the rest are counted but not logged. */
#define WARN_INTERVAL_USEC (60u * 1000000u)
#define WARN_SLOTS 64

enum phase {
        PHASE_HEADERS,                  /* a new connection: waiting for the first request's headers */
        PHASE_BODY,                     /* headers in, waiting for the rest of the body */
        PHASE_ACTIVE,                   /* the request is in: being answered, no deadline */
        PHASE_IDLE,                     /* kept alive after a response: waiting for the next request */
};

enum warn_kind {
        WARN_REFUSED,
        WARN_SLOW,
};

/* What the cap counts: an IPv4 address, an IPv6 /64 (an IPv4-mapped one as
 * IPv4), or "some unix socket peer" (they all look alike). */
struct peer_key {
        int family;
        uint8_t addr[16];
};

struct peer {
        struct peer_key key;
        struct peer *prev, *next;
        unsigned n_conns;
};

struct conn {
        struct http_guard *guard;
        struct conn *prev, *next;
        struct peer *peer;
        int fd;
        enum phase phase;
        uint64_t deadline;              /* CLOCK_MONOTONIC usec; 0: none */
        bool cut;
};

struct warned {
        struct peer_key key;
        enum warn_kind kind;
        uint64_t at;                    /* 0: a free slot */
};

struct http_guard {
        struct http_guard_config cfg;
        pthread_mutex_t lock;
        pthread_cond_t cond;            /* on CLOCK_MONOTONIC */
        pthread_t watcher;
        bool stop;
        uint64_t wake_at;               /* when the watcher will look next; UINT64_MAX: not before a signal */
        struct conn *conns;
        struct peer *peers;
        struct warned warned[WARN_SLOTS];
        struct http_guard_stats stats;
};

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* addr may be NULL or shorter than its family says (libmicrohttpd passes a
 * zero-length address for some unix peers): such a peer is a local one. */
static void peer_key_from(const struct sockaddr *sa, socklen_t len, struct peer_key *ret, bool *ret_local) {
        static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

        memset(ret, 0, sizeof(*ret));
        ret->family = AF_UNIX;
        *ret_local = true;
        if (!sa || len < sizeof(sa_family_t))
                return;
        if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
                ret->family = AF_INET;
                memcpy(ret->addr, &((const struct sockaddr_in *) sa)->sin_addr, 4);
        } else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
                const uint8_t *a = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
                if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
                        ret->family = AF_INET;
                        memcpy(ret->addr, a + 12, 4);
                } else {
                        ret->family = AF_INET6;
                        memcpy(ret->addr, a, 8);
                }
        } else if (sa->sa_family != AF_UNIX)
                /* Another family: one bucket for all of them, capped like a remote peer. */
                ret->family = sa->sa_family;
        *ret_local = sockaddr_is_local(sa, len) || sa->sa_family == AF_UNIX;
}

static bool peer_key_eq(const struct peer_key *a, const struct peer_key *b) {
        return a->family == b->family && memcmp(a->addr, b->addr, sizeof(a->addr)) == 0;
}

static void peer_key_to_string(const struct peer_key *k, char *buf, size_t n) {
        char host[INET6_ADDRSTRLEN] = "?";

        if (k->family == AF_INET) {
                inet_ntop(AF_INET, k->addr, host, sizeof(host));
                snprintf(buf, n, "%s", host);
        } else if (k->family == AF_INET6) {
                inet_ntop(AF_INET6, k->addr, host, sizeof(host));
                snprintf(buf, n, "%s/64", host);
        } else if (k->family == AF_UNIX)
                snprintf(buf, n, "a unix socket peer");
        else
                snprintf(buf, n, "a peer of address family %d", k->family);
}

/* The address libmicrohttpd recorded for a connection does not come with
 * its length: the family says what it is. */
static socklen_t sockaddr_len_of(const struct sockaddr *sa) {
        if (!sa)
                return 0;
        switch (sa->sa_family) {
        case AF_INET:
                return sizeof(struct sockaddr_in);
        case AF_INET6:
                return sizeof(struct sockaddr_in6);
        default:
                return sizeof(sa_family_t);
        }
}

static struct peer *peer_find(struct http_guard *g, const struct peer_key *k) {
        for (struct peer *p = g->peers; p; p = p->next)
                if (peer_key_eq(&p->key, k))
                        return p;
        return NULL;
}

/* Lock held. Rate limit per peer and kind, in a fixed table so that an
 * attacker with many addresses cannot make it grow. */
static bool should_warn(struct http_guard *g, const struct peer_key *k, enum warn_kind kind, uint64_t now) {
        struct warned *oldest = &g->warned[0];

        for (size_t i = 0; i < ELEMENTSOF(g->warned); i++) {
                struct warned *w = &g->warned[i];

                if (w->at && w->kind == kind && peer_key_eq(&w->key, k)) {
                        if (now - w->at < WARN_INTERVAL_USEC)
                                return false;
                        w->at = now;
                        return true;
                }
                if (w->at < oldest->at)
                        oldest = w;
        }
        if (oldest->at && now - oldest->at < WARN_INTERVAL_USEC)
                return false;
        *oldest = (struct warned) { .key = *k, .kind = kind, .at = now };
        return true;
}

static const char *phase_what(enum phase p) {
        return p == PHASE_BODY ? "its request body" : "its request headers";
}

static void *watcher_main(void *userdata) {
        struct http_guard *g = userdata;

        pthread_mutex_lock(&g->lock);
        while (!g->stop) {
                uint64_t now = now_usec(), next = UINT64_MAX;

                for (struct conn *k = g->conns; k; k = k->next) {
                        if (!k->deadline || k->cut)
                                continue;
                        if (k->deadline > now) {
                                next = MIN(next, k->deadline);
                                continue;
                        }
                        /* k is registered, so k->fd is still its socket: libmicrohttpd
                         * sends the CLOSED notification (which unregisters it, under
                         * this lock) before it closes the fd. Only shut down, never
                         * close: the connection's thread sees EOF and cleans up. */
                        (void) shutdown(k->fd, SHUT_RDWR);
                        k->cut = true;
                        if (k->phase == PHASE_IDLE) {
                                /* A kept-alive connection nobody used: ordinary. (One
                                 * trickling its next request looks the same from here:
                                 * it is closed just as well, only not warned about.) */
                                g->stats.idle_closed++;
                                continue;
                        }
                        g->stats.timed_out++;
                        if (should_warn(g, &k->peer->key, WARN_SLOW, now)) {
                                char who[INET6_ADDRSTRLEN + 32];
                                uint64_t t = k->phase == PHASE_BODY ? g->cfg.body_timeout_usec
                                                                    : g->cfg.header_timeout_usec;
                                peer_key_to_string(&k->peer->key, who, sizeof(who));
                                log_warning("Closed a connection from %s that did not send %s within %.1fs "
                                            "(a slow or malicious client; not logged again for this peer for a minute)",
                                            who, phase_what(k->phase), (double) t / 1e6);
                        }
                }
                g->wake_at = next;
                if (next == UINT64_MAX)
                        pthread_cond_wait(&g->cond, &g->lock);
                else {
                        struct timespec ts = { .tv_sec = (time_t) (next / 1000000u),
                                               .tv_nsec = (long) (next % 1000000u) * 1000L };
                        (void) pthread_cond_timedwait(&g->cond, &g->lock, &ts);
                }
        }
        pthread_mutex_unlock(&g->lock);
        return NULL;
}

int http_guard_new(const struct http_guard_config *cfg, struct http_guard **ret) {
        pthread_condattr_t ca;
        struct http_guard *g;
        int r;

        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->cfg = *cfg;
        g->wake_at = UINT64_MAX;
        pthread_mutex_init(&g->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&g->cond, &ca);
        pthread_condattr_destroy(&ca);
        r = pthread_create(&g->watcher, NULL, watcher_main, g);
        if (r != 0) {
                pthread_cond_destroy(&g->cond);
                pthread_mutex_destroy(&g->lock);
                free(g);
                return -r;
        }
        (void) pthread_setname_np(g->watcher, "http-guard");
        *ret = g;
        return 0;
}

struct http_guard *http_guard_free(struct http_guard *g) {
        if (!g)
                return NULL;
        pthread_mutex_lock(&g->lock);
        g->stop = true;
        pthread_cond_signal(&g->cond);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->watcher, NULL);
        /* Normally empty: the daemon was stopped first, and that closed every connection. */
        while (g->conns) {
                struct conn *k = g->conns;
                g->conns = k->next;
                free(k);
        }
        while (g->peers) {
                struct peer *p = g->peers;
                g->peers = p->next;
                free(p);
        }
        pthread_cond_destroy(&g->cond);
        pthread_mutex_destroy(&g->lock);
        free(g);
        return NULL;
}

enum MHD_Result http_guard_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
        struct http_guard *g = cls;
        struct peer_key key;
        struct peer *p;
        bool local, ok = true;

        if (!g || g->cfg.max_conns_per_peer == 0)
                return MHD_YES;
        peer_key_from(addr, addrlen, &key, &local);
        if (local && !g->cfg.cap_local)
                return MHD_YES;
        /* libmicrohttpd calls this and then, for an accepted connection, the
         * STARTED notification from the same (listening) thread, one
         * connection after the other: the count cannot overshoot. */
        pthread_mutex_lock(&g->lock);
        p = peer_find(g, &key);
        if (p && p->n_conns >= g->cfg.max_conns_per_peer) {
                ok = false;
                g->stats.refused++;
                if (should_warn(g, &key, WARN_REFUSED, now_usec())) {
                        char who[INET6_ADDRSTRLEN + 32];
                        peer_key_to_string(&key, who, sizeof(who));
                        log_warning("Refusing connections from %s: it already holds %u (--max-conns-per-peer); "
                                    "not logged again for this peer for a minute", who, p->n_conns);
                }
        }
        pthread_mutex_unlock(&g->lock);
        return ok ? MHD_YES : MHD_NO;
}

/* Lock held. */
static void set_phase(struct conn *k, enum phase phase, uint64_t timeout_usec) {
        struct http_guard *g = k->guard;

        k->phase = phase;
        k->deadline = timeout_usec ? now_usec() + timeout_usec : 0;
        /* Wake the watcher only when it would otherwise sleep past this deadline. */
        if (k->deadline && k->deadline < g->wake_at) {
                g->wake_at = k->deadline;
                pthread_cond_signal(&g->cond);
        }
}

static void conn_started(struct http_guard *g, struct MHD_Connection *c, void **socket_context) {
        const union MHD_ConnectionInfo *ci;
        const struct sockaddr *sa;
        struct peer_key key;
        struct conn *k;
        struct peer *p;
        bool local;
        int fd;

        /* Each answer is read before the next call: libmicrohttpd may return
         * the same per-connection buffer for both. */
        ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        sa = ci ? ci->client_addr : NULL;
        peer_key_from(sa, sockaddr_len_of(sa), &key, &local);
        ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
                return;
        fd = ci->connect_fd;
        k = calloc(1, sizeof(*k));
        if (!k) {
                /* Serving it unguarded would reopen the hole this closes. This
                 * runs in libmicrohttpd's thread before the connection's own
                 * starts, so the fd is certainly this connection's. */
                (void) shutdown(fd, SHUT_RDWR);
                return;
        }
        k->guard = g;
        k->fd = fd;
        pthread_mutex_lock(&g->lock);
        p = peer_find(g, &key);
        if (!p) {
                p = calloc(1, sizeof(*p));
                if (!p) {
                        pthread_mutex_unlock(&g->lock);
                        free(k);
                        (void) shutdown(fd, SHUT_RDWR);
                        return;
                }
                p->key = key;
                p->next = g->peers;
                if (g->peers)
                        g->peers->prev = p;
                g->peers = p;
        }
        p->n_conns++;
        k->peer = p;
        k->next = g->conns;
        if (g->conns)
                g->conns->prev = k;
        g->conns = k;
        set_phase(k, PHASE_HEADERS, g->cfg.header_timeout_usec);
        pthread_mutex_unlock(&g->lock);
        *socket_context = k;
}

static void conn_closed(struct http_guard *g, void **socket_context) {
        struct conn *k = *socket_context;
        struct peer *p;

        if (!k)
                return;
        *socket_context = NULL;
        pthread_mutex_lock(&g->lock);
        if (k->prev)
                k->prev->next = k->next;
        else
                g->conns = k->next;
        if (k->next)
                k->next->prev = k->prev;
        p = k->peer;
        if (--p->n_conns == 0) {
                if (p->prev)
                        p->prev->next = p->next;
                else
                        g->peers = p->next;
                if (p->next)
                        p->next->prev = p->prev;
                free(p);
        }
        pthread_mutex_unlock(&g->lock);
        free(k);
}

void http_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode toe) {
        struct http_guard *g = cls;

        if (!g)
                return;
        if (toe == MHD_CONNECTION_NOTIFY_STARTED)
                conn_started(g, c, socket_context);
        else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
                conn_closed(g, socket_context);
}

static struct conn *conn_of(struct MHD_Connection *c) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

        return ci ? ci->socket_context : NULL;
}

static void move_to(struct MHD_Connection *c, enum phase phase) {
        struct conn *k = conn_of(c);
        struct http_guard *g;

        if (!k)
                return;
        g = k->guard;
        pthread_mutex_lock(&g->lock);
        set_phase(k, phase,
                  phase == PHASE_BODY                                ? g->cfg.body_timeout_usec
                  : phase == PHASE_IDLE || phase == PHASE_HEADERS    ? g->cfg.header_timeout_usec
                                                                     : 0);
        pthread_mutex_unlock(&g->lock);
}

void http_guard_headers_received(struct MHD_Connection *c) {
        move_to(c, PHASE_BODY);
}

void http_guard_request_received(struct MHD_Connection *c) {
        move_to(c, PHASE_ACTIVE);
}

void http_guard_request_done(struct MHD_Connection *c) {
        move_to(c, PHASE_IDLE);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
void http_guard_mhd_log(void *cls, const char *fmt, va_list ap) {
        char buf[512];
        size_t n;

        vsnprintf(buf, sizeof(buf), fmt, ap);
        n = strlen(buf);
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = 0;
        log_debug("microhttpd: %s", buf);
}
#pragma GCC diagnostic pop

void http_guard_get_stats(struct http_guard *g, struct http_guard_stats *ret) {
        if (!g) {
                *ret = (struct http_guard_stats) {};
                return;
        }
        pthread_mutex_lock(&g->lock);
        *ret = g->stats;
        pthread_mutex_unlock(&g->lock);
}

static int config_set(struct http_guard_config *cfg, const char *name, const char *arg, const char **ret_what) {
        uint64_t t;
        int64_t v;

        if (streq(name, "header-timeout") || streq(name, "body-timeout")) {
                *ret_what = "0, or a duration from 100ms to 1h";
                /* 0 turns the limit off; below 100 ms no real client could make it. */
                if (!arg || parse_duration_usec(arg, &t) < 0 || (t != 0 && (t < 100000 || t > UINT64_C(3600000000))))
                        return -EINVAL;
                *(streq(name, "header-timeout") ? &cfg->header_timeout_usec : &cfg->body_timeout_usec) = t;
                return 0;
        }
        if (streq(name, "max-conns-per-peer")) {
                *ret_what = "0-65536";
                if (!arg || parse_int64(arg, 0, 65536, &v) < 0)
                        return -EINVAL;
                cfg->max_conns_per_peer = (unsigned) v;
                return 0;
        }
        if (streq(name, "cap-local-peers")) {
                cfg->cap_local = true;
                return 0;
        }
        *ret_what = "not a guard option";
        return -EINVAL;
}

int http_guard_option(struct http_guard_config *cfg, const char *name, const char *arg) {
        const char *what;

        if (config_set(cfg, name, arg, &what) >= 0)
                return 0;
        fprintf(stderr, "%s: invalid value for --%s: '%s' (%s)\n", program_invocation_short_name, name, strna(arg),
                what);
        return -EINVAL;
}
