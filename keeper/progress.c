/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "human.h"
#include "macros.h"
#include "progress.h"
#include "term.h"

uint64_t keeper_now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

void keeper_progress_init(struct keeper_progress *p, const char *label, bool tty, bool color, bool quiet) {
        *p = (struct keeper_progress) {
                .tty = tty,
                .color = color,
                .utf8 = keeper_term_utf8(),
                .quiet = quiet,
                .start_usec = keeper_now_usec(),
                .last_quarter = -1,
        };
        snprintf(p->label, sizeof(p->label), "%s", label);
        /* The label is a file name the hive sent, on the terminal with --json too. */
        keeper_term_sanitize(p->label);
}

static void draw(struct keeper_progress *p) {
        char pct[8] = "", sizes[64], speed[KEEPER_HUMAN_MAX + 8] = "", eta[KEEPER_HUMAN_MAX + 8] = "";
        char a[KEEPER_HUMAN_MAX], b[KEEPER_HUMAN_MAX];
        unsigned cols = keeper_term_columns(STDERR_FILENO);
        size_t label_w, fixed, bar_w;
        bool show_label = true, show_rate = true;
        double frac = p->total > 0 ? (double) MIN(p->bytes, p->total) / (double) p->total : 0;

        if (p->total > 0) {
                snprintf(pct, sizeof(pct), "%3d%%", (int) (frac * 100));
                snprintf(sizes, sizeof(sizes), "%s/%s", keeper_human_bytes(p->bytes, a, sizeof(a)),
                         keeper_human_bytes(p->total, b, sizeof(b)));
        } else
                snprintf(sizes, sizeof(sizes), "%s", keeper_human_bytes(p->bytes, a, sizeof(a)));
        if (p->speed > 0) {
                snprintf(speed, sizeof(speed), "%s", keeper_human_rate(p->speed, a, sizeof(a)));
                if (p->total > p->bytes)
                        snprintf(eta, sizeof(eta), "ETA %s",
                                 keeper_human_duration((double) (p->total - p->bytes) / p->speed, b, sizeof(b)));
        }

        label_w = keeper_term_width(p->label, strlen(p->label));
        for (;;) {
                fixed = (show_label ? label_w + 1 : 0) + strlen(pct) + 1 + 2 + 1 + strlen(sizes) +
                        (show_rate ? 2 + strlen(speed) + (eta[0] ? 2 + strlen(eta) : 0) : 0);
                if (fixed + 10 <= cols || (!show_label && !show_rate))
                        break;
                if (show_rate)
                        show_rate = false;
                else
                        show_label = false;
        }
        bar_w = cols > fixed + 10 ? MIN((size_t) cols - fixed - 1, (size_t) 40) : 10;

        fputs(KEEPER_ANSI_CLEAR_LINE, stderr);
        if (show_label)
                fprintf(stderr, "%s ", p->label);
        fprintf(stderr, "%s [", pct);
        if (p->color)
                fputs(KEEPER_ANSI_GREEN, stderr);
        {
                size_t full = (size_t) (frac * (double) bar_w);
                for (size_t i = 0; i < bar_w; i++)
                        fputs(i < full ? (p->utf8 ? "█" : "=") : (p->utf8 ? "░" : " "), stderr);
        }
        if (p->color)
                fputs(KEEPER_ANSI_RESET, stderr);
        fprintf(stderr, "] %s", sizes);
        if (show_rate && speed[0])
                fprintf(stderr, "  %s", speed);
        if (show_rate && eta[0])
                fprintf(stderr, "  %s", eta);
        fflush(stderr);
        p->drawn = true;
}

void keeper_progress_update(struct keeper_progress *p, uint64_t bytes, uint64_t total, double speed_bps) {
        uint64_t now = keeper_now_usec();
        double elapsed = (double) (now - p->start_usec) / 1e6;

        p->bytes = bytes;
        p->total = total;
        if (speed_bps >= 0)
                p->speed = speed_bps;
        else if (elapsed > 0.2)
                p->speed = (double) bytes / elapsed;
        if (p->quiet)
                return;
        if (p->tty) {
                if (now - p->last_draw_usec < 100000 && p->drawn && bytes < total)
                        return;
                p->last_draw_usec = now;
                draw(p);
                return;
        }
        if (total > 0) {
                int q = (int) (MIN(bytes, total) * 4 / total);
                char a[KEEPER_HUMAN_MAX], b[KEEPER_HUMAN_MAX];

                if (q > p->last_quarter) {
                        p->last_quarter = q;
                        fprintf(stderr, "%s: %d%% (%s of %s)\n", p->label, q * 25,
                                keeper_human_bytes(bytes, a, sizeof(a)), keeper_human_bytes(total, b, sizeof(b)));
                }
        }
}

void keeper_progress_clear(struct keeper_progress *p) {
        if (p->tty && p->drawn) {
                fputs(KEEPER_ANSI_CLEAR_LINE, stderr);
                fflush(stderr);
                p->drawn = false;
        }
}

void keeper_progress_finish(struct keeper_progress *p, bool ok) {
        if (p->quiet)
                return;
        if (p->tty) {
                if (ok) {
                        draw(p);
                        fputc('\n', stderr);
                } else
                        keeper_progress_clear(p);
                p->drawn = false;
        }
        fflush(stderr);
}
