/* SPDX-License-Identifier: MIT */
/* rbee-load: a small closed-loop HTTP/1.1 load client for loopback tests of
 * rbee-hive and rbee-workerd (wrk does the same, but is not always there).
 * C connections, each a thread sending one request after the other on a
 * keep-alive connection (reconnecting when the server closes it), for a
 * duration or a number of requests. Prints requests/s, latency percentiles
 * and a count per status; exits 1 when a status outside --ok appeared or a
 * connection failed.
 *
 *   rbee-load [-c CONNS] [-d SECONDS | -n REQUESTS] [-m METHOD] [-b BODY]
 *             [-H "Header: value"] [--ok 200,503] [--json] URL
 *
 * URL is http://127.0.0.1:PORT/path (loopback only, by design). */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16
#ifndef MAX_LAT
#define MAX_LAT (1u << 20)      /* latencies kept per thread */
#endif
#define MIN_SZ(a, b) ((uint64_t) (a) < (uint64_t) (b) ? (size_t) (a) : (size_t) (b))

struct config {
        struct sockaddr_in addr;
        char host[96];
        char path[1024];
        const char *method;
        const char *body;
        const char *headers[MAX_HEADERS];
        unsigned n_headers;
        unsigned conns;
        double duration_s;
        uint64_t requests;      /* 0: by duration */
        bool ok[600];
        bool json;
};

struct worker {
        pthread_t thread;
        const struct config *cfg;
        double *lat;            /* ms: all of them, or a uniform sample past MAX_LAT */
        size_t n_lat;
        uint64_t n_done;        /* answered requests */
        uint64_t rng;
        uint64_t status[600];
        uint64_t conn_errors, reconnects, bytes;
        double max_lat;
};

static struct config cfg;
static volatile uint64_t issued;
static double t_end;

static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

static int dial(void) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (const struct sockaddr *) &cfg.addr, sizeof(cfg.addr)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        struct timeval tv = { .tv_sec = 60 };
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        return fd;
}

static bool send_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return false;
                p += k;
                n -= (size_t) k;
        }
        return true;
}

/* Read one response: head, then a Content-Length body or chunks, or up to
 * EOF for "Connection: close". Returns the status (0 on a broken
 * connection); *ret_close when the server ends the connection after it. */
static int read_response(int fd, char *buf, size_t cap, size_t *len, bool *ret_close, uint64_t *bytes) {
        char *end;
        int status = 0;
        long long clen = -1;
        bool chunked = false;

        *ret_close = false;
        for (;;) {
                buf[*len] = 0;
                end = strstr(buf, "\r\n\r\n");
                if (end)
                        break;
                if (*len + 1 >= cap)
                        return 0;
                ssize_t k = recv(fd, buf + *len, cap - 1 - *len, 0);
                if (k <= 0)
                        return 0;
                *len += (size_t) k;
        }
        size_t head_len = (size_t) (end - buf) + 4;
        if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
                return 0;
        for (char *l = strstr(buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
                char *h = l + 2;
                if (strncasecmp(h, "Content-Length:", 15) == 0)
                        clen = strtoll(h + 15, NULL, 10);
                else if (strncasecmp(h, "Transfer-Encoding:", 18) == 0 && strcasestr(h, "chunked") < strstr(h, "\r\n"))
                        chunked = true;
                else if (strncasecmp(h, "Connection:", 11) == 0 && strcasestr(h, "close") &&
                         strcasestr(h, "close") < strstr(h, "\r\n"))
                        *ret_close = true;
        }
        memmove(buf, buf + head_len, *len - head_len);
        *len -= head_len;
        *bytes += head_len;

        if (clen >= 0 && !chunked) {
                uint64_t need = (uint64_t) clen;
                while (*len < need) {
                        /* Bodies larger than the buffer are counted, not kept. */
                        if (*len == cap - 1) {
                                need -= *len;
                                *bytes += *len;
                                *len = 0;
                        }
                        ssize_t k = recv(fd, buf + *len, MIN_SZ(cap - 1 - *len, need - *len), 0);
                        if (k <= 0)
                                return 0;
                        *len += (size_t) k;
                }
                memmove(buf, buf + need, *len - need);
                *len -= need;
                *bytes += need;
                return status;
        }
        if (chunked) {
                for (;;) {
                        char *crlf;
                        while (!(buf[*len] = 0, crlf = strstr(buf, "\r\n"))) {
                                if (*len + 1 >= cap)
                                        return 0;
                                ssize_t k = recv(fd, buf + *len, cap - 1 - *len, 0);
                                if (k <= 0)
                                        return 0;
                                *len += (size_t) k;
                        }
                        unsigned long long sz = strtoull(buf, NULL, 16);
                        size_t hl = (size_t) (crlf - buf) + 2;
                        uint64_t need = hl + sz + 2;
                        while (*len < need) {
                                if (*len == cap - 1) {
                                        /* Drop what we have of a big chunk. */
                                        need -= *len;
                                        *bytes += *len;
                                        *len = 0;
                                        hl = 0;
                                }
                                ssize_t k = recv(fd, buf + *len, MIN_SZ(cap - 1 - *len, need - *len), 0);
                                if (k <= 0)
                                        return 0;
                                *len += (size_t) k;
                        }
                        memmove(buf, buf + need, *len - need);
                        *len -= need;
                        *bytes += need;
                        if (sz == 0)
                                return status;
                }
        }
        /* No length: the body runs to the end of the connection. */
        *ret_close = true;
        for (;;) {
                ssize_t k = recv(fd, buf, cap - 1, 0);
                if (k < 0)
                        return 0;
                if (k == 0)
                        break;
                *bytes += (uint64_t) k;
        }
        *len = 0;
        return status;
}

static void *run(void *arg) {
        struct worker *w = arg;
        char req[16384], *buf = malloc(1 << 20);
        int fd = -1, n;
        unsigned served = 0;            /* on this connection */
        size_t len = 0, blen = w->cfg->body ? strlen(w->cfg->body) : 0;

        n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: %s\r\n", cfg.method, cfg.path, cfg.host);
        for (unsigned i = 0; i < cfg.n_headers; i++)
                n += snprintf(req + n, sizeof(req) - (size_t) n, "%s\r\n", cfg.headers[i]);
        if (cfg.body)
                n += snprintf(req + n, sizeof(req) - (size_t) n, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
        n += snprintf(req + n, sizeof(req) - (size_t) n, "\r\n");
        if (!buf || (size_t) n >= sizeof(req))
                return NULL;

        for (;;) {
                if (cfg.requests) {
                        if (__atomic_fetch_add(&issued, 1, __ATOMIC_RELAXED) >= cfg.requests)
                                break;
                } else if (now_ms() >= t_end)
                        break;
                if (fd < 0) {
                        fd = dial();
                        if (fd < 0) {
                                w->conn_errors++;
                                usleep(10000);
                                continue;
                        }
                        len = 0;
                        served = 0;
                }
                double t0 = now_ms();
                bool close_after = false;
                int st = 0;
                if (send_all(fd, req, (size_t) n) && (!blen || send_all(fd, cfg.body, blen)))
                        st = read_response(fd, buf, 1 << 20, &len, &close_after, &w->bytes);
                double dt = now_ms() - t0;
                if (st <= 0 || st >= 600) {
                        /* A kept-alive connection the server had closed: not an
                         * error, the request goes again on a fresh one. */
                        if (!(served > 0 && st == 0 && len == 0))
                                w->conn_errors++;
                        else
                                w->reconnects++;
                        close(fd);
                        fd = -1;
                        continue;
                }
                served++;
                w->status[st]++;
                w->n_done++;
                if (dt > w->max_lat)
                        w->max_lat = dt;
                if (w->n_lat < MAX_LAT)
                        w->lat[w->n_lat++] = dt;
                else {
                        /* Reservoir sampling keeps the percentiles of long runs honest. */
                        w->rng ^= w->rng << 13;
                        w->rng ^= w->rng >> 7;
                        w->rng ^= w->rng << 17;
                        uint64_t k = w->rng % w->n_done;
                        if (k < MAX_LAT)
                                w->lat[k] = dt;
                }
                if (close_after) {
                        close(fd);
                        fd = -1;
                        w->reconnects++;
                }
        }
        if (fd >= 0)
                close(fd);
        free(buf);
        return NULL;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static int parse_url(const char *url) {
        char host[64];
        unsigned port = 80;
        int off = 0;

        if (sscanf(url, "http://%63[^:/]:%u%n", host, &port, &off) != 2 || !off || port == 0 || port > 65535) {
                fprintf(stderr, "URL must be http://127.0.0.1:PORT/path\n");
                return -EINVAL;
        }
        cfg.addr.sin_family = AF_INET;
        cfg.addr.sin_port = htons((uint16_t) port);
        if (inet_pton(AF_INET, host, &cfg.addr.sin_addr) != 1 ||
            (ntohl(cfg.addr.sin_addr.s_addr) >> 24) != 127) {
                fprintf(stderr, "%s: only loopback addresses (127.0.0.0/8)\n", host);
                return -EINVAL;
        }
        snprintf(cfg.host, sizeof(cfg.host), "%s:%u", host, port);
        snprintf(cfg.path, sizeof(cfg.path), "%s", url[off] ? url + off : "/");
        return 0;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "connections", required_argument, NULL, 'c' }, { "duration", required_argument, NULL, 'd' },
                { "requests", required_argument, NULL, 'n' },    { "method", required_argument, NULL, 'm' },
                { "body", required_argument, NULL, 'b' },        { "header", required_argument, NULL, 'H' },
                { "ok", required_argument, NULL, 'o' },          { "json", no_argument, NULL, 'j' },
                {},
        };
        const char *label = NULL;
        int c;

        cfg.conns = 4;
        cfg.duration_s = 5;
        cfg.method = "GET";
        cfg.ok[200] = true;
        while ((c = getopt_long(argc, argv, "c:d:n:m:b:H:o:jl:", opts, NULL)) >= 0)
                switch (c) {
                case 'c':
                        cfg.conns = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'd':
                        cfg.duration_s = strtod(optarg, NULL);
                        break;
                case 'n':
                        cfg.requests = strtoull(optarg, NULL, 10);
                        break;
                case 'm':
                        cfg.method = optarg;
                        break;
                case 'b':
                        cfg.body = optarg;
                        break;
                case 'H':
                        if (cfg.n_headers < MAX_HEADERS)
                                cfg.headers[cfg.n_headers++] = optarg;
                        break;
                case 'o':
                        memset(cfg.ok, 0, sizeof(cfg.ok));
                        for (char *s = optarg; *s;) {
                                unsigned long v = strtoul(s, &s, 10);
                                if (v < 600)
                                        cfg.ok[v] = true;
                                if (*s == ',')
                                        s++;
                                else if (*s)
                                        return 2;
                        }
                        break;
                case 'j':
                        cfg.json = true;
                        break;
                case 'l':
                        label = optarg;
                        break;
                default:
                        return 2;
                }
        if (optind != argc - 1 || cfg.conns < 1 || cfg.conns > 1024 || !(cfg.duration_s > 0) || parse_url(argv[optind]) < 0) {
                fprintf(stderr, "usage: rbee-load [-c N] [-d S | -n N] [-m M] [-b BODY] [-H H] [--ok 200,503] [--json] URL\n");
                return 2;
        }

        struct worker *w = calloc(cfg.conns, sizeof(*w));
        if (!w)
                return 1;
        double t0 = now_ms();
        t_end = t0 + cfg.duration_s * 1e3;
        for (unsigned i = 0; i < cfg.conns; i++) {
                w[i].cfg = &cfg;
                w[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
                w[i].lat = malloc(MAX_LAT * sizeof(double));
                if (!w[i].lat || pthread_create(&w[i].thread, NULL, run, &w[i]) != 0)
                        return 1;
        }
        for (unsigned i = 0; i < cfg.conns; i++)
                pthread_join(w[i].thread, NULL);
        double elapsed = (now_ms() - t0) / 1e3;

        size_t n = 0;
        uint64_t status[600] = {}, conn_errors = 0, bytes = 0, bad = 0, done = 0;
        double maxlat = 0;
        for (unsigned i = 0; i < cfg.conns; i++)
                n += w[i].n_lat;
        double *all = malloc((n ? n : 1) * sizeof(double));
        if (!all)
                return 1;
        n = 0;
        for (unsigned i = 0; i < cfg.conns; i++) {
                memcpy(all + n, w[i].lat, w[i].n_lat * sizeof(double));
                n += w[i].n_lat;
                conn_errors += w[i].conn_errors;
                done += w[i].n_done;
                if (w[i].max_lat > maxlat)
                        maxlat = w[i].max_lat;
                bytes += w[i].bytes;
                for (int s = 0; s < 600; s++)
                        status[s] += w[i].status[s];
        }
        qsort(all, n, sizeof(double), cmp_double);
#define PCT(p) (n ? all[(size_t) ((double) (n - 1) * (p))] : 0.0)
        for (int s = 0; s < 600; s++)
                if (status[s] && !cfg.ok[s])
                        bad += status[s];
        if (cfg.json) {
                printf("{\"label\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"connections\":%u,\"seconds\":%.2f,"
                       "\"requests\":%" PRIu64 ",\"rps\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
                       "\"connection_errors\":%" PRIu64 ",\"unexpected\":%" PRIu64 ",\"status\":{",
                       label ? label : "", cfg.method, cfg.path, cfg.conns, elapsed, done, (double) done / elapsed, PCT(0.5),
                       PCT(0.9), PCT(0.99), maxlat, conn_errors, bad);
                bool first = true;
                for (int s = 0; s < 600; s++)
                        if (status[s]) {
                                printf("%s\"%d\":%" PRIu64, first ? "" : ",", s, status[s]);
                                first = false;
                        }
                printf("}}\n");
        } else {
                printf("%-22s %-5s %-28s c=%-3u %8.1f req/s  p50 %8.3f  p90 %8.3f  p99 %8.3f  max %8.3f ms  n=%" PRIu64,
                       label ? label : "", cfg.method, cfg.path, cfg.conns, (double) done / elapsed, PCT(0.5), PCT(0.9),
                       PCT(0.99), maxlat, done);
                for (int s = 0; s < 600; s++)
                        if (status[s])
                                printf("  %d:%" PRIu64, s, status[s]);
                if (conn_errors)
                        printf("  conn-errors:%" PRIu64, conn_errors);
                printf("\n");
        }
        for (unsigned i = 0; i < cfg.conns; i++)
                free(w[i].lat);
        free(w);
        free(all);
        return bad || conn_errors ? 1 : 0;
}
