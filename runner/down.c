/* down.c: `down`: undo a job's committed chunks, newest first, one transaction per chunk, exactly once, resumable.
 *
 * Exactly once rests on the same rule as `up`: a down chunk undoes one up
 * chunk and deletes that chunk's row from sluice_progress in the same
 * transaction, so sluice_progress always lists exactly the up chunks still
 * applied. The checkpoint file is written after the commit and may lag by a
 * chunk; a run starts by trimming it to what the database says. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/catalog.h"
#include "sluice/ckpt.h"
#include "sluice/cli.h"
#include "sluice/progress.h"
#include "sluice/undo.h"

/* One up chunk still applied, as sluice_progress records it. */
typedef struct down_chunk {
    int64_t chunk_no, rows;
    int skipped;                      /* set aside by on-error skip: its statements never applied */
    char *edges[2 * SL_MAX_KEY_COLS]; /* lo columns, then hi columns */
} down_chunk;

typedef struct down_run {
    sl_session *sess;
    const sl_opts *opts;
    sl_job *job;
    sl_ckpt *ckpt;
    sl_table_info info;
    sl_undo_target undo;
    int locked;
    int run_lock_fd;
    char **down_sql;            /* the down section with :lo/:hi rendered */
    sl_chunk_settings timeouts; /* sent after each chunk's BEGIN */
    down_chunk *chunks;         /* ascending chunk_no */
    size_t nchunks;
    int64_t run_id, rows_total, rows_undone;
    sl_err err;
} down_run;

enum { STEP_OK, STEP_RETRY, STEP_FAILED, STEP_LOST, STEP_CONFLICT, STEP_GONE };

static void run_free(down_run *r)
{
    for (size_t c = 0; c < r->nchunks; c++)
        for (size_t i = 0; i < 2 * SL_MAX_KEY_COLS; i++)
            free(r->chunks[c].edges[i]);
    free(r->chunks);
    if (r->down_sql)
        for (size_t i = 0; i < r->job->down.nstmts; i++)
            free(r->down_sql[i]);
    free(r->down_sql);
    sl_undo_target_free(&r->undo);
    sl_table_info_free(&r->info);
    if (r->ckpt)
        sl_ckpt_close(r->ckpt);
    sl_ckpt_unlock(r->run_lock_fd); /* after the checkpoint closes: see lock.c */
    memset(r, 0, sizeof *r);
    r->run_lock_fd = -1;
}

/* ---- reading what is applied ---- */

/* The job's chunks still in sluice_progress, ascending. */
static int load_chunks(down_run *r)
{
    size_t n = r->info.ks.ncols;
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT chunk_no, rows, CASE WHEN skipped THEN 'true' ELSE 'false' END");
    sl_session_add_key_elems(r->sess, &b, "lo", n);
    sl_session_add_key_elems(r->sess, &b, "hi", n);
    sl_buf_adds(&b, " FROM " SL_PROGRESS_TABLE " WHERE job = $1 ORDER BY chunk_no");
    const char *params[] = {r->job->name};
    sl_answer ans;
    int rc = sl_session_exec1(r->sess, b.data, 1, params, &ans);
    sl_buf_free(&b);
    if (rc != 0 || !ans.ok) {
        sl_err_set(&r->err, "cannot read %s: %s", SL_PROGRESS_TABLE, ans.error ? ans.error : "connection lost");
        sl_answer_free(&ans);
        return -1;
    }
    r->nchunks = (size_t)ans.results[0].nrows;
    r->chunks = sl_calloc(r->nchunks + 1, sizeof(down_chunk));
    for (int row = 0; row < (int)r->nchunks && rc == 0; row++) {
        down_chunk *c = &r->chunks[row];
        c->chunk_no = strtoll(sl_answer_val(&ans, 0, row, 0), NULL, 10);
        c->rows = strtoll(sl_answer_val(&ans, 0, row, 1), NULL, 10);
        c->skipped = strcmp(sl_answer_val(&ans, 0, row, 2), "true") == 0;
        r->rows_total += c->rows;
        for (size_t i = 0; i < 2 * n && rc == 0; i++) {
            const char *v = sl_answer_val(&ans, 0, row, (int)(3 + i));
            c->edges[i] = v ? sl_strdup(v) : NULL;
            if (!v) {
                sl_err_set(&r->err, "%s: %s holds fewer key columns than the job's key (%zu): was the key changed?",
                           r->job->name, SL_PROGRESS_TABLE, n);
                rc = -2;
            }
        }
    }
    sl_answer_free(&ans);
    return rc;
}

/* snapshot(...) jobs cannot undo a chunk without its record: refuse up front. */
static int check_records(down_run *r)
{
    if (r->job->undo != SL_UNDO_SNAPSHOT_COLS && r->job->undo != SL_UNDO_SNAPSHOT_ALL)
        return 0;
    const char *want = r->job->undo == SL_UNDO_SNAPSHOT_ALL ? "all" : "cols";
    for (size_t c = 0; c < r->nchunks; c++) {
        char kind[16];
        if (sl_snap_kind(r->ckpt, r->chunks[c].chunk_no, kind, &r->err) != 0)
            return -1;
        if (strcmp(kind, want) != 0) {
            sl_err_set(&r->err, "%s: chunk %" PRId64 " has no saved snapshot in %s, so down cannot put it back",
                       r->job->name, r->chunks[c].chunk_no, sl_ckpt_file(r->ckpt));
            sl_err_append(&r->err, "hint: was the undo directive added after the chunk ran? put the job's way back "
                                   "as it was then (e.g. a -- sluice:down section)");
            return -2;
        }
    }
    return 0;
}

static void render_down(down_run *r)
{
    size_t k = r->job->down.nstmts;
    int n = (int)r->info.ks.ncols;
    r->down_sql = sl_calloc(k + 1, sizeof(char *));
    for (size_t i = 0; i < k; i++) {
        const sl_stmt *st = &r->job->down.stmts[i];
        char *lo = sl_keys_placeholder_sql(&r->info.ks, 1);
        char *hi = sl_keys_placeholder_sql(&r->info.ks, st->uses_lo ? 1 + n : 1);
        r->down_sql[i] = sl_stmt_render(st, lo, hi);
        free(lo);
        free(hi);
    }
    sl_session_chunk_settings(r->sess, r->job->lock_timeout_ms, r->job->statement_timeout_ms, &r->timeouts);
}

/* The file may be one chunk ahead of sluice_progress only while a rollback
 * is under way (killed between its commit and its checkpoint write); more
 * than that outside a rollback means another database. */
static int check_database(down_run *r)
{
    sl_ckpt_job cj;
    if (sl_ckpt_get_job(r->ckpt, &cj, &r->err) != 0)
        return -1;
    int64_t db_max = r->nchunks ? r->chunks[r->nchunks - 1].chunk_no : 0;
    int bad = cj.chunks > db_max && cj.state != SL_STATE_ROLLING_BACK;
    if (bad) {
        sl_err_set(&r->err, "checkpoint %s records %" PRId64 " committed chunks but this database's %s has %" PRId64,
                   sl_ckpt_file(r->ckpt), cj.chunks, SL_PROGRESS_TABLE, db_max);
        sl_err_append(&r->err,
                      "hint: the checkpoint belongs to another database, or %s was edited; point --db "
                      "and --checkpoints at the pair `up` used",
                      SL_PROGRESS_TABLE);
    }
    sl_ckpt_job_free(&cj);
    return bad ? -2 : 0;
}

/* Everything that may refuse the job, reading only: 0, -2 refused, -1 failed. */
static int prepare(down_run *r)
{
    char *path = sl_ckpt_path(r->opts->ckpt_dir, r->job->name);
    int rc = sl_ckpt_open(path, r->job->name, 0, &r->ckpt, &r->err);
    free(path);
    if (rc != 0)
        return -2;
    if (r->job->undo == SL_UNDO_NONE) {
        sl_err_set(&r->err, "%s: job %s has no way back: no down section and no snapshot", r->job->path, r->job->name);
        sl_err_append(&r->err, "hint: add a -- sluice:down section that undoes one chunk (:lo .. :hi), or save old "
                               "values with -- sluice:undo snapshot(COL, ...) (snapshot(*) for DELETE jobs) before "
                               "running it");
        return -2;
    }
    if (sl_catalog_resolve(r->sess, r->job, &r->info, &r->err) != 0 ||
        sl_undo_resolve(r->sess, r->job, &r->info, &r->undo, &r->err) != 0)
        return -2;
    if ((rc = load_chunks(r)) != 0 || (rc = check_database(r)) != 0)
        return rc;
    if ((rc = check_records(r)) != 0)
        return rc;
    render_down(r);
    return 0;
}

/* The same lock as up's: up and down of one job never run at once. */
static int take_lock(down_run *r)
{
    int rc = sl_session_lock_job(r->sess, r->job->name, 5000, &r->err);
    r->locked = rc == 0;
    return rc;
}

static void release_lock(down_run *r)
{
    if (r->locked)
        sl_session_unlock_job(r->sess, r->job->name);
    r->locked = 0;
}

/* Reconnect with backoff for up to two minutes and take the lock again. */
static int reconnect(down_run *r)
{
    r->locked = 0;
    int rc = sl_session_reconnect(r->sess, r->job->name, &r->err);
    if (rc != 0)
        return rc;
    return take_lock(r) == 0 ? 0 : -1;
}

/* After a lost connection: is the chunk still applied? */
static int still_applied(down_run *r, int64_t chunk_no, int *applied)
{
    char no[24];
    snprintf(no, sizeof no, "%" PRId64, chunk_no);
    const char *params[] = {r->job->name, no};
    sl_answer ans;
    if (sl_session_exec1(r->sess, "SELECT 1 FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND chunk_no = $2", 2, params,
                         &ans) != 0 ||
        !ans.ok) {
        int lost = ans.conn_lost || !sl_session_connected(r->sess);
        sl_answer_free(&ans);
        return lost ? 1 : -1;
    }
    *applied = ans.results[0].nrows > 0;
    sl_answer_free(&ans);
    return 0;
}

/* ---- one down chunk ---- */

static void rollback(down_run *r)
{
    sl_answer rb;
    if (sl_session_exec1(r->sess, "ROLLBACK", 0, NULL, &rb) == 0)
        sl_answer_free(&rb);
}

static char *chunk_range(const down_run *r, const down_chunk *c)
{
    size_t n = r->info.ks.ncols;
    sl_buf b = {0};
    for (int side = 0; side < 2; side++) {
        sl_buf_adds(&b, side ? " .. (" : "(");
        for (size_t i = 0; i < n; i++)
            sl_buf_printf(&b, "%s%s", i ? ", " : "", c->edges[side * n + i]);
        sl_buf_addc(&b, ')');
    }
    return sl_buf_take(&b);
}

/* Turn a failed answer into a step outcome, rolling back an open transaction. */
static int step_failed(down_run *r, const down_chunk *c, sl_answer *ans, int in_tx, int64_t attempts)
{
    if (ans->conn_lost) {
        sl_answer_free(ans);
        return STEP_LOST;
    }
    if (in_tx)
        rollback(r);
    char *range = chunk_range(r, c);
    sl_err_set(&r->err, "%s: undoing chunk %" PRId64 " %s failed on attempt %" PRId64 ": %s%s%s", r->job->name,
               c->chunk_no, range, attempts, ans->sqlstate, ans->sqlstate[0] ? " " : "", ans->error);
    free(range);
    int transient = sl_pg_transient(ans->sqlstate);
    sl_answer_free(ans);
    return transient ? STEP_RETRY : STEP_FAILED;
}

static void report_conflict(down_run *r, const down_chunk *c, const sl_undo_step *st)
{
    char *range = chunk_range(r, c);
    sl_err_set(&r->err,
               "%s: chunk %" PRId64 " %s: %zu row%s changed by someone else since the job wrote %s: key%s %s; "
               "nothing in this chunk was changed",
               r->job->name, c->chunk_no, range, st->nconflicts, st->nconflicts == 1 ? " was" : "s were",
               st->nconflicts == 1 ? "it" : "them", st->nconflicts == 1 ? "" : "s", st->conflicts);
    free(range);
    if (r->job->undo == SL_UNDO_DOWN)
        sl_err_append(&r->err, "hint: the down section cannot leave single rows out: check those rows, then "
                               "`sluice down` again with --on-conflict overwrite to run it anyway");
    else
        sl_err_append(&r->err, "hint: check those rows, then `sluice down` again with --on-conflict skip (leave them "
                               "as they are now) or --on-conflict overwrite (put back what the job found)");
}

/* Segment 1: open the transaction, take the chunk's progress row (its
 * absence means it is already undone), read the rows as they are now. */
static int begin_chunk(down_run *r, const down_chunk *c, sl_answer *ans, int64_t attempts, int has_state)
{
    char no[24];
    snprintf(no, sizeof no, "%" PRId64, c->chunk_no);
    const char *prog[] = {r->job->name, no};
    size_t n = 0;
    sl_pg_query q[5];
    q[n++] = (sl_pg_query){sl_session_begin_sql(r->sess), 0, NULL};
    for (size_t i = 0; i < r->timeouts.n; i++)
        q[n++] = (sl_pg_query){r->timeouts.sql[i], 0, NULL};
    q[n++] = (sl_pg_query){"DELETE FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND chunk_no = $2 RETURNING 1", 2, prog};
    if (has_state)
        q[n++] = (sl_pg_query){r->undo.state_sql, 2 * (int)r->info.ks.ncols, (const char *const *)c->edges};
    if (sl_session_exec(r->sess, q, n, ans) != 0)
        return STEP_LOST;
    if (!ans->ok)
        return step_failed(r, c, ans, ans->failed_index >= 1, attempts);
    if (ans->results[1 + r->timeouts.n].nrows == 0) {
        rollback(r);
        sl_answer_free(ans);
        return STEP_GONE;
    }
    return STEP_OK;
}

/* Segment 2: the restore (or the down section), then COMMIT. */
static int finish_chunk(down_run *r, const down_chunk *c, const sl_undo_step *st, int64_t attempts)
{
    /* a row set aside by on-error skip was never changed: only its progress row goes */
    size_t k = c->skipped ? 0 : r->job->undo == SL_UNDO_DOWN ? r->job->down.nstmts : st->nq, n = r->info.ks.ncols;
    sl_pg_query *q = sl_calloc(k + 1, sizeof *q);
    for (size_t i = 0; i < k; i++) {
        if (r->job->undo != SL_UNDO_DOWN) {
            q[i] = st->q[i];
            if (r->sess->dialect == SL_DIALECT_SQLITE) /* values inlined; the chunk's range bounds the search */
                q[i] = (sl_pg_query){st->q[i].sql, 2 * (int)n, (const char *const *)c->edges};
            continue;
        }
        const sl_stmt *s = &r->job->down.stmts[i];
        int used = (s->uses_lo + s->uses_hi) * (int)n;
        q[i] = (sl_pg_query){r->down_sql[i], used, (const char *const *)(s->uses_lo ? c->edges : c->edges + n)};
    }
    q[k] = (sl_pg_query){"COMMIT", 0, NULL};
    sl_answer ans;
    int rc = sl_session_exec(r->sess, q, k + 1, &ans);
    free(q);
    if (rc != 0)
        return STEP_LOST;
    if (!ans.ok)
        return step_failed(r, c, &ans, ans.failed_index < (int)k, attempts);
    sl_answer_free(&ans);
    return STEP_OK;
}

/* Undo chunk c once: STEP_* outcome. */
static int send_chunk(down_run *r, const down_chunk *c, int64_t attempts)
{
    sl_snap snap;
    int found = 0;
    if (sl_snap_get(r->ckpt, c->chunk_no, &snap, &found, &r->err) != 0)
        return STEP_FAILED;
    if (found && !r->undo.state_sql) { /* hashes no longer usable (the key is not unique) */
        sl_snap_free(&snap);
        found = 0;
    }
    sl_answer ans;
    int st = begin_chunk(r, c, &ans, attempts, found);
    if (st != STEP_OK) {
        sl_snap_free(&snap);
        return st;
    }
    sl_undo_step step = {0};
    if (found)
        sl_undo_plan_chunk(&r->undo, &snap, &ans.results[ans.nresults - 1], r->opts->on_conflict, &step);
    sl_answer_free(&ans);
    sl_snap_free(&snap);
    int refuse = step.nconflicts > 0 && (r->opts->on_conflict == SL_CONFLICT_STOP ||
                                         (r->undo.kind == SL_UNDO_DOWN && r->opts->on_conflict == SL_CONFLICT_SKIP));
    if (refuse) {
        rollback(r);
        report_conflict(r, c, &step);
        st = STEP_CONFLICT;
    } else {
        if (step.nconflicts)
            sl_warn("%s: chunk %" PRId64 ": %s %zu row%s another session changed: %s", r->job->name, c->chunk_no,
                    r->opts->on_conflict == SL_CONFLICT_SKIP ? "left as they are" : "overwrote", step.nconflicts,
                    step.nconflicts == 1 ? "" : "s", step.conflicts);
        if (step.nlost)
            sl_warn("%s: chunk %" PRId64 ": %zu row%s the job deleted cannot be brought back by snapshot(COL, ...) "
                    "(hint: snapshot(*) saves whole rows)",
                    r->job->name, c->chunk_no, step.nlost, step.nlost == 1 ? "" : "s");
        st = finish_chunk(r, c, &step, attempts);
    }
    sl_undo_step_free(&step);
    return st;
}

/* After the commit: the checkpoint follows (it may lag; prepare() trims it). */
static int record_undone(down_run *r, const down_chunk *c)
{
    if (sl_ckpt_undo_chunk(r->ckpt, r->run_id, c->chunk_no, c->rows, &r->err) != 0 ||
        sl_snap_drop_from(r->ckpt, c->chunk_no, &r->err) != 0)
        return -1;
    r->rows_undone += c->rows;
    return 0;
}

/* Retry one chunk to an outcome: 0 undone, 1 stopped, -1 failed, -3 conflict. */
static int do_chunk(down_run *r, const down_chunk *c)
{
    for (int64_t attempts = 1;; attempts++) {
        int st = send_chunk(r, c, attempts);
        if (st == STEP_OK || st == STEP_GONE)
            return record_undone(r, c);
        if (st == STEP_FAILED)
            return -1;
        if (st == STEP_CONFLICT)
            return -3;
        if (st == STEP_LOST) {
            if (sl_session_stopping(r->sess))
                return 1; /* the next run sees from sluice_progress whether it committed */
            int applied = 1, rc = reconnect(r);
            if (rc == 0)
                rc = still_applied(r, c->chunk_no, &applied);
            if (rc != 0)
                return rc > 0 ? 1 : -1;
            if (!applied)
                return record_undone(r, c);
            continue;
        }
        if (attempts > r->job->retries)
            return -1;
        int64_t wait = sl_session_backoff_ms((int)attempts);
        sl_warn("%s (transient; retrying in %" PRId64 " ms)", r->err.msg, wait);
        if (sl_session_sleep(r->sess, wait))
            return 1;
    }
}

/* Undo every applied chunk, newest first. Returns an exit code. */
static int walk(down_run *r)
{
    for (size_t i = r->nchunks; i-- > 0;) {
        if (sl_session_stopping(r->sess))
            return SL_EXIT_STOPPED;
        int rc = do_chunk(r, &r->chunks[i]);
        if (rc != 0)
            return rc > 0 ? SL_EXIT_STOPPED : SL_EXIT_FAILED;
        sl_progress_update(r->rows_undone, r->job->batch);
        if (i > 0 && r->job->pause_ms > 0 && sl_session_sleep(r->sess, r->job->pause_ms))
            return SL_EXIT_STOPPED;
    }
    return SL_EXIT_OK;
}

/* ---- one job ---- */

/* The file may be a chunk ahead of the database (killed after a commit). */
static int trim_ckpt(down_run *r)
{
    int64_t db_max = r->nchunks ? r->chunks[r->nchunks - 1].chunk_no : 0;
    if (sl_ckpt_forget_after(r->ckpt, db_max, &r->err) != 0 || sl_snap_drop_from(r->ckpt, db_max + 1, &r->err) != 0)
        return -1;
    return 0;
}

/* Everything undone: forget the job's key split (up_split.c), so that a new
 * `up` splits the table as it is then. A failure here costs nothing: an old
 * split still covers the whole key. */
static void forget_split(down_run *r)
{
    if (r->sess->dialect != SL_DIALECT_PG)
        return;
    const char *params[] = {r->job->name};
    sl_answer ans;
    if (sl_session_exec1(r->sess, "DELETE FROM sluice_ranges WHERE job = $1", 1, params, &ans) != 0 || !ans.ok)
        sl_warn("%s: cannot clear its key split from sluice_ranges: %s", r->job->name,
                ans.error ? ans.error : "connection lost");
    sl_answer_free(&ans);
}

static int finish(down_run *r, int code)
{
    if (code == SL_EXIT_OK)
        forget_split(r);
    sl_state state = code == SL_EXIT_OK ? SL_STATE_ROLLED_BACK : SL_STATE_ROLLING_BACK;
    const char *outcome = code == SL_EXIT_OK ? "done" : code == SL_EXIT_STOPPED ? "stopped" : "failed";
    sl_err ferr;
    if (sl_ckpt_finish_run_as(r->ckpt, r->run_id, state, outcome, code == SL_EXIT_FAILED ? r->err.msg : NULL, &ferr) !=
        0) {
        sl_error("%s", ferr.msg);
        if (code == SL_EXIT_OK)
            code = SL_EXIT_FAILED;
    }
    if (code == SL_EXIT_OK)
        sl_info("%s: rolled back: %" PRId64 " rows in %zu chunks", r->job->name, r->rows_undone, r->nchunks);
    else if (code == SL_EXIT_STOPPED)
        sl_info("%s: rollback stopped (%" PRId64 " rows undone); `sluice down` resumes it", r->job->name,
                r->rows_undone);
    return code;
}

static int execute(down_run *r)
{
    if (trim_ckpt(r) != 0)
        return SL_EXIT_FAILED;
    sl_ckpt_job cj;
    if (sl_ckpt_get_job(r->ckpt, &cj, &r->err) != 0)
        return SL_EXIT_FAILED;
    if (strcmp(cj.checksum, r->job->checksum) != 0 && cj.checksum[0])
        sl_warn("%s was changed since the job ran; rolling back with the file as it is now", r->job->path);
    if (r->nchunks == 0 && cj.state == SL_STATE_DONE)
        sl_warn("%s: no committed chunk is recorded (stamped done?): nothing to undo; marking it rolled back",
                r->job->name);
    sl_ckpt_job_free(&cj);
    if (sl_ckpt_begin_run(r->ckpt, "down", SL_STATE_ROLLING_BACK, NULL, sl_session_display(r->sess), 0, &r->run_id,
                          &r->err) != 0)
        return SL_EXIT_FAILED;
    char *how = sl_undo_describe_kind(r->job);
    sl_info("%s: rolling back %zu chunks (%" PRId64 " rows) with %s", r->job->name, r->nchunks, r->rows_total, how);
    free(how);
    sl_progress_begin(r->job->name, r->rows_total, 0, r->opts->progress_tty);
    int code = walk(r);
    sl_progress_end();
    return finish(r, code);
}

static int refused_code(int rc)
{
    return rc == -2 ? SL_EXIT_USAGE : SL_EXIT_FAILED;
}

static int down_job(sl_session *sess, const sl_opts *opts, sl_job *job)
{
    down_run r = {.sess = sess, .opts = opts, .job = job, .run_lock_fd = -1};
    char *path = sl_ckpt_path(opts->ckpt_dir, job->name);
    int rc = sl_ckpt_lock(path, &r.run_lock_fd, &r.err);
    free(path);
    int code = rc != 0 ? refused_code(rc) : SL_EXIT_OK;
    if (code == SL_EXIT_OK && (rc = take_lock(&r)) != 0)
        code = refused_code(rc);
    if (code == SL_EXIT_OK && (rc = prepare(&r)) != 0)
        code = refused_code(rc);
    if (code == SL_EXIT_OK)
        code = execute(&r);
    if (code != SL_EXIT_OK && code != SL_EXIT_STOPPED)
        sl_error("%s", r.err.msg);
    release_lock(&r);
    run_free(&r);
    return code;
}

/* ---- choosing the jobs ---- */

/* Refusals of the whole command, before anything is touched. */
static int precheck(sl_session *sess, const sl_opts *opts, sl_job *job)
{
    down_run r = {.sess = sess, .opts = opts, .job = job, .run_lock_fd = -1};
    int rc = prepare(&r);
    char *path = sl_ckpt_path(opts->ckpt_dir, job->name);
    if (rc == 0 && sl_ckpt_locked(path)) {
        sl_err_set(&r.err, "job %s is being run right now (its checkpoint %s is locked)", job->name, path);
        sl_err_append(&r.err, "hint: wait for that run to end, or stop it with SIGINT, then roll back");
        rc = -2;
    }
    free(path);
    if (rc != 0)
        sl_error("%s", r.err.msg);
    run_free(&r);
    return rc == 0 ? SL_EXIT_OK : refused_code(rc);
}

/* Chunks each job has in sluice_progress. */
static int64_t *db_counts(sl_session *sess, const sl_jobset *jobs)
{
    int64_t *counts = sl_calloc(jobs->njobs + 1, sizeof(int64_t));
    sl_answer ans;
    if (sl_session_exec1(sess, "SELECT job, count(*) FROM " SL_PROGRESS_TABLE " GROUP BY job", 0, NULL, &ans) != 0)
        return counts;
    for (int row = 0; ans.ok && row < ans.results[0].nrows; row++)
        for (size_t i = 0; i < jobs->njobs; i++)
            if (strcmp(jobs->jobs[i].name, sl_answer_val(&ans, 0, row, 0)) == 0)
                counts[i] = strtoll(sl_answer_val(&ans, 0, row, 1), NULL, 10);
    sl_answer_free(&ans);
    return counts;
}

/* A job's state from its checkpoint file; -2 when there is none. */
static int read_state(const sl_opts *opts, const sl_job *job, sl_state *state)
{
    char *path = sl_ckpt_path(opts->ckpt_dir, job->name);
    sl_ckpt *ckpt = NULL;
    sl_err err;
    int rc = sl_ckpt_open(path, job->name, 0, &ckpt, &err);
    free(path);
    if (rc == 0) {
        sl_ckpt_job cj;
        rc = sl_ckpt_get_job(ckpt, &cj, &err);
        *state = cj.state;
        sl_ckpt_job_free(&cj);
        sl_ckpt_close(ckpt);
    }
    if (rc == -1)
        sl_error("%s", err.msg);
    return rc;
}

/* Applied: it changed something that is still there (or was stamped done),
 * or a rollback of it is under way. */
static int is_applied(sl_state state, int64_t db_chunks)
{
    if (state == SL_STATE_PENDING || state == SL_STATE_ROLLED_BACK)
        return 0;
    return db_chunks > 0 || state == SL_STATE_DONE || state == SL_STATE_ROLLING_BACK;
}

/* The named job, refused with a reason when there is nothing to undo. */
static int check_named(const sl_opts *opts, const sl_job *job, int rc, sl_state state, int applied)
{
    if (rc == -2) {
        sl_error("down %s: no checkpoint file %s/%s.sluice: the job never ran here, nothing to roll back", job->name,
                 opts->ckpt_dir, job->name);
        sl_error("hint: is --checkpoints pointing where `up` kept them? `sluice status` lists each job's state");
        return SL_EXIT_USAGE;
    }
    if (!applied) {
        sl_error("down %s: the job is %s%s: nothing to roll back", job->name, sl_state_name(state),
                 state == SL_STATE_PENDING || state == SL_STATE_ROLLED_BACK ? "" : " with no committed chunk");
        return SL_EXIT_USAGE;
    }
    return SL_EXIT_OK;
}

/* Fill order[] with the jobs to roll back, newest first. */
static int choose(sl_session *sess, const sl_opts *opts, sl_jobset *jobs, const char *target, size_t *order, size_t *n)
{
    int64_t *counts = db_counts(sess, jobs), want = -1;
    const sl_job *named = NULL;
    int code = SL_EXIT_OK;
    if (strcmp(target, "base") != 0 && target[0] == '-' && sl_parse_int(target + 1, 1, 1000000, &want) != 0) {
        sl_error("down: \"%s\" is not -N, base or a job name", target);
        code = SL_EXIT_USAGE;
    } else if (strcmp(target, "base") != 0 && target[0] != '-') {
        named = sl_jobset_find(jobs, target);
    }
    size_t applied = 0, start = named ? (size_t)(named - jobs->jobs) : 0;
    *n = 0;
    for (size_t i = 0; code == SL_EXIT_OK && i < jobs->njobs; i++) {
        sl_state state = SL_STATE_PENDING;
        int rc = read_state(opts, &jobs->jobs[i], &state);
        if (rc == -1)
            code = SL_EXIT_USAGE;
        int ok = rc == 0 && is_applied(state, counts[i]);
        if (named == &jobs->jobs[i] && code == SL_EXIT_OK)
            code = check_named(opts, named, rc, state, ok);
        if (ok && i >= start)
            order[applied++] = i;
    }
    free(counts);
    if (code == SL_EXIT_OK && want > 0 && (size_t)want > applied) {
        sl_error("down -%" PRId64 ": only %zu job%s applied (hint: `sluice down base` rolls back all of them)", want,
                 applied, applied == 1 ? " is" : "s are");
        code = SL_EXIT_USAGE;
    }
    if (code != SL_EXIT_OK)
        return code;
    /* the last `take` applied jobs, newest first */
    size_t take = want > 0 ? (size_t)want : applied;
    for (size_t i = 0; i < take / 2; i++) {
        size_t tmp = order[applied - take + i];
        order[applied - take + i] = order[applied - 1 - i];
        order[applied - 1 - i] = tmp;
    }
    memmove(order, order + (applied - take), take * sizeof *order);
    *n = take;
    return code;
}

int sl_cmd_down(const sl_opts *opts, sl_jobset *jobs, const char *target)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_session sess;
    sl_err err = {{0}};
    if (sl_session_init(&sess, &loop, opts->db, &err) != 0) {
        sl_error("%s", err.msg);
        uv_loop_close(&loop);
        return SL_EXIT_USAGE;
    }
    sess.ensure_bookkeeping = 1;
    int code = SL_EXIT_OK;
    size_t n = 0, *order = sl_calloc(jobs->njobs + 1, sizeof(size_t));
    if (sl_session_connect(&sess, &err) != 0) {
        sl_error("%s", err.msg);
        code = SL_EXIT_FAILED;
    }
    if (code == SL_EXIT_OK)
        code = choose(&sess, opts, jobs, target, order, &n);
    if (code == SL_EXIT_OK && n == 0)
        sl_info("nothing to roll back: no job is applied");
    for (size_t i = 0; code == SL_EXIT_OK && i < n; i++)
        code = precheck(&sess, opts, &jobs->jobs[order[i]]);
    for (size_t i = 0; code == SL_EXIT_OK && i < n; i++) {
        if (sl_session_stopping(&sess))
            code = SL_EXIT_STOPPED;
        else
            code = down_job(&sess, opts, &jobs->jobs[order[i]]);
    }
    free(order);
    sl_session_close(&sess);
    if (uv_loop_close(&loop) != 0)
        sl_warn("BUG: a libuv handle was left open at exit");
    return code;
}
