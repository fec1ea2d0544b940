/* SPDX-License-Identifier: MIT */
/* Model downloads from a HuggingFace-compatible endpoint with libcurl: the
 * repo listing picks the file (by quant or name) and gives its size and
 * sha256 (LFS oid); the file is fetched into <models>/<id>.gguf.partial,
 * resumed with Range after a reset or a stall (bounded retries, exponential
 * backoff with jitter), verified, checked as GGUF, renamed into place, and
 * only then written to the catalog. Every failure removes the partial file.
 *
 * A download in flight has a row in the catalog's downloads table. When the
 * hive stops (or dies) mid-download, the partial file and the row stay, and
 * hive_downloads_recover() at the next start resumes the download under the
 * same job id; a .partial file without a row is removed then. */
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "hive.h"
#include "json-util.h"
#include "logging.h"
#include "macros.h"
#include "sha256.h"
#include "util.h"

#define LISTING_MAX (8u << 20)

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)

#ifndef RBEE_VERSION
#define RBEE_VERSION "0.1.0"
#endif

static bool repo_char_ok(char c) {
        return isalnum((unsigned char) c) || c == '.' || c == '_' || c == '-';
}

/* A "." or ".." path component: the repo and the file go into URLs, where
 * they would climb out of the repository. */
static bool has_dot_segment(const char *s) {
        for (const char *p = s; *p; p += *p == '/') {
                if (p[0] == '.' && (!p[1] || p[1] == '/' || (p[1] == '.' && (!p[2] || p[2] == '/'))))
                        return true;
                p += strcspn(p, "/");
        }
        return false;
}

/* The first character of a file or quant selector that may not go into a URL, or NULL. */
static const char *bad_file_char(const char *s) {
        for (; *s; s++)
                if (!repo_char_ok(*s) && *s != '/')
                        return s;
        return NULL;
}

/* A file the listing names goes into a URL and into the model's source as
 * hf:REPO:FILE: it must be what a user could have named there. */
static bool listed_file_ok(const char *s) {
        return *s && *s != '/' && strlen(s) <= 255 && !strstr(s, "..") && !has_dot_segment(s) && !bad_file_char(s);
}

static void lower_id(char *s) {
        for (; *s; s++)
                *s = isalnum((unsigned char) *s) || strchr("._:-", *s) ? (char) tolower((unsigned char) *s) : '-';
}

int hive_download_parse_source(const char *source, char **ret_repo, char **ret_sel, char **ret_default_id,
                               char *err, size_t errlen) {
        _cleanup_(freep) char *repo = NULL, *sel = NULL, *id = NULL;
        const char *p, *colon, *slash, *bad;

        if (str_startswith(source, "file://")) {
                p = source + 7;
                if (p[0] != '/' || strlen(p) > 4096) {
                        snprintf(err, errlen, "'%.200s' is not file:///ABSOLUTE/PATH", source);
                        return -EINVAL;
                }
                const char *base = strrchr(p, '/') + 1;
                if (!(sel = strdup(p)) || !(id = strdup(base)))
                        return -ENOMEM;
                if (str_endswith(id, ".gguf") && strlen(id) > 5)
                        id[strlen(id) - 5] = 0;
                lower_id(id);
                *ret_repo = NULL;
                *ret_sel = TAKE_PTR(sel);
                *ret_default_id = TAKE_PTR(id);
                return 0;
        }
        if (!str_startswith(source, "hf:")) {
                snprintf(err, errlen, "unknown source '%.200s': use hf:ORG/REPO[:QUANT|:FILE.gguf] or file:///PATH", source);
                return -EINVAL;
        }
        p = source + 3;
        colon = strchr(p, ':');
        repo = colon ? strndup(p, (size_t) (colon - p)) : strdup(p);
        if (!repo)
                return -ENOMEM;
        slash = strchr(repo, '/');
        if (!slash || slash == repo || !slash[1] || strchr(slash + 1, '/') || strlen(repo) > 200 ||
            has_dot_segment(repo)) {
                snprintf(err, errlen, "'%.200s' is not hf:ORG/REPO[:QUANT|:FILE.gguf]", source);
                return -EINVAL;
        }
        for (const char *c = repo; *c; c++)
                if (*c != '/' && !repo_char_ok(*c)) {
                        snprintf(err, errlen, "bad character '%c' in the repo name '%.200s'", *c, repo);
                        return -EINVAL;
                }
        if (colon) {
                if (!colon[1] || strlen(colon + 1) > 255 || strstr(colon + 1, "..") || colon[1] == '/' ||
                    has_dot_segment(colon + 1)) {
                        snprintf(err, errlen, "bad file or quant in '%.200s'", source);
                        return -EINVAL;
                }
                bad = bad_file_char(colon + 1);
                if (bad) {
                        snprintf(err, errlen, "bad character '%c' in '%.200s'", *bad, colon + 1);
                        return -EINVAL;
                }
                sel = strdup(colon + 1);
                if (!sel)
                        return -ENOMEM;
        }
        /* tinyllama from TheBloke/TinyLlama-GGUF, plus :quant. */
        const char *name = slash + 1;
        size_t nl = strlen(name);
        if (nl > 5 && strcasecmp(name + nl - 5, "-gguf") == 0)
                nl -= 5;
        if (sel && str_endswith(sel, ".gguf")) {
                const char *b = strrchr(sel, '/');
                b = b ? b + 1 : sel;
                id = strndup(b, strlen(b) - 5);
        } else if (sel) {
                if (asprintf(&id, "%.*s:%s", (int) nl, name, sel) < 0)
                        id = NULL;
        } else
                id = strndup(name, nl);
        if (!id)
                return -ENOMEM;
        lower_id(id);
        *ret_repo = TAKE_PTR(repo);
        *ret_sel = TAKE_PTR(sel);
        *ret_default_id = TAKE_PTR(id);
        return 0;
}

struct dl {
        struct hive *h;
        struct hive_job *j;
        int fd;
        uint64_t offset;                /* bytes in the partial file when this attempt began */
        uint64_t written;               /* by this attempt */
        uint64_t total;
        uint64_t t_start, t_last;
        unsigned attempt;
        bool enospc;
        int write_errno;
        struct strbuf *mem;             /* listing: into memory */
        const char *file;
        /* The outcome, told to the job only once the partial file and the
         * downloads row are dealt with: a client that sees the terminal
         * event sees the final state of the disk and the catalog. */
        bool failed;
        char err_code[32];
        char err_msg[1024];
};

static void emit_progress(struct dl *d, bool force) {
        uint64_t now = hive_now_usec();
        struct json_object *o;

        if (!force && now - d->t_last < 250000)
                return;
        d->t_last = now;
        o = json_object_new_object();
        if (!o)
                return;
        double secs = (double) (now - d->t_start) / 1e6;
        json_object_object_add(o, "model", json_object_new_string(d->j->model));
        json_object_object_add(o, "file", json_object_new_string(d->file));
        json_object_object_add(o, "bytes", json_object_new_int64((int64_t) (d->offset + d->written)));
        json_object_object_add(o, "total", json_object_new_int64((int64_t) d->total));
        json_object_object_add(o, "speed_bps", json_object_new_int64(secs > 0.05 ? (int64_t) (d->written / secs) : 0));
        json_object_object_add(o, "attempt", json_object_new_int((int) d->attempt));
        pthread_mutex_lock(&d->h->lock);
        (void) hive_job_event_locked(d->h, d->j, "progress", o);
        pthread_mutex_unlock(&d->h->lock);
}

static size_t on_write(char *p, size_t size, size_t n, void *userdata) {
        struct dl *d = userdata;
        size_t len = size * n;

        if (d->mem)
                return strbuf_append(d->mem, p, len) < 0 ? 0 : len;
        for (size_t done = 0; done < len;) {
                ssize_t k = write(d->fd, p + done, len - done);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        d->write_errno = errno;
                        /* EFBIG: RLIMIT_FSIZE or the file system's own limit. */
                        d->enospc = errno == ENOSPC || errno == EDQUOT || errno == EFBIG;
                        return 0;
                }
                done += (size_t) k;
        }
        d->written += len;
        emit_progress(d, false);
        return len;
}

static int on_xferinfo(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
        struct dl *d = userdata;

        return d->j->cancel || d->h->stopping ? 1 : 0;
}

int hive_download_header_status(const char *p, size_t len) {
        char line[64];
        int code = 0;

        /* curl's header line is not NUL-terminated: sscanf() gets a bounded copy. */
        if (len < 12 || strncmp(p, "HTTP/", 5) != 0)
                return -EINVAL;
        len = MIN(len, sizeof(line) - 1);
        memcpy(line, p, len);
        line[len] = 0;
        if (sscanf(line, "HTTP/%*s %d", &code) != 1 || code < 100 || code > 999)
                return -EINVAL;
        return code;
}

/* A 200 to a ranged request means the server ignored Range: start over. */
static size_t on_header(char *p, size_t size, size_t n, void *userdata) {
        struct dl *d = userdata;
        size_t len = size * n;

        if (d->mem || d->offset == 0)
                return len;
        if (hive_download_header_status(p, len) == 200) {
                if (ftruncate(d->fd, 0) < 0)
                        return 0;
                d->offset = 0;
        }
        return len;
}

static void setup_common(CURL *c, struct dl *d, const char *url, struct curl_slist *hdrs, const struct hive_options *o) {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
        /* The token goes to redirects on the same host only (curl's default). */
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "rbee-hive/" RBEE_VERSION);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long) MAX(1u, o->download_stall_usec / 1000000u));
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, d);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, d);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, d);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
}

static int job_fail(struct dl *d, const char *code, const char *fmt, ...) _printf_(3, 4);
static int job_fail(struct dl *d, const char *code, const char *fmt, ...) {
        char msg[1024];
        va_list ap;

        if (d->failed)
                return -EIO;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        d->failed = true;
        if (d->j->cancel && !d->h->stopping) {
                code = "cancelled";
                snprintf(msg, sizeof(msg), "the download was cancelled");
        }
        snprintf(d->err_code, sizeof(d->err_code), "%s", code);
        snprintf(d->err_msg, sizeof(d->err_msg), "%s", msg);
        return -EIO;
}

/* The terminal event; the failure counter counts failures, not stops. */
static void emit_failure(struct dl *d) {
        pthread_mutex_lock(&d->h->lock);
        (void) hive_job_error_locked(d->h, d->j, d->err_code[0] ? d->err_code : "internal_error", "%s",
                                     d->err_msg[0] ? d->err_msg : "the download failed");
        if (!streq(d->err_code, "shutting_down"))
                d->h->metrics.downloads_failed++;
        pthread_mutex_unlock(&d->h->lock);
}

/* The hive is stopping: the partial file and the downloads row stay, and the
 * next start resumes the download (hive_downloads_recover()). */
static int job_stopping(struct dl *d) {
        if (!d->failed) {
                d->failed = true;
                snprintf(d->err_code, sizeof(d->err_code), "shutting_down");
                snprintf(d->err_msg, sizeof(d->err_msg), "the hive is stopping: the download resumes when it starts again");
        }
        return -ESHUTDOWN;
}

static const char *status_code(long st) {
        if (st == 401 || st == 403)
                return "upstream_unauthorized";
        if (st == 404)
                return "upstream_not_found";
        return "upstream_error";
}

/* Sleep before a retry; false when cancelled. */
static bool backoff(struct dl *d, uint64_t usec) {
        uint64_t until = hive_now_usec() + usec;
        bool ok;

        pthread_mutex_lock(&d->h->lock);
        while (!d->j->cancel && !d->h->stopping && hive_now_usec() < until) {
                struct timespec ts;
                uint64_t left = until - hive_now_usec();
                clock_gettime(CLOCK_MONOTONIC, &ts);
                uint64_t ns = (uint64_t) ts.tv_nsec + MIN(left, (uint64_t) 200000) * 1000u;
                ts.tv_sec += (time_t) (ns / 1000000000u);
                ts.tv_nsec = (long) (ns % 1000000000u);
                (void) pthread_cond_timedwait(&d->h->changed, &d->h->lock, &ts);
        }
        ok = !d->j->cancel && !d->h->stopping;
        pthread_mutex_unlock(&d->h->lock);
        return ok;
}

static int fetch_listing(struct dl *d, const char *ep, const char *repo, struct curl_slist *hdrs,
                         struct json_object **ret) {
        _cleanup_(strbuf_donep) struct strbuf mem = STRBUF_INIT(LISTING_MAX);
        _cleanup_(freep) char *url = NULL;
        long st = 0;
        CURLcode cc = CURLE_OK;

        if (asprintf(&url, "%s/api/models/%s/tree/main", ep, repo) < 0)
                return -ENOMEM;
        for (unsigned attempt = 1;; attempt++) {
                CURL *c = curl_easy_init();
                if (!c)
                        return -ENOMEM;
                strbuf_reset(&mem);
                d->mem = &mem;
                setup_common(c, d, url, hdrs, &d->h->opt);
                cc = curl_easy_perform(c);
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
                curl_easy_cleanup(c);
                d->mem = NULL;
                if (d->j->cancel)
                        return job_fail(d, "cancelled", "cancelled");
                if (cc == CURLE_OK && st == 200)
                        break;
                if (cc == CURLE_OK && st < 500)
                        return job_fail(d, status_code(st), "listing %s returned HTTP %ld%s", url, st,
                                        st == 401 || st == 403 ? ": the repo is private or gated; set HF_TOKEN"
                                        : st == 404      ? ": no such repo"
                                                         : "");
                if (attempt > d->h->opt.download_retries)
                        return job_fail(d, cc == CURLE_OK ? "upstream_error" : "network_error", "listing %s failed: %s",
                                        url, cc == CURLE_OK ? "server error" : curl_easy_strerror(cc));
                if (!backoff(d, d->h->opt.download_retry_base_usec << (attempt - 1)))
                        return job_fail(d, "cancelled", "cancelled");
        }
        if (hive_download_parse_listing(mem.data ? mem.data : "", mem.len, ret) < 0)
                return job_fail(d, "upstream_error", "the listing of %s is not a JSON array", repo);
        return 0;
}

int hive_download_parse_listing(const char *text, size_t len, struct json_object **ret) {
        struct json_object *o = NULL;
        int r;

        r = json_parse_strict(text, len, 16, &o, NULL, 0);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_array)) {
                json_object_put(o);
                return -EBADMSG;
        }
        *ret = o;
        return 0;
}

int hive_download_choose_file(struct json_object *list, const char *repo, const char *sel, char **ret_path,
                              uint64_t *ret_size, char **ret_sha, const char **ret_code, char *err, size_t errlen) {
        _cleanup_(strbuf_donep) struct strbuf names = STRBUF_INIT(4096);
        struct json_object *pick = NULL;
        size_t n = json_object_array_length(list), matches = 0;
        bool by_name = sel && str_endswith(sel, ".gguf");

        for (size_t i = 0; i < n; i++) {
                struct json_object *e = json_object_array_get_idx(list, i);
                const char *type = NULL, *path = NULL;
                if (!e || json_get_string(e, "path", &path, NULL) <= 0 || json_get_string(e, "type", &type, NULL) < 0 ||
                    (type && !streq(type, "file")))
                        continue;
                size_t pl = strlen(path);
                if (pl < 5 || strcasecmp(path + pl - 5, ".gguf") != 0 || !listed_file_ok(path))
                        continue;
                (void) strbuf_printf(&names, "%s%s", names.len ? ", " : "", path);
                if (by_name ? streq(path, sel) : !sel || strcasestr(path, sel)) {
                        matches++;
                        pick = e;
                }
        }
        if (matches == 0) {
                *ret_code = "quant_not_found";
                snprintf(err, errlen, "%s%s%s has no matching .gguf file (files: %s)", repo, sel ? " :" : "",
                         strempty(sel), names.len ? names.data : "none");
                return -ENOENT;
        }
        if (matches > 1) {
                *ret_code = "ambiguous_file";
                snprintf(err, errlen, "%s has %zu matching .gguf files (%s): name one, e.g. hf:%s:FILE.gguf", repo,
                         matches, names.data, repo);
                return -ENOTUNIQ;
        }
        const char *path = NULL, *sha = NULL;
        struct json_object *lfs = NULL;
        uint64_t size = 0;
        (void) json_get_string(pick, "path", &path, NULL);
        (void) json_get_uint64(pick, "size", &size);
        if (json_get_typed(pick, "lfs", json_type_object, &lfs) > 0 && lfs) {
                uint64_t lsize = 0;
                if (json_get_string(lfs, "oid", &sha, NULL) <= 0)
                        (void) json_get_string(lfs, "sha256", &sha, NULL);
                if (json_get_uint64(lfs, "size", &lsize) > 0)
                        size = lsize;
        }
        if (sha && (strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64))
                sha = NULL;
        /* Sizes go out as JSON int64 in the progress events and into off_t arithmetic. */
        if (size > INT64_MAX) {
                *ret_code = "upstream_error";
                snprintf(err, errlen, "the listing of %s gives %s an impossible size (%llu bytes)", repo, path,
                         (unsigned long long) size);
                return -EBADMSG;
        }
        *ret_path = strdup(path);
        *ret_sha = sha ? strdup(sha) : NULL;
        *ret_size = size;
        if (!*ret_path || (sha && !*ret_sha)) {
                free(*ret_path);
                free(*ret_sha);
                *ret_path = *ret_sha = NULL;
                *ret_code = "internal_error";
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        return 0;
}

static int choose_file(struct dl *d, struct json_object *list, const char *repo, const char *sel, char **ret_path,
                       uint64_t *ret_size, char **ret_sha) {
        const char *code = "internal_error";
        char err[1024];
        int r;

        r = hive_download_choose_file(list, repo, sel, ret_path, ret_size, ret_sha, &code, err, sizeof(err));
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return job_fail(d, code, "%s", err);
        return 0;
}

static int fetch_file(struct dl *d, const char *url, struct curl_slist *hdrs, const char *partial) {
        const char *reason = "unknown error";
        bool stalled = false;

        for (d->attempt = 1;; d->attempt++) {
                struct stat st;
                CURLcode cc;
                long code = 0;
                CURL *c;

                d->fd = open(partial, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0644);
                if (d->fd < 0)
                        return job_fail(d, "internal_error", "cannot write %s: %m", partial);
                if (fstat(d->fd, &st) < 0) {
                        close(d->fd);
                        return job_fail(d, "internal_error", "cannot stat %s: %m", partial);
                }
                d->offset = (uint64_t) st.st_size;
                d->written = 0;
                d->t_start = hive_now_usec();
                if (d->total && d->offset == d->total) {
                        close(d->fd);
                        return 0;
                }
                if (d->total && d->offset > d->total) {
                        if (ftruncate(d->fd, 0) < 0) {
                                close(d->fd);
                                return job_fail(d, "internal_error", "cannot truncate %s: %m", partial);
                        }
                        d->offset = 0;
                }
                emit_progress(d, true);
                c = curl_easy_init();
                if (!c) {
                        close(d->fd);
                        return -ENOMEM;
                }
                setup_common(c, d, url, hdrs, &d->h->opt);
                if (d->offset > 0) {
                        char range[64];
                        snprintf(range, sizeof(range), "%llu-", (unsigned long long) d->offset);
                        curl_easy_setopt(c, CURLOPT_RANGE, range);
                }
                cc = curl_easy_perform(c);
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
                curl_easy_cleanup(c);
                close(d->fd);
                d->fd = -1;
                pthread_mutex_lock(&d->h->lock);
                d->h->metrics.download_bytes += d->written;
                pthread_mutex_unlock(&d->h->lock);

                /* The hive cancels every job when it stops: stopping wins. */
                if (d->h->stopping)
                        return job_stopping(d);
                if (d->j->cancel)
                        return job_fail(d, "cancelled", "cancelled");
                if (d->enospc)
                        return job_fail(d, "disk_full", "the disk filled up while writing %s (%s)", partial,
                                        strerror(d->write_errno));
                if (d->write_errno)
                        return job_fail(d, "internal_error", "cannot write %s: %s", partial, strerror(d->write_errno));
                if (cc == CURLE_OK && (code == 200 || code == 206)) {
                        if (stat(partial, &st) < 0)
                                return job_fail(d, "internal_error", "cannot stat %s: %m", partial);
                        if (!d->total || (uint64_t) st.st_size == d->total) {
                                d->offset = (uint64_t) st.st_size;
                                d->written = 0;
                                emit_progress(d, true);
                                return 0;
                        }
                        reason = "the server ended the file early";
                } else if (cc == CURLE_OK && code == 416) {
                        /* Our partial does not fit the file: start over. */
                        if (truncate(partial, 0) < 0)
                                log_debug("Cannot truncate %s: %m", partial);
                        reason = "range not satisfiable";
                } else if (cc == CURLE_OK && code >= 400 && code < 500)
                        return job_fail(d, status_code(code), "%s returned HTTP %ld%s", url, code,
                                        code == 401 || code == 403 ? ": the file is private or gated; set HF_TOKEN"
                                        : code == 404            ? ": no such file"
                                                                 : "");
                else if (cc == CURLE_OK)
                        reason = "server error";
                else {
                        stalled = cc == CURLE_OPERATION_TIMEDOUT;
                        reason = stalled ? "the transfer stalled" : curl_easy_strerror(cc);
                }
                if (d->attempt > d->h->opt.download_retries)
                        return job_fail(d, stalled ? "stalled" : "network_error", "%s failed after %u attempts: %s", url,
                                        d->attempt, reason);

                uint64_t base = d->h->opt.download_retry_base_usec, delay, jitter = 0;
                delay = MIN(base << MIN(d->attempt - 1, 10u), (uint64_t) 30000000);
                if (getrandom(&jitter, sizeof(jitter), 0) != sizeof(jitter))
                        jitter = hive_now_usec();
                delay += base ? jitter % (base / 2 + 1) : 0;
                struct json_object *o = json_object_new_object();
                if (o) {
                        json_object_object_add(o, "attempt", json_object_new_int((int) d->attempt + 1));
                        json_object_object_add(o, "delay_ms", json_object_new_int64((int64_t) (delay / 1000)));
                        json_object_object_add(o, "reason", json_object_new_string(reason));
                        json_object_object_add(o, "bytes", json_object_new_int64((int64_t) (d->offset + d->written)));
                        pthread_mutex_lock(&d->h->lock);
                        (void) hive_job_event_locked(d->h, d->j, "retry", o);
                        pthread_mutex_unlock(&d->h->lock);
                }
                log_notice("Download of %s: %s; retry %u in %llu ms", url, reason, d->attempt,
                           (unsigned long long) (delay / 1000));
                if (!backoff(d, delay))
                        return d->h->stopping ? job_stopping(d) : job_fail(d, "cancelled", "cancelled");
        }
}

static int register_local(struct dl *d, const char *path, const char *source) {
        struct hive_model m = {};
        char err[512], sha[65];
        int r;

        r = hive_model_inspect(path, &m, err, sizeof(err));
        if (r >= 0)
                r = hive_sha256_file(path, sha, &d->j->cancel);
        if (r < 0) {
                free(m.architecture);
                free(m.quantization);
                free(m.name);
                return job_fail(d, "invalid_model", "%s", r == -ECANCELED ? "cancelled" : err);
        }
        m.id = d->j->model;
        m.local_path = (char *) path;
        m.source = (char *) source;
        m.sha256 = sha;
        m.created_at = hive_wall_sec();
        r = hive_catalog_add(d->h->catalog, &m);
        free(m.architecture);
        free(m.quantization);
        free(m.name);
        if (r == -EEXIST)
                return job_fail(d, "model_exists", "a model '%s' is already in the catalog", d->j->model);
        if (r < 0)
                return job_fail(d, "internal_error", "cannot write the catalog: %s", strerror(-r));
        return 0;
}

static void finish_ok(struct dl *d) {
        _cleanup_(hive_model_freep) struct hive_model *m = NULL;
        struct json_object *o = json_object_new_object();

        if (hive_catalog_get(d->h->catalog, d->j->model, &m) >= 0 && o)
                json_object_object_add(o, "model", hive_model_to_json(m, false));
        pthread_mutex_lock(&d->h->lock);
        d->h->metrics.downloads_ok++;
        (void) hive_job_event_locked(d->h, d->j, "end", o);
        pthread_mutex_unlock(&d->h->lock);
        log_struct(LOG_INFO, ((const char *[]) { "RBEE_EVENT=model-download", NULL }), "Model %s is ready (%s)",
                   d->j->model, d->j->source);
}

/* The catalog may be write-locked by another process (an sqlite3 shell, a
 * backup): the file is complete and verified, so wait for the lock a while
 * rather than throw the download away. */
#define CATALOG_WAIT_USEC (120u * 1000000u)

static int catalog_add_patiently(struct dl *d, const struct hive_model *m) {
        uint64_t deadline = hive_now_usec() + CATALOG_WAIT_USEC;
        unsigned attempt = 0;

        for (;;) {
                int r = hive_catalog_add(d->h->catalog, m);
                if (r != -EBUSY || hive_now_usec() >= deadline)
                        return r;
                struct json_object *o = json_object_new_object();
                if (o) {
                        json_object_object_add(o, "attempt", json_object_new_int((int) ++attempt + 1));
                        json_object_object_add(o, "delay_ms", json_object_new_int(500));
                        json_object_object_add(o, "reason", json_object_new_string("the catalog is locked by another process"));
                        pthread_mutex_lock(&d->h->lock);
                        (void) hive_job_event_locked(d->h, d->j, "retry", o);
                        pthread_mutex_unlock(&d->h->lock);
                }
                log_notice("The catalog is locked by another process: waiting to register %s", m->id);
                if (!backoff(d, 500000))
                        return d->h->stopping ? -ESHUTDOWN : -ECANCELED;
        }
}

void *hive_download_thread(void *arg) {
        struct hive_thread_arg *a = arg;
        struct hive *h = a->h;
        struct hive_job *j = a->j;
        _cleanup_(freep) char *repo = NULL, *sel = NULL, *def_id = NULL, *file = NULL, *sha = NULL, *ep = NULL;
        _cleanup_(freep) char *url = NULL, *partial = NULL, *final = NULL, *auth = NULL, *source = NULL;
        _cleanup_(json_object_putp) struct json_object *list = NULL;
        struct curl_slist *hdrs = NULL;
        struct dl d = { .h = h, .j = j, .fd = -1, .file = "" };
        const char *token = getenv("HF_TOKEN");
        bool keep = false;              /* leave the partial file and the downloads row for the next start */
        bool ok = false;
        char err[512];
        uint64_t size = 0;
        int r;

        if (hive_download_parse_source(j->source, &repo, &sel, &def_id, err, sizeof(err)) < 0) {
                job_fail(&d, "invalid_reference", "%s", err);
                goto out;
        }
        if (!repo) {
                d.file = sel;
                ok = register_local(&d, sel, j->source) >= 0;
                goto out;
        }
        ep = strdup(h->opt.hf_endpoint);
        if (!ep)
                goto out;
        while (str_endswith(ep, "/") && strlen(ep) > 1)
                ep[strlen(ep) - 1] = 0;
        if (token && *token) {
                if (asprintf(&auth, "Authorization: Bearer %s", token) < 0)
                        goto out;
                hdrs = curl_slist_append(hdrs, auth);
        }
        r = fetch_listing(&d, ep, repo, hdrs, &list);
        if (r < 0)
                goto out;
        r = choose_file(&d, list, repo, sel, &file, &size, &sha);
        if (r < 0)
                goto out;
        d.file = file;
        d.total = size;

        if (asprintf(&partial, "%s/%s.gguf.partial", h->models_dir, j->model) < 0 ||
            asprintf(&final, "%s/%s.gguf", h->models_dir, j->model) < 0 ||
            asprintf(&url, "%s/%s/resolve/main/%s", ep, repo, file) < 0 ||
            asprintf(&source, "hf:%s:%s", repo, file) < 0)
                goto out;
        r = hive_mkdir_p(h->models_dir, 0755);
        if (r < 0) {
                job_fail(&d, "internal_error", "cannot create %s: %s", h->models_dir, strerror(-r));
                goto out;
        }
        struct statvfs vfs;
        struct stat pst;
        uint64_t have = stat(partial, &pst) >= 0 ? (uint64_t) pst.st_size : 0;
        if (size && statvfs(h->models_dir, &vfs) >= 0 &&
            (uint64_t) vfs.f_bavail * vfs.f_frsize < (size > have ? size - have : 0) + (16u << 20)) {
                job_fail(&d, "disk_full", "not enough free space in %s: %s needs %llu MiB, %llu MiB free", h->models_dir,
                         file, (unsigned long long) (size >> 20),
                         (unsigned long long) (((uint64_t) vfs.f_bavail * vfs.f_frsize) >> 20));
                goto fail_partial;
        }
        /* Without the row a crash would leave an orphan, which the next start
         * removes: the download still works, it just would not resume. */
        r = hive_catalog_download_begin(h->catalog, j->model, j->source, j->id);
        if (r < 0)
                log_warning("Cannot record the download of %s in the catalog (%s): it will not resume after a crash",
                            j->model, strerror(-r));
        log_info("Downloading %s (%llu bytes) to %s", url, (unsigned long long) size, partial);
        r = fetch_file(&d, url, hdrs, partial);
        if (r == -ESHUTDOWN) {
                keep = true;
                goto out;
        }
        if (r < 0)
                goto fail_partial;
        if (sha) {
                char got[65];
                struct json_object *o = json_object_new_object();
                if (o) {
                        json_object_object_add(o, "file", json_object_new_string(file));
                        json_object_object_add(o, "sha256", json_object_new_string(sha));
                        pthread_mutex_lock(&h->lock);
                        (void) hive_job_event_locked(h, j, "verifying", o);
                        pthread_mutex_unlock(&h->lock);
                }
                r = hive_sha256_file(partial, got, &j->cancel);
                if (r == -ECANCELED && h->stopping) {
                        (void) job_stopping(&d);
                        keep = true;
                        goto out;
                }
                if (r < 0) {
                        job_fail(&d, r == -ECANCELED ? "cancelled" : "internal_error", "cannot hash %s: %s", partial,
                                 strerror(-r));
                        goto fail_partial;
                }
                if (!streq(got, sha)) {
                        job_fail(&d, "checksum_mismatch", "%s: sha256 is %s, the server says %s", file, got, sha);
                        goto fail_partial;
                }
        }
        {
                struct hive_model m = {};
                r = hive_model_inspect(partial, &m, err, sizeof(err));
                free(m.architecture);
                free(m.quantization);
                free(m.name);
                if (r < 0) {
                        job_fail(&d, "invalid_model", "%s is not a usable GGUF model: %s", file, err);
                        goto fail_partial;
                }
        }
        if (rename(partial, final) < 0) {
                job_fail(&d, "internal_error", "cannot rename %s to %s: %m", partial, final);
                goto fail_partial;
        }
        {
                struct hive_model m = {};
                char sum[65];
                r = hive_model_inspect(final, &m, err, sizeof(err));
                if (r >= 0 && !sha)
                        r = hive_sha256_file(final, sum, NULL);
                m.id = j->model;
                m.local_path = final;
                m.source = source;
                m.sha256 = sha ? sha : sum;
                m.managed = true;
                m.created_at = hive_wall_sec();
                if (r >= 0)
                        r = catalog_add_patiently(&d, &m);
                free(m.architecture);
                free(m.quantization);
                free(m.name);
                if (r == -EEXIST || r == -ECANCELED) {
                        (void) unlink(final);
                        job_fail(&d, r == -EEXIST ? "model_exists" : "cancelled", "cannot add %s to the catalog: %s",
                                 j->model, r == -EEXIST ? "the id is taken" : "cancelled");
                        goto out;
                }
                if (r < 0) {
                        /* Verified bytes are not thrown away: back to .partial, where
                         * the next start (or the same download asked again) finds
                         * the file complete and only registers it. */
                        keep = rename(final, partial) >= 0;
                        if (!keep)
                                (void) unlink(final);
                        if (r == -ESHUTDOWN)
                                (void) job_stopping(&d);
                        else
                                job_fail(&d, r == -EBUSY ? "catalog_busy" : "internal_error",
                                         "cannot add %s to the catalog: %s%s", j->model,
                                         r == -EBUSY ? "another process holds its write lock" : strerror(-r),
                                         keep ? "; the file is kept and registered when the download is asked again or the hive restarts"
                                              : "");
                        goto out;
                }
        }
        ok = true;
        goto out;

fail_partial:
        if (partial)
                (void) unlink(partial);
out:
        if (partial && !keep) {
                r = hive_catalog_download_end(h->catalog, j->model);
                if (r < 0 && r != -ENOENT)
                        log_warning("Cannot remove the finished download of %s from the catalog: %s", j->model,
                                    strerror(-r));
        }
        curl_slist_free_all(hdrs);
        if (auth)
                explicit_bzero(auth, strlen(auth));
        if (ok)
                finish_ok(&d);
        else {
                if (!d.failed)
                        job_fail(&d, "internal_error", "out of memory");
                emit_failure(&d);
        }
        return NULL;
}

/* One download row found at start: resume it under its old job id. Lock held. */
static int resume_one(struct hive *h, const struct hive_catalog_download *row) {
        _cleanup_(json_object_putp) struct json_object *req = NULL;
        struct hive_job *j = NULL;
        int r;

        r = hive_job_new_locked(h, HIVE_JOB_DOWNLOAD, row->id,
                                row->job_id && hive_job_id_is_valid(row->job_id) ? row->job_id : NULL, &j);
        if (r < 0)
                return r;
        req = json_object_new_object();
        if (!req || !(j->source = strdup(row->source))) {
                (void) hive_job_error_locked(h, j, "internal_error", "out of memory");
                return -ENOMEM;
        }
        json_object_object_add(req, "source", json_object_new_string(row->source));
        json_object_object_add(req, "id", json_object_new_string(row->id));
        json_object_object_add(req, "resumed", json_object_new_boolean(true));
        j->request = TAKE_PTR(req);
        r = hive_job_start_thread_locked(h, j);
        if (r < 0) {
                (void) hive_job_error_locked(h, j, "overloaded", "too many jobs are running");
                return r;
        }
        log_info("Resuming the download of %s (%s) as job %s", row->id, row->source, j->id);
        return 0;
}

static bool row_for(const struct hive_catalog_download *rows, const char *id) {
        for (const struct hive_catalog_download *d = rows; d && d->id; d++)
                if (streq(d->id, id))
                        return true;
        return false;
}

int hive_downloads_recover(struct hive *h) {
        _cleanup_(hive_catalog_download_listp) struct hive_catalog_download *rows = NULL;
        _cleanup_(closedirp) DIR *dir = NULL;
        unsigned resumed = 0, removed = 0;
        struct dirent *de;
        int r;

        r = hive_catalog_download_list(h->catalog, &rows);
        if (r < 0)
                return log_error_errno(r, "Cannot read the downloads in flight from the catalog: %m");
        for (struct hive_catalog_download *d = rows; d->id; d++) {
                _cleanup_(hive_model_freep) struct hive_model *m = NULL;
                _cleanup_(freep) char *partial = NULL;
                /* Registered, but the hive died before it dropped the row. */
                if (!hive_id_is_valid(d->id) || hive_catalog_get(h->catalog, d->id, &m) >= 0) {
                        (void) hive_catalog_download_end(h->catalog, d->id);
                        if (hive_id_is_valid(d->id) && asprintf(&partial, "%s/%s.gguf.partial", h->models_dir, d->id) >= 0)
                                (void) unlink(partial);
                        continue;
                }
                /* Died between the rename and the catalog row: the file is
                 * whole, so the resumed job only verifies and registers it. */
                _cleanup_(freep) char *final = NULL;
                if (asprintf(&partial, "%s/%s.gguf.partial", h->models_dir, d->id) < 0 ||
                    asprintf(&final, "%s/%s.gguf", h->models_dir, d->id) < 0)
                        return -ENOMEM;
                if (access(partial, F_OK) < 0 && errno == ENOENT && rename(final, partial) >= 0)
                        log_info("Found the whole download of %s: verifying it again", d->id);
                pthread_mutex_lock(&h->lock);
                r = resume_one(h, d);
                pthread_mutex_unlock(&h->lock);
                if (r < 0)
                        log_warning("Cannot resume the download of %s: %s; it resumes when asked again", d->id,
                                    strerror(-r));
                else
                        resumed++;
        }

        /* A partial file that no download row claims is garbage. */
        dir = opendir(h->models_dir);
        if (!dir)
                return errno == ENOENT ? 0 : log_error_errno(errno, "Cannot read %s: %m", h->models_dir);
        while ((de = readdir(dir))) {
                size_t n = strlen(de->d_name);
                static const char sfx[] = ".gguf.partial";
                _cleanup_(freep) char *id = NULL;

                if (n <= sizeof(sfx) - 1 || !str_endswith(de->d_name, sfx))
                        continue;
                id = strndup(de->d_name, n - (sizeof(sfx) - 1));
                if (!id)
                        return -ENOMEM;
                if (row_for(rows, id))
                        continue;
                if (unlinkat(dirfd(dir), de->d_name, 0) < 0)
                        log_warning("Cannot remove the stray partial download %s/%s: %m", h->models_dir, de->d_name);
                else {
                        log_notice("Removed the stray partial download %s/%s", h->models_dir, de->d_name);
                        removed++;
                }
        }
        if (resumed || removed)
                log_info("Downloads: %u resumed, %u stray partial files removed", resumed, removed);
        return (int) resumed;
}
