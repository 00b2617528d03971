/* up_internal.h: the state of one `up` run, shared by up.c (the chunk loop) and up_gate.c (what holds chunks back). */
#ifndef SLUICE_UP_INTERNAL_H
#define SLUICE_UP_INTERNAL_H

#include <stdlib.h>

#include "sluice/catalog.h"
#include "sluice/ckpt.h"
#include "sluice/cli.h"
#include "sluice/ctl.h"
#include "sluice/pace.h"
#include "sluice/undo.h"

/* The key of one chunk edge, as text, one string per key column. */
typedef struct key_tuple {
    char *v[SL_MAX_KEY_COLS];
} key_tuple;

typedef struct chunk_bounds {
    int has_rows;
    key_tuple lo, hi;
    int64_t rows;
} chunk_bounds;

typedef struct up_run {
    sl_session *sess;
    const sl_opts *opts;
    sl_job *job;
    sl_ckpt *ckpt;
    sl_table_info info;
    char *boundary_first;       /* boundary SQL from the table's start */
    char *boundary_after;       /* boundary SQL after a key */
    char **stmt_sql;            /* up statements with :lo/:hi rendered */
    char *progress_sql;         /* INSERT INTO sluice_progress ... */
    sl_chunk_settings timeouts; /* sent after each chunk's BEGIN */
    int64_t run_id;
    int64_t chunk_no; /* last committed */
    int64_t rows_done;
    int has_last;
    int locked;      /* holds the job's advisory lock */
    int run_lock_fd; /* the checkpoint's run lock, -1 if not held */
    sl_pace pace;    /* batch size, pause, rate and health limits in force */
    int paused;      /* by `ctl pause` */
    int64_t last_health_ms;
    int64_t split_limit; /* > 0 after a chunk failed and was split: the cap on the next chunks */
    key_tuple last;      /* last committed :hi */
    sl_undo_target undo; /* what each chunk saves for `down` (undo.h) */
    sl_err err;
} up_run;

static inline void tuple_free(key_tuple *t)
{
    for (size_t i = 0; i < SL_MAX_KEY_COLS; i++) {
        free(t->v[i]);
        t->v[i] = NULL;
    }
}

/* Reconnect with backoff and jitter, take the job's lock again: 0, 1 when
 * stopped by a signal, -1 when it gave up (r->err). */
int sl_up_reconnect(up_run *r);
/* Render the SET LOCAL statements from the job's timeouts (on SQLite: set
 * them on the session instead). */
void sl_up_render_timeouts(up_run *r);

/* Wait while the job is paused by ctl, outside its windows, or while a
 * health limit is exceeded. 0 to run the next chunk, 1 to stop. */
int sl_up_gate(up_run *r);
/* After a chunk: resize toward chunk-time, then sleep for pause/max-rate.
 * 0, or 1 when a signal cut the sleep short. */
int sl_up_pace_after(up_run *r, int64_t rows, int64_t chunk_ms, int64_t run_rows, int64_t run_start);
/* The control socket's handler (ctl.h). */
int sl_up_on_ctl(const sl_ctl_req *req, sl_buf *out, void *arg);

/* up_prepare.c: before the walk. Each returns 0, -2 for a refusal (exit 2,
 * nothing changed) or -1 for a failure, with r->err set. */
/* The job's advisory lock: one runner per job and database. */
int sl_up_take_lock(up_run *r);
/* The job's `requires` query must return true. */
int sl_up_check_requires(up_run *r);
/* Copy chunks the database has and the checkpoint lacks into it. */
int sl_up_reconcile(up_run *r);
/* The resume position: the last committed chunk's :hi, rows done. */
int sl_up_load_position(up_run *r);

#endif
