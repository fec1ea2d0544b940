/* SPDX-License-Identifier: MIT */
/* Workers without systemd: the hive forks rbee-workerd itself and keeps the
 * contract systemd would: a listening unix socket as fd 3 with LISTEN_FDS and
 * LISTEN_PID, NOTIFY_SOCKET pointing at the hive's notify socket, its own
 * session (a Ctrl+C of the hive does not reach it), and exit watched through
 * a pidfd (reaped with waitpid on SIGCHLD). Workers outlive the hive the way
 * units do; a registry file per worker in <runtime>/workers lets the next
 * hive adopt them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hive.h"
#include "json-util.h"
#include "logging.h"
#include "macros.h"
#include "sd-listen.h"
#include "util.h"
#include "wclient.h"

extern char **environ;

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)

static int pidfd_open_compat(int pid) {
        int fd = (int) syscall(SYS_pidfd_open, pid, 0);

        return fd < 0 ? -errno : fd;
}

static int write_registry(struct hive *h, const struct hive_worker *w) {
        _cleanup_(json_object_putp) struct json_object *o = json_object_new_object();
        _cleanup_(freep) char *tmp = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        const char *s;
        size_t n;

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "model", json_object_new_string(w->model));
        json_object_object_add(o, "pid", json_object_new_int(w->pid));
        json_object_object_add(o, "starttime", json_object_new_int64((int64_t) w->starttime));
        json_object_object_add(o, "socket", json_object_new_string(w->socket_path));
        json_object_object_add(o, "backend", json_object_new_string(w->backend ? w->backend : "cpu"));
        json_object_object_add(o, "device", json_object_new_int(w->device));
        json_object_object_add(o, "started_at", json_object_new_int64(w->started_at));
        json_object_object_add(o, "keep_alive", json_object_new_int64(w->keep_alive_s));
        s = json_to_string(o, &n);
        if (!s || asprintf(&tmp, "%s.tmp", w->registry_path) < 0)
                return -ENOMEM;
        f = fopen(tmp, "we");
        if (!f)
                return -errno;
        if (fwrite(s, 1, n, f) != n || fflush(f) != 0) {
                int r = -errno;
                (void) unlink(tmp);
                return r;
        }
        if (rename(tmp, w->registry_path) < 0) {
                int r = -errno;
                (void) unlink(tmp);
                return r;
        }
        return 0;
}

static int process_init(struct hive *h) {
        if (access(h->opt.workerd, X_OK) < 0)
                return log_error_errno(errno, "Worker binary %s is not executable: %m (use --workerd)",
                                       h->opt.workerd);
        hive_backends_find_cuda_worker(&h->backends, h->opt.workerd);
        log_info("CUDA worker: %s", h->backends.cuda_workerd[0] ? h->backends.cuda_workerd
                                                                : h->backends.cuda_worker_reason);
        return 0;
}

static void process_done(struct hive *h) {
}

/* Async-signal-safe decimal formatting for the child. */
static void fmt_uint(char *buf, size_t n, unsigned v) {
        char tmp[16];
        size_t k = 0, i = 0;

        do
                tmp[k++] = (char) ('0' + v % 10);
        while ((v /= 10) && k < sizeof(tmp));
        while (k > 0 && i + 1 < n)
                buf[i++] = tmp[--k];
        buf[i] = 0;
}

static bool env_is_ours(const char *e) {
        static const char *const drop[] = { "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET=",
                                            "WATCHDOG_USEC=", "WATCHDOG_PID=", "JOURNAL_STREAM=", "RBEE_API_KEY=",
                                            "RBEE_STATE_DIRECTORY=", "INVOCATION_ID=",
                                            /* the hive's download credential; a worker never needs it */
                                            "HF_TOKEN=" };

        for (size_t i = 0; i < ELEMENTSOF(drop); i++)
                if (str_startswith(e, drop[i]))
                        return true;
        return false;
}

static int process_start(struct hive *h, struct hive_worker *w) {
        _cleanup_(closep) int listen_fd = -EBADF, log_fd = -EBADF, null_fd = -EBADF;
        _cleanup_(freep) char *notify_env = NULL, *state_env = NULL, *queue = NULL, *threads = NULL, *device = NULL,
                               *parallel = NULL;
        _cleanup_(freep) const char **envp = NULL;
        struct listen_address a;
        char listen_pid[32] = "LISTEN_PID=";
        const char *argv[20], *workerd = h->opt.workerd;
        size_t n_env = 0, n = 0;
        int pid, pidfd, r;

        r = hive_mkdir_p(h->opt.runtime_dir, 0755);
        if (r < 0)
                return r;
        r = listen_address_parse(w->socket_path, &a);
        if (r < 0)
                return r;
        r = listen_address_bind(&a, 128, &listen_fd);
        if (r < 0) {
                pthread_mutex_lock(&h->lock);
                hive_worker_set_failed_locked(h, w, "cannot listen on %s: %s", w->socket_path, strerror(-r));
                pthread_mutex_unlock(&h->lock);
                return r;
        }
        log_fd = open(w->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);
        if (log_fd < 0)
                return -errno;
        null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null_fd < 0)
                return -errno;

        unsigned slots = h->opt.worker_parallel ? h->opt.worker_parallel : HIVE_WORKER_DEFAULT_SLOTS;
        if (asprintf(&notify_env, "NOTIFY_SOCKET=%s", h->notify_path) < 0 ||
            asprintf(&state_env, "RBEE_STATE_DIRECTORY=%s", h->opt.state_dir) < 0 ||
            asprintf(&queue, "%u", h->opt.max_queue + slots) < 0)
                return -ENOMEM;
        for (char **e = environ; *e; e++)
                n_env++;
        envp = calloc(n_env + 8, sizeof(*envp));
        if (!envp)
                return -ENOMEM;
        n_env = 0;
        for (char **e = environ; *e; e++)
                if (!env_is_ours(*e))
                        envp[n_env++] = *e;
        envp[n_env++] = "LISTEN_FDS=1";
        envp[n_env++] = "LISTEN_FDNAMES=worker";
        envp[n_env++] = listen_pid;
        envp[n_env++] = notify_env;
        envp[n_env++] = state_env;
        envp[n_env] = NULL;

        /* The placement is always explicit: without --device the worker would
         * follow the catalog row, and the request may have asked otherwise. */
        if (w->backend && streq(w->backend, "cuda")) {
                if (!h->backends.cuda_workerd[0]) {
                        pthread_mutex_lock(&h->lock);
                        hive_worker_set_failed_locked(h, w, "%s", h->backends.cuda_worker_reason);
                        pthread_mutex_unlock(&h->lock);
                        return -EOPNOTSUPP;
                }
                workerd = h->backends.cuda_workerd;
                if (asprintf(&device, "%d", w->device) < 0)
                        return -ENOMEM;
        } else if (!(device = strdup("cpu")))
                return -ENOMEM;
        argv[n++] = workerd;
        argv[n++] = "--device";
        argv[n++] = device;
        argv[n++] = "--model-id";
        argv[n++] = w->model;
        argv[n++] = "--catalog";
        argv[n++] = h->catalog_path;
        /* The worker queues what the hive admits, so that it never refuses
         * what we let in: the hive admits slots + --max-queue, counting 4
         * slots (the worker's default) until the worker says it runs fewer,
         * and the worker may still be winding down a cancelled request when
         * the next one arrives. */
        argv[n++] = "--max-queue";
        argv[n++] = queue;
        if (h->opt.worker_parallel > 0) {
                if (asprintf(&parallel, "%u", h->opt.worker_parallel) < 0)
                        return -ENOMEM;
                argv[n++] = "--parallel";
                argv[n++] = parallel;
        }
        if (h->opt.worker_threads > 0) {
                if (asprintf(&threads, "%d", h->opt.worker_threads) < 0)
                        return -ENOMEM;
                argv[n++] = "--threads";
                argv[n++] = threads;
        }
        argv[n] = NULL;

        {
                char hdr[512];
                int k = snprintf(hdr, sizeof(hdr), "---- rbee-hive: starting %s --device %s for %s ----\n", workerd,
                                 device, w->model);
                if (k > 0)
                        (void) !write(log_fd, hdr, (size_t) MIN(k, (int) sizeof(hdr) - 1));
        }

        fflush(NULL);
        pthread_mutex_lock(&h->lock);
        pid = fork();
        if (pid < 0) {
                r = -errno;
                pthread_mutex_unlock(&h->lock);
                return r;
        }
        if (pid == 0) {
                sigset_t none;
                struct sigaction dfl = { .sa_handler = SIG_DFL };

                sigemptyset(&none);
                for (int s = 1; s < NSIG; s++)
                        (void) sigaction(s, &dfl, NULL);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                (void) setsid();
                /* fd 3 must be the socket; move the others out of the way first. */
                int lfd = listen_fd, ofd = log_fd, nfd = null_fd;
                if (ofd < 4)
                        ofd = fcntl(ofd, F_DUPFD_CLOEXEC, 10);
                if (nfd < 4)
                        nfd = fcntl(nfd, F_DUPFD_CLOEXEC, 10);
                if (lfd != 3) {
                        if (dup2(lfd, 3) < 0)
                                _exit(126);
                } else if (fcntl(3, F_SETFD, 0) < 0)
                        _exit(126);
                if (dup2(nfd, 0) < 0 || dup2(ofd, 1) < 0 || dup2(ofd, 2) < 0)
                        _exit(126);
                (void) syscall(SYS_close_range, 4u, ~0u, 0u);
                int fl = fcntl(3, F_GETFL);
                if (fl >= 0)
                        (void) fcntl(3, F_SETFL, fl & ~O_NONBLOCK);
                fmt_uint(listen_pid + 11, sizeof(listen_pid) - 11, (unsigned) getpid());
                execve(argv[0], (char *const *) argv, (char *const *) envp);
                _exit(127);
        }
        w->pid = pid;
        w->is_child = true;
        (void) hive_pid_starttime(pid, &w->starttime);
        pidfd = pidfd_open_compat(pid);
        if (pidfd < 0)
                log_warning_errno(pidfd, "pidfd_open(%d) failed, relying on SIGCHLD: %m", pid);
        else
                w->pidfd = pidfd;
        snprintf(w->sub_state, sizeof(w->sub_state), "start");
        r = write_registry(h, w);
        if (r < 0)
                log_warning_errno(r, "Cannot write the registry file %s: %m", w->registry_path);
        log_struct(LOG_INFO, ((const char *[]) { "RBEE_EVENT=worker-start", NULL }),
                   "Started worker %s as pid %d on %s (log %s)", w->model, pid, w->socket_path, w->log_path);
        hive_kick(h);
        pthread_mutex_unlock(&h->lock);
        return 0;
}

static int process_stop(struct hive *h, struct hive_worker *w) {
        pthread_mutex_lock(&h->lock);
        if (w->pid > 0) {
                if (w->state != HIVE_WORKER_STOPPING || !w->stop_usec) {
                        w->state = HIVE_WORKER_STOPPING;
                        w->stop_usec = hive_now_usec();
                        snprintf(w->sub_state, sizeof(w->sub_state), "stop-sigterm");
                        log_info("Stopping worker %s (pid %d)", w->model, w->pid);
                        (void) kill(w->pid, SIGTERM);
                } else if (hive_now_usec() - w->stop_usec > h->opt.stop_timeout_usec) {
                        snprintf(w->sub_state, sizeof(w->sub_state), "stop-sigkill");
                        log_warning("Worker %s (pid %d) did not stop in time: killing it", w->model, w->pid);
                        (void) kill(w->pid, SIGKILL);
                }
        } else if (w->state != HIVE_WORKER_FAILED)
                w->state = HIVE_WORKER_GONE;
        hive_changed_locked(h);
        hive_kick(h);
        pthread_mutex_unlock(&h->lock);
        return 0;
}

static int process_reap(struct hive *h, struct hive_worker *w) {
        pthread_mutex_lock(&h->lock);
        /* A new worker for the same model may already own these paths. */
        if (!hive_worker_find(h, w->model) && w->pid <= 0) {
                (void) unlink(w->socket_path);
                (void) unlink(w->registry_path);
        }
        pthread_mutex_unlock(&h->lock);
        return 0;
}

/* Whether the process still runs. Its exit itself is reported by the loop
 * thread (pidfd or SIGCHLD) with the wait status, so nothing changes here. */
static int process_check(struct hive *h, struct hive_worker *w) {
        _cleanup_(closep) int pidfd = -EBADF;
        uint64_t st = 0, want;
        int pid;

        pthread_mutex_lock(&h->lock);
        pid = w->pid;
        want = w->starttime;
        /* The loop thread closes w->pidfd when it handles the exit: poll a copy. */
        if (w->pidfd >= 0)
                pidfd = fcntl(w->pidfd, F_DUPFD_CLOEXEC, 3);
        pthread_mutex_unlock(&h->lock);
        if (pid <= 0)
                return 0;
        if (pidfd >= 0) {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };
                return poll(&p, 1, 0) == 0;
        }
        return hive_pid_starttime(pid, &st) >= 0 && st == want;
}

/* A socket path from a registry file: a plain file name in workers_dir,
 * nothing that an unlink() could turn against another file. */
static bool registry_socket_ok(const struct hive *h, const char *p) {
        size_t n = strlen(h->workers_dir);

        return strncmp(p, h->workers_dir, n) == 0 && p[n] == '/' && p[n + 1] && p[n + 1] != '.' &&
               !strchr(p + n + 1, '/') && str_endswith(p, ".sock");
}

static int adopt_one(struct hive *h, const char *path) {
        _cleanup_(json_object_putp) struct json_object *o = NULL;
        const char *model = NULL, *sock = NULL, *backend = NULL;
        struct hive_worker *w;
        int64_t pid = 0, st = 0, started = 0, keep = -2, dev = 0;
        uint64_t now_st = 0;
        char err[256];
        int r, status = 0, pidfd;

        _cleanup_(fclosep) FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        char buf[8192];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;
        if (json_parse_strict(buf, n, 8, &o, err, sizeof(err)) < 0 || !json_object_is_type(o, json_type_object) ||
            json_get_string(o, "model", &model, NULL) <= 0 || json_get_string(o, "socket", &sock, NULL) <= 0 ||
            json_get_int64(o, "pid", 1, INT32_MAX, &pid) <= 0 || json_get_int64(o, "starttime", 0, INT64_MAX, &st) < 0) {
                log_warning("Ignoring unreadable registry file %s", path);
                (void) unlink(path);
                return 0;
        }
        if (!registry_socket_ok(h, sock)) {
                log_warning("Ignoring registry file %s: its socket %s is not in %s", path, sock, h->workers_dir);
                (void) unlink(path);
                return 0;
        }
        (void) json_get_string(o, "backend", &backend, NULL);
        (void) json_get_int64(o, "started_at", 0, INT64_MAX, &started);
        (void) json_get_int64(o, "keep_alive", -1, INT32_MAX, &keep);
        (void) json_get_int64(o, "device", 0, 1024, &dev);
        if (!hive_id_is_valid(model) || hive_pid_starttime((int) pid, &now_st) < 0 || now_st != (uint64_t) st) {
                log_info("Worker %s (pid %lld) from a previous hive is gone: cleaning up", model, (long long) pid);
                (void) unlink(sock);
                (void) unlink(path);
                return 0;
        }
        pidfd = pidfd_open_compat((int) pid);
        if (pidfd < 0)
                return log_warning_errno(pidfd, "Cannot watch worker pid %lld: %m", (long long) pid);

        pthread_mutex_lock(&h->lock);
        if (hive_worker_find(h, model)) {
                pthread_mutex_unlock(&h->lock);
                close(pidfd);
                return 0;
        }
        r = hive_worker_new_locked(h, model, &w);
        if (r < 0) {
                pthread_mutex_unlock(&h->lock);
                close(pidfd);
                return r;
        }
        if (!streq(w->socket_path, sock)) {
                free(w->socket_path);
                w->socket_path = strdup(sock);
        }
        w->backend = strdup(backend ? backend : "cpu");
        w->device = (int) dev;
        w->pid = (int) pid;
        w->pidfd = pidfd;
        w->starttime = (uint64_t) st;
        w->adopted = true;
        w->started_at = started;
        w->start_usec = w->last_used_usec = hive_now_usec();
        if (keep >= -1)
                w->keep_alive_s = keep;
        w->state = HIVE_WORKER_LOADING;
        snprintf(w->sub_state, sizeof(w->sub_state), "start");
        hive_worker_ref(w);
        pthread_mutex_unlock(&h->lock);

        /* READY=1 went to the previous hive: ask the worker itself. */
        r = hive_wconn_get(w->socket_path, "/v1/ready", 2000, &status, NULL);
        pthread_mutex_lock(&h->lock);
        if (r >= 0 && status == 200 && w->state == HIVE_WORKER_LOADING) {
                w->state = HIVE_WORKER_READY;
                w->ready_usec = hive_now_usec();
                w->ready_at = hive_wall_sec();
                snprintf(w->sub_state, sizeof(w->sub_state), "running");
                snprintf(w->status_text, sizeof(w->status_text), "Serving %s", w->model);
        }
        log_struct(LOG_INFO, ((const char *[]) { "RBEE_EVENT=worker-adopt", NULL }),
                   "Adopted worker %s (pid %d, %s)", w->model, w->pid, hive_worker_state_name(w->state));
        hive_changed_locked(h);
        hive_worker_unref(h, w);
        hive_kick(h);
        pthread_mutex_unlock(&h->lock);
        return 0;
}

static int process_refresh(struct hive *h, bool initial) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;

        if (!initial)
                return 0;
        d = opendir(h->workers_dir);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        while ((de = readdir(d))) {
                _cleanup_(freep) char *p = NULL;
                if (!str_endswith(de->d_name, ".json") || de->d_name[0] == '.')
                        continue;
                if (asprintf(&p, "%s/%s", h->workers_dir, de->d_name) < 0)
                        return -ENOMEM;
                (void) adopt_one(h, p);
        }
        return 0;
}

const struct hive_units_ops hive_units_process = {
        .name = "process",
        .init = process_init,
        .done = process_done,
        .start = process_start,
        .stop = process_stop,
        .refresh = process_refresh,
        .reap = process_reap,
        .check = process_check,
};
