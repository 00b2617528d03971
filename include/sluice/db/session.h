/* session.h: one database session (PostgreSQL or SQLite) on the event loop, awaited from straight-line command code.
 *
 * Commands are written as plain sequential C: sl_session_exec() sends a
 * batch (a pipeline segment on PostgreSQL, a batch for the connection's own thread on SQLite, see
 * lite.h) and runs the libuv loop until its reply arrives. The loop
 * keeps running while we wait, so signals, timers and the control
 * socket are served; nothing blocks it. Callbacks that fire during a wait only
 * set flags or drop the connection; they never wait themselves. */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <uv.h>

#include "sluice/base/util.h"
#include "sluice/db/lite.h"
#include "sluice/db/pg.h"
#include "sluice/jobs/keys.h"

typedef struct sl_session {
    uv_loop_t *loop;
    sl_dialect dialect; /* which of pg and lite is in use, once has_db */
    int has_db;         /* a database is open (init succeeded); 0 for status and history without one */
    sl_pg pg;
    sl_lite lite;
    uv_signal_t sigint, sigterm, sighup;
    uv_timer_t sleep_timer;
    int signals; /* SIGINT/SIGTERM/SIGHUP received so far */
    int64_t connect_timeout_ms;
    /* how long sl_session_reconnect tries: SLUICE_RECONNECT_FOR, else two minutes */
    int64_t reconnect_for_ms;
    int quiet;        /* a worker's extra session: signals are announced by the main one */
    int open_handles; /* while sl_session_close_now waits for them */
    int connecting;   /* a fiber is connecting it: others wait for that attempt */
    int writes;       /* a writer's (up, down, stamp), once the server took writes: see sl_session_writer */
    char *dropped;    /* why sluice dropped the connection itself, for sl_session_reconnect to say */
} sl_session;

/* Whether sess has a database open, and of that dialect. */
static inline int sl_session_is(const sl_session *sess, sl_dialect dialect)
{
    return sess->has_db && sess->dialect == dialect;
}

/* The durations sessions take from the environment, checked before
 * anything runs (the command line does): SLUICE_CONNECT_TIMEOUT (greater
 * than zero) and SLUICE_RECONNECT_FOR (0s: one attempt). An empty one counts
 * as unset, and is unset, for every reader. 0, or -1 with err naming the
 * variable, its value and what was expected. */
int sl_session_check_env(sl_err *err) SL_MUSTCHECK;

/* Prepare a session on loop: reads the environment's durations as
 * sl_session_check_env checks them (a value it refuses fails this too),
 * validates conninfo ("sqlite:PATH", else sl_pg_init) and installs the
 * SIGINT/SIGTERM/SIGHUP watchers (first signal:
 * sl_session_stopping() turns true; second: the connection is dropped, or
 * the SQLite statement interrupted, at once, rolling back the open chunk).
 * conninfo NULL means no database (status, history). */
int sl_session_init(sl_session *sess, uv_loop_t *loop, const char *conninfo, sl_err *err) SL_MUSTCHECK;

/* Another connection to from's database, as from connects (its pooler
 * setting, what it found out about it, whether it writes): a worker's. */
int sl_session_init_from(sl_session *sess, const sl_session *from, sl_err *err) SL_MUSTCHECK;

/* Connect (non-blocking, with a timeout; SLUICE_CONNECT_TIMEOUT overrides the
 * 10 s default) and prepare the session: the settings sluice relies on, and
 * on PostgreSQL whether a pooler stands between (pg.h, sl_pg_set_pooled).
 * sluice's own tables are schema.h's. 0; SL_EREFUSED when libpq refused
 * the connection settings themselves before trying (bad input: sl_pg_connect),
 * -1 on any other failure; err says what failed. Fibers sharing a
 * session share the attempt: one already connected (or being connected by
 * another fiber) is not connected twice; the others wait for its outcome. */
int sl_session_connect(sl_session *sess, sl_err *err) SL_MUSTCHECK;

/* Whether the PostgreSQL server takes no writes on this connection: 1 it is
 * a standby (in recovery), 2 default_transaction_read_only is on (why says
 * which, in words), 0 it takes them (and always on SQLite), -1 it cannot be
 * asked (err). */
int sl_session_read_only(sl_session *sess, const char **why, sl_err *err) SL_MUSTCHECK;

/* Mark sess a writer's, once the server was found to take writes: from then
 * on a server that stops taking them under it (a failover that left the
 * address on the old primary, now a standby; default_transaction_read_only
 * turned on) is a lost connection, not the job's error. A write refused as
 * read-only (SQLSTATE 25006) outside sl_session_exec_readonly drops the
 * connection and answers conn_lost; connecting again (sl_session_connect,
 * so sl_session_reconnect) fails while the server still takes no writes,
 * so the reconnect's backoff waits, within its two minutes, for one that
 * does. Worker sessions made from it (sl_session_init_from) are too. */
void sl_session_writer(sl_session *sess);

/* "user@host:port/dbname" or "sqlite:PATH": safe to print. */
const char *sl_session_display(const sl_session *sess);

/* The job's lock-timeout and statement-timeout. On PostgreSQL they are SET
 * LOCAL inside each chunk's transaction (so this does nothing); on SQLite
 * they are the busy timeout and a per-statement deadline. */
void sl_session_set_timeouts(sl_session *sess, int64_t lock_ms, int64_t stmt_ms);

/* SQLite: whether sess's commits wait for the disk (sl_lite_set_wait_commit),
 * from its next batch on. PostgreSQL: nothing (each chunk says it in its
 * transaction: sl_session_chunk_settings; everything else waits). */
void sl_session_set_wait_commit(sl_session *sess, int wait);

/* The longest a chunk's transaction may sit waiting on sluice (PostgreSQL's
 * idle_in_transaction_session_timeout, unless the role's is shorter): a
 * runner held up mid-chunk (SIGSTOP, a frozen VM, a network partition)
 * loses that transaction, and the row locks it holds, before its lease
 * can expire and a successor take the job over (lease.h checks the order). */
#define SL_CHUNK_IDLE_MAX_MS 15000

/* The statement that gives one chunk its timeouts, sent right after BEGIN. */
typedef struct sl_chunk_settings {
    size_t n;         /* 1 on PostgreSQL, 0 on SQLite */
    char sql[1][448]; /* set_config(..., true), as SET LOCAL: lock, statement and idle-in-transaction timeouts,
                       * and synchronous_commit */
} sl_chunk_settings;

/* Fill out for the job's timeouts: on PostgreSQL one statement setting
 * them, and SL_CHUNK_IDLE_MAX_MS, for the chunk's transaction only, and
 * unless wait_commit, synchronous_commit off (the chunk's COMMIT does not
 * wait for the disk: a crash of the server's machine may lose it, whole,
 * with its sluice_progress row, which sl_run_check_kept and a run's start
 * find); on SQLite none, as they are applied to the session instead
 * (sl_session_set_timeouts, sl_session_set_wait_commit) until the run ends
 * (sl_run_finish, whose state waits). */
void sl_session_chunk_settings(sl_session *sess, int64_t lock_ms, int64_t stmt_ms, int wait_commit,
                               sl_chunk_settings *out);

/* Append ", COL[1], ..., COL[n]" (PostgreSQL's text[]) or ", COL ->> 0, ...,
 * COL ->> n-1" (SQLite's JSON array): the n key columns kept in
 * sluice_progress's (or sluice_ranges's) COL. */
void sl_session_add_key_elems(const sl_session *sess, sl_buf *b, const char *col, size_t n);

/* "BEGIN", or on SQLite "BEGIN IMMEDIATE": the write lock up front, so a
 * chunk waits for it (up to lock-timeout) before doing any work rather than
 * failing half-way when it first writes. */
const char *sl_session_begin_sql(const sl_session *sess);

/* Send n queries as one pipeline segment and wait for the reply. Returns 0
 * when an answer (success or SQL error or lost connection) is in *ans, which
 * the caller frees; -1 when not connected. */
int sl_session_exec(sl_session *sess, const sl_query *queries, size_t n, sl_answer *ans) SL_MUSTCHECK;

/* A batch sent without waiting: done turns 1 (during a later turn of the
 * loop) once ans holds its answer, which the caller then frees. */
typedef struct sl_pending {
    sl_answer ans;
    int done;
    /* PostgreSQL: when set (after sl_session_send returned), called as soon
     * as ans is in, even while another wait turns the loop; it may send on
     * the same session again (sl_session_send clears both fields). */
    void (*on_done)(struct sl_pending *p);
    void *data;
} sl_pending;

/* Send n queries as one batch and return at once; p must stay in place
 * until p->done. 0 sent; -1 when not connected (p->done stays 0). For
 * several connections with a batch in flight each (workers). */
int sl_session_send(sl_session *sess, const sl_query *queries, size_t n, sl_pending *p) SL_MUSTCHECK;

/* SQLite: queue a batch to follow the one sent last on sess without a turn
 * of the loop between, as lite.h's sl_lite_send_next: it runs only if that
 * one succeeds with a row in its last result, whose values parameters
 * pointing at sl_lite_carried take; *taken says whether it ran by the time
 * the batch before is done, and p->done turns 1 either way. -1 (nothing
 * queued) on PostgreSQL, or when the batch before was already seen done. */
int sl_session_send_next(sl_session *sess, const sl_query *queries, size_t n, sl_pending *p, int *taken) SL_MUSTCHECK;
/* Withdraw the queued follow-on unless it started (a signal does too). */
void sl_session_cancel_next(sl_session *sess);
/* Like sl_session_exec, for queries a job file wrote to look, not to touch
 * (requires, verify, throttle-query): they run so that they can change
 * nothing. On PostgreSQL in a READ ONLY transaction that is rolled back
 * after them (a write fails: "cannot execute DELETE in a read-only
 * transaction"); on SQLite with PRAGMA query_only set around them (a write
 * fails: "attempt to write a readonly database"). The answer holds their
 * results alone, failed_index counted among them. */
int sl_session_exec_readonly(sl_session *sess, const sl_query *queries, size_t n, sl_answer *ans) SL_MUSTCHECK;

/* One query, no parameters or a few, and wait. */
int sl_session_exec1(sl_session *sess, const char *sql, int nparams, const char *const *params,
                     sl_answer *ans) SL_MUSTCHECK;

/* Sleep ms on the loop; returns early (1) when a stop was requested, else 0. */
int sl_session_sleep(sl_session *sess, int64_t ms) SL_MUSTCHECK;

/* Run the loop until something happens (a reply, a signal, a control
 * request, a timer), at most max_ms. */
void sl_session_turn(sl_session *sess, int64_t max_ms);

/* A stop was requested (a signal). */
int sl_session_stopping(const sl_session *sess);

int sl_session_connected(const sl_session *sess);

/* Drop the connection (the server rolls back an open transaction). */
void sl_session_disconnect(sl_session *sess);

/* Close every handle and run the loop until they are released. */
void sl_session_close(sl_session *sess);

/* Close a PostgreSQL session's handles and run the loop only until they
 * are released, while other handles (the run's own session, the control
 * socket) stay open: for a worker's extra session. */
void sl_session_close_now(sl_session *sess);

/* Backoff before retry attempt 1, 2, ...: 100-200 ms doubling up to 30 s,
 * with jitter so that runners retrying together spread out. */
int64_t sl_session_backoff_ms(int attempt);

/* After a lost connection: reconnect with backoff and jitter for up to two
 * minutes (SLUICE_RECONNECT_FOR, a duration, changes it), logging each attempt under `who`. 0 reconnected, SL_STOPPED
 * by a signal, -1 gave up (err). */
int sl_session_reconnect(sl_session *sess, const char *who, sl_err *err) SL_MUSTCHECK;

/* One runner per job on a SQLite target: the job's lock file (lite.h),
 * held by this process until it ends or unlocks; it retries for up to
 * wait_ms. 0 taken; SL_EREFUSED held by another process (err names its pid); -1
 * error. (A PostgreSQL job is locked by its lease, lease.h.) */
int sl_session_lock_job(sl_session *sess, const char *job, int64_t wait_ms, sl_err *err) SL_MUSTCHECK;
void sl_session_unlock_job(sl_session *sess, const char *job);

#endif
