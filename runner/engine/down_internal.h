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
} down_worker;

/* down_chunk.c: undo the chunks of r's ranges, newest first, with the job's
 * workers. Returns an exit code (SL_EXIT_*). */
int down_walk(down_run *r) SL_MUSTCHECK;

#endif
