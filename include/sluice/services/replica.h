/* replica.h: connections to the target's streaming replicas (--replica), read on the loop without blocking it.
 *
 * Each replica is asked, once per round, where its replay stands:
 *
 *   pg_is_in_recovery(), pg_last_wal_replay_lsn(), and its own estimate of the lag: 0 when it has
 *   replayed all it received, else now() - pg_last_xact_replay_timestamp()
 *
 * Nothing there needs a privilege. Connecting and asking both run on the loop (sl_pg): a round is
 * started with sl_replicas_poll and its answers arrive while the caller turns the loop. A replica
 * that cannot be reached is tried again at a later round, with backoff. */
#ifndef SLUICE_REPLICA_H
#define SLUICE_REPLICA_H

#include <stdint.h>

#include "sluice/db/pg.h"

/* What one replica said in its last answered round. */
typedef struct sl_replica_reading {
    int ok;              /* the round answered; otherwise error says why */
    int in_recovery;     /* it is a standby */
    uint64_t replay_lsn; /* pg_last_wal_replay_lsn() (0: none) */
    int64_t lag_ms;      /* its own estimate, see above */
    int64_t at_ms;       /* sl_mono_ms() of the answer */
    char error[256];
} sl_replica_reading;

typedef struct sl_replica {
    sl_pg pg;
    int connecting, asking;
    int64_t retry_at; /* mono ms: no new connection attempt before */
    int failures;     /* connection attempts failed in a row, for the backoff */
    int round;        /* the round this replica last answered (or failed) */
    sl_replica_reading reading;
    struct sl_replicas *set;
} sl_replica;

typedef struct sl_replicas {
    uv_loop_t *loop;
    sl_replica *v;
    size_t n;
    int round; /* the round in progress */
    int64_t connect_timeout_ms;
    int closes; /* handles still closing */
} sl_replicas;

/* One sl_pg per conninfo (libpq's strings, as dburl.h normalises them). No
 * I/O. 0, or -1 with err naming the string that is wrong (never its password). */
int sl_replicas_init(sl_replicas *rs, uv_loop_t *loop, const char *const *conninfos, size_t n,
                     int64_t connect_timeout_ms, sl_err *err) SL_MUSTCHECK;

/* Start a round: ask every connected replica, connect the others (an
 * answer to this round comes once connected). Never waits. */
void sl_replicas_poll(sl_replicas *rs);

/* Every replica answered the round in progress, or failed it. */
int sl_replicas_done(const sl_replicas *rs);

/* "user@host:port/dbname" of replica i. */
const char *sl_replicas_name(const sl_replicas *rs, size_t i);

/* Close every connection and run the loop until libpq's and libuv's handles are released. */
void sl_replicas_close(sl_replicas *rs);

/* "16/B374D848" as a number; 0 for NULL or a malformed one. */
uint64_t sl_lsn_parse(const char *text);

#endif
