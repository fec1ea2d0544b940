/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "macros.h"
#include "sd-signal.h"

static int pipe_fds[2] = { -1, -1 };
static signal_forward_fn forward_fn;
static void *forward_userdata;

static void on_signal(int signo) {
        int saved = errno;
        unsigned char b = (unsigned char) signo;

        /* A full pipe already holds signals the loop has not read: dropping one is fine. */
        (void) !write(pipe_fds[1], &b, 1);
        errno = saved;
}

static int on_pipe(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        unsigned char buf[64];
        ssize_t n;

        while ((n = read(fd, buf, sizeof(buf))) > 0)
                for (ssize_t i = 0; i < n; i++)
                        forward_fn(buf[i], forward_userdata);
        return 0;
}

int signal_forward_setup(sd_event *e, const int *sigs, size_t n, signal_forward_fn fn, void *userdata) {
        struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART };
        int r;

        if (pipe_fds[0] >= 0)
                return -EBUSY;
        if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0)
                return -errno;
        forward_fn = fn;
        forward_userdata = userdata;
        r = sd_event_add_io(e, NULL, pipe_fds[0], EPOLLIN, on_pipe, NULL);
        if (r < 0)
                return r;
        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < n; i++)
                if (sigaction(sigs[i], &sa, NULL) < 0)
                        return -errno;
        return 0;
}
