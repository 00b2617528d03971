/* replica.c: ask each streaming replica where its replay stands, without blocking the loop. */
#include "sluice/services/replica.h"
#include "sluice/base/fiber.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* On the replica, readable by any role. Its own estimate of the lag is the
 * age of the last transaction it replayed, and only while it holds WAL it
 * has not replayed yet: a replica with nothing to replay is not behind, however
 * long ago the primary last wrote. (The caller bounds the estimate with the
 * primary's WAL positions: throttle.c.) */
static const char replica_sql[] =
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
    "       CASE WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()"
    "            THEN 0"
    "            ELSE coalesce((extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint, 0) END";

uint64_t sl_lsn_parse(const char *text)
{
    unsigned int hi, lo;
    if (!text || sscanf(text, "%X/%X", &hi, &lo) != 2)
        return 0;
    return ((uint64_t)hi << 32) | lo;
}

static void answer_round(sl_replica *rep, const char *error)
{
    rep->round = rep->set->round;
    if (error) {
        rep->reading.ok = 0;
        snprintf(rep->reading.error, sizeof rep->reading.error, "%s", error);
    }
}

static void on_answer(sl_pg *pg, const sl_pg_reply *reply, void *arg)
{
    (void)pg;
    sl_replica *rep = arg;
    rep->asking = 0;
    if (!reply->ok) {
        char *why = sl_asprintf("cannot read its replay position: %s", reply->error ? reply->error : "query failed");
        answer_round(rep, why);
        free(why);
        return;
    }
    const PGresult *res = reply->results[0];
    if (PQntuples(res) != 1) {
        answer_round(rep, "cannot read its replay position: no row");
        return;
    }
    sl_replica_reading *rd = &rep->reading;
    rd->ok = 1;
    rd->error[0] = '\0';
    rd->in_recovery = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    rd->replay_lsn = PQgetisnull(res, 0, 1) ? 0 : sl_lsn_parse(PQgetvalue(res, 0, 1));
    rd->lag_ms = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    if (rd->lag_ms < 0)
        rd->lag_ms = 0; /* its clock behind the primary's */
    rd->at_ms = sl_mono_ms();
    answer_round(rep, NULL);
}

static void ask(sl_replica *rep)
{
    sl_query q = {replica_sql, 0, NULL, 0};
    if (sl_pg_send(&rep->pg, &q, 1, on_answer, rep) == 0)
        rep->asking = 1;
    else
        answer_round(rep, "not connected");
}

static void on_connected(sl_pg *pg, int status, const char *error, void *arg)
{
    (void)pg;
    sl_replica *rep = arg;
    rep->connecting = 0;
    if (status != 0) {
        rep->failures++;
        int64_t wait = 1000LL << (rep->failures < 5 ? rep->failures : 5);
        rep->retry_at = sl_mono_ms() + (wait > 30000 ? 30000 : wait);
        char *why = sl_asprintf("cannot connect: %s", error ? error : "unknown error");
        answer_round(rep, why);
        free(why);
        return;
    }
    rep->failures = 0;
    if (rep->round != rep->set->round)
        ask(rep);
}

int sl_replicas_init(sl_replicas *rs, uv_loop_t *loop, const char *const *conninfos, size_t n,
                     int64_t connect_timeout_ms, sl_err *err)
{
    memset(rs, 0, sizeof *rs);
    rs->loop = loop;
    rs->connect_timeout_ms = connect_timeout_ms;
    rs->v = sl_calloc(n ? n : 1, sizeof *rs->v);
    for (size_t i = 0; i < n; i++) {
        sl_replica *rep = &rs->v[i];
        rep->set = rs;
        if (sl_pg_init(loop, &rep->pg, conninfos[i], err) != 0) {
            char *why = sl_strdup(err->msg);
            sl_err_set(err, "--replica %zu: %s", i + 1, why);
            free(why);
            sl_replicas_close(rs);
            return -1;
        }
        rs->n++;
        snprintf(rep->reading.error, sizeof rep->reading.error, "not asked yet");
    }
    return 0;
}

void sl_replicas_poll(sl_replicas *rs)
{
    rs->round++;
    int64_t now = sl_mono_ms();
    for (size_t i = 0; i < rs->n; i++) {
        sl_replica *rep = &rs->v[i];
        if (rep->asking || rep->connecting)
            continue; /* still busy with an earlier round: this one waits for it */
        if (rep->pg.connected) {
            ask(rep);
        } else if (now < rep->retry_at) {
            answer_round(rep, NULL); /* its last error stands */
            rep->reading.ok = 0;
        } else if (sl_pg_connect(&rep->pg, rs->connect_timeout_ms, on_connected, rep) == 0) {
            rep->connecting = 1;
        } else {
            answer_round(rep, "cannot start connecting");
        }
    }
}

int sl_replicas_done(const sl_replicas *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        if (rs->v[i].round != rs->round)
            return 0;
    return 1;
}

const char *sl_replicas_name(const sl_replicas *rs, size_t i)
{
    return rs->v[i].pg.display ? rs->v[i].pg.display : "?";
}

static void on_closed(sl_pg *pg)
{
    sl_replica *rep = pg->data;
    rep->set->closes--;
}

void sl_replicas_close(sl_replicas *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        rs->v[i].pg.data = &rs->v[i];
        rs->closes++;
        sl_pg_close(&rs->v[i].pg, on_closed);
    }
    while (rs->closes > 0)
        sl_fiber_wait(rs->loop); /* in a fleet's fiber, the scheduler turns the loop */
    free(rs->v);
    rs->v = NULL;
    rs->n = 0;
}
