/* SPDX-License-Identifier: MIT */
#pragma once

/* SHA-256 (FIPS 180-4) for verifying downloads and fingerprinting models. */

#include <stddef.h>
#include <stdint.h>

struct hive_sha256 {
        uint32_t h[8];
        uint64_t len;
        uint8_t buf[64];
        size_t n;
};

void hive_sha256_init(struct hive_sha256 *s);
void hive_sha256_update(struct hive_sha256 *s, const void *p, size_t n);
/* 64 lowercase hex digits and a NUL. */
void hive_sha256_hex(struct hive_sha256 *s, char out[65]);
/* Hash a whole file; cancel (may be NULL) is polled between blocks. */
int hive_sha256_file(const char *path, char out[65], const volatile int *cancel);
