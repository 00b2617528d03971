/* throttle.c: is the database healthy enough for another chunk? Replica lag, lock queues, old transactions, WAL,
 * vacuum. */
#include "sluice/services/throttle.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/db/catalog.h"

/* One row, one round trip; $1 is the job's table, $2 max-dead-tuples in
 * hundredths of a percent. replay_lag is NULL for a replica that is caught
 * up and idle, and for every replica to a role without pg_monitor: the two
 * counts of pg_stat_replication tell them apart (such a role sees the rows,
 * each with its pid alone). Lock waiters are waits for the table itself (or
 * any of its partitions): the short waits of writers to extend it (sluice's
 * own workers among them) are not an application's queue. The WAL position
 * is the flushed one, which is what replicas can receive. Vacuum is each
 * table's own: of a partitioned table's partitions (every level; the parent
 * has no storage, no counts and relfrozenxid 0), the one furthest over its
 * dead-tuple limit, and the one nearest its anti-wraparound vacuum.
 *
 * It runs once a second, so it is kept cheap to plan and run (a prepared
 * statement, see round_trip): pg_stat_replication is read once, and the
 * dead and live counts come from the functions pg_stat_all_tables shows,
 * for the table's own relations, rather than from the view, which counts
 * every relation of the database first. */
static const char health_sql[] = SL_PG_TABLE_TREE
    ", sluice_stored AS (SELECT t.rel, c.relkind FROM sluice_tree t JOIN pg_class c ON c.oid = t.rel"
    "     WHERE c.relkind <> 'p')"
    " SELECT r.lag,"
    "       (SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'relation'"
    "          AND relation IN (SELECT rel FROM sluice_tree)),"
    "       (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start) * 1000), 0)::bigint"
    "          FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()"
    "           AND backend_type = 'client backend'),"
    "       pg_current_wal_flush_lsn()::text, r.senders, r.seen,"
    "       s.n_dead_tup, s.n_live_tup, current_setting('autovacuum_vacuum_threshold')::bigint,"
    "       x.xid_age, x.xid_limit, x.mxid_age, x.mxid_limit,"
    "       CASE WHEN s.relid <> to_regclass($1) THEN s.relid::regclass::text END"
    "  FROM (SELECT coalesce(max(extract(epoch FROM replay_lag) * 1000), 0)::bigint AS lag, count(*) AS senders,"
    "               count(state) AS seen FROM pg_stat_replication) r"
    "  LEFT JOIN LATERAL (SELECT relid, n_dead_tup, n_live_tup"
    "         FROM (SELECT rel AS relid, pg_stat_get_dead_tuples(rel) AS n_dead_tup,"
    "                      pg_stat_get_live_tuples(rel) AS n_live_tup"
    "                 FROM sluice_stored WHERE relkind IN ('r', 't', 'm')) st" /* pg_stat_all_tables' kinds */
    "        ORDER BY n_dead_tup - n_live_tup * $2::bigint / 10000 DESC LIMIT 1) s ON true"
    "  LEFT JOIN LATERAL ("
    "       SELECT xid_age, xid_limit, max(mxid_age) OVER () AS mxid_age,"
    "              current_setting('autovacuum_multixact_freeze_max_age')::bigint AS mxid_limit"
    "         FROM (SELECT greatest(CASE WHEN c.relfrozenxid::text <> '0' THEN age(c.relfrozenxid) END,"
    "                               CASE WHEN t.relfrozenxid::text <> '0' THEN age(t.relfrozenxid) END) AS xid_age,"
    "                      least(current_setting('autovacuum_freeze_max_age')::bigint,"
    "                            coalesce((SELECT option_value::bigint FROM pg_options_to_table(c.reloptions)"
    "                                       WHERE option_name = 'autovacuum_freeze_max_age'), 2000000000)) AS xid_limit,"
    "                      greatest(CASE WHEN c.relminmxid::text <> '0' THEN mxid_age(c.relminmxid) END,"
    "                               CASE WHEN t.relminmxid::text <> '0' THEN mxid_age(t.relminmxid) END) AS mxid_age"
    "                 FROM pg_class c LEFT JOIN pg_class t ON t.oid = c.reltoastrelid"
    "                WHERE c.oid IN (SELECT rel FROM sluice_stored)) a"
    "        ORDER BY xid_age - xid_limit DESC NULLS LAST LIMIT 1) x ON true";

/* SQLite has no replicas, lock queue, other sessions, WAL position or vacuum to look at. */
static const char lite_sql[] = "SELECT 0, 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL";

enum {
    COL_REPLAY_LAG,
    COL_WAITERS,
    COL_XACT_AGE,
    COL_LSN,
    COL_SENDERS,
    COL_SENDERS_SEEN,
    COL_DEAD,
    COL_LIVE,
    COL_VACUUM_THRESHOLD,
    COL_XID_AGE,
    COL_XID_LIMIT,
    COL_MXID_AGE,
    COL_MXID_LIMIT,
    COL_PARTITION /* the partition the dead-tuple counts are of; NULL: the table's own */
};

/* How long a check waits for the replicas' answers. */
#define REPLICA_WAIT_MS 2000

static int64_t val(const sl_answer *ans, int col, int64_t dflt)
{
    const char *v = sl_answer_val(ans, 0, 0, col);
    return v ? strtoll(v, NULL, 10) : dflt;
}

void sl_format_bytes(int64_t bytes, char *out, size_t outsz)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024;
        u++;
    }
    if (v == (double)(int64_t)v || v >= 100)
        snprintf(out, outsz, "%.0f%s", v, units[u]);
    else
        snprintf(out, outsz, "%.1f%s", v, units[u]);
}

static void format_percent(int64_t bp, char *out, size_t outsz)
{
    if (bp % 100 == 0)
        snprintf(out, outsz, "%" PRId64 "%%", bp / 100);
    else
        snprintf(out, outsz, "%" PRId64 ".%02" PRId64 "%%", bp / 100, bp % 100);
}

int sl_throttle_init(sl_throttle *th, uv_loop_t *loop, const char *const *replicas, size_t nreplicas,
                     int allow_unmeasured, int64_t connect_timeout_ms, sl_err *err)
{
    memset(th, 0, sizeof *th);
    th->allow_unmeasured = allow_unmeasured;
    th->wal_rate = -1;
    if (nreplicas > 0) {
        if (sl_replicas_init(&th->replicas, loop, replicas, nreplicas, connect_timeout_ms, err) != 0)
            return -1;
        th->has_replicas = 1;
    }
    return 0;
}

void sl_throttle_close(sl_throttle *th)
{
    if (th->has_replicas)
        sl_replicas_close(&th->replicas);
    th->has_replicas = 0;
}

/* ---- a round: the primary and the replicas at once ---- */

/* Ask the replicas (when the lag is wanted), run the primary's queries, then
 * wait up to wait_ms for the replicas. 0 with ans, -1 when not connected. */
static int round_trip(sl_throttle *th, sl_session *sess, const sl_job *job, const char *table, int want_replicas,
                      int64_t wait_ms, sl_answer *ans)
{
    int lite = sess->dialect == SL_DIALECT_SQLITE;
    char bp[24];
    snprintf(bp, sizeof bp, "%" PRId64, job->max_dead_tuples_bp);
    const char *params[] = {table, bp};
    /* prepared: planned once, not every second (unless through a pooler) */
    sl_query q[2] = {{lite ? lite_sql : health_sql, lite ? 0 : 2, params, !lite}, {job->throttle_query, 0, NULL, 0}};
    if (want_replicas)
        sl_replicas_poll(&th->replicas);
    if (sl_session_exec_readonly(sess, q, job->throttle_query ? 2 : 1, ans) != 0) /* the job's query looks only */
        return -1;
    int64_t deadline = sl_mono_ms() + wait_ms;
    while (want_replicas && !sl_replicas_done(&th->replicas) && !sl_session_stopping(sess)) {
        int64_t left = deadline - sl_mono_ms();
        if (left <= 0)
            break;
        sl_session_turn(sess, left);
    }
    return 0;
}

/* The primary's WAL position now, and the rate since the previous check. */
static void take_sample(sl_throttle *th, const sl_answer *ans, int64_t at)
{
    uint64_t lsn = sl_lsn_parse(sl_answer_val(ans, 0, 0, COL_LSN));
    if (lsn == 0)
        return;
    if (th->nsamples > 0) {
        size_t prev = (th->next + SL_THROTTLE_SAMPLES - 1) % SL_THROTTLE_SAMPLES;
        int64_t ms = at - th->sample_ms[prev];
        if (ms < 200)
            return; /* too close to the last one to say anything about a rate */
        th->wal_rate = (int64_t)((double)(lsn - th->sample_lsn[prev]) * 1000.0 / (double)ms);
    }
    th->sample_ms[th->next] = at;
    th->sample_lsn[th->next] = lsn;
    th->next = (th->next + 1) % SL_THROTTLE_SAMPLES;
    if (th->nsamples < SL_THROTTLE_SAMPLES)
        th->nsamples++;
}

/* One replica's lag: its own estimate, kept within what the primary's WAL
 * positions allow (throttle.h). 1 measured, 0 not (why says so). */
static int replica_lag(const sl_throttle *th, size_t i, int64_t *lag, char *why, size_t whysz)
{
    const sl_replica *rep = &th->replicas.v[i];
    const sl_replica_reading *rd = &rep->reading;
    const char *name = sl_replicas_name(&th->replicas, i);
    if (rep->round != th->replicas.round) {
        snprintf(why, whysz, "replica %s did not answer within %ds", name, REPLICA_WAIT_MS / 1000);
        return 0;
    }
    if (!rd->ok) {
        snprintf(why, whysz, "replica %s: %s", name, rd->error);
        return 0;
    }
    if (!rd->in_recovery) {
        snprintf(why, whysz, "%s is not a replica: pg_is_in_recovery() is false there", name);
        return 0;
    }
    int64_t lower = 0, upper = INT64_MAX;
    for (size_t k = 0; k < th->nsamples; k++) {
        int64_t age = rd->at_ms - th->sample_ms[k];
        if (age < 0)
            age = 0;
        if (th->sample_lsn[k] > rd->replay_lsn && age > lower)
            lower = age; /* it lacks WAL the primary had this long ago */
        if (th->sample_lsn[k] <= rd->replay_lsn && age < upper)
            upper = age; /* it has all the primary had this long ago */
    }
    int64_t est = rd->lag_ms;
    if (est > upper)
        est = upper;
    if (est < lower)
        est = lower;
    *lag = est;
    return 1;
}

/* The largest replica lag. 1 measured; 0 when it cannot be (why). */
static int measure_lag(sl_throttle *th, const sl_answer *ans, int64_t *lag, char *why, size_t whysz)
{
    *lag = 0;
    if (th->has_replicas) {
        for (size_t i = 0; i < th->replicas.n; i++) {
            int64_t one;
            if (!replica_lag(th, i, &one, why, whysz))
                return 0;
            if (one > *lag)
                *lag = one;
        }
        snprintf(th->lag_how, sizeof th->lag_how, "measured on %zu replica%s (--replica)", th->replicas.n,
                 th->replicas.n == 1 ? "" : "s");
        return 1;
    }
    int64_t senders = val(ans, COL_SENDERS, 0), seen = val(ans, COL_SENDERS_SEEN, 0);
    if (senders == 0) {
        snprintf(why, whysz, "the server lists no replica in pg_stat_replication");
        return 0;
    }
    if (seen < senders) {
        snprintf(why, whysz,
                 "pg_stat_replication lists %" PRId64 " replica%s but shows their replay_lag only to "
                 "superusers and members of pg_monitor",
                 senders, senders == 1 ? "" : "s");
        return 0;
    }
    *lag = val(ans, COL_REPLAY_LAG, 0);
    snprintf(th->lag_how, sizeof th->lag_how,
             "replay_lag of %" PRId64 " replica%s in pg_stat_replication (the replicas report it every "
             "wal_receiver_status_interval, 10s by default: --replica URL measures it within a second)",
             senders, senders == 1 ? "" : "s");
    return 1;
}

/* ---- the limits ---- */

static int over_lag(sl_throttle *th, const sl_job *job, const sl_pace *pace, const sl_answer *ans, char *reason,
                    size_t reasonsz)
{
    char why[300];
    th->lag_measured = measure_lag(th, ans, &th->lag_ms, why, sizeof why);
    if (!th->lag_measured) {
        snprintf(th->lag_how, sizeof th->lag_how, "cannot be measured: %s", why);
        if (th->allow_unmeasured) {
            if (!th->warned_unmeasured++)
                sl_warn("%s: cannot measure replica lag (%s); going on without it (--allow-unmeasured-lag)", job->name,
                        why);
            return 0;
        }
        snprintf(reason, reasonsz, "cannot measure replica lag: %s", why);
        return 1;
    }
    th->warned_unmeasured = 0;
    if (th->lag_ms > pace->max_replica_lag_ms) {
        snprintf(reason, reasonsz, "replica lag %" PRId64 "ms > max-replica-lag %" PRId64 "ms", th->lag_ms,
                 pace->max_replica_lag_ms);
        return 1;
    }
    return 0;
}

static int over_vacuum(const sl_pace *pace, const sl_answer *ans, char *reason, size_t reasonsz)
{
    int64_t dead = val(ans, COL_DEAD, 0), live = val(ans, COL_LIVE, 0);
    int64_t threshold = val(ans, COL_VACUUM_THRESHOLD, 50);
    int64_t allowed = threshold + (int64_t)((double)live * (double)pace->max_dead_tuples_bp / 10000.0);
    char pct[24];
    format_percent(pace->max_dead_tuples_bp, pct, sizeof pct);
    if (dead > allowed) {
        const char *part = sl_answer_val(ans, 0, 0, COL_PARTITION); /* the one furthest over its limit */
        char where[160] = "the table";
        if (part)
            snprintf(where, sizeof where, "partition %s of the table", part);
        snprintf(reason, reasonsz,
                 "%" PRId64 " dead tuples in %s > %s of its %" PRId64 " live ones + %" PRId64
                 " (max-dead-tuples %s; autovacuum is behind)",
                 dead, where, pct, live, threshold, pct);
        return 1;
    }
    int64_t xid_age = val(ans, COL_XID_AGE, 0), xid_limit = val(ans, COL_XID_LIMIT, INT64_MAX);
    int64_t mxid_age = val(ans, COL_MXID_AGE, 0), mxid_limit = val(ans, COL_MXID_LIMIT, INT64_MAX);
    if (xid_age > xid_limit) {
        snprintf(reason, reasonsz,
                 "an anti-wraparound vacuum is due or running on the table: age(relfrozenxid) %" PRId64
                 " > autovacuum_freeze_max_age %" PRId64 " (max-dead-tuples %s)",
                 xid_age, xid_limit, pct);
        return 1;
    }
    if (mxid_age > mxid_limit) {
        snprintf(reason, reasonsz,
                 "an anti-wraparound vacuum is due or running on the table: mxid_age(relminmxid) %" PRId64
                 " > autovacuum_multixact_freeze_max_age %" PRId64 " (max-dead-tuples %s)",
                 mxid_age, mxid_limit, pct);
        return 1;
    }
    return 0;
}

static int over_limits(sl_throttle *th, const sl_job *job, const sl_pace *pace, const sl_answer *ans, int pg,
                       char *reason, size_t reasonsz)
{
    int64_t waiters = val(ans, COL_WAITERS, 0), xact_age = val(ans, COL_XACT_AGE, 0);
    if (pg && pace->max_replica_lag_ms > 0 && over_lag(th, job, pace, ans, reason, reasonsz))
        return 1;
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
    if (pg && pace->max_wal_rate > 0 && th->wal_rate > pace->max_wal_rate) {
        char rate[24], limit[24];
        sl_format_bytes(th->wal_rate, rate, sizeof rate);
        sl_format_bytes(pace->max_wal_rate, limit, sizeof limit);
        snprintf(reason, reasonsz, "WAL written at %s/s > max-wal-rate %s/s", rate, limit);
        return 1;
    }
    if (pg && pace->max_dead_tuples_bp > 0 && over_vacuum(pace, ans, reason, reasonsz))
        return 1;
    return 0;
}

int sl_throttle_check(sl_throttle *th, sl_session *sess, const sl_job *job, const sl_pace *pace, const char *table,
                      char *reason, size_t reasonsz)
{
    int pg = sess->dialect == SL_DIALECT_PG;
    int want_replicas = pg && th->has_replicas && pace->max_replica_lag_ms > 0;
    sl_answer ans;
    if (round_trip(th, sess, job, table, want_replicas, REPLICA_WAIT_MS, &ans) != 0) {
        snprintf(reason, reasonsz, "connection lost during the health check");
        return -1;
    }
    int rc = 0;
    if (!ans.ok) {
        snprintf(reason, reasonsz, "health check failed: %s", ans.error);
        rc = -1;
    } else {
        take_sample(th, &ans, sl_mono_ms());
        th->dead = val(&ans, COL_DEAD, 0);
        th->live = val(&ans, COL_LIVE, 0);
        th->has_reading = 1;
        if (over_limits(th, job, pace, &ans, pg, reason, reasonsz)) {
            rc = 1;
        } else if (job->throttle_query && sl_answer_true(sl_answer_val(&ans, 1, 0, 0))) {
            snprintf(reason, reasonsz, "throttle-query returned true (%s:%d)", job->path,
                     job->line[SL_DIR_THROTTLE_QUERY]);
            rc = 1;
        }
    }
    snprintf(th->held_by, sizeof th->held_by, "%s", rc == 0 ? "" : reason);
    sl_answer_free(&ans);
    return rc;
}

int sl_throttle_prepare(sl_throttle *th, sl_session *sess, const sl_job *job, const char *table, sl_err *err)
{
    if (!job->max_replica_lag_ms || sess->dialect != SL_DIALECT_PG)
        return 0;
    sl_answer ans;
    int64_t wait = th->has_replicas ? th->replicas.connect_timeout_ms + 1000 : 0;
    if (round_trip(th, sess, job, table, th->has_replicas, wait, &ans) != 0) {
        sl_err_set(err, "%s: lost the connection while looking for replicas", job->name);
        return -1;
    }
    if (!ans.ok) {
        sl_err_set(err, "%s: cannot read the server's health: %s", job->name, ans.error);
        sl_answer_free(&ans);
        return -1;
    }
    take_sample(th, &ans, sl_mono_ms());
    char why[300];
    th->lag_measured = measure_lag(th, &ans, &th->lag_ms, why, sizeof why);
    sl_answer_free(&ans);
    if (th->lag_measured)
        return 0;
    snprintf(th->lag_how, sizeof th->lag_how, "cannot be measured: %s", why);
    if (th->allow_unmeasured) {
        sl_warn("%s:%d: max-replica-lag: cannot measure replica lag (%s); going on without it "
                "(--allow-unmeasured-lag)",
                job->path, job->line[SL_DIR_MAX_REPLICA_LAG], why);
        th->warned_unmeasured = 1;
        return 0;
    }
    sl_err_set(err, "%s:%d: max-replica-lag: cannot measure replica lag: %s", job->path,
               job->line[SL_DIR_MAX_REPLICA_LAG], why);
    sl_err_append(err, "hint: name each replica with --replica URL (or SLUICE_REPLICAS): sluice measures the lag "
                       "there, as any role; --allow-unmeasured-lag runs without the limit");
    return SL_EREFUSED;
}

void sl_throttle_status(const sl_throttle *th, const sl_pace *pace, sl_buf *out)
{
    char a[24], b[24];
    if (pace->max_replica_lag_ms > 0) {
        if (th->lag_measured)
            sl_buf_printf(out, "replica-lag %" PRId64 "ms (max-replica-lag %" PRId64 "ms; %s)\n", th->lag_ms,
                          pace->max_replica_lag_ms, th->lag_how);
        else
            sl_buf_printf(out, "replica-lag unknown (max-replica-lag %" PRId64 "ms; %s)\n", pace->max_replica_lag_ms,
                          th->lag_how[0] ? th->lag_how : "not measured yet");
    }
    if (pace->max_wal_rate > 0) {
        sl_format_bytes(pace->max_wal_rate, b, sizeof b);
        if (th->wal_rate >= 0) {
            sl_format_bytes(th->wal_rate, a, sizeof a);
            sl_buf_printf(out, "wal-rate %s/s (max-wal-rate %s/s)\n", a, b);
        } else {
            sl_buf_printf(out, "wal-rate unknown yet (max-wal-rate %s/s)\n", b);
        }
    }
    if (pace->max_dead_tuples_bp > 0) {
        format_percent(pace->max_dead_tuples_bp, a, sizeof a);
        sl_buf_printf(out, "dead-tuples %" PRId64 " of %" PRId64 " live (max-dead-tuples %s)\n", th->dead, th->live, a);
    }
    sl_buf_printf(out, "throttled %s\n", th->held_by[0] ? th->held_by : "no");
}
