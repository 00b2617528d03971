/* pace.c: batch sizing toward chunk-time, rate limiting, and local-time windows. */
#include "sluice/services/pace.h"

#include <stdio.h>

void sl_pace_init(sl_pace *pace, const sl_job *job)
{
    *pace = (sl_pace){0};
    pace->batch = job->batch;
    pace->chunk_time_ms = job->chunk_time_ms;
    pace->pause_ms = job->pause_ms;
    /* chunk-time without a pause: rest as long as a chunk takes. A job that
     * sizes its chunks for a busy server should not then run them back to
     * back and take a whole core from it; `pause 0ms` asks for that. */
    if (job->chunk_time_ms > 0 && job->line[SL_DIR_PAUSE] == 0)
        pace->pause_ms = job->chunk_time_ms;
    pace->max_rate = job->max_rate;
    pace->max_replica_lag_ms = job->max_replica_lag_ms;
    pace->max_wal_rate = job->max_wal_rate;
    pace->max_dead_tuples_bp = job->max_dead_tuples_bp;
    pace->max_lock_waiters = SL_DEFAULT_MAX_LOCK_WAITERS;
    pace->max_xact_age_ms = SL_DEFAULT_MAX_XACT_AGE_MS;
    /* Bounds wide enough to reach the target from any sane start, narrow
     * enough that one mis-measured chunk cannot ask for a huge one. */
    pace->min_batch = 1;
    pace->max_batch = job->batch * 50 > 100000 ? job->batch * 50 : 100000;
    if (pace->max_batch > 10000000)
        pace->max_batch = 10000000;
}

int64_t sl_pace_adjust(sl_pace *pace, int64_t rows, int64_t ms)
{
    if (pace->chunk_time_ms <= 0 || rows <= 0)
        return pace->batch;
    double per_row = (double)(ms > 0 ? ms : 1) / (double)rows;
    /* Smooth the measurement: one slow chunk (a checkpoint, a lock) should
     * not halve the batch by itself. */
    pace->ms_per_row = pace->ms_per_row > 0 ? 0.5 * pace->ms_per_row + 0.5 * per_row : per_row;
    double want = (double)pace->chunk_time_ms / pace->ms_per_row;
    double lo = (double)pace->batch * 0.5, hi = (double)pace->batch * 1.2;
    if (want < lo)
        want = lo;
    if (want > hi)
        want = hi;
    int64_t next = (int64_t)(want + 0.5);
    if (next == pace->batch && want > (double)pace->batch)
        next++; /* tiny batches still grow */
    if (next < pace->min_batch)
        next = pace->min_batch;
    if (next > pace->max_batch)
        next = pace->max_batch;
    pace->batch = next;
    return next;
}

int64_t sl_pace_rate_wait(const sl_pace *pace, int64_t run_rows, int64_t run_ms)
{
    return pace->max_rate > 0 ? run_rows * 1000 / pace->max_rate - run_ms : 0;
}

void sl_pace_rate_begin(sl_pace *pace, int64_t now)
{
    pace->rate_start = now;
    pace->rate_rows = 0;
}

int64_t sl_pace_rate_due(sl_pace *pace, int64_t now)
{
    if (pace->max_rate <= 0)
        return 0;
    int64_t due = sl_pace_rate_wait(pace, pace->rate_rows, now - pace->rate_start);
    if (due < -SL_RATE_CREDIT_MS) { /* forget what a hold saved up */
        pace->rate_start += -SL_RATE_CREDIT_MS - due;
        due = -SL_RATE_CREDIT_MS;
    }
    return due;
}

void sl_pace_rate_sent(sl_pace *pace, int64_t rows)
{
    pace->rate_rows += rows;
}

int sl_window_check(const sl_window *windows, size_t n, time_t now, int64_t *wait_ms)
{
    if (n == 0)
        return 1;
    struct tm tm;
    localtime_r(&now, &tm);
    int64_t sec = (int64_t)tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
    int64_t best = -1;
    for (size_t i = 0; i < n; i++) {
        int64_t start = (int64_t)windows[i].start_min * 60, end = (int64_t)windows[i].end_min * 60;
        int inside = start < end ? sec >= start && sec < end : sec >= start || sec < end;
        if (inside)
            return 1;
        /* the next time the clock shows the start, as the calendar has it: a day the clocks change
         * is 23 or 25 hours long (for a start the change skips, mktime's normalized time; the gate
         * looks again every 30 s, and the window is open once the clock is past its start) */
        struct tm at = tm;
        at.tm_hour = windows[i].start_min / 60;
        at.tm_min = windows[i].start_min % 60;
        at.tm_sec = 0;
        at.tm_isdst = -1;
        if (start <= sec)
            at.tm_mday++;
        time_t t = mktime(&at);
        int64_t until = t == (time_t)-1 ? (start - sec + 86400) % 86400 : (int64_t)(t - now);
        if (until <= 0)
            until = 1;
        if (best < 0 || until < best)
            best = until;
    }
    *wait_ms = best * 1000;
    return 0;
}

void sl_window_format_at(time_t now, int64_t ms, char out[16])
{
    time_t at = now + (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&at, &tm);
    snprintf(out, 16, "%02d:%02d", tm.tm_hour, tm.tm_min);
}
