/* up_prepare.c: what an `up` run checks and reads before its first chunk: refusals, undo records, position, the end. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "up_internal.h"

static int check_requires(up_run *r)
{
    if (!r->job->requires)
        return 0;
    sl_answer ans;
    sl_query q = {r->job->requires, 0, NULL, 0};
    if (sl_session_exec_readonly(r->sess, &q, 1, &ans) != 0) {
        sl_err_set(&r->err, "%s: lost the connection while checking requires", r->job->name);
        return -1;
    }
    int rc = 0;
    const char *v = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL;
    if (!ans.ok) {
        sl_err_set(&r->err, "%s:%d: requires query failed: %s", r->job->path, r->job->line[SL_DIR_REQUIRES], ans.error);
        sl_err_append(&r->err, "%s", gate_readonly_hint);
        rc = SL_EREFUSED;
    } else if (!sl_answer_true(v)) {
        sl_err_set(&r->err, "%s:%d: refusing to start: requires returned %s, not true: %s", r->job->path,
                   r->job->line[SL_DIR_REQUIRES], v ? v : "no row or NULL", r->job->requires);
        rc = SL_EREFUSED;
    }
    sl_answer_free(&ans);
    return rc;
}

int up_verify(up_run *r)
{
    if (!r->job->verify)
        return 0;
    int line = r->job->line[SL_DIR_VERIFY];
    sl_query q = {r->job->verify, 0, NULL, 0};
    sl_answer ans;
    int rc = up_exec_check(r, r->sess, &q, 1, &ans);
    if (rc != 0) {
        if (rc == SL_STOPPED)
            sl_err_set(&r->err, "%s: stopped before its verify query ran", r->job->name);
        sl_err_append(&r->err, "(while running verify, %s:%d)", r->job->path, line);
        if (rc != SL_STOPPED)
            sl_err_append(&r->err, "%s", gate_readonly_hint);
        return -1;
    }
    const char *v = sl_answer_val(&ans, 0, 0, 0);
    int ok = sl_answer_true(v);
    if (!ok) {
        sl_err_set(&r->err, "%s:%d: verify returned %s, not true: %s", r->job->path, line, v ? v : "no row or NULL",
                   r->job->verify);
        sl_err_append(&r->err, "hint: every chunk is done; fix what the query finds (the data, or the job's "
                               "statements), then `sluice up` checks it again without walking the table");
    }
    sl_answer_free(&ans);
    return ok ? 0 : -1;
}

static int check_index(up_run *r)
{
    if (r->info.index)
        return 0;
    char *cols = sl_keys_column_list(&r->info.ks);
    sl_err_set(&r->err, "%s: no btree index on %s (%s): every chunk would scan the whole table", r->job->path,
               r->info.ks.table, cols);
    /* SQLite has no CONCURRENTLY, and its CREATE INDEX needs a name */
    if (r->sess->dialect == SL_DIALECT_SQLITE)
        sl_err_append(&r->err,
                      "hint: CREATE INDEX sluice_%s ON %s (%s); or run with --allow-no-index to walk it anyway",
                      r->job->name, r->info.ks.table, cols);
    else
        sl_err_append(&r->err,
                      "hint: CREATE INDEX CONCURRENTLY ON %s (%s); or run with --allow-no-index to walk it anyway",
                      r->info.ks.table, cols);
    free(cols);
    if (!r->opts->allow_no_index)
        return SL_EREFUSED;
    sl_warn("%s", r->err.msg);
    return 0;
}

/* The server's own check of SQL it was given: a missing column in `where`
 * or in an up statement is a refusal now (exit 2), not chunk 1's failure.
 * EXPLAIN plans without running; statements it cannot plan (CALL, DO) are
 * left to the first chunk. */
static int check_sql(sl_session *sess, const sl_job *job, const char *what, int line, const char *sql, int nparams,
                     sl_err *err)
{
    const char *nulls[2 * SL_MAX_KEY_COLS] = {0};
    char *q = sl_asprintf("%s %s", sess->dialect == SL_DIALECT_SQLITE ? "EXPLAIN QUERY PLAN" : "EXPLAIN", sql);
    sl_answer ans;
    int rc = sl_session_exec1(sess, q, nparams, nulls, &ans);
    free(q);
    if (rc != 0) {
        sl_err_set(err, "%s: lost the connection while checking its SQL", job->name);
        return -1;
    }
    if (!ans.ok && !ans.conn_lost)
        sl_err_set(err, "%s:%d: %s: %s%s%s", job->path, line, what, ans.sqlstate, ans.sqlstate[0] ? " " : "",
                   ans.error);
    rc = ans.ok ? SL_OK : ans.conn_lost ? SL_EFAIL : SL_EREFUSED;
    sl_answer_free(&ans);
    return rc;
}

/* Each statement of sec (EXPLAIN, nothing runs): 0, or check_sql's refusal. */
static int check_section(sl_session *sess, const sl_job *job, const sl_keyspec *ks, const sl_section *sec,
                         const char *what, sl_err *err)
{
    int n = (int)ks->ncols, rc = 0;
    for (size_t i = 0; rc == 0 && i < sec->nstmts; i++) {
        const sl_stmt *st = &sec->stmts[i];
        if (!sl_stmt_explainable(st))
            continue;
        char *sql = sl_keys_stmt_sql(ks, st);
        rc = check_sql(sess, job, what, st->line, sql, (st->uses_lo + st->uses_hi) * n, err);
        free(sql);
        /* `id BETWEEN :lo AND :hi` with a key of two columns compares a column with a row: PostgreSQL
         * says "operator does not exist: bigint >= record", SQLite "row value misused" */
        if (rc == SL_EREFUSED && n > 1 &&
            (strstr(err->msg, "42883 operator does not exist") || strstr(err->msg, "row value misused"))) {
            char *cols = sl_keys_column_list(ks);
            sl_err_append(err,
                          "hint: the key has %d columns, so :lo and :hi are rows of %d values: compare the key "
                          "as a row, (%s) BETWEEN :lo AND :hi",
                          n, n, cols);
            free(cols);
        }
    }
    return rc;
}

int sl_up_check_sql(sl_session *sess, const sl_job *job, const sl_keyspec *ks, sl_err *err)
{
    int rc = 0;
    if (job->where) {
        char *sql = sl_asprintf("SELECT 1 FROM %s WHERE (%s) LIMIT 0", ks->table, job->where);
        rc = check_sql(sess, job, "where is not valid here", job->line[SL_DIR_WHERE], sql, 0, err);
        free(sql);
    }
    if (rc == 0)
        rc = check_section(sess, job, ks, &job->up, "this up statement cannot run against the database", err);
    return rc;
}

int sl_down_check_sql(sl_session *sess, const sl_job *job, const sl_keyspec *ks, sl_err *err)
{
    return check_section(sess, job, ks, &job->down, "this down statement cannot run against the database", err);
}

int up_preflight(up_run *r, int fresh)
{
    if (sl_catalog_resolve(r->sess, r->job, &r->info, &r->err) != 0)
        return SL_EREFUSED;
    if (fresh)
        sl_catalog_count_ahead(r->sess, &r->info.ks);
    int rc = check_index(r);
    if (rc != 0)
        return rc;
    if (!r->info.unique_key)
        sl_warn("%s: the key of %s is not unique: a chunk takes every row of its :hi value, so chunks may be "
                "larger than batch and rows counts approximate",
                r->job->path, r->info.ks.table);
    if (r->info.nullable_key)
        sl_warn("%s: a key column of %s allows NULL; rows with a NULL key are never visited", r->job->path,
                r->info.ks.table);
    if ((rc = check_requires(r)) != 0)
        return rc;
    if (sl_undo_resolve(r->sess, r->job, &r->info, &r->undo, &r->err) != 0)
        return SL_EREFUSED;
    r->id.table = sl_strdup(r->info.ks.table);
    if (sl_run_key_identity(r->sess, &r->info.ks, &r->id, &r->err) != 0)
        return -1;
    r->id.where = r->job->where ? sl_strdup(r->job->where) : NULL;
    r->id.undo = sl_undo_identity(&r->undo);
    return 0;
}

/* Run a query about the job ($1 = the job): 0 with an ok answer in ans,
 * else -1 with r->err set. */
static int read_job(up_run *r, const char *sql, sl_answer *ans)
{
    const char *params[] = {r->job->name};
    if (sl_session_exec1(r->sess, sql, 1, params, ans) == 0 && ans->ok)
        return 0;
    sl_err_set(&r->err, "%s: cannot read its progress: %s", r->job->name, ans->error ? ans->error : "connection lost");
    sl_answer_free(ans);
    return -1;
}

int up_check_undo_records(up_run *r)
{
    if (r->undo.kind != SL_UNDO_SNAPSHOT_COLS && r->undo.kind != SL_UNDO_SNAPSHOT_ALL)
        return 0;
    sl_answer ans;
    if (read_job(r,
                 "SELECT p.chunk_no FROM " SL_PROGRESS_TABLE " p WHERE p.job = $1 AND NOT p.skipped"
                 " AND NOT EXISTS (SELECT 1 FROM " SL_UNDO_TABLE " u WHERE u.job = p.job AND u.chunk_no = p.chunk_no)"
                 " ORDER BY p.chunk_no",
                 &ans) != 0)
        return -1;
    int lost = ans.results[0].nrows;
    if (lost > 0) {
        sl_buf list = {0};
        for (int i = 0; i < lost && i < 20; i++)
            sl_buf_printf(&list, "%s%s", i ? ", " : "", sl_answer_val(&ans, 0, i, 0));
        sl_err_set(&r->err,
                   "%s: %d committed chunk%s no undo record in %s (chunk%s %s%s): `down` could not put %s back",
                   r->job->name, lost, lost == 1 ? " has" : "s have", SL_UNDO_TABLE, lost == 1 ? "" : "s", list.data,
                   lost > 20 ? ", ..." : "", lost == 1 ? "it" : "them");
        sl_err_append(&r->err,
                      "hint: were rows deleted from %s? to go on anyway (down will leave those chunks as they "
                      "are), run with --allow-lost-undo",
                      SL_UNDO_TABLE);
        sl_buf_free(&list);
    }
    sl_answer_free(&ans);
    if (lost == 0)
        return 0;
    if (!r->opts->allow_lost_undo)
        return SL_EREFUSED;
    sl_warn("%s (going on: --allow-lost-undo)", r->err.msg);
    return 0;
}

/* Read n key columns of row 0 from column from on into t; 0 when NULL. */
static int read_tuple(const sl_answer *ans, int from, size_t n, up_key *t)
{
    up_key_free(t);
    for (size_t i = 0; i < n; i++) {
        const char *v = sl_answer_val(ans, 0, 0, from + (int)i);
        if (!v) {
            up_key_free(t);
            return 0;
        }
        t->v[i] = sl_strdup(v);
    }
    return 1;
}

/* sluice_jobs.walk_end was changed by hand (why, malloc'd): refused, as
 * resuming with it would end the walk somewhere it never ended. */
static int end_refused(up_run *r, char *why)
{
    char *end = r->run.row.walk_end;
    sl_err_set(&r->err, "%s: where its walk ends, " SL_JOBS_TABLE ".walk_end = %s, cannot be: %s", r->job->name,
               end ? end : "NULL", why);
    sl_err_append(&r->err,
                  "hint: was it changed by hand? It is the key's last value when the job's first chunk ran: put "
                  "it back; or roll the job back with `sluice down %s`, then run it again",
                  r->job->name);
    free(why);
    up_key_free(&r->end);
    r->has_end = 0;
    return SL_EREFUSED;
}

/* The recorded end is a value of the key at or after the walk's position
 * (a walk never goes past its end). */
static int end_behind(up_run *r)
{
    size_t n = r->info.ks.ncols;
    const char *params[2 * SL_MAX_KEY_COLS];
    for (size_t i = 0; i < n; i++) {
        params[i] = r->end.v[i];
        params[n + i] = r->last.v[i];
    }
    char *end = sl_keys_placeholder_sql(&r->info.ks, 1), *last = sl_keys_placeholder_sql(&r->info.ks, 1 + (int)n);
    char *sql = sl_asprintf("SELECT %s >= %s", end, last);
    free(end);
    free(last);
    sl_answer ans;
    int rc = sl_session_exec1(r->sess, sql, 2 * (int)n, params, &ans);
    free(sql);
    if (rc != 0 || ans.conn_lost) {
        sl_answer_free(&ans);
        sl_err_set(&r->err, "%s: cannot read its progress: connection lost", r->job->name);
        return -1;
    }
    char *why = !ans.ok ? sl_asprintf("it is not a value of the key (%s)", ans.error)
                : !sl_answer_true(sl_answer_val(&ans, 0, 0, 0))
                    ? sl_strdup("it is before the last committed chunk's :hi")
                    : NULL;
    sl_answer_free(&ans);
    return why ? end_refused(r, why) : 0;
}

/* The end of the walk: the one the job began with, or (no chunk yet) the
 * key's last value now. None with end follow. */
static int load_end(up_run *r)
{
    size_t n = r->info.ks.ncols;
    r->has_end = 0;
    r->nothing = 0;
    if (r->job->follow)
        return 0;
    sl_answer ans;
    if (r->has_last && r->run.row.walk_end) {
        sl_buf b = {0};
        sl_buf_adds(&b, sl_session_is(r->sess, SL_DIALECT_SQLITE) ? "SELECT json_array_length(walk_end)"
                                                                  : "SELECT cardinality(walk_end)");
        sl_session_add_key_elems(r->sess, &b, "walk_end", n);
        sl_buf_adds(&b, " FROM " SL_JOBS_TABLE " WHERE job = $1");
        int rc = read_job(r, b.data, &ans);
        sl_buf_free(&b);
        if (rc != 0)
            return -1;
        const char *count = sl_answer_val(&ans, 0, 0, 0);
        char *why = count && strtoll(count, NULL, 10) == (long long)n
                        ? NULL
                        : sl_asprintf("it holds %s value%s, and the job's key has %zu column%s", count ? count : "no",
                                      count && strcmp(count, "1") == 0 ? "" : "s", n, n == 1 ? "" : "s");
        r->has_end = read_tuple(&ans, 1, n, &r->end);
        sl_answer_free(&ans);
        if (!why && !r->has_end)
            why = sl_strdup("a value of it is NULL");
        return why ? end_refused(r, why) : end_behind(r);
    }
    char *sql = sl_keys_last_sql(&r->info.ks);
    sl_query q = {sql, 0, NULL, 0};
    int rc = up_exec_read(r, r->sess, &q, 1, &ans);
    free(sql);
    if (rc != 0)
        return rc; /* SL_STOPPED: stopped by a signal */
    r->has_end = ans.results[0].nrows > 0 && read_tuple(&ans, 0, n, &r->end);
    sl_answer_free(&ans);
    r->nothing = !r->has_end && !r->has_last;
    if (r->has_last && r->has_end) /* chunks from a sluice that did not record the end */
        sl_info("%s: the end of its walk was not recorded; it ends at the key's last value now", r->job->name);
    return 0;
}

int up_load_position(up_run *r)
{
    size_t n = r->info.ks.ncols;
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT chunk_no");
    sl_session_add_key_elems(r->sess, &b, "hi", n);
    /* the job's rows, chunks and rows set aside, in one pass over its chunks */
    sl_buf_adds(&b, ", a.n_rows, a.n_chunks, a.n_set_aside FROM " SL_PROGRESS_TABLE
                    " CROSS JOIN (SELECT coalesce(sum(rows), 0) AS n_rows, count(*) AS n_chunks,"
                    " coalesce(sum(CASE WHEN skipped THEN 1 ELSE 0 END), 0) AS n_set_aside FROM " SL_PROGRESS_TABLE
                    " WHERE job = $1) a WHERE job = $1 ORDER BY chunk_no DESC LIMIT 1");
    sl_answer ans;
    int rc = read_job(r, b.data, &ans);
    sl_buf_free(&b);
    if (rc != 0)
        return -1;
    r->has_last = ans.results[0].nrows > 0;
    r->chunks_done = 0;
    r->next_chunk_no = 1;
    r->rows_done = 0;
    r->rows_set_aside = 0;
    up_key_free(&r->last);
    if (r->has_last) {
        r->next_chunk_no = strtoll(sl_answer_val(&ans, 0, 0, 0), NULL, 10) + 1;
        r->chunks_done = strtoll(sl_answer_val(&ans, 0, 0, (int)(2 + n)), NULL, 10);
        r->rows_done = strtoll(sl_answer_val(&ans, 0, 0, (int)(1 + n)), NULL, 10);
        r->rows_set_aside = strtoll(sl_answer_val(&ans, 0, 0, (int)(3 + n)), NULL, 10);
        if (!read_tuple(&ans, 1, n, &r->last)) {
            sl_err_set(&r->err, "%s holds fewer key columns for job %s than the job's key has (%zu)", SL_PROGRESS_TABLE,
                       r->job->name, n);
            sl_answer_free(&ans);
            return SL_EREFUSED;
        }
    }
    sl_answer_free(&ans);
    return load_end(r);
}
