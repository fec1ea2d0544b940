/* SPDX-License-Identifier: MIT */
#pragma once

/* The contract between a fuzz target and its two drivers: libFuzzer (clang
 * -fsanitize=fuzzer, for `make fuzz`) and replay.c (any compiler, for `make
 * check`). A target defines LLVMFuzzerTestOneInput() and treats every input
 * as hostile; a broken invariant aborts through FUZZ_CHECK so that both
 * drivers report the input. */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(expr)                                                                        \
        do {                                                                                    \
                if (!(expr)) {                                                                  \
                        fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #expr); \
                        abort();                                                                \
                }                                                                               \
        } while (0)

/* A NUL-terminated copy of an input (targets whose parsers take C strings). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size) {
        char *s = malloc(size + 1);

        if (!s)
                abort();
        for (size_t i = 0; i < size; i++)
                s[i] = (char) data[i];
        s[size] = 0;
        return s;
}
