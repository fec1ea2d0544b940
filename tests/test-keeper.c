/* SPDX-License-Identifier: MIT */
/* rbee, the CLI: its parts (event-stream parser, tables, config file, unit
 * names, numbers for people), then the real binary: usage errors, --help
 * everywhere, the hive set, and every error path against an unreachable
 * port and a scripted hive that misbehaves on purpose. The happy paths
 * against the real rbee-hive are in test-keeper-hive.c. */

#include "../keeper/config.h"
#include "../keeper/human.h"
#include "../keeper/sse.h"
#include "../keeper/table.h"
#include "../keeper/term.h"
#include "../keeper/workers.h"
#include "harness.h"
#include "keeper/fakehive.h"

/* ---- the event-stream parser ---- */

struct sse_log {
        struct kt_buf text;
        int events, comments;
};

static int log_event(void *userdata, const char *event, const char *data, size_t len) {
        struct sse_log *l = userdata;
        char *s = kt_printf("[%s|%.*s]", event, (int) len, data);

        kt_buf_add(&l->text, s, strlen(s));
        free(s);
        l->events++;
        return 0;
}

static int log_comment(void *userdata, const char *text, size_t len) {
        struct sse_log *l = userdata;

        l->comments++;
        return 0;
}

static const char sse_input[] = ": hello\r\n"
                                "event: token\r\ndata: {\"text\":\"a\"}\r\n\r\n"
                                "data: line1\ndata: line2\n\n"
                                "event: end\rdata:nospace\r\r"
                                "id: 7\nretry: 100\nevent: x\n\n"       /* no data: no event */
                                "data\n\n";                              /* a bare field name: empty data */
static const char sse_expect[] = "[token|{\"text\":\"a\"}][message|line1\nline2][end|nospace][message|]";

TEST(sse_whole_and_split) {
        for (size_t step = 1; step <= sizeof(sse_input); step++) {
                struct sse_log l = {};
                struct keeper_sse s;

                keeper_sse_init(&s, log_event, log_comment, &l);
                for (size_t i = 0; i < sizeof(sse_input) - 1; i += step)
                        ASSERT_EQ(keeper_sse_feed(&s, sse_input + i, MIN(step, sizeof(sse_input) - 1 - i)), 0);
                ASSERT_STREQ(kt_buf_str(&l.text), sse_expect);
                ASSERT_EQ(l.comments, 1);
                ASSERT_FALSE(keeper_sse_pending(&s));
                keeper_sse_done(&s);
                free(l.text.data);
        }
}

static int stop_on_second(void *userdata, const char *event, const char *data, size_t len) {
        int *n = userdata;

        return ++*n == 2 ? 42 : 0;
}

TEST(sse_stop_pending_and_limits) {
        struct keeper_sse s;
        int n = 0;

        keeper_sse_init(&s, stop_on_second, NULL, &n);
        ASSERT_EQ(keeper_sse_feed(&s, "data: 1\n\ndata: 2\n\ndata: 3\n\n", 27), 42);
        ASSERT_EQ(n, 2);
        keeper_sse_done(&s);

        /* Half an event at the end of a stream is visible. */
        keeper_sse_init(&s, stop_on_second, NULL, &n);
        ASSERT_EQ(keeper_sse_feed(&s, "event: token\ndata: {", 20), 0);
        ASSERT_TRUE(keeper_sse_pending(&s));
        keeper_sse_done(&s);

        /* A line without an end past the limit fails instead of growing forever. */
        keeper_sse_init(&s, stop_on_second, NULL, &n);
        char *big = malloc(KEEPER_SSE_LINE_MAX + 10);
        memset(big, 'x', KEEPER_SSE_LINE_MAX + 10);
        memcpy(big, "data: ", 6);
        ASSERT_ERR(keeper_sse_feed(&s, big, KEEPER_SSE_LINE_MAX + 10), -E2BIG);
        keeper_sse_done(&s);
        /* ... and so does one that arrives whole, end of line included. */
        keeper_sse_init(&s, stop_on_second, NULL, &n);
        big[KEEPER_SSE_LINE_MAX + 9] = '\n';
        ASSERT_ERR(keeper_sse_feed(&s, big, KEEPER_SSE_LINE_MAX + 10), -E2BIG);
        free(big);
        keeper_sse_done(&s);
}

/* ---- tables ---- */

static char *render(struct keeper_table *t, unsigned width, bool colors) {
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);

        ASSERT_NOT_NULL(f);
        ASSERT_OK(keeper_table_print(t, f, width, colors));
        fclose(f);
        return buf;
}

TEST(table_fits_width) {
        static const char *const h[] = { "ID", "SIZE", "SOURCE" };
        static const unsigned fl[] = { KEEPER_COL_SHRINK, KEEPER_COL_RIGHT, KEEPER_COL_SHRINK };
        struct keeper_table *t = keeper_table_new(3, h, fl);
        const char *r1[] = { "tinyllama-1.1b-chat:q4_k_m", "669 MB", "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M" };
        const char *r2[] = { "stories", "1.2 MB", NULL };
        char *s;

        keeper_term_setup();
        ASSERT_NOT_NULL(t);
        ASSERT_OK(keeper_table_add(t, r1));
        ASSERT_OK(keeper_table_add(t, r2));

        /* Piped: nothing is cut. */
        s = render(t, 0, false);
        ASSERT_CONTAINS(s, "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M\n");
        ASSERT_CONTAINS(s, "stories");
        ASSERT_TRUE(strchr(s, '\033') == NULL);
        free(s);

        /* 50 columns: every line fits, the long cells are cut, numbers stay whole. */
        s = render(t, 50, true);
        for (char *line = s, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
                char *plain = strndup(line, (size_t) (nl - line)), *w = plain;
                /* Drop the escape sequences before measuring. */
                for (char *r = plain; *r;)
                        if (*r == '\033') {
                                while (*r && *r != 'm')
                                        r++;
                                if (*r)
                                        r++;
                        } else
                                *w++ = *r++;
                *w = 0;
                ASSERT_LE(keeper_term_width(plain, strlen(plain)), 50);
                free(plain);
        }
        ASSERT_CONTAINS(s, "669 MB");
        ASSERT_CONTAINS(s, "\033[1m");          /* a bold header with colors */
        ASSERT_TRUE(strstr(s, "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M") == NULL);
        free(s);
        keeper_table_free(t);
}

TEST(table_sanitizes_cells) {
        static const char *const h[] = { "A", "B" };
        struct keeper_table *t = keeper_table_new(2, h, NULL);
        const char *r[] = { "evil\033[2Jname", "two\nlines" };
        char *s;

        ASSERT_OK(keeper_table_add(t, r));
        s = render(t, 0, false);
        ASSERT_TRUE(strchr(s, '\033') == NULL);
        ASSERT_CONTAINS(s, "two lines");
        free(s);
        keeper_table_free(t);
}

/* ---- the hive config file ---- */

TEST(config_roundtrip) {
        char *path = kt_printf("%s/sub/dir/hives", harness_tmpdir()), err[512] = "";
        struct keeper_config c = {}, d = {};

        ASSERT_OK(keeper_config_load(path, &c, err, sizeof(err)));
        ASSERT_FALSE(c.exists);
        ASSERT_EQ(c.n_hives, 0);
        ASSERT_OK(keeper_config_set(&c, "gpu1", "http://10.0.0.5:7835", "/etc/rbee/gpu1.key"));
        ASSERT_OK(keeper_config_set(&c, "box", "https://box.example:7835", NULL));
        ASSERT_OK(keeper_config_set(&c, "gpu1", "http://10.0.0.6:7835", NULL)); /* replaces */
        c.default_hive = strdup("box");
        ASSERT_OK(keeper_config_save(&c, err, sizeof(err)));

        ASSERT_OK(keeper_config_load(path, &d, err, sizeof(err)));
        ASSERT_TRUE(d.exists);
        ASSERT_EQ(d.n_hives, 2);
        ASSERT_STREQ(keeper_config_find(&d, "gpu1")->url, "http://10.0.0.6:7835");
        ASSERT_TRUE(keeper_config_find(&d, "gpu1")->api_key_file == NULL);
        ASSERT_STREQ(d.default_hive, "box");
        ASSERT_OK(keeper_config_remove(&d, "box"));
        ASSERT_TRUE(d.default_hive == NULL);
        ASSERT_ERR(keeper_config_remove(&d, "box"), -ENOENT);
        keeper_config_done(&c);
        keeper_config_done(&d);
        free(path);
}

TEST(config_errors_name_the_line) {
        static const struct {
                const char *text, *want;
        } cases[] = {
                { "hive a http://x:1\nbogus line\n", ":2: unknown keyword 'bogus'" },
                { "hive a ftp://x\n", ":1: invalid URL" },
                { "# c\n\nhive -a http://x:1\n", ":3: invalid hive name" },
                { "hive a http://x:1 key=/x\n", ":1: unknown option" },
                { "hive a http://x:1\nhive a http://y:1\n", ":2: hive 'a' is defined twice" },
                { "default\n", ":1: expected 'default NAME'" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *path = kt_printf("%s/bad%zu", harness_tmpdir(), i), err[512] = "";
                struct keeper_config c = {};
                FILE *f = fopen(path, "we");

                fputs(cases[i].text, f);
                fclose(f);
                ASSERT_ERR(keeper_config_load(path, &c, err, sizeof(err)), -EBADMSG);
                ASSERT_CONTAINS(err, cases[i].want);
                free(path);
        }
}

TEST(unit_names_and_log_paths) {
        char *s = NULL;

        ASSERT_OK(keeper_worker_unit_name("tinyllama:q4_k_m", &s));
        ASSERT_STREQ(s, "rbee-worker@tinyllama:q4_k_m.service");
        free(s);
        ASSERT_OK(keeper_worker_unit_name("qwen2.5-0.5b", &s));
        ASSERT_STREQ(s, "rbee-worker@qwen2.5\\x2d0.5b.service");
        free(s);
        ASSERT_OK(keeper_worker_unit_name(".x/y", &s));
        ASSERT_STREQ(s, "rbee-worker@\\x2ex-y.service");
        free(s);
        ASSERT_OK(keeper_worker_log_path("/run/rbee/workers/qwen2.5-0.5b.sock", &s));
        ASSERT_STREQ(s, "/run/rbee/workers/qwen2.5-0.5b.log");
        free(s);
        ASSERT_ERR(keeper_worker_log_path("/run/rbee/workers/.sock", &s), -EINVAL);
        ASSERT_ERR(keeper_worker_log_path("/run/rbee/workers/x.socket", &s), -EINVAL);
        ASSERT_ERR(keeper_worker_log_path("x.sock", &s), -EINVAL);
}

TEST(human_numbers) {
        char b[KEEPER_HUMAN_MAX];

        ASSERT_STREQ(keeper_human_bytes(999, b, sizeof(b)), "999 B");
        ASSERT_STREQ(keeper_human_bytes(1185376, b, sizeof(b)), "1.2 MB");
        ASSERT_STREQ(keeper_human_bytes(668788096, b, sizeof(b)), "669 MB");
        ASSERT_STREQ(keeper_human_bytes(4368439296ULL, b, sizeof(b)), "4.4 GB");
        ASSERT_STREQ(keeper_human_duration(0.25, b, sizeof(b)), "250ms");
        ASSERT_STREQ(keeper_human_duration(200, b, sizeof(b)), "3m20s");
        ASSERT_STREQ(keeper_human_until(297, b, sizeof(b)), "4 minutes from now");
        ASSERT_STREQ(keeper_human_until(60, b, sizeof(b)), "a minute from now");
        ASSERT_STREQ(keeper_human_count(1100048384, b, sizeof(b)), "1.1B");
        ASSERT_STREQ(keeper_human_rate(2.5e7, b, sizeof(b)), "25 MB/s");
}

/* ---- the binary, without a hive ---- */

TEST(usage_errors_exit_2) {
        const char *const *cases[] = {
                KT_ARGS("infer", "--prompt", "hi"),
                KT_ARGS("infer", "--model", "m", "--max-tokens", "lots", "x"),
                KT_ARGS("infer", "--bogus"),
                KT_ARGS("frobnicate"),
                KT_ARGS("model"),
                KT_ARGS("model", "explode"),
                KT_ARGS("model", "get"),
                KT_ARGS("model", "register", "id"),
                KT_ARGS("worker", "stop", "a", "b"),
                KT_ARGS("hive", "add", "name"),
                KT_ARGS("hive", "add", "bad name", "http://x:1"),
                KT_ARGS("chat"),
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct kt_proc p;
                int rc = kt_run(&p, cases[i], NULL);

                KT_ASSERT_EXIT(&p, rc, 2);
                ASSERT_CONTAINS(p.err.data, "--help");
                ASSERT_EQ(p.out.len, 0);
                kt_proc_done(&p);
        }
}

TEST(help_everywhere) {
        const char *const *cases[] = {
                KT_ARGS("--help"), KT_ARGS("help"), KT_ARGS("help", "model"),
                KT_ARGS("infer", "--help"), KT_ARGS("chat", "--help"), KT_ARGS("ps", "--help"),
                KT_ARGS("model", "--help"), KT_ARGS("model", "list", "--help"), KT_ARGS("model", "get", "--help"),
                KT_ARGS("model", "download", "--help"), KT_ARGS("model", "register", "--help"),
                KT_ARGS("model", "remove", "-h"), KT_ARGS("worker", "--help"), KT_ARGS("worker", "list", "--help"),
                KT_ARGS("worker", "spawn", "--help"), KT_ARGS("worker", "stop", "--help"),
                KT_ARGS("worker", "cleanup", "--help"), KT_ARGS("worker", "logs", "--help"),
                KT_ARGS("hive", "--help"), KT_ARGS("hive", "status", "--help"), KT_ARGS("hive", "backends", "--help"),
                KT_ARGS("hive", "list", "--help"), KT_ARGS("hive", "add", "--help"), KT_ARGS("hive", "remove", "--help"),
                KT_ARGS("version", "--help"),
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct kt_proc p;
                int rc = kt_run(&p, cases[i], NULL);

                KT_ASSERT_EXIT(&p, rc, 0);
                ASSERT_CONTAINS(p.out.data, "Usage: rbee");
                ASSERT_CONTAINS(p.out.data, "--json");
                kt_proc_done(&p);
        }
}

TEST(version_json) {
        struct kt_proc p;
        int rc = kt_run(&p, KT_ARGS("--json", "version"), NULL);
        struct json_object *o;

        KT_ASSERT_EXIT(&p, rc, 0);
        o = kt_json(p.out.data);
        ASSERT_EQ(json_object_get_int(kt_jget(o, "api_version")), 1);
        json_object_put(o);
        kt_proc_done(&p);
}

TEST(hive_unreachable) {
        char *url = kt_printf("http://127.0.0.1:%d", kt_dead_port());
        struct kt_proc p;
        double t0 = kt_now_ms();
        int rc = kt_run(&p, KT_ARGS("--hive", url, "model", "list"), NULL);

        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "is not reachable (Connection refused)");
        ASSERT_CONTAINS(p.err.data, url);
        ASSERT_CONTAINS(p.err.data, "rbee-hive.socket");
        ASSERT_CONTAINS(p.err.data, "journalctl -u rbee-hive");
        /* A refused connection is retried with backoff (about 1.3 s in all), not forever. */
        ASSERT_GE(kt_now_ms() - t0, 700);
        ASSERT_LE(kt_now_ms() - t0, 10000);
        ASSERT_EQ(p.out.len, 0);
        kt_proc_done(&p);
        free(url);
}

TEST(unknown_hive_and_bad_url) {
        struct kt_proc p;
        int rc = kt_run(&p, KT_ARGS("--hive", "nowhere", "ps"), NULL);

        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "unknown hive 'nowhere'");
        ASSERT_CONTAINS(p.err.data, "rbee hive add nowhere");
        kt_proc_done(&p);

        rc = kt_run(&p, KT_ARGS("model", "list"), KT_ARGS("RBEE_HIVE=ftp://x"));
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "'ftp://x' (from $RBEE_HIVE) is not a hive URL");
        kt_proc_done(&p);
}

TEST(hive_set_add_list_remove) {
        struct kt_proc p;
        struct json_object *o, *hives;
        int rc;

        rc = kt_run(&p, KT_ARGS("hive", "add", "gpu1", "http://10.0.0.5:7835", "--api-key-file", "/etc/rbee/k", "--default"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        kt_proc_done(&p);
        rc = kt_run(&p, KT_ARGS("hive", "add", "box", "http://box:7835"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        kt_proc_done(&p);

        rc = kt_run(&p, KT_ARGS("hive", "list", "--json"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        o = kt_json(p.out.data);
        hives = kt_jget(o, "hives");
        ASSERT_EQ(json_object_array_length(hives), 3);   /* gpu1, box, and the built-in local */
        ASSERT_STREQ(kt_jstr(json_object_array_get_idx(hives, 0), "name"), "gpu1");
        ASSERT_TRUE(json_object_get_boolean(kt_jget(json_object_array_get_idx(hives, 0), "default")));
        ASSERT_STREQ(kt_jstr(json_object_array_get_idx(hives, 0), "api_key_file"), "/etc/rbee/k");
        ASSERT_STREQ(kt_jstr(json_object_array_get_idx(hives, 2), "name"), "local");
        json_object_put(o);
        kt_proc_done(&p);

        /* Piped, the table is plain: no colors, nothing cut. */
        rc = kt_run(&p, KT_ARGS("hive", "list"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.out.data, "NAME");
        ASSERT_CONTAINS(p.out.data, "http://10.0.0.5:7835");
        ASSERT_TRUE(strchr(p.out.data, '\033') == NULL);
        kt_proc_done(&p);

        rc = kt_run(&p, KT_ARGS("hive", "remove", "gpu1"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        kt_proc_done(&p);
        rc = kt_run(&p, KT_ARGS("hive", "remove", "gpu1"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "unknown hive 'gpu1'");
        kt_proc_done(&p);

        /* The file is readable by people and says what it is. */
        char *text = harness_read_file(kt_config_path(), NULL);
        ASSERT_CONTAINS(text, "hive box http://box:7835\n");
        ASSERT_TRUE(strstr(text, "gpu1") == NULL);
        ASSERT_TRUE(strstr(text, "default") == NULL || strstr(text, "default gpu1") == NULL);
        free(text);
}

TEST(bad_config_file) {
        FILE *f = fopen(kt_config_path(), "we");
        struct kt_proc p;
        int rc;

        fputs("hive a http://127.0.0.1:1\nnonsense here\n", f);
        fclose(f);
        rc = kt_run(&p, KT_ARGS("ps"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "bad hive configuration");
        ASSERT_CONTAINS(p.err.data, ":2: unknown keyword 'nonsense'");
        kt_proc_done(&p);
}

/* ---- the binary against a scripted hive ---- */

TEST(version_mismatch) {
        struct kt_fake f;
        struct kt_proc p;
        int rc;

        kt_fake_start(&f, KT_FAKE_API2);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "model", "list"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "version mismatch");
        ASSERT_CONTAINS(p.err.data, "rbee-hive 2.0.0 with API version 2");
        ASSERT_CONTAINS(p.err.data, "speaks API version 1");
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(not_a_hive) {
        struct kt_fake f;
        struct kt_proc p;
        int rc;

        kt_fake_start(&f, KT_FAKE_NOT_HIVE);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "infer", "-m", "m", "-p", "hi"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "does not look like an rbee hive");
        ASSERT_CONTAINS(p.err.data, "HTTP 404");
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(busy_retry_after_then_success) {
        struct kt_fake f;
        struct kt_proc p;
        double t0;
        int rc;

        kt_fake_start(&f, KT_FAKE_BUSY_ONCE);
        t0 = kt_now_ms();
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "infer", "-m", "m", "-p", "hi"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_STREQ(p.out.data, "Once upon a time");
        ASSERT_CONTAINS(p.err.data, "the hive is busy (HTTP 503); retrying in 1s (attempt 2 of 5)");
        /* It waited as long as Retry-After said. */
        ASSERT_GE(kt_now_ms() - t0, 950);
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(busy_gives_up) {
        struct kt_fake f;
        struct kt_proc p;
        char *log;
        int rc, n = 0;

        kt_fake_start(&f, KT_FAKE_BUSY_ALWAYS);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "-q", "infer", "-m", "m", "-p", "hi"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "is busy");
        ASSERT_CONTAINS(p.err.data, "raise rbee-hive --max-queue");
        ASSERT_TRUE(strstr(p.err.data, "retrying") == NULL);     /* -q */
        log = kt_fake_log(&f);
        for (char *s = log; (s = strstr(s, "POST /v1/inference")); s++)
                n++;
        ASSERT_EQ(n, 5);
        free(log);
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(malformed_event_cancels) {
        struct kt_fake f;
        struct kt_proc p;
        char *log;
        int rc;

        kt_fake_start(&f, KT_FAKE_BAD_EVENT);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "infer", "-m", "m", "-p", "hi"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_STREQ(p.out.data, "Once");
        ASSERT_CONTAINS(p.err.data, "malformed 'token' event");
        ASSERT_CONTAINS(p.err.data, "after 1 tokens");
        log = kt_fake_log(&f);
        ASSERT_CONTAINS(log, "DELETE /v1/jobs/j-fake1");
        free(log);
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(cut_stream) {
        struct kt_fake f;
        struct kt_proc p;
        int rc;

        kt_fake_start(&f, KT_FAKE_CUT_STREAM);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "infer", "-m", "m", "-p", "hi"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "closed the event stream of job j-fake1 before its end (after 1 tokens)");
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(stall_timeout_cancels) {
        struct kt_fake f;
        struct kt_proc p;
        char *log;
        double t0;
        int rc;

        kt_fake_start(&f, KT_FAKE_STALL);
        t0 = kt_now_ms();
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "infer", "-m", "m", "-p", "hi", "--stall-timeout", "1s"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "no token from");
        ASSERT_CONTAINS(p.err.data, "for 1.0s: job j-fake1 cancelled on the hive after 1 tokens");
        ASSERT_CONTAINS(p.err.data, "--stall-timeout");
        ASSERT_GE(kt_now_ms() - t0, 950);
        /* The hive's final event after the cancel ends it at once. */
        ASSERT_LE(kt_now_ms() - t0, 2500);
        log = kt_fake_log(&f);
        ASSERT_CONTAINS(log, "DELETE /v1/jobs/j-fake1");
        free(log);
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(worker_died_mid_stream) {
        struct kt_fake f;
        struct kt_proc p;
        int rc;

        kt_fake_start(&f, KT_FAKE_WORKER_DIED);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "infer", "-m", "m", "-p", "hi"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_STREQ(p.out.data, "Once upon");
        ASSERT_CONTAINS(p.err.data, "the worker for m died after 2 tokens (the worker exited with signal 9)");
        ASSERT_CONTAINS(p.err.data, "rbee worker logs m");
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(api_key) {
        char *keyfile = kt_printf("%s/key", harness_tmpdir());
        struct kt_fake f;
        struct kt_proc p;
        FILE *kf;
        int rc;

        kt_fake_start(&f, KT_FAKE_AUTH);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "model", "list"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "refused the request (unauthorized: it needs an API key)");
        ASSERT_CONTAINS(p.err.data, "--api-key-file");
        kt_proc_done(&p);

        rc = kt_run(&p, KT_ARGS("--hive", f.url, "model", "list"), KT_ARGS("RBEE_API_KEY=wrong"));
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "wrong API key");
        kt_proc_done(&p);

        kf = fopen(keyfile, "we");
        fputs("sekrit\n", kf);
        fclose(kf);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "--api-key-file", keyfile, "model", "list"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.out.data, "a-model-with-a-rather-long-name:q4_k_m");
        kt_proc_done(&p);

        /* A key file that cannot be read is its own error, before any request. */
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "--api-key-file", "/nonexistent/key", "ps"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "cannot read the API key from /nonexistent/key");
        kt_proc_done(&p);
        kt_fake_stop(&f);
        free(keyfile);
}

TEST(malformed_json_answer) {
        struct kt_fake f;
        struct kt_proc p;
        int rc;

        kt_fake_start(&f, KT_FAKE_BAD_JSON);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "--json", "model", "list"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "malformed JSON");
        ASSERT_EQ(p.out.len, 0);
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(unknown_model_message) {
        struct kt_fake f;
        struct kt_proc p;
        int rc;

        kt_fake_start(&f, KT_FAKE_OK);
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "model", "get", "nope"), NULL);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.err.data, "no model in the catalog");
        ASSERT_CONTAINS(p.err.data, "'rbee model list' shows the models on this hive");
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

/* Model output on a terminal shows control characters (C0 and C1) instead of
 * letting them steer it; piped, the bytes pass unchanged. */
TEST(output_controls_are_shown_not_obeyed) {
        struct kt_fake f;
        struct kt_proc p;
        int rc;

        kt_fake_start(&f, KT_FAKE_CONTROL);
        kt_spawn(&p, KT_PTY_OUT, 100, KT_ARGS("--hive", f.url, "infer", "-m", "m", "-p", "x"), KT_ARGS("LANG=C.UTF-8"));
        rc = kt_finish(&p, 20000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.pty.data, "a\xef\xbf\xbd[2Jb");
        ASSERT_CONTAINS(p.pty.data, "c\xef\xbf\xbd" "31md \xc3\xa9\n");
        ASSERT_TRUE(strstr(p.pty.data, "\xc2\x9b") == NULL);
        kt_proc_done(&p);

        kt_spawn(&p, 0, 0, KT_ARGS("--hive", f.url, "infer", "-m", "m", "-p", "x"), NULL);
        rc = kt_finish(&p, 20000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_STREQ(p.out.data, "a\033[2Jbc\xc2\x9b" "31md \xc3\xa9\n");
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

/* Colors only on a terminal, never with NO_COLOR or --no-color; tables fit it. */
TEST(no_color_and_terminal_width) {
        struct kt_fake f;
        struct kt_proc p;
        int rc;

        kt_fake_start(&f, KT_FAKE_OK);
        kt_spawn(&p, KT_PTY_OUT | KT_PTY_ERR, 60, KT_ARGS("--hive", f.url, "model", "list"), NULL);
        rc = kt_finish(&p, 20000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.pty.data, "\033[");
        ASSERT_CONTAINS(p.pty.data, "…");                   /* the long source was cut */
        for (char *line = p.pty.data, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
                size_t w = 0;
                for (char *c = line; c < nl; c++) {
                        if (*c == '\033') {
                                while (c < nl && *c != 'm')
                                        c++;
                                continue;
                        }
                        if (((unsigned char) *c & 0xc0) != 0x80 && *c != '\r')
                                w++;
                }
                ASSERT_LE(w, 60);
        }
        kt_proc_done(&p);

        kt_spawn(&p, KT_PTY_OUT | KT_PTY_ERR, 60, KT_ARGS("--hive", f.url, "model", "list"), KT_ARGS("NO_COLOR=1"));
        rc = kt_finish(&p, 20000);
        KT_ASSERT_EXIT(&p, rc, 0);
        ASSERT_CONTAINS(p.pty.data, "a-model");
        ASSERT_TRUE(strchr(p.pty.data, '\033') == NULL);
        kt_proc_done(&p);

        kt_spawn(&p, KT_PTY_OUT | KT_PTY_ERR, 60, KT_ARGS("--no-color", "--hive", f.url, "model", "get", "x"), NULL);
        rc = kt_finish(&p, 20000);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.pty.data, "no model");
        ASSERT_TRUE(strchr(p.pty.data, '\033') == NULL);
        kt_proc_done(&p);

        /* An error on a terminal is red without NO_COLOR. */
        kt_spawn(&p, KT_PTY_OUT | KT_PTY_ERR, 60, KT_ARGS("--hive", f.url, "model", "get", "x"), NULL);
        rc = kt_finish(&p, 20000);
        KT_ASSERT_EXIT(&p, rc, 1);
        ASSERT_CONTAINS(p.pty.data, "\033[1;31mrbee: ");
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

TEST(infer_json_parses) {
        struct kt_fake f;
        struct kt_proc p;
        struct json_object *o;
        int rc;

        kt_fake_start(&f, KT_FAKE_OK);
        /* A proxy in the environment is not used for a hive on loopback. */
        rc = kt_run(&p, KT_ARGS("--hive", f.url, "--json", "infer", "-m", "m", "hi"),
                    KT_ARGS("http_proxy=http://127.0.0.1:9", "HTTP_PROXY=http://127.0.0.1:9"));
        KT_ASSERT_EXIT(&p, rc, 0);
        o = kt_json(p.out.data);
        ASSERT_STREQ(kt_jstr(o, "text"), "Once upon a time");
        ASSERT_STREQ(kt_jstr(o, "job_id"), "j-fake1");
        ASSERT_STREQ(kt_jstr(o, "stop_reason"), "length");
        ASSERT_EQ(json_object_get_int(kt_jget(o, "tokens_out")), 3);
        json_object_put(o);
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

/* Ctrl+C cancels; a second one while that is under way exits at once. */
TEST(second_sigint_exits_at_once) {
        struct kt_fake f;
        struct kt_proc p;
        double t0;
        char *log;
        int rc;

        kt_fake_start(&f, KT_FAKE_SLOW_CANCEL);
        kt_spawn(&p, 0, 0, KT_ARGS("--hive", f.url, "infer", "-m", "m", "-p", "hi"), NULL);
        if (!kt_wait_for(&p, &p.out, "tok1", 10000))
                FAIL("no tokens: %s", kt_buf_str(&p.err));
        kill(p.pid, SIGINT);
        if (!kt_wait_for(&p, &p.err, "cancelling job j-fake1", 5000))
                FAIL("no cancel: %s", kt_buf_str(&p.err));
        /* Let the cancel request reach the hive, which sits on it. */
        for (int i = 0; i < 100; i++) {
                log = kt_fake_log(&f);
                bool sent = strstr(log, "DELETE /v1/jobs/j-fake1") != NULL;
                free(log);
                if (sent)
                        break;
                usleep(20000);
        }
        t0 = kt_now_ms();
        kill(p.pid, SIGINT);
        rc = kt_finish(&p, 10000);
        KT_ASSERT_EXIT(&p, rc, 130);
        /* The hive takes 5 s to answer the cancel; rbee did not wait for it. */
        ASSERT_LE(kt_now_ms() - t0, 2000);
        ASSERT_CONTAINS(p.err.data, "interrupted twice, exiting at once");
        log = kt_fake_log(&f);
        ASSERT_CONTAINS(log, "DELETE /v1/jobs/j-fake1");
        free(log);
        kt_proc_done(&p);
        kt_fake_stop(&f);
}

/* ---- the man page and the bash completion ---- */

static char *sh(const char *cmd, int *ret_status) {
        FILE *f = popen(cmd, "r");
        struct kt_buf b = {};
        char buf[4096];
        size_t n;
        int st;

        ASSERT_NOT_NULL(f);
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                kt_buf_add(&b, buf, n);
        st = pclose(f);
        if (ret_status)
                *ret_status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        return (char *) kt_buf_str(&b);
}

static char *complete(const char *words, int cword) {
        char *cmd = kt_printf("PATH='%s':\"$PATH\" RBEE_CONFIG='%s' bash --norc --noprofile -c '"
                              "source %s/keeper/rbee.bash-completion; COMP_WORDS=(%s); COMP_CWORD=%d; "
                              "_rbee; echo \"${COMPREPLY[*]}\"' 2>&1",
                              harness_build_path(""), kt_config_path(), RBEE_SRCDIR, words, cword);
        char *out = sh(cmd, NULL);

        free(cmd);
        return out;
}

TEST(bash_completion) {
        char *s;
        struct kt_proc p;
        int rc;

        kt_rbee();
        s = complete("rbee mo", 1);
        ASSERT_STREQ(s, "model\n");
        free(s);
        s = complete("rbee model d", 2);
        ASSERT_STREQ(s, "download\n");
        free(s);
        s = complete("rbee --hive x worker l", 4);
        ASSERT_STREQ(s, "list logs\n");
        free(s);
        s = complete("rbee infer --max", 2);
        ASSERT_STREQ(s, "--max-tokens\n");
        free(s);
        s = complete("rbee worker logs -", 3);
        ASSERT_CONTAINS(s, "--follow");
        free(s);

        /* Hive names come from the configuration, through rbee itself. */
        rc = kt_run(&p, KT_ARGS("hive", "add", "gpu7", "http://10.0.0.7:7835"), NULL);
        KT_ASSERT_EXIT(&p, rc, 0);
        kt_proc_done(&p);
        s = complete("rbee --hive g", 2);
        ASSERT_STREQ(s, "gpu7\n");
        free(s);
        s = complete("rbee hive remove ''", 3);
        ASSERT_STREQ(s, "gpu7 local\n");
        free(s);
}

TEST(man_page) {
        const char *page = RBEE_SRCDIR "/keeper/rbee.1";
        char *cmd, *out;
        int st;

        if (system("command -v groff >/dev/null 2>&1") != 0)
                SKIP("groff is not installed");
        cmd = kt_printf("groff -man -Tutf8 -ww -z '%s' 2>&1", page);
        out = sh(cmd, &st);
        ASSERT_EQ(st, 0);
        ASSERT_STREQ(out, "");          /* no warnings */
        free(out);
        free(cmd);

        /* Every command and global option is documented. */
        cmd = kt_printf("groff -man -Tascii -P-cbou '%s' 2>/dev/null", page);
        out = sh(cmd, &st);
        static const char *const words[] = {
                "infer --model", "chat --model", "model list", "model get", "model download", "model register",
                "model remove", "worker list", "worker spawn", "worker stop", "worker cleanup", "worker logs",
                "hive status", "hive backends", "hive list", "hive add", "hive remove", "--hive", "--api-key-file",
                "--json", "--no-color", "NO_COLOR", "RBEE_CONFIG", "--stall-timeout", "130", "Retry-After",
        };
        for (size_t i = 0; i < ELEMENTSOF(words); i++)
                ASSERT_CONTAINS(out, words[i]);
        free(out);
        free(cmd);
}
