/* logq.h: a bounded queue of log lines and the thread that writes them, so that a
 * stalled reader (a pipe nobody reads, a stuck journald) never blocks the event loop.
 *
 * sl_logq_put hands the writer thread a line and waits for it to be written,
 * but at most sync_ms: while the descriptor takes what it is given, a line is
 * out before the call returns, as if written in place (in order with stdout,
 * and before an abort()). When a write takes longer, the queue is "stalled":
 * puts no longer wait, lines queue up to max_bytes, and once that is full
 * they are dropped and counted until the writer has caught up (written all
 * that was queued). The first line put after that gets, just before it, the
 * line notice() makes saying how many were dropped: one notice a stall, where
 * the lines are missing. Lines keep the order they were put in.
 *
 * The descriptor is written with plain blocking write()s from the writer
 * thread (its flags are left alone: stderr is shared with the shell). A
 * write that fails (a closed pipe, a full disk) loses that record only, as
 * an fputs to stderr would; the writer blocks every signal, so a closed
 * pipe gives it EPIPE rather than killing the process. Lines may be put
 * from any thread. */
#ifndef SLUICE_LOGQ_H
#define SLUICE_LOGQ_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/base/util.h"

typedef struct sl_logq sl_logq;

/* The line saying dropped lines were dropped, newline included, malloc'd
 * (NULL: none). Called on the writer thread, so it reads no state the loop
 * changes. */
typedef char *(*sl_logq_notice_fn)(uint64_t dropped);

/* A queue writing to fd (not taken over: never closed) with its thread
 * running; NULL when the thread cannot be started (the caller then writes
 * itself). */
sl_logq *sl_logq_new(int fd, size_t max_bytes, int64_t sync_ms, sl_logq_notice_fn notice) SL_MUSTCHECK;

/* Queue len bytes (a whole line, or the progress display's bytes: only a
 * record that ends in '\n' counts as a line dropped). 0 when queued,
 * -1 when dropped: the queue is full (or was, and the writer has not caught
 * up yet), or closing. */
int sl_logq_put(sl_logq *q, const char *bytes, size_t len);

/* Lines dropped so far and not yet told by a notice. */
uint64_t sl_logq_dropped(sl_logq *q);

/* Write what is queued (and the notice for drops not yet told), waiting at
 * most wait_ms, then stop the thread and free q: 0. -1 when the writer is
 * still blocked in a write at the deadline: the thread is left to finish
 * (or to be ended by the process's exit) and frees q itself; q must not be
 * used again either way. */
int sl_logq_free(sl_logq *q, int64_t wait_ms);

#endif
