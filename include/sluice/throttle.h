/* throttle.h: health checks read from PostgreSQL itself before a chunk runs. */
#ifndef SLUICE_THROTTLE_H
#define SLUICE_THROTTLE_H

#include "sluice/job.h"
#include "sluice/pace.h"
#include "sluice/session.h"

/* Run the job's throttle-query and the health query (replica replay lag from
 * pg_stat_replication, sessions waiting for locks on table, the oldest other
 * open transaction) as one round trip, and compare with pace's limits.
 * Returns 0 when clear, 1 when a limit is exceeded (reason says which, with
 * the measured value and the limit), -1 when the queries failed (reason
 * holds the error; callers treat it like a transient chunk error). */
int sl_throttle_check(sl_session *sess, const sl_job *job, const sl_pace *pace, const char *table, char *reason,
                      size_t reasonsz);

#endif
