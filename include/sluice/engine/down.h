/* down.h: the engine's `down`: roll applied jobs back, newest first (runner/engine/down.c). */
#ifndef SLUICE_DOWN_H
#define SLUICE_DOWN_H

#include "sluice/engine/run.h"

/* Roll back the jobs target names on an open session: a job name, "-N"
 * (the last N applied) or "base" (all of them); see README "Commands".
 * Every job is checked before the first is touched. Returns an exit code
 * (SL_EXIT_*). */
int sl_down_jobs(sl_session *sess, const sl_run_opts *opts, sl_jobset *jobs, const char *target) SL_MUSTCHECK;

#endif
