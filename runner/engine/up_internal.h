/* up_internal.h: one `up` run's state, private to up.c and its parts (chunk, gate, hold, prepare, split, walk). */
#ifndef SLUICE_UP_INTERNAL_H
#define SLUICE_UP_INTERNAL_H

#include <stdlib.h>

#include "sluice/checkpoints/ckpt.h"
#include "sluice/db/catalog.h"
#include "sluice/engine/run.h"
#include "sluice/engine/undo.h"
#include "sluice/engine/up.h"
#include "sluice/services/ctl.h"
#include "sluice/services/metrics.h"
#include "sluice/services/pace.h"
#include "sluice/services/throttle.h"

#include "gate_internal.h"

/* The key of one chunk edge, as text, one string per key column. */
typedef struct up_key {
    char *v[SL_MAX_KEY_COLS];
} up_key;

typedef struct up_bounds {
    int has_rows;
    up_key lo, hi;
    int64_t rows;
} up_bounds;

/* A part of the key walked by one worker at a time: the keys after `after`
 * (exclusive; none: from the table's start) up to `until` (inclusive; none:
 * to its end). As chunks commit, `after` moves to the last committed :hi, so
 * it is also the range's resume position. Range 0 is the whole key when the
 * job has no split (one worker, or SQLite); a split's ranges are 1..n and are
 * kept in sluice_ranges (up_split.c). */
typedef struct up_range {
    int64_t range_no;
    int has_after, has_until;
    up_key after, until;
    /* PostgreSQL: the range's last committed chunk, whose :hi is after; 0
     * none. The range's next chunk commits only while that chunk is still in
     * sluice_progress, and its first (none yet) only while the range is
     * still in sluice_ranges (sl_lease_fence_sql): after a failover that lost
     * either, no chunk past the loss commits, so a range's chunks stay one
     * unbroken run from its start and its position (its last chunk) says what
     * is done. */
    int64_t prev_chunk;
} up_range;

typedef enum up_worker_state {
    W_IDLE,  /* needs a range */
    W_SEEK,  /* has a range: find its next chunk's bounds */
    W_READY, /* cur holds the next chunk: send it at ready_at */
    W_BUSY,  /* a batch is in flight (pend), perhaps another queued behind it (follow) */
    W_DONE,  /* no range left */
} up_worker_state;

/* One chunk's batch as sent: its queries and the values they point at,
 * which live here until its answer is in (the SQLite driver reads them on
 * its thread). */
typedef struct up_batch {
    sl_query *q;
    size_t nq;
    char numbers[6][24]; /* chunk_no, rows, attempts, limit, range_no, the range's prev_chunk as text */
    const char *edges[2 * SL_MAX_KEY_COLS];
    const char *prog[10 + 2 * SL_MAX_KEY_COLS];
    const char *bparams[2 * SL_MAX_KEY_COLS + 1];
} up_batch;

/* One connection with one chunk in flight, and on SQLite perhaps the next
 * one queued behind it (up_chunk.c's follow-on). Worker 0 uses the run's
 * session (which holds the job's lock); the others have their own. */
typedef struct up_worker {
    int id;
    sl_session *sess;
    sl_session own; /* workers > 0 */
    int has_own;
    up_worker_state state;
    up_range *range;
    up_bounds cur;       /* the chunk to send, or in flight */
    int64_t chunk_no;    /* cur's number once first sent (kept through retries and splits), else 0 */
    int64_t attempts;    /* of cur */
    int64_t started;     /* mono ms of cur's first attempt */
    int64_t sent_at;     /* mono ms of the attempt in flight */
    int64_t ready_at;    /* mono ms: not sent before */
    int64_t rest_from;   /* mono ms its rest (the job's pause) began, 0 none: the pause in force, not the
                            one when it began, says when the rest ends (`ctl set pause` shortens a long one) */
    int64_t split_limit; /* > 0 after a chunk failed and was split: the cap on the next chunks */
    int64_t sent_batch;  /* the batch in force when cur was first sent */
    char *last_error;    /* of cur's failed attempts */
    char sqlstate[6];    /* of cur's last failed attempt */
    int saving;          /* the in-flight batch is the first half of a chunk with undo records */
    sl_pending *pend;    /* the batch in flight: one of slots */
    sl_pending rb;       /* PostgreSQL: the ROLLBACK sent the moment the batch failed inside its transaction */
    int rolling;         /* rb was sent for the answer in pend: the coordinator sends none */
    sl_answer first;     /* with undo records: the first half's answer */
    up_batch *batch;     /* pend's queries: one of bufs */
    /* SQLite: the next chunk, queued to run right after the one in flight
     * with the bounds that one finds (sl_session_send_next); NULL none */
    sl_pending *follow;
    int follow_taken;     /* it ran (known once pend is done) */
    int queued;           /* pend ran queued behind the chunk before it */
    int64_t follow_no;    /* its chunk number */
    int64_t follow_batch; /* the batch in force when it was queued */
    sl_pending slots[2];
    up_batch bufs[2];
    const char *uparams[3]; /* the undo record's row: job, chunk_no, record */
    int ulengths[3];        /* PostgreSQL: the record goes as binary, its length here */
    int drop_conn;          /* the chunk is lost with its connection still up: drop it before reconnecting */
    char *record;           /* the undo record of the chunk in flight */
} up_worker;

typedef struct up_run {
    sl_session *sess;
    const sl_run_opts *opts;
    sl_job *job;
    sl_run run;    /* the job's lock, state and journal (run.h) */
    sl_ckpt *ckpt; /* run.ckpt */
    sl_table_info info;
    sl_run_identity id;         /* what the job walks */
    char *boundary[2][2];       /* boundary SQL [after a key?][up to a key?] */
    char **stmt_sql;            /* up statements with :lo/:hi rendered */
    char *progress_sql;         /* INSERT INTO sluice_progress ... */
    const char *begin_sql;      /* a chunk's BEGIN (sl_schema_chunk_begin) */
    sl_chunk_settings timeouts; /* sent after each chunk's BEGIN */
    int64_t chunks_done;        /* committed chunks, all runs */
    int64_t next_chunk_no;      /* the number the next chunk sent takes */
    int64_t rows_done;
    int64_t rows_set_aside; /* by on-error skip, all runs (counted in rows_done) */
    sl_pace pace;           /* batch size, pause, rate and health limits in force */
    run_gate gate;          /* ctl pause, windows, health (gate_internal.h) */
    int has_last;           /* some chunk ever committed */
    up_key last;            /* the last committed chunk's :hi, before this run */
    int has_end;            /* the walk ends at end (end fixed), else it follows new rows */
    int nothing;            /* end fixed and the table was empty when the job began: nothing to walk */
    up_key end;             /* the key's last value when the job began */
    up_range *ranges;       /* what is left to walk, in key order */
    size_t nranges, next_range;
    int64_t nworkers;
    up_worker *workers;
    int64_t run_rows;        /* this run: rows committed */
    int64_t held_until;      /* mono ms: the gate or max-rate holds chunks back until then */
    int failed;              /* a chunk failed for good: no new chunks, finish those in flight */
    sl_err fail_err;         /* why */
    sl_undo_target undo;     /* what each chunk saves for `down` (undo.h) */
    sl_metrics_job *metrics; /* its series (metrics.h) */
    sl_err err;
} up_run;

static inline void up_key_free(up_key *t)
{
    for (size_t i = 0; i < SL_MAX_KEY_COLS; i++) {
        free(t->v[i]);
        t->v[i] = NULL;
    }
}

static inline void up_bounds_free(up_bounds *b)
{
    up_key_free(&b->lo);
    up_key_free(&b->hi);
    b->has_rows = 0;
    b->rows = 0;
}

static inline void up_range_free(up_range *kr)
{
    up_key_free(&kr->after);
    up_key_free(&kr->until);
}

/* Reconnect sess (the run's, or a worker's) with backoff and jitter: 0, SL_STOPPED
 * when stopped by a signal, -1 when it gave up or lost the job (r->err). */
int up_reconnect(up_run *r, sl_session *sess) SL_MUSTCHECK;
/* Render the SET LOCAL statements from the job's timeouts (on SQLite: set
 * them on the session instead). */
void up_render_timeouts(up_run *r);
/* Run queries that change nothing on sess, retrying transient errors and
 * lost connections: 0 with an ok answer, SL_STOPPED, -1 failed (r->err). */
int up_exec_read(up_run *r, sl_session *sess, const sl_query *q, size_t n, sl_answer *ans) SL_MUSTCHECK;
/* The same for a query of the job file's own (verify): it can change
 * nothing (sl_session_exec_readonly). */
int up_exec_check(up_run *r, sl_session *sess, const sl_query *q, size_t n, sl_answer *ans) SL_MUSTCHECK;
/* "[\"a\", \"b\"]": a key as JSON, malloc'd. */
char *up_tuple_json(const up_key *t, size_t n);

/* up_chunk.c, for the coordinator (up_walk.c): find the next chunk of w's
 * range from its position, waiting for it (the worker is then ready, or
 * idle when the range is finished); send w's chunk if nothing holds it back
 * now (its own rest, the gate, max-rate); deal with w's batch's answer.
 * Each returns SL_OK, SL_STOPPED or SL_EFAIL (r->err). */
int up_seek(up_run *r, up_worker *w) SL_MUSTCHECK;
int up_dispatch(up_run *r, up_worker *w) SL_MUSTCHECK;
int up_on_answer(up_run *r, up_worker *w) SL_MUSTCHECK;
/* Withdraw queued follow-ons (SQLite) that may no longer go (a pause, a
 * window that closed, a stop, a failure); or, _all, every one not started
 * yet (a ctl request: what it changes applies from the next chunk). */
void up_follow_check(up_run *r);
void up_follow_withdraw_all(up_run *r);

/* up_walk.c: walk the ranges with the job's workers. Returns an exit code. */
int up_walk(up_run *r) SL_MUSTCHECK;
/* A session with no chunk in flight, for a query between chunks (the run's
 * own when every worker is busy). */
sl_session *up_idle_session(up_run *r);

/* What the gate says of the next chunk. */
typedef enum up_gate_rc {
    UP_GATE_GO = GATE_GO,     /* it may go */
    UP_GATE_STOP = GATE_STOP, /* the run stops (--no-wait outside the windows, or a signal) */
    UP_GATE_WAIT = GATE_WAIT, /* not yet: *wait_ms says when to ask again */
} up_gate_rc;

/* up_gate.c: may the next chunk go? Never waits itself (a throttle query
 * aside), so replies keep being recorded. */
int up_gate(up_run *r, int64_t *wait_ms) SL_MUSTCHECK;
/* After a chunk: resize toward chunk-time. */
void up_pace_after(up_run *r, int64_t rows, int64_t chunk_ms);
/* The control socket's handler (ctl.h). */
int up_on_ctl(const sl_ctl_req *req, sl_buf *out, void *arg);

/* up_prepare.c: before the walk. Each returns 0, SL_EREFUSED for a refusal (exit 2,
 * nothing changed) or -1 for a failure, with r->err set. */
/* What may refuse the job, reading only: the table and its key, an index,
 * `requires`, the undo columns; r->id, what the job walks. fresh: no chunk
 * of the job has committed, so the walk most likely starts at the table's
 * start: its rows are counted meanwhile (SQLite, sl_catalog_count_ahead;
 * up_once ends that count when the walk did not take it). */
int up_preflight(up_run *r, int fresh) SL_MUSTCHECK;
/* A snapshot job's committed chunks must all have their undo records. */
int up_check_undo_records(up_run *r) SL_MUSTCHECK;
/* The last committed chunk's :hi, rows and chunks done, the next chunk
 * number, and where the walk ends (fixed now when no chunk committed yet). */
int up_load_position(up_run *r) SL_MUSTCHECK;

/* The job's verify query, once the walk is over: 0 when it returns true
 * (or there is none), else -1 with r->err naming it (file:line). */
int up_verify(up_run *r) SL_MUSTCHECK;

/* up_split.c: the ranges left to walk: a split kept in sluice_ranges with
 * each range's position, or the whole key after the last chunk. With more
 * than one worker on PostgreSQL and no split yet, split what is left first,
 * at keys sampled from the table. */
int up_load_ranges(up_run *r) SL_MUSTCHECK;

/* Is range range_no (of a split) still in sluice_ranges? 1 also when it
 * cannot tell (the connection lost: the chunk's retry asks again). */
int up_split_kept(up_run *r, sl_session *sess, int64_t range_no) SL_MUSTCHECK;

/* When w's next chunk may go: after its rest, as long as the pause in
 * force now, or at ready_at. */
static inline int64_t up_ready_at(const up_run *r, const up_worker *w)
{
    return w->rest_from ? w->rest_from + r->pace.pause_ms : w->ready_at;
}

#endif
