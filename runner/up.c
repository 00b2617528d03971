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
#include "sluice/ctl.h"
#include "sluice/pace.h"
#include "sluice/progress.h"
#include "sluice/throttle.h"
#include "sluice/undo.h"

/* The key of one chunk edge, as text, one string per key column. */
typedef struct key_tuple {
    char *v[SL_MAX_KEY_COLS];
} key_tuple;

typedef struct chunk_bounds {
    int has_rows;
    key_tuple lo, hi;
    int64_t rows;
} chunk_bounds;

typedef struct up_run {
    sl_session *sess;
    const sl_opts *opts;
    sl_job *job;
    sl_ckpt *ckpt;
    sl_table_info info;
    char *lock_key;       /* "sluice:<job>" */
    char *boundary_first; /* boundary SQL from the table's start */
    char *boundary_after; /* boundary SQL after a key */
    char **stmt_sql;      /* up statements with :lo/:hi rendered */
    char *progress_sql;   /* INSERT INTO sluice_progress ... */
    char set_lock_timeout[64];
    char set_stmt_timeout[64];
    int64_t run_id;
    int64_t chunk_no; /* last committed */
    int64_t rows_done;
    int has_last;
    int locked;      /* holds the job's advisory lock */
    int run_lock_fd; /* the checkpoint's run lock, -1 if not held */
    sl_pace pace;    /* batch size, pause, rate and health limits in force */
    int paused;      /* by `ctl pause` */
    int64_t last_health_ms;
    key_tuple last;      /* last committed :hi */
    sl_undo_target undo; /* what each chunk saves for `down` (undo.h) */
    sl_err err;
} up_run;

static void tuple_free(key_tuple *t)
{
    for (size_t i = 0; i < SL_MAX_KEY_COLS; i++) {
        free(t->v[i]);
        t->v[i] = NULL;
    }
}

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
    snprintf(limit, 24, "%" PRId64, r->pace.batch);
    params[n++] = limit;
    return n;
}

static int64_t backoff_ms(int attempt)
{
    int64_t base = 200;
    for (int i = 1; i < attempt && base < 30000; i++)
        base *= 2;
    if (base > 30000)
        base = 30000;
    /* full jitter in [base/2, base]: runners retrying together spread out */
    return base / 2 + (int64_t)(rand() % (int)(base / 2 + 1));
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
    free(r->lock_key);
    tuple_free(&r->last);
    sl_undo_target_free(&r->undo);
    sl_table_info_free(&r->info);
    if (r->ckpt)
        sl_ckpt_close(r->ckpt);
}

/* Take the job's advisory lock: one runner per job and database. A just-killed
 * runner's backend may hold it for a moment, so wait a little before refusing. */
static int take_lock(up_run *r)
{
    const char *params[] = {r->lock_key};
    for (int tries = 0; tries < 50; tries++) {
        sl_answer ans;
        if (sl_session_exec1(r->sess, "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", 1, params, &ans) != 0)
            return -1;
        const char *got = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL;
        int held = got && strcmp(got, "t") == 0;
        if (!ans.ok)
            sl_err_set(&r->err, "cannot take the job's advisory lock: %s", ans.error);
        sl_answer_free(&ans);
        if (!got)
            return -1;
        if (held) {
            r->locked = 1;
            return 0;
        }
        if (sl_session_sleep(r->sess, 100))
            break;
    }
    sl_answer ans;
    const char *who = NULL;
    if (sl_session_exec1(r->sess,
                         "SELECT format('pid %s, %s, connected since %s', a.pid, coalesce(a.application_name, ''),"
                         " date_trunc('second', a.backend_start)) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                         " WHERE l.locktype = 'advisory' AND l.granted"
                         " AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0)",
                         1, params, &ans) == 0)
        who = sl_answer_val(&ans, 0, 0, 0);
    sl_err_set(&r->err, "job %s is already being run against this database (%s)", r->job->name,
               who ? who : "holder unknown");
    sl_err_append(&r->err, "hint: one runner per job and database; wait for it, or stop it with SIGINT");
    if (who || ans.error)
        sl_answer_free(&ans);
    return -2;
}

static int check_requires(up_run *r)
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
    } else if (!v || strcmp(v, "t") != 0) {
        sl_err_set(&r->err, "%s:%d: refusing to start: requires returned %s, not true: %s", r->job->path,
                   r->job->line[SL_DIR_REQUIRES], v ? v : "no row or NULL", r->job->requires);
        rc = -2;
    }
    sl_answer_free(&ans);
    return rc;
}

typedef struct import_ctx {
    up_run *r;
    int rc;
} import_ctx;

/* undo.c hook: a `down` killed between its commit (the chunk's row left
 * sluice_progress) and its checkpoint write leaves the file a chunk ahead:
 * forget what the database no longer has. */
static int trim_undone(up_run *r, int64_t *have)
{
    const char *params[] = {r->job->name};
    sl_answer ans;
    if (sl_session_exec1(r->sess, "SELECT coalesce(max(chunk_no), 0) FROM " SL_PROGRESS_TABLE " WHERE job = $1", 1,
                         params, &ans) != 0 ||
        !ans.ok) {
        sl_err_set(&r->err, "cannot read %s: %s", SL_PROGRESS_TABLE, ans.error ? ans.error : "connection lost");
        sl_answer_free(&ans);
        return -1;
    }
    int64_t db_max = strtoll(sl_answer_val(&ans, 0, 0, 0), NULL, 10);
    sl_answer_free(&ans);
    if (db_max >= *have)
        return 0;
    *have = db_max;
    return sl_ckpt_forget_after(r->ckpt, db_max, &r->err);
}

/* Copy chunks committed in the database but missing from the checkpoint file
 * (a kill between the two commits), then load the resume position. */
static int reconcile(up_run *r)
{
    sl_ckpt_job cj;
    if (sl_ckpt_get_job(r->ckpt, &cj, &r->err) != 0)
        return -1;
    int64_t have = cj.chunks;
    sl_state state = cj.state;
    sl_ckpt_job_free(&cj);
    if (state == SL_STATE_ROLLING_BACK && trim_undone(r, &have) != 0)
        return -1;

    char after[24];
    snprintf(after, sizeof after, "%" PRId64, have);
    const char *params[] = {r->job->name, after};
    sl_answer ans;
    if (sl_session_exec1(r->sess,
                         "SELECT chunk_no, array_to_json(lo)::text, array_to_json(hi)::text, rows, duration_ms, "
                         "attempts, checksum, (extract(epoch FROM committed_at) * 1000)::bigint, "
                         "(SELECT max(chunk_no) FROM " SL_PROGRESS_TABLE " WHERE job = $1) "
                         "FROM (SELECT 1) one LEFT JOIN " SL_PROGRESS_TABLE " p ON p.job = $1 AND p.chunk_no > $2 "
                         "ORDER BY chunk_no",
                         2, params, &ans) != 0)
        return -1;
    if (!ans.ok) {
        sl_err_set(&r->err, "cannot read %s: %s", SL_PROGRESS_TABLE, ans.error);
        sl_answer_free(&ans);
        return -1;
    }
    const char *maxs = sl_answer_val(&ans, 0, 0, 8);
    int64_t db_max = maxs ? strtoll(maxs, NULL, 10) : 0;
    if (db_max < have) {
        sl_err_set(&r->err, "checkpoint %s records %" PRId64 " committed chunks but this database's %s has %" PRId64,
                   sl_ckpt_file(r->ckpt), have, SL_PROGRESS_TABLE, db_max);
        sl_err_append(&r->err,
                      "hint: the checkpoint belongs to another database, or %s was edited; use another "
                      "--checkpoints directory for this database",
                      SL_PROGRESS_TABLE);
        sl_answer_free(&ans);
        return -2;
    }
    int rc = 0;
    for (int row = 0; row < ans.results[0].nrows && rc == 0; row++) {
        if (!sl_answer_val(&ans, 0, row, 0))
            break; /* the LEFT JOIN's empty row */
        sl_ckpt_chunk c = {0};
        c.chunk_no = strtoll(sl_answer_val(&ans, 0, row, 0), NULL, 10);
        c.lo = sl_answer_val(&ans, 0, row, 1);
        c.hi = sl_answer_val(&ans, 0, row, 2);
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

/* Load the last committed :hi from sluice_progress (exact text per column). */
static int load_position(up_run *r)
{
    size_t n = r->info.ks.ncols;
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT chunk_no, checksum");
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(&b, ", hi[%zu]", i + 1);
    sl_buf_adds(&b, ", (SELECT coalesce(sum(rows), 0) FROM " SL_PROGRESS_TABLE
                    " WHERE job = $1) FROM " SL_PROGRESS_TABLE " WHERE job = $1 ORDER BY chunk_no DESC LIMIT 1");
    const char *params[] = {r->job->name};
    sl_answer ans;
    int rc = sl_session_exec1(r->sess, b.data, 1, params, &ans);
    sl_buf_free(&b);
    if (rc != 0)
        return -1;
    if (!ans.ok) {
        sl_err_set(&r->err, "cannot read %s: %s", SL_PROGRESS_TABLE, ans.error);
        sl_answer_free(&ans);
        return -1;
    }
    r->has_last = ans.results[0].nrows > 0;
    r->chunk_no = 0;
    r->rows_done = 0;
    tuple_free(&r->last);
    if (r->has_last) {
        r->chunk_no = strtoll(sl_answer_val(&ans, 0, 0, 0), NULL, 10);
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

static void render_timeouts(up_run *r)
{
    snprintf(r->set_lock_timeout, sizeof r->set_lock_timeout, "SET LOCAL lock_timeout = %" PRId64,
             r->job->lock_timeout_ms);
    snprintf(r->set_stmt_timeout, sizeof r->set_stmt_timeout, "SET LOCAL statement_timeout = %" PRId64,
             r->job->statement_timeout_ms);
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
    /* $1 job, $2 chunk_no, then the lo columns, the hi columns, rows, attempts, checksum */
    sl_buf b = {0};
    sl_buf_adds(&b, "INSERT INTO " SL_PROGRESS_TABLE " (job, chunk_no, lo, hi, rows, duration_ms, attempts, checksum)"
                    " VALUES ($1, $2, ARRAY[");
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(&b, "%s$%zu", i ? ", " : "", 3 + i);
    sl_buf_adds(&b, "]::text[], ARRAY[");
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(&b, "%s$%zu", i ? ", " : "", 3 + n + i);
    sl_buf_printf(&b, "]::text[], $%zu, (extract(epoch FROM clock_timestamp() - now()) * 1000)::bigint, $%zu, $%zu)",
                  3 + 2 * n, 4 + 2 * n, 5 + 2 * n);
    r->progress_sql = sl_buf_take(&b);
    render_timeouts(r);
}

/* Reconnect with backoff and jitter for up to two minutes, then take the
 * job's lock again (the server dropped it with the old session). */
static int reconnect(up_run *r)
{
    int64_t start = sl_mono_ms();
    r->locked = 0; /* the server released it with the old session */
    for (int attempt = 1;; attempt++) {
        int64_t wait = backoff_ms(attempt + 1);
        sl_warn("%s: connection lost; reconnecting in %" PRId64 " ms (attempt %d)", r->job->name, wait, attempt);
        if (sl_session_sleep(r->sess, wait))
            return 1;
        sl_err err;
        if (sl_session_connect(r->sess, &err) == 0)
            break;
        if (sl_mono_ms() - start > 120000) {
            sl_err_set(&r->err, "%s: gave up reconnecting after 2 minutes: %s", r->job->name, err.msg);
            return -1;
        }
    }
    sl_err lerr;
    if (sl_ckpt_log_event(r->ckpt, "reconnect", "reconnected after a lost connection", &lerr) != 0)
        sl_warn("%s", lerr.msg);
    sl_info("%s: reconnected", r->job->name);
    return take_lock(r) == 0 ? 0 : -1;
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
        int rc = lost ? reconnect(r) : sl_session_sleep(r->sess, backoff_ms(attempt));
        if (rc != 0)
            return rc;
    }
}

static int fetch_bounds(up_run *r, const key_tuple *after, chunk_bounds *b)
{
    const char *params[SL_MAX_KEY_COLS + 1];
    char limit[24];
    sl_pg_query q = {after ? r->boundary_after : r->boundary_first, 0, params};
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
    size_t first = 3 + (r->undo.pre_sql ? 1 : 0);
    const sl_result *pre = r->undo.pre_sql ? &ans->results[3] : NULL;
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
 * round trip per chunk. */
static int send_chunk(up_run *r, const chunk_bounds *cur, chunk_bounds *next, int64_t attempts, int64_t *affected,
                      int *next_known)
{
    size_t k = r->job->up.nstmts, n = r->info.ks.ncols;
    /* with undo records: a pre-image query before the up statements and a post-image one after them */
    size_t pre = r->undo.pre_sql ? 1 : 0, post = r->undo.post_sql ? 1 : 0;
    size_t first = 3 + pre, prog_i = first + k + post, commit_i = prog_i + 1, bound_i = commit_i + 1;
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
    const char *prog[5 + 2 * SL_MAX_KEY_COLS];
    size_t np = 0;
    prog[np++] = r->job->name;
    prog[np++] = chunk_no;
    for (size_t i = 0; i < 2 * n; i++)
        prog[np++] = edges[i];
    prog[np++] = rows;
    prog[np++] = att;
    prog[np++] = r->job->checksum;
    const char *bparams[SL_MAX_KEY_COLS + 1];
    size_t nb = boundary_params(r, &cur->hi, bparams, limit);

    q[0] = (sl_pg_query){"BEGIN", 0, NULL};
    q[1] = (sl_pg_query){r->set_lock_timeout, 0, NULL};
    q[2] = (sl_pg_query){r->set_stmt_timeout, 0, NULL};
    if (pre)
        q[3] = (sl_pg_query){r->undo.pre_sql, 2 * (int)n, edges};
    for (size_t i = 0; i < k; i++) {
        const sl_stmt *st = &r->job->up.stmts[i];
        int used = (st->uses_lo + st->uses_hi) * (int)n;
        q[first + i] = (sl_pg_query){r->stmt_sql[i], used, st->uses_lo ? edges : edges + n};
    }
    if (post)
        q[first + k] = (sl_pg_query){r->undo.post_sql, 2 * (int)n, edges};
    q[prog_i] = (sl_pg_query){r->progress_sql, (int)np, prog};
    q[commit_i] = (sl_pg_query){"COMMIT", 0, NULL};
    q[bound_i] = (sl_pg_query){r->boundary_after, (int)nb, bparams};

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
                        const char *last_error)
{
    size_t n = r->info.ks.ncols;
    char *lo = tuple_json(&cur->lo, n), *hi = tuple_json(&cur->hi, n);
    sl_ckpt_chunk c = {r->chunk_no + 1,        lo,       hi,         cur->rows,  affected,
                       sl_mono_ms() - started, attempts, last_error, sl_now_ms()};
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

/* Run one chunk to an outcome: committed (0), stopped (1), failed (-1). */
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
            rc = -1;
            break;
        }
        if (st == CHUNK_LOST) {
            if (sl_session_stopping(r->sess)) {
                rc = 1; /* the second signal dropped it: rolled back, or committed and reconciled next time */
                break;
            }
            int committed = 0;
            if ((rc = reconnect(r)) != 0 || (rc = chunk_committed(r, r->chunk_no + 1, &committed)) != 0)
                break;
            if (committed) {
                *next_known = 0;
                break;
            }
            continue;
        }
        free(last_error);
        last_error = sl_strdup(r->err.msg);
        if (attempts > r->job->retries) {
            rc = -1;
            break;
        }
        int64_t wait = backoff_ms((int)attempts);
        sl_warn("%s (transient; retrying in %" PRId64 " ms, %" PRId64 " of %" PRId64 " retries left)", r->err.msg, wait,
                r->job->retries - attempts + 1, r->job->retries);
        sl_err lerr;
        if (sl_ckpt_log_event(r->ckpt, "retry", r->err.msg, &lerr) != 0)
            sl_warn("%s", lerr.msg);
        if (sl_session_sleep(r->sess, wait)) {
            rc = 1;
            break;
        }
    }
    if (rc == 0 && record_chunk(r, cur, affected, attempts, started, last_error) != 0)
        rc = -1;
    free(last_error);
    return rc;
}

/* Outside every window: wait for the next one (or stop with --no-wait). 0
 * to go on, 1 to stop. */
static int wait_for_window(up_run *r)
{
    int64_t wait_ms = 0;
    int announced = 0;
    while (!sl_window_check(r->job->windows, r->job->nwindows, time(NULL), &wait_ms)) {
        char at[16];
        sl_window_format_at(time(NULL), wait_ms, at);
        if (r->opts->no_wait) {
            sl_info("%s: outside its windows (next opens at %s); stopping (--no-wait)", r->job->name, at);
            return 1;
        }
        if (!announced) {
            sl_info("%s: outside its windows; waiting until %s", r->job->name, at);
            sl_progress_note("waiting for the window at %s", at);
            sl_err lerr;
            if (sl_ckpt_log_event(r->ckpt, "window", "outside the windows; waiting", &lerr) != 0)
                sl_warn("%s", lerr.msg);
            announced = 1;
        }
        if (sl_session_sleep(r->sess, wait_ms < 30000 ? wait_ms + 50 : 30000))
            return 1;
    }
    if (announced) {
        sl_info("%s: window open; going on", r->job->name);
        sl_progress_note(NULL);
    }
    return 0;
}

/* Health throttles: wait while a limit is exceeded, at most one check a
 * second. 0 to go on, 1 to stop. */
static int wait_for_health(up_run *r)
{
    char reason[512], first[512] = "";
    int64_t since = 0;
    for (;;) {
        if (sl_mono_ms() - r->last_health_ms < 1000 && !since)
            return 0;
        r->last_health_ms = sl_mono_ms();
        int rc = sl_throttle_check(r->sess, r->job, &r->pace, r->info.ks.table, reason, sizeof reason);
        if (rc == 0)
            break;
        if (rc < 0)
            sl_warn("%s: %s", r->job->name, reason); /* e.g. a broken throttle-query: waiting is the safe side */
        if (!since) {
            since = sl_mono_ms();
            snprintf(first, sizeof first, "%s", reason);
            sl_warn("%s: pausing: %s", r->job->name, reason);
            sl_progress_note("paused: %s", reason);
            sl_err lerr;
            if (sl_ckpt_log_event(r->ckpt, "throttle", reason, &lerr) != 0)
                sl_warn("%s", lerr.msg);
        }
        if (rc < 0 && !sl_session_connected(r->sess) && reconnect(r) != 0)
            return 1;
        if (sl_session_sleep(r->sess, 1000))
            return 1;
    }
    if (since) {
        char msg[700];
        snprintf(msg, sizeof msg, "resumed after %" PRId64 "s paused (%s)", (sl_mono_ms() - since) / 1000, first);
        sl_info("%s: %s", r->job->name, msg);
        sl_progress_note(NULL);
        sl_err lerr;
        if (sl_ckpt_log_event(r->ckpt, "throttle", msg, &lerr) != 0)
            sl_warn("%s", lerr.msg);
    }
    return 0;
}

/* Everything that holds the next chunk back: ctl pause, windows, health. */
static int gate(up_run *r)
{
    while (r->paused)
        if (sl_session_sleep(r->sess, 200))
            return 1;
    if (wait_for_window(r) != 0)
        return 1;
    return wait_for_health(r);
}

/* After a chunk: resize toward chunk-time, then sleep for pause/max-rate. */
static int pace_after(up_run *r, int64_t rows, int64_t chunk_ms, int64_t run_rows, int64_t run_start)
{
    int64_t before = r->pace.batch;
    if (sl_pace_adjust(&r->pace, rows, chunk_ms) != before) {
        sl_err lerr;
        if (sl_ckpt_set_batch(r->ckpt, r->pace.batch, &lerr) != 0)
            sl_warn("%s", lerr.msg);
    }
    return sl_session_sleep(r->sess, sl_pace_delay(&r->pace, run_rows, sl_mono_ms() - run_start));
}

/* Walk the key from the resume position to the end. Returns an exit code. */
static int walk(up_run *r)
{
    chunk_bounds cur = {0}, next = {0};
    int64_t run_rows = 0, run_start = sl_mono_ms();
    int rc = fetch_bounds(r, r->has_last ? &r->last : NULL, &cur);
    while (rc == 0 && cur.has_rows && !sl_session_stopping(r->sess)) {
        if ((rc = gate(r)) != 0)
            break;
        int next_known = 0;
        int64_t chunk_start = sl_mono_ms(), chunk_rows = cur.rows;
        rc = do_chunk(r, &cur, &next, &next_known);
        if (rc != 0)
            break;
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
            rc = pace_after(r, chunk_rows, chunk_ms, run_rows, run_start);
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
    int rc = take_lock(r);
    if (rc != 0)
        return rc == -2 ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    if (sl_catalog_resolve(r->sess, r->job, &r->info, &r->err) != 0)
        return SL_EXIT_USAGE;
    if (!r->info.index) {
        char *cols = sl_keys_column_list(&r->info.ks);
        sl_err_set(&r->err, "%s: no btree index on %s (%s): every chunk would scan the whole table", r->job->path,
                   r->info.ks.table, cols);
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
    rc = check_requires(r);
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
    if (!r->locked || !sl_session_connected(r->sess))
        return;
    r->locked = 0;
    const char *params[] = {r->lock_key};
    sl_answer ans;
    if (sl_session_exec1(r->sess, "SELECT pg_advisory_unlock(hashtextextended($1, 0))", 1, params, &ans) == 0)
        sl_answer_free(&ans);
}

/* `sluice ctl`, answered on the loop even mid-chunk: never waits; values
 * apply from the next chunk. */
static int on_ctl(const sl_ctl_req *req, sl_buf *out, void *arg)
{
    up_run *r = arg;
    char msg[256];
    if (req->cmd == SL_CTL_STATUS) {
        sl_buf_printf(out,
                      "job %s\nstate %s\nrows %" PRId64 "\nchunks %" PRId64 "\nbatch %" PRId64 "\npause %" PRId64
                      "ms\nmax-rate %" PRId64 "\nchunk-time %" PRId64 "ms\nrate %.0f rows/s\n",
                      r->job->name, r->paused ? "paused" : "running", r->rows_done, r->chunk_no, r->pace.batch,
                      r->pace.pause_ms, r->pace.max_rate, r->pace.chunk_time_ms, sl_progress_rate());
        return 0;
    }
    if (req->cmd == SL_CTL_PAUSE || req->cmd == SL_CTL_RESUME) {
        r->paused = req->cmd == SL_CTL_PAUSE;
        snprintf(msg, sizeof msg, "%s by sluice ctl", r->paused ? "paused" : "resumed");
        sl_progress_note(r->paused ? "paused by sluice ctl" : NULL);
    } else {
        switch (req->setting) {
        case SL_DIR_BATCH: r->pace.batch = req->number; break;
        case SL_DIR_PAUSE: r->pace.pause_ms = req->number; break;
        case SL_DIR_MAX_RATE: r->pace.max_rate = req->number; break;
        case SL_DIR_CHUNK_TIME: r->pace.chunk_time_ms = req->number; break;
        case SL_DIR_LOCK_TIMEOUT:
            r->job->lock_timeout_ms = req->number;
            render_timeouts(r);
            break;
        case SL_DIR_STATEMENT_TIMEOUT:
            r->job->statement_timeout_ms = req->number;
            render_timeouts(r);
            break;
        case SL_DIR_RETRIES: r->job->retries = req->number; break;
        default: assert(0 && "BUG: sl_ctl_parse_set let through a setting"); return -1;
        }
        snprintf(msg, sizeof msg, "set %s=%s by sluice ctl", req->name, req->value);
    }
    sl_info("%s: %s", r->job->name, msg);
    sl_err lerr;
    if (sl_ckpt_log_event(r->ckpt, "ctl", msg, &lerr) != 0 || (req->cmd == SL_CTL_SET && req->setting == SL_DIR_BATCH &&
                                                               sl_ckpt_set_batch(r->ckpt, r->pace.batch, &lerr) != 0))
        sl_warn("%s", lerr.msg);
    sl_buf_printf(out, "%s\n", msg);
    return 0;
}

/* Resume position, run record, the walk, and the final state. */
static int run_job(up_run *r)
{
    int rc = reconcile(r);
    if (rc == 0)
        rc = load_position(r);
    /* undo records past the last committed chunk belong to chunks that rolled back */
    if (rc == 0 && r->undo.post_sql)
        rc = sl_snap_drop_from(r->ckpt, r->chunk_no + 1, &r->err);
    if (rc != 0)
        return rc == -2 ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    prepare_sql(r);
    sl_pace_init(&r->pace, r->job);
    if (sl_ckpt_begin_run(r->ckpt, "up", SL_STATE_RUNNING, r->job->checksum, r->sess->pg.display, r->opts->force,
                          &r->run_id, &r->err) != 0 ||
        sl_ckpt_set_batch(r->ckpt, r->pace.batch, &r->err) != 0)
        return SL_EXIT_FAILED;
    int64_t total = sl_catalog_estimate_rows(r->sess, &r->info.ks);
    sl_info("%s: %s from chunk %" PRId64 " (%" PRId64 " rows done), batch %" PRId64, r->job->name,
            r->has_last ? "resuming" : "starting", r->chunk_no + 1, r->rows_done, r->pace.batch);
    sl_progress_begin(r->job->name, total, r->rows_done, r->opts->progress_tty);
    sl_ctl *ctl = NULL;
    char *ctl_path = sl_ctl_path(r->opts->ckpt_dir, r->job->name);
    sl_err cerr;
    if (sl_ctl_start(r->sess->loop, ctl_path, on_ctl, r, &ctl, &cerr) != 0)
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
    r.lock_key = sl_asprintf("sluice:%s", job->name);
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
