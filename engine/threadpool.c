/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
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

        /* Steps (rbee_pool_next()). Each thread starts on its own run of
         * a step's items, as a static split would give it (contiguous rows
         * keep the hardware's read-ahead going), takes them from the front,
         * and when it runs out takes the others' from the back. */
        struct slot *slots;
        _Alignas(64) atomic_long items_done;    /* of the step in progress */
        _Alignas(64) atomic_int steps_done;     /* steps finished in this run */
        atomic_int step_sleepers;

        /* How long a waiter spins before it sleeps: a few items of a
         * generated token, so that on a quiet machine a step rarely pays
         * for a futex wake-up (100 us measured as fast as 10 us on a busy
         * machine, and a little faster on a quiet one); with more threads
         * than CPUs, spinning only keeps the awaited thread off one. */
        long spin_ns;
};

/* One thread's run of items: the step (plus one) in the top 16 bits, then
 * the first and the end of what is left, 24 bits each. A word of an earlier
 * step means that step is over (every item was taken before the next could
 * begin), so whoever reaches it first sets it to the thread's run of the
 * new step. */
struct slot {
        _Alignas(64) _Atomic uint64_t run;
        long finished; /* items this thread finished in this step, not yet counted */
        bool holding;  /* the last item it took is in progress */
};

#define ITEM_BITS 24
#define ITEM_MASK ((1ull << ITEM_BITS) - 1)

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
        cpu_set_t set;
        int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
        p->spin_ns = n_threads <= cpus ? 100000 : 2000;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->wake, NULL);
        pthread_cond_init(&p->done, NULL);
        p->threads = calloc(n_threads, sizeof(pthread_t));
        p->slots = aligned_alloc(_Alignof(struct slot), n_threads * sizeof(struct slot));
        if (!p->threads || !p->slots) {
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
        free(p->slots);
        free(p);
        return NULL;
}

int rbee_pool_n_threads(const rbee_pool *p) {
        return p->n_threads;
}

void rbee_pool_run(rbee_pool *p, rbee_pool_fn fn, void *arg) {
        /* The lock below publishes these to the workers. */
        for (int i = 0; i < p->n_threads; i++) {
                /* Before step 0: the first look sets it up. */
                atomic_store_explicit(&p->slots[i].run, 0, memory_order_relaxed);
                p->slots[i].finished = 0;
                p->slots[i].holding = false;
        }
        atomic_store_explicit(&p->items_done, 0, memory_order_relaxed);
        atomic_store_explicit(&p->steps_done, 0, memory_order_relaxed);
        if (p->n_threads == 1) {
                fn(0, 1, arg);
                return;
        }
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

static long now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Takes an item of step s from thread t's run, from the front or the back. */
static long take(rbee_pool *p, int t, unsigned s, long n, bool front) {
        _Atomic uint64_t *w = &p->slots[t].run;
        uint64_t v = atomic_load_explicit(w, memory_order_relaxed), nv;
        const uint16_t tag = (uint16_t) (s + 1); /* 0: before the first step */
        long lo, hi, i;

        for (;;) {
                uint16_t step = (uint16_t) (v >> (2 * ITEM_BITS));
                if (step == tag) {
                        lo = (long) (v >> ITEM_BITS & ITEM_MASK);
                        hi = (long) (v & ITEM_MASK);
                } else if ((int16_t) (step - tag) > 0)
                        return -1; /* a later step has begun: this one is all taken */
                else
                        rbee_split(n, t, p->n_threads, 1, &lo, &hi);
                if (lo >= hi)
                        return -1;
                i = front ? lo++ : --hi;
                nv = (uint64_t) tag << (2 * ITEM_BITS) | (uint64_t) lo << ITEM_BITS | (uint64_t) hi;
                if (atomic_compare_exchange_weak_explicit(w, &v, nv, memory_order_relaxed, memory_order_relaxed))
                        return i;
        }
}

long rbee_pool_next(rbee_pool *p, int ith, unsigned s, long n) {
        struct slot *me = &p->slots[ith];
        long i;

        if (me->holding)
                me->finished++;
        me->holding = true;
        if ((i = take(p, ith, s, n, true)) >= 0)
                return i;
        for (int k = 1; k < p->n_threads; k++)
                if ((i = take(p, (ith + k) % p->n_threads, s, n, false)) >= 0)
                        return i;
        me->holding = false;

        /* Nothing left to take: count what this thread did, once per step.
         * Acquire-release: the count that completes the step carries every
         * item's writes on to the waiters through the release of steps_done. */
        long f = me->finished;
        me->finished = 0;
        if (f == 0 || atomic_fetch_add_explicit(&p->items_done, f, memory_order_acq_rel) + f < n)
                return -1;
        atomic_store_explicit(&p->items_done, 0, memory_order_relaxed);
        /* Sequentially consistent with the sleepers' increment: either we
         * see them, or they see the new count in FUTEX_WAIT. */
        atomic_store(&p->steps_done, (int) s + 1);
        if (atomic_load(&p->step_sleepers) > 0)
                syscall(SYS_futex, &p->steps_done, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
        return -1;
}

void rbee_pool_wait(rbee_pool *p, unsigned s) {
        const int want = (int) s + 1;
        int d = atomic_load_explicit(&p->steps_done, memory_order_acquire);

        if (d >= want)
                return;
        for (long t0 = now_ns(), spins = 0;; spins++) {
                if ((spins & 31) == 31 && now_ns() - t0 > p->spin_ns)
                        break;
                cpu_relax();
                if (atomic_load_explicit(&p->steps_done, memory_order_acquire) >= want)
                        return;
        }
        atomic_fetch_add(&p->step_sleepers, 1);
        while ((d = atomic_load(&p->steps_done)) < want)
                syscall(SYS_futex, &p->steps_done, FUTEX_WAIT_PRIVATE, d, NULL, NULL, 0);
        atomic_fetch_sub(&p->step_sleepers, 1);
}

void rbee_split(long n, int ith, int nth, long align, long *b, long *e) {
        long blocks = (n + align - 1) / align;
        long per = blocks / nth, extra = blocks % nth;
        long b0 = ith * per + MIN((long) ith, extra);
        long b1 = b0 + per + (ith < extra ? 1 : 0);

        *b = MIN(b0 * align, n);
        *e = MIN(b1 * align, n);
}
