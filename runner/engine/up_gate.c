/* up_gate.c: what holds an `up` run's next chunk back (gate.c, and the run's connection) and what paces it; `ctl`. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/services/progress.h"
#include "sluice/services/throttle.h"
#include "up_internal.h"

int up_gate(up_run *r, int64_t *wait_ms)
{
    if (sl_session_stopping(r->sess))
        return UP_GATE_STOP;
    gate_save_pause(&r->gate, up_idle_session(r));
    int rc = gate_hold_back(&r->gate, wait_ms);
    if (rc != GATE_GO)
        return rc;
    rc = sl_session_connected(r->sess) ? 0 : up_reconnect(r, r->sess);
    if (rc < 0 && !r->failed) { /* gave up: the job failed (exit 1), it was not stopped */
        r->failed = 1;
        r->fail_err = r->err;
    }
    if (rc != 0)
        return UP_GATE_STOP;
    return gate_health(&r->gate, up_idle_session(r), r->info.ks.table, wait_ms);
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

/* `sluice ctl`, answered on the loop even mid-chunk: never waits; values
 * apply from the next chunk. */
int up_on_ctl(const sl_ctl_req *req, sl_buf *out, void *arg)
{
    up_run *r = arg;
    char msg[256];
    if (req->cmd == SL_CTL_STATUS) {
        sl_buf_printf(out,
                      "job %s\nstate %s\nrows %" PRId64 "\nchunks %" PRId64 "\nbatch %" PRId64 "\npause %" PRId64
                      "ms\nmax-rate %" PRId64 "\nchunk-time %" PRId64 "ms\n",
                      r->job->name, r->gate.paused ? "paused" : "running", r->rows_done, r->chunks_done, r->pace.batch,
                      r->pace.pause_ms, r->pace.max_rate, r->pace.chunk_time_ms);
        sl_metrics_status(r->metrics, sl_mono_ms(), out);
        sl_buf_printf(out, "workers %" PRId64 "\nranges %zu\n", r->nworkers, r->nranges);
        gate_ctl_status(&r->gate, out);
        return 0;
    }
    up_follow_withdraw_all(r); /* a queued chunk would not see what changes */
    int rc = gate_ctl(&r->gate, r->job, req, msg, sizeof msg);
    if (rc == 1)
        up_render_timeouts(r);
    if (rc < 0) {
        switch (req->setting) {
        case SL_DIR_BATCH: r->pace.batch = req->number; break;
        case SL_DIR_CHUNK_TIME: r->pace.chunk_time_ms = req->number; break;
        default: assert(0 && "BUG: sl_ctl_parse_set let through a setting"); return -1;
        }
        snprintf(msg, sizeof msg, "set %s=%s by sluice ctl", req->name, req->value);
    }
    sl_err lerr;
    if (req->cmd == SL_CTL_SET && req->setting == SL_DIR_BATCH && sl_ckpt_set_batch(r->ckpt, r->pace.batch, &lerr) != 0)
        sl_warn("%s", lerr.msg);
    gate_ctl_done(&r->gate, msg, out);
    return 0;
}
