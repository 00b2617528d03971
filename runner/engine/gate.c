/* gate.c: what holds a run's next chunk back (ctl pause, windows, health throttles), and its accounting, for up and
 * down. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/services/progress.h"

#include "gate_internal.h"

const char gate_readonly_hint[] = "hint: requires, verify and throttle-query only look: they run read-only";

/* A throttle-query that fails now (wrong SQL, a write, a missing table)
 * would hold the job between chunks for good, warning each time: refused
 * before the first chunk instead. One that fails later, for a moment, holds
 * the job until it answers again. */
static int check_throttle_query(const sl_job *job, sl_session *sess, sl_err *err)
{
    if (!job->throttle_query)
        return 0;
    sl_answer ans;
    sl_query q = {job->throttle_query, 0, NULL, 0};
    if (sl_session_exec_readonly(sess, &q, 1, &ans) != 0) {
        sl_err_set(err, "%s: lost the connection while trying the throttle-query", job->name);
        return -1;
    }
    int rc = 0;
    if (!ans.ok && !sl_answer_transient(ans.sqlstate)) {
        sl_err_set(err, "%s:%d: throttle-query failed: %s", job->path, job->line[SL_DIR_THROTTLE_QUERY], ans.error);
        sl_err_append(err, "%s", gate_readonly_hint);
        rc = SL_EREFUSED;
    }
    sl_answer_free(&ans);
    return rc;
}

int gate_prepare(run_gate *g, sl_session *sess, const char *table, sl_err *err)
{
    int rc = check_throttle_query(g->job, sess, err);
    if (rc != 0)
        return rc;
    if (sl_throttle_init(&g->health, sess->loop, g->opts->replicas, g->opts->nreplicas, g->opts->allow_unmeasured_lag,
                         sess->connect_timeout_ms, err) != 0)
        return SL_EREFUSED;
    g->has_health = 1;
    rc = sl_throttle_prepare(&g->health, sess, g->job, table, err);
    if (rc == 0 && g->job->max_replica_lag_ms && sess->dialect == SL_DIALECT_PG && !g->quiet)
        sl_info("%s: replica lag %s", g->job->name, g->health.lag_how);
    return rc;
}

void gate_close(run_gate *g)
{
    if (g->has_health)
        sl_throttle_close(&g->health);
    g->has_health = 0;
}

/* Outside every window: GATE_WAIT with *wait_ms until the next one opens
 * (or GATE_STOP with --no-wait); GATE_GO inside one. */
static int check_window(run_gate *g, int64_t *wait_ms)
{
    int64_t until = 0;
    const char *name = g->job->name;
    if (sl_window_check(g->job->windows, g->job->nwindows, time(NULL), &until)) {
        if (g->window_announced) {
            sl_log_event(SL_LOG_INFO, "window", json_pack("{sb}", "open", 1), "%s: window open; going on", name);
            sl_progress_note(NULL);
            g->window_announced = 0;
        }
        return GATE_GO;
    }
    char at[16];
    sl_window_format_at(time(NULL), until, at);
    if (g->opts->no_wait) {
        sl_log_event(SL_LOG_INFO, "window", json_pack("{sbsssb}", "open", 0, "next", at, "stopping", 1),
                     "%s: outside its windows (next opens at %s); stopping (--no-wait)", name, at);
        return GATE_STOP;
    }
    if (!g->window_announced) {
        sl_log_event(SL_LOG_INFO, "window", json_pack("{sbss}", "open", 0, "until", at),
                     "%s: outside its windows; waiting until %s", name, at);
        sl_progress_note("waiting for the window at %s", at);
        sl_run_event(g->run, "window", "outside the windows; waiting");
        g->window_announced = 1;
    }
    *wait_ms = until < 30000 ? until + 50 : 30000;
    return GATE_WAIT;
}

void gate_paused_before(run_gate *g, const char *paused)
{
    g->paused = g->pause_saved = 1;
    sl_log_event(SL_LOG_INFO, "paused", json_pack("{ss}", "paused", paused), "%s: paused %s; %s `sluice ctl %s resume`",
                 g->job->name, paused, g->opts->no_wait ? "stopping (--no-wait) until" : "waiting for", g->job->name);
    if (!g->opts->no_wait)
        sl_progress_note("paused by sluice ctl");
}

int gate_stops_at_start(run_gate *g, const char *paused)
{
    if (!g->opts->no_wait)
        return 0;
    if (paused) {
        gate_paused_before(g, paused);
        return 1;
    }
    int64_t wait_ms = 0;
    return check_window(g, &wait_ms) == GATE_STOP;
}

void gate_save_pause(run_gate *g, sl_session *sess)
{
    if (g->paused == g->pause_saved || !sl_session_connected(sess))
        return;
    char *text = g->paused ? sl_ctl_paused_now() : NULL;
    const char *params[] = {g->job->name, text};
    sl_answer ans;
    int rc = sl_session_exec1(sess, "UPDATE " SL_JOBS_TABLE " SET paused = $2 WHERE job = $1", 2, params, &ans);
    if ((rc != 0 || !ans.ok) && !g->pause_warned) {
        sl_warn("%s: could not record the %s in %s (a later run would not know of it): %s", g->job->name,
                g->paused ? "pause" : "resume", SL_JOBS_TABLE, ans.error ? ans.error : "not connected");
        g->pause_warned = 1;
    }
    g->pause_saved = g->paused; /* tried once: the run goes on paused or not, as asked, either way */
    sl_answer_free(&ans);
    free(text);
}

int gate_hold_back(run_gate *g, int64_t *wait_ms)
{
    if (g->paused) {
        gate_hold(g, SL_HOLD_CTL_PAUSE, "paused by sluice ctl");
        *wait_ms = 200;
        return GATE_WAIT;
    }
    int rc = check_window(g, wait_ms);
    if (rc == GATE_WAIT)
        gate_hold(g, SL_HOLD_WINDOW, "outside the job's windows");
    return rc;
}

/* The health throttles' verdict, read now: GATE_GO or GATE_WAIT. */
static int check_health(run_gate *g, sl_session *sess, const char *table, int64_t *wait_ms)
{
    const char *name = g->job->name;
    char reason[512];
    int rc = sl_throttle_check(&g->health, sess, g->job, g->pace, table, reason, sizeof reason);
    if (g->health.lag_measured && g->pace->max_replica_lag_ms > 0 && g->metrics)
        sl_metrics_replica_lag(g->metrics, g->health.lag_ms); /* shown as sluice_replica_lag_seconds */
    if (rc == 0) {
        if (g->health_since) {
            int64_t secs = (sl_mono_ms() - g->health_since) / 1000;
            char msg[700];
            snprintf(msg, sizeof msg, "resumed after %" PRId64 "s paused (%s)", secs, g->health_first);
            sl_log_event(SL_LOG_INFO, "resume_after_throttle",
                         json_pack("{sIssso}", "seconds", (json_int_t)secs, "reason",
                                   sl_hold_name(sl_hold_of_reason(g->health_first)), "detail",
                                   sl_json_str(g->health_first)),
                         "%s: %s", name, msg);
            sl_progress_note(NULL);
            sl_run_event(g->run, "throttle", msg);
            g->health_since = 0;
        }
        return GATE_GO;
    }
    if (rc < 0)
        sl_warn("%s: %s", name, reason); /* e.g. a broken throttle-query: waiting is the safe side */
    if (!g->health_since) {
        g->health_since = sl_mono_ms();
        snprintf(g->health_first, sizeof g->health_first, "%s", reason);
        sl_log_event(
            SL_LOG_WARN, "throttle",
            json_pack("{ssso}", "reason", sl_hold_name(sl_hold_of_reason(reason)), "detail", sl_json_str(reason)),
            "%s: pausing: %s", name, reason);
        sl_progress_note("paused: %s", reason);
        sl_run_event(g->run, "throttle", reason);
    }
    *wait_ms = GATE_HEALTH_EVERY_MS;
    return GATE_WAIT;
}

int gate_health(run_gate *g, sl_session *sess, const char *table, int64_t *wait_ms)
{
    int64_t now = sl_mono_ms();
    int rc;
    if (now - g->last_health_ms < GATE_HEALTH_EVERY_MS) {
        *wait_ms = GATE_HEALTH_EVERY_MS - (now - g->last_health_ms);
        rc = g->health_since ? GATE_WAIT : GATE_GO;
    } else {
        g->last_health_ms = now;
        rc = check_health(g, sess, table, wait_ms);
    }
    gate_hold(g, rc == GATE_WAIT ? sl_hold_of_reason(g->health_first) : SL_HOLD_NONE, g->health_first);
    return rc;
}

/* max-rate waits between most chunks of a capped job, a few ms each:
 * counted, but too many to journal one by one. */
static int journaled(sl_hold hold)
{
    return hold != SL_HOLD_NONE && hold != SL_HOLD_MAX_RATE;
}

static void journal(run_gate *g, const char *kind, sl_hold hold, int64_t ms, const char *detail)
{
    json_t *data = json_pack("{ss}", "reason", sl_hold_name(hold));
    if (ms >= 0)
        json_object_set_new(data, "ms", json_integer(ms));
    char *text = json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(data);
    sl_run_event_data(g->run, kind, detail ? detail : sl_hold_name(hold), text);
    free(text);
}

void gate_hold(run_gate *g, sl_hold hold, const char *detail)
{
    if (!g->metrics || sl_metrics_current_hold(g->metrics) == hold)
        return;
    int64_t ms = 0;
    sl_hold ended = sl_metrics_hold(g->metrics, hold, sl_mono_ms(), &ms);
    if (journaled(ended))
        journal(g, "hold_end", ended, ms, NULL);
    if (journaled(hold))
        journal(g, "hold_start", hold, -1, detail);
}

int gate_quiet(const run_gate *g)
{
    int64_t until = 0;
    return !g->paused && g->paused == g->pause_saved && !g->health_since && g->pace->max_rate <= 0 &&
           sl_mono_ms() - g->last_health_ms < GATE_HEALTH_EVERY_MS &&
           sl_window_check(g->job->windows, g->job->nwindows, time(NULL), &until);
}

int gate_rate(run_gate *g, int64_t *wait_ms)
{
    int64_t due = sl_pace_rate_due(g->pace, sl_mono_ms());
    if (due > 0) {
        gate_hold(g, SL_HOLD_MAX_RATE, NULL);
        *wait_ms = due;
        return GATE_WAIT;
    }
    gate_hold(g, SL_HOLD_NONE, NULL);
    return GATE_GO;
}

int gate_ctl(run_gate *g, sl_job *job, const sl_ctl_req *req, char *msg, size_t size)
{
    if (req->cmd == SL_CTL_PAUSE || req->cmd == SL_CTL_RESUME) {
        g->paused = req->cmd == SL_CTL_PAUSE;
        snprintf(msg, size, "%s by sluice ctl", g->paused ? "paused" : "resumed");
        sl_progress_note(g->paused ? "paused by sluice ctl" : NULL);
        return 0;
    }
    int timeouts = 0;
    switch (req->setting) {
    case SL_DIR_PAUSE: g->pace->pause_ms = req->number; break;
    case SL_DIR_MAX_RATE:
        g->pace->max_rate = req->number;
        sl_pace_rate_begin(g->pace, sl_mono_ms()); /* the new rate from now, not over the run so far */
        break;
    case SL_DIR_RETRIES: job->retries = req->number; break;
    case SL_DIR_LOCK_TIMEOUT:
        job->lock_timeout_ms = req->number;
        timeouts = 1;
        break;
    case SL_DIR_STATEMENT_TIMEOUT:
        job->statement_timeout_ms = req->number;
        timeouts = 1;
        break;
    default: return -1;
    }
    snprintf(msg, size, "set %s=%s by sluice ctl", req->name, req->value);
    return timeouts;
}

void gate_ctl_done(run_gate *g, const char *msg, sl_buf *out)
{
    sl_log_event(SL_LOG_INFO, "ctl", json_pack("{ss}", "request", msg), "%s: %s", g->job->name, msg);
    sl_run_event(g->run, "ctl", msg);
    sl_buf_printf(out, "%s\n", msg);
}

void gate_ctl_status(const run_gate *g, sl_buf *out)
{
    sl_throttle_status(&g->health, g->pace, out);
}
