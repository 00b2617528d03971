/* metrics.c: the process's registry of what runs measure, rendered in Prometheus' text format. */
#include "sluice/services/metrics.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#ifndef SL_VERSION
#define SL_VERSION "unknown"
#endif

/* Chunk duration buckets, in ms (le="0.005" ... le="120"; +Inf after). */
static const int64_t bucket_ms[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000};
#define NBUCKETS (sizeof bucket_ms / sizeof bucket_ms[0])

/* The rate is the rows over the last minute the run ran (holds left out). */
#define RATE_WINDOW_MS 60000
#define RATE_SAMPLE_MS 1000
#define RATE_SAMPLES   64

static const char *const states[] = {"pending", "running", "stopped", "failed", "done", "rolling_back", "rolled_back"};
#define NSTATES (sizeof states / sizeof states[0])

struct sl_metrics_job {
    char *name;
    char *target; /* NULL: one target, no label */
    int down;     /* the last run was a down */
    int64_t rows, chunks, rows_undone, chunks_undone;
    int64_t estimate; /* rows the walk covers, -1 unknown */
    int64_t run_rows, run_start_ms;
    int64_t held_before;           /* held_total when the run began */
    int64_t buckets[NBUCKETS + 1]; /* per bucket (not cumulative); the last is +Inf */
    int64_t duration_sum_ms, duration_count;
    int64_t batch, workers, busy;
    int64_t counts[SL_COUNT_N];
    int64_t held_ms[SL_HOLD_COUNT];
    sl_hold hold;
    int64_t hold_since;
    int has_lag;
    int64_t lag_ms;
    char state[16];
    /* the run's rows at moments of its running time (run_clock), one a
     * second at most, oldest first: the recent rate's window */
    struct {
        int64_t clock, rows;
    } samples[RATE_SAMPLES];
    size_t nsamples;
};

static struct {
    sl_metrics_job **jobs;
    size_t n, cap;
} reg;

static const char *const hold_names[SL_HOLD_COUNT] = {
    [SL_HOLD_NONE] = "none",
    [SL_HOLD_CTL_PAUSE] = "ctl_pause",
    [SL_HOLD_WINDOW] = "window",
    [SL_HOLD_REPLICA_LAG] = "replica_lag",
    [SL_HOLD_LOCK_WAITERS] = "lock_waiters",
    [SL_HOLD_OLD_TRANSACTION] = "old_transaction",
    [SL_HOLD_THROTTLE_QUERY] = "throttle_query",
    [SL_HOLD_HEALTH] = "health",
    [SL_HOLD_MAX_RATE] = "max_rate",
};

const char *sl_hold_name(sl_hold hold)
{
    return hold >= 0 && hold < SL_HOLD_COUNT ? hold_names[hold] : "none";
}

/* throttle.c's reasons begin with what they measured. */
sl_hold sl_hold_of_reason(const char *reason)
{
    static const struct {
        const char *has;
        sl_hold hold;
    } map[] = {
        {"replica lag", SL_HOLD_REPLICA_LAG},
        {"wait for locks", SL_HOLD_LOCK_WAITERS},
        {"transaction has been open", SL_HOLD_OLD_TRANSACTION},
        {"throttle-query", SL_HOLD_THROTTLE_QUERY},
    };
    for (size_t i = 0; reason && i < sizeof map / sizeof map[0]; i++)
        if (strstr(reason, map[i].has))
            return map[i].hold;
    return SL_HOLD_HEALTH;
}

sl_metrics_job *sl_metrics_job_get(const char *job)
{
    return sl_metrics_job_get_on(sl_log_owner(), job);
}

static int same_target(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

sl_metrics_job *sl_metrics_job_get_on(const char *target, const char *job)
{
    for (size_t i = 0; i < reg.n; i++)
        if (strcmp(reg.jobs[i]->name, job) == 0 && same_target(reg.jobs[i]->target, target))
            return reg.jobs[i];
    if (reg.n == reg.cap)
        reg.jobs = sl_realloc(reg.jobs, (reg.cap = reg.cap ? reg.cap * 2 : 8) * sizeof *reg.jobs);
    sl_metrics_job *m = sl_calloc(1, sizeof *m);
    m->name = sl_strdup(job);
    m->target = target ? sl_strdup(target) : NULL;
    m->estimate = -1;
    snprintf(m->state, sizeof m->state, "pending");
    reg.jobs[reg.n++] = m;
    return m;
}

void sl_metrics_reset(void)
{
    for (size_t i = 0; i < reg.n; i++) {
        free(reg.jobs[i]->name);
        free(reg.jobs[i]->target);
        free(reg.jobs[i]);
    }
    free(reg.jobs);
    memset(&reg, 0, sizeof reg);
}

/* The time holds kept the job back by now_ms (ctl pause, a window, a
 * health throttle), the one under way too. max-rate's waits are not among
 * them: they are the pace the job runs at. */
static int64_t held_total(const sl_metrics_job *m, int64_t now_ms)
{
    int64_t held = 0;
    for (int h = 0; h < SL_HOLD_COUNT; h++)
        if (h != SL_HOLD_MAX_RATE)
            held += m->held_ms[h];
    if (m->hold != SL_HOLD_NONE && m->hold != SL_HOLD_MAX_RATE)
        held += now_ms - m->hold_since;
    return held;
}

/* The time the run has run by now_ms: since it began, holds left out. */
static int64_t run_clock(const sl_metrics_job *m, int64_t now_ms)
{
    int64_t clock = now_ms - m->run_start_ms - (held_total(m, now_ms) - m->held_before);
    return clock > 0 ? clock : 0;
}

void sl_metrics_begin(sl_metrics_job *m, int down, int64_t rows_estimate, int64_t rows, int64_t chunks)
{
    m->down = down;
    m->estimate = rows_estimate;
    m->rows = rows;
    m->chunks = chunks;
    m->run_rows = 0;
    m->run_start_ms = sl_mono_ms();
    m->held_before = held_total(m, m->run_start_ms);
    m->nsamples = 0;
}

static void add_sample(sl_metrics_job *m, int64_t now_ms)
{
    int64_t clock = run_clock(m, now_ms);
    if (m->nsamples && clock - m->samples[m->nsamples - 1].clock < RATE_SAMPLE_MS)
        return;
    if (m->nsamples == RATE_SAMPLES) {
        memmove(m->samples, m->samples + 1, (RATE_SAMPLES - 1) * sizeof m->samples[0]);
        m->nsamples--;
    }
    m->samples[m->nsamples].clock = clock;
    m->samples[m->nsamples++].rows = m->run_rows;
}

double sl_metrics_rate(const sl_metrics_job *m, int64_t now_ms)
{
    if (!m || m->run_start_ms <= 0)
        return 0;
    int64_t clock = run_clock(m, now_ms), base_clock = 0, base_rows = 0;
    /* from the newest sample a minute or more before now (else the run's start) */
    for (size_t i = 0; i < m->nsamples && m->samples[i].clock <= clock - RATE_WINDOW_MS; i++) {
        base_clock = m->samples[i].clock;
        base_rows = m->samples[i].rows;
    }
    int64_t span = clock - base_clock;
    return span > 0 ? (double)(m->run_rows - base_rows) * 1000.0 / (double)span : 0;
}

void sl_metrics_state(sl_metrics_job *m, const char *state)
{
    snprintf(m->state, sizeof m->state, "%s", state);
}

void sl_metrics_chunk(sl_metrics_job *m, int64_t rows, int64_t duration_ms)
{
    sl_metrics_chunk_at(m, rows, duration_ms, sl_mono_ms());
}

void sl_metrics_chunk_at(sl_metrics_job *m, int64_t rows, int64_t duration_ms, int64_t now_ms)
{
    if (m->down) {
        m->rows_undone += rows;
        m->chunks_undone++;
    } else {
        m->rows += rows;
        m->chunks++;
    }
    m->run_rows += rows;
    add_sample(m, now_ms);
    size_t b = 0;
    while (b < NBUCKETS && duration_ms > bucket_ms[b])
        b++;
    m->buckets[b]++;
    m->duration_sum_ms += duration_ms;
    m->duration_count++;
}

void sl_metrics_batch(sl_metrics_job *m, int64_t batch)
{
    m->batch = batch;
}

void sl_metrics_workers(sl_metrics_job *m, int64_t workers, int64_t busy)
{
    m->workers = workers;
    m->busy = busy;
}

void sl_metrics_count(sl_metrics_job *m, sl_metric_count what, int64_t n)
{
    if (what >= 0 && what < SL_COUNT_N)
        m->counts[what] += n;
}

sl_hold sl_metrics_hold(sl_metrics_job *m, sl_hold hold, int64_t now_ms, int64_t *ended_ms)
{
    *ended_ms = 0;
    if (hold == m->hold)
        return SL_HOLD_NONE;
    sl_hold ended = m->hold;
    if (ended != SL_HOLD_NONE) {
        *ended_ms = now_ms - m->hold_since;
        m->held_ms[ended] += *ended_ms;
    }
    m->hold = hold;
    m->hold_since = now_ms;
    return ended;
}

sl_hold sl_metrics_current_hold(const sl_metrics_job *m)
{
    return m->hold;
}

void sl_metrics_replica_lag(sl_metrics_job *m, int64_t lag_ms)
{
    m->has_lag = 1;
    m->lag_ms = lag_ms;
}

/* ---- the text format ---- */

/* A label value: backslash, double quote and newline escaped (the format's rules). */
static void add_label(sl_buf *out, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            sl_buf_adds(out, "\\\\");
        else if (*p == '"')
            sl_buf_adds(out, "\\\"");
        else if (*p == '\n')
            sl_buf_adds(out, "\\n");
        else
            sl_buf_addc(out, *p);
    }
}

static void head(sl_buf *out, const char *name, const char *type, const char *help)
{
    sl_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{job="..."[,target="..."][,extra]} */
static void series(sl_buf *out, const char *name, const sl_metrics_job *m, const char *extra_key, const char *extra)
{
    sl_buf_printf(out, "%s{job=\"", name);
    add_label(out, m->name);
    sl_buf_addc(out, '"');
    if (m->target) {
        sl_buf_adds(out, ",target=\"");
        add_label(out, m->target);
        sl_buf_addc(out, '"');
    }
    if (extra_key) {
        sl_buf_printf(out, ",%s=\"", extra_key);
        add_label(out, extra);
        sl_buf_addc(out, '"');
    }
    sl_buf_adds(out, "} ");
}

/* ms as seconds, exactly (the text format takes any float). */
static void add_seconds(sl_buf *out, int64_t ms)
{
    sl_buf_printf(out, "%" PRId64 ".%03d\n", ms / 1000, (int)(ms % 1000));
}

typedef int64_t (*int_field)(const sl_metrics_job *m);

static void int_metric(sl_buf *out, const char *name, const char *type, const char *help, int_field get)
{
    head(out, name, type, help);
    for (size_t i = 0; i < reg.n; i++) {
        series(out, name, reg.jobs[i], NULL, NULL);
        sl_buf_printf(out, "%" PRId64 "\n", get(reg.jobs[i]));
    }
}

static int64_t get_rows(const sl_metrics_job *m)
{
    return m->rows;
}
static int64_t get_chunks(const sl_metrics_job *m)
{
    return m->chunks;
}
static int64_t get_rows_undone(const sl_metrics_job *m)
{
    return m->rows_undone;
}
static int64_t get_chunks_undone(const sl_metrics_job *m)
{
    return m->chunks_undone;
}
static int64_t get_batch(const sl_metrics_job *m)
{
    return m->batch;
}
static int64_t get_workers(const sl_metrics_job *m)
{
    return m->workers;
}
static int64_t get_busy(const sl_metrics_job *m)
{
    return m->busy;
}
static int64_t get_retries(const sl_metrics_job *m)
{
    return m->counts[SL_COUNT_RETRY];
}
static int64_t get_splits(const sl_metrics_job *m)
{
    return m->counts[SL_COUNT_SPLIT];
}
static int64_t get_set_aside(const sl_metrics_job *m)
{
    return m->counts[SL_COUNT_SET_ASIDE];
}
static int64_t get_reconnects(const sl_metrics_job *m)
{
    return m->counts[SL_COUNT_RECONNECT];
}

static void render_histogram(sl_buf *out)
{
    const char *name = "sluice_chunk_duration_seconds";
    head(out, name, "histogram", "How long each chunk took, from its first attempt to its commit (down: its undo).");
    for (size_t i = 0; i < reg.n; i++) {
        const sl_metrics_job *m = reg.jobs[i];
        int64_t cum = 0;
        for (size_t b = 0; b <= NBUCKETS; b++) {
            cum += m->buckets[b];
            char le[32];
            if (b < NBUCKETS)
                snprintf(le, sizeof le, "%g", (double)bucket_ms[b] / 1000.0);
            else
                snprintf(le, sizeof le, "+Inf");
            series(out, "sluice_chunk_duration_seconds_bucket", m, "le", le);
            sl_buf_printf(out, "%" PRId64 "\n", cum);
        }
        series(out, "sluice_chunk_duration_seconds_sum", m, NULL, NULL);
        add_seconds(out, m->duration_sum_ms);
        series(out, "sluice_chunk_duration_seconds_count", m, NULL, NULL);
        sl_buf_printf(out, "%" PRId64 "\n", m->duration_count);
    }
}

static void render_holds(sl_buf *out, int64_t now_ms)
{
    const char *name = "sluice_throttled_seconds_total";
    head(out, name, "counter",
         "Time the job's chunks were held back, by reason (ctl_pause, window, replica_lag, lock_waiters, "
         "old_transaction, throttle_query, health, max_rate).");
    for (size_t i = 0; i < reg.n; i++) {
        const sl_metrics_job *m = reg.jobs[i];
        for (int h = SL_HOLD_NONE + 1; h < SL_HOLD_COUNT; h++) {
            int64_t ms = m->held_ms[h] + (m->hold == (sl_hold)h ? now_ms - m->hold_since : 0);
            series(out, name, m, "reason", hold_names[h]);
            add_seconds(out, ms);
        }
    }
}

static void render_state(sl_buf *out)
{
    const char *name = "sluice_job_state";
    head(out, name, "gauge", "1 for the state the job is in, 0 for the others.");
    for (size_t i = 0; i < reg.n; i++)
        for (size_t s = 0; s < NSTATES; s++) {
            series(out, name, reg.jobs[i], "state", states[s]);
            sl_buf_printf(out, "%d\n", strcmp(reg.jobs[i]->state, states[s]) == 0);
        }
}

/* The rows the walk has done: up's committed, or down's undone. */
static int64_t walked(const sl_metrics_job *m)
{
    return m->down ? m->rows_undone : m->rows;
}

/* Milliseconds until the walk ends at the recent rate: what is left of the
 * estimate; -1 when that cannot be told (no estimate, no rate, not running). */
static int64_t eta_ms(const sl_metrics_job *m, int64_t now_ms)
{
    int64_t done = walked(m);
    double rate = sl_metrics_rate(m, now_ms);
    if (strcmp(m->state, m->down ? "rolling_back" : "running") != 0 || m->estimate <= done || rate <= 0)
        return -1;
    return (int64_t)((double)(m->estimate - done) * 1000.0 / rate);
}

void sl_metrics_status(const sl_metrics_job *m, int64_t now_ms, sl_buf *out)
{
    sl_buf_printf(out, "rate %.0f rows/s\n", sl_metrics_rate(m, now_ms));
    if (!m || m->estimate < 0) {
        sl_buf_adds(out, "rows-estimated unknown\neta unknown\n");
        return;
    }
    int64_t done = walked(m), ms = eta_ms(m, now_ms);
    double pct = m->estimate > 0 ? 100.0 * (double)done / (double)m->estimate : 100.0;
    sl_buf_printf(out, "rows-estimated %" PRId64 " (%.1f%% done)\n", m->estimate, pct > 99.9 ? 99.9 : pct);
    if (ms < 0)
        sl_buf_adds(out, "eta unknown\n");
    else
        sl_buf_printf(out, "eta %" PRId64 ":%02" PRId64 ":%02" PRId64 "\n", ms / 3600000, ms / 60000 % 60,
                      ms / 1000 % 60);
}

/* ETA: what is left of the estimate at the recent rate; none when unknown. */
static void render_eta(sl_buf *out, int64_t now_ms)
{
    const char *name = "sluice_eta_seconds";
    head(out, name, "gauge",
         "Seconds until the walk ends at its rate over the last minute it ran (only while it can be told).");
    for (size_t i = 0; i < reg.n; i++) {
        const sl_metrics_job *m = reg.jobs[i];
        int64_t ms = eta_ms(m, now_ms);
        if (ms < 0)
            continue;
        series(out, name, m, NULL, NULL);
        add_seconds(out, ms);
    }
    name = "sluice_rows_estimated";
    head(out, name, "gauge", "Rows the walk covers, as estimated when the run began (only when known).");
    for (size_t i = 0; i < reg.n; i++)
        if (reg.jobs[i]->estimate >= 0) {
            series(out, name, reg.jobs[i], NULL, NULL);
            sl_buf_printf(out, "%" PRId64 "\n", reg.jobs[i]->estimate);
        }
}

static void render_lag(sl_buf *out)
{
    const char *name = "sluice_replica_lag_seconds";
    head(out, name, "gauge", "The largest replica replay lag, as last measured (max-replica-lag jobs).");
    for (size_t i = 0; i < reg.n; i++)
        if (reg.jobs[i]->has_lag) {
            series(out, name, reg.jobs[i], NULL, NULL);
            add_seconds(out, reg.jobs[i]->lag_ms);
        }
}

void sl_metrics_render(sl_buf *out, int64_t now_ms)
{
    head(out, "sluice_build_info", "gauge", "sluice's version.");
    sl_buf_adds(out, "sluice_build_info{version=\"");
    add_label(out, SL_VERSION);
    sl_buf_adds(out, "\"} 1\n");
    int_metric(out, "sluice_rows_total", "counter", "Rows walked by the job's committed chunks.", get_rows);
    int_metric(out, "sluice_chunks_total", "counter", "The job's committed chunks.", get_chunks);
    int_metric(out, "sluice_rows_undone_total", "counter", "Rows put back by down in this process.", get_rows_undone);
    int_metric(out, "sluice_chunks_undone_total", "counter", "Chunks undone by down in this process.",
               get_chunks_undone);
    render_histogram(out);
    int_metric(out, "sluice_batch_size", "gauge", "Rows in the next chunk.", get_batch);
    int_metric(out, "sluice_workers", "gauge", "Connections walking the job.", get_workers);
    int_metric(out, "sluice_workers_busy", "gauge", "Workers with a chunk in flight.", get_busy);
    int_metric(out, "sluice_retries_total", "counter", "Chunk attempts that failed and were retried.", get_retries);
    int_metric(out, "sluice_splits_total", "counter", "Chunks split after failing.", get_splits);
    int_metric(out, "sluice_rows_set_aside_total", "counter", "Rows set aside by on-error skip.", get_set_aside);
    int_metric(out, "sluice_reconnects_total", "counter", "Lost connections reconnected.", get_reconnects);
    render_holds(out, now_ms);
    render_state(out);
    render_eta(out, now_ms);
    render_lag(out);
}
