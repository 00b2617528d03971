/* gate_internal.h: what holds a run's next chunk back (ctl pause, windows, health throttles), for up and down alike. */
#ifndef SLUICE_GATE_INTERNAL_H
#define SLUICE_GATE_INTERNAL_H

#include "sluice/engine/run.h"
#include "sluice/services/ctl.h"
#include "sluice/services/metrics.h"
#include "sluice/services/pace.h"
#include "sluice/services/throttle.h"

/* The health throttles are read at most this often (gate_health). */
#define GATE_HEALTH_EVERY_MS 1000

/* What the gate says of the next chunk. */
typedef enum gate_rc {
    GATE_GO = SL_OK,        /* it may go */
    GATE_STOP = SL_STOPPED, /* the run stops (--no-wait outside the windows) */
    GATE_WAIT = 2,          /* not yet: *wait_ms says when to ask again */
} gate_rc;

/* One run's gate. The caller fills job, opts, run and pace, then metrics
 * once the run has its series. */
typedef struct run_gate {
    const sl_job *job;       /* its name, windows and health limits */
    const sl_run_opts *opts; /* --no-wait, the replicas */
    sl_run *run;             /* the journal: holds, throttles, windows */
    sl_pace *pace;           /* the limits in force (`ctl set` changes them) */
    sl_metrics_job *metrics; /* NULL: holds are not counted yet */
    sl_throttle health;      /* what the health checks read, and the replicas' connections */
    int has_health;
    int quiet;        /* gate_prepare does not log how it measures the replica lag */
    int paused;       /* by `ctl pause` */
    int pause_saved;  /* what sluice_jobs.paused says: the pause outlives the run (gate_save_pause) */
    int pause_warned; /* saving it failed, and said so */
    int window_announced;
    int64_t last_health_ms;
    int64_t health_since; /* mono ms since a health limit holds chunks back, 0 if none */
    char health_first[512];
} run_gate;

/* After a job file's own query failed: it may have tried to write. */
extern const char gate_readonly_hint[];

/* The health checks' state for the job's table, before anything changes:
 * with max-replica-lag, whether the lag can be measured; a throttle-query
 * that fails now. 0, SL_EREFUSED (exit 2), -1 (err set). */
int gate_prepare(run_gate *g, sl_session *sess, const char *table, sl_err *err) SL_MUSTCHECK;
void gate_close(run_gate *g);
/* A job paused when its run begins (row.paused): the run holds until
 * `ctl resume`, saying so (with --no-wait it says it stops, and
 * gate_stops_at_start stops it before the run begins). */
void gate_paused_before(run_gate *g, const char *paused);
/* With --no-wait, before the run begins: 1 when it would stop at its first
 * chunk (paused, or outside its windows), saying so, so that it stops with
 * the job's state as it was; 0 otherwise. */
int gate_stops_at_start(run_gate *g, const char *paused);
/* Record a ctl pause or resume in sluice_jobs.paused when it is not there
 * yet, on sess (a connection with no chunk in flight): a pause outlives the
 * runner (a new container resumes the job paused). Warns once if it cannot. */
void gate_save_pause(run_gate *g, sl_session *sess);
/* ctl pause, then the windows. Never waits. */
int gate_hold_back(run_gate *g, int64_t *wait_ms) SL_MUSTCHECK;
/* The health throttles, read on sess (a connection with no chunk in flight)
 * at most once a second. Only a throttle query waits. */
int gate_health(run_gate *g, sl_session *sess, const char *table, int64_t *wait_ms) SL_MUSTCHECK;
/* 1 when nothing would hold the next chunk back now, by what the gate knows
 * without asking the database: not paused (and the pause or resume saved),
 * inside the windows, no health limit holding and the health check not due
 * (it was read less than a second ago), no max-rate. Changes nothing. */
int gate_quiet(const run_gate *g);
/* max-rate, once nothing else holds the chunk back: GATE_GO, and any hold
 * ends; or GATE_WAIT, a max-rate hold, with *wait_ms until its turn. The
 * caller counts the rows it then sends (sl_pace_rate_sent). */
int gate_rate(run_gate *g, int64_t *wait_ms) SL_MUSTCHECK;
/* What holds the job's chunks back from now on (SL_HOLD_NONE: nothing):
 * counted for the metrics by reason, and (but for max-rate's short waits)
 * recorded in the journal as hold_start / hold_end events for `report`.
 * detail says more for the journal ("replica lag 12s > ..."). */
void gate_hold(run_gate *g, sl_hold hold, const char *detail);

/* What `ctl` changes the same way in up and down: pause and resume, and
 * `set` of pause, max-rate, retries and the timeouts (job is the run's own
 * copy of the job file). 0 done, with msg saying what (logged and journaled
 * by gate_ctl_done); 1 done and the timeouts changed (render them again);
 * -1 a setting the caller handles itself. */
int gate_ctl(run_gate *g, sl_job *job, const sl_ctl_req *req, char *msg, size_t size);
/* Log and journal what a ctl request did, and answer it. */
void gate_ctl_done(run_gate *g, const char *msg, sl_buf *out);
/* The health lines of `ctl status`. */
void gate_ctl_status(const run_gate *g, sl_buf *out);

#endif
