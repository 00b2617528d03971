/* up.h: the engine's `up` of one job (runner/engine/up*.c). */
#ifndef SLUICE_UP_H
#define SLUICE_UP_H

#include "sluice/db/session.h"
#include "sluice/engine/run.h"
#include "sluice/jobs/job.h"

/* Run job's pending chunks on an open session, exactly once, from its
 * refusals to its final state (run.h). Returns an exit code (SL_EXIT_*). */
int sl_up_job(sl_session *sess, const sl_run_opts *opts, sl_job *job) SL_MUSTCHECK;

#endif
