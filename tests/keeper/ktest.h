/* SPDX-License-Identifier: MIT */
#pragma once

/* Helpers for the rbee CLI tests: run the real `rbee` binary with pipes or a
 * pseudo-terminal, a private config and a clean environment; a raw HTTP
 * client for checking what the hive did; and the real rbee-hive in process
 * mode on a loopback socket. Header-only: everything static. */

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>

#include "../harness.h"
#include "strutil.h"

#define KT_UNUSED __attribute__((unused))

static KT_UNUSED double kt_now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static KT_UNUSED char *kt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static KT_UNUSED char *kt_printf(const char *fmt, ...) {
        va_list ap;
        char *s;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                abort();
        va_end(ap);
        return s;
}

static KT_UNUSED const char *kt_rbee(void) {
        const char *p = harness_build_path("rbee");

        if (access(p, X_OK) < 0)
                SKIP("%s not built (run make first, or set RBEE_BUILD)", p);
        return p;
}

/* ---- growing buffers ---- */

struct kt_buf {
        char *data;
        size_t len, cap;
};

static KT_UNUSED void kt_buf_add(struct kt_buf *b, const char *p, size_t n) {
        if (b->len + n + 1 > b->cap) {
                b->cap = (b->len + n + 1) * 2;
                b->data = realloc(b->data, b->cap);
                if (!b->data)
                        abort();
        }
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = 0;
}

static KT_UNUSED const char *kt_buf_str(struct kt_buf *b) {
        if (!b->data)
                kt_buf_add(b, "", 0);
        return b->data;
}

/* ---- running rbee ---- */

enum {
        KT_PTY_OUT = 1 << 0,            /* stdout on a pseudo-terminal */
        KT_PTY_ERR = 1 << 1,            /* stderr on the same pseudo-terminal */
        KT_STDIN_PIPE = 1 << 2,         /* stdin is a pipe the test writes (else /dev/null) */
        KT_PTY_IN = 1 << 3,             /* stdin on the pseudo-terminal too (write with kt_type) */
};

struct kt_proc {
        pid_t pid;
        int out_fd, err_fd, pty_fd, in_fd;
        struct kt_buf out, err, pty;
        bool exited;
        int status;
};

/* The config file every run uses unless the test sets RBEE_CONFIG itself. */
static KT_UNUSED const char *kt_config_path(void) {
        static char p[PATH_MAX];

        if (!p[0])
                snprintf(p, sizeof(p), "%s/rbee-hives", harness_tmpdir());
        return p;
}

/* Start rbee with args (NULL-terminated, without argv[0]) and env ("K=V",
 * NULL-terminated, may be NULL). cols sets the pty width. */
static KT_UNUSED void kt_spawn(struct kt_proc *p, unsigned flags, unsigned cols, const char *const *args,
                               const char *const *env) {
        const char *prog = kt_rbee();
        int out[2] = { -1, -1 }, err[2] = { -1, -1 }, in[2] = { -1, -1 }, master = -1, slave = -1;
        const char *argv[64];
        size_t n = 0;
        pid_t pid;

        memset(p, 0, sizeof(*p));
        p->out_fd = p->err_fd = p->pty_fd = p->in_fd = -1;
        /* Before the fork: the path names this test's private directory. */
        (void) kt_config_path();
        argv[n++] = prog;
        for (size_t i = 0; args && args[i] && n < 63; i++)
                argv[n++] = args[i];
        argv[n] = NULL;

        if (flags & (KT_PTY_OUT | KT_PTY_ERR | KT_PTY_IN)) {
                struct winsize ws = { .ws_row = 40, .ws_col = (unsigned short) (cols ? cols : 100) };
                /* Containers and some CI runners have no devpts: that is the
                 * environment's limit, not a fault of the CLI under test. */
                master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
                if (master < 0)
                        SKIP("no pseudo-terminal on this machine (posix_openpt: %m)");
                if (grantpt(master) < 0 || unlockpt(master) < 0)
                        FAIL("pty: %m");
                slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
                if (slave < 0 && (errno == ENOENT || errno == ENXIO || errno == EACCES))
                        SKIP("pseudo-terminal %s cannot be opened: %m", ptsname(master));
                if (slave < 0)
                        FAIL("open pty slave: %m");
                ioctl(slave, TIOCSWINSZ, &ws);
                struct termios t;
                if (tcgetattr(slave, &t) == 0) {
                        /* Keep the bytes as written: no \n -> \r\n. */
                        t.c_oflag &= ~(tcflag_t) OPOST;
                        tcsetattr(slave, TCSANOW, &t);
                }
        }
        if (!(flags & KT_PTY_OUT) && pipe2(out, O_CLOEXEC) < 0)
                FAIL("pipe: %m");
        if (!(flags & KT_PTY_ERR) && pipe2(err, O_CLOEXEC) < 0)
                FAIL("pipe: %m");
        if ((flags & KT_STDIN_PIPE) && pipe2(in, O_CLOEXEC) < 0)
                FAIL("pipe: %m");

        fflush(NULL);
        pid = fork();
        if (pid < 0)
                FAIL("fork: %m");
        if (pid == 0) {
                sigset_t none;
                int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGPIPE, SIG_DFL);
                if (slave >= 0) {
                        setsid();
                        ioctl(slave, TIOCSCTTY, 0);
                }
                dup2((flags & KT_PTY_IN) ? slave : (flags & KT_STDIN_PIPE) ? in[0] : devnull, 0);
                dup2((flags & KT_PTY_OUT) ? slave : out[1], 1);
                dup2((flags & KT_PTY_ERR) ? slave : err[1], 2);
                static const char *const drop[] = { "NO_COLOR", "RBEE_HIVE", "RBEE_API_KEY", "RBEE_CONFIG", "COLUMNS",
                                                    "XDG_CONFIG_HOME", "JOURNAL_STREAM", "LINES" };
                for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
                        unsetenv(drop[i]);
                setenv("RBEE_CONFIG", kt_config_path(), 1);
                setenv("TERM", "xterm-256color", 1);
                setenv("LC_ALL", "C.UTF-8", 1);
                for (size_t i = 0; env && env[i]; i++)
                        putenv((char *) env[i]);
                execv(prog, (char *const *) argv);
                _exit(127);
        }
        p->pid = pid;
        if (slave >= 0)
                close(slave);
        p->pty_fd = master;
        if (out[1] >= 0)
                close(out[1]);
        if (err[1] >= 0)
                close(err[1]);
        if (in[0] >= 0)
                close(in[0]);
        p->out_fd = out[0];
        p->err_fd = err[0];
        p->in_fd = in[1];
}

static KT_UNUSED void kt_write_stdin(struct kt_proc *p, const char *s) {
        size_t n = strlen(s);

        while (n > 0) {
                ssize_t k = write(p->in_fd, s, n);
                if (k <= 0)
                        FAIL("write to rbee's stdin: %m");
                s += k;
                n -= (size_t) k;
        }
}

/* Type on the terminal (KT_PTY_IN). */
static KT_UNUSED void kt_type(struct kt_proc *p, const char *s) {
        if (write(p->pty_fd, s, strlen(s)) != (ssize_t) strlen(s))
                FAIL("write to the pty: %m");
}

static KT_UNUSED void kt_close_stdin(struct kt_proc *p) {
        if (p->in_fd >= 0)
                close(p->in_fd);
        p->in_fd = -1;
}

/* Read what is there for up to ms milliseconds; true while any output is still open. */
static KT_UNUSED bool kt_pump(struct kt_proc *p, int ms) {
        struct pollfd fds[3];
        struct kt_buf *bufs[3];
        int *fdp[3];
        nfds_t n = 0;
        char buf[65536];

        if (p->out_fd >= 0) {
                fds[n] = (struct pollfd) { .fd = p->out_fd, .events = POLLIN };
                bufs[n] = &p->out;
                fdp[n++] = &p->out_fd;
        }
        if (p->err_fd >= 0) {
                fds[n] = (struct pollfd) { .fd = p->err_fd, .events = POLLIN };
                bufs[n] = &p->err;
                fdp[n++] = &p->err_fd;
        }
        if (p->pty_fd >= 0) {
                fds[n] = (struct pollfd) { .fd = p->pty_fd, .events = POLLIN };
                bufs[n] = &p->pty;
                fdp[n++] = &p->pty_fd;
        }
        if (n == 0)
                return false;
        if (poll(fds, n, ms) <= 0)
                return true;
        for (nfds_t i = 0; i < n; i++) {
                if (!fds[i].revents)
                        continue;
                ssize_t k = read(fds[i].fd, buf, sizeof(buf));
                if (k > 0)
                        kt_buf_add(bufs[i], buf, (size_t) k);
                else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
                        /* EIO on a pty master: the other side is closed. */
                        close(fds[i].fd);
                        *fdp[i] = -1;
                }
        }
        return p->out_fd >= 0 || p->err_fd >= 0 || p->pty_fd >= 0;
}

/* Pump until where (stdout, stderr or pty buffer) contains needle. */
static KT_UNUSED bool kt_wait_for(struct kt_proc *p, struct kt_buf *where, const char *needle, int timeout_ms) {
        double deadline = kt_now_ms() + timeout_ms;

        while (kt_now_ms() < deadline) {
                if (where->data && strstr(where->data, needle))
                        return true;
                if (!kt_pump(p, 50) && !(where->data && strstr(where->data, needle)))
                        return false;
        }
        return where->data && strstr(where->data, needle);
}

/* Collect everything and reap; fails the test after timeout_ms. Returns the exit code (128+sig when killed). */
static KT_UNUSED int kt_finish(struct kt_proc *p, int timeout_ms) {
        double deadline = kt_now_ms() + timeout_ms;

        for (;;) {
                bool open_fds = kt_pump(p, 50);
                pid_t r = waitpid(p->pid, &p->status, WNOHANG);

                if (r == p->pid) {
                        p->exited = true;
                        /* Drain what is left (a pty master keeps no data after EIO). */
                        while (kt_pump(p, 20))
                                if (kt_now_ms() > deadline)
                                        break;
                        break;
                }
                (void) open_fds;
                if (kt_now_ms() > deadline) {
                        kill(p->pid, SIGKILL);
                        waitpid(p->pid, &p->status, 0);
                        FAIL("rbee did not finish in %d ms; stdout: %s\nstderr: %s\npty: %s", timeout_ms,
                             kt_buf_str(&p->out), kt_buf_str(&p->err), kt_buf_str(&p->pty));
                }
        }
        kt_close_stdin(p);
        kt_buf_str(&p->out);
        kt_buf_str(&p->err);
        kt_buf_str(&p->pty);
        if (WIFSIGNALED(p->status))
                return 128 + WTERMSIG(p->status);
        return WEXITSTATUS(p->status);
}

static KT_UNUSED void kt_proc_done(struct kt_proc *p) {
        free(p->out.data);
        free(p->err.data);
        free(p->pty.data);
        memset(p, 0, sizeof(*p));
}

/* Run to completion with pipes. */
static KT_UNUSED int kt_run(struct kt_proc *p, const char *const *args, const char *const *env) {
        kt_spawn(p, 0, 0, args, env);
        return kt_finish(p, 30000);
}

#define KT_ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })

/* Exit code check that shows the output when it is wrong. */
#define KT_ASSERT_EXIT(p, code, want)                                                            \
        do {                                                                                     \
                int _c = (code), _w = (want);                                                    \
                if (_c != _w)                                                                    \
                        FAIL("rbee exited %d, expected %d\nstdout: %s\nstderr: %s\npty: %s", _c, _w, \
                             kt_buf_str(&(p)->out), kt_buf_str(&(p)->err), kt_buf_str(&(p)->pty)); \
        } while (0)

/* ---- JSON ---- */

static KT_UNUSED struct json_object *kt_json(const char *s) {
        struct json_tokener *tok = json_tokener_new();
        struct json_object *o = json_tokener_parse_ex(tok, s, (int) strlen(s));
        size_t end = json_tokener_get_parse_end(tok);
        bool ok = o && json_tokener_get_error(tok) == json_tokener_success;

        json_tokener_free(tok);
        if (!ok)
                FAIL("not JSON: '%s'", s);
        for (const char *c = s + end; *c; c++)
                if (!strchr(" \t\r\n", *c))
                        FAIL("trailing text after the JSON document: '%s'", s + end);
        return o;
}

static KT_UNUSED struct json_object *kt_jget(struct json_object *o, const char *key) {
        struct json_object *v = NULL;

        if (!o || !json_object_object_get_ex(o, key, &v))
                return NULL;
        return v;
}

static KT_UNUSED const char *kt_jstr(struct json_object *o, const char *key) {
        struct json_object *v = kt_jget(o, key);

        return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* ---- sockets and a raw HTTP client ---- */

static KT_UNUSED int kt_listener(int *ret_port) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

        if (fd < 0)
                FAIL("socket: %m");
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(fd, 64) < 0 ||
            getsockname(fd, (struct sockaddr *) &a, &al) < 0)
                FAIL("listen: %m");
        *ret_port = ntohs(a.sin_port);
        return fd;
}

/* A port nobody listens on: bound, then closed. */
static KT_UNUSED int kt_dead_port(void) {
        int port, fd = kt_listener(&port);

        close(fd);
        return port;
}

struct kt_http {
        int status;
        struct kt_buf body;
        struct json_object *json;       /* when the body parses */
};

static KT_UNUSED void kt_http_done(struct kt_http *h) {
        free(h->body.data);
        if (h->json)
                json_object_put(h->json);
        memset(h, 0, sizeof(*h));
}

/* One HTTP/1.0 request to 127.0.0.1:port; the answer is read until close. */
static KT_UNUSED bool kt_http_call(int port, const char *method, const char *path, const char *body, int timeout_ms,
                                   struct kt_http *ret) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct kt_buf raw = {};
        double deadline = kt_now_ms() + timeout_ms;
        char *req, buf[65536], *sep;

        memset(ret, 0, sizeof(*ret));
        if (fd < 0 || connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0) {
                if (fd >= 0)
                        close(fd);
                return false;
        }
        req = kt_printf("%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\n\r\n%s",
                        method, path, body ? strlen(body) : 0, body ? body : "");
        if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t) strlen(req)) {
                free(req);
                close(fd);
                return false;
        }
        free(req);
        for (;;) {
                struct pollfd pf = { .fd = fd, .events = POLLIN };
                int left = (int) (deadline - kt_now_ms());
                ssize_t k;

                if (left <= 0 || poll(&pf, 1, left) <= 0)
                        break;
                k = read(fd, buf, sizeof(buf));
                if (k <= 0)
                        break;
                kt_buf_add(&raw, buf, (size_t) k);
        }
        close(fd);
        if (!raw.data || sscanf(raw.data, "HTTP/%*s %d", &ret->status) != 1) {
                free(raw.data);
                return false;
        }
        sep = strstr(raw.data, "\r\n\r\n");
        if (sep)
                kt_buf_add(&ret->body, sep + 4, raw.len - (size_t) (sep + 4 - raw.data));
        kt_buf_str(&ret->body);
        free(raw.data);
        ret->json = json_tokener_parse(ret->body.data);
        return true;
}

/* ---- the real hive ---- */

struct kt_hive {
        pid_t pid;
        int port;
        char url[64];
        char dir[PATH_MAX];
        char log[PATH_MAX];
};

static KT_UNUSED void kt_hive_dump_log(const struct kt_hive *h) {
        char *s = harness_read_file(h->log, NULL);
        size_t n = strlen(s);

        fprintf(stderr, "  --- hive log (%s) ---\n%s\n", h->log, n > 6000 ? s + n - 6000 : s);
        free(s);
}

/* Workers outlive their hive by design (a restarted hive adopts them), and
 * a failing test exits without stopping its hive. A guardian outside the
 * test's process group waits for the test to go away and then ends what
 * is left of this hive: the processes whose command line names its
 * directory. */
static KT_UNUSED void kt_hive_guard(const char *dir) {
        int p[2];
        pid_t pid;

        if (pipe2(p, O_CLOEXEC) < 0)
                FAIL("pipe: %m");
        fflush(NULL);
        pid = fork();
        if (pid < 0)
                FAIL("fork: %m");
        if (pid > 0) {
                /* The write end stays open in the test until it exits. */
                close(p[0]);
                return;
        }
        if (fork() != 0)
                _exit(0);
        setsid();
        close(p[1]);
        char c;
        while (read(p[0], &c, 1) < 0 && errno == EINTR)
                ;
        for (int round = 0; round < 2; round++) {
                DIR *d = opendir("/proc");
                struct dirent *de;

                while (d && (de = readdir(d))) {
                        char path[64], buf[4096];
                        int fd, self = getpid();
                        ssize_t n;
                        int pid2 = (int) strtol(de->d_name, NULL, 10);

                        if (pid2 <= 1 || pid2 == self)
                                continue;
                        snprintf(path, sizeof(path), "/proc/%d/cmdline", pid2);
                        fd = open(path, O_RDONLY | O_CLOEXEC);
                        if (fd < 0)
                                continue;
                        n = read(fd, buf, sizeof(buf) - 1);
                        close(fd);
                        if (n <= 0)
                                continue;
                        for (ssize_t i = 0; i < n; i++)
                                if (!buf[i])
                                        buf[i] = ' ';
                        buf[n] = 0;
                        if (strstr(buf, dir))
                                kill(pid2, round == 0 ? SIGTERM : SIGKILL);
                }
                if (d)
                        closedir(d);
                usleep(500000);
        }
        _exit(0);
}

/* Start rbee-hive --units=process with the socket as fd 3 (as rbee-hive.socket
 * passes it), and wait for its health answer. Skips when it is not built. */
static KT_UNUSED void kt_hive_start(struct kt_hive *h, const char *const *extra) {
        const char *prog = harness_build_path("rbee-hive"), *workerd = harness_build_path("rbee-workerd");
        static unsigned counter;
        char state[PATH_MAX + 16], run[PATH_MAX + 16];
        const char *argv[48];
        size_t n = 0;
        int lfd;

        kt_rbee();
        if (access(prog, X_OK) < 0)
                SKIP("%s is not built: the tests against the real hive need it", prog);
        if (access(workerd, X_OK) < 0)
                SKIP("%s is not built: the tests against the real hive need it", workerd);
        memset(h, 0, sizeof(*h));
        snprintf(h->dir, sizeof(h->dir), "%s/hive%u", harness_tmpdir(), ++counter);
        snprintf(h->log, sizeof(h->log), "%s/hive%u.log", harness_tmpdir(), counter);
        snprintf(state, sizeof(state), "%s/state", h->dir);
        snprintf(run, sizeof(run), "%s/run", h->dir);
        mkdir(h->dir, 0755);
        lfd = kt_listener(&h->port);
        snprintf(h->url, sizeof(h->url), "http://127.0.0.1:%d", h->port);

        argv[n++] = prog;
        argv[n++] = "--units=process";
        argv[n++] = "--state-dir";
        argv[n++] = state;
        argv[n++] = "--runtime-dir";
        argv[n++] = run;
        argv[n++] = "--workerd";
        argv[n++] = workerd;
        argv[n++] = "--worker-threads=1";
        argv[n++] = "--stop-workers-on-exit";
        for (size_t i = 0; extra && extra[i] && n < 46; i++)
                argv[n++] = extra[i];
        argv[n] = NULL;

        fflush(NULL);
        h->pid = fork();
        if (h->pid < 0)
                FAIL("fork: %m");
        if (h->pid == 0) {
                sigset_t none;
                char pid[32];
                int logfd = open(h->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                prctl(PR_SET_PDEATHSIG, SIGTERM);
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                if (logfd < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0 || dup2(lfd, 3) < 0)
                        _exit(127);
                fcntl(3, F_SETFD, 0);
                snprintf(pid, sizeof(pid), "%d", (int) getpid());
                setenv("LISTEN_PID", pid, 1);
                setenv("LISTEN_FDS", "1", 1);
                setenv("LISTEN_FDNAMES", "http", 1);
                unsetenv("NOTIFY_SOCKET");
                unsetenv("JOURNAL_STREAM");
                unsetenv("RBEE_API_KEY");
                unsetenv("HF_TOKEN");
                unsetenv("HF_ENDPOINT");
                execv(prog, (char *const *) argv);
                _exit(127);
        }
        close(lfd);
        kt_hive_guard(h->dir);

        double deadline = kt_now_ms() + 20000;
        for (;;) {
                struct kt_http r;
                int st;

                if (waitpid(h->pid, &st, WNOHANG) == h->pid) {
                        kt_hive_dump_log(h);
                        FAIL("rbee-hive exited at start (status 0x%x)", st);
                }
                if (kt_http_call(h->port, "GET", "/v1/health", NULL, 2000, &r) && r.status == 200) {
                        kt_http_done(&r);
                        return;
                }
                kt_http_done(&r);
                if (kt_now_ms() > deadline) {
                        kt_hive_dump_log(h);
                        FAIL("rbee-hive did not answer /v1/health");
                }
                usleep(20000);
        }
}

static KT_UNUSED void kt_hive_stop(struct kt_hive *h) {
        int st;
        double deadline = kt_now_ms() + 15000;

        if (h->pid <= 0)
                return;
        kill(h->pid, SIGTERM);
        while (waitpid(h->pid, &st, WNOHANG) != h->pid) {
                if (kt_now_ms() > deadline) {
                        kill(h->pid, SIGKILL);
                        waitpid(h->pid, &st, 0);
                        break;
                }
                usleep(20000);
        }
        h->pid = 0;
}

/* Register a model with the hive directly (not through rbee). */
static KT_UNUSED void kt_hive_register(struct kt_hive *h, const char *id, const char *path) {
        struct kt_http r;
        char *body = kt_printf("{\"id\":\"%s\",\"path\":\"%s\"}", id, path);

        if (!kt_http_call(h->port, "POST", "/v1/models", body, 30000, &r) || r.status != 201) {
                kt_hive_dump_log(h);
                FAIL("registering %s: HTTP %d: %s", id, r.status, kt_buf_str(&r.body));
        }
        free(body);
        kt_http_done(&r);
}

/* A model slow enough to interrupt: random weights at a width that makes a
 * token take milliseconds, with a vocabulary large enough that the end
 * token is rare. */
static KT_UNUSED const char *kt_slow_model(void) {
        static char path[PATH_MAX];
        const char *mk = harness_build_path("rbee-mkmodel");
        char *cmd;

        if (path[0])
                return path;
        if (access(mk, X_OK) < 0)
                SKIP("%s not built", mk);
        snprintf(path, sizeof(path), "%s/slow.gguf", harness_tmpdir());
        cmd = kt_printf("'%s' --shape tiny --dim 512 --layers 8 --heads 8 --kv-heads 4 --ffn 1536 --vocab 32000 "
                        "--ctx 4096 --type Q8_0 -q -o '%s'", mk, path);
        if (system(cmd) != 0)
                FAIL("%s failed", cmd);
        free(cmd);
        return path;
}
