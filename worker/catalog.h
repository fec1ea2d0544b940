/* SPDX-License-Identifier: MIT */
#pragma once

/* Read-only lookup of a model in the hive's catalog (see worker/README.md for
 * the contract): SELECT local_path FROM models WHERE id = ?. */

#include <stddef.h>

/* -ENOENT when the database does not exist or has no such model (err says
 * which), -EBADMSG when it is not a catalog we can read. */
int worker_catalog_lookup(const char *db_path, const char *id, char **ret_path, char *err, size_t errlen);
/* The same lookup, plus where the row says the model runs: its CUDA device,
 * or -1 for the CPU (backend cpu, or a catalog without those columns). */
int worker_catalog_lookup_placement(const char *db_path, const char *id, char **ret_path, int *ret_device, char *err,
                                    size_t errlen);

/* $RBEE_STATE_DIRECTORY/catalog.db, else /var/lib/rbee/catalog.db. */
int worker_catalog_default_path(char **ret);
