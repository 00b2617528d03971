/* down_ahead.c: `down` reads the undo records of a worker's next chunks ahead, and plans each while the chunk before
 * it runs.
 *
 * Without it a chunk takes two round trips: the first opens the
 * transaction and takes the record, the worker decodes it and builds the
 * restore (of a down section: the check of its rows), the second runs it
 * and commits; the server and the worker wait for each other in turn.
 * Reading ahead, a chunk's batch ends, after its COMMIT, with a read of the
 * record of the chunk two ahead in its range, and while that batch is in
 * flight the worker plans the next chunk from the record it already holds.
 * That chunk then goes as one batch: BEGIN, one statement that checks and
 * deletes what the first round trip read (down_ahead_open_sql), the
 * restore (or the check and the down section), COMMIT.
 *
 * A record is written once, by the up chunk it belongs to, and the lease
 * keeps `up` away while `down` runs, so a record read ahead is the one the
 * chunk's transaction deletes; should it be gone by then, or the progress
 * row, or the lease, the batch fails before writing and the chunk goes
 * the way it goes without reading ahead, which tells those apart. So does
 * every chunk whose record the trusting restore cannot use (rows the job
 * inserted or deleted, a record of another shape), a retry, a chunk set
 * aside or with its record lost. After such a record, or a large one, the
 * worker reads none ahead until a chunk's own record shows them worth it:
 * a purge's records are read once, in their chunks. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/db/schema.h"

#include "down_internal.h"

/* A record larger than this (its rows times their saved width) is not
 * read ahead: the next chunks' records would double the worker's memory
 * for a gain that is small beside such a chunk's own time. */
#define AHEAD_MAX_RECORD (4LL << 20)

int down_ahead_on(const down_run *r)
{
    return down_may_trust(r) && sl_run_fence_id(&r->run) != NULL;
}

static void slot_free(down_ahead *a)
{
    sl_result_clear(&a->rec);
    sl_undo_step_free(&a->step);
    memset(a, 0, sizeof *a);
}

static down_ahead *slot_of(down_worker *w, const down_chunk *c)
{
    for (size_t i = 0; i < 2; i++)
        if (w->ahead[i].chunk == c)
            return &w->ahead[i];
    return NULL;
}

size_t down_ahead_fetch(down_worker *w, sl_query *q)
{
    down_run *r = w->r;
    for (size_t i = 0; i < 2; i++)
        if (w->ahead[i].chunk && w->ahead[i].chunk != w->next[0] && w->ahead[i].chunk != w->next[1])
            slot_free(&w->ahead[i]);
    size_t n = 0;
    if (!down_ahead_on(r) || w->last_record_len > AHEAD_MAX_RECORD || w->ahead_declined)
        return 0;
    for (size_t i = 0; i < 2; i++) {
        const down_chunk *c = w->next[i];
        if (!c || c->skipped || c->lost || slot_of(w, c))
            continue;
        snprintf(w->fetch_no[n], sizeof w->fetch_no[n], "%" PRId64, c->chunk_no);
        w->fetch_params[n][0] = r->job->name;
        w->fetch_params[n][1] = w->fetch_no[n];
        q[n] = (sl_query){"SELECT record FROM " SL_UNDO_TABLE " WHERE job = $1 AND chunk_no = $2", 2,
                          w->fetch_params[n], 1};
        q[n].binary_result = 1; /* the record's bytes, as sl_undo_take_sql's */
        w->fetching[n++] = c;
    }
    for (size_t i = n; i < 2; i++)
        w->fetching[i] = NULL;
    return n;
}

void down_ahead_keep(down_worker *w, sl_answer *ans, size_t first, size_t n)
{
    for (size_t i = 0; i < n && first + i < ans->nresults; i++) {
        sl_result *res = &ans->results[first + i];
        down_ahead *a = slot_of(w, NULL);
        if (!a || !w->fetching[i] || res->nrows != 1 || !res->vals || !res->vals[0] || !res->lens)
            continue; /* no record (lost since): the chunk reads it itself, and says so */
        a->chunk = w->fetching[i];
        a->rec = *res;
        memset(res, 0, sizeof *res);
        w->last_record_len = sl_undo_record_len(&a->rec, 0);
    }
}

/* The run's own target when the record's rows were saved and hashed as it
 * saves and hashes them; else NULL (down_chunk.c's target_for, which may
 * ask the database, finds the one for it in the chunk). */
static const sl_undo_target *known_target(const down_run *r, const sl_snap *snap)
{
    sl_err err;
    if (sl_undo_check_saved_rows(&r->undo, snap, r->job->name, &err) != 0 || snap->col_hash != r->undo.col_hash)
        return NULL;
    size_t k = r->undo.kind == SL_UNDO_SNAPSHOT_ALL ? sl_undo_saved_fields(&r->undo, snap) : 0;
    return k == 0 || k == r->undo.saved_fields ? &r->undo : NULL;
}

/* 0 planned; -1 the slot let go (the chunk plans itself). */
static int plan_slot(down_worker *w, down_ahead *a)
{
    down_run *r = w->r;
    sl_err err;
    sl_snap snap;
    if (sl_undo_record_decode(&r->undo, a->chunk->chunk_no, a->rec.vals[0], sl_undo_record_len(&a->rec, 0), &snap,
                              &err) != 0) {
        w->ahead_declined = 1;
        slot_free(a);
        return -1;
    }
    sl_result_clear(&a->rec);
    const sl_undo_target *t = known_target(r, &snap);
    int rc = t ? sl_undo_plan_trusting(t, &snap, a->chunk->edges, &a->step) : -1;
    sl_snap_free(&snap);
    if (rc != 0) {
        w->ahead_declined = 1;
        slot_free(a);
        return -1;
    }
    a->t = t;
    a->planned = 1;
    return 0;
}

void down_ahead_plan(down_worker *w)
{
    for (size_t i = 0; i < 2; i++)
        if (w->ahead[i].chunk && !w->ahead[i].planned)
            (void)plan_slot(w, &w->ahead[i]);
}

int down_ahead_take(down_worker *w, const down_chunk *c, sl_undo_step *step)
{
    down_ahead *a = slot_of(w, c);
    memset(step, 0, sizeof *step);
    if (!a)
        return 0;
    if (!a->planned && plan_slot(w, a) != 0)
        return 0;
    *step = a->step;
    memset(&a->step, 0, sizeof a->step);
    w->look_as = a->t;
    slot_free(a);
    return 1;
}

const char *down_ahead_open_sql(const down_run *r)
{
#define OPEN_SQL(LOCK, SETTINGS)                                                                             \
    "WITH f AS (SELECT 1 FROM " SL_JOBS_TABLE " WHERE job = $1 AND runner = $3 " LOCK "),"                   \
    " p AS (DELETE FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND chunk_no = $2 AND EXISTS (SELECT 1 FROM f)" \
    " RETURNING 1),"                                                                                         \
    " u AS (DELETE FROM " SL_UNDO_TABLE " WHERE job = $1 AND chunk_no = $2 AND EXISTS (SELECT 1 FROM f)"     \
    " RETURNING 1)"                                                                                          \
    " SELECT 1 / ((SELECT count(*) FROM p) * (SELECT count(*) FROM u))::int" SETTINGS
    /* the lock as begin_chunk takes it; a down section is the job's SQL, planned as the server would */
    if (r->job->undo == SL_UNDO_DOWN)
        return down_fence_for_share(r) ? OPEN_SQL("FOR SHARE", "") : OPEN_SQL("FOR KEY SHARE", "");
    return down_fence_for_share(r) ? OPEN_SQL("FOR SHARE", ", " DOWN_TRUSTING_SETTINGS)
                                   : OPEN_SQL("FOR KEY SHARE", ", " DOWN_TRUSTING_SETTINGS);
#undef OPEN_SQL
}

void down_ahead_clear(down_worker *w)
{
    for (size_t i = 0; i < 2; i++)
        slot_free(&w->ahead[i]);
}
