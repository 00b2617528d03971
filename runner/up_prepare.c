/* up_prepare.c: what an `up` run does before its first chunk: the job's lock, requires, reconcile, resume position. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "up_internal.h"

/* One runner per job and database: wait up to 5 s for a just-killed
 * runner's backend to let go before refusing. */
int sl_up_take_lock(up_run *r)
{
    int rc = sl_session_lock_job(r->sess, r->job->name, 5000, &r->err);
    r->locked = rc == 0;
    return rc;
}

int sl_up_check_requires(up_run *r)
{
    if (!r->job->requires)
        return 0;
    sl_answer ans;
    if (sl_session_exec1(r->sess, r->job->requires, 0, NULL, &ans) != 0)
        return -1;
    int rc = 0;
    const char *v = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL;
    if (!ans.ok) {
        sl_err_set(&r->err, "%s:%d: requires query failed: %s", r->job->path, r->job->line[SL_DIR_REQUIRES], ans.error);
        rc = -2;
    } else if (!sl_answer_true(v)) {
        sl_err_set(&r->err, "%s:%d: refusing to start: requires returned %s, not true: %s", r->job->path,
                   r->job->line[SL_DIR_REQUIRES], v ? v : "no row or NULL", r->job->requires);
        rc = -2;
    }
    sl_answer_free(&ans);
    return rc;
}

/* Run a query about the job's rows in sluice_progress ($1 = the job):
 * 0 with an ok answer in ans, else -1 with r->err set. */
static int read_progress(up_run *r, const char *sql, sl_answer *ans)
{
    const char *params[] = {r->job->name};
    if (sl_session_exec1(r->sess, sql, 1, params, ans) == 0 && ans->ok)
        return 0;
    sl_err_set(&r->err, "cannot read %s: %s", SL_PROGRESS_TABLE, ans->error ? ans->error : "connection lost");
    sl_answer_free(ans);
    return -1;
}

/* Copy the rows of sluice_progress picked by `which` (chunk numbers, SQL)
 * into the checkpoint file. */
static int copy_chunks(up_run *r, const char *which)
{
    sl_answer ans;
    int lite = r->sess->dialect == SL_DIALECT_SQLITE; /* SQLite keeps the keys as JSON text, times as ISO text */
    char *sql = sl_asprintf("SELECT chunk_no, %s, %s, rows, duration_ms, attempts, checksum, %s, "
                            "CASE WHEN skipped THEN 'true' ELSE 'false' END "
                            "FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND (%s) ORDER BY chunk_no",
                            lite ? "lo" : "array_to_json(lo)::text", lite ? "hi" : "array_to_json(hi)::text",
                            lite ? "CAST((julianday(committed_at) - 2440587.5) * 86400000 AS INTEGER)"
                                 : "(extract(epoch FROM committed_at) * 1000)::bigint",
                            which);
    int qrc = read_progress(r, sql, &ans);
    free(sql);
    if (qrc != 0)
        return -1;
    int rc = 0;
    for (int row = 0; row < ans.results[0].nrows && rc == 0; row++) {
        sl_ckpt_chunk c = {0};
        c.chunk_no = strtoll(sl_answer_val(&ans, 0, row, 0), NULL, 10);
        c.lo = sl_answer_val(&ans, 0, row, 1);
        c.hi = sl_answer_val(&ans, 0, row, 2);
        const char *skipped = sl_answer_val(&ans, 0, row, 8);
        c.skipped = skipped && strcmp(skipped, "true") == 0;
        if (c.skipped)
            c.error = "set aside by on-error skip (recovered from " SL_PROGRESS_TABLE ")";
        c.rows = strtoll(sl_answer_val(&ans, 0, row, 3), NULL, 10);
        c.affected = -1; /* only the runner that committed it knew */
        const char *d = sl_answer_val(&ans, 0, row, 4);
        c.duration_ms = d ? strtoll(d, NULL, 10) : 0;
        c.attempts = strtoll(sl_answer_val(&ans, 0, row, 5), NULL, 10);
        c.committed_at_ms = strtoll(sl_answer_val(&ans, 0, row, 7), NULL, 10);
        rc = sl_ckpt_commit_chunk(r->ckpt, 0, &c, &r->err);
        if (rc == 0)
            sl_info("%s: chunk %" PRId64 " had committed before the checkpoint was written; recorded it now",
                    r->job->name, c.chunk_no);
    }
    sl_answer_free(&ans);
    return rc;
}

/* The highest chunk number sluice_progress has for the job, 0 if none. */
static int db_max_chunk(up_run *r, int64_t *db_max)
{
    sl_answer ans;
    if (read_progress(r, "SELECT coalesce(max(chunk_no), 0) FROM " SL_PROGRESS_TABLE " WHERE job = $1", &ans) != 0)
        return -1;
    *db_max = strtoll(sl_answer_val(&ans, 0, 0, 0), NULL, 10);
    sl_answer_free(&ans);
    return 0;
}

/* Copy chunks committed in the database but missing from the checkpoint file
 * (a kill between the two commits). They are numbered above the file's
 * highest chunk or fill a gap below it: with workers, a chunk sent earlier
 * may commit after later ones, and a number whose chunk never committed
 * stays a gap for good. */
int sl_up_reconcile(up_run *r)
{
    sl_ckpt_job cj;
    if (sl_ckpt_get_job(r->ckpt, &cj, &r->err) != 0)
        return -1;
    sl_state state = cj.state;
    sl_ckpt_job_free(&cj);
    int64_t have = 0, *gaps = NULL, db_max = 0;
    size_t ngaps = 0;
    if (sl_ckpt_chunk_gaps(r->ckpt, &have, &gaps, &ngaps, &r->err) != 0)
        return -1;
    int rc = db_max_chunk(r, &db_max);
    /* undo.c hook: a `down` killed between its commit (the chunk's row left
     * sluice_progress) and its checkpoint write leaves the file a chunk
     * ahead: forget what the database no longer has. */
    if (rc == 0 && state == SL_STATE_ROLLING_BACK && db_max < have) {
        have = db_max;
        rc = sl_ckpt_forget_after(r->ckpt, db_max, &r->err);
    }
    if (rc == 0 && db_max < have) {
        sl_err_set(&r->err, "checkpoint %s records chunks up to %" PRId64 " but this database's %s only up to %" PRId64,
                   sl_ckpt_file(r->ckpt), have, SL_PROGRESS_TABLE, db_max);
        sl_err_append(&r->err,
                      "hint: the checkpoint belongs to another database, or %s was edited; use another "
                      "--checkpoints directory for this database",
                      SL_PROGRESS_TABLE);
        rc = -2;
    }
    /* the numbers in the gaps, a thousand per query */
    for (size_t i = 0; rc == 0 && i < ngaps; i += 1000) {
        sl_buf in = {0};
        sl_buf_adds(&in, "chunk_no IN (");
        for (size_t j = i; j < ngaps && j < i + 1000; j++)
            sl_buf_printf(&in, "%s%" PRId64, j > i ? ", " : "", gaps[j]);
        sl_buf_addc(&in, ')');
        rc = copy_chunks(r, in.data);
        sl_buf_free(&in);
    }
    if (rc == 0 && db_max > have) {
        char *above = sl_asprintf("chunk_no > %" PRId64, have);
        rc = copy_chunks(r, above);
        free(above);
    }
    free(gaps);
    return rc;
}

/* Load the last committed :hi from sluice_progress (exact text per column). */
int sl_up_load_position(up_run *r)
{
    size_t n = r->info.ks.ncols;
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT chunk_no, checksum");
    sl_session_add_key_elems(r->sess, &b, "hi", n);
    sl_buf_adds(&b, ", (SELECT coalesce(sum(rows), 0) FROM " SL_PROGRESS_TABLE
                    " WHERE job = $1), (SELECT count(*) FROM " SL_PROGRESS_TABLE
                    " WHERE job = $1) FROM " SL_PROGRESS_TABLE " WHERE job = $1 ORDER BY chunk_no DESC LIMIT 1");
    sl_answer ans;
    int rc = read_progress(r, b.data, &ans);
    sl_buf_free(&b);
    if (rc != 0)
        return -1;
    r->has_last = ans.results[0].nrows > 0;
    r->chunks_done = 0;
    r->next_chunk_no = 1;
    r->rows_done = 0;
    tuple_free(&r->last);
    if (r->has_last) {
        r->next_chunk_no = strtoll(sl_answer_val(&ans, 0, 0, 0), NULL, 10) + 1;
        r->chunks_done = strtoll(sl_answer_val(&ans, 0, 0, (int)(3 + n)), NULL, 10);
        for (size_t i = 0; i < n; i++) {
            const char *v = sl_answer_val(&ans, 0, 0, (int)(2 + i));
            if (!v) {
                sl_err_set(&r->err, "%s holds %zu key columns for job %s, the job's key has %zu: key changed?",
                           SL_PROGRESS_TABLE, i, r->job->name, n);
                sl_answer_free(&ans);
                return -2;
            }
            r->last.v[i] = sl_strdup(v);
        }
        r->rows_done = strtoll(sl_answer_val(&ans, 0, 0, (int)(2 + n)), NULL, 10);
        const char *sum = sl_answer_val(&ans, 0, 0, 1);
        if (sum && strcmp(sum, r->job->checksum) != 0 && !r->opts->force) {
            sl_err_set(&r->err, "%s was changed after its first chunk committed (checksum %s, now %s)", r->job->path,
                       sum, r->job->checksum);
            sl_err_append(&r->err, "hint: put the file back as it was, or resume with the new text using --force");
            sl_answer_free(&ans);
            return -2;
        }
    }
    sl_answer_free(&ans);
    return 0;
}
