/* SPDX-License-Identifier: MIT */
/* rbee-hive: the pool manager. It takes its listening socket from systemd
 * (rbee-hive.socket) or binds --listen, opens the catalog, reconciles the
 * workers it finds (units or processes from a previous hive), serves the API
 * and says READY=1. On SIGTERM it stops taking requests, ends every stream
 * with a terminal event, and leaves the workers running (they are units in
 * their own right) unless --stop-workers-on-exit. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "hive.h"
#include "logging.h"
#include "options.h"
#include "sd-listen.h"
#include "sd-signal.h"
#include "server.h"
#include "strutil.h"
#include "util.h"
#include "wclient.h"

#define MAX_API_KEY 4096

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

static int read_key_file(const char *path, char **ret, size_t *ret_len) {
        _cleanup_(closep) int fd = -EBADF;
        char buf[MAX_API_KEY + 2];
        ssize_t n;

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
        *ret = strdup(buf);
        explicit_bzero(buf, sizeof(buf));
        if (!*ret)
                return -ENOMEM;
        *ret_len = strlen(*ret);
        return 0;
}

static int load_api_key(struct hive *h) {
        const char *env = getenv("RBEE_API_KEY"), *cred = getenv("CREDENTIALS_DIRECTORY");
        int r;

        if (h->opt.api_key_file) {
                r = read_key_file(h->opt.api_key_file, &h->api_key, &h->api_key_len);
                if (r < 0)
                        return fatal(r, "Cannot read API key file %s: %s", h->opt.api_key_file,
                                     r == -EINVAL ? "empty or not text" : strerror(-r));
                return 0;
        }
        if (env && *env) {
                if (strlen(env) > MAX_API_KEY)
                        return fatal(-E2BIG, "RBEE_API_KEY is longer than %d bytes", MAX_API_KEY);
                h->api_key = strdup(env);
                if (!h->api_key)
                        return -ENOMEM;
                h->api_key_len = strlen(env);
                return 0;
        }
        if (cred && *cred) {
                _cleanup_(freep) char *p = NULL;
                if (asprintf(&p, "%s/rbee-api-key", cred) < 0)
                        return -ENOMEM;
                r = read_key_file(p, &h->api_key, &h->api_key_len);
                if (r < 0 && r != -ENOENT)
                        return fatal(r, "Cannot read credential %s: %s", p, strerror(-r));
        }
        return 0;
}

static int acquire_socket(struct hive *h, int *ret_fd, char *desc, size_t desclen) {
        struct listen_address a;
        bool local;
        int fd, r;

        r = listen_fd_from_manager(&fd);
        if (r >= 0) {
                (void) listen_fd_describe(fd, desc, desclen);
                r = listen_fd_is_local(fd, &local);
                if (r < 0) {
                        close(fd);
                        return fatal(r, "Cannot inspect the passed socket: %s", strerror(-r));
                }
        } else if (r != -ENOENT)
                return fatal(r, "The service manager passed unusable sockets (one listening stream socket is expected)");
        else {
                const char *addr = h->opt.listen ? h->opt.listen : "127.0.0.1:7835";
                r = listen_address_parse(addr, &a);
                if (r < 0)
                        return fatal(r, "Invalid --listen address '%s'", addr);
                (void) sockaddr_to_string(&a.sa.sa, a.len, desc, desclen);
                local = sockaddr_is_local(&a.sa.sa, a.len);
                if (!local && !h->api_key)
                        return fatal(-EPERM, "Refusing to listen on %s without an API key: set RBEE_API_KEY or "
                                     "--api-key-file, or listen on loopback or a unix socket", desc);
                r = listen_address_bind(&a, 256, &fd);
                if (r < 0)
                        return fatal(r, "Cannot listen on %s: %s", desc, strerror(-r));
                (void) listen_fd_describe(fd, desc, desclen);
        }
        if (!local && !h->api_key) {
                close(fd);
                return fatal(-EPERM, "Refusing to serve the non-loopback socket %s without an API key: set "
                             "RBEE_API_KEY or --api-key-file", desc);
        }
        *ret_fd = fd;
        return 0;
}

static void on_signal(int signo, void *userdata) {
        struct hive *h = userdata;

        if (signo == SIGCHLD) {
                hive_reap_children(h);
                return;
        }
        if (h->stopping)
                return;
        log_info("Received %s, stopping", strsignal(signo));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
        pthread_mutex_lock(&h->lock);
        h->stopping = true;
        hive_changed_locked(h);
        pthread_mutex_unlock(&h->lock);
        (void) sd_event_exit(h->event, 0);
}

static void shutdown_streams(struct hive *h) {
        uint64_t deadline = hive_now_usec() + 5000000;

        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_jobs; i++) {
                struct hive_job *j = h->jobs[i];
                if (!j->terminal) {
                        (void) hive_job_error_locked(h, j, "shutting_down", "%s",
                                                     j->type == HIVE_JOB_DOWNLOAD
                                                             ? "the hive is shutting down: the download resumes when it starts again"
                                                             : "the hive is shutting down");
                        j->cancel = 1;
                        hive_wconn_abort(j->conn);
                }
        }
        hive_changed_locked(h);
        while (h->n_job_threads > 0 && hive_now_usec() < deadline) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_nsec += 100000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                (void) pthread_cond_timedwait(&h->changed, &h->lock, &ts);
                for (size_t i = 0; i < h->n_jobs; i++)
                        hive_wconn_abort(h->jobs[i]->conn);
        }
        if (h->n_job_threads > 0)
                log_warning("%u jobs did not end in time", h->n_job_threads);
        pthread_mutex_unlock(&h->lock);
}

static int run(int argc, char **argv) {
        static struct hive hive;
        struct hive *h = &hive;
        struct hive_server *srv = NULL;
        static const int sigs[] = { SIGTERM, SIGINT, SIGCHLD };
        char desc[256] = "";
        int fd = -EBADF, r;

        h->kick_fd = h->notify_fd = -EBADF;
        log_setup("rbee-hive", LOG_TARGET_AUTO);
        r = hive_options_parse(argc, argv, &h->opt);
        if (r <= 0)
                return r < 0 ? -EINVAL : 0;
        log_set_max_level(h->opt.log_level);
        signal(SIGPIPE, SIG_IGN);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
                return fatal(-EIO, "Cannot initialize libcurl");

        r = load_api_key(h);
        if (r < 0)
                goto out;
        r = acquire_socket(h, &fd, desc, sizeof(desc));
        if (r < 0)
                goto out;
        r = hive_init(h);
        if (r < 0) {
                close(fd);
                r = fatal(r, "Cannot start the hive: %s", strerror(-r));
                goto out;
        }
        r = signal_forward_setup(h->event, sigs, ELEMENTSOF(sigs), on_signal, h);
        if (r < 0) {
                close(fd);
                r = fatal(r, "Cannot set up signal handling: %s", strerror(-r));
                goto out;
        }
        if (h->catalog_recovered_from)
                (void) sd_notifyf(false, "STATUS=Catalog was corrupt: moved to %s", h->catalog_recovered_from);
        (void) h->units->refresh(h, true);
        hive_reap_children(h);
        (void) hive_downloads_recover(h);

        r = hive_server_new(h, fd, 512, &h->opt.guard, &srv);
        if (r < 0) {
                close(fd);
                r = fatal(r, "Cannot start the HTTP server on %s", desc);
                goto out;
        }
        log_info("Listening on %s (%s mode, state %s, runtime %s)%s", desc, h->units->name, h->opt.state_dir,
                 h->opt.runtime_dir, h->api_key ? ", API key required" : "");
        (void) sd_notifyf(false, "READY=1\nSTATUS=Serving on %s, %zu workers (%s mode)", desc, h->n_workers,
                          h->units->name);

        r = sd_event_loop(h->event);
        if (h->stopping)
                r = 0;
        hive_server_quiesce(srv);
        shutdown_streams(h);
        srv = hive_server_free(srv);
out:
        hive_done(h);
        hive_options_done(&h->opt);
        curl_global_cleanup();
        if (r < 0)
                return r;
        log_info("Stopped");
        return 0;
}

int main(int argc, char **argv) {
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
