/* SPDX-License-Identifier: MIT */
/* The test runner linked into every tests/test-*.c executable: it forks one
 * process per test so that a crash, an abort or a sanitizer report fails that
 * test alone, and it kills a test that runs past its timeout. */

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "macros.h"

#ifndef RBEE_SRCDIR
#define RBEE_SRCDIR "."
#endif

struct test {
        const char *name;
        harness_fn fn;
        unsigned timeout_s;
};

static struct test tests[512];
static size_t n_tests;
static char tmpdir[PATH_MAX];

void harness_register(const char *name, harness_fn fn, unsigned timeout_s) {
        if (n_tests >= sizeof(tests) / sizeof(tests[0])) {
                fprintf(stderr, "harness: too many tests\n");
                abort();
        }
        tests[n_tests++] = (struct test) { name, fn, timeout_s };
}

void harness_fail(const char *file, int line, const char *fmt, ...) {
        va_list ap;

        fflush(stdout);
        fprintf(stderr, "  %s:%d: ", file, line);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        fflush(stderr);
        _exit(1);
}

void harness_skip(const char *fmt, ...) {
        va_list ap;

        /* The parent prints the reason on the result line. */
        fprintf(stdout, "  skip: ");
        va_start(ap, fmt);
        vfprintf(stdout, fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
        fflush(stdout);
        _exit(HARNESS_EXIT_SKIP);
}

static char *xstrdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xstrdup_printf(const char *fmt, ...) {
        va_list ap;
        char *s;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                abort();
        va_end(ap);
        return s;
}

const char *harness_shared(const char *rel) {
        const char *base = getenv("RBEE_SHARED");
        char *p;

        if (!base)
                base = RBEE_SRCDIR "/../shared";
        p = xstrdup_printf("%s/%s", base, rel);
        if (access(p, R_OK) < 0)
                harness_skip("shared test data %s not found (set RBEE_SHARED or check out ../shared)", p);
        return p;
}

const char *harness_build_path(const char *name) {
        const char *base = getenv("RBEE_BUILD");

        if (!base)
                base = RBEE_SRCDIR "/build";
        return xstrdup_printf("%s/%s", base, name);
}

const char *harness_tmpdir(void) {
        if (!tmpdir[0]) {
                const char *t = getenv("TMPDIR");

                snprintf(tmpdir, sizeof(tmpdir), "%s/rbee-test-XXXXXX", t ? t : "/tmp");
                if (!mkdtemp(tmpdir))
                        harness_fail(__FILE__, __LINE__, "mkdtemp: %m");
        }
        return tmpdir;
}

char *harness_read_file(const char *path, size_t *ret_size) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t n = 0, cap = 0;

        if (!f)
                harness_fail(__FILE__, __LINE__, "open %s: %m", path);
        for (;;) {
                if (cap - n < 4096) {
                        cap = cap ? cap * 2 : 65536;
                        buf = realloc(buf, cap + 1);
                        if (!buf)
                                abort();
                }
                size_t k = fread(buf + n, 1, cap - n, f);
                if (k == 0)
                        break;
                n += k;
        }
        fclose(f);
        buf[n] = 0;
        if (ret_size)
                *ret_size = n;
        return buf;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) flag;
        (void) ftw;
        remove(path);
        return 0;
}

static int run_one(const struct test *t) {
        pid_t pid;
        int status;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                perror("fork");
                return -1;
        }
        if (pid == 0) {
                /* Own process group, so a timeout also kills what the test spawned. */
                setpgid(0, 0);
                t->fn();
                if (tmpdir[0])
                        nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
                fflush(NULL);
                _exit(0);
        }
        setpgid(pid, pid);

        /* Wait with a deadline: a SIGCHLD-free loop on a pidfd would need Linux 5.3
         * headers; sigtimedwait on SIGCHLD does the same portably. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGCHLD);
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += t->timeout_s;

        for (;;) {
                pid_t r = waitpid(pid, &status, WNOHANG);
                if (r == pid)
                        break;
                struct timespec now, left;
                clock_gettime(CLOCK_MONOTONIC, &now);
                left.tv_sec = deadline.tv_sec - now.tv_sec;
                left.tv_nsec = deadline.tv_nsec - now.tv_nsec;
                if (left.tv_nsec < 0) {
                        left.tv_nsec += 1000000000L;
                        left.tv_sec--;
                }
                if (left.tv_sec < 0) {
                        kill(-pid, SIGKILL);
                        kill(pid, SIGKILL);
                        waitpid(pid, &status, 0);
                        fprintf(stderr, "  timed out after %us\n", t->timeout_s);
                        return 1;
                }
                sigtimedwait(&set, NULL, &left);
        }
        /* Reap anything the test left behind in its group. */
        kill(-pid, SIGKILL);

        if (WIFEXITED(status)) {
                if (WEXITSTATUS(status) == 0)
                        return 0;
                if (WEXITSTATUS(status) == HARNESS_EXIT_SKIP)
                        return 2;
                return 1;
        }
        if (WIFSIGNALED(status))
                fprintf(stderr, "  killed by signal %d (%s)\n", WTERMSIG(status), strsignal(WTERMSIG(status)));
        return 1;
}

static bool selected(const char *name, int argc, char **argv) {
        if (argc <= 1)
                return true;
        for (int i = 1; i < argc; i++)
                if (strcmp(argv[i], name) == 0)
                        return true;
        return false;
}

int main(int argc, char **argv) {
        unsigned passed = 0, failed = 0, skipped = 0;
        sigset_t set;

        /* SIGCHLD must be blocked for sigtimedwait() to see it. */
        sigemptyset(&set);
        sigaddset(&set, SIGCHLD);
        sigprocmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);

        if (argc > 1 && strcmp(argv[1], "--list") == 0) {
                for (size_t i = 0; i < n_tests; i++)
                        printf("%s\n", tests[i].name);
                return 0;
        }

        const char *prog = strrchr(argv[0], '/');
        prog = prog ? prog + 1 : argv[0];

        for (size_t i = 0; i < n_tests; i++) {
                if (!selected(tests[i].name, argc, argv))
                        continue;
                struct timespec a, b;
                clock_gettime(CLOCK_MONOTONIC, &a);
                int r = run_one(&tests[i]);
                clock_gettime(CLOCK_MONOTONIC, &b);
                double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
                const char *what = r == 0 ? "ok  " : r == 2 ? "skip" : "FAIL";
                printf("%s %s.%s (%.0f ms)\n", what, prog, tests[i].name, ms);
                fflush(stdout);
                if (r == 0)
                        passed++;
                else if (r == 2)
                        skipped++;
                else
                        failed++;
        }
        printf("%u passed, %u failed, %u skipped\n", passed, failed, skipped);
        return failed ? 1 : 0;
}

size_t harness_read_ids(const char *path, int32_t *out, size_t max) {
        char *s = harness_read_file(path, NULL), *p = s;
        size_t n = 0;

        while (*p) {
                if (*p >= '0' && *p <= '9') {
                        long v = strtol(p, &p, 10);
                        ASSERT_TRUE(n < max);
                        out[n++] = (int32_t) v;
                } else
                        p++;
        }
        free(s);
        return n;
}

const char *harness_mkmodel(const char *shape_args, const char *type, const char *name) {
        const char *bin = harness_build_path("rbee-mkmodel");
        char *path, cmd[2048];

        if (access(bin, X_OK) < 0)
                SKIP("%s is not built", bin);
        if (asprintf(&path, "%s/%s-%s.gguf", harness_tmpdir(), name, type) < 0)
                abort();
        if (access(path, R_OK) == 0)
                return path;
        snprintf(cmd, sizeof(cmd), "%s %s --type %s --seed 7 -o %s >/dev/null 2>&1", bin, shape_args, type, path);
        int st = system(cmd);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                FAIL("%s failed (%d)", cmd, st);
        return path;
}

double harness_logits_rel_err(const float *x, const float *ref, int32_t n_vocab, int n_rows) {
        double worst = 0;

        for (int s = 0; s < n_rows; s++) {
                const float *a = x + (size_t) s * n_vocab, *b = ref + (size_t) s * n_vocab;
                double num = 0, den = 0;
                for (int32_t i = 0; i < n_vocab; i++) {
                        ASSERT_TRUE(isfinite(a[i]));
                        num += (a[i] - b[i]) * (double) (a[i] - b[i]);
                        den += (double) b[i] * b[i];
                }
                ASSERT_TRUE(den > 0);
                worst = MAX(worst, sqrt(num / den));
        }
        return worst;
}
