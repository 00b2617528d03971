/* report.c: the page behind `report JOB`: the job's journal as one self-contained HTML page with inline SVG charts.
 *
 * Everything comes from the checkpoint file, so a report needs no database
 * and works while the job runs (the file is in WAL mode: reading it does
 * not hold the runner up). A job with no file here gets a journal made from
 * the database's records (commands_job.c), and the page says what that
 * leaves out. Up chunks are the chunks the file holds (a
 * `down` removes the ones it undoes); down runs are the file's record of
 * what they undid (in a journal made from the database, only each down's
 * total: its chunks' rows are gone from sluice_progress). Holds are the
 * hold_start / hold_end events (up_hold.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/services/metrics.h"
#include "sluice/services/report.h"
#include "sluice/services/svg.h"

#define NBUCKETS   60
#define MAX_ASIDE  100
#define COLOR_UP   "#1f77b4"
#define COLOR_DOWN "#d62728"

typedef struct point {
    int64_t at, ms, rows, batch;
    int down, skipped;
} point;

typedef struct hold_iv {
    int64_t from, to;
    int lane; /* sl_hold */
} hold_iv;

typedef struct journal {
    sl_ckpt_job job;
    sl_ckpt_run *runs;
    size_t nruns;
    point *pts;
    size_t npts, cap;
    hold_iv *holds;
    size_t nholds, hcap;
    int open_lane;
    int64_t open_from;
    int64_t *retries, *splits;
    size_t nretries, nsplits, rcap, scap;
    int64_t *events; /* when each event was recorded */
    size_t nevents, ecap;
    int64_t *ends; /* when each run ended (run_end) */
    sl_buf aside;  /* rows of the set-aside table */
    int64_t first_at, last_at;
    int live;
    int from_db; /* made from the database's records: no undone chunks, each down's totals alone */
} journal;

static void add_point(journal *j, point p)
{
    if (j->npts == j->cap)
        j->pts = sl_realloc(j->pts, (j->cap = j->cap ? j->cap * 2 : 256) * sizeof *j->pts);
    j->pts[j->npts++] = p;
    if (p.at > j->last_at)
        j->last_at = p.at;
}

static void add_time(int64_t **v, size_t *n, size_t *cap, int64_t at)
{
    if (*n == *cap)
        *v = sl_realloc(*v, (*cap = *cap ? *cap * 2 : 32) * sizeof **v);
    (*v)[(*n)++] = at;
}

static int on_chunk(const sl_ckpt_chunk *c, void *arg)
{
    journal *j = arg;
    add_point(j, (point){c->committed_at_ms, c->duration_ms, c->rows, c->batch ? c->batch : c->rows, 0, c->skipped});
    if (c->skipped && j->aside.len < 64 * 1024) {
        sl_buf_adds(&j->aside, "<tr><td class=\"key\">");
        sl_html_escape(&j->aside, c->hi);
        sl_buf_adds(&j->aside, "</td><td class=\"text\">");
        sl_html_escape(&j->aside, c->error ? c->error : "");
        sl_buf_adds(&j->aside, "</td></tr>\n");
    }
    return 0;
}

static int on_undone(const sl_ckpt_undone *u, void *arg)
{
    add_point(arg, (point){u->at_ms, u->duration_ms, u->rows, 0, 1, 0});
    return 0;
}

static void close_hold(journal *j, int64_t at)
{
    if (j->open_lane == SL_HOLD_NONE)
        return;
    if (j->nholds == j->hcap)
        j->holds = sl_realloc(j->holds, (j->hcap = j->hcap ? j->hcap * 2 : 32) * sizeof *j->holds);
    j->holds[j->nholds++] = (hold_iv){j->open_from, at > j->open_from ? at : j->open_from, j->open_lane};
    j->open_lane = SL_HOLD_NONE;
}

static int lane_of(const char *data)
{
    json_t *o = data ? json_loads(data, 0, NULL) : NULL;
    const char *reason = json_string_value(json_object_get(o, "reason"));
    int lane = SL_HOLD_HEALTH;
    for (int h = SL_HOLD_NONE + 1; reason && h < SL_HOLD_COUNT; h++)
        if (strcmp(reason, sl_hold_name((sl_hold)h)) == 0)
            lane = h;
    json_decref(o);
    return lane;
}

static int on_event(const sl_ckpt_event *ev, void *arg)
{
    journal *j = arg;
    if (strcmp(ev->kind, "hold_start") == 0) {
        close_hold(j, ev->at_ms);
        j->open_lane = lane_of(ev->data);
        j->open_from = ev->at_ms;
    } else if (strcmp(ev->kind, "hold_end") == 0) {
        /* its length as the runner measured it (a monotonic clock), ending now */
        json_t *o = ev->data ? json_loads(ev->data, 0, NULL) : NULL;
        json_t *ms = json_object_get(o, "ms");
        if (json_is_integer(ms) && j->open_lane != SL_HOLD_NONE)
            j->open_from = ev->at_ms - json_integer_value(ms);
        json_decref(o);
        close_hold(j, ev->at_ms);
    } else if (strcmp(ev->kind, "retry") == 0) {
        add_time(&j->retries, &j->nretries, &j->rcap, ev->at_ms);
    } else if (strcmp(ev->kind, "split") == 0) {
        add_time(&j->splits, &j->nsplits, &j->scap, ev->at_ms);
    }
    add_time(&j->events, &j->nevents, &j->ecap, ev->at_ms);
    if (ev->at_ms > j->last_at)
        j->last_at = ev->at_ms;
    return 0;
}

/* The later of last and at, when at is in [from, before). */
static int64_t later_within(int64_t last, int64_t at, int64_t from, int64_t before)
{
    return at >= from && at < before && at > last ? at : last;
}

/* When each run ended: as it recorded; one that never closed, now when it
 * is the newest and its runner is alive; else (its runner was killed) at
 * the last thing the journal recorded while it ran (a chunk, an undone
 * chunk, an event), before the next run began; its start when none. */
static void set_ends(journal *j, int64_t now)
{
    j->ends = sl_calloc(j->nruns + 1, sizeof *j->ends);
    for (size_t i = 0; i < j->nruns; i++) {
        const sl_ckpt_run *r = &j->runs[i];
        int64_t from = r->started_at_ms, before = i + 1 < j->nruns ? j->runs[i + 1].started_at_ms : INT64_MAX;
        if (r->ended_at_ms > 0)
            j->ends[i] = r->ended_at_ms;
        else if (j->live && i + 1 == j->nruns)
            j->ends[i] = now > from ? now : from;
        else {
            int64_t last = from;
            for (size_t k = 0; k < j->npts; k++)
                last = later_within(last, j->pts[k].at, from, before);
            for (size_t k = 0; k < j->nevents; k++)
                last = later_within(last, j->events[k], from, before);
            j->ends[i] = last;
        }
    }
}

static int64_t run_end(const journal *j, size_t run)
{
    return j->ends[run];
}

/* A hold still open ends with the run it began in. */
static void close_open_hold(journal *j, int64_t now)
{
    if (j->open_lane == SL_HOLD_NONE)
        return;
    int64_t end = now;
    for (size_t i = 0; i < j->nruns; i++)
        if (j->runs[i].started_at_ms <= j->open_from)
            end = run_end(j, i);
    close_hold(j, end);
}

static int cmp_point(const void *a, const void *b)
{
    const point *x = a, *y = b;
    return x->at < y->at ? -1 : x->at > y->at;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int load(sl_ckpt *ckpt, int64_t now, int from_db, journal *j, sl_err *err)
{
    memset(j, 0, sizeof *j);
    j->live = sl_ckpt_locked(sl_ckpt_file(ckpt));
    j->from_db = from_db;
    if (sl_ckpt_get_job(ckpt, &j->job, err) != 0 || sl_ckpt_list_runs(ckpt, &j->runs, &j->nruns, err) != 0 ||
        sl_ckpt_each_chunk(ckpt, 0, on_chunk, j, err) != 0 || sl_ckpt_each_undone(ckpt, on_undone, j, err) != 0 ||
        sl_ckpt_each_event(ckpt, on_event, j, err) != 0)
        return -1;
    set_ends(j, now);
    close_open_hold(j, now);
    if (j->npts)
        qsort(j->pts, j->npts, sizeof *j->pts, cmp_point);
    j->first_at = j->npts ? j->pts[0].at - j->pts[0].ms : now;
    for (size_t i = 0; i < j->nruns; i++) {
        if (strcmp(j->runs[i].kind, "stamp") == 0)
            continue;
        if (j->runs[i].started_at_ms < j->first_at)
            j->first_at = j->runs[i].started_at_ms;
        int64_t end = run_end(j, i);
        if (end > j->last_at)
            j->last_at = end;
    }
    if (j->last_at < j->first_at)
        j->last_at = j->first_at;
    return 0;
}

static void journal_free(journal *j)
{
    sl_ckpt_job_free(&j->job);
    for (size_t i = 0; i < j->nruns; i++)
        sl_ckpt_run_free(&j->runs[i]);
    free(j->runs);
    free(j->pts);
    free(j->holds);
    free(j->retries);
    free(j->splits);
    free(j->events);
    free(j->ends);
    sl_buf_free(&j->aside);
}

/* ---- the numbers ---- */

static int64_t rank(const int64_t *sorted, size_t n, double p)
{
    size_t r = (size_t)(p * (double)n + 0.999999);
    return n ? sorted[r > 0 ? r - 1 : 0] : -1;
}

static void summarize(const journal *j, sl_report_summary *s)
{
    memset(s, 0, sizeof *s);
    s->rows = j->job.rows;
    s->chunks = j->job.chunks;
    int64_t *ms = sl_calloc(j->npts + 1, sizeof *ms);
    size_t n = 0;
    for (size_t i = 0; i < j->npts; i++) {
        const point *p = &j->pts[i];
        if (p->down) {
            s->rows_undone += p->rows;
            s->chunks_undone++;
        } else if (!p->skipped) {
            ms[n++] = p->ms;
        }
        s->set_aside += p->skipped;
    }
    qsort(ms, n, sizeof *ms, cmp_i64);
    s->median_ms = rank(ms, n, 0.5);
    s->p99_ms = rank(ms, n, 0.99);
    free(ms);
    for (size_t i = 0; i < j->nruns; i++) {
        const sl_ckpt_run *r = &j->runs[i];
        if (strcmp(r->kind, "stamp") == 0)
            continue;
        s->runs++;
        s->wall_ms += run_end(j, i) - r->started_at_ms;
        /* the database keeps each down's totals, not its chunks; a down killed before it ended, not those */
        if (j->from_db && strcmp(r->kind, "down") == 0 && (r->rows < 0 || r->chunks < 0))
            s->undone_unknown++;
        else if (j->from_db && strcmp(r->kind, "down") == 0) {
            s->rows_undone += r->rows;
            s->chunks_undone += r->chunks;
        }
    }
    for (size_t i = 0; i < j->nholds; i++)
        s->throttled_ms += j->holds[i].to - j->holds[i].from;
    s->retries = (int64_t)j->nretries;
    s->splits = (int64_t)j->nsplits;
}

/* ---- the page ---- */

static double secs(const journal *j, int64_t at)
{
    return (double)(at - j->first_at) / 1000.0;
}

/* Per bucket of the span: the sum of values (or counts) at times. */
typedef struct buckets {
    double x[NBUCKETS], y[NBUCKETS];
    double width; /* seconds */
} buckets;

static void bucket_init(buckets *b, double span)
{
    memset(b, 0, sizeof *b);
    b->width = span > 0 ? span / NBUCKETS : 1;
    for (int i = 0; i < NBUCKETS; i++)
        b->x[i] = i * b->width;
}

static void bucket_add(buckets *b, double t, double v)
{
    int i = (int)(t / b->width);
    b->y[i < 0 ? 0 : i >= NBUCKETS ? NBUCKETS - 1 : i] += v;
}

static void chart_rate(sl_buf *out, const journal *j, double span, const char *start)
{
    buckets up, down;
    bucket_init(&up, span);
    bucket_init(&down, span);
    int has_down = 0;
    for (size_t i = 0; i < j->npts; i++) {
        bucket_add(j->pts[i].down ? &down : &up, secs(j, j->pts[i].at), (double)j->pts[i].rows / up.width);
        has_down |= j->pts[i].down;
    }
    sl_svg_series s[2] = {{"up", COLOR_UP, SL_SVG_BARS, up.x, up.y, j->npts ? NBUCKETS : 0},
                          {"down", COLOR_DOWN, SL_SVG_BARS, down.x, down.y, NBUCKETS}};
    sl_svg_chart(out, "rows_per_second", "Rows per second", "rows/s", start, span, s, has_down ? 2 : 1);
}

/* Dots of one value per chunk: duration or batch. */
static void chart_per_chunk(sl_buf *out, const journal *j, double span, const char *start, int batch)
{
    double *x[2], *y[2];
    size_t n[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        x[k] = sl_calloc(j->npts + 1, sizeof(double));
        y[k] = sl_calloc(j->npts + 1, sizeof(double));
    }
    for (size_t i = 0; i < j->npts; i++) {
        const point *p = &j->pts[i];
        if (batch && (p->down || p->skipped))
            continue;
        int k = p->down;
        x[k][n[k]] = secs(j, p->at);
        y[k][n[k]++] = batch ? (double)p->batch : (double)p->ms / 1000.0;
    }
    sl_svg_series s[2] = {{"up", COLOR_UP, batch ? SL_SVG_STEP : SL_SVG_DOTS, x[0], y[0], n[0]},
                          {"down", COLOR_DOWN, SL_SVG_DOTS, x[1], y[1], n[1]}};
    if (batch)
        sl_svg_chart(out, "batch_size", "Batch size (rows per chunk)", "rows", start, span, s, 1);
    else
        sl_svg_chart(out, "chunk_duration", "Chunk duration", "seconds", start, span, s, n[1] ? 2 : 1);
    for (int k = 0; k < 2; k++) {
        free(x[k]);
        free(y[k]);
    }
}

typedef struct edge {
    int64_t at;
    int d;
} edge;

static int cmp_edge(const void *a, const void *b)
{
    const edge *x = a, *y = b;
    return x->at != y->at ? (x->at < y->at ? -1 : 1) : x->d - y->d; /* an end before a start at the same time */
}

/* Chunks in flight over time: each chunk from its first attempt to its commit. */
static void chart_workers(sl_buf *out, const journal *j, double span, const char *start)
{
    edge *e = sl_calloc(2 * j->npts + 1, sizeof *e);
    for (size_t i = 0; i < j->npts; i++) {
        int64_t from = j->pts[i].at - j->pts[i].ms, to = j->pts[i].at > from ? j->pts[i].at : from + 1;
        e[2 * i] = (edge){from, 1};
        e[2 * i + 1] = (edge){to, -1};
    }
    qsort(e, 2 * j->npts, sizeof *e, cmp_edge);
    double *x = sl_calloc(2 * j->npts + 2, sizeof(double)), *y = sl_calloc(2 * j->npts + 2, sizeof(double));
    size_t n = 0;
    int level = 0;
    for (size_t i = 0; i < 2 * j->npts; i++) {
        level += e[i].d;
        x[n] = secs(j, e[i].at);
        y[n++] = level;
    }
    sl_svg_series s = {"chunks in flight", COLOR_UP, SL_SVG_STEP, x, y, n};
    sl_svg_chart(out, "workers", "Workers busy (chunks in flight)", "workers", start, span, &s, 1);
    free(e);
    free(x);
    free(y);
}

static void chart_holds(sl_buf *out, const journal *j, double span, const char *start)
{
    static const char *const colors[] = {"#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                                         "#bcbd22", "#17becf", "#ff7f0e", "#2ca02c"};
    int lane_of_hold[SL_HOLD_COUNT];
    const char *names[SL_HOLD_COUNT], *cols[SL_HOLD_COUNT];
    size_t nlanes = 0;
    for (int h = SL_HOLD_NONE + 1; h < SL_HOLD_COUNT; h++) {
        lane_of_hold[h] = -1;
        for (size_t i = 0; i < j->nholds; i++)
            if (j->holds[i].lane == h && lane_of_hold[h] < 0) {
                lane_of_hold[h] = (int)nlanes;
                names[nlanes] = sl_hold_name((sl_hold)h);
                cols[nlanes++] = colors[(h - 1) % 8];
            }
    }
    sl_svg_span *spans = sl_calloc(j->nholds + 1, sizeof *spans);
    for (size_t i = 0; i < j->nholds; i++)
        spans[i] = (sl_svg_span){secs(j, j->holds[i].from), secs(j, j->holds[i].to), lane_of_hold[j->holds[i].lane]};
    sl_svg_lanes(out, "throttled", "Held back: throttled or paused, and why", start, span, names, cols, nlanes, spans,
                 j->nholds);
    free(spans);
}

static void chart_retries(sl_buf *out, const journal *j, double span, const char *start)
{
    buckets r, s;
    bucket_init(&r, span);
    bucket_init(&s, span);
    for (size_t i = 0; i < j->nretries; i++)
        bucket_add(&r, secs(j, j->retries[i]), 1);
    for (size_t i = 0; i < j->nsplits; i++)
        bucket_add(&s, secs(j, j->splits[i]), 1);
    sl_svg_series v[2] = {{"retries", "#ff7f0e", SL_SVG_BARS, r.x, r.y, j->nretries ? NBUCKETS : 0},
                          {"splits", "#9467bd", SL_SVG_BARS, s.x, s.y, j->nsplits ? NBUCKETS : 0}};
    sl_svg_chart(out, "retries_splits", "Retries and splits", "count", start, span, v, 2);
}

static void chart_aside(sl_buf *out, const journal *j, double span, const char *start)
{
    /* a step from 0 at the start to the total at the end, up by one at each row set aside */
    double *x = sl_calloc(j->npts + 2, sizeof(double)), *y = sl_calloc(j->npts + 2, sizeof(double));
    size_t n = 1;
    for (size_t i = 0; i < j->npts; i++)
        if (j->pts[i].skipped) {
            x[n] = secs(j, j->pts[i].at);
            y[n] = (double)n;
            n++;
        }
    x[n] = span;
    y[n] = y[n - 1];
    sl_svg_series s = {"rows set aside", COLOR_DOWN, SL_SVG_STEP, x, y, n > 1 ? n + 1 : 0};
    sl_svg_chart(out, "set_aside", "Rows set aside (on-error skip), in all", "rows", start, span, &s, 1);
    free(x);
    free(y);
}

static void cell(sl_buf *out, const char *id, const char *label, const char *value)
{
    sl_buf_printf(out, "<tr><th>%s</th><td id=\"%s\">", label, id);
    sl_html_escape(out, value);
    sl_buf_adds(out, "</td></tr>\n");
}

static void cell_int(sl_buf *out, const char *id, const char *label, int64_t v)
{
    char text[32];
    snprintf(text, sizeof text, "%" PRId64, v);
    cell(out, id, label, text);
}

/* v, and how many runs' counts it lacks: "at least v" then. */
static void cell_at_least(sl_buf *out, const char *id, const char *label, int64_t v, int64_t lacking)
{
    char text[160];
    if (lacking)
        snprintf(text, sizeof text,
                 "at least %" PRId64 " (%" PRId64 " down%s killed before it ended did not record %s count)", v, lacking,
                 lacking == 1 ? "" : "s", lacking == 1 ? "its" : "their");
    else
        snprintf(text, sizeof text, "%" PRId64, v);
    cell(out, id, label, text);
}

static void cell_ms(sl_buf *out, const char *id, const char *label, int64_t ms)
{
    char text[64];
    if (ms < 0)
        snprintf(text, sizeof text, "-");
    else
        snprintf(text, sizeof text, "%.3f s", (double)ms / 1000.0);
    sl_buf_printf(out, "<tr><th>%s</th><td id=\"%s\" data-ms=\"%" PRId64 "\">%s</td></tr>\n", label, id, ms, text);
}

static void summary_table(sl_buf *out, const journal *j, const sl_report_summary *s)
{
    sl_buf_adds(out, "<h2>Summary</h2>\n<table id=\"summary\">\n");
    cell(out, "sum-job", "job", j->job.job);
    cell(out, "sum-state", "state", sl_state_name(j->job.state));
    cell(out, "sum-target", "database", j->job.target ? j->job.target : "-");
    cell_int(out, "sum-rows", "rows (committed chunks)", s->rows);
    cell_int(out, "sum-chunks", "chunks", s->chunks);
    cell_at_least(out, "sum-rows-undone", "rows undone by down", s->rows_undone, s->undone_unknown);
    cell_at_least(out, "sum-chunks-undone", "chunks undone by down", s->chunks_undone, s->undone_unknown);
    cell_ms(out, "sum-wall", "wall time (all runs)", s->wall_ms);
    cell_ms(out, "sum-throttled", "time held back (throttled, paused, windows)", s->throttled_ms);
    cell_ms(out, "sum-median", "chunk time, median", s->median_ms);
    cell_ms(out, "sum-p99", "chunk time, p99", s->p99_ms);
    cell_int(out, "sum-retries", "retries", s->retries);
    cell_int(out, "sum-splits", "splits", s->splits);
    cell_int(out, "sum-set-aside", "rows set aside", s->set_aside);
    cell_int(out, "sum-runs", "runs", s->runs);
    if (j->job.error)
        cell(out, "sum-error", "error", j->job.error);
    sl_buf_adds(out, "</table>\n");
}

static void runs_table(sl_buf *out, const journal *j)
{
    sl_buf_adds(out, "<h2>Runs</h2>\n<table id=\"runs\"><tr><th>kind</th><th>outcome</th><th>started</th>"
                     "<th>ended</th><th>rows</th><th>chunks</th><th>error</th></tr>\n");
    for (size_t i = 0; i < j->nruns; i++) {
        const sl_ckpt_run *r = &j->runs[i];
        char st[32], en[32];
        sl_format_iso8601(r->started_at_ms, st);
        sl_format_iso8601(r->ended_at_ms, en);
        sl_buf_adds(out, "<tr><td>");
        sl_html_escape(out, r->kind);
        sl_buf_adds(out, "</td><td>");
        sl_html_escape(out, r->outcome);
        char rows[24] = "?", chunks[24] = "?"; /* not recorded: a down killed, from the database */
        if (r->rows >= 0)
            snprintf(rows, sizeof rows, "%" PRId64, r->rows);
        if (r->chunks >= 0)
            snprintf(chunks, sizeof chunks, "%" PRId64, r->chunks);
        /* a run that never closed ended at the last thing it recorded, as far as anyone knows */
        sl_buf_printf(out, "</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td class=\"text\">", st,
                      en[0]                           ? en
                      : strcmp(r->outcome, "running") ? "unknown"
                                                      : "-",
                      rows, chunks);
        sl_html_escape(out, r->error ? r->error : "");
        sl_buf_adds(out, "</td></tr>\n");
    }
    sl_buf_adds(out, "</table>\n");
}

static const char style[] =
    "body{font-family:sans-serif;margin:24px;color:#222;max-width:960px}"
    "h1{font-size:20px}h2{font-size:16px;margin-top:28px}"
    "table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px}"
    "th{text-align:left;background:#f4f4f4;font-weight:normal}td{text-align:right}td.text,td.key{text-align:left}"
    "figure{margin:18px 0}figcaption{font-size:14px;margin-bottom:4px}"
    "svg text{font-size:11px;fill:#333}svg .note{fill:#888}.axis,.tick{stroke:#444}.grid{stroke:#e8e8e8}";

int sl_report_build(sl_ckpt *ckpt, int64_t now_ms, const char *lost_dir, sl_buf *out, sl_report_summary *sum,
                    sl_err *err)
{
    journal j;
    if (load(ckpt, now_ms, lost_dir != NULL, &j, err) != 0) {
        journal_free(&j);
        return -1;
    }
    summarize(&j, sum);
    double span = secs(&j, j.last_at);
    char start[32], generated[32];
    sl_format_iso8601(j.first_at, start);
    sl_format_iso8601(now_ms, generated);
    sl_buf_adds(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                     "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                     "style-src 'unsafe-inline'\">\n<title>sluice report: ");
    sl_html_escape(out, j.job.job);
    sl_buf_printf(out, "</title>\n<style>%s</style>\n</head><body>\n<h1>sluice report: <span id=\"job\">", style);
    sl_html_escape(out, j.job.job);
    if (lost_dir) {
        sl_buf_adds(out, "</span></h1>\n<p id=\"source\">From the database ");
        sl_html_escape(out, j.job.target ? j.job.target : "?");
        sl_buf_printf(out, ", written %s; the job is %s. There is no checkpoint file for it in ", generated,
                      sl_state_name(j.job.state));
        sl_html_escape(out, lost_dir);
        sl_buf_adds(out, " (a lost directory, or the job ran from another machine), so this page shows what the "
                         "database records: the job's runs (from a database an older sluice kept, one run from the "
                         "job's first start to its last change); each committed chunk it still holds, with its time, "
                         "rows and attempts (a retry is shown when its chunk committed); and what each down undid, "
                         "in all (a down killed before it ended recorded neither that nor its end: shown as ? and "
                         "unknown). Kept in the checkpoint file only, and not here: the chunks each down undid, one "
                         "by one (and the up chunks they undid, which the database no longer holds), the times the "
                         "job was held back, splits, and the batch in force (the batch chart shows each chunk's "
                         "rows).</p>\n");
    } else {
        sl_buf_printf(out, "</span></h1>\n<p id=\"source\">From the checkpoint file ");
        sl_html_escape(out, sl_ckpt_file(ckpt));
        sl_buf_printf(out, ", written %s; the job is %s%s.</p>\n", generated, sl_state_name(j.job.state),
                      j.live ? " (a runner holds it now)" : "");
    }
    summary_table(out, &j, sum);
    sl_buf_adds(out, "<h2>Over time</h2>\n");
    chart_rate(out, &j, span, start);
    chart_per_chunk(out, &j, span, start, 0);
    chart_per_chunk(out, &j, span, start, 1);
    chart_workers(out, &j, span, start);
    chart_holds(out, &j, span, start);
    chart_retries(out, &j, span, start);
    chart_aside(out, &j, span, start);
    runs_table(out, &j);
    sl_buf_adds(out, "<h2>Rows set aside</h2>\n");
    if (j.aside.len)
        sl_buf_printf(out, "<table id=\"aside\"><tr><th>key</th><th>error</th></tr>\n%s</table>\n", j.aside.data);
    else
        sl_buf_adds(out, "<p>None.</p>\n");
    sl_buf_adds(out, "</body></html>\n");
    journal_free(&j);
    return 0;
}
