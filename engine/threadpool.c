/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macros.h"
#include "threadpool.h"

struct rbee_pool {
        int n_threads;
        pthread_t *threads;

        pthread_mutex_t lock;
        pthread_cond_t wake;
        pthread_cond_t done;
        unsigned generation;    /* bumped per run; workers wait for a change */
        int n_running;
        bool quit;

        rbee_pool_fn fn;
        void *arg;

        /* Sense-reversing barrier. Threads spin briefly, because phases
         * between barriers are short (one matrix) and a sleep/wake costs more
         * than the wait, then sleep on a futex, so that a machine busy with
         * other work (more threads than free cores) does not burn its CPU. */
        _Alignas(64) atomic_int barrier_count;
        _Alignas(64) atomic_int barrier_sense;
        _Alignas(64) atomic_int barrier_sleepers;
};

struct worker_arg {
        rbee_pool *pool;
        int ith;
};

static void *worker_main(void *p) {
        struct worker_arg *wa = p;
        rbee_pool *pool = wa->pool;
        int ith = wa->ith;
        unsigned seen = 0;

        free(wa);
        for (;;) {
                pthread_mutex_lock(&pool->lock);
                while (pool->generation == seen && !pool->quit)
                        pthread_cond_wait(&pool->wake, &pool->lock);
                if (pool->quit) {
                        pthread_mutex_unlock(&pool->lock);
                        return NULL;
                }
                seen = pool->generation;
                rbee_pool_fn fn = pool->fn;
                void *arg = pool->arg;
                pthread_mutex_unlock(&pool->lock);

                fn(ith, pool->n_threads, arg);

                pthread_mutex_lock(&pool->lock);
                if (--pool->n_running == 0)
                        pthread_cond_signal(&pool->done);
                pthread_mutex_unlock(&pool->lock);
        }
}

int rbee_pool_new(int n_threads, rbee_pool **ret) {
        rbee_pool *p;

        if (n_threads < 1 || n_threads > 1024)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->n_threads = n_threads;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->wake, NULL);
        pthread_cond_init(&p->done, NULL);
        p->threads = calloc(n_threads, sizeof(pthread_t));
        if (!p->threads) {
                rbee_pool_free(p);
                return -ENOMEM;
        }
        for (int i = 1; i < n_threads; i++) {
                struct worker_arg *wa = malloc(sizeof(*wa));
                int r;

                if (!wa) {
                        p->n_threads = i;
                        rbee_pool_free(p);
                        return -ENOMEM;
                }
                *wa = (struct worker_arg) { p, i };
                r = pthread_create(&p->threads[i], NULL, worker_main, wa);
                if (r != 0) {
                        free(wa);
                        p->n_threads = i;
                        rbee_pool_free(p);
                        return -r;
                }
        }
        *ret = p;
        return 0;
}

rbee_pool *rbee_pool_free(rbee_pool *p) {
        if (!p)
                return NULL;
        pthread_mutex_lock(&p->lock);
        p->quit = true;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        for (int i = 1; i < p->n_threads; i++)
                if (p->threads)
                        pthread_join(p->threads[i], NULL);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->wake);
        pthread_cond_destroy(&p->done);
        free(p->threads);
        free(p);
        return NULL;
}

int rbee_pool_n_threads(const rbee_pool *p) {
        return p->n_threads;
}

void rbee_pool_run(rbee_pool *p, rbee_pool_fn fn, void *arg) {
        if (p->n_threads == 1) {
                fn(0, 1, arg);
                return;
        }
        atomic_store(&p->barrier_count, 0);
        pthread_mutex_lock(&p->lock);
        p->fn = fn;
        p->arg = arg;
        p->n_running = p->n_threads - 1;
        p->generation++;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);

        fn(0, p->n_threads, arg);

        pthread_mutex_lock(&p->lock);
        while (p->n_running > 0)
                pthread_cond_wait(&p->done, &p->lock);
        pthread_mutex_unlock(&p->lock);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
}

#define BARRIER_SPINS 4096

void rbee_pool_barrier(rbee_pool *p) {
        if (p->n_threads == 1)
                return;
        int sense = atomic_load_explicit(&p->barrier_sense, memory_order_relaxed);
        if (atomic_fetch_add_explicit(&p->barrier_count, 1, memory_order_acq_rel) == p->n_threads - 1) {
                atomic_store_explicit(&p->barrier_count, 0, memory_order_relaxed);
                atomic_store(&p->barrier_sense, !sense);
                /* Sequentially consistent with the sleepers' increment: either
                 * we see them, or they see the new sense in FUTEX_WAIT. */
                if (atomic_load(&p->barrier_sleepers) > 0)
                        syscall(SYS_futex, &p->barrier_sense, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
                return;
        }
        for (unsigned spins = 0; spins < BARRIER_SPINS; spins++) {
                if (atomic_load_explicit(&p->barrier_sense, memory_order_acquire) != sense)
                        return;
                cpu_relax();
        }
        atomic_fetch_add(&p->barrier_sleepers, 1);
        while (atomic_load(&p->barrier_sense) == sense)
                syscall(SYS_futex, &p->barrier_sense, FUTEX_WAIT_PRIVATE, sense, NULL, NULL, 0);
        atomic_fetch_sub(&p->barrier_sleepers, 1);
}

void rbee_split(long n, int ith, int nth, long align, long *b, long *e) {
        long blocks = (n + align - 1) / align;
        long per = blocks / nth, extra = blocks % nth;
        long b0 = ith * per + MIN((long) ith, extra);
        long b1 = b0 + per + (ith < extra ? 1 : 0);

        *b = MIN(b0 * align, n);
        *e = MIN(b1 * align, n);
}
