/* throttle.c: is the database healthy enough for another chunk? Replica lag, lock queues, old transactions. */
#include "sluice/throttle.h"
#include "sluice/metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* replay_lag is NULL for a replica that is caught up and idle, and only
 * visible to superusers and pg_monitor: NULL counts as no lag. Lock waiters
 * are waits for the table itself: the short waits of writers to extend it
 * (sluice's own workers among them) are not an application's queue. */
static const char health_sql[] =
    "SELECT (SELECT coalesce(max(extract(epoch FROM replay_lag) * 1000), 0)::bigint FROM pg_stat_replication),"
    "       (SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'relation'"
    "          AND relation = to_regclass($1)),"
    "       (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start) * 1000), 0)::bigint"
    "          FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()"
    "           AND backend_type = 'client backend')";

static int64_t val(const sl_answer *ans, size_t res, int col)
{
    const char *v = sl_answer_val(ans, res, 0, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

static int over_limits(const sl_answer *ans, const sl_pace *pace, char *reason, size_t reasonsz)
{
    int64_t lag = val(ans, 0, 0), waiters = val(ans, 0, 1), xact_age = val(ans, 0, 2);
    if (pace->max_replica_lag_ms > 0)
        sl_metrics_replica_lag(lag); /* measured: shown as sluice_replica_lag_seconds */
    if (pace->max_replica_lag_ms > 0 && lag > pace->max_replica_lag_ms) {
        snprintf(reason, reasonsz, "replica lag %" PRId64 "ms > max-replica-lag %" PRId64 "ms", lag,
                 pace->max_replica_lag_ms);
        return 1;
    }
    if (pace->max_lock_waiters > 0 && waiters > pace->max_lock_waiters) {
        snprintf(reason, reasonsz, "%" PRId64 " sessions wait for locks on the table (limit %" PRId64 ")", waiters,
                 pace->max_lock_waiters);
        return 1;
    }
    if (pace->max_xact_age_ms > 0 && xact_age > pace->max_xact_age_ms) {
        snprintf(reason, reasonsz, "a transaction has been open %" PRId64 "s (limit %" PRId64 "s)", xact_age / 1000,
                 pace->max_xact_age_ms / 1000);
        return 1;
    }
    return 0;
}

int sl_throttle_check(sl_session *sess, const sl_job *job, const sl_pace *pace, const char *table, char *reason,
                      size_t reasonsz)
{
    const char *params[] = {table};
    /* SQLite has no replicas, lock queue or other sessions to look at */
    const char *health = sess->dialect == SL_DIALECT_SQLITE ? "SELECT 0, 0, 0" : health_sql;
    sl_pg_query q[2] = {{health, sess->dialect == SL_DIALECT_SQLITE ? 0 : 1, params}, {job->throttle_query, 0, NULL}};
    size_t nq = job->throttle_query ? 2 : 1;
    sl_answer ans;
    if (sl_session_exec(sess, q, nq, &ans) != 0) {
        snprintf(reason, reasonsz, "connection lost during the health check");
        return -1;
    }
    int rc = 0;
    if (!ans.ok) {
        snprintf(reason, reasonsz, "health check failed: %s", ans.error);
        rc = -1;
    } else if (over_limits(&ans, pace, reason, reasonsz)) {
        rc = 1;
    } else if (nq == 2) {
        const char *v = sl_answer_val(&ans, 1, 0, 0);
        if (sl_answer_true(v)) {
            snprintf(reason, reasonsz, "throttle-query returned true (%s:%d)", job->path,
                     job->line[SL_DIR_THROTTLE_QUERY]);
            rc = 1;
        }
    }
    sl_answer_free(&ans);
    return rc;
}
