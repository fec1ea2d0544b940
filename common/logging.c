/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include "logging.h"
#include "strutil.h"

#define MAX_FIELDS 8
#define MAX_EXTRA 16
#define THREAD_FIELD_MAX 128

static const char *log_ident = "rbee";
static enum log_target log_target = LOG_TARGET_STDERR;
static int log_max_level = LOG_INFO;
static char *global_fields[MAX_FIELDS];
static _Thread_local char thread_field[THREAD_FIELD_MAX];

/* stderr is the journal when JOURNAL_STREAM names its device and inode:
 * a child that inherited the variable but got another stderr does not count. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_setup(const char *ident, enum log_target target) {
        if (ident)
                log_ident = ident;
        if (target == LOG_TARGET_AUTO)
                target = stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
        log_target = target;
}

enum log_target log_get_target(void) {
        return log_target;
}

void log_set_max_level(int level) {
        log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

int log_level_from_string(const char *s, int *ret) {
        static const char *const names[] = { "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug" };
        int64_t v;

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i])) {
                        *ret = (int) i;
                        return 0;
                }
        if (streq(s, "error")) {
                *ret = LOG_ERR;
                return 0;
        }
        if (parse_int64(s, 0, 7, &v) < 0)
                return -EINVAL;
        *ret = (int) v;
        return 0;
}

static size_t key_len(const char *kv) {
        const char *eq = strchr(kv, '=');
        return eq ? (size_t) (eq - kv) : strlen(kv);
}

int log_set_field(const char *key, const char *value) {
        size_t kl = strlen(key);
        char *f = NULL;
        int slot = -1;

        if (kl == 0 || strchr(key, '='))
                return -EINVAL;
        if (value && asprintf(&f, "%s=%s", key, value) < 0)
                return -ENOMEM;
        for (int i = 0; i < MAX_FIELDS; i++)
                if (global_fields[i] && key_len(global_fields[i]) == kl &&
                    strncmp(global_fields[i], key, kl) == 0) {
                        free(global_fields[i]);
                        global_fields[i] = NULL;
                        if (slot < 0)
                                slot = i;
                }
        if (!f)
                return 0;
        for (int i = 0; slot < 0 && i < MAX_FIELDS; i++)
                if (!global_fields[i])
                        slot = i;
        if (slot < 0) {
                free(f);
                return -E2BIG;
        }
        global_fields[slot] = f;
        return 0;
}

void log_set_thread_field(const char *key, const char *value) {
        if (!key || !value) {
                thread_field[0] = 0;
                return;
        }
        snprintf(thread_field, sizeof(thread_field), "%s=%s", key, value);
}

static const char *level_name(int level) {
        switch (level) {
        case LOG_EMERG:
        case LOG_ALERT:
        case LOG_CRIT:
        case LOG_ERR:
                return "error: ";
        case LOG_WARNING:
                return "warning: ";
        case LOG_DEBUG:
                return "debug: ";
        default:
                return "";
        }
}

static void write_stderr(int level, const char *msg, const char *const *fields) {
        _cleanup_(strbuf_donep) struct strbuf b = STRBUF_INIT(64 * 1024);
        bool first = true;

        (void) strbuf_printf(&b, "%s: %s%s", log_ident, level_name(level), msg);
        /* Only the per-call and per-thread fields: the global ones (the model)
         * are the same on every line and would be noise in a terminal. */
        const char *all[MAX_EXTRA + 2];
        size_t n = 0;
        if (thread_field[0])
                all[n++] = thread_field;
        for (size_t i = 0; fields && fields[i] && n < ELEMENTSOF(all); i++)
                all[n++] = fields[i];
        for (size_t i = 0; i < n; i++) {
                const char *kv = all[i];
                if (str_startswith(kv, "RBEE_"))
                        kv += 5;
                (void) strbuf_printf(&b, "%s%s", first ? " [" : " ", kv);
                first = false;
        }
        if (!first)
                (void) strbuf_puts(&b, "]");
        (void) strbuf_puts(&b, "\n");
        if (b.data)
                (void) !write(STDERR_FILENO, b.data, b.len);
}

static int write_journal(int level, int error, const char *msg, const char *const *fields) {
        struct iovec iov[4 + MAX_FIELDS + 1 + MAX_EXTRA];
        char prio[16], errno_field[32];
        _cleanup_(freep) char *message = NULL, *ident = NULL;
        size_t n = 0;

        if (asprintf(&message, "MESSAGE=%s", msg) < 0 || asprintf(&ident, "SYSLOG_IDENTIFIER=%s", log_ident) < 0)
                return -ENOMEM;
        snprintf(prio, sizeof(prio), "PRIORITY=%d", level);
        iov[n++] = (struct iovec) { message, strlen(message) };
        iov[n++] = (struct iovec) { prio, strlen(prio) };
        iov[n++] = (struct iovec) { ident, strlen(ident) };
        if (error != 0) {
                snprintf(errno_field, sizeof(errno_field), "ERRNO=%d", error < 0 ? -error : error);
                iov[n++] = (struct iovec) { errno_field, strlen(errno_field) };
        }
        for (size_t i = 0; i < MAX_FIELDS; i++)
                if (global_fields[i])
                        iov[n++] = (struct iovec) { global_fields[i], strlen(global_fields[i]) };
        if (thread_field[0])
                iov[n++] = (struct iovec) { thread_field, strlen(thread_field) };
        for (size_t i = 0; fields && fields[i] && i < MAX_EXTRA; i++)
                iov[n++] = (struct iovec) { (void *) fields[i], strlen(fields[i]) };
        return sd_journal_sendv(iov, (int) n);
}

int log_full(int level, int error, const char *const *fields, const char *fmt, ...) {
        char msg[2048];
        int saved = errno;
        va_list ap;

        error = error < 0 ? -error : error;
        if (level > log_max_level) {
                errno = saved;
                return -error;
        }
        /* %m prints the error we were given, not whatever errno happens to hold. */
        errno = error;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        if (log_target != LOG_TARGET_JOURNAL || write_journal(level, error, msg, fields) < 0)
                write_stderr(level, msg, fields);
        errno = saved;
        return -error;
}
