/* SPDX-License-Identifier: MIT */
/* The hive's event loop thread: the notify socket that process-mode workers
 * report to (READY=1, STATUS=, STOPPING=1, with the sender's pid from
 * SCM_CREDENTIALS), worker exits (pidfd, and SIGCHLD for our children),
 * a kick eventfd for other threads, and the periodic timer that runs the
 * idle clock, reaping and reconciliation. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "hive.h"
#include "logging.h"
#include "macros.h"
#include "util.h"
#include "wclient.h"

#define TICK_USEC 500000u

/* sd-event gives one userdata per source: the worker; the hive is global to the loop. */
static struct hive *loop_hive;

static int pidfd_dispatch(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static void sync_pid_sources(struct hive *h) {
        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_workers; i++) {
                struct hive_worker *w = h->workers[i];
                if (w->pidfd >= 0 && !w->pid_source &&
                    sd_event_add_io(h->event, &w->pid_source, w->pidfd, EPOLLIN, pidfd_dispatch, w) < 0)
                        log_warning("Cannot watch worker %s (pid %d)", w->model, w->pid);
        }
        pthread_mutex_unlock(&h->lock);
}

static struct hive_worker *find_by_pid_ref(struct hive *h, int pid) {
        struct hive_worker *w = NULL;

        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_workers; i++)
                if (h->workers[i]->pid == pid)
                        w = hive_worker_ref(h->workers[i]);
        pthread_mutex_unlock(&h->lock);
        return w;
}

static void drop_ref(struct hive *h, struct hive_worker *w) {
        pthread_mutex_lock(&h->lock);
        hive_worker_unref(h, w);
        pthread_mutex_unlock(&h->lock);
}

static int on_pidfd_real(struct hive_worker *w) {
        struct hive *h = loop_hive;
        int st = -1, pid;

        pthread_mutex_lock(&h->lock);
        pid = w->pid;
        bool child = w->is_child;
        hive_worker_ref(w);
        pthread_mutex_unlock(&h->lock);
        if (pid > 0 && child) {
                int r = waitpid(pid, &st, WNOHANG);
                if (r == 0) {
                        drop_ref(h, w);
                        return 0;               /* not yet: SIGCHLD or the next event */
                }
                if (r < 0)
                        st = -1;
        }
        if (pid > 0)
                hive_worker_exited(h, w, st);
        drop_ref(h, w);
        return 0;
}

static int on_kick(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct hive *h = userdata;
        uint64_t v;

        (void) !read(fd, &v, sizeof(v));
        sync_pid_sources(h);
        hive_periodic(h);
        return 0;
}

static int on_notify(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct hive *h = userdata;

        for (;;) {
                char buf[4096];
                union {
                        struct cmsghdr h;
                        uint8_t buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 16)];
                } control;
                struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) - 1 };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
                                     .msg_controllen = sizeof(control) };
                struct ucred *cred = NULL;
                ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

                if (n < 0)
                        return 0;
                buf[n] = 0;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
                            c->cmsg_len == CMSG_LEN(sizeof(struct ucred)))
                                cred = (struct ucred *) CMSG_DATA(c);
                        else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                                /* Nobody may park fds with us. */
                                int *fds = (int *) CMSG_DATA(c);
                                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                                for (size_t i = 0; i < k; i++)
                                        close(fds[i]);
                        }
                }
                if (!cred) {
                        log_debug("Notify message without credentials ignored");
                        continue;
                }
                hive_notify_message(h, cred->pid, buf);
        }
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        struct hive *h = userdata;
        static unsigned ticks;
        uint64_t wd;

        sync_pid_sources(h);
        hive_periodic(h);
        if (++ticks % 4 == 0)
                (void) h->units->refresh(h, false);
        if (sd_watchdog_enabled(false, &wd) > 0)
                (void) sd_notify(false, "WATCHDOG=1");
        (void) sd_event_source_set_time(s, usec + TICK_USEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ON);
}

/* SIGCHLD: reap every child; each is a worker we forked. */
void hive_reap_children(struct hive *h) {
        int st, pid;

        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
                struct hive_worker *w = find_by_pid_ref(h, pid);
                if (w) {
                        hive_worker_exited(h, w, st);
                        drop_ref(h, w);
                } else
                        log_debug("Reaped unknown child %d", pid);
        }
}

static int pidfd_dispatch(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        return on_pidfd_real(userdata);
}

static int bind_notify(struct hive *h) {
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        int fd, one = 1;

        if (strlen(h->notify_path) >= sizeof(un.sun_path))
                return -ENAMETOOLONG;
        memcpy(un.sun_path, h->notify_path, strlen(h->notify_path) + 1);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        (void) unlink(h->notify_path);
        if (bind(fd, (struct sockaddr *) &un, sizeof(un)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        h->notify_fd = fd;
        return 0;
}

static int choose_units(struct hive *h) {
        int r;

        if (h->opt.units == HIVE_UNITS_PROCESS) {
                h->units = &hive_units_process;
                return h->units->init(h);
        }
        h->units = &hive_units_systemd;
        r = h->units->init(h);
        if (r >= 0)
                return 0;
        if (h->opt.units == HIVE_UNITS_SYSTEMD)
                return log_error_errno(r, "The systemd unit manager is not usable: %m");
        log_info("No usable systemd (%s): managing workers as processes", strerror(-r));
        h->units = &hive_units_process;
        return h->units->init(h);
}

int hive_init(struct hive *h) {
        pthread_condattr_t ca;
        char err[1024];
        int r;

        h->kick_fd = h->notify_fd = -EBADF;
        pthread_mutex_init(&h->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&h->changed, &ca);
        pthread_condattr_destroy(&ca);
        h->started_at = hive_wall_sec();
        loop_hive = h;

        if (asprintf(&h->catalog_path, "%s/catalog.db", h->opt.state_dir) < 0 ||
            asprintf(&h->models_dir, "%s/models", h->opt.state_dir) < 0 ||
            asprintf(&h->workers_dir, "%s/workers", h->opt.runtime_dir) < 0 ||
            asprintf(&h->notify_path, "%s/notify", h->opt.runtime_dir) < 0)
                return -ENOMEM;
        if ((r = hive_mkdir_p(h->opt.state_dir, 0750)) < 0)
                return log_error_errno(r, "Cannot create the state directory %s: %m", h->opt.state_dir);
        if ((r = hive_mkdir_p(h->models_dir, 0750)) < 0)
                return log_error_errno(r, "Cannot create %s: %m", h->models_dir);
        if ((r = hive_mkdir_p(h->workers_dir, 0750)) < 0)
                return log_error_errno(r, "Cannot create the runtime directory %s: %m", h->workers_dir);
        r = hive_catalog_open(h->catalog_path, &h->catalog, &h->catalog_recovered_from, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "%s", err);
        (void) hive_backends_detect(&h->backends);
        log_info("CPU: %s, %u threads, %llu MiB RAM; CUDA: %s", h->backends.cpu.name, h->backends.cpu.cores,
                 (unsigned long long) (h->backends.cpu.mem_total >> 20),
                 h->backends.cuda_available ? "available" : h->backends.cuda_reason);

        r = sd_event_default(&h->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = choose_units(h);
        if (r < 0)
                return r;
        h->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (h->kick_fd < 0)
                return log_error_errno(errno, "eventfd: %m");
        r = sd_event_add_io(h->event, NULL, h->kick_fd, EPOLLIN, on_kick, h);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the kick fd: %m");
        if (h->units == &hive_units_process) {
                r = bind_notify(h);
                if (r < 0)
                        return log_error_errno(r, "Cannot bind the notify socket %s: %m", h->notify_path);
                r = sd_event_add_io(h->event, NULL, h->notify_fd, EPOLLIN, on_notify, h);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch the notify socket: %m");
        }
        r = sd_event_add_time_relative(h->event, NULL, CLOCK_MONOTONIC, TICK_USEC, 0, on_tick, h);
        if (r < 0)
                return log_error_errno(r, "Cannot add the timer: %m");
        return 0;
}

void hive_done(struct hive *h) {
        struct pollfd pfd[256];
        size_t n = 0;

        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_workers; i++) {
                struct hive_worker *w = h->workers[i];
                if (w->pid_source) {
                        sd_event_source_disable_unref(w->pid_source);
                        w->pid_source = NULL;
                }
                if (h->opt.stop_workers_on_exit && w->pid > 0 && h->units == &hive_units_process) {
                        (void) kill(w->pid, SIGTERM);
                        if (w->pidfd >= 0 && n < ELEMENTSOF(pfd))
                                pfd[n++] = (struct pollfd) { .fd = w->pidfd, .events = POLLIN };
                }
        }
        pthread_mutex_unlock(&h->lock);
        /* Bounded wait for the workers we asked to stop, then reap them. */
        uint64_t deadline = hive_now_usec() + h->opt.stop_timeout_usec;
        for (size_t i = 0; i < n; i++) {
                uint64_t now = hive_now_usec();
                int left = now < deadline ? (int) ((deadline - now) / 1000) : 0;
                if (poll(&pfd[i], 1, left) <= 0)
                        log_warning("A worker did not stop in time");
        }
        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_workers; i++) {
                struct hive_worker *w = h->workers[i];
                if (h->opt.stop_workers_on_exit && w->pid > 0 && w->is_child) {
                        int st;
                        if (waitpid(w->pid, &st, WNOHANG) == 0) {
                                (void) kill(w->pid, SIGKILL);
                                (void) waitpid(w->pid, &st, 0);
                        }
                        (void) unlink(w->socket_path);
                        (void) unlink(w->registry_path);
                }
        }
        while (h->n_workers > 0)
                hive_worker_remove_locked(h, h->workers[h->n_workers - 1]);
        while (h->n_jobs > 0) {
                struct hive_job *j = h->jobs[--h->n_jobs];
                hive_job_unref_locked(h, j);
        }
        pthread_mutex_unlock(&h->lock);
        free(h->workers);
        free(h->jobs);
        free(h->waiter_fds);
        if (h->units && h->units->done)
                h->units->done(h);
        hive_catalog_free(h->catalog);
        if (h->notify_fd >= 0) {
                close(h->notify_fd);
                (void) unlink(h->notify_path);
        }
        if (h->kick_fd >= 0)
                close(h->kick_fd);
        h->event = sd_event_unref(h->event);
        free(h->catalog_path);
        free(h->models_dir);
        free(h->workers_dir);
        free(h->notify_path);
        free(h->catalog_recovered_from);
        if (h->api_key) {
                explicit_bzero(h->api_key, h->api_key_len);
                free(h->api_key);
        }
}
