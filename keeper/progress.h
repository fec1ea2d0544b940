/* SPDX-License-Identifier: MIT */
#pragma once

/* A one-line progress bar on stderr: percent, bar, bytes, speed and ETA,
 * redrawn at most ten times a second and fitted to the terminal. When
 * stderr is not a terminal it prints a plain line at every quarter. */

#include <stdbool.h>
#include <stdint.h>

struct keeper_progress {
        char label[160];
        bool tty, color, utf8, quiet;
        bool drawn;                     /* a bar is on the screen */
        uint64_t start_usec, last_draw_usec;
        uint64_t bytes, total;
        double speed;                   /* bytes per second */
        int last_quarter;
};

void keeper_progress_init(struct keeper_progress *p, const char *label, bool tty, bool color, bool quiet);
/* speed_bps < 0: compute it here. */
void keeper_progress_update(struct keeper_progress *p, uint64_t bytes, uint64_t total, double speed_bps);
/* Remove the bar so a message can be printed; the next update redraws it. */
void keeper_progress_clear(struct keeper_progress *p);
/* Leave the final state on screen (ok) or just clear the line. */
void keeper_progress_finish(struct keeper_progress *p, bool ok);

/* Monotonic clock in microseconds. */
uint64_t keeper_now_usec(void);
