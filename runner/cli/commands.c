/* commands.c: up and down (over all jobs), status; history is in commands_history.c, plan, stamp and report in
 * commands_job.c. */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands_internal.h"
#include "sluice/base/fiber.h"
#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/base/width.h"
#include "sluice/checkpoints/ckpt.h"
#include "sluice/cli/cli.h"
#include "sluice/cli/fleet.h"
#include "sluice/engine/down.h"
#include "sluice/services/metrics.h"

/* What up and down do once connected: sess is open, metrics served. */
typedef int (*jobs_cmd)(sl_session *sess, const sl_opts *opts, sl_jobset *jobs, const char *arg);

/* up and down alike: a session on opts' loop (or a loop of its own), metrics
 * served while it runs unless a fleet serves them, then cmd; an exit code. */
static int with_session(const sl_opts *opts, sl_jobset *jobs, const char *arg, jobs_cmd cmd)
{
    uv_loop_t own, *loop = opts->loop ? opts->loop : &own;
    if (!opts->loop)
        uv_loop_init(&own);
    sl_session sess;
    sl_err err = {{0}};
    int code = SL_EXIT_OK;
    if (sl_session_init(&sess, loop, opts->db, &err) != 0) {
        sl_error("%s", err.msg);
        if (!opts->loop)
            uv_loop_close(&own);
        return SL_EXIT_USAGE;
    }
    /* a fleet serves its targets' metrics from one endpoint (cli.c) */
    sl_metrics_server *metrics = NULL;
    if (opts->metrics && !opts->loop && sl_metrics_serve(loop, opts->metrics, &metrics, &err) != 0) {
        sl_error("%s", err.msg);
        sl_session_close(&sess);
        uv_loop_close(&own);
        return SL_EXIT_USAGE;
    }
    int rc = sl_session_connect(&sess, &err);
    if (rc != 0) {
        /* an event of its own: in a fleet, the line that says why a target failed */
        sl_log_event(SL_LOG_ERROR, "connect_failed", json_pack("{so}", "error", sl_json_str(err.msg)), "%s", err.msg);
        code = rc == SL_EREFUSED ? SL_EXIT_USAGE : SL_EXIT_FAILED;
    }
    if (code == SL_EXIT_OK)
        code = cmd(&sess, opts, jobs, arg);
    sl_metrics_stop(metrics); /* before the session's close runs the loop to its end */
    sl_session_close(&sess);
    if (!opts->loop && uv_loop_close(&own) != 0)
        sl_warn("BUG: a libuv handle was left open at exit");
    return code;
}

static int up_jobs(sl_session *sess, const sl_opts *opts, sl_jobset *jobs, const char *only)
{
    sl_job *target = only ? sl_jobset_find(jobs, only) : NULL;
    if (jobs->njobs == 0) /* a wrong --jobs, or a volume not mounted, would pass for "all done" */
        sl_warn("no job files (*.sql) in %s: nothing to run (hint: --jobs DIR names the directory)", opts->jobs_dir);
    int code = SL_EXIT_OK;
    for (size_t i = 0; code == SL_EXIT_OK && i < jobs->njobs; i++) {
        if (target && &jobs->jobs[i] != target)
            continue;
        if (sl_session_stopping(sess))
            return SL_EXIT_STOPPED;
        code = sl_up_job(sess, &opts->run, &jobs->jobs[i]);
    }
    return code;
}

int sl_cmd_up(const sl_opts *opts, sl_jobset *jobs, const char *only)
{
    return with_session(opts, jobs, only, up_jobs);
}

static int down_jobs(sl_session *sess, const sl_opts *opts, sl_jobset *jobs, const char *target)
{
    return sl_down_jobs(sess, &opts->run, jobs, target);
}

int sl_cmd_down(const sl_opts *opts, sl_jobset *jobs, const char *target)
{
    return with_session(opts, jobs, target, down_jobs);
}

/* ---- the names of the jobs ---- */

static void add_name(sl_cmd_names *ns, const char *name, size_t len)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strlen(ns->v[i]) == len && strncmp(ns->v[i], name, len) == 0)
            return;
    if (ns->n == ns->cap)
        ns->v = sl_realloc(ns->v, (ns->cap = ns->cap ? ns->cap * 2 : 16) * sizeof(char *));
    ns->v[ns->n++] = sl_strndup(name, len);
}

void sl_cmd_names_free(sl_cmd_names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every job with a file in dir ending in ext. */
static void add_dir_names(sl_cmd_names *ns, const char *dir_path, const char *ext)
{
    DIR *dir = opendir(dir_path);
    if (!dir)
        return;
    struct dirent *de;
    size_t el = strlen(ext);
    while ((de = readdir(dir)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len > el && de->d_name[0] != '.' && strcmp(de->d_name + len - el, ext) == 0)
            add_name(ns, de->d_name, len - el);
    }
    closedir(dir);
}

/* Every job the database knows (when it can be reached). */
static void add_db_names(sl_cmd_names *ns, sl_session *sess)
{
    const char *sql = "SELECT job FROM " SL_JOBS_TABLE " UNION SELECT job FROM " SL_PROGRESS_TABLE;
    sl_answer ans;
    if (sl_session_exec1(sess, sql, 0, NULL, &ans) == 0)
        for (int r = 0; ans.ok && r < ans.results[0].nrows; r++)
            add_name(ns, sl_answer_val(&ans, 0, r, 0), strlen(sl_answer_val(&ans, 0, r, 0)));
    sl_answer_free(&ans);
}

void sl_cmd_names_collect(const sl_opts *opts, sl_session *sess, sl_cmd_names *ns)
{
    add_dir_names(ns, opts->jobs_dir, ".sql");
    add_dir_names(ns, opts->run.ckpt_dir, ".sluice");
    if (sess)
        add_db_names(ns, sess);
    if (ns->n > 1) /* ns->v is NULL with no job at all */
        qsort(ns->v, ns->n, sizeof(char *), cmp_str);
}

/* ---- status ---- */

/* One line of status, from the database when it can be reached, else from
 * the checkpoint file. */
typedef struct status_row {
    sl_job_row db; /* the database's view (state, rows, chunks, last key, ...) */
    int from_db;
    const char *unread;      /* why the database could not be read, NULL when it was */
    int64_t affected, batch; /* the journal's: only the runner knew them */
    char *file;              /* the checkpoint file, NULL when there is none */
    json_t *skipped;         /* [{"key": [...], "error": "..."}]: every one, or the first `shown` */
    int64_t nskipped;        /* the rows set aside, all of them */
    size_t shown;            /* at most this many in skipped (0: all) */
} status_row;

/* The table lists this many of a job's rows set aside; --json lists all. */
#define STATUS_SKIPPED_SHOWN 10

static void status_row_free(status_row *s)
{
    sl_job_row_free(&s->db);
    free(s->file);
    json_decref(s->skipped);
    memset(s, 0, sizeof *s);
}

static void add_skipped(json_t *list, const char *key, const char *error)
{
    json_t *o = json_object();
    json_t *k = sl_json_key(key);
    json_object_set_new(o, "key", k ? k : json_null());
    json_object_set_new(o, "error", sl_json_str(error));
    json_array_append_new(list, o);
}

static int add_skipped_cb(const char *key, const char *error, void *arg)
{
    status_row *s = arg;
    if (!s->shown || (size_t)s->nskipped < s->shown)
        add_skipped(s->skipped, key, error);
    s->nskipped++;
    return 0;
}

/* The rows on-error skip set aside, as the database records them: every
 * one, or the first s->shown (s->nskipped, from the job's row, counts all). */
static int db_skipped(sl_session *sess, const char *job, status_row *s, sl_err *err)
{
    const char *sql = sess->dialect == SL_DIALECT_SQLITE
                          ? "SELECT hi, error FROM " SL_PROGRESS_TABLE
                            " WHERE job = $1 AND skipped ORDER BY chunk_no LIMIT $2"
                          : "SELECT array_to_json(hi)::text, error FROM " SL_PROGRESS_TABLE
                            " WHERE job = $1 AND skipped ORDER BY chunk_no LIMIT $2::bigint";
    char limit[24];
    snprintf(limit, sizeof limit, "%" PRId64, s->shown ? (int64_t)s->shown : INT64_MAX);
    const char *params[] = {job, limit};
    json_t *list = s->skipped;
    sl_answer ans;
    if (sl_session_exec1(sess, sql, 2, params, &ans) != 0 || !ans.ok) {
        sl_err_set(err, "cannot read the rows job %s set aside: %s", job, ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return -1;
    }
    for (int r = 0; r < ans.results[0].nrows; r++)
        add_skipped(list, sl_answer_val(&ans, 0, r, 0), sl_answer_val(&ans, 0, r, 1));
    sl_answer_free(&ans);
    return 0;
}

/* When the job's current walk began, as the database records it (run.c's
 * begin_up): the start of the up that found no chunk committed, kept by the
 * ups that resume the walk and by downs; a stamp to pending forgets it. The
 * file's own started_at is its first run's, kept through a rollback. */
static int64_t walk_started(const sl_ckpt_run *runs, size_t n, int64_t first)
{
    if (n == 0)
        return first;
    int64_t started = 0, chunks = 0;
    for (size_t i = 0; i < n; i++) {
        const sl_ckpt_run *r = &runs[i];
        int64_t c = r->chunks > 0 ? r->chunks : 0;
        if (strcmp(r->kind, "up") == 0) {
            if (chunks == 0)
                started = r->started_at_ms;
            chunks += c;
        } else if (strcmp(r->kind, "down") == 0) {
            chunks = chunks > c ? chunks - c : 0;
        } else if (strcmp(r->kind, "stamp") == 0 && strcmp(r->outcome, "pending") == 0) {
            started = chunks = 0;
        }
    }
    return started;
}

/* The journal's view into s (all of it when there is no database). */
static int read_journal(const sl_opts *opts, const char *name, status_row *s, sl_err *err)
{
    char *path = sl_ckpt_path(opts->run.ckpt_dir, name);
    sl_ckpt *ckpt = NULL;
    int rc = sl_ckpt_open(path, name, 0, &ckpt, err);
    if (rc == SL_CKPT_MISSING) {
        free(path);
        return 0;
    }
    if (rc != 0) {
        free(path);
        return -1;
    }
    s->file = path;
    sl_ckpt_job cj;
    rc = sl_ckpt_get_job(ckpt, &cj, err);
    sl_ckpt_run *runs = NULL;
    size_t nruns = 0;
    if (rc == 0 && !s->from_db)
        rc = sl_ckpt_each_skipped(ckpt, add_skipped_cb, s, err);
    if (rc == 0 && !s->from_db)
        rc = sl_ckpt_list_runs(ckpt, &runs, &nruns, err);
    sl_ckpt_close(ckpt);
    int64_t started = rc == 0 ? walk_started(runs, nruns, cj.started_at_ms) : 0;
    for (size_t i = 0; i < nruns; i++)
        sl_ckpt_run_free(&runs[i]);
    free(runs);
    if (rc != 0)
        return -1;
    s->affected = cj.affected;
    s->batch = cj.batch;
    if (!s->from_db) {
        sl_job_row *d = &s->db;
        /* "running" in a file no live runner holds: it was killed mid-run */
        d->state = cj.state == SL_STATE_RUNNING && !sl_ckpt_locked(path) ? SL_STATE_STOPPED : cj.state;
        d->rows = cj.rows;
        d->chunks = cj.chunks;
        d->last_key = cj.last_key;
        d->error = cj.error;
        d->started_at_ms = started;
        d->updated_at_ms = cj.updated_at_ms;
        cj.last_key = cj.error = NULL;
    }
    sl_ckpt_job_free(&cj);
    return 0;
}

static int read_status(const sl_opts *opts, sl_session *sess, const char *name, size_t shown, status_row *s,
                       sl_err *err)
{
    memset(s, 0, sizeof *s);
    s->skipped = json_array();
    s->shown = shown;
    s->db.state = SL_STATE_PENDING;
    if (sess) {
        int rc = sl_run_check_journal(sess, &opts->run, name, err);
        if (rc == 0)
            rc = sl_run_read_row(sess, name, &s->db, err);
        s->nskipped = s->db.skipped;
        if (rc == 0 && s->db.skipped > 0)
            rc = db_skipped(sess, name, s, err);
        if (rc != 0)
            return -1;
        s->from_db = 1;
    }
    return read_journal(opts, name, s, err);
}

json_t *sl_cmd_json_time(int64_t ms)
{
    char ts[32];
    sl_format_iso8601(ms, ts);
    return ms > 0 ? json_string(ts) : json_null();
}

/* Neither the database nor a checkpoint file could say anything of the job:
 * "pending" would be a guess. */
static int status_unknown(const status_row *s)
{
    return s->unread && !s->file;
}

static json_t *status_json(const char *target, const char *name, const status_row *s)
{
    const sl_job_row *d = &s->db;
    int unknown = status_unknown(s);
    json_t *o = json_object();
    json_object_set_new(o, "job", sl_json_str(name));
    if (target)
        json_object_set_new(o, "target", sl_json_str(target));
    json_object_set_new(o, "state", json_string(unknown ? "unknown" : sl_state_name(d->state)));
    json_object_set_new(o, "rows", unknown ? json_null() : json_integer(d->rows));
    json_object_set_new(o, "chunks", unknown ? json_null() : json_integer(d->chunks));
    json_t *key = sl_json_key(d->last_key);
    json_object_set_new(o, "last_key", key ? key : json_null());
    json_object_set_new(o, "error", sl_json_str(d->error));
    json_object_set_new(o, "started_at", sl_cmd_json_time(d->started_at_ms));
    json_object_set_new(o, "updated_at", sl_cmd_json_time(d->updated_at_ms));
    json_object_set_new(o, "affected", json_integer(s->affected));
    json_object_set_new(o, "batch", json_integer(s->batch));
    json_object_set_new(o, "checkpoint", sl_json_str(s->file));
    json_object_set_new(o, "skipped", json_incref(s->skipped));
    json_object_set_new(o, "stamped", json_boolean(d->stamped));
    json_object_set_new(o, "runner", sl_json_str(d->runner));
    json_object_set_new(o, "paused", sl_json_str(d->paused));
    json_object_set_new(o, "source", json_string(unknown ? "none" : s->from_db ? "database" : "checkpoint"));
    json_object_set_new(o, "database_error", sl_json_str(s->unread));
    return o;
}

/* Text from a job file, the database or a checkpoint file, for the terminal. */
void sl_cmd_add_text(sl_buf *b, const char *s)
{
    if (s)
        sl_buf_add_visible(b, s, strlen(s), 1);
}

/* A column of width w (text from anywhere, made visible). */
void sl_cmd_add_column(sl_buf *b, const char *s, size_t w)
{
    size_t at = b->len;
    sl_cmd_add_text(b, s);
    /* padded by the columns it takes on the terminal, not its bytes: 'é' is two bytes, '日' three and two columns */
    size_t cols = sl_width_of(b->data ? b->data + at : "", b->len - at);
    sl_buf_printf(b, "%*s ", cols < w ? (int)(w - cols) : 0, "");
}

static void status_line(sl_buf *out, const char *target, const char *name, const status_row *s)
{
    const sl_job_row *d = &s->db;
    char ts[32];
    sl_format_iso8601(d->updated_at_ms, ts);
    sl_buf line = {0};
    if (target)
        sl_cmd_add_column(&line, target, 20);
    sl_cmd_add_column(&line, name, 40);
    if (status_unknown(s))
        sl_buf_printf(&line, "%-12s %12s %8s  ", "unknown", "-", "-");
    else
        sl_buf_printf(&line, "%-12s %12" PRId64 " %8" PRId64 "  ", sl_state_name(d->state), d->rows, d->chunks);
    sl_cmd_add_column(&line, d->last_key ? d->last_key : "-", 20);
    sl_buf_printf(&line, "%s\n", ts[0] ? ts : "-");
    if (d->runner) {
        sl_buf_adds(&line, "    runner: ");
        sl_cmd_add_text(&line, d->runner);
        sl_buf_addc(&line, '\n');
    }
    if (d->paused) {
        sl_buf_adds(&line, "    paused: ");
        sl_cmd_add_text(&line, d->paused);
        sl_buf_adds(&line, " (until `sluice ctl ");
        sl_cmd_add_text(&line, name);
        sl_buf_adds(&line, " resume`)\n");
    }
    if (d->error) {
        sl_buf_adds(&line, "    error: ");
        sl_cmd_add_text(&line, d->error);
        sl_buf_addc(&line, '\n');
    }
    size_t i;
    json_t *e;
    json_array_foreach(s->skipped, i, e)
    {
        char *key = json_dumps(json_object_get(e, "key"), JSON_ENCODE_ANY);
        sl_buf_adds(&line, "    skipped ");
        sl_cmd_add_text(&line, key ? key : "?");
        sl_buf_adds(&line, ": ");
        sl_cmd_add_text(&line, json_string_value(json_object_get(e, "error")));
        sl_buf_addc(&line, '\n');
        free(key);
    }
    if (s->nskipped > (int64_t)json_array_size(s->skipped)) {
        sl_buf_printf(&line, "    ... and %" PRId64 " more (%" PRId64 " rows set aside in all): `sluice status ",
                      s->nskipped - (int64_t)json_array_size(s->skipped), s->nskipped);
        sl_cmd_add_text(&line, name);
        sl_buf_adds(&line, " --json` lists every one\n");
    }
    sl_buf_adds(out, line.data);
    sl_buf_free(&line);
}

static int wanted(const char *name, const char *only)
{
    if (!only || strcmp(name, only) == 0)
        return 1;
    size_t n = strlen(name);
    return strncmp(name, only, n) == 0 && strcmp(only + n, ".sql") == 0;
}

/* A pooler accepts the connection and may then hold every query until one
 * of its server connections is free (PgBouncer waits up to its
 * query_wait_timeout, 120 s by default): the connection's own setup queries
 * too. The watchdog drops the connection when connecting and its setup took
 * longer than the connect timeout. */
typedef struct watchdog {
    uv_timer_t timer;
    sl_session *sess;
    int fired, closed;
} watchdog;

static void on_watchdog(uv_timer_t *timer)
{
    watchdog *w = timer->data;
    w->fired = 1;
    sl_session_disconnect(w->sess); /* what waits on the connection returns, with it lost */
}

static void on_watchdog_closed(uv_handle_t *handle)
{
    ((watchdog *)handle->data)->closed = 1;
}

/* A session on the target for status, when it can be reached: status
 * still answers from the checkpoint files when it cannot (and says so,
 * unless quiet: history, which only fills in from the database; *unread,
 * when asked for, then says why, malloc'd). */
sl_session *sl_cmd_status_session(const sl_opts *opts, uv_loop_t *loop, sl_session *sess, int quiet, char **unread)
{
    sl_err err = {{0}};
    const char *target = opts->target ? opts->target : "", *sep = opts->target ? ": " : "";
    if (!opts->db) { /* the command line could not use it, and said so */
        if (!quiet)
            sl_warn("showing what the checkpoint files in %s say; the database decides what runs", opts->run.ckpt_dir);
        if (unread)
            *unread = sl_strdup("the database string cannot be used");
        return NULL;
    }
    if (sl_session_init(sess, loop, opts->db, &err) != 0) { /* a SQLite file gone, too */
        if (!quiet) {
            sl_warn("%s%s%s", target, sep, err.msg);
            sl_warn("showing what the checkpoint files in %s say; the database decides what runs", opts->run.ckpt_dir);
        }
        if (unread)
            *unread = sl_strdup(err.msg);
        return NULL;
    }
    if (!getenv("SLUICE_CONNECT_TIMEOUT"))
        sess->connect_timeout_ms = 3000;
    sess->quiet = 1;
    watchdog w = {.sess = sess};
    uv_timer_init(loop, &w.timer);
    w.timer.data = &w;
    uv_timer_start(&w.timer, on_watchdog, (uint64_t)sess->connect_timeout_ms, 0);
    int connected = sl_session_connect(sess, &err) == 0;
    uv_close((uv_handle_t *)&w.timer, on_watchdog_closed);
    while (!w.closed)
        sl_fiber_wait(loop);
    if (connected && !w.fired)
        return sess;
    if (w.fired)
        sl_err_set(&err,
                   "%s did not answer within %" PRId64 " ms (a connection pooler with every server "
                   "connection busy?)",
                   sl_session_display(sess), sess->connect_timeout_ms);
    if (!quiet) {
        sl_warn("%s%s%s", target, sep, err.msg);
        sl_warn("showing what the checkpoint files in %s say; the database decides what runs", opts->run.ckpt_dir);
    }
    if (unread)
        *unread = sl_strdup(err.msg);
    sl_session_close(sess);
    return NULL;
}

/* The status of every job of one database: JSON objects into all, or text
 * lines into text; *found when a job matched only. 0 or an exit code. */
static int status_of(const sl_opts *opts, const char *only, json_t *all, sl_buf *text, int *found)
{
    uv_loop_t own, *loop = opts->loop ? opts->loop : &own;
    if (!opts->loop)
        uv_loop_init(&own);
    sl_session sess_store;
    int code = SL_EXIT_OK;
    char *unread = NULL;
    sl_session *sess = sl_cmd_status_session(opts, loop, &sess_store, 0, &unread);
    sl_cmd_names ns = {0};
    sl_cmd_names_collect(opts, sess, &ns);
    for (size_t i = 0; code == SL_EXIT_OK && i < ns.n; i++) {
        if (!wanted(ns.v[i], only))
            continue;
        *found = 1;
        status_row s;
        sl_err err = {{0}};
        int rc = read_status(opts, sess, ns.v[i], opts->json ? 0 : STATUS_SKIPPED_SHOWN, &s, &err);
        s.unread = unread;
        if (rc != 0) {
            sl_error("%s%s%s", opts->target ? opts->target : "", opts->target ? ": " : "", err.msg);
            code = SL_EXIT_USAGE;
        } else if (opts->json) {
            json_array_append_new(all, status_json(opts->target, ns.v[i], &s));
        } else {
            status_line(text, opts->target, ns.v[i], &s);
        }
        status_row_free(&s);
    }
    sl_cmd_names_free(&ns);
    int failed = unread && opts->target;
    free(unread);
    if (sess)
        sl_session_close(sess);
    if (!opts->loop && uv_loop_close(&own) != 0)
        sl_warn("BUG: a libuv handle was left open at exit");
    /* a fleet's target whose database cannot be read failed (one database alone answers from its files) */
    return code == SL_EXIT_OK && failed ? SL_EXIT_FAILED : code;
}

/* One JSON array, an object a line. */
void sl_cmd_print_array(json_t *all)
{
    size_t i;
    json_t *o;
    printf("[");
    json_array_foreach(all, i, o)
    {
        char *line = json_dumps(o, 0);
        printf("%s%s", i ? ",\n " : "", line);
        free(line);
    }
    printf("]\n");
}

sl_opts sl_target_opts(const sl_opts *opts, const sl_target *t, char **dir)
{
    sl_opts o = *opts;
    size_t len = strlen(opts->run.ckpt_dir);
    *dir = sl_asprintf("%s%s%s", opts->run.ckpt_dir, len && opts->run.ckpt_dir[len - 1] == '/' ? "" : "/", t->name);
    o.db = t->db;
    o.run.ckpt_dir = *dir;
    o.target = t->name;
    return o;
}

int sl_cmd_status(const sl_opts *opts, const sl_fleet *fleet, const char *only)
{
    /* a "*.sql" that up would refuse (a directory, say) is no job to list: refused here too */
    sl_err err = {{0}};
    if (sl_jobset_check_files(opts->jobs_dir, &err) != 0) {
        sl_error("%s", err.msg);
        return SL_EXIT_USAGE;
    }
    json_t *all = json_array();
    sl_buf text = {0};
    int code = SL_EXIT_OK, found = 0;
    if (!fleet)
        code = status_of(opts, only, all, &text, &found);
    for (size_t i = 0; fleet && i < fleet->n; i++) {
        char *dir;
        sl_opts o = sl_target_opts(opts, &fleet->targets[i], &dir);
        code = sl_fleet_worse(code, status_of(&o, only, all, &text, &found));
        free(dir);
    }
    if (code == SL_EXIT_OK && only && !found) {
        sl_error("no job \"%s\" in %s, %s or the database", only, opts->jobs_dir, opts->run.ckpt_dir);
        code = SL_EXIT_USAGE;
    }
    /* one database that failed shows nothing; a fleet shows the targets that answered */
    if ((code == SL_EXIT_OK || fleet) && opts->json) {
        sl_cmd_print_array(all);
    } else if ((code == SL_EXIT_OK || fleet) && text.len) {
        if (fleet)
            printf("%-20s ", "TARGET");
        printf("%-40s %-12s %12s %8s  %-20s %s\n", "JOB", "STATE", "ROWS", "CHUNKS", "LAST KEY", "UPDATED");
        fputs(text.data, stdout);
    }
    json_decref(all);
    sl_buf_free(&text);
    return code;
}
