/* throttle.h: health checks read from PostgreSQL itself (and its replicas) before a chunk runs.
 *
 * Each check is one round trip to the target, with a round of questions to the replicas
 * (replica.h) in flight at the same time, and compares what they say with pace's limits:
 *
 *   replica lag      with --replica: each replica's own estimate (the age of the last transaction it
 *                    replayed, while it holds WAL it has not replayed), kept within what the primary's
 *                    WAL positions, sampled at every check, say it can be: a replica that has not
 *                    replayed the position the primary had at time t is at least now - t behind, and
 *                    one that has replayed it at most that. Without --replica: replay_lag from
 *                    pg_stat_replication, which only pg_monitor and superusers can read and which the
 *                    replicas report every wal_receiver_status_interval (10 s by default).
 *   lock queue       sessions waiting for a lock on the job's table
 *   old transaction  the oldest open transaction of another session
 *   WAL rate         pg_current_wal_lsn() between two checks, over the time between them
 *   dead tuples      n_dead_tup over the table's autovacuum_vacuum_threshold + share * n_live_tup
 *                    (pg_stat_all_tables), and an anti-wraparound vacuum due or running: the table's
 *                    (or its TOAST table's) age(relfrozenxid) past autovacuum_freeze_max_age, or its
 *                    mxid_age(relminmxid) past autovacuum_multixact_freeze_max_age
 *   throttle-query   the job's own
 *
 * None of these needs a privilege, replay_lag from pg_stat_replication aside. */
#ifndef SLUICE_THROTTLE_H
#define SLUICE_THROTTLE_H

#include "sluice/db/session.h"
#include "sluice/jobs/job.h"
#include "sluice/services/pace.h"
#include "sluice/services/replica.h"

#define SL_THROTTLE_SAMPLES 256 /* the primary's WAL positions kept, one per check */

typedef struct sl_throttle {
    sl_replicas replicas;
    int has_replicas;
    int allow_unmeasured; /* --allow-unmeasured-lag: a lag that cannot be measured holds nothing back */
    int warned_unmeasured;
    /* The primary's WAL position at each check: mono ms and LSN, a ring. */
    int64_t sample_ms[SL_THROTTLE_SAMPLES];
    uint64_t sample_lsn[SL_THROTTLE_SAMPLES];
    size_t nsamples, next;
    /* The last check's readings, for `ctl status`. */
    int has_reading;
    int lag_measured;   /* lag_ms is a measurement */
    int64_t lag_ms;     /* the largest replica lag */
    int64_t wal_rate;   /* bytes per second, -1 before two samples */
    int64_t dead, live; /* n_dead_tup, n_live_tup */
    char lag_how[512];  /* how the lag is measured, or why it cannot be */
    char held_by[512];  /* what the last check found over its limit, "" when nothing */
} sl_throttle;

/* Prepare th for a job's run on the loop: replicas are libpq strings (from
 * --replica or SLUICE_REPLICAS); with none, the lag comes from
 * pg_stat_replication. No I/O. 0, or -1 with err. */
int sl_throttle_init(sl_throttle *th, uv_loop_t *loop, const char *const *replicas, size_t nreplicas,
                     int allow_unmeasured, int64_t connect_timeout_ms, sl_err *err) SL_MUSTCHECK;

/* Before the first chunk of a job with max-replica-lag (or for `plan`):
 * can its lag be measured? Connects to the replicas (waiting up to the
 * connect timeout, the loop turning) and takes a first reading. 0 with
 * th->lag_how saying how it is measured; SL_EREFUSED when it cannot be, with err
 * saying why and what to do (allow_unmeasured turns that into a warning and 0). */
int sl_throttle_prepare(sl_throttle *th, sl_session *sess, const sl_job *job, const char *table,
                        sl_err *err) SL_MUSTCHECK;

/* One check against pace's limits and the job's throttle-query. Returns 0
 * when clear, 1 when a limit is exceeded (reason says which, with the
 * measured value and the limit), -1 when the queries failed (reason holds
 * the error; callers treat it like a transient chunk error). */
int sl_throttle_check(sl_throttle *th, sl_session *sess, const sl_job *job, const sl_pace *pace, const char *table,
                      char *reason, size_t reasonsz) SL_MUSTCHECK;

/* Lines for `ctl status`: each health limit the job sets, its last reading. */
void sl_throttle_status(const sl_throttle *th, const sl_pace *pace, sl_buf *out);

/* Close the replicas' connections (runs the loop until they are released). */
void sl_throttle_close(sl_throttle *th);

/* "50MB", "512kB", "1536B": bytes in PostgreSQL's units. */
void sl_format_bytes(int64_t bytes, char *out, size_t outsz);

#endif
