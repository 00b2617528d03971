#!/usr/bin/env bash
# test_replica.sh: max-replica-lag against a real streaming replica that the test makes, pauses and resumes.
#
# The replica runs with PostgreSQL's default settings (wal_receiver_status_interval 10s: the primary's
# pg_stat_replication learns of its replay late), and sluice connects as sl_app, a role with LOGIN and
# the grants its job needs, nothing else: no superuser, no pg_monitor. It measures the lag on the
# replica itself (--replica).
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
# pg_wal_replay_resume() it drops to about 1s and then to NULL within two status intervals. At the
# default 10s, all of that shows up to ten seconds late: the reason for --replica.
. "$(dirname "$0")/../harness/lib.sh"

PG_BIN=/usr/lib/postgresql/${PGVERSION:-15}/bin
REPLICA_DIR=""
REPLICA_PORT=""
REPLICA_ERR=""
REPLICA_SLOT=""

as_postgres() {
    runuser -u postgres -- env PGPASSWORD="${PGPASSWORD:-}" "$@"
}

# replica_q SQL: SQL on the replica (as postgres, through its own socket).
replica_q() {
    psql -h "$REPLICA_DIR" -p "$REPLICA_PORT" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$1"
}

replica_has() { # replica_has TABLE: the test's database on the replica has it
    [[ $(psql -h "$REPLICA_DIR" -p "$REPLICA_PORT" -U postgres -d "$T_DB" -XAtqc "select to_regclass('public.$1') is not null") == t ]]
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
    local why
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
    if ! poll_until 30 sql_true "select count(*) = 1 from pg_stat_replication where state = 'streaming'"; then
        REPLICA_ERR="the replica never showed as streaming in pg_stat_replication: $(tail -n 20 "$REPLICA_DIR/server.log")"
        return 1
    fi
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

progress_count() {
    psql_q "select count(*) || '|' || coalesce(sum(rows), 0) from sluice_progress where job = '0001_bump'"
}

replica_has_probe() {
    [[ $(psql -h "$REPLICA_DIR" -p "$REPLICA_PORT" -U postgres -d "$T_DB" -XAtq -c "select count(*) from probe") == 1 ]]
}

test_replica_streams() {
    [[ -z $REPLICA_ERR ]] || fail "$REPLICA_ERR"
    assert_eq "$(replica_q "select pg_is_in_recovery()")" t "the replica is a standby"
    # What the primary writes reaches the replica.
    psql_q "create table probe (id int); insert into probe values (42)"
    wait_until 20 replica_has_probe
}


# app_role: sl_app (lib.sh's make_app_role) with the grants the job needs, and APP_REPLICA, a URL
# connecting as it to the replica.
app_role() {
    make_app_role "grant select, update on t to sl_app"
    APP_REPLICA="postgresql://sl_app@/$T_DB?host=$REPLICA_DIR&port=$REPLICA_PORT"
    # the test's database, its table and the grants reach the replica by replay: on a busy machine, not at once
    wait_until 20 replica_granted
}

replica_granted() {
    [[ $(psql -h "$REPLICA_DIR" -p "$REPLICA_PORT" -U postgres -d "$T_DB" -XAtqc \
        "select coalesce(has_table_privilege('sl_app', to_regclass('public.t'), 'update'), false)") == t ]]
}

make_table_3000() {
    psql_q "create table t (id int primary key, n int not null default 0);
            insert into t (id) select g from generate_series(1, 3000) g"
}

# 100 chunks, at least 100ms each: about ten seconds of work unthrottled.
write_bump_job() {
    write_job 0001_bump <<EOF
-- sluice:table t
-- sluice:batch 30
-- sluice:pause 100ms
-- sluice:max-replica-lag ${1:-1s}
-- sluice:up
UPDATE t SET n = n + 1 WHERE id BETWEEN :lo AND :hi;
EOF
}

# pause_replay_until_held: the runner sluice_start started first (bg.1) was held back no more than a
# moment while the replica kept up (on a busy machine its replay falls behind by most of a second now
# and then, which holds the next chunk that long); once it is not held, pause the replica's replay and
# wait until it is held again. ENGAGED_MS: the milliseconds that took.
pause_replay_until_held() {
    local pauses t0
    if grep -qE "resumed after ([2-9]|[1-9][0-9]+)s paused" "$T_DIR/bg.1.err"; then
        fail "held back for seconds while the replica kept up: $(grep -E "pausing|resumed" "$T_DIR/bg.1.err")"
    fi
    wait_until 10 replica_not_holding
    pauses=$(replica_pauses)
    t0=$(now_ms)
    replica_q "select pg_wal_replay_pause()"
    wait_until 10 replica_pauses_past "$pauses"
    ENGAGED_MS=$(($(now_ms) - t0))
}

# How many times bg.1 was held for replica lag.
replica_pauses() {
    grep -c "pausing: replica lag" "$T_DIR/bg.1.err" || true
}

# bg.1 is not held now: it was let go as often as it was held.
replica_not_holding() {
    (($(replica_pauses) == $(grep -c "resumed after .* paused (replica lag" "$T_DIR/bg.1.err" || true)))
}

replica_pauses_past() {
    (($(replica_pauses) > $1))
}

# Measured on the replica as a role with no privileges: engaged within two seconds of replay stopping.
test_engages_within_two_seconds() {
    [[ -z $REPLICA_ERR ]] || fail "$REPLICA_ERR"
    assert_eq "$(replica_q "show wal_receiver_status_interval")" 10s "the replica's status interval (the default)"
    make_table_3000
    app_role
    write_bump_job 500ms
    run_sluice --db "$APP_DB" --replica "$APP_REPLICA" plan 0001_bump
    assert_rc 0
    assert_contains "$OUT" "measured on 1 replica (--replica)"
    sluice_start --db "$APP_DB" --replica "$APP_REPLICA" up
    wait_until 30 sql_true "select to_regclass('sluice_progress') is not null and (select count(*) >= 10 from sluice_progress)"
    local before after
    pause_replay_until_held
    diag "engaged $ENGAGED_MS ms after replay was paused"
    ((ENGAGED_MS <= 2000)) || fail "the throttle engaged $ENGAGED_MS ms after replay was paused (at most 2000)"
    before=$(progress_count)
    sleep 3
    after=$(progress_count)
    assert_eq "$after" "$before" "chunks committed during 3s of replica lag"
    run_cmd "$SLUICE" --checkpoints "$CKPT" ctl 0001_bump status
    assert_rc 0
    assert_match "$OUT" "replica-lag [0-9]+ms \(max-replica-lag 500ms; measured on 1 replica"
    assert_contains "$OUT" "throttled replica lag"
    replica_q "select pg_wal_replay_resume()"
    sluice_wait
    assert_rc 0
    assert_match "$ERR" "replica lag measured on 1 replica"
    assert_match "$ERR" "resumed after [0-9]+s paused \(replica lag [0-9]+ms > max-replica-lag 500ms\)"
    assert_sql "select count(*) filter (where n = 1), count(*) filter (where n <> 1) from t" "3000|0"
    assert_sql "select count(*), sum(rows) from sluice_progress where job = '0001_bump'" "100|3000"
}

# A rollback waits for the replica as its up did: with replay paused, down undoes nothing once the lag
# passes max-replica-lag, and finishes after replay resumes.
test_down_waits_for_replica() {
    [[ -z $REPLICA_ERR ]] || fail "$REPLICA_ERR"
    make_table_3000
    app_role
    bump_job --down 0001_bump 30 "-- sluice:max-replica-lag 500ms"
    run_sluice --db "$APP_DB" --replica "$APP_REPLICA" up
    assert_rc 0
    # 100 chunks to undo, resting 100ms after each (a pause added to the job file after up).
    job_pause 0001_bump 100ms
    sluice_start --db "$APP_DB" --replica "$APP_REPLICA" down 0001_bump
    wait_until 30 sql_true "select count(*) <= 90 from sluice_progress"
    pause_replay_until_held
    local before after
    before=$(progress_count)
    sleep 3
    after=$(progress_count)
    assert_eq "$after" "$before" "chunks undone during 3s of replica lag"
    [[ ${before%|*} -gt 0 ]] || fail "the rollback finished before the replica lag held it"
    replica_q "select pg_wal_replay_resume()"
    sluice_wait
    assert_rc 0
    assert_match "$ERR" "resumed after [0-9]+s paused \(replica lag [0-9]+ms > max-replica-lag 500ms\)"
    assert_sql "select count(*) filter (where n = 0), count(*) filter (where n <> 0) from t" "3000|0"
    assert_eq "$(progress_count)" "0|0" "chunks applied after down"
}

# Without --replica, a role that cannot read replay_lag cannot measure the lag: refused before anything.
test_refuses_unmeasurable() {
    [[ -z $REPLICA_ERR ]] || fail "$REPLICA_ERR"
    make_table_3000
    app_role
    write_bump_job
    run_sluice --db "$APP_DB" plan 0001_bump
    assert_rc 2
    assert_contains "$OUT" "up refuses this job: replica lag cannot be measured (unless --allow-unmeasured-lag)"
    assert_contains "$OUT" "only to superusers and members of pg_monitor"
    run_sluice --db "$APP_DB" up
    assert_rc 2
    assert_contains "$ERR" "0001_bump.sql:4: max-replica-lag: cannot measure replica lag"
    assert_contains "$ERR" "--replica URL"
    assert_sql "select count(*) from t where n <> 0" 0
    assert_sql "select to_regclass('sluice_jobs') is null" t
    # The primary itself is no replica.
    run_sluice --db "$APP_DB" --replica "$APP_DB" up
    assert_rc 2
    assert_contains "$ERR" "is not a replica"
    # Told to, it runs without the limit, and says so.
    run_sluice --db "$APP_DB" --allow-unmeasured-lag up
    assert_rc 0
    assert_contains "$ERR" "going on without it (--allow-unmeasured-lag)"
    assert_sql "select count(*) filter (where n = 1) from t" 3000
}

# No replica at all (this one stopped): refused, whoever asks.
test_refuses_without_replicas() {
    [[ -z $REPLICA_ERR ]] || fail "$REPLICA_ERR"
    make_table_3000
    write_bump_job
    replica_stop
    wait_until 20 sql_true "select count(*) = 0 from pg_stat_replication"
    run_sluice up
    assert_rc 2
    assert_contains "$ERR" "the server lists no replica in pg_stat_replication"
    SLUICE_CONNECT_TIMEOUT=2s run_sluice --replica "postgresql://postgres@/$T_DB?host=/nonexistent&port=1" up
    assert_rc 2
    assert_contains "$ERR" "cannot connect"
    assert_sql "select count(*) from t where n <> 0" 0
}


# Pointed at the standby instead of the primary: refused before any write, saying which it is.
test_refuses_a_standby() {
    [[ -z $REPLICA_ERR ]] || fail "$REPLICA_ERR"
    make_table_3000
    app_role
    bump_job --down 0001_bump 300
    run_sluice --db "$APP_REPLICA" up
    assert_rc 2
    assert_contains "$ERR" "takes no writes: it is a standby (in recovery)"
    assert_contains "$ERR" "hint: point --db at the primary"
    assert_sql "select to_regclass('sluice_jobs') is null" t
    # the primary, read-only for this connection: refused the same way, and fine once it is not
    run_sluice --db "$APP_DB?options=-cdefault_transaction_read_only%3Don" up
    assert_rc 2
    assert_contains "$ERR" "takes no writes: default_transaction_read_only is on for this connection"
    run_sluice --db "$APP_DB" up
    assert_rc 0
    wait_until 20 replica_has "sluice_jobs"
    local cmd
    for cmd in "down 0001_bump" "stamp 0001_bump pending"; do
        # shellcheck disable=SC2086 # the command's words
        run_sluice --db "$APP_REPLICA" $cmd
        assert_rc 2
        assert_contains "$ERR" "takes no writes: it is a standby (in recovery)"
    done
    assert_sql "select count(*) filter (where n = 1), (select state from sluice_jobs) from t" "3000|done"
}

replica_start || true
run_test "a streaming replica made by the test follows the test server" test_replica_streams
run_test "max-replica-lag as a role without privileges, measured on the replica: engaged within 2s" test_engages_within_two_seconds
run_test "down waits for the replica as up does (max-replica-lag)" test_down_waits_for_replica
run_test "max-replica-lag that cannot be measured: plan says so, up refuses unless told" test_refuses_unmeasurable
run_test "pointed at the standby, or read-only: up, down and stamp refused before any write" test_refuses_a_standby
run_test "max-replica-lag with no replica at all: refused" test_refuses_without_replicas
t_done
