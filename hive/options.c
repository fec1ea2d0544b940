/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "http-guard.h"
#include "logging.h"
#include "options.h"
#include "strutil.h"
#include "util.h"

#ifndef RBEE_VERSION
#define RBEE_VERSION "0.1.0"
#endif

static void help(void) {
        printf("Usage: rbee-hive [OPTIONS]\n\n"
               "Manage models and workers on this machine and serve the rbee HTTP API (see hive/API.md).\n\n"
               "  -l, --listen ADDR            HOST:PORT or /unix/path (default: the socket from systemd, else 127.0.0.1:7835)\n"
               "      --state-dir DIR          catalog and models (default $RBEE_STATE_DIRECTORY, $STATE_DIRECTORY, /var/lib/rbee)\n"
               "      --runtime-dir DIR        worker sockets and registry (default $RUNTIME_DIRECTORY, /run/rbee)\n"
               "      --units MODE             auto, systemd or process (default auto: systemd when the system bus answers)\n"
               "      --workerd PATH           the worker binary for process mode (default: next to rbee-hive, else /usr/sbin/rbee-workerd)\n"
               "      --keep-alive DUR         unload idle workers after DUR (default 5m; 0 = at once, -1 = never)\n"
               "      --max-queue N            requests waiting per worker while all its slots are busy (default 4)\n"
               "      --max-workers N          workers at once (default 0 = no limit)\n"
               "      --max-jobs N             concurrent jobs (default 64)\n"
               "      --worker-threads N       --threads for each worker (default: the worker's)\n"
               "      --worker-parallel N      --parallel (slots) for each worker (default: the worker's, 4 or fewer)\n"
               "      --start-timeout DUR      how long a worker may take to become ready (default 5min)\n"
               "      --stop-timeout DUR       SIGTERM before SIGKILL (default 10s)\n"
               "      --health-interval DUR    worker health checks (default 10s; 0 = off)\n"
               "      --failed-linger DUR      how long a failed worker stays listed before it is reaped (default 30s)\n"
               "      --hf-endpoint URL        HuggingFace-compatible endpoint (default $HF_ENDPOINT, https://huggingface.co)\n"
               "      --download-retries N     retries after a reset or a stall (default 5)\n"
               "      --download-stall DUR     no data for DUR counts as a stall (default 30s)\n"
               "      --download-backoff DUR   first retry delay, doubled each time (default 1s)\n"
               "      --api-key-file PATH      require this bearer key (else $RBEE_API_KEY)\n"
               "      --stop-workers-on-exit   stop process-mode workers when the hive exits (default: they keep running)\n"
               "      --header-timeout DUR     a request's headers must arrive within DUR of the connection or of the\n"
               "                               previous response, else it is closed (default 10s; 0 = no limit)\n"
               "      --body-timeout DUR       a request's body must arrive within DUR of its headers\n"
               "                               (default 30s; 0 = no limit)\n"
               "      --max-conns-per-peer N   connections one client address (IPv6: its /64) may hold; loopback and\n"
               "                               unix clients are exempt (default 64; 0 = no limit)\n"
               "      --cap-local-peers        apply --max-conns-per-peer to loopback and unix clients too\n"
               "      --log-level LEVEL        err, warning, notice, info (default), debug\n"
               "  -h, --help                   this help\n"
               "      --version                print the version\n");
}

static int bad(const char *opt, const char *val, const char *what) {
        fprintf(stderr, "rbee-hive: invalid value for %s: '%s' (%s)\n", opt, val, what);
        return -EINVAL;
}

static int set_str(char **dst, const char *v) {
        char *s = strdup(v);

        if (!s)
                return -ENOMEM;
        free(*dst);
        *dst = s;
        return 0;
}

static const char *env_nonempty(const char *name) {
        const char *v = getenv(name);
        return v && *v ? v : NULL;
}

/* $STATE_DIRECTORY may list several directories separated by ':'; take the first. */
static int first_dir(const char *v, char **ret) {
        const char *colon = strchr(v, ':');
        *ret = colon ? strndup(v, (size_t) (colon - v)) : strdup(v);
        return *ret ? 0 : -ENOMEM;
}

/* Workers get these paths, and unix socket addresses must be absolute. */
static int absolutize(char **p) {
        char cwd[PATH_MAX];
        char *a;

        if ((*p)[0] == '/')
                return 0;
        if (!getcwd(cwd, sizeof(cwd)))
                return -errno;
        if (asprintf(&a, "%s/%s", cwd, *p) < 0)
                return -ENOMEM;
        free(*p);
        *p = a;
        return 0;
}

static int default_workerd(char **ret) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

        if (n > 0) {
                self[n] = 0;
                char *slash = strrchr(self, '/');
                if (slash) {
                        *slash = 0;
                        if (asprintf(ret, "%s/rbee-workerd", self) < 0)
                                return -ENOMEM;
                        if (access(*ret, X_OK) >= 0)
                                return 0;
                        free(*ret);
                }
        }
        *ret = strdup("/usr/sbin/rbee-workerd");
        return *ret ? 0 : -ENOMEM;
}

int hive_options_parse(int argc, char **argv, struct hive_options *ret) {
        enum {
                ARG_STATE_DIR = 0x100, ARG_RUNTIME_DIR, ARG_UNITS, ARG_WORKERD, ARG_KEEP_ALIVE, ARG_MAX_QUEUE,
                ARG_MAX_WORKERS, ARG_MAX_JOBS, ARG_WORKER_THREADS, ARG_WORKER_PARALLEL, ARG_START_TIMEOUT,
                ARG_STOP_TIMEOUT, ARG_HEALTH_INTERVAL, ARG_FAILED_LINGER, ARG_HF_ENDPOINT, ARG_DL_RETRIES, ARG_DL_STALL,
                ARG_DL_BACKOFF, ARG_API_KEY_FILE, ARG_STOP_ON_EXIT, ARG_LOG_LEVEL, ARG_VERSION,
                ARG_HEADER_TIMEOUT, ARG_BODY_TIMEOUT, ARG_MAX_CONNS_PER_PEER, ARG_CAP_LOCAL_PEERS,
        };
        static const struct option longopts[] = {
                { "listen", required_argument, NULL, 'l' },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                { "runtime-dir", required_argument, NULL, ARG_RUNTIME_DIR },
                { "units", required_argument, NULL, ARG_UNITS },
                { "workerd", required_argument, NULL, ARG_WORKERD },
                { "keep-alive", required_argument, NULL, ARG_KEEP_ALIVE },
                { "max-queue", required_argument, NULL, ARG_MAX_QUEUE },
                { "max-workers", required_argument, NULL, ARG_MAX_WORKERS },
                { "max-jobs", required_argument, NULL, ARG_MAX_JOBS },
                { "worker-threads", required_argument, NULL, ARG_WORKER_THREADS },
                { "worker-parallel", required_argument, NULL, ARG_WORKER_PARALLEL },
                { "start-timeout", required_argument, NULL, ARG_START_TIMEOUT },
                { "stop-timeout", required_argument, NULL, ARG_STOP_TIMEOUT },
                { "health-interval", required_argument, NULL, ARG_HEALTH_INTERVAL },
                { "failed-linger", required_argument, NULL, ARG_FAILED_LINGER },
                { "hf-endpoint", required_argument, NULL, ARG_HF_ENDPOINT },
                { "download-retries", required_argument, NULL, ARG_DL_RETRIES },
                { "download-stall", required_argument, NULL, ARG_DL_STALL },
                { "download-backoff", required_argument, NULL, ARG_DL_BACKOFF },
                { "api-key-file", required_argument, NULL, ARG_API_KEY_FILE },
                { "stop-workers-on-exit", no_argument, NULL, ARG_STOP_ON_EXIT },
                { "header-timeout", required_argument, NULL, ARG_HEADER_TIMEOUT },
                { "body-timeout", required_argument, NULL, ARG_BODY_TIMEOUT },
                { "max-conns-per-peer", required_argument, NULL, ARG_MAX_CONNS_PER_PEER },
                { "cap-local-peers", no_argument, NULL, ARG_CAP_LOCAL_PEERS },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {}
        };
        struct hive_options o = {
                .units = HIVE_UNITS_AUTO,
                .keep_alive_s = 300,
                .max_queue = 4,
                .max_jobs = 64,
                .start_timeout_usec = 300u * 1000000u,
                .stop_timeout_usec = 10u * 1000000u,
                .health_interval_usec = 10u * 1000000u,
                .failed_linger_usec = 30u * 1000000u,
                .download_retries = 5,
                .download_stall_usec = 30u * 1000000u,
                .download_retry_base_usec = 1000000u,
                .log_level = LOG_INFO,
                .guard = { .header_timeout_usec = HTTP_GUARD_HEADER_TIMEOUT_USEC,
                           .body_timeout_usec = HTTP_GUARD_BODY_TIMEOUT_USEC,
                           .max_conns_per_peer = 64 },
                /* An eighth of the 512 connections: it takes eight addresses to fill them. */
        };
        const char *env;
        int64_t v;
        int c, idx = 0, r = 0;

        env = getenv("RBEE_LOG_LEVEL");
        if (env && log_level_from_string(env, &o.log_level) < 0)
                fprintf(stderr, "rbee-hive: ignoring RBEE_LOG_LEVEL='%s'\n", env);
        optind = 1;
        while (r >= 0 && (c = getopt_long(argc, argv, "l:h", longopts, &idx)) >= 0) {
                switch (c) {
                case 'l':
                        r = set_str(&o.listen, optarg);
                        break;
                case ARG_STATE_DIR:
                        r = set_str(&o.state_dir, optarg);
                        break;
                case ARG_RUNTIME_DIR:
                        r = set_str(&o.runtime_dir, optarg);
                        break;
                case ARG_UNITS:
                        if (streq(optarg, "auto"))
                                o.units = HIVE_UNITS_AUTO;
                        else if (streq(optarg, "process"))
                                o.units = HIVE_UNITS_PROCESS;
                        else if (streq(optarg, "systemd"))
                                o.units = HIVE_UNITS_SYSTEMD;
                        else
                                r = bad("--units", optarg, "auto, systemd or process");
                        break;
                case ARG_WORKERD:
                        r = set_str(&o.workerd, optarg);
                        break;
                case ARG_KEEP_ALIVE:
                        if (hive_keep_alive_from_string(optarg, &o.keep_alive_s) < 0)
                                r = bad("--keep-alive", optarg, "a duration such as 5m, 0 or -1");
                        break;
                case ARG_MAX_QUEUE:
                        if (parse_int64(optarg, 0, 4096, &v) < 0)
                                r = bad("--max-queue", optarg, "0-4096");
                        else
                                o.max_queue = (unsigned) v;
                        break;
                case ARG_MAX_WORKERS:
                        if (parse_int64(optarg, 0, 4096, &v) < 0)
                                r = bad("--max-workers", optarg, "0-4096");
                        else
                                o.max_workers = (unsigned) v;
                        break;
                case ARG_MAX_JOBS:
                        if (parse_int64(optarg, 1, 4096, &v) < 0)
                                r = bad("--max-jobs", optarg, "1-4096");
                        else
                                o.max_jobs = (unsigned) v;
                        break;
                case ARG_WORKER_THREADS:
                        if (parse_int64(optarg, 1, 1024, &v) < 0)
                                r = bad("--worker-threads", optarg, "1-1024");
                        else
                                o.worker_threads = (int) v;
                        break;
                case ARG_WORKER_PARALLEL:
                        /* The worker's own range. */
                        if (parse_int64(optarg, 1, 256, &v) < 0)
                                r = bad("--worker-parallel", optarg, "1-256");
                        else
                                o.worker_parallel = (unsigned) v;
                        break;
                case ARG_START_TIMEOUT:
                        if (parse_duration_usec(optarg, &o.start_timeout_usec) < 0 || !o.start_timeout_usec)
                                r = bad("--start-timeout", optarg, "a duration such as 5min");
                        break;
                case ARG_STOP_TIMEOUT:
                        if (parse_duration_usec(optarg, &o.stop_timeout_usec) < 0)
                                r = bad("--stop-timeout", optarg, "a duration such as 10s");
                        break;
                case ARG_HEALTH_INTERVAL:
                        if (parse_duration_usec(optarg, &o.health_interval_usec) < 0)
                                r = bad("--health-interval", optarg, "a duration such as 10s, or 0");
                        break;
                case ARG_FAILED_LINGER:
                        if (parse_duration_usec(optarg, &o.failed_linger_usec) < 0)
                                r = bad("--failed-linger", optarg, "a duration such as 30s");
                        break;
                case ARG_HF_ENDPOINT:
                        r = set_str(&o.hf_endpoint, optarg);
                        break;
                case ARG_DL_RETRIES:
                        if (parse_int64(optarg, 0, 100, &v) < 0)
                                r = bad("--download-retries", optarg, "0-100");
                        else
                                o.download_retries = (unsigned) v;
                        break;
                case ARG_DL_STALL:
                        if (parse_duration_usec(optarg, &o.download_stall_usec) < 0 || o.download_stall_usec < 1000000)
                                r = bad("--download-stall", optarg, "a duration of at least 1s");
                        break;
                case ARG_DL_BACKOFF:
                        if (parse_duration_usec(optarg, &o.download_retry_base_usec) < 0)
                                r = bad("--download-backoff", optarg, "a duration such as 1s or 100ms");
                        break;
                case ARG_API_KEY_FILE:
                        r = set_str(&o.api_key_file, optarg);
                        break;
                case ARG_STOP_ON_EXIT:
                        o.stop_workers_on_exit = true;
                        break;
                case ARG_HEADER_TIMEOUT:
                case ARG_BODY_TIMEOUT:
                case ARG_MAX_CONNS_PER_PEER:
                case ARG_CAP_LOCAL_PEERS:       /* long options only: idx is set */
                        r = http_guard_option(&o.guard, longopts[idx].name, optarg);
                        break;
                case ARG_LOG_LEVEL:
                        if (log_level_from_string(optarg, &o.log_level) < 0)
                                r = bad("--log-level", optarg, "err, warning, notice, info, debug or 0-7");
                        break;
                case 'h':
                        help();
                        hive_options_done(&o);
                        return 0;
                case ARG_VERSION:
                        printf("rbee-hive %s\n", RBEE_VERSION);
                        hive_options_done(&o);
                        return 0;
                default:
                        r = -EINVAL;
                }
        }
        if (r >= 0 && optind < argc) {
                fprintf(stderr, "rbee-hive: unexpected argument '%s'\n", argv[optind]);
                r = -EINVAL;
        }
        if (r >= 0 && !o.state_dir) {
                env = env_nonempty("RBEE_STATE_DIRECTORY");
                if (!env)
                        env = env_nonempty("STATE_DIRECTORY");
                r = first_dir(env ? env : "/var/lib/rbee", &o.state_dir);
        }
        if (r >= 0 && !o.runtime_dir) {
                env = env_nonempty("RUNTIME_DIRECTORY");
                r = first_dir(env ? env : "/run/rbee", &o.runtime_dir);
        }
        if (r >= 0 && !o.hf_endpoint) {
                env = env_nonempty("HF_ENDPOINT");
                r = set_str(&o.hf_endpoint, env ? env : "https://huggingface.co");
        }
        if (r >= 0 && !o.workerd) {
                env = env_nonempty("RBEE_WORKERD");
                r = env ? set_str(&o.workerd, env) : default_workerd(&o.workerd);
        }
        if (r >= 0)
                r = absolutize(&o.state_dir);
        if (r >= 0)
                r = absolutize(&o.runtime_dir);
        if (r < 0) {
                hive_options_done(&o);
                return r;
        }
        *ret = o;
        return 1;
}

void hive_options_done(struct hive_options *o) {
        free(o->listen);
        free(o->state_dir);
        free(o->runtime_dir);
        free(o->workerd);
        free(o->hf_endpoint);
        free(o->api_key_file);
        *o = (struct hive_options) {};
}
