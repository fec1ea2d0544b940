/* SPDX-License-Identifier: MIT */
/* Workers as systemd units (rbee-worker@<escaped-id>.service, listening on
 * /run/rbee/workers/<id>.sock: rbee-worker@.socket uses %I) over the
 * system bus. The units' state is the truth: start subscribes to JobRemoved
 * before StartUnit and waits for its job with a deadline while following
 * ActiveState/SubState/StatusText; refresh lists rbee-worker@* and adopts
 * what runs, reports and reaps what failed (ResetFailedUnit), and drops
 * entries whose unit is gone. Each call opens its own bus connection, so any
 * thread may call in (sd-bus objects are not thread-safe).
 *
 * Placement: a worker follows its catalog row (backend cuda, device N) by
 * itself, which covers `systemctl start` by hand. A start on another
 * placement (a request's backend/device) writes <workers_dir>/<id>.env,
 * RBEE_WORKER_ARGS=--device N|cpu, which the rbee-worker-cuda drop-in reads
 * (EnvironmentFile=); it goes when the worker is reaped. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "hive.h"
#include "logging.h"
#include "macros.h"
#include "util.h"

#define SD_DEST "org.freedesktop.systemd1"
#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MANAGER "org.freedesktop.systemd1.Manager"
#define SD_UNIT "org.freedesktop.systemd1.Unit"
#define SD_SERVICE "org.freedesktop.systemd1.Service"


static void bus_error_freep(sd_bus_error *e) {
        sd_bus_error_free(e);
}

static int systemd_init(struct hive *h) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(bus_error_freep) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        if (sd_booted() <= 0)
                return -EOPNOTSUPP;
        r = sd_bus_open_system(&bus);
        if (r < 0)
                return r;
        r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "GetUnitFileState", &e, &reply, "s",
                               "rbee-worker@.service");
        if (r < 0) {
                log_debug("rbee-worker@.service is not installed: %s", e.message ? e.message : strerror(-r));
                return -ENOENT;
        }
        /* The unit's ExecStart= has the worker's options: the hive learns its
         * slots and queue from its /v1/health once it is ready. */
        if (h->opt.worker_parallel > 0 || h->opt.worker_threads > 0)
                log_notice("--worker-parallel and --worker-threads apply to process mode: in systemd mode a drop-in "
                           "for rbee-worker@.service sets the worker's options");
        /* rbee-worker-cuda installs <workerd>-cuda and the drop-in that runs it. */
        hive_backends_find_cuda_worker(&h->backends, h->opt.workerd);
        log_info("CUDA worker: %s", h->backends.cuda_workerd[0] ? h->backends.cuda_workerd
                                                                : h->backends.cuda_worker_reason);
        return 0;
}

static int env_path(struct hive *h, const char *model, char **ret) {
        return asprintf(ret, "%s/%s.env", h->workers_dir, model) < 0 ? -ENOMEM : 0;
}

/* Lock held. The placement of w as the catalog row gives it: cuda N, or cpu. */
static bool placement_is_catalog_locked(struct hive *h, const struct hive_worker *w) {
        _cleanup_(hive_model_freep) struct hive_model *m = NULL;
        const char *backend = w->backend ? w->backend : "cpu";

        if (hive_catalog_get(h->catalog, w->model, &m) < 0)
                return false;
        if (!streq(backend, m->backend ? m->backend : "cpu"))
                return false;
        return !streq(backend, "cuda") || m->device == w->device;
}

/* Lock held: writes <id>.env for a placement other than the catalog row's,
 * removes a stale one otherwise. */
static int write_placement_locked(struct hive *h, const struct hive_worker *w) {
        _cleanup_(freep) char *path = NULL, *tmp = NULL;
        _cleanup_(closep) int fd = -EBADF;
        char line[64];
        int k, r;

        r = env_path(h, w->model, &path);
        if (r < 0)
                return r;
        if (placement_is_catalog_locked(h, w)) {
                if (unlink(path) < 0 && errno != ENOENT)
                        return -errno;
                return 0;
        }
        if (w->backend && streq(w->backend, "cuda"))
                k = snprintf(line, sizeof(line), "RBEE_WORKER_ARGS=--device %d\n", w->device);
        else
                k = snprintf(line, sizeof(line), "RBEE_WORKER_ARGS=--device cpu\n");
        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (write(fd, line, (size_t) k) != k || fsync(fd) < 0 || rename(tmp, path) < 0) {
                r = -errno;
                (void) unlink(tmp);
                return r;
        }
        return 0;
}

/* Lock held: what an adopted unit runs on, from <id>.env, else the catalog row. */
static void read_placement_locked(struct hive *h, struct hive_worker *w) {
        _cleanup_(hive_model_freep) struct hive_model *m = NULL;
        _cleanup_(freep) char *path = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        char line[128];
        int dev;

        free(w->backend);
        w->backend = NULL;
        w->device = 0;
        if (env_path(h, w->model, &path) >= 0 && (f = fopen(path, "re")) && fgets(line, sizeof(line), f)) {
                if (sscanf(line, "RBEE_WORKER_ARGS=--device %d", &dev) == 1 && dev >= 0 && dev <= 1023) {
                        w->backend = strdup("cuda");
                        w->device = dev;
                } else
                        w->backend = strdup("cpu");
                return;
        }
        if (hive_catalog_get(h->catalog, w->model, &m) >= 0 && m->backend && streq(m->backend, "cuda")) {
                w->backend = strdup("cuda");
                w->device = m->device;
        } else
                w->backend = strdup("cpu");
}

static void systemd_done(struct hive *h) {
}

static int unit_path(sd_bus *bus, const char *unit, char **ret) {
        _cleanup_(bus_error_freep) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *p;
        int r;

        /* LoadUnit works for units that are not loaded yet, unlike GetUnit. */
        r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "LoadUnit", &e, &reply, "s", unit);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &p);
        if (r < 0)
                return r;
        *ret = strdup(p);
        return *ret ? 0 : -ENOMEM;
}

struct unit_state {
        char active[32], sub[32], result[64], status[256];
        uint32_t pid;
};

static void get_str(sd_bus *bus, const char *path, const char *iface, const char *prop, char *out, size_t n) {
        _cleanup_(bus_error_freep) sd_bus_error e = SD_BUS_ERROR_NULL;
        char *v = NULL;

        out[0] = 0;
        if (sd_bus_get_property_string(bus, SD_DEST, path, iface, prop, &e, &v) >= 0 && v)
                snprintf(out, n, "%s", v);
        free(v);
}

static void read_state(sd_bus *bus, const char *path, struct unit_state *s) {
        _cleanup_(bus_error_freep) sd_bus_error e = SD_BUS_ERROR_NULL;

        get_str(bus, path, SD_UNIT, "ActiveState", s->active, sizeof(s->active));
        get_str(bus, path, SD_UNIT, "SubState", s->sub, sizeof(s->sub));
        get_str(bus, path, SD_SERVICE, "StatusText", s->status, sizeof(s->status));
        get_str(bus, path, SD_SERVICE, "Result", s->result, sizeof(s->result));
        s->pid = 0;
        (void) sd_bus_get_property_trivial(bus, SD_DEST, path, SD_SERVICE, "MainPID", &e, 'u', &s->pid);
}

/* Lock held. */
static void apply_state(struct hive *h, struct hive_worker *w, const struct unit_state *s) {
        snprintf(w->sub_state, sizeof(w->sub_state), "%s", s->sub[0] ? s->sub : "unknown");
        if (s->status[0])
                snprintf(w->status_text, sizeof(w->status_text), "%s", s->status);
        w->pid = (int) s->pid;
        if (streq(s->active, "active")) {
                if (w->state == HIVE_WORKER_STARTING || w->state == HIVE_WORKER_LOADING) {
                        w->state = HIVE_WORKER_READY;
                        w->ready_usec = hive_now_usec();
                        w->ready_at = hive_wall_sec();
                        w->last_used_usec = w->ready_usec;
                }
        } else if (streq(s->active, "activating")) {
                if (w->state == HIVE_WORKER_STARTING && s->status[0])
                        w->state = HIVE_WORKER_LOADING;
                /* Restarted (watchdog, systemctl restart): not ready until active again. */
                else if (w->state == HIVE_WORKER_READY)
                        w->state = HIVE_WORKER_LOADING;
        } else if (streq(s->active, "failed")) {
                if (w->state != HIVE_WORKER_FAILED) {
                        w->pid = 0;
                        hive_worker_set_failed_locked(h, w, "unit %s failed (result: %s%s%s); see journalctl -u %s",
                                                      w->unit, s->result[0] ? s->result : "unknown",
                                                      s->status[0] ? ", last status: " : "", s->status, w->unit);
                }
        } else if (streq(s->active, "deactivating")) {
                if (w->state != HIVE_WORKER_FAILED)
                        w->state = HIVE_WORKER_STOPPING;
        } else if (streq(s->active, "inactive")) {
                /* STARTING may read inactive before its start job runs; LOADING
                 * was seen activating, so inactive now means it stopped. */
                if (w->state == HIVE_WORKER_STOPPING || w->state == HIVE_WORKER_READY ||
                    w->state == HIVE_WORKER_LOADING)
                        w->state = HIVE_WORKER_GONE;
        }
        hive_changed_locked(h);
}

struct job_wait {
        const char *job;
        bool done;
        char result[32];
};

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct job_wait *jw = userdata;
        const char *path, *unit, *result;
        uint32_t id;

        if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0)
                return 0;
        if (jw->job && streq(path, jw->job)) {
                jw->done = true;
                snprintf(jw->result, sizeof(jw->result), "%s", result);
        }
        return 0;
}

static int systemd_start(struct hive *h, struct hive_worker *w) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_(bus_error_freep) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(freep) char *job = NULL, *upath = NULL;
        struct job_wait jw = {};
        uint64_t deadline = hive_now_usec() + h->opt.start_timeout_usec;
        const char *p;
        int r;

        pthread_mutex_lock(&h->lock);
        r = write_placement_locked(h, w);
        if (r < 0)
                hive_worker_set_failed_locked(h, w, "cannot write the placement of %s to %s: %s", w->unit,
                                              h->workers_dir, strerror(-r));
        pthread_mutex_unlock(&h->lock);
        if (r < 0)
                return r;
        r = sd_bus_open_system(&bus);
        if (r < 0)
                return r;
        /* Subscribe first: the job may finish before StartUnit returns. */
        r = sd_bus_match_signal(bus, &slot, SD_DEST, SD_PATH, SD_MANAGER, "JobRemoved", on_job_removed, &jw);
        if (r < 0)
                return r;
        (void) sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "Subscribe", NULL, NULL, "");
        r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "StartUnit", &e, &reply, "ss", w->unit, "replace");
        if (r < 0) {
                pthread_mutex_lock(&h->lock);
                hive_worker_set_failed_locked(h, w, "StartUnit(%s) failed: %s", w->unit, e.message ? e.message : strerror(-r));
                pthread_mutex_unlock(&h->lock);
                return r;
        }
        r = sd_bus_message_read(reply, "o", &p);
        if (r < 0 || !(job = strdup(p)))
                return r < 0 ? r : -ENOMEM;
        jw.job = job;
        r = unit_path(bus, w->unit, &upath);
        if (r < 0)
                return r;
        while (!jw.done) {
                struct unit_state s;
                uint64_t now = hive_now_usec();

                if (now >= deadline) {
                        pthread_mutex_lock(&h->lock);
                        hive_worker_set_failed_locked(h, w, "the start job of %s did not finish in time; see journalctl -u %s",
                                                      w->unit, w->unit);
                        pthread_mutex_unlock(&h->lock);
                        return -ETIMEDOUT;
                }
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                read_state(bus, upath, &s);
                pthread_mutex_lock(&h->lock);
                apply_state(h, w, &s);
                pthread_mutex_unlock(&h->lock);
                (void) sd_bus_wait(bus, MIN(deadline - now, (uint64_t) 200000));
        }
        struct unit_state s;
        read_state(bus, upath, &s);
        pthread_mutex_lock(&h->lock);
        apply_state(h, w, &s);
        if (!streq(jw.result, "done") && w->state != HIVE_WORKER_FAILED)
                hive_worker_set_failed_locked(h, w, "the start job of %s ended with '%s' (result: %s); see journalctl -u %s",
                                              w->unit, jw.result, s.result[0] ? s.result : "unknown", w->unit);
        pthread_mutex_unlock(&h->lock);
        return streq(jw.result, "done") ? 0 : -EIO;
}

static int systemd_stop(struct hive *h, struct hive_worker *w) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(bus_error_freep) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        pthread_mutex_lock(&h->lock);
        if (w->state != HIVE_WORKER_FAILED)
                w->state = HIVE_WORKER_STOPPING;
        if (!w->stop_usec)
                w->stop_usec = hive_now_usec();
        pthread_mutex_unlock(&h->lock);
        r = sd_bus_open_system(&bus);
        if (r < 0)
                return r;
        r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "StopUnit", &e, NULL, "ss", w->unit, "replace");
        if (r < 0)
                log_warning("StopUnit(%s) failed: %s", w->unit, e.message ? e.message : strerror(-r));
        return r;
}

static int systemd_reap(struct hive *h, struct hive_worker *w) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(freep) char *env = NULL, *path = NULL;
        char active[32];
        int r;

        /* A new worker for the same model may already own its placement file. */
        pthread_mutex_lock(&h->lock);
        if (!hive_worker_find(h, w->model) && env_path(h, w->model, &env) >= 0)
                (void) unlink(env);
        pthread_mutex_unlock(&h->lock);

        r = sd_bus_open_system(&bus);
        if (r < 0)
                return r;
        /* Only a failed unit needs it. A unit that systemd is about to restart
         * (Restart=on-watchdog: "activating/auto-restart") must be left alone:
         * reset-failed would also zero its NRestarts= counter. */
        r = unit_path(bus, w->unit, &path);
        if (r < 0)
                return r;
        get_str(bus, path, SD_UNIT, "ActiveState", active, sizeof(active));
        if (streq(active, "failed"))
                (void) sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "ResetFailedUnit", NULL, NULL, "s",
                                          w->unit);
        return 0;
}

/* The unit's state now, rather than at the next refresh. */
static int systemd_check(struct hive *h, struct hive_worker *w) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(freep) char *upath = NULL;
        struct unit_state s = {};
        int r;

        r = sd_bus_open_system(&bus);
        if (r >= 0)
                r = unit_path(bus, w->unit, &upath);
        if (r < 0)
                return log_warning_errno(r, "Cannot read the state of %s: %m", w->unit);
        read_state(bus, upath, &s);
        pthread_mutex_lock(&h->lock);
        apply_state(h, w, &s);
        pthread_mutex_unlock(&h->lock);
        log_debug("Unit %s is %s/%s", w->unit, s.active, s.sub);
        return streq(s.active, "active") || streq(s.active, "activating") || streq(s.active, "reloading");
}

static int systemd_refresh(struct hive *h, bool initial) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(bus_error_freep) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *name, *desc, *load, *active, *sub, *following, *path, *jtype, *jpath;
        uint32_t jid;
        char **seen = NULL;
        size_t n_seen = 0;
        int r;

        r = sd_bus_open_system(&bus);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, SD_DEST, SD_PATH, SD_MANAGER, "ListUnitsByPatterns");
        if (r >= 0)
                r = sd_bus_message_append_strv(m, NULL);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, (char *[]) { (char *) "rbee-worker@*.service", NULL });
        if (r >= 0)
                r = sd_bus_call(bus, m, 0, &e, &reply);
        if (r < 0)
                return log_debug_errno(r, "ListUnitsByPatterns failed: %s", e.message ? e.message : strerror(-r));
        r = sd_bus_message_enter_container(reply, 'a', "(ssssssouso)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(reply, "(ssssssouso)", &name, &desc, &load, &active, &sub, &following, &path,
                                        &jid, &jtype, &jpath)) > 0) {
                _cleanup_(freep) char *inst = NULL, *model = NULL;
                const char *at = strchr(name, '@'), *dot = strrchr(name, '.');
                struct unit_state s = {};
                struct hive_worker *w;

                if (!at || !dot || dot <= at + 1)
                        continue;
                inst = strndup(at + 1, (size_t) (dot - at - 1));
                if (!inst || hive_unit_unescape(inst, &model) < 0 || !hive_id_is_valid(model))
                        continue;
                char **ns = realloc(seen, (n_seen + 1) * sizeof(*seen));
                if (ns) {
                        seen = ns;
                        seen[n_seen] = strdup(model);
                        if (seen[n_seen])
                                n_seen++;
                }
                read_state(bus, path, &s);
                pthread_mutex_lock(&h->lock);
                w = hive_worker_find(h, model);
                if (!w && (streq(active, "active") || streq(active, "activating") || streq(active, "failed")) &&
                    hive_worker_new_locked(h, model, &w) >= 0) {
                        /* Started by someone else (systemctl), or before this hive: adopt it. */
                        w->adopted = true;
                        w->state = HIVE_WORKER_STARTING;
                        w->start_usec = w->last_used_usec = hive_now_usec();
                        w->started_at = hive_wall_sec();
                        read_placement_locked(h, w);
                        log_info("Adopted unit %s (%s/%s) on %s %d", name, active, sub,
                                 w->backend ? w->backend : "cpu", w->device);
                }
                if (w)
                        apply_state(h, w, &s);
                pthread_mutex_unlock(&h->lock);
        }
        (void) sd_bus_message_exit_container(reply);

        /* Entries whose unit is gone. */
        pthread_mutex_lock(&h->lock);
        for (size_t i = 0; i < h->n_workers; i++) {
                struct hive_worker *w = h->workers[i];
                bool found = false;
                for (size_t k = 0; k < n_seen && !found; k++)
                        found = streq(seen[k], w->model);
                if (!found && w->state != HIVE_WORKER_STARTING && w->state != HIVE_WORKER_LOADING &&
                    w->state != HIVE_WORKER_FAILED) {
                        w->state = HIVE_WORKER_GONE;
                        hive_changed_locked(h);
                }
        }
        pthread_mutex_unlock(&h->lock);
        for (size_t k = 0; k < n_seen; k++)
                free(seen[k]);
        free(seen);
        (void) initial;
        return 0;
}

const struct hive_units_ops hive_units_systemd = {
        .name = "systemd",
        .init = systemd_init,
        .done = systemd_done,
        .start = systemd_start,
        .stop = systemd_stop,
        .refresh = systemd_refresh,
        .reap = systemd_reap,
        .check = systemd_check,
};
