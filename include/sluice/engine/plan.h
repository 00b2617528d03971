/* plan.h: the engine's `plan`: a dry run of one job against the live database (runner/engine/plan*.c). */
#ifndef SLUICE_PLAN_H
#define SLUICE_PLAN_H

#include "sluice/db/catalog.h"
#include "sluice/engine/run.h"

/* Print what `up` would do with job on an open session: its table, key,
 * estimate, undo, health limits and the plans of its statements; with
 * sample > 0, run that many chunks as well, each rolled back
 * (sl_plan_sample). Returns an exit code (SL_EXIT_*). */
int sl_plan_job(sl_session *sess, const sl_run_opts *opts, sl_job *job, int64_t sample) SL_MUSTCHECK;

/* `plan JOB --sample N` (plan_sample.c): run the first N chunks, each rolled
 * back, and estimate the whole job from them. */
int sl_plan_sample(sl_session *sess, const sl_job *job, const sl_table_info *info, int64_t rows,
                   int64_t n) SL_MUSTCHECK;

#endif
