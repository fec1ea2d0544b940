/* SPDX-License-Identifier: MIT */
#pragma once

/* The model catalog: one SQLite database (WAL) in the state directory that
 * the hive writes and the workers read (worker/catalog.c looks up
 * models.local_path by id). The schema is versioned with PRAGMA user_version
 * and migrated forward at open. A database that SQLite cannot read, or one
 * that fails quick_check, is moved aside and a fresh one is created: it is
 * reported, never silently used. Thread-safe (serialized connection). */

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hive_model {
        char *id;
        char *source;           /* hf:org/repo:file, file:///path */
        char *local_path;
        char *name;             /* general.name, or NULL */
        char *sha256;           /* 64 hex digits, or NULL */
        char *architecture;
        char *quantization;
        char *backend;          /* default backend ("cpu") */
        uint64_t size;
        uint64_t parameters;
        uint32_t context_length;
        int device;
        bool managed;           /* the hive downloaded the file and owns it */
        int64_t created_at;
};

struct hive_catalog;

#define HIVE_CATALOG_SCHEMA_VERSION 2

/* Open (creating it and its directory's file as needed) and migrate.
 * *ret_recovered_from is set to the path the corrupt database was moved to,
 * or NULL. Errors: -EPROTONOSUPPORT for a database from a newer hive, -EIO. */
int hive_catalog_open(const char *path, struct hive_catalog **ret, char **ret_recovered_from, char *err,
                      size_t errlen);
struct hive_catalog *hive_catalog_free(struct hive_catalog *c);
const char *hive_catalog_path(const struct hive_catalog *c);

/* Errors of every call below: -EBUSY when another process holds the
 * database's write lock beyond the busy timeout (5 s), -EBADMSG when it is
 * corrupt, -ENOSPC when its disk is full, -EIO otherwise. */

/* -EEXIST when the id is taken. */
int hive_catalog_add(struct hive_catalog *c, const struct hive_model *m);
/* -ENOENT when absent. */
int hive_catalog_get(struct hive_catalog *c, const char *id, struct hive_model **ret);
int hive_catalog_list(struct hive_catalog *c, struct hive_model ***ret, size_t *ret_n);
int hive_catalog_remove(struct hive_catalog *c, const char *id);
int hive_catalog_count(struct hive_catalog *c, size_t *ret);
int hive_catalog_set_sha256(struct hive_catalog *c, const char *id, const char *sha256);

/* Downloads in flight (schema 2): recorded when a download starts, removed
 * when it ends either way, so that a hive killed mid-download finds them at
 * its next start. The list ends with an entry whose id is NULL; the count
 * is returned. */
struct hive_catalog_download {
        char *id;               /* the model id */
        char *source;           /* as the client gave it */
        char *job_id;           /* the job's id, kept by the resumed job; may be NULL */
};
int hive_catalog_download_begin(struct hive_catalog *c, const char *id, const char *source, const char *job_id);
int hive_catalog_download_end(struct hive_catalog *c, const char *id);        /* -ENOENT when absent */
int hive_catalog_download_list(struct hive_catalog *c, struct hive_catalog_download **ret);
void hive_catalog_download_listp(struct hive_catalog_download **l);

struct hive_model *hive_model_free(struct hive_model *m);
void hive_model_listp(struct hive_model ***l);          /* NULL-terminated list */
int hive_model_copy(const struct hive_model *m, struct hive_model **ret);
/* The API's model object (OpenAI fields plus ours); loaded is filled by the caller. */
struct json_object *hive_model_to_json(const struct hive_model *m, bool loaded);

/* Read the GGUF header of path and fill architecture, quantization,
 * context_length, parameters, name and size in m (other fields untouched).
 * -EBADMSG etc. with a message in err. */
int hive_model_inspect(const char *path, struct hive_model *m, char *err, size_t errlen);

static inline void hive_model_freep(struct hive_model **m) {
        hive_model_free(*m);
}
static inline void hive_catalog_freep(struct hive_catalog **c) {
        hive_catalog_free(*c);
}
