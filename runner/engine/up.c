/* up.c: run one job's pending chunks, exactly once, on PostgreSQL or SQLite: from its refusals to its final state.
 *
 * Exactly once rests on one rule: a chunk's statements and its row in
 * sluice_progress (and its undo record) commit in the same transaction, and
 * that row is written only while the job's lease is this runner's (lease.h).
 * What runs next is decided from the database alone (run.h): the checkpoint
 * file is the journal, written after each commit and rebuilt from the
 * database when it is missing or behind. After a lost connection the same
 * table says whether the chunk in flight committed. */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/checkpoints/ckpt.h"
#include "sluice/db/catalog.h"
#include "sluice/engine/undo.h"
#include "sluice/services/progress.h"

#include "up_internal.h"

char *up_tuple_json(const up_key *t, size_t n)
{
    sl_buf buf = {0};
    sl_buf_addc(&buf, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            sl_buf_adds(&buf, ", ");
        sl_buf_add_json_str(&buf, t->v[i]);
    }
    sl_buf_addc(&buf, ']');
    return sl_buf_take(&buf);
}

static void run_free(up_run *r)
{
    if (r->stmt_sql)
        for (size_t i = 0; i < r->job->up.nstmts; i++)
            free(r->stmt_sql[i]);
    free(r->stmt_sql);
    free(r->progress_sql);
    for (int a = 0; a < 2; a++)
        for (int u = 0; u < 2; u++)
            free(r->boundary[a][u]);
    up_key_free(&r->last);
    up_key_free(&r->end);
    for (size_t i = 0; i < r->nranges; i++)
        up_range_free(&r->ranges[i]);
    free(r->ranges);
    sl_undo_target_free(&r->undo);
    sl_table_info_free(&r->info);
    sl_run_identity_free(&r->id);
}

/* Per-statement parameters: a statement binds only the edges it uses, so
 * that every $N it mentions has a type (PostgreSQL refuses unused ones). */
static void render_stmt(up_run *r, size_t i)
{
    r->stmt_sql[i] = sl_keys_stmt_sql(&r->info.ks, &r->job->up.stmts[i]);
}

void up_render_timeouts(up_run *r)
{
    sl_session_chunk_settings(r->sess, r->job->lock_timeout_ms, r->job->statement_timeout_ms, r->job->wait_commit,
                              &r->timeouts);
}

/* The chunk's row in sluice_progress: $1 job, $2 chunk_no, then the lo
 * columns, the hi columns, rows, attempts, checksum, skipped, error, and on
 * PostgreSQL the range and the runner whose lease the row proves. */
static char *progress_sql(const up_run *r, const char *lock)
{
    size_t n = r->info.ks.ncols;
    int lite = r->sess->dialect == SL_DIALECT_SQLITE;
    sl_buf b = {0};
    sl_buf_adds(&b, "INSERT INTO " SL_PROGRESS_TABLE
                    " (job, chunk_no, lo, hi, rows, duration_ms, attempts, checksum, skipped, error");
    if (lite) {
        sl_buf_adds(&b, ") VALUES ($1, $2, json_array(");
    } else {
        char *fence = sl_lease_fence_sql(1, 2, (int)(9 + 2 * n), (int)(10 + 2 * n), (int)(8 + 2 * n), lock);
        sl_buf_printf(&b, ", range_no) VALUES ($1, %s, ARRAY[", fence);
        free(fence);
    }
    /* SQLite: CAST, as the driver binds a number's text as a number and the keys are kept as text */
    const char *cast = lite ? " AS TEXT)" : "", *open = lite ? "CAST(" : "";
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(&b, "%s%s$%zu%s", i ? ", " : "", open, 3 + i, cast);
    sl_buf_adds(&b, lite ? "), json_array(" : "]::text[], ARRAY[");
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(&b, "%s%s$%zu%s", i ? ", " : "", open, 3 + n + i, cast);
    if (lite) /* SQLite: the keys as JSON arrays of text, the flag as 0/1 */
        sl_buf_printf(&b, "), $%zu, sluice_elapsed_ms(), $%zu, $%zu, $%zu = 'true', $%zu)", 3 + 2 * n, 4 + 2 * n,
                      5 + 2 * n, 6 + 2 * n, 7 + 2 * n);
    else
        sl_buf_printf(&b,
                      "]::text[], $%zu, (extract(epoch FROM clock_timestamp() - now()) * 1000)::bigint, $%zu, $%zu,"
                      " $%zu::boolean, $%zu, $%zu)",
                      3 + 2 * n, 4 + 2 * n, 5 + 2 * n, 6 + 2 * n, 7 + 2 * n, 8 + 2 * n);
    return sl_buf_take(&b);
}

static void prepare_sql(up_run *r)
{
    const sl_keyspec *ks = &r->info.ks;
    for (int a = 0; a < 2; a++)
        for (int u = 0; u < 2; u++)
            r->boundary[a][u] = sl_keys_boundary_range_sql(ks, a, u);
    r->stmt_sql = sl_calloc(r->job->up.nstmts, sizeof(char *));
    for (size_t i = 0; i < r->job->up.nstmts; i++)
        render_stmt(r, i);
    int reads_first = r->undo.pre_sql != NULL; /* a snapshot: saves rows, then writes them */
    r->begin_sql = sl_schema_chunk_begin(r->sess, &r->run.db, reads_first);
    const char *lock = sl_schema_fence_lock(&r->run.db, reads_first);
    if (r->sess->dialect == SL_DIALECT_PG && strcmp(lock, "FOR SHARE") == 0)
        sl_warn("%s: %s has no unique index on (job, runner), and this role cannot make one: each chunk "
                "locks the job's row there FOR SHARE, and one that meets a renewal of the lease is retried "
                "(hint: as the table's owner, CREATE UNIQUE INDEX sluice_jobs_runner_key ON %s (job, runner))",
                r->job->name, SL_JOBS_TABLE, SL_JOBS_TABLE);
    r->progress_sql = progress_sql(r, lock);
    up_render_timeouts(r);
}

int up_reconnect(up_run *r, sl_session *sess)
{
    int rc = sl_run_reconnect(&r->run, sess);
    if (rc < 0)
        r->err = r->run.err;
    return rc;
}

static int exec_retrying(up_run *r, sl_session *sess, const sl_query *q, size_t n, int readonly, sl_answer *ans)
{
    for (int attempt = 1;; attempt++) {
        if ((readonly ? sl_session_exec_readonly(sess, q, n, ans) : sl_session_exec(sess, q, n, ans)) != 0) {
            ans->conn_lost = 1;
            ans->ok = 0;
        }
        if (ans->ok)
            return 0;
        int lost = ans->conn_lost;
        int transient = lost || sl_answer_transient(ans->sqlstate);
        if (!transient || attempt > r->job->retries) {
            sl_err_set(&r->err, "%s: %s", r->job->name, ans->error ? ans->error : "connection lost");
            sl_answer_free(ans);
            return -1;
        }
        sl_answer_free(ans);
        if (sl_session_stopping(r->sess))
            return SL_STOPPED;
        int rc = lost ? up_reconnect(r, sess) : sl_session_sleep(sess, sl_session_backoff_ms(attempt));
        if (rc != 0)
            return rc;
    }
}

int up_exec_read(up_run *r, sl_session *sess, const sl_query *q, size_t n, sl_answer *ans)
{
    return exec_retrying(r, sess, q, n, 0, ans);
}

int up_exec_check(up_run *r, sl_session *sess, const sl_query *q, size_t n, sl_answer *ans)
{
    return exec_retrying(r, sess, q, n, 1, ans);
}

/* After the walk: the job's verify query decides between done and failed. */
static int verified(up_run *r, int code)
{
    if (code != SL_EXIT_OK || !r->job->verify)
        return code;
    if (r->run_rows == 0 && r->has_last)
        sl_info("%s: every chunk was done already; checking verify again (%s:%d)", r->job->name, r->job->path,
                r->job->line[SL_DIR_VERIFY]);
    if (up_verify(r) != 0)
        return SL_EXIT_FAILED;
    sl_log_event(SL_LOG_INFO, "verified", json_pack("{si}", "line", r->job->line[SL_DIR_VERIFY]),
                 "%s: verify returned true (%s:%d)", r->job->name, r->job->path, r->job->line[SL_DIR_VERIFY]);
    return SL_EXIT_OK;
}

static const char *state_of(int code)
{
    return code == SL_EXIT_OK ? "done" : code == SL_EXIT_STOPPED ? "stopped" : "failed";
}

/* The rows the walk covers, for its percent and ETA: those done, and an
 * estimate of what its ranges have left. Not the where's estimate over the
 * table: after a resume a where on a column the job changes no longer
 * matches the rows done, and the job would seem done long before it is.
 * -1 when it cannot tell (a table never analyzed: said, with what helps). */
static int64_t estimate_total(up_run *r)
{
    sl_key_span *spans = sl_calloc(r->nranges + 1, sizeof *spans);
    for (size_t i = 0; i < r->nranges; i++) {
        const up_range *kr = &r->ranges[i];
        spans[i].after = kr->has_after ? (const char *const *)kr->after.v : NULL;
        spans[i].until = kr->has_until ? (const char *const *)kr->until.v : NULL;
    }
    int64_t left = sl_catalog_estimate_spans(r->sess, &r->info.ks, spans, r->nranges);
    free(spans);
    if (left == SL_CATALOG_NO_STATS)
        sl_log_event(SL_LOG_INFO, "no_estimate", json_pack("{ss}", "table", r->info.ks.table),
                     "%s: %s has no statistics (never analyzed): no estimate of its rows, so no percent or ETA "
                     "(hint: ANALYZE %s gives one)",
                     r->job->name, r->info.ks.table, r->info.ks.table);
    return left >= 0 ? r->rows_done + left : -1;
}

/* Position, the run's record, the walk, and the final state. */
static int run_job(up_run *r)
{
    int rc = up_load_position(r);
    prepare_sql(r);
    sl_pace_init(&r->pace, r->job);
    if (rc == 0 && gate_stops_at_start(&r->gate, r->run.row.paused))
        return SL_EXIT_STOPPED; /* --no-wait: nothing ran, and the job's state stays as it was */
    if (rc == 0 && sl_run_begin(&r->run, &r->id, r->has_end ? r->end.v : NULL, r->info.ks.ncols) != 0) {
        r->err = r->run.err;
        rc = -1;
    }
    if (rc == 0 && !r->nothing)
        rc = up_load_ranges(r);
    if (rc != 0)
        return rc == SL_EREFUSED ? SL_EXIT_USAGE : rc == SL_STOPPED ? SL_EXIT_STOPPED : SL_EXIT_FAILED;
    if (sl_ckpt_set_batch(r->ckpt, r->pace.batch, &r->err) != 0)
        return SL_EXIT_FAILED;
    if (r->nothing) {
        sl_info("%s: %s has no rows to walk", r->job->name, r->info.ks.table);
        int code = verified(r, SL_EXIT_OK);
        r->metrics = sl_metrics_job_get(r->job->name);
        r->run.err = r->err;
        code = sl_run_finish(&r->run, code);
        sl_metrics_state(r->metrics, state_of(code));
        if (code == SL_EXIT_OK)
            sl_log_event(SL_LOG_INFO, "done", json_pack("{sisi}", "rows", 0, "chunks", 0), "%s: done: nothing to walk",
                         r->job->name);
        return code;
    }
    int64_t total = estimate_total(r);
    /* a job that runs gets its series (one already done or refused has none) */
    r->metrics = r->gate.metrics = sl_metrics_job_get(r->job->name);
    sl_metrics_begin(r->metrics, 0, total, r->rows_done, r->chunks_done);
    sl_metrics_state(r->metrics, "running");
    sl_metrics_batch(r->metrics, r->pace.batch);
    sl_log_event(SL_LOG_INFO, r->has_last ? "resume" : "start",
                 json_pack("{sIsIsIsIsI}", "chunk", (json_int_t)r->next_chunk_no, "rows_done", (json_int_t)r->rows_done,
                           "chunks_done", (json_int_t)r->chunks_done, "batch", (json_int_t)r->pace.batch,
                           "rows_estimated", (json_int_t)total),
                 "%s: %s from chunk %" PRId64 " (%" PRId64 " rows done), batch %" PRId64, r->job->name,
                 r->has_last ? "resuming" : "starting", r->next_chunk_no, r->rows_done, r->pace.batch);
    sl_progress_begin(r->job->name, total, r->rows_done, r->opts->progress_tty);
    if (r->run.row.paused) /* by `ctl pause` before this run: it holds until `ctl resume` */
        gate_paused_before(&r->gate, r->run.row.paused);
    sl_ctl *ctl = NULL;
    char *ctl_path = sl_ctl_path(r->opts->ckpt_dir, r->job->name);
    sl_err cerr;
    int pg = r->sess->dialect == SL_DIALECT_PG;
    if (sl_ctl_start(r->sess->loop, ctl_path, up_on_ctl, r, &ctl, &cerr) != 0)
        sl_warn("%s (the job runs without live control%s)", cerr.msg, pg ? " but through the database" : "");
    if (pg) /* sluice ctl from another machine: requests in sluice_ctl */
        sl_lease_set_ctl(&r->run.lease, up_on_ctl, r);
    int code = up_walk(r);
    if (code == SL_EXIT_OK && sl_run_check_kept(&r->run, r->sess) != 0) {
        r->err = r->run.err;
        code = SL_EXIT_FAILED;
    }
    if (pg)
        sl_lease_set_ctl(&r->run.lease, NULL, NULL);
    if (code != SL_EXIT_OK) /* a pause asked just before a signal stopped the walk (one that came with
                             * the last chunk in flight is moot: the walk is done) */
        gate_save_pause(&r->gate, r->sess);
    sl_ctl_stop(ctl); /* NULL-safe; its handles are released by the loop */
    free(ctl_path);
    sl_progress_end();
    code = verified(r, code);
    r->run.err = r->err;
    code = sl_run_finish(&r->run, code);
    sl_metrics_state(r->metrics, state_of(code));
    json_t *fields = json_pack("{sIsIsI}", "rows", (json_int_t)r->rows_done, "chunks", (json_int_t)r->chunks_done,
                               "set_aside", (json_int_t)r->rows_set_aside);
    /* rows set aside count among the rows walked: said, or a last line read alone would hide them */
    int64_t n = r->rows_set_aside;
    if (code == SL_EXIT_OK && n)
        sl_log_event(SL_LOG_INFO, "done", fields,
                     "%s: done: %" PRId64 " rows in %" PRId64 " chunks; %" PRId64 " of the rows %s set aside (on-error "
                     "skip): `sluice status %s` lists %s",
                     r->job->name, r->rows_done, r->chunks_done, n, n == 1 ? "was" : "were", r->job->name,
                     n == 1 ? "it" : "them");
    else if (code == SL_EXIT_OK)
        sl_log_event(SL_LOG_INFO, "done", fields, "%s: done: %" PRId64 " rows in %" PRId64 " chunks", r->job->name,
                     r->rows_done, r->chunks_done);
    else if (code == SL_EXIT_STOPPED && n)
        sl_log_event(SL_LOG_INFO, "stopped", fields,
                     "%s: stopped after %" PRId64 " chunks (%" PRId64 " rows, %" PRId64
                     " of them set aside by on-error skip); `sluice up` resumes it",
                     r->job->name, r->chunks_done, r->rows_done, n);
    else if (code == SL_EXIT_STOPPED)
        sl_log_event(SL_LOG_INFO, "stopped", fields,
                     "%s: stopped after %" PRId64 " chunks (%" PRId64 " rows); `sluice up` resumes it", r->job->name,
                     r->chunks_done, r->rows_done);
    else
        json_decref(fields);
    return code;
}

/* A job the database says is done needs nothing. */
static int already_done(const sl_job *job, const sl_job_row *row)
{
    if (row->state != SL_STATE_DONE)
        return 0;
    sl_info("%s: already done%s", job->name, row->stamped ? " (stamped)" : "");
    /* a file edited after it ran, or another project's job of the same name on a shared database */
    if (row->checksum[0] && strcmp(row->checksum, job->checksum) != 0)
        sl_warn("%s was changed after the job %s (checksum %s, now %s): the new text did not run and will not (hint: "
                "write a change as a new job file; a job of another project on this database with the same name "
                "needs a name of its own)",
                job->path, row->stamped ? "was stamped done" : "ran", row->checksum, job->checksum);
    return 1;
}

/* Read-only: whether the job needs running and may run. SL_EXIT_OK to go
 * on, UP_ALREADY_DONE when there is nothing to do, else an exit code. */
enum { UP_ALREADY_DONE = -1 }; /* no exit code (they are SL_EXIT_*, 0 to 3): it never leaves up.c */

static int exit_of(int rc)
{
    return rc == SL_OK ? SL_EXIT_OK : rc == SL_EREFUSED ? SL_EXIT_USAGE : SL_EXIT_FAILED;
}

/* Writes the undo snapshot cannot put back: refused before the first chunk;
 * a job that already ran some (with an older sluice) is warned and goes on,
 * since its undo may not change now. */
static int check_scope(up_run *r, const sl_job_row *row)
{
    char **warnings = NULL;
    int rc = sl_undo_check_scope(r->sess, r->job, &r->info.ks, &warnings, &r->err);
    for (char **w = warnings; w && *w; w++) {
        sl_warn("%s", *w);
        free(*w);
    }
    free(warnings);
    if (rc == SL_EREFUSED && row->chunks > 0) {
        sl_warn("%s", r->err.msg);
        rc = 0;
    }
    return rc;
}

/* A down section the server cannot plan now would fail the rollback at its
 * first chunk: said before the first chunk of up, while it is cheap to fix
 * (not refused: it may use what the job itself creates). */
static void check_way_back(up_run *r)
{
    if (r->job->undo != SL_UNDO_DOWN)
        return;
    sl_err err = {{0}};
    if (sl_down_check_sql(r->sess, r->job, &r->info.ks, &err) == SL_EREFUSED)
        sl_warn("%s\nhint: `down` of this job refuses to start until the down section runs; fix it before the "
                "rollback is needed",
                err.msg);
}

static int decide(up_run *r)
{
    int rc = sl_run_check_journal(r->sess, r->opts, r->job->name, &r->err);
    if (rc != 0)
        return exit_of(rc);
    sl_job_row row;
    if (sl_run_read_row(r->sess, r->job->name, &row, &r->err) != 0)
        return SL_EXIT_FAILED;
    int code = already_done(r->job, &row) ? UP_ALREADY_DONE : exit_of(up_preflight(r, row.chunks == 0));
    /* what it walks before its SQL: a changed key explains a statement that no longer fits; a file
     * changed with --allow-changed-statements is warned about once, under the lock (sl_up_job) */
    sl_job_row seen = row;
    if (r->opts->allow_changed_statements)
        seen.checksum = (char *)"";
    if (code == SL_EXIT_OK && sl_run_check_identity(&seen, r->job, &r->id, r->opts, &r->err) != 0)
        code = SL_EXIT_USAGE;
    /* a first run: unless the job's record sits in tables this search_path does not find */
    if (code == SL_EXIT_OK && !row.exists && row.chunks == 0)
        code = exit_of(sl_schema_job_elsewhere(r->sess, r->job->name, r->info.ks.table, "it would run again", &r->err));
    if (code == SL_EXIT_OK && !row.exists && row.chunks == 0)
        code = exit_of(sl_run_check_renamed(r->sess, r->job, &r->err));
    if (code == SL_EXIT_OK)
        code = exit_of(sl_up_check_sql(r->sess, r->job, &r->info.ks, &r->err));
    if (code == SL_EXIT_OK)
        check_way_back(r);
    if (code == SL_EXIT_OK)
        code = exit_of(check_scope(r, &row));
    if (code == SL_EXIT_OK)
        code = exit_of(gate_prepare(&r->gate, r->sess, r->info.ks.table, &r->err));
    sl_job_row_free(&row);
    return code;
}

/* One run of job; *lost when the database lost commits of it (run.h). */
static int up_once(sl_session *sess, const sl_run_opts *opts, sl_job *job, int reruns_left, int *lost)
{
    up_run r = {0};
    r.sess = sess;
    r.opts = opts;
    r.job = job;
    r.gate = (run_gate){.job = job, .opts = opts, .run = &r.run, .pace = &r.pace};
    sl_log_set_job(job->name);
    int code = decide(&r);
    int opened = 0;
    if (code == SL_EXIT_OK) {
        int rc = sl_run_open(&r.run, sess, opts, job, SL_RUN_UP, *lost);
        opened = 1;
        r.ckpt = r.run.ckpt;
        if (rc != 0) {
            r.err = r.run.err;
            code = rc == SL_EREFUSED ? SL_EXIT_USAGE : rc == SL_STOPPED ? SL_EXIT_STOPPED : SL_EXIT_FAILED;
            if (rc == SL_STOPPED)
                sl_info("%s", r.err.msg);
        }
    }
    /* under the lock: another runner may have finished the job meanwhile */
    if (code == SL_EXIT_OK && already_done(job, &r.run.row))
        code = UP_ALREADY_DONE;
    if (code == SL_EXIT_OK && sl_run_check_identity(&r.run.row, job, &r.id, opts, &r.err) != 0)
        code = SL_EXIT_USAGE;
    if (code == SL_EXIT_OK)
        code = exit_of(up_check_undo_records(&r));
    if (code == SL_EXIT_OK)
        code = run_job(&r);
    if (code == UP_ALREADY_DONE)
        code = SL_EXIT_OK;
    *lost = sl_run_again(&r.run, sess, &code, reruns_left, "running the job again from what the database has", &r.err);
    if (!*lost && code != SL_EXIT_OK && code != SL_EXIT_STOPPED)
        sl_log_event(SL_LOG_ERROR, code == SL_EXIT_USAGE ? "refused" : "failed",
                     json_pack("{so}", "error", sl_json_str(r.err.msg)), "%s", r.err.msg);
    sl_catalog_count_ahead_drop(sess); /* unused: it stopped, or it was not a fresh walk after all */
    if (opened)
        sl_run_close(&r.run);
    gate_close(&r.gate);
    run_free(&r);
    sl_log_set_job(NULL);
    return code;
}

int sl_up_job(sl_session *sess, const sl_run_opts *opts, sl_job *job)
{
    int code, lost = 0;
    for (int left = SL_LOST_COMMITS_RERUNS;; left--) {
        code = up_once(sess, opts, job, left, &lost);
        if (!lost)
            return code;
    }
}
