/* SPDX-License-Identifier: MIT */
/* rbee-bench-plot: turn rbee-bench --json lines into the table and the PNG
 * chart that `make bench` leaves behind. The table gives, per file, type
 * and thread count, the median prompt and generation speed, generation as
 * a fraction of the memory-bandwidth roofline, and ratios to llama.cpp's
 * CPU figures quoted in issue 7 (llama-bench -t 2 on the same kind of
 * 2-core machine). The PNG is written with no library: 8-bit palette
 * pixels in zlib "stored" (uncompressed) deflate blocks. */

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "macros.h"

/* llama.cpp, CPU build, 2 threads, tokens/s: pp512 and tg128 (tg of the
 * Q8_0 TinyLlama file quoted as 20-24: the middle is used). */
static const struct ref {
        const char *shape, *type;
        double pp, tg;
} refs[] = {
        { "tinyllama-1.1b", "Q4_0", 158, 48 },   { "tinyllama-1.1b", "Q4_K_M", 69, 38 },
        { "tinyllama-1.1b", "Q8_0", 90, 22 },    { "tinyllama-1.1b", "F16", 103, 9.7 },
        { "qwen2.5-0.5b", "Q4_0", 385, 66 },     { "qwen2.5-0.5b", "Q4_K_M", 192, 48 },
        { "qwen2.5-0.5b", "Q8_0", 254, 47 },     { "qwen2.5-0.5b", "F16", 266, 26 },
};
#define REF_THREADS 2

#define MAX_ROWS 128
#define MAX_GROUPS 32
#define MAX_THREADS 8

struct row {
        char shape[64], type[16];
        int threads;
        double pp, tg, roof; /* medians; roof = tg * bytes per token / bandwidth */
        char pp_name[16], tg_name[16];
};

static struct row rows[MAX_ROWS];
static int n_rows;

static const struct ref *find_ref(const char *shape, const char *type) {
        for (size_t i = 0; i < ELEMENTSOF(refs); i++)
                if (strcmp(refs[i].shape, shape) == 0 && strcmp(refs[i].type, type) == 0)
                        return &refs[i];
        return NULL;
}

static const char *jstr(struct json_object *o, const char *key) {
        struct json_object *v;

        return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static double jnum(struct json_object *o, const char *key, double def) {
        struct json_object *v;

        return json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : def;
}

/* One rbee-bench --json line. The shape is the model file's name up to
 * its last '-' (bench.sh names files SHAPE-TYPE.gguf). */
static int add_result(const char *line) {
        _cleanup_(json_object_putp) struct json_object *o = json_tokener_parse(line);
        const char *model, *type, *test;

        if (!o || !(model = jstr(o, "model")) || !(type = jstr(o, "type")) || !(test = jstr(o, "test")))
                return -EINVAL;
        char shape[64];
        snprintf(shape, sizeof(shape), "%s", model);
        char *dash = strrchr(shape, '-');
        if (dash)
                *dash = 0;
        int threads = (int) jnum(o, "threads", 0);
        double v = jnum(o, "median", jnum(o, "tps", 0));
        struct row *r = NULL;
        for (int i = 0; i < n_rows; i++)
                if (strcmp(rows[i].shape, shape) == 0 && strcmp(rows[i].type, type) == 0 && rows[i].threads == threads)
                        r = &rows[i];
        if (!r) {
                if (n_rows >= MAX_ROWS)
                        return -E2BIG;
                r = &rows[n_rows++];
                *r = (struct row) { .threads = threads };
                snprintf(r->shape, sizeof(r->shape), "%s", shape);
                snprintf(r->type, sizeof(r->type), "%s", type);
        }
        if (strncmp(test, "pp", 2) == 0) {
                r->pp = v;
                snprintf(r->pp_name, sizeof(r->pp_name), "%s", test);
        } else if (strncmp(test, "tg", 2) == 0 && !strchr(test, 'x')) {
                double bw = jnum(o, "bandwidth_gbs", 0), bpt = jnum(o, "bytes_per_token", 0);
                r->tg = v;
                r->roof = bw > 0 ? v * bpt / 1e9 / bw : 0;
                snprintf(r->tg_name, sizeof(r->tg_name), "%s", test);
        }
        return 0;
}

static void print_table(FILE *f) {
        fprintf(f, "| model | type | threads | pp tok/s | tg tok/s | tg roofline | llama.cpp pp / tg (%d threads) "
                   "| pp ratio | tg ratio |\n",
                REF_THREADS);
        fprintf(f, "|---|---|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < n_rows; i++) {
                const struct row *r = &rows[i];
                const struct ref *ref = find_ref(r->shape, r->type);
                char pp[32] = "-", tg[32] = "-", roof[16] = "-", refs_s[32] = "-", rp[16] = "-", rt[16] = "-";
                if (r->pp > 0)
                        snprintf(pp, sizeof(pp), "%.1f (%s)", r->pp, r->pp_name);
                if (r->tg > 0)
                        snprintf(tg, sizeof(tg), "%.1f (%s)", r->tg, r->tg_name);
                if (r->roof > 0)
                        snprintf(roof, sizeof(roof), "%.0f%%", r->roof * 100);
                if (ref) {
                        snprintf(refs_s, sizeof(refs_s), "%.0f / %.1f", ref->pp, ref->tg);
                        if (r->pp > 0)
                                snprintf(rp, sizeof(rp), "%.2fx", r->pp / ref->pp);
                        if (r->tg > 0)
                                snprintf(rt, sizeof(rt), "%.2fx", r->tg / ref->tg);
                }
                fprintf(f, "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", r->shape, r->type, r->threads, pp, tg, roof,
                        refs_s, rp, rt);
        }
}

/* ---- a palette image and a 5x7 font ------------------------------------ */

enum { C_WHITE, C_BLACK, C_GRID, C_TEXT, C_REF, C_T0 };
static const uint8_t palette[][3] = {
        { 255, 255, 255 }, { 0, 0, 0 }, { 225, 225, 225 }, { 90, 90, 90 }, { 235, 140, 50 },
        { 150, 190, 235 }, { 40, 100, 190 }, { 20, 50, 110 }, { 120, 180, 120 }, { 40, 120, 60 },
};
#define N_THREAD_COLORS ((int) ELEMENTSOF(palette) - C_T0)

struct image {
        int w, h;
        uint8_t *px;
};

static void fill_rect(struct image *im, int x0, int y0, int x1, int y1, uint8_t c) {
        x0 = MAX(x0, 0), y0 = MAX(y0, 0), x1 = MIN(x1, im->w), y1 = MIN(y1, im->h);
        for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++)
                        im->px[(size_t) y * im->w + x] = c;
}

/* Rows top to bottom, bit 4 the leftmost column. */
static const struct glyph {
        char c;
        uint8_t rows[7];
} font[] = {
        { '0', { 0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E } }, { '1', { 0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E } },
        { '2', { 0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F } }, { '3', { 0x1E, 0x01, 0x01, 0x0E, 0x01, 0x01, 0x1E } },
        { '4', { 0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02 } }, { '5', { 0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E } },
        { '6', { 0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E } }, { '7', { 0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08 } },
        { '8', { 0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E } }, { '9', { 0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C } },
        { 'A', { 0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11 } }, { 'B', { 0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E } },
        { 'C', { 0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E } }, { 'D', { 0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C } },
        { 'E', { 0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F } }, { 'F', { 0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10 } },
        { 'G', { 0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F } }, { 'H', { 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11 } },
        { 'I', { 0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E } }, { 'J', { 0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C } },
        { 'K', { 0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11 } }, { 'L', { 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F } },
        { 'M', { 0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11 } }, { 'N', { 0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11 } },
        { 'O', { 0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E } }, { 'P', { 0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10 } },
        { 'Q', { 0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D } }, { 'R', { 0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11 } },
        { 'S', { 0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E } }, { 'T', { 0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04 } },
        { 'U', { 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E } }, { 'V', { 0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04 } },
        { 'W', { 0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A } }, { 'X', { 0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11 } },
        { 'Y', { 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04 } }, { 'Z', { 0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F } },
        { '.', { 0, 0, 0, 0, 0, 0x0C, 0x0C } },                { '-', { 0, 0, 0, 0x1F, 0, 0, 0 } },
        { '_', { 0, 0, 0, 0, 0, 0, 0x1F } },                   { '/', { 0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10 } },
        { ':', { 0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0 } },          { '(', { 0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02 } },
        { ')', { 0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08 } }, { '%', { 0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03 } },
        { '=', { 0, 0, 0x1F, 0, 0x1F, 0, 0 } },                { '+', { 0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0 } },
        { ',', { 0, 0, 0, 0, 0x0C, 0x04, 0x08 } },
};

static int text_width(const char *s, int scale) {
        return (int) strlen(s) * 6 * scale;
}

/* Upper-case text at (x, y) = its top left corner; unknown characters are blanks. */
static void draw_text(struct image *im, int x, int y, const char *s, int scale, uint8_t c) {
        for (; *s; s++, x += 6 * scale) {
                char ch = *s >= 'a' && *s <= 'z' ? (char) (*s - 'a' + 'A') : *s;
                for (size_t g = 0; g < ELEMENTSOF(font); g++) {
                        if (font[g].c != ch)
                                continue;
                        for (int ry = 0; ry < 7; ry++)
                                for (int rx = 0; rx < 5; rx++)
                                        if (font[g].rows[ry] & (0x10 >> rx))
                                                fill_rect(im, x + rx * scale, y + ry * scale, x + (rx + 1) * scale,
                                                          y + (ry + 1) * scale, c);
                        break;
                }
        }
}

/* ---- PNG ---------------------------------------------------------------- */

static uint32_t crc_table[256];

static void crc_init(void) {
        for (uint32_t n = 0; n < 256; n++) {
                uint32_t c = n;
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
                crc_table[n] = c;
        }
}

static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
        return crc;
}

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24), p[1] = (uint8_t) (v >> 16), p[2] = (uint8_t) (v >> 8), p[3] = (uint8_t) v;
}

static int write_chunk(FILE *f, const char *type, const uint8_t *data, size_t n) {
        uint8_t hdr[8];
        uint32_t crc;

        put_be32(hdr, (uint32_t) n);
        memcpy(hdr + 4, type, 4);
        crc = crc_update(0xffffffffu, hdr + 4, 4);
        crc = crc_update(crc, data, n) ^ 0xffffffffu;
        uint8_t tail[4];
        put_be32(tail, crc);
        if (fwrite(hdr, 1, 8, f) != 8 || (n && fwrite(data, 1, n, f) != n) || fwrite(tail, 1, 4, f) != 4)
                return -EIO;
        return 0;
}

static int write_png(const struct image *im, const char *path) {
        const size_t line = (size_t) im->w + 1, raw_n = line * im->h;
        const size_t n_blocks = (raw_n + 65534) / 65535;
        _cleanup_(freep) uint8_t *raw = malloc(raw_n);
        _cleanup_(freep) uint8_t *z = malloc(2 + raw_n + 5 * n_blocks + 4);
        _cleanup_(fclosep) FILE *f = NULL;
        uint8_t ihdr[13], plte[sizeof(palette)];
        int r;

        if (!raw || !z)
                return -ENOMEM;
        /* Scanlines: filter type 0 (none), then the palette indices. */
        for (int y = 0; y < im->h; y++) {
                raw[y * line] = 0;
                memcpy(raw + y * line + 1, im->px + (size_t) y * im->w, im->w);
        }
        /* zlib: CMF/FLG (deflate, 32K window, check bits), stored blocks, Adler-32. */
        size_t zn = 0;
        z[zn++] = 0x78;
        z[zn++] = 0x01;
        for (size_t off = 0; off < raw_n;) {
                size_t len = MIN(raw_n - off, (size_t) 65535);
                z[zn++] = off + len == raw_n; /* BFINAL, BTYPE 00 */
                z[zn++] = (uint8_t) len, z[zn++] = (uint8_t) (len >> 8);
                z[zn++] = (uint8_t) ~len, z[zn++] = (uint8_t) (~len >> 8);
                memcpy(z + zn, raw + off, len);
                zn += len, off += len;
        }
        uint32_t a = 1, b = 0;
        for (size_t i = 0; i < raw_n; i++) {
                a = (a + raw[i]) % 65521;
                b = (b + a) % 65521;
        }
        put_be32(z + zn, b << 16 | a);
        zn += 4;

        put_be32(ihdr, (uint32_t) im->w);
        put_be32(ihdr + 4, (uint32_t) im->h);
        ihdr[8] = 8;  /* bit depth */
        ihdr[9] = 3;  /* palette */
        ihdr[10] = ihdr[11] = ihdr[12] = 0;
        memcpy(plte, palette, sizeof(plte));

        f = fopen(path, "wbe");
        if (!f)
                return -errno;
        crc_init();
        if (fwrite("\x89PNG\r\n\x1a\n", 1, 8, f) != 8)
                return -EIO;
        if ((r = write_chunk(f, "IHDR", ihdr, sizeof(ihdr))) < 0 || (r = write_chunk(f, "PLTE", plte, sizeof(plte))) < 0 ||
            (r = write_chunk(f, "IDAT", z, zn)) < 0 || (r = write_chunk(f, "IEND", NULL, 0)) < 0)
                return r;
        return fflush(f) == 0 ? 0 : -errno;
}

/* ---- the chart ---------------------------------------------------------- */

struct group {
        char shape[64], type[16];
};

/* 1, 2, 2.5 or 5 times a power of ten, at least v. */
static double nice_ceil(double v) {
        static const double m[] = { 1, 2, 2.5, 5 };
        double p = pow(10, floor(log10(MAX(v, 1e-9))));

        for (size_t i = 0; i < ELEMENTSOF(m); i++)
                if (m[i] * p >= v)
                        return m[i] * p;
        return 10 * p;
}

static void short_shape(const char *shape, char *out, size_t n) {
        if (strncmp(shape, "tinyllama", 9) == 0)
                snprintf(out, n, "TinyLlama");
        else if (strncmp(shape, "qwen2.5", 7) == 0)
                snprintf(out, n, "Qwen0.5B");
        else
                snprintf(out, n, "%.10s", shape);
}

static void draw_panel(struct image *im, int top, int height, bool prompt, const struct group *groups, int n_groups,
                       const int *threads, int n_threads) {
        const int left = 70, right = im->w - 20, bottom = top + height - 46, ptop = top + 40;
        double vmax = 0;

        for (int i = 0; i < n_rows; i++)
                vmax = MAX(vmax, prompt ? rows[i].pp : rows[i].tg);
        for (int g = 0; g < n_groups; g++) {
                const struct ref *ref = find_ref(groups[g].shape, groups[g].type);
                if (ref)
                        vmax = MAX(vmax, prompt ? ref->pp : ref->tg);
        }
        vmax = 5 * nice_ceil(vmax * 1.08 / 5); /* five grid steps */

        draw_text(im, left, top + 10, prompt ? "Prompt processing, tokens/s (median)" : "Generation, tokens/s (median)",
                  2, C_BLACK);
        char lab[32];
        for (int k = 0; k <= 5; k++) {
                int y = bottom - (int) ((double) k / 5 * (bottom - ptop));
                fill_rect(im, left, y, right, y + 1, k ? C_GRID : C_BLACK);
                snprintf(lab, sizeof(lab), "%g", vmax * k / 5);
                draw_text(im, left - 8 - text_width(lab, 1), y - 3, lab, 1, C_TEXT);
        }
        if (n_groups == 0)
                return;
        const int gw = (right - left) / n_groups, n_bars = n_threads + 1;
        const int bw = MAX(4, MIN(40, (gw - 16) / n_bars));
        for (int g = 0; g < n_groups; g++) {
                int x = left + g * gw + (gw - bw * n_bars) / 2;
                const struct ref *ref = find_ref(groups[g].shape, groups[g].type);
                for (int b = 0; b < n_bars; b++, x += bw) {
                        double v = 0;
                        uint8_t c = C_REF;
                        if (b < n_threads) {
                                c = (uint8_t) (C_T0 + b % N_THREAD_COLORS);
                                for (int i = 0; i < n_rows; i++)
                                        if (strcmp(rows[i].shape, groups[g].shape) == 0 &&
                                            strcmp(rows[i].type, groups[g].type) == 0 && rows[i].threads == threads[b])
                                                v = prompt ? rows[i].pp : rows[i].tg;
                        } else if (ref)
                                v = prompt ? ref->pp : ref->tg;
                        if (v <= 0)
                                continue;
                        int y = bottom - (int) (v / vmax * (bottom - ptop));
                        fill_rect(im, x + 1, y, x + bw - 1, bottom, c);
                        snprintf(lab, sizeof(lab), v < 10 ? "%.1f" : "%.0f", v);
                        draw_text(im, x + bw / 2 - text_width(lab, 1) / 2, y - 10, lab, 1, C_BLACK);
                }
                char sh[16];
                short_shape(groups[g].shape, sh, sizeof(sh));
                int cx = left + g * gw + gw / 2;
                draw_text(im, cx - text_width(sh, 1) / 2, bottom + 8, sh, 1, C_BLACK);
                draw_text(im, cx - text_width(groups[g].type, 2) / 2, bottom + 20, groups[g].type, 2, C_BLACK);
        }
}

static int write_chart(const char *path) {
        struct group groups[MAX_GROUPS];
        int threads[MAX_THREADS], n_groups = 0, n_threads = 0;

        for (int i = 0; i < n_rows; i++) {
                int g = 0, t = 0;
                while (g < n_groups && !(strcmp(groups[g].shape, rows[i].shape) == 0 && strcmp(groups[g].type, rows[i].type) == 0))
                        g++;
                if (g == n_groups && n_groups < MAX_GROUPS) {
                        /* Same sizes, both NUL-terminated. */
                        memcpy(groups[g].shape, rows[i].shape, sizeof(groups[g].shape));
                        memcpy(groups[g].type, rows[i].type, sizeof(groups[g].type));
                        n_groups++;
                }
                while (t < n_threads && threads[t] != rows[i].threads)
                        t++;
                if (t == n_threads && n_threads < MAX_THREADS)
                        threads[n_threads++] = rows[i].threads;
        }
        for (int a = 1; a < n_threads; a++) /* insertion sort: few */
                for (int b = a; b > 0 && threads[b - 1] > threads[b]; b--) {
                        int t = threads[b];
                        threads[b] = threads[b - 1];
                        threads[b - 1] = t;
                }

        struct image im = { .w = MAX(1100, 90 + n_groups * 110), .h = 720 };
        _cleanup_(freep) uint8_t *px = calloc((size_t) im.w * im.h, 1);
        if (!px)
                return -ENOMEM;
        im.px = px;
        draw_panel(&im, 0, 340, true, groups, n_groups, threads, n_threads);
        draw_panel(&im, 340, 340, false, groups, n_groups, threads, n_threads);

        /* Legend along the bottom. */
        int x = 70, y = im.h - 28;
        char lab[48];
        for (int t = 0; t <= n_threads; t++) {
                if (t < n_threads)
                        snprintf(lab, sizeof(lab), "rbee, %d thread%s", threads[t], threads[t] == 1 ? "" : "s");
                else
                        snprintf(lab, sizeof(lab), "llama.cpp, %d threads (issue 7)", REF_THREADS);
                fill_rect(&im, x, y, x + 16, y + 14, t < n_threads ? (uint8_t) (C_T0 + t % N_THREAD_COLORS) : C_REF);
                draw_text(&im, x + 22, y, lab, 2, C_BLACK);
                x += 22 + text_width(lab, 2) + 30;
        }
        return write_png(&im, path);
}

static void help(void) {
        printf("Usage: rbee-bench-plot [-o CHART.png] [RESULTS.jsonl]\n\n"
               "Read rbee-bench --json lines (a file, or standard input) and print a\n"
               "Markdown table of the median speeds, the generation roofline and the\n"
               "ratios to llama.cpp's figures; with -o also draw them as a PNG chart.\n");
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "output", required_argument, NULL, 'o' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *png = NULL;
        int c;

        while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) >= 0)
                switch (c) {
                case 'o':
                        png = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "Try 'rbee-bench-plot --help'.\n");
                        return 2;
                }
        if (argc - optind > 1) {
                fprintf(stderr, "rbee-bench-plot: one results file at most\n");
                return 2;
        }

        _cleanup_(fclosep) FILE *in = NULL;
        if (optind < argc) {
                in = fopen(argv[optind], "re");
                if (!in) {
                        fprintf(stderr, "rbee-bench-plot: cannot open %s: %m\n", argv[optind]);
                        return 1;
                }
        }
        char line[4096];
        while (fgets(line, sizeof(line), in ? in : stdin))
                if (line[0] == '{' && add_result(line) == -E2BIG) {
                        fprintf(stderr, "rbee-bench-plot: more than %d results\n", MAX_ROWS);
                        return 1;
                }
        if (n_rows == 0) {
                fprintf(stderr, "rbee-bench-plot: no results read\n");
                return 1;
        }
        print_table(stdout);
        if (png) {
                int r = write_chart(png);
                if (r < 0) {
                        fprintf(stderr, "rbee-bench-plot: cannot write %s: %s\n", png, strerror(-r));
                        return 1;
                }
        }
        return 0;
}
