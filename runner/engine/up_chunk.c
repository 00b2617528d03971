/* up_chunk.c: one chunk's life in the walk: its bounds, its batch, its answer, its commit, retry or setting aside.
 *
 * Exactly once rests on the rule of up.c: a chunk's statements and its row
 * in sluice_progress (with its range) commit together. Within a range the
 * chunks commit one after the other, so a range's position is its last
 * committed chunk's :hi, whatever the other ranges did. A chunk's batch
 * also finds the next chunk's bounds, so a worker's next chunk is sent the
 * moment its answer arrives, before the finished chunk is written to the
 * checkpoint file: the file write overlaps the next chunk. On SQLite the
 * next chunk is even queued behind the one running (the follow-on, below). */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/base/json.h"
#include "sluice/base/log.h"
#include "sluice/services/progress.h"
#include "up_internal.h"

enum { CHUNK_OK, CHUNK_RETRY, CHUNK_FAILED, CHUNK_LOST, CHUNK_FENCED };

/* Where each query of a chunk's batch sits: BEGIN, the timeouts, [pre-image],
 * the up statements, [the post-image's plan (PostgreSQL), post-image], the
 * progress row, [the undo record], COMMIT, next bounds. A chunk with an undo
 * record goes in two halves: the second, from the record on, once the
 * first's images are in. */
typedef struct chunk_layout {
    size_t k, pre_i, first, plan_i, post_i, prog_i, undo_i, commit_i, bound_i, nq;
    int pre, post, plan;
} chunk_layout;

/* A batch that failed at query idx left its transaction open, aborted, until
 * ROLLBACK: it failed after BEGIN and before COMMIT. */
static int left_open(const chunk_layout *l, int idx)
{
    return idx >= 1 && idx < (int)l->commit_i;
}

static chunk_layout layout_of(const up_run *r)
{
    chunk_layout l;
    l.k = r->job->up.nstmts;
    l.pre = r->undo.pre_sql != NULL;
    l.post = r->undo.post_sql != NULL;
    l.pre_i = 1 + r->timeouts.n;
    l.first = l.pre_i + (size_t)l.pre;
    l.plan = l.post && r->sess->dialect == SL_DIALECT_PG;
    l.plan_i = l.first + l.k;
    l.post_i = l.plan_i + (size_t)l.plan;
    l.prog_i = l.post_i + (size_t)l.post;
    l.undo_i = l.prog_i + 1;
    l.commit_i = l.undo_i + (size_t)l.post;
    l.bound_i = l.commit_i + 1;
    l.nq = l.bound_i + 1;
    return l;
}

/* The most rows w's next chunk may have: the batch in force, or less while
 * a split's smaller chunks grow back. */
static int64_t worker_batch(const up_run *r, const up_worker *w)
{
    return w->split_limit > 0 && w->split_limit < r->pace.batch ? w->split_limit : r->pace.batch;
}

static void tuple_copy(up_key *dst, const up_key *src, size_t n)
{
    up_key_free(dst);
    for (size_t i = 0; i < n; i++)
        dst->v[i] = sl_strdup(src->v[i]);
}

/* Read a boundary result (first key, last key, count) into b. */
static void read_bounds(const sl_answer *ans, size_t res, size_t ncols, up_bounds *b)
{
    up_bounds_free(b);
    if (res >= ans->nresults || ans->results[res].nrows == 0)
        return;
    for (size_t i = 0; i < ncols; i++) {
        b->lo.v[i] = sl_strdup(sl_answer_val(ans, res, 0, (int)i));
        b->hi.v[i] = sl_strdup(sl_answer_val(ans, res, 0, (int)(ncols + i)));
    }
    b->rows = strtoll(sl_answer_val(ans, res, 0, (int)(2 * ncols)), NULL, 10);
    b->has_rows = b->rows > 0;
}

/* The boundary query of w's range after `after` (NULL: from the range's
 * start), with its parameters in params (limit's text in limit). */
static const char *boundary_for(const up_run *r, const up_worker *w, const up_key *after, const char **params, int *np,
                                char *limit)
{
    size_t n = r->info.ks.ncols, k = 0;
    const up_range *kr = w->range;
    if (after)
        for (size_t i = 0; i < n; i++)
            params[k++] = after->v[i];
    if (kr->has_until)
        for (size_t i = 0; i < n; i++)
            params[k++] = kr->until.v[i];
    snprintf(limit, 24, "%" PRId64, worker_batch(r, w));
    params[k++] = limit;
    *np = (int)k;
    return r->boundary[after != NULL][kr->has_until];
}

/* Find the next chunk of w's range from its position, waiting for it. The
 * worker is then ready, or idle when the range is finished. 0, 1 stopped,
 * -1 failed (r->err). */
int up_seek(up_run *r, up_worker *w)
{
    const char *params[2 * SL_MAX_KEY_COLS + 1];
    char limit[24];
    sl_query q = {NULL, 0, params, 1};
    q.sql = boundary_for(r, w, w->range->has_after ? &w->range->after : NULL, params, &q.nparams, limit);
    sl_answer ans;
    int rc = up_exec_read(r, w->sess, &q, 1, &ans);
    if (rc != 0)
        return rc;
    read_bounds(&ans, 0, r->info.ks.ncols, &w->cur);
    sl_answer_free(&ans);
    if (w->cur.has_rows) {
        w->state = W_READY;
    } else {
        w->range = NULL; /* finished */
        w->state = W_IDLE;
    }
    return 0;
}

/* Fill b with the batch of chunk chunk_no over cur (rows: its row count as
 * text, NULL to print cur->rows). The values the queries point at live in b
 * until the answer is in (the SQLite driver reads them on its thread). */
static void build_chunk(up_run *r, up_worker *w, const chunk_layout *l, up_batch *b, const up_bounds *cur,
                        const char *rows, int64_t chunk_no, int64_t attempts)
{
    size_t n = r->info.ks.ncols;
    for (size_t i = 0; i < n; i++) {
        b->edges[i] = cur->lo.v[i];
        b->edges[n + i] = cur->hi.v[i];
    }
    snprintf(b->numbers[0], sizeof b->numbers[0], "%" PRId64, chunk_no);
    snprintf(b->numbers[1], sizeof b->numbers[1], "%" PRId64, cur->rows);
    snprintf(b->numbers[2], sizeof b->numbers[2], "%" PRId64, attempts);
    snprintf(b->numbers[4], sizeof b->numbers[4], "%" PRId64, w->range->range_no);
    size_t np = 0;
    b->prog[np++] = r->job->name;
    b->prog[np++] = b->numbers[0];
    for (size_t i = 0; i < 2 * n; i++)
        b->prog[np++] = b->edges[i];
    b->prog[np++] = rows ? rows : b->numbers[1];
    b->prog[np++] = b->numbers[2];
    b->prog[np++] = r->job->checksum;
    b->prog[np++] = "false";
    b->prog[np++] = NULL; /* no error */
    if (r->sess->dialect == SL_DIALECT_PG) {
        snprintf(b->numbers[5], sizeof b->numbers[5], "%" PRId64, w->range->prev_chunk);
        b->prog[np++] = b->numbers[4];
        b->prog[np++] = sl_run_fence_id(&r->run);
        b->prog[np++] = w->range->prev_chunk ? b->numbers[5] : NULL;
    }
    int nb = 0;
    const char *bsql = boundary_for(r, w, &cur->hi, b->bparams, &nb, b->numbers[3]);

    free(b->q);
    b->nq = l->nq;
    sl_query *q = b->q = sl_calloc(l->nq, sizeof *q);
    q[0] = (sl_query){r->begin_sql, 0, NULL, 0};
    for (size_t i = 0; i < r->timeouts.n; i++)
        q[1 + i] = (sl_query){r->timeouts.sql[i], 0, NULL, 1};
    if (l->pre)
        q[l->pre_i] = (sl_query){r->undo.pre_sql, 2 * (int)n, b->edges, 1};
    for (size_t i = 0; i < l->k; i++) {
        const sl_stmt *st = &r->job->up.stmts[i];
        int used = (st->uses_lo + st->uses_hi) * (int)n;
        q[l->first + i] = (sl_query){r->stmt_sql[i], used, st->uses_lo ? b->edges : b->edges + n, 1};
    }
    if (l->plan)
        q[l->plan_i] = (sl_query){sl_undo_post_plan_sql(), 0, NULL, 1};
    if (l->post)
        q[l->post_i] = (sl_query){r->undo.post_sql, 2 * (int)n, b->edges, 1};
    q[l->prog_i] = (sl_query){r->progress_sql, (int)np, b->prog, 1};
    if (l->post) { /* its values are filled in by after_first_half */
        static const int binary_record[3] = {0, 0, 1};
        q[l->undo_i] = (sl_query){sl_undo_store_sql(), 3, w->uparams, 1};
        if (r->sess->dialect == SL_DIALECT_PG) {
            q[l->undo_i].lengths = w->ulengths;
            q[l->undo_i].formats = binary_record;
        }
    }
    q[l->commit_i] = (sl_query){"COMMIT", 0, NULL, 0};
    q[l->bound_i] = (sl_query){bsql, nb, b->bparams, 1};
}

static void on_answer_in(sl_pending *p);

/* ---- SQLite: the next chunk queued behind the one in flight ----
 *
 * On SQLite the connection's own thread runs the batches; waking the loop
 * between two chunks, and the thread again once the loop sent the next,
 * cost about a tenth of a short chunk's time. So while a chunk runs, the
 * next one is queued behind it (sl_session_send_next) with the bounds its
 * batch will find: the driver runs it the moment the first one committed
 * and found rows after it, and not at all when the first one failed (its
 * retry, split or setting aside go on as without it) or the range ended.
 * Each chunk keeps its own transaction with its sluice_progress row, so a
 * kill at any moment leaves each whole or not there, as before.
 *
 * Only the job's plain case is queued: no undo images (a chunk with a
 * record goes in two halves), no pause between chunks, no max-rate, no chunk
 * split smaller after a failure, and nothing the gate knows of holding the
 * job (gate_quiet: a pause, the windows, a health limit, a health check
 * due, which needs the connection between two chunks). What arrives while
 * one is queued (a ctl request, a signal, a pause, a window that closes)
 * withdraws it unless it started: it then acts from the next chunk, as it
 * would without the queue. */

static int follow_may_go(up_run *r)
{
    return !r->failed && !sl_session_stopping(r->sess) && !sl_run_lost(&r->run) && r->pace.pause_ms <= 0 &&
           gate_quiet(&r->gate);
}

static void follow_queue(up_run *r, up_worker *w)
{
    chunk_layout l = layout_of(r);
    if (w->sess->dialect != SL_DIALECT_SQLITE || l.pre || l.post || w->split_limit > 0 || w->follow ||
        !follow_may_go(r))
        return;
    size_t n = r->info.ks.ncols;
    up_bounds carried = {0};
    for (size_t i = 0; i < n; i++) { /* the columns of the bounds query: first keys, last keys, count */
        carried.lo.v[i] = (char *)&sl_lite_carried[i];
        carried.hi.v[i] = (char *)&sl_lite_carried[n + i];
    }
    int other = w->batch == &w->bufs[0];
    int64_t no = r->next_chunk_no++;
    build_chunk(r, w, &l, &w->bufs[other], &carried, &sl_lite_carried[2 * n], no, 1);
    if (sl_session_send_next(w->sess, w->bufs[other].q, w->bufs[other].nq, &w->slots[other], &w->follow_taken) != 0) {
        r->next_chunk_no = no; /* the chunk in flight was seen done already: the coordinator sends the next */
        return;
    }
    w->follow = &w->slots[other];
    w->follow_no = no;
    w->follow_batch = r->pace.batch;
}

/* The queued chunk did not run: give its number back. */
static void follow_drop(up_run *r, up_worker *w)
{
    assert(w->follow->done && "BUG: a follow-on not run is done with the batch before it");
    sl_answer_free(&w->follow->ans);
    memset(w->follow, 0, sizeof *w->follow);
    if (r->next_chunk_no == w->follow_no + 1)
        r->next_chunk_no = w->follow_no;
    w->follow = NULL;
}

/* The queued chunk ran after the one just committed, over next: it is the
 * one in flight now, and the one after it is queued in turn. */
static void follow_adopt(up_run *r, up_worker *w, up_bounds *next)
{
    w->cur = *next;
    memset(next, 0, sizeof *next);
    w->chunk_no = w->follow_no;
    w->attempts = 1;
    w->started = w->sent_at = sl_mono_ms();
    w->sent_batch = w->follow_batch;
    w->pend = w->follow;
    w->batch = &w->bufs[w->pend == &w->slots[1]];
    w->follow = NULL;
    w->queued = 1;
    w->saving = 0;
    w->rolling = 0;
    w->state = W_BUSY;
    sl_pace_rate_sent(&r->pace, w->cur.rows);
    follow_queue(r, w);
}

void up_follow_check(up_run *r)
{
    if (follow_may_go(r))
        return;
    up_follow_withdraw_all(r);
}

void up_follow_withdraw_all(up_run *r)
{
    for (int64_t i = 0; i < r->nworkers; i++)
        if (r->workers[i].follow)
            sl_session_cancel_next(r->workers[i].sess);
}

/* Send cur without waiting. A chunk with an undo record goes in two halves:
 * up to its sluice_progress row, then, once the record is built from the
 * images, the record, COMMIT and the next bounds (an explicit transaction
 * stays open across batches). 0 sent, -1 not connected. */
static int send_chunk(up_run *r, up_worker *w)
{
    chunk_layout l = layout_of(r);
    if (!w->chunk_no) {
        w->chunk_no = r->next_chunk_no++;
        w->started = sl_mono_ms();
        w->sent_batch = worker_batch(r, w);
    }
    if (w->attempts == 1)
        sl_pace_rate_sent(&r->pace, w->cur.rows);
    build_chunk(r, w, &l, w->batch, &w->cur, NULL, w->chunk_no, w->attempts);
    w->queued = 0;
    w->rest_from = 0;
    w->saving = l.post;
    w->sent_at = sl_mono_ms();
    if (sl_session_send(w->sess, w->batch->q, l.post ? l.undo_i : l.nq, w->pend) != 0)
        return -1;
    if (w->sess->dialect == SL_DIALECT_PG) {
        w->pend->on_done = on_answer_in;
        w->pend->data = r;
    }
    w->rolling = 0;
    w->state = W_BUSY;
    follow_queue(r, w);
    return 0;
}

/* Give ans n results (the missing ones zeroed), for answers merged below. */
static void pad_answer(sl_answer *ans, size_t n)
{
    ans->results = sl_realloc(ans->results, (n + 1) * sizeof(sl_result));
    memset(ans->results + ans->nresults, 0, (n + 1 - ans->nresults) * sizeof(sl_result));
    ans->nresults = n;
}

static void rollback(sl_session *sess)
{
    sl_answer rb;
    if (sl_session_exec1(sess, "ROLLBACK", 0, NULL, &rb) == 0)
        sl_answer_free(&rb);
}

/* The first half of a chunk with an undo record answered: build the record
 * and send the second half. 0 when the second half is in flight; 1 when
 * w->first is the chunk's whole answer (it failed, or sending did). */
static int after_first_half(up_run *r, up_worker *w)
{
    chunk_layout l = layout_of(r);
    w->first = w->pend->ans;
    memset(w->pend, 0, sizeof *w->pend);
    pad_answer(&w->first, l.nq);
    w->saving = 0;
    if (!w->first.ok)
        return 1;
    const sl_result *pre = l.pre ? &w->first.results[l.pre_i] : NULL;
    free(w->record);
    if (w->sess->dialect == SL_DIALECT_PG) {
        size_t len;
        w->record = sl_undo_record_bytes(&r->undo, w->chunk_no, pre, &w->first.results[l.post_i], &len);
        if (len > INT32_MAX) { /* more than libpq can send: like a message the server refuses, split */
            w->first.ok = 0;
            w->first.conn_lost = 1;
            w->drop_conn = 1; /* dropped and made again: its open transaction goes with it */
            free(w->first.error);
            w->first.error = sl_asprintf("its undo record is %zu bytes, more than one message can carry", len);
            return 1;
        }
        w->ulengths[2] = (int)len;
    } else {
        w->record = sl_undo_record(&r->undo, w->chunk_no, pre, &w->first.results[l.post_i]);
    }
    w->uparams[0] = r->job->name;
    w->uparams[1] = w->batch->numbers[0];
    w->uparams[2] = w->record;
    if (sl_session_send(w->sess, w->batch->q + l.undo_i, l.nq - l.undo_i, w->pend) != 0) {
        w->first.ok = 0;
        w->first.conn_lost = 1;
        return 1;
    }
    if (w->sess->dialect == SL_DIALECT_PG) {
        w->pend->on_done = on_answer_in;
        w->pend->data = r;
    }
    return 0;
}

static void on_rolled_back(sl_pending *p)
{
    sl_answer_free(&p->ans); /* a failure shows on the session's next batch */
}

/* On PostgreSQL a chunk's answer is looked at the moment it is in, from the
 * driver's callback, even while the coordinator waits for something else (a
 * seek, a health check), which through a pooler may need one of the pool's
 * server connections:
 * - a first half that succeeded is followed by its second at once: until it
 *   commits, its transaction holds row locks and a server connection;
 * - a batch that failed inside its transaction (aborted, open until
 *   ROLLBACK) is rolled back at once, for the same reason: with as many
 *   chunks failing as the pool has connections (a pooler that lost the
 *   prepared statements fails them all together), a wait for one more
 *   connection held them forever. */
static void on_answer_in(sl_pending *p)
{
    up_run *r = p->data;
    for (int64_t i = 0; i < r->nworkers; i++) {
        up_worker *w = &r->workers[i];
        if (w->pend != p)
            continue;
        if (w->saving && p->ans.ok) {
            if (after_first_half(r, w) != 0) {
                w->pend->ans.conn_lost = 1; /* the second half could not be sent */
                w->pend->done = 1;
            }
            return;
        }
        chunk_layout l = layout_of(r);
        int idx = p->ans.failed_index;
        if (idx >= 0 && !w->saving && w->first.results)
            idx += (int)l.undo_i; /* the second half's, indexed like the batch */
        if (p->ans.ok || p->ans.conn_lost || !left_open(&l, idx))
            return;
        static const sl_query rollback_q = {"ROLLBACK", 0, NULL, 0};
        if (sl_session_send(w->sess, &rollback_q, 1, &w->rb) == 0) {
            w->rb.on_done = on_rolled_back;
            w->rolling = 1;
        }
        return;
    }
}

/* The second half answered: merge it into w->first, indexed like the batch. */
static void merge_second_half(up_run *r, up_worker *w)
{
    chunk_layout l = layout_of(r);
    sl_answer *ans = &w->first, *tail = &w->pend->ans;
    for (size_t i = 0; i < tail->nresults && l.undo_i + i < l.nq; i++) {
        ans->results[l.undo_i + i] = tail->results[i];
        memset(&tail->results[i], 0, sizeof tail->results[i]);
    }
    ans->ok = tail->ok;
    ans->conn_lost = tail->conn_lost;
    ans->failed_index = tail->failed_index >= 0 ? (int)l.undo_i + tail->failed_index : -1;
    memcpy(ans->sqlstate, tail->sqlstate, sizeof ans->sqlstate);
    free(ans->error);
    ans->error = tail->error;
    tail->error = NULL;
    sl_answer_free(tail);
}

/* w's chunk lost its connection (why: libpq's words, or NULL): say so in
 * w->last_error, which the attempts after it keep until one commits. */
static void lost_error(up_run *r, up_worker *w, const char *why)
{
    size_t n = r->info.ks.ncols;
    char *lo = up_tuple_json(&w->cur.lo, n), *hi = up_tuple_json(&w->cur.hi, n);
    free(w->last_error);
    w->last_error = sl_asprintf("%s: chunk %" PRId64 " (%s .. %s) lost its connection on attempt %" PRId64 ": %s",
                                r->job->name, w->chunk_no, lo, hi, w->attempts, why ? why : "connection lost");
    free(lo);
    free(hi);
}

/* Whether a failed sluice_progress row was refused by its fence
 * (sl_lease_fence_sql), with r->err saying why: the chunk before it in its
 * range is gone, or, for a range's first chunk, the range itself (the
 * database lost commits: sl_run_check_kept, and the split, which committed
 * before any of its chunks), or the lease is another runner's. The
 * transaction is rolled back already. */
static int fence_refused(up_run *r, up_worker *w, const sl_answer *ans)
{
    if (strcmp(ans->sqlstate, "23502") != 0 || r->sess->dialect != SL_DIALECT_PG)
        return 0;
    /* found already by another worker, which brought the journal in line */
    if (r->run.lost_commits || (sl_run_check_kept(&r->run, w->sess) != 0 && r->run.lost_commits)) {
        r->err = r->run.err;
        return 1;
    }
    if (!w->range->prev_chunk && w->range->range_no > 0 && !up_split_kept(r, w->sess, w->range->range_no)) {
        sl_err_set(&r->run.err,
                   "%s: the database no longer has the job's key split (range %" PRId64 " of " SL_RANGES_TABLE
                   ", which its first chunk needs): it lost its last commits, as a standby promoted before it "
                   "received them does, and decides what is applied",
                   r->job->name, w->range->range_no);
        r->run.lost_commits = 1;
        r->err = r->run.err;
        return 1;
    }
    sl_run_fenced(&r->run); /* its row is written only while the lease is ours (lease.h) */
    sl_err_set(&r->err, "%s", r->run.lease.why);
    return 1;
}

/* What a chunk's answer means. On CHUNK_OK, *affected and, when known,
 * *next (the chunk after it in the range; *next_known) are set. */
static int interpret(up_run *r, up_worker *w, sl_answer *ans, int64_t *affected, up_bounds *next, int *next_known)
{
    chunk_layout l = layout_of(r);
    size_t n = r->info.ks.ncols;
    *next_known = 0;
    if (ans->conn_lost) {
        lost_error(r, w, ans->error);
        return CHUNK_LOST;
    }
    if (ans->ok || ans->failed_index == (int)l.bound_i) {
        *affected = 0;
        for (size_t i = 0; i < l.k; i++)
            if (ans->results[l.first + i].cmd_tuples > 0)
                *affected += ans->results[l.first + i].cmd_tuples;
        if (ans->ok) {
            read_bounds(ans, l.bound_i, n, next);
            *next_known = 1;
        }
        return CHUNK_OK;
    }
    /* The chunk failed and rolled back; an explicit transaction stays open
     * (aborted) until ROLLBACK, except when COMMIT itself failed. */
    int idx = ans->failed_index;
    if (left_open(&l, idx) && !w->rolling)
        rollback(w->sess); /* unless on_answer_in sent it */
    w->rolling = 0;
    if (idx == (int)l.prog_i && fence_refused(r, w, ans))
        return CHUNK_FENCED;
    char *lo = up_tuple_json(&w->cur.lo, n), *hi = up_tuple_json(&w->cur.hi, n);
    char where[512] = "";
    if (idx >= (int)l.first && idx < (int)(l.first + l.k))
        snprintf(where, sizeof where, "%s:%d: ", r->job->path, r->job->up.stmts[idx - (int)l.first].line);
    sl_err_set(&r->err, "%s: chunk %" PRId64 " (%s .. %s) failed on attempt %" PRId64 ": %s%s%s%s", r->job->name,
               w->chunk_no, lo, hi, w->attempts, where, ans->sqlstate, ans->sqlstate[0] ? " " : "", ans->error);
    free(lo);
    free(hi);
    /* said once the retries are spent (the split, or the job's failure, carries it), not at each retry */
    if (strcmp(ans->sqlstate, "40001") == 0 && r->undo.pre_sql && w->attempts > r->job->retries)
        sl_err_append(&r->err,
                      "hint: another session kept committing changes to rows of this chunk while it ran; a "
                      "snapshot's chunk runs at repeatable read, so that its undo record holds the very rows it "
                      "changes, and fails then. Smaller chunks (batch, chunk-time) or a quieter time (window) "
                      "meet fewer of them; more retries (retries) wait them out");
    snprintf(w->sqlstate, sizeof w->sqlstate, "%s", ans->sqlstate);
    return sl_answer_transient(ans->sqlstate) ? CHUNK_RETRY : CHUNK_FAILED;
}

/* The chunk a record is about: who ran it, at which batch. */
typedef struct chunk_origin {
    int64_t chunk_no, attempts, started, batch, worker;
    int queued;
} chunk_origin;

static chunk_origin origin_of(const up_worker *w)
{
    return (chunk_origin){w->chunk_no, w->attempts, w->started, w->sent_batch, w->id, w->queued};
}

/* Write a committed chunk to the checkpoint file and count it; next_batch,
 * the most rows its worker's next chunk may have, goes to the progress line
 * and the metrics. */
static int record_chunk(up_run *r, const up_bounds *done, const chunk_origin *o, int64_t affected,
                        const char *last_error, int skipped, int64_t next_batch)
{
    size_t n = r->info.ks.ncols;
    char *lo = up_tuple_json(&done->lo, n), *hi = up_tuple_json(&done->hi, n);
    int64_t ms = sl_mono_ms() - o->started;
    sl_ckpt_chunk c = {o->chunk_no, lo, hi, done->rows, affected, ms, o->attempts, last_error, sl_now_ms()};
    c.skipped = skipped;
    c.batch = o->batch;
    c.worker = o->worker;
    int rc = sl_ckpt_commit_chunk(r->ckpt, r->run.run_id, &c, &r->err);
    if (rc == 0 && sl_log_enabled(SL_LOG_DEBUG))
        sl_log_event(SL_LOG_DEBUG, "chunk",
                     json_pack("{sIsIsIsIsIsIsb}", "chunk", (json_int_t)o->chunk_no, "rows", (json_int_t)done->rows,
                               "affected", (json_int_t)affected, "duration_ms", (json_int_t)ms, "attempts",
                               (json_int_t)o->attempts, "worker", (json_int_t)o->worker, "queued", o->queued),
                     "%s: chunk %" PRId64 " (%s .. %s) committed: %" PRId64 " rows in %" PRId64 " ms%s", r->job->name,
                     o->chunk_no, lo, hi, done->rows, ms, o->queued ? " (queued behind the chunk before)" : "");
    free(lo);
    free(hi);
    if (rc != 0)
        return -1;
    r->chunks_done++;
    r->rows_done += done->rows;
    r->run_rows += done->rows;
    sl_metrics_chunk(r->metrics, done->rows, ms);
    sl_metrics_batch(r->metrics, next_batch);
    sl_progress_update(r->rows_done, next_batch, sl_metrics_rate(r->metrics, sl_mono_ms()));
    return 0;
}

/* The range's position moves to a committed chunk's :hi. */
static void advance_range(up_run *r, up_worker *w, const up_bounds *done, int64_t chunk_no)
{
    tuple_copy(&w->range->after, &done->hi, r->info.ks.ncols);
    w->range->has_after = 1;
    w->range->prev_chunk = chunk_no;
}

/* Forget cur (and its number, once committed). */
static void clear_chunk(up_worker *w, int committed)
{
    up_bounds_free(&w->cur);
    if (committed)
        w->chunk_no = 0;
    w->attempts = 1;
    free(w->last_error);
    w->last_error = NULL;
}

/* on-error skip: record a single row that keeps failing as set aside, in
 * its own transaction, so a resume never tries it again and `down` knows
 * there is nothing to undo there. */
static int set_aside(up_run *r, up_worker *w)
{
    size_t n = r->info.ks.ncols, np = 0;
    char chunk_no[24], att[24], range_no[24], prev[24];
    snprintf(chunk_no, sizeof chunk_no, "%" PRId64, w->chunk_no);
    snprintf(prev, sizeof prev, "%" PRId64, w->range->prev_chunk);
    snprintf(att, sizeof att, "%" PRId64, w->attempts);
    snprintf(range_no, sizeof range_no, "%" PRId64, w->range->range_no);
    const char *prog[10 + 2 * SL_MAX_KEY_COLS];
    char *error = sl_strdup(r->err.msg);
    prog[np++] = r->job->name;
    prog[np++] = chunk_no;
    for (size_t i = 0; i < n; i++)
        prog[np++] = w->cur.lo.v[i];
    for (size_t i = 0; i < n; i++)
        prog[np++] = w->cur.hi.v[i];
    prog[np++] = "1";
    prog[np++] = att;
    prog[np++] = r->job->checksum;
    prog[np++] = "true";
    prog[np++] = error;
    if (r->sess->dialect == SL_DIALECT_PG) {
        prog[np++] = range_no;
        prog[np++] = sl_run_fence_id(&r->run);
        prog[np++] = w->range->prev_chunk ? prev : NULL;
    }
    sl_query q[] = {
        {sl_session_begin_sql(w->sess), 0, NULL, 0}, {r->progress_sql, (int)np, prog, 0}, {"COMMIT", 0, NULL, 0}};
    sl_answer ans;
    int rc = sl_session_exec(w->sess, q, 3, &ans);
    if (rc == 0 && !ans.ok && !ans.conn_lost)
        rollback(w->sess);
    if (rc == 0 && !ans.ok && !ans.conn_lost && ans.failed_index == 1 && fence_refused(r, w, &ans)) {
        sl_answer_free(&ans);
        free(error);
        return -1;
    }
    if (rc != 0 || !ans.ok) {
        /* nothing recorded: the next run meets the row again and decides again */
        sl_err_set(&r->err, "%s: cannot set a failing row aside: %s", r->job->name,
                   ans.error ? ans.error : "connection lost");
        sl_answer_free(&ans);
        free(error);
        return -1;
    }
    sl_answer_free(&ans);
    char *key = up_tuple_json(&w->cur.hi, n);
    sl_log_event(
        SL_LOG_WARN, "set_aside",
        json_pack("{sIsoso}", "chunk", (json_int_t)w->chunk_no, "key", sl_json_str(key), "error", sl_json_str(error)),
        "%s: row %s set aside (on-error skip): %s", r->job->name, key, error);
    free(key);
    sl_metrics_count(r->metrics, SL_COUNT_SET_ASIDE, 1);
    r->rows_set_aside++;
    advance_range(r, w, &w->cur, w->chunk_no);
    chunk_origin o = origin_of(w);
    w->chunk_no = 0;
    rc = record_chunk(r, &w->cur, &o, 0, error, 1, worker_batch(r, w));
    free(error);
    return rc;
}

/* A chunk that keeps failing: split it (its range is walked again in
 * smaller chunks), set its single row aside, or fail the job (-1).
 * Transient failures split under either on-error; permanent ones only under
 * skip, which narrows them down to single rows, and only those a row's data
 * can cause (sl_answer_statement_error). 0 when the worker goes on. */
static int after_failure(up_run *r, up_worker *w, int transient)
{
    int skip = r->job->on_error == SL_ON_ERROR_SKIP;
    if (!transient && !skip)
        return -1;
    /* a row-level security policy's WITH CHECK refuses single rows with 42501, as a missing grant does */
    int policy = r->info.row_security && strcmp(w->sqlstate, "42501") == 0;
    if (!transient && sl_answer_statement_error(w->sqlstate) && !policy) {
        /* no row's data caused it: split, every row would fail alike and be set aside one by one */
        sl_err_append(&r->err,
                      "hint: on-error skip sets aside rows whose data fails; this error is about the statement, "
                      "the role or the server, not a row, so the job stopped instead. Fix it and run sluice up "
                      "again: it resumes at this chunk");
        return -1;
    }
    if (w->cur.rows > 1) {
        w->split_limit = w->cur.rows / 2;
        sl_log_event(SL_LOG_WARN, "split",
                     json_pack("{sIsIsIso}", "chunk", (json_int_t)w->chunk_no, "rows", (json_int_t)w->cur.rows, "limit",
                               (json_int_t)w->split_limit, "error", sl_json_str(r->err.msg)),
                     "%s; splitting it: next chunks of at most %" PRId64 " row%s", r->err.msg, w->split_limit,
                     w->split_limit == 1 ? "" : "s");
        sl_run_event(&r->run, "split", r->err.msg);
        sl_metrics_count(r->metrics, SL_COUNT_SPLIT, 1);
        clear_chunk(w, 0); /* its number is free again: nothing of it committed */
        w->state = W_SEEK;
        return 0;
    }
    if (!skip)
        return -1;
    if (set_aside(r, w) != 0)
        return -1;
    clear_chunk(w, 1);
    w->state = W_SEEK;
    return 0;
}

/* After a lost connection: did w's chunk in flight commit? */
static int chunk_committed(up_run *r, up_worker *w, int *committed)
{
    char no[24];
    snprintf(no, sizeof no, "%" PRId64, w->chunk_no);
    const char *params[] = {r->job->name, no};
    sl_query q = {"SELECT 1 FROM " SL_PROGRESS_TABLE " WHERE job = $1 AND chunk_no = $2", 2, params, 0};
    sl_answer ans;
    int rc = up_exec_read(r, w->sess, &q, 1, &ans);
    if (rc != 0)
        return rc;
    *committed = ans.results[0].nrows > 0;
    sl_answer_free(&ans);
    return 0;
}

/* cur goes out again after delay ms. */
static int ready_in(up_worker *w, int64_t delay)
{
    w->state = W_READY;
    w->ready_at = sl_mono_ms() + delay;
    w->rest_from = 0;
    return 0;
}

/* cur goes out after the job's pause, however long it is by then. */
static void rest(up_worker *w)
{
    ready_in(w, 0);
    w->rest_from = w->ready_at;
}

/* A committed chunk: move on to the next one (sent at once when nothing
 * holds it back), then write this one to the checkpoint file. */
static int on_committed(up_run *r, up_worker *w, int64_t affected, up_bounds *next, int next_known)
{
    up_bounds done = w->cur;
    chunk_origin o = origin_of(w);
    int64_t chunk_ms = sl_mono_ms() - w->sent_at;
    char *last_error = w->last_error;
    w->last_error = NULL;
    memset(&w->cur, 0, sizeof w->cur);
    w->chunk_no = 0;
    w->attempts = 1;
    advance_range(r, w, &done, o.chunk_no);
    if (w->split_limit > 0 && (w->split_limit *= 2) >= r->pace.batch)
        w->split_limit = 0; /* past the trouble: back to full chunks, doubling */
    up_pace_after(r, done.rows, chunk_ms);
    int64_t next_batch = worker_batch(r, w);
    int sent = 0;
    assert(!w->follow || (next_known && next->has_rows)); /* it ran only after this chunk, with the bounds it found */
    if (w->follow) {
        follow_adopt(r, w, next);
    } else if (!next_known) {
        w->state = W_SEEK;
    } else if (next->has_rows) {
        w->cur = *next;
        memset(next, 0, sizeof *next);
        rest(w);
        sent = up_dispatch(r, w);
    } else {
        w->range = NULL; /* finished */
        w->state = W_IDLE;
    }
    /* recorded even when the next chunk could not go: it did commit */
    int rc = record_chunk(r, &done, &o, affected, last_error, 0, next_batch);
    free(last_error);
    up_bounds_free(&done);
    return sent < 0 ? -1 : rc;
}

/* Deal with the outcome st of w's chunk. 0 the worker goes on (or stops
 * with the run), -1 the job failed (r->err). */
static int on_outcome(up_run *r, up_worker *w, int st, int64_t affected, up_bounds *next, int next_known)
{
    if (st == CHUNK_OK)
        return on_committed(r, w, affected, next, next_known);
    if (st == CHUNK_FAILED)
        return after_failure(r, w, 0);
    if (st == CHUNK_FENCED)
        return -1;
    if (sl_session_stopping(r->sess)) {
        /* rolled back, or (the second signal) committed and reconciled next time */
        w->state = W_DONE;
        return 0;
    }
    if (st == CHUNK_LOST) {
        if (w->drop_conn) /* still up, in the chunk's transaction (after_first_half) */
            sl_session_disconnect(w->sess);
        w->drop_conn = 0;
        int committed = 0, rc = up_reconnect(r, w->sess);
        if (rc == 0)
            rc = chunk_committed(r, w, &committed);
        if (rc != 0) {
            w->state = W_DONE;
            return rc < 0 ? -1 : 0;
        }
        if (committed)
            return on_committed(r, w, -1, next, 0);
        /* Counted like a transient failure (sl_run_lost_retries): a chunk that takes its connection
         * down every time (a statement that ends its backend, a batch over the server's message
         * limit, a pooler's query_timeout) is split, not sent again forever. */
        if (w->attempts > sl_run_lost_retries(r->job)) {
            sl_err_set(&r->err, "%s", w->last_error ? w->last_error : "connection lost");
            return after_failure(r, w, 1);
        }
        w->attempts++;
        return ready_in(w, 0);
    }
    free(w->last_error);
    w->last_error = sl_strdup(r->err.msg);
    if (w->attempts > r->job->retries)
        return after_failure(r, w, 1);
    int64_t wait = sl_session_backoff_ms((int)w->attempts);
    sl_log_event(SL_LOG_WARN, "retry",
                 json_pack("{sIsIsIsIso}", "chunk", (json_int_t)w->chunk_no, "attempt", (json_int_t)w->attempts,
                           "wait_ms", (json_int_t)wait, "retries_left", (json_int_t)(r->job->retries - w->attempts + 1),
                           "error", sl_json_str(r->err.msg)),
                 "%s (transient; retrying in %" PRId64 " ms, %" PRId64 " of %" PRId64 " retries left)", r->err.msg,
                 wait, r->job->retries - w->attempts + 1, r->job->retries);
    sl_run_event(&r->run, "retry", r->err.msg);
    sl_metrics_count(r->metrics, SL_COUNT_RETRY, 1);
    w->attempts++;
    return ready_in(w, wait);
}

/* w's batch answered. */
int up_on_answer(up_run *r, up_worker *w)
{
    sl_answer ans;
    if (w->saving) {
        if (after_first_half(r, w) == 0)
            return 0; /* the second half is in flight */
        ans = w->first;
    } else if (w->first.results) {
        merge_second_half(r, w);
        ans = w->first;
    } else {
        ans = w->pend->ans;
    }
    memset(&w->first, 0, sizeof w->first);
    memset(w->pend, 0, sizeof *w->pend);
    if (w->follow && !w->follow_taken)
        follow_drop(r, w);
    w->state = W_READY; /* until the outcome says otherwise */
    up_bounds next = {0};
    int64_t affected = -1;
    int next_known = 0;
    int st = interpret(r, w, &ans, &affected, &next, &next_known);
    sl_answer_free(&ans);
    int rc = on_outcome(r, w, st, affected, &next, next_known);
    up_bounds_free(&next);
    return rc;
}

/* Send w's chunk if nothing holds it back now: its own rest, the job's gate
 * (ctl pause, windows, health) and max-rate. 0 sent or not yet; 1 the run
 * stops; -1 failed. */
int up_dispatch(up_run *r, up_worker *w)
{
    int64_t wait = 0;
    if (w->state != W_READY || r->failed || sl_session_stopping(r->sess) || up_ready_at(r, w) > sl_mono_ms())
        return 0;
    int g = up_gate(r, &wait);
    if (g != UP_GATE_GO) {
        r->held_until = sl_mono_ms() + wait;
        return g == UP_GATE_STOP ? SL_STOPPED : SL_OK;
    }
    if (gate_rate(&r->gate, &wait) == GATE_WAIT) {
        r->held_until = sl_mono_ms() + wait;
        return 0;
    }
    if (send_chunk(r, w) == 0)
        return 0;
    /* not connected: the connection was lost since its last answer */
    lost_error(r, w, "the connection was gone before the chunk was sent");
    return on_outcome(r, w, CHUNK_LOST, -1, NULL, 0);
}
