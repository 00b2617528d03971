/* up_gate.c: what holds an `up` run's next chunk back (ctl pause, windows, health) and what paces it. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/services/progress.h"
#include "sluice/services/throttle.h"
#include "up_internal.h"

/* Outside every window: 2 with *wait_ms until the next one opens (or 1,
 * stop, with --no-wait); 0 inside one. */
static int check_window(up_run *r, int64_t *wait_ms)
{
    int64_t until = 0;
    if (sl_window_check(r->job->windows, r->job->nwindows, time(NULL), &until)) {
        if (r->window_announced) {
            sl_log_event(SL_LOG_INFO, "window", json_pack("{sb}", "open", 1), "%s: window open; going on",
                         r->job->name);
            sl_progress_note(NULL);
            r->window_announced = 0;
        }
        return UP_GATE_GO;
    }
    char at[16];
    sl_window_format_at(time(NULL), until, at);
    if (r->opts->no_wait) {
        sl_log_event(SL_LOG_INFO, "window", json_pack("{sbsssb}", "open", 0, "next", at, "stopping", 1),
                     "%s: outside its windows (next opens at %s); stopping (--no-wait)", r->job->name, at);
        return UP_GATE_STOP;
    }
    if (!r->window_announced) {
        sl_log_event(SL_LOG_INFO, "window", json_pack("{sbss}", "open", 0, "until", at),
                     "%s: outside its windows; waiting until %s", r->job->name, at);
        sl_progress_note("waiting for the window at %s", at);
        sl_run_event(&r->run, "window", "outside the windows; waiting");
        r->window_announced = 1;
    }
    *wait_ms = until < 30000 ? until + 50 : 30000;
    return UP_GATE_WAIT;
}

/* Health throttles, checked at most once a second: 2 with *wait_ms while a
 * limit is exceeded, else 0. */
static int check_health(up_run *r, int64_t *wait_ms)
{
    int64_t now = sl_mono_ms();
    if (now - r->last_health_ms < 1000) {
        *wait_ms = 1000 - (now - r->last_health_ms);
        return r->health_since ? 2 : 0;
    }
    r->last_health_ms = now;
    char reason[512];
    int rc =
        sl_throttle_check(&r->health, up_idle_session(r), r->job, &r->pace, r->info.ks.table, reason, sizeof reason);
    if (r->health.lag_measured && r->pace.max_replica_lag_ms > 0)
        sl_metrics_replica_lag(r->metrics, r->health.lag_ms); /* shown as sluice_replica_lag_seconds */
    if (rc == 0) {
        if (r->health_since) {
            char msg[700];
            snprintf(msg, sizeof msg, "resumed after %" PRId64 "s paused (%s)", (sl_mono_ms() - r->health_since) / 1000,
                     r->health_first);
            sl_log_event(SL_LOG_INFO, "resume_after_throttle",
                         json_pack("{sIssso}", "seconds", (json_int_t)((sl_mono_ms() - r->health_since) / 1000),
                                   "reason", sl_hold_name(sl_hold_of_reason(r->health_first)), "detail",
                                   sl_json_str(r->health_first)),
                         "%s: %s", r->job->name, msg);
            sl_progress_note(NULL);
            sl_run_event(&r->run, "throttle", msg);
            r->health_since = 0;
        }
        return UP_GATE_GO;
    }
    if (rc < 0)
        sl_warn("%s: %s", r->job->name, reason); /* e.g. a broken throttle-query: waiting is the safe side */
    if (!r->health_since) {
        r->health_since = sl_mono_ms();
        snprintf(r->health_first, sizeof r->health_first, "%s", reason);
        sl_log_event(
            SL_LOG_WARN, "throttle",
            json_pack("{ssso}", "reason", sl_hold_name(sl_hold_of_reason(reason)), "detail", sl_json_str(reason)),
            "%s: pausing: %s", r->job->name, reason);
        sl_progress_note("paused: %s", reason);
        sl_run_event(&r->run, "throttle", reason);
    }
    *wait_ms = 1000;
    return UP_GATE_WAIT;
}

int up_gate(up_run *r, int64_t *wait_ms)
{
    if (sl_session_stopping(r->sess))
        return UP_GATE_STOP;
    if (r->paused) {
        up_hold(r, SL_HOLD_CTL_PAUSE, "paused by sluice ctl");
        *wait_ms = 200;
        return UP_GATE_WAIT;
    }
    int rc = check_window(r, wait_ms);
    if (rc == UP_GATE_WAIT)
        up_hold(r, SL_HOLD_WINDOW, "outside the job's windows");
    if (rc != 0)
        return rc;
    rc = sl_session_connected(r->sess) ? 0 : up_reconnect(r, r->sess);
    if (rc < 0 && !r->failed) { /* gave up: the job failed (exit 1), it was not stopped */
        r->failed = 1;
        r->fail_err = r->err;
    }
    if (rc != 0)
        return UP_GATE_STOP;
    rc = check_health(r, wait_ms);
    up_hold(r, rc == UP_GATE_WAIT ? sl_hold_of_reason(r->health_first) : SL_HOLD_NONE, r->health_first);
    return rc;
}

void up_pace_after(up_run *r, int64_t rows, int64_t chunk_ms)
{
    int64_t before = r->pace.batch;
    if (sl_pace_adjust(&r->pace, rows, chunk_ms) != before) {
        sl_metrics_batch(r->metrics, r->pace.batch);
        sl_err lerr;
        if (sl_ckpt_set_batch(r->ckpt, r->pace.batch, &lerr) != 0)
            sl_warn("%s", lerr.msg);
    }
}

/* Rows per second committed by this run (of this target: in a fleet the
 * progress line's figure is the calling target's). */
static double run_rate(const up_run *r)
{
    int64_t elapsed = sl_mono_ms() - r->run_start;
    return elapsed > 0 && r->run_start > 0 ? (double)r->run_rows * 1000.0 / (double)elapsed : 0;
}

/* `sluice ctl`, answered on the loop even mid-chunk: never waits; values
 * apply from the next chunk. */
int up_on_ctl(const sl_ctl_req *req, sl_buf *out, void *arg)
{
    up_run *r = arg;
    char msg[256];
    if (req->cmd == SL_CTL_STATUS) {
        sl_buf_printf(out,
                      "job %s\nstate %s\nrows %" PRId64 "\nchunks %" PRId64 "\nbatch %" PRId64 "\npause %" PRId64
                      "ms\nmax-rate %" PRId64 "\nchunk-time %" PRId64 "ms\nrate %.0f rows/s\nworkers %" PRId64
                      "\nranges %zu\n",
                      r->job->name, r->paused ? "paused" : "running", r->rows_done, r->chunks_done, r->pace.batch,
                      r->pace.pause_ms, r->pace.max_rate, r->pace.chunk_time_ms, run_rate(r), r->nworkers, r->nranges);
        sl_throttle_status(&r->health, &r->pace, out);
        return 0;
    }
    if (req->cmd == SL_CTL_PAUSE || req->cmd == SL_CTL_RESUME) {
        r->paused = req->cmd == SL_CTL_PAUSE;
        snprintf(msg, sizeof msg, "%s by sluice ctl", r->paused ? "paused" : "resumed");
        sl_progress_note(r->paused ? "paused by sluice ctl" : NULL);
    } else {
        switch (req->setting) {
        case SL_DIR_BATCH: r->pace.batch = req->number; break;
        case SL_DIR_PAUSE: r->pace.pause_ms = req->number; break;
        case SL_DIR_MAX_RATE: r->pace.max_rate = req->number; break;
        case SL_DIR_CHUNK_TIME: r->pace.chunk_time_ms = req->number; break;
        case SL_DIR_LOCK_TIMEOUT:
            r->job->lock_timeout_ms = req->number;
            up_render_timeouts(r);
            break;
        case SL_DIR_STATEMENT_TIMEOUT:
            r->job->statement_timeout_ms = req->number;
            up_render_timeouts(r);
            break;
        case SL_DIR_RETRIES: r->job->retries = req->number; break;
        default: assert(0 && "BUG: sl_ctl_parse_set let through a setting"); return -1;
        }
        snprintf(msg, sizeof msg, "set %s=%s by sluice ctl", req->name, req->value);
    }
    sl_log_event(SL_LOG_INFO, "ctl", json_pack("{ss}", "request", msg), "%s: %s", r->job->name, msg);
    sl_run_event(&r->run, "ctl", msg);
    sl_err lerr;
    if (req->cmd == SL_CTL_SET && req->setting == SL_DIR_BATCH && sl_ckpt_set_batch(r->ckpt, r->pace.batch, &lerr) != 0)
        sl_warn("%s", lerr.msg);
    sl_buf_printf(out, "%s\n", msg);
    return 0;
}
