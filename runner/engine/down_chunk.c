/* down_chunk.c: `down`'s chunks, each undone in a transaction of its own, by workers over the key's ranges. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/base/fiber.h"
#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/checkpoints/ckpt.h"
#include "sluice/services/progress.h"

#include "down_internal.h"

/* STEP_RECHECK: a trusting restore (or a down section's check) found a
 * row not as the job left it; nothing was written, and the chunk goes
 * again at once, looking first.
 * STEP_AGAIN: a chunk planned ahead found its progress row, its record or
 * the lease not as read ahead; nothing was written, and the chunk goes
 * again at once, as without reading ahead, which tells which it was. */
enum { STEP_OK, STEP_RETRY, STEP_FAILED, STEP_LOST, STEP_CONFLICT, STEP_GONE, STEP_FENCED, STEP_RECHECK, STEP_AGAIN };

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

/* Where each query of segment 1 sits, and whose SQL read the rows (state). */
typedef struct begin_layout {
    size_t fence_i, prog_i, undo_i, state_i, n;
    int fence, undo, state;
    const sl_undo_target *look_as;
} begin_layout;

/* Segment 1: open the transaction, prove the lease (PostgreSQL), take the
 * chunk's progress row (its absence means it is already undone) and its undo
 * record, and (look) read the rows as they are now, hashed as the worker's
 * last record asked (a job an older sluice began hashes as it did). */
static int begin_chunk(down_worker *w, const down_chunk *c, sl_answer *ans, begin_layout *l, int64_t attempts, int look)
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
        q[n++] = (sl_query){r->timeouts.sql[i], 0, NULL, 1};
    memset(l, 0, sizeof *l);
    if ((l->fence = fence != NULL)) {
        l->fence_i = n;
        /* a serializable default sees the row as it began: the lock must conflict with a takeover */
        q[n++] = (sl_query){down_fence_for_share(r)
                                ? "SELECT 1 FROM " SL_JOBS_TABLE " WHERE job = $1 AND runner = $2 FOR SHARE"
                                : "SELECT 1 FROM " SL_JOBS_TABLE " WHERE job = $1 AND runner = $2 FOR KEY SHARE",
                            2, own, 1};
    }
    l->prog_i = n;
    q[n++] = (sl_query){"DELETE FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND chunk_no = $2 RETURNING 1", 2, prog, 1};
    l->undo_i = n;
    q[n] = (sl_query){sl_undo_take_sql(), 2, prog, 1};
    q[n++].binary_result = w->sess->dialect == SL_DIALECT_PG; /* the record's bytes, not twice as many hex digits */
    l->look_as = w->look_as ? w->look_as : &r->undo;
    if ((l->state = look && l->look_as->state_sql != NULL && !c->skipped)) {
        l->state_i = n;
        q[n++] = (sl_query){l->look_as->state_sql, 2 * (int)r->info.ks.ncols, (const char *const *)c->edges, 1};
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

/* Send the chunk's last batch, ending with the reads ahead, and plan what
 * was read ahead before while it runs (down_ahead.c). 0, or -1 (not
 * connected). */
static int send_last(down_worker *w, sl_query *q, size_t n, size_t *nfetch, sl_answer *ans)
{
    *nfetch = down_ahead_fetch(w, q + n);
    sl_pending p;
    if (sl_session_send(w->sess, q, n + *nfetch, &p) != 0)
        return -1;
    down_ahead_plan(w);
    while (!p.done)
        sl_fiber_wait(w->sess->loop);
    *ans = p.ans;
    return 0;
}

/* Segment 2: the restore (or the down section), then COMMIT. Ahead (a
 * chunk planned from its record read ahead), the chunk's only batch:
 * BEGIN and the statement that opens it (down_ahead_open_sql) go first. */
static int finish_chunk(down_worker *w, const down_chunk *c, const sl_undo_step *st, int64_t attempts, int trusting,
                        int ahead)
{
    down_run *r = w->r;
    /* a row set aside by on-error skip was never changed, and a chunk with
     * its record lost is left as it is: only its progress row goes */
    int leave = c->skipped || (c->lost && r->job->undo != SL_UNDO_DOWN);
    /* a down section planned from its record alone goes after the record's check (st->q) */
    int section = r->job->undo == SL_UNDO_DOWN;
    size_t nchk = section && !leave ? st->nq : 0;
    size_t k = leave ? 0 : section ? nchk + r->job->down.nstmts : st->nq, n = r->info.ks.ncols;
    /* The trusting restore keeps to the chunk's range (undo_restore.c): with
     * nested loops off for its transaction the planner reads the range once
     * and joins it with the rows to write by hash, where a plan made for any
     * number of rows looks each key up in the index, a third slower. With
     * index scans off too it reads the range by a bitmap scan, each page
     * once: until a vacuum the range also holds the row versions up left
     * dead, and an index scan fetches each of them on its own (about 5 %
     * off the restore there, the same after a vacuum). */
    char no[24];
    const char *open[3];
    size_t pre = 0;
    sl_query *q = sl_calloc(1 + r->timeouts.n + 1 + 1 + k + 1 + 2, sizeof *q);
    if (ahead) {
        snprintf(no, sizeof no, "%" PRId64, c->chunk_no);
        open[0] = r->job->name;
        open[1] = no;
        open[2] = sl_run_fence_id(&r->run);
        q[pre++] = (sl_query){sl_session_begin_sql(w->sess), 0, NULL, 0};
        for (size_t i = 0; i < r->timeouts.n; i++)
            q[pre++] = (sl_query){r->timeouts.sql[i], 0, NULL, 1};
        q[pre++] = (sl_query){down_ahead_open_sql(r), 3, open, 1};
    }
    /* ahead, the open statement sets them; a down section's statements are the job's: none for them */
    size_t first = pre + (trusting && k > 0 && !ahead && !section);
    if (first > pre)
        q[pre] = (sl_query){"SELECT " DOWN_TRUSTING_SETTINGS, 0, NULL, 1};
    for (size_t i = 0; i < k; i++) {
        if (!section || i < nchk) {
            q[first + i] = st->q[i];
            continue;
        }
        const sl_stmt *s = &r->job->down.stmts[i - nchk];
        int used = (s->uses_lo + s->uses_hi) * (int)n;
        q[first + i] =
            (sl_query){r->down_sql[i - nchk], used, (const char *const *)(s->uses_lo ? c->edges : c->edges + n), 1};
    }
    q[first + k] = (sl_query){"COMMIT", 0, NULL};
    sl_answer ans;
    size_t nfetch;
    int rc = send_last(w, q, first + k + 1, &nfetch, &ans);
    free(q);
    if (rc != 0)
        return STEP_LOST;
    if (!ans.conn_lost && (ans.ok || ans.failed_index > (int)(first + k))) {
        /* committed: a read ahead that failed leaves its chunk to read its record itself */
        down_ahead_keep(w, &ans, first + k + 1, nfetch);
        sl_answer_free(&ans);
        return STEP_OK;
    }
    if (ahead && !ans.conn_lost && ans.failed_index == (int)pre - 1 && strcmp(ans.sqlstate, "22012") == 0) {
        rollback(w);
        sl_answer_free(&ans);
        return STEP_AGAIN;
    }
    if (ans.failed_index >= 0 && ans.failed_index < (int)first) /* ahead, its BEGIN opened the transaction */
        return step_failed(w, c, &ans, !ahead || ans.failed_index >= 1, attempts);
    if (ans.failed_index >= 0)
        ans.failed_index -= (int)first; /* indexed like st->q from here on */
    if (nchk && !ans.ok && !ans.conn_lost && ans.failed_index >= 0 && ans.failed_index < (int)nchk &&
        strcmp(ans.sqlstate, "22012") == 0) {
        rollback(w); /* a row of the record is not as the job left it: look at the rows, then decide */
        sl_answer_free(&ans);
        return STEP_RECHECK;
    }
    /* a checked restore wrote fewer rows than it must (undo_restore.c, guard_sql): nothing of the chunk
     * was written */
    int changed = !ans.ok && r->job->undo != SL_UNDO_DOWN && r->sess->dialect == SL_DIALECT_PG &&
                  ans.failed_index >= 0 && ans.failed_index < (int)k && strcmp(ans.sqlstate, "22012") == 0;
    if (changed && trusting) {
        rollback(w); /* some row is not as the job left it: look at the rows, then decide */
        sl_answer_free(&ans);
        return STEP_RECHECK;
    }
    if (changed) {
        /* a row changed since down looked at it: the next attempt looks again, and sees the conflict
         * if it stays */
        rollback(w);
        char *range = chunk_range(r, c);
        sl_err_set(&w->err, "%s: chunk %" PRId64 " %s: rows changed by another session while it was undone",
                   r->job->name, c->chunk_no, range);
        free(range);
        sl_answer_free(&ans);
        return STEP_RETRY;
    }
    return step_failed(w, c, &ans, ans.failed_index < (int)k, attempts);
}

/* snapshot(COL, ...) or a down section on PostgreSQL: a target that hashes
 * rows as snap's record does (a chunk an older sluice recorded:
 * sl_undo_use_hash_of), kept among r's shapes (snapshot(*)'s are made in
 * target_for, fitted to the record's columns too). NULL with w->err. */
static const sl_undo_target *hashed_as(down_worker *w, const sl_snap *snap)
{
    down_run *r = w->r;
    for (size_t i = 0; i < r->nshapes; i++)
        if (r->shapes[i]->col_hash == snap->col_hash)
            return r->shapes[i];
    sl_undo_target *t = sl_calloc(1, sizeof *t);
    if (sl_undo_resolve(w->sess, r->job, &r->info, t, &w->err) != 0) {
        free(t);
        return NULL;
    }
    sl_undo_use_hash_of(t, snap);
    r->shapes = sl_realloc(r->shapes, (r->nshapes + 1) * sizeof *r->shapes);
    r->shapes[r->nshapes++] = t;
    return t;
}

/* The target for a chunk whose rows were saved with snap's shape: the run's,
 * or (snapshot(*) with columns added while up ran: the chunks before have
 * fewer) one fitted to that many columns, so that the added columns keep
 * their values in rows put back by UPDATE and get their defaults in rows
 * put back by INSERT, and the hashes compare what the job saw. NULL with
 * w->err (a column dropped since, say, or the record's columns are not the
 * table's first ones by name). On PostgreSQL the target also hashes rows as
 * snap's record does (a chunk an older sluice recorded: hashed_as for the
 * other kinds). */
static const sl_undo_target *target_for(down_worker *w, const sl_snap *snap)
{
    down_run *r = w->r;
    /* prepare checked the oldest and newest records; one in between may name other columns */
    if (sl_undo_check_saved_rows(&r->undo, snap, r->job->name, &w->err) != 0)
        return NULL;
    int same_hash = snap->col_hash == r->undo.col_hash;
    if (r->undo.kind != SL_UNDO_SNAPSHOT_ALL)
        return same_hash ? &r->undo : hashed_as(w, snap);
    size_t k = sl_undo_saved_fields(&r->undo, snap);
    int fewer = k != 0 && k != r->undo.saved_fields;
    if (!fewer && same_hash)
        return &r->undo;
    /* k 0: an older record whose rows saved nothing (inserted rows): any shape that hashes as it did */
    for (size_t i = 0; i < r->nshapes; i++)
        if ((k == 0 || r->shapes[i]->saved_fields == (fewer ? k : r->undo.saved_fields)) &&
            r->shapes[i]->col_hash == snap->col_hash)
            return r->shapes[i];
    sl_undo_target *t = sl_calloc(1, sizeof *t);
    int said = 1; /* said below, for what it is: a shape of some chunks, not of all */
    int rc = sl_undo_resolve(w->sess, r->job, &r->info, t, &w->err);
    if (rc == 0)
        rc = sl_undo_fit_saved_rows(t, snap, r->job->name, &said, &w->err);
    if (rc == 0)
        sl_undo_use_hash_of(t, snap);
    if (rc == 0 && fewer)
        sl_info("%s: chunk %" PRId64 " and others saved their rows with %zu columns of the %zu %s has now (columns "
                "were added while up ran): down puts back those there, and leaves the others (rows it updates keep "
                "their values, rows it inserts get their defaults)",
                r->job->name, snap->chunk_no, k, r->undo.nfields, r->info.ks.table);
    if (rc != 0) {
        sl_undo_target_free(t);
        free(t);
        return NULL;
    }
    r->shapes = sl_realloc(r->shapes, (r->nshapes + 1) * sizeof *r->shapes);
    r->shapes[r->nshapes++] = t;
    return t;
}

/* Plan the restore from the chunk's record and the rows as they are now:
 * read in segment 1 (l->state), or, when down set out trusting the record
 * and it does not allow that (*trusting cleared), now, in the open
 * transaction. STEP_OK, or another STEP_* with the transaction ended. */
static int plan_chunk(down_worker *w, const down_chunk *c, sl_answer *ans, const begin_layout *l, int *trusting,
                      int64_t attempts, sl_undo_step *step)
{
    down_run *r = w->r;
    const char *text = sl_answer_val(ans, l->undo_i, 0, 0);
    memset(step, 0, sizeof *step);
    if (!text || (!l->state && !*trusting)) {
        *trusting = 0;
        return STEP_OK; /* no record (a down section without hashes, a row set aside, a record lost) */
    }
    sl_snap snap;
    if (sl_undo_record_decode(&r->undo, c->chunk_no, text, sl_undo_record_len(&ans->results[l->undo_i], 0), &snap,
                              &w->err) != 0) {
        rollback(w);
        return STEP_FAILED;
    }
    w->last_record_len = sl_undo_record_len(&ans->results[l->undo_i], 0);
    sl_result_clear(&ans->results[l->undo_i]); /* snap has its values: a wide chunk's record is not held twice */
    const sl_undo_target *t = target_for(w, &snap);
    if (!t) {
        rollback(w);
        sl_snap_free(&snap);
        return STEP_FAILED;
    }
    w->look_as = t;
    if (*trusting && sl_undo_plan_trusting(t, &snap, c->edges, step) == 0) {
        w->ahead_declined = 0; /* records like this one are worth reading ahead again */
        sl_snap_free(&snap);
        return STEP_OK;
    }
    w->ahead_declined |= *trusting; /* nor are records like this one (down_ahead.c) */
    *trusting = 0;
    sl_answer look = {0};
    /* the rows as segment 1 read them, hashed as the last chunk's record asked: a record of another
     * shape (or hash) looks again */
    const sl_result *cur = l->state && t == l->look_as ? &ans->results[l->state_i] : NULL;
    if (!cur) {
        if (sl_session_exec1(w->sess, t->state_sql, 2 * (int)r->info.ks.ncols, (const char *const *)c->edges, &look) !=
            0) {
            sl_snap_free(&snap);
            return STEP_LOST;
        }
        if (!look.ok) {
            sl_snap_free(&snap);
            return step_failed(w, c, &look, 1, attempts);
        }
        cur = &look.results[0];
    }
    sl_undo_plan_chunk(t, &snap, cur, c->edges, r->opts->on_conflict, step);
    sl_answer_free(&look);
    sl_snap_free(&snap);
    return STEP_OK;
}

int down_fence_for_share(const down_run *r)
{
    return strcmp(sl_schema_fence_lock(&r->run.db, 0), "FOR SHARE") == 0;
}

int down_may_trust(const down_run *r)
{
    /* a down section's records hold hashes only where its key is unique (sl_undo_resolve) */
    return r->sess->dialect == SL_DIALECT_PG && r->opts->on_conflict != SL_CONFLICT_OVERWRITE &&
           (r->job->undo != SL_UNDO_DOWN || r->undo.state_sql != NULL);
}

/* Undo chunk c once: STEP_* outcome. Unless careful, a chunk on
 * PostgreSQL trusts the record first (sl_undo_plan_trusting): no look at
 * the rows, one checked UPDATE (a snapshot) or a check on the server
 * before the down section. */
static int send_chunk(down_worker *w, down_chunk *c, int64_t attempts, int careful)
{
    down_run *r = w->r;
    sl_undo_step step;
    /* read ahead and planned: one batch (the slot is let go either way, and a retry reads the record in
     * its chunk) */
    if (!careful && !c->skipped && !c->lost && down_ahead_take(w, c, &step)) {
        c->rows_skipped = c->rows_lost = 0;
        int st = finish_chunk(w, c, &step, attempts, 1, 1);
        sl_undo_step_free(&step);
        return st;
    }
    sl_answer ans;
    begin_layout l;
    int trusting = !careful && !c->skipped && down_may_trust(r);
    int st = begin_chunk(w, c, &ans, &l, attempts, !trusting);
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
    st = plan_chunk(w, c, &ans, &l, &trusting, attempts, &step);
    sl_answer_free(&ans);
    if (st != STEP_OK)
        return st;
    int refuse = step.nconflicts > 0 && (r->opts->on_conflict == SL_CONFLICT_STOP ||
                                         (r->undo.kind == SL_UNDO_DOWN && r->opts->on_conflict == SL_CONFLICT_SKIP));
    if (refuse) {
        rollback(w);
        report_conflict(w, c, &step);
        st = STEP_CONFLICT;
    } else {
        if (step.nconflicts)
            sl_warn("%s: chunk %" PRId64 ": %s %zu row%s another session changed or deleted since the job wrote "
                    "them: %s",
                    r->job->name, c->chunk_no,
                    r->opts->on_conflict == SL_CONFLICT_SKIP ? "left as they are"
                    : r->undo.kind == SL_UNDO_DOWN           ? "ran the down section over"
                                                             : "put back what was saved of",
                    step.nconflicts, step.nconflicts == 1 ? "" : "s", step.conflicts);
        if (step.nlost)
            sl_warn("%s: chunk %" PRId64 ": %zu row%s the job deleted cannot be brought back by snapshot(COL, ...) "
                    "(hint: snapshot(*) saves whole rows)",
                    r->job->name, c->chunk_no, step.nlost, step.nlost == 1 ? "" : "s");
        if (step.ngone)
            sl_warn("%s: chunk %" PRId64 ": %zu row%s deleted by another session since the job wrote %s cannot be "
                    "brought back by snapshot(COL, ...), which saved only %s columns",
                    r->job->name, c->chunk_no, step.ngone, step.ngone == 1 ? "" : "s", step.ngone == 1 ? "it" : "them",
                    step.ngone == 1 ? "its" : "their");
        if (step.nkept)
            sl_warn("%s: chunk %" PRId64 ": %zu row%s the job inserted left in place: snapshot(COL, ...) writes "
                    "columns back, it does not delete rows (hint: snapshot(*) does)",
                    r->job->name, c->chunk_no, step.nkept, step.nkept == 1 ? "" : "s");
        if (c->lost)
            sl_warn("%s: chunk %" PRId64 " left as it is: its undo record is gone", r->job->name, c->chunk_no);
        c->rows_skipped = r->opts->on_conflict == SL_CONFLICT_SKIP ? (int64_t)step.nconflicts : 0;
        c->rows_lost = c->lost && snapshot ? c->rows : (int64_t)(step.nlost + step.ngone);
        st = finish_chunk(w, c, &step, attempts, trusting, 0);
    }
    sl_undo_step_free(&step);
    return st;
}

/* After the commit: the journal follows (it may lag; opening a run syncs it)
 * with the rows put back, as history and report show them. */
static int record_undone(down_worker *w, const down_chunk *c, int64_t started)
{
    down_run *r = w->r;
    int64_t ms = sl_mono_ms() - started;
    int64_t restored = c->skipped ? 0 : c->rows - c->rows_skipped - c->rows_lost;
    if (restored < 0)
        restored = 0; /* conflicts on rows the job inserted: not among the rows it walked */
    if (c->skipped)
        r->rows_set_aside += c->rows;
    if (sl_ckpt_undo_chunk(r->run.ckpt, r->run.run_id, c->chunk_no, restored, ms, &w->err) != 0)
        return -1;
    r->rows_undone += c->rows;
    r->rows_restored += restored;
    r->rows_skipped += c->rows_skipped;
    r->rows_lost += c->rows_lost;
    r->chunks_undone++;
    if (r->metrics)
        sl_metrics_chunk(r->metrics, c->rows, ms);
    return 0;
}

/* Get the worker's connection back (lease and kept commits checked, as
 * sl_run_reconnect does): 0 back, 1 stopped, -1 failed (w->err says why). */
static int worker_reconnect(down_worker *w)
{
    int rc = sl_run_reconnect(&w->r->run, w->sess);
    if (rc < 0)
        w->err = w->r->run.err;
    return rc;
}

/* Retry one chunk to an outcome: 0 undone, 1 stopped, -1 failed, -3 conflict. */
static int do_chunk(down_worker *w, down_chunk *c)
{
    down_run *r = w->r;
    int64_t started = sl_mono_ms();
    int careful = 0;
    for (int64_t attempts = 1;; attempts++) {
        int st = send_chunk(w, c, attempts, careful);
        if (st == STEP_RECHECK || st == STEP_AGAIN) {
            careful |= st == STEP_RECHECK; /* no attempt spent: nothing failed */
            attempts--;
            continue;
        }
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
            int applied = 1, rc = worker_reconnect(w);
            if (rc == 0)
                rc = still_applied(w, c->chunk_no, &applied);
            if (rc != 0)
                return rc > 0 ? SL_STOPPED : SL_EFAIL;
            if (!applied)
                return record_undone(w, c, started);
            if (attempts > sl_run_lost_retries(r->job)) {
                /* a chunk that takes its connection down every time is not sent again forever */
                char *range = chunk_range(r, c);
                sl_err_set(&w->err,
                           "%s: undoing chunk %" PRId64 " %s: the connection was lost on each of its %" PRId64
                           " attempts, and the chunk is still applied (the warnings above say how each ended)",
                           r->job->name, c->chunk_no, range, attempts);
                free(range);
                return -1;
            }
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

/* Wait until the job may undo chunk c: `ctl pause`, the windows, the
 * health throttles and max-rate hold a rollback back as they hold `up`.
 * 0 go, SL_STOPPED (a signal, or outside the windows with --no-wait), or
 * SL_EFAIL (the connection lost between chunks and not got back). */
static int wait_turn(down_worker *w, const down_chunk *c)
{
    down_run *r = w->r;
    for (;;) {
        if (sl_session_stopping(r->sess))
            return SL_STOPPED;
        int64_t wait = 0;
        gate_save_pause(&r->gate, w->sess);
        int g = gate_hold_back(&r->gate, &wait);
        if (g == GATE_GO && !sl_session_connected(w->sess)) {
            /* lost between chunks (a failover, say): reconnected as after a lost chunk, or
             * the health check would find no connection every second, for ever */
            int rc = worker_reconnect(w);
            if (rc != 0)
                return rc > 0 ? SL_STOPPED : SL_EFAIL;
        }
        if (g == GATE_GO)
            g = gate_health(&r->gate, w->sess, r->info.ks.table, &wait);
        if (g == GATE_STOP)
            return SL_STOPPED;
        if (g == GATE_GO)
            g = gate_rate(&r->gate, &wait);
        if (g == GATE_GO) {
            sl_pace_rate_sent(&r->pace, c->rows);
            return 0;
        }
        if (sl_session_sleep(w->sess, wait > 0 ? wait : 1))
            return SL_STOPPED;
    }
}

/* The worker's rest after a chunk, as long as the job's pause in force:
 * looked at again every quarter second, so that a `ctl set pause` also
 * shortens (or lengthens) a rest already begun. 0, or SL_STOPPED. */
static int rest(down_worker *w)
{
    down_run *r = w->r;
    int64_t from = sl_mono_ms();
    for (;;) {
        int64_t left = from + r->pace.pause_ms - sl_mono_ms();
        if (left <= 0)
            return 0;
        if (sl_session_sleep(w->sess, left < 250 ? left : 250))
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
            w->next[0] = i > kr->first ? &r->chunks[i - 1] : NULL;
            w->next[1] = i > kr->first + 1 ? &r->chunks[i - 2] : NULL;
            int rc = wait_turn(w, &r->chunks[i]);
            if (rc == 0) {
                sl_metrics_batch(r->metrics, r->chunks[i].rows);
                sl_metrics_workers(r->metrics, (int64_t)r->nworkers, (int64_t)++r->busy);
                rc = do_chunk(w, &r->chunks[i]);
                sl_metrics_workers(r->metrics, (int64_t)r->nworkers, (int64_t)--r->busy);
            }
            if (rc != 0)
                return rc;
            /* its batch: the chunk's rows, as up's */
            sl_progress_update(r->rows_undone, r->chunks[i].rows, sl_metrics_rate(r->metrics, sl_mono_ms()));
            if (rest(w) != 0)
                return SL_STOPPED;
        }
    }
}

static void worker_main(void *arg)
{
    down_worker *w = arg;
    w->rc = walk_ranges(w);
    down_ahead_clear(w);
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
int down_walk(down_run *r)
{
    size_t want = r->job->workers > 1 && r->sess->dialect == SL_DIALECT_PG ? (size_t)r->job->workers : 1;
    if (want > r->nranges)
        want = r->nranges ? r->nranges : 1;
    down_worker *ws = sl_calloc(want + 1, sizeof *ws);
    size_t n = start_workers(r, ws, want);
    r->nworkers = n;
    sl_pace_rate_begin(&r->pace, sl_mono_ms());
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
    sl_metrics_workers(r->metrics, 0, 0);
    int stopped = 0;
    for (size_t i = 0; i < n; i++) {
        stopped |= ws[i].rc == SL_STOPPED;
        if (ws[i].has_own)
            sl_session_close_now(&ws[i].own);
    }
    free(ws);
    return r->failed ? SL_EXIT_FAILED : stopped ? SL_EXIT_STOPPED : SL_EXIT_OK;
}
