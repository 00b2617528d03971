/* lease.h: one runner per job on PostgreSQL, through poolers too: a lease row in sluice_jobs, renewed while it lives.
 *
 * Session-level advisory locks do not survive a pooler in transaction mode
 * (the next transaction may run on another server connection, and the lock
 * stays with the first one after sluice exits). A lease needs no session:
 * the job's row in sluice_jobs names the runner holding it and until when;
 * the runner renews it every few seconds on a connection of its own and
 * clears it when it ends. A runner killed with kill -9 holds nothing: its
 * lease is taken over at once by a runner on the same machine (which can see
 * that the process is gone), and by any runner once it expires.
 *
 * The lease alone cannot stop a stalled runner from committing a chunk
 * after another took over, so every chunk fences itself: its row in
 * sluice_progress is written only while sluice_jobs still names its runner,
 * holding that row FOR KEY SHARE until it commits; a takeover locks the row
 * FOR UPDATE first, so it waits for chunks in flight and every later chunk
 * of the old runner fails (sl_lease_fence_sql). A repeatable-read chunk
 * (a snapshot's, sl_schema_chunk_begin) reads the row as it was when the
 * chunk began, so there the takeover's change of runner must itself
 * conflict with the lock: a key update (runner is in a unique index), or
 * the lock FOR SHARE. */
#ifndef SLUICE_LEASE_H
#define SLUICE_LEASE_H

#include <uv.h>

#include "sluice/db/session.h"
#include "sluice/services/ctl.h"

/* How long a lease lasts unrenewed, and how often it is renewed. */
#define SL_LEASE_TTL_MS   30000
#define SL_LEASE_RENEW_MS 5000
_Static_assert(SL_CHUNK_IDLE_MAX_MS < SL_LEASE_TTL_MS - SL_LEASE_RENEW_MS,
               "a chunk held up must lose its transaction before its runner's lease can be taken over");

/* This process as a runner: a random id, and where it runs. */
typedef struct sl_runner {
    char id[33];    /* random, 32 hex digits */
    char host[160]; /* hostname, boot id and pid namespace: a process here can check pid and start */
    int pid;
    long long start; /* the process's start time (clock ticks after boot) */
    char desc[200];  /* "sluice pid 123 on web-1" */
} sl_runner;

/* This process (made once). */
const sl_runner *sl_runner_self(void);

/* 1 when a runner recorded as (host, pid, start) is certainly gone (same
 * machine, and no such process or only its zombie), else 0. */
int sl_runner_gone(const char *host, int pid, long long start);

/* 1 when a lease's runner id is one of this process's (any of its leases). */
int sl_runner_is_self(const char *runner);

/* The refusal of a job another runner holds, into err: desc names it ("sluice
 * pid 12 on web-1"); self, it is this very process (another target of its
 * fleet run naming the same database); left_ms, how long its lease runs
 * (-1: no lease, SQLite's lock). */
void sl_runner_refusal(const char *job, const char *desc, int self, int64_t left_ms, sl_err *err);

typedef struct sl_lease {
    uv_loop_t *loop;
    char *job;
    /* the runner id this lease is held under: the process's id and a number
     * of its own, so that two targets of one fleet run naming one database
     * are two runners (the second refused), not one */
    char id[48];
    char *conninfo;
    int held; /* taken and not released */
    /* the keeper: its own connection renewing the lease every SL_LEASE_RENEW_MS */
    sl_pg keeper;
    int has_keeper, connecting, renewing, closes;
    uv_timer_t timer;
    int has_timer;
    uv_timer_t release_timer; /* bounds a release on the keeper's connection */
    int64_t renewed_at;       /* mono ms of the last renewal */
    int64_t renew_sent_at;    /* mono ms the last renewal was sent */
    /* `sluice ctl` through the database: requests in sluice_ctl for this lease, answered by the handler */
    sl_ctl_handler ctl_handler;
    void *ctl_arg;
    const void *ctl_tag;
    int ctl_polling, ctl_off;
    int lost; /* another runner took the job over */
    char why[512];
} sl_lease;

/* Take job's lease on sess, creating the job's row (state pending) when it
 * has none. A lease held by a live runner is refused (SL_EREFUSED, err names it and
 * when the lease ends); one whose runner stopped renewing it is waited for
 * (at most until it expires); one of a process gone from this machine is
 * taken at once. 0 taken, SL_EREFUSED refused, SL_STOPPED a signal came while waiting (err says so), -1 error. */
int sl_lease_take(sl_lease *lease, sl_session *sess, const char *job, sl_err *err) SL_MUSTCHECK;

/* Keep the lease renewed in the background until sl_lease_release. */
void sl_lease_start(sl_lease *lease, const sl_session *sess);

/* Answer `sluice ctl` requests made through the database (sluice_ctl rows
 * naming this lease) with handler(arg), looked for every SL_CTL_DB_POLL_MS
 * on the keeper's connection while the lease is held; NULL stops. The
 * handler runs on the loop as the control socket's does (ctl.h). */
void sl_lease_set_ctl(sl_lease *lease, sl_ctl_handler handler, void *arg);

/* The lease went to another runner: stop (lease->why says so). */
int sl_lease_lost(const sl_lease *lease);

/* After sess reconnected: 0 when the lease is still ours (taken back if it
 * lapsed and nobody took it), SL_EREFUSED when another runner has it, -1 error. */
int sl_lease_check(sl_lease *lease, sl_session *sess, sl_err *err) SL_MUSTCHECK;

/* Stop renewing, clear the lease (on sess when it is connected, else it
 * expires), and release the keeper's handles. */
void sl_lease_release(sl_lease *lease, sl_session *sess);

/* SQL for a chunk's sluice_progress row: the chunk number $n (as bigint)
 * while the job's row names runner $r and the chunk's place in its key range
 * is still there: chunk $p, the one before it in the range, is still in
 * sluice_progress, or, for a range's first chunk ($p NULL), its range $g is
 * still in sluice_ranges (range 0, the whole key of a job with no split,
 * needs nothing). Else NULL, which the NOT NULL chunk_no refuses (SQLSTATE
 * 23502 on that statement), failing the chunk: "(SELECT $n::bigint FROM
 * sluice_jobs WHERE job = $j AND runner = $r AND CASE WHEN $p::bigint IS NOT
 * NULL THEN EXISTS (...) ELSE ... END FOR KEY SHARE)", with lock in place
 * of FOR KEY SHARE. The caller tells a lost lease apart from a database
 * that lost commits (sl_run_check_kept, and the split). malloc'd. */
char *sl_lease_fence_sql(int job_param, int chunk_param, int runner_param, int prev_param, int range_param,
                         const char *lock);

#endif
