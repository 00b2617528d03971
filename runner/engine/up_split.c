/* up_split.c: the key ranges an `up` run walks: one after the last chunk, or a split kept in sluice_ranges.
 *
 * With several workers the key is split once, at keys sampled from the
 * table (TABLESAMPLE SYSTEM reads a few hundred random pages, whatever the
 * table's size or the key's type, and the job's `where` is applied so that
 * ranges hold about as many rows to change each). The split is written to
 * sluice_ranges before any of its chunks runs, and every chunk's row in
 * sluice_progress names its range, so a resume, however the last run ended,
 * continues each range after its last committed chunk. Ranges stay as they
 * were first split, whatever the number of workers later. A job that ran
 * with one worker first has its chunks from before the split in range 0
 * (reopen_range_zero). A split found
 * broken (a range missing), or chunks of a split with no split, were edited
 * by hand: refused, as resuming would skip keys. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "up_internal.h"

/* Ranges per worker: a worker done early takes another, so a slow part of
 * the table does not leave the others idle at the end. */
#define RANGES_PER_WORKER 4
/* Pages the sample reads per range it splits into (at least 300). */
#define SAMPLE_PAGES_PER_RANGE 30

static up_range *add_range(up_run *r)
{
    r->ranges = sl_realloc(r->ranges, (r->nranges + 1) * sizeof *r->ranges);
    up_range *kr = &r->ranges[r->nranges++];
    memset(kr, 0, sizeof *kr);
    return kr;
}

/* Key columns from..from+n-1 of a row, into t; 0 if the first is NULL. */
static int read_tuple(const sl_answer *ans, int row, int from, size_t n, up_key *t)
{
    if (!sl_answer_val(ans, 0, row, from))
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *v = sl_answer_val(ans, 0, row, from + (int)i);
        t->v[i] = sl_strdup(v ? v : "");
    }
    return 1;
}

/* The split the job has, with each range's position; start gets where its
 * first range begins (has_start: a key, when chunks ran before the split).
 * 0 (none: no ranges), -1 failed. */
static int read_split(up_run *r, up_key *start, int *has_start)
{
    size_t n = r->info.ks.ncols;
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT s.range_no");
    sl_session_add_key_elems(r->sess, &b, "s.after", n);
    sl_session_add_key_elems(r->sess, &b, "s.until", n);
    sl_session_add_key_elems(r->sess, &b, "p.hi", n);
    sl_buf_adds(&b, ", p.chunk_no FROM sluice_ranges s LEFT JOIN (SELECT DISTINCT ON (range_no) range_no, hi, chunk_no"
                    " FROM " SL_PROGRESS_TABLE " WHERE job = $1 ORDER BY range_no, chunk_no DESC) p"
                    " ON p.range_no = s.range_no WHERE s.job = $1 ORDER BY s.range_no");
    const char *params[] = {r->job->name};
    sl_answer ans;
    int rc = sl_session_exec1(r->sess, b.data, 1, params, &ans);
    sl_buf_free(&b);
    if (rc != 0 || !ans.ok) {
        sl_err_set(&r->err, "cannot read sluice_ranges: %s", ans.error ? ans.error : "connection lost");
        sl_answer_free(&ans);
        return -1;
    }
    for (int row = 0; row < ans.results[0].nrows; row++) {
        up_range *kr = add_range(r);
        kr->range_no = strtoll(sl_answer_val(&ans, 0, row, 0), NULL, 10);
        if (kr->range_no == 1)
            *has_start = read_tuple(&ans, row, 1, n, start);
        kr->has_until = read_tuple(&ans, row, 1 + (int)n, n, &kr->until);
        kr->has_after = read_tuple(&ans, row, 1 + 2 * (int)n, n, &kr->after); /* its last chunk's :hi */
        if (kr->has_after)
            kr->prev_chunk = strtoll(sl_answer_val(&ans, 0, row, 1 + 3 * (int)n), NULL, 10);
        if (!kr->has_after)
            kr->has_after = read_tuple(&ans, row, 1, n, &kr->after); /* not started: its start */
    }
    sl_answer_free(&ans);
    return 0;
}

int64_t sl_up_split_ranges(int64_t workers, int64_t batch, int64_t est)
{
    int64_t want = workers * RANGES_PER_WORKER;
    if (est >= 0 && est / (2 * batch) < want)
        want = est / (2 * batch);
    return want;
}

/* How many ranges to split what is left into, by the estimate of what the
 * walk has left (after the last chunk, up to the walk's end). */
static int64_t ranges_wanted(up_run *r, int64_t *est_out)
{
    sl_key_span left = {r->has_last ? (const char *const *)r->last.v : NULL,
                        r->has_end ? (const char *const *)r->end.v : NULL};
    *est_out = sl_catalog_estimate_spans(r->sess, &r->info.ks, &left, 1);
    return sl_up_split_ranges(r->job->workers, r->pace.batch, *est_out);
}

/* workers N, and yet no split: said, or the job would just run slower. */
static void say_one_range(const up_run *r, const char *why)
{
    sl_info("%s: workers %" PRId64 ", but the key is walked as one range, by one worker: %s", r->job->name,
            r->job->workers, why);
}

/* The table's size in pages, for the sample's percentage: a partitioned
 * table's partitions', which TABLESAMPLE samples each at that percentage. */
static int64_t table_pages(up_run *r)
{
    const char *params[] = {r->info.ks.table};
    sl_answer ans;
    int64_t pages = 0;
    if (sl_session_exec1(r->sess,
                         SL_PG_TABLE_TREE "SELECT coalesce(sum(pg_relation_size(rel)), 0)"
                                          " / current_setting('block_size')::bigint FROM sluice_tree",
                         1, params, &ans) == 0 &&
        ans.ok)
        pages = strtoll(sl_answer_val(&ans, 0, 0, 0) ? sl_answer_val(&ans, 0, 0, 0) : "0", NULL, 10);
    sl_answer_free(&ans);
    return pages;
}

/* The sample: the keys at every 1/want of the sampled rows after the last
 * committed chunk, in key order. */
static char *sample_sql(up_run *r, int64_t want, double pct)
{
    const sl_keyspec *ks = &r->info.ks;
    char *cols = sl_keys_column_list(ks);
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT ");
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, "%s%s::text", i ? ", " : "", ks->cols[i]);
    sl_buf_printf(&b,
                  " FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS sluice_rn, count(*) OVER () AS sluice_n"
                  " FROM %s TABLESAMPLE SYSTEM (%.6f) WHERE ",
                  cols, cols, ks->table, pct);
    for (size_t i = 0; i < ks->ncols; i++)
        sl_buf_printf(&b, "%s%s IS NOT NULL", i ? " AND " : "", ks->cols[i]);
    if (r->has_last) {
        char *after = sl_keys_placeholder_sql(ks, 1);
        sl_buf_printf(&b, ks->ncols > 1 ? " AND (%s) > %s" : " AND %s > %s", cols, after);
        free(after);
    }
    if (r->has_end) { /* the walk ends there */
        char *end = sl_keys_placeholder_sql(ks, 1 + (r->has_last ? (int)ks->ncols : 0));
        sl_buf_printf(&b, ks->ncols > 1 ? " AND (%s) <= %s" : " AND %s <= %s", cols, end);
        free(end);
    }
    if (ks->where)
        sl_buf_printf(&b, " AND (%s)", ks->where);
    sl_buf_printf(&b,
                  ") s WHERE (sluice_rn * %" PRId64 ") / sluice_n <> ((sluice_rn - 1) * %" PRId64 ") / sluice_n"
                  " AND sluice_rn < sluice_n ORDER BY sluice_rn",
                  want, want);
    free(cols);
    return sl_buf_take(&b);
}

static int tuples_equal(const up_key *a, const up_key *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return 0;
    return 1;
}

/* Append the ranges the split keys in ans (one per row) make, after the
 * last committed chunk: (last, k1], (k1, k2], ..., (kn, end). */
static void ranges_from_sample(up_run *r, const sl_answer *ans)
{
    size_t n = r->info.ks.ncols;
    up_range *kr = add_range(r);
    kr->range_no = 1;
    if ((kr->has_after = r->has_last))
        for (size_t i = 0; i < n; i++)
            kr->after.v[i] = sl_strdup(r->last.v[i]);
    kr->prev_chunk = r->has_last ? r->next_chunk_no - 1 : 0; /* the chunk whose :hi that is */
    for (int row = 0; row < ans->results[0].nrows; row++) {
        up_key t = {0};
        read_tuple(ans, row, 0, n, &t);
        up_range *prev = &r->ranges[r->nranges - 1];
        if (prev->has_after && tuples_equal(&prev->after, &t, n)) {
            up_key_free(&t); /* the same key sampled twice: a key that is not unique */
            continue;
        }
        prev->until = t;
        prev->has_until = 1;
        kr = add_range(r);
        kr->range_no = (int64_t)r->nranges;
        kr->has_after = 1;
        for (size_t i = 0; i < n; i++)
            kr->after.v[i] = sl_strdup(t.v[i]);
    }
}

/* A key as "ARRAY[$a, $b]" (parameters from *param on) into b, or NULL. */
static void add_array(sl_buf *b, const up_key *t, int has, size_t n, const char **params, int *param)
{
    if (!has) {
        sl_buf_adds(b, "NULL");
        return;
    }
    sl_buf_adds(b, "ARRAY[");
    for (size_t i = 0; i < n; i++) {
        sl_buf_printf(b, "%s$%d", i ? ", " : "", *param);
        params[(*param)++ - 1] = t->v[i];
    }
    sl_buf_adds(b, "]::text[]");
}

/* Write the ranges to sluice_ranges, all or none. */
static int save_split(up_run *r)
{
    size_t n = r->info.ks.ncols, nq = r->nranges + 2;
    sl_query *q = sl_calloc(nq, sizeof *q);
    char **sql = sl_calloc(r->nranges, sizeof *sql);
    const char **params = sl_calloc(r->nranges * (2 + 2 * n), sizeof *params);
    char(*nos)[24] = sl_calloc(r->nranges, sizeof *nos);
    q[0] = (sl_query){"BEGIN", 0, NULL, 0};
    for (size_t i = 0; i < r->nranges; i++) {
        const up_range *kr = &r->ranges[i];
        const char **p = params + i * (2 + 2 * n);
        int param = 3;
        snprintf(nos[i], sizeof nos[i], "%" PRId64, kr->range_no);
        p[0] = r->job->name;
        p[1] = nos[i];
        sl_buf b = {0};
        sl_buf_adds(&b, "INSERT INTO sluice_ranges (job, range_no, after, until) VALUES ($1, $2, ");
        add_array(&b, &kr->after, kr->has_after, n, p, &param);
        sl_buf_adds(&b, ", ");
        add_array(&b, &kr->until, kr->has_until, n, p, &param);
        sl_buf_addc(&b, ')');
        sql[i] = sl_buf_take(&b);
        q[1 + i] = (sl_query){sql[i], param - 1, p, 0};
    }
    q[nq - 1] = (sl_query){"COMMIT", 0, NULL, 0};
    sl_answer ans;
    int rc = sl_session_exec(r->sess, q, nq, &ans);
    if (rc != 0 || !ans.ok) {
        sl_err_set(&r->err, "%s: cannot record the key split in sluice_ranges: %s", r->job->name,
                   ans.error ? ans.error : "connection lost");
        if (rc == 0 && !ans.conn_lost && ans.failed_index < (int)nq - 1) {
            sl_answer rb;
            if (sl_session_exec1(r->sess, "ROLLBACK", 0, NULL, &rb) == 0)
                sl_answer_free(&rb);
        }
        rc = -1;
    }
    sl_answer_free(&ans);
    for (size_t i = 0; i < r->nranges; i++)
        free(sql[i]);
    free(sql);
    free(params);
    free(nos);
    free(q);
    return rc;
}

/* Split what is left of the key for the job's workers. No ranges when the
 * sample finds nowhere to split (a small table): one range then. */
static int make_split(up_run *r)
{
    int64_t est = -1, want = ranges_wanted(r, &est);
    if (want < 2) {
        char why[160];
        snprintf(why, sizeof why, "about %" PRId64 " rows %s (the estimate), too few for two ranges of two chunks", est,
                 r->has_last ? "left" : "to walk");
        say_one_range(r, why);
        return 0;
    }
    int64_t pages = table_pages(r);
    int64_t sample_pages = want * SAMPLE_PAGES_PER_RANGE > 300 ? want * SAMPLE_PAGES_PER_RANGE : 300;
    double pct = pages > sample_pages ? 100.0 * (double)sample_pages / (double)pages : 100.0;
    char *sql = sample_sql(r, want, pct);
    const char *params[2 * SL_MAX_KEY_COLS];
    int np = 0;
    for (size_t i = 0; r->has_last && i < r->info.ks.ncols; i++)
        params[np++] = r->last.v[i];
    for (size_t i = 0; r->has_end && i < r->info.ks.ncols; i++)
        params[np++] = r->end.v[i];
    sl_query q = {sql, np, params, 0};
    sl_answer ans;
    int rc = up_exec_read(r, r->sess, &q, 1, &ans);
    free(sql);
    if (rc != 0)
        return rc < 0 ? -1 : 0; /* stopped by a signal: the walk stops before its first chunk */
    if (ans.results[0].nrows > 0)
        ranges_from_sample(r, &ans);
    sl_answer_free(&ans);
    if (r->nranges < 2) {
        for (size_t i = 0; i < r->nranges; i++)
            up_range_free(&r->ranges[i]);
        r->nranges = 0;
        say_one_range(r, "the sample of its pages found too few keys to cut it at");
        return 0;
    }
    if (save_split(r) != 0)
        return -1;
    sl_info("%s: split the key into %zu ranges at keys sampled from %.2f%% of %s's pages", r->job->name, r->nranges,
            pct, r->info.ks.table);
    return 0;
}

/* The last range runs to the end of the walk (end fixed), not the table's. */
static void cap_at_end(up_run *r)
{
    for (size_t i = 0; r->has_end && i < r->nranges; i++) {
        up_range *kr = &r->ranges[i];
        if (kr->has_until)
            continue;
        for (size_t c = 0; c < r->info.ks.ncols; c++)
            kr->until.v[c] = sl_strdup(r->end.v[c]);
        kr->has_until = 1;
    }
}

/* A split is written whole (save_split) and lost whole (a failover loses a
 * server's last commits, never some rows of one transaction): ranges 1..n,
 * only the last open-ended. Anything else was changed by hand, and a range
 * missing from it would never be walked: refused, changing nothing. */
static int split_intact(up_run *r)
{
    for (size_t i = 0; i < r->nranges; i++) {
        const up_range *kr = &r->ranges[i];
        int last = i + 1 == r->nranges;
        char why[160];
        if (kr->range_no != (int64_t)i + 1)
            snprintf(why, sizeof why,
                     "range %zu is missing: its keys would never be walked (the next range it holds is %" PRId64 ")",
                     i + 1, kr->range_no);
        else if (last && kr->has_until)
            snprintf(why, sizeof why,
                     "the ranges after range %" PRId64
                     " are missing: their keys would never be walked (it ends at a key; "
                     "only the last range is open-ended)",
                     kr->range_no);
        else if (!last && !kr->has_until)
            snprintf(why, sizeof why,
                     "range %" PRId64 " is open-ended, yet ranges follow it: their keys would be walked twice",
                     kr->range_no);
        else
            continue;
        sl_err_set(&r->err, "%s: the job's key split in " SL_RANGES_TABLE " is not whole: %s", r->job->name, why);
        sl_err_append(&r->err,
                      "hint: were rows of " SL_RANGES_TABLE
                      " deleted or changed by hand? Put them back as they were; or roll the job back with "
                      "`sluice down %s` (it needs only " SL_PROGRESS_TABLE "), then run it again",
                      r->job->name);
        return SL_EREFUSED;
    }
    return 0;
}

/* No split, yet chunks of one in sluice_progress: the walk's position is
 * not its last chunk (the keys between the ranges' chunks may not be done).
 * A failover cannot leave this (the split commits before any of its chunks,
 * and each chunk only while its range is there: sl_lease_fence_sql), so the
 * split was deleted by hand or restored apart: refused, changing nothing. */
static int chunks_without_split(up_run *r)
{
    const char *params[] = {r->job->name};
    sl_answer ans;
    if (sl_session_exec1(r->sess,
                         "SELECT count(DISTINCT range_no) FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND range_no > 0",
                         1, params, &ans) != 0 ||
        !ans.ok) {
        sl_err_set(&r->err, "cannot read " SL_PROGRESS_TABLE ": %s", ans.error ? ans.error : "connection lost");
        sl_answer_free(&ans);
        return -1;
    }
    int64_t ranges = strtoll(sl_answer_val(&ans, 0, 0, 0) ? sl_answer_val(&ans, 0, 0, 0) : "0", NULL, 10);
    sl_answer_free(&ans);
    if (ranges == 0)
        return 0;
    sl_err_set(&r->err,
               "%s: " SL_PROGRESS_TABLE " holds chunks of %" PRId64 " ranges of a key split, but " SL_RANGES_TABLE
               " has no split for the job: which keys between those ranges are done cannot be told, and resuming "
               "after its last chunk would skip them",
               r->job->name, ranges);
    sl_err_append(&r->err,
                  "hint: were the job's rows of " SL_RANGES_TABLE
                  " deleted by hand, or the table restored apart from " SL_PROGRESS_TABLE
                  "? Put them back; or roll the job back with `sluice down %s` (it needs only " SL_PROGRESS_TABLE
                  "), then run it again",
                  r->job->name);
    return SL_EREFUSED;
}

int up_split_kept(up_run *r, sl_session *sess, int64_t range_no)
{
    char no[24];
    snprintf(no, sizeof no, "%" PRId64, range_no);
    const char *params[] = {r->job->name, no};
    sl_answer ans;
    int kept = 1;
    if (sl_session_exec1(sess, "SELECT EXISTS (SELECT 1 FROM " SL_RANGES_TABLE " WHERE job = $1 AND range_no = $2)", 2,
                         params, &ans) == 0 &&
        ans.ok)
        kept = sl_answer_true(sl_answer_val(&ans, 0, 0, 0));
    sl_answer_free(&ans);
    return kept;
}

/* The chunks that ran before the split (one worker, then more) are range 0,
 * from the key's start to where range 1 begins. Its walk was whole when the
 * split was made, but a `down` stopped part-way undoes the newest chunks of
 * each range, its own too: then it is walked again from its last chunk left
 * (from the start with none), up to range 1's start, like the other ranges
 * from theirs. 0, or -1 failed. */
static int reopen_range_zero(up_run *r, const up_key *start)
{
    size_t n = r->info.ks.ncols;
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT chunk_no");
    sl_session_add_key_elems(r->sess, &b, "hi", n);
    sl_buf_adds(&b, " FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND range_no = 0 ORDER BY chunk_no DESC LIMIT 1");
    const char *params[] = {r->job->name};
    sl_answer ans;
    int rc = sl_session_exec1(r->sess, b.data, 1, params, &ans);
    sl_buf_free(&b);
    if (rc != 0 || !ans.ok) {
        sl_err_set(&r->err, "cannot read " SL_PROGRESS_TABLE ": %s", ans.error ? ans.error : "connection lost");
        sl_answer_free(&ans);
        return -1;
    }
    up_key last = {0};
    int has_last = ans.results[0].nrows > 0 && read_tuple(&ans, 0, 1, n, &last);
    if (has_last && tuples_equal(&last, start, n)) {
        up_key_free(&last); /* whole */
        sl_answer_free(&ans);
        return 0;
    }
    up_range *kr = add_range(r);
    kr->range_no = 0;
    kr->has_after = has_last;
    kr->after = last;
    kr->prev_chunk = has_last ? strtoll(sl_answer_val(&ans, 0, 0, 0), NULL, 10) : 0;
    kr->has_until = 1;
    for (size_t i = 0; i < n; i++)
        kr->until.v[i] = sl_strdup(start->v[i]);
    sl_answer_free(&ans);
    return 0;
}

static int load_ranges(up_run *r)
{
    int pg = r->sess->dialect == SL_DIALECT_PG;
    up_key start = {0};
    int has_start = 0;
    if (pg && read_split(r, &start, &has_start) != 0) {
        up_key_free(&start);
        return -1;
    }
    if (r->nranges > 0) {
        int rc = split_intact(r);
        if (rc == 0 && has_start)
            rc = reopen_range_zero(r, &start);
        up_key_free(&start);
        return rc;
    }
    up_key_free(&start);
    int rc = pg ? chunks_without_split(r) : 0;
    if (rc != 0)
        return rc;
    if (pg && r->job->workers > 1 && make_split(r) != 0)
        return -1;
    if (r->nranges > 0)
        return 0;
    up_range *kr = add_range(r); /* the whole key, after the last chunk */
    if ((kr->has_after = r->has_last))
        for (size_t i = 0; i < r->info.ks.ncols; i++)
            kr->after.v[i] = sl_strdup(r->last.v[i]);
    kr->prev_chunk = r->has_last ? r->next_chunk_no - 1 : 0;
    return 0;
}

int up_load_ranges(up_run *r)
{
    int rc = load_ranges(r);
    if (rc == 0)
        cap_at_end(r);
    return rc;
}
