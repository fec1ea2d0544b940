/* SPDX-License-Identifier: MIT */
#pragma once

/* A fixed pool of worker threads for the forward pass. One rbee_pool_run()
 * per forward wakes the workers once; inside, the threads share out the
 * items of each step (rbee_pool_next() below), so a token costs one
 * wake-up, not one per matrix. */

#include <stdbool.h>

typedef struct rbee_pool rbee_pool;
typedef void (*rbee_pool_fn)(int ith, int nth, void *arg);

/* n_threads includes the calling thread. */
int rbee_pool_new(int n_threads, rbee_pool **ret);
rbee_pool *rbee_pool_free(rbee_pool *p);
int rbee_pool_n_threads(const rbee_pool *p);

/* Runs fn(ith, n, arg) on every thread (the caller is thread 0) and returns
 * when all are done. */
void rbee_pool_run(rbee_pool *p, rbee_pool_fn fn, void *arg);

/* Work sharing without barriers. The work function of a run is a sequence
 * of steps that every thread numbers alike (0, 1, 2, ..., fewer than 32768
 * per run); step s is split into n items (1 <= n < 2^24, the same n in
 * every thread). A thread takes items with rbee_pool_next() until it returns
 * -1, and calls rbee_pool_wait(s) before it reads anything that step s
 * wrote, and before it takes from step s + 1. A thread waits only for items
 * that others hold, never for a thread that holds none: one that the
 * scheduler puts aside between items delays nobody, the others take its
 * share, and when it runs again it finds the steps it missed taken. */

/* The index of an item of step s for thread ith to do, or -1 when none is
 * left. Each call also marks the item the previous call returned finished. */
long rbee_pool_next(rbee_pool *p, int ith, unsigned s, long n);
/* Returns once every item of step s is finished. */
void rbee_pool_wait(rbee_pool *p, unsigned s);

/* Splits [0, n) into nth parts, rounded to multiples of align; thread ith gets [*b, *e). */
void rbee_split(long n, int ith, int nth, long align, long *b, long *e);
