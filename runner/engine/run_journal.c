/* run_journal.c: a run's journal, the checkpoint file: bound to its database, kept in step with sluice_progress. */
#include "sluice/base/fiber.h"
#include "sluice/base/log.h"
#include "sluice/engine/run.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run_internal.h"

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
    rc = sl_ckpt_bind(ckpt, db->id, db->cluster, db->name, !run_is_lite(sess), 0, err);
    sl_ckpt_close(ckpt);
    return rc < 0 ? SL_EREFUSED : SL_OK;
}

int sl_run_check_journal(sl_session *sess, const sl_run_opts *opts, const char *job, sl_err *err)
{
    sl_db_identity db;
    int found = sl_schema_identity(sess, &db, err);
    if (found < 0) /* SL_EREFUSED: the role may not read sluice's tables */
        return found;
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
        (*nums)[i] = run_to_i64(sl_answer_val(&ans, 0, (int)i, 0));
    sl_answer_free(&ans);
    return 0;
}

int sl_run_copy_chunks(sl_session *sess, sl_ckpt *ckpt, int64_t run_id, const sl_run_spans *spans, const char *job,
                       const int64_t *nums, size_t n, int64_t *after, sl_err *err)
{
    int lite = run_is_lite(sess); /* SQLite keeps the keys as JSON text, times as ISO text */
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
        c.chunk_no = run_to_i64(sl_answer_val(&ans, 0, row, 0));
        c.lo = sl_answer_val(&ans, 0, row, 1);
        c.hi = sl_answer_val(&ans, 0, row, 2);
        c.rows = run_to_i64(sl_answer_val(&ans, 0, row, 3));
        c.affected = -1; /* only the runner that committed it knew */
        c.duration_ms = run_to_i64(sl_answer_val(&ans, 0, row, 4));
        c.attempts = run_to_i64(sl_answer_val(&ans, 0, row, 5));
        c.committed_at_ms = run_to_i64(sl_answer_val(&ans, 0, row, 6));
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
                          run_is_lite(run->sess) ? "the machine" : "its server");
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
            same_timeline || run_is_lite(run->sess) ? "" : ", a failover promoted a standby that had not received them",
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
int run_open_journal(sl_run *run)
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
    rc = sl_ckpt_bind(run->ckpt, db->id, db->cluster, db->name, !run_is_lite(run->sess), 1, &run->err);
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

int sl_run_check_kept(sl_run *run, sl_session *sess)
{
    if (run_is_lite(sess))
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
