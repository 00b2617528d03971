/* up.c: run one job's pending chunks on PostgreSQL, exactly once, with checkpoints, retries and reconnects.
 *
 * Exactly once rests on one rule: a chunk's statements and its row in
 * sluice_progress commit in the same PostgreSQL transaction. The checkpoint
 * file is written after that commit, so it may lag the database by a chunk
 * (a kill between the two) but never lead it; on start the runner copies any
 * chunk the database has and the file lacks ("reconcile"). After a lost
 * connection the same table says whether the chunk in flight committed. */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/catalog.h"
#include "sluice/ckpt.h"
#include "sluice/cli.h"
#include "sluice/progress.h"
#include "sluice/undo.h"

#include "up_internal.h"

char *sl_up_tuple_json(const key_tuple *t, size_t n)
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
    tuple_free(&r->last);
    for (size_t i = 0; i < r->nranges; i++)
        range_free(&r->ranges[i]);
    free(r->ranges);
    sl_undo_target_free(&r->undo);
    sl_table_info_free(&r->info);
    if (r->ckpt)
        sl_ckpt_close(r->ckpt);
}

/* Per-statement parameters: a statement binds only the edges it uses, so
 * that every $N it mentions has a type (PostgreSQL refuses unused ones). */
static void render_stmt(up_run *r, size_t i)
{
    const sl_stmt *st = &r->job->up.stmts[i];
    int n = (int)r->info.ks.ncols;
    char *lo = sl_keys_placeholder_sql(&r->info.ks, 1);
    char *hi = sl_keys_placeholder_sql(&r->info.ks, st->uses_lo ? 1 + n : 1);
    r->stmt_sql[i] = sl_stmt_render(st, lo, hi);
    free(lo);
    free(hi);
}

void sl_up_render_timeouts(up_run *r)
{
    sl_session_chunk_settings(r->sess, r->job->lock_timeout_ms, r->job->statement_timeout_ms, &r->timeouts);
}

static void prepare_sql(up_run *r)
{
    const sl_keyspec *ks = &r->info.ks;
    size_t n = ks->ncols;
    for (int a = 0; a < 2; a++)
        for (int u = 0; u < 2; u++)
            r->boundary[a][u] = sl_keys_boundary_range_sql(ks, a, u);
    r->stmt_sql = sl_calloc(r->job->up.nstmts, sizeof(char *));
    for (size_t i = 0; i < r->job->up.nstmts; i++)
        render_stmt(r, i);
    /* $1 job, $2 chunk_no, then the lo columns, the hi columns, rows, attempts, checksum, skipped,
     * and on PostgreSQL the range */
    int lite = r->sess->dialect == SL_DIALECT_SQLITE;
    sl_buf b = {0};
    sl_buf_printf(&b,
                  "INSERT INTO " SL_PROGRESS_TABLE
                  " (job, chunk_no, lo, hi, rows, duration_ms, attempts, checksum, skipped%s) VALUES ($1, $2, %s",
                  lite ? "" : ", range_no", lite ? "json_array(" : "ARRAY[");
    /* SQLite: CAST, as the driver binds a number's text as a number and the keys are kept as text */
    const char *cast = lite ? " AS TEXT)" : "", *open = lite ? "CAST(" : "";
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(&b, "%s%s$%zu%s", i ? ", " : "", open, 3 + i, cast);
    sl_buf_adds(&b, lite ? "), json_array(" : "]::text[], ARRAY[");
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(&b, "%s%s$%zu%s", i ? ", " : "", open, 3 + n + i, cast);
    if (lite) /* SQLite: the keys as JSON arrays of text, the flag as 0/1 */
        sl_buf_printf(&b, "), $%zu, sluice_elapsed_ms(), $%zu, $%zu, $%zu = 'true')", 3 + 2 * n, 4 + 2 * n, 5 + 2 * n,
                      6 + 2 * n);
    else
        sl_buf_printf(&b,
                      "]::text[], $%zu, (extract(epoch FROM clock_timestamp() - now()) * 1000)::bigint, $%zu, $%zu,"
                      " $%zu::boolean, $%zu)",
                      3 + 2 * n, 4 + 2 * n, 5 + 2 * n, 6 + 2 * n, 7 + 2 * n);
    r->progress_sql = sl_buf_take(&b);
    sl_up_render_timeouts(r);
}

/* Reconnect with backoff and jitter for up to two minutes, then take the
 * job's lock again (the server dropped it with the old session). */
int sl_up_reconnect(up_run *r)
{
    r->locked = 0; /* the server released it with the old session */
    int rc = sl_session_reconnect(r->sess, r->job->name, &r->err);
    if (rc != 0)
        return rc;
    sl_err lerr;
    if (sl_ckpt_log_event(r->ckpt, "reconnect", "reconnected after a lost connection", &lerr) != 0)
        sl_warn("%s", lerr.msg);
    return sl_up_take_lock(r) == 0 ? 0 : -1;
}

int sl_up_reconnect_session(up_run *r, sl_session *sess)
{
    if (sess == r->sess)
        return sl_up_reconnect(r);
    int rc = sl_session_reconnect(sess, r->job->name, &r->err);
    if (rc != 0)
        return rc;
    if (sl_session_join_job(sess, r->job->name, &r->err) != 0)
        return -1;
    /* the run's session, and with it the job's lock, must still be there */
    sl_answer ans;
    rc = sl_session_exec1(r->sess, "SELECT 1", 0, NULL, &ans);
    int alive = rc == 0 && ans.ok;
    if (rc == 0)
        sl_answer_free(&ans);
    return alive ? 0 : sl_up_reconnect(r);
}

int sl_up_exec_read(up_run *r, sl_session *sess, const sl_pg_query *q, size_t n, sl_answer *ans)
{
    for (int attempt = 1;; attempt++) {
        if (sl_session_exec(sess, q, n, ans) != 0) {
            ans->conn_lost = 1;
            ans->ok = 0;
        }
        if (ans->ok)
            return 0;
        int lost = ans->conn_lost;
        int transient = lost || sl_pg_transient(ans->sqlstate);
        if (!transient || attempt > r->job->retries) {
            sl_err_set(&r->err, "%s: %s", r->job->name, ans->error ? ans->error : "connection lost");
            sl_answer_free(ans);
            return -1;
        }
        sl_answer_free(ans);
        if (sl_session_stopping(r->sess))
            return 1;
        int rc = lost ? sl_up_reconnect_session(r, sess) : sl_session_sleep(sess, sl_session_backoff_ms(attempt));
        if (rc != 0)
            return rc;
    }
}

/* Everything that may refuse the job, before anything is written. */
static int preflight(up_run *r)
{
    int rc = sl_up_take_lock(r);
    if (rc != 0)
        return rc == -2 ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    if (sl_catalog_resolve(r->sess, r->job, &r->info, &r->err) != 0)
        return SL_EXIT_USAGE;
    if (!r->info.index) {
        char *cols = sl_keys_column_list(&r->info.ks);
        sl_err_set(&r->err, "%s: no btree index on %s (%s): every chunk would scan the whole table", r->job->path,
                   r->info.ks.table, cols);
        /* SQLite has no CONCURRENTLY, and its CREATE INDEX needs a name */
        if (r->sess->dialect == SL_DIALECT_SQLITE)
            sl_err_append(&r->err, "hint: CREATE INDEX sluice_%s ON %s (%s); or run with --force to walk it anyway",
                          r->job->name, r->info.ks.table, cols);
        else
            sl_err_append(&r->err, "hint: CREATE INDEX CONCURRENTLY ON %s (%s); or run with --force to walk it anyway",
                          r->info.ks.table, cols);
        free(cols);
        if (!r->opts->force)
            return SL_EXIT_USAGE;
        sl_warn("%s", r->err.msg);
    }
    if (!r->info.unique_key)
        sl_warn("%s: the key of %s is not unique: a chunk takes every row of its :hi value, so chunks may be "
                "larger than batch and rows counts approximate",
                r->job->path, r->info.ks.table);
    if (r->info.nullable_key)
        sl_warn("%s: a key column of %s allows NULL; rows with a NULL key are never visited", r->job->path,
                r->info.ks.table);
    rc = sl_up_check_requires(r);
    if (rc != 0)
        return rc == -2 ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    if (sl_undo_resolve(r->sess, r->job, &r->info, &r->undo, &r->err) != 0)
        return SL_EXIT_USAGE;
    return SL_EXIT_OK;
}

static int open_ckpt(up_run *r, int create)
{
    char *path = sl_ckpt_path(r->opts->ckpt_dir, r->job->name);
    int rc = sl_ckpt_open(path, r->job->name, create, &r->ckpt, &r->err);
    free(path);
    return rc;
}

static void release_lock(up_run *r)
{
    if (r->locked)
        sl_session_unlock_job(r->sess, r->job->name);
    r->locked = 0;
}

/* Resume position, run record, the walk, and the final state. */
static int run_job(up_run *r)
{
    int rc = sl_up_reconcile(r);
    if (rc == 0)
        rc = sl_up_load_position(r);
    /* undo records of chunks that never committed belong to chunks that rolled back */
    if (rc == 0 && r->undo.post_sql)
        rc = sl_snap_drop_uncommitted(r->ckpt, &r->err);
    prepare_sql(r);
    sl_pace_init(&r->pace, r->job);
    if (rc == 0)
        rc = sl_up_load_ranges(r);
    if (rc != 0)
        return rc == -2 ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    if (sl_ckpt_begin_run(r->ckpt, "up", SL_STATE_RUNNING, r->job->checksum, sl_session_display(r->sess),
                          r->opts->force, &r->run_id, &r->err) != 0 ||
        sl_ckpt_set_batch(r->ckpt, r->pace.batch, &r->err) != 0)
        return SL_EXIT_FAILED;
    int64_t total = sl_catalog_estimate_rows(r->sess, &r->info.ks);
    sl_info("%s: %s from chunk %" PRId64 " (%" PRId64 " rows done), batch %" PRId64, r->job->name,
            r->has_last ? "resuming" : "starting", r->next_chunk_no, r->rows_done, r->pace.batch);
    sl_progress_begin(r->job->name, total, r->rows_done, r->opts->progress_tty);
    sl_ctl *ctl = NULL;
    char *ctl_path = sl_ctl_path(r->opts->ckpt_dir, r->job->name);
    sl_err cerr;
    if (sl_ctl_start(r->sess->loop, ctl_path, sl_up_on_ctl, r, &ctl, &cerr) != 0)
        sl_warn("%s (the job runs without live control)", cerr.msg);
    int code = sl_up_walk(r);
    sl_ctl_stop(ctl); /* NULL-safe; its handles are released by the loop */
    free(ctl_path);
    sl_progress_end();
    sl_state state = code == SL_EXIT_OK ? SL_STATE_DONE : code == SL_EXIT_STOPPED ? SL_STATE_STOPPED : SL_STATE_FAILED;
    sl_err ferr;
    if (sl_ckpt_finish_run(r->ckpt, r->run_id, state, code == SL_EXIT_FAILED ? r->err.msg : NULL, &ferr) != 0) {
        sl_error("%s", ferr.msg);
        if (code == SL_EXIT_OK)
            code = SL_EXIT_FAILED;
    }
    if (code == SL_EXIT_OK)
        sl_info("%s: done: %" PRId64 " rows in %" PRId64 " chunks", r->job->name, r->rows_done, r->chunks_done);
    else if (code == SL_EXIT_STOPPED)
        sl_info("%s: stopped after %" PRId64 " chunks (%" PRId64 " rows); `sluice up` resumes it", r->job->name,
                r->chunks_done, r->rows_done);
    return code;
}

/* SL_EXIT_OK to go on; JOB_DONE when there is nothing to do. */
#define JOB_DONE (-1)

static int check_done(up_run *r)
{
    sl_ckpt_job cj;
    if (sl_ckpt_get_job(r->ckpt, &cj, &r->err) != 0)
        return SL_EXIT_USAGE;
    sl_state state = cj.state;
    sl_ckpt_job_free(&cj);
    if (state != SL_STATE_DONE)
        return SL_EXIT_OK;
    sl_info("%s: already done", r->job->name);
    return JOB_DONE;
}

int sl_up_job(sl_session *sess, const sl_opts *opts, sl_job *job)
{
    up_run r = {0};
    r.sess = sess;
    r.opts = opts;
    r.job = job;
    r.run_lock_fd = -1;
    int code = SL_EXIT_OK;
    int orc = open_ckpt(&r, 0);
    if (orc == -1) {
        code = SL_EXIT_USAGE;
        goto out;
    }
    if (r.ckpt && (code = check_done(&r)) != SL_EXIT_OK)
        goto out;
    code = preflight(&r);
    if (code == SL_EXIT_OK && sl_session_ensure_bookkeeping(sess, &r.err) != 0)
        code = SL_EXIT_FAILED;
    /* Another runner may have finished the job while we waited for its lock. */
    if (code == SL_EXIT_OK && r.ckpt)
        code = check_done(&r);
    if (code != SL_EXIT_OK)
        goto out;
    if (!r.ckpt && open_ckpt(&r, 1) != 0) {
        code = SL_EXIT_FAILED;
        goto out;
    }
    int lrc = sl_ckpt_lock(sl_ckpt_file(r.ckpt), &r.run_lock_fd, &r.err);
    if (lrc != 0) {
        code = lrc == -2 ? SL_EXIT_USAGE : SL_EXIT_FAILED;
        goto out;
    }
    code = run_job(&r);
out:
    if (code == JOB_DONE)
        code = SL_EXIT_OK;
    if (code != SL_EXIT_OK && code != SL_EXIT_STOPPED)
        sl_error("%s", r.err.msg);
    release_lock(&r);
    run_free(&r); /* closes the checkpoint before its run lock: see lock.c */
    sl_ckpt_unlock(r.run_lock_fd);
    return code;
}
