/* down_internal.h: one `down` run's state, private to down.c (the jobs, the run) and down_chunk.c (its chunks). */
#ifndef SLUICE_DOWN_INTERNAL_H
#define SLUICE_DOWN_INTERNAL_H

#include "sluice/db/catalog.h"
#include "sluice/engine/run.h"
#include "sluice/engine/undo.h"
#include "sluice/services/metrics.h"
#include "sluice/services/pace.h"

#include "gate_internal.h"

/* One up chunk still applied, as sluice_progress records it. */
typedef struct down_chunk {
    int64_t chunk_no, rows;
    int skipped;                      /* set aside by on-error skip: its statements never applied */
    int lost;                         /* a snapshot job's chunk with no undo record left (--allow-lost-undo) */
    char *edges[2 * SL_MAX_KEY_COLS]; /* lo columns, then hi columns */
    /* of its rows, those its undo leaves as they are: changed by another session since (--on-conflict
     * skip), or not to be brought back (its record lost; deleted, and snapshot(COL, ...) saved columns) */
    int64_t rows_skipped, rows_lost;
} down_chunk;

/* The chunks of one key range (a job with workers; else the whole key):
 * chunks[first .. first + n), ascending. */
typedef struct down_range {
    size_t first, n;
} down_range;

typedef struct down_run {
    sl_session *sess;
    const sl_run_opts *opts;
    sl_job *job;
    sl_run run; /* lock, state, journal (run.h) */
    int opened;
    int fit_said;   /* the snapshot(*) rows' older shape was logged (prepare runs twice) */
    sl_job_row row; /* as read before the lock, for the refusals */
    sl_table_info info;
    sl_undo_target undo;
    /* snapshot(*) whose chunks saved rows of different shapes (columns added while up ran): a target
     * for each other number of saved columns, made as a chunk needs it (down_chunk.c) */
    sl_undo_target **shapes;
    size_t nshapes;
    sl_run_identity id;
    char **down_sql;            /* the down section with :lo/:hi rendered */
    sl_chunk_settings timeouts; /* sent after each chunk's BEGIN */
    down_chunk *chunks;         /* ascending chunk_no */
    size_t nchunks;
    int64_t rows_total, rows_undone; /* the up chunks' rows: all, and those of the chunks undone (progress) */
    int64_t rows_restored;           /* of rows_undone, those put back to what they were; the others: */
    int64_t rows_skipped, rows_lost; /* as each chunk's above */
    int64_t rows_set_aside;          /* by up's on-error skip: never changed, so left as they are */
    size_t chunks_undone;            /* by this run */
    int resumed;                     /* an earlier down began the rollback (killed, stopped): this one ends it */
    size_t nlost;                    /* chunks left as they are: their undo records are gone */
    down_range *ranges;
    size_t nranges, next_range;
    int failed;            /* a worker failed: the others stop */
    sl_pace pace;          /* pause, max-rate and health limits in force (`ctl set` changes them) */
    run_gate gate;         /* ctl pause, windows, health (gate_internal.h) */
    size_t nworkers, busy; /* busy: workers undoing a chunk now */
    sl_metrics_job *metrics;
    sl_err err;
} down_run;

/* The undo record of one of a worker's next chunks, read ahead (down_ahead.c). */
typedef struct down_ahead {
    const down_chunk *chunk; /* NULL: the slot is empty */
    sl_result rec;           /* the record as read (binary), until planned */
    int planned;             /* step holds its trusting restore, for target t */
    sl_undo_step step;
    const sl_undo_target *t;
} down_ahead;

/* One connection undoing chunks, one at a time: the run's own session, or
 * (workers) one of its own. */
typedef struct down_worker {
    down_run *r;
    sl_session *sess;
    sl_session own;
    int has_own;
    int rc;     /* how its walk ended: SL_OK, SL_STOPPED, SL_EFAIL, SL_ECONFLICT */
    sl_err err; /* its own: workers wait in turn, and each message must stay its own */
    /* the target its last chunk's record asked for (NULL: none yet, the run's): the next chunk's rows
     * are read as it hashes them, since a job's records are mostly of one kind (down_chunk.c) */
    const sl_undo_target *look_as;
    /* read ahead (down_ahead.c): the two chunks the walk undoes next in the range (NULL: none), the
     * records held of them, the ones the batch in flight reads, the size of the last record seen, and
     * whether the last record read ahead could not be planned so (rows the job inserted or deleted: a
     * purge's records are read in their chunks only, not twice) */
    const down_chunk *next[2];
    down_ahead ahead[2];
    const down_chunk *fetching[2];
    char fetch_no[2][24];
    const char *fetch_params[2][2];
    long long last_record_len;
    int ahead_declined;
} down_worker;

/* down_chunk.c: whether a chunk's restore may trust its record (no look
 * at the rows first, one checked UPDATE, or a down section after a check
 * on the server: sl_undo_plan_trusting): PostgreSQL, --on-conflict stop or
 * skip, a snapshot or a down section whose records hold hashes. */
int down_may_trust(const down_run *r);
/* Whether a down chunk proves its lease with FOR SHARE rather than FOR KEY
 * SHARE, as sl_schema_fence_lock says (begin_chunk, down_ahead_open_sql). */
int down_fence_for_share(const down_run *r);
/* The planner settings of a trusting restore's transaction, as a select
 * list (down_chunk.c, finish_chunk, says why). */
#define DOWN_TRUSTING_SETTINGS "set_config('enable_nestloop', 'off', true), set_config('enable_indexscan', 'off', true)"

/* down_ahead.c: reading the records of a worker's next chunks ahead, so
 * that a chunk (a snapshot's or a down section's) on PostgreSQL goes as one
 * batch, planned while the chunk before it runs. */
/* Whether the run reads ahead: its restores may trust their records
 * (down_may_trust), and a lease fences its chunks. */
int down_ahead_on(const down_run *r);
/* The queries (at most 2) reading the records of w's next chunks that it
 * does not hold, into q; the slots of other chunks are let go. 0 when the
 * run does not read ahead, the last record was large (the memory a record
 * takes is held once more for each chunk read ahead), or the last one read
 * ahead could not be planned ahead (until a chunk's own record can be:
 * w->ahead_declined, cleared by down_chunk.c). */
size_t down_ahead_fetch(down_worker *w, sl_query *q);
/* Keep what the n queries at ans's results [first, first + n) read (taken
 * out of ans). */
void down_ahead_keep(down_worker *w, sl_answer *ans, size_t first, size_t n);
/* Plan the records held and not yet planned: while a batch is in flight. */
void down_ahead_plan(down_worker *w);
/* Chunk c's restore, planned from its record read ahead, into *step (and
 * w->look_as set to its target): 1; or 0 (nothing held, or a record that
 * does not allow a trusting restore: down reads it in the chunk, as
 * without reading ahead). The slot is let go either way. */
int down_ahead_take(down_worker *w, const down_chunk *c, sl_undo_step *step);
/* The statement that opens a chunk planned ahead, after its BEGIN and
 * timeouts: the lease's row locked as begin_chunk does, the chunk's
 * progress row and undo record deleted, the planner settings of the
 * trusting restore set; division by zero (22012) when either row is
 * missing or the lease is not ours. Parameters: job, chunk_no, runner. */
const char *down_ahead_open_sql(const down_run *r);
/* Let every slot go. */
void down_ahead_clear(down_worker *w);

/* down_chunk.c: undo the chunks of r's ranges, newest first, with the job's
 * workers. Returns an exit code (SL_EXIT_*). */
int down_walk(down_run *r) SL_MUSTCHECK;

#endif
