#!/usr/bin/env bash
# test_failover.sh: a real failover mid-run: the primary stops, the address lands on its standby, the standby is promoted; sluice waits and finishes there.
#
# Two servers of this file's own (clusters.sh): a primary and a streaming standby made from it with
# pg_basebackup -R. sluice's URL names both hosts, primary first, as an application's would
# (host=A,B: libpq connects to the first that answers). With the primary stopped (-m fast: the
# standby has received every committed chunk, as with synchronous replication), the reconnects land on
# the standby, which takes no writes: each counts as a failed attempt, logged as such. Once the
# standby is promoted the next reconnect goes on there, where the job's state (sluice_jobs, the lease,
# sluice_progress, the undo records) arrived by replication.
. "$(dirname "$0")/../harness/lib.sh"
. "$(dirname "$0")/../harness/clusters.sh"

ROWS=100000

# standby_start NAME PRIMARY: a streaming standby of PRIMARY (a cluster of cluster_start), its own
# server on a free port; CLUSTER_DIR, CLUSTER_PORT and CLUSTER_URL as for cluster_start.
standby_start() {
    local name=$1 primary=$2 dir port
    dir=$(mktemp -d /tmp/sluice-cluster.XXXXXX)
    port=$(free_port)
    chown postgres: "$dir" && chmod 700 "$dir"
    if ! _cl_as_postgres "$CL_BIN/pg_basebackup" -h "${CLUSTER_DIR[$primary]}" -p "${CLUSTER_PORT[$primary]}" \
        -U postgres -D "$dir/data" -R -X stream -c fast >"$dir/basebackup.log" 2>&1; then
        fail "pg_basebackup for $name failed: $(tail -n 5 "$dir/basebackup.log")"
        return 1
    fi
    CLUSTER_DIR[$name]=$dir
    CLUSTER_PORT[$name]=$port
    CLUSTER_URL[$name]="postgresql://postgres@/postgres?host=$dir&port=$port"
    cluster_restart "$name"
    wait_until 30 test "$(cluster_q "$primary" "select count(*) from pg_stat_replication where state = 'streaming'")" = 1
}

promote() {
    _cl_as_postgres "$CL_BIN/pg_ctl" -D "${CLUSTER_DIR[$1]}/data" -w promote >/dev/null
}

stop_fast() {
    _cl_as_postgres "$CL_BIN/pg_ctl" -D "${CLUSTER_DIR[$1]}/data" -m fast -w stop >/dev/null
}

chunks_on_a_at_least() {
    [[ $(cluster_q a "select to_regclass('sluice_progress') is not null") == t ]] &&
        (($(cluster_q a "select count(*) from sluice_progress") >= $1))
}

log_says() {
    grep -q "$1" "${_T_BG_FILES[$SLUICE_PID]}.err"
}

# up (2 workers, a snapshot) loses its primary mid-run, waits on the standby until it is promoted, and
# finishes there exactly once; down on the new primary then gives the table back as it was.
test_failover_to_promoted_standby() {
    local url before chunks
    cluster_start a
    cluster_q a "create table t (id int primary key, n int not null default 0, note text);
                 insert into t (id, note) select g, 'row ' || g from generate_series(1, $ROWS) g; analyze t"
    standby_start b a
    url="postgresql://postgres@/postgres?host=${CLUSTER_DIR[a]},${CLUSTER_DIR[b]}&port=${CLUSTER_PORT[a]},${CLUSTER_PORT[b]}"
    write_job 0001_bump <<'EOF'
-- sluice:table t
-- sluice:batch 100
-- sluice:workers 2
-- sluice:pause 5ms
-- sluice:undo snapshot(n, note)
-- sluice:up
UPDATE t SET n = n + 1, note = 'changed' WHERE id BETWEEN :lo AND :hi;
EOF
    before=$(cluster_q a "select md5(string_agg(t::text, E'\n' order by id)) from t")
    sluice_start --db "$url" up
    wait_until 60 chunks_on_a_at_least 20
    runner_alive || { sluice_wait; fail "up exited ($RC) before the failover"; }
    stop_fast a
    # the reconnects reach the standby and are refused there, for as long as it is one
    wait_until 30 log_says "takes no writes: it is a standby (in recovery)"
    sleep 2
    runner_alive || { sluice_wait; fail "up exited ($RC) while only the standby answered"; }
    promote b
    sluice_wait
    assert_rc 0
    assert_contains "$ERR" "reconnected"
    assert_eq "$(cluster_q b "select min(n) || '|' || max(n) || '|' || count(*) from t where note = 'changed'")" \
        "1|1|$ROWS" "t on the promoted standby"
    chunks=$(cluster_q b "select count(*) from sluice_progress")
    assert_eq "$(cluster_q b "select sum(rows) from sluice_progress")" "$ROWS" "rows in sluice_progress"
    assert_eq "$(cluster_q b "select count(*) from sluice_undo")" "$chunks" "undo records (one a chunk)"
    run_sluice --db "$url" status --json
    assert_rc 0
    assert_eq "$(jq -c '.[0] | [.state, .rows]' <<<"$OUT")" "[\"done\",$ROWS]" "status --json [state, rows]"
    run_sluice --db "$url" down 0001_bump
    assert_rc 0
    assert_eq "$(cluster_q b "select md5(string_agg(t::text, E'\n' order by id)) from t")" "$before" \
        "t after down on the new primary"
}

run_test "failover mid-run (2 workers, snapshot): waits on the standby, finishes once it is promoted; down there" \
    test_failover_to_promoted_standby
t_done
