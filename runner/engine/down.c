/* down.c: `down`: undo a job's committed chunks, newest first, one transaction per chunk, exactly once, resumable.
 *
 * Exactly once rests on the same rule as `up`: a down chunk undoes one up
 * chunk and deletes that chunk's row from sluice_progress (and its undo
 * record from sluice_undo) in the same transaction, so sluice_progress always
 * lists exactly the up chunks still applied. Which jobs and chunks are
 * applied is read from the database; the checkpoint file follows it. */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/base/fiber.h"
#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/checkpoints/ckpt.h"
#include "sluice/db/catalog.h"
#include "sluice/engine/down.h"
#include "sluice/engine/undo.h"
#include "sluice/engine/up.h"
#include "sluice/services/metrics.h"
#include "sluice/services/progress.h"

#include "down_internal.h"

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

static void run_init(down_run *r, sl_session *sess, const sl_run_opts *opts, sl_job *job)
{
    *r = (down_run){.sess = sess, .opts = opts, .job = job};
    sl_pace_init(&r->pace, job);
    r->gate = (run_gate){.job = job, .opts = opts, .run = &r->run, .pace = &r->pace};
}

static void run_free(down_run *r)
{
    free_chunks(r);
    if (r->down_sql)
        for (size_t i = 0; i < r->job->down.nstmts; i++)
            free(r->down_sql[i]);
    free(r->down_sql);
    sl_undo_target_free(&r->undo);
    for (size_t i = 0; i < r->nshapes; i++) {
        sl_undo_target_free(r->shapes[i]);
        free(r->shapes[i]);
    }
    free(r->shapes);
    sl_table_info_free(&r->info);
    sl_run_identity_free(&r->id);
    sl_job_row_free(&r->row);
    if (r->opened)
        sl_run_close(&r->run);
    gate_close(&r->gate);
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

/* Read the oldest record of the job (newest: the newest) and check it
 * (fit the run's target to it). */
static int fit_to_record(down_run *r, int newest)
{
    if (r->undo.kind != SL_UNDO_SNAPSHOT_ALL)
        return 0;
    const char *params[] = {r->job->name};
    sl_answer ans;
    /* PostgreSQL's in binary: the record's bytes, chunk_no's text (a text column's binary form);
     * u.chunk_no: on PostgreSQL the cast's output column is named chunk_no too, and an ORDER BY of that
     * name would sort its text ("9" after "30"), reading the wrong record */
    sl_query q = {newest ? "SELECT CAST(u.chunk_no AS text), u.record FROM " SL_UNDO_TABLE
                           " u WHERE u.job = $1 ORDER BY u.chunk_no DESC LIMIT 1"
                         : "SELECT CAST(u.chunk_no AS text), u.record FROM " SL_UNDO_TABLE
                           " u WHERE u.job = $1 ORDER BY u.chunk_no LIMIT 1",
                  1, params, 0};
    q.binary_result = r->sess->dialect == SL_DIALECT_PG;
    if (sl_session_exec(r->sess, &q, 1, &ans) != 0 || !ans.ok) {
        sl_err_set(&r->err, "%s: cannot read its undo records: %s", r->job->name,
                   ans.error ? ans.error : "connection lost");
        sl_answer_free(&ans);
        return -1;
    }
    int rc = 0;
    const char *text = sl_answer_val(&ans, 0, 0, 1);
    sl_snap snap;
    int64_t chunk_no = 0;
    sl_err ignored = {{0}}; /* a damaged record fails its own chunk, saying so */
    if (text && sl_parse_int(sl_answer_val(&ans, 0, 0, 0), 0, INT64_MAX, &chunk_no) == 0 &&
        sl_undo_record_read(&r->undo, chunk_no, text, sl_undo_record_len(&ans.results[0], 0), &snap, &ignored) == 0) {
        rc = newest ? sl_undo_fit_saved_rows(&r->undo, &snap, r->job->name, &r->fit_said, &r->err)
                    : sl_undo_check_saved_rows(&r->undo, &snap, r->job->name, &r->err);
        sl_snap_free(&snap);
    }
    sl_answer_free(&ans);
    return rc;
}

/* snapshot(*): the newest record tells how many columns the table had when
 * up ran last (sl_undo_fit_saved_rows; chunks saved with fewer, before
 * columns were added, get a target of their own, down_chunk.c); the oldest,
 * whether a column was dropped since the job began: refused before a row
 * is touched. */
static int fit_saved_rows(down_run *r)
{
    int rc = 0;
    for (int newest = 0; rc == 0 && newest < 2; newest++)
        rc = fit_to_record(r, newest);
    return rc;
}

static void render_down(down_run *r)
{
    size_t k = r->job->down.nstmts;
    r->down_sql = sl_calloc(k + 1, sizeof(char *));
    for (size_t i = 0; i < k; i++)
        r->down_sql[i] = sl_keys_stmt_sql(&r->info.ks, &r->job->down.stmts[i]);
    sl_session_chunk_settings(r->sess, r->job->lock_timeout_ms, r->job->statement_timeout_ms, r->job->wait_commit,
                              &r->timeouts);
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
    /* a down section the server cannot plan: refused now, not failed at the first chunk */
    if (r->job->undo == SL_UNDO_DOWN) {
        int checked = sl_down_check_sql(r->sess, r->job, &r->info.ks, &r->err);
        if (checked != 0)
            return checked == SL_EREFUSED ? SL_EREFUSED : -1;
    }
    r->id.table = sl_strdup(r->info.ks.table);
    if (sl_run_key_identity(r->sess, &r->info.ks, &r->id, &r->err) != 0)
        return -1;
    r->id.where = r->job->where ? sl_strdup(r->job->where) : NULL;
    r->id.undo = sl_undo_identity(&r->undo);
    int rc = check_identity(r, row);
    if (rc == 0)
        rc = load_chunks(r);
    if (rc == 0)
        rc = check_records(r);
    if (rc == 0)
        rc = fit_saved_rows(r);
    if (rc == 0)
        render_down(r);
    return rc;
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

/* What the rows this run undid are now, after "N rows": those it left as
 * they are, by cause ("" when it put them all back). */
static void add_rows_left(const down_run *r, sl_buf *b)
{
    if (r->rows_set_aside)
        sl_buf_printf(b, "; %" PRId64 " row%s up set aside (on-error skip) left as %s, never changed",
                      r->rows_set_aside, r->rows_set_aside == 1 ? "" : "s",
                      r->rows_set_aside == 1 ? "it was" : "they were");
    if (r->rows_skipped)
        sl_buf_printf(b, "; %" PRId64 " row%s left as another session changed %s since up (--on-conflict skip)",
                      r->rows_skipped, r->rows_skipped == 1 ? "" : "s", r->rows_skipped == 1 ? "it" : "them");
    if (r->rows_lost)
        sl_buf_printf(b, "; %" PRId64 " row%s not put back (no undo record, or deleted with only some columns saved)",
                      r->rows_lost, r->rows_lost == 1 ? "" : "s");
}

static int finish(down_run *r, int code)
{
    if (code == SL_EXIT_OK)
        forget_split(r);
    r->run.err = r->err;
    code = sl_run_finish(&r->run, code);
    if (r->metrics)
        sl_metrics_state(r->metrics, code == SL_EXIT_OK ? "rolled_back" : "rolling_back");
    /* what this run undid, as the text lines say it: the rows put back, those it left as they are,
     * and "left": chunks still applied (to undo by the next down, or left as they are: no record) */
    json_t *fields = json_pack("{sIsIsIsIsIsIsb}", "rows", (json_int_t)r->rows_restored, "rows_skipped",
                               (json_int_t)r->rows_skipped, "rows_lost", (json_int_t)r->rows_lost, "set_aside",
                               (json_int_t)r->rows_set_aside, "chunks", (json_int_t)r->chunks_undone, "left",
                               (json_int_t)(r->nchunks - r->chunks_undone), "resumed", r->resumed);
    sl_buf left = {0};
    if (r->resumed && code == SL_EXIT_OK) /* the counts are this run's: say whose the others were */
        sl_buf_adds(&left, ", those an earlier down left");
    add_rows_left(r, &left);
    /* one line, the event's: "rolled back: ..." or "rollback stopped after ..." */
    const char *chunks_s = r->chunks_undone == 1 ? "" : "s";
    if (code == SL_EXIT_OK && r->nlost)
        sl_log_event(SL_LOG_INFO, "rolled_back", fields,
                     "%s: rolled back: %" PRId64 " rows in %zu chunk%s%s; %zu chunk%s left as %s (no undo record)",
                     r->job->name, r->rows_restored, r->chunks_undone, chunks_s, left.data ? left.data : "", r->nlost,
                     r->nlost == 1 ? "" : "s", r->nlost == 1 ? "it was" : "they were");
    else if (code == SL_EXIT_OK)
        sl_log_event(SL_LOG_INFO, "rolled_back", fields, "%s: rolled back: %" PRId64 " rows in %zu chunk%s%s",
                     r->job->name, r->rows_restored, r->chunks_undone, chunks_s, left.data ? left.data : "");
    else if (code == SL_EXIT_STOPPED)
        sl_log_event(SL_LOG_INFO, "stopped", fields,
                     "%s: rollback stopped after %zu chunk%s (%" PRId64 " rows put back, %zu chunk%s left%s); `sluice "
                     "down` resumes it",
                     r->job->name, r->chunks_undone, chunks_s, r->rows_restored, r->nchunks - r->chunks_undone,
                     r->nchunks - r->chunks_undone == 1 ? "" : "s", left.data ? left.data : "");
    else
        json_decref(fields);
    sl_buf_free(&left);
    return code;
}

/* `sluice ctl` during a rollback, answered on the loop even mid-chunk:
 * never waits; values apply from the next chunk. A down undoes the chunks
 * up committed, as they were: their size is not its to change. */
static int down_on_ctl(const sl_ctl_req *req, sl_buf *out, void *arg)
{
    down_run *r = arg;
    if (req->cmd == SL_CTL_STATUS) {
        sl_buf_printf(out,
                      "job %s\nstate %s\nrows %" PRId64 "\nchunks %zu\nchunks-left %zu\npause %" PRId64
                      "ms\nmax-rate %" PRId64 "\n",
                      r->job->name, r->gate.paused ? "paused" : "rolling_back", r->rows_undone, r->chunks_undone,
                      r->nchunks - r->chunks_undone, r->pace.pause_ms, r->pace.max_rate);
        sl_metrics_status(r->metrics, sl_mono_ms(), out);
        sl_buf_printf(out, "workers %zu\nranges %zu\n", r->nworkers, r->nranges);
        gate_ctl_status(&r->gate, out);
        return 0;
    }
    char msg[256];
    int rc = gate_ctl(&r->gate, r->job, req, msg, sizeof msg);
    if (rc < 0) {
        sl_buf_printf(out, "%s cannot change during a rollback: down undoes each chunk up committed, as it was",
                      req->name);
        return -1;
    }
    if (rc == 1)
        sl_session_chunk_settings(r->sess, r->job->lock_timeout_ms, r->job->statement_timeout_ms, r->job->wait_commit,
                                  &r->timeouts);
    gate_ctl_done(&r->gate, msg, out);
    return 0;
}

/* Dead row versions in the job's table (its partitions' added up), as the
 * statistics had them a moment ago, beside the live ones. */
static const char dead_rows_sql[] =
    SL_PG_TABLE_TREE "SELECT coalesce(sum(s.n_dead_tup), 0)::text, coalesce(sum(s.n_live_tup), 0)::text"
                     " FROM pg_stat_all_tables s WHERE s.relid IN (SELECT rel FROM sluice_tree)";

/* Straight after a big up its table holds the row versions up replaced,
 * dead until a vacuum, and down reads its ranges back through them: a
 * third or more of its time (README, "Roll back soon after a big up?").
 * Said once, at the start, when they are at least a fifth of the live
 * rows (autovacuum's own default share) and a thousand; nothing is done
 * about it, and a statistics view the role cannot read says nothing. */
static void advise_vacuum(down_run *r)
{
    if (r->sess->dialect != SL_DIALECT_PG || r->nchunks == 0)
        return;
    const char *params[] = {r->info.ks.table};
    sl_answer ans;
    if (sl_session_exec1(r->sess, dead_rows_sql, 1, params, &ans) != 0)
        return;
    const char *d = ans.ok ? sl_answer_val(&ans, 0, 0, 0) : NULL, *l = ans.ok ? sl_answer_val(&ans, 0, 0, 1) : NULL;
    long long dead = d ? strtoll(d, NULL, 10) : 0, live = l ? strtoll(l, NULL, 10) : 0;
    sl_answer_free(&ans);
    if (dead < 1000 || dead * 5 < live)
        return;
    sl_log_event(SL_LOG_INFO, "dead_rows", json_pack("{sIsI}", "dead", (json_int_t)dead, "live", (json_int_t)live),
                 "%s: %s has %lld dead row versions beside %lld live ones (pg_stat_all_tables): down reads its ranges "
                 "back through them (hint: a VACUUM of %s before a large down makes it faster)",
                 r->job->name, r->info.ks.table, dead, live, r->info.ks.table);
}

static int execute(down_run *r)
{
    if (r->nchunks == 0 && r->run.row.state == SL_STATE_DONE)
        sl_warn("%s: no committed chunk is recorded (stamped done?): nothing to undo; marking it rolled back",
                r->job->name);
    if (gate_stops_at_start(&r->gate, r->run.row.paused))
        return SL_EXIT_STOPPED; /* --no-wait: nothing undone, and the job's state stays as it was */
    r->resumed = r->run.row.state == SL_STATE_ROLLING_BACK;
    if (sl_run_begin(&r->run, &r->id, NULL, 0) != 0) {
        r->err = r->run.err;
        return SL_EXIT_FAILED;
    }
    char *how = sl_undo_describe_kind(r->job);
    sl_log_event(SL_LOG_INFO, "start",
                 json_pack("{sbsIsIsssb}", "down", 1, "chunks", (json_int_t)r->nchunks, "rows",
                           (json_int_t)r->rows_total, "undo", how, "resumed", r->resumed),
                 "%s: %s %zu chunk%s (%" PRId64 " rows)%s with %s", r->job->name,
                 r->resumed ? "resuming its rollback:" : "rolling back", r->nchunks, r->nchunks == 1 ? "" : "s",
                 r->rows_total, r->resumed ? " still applied, undone" : "", how);
    free(how);
    advise_vacuum(r);
    r->metrics = r->gate.metrics = sl_metrics_job_get(r->job->name);
    /* sluice_rows_total and sluice_chunks_total: what the job holds as the down begins (counters do not
     * go down; what is left is less sluice_rows_undone_total); sluice_batch_size: the rows of the chunk
     * undone next, one of up's */
    sl_metrics_begin(r->metrics, 1, r->rows_total, r->rows_total, (int64_t)r->nchunks);
    sl_metrics_batch(r->metrics, r->nranges ? r->chunks[r->ranges[0].first + r->ranges[0].n - 1].rows : 0);
    sl_metrics_state(r->metrics, "rolling_back");
    sl_progress_begin(r->job->name, r->rows_total, 0, r->opts->progress_tty);
    if (r->run.row.paused) /* by `ctl pause` before this run: it holds until `ctl resume` */
        gate_paused_before(&r->gate, r->run.row.paused);
    sl_ctl *ctl = NULL;
    char *ctl_path = sl_ctl_path(r->opts->ckpt_dir, r->job->name);
    sl_err cerr;
    int pg = r->sess->dialect == SL_DIALECT_PG;
    if (sl_ctl_start(r->sess->loop, ctl_path, down_on_ctl, r, &ctl, &cerr) != 0)
        sl_warn("%s (the rollback runs without live control%s)", cerr.msg, pg ? " but through the database" : "");
    if (pg) /* sluice ctl from another machine: requests in sluice_ctl */
        sl_lease_set_ctl(&r->run.lease, down_on_ctl, r);
    int code = down_walk(r);
    if (code == SL_EXIT_OK && sl_run_check_kept(&r->run, r->sess) != 0) {
        r->err = r->run.err;
        code = SL_EXIT_FAILED;
    }
    if (pg)
        sl_lease_set_ctl(&r->run.lease, NULL, NULL);
    if (code != SL_EXIT_OK) /* a pause asked just before a signal stopped the walk (one that came with
                             * the last chunk in flight is moot: the walk is done) */
        gate_save_pause(&r->gate, r->sess);
    gate_hold(&r->gate, SL_HOLD_NONE, NULL); /* a hold in force ends with the walk */
    sl_ctl_stop(ctl);
    free(ctl_path);
    sl_progress_end();
    return finish(r, code);
}

static int refused_code(int rc)
{
    return rc == SL_EREFUSED ? SL_EXIT_USAGE : rc == SL_STOPPED ? SL_EXIT_STOPPED : SL_EXIT_FAILED;
}

/* One run of job; *lost when the database lost commits of it (run.h). */
static int down_once(sl_session *sess, const sl_run_opts *opts, sl_job *job, int reruns_left, int *lost)
{
    down_run r;
    run_init(&r, sess, opts, job);
    sl_log_set_job(job->name);
    int rc = sl_run_read_row(sess, job->name, &r.row, &r.err);
    if (rc == 0)
        rc = prepare(&r, &r.row);
    if (rc == 0)
        rc = gate_prepare(&r.gate, sess, r.info.ks.table, &r.err);
    if (rc == 0) {
        rc = sl_run_open(&r.run, sess, opts, job, SL_RUN_DOWN, *lost);
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
    if (rc == SL_STOPPED)
        sl_info("%s", r.err.msg);
    *lost = sl_run_again(&r.run, sess, &code, reruns_left, "rolling back again from what the database has", &r.err);
    if (!*lost && code != SL_EXIT_OK && code != SL_EXIT_STOPPED)
        sl_log_event(SL_LOG_ERROR, code == SL_EXIT_USAGE ? "refused" : "failed",
                     json_pack("{so}", "error", sl_json_str(r.err.msg)), "%s", r.err.msg);
    run_free(&r);
    sl_log_set_job(NULL);
    return code;
}

static int down_job(sl_session *sess, const sl_run_opts *opts, sl_job *job)
{
    int code, lost = 0;
    for (int left = SL_LOST_COMMITS_RERUNS;; left--) {
        code = down_once(sess, opts, job, left, &lost);
        if (!lost)
            return code;
    }
}

/* ---- choosing the jobs ---- */

/* Refusals of the whole command, before anything is touched. */
static int precheck(sl_session *sess, const sl_run_opts *opts, sl_job *job)
{
    down_run r;
    run_init(&r, sess, opts, job);
    r.gate.quiet = 1; /* down_job says how it measures the replica lag */
    r.fit_said = 1;   /* and how the saved rows fit the table */
    int rc = sl_run_check_journal(sess, opts, job->name, &r.err);
    if (rc == 0)
        rc = sl_run_read_row(sess, job->name, &r.row, &r.err);
    if (rc == 0)
        rc = prepare(&r, &r.row);
    if (rc == 0)
        rc = gate_prepare(&r.gate, sess, r.info.ks.table, &r.err);
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

/* The named job, refused with a reason when there is nothing to undo (one
 * already rolled back is not refused: the jobs after it are still undone). */
static int check_named(sl_session *sess, const sl_job *job, const sl_job_row *row, int applied)
{
    if (applied)
        return SL_EXIT_OK;
    if (row->state == SL_STATE_ROLLED_BACK) { /* a down run again (a script's retry): done, as up says of a done job */
        sl_info("%s: already rolled back", job->name);
        return SL_EXIT_OK;
    }
    sl_err err = {0};
    /* its record may sit in sluice's tables of another schema, which this search_path does not find */
    if (!row->exists && row->chunks == 0 &&
        sl_schema_job_elsewhere(sess, job->name, job->table, "nothing here to roll back", &err) == SL_EREFUSED) {
        sl_error("down %s", err.msg);
        return SL_EXIT_USAGE;
    }
    if (!row->exists && row->chunks == 0) {
        sl_error("down %s: the job never ran against %s: nothing to roll back", job->name, sl_session_display(sess));
        sl_error("hint: is --db pointing at the database `up` ran against? `sluice status` lists each job's state");
        return SL_EXIT_USAGE;
    }
    sl_error("down %s: the job is %s%s: nothing to roll back", job->name, sl_state_name(row->state),
             row->state == SL_STATE_PENDING ? "" : " with no committed chunk");
    return SL_EXIT_USAGE;
}

/* A job the database records as applied, with its file here or not. */
typedef struct applied_job {
    char *name;
    size_t index; /* in the job set; SIZE_MAX: no job file */
    sl_state state;
} applied_job;

/* The character at i of name followed by ".sql", or 0 past its end. */
static unsigned char file_char(const char *name, size_t len, size_t i)
{
    static const char ext[] = ".sql";
    return (unsigned char)(i < len ? name[i] : i - len < sizeof ext ? ext[i - len] : '\0');
}

/* The job set's order: by file name (jobset.c), which a job without its file keeps too. */
static int cmp_applied(const void *pa, const void *pb)
{
    const char *a = ((const applied_job *)pa)->name, *b = ((const applied_job *)pb)->name;
    size_t la = strlen(a), lb = strlen(b);
    for (size_t i = 0;; i++) {
        unsigned char ca = file_char(a, la, i), cb = file_char(b, lb, i);
        if (ca != cb || ca == 0)
            return (ca > cb) - (ca < cb);
    }
}

static void add_applied(applied_job **list, size_t *n, const char *name, size_t index, sl_state state)
{
    *list = sl_realloc(*list, (*n + 1) * sizeof **list);
    (*list)[(*n)++] = (applied_job){sl_strdup(name), index, state};
}

static void free_applied(applied_job *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i].name);
    free(list);
}

static int in_set(const sl_jobset *jobs, const char *name)
{
    for (size_t i = 0; i < jobs->njobs; i++)
        if (strcmp(jobs->jobs[i].name, name) == 0)
            return 1;
    return 0;
}

/* The jobs the database records as applied whose file is not in the set:
 * down works from what the database says, so that a job file moved away
 * does not make its job look never run. */
static int add_unfiled(sl_session *sess, const sl_jobset *jobs, applied_job **list, size_t *n)
{
    char **names;
    size_t nnames;
    sl_err err;
    if (sl_schema_job_names(sess, &names, &nnames, &err) != 0) {
        sl_error("%s", err.msg);
        return SL_EXIT_FAILED;
    }
    int code = SL_EXIT_OK;
    for (size_t i = 0; i < nnames; i++) {
        sl_job_row row;
        if (code == SL_EXIT_OK && !in_set(jobs, names[i])) {
            if (sl_run_read_row(sess, names[i], &row, &err) != 0) {
                sl_error("%s", err.msg);
                code = SL_EXIT_FAILED;
            } else {
                if (is_applied(&row))
                    add_applied(list, n, names[i], SIZE_MAX, row.state);
                sl_job_row_free(&row);
            }
        }
        free(names[i]);
    }
    free(names);
    return code;
}

/* Every applied job, in the job set's order; the named one refused when it is not applied. */
static int list_applied(sl_session *sess, sl_jobset *jobs, const sl_job *named, applied_job **list, size_t *n)
{
    *list = NULL;
    *n = 0;
    int code = SL_EXIT_OK;
    for (size_t i = 0; code == SL_EXIT_OK && i < jobs->njobs; i++) {
        sl_job_row row;
        sl_err err;
        if (sl_run_read_row(sess, jobs->jobs[i].name, &row, &err) != 0) {
            sl_error("%s", err.msg);
            return SL_EXIT_FAILED;
        }
        int ok = is_applied(&row);
        if (named == &jobs->jobs[i])
            code = check_named(sess, named, &row, ok);
        if (ok)
            add_applied(list, n, jobs->jobs[i].name, i, row.state);
        sl_job_row_free(&row);
    }
    if (code == SL_EXIT_OK)
        code = add_unfiled(sess, jobs, list, n);
    if (*n > 1)
        qsort(*list, *n, sizeof **list, cmp_applied);
    return code;
}

/* A job to roll back whose file is gone: down cannot undo it (its down
 * section or undo columns are in the file), and undoing the jobs before it
 * without it would roll back out of order. Refused, nothing touched. */
static int refuse_unfiled(const sl_jobset *jobs, const char *target, const applied_job *list, size_t n)
{
    sl_buf names = {0};
    size_t missing = 0;
    /* where the files would be: the directory of the jobs that have one */
    const char *dir = jobs->njobs ? jobs->jobs[0].path : NULL, *slash = dir ? strrchr(dir, '/') : NULL;
    int dir_len = slash ? (int)(slash - dir + 1) : 0;
    for (size_t i = 0; i < n; i++)
        if (list[i].index == SIZE_MAX)
            sl_buf_printf(&names, "%s%s (%s; no %.*s%s.sql)", missing++ ? ", " : "", list[i].name,
                          sl_state_name(list[i].state), dir_len, dir ? dir : "", list[i].name);
    if (missing == 0)
        return SL_EXIT_OK;
    sl_error("down %s: %s applied but %s no job file: %s; down cannot roll %s back without %s, nor the jobs "
             "applied before %s, out of order: nothing was rolled back",
             target, missing == 1 ? "a job is" : "jobs are", missing == 1 ? "has" : "have", names.data,
             missing == 1 ? "it" : "them", missing == 1 ? "its file" : "their files", missing == 1 ? "it" : "them");
    sl_error("hint: put the job file%s back in the jobs directory (--jobs) as %s ran, then run down again; "
             "`sluice status` lists the jobs the database records",
             missing == 1 ? "" : "s", missing == 1 ? "it" : "they");
    sl_buf_free(&names);
    return SL_EXIT_USAGE;
}

/* Fill order[] with the jobs to roll back, newest first: the applied jobs
 * as the database records them, each of which must have its file. */
static int choose(sl_session *sess, sl_jobset *jobs, const char *target, size_t *order, size_t *n)
{
    int64_t want = -1;
    const sl_job *named = NULL;
    *n = 0;
    if (strcmp(target, "base") != 0 && target[0] == '-' && sl_parse_int(target + 1, 1, 1000000, &want) != 0) {
        sl_error("down: \"%s\" is not -N, base or a job name", target);
        return SL_EXIT_USAGE;
    } else if (strcmp(target, "base") != 0 && target[0] != '-') {
        named = sl_jobset_find(jobs, target);
    }
    applied_job *list;
    size_t applied;
    int code = list_applied(sess, jobs, named, &list, &applied);
    if (code == SL_EXIT_OK && want > 0 && (size_t)want > applied) {
        sl_error("down -%" PRId64 ": only %zu job%s applied (hint: `sluice down base` rolls back all of them)", want,
                 applied, applied == 1 ? " is" : "s are");
        code = SL_EXIT_USAGE;
    }
    /* the named job and every one applied after it, the last `want`, or all */
    size_t first = want > 0 && code == SL_EXIT_OK ? applied - (size_t)want : 0;
    applied_job key = {named ? named->name : NULL, 0, SL_STATE_PENDING};
    while (named && first < applied && cmp_applied(&list[first], &key) < 0)
        first++;
    if (code == SL_EXIT_OK)
        code = refuse_unfiled(jobs, target, list + first, applied - first);
    for (size_t i = applied; code == SL_EXIT_OK && i > first; i--)
        order[(*n)++] = list[i - 1].index;
    free_applied(list, applied);
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
