/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "http-guard.h"
#include "logging.h"
#include "options.h"
#include "rbee-engine.h"
#include "strutil.h"

static void help(void) {
        printf("Usage: rbee-workerd [OPTIONS] [--model FILE.gguf | --model-id ID]\n\n"
               "Serve one model over HTTP: rbee's /v1/inference (SSE) and the OpenAI API.\n\n"
               "  -m, --model FILE|ID       GGUF file to serve, or a model id in the hive's catalog\n"
               "      --model-id ID         model id in the hive's catalog (for ids with a '/')\n"
               "      --name NAME           name clients see (default: the id or the file's basename)\n"
               "  -l, --listen ADDR         HOST:PORT, [V6]:PORT, /unix/path or @abstract\n"
               "                            (default: the socket from the service manager, else 127.0.0.1:8080)\n"
               "      --catalog PATH        catalog database (default: $RBEE_STATE_DIRECTORY/catalog.db,\n"
               "                            /var/lib/rbee/catalog.db)\n"
               "      --api-key-file PATH   require this bearer key (else $RBEE_API_KEY; without a key\n"
               "                            only loopback and unix clients are served)\n"
               "  -t, --threads N           threads for inference (default: all CPUs)\n"
               "  -c, --ctx-size N          context size in tokens (default: the model's, at most 4096)\n"
               "  -b, --batch-size N        prompt tokens per forward pass (default 512)\n"
               "      --device N|cpu        run on CUDA device N, or on the CPU (default: what the\n"
               "                            model's catalog row says, else the CPU)\n"
               "      --chat-format NAME    chat template to use instead of the model's (chatml, llama3, ...)\n"
               "      --parallel N          requests decoded at once, batched (default 4, fewer when\n"
               "                            their KV caches would not fit in half the RAM)\n"
               "      --max-queue N         requests that may wait while all are busy (default 8)\n"
               "      --max-connections N   concurrent HTTP connections (default 64)\n"
               "      --max-body BYTES      largest request body (default 8388608)\n"
               "      --shutdown-timeout T  how long SIGTERM waits for the engine (default 5s)\n"
               "      --header-timeout T    a request's headers must arrive within T of the connection or of\n"
               "                            the previous response, else it is closed (default 10s; 0 = no limit)\n"
               "      --body-timeout T      a request's body must arrive within T of its headers (default 30s;\n"
               "                            0 = no limit)\n"
               "      --max-conns-per-peer N  connections one client address (IPv6: its /64) may hold; loopback\n"
               "                            and unix clients are exempt (default 16; 0 = no limit)\n"
               "      --cap-local-peers     apply --max-conns-per-peer to loopback and unix clients too\n"
               "      --mlock               lock the model in RAM\n"
               "      --log-level LEVEL     err, warning, notice, info (default), debug\n"
               "  -h, --help                this help\n"
               "      --version             print the version\n");
}

static int bad(const char *opt, const char *val, const char *what) {
        fprintf(stderr, "rbee-workerd: invalid value for %s: '%s' (%s)\n", opt, val, what);
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

int worker_options_parse(int argc, char **argv, struct worker_options *ret) {
        enum {
                ARG_MODEL_ID = 0x100,
                ARG_NAME,
                ARG_CATALOG,
                ARG_API_KEY_FILE,
                ARG_CHAT_FORMAT,
                ARG_MAX_QUEUE,
                ARG_MAX_CONNECTIONS,
                ARG_MAX_BODY,
                ARG_SHUTDOWN_TIMEOUT,
                ARG_MLOCK,
                ARG_LOG_LEVEL,
                ARG_VERSION,
                ARG_DEVICE,
                ARG_PARALLEL,
                ARG_HEADER_TIMEOUT,
                ARG_BODY_TIMEOUT,
                ARG_MAX_CONNS_PER_PEER,
                ARG_CAP_LOCAL_PEERS,
        };
        static const struct option longopts[] = {
                { "model", required_argument, NULL, 'm' },
                { "model-id", required_argument, NULL, ARG_MODEL_ID },
                { "name", required_argument, NULL, ARG_NAME },
                { "listen", required_argument, NULL, 'l' },
                { "catalog", required_argument, NULL, ARG_CATALOG },
                { "api-key-file", required_argument, NULL, ARG_API_KEY_FILE },
                { "threads", required_argument, NULL, 't' },
                { "ctx-size", required_argument, NULL, 'c' },
                { "batch-size", required_argument, NULL, 'b' },
                { "device", required_argument, NULL, ARG_DEVICE },
                { "chat-format", required_argument, NULL, ARG_CHAT_FORMAT },
                { "parallel", required_argument, NULL, ARG_PARALLEL },
                { "max-queue", required_argument, NULL, ARG_MAX_QUEUE },
                { "max-connections", required_argument, NULL, ARG_MAX_CONNECTIONS },
                { "max-body", required_argument, NULL, ARG_MAX_BODY },
                { "shutdown-timeout", required_argument, NULL, ARG_SHUTDOWN_TIMEOUT },
                { "header-timeout", required_argument, NULL, ARG_HEADER_TIMEOUT },
                { "body-timeout", required_argument, NULL, ARG_BODY_TIMEOUT },
                { "max-conns-per-peer", required_argument, NULL, ARG_MAX_CONNS_PER_PEER },
                { "cap-local-peers", no_argument, NULL, ARG_CAP_LOCAL_PEERS },
                { "mlock", no_argument, NULL, ARG_MLOCK },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {}
        };
        struct worker_options o = {
                .max_queue = 8,
                .max_connections = 64,
                .max_body = 8u << 20,
                .shutdown_timeout_usec = 5000000,
                .guard = { .header_timeout_usec = HTTP_GUARD_HEADER_TIMEOUT_USEC,
                           .body_timeout_usec = HTTP_GUARD_BODY_TIMEOUT_USEC,
                           .max_conns_per_peer = 16 },
                /* A quarter of the default 64 connections, and more than one
                 * client can use: past --parallel + --max-queue requests it
                 * only gets 503s. */
                .log_level = LOG_INFO,
                .device = -2,
        };
        const char *env;
        int64_t v;
        int c, idx = 0, r = 0;

        env = getenv("RBEE_LOG_LEVEL");
        if (env && log_level_from_string(env, &o.log_level) < 0)
                fprintf(stderr, "rbee-workerd: ignoring RBEE_LOG_LEVEL='%s'\n", env);

        optind = 1;
        while (r >= 0 && (c = getopt_long(argc, argv, "m:l:t:c:b:h", longopts, &idx)) >= 0) {
                switch (c) {
                case 'm':
                        r = set_str(&o.model, optarg);
                        break;
                case ARG_MODEL_ID:
                        r = set_str(&o.model_id, optarg);
                        break;
                case ARG_NAME:
                        r = set_str(&o.name, optarg);
                        break;
                case 'l':
                        r = set_str(&o.listen, optarg);
                        break;
                case ARG_CATALOG:
                        r = set_str(&o.catalog, optarg);
                        break;
                case ARG_API_KEY_FILE:
                        r = set_str(&o.api_key_file, optarg);
                        break;
                case ARG_CHAT_FORMAT:
                        r = set_str(&o.chat_format, optarg);
                        break;
                case 't':
                        if (parse_int64(optarg, 1, 1024, &v) < 0)
                                r = bad("--threads", optarg, "1-1024");
                        else
                                o.threads = (int) v;
                        break;
                case 'c':
                        if (parse_int64(optarg, 16, 1 << 20, &v) < 0)
                                r = bad("--ctx-size", optarg, "16-1048576");
                        else
                                o.ctx_size = (uint32_t) v;
                        break;
                case 'b':
                        if (parse_int64(optarg, 1, 1 << 16, &v) < 0)
                                r = bad("--batch-size", optarg, "1-65536");
                        else
                                o.batch_size = (uint32_t) v;
                        break;
                case ARG_DEVICE:
                        if (streq(optarg, "cpu"))
                                o.device = -1;
                        else if (parse_int64(optarg, 0, 1023, &v) < 0)
                                r = bad("--device", optarg, "a CUDA device index 0-1023, or cpu");
                        else
                                o.device = (int) v;
                        break;
                case ARG_PARALLEL:
                        if (parse_int64(optarg, 1, RBEE_MAX_SEQ, &v) < 0)
                                r = bad("--parallel", optarg, "1-256");
                        else
                                o.parallel = (unsigned) v;
                        break;
                case ARG_MAX_QUEUE:
                        if (parse_int64(optarg, 0, 65536, &v) < 0)
                                r = bad("--max-queue", optarg, "0-65536");
                        else
                                o.max_queue = (unsigned) v;
                        break;
                case ARG_MAX_CONNECTIONS:
                        if (parse_int64(optarg, 2, 65536, &v) < 0)
                                r = bad("--max-connections", optarg, "2-65536");
                        else
                                o.max_connections = (unsigned) v;
                        break;
                case ARG_MAX_BODY:
                        if (parse_int64(optarg, 1024, INT32_MAX, &v) < 0)
                                r = bad("--max-body", optarg, "1024-2147483647 bytes");
                        else
                                o.max_body = (uint64_t) v;
                        break;
                case ARG_SHUTDOWN_TIMEOUT:
                        if (parse_duration_usec(optarg, &o.shutdown_timeout_usec) < 0)
                                r = bad("--shutdown-timeout", optarg, "a duration such as 5s or 500ms");
                        break;
                case ARG_HEADER_TIMEOUT:
                case ARG_BODY_TIMEOUT:
                case ARG_MAX_CONNS_PER_PEER:
                case ARG_CAP_LOCAL_PEERS:       /* long options only: idx is set */
                        r = http_guard_option(&o.guard, longopts[idx].name, optarg);
                        break;
                case ARG_MLOCK:
                        o.mlock = true;
                        break;
                case ARG_LOG_LEVEL:
                        if (log_level_from_string(optarg, &o.log_level) < 0)
                                r = bad("--log-level", optarg, "err, warning, notice, info, debug or 0-7");
                        break;
                case 'h':
                        help();
                        worker_options_done(&o);
                        return 0;
                case ARG_VERSION:
                        printf("rbee-workerd %s\n", rbee_version());
                        worker_options_done(&o);
                        return 0;
                default:
                        r = -EINVAL;
                }
        }
        if (r >= 0 && optind < argc) {
                fprintf(stderr, "rbee-workerd: unexpected argument '%s'\n", argv[optind]);
                r = -EINVAL;
        }
        if (r >= 0 && !o.model && !o.model_id) {
                fprintf(stderr, "rbee-workerd: no model: pass --model FILE.gguf or --model-id ID\n");
                r = -EINVAL;
        }
        if (r >= 0 && o.model && o.model_id) {
                fprintf(stderr, "rbee-workerd: --model and --model-id are mutually exclusive\n");
                r = -EINVAL;
        }
        if (r < 0) {
                worker_options_done(&o);
                return r;
        }
        *ret = o;
        return 1;
}

void worker_options_done(struct worker_options *o) {
        free(o->model);
        free(o->model_id);
        free(o->name);
        free(o->listen);
        free(o->catalog);
        free(o->api_key_file);
        free(o->chat_format);
        *o = (struct worker_options) {};
}
