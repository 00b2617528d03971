/* pace.h: how fast a job runs: batch sizing toward chunk-time, pause and max-rate, time windows, health throttles. */
#ifndef SLUICE_PACE_H
#define SLUICE_PACE_H

#include <time.h>

#include "sluice/jobs/job.h"

/* The settings a running job paces itself by; `ctl set` may change them. */
typedef struct sl_pace {
    int64_t batch; /* rows in the next chunk */
    int64_t min_batch, max_batch;
    int64_t chunk_time_ms; /* 0: fixed batch */
    int64_t pause_ms;
    int64_t max_rate; /* rows/s, 0 = unlimited */
    /* max-rate's account: the rows sent since rate_start (mono ms) */
    int64_t rate_start, rate_rows;
    double ms_per_row; /* smoothed cost of one row, 0 until measured */
    /* health limits; 0 = off */
    int64_t max_replica_lag_ms;
    int64_t max_lock_waiters;   /* sessions waiting for a lock on the job's table */
    int64_t max_xact_age_ms;    /* age of the oldest open transaction of another session */
    int64_t max_wal_rate;       /* bytes of WAL per second */
    int64_t max_dead_tuples_bp; /* dead tuples over live ones, hundredths of a percent */
} sl_pace;

/* Defaults of the limits sluice adds on its own (not in the job-file contract). */
#define SL_DEFAULT_MAX_LOCK_WAITERS 8
#define SL_DEFAULT_MAX_XACT_AGE_MS  (60 * 60 * 1000)

void sl_pace_init(sl_pace *pace, const sl_job *job);

/* After a chunk of rows that took ms: with chunk_time set, move the batch
 * toward the size that takes chunk_time, damped: it grows by at most 20 %
 * and shrinks by at most half per chunk, within [min_batch, max_batch].
 * Returns the new batch. */
int64_t sl_pace_adjust(sl_pace *pace, int64_t rows, int64_t ms);

/* How long max-rate alone holds the next chunk back, run_ms into a run that
 * has sent run_rows rows: the wait in ms, 0 or less for none. */
int64_t sl_pace_rate_wait(const sl_pace *pace, int64_t run_rows, int64_t run_ms);

/* The most of max-rate's allowance that time without chunks (paused, outside
 * the windows, held by a throttle) saves up: after a long hold the job goes on
 * at max-rate, not at full speed until its average since the start is down to
 * it again. */
#define SL_RATE_CREDIT_MS 1000

/* Open max-rate's account at mono ms now: at a run's start, and when
 * `ctl set max-rate` changes the rate. */
void sl_pace_rate_begin(sl_pace *pace, int64_t now);

/* How long max-rate holds the next chunk back at mono ms now (0 or less:
 * not at all). The account keeps at most SL_RATE_CREDIT_MS of allowance. */
int64_t sl_pace_rate_due(sl_pace *pace, int64_t now);

/* Count rows sent into max-rate's account. */
void sl_pace_rate_sent(sl_pace *pace, int64_t rows);

/* Windows, in local time. Returns 1 if now is inside one of them (or there
 * are none), else 0 and *wait_ms = time until the next one opens. */
int sl_window_check(const sl_window *windows, size_t n, time_t now, int64_t *wait_ms);

/* "HH:MM" of the local time now + ms. */
void sl_window_format_at(time_t now, int64_t ms, char out[16]);

#endif
