/* SPDX-License-Identifier: MIT */
/* rbee-workerd: one process serving one model over HTTP. It takes its
 * listening socket from the service manager (or binds --listen), loads the
 * model on the inference thread while /v1/ready answers 503, says READY=1
 * when the first request can be served, pings the watchdog only while the
 * inference thread makes progress, and on SIGTERM ends every stream with a
 * terminal event before it exits. */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "catalog.h"
#include "inference.h"
#include "logging.h"
#include "metrics.h"
#include "options.h"
#include "sd-listen.h"
#include "sd-signal.h"
#include "server.h"
#include "strutil.h"

#define MAX_API_KEY 4096

struct daemon_state {
        sd_event *event;
        struct worker_inference *inf;
        const char *listen_desc;
        uint64_t watchdog_usec;
        bool watchdog_ok;
        bool stopping;
        int load_error;
};

static int fatal(int r, const char *fmt, ...) _printf_(2, 3);
static int fatal(int r, const char *fmt, ...) {
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_error_errno(r, "%s", msg);
        (void) sd_notifyf(false, "STATUS=Failed: %s\nERRNO=%d", msg, r < 0 ? -r : r);
        return r < 0 ? r : -r;
}

static void engine_log(int level, const char *msg, void *userdata) {
        log_struct(level, ((const char *[]) { "RBEE_SOURCE=engine", NULL }), "%s", msg);
}

static int read_key_file(const char *path, char **ret, size_t *ret_len) {
        _cleanup_(closep) int fd = -EBADF;
        char buf[MAX_API_KEY + 2];
        ssize_t n;
        char *k;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0)
                return -errno;
        if ((size_t) n > MAX_API_KEY)
                return -E2BIG;
        buf[n] = 0;
        if (memchr(buf, 0, (size_t) n))
                return -EINVAL;
        str_strip_trailing(buf);
        if (!buf[0])
                return -EINVAL;
        k = strdup(buf);
        explicit_bzero(buf, sizeof(buf));
        if (!k)
                return -ENOMEM;
        *ret = k;
        *ret_len = strlen(k);
        return 0;
}

/* --api-key-file, else $RBEE_API_KEY, else a systemd credential named rbee-api-key. */
static int load_api_key(const struct worker_options *o, char **ret, size_t *ret_len) {
        const char *env = getenv("RBEE_API_KEY"), *cred = getenv("CREDENTIALS_DIRECTORY");
        int r;

        if (o->api_key_file) {
                r = read_key_file(o->api_key_file, ret, ret_len);
                if (r == -EINVAL)
                        return fatal(r, "API key file %s is empty or not text", o->api_key_file);
                if (r < 0)
                        return fatal(r, "Cannot read API key file %s: %s", o->api_key_file, strerror(-r));
                return 1;
        }
        if (env && *env) {
                if (strlen(env) > MAX_API_KEY)
                        return fatal(-E2BIG, "RBEE_API_KEY is longer than %d bytes", MAX_API_KEY);
                *ret = strdup(env);
                if (!*ret)
                        return -ENOMEM;
                *ret_len = strlen(env);
                return 1;
        }
        if (cred && *cred) {
                _cleanup_(freep) char *p = NULL;
                if (asprintf(&p, "%s/rbee-api-key", cred) < 0)
                        return -ENOMEM;
                r = read_key_file(p, ret, ret_len);
                if (r >= 0)
                        return 1;
                if (r != -ENOENT)
                        return fatal(r, "Cannot read credential %s: %s", p, strerror(-r));
        }
        *ret = NULL;
        *ret_len = 0;
        return 0;
}

static bool looks_like_file(const char *s) {
        return strchr(s, '/') || str_endswith(s, ".gguf");
}

static int resolve_model(struct worker_options *o, char **ret_path, char **ret_name) {
        _cleanup_(freep) char *path = NULL, *name = NULL, *db = NULL;
        const char *id = o->model_id;
        char err[512];
        int r;

        if (o->model && looks_like_file(o->model)) {
                path = strdup(o->model);
                const char *base = strrchr(o->model, '/');
                base = base ? base + 1 : o->model;
                name = strdup(base);
                if (!path || !name)
                        return -ENOMEM;
                if (str_endswith(name, ".gguf") && strlen(name) > 5)
                        name[strlen(name) - 5] = 0;
        } else {
                if (!id)
                        id = o->model;
                if (o->catalog)
                        db = strdup(o->catalog);
                else if (worker_catalog_default_path(&db) < 0)
                        db = NULL;
                if (!db)
                        return -ENOMEM;
                int device = -1;
                r = worker_catalog_lookup_placement(db, id, &path, &device, err, sizeof(err));
                if (r < 0)
                        return fatal(r, "Cannot resolve model '%s': %s", id, err);
                name = strdup(id);
                if (!name)
                        return -ENOMEM;
                log_info("Model '%s' resolved through %s to %s", id, db, path);
                /* Without --device, the catalog row places the model (systemctl start by hand). */
                if (o->device == -2)
                        o->device = device;
        }
        if (o->name) {
                free(name);
                name = strdup(o->name);
                if (!name)
                        return -ENOMEM;
        }
        *ret_path = TAKE_PTR(path);
        *ret_name = TAKE_PTR(name);
        return 0;
}

static void on_signal(int signo, void *userdata) {
        struct daemon_state *d = userdata;

        if (d->stopping)
                return;
        d->stopping = true;
        log_info("Received %s, stopping", strsignal(signo));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
        (void) sd_event_exit(d->event, 0);
}

static int on_engine_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct daemon_state *d = userdata;
        const char *msg;
        int r;

        worker_inference_ack(d->inf);
        switch (worker_inference_state(d->inf, NULL, NULL)) {
        case WORKER_STATE_READY:
                log_info("Serving %s on %s", worker_inference_name(d->inf), d->listen_desc);
                (void) sd_notifyf(false, "READY=1\nSTATUS=Serving %s", worker_inference_name(d->inf));
                return 0;
        case WORKER_STATE_FAILED:
                r = worker_inference_load_error(d->inf, &msg);
                d->load_error = fatal(r, "Cannot load model %s: %s", worker_inference_name(d->inf), msg);
                return sd_event_exit(d->event, d->load_error);
        default:
                return 0;
        }
}

/* Only the serving loop pings, and only while the inference thread keeps
 * making progress: a wedged engine stops the pings and systemd restarts us. */
static int on_watchdog(sd_event_source *s, uint64_t usec, void *userdata) {
        struct daemon_state *d = userdata;
        bool ok = worker_inference_healthy(d->inf, d->watchdog_usec);
        uint64_t now;

        if (ok)
                (void) sd_notify(false, "WATCHDOG=1");
        if (ok != d->watchdog_ok) {
                if (ok)
                        log_notice("Inference thread is making progress again; resuming watchdog pings");
                else
                        log_warning("Inference thread made no progress for %llu ms; withholding watchdog pings",
                                    (unsigned long long) (d->watchdog_usec / 1000));
                d->watchdog_ok = ok;
        }
        if (sd_event_now(d->event, CLOCK_MONOTONIC, &now) < 0)
                now = usec;
        (void) sd_event_source_set_time(s, now + d->watchdog_usec / 3);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static unsigned test_hook(const char *name) {
        const char *v = getenv(name);
        int64_t n;

        if (!v || parse_int64(v, 0, 600000, &n) < 0 || n == 0)
                return 0;
        log_warning("Test hook %s=%lld is active", name, (long long) n);
        return (unsigned) n;
}

static int acquire_socket(const struct worker_options *o, bool have_key, int *ret_fd, bool *ret_unix,
                          char **ret_unlink, char *desc, size_t desclen) {
        struct listen_address a;
        bool local;
        int fd, r;

        r = listen_fd_from_manager(&fd);
        if (r >= 0) {
                if (o->listen)
                        log_notice("Ignoring --listen %s: the service manager passed a socket", o->listen);
                (void) listen_fd_describe(fd, desc, desclen);
                r = listen_fd_is_local(fd, &local);
                if (r < 0) {
                        close(fd);
                        return fatal(r, "Cannot inspect the passed socket: %s", strerror(-r));
                }
                if (!local && !have_key) {
                        close(fd);
                        return fatal(-EPERM, "Refusing to serve the non-loopback socket %s without an API key: "
                                     "set RBEE_API_KEY or --api-key-file, or listen on loopback or a unix socket", desc);
                }
                union sockaddr_union sa;
                socklen_t len = sizeof(sa);
                *ret_unix = getsockname(fd, &sa.sa, &len) >= 0 && sa.sa.sa_family == AF_UNIX;
                *ret_unlink = NULL;
                *ret_fd = fd;
                return 0;
        }
        if (r != -ENOENT)
                return fatal(r, "The service manager passed unusable sockets (exactly one listening stream socket is expected)");

        const char *addr = o->listen ? o->listen : "127.0.0.1:8080";
        r = listen_address_parse(addr, &a);
        if (r < 0)
                return fatal(r, "Invalid --listen address '%s'", addr);
        (void) sockaddr_to_string(&a.sa.sa, a.len, desc, desclen);
        if (!sockaddr_is_local(&a.sa.sa, a.len) && !have_key)
                return fatal(-EPERM, "Refusing to listen on %s without an API key: set RBEE_API_KEY or "
                             "--api-key-file, or listen on loopback or a unix socket", desc);
        r = listen_address_bind(&a, 128, &fd);
        if (r < 0)
                return fatal(r, "Cannot listen on %s: %s", desc, strerror(-r));
        (void) listen_fd_describe(fd, desc, desclen);
        *ret_unix = a.sa.sa.sa_family == AF_UNIX;
        *ret_unlink = NULL;
        if (a.sa.sa.sa_family == AF_UNIX && a.sa.un.sun_path[0]) {
                *ret_unlink = strdup(a.sa.un.sun_path);
                if (!*ret_unlink) {
                        close(fd);
                        return -ENOMEM;
                }
        }
        *ret_fd = fd;
        return 0;
}

static int run(int argc, char **argv) {
        _cleanup_(worker_options_done) struct worker_options o = {};
        _cleanup_(freep) char *model_path = NULL, *name = NULL, *api_key = NULL, *unlink_path = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        struct worker_metrics metrics;
        struct worker_inference *inf = NULL;
        struct worker_server *srv = NULL;
        struct daemon_state d = { .watchdog_ok = true };
        char desc[256] = "";
        size_t api_key_len = 0;
        bool is_unix = false;
        static const int stop_signals[] = { SIGTERM, SIGINT };
        int fd = -EBADF, r, exit_r;

        log_setup("rbee-workerd", LOG_TARGET_AUTO);
        r = worker_options_parse(argc, argv, &o);
        if (r <= 0)
                return r < 0 ? -EINVAL : 0;
        log_set_max_level(o.log_level);

        signal(SIGPIPE, SIG_IGN);

        r = resolve_model(&o, &model_path, &name);
        if (r < 0)
                return r;
        (void) log_set_field("RBEE_MODEL", name);
        rbee_set_log(engine_log, NULL, o.log_level);

        r = load_api_key(&o, &api_key, &api_key_len);
        if (r < 0)
                return r;

        r = acquire_socket(&o, api_key != NULL, &fd, &is_unix, &unlink_path, desc, sizeof(desc));
        if (r < 0)
                return r;

        worker_metrics_init(&metrics);
        struct worker_inference_config ic = {
                .model_path = model_path,
                .name = name,
                .n_ctx = o.ctx_size,
                .n_batch = o.batch_size,
                .n_threads = o.threads,
                .cuda = o.device >= 0,
                .device = o.device,
                .n_parallel = o.parallel,
                .max_queue = o.max_queue,
                .chat_format = o.chat_format,
                .mlock = o.mlock,
                .test_load_delay_ms = test_hook("RBEE_WORKER_TEST_LOAD_DELAY_MS"),
                .test_token_delay_ms = test_hook("RBEE_WORKER_TEST_TOKEN_DELAY_MS"),
                .test_stall_ms = test_hook("RBEE_WORKER_TEST_STALL_MS"),
        };
        r = worker_inference_new(&ic, &metrics, &inf);
        if (r < 0) {
                close(fd);
                return fatal(r, "Cannot set up inference: %s", strerror(-r));
        }
        d.inf = inf;
        d.listen_desc = desc;

        r = sd_event_default(&event);
        if (r < 0) {
                close(fd);
                worker_inference_free(inf);
                return fatal(r, "Cannot create the event loop: %s", strerror(-r));
        }
        d.event = event;
        if ((r = signal_forward_setup(event, stop_signals, ELEMENTSOF(stop_signals), on_signal, &d)) < 0 ||
            (r = sd_event_add_io(event, NULL, worker_inference_event_fd(inf), EPOLLIN, on_engine_event, &d)) < 0) {
                close(fd);
                worker_inference_free(inf);
                return fatal(r, "Cannot set up the event loop: %s", strerror(-r));
        }
        if (sd_watchdog_enabled(false, &d.watchdog_usec) > 0 && d.watchdog_usec > 0) {
                /* An explicit accuracy: the default (250 ms) would stretch short intervals. */
                r = sd_event_add_time_relative(event, NULL, CLOCK_MONOTONIC, d.watchdog_usec / 3,
                                               MAX(d.watchdog_usec / 30, (uint64_t) 1), on_watchdog, &d);
                if (r < 0) {
                        close(fd);
                        worker_inference_free(inf);
                        return fatal(r, "Cannot set up the watchdog timer: %s", strerror(-r));
                }
                log_debug("Watchdog enabled: %llu ms", (unsigned long long) (d.watchdog_usec / 1000));
        }

        /* HTTP first, so that /v1/health and /v1/ready answer while the model loads. */
        struct worker_server_config sc = {
                .listen_fd = fd,
                .listen_is_unix = is_unix,
                .api_key = api_key,
                .api_key_len = api_key_len,
                .max_connections = o.max_connections,
                .max_body = o.max_body,
                .idle_timeout_s = 120,
                .guard = o.guard,
        };
        r = worker_server_new(&sc, inf, &metrics, &srv);
        if (r < 0) {
                close(fd);
                worker_inference_free(inf);
                return fatal(r, "Cannot start the HTTP server on %s", desc);
        }
        if (api_key)
                explicit_bzero(api_key, api_key_len);

        r = worker_inference_start(inf);
        if (r < 0) {
                worker_server_free(srv);
                worker_inference_free(inf);
                return fatal(r, "Cannot start the inference thread: %s", strerror(-r));
        }
        log_info("Listening on %s%s", desc, api_key ? " (API key required)" : "");

        exit_r = sd_event_loop(event);
        if (d.stopping)
                exit_r = 0;

        /* Stop taking work, end every job with a terminal event, let the
         * streams flush it, then tear down. Each step is bounded. */
        worker_server_quiesce(srv);
        r = worker_inference_shutdown(inf, o.shutdown_timeout_usec);
        if (r == -ETIMEDOUT)
                log_warning("The inference thread did not stop within %llu ms; exiting without it",
                            (unsigned long long) (o.shutdown_timeout_usec / 1000));
        if (worker_server_drain(srv, 2000000) < 0)
                log_warning("Some streams did not drain in time; closing them");
        worker_server_free(srv);
        worker_inference_free(inf);
        if (unlink_path)
                (void) unlink(unlink_path);
        if (exit_r < 0)
                return exit_r;
        log_info("Stopped");
        return 0;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
