/* SPDX-License-Identifier: MIT */
#pragma once

/* A fixed pool of worker threads for the forward pass. One rbee_pool_run()
 * per forward wakes the workers once; inside, the work function divides each
 * step among the threads and meets at rbee_pool_barrier() between steps, so
 * a token costs one wake-up, not one per matrix. */

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

/* Waits until every thread of the current run has arrived. */
void rbee_pool_barrier(rbee_pool *p);

/* Splits [0, n) into nth parts, rounded to multiples of align; thread ith gets [*b, *e). */
void rbee_split(long n, int ith, int nth, long align, long *b, long *e);
