/* SPDX-License-Identifier: MIT */
#pragma once

/* Small helpers shared by the engine, the daemons and the CLI: cleanup
 * attributes in the style of systemd, and a few size helpers. */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Take ownership of a pointer out of a _cleanup_ variable. */
#define TAKE_PTR(p)                     \
        ({                              \
                typeof(p) _p_ = (p);    \
                (p) = NULL;             \
                _p_;                    \
        })

#define TAKE_FD(fd)                     \
        ({                              \
                int _fd_ = (fd);        \
                (fd) = -EBADF;          \
                _fd_;                   \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}

static inline void closep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)         \
        static inline void func##p(type *p) {           \
                if (*p)                                 \
                        func(*p);                       \
        }

/* Overflow-checked arithmetic: return true on overflow. */
#define MUL_OVERFLOW(a, b, r) __builtin_mul_overflow(a, b, r)
#define ADD_OVERFLOW(a, b, r) __builtin_add_overflow(a, b, r)

static inline void *malloc_multiply(size_t n, size_t size) {
        size_t t;
        if (MUL_OVERFLOW(n, size, &t))
                return NULL;
        return malloc(t ? t : 1);
}

#define ALIGN_TO(x, a) (((x) + (a) - 1) / (a) * (a))
