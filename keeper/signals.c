/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "signals.h"

static int pipe_fds[2] = { -1, -1 };
static volatile sig_atomic_t n_signals;

static void on_signal(int sig) {
        int saved = errno;

        n_signals++;
        if (n_signals >= 2) {
                /* Exit code of an interrupted command; nothing else is safe here. */
                static const char msg[] = "\nrbee: interrupted twice, exiting at once\n";
                ssize_t r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
                (void) r;
                _exit(130);
        }
        if (pipe_fds[1] >= 0) {
                ssize_t r = write(pipe_fds[1], "x", 1);
                (void) r;
        }
        errno = saved;
}

int keeper_signals_setup(void) {
        /* SA_RESTART: a write to a slow pipe must not fail because of Ctrl+C;
         * waits that must notice a signal poll the pipe instead. */
        struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART };

        if (pipe_fds[0] < 0 && pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0)
                return -errno;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
                return -errno;
        signal(SIGPIPE, SIG_IGN);
        return 0;
}

int keeper_signals_fd(void) {
        return pipe_fds[0];
}

unsigned keeper_signals_count(void) {
        return (unsigned) n_signals;
}

void keeper_signals_drain(void) {
        char buf[64];

        while (pipe_fds[0] >= 0 && read(pipe_fds[0], buf, sizeof(buf)) > 0)
                ;
}

void keeper_signals_reset(void) {
        keeper_signals_drain();
        n_signals = 0;
}

int keeper_signals_sleep(unsigned long long usec) {
        struct pollfd p = { .fd = pipe_fds[0], .events = POLLIN };
        unsigned before = keeper_signals_count();
        int ms = usec / 1000 > 600000 ? 600000 : (int) (usec / 1000);

        if (before > 0)
                return -EINTR;
        if (poll(&p, pipe_fds[0] >= 0 ? 1 : 0, ms) < 0 && errno != EINTR)
                return -errno;
        return keeper_signals_count() > before ? -EINTR : 0;
}

int keeper_signals_wait_fd(int fd) {
        unsigned before = keeper_signals_count();

        for (;;) {
                struct pollfd p[2] = {
                        { .fd = fd, .events = POLLIN },
                        { .fd = pipe_fds[0], .events = POLLIN },
                };

                /* A signal after "before" was read leaves a byte in the pipe: poll sees it. */
                if (poll(p, pipe_fds[0] >= 0 ? 2 : 1, -1) < 0 && errno != EINTR)
                        return -errno;
                if (keeper_signals_count() != before)
                        return -EINTR;
                if (p[0].revents)
                        return 1;
                if (p[1].revents)
                        keeper_signals_drain();
        }
}
