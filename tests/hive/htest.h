/* SPDX-License-Identifier: MIT */
#pragma once

/* Helpers for the rbee-hive tests: run the real daemon with a loopback TCP
 * socket passed as fd 3 (as rbee-hive.socket would) and a NOTIFY_SOCKET the
 * test reads, in private state and runtime directories, and talk HTTP to it
 * with the client of tests/worker/wtest.h. Header-only: everything static. */

#include <dirent.h>
#include <sys/prctl.h>

#include "../worker/wtest.h"

struct ht_hive {
        pid_t pid;
        int port;
        char dir[PATH_MAX - 64];
        char state[PATH_MAX];
        char runtime[PATH_MAX];
        char log[PATH_MAX];
        int notify_fd;
        struct wt_worker conn;          /* only .port is used, for the wt_* client */
        bool exited;
        int status;
};

static WT_UNUSED const char *ht_model(void) {
        return harness_shared("models/stories260K.gguf");
}

/* Start rbee-hive with args (NULL-terminated, may be NULL) and env ("K=V").
 * dir: reuse these state/runtime dirs (for restarts), or NULL for fresh ones. */
static WT_UNUSED void ht_start(struct ht_hive *h, const char *dir, const char *const *args, const char *const *env) {
        const char *prog = harness_build_path("rbee-hive");
        static unsigned counter;
        char notify[108];
        int listen_fd;
        pid_t pid;

        if (access(prog, X_OK) < 0)
                SKIP("%s not built", prog);
        wt_workerd();
        memset(h, 0, sizeof(*h));
        counter++;
        if (dir)
                snprintf(h->dir, sizeof(h->dir), "%s", dir);
        else
                snprintf(h->dir, sizeof(h->dir), "%s/hive%u", harness_tmpdir(), counter);
        snprintf(h->state, sizeof(h->state), "%s/state", h->dir);
        snprintf(h->runtime, sizeof(h->runtime), "%s/run", h->dir);
        snprintf(h->log, sizeof(h->log), "%s/hive-%u.log", harness_tmpdir(), counter);
        snprintf(notify, sizeof(notify), "%s/hn-%u", harness_tmpdir(), counter);
        mkdir(h->dir, 0755);
        h->notify_fd = wt_notify_socket(notify);
        listen_fd = wt_tcp_listener(&h->port);
        h->conn.port = h->port;

        const char *argv[64];
        size_t n = 0;
        argv[n++] = prog;
        argv[n++] = "--units=process";
        argv[n++] = "--state-dir";
        argv[n++] = h->state;
        argv[n++] = "--runtime-dir";
        argv[n++] = h->runtime;
        argv[n++] = "--workerd";
        argv[n++] = wt_workerd();
        argv[n++] = "--worker-threads=1";
        argv[n++] = "--log-level=debug";
        for (size_t i = 0; args && args[i] && n < 62; i++)
                argv[n++] = args[i];
        argv[n] = NULL;

        fflush(NULL);
        pid = fork();
        if (pid < 0)
                FAIL("fork: %m");
        if (pid == 0) {
                sigset_t none;
                char pidbuf[32];
                int logfd = open(h->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                /* A failed test must not leave a hive behind. */
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                if (logfd < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0 || dup2(listen_fd, 3) < 0)
                        _exit(127);
                fcntl(3, F_SETFD, 0);
                snprintf(pidbuf, sizeof(pidbuf), "%d", (int) getpid());
                setenv("LISTEN_PID", pidbuf, 1);
                setenv("LISTEN_FDS", "1", 1);
                setenv("NOTIFY_SOCKET", notify, 1);
                unsetenv("JOURNAL_STREAM");
                unsetenv("RBEE_API_KEY");
                unsetenv("HF_TOKEN");
                unsetenv("HF_ENDPOINT");
                for (size_t i = 0; env && env[i]; i++)
                        putenv((char *) env[i]);
                execv(argv[0], (char *const *) argv);
                _exit(127);
        }
        close(listen_fd);
        h->pid = pid;
        struct wt_worker nw = { .notify_fd = h->notify_fd };
        if (!wt_notify_wait(&nw, "READY=1", 20000 * wt_slow())) {
                char *s = harness_read_file(h->log, NULL);
                FAIL("rbee-hive did not send READY=1 (notify: %s); log:\n%s", nw.notes, s);
        }
}

static WT_UNUSED void ht_dump_log(const struct ht_hive *h) {
        char *s = harness_read_file(h->log, NULL);
        size_t n = strlen(s);

        fprintf(stderr, "  --- hive log ---\n%s\n", n > 8000 ? s + n - 8000 : s);
        free(s);
}

/* SIGTERM and wait; fails on a timeout or an unclean exit. */
static WT_UNUSED void ht_stop(struct ht_hive *h) {
        struct wt_worker w = { .pid = h->pid };
        int st;

        kill(h->pid, SIGTERM);
        st = wt_wait_exit(&w, 20000 * wt_slow());
        if (st == -1) {
                kill(h->pid, SIGKILL);
                ht_dump_log(h);
                FAIL("rbee-hive did not exit after SIGTERM");
        }
        close(h->notify_fd);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                ht_dump_log(h);
                FAIL("rbee-hive exited uncleanly (status 0x%x)", st);
        }
}

static WT_UNUSED void ht_call(struct ht_hive *h, const char *method, const char *path, const char *body,
                              struct wt_response *ret) {
        wt_call(&h->conn, method, path, body, ret);
}

static WT_UNUSED void ht_register(struct ht_hive *h, const char *id, const char *path) {
        struct wt_response r;
        char *body = wt_strdup_printf("{\"id\":\"%s\",\"path\":\"%s\"}", id, path);

        ht_call(h, "POST", "/v1/models", body, &r);
        if (r.status != 201) {
                ht_dump_log(h);
                FAIL("register %s: HTTP %d: %s", id, r.status, r.body);
        }
        free(body);
        wt_response_done(&r);
}

/* Files in a hive's models directory whose names end in suffix (no dot files). */
static WT_UNUSED unsigned ht_count_model_files(const char *state, const char *suffix) {
        char *dir = wt_strdup_printf("%s/models", state);
        DIR *d = opendir(dir);
        struct dirent *de;
        unsigned n = 0;

        ASSERT_NOT_NULL(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && str_endswith(de->d_name, suffix))
                        n++;
        closedir(d);
        free(dir);
        return n;
}

static WT_UNUSED bool ht_in_catalog(struct ht_hive *h, const char *id) {
        struct wt_response r;
        char *p = wt_strdup_printf("/v1/models/%s", id);
        bool ok;

        ht_call(h, "GET", p, NULL, &r);
        ok = r.status == 200;
        wt_response_done(&r);
        free(p);
        return ok;
}

/* The worker of a model: its pid and state (pid 0 when absent). */
static WT_UNUSED int ht_worker_pid(struct ht_hive *h, const char *model, char *state, size_t n) {
        struct wt_response r;
        char *path = wt_strdup_printf("/v1/workers/%s", model);
        int pid = 0;

        ht_call(h, "GET", path, NULL, &r);
        if (state && n)
                state[0] = 0;
        if (r.status == 200) {
                struct json_object *p = wt_jget(r.json, "pid");
                pid = p && json_object_is_type(p, json_type_int) ? json_object_get_int(p) : 0;
                if (state && wt_jstr(r.json, "state"))
                        snprintf(state, n, "%s", wt_jstr(r.json, "state"));
        }
        free(path);
        wt_response_done(&r);
        return pid;
}

/* Poll (bounded) until the model's worker is in state want ("" = absent). */
static WT_UNUSED bool ht_wait_worker(struct ht_hive *h, const char *model, const char *want, int timeout_ms) {
        double deadline = wt_now_ms() + timeout_ms;
        char state[32];

        for (;;) {
                (void) ht_worker_pid(h, model, state, sizeof(state));
                if (streq(state, want) || (!want[0] && !state[0]))
                        return true;
                if (wt_now_ms() > deadline)
                        return false;
                usleep(50000);
        }
}

/* Poll (bounded) until GET /v1/models/<id> answers 200: a download is in the catalog. */
static WT_UNUSED bool ht_wait_model(struct ht_hive *h, const char *id, int timeout_ms) {
        double deadline = wt_now_ms() + timeout_ms;
        char *path = wt_strdup_printf("/v1/models/%s", id);
        struct wt_response r;
        int st;

        for (;;) {
                ht_call(h, "GET", path, NULL, &r);
                st = r.status;
                wt_response_done(&r);
                if (st == 200 || wt_now_ms() > deadline)
                        break;
                usleep(50000);
        }
        free(path);
        return st == 200;
}

static WT_UNUSED bool pid_alive(int pid) {
        char path[64], buf[512];
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        f = fopen(path, "re");
        if (!f)
                return false;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')');
        return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static WT_UNUSED bool pid_exists(int pid) {
        char path[64];

        snprintf(path, sizeof(path), "/proc/%d", pid);
        return access(path, F_OK) == 0;
}

/* Read SSE events until a terminal one; returns its name (static) and data in *ret_data. */
static WT_UNUSED const char *ht_sse_until_terminal(struct wt_http *s, unsigned *ret_tokens, char *data, size_t n) {
        static char name[64];
        const char *ev, *d;
        unsigned tokens = 0;

        while (wt_sse_next(s, &ev, &d)) {
                if (streq(ev, "token"))
                        tokens++;
                if (streq(ev, "end") || streq(ev, "error")) {
                        snprintf(name, sizeof(name), "%s", ev);
                        if (data)
                                snprintf(data, n, "%s", d);
                        if (ret_tokens)
                                *ret_tokens = tokens;
                        return name;
                }
        }
        if (ret_tokens)
                *ret_tokens = tokens;
        return NULL;
}
