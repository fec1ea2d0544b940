/* SPDX-License-Identifier: MIT */
#pragma once

/* Small helpers for the hive: model ids, systemd unit-name escaping, keep-alive
 * values, clocks and file helpers. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HIVE_ID_MAX 128

/* 1-128 chars of [A-Za-z0-9._:-], starting with a letter or a digit. */
bool hive_id_is_valid(const char *id);

#define HIVE_JOB_ID_MAX 64

/* A client-supplied job id: 1-64 chars of [A-Za-z0-9._:-] (what workers accept). */
bool hive_job_id_is_valid(const char *id);

/* Escape like systemd-escape (for the instance of rbee-worker@.service):
 * '/' -> '-', and anything outside [A-Za-z0-9:_.] (or a leading '.') -> \xNN. */
int hive_unit_escape(const char *s, char **ret);
/* "rbee-worker@<escaped>.service" */
int hive_unit_name(const char *id, char **ret);
/* The reverse of hive_unit_escape(). -EINVAL on bad escapes. */
int hive_unit_unescape(const char *s, char **ret);

/* A keep-alive in seconds: -1 = never, 0 = at once, else seconds.
 * Accepts a JSON number or a string ("30s", "5m", "1h", "-1", "0"). */
int hive_keep_alive_from_json(struct json_object *v, int64_t *ret);
int hive_keep_alive_from_string(const char *s, int64_t *ret);

uint64_t hive_now_usec(void);           /* CLOCK_MONOTONIC */
int64_t hive_wall_sec(void);            /* CLOCK_REALTIME seconds */

/* mkdir -p with mode for the last components. */
int hive_mkdir_p(const char *path, unsigned mode);

/* Random hex id with a prefix ("j-1a2b..."), n random bytes. */
int hive_random_id(const char *prefix, size_t n, char **ret);

/* Resident memory of a process in bytes (from /proc/PID/statm); 0 when unknown. */
uint64_t hive_pid_rss(int pid);
/* Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat). */
int hive_pid_starttime(int pid, uint64_t *ret);
