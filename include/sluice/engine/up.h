/* up.h: the engine's `up` of one job (runner/engine/up*.c). */
#ifndef SLUICE_UP_H
#define SLUICE_UP_H

#include "sluice/db/session.h"
#include "sluice/engine/run.h"
#include "sluice/jobs/job.h"

/* Run job's pending chunks on an open session, exactly once, from its
 * refusals to its final state (run.h). Returns an exit code (SL_EXIT_*). */
int sl_up_job(sl_session *sess, const sl_run_opts *opts, sl_job *job) SL_MUSTCHECK;

/* The server's check of the job's `where` and up statements against the
 * table (EXPLAIN, nothing runs), as `up` makes it before its first chunk:
 * SL_EREFUSED with err naming the file, line and what the server said;
 * SL_EFAIL/-1 when the connection failed. `plan` shows the same refusal. */
int sl_up_check_sql(sl_session *sess, const sl_job *job, const sl_keyspec *ks, sl_err *err) SL_MUSTCHECK;

/* The same check of the job's down section (0 when it has none): `down`
 * refuses before its first chunk, `up` and `plan` warn that the way back
 * would fail. */
int sl_down_check_sql(sl_session *sess, const sl_job *job, const sl_keyspec *ks, sl_err *err) SL_MUSTCHECK;

/* How many key ranges the first `up` with workers splits est rows (its
 * estimate; negative: none) into: four per worker, but none under two
 * batches. Under 2: no split, one worker walks the key. The workers that
 * run are the fewer of workers and the ranges. */
int64_t sl_up_split_ranges(int64_t workers, int64_t batch, int64_t est);

#endif
