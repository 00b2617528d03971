/* up.h: the engine's `up` of one job (runner/up*.c). */
#ifndef SLUICE_UP_H
#define SLUICE_UP_H

#include "sluice/job.h"
#include "sluice/run.h"
#include "sluice/session.h"

/* Run job's pending chunks on an open session, exactly once, from its
 * refusals to its final state (run.h). Returns an exit code (SL_EXIT_*). */
int sl_up_job(sl_session *sess, const sl_run_opts *opts, sl_job *job);

#endif
