/* SPDX-License-Identifier: MIT */

#include "unicode.h"

int rbee_utf8_decode(const uint8_t *s, size_t n, uint32_t *ret_cp) {
        uint8_t c = s[0], lo = 0x80, hi = 0xBF;
        uint32_t cp;
        size_t need;

        if (c < 0x80) {
                *ret_cp = c;
                return 1;
        }
        if (c >= 0xC2 && c <= 0xDF) {
                need = 2;
                cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
                need = 3;
                cp = c & 0x0F;
                /* Second-byte ranges exclude overlongs (E0) and surrogates (ED). */
                if (c == 0xE0)
                        lo = 0xA0;
                else if (c == 0xED)
                        hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
                need = 4;
                cp = c & 0x07;
                if (c == 0xF0)
                        lo = 0x90;
                else if (c == 0xF4)
                        hi = 0x8F;
        } else
                return -1;

        for (size_t i = 1; i < need; i++) {
                if (i >= n)
                        return 0;
                if (s[i] < lo || s[i] > hi)
                        return -(int) i;
                cp = (cp << 6) | (s[i] & 0x3F);
                lo = 0x80;
                hi = 0xBF;
        }
        *ret_cp = cp;
        return (int) need;
}

size_t rbee_utf8_next(const uint8_t *s, size_t n, uint32_t *ret_cp) {
        int r = rbee_utf8_decode(s, n, ret_cp);

        if (r > 0)
                return (size_t) r;
        *ret_cp = UINT32_MAX;
        return r < 0 ? (size_t) -r : n;
}

size_t rbee_utf8_encode(uint32_t cp, uint8_t buf[static 4]) {
        if (cp < 0x80) {
                buf[0] = (uint8_t) cp;
                return 1;
        }
        if (cp < 0x800) {
                buf[0] = (uint8_t) (0xC0 | (cp >> 6));
                buf[1] = (uint8_t) (0x80 | (cp & 0x3F));
                return 2;
        }
        if (cp < 0x10000) {
                buf[0] = (uint8_t) (0xE0 | (cp >> 12));
                buf[1] = (uint8_t) (0x80 | ((cp >> 6) & 0x3F));
                buf[2] = (uint8_t) (0x80 | (cp & 0x3F));
                return 3;
        }
        buf[0] = (uint8_t) (0xF0 | (cp >> 18));
        buf[1] = (uint8_t) (0x80 | ((cp >> 12) & 0x3F));
        buf[2] = (uint8_t) (0x80 | ((cp >> 6) & 0x3F));
        buf[3] = (uint8_t) (0x80 | (cp & 0x3F));
        return 4;
}
