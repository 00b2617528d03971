/* test_pace.c: chunk-time batch sizing, pause/max-rate delays, local-time windows. */
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "sluice/services/pace.h"

static sl_job job_with(int64_t batch, int64_t chunk_time_ms)
{
    sl_job job = {0};
    job.batch = batch;
    job.chunk_time_ms = chunk_time_ms;
    return job;
}

static void test_fixed_batch_without_chunk_time(void)
{
    sl_job job = job_with(1000, 0);
    sl_pace pace;
    sl_pace_init(&pace, &job);
    CHECK(sl_pace_adjust(&pace, 1000, 5000) == 1000);
}

/* A statement costing 0.1 ms a row with a 200 ms target settles near 2000 rows. */
static void test_converges_to_target(void)
{
    sl_job job = job_with(100, 200);
    sl_pace pace;
    sl_pace_init(&pace, &job);
    int64_t batch = pace.batch;
    for (int i = 0; i < 60; i++)
        batch = sl_pace_adjust(&pace, batch, batch / 10);
    CHECK(batch >= 1800 && batch <= 2200);
}

static void test_growth_and_shrink_are_damped(void)
{
    sl_job job = job_with(1000, 500);
    sl_pace pace;
    sl_pace_init(&pace, &job);
    CHECK(sl_pace_adjust(&pace, 1000, 1) == 1200); /* at most +20 % */
    sl_pace_init(&pace, &job);
    CHECK(sl_pace_adjust(&pace, 1000, 100000) == 500); /* at most halved */
}

static void test_bounds(void)
{
    sl_job job = job_with(2, 100);
    sl_pace pace;
    sl_pace_init(&pace, &job);
    for (int i = 0; i < 20; i++)
        sl_pace_adjust(&pace, pace.batch, 100000);
    CHECK(pace.batch == 1);
    for (int i = 0; i < 400; i++)
        sl_pace_adjust(&pace, pace.batch, 0);
    CHECK(pace.batch == pace.max_batch);
}

static void test_rate_wait(void)
{
    sl_job job = job_with(1000, 0);
    job.pause_ms = 250;
    sl_pace pace;
    sl_pace_init(&pace, &job);
    pace.max_rate = 1000; /* 10000 rows are due after 10 s; 4 s have passed */
    /* max-rate's own wait, the pause not in it: negative when the run is behind its rate */
    CHECK(sl_pace_rate_wait(&pace, 10000, 4000) == 6000);
    CHECK(sl_pace_rate_wait(&pace, 1000, 4000) == -3000);
    pace.max_rate = 0;
    CHECK(sl_pace_rate_wait(&pace, 10000, 4000) == 0);
}

/* max-rate's account: a long hold saves up at most SL_RATE_CREDIT_MS of
 * allowance, so the job goes on at max-rate after it, not at full speed. */
static void test_rate_after_hold(void)
{
    sl_job job = job_with(1000, 0);
    sl_pace pace;
    sl_pace_init(&pace, &job);
    pace.max_rate = 1000;
    sl_pace_rate_begin(&pace, 5000);
    CHECK(sl_pace_rate_due(&pace, 5000) == 0);
    sl_pace_rate_sent(&pace, 1000);
    CHECK(sl_pace_rate_due(&pace, 5000) == 1000);
    CHECK(sl_pace_rate_due(&pace, 6000) == 0);
    /* a minute held (ctl pause, a window, a throttle): one second of it is kept */
    CHECK(sl_pace_rate_due(&pace, 66000) == -SL_RATE_CREDIT_MS);
    sl_pace_rate_sent(&pace, 1000);
    CHECK(sl_pace_rate_due(&pace, 66000) == 0);
    sl_pace_rate_sent(&pace, 1000);
    CHECK(sl_pace_rate_due(&pace, 66000) == 1000); /* the third chunk waits its second */
    CHECK(sl_pace_rate_due(&pace, 66500) == 500);
    /* a new rate (ctl set max-rate) counts from when it is set */
    pace.max_rate = 100;
    sl_pace_rate_begin(&pace, 70000);
    sl_pace_rate_sent(&pace, 1000);
    CHECK(sl_pace_rate_due(&pace, 70000) == 10000);
    pace.max_rate = 0;
    CHECK(sl_pace_rate_due(&pace, 70000) == 0);
}

/* chunk-time without a pause directive rests as long as a chunk; an explicit
 * pause (even 0ms) wins. */
static void test_chunk_time_rests_by_default(void)
{
    sl_job job = job_with(1000, 200);
    sl_pace pace;
    sl_pace_init(&pace, &job);
    CHECK(pace.pause_ms == 200);
    job.line[SL_DIR_PAUSE] = 4;
    job.pause_ms = 0;
    sl_pace_init(&pace, &job);
    CHECK(pace.pause_ms == 0);
    sl_job plain = job_with(1000, 0);
    sl_pace_init(&pace, &plain);
    CHECK(pace.pause_ms == 0);
}

static time_t at(int hour, int min)
{
    struct tm tm = {0};
    tm.tm_year = 126;
    tm.tm_mon = 10;
    tm.tm_mday = 24;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_isdst = -1;
    return mktime(&tm);
}

static void test_windows(void)
{
    sl_window night = {22 * 60, 6 * 60}, lunch = {12 * 60, 13 * 60};
    sl_window both[2] = {night, lunch};
    int64_t wait = 0;
    CHECK(sl_window_check(NULL, 0, at(15, 0), &wait) == 1);
    CHECK(sl_window_check(&night, 1, at(23, 0), &wait) == 1);
    CHECK(sl_window_check(&night, 1, at(3, 0), &wait) == 1);
    CHECK(sl_window_check(&night, 1, at(6, 0), &wait) == 0); /* the end is exclusive */
    CHECK(sl_window_check(&night, 1, at(21, 30), &wait) == 0 && wait == 30 * 60 * 1000);
    CHECK(sl_window_check(both, 2, at(11, 0), &wait) == 0 && wait == 60 * 60 * 1000);
    CHECK(sl_window_check(both, 2, at(12, 30), &wait) == 1);
    CHECK(sl_window_check(both, 2, at(13, 0), &wait) == 0 && wait == 9 * 3600 * 1000);
    char hhmm[16];
    sl_window_format_at(at(21, 30), 30 * 60 * 1000, hhmm);
    CHECK_STR(hhmm, "22:00");
}

/* A local time of the day the clocks change (Central European rules, as a POSIX TZ: no tzdata). */
static time_t at_on(int mon, int mday, int hour, int min)
{
    struct tm tm = {0};
    tm.tm_year = 126;
    tm.tm_mon = mon - 1;
    tm.tm_mday = mday;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_isdst = -1;
    return mktime(&tm);
}

static void test_windows_across_clock_changes(void)
{
    setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3", 1);
    tzset();
    sl_window early = {3 * 60, 5 * 60};
    int64_t wait = 0;
    char hhmm[16];
    /* 29 March 2026: 02:00 becomes 03:00, so 22:00 to 03:00 is 4 hours */
    time_t now = at_on(3, 28, 22, 0);
    CHECK(sl_window_check(&early, 1, now, &wait) == 0 && wait == 4 * 3600 * 1000);
    sl_window_format_at(now, wait, hhmm);
    CHECK_STR(hhmm, "03:00");
    /* 25 October 2026: 03:00 becomes 02:00, so 22:00 to 03:00 is 6 hours */
    now = at_on(10, 24, 22, 0);
    CHECK(sl_window_check(&early, 1, now, &wait) == 0 && wait == 6 * 3600 * 1000);
    sl_window_format_at(now, wait, hhmm);
    CHECK_STR(hhmm, "03:00");
    /* a start the change skips (02:30 on 29 March): the wait ends no later than 03:30, and the window
     * is open from 03:00, when the clock is past it (the gate looks again every 30 s) */
    sl_window skipped = {2 * 60 + 30, 4 * 60};
    now = at_on(3, 29, 1, 0);
    CHECK(sl_window_check(&skipped, 1, now, &wait) == 0 && wait > 0 && wait <= 90 * 60 * 1000);
    CHECK(sl_window_check(&skipped, 1, at_on(3, 29, 3, 0), &wait) == 1);
    setenv("TZ", "UTC", 1);
    tzset();
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    tzset();
    RUN(test_fixed_batch_without_chunk_time);
    RUN(test_converges_to_target);
    RUN(test_growth_and_shrink_are_damped);
    RUN(test_bounds);
    RUN(test_rate_wait);
    RUN(test_rate_after_hold);
    RUN(test_chunk_time_rests_by_default);
    RUN(test_windows);
    RUN(test_windows_across_clock_changes);
    return CHECK_DONE();
}
