/* session.c: a database session (PostgreSQL or SQLite) awaited from sequential command code, signals, sleeps. */
#include "sluice/db/session.h"

#include "sluice/base/fiber.h"
#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/db/dburl.h"

#include <assert.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static void copy_result(sl_result *dst, const PGresult *res)
{
    dst->cmd_tuples = -1;
    if (!res)
        return;
    const char *ct = PQcmdTuples((PGresult *)res);
    if (ct && *ct)
        dst->cmd_tuples = strtoll(ct, NULL, 10);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        return;
    dst->nrows = PQntuples(res);
    dst->ncols = PQnfields(res);
    /* one block: the pointers, then every value's text (a chunk's images are
     * thousands of values: one malloc each was most of the copy's time) */
    size_t cells = (size_t)dst->nrows * (size_t)dst->ncols, bytes = 0;
    for (int r = 0; r < dst->nrows; r++)
        for (int c = 0; c < dst->ncols; c++)
            if (!PQgetisnull(res, r, c))
                bytes += (size_t)PQgetlength(res, r, c) + 1;
    dst->vals = sl_calloc(1, (cells + 1) * sizeof(char *) + bytes);
    dst->packed = 1;
    if (PQbinaryTuples(res))
        dst->lens = sl_calloc(cells + 1, sizeof(int));
    char *text = (char *)(dst->vals + cells + 1);
    for (int r = 0; r < dst->nrows; r++)
        for (int c = 0; c < dst->ncols; c++) {
            if (PQgetisnull(res, r, c))
                continue;
            size_t len = (size_t)PQgetlength(res, r, c);
            memcpy(text, PQgetvalue(res, r, c), len + 1); /* libpq ends a binary value with a NUL too */
            if (dst->lens)
                dst->lens[(size_t)r * (size_t)dst->ncols + (size_t)c] = (int)len;
            dst->vals[(size_t)r * (size_t)dst->ncols + (size_t)c] = text;
            text += len + 1;
        }
}

typedef struct waiter {
    sl_answer *ans;
    int done;
    int readonly; /* sl_session_exec_readonly's: a write refused there is the query's own */
} waiter;

static void fill_answer(sl_answer *ans, const sl_pg_reply *reply)
{
    ans->ok = reply->ok;
    ans->conn_lost = reply->conn_lost;
    ans->failed_index = reply->failed_index;
    memcpy(ans->sqlstate, reply->sqlstate, sizeof ans->sqlstate);
    ans->sqlstate[5] = '\0';
    ans->error = reply->error ? sl_strdup(reply->error) : NULL;
    if (!reply->ok && !ans->error)
        ans->error = sl_strdup(reply->conn_lost ? "connection to the server was lost" : "query failed");
    ans->nresults = reply->nresults;
    ans->results = sl_calloc(reply->nresults + 1, sizeof(sl_result));
    for (size_t i = 0; i < reply->nresults; i++)
        copy_result(&ans->results[i], reply->results ? reply->results[i] : NULL);
}

static sl_session *session_of(sl_pg *pg)
{
    return (sl_session *)(void *)((char *)pg - offsetof(sl_session, pg));
}

/* A writer's statement refused with 25006 (read_only_sql_transaction): the
 * server stopped taking writes under the run (sl_session_writer). The
 * answer becomes a lost connection's, and the connection is dropped (its
 * other batches, if any, fail as lost too), so that the caller's reconnect
 * finds a server that takes writes again, or gives up in its own time. */
static void refused_write(sl_pg *pg, sl_answer *ans)
{
    sl_session *sess = session_of(pg);
    if (!sess->writes || ans->ok || ans->conn_lost || strcmp(ans->sqlstate, "25006") != 0)
        return;
    char *why = sl_asprintf("%s stopped taking writes (a standby now, after a failover?): %s", sl_session_display(sess),
                            ans->error ? ans->error : "read-only");
    free(ans->error);
    ans->error = why;
    ans->conn_lost = 1;
    free(sess->dropped);
    sess->dropped = sl_strdup(why);
    sl_pg_disconnect(pg);
}

static void on_reply(sl_pg *pg, const sl_pg_reply *reply, void *arg)
{
    waiter *w = arg;
    fill_answer(w->ans, reply);
    if (!w->readonly)
        refused_write(pg, w->ans);
    w->done = 1;
}

static void on_pending_reply(sl_pg *pg, const sl_pg_reply *reply, void *arg)
{
    sl_pending *p = arg;
    fill_answer(&p->ans, reply);
    refused_write(pg, &p->ans);
    p->done = 1;
    if (p->on_done)
        p->on_done(p);
}

static const char *signal_name(int signum)
{
    return signum == SIGINT ? "SIGINT" : signum == SIGHUP ? "SIGHUP" : "SIGTERM";
}

/* SIGINT, SIGTERM and SIGHUP (the terminal or ssh session went away) all stop
 * the run the same way, and count together towards the second signal. */
static void on_signal(uv_signal_t *handle, int signum)
{
    sl_session *sess = handle->data;
    sess->signals++;
    sl_session_cancel_next(sess); /* only the chunk in flight finishes */
    if (sess->signals == 1 && !sess->quiet) {
        sl_warn("received %s: finishing the chunk in flight, then stopping (signal again to abort it)",
                signal_name(signum));
    } else if (sess->signals == 2) {
        if (!sess->quiet)
            sl_warn("second signal: aborting the chunk in flight (it rolls back)");
        /* Closing the connection alone would not stop the server: it reads
         * the end of the connection only once it has run what it was sent,
         * COMMIT included. Cancel the statement running now first. */
        if (sl_session_is(sess, SL_DIALECT_PG)) {
            sl_pg_cancel(&sess->pg);
            sl_pg_disconnect(&sess->pg);
        }
        if (sl_session_is(sess, SL_DIALECT_SQLITE))
            sl_lite_interrupt(&sess->lite);
    }
}

static void watch_signals(sl_session *sess, uv_loop_t *loop)
{
    uv_signal_t *handles[] = {&sess->sigint, &sess->sigterm, &sess->sighup};
    const int signums[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++) {
        uv_signal_init(loop, handles[i]);
        handles[i]->data = sess;
        uv_signal_start(handles[i], on_signal, signums[i]);
        /* Signal watchers must not keep the loop alive on their own. */
        uv_unref((uv_handle_t *)handles[i]);
    }
    /* A log line written after an ssh session went away must not kill us
     * (the default action of SIGPIPE) before the checkpoint is written. */
    signal(SIGPIPE, SIG_IGN);
}

/* conninfo in any form dburl.h reads (the command line has normalised it
 * already; a worker passes its runner's): "sqlite:PATH" or libpq's. */
static int open_database(sl_session *sess, uv_loop_t *loop, const char *conninfo, sl_err *err)
{
    sl_dburl url;
    if (sl_dburl_parse(conninfo, &url, err) != 0)
        return -1;
    int rc;
    if (url.dialect == SL_DIALECT_SQLITE) {
        rc = sl_lite_init(loop, &sess->lite, url.conninfo, err);
        sess->dialect = SL_DIALECT_SQLITE;
    } else {
        rc = sl_pg_init(loop, &sess->pg, url.conninfo, err);
    }
    sess->has_db = rc == 0;
    sl_dburl_free(&url);
    return rc;
}

int sl_session_init_from(sl_session *sess, const sl_session *from, sl_err *err)
{
    assert(sl_session_is(from, SL_DIALECT_PG) && "BUG: only a PostgreSQL session has more connections");
    if (sl_session_init(sess, from->loop, from->pg.conninfo, err) != 0)
        return -1;
    sess->pg.pooler = from->pg.pooler;
    sess->pg.pooled = from->pg.pooled;
    sess->writes = from->writes;
    return 0;
}

/* A duration the session takes from the environment (session.h,
 * sl_session_check_env). */
typedef struct env_duration {
    const char *name;
    int64_t min_ms, default_ms;
    const char *expected;
} env_duration;

static const env_duration connect_timeout_env = {"SLUICE_CONNECT_TIMEOUT", 1, 10000,
                                                 "a duration greater than zero such as 10s, 30s or 1m"};
static const env_duration reconnect_for_env = {"SLUICE_RECONNECT_FOR", 0, 120000,
                                               "a duration such as 30s, 2m or 1h (0s: one attempt)"};

/* d's value into *ms, its default when unset or empty: 0, or -1 with err
 * naming the variable, its value (made visible) and what was expected. */
static int env_duration_get(const env_duration *d, int64_t *ms, sl_err *err)
{
    const char *value = getenv(d->name);
    *ms = d->default_ms;
    if (!value || !*value || (sl_parse_duration(value, ms) == 0 && *ms >= d->min_ms))
        return 0;
    sl_buf shown = {0};
    sl_buf_add_visible(&shown, value, strnlen(value, 64), 1);
    sl_err_set(err, "%s=\"%s\": expected %s", d->name, shown.data, d->expected);
    sl_buf_free(&shown);
    return -1;
}

int sl_session_check_env(sl_err *err)
{
    const env_duration *all[] = {&connect_timeout_env, &reconnect_for_env};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *value = getenv(all[i]->name);
        int64_t ms;
        if (value && !*value)
            unsetenv(all[i]->name); /* what tests whether it is set sees it unset too */
        else if (env_duration_get(all[i], &ms, err) != 0)
            return -1;
    }
    return 0;
}

int sl_session_init(sl_session *sess, uv_loop_t *loop, const char *conninfo, sl_err *err)
{
    memset(sess, 0, sizeof *sess);
    sess->loop = loop;
    if (env_duration_get(&connect_timeout_env, &sess->connect_timeout_ms, err) != 0 ||
        env_duration_get(&reconnect_for_env, &sess->reconnect_for_ms, err) != 0)
        return -1;
    if (conninfo && open_database(sess, loop, conninfo, err) != 0)
        return -1;
    watch_signals(sess, loop);
    uv_timer_init(loop, &sess->sleep_timer);
    sess->sleep_timer.data = sess;
    return 0;
}

typedef struct conn_waiter {
    int done;
    int status;
    char *error;
} conn_waiter;

static void on_connect(sl_pg *pg, int status, const char *error, void *arg)
{
    (void)pg;
    conn_waiter *w = arg;
    w->done = 1;
    w->status = status;
    w->error = error ? sl_strdup(error) : NULL;
}

/* Key values travel as text between sessions: fix the output formats so
 * that a key printed by one session reads back identically in another.
 * standard_conforming_strings on (PostgreSQL's default) is how the job
 * file's scanner (jobs/scan.c) reads a string: with it off, set for a role
 * or a database, the server would take a backslash in '...' for an escape,
 * and a string the scanner saw end could swallow the :lo/:hi after it.
 * PgBouncer carries DateStyle, TimeZone, client_encoding,
 * standard_conforming_strings and application_name over to whichever server
 * it hands out (its "tracked" parameters), so these hold through a pooler
 * in transaction mode too. */
static const char *const setup_sql[] = {
    "SET DateStyle = 'ISO, YMD'",
    "SET standard_conforming_strings = on",
    "SET application_name = 'sluice'",
};

/* The settings no pooler carries over: on a connection of its own, set once;
 * pooled, in every transaction instead (the driver's prelude, pg.h).
 * A connection of its own also turns off idle_session_timeout (PostgreSQL
 * 14 on; none before): sluice's connections sit idle on purpose between
 * chunks held back by a window, a pause or max-rate, and a role's timeout
 * would end them one after the other (as pg_dump turns off the timeouts
 * that would end its session). A pooler's server connections are the
 * pooler's to keep: the prelude leaves them alone. */
static const char *const untracked_sql[] = {
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SELECT set_config('idle_session_timeout', '0', false) WHERE current_setting('idle_session_timeout', true) "
    "IS NOT NULL",
};
static const char prelude_sql[] =
    "SELECT set_config('intervalstyle', 'postgres', true), set_config('extra_float_digits', '3', true)";

/* Run the n statements of sql; with pid_check, also ask the server for its
 * backend's pid: libpq was told another one (PQbackendPID) when a pooler
 * stands between (PgBouncer makes one up for each client). */
static int run_setup(sl_session *sess, const char *const *sql, size_t n, int pid_check, sl_err *err)
{
    sl_query q[8];
    assert(n < 8 && "BUG: setup batch too long");
    for (size_t i = 0; i < n; i++)
        q[i] = (sl_query){sql[i], 0, NULL};
    if (pid_check)
        q[n] = (sl_query){"SELECT pg_backend_pid()", 0, NULL};
    sl_answer ans;
    if (sl_session_exec(sess, q, n + (pid_check != 0), &ans) != 0) {
        sl_err_set(err, "lost the connection to %s while setting up", sl_session_display(sess));
        return -1;
    }
    if (!ans.ok) {
        sl_err_set(err, "cannot prepare the session on %s: %s", sl_session_display(sess), ans.error);
        if (!ans.conn_lost)
            sl_session_disconnect(sess); /* leaves no half-open transaction behind */
        sl_answer_free(&ans);
        return -1;
    }
    const char *server_pid = pid_check ? sl_answer_val(&ans, n, 0, 0) : NULL;
    int told_pid = PQbackendPID(sess->pg.conn);
    if (server_pid && strtol(server_pid, NULL, 10) != told_pid) {
        char *why = sl_asprintf("connected through a pooler (libpq was told backend pid %d, the server's is %s)",
                                told_pid, server_pid);
        sl_pg_set_pooled(&sess->pg, why);
        free(why);
    }
    sl_answer_free(&ans);
    return 0;
}

/* The session's settings, and whether a pooler stands between (pg.h). */
static int setup_pg(sl_session *sess, sl_err *err)
{
    size_t ns = sizeof setup_sql / sizeof setup_sql[0], nu = sizeof untracked_sql / sizeof untracked_sql[0];
    sess->pg.prelude = prelude_sql;
    if (sess->pg.pooler == SL_POOLER_TRANSACTION)
        sl_pg_set_pooled(&sess->pg, NULL);
    if (sess->pg.pooler == SL_POOLER_SESSION) {
        const char *all[8];
        memcpy(all, setup_sql, sizeof setup_sql);
        memcpy(all + ns, untracked_sql, sizeof untracked_sql);
        return run_setup(sess, all, ns + nu, 0, err);
    }
    int auto_check = sess->pg.pooler == SL_POOLER_AUTO && !sess->pg.pooled;
    if (run_setup(sess, setup_sql, ns, auto_check, err) != 0)
        return -1;
    return sess->pg.pooled ? 0 : run_setup(sess, untracked_sql, nu, 0, err);
}

int sl_session_read_only(sl_session *sess, const char **why, sl_err *err)
{
    *why = NULL;
    if (!sl_session_is(sess, SL_DIALECT_PG))
        return 0;
    sl_answer ans;
    if (sl_session_exec1(sess, "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')::boolean",
                         0, NULL, &ans) != 0 ||
        !ans.ok) {
        sl_err_set(err, "cannot tell whether %s takes writes: %s", sl_session_display(sess),
                   ans.error ? ans.error : "not connected");
        sl_answer_free(&ans);
        return -1;
    }
    int ro = sl_answer_true(sl_answer_val(&ans, 0, 0, 0)) ? 1 : sl_answer_true(sl_answer_val(&ans, 0, 0, 1)) ? 2 : 0;
    sl_answer_free(&ans);
    *why = ro == 1   ? "it is a standby (in recovery)"
           : ro == 2 ? "default_transaction_read_only is on for this connection"
                     : NULL;
    return ro;
}

void sl_session_writer(sl_session *sess)
{
    sess->writes = 1;
}

const char *sl_session_display(const sl_session *sess)
{
    return sl_session_is(sess, SL_DIALECT_SQLITE) ? sess->lite.display
           : sl_session_is(sess, SL_DIALECT_PG)   ? sess->pg.display
                                                  : "(no database)";
}

void sl_session_set_timeouts(sl_session *sess, int64_t lock_ms, int64_t stmt_ms)
{
    if (sl_session_is(sess, SL_DIALECT_SQLITE))
        sl_lite_set_timeouts(&sess->lite, lock_ms, stmt_ms);
}

void sl_session_set_wait_commit(sl_session *sess, int wait)
{
    if (sl_session_is(sess, SL_DIALECT_SQLITE))
        sl_lite_set_wait_commit(&sess->lite, wait);
}

void sl_session_chunk_settings(sl_session *sess, int64_t lock_ms, int64_t stmt_ms, int wait_commit,
                               sl_chunk_settings *out)
{
    sl_session_set_timeouts(sess, lock_ms, stmt_ms);
    sl_session_set_wait_commit(sess, wait_commit);
    out->n = sl_session_is(sess, SL_DIALECT_SQLITE) ? 0 : 1; /* SQLite has no SET LOCAL */
    /* current_setting gives the role's value with its unit ("5s", "1min"), or "0" for none */
    snprintf(out->sql[0], sizeof out->sql[0],
             "SELECT set_config('lock_timeout', '%lld', true), set_config('statement_timeout', '%lld', true),"
             " set_config('idle_in_transaction_session_timeout', CASE WHEN"
             " current_setting('idle_in_transaction_session_timeout')::interval BETWEEN interval '1 ms' AND"
             " interval '%d ms' THEN current_setting('idle_in_transaction_session_timeout') ELSE '%d' END, true)%s",
             (long long)lock_ms, (long long)stmt_ms, SL_CHUNK_IDLE_MAX_MS, SL_CHUNK_IDLE_MAX_MS,
             wait_commit ? "" : ", set_config('synchronous_commit', 'off', true)");
}

void sl_session_add_key_elems(const sl_session *sess, sl_buf *b, const char *col, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (sl_session_is(sess, SL_DIALECT_SQLITE))
            sl_buf_printf(b, ", %s ->> %zu", col, i);
        else
            sl_buf_printf(b, ", %s[%zu]", col, i + 1);
    }
}

const char *sl_session_begin_sql(const sl_session *sess)
{
    return sl_session_is(sess, SL_DIALECT_SQLITE) ? "BEGIN IMMEDIATE" : "BEGIN";
}

int sl_session_connect(sl_session *sess, sl_err *err)
{
    if (sl_session_is(sess, SL_DIALECT_SQLITE))
        return sl_lite_open(&sess->lite, err);
    assert(sl_session_is(sess, SL_DIALECT_PG) && "BUG: connect without a database");
    if (sess->connecting) {
        while (sess->connecting)
            sl_fiber_wait(sess->loop);
        if (sess->pg.connected)
            return 0;
        sl_err_set(err, "cannot connect to %s", sess->pg.display);
        return -1;
    }
    if (sess->pg.connected)
        return 0;
    conn_waiter w = {0};
    if (sl_pg_connect(&sess->pg, sess->connect_timeout_ms, on_connect, &w) != 0) {
        sl_err_set(err, "cannot start connecting to %s", sess->pg.display);
        return -1;
    }
    sess->connecting = 1;
    while (!w.done)
        sl_fiber_wait(sess->loop);
    int rc = 0;
    if (w.status == SL_EREFUSED) {
        sl_err_set(err, "invalid database connection settings for %s: %s", sess->pg.display,
                   w.error ? w.error : "refused by libpq");
        sl_err_append(err, "hint: libpq refused them before connecting; they come from the database string (--db, "
                           "SLUICE_DB or DATABASE_URL) and, for what it leaves out, libpq's PG* variables");
        rc = SL_EREFUSED;
    } else if (w.status != 0) {
        sl_err_set(err, "cannot connect to %s: %s", sess->pg.display, w.error ? w.error : "unknown error");
        rc = -1;
    } else {
        rc = setup_pg(sess, err);
    }
    const char *why = NULL;
    if (rc == 0 && sess->writes && (rc = sl_session_read_only(sess, &why, err)) != 0) {
        if (rc > 0)
            sl_err_set(err, "%s takes no writes: %s", sl_session_display(sess), why);
        sl_session_disconnect(sess);
        rc = -1;
    }
    free(w.error);
    sess->connecting = 0;
    return rc;
}

static int exec_batch(sl_session *sess, const sl_query *queries, size_t n, int readonly, sl_answer *ans)
{
    memset(ans, 0, sizeof *ans);
    if (sl_session_is(sess, SL_DIALECT_SQLITE)) {
        int done = 0;
        if (sl_lite_send(&sess->lite, queries, n, ans, &done) != 0)
            return -1;
        while (!done)
            sl_fiber_wait(sess->loop);
        return 0;
    }
    if (!sl_session_is(sess, SL_DIALECT_PG) || !sess->pg.connected)
        return -1;
    waiter w = {ans, 0, readonly};
    if (sl_pg_send(&sess->pg, queries, n, on_reply, &w) != 0)
        return -1;
    while (!w.done)
        sl_fiber_wait(sess->loop);
    return 0;
}

int sl_session_exec(sl_session *sess, const sl_query *queries, size_t n, sl_answer *ans)
{
    return exec_batch(sess, queries, n, 0, ans);
}

int sl_session_send(sl_session *sess, const sl_query *queries, size_t n, sl_pending *p)
{
    memset(p, 0, sizeof *p);
    if (sl_session_is(sess, SL_DIALECT_SQLITE))
        return sl_lite_send(&sess->lite, queries, n, &p->ans, &p->done);
    if (!sl_session_is(sess, SL_DIALECT_PG) || !sess->pg.connected)
        return -1;
    return sl_pg_send(&sess->pg, queries, n, on_pending_reply, p);
}

int sl_session_send_next(sl_session *sess, const sl_query *queries, size_t n, sl_pending *p, int *taken)
{
    memset(p, 0, sizeof *p);
    if (!sl_session_is(sess, SL_DIALECT_SQLITE))
        return -1;
    return sl_lite_send_next(&sess->lite, queries, n, &p->ans, &p->done, taken);
}

void sl_session_cancel_next(sl_session *sess)
{
    if (sl_session_is(sess, SL_DIALECT_SQLITE))
        sl_lite_cancel_next(&sess->lite);
}

/* Keep results [from, from + n) of ans, as its only ones. */
static void keep_results(sl_answer *ans, size_t from, size_t n)
{
    sl_answer drop = {0};
    drop.results = sl_calloc(ans->nresults + 1, sizeof *drop.results);
    sl_result *kept = sl_calloc(n + 1, sizeof *kept);
    for (size_t i = 0; i < ans->nresults; i++) {
        if (i >= from && i < from + n)
            kept[i - from] = ans->results[i];
        else
            drop.results[drop.nresults++] = ans->results[i];
    }
    sl_answer_free(&drop);
    free(ans->results);
    ans->results = kept;
    ans->nresults = n;
    if (ans->failed_index >= 0) {
        int last = (int)n - 1;
        int at = ans->failed_index - (int)from;
        ans->failed_index = at < 0 ? 0 : at > last ? last : at;
    }
}

int sl_session_exec_readonly(sl_session *sess, const sl_query *queries, size_t n, sl_answer *ans)
{
    int lite = sl_session_is(sess, SL_DIALECT_SQLITE);
    sl_query *all = sl_calloc(n + 2, sizeof *all);
    all[0] = (sl_query){lite ? "PRAGMA query_only = 1" : "BEGIN READ ONLY", 0, NULL, 0};
    for (size_t i = 0; i < n; i++)
        all[1 + i] = queries[i];
    all[n + 1] = (sl_query){"ROLLBACK", 0, NULL, 0};
    /* SQLite's batch stops at a failure: query_only is reset on its own */
    int rc = exec_batch(sess, all, lite ? n + 1 : n + 2, 1, ans);
    free(all);
    if (rc != 0)
        return rc;
    sl_answer after;
    if (lite && sl_session_exec1(sess, "PRAGMA query_only = 0", 0, NULL, &after) == 0)
        sl_answer_free(&after);
    else if (!lite && !ans->ok && !ans->conn_lost && ans->failed_index >= 1 && ans->failed_index <= (int)n &&
             sl_session_exec1(sess, "ROLLBACK", 0, NULL, &after) == 0) /* the failed transaction's */
        sl_answer_free(&after);
    keep_results(ans, 1, n);
    return 0;
}

int sl_session_exec1(sl_session *sess, const char *sql, int nparams, const char *const *params, sl_answer *ans)
{
    sl_query q = {sql, nparams, params};
    return sl_session_exec(sess, &q, 1, ans);
}

static void on_sleep_done(uv_timer_t *t)
{
    int *done = t->data;
    *done = 1;
}

int sl_session_sleep(sl_session *sess, int64_t ms)
{
    if (sess->signals)
        return SL_STOPPED;
    if (ms <= 0)
        return 0;
    int done = 0;
    sess->sleep_timer.data = &done;
    /* Repeating: should it fire in the loop turn's timer phase (the loop's
     * clock was stale), the poll that follows still wakes within ms instead
     * of blocking until some other handle has news. */
    uv_update_time(sess->loop);
    uv_timer_start(&sess->sleep_timer, on_sleep_done, (uint64_t)ms, (uint64_t)ms);
    while (!done && !sess->signals)
        sl_fiber_wait(sess->loop);
    uv_timer_stop(&sess->sleep_timer);
    sess->sleep_timer.data = sess;
    return sess->signals ? SL_STOPPED : SL_OK;
}

void sl_session_turn(sl_session *sess, int64_t max_ms)
{
    int done = 0;
    sess->sleep_timer.data = &done;
    uint64_t ms = (uint64_t)(max_ms > 0 ? max_ms : 1);
    uv_update_time(sess->loop);
    uv_timer_start(&sess->sleep_timer, on_sleep_done, ms, ms); /* repeating: see sl_session_sleep */
    sl_fiber_wait(sess->loop);
    uv_timer_stop(&sess->sleep_timer);
    sess->sleep_timer.data = sess;
}

int sl_session_stopping(const sl_session *sess)
{
    return sess->signals > 0;
}

int sl_session_connected(const sl_session *sess)
{
    return sl_session_is(sess, SL_DIALECT_SQLITE)
               ? sess->lite.db != NULL
               : sl_session_is(sess, SL_DIALECT_PG) && sess->pg.connected && !sess->connecting;
}

void sl_session_disconnect(sl_session *sess)
{
    if (sl_session_is(sess, SL_DIALECT_PG))
        sl_pg_disconnect(&sess->pg);
    if (sl_session_is(sess, SL_DIALECT_SQLITE))
        sl_lite_close(&sess->lite); /* sqlite3_close rolls back an open transaction */
}

static void on_handle_closed(uv_handle_t *handle)
{
    sl_session *sess = handle->data;
    sess->open_handles--;
}

static void on_pg_closed(sl_pg *pg)
{
    sl_session *sess = pg->data;
    sess->open_handles--;
}

/* Close the session's own handles and wait for the loop to release them
 * (with other targets' handles still open on the loop, in a fiber). */
static void close_handles(sl_session *sess)
{
    sess->open_handles = 4;
    sess->sleep_timer.data = sess;
    uv_close((uv_handle_t *)&sess->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&sess->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&sess->sighup, on_handle_closed);
    uv_close((uv_handle_t *)&sess->sleep_timer, on_handle_closed);
    if (sl_session_is(sess, SL_DIALECT_PG)) {
        sess->open_handles++;
        sess->pg.data = sess;
        sl_pg_close(&sess->pg, on_pg_closed);
    }
    if (sl_session_is(sess, SL_DIALECT_SQLITE))
        sl_lite_stop(&sess->lite);
    while (sess->open_handles > 0 || (sl_session_is(sess, SL_DIALECT_SQLITE) && !sess->lite.stopped))
        sl_fiber_wait(sess->loop);
    if (sl_session_is(sess, SL_DIALECT_SQLITE))
        sl_lite_free(&sess->lite);
    if (sl_session_is(sess, SL_DIALECT_PG)) {
        free(sess->pg.conninfo);
        free(sess->pg.display);
        sess->pg.conninfo = sess->pg.display = NULL;
    }
    free(sess->dropped);
    sess->dropped = NULL;
}

void sl_session_close(sl_session *sess)
{
    close_handles(sess);
    /* one target: what else the command left on the loop (a control socket) is released too */
    if (!sl_fiber_current())
        uv_run(sess->loop, UV_RUN_DEFAULT);
    /* closing the watchers restored the default action: a second signal landing now, as the stopped
     * run exits, must not turn its exit 3 into a death by signal */
    if (sess->signals && !sess->quiet) {
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
    }
}

void sl_session_close_now(sl_session *sess)
{
    close_handles(sess);
}

int64_t sl_session_backoff_ms(int attempt)
{
    int64_t base = 200;
    for (int i = 1; i < attempt && base < 30000; i++)
        base *= 2;
    if (base > 30000)
        base = 30000;
    /* jitter in [base/2, base]: runners retrying together spread out */
    return base / 2 + (int64_t)(rand() % (int)(base / 2 + 1));
}

int sl_session_reconnect(sl_session *sess, const char *who, sl_err *err)
{
    int64_t start = sl_mono_ms();
    sl_err cerr = {0};
    for (int attempt = 1;; attempt++) {
        int64_t wait = sl_session_backoff_ms(attempt + 1);
        json_t *fields = json_pack("{sisI}", "attempt", attempt, "wait_ms", (json_int_t)wait);
        if (attempt == 1 && sess->dropped) {
            json_object_set_new(fields, "error", sl_json_str(sess->dropped));
            sl_log_event(SL_LOG_WARN, "reconnect", fields, "%s: connection dropped: %s; reconnecting in %lld ms", who,
                         sess->dropped, (long long)wait);
        } else if (attempt == 1) {
            sl_log_event(SL_LOG_WARN, "reconnect", fields, "%s: connection lost; reconnecting in %lld ms", who,
                         (long long)wait);
        } else {
            json_object_set_new(fields, "error", sl_json_str(cerr.msg));
            sl_log_event(SL_LOG_WARN, "reconnect", fields,
                         "%s: reconnecting failed: %s; trying again in %lld ms (attempt %d)", who, cerr.msg,
                         (long long)wait, attempt);
        }
        free(sess->dropped);
        sess->dropped = NULL;
        if (sl_session_sleep(sess, wait))
            return SL_STOPPED;
        if (sl_session_connect(sess, &cerr) == 0)
            break;
        if (sl_mono_ms() - start > sess->reconnect_for_ms) {
            char spent[32];
            sl_format_duration(sess->reconnect_for_ms, spent, sizeof spent);
            sl_err_set(err, "%s: gave up reconnecting after %s: %s", who, spent, cerr.msg);
            return -1;
        }
    }
    sl_log_event(SL_LOG_INFO, "reconnected", NULL, "%s: reconnected", who);
    return 0;
}

int sl_session_lock_job(sl_session *sess, const char *job, int64_t wait_ms, sl_err *err)
{
    assert(sl_session_is(sess, SL_DIALECT_SQLITE) && "BUG: a PostgreSQL job is locked by its lease (lease.h)");
    for (int64_t waited = 0;; waited += 100) {
        int rc = sl_lite_try_lock_job(&sess->lite, job, err);
        if (rc != SL_EREFUSED || waited >= wait_ms || sl_session_sleep(sess, 100))
            return rc;
    }
}

void sl_session_unlock_job(sl_session *sess, const char *job)
{
    if (sl_session_is(sess, SL_DIALECT_SQLITE))
        sl_lite_unlock_job(&sess->lite, job);
}
