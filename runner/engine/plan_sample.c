/* plan_sample.c: `plan JOB --sample N`: run the first N chunks, each rolled back, time them, estimate the job.
 *
 * Each sampled chunk is one transaction: BEGIN, the job's timeouts, its up
 * statements over the chunk's bounds, ROLLBACK, sent as one batch. Nothing
 * it changes stays, and it holds its locks only while it runs; sluice's own
 * tables are neither written nor created. On PostgreSQL the WAL insert
 * position is read before and after the statements, inside the chunk's
 * transaction: what the chunk would write to the WAL (other sessions' writes
 * meanwhile count too, so on a busy server it is an upper bound). Sequences
 * the statements advance stay advanced: PostgreSQL never rolls them back. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/base/json.h"
#include "sluice/engine/plan.h"

typedef struct sample {
    int64_t us, rows, affected, wal; /* wal: bytes, -1 unknown */
} sample;

/* "16/B374D848" as a byte position; -1 when it is not one. */
static int64_t parse_lsn(const char *text)
{
    unsigned long hi, lo;
    if (!text || sscanf(text, "%lx/%lx", &hi, &lo) != 2)
        return -1;
    return (int64_t)((uint64_t)hi << 32 | (uint64_t)lo);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least p of them at or under it. */
static int64_t percentile(const int64_t *sorted, size_t n, double p)
{
    size_t rank = (size_t)(p * (double)n + 0.999999);
    return sorted[rank > 0 ? rank - 1 : 0];
}

typedef struct sampler {
    sl_session *sess;
    const sl_job *job;
    const sl_table_info *info;
    char **stmts; /* rendered up statements */
    sl_chunk_settings timeouts;
    char *first_sql, *next_sql;
    char *after[SL_MAX_KEY_COLS];
    int has_after;
} sampler;

/* The next chunk's bounds into edges (lo then hi, owned by ans): 1 found, 0 none left, -1 failed. */
static int next_bounds(sampler *s, sl_answer *ans, const char **edges, int64_t *rows)
{
    size_t n = s->info->ks.ncols;
    char limit[24];
    snprintf(limit, sizeof limit, "%" PRId64, s->job->batch);
    const char *params[SL_MAX_KEY_COLS + 1];
    size_t np = 0;
    for (size_t i = 0; s->has_after && i < n; i++)
        params[np++] = s->after[i];
    params[np++] = limit;
    if (sl_session_exec1(s->sess, s->has_after ? s->next_sql : s->first_sql, (int)np, params, ans) != 0 || !ans->ok) {
        printf("  cannot find the next chunk: ");
        sl_fputs_visible(ans->error ? ans->error : "connection lost", stdout);
        printf("\n");
        return -1;
    }
    if (ans->results[0].nrows == 0)
        return 0;
    for (size_t i = 0; i < 2 * n; i++)
        edges[i] = sl_answer_val(ans, 0, 0, (int)i);
    *rows = strtoll(sl_answer_val(ans, 0, 0, (int)(2 * n)), NULL, 10);
    return 1;
}

/* Run one chunk and roll it back: 0, or -1 (said why). */
static int run_one(sampler *s, const char **edges, sample *out)
{
    int pg = s->sess->dialect == SL_DIALECT_PG;
    size_t n = s->info->ks.ncols, k = s->job->up.nstmts, nq = 0;
    sl_query *q = sl_calloc(k + 8, sizeof *q);
    q[nq++] = (sl_query){sl_session_begin_sql(s->sess), 0, NULL, 0};
    for (size_t i = 0; i < s->timeouts.n; i++)
        q[nq++] = (sl_query){s->timeouts.sql[i], 0, NULL, 1};
    size_t lsn0 = nq;
    if (pg)
        q[nq++] = (sl_query){"SELECT pg_current_wal_insert_lsn()::text", 0, NULL, 0};
    size_t first = nq;
    for (size_t i = 0; i < k; i++) {
        const sl_stmt *st = &s->job->up.stmts[i];
        int used = (st->uses_lo + st->uses_hi) * (int)n;
        q[nq++] = (sl_query){s->stmts[i], used, st->uses_lo ? edges : edges + n, 1};
    }
    size_t lsn1 = nq;
    if (pg)
        q[nq++] = (sl_query){"SELECT pg_current_wal_insert_lsn()::text", 0, NULL, 0};
    q[nq++] = (sl_query){"ROLLBACK", 0, NULL, 0};
    sl_answer ans;
    uint64_t t0 = uv_hrtime();
    int rc = sl_session_exec(s->sess, q, nq, &ans);
    out->us = (int64_t)((uv_hrtime() - t0) / 1000);
    free(q);
    if (rc != 0 || !ans.ok) {
        printf("  the chunk failed (rolled back): %s%s", ans.sqlstate, ans.sqlstate[0] ? " " : "");
        sl_fputs_visible(ans.error ? ans.error : "connection lost", stdout);
        printf("\n");
        if (rc == 0 && !ans.conn_lost && ans.failed_index > 0) {
            sl_answer rb;
            if (sl_session_exec1(s->sess, "ROLLBACK", 0, NULL, &rb) == 0)
                sl_answer_free(&rb);
        }
        sl_answer_free(&ans);
        return -1;
    }
    out->affected = 0;
    for (size_t i = 0; i < k; i++)
        if (ans.results[first + i].cmd_tuples > 0)
            out->affected += ans.results[first + i].cmd_tuples;
    int64_t a = pg ? parse_lsn(sl_answer_val(&ans, lsn0, 0, 0)) : -1,
            b = pg ? parse_lsn(sl_answer_val(&ans, lsn1, 0, 0)) : -1;
    out->wal = a >= 0 && b >= a ? b - a : -1;
    sl_answer_free(&ans);
    return 0;
}

static void sampler_free(sampler *s)
{
    for (size_t i = 0; s->stmts && i < s->job->up.nstmts; i++)
        free(s->stmts[i]);
    free(s->stmts);
    free(s->first_sql);
    free(s->next_sql);
    for (size_t i = 0; i < SL_MAX_KEY_COLS; i++)
        free(s->after[i]);
}

static void sampler_init(sampler *s, sl_session *sess, const sl_job *job, const sl_table_info *info)
{
    memset(s, 0, sizeof *s);
    s->sess = sess;
    s->job = job;
    s->info = info;
    s->stmts = sl_calloc(job->up.nstmts + 1, sizeof(char *));
    for (size_t i = 0; i < job->up.nstmts; i++)
        s->stmts[i] = sl_keys_stmt_sql(&info->ks, &job->up.stmts[i]);
    sl_session_chunk_settings(sess, job->lock_timeout_ms, job->statement_timeout_ms, job->wait_commit, &s->timeouts);
    s->first_sql = sl_keys_boundary_sql(&info->ks, 0);
    s->next_sql = sl_keys_boundary_sql(&info->ks, 1);
}

static void print_duration(const char *label, int64_t us)
{
    char d[32];
    if (us < 10000000)
        snprintf(d, sizeof d, "%.1fms", (double)us / 1000.0);
    else
        sl_format_duration(us / 1000, d, sizeof d);
    printf("  %-30s %s\n", label, d);
}

/* The whole job at the pace the job file sets, from the samples: its rows
 * are the estimate's, or the sampled ones when the sample walked it all
 * (whole); with neither, the per-chunk figures alone. */
static void print_estimate(const sl_job *job, const sample *v, size_t nv, int64_t rows_est, int whole)
{
    int64_t *us = sl_calloc(nv, sizeof *us), wal = 0, nwal = 0, rows = 0;
    for (size_t i = 0; i < nv; i++) {
        us[i] = v[i].us;
        rows += v[i].rows;
        if (v[i].wal >= 0) {
            wal += v[i].wal;
            nwal++;
        }
    }
    qsort(us, nv, sizeof *us, cmp_i64);
    int64_t median = percentile(us, nv, 0.5), p90 = percentile(us, nv, 0.9);
    int64_t per_chunk = rows / (int64_t)nv > 0 ? rows / (int64_t)nv : 1;
    int64_t total_rows = rows_est > rows ? rows_est : rows;
    int64_t chunks = (total_rows + per_chunk - 1) / per_chunk;
    int64_t workers = job->workers > 0 ? job->workers : 1;
    int64_t pause = job->line[SL_DIR_PAUSE] ? job->pause_ms : job->chunk_time_ms;
    int64_t total = chunks * (median + pause * 1000) / workers; /* us */
    if (job->max_rate > 0 && total_rows * 1000000 / job->max_rate > total)
        total = total_rows * 1000000 / job->max_rate;
    printf("\nestimate from %zu sampled chunk%s (each rolled back):\n", nv, nv == 1 ? "" : "s");
    print_duration("time per chunk, median:", median);
    print_duration("time per chunk, p90:", p90);
    printf("  %-30s %" PRId64 "\n", "rows per chunk:", per_chunk);
    int known = rows_est >= 0 || whole;
    if (known) {
        printf("  %-30s ~%" PRId64 " (%s)\n", "rows:", total_rows, rows_est >= 0 ? "the estimate above" : "sampled");
        printf("  %-30s ~%" PRId64 "\n", "chunks:", chunks);
        print_duration("total time at the job's pace:", total);
    } else {
        printf("  %-30s unknown (no estimate above), and so are the job's chunks and time\n", "rows:");
    }
    printf("  %-30s %" PRId64 " worker%s, a pause of %" PRId64 "ms after each of a worker's chunks%s\n",
           "pace:", workers, workers == 1 ? "" : "s", pause, job->max_rate > 0 ? ", max-rate" : "");
    if (nwal > 0 && known)
        printf("  %-30s %" PRId64 " bytes (~%" PRId64 " MB for the job)\n", "WAL per chunk:", wal / nwal,
               wal / nwal * chunks / (1024 * 1024));
    else if (nwal > 0)
        printf("  %-30s %" PRId64 " bytes\n", "WAL per chunk:", wal / nwal);
    if (job->chunk_time_ms > 0)
        printf("  note: chunk-time resizes chunks as the job runs; this is at the starting batch\n");
    free(us);
}

int sl_plan_sample(sl_session *sess, const sl_job *job, const sl_table_info *info, int64_t rows, int64_t n)
{
    sampler s;
    sampler_init(&s, sess, job, info);
    sample *v = sl_calloc((size_t)n, sizeof *v);
    size_t nv = 0, ncols = info->ks.ncols;
    int failed = 0;
    printf("\nsample: the first %" PRId64 " chunk%s, each in a transaction that is rolled back:\n", n,
           n == 1 ? "" : "s");
    while ((int64_t)nv < n && !sl_session_stopping(sess)) {
        sl_answer ans;
        const char *edges[2 * SL_MAX_KEY_COLS];
        int found = next_bounds(&s, &ans, edges, &v[nv].rows);
        if (found <= 0) {
            failed = found < 0;
            sl_answer_free(&ans);
            break;
        }
        if (run_one(&s, edges, &v[nv]) != 0) {
            failed = 1;
            sl_answer_free(&ans);
            break;
        }
        char *hi = sl_json_strings((char *const *)(edges + ncols), ncols);
        printf("  chunk %zu: up to %s, %" PRId64 " rows, %" PRId64 " changed, %.1f ms", nv + 1, hi, v[nv].rows,
               v[nv].affected, (double)v[nv].us / 1000.0);
        if (v[nv].wal >= 0)
            printf(", %" PRId64 " bytes of WAL", v[nv].wal);
        printf("\n");
        free(hi);
        for (size_t i = 0; i < ncols; i++) {
            free(s.after[i]);
            s.after[i] = sl_strdup(edges[ncols + i]);
        }
        s.has_after = 1;
        sl_answer_free(&ans);
        nv++;
    }
    if (nv == 0 && !failed)
        printf("  no rows to walk: `up` would finish at once\n");
    if (nv > 0)
        print_estimate(job, v, nv, rows, (int64_t)nv < n && !failed && !sl_session_stopping(sess));
    free(v);
    sampler_free(&s);
    return failed ? -1 : 0;
}
