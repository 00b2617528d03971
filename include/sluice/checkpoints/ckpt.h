/* ckpt.h: the checkpoint store: one SQLite file per job holding its state, chunks, runs and events. */
#ifndef SLUICE_CKPT_H
#define SLUICE_CKPT_H

#include "sluice/base/util.h"

/* The states a job can be in, as `status` shows them (README "Commands"). */
typedef enum sl_state {
    SL_STATE_PENDING,
    SL_STATE_RUNNING,
    SL_STATE_STOPPED,
    SL_STATE_FAILED,
    SL_STATE_DONE,
    SL_STATE_ROLLING_BACK,
    SL_STATE_ROLLED_BACK,
} sl_state;

const char *sl_state_name(sl_state state);
int sl_state_parse(const char *name, sl_state *out) SL_MUSTCHECK;

typedef struct sl_ckpt sl_ckpt;

/* The job's summary row. Strings are owned; release with sl_ckpt_job_free. */
typedef struct sl_ckpt_job {
    char *job;
    sl_state state;
    char checksum[17];     /* checksum of the job file the first chunk ran with ("" if none yet) */
    int64_t rows;          /* rows walked by committed chunks */
    int64_t affected;      /* rows the up statements reported as changed */
    int64_t chunks;        /* committed chunks */
    char *last_key;        /* JSON array of strings: the last committed chunk's :hi; NULL if none */
    char *error;           /* last error, NULL if none */
    char *target;          /* the database it runs against, without password */
    int64_t batch;         /* current batch size */
    int64_t started_at_ms; /* first run's start, 0 if never */
    int64_t updated_at_ms; /* last change, 0 if never */
} sl_ckpt_job;

void sl_ckpt_job_free(sl_ckpt_job *job);

/* One committed chunk. */
typedef struct sl_ckpt_chunk {
    int64_t chunk_no; /* 1, 2, ... in commit order */
    const char *lo;   /* JSON array of strings */
    const char *hi;   /* JSON array of strings */
    int64_t rows;
    int64_t affected; /* negative when unknown (not added to the job's total) */
    int64_t duration_ms;
    int64_t attempts;  /* 1 when it committed on the first try */
    const char *error; /* last error of a failed attempt, or NULL */
    int64_t committed_at_ms;
    int skipped;    /* on-error skip: a single row set aside, its statements not applied; error says why */
    int64_t batch;  /* the batch in force when it was sent (0: not recorded) */
    int64_t worker; /* the worker that ran it (0 the first) */
} sl_ckpt_chunk;

/* One run (an `up`, a `down` or a `stamp`), for `history`. */
typedef struct sl_ckpt_run {
    int64_t id;
    char *job;
    char *kind;    /* "up", "down", "stamp" */
    char *outcome; /* "running", "done", "stopped", "failed", or the stamped state */
    int64_t started_at_ms;
    int64_t ended_at_ms; /* 0 while running */
    int64_t rows;
    int64_t chunks;
    char *error;
} sl_ckpt_run;

void sl_ckpt_run_free(sl_ckpt_run *run);

/* "<dir>/<job>.sluice" (malloc'd). */
char *sl_ckpt_path(const char *dir, const char *job);

/* sl_ckpt_open without create: there is no such file. */
#define SL_CKPT_MISSING SL_EREFUSED

/* Open the checkpoint file at path. With create, a missing file (and missing
 * dir) is created with the job's name; without it, a missing file is an
 * error (SL_CKPT_MISSING, err says so: callers treat it as "pending"). A
 * file that is not a sluice checkpoint, is truncated or corrupt, has a
 * newer schema or a job state sluice does not know, and a path that is
 * missing because a symbolic link on the way (the file's, or its
 * directory's) points nowhere, with create too, are errors that name the
 * path and say what is wrong (SL_EFAIL). Enables WAL and synchronous=FULL,
 * and a busy timeout. */
int sl_ckpt_open(const char *path, const char *job, int create, sl_ckpt **out, sl_err *err) SL_MUSTCHECK;

/* Whether a checkpoint file could be created at path (its directory made,
 * a file created there and removed), before anything is written elsewhere:
 * 0, or -1 with err naming the path and why (permission, name too long, a
 * symbolic link on the way that points nowhere). */
int sl_ckpt_can_create(const char *path, sl_err *err) SL_MUSTCHECK;
void sl_ckpt_close(sl_ckpt *ckpt);
const char *sl_ckpt_file(const sl_ckpt *ckpt);

/* Read the summary row. */
int sl_ckpt_get_job(sl_ckpt *ckpt, sl_ckpt_job *out, sl_err *err) SL_MUSTCHECK;

/* Start a run: records it in runs, sets state (running / rolling_back),
 * clears error, sets started_at if unset, and records target and, when not
 * NULL, the job file's checksum. A run still marked running is closed as
 * interrupted (its runner died: the caller holds the run lock). */
int sl_ckpt_begin_run(sl_ckpt *ckpt, const char *kind, sl_state state, const char *checksum, const char *target,
                      int64_t *run_id, sl_err *err) SL_MUSTCHECK;

/* Record a committed chunk and advance the summary (rows, affected, chunks,
 * last_key, updated_at) in one SQLite transaction. Idempotent per chunk_no:
 * recording the same chunk twice is refused with an error (-1). */
int sl_ckpt_commit_chunk(sl_ckpt *ckpt, int64_t run_id, const sl_ckpt_chunk *chunk, sl_err *err) SL_MUSTCHECK;

/* Set the state and error (NULL clears it) and, with run_id > 0, close that
 * run with outcome = the state's name. */
int sl_ckpt_finish_run(sl_ckpt *ckpt, int64_t run_id, sl_state state, const char *error, sl_err *err) SL_MUSTCHECK;

/* Set the current batch size shown by status. */
int sl_ckpt_set_batch(sl_ckpt *ckpt, int64_t batch, sl_err *err) SL_MUSTCHECK;

/* `stamp`: forget every chunk (for pending) or keep them (for done), set the
 * state, and record a "stamp" run. */
int sl_ckpt_stamp(sl_ckpt *ckpt, sl_state state, const char *checksum, sl_err *err) SL_MUSTCHECK;

/* Append an event (retry, reconnect, signal, notice...) to the event log. */
int sl_ckpt_log_event(sl_ckpt *ckpt, const char *kind, const char *message, sl_err *err) SL_MUSTCHECK;
/* The same with data, a JSON object's text (NULL: none): a hold's reason
 * ("hold_start", "hold_end"), for `report`. */
int sl_ckpt_log_event_data(sl_ckpt *ckpt, const char *kind, const char *message, const char *data,
                           sl_err *err) SL_MUSTCHECK;

/* One event of the log. */
typedef struct sl_ckpt_event {
    int64_t id, at_ms;
    const char *kind, *message, *data; /* data: JSON text or NULL */
} sl_ckpt_event;

/* Visit the events in order; strings valid during the call. A non-zero
 * return from fn stops and is returned. (journal.c) */
int sl_ckpt_each_event(sl_ckpt *ckpt, int (*fn)(const sl_ckpt_event *ev, void *arg), void *arg,
                       sl_err *err) SL_MUSTCHECK;

/* One chunk a `down` undid. */
typedef struct sl_ckpt_undone {
    int64_t run_id, chunk_no, rows, duration_ms, at_ms;
} sl_ckpt_undone;

/* Visit the chunks `down` runs undid, in the order they were undone. */
int sl_ckpt_each_undone(sl_ckpt *ckpt, int (*fn)(const sl_ckpt_undone *u, void *arg), void *arg,
                        sl_err *err) SL_MUSTCHECK;

/* The last committed chunk (chunk_no = 0 and NULL strings if none). The
 * strings are malloc'd into *lo and *hi. */
int sl_ckpt_last_chunk(sl_ckpt *ckpt, int64_t *chunk_no, char **lo, char **hi, sl_err *err) SL_MUSTCHECK;

/* Visit the committed chunks with chunk_no > after, in order. The chunk's
 * strings are valid only during the call. A non-zero return from fn stops
 * the walk and is returned as is (err untouched). */
int sl_ckpt_each_chunk(sl_ckpt *ckpt, int64_t after, int (*fn)(const sl_ckpt_chunk *chunk, void *arg), void *arg,
                       sl_err *err) SL_MUSTCHECK;

/* Visit the rows set aside by on-error skip: key (JSON array of strings)
 * and error, in key order. A non-zero return from fn stops and is returned. */
int sl_ckpt_each_skipped(sl_ckpt *ckpt, int (*fn)(const char *key, const char *error, void *arg), void *arg,
                         sl_err *err) SL_MUSTCHECK;

/* Every committed chunk number the file holds, ascending, as a malloc'd
 * array. */
int sl_ckpt_chunk_numbers(sl_ckpt *ckpt, int64_t **nums, size_t *n, sl_err *err) SL_MUSTCHECK;

/* Forget the chunks nums[0..n-1] (the database no longer has them: a `down`
 * undid them, or they never committed there) and recompute the summary, in
 * one SQLite transaction. Numbers the file does not hold are no error. */
int sl_ckpt_forget_chunks(sl_ckpt *ckpt, const int64_t *nums, size_t n, sl_err *err) SL_MUSTCHECK;

/* ---- the database it belongs to ----
 * A checkpoint file is bound to one database: sluice's id for it, the
 * PostgreSQL cluster's system identifier ("" when unknown or SQLite) and,
 * with by_name, the database's name. A file bound to none yet is bound to
 * this one when write is set (1 returned), else left alone (0); a file bound
 * to another is refused: SL_EREFUSED, err naming both. -1 on a file error. */
int sl_ckpt_bind(sl_ckpt *ckpt, const char *id, const char *cluster, const char *name, int by_name, int write,
                 sl_err *err) SL_MUSTCHECK;

/* The timeline (PostgreSQL's, sl_schema_timeline) its database was on when
 * the file last looked, and when its server had started (sl_schema_timeline:
 * PostgreSQL's start in microseconds since the epoch, for SQLite this
 * machine's boot), 0 never; and recording both. A database on a later
 * timeline than the file saw may have lost the last commits the file
 * records (a standby promoted without them, a point-in-time restore); a
 * server started since may have lost those made without waiting for the
 * disk (synchronous-commit off), in a crash. */
int sl_ckpt_timeline(sl_ckpt *ckpt, int64_t *timeline, int64_t *started, sl_err *err) SL_MUSTCHECK;
int sl_ckpt_set_timeline(sl_ckpt *ckpt, int64_t timeline, int64_t started, sl_err *err) SL_MUSTCHECK;

/* All runs of this file, oldest first, as a malloc'd array. */
int sl_ckpt_list_runs(sl_ckpt *ckpt, sl_ckpt_run **runs, size_t *nruns, sl_err *err) SL_MUSTCHECK;

/* ---- rollback (`down`) ----
 * The file's SQLite handle, for the parts of the store kept in files of
 * their own (sync.c). The checkpoint keeps ownership. */
struct sqlite3;
struct sqlite3 *sl_ckpt_sqlite(sl_ckpt *ckpt);

/* Forget chunk chunk_no (a `down` undid it: its row in sluice_progress is
 * gone) and recompute the summary (rows, affected, chunks, last_key) from
 * the chunks left, in one SQLite transaction; with run_id > 0 also add rows
 * and one chunk to that run and record the undoing (rows, how long it took)
 * for `report`. A chunk the file never recorded is not an error. */
int sl_ckpt_undo_chunk(sl_ckpt *ckpt, int64_t run_id, int64_t chunk_no, int64_t rows, int64_t duration_ms,
                       sl_err *err) SL_MUSTCHECK;

/* Like sl_ckpt_finish_run, but the run's outcome ("done", "stopped",
 * "failed") may differ from the job's new state (a stopped `down` leaves the
 * job rolling_back). */
int sl_ckpt_finish_run_as(sl_ckpt *ckpt, int64_t run_id, sl_state state, const char *outcome, const char *error,
                          sl_err *err) SL_MUSTCHECK;

/* The rows and chunks run run_id counted: 0, or -1 (no such run). */
int sl_ckpt_run_totals(sl_ckpt *ckpt, int64_t run_id, int64_t *rows, int64_t *chunks);

/* ---- a journal made from the database ----
 * For `report` of a job whose checkpoint file was lost: a run with the
 * times and counts the database gives (*run_id receives its id, for chunks
 * to count under, adding to rows and chunks); then, once the chunks are in, the job's summary set as the
 * database has it, and a retry event for each attempt past a chunk's first. */
int sl_ckpt_add_past_run(sl_ckpt *ckpt, const char *kind, const char *outcome, int64_t started_ms, int64_t ended_ms,
                         int64_t rows, int64_t chunks, const char *error, int64_t *run_id, sl_err *err) SL_MUSTCHECK;
int sl_ckpt_set_job_as(sl_ckpt *ckpt, sl_state state, const char *error, const char *target, int64_t started_ms,
                       int64_t updated_ms, sl_err *err) SL_MUSTCHECK;

/* ---- the run lock ----
 * A runner holds an fcntl write lock on "<checkpoint>-lock" while it runs a
 * job, so that `status` can tell a live run from one that was killed (its
 * file still says running) and two runners sharing a checkpoint directory
 * cannot run one job at once. The lock dies with the process. */

/* Take the lock; *fd receives the descriptor to pass to sl_ckpt_unlock. SL_EREFUSED
 * if another process holds it (err says so), -1 on other errors. */
int sl_ckpt_lock(const char *ckpt_path, int *fd, sl_err *err) SL_MUSTCHECK;
void sl_ckpt_unlock(int fd);
/* 1 if some process holds the lock of ckpt_path now, else 0. */
int sl_ckpt_locked(const char *ckpt_path);

#endif
