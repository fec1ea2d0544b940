/* SPDX-License-Identifier: MIT */
#pragma once

/* Deliver SIGTERM/SIGINT/... to an sd-event loop. sd_event_add_signal()
 * needs the signal blocked in every thread, but libraries start threads we
 * do not control before main() runs (OpenBLAS starts its pool from a
 * constructor), and a process-directed signal goes to any thread that does
 * not block it: the default action would then kill us. So the handler is the
 * classic self-pipe: it writes the signal number to a pipe (async-signal-safe,
 * nothing else) and the loop does the work. */

#include <stddef.h>
#include <systemd/sd-event.h>

typedef void (*signal_forward_fn)(int signo, void *userdata);

/* Install handlers for sigs (replacing SIG_IGN too, which a daemon started
 * from a shell may inherit for SIGINT) and watch the pipe from e. One set per process. */
int signal_forward_setup(sd_event *e, const int *sigs, size_t n, signal_forward_fn fn, void *userdata);
