/* run.h: one run of one job (up, down or stamp): its lock, its state in the database, reconnects, the journal.
 *
 * The target database holds each job's truth (schema.h): its state, the job
 * file it ran with, what it walks and where its walk ends, its chunks and
 * their undo records. The checkpoint file is the runner's journal: history,
 * events, per-chunk detail and the progress line, rebuilt from the database
 * whenever it is missing or behind, and bound to the database it was written
 * for. A job's state moves only here, in the database first:
 *
 *   pending ──up──▶ running ──walk ends──────────▶ done
 *                     │ ├──signal, ctl, window────▶ stopped ──up──▶ running
 *                     │ └──a chunk fails──────────▶ failed  ──up──▶ running
 *                     └──kill -9: stays running; its lease dies with it,
 *                        so status shows stopped and up resumes it
 *   applied (running, stopped, failed, done) ──down──▶ rolling_back ──▶ rolled_back ──up──▶ running
 *   any ──stamp done──▶ done (stamped)      any ──stamp pending──▶ pending (everything forgotten)
 *
 * What a job walks (table, key, where, undo columns), the job file's
 * checksum and the end of its walk are fixed when a run begins with no chunk
 * committed, and checked against the job file on every later run. */
#ifndef SLUICE_RUN_H
#define SLUICE_RUN_H

#include "sluice/checkpoints/ckpt.h"
#include "sluice/db/schema.h"
#include "sluice/db/session.h"
#include "sluice/engine/lease.h"
#include "sluice/jobs/job.h"

/* `down --on-conflict`: what to do with a row someone else changed after
 * the job wrote it. */
typedef enum sl_on_conflict {
    SL_CONFLICT_STOP,      /* change nothing in that chunk, report, exit 1 (default) */
    SL_CONFLICT_SKIP,      /* leave those rows as they are, restore the rest */
    SL_CONFLICT_OVERWRITE, /* restore them too */
} sl_on_conflict;

/* The engine's options (the command line fills them). */
typedef struct sl_run_opts {
    const char *ckpt_dir;         /* the checkpoint files */
    int allow_changed_statements; /* resume a job whose file changed after its first chunk (not what it walks) */
    int allow_no_index;           /* walk a key no btree index leads with */
    int allow_lost_undo;          /* go on without undo records the database no longer has */
    int no_wait;                  /* outside the job's windows, stop (exit 3) instead of waiting */
    int progress_tty;             /* draw a progress line */
    sl_on_conflict on_conflict;   /* down */
    const char *const *replicas;  /* --replica / SLUICE_REPLICAS: libpq strings of the target's replicas */
    size_t nreplicas;
    int allow_unmeasured_lag; /* max-replica-lag that cannot be measured: go on without it */
} sl_run_opts;

/* The job as the target database records it. Strings are owned. */
typedef struct sl_job_row {
    int exists;     /* sluice_jobs has a row for it */
    sl_state state; /* pending when there is no row */
    int stamped;    /* its state came from `stamp`, not a run */
    char *checksum; /* of the job file its chunks ran with; "" before the first */
    char *table;    /* what it walks, as fixed when its first run began; NULL before */
    char *key;      /* the key's columns, "id" or "tenant_id, id" */
    char *where;    /* NULL when none */
    char *undo;     /* "snapshot(a, b)", "snapshot(*)", or "" (down section or none) */
    char *walk_end; /* JSON array: the key's last value when it began; NULL if none (follow, or empty) */
    int follow;     /* end follow: it walks rows inserted past walk_end too */
    char *error;    /* why it failed, or NULL */
    int64_t started_at_ms, updated_at_ms;
    char *runner;    /* who holds it now ("sluice pid 12 on web-1"), NULL when nobody does */
    int64_t chunks;  /* committed chunks (rows set aside included) */
    int64_t rows;    /* rows their chunks walked */
    char *last_key;  /* JSON array: the :hi of the highest-numbered chunk, NULL if none */
    int64_t skipped; /* rows set aside by on-error skip */
    char *paused;    /* "by sluice ctl at ...": held until `ctl resume`, across runs; NULL when not */
} sl_job_row;

void sl_job_row_free(sl_job_row *row);

/* Read job's row and its progress from the database, changing nothing; a
 * database sluice never ran against gives a pending row. A running job
 * whose runner is gone (killed) reads as stopped. 0, or -1 with err. */
int sl_run_read_row(sl_session *sess, const char *job, sl_job_row *row, sl_err *err) SL_MUSTCHECK;

/* Runs of a journal by when they began (ascending), for chunks to count
 * under the run they committed in. */
typedef struct sl_run_spans {
    const int64_t *started_ms, *run_id;
    size_t n;
} sl_run_spans;

/* Copy chunks of job from sluice_progress into ckpt's journal (counted
 * under run_id, 0 for none; with spans, under the last run that began
 * before the chunk committed): those numbered nums[0..n-1]; or, with nums
 * NULL, the next n after *after, which is moved to the last one copied.
 * The number copied, or -1 with err. */
int sl_run_copy_chunks(sl_session *sess, sl_ckpt *ckpt, int64_t run_id, const sl_run_spans *spans, const char *job,
                       const int64_t *nums, size_t n, int64_t *after, sl_err *err) SL_MUSTCHECK;

/* Every run of every job sluice_runs records, oldest first (job, kind,
 * outcome: "running" for the one a live runner holds now, "interrupted" for
 * one whose runner died, times, rows, chunks, error), as a malloc'd array:
 * 0 (none when the database has no sluice_runs), or -1 with err. A run not
 * closed has the rows and chunks it committed so far, and one killed ends
 * at the last of them; a down's are SL_RUN_UNKNOWN, and a killed down has
 * no end (ended_at_ms 0): the database keeps nothing of what it undid. */
#define SL_RUN_UNKNOWN (-1)
int sl_run_history(sl_session *sess, sl_ckpt_run **runs, size_t *n, sl_err *err) SL_MUSTCHECK;

/* What last set the row's state, as history names runs: "up", "down" or
 * "stamp". */
const char *sl_run_row_kind(const sl_job_row *row);

/* What a job walks, as the live database resolves its job file. key is
 * the key's columns with what orders them, as sluice_jobs.key_cols records
 * them (sl_run_key_identity); key_names the columns alone, what a sluice
 * before this one recorded. */
typedef struct sl_run_identity {
    char *table, *key, *key_names, *where, *undo;
} sl_run_identity;

void sl_run_identity_free(sl_run_identity *id);

/* The key's columns, each with what orders it: on PostgreSQL the btree
 * operator family of its type and its collation ("k" pg_catalog.text_ops
 * COLLATE pg_catalog."C", "n" pg_catalog.integer_ops), on SQLite its
 * declared type. A resume under another order (ALTER COLUMN ... TYPE text,
 * or another COLLATE) is refused rather than read its old position as a
 * value of the new key; integer to bigint orders alike and goes on. Fills
 * id->key and id->key_names. 0, or -1 with err set. */
int sl_run_key_identity(sl_session *sess, const sl_keyspec *ks, sl_run_identity *id, sl_err *err) SL_MUSTCHECK;

/* Before a job's first chunk: whether it is a job that ran under another
 * name (its file renamed): a job in sluice_jobs, run or stamped (any state
 * but pending and rolled_back), whose job file had this very text, and
 * whose own file is no longer beside this one. 0 when not; SL_EREFUSED with
 * err naming both; -1 on error. */
int sl_run_check_renamed(sl_session *sess, const sl_job *job, sl_err *err) SL_MUSTCHECK;

/* Whether job may run where row says it stands (row->chunks > 0: it has
 * committed work). A changed table, key, where or undo columns is refused
 * always; a changed job file otherwise unless allow_changed_statements.
 * 0, or SL_EREFUSED with err saying what changed and how to start over. */
int sl_run_check_identity(const sl_job_row *row, const sl_job *job, const sl_run_identity *id, const sl_run_opts *opts,
                          sl_err *err) SL_MUSTCHECK;

/* Read-only: refuse job's checkpoint file (SL_EREFUSED, err naming both databases)
 * when it belongs to another database than sess's; 0 when it is this
 * database's, not bound yet, or missing; -1 on error. */
int sl_run_check_journal(sl_session *sess, const sl_run_opts *opts, const char *job, sl_err *err) SL_MUSTCHECK;

typedef enum sl_run_kind { SL_RUN_UP, SL_RUN_DOWN, SL_RUN_STAMP } sl_run_kind;

typedef struct sl_run {
    sl_session *sess; /* the run's own session: the lock's, and worker 0's */
    const sl_run_opts *opts;
    sl_job *job;
    sl_run_kind kind;
    sl_db_identity db; /* the database's identity, which the checkpoint is bound to */
    sl_job_row row;    /* the job's row, as read once the lock was taken */
    sl_lease lease;    /* PostgreSQL: the lease; SQLite: a lock file (lite.h) */
    int locked;
    sl_ckpt *ckpt;    /* the journal */
    int ckpt_fd;      /* its run lock */
    int64_t run_id;   /* the journal's record of this run */
    char *db_run;     /* its row in sluice_runs (the id's text), NULL when there is none */
    int64_t synced;   /* chunks the journal took from the database when it opened */
    int lost_commits; /* the database lost commits of this run (sl_run_check_kept): run the job again */
    int after_loss;   /* the run before it in this command lost commits (sl_run_open) */
    int checking;     /* a worker's sl_run_check_kept is under way (another waits for it) */
    sl_err err;
} sl_run;

/* Open a run of job: create what is missing of sluice's tables, take the
 * job's lock (refused when another runner holds it), read the job's row,
 * open (or create) the checkpoint file, refuse it when it belongs to another
 * database, and bring its chunks in line with the database's, saying so in
 * one line when it rebuilds them. after_loss: the command's run before this
 * one found that the database lost commits (sl_run_again), so chunks the
 * file holds and the database lacks are that loss (a worker whose answer
 * came in after the check recorded one), followed, not refused. 0;
 * SL_EREFUSED refused (exit 2, nothing changed); -1 failed (run->err).
 * sl_run_close in every case. */
int sl_run_open(sl_run *run, sl_session *sess, const sl_run_opts *opts, sl_job *job, sl_run_kind kind,
                int after_loss) SL_MUSTCHECK;

/* Begin the run: up moves the job to running, fixing id, the checksum and
 * the end of the walk (walk_end: the key's last value, ncols strings, or
 * NULL) when no chunk has committed yet; down moves it to rolling_back. The
 * journal records the run. 0, or -1 (run->err). */
int sl_run_begin(sl_run *run, const sl_run_identity *id, char *const *walk_end, size_t ncols) SL_MUSTCHECK;

/* End the run with exit code: up: done, stopped or failed (with run->err);
 * down: rolled_back, or rolling_back. Returns code, or SL_EXIT_FAILED when
 * the state cannot be written. */
int sl_run_finish(sl_run *run, int code) SL_MUSTCHECK;

/* The run's lease went to another runner: stop, saying why
 * (run->lease.why). */
int sl_run_lost(const sl_run *run);

/* A chunk was refused by its fence: another runner has the job. */
void sl_run_fenced(sl_run *run);

/* Reconnect sess (the run's session or a worker's) with backoff and jitter
 * for up to two minutes, then check that the job's lease is still the
 * run's (taking it back when it lapsed with no successor) and that the
 * database kept what this run committed (sl_run_check_kept). 0, SL_STOPPED
 * by a signal, -1 gave up, lost the job, or the database lost commits
 * (run->err). */
int sl_run_reconnect(sl_run *run, sl_session *sess) SL_MUSTCHECK;

/* PostgreSQL: whether the database, asked through sess, still has what this
 * run committed: every chunk the journal holds (up), none of the chunks it
 * rolled back (down). A failover to a standby that had not received the
 * primary's last commits (asynchronous replication) loses them, each
 * chunk's rows together with its sluice_progress row, while the run, which
 * saw them commit, would go on past them and call the job done. Asked after
 * every reconnect and before the run ends. The journal is read before the
 * database, so chunks committing meanwhile are not taken for lost. On a
 * loss the journal is brought in line with the database (the database
 * decides what is applied), run->lost_commits is set and -1 returned with
 * run->err: the run ends (failed, saying why) and the command runs the job
 * again from what the database has. 0 kept; -1 also when it cannot be
 * asked. SQLite: 0. */
int sl_run_check_kept(sl_run *run, sl_session *sess) SL_MUSTCHECK;

/* How many times up or down runs a job again in one command after the
 * database lost commits (sl_run_check_kept): each a failover, so more in a
 * row mean something else is wrong. */
#define SL_LOST_COMMITS_RERUNS 3

/* Whether a run that ended with *code runs again: it failed because the
 * database lost commits (run->lost_commits), reruns_left > 0 and no signal
 * came. If so the loss is said as a warning, "<err>; <again>" (err holds
 * the run's error), and sess is connected again before the run closes (so
 * that its lease is released, not left to lapse), reconnecting when the
 * failover took its connection; when that fails, 0 with *code and err
 * saying so. */
int sl_run_again(sl_run *run, sl_session *sess, int *code, int reruns_left, const char *again, sl_err *err);

/* How many times a chunk that lost its connection (and did not commit) is
 * sent again before it counts as failing: the job's retries, but at least
 * SL_LOST_RETRIES_MIN, so that one failover never fails a job, whatever
 * `retries` says, while a chunk that ends its connection every time (a
 * statement that ends its backend, a batch over the server's message limit)
 * is not sent forever. */
#define SL_LOST_RETRIES_MIN 2
int64_t sl_run_lost_retries(const sl_job *job);

/* Append an event (retry, split, throttle, ctl...) to the journal; a failure
 * to write it is logged, never fatal. */
void sl_run_event(sl_run *run, const char *kind, const char *message);
/* The same with data, a JSON object's text (ckpt.h). */
void sl_run_event_data(sl_run *run, const char *kind, const char *message, const char *data);

/* `stamp`: record state (done or pending) for the job, in the database and
 * the journal. pending forgets everything the database holds of the job:
 * chunks, split, undo records. 0, or -1 (run->err). */
int sl_run_stamp(sl_run *run, sl_state state) SL_MUSTCHECK;

/* Release the lock, close the journal. */
void sl_run_close(sl_run *run);

/* The chunk row parameters that prove the lease (PostgreSQL): the runner's
 * id, or NULL on SQLite (no fence needed: its lock is the kernel's). */
const char *sl_run_fence_id(const sl_run *run);

#endif
