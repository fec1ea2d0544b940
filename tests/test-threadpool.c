/* SPDX-License-Identifier: MIT */
/* The thread pool's steps (rbee_pool_next/wait), which the forward
 * pass is built on: every item of a step is taken exactly once, no item
 * starts before the step before it has finished, counts start afresh in
 * each run, and a thread that sleeps holding no item holds nobody up. */

#include <stdatomic.h>
#include <time.h>
#include <sched.h>

#include "harness.h"
#include "macros.h"
#include "threadpool.h"

#define N_STEPS 300
#define MAX_ITEMS 37

struct job {
        rbee_pool *pool;
        atomic_int taken[N_STEPS][MAX_ITEMS];
        atomic_int finished[N_STEPS];
        atomic_int order_errors, wait_errors;
        long sleeper_ns;       /* thread 1 sleeps this long before its first step */
        atomic_long last_step_ns[64];
};

static long step_items(unsigned s) {
        return 1 + (long) (s * 7919u % MAX_ITEMS);
}

static long now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void work(int ith, int nth, void *arg) {
        struct job *j = arg;
        rbee_pool *pool = j->pool;

        (void) nth;
        if (ith == 1 && j->sleeper_ns) {
                struct timespec ts = { j->sleeper_ns / 1000000000L, j->sleeper_ns % 1000000000L };
                nanosleep(&ts, NULL);
        }
        for (unsigned s = 0; s < N_STEPS; s++) {
                long n = step_items(s);
                for (long i; (i = rbee_pool_next(pool, ith, s, n)) >= 0;) {
                        if (s > 0 && atomic_load(&j->finished[s - 1]) != step_items(s - 1))
                                atomic_fetch_add(&j->order_errors, 1);
                        atomic_fetch_add(&j->taken[s][i], 1);
                        /* Now and then give the CPU away mid-item, as a busy machine would. */
                        if ((s + i) % 13 == 0)
                                sched_yield();
                        atomic_fetch_add(&j->finished[s], 1);
                }
                rbee_pool_wait(pool, s);
                if (atomic_load(&j->finished[s]) != n)
                        atomic_fetch_add(&j->wait_errors, 1);
        }
        atomic_store(&j->last_step_ns[ith], now_ns());
}

static void run_steps(int n_threads, int runs) {
        rbee_pool *pool = NULL;
        _cleanup_(freep) struct job *j = calloc(1, sizeof(*j));

        ASSERT_NOT_NULL(j);
        ASSERT_OK(rbee_pool_new(n_threads, &pool));
        for (int r = 0; r < runs; r++) {
                memset(j, 0, sizeof(*j));
                j->pool = pool;
                rbee_pool_run(pool, work, j);
                for (unsigned s = 0; s < N_STEPS; s++) {
                        ASSERT_EQ(atomic_load(&j->finished[s]), step_items(s));
                        for (long i = 0; i < step_items(s); i++)
                                ASSERT_EQ(atomic_load(&j->taken[s][i]), 1);
                }
                ASSERT_EQ(atomic_load(&j->order_errors), 0);
                ASSERT_EQ(atomic_load(&j->wait_errors), 0);
        }
        rbee_pool_free(pool);
}

TEST(steps_one_thread) {
        run_steps(1, 3);
}

TEST(steps_two_threads) {
        run_steps(2, 20);
}

TEST(steps_three_threads) {
        run_steps(3, 20);
}

/* More threads than this machine has CPUs: waiters must sleep, not spin. */
TEST(steps_eight_threads) {
        run_steps(8, 10);
}

/* Thread 1 sleeps through the whole run: thread 0 does every item alone and
 * never waits for it (only rbee_pool_run() does, at the end). */
TEST(sleeping_thread_holds_nobody_up) {
        rbee_pool *pool = NULL;
        _cleanup_(freep) struct job *j = calloc(1, sizeof(*j));
        const long sleep_ns = 600 * 1000000L;

        ASSERT_NOT_NULL(j);
        ASSERT_OK(rbee_pool_new(2, &pool));
        j->pool = pool;
        j->sleeper_ns = sleep_ns;
        long t0 = now_ns();
        rbee_pool_run(pool, work, j);
        long t_main = atomic_load(&j->last_step_ns[0]) - t0, t_sleeper = atomic_load(&j->last_step_ns[1]) - t0;
        printf("  thread 0 done after %.1f ms, the sleeper after %.1f ms\n", t_main / 1e6, t_sleeper / 1e6);
        ASSERT_TRUE(t_sleeper >= sleep_ns);
        ASSERT_TRUE(t_main < sleep_ns / 2);
        for (unsigned s = 0; s < N_STEPS; s++)
                ASSERT_EQ(atomic_load(&j->finished[s]), step_items(s));
        ASSERT_EQ(atomic_load(&j->order_errors), 0);
        rbee_pool_free(pool);
}
