#!/usr/bin/env bash
# test_replica.sh: max-replica-lag against a real streaming replica that the test makes, pauses and resumes.
#
# The replica: pg_basebackup -R of the test server into a temp dir, a second server on a free port, run
# as the postgres user (postgres refuses to run as root). pg_virtualenv's cluster already allows it:
# wal_level=replica, max_wal_senders=10, and pg_hba has "host replication all 127.0.0.1/32
# scram-sha-256" for PGUSER (postgres, a superuser with REPLICATION); the test checks these first and
# says which is missing rather than changing the server. Debian keeps postgresql.conf and pg_hba.conf
# outside the data dir, so the copy gets its own (empty postgresql.conf; pg_hba trusting local
# connections only, its socket in the replica's 0700 dir).
#
# What replay_lag does while replay is paused (measured on PostgreSQL 15): with the replica's
# wal_receiver_status_interval at 1s, replay_lag in pg_stat_replication on the primary grows by about
# a second a second from the first WAL record that arrives after pg_wal_replay_pause() (replay pauses
# at the next record), even when no more WAL follows; write_lag and flush_lag stay near 0. After
# pg_wal_replay_resume() it drops to about 1s and then to NULL within two status intervals.
. "$(dirname "$0")/../harness/lib.sh"

PG_BIN=/usr/lib/postgresql/${PGVERSION:-15}/bin
REPLICA_DIR=""
REPLICA_PORT=""
REPLICA_ERR=""
REPLICA_SLOT=""

# A port nothing listens on (as tests/run.sh picks the test server's).
free_port() {
    local port _
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 12000))
        if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && [[ ! -e /var/run/postgresql/.s.PGSQL.$port ]]; then
            echo "$port"
            return
        fi
    done
    echo 5433
}

as_postgres() {
    runuser -u postgres -- env PGPASSWORD="${PGPASSWORD:-}" "$@"
}

# replica_q SQL: SQL on the replica (as postgres, through its own socket).
replica_q() {
    psql -h "$REPLICA_DIR" -p "$REPLICA_PORT" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

# Why the test server cannot feed a replica, or nothing.
replication_refused() {
    local v
    v=$(psql -XAtq -c "show wal_level") || return 0
    [[ $v == replica || $v == logical ]] || { echo "wal_level is $v (hint: ALTER SYSTEM SET wal_level = replica and restart)"; return; }
    v=$(psql -XAtq -c "show max_wal_senders")
    ((v > 0)) || { echo "max_wal_senders is 0"; return; }
    v=$(psql -XAtq -c "select rolreplication or rolsuper from pg_roles where rolname = current_user")
    [[ $v == t ]] || { echo "role $PGUSER may not replicate (hint: ALTER ROLE $PGUSER REPLICATION)"; return; }
    v=$(psql -XAtq -c "select count(*) from pg_hba_file_rules where 'replication' = any(database)")
    ((v > 0)) || echo "pg_hba.conf has no replication line (hint: host replication all 127.0.0.1/32 scram-sha-256)"
}

# Make the replica and wait until the primary sees it streaming. Sets REPLICA_ERR on failure.
replica_start() {
    local why deadline
    why=$(replication_refused)
    if [[ -n $why ]]; then
        REPLICA_ERR="the test server does not allow replication: $why"
        return 1
    fi
    REPLICA_DIR=$(mktemp -d /tmp/sluice-replica.XXXXXX)
    REPLICA_PORT=$(free_port)
    chown postgres: "$REPLICA_DIR" && chmod 700 "$REPLICA_DIR"
    # A slot of its own keeps the WAL the replica still needs: other test files write a lot at the same
    # time, and without it the server may recycle a segment before the replica starts streaming it.
    REPLICA_SLOT="sluice_test_replica_$$"
    if ! as_postgres "$PG_BIN/pg_basebackup" -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -D "$REPLICA_DIR/data" \
        -R -X stream -C -S "$REPLICA_SLOT" -c fast >"$REPLICA_DIR/basebackup.log" 2>&1; then
        REPLICA_ERR="pg_basebackup failed: $(cat "$REPLICA_DIR/basebackup.log")"
        return 1
    fi
    as_postgres sh -c "cat >>'$REPLICA_DIR/data/postgresql.auto.conf' <<EOF
port = $REPLICA_PORT
listen_addresses = ''
unix_socket_directories = '$REPLICA_DIR'
wal_receiver_status_interval = 1s
hot_standby = on
EOF
: >'$REPLICA_DIR/data/postgresql.conf'
echo 'local all all trust' >'$REPLICA_DIR/data/pg_hba.conf'
: >'$REPLICA_DIR/data/pg_ident.conf'"
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$REPLICA_DIR/data" -l "$REPLICA_DIR/server.log" -w -t 60 start \
        >"$REPLICA_DIR/pg_ctl.log" 2>&1; then
        REPLICA_ERR="the replica did not start: $(tail -n 20 "$REPLICA_DIR/server.log" 2>/dev/null)"
        return 1
    fi
    deadline=$((SECONDS + 30))
    until [[ $(psql -XAtq -c "select count(*) from pg_stat_replication where state = 'streaming'") == 1 ]]; do
        if ((SECONDS >= deadline)); then
            REPLICA_ERR="the replica never showed as streaming in pg_stat_replication: $(tail -n 20 "$REPLICA_DIR/server.log")"
            return 1
        fi
        sleep 0.2
    done
}

replica_stop() {
    [[ -n $REPLICA_DIR ]] || return 0
    if [[ -f $REPLICA_DIR/data/postmaster.pid ]]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$REPLICA_DIR/data" -m immediate -w stop >/dev/null 2>&1
    fi
    # the slot would keep every WAL segment from now on
    [[ -z $REPLICA_SLOT ]] || psql -XAtq -c "select pg_drop_replication_slot(slot_name) from pg_replication_slots
                                             where slot_name = '$REPLICA_SLOT'" >/dev/null 2>&1
    [[ ${SLUICE_TEST_KEEP:-0} == 1 ]] || rm -rf "$REPLICA_DIR"
}

_replica_file_cleanup() {
    replica_stop
    _t_file_cleanup
}
trap _replica_file_cleanup EXIT

# max_replay_lag_ms: the largest replay_lag the primary reports, in ms (0 when none).
max_replay_lag_ms() {
    psql_q "select coalesce(max(extract(epoch from replay_lag) * 1000), 0)::bigint from pg_stat_replication"
}

progress_count() {
    psql_q "select count(*) || '|' || coalesce(sum(rows), 0) from sluice_progress where job = '0001_bump'"
}

replica_has_probe() {
    [[ $(psql -h "$REPLICA_DIR" -p "$REPLICA_PORT" -U postgres -d "$T_DB" -XAtq -c "select count(*) from probe") == 1 ]]
}

bg_err() {
    cat "$T_DIR/bg.1.err"
}

test_replica_streams() {
    [[ -z $REPLICA_ERR ]] || fail "$REPLICA_ERR"
    assert_eq "$(replica_q "select pg_is_in_recovery()")" t "the replica is a standby"
    # What the primary writes reaches the replica.
    psql_q "create table probe (id int); insert into probe values (42)"
    wait_until 20 replica_has_probe
}

test_pauses_while_replica_lags() {
    [[ -z $REPLICA_ERR ]] || fail "$REPLICA_ERR"
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 3000) g"
    # 100 chunks, at least 100ms each: about ten seconds of work unthrottled.
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 30
-- sluice:pause 100ms
-- sluice:max-replica-lag 1s
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
    sluice_start up
    wait_until 20 sql_true "select to_regclass('sluice_progress') is not null and exists (select from sluice_progress)"
    # Stop replay; sluice's own chunks are the WAL that makes the replica fall behind.
    replica_q "select pg_wal_replay_pause()"
    wait_until 20 grep -q "pausing: replica lag" "$T_DIR/bg.1.err"
    diag "replay_lag on the primary: $(max_replay_lag_ms) ms"
    local before after lag
    lag=$(max_replay_lag_ms)
    ((lag > 1000)) || fail "sluice paused for replica lag but the primary reports replay_lag ${lag}ms"
    before=$(progress_count)
    sleep 3
    after=$(progress_count)
    assert_eq "$after" "$before" "chunks committed during 3s of replica lag"
    # The replica is still paused: the lag has only grown, and sluice has not given up.
    kill -0 "$SLUICE_PID" || fail "sluice exited while the replica lagged: $(bg_err)"
    lag=$(max_replay_lag_ms)
    ((lag > 3000)) || fail "replay_lag should have kept growing while replay is paused; it is ${lag}ms"
    local done_rows=${before#*|}
    ((done_rows < 3000)) || fail "the job finished before the replica fell behind (rows $done_rows)"

    replica_q "select pg_wal_replay_resume()"
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "pausing: replica lag"
    assert_contains "$ERR" "max-replica-lag 1000ms"
    assert_match "$ERR" "resumed after [0-9]+s paused \(replica lag"
    # Every row exactly once, and the chunks add up.
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "3000|0"
    assert_sql "select count(*), sum(rows), min(chunk_no), max(chunk_no) from sluice_progress where job = '0001_bump'" \
        "100|3000|1|100"
    # The checkpoint's event log says which throttle held it and for how long.
    local events
    events=$(sqlite3 "$CKPT/0001_bump.sluice" "select message from events where kind = 'throttle' order by id")
    assert_match "$events" "replica lag [0-9]+ms > max-replica-lag 1000ms"
    assert_match "$events" "resumed after [0-9]+s paused"
}

replica_start || true
run_test "a streaming replica made by the test follows the test server" test_replica_streams
run_test "max-replica-lag: no chunk while replay is paused, finishes after it resumes" test_pauses_while_replica_lags
t_done
