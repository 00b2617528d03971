/* commands_history.c: `history`, the runs of every job (from sluice_runs, the checkpoint files, the jobs' rows). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands_internal.h"
#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/checkpoints/ckpt.h"
#include "sluice/cli/cli.h"
#include "sluice/cli/fleet.h"

/* A run, and the target whose journal holds it (NULL with one database). */
typedef struct hist_run {
    sl_ckpt_run run;
    const char *target;
    int from_db; /* no checkpoint file: the database's record of the job, as one line */
} hist_run;

static int cmp_run(const void *a, const void *b)
{
    const hist_run *x = a, *y = b;
    if (x->run.started_at_ms != y->run.started_at_ms)
        return x->run.started_at_ms < y->run.started_at_ms ? -1 : 1;
    int c = strcmp(x->target ? x->target : "", y->target ? y->target : "");
    return c ? c : strcmp(x->run.job, y->run.job);
}

static json_t *history_json(const hist_run *h)
{
    const sl_ckpt_run *r = &h->run;
    json_t *o = json_object();
    json_object_set_new(o, "job", sl_json_str(r->job));
    if (h->target)
        json_object_set_new(o, "target", sl_json_str(h->target));
    json_object_set_new(o, "kind", sl_json_str(r->kind));
    json_object_set_new(o, "outcome", sl_json_str(r->outcome));
    /* not known: a down not closed (the database keeps nothing of what it undid) */
    json_object_set_new(o, "rows", r->rows < 0 ? json_null() : json_integer(r->rows));
    json_object_set_new(o, "chunks", r->chunks < 0 ? json_null() : json_integer(r->chunks));
    json_object_set_new(o, "started_at", sl_cmd_json_time(r->started_at_ms));
    json_object_set_new(o, "ended_at", sl_cmd_json_time(r->ended_at_ms));
    json_object_set_new(o, "error", sl_json_str(r->error));
    json_object_set_new(o, "source", json_string(h->from_db ? "database" : "checkpoint"));
    return o;
}

static void history_line(const hist_run *h)
{
    const sl_ckpt_run *r = &h->run;
    char st[32], en[32];
    sl_format_iso8601(r->started_at_ms, st);
    sl_format_iso8601(r->ended_at_ms, en);
    sl_buf line = {0};
    /* a run killed ended when no one can tell: a down's, or any whose checkpoint file is all there is */
    sl_buf_printf(&line, "%-20s %-20s ", st, en[0] ? en : strcmp(r->outcome, "interrupted") == 0 ? "unknown" : "-");
    if (h->target)
        sl_cmd_add_column(&line, h->target, 20);
    sl_cmd_add_column(&line, r->job, 32);
    char rows[24] = "?", chunks[24] = "?";
    if (r->rows >= 0)
        snprintf(rows, sizeof rows, "%" PRId64, r->rows);
    if (r->chunks >= 0)
        snprintf(chunks, sizeof chunks, "%" PRId64, r->chunks);
    sl_buf_printf(&line, "%-6s %-12s %12s %8s", r->kind, r->outcome, rows, chunks);
    if (r->error) {
        sl_buf_adds(&line, "  ");
        sl_cmd_add_text(&line, r->error);
    }
    sl_buf_addc(&line, '\n');
    fputs(line.data, stdout);
    sl_buf_free(&line);
}

/* The runs of one checkpoint file, appended to *all: 0, 1 when there is no
 * file, -1 on error. A run still marked running whose runner is gone (no
 * one holds the file's run lock) was interrupted. */
static int add_runs(const sl_opts *opts, const char *name, hist_run **all, size_t *nall)
{
    char *path = sl_ckpt_path(opts->run.ckpt_dir, name);
    sl_ckpt *ckpt = NULL;
    sl_err err = {{0}};
    int rc = sl_ckpt_open(path, name, 0, &ckpt, &err);
    sl_ckpt_run *runs = NULL;
    size_t nruns = 0;
    if (rc == 0)
        rc = sl_ckpt_list_runs(ckpt, &runs, &nruns, &err);
    if (ckpt)
        sl_ckpt_close(ckpt);
    int live = rc == 0 && nruns > 0 && sl_ckpt_locked(path);
    free(path);
    if (rc == SL_CKPT_MISSING)
        return 1;
    if (rc != 0) {
        sl_error("%s", err.msg);
        return -1;
    }
    *all = sl_realloc(*all, (*nall + nruns + 1) * sizeof **all);
    for (size_t i = 0; i < nruns; i++) {
        if (strcmp(runs[i].outcome, "running") == 0 && !live) {
            free(runs[i].outcome);
            runs[i].outcome = sl_strdup("interrupted");
        }
        (*all)[(*nall)++] = (hist_run){runs[i], opts->target, 0};
    }
    free(runs);
    return 0;
}

/* A job the database knows and no checkpoint file records (the runner's
 * disk was lost, or it ran from another machine): one line for the job as
 * a whole, from its first start to its last change. 1 when added. */
static int add_db_run(sl_session *sess, const sl_opts *opts, const char *name, hist_run **all, size_t *nall)
{
    sl_job_row row;
    sl_err err = {{0}};
    if (sl_run_read_row(sess, name, &row, &err) != 0) {
        sl_warn("%s", err.msg);
        return 0;
    }
    int known = row.exists && (row.state != SL_STATE_PENDING || row.stamped);
    if (known) {
        sl_ckpt_run r = {0};
        r.job = sl_strdup(name);
        r.kind = sl_strdup(sl_run_row_kind(&row));
        r.outcome = sl_strdup(sl_state_name(row.state));
        r.started_at_ms = row.started_at_ms ? row.started_at_ms : row.updated_at_ms;
        r.ended_at_ms = row.state == SL_STATE_RUNNING || row.state == SL_STATE_ROLLING_BACK ? 0 : row.updated_at_ms;
        r.rows = row.rows;
        r.chunks = row.chunks;
        r.error = row.error ? sl_strdup(row.error) : NULL;
        *all = sl_realloc(*all, (*nall + 1) * sizeof **all);
        (*all)[(*nall)++] = (hist_run){r, opts->target, 1};
    }
    sl_job_row_free(&row);
    return known;
}

/* The runs of job the database recorded in sluice_runs (db, every job's),
 * appended to *all: 1 when there were any (the database's record, wherever
 * the runners ran, is the history; a checkpoint file holds only its own
 * machine's runs), else 0. */
static int add_recorded_runs(const sl_opts *opts, const char *name, const sl_ckpt_run *db, size_t ndb, hist_run **all,
                             size_t *nall)
{
    size_t n = 0;
    for (size_t i = 0; i < ndb; i++)
        n += strcmp(db[i].job, name) == 0;
    if (n == 0)
        return 0;
    *all = sl_realloc(*all, (*nall + n + 1) * sizeof **all);
    for (size_t i = 0; i < ndb; i++) {
        if (strcmp(db[i].job, name) != 0)
            continue;
        const sl_ckpt_run *d = &db[i];
        sl_ckpt_run r = {d->id,
                         sl_strdup(d->job),
                         sl_strdup(d->kind),
                         sl_strdup(d->outcome),
                         d->started_at_ms,
                         d->ended_at_ms,
                         d->rows,
                         d->chunks,
                         d->error ? sl_strdup(d->error) : NULL};
        (*all)[(*nall)++] = (hist_run){r, opts->target, 1};
    }
    return 1;
}

/* The runs of one database's jobs: from sluice_runs; from their checkpoint
 * files for jobs it does not record (it is new, or the database cannot be
 * reached); and from the job's row for jobs with neither. *from_db counts
 * those. */
static int history_of(const sl_opts *opts, hist_run **all, size_t *nall, size_t *from_db)
{
    uv_loop_t own, *loop = opts->loop ? opts->loop : &own;
    if (!opts->loop)
        uv_loop_init(&own);
    sl_session sess_store;
    sl_session *sess = sl_cmd_status_session(opts, loop, &sess_store, 1, NULL);
    sl_cmd_names ns = {0};
    sl_cmd_names_collect(opts, sess, &ns);
    int code = SL_EXIT_OK;
    sl_ckpt_run *db = NULL;
    size_t ndb = 0;
    sl_err err = {{0}};
    if (sess && sl_run_history(sess, &db, &ndb, &err) != 0)
        sl_warn("%s", err.msg); /* the checkpoint files then */
    for (size_t i = 0; i < ns.n; i++) {
        if (add_recorded_runs(opts, ns.v[i], db, ndb, all, nall))
            continue;
        int rc = add_runs(opts, ns.v[i], all, nall);
        if (rc < 0)
            code = SL_EXIT_USAGE;
        else if (rc == 1 && sess)
            *from_db += (size_t)add_db_run(sess, opts, ns.v[i], all, nall);
    }
    for (size_t i = 0; i < ndb; i++)
        sl_ckpt_run_free(&db[i]);
    free(db);
    sl_cmd_names_free(&ns);
    if (sess)
        sl_session_close(sess);
    if (!opts->loop && uv_loop_close(&own) != 0)
        sl_warn("BUG: a libuv handle was left open at exit");
    return code;
}

int sl_cmd_history(const sl_opts *opts, const sl_fleet *fleet)
{
    hist_run *all = NULL;
    size_t nall = 0, from_db = 0;
    int code = fleet ? SL_EXIT_OK : history_of(opts, &all, &nall, &from_db);
    for (size_t i = 0; fleet && i < fleet->n; i++) {
        char *dir;
        sl_opts o = sl_target_opts(opts, &fleet->targets[i], &dir);
        code = sl_fleet_worse(code, history_of(&o, &all, &nall, &from_db));
        free(dir);
    }
    if (nall)
        qsort(all, nall, sizeof *all, cmp_run);
    if ((code == SL_EXIT_OK || fleet) && opts->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < nall; i++)
            json_array_append_new(arr, history_json(&all[i]));
        sl_cmd_print_array(arr);
        json_decref(arr);
    } else if (code == SL_EXIT_OK || fleet) {
        printf("%-20s %-20s ", "STARTED", "ENDED");
        if (fleet)
            printf("%-20s ", "TARGET");
        printf("%-32s %-6s %-12s %12s %8s\n", "JOB", "KIND", "OUTCOME", "ROWS", "CHUNKS");
        for (size_t i = 0; i < nall; i++)
            history_line(&all[i]);
    }
    if ((code == SL_EXIT_OK || fleet) && from_db)
        sl_info("%zu job%s with no checkpoint file in %s (a lost directory, or run from another machine): shown as "
                "the database records %s, one line from the first start to the last change; the runs one by one "
                "were kept in the checkpoint file only",
                from_db, from_db == 1 ? "" : "s", opts->run.ckpt_dir, from_db == 1 ? "it" : "them");
    for (size_t i = 0; i < nall; i++)
        sl_ckpt_run_free(&all[i].run);
    free(all);
    return code;
}
