/* down.c: `down`: undo a job's committed chunks, newest first, one transaction per chunk, exactly once, resumable.
 *
 * Exactly once rests on the same rule as `up`: a down chunk undoes one up
 * chunk and deletes that chunk's row from sluice_progress (and its undo
 * record from sluice_undo) in the same transaction, so sluice_progress always
 * lists exactly the up chunks still applied. Which jobs and chunks are
 * applied is read from the database; the checkpoint file follows it. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/base/fiber.h"
#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/checkpoints/ckpt.h"
#include "sluice/db/catalog.h"
#include "sluice/engine/down.h"
#include "sluice/engine/undo.h"
#include "sluice/services/metrics.h"
#include "sluice/services/progress.h"

/* One up chunk still applied, as sluice_progress records it. */
typedef struct down_chunk {
    int64_t chunk_no, rows;
    int skipped;                      /* set aside by on-error skip: its statements never applied */
    int lost;                         /* a snapshot job's chunk with no undo record left (--allow-lost-undo) */
    char *edges[2 * SL_MAX_KEY_COLS]; /* lo columns, then hi columns */
} down_chunk;

/* The chunks of one key range (a job with workers; else the whole key):
 * chunks[first .. first + n), ascending. */
typedef struct down_range {
    size_t first, n;
} down_range;

typedef struct down_run {
    sl_session *sess;
    const sl_run_opts *opts;
    sl_job *job;
    sl_run run; /* lock, state, journal (run.h) */
    int opened;
    sl_job_row row; /* as read before the lock, for the refusals */
    sl_table_info info;
    sl_undo_target undo;
    sl_run_identity id;
    char **down_sql;            /* the down section with :lo/:hi rendered */
    sl_chunk_settings timeouts; /* sent after each chunk's BEGIN */
    down_chunk *chunks;         /* ascending chunk_no */
    size_t nchunks;
    int64_t rows_total, rows_undone;
    size_t nlost; /* chunks left as they are: their undo records are gone */
    down_range *ranges;
    size_t nranges, next_range;
    int failed; /* a worker failed: the others stop */
    sl_metrics_job *metrics;
    sl_err err;
} down_run;

/* One connection undoing chunks, one at a time: the run's own session, or
 * (workers) one of its own. */
typedef struct down_worker {
    down_run *r;
    sl_session *sess;
    sl_session own;
    int has_own;
    int rc;     /* how its walk ended: 0, 1 stopped, -1 failed, -3 conflict */
    sl_err err; /* its own: workers wait in turn, and each message must stay its own */
} down_worker;

enum { STEP_OK, STEP_RETRY, STEP_FAILED, STEP_LOST, STEP_CONFLICT, STEP_GONE, STEP_FENCED };

static void free_chunks(down_run *r)
{
    for (size_t c = 0; c < r->nchunks; c++)
        for (size_t i = 0; i < 2 * SL_MAX_KEY_COLS; i++)
            free(r->chunks[c].edges[i]);
    free(r->chunks);
    free(r->ranges);
    r->chunks = NULL;
    r->ranges = NULL;
    r->nchunks = r->nranges = r->next_range = 0;
    r->rows_total = 0;
}

static void run_free(down_run *r)
{
    free_chunks(r);
    if (r->down_sql)
        for (size_t i = 0; i < r->job->down.nstmts; i++)
            free(r->down_sql[i]);
    free(r->down_sql);
    sl_undo_target_free(&r->undo);
    sl_table_info_free(&r->info);
    sl_run_identity_free(&r->id);
    sl_job_row_free(&r->row);
    if (r->opened)
        sl_run_close(&r->run);
    memset(r, 0, sizeof *r);
}

/* ---- reading what is applied ---- */

/* Chunk `row` of range range_no, after a chunk of range prev (-1: none). */
static void add_to_range(down_run *r, size_t row, int64_t range_no, int64_t prev)
{
    if (range_no != prev) {
        r->ranges = sl_realloc(r->ranges, (r->nranges + 1) * sizeof *r->ranges);
        r->ranges[r->nranges++] = (down_range){row, 0};
    }
    r->ranges[r->nranges - 1].n++;
}

/* The job's chunks still in sluice_progress, ascending in each key range,
 * and for a snapshot job which of them have no undo record. */
static int load_chunks(down_run *r)
{
    size_t n = r->info.ks.ncols;
    free_chunks(r);
    sl_buf b = {0};
    sl_buf_printf(&b, "SELECT p.chunk_no, p.rows, CASE WHEN p.skipped THEN 'true' ELSE 'false' END, %s,",
                  r->sess->dialect == SL_DIALECT_PG ? "p.range_no" : "0");
    sl_buf_adds(&b, " CASE WHEN EXISTS (SELECT 1 FROM " SL_UNDO_TABLE
                    " u WHERE u.job = p.job AND u.chunk_no = p.chunk_no) THEN 'true' ELSE 'false' END");
    sl_session_add_key_elems(r->sess, &b, "p.lo", n);
    sl_session_add_key_elems(r->sess, &b, "p.hi", n);
    /* by range (a job with workers), then number: a range's chunks in the order they committed */
    sl_buf_printf(&b, " FROM " SL_PROGRESS_TABLE " p WHERE p.job = $1 ORDER BY %sp.chunk_no",
                  r->sess->dialect == SL_DIALECT_PG ? "p.range_no, " : "");
    const char *params[] = {r->job->name};
    sl_answer ans;
    int rc = sl_session_exec1(r->sess, b.data, 1, params, &ans);
    sl_buf_free(&b);
    if (rc != 0 || !ans.ok) {
        sl_err_set(&r->err, "cannot read %s: %s", SL_PROGRESS_TABLE, ans.error ? ans.error : "connection lost");
        sl_answer_free(&ans);
        return -1;
    }
    int snapshot = r->job->undo == SL_UNDO_SNAPSHOT_COLS || r->job->undo == SL_UNDO_SNAPSHOT_ALL;
    r->nchunks = (size_t)ans.results[0].nrows;
    r->chunks = sl_calloc(r->nchunks + 1, sizeof(down_chunk));
    for (int row = 0; row < (int)r->nchunks && rc == 0; row++) {
        down_chunk *c = &r->chunks[row];
        c->chunk_no = strtoll(sl_answer_val(&ans, 0, row, 0), NULL, 10);
        c->rows = strtoll(sl_answer_val(&ans, 0, row, 1), NULL, 10);
        c->skipped = strcmp(sl_answer_val(&ans, 0, row, 2), "true") == 0;
        int64_t range_no = strtoll(sl_answer_val(&ans, 0, row, 3), NULL, 10);
        c->lost = snapshot && !c->skipped && strcmp(sl_answer_val(&ans, 0, row, 4), "true") != 0;
        r->rows_total += c->rows;
        add_to_range(r, (size_t)row, range_no, row > 0 ? strtoll(sl_answer_val(&ans, 0, row - 1, 3), NULL, 10) : -1);
        for (size_t i = 0; i < 2 * n && rc == 0; i++) {
            const char *v = sl_answer_val(&ans, 0, row, (int)(5 + i));
            c->edges[i] = v ? sl_strdup(v) : NULL;
            if (!v) {
                sl_err_set(&r->err, "%s: %s holds fewer key columns than the job's key (%zu): was the key changed?",
                           r->job->name, SL_PROGRESS_TABLE, n);
                rc = SL_EREFUSED;
            }
        }
    }
    sl_answer_free(&ans);
    return rc;
}

/* A snapshot job cannot undo a chunk without its record: say which, and
 * refuse unless told to leave them as they are. */
static int check_records(down_run *r)
{
    sl_buf list = {0};
    size_t lost = 0;
    for (size_t c = 0; c < r->nchunks; c++)
        if (r->chunks[c].lost && lost++ < 20)
            sl_buf_printf(&list, "%s%" PRId64, lost > 1 ? ", " : "", r->chunks[c].chunk_no);
    r->nlost = lost;
    if (lost == 0)
        return 0;
    sl_err_set(&r->err, "%s: %zu committed chunk%s no undo record in %s, so down cannot put %s back: chunk%s %s%s",
               r->job->name, lost, lost == 1 ? " has" : "s have", SL_UNDO_TABLE, lost == 1 ? "it" : "them",
               lost == 1 ? "" : "s", list.data, lost > 20 ? ", ..." : "");
    sl_buf_free(&list);
    if (r->opts->allow_lost_undo) {
        sl_warn("%s; leaving them as they are (--allow-lost-undo)", r->err.msg);
        return 0;
    }
    sl_err_append(&r->err,
                  "hint: was the undo directive added after they ran, or were rows deleted from %s? "
                  "--allow-lost-undo rolls back the rest and leaves those chunks as they are",
                  SL_UNDO_TABLE);
    return SL_EREFUSED;
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

/* What the job walks, as the live database resolves its file, must be what
 * its chunks walked: undoing them with another key or other columns would
 * put the wrong rows back. A changed file is only a warning: down runs the
 * down section as it is now. */
static int check_identity(down_run *r, const sl_job_row *row)
{
    sl_run_opts lenient = *r->opts;
    lenient.allow_changed_statements = 1;
    if (row->chunks > 0 && row->checksum[0] && strcmp(row->checksum, r->job->checksum) != 0)
        sl_warn("%s was changed since the job ran; rolling back with the file as it is now", r->job->path);
    sl_job_row quiet = *row;
    quiet.checksum = (char *)""; /* the warning above says it */
    return sl_run_check_identity(&quiet, r->job, &r->id, &lenient, &r->err);
}

/* Everything that may refuse the job, reading only: 0, -2 refused, -1 failed. */
static int prepare(down_run *r, const sl_job_row *row)
{
    if (r->job->undo == SL_UNDO_NONE) {
        sl_err_set(&r->err, "%s: job %s has no way back: no down section and no snapshot", r->job->path, r->job->name);
        sl_err_append(&r->err, "hint: add a -- sluice:down section that undoes one chunk (:lo .. :hi), or save old "
                               "values with -- sluice:undo snapshot(COL, ...) (snapshot(*) for DELETE jobs) before "
                               "running it");
        return SL_EREFUSED;
    }
    if (sl_catalog_resolve(r->sess, r->job, &r->info, &r->err) != 0 ||
        sl_undo_resolve(r->sess, r->job, &r->info, &r->undo, &r->err) != 0)
        return SL_EREFUSED;
    r->id.table = sl_strdup(r->info.ks.table);
    r->id.key = sl_keys_column_list(&r->info.ks);
    r->id.where = r->job->where ? sl_strdup(r->job->where) : NULL;
    r->id.undo = sl_undo_identity(&r->undo);
    int rc = check_identity(r, row);
    if (rc == 0)
        rc = load_chunks(r);
    if (rc == 0)
        rc = check_records(r);
    if (rc == 0)
        render_down(r);
    return rc;
}

/* After a lost connection: is the chunk still applied? */
static int still_applied(down_worker *w, int64_t chunk_no, int *applied)
{
    down_run *r = w->r;
    char no[24];
    snprintf(no, sizeof no, "%" PRId64, chunk_no);
    const char *params[] = {r->job->name, no};
    sl_answer ans;
    if (sl_session_exec1(w->sess, "SELECT 1 FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND chunk_no = $2", 2, params,
                         &ans) != 0 ||
        !ans.ok) {
        int lost = ans.conn_lost || !sl_session_connected(w->sess);
        sl_answer_free(&ans);
        return lost ? 1 : -1;
    }
    *applied = ans.results[0].nrows > 0;
    sl_answer_free(&ans);
    return 0;
}

/* ---- one down chunk ---- */

static void rollback(down_worker *w)
{
    sl_answer rb;
    if (sl_session_exec1(w->sess, "ROLLBACK", 0, NULL, &rb) == 0)
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
static int step_failed(down_worker *w, const down_chunk *c, sl_answer *ans, int in_tx, int64_t attempts)
{
    down_run *r = w->r;
    if (ans->conn_lost) {
        sl_answer_free(ans);
        return STEP_LOST;
    }
    if (in_tx)
        rollback(w);
    char *range = chunk_range(r, c);
    sl_err_set(&w->err, "%s: undoing chunk %" PRId64 " %s failed on attempt %" PRId64 ": %s%s%s", r->job->name,
               c->chunk_no, range, attempts, ans->sqlstate, ans->sqlstate[0] ? " " : "", ans->error);
    free(range);
    int transient = sl_answer_transient(ans->sqlstate);
    sl_answer_free(ans);
    return transient ? STEP_RETRY : STEP_FAILED;
}

static void report_conflict(down_worker *w, const down_chunk *c, const sl_undo_step *st)
{
    down_run *r = w->r;
    char *range = chunk_range(r, c);
    sl_err_set(&w->err,
               "%s: chunk %" PRId64 " %s: %zu row%s changed by someone else since the job wrote %s: key%s %s; "
               "nothing in this chunk was changed",
               r->job->name, c->chunk_no, range, st->nconflicts, st->nconflicts == 1 ? " was" : "s were",
               st->nconflicts == 1 ? "it" : "them", st->nconflicts == 1 ? "" : "s", st->conflicts);
    free(range);
    if (r->job->undo == SL_UNDO_DOWN)
        sl_err_append(&w->err, "hint: the down section cannot leave single rows out: check those rows, then "
                               "`sluice down` again with --on-conflict overwrite to run it anyway");
    else
        sl_err_append(&w->err, "hint: check those rows, then `sluice down` again with --on-conflict skip (leave them "
                               "as they are now) or --on-conflict overwrite (put back what the job found)");
}

/* Where each query of segment 1 sits. */
typedef struct begin_layout {
    size_t fence_i, prog_i, undo_i, state_i, n;
    int fence, undo, state;
} begin_layout;

/* Segment 1: open the transaction, prove the lease (PostgreSQL), take the
 * chunk's progress row (its absence means it is already undone) and its undo
 * record, and read the rows as they are now. */
static int begin_chunk(down_worker *w, const down_chunk *c, sl_answer *ans, begin_layout *l, int64_t attempts)
{
    down_run *r = w->r;
    char no[24];
    snprintf(no, sizeof no, "%" PRId64, c->chunk_no);
    const char *fence = sl_run_fence_id(&r->run);
    const char *prog[] = {r->job->name, no}, *own[] = {r->job->name, fence};
    size_t n = 0;
    sl_query q[8];
    q[n++] = (sl_query){sl_session_begin_sql(w->sess), 0, NULL, 0};
    for (size_t i = 0; i < r->timeouts.n; i++)
        q[n++] = (sl_query){r->timeouts.sql[i], 0, NULL, 0};
    memset(l, 0, sizeof *l);
    if ((l->fence = fence != NULL)) {
        l->fence_i = n;
        q[n++] = (sl_query){"SELECT 1 FROM " SL_JOBS_TABLE " WHERE job = $1 AND runner = $2 FOR KEY SHARE", 2, own, 0};
    }
    l->prog_i = n;
    q[n++] = (sl_query){"DELETE FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND chunk_no = $2 RETURNING 1", 2, prog, 0};
    l->undo_i = n;
    q[n++] = (sl_query){sl_undo_take_sql(&r->undo), 2, prog, 0};
    if ((l->state = r->undo.state_sql != NULL && !c->skipped)) {
        l->state_i = n;
        q[n++] = (sl_query){r->undo.state_sql, 2 * (int)r->info.ks.ncols, (const char *const *)c->edges, 0};
    }
    l->n = n;
    if (sl_session_exec(w->sess, q, n, ans) != 0)
        return STEP_LOST;
    if (!ans->ok)
        return step_failed(w, c, ans, ans->failed_index >= 1, attempts);
    int owned = !l->fence || ans->results[l->fence_i].nrows > 0, gone = ans->results[l->prog_i].nrows == 0;
    if (!owned || gone) {
        rollback(w);
        sl_answer_free(ans);
        if (!owned)
            sl_run_fenced(&r->run);
        return owned ? STEP_GONE : STEP_FENCED;
    }
    return STEP_OK;
}

/* Segment 2: the restore (or the down section), then COMMIT. */
static int finish_chunk(down_worker *w, const down_chunk *c, const sl_undo_step *st, int64_t attempts)
{
    down_run *r = w->r;
    /* a row set aside by on-error skip was never changed, and a chunk with
     * its record lost is left as it is: only its progress row goes */
    int leave = c->skipped || (c->lost && r->job->undo != SL_UNDO_DOWN);
    size_t k = leave ? 0 : r->job->undo == SL_UNDO_DOWN ? r->job->down.nstmts : st->nq, n = r->info.ks.ncols;
    sl_query *q = sl_calloc(k + 1, sizeof *q);
    for (size_t i = 0; i < k; i++) {
        if (r->job->undo != SL_UNDO_DOWN) {
            q[i] = st->q[i];
            continue;
        }
        const sl_stmt *s = &r->job->down.stmts[i];
        int used = (s->uses_lo + s->uses_hi) * (int)n;
        q[i] = (sl_query){r->down_sql[i], used, (const char *const *)(s->uses_lo ? c->edges : c->edges + n)};
    }
    q[k] = (sl_query){"COMMIT", 0, NULL};
    sl_answer ans;
    int rc = sl_session_exec(w->sess, q, k + 1, &ans);
    free(q);
    if (rc != 0)
        return STEP_LOST;
    if (!ans.ok && r->job->undo != SL_UNDO_DOWN && r->sess->dialect == SL_DIALECT_PG && ans.failed_index >= 0 &&
        ans.failed_index < (int)k && strcmp(ans.sqlstate, "22012") == 0) {
        /* a restore found a row changed since down looked at it (undo.c, guard_sql): nothing of the
         * chunk was written; the next attempt looks again, and sees the conflict if it stays */
        rollback(w);
        char *range = chunk_range(r, c);
        sl_err_set(&w->err, "%s: chunk %" PRId64 " %s: rows changed by another session while it was undone",
                   r->job->name, c->chunk_no, range);
        free(range);
        sl_answer_free(&ans);
        return STEP_RETRY;
    }
    if (!ans.ok)
        return step_failed(w, c, &ans, ans.failed_index < (int)k, attempts);
    sl_answer_free(&ans);
    return STEP_OK;
}

/* Plan the restore from the chunk's record and the rows as they are now. */
static int plan_chunk(down_worker *w, const down_chunk *c, const sl_answer *ans, const begin_layout *l,
                      sl_undo_step *step)
{
    down_run *r = w->r;
    const char *text = sl_answer_val(ans, l->undo_i, 0, 0);
    memset(step, 0, sizeof *step);
    if (!text || !l->state)
        return 0; /* no record (a down section without hashes, a row set aside, a record lost) */
    sl_snap snap;
    if (sl_undo_record_decode(&r->undo, c->chunk_no, text, &snap, &w->err) != 0)
        return -1;
    sl_undo_plan_chunk(&r->undo, &snap, &ans->results[l->state_i], c->edges, r->opts->on_conflict, step);
    sl_snap_free(&snap);
    return 0;
}

/* Undo chunk c once: STEP_* outcome. */
static int send_chunk(down_worker *w, down_chunk *c, int64_t attempts)
{
    down_run *r = w->r;
    sl_answer ans;
    begin_layout l;
    int st = begin_chunk(w, c, &ans, &l, attempts);
    if (st != STEP_OK)
        return st;
    int snapshot = r->job->undo != SL_UNDO_DOWN;
    if (snapshot && !c->skipped && !sl_answer_val(&ans, l.undo_i, 0, 0) && !c->lost) {
        c->lost = 1; /* deleted since the run began: refused unless told to leave such chunks */
        if (!r->opts->allow_lost_undo) {
            rollback(w);
            sl_answer_free(&ans);
            sl_err_set(&w->err, "%s: chunk %" PRId64 " has no undo record in %s, so down cannot put it back",
                       r->job->name, c->chunk_no, SL_UNDO_TABLE);
            sl_err_append(&w->err, "hint: --allow-lost-undo leaves such chunks as they are");
            return STEP_FAILED;
        }
        r->nlost++;
    }
    sl_undo_step step;
    if (plan_chunk(w, c, &ans, &l, &step) != 0) {
        rollback(w);
        sl_answer_free(&ans);
        return STEP_FAILED;
    }
    sl_answer_free(&ans);
    int refuse = step.nconflicts > 0 && (r->opts->on_conflict == SL_CONFLICT_STOP ||
                                         (r->undo.kind == SL_UNDO_DOWN && r->opts->on_conflict == SL_CONFLICT_SKIP));
    if (refuse) {
        rollback(w);
        report_conflict(w, c, &step);
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
        if (step.nkept)
            sl_warn("%s: chunk %" PRId64 ": %zu row%s the job inserted left in place: snapshot(COL, ...) writes "
                    "columns back, it does not delete rows (hint: snapshot(*) does)",
                    r->job->name, c->chunk_no, step.nkept, step.nkept == 1 ? "" : "s");
        if (c->lost)
            sl_warn("%s: chunk %" PRId64 " left as it is: its undo record is gone", r->job->name, c->chunk_no);
        st = finish_chunk(w, c, &step, attempts);
    }
    sl_undo_step_free(&step);
    return st;
}

/* After the commit: the journal follows (it may lag; opening a run syncs it). */
static int record_undone(down_worker *w, const down_chunk *c, int64_t started)
{
    down_run *r = w->r;
    int64_t ms = sl_mono_ms() - started;
    if (sl_ckpt_undo_chunk(r->run.ckpt, r->run.run_id, c->chunk_no, c->rows, ms, &w->err) != 0)
        return -1;
    r->rows_undone += c->rows;
    if (r->metrics)
        sl_metrics_chunk(r->metrics, c->rows, ms);
    return 0;
}

/* Retry one chunk to an outcome: 0 undone, 1 stopped, -1 failed, -3 conflict. */
static int do_chunk(down_worker *w, down_chunk *c)
{
    down_run *r = w->r;
    int64_t started = sl_mono_ms();
    for (int64_t attempts = 1;; attempts++) {
        int st = send_chunk(w, c, attempts);
        if (st == STEP_OK || st == STEP_GONE)
            return record_undone(w, c, started);
        if (st == STEP_FENCED) {
            sl_err_set(&w->err, "%s", r->run.lease.why);
            return -1;
        }
        if (st == STEP_FAILED)
            return -1;
        if (st == STEP_CONFLICT)
            return SL_ECONFLICT;
        if (st == STEP_LOST) {
            if (sl_session_stopping(w->sess))
                return SL_STOPPED; /* the next run sees from sluice_progress whether it committed */
            int applied = 1, rc = sl_run_reconnect(&r->run, w->sess);
            if (rc < 0)
                w->err = r->run.err;
            if (rc == 0)
                rc = still_applied(w, c->chunk_no, &applied);
            if (rc != 0)
                return rc > 0 ? SL_STOPPED : SL_EFAIL;
            if (!applied)
                return record_undone(w, c, started);
            continue;
        }
        if (attempts > r->job->retries)
            return -1;
        int64_t wait = sl_session_backoff_ms((int)attempts);
        sl_log_event(SL_LOG_WARN, "retry",
                     json_pack("{sIsIsIso}", "chunk", (json_int_t)c->chunk_no, "attempt", (json_int_t)attempts,
                               "wait_ms", (json_int_t)wait, "error", sl_json_str(w->err.msg)),
                     "%s (transient; retrying in %" PRId64 " ms)", w->err.msg, wait);
        sl_run_event(&r->run, "retry", w->err.msg);
        if (r->metrics)
            sl_metrics_count(r->metrics, SL_COUNT_RETRY, 1);
        if (sl_session_sleep(w->sess, wait))
            return SL_STOPPED;
    }
}

/* A worker's ranges, one after the other, and in each the chunks newest
 * first: what is left applied of a range is always its oldest chunks, so an
 * `up` (or a `down`) after a stop resumes it. 0 done, 1 stopped, -1 failed,
 * -3 a conflict. */
static int walk_ranges(down_worker *w)
{
    down_run *r = w->r;
    for (;;) {
        if (r->failed)
            return 0; /* another worker's failure ends the run */
        if (r->next_range >= r->nranges)
            return 0;
        const down_range *kr = &r->ranges[r->next_range++];
        for (size_t i = kr->first + kr->n; i-- > kr->first;) {
            if (sl_session_stopping(r->sess))
                return SL_STOPPED;
            if (r->failed)
                return 0;
            if (sl_run_lost(&r->run)) {
                sl_err_set(&w->err, "%s", r->run.lease.why);
                return -1;
            }
            int rc = do_chunk(w, &r->chunks[i]);
            if (rc != 0)
                return rc;
            sl_progress_update(r->rows_undone, r->job->batch);
            if (r->job->pause_ms > 0 && sl_session_sleep(w->sess, r->job->pause_ms))
                return SL_STOPPED;
        }
    }
}

static void worker_main(void *arg)
{
    down_worker *w = arg;
    w->rc = walk_ranges(w);
    if (w->rc < 0 && !w->r->failed) {
        w->r->failed = 1;
        w->r->err = w->err;
    }
}

/* The workers' sessions: the run's own, and one more connection a worker
 * (PostgreSQL, with workers N and as many key ranges). A connection that
 * cannot be opened leaves fewer workers. */
static size_t start_workers(down_run *r, down_worker *ws, size_t want)
{
    size_t n = 1;
    ws[0] = (down_worker){.r = r, .sess = r->sess};
    for (size_t i = 1; i < want; i++) {
        down_worker *w = &ws[n];
        *w = (down_worker){.r = r};
        sl_err err;
        if (sl_session_init_from(&w->own, r->sess, &err) != 0 ||
            (w->own.quiet = 1, sl_session_connect(&w->own, &err) != 0)) {
            sl_warn("%s: worker %zu cannot connect, going on with %zu: %s", r->job->name, i, n, err.msg);
            if (sl_session_is(&w->own, SL_DIALECT_PG))
                sl_session_close_now(&w->own);
            break;
        }
        sl_session_set_timeouts(&w->own, r->job->lock_timeout_ms, r->job->statement_timeout_ms);
        w->has_own = 1;
        w->sess = &w->own;
        n++;
    }
    return n;
}

/* Undo every applied chunk: with workers, ranges at once, each on its own
 * connection in a fiber of its own. Returns an exit code. */
static int walk(down_run *r)
{
    size_t want = r->job->workers > 1 && r->sess->dialect == SL_DIALECT_PG ? (size_t)r->job->workers : 1;
    if (want > r->nranges)
        want = r->nranges ? r->nranges : 1;
    down_worker *ws = sl_calloc(want + 1, sizeof *ws);
    size_t n = start_workers(r, ws, want);
    if (n > 1) {
        sl_info("%s: %zu workers over %zu key ranges", r->job->name, n, r->nranges);
        sl_fiber **fibers = sl_calloc(n + 1, sizeof *fibers);
        for (size_t i = 0; i < n; i++)
            fibers[i] = sl_fiber_new(worker_main, &ws[i]);
        sl_fiber_run_all(r->sess->loop, fibers, n, n);
        for (size_t i = 0; i < n; i++)
            sl_fiber_free(fibers[i]);
        free(fibers);
    } else {
        worker_main(&ws[0]);
    }
    int stopped = 0;
    for (size_t i = 0; i < n; i++) {
        stopped |= ws[i].rc == SL_STOPPED;
        if (ws[i].has_own)
            sl_session_close_now(&ws[i].own);
    }
    free(ws);
    return r->failed ? SL_EXIT_FAILED : stopped ? SL_EXIT_STOPPED : SL_EXIT_OK;
}

/* ---- one job ---- */

/* Everything undone: forget the job's key split (up_split.c), so that a new
 * `up` splits the table as it is then. A failure here costs nothing: an old
 * split still covers the whole key. */
static void forget_split(down_run *r)
{
    if (r->sess->dialect != SL_DIALECT_PG)
        return;
    const char *params[] = {r->job->name};
    sl_answer ans;
    if (sl_session_exec1(r->sess, "DELETE FROM " SL_RANGES_TABLE " WHERE job = $1", 1, params, &ans) != 0 || !ans.ok)
        sl_warn("%s: cannot clear its key split from %s: %s", r->job->name, SL_RANGES_TABLE,
                ans.error ? ans.error : "connection lost");
    sl_answer_free(&ans);
}

static int finish(down_run *r, int code)
{
    if (code == SL_EXIT_OK)
        forget_split(r);
    r->run.err = r->err;
    code = sl_run_finish(&r->run, code);
    if (r->metrics)
        sl_metrics_state(r->metrics, code == SL_EXIT_OK ? "rolled_back" : "rolling_back");
    json_t *fields = json_pack("{sIsI}", "rows", (json_int_t)r->rows_undone, "chunks", (json_int_t)r->nchunks);
    if (code == SL_EXIT_OK || code == SL_EXIT_STOPPED)
        sl_log_event(SL_LOG_INFO, code == SL_EXIT_OK ? "rolled_back" : "stopped", fields, "%s: %s", r->job->name,
                     code == SL_EXIT_OK ? "rolled back" : "rollback stopped");
    else
        json_decref(fields);
    if (code == SL_EXIT_OK && r->nlost)
        sl_info("%s: rolled back: %" PRId64 " rows in %zu chunks; %zu chunk%s left as %s (no undo record)",
                r->job->name, r->rows_undone, r->nchunks - r->nlost, r->nlost, r->nlost == 1 ? "" : "s",
                r->nlost == 1 ? "it was" : "they were");
    else if (code == SL_EXIT_OK)
        sl_info("%s: rolled back: %" PRId64 " rows in %zu chunks", r->job->name, r->rows_undone, r->nchunks);
    else if (code == SL_EXIT_STOPPED)
        sl_info("%s: rollback stopped (%" PRId64 " rows undone); `sluice down` resumes it", r->job->name,
                r->rows_undone);
    return code;
}

static int execute(down_run *r)
{
    if (r->nchunks == 0 && r->run.row.state == SL_STATE_DONE)
        sl_warn("%s: no committed chunk is recorded (stamped done?): nothing to undo; marking it rolled back",
                r->job->name);
    if (sl_run_begin(&r->run, &r->id, NULL, 0) != 0) {
        r->err = r->run.err;
        return SL_EXIT_FAILED;
    }
    char *how = sl_undo_describe_kind(r->job);
    sl_log_event(SL_LOG_INFO, "start",
                 json_pack("{sbsIsIss}", "down", 1, "chunks", (json_int_t)r->nchunks, "rows", (json_int_t)r->rows_total,
                           "undo", how),
                 "%s: rolling back %zu chunks (%" PRId64 " rows) with %s", r->job->name, r->nchunks, r->rows_total,
                 how);
    free(how);
    r->metrics = sl_metrics_job_get(r->job->name);
    sl_metrics_begin(r->metrics, 1, r->rows_total, 0, 0);
    sl_metrics_state(r->metrics, "rolling_back");
    sl_progress_begin(r->job->name, r->rows_total, 0, r->opts->progress_tty);
    int code = walk(r);
    sl_progress_end();
    return finish(r, code);
}

static int refused_code(int rc)
{
    return rc == SL_EREFUSED ? SL_EXIT_USAGE : SL_EXIT_FAILED;
}

static int down_job(sl_session *sess, const sl_run_opts *opts, sl_job *job)
{
    down_run r = {.sess = sess, .opts = opts, .job = job};
    sl_log_set_job(job->name);
    int rc = sl_run_read_row(sess, job->name, &r.row, &r.err);
    if (rc == 0)
        rc = prepare(&r, &r.row);
    if (rc == 0) {
        rc = sl_run_open(&r.run, sess, opts, job, SL_RUN_DOWN);
        r.opened = 1;
        if (rc != 0)
            r.err = r.run.err;
    }
    /* under the lock, what is applied now (another runner may have changed it) */
    if (rc == 0)
        rc = load_chunks(&r);
    if (rc == 0)
        rc = check_records(&r);
    int code = rc != 0 ? refused_code(rc) : execute(&r);
    if (code != SL_EXIT_OK && code != SL_EXIT_STOPPED)
        sl_log_event(SL_LOG_ERROR, code == SL_EXIT_USAGE ? "refused" : "failed",
                     json_pack("{so}", "error", sl_json_str(r.err.msg)), "%s", r.err.msg);
    run_free(&r);
    sl_log_set_job(NULL);
    return code;
}

/* ---- choosing the jobs ---- */

/* Refusals of the whole command, before anything is touched. */
static int precheck(sl_session *sess, const sl_run_opts *opts, sl_job *job)
{
    down_run r = {.sess = sess, .opts = opts, .job = job};
    int rc = sl_run_check_journal(sess, opts, job->name, &r.err);
    if (rc == 0)
        rc = sl_run_read_row(sess, job->name, &r.row, &r.err);
    if (rc == 0)
        rc = prepare(&r, &r.row);
    if (rc == 0 && r.row.runner) {
        sl_err_set(&r.err, "job %s is being run right now (by %s)", job->name, r.row.runner);
        sl_err_append(&r.err, "hint: wait for that run to end, or stop it with SIGINT, then roll back");
        rc = SL_EREFUSED;
    }
    if (rc != 0)
        sl_error("%s", r.err.msg);
    run_free(&r);
    return rc == 0 ? SL_EXIT_OK : refused_code(rc);
}

/* Applied: it changed something that is still there (or was stamped done),
 * or a rollback of it is under way. */
static int is_applied(const sl_job_row *row)
{
    if (row->state == SL_STATE_PENDING || row->state == SL_STATE_ROLLED_BACK)
        return row->chunks > 0; /* a rollback killed between its last chunk and its end */
    return row->chunks > 0 || row->state == SL_STATE_DONE || row->state == SL_STATE_ROLLING_BACK;
}

/* The named job, refused with a reason when there is nothing to undo. */
static int check_named(const sl_session *sess, const sl_job *job, const sl_job_row *row, int applied)
{
    if (applied)
        return SL_EXIT_OK;
    if (!row->exists && row->chunks == 0) {
        sl_error("down %s: the job never ran against %s: nothing to roll back", job->name, sl_session_display(sess));
        sl_error("hint: is --db pointing at the database `up` ran against? `sluice status` lists each job's state");
        return SL_EXIT_USAGE;
    }
    sl_error("down %s: the job is %s%s: nothing to roll back", job->name, sl_state_name(row->state),
             row->state == SL_STATE_PENDING || row->state == SL_STATE_ROLLED_BACK ? "" : " with no committed chunk");
    return SL_EXIT_USAGE;
}

/* Fill order[] with the jobs to roll back, newest first. */
static int choose(sl_session *sess, sl_jobset *jobs, const char *target, size_t *order, size_t *n)
{
    int64_t want = -1;
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
        sl_job_row row;
        sl_err err;
        if (sl_run_read_row(sess, jobs->jobs[i].name, &row, &err) != 0) {
            sl_error("%s", err.msg);
            code = SL_EXIT_FAILED;
            break;
        }
        int ok = is_applied(&row);
        if (named == &jobs->jobs[i])
            code = check_named(sess, named, &row, ok);
        sl_job_row_free(&row);
        if (ok && i >= start)
            order[applied++] = i;
    }
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

int sl_down_jobs(sl_session *sess, const sl_run_opts *opts, sl_jobset *jobs, const char *target)
{
    size_t n = 0, *order = sl_calloc(jobs->njobs + 1, sizeof(size_t));
    int code = choose(sess, jobs, target, order, &n);
    if (code == SL_EXIT_OK && n == 0)
        sl_info("nothing to roll back: no job is applied");
    for (size_t i = 0; code == SL_EXIT_OK && i < n; i++)
        code = precheck(sess, opts, &jobs->jobs[order[i]]);
    for (size_t i = 0; code == SL_EXIT_OK && i < n; i++) {
        if (sl_session_stopping(sess))
            code = SL_EXIT_STOPPED;
        else
            code = down_job(sess, opts, &jobs->jobs[order[i]]);
    }
    free(order);
    return code;
}
