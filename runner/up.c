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

static void tuple_copy(key_tuple *dst, const key_tuple *src, size_t n)
{
    tuple_free(dst);
    for (size_t i = 0; i < n; i++)
        dst->v[i] = sl_strdup(src->v[i]);
}

static char *tuple_json(const key_tuple *t, size_t n)
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

/* Read a boundary result (first key, last key, count) into b. */
static void read_bounds(const sl_answer *ans, size_t res, size_t ncols, chunk_bounds *b)
{
    tuple_free(&b->lo);
    tuple_free(&b->hi);
    b->has_rows = 0;
    b->rows = 0;
    if (res >= ans->nresults || ans->results[res].nrows == 0)
        return;
    for (size_t i = 0; i < ncols; i++) {
        b->lo.v[i] = sl_strdup(sl_answer_val(ans, res, 0, (int)i));
        b->hi.v[i] = sl_strdup(sl_answer_val(ans, res, 0, (int)(ncols + i)));
    }
    b->rows = strtoll(sl_answer_val(ans, res, 0, (int)(2 * ncols)), NULL, 10);
    b->has_rows = b->rows > 0;
}

/* Parameters of the boundary query after r->last (or from the start). */
static size_t boundary_params(const up_run *r, const key_tuple *after, const char **params, char *limit)
{
    size_t n = 0;
    if (after)
        for (size_t i = 0; i < r->info.ks.ncols; i++)
            params[n++] = after->v[i];
    int64_t batch = r->split_limit > 0 && r->split_limit < r->pace.batch ? r->split_limit : r->pace.batch;
    snprintf(limit, 24, "%" PRId64, batch);
    params[n++] = limit;
    return n;
}

static void run_free(up_run *r)
{
    if (r->stmt_sql)
        for (size_t i = 0; i < r->job->up.nstmts; i++)
            free(r->stmt_sql[i]);
    free(r->stmt_sql);
    free(r->progress_sql);
    free(r->boundary_first);
    free(r->boundary_after);
    tuple_free(&r->last);
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
    r->boundary_first = sl_keys_boundary_sql(ks, 0);
    r->boundary_after = sl_keys_boundary_sql(ks, 1);
    r->stmt_sql = sl_calloc(r->job->up.nstmts, sizeof(char *));
    for (size_t i = 0; i < r->job->up.nstmts; i++)
        render_stmt(r, i);
    /* $1 job, $2 chunk_no, then the lo columns, the hi columns, rows, attempts, checksum, skipped */
    int lite = r->sess->dialect == SL_DIALECT_SQLITE;
    sl_buf b = {0};
    sl_buf_printf(&b,
                  "INSERT INTO " SL_PROGRESS_TABLE
                  " (job, chunk_no, lo, hi, rows, duration_ms, attempts, checksum, skipped) VALUES ($1, $2, %s",
                  lite ? "json_array(" : "ARRAY[");
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
                      " $%zu::boolean)",
                      3 + 2 * n, 4 + 2 * n, 5 + 2 * n, 6 + 2 * n);
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

/* Run queries that change nothing, retrying transient errors and lost
 * connections. 0 with an ok answer, 1 stopped, -1 failed (r->err). */
static int exec_read(up_run *r, const sl_pg_query *q, size_t n, sl_answer *ans)
{
    for (int attempt = 1;; attempt++) {
        if (sl_session_exec(r->sess, q, n, ans) != 0) {
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
        int rc = lost ? sl_up_reconnect(r) : sl_session_sleep(r->sess, sl_session_backoff_ms(attempt));
        if (rc != 0)
            return rc;
    }
}

static int fetch_bounds(up_run *r, const key_tuple *after, chunk_bounds *b)
{
    const char *params[SL_MAX_KEY_COLS + 1];
    char limit[24];
    sl_pg_query q = {after ? r->boundary_after : r->boundary_first, 0, params, 1};
    q.nparams = (int)boundary_params(r, after, params, limit);
    sl_answer ans;
    int rc = exec_read(r, &q, 1, &ans);
    if (rc != 0)
        return rc;
    read_bounds(&ans, 0, r->info.ks.ncols, b);
    sl_answer_free(&ans);
    return 0;
}

enum { CHUNK_OK, CHUNK_RETRY, CHUNK_FAILED, CHUNK_LOST };

/* Give ans n results (the missing ones zeroed), for answers merged below. */
static void pad_answer(sl_answer *ans, size_t n)
{
    ans->results = sl_realloc(ans->results, (n + 1) * sizeof(sl_result));
    memset(ans->results + ans->nresults, 0, (n + 1 - ans->nresults) * sizeof(sl_result));
    ans->nresults = n;
}

/* undo.c hook. A chunk with an undo record takes two pipeline segments: up to
 * its sluice_progress row, then, once the record is durably in the checkpoint
 * file, COMMIT and the next boundary (an explicit transaction stays open
 * across syncs). A runner killed in between rolls the chunk back; its record
 * is replaced when the chunk is redone. The reply is merged into one answer
 * indexed like q. */
static int exec_saving(up_run *r, const sl_pg_query *q, size_t nq, size_t split, sl_answer *ans)
{
    if (sl_session_exec(r->sess, q, split, ans) != 0)
        return -1;
    pad_answer(ans, nq);
    if (!ans->ok)
        return 0;
    size_t first = 1 + r->timeouts.n + (r->undo.pre_sql ? 1 : 0);
    const sl_result *pre = r->undo.pre_sql ? &ans->results[1 + r->timeouts.n] : NULL;
    if (sl_undo_save(&r->undo, r->ckpt, r->chunk_no + 1, pre, &ans->results[first + r->job->up.nstmts], &r->err) != 0) {
        sl_answer rb;
        if (sl_session_exec1(r->sess, "ROLLBACK", 0, NULL, &rb) == 0)
            sl_answer_free(&rb);
        ans->ok = 0;
        ans->failed_index = (int)split; /* reported like a failed COMMIT: rolled back, not transient */
        ans->error = sl_strdup(r->err.msg);
        return 0;
    }
    sl_answer tail;
    if (sl_session_exec(r->sess, q + split, nq - split, &tail) != 0) {
        sl_answer_free(ans);
        return -1;
    }
    for (size_t i = 0; i < tail.nresults && split + i < nq; i++) {
        ans->results[split + i] = tail.results[i];
        memset(&tail.results[i], 0, sizeof tail.results[i]);
    }
    ans->ok = tail.ok;
    ans->conn_lost = tail.conn_lost;
    ans->failed_index = tail.failed_index >= 0 ? (int)split + tail.failed_index : -1;
    memcpy(ans->sqlstate, tail.sqlstate, sizeof ans->sqlstate);
    ans->error = tail.error;
    tail.error = NULL;
    sl_answer_free(&tail);
    return 0;
}

/* Send one chunk: BEGIN, timeouts, the up statements, its progress row,
 * COMMIT, and the next chunk's boundary query, as one pipeline segment: one
 * round trip per chunk. The statements every chunk repeats are prepared
 * once per connection, not parsed and planned again each time. */
static int send_chunk(up_run *r, const chunk_bounds *cur, chunk_bounds *next, int64_t attempts, int64_t *affected,
                      int *next_known)
{
    size_t k = r->job->up.nstmts, n = r->info.ks.ncols;
    /* with undo records: a pre-image query before the up statements and a post-image one after them */
    size_t pre = r->undo.pre_sql ? 1 : 0, post = r->undo.post_sql ? 1 : 0;
    size_t first = 1 + r->timeouts.n + pre, prog_i = first + k + post, commit_i = prog_i + 1, bound_i = commit_i + 1;
    size_t nq = bound_i + 1;
    sl_pg_query *q = sl_calloc(nq, sizeof *q);
    const char *edges[2 * SL_MAX_KEY_COLS];
    for (size_t i = 0; i < n; i++) {
        edges[i] = cur->lo.v[i];
        edges[n + i] = cur->hi.v[i];
    }
    char chunk_no[24], rows[24], att[24], limit[24];
    snprintf(chunk_no, sizeof chunk_no, "%" PRId64, r->chunk_no + 1);
    snprintf(rows, sizeof rows, "%" PRId64, cur->rows);
    snprintf(att, sizeof att, "%" PRId64, attempts);
    const char *prog[6 + 2 * SL_MAX_KEY_COLS];
    size_t np = 0;
    prog[np++] = r->job->name;
    prog[np++] = chunk_no;
    for (size_t i = 0; i < 2 * n; i++)
        prog[np++] = edges[i];
    prog[np++] = rows;
    prog[np++] = att;
    prog[np++] = r->job->checksum;
    prog[np++] = "false";
    const char *bparams[SL_MAX_KEY_COLS + 1];
    size_t nb = boundary_params(r, &cur->hi, bparams, limit);

    q[0] = (sl_pg_query){sl_session_begin_sql(r->sess), 0, NULL};
    for (size_t i = 0; i < r->timeouts.n; i++)
        q[1 + i] = (sl_pg_query){r->timeouts.sql[i], 0, NULL};
    if (pre)
        q[1 + r->timeouts.n] = (sl_pg_query){r->undo.pre_sql, 2 * (int)n, edges, 1};
    for (size_t i = 0; i < k; i++) {
        const sl_stmt *st = &r->job->up.stmts[i];
        int used = (st->uses_lo + st->uses_hi) * (int)n;
        q[first + i] = (sl_pg_query){r->stmt_sql[i], used, st->uses_lo ? edges : edges + n, 1};
    }
    if (post)
        q[first + k] = (sl_pg_query){r->undo.post_sql, 2 * (int)n, edges, 1};
    q[prog_i] = (sl_pg_query){r->progress_sql, (int)np, prog, 1};
    q[commit_i] = (sl_pg_query){"COMMIT", 0, NULL};
    q[bound_i] = (sl_pg_query){r->boundary_after, (int)nb, bparams, 1};

    sl_answer ans;
    int rc = post ? exec_saving(r, q, nq, commit_i, &ans) : sl_session_exec(r->sess, q, nq, &ans);
    free(q);
    if (rc != 0 || ans.conn_lost) {
        if (rc == 0)
            sl_answer_free(&ans);
        return CHUNK_LOST;
    }
    *next_known = 0;
    if (ans.ok || ans.failed_index == (int)bound_i) {
        *affected = 0;
        for (size_t i = 0; i < k; i++)
            if (ans.results[first + i].cmd_tuples > 0)
                *affected += ans.results[first + i].cmd_tuples;
        if (ans.ok) {
            read_bounds(&ans, bound_i, n, next);
            *next_known = 1;
        }
        sl_answer_free(&ans);
        return CHUNK_OK;
    }
    /* The chunk failed and rolled back; an explicit transaction stays open
     * (aborted) until ROLLBACK, except when COMMIT itself failed. */
    int idx = ans.failed_index;
    if (idx >= 1 && idx < (int)commit_i) {
        sl_answer rb;
        if (sl_session_exec1(r->sess, "ROLLBACK", 0, NULL, &rb) == 0)
            sl_answer_free(&rb);
    }
    int transient = sl_pg_transient(ans.sqlstate);
    char *lo = tuple_json(&cur->lo, n), *hi = tuple_json(&cur->hi, n);
    char where[512] = "";
    if (idx >= (int)first && idx < (int)(first + k))
        snprintf(where, sizeof where, "%s:%d: ", r->job->path, r->job->up.stmts[idx - (int)first].line);
    sl_err_set(&r->err, "%s: chunk %" PRId64 " (%s .. %s) failed on attempt %" PRId64 ": %s%s%s%s", r->job->name,
               r->chunk_no + 1, lo, hi, attempts, where, ans.sqlstate, ans.sqlstate[0] ? " " : "", ans.error);
    free(lo);
    free(hi);
    sl_answer_free(&ans);
    return transient ? CHUNK_RETRY : CHUNK_FAILED;
}

/* After a lost connection: did the chunk in flight commit? */
static int chunk_committed(up_run *r, int64_t chunk_no, int *committed)
{
    char no[24];
    snprintf(no, sizeof no, "%" PRId64, chunk_no);
    const char *params[] = {r->job->name, no};
    sl_pg_query q = {"SELECT 1 FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND chunk_no = $2", 2, params};
    sl_answer ans;
    int rc = exec_read(r, &q, 1, &ans);
    if (rc != 0)
        return rc;
    *committed = ans.results[0].nrows > 0;
    sl_answer_free(&ans);
    return 0;
}

static int record_chunk(up_run *r, const chunk_bounds *cur, int64_t affected, int64_t attempts, int64_t started,
                        const char *last_error, int skipped)
{
    size_t n = r->info.ks.ncols;
    char *lo = tuple_json(&cur->lo, n), *hi = tuple_json(&cur->hi, n);
    sl_ckpt_chunk c = {r->chunk_no + 1,        lo,       hi,         cur->rows,  affected,
                       sl_mono_ms() - started, attempts, last_error, sl_now_ms()};
    c.skipped = skipped;
    int rc = sl_ckpt_commit_chunk(r->ckpt, r->run_id, &c, &r->err);
    free(lo);
    free(hi);
    if (rc != 0)
        return -1;
    r->chunk_no++;
    r->rows_done += cur->rows;
    tuple_copy(&r->last, &cur->hi, n);
    r->has_last = 1;
    return 0;
}

/* on-error skip: record a single row that keeps failing as set aside, in
 * its own transaction, so a resume never tries it again and `down` knows
 * there is nothing to undo there. */
static int set_aside(up_run *r, const chunk_bounds *cur, int64_t attempts, int64_t started, const char *error)
{
    size_t n = r->info.ks.ncols, np = 0;
    char chunk_no[24], att[24];
    snprintf(chunk_no, sizeof chunk_no, "%" PRId64, r->chunk_no + 1);
    snprintf(att, sizeof att, "%" PRId64, attempts);
    const char *prog[6 + 2 * SL_MAX_KEY_COLS];
    prog[np++] = r->job->name;
    prog[np++] = chunk_no;
    for (size_t i = 0; i < n; i++)
        prog[np++] = cur->lo.v[i];
    for (size_t i = 0; i < n; i++)
        prog[np++] = cur->hi.v[i];
    prog[np++] = "1";
    prog[np++] = att;
    prog[np++] = r->job->checksum;
    prog[np++] = "true";
    sl_pg_query q[] = {{sl_session_begin_sql(r->sess), 0, NULL}, {r->progress_sql, (int)np, prog}, {"COMMIT", 0, NULL}};
    sl_answer ans;
    int rc = sl_session_exec(r->sess, q, 3, &ans);
    if (rc == 0 && !ans.ok && !ans.conn_lost) {
        sl_answer rb;
        if (sl_session_exec1(r->sess, "ROLLBACK", 0, NULL, &rb) == 0)
            sl_answer_free(&rb);
    }
    if (rc != 0 || !ans.ok) {
        /* nothing recorded: the next run meets the row again and decides again */
        sl_err_set(&r->err, "%s: cannot set a failing row aside: %s", r->job->name,
                   ans.error ? ans.error : "connection lost");
        sl_answer_free(&ans);
        return -1;
    }
    sl_answer_free(&ans);
    char *key = tuple_json(&cur->hi, n);
    sl_warn("%s: row %s set aside (on-error skip): %s", r->job->name, key, error);
    free(key);
    return record_chunk(r, cur, 0, attempts, started, error, 1);
}

/* A chunk that keeps failing: split it (2), set its single row aside (0),
 * or fail the job (-1). Transient failures split under either on-error;
 * permanent ones only under skip, which narrows them down to single rows. */
static int after_failure(up_run *r, const chunk_bounds *cur, int transient, int64_t attempts, int64_t started)
{
    int skip = r->job->on_error == SL_ON_ERROR_SKIP;
    if (!transient && !skip)
        return -1;
    if (cur->rows > 1) {
        r->split_limit = cur->rows / 2;
        sl_warn("%s; splitting it: next chunks of at most %" PRId64 " rows", r->err.msg, r->split_limit);
        sl_err lerr;
        if (sl_ckpt_log_event(r->ckpt, "split", r->err.msg, &lerr) != 0)
            sl_warn("%s", lerr.msg);
        return 2;
    }
    if (!skip)
        return -1;
    char *error = sl_strdup(r->err.msg);
    int rc = set_aside(r, cur, attempts, started, error);
    free(error);
    return rc;
}

/* Run one chunk to an outcome: committed (0), stopped (1), failed (-1),
 * split (2: nothing committed; walk again from r->last in smaller chunks). */
static int do_chunk(up_run *r, const chunk_bounds *cur, chunk_bounds *next, int *next_known)
{
    int64_t started = sl_mono_ms(), affected = -1;
    char *last_error = NULL;
    int rc = 0;
    int64_t attempts = 1;
    for (;; attempts++) {
        int st = send_chunk(r, cur, next, attempts, &affected, next_known);
        if (st == CHUNK_OK)
            break;
        if (st == CHUNK_FAILED) {
            rc = after_failure(r, cur, 0, attempts, started);
            goto out;
        }
        if (st == CHUNK_LOST) {
            if (sl_session_stopping(r->sess)) {
                rc = 1; /* the second signal dropped it: rolled back, or committed and reconciled next time */
                goto out;
            }
            int committed = 0;
            if ((rc = sl_up_reconnect(r)) != 0 || (rc = chunk_committed(r, r->chunk_no + 1, &committed)) != 0)
                goto out;
            if (committed) {
                *next_known = 0;
                break;
            }
            continue;
        }
        free(last_error);
        last_error = sl_strdup(r->err.msg);
        if (attempts > r->job->retries) {
            rc = after_failure(r, cur, 1, attempts, started);
            goto out;
        }
        int64_t wait = sl_session_backoff_ms((int)attempts);
        sl_warn("%s (transient; retrying in %" PRId64 " ms, %" PRId64 " of %" PRId64 " retries left)", r->err.msg, wait,
                r->job->retries - attempts + 1, r->job->retries);
        sl_err lerr;
        if (sl_ckpt_log_event(r->ckpt, "retry", r->err.msg, &lerr) != 0)
            sl_warn("%s", lerr.msg);
        if (sl_session_sleep(r->sess, wait)) {
            rc = 1;
            goto out;
        }
    }
    if (record_chunk(r, cur, affected, attempts, started, last_error, 0) != 0)
        rc = -1;
out:
    free(last_error);
    return rc;
}

/* Walk the key from the resume position to the end. Returns an exit code. */
static int walk(up_run *r)
{
    chunk_bounds cur = {0}, next = {0};
    int64_t run_rows = 0, run_start = sl_mono_ms();
    int rc = fetch_bounds(r, r->has_last ? &r->last : NULL, &cur);
    while (rc == 0 && cur.has_rows && !sl_session_stopping(r->sess)) {
        if ((rc = sl_up_gate(r)) != 0)
            break;
        int next_known = 0;
        int64_t chunk_start = sl_mono_ms(), chunk_rows = cur.rows;
        rc = do_chunk(r, &cur, &next, &next_known);
        if (rc == 2) { /* split: the same range again, in smaller chunks */
            rc = fetch_bounds(r, r->has_last ? &r->last : NULL, &cur);
            continue;
        }
        if (rc != 0)
            break;
        if (r->split_limit > 0 && (r->split_limit *= 2) >= r->pace.batch)
            r->split_limit = 0; /* past the trouble: back to full chunks, doubling */
        int64_t chunk_ms = sl_mono_ms() - chunk_start;
        run_rows += chunk_rows;
        sl_progress_update(r->rows_done, r->pace.batch);
        if (next_known) {
            chunk_bounds tmp = cur;
            cur = next;
            next = tmp;
        } else {
            rc = fetch_bounds(r, &r->last, &cur);
            if (rc != 0)
                break;
        }
        if (cur.has_rows)
            rc = sl_up_pace_after(r, chunk_rows, chunk_ms, run_rows, run_start);
    }
    int finished = rc == 0 && !cur.has_rows;
    tuple_free(&cur.lo);
    tuple_free(&cur.hi);
    tuple_free(&next.lo);
    tuple_free(&next.hi);
    if (rc < 0)
        return SL_EXIT_FAILED;
    return finished ? SL_EXIT_OK : SL_EXIT_STOPPED;
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
    /* undo records past the last committed chunk belong to chunks that rolled back */
    if (rc == 0 && r->undo.post_sql)
        rc = sl_snap_drop_from(r->ckpt, r->chunk_no + 1, &r->err);
    if (rc != 0)
        return rc == -2 ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    prepare_sql(r);
    sl_pace_init(&r->pace, r->job);
    if (sl_ckpt_begin_run(r->ckpt, "up", SL_STATE_RUNNING, r->job->checksum, sl_session_display(r->sess),
                          r->opts->force, &r->run_id, &r->err) != 0 ||
        sl_ckpt_set_batch(r->ckpt, r->pace.batch, &r->err) != 0)
        return SL_EXIT_FAILED;
    int64_t total = sl_catalog_estimate_rows(r->sess, &r->info.ks);
    sl_info("%s: %s from chunk %" PRId64 " (%" PRId64 " rows done), batch %" PRId64, r->job->name,
            r->has_last ? "resuming" : "starting", r->chunk_no + 1, r->rows_done, r->pace.batch);
    sl_progress_begin(r->job->name, total, r->rows_done, r->opts->progress_tty);
    sl_ctl *ctl = NULL;
    char *ctl_path = sl_ctl_path(r->opts->ckpt_dir, r->job->name);
    sl_err cerr;
    if (sl_ctl_start(r->sess->loop, ctl_path, sl_up_on_ctl, r, &ctl, &cerr) != 0)
        sl_warn("%s (the job runs without live control)", cerr.msg);
    int code = walk(r);
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
        sl_info("%s: done: %" PRId64 " rows in %" PRId64 " chunks", r->job->name, r->rows_done, r->chunk_no);
    else if (code == SL_EXIT_STOPPED)
        sl_info("%s: stopped after chunk %" PRId64 " (%" PRId64 " rows); `sluice up` resumes it", r->job->name,
                r->chunk_no, r->rows_done);
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
