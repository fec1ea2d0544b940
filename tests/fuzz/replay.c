/* SPDX-License-Identifier: MIT */
/* Replays a fuzz target's corpus without libFuzzer, so that `make check`
 * runs every input found so far with any compiler. Each input runs in its own
 * child, so that a crash names the input that caused it. Output follows the
 * test harness: one line for the corpus, then "N passed, N failed, N skipped".
 *
 *   fuzz-NAME                 replays RBEE_SRCDIR/tests/fuzz/corpus/NAME
 *   fuzz-NAME FILE|DIR...     replays those (e.g. a crash file) */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"

#define INPUT_TIMEOUT_S 60
#define INPUT_MAX (64u << 20)

static unsigned n_inputs, n_failed;

static int read_all(const char *path, uint8_t **ret, size_t *ret_size) {
        struct stat st;
        uint8_t *buf;
        size_t got = 0;
        int fd;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || st.st_size < 0 || (uint64_t) st.st_size > INPUT_MAX) {
                close(fd);
                return -EFBIG;
        }
        /* One byte more, so that an empty input is still a valid pointer. */
        buf = malloc((size_t) st.st_size + 1);
        if (!buf) {
                close(fd);
                return -ENOMEM;
        }
        while (got < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + got, (size_t) st.st_size - got);
                if (n <= 0) {
                        int e = n < 0 ? -errno : -EIO;
                        free(buf);
                        close(fd);
                        return e;
                }
                got += (size_t) n;
        }
        close(fd);
        /* An exact-size copy, so that ASan (SANITIZE=address) sees reads past the end. */
        uint8_t *exact = malloc(got ? got : 1);
        if (!exact) {
                free(buf);
                return -ENOMEM;
        }
        memcpy(exact, buf, got);
        free(buf);
        *ret = exact;
        *ret_size = got;
        return 0;
}

static void replay_file(const char *path) {
        uint8_t *data = NULL;
        size_t size = 0;
        int status, r;
        pid_t pid;

        n_inputs++;
        r = read_all(path, &data, &size);
        if (r < 0) {
                fprintf(stderr, "  %s: %s\n", path, strerror(-r));
                n_failed++;
                return;
        }
        fflush(NULL);
        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "  fork: %m\n");
                n_failed++;
                free(data);
                return;
        }
        if (pid == 0) {
                alarm(INPUT_TIMEOUT_S);
                (void) LLVMFuzzerTestOneInput(data, size);
                free(data);
                /* exit(), not _exit(): under SANITIZE=address LeakSanitizer
                 * checks at exit and fails the input that leaked. */
                exit(0);
        }
        free(data);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        n_failed++;
                        return;
                }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return;
        n_failed++;
        if (WIFSIGNALED(status))
                fprintf(stderr, "  %s: killed by signal %d (%s)%s\n", path, WTERMSIG(status),
                        strsignal(WTERMSIG(status)), WTERMSIG(status) == SIGALRM ? ", timed out" : "");
        else
                fprintf(stderr, "  %s: exit status %d\n", path, WEXITSTATUS(status));
}

static int by_name(const struct dirent **a, const struct dirent **b) {
        return strcmp((*a)->d_name, (*b)->d_name);
}

static int replay_path(const char *path) {
        struct dirent **ents;
        struct stat st;
        int n;

        if (stat(path, &st) < 0) {
                fprintf(stderr, "  %s: %m\n", path);
                return -errno;
        }
        if (!S_ISDIR(st.st_mode)) {
                replay_file(path);
                return 0;
        }
        n = scandir(path, &ents, NULL, by_name);
        if (n < 0) {
                fprintf(stderr, "  %s: %m\n", path);
                return -errno;
        }
        for (int i = 0; i < n; i++) {
                char p[PATH_MAX];
                if (ents[i]->d_name[0] != '.' &&
                    snprintf(p, sizeof(p), "%s/%s", path, ents[i]->d_name) < (int) sizeof(p))
                        replay_file(p);
                free(ents[i]);
        }
        free(ents);
        return 0;
}

int main(int argc, char **argv) {
        const char *prog = strrchr(argv[0], '/');
        char def[PATH_MAX];
        struct timespec a, b;
        bool bad = false;

        prog = prog ? prog + 1 : argv[0];
        signal(SIGPIPE, SIG_IGN);
        clock_gettime(CLOCK_MONOTONIC, &a);
        /* An empty input first, here: what a target sets up once (the
         * tokenizer's vocabularies) is then inherited by every child. */
        (void) LLVMFuzzerTestOneInput((const uint8_t *) "", 0);
        if (argc > 1) {
                for (int i = 1; i < argc; i++)
                        bad |= replay_path(argv[i]) < 0;
        } else {
                const char *name = strncmp(prog, "fuzz-", 5) == 0 ? prog + 5 : prog;
                snprintf(def, sizeof(def), "%s/tests/fuzz/corpus/%s", RBEE_SRCDIR, name);
                bad = replay_path(def) < 0;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (double) (b.tv_sec - a.tv_sec) * 1e3 + (double) (b.tv_nsec - a.tv_nsec) / 1e6;
        bool ok = !bad && n_failed == 0 && n_inputs > 0;
        printf("%s %s.corpus (%u inputs, %u failed, %.0f ms)\n", ok ? "ok  " : "FAIL", prog, n_inputs, n_failed, ms);
        printf("%u passed, %u failed, 0 skipped\n", ok ? 1u : 0u, ok ? 0u : 1u);
        return ok ? 0 : 1;
}
