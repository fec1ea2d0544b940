/* SPDX-License-Identifier: MIT */
#pragma once

/* Ctrl+C for a CLI that has work in flight on a remote hive. The first
 * SIGINT (or SIGTERM) is only recorded and wakes the event loop through a
 * pipe, so the command can cancel its job on the hive and print a summary;
 * a second one exits at once with 130. Interrupted system calls restart;
 * code that waits for input polls keeper_signals_fd() next to it. */

#include <stdbool.h>

int keeper_signals_setup(void);
/* Readable after a signal; poll it next to the transfer's sockets. */
int keeper_signals_fd(void);
/* How many SIGINT/SIGTERM arrived so far. */
unsigned keeper_signals_count(void);
/* Empty the wake-up pipe after it was seen readable. */
void keeper_signals_drain(void);
/* Forget signals seen so far (a chat goes on after a cancelled reply). */
void keeper_signals_reset(void);
/* Sleep up to usec, waking early on a signal. Returns -EINTR when one came. */
int keeper_signals_sleep(unsigned long long usec);
/* Wait until fd is readable (1) or a signal came (-EINTR). */
int keeper_signals_wait_fd(int fd);
