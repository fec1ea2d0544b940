/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "catalog.h"
#include "json-util.h"
#include "logging.h"
#include "macros.h"
#include "strutil.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize)

struct hive_catalog {
        sqlite3 *db;            /* writes */
        /* Reads, on their own connection: a write that waits for another
         * process's lock holds its connection for the busy timeout, and
         * routing (which reads) must not wait behind it. WAL readers never
         * wait for writers. */
        sqlite3 *rdb;
        char *path;
};

/* Each entry takes the schema from version i to i + 1. Never edit one that
 * has shipped: add another. Workers read models(id, local_path) only. */
static const char *const migrations[] = {
        "CREATE TABLE models ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  local_path TEXT NOT NULL,"
        "  source TEXT NOT NULL,"
        "  name TEXT,"
        "  size INTEGER NOT NULL DEFAULT 0,"
        "  sha256 TEXT,"
        "  architecture TEXT,"
        "  quantization TEXT,"
        "  context_length INTEGER NOT NULL DEFAULT 0,"
        "  parameters INTEGER NOT NULL DEFAULT 0,"
        "  backend TEXT NOT NULL DEFAULT 'cpu',"
        "  device INTEGER NOT NULL DEFAULT 0,"
        "  managed INTEGER NOT NULL DEFAULT 0,"
        "  created_at INTEGER NOT NULL"
        ");",
        /* Downloads in flight: a hive that dies mid-download resumes them at
         * its next start, and removes any .partial file without a row here. */
        "CREATE TABLE downloads ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  source TEXT NOT NULL,"
        "  job_id TEXT,"
        "  created_at INTEGER NOT NULL"
        ");",
};

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen) {
        char *msg = NULL;
        int r = sqlite3_exec(db, sql, NULL, NULL, &msg);

        if (r != SQLITE_OK) {
                snprintf(err, errlen, "%s", msg ? msg : sqlite3_errstr(r));
                sqlite3_free(msg);
                return r;
        }
        return SQLITE_OK;
}

static bool is_corruption(int rc) {
        rc &= 0xff;
        return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

/* 0 healthy, -EBADMSG corrupt (message in err), other negative errno for the rest. */
static int check_and_migrate(sqlite3 *db, char *err, size_t errlen) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int version, rc;

        (void) sqlite3_busy_timeout(db, 5000);
        rc = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                snprintf(err, errlen, "%s", sqlite3_errmsg(db));
                return is_corruption(rc) || is_corruption(sqlite3_extended_errcode(db)) ? -EBADMSG : -EIO;
        }
        if (!streq((const char *) sqlite3_column_text(st, 0), "ok")) {
                snprintf(err, errlen, "integrity check failed: %s", strna((const char *) sqlite3_column_text(st, 0)));
                return -EBADMSG;
        }
        sqlite3_finalize(st);
        st = NULL;

        rc = exec(db, "PRAGMA journal_mode=WAL", err, errlen);
        if (rc != SQLITE_OK)
                return is_corruption(rc) ? -EBADMSG : -EIO;
        (void) exec(db, "PRAGMA synchronous=NORMAL", err, errlen);

        rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
        if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
                snprintf(err, errlen, "%s", sqlite3_errmsg(db));
                return -EIO;
        }
        version = sqlite3_column_int(st, 0);
        if (version < 0) {
                snprintf(err, errlen, "negative schema version %d", version);
                return -EBADMSG;
        }
        if ((size_t) version > ELEMENTSOF(migrations)) {
                snprintf(err, errlen, "schema version %d is newer than this hive's (%zu): upgrade rbee", version,
                         ELEMENTSOF(migrations));
                return -EPROTONOSUPPORT;
        }
        for (size_t v = (size_t) version; v < ELEMENTSOF(migrations); v++) {
                char sql[64];

                rc = exec(db, "BEGIN IMMEDIATE", err, errlen);
                if (rc == SQLITE_OK)
                        rc = exec(db, migrations[v], err, errlen);
                snprintf(sql, sizeof(sql), "PRAGMA user_version=%zu", v + 1);
                if (rc == SQLITE_OK)
                        rc = exec(db, sql, err, errlen);
                if (rc == SQLITE_OK)
                        rc = exec(db, "COMMIT", err, errlen);
                if (rc != SQLITE_OK) {
                        char ignored[16];
                        (void) exec(db, "ROLLBACK", ignored, sizeof(ignored));
                        return is_corruption(rc) ? -EBADMSG : -EIO;
                }
                log_info("Catalog migrated to schema version %zu", v + 1);
        }
        /* A database with the right version but not our table is not ours. */
        rc = exec(db, "SELECT id, local_path, source, size, sha256, managed, created_at FROM models LIMIT 0", err,
                  errlen);
        if (rc != SQLITE_OK)
                return -EBADMSG;
        return 0;
}

static int open_db(const char *path, sqlite3 **ret, char *err, size_t errlen) {
        sqlite3 *db = NULL;
        int rc;

        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
        if (rc != SQLITE_OK) {
                snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
                sqlite3_close_v2(db);
                return is_corruption(rc) ? -EBADMSG : -EIO;
        }
        /* Step returns the extended code itself: with one connection shared by
         * threads, sqlite3_extended_errcode() may already tell of another
         * thread's statement. */
        (void) sqlite3_extended_result_codes(db, 1);
        *ret = db;
        return 0;
}

static int move_aside(const char *path, char **ret_dest) {
        _cleanup_(freep) char *dest = NULL;
        static const char *const sfx[] = { "-wal", "-shm" };

        if (asprintf(&dest, "%s.corrupt-%lld", path, (long long) time(NULL)) < 0)
                return -ENOMEM;
        if (rename(path, dest) < 0)
                return -errno;
        for (size_t i = 0; i < ELEMENTSOF(sfx); i++) {
                _cleanup_(freep) char *a = NULL, *b = NULL;
                if (asprintf(&a, "%s%s", path, sfx[i]) < 0 || asprintf(&b, "%s%s", dest, sfx[i]) < 0)
                        return -ENOMEM;
                if (rename(a, b) < 0 && errno != ENOENT)
                        (void) unlink(a);
        }
        *ret_dest = TAKE_PTR(dest);
        return 0;
}

int hive_catalog_open(const char *path, struct hive_catalog **ret, char **ret_recovered_from, char *err,
                      size_t errlen) {
        _cleanup_(freep) char *recovered = NULL;
        struct hive_catalog *c;
        sqlite3 *db = NULL;
        char msg[512] = "";
        int r;

        r = open_db(path, &db, msg, sizeof(msg));
        if (r >= 0) {
                r = check_and_migrate(db, msg, sizeof(msg));
                if (r < 0) {
                        sqlite3_close_v2(db);
                        db = NULL;
                }
        }
        if (r == -EBADMSG) {
                int k = move_aside(path, &recovered);
                if (k < 0) {
                        snprintf(err, errlen, "catalog %s is corrupt (%s) and cannot be moved aside: %s", path, msg,
                                 strerror(-k));
                        return -EIO;
                }
                log_error("Catalog %s is corrupt (%s): moved it to %s and started an empty catalog", path, msg,
                          recovered);
                r = open_db(path, &db, msg, sizeof(msg));
                if (r >= 0) {
                        r = check_and_migrate(db, msg, sizeof(msg));
                        if (r < 0) {
                                sqlite3_close_v2(db);
                                db = NULL;
                        }
                }
        }
        if (r < 0) {
                snprintf(err, errlen, "cannot open catalog %s: %s", path, msg);
                return r == -EBADMSG ? -EIO : r;
        }
        sqlite3 *rdb = NULL;
        int rc = sqlite3_open_v2(path, &rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL);
        if (rc != SQLITE_OK) {
                snprintf(err, errlen, "cannot open catalog %s for reading: %s", path,
                         rdb ? sqlite3_errmsg(rdb) : sqlite3_errstr(rc));
                sqlite3_close_v2(rdb);
                sqlite3_close_v2(db);
                return -EIO;
        }
        (void) sqlite3_extended_result_codes(rdb, 1);
        (void) sqlite3_busy_timeout(rdb, 5000);
        c = calloc(1, sizeof(*c));
        if (!c || !(c->path = strdup(path))) {
                free(c);
                sqlite3_close_v2(rdb);
                sqlite3_close_v2(db);
                return -ENOMEM;
        }
        c->db = db;
        c->rdb = rdb;
        *ret = c;
        if (ret_recovered_from)
                *ret_recovered_from = TAKE_PTR(recovered);
        return 0;
}

struct hive_catalog *hive_catalog_free(struct hive_catalog *c) {
        if (!c)
                return NULL;
        sqlite3_close_v2(c->rdb);
        sqlite3_close_v2(c->db);
        free(c->path);
        free(c);
        return NULL;
}

const char *hive_catalog_path(const struct hive_catalog *c) {
        return c->path;
}

static int sql_errno(sqlite3 *db, int rc) {
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
                return -EEXIST;
        /* Another process holds the write lock past the busy timeout. */
        if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
                return -EBUSY;
        if (is_corruption(rc))
                return -EBADMSG;
        if ((rc & 0xff) == SQLITE_FULL)
                return -ENOSPC;
        log_debug("SQLite: %s", sqlite3_errmsg(db));
        return -EIO;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s) {
        if (s)
                sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_null(st, i);
}

int hive_catalog_add(struct hive_catalog *c, const struct hive_model *m) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(c->db,
                                "INSERT INTO models (id, local_path, source, name, size, sha256, architecture,"
                                " quantization, context_length, parameters, backend, device, managed, created_at)"
                                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sql_errno(c->db, rc);
        bind_text(st, 1, m->id);
        bind_text(st, 2, m->local_path);
        bind_text(st, 3, m->source);
        bind_text(st, 4, m->name);
        sqlite3_bind_int64(st, 5, (sqlite3_int64) m->size);
        bind_text(st, 6, m->sha256);
        bind_text(st, 7, m->architecture);
        bind_text(st, 8, m->quantization);
        sqlite3_bind_int64(st, 9, m->context_length);
        sqlite3_bind_int64(st, 10, (sqlite3_int64) m->parameters);
        bind_text(st, 11, m->backend ? m->backend : "cpu");
        sqlite3_bind_int(st, 12, m->device);
        sqlite3_bind_int(st, 13, m->managed);
        sqlite3_bind_int64(st, 14, m->created_at ? m->created_at : (sqlite3_int64) time(NULL));
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return sql_errno(c->db, rc);
        return 0;
}

#define SELECT_MODEL                                                                                    \
        "SELECT id, local_path, source, name, size, sha256, architecture, quantization, context_length," \
        " parameters, backend, device, managed, created_at FROM models"

static int dup_col(sqlite3_stmt *st, int i, char **ret) {
        const unsigned char *s = sqlite3_column_text(st, i);

        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup((const char *) s);
        return *ret ? 0 : -ENOMEM;
}

static int row_to_model(sqlite3_stmt *st, struct hive_model **ret) {
        _cleanup_(hive_model_freep) struct hive_model *m = calloc(1, sizeof(*m));
        int r = 0;

        if (!m)
                return -ENOMEM;
        if ((r = dup_col(st, 0, &m->id)) < 0 || (r = dup_col(st, 1, &m->local_path)) < 0 ||
            (r = dup_col(st, 2, &m->source)) < 0 || (r = dup_col(st, 3, &m->name)) < 0 ||
            (r = dup_col(st, 5, &m->sha256)) < 0 || (r = dup_col(st, 6, &m->architecture)) < 0 ||
            (r = dup_col(st, 7, &m->quantization)) < 0 || (r = dup_col(st, 10, &m->backend)) < 0)
                return r;
        if (!m->id || !m->local_path)
                return -EBADMSG;
        sqlite3_int64 size = sqlite3_column_int64(st, 4), ctx = sqlite3_column_int64(st, 8),
                      params = sqlite3_column_int64(st, 9);
        m->size = size > 0 ? (uint64_t) size : 0;
        m->context_length = ctx > 0 && ctx <= UINT32_MAX ? (uint32_t) ctx : 0;
        m->parameters = params > 0 ? (uint64_t) params : 0;
        m->device = sqlite3_column_int(st, 11);
        m->managed = sqlite3_column_int(st, 12) != 0;
        m->created_at = sqlite3_column_int64(st, 13);
        *ret = TAKE_PTR(m);
        return 0;
}

int hive_catalog_get(struct hive_catalog *c, const char *id, struct hive_model **ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(c->rdb, SELECT_MODEL " WHERE id = ?1", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sql_errno(c->rdb, rc);
        bind_text(st, 1, id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return sql_errno(c->rdb, rc);
        return row_to_model(st, ret);
}

void hive_model_listp(struct hive_model ***l) {
        if (!*l)
                return;
        for (struct hive_model **p = *l; *p; p++)
                hive_model_free(*p);
        free(*l);
}

int hive_catalog_list(struct hive_catalog *c, struct hive_model ***ret, size_t *ret_n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        _cleanup_(hive_model_listp) struct hive_model **l = NULL;
        size_t n = 0, cap = 0;
        int rc, r;

        rc = sqlite3_prepare_v2(c->rdb, SELECT_MODEL " ORDER BY id", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sql_errno(c->rdb, rc);
        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n + 1 >= cap) {
                        size_t ncap = cap ? cap * 2 : 16;
                        struct hive_model **nl = realloc(l, ncap * sizeof(*l));
                        if (!nl)
                                return -ENOMEM;
                        l = nl;
                        cap = ncap;
                }
                r = row_to_model(st, &l[n]);
                if (r < 0) {
                        l[n] = NULL;
                        return r;
                }
                l[++n] = NULL;
        }
        if (rc != SQLITE_DONE)
                return sql_errno(c->rdb, rc);
        *ret = TAKE_PTR(l);
        if (ret_n)
                *ret_n = n;
        return 0;
}

/* One row by id, from a statement whose only parameter is the id; -ENOENT
 * when there was none. */
static int delete_by_id(struct hive_catalog *c, const char *sql, const char *id) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sql_errno(c->db, rc);
        bind_text(st, 1, id);
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return sql_errno(c->db, rc);
        return sqlite3_changes(c->db) > 0 ? 0 : -ENOENT;
}

int hive_catalog_remove(struct hive_catalog *c, const char *id) {
        return delete_by_id(c, "DELETE FROM models WHERE id = ?1", id);
}

int hive_catalog_set_sha256(struct hive_catalog *c, const char *id, const char *sha256) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(c->db, "UPDATE models SET sha256 = ?2 WHERE id = ?1", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sql_errno(c->db, rc);
        bind_text(st, 1, id);
        bind_text(st, 2, sha256);
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return sql_errno(c->db, rc);
        return sqlite3_changes(c->db) > 0 ? 0 : -ENOENT;
}

int hive_catalog_count(struct hive_catalog *c, size_t *ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(c->rdb, "SELECT COUNT(*) FROM models", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sql_errno(c->rdb, rc);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return sql_errno(c->rdb, rc);
        *ret = (size_t) sqlite3_column_int64(st, 0);
        return 0;
}

struct hive_model *hive_model_free(struct hive_model *m) {
        if (!m)
                return NULL;
        free(m->id);
        free(m->source);
        free(m->local_path);
        free(m->name);
        free(m->sha256);
        free(m->architecture);
        free(m->quantization);
        free(m->backend);
        free(m);
        return NULL;
}

static int dup_str(const char *s, char **ret) {
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int hive_model_copy(const struct hive_model *m, struct hive_model **ret) {
        _cleanup_(hive_model_freep) struct hive_model *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        *c = (struct hive_model) { .size = m->size, .parameters = m->parameters,
                                   .context_length = m->context_length, .device = m->device,
                                   .managed = m->managed, .created_at = m->created_at };
        if (dup_str(m->id, &c->id) < 0 || dup_str(m->source, &c->source) < 0 ||
            dup_str(m->local_path, &c->local_path) < 0 || dup_str(m->name, &c->name) < 0 ||
            dup_str(m->sha256, &c->sha256) < 0 || dup_str(m->architecture, &c->architecture) < 0 ||
            dup_str(m->quantization, &c->quantization) < 0 || dup_str(m->backend, &c->backend) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

struct json_object *hive_model_to_json(const struct hive_model *m, bool loaded) {
        struct json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        json_object_object_add(o, "id", json_new_string_or_null(m->id));
        json_object_object_add(o, "object", json_object_new_string("model"));
        json_object_object_add(o, "created", json_object_new_int64(m->created_at));
        json_object_object_add(o, "owned_by", json_object_new_string("rbee"));
        json_object_object_add(o, "source", json_new_string_or_null(m->source));
        json_object_object_add(o, "local_path", json_new_string_or_null(m->local_path));
        json_object_object_add(o, "size", json_object_new_int64((int64_t) m->size));
        json_object_object_add(o, "sha256", m->sha256 ? json_object_new_string(m->sha256) : NULL);
        json_object_object_add(o, "architecture", json_new_string_or_null(m->architecture));
        json_object_object_add(o, "quantization", json_new_string_or_null(m->quantization));
        json_object_object_add(o, "context_length", json_object_new_int64(m->context_length));
        json_object_object_add(o, "parameters", json_object_new_int64((int64_t) m->parameters));
        json_object_object_add(o, "name", m->name ? json_object_new_string(m->name) : NULL);
        json_object_object_add(o, "backend", json_object_new_string(m->backend ? m->backend : "cpu"));
        json_object_object_add(o, "device", json_object_new_int(m->device));
        json_object_object_add(o, "managed", json_object_new_boolean(m->managed));
        json_object_object_add(o, "loaded", json_object_new_boolean(loaded));
        return o;
}

int hive_catalog_download_begin(struct hive_catalog *c, const char *id, const char *source, const char *job_id) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(c->db, "INSERT OR REPLACE INTO downloads (id, source, job_id, created_at) VALUES (?1, ?2, ?3, ?4)",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sql_errno(c->db, rc);
        bind_text(st, 1, id);
        bind_text(st, 2, source);
        bind_text(st, 3, job_id);
        sqlite3_bind_int64(st, 4, (sqlite3_int64) time(NULL));
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return sql_errno(c->db, rc);
        return 0;
}

int hive_catalog_download_end(struct hive_catalog *c, const char *id) {
        return delete_by_id(c, "DELETE FROM downloads WHERE id = ?1", id);
}

void hive_catalog_download_listp(struct hive_catalog_download **l) {
        if (!*l)
                return;
        for (struct hive_catalog_download *d = *l; d->id; d++) {
                free(d->id);
                free(d->source);
                free(d->job_id);
        }
        free(*l);
}

int hive_catalog_download_list(struct hive_catalog *c, struct hive_catalog_download **ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        _cleanup_(hive_catalog_download_listp) struct hive_catalog_download *l = NULL;
        size_t n = 0, cap = 0;
        int rc;

        rc = sqlite3_prepare_v2(c->rdb, "SELECT id, source, job_id FROM downloads ORDER BY created_at, id", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sql_errno(c->rdb, rc);
        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n + 1 >= cap) {
                        size_t ncap = cap ? cap * 2 : 8;
                        struct hive_catalog_download *nl = realloc(l, ncap * sizeof(*l));
                        if (!nl)
                                return -ENOMEM;
                        l = nl;
                        cap = ncap;
                }
                l[n] = (struct hive_catalog_download) {};
                int r = dup_col(st, 0, &l[n].id);
                if (r >= 0)
                        r = dup_col(st, 1, &l[n].source);
                if (r >= 0)
                        r = dup_col(st, 2, &l[n].job_id);
                if (r < 0 || !l[n].id || !l[n].source) {
                        free(l[n].id);
                        free(l[n].source);
                        free(l[n].job_id);
                        l[n] = (struct hive_catalog_download) {};
                        if (r < 0)
                                return r;
                        continue;       /* a row without id or source is not ours: skip it */
                }
                l[++n] = (struct hive_catalog_download) {};
        }
        if (rc != SQLITE_DONE)
                return sql_errno(c->rdb, rc);
        *ret = TAKE_PTR(l);
        return (int) MIN(n, (size_t) INT32_MAX);
}
