/* metrics.h: what a run measures (rows, chunks, chunk times, holds by reason...), in Prometheus' text format.
 *
 * The engine reports into one registry per process, whether or not anything
 * serves it (it costs a few additions per chunk); `--metrics HOST:PORT`
 * serves sl_metrics_render at /metrics (metrics_http.c). Each job that ran
 * in this process keeps its series, labelled job="NAME", until the process
 * ends: a scrape after job 1 finished and while job 2 runs shows both. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <uv.h>

#include "sluice/base/util.h"

/* What holds a job's chunks back. Holds are job-wide and one at a time;
 * the first that applies is the one counted (the order of up_gate.c). */
typedef enum sl_hold {
    SL_HOLD_NONE,
    SL_HOLD_CTL_PAUSE,       /* sluice ctl pause */
    SL_HOLD_WINDOW,          /* outside the job's windows */
    SL_HOLD_REPLICA_LAG,     /* max-replica-lag */
    SL_HOLD_LOCK_WAITERS,    /* sessions queued for locks on the table */
    SL_HOLD_OLD_TRANSACTION, /* another session's transaction open too long */
    SL_HOLD_THROTTLE_QUERY,  /* throttle-query returned true */
    SL_HOLD_HEALTH,          /* any other health check, or one that failed */
    SL_HOLD_MAX_RATE,        /* max-rate */
    SL_HOLD_COUNT
} sl_hold;

/* "ctl_pause", "window", "replica_lag", ...: the label value (and the
 * journal's name) of a hold. */
const char *sl_hold_name(sl_hold hold);
/* The hold a health check's reason (throttle.h) stands for. */
sl_hold sl_hold_of_reason(const char *reason);

typedef enum sl_metric_count {
    SL_COUNT_RETRY,     /* a chunk attempt that failed and will be retried */
    SL_COUNT_SPLIT,     /* a chunk split after failing */
    SL_COUNT_SET_ASIDE, /* a row set aside by on-error skip */
    SL_COUNT_RECONNECT, /* a lost connection reconnected */
    SL_COUNT_N
} sl_metric_count;

typedef struct sl_metrics_job sl_metrics_job;

/* The series of job, created on first use (job copied). Never NULL. In a
 * fleet, those of job on the target the running fiber works on
 * (sl_log_owner). */
sl_metrics_job *sl_metrics_job_get(const char *job);
/* The same for job on one of several targets (README "Running a fleet"): its
 * series carry target="NAME" too. target NULL: a single database. */
sl_metrics_job *sl_metrics_job_get_on(const char *target, const char *job);

/* A run of the job begins: up (down = 0) or down. rows_estimate (-1 when
 * unknown) is what the walk will cover; rows and chunks what the job's
 * committed chunks hold already: sluice_rows_total and sluice_chunks_total
 * start there (up counts on from them: they are the job's rows; down leaves
 * them, counters that do not go down, and counts what it undoes apart). */
void sl_metrics_begin(sl_metrics_job *m, int down, int64_t rows_estimate, int64_t rows, int64_t chunks);
/* The job's state, by name (ckpt.h's states). */
void sl_metrics_state(sl_metrics_job *m, const char *state);
/* A chunk committed (up) or undone (down): its rows, how long it took. */
void sl_metrics_chunk(sl_metrics_job *m, int64_t rows, int64_t duration_ms);
/* The same, at now_ms (monotonic). */
void sl_metrics_chunk_at(sl_metrics_job *m, int64_t rows, int64_t duration_ms, int64_t now_ms);
void sl_metrics_batch(sl_metrics_job *m, int64_t batch);
void sl_metrics_workers(sl_metrics_job *m, int64_t workers, int64_t busy);
void sl_metrics_count(sl_metrics_job *m, sl_metric_count what, int64_t n);
/* Rows per second at now_ms (monotonic) over the last minute the run ran
 * (since it began, when that is shorter): time a hold kept it back (ctl
 * pause, a window, a health throttle) left out, max-rate's waits counted.
 * So a run held for hours shows the speed it runs at, not its average
 * since it began, and a pace changed by `ctl set` shows within a minute.
 * 0 for NULL or a run not begun. */
double sl_metrics_rate(const sl_metrics_job *m, int64_t now_ms);
/* `ctl status`'s lines of it at now_ms: "rate N rows/s", "rows-estimated N
 * (P% done)" and "eta H:MM:SS", the last two "unknown" when they cannot be
 * told (no estimate; no rate yet, or held by a pause before any chunk;
 * m NULL). */
void sl_metrics_status(const sl_metrics_job *m, int64_t now_ms, sl_buf *out);
/* The hold in force from now_ms (monotonic) on; SL_HOLD_NONE ends one.
 * Returns the hold this ended, with its length in *ended_ms; SL_HOLD_NONE
 * when none was in force or hold is the one in force (nothing changes). */
sl_hold sl_metrics_hold(sl_metrics_job *m, sl_hold hold, int64_t now_ms, int64_t *ended_ms);
/* The hold in force. */
sl_hold sl_metrics_current_hold(const sl_metrics_job *m);
/* m's replica replay lag as last measured. */
void sl_metrics_replica_lag(sl_metrics_job *m, int64_t lag_ms);

/* Every job's series in Prometheus' text exposition format (0.0.4), at
 * now_ms (monotonic: holds under way count up to it). */
void sl_metrics_render(sl_buf *out, int64_t now_ms);
/* Forget every job (tests). */
void sl_metrics_reset(void);

/* ---- serving it ---- */

typedef struct sl_metrics_server sl_metrics_server;

/* Serve /metrics on addr ("HOST:PORT", "[::1]:PORT", ":PORT" for every
 * IPv4 address; port 0: any free one) from loop, until sl_metrics_stop,
 * and log where. 0; -1 with err (a bad address, a port in use) and nothing
 * left open. */
int sl_metrics_serve(uv_loop_t *loop, const char *addr, sl_metrics_server **out, sl_err *err) SL_MUSTCHECK;
/* The port it listens on. */
int sl_metrics_port(const sl_metrics_server *srv);
/* Connections open now (at most 64). */
int sl_metrics_connections(const sl_metrics_server *srv);
/* Close the listener and every connection; the memory goes once the loop
 * has run their close callbacks. NULL-safe. */
void sl_metrics_stop(sl_metrics_server *srv);

#endif
