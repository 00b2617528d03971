/* run.c: one run of a job: its lock, its state in the database (read top to bottom below), reconnects, the journal. */
#include "sluice/engine/run.h"
#include "sluice/base/fiber.h"
#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/services/metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is_lite(const sl_session *sess)
{
    return sess->dialect == SL_DIALECT_SQLITE;
}

static char *dup_or_null(const char *s)
{
    return s ? sl_strdup(s) : NULL;
}

static int64_t to_i64(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

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
#define LITE_MS(col) "CAST(round((julianday(" col ") - 2440587.5) * 86400000) AS INTEGER)"
#define JOB_COLS_LITE                                                                                                     \
    "j.state, CASE WHEN j.stamped THEN 'true' ELSE 'false' END, j.checksum, j.table_name, j.key_cols, j.where_sql,"       \
    " j.undo, j.walk_end, CASE WHEN j.follow THEN 'true' ELSE 'false' END, j.error," LITE_MS("j.started_at") "," LITE_MS( \
        "j.updated_at") ", j.runner, j.runner_host, j.runner_pid, j.runner_start, j.runner_desc, NULL"
#define NJOB_COLS 19 /* and j.paused */

/* What is there to read: sluice_jobs, sluice_progress, sluice_jobs.paused
 * (tables an older sluice made lack it until the next run adds it). */
static int tables_present(sl_session *sess, int *jobs, int *progress, int *paused, sl_err *err)
{
    const char *sql = is_lite(sess) ? "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '" SL_JOBS_TABLE "'),"
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
    int lite = is_lite(sess);
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
    if (is_lite(sess))
        return sl_lite_job_locked(&sess->lite, job);
    if (!runner || to_i64(sl_answer_val(ans, 0, 0, 17)) <= 0)
        return 0;
    if (sl_runner_is_self(runner))
        return 0; /* this process: what it reads of the job is its own run, or a killed one's */
    return !sl_runner_gone(sl_answer_val(ans, 0, 0, 13), (int)to_i64(sl_answer_val(ans, 0, 0, 14)),
                           to_i64(sl_answer_val(ans, 0, 0, 15)));
}

static void fill_row(sl_session *sess, const char *job, const sl_answer *ans, sl_job_row *row)
{
    const char *state = sl_answer_val(ans, 0, 0, 0);
    row->exists = state != NULL;
    if (!state || sl_state_parse(state, &row->state) != 0)
        row->state = SL_STATE_PENDING;
    row->stamped = sl_answer_true(sl_answer_val(ans, 0, 0, 1));
    row->checksum = sl_strdup(sl_answer_val(ans, 0, 0, 2) ? sl_answer_val(ans, 0, 0, 2) : "");
    row->table = dup_or_null(sl_answer_val(ans, 0, 0, 3));
    row->key = dup_or_null(sl_answer_val(ans, 0, 0, 4));
    row->where = dup_or_null(sl_answer_val(ans, 0, 0, 5));
    row->undo = dup_or_null(sl_answer_val(ans, 0, 0, 6));
    row->walk_end = dup_or_null(sl_answer_val(ans, 0, 0, 7));
    row->follow = sl_answer_true(sl_answer_val(ans, 0, 0, 8));
    row->error = dup_or_null(sl_answer_val(ans, 0, 0, 9));
    row->started_at_ms = to_i64(sl_answer_val(ans, 0, 0, 10));
    row->updated_at_ms = to_i64(sl_answer_val(ans, 0, 0, 11));
    row->paused = dup_or_null(sl_answer_val(ans, 0, 0, 18));
    int alive = row->exists && holder_alive(sess, job, ans);
    if (alive)
        row->runner = dup_or_null(sl_answer_val(ans, 0, 0, 16));
    /* killed mid-run: nobody holds it, and `up` resumes it */
    if (row->state == SL_STATE_RUNNING && !alive)
        row->state = SL_STATE_STOPPED;
    row->chunks = to_i64(sl_answer_val(ans, 0, 0, NJOB_COLS));
    row->rows = to_i64(sl_answer_val(ans, 0, 0, NJOB_COLS + 1));
    row->skipped = to_i64(sl_answer_val(ans, 0, 0, NJOB_COLS + 2));
    row->last_key = dup_or_null(sl_answer_val(ans, 0, 0, NJOB_COLS + 3));
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
    int lite = is_lite(sess);
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

/* ---- the lock ---- */

/* SQLite refused the job's lock: name its holder as the lease's refusal
 * does, from what it wrote in sluice_jobs when it took the lock. */
static void name_lite_holder(sl_run *run)
{
    const char *params[] = {run->job->name};
    sl_answer ans;
    if (sl_session_exec1(run->sess, "SELECT runner_desc FROM " SL_JOBS_TABLE " WHERE job = $1", 1, params, &ans) == 0 &&
        ans.ok && ans.nresults > 0 && ans.results[0].nrows > 0 && sl_answer_val(&ans, 0, 0, 0)) {
        const char *desc = sl_answer_val(&ans, 0, 0, 0);
        sl_runner_refusal(run->job->name, desc, strcmp(desc, sl_runner_self()->desc) == 0, -1, &run->err);
    }
    sl_answer_free(&ans);
}

static int take_lock(sl_run *run)
{
    if (!is_lite(run->sess)) {
        int rc = sl_lease_take(&run->lease, run->sess, run->job->name, &run->err);
        if (rc == 0) {
            run->locked = 1;
            sl_lease_start(&run->lease, run->sess);
        }
        return rc;
    }
    int rc = sl_session_lock_job(run->sess, run->job->name, 5000, &run->err);
    run->locked = rc == 0;
    if (rc == SL_EREFUSED)
        name_lite_holder(run);
    if (rc != 0)
        return rc;
    /* who holds it, for status (the lock file itself is the lock) */
    const char *params[] = {run->job->name, sl_runner_self()->desc};
    sl_query q[] = {
        {"INSERT OR IGNORE INTO " SL_JOBS_TABLE " (job, state) VALUES ($1, 'pending')", 1, params, 0},
        {"UPDATE " SL_JOBS_TABLE " SET runner_desc = $2 WHERE job = $1", 2, params, 0},
    };
    sl_answer ans;
    if (sl_session_exec(run->sess, q, 2, &ans) != 0 || !ans.ok) {
        sl_err_set(&run->err, "cannot record the job in %s: %s", SL_JOBS_TABLE,
                   ans.error ? ans.error : "not connected");
        rc = -1;
    }
    sl_answer_free(&ans);
    return rc;
}

static void release_lock(sl_run *run)
{
    if (!run->locked)
        return;
    if (is_lite(run->sess))
        sl_session_unlock_job(run->sess, run->job->name);
    else
        sl_lease_release(&run->lease, run->sess);
    run->locked = 0;
}

int sl_run_lost(const sl_run *run)
{
    return !is_lite(run->sess) && sl_lease_lost(&run->lease);
}

void sl_run_fenced(sl_run *run)
{
    run->lease.lost = 1;
    snprintf(run->lease.why, sizeof run->lease.why,
             "%s: another runner took the job over (the lease lapsed while this runner was held up): stopping; "
             "the chunk in flight rolled back",
             run->job->name);
}

const char *sl_run_fence_id(const sl_run *run)
{
    return is_lite(run->sess) ? NULL : run->lease.id;
}

/* ---- the journal ---- */

void sl_run_event(sl_run *run, const char *kind, const char *message)
{
    sl_run_event_data(run, kind, message, NULL);
}

void sl_run_event_data(sl_run *run, const char *kind, const char *message, const char *data)
{
    sl_err lerr;
    if (run->ckpt && sl_ckpt_log_event_data(run->ckpt, kind, message, data, &lerr) != 0)
        sl_warn("%s", lerr.msg);
}

/* Read an existing checkpoint file of job and refuse it when it belongs to
 * another database than db: before anything is written anywhere. */
static int check_journal(sl_session *sess, const sl_run_opts *opts, const char *job, const sl_db_identity *db,
                         sl_err *err)
{
    char *path = sl_ckpt_path(opts->ckpt_dir, job);
    sl_ckpt *ckpt = NULL;
    int rc = sl_ckpt_open(path, job, 0, &ckpt, err);
    free(path);
    if (rc == SL_CKPT_MISSING)
        return 0; /* none yet */
    if (rc != 0)
        return SL_EREFUSED;
    rc = sl_ckpt_bind(ckpt, db->id, db->cluster, db->name, !is_lite(sess), 0, err);
    sl_ckpt_close(ckpt);
    return rc < 0 ? SL_EREFUSED : SL_OK;
}

int sl_run_check_journal(sl_session *sess, const sl_run_opts *opts, const char *job, sl_err *err)
{
    sl_db_identity db;
    int found = sl_schema_identity(sess, &db, err);
    if (found < 0)
        return -1;
    if (!found) { /* sluice never ran here: any checkpoint file of the job belongs elsewhere */
        memset(&db, 0, sizeof db);
        snprintf(db.id, sizeof db.id, "(none yet)");
        snprintf(db.name, sizeof db.name, "%s", sl_session_display(sess));
    }
    return check_journal(sess, opts, job, &db, err);
}

/* The chunks the database has, ascending, asked through sess. */
static int db_chunk_numbers(sl_run *run, sl_session *sess, int64_t **nums, size_t *n)
{
    *nums = NULL;
    *n = 0;
    const char *params[] = {run->job->name};
    sl_answer ans;
    if (sl_session_exec1(sess, "SELECT chunk_no FROM " SL_PROGRESS_TABLE " WHERE job = $1 ORDER BY chunk_no", 1, params,
                         &ans) != 0 ||
        !ans.ok) {
        sl_err_set(&run->err, "cannot read %s: %s", SL_PROGRESS_TABLE, ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return -1;
    }
    *n = (size_t)ans.results[0].nrows;
    *nums = sl_calloc(*n + 1, sizeof **nums);
    for (size_t i = 0; i < *n; i++)
        (*nums)[i] = to_i64(sl_answer_val(&ans, 0, (int)i, 0));
    sl_answer_free(&ans);
    return 0;
}

int sl_run_copy_chunks(sl_session *sess, sl_ckpt *ckpt, int64_t run_id, const sl_run_spans *spans, const char *job,
                       const int64_t *nums, size_t n, int64_t *after, sl_err *err)
{
    int lite = is_lite(sess); /* SQLite keeps the keys as JSON text, times as ISO text */
    sl_buf sql = {0};
    sl_buf_printf(&sql,
                  "SELECT chunk_no, %s, %s, rows, duration_ms, attempts, %s, CASE WHEN skipped THEN 'true' ELSE "
                  "'false' END, error FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND ",
                  lite ? "lo" : "array_to_json(lo)::text", lite ? "hi" : "array_to_json(hi)::text",
                  lite ? LITE_MS("committed_at") : "(extract(epoch FROM committed_at) * 1000)::bigint");
    if (nums) {
        sl_buf_adds(&sql, "chunk_no IN (");
        for (size_t i = 0; i < n; i++)
            sl_buf_printf(&sql, "%s%" PRId64, i ? ", " : "", nums[i]);
        sl_buf_adds(&sql, ") ORDER BY chunk_no");
    } else {
        sl_buf_printf(&sql, "chunk_no > %" PRId64 " ORDER BY chunk_no LIMIT %zu", *after, n);
    }
    const char *params[] = {job};
    sl_answer ans;
    int rc = sl_session_exec1(sess, sql.data, 1, params, &ans);
    sl_buf_free(&sql);
    if (rc != 0 || !ans.ok) {
        sl_err_set(err, "cannot read %s: %s", SL_PROGRESS_TABLE, ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return -1;
    }
    int nrows = ans.results[0].nrows;
    for (int row = 0; row < nrows && rc == 0; row++) {
        sl_ckpt_chunk c = {0};
        c.chunk_no = to_i64(sl_answer_val(&ans, 0, row, 0));
        c.lo = sl_answer_val(&ans, 0, row, 1);
        c.hi = sl_answer_val(&ans, 0, row, 2);
        c.rows = to_i64(sl_answer_val(&ans, 0, row, 3));
        c.affected = -1; /* only the runner that committed it knew */
        c.duration_ms = to_i64(sl_answer_val(&ans, 0, row, 4));
        c.attempts = to_i64(sl_answer_val(&ans, 0, row, 5));
        c.committed_at_ms = to_i64(sl_answer_val(&ans, 0, row, 6));
        c.skipped = sl_answer_true(sl_answer_val(&ans, 0, row, 7));
        c.error = sl_answer_val(&ans, 0, row, 8);
        if (c.skipped && !c.error)
            c.error = "set aside by on-error skip";
        int64_t in = run_id;
        for (size_t k = 0; spans && k < spans->n && spans->started_ms[k] <= c.committed_at_ms; k++)
            in = spans->run_id[k];
        rc = sl_ckpt_commit_chunk(ckpt, in, &c, err);
        if (after)
            *after = c.chunk_no;
    }
    sl_answer_free(&ans);
    return rc == 0 ? nrows : -1;
}

/* In d (ascending) but not in f (ascending): into out. */
static size_t minus(const int64_t *d, size_t nd, const int64_t *f, size_t nf, int64_t *out)
{
    size_t j = 0, n = 0;
    for (size_t i = 0; i < nd; i++) {
        while (j < nf && f[j] < d[i])
            j++;
        if (j >= nf || f[j] != d[i])
            out[n++] = d[i];
    }
    return n;
}

/* Add the database's chunks nums[0..n-1] to the journal, a thousand at a time. */
static int copy_from_db(sl_run *run, sl_session *sess, const int64_t *nums, size_t n)
{
    for (size_t i = 0; i < n; i += 1000)
        if (sl_run_copy_chunks(sess, run->ckpt, 0, NULL, run->job->name, nums + i, n - i < 1000 ? n - i : 1000, NULL,
                               &run->err) < 0)
            return -1;
    return 0;
}

/* Make the journal's chunks the database's: add what it lacks (a kill
 * between a chunk's commit and its journal entry, or a lost directory), drop
 * what the database no longer has (a `down` killed after its commit). */
static int sync_chunks(sl_run *run)
{
    int64_t *db = NULL, *file = NULL;
    size_t ndb = 0, nfile = 0;
    if (db_chunk_numbers(run, run->sess, &db, &ndb) != 0 ||
        sl_ckpt_chunk_numbers(run->ckpt, &file, &nfile, &run->err) != 0) {
        free(db);
        return -1;
    }
    int64_t *missing = sl_calloc(ndb + 1, sizeof *missing), *extra = sl_calloc(nfile + 1, sizeof *extra);
    size_t nmissing = minus(db, ndb, file, nfile, missing), nextra = minus(file, nfile, db, ndb, extra);
    /* chunks leave the database only by down or stamp pending, or with a
     * server's last commits: a standby promoted without them (a new
     * timeline), a crash of its machine before they reached the disk (the
     * server started since), or a loss this command's run before found
     * (after_loss); otherwise someone edited sluice_progress */
    sl_state st = run->row.state;
    int undoing = st == SL_STATE_ROLLING_BACK || st == SL_STATE_ROLLED_BACK || st == SL_STATE_PENDING;
    int64_t seen = 0, seen_started = 0, now = run->db.timeline, started = run->db.started;
    int rc = sl_ckpt_timeline(run->ckpt, &seen, &seen_started, &run->err);
    char *why = NULL; /* why the file is ahead, when the database lost its last commits */
    if (rc == 0 && nextra && !undoing && seen > 0 && now > seen)
        why = sl_asprintf("its timeline went from %" PRId64 " to %" PRId64
                          " since the file last saw it (a standby promoted, or a point-in-time restore), which "
                          "loses a server's last commits",
                          seen, now);
    else if (rc == 0 && nextra && !undoing && !run->job->wait_commit && now == seen && seen_started > 0 &&
             started > 0 && started != seen_started) /* a crash loses a suffix of the commits that did not wait */
        why = sl_asprintf("%s restarted since the file last saw it, and a crash loses the last commits made "
                          "without waiting for the disk (synchronous-commit off, the default)",
                          is_lite(run->sess) ? "the machine" : "its server");
    if (why) {
        sl_warn("%s: the database no longer has %zu chunk%s that checkpoint file %s records (chunk %" PRId64
                "%s): %s; the database decides what is applied: going by it",
                run->job->name, nextra, nextra == 1 ? "" : "s", sl_ckpt_file(run->ckpt), extra[0],
                nextra > 1 ? ", ..." : "", why);
        free(why);
        undoing = 1; /* as after a down: the file follows the database */
    } else if (rc == 0 && nextra && !undoing && run->after_loss) {
        sl_info("%s: checkpoint file %s also records %zu chunk%s (chunk %" PRId64
                "%s) that committed before the loss and came in after it was found; going by the database",
                run->job->name, sl_ckpt_file(run->ckpt), nextra, nextra == 1 ? "" : "s", extra[0],
                nextra > 1 ? ", ..." : "");
        undoing = 1;
    }
    if (rc == 0 && nextra && !undoing) {
        sl_err_set(&run->err,
                   "checkpoint file %s records %zu committed chunk%s (chunk %" PRId64
                   "%s) that this database's %s does "
                   "not have, though the job was never rolled back",
                   sl_ckpt_file(run->ckpt), nextra, nextra == 1 ? "" : "s", extra[0], nextra > 1 ? ", ..." : "",
                   SL_PROGRESS_TABLE);
        int same_timeline = now > 0 && seen > 0;
        sl_err_append(
            &run->err,
            "hint: the database was restored from a backup taken before they committed, the file belongs "
            "to another database%s, or rows of %s were deleted by hand; the database decides what is "
            "applied: move the file aside to go by it",
            same_timeline || is_lite(run->sess) ? "" : ", a failover promoted a standby that had not received them",
            SL_PROGRESS_TABLE);
        if (same_timeline)
            sl_err_append(&run->err,
                          "the server is on timeline %" PRId64 ", as when the file last looked: no "
                          "standby was promoted since",
                          now);
        rc = SL_EREFUSED;
    }
    if (rc == 0)
        rc = sl_ckpt_forget_chunks(run->ckpt, extra, nextra, &run->err);
    if (rc == 0 && (now > 0 || started > 0) && (now != seen || started != seen_started))
        rc = sl_ckpt_set_timeline(run->ckpt, now, started, &run->err);
    if (rc == 0)
        rc = copy_from_db(run, run->sess, missing, nmissing);
    if (rc == 0 && (nmissing || nextra))
        sl_info("%s: brought the checkpoint file %s in line with the database: %zu committed chunk%s added%s",
                run->job->name, sl_ckpt_file(run->ckpt), nmissing, nmissing == 1 ? "" : "s",
                nextra ? ", chunks it no longer has dropped" : "");
    run->synced = (int64_t)nmissing;
    free(db);
    free(file);
    free(missing);
    free(extra);
    return rc;
}

/* Open (creating it when missing) and bind the journal, under its run lock. */
static int open_journal(sl_run *run)
{
    char *path = sl_ckpt_path(run->opts->ckpt_dir, run->job->name);
    int rc = sl_ckpt_open(path, run->job->name, 1, &run->ckpt, &run->err);
    if (rc == 0) {
        rc = sl_ckpt_lock(path, &run->ckpt_fd, &run->err);
        if (rc == SL_EREFUSED)
            sl_err_append(&run->err, "hint: two runners share the checkpoint directory %s", run->opts->ckpt_dir);
    }
    free(path);
    if (rc != 0)
        return rc;
    const sl_db_identity *db = &run->db;
    rc = sl_ckpt_bind(run->ckpt, db->id, db->cluster, db->name, !is_lite(run->sess), 1, &run->err);
    if (rc < 0)
        return rc;
    rc = sync_chunks(run);
    if (rc != 0)
        return rc;
    /* a journal that missed the end of a run (a stamp, a kill) takes the database's state */
    sl_ckpt_job cj;
    if (sl_ckpt_get_job(run->ckpt, &cj, &run->err) != 0)
        return -1;
    int differs = cj.state != run->row.state && !(cj.state == SL_STATE_RUNNING && run->row.state == SL_STATE_STOPPED);
    sl_ckpt_job_free(&cj);
    if (differs && sl_ckpt_finish_run(run->ckpt, 0, run->row.state, run->row.error, &run->err) != 0)
        return -1;
    return 0;
}

/* ---- opening, beginning, finishing ---- */

int sl_run_open(sl_run *run, sl_session *sess, const sl_run_opts *opts, sl_job *job, sl_run_kind kind, int after_loss)
{
    memset(run, 0, sizeof *run);
    run->after_loss = after_loss;
    run->sess = sess;
    run->opts = opts;
    run->job = job;
    run->kind = kind;
    run->ckpt_fd = -1;
    /* a checkpoint file of another database is refused before anything is written */
    int rc = sl_run_check_journal(sess, opts, job->name, &run->err);
    if (rc != 0)
        return rc;
    /* A journal it could not create would fail the run after the database
     * changed (sluice's tables made, the job's row written): found now. */
    char *path = sl_ckpt_path(opts->ckpt_dir, job->name);
    if (access(path, F_OK) != 0 && sl_ckpt_can_create(path, &run->err) != 0)
        rc = SL_EREFUSED;
    free(path);
    if (rc != 0)
        return rc;
    rc = sl_schema_ensure(sess, &run->db, &run->err);
    if (rc != 0)
        return rc;
    sl_session_writer(sess); /* it took writes: from now on a server that stops taking them is a failover */
    rc = take_lock(run);
    if (rc != 0)
        return rc;
    if (sl_run_read_row(sess, job->name, &run->row, &run->err) != 0)
        return -1;
    return open_journal(run);
}

/* ARRAY[$a, $b]::text[] or json_array($a, $b) from parameter first on, or NULL. */
static void add_tuple(sl_buf *b, const sl_session *sess, size_t n, int first)
{
    if (n == 0) {
        sl_buf_adds(b, "NULL");
        return;
    }
    sl_buf_adds(b, is_lite(sess) ? "json_array(" : "ARRAY[");
    for (size_t i = 0; i < n; i++)
        sl_buf_printf(b, is_lite(sess) ? "%sCAST($%zu AS TEXT)" : "%s$%zu", i ? ", " : "", first + i);
    sl_buf_adds(b, is_lite(sess) ? ")" : "]::text[]");
}

/* The parameter that fences a write to the job's row, after the n others:
 * PostgreSQL writes only while the lease is this runner's; SQLite's lock is
 * the kernel's and needs none. The number of parameters. */
static int add_fence(sl_buf *b, const sl_run *run, const char **params, int n)
{
    if (is_lite(run->sess))
        return n;
    sl_buf_printf(b, " AND runner = $%d", n + 1);
    params[n] = sl_run_fence_id(run);
    return n + 1;
}

/* Run an UPDATE of the job's row (with its other queries, one transaction);
 * 0 when the row was updated, -1 when not (a lost lease: err says so). */
static int write_row(sl_run *run, const sl_query *q, size_t n, size_t update_i)
{
    sl_answer ans;
    int rc = sl_session_exec(run->sess, q, n, &ans);
    if (rc != 0 || !ans.ok) {
        sl_err_set(&run->err, "%s: cannot record the job's state in %s: %s", run->job->name, SL_JOBS_TABLE,
                   ans.error ? ans.error : "not connected");
        if (rc == 0 && !ans.conn_lost && n > 1 && ans.failed_index >= 0 && ans.failed_index < (int)n - 1) {
            sl_answer rb;
            if (sl_session_exec1(run->sess, "ROLLBACK", 0, NULL, &rb) == 0)
                sl_answer_free(&rb);
        }
        sl_answer_free(&ans);
        return -1;
    }
    int updated = ans.results[update_i].cmd_tuples != 0;
    sl_answer_free(&ans);
    if (!updated)
        sl_err_set(&run->err, "%s: lost the job's lease to another runner; stopping", run->job->name);
    return updated ? 0 : -1;
}

/* up: running; with no chunk committed yet, also what it walks and where
 * the walk ends, fixed now (and a split made for another end forgotten). */
static int begin_up(sl_run *run, const sl_run_identity *id, char *const *walk_end, size_t ncols)
{
    int fresh = run->row.chunks == 0, lite = is_lite(run->sess);
    const char *params[10 + SL_MAX_KEY_COLS] = {
        run->job->name, run->job->checksum, id->table, id->key, id->where, id->undo, run->job->follow ? "1" : "0"};
    int np = 7;
    for (size_t i = 0; walk_end && i < ncols; i++)
        params[np++] = walk_end[i];
    sl_buf b = {0};
    sl_buf_printf(&b,
                  "UPDATE " SL_JOBS_TABLE " SET state = 'running', stamped = %s, error = NULL, checksum = $2,"
                  " table_name = $3, key_cols = $4, where_sql = $5, undo = $6, follow = ($7 = 1), walk_end = ",
                  lite ? "0" : "false");
    add_tuple(&b, run->sess, walk_end ? ncols : 0, 8);
    sl_buf_printf(&b, ", started_at = %s, updated_at = CURRENT_TIMESTAMP WHERE job = $1",
                  fresh ? "CURRENT_TIMESTAMP" : "coalesce(started_at, CURRENT_TIMESTAMP)");
    np = add_fence(&b, run, params, np);
    const char *del[] = {run->job->name};
    size_t n = 0;
    sl_query q[4];
    q[n++] = (sl_query){sl_session_begin_sql(run->sess), 0, NULL, 0};
    q[n++] = (sl_query){b.data, np, params, 0};
    if (fresh && !lite)
        q[n++] = (sl_query){"DELETE FROM " SL_RANGES_TABLE " WHERE job = $1", 1, del, 0};
    q[n++] = (sl_query){"COMMIT", 0, NULL, 0};
    int rc = write_row(run, q, n, 1);
    sl_buf_free(&b);
    return rc;
}

static int set_state(sl_run *run, sl_state state, const char *error)
{
    const char *params[4] = {run->job->name, sl_state_name(state), error};
    sl_buf b = {0};
    sl_buf_adds(&b,
                "UPDATE " SL_JOBS_TABLE " SET state = $2, error = $3, updated_at = CURRENT_TIMESTAMP WHERE job = $1");
    int np = add_fence(&b, run, params, 3);
    sl_query q = {b.data, np, params, 0};
    int rc = write_row(run, &q, 1, 0);
    sl_buf_free(&b);
    return rc;
}

/* What a run still marked running did (its runner was killed, or runs it
 * now), from what the database has: an up's chunks are the sluice_progress
 * rows committed while it ran (NEXT: after it began, before the job's next
 * run began), and it got as far as the last of them. A down deletes the
 * rows of the chunks it undoes and writes nothing of its own per chunk, so
 * what it undid and when it stopped are not known: -1 (SL_RUN_UNKNOWN), no
 * end. The runs of the job still marked running died with their runner
 * (this one holds the job's lock now): interrupted, with those. */
#define OPEN_ROWS(NEXT) \
    "CASE WHEN kind = 'up' THEN (SELECT coalesce(sum(p.rows), 0) FROM " SL_PROGRESS_TABLE " p" NEXT ") ELSE -1 END"
#define OPEN_CHUNKS(NEXT) \
    "CASE WHEN kind = 'up' THEN (SELECT count(*) FROM " SL_PROGRESS_TABLE " p" NEXT ") ELSE -1 END"
#define OPEN_END(NEXT) \
    "CASE WHEN kind = 'up' THEN (SELECT max(p.committed_at) FROM " SL_PROGRESS_TABLE " p" NEXT ") END"
#define CLOSE_KILLED_SQL(NEXT)                                                                                 \
    "UPDATE " SL_RUNS_TABLE " SET outcome = 'interrupted', rows = " OPEN_ROWS(NEXT) ", chunks = " OPEN_CHUNKS( \
        NEXT) ", ended_at = " OPEN_END(NEXT) " WHERE job = $1 AND outcome = 'running'"
#define KILLED_SPAN(NONE)                                                                                            \
    " WHERE p.job = " SL_RUNS_TABLE ".job AND p.committed_at >= " SL_RUNS_TABLE ".started_at"                        \
    " AND p.committed_at < coalesce((SELECT min(n.started_at) FROM " SL_RUNS_TABLE " n WHERE n.job = " SL_RUNS_TABLE \
    ".job AND n.started_at > " SL_RUNS_TABLE ".started_at), " NONE ")"

/* The run's row in sluice_runs, for `history` wherever it is asked: a run
 * begun ("running"), or (ended) one whole, a stamp; the job's killed runs
 * closed first. Not there (tables an older sluice made, and a role that may
 * not add one): no row, in silence. */
static void record_run(sl_run *run, const char *kind, const char *outcome, int ended)
{
    const char *params[] = {run->job->name, kind, outcome, sl_runner_self()->desc};
    sl_answer ans;
    int rc = sl_session_exec1(run->sess,
                              is_lite(run->sess) ? CLOSE_KILLED_SQL(KILLED_SPAN("'9999'"))
                                                 : CLOSE_KILLED_SQL(KILLED_SPAN("'infinity'::timestamptz")),
                              1, params, &ans);
    sl_answer_free(&ans);
    if (rc != 0)
        return; /* not connected */
    const char *sql = is_lite(run->sess)
                          ? (ended ? "INSERT INTO " SL_RUNS_TABLE " (job, kind, outcome, runner, ended_at)"
                                     " VALUES ($1, $2, $3, $4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
                                     " RETURNING CAST(id AS TEXT)"
                                   : "INSERT INTO " SL_RUNS_TABLE " (job, kind, outcome, runner)"
                                     " VALUES ($1, $2, $3, $4) RETURNING CAST(id AS TEXT)")
                          : (ended ? "INSERT INTO " SL_RUNS_TABLE " (job, kind, outcome, runner, ended_at)"
                                     " VALUES ($1, $2, $3, $4, now()) RETURNING id::text"
                                   : "INSERT INTO " SL_RUNS_TABLE " (job, kind, outcome, runner)"
                                     " VALUES ($1, $2, $3, $4) RETURNING id::text");
    if (sl_session_exec1(run->sess, sql, 4, params, &ans) == 0 && ans.ok && !ended)
        run->db_run = dup_or_null(sl_answer_val(&ans, 0, 0, 0));
    sl_answer_free(&ans);
}

/* Close the run's row: its outcome, and the rows and chunks the journal
 * counted for it. */
static void close_run_row(sl_run *run, const char *outcome, const char *error)
{
    if (!run->db_run || !sl_session_connected(run->sess))
        return;
    int64_t rows = 0, chunks = 0;
    if (run->ckpt)
        (void)sl_ckpt_run_totals(run->ckpt, run->run_id, &rows, &chunks);
    char r[24], c[24];
    snprintf(r, sizeof r, "%" PRId64, rows);
    snprintf(c, sizeof c, "%" PRId64, chunks);
    const char *params[] = {run->db_run, outcome, r, c, error};
    sl_answer ans;
    if (sl_session_exec1(run->sess,
                         is_lite(run->sess)
                             ? "UPDATE " SL_RUNS_TABLE " SET outcome = $2, rows = $3, chunks = $4, error = $5,"
                               " ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = $1"
                             : "UPDATE " SL_RUNS_TABLE " SET outcome = $2, rows = $3::bigint, chunks = $4::bigint,"
                               " error = $5, ended_at = now() WHERE id = $1::bigint",
                         5, params, &ans) != 0 ||
        !ans.ok)
        sl_warn("%s: could not record how the run ended in %s (history shows it as interrupted): %s", run->job->name,
                SL_RUNS_TABLE, ans.error ? ans.error : "not connected");
    sl_answer_free(&ans);
    free(run->db_run);
    run->db_run = NULL;
}

/* Every run, for history; one still marked running with what it did so far
 * and how far it got (used when it turns out killed). */
#define PG_NEXT          KILLED_SPAN("'infinity'::timestamptz")
#define LITE_NEXT        KILLED_SPAN("'9999'")
#define PG_OPEN_ROWS     "CASE WHEN outcome = 'running' THEN " OPEN_ROWS(PG_NEXT) " ELSE rows END"
#define PG_OPEN_CHUNKS   "CASE WHEN outcome = 'running' THEN " OPEN_CHUNKS(PG_NEXT) " ELSE chunks END"
#define PG_OPEN_END      "CASE WHEN outcome = 'running' THEN " OPEN_END(PG_NEXT) " END"
#define LITE_OPEN_ROWS   "CASE WHEN outcome = 'running' THEN " OPEN_ROWS(LITE_NEXT) " ELSE rows END"
#define LITE_OPEN_CHUNKS "CASE WHEN outcome = 'running' THEN " OPEN_CHUNKS(LITE_NEXT) " ELSE chunks END"
#define LITE_OPEN_END_MS LITE_MS("CASE WHEN outcome = 'running' THEN " OPEN_END(LITE_NEXT) " END")
#define LITE_STARTED_MS  LITE_MS("started_at")
#define LITE_ENDED_MS    LITE_MS("ended_at")
static const char lite_history_sql[] =
    "SELECT job, kind, outcome, " LITE_STARTED_MS ", " LITE_ENDED_MS ", " LITE_OPEN_ROWS ", " LITE_OPEN_CHUNKS
    ", error, " LITE_OPEN_END_MS " FROM " SL_RUNS_TABLE " ORDER BY id";
static const char pg_history_sql[] =
    "SELECT job, kind, outcome, (extract(epoch FROM started_at) * 1000)::bigint,"
    " (extract(epoch FROM ended_at) * 1000)::bigint, " PG_OPEN_ROWS ", " PG_OPEN_CHUNKS
    ", error, (extract(epoch FROM " PG_OPEN_END ") * 1000)::bigint FROM " SL_RUNS_TABLE " ORDER BY id";

int sl_run_history(sl_session *sess, sl_ckpt_run **runs, size_t *n, sl_err *err)
{
    *runs = NULL;
    *n = 0;
    const char *sql = is_lite(sess) ? lite_history_sql : pg_history_sql;
    sl_answer ans;
    if (sl_session_exec1(sess, sql, 0, NULL, &ans) != 0 || !ans.ok) {
        int missing = ans.ok == 0 && (strcmp(ans.sqlstate, "42P01") == 0 ||
                                      (is_lite(sess) && ans.error && strstr(ans.error, "no such table")));
        if (!missing)
            sl_err_set(err, "cannot read %s on %s: %s", SL_RUNS_TABLE, sl_session_display(sess),
                       ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return missing ? 0 : -1;
    }
    int nrows = ans.results[0].nrows;
    *runs = sl_calloc((size_t)nrows + 1, sizeof **runs);
    int64_t *open_end = sl_calloc((size_t)nrows + 1, sizeof *open_end);
    for (int i = 0; i < nrows; i++) {
        sl_ckpt_run *r = &(*runs)[i];
        r->id = i + 1;
        r->job = sl_strdup(sl_answer_val(&ans, 0, i, 0));
        r->kind = sl_strdup(sl_answer_val(&ans, 0, i, 1));
        r->outcome = sl_strdup(sl_answer_val(&ans, 0, i, 2));
        r->started_at_ms = to_i64(sl_answer_val(&ans, 0, i, 3));
        r->ended_at_ms = to_i64(sl_answer_val(&ans, 0, i, 4));
        r->rows = to_i64(sl_answer_val(&ans, 0, i, 5));
        r->chunks = to_i64(sl_answer_val(&ans, 0, i, 6));
        r->error = dup_or_null(sl_answer_val(&ans, 0, i, 7));
        open_end[i] = to_i64(sl_answer_val(&ans, 0, i, 8));
    }
    *n = (size_t)nrows;
    sl_answer_free(&ans);
    /* a run still marked running is running only if it is its job's newest and a live runner holds the job;
     * else its runner was killed, and the job's next run has not begun to close it */
    for (size_t i = 0; i < *n; i++) {
        sl_ckpt_run *r = &(*runs)[i];
        if (strcmp(r->outcome, "running") != 0)
            continue;
        int newest = 1;
        for (size_t j = i + 1; j < *n && newest; j++)
            newest = strcmp((*runs)[j].job, r->job) != 0;
        sl_job_row row;
        sl_err ignored = {{0}};
        int live = newest && sl_run_read_row(sess, r->job, &row, &ignored) == 0 && row.runner != NULL;
        if (newest)
            sl_job_row_free(&row);
        if (!live) {
            free(r->outcome);
            r->outcome = sl_strdup("interrupted");
            r->ended_at_ms = open_end[i]; /* as the job's next run will record it */
        }
    }
    free(open_end);
    return 0;
}

int sl_run_begin(sl_run *run, const sl_run_identity *id, char *const *walk_end, size_t ncols)
{
    int up = run->kind == SL_RUN_UP;
    int rc = up ? begin_up(run, id, walk_end, ncols) : set_state(run, SL_STATE_ROLLING_BACK, NULL);
    if (rc != 0)
        return -1;
    run->row.state = up ? SL_STATE_RUNNING : SL_STATE_ROLLING_BACK;
    record_run(run, up ? "up" : "down", "running", 0);
    return sl_ckpt_begin_run(run->ckpt, up ? "up" : "down", run->row.state, up ? run->job->checksum : NULL,
                             sl_session_display(run->sess), &run->run_id, &run->err);
}

/* A second signal aborts the chunk in flight by dropping its connection
 * (session.c), the run's own among them: connected again for a moment, so
 * that the database records the stop as it does after one signal, not a
 * run still running. At most 3 s: whoever signalled twice wants out. */
static void reconnect_after_abort(sl_run *run, int code)
{
    sl_session *sess = run->sess;
    if (code != SL_EXIT_STOPPED || is_lite(sess) || sl_session_connected(sess) || sl_run_lost(run))
        return;
    int64_t was = sess->connect_timeout_ms;
    sess->connect_timeout_ms = was < 3000 ? was : 3000;
    sl_err err;
    if (sl_session_connect(sess, &err) != 0)
        sl_warn("%s: cannot record in %s that the run stopped (the next run does): %s", run->job->name, SL_JOBS_TABLE,
                err.msg);
    sess->connect_timeout_ms = was;
}

int sl_run_finish(sl_run *run, int code)
{
    int up = run->kind == SL_RUN_UP;
    sl_state state = up ? (code == SL_EXIT_OK        ? SL_STATE_DONE
                           : code == SL_EXIT_STOPPED ? SL_STATE_STOPPED
                                                     : SL_STATE_FAILED)
                        : (code == SL_EXIT_OK ? SL_STATE_ROLLED_BACK : SL_STATE_ROLLING_BACK);
    const char *outcome = code == SL_EXIT_OK ? "done" : code == SL_EXIT_STOPPED ? "stopped" : "failed";
    const char *error = code == SL_EXIT_FAILED ? run->err.msg : NULL;
    sl_err saved = run->err;
    reconnect_after_abort(run, code);
    sl_session_set_wait_commit(run->sess, 1); /* SQLite: the state waits, and so every chunk before it */
    /* the database first: it decides what runs next (not once another runner has the job) */
    if (!sl_run_lost(run) && sl_session_connected(run->sess) && set_state(run, state, error) != 0) {
        sl_error("%s", run->err.msg);
        if (code == SL_EXIT_OK)
            code = SL_EXIT_FAILED;
    }
    run->err = saved;
    sl_err ferr;
    if (run->ckpt &&
        sl_ckpt_finish_run_as(run->ckpt, run->run_id, state, up ? sl_state_name(state) : outcome, error, &ferr) != 0) {
        if (code != SL_EXIT_FAILED || strcmp(ferr.msg, saved.msg) != 0) /* a full disk: said once, as the failure */
            sl_error("%s", ferr.msg);
        if (code == SL_EXIT_OK)
            code = SL_EXIT_FAILED;
    }
    close_run_row(run, up ? sl_state_name(state) : outcome, error);
    return code;
}

int64_t sl_run_lost_retries(const sl_job *job)
{
    return job->retries > SL_LOST_RETRIES_MIN ? job->retries : SL_LOST_RETRIES_MIN;
}

static int check_kept(sl_run *run, sl_session *sess);

int sl_run_check_kept(sl_run *run, sl_session *sess)
{
    if (is_lite(sess))
        return 0;
    if (!sl_session_connected(sess)) /* lost at the end of a walk: reconnecting asks too */
        return sl_run_reconnect(run, sess) == 0 ? 0 : -1;
    /* down's workers run in fibers, and two that lost their connections
     * together (a failover) check together: the second waits for the first,
     * then looks for itself, so that chunks the first brought back into the
     * journal are not brought in twice (a chunk already recorded), and the
     * loss keeps the first's words */
    while (run->checking)
        sl_fiber_wait(sess->loop);
    run->checking = 1;
    int rc = check_kept(run, sess);
    run->checking = 0;
    return rc;
}

static int check_kept(sl_run *run, sl_session *sess)
{
    int64_t *file = NULL, *db = NULL;
    size_t nfile = 0, ndb = 0;
    /* the journal first: a chunk it holds had committed before this read */
    if (sl_ckpt_chunk_numbers(run->ckpt, &file, &nfile, &run->err) != 0)
        return -1;
    if (db_chunk_numbers(run, sess, &db, &ndb) != 0) {
        free(file);
        return -1;
    }
    int up = run->kind == SL_RUN_UP;
    int64_t *lost = sl_calloc((up ? nfile : ndb) + 1, sizeof *lost);
    size_t nlost = up ? minus(file, nfile, db, ndb, lost) : minus(db, ndb, file, nfile, lost);
    int rc = 0;
    if (nlost) {
        /* up: chunks it committed are gone; down: chunks it rolled back are there again */
        rc = up ? sl_ckpt_forget_chunks(run->ckpt, lost, nlost, &run->err) : copy_from_db(run, sess, lost, nlost);
        if (rc == 0) {
            run->lost_commits = 1;
            sl_err_set(&run->err,
                       "%s: the database %s %zu chunk%s that had %s (chunk %" PRId64
                       "%s): it lost its last commits, as a standby promoted before it received them does%s, and "
                       "decides what is applied",
                       run->job->name, up ? "no longer has" : "has again", nlost, nlost == 1 ? "" : "s",
                       up ? "committed" : "been rolled back", lost[0], nlost > 1 ? ", ..." : "",
                       run->job->wait_commit ? ""
                                             : ", or a server that crashed before they reached its disk (the "
                                               "chunks do not wait for it: synchronous-commit off)");
        }
    }
    /* the file follows the server's timeline and start (sync_chunks), once
     * it holds what the server has: a standby promoted, or a server
     * restarted, under a running job is seen here, after its reconnect */
    int64_t started = 0, timeline = sl_schema_timeline(sess, &started), seen = 0, seen_started = 0;
    sl_err terr, *tep = nlost ? &terr : &run->err; /* a loss keeps its own error */
    if (rc == 0 && timeline > 0 && sl_ckpt_timeline(run->ckpt, &seen, &seen_started, tep) == 0 &&
        (seen != timeline || seen_started != started))
        rc = sl_ckpt_set_timeline(run->ckpt, timeline, started, tep);
    if (nlost)
        rc = -1;
    free(file);
    free(db);
    free(lost);
    return rc;
}

int sl_run_again(sl_run *run, sl_session *sess, int *code, int reruns_left, const char *again, sl_err *err)
{
    if (*code != SL_EXIT_FAILED || !run->lost_commits || reruns_left <= 0 || sl_session_stopping(sess))
        return 0;
    sl_log_event(SL_LOG_WARN, "rerun", json_pack("{so}", "error", sl_json_str(err->msg)), "%s; %s", err->msg, again);
    int rc = sl_session_connected(sess) ? 0 : sl_session_reconnect(sess, run->job->name, err);
    if (rc != 0)
        *code = rc == SL_STOPPED ? SL_EXIT_STOPPED : SL_EXIT_FAILED;
    return rc == 0;
}

int sl_run_reconnect(sl_run *run, sl_session *sess)
{
    int rc = sl_session_reconnect(sess, run->job->name, &run->err);
    if (rc != 0)
        return rc;
    /* A worker's too: its chunk may have been ended by the server while this
     * runner was held up, and a successor may hold the job now; a chunk
     * number it committed is not this runner's to record. */
    if (!is_lite(sess)) {
        rc = sl_lease_check(&run->lease, sess, &run->err);
        if (rc != 0 || sl_run_check_kept(run, sess) != 0)
            return -1;
    }
    sl_run_event(run, "reconnect", "reconnected after a lost connection");
    sl_metrics_count(sl_metrics_job_get(run->job->name), SL_COUNT_RECONNECT, 1);
    return 0;
}

/* ---- stamp ---- */

int sl_run_stamp(sl_run *run, sl_state state)
{
    const char *params[3] = {run->job->name, run->job->checksum};
    int lite = is_lite(run->sess), np;
    sl_buf b = {0};
    if (state == SL_STATE_DONE) {
        sl_buf_printf(&b,
                      "UPDATE " SL_JOBS_TABLE " SET state = 'done', stamped = %s, error = NULL, checksum = $2,"
                      " updated_at = CURRENT_TIMESTAMP WHERE job = $1",
                      lite ? "1" : "true");
        np = add_fence(&b, run, params, 2);
    } else { /* everything forgotten: the next up starts over, fixing what it walks anew */
        sl_buf_printf(&b,
                      "UPDATE " SL_JOBS_TABLE " SET state = 'pending', stamped = %s, error = NULL, checksum = '',"
                      " table_name = NULL, key_cols = NULL, where_sql = NULL, undo = NULL, walk_end = NULL,"
                      " started_at = NULL, paused = NULL, updated_at = CURRENT_TIMESTAMP WHERE job = $1",
                      lite ? "1" : "true");
        params[1] = NULL;
        np = add_fence(&b, run, params, 1);
    }
    size_t n = 0;
    sl_query q[6];
    q[n++] = (sl_query){sl_session_begin_sql(run->sess), 0, NULL, 0};
    q[n++] = (sl_query){b.data, np, params, 0};
    if (state == SL_STATE_PENDING) {
        q[n++] = (sl_query){"DELETE FROM " SL_PROGRESS_TABLE " WHERE job = $1", 1, params, 0};
        q[n++] = (sl_query){"DELETE FROM " SL_UNDO_TABLE " WHERE job = $1", 1, params, 0};
        if (!lite)
            q[n++] = (sl_query){"DELETE FROM " SL_RANGES_TABLE " WHERE job = $1", 1, params, 0};
    }
    q[n++] = (sl_query){"COMMIT", 0, NULL, 0};
    int rc = write_row(run, q, n, 1);
    sl_buf_free(&b);
    if (rc != 0)
        return -1;
    run->row.state = state;
    record_run(run, "stamp", sl_state_name(state), 1);
    return sl_ckpt_stamp(run->ckpt, state, run->job->checksum, &run->err);
}

void sl_run_close(sl_run *run)
{
    release_lock(run);
    if (run->ckpt)
        sl_ckpt_close(run->ckpt);
    run->ckpt = NULL;
    sl_ckpt_unlock(run->ckpt_fd); /* after the checkpoint closes: see lock.c */
    run->ckpt_fd = -1;
    sl_job_row_free(&run->row);
    free(run->db_run); /* a run that ended before it finished: its row says running, history interrupted */
    run->db_run = NULL;
}
