/* run_row.c: a job's row in sluice_jobs, read; what the job walks, checked against it; a job file renamed. */
#include "sluice/base/log.h"
#include "sluice/engine/run.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run_internal.h"

/* ---- the job's row ---- */

void sl_job_row_free(sl_job_row *row)
{
    free(row->checksum);
    free(row->table);
    free(row->key);
    free(row->where);
    free(row->undo);
    free(row->walk_end);
    free(row->error);
    free(row->runner);
    free(row->last_key);
    free(row->paused);
    memset(row, 0, sizeof *row);
}

void sl_run_identity_free(sl_run_identity *id)
{
    free(id->table);
    free(id->key);
    free(id->key_names);
    free(id->where);
    free(id->undo);
    memset(id, 0, sizeof *id);
}

/* The columns of sluice_jobs read_row takes, in order. */
#define JOB_COLS_PG                                                                                          \
    "j.state, j.stamped::text, j.checksum, j.table_name, j.key_cols, j.where_sql, j.undo,"                   \
    " array_to_json(j.walk_end)::text, j.follow::text, j.error,"                                             \
    " (extract(epoch FROM j.started_at) * 1000)::bigint, (extract(epoch FROM j.updated_at) * 1000)::bigint," \
    " j.runner, j.runner_host, j.runner_pid, j.runner_start, j.runner_desc,"                                 \
    " (extract(epoch FROM j.lease_until - now()) * 1000)::bigint"
#define JOB_COLS_LITE                                                                                                     \
    "j.state, CASE WHEN j.stamped THEN 'true' ELSE 'false' END, j.checksum, j.table_name, j.key_cols, j.where_sql,"       \
    " j.undo, j.walk_end, CASE WHEN j.follow THEN 'true' ELSE 'false' END, j.error," LITE_MS("j.started_at") "," LITE_MS( \
        "j.updated_at") ", j.runner, j.runner_host, j.runner_pid, j.runner_start, j.runner_desc, NULL"
#define NJOB_COLS 19 /* and j.paused */

/* What is there to read: sluice_jobs, sluice_progress, sluice_jobs.paused
 * (tables an older sluice made lack it until the next run adds it). */
static int tables_present(sl_session *sess, int *jobs, int *progress, int *paused, sl_err *err)
{
    const char *sql = run_is_lite(sess)
                          ? "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '" SL_JOBS_TABLE "'),"
                            " EXISTS (SELECT 1 FROM sqlite_master WHERE name = '" SL_PROGRESS_TABLE "'),"
                            " EXISTS (SELECT 1 FROM pragma_table_info('" SL_JOBS_TABLE "')"
                            "  WHERE name = 'paused')"
                          : "SELECT to_regclass('" SL_JOBS_TABLE "') IS NOT NULL,"
                            " to_regclass('" SL_PROGRESS_TABLE "') IS NOT NULL,"
                            " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('" SL_JOBS_TABLE
                            "') AND attname = 'paused' AND NOT attisdropped)";
    sl_answer ans;
    if (sl_session_exec1(sess, sql, 0, NULL, &ans) != 0 || !ans.ok) {
        sl_err_set(err, "cannot look for sluice's tables on %s: %s", sl_session_display(sess),
                   ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return -1;
    }
    *jobs = sl_answer_true(sl_answer_val(&ans, 0, 0, 0));
    *progress = sl_answer_true(sl_answer_val(&ans, 0, 0, 1));
    *paused = sl_answer_true(sl_answer_val(&ans, 0, 0, 2));
    sl_answer_free(&ans);
    return 0;
}

static char *row_sql(const sl_session *sess, int jobs, int progress, int paused)
{
    int lite = run_is_lite(sess);
    sl_buf b = {0};
    sl_buf_adds(&b, "SELECT ");
    if (jobs)
        sl_buf_printf(&b, "%s, %s", lite ? JOB_COLS_LITE : JOB_COLS_PG, paused ? "j.paused" : "NULL");
    else
        for (int i = 0; i < NJOB_COLS; i++)
            sl_buf_adds(&b, i ? ", NULL" : "NULL");
    if (progress)
        sl_buf_printf(&b,
                      ", (SELECT count(*) FROM " SL_PROGRESS_TABLE " WHERE job = $1),"
                      " (SELECT coalesce(sum(rows), 0) FROM " SL_PROGRESS_TABLE " WHERE job = $1),"
                      " (SELECT count(*) FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND skipped),"
                      " (SELECT %s FROM " SL_PROGRESS_TABLE " WHERE job = $1 ORDER BY chunk_no DESC LIMIT 1)",
                      lite ? "hi" : "array_to_json(hi)::text");
    else
        sl_buf_adds(&b, ", 0, 0, 0, NULL");
    if (jobs)
        sl_buf_printf(&b, " FROM (SELECT %s AS job) k LEFT JOIN " SL_JOBS_TABLE " j ON j.job = k.job",
                      lite ? "CAST($1 AS TEXT)" : "$1::text");
    return sl_buf_take(&b);
}

/* Is a runner of another process holding the job? On PostgreSQL its lease
 * says so (a process gone from this machine is dead whatever its lease
 * says); on SQLite the lock file does. */
static int holder_alive(sl_session *sess, const char *job, const sl_answer *ans)
{
    const char *runner = sl_answer_val(ans, 0, 0, 12);
    if (run_is_lite(sess))
        return sl_lite_job_locked(&sess->lite, job);
    if (!runner || run_to_i64(sl_answer_val(ans, 0, 0, 17)) <= 0)
        return 0;
    if (sl_runner_is_self(runner))
        return 0; /* this process: what it reads of the job is its own run, or a killed one's */
    return !sl_runner_gone(sl_answer_val(ans, 0, 0, 13), (int)run_to_i64(sl_answer_val(ans, 0, 0, 14)),
                           run_to_i64(sl_answer_val(ans, 0, 0, 15)));
}

static void fill_row(sl_session *sess, const char *job, const sl_answer *ans, sl_job_row *row)
{
    const char *state = sl_answer_val(ans, 0, 0, 0);
    row->exists = state != NULL;
    if (!state || sl_state_parse(state, &row->state) != 0)
        row->state = SL_STATE_PENDING;
    row->stamped = sl_answer_true(sl_answer_val(ans, 0, 0, 1));
    row->checksum = sl_strdup(sl_answer_val(ans, 0, 0, 2) ? sl_answer_val(ans, 0, 0, 2) : "");
    row->table = sl_strdup_or_null(sl_answer_val(ans, 0, 0, 3));
    row->key = sl_strdup_or_null(sl_answer_val(ans, 0, 0, 4));
    row->where = sl_strdup_or_null(sl_answer_val(ans, 0, 0, 5));
    row->undo = sl_strdup_or_null(sl_answer_val(ans, 0, 0, 6));
    row->walk_end = sl_strdup_or_null(sl_answer_val(ans, 0, 0, 7));
    row->follow = sl_answer_true(sl_answer_val(ans, 0, 0, 8));
    row->error = sl_strdup_or_null(sl_answer_val(ans, 0, 0, 9));
    row->started_at_ms = run_to_i64(sl_answer_val(ans, 0, 0, 10));
    row->updated_at_ms = run_to_i64(sl_answer_val(ans, 0, 0, 11));
    row->paused = sl_strdup_or_null(sl_answer_val(ans, 0, 0, 18));
    int alive = row->exists && holder_alive(sess, job, ans);
    if (alive)
        row->runner = sl_strdup_or_null(sl_answer_val(ans, 0, 0, 16));
    /* killed mid-run: nobody holds it, and `up` resumes it */
    if (row->state == SL_STATE_RUNNING && !alive)
        row->state = SL_STATE_STOPPED;
    row->chunks = run_to_i64(sl_answer_val(ans, 0, 0, NJOB_COLS));
    row->rows = run_to_i64(sl_answer_val(ans, 0, 0, NJOB_COLS + 1));
    row->skipped = run_to_i64(sl_answer_val(ans, 0, 0, NJOB_COLS + 2));
    row->last_key = sl_strdup_or_null(sl_answer_val(ans, 0, 0, NJOB_COLS + 3));
    /* chunks from a sluice that kept no row: work was done, not known to be finished */
    if (!row->exists && row->chunks > 0)
        row->state = SL_STATE_STOPPED;
}

int sl_run_read_row(sl_session *sess, const char *job, sl_job_row *row, sl_err *err)
{
    memset(row, 0, sizeof *row);
    row->state = SL_STATE_PENDING;
    row->checksum = sl_strdup("");
    int jobs = 0, progress = 0, paused = 0;
    if (tables_present(sess, &jobs, &progress, &paused, err) != 0)
        return -1;
    if (!jobs && !progress)
        return 0;
    char *sql = row_sql(sess, jobs, progress, paused);
    const char *params[] = {job};
    sl_answer ans;
    int rc = sl_session_exec1(sess, sql, 1, params, &ans);
    free(sql);
    if (rc != 0 || !ans.ok) {
        sl_err_set(err, "cannot read job %s from %s: %s", job, sl_session_display(sess),
                   ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return -1;
    }
    free(row->checksum);
    fill_row(sess, job, &ans, row);
    sl_answer_free(&ans);
    return 0;
}

const char *sl_run_row_kind(const sl_job_row *row)
{
    if (row->stamped)
        return "stamp";
    return row->state == SL_STATE_ROLLING_BACK || row->state == SL_STATE_ROLLED_BACK ? "down" : "up";
}

/* ---- what the job walks ---- */

/* What orders a key column, the column named as quote_ident() does (the
 * catalog's quoted names): the btree operator family of its type (a domain's:
 * its base type's), so that integer and bigint order alike, or else the type
 * itself; and its collation. */
static const char key_order_sql[] =
    "SELECT coalesce((SELECT quote_ident(fn.nspname) || '.' || quote_ident(f.opfname)"
    "   FROM pg_opclass o JOIN pg_am m ON m.oid = o.opcmethod AND m.amname = 'btree'"
    "   JOIN pg_opfamily f ON f.oid = o.opcfamily JOIN pg_namespace fn ON fn.oid = f.opfnamespace"
    "  WHERE o.opcdefault AND o.opcintype = coalesce(nullif(t.typbasetype, 0), a.atttypid) LIMIT 1),"
    "  format_type(a.atttypid, a.atttypmod))"
    " || CASE WHEN a.attcollation <> 0 THEN ' COLLATE ' || quote_ident(n.nspname) || '.' || quote_ident(c.collname)"
    " ELSE '' END"
    " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_collation c ON c.oid = a.attcollation"
    " LEFT JOIN pg_namespace n ON n.oid = c.collnamespace"
    " WHERE a.attrelid = to_regclass($1) AND quote_ident(a.attname) = $2 AND a.attnum > 0 AND NOT a.attisdropped";

int sl_run_key_identity(sl_session *sess, const sl_keyspec *ks, sl_run_identity *id, sl_err *err)
{
    free(id->key);
    free(id->key_names);
    id->key = NULL;
    id->key_names = sl_keys_column_list(ks);
    const char *params[SL_MAX_KEY_COLS][2];
    sl_query q[SL_MAX_KEY_COLS];
    sl_answer ans = {0};
    int lite = run_is_lite(sess);
    for (size_t i = 0; i < ks->ncols && !lite; i++) {
        params[i][0] = ks->table;
        params[i][1] = ks->cols[i];
        q[i] = (sl_query){key_order_sql, 2, params[i], 0};
    }
    if (!lite && (sl_session_exec(sess, q, ks->ncols, &ans) != 0 || !ans.ok)) {
        sl_err_set(err, "cannot read what orders %s's key on %s: %s", ks->table, sl_session_display(sess),
                   ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return -1;
    }
    sl_buf b = {0};
    for (size_t i = 0; i < ks->ncols; i++) {
        /* SQLite: the declared type, which gives the column its affinity (no type: none) */
        const char *type = lite ? ks->types[i] : sl_answer_val(&ans, i, 0, 0);
        sl_buf_printf(&b, "%s%s%s%s", i ? ", " : "", ks->cols[i], type && *type ? " " : "", type ? type : "");
    }
    if (!lite)
        sl_answer_free(&ans);
    id->key = sl_buf_take(&b);
    return 0;
}

static int same_text(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* A changed identity part: always refused. */
static int refuse_changed(const sl_job *job, const char *what, const char *was, const char *now, sl_err *err)
{
    /* a value that starts quoted (a table's, a key's name) is shown as it is */
    const char *qwas = was && *was != '"' ? "\"" : "", *qnow = now && *now != '"' ? "\"" : "";
    sl_err_set(err, "%s: the job's %s changed after its first chunk committed: it was %s%s%s, it is now %s%s%s",
               job->path, what, qwas, was ? was : "none", qwas, qnow, now ? now : "none", qnow);
    sl_err_append(err,
                  "hint: the chunks already committed walked the old %s, so resuming would skip rows or apply "
                  "them twice. Put the file back; or start over: `sluice down %s` with the old file (or `sluice "
                  "stamp %s pending` to forget its progress), or write the new version as a new job file",
                  what, job->name, job->name);
    return SL_EREFUSED;
}

int sl_run_check_identity(const sl_job_row *row, const sl_job *job, const sl_run_identity *id, const sl_run_opts *opts,
                          sl_err *err)
{
    if (row->chunks == 0 || !row->table)
        return 0; /* nothing fixed yet (or fixed by a sluice that did not record it) */
    if (!same_text(row->table, id->table))
        return refuse_changed(job, "table", row->table, id->table, err);
    /* a sluice before the types recorded the columns alone */
    if (!same_text(row->key, id->key) && !same_text(row->key, id->key_names)) {
        refuse_changed(job, "key", row->key, id->key, err);
        sl_err_append(err, "hint: the key is its columns with what orders them (the btree operator family of each "
                           "column's type, its collation): an ALTER TABLE that changed one of those since counts too; "
                           "put it back to resume");
        return SL_EREFUSED;
    }
    if (!same_text(row->where, id->where))
        return refuse_changed(job, "where", row->where, id->where, err);
    if (!same_text(row->undo, id->undo))
        return refuse_changed(job, "undo columns", row->undo && row->undo[0] ? row->undo : NULL,
                              id->undo && id->undo[0] ? id->undo : NULL, err);
    if (!row->checksum[0] || strcmp(row->checksum, job->checksum) == 0)
        return 0;
    if (opts->allow_changed_statements) {
        sl_warn("%s was changed after its first chunk committed (checksum %s, now %s); going on with the new text "
                "(--allow-changed-statements)",
                job->path, row->checksum, job->checksum);
        return 0;
    }
    sl_err_set(err, "%s was changed after its first chunk committed (checksum %s, now %s)", job->path, row->checksum,
               job->checksum);
    sl_err_append(err, "hint: put the file back as it was, or resume with the new statements using "
                       "--allow-changed-statements (what it walks, table, key, where and undo columns, must stay)");
    return SL_EREFUSED;
}

/* ---- a job file renamed ---- */

/* The directory part of path with name.sql: where job name's file would be. */
static char *sibling_path(const char *path, const char *name)
{
    const char *slash = strrchr(path, '/');
    int dir = slash ? (int)(slash - path) + 1 : 0;
    return sl_asprintf("%.*s%s.sql", dir, path, name);
}

int sl_run_check_renamed(sl_session *sess, const sl_job *job, sl_err *err)
{
    int jobs = 0, progress = 0, paused = 0;
    if (tables_present(sess, &jobs, &progress, &paused, err) != 0)
        return -1;
    if (!jobs)
        return 0;
    const char *params[] = {job->checksum, job->name};
    sl_answer ans;
    if (sl_session_exec1(sess,
                         "SELECT job, state FROM " SL_JOBS_TABLE " WHERE checksum = $1 AND job <> $2"
                         " AND state NOT IN ('pending', 'rolled_back') ORDER BY job",
                         2, params, &ans) != 0 ||
        !ans.ok) {
        sl_err_set(err, "cannot read the jobs in %s on %s: %s", SL_JOBS_TABLE, sl_session_display(sess),
                   ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return -1;
    }
    int rc = 0;
    for (int r = 0; rc == 0 && r < ans.results[0].nrows; r++) {
        const char *other = sl_answer_val(&ans, 0, r, 0);
        char *path = sibling_path(job->path, other);
        if (access(path, F_OK) != 0) {
            sl_err_set(err,
                       "%s: the file is, byte for byte, the job file %s ran with, and the database records %s as "
                       "%s, but %s is gone: renamed? Under its new name the job would run again",
                       job->path, other, other, sl_answer_val(&ans, 0, r, 1), path);
            sl_err_append(err,
                          "hint: a job's name is its file's name, and the database knows it as %s: give the file "
                          "that name back. To run the same statements again as a new job on purpose, make the "
                          "new file differ (a comment will do)",
                          other);
            rc = SL_EREFUSED;
        }
        free(path);
    }
    sl_answer_free(&ans);
    return rc;
}
