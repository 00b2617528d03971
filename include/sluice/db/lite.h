/* lite.h: a SQLite target database, its synchronous sqlite3 calls run on a thread of its own.
 *
 * The same batches the PostgreSQL driver sends as one pipeline segment run
 * here one statement after another on the connection's worker thread (which
 * wakes the loop with a uv_async_t when a batch is done), so the loop stays free for signals, timers, the control
 * socket and the progress line while a chunk runs. A second batch may be queued behind the one running, to run the
 * moment it ends, without waking the loop between (sl_lite_send_next). A batch stops at its first error, like a
 * pipeline segment: the later
 * queries are not run and their results stay zeroed, and an open transaction is rolled back at once (PostgreSQL would
 * hold it aborted until ROLLBACK; a ROLLBACK sent after that fails harmlessly).
 *
 * The connection is opened read-write, never created: a mistyped path is an
 * error, not a new empty database. sluice leaves the file's journal mode as
 * the application set it (WAL is what lets readers run during a chunk), and
 * commits with synchronous=FULL, or NORMAL in WAL mode when asked
 * (sl_lite_set_wait_commit): a power loss then may lose the last chunks,
 * each whole with its sluice_progress row. Lock waits (SQLITE_BUSY) wait up to the job's
 * lock-timeout, then fail as PostgreSQL's lock_not_available does, which the
 * runner retries. A statement whose parameters are not exactly the values
 * given ($1..$n, each used) fails with 08P01, as PostgreSQL's Bind does. */
#ifndef SLUICE_LITE_H
#define SLUICE_LITE_H

#include <stdatomic.h>
#include <uv.h>

#include "sluice/base/util.h"
#include "sluice/db/answer.h"
#include "sluice/jobs/keys.h"

typedef struct sqlite3 sqlite3;
struct sl_lite_stmt;

/* The batch handed to the worker thread. */
typedef struct sl_lite_batch {
    const sl_query *queries;
    size_t n;
    sl_answer *ans;
    int *done;
} sl_lite_batch;

typedef struct sl_lite {
    uv_loop_t *loop;
    char *path;    /* the database file */
    char *display; /* "sqlite:PATH" */
    sqlite3 *db;   /* NULL until opened */
    int journal_wal;
    /* set on the loop thread (ctl may change them mid-chunk), applied by
     * the pool thread when the next batch starts */
    _Atomic int64_t busy_timeout_ms;
    _Atomic int64_t stmt_timeout_ms; /* 0: none */
    _Atomic int wait_commit;         /* sl_lite_set_wait_commit */
    int64_t busy_applied_ms;
    int sync_full;              /* synchronous is FULL (else NORMAL) */
    int64_t deadline_ms;        /* of the statement running on the pool, 0: none */
    int timed_out;              /* the last statement hit stmt_timeout_ms */
    char bind_error[160];       /* why the last statement's values did not fit its parameters, "" if they did */
    int64_t batch_started_ms;   /* sluice_elapsed_ms() counts from here */
    struct sl_lite_stmt *cache; /* prepared statements kept for reuse */
    size_t ncache;
    int lock_fd;                 /* the job lock file, -1 when none is held */
    struct sl_lite_ahead *ahead; /* a query run ahead (sl_lite_ahead_start), NULL when none */
    /* the worker thread, while open */
    uv_thread_t thread;
    int thread_running;
    uv_mutex_t mu;
    uv_cond_t cv;
    _Atomic int quit;
    /* under mu: */
    int running;         /* batch is queued or running on the worker thread */
    int has_next;        /* next waits to follow it (sl_lite_send_next) */
    sl_lite_batch batch; /* the batch queued or running */
    sl_lite_batch next;  /* the follow-on */
    int *next_taken;     /* where to say whether next ran */
    int *finished[4];    /* done flags the loop sets (on_wake): a batch's, and a follow-on's that did not run */
    int nfinished;
    int in_flight;                        /* batches sent whose done flag the loop has not set yet (loop thread only) */
    char *carry[2 * SL_MAX_KEY_COLS + 1]; /* the row a follow-on takes its carried values from */
    size_t ncarry;
    uv_async_t wake; /* the worker tells the loop a batch is done */
    int stopped;     /* sl_lite_stop's close of wake is done */
} sl_lite;

/* Prepare lite for "sqlite:PATH" on loop (its async handle, unreferenced) (url starts with "sqlite:"). Fails, naming
 * the value, when PATH is empty or no such file exists (bad usage: sluice
 * never creates a database). Opens nothing. */
int sl_lite_init(uv_loop_t *loop, sl_lite *lite, const char *url, sl_err *err) SL_MUSTCHECK;

/* Open the database (it must exist), set the busy timeout and
 * synchronous=FULL, register sluice_hash() and sluice_elapsed_ms(), and
 * start the worker thread. */
int sl_lite_open(sl_lite *lite, sl_err *err) SL_MUSTCHECK;

/* Lock wait for each statement (busy timeout) and the longest a statement may
 * run before it is interrupted (0: no limit). Only between batches. */
void sl_lite_set_timeouts(sl_lite *lite, int64_t lock_ms, int64_t stmt_ms);

/* Whether commits wait for the disk: synchronous=FULL (the default), or, in
 * WAL mode, NORMAL, where a power loss or a crash of the machine may lose
 * the last transactions, each whole (SQLite's WAL never tears one), and a
 * crash of the process loses none. A file in another journal mode keeps
 * FULL, where NORMAL could corrupt it. Applied when the next batch starts,
 * outside a transaction; a FULL commit makes the NORMAL ones before it
 * durable too. */
void sl_lite_set_wait_commit(sl_lite *lite, int wait);

/* Run n queries on the worker thread, filling *ans (see answer.h); *done turns
 * 1 on the loop thread when they finished. queries and their params must
 * stay valid until then. Returns non-zero (nothing queued) when not open. */
int sl_lite_send(sl_lite *lite, const sl_query *queries, size_t n, sl_answer *ans, int *done) SL_MUSTCHECK;

/* Values a follow-on carries over from the batch before it: a parameter
 * pointing at sl_lite_carried[k] is bound to column k of the first row of
 * that batch's last result. */
extern const char sl_lite_carried[2 * SL_MAX_KEY_COLS + 1];

/* Queue n queries to run right after the batch sent last (still running, or
 * done and not yet seen by the loop), with no turn of the loop between: one
 * chunk follows another without waiting for the loop. They run only if that
 * batch succeeded and its last result has a row, whose values the
 * parameters pointing at sl_lite_carried take; *taken says (before the
 * earlier batch's done turns 1) whether they ran. When they do not run,
 * *done is 1 by the time the earlier batch's is, and ans is left empty. At
 * most one follow-on at a time. Returns non-zero (nothing queued) when not
 * open, or when no batch is in flight whose done the loop has yet to see. */
int sl_lite_send_next(sl_lite *lite, const sl_query *queries, size_t n, sl_answer *ans, int *done,
                      int *taken) SL_MUSTCHECK;
/* Withdraw a queued follow-on that has not started (a stop, a pause): it
 * will not run (*taken 0, *done 1 at once). Loop thread. */
void sl_lite_cancel_next(sl_lite *lite);

/* Make the running statement fail with SQLITE_INTERRUPT (any thread). */
void sl_lite_interrupt(sl_lite *lite);

/* Run sql, a query of one integer, ahead on a second, read-only connection
 * to the file, on a thread of its own, while this one goes on (sluice's
 * tables made, the checkpoint file): sl_lite_ahead_take waits for its
 * answer. Only on a file in WAL mode, where a reader holds up no writer;
 * otherwise, or when its thread cannot start, nothing runs. Its answer
 * comes from a snapshot of the file taken when it starts. Loop thread. */
void sl_lite_ahead_start(sl_lite *lite, const char *sql);
/* Whether the query started ahead still runs (waiting for it, the loop
 * should keep turning: sl_lite_ahead_take would block it). */
int sl_lite_ahead_running(const sl_lite *lite);
/* The answer of the query started ahead: 0 with *value when it was sql and
 * it answered; -1 when none ran, it failed, or it was another query (run
 * sql here instead). It is over either way; it waits for its thread. */
int sl_lite_ahead_take(sl_lite *lite, const char *sql, int64_t *value) SL_MUSTCHECK;
/* Interrupt the query run ahead, if any, and wait for its thread (also
 * done by sl_lite_close). */
void sl_lite_ahead_drop(sl_lite *lite);

/* One runner per job and database: an fcntl lock on a byte of PATH-sluice-lock
 * picked by the job's name; the kernel drops it when the process dies. 0
 * taken; SL_EREFUSED held by another process (err names its pid); -1 error. */
int sl_lite_try_lock_job(sl_lite *lite, const char *job, sl_err *err) SL_MUSTCHECK;
void sl_lite_unlock_job(sl_lite *lite, const char *job);
/* 1 when another process holds job's lock now (changes nothing). */
int sl_lite_job_locked(sl_lite *lite, const char *job);

/* Stop the worker thread and close the database (prepared statements
 * first). Not while a batch runs. lite may be opened again. */
void sl_lite_close(sl_lite *lite);
/* Close, and close the async handle: lite->stopped turns 1 once the loop released it. */
void sl_lite_stop(sl_lite *lite);
/* After sl_lite_stop and the loop run: free what init allocated. */
void sl_lite_free(sl_lite *lite);

#endif
