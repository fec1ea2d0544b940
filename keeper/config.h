/* SPDX-License-Identifier: MIT */
#pragma once

/* The set of hives the CLI knows, in one small file:
 *
 *   # rbee hives (rbee hive add/remove edit this file)
 *   hive local http://127.0.0.1:7835
 *   hive gpu1 http://10.0.0.5:7835 api-key-file=/home/me/.config/rbee/gpu1.key
 *   default gpu1
 *
 * $RBEE_CONFIG names the file, else $XDG_CONFIG_HOME/rbee/hives, else
 * ~/.config/rbee/hives. A missing file means one hive, "local", at
 * http://127.0.0.1:7835, which is also the default. */

#include <stdbool.h>
#include <stddef.h>

#define KEEPER_LOCAL_HIVE "local"
#define KEEPER_LOCAL_URL "http://127.0.0.1:7835"
#define KEEPER_HIVES_MAX 256

struct keeper_hive_entry {
        char *name;
        char *url;
        char *api_key_file;             /* NULL when none */
};

struct keeper_config {
        char *path;
        struct keeper_hive_entry *hives;
        size_t n_hives;
        char *default_hive;             /* NULL: "local" */
        bool exists;                    /* the file was there */
};

/* The file's path (allocated). -ENOENT when neither RBEE_CONFIG nor HOME
 * nor XDG_CONFIG_HOME is set. */
int keeper_config_path(char **ret);

/* Load path (a missing file is an empty config). Errors: -EBADMSG with the
 * line in err, -E2BIG, -errno from reading. */
int keeper_config_load(const char *path, struct keeper_config *ret, char *err, size_t errlen);
void keeper_config_done(struct keeper_config *c);

/* Write atomically (temporary file + rename), creating the directory. */
int keeper_config_save(const struct keeper_config *c, char *err, size_t errlen);

const struct keeper_hive_entry *keeper_config_find(const struct keeper_config *c, const char *name);
/* Add or replace. Copies. */
int keeper_config_set(struct keeper_config *c, const char *name, const char *url, const char *api_key_file);
/* -ENOENT when absent. Clears the default when it named this hive. */
int keeper_config_remove(struct keeper_config *c, const char *name);

/* Hive names: 1-64 of [A-Za-z0-9_.-], starting with a letter or digit. */
bool keeper_hive_name_valid(const char *s);
/* http:// or https:// with a host; no spaces. */
bool keeper_hive_url_valid(const char *s);
