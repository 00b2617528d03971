/* ckpt.c: the checkpoint store, once open: its job's state, committed chunks, runs and events. */
#include "sluice/checkpoints/ckpt.h"

#include <assert.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

/* ---- states ---- */

static const char *const state_names[] = {
    [SL_STATE_PENDING] = "pending",         [SL_STATE_RUNNING] = "running", [SL_STATE_STOPPED] = "stopped",
    [SL_STATE_FAILED] = "failed",           [SL_STATE_DONE] = "done",       [SL_STATE_ROLLING_BACK] = "rolling_back",
    [SL_STATE_ROLLED_BACK] = "rolled_back",
};

#define NSTATES (sizeof state_names / sizeof state_names[0])

const char *sl_state_name(sl_state state)
{
    assert((size_t)state < NSTATES && "BUG: state out of range");
    return (size_t)state < NSTATES ? state_names[state] : "unknown";
}

int sl_state_parse(const char *name, sl_state *out)
{
    for (size_t i = 0; name && i < NSTATES; i++) {
        if (strcmp(name, state_names[i]) == 0) {
            *out = (sl_state)i;
            return 0;
        }
    }
    return -1;
}

/* ---- errors ---- */

void ckpt_append_rebuild_hint(sl_err *err, const char *path)
{
    sl_err_append(err,
                  "hint: the target database's sluice_progress table still records which chunks committed: "
                  "move %s aside and run `sluice up` to rebuild it",
                  path);
}

int ckpt_fail_corrupt(sl_err *err, const char *path, const char *detail)
{
    sl_err_set(err, "checkpoint file %s is corrupt or not a sluice checkpoint file (%s)", path, detail);
    ckpt_append_rebuild_hint(err, path);
    return -1;
}

/* An SQLite failure on an open checkpoint, with a hint where the user can act. */
int ckpt_fail_db(sl_ckpt *ck, const char *what, sl_err *err)
{
    int code = sqlite3_errcode(ck->db);
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
        return ckpt_fail_corrupt(err, ck->path, sqlite3_errmsg(ck->db));
    sl_err_set(err, "checkpoint file %s: %s: %s", ck->path, what, sqlite3_errmsg(ck->db));
    if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        sl_err_append(err, "hint: another process holds the file locked; is another sluice running this job?");
    else if (code == SQLITE_FULL)
        sl_err_append(err, "hint: the disk holding it is full");
    else if (code == SQLITE_READONLY || code == SQLITE_CANTOPEN || code == SQLITE_PERM)
        sl_err_append(err, "hint: check the permissions of the file and its directory");
    return -1;
}

/* ---- statement helpers ---- */

/* Every statement is reset and unbound after use, so the text bound with
 * SQLITE_STATIC never outlives the caller's string and no read transaction
 * stays open to hold back WAL checkpoints. */
void ckpt_stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int step_done(sl_ckpt *ck, sqlite3_stmt *st, const char *what, sl_err *err)
{
    int rc = sqlite3_step(st);
    int res = rc == SQLITE_DONE ? 0 : ckpt_fail_db(ck, what, err);
    ckpt_stmt_done(st);
    return res;
}

void ckpt_bind_text(sqlite3_stmt *st, int idx, const char *text)
{
    /* A NULL pointer binds SQL NULL (sqlite3_bind_text docs). */
    sqlite3_bind_text(st, idx, text, -1, SQLITE_STATIC);
}

static char *column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *text = sqlite3_column_text(st, col);
    return text ? sl_strdup((const char *)text) : NULL;
}

static int tx_begin(sl_ckpt *ck, sl_err *err)
{
    return step_done(ck, ck->stmts[ST_BEGIN], "cannot begin a transaction", err);
}

static int tx_commit(sl_ckpt *ck, sl_err *err)
{
    return step_done(ck, ck->stmts[ST_COMMIT], "cannot commit", err);
}

/* Roll back after a failure already in err; SQLite may have rolled back by
 * itself (SQLITE_FULL, IOERR), so only do it while a transaction is open. */
static int tx_abort(sl_ckpt *ck)
{
    if (!sqlite3_get_autocommit(ck->db)) {
        sqlite3_step(ck->stmts[ST_ROLLBACK]);
        ckpt_stmt_done(ck->stmts[ST_ROLLBACK]);
    }
    return -1;
}
/* ---- reading ---- */

void sl_ckpt_job_free(sl_ckpt_job *job)
{
    if (!job)
        return;
    free(job->job);
    free(job->last_key);
    free(job->error);
    free(job->target);
    memset(job, 0, sizeof *job);
}

int ckpt_read_state(sl_ckpt *ck, sqlite3_stmt *st, sl_state *out, sl_err *err)
{
    const char *state = (const char *)sqlite3_column_text(st, 1);
    if (sl_state_parse(state, out) == 0)
        return 0;
    /* the value as the file holds it, on one line: a checkpoint file is input, and may hold anything */
    sl_buf detail = {0};
    if (state) {
        sl_buf_adds(&detail, "its job state is \"");
        sl_buf_add_visible(&detail, state, strnlen(state, 64), 1);
        sl_buf_adds(&detail, "\"");
    } else {
        sl_buf_adds(&detail, "its job state is NULL");
    }
    sl_buf_adds(&detail, ", expected one of ");
    for (size_t i = 0; i < NSTATES; i++)
        sl_buf_printf(&detail, "%s%s", i ? ", " : "", state_names[i]);
    int rc = ckpt_fail_corrupt(err, ck->path, detail.data);
    sl_buf_free(&detail);
    return rc;
}

static int read_job_row(sl_ckpt *ck, sqlite3_stmt *st, sl_ckpt_job *out, sl_err *err)
{
    const char *checksum = (const char *)sqlite3_column_text(st, 2);
    if (ckpt_read_state(ck, st, &out->state, err) != 0)
        return -1;
    int n = snprintf(out->checksum, sizeof out->checksum, "%s", checksum ? checksum : "");
    if (n < 0 || (size_t)n >= sizeof out->checksum)
        return ckpt_fail_corrupt(err, ck->path, "bad checksum");
    out->job = column_dup(st, 0);
    out->rows = sqlite3_column_int64(st, 3);
    out->affected = sqlite3_column_int64(st, 4);
    out->chunks = sqlite3_column_int64(st, 5);
    out->last_key = column_dup(st, 6);
    out->error = column_dup(st, 7);
    out->target = column_dup(st, 8);
    out->batch = sqlite3_column_int64(st, 9);
    out->started_at_ms = sqlite3_column_int64(st, 10);
    out->updated_at_ms = sqlite3_column_int64(st, 11);
    return 0;
}

int sl_ckpt_get_job(sl_ckpt *ckpt, sl_ckpt_job *out, sl_err *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = ckpt->stmts[ST_GET_JOB];
    int rc = sqlite3_step(st);
    int res;
    if (rc == SQLITE_ROW)
        res = read_job_row(ckpt, st, out, err);
    else
        res = rc == SQLITE_DONE ? ckpt_fail_corrupt(err, ckpt->path, "no job row")
                                : ckpt_fail_db(ckpt, "cannot read the job", err);
    ckpt_stmt_done(st);
    return res;
}

int sl_ckpt_last_chunk(sl_ckpt *ckpt, int64_t *chunk_no, char **lo, char **hi, sl_err *err)
{
    *chunk_no = 0;
    *lo = *hi = NULL;
    sqlite3_stmt *st = ckpt->stmts[ST_LAST_CHUNK];
    int rc = sqlite3_step(st);
    int res = 0;
    if (rc == SQLITE_ROW) {
        *chunk_no = sqlite3_column_int64(st, 0);
        *lo = column_dup(st, 1);
        *hi = column_dup(st, 2);
    } else if (rc != SQLITE_DONE) {
        res = ckpt_fail_db(ckpt, "cannot read the last chunk", err);
    }
    ckpt_stmt_done(st);
    return res;
}

static void read_chunk_row(sqlite3_stmt *st, sl_ckpt_chunk *chunk)
{
    chunk->chunk_no = sqlite3_column_int64(st, 0);
    chunk->lo = (const char *)sqlite3_column_text(st, 1);
    chunk->hi = (const char *)sqlite3_column_text(st, 2);
    chunk->rows = sqlite3_column_int64(st, 3);
    chunk->affected = sqlite3_column_int64(st, 4);
    chunk->duration_ms = sqlite3_column_int64(st, 5);
    chunk->attempts = sqlite3_column_int64(st, 6);
    chunk->error = (const char *)sqlite3_column_text(st, 7);
    chunk->committed_at_ms = sqlite3_column_int64(st, 8);
    chunk->skipped = sqlite3_column_int(st, 9);
    chunk->batch = sqlite3_column_int64(st, 10);
    chunk->worker = sqlite3_column_int64(st, 11);
}

/* Prepared per call rather than cached: fn may call back into this
 * checkpoint, even into each_chunk, while the walk is open. */
int sl_ckpt_each_chunk(sl_ckpt *ckpt, int64_t after, int (*fn)(const sl_ckpt_chunk *chunk, void *arg), void *arg,
                       sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ckpt->db,
                           "SELECT chunk_no, lo, hi, rows, affected, duration_ms, attempts, error, committed_at,"
                           " skipped, batch, worker FROM chunks WHERE chunk_no > ?1 ORDER BY chunk_no",
                           -1, &st, NULL) != SQLITE_OK)
        return ckpt_fail_db(ckpt, "cannot read chunks", err);
    sqlite3_bind_int64(st, 1, after);
    int rc = SQLITE_DONE, res = 0;
    while (res == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        sl_ckpt_chunk chunk;
        read_chunk_row(st, &chunk);
        res = fn(&chunk, arg);
    }
    if (res == 0 && rc != SQLITE_DONE)
        res = ckpt_fail_db(ckpt, "cannot read chunks", err);
    sqlite3_finalize(st);
    return res;
}

void sl_ckpt_run_free(sl_ckpt_run *run)
{
    if (!run)
        return;
    free(run->job);
    free(run->kind);
    free(run->outcome);
    free(run->error);
    memset(run, 0, sizeof *run);
}

static void read_run_row(sl_ckpt *ck, sqlite3_stmt *st, sl_ckpt_run *run)
{
    run->id = sqlite3_column_int64(st, 0);
    run->job = sl_strdup(ck->job);
    run->kind = column_dup(st, 1);
    run->outcome = column_dup(st, 2);
    run->started_at_ms = sqlite3_column_int64(st, 3);
    run->ended_at_ms = sqlite3_column_int64(st, 4);
    run->rows = sqlite3_column_int64(st, 5);
    run->chunks = sqlite3_column_int64(st, 6);
    run->error = column_dup(st, 7);
}

int sl_ckpt_list_runs(sl_ckpt *ckpt, sl_ckpt_run **runs, size_t *nruns, sl_err *err)
{
    *runs = NULL;
    *nruns = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ckpt->db,
                           "SELECT id, kind, outcome, started_at, ended_at, rows, chunks, error FROM runs ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return ckpt_fail_db(ckpt, "cannot read runs", err);
    size_t count = 0, cap = 0;
    sl_ckpt_run *list = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 8;
            list = sl_realloc(list, cap * sizeof *list);
        }
        read_run_row(ckpt, st, &list[count++]);
    }
    int res = rc == SQLITE_DONE ? 0 : ckpt_fail_db(ckpt, "cannot read runs", err);
    sqlite3_finalize(st);
    if (res != 0) {
        for (size_t i = 0; i < count; i++)
            sl_ckpt_run_free(&list[i]);
        free(list);
        return res;
    }
    *runs = list;
    *nruns = count;
    return 0;
}

/* ---- writing ---- */

static int insert_chunk(sl_ckpt *ck, int64_t run_id, const sl_ckpt_chunk *chunk, int64_t at, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_INSERT_CHUNK];
    sqlite3_bind_int64(st, 1, chunk->chunk_no);
    sqlite3_bind_int64(st, 2, run_id);
    ckpt_bind_text(st, 3, chunk->lo);
    ckpt_bind_text(st, 4, chunk->hi);
    sqlite3_bind_int64(st, 5, chunk->rows);
    sqlite3_bind_int64(st, 6, chunk->affected);
    sqlite3_bind_int64(st, 7, chunk->duration_ms);
    sqlite3_bind_int64(st, 8, chunk->attempts);
    ckpt_bind_text(st, 9, chunk->error);
    sqlite3_bind_int64(st, 10, at);
    sqlite3_bind_int(st, 11, chunk->skipped ? 1 : 0);
    sqlite3_bind_int64(st, 12, chunk->batch);
    sqlite3_bind_int64(st, 13, chunk->worker);
    int rc = sqlite3_step(st);
    int res = 0;
    if (rc != SQLITE_DONE && sqlite3_extended_errcode(ck->db) == SQLITE_CONSTRAINT_PRIMARYKEY) {
        sl_err_set(err, "checkpoint file %s: chunk %lld is already recorded", ck->path, (long long)chunk->chunk_no);
        res = -1;
    } else if (rc != SQLITE_DONE) {
        res = ckpt_fail_db(ck, "cannot record a chunk", err);
    }
    ckpt_stmt_done(st);
    return res;
}

static int advance_job(sl_ckpt *ck, const sl_ckpt_chunk *chunk, int64_t at, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_CHUNK_JOB];
    sqlite3_bind_int64(st, 1, chunk->rows);
    sqlite3_bind_int64(st, 2, chunk->affected);
    ckpt_bind_text(st, 3, chunk->hi);
    sqlite3_bind_int64(st, 4, at);
    return step_done(ck, st, "cannot update the job", err);
}

/* An UPDATE of one run: a run id the file does not know is a caller's mistake. */
static int step_run(sl_ckpt *ck, sqlite3_stmt *st, int64_t run_id, const char *what, sl_err *err)
{
    if (step_done(ck, st, what, err) != 0)
        return -1;
    if (sqlite3_changes(ck->db) == 1)
        return 0;
    sl_err_set(err, "checkpoint file %s: run %lld does not exist", ck->path, (long long)run_id);
    return -1;
}

/* The run's totals, plus rows and one chunk. */
static int advance_run(sl_ckpt *ck, int64_t run_id, int64_t rows, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_CHUNK_RUN];
    sqlite3_bind_int64(st, 1, rows);
    sqlite3_bind_int64(st, 2, run_id);
    return step_run(ck, st, run_id, "cannot update the run", err);
}

/* The writes made once per chunk, by up and by down, skip the fsync
 * (synchronous=NORMAL between these two): what they record is already
 * committed in the target (the chunk's sluice_progress row, or its removal),
 * and a run opened after a power loss copies it back from there. Everything
 * that exists only here (snapshots, stamps, state) keeps synchronous=FULL.
 * unsynced: 0, or -1 with err. synced: rc, or -1 with err when rc was 0. */
static int unsynced(sl_ckpt *ck, sl_err *err)
{
    if (sqlite3_exec(ck->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK)
        return ckpt_fail_db(ck, "cannot configure the file", err);
    return 0;
}

static int synced(sl_ckpt *ck, int rc, sl_err *err)
{
    if (sqlite3_exec(ck->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK && rc == 0)
        rc = ckpt_fail_db(ck, "cannot configure the file", err);
    return rc;
}

static int commit_chunk_tx(sl_ckpt *ckpt, int64_t run_id, const sl_ckpt_chunk *chunk, sl_err *err)
{
    int64_t now = sl_now_ms();
    int64_t at = chunk->committed_at_ms ? chunk->committed_at_ms : now;
    if (tx_begin(ckpt, err) != 0)
        return -1;
    if (insert_chunk(ckpt, run_id, chunk, at, err) != 0 || advance_job(ckpt, chunk, now, err) != 0 ||
        (run_id > 0 && advance_run(ckpt, run_id, chunk->rows, err) != 0) || tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

int sl_ckpt_commit_chunk(sl_ckpt *ckpt, int64_t run_id, const sl_ckpt_chunk *chunk, sl_err *err)
{
    assert(chunk && chunk->chunk_no > 0 && chunk->lo && chunk->hi && "BUG: incomplete chunk");
    if (unsynced(ckpt, err) != 0)
        return -1;
    return synced(ckpt, commit_chunk_tx(ckpt, run_id, chunk, err), err);
}

static int insert_run(sl_ckpt *ck, const char *kind, const char *outcome, int64_t started, int64_t ended,
                      int64_t *run_id, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_INSERT_RUN];
    ckpt_bind_text(st, 1, kind);
    ckpt_bind_text(st, 2, outcome);
    sqlite3_bind_int64(st, 3, started);
    sqlite3_bind_int64(st, 4, ended);
    if (step_done(ck, st, "cannot record a run", err) != 0)
        return -1;
    if (run_id)
        *run_id = sqlite3_last_insert_rowid(ck->db);
    return 0;
}

int sl_ckpt_begin_run(sl_ckpt *ckpt, const char *kind, sl_state state, const char *checksum, const char *target,
                      int64_t *run_id, sl_err *err)
{
    int64_t now = sl_now_ms();
    if (tx_begin(ckpt, err) != 0)
        return -1;
    /* The caller holds the run lock, so a run still marked running died
     * without closing itself (kill -9, power loss). */
    if (sqlite3_exec(ckpt->db, "UPDATE runs SET outcome = 'interrupted' WHERE outcome = 'running'", NULL, NULL, NULL) !=
        SQLITE_OK) {
        sl_err_set(err, "%s: cannot close interrupted runs: %s", ckpt->path, sqlite3_errmsg(ckpt->db));
        return tx_abort(ckpt);
    }
    if (insert_run(ckpt, kind, "running", now, 0, run_id, err) != 0)
        return tx_abort(ckpt);
    sqlite3_stmt *st = ckpt->stmts[ST_BEGIN_RUN_JOB];
    ckpt_bind_text(st, 1, sl_state_name(state));
    sqlite3_bind_int64(st, 2, now);
    ckpt_bind_text(st, 3, target);
    ckpt_bind_text(st, 4, checksum);
    if (step_done(ckpt, st, "cannot update the job", err) != 0)
        return tx_abort(ckpt);
    if (tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

static int close_run(sl_ckpt *ck, int64_t run_id, const char *outcome, const char *error, int64_t now, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_FINISH_RUN];
    ckpt_bind_text(st, 1, outcome);
    sqlite3_bind_int64(st, 2, now);
    ckpt_bind_text(st, 3, error);
    sqlite3_bind_int64(st, 4, run_id);
    return step_run(ck, st, run_id, "cannot close the run", err);
}

int sl_ckpt_finish_run(sl_ckpt *ckpt, int64_t run_id, sl_state state, const char *error, sl_err *err)
{
    return sl_ckpt_finish_run_as(ckpt, run_id, state, sl_state_name(state), error, err);
}

int sl_ckpt_finish_run_as(sl_ckpt *ckpt, int64_t run_id, sl_state state, const char *outcome, const char *error,
                          sl_err *err)
{
    int64_t now = sl_now_ms();
    if (tx_begin(ckpt, err) != 0)
        return -1;
    sqlite3_stmt *st = ckpt->stmts[ST_FINISH_JOB];
    ckpt_bind_text(st, 1, sl_state_name(state));
    ckpt_bind_text(st, 2, error);
    sqlite3_bind_int64(st, 3, now);
    if (step_done(ckpt, st, "cannot update the job", err) != 0)
        return tx_abort(ckpt);
    if (run_id > 0 && close_run(ckpt, run_id, outcome, error, now, err) != 0)
        return tx_abort(ckpt);
    if (tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

/* One statement of its own (not one of the file's prepared ones), its
 * parameters texts and integers as given: 0, or -1 with err. */
static int exec_once(sl_ckpt *ck, const char *sql, const char *what, const char *const *texts, size_t ntexts,
                     const int64_t *ints, size_t nints, sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ck->db, sql, -1, &st, NULL) != SQLITE_OK)
        return ckpt_fail_db(ck, what, err);
    for (size_t i = 0; i < ntexts; i++)
        ckpt_bind_text(st, (int)i + 1, texts[i]);
    for (size_t i = 0; i < nints; i++)
        sqlite3_bind_int64(st, (int)(ntexts + i) + 1, ints[i]);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : ckpt_fail_db(ck, what, err);
    sqlite3_finalize(st);
    return rc;
}

int sl_ckpt_run_totals(sl_ckpt *ckpt, int64_t run_id, int64_t *rows, int64_t *chunks)
{
    *rows = *chunks = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ckpt->db, "SELECT rows, chunks FROM runs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, run_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *rows = sqlite3_column_int64(st, 0);
        *chunks = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

int sl_ckpt_add_past_run(sl_ckpt *ckpt, const char *kind, const char *outcome, int64_t started_ms, int64_t ended_ms,
                         int64_t rows, int64_t chunks, const char *error, int64_t *run_id, sl_err *err)
{
    if (tx_begin(ckpt, err) != 0)
        return -1;
    if (insert_run(ckpt, kind, outcome, started_ms, ended_ms, run_id, err) != 0)
        return tx_abort(ckpt);
    const char *texts[] = {error};
    const int64_t ints[] = {rows, chunks, *run_id};
    if (exec_once(ckpt, "UPDATE runs SET error = ?1, rows = ?2, chunks = ?3 WHERE id = ?4", "cannot record a run",
                  texts, 1, ints, 3, err) != 0)
        return tx_abort(ckpt);
    if (tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

int sl_ckpt_set_job_as(sl_ckpt *ckpt, sl_state state, const char *error, const char *target, int64_t started_ms,
                       int64_t updated_ms, sl_err *err)
{
    const char *texts[] = {sl_state_name(state), error, target};
    const int64_t ints[] = {started_ms, updated_ms};
    if (exec_once(ckpt, "UPDATE job SET state = ?1, error = ?2, target = ?3, started_at = ?4, updated_at = ?5",
                  "cannot update the job", texts, 3, ints, 2, err) != 0)
        return -1;
    /* a chunk's attempts past its first were retries: one event each, at its commit (when is not known) */
    return exec_once(ckpt,
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                     "  WHERE i < (SELECT max(attempts) FROM chunks))"
                     " INSERT INTO events (at, kind, message)"
                     " SELECT c.committed_at, 'retry', 'chunk ' || c.chunk_no || ': attempt ' || (n.i + 1)"
                     " FROM chunks AS c JOIN n ON n.i < c.attempts ORDER BY c.chunk_no, n.i",
                     "cannot record the chunks' retries", NULL, 0, NULL, 0, err);
}

int sl_ckpt_set_batch(sl_ckpt *ckpt, int64_t batch, sl_err *err)
{
    sqlite3_stmt *st = ckpt->stmts[ST_SET_BATCH];
    sqlite3_bind_int64(st, 1, batch);
    return step_done(ckpt, st, "cannot record the batch size", err);
}

static int stamp_job(sl_ckpt *ck, sl_state state, const char *checksum, int64_t now, sl_err *err)
{
    if (state == SL_STATE_PENDING) {
        if (step_done(ck, ck->stmts[ST_DELETE_CHUNKS], "cannot forget the chunks", err) != 0)
            return -1;
        if (step_done(ck, ck->stmts[ST_RESET_JOB], "cannot reset the job", err) != 0)
            return -1;
        checksum = NULL; /* the next run's first chunk records it */
    }
    sqlite3_stmt *st = ck->stmts[ST_STAMP_JOB];
    ckpt_bind_text(st, 1, sl_state_name(state));
    sqlite3_bind_int64(st, 2, now);
    ckpt_bind_text(st, 3, checksum && checksum[0] ? checksum : NULL);
    return step_done(ck, st, "cannot update the job", err);
}

int sl_ckpt_stamp(sl_ckpt *ckpt, sl_state state, const char *checksum, sl_err *err)
{
    int64_t now = sl_now_ms();
    if (tx_begin(ckpt, err) != 0)
        return -1;
    if (stamp_job(ckpt, state, checksum, now, err) != 0)
        return tx_abort(ckpt);
    if (insert_run(ckpt, "stamp", sl_state_name(state), now, now, NULL, err) != 0)
        return tx_abort(ckpt);
    if (tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

int sl_ckpt_log_event(sl_ckpt *ckpt, const char *kind, const char *message, sl_err *err)
{
    return sl_ckpt_log_event_data(ckpt, kind, message, NULL, err);
}

int sl_ckpt_log_event_data(sl_ckpt *ckpt, const char *kind, const char *message, const char *data, sl_err *err)
{
    sqlite3_stmt *st = ckpt->stmts[ST_LOG_EVENT];
    sqlite3_bind_int64(st, 1, sl_now_ms());
    ckpt_bind_text(st, 2, kind);
    ckpt_bind_text(st, 3, message ? message : "");
    ckpt_bind_text(st, 4, data);
    return step_done(ckpt, st, "cannot log an event", err);
}

/* ---- rollback ---- */

struct sqlite3 *sl_ckpt_sqlite(sl_ckpt *ckpt)
{
    return ckpt->db;
}

/* The summary follows the chunks left: `down` removes them from the top. */
static int resummarize(sl_ckpt *ck, sl_err *err)
{
    static const char sql[] = "UPDATE job SET rows = (SELECT coalesce(sum(rows), 0) FROM chunks),"
                              " affected = (SELECT coalesce(sum(max(affected, 0)), 0) FROM chunks),"
                              " chunks = (SELECT count(*) FROM chunks),"
                              " last_key = (SELECT hi FROM chunks ORDER BY chunk_no DESC LIMIT 1), updated_at = ?1";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ck->db, sql, -1, &st, NULL) != SQLITE_OK)
        return ckpt_fail_db(ck, "cannot update the job", err);
    sqlite3_bind_int64(st, 1, sl_now_ms());
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : ckpt_fail_db(ck, "cannot update the job", err);
    sqlite3_finalize(st);
    return rc;
}

static int delete_chunk(sl_ckpt *ck, int64_t chunk_no, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_DELETE_CHUNK];
    sqlite3_bind_int64(st, 1, chunk_no);
    return step_done(ck, st, "cannot forget chunks", err);
}

/* What `down` undid, kept for `report` after the chunk itself is gone. */
static int insert_undone(sl_ckpt *ck, int64_t run_id, int64_t chunk_no, int64_t rows, int64_t duration_ms, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_INSERT_UNDONE];
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, chunk_no);
    sqlite3_bind_int64(st, 3, rows);
    sqlite3_bind_int64(st, 4, duration_ms);
    sqlite3_bind_int64(st, 5, sl_now_ms());
    return step_done(ck, st, "cannot record an undone chunk", err);
}

/* The chunk leaves the file, and the job's totals with it. */
static int forget_chunk(sl_ckpt *ck, int64_t chunk_no, sl_err *err)
{
    sqlite3_stmt *st = ck->stmts[ST_UNDO_JOB];
    sqlite3_bind_int64(st, 1, chunk_no);
    sqlite3_bind_int64(st, 2, sl_now_ms());
    if (step_done(ck, st, "cannot update the job", err) != 0)
        return -1;
    return delete_chunk(ck, chunk_no, err);
}

static int undo_chunk_tx(sl_ckpt *ckpt, int64_t run_id, int64_t chunk_no, int64_t rows, int64_t duration_ms,
                         sl_err *err)
{
    if (tx_begin(ckpt, err) != 0)
        return -1;
    if ((run_id > 0 && insert_undone(ckpt, run_id, chunk_no, rows, duration_ms, err) != 0) ||
        forget_chunk(ckpt, chunk_no, err) != 0 || (run_id > 0 && advance_run(ckpt, run_id, rows, err) != 0) ||
        tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

int sl_ckpt_undo_chunk(sl_ckpt *ckpt, int64_t run_id, int64_t chunk_no, int64_t rows, int64_t duration_ms, sl_err *err)
{
    if (unsynced(ckpt, err) != 0)
        return -1;
    return synced(ckpt, undo_chunk_tx(ckpt, run_id, chunk_no, rows, duration_ms, err), err);
}

int sl_ckpt_forget_chunks(sl_ckpt *ckpt, const int64_t *nums, size_t n, sl_err *err)
{
    if (n == 0)
        return 0;
    if (tx_begin(ckpt, err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (delete_chunk(ckpt, nums[i], err) != 0)
            return tx_abort(ckpt);
    if (resummarize(ckpt, err) != 0 || tx_commit(ckpt, err) != 0)
        return tx_abort(ckpt);
    return 0;
}

int sl_ckpt_each_skipped(sl_ckpt *ckpt, int (*fn)(const char *key, const char *error, void *arg), void *arg,
                         sl_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ckpt->db, "SELECT hi, error FROM chunks WHERE skipped <> 0 ORDER BY chunk_no", -1, &st,
                           NULL) != SQLITE_OK) {
        sl_err_set(err, "checkpoint file %s: cannot list skipped rows: %s", ckpt->path, sqlite3_errmsg(ckpt->db));
        return -1;
    }
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1), arg);
    if (rc == 0 && step != SQLITE_DONE) {
        sl_err_set(err, "checkpoint file %s: cannot list skipped rows: %s", ckpt->path, sqlite3_errmsg(ckpt->db));
        rc = -1;
    }
    sqlite3_finalize(st);
    return rc;
}
