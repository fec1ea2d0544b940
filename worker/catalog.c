/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "macros.h"
#include "strutil.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3 *, sqlite3_close_v2)
DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize)

int worker_catalog_default_path(char **ret) {
        const char *dir = getenv("RBEE_STATE_DIRECTORY");

        if (!dir || !*dir)
                dir = "/var/lib/rbee";
        if (asprintf(ret, "%s/catalog.db", dir) < 0)
                return -ENOMEM;
        return 0;
}

static int lookup(const char *db_path, const char *id, char **ret_path, int *ret_device, char *err, size_t errlen) {
        _cleanup_(sqlite3_close_v2p) sqlite3 *db = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        const unsigned char *p;
        char *path;
        int r;

        if (access(db_path, R_OK) < 0) {
                r = -errno;
                snprintf(err, errlen, "cannot read the model catalog %s: %s", db_path, strerror(-r));
                return r;
        }
        /* Read-only: the hive owns the catalog and may be writing it (WAL). */
        r = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL);
        if (r != SQLITE_OK) {
                snprintf(err, errlen, "cannot open the model catalog %s: %s", db_path,
                         db ? sqlite3_errmsg(db) : sqlite3_errstr(r));
                return -EIO;
        }
        (void) sqlite3_busy_timeout(db, 5000);
        r = SQLITE_ERROR;
        if (ret_device)
                r = sqlite3_prepare_v2(db, "SELECT local_path, backend, device FROM models WHERE id = ?1", -1, &st,
                                       NULL);
        /* A catalog from before backends: everything runs on the CPU. */
        if (r != SQLITE_OK) {
                ret_device = NULL;
                r = sqlite3_prepare_v2(db, "SELECT local_path FROM models WHERE id = ?1", -1, &st, NULL);
        }
        if (r != SQLITE_OK) {
                snprintf(err, errlen, "%s is not a model catalog this worker can read: %s", db_path,
                         sqlite3_errmsg(db));
                return -EBADMSG;
        }
        if (sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC) != SQLITE_OK) {
                snprintf(err, errlen, "cannot query the model catalog: %s", sqlite3_errmsg(db));
                return -EIO;
        }
        r = sqlite3_step(st);
        if (r == SQLITE_DONE) {
                snprintf(err, errlen, "model '%s' is not in the catalog %s", id, db_path);
                return -ENOENT;
        }
        if (r != SQLITE_ROW) {
                snprintf(err, errlen, "cannot query the model catalog %s: %s", db_path, sqlite3_errmsg(db));
                return r == SQLITE_CORRUPT || r == SQLITE_NOTADB ? -EBADMSG : -EIO;
        }
        p = sqlite3_column_text(st, 0);
        if (!p || !*p) {
                snprintf(err, errlen, "model '%s' has no local path in the catalog", id);
                return -EBADMSG;
        }
        if (ret_device) {
                const unsigned char *b = sqlite3_column_text(st, 1);
                int dev = sqlite3_column_int(st, 2);
                if (b && streq((const char *) b, "cuda") && dev >= 0 && dev <= 1023)
                        *ret_device = dev;
                else if (b && !streq((const char *) b, "cpu")) {
                        snprintf(err, errlen, "model '%s' is placed on backend '%s' device %d, which this worker "
                                 "cannot run", id, (const char *) b, dev);
                        return -EOPNOTSUPP;
                }
        }
        path = strdup((const char *) p);
        if (!path)
                return -ENOMEM;
        *ret_path = path;
        return 0;
}

int worker_catalog_lookup(const char *db_path, const char *id, char **ret_path, char *err, size_t errlen) {
        return lookup(db_path, id, ret_path, NULL, err, errlen);
}

int worker_catalog_lookup_placement(const char *db_path, const char *id, char **ret_path, int *ret_device, char *err,
                                    size_t errlen) {
        *ret_device = -1;
        return lookup(db_path, id, ret_path, ret_device, err, errlen);
}
