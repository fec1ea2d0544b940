/* SPDX-License-Identifier: MIT */
/* rbee-bench: prompt processing and generation speed, like llama-bench.
 * pp N: one batch of N prompt tokens from an empty cache; tg N: N tokens one
 * at a time. Each test is repeated and reported as mean +- standard deviation.
 * With --membw it also measures memory bandwidth (a STREAM-like triad) and
 * reports generation as a fraction of the bandwidth roofline. */

#include <errno.h>
#include <inttypes.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "macros.h"
#include "rbee-engine.h"

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void help(void) {
        printf("Usage: rbee-bench -m FILE [-m FILE...] [options]\n\n"
               "Measure prompt processing (pp) and generation (tg) speed.\n\n"
               "  -m, --model FILE     model (repeatable)\n"
               "  -p, --n-prompt N     prompt tokens (default 512; 0 skips)\n"
               "  -n, --n-gen N        generated tokens (default 128; 0 skips)\n"
               "  -t, --threads LIST   thread counts, comma separated (default: all CPUs)\n"
               "  -r, --repetitions N  repetitions (default 3)\n"
               "  -d, --depth N        tokens already in the cache before each test (default 0)\n"
               "  -P, --parallel N     generate N sequences at once, batched (tg: tokens/s of all)\n"
               "      --device N       run on CUDA device N (default: the CPU)\n"
               "      --membw          measure memory bandwidth and print the roofline fraction\n"
               "      --json           one JSON object per result line\n"
               "  -h, --help           this help\n");
}

struct triad_arg {
        double *a, *b, *c;
        size_t n;
};

static void *triad_thread(void *p) {
        struct triad_arg *t = p;

        for (size_t i = 0; i < t->n; i++)
                t->a[i] = t->b[i] + 3.0 * t->c[i];
        return NULL;
}

/* GB/s of a triad over arrays far larger than the caches, best of 5. */
static double measure_bandwidth(int threads) {
        const size_t n = 32u << 20; /* 3 x 256 MiB */
        double *a = malloc(n * sizeof(double)), *b = malloc(n * sizeof(double)), *c = malloc(n * sizeof(double));
        double best = 0;

        if (!a || !b || !c) {
                free(a), free(b), free(c);
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                a[i] = 0, b[i] = 1, c[i] = 2;
        for (int rep = 0; rep < 5; rep++) {
                pthread_t th[64];
                struct triad_arg args[64];
                int nt = MIN(threads, 64);
                double t0 = now_s();
                for (int i = 0; i < nt; i++) {
                        size_t lo = n * i / nt, hi = n * (i + 1) / nt;
                        args[i] = (struct triad_arg) { a + lo, b + lo, c + lo, hi - lo };
                        pthread_create(&th[i], NULL, triad_thread, &args[i]);
                }
                for (int i = 0; i < nt; i++)
                        pthread_join(th[i], NULL);
                double gbs = 3.0 * n * sizeof(double) / (now_s() - t0) / 1e9;
                best = MAX(best, gbs);
        }
        free(a), free(b), free(c);
        return best;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

/* Mean, standard deviation and median (what a shared, noisy machine is
 * best summarised by; make bench reports it). */
static void stats(const double *v, int n, double *mean, double *sd, double *median) {
        double s = 0, q = 0, sorted[100];

        for (int i = 0; i < n; i++)
                s += v[i];
        *mean = s / n;
        for (int i = 0; i < n; i++)
                q += (v[i] - *mean) * (v[i] - *mean);
        *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
        memcpy(sorted, v, n * sizeof(double));
        qsort(sorted, n, sizeof(double), cmp_double);
        *median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

/* tg of n_par sequences at once: one batched forward pass per step. */
static int run_parallel(rbee_context *ctx, int32_t n_vocab, const int32_t *toks, int depth, int n_gen, int n_par,
                        double *ret_tps) {
        struct rbee_batch_entry e[RBEE_MAX_SEQ];
        int r;

        for (int s = 0; s < n_par; s++) {
                (void) rbee_seq_truncate(ctx, s, 0);
                if (depth > 0 && (r = rbee_seq_decode(ctx, s, toks, depth)) < 0)
                        return r;
        }
        double t0 = now_s();
        for (int i = 0; i < n_gen; i++) {
                for (int s = 0; s < n_par; s++)
                        e[s] = (struct rbee_batch_entry) { (int32_t) ((i * 31 + s * 7 + 1) % n_vocab), s, true };
                r = rbee_decode_batch(ctx, e, n_par);
                if (r < 0)
                        return r;
        }
        *ret_tps = (double) n_gen * n_par / (now_s() - t0);
        return 0;
}

static int run_test(rbee_context *ctx, int32_t n_vocab, int depth, int n_prompt, int n_gen, double *ret_tps) {
        int32_t *toks;
        int r;

        toks = calloc(MAX(MAX(n_prompt, depth), 1), sizeof(int32_t));
        if (!toks)
                return -ENOMEM;
        /* Arbitrary in-vocabulary ids; speed does not depend on which. */
        for (int i = 0; i < MAX(n_prompt, depth); i++)
                toks[i] = (int32_t) ((i * 7919u + 13) % (uint32_t) n_vocab);
        if (n_prompt == 0 && rbee_context_n_seq(ctx) > 1) {
                r = run_parallel(ctx, n_vocab, toks, depth, n_gen, (int) rbee_context_n_seq(ctx), ret_tps);
                goto out;
        }

        (void) rbee_context_truncate(ctx, 0);
        if (depth > 0) {
                r = rbee_decode(ctx, toks, depth);
                if (r < 0)
                        goto out;
        }
        double t0 = now_s();
        if (n_prompt > 0) {
                r = rbee_decode(ctx, toks, n_prompt);
                if (r < 0)
                        goto out;
                *ret_tps = n_prompt / (now_s() - t0);
        } else {
                int32_t t = 1;
                for (int i = 0; i < n_gen; i++) {
                        r = rbee_decode(ctx, &t, 1);
                        if (r < 0)
                                goto out;
                        t = (t * 31 + 7) % n_vocab;
                }
                *ret_tps = n_gen / (now_s() - t0);
        }
        r = 0;
out:
        free(toks);
        return r;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "model", required_argument, NULL, 'm' },
                { "n-prompt", required_argument, NULL, 'p' },
                { "n-gen", required_argument, NULL, 'n' },
                { "threads", required_argument, NULL, 't' },
                { "repetitions", required_argument, NULL, 'r' },
                { "depth", required_argument, NULL, 'd' },
                { "parallel", required_argument, NULL, 'P' },
                { "membw", no_argument, NULL, 'B' },
                { "json", no_argument, NULL, 'J' },
                { "device", required_argument, NULL, 'D' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *models[16];
        int n_models = 0, threads[16], n_threads = 0, reps = 3;
        long n_prompt = 512, n_gen = 128, depth = 0, device = -1, n_par = 1, l;
        bool membw = false, json = false;
        int c;

        while ((c = getopt_long(argc, argv, "m:p:n:t:r:d:P:h", opts, NULL)) >= 0) {
                switch (c) {
                case 'm':
                        if (n_models >= 16) {
                                fprintf(stderr, "rbee-bench: at most 16 models\n");
                                return 2;
                        }
                        models[n_models++] = optarg;
                        break;
                case 'p':
                        if (cli_parse_int(optarg, 0, 1 << 16, &n_prompt) < 0)
                                goto bad;
                        break;
                case 'n':
                        if (cli_parse_int(optarg, 0, 1 << 16, &n_gen) < 0)
                                goto bad;
                        break;
                case 'd':
                        if (cli_parse_int(optarg, 0, 1 << 20, &depth) < 0)
                                goto bad;
                        break;
                case 'r':
                        if (cli_parse_int(optarg, 1, 100, &l) < 0)
                                goto bad;
                        reps = l;
                        break;
                case 't': {
                        char *s = optarg, *tok, *save = NULL;
                        n_threads = 0;
                        while ((tok = strtok_r(s, ",", &save))) {
                                s = NULL;
                                if (n_threads >= 16 || cli_parse_int(tok, 1, 1024, &l) < 0)
                                        goto bad;
                                threads[n_threads++] = l;
                        }
                        break;
                }
                case 'B':
                        membw = true;
                        break;
                case 'J':
                        json = true;
                        break;
                case 'P':
                        if (cli_parse_int(optarg, 1, RBEE_MAX_SEQ, &n_par) < 0)
                                goto bad;
                        break;
                case 'D':
                        if (cli_parse_int(optarg, 0, 1023, &device) < 0)
                                goto bad;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        fprintf(stderr, "Try 'rbee-bench --help'.\n");
                        return 2;
                }
                continue;
        bad:
                fprintf(stderr, "rbee-bench: invalid value '%s' for %s\n", optarg, argv[optind - 1]);
                return 2;
        }
        if (n_models == 0) {
                fprintf(stderr, "rbee-bench: no model given (-m FILE); see --help\n");
                return 2;
        }
        if (n_threads == 0)
                threads[n_threads++] = 0;

        rbee_set_log(cli_log_stderr, NULL, RBEE_LOG_WARNING);

        double bw[16] = { 0 };
        if (membw)
                for (int i = 0; i < n_threads; i++) {
                        int nt = threads[i] ? threads[i] : 2;
                        bw[i] = measure_bandwidth(nt);
                        if (!json)
                                printf("memory bandwidth (triad, %d threads): %.1f GB/s\n", nt, bw[i]);
                }
        if (!json) {
                printf("| %-28s | %9s | %7s | %-7s | %3s | %-6s | %16s |%s\n", "model", "size", "params", "type",
                       "th", "test", "t/s", membw ? " roofline |" : "");
                printf("|%s|\n", "------------------------------|-----------|---------|---------|-----|--------|------------------|");
        }

        for (int mi = 0; mi < n_models; mi++) {
                _cleanup_(rbee_model_freep) rbee_model *model = NULL;
                char err[512];
                int r = rbee_model_load(models[mi], NULL, &model, err, sizeof(err));
                if (r < 0) {
                        fprintf(stderr, "rbee-bench: cannot load %s: %s\n", models[mi], err);
                        return 1;
                }
                const struct rbee_model_info *info = rbee_model_get_info(model);
                const char *base = strrchr(models[mi], '/');
                base = base ? base + 1 : models[mi];

                for (int ti = 0; ti < n_threads; ti++) {
                        _cleanup_(rbee_context_freep) rbee_context *ctx = NULL;
                        struct rbee_context_params cp;
                        rbee_context_default_params(&cp);
                        cp.n_threads = threads[ti];
                        cp.n_ctx = MAX(depth + MAX(n_prompt, n_gen) + 1, 64);
                        cp.n_batch = MAX(n_prompt, 1);
                        /* Prompt processing stays one sequence; generation takes n_par. */
                        cp.n_seq = n_par;
                        if (device >= 0) {
                                cp.backend = RBEE_BACKEND_CUDA;
                                cp.device = (int) device;
                        }
                        r = rbee_context_new(model, &cp, &ctx);
                        if (r < 0) {
                                fprintf(stderr, "rbee-bench: cannot create a context: %s\n", strerror(-r));
                                return 1;
                        }
                        for (int test = 0; test < 2; test++) {
                                int pp = test == 0 ? n_prompt : 0, tg = test == 1 ? n_gen : 0;
                                double v[100], mean, sd, median, tps = 0;
                                if (pp == 0 && tg == 0)
                                        continue;
                                /* One warm-up run faults the weights in. */
                                r = run_test(ctx, info->n_vocab, depth, pp, tg ? MIN(tg, 16) : 0, &tps);
                                for (int i = 0; r >= 0 && i < reps; i++)
                                        r = run_test(ctx, info->n_vocab, depth, pp, tg, &v[i]);
                                if (r < 0) {
                                        fprintf(stderr, "rbee-bench: decode failed: %s\n", strerror(-r));
                                        return 1;
                                }
                                stats(v, reps, &mean, &sd, &median);
                                char name[32];
                                snprintf(name, sizeof(name), "%s%d", pp ? "pp" : "tg", pp ? pp : tg);
                                if (tg && n_par > 1)
                                        snprintf(name, sizeof(name), "tg%dx%ld", tg, n_par);
                                double roof = 0;
                                if (tg && bw[ti] > 0)
                                        roof = mean / n_par * rbee_model_bytes_per_token(model) / 1e9 / bw[ti];
                                int nth = threads[ti] ? threads[ti] : 0;
                                if (json)
                                        printf("{\"model\":\"%s\",\"type\":\"%s\",\"size\":%" PRIu64 ",\"params\":%" PRIu64
                                               ",\"threads\":%d,\"test\":\"%s\",\"depth\":%ld,\"tps\":%.3f,\"sd\":%.3f,"
                                               "\"median\":%.3f,\"bytes_per_token\":%" PRIu64 ",\"bandwidth_gbs\":%.2f,\"roofline\":%.3f}\n",
                                               base, info->file_type, info->file_bytes, info->n_params, nth, name, depth,
                                               mean, sd, median, rbee_model_bytes_per_token(model), bw[ti], roof);
                                else {
                                        char tps_s[32], roof_s[16] = "";
                                        snprintf(tps_s, sizeof(tps_s), "%.2f ± %.2f", mean, sd);
                                        if (membw)
                                                snprintf(roof_s, sizeof(roof_s), " %7.0f%% |", roof * 100);
                                        printf("| %-28.28s | %6.0f MiB | %6.0fM | %-7s | %3d | %-6s | %16s |%s\n", base,
                                               info->file_bytes / 1048576.0, info->n_params / 1e6, info->file_type, nth,
                                               name, tps_s, tg ? roof_s : (membw ? "          |" : ""));
                                }
                                fflush(stdout);
                        }
                }
        }
        return 0;
}
