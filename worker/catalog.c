/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "macros.h"

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

int worker_catalog_lookup(const char *db_path, const char *id, char **ret_path, char *err, size_t errlen) {
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
        r = sqlite3_prepare_v2(db, "SELECT local_path FROM models WHERE id = ?1", -1, &st, NULL);
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
        path = strdup((const char *) p);
        if (!path)
                return -ENOMEM;
        *ret_path = path;
        return 0;
}
