/* up_walk.c: the walk's coordinator: workers, each a connection with a chunk in flight, walking key ranges.
 *
 * One coordinator on the one event loop: it hands ranges to idle workers,
 * sends each ready worker's next chunk as one batch without waiting for it
 * (sl_session_send), then turns the loop until some batch answers, and
 * deals with that answer (up_chunk.c). Rare paths (a lost connection, a
 * split, a row set aside, a range's first bounds) wait for their answer in
 * place; other workers' answers simply wait in their slots meanwhile. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/base/fiber.h"
#include "sluice/base/log.h"
#include "up_internal.h"

/* How long the coordinator may sleep before some ready worker could go
 * (its rest over, and what held it back lifted), at most a second. */
static int64_t next_wakeup(up_run *r)
{
    int64_t now = sl_mono_ms(), wait = 1000;
    for (int64_t i = 0; i < r->nworkers; i++) {
        const up_worker *w = &r->workers[i];
        int64_t ready = up_ready_at(r, w), at = ready > r->held_until ? ready : r->held_until;
        if (w->state == W_READY && at - now < wait)
            wait = at - now;
    }
    return wait < 1 ? 1 : wait;
}

/* Give idle workers ranges and find their first chunks. 0, 1 stopped, -1. */
static int assign_ranges(up_run *r)
{
    for (int64_t i = 0; i < r->nworkers; i++) {
        up_worker *w = &r->workers[i];
        while (w->state == W_IDLE || w->state == W_SEEK) {
            if (w->state == W_IDLE) {
                if (r->next_range >= r->nranges) {
                    w->state = W_DONE;
                    break;
                }
                w->range = &r->ranges[r->next_range++];
                w->state = W_SEEK;
            }
            int rc = up_seek(r, w);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

static int count_state(const up_run *r, up_worker_state st)
{
    int n = 0;
    for (int64_t i = 0; i < r->nworkers; i++)
        n += r->workers[i].state == st;
    return n;
}

sl_session *up_idle_session(up_run *r)
{
    for (int64_t i = 0; i < r->nworkers; i++)
        if (r->workers[i].state != W_BUSY)
            return r->workers[i].sess;
    return r->sess; /* PostgreSQL queues it behind the chunk in flight */
}

/* Open the workers' connections: worker 0 is the run's session. A
 * connection that cannot be opened leaves the run with fewer workers. */
static void start_workers(up_run *r)
{
    int64_t want = r->job->workers;
    if (want > 1 && r->sess->dialect == SL_DIALECT_SQLITE) {
        sl_warn("%s:%d: workers %" PRId64 " runs as one worker on SQLite, which lets one writer in at a time",
                r->job->path, r->job->line[SL_DIR_WORKERS], want);
        want = 1;
    }
    if ((int64_t)r->nranges < want)
        want = r->nranges > 0 ? (int64_t)r->nranges : 1;
    r->workers = sl_calloc((size_t)want, sizeof *r->workers);
    r->nworkers = 0;
    for (int64_t i = 0; i < want; i++) {
        up_worker *w = &r->workers[i];
        w->id = (int)i;
        w->attempts = 1;
        w->state = W_IDLE;
        w->pend = &w->slots[0];
        w->batch = &w->bufs[0];
        if (i == 0) {
            w->sess = r->sess;
        } else {
            sl_err err;
            if (sl_session_init_from(&w->own, r->sess, &err) != 0 ||
                (w->own.quiet = 1, sl_session_connect(&w->own, &err) != 0)) {
                sl_warn("%s: worker %d cannot connect, going on with %" PRId64 ": %s", r->job->name, w->id, r->nworkers,
                        err.msg);
                if (sl_session_is(&w->own, SL_DIALECT_PG))
                    sl_session_close_now(&w->own);
                break;
            }
            w->has_own = 1;
            w->sess = &w->own;
        }
        r->nworkers++;
    }
    if (r->nworkers > 1)
        sl_info("%s: %" PRId64 " workers over %zu key ranges", r->job->name, r->nworkers, r->nranges);
}

static void stop_workers(up_run *r)
{
    /* a ROLLBACK sent from on_answer_in (up_chunk.c) may still be on its
     * way, its pending inside the worker: answered, or failed as the
     * connection goes, before the worker is freed */
    for (int64_t i = 0; i < r->nworkers; i++)
        while (r->workers[i].rb.on_done && !r->workers[i].rb.done)
            sl_fiber_wait(r->sess->loop);
    for (int64_t i = 0; i < r->nworkers; i++) {
        up_worker *w = &r->workers[i];
        if (w->has_own)
            sl_session_close_now(&w->own);
        up_bounds_free(&w->cur);
        free(w->record);
        free(w->last_error);
        sl_answer_free(&w->first);
        for (int k = 0; k < 2; k++) {
            free(w->bufs[k].q);
            sl_answer_free(&w->slots[k].ans);
        }
    }
    free(r->workers);
    r->workers = NULL;
    r->nworkers = 0;
}

/* Deal with every batch that has answered. 0, or -1 when the job failed. */
static int take_answers(up_run *r)
{
    for (int64_t i = 0; i < r->nworkers; i++) {
        up_worker *w = &r->workers[i];
        if (w->state != W_BUSY || !w->pend->done)
            continue;
        if (up_on_answer(r, w) != 0 && !r->failed) {
            r->failed = 1;
            r->fail_err = r->err;
        }
    }
    return r->failed ? -1 : 0;
}

static int any_answer(const up_run *r)
{
    for (int64_t i = 0; i < r->nworkers; i++)
        if (r->workers[i].state == W_BUSY && r->workers[i].pend->done)
            return 1;
    return 0;
}

/* The coordinator. Returns 0 when every range is walked, 1 stopped, -1 failed. */
static int coordinate(up_run *r)
{
    int stop = 0;
    for (;;) {
        take_answers(r);
        up_follow_check(r);
        if (sl_run_lost(&r->run) && !r->failed) { /* the keeper saw another runner take the job over */
            r->failed = 1;
            sl_err_set(&r->fail_err, "%s", r->run.lease.why);
        }
        int busy = count_state(r, W_BUSY);
        if (r->failed || stop || sl_session_stopping(r->sess)) {
            if (!busy)
                return r->failed ? SL_EFAIL : SL_STOPPED;
            sl_session_turn(r->sess, 1000);
            continue;
        }
        int rc = assign_ranges(r);
        if (rc != 0) {
            if (rc < 0) {
                r->failed = 1;
                r->fail_err = r->err;
            }
            stop = 1;
            continue;
        }
        if (count_state(r, W_DONE) == r->nworkers)
            return 0;
        for (int64_t i = 0; i < r->nworkers && !stop && !r->failed; i++) {
            rc = up_dispatch(r, &r->workers[i]);
            if (rc < 0 && !r->failed) {
                r->failed = 1;
                r->fail_err = r->err;
            }
            stop |= rc == SL_STOPPED;
        }
        sl_metrics_workers(r->metrics, r->nworkers, count_state(r, W_BUSY));
        if (!any_answer(r) && !stop && !r->failed)
            sl_session_turn(r->sess, next_wakeup(r));
    }
}

int up_walk(up_run *r)
{
    start_workers(r);
    r->run_rows = 0;
    sl_pace_rate_begin(&r->pace, sl_mono_ms());
    int rc = coordinate(r);
    gate_hold(&r->gate, SL_HOLD_NONE, NULL); /* a hold in force ends with the walk */
    sl_metrics_workers(r->metrics, 0, 0);
    stop_workers(r);
    if (rc < 0) {
        r->err = r->fail_err;
        return SL_EXIT_FAILED;
    }
    return rc == 0 ? SL_EXIT_OK : SL_EXIT_STOPPED;
}
