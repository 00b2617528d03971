/* run.c: one run of a job: its lock, its state in the database (read top to bottom below), reconnects; its row and
 * identity are in run_row.c, its journal in run_journal.c. */
#include "sluice/engine/run.h"
#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/services/metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run_internal.h"

/* ---- the lock ---- */

/* SQLite refused the job's lock: name its holder as the lease's refusal
 * does, from what it wrote in sluice_jobs when it took the lock. */
static void name_lite_holder(sl_run *run)
{
    const char *params[] = {run->job->name};
    sl_answer ans;
    if (sl_session_exec1(run->sess, "SELECT runner_desc FROM " SL_JOBS_TABLE " WHERE job = $1", 1, params, &ans) == 0 &&
        ans.ok && ans.nresults > 0 && ans.results[0].nrows > 0 && sl_answer_val(&ans, 0, 0, 0)) {
        const char *desc = sl_answer_val(&ans, 0, 0, 0);
        sl_runner_refusal(run->job->name, desc, strcmp(desc, sl_runner_self()->desc) == 0, -1, &run->err);
    }
    sl_answer_free(&ans);
}

static int take_lock(sl_run *run)
{
    if (!run_is_lite(run->sess)) {
        int rc = sl_lease_take(&run->lease, run->sess, run->job->name, &run->err);
        if (rc == 0) {
            run->locked = 1;
            sl_lease_start(&run->lease, run->sess);
        }
        return rc;
    }
    int rc = sl_session_lock_job(run->sess, run->job->name, 5000, &run->err);
    run->locked = rc == 0;
    if (rc == SL_EREFUSED)
        name_lite_holder(run);
    if (rc != 0)
        return rc;
    /* who holds it, for status (the lock file itself is the lock) */
    const char *params[] = {run->job->name, sl_runner_self()->desc};
    sl_query q[] = {
        {"INSERT OR IGNORE INTO " SL_JOBS_TABLE " (job, state) VALUES ($1, 'pending')", 1, params, 0},
        {"UPDATE " SL_JOBS_TABLE " SET runner_desc = $2 WHERE job = $1", 2, params, 0},
    };
    sl_answer ans;
    if (sl_session_exec(run->sess, q, 2, &ans) != 0 || !ans.ok) {
        sl_err_set(&run->err, "cannot record the job in %s: %s", SL_JOBS_TABLE,
                   ans.error ? ans.error : "not connected");
        rc = -1;
    }
    sl_answer_free(&ans);
    return rc;
}

static void release_lock(sl_run *run)
{
    if (!run->locked)
        return;
    if (run_is_lite(run->sess))
        sl_session_unlock_job(run->sess, run->job->name);
    else
        sl_lease_release(&run->lease, run->sess);
    run->locked = 0;
}

int sl_run_lost(const sl_run *run)
{
    return !run_is_lite(run->sess) && sl_lease_lost(&run->lease);
}

void sl_run_fenced(sl_run *run)
{
    run->lease.lost = 1;
    snprintf(run->lease.why, sizeof run->lease.why,
             "%s: another runner took the job over (the lease lapsed while this runner was held up): stopping; "
             "the chunk in flight rolled back",
             run->job->name);
}

const char *sl_run_fence_id(const sl_run *run)
{
    return run_is_lite(run->sess) ? NULL : run->lease.id;
}

/* ---- opening, beginning, finishing ---- */

int sl_run_open(sl_run *run, sl_session *sess, const sl_run_opts *opts, sl_job *job, sl_run_kind kind, int after_loss)
{
    memset(run, 0, sizeof *run);
    run->after_loss = after_loss;
    run->sess = sess;
    run->opts = opts;
    run->job = job;
    run->kind = kind;
    run->ckpt_fd = -1;
    /* a checkpoint file of another database is refused before anything is written */
    int rc = sl_run_check_journal(sess, opts, job->name, &run->err);
    if (rc != 0)
        return rc;
    /* A journal it could not create would fail the run after the database
     * changed (sluice's tables made, the job's row written): found now. */
    char *path = sl_ckpt_path(opts->ckpt_dir, job->name);
    if (access(path, F_OK) != 0 && sl_ckpt_can_create(path, &run->err) != 0)
        rc = SL_EREFUSED;
    free(path);
    if (rc != 0)
        return rc;
    rc = sl_schema_ensure(sess, &run->db, &run->err);
    if (rc != 0)
        return rc;
    sl_session_writer(sess); /* it took writes: from now on a server that stops taking them is a failover */
    rc = take_lock(run);
    if (rc != 0)
        return rc;
    if (sl_run_read_row(sess, job->name, &run->row, &run->err) != 0)
        return -1;
    return run_open_journal(run);
}

/* ARRAY[$a, $b]::text[] or json_array($a, $b) from parameter first on, or NULL. */
static void add_tuple(sl_buf *b, const sl_session *sess, size_t n, int first)
{
    if (n == 0) {
        sl_buf_adds(b, "NULL");
        return;
    }
    sl_buf_adds(b, run_is_lite(sess) ? "json_array(" : "ARRAY[");
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(b, run_is_lite(sess) ? "%sCAST($%zu AS TEXT)" : "%s$%zu", i ? ", " : "", first + i);
    sl_buf_adds(b, run_is_lite(sess) ? ")" : "]::text[]");
}

/* The parameter that fences a write to the job's row, after the n others:
 * PostgreSQL writes only while the lease is this runner's; SQLite's lock is
 * the kernel's and needs none. The number of parameters. */
static int add_fence(sl_buf *b, const sl_run *run, const char **params, int n)
{
    if (run_is_lite(run->sess))
        return n;
    sl_buf_printf(b, " AND runner = $%d", n + 1);
    params[n] = sl_run_fence_id(run);
    return n + 1;
}

/* Run an UPDATE of the job's row (with its other queries, one transaction);
 * 0 when the row was updated, -1 when not (a lost lease: err says so). */
static int write_row(sl_run *run, const sl_query *q, size_t n, size_t update_i)
{
    sl_answer ans;
    int rc = sl_session_exec(run->sess, q, n, &ans);
    if (rc != 0 || !ans.ok) {
        sl_err_set(&run->err, "%s: cannot record the job's state in %s: %s", run->job->name, SL_JOBS_TABLE,
                   ans.error ? ans.error : "not connected");
        if (rc == 0 && !ans.conn_lost && n > 1 && ans.failed_index >= 0 && ans.failed_index < (int)n - 1) {
            sl_answer rb;
            if (sl_session_exec1(run->sess, "ROLLBACK", 0, NULL, &rb) == 0)
                sl_answer_free(&rb);
        }
        sl_answer_free(&ans);
        return -1;
    }
    int updated = ans.results[update_i].cmd_tuples != 0;
    sl_answer_free(&ans);
    if (!updated)
        sl_err_set(&run->err, "%s: lost the job's lease to another runner; stopping", run->job->name);
    return updated ? 0 : -1;
}

/* up: running; with no chunk committed yet, also what it walks and where
 * the walk ends, fixed now (and a split made for another end forgotten). */
static int begin_up(sl_run *run, const sl_run_identity *id, char *const *walk_end, size_t ncols)
{
    int fresh = run->row.chunks == 0, lite = run_is_lite(run->sess);
    const char *params[10 + SL_MAX_KEY_COLS] = {
        run->job->name, run->job->checksum, id->table, id->key, id->where, id->undo, run->job->follow ? "1" : "0"};
    int np = 7;
    for (size_t i = 0; walk_end && i < ncols; i++)
        params[np++] = walk_end[i];
    sl_buf b = {0};
    sl_buf_printf(&b,
                  "UPDATE " SL_JOBS_TABLE " SET state = 'running', stamped = %s, error = NULL, checksum = $2,"
                  " table_name = $3, key_cols = $4, where_sql = $5, undo = $6, follow = ($7 = 1), walk_end = ",
                  lite ? "0" : "false");
    add_tuple(&b, run->sess, walk_end ? ncols : 0, 8);
    sl_buf_printf(&b, ", started_at = %s, updated_at = CURRENT_TIMESTAMP WHERE job = $1",
                  fresh ? "CURRENT_TIMESTAMP" : "coalesce(started_at, CURRENT_TIMESTAMP)");
    np = add_fence(&b, run, params, np);
    const char *del[] = {run->job->name};
    size_t n = 0;
    sl_query q[4];
    q[n++] = (sl_query){sl_session_begin_sql(run->sess), 0, NULL, 0};
    q[n++] = (sl_query){b.data, np, params, 0};
    if (fresh && !lite)
        q[n++] = (sl_query){"DELETE FROM " SL_RANGES_TABLE " WHERE job = $1", 1, del, 0};
    q[n++] = (sl_query){"COMMIT", 0, NULL, 0};
    int rc = write_row(run, q, n, 1);
    sl_buf_free(&b);
    return rc;
}

static int set_state(sl_run *run, sl_state state, const char *error)
{
    const char *params[4] = {run->job->name, sl_state_name(state), error};
    sl_buf b = {0};
    sl_buf_adds(&b,
                "UPDATE " SL_JOBS_TABLE " SET state = $2, error = $3, updated_at = CURRENT_TIMESTAMP WHERE job = $1");
    int np = add_fence(&b, run, params, 3);
    sl_query q = {b.data, np, params, 0};
    int rc = write_row(run, &q, 1, 0);
    sl_buf_free(&b);
    return rc;
}

/* What a run still marked running did (its runner was killed, or runs it
 * now), from what the database has: an up's chunks are the sluice_progress
 * rows committed while it ran (NEXT: after it began, before the job's next
 * run began), and it got as far as the last of them. A down deletes the
 * rows of the chunks it undoes and writes nothing of its own per chunk, so
 * what it undid and when it stopped are not known: -1 (SL_RUN_UNKNOWN), no
 * end. The runs of the job still marked running died with their runner
 * (this one holds the job's lock now): interrupted, with those. */
#define OPEN_ROWS(NEXT) \
    "CASE WHEN kind = 'up' THEN (SELECT coalesce(sum(p.rows), 0) FROM " SL_PROGRESS_TABLE " p" NEXT ") ELSE -1 END"
#define OPEN_CHUNKS(NEXT) \
    "CASE WHEN kind = 'up' THEN (SELECT count(*) FROM " SL_PROGRESS_TABLE " p" NEXT ") ELSE -1 END"
#define OPEN_END(NEXT) \
    "CASE WHEN kind = 'up' THEN (SELECT max(p.committed_at) FROM " SL_PROGRESS_TABLE " p" NEXT ") END"
#define CLOSE_KILLED_SQL(NEXT)                                                                                 \
    "UPDATE " SL_RUNS_TABLE " SET outcome = 'interrupted', rows = " OPEN_ROWS(NEXT) ", chunks = " OPEN_CHUNKS( \
        NEXT) ", ended_at = " OPEN_END(NEXT) " WHERE job = $1 AND outcome = 'running'"
#define KILLED_SPAN(NONE)                                                                                            \
    " WHERE p.job = " SL_RUNS_TABLE ".job AND p.committed_at >= " SL_RUNS_TABLE ".started_at"                        \
    " AND p.committed_at < coalesce((SELECT min(n.started_at) FROM " SL_RUNS_TABLE " n WHERE n.job = " SL_RUNS_TABLE \
    ".job AND n.started_at > " SL_RUNS_TABLE ".started_at), " NONE ")"

/* The run's row in sluice_runs, for `history` wherever it is asked: a run
 * begun ("running"), or (ended) one whole, a stamp; the job's killed runs
 * closed first. Not there (tables an older sluice made, and a role that may
 * not add one): no row, in silence. */
static void record_run(sl_run *run, const char *kind, const char *outcome, int ended)
{
    const char *params[] = {run->job->name, kind, outcome, sl_runner_self()->desc};
    sl_answer ans;
    int rc = sl_session_exec1(run->sess,
                              run_is_lite(run->sess) ? CLOSE_KILLED_SQL(KILLED_SPAN("'9999'"))
                                                     : CLOSE_KILLED_SQL(KILLED_SPAN("'infinity'::timestamptz")),
                              1, params, &ans);
    sl_answer_free(&ans);
    if (rc != 0)
        return; /* not connected */
    const char *sql = run_is_lite(run->sess)
                          ? (ended ? "INSERT INTO " SL_RUNS_TABLE " (job, kind, outcome, runner, ended_at)"
                                     " VALUES ($1, $2, $3, $4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
                                     " RETURNING CAST(id AS TEXT)"
                                   : "INSERT INTO " SL_RUNS_TABLE " (job, kind, outcome, runner)"
                                     " VALUES ($1, $2, $3, $4) RETURNING CAST(id AS TEXT)")
                          : (ended ? "INSERT INTO " SL_RUNS_TABLE " (job, kind, outcome, runner, ended_at)"
                                     " VALUES ($1, $2, $3, $4, now()) RETURNING id::text"
                                   : "INSERT INTO " SL_RUNS_TABLE " (job, kind, outcome, runner)"
                                     " VALUES ($1, $2, $3, $4) RETURNING id::text");
    if (sl_session_exec1(run->sess, sql, 4, params, &ans) == 0 && ans.ok && !ended)
        run->db_run = sl_strdup_or_null(sl_answer_val(&ans, 0, 0, 0));
    sl_answer_free(&ans);
}

/* Close the run's row: its outcome, and the rows and chunks the journal
 * counted for it. */
static void close_run_row(sl_run *run, const char *outcome, const char *error)
{
    if (!run->db_run || !sl_session_connected(run->sess))
        return;
    int64_t rows = 0, chunks = 0;
    if (run->ckpt)
        (void)sl_ckpt_run_totals(run->ckpt, run->run_id, &rows, &chunks);
    char r[24], c[24];
    snprintf(r, sizeof r, "%" PRId64, rows);
    snprintf(c, sizeof c, "%" PRId64, chunks);
    const char *params[] = {run->db_run, outcome, r, c, error};
    sl_answer ans;
    if (sl_session_exec1(run->sess,
                         run_is_lite(run->sess)
                             ? "UPDATE " SL_RUNS_TABLE " SET outcome = $2, rows = $3, chunks = $4, error = $5,"
                               " ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = $1"
                             : "UPDATE " SL_RUNS_TABLE " SET outcome = $2, rows = $3::bigint, chunks = $4::bigint,"
                               " error = $5, ended_at = now() WHERE id = $1::bigint",
                         5, params, &ans) != 0 ||
        !ans.ok)
        sl_warn("%s: could not record how the run ended in %s (history shows it as interrupted): %s", run->job->name,
                SL_RUNS_TABLE, ans.error ? ans.error : "not connected");
    sl_answer_free(&ans);
    free(run->db_run);
    run->db_run = NULL;
}

/* Every run, for history; one still marked running with what it did so far
 * and how far it got (used when it turns out killed). */
#define PG_NEXT          KILLED_SPAN("'infinity'::timestamptz")
#define LITE_NEXT        KILLED_SPAN("'9999'")
#define PG_OPEN_ROWS     "CASE WHEN outcome = 'running' THEN " OPEN_ROWS(PG_NEXT) " ELSE rows END"
#define PG_OPEN_CHUNKS   "CASE WHEN outcome = 'running' THEN " OPEN_CHUNKS(PG_NEXT) " ELSE chunks END"
#define PG_OPEN_END      "CASE WHEN outcome = 'running' THEN " OPEN_END(PG_NEXT) " END"
#define LITE_OPEN_ROWS   "CASE WHEN outcome = 'running' THEN " OPEN_ROWS(LITE_NEXT) " ELSE rows END"
#define LITE_OPEN_CHUNKS "CASE WHEN outcome = 'running' THEN " OPEN_CHUNKS(LITE_NEXT) " ELSE chunks END"
#define LITE_OPEN_END_MS LITE_MS("CASE WHEN outcome = 'running' THEN " OPEN_END(LITE_NEXT) " END")
#define LITE_STARTED_MS  LITE_MS("started_at")
#define LITE_ENDED_MS    LITE_MS("ended_at")
static const char lite_history_sql[] =
    "SELECT job, kind, outcome, " LITE_STARTED_MS ", " LITE_ENDED_MS ", " LITE_OPEN_ROWS ", " LITE_OPEN_CHUNKS
    ", error, " LITE_OPEN_END_MS " FROM " SL_RUNS_TABLE " ORDER BY id";
static const char pg_history_sql[] =
    "SELECT job, kind, outcome, (extract(epoch FROM started_at) * 1000)::bigint,"
    " (extract(epoch FROM ended_at) * 1000)::bigint, " PG_OPEN_ROWS ", " PG_OPEN_CHUNKS
    ", error, (extract(epoch FROM " PG_OPEN_END ") * 1000)::bigint FROM " SL_RUNS_TABLE " ORDER BY id";

int sl_run_history(sl_session *sess, sl_ckpt_run **runs, size_t *n, sl_err *err)
{
    *runs = NULL;
    *n = 0;
    const char *sql = run_is_lite(sess) ? lite_history_sql : pg_history_sql;
    sl_answer ans;
    if (sl_session_exec1(sess, sql, 0, NULL, &ans) != 0 || !ans.ok) {
        int missing = ans.ok == 0 && (strcmp(ans.sqlstate, "42P01") == 0 ||
                                      (run_is_lite(sess) && ans.error && strstr(ans.error, "no such table")));
        if (!missing)
            sl_err_set(err, "cannot read %s on %s: %s", SL_RUNS_TABLE, sl_session_display(sess),
                       ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return missing ? 0 : -1;
    }
    int nrows = ans.results[0].nrows;
    *runs = sl_calloc((size_t)nrows + 1, sizeof **runs);
    int64_t *open_end = sl_calloc((size_t)nrows + 1, sizeof *open_end);
    for (int i = 0; i < nrows; i++) {
        sl_ckpt_run *r = &(*runs)[i];
        r->id = i + 1;
        r->job = sl_strdup(sl_answer_val(&ans, 0, i, 0));
        r->kind = sl_strdup(sl_answer_val(&ans, 0, i, 1));
        r->outcome = sl_strdup(sl_answer_val(&ans, 0, i, 2));
        r->started_at_ms = run_to_i64(sl_answer_val(&ans, 0, i, 3));
        r->ended_at_ms = run_to_i64(sl_answer_val(&ans, 0, i, 4));
        r->rows = run_to_i64(sl_answer_val(&ans, 0, i, 5));
        r->chunks = run_to_i64(sl_answer_val(&ans, 0, i, 6));
        r->error = sl_strdup_or_null(sl_answer_val(&ans, 0, i, 7));
        open_end[i] = run_to_i64(sl_answer_val(&ans, 0, i, 8));
    }
    *n = (size_t)nrows;
    sl_answer_free(&ans);
    /* a run still marked running is running only if it is its job's newest and a live runner holds the job;
     * else its runner was killed, and the job's next run has not begun to close it */
    for (size_t i = 0; i < *n; i++) {
        sl_ckpt_run *r = &(*runs)[i];
        if (strcmp(r->outcome, "running") != 0)
            continue;
        int newest = 1;
        for (size_t j = i + 1; j < *n && newest; j++)
            newest = strcmp((*runs)[j].job, r->job) != 0;
        sl_job_row row;
        sl_err ignored = {{0}};
        int live = newest && sl_run_read_row(sess, r->job, &row, &ignored) == 0 && row.runner != NULL;
        if (newest)
            sl_job_row_free(&row);
        if (!live) {
            free(r->outcome);
            r->outcome = sl_strdup("interrupted");
            r->ended_at_ms = open_end[i]; /* as the job's next run will record it */
        }
    }
    free(open_end);
    return 0;
}

int sl_run_begin(sl_run *run, const sl_run_identity *id, char *const *walk_end, size_t ncols)
{
    int up = run->kind == SL_RUN_UP;
    int rc = up ? begin_up(run, id, walk_end, ncols) : set_state(run, SL_STATE_ROLLING_BACK, NULL);
    if (rc != 0)
        return -1;
    run->row.state = up ? SL_STATE_RUNNING : SL_STATE_ROLLING_BACK;
    record_run(run, up ? "up" : "down", "running", 0);
    return sl_ckpt_begin_run(run->ckpt, up ? "up" : "down", run->row.state, up ? run->job->checksum : NULL,
                             sl_session_display(run->sess), &run->run_id, &run->err);
}

/* A second signal aborts the chunk in flight by dropping its connection
 * (session.c), the run's own among them: connected again for a moment, so
 * that the database records the stop as it does after one signal, not a
 * run still running. At most 3 s: whoever signalled twice wants out. */
static void reconnect_after_abort(sl_run *run, int code)
{
    sl_session *sess = run->sess;
    if (code != SL_EXIT_STOPPED || run_is_lite(sess) || sl_session_connected(sess) || sl_run_lost(run))
        return;
    int64_t was = sess->connect_timeout_ms;
    sess->connect_timeout_ms = was < 3000 ? was : 3000;
    sl_err err;
    if (sl_session_connect(sess, &err) != 0)
        sl_warn("%s: cannot record in %s that the run stopped (the next run does): %s", run->job->name, SL_JOBS_TABLE,
                err.msg);
    sess->connect_timeout_ms = was;
}

int sl_run_finish(sl_run *run, int code)
{
    int up = run->kind == SL_RUN_UP;
    sl_state state = up ? (code == SL_EXIT_OK        ? SL_STATE_DONE
                           : code == SL_EXIT_STOPPED ? SL_STATE_STOPPED
                                                     : SL_STATE_FAILED)
                        : (code == SL_EXIT_OK ? SL_STATE_ROLLED_BACK : SL_STATE_ROLLING_BACK);
    const char *outcome = code == SL_EXIT_OK ? "done" : code == SL_EXIT_STOPPED ? "stopped" : "failed";
    const char *error = code == SL_EXIT_FAILED ? run->err.msg : NULL;
    sl_err saved = run->err;
    reconnect_after_abort(run, code);
    sl_session_set_wait_commit(run->sess, 1); /* SQLite: the state waits, and so every chunk before it */
    /* the database first: it decides what runs next (not once another runner has the job) */
    if (!sl_run_lost(run) && sl_session_connected(run->sess) && set_state(run, state, error) != 0) {
        sl_error("%s", run->err.msg);
        if (code == SL_EXIT_OK)
            code = SL_EXIT_FAILED;
    }
    run->err = saved;
    sl_err ferr;
    if (run->ckpt &&
        sl_ckpt_finish_run_as(run->ckpt, run->run_id, state, up ? sl_state_name(state) : outcome, error, &ferr) != 0) {
        if (code != SL_EXIT_FAILED || strcmp(ferr.msg, saved.msg) != 0) /* a full disk: said once, as the failure */
            sl_error("%s", ferr.msg);
        if (code == SL_EXIT_OK)
            code = SL_EXIT_FAILED;
    }
    close_run_row(run, up ? sl_state_name(state) : outcome, error);
    return code;
}

int64_t sl_run_lost_retries(const sl_job *job)
{
    return job->retries > SL_LOST_RETRIES_MIN ? job->retries : SL_LOST_RETRIES_MIN;
}

int sl_run_again(sl_run *run, sl_session *sess, int *code, int reruns_left, const char *again, sl_err *err)
{
    if (*code != SL_EXIT_FAILED || !run->lost_commits || reruns_left <= 0 || sl_session_stopping(sess))
        return 0;
    sl_log_event(SL_LOG_WARN, "rerun", json_pack("{so}", "error", sl_json_str(err->msg)), "%s; %s", err->msg, again);
    int rc = sl_session_connected(sess) ? 0 : sl_session_reconnect(sess, run->job->name, err);
    if (rc != 0)
        *code = rc == SL_STOPPED ? SL_EXIT_STOPPED : SL_EXIT_FAILED;
    return rc == 0;
}

int sl_run_reconnect(sl_run *run, sl_session *sess)
{
    int rc = sl_session_reconnect(sess, run->job->name, &run->err);
    if (rc != 0)
        return rc;
    /* A worker's too: its chunk may have been ended by the server while this
     * runner was held up, and a successor may hold the job now; a chunk
     * number it committed is not this runner's to record. */
    if (!run_is_lite(sess)) {
        rc = sl_lease_check(&run->lease, sess, &run->err);
        if (rc != 0 || sl_run_check_kept(run, sess) != 0)
            return -1;
    }
    sl_run_event(run, "reconnect", "reconnected after a lost connection");
    sl_metrics_count(sl_metrics_job_get(run->job->name), SL_COUNT_RECONNECT, 1);
    return 0;
}

/* ---- stamp ---- */

int sl_run_stamp(sl_run *run, sl_state state)
{
    const char *params[3] = {run->job->name, run->job->checksum};
    int lite = run_is_lite(run->sess), np;
    sl_buf b = {0};
    if (state == SL_STATE_DONE) {
        sl_buf_printf(&b,
                      "UPDATE " SL_JOBS_TABLE " SET state = 'done', stamped = %s, error = NULL, checksum = $2,"
                      " updated_at = CURRENT_TIMESTAMP WHERE job = $1",
                      lite ? "1" : "true");
        np = add_fence(&b, run, params, 2);
    } else { /* everything forgotten: the next up starts over, fixing what it walks anew */
        sl_buf_printf(&b,
                      "UPDATE " SL_JOBS_TABLE " SET state = 'pending', stamped = %s, error = NULL, checksum = '',"
                      " table_name = NULL, key_cols = NULL, where_sql = NULL, undo = NULL, walk_end = NULL,"
                      " started_at = NULL, paused = NULL, updated_at = CURRENT_TIMESTAMP WHERE job = $1",
                      lite ? "1" : "true");
        params[1] = NULL;
        np = add_fence(&b, run, params, 1);
    }
    size_t n = 0;
    sl_query q[6];
    q[n++] = (sl_query){sl_session_begin_sql(run->sess), 0, NULL, 0};
    q[n++] = (sl_query){b.data, np, params, 0};
    if (state == SL_STATE_PENDING) {
        q[n++] = (sl_query){"DELETE FROM " SL_PROGRESS_TABLE " WHERE job = $1", 1, params, 0};
        q[n++] = (sl_query){"DELETE FROM " SL_UNDO_TABLE " WHERE job = $1", 1, params, 0};
        if (!lite)
            q[n++] = (sl_query){"DELETE FROM " SL_RANGES_TABLE " WHERE job = $1", 1, params, 0};
    }
    q[n++] = (sl_query){"COMMIT", 0, NULL, 0};
    int rc = write_row(run, q, n, 1);
    sl_buf_free(&b);
    if (rc != 0)
        return -1;
    run->row.state = state;
    record_run(run, "stamp", sl_state_name(state), 1);
    return sl_ckpt_stamp(run->ckpt, state, run->job->checksum, &run->err);
}

void sl_run_close(sl_run *run)
{
    release_lock(run);
    if (run->ckpt)
        sl_ckpt_close(run->ckpt);
    run->ckpt = NULL;
    sl_ckpt_unlock(run->ckpt_fd); /* after the checkpoint closes: see lock.c */
    run->ckpt_fd = -1;
    sl_job_row_free(&run->row);
    free(run->db_run); /* a run that ended before it finished: its row says running, history interrupted */
    run->db_run = NULL;
}
