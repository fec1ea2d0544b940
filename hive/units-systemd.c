/* SPDX-License-Identifier: MIT */
/* Workers as systemd units (rbee-worker@<escaped-id>.service, listening on
 * /run/rbee/workers/<id>.sock: rbee-worker@.socket uses %I) over the
 * system bus. The units' state is the truth: start subscribes to JobRemoved
 * before StartUnit and waits for its job with a deadline while following
 * ActiveState/SubState/StatusText; refresh lists rbee-worker@* and adopts
 * what runs, reports and reaps what failed (ResetFailedUnit), and drops
 * entries whose unit is gone. Each call opens its own bus connection, so any
 * thread may call in (sd-bus objects are not thread-safe). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>

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
        return 0;
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
        pthread_cond_broadcast(&h->changed);
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
        int r;

        r = sd_bus_open_system(&bus);
        if (r < 0)
                return r;
        /* Only failed units need it; for others it is a harmless error. */
        (void) sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "ResetFailedUnit", NULL, NULL, "s", w->unit);
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
                        w->backend = strdup("cpu");
                        log_info("Adopted unit %s (%s/%s)", name, active, sub);
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
                        pthread_cond_broadcast(&h->changed);
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
